//! The REST sample platform (`platforms/acme-rest.yaml`) driven through the HTTP API against
//! its simulator (`examples/rest-sim`, written by hand and independently of the runtime: it
//! checks every token itself and signs its webhooks with its own code).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use entrepot::credentials::CredentialSets;
use entrepot::dispatch::{DispatchOptions, Dispatcher};
use entrepot::engine::Engine;
use entrepot::server::AppState;
use entrepot::store::Store;
use rest_sim::{Fault, FaultKind, SimConfig, Simulator};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::root;

const PLATFORM: &str = "acme-rest";
const CLIENT_ID: &str = "mall-client";
const CLIENT_SECRET: &str = "mall-client-secret-42";
/// `whsec_` + base64 of "rest-sim-webhook-secret-for-tests".
const WEBHOOK_SECRET: &str = "whsec_cmVzdC1zaW0td2ViaG9vay1zZWNyZXQtZm9yLXRlc3Rz";

struct Gateway {
    url: String,
    sim: Simulator,
    store: Store,
    http: reqwest::Client,
    events: mpsc::UnboundedReceiver<Value>,
    _dir: tempfile::TempDir,
}

/// The internal target: records the canonical events it receives.
async fn receive(State(seen): State<mpsc::UnboundedSender<Value>>, body: String) -> StatusCode {
    let _ = seen.send(serde_json::from_str(&body).unwrap_or(Value::Null));
    StatusCode::OK
}

async fn start() -> Gateway {
    let sim = Simulator::start(SimConfig::new(CLIENT_ID, CLIENT_SECRET, WEBHOOK_SECRET))
        .await
        .unwrap();
    let base = sim.base_url();
    let text = std::fs::read_to_string(root().join("platforms/acme-rest.yaml")).unwrap();
    let doc = entrepot::config::source::parse(Path::new("platforms/acme-rest.yaml"), text).unwrap();
    let env = move |name: &str| (name == "ACME_REST_BASE_URL").then(|| base.clone());
    let compiled = entrepot::compile::compile_docs(vec![doc], &env);
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );

    // The internal target receiving canonical events.
    let (tx, events) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route("/events", post(receive))
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let gateway = format!(
        "targets:\n  center:\n    url: {target_url}\n    events: [order.shipped, inventory.changed]\n"
    );
    let gdoc = entrepot::config::source::parse(Path::new("entrepot.yaml"), gateway).unwrap();
    let targets = entrepot::compile::gateway::compile_gateway(gdoc, Path::new("."), &|_| None)
        .unwrap()
        .targets;

    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let mut creds = CredentialSets::new();
    creds.insert(
        PLATFORM.into(),
        [
            ("client_id".to_string(), json!(CLIENT_ID)),
            ("client_secret".to_string(), json!(CLIENT_SECRET)),
            ("webhook_secret".to_string(), json!(WEBHOOK_SECRET)),
        ]
        .into_iter()
        .collect(),
    );
    let engine = Arc::new(Engine::new(store.clone(), creds, |_| None));
    let options = DispatchOptions {
        backoff: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        poll: Duration::from_millis(20),
        ..Default::default()
    };
    let dispatcher = Arc::new(Dispatcher::new(
        store.clone(),
        &targets,
        options,
        CredentialSets::new(),
        |_| None,
    ));
    let state = AppState {
        plan: Arc::new(ArcSwap::from_pointee(compiled.plan)),
        store: Some(store.clone()),
        engine: Some(engine),
        targets: Arc::new(targets),
        notify: Some(dispatcher.notify.clone()),
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
        http: reqwest::Client::new(),
        events,
        _dir: dir,
    }
}

impl Gateway {
    async fn call(&self, op: &str, input: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!(
                "{}/v1/platforms/{PLATFORM}/operations/{op}",
                self.url
            ))
            .json(&input)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body: Value = resp.json().await.unwrap();
        if status >= 400 {
            assert_eq!(ct, "application/problem+json", "{body}");
        }
        (status, body)
    }

    /// Calls `op`, expects 200 and an answer that fits the canonical output schema.
    async fn ok(&self, op: &str, input: Value) -> Value {
        let (status, body) = self.call(op, input).await;
        assert_eq!(status, 200, "{op}: {body}");
        let problems = crate::support::output_problems(op, &body);
        assert!(problems.is_empty(), "{op}: {problems:?} in {body}");
        body
    }

    async fn internal(&self, kind: &str, platform_id: &str) -> String {
        self.store
            .to_internal(PLATFORM, kind, &[platform_id.to_string()])
            .await
            .unwrap()[platform_id]
            .clone()
    }

    /// The next event the target received; its data fits the canonical event schema.
    async fn next_event(&mut self) -> Value {
        let event = tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("an event within 10s")
            .unwrap();
        let kind = event["type"].as_str().unwrap_or_default();
        let found =
            crate::support::canonical_problems(&format!("events/{kind}.json"), &event["data"]);
        assert!(found.is_empty(), "{found:?} in {event}");
        event
    }

    /// The API calls (not token requests) the simulator received, as `(method path?query, status)`.
    fn calls(&self) -> Vec<(String, u16)> {
        self.sim
            .requests()
            .into_iter()
            .map(|r| {
                let q = if r.query.is_empty() {
                    String::new()
                } else {
                    format!("?{}", r.query)
                };
                (format!("{} {}{q}", r.method, r.path), r.status)
            })
            .collect()
    }
}

