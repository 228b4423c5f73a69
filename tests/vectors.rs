//! Published signature vectors (`tests/vectors/signing-public.json`, a copy of the project's
//! shared vector file kept in the repository) reproduced through the YAML recipes under
//! `tests/vectors/`, and values made by OpenSSL (`tests/vectors/openssl.json`).
//! Every expected value is read from those files, never computed by the code under test.

use std::sync::Arc;

use entrepot::compile;
use entrepot::engine::build::{BuildInput, BuiltRequest, build};
use entrepot::plan::PlatformPlan;
use entrepot::recipe::{Parts, Rejection, RunEnv};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::root;

/// The published vectors, vendored so a fresh clone tests without anything beside it.
const VECTOR_FILE: &str = "tests/vectors/signing-public.json";

fn vectors() -> Vec<Value> {
    let path = root().join(VECTOR_FILE);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the published vectors must be at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The vendored copy is the shared vector file, byte for byte, when that file is beside the
/// repository (it is not on a fresh clone: then this says so in one line and checks nothing).
#[test]
fn vendored_vectors_equal_the_shared_file() {
    let shared = root()
        .parent()
        .unwrap()
        .join("shared/vectors/signing-public.json");
    let Ok(original) = std::fs::read(&shared) else {
        eprintln!("skipped: {} is absent", shared.display());
        return;
    };
    let copy = std::fs::read(root().join(VECTOR_FILE))
        .unwrap_or_else(|e| panic!("{VECTOR_FILE} must exist: {e}"));
    assert!(
        copy == original,
        "{VECTOR_FILE} differs from {}: copy it again",
        shared.display()
    );
}

fn vector(id: &str) -> Value {
    vectors()
        .into_iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("vector {id} not in the vector file"))
}

fn openssl() -> Value {
    let text = std::fs::read_to_string(root().join("tests/vectors/openssl.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn platform(file: &str) -> Arc<PlatformPlan> {
    let compiled = compile::compile_files(&[root().join("tests/vectors").join(file)], &|_| None);
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );
    compiled.plan.platforms.values().next().unwrap().clone()
}

fn creds(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

fn at(rfc3339: &str) -> OffsetDateTime {
    OffsetDateTime::parse(rfc3339, &Rfc3339).unwrap()
}

/// "2016-01-01 12:00:00" in UTC+8 → "2016-01-01T12:00:00+08:00"; the millisecond and
/// `+0800` forms are rewritten the same way.
fn cst_to_rfc3339(ts: &str) -> String {
    let ts = ts.replace(' ', "T");
    match ts.strip_suffix("+0800") {
        Some(base) => format!("{base}+08:00"),
        None => format!("{ts}+08:00"),
    }
}

fn build_op(
    p: &PlatformPlan,
    op: &str,
    input: Value,
    credentials: &Map<String, Value>,
    now: OffsetDateTime,
) -> BuiltRequest {
    build(
        p,
        &p.operations[op],
        &BuildInput {
            input: &input,
            credentials,
            now,
            nonce: None,
            token: None,
        },
    )
    .unwrap()
}

fn form_of(req: &BuiltRequest) -> Vec<(String, String)> {
    let body = String::from_utf8(req.body.clone()).unwrap();
    body.split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            (decode(k), decode(v))
        })
        .collect()
}

/// Form decoding written for these tests: `+` is a space, `%XX` a byte.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    &form
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no form field {name}"))
        .1
}

/// Checks that the signed request carries exactly the vector's parameters plus `sign`.
fn assert_params(form: &[(String, String)], params: &Value) {
    let params = params.as_object().unwrap();
    for (k, v) in params {
        assert_eq!(field(form, k), v.as_str().unwrap(), "parameter {k}");
    }
    assert_eq!(
        form.len(),
        params.len() + 1,
        "unexpected extra parameters in {form:?}"
    );
}

#[test]
fn top_md5_docs() {
    let v = vector("top-md5-docs");
    let params = &v["inputs"]["params"];
    let p = platform("top.yaml");
    let req = build_op(
        &p,
        "product.get",
        json!({"spu_id": params["num_iid"]}),
        &creds(&[
            ("app_key", params["app_key"].as_str().unwrap()),
            ("session", params["session"].as_str().unwrap()),
            ("app_secret", v["inputs"]["secret"].as_str().unwrap()),
        ]),
        at(&cst_to_rfc3339(params["timestamp"].as_str().unwrap())),
    );
    let form = form_of(&req);
    assert_params(&form, params);
    assert_eq!(field(&form, "sign"), v["expected"].as_str().unwrap());
}

