//! Callbacks end to end: signed deliveries from the sample platform (signed with the
//! simulator's own, separately written signing code) become canonical events delivered to a
//! test internal target; duplicates, forgeries and stale deliveries produce none.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use entrepot::compile::gateway::TargetSettings;
use entrepot::credentials::CredentialSets;
use entrepot::dispatch::{DispatchOptions, Dispatcher};
use entrepot::engine::Engine;
use entrepot::server::AppState;
use entrepot::store::Store;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::support::root;

const KEY: &str = "callback-app-key";
const SECRET: &str = "callback-app-secret";
const ADMIN: &str = "admin-token-for-tests";

/// The test's internal target: records deliveries; answers 503 while `failing` is above zero.
#[derive(Clone)]
struct Target {
    seen: mpsc::UnboundedSender<(String, Value)>,
    failing: Arc<AtomicUsize>,
}

const TARGET_SECRET: &str = "secret-of-the-product-center";

async fn receive(State(t): State<Target>, headers: HeaderMap, body: String) -> StatusCode {
    // The internal target requires a signature: HMAC-SHA256 of the body, as it documents.
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(TARGET_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    if headers.get("x-signature").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return StatusCode::UNAUTHORIZED;
    }
    if t.failing.load(Ordering::SeqCst) > 0 {
        t.failing.fetch_sub(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let _ = t
        .seen
        .send((key, serde_json::from_str(&body).unwrap_or(Value::Null)));
    StatusCode::OK
}

struct Harness {
    url: String,
    http: reqwest::Client,
    events: mpsc::UnboundedReceiver<(String, Value)>,
    failing: Arc<AtomicUsize>,
    store: Store,
    dispatcher: Arc<Dispatcher>,
    _dir: tempfile::TempDir,
}

/// With `background`, a dispatcher runs on its own; otherwise the test drives it with `tick`.
async fn start(max_attempts: u32, background: bool) -> Harness {
    let (tx, events) = mpsc::unbounded_channel();
    let failing = Arc::new(AtomicUsize::new(0));
    let target = Target {
        seen: tx,
        failing: failing.clone(),
    };
    let app = axum::Router::new()
        .route("/events", post(receive))
        .with_state(target);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let text = std::fs::read_to_string(root().join("platforms/yanxuan.yaml")).unwrap();
    let doc = entrepot::config::source::parse(Path::new("platforms/yanxuan.yaml"), text).unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let mut creds = CredentialSets::new();
    creds.insert(
        "yanxuan".into(),
        [
            ("app_key".to_string(), json!(KEY)),
            ("app_secret".to_string(), json!(SECRET)),
        ]
        .into_iter()
        .collect(),
    );
    let engine = Arc::new(Engine::new(store.clone(), creds, |_| None));
    let gateway = format!(
        "targets:\n  center:\n    url: {target_url}\n    events: [inventory.changed, order.shipped]\n    max_attempts: {max_attempts}\n    credentials: [hook_secret]\n    sign:\n      steps:\n        - {{ name: sig, kind: digest, alg: hmac-sha256, input: \"{{{{body}}}}\", key: \"{{{{credentials.hook_secret}}}}\" }}\n      place:\n        - {{ to: header, name: X-Signature, value: \"sha256={{{{sig}}}}\" }}\n"
    );
    let gdoc = entrepot::config::source::parse(Path::new("entrepot.yaml"), gateway).unwrap();
    let targets: Vec<TargetSettings> =
        entrepot::compile::gateway::compile_gateway(gdoc, Path::new("."), &|_| None)
            .unwrap()
            .targets;
    let mut target_creds = CredentialSets::new();
    target_creds.insert(
        "center".into(),
        [("hook_secret".to_string(), json!(TARGET_SECRET))]
            .into_iter()
            .collect(),
    );
    let wait = if background {
        Duration::from_millis(5)
    } else {
        Duration::ZERO
    };
    let options = DispatchOptions {
        backoff: wait,
        backoff_max: wait * 4,
        poll: Duration::from_millis(20),
        ..Default::default()
    };
    let dispatcher = Arc::new(Dispatcher::new(
        store.clone(),
        &targets,
        options,
        target_creds,
        |_| None,
    ));
    let state = AppState {
        plan: Arc::new(ArcSwap::from_pointee(compiled.plan)),
        store: Some(store.clone()),
        engine: Some(engine),
        targets: Arc::new(targets),
        admin_token: Some(entrepot::config::Secret::new(ADMIN)),
        notify: Some(dispatcher.notify.clone()),
        reloader: None,
        trust_forwarded_headers: false,
        orders: None,
        sync: None,
        metrics: Default::default(),
        monitor: None,
    };
    if background {
        tokio::spawn(dispatcher.clone().run(std::future::pending()));
    }
    let addr = crate::support::serve_on_loopback(state).await;
    Harness {
        url: format!("http://{addr}"),
        http: reqwest::Client::new(),
        events,
        failing,
        store,
        dispatcher,
        _dir: dir,
    }
}

fn inventory_notice(
    notify_id: &str,
    sku: &str,
    n: &str,
    at: OffsetDateTime,
    secret: &str,
) -> String {
    channel_sim::signed_form(
        KEY,
        secret,
        "yanxuan.notification.inventory.count.changed",
        at,
        &[("notifyId", notify_id), ("skuId", sku), ("inventory", n)],
    )
}

impl Harness {
    async fn deliver(&self, body: String) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}/callbacks/yanxuan/notify", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn next_event(&mut self) -> (String, Value) {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("an event within 10s")
            .unwrap()
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn genuine_callbacks_become_one_event_each() {
    let mut h = start(5, true).await;
    let now = OffsetDateTime::now_utc();
    let (status, body) = h
        .deliver(inventory_notice("n-1", "100101", "7", now, SECRET))
        .await;
    assert_eq!((status, body.as_str()), (200, r#"{"code":"200"}"#));
    let (key, event) = h.next_event().await;
    assert_eq!(key, "yanxuan:n-1:inventory.changed");
    assert_eq!(event["type"], "inventory.changed");
    assert_eq!(event["platform"], "yanxuan");
    let sku = h
        .store
        .to_internal("yanxuan", "sku", &["100101".into()])
        .await
        .unwrap()["100101"]
        .clone();
    assert_eq!(
        event["data"],
        json!({"items": [{"sku_id": sku, "available": 7}]})
    );

    // The platform sends the same notification again (four more times): acknowledged, no event.
    let url = format!("{}/callbacks/yanxuan/notify", h.url);
    let method = "yanxuan.notification.inventory.count.changed";
    for _ in 0..4 {
        let fields = [("notifyId", "n-1"), ("skuId", "100101"), ("inventory", "7")];
        let (status, body) = channel_sim::send_notification(
            &url,
            KEY,
            SECRET,
            method,
            &fields,
            channel_sim::Spoil::None,
        )
        .await
        .unwrap();
        assert_eq!((status, body.as_str()), (200, r#"{"code":"200"}"#));
    }
    h.deliver(inventory_notice("n-2", "100101", "6", now, SECRET))
        .await;
    let (key, _) = h.next_event().await;
    assert_eq!(
        key, "yanxuan:n-2:inventory.changed",
        "the duplicates made no event"
    );

    // Forged and stale deliveries, sent by the simulator as a faulty platform would, are
    // refused, recorded, and make no event.
    let fields = [("notifyId", "n-3"), ("skuId", "100101"), ("inventory", "0")];
    let (status, _) = channel_sim::send_notification(
        &url,
        KEY,
        SECRET,
        method,
        &fields,
        channel_sim::Spoil::BadSignature,
    )
    .await
    .unwrap();
    assert_eq!(status, 401);
    let fields = [("notifyId", "n-4"), ("skuId", "100101"), ("inventory", "0")];
    let (status, body) = channel_sim::send_notification(
        &url,
        KEY,
        SECRET,
        method,
        &fields,
        channel_sim::Spoil::Stale,
    )
    .await
    .unwrap();
    assert_eq!(status, 401);
    assert!(body.contains("timestamp"), "{body}");
    let (status, _) = h.deliver("appKey=x&method=y".into()).await;
    assert_eq!(status, 401);

    // An unknown event type is acknowledged and kept, not dropped.
    let odd = channel_sim::signed_form(
        KEY,
        SECRET,
        "yanxuan.notification.brand.new",
        now,
        &[("notifyId", "n-5")],
    );
    assert_eq!(h.deliver(odd).await.0, 200);

    h.deliver(inventory_notice("n-6", "100102", "1", now, SECRET))
        .await;
    let (key, _) = h.next_event().await;
    assert_eq!(
        key, "yanxuan:n-6:inventory.changed",
        "nothing was delivered for the refused ones"
    );

    // The admin API lists it all, and only with the token.
    assert_eq!(
        h.admin(reqwest::Method::GET, "/admin/v1/deliveries", None)
            .await
            .0,
        401
    );
    assert_eq!(
        h.admin(reqwest::Method::GET, "/admin/v1/deliveries", Some("wrong"))
            .await
            .0,
        401
    );
    let (status, list) = h
        .admin(
            reqwest::Method::GET,
            "/admin/v1/deliveries?platform=yanxuan",
            Some(ADMIN),
        )
        .await;
    assert_eq!(status, 200);
    let rows = list["deliveries"].as_array().unwrap();
    let rejected: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["rejection"].as_str())
        .collect();
    assert!(
        rejected
            .iter()
            .any(|r| r.contains("signature does not match")),
        "{rejected:?}"
    );
    assert!(
        rejected.iter().any(|r| r.contains("timestamp")),
        "{rejected:?}"
    );
    assert!(
        rejected
            .iter()
            .any(|r| r.contains("unknown event type 'yanxuan.notification.brand.new'")),
        "{rejected:?}"
    );
    let verified = |duplicates: bool| {
        rows.iter()
            .filter(|r| r["verified"] == true && r["event_type"] == "inventory.changed")
            .filter(|r| r["duplicate_of"].is_null() != duplicates)
            .count()
    };
    assert_eq!(verified(false), 3);
    // The four resends of n-1 are listed as its duplicates.
    assert_eq!(verified(true), 4);
}

#[tokio::test]
async fn events_wait_for_a_target_that_is_down() {
    let mut h = start(20, true).await;
    h.failing.store(3, Ordering::SeqCst);
    let now = OffsetDateTime::now_utc();
    for i in 0..3 {
        assert_eq!(
            h.deliver(inventory_notice(
                &format!("down-{i}"),
                "100101",
                "5",
                now,
                SECRET
            ))
            .await
            .0,
            200
        );
    }
    let mut keys = Vec::new();
    for _ in 0..3 {
        keys.push(h.next_event().await.0);
    }
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "yanxuan:down-0:inventory.changed",
            "yanxuan:down-1:inventory.changed",
            "yanxuan:down-2:inventory.changed"
        ]
    );
    assert_eq!(
        h.failing.load(Ordering::SeqCst),
        0,
        "the target refused three attempts first"
    );
}

#[tokio::test]
async fn dead_letters_can_be_replayed() {
    let mut h = start(2, false).await;
    h.failing.store(2, Ordering::SeqCst);
    let now = OffsetDateTime::now_utc();
    assert_eq!(
        h.deliver(inventory_notice("dl-1", "100101", "5", now, SECRET))
            .await
            .0,
        200
    );
    // Two attempts, both refused (no backoff in this harness): dead-lettered.
    assert_eq!(h.dispatcher.tick().await, 1);
    assert_eq!(h.dispatcher.tick().await, 1);
    assert_eq!(h.dispatcher.tick().await, 0, "a dead letter is not retried");
    let dead = h.store.dead_letters(10).await.unwrap();
    assert_eq!(dead[0].attempts, 2);
    let (status, list) = h
        .admin(reqwest::Method::GET, "/admin/v1/dead-letters", Some(ADMIN))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        list["dead_letters"][0]["last_error"],
        "target 'center' answered HTTP 503"
    );
    let (status, replayed) = h
        .admin(
            reqwest::Method::POST,
            "/admin/v1/dead-letters/replay",
            Some(ADMIN),
        )
        .await;
    assert_eq!((status, replayed["replayed"].as_u64()), (200, Some(1)));
    assert_eq!(h.dispatcher.tick().await, 1);
    let (key, _) = h.next_event().await;
    assert_eq!(key, "yanxuan:dl-1:inventory.changed");
}

/// A delivery replayed by an attacker (same id, same valid signature) is refused by the
/// durable replay guard.
#[tokio::test]
async fn replayed_deliveries_are_refused() {
    // The replay guard alone: without the file's dedupe key, which would acknowledge a resend
    // of a stored delivery as a duplicate before the guard is consulted.
    let text = std::fs::read_to_string(root().join("tests/vectors/standard-webhooks.yaml"))
        .unwrap()
        .replace("    dedupe_key: \"{{headers.[webhook-id]}}\"\n", "");
    assert!(!text.contains("dedupe_key"));
    let doc = entrepot::config::source::parse(Path::new("standard-webhooks.yaml"), text).unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );
    let p = compiled.plan.platforms["vector_stdwh"].clone();
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut creds = CredentialSets::new();
    creds.insert(
        "vector_stdwh".into(),
        [("secret".to_string(), json!(secret))]
            .into_iter()
            .collect(),
    );
    let engine = Arc::new(Engine::new(store.clone(), creds.clone(), |_| None));
    let state = AppState {
        plan: Arc::new(ArcSwap::from_pointee(compiled.plan)),
        store: Some(store.clone()),
        engine: Some(engine),
        ..Default::default()
    };
    let addr = crate::support::serve_on_loopback(state).await;

    // The sender side: the same platform file's signing recipe makes a genuine delivery.
    let built = entrepot::engine::build::build(
        &p,
        &p.operations["product.get"],
        &entrepot::engine::build::BuildInput {
            input: &json!({"type": "product.updated", "id": "p-1"}),
            credentials: &creds["vector_stdwh"],
            now: OffsetDateTime::now_utc(),
            nonce: Some("msg_replay_1".into()),
            token: None,
        },
    )
    .unwrap();
    let http = reqwest::Client::new();
    let send = || {
        let mut r = http
            .post(format!("http://{addr}/callbacks/vector-stdwh/webhook"))
            .body(built.body.clone());
        for (k, v) in &built.headers {
            r = r.header(k.as_str(), v.as_str());
        }
        r.header("content-type", "application/json").send()
    };
    assert_eq!(send().await.unwrap().status().as_u16(), 200);
    let again = send().await.unwrap();
    assert_eq!(again.status().as_u16(), 401);
    assert!(again.text().await.unwrap().contains("already received"));
    let rows = store.inbox_recent(Some("vector_stdwh"), 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows[0]
            .rejection
            .as_deref()
            .unwrap()
            .contains("already received"),
        "{rows:?}"
    );
    assert!(rows[1].verified);
}