/// Lists the catalog so the gateway learns the SKUs; returns the internal ids of
/// SHIRT-M, SHIRT-L and CUPS-2.
async fn learn_skus(gw: &Gateway) -> (String, String, String) {
    gw.ok("product.list", json!({"page_size": 100})).await;
    (
        gw.internal("sku", "SHIRT-M").await,
        gw.internal("sku", "SHIRT-L").await,
        gw.internal("sku", "CUPS-2").await,
    )
}

/// An order of three lines: 2 × SHIRT-M at 49.90, 1 × SHIRT-L at 49.90, 3 × CUPS-2 at 19.99,
/// shipping 4.90. Total by hand: 99.80 + 49.90 + 59.97 + 4.90 = 214.57 EUR.
fn three_line_order(order_id: &str, m: &str, l: &str, cups: &str) -> Value {
    let eur = |amount: i64| json!({"amount": amount, "currency": "EUR"});
    json!({
        "order_id": order_id,
        "lines": [
            {"sku_id": m, "quantity": 2, "unit_price": eur(4990)},
            {"sku_id": l, "quantity": 1, "unit_price": eur(4990)},
            {"sku_id": cups, "quantity": 3, "unit_price": eur(1999)},
        ],
        "address": {"name": "Jeanne Martin", "phone": "+33 6 12 34 56 78", "province": "Auvergne-Rhône-Alpes",
                    "city": "Lyon", "detail": "12 rue de la République", "postal_code": "69002"},
        "total": eur(21457),
        "freight": eur(490),
        "buyer_message": "Leave at the door",
    })
}

