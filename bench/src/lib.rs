//! `entrepot-bench`: the gateway side by side with what it replaces, on this machine.
//!
//! [`run`] builds the release binaries, starts the simulator (`channel-sim`), the hand-written
//! adapter (`examples/adapter`) and the gateway (`entrepot serve`, its own SQLite store in a
//! temporary directory) on loopback, drives `product.get` through each with the load
//! generator, posts signed notifications to the gateway's callback route, then times cold
//! start, idle cost and hot reload with many platform files, and returns a markdown report.
//!
//! - [`args`] — options.
//! - [`procs`] — child processes, killed on drop, measured through `/proc`.
//! - [`load`] — the load generator (keep-alive connections, fixed duration, every latency).
//! - [`platform`] — the sample platform's signature, by hand.
//! - [`paths`] — `product.get` through the simulator, the adapter and the gateway.
//! - [`callbacks`] — notifications and the internal target that receives their events.
//! - [`gateway`] — the gateway's files, start-up and what it exposes.
//! - [`reload`] — cold start, idle cost and reloads with many files.
//! - [`machine`] — facts for the header.
//! - [`report`] — medians and markdown.

pub mod args;
pub mod callbacks;
pub mod gateway;
pub mod load;
pub mod machine;
pub mod paths;
pub mod platform;
pub mod procs;
pub mod reload;
pub mod report;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;

use crate::args::Args;
use crate::gateway::Setup;
use crate::procs::Proc;
use crate::report::{RunStats, median_duration, median_rate};

/// The repository this harness belongs to.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Where the release binaries are: `release/` of the target directory this harness runs from.
fn release_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the harness's own executable")?;
    let profile_dir = exe
        .parent()
        .context("the harness's executable has no directory")?;
    let target = profile_dir
        .parent()
        .context("the harness does not run from a target directory")?;
    Ok(target.join("release"))
}

fn build(root: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building entrepot, channel-sim and adapter (release)...");
    let mut command = Command::new(&cargo);
    command
        .args([
            "build",
            "--release",
            "-p",
            "entrepot",
            "-p",
            "channel-sim",
            "-p",
            "adapter",
        ])
        .current_dir(root);
    // `cargo run` describes this package in the environment; build scripts that watch those
    // variables (ring's does) would otherwise be rebuilt, and again by the next plain build.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || name.starts_with("CARGO_CRATE_")
            || name.starts_with("CARGO_BIN_")
            || name == "CARGO_PRIMARY_PACKAGE"
        {
            command.env_remove(name.as_ref());
        }
    }
    let status = command
        .status()
        .with_context(|| format!("cannot run {}", cargo.to_string_lossy()))?;
    if !status.success() {
        bail!("the release build failed ({status})");
    }
    Ok(())
}

fn binary(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p entrepot -p channel-sim -p adapter` or run without --no-build",
            path.display()
        );
    }
    Ok(path)
}

/// Starts a server that prints `<something> listening on http://ADDR` and returns its address.
async fn start_listening(
    name: &str,
    command: Command,
    log: &Path,
) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut proc = Proc::spawn(name, command, log)?;
    let addr = proc
        .wait_for_line(Duration::from_secs(30), |line| {
            let rest = line.split_once("listening on http://")?.1;
            rest.split_whitespace().next()?.parse::<SocketAddr>().ok()
        })
        .await?;
    Ok((proc, addr))
}

fn progress(what: impl std::fmt::Display) {
    eprintln!("[{}] {what}", machine::now());
}

