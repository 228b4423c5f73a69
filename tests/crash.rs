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
