//! The gateway's Prometheus metrics, served on `GET /metrics` in the text exposition format.
//!
//! Two kinds, one registry of this gateway's own (never the process-wide default one):
//! - **Counted as it happens**: [`Metrics`] is an [`observe::Sink`]; the engine, the callback
//!   routes, the dispatcher and the flows report to it through the [`observe::Observer`], and it
//!   counts calls, callbacks, deliveries, rate-limit waits, token renewals and flow steps.
//! - **Read when scraped**: the outbox backlog (one grouped store query), the breakers, the
//!   platforms loaded, the reloads and the unfinished sagas are read from the gateway's parts
//!   ([`Sources`]) at each scrape, so they cost nothing between scrapes.
//!
//! Every label value comes from the configuration (platform, operation, route and target
//! names) or from a closed set (outcomes, reasons, modes), never from request data: the number
//! of series is bounded by the configuration. [`FAMILIES`] lists every metric; the operations
//! guide documents the same list, and a test holds the two together.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::compile::gateway::TargetSettings;
use crate::engine::Engine;
use crate::observe::{CallSeen, CallbackOutcome, CallbackSeen, DeliverySeen, FlowSeen, Sink};
use crate::plan::Plan;
use crate::reload::Reloader;
use crate::store::Store;
use crate::timefmt::now_ms;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when the gateway restarts).
    Counter,
    /// A value read at the moment of the scrape.
    Gauge,
    /// Observations counted in `le` buckets, with `_bucket`, `_sum` and `_count` series.
    Histogram,
}

impl Kind {
    /// `counter`, `gauge` or `histogram`, as in the exposition's `# TYPE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family: its name, kind, labels and meaning.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The metric's name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its label names, in order.
    pub labels: &'static [&'static str],
    /// What it means (its `# HELP` text).
    pub help: &'static str,
    /// Upper bounds of a histogram's buckets, in seconds (empty for other kinds).
    pub buckets: &'static [f64],
}