#[test]
fn jd_docs() {
    let v = vector("jd-docs");
    let params = &v["inputs"]["params"];
    let p = platform("jd.yaml");
    let req = build_op(
        &p,
        "order.get",
        json!({"order_id": "o-1"}),
        &creds(&[
            ("app_key", params["app_key"].as_str().unwrap()),
            ("access_token", params["access_token"].as_str().unwrap()),
            ("app_secret", v["inputs"]["secret"].as_str().unwrap()),
        ]),
        at(&cst_to_rfc3339(params["timestamp"].as_str().unwrap())),
    );
    let form = form_of(&req);
    assert_params(&form, params);
    assert_eq!(field(&form, "sign"), v["expected"].as_str().unwrap());
}

#[test]
fn yanxuan_unofficial() {
    let v = vector("yanxuan-unofficial");
    let params = &v["inputs"]["params"];
    let p = platform("yanxuan.yaml");
    let req = build_op(
        &p,
        "product.list",
        json!({}),
        &creds(&[
            ("app_key", params["appKey"].as_str().unwrap()),
            ("app_secret", v["inputs"]["secret"].as_str().unwrap()),
        ]),
        at(&cst_to_rfc3339(params["timestamp"].as_str().unwrap())),
    );
    let form = form_of(&req);
    assert_params(&form, params);
    assert_eq!(field(&form, "sign"), v["expected"].as_str().unwrap());
}

/// The sample platform signs with exactly the recipe that reproduces the vector.
#[test]
fn sample_platform_uses_the_vector_recipe() {
    let read = |p: &std::path::Path| -> Value {
        serde_yaml_ng::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let sample = read(&root().join("platforms/yanxuan.yaml"));
    let vector = read(&root().join("tests/vectors/yanxuan.yaml"));
    assert_eq!(sample["request"]["sign"], vector["request"]["sign"]);
}

fn env<'a>(
    credentials: &'a Map<String, Value>,
    settings: &'a Map<String, Value>,
    now: OffsetDateTime,
) -> RunEnv<'a> {
    RunEnv {
        credentials,
        settings,
        platform: "test",
        now,
        nonce: None,
    }
}

fn parts(headers: &[(&str, &str)], body: &str) -> Parts {
    Parts {
        method: "POST".into(),
        url: "http://127.0.0.1/hook".into(),
        path: "/hook".into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
        ..Parts::default()
    }
}

#[test]
fn github_docs() {
    let v = vector("github-docs");
    let p = platform("github.yaml");
    let verify = p.callbacks[0].verify.as_ref().unwrap();
    let c = creds(&[("webhook_secret", v["inputs"]["secret"].as_str().unwrap())]);
    let settings = Map::new();
    let e = env(&c, &settings, OffsetDateTime::now_utc());
    let expected = v["expected"].as_str().unwrap();
    let payload = v["inputs"]["payload"].as_str().unwrap();
    let good = parts(&[("X-Hub-Signature-256", expected)], payload);
    assert_eq!(verify.expected(&good, &e).unwrap().0, expected);
    verify.verify(&good, &e).unwrap();
    let tampered = parts(
        &[("X-Hub-Signature-256", expected)],
        &payload.replace('!', "?"),
    );
    assert_eq!(verify.verify(&tampered, &e), Err(Rejection::Mismatch));
    assert!(matches!(
        verify.verify(&parts(&[], payload), &e),
        Err(Rejection::Missing(_))
    ));
}

