//! Reconciliation (`GET /v1/reconciliation`, `entrepot reconcile`) against both sample platforms:
//! orders are created through the saga, drift is planted in the simulators behind the gateway's
//! back, and the report must list exactly the planted mismatches, with the platform's values as
//! the simulators themselves hold them.

use std::time::Duration;

use channel_sim::Drift as YxDrift;
use rest_sim::Drift as AcmeDrift;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::saga::{APP_KEY, APP_SECRET, Gateway, order, platform_text, start, start_with};

/// Now moved by `secs`, RFC 3339.
fn stamp(secs: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds(secs))
        .format(&Rfc3339)
        .unwrap()
}

/// Pays each order and waits until its saga is `created`.
async fn create_all(gw: &Gateway, orders: &[(&str, Value)]) {
    for (id, body) in orders {
        let (status, answer) = gw.post(&format!("/v1/orders/{id}/paid"), body).await;
        assert_eq!(status, 202, "{answer}");
    }
    for (id, _) in orders {
        gw.saga_until(id, Duration::from_secs(20), |s| s["state"] == "created")
            .await;
    }
}

async fn report(gw: &Gateway, platform: &str, from: &str, to: &str) -> Value {
    let (status, report) = gw
        .get(&format!(
            "/v1/reconciliation?platform={platform}&from={from}&to={to}"
        ))
        .await;
    assert_eq!(status, 200, "{report}");
    report
}

/// `(kind, order_id, platform_order_id, field, entrepot, platform)` of each mismatch.
fn rows(report: &Value) -> Vec<(String, String, Value, Value, Value, Value)> {
    report["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["kind"].as_str().unwrap().to_string(),
                m["order_id"].as_str().unwrap().to_string(),
                m["platform_order_id"].clone(),
                m["field"].clone(),
                m["entrepot"].clone(),
                m["platform"].clone(),
            )
        })
        .collect()
}

fn money(amount: i64, currency: &str) -> Value {
    json!({"amount": amount, "currency": currency})
}