/// Buckets of a platform call's duration: 5 ms to 30 s.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets of a wait for a rate-limit turn: 1 ms to 10 s.
pub const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const fn family(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Family {
    Family {
        name,
        kind,
        labels,
        help,
        buckets: &[],
    }
}

const REQUESTS: Family = family(
    "entrepot_platform_requests_total",
    Kind::Counter,
    &["platform", "operation", "outcome"],
    "Canonical calls of a platform's operation, by outcome: ok, refused (the platform's business error, 4xx or 429), transport_error (unreachable, broken off or 5xx), timeout, unavailable (breaker open or no slot within the deadline), mapping_error, invalid_input, error (the gateway's own side).",
);
const REQUEST_SECONDS: Family = Family {
    buckets: REQUEST_BUCKETS,
    ..family(
        "entrepot_platform_request_duration_seconds",
        Kind::Histogram,
        &["platform", "operation"],
        "Duration of canonical calls, whatever their outcome: slot waits, every attempt and backoffs included.",
    )
};
const CALLBACKS: Family = family(
    "entrepot_callbacks_total",
    Kind::Counter,
    &["platform", "route", "outcome"],
    "Callback deliveries received, by outcome: accepted, duplicate (verified, already stored), refused, error (the gateway could not store it; the sender tries again).",
);
const CALLBACK_REFUSALS: Family = family(
    "entrepot_callback_refusals_total",
    Kind::Counter,
    &["platform", "route", "reason"],
    "Callback deliveries refused, by reason: signature, timestamp, replay, limits, malformed.",
);
const DELIVERIES: Family = family(
    "entrepot_deliveries_total",
    Kind::Counter,
    &["target", "outcome"],
    "Attempts to deliver an event to a target, by outcome: delivered, retry (failed, due again after a backoff), dead_lettered (failed for the last time).",
);
const OUTBOX_PENDING: Family = family(
    "entrepot_outbox_pending",
    Kind::Gauge,
    &["target"],
    "Events stored for a target and not delivered yet (due, backing off or being delivered); dead letters not included.",
);
const DEAD_LETTERS: Family = family(
    "entrepot_dead_letters",
    Kind::Gauge,
    &["target"],
    "Dead-lettered events of a target, waiting to be inspected and replayed.",
);
const DELIVERY_LAG: Family = family(
    "entrepot_delivery_lag_seconds",
    Kind::Gauge,
    &["target"],
    "Age of the oldest pending event of a target; 0 when none is pending.",
);
const BREAKER_OPEN: Family = family(
    "entrepot_breaker_open",
    Kind::Gauge,
    &["platform"],
    "1 while the platform's circuit breaker refuses calls (open, or half-open with its trial call in flight), else 0.",
);
const RATE_LIMIT_WAIT: Family = Family {
    buckets: WAIT_BUCKETS,
    ..family(
        "entrepot_rate_limit_wait_seconds",
        Kind::Histogram,
        &["platform"],
        "Time an attempt waited for its turn under the platform's rate limit (qps).",
    )
};
const TOKEN_RENEWALS: Family = family(
    "entrepot_oauth_token_renewals_total",
    Kind::Counter,
    &["platform"],
    "OAuth 2 access tokens fetched or renewed from the platform's token endpoint.",
);
const RELOADS: Family = family(
    "entrepot_reload_total",
    Kind::Counter,
    &["result"],
    "Platform reloads, by result: ok (every file compiled) or error (some file keeps its last good plan).",
);
const PLATFORMS_LOADED: Family = family(
    "entrepot_platforms_loaded",
    Kind::Gauge,
    &[],
    "Platforms the gateway serves.",
);
const BUILD_INFO: Family = family(
    "entrepot_build_info",
    Kind::Gauge,
    &["version"],
    "Always 1; the label carries the gateway's version.",
);
const SYNC_RUNS_STARTED: Family = family(
    "entrepot_sync_runs_started_total",
    Kind::Counter,
    &["platform", "mode"],
    "Product sync runs started or resumed by this instance, by mode: full or incremental.",
);
const SYNC_RUNS_FINISHED: Family = family(
    "entrepot_sync_runs_finished_total",
    Kind::Counter,
    &["platform", "status"],
    "Product sync runs ended by this instance, by status: done, failed or interrupted.",
);
const SYNC_PRODUCTS_SENT: Family = family(
    "entrepot_sync_products_sent_total",
    Kind::Counter,
    &["platform"],
    "Products a sync sent to the product center (new or changed since last sent).",
);
const SAGAS: Family = family(
    "entrepot_order_sagas_total",
    Kind::Counter,
    &["outcome"],
    "Order sagas finished by this instance, by outcome: created (on every platform) or cancelled (compensated and reported).",
);
const CANCEL_FAILURES: Family = family(
    "entrepot_order_cancel_failures_total",
    Kind::Counter,
    &[],
    "Cancels of created orders that failed (each is tried again).",
);
const STEP_RETRIES: Family = family(
    "entrepot_order_step_retries_total",
    Kind::Counter,
    &[],
    "Order creations that failed and were scheduled again.",
);
const SAGAS_UNFINISHED: Family = family(
    "entrepot_order_sagas_unfinished",
    Kind::Gauge,
    &[],
    "Order sagas with work left, in the store (-1: the store failed).",
);

/// Every metric family the gateway exposes.
pub const FAMILIES: &[Family] = &[
    REQUESTS,
    REQUEST_SECONDS,
    CALLBACKS,
    CALLBACK_REFUSALS,
    DELIVERIES,
    OUTBOX_PENDING,
    DEAD_LETTERS,
    DELIVERY_LAG,
    BREAKER_OPEN,
    RATE_LIMIT_WAIT,
    TOKEN_RENEWALS,
    RELOADS,
    PLATFORMS_LOADED,
    BUILD_INFO,
    SYNC_RUNS_STARTED,
    SYNC_RUNS_FINISHED,
    SYNC_PRODUCTS_SENT,
    SAGAS,
    CANCEL_FAILURES,
    STEP_RETRIES,
    SAGAS_UNFINISHED,
];

/// Registers `metric`, built from a [`Family`] of this module. Names, help texts, label names
/// and buckets are constants here, checked by this module's tests: a failure is a mistake in
/// this file, never a consequence of configuration or input.
#[allow(clippy::expect_used)]
fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("the metric definitions of metrics.rs are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric of metrics.rs is registered once");
    metric
}

