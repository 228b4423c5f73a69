//! A platform without callbacks: its messages are fetched and go through the callback pipeline.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use entrepot::compile::gateway::TargetSettings;
use entrepot::credentials::CredentialSets;
use entrepot::engine::Engine;
use serde_json::{Value, json};

use crate::support::root;

#[tokio::test]
async fn polled_messages_become_events_once() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let f = fetches.clone();
    let app = axum::Router::new().route(
        "/messages",
        post(move |headers: HeaderMap| {
            let f = f.clone();
            async move {
                if headers.get("authorization").and_then(|v| v.to_str().ok())
                    != Some("Bearer poll-token")
                {
                    return (
                        StatusCode::UNAUTHORIZED,
                        Json(json!({"code": 401, "message": "who are you"})),
                    );
                }
                f.fetch_add(1, Ordering::SeqCst);
                // The platform keeps returning the same messages until they age out.
                (
                    StatusCode::OK,
                    Json(json!({"code": 0, "data": [
                        {"id": "m-1", "type": "stock", "sku": "A1", "qty": 4},
                        {"id": "m-2", "type": "stock", "sku": "A2", "qty": 0},
                        {"id": "m-3", "type": "price", "sku": "A1"}
                    ]})),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let text = std::fs::read_to_string(root().join("tests/platforms/polling.yaml")).unwrap();
    let doc = entrepot::config::source::parse(Path::new("polling.yaml"), text).unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &move |n| {
        (n == "POLLING_DEMO_URL").then(|| url.clone())
    });
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );
    let p = compiled.plan.platforms["polling_demo"].clone();
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let mut creds = CredentialSets::new();
    creds.insert(
        "polling_demo".into(),
        [("token".to_string(), json!("poll-token"))]
            .into_iter()
            .collect(),
    );
    let engine = Engine::new(store.clone(), creds, |_| None);
    let targets = vec![TargetSettings {
        name: "center".into(),
        url: "http://127.0.0.1:9/unused".into(),
        events: vec!["inventory.changed".into()],
        headers: vec![],
        max_attempts: 3,
        credentials: vec![],
        sign: None,
        concurrency: 1,
    }];
    let woken = Arc::new(AtomicUsize::new(0));
    let w = woken.clone();
    let notify = move || {
        w.fetch_add(1, Ordering::SeqCst);
    };
    let poller = &p.pollers[0];
    for _ in 0..3 {
        assert_eq!(
            entrepot::poller::poll_once(&p, poller, &engine, &targets, &notify)
                .await
                .unwrap(),
            3
        );
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 3);
    // Three fetches of the same two stock messages: two events.
    let events = store
        .outbox_claim("test", i64::MAX / 2, 1000, 100)
        .await
        .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        woken.load(Ordering::SeqCst),
        2,
        "the dispatcher is woken per stored message, not for repeats"
    );
    let payload: Value = serde_json::from_str(&events[0].payload).unwrap();
    let sku = store
        .to_internal("polling_demo", "sku", &["A1".into()])
        .await
        .unwrap()["A1"]
        .clone();
    assert_eq!(
        payload["data"],
        json!({"items": [{"sku_id": sku, "available": 4}]})
    );
    // The message of an unknown type is kept with its reason.
    let rows = store.inbox_recent(Some("polling_demo"), 10).await.unwrap();
    assert!(rows.iter().any(
        |r| r.rejection.as_deref() == Some("unknown event type 'price'")
            && r.route == "poll:messages"
    ));
}

/// A polled message's `occurred_at` can be its own time, as for callbacks.
#[tokio::test]
async fn a_polled_message_can_carry_its_event_time() {
    let app = axum::Router::new().route(
        "/messages",
        post(|| async {
            Json(json!({"code": 0, "data": [
                {"id": "t-1", "type": "stock", "at": "2024-03-01T08:30:00+08:00"},
                {"id": "t-2", "type": "stock"}
            ]}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let yaml = format!(
        "platform: timed_poll\nrequest:\n  url: \"{url}/messages\"\nresponse:\n  success: {{ path: $.code, equals: 0 }}\npollers:\n  - name: m\n    every: 30s\n    items: $.data[*]\n    event_type: {{ path: $.type, map: {{ stock: inventory.changed }} }}\n    dedupe_key: \"{{{{body.id}}}}\"\n    occurred_at: {{ path: $.at }}\n"
    );
    let doc = entrepot::config::source::parse(Path::new("timed.yaml"), yaml).unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
    assert!(
        compiled.diagnostics.is_empty(),
        "{}",
        crate::support::render(&compiled.diagnostics)
    );
    let p = compiled.plan.platforms["timed_poll"].clone();
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let engine = Engine::new(store.clone(), CredentialSets::new(), |_| None);
    let targets = vec![TargetSettings {
        name: "center".into(),
        url: "http://127.0.0.1:9/unused".into(),
        events: vec!["inventory.changed".into()],
        headers: vec![],
        max_attempts: 3,
        credentials: vec![],
        sign: None,
        concurrency: 1,
    }];
    entrepot::poller::poll_once(&p, &p.pollers[0], &engine, &targets, &|| {})
        .await
        .unwrap();
    let events = store
        .outbox_claim("test", i64::MAX / 2, 1000, 100)
        .await
        .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    let payloads: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.payload).unwrap())
        .collect();
    // 08:30 at +08:00 is 00:30 UTC.
    let timed = payloads
        .iter()
        .find(|p| p["occurred_at"] == "2024-03-01T00:30:00Z");
    assert!(timed.is_some(), "{payloads:?}");
    // Without a time, the receive time.
    assert!(
        payloads
            .iter()
            .any(|p| p["occurred_at"] == p["received_at"]),
        "{payloads:?}"
    );
}
