//! Value transforms inside recipes (issue 11): template helpers in recipe steps and request
//! templates, `{{operation}}` in signing recipes, escaping in canonical pairs, and the parts of
//! a split signature usable as data. Expected values were computed with Python's `hmac`,
//! `hashlib`, `base64` and `json` modules (the commands are beside each value).

use std::path::Path;
use std::sync::Arc;

use entrepot::engine::build::{BuildInput, build};
use entrepot::plan::PlatformPlan;
use entrepot::recipe::{Parts, Rejection, RunEnv};
use serde_json::{Map, Value, json};

const SECRET: &str = "s3cret";

const PLATFORM: &str = r#"
platform: transforms
credentials: [secret]
request:
  method: GET
  # One URL for every operation: product.get goes to /api/product/get.
  url: "http://127.0.0.1:9/api/{{raw (replace operation '.' '/')}}"
  query:
    "a:b": "x\\y:z"
    plain: "v"
    sign: ""
  sign:
    steps:
      - name: params
        kind: canonical
        from: [query]
        exclude: [sign]
        escape: { "\\": "\\\\", ":": "\\:" }
        pair: "{key}:{value}"
        separator: "\n"
      - { name: target, kind: template, template: "{{operation}}" }
      - { name: payload, kind: template, template: "{{base64url_encode (canonical_json query strings=true)}}" }
      - { name: sig, kind: digest, alg: hmac-sha256, input: "{{operation}}\n{{params}}", key: "{{credentials.secret}}" }
    place:
      - { to: header, name: X-Op, value: "{{target}}" }
      - { to: header, name: X-Payload, value: "{{payload}}" }
      - { to: header, name: X-Sig, value: "{{sig}}" }
operations:
  product.get: {}
  order.get: {}
callbacks:
  - path: /transforms/token
    verify:
      signature: { header: X-Token, split: "." }
      steps:
        - { name: claims, kind: template, template: "{{base64url_decode signature.parts.[0]}}" }
        - { name: sig, kind: digest, alg: hmac-sha256, input: "{{signature.parts.[0]}}", key: "{{credentials.secret}}", encode: base64url }
      expect: "{{sig}}"
    event_type: { header: X-Event, map: { shipped: order.shipped } }
"#;

fn compile(text: &str) -> Arc<PlatformPlan> {
    let doc =
        entrepot::config::source::parse(Path::new("platform.yaml"), text.to_string()).unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
    assert!(
        compiled.diagnostics.is_empty(),
        "{}",
        crate::support::render(&compiled.diagnostics)
    );
    compiled.plan.platforms.values().next().unwrap().clone()
}

fn creds() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("secret".into(), json!(SECRET));
    m
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

#[test]
fn signing_recipes_see_the_operation_escape_pairs_and_transform_values() {
    let p = compile(PLATFORM);
    let credentials = creds();
    let built = build(
        &p,
        &p.operations["product.get"],
        &BuildInput {
            input: &json!({}),
            credentials: &credentials,
            now: time::OffsetDateTime::UNIX_EPOCH,
            nonce: None,
            token: None,
        },
    )
    .unwrap();
    // The URL's path is derived from the operation name.
    assert!(
        built.url.starts_with("http://127.0.0.1:9/api/product/get?"),
        "{}",
        built.url
    );
    // `\` and `:` escaped in names and values before the pairs are joined; `sign` excluded
    // by its name as sent.
    let params = built
        .trace
        .steps
        .iter()
        .find(|(k, _)| k == "params")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(params, "a\\:b:x\\\\y\\:z\nplain:v");
    assert_eq!(header(&built.headers, "X-Op"), "product.get");
    // python3 -c 'import json,base64; print(base64.urlsafe_b64encode(json.dumps({"a:b":"x\\y:z","plain":"v"},
    //   sort_keys=True,separators=(",",":")).encode()).rstrip(b"=").decode())'
    // (the empty `sign` parameter is in the query too: "sign":"" sorts last)
    assert_eq!(
        header(&built.headers, "X-Payload"),
        base64_url(r#"{"a:b":"x\\y:z","plain":"v","sign":""}"#)
    );
    assert_eq!(
        header(&built.headers, "X-Payload"),
        "eyJhOmIiOiJ4XFx5OnoiLCJwbGFpbiI6InYiLCJzaWduIjoiIn0"
    );
    // python3 -c 'import hmac,hashlib; print(hmac.new(b"s3cret",
    //   "product.get\na\\:b:x\\\\y\\:z\nplain:v".encode(), hashlib.sha256).hexdigest())'
    assert_eq!(
        header(&built.headers, "X-Sig"),
        "6c60c9d3262d00ef2ba729719f2786d31ccc4a8978bfca348fc14d1dcbdfd95d"
    );
    // Another operation signs its own name.
    let other = build(
        &p,
        &p.operations["order.get"],
        &BuildInput {
            input: &json!({}),
            credentials: &credentials,
            now: time::OffsetDateTime::UNIX_EPOCH,
            nonce: None,
            token: None,
        },
    )
    .unwrap();
    assert_eq!(header(&other.headers, "X-Op"), "order.get");
    assert!(other.url.starts_with("http://127.0.0.1:9/api/order/get?"));
}

/// base64url without padding, written here for the test (RFC 4648 section 5).
fn base64_url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text.as_bytes())
}