fn counter_vec(r: &Registry, f: &Family) -> IntCounterVec {
    register(r, IntCounterVec::new(Opts::new(f.name, f.help), f.labels))
}

fn counter(r: &Registry, f: &Family) -> IntCounter {
    register(r, IntCounter::new(f.name, f.help))
}

fn gauge_vec(r: &Registry, f: &Family) -> IntGaugeVec {
    register(r, IntGaugeVec::new(Opts::new(f.name, f.help), f.labels))
}

fn gauge(r: &Registry, f: &Family) -> IntGauge {
    register(r, IntGauge::new(f.name, f.help))
}

fn histogram_vec(r: &Registry, f: &Family) -> HistogramVec {
    register(
        r,
        HistogramVec::new(
            HistogramOpts::new(f.name, f.help).buckets(f.buckets.to_vec()),
            f.labels,
        ),
    )
}

/// The gateway's metrics: a sink of what it observes, and the registry `/metrics` encodes.
/// One per gateway, shared through an `Arc`.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    callbacks: IntCounterVec,
    callback_refusals: IntCounterVec,
    deliveries: IntCounterVec,
    rate_limit_wait: HistogramVec,
    token_renewals: IntCounterVec,
    reloads: IntCounterVec,
    sync_started: IntCounterVec,
    sync_finished: IntCounterVec,
    sync_sent: IntCounterVec,
    sagas: IntCounterVec,
    cancel_failures: IntCounter,
    step_retries: IntCounter,
    outbox_pending: IntGaugeVec,
    dead_letters: IntGaugeVec,
    delivery_lag: GaugeVec,
    breaker_open: IntGaugeVec,
    platforms_loaded: IntGauge,
    build_info: IntGaugeVec,
    sagas_unfinished: IntGauge,
    /// Held while the scrape-time values are set and encoded, so two scrapes at once do not
    /// interleave their resets.
    scraping: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The parts of the gateway a scrape reads.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    /// The plan serving now.
    pub plan: &'a Plan,
    /// The store (the outbox backlog and the unfinished sagas); without one those are absent.
    pub store: Option<&'a Store>,
    /// The engine (its circuit breakers); without one every breaker reads closed.
    pub engine: Option<&'a Engine>,
    /// The reloader (its totals); without one the reload counters stay at 0.
    pub reloader: Option<&'a Reloader>,
    /// The configured targets: each has a backlog series, 0 when nothing waits.
    pub targets: &'a [TargetSettings],
}

/// What a scrape read from the gateway's parts before encoding.
#[derive(Debug, Default)]
struct Readings {
    backlog: Option<Vec<crate::store::Backlog>>,
    sagas_unfinished: Option<i64>,
    now_ms: i64,
}

