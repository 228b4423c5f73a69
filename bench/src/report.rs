//! Summaries of runs and the markdown they are printed as.

use std::time::Duration;

use crate::load::Sample;

/// What one run of one path measured (the latencies themselves are not kept).
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Successful requests per second.
    pub rate: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Successful requests.
    pub ok: usize,
    /// Failed requests.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
}

impl RunStats {
    /// The summary of `sample`.
    pub fn of(sample: &Sample) -> RunStats {
        RunStats {
            rate: sample.rate(),
            p50: sample.percentile(50.0).unwrap_or_default(),
            p99: sample.percentile(99.0).unwrap_or_default(),
            ok: sample.latencies.len(),
            errors: sample.errors,
            first_error: sample.first_error.clone(),
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match (v.get(n / 2), n % 2) {
        (None, _) => 0.0,
        (Some(m), 1) => *m,
        (Some(hi), _) => (hi + v.get(n / 2 - 1).copied().unwrap_or(*hi)) / 2.0,
    }
}

/// Median of a duration over runs.
pub fn median_duration(runs: &[RunStats], f: impl Fn(&RunStats) -> Duration) -> Duration {
    Duration::from_secs_f64(median(runs.iter().map(|r| f(r).as_secs_f64())))
}

/// Median of the rate over runs.
pub fn median_rate(runs: &[RunStats]) -> f64 {
    median(runs.iter().map(|r| r.rate))
}

/// A latency for a table: `412 µs`, `3.18 ms`, `1.20 s`.
pub fn duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// A signed latency difference: `+85 µs`, `-3 µs`.
pub fn difference(a: Duration, b: Duration) -> String {
    if a >= b {
        format!("+{}", duration(a - b))
    } else {
        format!("-{}", duration(b - a))
    }
}

/// A rate, whole: `12345`.
pub fn rate(r: f64) -> String {
    format!("{:.0}", r.max(0.0))
}

/// `a / b` as `0.45×`, or `–` when `b` is zero.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}

/// A markdown table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", header.join(" | "));
    out.push_str(&format!("|{}\n", " --- |".repeat(header.len())));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0]), 2.5);
        assert_eq!(median([]), 0.0);
    }

    #[test]
    fn formats() {
        assert_eq!(duration(Duration::from_micros(412)), "412 µs");
        assert_eq!(duration(Duration::from_micros(3180)), "3.18 ms");
        assert_eq!(duration(Duration::from_millis(1200)), "1.20 s");
        assert_eq!(
            difference(Duration::from_micros(500), Duration::from_micros(415)),
            "+85 µs"
        );
        assert_eq!(
            difference(Duration::from_micros(1), Duration::from_micros(4)),
            "-3 µs"
        );
        assert_eq!(rate(12345.4), "12345");
        assert_eq!(rate(999.0), "999");
        assert_eq!(ratio(1.0, 4.0), "0.25×");
        assert_eq!(ratio(1.0, 0.0), "–");
        assert_eq!(
            table(&["a", "b"], &[vec!["1".into(), "2".into()]]),
            "| a | b |\n| --- | --- |\n| 1 | 2 |\n"
        );
    }
}