#[tokio::test]
async fn reconciliation_finds_each_planted_mismatch_on_the_channel_platform() {
    let gw = start().await;
    let from = stamp(-60);
    let sofa = gw.sku("yanxuan", "100101").await; // 299.00, 20 in stock
    let quilt = gw.sku("yanxuan", "100201").await; // 399.00, 12 in stock
    let lines = [(sofa.as_str(), 1, 29900), (quilt.as_str(), 1, 39900)];
    let ids = ["R-OK", "R-STATUS", "R-AMOUNT", "R-LINE", "R-GONE"];
    let orders: Vec<(&str, Value)> = ids
        .iter()
        .map(|id| (*id, order(id, &lines, "CNY")))
        .collect();
    create_all(&gw, &orders).await;
    // Nothing planted yet: nothing to report.
    let clean = report(&gw, "yanxuan", &from, &stamp(60)).await;
    assert_eq!(clean["mismatches"], json!([]), "{clean}");
    assert_eq!(clean["summary"]["compared"], 5, "{clean}");

    // The drift, planted behind the gateway's back.
    let shipped = gw
        .yx
        .drift(YxDrift::Status {
            order_id: "R-STATUS".into(),
            order_status: "SHIPPED".into(),
        })
        .unwrap();
    assert_eq!(shipped["orderStatus"], "SHIPPED");
    let amount = gw
        .yx
        .drift(YxDrift::Amount {
            order_id: "R-AMOUNT".into(),
            real_price_fen: 12345,
        })
        .unwrap();
    let line = gw
        .yx
        .drift(YxDrift::Line {
            order_id: "R-LINE".into(),
            sku_id: "100201".into(),
            sale_count: 2,
            origin_price_fen: 100,
        })
        .unwrap();
    gw.yx
        .drift(YxDrift::Delete {
            order_id: "R-GONE".into(),
        })
        .unwrap();
    gw.yx
        .drift(YxDrift::Create {
            order_id: "R-FOREIGN".into(),
            sku_id: "100101".into(),
            sale_count: 1,
            origin_price_fen: 29900,
        })
        .unwrap();
    // The platform's values, as the simulator holds them.
    let sim_total = channel_sim::parse_yuan(amount["realPrice"].as_str().unwrap()).unwrap();
    let sim_line = line["orderSkus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["skuId"] == "100201")
        .unwrap()
        .clone();
    let sim_price = channel_sim::parse_yuan(sim_line["originPrice"].as_str().unwrap()).unwrap();

    let report = report(&gw, "yanxuan", &from, &stamp(60)).await;
    let null = Value::Null;
    assert_eq!(
        rows(&report),
        vec![
            (
                "amount".into(),
                "R-AMOUNT".into(),
                json!("R-AMOUNT"),
                json!("total"),
                money(69800, "CNY"),
                money(sim_total, "CNY")
            ),
            (
                "missing_in_entrepot".into(),
                "R-FOREIGN".into(),
                json!("R-FOREIGN"),
                null.clone(),
                null.clone(),
                json!("paid")
            ),
            (
                "missing_on_platform".into(),
                "R-GONE".into(),
                json!("R-GONE"),
                null.clone(),
                json!("paid"),
                null.clone()
            ),
            (
                "line".into(),
                "R-LINE".into(),
                json!("R-LINE"),
                json!(format!("lines[{quilt}]")),
                json!({"sku_id": quilt, "quantity": 1, "unit_price": money(39900, "CNY")}),
                json!({"sku_id": quilt, "quantity": sim_line["saleCount"], "unit_price": money(sim_price, "CNY")})
            ),
            (
                "status".into(),
                "R-STATUS".into(),
                json!("R-STATUS"),
                json!("status"),
                json!("paid"),
                json!("shipped")
            ),
        ],
        "{report}"
    );
    let summary = &report["summary"];
    assert_eq!(summary["recorded"], 5, "{report}");
    assert_eq!(summary["compared"], 5, "{report}");
    assert_eq!(summary["listed"], 5, "{report}");
    assert_eq!(summary["mismatches"], 5, "{report}");
    assert_eq!(
        summary["by_kind"],
        json!({"amount": 1, "line": 1, "missing_in_entrepot": 1, "missing_on_platform": 1, "status": 1})
    );
    assert_eq!(report["missing_in_entrepot_checked"], true);
    assert_eq!(report["unchecked"], json!([]));

    // A window without those orders has nothing to compare, but still lists the platform's.
    let before = report_status(&gw, "platform=yanxuan&from=2020-01-01&to=2020-01-02").await;
    assert_eq!(before.0, 200, "{}", before.1);
    assert_eq!(before.1["summary"]["recorded"], 0);
    assert_eq!(before.1["mismatches"], json!([]));
}

async fn report_status(gw: &Gateway, query: &str) -> (u16, Value) {
    gw.get(&format!("/v1/reconciliation?{query}")).await
}

#[tokio::test]
async fn reconciliation_finds_each_planted_mismatch_on_the_rest_platform() {
    planted_mismatches_on_the_rest_platform(&start().await).await;
}

/// The same where the platform lists orders only over windows of at most 30 s: the report's
/// two minutes are listed window by window, back to back, and it finds the same mismatches.
#[tokio::test]
async fn reconciliation_lists_a_windowed_platform_window_by_window() {
    let gw = start_with(None, Some(Duration::from_secs(30))).await;
    let (from, to) = planted_mismatches_on_the_rest_platform(&gw).await;
    let lists: Vec<(OffsetDateTime, OffsetDateTime)> = gw
        .acme
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == "/v2/orders" && !r.query.contains("cursor="))
        .map(|r| {
            let param = |name: &str| {
                let v = r
                    .query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                    .unwrap()
                    .replace("%3A", ":")
                    .replace("%2B", "+");
                OffsetDateTime::parse(&v, &Rfc3339).unwrap()
            };
            (param("created_from"), param("created_to"))
        })
        .collect();
    let parse = |t: &str| OffsetDateTime::parse(t, &Rfc3339).unwrap();
    assert_eq!(lists.first().map(|w| w.0), Some(parse(&from)), "{lists:?}");
    assert_eq!(lists.last().map(|w| w.1), Some(parse(&to)), "{lists:?}");
    for pair in lists.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "back to back: {pair:?}");
    }
    assert!(
        lists
            .iter()
            .all(|(f, t)| *t - *f <= time::Duration::seconds(30))
    );
    // A little over 120 s (the report's end is taken after the orders were made) in windows
    // of 30 s.
    let span = (parse(&to) - parse(&from)).as_seconds_f64();
    assert_eq!(lists.len(), (span / 30.0).ceil() as usize, "{lists:?}");
}