#[test]
fn standard_webhooks_sign_fn() {
    let v = vector("stdwh-sign-fn");
    let i = &v["inputs"];
    let p = platform("standard-webhooks.yaml");
    let verify = p.callbacks[0].verify.as_ref().unwrap();
    let expected = v["expected"].as_str().unwrap();
    let ts: i64 = i["webhook-timestamp"].as_str().unwrap().parse().unwrap();
    let now = OffsetDateTime::from_unix_timestamp(ts).unwrap();
    let settings = Map::new();
    let secret = i["secret"].as_str().unwrap();
    // The vector's notes: the secret without its prefix must give the same result.
    for secret in [secret, secret.strip_prefix("whsec_").unwrap()] {
        let c = creds(&[("secret", secret)]);
        let e = env(&c, &settings, now);
        let headers = [
            ("webhook-id", i["webhook-id"].as_str().unwrap()),
            (
                "webhook-timestamp",
                i["webhook-timestamp"].as_str().unwrap(),
            ),
            ("webhook-signature", &format!("v1,bogus= {expected}")),
        ];
        let delivery = parts(&headers, i["payload"].as_str().unwrap());
        assert_eq!(verify.expected(&delivery, &e).unwrap().0, expected);
        // Any entry of the space-separated list may match.
        verify.verify(&delivery, &e).unwrap();
        // Outside the five-minute window either way, the delivery is refused.
        for skew in [-301, 301] {
            let e = env(&c, &settings, now + time::Duration::seconds(skew));
            assert!(
                matches!(verify.verify(&delivery, &e), Err(Rejection::Stale { .. })),
                "skew {skew}"
            );
        }
        assert_eq!(
            verify.replay_key(&delivery, &e).unwrap().as_deref(),
            i["webhook-id"].as_str()
        );
    }
}

#[test]
fn aws_sigv4_get_vanilla() {
    let v = vector("get-vanilla");
    let i = &v["inputs"];
    let x = &v["expected"];
    let p = platform("aws-sigv4.yaml");
    // The YAML's settings must be the vector's.
    assert_eq!(p.settings["region"], i["region"]);
    assert_eq!(p.settings["service"], i["service"]);
    assert_eq!(p.settings["host"], i["signed_headers"][0][1]);
    let amz = i["amz_date"].as_str().unwrap();
    let now = at(&format!(
        "{}-{}-{}T{}:{}:{}Z",
        &amz[0..4],
        &amz[4..6],
        &amz[6..8],
        &amz[9..11],
        &amz[11..13],
        &amz[13..15]
    ));
    let c = creds(&[
        ("access_key", i["access_key"].as_str().unwrap()),
        ("secret_key", i["secret_key"].as_str().unwrap()),
    ]);
    let req = build_op(&p, "product.get", json!({}), &c, now);
    let step = |name: &str| {
        req.trace
            .steps
            .iter()
            .find(|(k, _)| k == name)
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(
        step("canonical_request"),
        x["canonical_request"].as_str().unwrap()
    );
    assert_eq!(
        step("string_to_sign"),
        x["string_to_sign"].as_str().unwrap()
    );
    assert_eq!(step("signature"), x["signature"].as_str().unwrap());
    let auth = req
        .headers
        .iter()
        .find(|(k, _)| k == "Authorization")
        .unwrap();
    assert_eq!(auth.1, x["authorization"].as_str().unwrap());
    assert_eq!(req.url, "https://example.amazonaws.com/");
    // Derived keys are key material: never shown in a trace.
    assert_eq!(step("k_signing"), "***");
}

#[test]
fn rsa_sha256_matches_openssl_and_verifies() {
    let o = &openssl()["rsa_sha256"];
    let message = o["message"].as_str().unwrap();
    let expected = o["signature_base64"].as_str().unwrap();
    // The message is `biz_content=...&charset=...&method=...&timestamp=...`: split it into the
    // form fields the request carries.
    let fields: Map<String, Value> = message
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), json!(v))
        })
        .collect();
    // The order id the platform file writes into `biz_content`.
    let biz: Value = serde_json::from_str(fields["biz_content"].as_str().unwrap()).unwrap();
    let out_trade_no = biz["out_trade_no"].clone();
    let key = |f: &str| std::fs::read_to_string(root().join("tests/vectors").join(f)).unwrap();
    let public = key("rsa-test-key.pub.pem");
    let p = platform("rsa.yaml");
    for private in [key("rsa-test-key.pem"), key("rsa-test-key.pkcs1.pem")] {
        let c = creds(&[("private_key", &private), ("platform_public_key", &public)]);
        let req = build_op(
            &p,
            "order.create",
            json!({"order_id": out_trade_no}),
            &c,
            at(&cst_to_rfc3339(fields["timestamp"].as_str().unwrap())),
        );
        let form = form_of(&req);
        assert_eq!(field(&form, "sign"), expected);
        // The platform side verifies the same form with the public key.
        let verify = p.callbacks[0].verify.as_ref().unwrap();
        let settings = Map::new();
        let e = env(&c, &settings, OffsetDateTime::now_utc());
        let mut delivery = parts(&[], "");
        delivery.form = form.clone();
        verify.verify(&delivery, &e).unwrap();
        let mut forged = delivery.clone();
        forged
            .form
            .iter_mut()
            .find(|(k, _)| k == "biz_content")
            .unwrap()
            .1
            .push(' ');
        assert_eq!(verify.verify(&forged, &e), Err(Rejection::Mismatch));
    }
}

