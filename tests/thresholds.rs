//! Monitoring thresholds end to end: the REST sample platform (`platforms/acme-rest.yaml`,
//! with a `monitoring` block) against its hand-written simulator (`examples/rest-sim`), which
//! fails on command. The targets are loopback servers recording what they receive; the
//! monitor runs on its schedule, as in `serve`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use entrepot::compile::gateway::GatewaySettings;
use entrepot::dispatch::{DispatchOptions, Dispatcher};
use entrepot::engine::Engine;
use entrepot::monitor::Monitor;
use entrepot::observe::{CallSeen, Observer, Outcome, Sink};
use entrepot::server::AppState;
use entrepot::store::{OutboxRow, Store};
use rest_sim::{Fault, FaultKind, SimConfig, Simulator};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::root;

const PLATFORM: &str = "acme-rest";
const CLIENT_ID: &str = "mall-client";
const CLIENT_SECRET: &str = "mall-client-secret-42";
/// `whsec_` + base64 of "rest-sim-webhook-secret-for-tests".
const WEBHOOK_SECRET: &str = "whsec_cmVzdC1zaW0td2ViaG9vay1zZWNyZXQtZm9yLXRlc3Rz";
const ADMIN: &str = "admin-token-for-threshold-tests";

/// The gateway file: an operations target for the monitoring events, the stock center for
/// the stock events, evaluations every 50 ms.
const GATEWAY: &str = "targets:
  ops:
    url: OPS_URL
    events: [platform.degraded, platform.recovered]
  stock:
    url: STOCK_URL
    events: [inventory.changed, inventory.low]
EXTRA_TARGETSmonitoring:
  every: 50ms
  defaults:
    window: 1s
    hold: 300ms
    min_calls: 4
    low_stock: 5
";

/// The platform's own thresholds, over the gateway's defaults: calls failing more than half
/// the time, and CUPS-2's stock at or below 10 (other SKUs: the default, 5).
const MONITORING: &str = "
monitoring:
  error_rate: 0.5
  low_stock_skus: { CUPS-2: 10 }
";

/// The events one target received, in arrival order.
async fn record(State(seen): State<mpsc::UnboundedSender<Value>>, body: String) -> StatusCode {
    let _ = seen.send(serde_json::from_str(&body).unwrap_or(Value::Null));
    StatusCode::OK
}

async fn target() -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route("/events", post(record))
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

