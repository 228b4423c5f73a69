//! Callbacks answer what senders require (issue 11): acknowledgements are templates over the
//! delivery and can differ per event type; a URL-verification handshake is answered with its
//! challenge, after verification, without a dedupe key and without being stored; deliveries
//! of an unknown type are acknowledged and kept; an event's `occurred_at` can be the
//! platform's own event time. Every platform here is written in the test.

use std::path::Path;
use std::sync::Arc;

use entrepot::callbacks::{Inbound, receive};
use entrepot::credentials::CredentialSets;
use entrepot::engine::Engine;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::callback_semantics::{SECRET, Served, hmac_hex, platform_with, serve_yaml};

/// A signed route whose event type is `$.event.type`, with a Slack-style handshake, a
/// templated acknowledgement and one for `gone` deliveries only.
fn events_route(path: &str, handshake_ack: &str) -> String {
    format!(
        r#"  - path: {path}
    verify:
      signature: {{ header: X-Sig }}
      steps:
        - {{ name: sig, kind: digest, alg: hmac-sha256, input: "{{{{body}}}}", key: "{{{{credentials.secret}}}}" }}
      expect: "{{{{sig}}}}"
      reject_status: 403
    event_type: {{ path: $.event.type, map: {{ changed: product.changed, gone: product.offline }} }}
    dedupe_key: "{{{{body.event_id}}}}"
    handshake:
      path: $.type
      equals: url_verification
      ack: {handshake_ack}
    ack: {{ body: '{{"ok":true,"event":{{{{json body.event_id}}}}}}' }}
    acks:
      gone: {{ status: 202, content_type: text/plain, body: "gone {{{{body.event.id}}}}" }}
"#
    )
}

async fn post(s: &Served, path: &str, body: &str, sig: Option<String>) -> (u16, String, String) {
    let r = s
        .http
        .post(s.url(path))
        .header(
            "x-sig",
            sig.unwrap_or_else(|| hmac_hex(SECRET, body.as_bytes())),
        )
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ct, r.text().await.unwrap())
}

#[tokio::test]
async fn a_url_verification_handshake_is_answered_with_its_challenge() {
    let yaml = platform_with(&events_route(
        "/hooks/events",
        "{ content_type: text/plain, body: \"{{body.challenge}}\" }",
    ));
    let s = serve_yaml(&yaml, &[("secret", SECRET)]).await;
    // Slack's URL verification: no event id, so no dedupe key.
    let hello = r#"{"token":"t0","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let (status, ct, body) = post(&s, "/callbacks/hooks/events", hello, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ct, "text/plain");
    assert_eq!(body, "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P");
    // Verified first: a forged handshake gets the route's refusal, not the challenge.
    let (status, _, body) = post(&s, "/callbacks/hooks/events", hello, Some("00".repeat(32))).await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("3eZbrw"), "{body}");
    // The answered handshake is not stored as a delivery or an event; the forged one is
    // recorded as refused.
    let rows = s.deliveries().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["verified"], false);
}

#[tokio::test]
async fn a_handshake_can_echo_its_challenge_as_json() {
    let yaml = platform_with(&events_route(
        "/hooks/events",
        r#"{ body: '{"challenge":{{json body.challenge}}}' }"#,
    ));
    let s = serve_yaml(&yaml, &[("secret", SECRET)]).await;
    // A quote in the challenge cannot break the JSON answer.
    let hello = r#"{"type":"url_verification","challenge":"a\"b"}"#;
    let (status, ct, body) = post(&s, "/callbacks/hooks/events", hello, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ct, "application/json");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer, json!({"challenge": "a\"b"}));
}

