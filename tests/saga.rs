//! The order saga (`/v1/orders/{order_id}/...`) against both sample platforms and their
//! simulators: the answers are checked against the simulators' own order books and request
//! logs, written by hand and independently of the runtime.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use channel_sim::{Catalog, Fault as CFault, FaultKind as CKind};
use entrepot::compile::gateway::OrderSettings;
use entrepot::credentials::CredentialSets;
use entrepot::dispatch::{DispatchOptions, Dispatcher};
use entrepot::engine::Engine;
use entrepot::flows::saga::Orders;
use entrepot::server::AppState;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::root;

pub(crate) const APP_KEY: &str = "saga-app-key";
pub(crate) const APP_SECRET: &str = "saga-app-secret";
pub(crate) const CLIENT_ID: &str = "saga-client";
pub(crate) const CLIENT_SECRET: &str = "saga-client-secret";
const WEBHOOK_SECRET: &str = "whsec_cmVzdC1zaW0td2ViaG9vay1zZWNyZXQtZm9yLXRlc3Rz";

/// The saga's settings in these tests: a 3 s creation deadline, quick retries.
const DEADLINE: Duration = Duration::from_secs(3);

pub(crate) struct Gateway {
    pub(crate) url: String,
    pub(crate) yx: channel_sim::Simulator,
    pub(crate) acme: rest_sim::Simulator,
    http: reqwest::Client,
    events: mpsc::UnboundedReceiver<Value>,
    /// Holds the store (`gw.db`).
    pub(crate) dir: tempfile::TempDir,
}

async fn receive(State(seen): State<mpsc::UnboundedSender<Value>>, body: String) -> StatusCode {
    let _ = seen.send(serde_json::from_str(&body).unwrap_or(Value::Null));
    StatusCode::OK
}

/// A platform file with its whole-call timeout shortened to 1 s, so that a held-back answer
/// times out in the test.
pub(crate) fn platform_text(file: &str) -> String {
    let text = std::fs::read_to_string(root().join("platforms").join(file)).unwrap();
    let text = text
        .replace("  timeout: 5s\n", "  timeout: 1s\n")
        .replace("  timeout: 10s\n", "  timeout: 1s\n");
    assert!(
        text.contains("  timeout: 1s\n"),
        "{file} has a transport timeout"
    );
    text
}

fn platform(file: &str) -> entrepot::config::source::SourceDoc {
    entrepot::config::source::parse(Path::new(&format!("platforms/{file}")), platform_text(file))
        .unwrap()
}

pub(crate) async fn start() -> Gateway {
    start_on(None).await
}

/// The gateway on `store` (default: a fresh SQLite store).
pub(crate) async fn start_on(store: Option<entrepot::store::Store>) -> Gateway {
    start_with(store, None).await
}

