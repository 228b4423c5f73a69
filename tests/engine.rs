//! Every operation of the sample platform driven through the HTTP API against the simulator
//! (`examples/channel-sim`, written by hand and independently of the runtime).

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use channel_sim::{Catalog, Fault, FaultKind, SimConfig, Simulator};
use entrepot::credentials::CredentialSets;
use entrepot::engine::Engine;
use entrepot::server::{AppState, serve};
use entrepot::store::Store;
use serde_json::{Value, json};

use crate::support::root;

const KEY: &str = "channel-app-key";
const SECRET: &str = "channel-app-secret-0123456789";

struct Gateway {
    url: String,
    sim: Simulator,
    store: Store,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The sample platform file, with its `transport:` block replaced when `transport` is given.
fn platform_text(transport: Option<&str>) -> String {
    let text = std::fs::read_to_string(root().join("platforms/yanxuan.yaml")).unwrap();
    let Some(t) = transport else { return text };
    let start = text.find("\ntransport:\n").unwrap();
    let end = start + 1 + text[start + 1..].find("\n\n").unwrap();
    format!("{}\ntransport:\n{t}{}", &text[..start], &text[end..])
}

async fn start_with(transport: Option<&str>, secret: &str, catalog: Catalog) -> Gateway {
    let sim = Simulator::start(SimConfig::new(KEY, SECRET, catalog))
        .await
        .unwrap();
    let base = sim.base_url();
    let doc = entrepot::config::source::parse(
        Path::new("platforms/yanxuan.yaml"),
        platform_text(transport),
    )
    .unwrap();
    let env = move |name: &str| (name == "YANXUAN_BASE_URL").then(|| base.clone());
    let compiled = entrepot::compile::compile_docs(vec![doc], &env);
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
            ("app_secret".to_string(), json!(secret)),
        ]
        .into_iter()
        .collect(),
    );
    let engine = Arc::new(Engine::new(store.clone(), creds, |_| None));
    let state = AppState {
        plan: Arc::new(ArcSwap::from_pointee(compiled.plan)),
        store: Some(store.clone()),
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
    Gateway {
        url: format!("http://{addr}"),
        sim,
        store,
        http: reqwest::Client::new(),
        _dir: dir,
        stop: Some(stop),
    }
}

async fn start() -> Gateway {
    start_with(None, SECRET, Catalog::sample()).await
}

