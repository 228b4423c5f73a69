//! Secrets never leak: known secret values go through every path of a real gateway process
//! (file credentials, pushed credentials, failed calls, callbacks, status, metrics, dry runs,
//! debug logs as JSON lines, spans exported over OTLP) and are searched for in everything it
//! printed, answered or exported.

use std::process::{Command, Stdio};
use std::time::Duration;

use channel_sim::{Catalog, SimConfig, Simulator};
use serde_json::json;

use crate::support::root;

const FILE_KEY: &str = "LEAKCHECK-file-app-key-3b9f";
const FILE_SECRET: &str = "LEAKCHECK-file-app-secret-77c1";
const PUSHED_SECRET: &str = "LEAKCHECK-pushed-secret-a0d2";
const ADMIN: &str = "LEAKCHECK-admin-token-5e6a";

#[tokio::test]
async fn no_secret_in_logs_answers_status_or_previews() {
    // The simulator knows other credentials, so every call is refused: the error paths run.
    let sim = Simulator::start(SimConfig::new(FILE_KEY, "other-secret", Catalog::sample()))
        .await
        .unwrap();
    let (otlp, exported) = crate::traces::otlp_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let platforms = dir.path().join("platforms");
    std::fs::create_dir(&platforms).unwrap();
    let text = std::fs::read_to_string(root().join("platforms/yanxuan.yaml"))
        .unwrap()
        .replace(
            "${env:YANXUAN_BASE_URL:-http://127.0.0.1:18080}",
            &sim.base_url(),
        );
    std::fs::write(platforms.join("yanxuan.yaml"), text).unwrap();
    std::fs::write(
        dir.path().join("credentials.yaml"),
        format!("yanxuan:\n  app_key: {FILE_KEY}\n  app_secret: {FILE_SECRET}\n"),
    )
    .unwrap();
    let config = dir.path().join("entrepot.yaml");
    std::fs::write(
        &config,
        format!(
            "store: {{ url: \"sqlite://{}/gw.db\" }}\nplatforms_dir: platforms\ncredentials_file: credentials.yaml\nadmin: {{ token: \"${{env:LEAKCHECK_ADMIN}}\" }}\ntelemetry: {{ otlp: {{ endpoint: \"{otlp}\" }} }}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_entrepot"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--config",
        ])
        .arg(&config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "debug")
        .env("LEAKCHECK_ADMIN", ADMIN)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    // Wait for the address in the log.
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let text = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
            if let Some(a) = crate::traces::listening_addr(&text) {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the gateway starts");

    let http = reqwest::Client::new();
    let mut answers = String::new();
    let mut keep = |s: String| answers.push_str(&s);
    let base = format!("http://{addr}");
    // A refused call (the platform rejects the signature), and a bad input.
    keep(
        http.post(format!(
            "{base}/v1/platforms/yanxuan/operations/product.list"
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap(),
    );
    keep(
        http.post(format!(
            "{base}/v1/platforms/yanxuan/operations/inventory.get"
        ))
        .json(&json!({"sku_ids": []}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap(),
    );
    // Pushes: a malformed one carrying the secret, a valid one, a stale one.
    let creds = format!("{base}/admin/v1/platforms/yanxuan/credentials");
    keep(
        http.put(&creds)
            .bearer_auth(ADMIN)
            .body(format!(
                "{{\"values\": {{\"app_secret\": \"{PUSHED_SECRET}\""
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    keep(http.put(&creds).bearer_auth(ADMIN).json(&json!({"version": 3, "values": {"app_key": FILE_KEY, "app_secret": PUSHED_SECRET}})).send().await.unwrap().text().await.unwrap());
    keep(
        http.put(&creds)
            .bearer_auth(ADMIN)
            .json(&json!({"version": 2, "values": {"app_secret": PUSHED_SECRET}}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    keep(
        http.put(&creds)
            .bearer_auth("wrong")
            .json(&json!({"version": 9, "values": {"app_secret": PUSHED_SECRET}}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    keep(
        http.post(format!(
            "{base}/v1/platforms/yanxuan/operations/product.list"
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap(),
    );
    // A forged callback and a genuine one (signed with the pushed secret).
    let now = time::OffsetDateTime::now_utc();
    for (secret, id) in [("forged", "n-forged"), (PUSHED_SECRET, "n-genuine")] {
        let body = channel_sim::signed_form(
            FILE_KEY,
            secret,
            "yanxuan.notification.inventory.count.changed",
            now,
            &[("notifyId", id), ("skuId", "1"), ("inventory", "1")],
        );
        keep(
            http.post(format!("{base}/callbacks/yanxuan/notify"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    // Metrics: the refused calls and the forged callback are counted under configuration
    // names only; no credential is a label or a value.
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let yx = [("platform", "yanxuan")];
    assert_eq!(
        crate::support::metric(
            &metrics,
            "entrepot_platform_requests_total",
            &[yx[0], ("operation", "product.list"), ("outcome", "refused")]
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        crate::support::metric(
            &metrics,
            "entrepot_callback_refusals_total",
            &[yx[0], ("route", "/yanxuan/notify"), ("reason", "signature")]
        ),
        Some(1.0),
        "{metrics}"
    );
    for secret in [FILE_KEY, FILE_SECRET, PUSHED_SECRET, ADMIN] {
        assert!(!metrics.contains(secret), "{secret} is in /metrics");
    }
    keep(metrics);
    // Status, deliveries, reload.
    for path in ["/admin/v1/status", "/admin/v1/deliveries"] {
        keep(
            http.get(format!("{base}{path}"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    let reload = http
        .post(format!("{base}/admin/v1/reload"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Started with --listen, the gateway still reloads cleanly: the file's own address did not change.
    assert!(reload.contains("\"result\":\"ok\""), "{reload}");
    keep(reload);
    // Stopped gracefully: the last spans are exported on the way out.
    crate::traces::terminate(child).await;
    let spans = format!("{:?}", exported.spans.lock().unwrap());
    assert!(
        spans.contains("entrepot.call") && spans.contains("entrepot.callback"),
        "the spans were exported: {spans}"
    );

    // Previews: a dry run with the gateway's configuration and a signing preview.
    let dry = Command::new(env!("CARGO_BIN_EXE_entrepot"))
        .args(["call", "yanxuan", "product.list", "--dry-run", "--config"])
        .arg(&config)
        .env("LEAKCHECK_ADMIN", ADMIN)
        .output()
        .unwrap();
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let sign = Command::new(env!("CARGO_BIN_EXE_entrepot"))
        .args(["sign", "--platform"])
        .arg(platforms.join("yanxuan.yaml"))
        .args([
            "--operation",
            "product.list",
            "--format",
            "json",
            "--credentials",
        ])
        .arg(dir.path().join("credentials.yaml"))
        .output()
        .unwrap();
    assert!(
        sign.status.success(),
        "{}",
        String::from_utf8_lossy(&sign.stderr)
    );

    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();
    assert!(log.contains("credentials pushed"), "the log was captured");
    assert!(log.contains("\"trace_id\""), "the log carries trace ids");
    let everything = [
        log,
        spans,
        answers,
        String::from_utf8_lossy(&dry.stdout).into_owned(),
        String::from_utf8_lossy(&dry.stderr).into_owned(),
        String::from_utf8_lossy(&sign.stdout).into_owned(),
        String::from_utf8_lossy(&sign.stderr).into_owned(),
    ]
    .join("\n");
    assert!(
        everything.contains("invalid sign"),
        "the refused call was exercised"
    );
    for secret in [FILE_KEY, FILE_SECRET, PUSHED_SECRET, ADMIN] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
}