/// A target answering 500 to every event until its switch is set, then 200.
async fn refusing_target() -> (String, Arc<AtomicBool>) {
    async fn answer(State(accept): State<Arc<AtomicBool>>) -> StatusCode {
        if accept.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
    let accept = Arc::new(AtomicBool::new(false));
    let app = axum::Router::new()
        .route("/events", post(answer))
        .with_state(accept.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, accept)
}

struct Gateway {
    url: String,
    sim: Simulator,
    store: Store,
    monitor: Arc<Monitor>,
    http: reqwest::Client,
    ops: mpsc::UnboundedReceiver<Value>,
    stock: mpsc::UnboundedReceiver<Value>,
    /// The refusing target's switch: while false it answers 500.
    refusing: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

/// What a test changes in the platform file and the gateway file.
struct Setup {
    /// The platform's `monitoring` block.
    monitoring: &'static str,
    /// What replaces the sample's `retries: 2` line in its `transport` section.
    transport: &'static str,
    /// More targets: YAML lines under `targets:`, where `REFUSING_URL` is the URL of a target
    /// that answers 500 until [`Gateway::refusing`] is told to accept.
    targets: &'static str,
}

impl Default for Setup {
    /// One attempt per call and no breaker (so every call reaches the simulator), the
    /// thresholds of [`MONITORING`], no more targets.
    fn default() -> Self {
        Setup {
            monitoring: MONITORING,
            transport: "  retries: 0\n  breaker: { enabled: false }\n",
            targets: "",
        }
    }
}

async fn start() -> Gateway {
    start_with(Setup::default()).await
}

async fn start_with(setup: Setup) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    start_on_with(store, dir, setup).await
}

/// The PostgreSQL store of `ENTREPOT_TEST_POSTGRES_URL`, in a fresh schema; `None` (said
/// once on stderr) when it is unset.
async fn postgres() -> Option<(Store, String, String)> {
    let url = crate::store::postgres_url(true)?;
    let schema = crate::store::fresh_schema();
    let store = crate::store::postgres(&url, &schema).await;
    Some((store, url, schema))
}

async fn start_on(store: Store, dir: tempfile::TempDir) -> Gateway {
    start_on_with(store, dir, Setup::default()).await
}

async fn start_on_with(store: Store, dir: tempfile::TempDir, setup: Setup) -> Gateway {
    let sim = Simulator::start(SimConfig::new(CLIENT_ID, CLIENT_SECRET, WEBHOOK_SECRET))
        .await
        .unwrap();
    let base = sim.base_url();
    // The sample file, with its SKU ids the mall's own (so thresholds name them as the
    // simulator does), the test's transport and thresholds.
    let file = std::fs::read_to_string(root().join("platforms/acme-rest.yaml")).unwrap();
    // Its own monitoring block (the last of the file) gives way to this test's.
    let (file, _) = file.split_once("\nmonitoring:\n").unwrap();
    assert!(file.contains("  retries: 2\n"));
    let text = file
        .to_string()
        .replace("  sku: allocate", "  sku: same")
        .replace("  retries: 2\n", setup.transport)
        + setup.monitoring;
    let doc = entrepot::config::source::parse(Path::new("platforms/acme-rest.yaml"), text).unwrap();
    let env = move |name: &str| (name == "ACME_REST_BASE_URL").then(|| base.clone());
    let compiled = entrepot::compile::compile_docs(vec![doc], &env);
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );

    let (ops_url, ops) = target().await;
    let (stock_url, stock) = target().await;
    let (refusing_url, refusing) = refusing_target().await;
    let gateway = gateway_settings(
        &GATEWAY
            .replace("EXTRA_TARGETS", setup.targets)
            .replace("OPS_URL", &ops_url)
            .replace("STOCK_URL", &stock_url)
            .replace("REFUSING_URL", &refusing_url),
    );
    let plan = Arc::new(ArcSwap::from_pointee(compiled.plan));
    let targets = Arc::new(gateway.targets.clone());
    let monitor = Arc::new(Monitor::new(
        store.clone(),
        plan.clone(),
        targets.clone(),
        gateway.monitoring.clone(),
    ));
    let observer = Observer::new(vec![monitor.clone()]);
    let creds = crate::support::sample_credentials(
        ("unused", "unused"),
        (CLIENT_ID, CLIENT_SECRET, WEBHOOK_SECRET),
    );
    let engine = Arc::new(
        Engine::new(store.clone(), creds, |_| None)
            .with_observer(observer.clone())
            .with_monitoring(gateway.monitoring.defaults.clone()),
    );
    let options = DispatchOptions {
        backoff: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        poll: Duration::from_millis(20),
        ..Default::default()
    };
    let dispatcher = Arc::new(
        Dispatcher::new(
            store.clone(),
            &gateway.targets,
            options,
            Default::default(),
            |_| None,
        )
        .with_observer(observer),
    );
    let breakers = engine.clone();
    tokio::spawn(monitor.clone().run(
        move || breakers.breakers_open_since(),
        Some(dispatcher.notify.clone()),
        std::future::pending(),
    ));
    let state = AppState {
        plan,
        store: Some(store.clone()),
        engine: Some(engine),
        targets,
        notify: Some(dispatcher.notify.clone()),
        admin_token: Some(entrepot::config::Secret::new(ADMIN)),
        monitor: Some(monitor.clone()),
        ..Default::default()
    };
    tokio::spawn(dispatcher.run(std::future::pending()));
    let addr = crate::support::serve_on_loopback(state).await;
    let url = format!("http://{addr}");
    sim.set_webhook_url(&format!("{url}/callbacks/acme-rest/webhooks"));
    Gateway {
        url,
        sim,
        store,
        monitor,
        http: reqwest::Client::new(),
        ops,
        stock,
        refusing,
        _dir: dir,
    }
}

fn gateway_settings(yaml: &str) -> GatewaySettings {
    let doc =
        entrepot::config::source::parse(Path::new("entrepot.yaml"), yaml.to_string()).unwrap();
    entrepot::compile::gateway::compile_gateway(doc, Path::new("."), &|_| None).unwrap()
}