/// Measures everything and returns the report.
pub async fn run(args: &Args) -> anyhow::Result<String> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: the harness is a debug build, its load generator is slow; use `cargo run --release -p entrepot-bench`"
        );
    }
    let root = repo_root();
    let load_before = machine::load_average();
    if args.build {
        build(&root)?;
    }
    let bins = release_dir()?;
    let entrepot = binary(&bins, "entrepot")?;
    let sim_bin = binary(&bins, "channel-sim")?;
    let adapter_bin = binary(&bins, "adapter")?;
    let sample_path = root.join("platforms/yanxuan.yaml");
    let sample = std::fs::read_to_string(&sample_path)
        .with_context(|| format!("cannot read {}", sample_path.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("entrepot-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;

    // The three paths.
    progress("starting the simulator, the adapter and the gateway");
    let mut sim_cmd = Command::new(&sim_bin);
    sim_cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--app-key",
        paths::APP_KEY,
        "--app-secret",
        paths::APP_SECRET,
    ]);
    let (sim, sim_addr) =
        start_listening("channel-sim", sim_cmd, &logs.join("channel-sim.log")).await?;
    let sim_url = format!("http://{sim_addr}");
    let mut adapter_cmd = Command::new(&adapter_bin);
    adapter_cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--base-url",
        &sim_url,
        "--app-key",
        paths::APP_KEY,
        "--app-secret",
        paths::APP_SECRET,
    ]);
    let (adapter, adapter_addr) =
        start_listening("adapter", adapter_cmd, &logs.join("adapter.log")).await?;
    let sink = callbacks::Sink::start().await?;
    let setup = Setup {
        credentials: Some(format!(
            "yanxuan:\n  app_key: {}\n  app_secret: {}\n",
            paths::APP_KEY,
            paths::APP_SECRET
        )),
        target: Some(sink.url.clone()),
    };
    let files = gateway::write_files(
        &tmp.path().join("gateway"),
        &[("yanxuan.yaml".into(), gateway::without_quota(&sample)?)],
        &setup,
    )?;
    let gw = gateway::start(
        &entrepot,
        &files,
        &[("YANXUAN_BASE_URL", sim_url.clone())],
        &logs.join("gateway.log"),
    )
    .await?;

    // Ids, and the same answer from both.
    let gw_spu = paths::gateway_spu(gw.addr).await?;
    let gw_answer = paths::call(gw.addr, "product.get", &json!({ "spu_id": gw_spu })).await?;
    let title = gw_answer
        .pointer("/product/title")
        .and_then(serde_json::Value::as_str)
        .context("the gateway's product has no title")?
        .to_string();
    let ad_spu = paths::adapter_spu(adapter_addr, &title).await?;
    let ad_answer = paths::call(adapter_addr, "product.get", &json!({ "spu_id": ad_spu })).await?;
    if paths::without_ids(&gw_answer)? != paths::without_ids(&ad_answer)? {
        bail!(
            "the adapter and the gateway answer differently:\n gateway: {gw_answer}\n adapter: {ad_answer}"
        );
    }
    let all = [
        paths::direct(sim_addr),
        paths::canonical("adapter", adapter_addr, &ad_spu),
        paths::canonical("gateway", gw.addr, &gw_spu),
    ];
    for path in &all {
        progress(format!("warming up {}", path.name));
        let s = load::drive(
            path.addr,
            args.connections,
            args.warmup,
            path.make.clone(),
            path.check,
        )
        .await?;
        if s.errors > 0 || s.latencies.is_empty() {
            bail!(
                "warm-up of {} failed: {} errors, first: {}",
                path.name,
                s.errors,
                s.first_error.as_deref().unwrap_or("none")
            );
        }
    }
    let mut results: Vec<(Vec<RunStats>, Vec<RunStats>)> = vec![Default::default(); all.len()];
    for run in 1..=args.runs {
        // Paths take turns, so a disturbance on the machine spreads over all of them.
        for (path, result) in all.iter().zip(results.iter_mut()) {
            progress(format!("run {run}/{}: {}", args.runs, path.name));
            load::once(
                sim_addr,
                &load::Call::post("/__sim/reset", "application/json", "{}"),
            )
            .await?;
            let (loaded, alone) =
                paths::measure(path, args.connections, args.duration, args.single).await?;
            result.0.push(loaded);
            result.1.push(alone);
        }
    }
    let rss_after_load = [
        ("simulator", sim.rss()?),
        ("adapter", adapter.rss()?),
        ("gateway", gw.proc.rss()?),
    ];

    // Callback ingest, on the same gateway.
    let mut ingest: Vec<RunStats> = Vec::new();
    let delivered_before = sink.received();
    for run in 1..=args.runs {
        progress(format!("run {run}/{}: callback ingest", args.runs));
        let s = load::drive(
            gw.addr,
            args.connections,
            args.duration,
            callbacks::notifications(),
            callbacks::ACK,
        )
        .await?;
        if s.latencies.is_empty() {
            bail!(
                "no notification was acknowledged; first failure: {}",
                s.first_error.as_deref().unwrap_or("none")
            );
        }
        ingest.push(RunStats::of(&s));
    }
    let acked: u64 = ingest.iter().map(|r| r.ok as u64).sum();
    let (drain_wait, delivered) = sink
        .drain(delivered_before + acked, Duration::from_secs(30))
        .await;
    let delivered = delivered - delivered_before;
    drop(gw);
    drop(adapter);
    drop(sim);

    // Many platform files.
    let mut per_count = Vec::new();
    for &n in &args.file_counts {
        progress(format!("{n} platform files: cold start, idle, reloads"));
        per_count.push(
            reload::measure(
                &entrepot,
                &sample,
                tmp.path(),
                n,
                args.runs,
                args.runs,
                args.idle,
            )
            .await?,
        );
    }
    let load_after = machine::load_average();

    // The report.
    let mut out = String::new();
    let _ = writeln!(out, "# entrepot side by side\n");
    let _ = writeln!(out, "- date: {}", machine::now());
    let _ = writeln!(out, "- commit: {}", machine::commit(&root));
    let _ = writeln!(
        out,
        "- machine: {} CPUs ({}), {} GiB memory, Linux {}",
        machine::cpus(),
        machine::cpu_model(),
        machine::memory_gib()
            .map(|g| format!("{g:.0}"))
            .unwrap_or_else(|| "?".into()),
        machine::kernel()
    );
    let _ = writeln!(
        out,
        "- load average (1/5/15 min): {load_before} before, {load_after} after"
    );
    let _ = writeln!(
        out,
        "- stores and platform files in {} ({})",
        std::env::temp_dir().display(),
        machine::filesystem(tmp.path())
    );
    let _ = writeln!(
        out,
        "- method: {} run(s) per path, taking turns; each run {:.1} s at {} keep-alive connections then {:.1} s at 1; {:.1} s warm-up per path; medians over runs",
        args.runs,
        args.duration.as_secs_f64(),
        args.connections,
        args.single.as_secs_f64(),
        args.warmup.as_secs_f64()
    );
    let _ = writeln!(out, "\n## product.get\n");
    let c = args.connections;
    let direct_p50_1 = results
        .first()
        .map(|r| median_duration(&r.1, |s| s.p50))
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = all
        .iter()
        .zip(&results)
        .map(|(path, (loaded, alone))| {
            let p50_1 = median_duration(alone, |s| s.p50);
            let errors: u64 = loaded.iter().chain(alone).map(|s| s.errors).sum();
            vec![
                path.name.to_string(),
                report::rate(median_rate(loaded)),
                report::duration(median_duration(loaded, |s| s.p50)),
                report::duration(median_duration(loaded, |s| s.p99)),
                report::duration(p50_1),
                if path.name == "simulator direct" {
                    "–".into()
                } else {
                    report::difference(p50_1, direct_p50_1)
                },
                errors.to_string(),
            ]
        })
        .collect();
    out.push_str(&report::table(
        &[
            "path",
            &format!("req/s at {c} conn"),
            &format!("p50 at {c} conn"),
            &format!("p99 at {c} conn"),
            "p50 at 1 conn",
            "p50 added at 1 conn",
            "errors",
        ],
        &rows,
    ));
    let figures = |i: usize| {
        results.get(i).map(|(loaded, alone)| {
            (
                median_rate(loaded),
                median_duration(loaded, |s| s.p50).as_secs_f64(),
                median_duration(loaded, |s| s.p99).as_secs_f64(),
                median_duration(alone, |s| s.p50).as_secs_f64(),
            )
        })
    };
    if let (Some(d), Some(a), Some(g)) = (figures(0), figures(1), figures(2)) {
        let _ = writeln!(out);
        let ratio_row = |name: &str, base: (f64, f64, f64, f64)| {
            vec![
                name.to_string(),
                report::ratio(g.0, base.0),
                report::ratio(g.1, base.1),
                report::ratio(g.2, base.2),
                report::ratio(g.3, base.3),
            ]
        };
        out.push_str(&report::table(
            &[
                "ratio",
                &format!("req/s at {c} conn"),
                &format!("p50 at {c} conn"),
                &format!("p99 at {c} conn"),
                "p50 at 1 conn",
            ],
            &[
                ratio_row("gateway / adapter", a),
                ratio_row("gateway / direct", d),
            ],
        ));
    }
    let _ = writeln!(out, "\nPer run, req/s at {c} connections:");
    for (path, (loaded, _)) in all.iter().zip(&results) {
        let list: Vec<String> = loaded.iter().map(|s| report::rate(s.rate)).collect();
        let _ = writeln!(out, "- {}: {}", path.name, list.join(", "));
    }
    for (path, (loaded, alone)) in all.iter().zip(&results) {
        if let Some(e) = loaded
            .iter()
            .chain(alone)
            .find_map(|s| s.first_error.clone())
        {
            let _ = writeln!(out, "- first error of {}: {e}", path.name);
        }
    }
    let rss: Vec<String> = rss_after_load
        .iter()
        .map(|(n, b)| format!("{n} {}", report::mib(*b)))
        .collect();
    let _ = writeln!(out, "\nRSS after the product.get runs: {}.", rss.join(", "));

    let _ = writeln!(out, "\n## Callback ingest\n");
    let errors: u64 = ingest.iter().map(|s| s.errors).sum();
    out.push_str(&report::table(
        &[
            "route",
            &format!("acks/s at {c} senders"),
            "p50",
            "p99",
            "errors",
        ],
        &[vec![
            callbacks::ROUTE.to_string(),
            report::rate(median_rate(&ingest)),
            report::duration(median_duration(&ingest, |s| s.p50)),
            report::duration(median_duration(&ingest, |s| s.p99)),
            errors.to_string(),
        ]],
    ));
    let _ = writeln!(
        out,
        "\n{acked} notifications acknowledged; the internal target had received {delivered} of their events {} after the last acknowledgement.",
        report::duration(drain_wait)
    );
    if let Some(e) = ingest.iter().find_map(|s| s.first_error.clone()) {
        let _ = writeln!(out, "First error: {e}");
    }

    let _ = writeln!(out, "\n## Platform files: cold start, idle, reload\n");
    out.push_str(&reload::table(&per_count, args.idle));
    let _ = writeln!(
        out,
        "\nCold start: median of {} start(s), each with a new store. Reload: median of {} edit(s) of one file (written beside it, renamed over it), reload debounce {}.",
        args.runs,
        args.runs,
        gateway::RELOAD_DEBOUNCE
    );
    let idle_reloads: u64 = per_count.iter().map(|s| s.idle_reloads).sum();
    if idle_reloads > 0 {
        let _ = writeln!(out, "Reloads while idle: {idle_reloads} (expected none).");
    }
    Ok(out)
}