#[tokio::test]
async fn every_operation_through_the_api() {
    let mut gw = start().await;

    // product.list: the first page is sent without `cursor=` (the API refuses an empty one).
    let page1 = gw.ok("product.list", json!({"page_size": 2})).await;
    assert_eq!(page1["total"], 3);
    assert_eq!(page1["next_cursor"], "c_2");
    let spu = gw.internal("spu", "prd_1001").await;
    let shirt_m = gw.internal("sku", "SHIRT-M").await;
    assert!(spu.starts_with("spu_"), "{spu}");
    assert_eq!(
        page1["items"][0],
        json!({
            "spu_id": spu, "title": "Linen shirt", "description": "Washed linen, regular fit",
            "status": "on_sale",
            "skus": [
                {"sku_id": shirt_m, "title": "Size M", "available": 12, "price": {"amount": 4990, "currency": "EUR"}},
                {"sku_id": gw.internal("sku", "SHIRT-L").await, "title": "Size L", "available": 3, "price": {"amount": 4990, "currency": "EUR"}},
            ]
        })
    );
    let page2 = gw
        .ok("product.list", json!({"page_size": 2, "cursor": "c_2"}))
        .await;
    assert_eq!(page2["items"][0]["status"], "off_sale");
    assert_eq!(
        page2["items"][0]["skus"][0]["price"],
        json!({"amount": 12905, "currency": "EUR"})
    );
    assert_eq!(page2["next_cursor"], Value::Null, "{page2}");
    assert_eq!(
        gw.calls(),
        vec![
            ("GET /v2/products?limit=2".to_string(), 200),
            ("GET /v2/products?cursor=c_2&limit=2".to_string(), 200),
        ]
    );

    // product.get: the internal id becomes the API's id, in the path.
    let product = gw.ok("product.get", json!({"spu_id": spu})).await;
    assert_eq!(product["product"]["spu_id"], spu.as_str());
    assert_eq!(product["product"]["skus"].as_array().unwrap().len(), 2);
    assert_eq!(
        gw.calls().last().unwrap(),
        &("GET /v2/products/prd_1001".to_string(), 200)
    );

    // inventory.get: several SKUs in one query parameter.
    let (_, shirt_l, cups) = learn_skus(&gw).await;
    let inventory = gw
        .ok("inventory.get", json!({"sku_ids": [shirt_m, cups]}))
        .await;
    assert_eq!(
        inventory,
        json!({"items": [{"sku_id": shirt_m, "available": 12}, {"sku_id": cups, "available": 40}]})
    );
    assert_eq!(
        gw.calls().last().unwrap(),
        &("GET /v2/inventory?sku=SHIRT-M%2CCUPS-2".to_string(), 200)
    );

    // order.create: a 3-line order reaches the API with every line, prices as EUR decimals.
    let created = gw
        .ok(
            "order.create",
            three_line_order("mall-order-1", &shirt_m, &shirt_l, &cups),
        )
        .await;
    assert_eq!(
        created,
        json!({"order_id": "mall-order-1", "platform_order_id": "ord_5001", "status": "paid",
               "total": {"amount": 21457, "currency": "EUR"}})
    );
    let sent = gw.sim.requests().into_iter().last().unwrap();
    assert_eq!(sent.idempotency_key.as_deref(), Some("mall-order-1"));
    assert_eq!(
        sent.body.unwrap(),
        json!({
            "reference": "mall-order-1",
            "currency": "EUR",
            "lines": [
                {"sku": "SHIRT-M", "quantity": 2, "unit_price": "49.90"},
                {"sku": "SHIRT-L", "quantity": 1, "unit_price": "49.90"},
                {"sku": "CUPS-2", "quantity": 3, "unit_price": "19.99"},
            ],
            "shipping_fee": "4.90",
            "total": "214.57",
            "shipping_address": {"name": "Jeanne Martin", "phone": "+33 6 12 34 56 78",
                "line1": "12 rue de la République", "city": "Lyon",
                "region": "Auvergne-Rhône-Alpes", "postal_code": "69002"},
            "note": "Leave at the door",
        })
    );
    let stored = &gw.sim.orders()[0];
    assert_eq!(stored["lines"].as_array().unwrap().len(), 3);
    assert_eq!(stored["status"], "confirmed");

    // order.get: the API's order, back in the canonical model.
    let got = gw
        .ok("order.get", json!({"order_id": "mall-order-1"}))
        .await;
    let order = &got["order"];
    assert_eq!(order["order_id"], "mall-order-1");
    assert_eq!(order["platform_order_id"], "ord_5001");
    assert_eq!(order["status"], "paid");
    assert_eq!(
        order["lines"],
        json!([
            {"sku_id": shirt_m, "quantity": 2, "unit_price": {"amount": 4990, "currency": "EUR"}},
            {"sku_id": shirt_l, "quantity": 1, "unit_price": {"amount": 4990, "currency": "EUR"}},
            {"sku_id": cups, "quantity": 3, "unit_price": {"amount": 1999, "currency": "EUR"}},
        ])
    );
    assert_eq!(order["total"], json!({"amount": 21457, "currency": "EUR"}));
    assert_eq!(order["freight"], json!({"amount": 490, "currency": "EUR"}));
    assert_eq!(order["address"]["detail"], "12 rue de la République");
    assert_eq!(
        gw.calls().last().unwrap(),
        &("GET /v2/orders/ord_5001".to_string(), 200)
    );

    // logistics.get before and after shipping; shipping sends a Standard Webhook that becomes
    // an order.shipped event with the mall's order id.
    let none = gw
        .ok("logistics.get", json!({"order_id": "mall-order-1"}))
        .await;
    assert_eq!(none, json!({"order_id": "mall-order-1", "shipments": []}));
    let hook = gw
        .sim
        .ship("ord_5001", "DHL", "JJD000390007")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hook.status, 200, "{hook:?}");
    let event = gw.next_event().await;
    assert_eq!(event["type"], "order.shipped", "{event}");
    assert_eq!(event["platform"], PLATFORM);
    assert_eq!(event["data"]["order_id"], "mall-order-1");
    assert_eq!(event["data"]["platform_order_id"], "ord_5001");
    assert_eq!(event["data"]["shipment"]["carrier"], "DHL");
    assert_eq!(event["data"]["shipment"]["tracking_number"], "JJD000390007");
    let shipped = gw
        .ok("logistics.get", json!({"order_id": "mall-order-1"}))
        .await;
    assert_eq!(shipped["shipments"][0]["carrier"], "DHL");
    assert_eq!(shipped["shipments"][0]["tracking_number"], "JJD000390007");
    assert_eq!(
        gw.calls().last().unwrap(),
        &("GET /v2/orders/ord_5001/shipments".to_string(), 200)
    );

    // order.cancel: a shipped order is refused (409, a problem naming the API's code); an
    // unshipped one is cancelled.
    let (status, problem) = gw
        .call("order.cancel", json!({"order_id": "mall-order-1"}))
        .await;
    assert_eq!(status, 502, "{problem}");
    assert_eq!(
        problem["type"],
        "https://entrepot.dev/problems/platform-error"
    );
    assert_eq!(
        problem["platform_code"], "order_already_shipped",
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("HTTP 409"),
        "{problem}"
    );
    let mut second = three_line_order("mall-order-2", &shirt_m, &shirt_l, &cups);
    second["lines"] =
        json!([{"sku_id": cups, "quantity": 1, "unit_price": {"amount": 1999, "currency": "EUR"}}]);
    second["total"] = json!({"amount": 2489, "currency": "EUR"});
    let created = gw.ok("order.create", second).await;
    assert_eq!(created["platform_order_id"], "ord_5002");
    let cancelled = gw
        .ok(
            "order.cancel",
            json!({"order_id": "mall-order-2", "reason": "buyer changed their mind"}),
        )
        .await;
    assert_eq!(
        cancelled,
        json!({"order_id": "mall-order-2", "status": "cancelled"})
    );
    let sent = gw.sim.requests().into_iter().last().unwrap();
    assert_eq!(sent.path, "/v2/orders/ord_5002/cancel");
    assert_eq!(
        sent.body,
        Some(json!({"reason": "buyer changed their mind"}))
    );
}