/// Plants one mismatch of each kind on the REST simulator and checks the report; returns the
/// report's window.
async fn planted_mismatches_on_the_rest_platform(gw: &Gateway) -> (String, String) {
    let from = stamp(-60);
    let shirt = gw.sku("acme-rest", "SHIRT-M").await; // 49.90
    let cups = gw.sku("acme-rest", "CUPS-2").await; // 19.99
    let lines = [(shirt.as_str(), 1, 4990), (cups.as_str(), 2, 1999)];
    let ids = ["A-OK", "A-STATUS", "A-AMOUNT", "A-LINE", "A-GONE"];
    let orders: Vec<(&str, Value)> = ids
        .iter()
        .map(|id| (*id, order(id, &lines, "EUR")))
        .collect();
    create_all(gw, &orders).await;
    let mut api_id = std::collections::HashMap::new();
    for id in ids {
        let (_, saga) = gw.get(&format!("/v1/orders/{id}")).await;
        let pid = saga["parts"][0]["platform_order_id"]
            .as_str()
            .unwrap()
            .to_string();
        api_id.insert(id, pid);
    }
    let shipped = gw
        .acme
        .drift(AcmeDrift::Status {
            order_id: api_id["A-STATUS"].clone(),
            status: "shipped".into(),
        })
        .unwrap();
    let amount = gw
        .acme
        .drift(AcmeDrift::Amount {
            order_id: api_id["A-AMOUNT"].clone(),
            total_cents: 1,
        })
        .unwrap();
    let line = gw
        .acme
        .drift(AcmeDrift::Line {
            order_id: api_id["A-LINE"].clone(),
            sku: "CUPS-2".into(),
            quantity: 3,
            unit_price_cents: 1500,
        })
        .unwrap();
    gw.acme
        .drift(AcmeDrift::Delete {
            order_id: api_id["A-GONE"].clone(),
        })
        .unwrap();
    let foreign = gw
        .acme
        .drift(AcmeDrift::Create {
            reference: "A-FOREIGN".into(),
            sku: "SHIRT-M".into(),
            quantity: 1,
            unit_price_cents: 4990,
        })
        .unwrap();
    let sim_total = rest_sim::parse_cents(amount["total"].as_str().unwrap()).unwrap();
    let sim_line = line["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["sku"] == "CUPS-2")
        .unwrap()
        .clone();
    let sim_price = rest_sim::parse_cents(sim_line["unit_price"].as_str().unwrap()).unwrap();

    let to = stamp(60);
    let report = report(gw, "acme-rest", &from, &to).await;
    let null = Value::Null;
    let total = 4990 + 2 * 1999;
    assert_eq!(
        rows(&report),
        vec![
            (
                "amount".into(),
                "A-AMOUNT".into(),
                json!(api_id["A-AMOUNT"]),
                json!("total"),
                money(total, "EUR"),
                money(sim_total, "EUR")
            ),
            (
                "missing_in_entrepot".into(),
                "A-FOREIGN".into(),
                foreign["id"].clone(),
                null.clone(),
                null.clone(),
                json!("paid")
            ),
            (
                "missing_on_platform".into(),
                "A-GONE".into(),
                json!(api_id["A-GONE"]),
                null.clone(),
                json!("paid"),
                null.clone()
            ),
            (
                "line".into(),
                "A-LINE".into(),
                json!(api_id["A-LINE"]),
                json!(format!("lines[{cups}]")),
                json!({"sku_id": cups, "quantity": 2, "unit_price": money(1999, "EUR")}),
                json!({"sku_id": cups, "quantity": sim_line["quantity"], "unit_price": money(sim_price, "EUR")})
            ),
            (
                "status".into(),
                "A-STATUS".into(),
                json!(api_id["A-STATUS"]),
                json!("status"),
                json!("paid"),
                json!(if shipped["status"] == "shipped" {
                    "shipped"
                } else {
                    "?"
                })
            ),
        ],
        "{report}"
    );
    assert_eq!(report["summary"]["compared"], 5, "{report}");
    assert_eq!(report["summary"]["listed"], 5, "{report}");
    assert_eq!(report["unchecked"], json!([]));
    (from, to)
}

#[tokio::test]
async fn reconciliation_refuses_bad_requests_with_what_to_fix() {
    let gw = start().await;
    for (query, status, words) in [
        ("from=2024-05-01&to=2024-05-02", 400, "platform"),
        (
            "platform=nowhere&from=2024-05-01&to=2024-05-02",
            404,
            "nowhere",
        ),
        ("platform=yanxuan&to=2024-05-02", 400, "from and to"),
        (
            "platform=yanxuan&from=yesterday&to=2024-05-02",
            400,
            "from 'yesterday'",
        ),
        (
            "platform=yanxuan&from=2024-05-02&to=2024-05-01",
            400,
            "before",
        ),
        (
            "platform=yanxuan&from=2024-01-01&to=2024-03-01",
            400,
            "31 days",
        ),
    ] {
        let (got, problem) = report_status(&gw, query).await;
        assert_eq!(got, status, "{query}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(words),
            "{query}: {problem}"
        );
    }
}

#[tokio::test]
async fn the_reconcile_command_prints_csv() {
    let gw = start().await;
    let from = stamp(-60);
    let sofa = gw.sku("yanxuan", "100101").await;
    let orders: Vec<(&str, Value)> = ["C-1", "C-2"]
        .iter()
        .map(|id| (*id, order(id, &[(&sofa, 1, 29900)], "CNY")))
        .collect();
    create_all(&gw, &orders).await;
    gw.yx
        .drift(YxDrift::Status {
            order_id: "C-2".into(),
            order_status: "CANCELLED".into(),
        })
        .unwrap();
    let to = stamp(60);
    // The command reads the same store through its own gateway file.
    let dir = gw.dir.path().to_path_buf();
    let platforms = dir.join("platforms");
    std::fs::create_dir_all(&platforms).unwrap();
    std::fs::write(
        platforms.join("yanxuan.yaml"),
        platform_text("yanxuan.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.join("credentials.yaml"),
        format!("yanxuan:\n  app_key: {APP_KEY}\n  app_secret: {APP_SECRET}\n"),
    )
    .unwrap();
    let config = dir.join("entrepot.yaml");
    std::fs::write(
        &config,
        format!(
            "store: {{ url: \"sqlite://{}/gw.db\" }}\nplatforms_dir: platforms\ncredentials_file: credentials.yaml\n",
            dir.display()
        ),
    )
    .unwrap();
    let base = gw.yx.base_url();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_entrepot"))
            .args([
                "reconcile",
                "yanxuan",
                "--from",
                &from,
                "--to",
                &to,
                "--format",
                "csv",
            ])
            .arg("--config")
            .arg(&config)
            .env("YANXUAN_BASE_URL", base)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout,
        "kind,order_id,platform_order_id,field,entrepot,platform,detail\n\
         status,C-2,C-2,status,paid,cancelled,\n",
        "{stderr}"
    );
    assert!(
        stderr.contains("yanxuan: 2 recorded orders") && stderr.contains("1 mismatches (status 1)"),
        "{stderr}"
    );
    // Bad input: a clear error and exit 1.
    let config = dir.join("entrepot.yaml");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_entrepot"))
            .args([
                "reconcile",
                "yanxuan",
                "--from",
                "soon",
                "--to",
                "2024-05-01",
            ])
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("from 'soon' is not a time"));
}
