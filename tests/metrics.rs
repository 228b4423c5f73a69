//! `/metrics` read back over HTTP after driving both sample platforms through their simulators:
//! calls that succeed, are refused, time out, fail and meet an open breaker; callbacks that are
//! accepted, repeated and refused; events delivered, dead-lettered and held back. Every
//! expected number is what the test itself did, counted by hand.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use channel_sim::{Catalog, Fault as CFault, FaultKind as CKind};
use entrepot::dispatch::{DispatchOptions, Dispatcher};
use entrepot::engine::Engine;
use entrepot::metrics::Metrics;
use entrepot::observe::Observer;
use entrepot::server::AppState;
use rest_sim::{Fault as RFault, FaultKind as RKind};
use serde_json::{Value, json};

use crate::support::{metric, root};

const APP_KEY: &str = "metrics-app-key";
const APP_SECRET: &str = "metrics-app-secret";
const CLIENT_ID: &str = "metrics-client";
const CLIENT_SECRET: &str = "metrics-client-secret";
const WEBHOOK_SECRET: &str = "whsec_cmVzdC1zaW0td2ViaG9vay1zZWNyZXQtZm9yLXRlc3Rz";
const YX: &str = "yanxuan";
const ACME: &str = "acme-rest";
const REQUESTS: &str = "entrepot_platform_requests_total";
const SECONDS: &str = "entrepot_platform_request_duration_seconds";

/// A sample platform file with a 1 s call deadline, no retries, and a breaker that opens at
/// half of at least 6 calls failing and stays open for a minute.
fn platform(file: &str, timeout: &str) -> entrepot::config::source::SourceDoc {
    let text = std::fs::read_to_string(root().join("platforms").join(file)).unwrap();
    let from = format!("  timeout: {timeout}\n  retries: 2\n");
    assert!(text.contains(&from), "{file} has `{from}`");
    let text = text.replace(
        &from,
        "  timeout: 1s\n  retries: 0\n  breaker: { min_calls: 6, failure_rate: 0.5, window: 60s, cool_down: 60s }\n",
    );
    entrepot::config::source::parse(Path::new(&format!("platforms/{file}")), text).unwrap()
}

/// The internal systems: `center` takes every event, `broken` refuses every one, `waiting`
/// holds each delivery until the test lets it go.
#[derive(Clone)]
struct Receivers {
    center: Arc<AtomicUsize>,
    release: tokio::sync::watch::Receiver<bool>,
}

async fn center(State(r): State<Receivers>) -> StatusCode {
    r.center.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK
}

async fn broken() -> StatusCode {
    StatusCode::INTERNAL_SERVER_ERROR
}

async fn waiting(State(mut r): State<Receivers>) -> StatusCode {
    let _ = r.release.wait_for(|go| *go).await;
    StatusCode::OK
}

