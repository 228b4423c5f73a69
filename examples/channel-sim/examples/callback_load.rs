//! Callback ingest under load: starts `entrepot serve` (its own SQLite store in a temporary
//! directory, the sample platform in `platforms/`), then keeps N senders posting valid signed
//! inventory notifications (each a new delivery) for some seconds, and prints acknowledgements
//! per second and the latency percentiles. Figures are in BENCHMARKS.md.
//!
//! ```sh
//! cargo build --release --bin entrepot
//! cargo build --release -p channel-sim --example callback_load
//! target/release/examples/callback_load target/release/entrepot [--senders 32] [--seconds 10] [--subscribe] [--store URL]
//! ```
//!
//! With `--subscribe` a target (a sink on loopback answering 200) subscribes to the event, so
//! every delivery also writes an outbox event that the gateway then delivers; without it the
//! deliveries are stored without events. `--store` uses another store (a PostgreSQL URL).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const KEY: &str = "load-app-key";
const SECRET: &str = "load-app-secret";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let binary = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "target/release/entrepot".into());
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let senders: usize = value("--senders").map_or(32, |v| v.parse().unwrap());
    let seconds: u64 = value("--seconds").map_or(10, |v| v.parse().unwrap());
    let subscribe = args.iter().any(|a| a == "--subscribe");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store =
        value("--store").unwrap_or_else(|| format!("sqlite://{}/gw.db", dir.path().display()));
    std::fs::write(
        dir.path().join("credentials.yaml"),
        format!("yanxuan:\n  app_key: {KEY}\n  app_secret: {SECRET}\n"),
    )
    .unwrap();
    let mut config = format!(
        "store: {{ url: \"{store}\" }}\nplatforms_dir: {}\ncredentials_file: credentials.yaml\n",
        root.join("platforms").display()
    );
    if subscribe {
        let app = axum::Router::new().route("/events", axum::routing::post(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        config.push_str(&format!(
            "targets:\n  center: {{ url: \"{url}\", events: [inventory.changed] }}\n"
        ));
    }
    let config_file = dir.path().join("entrepot.yaml");
    std::fs::write(&config_file, config).unwrap();

    let mut child = Command::new(&binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config_file)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log_lines = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = log_lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            counted.fetch_add(1, Ordering::Relaxed);
            if let Some(addr) = line.split("addr=").nth(1) {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let url = format!("http://{addr}/callbacks/yanxuan/notify");
    let lines_at_start = log_lines.load(Ordering::Relaxed);

    // Ids unique to this run, so a store used before sees only new deliveries.
    let run = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let http = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (http, url, stop) = (http.clone(), url.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = channel_sim::signed_form(
                    KEY,
                    SECRET,
                    "yanxuan.notification.inventory.count.changed",
                    time::OffsetDateTime::now_utc(),
                    &[
                        ("notifyId", &format!("load-{run}-{s}-{i}")),
                        ("skuId", "100101"),
                        ("inventory", "3"),
                    ],
                );
                let sent = Instant::now();
                let r = http
                    .post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(sent.elapsed());
                    }
                    _ => failures += 1,
                }
            }
            (latencies, failures)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut failures = 0;
    for t in tasks {
        let (l, f) = t.await.unwrap();
        all.extend(l);
        failures += f;
    }
    let elapsed = start.elapsed();
    let log_lines = log_lines.load(Ordering::Relaxed) - lines_at_start;
    child.kill().unwrap();
    child.wait().unwrap();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "senders {senders}, {:.1}s, subscribe {subscribe}: {} acks ({:.0}/s), {failures} failures, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {log_lines} log lines",
        elapsed.as_secs_f64(),
        all.len(),
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );
}