impl Metrics {
    /// Every family registered in a registry of its own, the reload and saga outcomes at 0.
    pub fn new() -> Self {
        let r = Registry::new();
        let m = Metrics {
            requests: counter_vec(&r, &REQUESTS),
            request_seconds: histogram_vec(&r, &REQUEST_SECONDS),
            callbacks: counter_vec(&r, &CALLBACKS),
            callback_refusals: counter_vec(&r, &CALLBACK_REFUSALS),
            deliveries: counter_vec(&r, &DELIVERIES),
            rate_limit_wait: histogram_vec(&r, &RATE_LIMIT_WAIT),
            token_renewals: counter_vec(&r, &TOKEN_RENEWALS),
            reloads: counter_vec(&r, &RELOADS),
            sync_started: counter_vec(&r, &SYNC_RUNS_STARTED),
            sync_finished: counter_vec(&r, &SYNC_RUNS_FINISHED),
            sync_sent: counter_vec(&r, &SYNC_PRODUCTS_SENT),
            sagas: counter_vec(&r, &SAGAS),
            cancel_failures: counter(&r, &CANCEL_FAILURES),
            step_retries: counter(&r, &STEP_RETRIES),
            outbox_pending: gauge_vec(&r, &OUTBOX_PENDING),
            dead_letters: gauge_vec(&r, &DEAD_LETTERS),
            delivery_lag: register(
                &r,
                GaugeVec::new(
                    Opts::new(DELIVERY_LAG.name, DELIVERY_LAG.help),
                    DELIVERY_LAG.labels,
                ),
            ),
            breaker_open: gauge_vec(&r, &BREAKER_OPEN),
            platforms_loaded: gauge(&r, &PLATFORMS_LOADED),
            build_info: gauge_vec(&r, &BUILD_INFO),
            sagas_unfinished: gauge(&r, &SAGAS_UNFINISHED),
            registry: r,
            scraping: Mutex::new(()),
        };
        for result in ["ok", "error"] {
            touch(&m.reloads, &[result]);
        }
        for outcome in ["created", "cancelled"] {
            touch(&m.sagas, &[outcome]);
        }
        if let Ok(g) = m
            .build_info
            .get_metric_with_label_values(&[env!("CARGO_PKG_VERSION")])
        {
            g.set(1);
        }
        m
    }

    /// The registry (for tests and embedding).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Reads the scrape-time values from `sources` and encodes every metric in the text
    /// exposition format. A store that fails leaves the backlog gauges out (and the saga gauge
    /// at -1) and is logged; the rest is served.
    pub async fn scrape(&self, sources: Sources<'_>) -> Result<String, String> {
        let mut readings = Readings {
            now_ms: now_ms(),
            ..Default::default()
        };
        if let Some(store) = sources.store {
            readings.backlog = match store.outbox_backlog().await {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!("metrics: the outbox backlog cannot be read: {e}");
                    None
                }
            };
            readings.sagas_unfinished = Some(
                store
                    .flows_unfinished(crate::flows::saga::KIND)
                    .await
                    .unwrap_or(-1),
            );
        }
        let _scraping = self
            .scraping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.set_scraped(&sources, &readings);
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .map_err(|e| format!("the metrics cannot be encoded: {e}"))
    }

    fn set_scraped(&self, sources: &Sources<'_>, readings: &Readings) {
        self.platforms_loaded
            .set(i64::try_from(sources.plan.platforms.len()).unwrap_or(i64::MAX));
        // Breakers: every platform of the plan, 1 when its breaker refuses calls.
        let open: BTreeMap<String, bool> = sources
            .engine
            .map(Engine::breakers_open)
            .unwrap_or_default()
            .into_iter()
            .collect();
        self.breaker_open.reset();
        for name in sources.plan.platforms.keys() {
            set(
                &self.breaker_open,
                &[name],
                i64::from(open.get(name).copied().unwrap_or(false)),
            );
        }
        // Reloads are counted by the reloader (its status page shows the same totals): the
        // counter catches up with them. Only scrapes change it, one at a time, so it never
        // goes down.
        if let Some(reloader) = sources.reloader {
            for (result, total) in reloader.totals() {
                if let Ok(c) = self.reloads.get_metric_with_label_values(&[result]) {
                    c.inc_by(total.saturating_sub(c.get()));
                }
            }
        }
        // The backlog: every configured target, and any other target with events left.
        self.outbox_pending.reset();
        self.dead_letters.reset();
        self.delivery_lag.reset();
        if let Some(backlog) = &readings.backlog {
            let mut rows: BTreeMap<&str, (i64, i64, f64)> = sources
                .targets
                .iter()
                .map(|t| (t.name.as_str(), (0, 0, 0.0)))
                .collect();
            for b in backlog {
                #[allow(clippy::cast_precision_loss)] // milliseconds of an age: exact enough
                let lag = b.oldest_pending_at.map_or(0.0, |at| {
                    readings.now_ms.saturating_sub(at).max(0) as f64 / 1000.0
                });
                rows.insert(b.target.as_str(), (b.pending, b.dead, lag));
            }
            for (target, (pending, dead, lag)) in rows {
                set(&self.outbox_pending, &[target], pending);
                set(&self.dead_letters, &[target], dead);
                if let Ok(g) = self.delivery_lag.get_metric_with_label_values(&[target]) {
                    g.set(lag);
                }
            }
        }
        if let Some(n) = readings.sagas_unfinished {
            self.sagas_unfinished.set(n);
        }
    }
}