#[test]
fn pairs_header_matches_openssl() {
    let o = &openssl()["hmac_sha256_pairs"];
    let (t, body) = o["signed_payload"]
        .as_str()
        .unwrap()
        .split_once('.')
        .unwrap();
    let sig = o["signature_hex"].as_str().unwrap();
    let p = platform("pairs.yaml");
    let verify = p.callbacks[0].verify.as_ref().unwrap();
    let c = creds(&[("secret", o["key"].as_str().unwrap())]);
    let settings = Map::new();
    let now = OffsetDateTime::from_unix_timestamp(t.parse().unwrap()).unwrap();
    let e = env(&c, &settings, now);
    let header = format!("t={t},v1=0000,v1={sig},v0=ignored");
    verify
        .verify(&parts(&[("Signature", &header)], body), &e)
        .unwrap();
    let only_bad = format!("t={t},v1=0000");
    assert_eq!(
        verify.verify(&parts(&[("Signature", &only_bad)], body), &e),
        Err(Rejection::Mismatch)
    );
}

/// The WeChat Pay v3 recipe of the cookbook (`docs/cookbook/wechatpay-v3.yaml`): a request
/// signed by the gateway equals OpenSSL's signature of the documented string, and a
/// notification signed by OpenSSL verifies with the key its serial names (and no other).
#[test]
fn cookbook_wechatpay_v3_matches_openssl() {
    let text = std::fs::read_to_string(root().join("tests/vectors/openssl-cookbook.json")).unwrap();
    let o: Value = serde_json::from_str(&text).unwrap();
    let compiled =
        compile::compile_files(&[root().join("docs/cookbook/wechatpay-v3.yaml")], &|_| None);
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );
    let p = compiled.plan.platforms.values().next().unwrap().clone();
    let key = |f: &str| std::fs::read_to_string(root().join("tests/vectors").join(f)).unwrap();
    let serial = o["notification"]["serial"].as_str().unwrap();
    let keys = json!({ "OTHER-SERIAL": key("p256-test-key.pub.pem"), serial: key("rsa-test-key.pub.pem") });
    let c = creds(&[
        ("merchant_private_key", &key("rsa-test-key.pem")),
        ("platform_public_keys", &keys.to_string()),
    ]);

    let r = &o["request"];
    let req = build(
        &p,
        &p.operations["order.get"],
        &BuildInput {
            input: &r["input"],
            credentials: &c,
            now: at(r["at"].as_str().unwrap()),
            nonce: r["nonce"].as_str().map(str::to_owned),
            token: None,
        },
    )
    .unwrap();
    let authorization = req
        .headers
        .iter()
        .find(|(k, _)| k == "Authorization")
        .map(|(_, v)| v.as_str());
    assert_eq!(authorization, r["authorization"].as_str());

    let n = &o["notification"];
    let verify = p.callbacks[0].verify.as_ref().unwrap();
    let settings = Map::new();
    let ts = n["timestamp"].as_str().unwrap();
    let e = env(
        &c,
        &settings,
        OffsetDateTime::from_unix_timestamp(ts.parse().unwrap()).unwrap(),
    );
    let delivery = |serial: &str, body: &str| {
        parts(
            &[
                ("wechatpay-timestamp", ts),
                ("wechatpay-nonce", n["nonce"].as_str().unwrap()),
                ("wechatpay-serial", serial),
                (
                    "wechatpay-signature",
                    n["signature_base64"].as_str().unwrap(),
                ),
            ],
            body,
        )
    };
    let body = n["body"].as_str().unwrap();
    verify.verify(&delivery(serial, body), &e).unwrap();
    assert_eq!(
        verify.verify(&delivery(serial, &body.replace("SUCCESS", "CLOSED")), &e),
        Err(Rejection::Mismatch)
    );
    assert!(verify.verify(&delivery("OTHER-SERIAL", body), &e).is_err());
}
