//! Traces of a real gateway process, exported over OTLP/HTTP to a receiver written here on
//! loopback (the protobuf decoded with the OpenTelemetry protocol crate): a canonical call
//! sent with a known `traceparent` is one trace holding the call and its platform request, and
//! the simulator received that trace's `traceparent`; a callback's event reaches its target
//! with the callback's trace id; JSON log lines carry the trace id; no credential appears in
//! any span.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use channel_sim::{Catalog, SimConfig, Simulator};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;

use crate::support::root;

const KEY: &str = "LEAKCHECK-traces-app-key-91d0";
const SECRET: &str = "LEAKCHECK-traces-app-secret-4c2e";
const OTLP_KEY: &str = "LEAKCHECK-otlp-api-key-0f3b";

/// One exported span, its ids in lower-case hex.
#[derive(Debug, Clone)]
pub struct SpanSeen {
    /// Its name.
    pub name: String,
    /// Trace id.
    pub trace_id: String,
    /// Span id.
    pub span_id: String,
    /// Parent span id (empty for a root).
    pub parent: String,
    /// Attributes, every value as text.
    pub attributes: BTreeMap<String, String>,
    /// The resource's attributes.
    pub resource: BTreeMap<String, String>,
}

impl SpanSeen {
    /// An attribute's value, or "".
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// What the receiver got: spans, and the headers of each export.
#[derive(Clone, Default)]
pub struct Received {
    /// Every span, in arrival order.
    pub spans: Arc<Mutex<Vec<SpanSeen>>>,
    /// The headers of every export request.
    pub headers: Arc<Mutex<Vec<HeaderMap>>>,
}

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

async fn export(
    State(r): State<Received>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    r.headers.lock().unwrap().push(headers);
    let mut spans = r.spans.lock().unwrap();
    for rs in req.resource_spans {
        let resource: BTreeMap<String, String> = rs
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
            .collect();
        for ss in rs.scope_spans {
            for s in ss.spans {
                spans.push(SpanSeen {
                    name: s.name,
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent: hex::encode(&s.parent_span_id),
                    attributes: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                    resource: resource.clone(),
                });
            }
        }
    }
    StatusCode::OK
}

/// Starts an OTLP/HTTP trace receiver on loopback; returns its base URL and what it receives.
pub async fn otlp_receiver() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(export))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// The listening address in a log, text (`listening addr=...`) or JSON lines.
pub fn listening_addr(log: &str) -> Option<String> {
    log.lines().find_map(|l| {
        if let Some(a) = l.split("listening addr=").nth(1) {
            return Some(a.trim().to_string());
        }
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v.pointer("/fields/message")? == "listening")
            .then(|| v.pointer("/fields/addr")?.as_str().map(str::to_string))
            .flatten()
    })
}

/// Starts the gateway binary with `--log-format json`, its output in `log`; returns it and
/// the address it listens on.
pub async fn spawn_json_gateway(
    config: &std::path::Path,
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> (Child, String) {
    let file = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_entrepot"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--config",
        ])
        .arg(config)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(a) = listening_addr(&text) {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the gateway starts");
    (child, addr)
}

/// Asks the gateway to stop (SIGTERM) and waits for it: it exports its last spans first.
pub async fn terminate(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exited.success(), "{exited:?}");
}

#[derive(Clone, Default)]
struct Target {
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

async fn target(State(t): State<Target>, headers: HeaderMap) -> StatusCode {
    let get = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    t.seen
        .lock()
        .unwrap()
        .push((get("x-entrepot-event"), get("traceparent")));
    StatusCode::OK
}

/// Waits (with a deadline) until `ready` holds.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
}

/// A gateway directory for the channel simulator `sim`: its platform file, credentials and an
/// `entrepot.yaml` with a SQLite store there, then `extra` (more of the gateway file).
fn gateway_files(sim: &Simulator, extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let platforms = dir.path().join("platforms");
    std::fs::create_dir(&platforms).unwrap();
    let yaml = std::fs::read_to_string(root().join("platforms/yanxuan.yaml"))
        .unwrap()
        .replace(
            "${env:YANXUAN_BASE_URL:-http://127.0.0.1:18080}",
            &sim.base_url(),
        );
    std::fs::write(platforms.join("yanxuan.yaml"), yaml).unwrap();
    std::fs::write(
        dir.path().join("credentials.yaml"),
        format!("yanxuan:\n  app_key: {KEY}\n  app_secret: {SECRET}\n"),
    )
    .unwrap();
    let config = dir.path().join("entrepot.yaml");
    std::fs::write(
        &config,
        format!(
            "store: {{ url: \"sqlite://{}/gw.db\" }}\nplatforms_dir: platforms\ncredentials_file: credentials.yaml\n{extra}",
            dir.path().display()
        ),
    )
    .unwrap();
    (dir, config)
}

