//! Callback semantics real senders rely on (issue 10, point 8): the replay refusal answers the
//! route's status, repeated form keys are all verified, `{{url}}` and `{{raw_query}}` are what
//! the sender signed, bodies that are not JSON reach verification, a sender's own retry is
//! acknowledged and listed as a duplicate, and an outbound declared `Content-Type` replaces the
//! default one. Every test platform here is written in the test, not taken from the samples.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use entrepot::credentials::CredentialSets;
use entrepot::engine::Engine;
use entrepot::server::{AppState, serve};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::support::root;

pub const SECRET: &str = "hooks-secret";
pub const ADMIN: &str = "admin-token-of-callback-tests";

/// A gateway serving one platform file given as text.
pub struct Served {
    pub addr: std::net::SocketAddr,
    pub http: reqwest::Client,
    pub plan: Arc<entrepot::plan::PlatformPlan>,
    _dir: tempfile::TempDir,
}

/// Serves `yaml` (one platform) with `creds` as its credentials.
pub async fn serve_yaml(yaml: &str, creds: &[(&str, &str)]) -> Served {
    serve_yaml_trusting(yaml, creds, false).await
}

/// Serves `yaml` as [`serve_yaml`] does, trusting forwarded headers or not.
pub async fn serve_yaml_trusting(yaml: &str, creds: &[(&str, &str)], trust: bool) -> Served {
    let doc = entrepot::config::source::parse(Path::new("hooks.yaml"), yaml.to_string()).unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
    assert!(
        compiled.diagnostics.is_empty(),
        "{}",
        crate::support::render(&compiled.diagnostics)
    );
    let name = compiled.plan.platforms.keys().next().unwrap().clone();
    let plan = compiled.plan.platforms[&name].clone();
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let mut sets = CredentialSets::new();
    sets.insert(
        name,
        creds
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    );
    let engine = Arc::new(Engine::new(store.clone(), sets, |_| None));
    let state = AppState {
        plan: Arc::new(ArcSwap::from_pointee(compiled.plan)),
        store: Some(store.clone()),
        engine: Some(engine),
        admin_token: Some(entrepot::config::Secret::new(ADMIN)),
        trust_forwarded_headers: trust,
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(
        "127.0.0.1:0".parse().unwrap(),
        state,
        move |a| {
            let _ = tx.send(a);
        },
        std::future::pending(),
    ));
    Served {
        addr: rx.await.unwrap(),
        http: reqwest::Client::new(),
        plan,
        _dir: dir,
    }
}

