//! Round trips through the router (no socket), covering the checks, every method, faults and
//! the control API.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;
use tower::ServiceExt;

use crate::server::{Shared, router};
use crate::state::State;
use crate::{Catalog, Fault, FaultKind, SimConfig, format_timestamp, sign, signed_form};

const KEY: &str = "test-app-key";
const SECRET: &str = "test-app-secret";
/// 2024-06-01 12:00:00 in UTC+8.
const NOW: OffsetDateTime = datetime!(2024-06-01 04:00:00 UTC);

fn app_with(catalog: Catalog) -> (Arc<Shared>, Router) {
    let config = SimConfig::new(KEY, SECRET, catalog).fixed_now(NOW);
    let shared = Arc::new(Shared::new(State::new(config)));
    (Arc::clone(&shared), router(shared))
}

fn app() -> (Arc<Shared>, Router) {
    app_with(Catalog::sample())
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, String) {
    let response = app
        .clone()
        .oneshot(req)
        .await
        .expect("router is infallible");
    let status = response.status();
    let bytes = to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn post_form(app: &Router, body: String) -> (StatusCode, String) {
    let req = Request::post("/channel/api.json")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .expect("request");
    send(app, req).await
}

async fn post_json(app: &Router, path: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let (status, text) = send(app, req).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get_json(app: &Router, path: &str) -> Value {
    let req = Request::get(path).body(Body::empty()).expect("request");
    let (status, text) = send(app, req).await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_str(&text).expect("json")
}

/// A correctly signed call; returns the parsed body (HTTP status must be 200).
async fn call(app: &Router, method: &str, params: &[(&str, &str)]) -> Value {
    let (status, text) = post_form(app, signed_form(KEY, SECRET, method, NOW, params)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).expect("json body")
}

/// Sends exactly these fields, signing them with `secret` unless a `sign` is given.
async fn raw_call(app: &Router, fields: &[(&str, &str)]) -> Value {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = serde_urlencoded::to_string(&fields).expect("encode");
    let (_, text) = post_form(app, body).await;
    serde_json::from_str(&text).expect("json body")
}

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("<none>")
}

fn order_json(id: &str, lines: &[(&str, i64, &str)], exp_fee: &str, real_price: &str) -> String {
    json!({
        "orderId": id,
        "receiverName": "张三",
        "receiverMobile": "13800000000",
        "receiverProvinceName": "浙江省",
        "receiverCityName": "杭州市",
        "receiverDistrictName": "滨江区",
        "receiverAddressDetail": "网商路599号",
        "realPrice": real_price,
        "expFee": exp_fee,
        "orderSkus": lines.iter().map(|(sku, n, price)| json!({
            "skuId": sku, "saleCount": n, "originPrice": price
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

#[tokio::test]
async fn paging_through_the_catalog() {
    let (_, app) = app();
    let page1 = call(&app, "yanxuan.item.id.batch.get", &[("pageSize", "2")]).await;
    assert_eq!(code(&page1), "200");
    assert_eq!(page1["msg"], "success");
    let r = &page1["result"];
    assert_eq!(r["total"], 3);
    assert_eq!(r["pageNo"], 1);
    assert_eq!(r["nextPageNo"], 2);
    assert_eq!(r["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(r["items"][0]["id"], "1001");

    let page2 = call(
        &app,
        "yanxuan.item.id.batch.get",
        &[("pageNo", "2"), ("pageSize", "2")],
    )
    .await;
    let r = &page2["result"];
    assert_eq!(r["pageNo"], 2);
    assert_eq!(r["nextPageNo"], Value::Null);
    assert_eq!(
        r["items"][0],
        json!({
            "id": "1003",
            "name": "手工冷制皂(3块装)",
            "simpleDesc": "温和洁面，天然植物油",
            "status": 0,
            "skuList": [{
                "id": "100301", "displayString": "默认", "channelPrice": "12.50", "inventory": 100
            }]
        })
    );

    let defaults = call(&app, "yanxuan.item.id.batch.get", &[]).await;
    assert_eq!(
        defaults["result"]["items"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(defaults["result"]["nextPageNo"], Value::Null);

    let beyond = call(&app, "yanxuan.item.id.batch.get", &[("pageNo", "9")]).await;
    assert_eq!(beyond["result"]["items"], json!([]));
    assert_eq!(beyond["result"]["nextPageNo"], Value::Null);

    for (name, bad) in [
        ("pageSize", "101"),
        ("pageSize", "0"),
        ("pageNo", "0"),
        ("pageNo", "x"),
    ] {
        let v = call(&app, "yanxuan.item.id.batch.get", &[(name, bad)]).await;
        assert_eq!(code(&v), "400", "{name}={bad}");
        assert_eq!(v["result"], Value::Null);
    }
}

#[tokio::test]
async fn paging_a_large_catalog() {
    let (_, app) = app_with(Catalog::large(120, 2));
    let p1 = call(&app, "yanxuan.item.id.batch.get", &[("pageSize", "100")]).await;
    assert_eq!(p1["result"]["total"], 120);
    assert_eq!(p1["result"]["nextPageNo"], 2);
    let p2 = call(
        &app,
        "yanxuan.item.id.batch.get",
        &[("pageSize", "100"), ("pageNo", "2")],
    )
    .await;
    assert_eq!(p2["result"]["items"].as_array().map(Vec::len), Some(20));
    assert_eq!(p2["result"]["items"][0]["id"], "1000101");
    assert_eq!(p2["result"]["nextPageNo"], Value::Null);
    // An exact multiple of the page size: the last full page has no next page.
    let (_, app) = app_with(Catalog::large(100, 1));
    let p = call(
        &app,
        "yanxuan.item.id.batch.get",
        &[("pageSize", "50"), ("pageNo", "2")],
    )
    .await;
    assert_eq!(p["result"]["nextPageNo"], Value::Null);
}

#[tokio::test]
async fn common_checks_in_order() {
    let (shared, app) = app();
    let ts = format_timestamp(NOW);
    let m = "yanxuan.item.id.batch.get";
    let good = sign(
        SECRET,
        &[
            ("appKey".to_string(), KEY.to_string()),
            ("timestamp".to_string(), ts.clone()),
            ("method".to_string(), m.to_string()),
        ],
    );

    let v = raw_call(&app, &[("timestamp", &ts), ("method", m), ("sign", &good)]).await;
    assert_eq!(
        (code(&v), v["msg"].as_str()),
        ("400", Some("missing required parameter: appKey"))
    );
    let v = raw_call(
        &app,
        &[
            ("appKey", KEY),
            ("timestamp", ""),
            ("method", m),
            ("sign", &good),
        ],
    )
    .await;
    assert_eq!(v["msg"], "missing required parameter: timestamp");
    let v = raw_call(
        &app,
        &[("appKey", KEY), ("timestamp", &ts), ("sign", &good)],
    )
    .await;
    assert_eq!(v["msg"], "missing required parameter: method");
    let v = raw_call(&app, &[("appKey", KEY), ("timestamp", &ts), ("method", m)]).await;
    assert_eq!(v["msg"], "missing required parameter: sign");
    assert_eq!(v["result"], Value::Null);

    // Wrong key is reported before a wrong signature.
    let v = raw_call(
        &app,
        &[
            ("appKey", "other"),
            ("timestamp", &ts),
            ("method", m),
            ("sign", "X"),
        ],
    )
    .await;
    assert_eq!(
        (code(&v), v["msg"].as_str()),
        ("401", Some("invalid appKey"))
    );

    let v = raw_call(
        &app,
        &[
            ("appKey", KEY),
            ("timestamp", &ts),
            ("method", m),
            ("sign", "X"),
        ],
    )
    .await;
    assert_eq!((code(&v), v["msg"].as_str()), ("402", Some("invalid sign")));
    // The comparison is case-sensitive.
    let lower = good.to_lowercase();
    let v = raw_call(
        &app,
        &[
            ("appKey", KEY),
            ("timestamp", &ts),
            ("method", m),
            ("sign", &lower),
        ],
    )
    .await;
    assert_eq!(code(&v), "402");
    // Signed with another secret.
    let v: Value = serde_json::from_str(
        &post_form(&app, signed_form(KEY, "wrong", m, NOW, &[]))
            .await
            .1,
    )
    .expect("json");
    assert_eq!(code(&v), "402");

    let v = raw_call(
        &app,
        &[
            ("appKey", KEY),
            ("timestamp", &ts),
            ("method", m),
            ("sign", &good),
        ],
    )
    .await;
    assert_eq!(code(&v), "200");

    // Timestamp window: 10 minutes either way is fine, more is not.
    for (offset, expected) in [
        (-600, "200"),
        (600, "200"),
        (-601, "403"),
        (601, "403"),
        (-3600, "403"),
    ] {
        let at = NOW + time::Duration::seconds(offset);
        let v: Value = serde_json::from_str(
            &post_form(&app, signed_form(KEY, SECRET, m, at, &[]))
                .await
                .1,
        )
        .expect("json");
        assert_eq!(code(&v), expected, "offset {offset}s");
        if expected == "403" {
            assert_eq!(v["msg"], "timestamp expired");
        }
    }

    // A signed but unparsable timestamp.
    let fields = [
        ("appKey".to_string(), KEY.to_string()),
        ("timestamp".to_string(), "2024-06-01T12:00:00".to_string()),
        ("method".to_string(), m.to_string()),
    ];
    let s = sign(SECRET, &fields);
    let v = raw_call(
        &app,
        &[
            ("appKey", KEY),
            ("timestamp", "2024-06-01T12:00:00"),
            ("method", m),
            ("sign", &s),
        ],
    )
    .await;
    assert_eq!(code(&v), "400");

    let v = call(&app, "yanxuan.no.such.method", &[]).await;
    assert_eq!(
        (code(&v), v["msg"].as_str()),
        ("404", Some("unknown method: yanxuan.no.such.method"))
    );

    // Empty extra fields are not signed, so adding one keeps the signature valid.
    let fields = [
        ("appKey".to_string(), KEY.to_string()),
        ("timestamp".to_string(), ts.clone()),
        ("method".to_string(), m.to_string()),
    ];
    let s = sign(SECRET, &fields);
    let v = raw_call(
        &app,
        &[
            ("appKey", KEY),
            ("timestamp", &ts),
            ("method", m),
            ("pageNo", ""),
            ("sign", &s),
        ],
    )
    .await;
    assert_eq!(code(&v), "200");

    let outcomes: Vec<String> = shared
        .lock()
        .requests()
        .into_iter()
        .map(|r| r.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            "400", "400", "400", "400", "401", "402", "402", "402", "ok", "ok", "ok", "403", "403",
            "403", "400", "404", "ok"
        ]
    );
}

#[tokio::test]
async fn wrong_content_type_and_verb() {
    let (shared, app) = app();
    let req = Request::post("/channel/api.json")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(signed_form(
            KEY,
            SECRET,
            "yanxuan.item.id.batch.get",
            NOW,
            &[],
        )))
        .expect("request");
    let (status, text) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(code(&v), "400");

    // A charset parameter is fine.
    let req = Request::post("/channel/api.json")
        .header(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=UTF-8",
        )
        .body(Body::from(signed_form(
            KEY,
            SECRET,
            "yanxuan.item.id.batch.get",
            NOW,
            &[],
        )))
        .expect("request");
    let (_, text) = send(&app, req).await;
    assert_eq!(code(&serde_json::from_str(&text).expect("json")), "200");

    let req = Request::get("/channel/api.json")
        .body(Body::empty())
        .expect("request");
    let (status, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    // Garbage bytes do not panic.
    let (status, text) = post_form(&app, "%%%&&==\u{0}\u{fffd}".to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(code(&serde_json::from_str(&text).expect("json")), "400");

    let outcomes: Vec<String> = shared
        .lock()
        .requests()
        .into_iter()
        .map(|r| r.outcome)
        .collect();
    assert_eq!(outcomes, ["400", "ok", "405", "400"]);
}

#[tokio::test]
async fn item_batch_and_inventory() {
    let (_, app) = app();
    let v = call(
        &app,
        "yanxuan.item.batch.get",
        &[("itemIds", "1002, 9999,1001")],
    )
    .await;
    assert_eq!(code(&v), "200");
    let ids: Vec<&str> = v["result"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["1002", "1001"]);
    assert_eq!(v["result"][0]["skuList"][2]["channelPrice"], "559.50");
    assert_eq!(v["result"][0]["status"], 1);

    let v = call(&app, "yanxuan.item.batch.get", &[("itemIds", "9999")]).await;
    assert_eq!(
        (code(&v), v["msg"].as_str()),
        ("6002", Some("item not found"))
    );
    let v = call(&app, "yanxuan.item.batch.get", &[]).await;
    assert_eq!(code(&v), "400");

    let v = call(
        &app,
        "yanxuan.item.inventory.get",
        &[("skuIds", "100101,nope,100202")],
    )
    .await;
    assert_eq!(
        v["result"],
        json!([{"skuId": "100101", "inventory": 20}, {"skuId": "100202", "inventory": 0}])
    );
    let v = call(&app, "yanxuan.item.inventory.get", &[("skuIds", "nope")]).await;
    assert_eq!((code(&v), &v["result"]), ("200", &json!([])));
}

#[tokio::test]
async fn order_lifecycle() {
    let (shared, app) = app();
    let create = "yanxuan.order.paid.create";
    // 2 × 299.00 + 1 × 12.50 + 10.00 shipping = 620.50
    let good = order_json(
        "CH-1",
        &[("100101", 2, "299.00"), ("100301", 1, "12.5")],
        "10.00",
        "620.50",
    );

    let v = call(&app, create, &[("order", &good)]).await;
    assert_eq!(
        v,
        json!({"code": "200", "msg": "success", "result": {"orderId": "CH-1"}})
    );
    assert_eq!(shared.lock().inventory("100101"), Some(18));
    assert_eq!(shared.lock().inventory("100301"), Some(99));

    // Idempotent: same answer, nothing reserved twice.
    let again = call(&app, create, &[("order", &good)]).await;
    assert_eq!(again, v);
    assert_eq!(shared.lock().inventory("100101"), Some(18));

    let v = call(&app, "yanxuan.order.paid.get", &[("orderId", "CH-1")]).await;
    assert_eq!(
        v["result"],
        json!({
            "orderId": "CH-1",
            "orderStatus": "PAID",
            "receiverName": "张三",
            "receiverMobile": "13800000000",
            "receiverProvinceName": "浙江省",
            "receiverCityName": "杭州市",
            "receiverDistrictName": "滨江区",
            "receiverAddressDetail": "网商路599号",
            "orderSkus": [
                {"skuId": "100101", "saleCount": 2, "originPrice": "299.00"},
                {"skuId": "100301", "saleCount": 1, "originPrice": "12.50"}
            ],
            "realPrice": "620.50",
            "expFee": "10.00"
        })
    );
    let v = call(&app, "yanxuan.order.express.get", &[("orderId", "CH-1")]).await;
    assert_eq!(v["result"], json!({"orderId": "CH-1", "packages": []}));

    // Cancel releases the inventory; cancelling again still answers 1.
    let v = call(&app, "yanxuan.order.paid.cancel", &[("orderId", "CH-1")]).await;
    assert_eq!(v["result"], json!({"orderId": "CH-1", "cancelStatus": 1}));
    assert_eq!(shared.lock().inventory("100101"), Some(20));
    let v = call(&app, "yanxuan.order.paid.cancel", &[("orderId", "CH-1")]).await;
    assert_eq!(v["result"]["cancelStatus"], 1);
    assert_eq!(shared.lock().inventory("100101"), Some(20));
    let v = call(&app, "yanxuan.order.paid.get", &[("orderId", "CH-1")]).await;
    assert_eq!(v["result"]["orderStatus"], "CANCELLED");

    // A shipped order cannot be cancelled.
    let o2 = order_json("CH-2", &[("100102", 5, "299.00")], "0.00", "1495.00");
    assert_eq!(code(&call(&app, create, &[("order", &o2)]).await), "200");
    assert_eq!(shared.lock().inventory("100102"), Some(0));
    let (status, shipped) = post_json(
        &app,
        "/__sim/ship",
        json!({"orderId": "CH-2", "expressCompany": "顺丰速运", "expressNo": "SF1234567890"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shipped["orderStatus"], "SHIPPED");
    let v = call(&app, "yanxuan.order.paid.cancel", &[("orderId", "CH-2")]).await;
    assert_eq!(v["result"], json!({"orderId": "CH-2", "cancelStatus": 2}));
    assert_eq!(shared.lock().inventory("100102"), Some(0));
    let v = call(&app, "yanxuan.order.express.get", &[("orderId", "CH-2")]).await;
    assert_eq!(
        v["result"],
        json!({"orderId": "CH-2", "packages": [
            {"expressCompany": "顺丰速运", "expressNo": "SF1234567890", "shipTime": "2024-06-01 12:00:00"}
        ]})
    );

    // Shipping a cancelled or unknown order is refused by the control API.
    let (status, _) = post_json(
        &app,
        "/__sim/ship",
        json!({"orderId": "CH-1", "expressCompany": "x", "expressNo": "y"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = post_json(
        &app,
        "/__sim/ship",
        json!({"orderId": "nope", "expressCompany": "x", "expressNo": "y"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    for m in [
        "yanxuan.order.paid.get",
        "yanxuan.order.paid.cancel",
        "yanxuan.order.express.get",
    ] {
        let v = call(&app, m, &[("orderId", "nope")]).await;
        assert_eq!(
            (code(&v), v["msg"].as_str()),
            ("6003", Some("order not found")),
            "{m}"
        );
        assert_eq!(code(&call(&app, m, &[]).await), "400", "{m}");
    }

    let orders = get_json(&app, "/__sim/orders").await;
    assert_eq!(orders.as_array().map(Vec::len), Some(2));
    assert_eq!(orders[0]["receiverDistrictName"], "滨江区");
    assert_eq!(orders[0]["expFee"], "10.00");
    assert_eq!(orders[0]["createdAt"], "2024-06-01 12:00:00");
}

#[tokio::test]
async fn order_rejections() {
    let (shared, app) = app();
    let create = "yanxuan.order.paid.create";
    let cases = [
        ("{not json".to_string(), "400"),
        ("[1]".to_string(), "400"),
        (json!({"orderId": "X"}).to_string(), "400"),
        (order_json("X", &[], "0", "0"), "400"),
        (
            order_json("X", &[("100101", 1, "2.999")], "0", "2.99"),
            "400",
        ),
        (
            order_json("X", &[("100101", -1, "299.00")], "0", "0"),
            "400",
        ),
        (
            order_json("X", &[("999999", 1, "1.00")], "0", "1.00"),
            "6002",
        ),
        // 100102 has 5: a single line over it, and two lines that add up over it.
        (
            order_json("X", &[("100102", 6, "299.00")], "0", "1794.00"),
            "6001",
        ),
        (
            order_json(
                "X",
                &[("100102", 3, "299.00"), ("100102", 3, "299.00")],
                "0",
                "1794.00",
            ),
            "6001",
        ),
        (
            order_json("X", &[("100202", 1, "499.00")], "0", "499.00"),
            "6001",
        ),
        (
            order_json("X", &[("100101", 2, "299.00")], "10.00", "609.00"),
            "6005",
        ),
        (
            order_json("X", &[("100101", 2, "299.00")], "10.00", "607.99"),
            "6005",
        ),
    ];
    for (order, expected) in &cases {
        let v = call(&app, create, &[("order", order)]).await;
        assert_eq!(code(&v), *expected, "{order}");
        assert_eq!(v["result"], Value::Null);
    }
    let v = call(
        &app,
        create,
        &[(
            "order",
            &order_json("X", &[("100102", 6, "299.00")], "0", "1794.00"),
        )],
    )
    .await;
    assert_eq!(v["msg"], "inventory not enough");
    let v = call(
        &app,
        create,
        &[(
            "order",
            &order_json("X", &[("100101", 1, "299.00")], "0", "1.00"),
        )],
    )
    .await;
    assert_eq!(v["msg"], "price mismatch");
    let v = call(&app, create, &[]).await;
    assert_eq!(code(&v), "400");

    // Nothing was reserved, no order stored.
    assert_eq!(shared.lock().inventory("100101"), Some(20));
    assert_eq!(shared.lock().inventory("100102"), Some(5));
    assert!(shared.lock().orders().is_empty());

    // After raising the inventory the same order goes through; the district is optional.
    let (status, v) = post_json(
        &app,
        "/__sim/inventory",
        json!({"skuId": "100202", "inventory": 2}),
    )
    .await;
    assert_eq!(
        (status, v),
        (StatusCode::OK, json!({"skuId": "100202", "inventory": 2}))
    );
    let mut order: Value = serde_json::from_str(&order_json(
        "Y",
        &[("100202", 2, "499.00")],
        "0.05",
        "998.05",
    ))
    .expect("json");
    if let Some(o) = order.as_object_mut() {
        o.remove("receiverDistrictName");
    }
    let v = call(&app, create, &[("order", &order.to_string())]).await;
    assert_eq!(code(&v), "200", "{v}");
    assert_eq!(shared.lock().inventory("100202"), Some(0));
    assert_eq!(
        shared
            .lock()
            .order("Y")
            .map(|o| o["receiverDistrictName"].clone()),
        Some(Value::Null)
    );

    let (status, _) = post_json(
        &app,
        "/__sim/inventory",
        json!({"skuId": "nope", "inventory": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post_json(&app, "/__sim/inventory", json!({"sku": 1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn faults_and_the_request_log() {
    let (_, app) = app();
    let inv = "yanxuan.item.inventory.get";
    let p: &[(&str, &str)] = &[("skuIds", "100101")];

    let (status, v) = post_json(
        &app,
        "/__sim/faults",
        json!({"method": "yanxuan.order.paid.create", "kind": "http_500"}),
    )
    .await;
    assert_eq!(
        (status, v),
        (StatusCode::OK, json!({"queued": true, "pending": 1}))
    );
    let (_, v) = post_json(
        &app,
        "/__sim/faults",
        json!({"method": null, "kind": "http_503", "times": 2}),
    )
    .await;
    assert_eq!(v["pending"], 2);

    // The create-only fault is skipped; the wildcard one applies twice.
    for _ in 0..2 {
        let (status, body) = post_form(&app, signed_form(KEY, SECRET, inv, NOW, p)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("<html>"));
    }
    assert_eq!(code(&call(&app, inv, p).await), "200");

    let order = order_json("F-1", &[("100101", 1, "299.00")], "0", "299.00");
    let (status, _) = post_form(
        &app,
        signed_form(
            KEY,
            SECRET,
            "yanxuan.order.paid.create",
            NOW,
            &[("order", &order)],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);

    post_json(&app, "/__sim/faults", json!({"kind": "malformed"})).await;
    let (status, body) = post_form(&app, signed_form(KEY, SECRET, inv, NOW, p)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "{\"code\": \"200\", \"result\": ")
    );

    post_json(
        &app,
        "/__sim/faults",
        json!({"kind": "business", "code": "9001", "msg": "系统繁忙"}),
    )
    .await;
    let v = call(&app, inv, p).await;
    assert_eq!(
        v,
        json!({"code": "9001", "msg": "系统繁忙", "result": null})
    );

    // Slow: processed, answered after the delay.
    post_json(
        &app,
        "/__sim/faults",
        json!({"kind": "slow", "delay_ms": 20}),
    )
    .await;
    let started = std::time::Instant::now();
    let v = call(&app, inv, p).await;
    assert_eq!(code(&v), "200");
    assert!(started.elapsed() >= std::time::Duration::from_millis(20));

    // Timeout with a short delay ends in a 504.
    post_json(
        &app,
        "/__sim/faults",
        json!({"kind": "timeout", "delay_ms": 10}),
    )
    .await;
    let (status, _) = post_form(&app, signed_form(KEY, SECRET, inv, NOW, p)).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);

    // Faults apply before the signature check.
    post_json(&app, "/__sim/faults", json!({"kind": "http_500"})).await;
    let (status, _) = post_form(&app, "method=x&sign=bad".to_string()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);

    // times 0 queues nothing; unknown kinds are refused.
    let (_, v) = post_json(
        &app,
        "/__sim/faults",
        json!({"kind": "http_500", "times": 0}),
    )
    .await;
    assert_eq!(v, json!({"queued": false, "pending": 0}));
    let (status, _) = post_json(&app, "/__sim/faults", json!({"kind": "explode"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let log = get_json(&app, "/__sim/requests").await;
    let pairs: Vec<(String, String)> = log
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["method"].as_str().unwrap_or("").to_string(),
                        r["outcome"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let expected: Vec<(String, String)> = [
        (inv, "fault:http_503"),
        (inv, "fault:http_503"),
        (inv, "ok"),
        ("yanxuan.order.paid.create", "fault:http_500"),
        (inv, "fault:malformed"),
        (inv, "fault:business"),
        (inv, "fault:slow"),
        (inv, "fault:timeout"),
        ("x", "fault:http_500"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(pairs, expected);
    let at: Vec<u64> = log
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["at_ms"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(at.len(), 9);
    assert!(at.windows(2).all(|w| w[0] <= w[1]));
    assert!(at.iter().all(|t| *t > 1_600_000_000_000));

    // The create that hit http_500 was not processed.
    assert_eq!(get_json(&app, "/__sim/orders").await, json!([]));

    // Reset clears the log and the queue.
    post_json(&app, "/__sim/faults", json!({"kind": "http_500"})).await;
    let (_, v) = post_json(&app, "/__sim/reset", json!({})).await;
    assert_eq!(v, json!({"ok": true}));
    assert_eq!(get_json(&app, "/__sim/requests").await, json!([]));
    assert_eq!(code(&call(&app, inv, p).await), "200");
}

#[test]
fn fault_json_defaults() {
    let f: Fault = serde_json::from_value(json!({"kind": "slow"})).expect("fault");
    assert_eq!(f, Fault::new(FaultKind::Slow));
    let f: Fault = serde_json::from_value(json!({
        "method": "m", "kind": "business", "times": 3, "delay_ms": 5, "code": "6001", "msg": "m"
    }))
    .expect("fault");
    assert_eq!(
        f,
        Fault::business("6001", "m")
            .method("m")
            .times(3)
            .delay_ms(5)
    );
}