impl Gateway {
    async fn call(&self, op: &str, input: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/v1/platforms/yanxuan/operations/{op}", self.url))
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

    async fn ok(&self, op: &str, input: Value) -> Value {
        let (status, body) = self.call(op, input).await;
        assert_eq!(status, 200, "{op}: {body}");
        body
    }

    async fn internal(&self, kind: &str, platform_id: &str) -> String {
        self.store
            .to_internal("yanxuan", kind, &[platform_id.to_string()])
            .await
            .unwrap()[platform_id]
            .clone()
    }

    fn methods(&self) -> Vec<String> {
        self.sim.requests().into_iter().map(|r| r.method).collect()
    }
}

fn order_input(order_id: &str, sku: &str, quantity: i64, unit_fen: i64, freight_fen: i64) -> Value {
    json!({
        "order_id": order_id,
        "lines": [{"sku_id": sku, "quantity": quantity, "unit_price": {"amount": unit_fen, "currency": "CNY"}}],
        "address": {"name": "张三", "phone": "13800000000", "province": "浙江省", "city": "杭州市", "district": "西湖区", "detail": "文三路 1 号 \"A\" 座"},
        "total": {"amount": unit_fen * quantity + freight_fen, "currency": "CNY"},
        "freight": {"amount": freight_fen, "currency": "CNY"}
    })
}

#[tokio::test]
async fn every_operation_through_the_api() {
    let gw = start().await;

    // product.list: platform ids become internal ids, allocated on first sight.
    let list = gw.ok("product.list", json!({"page_size": 2})).await;
    assert_eq!(list["total"], 3);
    assert_eq!(list["next_cursor"], "2");
    let first = &list["items"][0];
    let spu = gw.internal("spu", "1001").await;
    assert_eq!(first["spu_id"], spu.as_str());
    assert!(spu.starts_with("spu_"));
    assert_eq!(first["title"], "日式和风懒人沙发");
    assert_eq!(first["status"], "on_sale");
    let sku = gw.internal("sku", "100101").await;
    assert_eq!(
        first["skus"][0],
        json!({"sku_id": sku, "title": "颜色:米白", "available": 20, "price": {"amount": 29900, "currency": "CNY"}})
    );
    let page2 = gw
        .ok("product.list", json!({"page_size": 2, "cursor": "2"}))
        .await;
    assert_eq!(page2["items"][0]["status"], "off_sale");
    assert_eq!(page2.get("next_cursor"), Some(&Value::Null), "{page2}");

    // The mapping endpoint answers both ways.
    let m: Value = gw
        .http
        .get(format!(
            "{}/v1/mappings/yanxuan/sku?internal_id={sku}",
            gw.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["platform_id"], "100101");
    let m: Value = gw
        .http
        .get(format!(
            "{}/v1/mappings/yanxuan/sku?platform_id=100101",
            gw.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["internal_id"], sku.as_str());

    // product.get with the internal id; the platform sees its own id.
    let got = gw.ok("product.get", json!({"spu_id": spu})).await;
    assert_eq!(got["product"]["spu_id"], spu.as_str());
    assert_eq!(got["product"]["skus"].as_array().unwrap().len(), 2);

    // inventory.get translates every id both ways.
    let sku2 = gw.internal("sku", "100102").await;
    let inv = gw
        .ok("inventory.get", json!({"sku_ids": [sku, sku2]}))
        .await;
    assert_eq!(
        inv,
        json!({"items": [{"sku_id": sku, "available": 20}, {"sku_id": sku2, "available": 5}]})
    );

    // order.create: the platform receives its sku ids and exact yuan amounts.
    let created = gw
        .ok(
            "order.create",
            order_input("mall-order-1", &sku, 2, 29900, 1000),
        )
        .await;
    assert_eq!(
        created,
        json!({"order_id": "mall-order-1", "platform_order_id": "mall-order-1", "status": "paid"})
    );
    let stored = gw.sim.order("mall-order-1").unwrap();
    assert_eq!(stored["orderSkus"][0]["skuId"], "100101");
    assert_eq!(stored["realPrice"], "608.00");
    assert_eq!(stored["receiverAddressDetail"], "文三路 1 号 \"A\" 座");
    assert_eq!(gw.sim.inventory("100101"), Some(18));

    let order = gw
        .ok("order.get", json!({"order_id": "mall-order-1"}))
        .await;
    assert_eq!(order["order"]["status"], "paid");
    assert_eq!(
        order["order"]["lines"][0],
        json!({"sku_id": sku, "quantity": 2, "unit_price": {"amount": 29900, "currency": "CNY"}})
    );
    assert_eq!(order["order"]["total"]["amount"], 60800);

    let none = gw
        .ok("logistics.get", json!({"order_id": "mall-order-1"}))
        .await;
    assert_eq!(none["shipments"], json!([]));
    gw.sim.ship("mall-order-1", "顺丰", "SF100");
    let shipped = gw
        .ok("logistics.get", json!({"order_id": "mall-order-1"}))
        .await;
    assert_eq!(shipped["shipments"][0]["tracking_number"], "SF100");
    assert!(
        shipped["shipments"][0]["shipped_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    // A shipped order cannot be cancelled; a paid one can, and its stock comes back.
    let refused = gw
        .ok("order.cancel", json!({"order_id": "mall-order-1"}))
        .await;
    assert_eq!(refused["status"], "rejected");
    gw.ok(
        "order.create",
        order_input("mall-order-2", &sku2, 1, 29900, 0),
    )
    .await;
    assert_eq!(gw.sim.inventory("100102"), Some(4));
    let cancelled = gw
        .ok("order.cancel", json!({"order_id": "mall-order-2"}))
        .await;
    assert_eq!(
        cancelled,
        json!({"order_id": "mall-order-2", "status": "cancelled"})
    );
    assert_eq!(gw.sim.inventory("100102"), Some(5));
}

#[tokio::test]
async fn wrong_credential_is_a_clear_502() {
    let gw = start_with(None, "not-the-secret", Catalog::sample()).await;
    let (status, problem) = gw.call("product.list", json!({})).await;
    assert_eq!(status, 502, "{problem}");
    assert_eq!(
        problem["type"],
        "https://entrepot.dev/problems/platform-error"
    );
    assert_eq!(problem["platform"], "yanxuan");
    assert_eq!(problem["operation"], "product.list");
    assert_eq!(problem["platform_code"], "402");
    assert_eq!(problem["retryable"], false);
    assert!(!problem.to_string().contains("not-the-secret"));
}

#[tokio::test]
async fn bad_input_and_unknown_ids_are_named() {
    let gw = start().await;
    let (status, problem) = gw.call("inventory.get", json!({"sku_ids": []})).await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("input.sku_ids"),
        "{problem}"
    );
    let (status, problem) = gw
        .call("inventory.get", json!({"sku_ids": ["sku_never_seen"]}))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("sku 'sku_never_seen'"),
        "{problem}"
    );
    let (status, _) = gw.call("no.such", json!({})).await;
    assert_eq!(status, 404);
    // Nothing reached the platform.
    assert!(gw.methods().is_empty());
}

#[tokio::test]
async fn retries_only_where_allowed() {
    let gw = start().await;
    gw.ok("product.list", json!({})).await;
    let sku = gw.internal("sku", "100101").await;
    // A read is retried through two 503s.
    gw.sim.push_fault(
        Fault::new(FaultKind::Http503)
            .method("yanxuan.item.inventory.get")
            .times(2),
    );
    gw.ok("inventory.get", json!({"sku_ids": [sku]})).await;
    let inv_calls = gw
        .methods()
        .iter()
        .filter(|m| *m == "yanxuan.item.inventory.get")
        .count();
    assert_eq!(inv_calls, 3);
    // An order is not: one attempt, and the caller learns it may retry.
    gw.sim
        .push_fault(Fault::new(FaultKind::Http503).method("yanxuan.order.paid.create"));
    let (status, problem) = gw
        .call("order.create", order_input("o-503", &sku, 1, 29900, 0))
        .await;
    assert_eq!(status, 502, "{problem}");
    assert_eq!(problem["platform_status"], 503);
    assert_eq!(problem["retryable"], true);
    assert!(
        problem["detail"].as_str().unwrap().contains("not retried"),
        "{problem}"
    );
    let creates = gw
        .methods()
        .iter()
        .filter(|m| *m == "yanxuan.order.paid.create")
        .count();
    assert_eq!(creates, 1);
    // A retryable business code is retried on reads.
    gw.sim
        .push_fault(Fault::business("503", "busy").method("yanxuan.item.inventory.get"));
    gw.ok("inventory.get", json!({"sku_ids": [sku]})).await;
}

#[tokio::test]
async fn malformed_answers_are_mapping_errors() {
    let gw = start().await;
    gw.sim
        .push_fault(Fault::new(FaultKind::Malformed).method("yanxuan.item.id.batch.get"));
    let (status, problem) = gw.call("product.list", json!({})).await;
    assert_eq!(status, 502, "{problem}");
    assert_eq!(
        problem["type"],
        "https://entrepot.dev/problems/mapping-error"
    );
    // The platform answers again normally afterwards.
    gw.ok("product.list", json!({})).await;
}

#[tokio::test]
async fn breaker_opens_and_recovers() {
    let transport = "  retries: 0\n  timeout: 2s\n  breaker: { min_calls: 3, failure_rate: 0.5, window: 60s, cool_down: 300ms }\n";
    let gw = start_with(Some(transport), SECRET, Catalog::sample()).await;
    gw.sim.push_fault(Fault::new(FaultKind::Http500).times(3));
    for _ in 0..3 {
        let (status, _) = gw.call("product.list", json!({})).await;
        assert_eq!(status, 502, "a 5xx from the platform is a bad gateway");
    }
    let before = gw.sim.requests().len();
    let (status, problem) = gw.call("product.list", json!({})).await;
    assert_eq!(status, 503);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("circuit breaker"),
        "{problem}"
    );
    assert_eq!(
        gw.sim.requests().len(),
        before,
        "an open breaker must not call the platform"
    );
    // After the cool-down a trial call goes through and closes it.
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    gw.ok("product.list", json!({})).await;
    gw.ok("product.list", json!({})).await;
}

// Two worker threads: on one, the first call let through is held up while the same thread
// reads the other eleven requests, and reaches the simulator late (seen failing on `main`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_the_quota() {
    let transport = "  qps: 10\n  retries: 0\n";
    let gw = start_with(Some(transport), SECRET, Catalog::sample()).await;
    // Unix milliseconds, the simulator's clock for its request log.
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let calls = (0..12).map(|_| gw.call("product.list", json!({})));
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
    }
    let mut at: Vec<u64> = gw.sim.requests().iter().map(|r| r.at_ms).collect();
    at.sort_unstable();
    assert_eq!(at.len(), 12);
    // Paced at 10 per second, the k-th call (0-based) cannot leave before start + k * 100 ms,
    // so it cannot arrive before then either: no 1-second window holds more than 10 calls.
    // (Network delay only makes calls later, so this bound holds on any machine; 1 ms is
    // allowed for the two clocks' rounding.)
    for (k, t) in at.iter().enumerate() {
        assert!(
            *t + 1 >= start + 100 * k as u64,
            "call {k} arrived {} ms after the start: {at:?}",
            t.saturating_sub(start)
        );
    }
}