/// The trace id and parent id of a `traceparent`.
fn ids_of(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00", "{traceparent}");
    (parts[1].to_string(), parts[2].to_string())
}

#[tokio::test]
async fn one_trace_spans_the_call_its_platform_request_and_the_deliveries() {
    let sim = Simulator::start(SimConfig::new(KEY, SECRET, Catalog::sample()))
        .await
        .unwrap();
    let (otlp, received) = otlp_receiver().await;
    let t = Target::default();
    let app = axum::Router::new()
        .route("/events", post(target))
        .with_state(t.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (dir, config) = gateway_files(
        &sim,
        &format!(
            "delivery: {{ backoff: 50ms, backoff_max: 200ms }}\ntargets:\n  center: {{ url: \"{target_url}\", events: [inventory.changed] }}\ntelemetry:\n  otlp:\n    endpoint: {otlp}\n    service_name: entrepot-under-test\n    headers: {{ x-api-key: \"${{env:TRACES_OTLP_KEY}}\" }}\n"
        ),
    );
    let log = dir.path().join("gateway.log");
    let (child, addr) = spawn_json_gateway(&config, &log, &[("TRACES_OTLP_KEY", OTLP_KEY)]).await;
    let http = reqwest::Client::new();

    // (1) A canonical call inside the caller's trace.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let r = http
        .post(format!(
            "http://{addr}/v1/platforms/yanxuan/operations/product.list"
        ))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .header("tracestate", "mall=1")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let sent = sim.requests();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let sim_traceparent = sent[0].traceparent.clone().expect("a traceparent");
    assert!(
        sim_traceparent.ends_with("-01"),
        "sampled, as the caller said"
    );
    let (sim_trace, sim_parent) = ids_of(&sim_traceparent);
    assert_eq!(sim_trace, caller_trace);
    // An invalid traceparent is ignored: the call is served, in a trace of its own.
    let r = http
        .post(format!(
            "http://{addr}/v1/platforms/yanxuan/operations/product.list"
        ))
        .header("traceparent", "00-zz-not-a-trace-01")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let second = sim.requests().last().unwrap().traceparent.clone().unwrap();
    assert_ne!(ids_of(&second).0, caller_trace);

    // (2) A callback whose event reaches the target; (3) a forged one, logged as refused.
    let now = time::OffsetDateTime::now_utc();
    for (secret, id) in [(SECRET, "trace-genuine"), ("forged", "trace-forged")] {
        let body = channel_sim::signed_form(
            KEY,
            secret,
            "yanxuan.notification.inventory.count.changed",
            now,
            &[("notifyId", id), ("skuId", "100101"), ("inventory", "3")],
        );
        http.post(format!("http://{addr}/callbacks/yanxuan/notify"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
    }
    until("the event reaches the target", || {
        !t.seen.lock().unwrap().is_empty()
    })
    .await;
    terminate(child).await;

    let spans = received.spans.lock().unwrap().clone();
    let named = |name: &str| -> Vec<SpanSeen> {
        spans.iter().filter(|s| s.name == name).cloned().collect()
    };
    // The call: one span, a child of the caller's, with its platform request under it.
    let calls = named("entrepot.call");
    assert_eq!(calls.len(), 2, "{spans:#?}");
    let call = calls
        .iter()
        .find(|s| s.trace_id == caller_trace)
        .expect("the call joined the caller's trace");
    assert_eq!(call.parent, caller_span);
    assert_eq!(
        (
            call.attr("platform"),
            call.attr("operation"),
            call.attr("outcome")
        ),
        ("yanxuan", "product.list", "ok")
    );
    assert_eq!(
        call.resource.get("service.name").map(String::as_str),
        Some("entrepot-under-test")
    );
    let in_trace: Vec<&SpanSeen> = spans
        .iter()
        .filter(|s| s.trace_id == caller_trace)
        .collect();
    assert_eq!(
        in_trace.len(),
        2,
        "the call and its one request: {in_trace:#?}"
    );
    let request = in_trace
        .iter()
        .find(|s| s.name == "entrepot.platform_request")
        .expect("the platform request's span");
    assert_eq!(request.parent, call.span_id);
    assert_eq!(
        (request.attr("attempt"), request.attr("http.status_code")),
        ("1", "200")
    );
    // What the simulator received names the request's span as its parent.
    assert_eq!(sim_parent, request.span_id);
    // The other call, with the invalid traceparent, is a root of its own trace.
    let other = calls.iter().find(|s| s.trace_id != caller_trace).unwrap();
    assert!(other.parent.is_empty(), "{other:?}");

    // The callback and its delivery: one trace, sent on to the target.
    let callbacks = named("entrepot.callback");
    let accepted = callbacks
        .iter()
        .find(|s| s.attr("outcome") == "accepted")
        .expect("the genuine callback");
    assert_eq!(
        (
            accepted.attr("platform"),
            accepted.attr("route"),
            accepted.attr("event_type")
        ),
        ("yanxuan", "/yanxuan/notify", "inventory.changed")
    );
    assert!(
        accepted.parent.is_empty(),
        "a callback starts its own trace"
    );
    let delivery = named("entrepot.delivery");
    assert_eq!(delivery.len(), 1, "{delivery:#?}");
    let delivery = &delivery[0];
    assert_eq!(delivery.trace_id, accepted.trace_id);
    assert_eq!(delivery.parent, accepted.span_id);
    assert_eq!(
        (
            delivery.attr("target"),
            delivery.attr("event_type"),
            delivery.attr("outcome"),
            delivery.attr("http.status_code")
        ),
        ("center", "inventory.changed", "delivered", "200")
    );
    let seen = t.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, "inventory.changed");
    assert_eq!(
        ids_of(&seen[0].1),
        (accepted.trace_id.clone(), delivery.span_id.clone())
    );

    // (3) The refused callback's log line carries its span's trace and span ids.
    let refused = callbacks
        .iter()
        .find(|s| s.attr("outcome") == "refused")
        .expect("the forged callback");
    assert_eq!(refused.attr("refusal"), "signature");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let line = lines
        .iter()
        .find(|l| {
            l.pointer("/fields/message")
                .and_then(|m| m.as_str())
                .is_some_and(|m| m.starts_with("delivery refused"))
        })
        .expect("the refusal is logged");
    assert_eq!(line["trace_id"], refused.trace_id.as_str(), "{line}");
    assert_eq!(line["span_id"], refused.span_id.as_str(), "{line}");
    // Outside any span, no ids.
    let listening = lines
        .iter()
        .find(|l| l.pointer("/fields/message") == Some(&serde_json::json!("listening")))
        .unwrap();
    assert!(listening.get("trace_id").is_none(), "{listening}");

    // The export carried its configured header; (4) no credential in any span or log line.
    let headers = received.headers.lock().unwrap().clone();
    assert!(
        headers
            .iter()
            .all(|h| h.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(OTLP_KEY))
    );
    let dump = format!("{spans:?}\n{text}");
    for secret in [KEY, SECRET, OTLP_KEY] {
        assert!(!dump.contains(secret), "{secret} leaked");
    }
    sim.stop().await;
}

#[tokio::test]
async fn a_bad_otlp_endpoint_is_a_located_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("entrepot.yaml");
    std::fs::write(
        &config,
        "telemetry:\n  otlp:\n    endpoint: \"collector:4318\"\n    sample_ratio: 2\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_entrepot"))
        .args(["validate"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("entrepot.yaml:3:15") && err.contains("telemetry.otlp.endpoint"),
        "{err}"
    );
    assert!(
        err.contains("telemetry.otlp.sample_ratio") && err.contains("outside 0 to 1"),
        "{err}"
    );
}

/// Events stored inside a trace keep its `traceparent` (a callback's inbox record and plain
/// enqueues alike); events stored outside any trace have none.
async fn trace_context_is_stored_with_events(s: &entrepot::store::Store) {
    use entrepot::store::{NewDelivery, NewEvent};
    use opentelemetry::context::FutureExt as _;
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let event = |id: &str| NewEvent {
        event_id: id.into(),
        target: "center".into(),
        event_type: "inventory.changed".into(),
        payload: "{}".into(),
        idempotency_key: format!("idem-{id}"),
        max_attempts: 3,
    };
    let delivery = NewDelivery {
        platform: "p".into(),
        route: "/p/notify".into(),
        dedupe_key: Some("k1".into()),
        headers: "{}".into(),
        body: b"{}".to_vec(),
        body_bytes: 2,
        verified: true,
        rejection: None,
        event_type: Some("inventory.changed".into()),
        received_at: 5,
        replay: None,
    };
    let parent = entrepot::telemetry::parse_traceparent(tp);
    s.inbox_record(&delivery, &[event("from-callback")], 10)
        .with_context(parent.clone())
        .await
        .unwrap();
    s.outbox_enqueue(&[event("enqueued")], 10)
        .with_context(parent)
        .await
        .unwrap();
    s.outbox_enqueue(&[event("untraced")], 10).await.unwrap();
    let rows = s.outbox_claim("me", 20, 60_000, 10).await.unwrap();
    let mut got: Vec<(String, Option<String>)> = rows
        .into_iter()
        .map(|r| (r.event_id, r.traceparent))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("enqueued".to_string(), Some(tp.to_string())),
            ("from-callback".to_string(), Some(tp.to_string())),
            ("untraced".to_string(), None),
        ]
    );
}

