//! What inputs can do to a request, and the transport's semantics (deadline, statuses,
//! Retry-After), against a hand-written platform on 127.0.0.1:0 that records what reaches it
//! and answers from a script.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use entrepot::credentials::CredentialSets;
use entrepot::engine::Engine;
use entrepot::server::{AppState, serve};
use serde_json::{Value, json};

/// One answer of the mock platform.
#[derive(Clone)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    delay: Duration,
}

impl Answer {
    fn status(status: u16) -> Self {
        Answer {
            status,
            retry_after: None,
            delay: Duration::ZERO,
        }
    }
    fn retry_after(mut self, v: &str) -> Self {
        self.retry_after = Some(v.into());
        self
    }
    fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

/// A request as it reached the mock.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    /// The request target exactly as received (path and query).
    target: String,
    headers: HeaderMap,
    at: Instant,
}

#[derive(Default)]
struct Mock {
    script: Mutex<VecDeque<Answer>>,
    /// Used when the script is empty.
    default: Mutex<Option<Answer>>,
    seen: Mutex<Vec<Seen>>,
}

async fn handle(
    State(m): State<Arc<Mock>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    m.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        target: uri.to_string(),
        headers,
        at: Instant::now(),
    });
    let answer = m
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| m.default.lock().unwrap().clone())
        .unwrap_or(Answer::status(200));
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let status = StatusCode::from_u16(answer.status).unwrap();
    let body = if answer.status == 200 {
        json!({"output": {"order_id": "o-1", "status": "cancelled"}}).to_string()
    } else {
        "<html>busy</html>".to_string()
    };
    let mut resp = (status, body).into_response();
    if let Some(ra) = answer.retry_after {
        resp.headers_mut()
            .insert("retry-after", ra.parse().unwrap());
    }
    resp
}

const PLATFORM: &str = r#"
platform: rest_demo
settings:
  base_url: BASE
transport:
TRANSPORT
request:
  method: GET
  url: "{{settings.base_url}}/v1/orders/{{input.order_id}}?sig=s1"
response:
  success: { status: [200] }
operations:
  order.get:
    response: { path: $.output }
  order.cancel:
    request:
      method: POST
      url: "{{settings.base_url}}/v1/orders/{{input.order_id}}/cancel?sig=s1"
      headers: { X-Reason: "{{input.reason}}" }
    response: { path: $.output }
"#;

