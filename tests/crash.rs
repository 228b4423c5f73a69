//! A real gateway process, killed with SIGKILL while events wait for a target that is down,
//! loses no acknowledged callback: after a restart every event is delivered.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::sync::mpsc;

use crate::support::root;

const KEY: &str = "crash-app-key";
const SECRET: &str = "crash-app-secret";

#[derive(Clone)]
struct Target {
    up: Arc<AtomicBool>,
    seen: mpsc::UnboundedSender<String>,
}

async fn receive(State(t): State<Target>, headers: HeaderMap) -> StatusCode {
    if !t.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let _ = t.seen.send(key);
    StatusCode::OK
}

/// Starts the gateway binary; returns the child and the address it listens on.
fn spawn_gateway(config: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_entrepot"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("addr=").nth(1) {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the gateway reports its address");
    (child, addr)
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_callback() {
    let up = Arc::new(AtomicBool::new(false));
    let (tx, mut seen) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route("/events", post(receive))
        .with_state(Target {
            up: up.clone(),
            seen: tx,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("credentials.yaml"),
        format!("yanxuan:\n  app_key: {KEY}\n  app_secret: {SECRET}\n"),
    )
    .unwrap();
    let config = dir.path().join("entrepot.yaml");
    std::fs::write(
        &config,
        format!(
            "store: {{ url: \"sqlite://{}/gw.db\" }}\nplatforms_dir: {}\ncredentials_file: credentials.yaml\n\
             delivery: {{ lease: 500ms, backoff: 50ms, backoff_max: 200ms }}\n\
             targets:\n  center: {{ url: \"{target}\", events: [inventory.changed], max_attempts: 1000 }}\n",
            dir.path().display(),
            root().join("platforms").display()
        ),
    )
    .unwrap();

    let (mut child, addr) = spawn_gateway(&config);
    let http = reqwest::Client::new();
    let now = time::OffsetDateTime::now_utc();
    for i in 0..20 {
        let body = channel_sim::signed_form(
            KEY,
            SECRET,
            "yanxuan.notification.inventory.count.changed",
            now,
            &[
                ("notifyId", &format!("crash-{i}")),
                ("skuId", "100101"),
                ("inventory", "3"),
            ],
        );
        let r = http
            .post(format!("http://{addr}/callbacks/yanxuan/notify"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "delivery {i} acknowledged");
    }
    // SIGKILL: no shutdown, no flushing, nothing after the acknowledgements.
    child.kill().unwrap();
    child.wait().unwrap();
    // Every acknowledged delivery is in the store, with its event still waiting.
    let store = entrepot::store::Store::open(&entrepot::store::StoreOptions {
        url: format!("sqlite://{}/gw.db", dir.path().display()),
        ..Default::default()
    })
    .await
    .unwrap();
    let stored = store.inbox_recent(Some("yanxuan"), 100).await.unwrap();
    assert_eq!(stored.iter().filter(|d| d.verified).count(), 20);
    // Read, not claimed: the restarted gateway must find them free.
    let mut waiting = 0;
    for id in 1..=40 {
        if let Some(e) = store.outbox_get(id).await.unwrap() {
            assert!(e.delivered_at.is_none() && !e.dead, "{e:?}");
            waiting += 1;
        }
    }
    assert_eq!(
        waiting, 20,
        "no event was delivered or lost while the target was down"
    );
    store.close().await;

    up.store(true, Ordering::SeqCst);
    let (mut child, _) = spawn_gateway(&config);
    let mut keys = std::collections::BTreeSet::new();
    while keys.len() < 20 {
        let key = tokio::time::timeout(Duration::from_secs(30), seen.recv())
            .await
            .expect("every event after the restart")
            .unwrap();
        keys.insert(key);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let expected: std::collections::BTreeSet<String> = (0..20)
        .map(|i| format!("yanxuan:crash-{i}:inventory.changed"))
        .collect();
    assert_eq!(keys, expected);
}

/// 32 senders post signed callbacks as fast as the gateway answers; once 300 are acknowledged
/// the gateway is killed with SIGKILL while requests are in flight. Every delivery answered
/// with 2xx is in the store afterwards, with its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_loses_no_acknowledged_callback() {
    // A target that is down: events stay in the outbox, where they can be counted.
    let (tx, _seen) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route("/events", post(receive))
        .with_state(Target {
            up: Arc::new(AtomicBool::new(false)),
            seen: tx,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("credentials.yaml"),
        format!("yanxuan:\n  app_key: {KEY}\n  app_secret: {SECRET}\n"),
    )
    .unwrap();
    let config = dir.path().join("entrepot.yaml");
    std::fs::write(
        &config,
        format!(
            "store: {{ url: \"sqlite://{}/gw.db\" }}\nplatforms_dir: {}\ncredentials_file: credentials.yaml\n\
             targets:\n  center: {{ url: \"{target}\", events: [inventory.changed], max_attempts: 1000 }}\n",
            dir.path().display(),
            root().join("platforms").display()
        ),
    )
    .unwrap();
    let (mut child, addr) = spawn_gateway(&config);

    let http = reqwest::Client::new();
    let (acked_tx, mut acked_rx) = mpsc::unbounded_channel::<String>();
    let mut senders = Vec::new();
    for s in 0..32 {
        let (http, acked, addr) = (http.clone(), acked_tx.clone(), addr.clone());
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("burst-{s}-{i}");
                let body = channel_sim::signed_form(
                    KEY,
                    SECRET,
                    "yanxuan.notification.inventory.count.changed",
                    time::OffsetDateTime::now_utc(),
                    &[("notifyId", &id), ("skuId", "100101"), ("inventory", "3")],
                );
                let answer = http
                    .post(format!("http://{addr}/callbacks/yanxuan/notify"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status().is_success() => {
                        let _ = acked.send(id);
                    }
                    Ok(r) => panic!("delivery {id} answered {}", r.status()),
                    // The gateway is gone: this one was not acknowledged.
                    Err(_) => break,
                }
            }
        }));
    }
    drop(acked_tx);
    let mut acked = Vec::new();
    while acked.len() < 300 {
        let id = tokio::time::timeout(Duration::from_secs(60), acked_rx.recv())
            .await
            .expect("300 acknowledgements within a minute")
            .unwrap();
        acked.push(id);
    }
    // SIGKILL in the middle of the burst: 32 senders still have requests in flight.
    child.kill().unwrap();
    child.wait().unwrap();
    for s in senders {
        s.await.unwrap();
    }
    // Acknowledgements that arrived between the count and the kill count too.
    while let Some(id) = acked_rx.recv().await {
        acked.push(id);
    }

    let store = entrepot::store::Store::open(&entrepot::store::StoreOptions {
        url: format!("sqlite://{}/gw.db", dir.path().display()),
        ..Default::default()
    })
    .await
    .unwrap();
    let stored: std::collections::HashMap<String, i64> = store
        .inbox_recent(Some("yanxuan"), 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.verified && d.duplicate_of.is_none())
        .map(|d| (d.dedupe_key.unwrap(), d.id))
        .collect();
    let with_event: std::collections::HashSet<i64> = store
        .outbox_claim("check", i64::MAX / 4, 1, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.inbox_id)
        .collect();
    for id in &acked {
        let Some(row) = stored.get(id) else {
            panic!("delivery {id} was acknowledged but is not in the store")
        };
        assert!(
            with_event.contains(row),
            "delivery {id} was acknowledged but its event is missing"
        );
    }
    assert!(acked.len() >= 300);
    store.close().await;
}
