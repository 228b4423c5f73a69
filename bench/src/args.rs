//! Command-line options.

use std::time::Duration;

use anyhow::{Context, bail};

/// Usage text.
pub const USAGE: &str = "\
usage: cargo run --release -p entrepot-bench -- [OPTIONS]

  --quick               tiny durations and one run (a smoke test, not figures)
  --runs N              runs per path, the table shows medians (default 3)
  --duration SECS       length of each run at --connections connections (default 10)
  --single SECS         length of each run at 1 connection (default 5)
  --connections N       concurrent keep-alive connections (default 32)
  --idle SECS           idle window for RSS and CPU with 500 files (default 5)
  --no-build            use the release binaries already in target/release
  -h, --help            this text

Builds `entrepot`, `channel-sim` and `adapter` in release, starts them on 127.0.0.1 with free
ports, measures, prints a markdown report on standard output (progress on standard error), and
stops every process it started.";

/// What to measure and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// Runs per path; the table shows medians.
    pub runs: usize,
    /// Length of a run at `connections` connections.
    pub duration: Duration,
    /// Length of a run at one connection.
    pub single: Duration,
    /// Warm-up load per path before the first run.
    pub warmup: Duration,
    /// Concurrent connections of the loaded runs.
    pub connections: usize,
    /// Idle window for RSS and CPU.
    pub idle: Duration,
    /// Platform file counts for the reload and cold-start measures.
    pub file_counts: Vec<usize>,
    /// Whether to build the binaries first.
    pub build: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            runs: 3,
            duration: Duration::from_secs(10),
            single: Duration::from_secs(5),
            warmup: Duration::from_secs(2),
            connections: 32,
            idle: Duration::from_secs(5),
            file_counts: vec![1, 100, 500],
            build: true,
        }
    }
}

/// `None` for `--help`.
pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Option<Args>> {
    let mut out = Args::default();
    let mut args = args.into_iter();
    let secs = |flag: &str, v: String| -> anyhow::Result<Duration> {
        let s: f64 = v
            .parse()
            .with_context(|| format!("{flag}: not a number of seconds: {v}"))?;
        if !(s > 0.0 && s.is_finite()) {
            bail!("{flag}: must be a positive number of seconds, not {v}");
        }
        Ok(Duration::from_secs_f64(s))
    };
    let count = |flag: &str, v: String| -> anyhow::Result<usize> {
        match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("{flag}: must be a positive whole number, not {v}"),
        }
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" => {
                out.runs = 1;
                out.duration = Duration::from_millis(1000);
                out.single = Duration::from_millis(500);
                out.warmup = Duration::from_millis(300);
                out.idle = Duration::from_secs(1);
            }
            "--runs" => out.runs = count(&flag, value()?)?,
            "--duration" => out.duration = secs(&flag, value()?)?,
            "--single" => out.single = secs(&flag, value()?)?,
            "--connections" => out.connections = count(&flag, value()?)?,
            "--idle" => out.idle = secs(&flag, value()?)?,
            "--no-build" => out.build = false,
            other => bail!("unknown argument: {other}"),
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> anyhow::Result<Option<Args>> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_flags() {
        assert_eq!(p(&[]).unwrap(), Some(Args::default()));
        let a = p(&["--quick", "--runs", "2", "--duration", "0.5", "--no-build"])
            .unwrap()
            .unwrap();
        assert_eq!(a.runs, 2);
        assert_eq!(a.duration, Duration::from_millis(500));
        assert!(!a.build);
        assert!(p(&["--runs", "0"]).is_err());
        assert!(p(&["--duration", "-1"]).is_err());
        assert!(p(&["--duration"]).is_err());
        assert!(p(&["--bogus"]).is_err());
        assert_eq!(p(&["--help"]).unwrap(), None);
    }
}
