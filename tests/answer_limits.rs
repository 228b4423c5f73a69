//! A platform's answer is read no further than `transport.max_answer`: a platform answering
//! garbage (a huge body, or one that never ends) costs bounded memory and ends in a 502 naming
//! the limit. Against a hand-written platform on 127.0.0.1:0.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use entrepot::credentials::CredentialSets;
use entrepot::engine::problem::Problem;
use entrepot::engine::{CallOutcome, Engine};
use serde_json::{Value, json};

/// What the mock platform answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// A small, valid answer.
    Small,
    /// A valid JSON answer of 64 KiB, with its `Content-Length`.
    Declared,
    /// An answer without `Content-Length` that never ends: 1 KiB chunks, one a millisecond.
    Endless,
}

struct Mock {
    inventory: Mutex<Mode>,
    token: Mutex<Mode>,
    inventory_requests: AtomicUsize,
}

fn big_json(bytes: usize) -> String {
    // {"data":[],"pad":"xxx..."} of exactly `bytes` bytes.
    let frame = r#"{"data":[],"pad":""}"#.len();
    format!(r#"{{"data":[],"pad":"{}"}}"#, "x".repeat(bytes - frame))
}

fn answer(mode: Mode, small: Value) -> Response {
    match mode {
        Mode::Small => axum::Json(small).into_response(),
        Mode::Declared => {
            ([("content-type", "application/json")], big_json(64 * 1024)).into_response()
        }
        Mode::Endless => {
            let chunks = futures::stream::unfold(0u64, |n| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let chunk = if n == 0 {
                    b"{\"pad\":\"".to_vec()
                } else {
                    vec![b'x'; 1024]
                };
                Some((Ok::<_, std::io::Error>(chunk), n + 1))
            });
            Body::from_stream(chunks).into_response()
        }
    }
}