/// Two suppliers behind one gateway: the second is the sample platform file under another name.
#[tokio::test]
async fn routing_by_ids_splits_across_platforms() {
    let a = Simulator::start(SimConfig::new(KEY, SECRET, Catalog::sample()))
        .await
        .unwrap();
    let b = Simulator::start(SimConfig::new(KEY, SECRET, Catalog::large(2, 2)))
        .await
        .unwrap();
    let text = platform_text(None);
    let second = text
        .replace("platform: yanxuan", "platform: second")
        .replace("YANXUAN_BASE_URL", "SECOND_BASE_URL")
        .replace("path: /yanxuan/notify", "path: /second/notify");
    let docs = vec![
        entrepot::config::source::parse(Path::new("a.yaml"), text).unwrap(),
        entrepot::config::source::parse(Path::new("b.yaml"), second).unwrap(),
    ];
    let (ua, ub) = (a.base_url(), b.base_url());
    let env = move |n: &str| match n {
        "YANXUAN_BASE_URL" => Some(ua.clone()),
        "SECOND_BASE_URL" => Some(ub.clone()),
        _ => None,
    };
    let compiled = entrepot::compile::compile_docs(docs, &env);
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let mut creds = CredentialSets::new();
    for p in ["yanxuan", "second"] {
        creds.insert(
            p.into(),
            [
                ("app_key".to_string(), json!(KEY)),
                ("app_secret".to_string(), json!(SECRET)),
            ]
            .into_iter()
            .collect(),
        );
    }
    let engine = Arc::new(Engine::new(store.clone(), creds, |_| None));
    let plan = compiled.plan;
    // Learn both catalogs' ids.
    for p in ["yanxuan", "second"] {
        match engine
            .call(&plan.platforms[p], "product.list", &json!({}), false)
            .await
            .unwrap()
        {
            entrepot::engine::CallOutcome::Output(_) => {}
            other => panic!("{other:?}"),
        }
    }
    let ia = store
        .to_internal("yanxuan", "sku", &["100101".into()])
        .await
        .unwrap()["100101"]
        .clone();
    let ib = store
        .to_internal("second", "sku", &["1000001001".into()])
        .await
        .unwrap()["1000001001"]
        .clone();

    let (ok, inv) = engine
        .route(&plan, "inventory.get", &json!({"sku_ids": [ia, ib]}))
        .await
        .unwrap();
    assert!(ok, "{inv}");
    assert_eq!(inv["parts"][0]["platform"], "yanxuan");
    assert_eq!(
        inv["parts"][0]["output"]["items"][0],
        json!({"sku_id": ia, "available": 20})
    );
    assert_eq!(inv["parts"][1]["platform"], "second");
    assert_eq!(inv["parts"][1]["ids"], json!([ib]));

    // An order with one line per supplier becomes two orders; each pays its own lines and the
    // first carries the freight.
    let mut order = order_input("split-1", &ia, 1, 29900, 800);
    order["lines"].as_array_mut().unwrap().push(
        json!({"sku_id": ib, "quantity": 2, "unit_price": {"amount": 990, "currency": "CNY"}}),
    );
    order["total"]["amount"] = json!(29900 + 2 * 990 + 800);
    let (ok, created) = engine.route(&plan, "order.create", &order).await.unwrap();
    assert!(ok, "{created}");
    assert_eq!(a.order("split-1").unwrap()["realPrice"], "307.00");
    assert_eq!(b.order("split-1").unwrap()["realPrice"], "19.80");
    assert_eq!(
        b.order("split-1").unwrap()["orderSkus"][0]["skuId"],
        "1000001001"
    );
    // Later calls on the order go to... both owners, so the caller must choose.
    let err = engine
        .route(&plan, "order.get", &json!({"order_id": "split-1"}))
        .await
        .unwrap_err();
    assert_eq!(err.status, 422);
    assert!(err.detail.contains("several platforms"), "{err}");
    let err = engine
        .route(&plan, "inventory.get", &json!({"sku_ids": ["sku_nobody"]}))
        .await
        .unwrap_err();
    assert!(err.detail.contains("belongs to no platform"), "{err}");
}

#[tokio::test]
async fn timeouts_are_retried_on_reads() {
    let transport = "  timeout: 2s\n  attempt_timeout: 200ms\n  retries: 1\n  backoff: 10ms\n";
    let gw = start_with(Some(transport), SECRET, Catalog::sample()).await;
    gw.sim.push_fault(
        Fault::new(FaultKind::Slow)
            .delay_ms(1_000)
            .method("yanxuan.item.id.batch.get"),
    );
    gw.ok("product.list", json!({})).await;
    assert_eq!(gw.methods().len(), 2, "the timed-out attempt and the retry");
    // Without retries left, a timeout is a 504 the caller may retry.
    gw.sim.push_fault(
        Fault::new(FaultKind::Slow)
            .delay_ms(1_000)
            .times(2)
            .method("yanxuan.item.id.batch.get"),
    );
    let (status, problem) = gw.call("product.list", json!({})).await;
    assert_eq!(status, 504, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer within"),
        "{problem}"
    );
    assert_eq!(problem["retryable"], true);
}
