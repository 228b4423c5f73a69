//! The simulator on a real socket, driven by a tiny hand-written HTTP/1.1 client.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use channel_sim::{Catalog, Fault, FaultKind, SimConfig, Simulator, signed_form};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::net::TcpStream;

const KEY: &str = "K";
const SECRET: &str = "S";

struct HttpResponse {
    status: u16,
    body: String,
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = data.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read_to_end(stream: &TcpStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        stream.readable().await?;
        match stream.try_read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// One request on a fresh connection (`Connection: close`, so the body ends at EOF).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<HttpResponse> {
    let stream = TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    write_all(&stream, request.as_bytes()).await?;
    let raw = read_to_end(&stream).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(HttpResponse {
        status,
        body: body.to_string(),
    })
}

async fn api(sim: &Simulator, method: &str, params: &[(&str, &str)]) -> HttpResponse {
    let body = signed_form(KEY, SECRET, method, OffsetDateTime::now_utc(), params);
    http(
        sim.addr(),
        "POST",
        "/channel/api.json",
        "application/x-www-form-urlencoded",
        &body,
    )
    .await
    .expect("http")
}

fn json_of(r: &HttpResponse) -> Value {
    serde_json::from_str(&r.body).expect("json body")
}

#[tokio::test]
async fn real_socket_round_trip() {
    let sim = Simulator::start(SimConfig::new(KEY, SECRET, Catalog::sample()))
        .await
        .expect("start");
    assert!(sim.addr().ip().is_loopback());
    assert_eq!(
        sim.base_url(),
        format!("http://127.0.0.1:{}", sim.addr().port())
    );

    let r = api(
        &sim,
        "yanxuan.item.inventory.get",
        &[("skuIds", "100101,100301")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        json_of(&r),
        json!({"code": "200", "msg": "success", "result": [
            {"skuId": "100101", "inventory": 20}, {"skuId": "100301", "inventory": 100}
        ]})
    );

    sim.set_inventory("100101", 1);
    let order = json!({
        "orderId": "R-1", "receiverName": "李四", "receiverMobile": "13900000000",
        "receiverProvinceName": "广东省", "receiverCityName": "广州市",
        "receiverAddressDetail": "天河路1号", "realPrice": "299.00", "expFee": "0.00",
        "orderSkus": [{"skuId": "100101", "saleCount": 1, "originPrice": "299.00"}]
    })
    .to_string();
    let r = api(&sim, "yanxuan.order.paid.create", &[("order", &order)]).await;
    assert_eq!(json_of(&r)["result"], json!({"orderId": "R-1"}));
    assert_eq!(sim.inventory("100101"), Some(0));

    sim.ship("R-1", "中通快递", "ZT0001");
    let stored = sim.order("R-1").expect("order stored");
    assert_eq!(stored["orderStatus"], "SHIPPED");
    assert_eq!(stored["packages"][0]["expressNo"], "ZT0001");

    // The control API over the socket.
    let r = http(sim.addr(), "GET", "/__sim/orders", "application/json", "")
        .await
        .expect("http");
    assert_eq!(r.status, 200);
    assert_eq!(json_of(&r)[0]["orderId"], "R-1");

    sim.push_fault(
        Fault::business("6001", "inventory not enough").method("yanxuan.item.inventory.get"),
    );
    let r = api(&sim, "yanxuan.item.inventory.get", &[("skuIds", "100101")]).await;
    assert_eq!(json_of(&r)["code"], "6001");

    let log = sim.requests();
    let outcomes: Vec<&str> = log.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, ["ok", "ok", "fault:business"]);
    let r = http(sim.addr(), "GET", "/__sim/requests", "application/json", "")
        .await
        .expect("http");
    assert_eq!(serde_json::to_value(&log).expect("log"), json_of(&r));

    let addr = sim.addr();
    sim.stop().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "stopped simulator still accepts"
    );
}

#[tokio::test]
async fn slow_is_processed_even_if_the_client_gives_up() {
    let sim = Simulator::start(SimConfig::new(KEY, SECRET, Catalog::sample()))
        .await
        .expect("start");
    sim.push_fault(Fault::new(FaultKind::Slow).delay_ms(2_000));
    let order = json!({
        "orderId": "S-1", "receiverName": "王五", "receiverMobile": "13700000000",
        "receiverProvinceName": "北京市", "receiverCityName": "北京市",
        "receiverAddressDetail": "长安街1号", "realPrice": "12.50", "expFee": "0",
        "orderSkus": [{"skuId": "100301", "saleCount": 1, "originPrice": "12.50"}]
    })
    .to_string();
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        api(&sim, "yanxuan.order.paid.create", &[("order", &order)]),
    )
    .await;
    assert!(gave_up.is_err(), "the answer should be held back");
    assert_eq!(
        sim.order("S-1").map(|o| o["orderStatus"].clone()),
        Some(json!("PAID"))
    );
    assert_eq!(sim.inventory("100301"), Some(99));
    sim.stop().await;
}

#[tokio::test]
async fn stop_cuts_a_pending_timeout_short() {
    let sim = Simulator::start(SimConfig::new(KEY, SECRET, Catalog::sample()))
        .await
        .expect("start");
    sim.push_fault(Fault::new(FaultKind::Timeout)); // 30 s by default
    let addr = sim.addr();
    let pending = tokio::spawn(async move {
        let body = signed_form(
            KEY,
            SECRET,
            "yanxuan.item.id.batch.get",
            OffsetDateTime::now_utc(),
            &[],
        );
        http(
            addr,
            "POST",
            "/channel/api.json",
            "application/x-www-form-urlencoded",
            &body,
        )
        .await
    });
    // Wait until the request has been received.
    let started = Instant::now();
    while sim.requests().is_empty() && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        sim.requests().first().map(|r| r.outcome.clone()),
        Some("fault:timeout".to_string())
    );
    let stopping = Instant::now();
    sim.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        stopping.elapsed()
    );
    let answer = pending.await.expect("join").expect("http");
    assert_eq!(answer.status, 504);
}