/// Creates the series of `labels` at 0 (so it is exposed before its first event).
fn touch(v: &IntCounterVec, labels: &[&str]) {
    let _ = v.get_metric_with_label_values(labels);
}

fn inc(v: &IntCounterVec, labels: &[&str], by: u64) {
    if let Ok(c) = v.get_metric_with_label_values(labels) {
        c.inc_by(by);
    }
}

fn set(v: &IntGaugeVec, labels: &[&str], value: i64) {
    if let Ok(g) = v.get_metric_with_label_values(labels) {
        g.set(value);
    }
}

fn observe(v: &HistogramVec, labels: &[&str], d: Duration) {
    if let Ok(h) = v.get_metric_with_label_values(labels) {
        h.observe(d.as_secs_f64());
    }
}

impl Sink for Metrics {
    fn call(&self, seen: &CallSeen<'_>) {
        inc(
            &self.requests,
            &[seen.platform, seen.operation, seen.outcome.as_str()],
            1,
        );
        observe(
            &self.request_seconds,
            &[seen.platform, seen.operation],
            seen.elapsed,
        );
    }

    fn callback(&self, seen: &CallbackSeen<'_>) {
        inc(
            &self.callbacks,
            &[seen.platform, seen.route, seen.outcome.as_str()],
            1,
        );
        if let CallbackOutcome::Refused(reason) = seen.outcome {
            inc(
                &self.callback_refusals,
                &[seen.platform, seen.route, reason.as_str()],
                1,
            );
        }
    }

    fn delivery(&self, seen: &DeliverySeen<'_>) {
        inc(&self.deliveries, &[seen.target, seen.outcome.as_str()], 1);
    }

    fn rate_limit_wait(&self, platform: &str, waited: Duration) {
        observe(&self.rate_limit_wait, &[platform], waited);
    }

    fn token_renewed(&self, platform: &str) {
        inc(&self.token_renewals, &[platform], 1);
    }

