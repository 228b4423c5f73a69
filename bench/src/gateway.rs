//! The gateway under test: its files in a temporary directory (gateway file, platform files,
//! credentials, SQLite store), starting it, and reading what it exposes (`/metrics`,
//! `/admin/v1/status`, its JSON log).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::load::{self, Call};
use crate::procs::Proc;

/// Quiet time after a change before the gateway reloads, written into the gateway file (the
/// gateway's documented default) so the report can state it.
pub const RELOAD_DEBOUNCE: &str = "250ms";

/// What the gateway file says besides the platforms.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// `credentials.yaml` content, if any.
    pub credentials: Option<String>,
    /// URL of an internal target that receives `inventory.changed` events, if any.
    pub target: Option<String>,
}

/// A gateway's directory.
#[derive(Debug, Clone)]
pub struct Files {
    /// The directory (the gateway runs there; its store is `data/entrepot.db` in it).
    pub dir: PathBuf,
    /// The gateway file.
    pub config: PathBuf,
    /// The platforms directory.
    pub platforms: PathBuf,
    /// Bearer token of the admin API.
    pub admin_token: String,
}

/// Writes a gateway directory under `dir` with `platforms` (file name, content).
pub fn write_files(
    dir: &Path,
    platforms: &[(String, String)],
    setup: &Setup,
) -> anyhow::Result<Files> {
    let platforms_dir = dir.join("platforms");
    std::fs::create_dir_all(&platforms_dir)
        .with_context(|| format!("cannot create {}", platforms_dir.display()))?;
    for (name, text) in platforms {
        let path = platforms_dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let admin_token = format!("bench-{nanos:x}-{:x}", std::process::id());
    let mut config = format!(
        "# Written by entrepot-bench.\nlisten: 127.0.0.1:0\nstore:\n  url: sqlite://data/entrepot.db\nplatforms_dir: platforms\nadmin:\n  token: {admin_token}\nreload:\n  debounce: {RELOAD_DEBOUNCE}\n"
    );
    if let Some(credentials) = &setup.credentials {
        let path = dir.join("credentials.yaml");
        std::fs::write(&path, credentials)
            .with_context(|| format!("cannot write {}", path.display()))?;
        config.push_str("credentials_file: credentials.yaml\n");
    }
    if let Some(url) = &setup.target {
        config.push_str(&format!(
            "targets:\n  sink:\n    url: {url}\n    events: [inventory.changed]\n"
        ));
    }
    let config_path = dir.join("entrepot.yaml");
    std::fs::write(&config_path, config)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    Ok(Files {
        dir: dir.to_path_buf(),
        config: config_path,
        platforms: platforms_dir,
        admin_token,
    })
}

/// The sample platform under another name: its `platform:` key and its callback path (both
/// must be unique in a directory) changed.
pub fn renamed(sample: &str, name: &str) -> anyhow::Result<String> {
    let text = replace_line(sample, "platform: yanxuan", &format!("platform: {name}"))?;
    replace_line(
        &text,
        "  - path: /yanxuan/notify",
        &format!("  - path: /{name}/notify"),
    )
}

/// The sample platform without its `transport.qps` quota, for throughput runs (the quota
/// would make the gateway row measure the pacer: 20 calls per second).
pub fn without_quota(sample: &str) -> anyhow::Result<String> {
    replace_line(sample, "  qps: 20", "")
}

/// A platform file with its `title:` changed to mention `edit` (a real change of the plan).
pub fn retitled(text: &str, edit: usize) -> anyhow::Result<String> {
    let line = text
        .lines()
        .find(|l| l.starts_with("title: "))
        .context("the platform file has no `title:` line")?;
    replace_line(
        text,
        line,
        &format!("title: NetEase Yanxuan (benchmark edit {edit})"),
    )
}

/// Replaces the one line equal to `from`; fails unless there is exactly one.
fn replace_line(text: &str, from: &str, to: &str) -> anyhow::Result<String> {
    let hits = text.lines().filter(|l| *l == from).count();
    if hits != 1 {
        bail!("expected exactly one line `{from}` in the sample platform file, found {hits}");
    }
    let mut out: String = text
        .lines()
        .map(|l| if l == from { to } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    Ok(out)
}

/// A free loopback port (bound, read and released; the gateway binds it right after).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?)
}

/// A running gateway.
pub struct Gateway {
    /// The process.
    pub proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its files.
    pub files: Files,
    /// From spawn to the first `200` of `/readyz`.
    pub ready_after: Duration,
}

/// Starts `entrepot serve` on `files` with a JSON log, and waits until `/readyz` answers 200.
pub async fn start(
    bin: &Path,
    files: &Files,
    env: &[(&str, String)],
    log: &Path,
) -> anyhow::Result<Gateway> {
    let addr = free_port()?;
    let mut command = Command::new(bin);
    command
        .arg("serve")
        .arg("--config")
        .arg(&files.config)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--log-format")
        .arg("json")
        .current_dir(&files.dir)
        .env("RUST_LOG", "info");
    for (k, v) in env {
        command.env(k, v);
    }
    let mut proc = Proc::spawn("entrepot serve", command, log)?;
    let ready = load::wait_for_200(addr, "/readyz", Duration::from_secs(60)).await;
    let ready_after = proc.started.elapsed();
    if let Err(e) = ready {
        proc.check_alive()?;
        return Err(e);
    }
    Ok(Gateway {
        proc,
        addr,
        files: files.clone(),
        ready_after,
    })
}

impl Gateway {
    /// `entrepot_reload_total{result=...}` from `/metrics`.
    pub async fn reloads(&self, result: &str) -> anyhow::Result<u64> {
        let (status, body) = load::once(self.addr, &Call::get("/metrics")).await?;
        if !status.is_success() {
            bail!("/metrics answered {status}");
        }
        parse_reload_total(&String::from_utf8_lossy(&body), result)
            .with_context(|| format!("no entrepot_reload_total{{result=\"{result}\"}} on /metrics"))
    }

    /// `loaded_at` of `platform` on `/admin/v1/status`.
    pub async fn loaded_at(&self, platform: &str) -> anyhow::Result<OffsetDateTime> {
        let mut call = Call::get("/admin/v1/status");
        call.headers.push((
            "authorization",
            format!("Bearer {}", self.files.admin_token),
        ));
        let (status, body) = load::once(self.addr, &call).await?;
        if !status.is_success() {
            bail!(
                "/admin/v1/status answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let doc: Value = serde_json::from_slice(&body).context("/admin/v1/status is not JSON")?;
        let at = doc
            .get("platforms")
            .and_then(Value::as_array)
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p.get("platform").and_then(Value::as_str) == Some(platform))
            })
            .and_then(|p| p.get("loaded_at"))
            .and_then(Value::as_str)
            .with_context(|| format!("no loaded_at for {platform} on /admin/v1/status"))?;
        OffsetDateTime::parse(at, &Rfc3339).with_context(|| format!("bad loaded_at {at}"))
    }

    /// The last `platforms reloaded` line of the JSON log: its time and `changed` field.
    pub fn last_reload_logged(&self) -> anyhow::Result<(OffsetDateTime, String)> {
        let text = std::fs::read_to_string(self.proc.log())
            .with_context(|| format!("cannot read {}", self.proc.log().display()))?;
        text.lines()
            .rev()
            .find_map(parse_reload_line)
            .context("no `platforms reloaded` line in the gateway's JSON log")
    }
}