struct Gw {
    url: String,
    mock: Arc<Mock>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start(transport: &str) -> Gw {
    let mock = Arc::new(Mock::default());
    let app = Router::new().fallback(handle).with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let text = PLATFORM
        .replace("BASE", &base)
        .replace("TRANSPORT\n", transport);
    let doc = entrepot::config::source::parse(Path::new("rest_demo.yaml"), text).unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
    assert!(
        compiled.diagnostics.is_empty(),
        "{}",
        crate::support::render(&compiled.diagnostics)
    );
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let engine = Arc::new(Engine::new(store.clone(), CredentialSets::new(), |_| None));
    let state = AppState {
        plan: Arc::new(ArcSwap::from_pointee(compiled.plan)),
        store: Some(store),
        engine: Some(engine),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        "127.0.0.1:0".parse().unwrap(),
        state,
        move |a| {
            let _ = tx.send(a);
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let addr = rx.await.unwrap();
    Gw {
        url: format!("http://{addr}"),
        mock,
        http: reqwest::Client::new(),
        _dir: dir,
        stop: Some(stop),
    }
}

/// Status, `Retry-After` header and body of one canonical call.
struct Reply {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

impl Gw {
    async fn call(&self, op: &str, input: Value) -> Reply {
        let resp = self
            .http
            .post(format!(
                "{}/v1/platforms/rest_demo/operations/{op}",
                self.url
            ))
            .json(&input)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let body: Value = resp.json().await.unwrap();
        Reply {
            status,
            retry_after,
            body,
        }
    }

    fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.mock.script.lock().unwrap().extend(answers);
    }

    fn seen(&self) -> Vec<Seen> {
        self.mock.seen.lock().unwrap().clone()
    }
}

// ---- point 4: inputs cannot reshape requests or trip breakers ----

#[tokio::test]
async fn a_path_value_stays_one_segment_with_the_query_intact() {
    let gw = start("  retries: 0\n").await;
    let r = gw
        .call("order.get", json!({"order_id": "../../admin?x=1#f"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = gw.seen();
    assert_eq!(seen.len(), 1);
    // Every byte outside the unreserved set is percent-encoded (RFC 3986, by hand).
    assert_eq!(
        seen[0].target,
        "/v1/orders/..%2F..%2Fadmin%3Fx%3D1%23f?sig=s1"
    );
    // A value that is exactly a dot-segment cannot climb either.
    for dots in [".", ".."] {
        let r = gw.call("order.get", json!({"order_id": dots})).await;
        assert_eq!(r.status, 400, "{}", r.body);
        let detail = r.body["detail"].as_str().unwrap();
        assert!(detail.contains("input.order_id"), "{detail}");
    }
    assert_eq!(
        gw.seen().len(),
        1,
        "refused inputs never reach the platform"
    );
}

#[tokio::test]
async fn a_line_break_in_a_header_is_a_400_and_leaves_the_breaker_closed() {
    let transport = "  retries: 0\n  breaker: { min_calls: 5, failure_rate: 0.5, window: 60s, cool_down: 60s }\n";
    let gw = start(transport).await;
    for _ in 0..30 {
        let r = gw
            .call(
                "order.cancel",
                json!({"order_id": "o-1", "reason": "late\r\nX-Injected: 1"}),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(
            r.body["type"],
            "https://entrepot.dev/problems/invalid-input"
        );
        let detail = r.body["detail"].as_str().unwrap();
        assert!(detail.contains("input.reason"), "{detail}");
        assert!(
            !detail.contains("X-Injected"),
            "the value is not echoed: {detail}"
        );
    }
    assert!(gw.seen().is_empty(), "nothing was sent");
    // The breaker is closed: a valid call goes through.
    let r = gw
        .call("order.cancel", json!({"order_id": "o-1", "reason": "late"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(gw.seen()[0].headers["x-reason"], "late");
}

// ---- point 5: transport semantics ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_calls_do_not_delay_the_next_one() {
    // 5 calls a second: 200 reserved slots would be 40 s of waiting.
    let gw = start("  qps: 5\n  concurrency: 256\n  timeout: 1s\n  retries: 0\n").await;
    let engine_calls = (0..200).map(|i| {
        let gw = &gw;
        async move {
            // Each caller gives up after 500 ms (the connection is dropped).
            let _ = tokio::time::timeout(
                Duration::from_millis(500),
                gw.call("order.get", json!({"order_id": format!("a-{i}")})),
            )
            .await;
        }
    });
    futures::future::join_all(engine_calls).await;
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        gw.call("order.get", json!({"order_id": "next"})),
    )
    .await
    .expect("the next call must answer within its deadline, not after 20 s");
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    // Its own deadline is 1 s; before the fix it waited behind 40 s of reserved slots.
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[tokio::test]
async fn waiting_for_a_concurrency_slot_counts_against_the_deadline() {
    let gw = start("  concurrency: 1\n  timeout: 1s\n  retries: 0\n").await;
    *gw.mock.default.lock().unwrap() = Some(Answer::status(200).delay(Duration::from_secs(5)));
    let started = Instant::now();
    let (a, b) = tokio::join!(
        gw.call("order.get", json!({"order_id": "a"})),
        gw.call("order.get", json!({"order_id": "b"}))
    );
    let took = started.elapsed();
    // Both end by their own deadline: the second does not get a fresh second after waiting
    // (which would end it after 2 s).
    assert!(took < Duration::from_millis(1_800), "took {took:?}");
    // The first times out at the platform (504); the second either never got the slot (503)
    // or got it too late to finish (504).
    for r in [&a, &b] {
        assert!([503, 504].contains(&r.status), "{}", r.body);
        assert_eq!(r.body["retryable"], true);
    }
    assert!(a.status == 504 || b.status == 504, "{} {}", a.body, b.body);
}

#[tokio::test]
async fn upstream_5xx_is_502_and_timeout_is_504() {
    let gw = start("  timeout: 1s\n  retries: 1\n  backoff: 10ms\n").await;
    gw.script([Answer::status(500), Answer::status(500)]);
    let r = gw.call("order.get", json!({"order_id": "o-1"})).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.body["platform_status"], 500, "{}", r.body);
    assert_eq!(r.body["retryable"], true);
    assert_eq!(gw.seen().len(), 2);

    gw.script([Answer::status(200).delay(Duration::from_secs(2))]);
    gw.script([Answer::status(200).delay(Duration::from_secs(2))]);
    let r = gw.call("order.get", json!({"order_id": "o-1"})).await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.body["retryable"], true);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn retry_after_is_honoured_for_reads() {
    let gw = start("  timeout: 3s\n  retries: 2\n  backoff: 10ms\n").await;
    gw.script([Answer::status(503).retry_after("1")]);
    let r = gw.call("order.get", json!({"order_id": "o-1"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = gw.seen();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(990), "retried after {gap:?}");
    assert!(gap < Duration::from_millis(2_500), "retried after {gap:?}");

    // A Retry-After beyond the deadline ends the call at once, with the wait in the problem.
    gw.script([Answer::status(429).retry_after("30")]);
    let started = Instant::now();
    let r = gw.call("order.get", json!({"order_id": "o-1"})).await;
    // The deadline is 3 s: ending at once means well before it.
    assert!(started.elapsed() < Duration::from_millis(1_500));
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.body["retry_after"], 30, "{}", r.body);
    assert_eq!(r.retry_after.as_deref(), Some("30"));
    assert_eq!(gw.seen().len(), 3, "no retry beyond the deadline");
}

#[tokio::test]
async fn a_write_keeps_the_platform_status_and_retry_after() {
    let gw = start("  timeout: 3s\n  retries: 2\n  backoff: 10ms\n").await;
    // An HTTP date 120 s ahead (written by hand in IMF-fixdate form).
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(120);
    let date = at
        .format(time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .unwrap();
    gw.script([Answer::status(503).retry_after(&date)]);
    let r = gw
        .call("order.cancel", json!({"order_id": "o-1", "reason": "late"}))
        .await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.body["platform_status"], 503, "{}", r.body);
    let secs = r.body["retry_after"].as_u64().unwrap();
    assert!((118..=120).contains(&secs), "{}", r.body);
    assert_eq!(r.retry_after, Some(secs.to_string()));
    let seen = gw.seen();
    assert_eq!(seen.len(), 1, "writes are not retried");
    assert_eq!(seen[0].method, "POST");
}

#[tokio::test]
async fn only_failures_of_the_platform_open_the_breaker() {
    let transport = "  retries: 0\n  breaker: { min_calls: 3, failure_rate: 0.3, window: 60s, cool_down: 60s }\n";
    let gw = start(transport).await;
    // Five "slow down" answers: the platform is healthy, the breaker stays closed.
    gw.script((0..5).map(|_| Answer::status(429)));
    for _ in 0..5 {
        let r = gw.call("order.get", json!({"order_id": "o-1"})).await;
        assert_eq!(r.status, 429, "{}", r.body);
    }
    let r = gw.call("order.get", json!({"order_id": "o-1"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Three 5xx answers are failures of the platform: 3 of 9 calls, it opens.
    gw.script((0..3).map(|_| Answer::status(502)));
    for _ in 0..3 {
        let r = gw.call("order.get", json!({"order_id": "o-1"})).await;
        assert_eq!(r.status, 502, "{}", r.body);
    }
    let before = gw.seen().len();
    let r = gw.call("order.get", json!({"order_id": "o-1"})).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("circuit breaker"),
        "{}",
        r.body
    );
    assert!(r.retry_after.is_some());
    assert_eq!(gw.seen().len(), before, "an open breaker sends nothing");
}
