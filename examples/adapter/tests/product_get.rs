//! The adapter against the simulator: `product.get` answers what the gateway answers for the
//! same product (written out by hand from the simulator's sample catalog), ids allocated in the
//! gateway's `<kind>_<32 hex>` format.

// Test helpers may fail loudly.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;

use adapter::{Adapter, Config};
use channel_sim::{Catalog, SimConfig, Simulator};
use serde_json::{Value, json};

async fn start() -> (Simulator, String) {
    let sim = Simulator::start(SimConfig::new("K", "S", Catalog::sample()))
        .await
        .unwrap();
    let adapter = Adapter::new(Config {
        base_url: sim.base_url(),
        app_key: "K".into(),
        app_secret: "S".into(),
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = adapter::server::router(Arc::new(adapter));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (sim, url)
}

async fn call(url: &str, operation: &str, input: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/platforms/yanxuan/operations/{operation}"))
        .body(input.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

fn is_internal_id(v: &Value, kind: &str) -> bool {
    v.as_str().is_some_and(|s| {
        s.strip_prefix(kind)
            .and_then(|s| s.strip_prefix('_'))
            .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

#[tokio::test]
async fn product_get_answers_like_the_gateway() {
    let (_sim, url) = start().await;
    // Ids are learnt from a listing, as with the gateway.
    let (status, list) = call(&url, "product.list", json!({})).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 3);
    assert_eq!(list["next_cursor"], Value::Null);
    let spu_id = list["items"][0]["spu_id"].clone();
    assert!(is_internal_id(&spu_id, "spu"), "{spu_id}");

    let (status, got) = call(&url, "product.get", json!({ "spu_id": spu_id })).await;
    assert_eq!(status, 200, "{got}");
    let skus = &got["product"]["skus"];
    assert!(is_internal_id(&skus[0]["sku_id"], "sku"));
    assert!(is_internal_id(&skus[1]["sku_id"], "sku"));
    // The same ids as in the listing: allocated once.
    assert_eq!(skus[0]["sku_id"], list["items"][0]["skus"][0]["sku_id"]);
    let expected = json!({
        "product": {
            "spu_id": spu_id,
            "title": "日式和风懒人沙发",
            "description": "榻榻米上的慵懒时光",
            "status": "on_sale",
            "skus": [
                {
                    "sku_id": skus[0]["sku_id"],
                    "title": "颜色:米白",
                    "available": 20,
                    "price": { "amount": 29900, "currency": "CNY" }
                },
                {
                    "sku_id": skus[1]["sku_id"],
                    "title": "颜色:浅灰",
                    "available": 5,
                    "price": { "amount": 29900, "currency": "CNY" }
                }
            ]
        }
    });
    assert_eq!(got, expected);

    // Off-sale products and half-yuan prices.
    let soap = list["items"][2]["spu_id"].clone();
    let (_, got) = call(&url, "product.get", json!({ "spu_id": soap })).await;
    assert_eq!(got["product"]["status"], "off_sale");
    assert_eq!(got["product"]["skus"][0]["price"]["amount"], 1250);
}

#[tokio::test]
async fn unknown_ids_and_bad_input_are_problems() {
    let (_sim, url) = start().await;
    let (status, body) = call(&url, "product.get", json!({ "spu_id": "spu_nope" })).await;
    assert_eq!(status, 422);
    assert_eq!(body["type"], "https://entrepot.dev/problems/unknown-id");
    let (status, _) = call(&url, "product.get", json!({ "id": "x" })).await;
    assert_eq!(status, 400);
    let (status, _) = call(&url, "order.create", json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn platform_refusals_carry_the_code() {
    let sim = Simulator::start(SimConfig::new("K", "S", Catalog::sample()))
        .await
        .unwrap();
    // A wrong secret: the platform refuses the signature.
    let adapter = Adapter::new(Config {
        base_url: sim.base_url(),
        app_key: "K".into(),
        app_secret: "wrong".into(),
    })
    .unwrap();
    let Err(problem) = adapter
        .call("yanxuan.item.batch.get", &[("itemIds", "1001")])
        .await
    else {
        panic!("should be refused");
    };
    assert!(format!("{problem:?}").contains("402"), "{problem:?}");
}