/// The value of `entrepot_reload_total{result="<result>"}` in a Prometheus text page.
pub fn parse_reload_total(page: &str, result: &str) -> Option<u64> {
    let key = format!("entrepot_reload_total{{result=\"{result}\"}}");
    page.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

/// `(timestamp, changed)` of a JSON log line whose message is `platforms reloaded`.
pub fn parse_reload_line(line: &str) -> Option<(OffsetDateTime, String)> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v.pointer("/fields/message").and_then(Value::as_str) != Some("platforms reloaded") {
        return None;
    }
    let at = OffsetDateTime::parse(v.get("timestamp")?.as_str()?, &Rfc3339).ok()?;
    let changed = v
        .pointer("/fields/changed")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Some((at, changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../platforms/yanxuan.yaml");

    #[test]
    fn the_sample_can_be_renamed_retitled_and_unquoted() {
        let copy = renamed(SAMPLE, "yanxuan-007").unwrap();
        assert!(copy.contains("\nplatform: yanxuan-007\n"));
        assert!(copy.contains("  - path: /yanxuan-007/notify\n"));
        assert!(!copy.contains("/yanxuan/notify"));
        let edited = retitled(&copy, 3).unwrap();
        assert!(edited.contains("\ntitle: NetEase Yanxuan (benchmark edit 3)\n"));
        let free = without_quota(SAMPLE).unwrap();
        assert!(!free.contains("qps:"));
        assert_eq!(free.lines().count(), SAMPLE.lines().count());
        assert!(replace_line(SAMPLE, "no such line", "x").is_err());
    }

    #[test]
    fn metrics_and_log_lines() {
        let page = "# HELP x\nentrepot_reload_total{result=\"ok\"} 7\nentrepot_reload_total{result=\"error\"} 0\n";
        assert_eq!(parse_reload_total(page, "ok"), Some(7));
        assert_eq!(parse_reload_total(page, "error"), Some(0));
        assert_eq!(parse_reload_total("", "ok"), None);
        let line = r#"{"timestamp":"2026-11-28T11:06:03.388249Z","level":"INFO","fields":{"message":"platforms reloaded","added":"[]","changed":"[\"yanxuan-001\"]","removed":"[]"},"target":"entrepot::reload"}"#;
        let (at, changed) = parse_reload_line(line).unwrap();
        assert_eq!(at.nanosecond(), 388_249_000);
        assert!(changed.contains("yanxuan-001"));
        assert!(parse_reload_line(r#"{"fields":{"message":"listening"}}"#).is_none());
    }
}