#[tokio::test]
async fn an_expired_token_is_renewed_and_the_call_succeeds() {
    let gw = start().await;
    gw.ok("product.list", json!({"page_size": 1})).await;
    assert_eq!(gw.sim.tokens_issued(), 1);
    gw.sim.expire_tokens();
    let page = gw.ok("product.list", json!({"page_size": 1})).await;
    assert_eq!(page["next_cursor"], "c_1");
    // The expired token was refused once, a new one was fetched, the call was repeated.
    assert_eq!(gw.sim.tokens_issued(), 2);
    let statuses: Vec<u16> = gw.calls().into_iter().map(|(_, s)| s).collect();
    assert_eq!(statuses, vec![200, 401, 200]);
}

#[tokio::test]
async fn a_rate_limited_read_waits_for_retry_after_and_succeeds() {
    let gw = start().await;
    let (_, _, cups) = learn_skus(&gw).await;
    gw.sim.push_fault(Fault {
        kind: FaultKind::RateLimited,
        route: Some("GET /v2/inventory".into()),
        retry_after: 1,
        times: 1,
        delay_ms: 0,
    });
    let started = Instant::now();
    let inventory = gw.ok("inventory.get", json!({"sku_ids": [cups]})).await;
    let waited = started.elapsed();
    assert_eq!(
        inventory,
        json!({"items": [{"sku_id": cups, "available": 40}]})
    );
    let calls = gw.calls();
    assert_eq!(
        calls[calls.len() - 2..],
        [
            ("GET /v2/inventory?sku=CUPS-2".to_string(), 429),
            ("GET /v2/inventory?sku=CUPS-2".to_string(), 200),
        ]
    );
    assert!(
        waited >= Duration::from_secs(1),
        "the retry came after {waited:?}, before the Retry-After of 1 s"
    );
}