#[tokio::test]
async fn trace_context_is_stored_with_events_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    trace_context_is_stored_with_events(&store).await;
}

#[tokio::test]
async fn trace_context_is_stored_with_events_postgres() {
    let Some(url) = crate::store::postgres_url(true) else {
        return;
    };
    let schema = crate::store::fresh_schema();
    let store = crate::store::postgres(&url, &schema).await;
    trace_context_is_stored_with_events(&store).await;
    store.close().await;
    crate::store::drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn an_unreachable_collector_is_logged_and_never_fatal() {
    let sim = Simulator::start(SimConfig::new(KEY, SECRET, Catalog::sample()))
        .await
        .unwrap();
    // A loopback port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (dir, config) = gateway_files(
        &sim,
        &format!("telemetry: {{ otlp: {{ endpoint: \"http://{closed}\", timeout: 1s }} }}\n"),
    );
    let log = dir.path().join("gateway.log");
    let (child, addr) = spawn_json_gateway(&config, &log, &[]).await;
    let r = reqwest::Client::new()
        .post(format!(
            "http://{addr}/v1/platforms/yanxuan/operations/product.list"
        ))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The spans cannot go anywhere: the gateway still stops cleanly, saying so once.
    terminate(child).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("cannot export spans over OTLP"))
        .collect();
    assert_eq!(failures.len(), 1, "{text}");
    assert!(
        failures[0].contains("\"level\":\"WARN\""),
        "{}",
        failures[0]
    );
    sim.stop().await;
}