#[tokio::test]
async fn acknowledgements_are_templates_chosen_per_event_type() {
    let yaml = platform_with(&events_route(
        "/hooks/events",
        "{ body: \"{{body.challenge}}\" }",
    ));
    let s = serve_yaml(&yaml, &[("secret", SECRET)]).await;
    let changed = r#"{"event_id":"e-1","event":{"type":"changed","id":"p1"}}"#;
    let (status, ct, body) = post(&s, "/callbacks/hooks/events", changed, None).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"), "{body}");
    assert_eq!(body, r#"{"ok":true,"event":"e-1"}"#);
    let gone = r#"{"event_id":"e-2","event":{"type":"gone","id":"p9"}}"#;
    let (status, ct, body) = post(&s, "/callbacks/hooks/events", gone, None).await;
    assert_eq!((status, ct.as_str()), (202, "text/plain"), "{body}");
    assert_eq!(body, "gone p9");
    // A resend of a stored delivery gets the same acknowledgement.
    let (status, _, body) = post(&s, "/callbacks/hooks/events", gone, None).await;
    assert_eq!((status, body.as_str()), (202, "gone p9"));
}

#[tokio::test]
async fn deliveries_of_an_unknown_type_are_acknowledged_and_kept() {
    let yaml = platform_with(&events_route(
        "/hooks/events",
        "{ body: \"{{body.challenge}}\" }",
    ));
    let s = serve_yaml(&yaml, &[("secret", SECRET)]).await;
    let mystery = r#"{"event_id":"e-3","event":{"type":"mystery"}}"#;
    let (status, _, body) = post(&s, "/callbacks/hooks/events", mystery, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"{"ok":true,"event":"e-3"}"#);
    let rows = s.deliveries().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["verified"], true);
    assert_eq!(rows[0]["dedupe_key"], "e-3");
    assert_eq!(rows[0]["event_type"], Value::Null);
    assert_eq!(rows[0]["rejection"], "unknown event type 'mystery'");
    assert_eq!(rows[0]["body_stored_bytes"], json!(mystery.len()));
}

#[test]
fn a_handshake_without_a_value_to_match_is_a_load_error() {
    let yaml = platform_with(&events_route("/hooks/events", "{ body: x }")).replace(
        "      path: $.type\n      equals: url_verification\n",
        "      equals: url_verification\n",
    );
    let doc = entrepot::config::source::parse(Path::new("hooks.yaml"), yaml).unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
    let text = crate::support::render(&compiled.diagnostics);
    assert!(
        text.contains("error[E_CONFLICT]: callbacks[0].handshake"),
        "{text}"
    );
}

/// Receives one delivery of `yaml`'s only route with a target subscribed to every event, and
/// returns the event the target would get.
async fn event_of(yaml: &str, body: &str, now: OffsetDateTime) -> Value {
    let doc = entrepot::config::source::parse(Path::new("hooks.yaml"), yaml.to_string()).unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
    assert!(
        compiled.diagnostics.is_empty(),
        "{}",
        crate::support::render(&compiled.diagnostics)
    );
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let engine = Engine::new(store.clone(), CredentialSets::new(), |_| None);
    let gateway = "targets:\n  center:\n    url: http://127.0.0.1:9/events\n    events: [product.changed, product.offline]\n";
    let gdoc = entrepot::config::source::parse(Path::new("entrepot.yaml"), gateway.into()).unwrap();
    let targets = entrepot::compile::gateway::compile_gateway(gdoc, Path::new("."), &|_| None)
        .unwrap()
        .targets;
    let route = compiled.plan.platforms["hooks"].callbacks[0].path.clone();
    let inbound = Inbound {
        method: "POST".into(),
        route,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
        ..Inbound::default()
    };
    let reply = receive(&compiled.plan, &engine, &targets, inbound, now, &|| {}).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let now_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap();
    let rows = store
        .outbox_claim("test", now_ms, 60_000, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let _keep = Arc::new(dir);
    serde_json::from_str(&rows[0].payload).unwrap()
}

fn timed_route(occurred_at: &str) -> String {
    platform_with(&format!(
        r#"  - path: /hooks/timed
    event_type: {{ path: $.kind, map: {{ changed: product.changed }} }}
    dedupe_key: "{{{{body.id}}}}"
{occurred_at}"#
    ))
}

#[tokio::test]
async fn occurred_at_is_the_platforms_event_time_when_mapped() {
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    // Default: the receive time (1800000000 is 2027-01-15T08:00:00Z).
    let e = event_of(&timed_route(""), r#"{"id":"a","kind":"changed"}"#, now).await;
    assert_eq!(e["occurred_at"], "2027-01-15T08:00:00Z");
    assert_eq!(e["received_at"], "2027-01-15T08:00:00Z");
    // Unix milliseconds in the body: 1700000000123 ms is 2023-11-14T22:13:20.123Z.
    let yaml = timed_route("    occurred_at: { path: $.ts }\n");
    let e = event_of(
        &yaml,
        r#"{"id":"b","kind":"changed","ts":1700000000123}"#,
        now,
    )
    .await;
    assert_eq!(e["occurred_at"], "2023-11-14T22:13:20.123Z");
    assert_eq!(e["received_at"], "2027-01-15T08:00:00Z");
    // A platform's own pattern and zone: 2024-03-01 08:30:00 at +08:00 is 00:30 UTC.
    let yaml = timed_route(
        "    occurred_at: { path: $.at, format: \"yyyy-MM-dd HH:mm:ss\", offset: \"+08:00\" }\n",
    );
    let e = event_of(
        &yaml,
        r#"{"id":"c","kind":"changed","at":"2024-03-01 08:30:00"}"#,
        now,
    )
    .await;
    assert_eq!(e["occurred_at"], "2024-03-01T00:30:00Z");
    // A delivery without the time falls back to the receive time.
    let e = event_of(&yaml, r#"{"id":"d","kind":"changed"}"#, now).await;
    assert_eq!(e["occurred_at"], "2027-01-15T08:00:00Z");
}

#[tokio::test]
async fn an_unreadable_event_time_refuses_the_delivery() {
    let yaml = timed_route("    occurred_at: { path: $.ts }\n");
    let doc = entrepot::config::source::parse(Path::new("hooks.yaml"), yaml).unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
    assert!(compiled.diagnostics.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let engine = Engine::new(store.clone(), CredentialSets::new(), |_| None);
    let inbound = Inbound {
        method: "POST".into(),
        route: "/hooks/timed".into(),
        body: br#"{"id":"e","kind":"changed","ts":"yesterday"}"#.to_vec(),
        ..Inbound::default()
    };
    let reply = receive(
        &compiled.plan,
        &engine,
        &[],
        inbound,
        OffsetDateTime::UNIX_EPOCH,
        &|| {},
    )
    .await;
    assert_eq!(reply.status, 400);
    let text = String::from_utf8_lossy(&reply.body);
    assert!(text.contains("occurred_at"), "{text}");
}

#[tokio::test]
async fn an_acknowledgement_status_can_be_a_template() {
    let route = r#"  - path: /hooks/status
    event_type: { path: $.kind, map: { changed: product.changed } }
    dedupe_key: "{{body.id}}"
    ack: { status: "{{#if body.later}}202{{else}}200{{/if}}", body: "{{body.id}}" }
  - path: /hooks/bad-status
    event_type: { path: $.kind, map: { changed: product.changed } }
    dedupe_key: "{{body.id}}"
    ack: { status: "{{body.code}}" }
"#;
    let s = serve_yaml(&platform_with(route), &[("secret", SECRET)]).await;
    let (status, _, body) = post(
        &s,
        "/callbacks/hooks/status",
        r#"{"id":"n","kind":"changed"}"#,
        None,
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "n"));
    let (status, _, body) = post(
        &s,
        "/callbacks/hooks/status",
        r#"{"id":"l","kind":"changed","later":true}"#,
        None,
    )
    .await;
    assert_eq!((status, body.as_str()), (202, "l"));
    // A status that renders as no HTTP status refuses the delivery, which is not stored as
    // accepted: the sender will send it again.
    let (status, _, body) = post(
        &s,
        "/callbacks/hooks/bad-status",
        r#"{"id":"b","kind":"changed","code":"fine"}"#,
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not an HTTP status"), "{body}");
    let rows = s.deliveries().await;
    assert_eq!(rows[0]["verified"], false, "{rows:?}");
}

#[test]
fn a_literal_acknowledgement_status_is_checked_when_the_file_loads() {
    for status in ["99", "\"600\"", "\"abc\""] {
        let route = format!(
            "  - path: /hooks/s\n    event_type: {{ path: $.kind, map: {{ changed: product.changed }} }}\n    ack: {{ status: {status} }}\n"
        );
        let doc = entrepot::config::source::parse(Path::new("hooks.yaml"), platform_with(&route))
            .unwrap();
        let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
        let text = crate::support::render(&compiled.diagnostics);
        assert!(
            text.contains("error[E_INVALID_VALUE]: callbacks[0].ack.status"),
            "{status}: {text}"
        );
    }
}

/// A delivery whose own values a recipe's helper cannot read (a token part that is not
/// base64url) is refused as not genuine, not answered "try again later" as if the gateway's
/// setup had failed.
#[tokio::test]
async fn a_value_a_verification_helper_cannot_read_is_a_refusal() {
    let route = r#"  - path: /hooks/token
    verify:
      signature: { header: X-Token, split: "." }
      steps:
        - { name: claims, kind: template, template: "{{base64url_decode signature.parts.[0]}}" }
        - { name: sig, kind: digest, alg: hmac-sha256, input: "{{claims}}", key: "{{credentials.secret}}", encode: base64url }
      expect: "{{sig}}"
      reject_status: 403
    event_type: { header: X-Event, map: { changed: product.changed } }
"#;
    let s = serve_yaml(&platform_with(route), &[("secret", SECRET)]).await;
    let r = s
        .http
        .post(s.url("/callbacks/hooks/token"))
        .header("x-token", "*not base64*.c2ln")
        .header("x-event", "changed")
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("base64url"), "{body}");
    let rows = s.deliveries().await;
    assert_eq!(rows[0]["verified"], false, "{rows:?}");
}
