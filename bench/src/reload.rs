//! Many platform files: cold start, idle cost and hot-reload time of a gateway serving `n`
//! renamed copies of the sample platform.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use time::OffsetDateTime;

use crate::gateway::{self, Gateway, Setup};
use crate::report;

/// What was measured with `files` platform files.
#[derive(Debug, Clone, Default)]
pub struct FileCountStats {
    /// Platform files.
    pub files: usize,
    /// Spawn → first `/readyz` 200, per start (fresh store each time).
    pub cold_starts: Vec<Duration>,
    /// RSS right after ready.
    pub rss_ready: u64,
    /// RSS after the idle window.
    pub rss_idle: u64,
    /// CPU used during the idle window, as a share of one core.
    pub idle_cpu: f64,
    /// Reloads that happened during the idle window (should be 0).
    pub idle_reloads: u64,
    /// File written → `entrepot_reload_total{result="ok"}` incremented, per edit.
    pub end_to_end: Vec<Duration>,
    /// Reload start (`loaded_at`) → its `platforms reloaded` log line, per edit.
    pub work: Vec<Duration>,
    /// File written → reload start (`loaded_at`): the watcher's debounce and event delivery.
    pub wait: Vec<Duration>,
}

/// The name of copy `i`.
fn name(i: usize) -> String {
    format!("yanxuan-{i:03}")
}

/// Checks a platforms directory with `entrepot validate`, which must find nothing.
fn validate(bin: &Path, dir: &Path) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .arg("validate")
        .arg(dir)
        .output()
        .with_context(|| format!("cannot run {} validate", bin.display()))?;
    if !out.status.success() {
        bail!(
            "`entrepot validate {}` found problems:\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn ms(from: OffsetDateTime, to: OffsetDateTime) -> Duration {
    let d = to - from;
    Duration::try_from(d).unwrap_or_default()
}

/// Measures `n` files: `starts` cold starts, the idle window, then `edits` reloads.
pub async fn measure(
    bin: &Path,
    sample: &str,
    root: &Path,
    n: usize,
    starts: usize,
    edits: usize,
    idle: Duration,
) -> anyhow::Result<FileCountStats> {
    let dir = root.join(format!("files-{n}"));
    let platforms: Vec<(String, String)> = (0..n)
        .map(|i| {
            Ok((
                format!("{}.yaml", name(i)),
                gateway::renamed(sample, &name(i))?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let files = gateway::write_files(&dir, &platforms, &Setup::default())?;
    validate(bin, &files.platforms)?;
    let mut stats = FileCountStats {
        files: n,
        ..Default::default()
    };
    let mut running: Option<Gateway> = None;
    for start in 0..starts {
        // Each start is a first start: no store yet.
        drop(running.take());
        let data = dir.join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("cannot remove {}", data.display()))?;
        }
        let log = dir.join(format!("gateway-{start}.log"));
        let g = gateway::start(bin, &files, &[], &log).await?;
        stats.cold_starts.push(g.ready_after);
        running = Some(g);
    }
    let g = running.context("no gateway was started")?;

    // Idle.
    stats.rss_ready = g.proc.rss()?;
    let reloads_before = g.reloads("ok").await? + g.reloads("error").await?;
    let cpu_before = g.proc.cpu()?;
    let t = Instant::now();
    tokio::time::sleep(idle).await;
    let cpu = g.proc.cpu()?.saturating_sub(cpu_before);
    stats.idle_cpu = cpu.as_secs_f64() / t.elapsed().as_secs_f64();
    stats.rss_idle = g.proc.rss()?;
    stats.idle_reloads = g.reloads("ok").await? + g.reloads("error").await? - reloads_before;

    // Reloads: edit the first file as an editor saves (write beside it, rename over it).
    let target = name(0);
    let path: PathBuf = files.platforms.join(format!("{target}.yaml"));
    let tmp = files.platforms.join(format!("{target}.yaml.saving"));
    for edit in 1..=edits {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let changed = gateway::retitled(&text, edit)?;
        std::fs::write(&tmp, changed).with_context(|| format!("cannot write {}", tmp.display()))?;
        let ok_before = g.reloads("ok").await?;
        let errors_before = g.reloads("error").await?;
        let written_at = OffsetDateTime::now_utc();
        let t0 = Instant::now();
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        loop {
            if g.reloads("ok").await? > ok_before {
                break;
            }
            if g.reloads("error").await? > errors_before {
                bail!(
                    "the gateway reloaded {target} with problems; see {}",
                    g.proc.log().display()
                );
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("the gateway did not reload {target} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stats.end_to_end.push(t0.elapsed());
        let loaded_at = g.loaded_at(&target).await?;
        // The counter moves just before the log line is written: wait for the line.
        let logged_at = loop {
            let (at, changed) = g.last_reload_logged()?;
            if at >= loaded_at && changed.contains(&target) {
                break at;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("no `platforms reloaded` log line names {target}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        if loaded_at < written_at {
            bail!("{target} reports loaded_at {loaded_at} from before the edit at {written_at}");
        }
        stats.work.push(ms(loaded_at, logged_at));
        stats.wait.push(ms(written_at, loaded_at));
        // Let the next edit be its own burst.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(stats)
}

/// The table of every file count.
pub fn table(all: &[FileCountStats], idle: Duration) -> String {
    let med = |v: &[Duration]| {
        Duration::from_secs_f64(report::median(v.iter().map(Duration::as_secs_f64)))
    };
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            vec![
                s.files.to_string(),
                report::duration(med(&s.cold_starts)),
                report::mib(s.rss_ready),
                report::mib(s.rss_idle),
                format!("{:.2} %", s.idle_cpu * 100.0),
                report::duration(med(&s.end_to_end)),
                report::duration(med(&s.wait)),
                report::duration(med(&s.work)),
            ]
        })
        .collect();
    report::table(
        &[
            "platform files",
            "cold start (spawn → /readyz 200)",
            "RSS when ready",
            &format!("RSS after {:.0} s idle", idle.as_secs_f64()),
            &format!("CPU over {:.0} s idle (of one core)", idle.as_secs_f64()),
            "reload end to end (file saved → reload counter)",
            "of which waiting (saved → reload start)",
            "of which reloading (start → logged)",
        ],
        &rows,
    )
}