impl Gateway {
    /// One `inventory.get` of CUPS-2; its HTTP status.
    async fn call(&self) -> u16 {
        self.http
            .post(format!(
                "{}/v1/platforms/{PLATFORM}/operations/inventory.get",
                self.url
            ))
            .json(&json!({"sku_ids": ["CUPS-2"]}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Makes the next `times` inventory calls fail: the simulator answers 503, the gateway
    /// 502.
    fn fail_next(&self, times: u64) {
        self.sim.push_fault(Fault {
            kind: FaultKind::ServerError,
            route: Some("GET /v2/inventory".into()),
            retry_after: 1,
            times,
            delay_ms: 0,
        });
    }

    /// Makes the next `times` inventory calls answer only after `delay_ms`.
    fn slow_next(&self, times: u64, delay_ms: u64) {
        self.sim.push_fault(Fault {
            kind: FaultKind::Slow,
            route: Some("GET /v2/inventory".into()),
            retry_after: 1,
            times,
            delay_ms,
        });
    }

    /// Posts a `stock.changed` webhook to the platform's callback route with `signature` as
    /// its `webhook-signature` header (none: the header is left out); the HTTP status.
    async fn webhook(&self, id: &str, signature: Option<&str>) -> u16 {
        let now = time::OffsetDateTime::now_utc();
        let body = json!({
            "type": "stock.changed",
            "timestamp": now.format(&time::format_description::well_known::Rfc3339).unwrap(),
            "data": {"items": [{"sku": "CUPS-2", "available": 40}]},
        })
        .to_string();
        let mut request = self
            .http
            .post(format!("{}/callbacks/acme-rest/webhooks", self.url))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", now.unix_timestamp().to_string());
        if let Some(signature) = signature {
            request = request.header("webhook-signature", signature);
        }
        request.body(body).send().await.unwrap().status().as_u16()
    }

    /// Waits for the next event at the operations target, calling `drive` between looks
    /// (15 s at most).
    async fn next_ops_event(&mut self, what: &str, mut drive: impl AsyncFnMut(&Self)) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            assert!(Instant::now() < deadline, "no {what} in 15 s");
            drive(self).await;
            if let Ok(event) = self.ops.try_recv() {
                return event;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// After a crossing and its recovery: ten more evaluations send nothing more, the outbox
    /// holds one event of each kind, and the status shows nothing tripped.
    async fn one_crossing_in_all(&mut self) {
        self.evaluations(10).await;
        let rows = outbox(&self.store).await;
        assert_eq!(count(&rows, "platform.degraded"), 1);
        assert_eq!(count(&rows, "platform.recovered"), 1);
        assert!(self.ops.try_recv().is_err());
        let status = self.status().await;
        assert_eq!(status["platforms"][0]["tripped"], json!([]), "{status}");
    }

    async fn status(&self) -> Value {
        self.http
            .get(format!("{}/admin/v1/status", self.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the monitor has completed `n` more evaluations (5 s at most).
    async fn evaluations(&self, n: u64) {
        let until = self.monitor.evaluations() + n;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.monitor.evaluations() < until {
            assert!(Instant::now() < deadline, "the monitor stopped evaluating");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Everything the outbox holds, by id (ids start at 1 in a fresh store).
async fn outbox(store: &Store) -> Vec<OutboxRow> {
    let mut rows = Vec::new();
    for id in 1..=500 {
        if let Some(r) = store.outbox_get(id).await.unwrap() {
            rows.push(r);
        }
    }
    rows
}

fn count(rows: &[OutboxRow], event_type: &str) -> usize {
    rows.iter().filter(|r| r.event_type == event_type).count()
}

/// Checks an event's envelope and data against the canonical schemas.
fn fits(event: &Value) {
    let problems = crate::support::canonical_problems("events/envelope.json", event);
    assert!(problems.is_empty(), "{problems:?} in {event}");
    let kind = event["type"].as_str().unwrap();
    let problems =
        crate::support::canonical_problems(&format!("events/{kind}.json"), &event["data"]);
    assert!(problems.is_empty(), "{problems:?} in {event}");
}

#[tokio::test]
async fn a_failing_platform_is_degraded_once_then_recovered_once() {
    let mut gw = start().await;

    // Fail every call until the operations target hears of it.
    gw.fail_next(1_000_000);
    let deadline = Instant::now() + Duration::from_secs(15);
    let degraded = loop {
        assert!(Instant::now() < deadline, "no platform.degraded in 15 s");
        assert_eq!(gw.call().await, 502);
        if let Ok(event) = gw.ops.try_recv() {
            break event;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    fits(&degraded);
    assert_eq!(degraded["type"], "platform.degraded");
    assert_eq!(degraded["platform"], PLATFORM);
    let data = &degraded["data"];
    // Every call of the window failed: 1.0 against the limit of 0.5.
    assert_eq!(
        (
            &data["threshold"],
            &data["observed"],
            &data["limit"],
            &data["unit"]
        ),
        (
            &json!("error_rate"),
            &json!(1.0),
            &json!(0.5),
            &json!("fraction")
        )
    );
    assert_eq!(
        degraded["idempotency_key"],
        format!(
            "{PLATFORM}:platform.degraded:error_rate:{}",
            ms_of(data["since"].as_str().unwrap())
        )
    );

    // The status shows it, with its value, limit and start.
    let status = gw.status().await;
    let tripped = &status["platforms"][0]["tripped"];
    assert_eq!(tripped.as_array().unwrap().len(), 1, "{status}");
    assert_eq!(tripped[0]["threshold"], "error_rate");
    assert_eq!(tripped[0]["limit"], 0.5);
    assert_eq!(tripped[0]["observed"], 1.0);
    assert_eq!(tripped[0]["since"], data["since"]);
    assert_eq!(tripped[0]["instances"], 1);

    // Flapping: one call in two fails, so the rate sits at the limit, above the recovery
    // level (0.4), for more than a whole window: nothing more is sent.
    gw.sim.clear_faults();
    let flapping = gw.monitor.evaluations() + 30;
    while gw.monitor.evaluations() < flapping {
        gw.fail_next(1);
        assert_eq!(gw.call().await, 502);
        assert_eq!(gw.call().await, 200);
    }

    // Back to health: platform.recovered, once.
    let deadline = Instant::now() + Duration::from_secs(15);
    let recovered = loop {
        assert!(Instant::now() < deadline, "no platform.recovered in 15 s");
        assert_eq!(gw.call().await, 200);
        if let Ok(event) = gw.ops.try_recv() {
            break event;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    fits(&recovered);
    assert_eq!(recovered["type"], "platform.recovered", "{recovered}");
    let r = &recovered["data"];
    assert_eq!(r["threshold"], "error_rate");
    assert_eq!(r["since"], data["since"]);
    assert!(r["observed"].as_f64().unwrap() <= 0.4, "{recovered}");

    // More evaluations of a healthy platform send nothing more: one crossing, one event
    // of each kind, in the outbox as at the target.
    for _ in 0..10 {
        assert_eq!(gw.call().await, 200);
    }
    gw.evaluations(10).await;
    let rows = outbox(&gw.store).await;
    assert_eq!(count(&rows, "platform.degraded"), 1);
    assert_eq!(count(&rows, "platform.recovered"), 1);
    assert!(gw.ops.try_recv().is_err());
    let status = gw.status().await;
    assert_eq!(status["platforms"][0]["tripped"], json!([]), "{status}");
}

/// Unix ms of an RFC 3339 time.
fn ms_of(text: &str) -> i128 {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap();
    t.unix_timestamp_nanos() / 1_000_000
}

#[tokio::test]
async fn inventory_low_fires_once_per_crossing() {
    inventory_low(start().await).await;
}

#[tokio::test]
async fn inventory_low_fires_once_per_crossing_on_postgres() {
    let Some((store, url, schema)) = postgres().await else {
        return;
    };
    inventory_low(start_on(store, tempfile::tempdir().unwrap()).await).await;
    crate::store::drop_schema(&url, &schema).await;
}

async fn inventory_low(mut gw: Gateway) {
    // CUPS-2's threshold is 10 (its own), SHIRT-M's 5 (the gateway's default). Each level is
    // reported by a signed stock.changed webhook.
    let levels = [
        ("CUPS-2", 12, false), // above
        ("CUPS-2", 8, true),   // crosses
        ("CUPS-2", 3, false),  // stays low
        ("CUPS-2", 15, false), // above again: re-armed
        ("CUPS-2", 10, true),  // at the threshold: crosses again
        ("SHIRT-M", 6, false),
        ("SHIRT-M", 5, true),
        ("SHIRT-M", 0, false),
    ];
    for (sku, level, _) in levels {
        let hook = gw.sim.set_stock(sku, level).await.unwrap().unwrap();
        assert_eq!(hook.status, 200, "{hook:?}");
    }
    // What was stored: one inventory.changed per level, one inventory.low per crossing.
    let rows = outbox(&gw.store).await;
    assert_eq!(count(&rows, "inventory.changed"), levels.len());
    let lows: Vec<Value> = rows
        .iter()
        .filter(|r| r.event_type == "inventory.low")
        .map(|r| serde_json::from_str::<Value>(&r.payload).unwrap()["data"].clone())
        .collect();
    let expected: Vec<Value> = levels
        .iter()
        .filter(|(_, _, crosses)| *crosses)
        .map(|(sku, level, _)| {
            let threshold = if *sku == "CUPS-2" { 10 } else { 5 };
            json!({"sku_id": sku, "available": level, "threshold": threshold})
        })
        .collect();
    assert_eq!(lows, expected);
    // And the stock target receives exactly those.
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.len() < levels.len() + expected.len() {
        assert!(Instant::now() < deadline, "received only {received:?}");
        match tokio::time::timeout(Duration::from_millis(100), gw.stock.recv()).await {
            Ok(Some(event)) => {
                fits(&event);
                received.push(event);
            }
            _ => continue,
        }
    }
    let mut got: Vec<Value> = received
        .iter()
        .filter(|e| e["type"] == "inventory.low")
        .map(|e| e["data"].clone())
        .collect();
    got.sort_by_key(|d| (d["sku_id"].to_string(), d["available"].to_string()));
    let mut want = expected.clone();
    want.sort_by_key(|d| (d["sku_id"].to_string(), d["available"].to_string()));
    assert_eq!(got, want);
}

/// Two instances sharing one store: each sees the threshold tripped, one event is sent;
/// it recovers only when neither sees it, or when the one still voting stops reporting.
#[tokio::test]
async fn instances_sharing_a_store_send_one_event_per_crossing() {
    let dir = tempfile::tempdir().unwrap();
    instances_sharing(crate::support::sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn instances_sharing_a_store_send_one_event_per_crossing_on_postgres() {
    let Some((store, url, schema)) = postgres().await else {
        return;
    };
    instances_sharing(store).await;
    crate::store::drop_schema(&url, &schema).await;
}

async fn instances_sharing(store: Store) {
    let (ops_url, _ops) = target().await;
    let gateway = gateway_settings(&format!(
        "targets:\n  ops:\n    url: {ops_url}\n    events: [platform.degraded, platform.recovered]\n\
         monitoring:\n  every: 50ms\n  defaults: {{ window: 10s, hold: 0s, min_calls: 2, error_rate: 0.5 }}\n"
    ));
    let text = "platform: shared\n".to_string();
    let doc = entrepot::config::source::parse(Path::new("shared.yaml"), text).unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
    assert!(compiled.diagnostics.is_empty());
    let plan = Arc::new(ArcSwap::from_pointee(compiled.plan));
    let targets = Arc::new(gateway.targets.clone());
    let instance = || {
        Monitor::new(
            store.clone(),
            plan.clone(),
            targets.clone(),
            gateway.monitoring.clone(),
        )
    };
    let (a, b) = (instance(), instance());
    let report = |m: &Monitor, outcome: Outcome| {
        for _ in 0..4 {
            m.call(&CallSeen {
                platform: "shared",
                operation: "product.get",
                outcome,
                elapsed: Duration::from_millis(5),
            });
        }
    };
    let none = Default::default();
    report(&a, Outcome::TransportError);
    report(&b, Outcome::Timeout);
    assert!(a.evaluate(&none).await.unwrap());
    assert!(
        !b.evaluate(&none).await.unwrap(),
        "b joins the open crossing"
    );
    let tripped = a.tripped().await.unwrap();
    assert_eq!(tripped["shared"][0]["instances"], 2);
    // A recovers (4 failures in 16 calls, under 0.8 × 0.5); B still sees it: nothing is sent.
    report(&a, Outcome::Ok);
    report(&a, Outcome::Ok);
    report(&a, Outcome::Ok);
    assert!(!a.evaluate(&none).await.unwrap());
    assert!(!b.evaluate(&none).await.unwrap());
    let rows = outbox(&store).await;
    assert_eq!(count(&rows, "platform.degraded"), 1);
    assert_eq!(count(&rows, "platform.recovered"), 0);
    // B stops reporting (as if its instance died): once its vote runs out (6 evaluation
    // intervals), A's next evaluation closes the crossing.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "the crossing was never closed");
        report(&a, Outcome::Ok);
        if a.evaluate(&none).await.unwrap() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = outbox(&store).await;
    assert_eq!(count(&rows, "platform.degraded"), 1);
    assert_eq!(count(&rows, "platform.recovered"), 1);
    assert!(a.tripped().await.unwrap().is_empty());
}

#[test]
fn a_bad_gateway_monitoring_block_is_located() {
    let yaml = "monitoring:\n  every: 0ms\n  defaults:\n    window: 5 minutes\n    error_rate: 1.5\n    min_calls: 0\n";
    let doc = entrepot::config::source::parse(Path::new("entrepot.yaml"), yaml.into()).unwrap();
    let problems =
        entrepot::compile::gateway::compile_gateway(doc, Path::new("."), &|_| None).unwrap_err();
    let text = crate::support::render(&problems);
    for (line, what) in [
        (2, "every"),
        (4, "5 minutes"),
        (5, "error_rate"),
        (6, "min_calls"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("entrepot.yaml:{line}:")) && l.contains(what)),
            "{what} at line {line} in:\n{text}"
        );
    }
}

/// Deliveries reporting the same SKU low at once, recorded by the store's concurrent writers
/// (several on PostgreSQL): one crossing, one `inventory.low`.
#[tokio::test]
async fn concurrent_low_levels_of_one_sku_cross_once() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_low_levels(crate::support::sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn concurrent_low_levels_of_one_sku_cross_once_on_postgres() {
    let Some((store, url, schema)) = postgres().await else {
        return;
    };
    concurrent_low_levels(store).await;
    crate::store::drop_schema(&url, &schema).await;
}

async fn concurrent_low_levels(store: Store) {
    use entrepot::store::{InboxOutcome, NewDelivery, NewEvent, StockCheck};
    let delivery = |i: usize| NewDelivery {
        platform: "p".into(),
        route: "/p/stock".into(),
        dedupe_key: Some(format!("d{i}")),
        headers: "{}".into(),
        body: b"{}".to_vec(),
        body_bytes: 2,
        verified: true,
        rejection: None,
        event_type: Some("inventory.changed".into()),
        received_at: 1_000,
        replay: None,
    };
    let check = |i: usize, available: i64| StockCheck {
        flow_id: "stock/p/SKU-1".into(),
        available,
        threshold: 5,
        events: vec![NewEvent {
            event_id: format!("low-{i}"),
            target: "center".into(),
            event_type: "inventory.low".into(),
            payload: "{}".into(),
            idempotency_key: format!("low-{i}"),
            max_attempts: 3,
        }],
    };
    // Above first, then 40 low levels at once.
    let first = store
        .inbox_record_with_stock(&delivery(0), &[], vec![check(0, 9)], 1_000)
        .await
        .unwrap();
    assert!(matches!(first, InboxOutcome::Stored { .. }));
    let writes = (1..=40).map(|i| {
        let store = store.clone();
        let (d, c) = (delivery(i), check(i, i64::try_from(i % 5).unwrap()));
        tokio::spawn(async move { store.inbox_record_with_stock(&d, &[], vec![c], 1_001).await })
    });
    for w in writes.collect::<Vec<_>>() {
        assert!(matches!(w.await.unwrap(), Ok(InboxOutcome::Stored { .. })));
    }
    let rows = outbox(&store).await;
    assert_eq!(count(&rows, "inventory.low"), 1, "{rows:?}");
    let state = store.flow_get("stock/p/SKU-1").await.unwrap().unwrap();
    assert_eq!(state.kind, StockCheck::KIND);
    assert_eq!(state.state["low"], true);
    // Back above, then low again: a second crossing.
    store
        .inbox_record_with_stock(&delivery(100), &[], vec![check(100, 6)], 1_002)
        .await
        .unwrap();
    store
        .inbox_record_with_stock(&delivery(101), &[], vec![check(101, 5)], 1_003)
        .await
        .unwrap();
    assert_eq!(count(&outbox(&store).await, "inventory.low"), 2);
}

/// Checks a monitoring event: its type, platform, threshold, limit and unit, the idempotency
/// key of a crossing starting at its `since`, and that it fits the canonical schemas; returns
/// its observed value.
fn check(event: &Value, kind: &str, threshold: &str, limit: f64, unit: &str) -> f64 {
    fits(event);
    assert_eq!(event["type"], kind, "{event}");
    assert_eq!(event["platform"], PLATFORM);
    let data = &event["data"];
    assert_eq!(data["threshold"], threshold, "{event}");
    assert_eq!(data["limit"].as_f64(), Some(limit), "{event}");
    assert_eq!(data["unit"], unit, "{event}");
    assert_eq!(
        event["idempotency_key"],
        format!(
            "{PLATFORM}:{kind}:{threshold}:{}",
            ms_of(data["since"].as_str().unwrap())
        )
    );
    data["observed"].as_f64().unwrap()
}

/// The status shows `threshold` tripped (alone), since the degraded event's `since`.
async fn shows_tripped(gw: &Gateway, degraded: &Value) {
    let status = gw.status().await;
    let tripped = &status["platforms"][0]["tripped"];
    assert_eq!(tripped.as_array().unwrap().len(), 1, "{status}");
    assert_eq!(tripped[0]["threshold"], degraded["data"]["threshold"]);
    assert_eq!(tripped[0]["limit"], degraded["data"]["limit"]);
    assert_eq!(tripped[0]["since"], degraded["data"]["since"]);
    assert_eq!(tripped[0]["instances"], 1);
}

#[tokio::test]
async fn slow_answers_degrade_latency_once_then_fast_ones_recover_it() {
    let mut gw = start_with(Setup {
        monitoring: "\nmonitoring:\n  latency_p95: 100ms\n",
        ..Setup::default()
    })
    .await;

    // Every inventory answer held back 200 ms, four calls at a time (the window needs 4).
    gw.slow_next(1_000_000, 200);
    let slowest = std::sync::Mutex::new(Duration::ZERO);
    let degraded = gw
        .next_ops_event("platform.degraded", async |gw| {
            let timed = || async {
                let started = Instant::now();
                assert_eq!(gw.call().await, 200);
                let took = started.elapsed();
                assert!(took >= Duration::from_millis(200), "{took:?}");
                let mut s = slowest.lock().unwrap();
                *s = (*s).max(took);
            };
            tokio::join!(timed(), timed(), timed(), timed());
        })
        .await;
    let observed = check(
        &degraded,
        "platform.degraded",
        "latency_p95",
        100.0,
        "milliseconds",
    );
    // Every call took 200 ms or more, and the p95 is a bucket bound at most 20% above the
    // slowest call the test timed.
    let slowest = slowest.lock().unwrap().as_secs_f64() * 1000.0;
    assert!(
        (200.0..=slowest * 1.2).contains(&observed),
        "{observed} ms, slowest call {slowest} ms"
    );
    shows_tripped(&gw, &degraded).await;

    // Fast answers again: once the slow calls have left the window, p95 is under 80 ms
    // (0.8 × 100 ms) and the platform recovers.
    gw.sim.clear_faults();
    let recovered = gw
        .next_ops_event("platform.recovered", async |gw| {
            assert_eq!(gw.call().await, 200);
        })
        .await;
    let observed = check(
        &recovered,
        "platform.recovered",
        "latency_p95",
        100.0,
        "milliseconds",
    );
    assert!(observed <= 80.0, "{recovered}");
    assert_eq!(recovered["data"]["since"], degraded["data"]["since"]);
    for _ in 0..10 {
        assert_eq!(gw.call().await, 200);
    }
    gw.one_crossing_in_all().await;
}

#[tokio::test]
async fn a_breaker_held_open_degrades_once_then_its_closing_recovers() {
    // The breaker opens when half of at least 2 calls fail, and lets a trial through 1 s
    // later; the threshold: open for more than 200 ms (held 300 ms).
    let mut gw = start_with(Setup {
        monitoring: "\nmonitoring:\n  breaker_open: 200ms\n",
        transport: "  retries: 0\n  breaker: { failure_rate: 0.5, min_calls: 2, window: 30s, cool_down: 1s }\n",
        ..Setup::default()
    })
    .await;
    let cool_down = Duration::from_secs(1);

    // Two failing calls open it.
    gw.fail_next(2);
    assert_eq!(gw.call().await, 502);
    let opening = Instant::now();
    assert_eq!(gw.call().await, 502);
    // Open: the next call is not sent.
    let sent = gw.sim.requests().len();
    assert_eq!(gw.call().await, 503);
    assert_eq!(
        gw.sim.requests().len(),
        sent,
        "an open breaker sends nothing"
    );

    // Nothing else is called: it stays open until a trial succeeds.
    let degraded = gw.next_ops_event("platform.degraded", async |_| {}).await;
    let seen_after = opening.elapsed().as_secs_f64() * 1000.0;
    let observed = check(
        &degraded,
        "platform.degraded",
        "breaker_open",
        200.0,
        "milliseconds",
    );
    // Above 200 ms, then held 300 ms more: at least 500 ms open when it tripped, and no more
    // than the time since the second failing call began.
    assert!(
        (500.0..=seen_after).contains(&observed),
        "{observed} ms open, {seen_after} ms since it opened"
    );
    shows_tripped(&gw, &degraded).await;

    // The platform is healthy again: calls fail fast until the cool-down is over, then the
    // trial succeeds and closes the breaker.
    gw.sim.clear_faults();
    let mut first_ok = None;
    let recovered = gw
        .next_ops_event("platform.recovered", async |gw| match gw.call().await {
            200 => {
                first_ok.get_or_insert_with(Instant::now);
            }
            status => assert!(first_ok.is_none() && status == 503, "{status}"),
        })
        .await;
    let first_ok = first_ok.expect("the trial closed the breaker");
    assert!(first_ok.duration_since(opening) >= cool_down);
    let observed = check(
        &recovered,
        "platform.recovered",
        "breaker_open",
        200.0,
        "milliseconds",
    );
    // Closed: open for no time at all.
    assert_eq!(observed, 0.0, "{recovered}");
    assert_eq!(recovered["data"]["since"], degraded["data"]["since"]);
    gw.one_crossing_in_all().await;
}

#[tokio::test]
async fn refused_callbacks_degrade_once_then_good_ones_recover() {
    let mut gw = start_with(Setup {
        monitoring: "\nmonitoring:\n  callback_refusal_rate: 0.5\n",
        ..Setup::default()
    })
    .await;

    // Webhooks unsigned or with a garbled signature, until the operations target hears of it.
    let mut n = 0u32;
    let degraded = gw
        .next_ops_event("platform.degraded", async |gw| {
            n += 1;
            let signature = n.is_multiple_of(2).then_some("v1,bm90IGEgc2lnbmF0dXJl");
            let status = gw.webhook(&format!("bad_{n}"), signature).await;
            assert!((400..500).contains(&status), "{status}");
        })
        .await;
    // Every delivery of the window was refused.
    let observed = check(
        &degraded,
        "platform.degraded",
        "callback_refusal_rate",
        0.5,
        "fraction",
    );
    assert_eq!(observed, 1.0);
    shows_tripped(&gw, &degraded).await;

    // Webhooks the simulator signs: accepted, until it recovers (at most 0.4 refused).
    let mut level = 50;
    let recovered = gw
        .next_ops_event("platform.recovered", async |gw| {
            level += 1;
            let hook = gw.sim.set_stock("CUPS-2", level).await.unwrap().unwrap();
            assert_eq!(hook.status, 200, "{hook:?}");
        })
        .await;
    let observed = check(
        &recovered,
        "platform.recovered",
        "callback_refusal_rate",
        0.5,
        "fraction",
    );
    assert!(observed <= 0.4, "{recovered}");
    assert_eq!(recovered["data"]["since"], degraded["data"]["since"]);
    gw.one_crossing_in_all().await;
    // Refused deliveries stored no event; each accepted one stored its inventory.changed.
    let rows = outbox(&gw.store).await;
    assert_eq!(
        count(&rows, "inventory.changed"),
        usize::try_from(level - 50).unwrap()
    );
}

#[tokio::test]
async fn dead_letters_above_the_count_degrade_once_and_replaying_them_recovers() {
    // A target of the platform's stock events refusing them, one attempt each; more than one
    // dead letter is too many.
    let mut gw = start_with(Setup {
        monitoring: "\nmonitoring:\n  dead_letters: 1\n",
        targets: "  refusing:\n    url: REFUSING_URL\n    events: [inventory.changed]\n    max_attempts: 1\n",
        ..Setup::default()
    })
    .await;
    let dead = |rows: &[OutboxRow]| rows.iter().filter(|r| r.dead).count();
    let until_dead = |n: usize| {
        let store = gw.store.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while dead(&outbox(&store).await) < n {
                assert!(Instant::now() < deadline, "{n} dead letters never came");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };

    // One dead letter: the limit, not above it. Nothing is sent, however long it stays.
    let hook = gw.sim.set_stock("CUPS-2", 50).await.unwrap().unwrap();
    assert_eq!(hook.status, 200);
    until_dead(1).await;
    gw.evaluations(12).await; // 600 ms: twice the hold
    assert_eq!(count(&outbox(&gw.store).await, "platform.degraded"), 0);
    assert!(gw.ops.try_recv().is_err());

    // A second one: above the limit.
    let hook = gw.sim.set_stock("CUPS-2", 51).await.unwrap().unwrap();
    assert_eq!(hook.status, 200);
    until_dead(2).await;
    let degraded = gw.next_ops_event("platform.degraded", async |_| {}).await;
    let observed = check(&degraded, "platform.degraded", "dead_letters", 1.0, "count");
    assert_eq!(observed, 2.0);
    shows_tripped(&gw, &degraded).await;
    // The stock target had both events all along; the monitoring events are not counted.
    let rows = outbox(&gw.store).await;
    assert_eq!(dead(&rows), 2);
    assert!(
        rows.iter()
            .filter(|r| r.dead)
            .all(|r| r.target == "refusing")
    );

    // The target is fixed and the dead letters replayed: delivered, none left.
    gw.refusing.store(true, Ordering::SeqCst);
    let replayed: Value = gw
        .http
        .post(format!("{}/admin/v1/dead-letters/replay", gw.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(replayed["replayed"], 2);
    let recovered = gw.next_ops_event("platform.recovered", async |_| {}).await;
    let observed = check(
        &recovered,
        "platform.recovered",
        "dead_letters",
        1.0,
        "count",
    );
    assert_eq!(observed, 0.0);
    assert_eq!(recovered["data"]["since"], degraded["data"]["since"]);
    let rows = outbox(&gw.store).await;
    assert_eq!(dead(&rows), 0);
    assert!(
        rows.iter()
            .filter(|r| r.target == "refusing")
            .all(|r| r.delivered_at.is_some())
    );
    gw.one_crossing_in_all().await;
}