#[tokio::test]
async fn refused_orders_are_problems_and_the_key_makes_a_resend_the_same_order() {
    let gw = start().await;
    let (shirt_m, shirt_l, cups) = learn_skus(&gw).await;

    // A price the API does not accept: 422 with details, passed on as a problem.
    let mut wrong = three_line_order("mall-order-9", &shirt_m, &shirt_l, &cups);
    wrong["lines"][2]["unit_price"]["amount"] = json!(1899);
    wrong["total"]["amount"] = json!(21157);
    let (status, problem) = gw.call("order.create", wrong).await;
    assert_eq!(status, 502, "{problem}");
    assert_eq!(problem["platform_code"], "validation_failed", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("HTTP 422"),
        "{problem}"
    );
    assert_eq!(problem["retryable"], false);
    // The platform's status and its error details reach the caller, as the simulator wrote
    // them: the third line's price is the one refused.
    assert_eq!(problem["platform_status"], 422, "{problem}");
    assert_eq!(
        problem["platform_details"],
        json!([{"field": "lines[2].unit_price", "issue": "price_mismatch: the price is 19.99"}]),
        "{problem}"
    );
    assert!(gw.sim.orders().is_empty());
    assert_eq!(
        gw.sim.requests().last().unwrap().body.as_ref().unwrap()["lines"][2]["unit_price"],
        "18.99"
    );

    // The same order sent twice is one order (Idempotency-Key = the mall's order id).
    let order = three_line_order("mall-order-10", &shirt_m, &shirt_l, &cups);
    let first = gw.ok("order.create", order.clone()).await;
    let again = gw.ok("order.create", order.clone()).await;
    assert_eq!(first, again);
    assert_eq!(gw.sim.orders().len(), 1);

    // Another order under the same key: the API's 409 is a problem, nothing is created.
    let mut changed = order;
    changed["buyer_message"] = json!("Ring twice");
    let (status, problem) = gw.call("order.create", changed).await;
    assert_eq!(status, 502, "{problem}");
    assert_eq!(
        problem["platform_code"], "idempotency_key_reused",
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("HTTP 409"),
        "{problem}"
    );
    assert_eq!(gw.sim.orders().len(), 1);

    // An order in another currency is refused before anything is sent.
    let before = gw.sim.requests().len();
    let mut usd = three_line_order("mall-order-11", &shirt_m, &shirt_l, &cups);
    usd["total"]["currency"] = json!("USD");
    let (status, problem) = gw.call("order.create", usd).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(gw.sim.requests().len(), before);
}

#[tokio::test]
async fn standard_webhooks_become_events_once() {
    let mut gw = start().await;
    let (_, _, cups) = learn_skus(&gw).await;

    let hook = gw.sim.set_stock("CUPS-2", 7).await.unwrap().unwrap();
    assert_eq!(hook.status, 200, "{hook:?}");
    let event = gw.next_event().await;
    assert_eq!(event["type"], "inventory.changed", "{event}");
    assert_eq!(
        event["data"],
        json!({"items": [{"sku_id": cups, "available": 7}]})
    );
    // occurred_at is the API's own event time, not the receive time.
    let rfc3339 = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let sent: Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(
        rfc3339(&event["occurred_at"]).unix_timestamp_nanos() / 1_000_000,
        rfc3339(&sent["timestamp"]).unix_timestamp_nanos() / 1_000_000,
        "{event}"
    );

    // A resend (same webhook-id, signed again) is acknowledged without a second event.
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let signature =
        rest_sim::sign_webhook(WEBHOOK_SECRET, &hook.id, timestamp, &hook.body).unwrap();
    let resend = gw
        .http
        .post(format!("{}/callbacks/acme-rest/webhooks", gw.url))
        .header("content-type", "application/json")
        .header("webhook-id", &hook.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(hook.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resend.status().as_u16(), 200);

    // A forged delivery (signed with another secret) is refused and makes no event.
    let forged = rest_sim::sign_webhook(
        "whsec_bm90LXRoZS1zZWNyZXQ=",
        "msg_forged",
        timestamp,
        &hook.body,
    )
    .unwrap();
    let refused = gw
        .http
        .post(format!("{}/callbacks/acme-rest/webhooks", gw.url))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_forged")
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", forged)
        .body(hook.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);

    // The next genuine webhook is the next event: nothing came in between.
    gw.sim.set_stock("CUPS-2", 6).await.unwrap();
    let event = gw.next_event().await;
    assert_eq!(event["data"]["items"][0]["available"], 6, "{event}");
    let rows = gw.store.inbox_recent(Some(PLATFORM), 10).await.unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows.iter().filter(|r| r.duplicate_of.is_some()).count(), 1);
}

#[tokio::test]
async fn a_failed_order_attempt_is_retried_with_the_same_idempotency_key() {
    let gw = start().await;
    let (shirt_m, shirt_l, cups) = learn_skus(&gw).await;
    gw.sim.push_fault(Fault {
        kind: FaultKind::ServerError,
        route: Some("POST /v2/orders".into()),
        retry_after: 1,
        times: 1,
        delay_ms: 0,
    });
    let created = gw
        .ok(
            "order.create",
            three_line_order("mall-order-20", &shirt_m, &shirt_l, &cups),
        )
        .await;
    assert_eq!(created["platform_order_id"], "ord_5001");
    let posts: Vec<(Option<String>, u16)> = gw
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| (r.idempotency_key, r.status))
        .collect();
    assert_eq!(
        posts,
        vec![
            (Some("mall-order-20".to_string()), 503),
            (Some("mall-order-20".to_string()), 201),
        ]
    );
    assert_eq!(gw.sim.orders().len(), 1);
}