    fn flow(&self, seen: &FlowSeen<'_>) {
        match *seen {
            FlowSeen::SyncStarted { platform, mode } => {
                inc(&self.sync_started, &[platform, mode], 1);
            }
            FlowSeen::SyncPage { platform, sent } => inc(&self.sync_sent, &[platform], sent),
            FlowSeen::SyncEnded { platform, status } => {
                inc(&self.sync_finished, &[platform, status], 1);
            }
            FlowSeen::SagaEnded { outcome } => inc(&self.sagas, &[outcome], 1),
            FlowSeen::SagaCancelFailed => self.cancel_failures.inc(),
            FlowSeen::SagaStepRetried => self.step_retries.inc(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::observe::{DeliveryOutcome, Outcome, Refusal};
    use std::collections::BTreeSet;

    fn feed_one_of_each(m: &Metrics) {
        m.call(&CallSeen {
            platform: "p",
            operation: "product.get",
            outcome: Outcome::Timeout,
            elapsed: Duration::from_millis(300),
        });
        m.callback(&CallbackSeen {
            platform: "p",
            route: "/p/hook",
            outcome: CallbackOutcome::Refused(Refusal::Timestamp),
        });
        m.delivery(&DeliverySeen {
            target: "t",
            event_type: "inventory.changed",
            outcome: DeliveryOutcome::Retry,
            elapsed: Duration::ZERO,
        });
        m.rate_limit_wait("p", Duration::from_millis(2));
        m.token_renewed("p");
        for seen in [
            FlowSeen::SyncStarted {
                platform: "p",
                mode: "full",
            },
            FlowSeen::SyncPage {
                platform: "p",
                sent: 7,
            },
            FlowSeen::SyncEnded {
                platform: "p",
                status: "done",
            },
            FlowSeen::SagaEnded { outcome: "created" },
            FlowSeen::SagaCancelFailed,
            FlowSeen::SagaStepRetried,
        ] {
            m.flow(&seen);
        }
    }

    #[test]
    fn the_registry_holds_exactly_the_documented_families() {
        let m = Metrics::new();
        feed_one_of_each(&m);
        // The scrape-time ones, set as a scrape sets them.
        m.set_scraped(
            &Sources {
                plan: &Plan::default(),
                store: None,
                engine: None,
                reloader: None,
                targets: &[],
            },
            &Readings {
                backlog: Some(vec![crate::store::Backlog {
                    target: "t".into(),
                    pending: 2,
                    dead: 1,
                    oldest_pending_at: Some(1_000),
                }]),
                sagas_unfinished: Some(0),
                now_ms: 3_500,
            },
        );
        m.breaker_open.with_label_values(&["p"]).set(0);
        let gathered: BTreeSet<(String, String)> = m
            .registry()
            .gather()
            .iter()
            .map(|f| {
                (
                    f.name().to_string(),
                    format!("{:?}", f.get_field_type()).to_lowercase(),
                )
            })
            .collect();
        let listed: BTreeSet<(String, String)> = FAMILIES
            .iter()
            .map(|f| (f.name.to_string(), f.kind.as_str().to_string()))
            .collect();
        assert_eq!(gathered, listed);
        assert_eq!(m.delivery_lag.with_label_values(&["t"]).get(), 2.5);
        assert_eq!(m.outbox_pending.with_label_values(&["t"]).get(), 2);
        assert_eq!(m.dead_letters.with_label_values(&["t"]).get(), 1);
    }

    #[test]
    fn families_are_well_formed() {
        let names: BTreeSet<&str> = FAMILIES.iter().map(|f| f.name).collect();
        assert_eq!(names.len(), FAMILIES.len(), "names are unique");
        for f in FAMILIES {
            assert!(f.name.starts_with("entrepot_"), "{}", f.name);
            assert_eq!(
                f.name.ends_with("_total"),
                f.kind == Kind::Counter,
                "{}: counters and only counters end in _total",
                f.name
            );
            assert_eq!(
                f.kind == Kind::Histogram,
                !f.buckets.is_empty(),
                "{}",
                f.name
            );
            assert!(f.buckets.windows(2).all(|w| w[0] < w[1]), "{}", f.name);
        }
        assert_eq!(REQUEST_BUCKETS.first(), Some(&0.005));
        assert_eq!(REQUEST_BUCKETS.last(), Some(&30.0));
    }

    #[test]
    fn a_refusal_counts_once_as_refused_and_once_under_its_reason() {
        let m = Metrics::new();
        feed_one_of_each(&m);
        assert_eq!(
            m.callbacks
                .with_label_values(&["p", "/p/hook", "refused"])
                .get(),
            1
        );
        assert_eq!(
            m.callback_refusals
                .with_label_values(&["p", "/p/hook", "timestamp"])
                .get(),
            1
        );
        assert_eq!(m.sync_sent.with_label_values(&["p"]).get(), 7);
    }
}
