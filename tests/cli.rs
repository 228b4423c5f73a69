//! The `entrepot` binary as a user runs it.

use crate::support::root;
use std::process::Command;

fn entrepot() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_entrepot"));
    c.current_dir(root());
    c
}

#[test]
fn validate_platforms_is_silent_and_succeeds() {
    let out = entrepot()
        .args(["validate", "platforms/"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn validate_reports_located_problems_and_fails() {
    let out = entrepot()
        .args(["validate", "tests/cases/five_mistakes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tests/cases/five_mistakes/platform.yaml:13:17: error[E_UNKNOWN_HELPER]: operations.order.create.request.form.skuIds: unknown template helper 'jion'"),
        "{err}"
    );
}

#[test]
fn validate_json_format_is_machine_readable() {
    let out = entrepot()
        .args(["validate", "--format", "json", "tests/cases/five_mistakes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // Machine-readable output is the command's result: it goes to standard output.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &list.as_array().unwrap()[0];
    for key in [
        "severity", "code", "file", "line", "column", "path", "message",
    ] {
        assert!(first.get(key).is_some(), "{key} missing in {first}");
    }
}

#[test]
fn schema_prints_the_committed_platform_schema() {
    let out = entrepot().args(["schema"]).output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(root().join("schemas/platform.schema.json")).unwrap();
    assert!(
        String::from_utf8(out.stdout).unwrap() == committed,
        "`entrepot schema` differs from schemas/platform.schema.json"
    );
}

#[test]
fn every_command_has_help() {
    for cmd in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["validate", "--help"],
        vec!["schema", "--help"],
    ] {
        let out = entrepot().args(&cmd).output().unwrap();
        assert!(out.status.success(), "{cmd:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).len() > 200,
            "{cmd:?} help is too thin"
        );
    }
}

/// The preview prints the exact signed request, with every credential value masked.
#[test]
fn sign_preview_is_deterministic_and_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials.yaml");
    std::fs::write(
        &creds,
        "vector_top:\n  app_key: \"12345678\"\n  app_secret: helloworld\n  session: test\n",
    )
    .unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(&input, r#"{"spu_id": "11223344"}"#).unwrap();
    let run = || {
        entrepot()
            .args([
                "sign",
                "--platform",
                "tests/vectors/top.yaml",
                "--operation",
                "product.get",
                "--format",
                "json",
            ])
            .arg("--input")
            .arg(&input)
            .arg("--credentials")
            .arg(&creds)
            .args(["--at", "2016-01-01T12:00:00+08:00", "--nonce", "n1"])
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, run().stdout, "the preview is not deterministic");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains("helloworld") && !text.contains("12345678"),
        "{text}"
    );
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let body = doc["request"]["body"].as_str().unwrap();
    // The signature from the published TOP example (vector top-md5-docs) is shown as is.
    assert!(
        body.ends_with("&sign=66987CB115214E59E6EC978214934FB8"),
        "{body}"
    );
    assert!(body.contains("app_key=***"), "{body}");
    let params = doc["signing"][0]["value"].as_str().unwrap();
    assert!(params.starts_with("app_key***fields"), "{params}");
}

#[test]
fn sign_without_credentials_says_how_to_provide_them() {
    let out = entrepot()
        .args([
            "sign",
            "--platform",
            "tests/vectors/top.yaml",
            "--operation",
            "product.get",
        ])
        .env_remove("ENTREPOT_CREDENTIAL_VECTOR_TOP_APP_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("credential 'app_key' has no value")
            && err.contains("ENTREPOT_CREDENTIAL_VECTOR_TOP_APP_KEY"),
        "{err}"
    );
}

/// Without its store the gateway refuses to start, and says why and what to do.
#[test]
fn serve_refuses_to_start_without_its_store() {
    let out = entrepot()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env(
            "ENTREPOT_STORE_URL",
            "postgres://gw:pw-not-shown@127.0.0.1:1/entrepot",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open the store at postgres://gw:***@127.0.0.1:1/entrepot"),
        "{err}"
    );
    assert!(err.contains("does not start without its store"), "{err}");
    assert!(!err.contains("pw-not-shown"), "{err}");
}

/// `call --dry-run` prints the signed request built with the gateway's own configuration.
#[test]
fn call_dry_run_prints_the_signed_request() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("entrepot.yaml");
    std::fs::write(
        dir.path().join("credentials.yaml"),
        "yanxuan:\n  app_key: dry-run-app-key\n  app_secret: dry-run-app-secret\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "store: {{ url: \"sqlite://{}/gw.db\" }}\nplatforms_dir: {}\ncredentials_file: credentials.yaml\n",
            dir.path().display(),
            root().join("platforms").display()
        ),
    )
    .unwrap();
    let out = entrepot()
        .args(["call", "yanxuan", "product.list", "--dry-run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("POST http://127.0.0.1:18080/channel/api.json\n"),
        "{text}"
    );
    assert!(
        text.contains("appKey=***") && text.contains("method=yanxuan.item.id.batch.get"),
        "{text}"
    );
    assert!(
        !text.contains("dry-run-app-secret") && !text.contains("dry-run-app-key"),
        "{text}"
    );
    // An id the store has never seen is refused before anything is built (on a platform whose
    // orders carry ids of their own, `order: require`).
    let out = entrepot()
        .args(["call", "acme-rest", "order.get", "--dry-run", "--config"])
        .arg(&config)
        .arg("--input")
        .arg(root().join("tests/platforms/order-get-input.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("order 'mall-order-404' is not known on platform 'acme-rest'"),
        "{err}"
    );
}

/// Starts `serve` with a throwaway store and the sample platforms, its log (standard output)
/// piped; returns every log line up to and including the one announcing the address.
fn serve_log_until_listening(extra: &[&str]) -> Vec<String> {
    serve_until_listening(None, extra).0
}

/// As [`serve_log_until_listening`], with `shell` (such as `ulimit -Sn 256`) run first by
/// `/bin/sh`, which then becomes the gateway; also returns the gateway's `Max open files`
/// line of `/proc/<pid>/limits`, read while it listens.
fn serve_until_listening(shell: Option<&str>, extra: &[&str]) -> (Vec<String>, String) {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("entrepot.yaml");
    std::fs::write(
        &config,
        format!(
            "store: {{ url: \"sqlite://{}/gw.db\" }}\nplatforms_dir: {}\nreload: {{ watch: false }}\n",
            dir.path().display(),
            root().join("platforms").display()
        ),
    )
    .unwrap();
    let mut command = match shell {
        Some(shell) => {
            let mut c = Command::new("/bin/sh");
            c.current_dir(root())
                .arg("-c")
                .arg(format!("{shell} && exec \"$0\" \"$@\""))
                .arg(env!("CARGO_BIN_EXE_entrepot"));
            c
        }
        None => entrepot(),
    };
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .args(extra)
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.contains("listening");
        lines.push(line);
        if done {
            break;
        }
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .to_string();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.last().is_some_and(|l| l.contains("listening")),
        "the gateway did not start: {lines:?}"
    );
    (lines, limits)
}

/// The soft and hard limits of a `Max open files` line of `/proc/<pid>/limits`.
fn open_files(line: &str) -> (u64, u64) {
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| match w {
            "unlimited" => Some(u64::MAX),
            w => w.parse().ok(),
        })
        .collect();
    assert_eq!(numbers.len(), 2, "{line:?}");
    (numbers[0], numbers[1])
}

/// At start the soft open-file limit is raised to the hard one (here the test's own hard
/// limit, the soft one lowered to 256 before the gateway starts).
#[cfg(target_os = "linux")]
#[test]
fn serve_raises_the_open_file_limit() {
    let (lines, limits) = serve_until_listening(Some("ulimit -Sn 256"), &[]);
    let (soft, hard) = open_files(&limits);
    assert_eq!(soft, hard.min(1 << 20), "{limits}");
    // With the default server.max_connections of 1024, 1280 descriptors are enough.
    let warned = lines.iter().any(|l| l.contains("open-file limit"));
    assert_eq!(warned, soft < 1280, "{lines:?}");
}

/// When even the hard limit is too low for `server.max_connections`, the start says what to do.
#[cfg(target_os = "linux")]
#[test]
fn serve_warns_when_the_open_file_limit_is_too_low() {
    let (lines, limits) = serve_until_listening(Some("ulimit -Sn 512 && ulimit -Hn 512"), &[]);
    assert_eq!(open_files(&limits), (512, 512), "{limits}");
    let warning = lines
        .iter()
        .find(|l| l.contains("open-file limit"))
        .unwrap_or_else(|| panic!("no warning in {lines:?}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("ulimit -n"), "{warning}");
    assert!(warning.contains("server.max_connections"), "{warning}");
}

/// Logs written to a pipe or a file carry no terminal colour codes.
#[test]
fn logs_have_no_colour_codes_when_not_on_a_terminal() {
    let lines = serve_log_until_listening(&[]);
    for line in &lines {
        assert!(!line.contains("\x1b["), "colour codes in {line:?}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("INFO") && l.contains("platforms loaded")),
        "{lines:?}"
    );
}

/// `--log-format json` writes one JSON object per line, with the event's fields.
#[test]
fn logs_as_json_lines() {
    let lines = serve_log_until_listening(&["--log-format", "json"]);
    let mut listening = None;
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(v["level"].is_string(), "{v}");
        if v["fields"]["message"] == "listening" {
            listening = Some(v);
        }
    }
    let v = listening.expect("a 'listening' event");
    let addr: std::net::SocketAddr = v["fields"]["addr"].as_str().unwrap().parse().unwrap();
    assert!(addr.ip().is_loopback(), "{v}");
}

/// The README's demo: the committed gateway file of the simulator, with its committed demo
/// credentials, gets a real answer from a simulator started with its defaults.
#[tokio::test]
async fn demo_gateway_file_calls_the_simulator_with_its_demo_credentials() {
    let sim = channel_sim::Simulator::start(channel_sim::SimConfig::new(
        channel_sim::DEMO_APP_KEY,
        channel_sim::DEMO_APP_SECRET,
        channel_sim::Catalog::sample(),
    ))
    .await
    .unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let mut call = Command::new(env!("CARGO_BIN_EXE_entrepot"));
    call.current_dir(cwd.path())
        .args(["call", "yanxuan", "product.list", "--config"])
        .arg(root().join("examples/channel-sim/entrepot.yaml"))
        .env("YANXUAN_BASE_URL", sim.base_url())
        .env_remove("ENTREPOT_STORE_URL");
    let out = tokio::task::spawn_blocking(move || call.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["total"], 3, "{answer}");
    // The store of the demo file is relative to the current directory.
    assert!(cwd.path().join("data/entrepot.db").exists());
}