struct Gateway {
    url: String,
    http: reqwest::Client,
    yx: channel_sim::Simulator,
    acme: rest_sim::Simulator,
    dispatcher: Option<Arc<Dispatcher>>,
    delivered_to_center: Arc<AtomicUsize>,
    release: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// Both platforms served the way `serve` wires them: one `Metrics` sink behind the engine's
/// and the dispatcher's observer, and in the server's state. The dispatcher is started later
/// by the test.
async fn start() -> Gateway {
    let yx = channel_sim::Simulator::start(channel_sim::SimConfig::new(
        APP_KEY,
        APP_SECRET,
        Catalog::sample(),
    ))
    .await
    .unwrap();
    let acme = rest_sim::Simulator::start(rest_sim::SimConfig::new(
        CLIENT_ID,
        CLIENT_SECRET,
        WEBHOOK_SECRET,
    ))
    .await
    .unwrap();
    let (yx_url, acme_url) = (yx.base_url(), acme.base_url());
    let env = move |name: &str| match name {
        "YANXUAN_BASE_URL" => Some(yx_url.clone()),
        "ACME_REST_BASE_URL" => Some(acme_url.clone()),
        _ => None,
    };
    let compiled = entrepot::compile::compile_docs(
        vec![
            platform("yanxuan.yaml", "5s"),
            platform("acme-rest.yaml", "10s"),
        ],
        &env,
    );
    assert!(
        compiled.diagnostics.is_empty(),
        "{}",
        crate::support::render(&compiled.diagnostics)
    );

    let (release, release_rx) = tokio::sync::watch::channel(false);
    let receivers = Receivers {
        center: Arc::default(),
        release: release_rx,
    };
    let delivered_to_center = receivers.center.clone();
    let app = axum::Router::new()
        .route("/center", post(center))
        .route("/broken", post(broken))
        .route("/waiting", post(waiting))
        .with_state(receivers);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let targets = crate::support::gateway_targets(format!(
        "targets:\n  center:\n    url: {base}/center\n    events: [inventory.changed]\n  broken:\n    url: {base}/broken\n    events: [inventory.changed]\n    max_attempts: 1\n  waiting:\n    url: {base}/waiting\n    events: [inventory.changed]\n"
    ));

    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let creds = crate::support::sample_credentials(
        (APP_KEY, APP_SECRET),
        (CLIENT_ID, CLIENT_SECRET, WEBHOOK_SECRET),
    );
    let metrics = Arc::new(Metrics::new());
    let observer = Observer::new(vec![metrics.clone()]);
    let engine = Arc::new(
        Engine::new(store.clone(), creds.clone(), |_| None).with_observer(observer.clone()),
    );
    let dispatcher = Arc::new(
        Dispatcher::new(
            store.clone(),
            &targets,
            DispatchOptions {
                timeout: Duration::from_secs(60),
                poll: Duration::from_millis(20),
                ..Default::default()
            },
            creds,
            |_| None,
        )
        .with_observer(observer),
    );
    let state = AppState {
        plan: Arc::new(ArcSwap::from_pointee(compiled.plan)),
        store: Some(store),
        engine: Some(engine),
        targets: Arc::new(targets),
        notify: Some(dispatcher.notify.clone()),
        metrics,
        ..Default::default()
    };
    let addr = crate::support::serve_on_loopback(state).await;
    Gateway {
        url: format!("http://{addr}"),
        http: reqwest::Client::new(),
        yx,
        acme,
        dispatcher: Some(dispatcher),
        delivered_to_center,
        release,
        _dir: dir,
    }
}

impl Gateway {
    /// Calls `op` of `platform`; returns the status and body.
    async fn call(&self, platform: &str, op: &str, input: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!(
                "{}/v1/platforms/{platform}/operations/{op}",
                self.url
            ))
            .json(&input)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The internal id of the platform's `kind` id `platform_id` (learnt by a listing).
    async fn internal(&self, platform: &str, kind: &str, platform_id: &str) -> String {
        let body: Value = self
            .http
            .get(format!(
                "{}/v1/mappings/{platform}/{kind}?platform_id={platform_id}",
                self.url
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["internal_id"].as_str().unwrap().to_string()
    }

    async fn scrape(&self) -> String {
        let r = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        r.text().await.unwrap()
    }

    /// Scrapes until `done` holds (at most 20 s); returns that scrape.
    async fn scrape_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.scrape().await;
            if done(&text) {
                return text;
            }
            assert!(Instant::now() < end, "{what} within 20 s:\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn callback(&self, route: &str, headers: &[(&str, String)], body: String) -> u16 {
        let mut r = self.http.post(format!("{}/callbacks{route}", self.url));
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        r.body(body).send().await.unwrap().status().as_u16()
    }
}

fn requests(text: &str, platform: &str, op: &str, outcome: &str) -> Option<f64> {
    metric(
        text,
        REQUESTS,
        &[
            ("platform", platform),
            ("operation", op),
            ("outcome", outcome),
        ],
    )
}

fn histogram(text: &str, platform: &str, op: &str, series: &str, le: Option<&str>) -> Option<f64> {
    let mut labels = vec![("platform", platform), ("operation", op)];
    if let Some(le) = le {
        labels.push(("le", le));
    }
    metric(text, &format!("{SECONDS}_{series}"), &labels)
}

/// The calls every platform goes through, in this order (the breaker counts them):
/// 2 × product.list ok, 1 × product.list refused, 1 × product.get held back 300 ms (ok),
/// 1 × inventory.get timed out, 3 × order.list failing (the third opens the breaker: 4
/// failures in 8 calls), 2 × order.list refused by the open breaker, 1 × order.get with an
/// input refused before anything is sent.
async fn drive(gw: &Gateway, platform: &str, faults: &dyn Fn(&str)) {
    for _ in 0..2 {
        let (status, body) = gw.call(platform, "product.list", json!({})).await;
        assert_eq!(status, 200, "{body}");
    }
    let (spu, sku) = if platform == YX {
        ("1001", "100101")
    } else {
        ("prd_1002", "CUPS-2")
    };
    let spu = gw.internal(platform, "spu", spu).await;
    let sku = gw.internal(platform, "sku", sku).await;

    faults("refuse product.list");
    let (status, body) = gw.call(platform, "product.list", json!({})).await;
    // Yanxuan's business error is a 502 naming the platform's code; ACME's 429 stays a 429.
    let expected = if platform == YX { 502 } else { 429 };
    assert_eq!(status, expected, "refused: {body}");

    faults("hold product.get 300ms");
    let started = Instant::now();
    let (status, body) = gw
        .call(platform, "product.get", json!({ "spu_id": spu }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() >= Duration::from_millis(300));

    faults("time out inventory.get");
    let (status, body) = gw
        .call(platform, "inventory.get", json!({ "sku_ids": [sku] }))
        .await;
    assert_eq!(status, 504, "{body}");

    faults("fail order.list 3 times");
    let window = json!({"from": "2024-06-01T00:00:00Z", "to": "2024-06-02T00:00:00Z"});
    for i in 0..5 {
        let (status, body) = gw.call(platform, "order.list", window.clone()).await;
        let expected = if i < 3 { 502 } else { 503 };
        assert_eq!(status, expected, "order.list #{i}: {body}");
    }
    let input = if platform == YX {
        json!({})
    } else {
        json!({"order_id": "M-NEVER-CREATED"})
    };
    let (status, body) = gw.call(platform, "order.get", input).await;
    // Yanxuan: no order id at all (400); ACME: an order the gateway never created (422).
    let expected = if platform == YX { 400 } else { 422 };
    assert_eq!(status, expected, "{body}");
}

#[tokio::test]
#[allow(clippy::too_many_lines)]
async fn metrics_count_what_the_sample_platforms_went_through() {
    let mut gw = start().await;
    let text = gw.scrape().await;
    // Before anything: the configuration's gauges, breakers closed, nothing counted.
    assert_eq!(metric(&text, "entrepot_platforms_loaded", &[]), Some(2.0));
    assert_eq!(
        metric(
            &text,
            "entrepot_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    for p in [YX, ACME] {
        assert_eq!(
            metric(&text, "entrepot_breaker_open", &[("platform", p)]),
            Some(0.0)
        );
    }
    assert!(!text.contains(REQUESTS), "{text}");

    let yx = &gw.yx;
    drive(&gw, YX, &|step| match step {
        "refuse product.list" => yx.push_fault(
            CFault::business("6001", "item service refuses").method("yanxuan.item.id.batch.get"),
        ),
        "hold product.get 300ms" => yx.push_fault(
            CFault::new(CKind::Slow)
                .delay_ms(300)
                .method("yanxuan.item.batch.get"),
        ),
        "time out inventory.get" => yx.push_fault(
            CFault::new(CKind::Timeout)
                .delay_ms(5_000)
                .method("yanxuan.item.inventory.get"),
        ),
        "fail order.list 3 times" => yx.push_fault(
            CFault::new(CKind::Http500)
                .method("yanxuan.order.paid.list")
                .times(3),
        ),
        other => unreachable!("{other}"),
    })
    .await;
    let acme = &gw.acme;
    let fault = |kind, route: &str, times, delay_ms| RFault {
        kind,
        route: Some(route.to_string()),
        retry_after: 1,
        times,
        delay_ms,
    };
    drive(&gw, ACME, &|step| match step {
        "refuse product.list" => {
            acme.push_fault(fault(RKind::RateLimited, "GET /v2/products", 1, 0))
        }
        "hold product.get 300ms" => {
            acme.push_fault(fault(RKind::Slow, "GET /v2/products/prd_1002", 1, 300));
        }
        "time out inventory.get" => {
            acme.push_fault(fault(RKind::Slow, "GET /v2/inventory", 1, 3_000));
        }
        "fail order.list 3 times" => {
            acme.push_fault(fault(RKind::ServerError, "GET /v2/orders", 3, 0));
        }
        other => unreachable!("{other}"),
    })
    .await;

    let text = gw.scrape().await;
    for p in [YX, ACME] {
        let counted = [
            ("product.list", "ok", 2.0),
            ("product.list", "refused", 1.0),
            ("product.get", "ok", 1.0),
            ("inventory.get", "timeout", 1.0),
            ("order.list", "transport_error", 3.0),
            ("order.list", "unavailable", 2.0),
            ("order.get", "invalid_input", 1.0),
        ];
        for (op, outcome, n) in counted {
            assert_eq!(
                requests(&text, p, op, outcome),
                Some(n),
                "{p} {op} {outcome}"
            );
        }
        // No other outcome was counted.
        let total: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with(&format!("{REQUESTS}{{")) && l.contains(&format!("platform=\"{p}\""))
            })
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
            .sum();
        assert_eq!(total, 11.0, "{p}");
        for (op, n) in [
            ("product.list", 3.0),
            ("product.get", 1.0),
            ("inventory.get", 1.0),
            ("order.list", 5.0),
            ("order.get", 1.0),
        ] {
            assert_eq!(histogram(&text, p, op, "count", None), Some(n), "{p} {op}");
            assert_eq!(
                histogram(&text, p, op, "bucket", Some("+Inf")),
                Some(n),
                "{p} {op}"
            );
        }
        // The call held back 300 ms is in no bucket below 0.5 s, and in the 30 s one.
        for le in ["0.005", "0.1", "0.25"] {
            assert_eq!(
                histogram(&text, p, "product.get", "bucket", Some(le)),
                Some(0.0),
                "{p} le={le}"
            );
        }
        assert_eq!(
            histogram(&text, p, "product.get", "bucket", Some("30")),
            Some(1.0)
        );
        assert!(histogram(&text, p, "product.get", "sum", None).unwrap() >= 0.3);
        // The call that timed out took its whole 1 s deadline.
        for le in ["0.1", "0.5"] {
            assert_eq!(
                histogram(&text, p, "inventory.get", "bucket", Some(le)),
                Some(0.0),
                "{p} le={le}"
            );
        }
        assert!(histogram(&text, p, "inventory.get", "sum", None).unwrap() >= 1.0);
        assert_eq!(
            metric(&text, "entrepot_breaker_open", &[("platform", p)]),
            Some(1.0),
            "{p}"
        );
    }
    // Yanxuan's 20 calls/s: every attempt that was sent waited for its turn (3 listings, 1
    // get, 1 inventory, 3 failing listings of orders); the refused ones never got that far.
    assert_eq!(
        metric(
            &text,
            "entrepot_rate_limit_wait_seconds_count",
            &[("platform", YX)]
        ),
        Some(8.0)
    );
    // ACME has no rate limit, and fetched its OAuth token once (it lasts an hour).
    assert_eq!(
        metric(
            &text,
            "entrepot_rate_limit_wait_seconds_count",
            &[("platform", ACME)]
        ),
        None
    );
    assert_eq!(gw.acme.tokens_issued(), 1);
    assert_eq!(
        metric(
            &text,
            "entrepot_oauth_token_renewals_total",
            &[("platform", ACME)]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "entrepot_oauth_token_renewals_total",
            &[("platform", YX)]
        ),
        None
    );

    // Callbacks. ACME: a stock change the simulator signs and sends itself, its resend
    // (duplicate) and a forgery.
    gw.acme
        .set_webhook_url(&format!("{}/callbacks/acme-rest/webhooks", gw.url));
    let hook = gw.acme.set_stock("CUPS-2", 7).await.unwrap().unwrap();
    assert_eq!(hook.status, 200, "{hook:?}");
    let now = time::OffsetDateTime::now_utc();
    let signed = |secret: &str, id: &str| {
        let ts = now.unix_timestamp();
        vec![
            ("content-type", "application/json".to_string()),
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", ts.to_string()),
            (
                "webhook-signature",
                rest_sim::sign_webhook(secret, id, ts, &hook.body).unwrap(),
            ),
        ]
    };
    let route = "/acme-rest/webhooks";
    assert_eq!(
        gw.callback(route, &signed(WEBHOOK_SECRET, &hook.id), hook.body.clone())
            .await,
        200
    );
    assert_eq!(
        gw.callback(
            route,
            &signed("whsec_bm90LXRoZS1zZWNyZXQ=", "msg_forged"),
            hook.body.clone()
        )
        .await,
        401
    );
    // Yanxuan: a stock change, a forgery, and a genuine one signed an hour ago.
    let form = [(
        "content-type",
        "application/x-www-form-urlencoded".to_string(),
    )];
    let notify = |secret: &str, id: &str, at: time::OffsetDateTime| {
        channel_sim::signed_form(
            APP_KEY,
            secret,
            "yanxuan.notification.inventory.count.changed",
            at,
            &[("notifyId", id), ("skuId", "100101"), ("inventory", "5")],
        )
    };
    let route = "/yanxuan/notify";
    assert_eq!(
        gw.callback(route, &form, notify(APP_SECRET, "n-1", now))
            .await,
        200
    );
    assert_ne!(
        gw.callback(route, &form, notify("forged", "n-2", now))
            .await,
        200
    );
    assert_ne!(
        gw.callback(
            route,
            &form,
            notify(APP_SECRET, "n-3", now - time::Duration::hours(1))
        )
        .await,
        200
    );

    let text = gw.scrape().await;
    let callbacks = |p: &str, route: &str, outcome: &str| {
        metric(
            &text,
            "entrepot_callbacks_total",
            &[("platform", p), ("route", route), ("outcome", outcome)],
        )
    };
    let refusals = |p: &str, route: &str, reason: &str| {
        metric(
            &text,
            "entrepot_callback_refusals_total",
            &[("platform", p), ("route", route), ("reason", reason)],
        )
    };
    let (acme_route, yx_route) = ("/acme-rest/webhooks", "/yanxuan/notify");
    assert_eq!(callbacks(ACME, acme_route, "accepted"), Some(1.0));
    assert_eq!(callbacks(ACME, acme_route, "duplicate"), Some(1.0));
    assert_eq!(callbacks(ACME, acme_route, "refused"), Some(1.0));
    assert_eq!(refusals(ACME, acme_route, "signature"), Some(1.0));
    assert_eq!(callbacks(YX, yx_route, "accepted"), Some(1.0));
    assert_eq!(callbacks(YX, yx_route, "duplicate"), None);
    assert_eq!(callbacks(YX, yx_route, "refused"), Some(2.0));
    assert_eq!(refusals(YX, yx_route, "signature"), Some(1.0));
    assert_eq!(refusals(YX, yx_route, "timestamp"), Some(1.0));

    // Two accepted stock changes: two events for each of the three targets, stored and not
    // delivered yet (the dispatcher has not started).
    for target in ["center", "broken", "waiting"] {
        let t = [("target", target)];
        assert_eq!(
            metric(&text, "entrepot_outbox_pending", &t),
            Some(2.0),
            "{target}"
        );
        assert_eq!(
            metric(&text, "entrepot_dead_letters", &t),
            Some(0.0),
            "{target}"
        );
        let lag = metric(&text, "entrepot_delivery_lag_seconds", &t).unwrap();
        assert!(lag > 0.0 && lag < 600.0, "{target}: {lag}");
    }
    assert!(!text.contains("entrepot_deliveries_total{"), "{text}");

    let dispatcher = gw.dispatcher.take().unwrap();
    tokio::spawn(dispatcher.run(std::future::pending()));
    let deliveries = |text: &str, target: &str, outcome: &str| {
        metric(
            text,
            "entrepot_deliveries_total",
            &[("target", target), ("outcome", outcome)],
        )
    };
    // A delivery is counted when it ends, and then recorded in the store: wait for both.
    let stored = |t: &str, target: &str, pending: f64, dead: f64| {
        metric(t, "entrepot_outbox_pending", &[("target", target)]) == Some(pending)
            && metric(t, "entrepot_dead_letters", &[("target", target)]) == Some(dead)
    };
    let text = gw
        .scrape_until("center delivered and broken dead-lettered", |t| {
            deliveries(t, "center", "delivered") == Some(2.0)
                && deliveries(t, "broken", "dead_lettered") == Some(2.0)
                && stored(t, "center", 0.0, 0.0)
                && stored(t, "broken", 0.0, 2.0)
        })
        .await;
    assert_eq!(gw.delivered_to_center.load(Ordering::SeqCst), 2);
    assert_eq!(deliveries(&text, "broken", "delivered"), None);
    assert_eq!(
        deliveries(&text, "broken", "retry"),
        None,
        "max_attempts: 1"
    );
    // `waiting` holds both deliveries: they are still pending, and nothing ended.
    assert_eq!(deliveries(&text, "waiting", "delivered"), None);
    let gauges = |text: &str, target: &str| {
        let t = [("target", target)];
        (
            metric(text, "entrepot_outbox_pending", &t).unwrap(),
            metric(text, "entrepot_dead_letters", &t).unwrap(),
            metric(text, "entrepot_delivery_lag_seconds", &t).unwrap(),
        )
    };
    assert_eq!(gauges(&text, "center"), (0.0, 0.0, 0.0));
    assert_eq!(gauges(&text, "broken"), (0.0, 2.0, 0.0));
    let (pending, dead, lag) = gauges(&text, "waiting");
    assert_eq!((pending, dead), (2.0, 0.0));
    assert!(lag > 0.0, "{lag}");

    gw.release.send(true).unwrap();
    let text = gw
        .scrape_until("waiting delivered", |t| {
            deliveries(t, "waiting", "delivered") == Some(2.0) && stored(t, "waiting", 0.0, 0.0)
        })
        .await;
    assert_eq!(gauges(&text, "waiting"), (0.0, 0.0, 0.0));
    assert_eq!(gauges(&text, "broken"), (0.0, 2.0, 0.0));
}
