//! Engine benchmarks: building and signing a request, and mapping a 50-SKU answer.
//!
//! `cargo bench` prints one line per case: the median time per operation over 15 batches.
//! Figures and the machine they were taken on are in BENCHMARKS.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use entrepot::engine::build::{BuildInput, build};
use entrepot::engine::mapping::map_document;
use serde_json::{Map, Value, json};

fn median_per_op(mut f: impl FnMut(), ops_per_batch: u32) -> Duration {
    // Warm up, then time batches.
    for _ in 0..ops_per_batch {
        f();
    }
    let mut samples: Vec<Duration> = (0..15)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..ops_per_batch {
                f();
            }
            start.elapsed() / ops_per_batch
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root");
    // The sample platform: the one platform in platforms/.
    let compiled = entrepot::compile::compile_dir(&root.join("platforms"), &|_| None);
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );
    let p = compiled
        .plan
        .platforms
        .values()
        .next()
        .expect("a sample platform")
        .clone();
    let creds: Map<String, Value> = [
        ("app_key", "bd8d8cd62fb5489586858161efcea388"),
        ("app_secret", "db4c3fe3515543bfb1cf6beb6f3e3d56"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), json!(v)))
    .collect();
    let now = time::OffsetDateTime::now_utc();

    let list = &p.operations["product.list"];
    let input = json!({"page_size": 50});
    let t = median_per_op(
        || {
            black_box(
                build(
                    &p,
                    list,
                    &BuildInput {
                        input: &input,
                        credentials: &creds,
                        now,
                        nonce: None,
                        token: None,
                    },
                )
                .expect("build"),
            );
        },
        2_000,
    );
    println!(
        "build+sign product.list (form, md5 recipe)      {:>10.2?}/op",
        t
    );

    let inv = &p.operations["inventory.get"];
    let skus: Vec<String> = (0..50).map(|i| format!("10{i:04}")).collect();
    let input = json!({"sku_ids": skus});
    let t = median_per_op(
        || {
            black_box(
                build(
                    &p,
                    inv,
                    &BuildInput {
                        input: &input,
                        credentials: &creds,
                        now,
                        nonce: None,
                        token: None,
                    },
                )
                .expect("build"),
            );
        },
        2_000,
    );
    println!(
        "build+sign inventory.get (50 sku ids)           {:>10.2?}/op",
        t
    );

    let create = &p.operations["order.create"];
    let order = json!({
        "order_id": "mall-1",
        "lines": (0..5).map(|i| json!({"sku_id": format!("s{i}"), "quantity": 2, "unit_price": {"amount": 1990, "currency": "CNY"}})).collect::<Vec<_>>(),
        "address": {"name": "张三", "phone": "13800000000", "province": "浙江省", "city": "杭州市", "detail": "文三路 1 号"},
        "total": {"amount": 19900, "currency": "CNY"}
    });
    let t = median_per_op(
        || {
            black_box(
                build(
                    &p,
                    create,
                    &BuildInput {
                        input: &order,
                        credentials: &creds,
                        now,
                        nonce: None,
                        token: None,
                    },
                )
                .expect("build"),
            );
        },
        2_000,
    );
    println!(
        "build+sign order.create (5 lines, JSON in form) {:>10.2?}/op",
        t
    );

    // A product.list answer with 10 products of 5 SKUs each: 50 SKUs.
    let items: Vec<Value> = (0..10)
        .map(|i| {
            json!({
                "id": format!("{}", 1000 + i), "name": format!("商品{i}"), "simpleDesc": "描述", "status": 1,
                "skuList": (0..5).map(|j| json!({"id": format!("{}{j:02}", 1000 + i), "displayString": "规格", "channelPrice": "129.90", "inventory": 7})).collect::<Vec<_>>()
            })
        })
        .collect();
    let answer = json!({"code": "200", "msg": "success", "result": {"total": 10, "pageNo": 1, "nextPageNo": null, "items": items}});
    let mapping = list.output.as_ref().expect("mapping");
    let extra = Map::new();
    let t = median_per_op(
        || {
            black_box(map_document(mapping, &answer, &extra).expect("map"));
        },
        1_000,
    );
    println!(
        "map product.list answer (10 spu, 50 sku)        {:>10.2?}/op",
        t
    );

    let bytes = serde_json::to_vec(&answer).expect("json");
    let t = median_per_op(
        || {
            let doc = entrepot::engine::decode::decode(
                entrepot::config::platform::BodyFormat::Json,
                &bytes,
            )
            .expect("decode");
            black_box(map_document(mapping, &doc, &extra).expect("map"));
        },
        1_000,
    );
    println!(
        "decode+map the same answer ({} bytes)         {:>10.2?}/op",
        bytes.len(),
        t
    );
}