/// The gateway; `order_window`: the REST simulator lists orders only over windows at most
/// this wide, and its platform file declares such windows on order.list.
pub(crate) async fn start_with(
    store: Option<entrepot::store::Store>,
    order_window: Option<Duration>,
) -> Gateway {
    let yx = channel_sim::Simulator::start(channel_sim::SimConfig::new(
        APP_KEY,
        APP_SECRET,
        Catalog::sample(),
    ))
    .await
    .unwrap();
    let mut acme_config = rest_sim::SimConfig::new(CLIENT_ID, CLIENT_SECRET, WEBHOOK_SECRET);
    acme_config.order_window = order_window;
    let acme = rest_sim::Simulator::start(acme_config).await.unwrap();
    let (yx_url, acme_url) = (yx.base_url(), acme.base_url());
    let env = move |name: &str| match name {
        "YANXUAN_BASE_URL" => Some(yx_url.clone()),
        "ACME_REST_BASE_URL" => Some(acme_url.clone()),
        _ => None,
    };
    let mut acme_doc = platform_text("acme-rest.yaml");
    if let Some(w) = order_window {
        let at = "  order.list:\n";
        assert!(acme_doc.contains(at));
        let windows = format!("{at}    windows: {{ max: {}s }}\n", w.as_secs());
        acme_doc = acme_doc.replace(at, &windows);
    }
    let acme_doc =
        entrepot::config::source::parse(Path::new("platforms/acme-rest.yaml"), acme_doc).unwrap();
    let docs = vec![platform("yanxuan.yaml"), acme_doc];
    let compiled = entrepot::compile::compile_docs(docs, &env);
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );

    let (tx, events) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route("/events", post(receive))
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let gateway = format!(
        "targets:\n  order-center:\n    url: {target_url}\n    events: [order.cancelled, order.shipped]\n"
    );
    let targets = crate::support::gateway_targets(gateway);

    let dir = tempfile::tempdir().unwrap();
    let store = match store {
        Some(s) => s,
        None => crate::support::sqlite_store(&dir).await,
    };
    let creds = crate::support::sample_credentials(
        (APP_KEY, APP_SECRET),
        (CLIENT_ID, CLIENT_SECRET, WEBHOOK_SECRET),
    );
    // The saga's counters reach /metrics through the engine's observer, as in `serve`.
    let metrics = Arc::new(entrepot::metrics::Metrics::new());
    let observer = entrepot::observe::Observer::new(vec![metrics.clone()]);
    let engine = Arc::new(Engine::new(store.clone(), creds, |_| None).with_observer(observer));
    let dispatcher = Arc::new(Dispatcher::new(
        store.clone(),
        &targets,
        DispatchOptions {
            backoff: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            poll: Duration::from_millis(20),
            ..Default::default()
        },
        CredentialSets::new(),
        |_| None,
    ));
    let plan = Arc::new(ArcSwap::from_pointee(compiled.plan));
    let targets = Arc::new(targets);
    let orders = Arc::new(Orders::new(
        engine.clone(),
        plan.clone(),
        targets.clone(),
        Some(dispatcher.notify.clone()),
        OrderSettings {
            create_deadline: DEADLINE,
            retry: Duration::from_millis(100),
            retry_max: Duration::from_millis(300),
            lease: Duration::from_secs(5),
            poll: Duration::from_millis(100),
        },
    ));
    tokio::spawn(orders.clone().run(std::future::pending()));
    let state = AppState {
        plan,
        store: Some(store),
        engine: Some(engine),
        targets,
        notify: Some(dispatcher.notify.clone()),
        orders: Some(orders),
        metrics,
        ..Default::default()
    };
    tokio::spawn(dispatcher.run(std::future::pending()));
    let addr = crate::support::serve_on_loopback(state).await;
    Gateway {
        url: format!("http://{addr}"),
        yx,
        acme,
        http: reqwest::Client::new(),
        events,
        dir,
    }
}