fn token_parts(token: &str) -> Parts {
    Parts {
        method: "POST".into(),
        url: "/callbacks/transforms/token".into(),
        path: "/callbacks/transforms/token".into(),
        headers: vec![
            ("X-Token".into(), token.into()),
            ("X-Event".into(), "shipped".into()),
        ],
        body: b"{}".to_vec(),
        ..Parts::default()
    }
}

#[test]
fn the_parts_of_a_split_signature_are_data() {
    let p = compile(PLATFORM);
    let verify = p.callbacks[0].verify.as_ref().unwrap();
    let credentials = creds();
    let settings = Map::new();
    let env = RunEnv {
        credentials: &credentials,
        settings: &settings,
        platform: "transforms",
        now: time::OffsetDateTime::UNIX_EPOCH,
        nonce: None,
    };
    // claims = base64url('{"event":"order.shipped","ts":1700000000}'); the signature is the
    // base64url HMAC-SHA256 of that text with the secret (python3 hmac/hashlib/base64).
    let claims = "eyJldmVudCI6Im9yZGVyLnNoaXBwZWQiLCJ0cyI6MTcwMDAwMDAwMH0";
    let good = format!("{claims}.m57peiCVsUi8zPrW-f8IPXo4w0lE4Ve0BT5tD2UVNbw");
    verify.verify(&token_parts(&good), &env).unwrap();
    let (_, trace) = verify.expected(&token_parts(&good), &env).unwrap();
    assert!(
        trace.steps.contains(&(
            "claims".into(),
            r#"{"event":"order.shipped","ts":1700000000}"#.into()
        )),
        "{trace:?}"
    );
    // Other claims under the same signature do not verify.
    let forged = format!(
        "{}.m57peiCVsUi8zPrW-f8IPXo4w0lE4Ve0BT5tD2UVNbw",
        base64_url(r#"{"event":"order.shipped","ts":1700000001}"#)
    );
    assert_eq!(
        verify.verify(&token_parts(&forged), &env),
        Err(Rejection::Mismatch)
    );
}

#[test]
fn escape_needs_a_character_to_replace() {
    let yaml = PLATFORM.replace(
        r#"escape: { "\\": "\\\\", ":": "\\:" }"#,
        r#"escape: { "": "x" }"#,
    );
    let doc = entrepot::config::source::parse(Path::new("platform.yaml"), yaml).unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
    let text = crate::support::render(&compiled.diagnostics);
    assert!(
        text.contains("error[E_INVALID_VALUE]: request.sign.steps[0].escape"),
        "{text}"
    );
    assert!(text.contains("empty"), "{text}");
}

/// A query written inside the `url` template is signed like one given under `query:`: the
/// recipe's `raw_query` and `query` see it, before the parameters added after it.
#[test]
fn a_query_written_in_the_url_is_signed() {
    let plan = compile(
        r#"
platform: inline_query
credentials: [secret]
settings: { mchid: "1900" }
request:
  method: GET
  url: "http://127.0.0.1:9/v3/pay?mchid={{settings.mchid}}&q=a%20b"
  query: { limit: "10" }
  sign:
    steps:
      - { name: as_sent, kind: template, template: "{{raw_query}}" }
      - { name: params, kind: canonical, from: [query], pair: "{key}={value}", separator: "&" }
    place:
      - { to: header, name: X-Raw, value: "{{as_sent}}" }
      - { to: header, name: X-Params, value: "{{params}}" }
operations:
  order.get: {}
"#,
    );
    let op = plan.operations.get("order.get").unwrap();
    let built = build(
        &plan,
        op,
        &BuildInput {
            input: &json!({"order_id": "o-1"}),
            credentials: &creds(),
            now: time::OffsetDateTime::UNIX_EPOCH,
            nonce: Some("n".into()),
            token: None,
        },
    )
    .unwrap();
    assert_eq!(
        built.url,
        "http://127.0.0.1:9/v3/pay?mchid=1900&q=a%20b&limit=10"
    );
    // Written by hand from the URL above: the query as sent, and its decoded pairs sorted.
    assert_eq!(
        header(&built.headers, "X-Raw"),
        "mchid=1900&q=a%20b&limit=10"
    );
    assert_eq!(
        header(&built.headers, "X-Params"),
        "limit=10&mchid=1900&q=a b"
    );
}
