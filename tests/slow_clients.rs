//! Slow clients cannot hold connections: a header block that never ends and a trickled body are
//! cut off after their (here, short) timeouts, and connections beyond the cap wait their turn.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use entrepot::server::{AppState, ServerLimits, serve_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on waiting for the server to act: generous, so a slow machine does not fail
/// the tests, and still far below "held for as long as the client trickles".
const PATIENCE: Duration = Duration::from_secs(5);

struct Server {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(limits: ServerLimits) -> Server {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_with(
        "127.0.0.1:0".parse().unwrap(),
        AppState::default(),
        limits,
        move |a| {
            let _ = tx.send(a);
        },
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        addr: rx.await.unwrap(),
        stop,
        task,
    }
}

fn limits(header: u64, body: u64, connections: usize) -> ServerLimits {
    ServerLimits {
        header_timeout: Duration::from_millis(header),
        body_timeout: Duration::from_millis(body),
        max_connections: connections,
        trust_forwarded_headers: false,
    }
}

/// Writes `bytes` one at a time, `every` apart, until the peer goes away.
fn trickle(mut writer: tokio::net::tcp::OwnedWriteHalf, bytes: Vec<u8>, every: Duration) {
    tokio::spawn(async move {
        for b in bytes.into_iter().cycle() {
            if writer.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Reads until the server closes the connection; what it sent, or `None` if it kept it open
/// past [`PATIENCE`].
async fn until_closed(reader: &mut tokio::net::tcp::OwnedReadHalf) -> Option<String> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test]
async fn a_header_block_that_never_ends_is_cut_off() {
    let server = start(limits(300, 10_000, 16)).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let began = Instant::now();
    writer
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    trickle(
        writer,
        b"X-Slow: aaaaaaaa\r\n".to_vec(),
        Duration::from_millis(20),
    );
    let answer = until_closed(&mut reader).await;
    let took = began.elapsed();
    assert!(
        answer.is_some(),
        "the connection was still open after {PATIENCE:?}"
    );
    assert!(took >= Duration::from_millis(300), "closed after {took:?}");
}

/// A connection that sends nothing at all holds no place either.
#[tokio::test]
async fn a_silent_connection_is_cut_off() {
    let server = start(limits(300, 10_000, 16)).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, _writer) = stream.into_split();
    let began = Instant::now();
    let answer = until_closed(&mut reader).await;
    let took = began.elapsed();
    assert!(
        answer.is_some(),
        "the connection was still open after {PATIENCE:?}"
    );
    assert!(took >= Duration::from_millis(300), "closed after {took:?}");
}

#[tokio::test]
async fn a_trickled_body_is_cut_off() {
    let server = start(limits(10_000, 300, 16)).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let began = Instant::now();
    writer
        .write_all(
            b"POST /v1/platforms/any/operations/product.list HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
        )
        .await
        .unwrap();
    trickle(writer, b" ".to_vec(), Duration::from_millis(20));
    let answer = until_closed(&mut reader).await;
    let took = began.elapsed();
    let answer =
        answer.unwrap_or_else(|| panic!("the connection was still open after {PATIENCE:?}"));
    assert!(took >= Duration::from_millis(300), "closed after {took:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// Reads one answer of `/healthz` on a kept-alive connection.
async fn read_health(reader: &mut tokio::net::tcp::OwnedReadHalf) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains(r#"{"status":"ok"}"#) {
        let n = reader.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_and_shutdown_stays_graceful() {
    let server = start(limits(10_000, 10_000, 1)).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let (mut a_read, mut a_write) = TcpStream::connect(server.addr).await.unwrap().into_split();
    a_write.write_all(request).await.unwrap();
    assert!(read_health(&mut a_read).await.starts_with("HTTP/1.1 200"));

    // A second connection while the first is open is not served...
    let (mut b_read, mut b_write) = TcpStream::connect(server.addr).await.unwrap().into_split();
    b_write.write_all(request).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), b_read.read(&mut byte)).await;
    assert!(early.is_err(), "served beyond the cap: {early:?}");

    // ...until the first one goes away.
    drop(a_read);
    drop(a_write);
    let answer = tokio::time::timeout(PATIENCE, read_health(&mut b_read))
        .await
        .expect("served once a place was free");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Shutting down closes the idle kept-alive connection and ends the server.
    server.stop.send(()).unwrap();
    let ended = tokio::time::timeout(PATIENCE, server.task).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "the server did not stop: {ended:?}"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, b_read.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle connection stayed open");
}

fn gateway(text: &str) -> Result<entrepot::compile::gateway::GatewaySettings, String> {
    let doc = entrepot::config::source::parse(Path::new("entrepot.yaml"), text.to_string())
        .map_err(|d| d.to_string())?;
    entrepot::compile::gateway::compile_gateway(doc, Path::new("."), &|_| None)
        .map_err(|d| crate::support::render(&d))
}

/// The limits come from `server:` in `entrepot.yaml`, with documented defaults, and bad
/// values are located diagnostics.
#[test]
fn limits_are_configured_in_the_gateway_file() {
    let defaults = gateway("listen: 127.0.0.1:8080\n").unwrap();
    assert_eq!(
        defaults.server,
        limits(10_000, 30_000, 1024),
        "the documented defaults"
    );
    let set =
        gateway("server: { header_timeout: 2s, body_timeout: 1m, max_connections: 64 }\n").unwrap();
    assert_eq!(set.server, limits(2_000, 60_000, 64));
    assert!(
        !set.server.trust_forwarded_headers,
        "not trusted by default"
    );
    let trusting = gateway("server: { trust_forwarded_headers: true }\n").unwrap();
    assert!(trusting.server.trust_forwarded_headers);
    let bad = gateway("server:\n  header_timeout: soon\n  max_connections: 0\n").unwrap_err();
    assert!(
        bad.contains("entrepot.yaml:2:19: error[E_DURATION]: server.header_timeout"),
        "{bad}"
    );
    assert!(
        bad.contains("entrepot.yaml:3:20:") && bad.contains("server.max_connections"),
        "{bad}"
    );
}
