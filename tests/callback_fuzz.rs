//! A bounded fuzz of callback parsing and verification: arbitrary bytes, forms, JSON and XML
//! bodies, headers, methods and query strings go through the steps of the callback pipeline
//! (limits on the raw bytes, recipe parts, verification by every sample recipe, decoding of
//! what passes) for every callback route of the sample platform, of the vector files, and of a
//! platform with small limits. Nothing panics, and what passes the limits respects them.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use entrepot::callbacks::{Inbound, check_limits, document_of, parts_of};
use entrepot::config::platform::BodyFormat;
use entrepot::plan::PlatformPlan;
use entrepot::recipe::RunEnv;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::support::root;

/// Routes with small limits, one per format, all verified by an HMAC of the body.
const SMALL: &str = r#"platform: fuzz
credentials: [secret]
request:
  url: "http://127.0.0.1:9/x"
operations:
  product.get: {}
callbacks:
"#;

fn small_route(format: &str) -> String {
    format!(
        r#"  - path: /fuzz/{format}
    format: {format}
    limits: {{ body: 300, fields: 8, depth: 3 }}
    verify:
      signature: {{ header: X-Sig }}
      steps:
        - {{ name: sig, kind: digest, alg: hmac-sha256, input: "{{{{body}}}}", key: "{{{{credentials.secret}}}}" }}
      expect: "{{{{sig}}}}"
    event_type: {{ header: X-Event, map: {{ changed: product.changed }} }}
"#
    )
}

/// A platform and credentials for it.
type WithCredentials = (Arc<PlatformPlan>, Map<String, Value>);

/// Every platform with callbacks, with credentials for it.
static PLATFORMS: LazyLock<Vec<WithCredentials>> = LazyLock::new(|| {
    let mut texts: Vec<(String, String)> = [
        "platforms/yanxuan.yaml",
        "tests/vectors/github.yaml",
        "tests/vectors/pairs.yaml",
        "tests/vectors/rsa.yaml",
        "tests/vectors/standard-webhooks.yaml",
    ]
    .iter()
    .map(|f| {
        (
            f.to_string(),
            std::fs::read_to_string(root().join(f)).unwrap(),
        )
    })
    .collect();
    let small: String = ["json", "form", "xml", "text"]
        .iter()
        .map(|f| small_route(f))
        .collect();
    texts.push(("fuzz.yaml".into(), format!("{SMALL}{small}")));
    let public =
        std::fs::read_to_string(root().join("tests/vectors/rsa-test-key.pub.pem")).unwrap();
    let private = std::fs::read_to_string(root().join("tests/vectors/rsa-test-key.pem")).unwrap();
    texts
        .into_iter()
        .map(|(name, text)| {
            let doc = entrepot::config::source::parse(Path::new(&name), text).unwrap();
            let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
            assert!(
                compiled.diagnostics.is_empty(),
                "{:?}",
                compiled.diagnostics
            );
            let p = compiled.plan.platforms.values().next().unwrap().clone();
            let creds = p
                .credentials
                .iter()
                .map(|c| {
                    let v = if c.contains("public") {
                        public.clone()
                    } else if c.contains("private") {
                        private.clone()
                    } else {
                        "whsec_c2VjcmV0LWtleQ==".to_string()
                    };
                    (c.clone(), json!(v))
                })
                .collect();
            (p, creds)
        })
        .collect()
});

fn json_body() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-z\\[{\"]{0,4}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    });
    prop_oneof![
        value.prop_map(|v| v.to_string().into_bytes()),
        // Bracket soup: unbalanced, inside and outside strings, with escapes.
        "[\\[\\]{}\"a:,\\\\ ]{0,120}".prop_map(String::into_bytes),
    ]
}

fn form_body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(("[a-z%+&=]{0,5}", "[a-zA-Z0-9%+&=]{0,8}"), 0..20).prop_map(|pairs| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
            .into_bytes()
    })
}

fn xml_body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::sample::select(vec![
            "<a>",
            "</a>",
            "<b x=\"1\">",
            "</b>",
            "<c/>",
            "text",
            "&amp;",
            "&bogus;",
            "<![CDATA[x<y]]>",
            "<?xml version=\"1.0\"?>",
            "<!-- c -->",
        ]),
        0..40,
    )
    .prop_map(|parts| parts.concat().into_bytes())
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        json_body(),
        form_body(),
        xml_body(),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let names = prop::sample::select(vec![
        "x-sig",
        "x-event",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-hub-signature-256",
        "x-github-event",
        "x-github-delivery",
        "signature",
        "content-type",
        "x-anything",
    ]);
    prop::collection::vec((names, "\\PC{0,40}"), 0..8).prop_map(|hs| {
        hs.into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<Vec<_>>()
    })
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn callback_parsing_and_verification_never_panic_and_respect_the_limits(
        platform in any::<prop::sample::Index>(),
        route in any::<prop::sample::Index>(),
        method in prop::sample::select(vec!["GET", "POST", "PUT"]),
        raw_query in "[a-z0-9=&%+]{0,60}",
        headers in headers(),
        body in body(),
        over in prop::option::weighted(0.05, any::<u64>()),
        skew in -600_i64..600,
    ) {
        let (p, creds) = platform.get(&PLATFORMS);
        let cb = route.get(&p.callbacks);
        let inbound = Inbound {
            method: method.to_string(),
            route: cb.path.clone(),
            raw_query: raw_query.clone(),
            headers,
            body: body.clone(),
            over_limit: over,
            ..Inbound::default()
        };
        let limits = cb.limits;
        let checked = check_limits(cb, &inbound);
        if over.is_some() || body.len() > limits.body {
            prop_assert!(checked.is_err());
        }
        if checked.is_err() {
            return Ok(());
        }
        prop_assert!(entrepot::engine::decode::count_pairs(raw_query.as_bytes(), usize::MAX) <= limits.fields);
        let Ok(parts) = parts_of(cb, inbound) else {
            return Ok(());
        };
        prop_assert!(parts.form.len() <= limits.fields);
        prop_assert!(parts.query.len() <= limits.fields);
        if let Some(verify) = &cb.verify {
            let env = RunEnv {
                credentials: creds,
                settings: &p.settings,
                platform: &p.name,
                now: OffsetDateTime::now_utc() + time::Duration::seconds(skew),
                nonce: None,
            };
            // Arbitrary deliveries are refused (or, by chance, accepted): never a panic.
            let _ = verify.verify(&parts, &env);
            let _ = verify.replay_key(&parts, &env);
        }
        if let Ok(doc) = document_of(cb, &parts) {
            match cb.format {
                BodyFormat::Json => prop_assert!(depth(&doc) <= limits.depth),
                // The root element's name is one more object level.
                BodyFormat::Xml => prop_assert!(depth(&doc) <= limits.depth + 1),
                BodyFormat::Form => {
                    prop_assert!(doc.as_object().is_some_and(|m| m.len() <= limits.fields));
                }
                BodyFormat::Text => prop_assert!(doc.is_string() || parts.body.is_empty()),
            }
        }
    }
}