#[tokio::test]
async fn without_an_exporter_trace_context_is_still_passed_on_and_logged() {
    let sim = Simulator::start(SimConfig::new(KEY, SECRET, Catalog::sample()))
        .await
        .unwrap();
    let (dir, config) = gateway_files(&sim, "");
    let log = dir.path().join("gateway.log");
    let (child, addr) = spawn_json_gateway(&config, &log, &[]).await;
    let http = reqwest::Client::new();
    let call = |traceparent: Option<&'static str>| {
        let mut r = http
            .post(format!(
                "http://{addr}/v1/platforms/yanxuan/operations/product.list"
            ))
            .json(&serde_json::json!({}));
        if let Some(tp) = traceparent {
            r = r.header("traceparent", tp);
        }
        r.send()
    };
    // A caller's sampled trace is passed on as sampled.
    let caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert_eq!(call(Some(caller)).await.unwrap().status().as_u16(), 200);
    let sent = sim.requests().last().unwrap().traceparent.clone().unwrap();
    assert!(
        sent.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && sent.ends_with("-01"),
        "{sent}"
    );
    assert!(
        !sent.contains("b7ad6b7169203331"),
        "a span of the gateway's own is the parent"
    );
    // The gateway's own traces are not sampled: nothing exports them.
    assert_eq!(call(None).await.unwrap().status().as_u16(), 200);
    let own = sim.requests().last().unwrap().traceparent.clone().unwrap();
    assert!(own.ends_with("-00"), "{own}");
    // A refused callback is still logged with its trace id.
    let body = channel_sim::signed_form(
        KEY,
        "forged",
        "yanxuan.notification.inventory.count.changed",
        time::OffsetDateTime::now_utc(),
        &[("notifyId", "n1"), ("skuId", "100101"), ("inventory", "3")],
    );
    http.post(format!("http://{addr}/callbacks/yanxuan/notify"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    terminate(child).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let refused: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| {
            l.pointer("/fields/message")
                .and_then(|m| m.as_str())
                .is_some_and(|m| m.starts_with("delivery refused"))
        })
        .expect("the refusal is logged");
    let trace = refused["trace_id"].as_str().unwrap_or_default();
    assert!(
        trace.len() == 32
            && trace.bytes().all(|b| b.is_ascii_hexdigit())
            && trace != "0".repeat(32),
        "{refused}"
    );
    assert_eq!(refused["span"]["name"], "entrepot.callback", "{refused}");
    sim.stop().await;
}