impl Served {
    /// The URL of the store's SQLite file.
    pub fn db_url(&self) -> String {
        format!("sqlite://{}/gw.db", self._dir.path().display())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The admin delivery listing, newest first.
    pub async fn deliveries(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(self.url("/admin/v1/deliveries"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["deliveries"].as_array().cloned().unwrap_or_default()
    }
}

/// HMAC-SHA256, lower-case hex: the sender's side, written here independently of the runtime.
pub fn hmac_hex(key: &str, input: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(input);
    hex::encode(mac.finalize().into_bytes())
}

/// A platform file with the given callbacks (YAML list items, indented by two spaces).
pub fn platform_with(callbacks: &str) -> String {
    format!(
        "platform: hooks\ncredentials: [secret]\nrequest:\n  url: \"http://127.0.0.1:9/x\"\noperations:\n  product.get: {{}}\ncallbacks:\n{callbacks}"
    )
}

/// A route verified by an HMAC of the raw body in `X-Sig`.
pub fn body_route(path: &str, extra: &str) -> String {
    format!(
        r#"  - path: {path}
    verify:
      signature: {{ header: X-Sig }}
      steps:
        - {{ name: sig, kind: digest, alg: hmac-sha256, input: "{{{{body}}}}", key: "{{{{credentials.secret}}}}" }}
      expect: "{{{{sig}}}}"
      reject_status: 403
    event_type: {{ header: X-Event, map: {{ changed: product.changed }} }}
{extra}"#
    )
}

#[tokio::test]
async fn a_replay_is_refused_with_the_routes_reject_status() {
    let yaml = platform_with(
        r#"  - path: /hooks/replay
    verify:
      signature: { header: X-Sig }
      steps:
        - { name: sig, kind: digest, alg: hmac-sha256, input: "{{body}}", key: "{{credentials.secret}}" }
      expect: "{{sig}}"
      replay: { key: "{{headers.[x-id]}}", ttl: 1h }
      reject_status: 403
    event_type: { header: X-Event, map: { changed: product.changed } }
"#,
    );
    let s = serve_yaml(&yaml, &[("secret", SECRET)]).await;
    let body = r#"{"id":"1"}"#;
    let send = || {
        s.http
            .post(s.url("/callbacks/hooks/replay"))
            .header("x-sig", hmac_hex(SECRET, body.as_bytes()))
            .header("x-id", "delivery-1")
            .header("x-event", "changed")
            .body(body)
            .send()
    };
    assert_eq!(send().await.unwrap().status().as_u16(), 200);
    let again = send().await.unwrap();
    assert_eq!(again.status().as_u16(), 403, "the route's reject_status");
    assert!(again.text().await.unwrap().contains("already received"));
}

fn form_route() -> String {
    platform_with(
        r#"  - path: /hooks/form
    format: form
    verify:
      signature: { field: sign }
      steps:
        - { name: params, kind: canonical, from: [form], exclude: [sign] }
        - { name: sig, kind: digest, alg: hmac-sha256, input: "{{params}}", key: "{{credentials.secret}}" }
      expect: "{{sig}}"
    event_type: { path: $.type, map: { changed: product.changed } }
"#,
    )
}

#[tokio::test]
async fn repeated_form_keys_are_all_verified() {
    let s = serve_yaml(&form_route(), &[("secret", SECRET)]).await;
    let post = |body: String| {
        s.http
            .post(s.url("/callbacks/hooks/form"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    // The canonical string, by the documented rule (pairs sorted by key, a stable sort, so the
    // two values of `a` keep their order), computed by hand.
    let signed = "a=1&a=2&type=changed";
    let sign = hmac_hex(SECRET, signed.as_bytes());
    let r = post(format!("type=changed&a=1&a=2&sign={sign}"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());

    // A genuine body with one value, then an unsigned second value appended: refused.
    let sign = hmac_hex(SECRET, b"a=1&type=changed");
    let r = post(format!("type=changed&a=1&sign={sign}")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = post(format!("type=changed&a=1&sign={sign}&a=999"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "the appended value is not signed");
}

/// A route whose signature covers `{{method}} {{url}}`.
fn url_route() -> String {
    platform_with(
        r#"  - path: /hooks/url
    verify:
      signature: { header: X-Sig }
      steps:
        - { name: sig, kind: digest, alg: hmac-sha256, input: "{{method}} {{url}}", key: "{{credentials.secret}}" }
      expect: "{{sig}}"
    event_type: { header: X-Event, map: { changed: product.changed } }
"#,
    )
}

/// Posts to the URL route with a signature over `POST {signed}` and the given extra headers;
/// returns the status and the answer's text.
async fn post_signed_url(
    s: &Served,
    path: &str,
    signed: &str,
    extra: &[(&str, &str)],
) -> (u16, String) {
    let mut r = s
        .http
        .post(s.url(path))
        .header(
            "x-sig",
            hmac_hex(SECRET, format!("POST {signed}").as_bytes()),
        )
        .header("x-event", "changed")
        .body("{}");
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn url_is_the_full_url_as_received() {
    let s = serve_yaml(&url_route(), &[("secret", SECRET)]).await;
    let path = "/callbacks/hooks/url?b=2&a=%20x";
    let url = s.url(path);
    let (st, text) = post_signed_url(&s, path, &url, &[]).await;
    assert_eq!(st, 200, "{text}");
}

/// By default `X-Forwarded-Proto` and `X-Forwarded-Host` are a client's say-so: `{{url}}` is
/// `http://` and the `Host` header whatever they claim.
#[tokio::test]
async fn forwarded_headers_are_ignored_by_default() {
    let s = serve_yaml(&url_route(), &[("secret", SECRET)]).await;
    let path = "/callbacks/hooks/url?b=2&a=%20x";
    let forwarded = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "public.example"),
    ];
    let as_received = s.url(path);
    let (st, text) = post_signed_url(&s, path, &as_received, &forwarded).await;
    assert_eq!(st, 200, "signed over the URL as received: {text}");
    let claimed = format!("https://public.example{path}");
    let (st, text) = post_signed_url(&s, path, &claimed, &forwarded).await;
    assert_eq!(st, 401, "signed over the URL the headers claim: {text}");
}

/// Behind a trusted proxy (`server.trust_forwarded_headers: true`) the forwarded scheme and
/// host make `{{url}}`; without the headers it is still `http` and the `Host` header.
#[tokio::test]
async fn forwarded_headers_are_used_when_trusted() {
    let s = serve_yaml_trusting(&url_route(), &[("secret", SECRET)], true).await;
    let path = "/callbacks/hooks/url?b=2&a=%20x";
    let forwarded = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "public.example"),
    ];
    let claimed = format!("https://public.example{path}");
    let (st, text) = post_signed_url(&s, path, &claimed, &forwarded).await;
    assert_eq!(st, 200, "signed over the forwarded URL: {text}");
    let as_received = s.url(path);
    let (st, text) = post_signed_url(&s, path, &as_received, &forwarded).await;
    assert_eq!(st, 401, "signed over the URL as received: {text}");
    let (st, text) = post_signed_url(&s, path, &as_received, &[]).await;
    assert_eq!(st, 200, "no forwarded headers: {text}");
}

#[tokio::test]
async fn raw_query_is_the_query_string_as_received() {
    let yaml = platform_with(
        r#"  - path: /hooks/query
    verify:
      signature: { header: X-Sig }
      steps:
        - { name: sig, kind: digest, alg: hmac-sha256, input: "{{raw_query}}|{{path}}", key: "{{credentials.secret}}" }
      expect: "{{sig}}"
    event_type: { header: X-Event, map: { changed: product.changed } }
"#,
    );
    let s = serve_yaml(&yaml, &[("secret", SECRET)]).await;
    let raw = "z=1&a=%20x+y&a=2";
    let r = s
        .http
        .post(s.url(&format!("/callbacks/hooks/query?{raw}")))
        .header(
            "x-sig",
            hmac_hex(SECRET, format!("{raw}|/callbacks/hooks/query").as_bytes()),
        )
        .header("x-event", "changed")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn bodies_that_are_not_json_reach_verification() {
    let s = serve_yaml(
        &platform_with(&body_route("/hooks/json", "")),
        &[("secret", SECRET)],
    )
    .await;
    let url = s.url("/callbacks/hooks/json");
    // Plain text with a wrong signature: refused by verification, with the route's status.
    let r = s
        .http
        .post(&url)
        .header("x-sig", "00")
        .body("ping")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // An empty GET handshake with a wrong signature: the same.
    let r = s.http.get(&url).header("x-sig", "00").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // An empty GET handshake correctly signed: acknowledged.
    let r = s
        .http
        .get(&url)
        .header("x-sig", hmac_hex(SECRET, b""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn a_text_route_accepts_a_signed_plain_text_body() {
    let yaml = platform_with(&body_route("/hooks/text", "").replace(
        "  - path: /hooks/text\n",
        "  - path: /hooks/text\n    format: text\n",
    ));
    let s = serve_yaml(&yaml, &[("secret", SECRET)]).await;
    let r = s
        .http
        .post(s.url("/callbacks/hooks/text"))
        .header("x-sig", hmac_hex(SECRET, b"hello, plain text"))
        .header("x-event", "changed")
        .body("hello, plain text")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let rows = s.deliveries().await;
    assert_eq!(rows[0]["verified"], true);
}

#[tokio::test]
async fn resends_acknowledged_by_dedupe_are_listed_as_duplicates() {
    let s = serve_yaml(
        &platform_with(&body_route(
            "/hooks/json",
            "    dedupe_key: \"{{headers.[x-id]}}\"\n",
        )),
        &[("secret", SECRET)],
    )
    .await;
    let body = r#"{"n":1}"#;
    for _ in 0..2 {
        let r = s
            .http
            .post(s.url("/callbacks/hooks/json"))
            .header("x-sig", hmac_hex(SECRET, body.as_bytes()))
            .header("x-id", "d-1")
            .header("x-event", "changed")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let rows = s.deliveries().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let first = rows[1]["id"].as_i64().unwrap();
    assert_eq!(rows[0]["duplicate_of"], json!(first), "{rows:?}");
    assert_eq!(rows[0]["verified"], true);
    assert_eq!(rows[1]["duplicate_of"], Value::Null);
}

/// The Standard Webhooks example of docs/recipes.md (the same file as the vector): a sender's
/// own retry carries the same `webhook-id` with a new timestamp and a new signature; it is
/// acknowledged, makes no second event, and shows as a duplicate.
#[tokio::test]
async fn standard_webhooks_retries_are_acknowledged() {
    let text =
        std::fs::read_to_string(root().join("tests/vectors/standard-webhooks.yaml")).unwrap();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let s = serve_yaml(&text, &[("secret", secret)]).await;
    let creds: serde_json::Map<String, Value> = [("secret".to_string(), json!(secret))]
        .into_iter()
        .collect();
    let t0 = OffsetDateTime::now_utc() - time::Duration::seconds(30);
    let send = |at: OffsetDateTime| {
        let built = entrepot::engine::build::build(
            &s.plan,
            &s.plan.operations["product.get"],
            &entrepot::engine::build::BuildInput {
                input: &json!({"type": "product.updated", "id": "p-1"}),
                credentials: &creds,
                now: at,
                nonce: Some("msg_retry_1".into()),
                token: None,
            },
        )
        .unwrap();
        let mut r = s
            .http
            .post(s.url("/callbacks/vector-stdwh/webhook"))
            .body(built.body.clone());
        for (k, v) in &built.headers {
            r = r.header(k.as_str(), v.as_str());
        }
        r.header("content-type", "application/json").send()
    };
    assert_eq!(send(t0).await.unwrap().status().as_u16(), 200);
    // The sender's retry, 20 seconds later: same id, new timestamp, new signature.
    let retry = send(t0 + time::Duration::seconds(20)).await.unwrap();
    assert_eq!(
        retry.status().as_u16(),
        200,
        "{}",
        retry.text().await.unwrap()
    );
    let rows = s.deliveries().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["duplicate_of"], rows[1]["id"], "{rows:?}");
}

/// The documented example is the vector file's callback, verbatim.
#[test]
fn the_documented_standard_webhooks_example_is_the_vector_file() {
    let doc = std::fs::read_to_string(root().join("docs/recipes.md")).unwrap();
    let vector =
        std::fs::read_to_string(root().join("tests/vectors/standard-webhooks.yaml")).unwrap();
    let callbacks = vector.split_once("callbacks:\n").unwrap().1;
    let verify_to_dedupe: String = callbacks
        .lines()
        .filter(|l| !l.contains("event_type"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        doc.contains(&verify_to_dedupe),
        "docs/recipes.md section 6.2 must show:\n{verify_to_dedupe}"
    );
}

/// An outbound request with a declared `Content-Type` carries exactly that one, and signing
/// recipes see the final content type (the declared one, or the default one).
#[test]
fn a_declared_content_type_replaces_the_default() {
    let yaml = |headers: &str| {
        format!(
            r#"platform: ctype
credentials: [secret]
request:
  url: "http://127.0.0.1:9/x"
  json: {{ a: "{{{{input.spu_id}}}}" }}
{headers}  sign:
    steps:
      - {{ name: sig, kind: digest, alg: hmac-sha256, input: "{{{{headers.[content-type]}}}}|{{{{body}}}}", key: "{{{{credentials.secret}}}}" }}
    place:
      - {{ to: header, name: X-Sig, value: "{{{{sig}}}}" }}
operations:
  product.get: {{}}
"#
        )
    };
    let creds: serde_json::Map<String, Value> = [("secret".to_string(), json!(SECRET))]
        .into_iter()
        .collect();
    for (headers, expected) in [
        (
            "  headers:\n    Content-Type: application/vnd.acme+json\n",
            "application/vnd.acme+json",
        ),
        ("", "application/json"),
    ] {
        let doc = entrepot::config::source::parse(Path::new("ctype.yaml"), yaml(headers)).unwrap();
        let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
        assert!(
            compiled.diagnostics.is_empty(),
            "{:?}",
            compiled.diagnostics
        );
        let p = compiled.plan.platforms["ctype"].clone();
        let built = entrepot::engine::build::build(
            &p,
            &p.operations["product.get"],
            &entrepot::engine::build::BuildInput {
                input: &json!({"spu_id": "x"}),
                credentials: &creds,
                now: OffsetDateTime::now_utc(),
                nonce: None,
                token: None,
            },
        )
        .unwrap();
        // What goes on the wire: the headers, plus `content_type` (engine/mod.rs).
        let on_wire: Vec<&str> = built
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.as_str())
            .chain(built.content_type.as_deref())
            .collect();
        assert_eq!(on_wire, vec![expected], "{built:?}");
        let sig = built
            .headers
            .iter()
            .find(|(k, _)| k == "X-Sig")
            .map(|(_, v)| v.clone())
            .unwrap();
        let signed = format!("{expected}|{}", String::from_utf8_lossy(&built.body));
        assert_eq!(sig, hmac_hex(SECRET, signed.as_bytes()));
    }
}
