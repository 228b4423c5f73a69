//! Checks a `monitoring` block (of a platform file, or the gateway's `monitoring.defaults`)
//! into a [`MonitoringPlan`]: durations parsed, fractions within their bounds, every problem
//! located.

use std::time::Duration;

use crate::config::platform::MonitoringSpec;
use crate::config::source::{DocPath, SourceDoc};
use crate::diagnostics::{Code, Diagnostic};
use crate::plan::MonitoringPlan;

/// Shortest window: 1 second.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// Longest window: 1 day.
pub const MAX_WINDOW: Duration = Duration::from_secs(86_400);

const DURATION_HINT: &str = "write a number and a unit: 500ms, 30s, 5m, 1h or 7d";

/// Checks `spec`, found at `at` in `doc`; problems go to `problems`, and the fields with a
/// problem are left out of the plan.
pub fn monitoring(
    doc: &SourceDoc,
    spec: &MonitoringSpec,
    at: &DocPath,
    problems: &mut Vec<Diagnostic>,
) -> MonitoringPlan {
    let mut duration = |text: &Option<String>, key: &str, zero_ok: bool| -> Option<Duration> {
        let text = text.as_ref()?;
        match super::parse_duration(text) {
            Ok(d) if d.is_zero() && !zero_ok => {
                problems.push(
                    doc.at(
                        &at.key(key),
                        Code::Duration,
                        format!("{key} cannot be zero"),
                    )
                    .with_hint("give a time such as 500ms, 30s or 5m"),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(
                    doc.at(&at.key(key), Code::Duration, e)
                        .with_hint(DURATION_HINT),
                );
                None
            }
        }
    };
    let mut window = duration(&spec.window, "window", false);
    let hold = duration(&spec.hold, "hold", true);
    let latency_p95 = duration(&spec.latency_p95, "latency_p95", false);
    let breaker_open = duration(&spec.breaker_open, "breaker_open", false);
    if let Some(w) = window
        && !(MIN_WINDOW..=MAX_WINDOW).contains(&w)
    {
        problems.push(
            doc.at(
                &at.key("window"),
                Code::InvalidValue,
                format!("the window must be from 1s to 1d, not {w:?}"),
            )
            .with_hint("write a duration such as 1m or 5m"),
        );
        window = None;
    }
    let mut fraction = |value: Option<f64>, key: &str, what: &str| -> Option<f64> {
        let v = value?;
        if v > 0.0 && v <= 1.0 {
            return Some(v);
        }
        problems.push(
            doc.at(
                &at.key(key),
                Code::InvalidValue,
                format!("{key} is {what}: it must be above 0 and at most 1, not {v}"),
            )
            .with_hint("write a fraction such as 0.2 for 20%"),
        );
        None
    };
    let recover_at = fraction(spec.recover_at, "recover_at", "a fraction of each limit");
    let error_rate = fraction(spec.error_rate, "error_rate", "a share of the calls");
    let callback_refusal_rate = fraction(
        spec.callback_refusal_rate,
        "callback_refusal_rate",
        "a share of the deliveries",
    );
    let min_calls = match spec.min_calls {
        Some(0) => {
            problems.push(
                doc.at(
                    &at.key("min_calls"),
                    Code::InvalidValue,
                    "min_calls cannot be 0: a rate over no call means nothing",
                )
                .with_hint("leave it out for the default of 20"),
            );
            None
        }
        other => other,
    };
    for sku in spec.low_stock_skus.keys().filter(|k| k.trim().is_empty()) {
        problems.push(
            doc.at_key(
                &at.key("low_stock_skus").key(sku.clone()),
                Code::InvalidValue,
                "an empty SKU id",
            )
            .with_hint("key each threshold by the internal SKU id, as in the events' sku_id"),
        );
    }
    MonitoringPlan {
        window,
        hold,
        recover_at,
        min_calls,
        error_rate,
        latency_p95,
        breaker_open,
        callback_refusal_rate,
        dead_letters: spec.dead_letters,
        low_stock: spec.low_stock,
        low_stock_skus: spec
            .low_stock_skus
            .iter()
            .filter(|(k, _)| !k.trim().is_empty())
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
    }
}
