//! The load generator: `N` HTTP/1.1 keep-alive connections, each sending its next request as
//! soon as the previous answer is read (a closed loop), for a fixed time; every latency is
//! kept. Also one-shot requests for set-up and probes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// One request to send: method, path, content type and body.
#[derive(Debug, Clone)]
pub struct Call {
    /// HTTP method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Bytes,
}

impl Call {
    /// A GET without body.
    pub fn get(path: &str) -> Call {
        Call {
            method: Method::GET,
            path: path.to_string(),
            content_type: "text/plain",
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// A POST of `body` as `content_type`.
    pub fn post(path: &str, content_type: &'static str, body: impl Into<Bytes>) -> Call {
        Call {
            method: Method::POST,
            path: path.to_string(),
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    fn request(&self, addr: SocketAddr) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(&self.path)
            .header(HOST, addr.to_string())
            .header(CONTENT_TYPE, self.content_type);
        for (name, value) in &self.headers {
            builder = builder.header(*name, value);
        }
        builder
            .body(Full::new(self.body.clone()))
            .with_context(|| format!("cannot build a request for {}", self.path))
    }
}

/// Builds the next request of a run (called once per request, so signed requests can carry a
/// fresh timestamp and a distinct key).
pub type MakeCall = Arc<dyn Fn() -> anyhow::Result<Call> + Send + Sync>;

/// Whether an answer counts as a success.
pub type Check = fn(StatusCode, &[u8]) -> bool;

/// What one run measured.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    /// Latency of every successful request, nanoseconds, sorted.
    pub latencies: Vec<u64>,
    /// Failed requests (transport errors and answers the check refused).
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// From the start to the end of the last request.
    pub elapsed: Duration,
}

impl Sample {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.latencies.len() as f64 / secs
        } else {
            0.0
        }
    }

    /// The `p`th percentile latency (nearest rank), or `None` without successes.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        percentile(&self.latencies, p).map(Duration::from_nanos)
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Drives `connections` connections to `addr` for `duration`.
pub async fn drive(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    make: MakeCall,
    check: Check,
) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = JoinSet::new();
    for _ in 0..connections {
        workers.spawn(worker(addr, deadline, make.clone(), check));
    }
    let mut total = Sample::default();
    while let Some(done) = workers.join_next().await {
        let part = done.context("a load worker failed")??;
        total.latencies.extend(part.latencies);
        total.errors += part.errors;
        if total.first_error.is_none() {
            total.first_error = part.first_error;
        }
    }
    total.elapsed = start.elapsed();
    total.latencies.sort_unstable();
    Ok(total)
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP handshake with {addr} failed"))?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn worker(
    addr: SocketAddr,
    deadline: Instant,
    make: MakeCall,
    check: Check,
) -> anyhow::Result<Sample> {
    let mut sample = Sample::default();
    let mut sender: Option<Sender> = None;
    let fail = |sample: &mut Sample, what: String| {
        sample.errors += 1;
        if sample.first_error.is_none() {
            sample.first_error = Some(what);
        }
    };
    while Instant::now() < deadline {
        let call = make()?;
        let request = call.request(addr)?;
        let mut s = match sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => match connect(addr).await {
                Ok(s) => s,
                Err(e) => {
                    fail(&mut sample, format!("{e:#}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        let answer = async {
            s.ready().await?;
            let response = s.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        }
        .await;
        let took = t0.elapsed();
        match answer {
            Ok((status, body)) => {
                if check(status, &body) {
                    sample
                        .latencies
                        .push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
                } else {
                    let text = String::from_utf8_lossy(&body);
                    fail(
                        &mut sample,
                        format!(
                            "{} {status}: {}",
                            call.path,
                            text.chars().take(300).collect::<String>()
                        ),
                    );
                }
                sender = Some(s);
            }
            Err(e) => fail(&mut sample, format!("{}: {e}", call.path)),
        }
    }
    Ok(sample)
}

/// Sends one request on a new connection and returns the status and body.
pub async fn once(addr: SocketAddr, call: &Call) -> anyhow::Result<(StatusCode, Bytes)> {
    let request = call.request(addr)?;
    let mut sender = connect(addr).await?;
    sender.ready().await?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("{} {} on {addr} failed", call.method, call.path))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("the answer to {} broke off", call.path))?
        .to_bytes();
    Ok((status, body))
}

/// Polls `GET path` until it answers 200 (or `timeout` passes); returns the time it took.
pub async fn wait_for_200(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if let Ok((StatusCode::OK, _)) = once(addr, &Call::get(path)).await {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            anyhow::bail!("{path} on {addr} did not answer 200 within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[tokio::test]
    async fn drives_a_server() {
        let app = axum::Router::new().route("/x", axum::routing::post(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let make: MakeCall = Arc::new(|| Ok(Call::post("/x", "text/plain", "hi")));
        let s = drive(addr, 4, Duration::from_millis(200), make, |st, b| {
            st == StatusCode::OK && b == b"ok"
        })
        .await
        .unwrap();
        assert_eq!(s.errors, 0, "{:?}", s.first_error);
        assert!(s.latencies.len() > 10);
        assert!(s.latencies.windows(2).all(|w| w[0] <= w[1]));
        let bad = drive(
            addr,
            1,
            Duration::from_millis(50),
            Arc::new(|| Ok(Call::get("/nope"))),
            |st, _| st == StatusCode::OK,
        )
        .await
        .unwrap();
        assert!(bad.errors > 0 && bad.latencies.is_empty());
        assert!(bad.first_error.unwrap().contains("404"));
    }
}
