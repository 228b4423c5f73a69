//! Signatures inside the body: a WeChat Pay v2-style signature computed over an XML body's
//! top-level elements and placed into it as `<sign>`, the same scheme verified on an XML
//! callback, and signatures read from a field of a JSON body (top-level or inside a nested
//! item) with that field left out of the signed parameters. Every expected value comes from
//! `tests/vectors/xml-json-signatures.json`, computed with Python's hashlib/hmac by the script
//! recorded in its `how` field.

use entrepot::engine::build::{BuildInput, build};
use entrepot::recipe::{Parts, Rejection, RunEnv};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::support::root;
use crate::vectors::platform;

fn data() -> Value {
    let text =
        std::fs::read_to_string(root().join("tests/vectors/xml-json-signatures.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut at = v;
    for p in path {
        at = &at[*p];
    }
    at.as_str()
        .unwrap_or_else(|| panic!("{path:?} is not text"))
}

fn env<'a>(credentials: &'a Map<String, Value>, settings: &'a Map<String, Value>) -> RunEnv<'a> {
    RunEnv {
        credentials,
        settings,
        platform: "test",
        now: OffsetDateTime::now_utc(),
        nonce: None,
    }
}

fn body_parts(body: &str) -> Parts {
    Parts {
        method: "POST".into(),
        url: "http://127.0.0.1/hook".into(),
        path: "/hook".into(),
        body: body.as_bytes().to_vec(),
        ..Parts::default()
    }
}

fn wx_credentials(d: &Value) -> Map<String, Value> {
    let f = &d["request_fields"];
    [
        ("appid", s(f, &["appid"])),
        ("mch_id", s(f, &["mch_id"])),
        ("key", s(d, &["key"])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), json!(v)))
    .collect()
}

/// The XML request carries the signature Python computed, as the root's last child, and the
/// canonical string the recipe signed is Python's string without the `&key=` suffix.
#[test]
fn xml_request_signature_matches_python() {
    let d = data();
    let p = platform("xml-signatures.yaml");
    let creds = wx_credentials(&d);
    for (op, alg) in [("product.get", "md5"), ("order.get", "hmac_sha256")] {
        let req = build(
            &p,
            &p.operations[op],
            &BuildInput {
                input: &json!({}),
                credentials: &creds,
                now: OffsetDateTime::now_utc(),
                nonce: None,
                token: None,
            },
        )
        .unwrap();
        let body = String::from_utf8(req.body.clone()).unwrap();
        let sign = s(&d, &[alg, "sign"]);
        assert!(
            body.ends_with(&format!("<sign>{sign}</sign></xml>")),
            "{op}: {body}"
        );
        assert_eq!(body.matches("<sign>").count(), 1, "{body}");
        // The escaped field is sent escaped and signed as its text.
        assert!(
            body.contains("<body>test &amp; &lt;goods&gt;</body>"),
            "{body}"
        );
        let signed = s(&d, &[alg, "string"]);
        let params = signed
            .strip_suffix(&format!("&key={}", s(&d, &["key"])))
            .unwrap();
        let traced = req.trace.steps.iter().find(|(n, _)| n == "params").unwrap();
        assert_eq!(traced.1, params, "{op}");
        assert_eq!(
            req.content_type.as_deref(),
            Some("application/xml; charset=utf-8")
        );
    }
}

/// A WeChat-v2-style notification: its `<sign>` (in the middle, as senders place it) is read as
/// the signature and left out of the signed fields; CDATA text is signed as its text; an empty
/// element is left out, as Python's script does.
#[test]
fn xml_callback_signature_verifies() {
    let d = data();
    let p = platform("xml-signatures.yaml");
    let verify = p.callbacks[0].verify.as_ref().unwrap();
    let creds = wx_credentials(&d);
    let settings = Map::new();
    let e = env(&creds, &settings);
    let f = &d["notify_fields"];
    let sign = s(&d, &["notify", "sign"]);
    let xml = |sign_elem: &str, total_fee: &str| {
        let mut x = String::from("<xml>");
        for (k, v) in f.as_object().unwrap() {
            let v = v.as_str().unwrap();
            let v = if k == "total_fee" { total_fee } else { v };
            if k == "openid" {
                x.push_str(sign_elem);
            }
            if k == "appid" || k == "return_code" {
                x.push_str(&format!("<{k}><![CDATA[{v}]]></{k}>"));
            } else {
                x.push_str(&format!("<{k}>{v}</{k}>"));
            }
        }
        x.push_str("</xml>");
        x
    };
    let genuine = xml(&format!("<sign><![CDATA[{sign}]]></sign>"), "101");
    assert_eq!(verify.expected(&body_parts(&genuine), &e).unwrap().0, sign);
    verify.verify(&body_parts(&genuine), &e).unwrap();
    let tampered = xml(&format!("<sign>{sign}</sign>"), "1");
    assert_eq!(
        verify.verify(&body_parts(&tampered), &e),
        Err(Rejection::Mismatch)
    );
    assert!(matches!(
        verify.verify(&body_parts(&xml("", "101")), &e),
        Err(Rejection::Missing(_))
    ));
    assert!(matches!(
        verify.verify(&body_parts("not xml"), &e),
        Err(Rejection::Missing(_))
    ));
}

/// A signature in a top-level JSON field: the other fields (a number as its text) are signed.
#[test]
fn json_field_signature_verifies() {
    let d = data();
    let p = platform("json-field-signatures.yaml");
    let verify = p.callbacks[0].verify.as_ref().unwrap();
    let creds: Map<String, Value> = [("push_secret".to_string(), d["push_secret"].clone())]
        .into_iter()
        .collect();
    let settings = Map::new();
    let e = env(&creds, &settings);
    let sign = s(&d, &["top", "sign"]);
    let genuine = format!(r#"{{"event":"stock","sign":"{sign}","sku":"A1","qty":5}}"#);
    assert_eq!(verify.expected(&body_parts(&genuine), &e).unwrap().0, sign);
    verify.verify(&body_parts(&genuine), &e).unwrap();
    let tampered = genuine.replace("\"qty\":5", "\"qty\":6");
    assert_eq!(
        verify.verify(&body_parts(&tampered), &e),
        Err(Rejection::Mismatch)
    );
    assert!(matches!(
        verify.verify(&body_parts(r#"{"event":"stock","sku":"A1","qty":5}"#), &e),
        Err(Rejection::Missing(_))
    ));
    // A signature that is not text is no signature.
    assert!(matches!(
        verify.verify(&body_parts(r#"{"event":"stock","sign":{"a":1}}"#), &e),
        Err(Rejection::Missing(_))
    ));
}

/// A signature inside a nested item, over that item's fields (its `sign` left out); fields
/// outside the item are not signed.
#[test]
fn nested_json_field_signature_verifies() {
    let d = data();
    let p = platform("json-field-signatures.yaml");
    let verify = p.callbacks[1].verify.as_ref().unwrap();
    let creds: Map<String, Value> = [("push_secret".to_string(), d["push_secret"].clone())]
        .into_iter()
        .collect();
    let settings = Map::new();
    let e = env(&creds, &settings);
    let sign = s(&d, &["nested", "sign"]);
    let mut item = d["nested_item"].clone();
    item["sign"] = json!(sign);
    let genuine = json!({"type": "shipped", "sent_at": 1700000000, "data": item}).to_string();
    assert_eq!(verify.expected(&body_parts(&genuine), &e).unwrap().0, sign);
    verify.verify(&body_parts(&genuine), &e).unwrap();
    // Outside the item: not signed, so a change there still verifies.
    let outside = genuine.replace("1700000000", "1700000001");
    verify.verify(&body_parts(&outside), &e).unwrap();
    let tampered = genuine.replace("SF123", "SF124");
    assert_eq!(
        verify.verify(&body_parts(&tampered), &e),
        Err(Rejection::Mismatch)
    );
    let mut unsigned = d["nested_item"].clone();
    unsigned["x"] = json!(1);
    assert!(matches!(
        verify.verify(
            &body_parts(&json!({"type": "shipped", "data": unsigned, "sign": sign}).to_string()),
            &e
        ),
        Err(Rejection::Missing(_))
    ));
}

fn diagnostics(text: &str) -> Vec<(String, String)> {
    let doc = entrepot::config::source::parse(std::path::Path::new("platform.yaml"), text.into())
        .unwrap();
    entrepot::compile::compile_docs(vec![doc], &|_| None)
        .diagnostics
        .iter()
        .map(|d| (d.path.clone(), d.message.clone()))
        .collect()
}

/// Misplaced signatures are refused when the file loads, each at its place.
#[test]
fn misplaced_body_signatures_are_compile_errors() {
    let got = diagnostics(
        r#"
platform: bad_places
credentials: [key]
request:
  url: "http://127.0.0.1:9/api"
  json: { a: "1" }
  sign:
    steps:
      - { name: params, kind: canonical, from: [query], json_path: "$.data", json_fields: { a: "$[" } }
      - { name: sig, kind: digest, alg: md5, input: "{{params}}{{credentials.key}}" }
    place:
      - { to: xml, name: "bad name", value: "{{sig}}" }
operations:
  product.get: {}
callbacks:
  - path: /two
    verify:
      signature: { header: X-Sign, json: "$.sign" }
      steps: [{ name: sig, kind: digest, alg: md5, input: "{{body}}" }]
      expect: "{{sig}}"
    event_type: { path: $.type, map: { a: product.changed } }
  - path: /not-a-field
    verify:
      signature: { json: "$.items[0]" }
      steps: [{ name: sig, kind: digest, alg: md5, input: "{{body}}" }]
      expect: "{{sig}}"
    event_type: { path: $.type, map: { a: product.changed } }
  - path: /bad-element
    format: xml
    verify:
      signature: { xml: "<sign>" }
      steps: [{ name: sig, kind: digest, alg: md5, input: "{{body}}" }]
      expect: "{{sig}}"
    event_type: { path: $.type, map: { a: product.changed } }
"#,
    );
    let expect = [
        (
            "request.sign.steps[0].json_path",
            "does not read `from: [json]`",
        ),
        (
            "request.sign.place[0].name",
            "'bad name' is not an XML element name",
        ),
        (
            "request.sign.steps[0].json_fields.a",
            "'$[' is not a JSONPath",
        ),
        (
            "operations.product.get.request",
            "places an XML element but the request has no XML body",
        ),
        (
            "callbacks[0].verify.signature",
            "exactly one of `header`, `field`, `json` and `xml`",
        ),
        (
            "callbacks[1].verify.signature.json",
            "is not a JSONPath ending in a field name",
        ),
        (
            "callbacks[2].verify.signature.xml",
            "is not an XML element name",
        ),
    ];
    for (path, message) in expect {
        assert!(
            got.iter().any(|(p, m)| p == path && m.contains(message)),
            "no diagnostic at {path} saying {message}: {got:?}"
        );
    }
    assert_eq!(got.len(), expect.len(), "{got:?}");
}

/// Through the HTTP server: a genuine WeChat-v2-style XML notification and a genuine nested
/// JSON push are accepted; the same deliveries altered are refused with 401.
#[tokio::test]
async fn body_signatures_through_the_server() {
    use std::sync::Arc;

    use arc_swap::ArcSwap;
    use entrepot::credentials::CredentialSets;
    use entrepot::engine::Engine;
    use entrepot::server::AppState;

    let d = data();
    let compiled = entrepot::compile::compile_files(
        &[
            root().join("tests/vectors/xml-signatures.yaml"),
            root().join("tests/vectors/json-field-signatures.yaml"),
        ],
        &|_| None,
    );
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let mut creds = CredentialSets::new();
    creds.insert("vector_xml".into(), wx_credentials(&d));
    creds.insert(
        "vector_json_field".into(),
        [("push_secret".to_string(), d["push_secret"].clone())]
            .into_iter()
            .collect(),
    );
    let engine = Arc::new(Engine::new(store.clone(), creds, |_| None));
    let state = AppState {
        plan: Arc::new(ArcSwap::from_pointee(compiled.plan)),
        store: Some(store.clone()),
        engine: Some(engine),
        targets: Arc::new(Vec::new()),
        admin_token: None,
        notify: None,
        reloader: None,
        trust_forwarded_headers: false,
        orders: None,
        sync: None,
        metrics: Default::default(),
        monitor: None,
    };
    let addr = crate::support::serve_on_loopback(state).await;
    let http = reqwest::Client::new();
    let post = |path: &str, ctype: &str, body: String| {
        http.post(format!("http://{addr}/callbacks{path}"))
            .header("content-type", ctype)
            .body(body)
            .send()
    };

    let mut xml = String::from("<xml>");
    for (k, v) in d["notify_fields"].as_object().unwrap() {
        xml.push_str(&format!("<{k}><![CDATA[{}]]></{k}>", v.as_str().unwrap()));
    }
    xml.push_str(&format!(
        "<sign>{}</sign></xml>",
        s(&d, &["notify", "sign"])
    ));
    let forged = xml.replace("[101]", "[1]");
    assert_ne!(forged, xml);
    let r = post("/vector-xml/notify", "application/xml", forged)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = post("/vector-xml/notify", "application/xml", xml)
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    let mut item = d["nested_item"].clone();
    item["sign"] = json!(s(&d, &["nested", "sign"]));
    let push = json!({"type": "shipped", "data": item}).to_string();
    let forged = push.replace("PO-77", "PO-78");
    let r = post("/vector-json/nested", "application/json", forged)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = post("/vector-json/nested", "application/json", push)
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// Chosen nested fields, each read by its own JSONPath under a name of its own, are the signed
/// parameters; other fields are not signed.
#[test]
fn nested_json_fields_by_path_are_signed() {
    let d = data();
    let p = platform("json-field-signatures.yaml");
    let verify = p.callbacks[2].verify.as_ref().unwrap();
    let creds: Map<String, Value> = [("push_secret".to_string(), d["push_secret"].clone())]
        .into_iter()
        .collect();
    let settings = Map::new();
    let e = env(&creds, &settings);
    let sign = s(&d, &["picked", "sign"]);
    let genuine = json!({
        "type": "paid",
        "data": {"order": {"id": "PO-77", "lines": 2}, "amount": 1999, "currency": "EUR"},
        "sig": sign
    })
    .to_string();
    let (expected, trace) = verify.expected(&body_parts(&genuine), &e).unwrap();
    assert_eq!(expected, sign);
    assert_eq!(trace.steps[0].1, s(&d, &["picked", "string"]));
    verify.verify(&body_parts(&genuine), &e).unwrap();
    verify
        .verify(
            &body_parts(&genuine.replace("\"lines\":2", "\"lines\":3")),
            &e,
        )
        .unwrap();
    assert_eq!(
        verify.verify(&body_parts(&genuine.replace("1999", "1998")), &e),
        Err(Rejection::Mismatch)
    );
}

/// The same signature placed into an XML body built by mapping (`body: { format: xml }`),
/// with a CDATA field: the element text is signed, not its CDATA wrapping.
#[test]
fn mapped_xml_body_gets_the_python_signature() {
    let d = data();
    let f = &d["request_fields"];
    let text = format!(
        r#"
platform: mapped_xml
settings:
  appid: "{}"
  mch_id: "{}"
  device_info: "{}"
  goods: "{}"
  nonce_str: "{}"
  out_trade_no: "{}"
  total_fee: "{}"
credentials: [key]
request:
  url: "http://127.0.0.1:9/pay/unifiedorder"
  body:
    format: xml
    root: xml
    fields:
      total_fee: {{ path: settings.total_fee }}
      appid: {{ path: settings.appid }}
      mch_id: {{ path: settings.mch_id }}
      body: {{ path: settings.goods, cdata: true }}
      device_info: {{ path: settings.device_info }}
      nonce_str: {{ path: settings.nonce_str }}
      out_trade_no: {{ path: settings.out_trade_no }}
  sign:
    steps:
      - {{ name: params, kind: canonical, from: [xml] }}
      - {{ name: sig, kind: digest, alg: md5, input: "{{{{params}}}}&key={{{{credentials.key}}}}", encode: hex_upper }}
    place:
      - {{ to: xml, name: sign, value: "{{{{sig}}}}" }}
operations:
  product.get: {{}}
"#,
        s(f, &["appid"]),
        s(f, &["mch_id"]),
        s(f, &["device_info"]),
        s(f, &["body"]),
        s(f, &["nonce_str"]),
        s(f, &["out_trade_no"]),
        s(f, &["total_fee"]),
    );
    let doc = entrepot::config::source::parse(std::path::Path::new("platform.yaml"), text).unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
    assert!(
        compiled.diagnostics.is_empty(),
        "{}",
        crate::support::render(&compiled.diagnostics)
    );
    let p = compiled.plan.platforms.values().next().unwrap().clone();
    let creds: Map<String, Value> = [("key".to_string(), d["key"].clone())]
        .into_iter()
        .collect();
    let req = build(
        &p,
        &p.operations["product.get"],
        &BuildInput {
            input: &json!({}),
            credentials: &creds,
            now: OffsetDateTime::now_utc(),
            nonce: None,
            token: None,
        },
    )
    .unwrap();
    let body = String::from_utf8(req.body).unwrap();
    assert!(
        body.contains("<body><![CDATA[test & <goods>]]></body>"),
        "{body}"
    );
    assert!(
        body.ends_with(&format!("<sign>{}</sign></xml>", s(&d, &["md5", "sign"]))),
        "{body}"
    );
}
