//! The simulator's own checks, through its HTTP API with a bare HTTP client.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Fault, FaultKind, SimConfig, Simulator, format_cents, parse_cents, sign_webhook};

/// A minimal HTTP/1.1 client: returns status, headers (lower-case names) and body.
async fn http(
    sim: &Simulator,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, Value) {
    let mut stream = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: sim\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8(answer).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    (
        status,
        headers,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

async fn token(sim: &Simulator) -> String {
    let (status, _, body) = http(
        sim,
        "POST",
        "/oauth/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "grant_type=client_credentials&client_id=cid&client_secret=csecret",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    format!("Bearer {}", body["access_token"].as_str().unwrap())
}

async fn start() -> Simulator {
    Simulator::start(SimConfig::new(
        "cid",
        "csecret",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ))
    .await
    .unwrap()
}

#[test]
fn money_is_exact_two_decimal_text() {
    assert_eq!(parse_cents("19.99"), Some(1999));
    assert_eq!(parse_cents("0.05"), Some(5));
    assert_eq!(parse_cents("129.05"), Some(12905));
    for bad in ["19.9", "19", "-1.00", "1e2", "01.00", ".99", "19.999", ""] {
        assert_eq!(parse_cents(bad), None, "{bad}");
    }
    assert_eq!(format_cents(1999), "19.99");
    assert_eq!(format_cents(5), "0.05");
    assert_eq!(format_cents(12905), "129.05");
}

#[test]
fn webhook_signature_matches_the_standard_webhooks_vector() {
    // The example of the Standard Webhooks specification.
    assert_eq!(
        sign_webhook(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#
        )
        .as_deref(),
        Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
    );
}

#[tokio::test]
async fn tokens_are_checked_on_every_call() {
    let sim = start().await;
    let (status, _, _) = http(&sim, "GET", "/v2/products", &[], "").await;
    assert_eq!(status, 401);
    let (status, _, body) = http(
        &sim,
        "POST",
        "/oauth/token",
        &[],
        "grant_type=client_credentials&client_id=cid&client_secret=wrong",
    )
    .await;
    assert_eq!((status, body), (401, json!({"error": "invalid_client"})));
    let auth = token(&sim).await;
    let (status, _, _) = http(&sim, "GET", "/v2/products", &[("Authorization", &auth)], "").await;
    assert_eq!(status, 200);
    sim.expire_tokens();
    let (status, headers, body) =
        http(&sim, "GET", "/v2/products", &[("Authorization", &auth)], "").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "token_expired");
    assert!(headers.iter().any(|(k, _)| k == "www-authenticate"));
}

#[tokio::test]
async fn cursor_pagination_walks_the_catalog() {
    let sim = start().await;
    let auth = token(&sim).await;
    let h = [("Authorization", auth.as_str())];
    let (_, _, page1) = http(&sim, "GET", "/v2/products?limit=2", &h, "").await;
    assert_eq!(page1["total"], 3);
    assert_eq!(page1["data"][0]["id"], "prd_1001");
    assert_eq!(
        page1["data"][0]["variants"][0]["price"],
        json!({"amount": "49.90", "currency": "EUR"})
    );
    assert_eq!(page1["next_cursor"], "c_2");
    let (_, _, page2) = http(&sim, "GET", "/v2/products?limit=2&cursor=c_2", &h, "").await;
    assert_eq!(page2["data"][0]["status"], "archived");
    assert_eq!(page2["next_cursor"], Value::Null);
    let (status, _, _) = http(&sim, "GET", "/v2/products?cursor=&limit=2", &h, "").await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn orders_are_idempotent_per_key_and_validated() {
    let sim = start().await;
    let auth = token(&sim).await;
    let order = json!({
        "reference": "mall-1", "currency": "EUR",
        "lines": [{"sku": "SHIRT-M", "quantity": 2, "unit_price": "49.90"},
                  {"sku": "CUPS-2", "quantity": 1, "unit_price": "19.99"}],
        "shipping_fee": "4.90", "total": "124.69",
        "shipping_address": {"name": "A", "line1": "1 Rue", "city": "Lyon", "postal_code": "69001"}
    })
    .to_string();
    let h = [("Authorization", auth.as_str()), ("Idempotency-Key", "k1")];
    let (status, _, first) = http(&sim, "POST", "/v2/orders", &h, &order).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["lines"].as_array().unwrap().len(), 2);
    let (status, headers, again) = http(&sim, "POST", "/v2/orders", &h, &order).await;
    assert_eq!((status, &again), (201, &first));
    assert!(headers.contains(&("idempotent-replayed".into(), "true".into())));
    assert_eq!(sim.orders().len(), 1);
    let other = order.replace("\"quantity\":2", "\"quantity\":3");
    let (status, _, body) = http(&sim, "POST", "/v2/orders", &h, &other).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
    let wrong = order.replace("124.69", "124.70");
    let h2 = [("Authorization", auth.as_str()), ("Idempotency-Key", "k2")];
    let (status, _, body) = http(&sim, "POST", "/v2/orders", &h2, &wrong).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["details"][0]["field"], "total");
    let (status, _, _) = http(
        &sim,
        "POST",
        "/v2/orders",
        &[("Authorization", auth.as_str())],
        &order,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn cleared_faults_answer_no_more() {
    let sim = start().await;
    let auth = token(&sim).await;
    let h = [("Authorization", auth.as_str())];
    let (status, _, _) = http(
        &sim,
        "POST",
        "/__sim/faults",
        &[],
        r#"{"kind": "server_error", "route": "GET /v2/inventory", "times": 1000}"#,
    )
    .await;
    assert_eq!(status, 200);
    for _ in 0..2 {
        let (status, _, _) = http(&sim, "GET", "/v2/inventory?sku=CUPS-2", &h, "").await;
        assert_eq!(status, 503);
    }
    let (status, _, body) = http(&sim, "DELETE", "/__sim/faults", &[], "").await;
    assert_eq!((status, body), (200, json!({"dropped": 1})));
    let (status, _, _) = http(&sim, "GET", "/v2/inventory?sku=CUPS-2", &h, "").await;
    assert_eq!(status, 200);
    sim.push_fault(Fault {
        kind: FaultKind::ServerError,
        route: None,
        retry_after: 1,
        times: 5,
        delay_ms: 0,
    });
    sim.clear_faults();
    let (status, _, _) = http(&sim, "GET", "/v2/inventory?sku=CUPS-2", &h, "").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn faults_answer_429_with_retry_after_once() {
    let sim = start().await;
    let auth = token(&sim).await;
    sim.push_fault(Fault {
        kind: FaultKind::RateLimited,
        route: Some("GET /v2/inventory".into()),
        retry_after: 3,
        times: 1,
        delay_ms: 0,
    });
    let h = [("Authorization", auth.as_str())];
    let (status, headers, _) = http(&sim, "GET", "/v2/inventory?sku=CUPS-2", &h, "").await;
    assert_eq!(status, 429);
    assert!(headers.contains(&("retry-after".into(), "3".into())));
    let (status, _, body) = http(&sim, "GET", "/v2/inventory?sku=CUPS-2,NOPE", &h, "").await;
    assert_eq!(
        (status, body),
        (200, json!({"data": [{"sku": "CUPS-2", "available": 40}]}))
    );
}
