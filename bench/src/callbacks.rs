//! Callback ingest: genuine signed notifications, each with its own dedupe key, posted to the
//! gateway's callback route of the sample platform; and the internal target that receives the
//! resulting events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hyper::StatusCode;

use crate::load::{Call, Check, MakeCall};
use crate::paths::{APP_KEY, APP_SECRET};
use crate::platform;

/// The sample platform's callback route on the gateway.
pub const ROUTE: &str = "/callbacks/yanxuan/notify";

/// SKUs of the simulator's sample catalog (known to the gateway after the warm-up listing, so
/// the notifications translate existing ids rather than allocate new ones).
const SKUS: [&str; 6] = ["100101", "100102", "100201", "100202", "100203", "100301"];

/// Inventory notifications, signed now, each with a new `notifyId`.
pub fn notifications() -> MakeCall {
    let tag = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let seq = AtomicU64::new(0);
    Arc::new(move || {
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let notify_id = format!("bench-{tag:x}-{n}");
        let sku = SKUS
            .get(usize::try_from(n).unwrap_or(0) % SKUS.len())
            .copied()
            .unwrap_or("100101");
        let inventory = (n % 100).to_string();
        let body = platform::signed_form(
            APP_KEY,
            APP_SECRET,
            "yanxuan.notification.inventory.count.changed",
            &[
                ("notifyId", &notify_id),
                ("skuId", sku),
                ("inventory", &inventory),
            ],
        )?;
        Ok(Call::post(ROUTE, "application/x-www-form-urlencoded", body))
    })
}

/// The acknowledgement the sample platform's `ack` declares.
pub const ACK: Check = |status, body| status == StatusCode::OK && body == br#"{"code":"200"}"#;

/// An internal target on loopback that accepts every event and counts them.
pub struct Sink {
    /// Its URL.
    pub url: String,
    received: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    /// Starts the sink on a free port.
    pub async fn start() -> anyhow::Result<Sink> {
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let app = axum::Router::new().route(
            "/events",
            axum::routing::post(move || {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot start the event sink")?;
        let addr: SocketAddr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Sink {
            url: format!("http://{addr}/events"),
            received,
            task,
        })
    }

    /// Events received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits until `expected` events have arrived or `timeout` passes; returns how long it
    /// waited and how many arrived.
    pub async fn drain(&self, expected: u64, timeout: Duration) -> (Duration, u64) {
        let start = Instant::now();
        while self.received() < expected && start.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (start.elapsed(), self.received())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_distinct_and_signed() {
        let make = notifications();
        let a = String::from_utf8((make)().unwrap().body.to_vec()).unwrap();
        let b = String::from_utf8((make)().unwrap().body.to_vec()).unwrap();
        let field = |body: &str, name: &str| {
            serde_urlencoded::from_str::<Vec<(String, String)>>(body)
                .unwrap()
                .into_iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v)
                .unwrap()
        };
        assert_ne!(field(&a, "notifyId"), field(&b, "notifyId"));
        assert_eq!(field(&a, "skuId"), "100101");
        assert_eq!(field(&b, "skuId"), "100102");
        assert_eq!(field(&a, "sign").len(), 32);
        assert!(ACK(StatusCode::OK, br#"{"code":"200"}"#));
        assert!(!ACK(StatusCode::UNAUTHORIZED, b""));
    }
}