async fn mock() -> (Arc<Mock>, String) {
    let m = Arc::new(Mock {
        inventory: Mutex::new(Mode::Small),
        token: Mutex::new(Mode::Small),
        inventory_requests: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route(
            "/oauth/token",
            post(|State(m): State<Arc<Mock>>| async move {
                let mode = *m.token.lock().unwrap();
                answer(mode, json!({"access_token": "tok", "expires_in": 3600}))
            }),
        )
        .route(
            "/v1/inventory",
            get(|State(m): State<Arc<Mock>>| async move {
                m.inventory_requests.fetch_add(1, Ordering::SeqCst);
                let mode = *m.inventory.lock().unwrap();
                answer(mode, json!({"data": [{"sku": "a", "qty": 3}]}))
            }),
        )
        .with_state(m.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (m, url)
}

const PLATFORM: &str = r#"
platform: capped
settings:
  base_url: BASE
credentials: [client_id]
auth:
  kind: oauth2
  token_url: "{{settings.base_url}}/oauth/token"
  form: { grant_type: client_credentials, client_id: "{{credentials.client_id}}" }
transport:
TRANSPORT
request:
  method: GET
  url: "{{settings.base_url}}/v1/inventory"
response:
  success: { status: [200] }
operations:
  inventory.get:
    response:
      fields:
        items:
          each: $.data[*]
          fields:
            sku_id: { path: $.sku, required: true }
            available: { path: $.qty, type: integer, required: true }
"#;

async fn engine(
    url: &str,
    transport: &str,
) -> (Engine, Arc<entrepot::plan::PlatformPlan>, tempfile::TempDir) {
    let text = PLATFORM
        .replace("BASE", url)
        .replace("TRANSPORT\n", transport);
    let doc = entrepot::config::source::parse(Path::new("capped.yaml"), text).unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
    assert!(
        compiled.diagnostics.is_empty(),
        "{}",
        crate::support::render(&compiled.diagnostics)
    );
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let mut creds = CredentialSets::new();
    creds.insert(
        "capped".into(),
        [("client_id".to_string(), json!("cid"))]
            .into_iter()
            .collect(),
    );
    let plan = compiled.plan.platforms["capped"].clone();
    (Engine::new(store, creds, |_| None), plan, dir)
}

async fn call(e: &Engine, p: &entrepot::plan::PlatformPlan) -> Result<Value, Problem> {
    match e
        .call(p, "inventory.get", &json!({"sku_ids": ["a"]}), false)
        .await?
    {
        CallOutcome::Output(v) => Ok(v),
        other => panic!("{other:?}"),
    }
}

/// The problem of an answer over the limit: 502, `platform-failed`, naming the limit.
fn assert_over_limit(p: &Problem, what: &str) {
    assert_eq!(p.status, 502, "{what}: {p:?}");
    assert!(p.type_uri.ends_with("/platform-failed"), "{what}: {p:?}");
    assert!(p.detail.contains("transport.max_answer"), "{what}: {p:?}");
    assert!(p.detail.contains("4096 bytes"), "{what}: {p:?}");
    assert!(!p.retryable, "{what}: {p:?}");
}

#[tokio::test]
async fn answers_over_max_answer_are_a_502_naming_the_limit() {
    let (m, url) = mock().await;
    let (e, p, _dir) = engine(&url, "  timeout: 3s\n  max_answer: 4KiB\n").await;
    assert_eq!(
        call(&e, &p).await.unwrap(),
        json!({"items": [{"sku_id": "a", "available": 3}]}),
        "an answer within the limit is read"
    );

    *m.inventory.lock().unwrap() = Mode::Declared;
    let before = m.inventory_requests.load(Ordering::SeqCst);
    let problem = call(&e, &p).await.unwrap_err();
    assert_over_limit(&problem, "declared Content-Length");
    assert_eq!(
        m.inventory_requests.load(Ordering::SeqCst) - before,
        1,
        "an answer over the limit is not asked for again"
    );

    // Without Content-Length and never ending: refused once 4 KiB arrived, long before the
    // call's deadline (3s) — not read until the deadline.
    *m.inventory.lock().unwrap() = Mode::Endless;
    let started = Instant::now();
    let problem = call(&e, &p).await.unwrap_err();
    assert_over_limit(&problem, "endless body");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_token_endpoint_answer_is_capped_too() {
    for mode in [Mode::Declared, Mode::Endless] {
        let (m, url) = mock().await;
        *m.token.lock().unwrap() = mode;
        let (e, p, _dir) = engine(&url, "  timeout: 3s\n  max_answer: 4KiB\n").await;
        let started = Instant::now();
        let problem = call(&e, &p).await.unwrap_err();
        assert_over_limit(&problem, "token endpoint");
        assert!(problem.detail.contains("token"), "{problem:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(m.inventory_requests.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test]
async fn answers_over_the_limit_count_as_platform_failures_for_the_breaker() {
    let (m, url) = mock().await;
    let transport = "  max_answer: 4KiB\n  breaker: { min_calls: 2, failure_rate: 0.5, window: 60s, cool_down: 60s }\n";
    let (e, p, _dir) = engine(&url, transport).await;
    *m.inventory.lock().unwrap() = Mode::Declared;
    for _ in 0..2 {
        assert_over_limit(&call(&e, &p).await.unwrap_err(), "breaker");
    }
    let sent = m.inventory_requests.load(Ordering::SeqCst);
    let problem = call(&e, &p).await.unwrap_err();
    assert_eq!(problem.status, 503, "{problem:?}");
    assert!(problem.detail.contains("circuit breaker"), "{problem:?}");
    assert_eq!(m.inventory_requests.load(Ordering::SeqCst), sent);
}

#[test]
fn max_answer_is_validated() {
    for (value, ok) in [
        ("16MiB", true),
        ("1", true),
        ("1GiB", true),
        ("0", false),
        ("2GiB", false),
        ("12 parsecs", false),
    ] {
        let text = PLATFORM
            .replace("BASE", "http://127.0.0.1:9")
            .replace("TRANSPORT\n", &format!("  max_answer: {value}\n"));
        let doc = entrepot::config::source::parse(Path::new("capped.yaml"), text).unwrap();
        let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
        let rendered = crate::support::render(&compiled.diagnostics);
        assert_eq!(compiled.diagnostics.is_empty(), ok, "{value}: {rendered}");
        if !ok {
            assert!(rendered.contains("max_answer"), "{value}: {rendered}");
        }
    }
}