impl Gateway {
    pub(crate) async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Lists a platform's products through the gateway, so its SKUs get internal ids; returns
    /// the internal id of the platform's SKU `sku`.
    pub(crate) async fn sku(&self, platform: &str, sku: &str) -> String {
        let (status, body) = self
            .post(
                &format!("/v1/platforms/{platform}/operations/product.list"),
                &json!({}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = self
            .get(&format!("/v1/mappings/{platform}/sku?platform_id={sku}"))
            .await;
        assert_eq!(status, 200, "{body}");
        body["internal_id"].as_str().unwrap().to_string()
    }

    /// Polls the saga until `done` says so (at most `within`).
    pub(crate) async fn saga_until(
        &self,
        order: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let end = Instant::now() + within;
        loop {
            let (status, saga) = self.get(&format!("/v1/orders/{order}")).await;
            if status == 200 && done(&saga) {
                return saga;
            }
            assert!(
                Instant::now() < end,
                "the saga did not get there in {within:?}: {saga}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends the channel platform's signed notification `method` with `params` to its
    /// callback route, as the platform would; it must be acknowledged.
    async fn notify(&self, method: &str, at: time::OffsetDateTime, params: &[(&str, &str)]) {
        let body = channel_sim::signed_form(APP_KEY, APP_SECRET, method, at, params);
        let r = self
            .http
            .post(format!("{}/callbacks/yanxuan/notify", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{method}");
    }

    async fn next_event(&mut self, within: Duration) -> Value {
        tokio::time::timeout(within, self.events.recv())
            .await
            .expect("an event for the order center")
            .unwrap()
    }
}

fn address() -> Value {
    json!({"name": "Li Lei", "phone": "13800000000", "province": "Zhejiang", "city": "Hangzhou",
           "district": "Xihu", "detail": "1 Wensan Road", "postal_code": "310000"})
}

/// An order of `lines` (`(internal sku, quantity, unit price)`) in `currency`, freight 0.
pub(crate) fn order(id: &str, lines: &[(&str, i64, i64)], currency: &str) -> Value {
    let total: i64 = lines.iter().map(|(_, q, p)| q * p).sum();
    json!({
        "order_id": id,
        "lines": lines.iter().map(|(s, q, p)| json!({"sku_id": s, "quantity": q, "unit_price": {"amount": p, "currency": currency}})).collect::<Vec<_>>(),
        "address": address(),
        "total": {"amount": total, "currency": currency},
    })
}

fn yx_calls(gw: &Gateway, method: &str) -> usize {
    gw.yx
        .requests()
        .iter()
        .filter(|r| r.method == method)
        .count()
}

#[tokio::test]
async fn check_answers_per_line_from_each_platforms_stock() {
    let gw = start().await;
    let sofa = gw.sku("yanxuan", "100101").await; // 20 in stock in the simulator
    let quilt = gw.sku("yanxuan", "100203").await; // 3
    let cups = gw.sku("acme-rest", "CUPS-2").await; // 40
    let body = json!({"lines": [
        {"sku_id": sofa, "quantity": 2},
        {"sku_id": quilt, "quantity": 4},
        {"sku_id": cups, "quantity": 40},
        {"sku_id": "sku_nobody_has", "quantity": 1},
    ]});
    let (status, answer) = gw.post("/v1/orders/M-CHECK/check", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["fulfillable"], false);
    let lines = answer["lines"].as_array().unwrap();
    assert_eq!(lines[0]["platform"], "yanxuan");
    assert_eq!(lines[0]["available"], gw.yx.inventory("100101").unwrap());
    assert_eq!(lines[0]["fulfillable"], true);
    assert_eq!(lines[1]["available"], gw.yx.inventory("100203").unwrap());
    assert_eq!(lines[1]["fulfillable"], false, "{answer}");
    assert_eq!(lines[2]["platform"], "acme-rest");
    assert_eq!(lines[2]["available"], 40);
    assert_eq!(lines[2]["fulfillable"], true);
    assert_eq!(lines[3]["fulfillable"], false);
    assert!(lines[3]["reason"].as_str().unwrap().contains("no platform"));
    // One inventory call per platform, and nothing was created or reserved.
    assert_eq!(yx_calls(&gw, "yanxuan.item.inventory.get"), 1);
    assert!(gw.yx.orders().is_empty() && gw.acme.orders().is_empty());
    assert_eq!(gw.yx.inventory("100101"), Some(20));
    // Bad input is refused with words, not a panic.
    for bad in [
        json!({}),
        json!({"lines": []}),
        json!({"lines": [{"sku_id": sofa, "quantity": 0}]}),
        json!([1]),
    ] {
        let (status, problem) = gw.post("/v1/orders/M-CHECK/check", &bad).await;
        assert_eq!(status, 400, "{bad}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("lines"),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn a_timed_out_creation_on_a_platform_without_idempotency_creates_one_order() {
    timed_out_creation_without_idempotency(start().await).await;
}

/// The same two sagas on PostgreSQL (flows rows, leases and due times, id mappings and the
/// outbox), when it is configured.
#[tokio::test]
async fn sagas_on_postgresql() {
    let Some(url) = crate::store::postgres_url(false) else {
        return;
    };
    for run in 0..2 {
        let schema = crate::store::fresh_schema();
        let store = crate::store::postgres(&url, &schema).await;
        let gw = start_on(Some(store.clone())).await;
        match run {
            0 => timed_out_creation_without_idempotency(gw).await,
            _ => refused_part_cancels_the_created_one(gw).await,
        }
        store.close().await;
        crate::store::drop_schema(&url, &schema).await;
    }
}

async fn timed_out_creation_without_idempotency(gw: Gateway) {
    let sofa = gw.sku("yanxuan", "100101").await;
    // The first creation is carried out by the platform, but its answer comes after the
    // gateway's 1 s deadline.
    gw.yx.push_fault(
        CFault::new(CKind::Slow)
            .method("yanxuan.order.paid.create")
            .delay_ms(1500),
    );
    let (status, accepted) = gw
        .post(
            "/v1/orders/M-YX-1/paid",
            &order("M-YX-1", &[(&sofa, 2, 29900)], "CNY"),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["parts"][0]["platform"], "yanxuan");
    let saga = gw
        .saga_until("M-YX-1", Duration::from_secs(20), |s| {
            s["state"] == "created"
        })
        .await;
    // The simulator's order book: one order, and one creation request only — the retry asked
    // `order.get` first and found it.
    let orders = gw.yx.orders();
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0]["orderId"], "M-YX-1");
    assert_eq!(yx_calls(&gw, "yanxuan.order.paid.create"), 1);
    assert!(yx_calls(&gw, "yanxuan.order.paid.get") >= 1);
    assert_eq!(gw.yx.inventory("100101"), Some(18));
    let part = &saga["parts"][0];
    assert_eq!(part["state"], "created");
    assert_eq!(part["platform_order_id"], "M-YX-1");
    assert_eq!(part["create_attempts"], 2);
    let steps: Vec<(String, String)> = saga["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().into(),
                s["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    let has = |step: &str, outcome: &str| steps.iter().any(|(s, o)| s == step && o == outcome);
    assert!(
        has("paid", "recorded") && has("order.create", "started"),
        "{steps:?}"
    );
    assert!(
        has("order.create", "retry") && has("order.get", "found"),
        "{steps:?}"
    );
    assert!(
        saga["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["at"].as_str().is_some_and(|t| t.ends_with('Z')))
    );
    // Paying the same order again changes nothing; other content is a conflict.
    let (status, _) = gw
        .post(
            "/v1/orders/M-YX-1/paid",
            &order("M-YX-1", &[(&sofa, 2, 29900)], "CNY"),
        )
        .await;
    assert_eq!(status, 202);
    let (status, problem) = gw
        .post(
            "/v1/orders/M-YX-1/paid",
            &order("M-YX-1", &[(&sofa, 3, 29900)], "CNY"),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(yx_calls(&gw, "yanxuan.order.paid.create"), 1);

    // The platform ships it: the callback moves the saga on and flows to the order center.
    let mut gw = gw;
    let now = time::OffsetDateTime::now_utc();
    let stamp = channel_sim::format_timestamp(now);
    gw.notify(
        "yanxuan.notification.order.delivered",
        now,
        &[
            ("notifyId", "ship-M-YX-1"),
            ("orderId", "M-YX-1"),
            ("expressCompany", "SF"),
            ("expressNo", "SF100"),
            ("shipTime", &stamp),
        ],
    )
    .await;
    let event = gw.next_event(Duration::from_secs(10)).await;
    assert_eq!(event["type"], "order.shipped");
    assert_eq!(event["data"]["order_id"], "M-YX-1");
    let saga = gw
        .saga_until("M-YX-1", Duration::from_secs(5), |s| {
            s["parts"][0]["status"] == "shipped"
        })
        .await;
    assert!(
        saga["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "event order.shipped")
    );
}

/// The platform cancels a created order on its own: its callback cancels the part and the
/// saga (no part stands), with the platform's reason, and flows on to the order center.
#[tokio::test]
async fn a_cancel_by_the_platform_cancels_the_saga() {
    let mut gw = start().await;
    let sofa = gw.sku("yanxuan", "100101").await;
    let (status, _) = gw
        .post(
            "/v1/orders/M-YX-C/paid",
            &order("M-YX-C", &[(&sofa, 1, 29900)], "CNY"),
        )
        .await;
    assert_eq!(status, 202);
    gw.saga_until("M-YX-C", Duration::from_secs(20), |s| {
        s["state"] == "created"
    })
    .await;
    gw.notify(
        "yanxuan.notification.order.cancel",
        time::OffsetDateTime::now_utc(),
        &[
            ("notifyId", "cancel-M-YX-C"),
            ("orderId", "M-YX-C"),
            ("reason", "out of stock at the warehouse"),
        ],
    )
    .await;
    let event = gw.next_event(Duration::from_secs(10)).await;
    assert_eq!(event["type"], "order.cancelled");
    assert_eq!(event["data"]["order_id"], "M-YX-C");
    let saga = gw
        .saga_until("M-YX-C", Duration::from_secs(5), |s| {
            s["state"] == "cancelled"
        })
        .await;
    assert_eq!(saga["parts"][0]["state"], "cancelled", "{saga}");
    assert_eq!(
        saga["reason"], "cancelled by yanxuan: out of stock at the warehouse",
        "{saga}"
    );
    // The gateway sent no cancel of its own: the platform had already cancelled.
    assert_eq!(yx_calls(&gw, "yanxuan.order.paid.cancel"), 0);
}

#[tokio::test]
async fn a_timed_out_creation_on_an_idempotent_platform_creates_one_order() {
    let gw = start().await;
    let cups = gw.sku("acme-rest", "CUPS-2").await;
    gw.acme.push_fault(rest_sim::Fault {
        kind: rest_sim::FaultKind::Slow,
        route: Some("POST /v2/orders".into()),
        retry_after: 1,
        times: 1,
        delay_ms: 1500,
    });
    let (status, accepted) = gw
        .post(
            "/v1/orders/M-AC-1/paid",
            &order("M-AC-1", &[(&cups, 2, 1999)], "EUR"),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let saga = gw
        .saga_until("M-AC-1", Duration::from_secs(20), |s| {
            s["state"] == "created"
        })
        .await;
    let orders = gw.acme.orders();
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0]["reference"], "M-AC-1");
    // Sent again with the same key: the simulator answered its first order.
    let creates: Vec<_> = gw
        .acme
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v2/orders")
        .collect();
    assert!(creates.len() >= 2, "{creates:?}");
    assert!(
        creates
            .iter()
            .all(|r| r.idempotency_key.as_deref() == Some("M-AC-1"))
    );
    assert_eq!(saga["parts"][0]["platform_order_id"], orders[0]["id"]);
    assert_eq!(saga["parts"][0]["status"], "paid");
}

#[tokio::test]
async fn a_refused_part_cancels_the_created_one_and_tells_the_order_center() {
    refused_part_cancels_the_created_one(start().await).await;
}

async fn refused_part_cancels_the_created_one(mut gw: Gateway) {
    let sofa = gw.sku("yanxuan", "100101").await;
    let shirt = gw.sku("acme-rest", "SHIRT-L").await; // 3 in stock: 5 is refused
    // The first two cancels fail: the saga keeps trying, and shows it.
    gw.yx.push_fault(
        CFault::business("500", "cancel service busy")
            .method("yanxuan.order.paid.cancel")
            .times(2),
    );
    let paid = Instant::now();
    let (status, _) = gw
        .post(
            "/v1/orders/M-MIX-1/paid",
            &order("M-MIX-1", &[(&sofa, 1, 4990), (&shirt, 5, 4990)], "EUR"),
        )
        .await;
    assert_eq!(status, 202);
    let event = gw.next_event(DEADLINE).await;
    assert!(
        paid.elapsed() < DEADLINE,
        "reported after {:?}",
        paid.elapsed()
    );
    assert_eq!(event["type"], "order.cancelled");
    assert_eq!(event["data"]["order_id"], "M-MIX-1");
    let reason = event["data"]["reason"].as_str().unwrap();
    assert!(reason.contains("acme-rest refused the order"), "{reason}");
    assert!(
        crate::support::canonical_problems("events/envelope.json", &event).is_empty(),
        "{event}"
    );
    let saga = gw
        .saga_until("M-MIX-1", Duration::from_secs(20), |s| {
            s["state"] == "cancelled"
        })
        .await;
    // The simulators' books: the yanxuan order exists and is cancelled, acme has none.
    let yx = gw.yx.orders();
    assert_eq!(yx.len(), 1);
    assert_eq!(yx[0]["orderStatus"], "CANCELLED");
    assert_eq!(gw.yx.inventory("100101"), Some(20), "stock released");
    assert!(gw.acme.orders().is_empty());
    let parts = saga["parts"].as_array().unwrap();
    let yx_part = parts.iter().find(|p| p["platform"] == "yanxuan").unwrap();
    assert_eq!(yx_part["state"], "cancelled");
    assert_eq!(yx_part["cancel_attempts"], 3);
    let acme_part = parts.iter().find(|p| p["platform"] == "acme-rest").unwrap();
    assert_eq!(acme_part["state"], "failed");
    let failed_cancels = saga["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == "order.cancel" && s["outcome"] == "failed")
        .count();
    assert_eq!(failed_cancels, 2);
    let metrics = reqwest::get(format!("{}/metrics", gw.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("entrepot_order_cancel_failures_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("entrepot_order_sagas_total{outcome=\"cancelled\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_part_not_created_by_the_deadline_is_compensated_within_it() {
    let mut gw = start().await;
    let sofa = gw.sku("yanxuan", "100102").await;
    let cups = gw.sku("acme-rest", "CUPS-2").await;
    // ACME's order endpoint is down for good.
    gw.acme.push_fault(rest_sim::Fault {
        kind: rest_sim::FaultKind::ServerError,
        route: Some("POST /v2/orders".into()),
        retry_after: 1,
        times: 1000,
        delay_ms: 0,
    });
    let paid = Instant::now();
    let (status, _) = gw
        .post(
            "/v1/orders/M-LATE-1/paid",
            &order("M-LATE-1", &[(&sofa, 1, 1000), (&cups, 1, 1999)], "EUR"),
        )
        .await;
    assert_eq!(status, 202);
    // Reported once the deadline passed, and not long after it (one retry round).
    let event = gw.next_event(DEADLINE * 3).await;
    let took = paid.elapsed();
    assert!(
        took >= DEADLINE && took < DEADLINE + Duration::from_secs(2),
        "reported after {took:?}"
    );
    assert_eq!(event["type"], "order.cancelled");
    let reason = event["data"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("deadline") && reason.contains("acme-rest"),
        "{reason}"
    );
    let yx = gw.yx.orders();
    assert_eq!(yx.len(), 1);
    assert_eq!(yx[0]["orderStatus"], "CANCELLED");
    assert!(gw.acme.orders().is_empty());
    let (_, saga) = gw.get("/v1/orders/M-LATE-1").await;
    assert_eq!(
        saga["state"], "compensating",
        "the ACME part is still being settled: {saga}"
    );
}

#[tokio::test]
async fn paid_refuses_what_it_cannot_record() {
    let gw = start().await;
    let sofa = gw.sku("yanxuan", "100101").await;
    let (status, p) = gw
        .post("/v1/orders/M-BAD/paid", &json!({"lines": []}))
        .await;
    assert_eq!(status, 400, "{p}");
    let (status, p) = gw
        .post(
            "/v1/orders/M-BAD/paid",
            &order("M-OTHER", &[(&sofa, 1, 29900)], "CNY"),
        )
        .await;
    assert_eq!(status, 400, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("order id of the URL")
    );
    let (status, p) = gw
        .post(
            "/v1/orders/M-BAD/paid",
            &order("M-BAD", &[("sku_nobody_has", 1, 100)], "CNY"),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    let long = "x".repeat(129);
    let (status, _) = gw.get(&format!("/v1/orders/{long}")).await;
    assert_eq!(status, 400);
    let (status, p) = gw.get("/v1/orders/M-NEVER").await;
    assert_eq!(status, 404);
    // The problem speaks of the order, not of platforms or operations.
    assert_eq!(p["title"], "Not found", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("M-NEVER"), "{p}");
    let (status, _) = gw.get("/v1/orders/M-BAD").await;
    assert_eq!(status, 404, "nothing was recorded");
    assert!(gw.yx.orders().is_empty());
}

/// Starts the gateway binary with `YANXUAN_BASE_URL` set; returns the child and its address.
fn spawn_gateway(config: &Path, yanxuan: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_entrepot"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env("YANXUAN_BASE_URL", yanxuan)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("addr=").nth(1) {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the gateway reports its address");
    (child, addr)
}

async fn saga_of(http: &reqwest::Client, addr: &str, order: &str) -> Value {
    let r = http
        .get(format!("http://{addr}/v1/orders/{order}"))
        .send()
        .await
        .unwrap();
    r.json().await.unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_gateway_killed_between_saga_steps_finishes_the_saga_after_restart() {
    let sim = channel_sim::Simulator::start(channel_sim::SimConfig::new(
        APP_KEY,
        APP_SECRET,
        Catalog::sample(),
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let platforms = dir.path().join("platforms");
    std::fs::create_dir(&platforms).unwrap();
    std::fs::write(
        platforms.join("yanxuan.yaml"),
        platform_text("yanxuan.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("credentials.yaml"),
        format!("yanxuan:\n  app_key: {APP_KEY}\n  app_secret: {APP_SECRET}\n"),
    )
    .unwrap();
    let config = dir.path().join("entrepot.yaml");
    std::fs::write(
        &config,
        format!(
            "store: {{ url: \"sqlite://{}/gw.db\" }}\nplatforms_dir: platforms\ncredentials_file: credentials.yaml\n\
             orders: {{ create_deadline: 60s, retry: 100ms, retry_max: 300ms, lease: 1s, poll: 100ms }}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let http = reqwest::Client::new();
    let (mut child, addr) = spawn_gateway(&config, &sim.base_url());
    let r = http
        .post(format!(
            "http://{addr}/v1/platforms/yanxuan/operations/product.list"
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mapping: Value = http
        .get(format!(
            "http://{addr}/v1/mappings/yanxuan/sku?platform_id=100201"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let quilt = mapping["internal_id"].as_str().unwrap().to_string();
    // The platform creates the order at once but answers only after 30 s: the gateway is
    // killed while it waits, after recording the step and before recording its outcome.
    sim.push_fault(
        CFault::new(CKind::Slow)
            .method("yanxuan.order.paid.create")
            .delay_ms(30_000),
    );
    let r = http
        .post(format!("http://{addr}/v1/orders/M-KILL-1/paid"))
        .json(&order("M-KILL-1", &[(&quilt, 1, 39900)], "CNY"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let end = Instant::now() + Duration::from_secs(20);
    while sim.order("M-KILL-1").is_none() {
        assert!(
            Instant::now() < end,
            "the platform never received the order"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let saga = saga_of(&http, &addr, "M-KILL-1").await;
    assert_eq!(saga["parts"][0]["state"], "creating", "{saga}");
    assert_eq!(saga["parts"][0]["create_attempts"], 1, "{saga}");
    child.kill().unwrap();
    child.wait().unwrap();

    // The store holds the step, and the saga is unfinished.
    let store = entrepot::store::Store::open(&entrepot::store::StoreOptions {
        url: format!("sqlite://{}/gw.db", dir.path().display()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        store
            .flows_unfinished(entrepot::flows::saga::KIND)
            .await
            .unwrap(),
        1
    );
    store.close().await;

    let (mut child, addr) = spawn_gateway(&config, &sim.base_url());
    let end = Instant::now() + Duration::from_secs(30);
    let saga = loop {
        let saga = saga_of(&http, &addr, "M-KILL-1").await;
        if saga["state"] == "created" {
            break saga;
        }
        assert!(
            Instant::now() < end,
            "the restarted gateway did not finish the saga: {saga}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    // One order, created once: the resumed saga looked it up instead of creating it again.
    assert_eq!(sim.orders().len(), 1);
    let creates = sim
        .requests()
        .iter()
        .filter(|r| r.method == "yanxuan.order.paid.create")
        .count();
    assert_eq!(creates, 1);
    assert_eq!(saga["parts"][0]["platform_order_id"], "M-KILL-1");
    assert_eq!(saga["parts"][0]["create_attempts"], 2);
    assert_eq!(sim.inventory("100201"), Some(11));
}
