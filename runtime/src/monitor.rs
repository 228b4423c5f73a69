//! Monitoring thresholds: per platform, the error rate and the p95 latency of its calls, how
//! long its circuit breaker has stayed open, the refusal rate of its callbacks and the dead
//! letters of its events, each against the limit of its platform file (or the gateway's
//! default). Crossing a limit sends `platform.degraded` to the targets subscribed to it, and
//! coming back sends `platform.recovered`: once per crossing, through the outbox like every
//! event. (Low stock is checked where stock levels arrive, in [`crate::callbacks`].)
//!
//! - **Windows.** The [`Monitor`] is an [`observe::Sink`](crate::observe::Sink): each call and
//!   callback delivery of a platform lands in a ring of [`SLOTS`] time slots spanning the
//!   platform's window, with a log-scale latency histogram per slot, so memory per platform is
//!   fixed whatever the traffic.
//! - **Hysteresis.** A threshold trips once its value has stayed above its limit for the `hold`
//!   time, and comes back once it has stayed at or below `recover_at` × its limit for the hold
//!   time; between the two nothing changes, so a value flapping around its limit sends nothing.
//! - **Several instances.** Each instance sees its own calls and breakers. The crossing lives in
//!   the store (the `flows` table, kind [`KIND`], one row per platform and threshold), written
//!   with compare-and-set: each instance that sees the threshold tripped *votes* in the row.
//!   The first vote opens the crossing and stores `platform.degraded` in the same transaction;
//!   the last vote withdrawn closes it and stores `platform.recovered`. An instance refreshes
//!   its vote while it stands; a vote not refreshed for [`VOTE_TTL_EVALUATIONS`] evaluation
//!   intervals (its instance died) is dropped by whichever instance evaluates next. So one
//!   crossing is one event pair, whichever and however many instances saw it, and the
//!   idempotency key of each event (platform, threshold, the crossing's start) makes a retried
//!   write harmless.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::compile::gateway::{MonitoringSettings, TargetSettings};
use crate::observe::{CallSeen, CallbackOutcome, CallbackSeen, Outcome, Sink};
use crate::plan::{MonitoringPlan, Plan, Thresholds};
use crate::store::{NewEvent, Store, StoreError};
use crate::timefmt::{now_ms, rfc3339_ms};

/// Flow kind of the crossings' rows.
pub const KIND: &str = "monitor";
/// Time slots per window.
pub const SLOTS: usize = 20;
/// A vote not refreshed for this many evaluation intervals is dropped.
pub const VOTE_TTL_EVALUATIONS: u32 = 6;
/// The event sent when a threshold trips.
pub const DEGRADED: &str = "platform.degraded";
/// The event sent when it is back.
pub const RECOVERED: &str = "platform.recovered";

/// Latency buckets: bucket `i` holds durations up to `RATIO^i` ms (bucket 0: up to 1 ms).
const BUCKETS: usize = 64;
const RATIO: f64 = 1.2;

/// A watched threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Threshold {
    /// Share of calls failing because of the platform.
    ErrorRate,
    /// 95th percentile of call durations.
    LatencyP95,
    /// How long the breaker has stayed open.
    BreakerOpen,
    /// Share of callback deliveries refused.
    CallbackRefusalRate,
    /// Dead-lettered events of the platform.
    DeadLetters,
}

impl Threshold {
    /// Every threshold, in documentation order.
    pub const ALL: [Threshold; 5] = [
        Threshold::ErrorRate,
        Threshold::LatencyP95,
        Threshold::BreakerOpen,
        Threshold::CallbackRefusalRate,
        Threshold::DeadLetters,
    ];

    /// Its name, as in the YAML and the events.
    pub fn as_str(self) -> &'static str {
        match self {
            Threshold::ErrorRate => "error_rate",
            Threshold::LatencyP95 => "latency_p95",
            Threshold::BreakerOpen => "breaker_open",
            Threshold::CallbackRefusalRate => "callback_refusal_rate",
            Threshold::DeadLetters => "dead_letters",
        }
    }

    /// The unit of its values: `fraction`, `milliseconds` or `count`.
    pub fn unit(self) -> &'static str {
        match self {
            Threshold::ErrorRate | Threshold::CallbackRefusalRate => "fraction",
            Threshold::LatencyP95 | Threshold::BreakerOpen => "milliseconds",
            Threshold::DeadLetters => "count",
        }
    }

    /// Its limit in `t`, in its unit; `None` when it is not watched.
    pub fn limit(self, t: &Thresholds) -> Option<f64> {
        match self {
            Threshold::ErrorRate => t.error_rate,
            Threshold::LatencyP95 => t.latency_p95.map(ms),
            Threshold::BreakerOpen => t.breaker_open.map(ms),
            Threshold::CallbackRefusalRate => t.callback_refusal_rate,
            #[allow(clippy::cast_precision_loss)] // counts far below 2^52
            Threshold::DeadLetters => t.dead_letters.map(|n| n as f64),
        }
    }

    /// The fraction of its limit at or below which a tripped threshold is back: the
    /// configured one, except for the breaker, which is back as soon as it closes.
    fn recover_at(self, t: &Thresholds) -> f64 {
        match self {
            Threshold::BreakerOpen => 1.0,
            _ => t.recover_at,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ------------------------------------------------------------------ windows

/// Counts of one time slot.
#[derive(Debug, Clone)]
struct Slot {
    /// Which slot of time this is (slots since the window's origin); a slot found with an
    /// older index is stale and reset.
    index: u64,
    calls: u32,
    errors: u32,
    deliveries: u32,
    refusals: u32,
    latency: [u32; BUCKETS],
}

impl Slot {
    fn empty(index: u64) -> Self {
        Slot {
            index,
            calls: 0,
            errors: 0,
            deliveries: 0,
            refusals: 0,
            latency: [0; BUCKETS],
        }
    }
}

/// What a window holds, summed.
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    /// Calls counted (failures of the caller's input and of the gateway itself are not).
    pub calls: u32,
    /// Of which failed because of the platform.
    pub errors: u32,
    /// Callback deliveries counted (the gateway's own failures are not).
    pub deliveries: u32,
    /// Of which refused.
    pub refusals: u32,
    latency: [u32; BUCKETS],
}

impl Totals {
    /// The 95th percentile of the call durations, in ms: the upper bound of the histogram
    /// bucket holding it (at most 20% above the true value). `None` without calls.
    pub fn p95_ms(&self) -> Option<f64> {
        if self.calls == 0 {
            return None;
        }
        let need = (f64::from(self.calls) * 0.95).ceil();
        let mut seen = 0.0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += f64::from(*n);
            if seen >= need {
                return Some(bucket_bound(i));
            }
        }
        Some(bucket_bound(BUCKETS - 1))
    }
}

fn bucket_bound(i: usize) -> f64 {
    RATIO.powi(i32::try_from(i).unwrap_or(i32::MAX))
}

fn bucket_of(d: Duration) -> usize {
    let v = ms(d);
    if v <= 1.0 {
        return 0;
    }
    let i = (v.ln() / RATIO.ln()).ceil();
    // Float noise can put an exact bound one bucket up: step back when the previous holds it.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // finite, >= 0
    let mut i = (i as usize).min(BUCKETS - 1);
    if i > 0 && v <= bucket_bound(i - 1) {
        i -= 1;
    }
    i
}

/// One platform's sliding window: [`SLOTS`] slots of `window / SLOTS` each.
#[derive(Debug)]
pub struct Window {
    window: Duration,
    width: Duration,
    origin: Instant,
    slots: Vec<Slot>,
}

impl Window {
    /// An empty window of `window`, starting at `origin`.
    pub fn new(window: Duration, origin: Instant) -> Self {
        let width = (window / u32::try_from(SLOTS).unwrap_or(20)).max(Duration::from_millis(1));
        Window {
            window,
            width,
            origin,
            slots: (0..SLOTS).map(|_| Slot::empty(0)).collect(),
        }
    }

    fn index(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin);
        u64::try_from(since.as_nanos() / self.width.as_nanos().max(1)).unwrap_or(u64::MAX)
    }

    fn slot(&mut self, now: Instant) -> Option<&mut Slot> {
        let index = self.index(now);
        let slot = self
            .slots
            .get_mut(usize::try_from(index % SLOTS as u64).ok()?)?;
        if slot.index != index {
            *slot = Slot::empty(index);
        }
        Some(slot)
    }

    /// Counts a call that ended at `now`: `error` when it failed because of the platform.
    pub fn call(&mut self, now: Instant, error: bool, elapsed: Duration) {
        if let Some(s) = self.slot(now) {
            s.calls = s.calls.saturating_add(1);
            s.errors = s.errors.saturating_add(u32::from(error));
            if let Some(b) = s.latency.get_mut(bucket_of(elapsed)) {
                *b = b.saturating_add(1);
            }
        }
    }

    /// Counts a callback delivery that ended at `now`.
    pub fn delivery(&mut self, now: Instant, refused: bool) {
        if let Some(s) = self.slot(now) {
            s.deliveries = s.deliveries.saturating_add(1);
            s.refusals = s.refusals.saturating_add(u32::from(refused));
        }
    }

    /// The sums over the slots within the window ending at `now`.
    pub fn totals(&self, now: Instant) -> Totals {
        let current = self.index(now);
        let oldest = current.saturating_sub(SLOTS as u64 - 1);
        let mut t = Totals {
            calls: 0,
            errors: 0,
            deliveries: 0,
            refusals: 0,
            latency: [0; BUCKETS],
        };
        for s in self
            .slots
            .iter()
            .filter(|s| s.index >= oldest && s.index <= current)
        {
            // A slot never written has index 0 and no counts: summing it changes nothing.
            t.calls = t.calls.saturating_add(s.calls);
            t.errors = t.errors.saturating_add(s.errors);
            t.deliveries = t.deliveries.saturating_add(s.deliveries);
            t.refusals = t.refusals.saturating_add(s.refusals);
            for (a, b) in t.latency.iter_mut().zip(s.latency.iter()) {
                *a = a.saturating_add(*b);
            }
        }
        t
    }
}

/// The value of `threshold` over `totals`, or `None` when there is not enough to judge.
fn windowed(threshold: Threshold, totals: &Totals, min_calls: u32) -> Option<f64> {
    match threshold {
        Threshold::ErrorRate if totals.calls >= min_calls => {
            Some(f64::from(totals.errors) / f64::from(totals.calls))
        }
        Threshold::LatencyP95 if totals.calls >= min_calls => totals.p95_ms(),
        Threshold::CallbackRefusalRate if totals.deliveries >= min_calls => {
            Some(f64::from(totals.refusals) / f64::from(totals.deliveries))
        }
        _ => None,
    }
}

// ------------------------------------------------------------------ hysteresis

/// One instance's view of one threshold of one platform.
#[derive(Debug, Clone, Default)]
pub struct Crossing {
    tripped: bool,
    /// When the value started to be on the other side (monotonic, and Unix ms).
    pending: Option<(Instant, i64)>,
    /// Start of the current crossing (Unix ms).
    since: i64,
    /// Last value seen while tripped.
    value: f64,
    /// When this instance's vote was last written.
    voted: Option<Instant>,
}

/// What one evaluation changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// The threshold tripped: it has been above its limit since `since` (Unix ms).
    Tripped {
        /// Start of the crossing.
        since: i64,
    },
    /// It is back.
    Cleared,
}

impl Crossing {
    /// Whether it is tripped.
    pub fn tripped(&self) -> bool {
        self.tripped
    }

    /// Takes one observation. `observed` is `None` when there is nothing to judge (too few
    /// calls), which counts as back. Trips after `hold` above `limit`;
    /// clears after `hold` at or below `recover_at × limit`.
    pub fn step(
        &mut self,
        observed: Option<f64>,
        limit: f64,
        recover_at: f64,
        hold: Duration,
        now: Instant,
        now_ms: i64,
    ) -> Option<Change> {
        let over = observed.is_some_and(|v| v > limit);
        let back = observed.is_none_or(|v| v <= limit * recover_at);
        if let (true, Some(v)) = (self.tripped, observed) {
            self.value = v;
        }
        let leaving = if self.tripped { back } else { over };
        if !leaving {
            self.pending = None;
            return None;
        }
        let (started, started_ms) = *self.pending.get_or_insert((now, now_ms));
        if now.saturating_duration_since(started) < hold {
            return None;
        }
        self.pending = None;
        self.tripped = !self.tripped;
        if self.tripped {
            self.since = started_ms;
            self.value = observed.unwrap_or(limit);
            Some(Change::Tripped { since: started_ms })
        } else {
            Some(Change::Cleared)
        }
    }
}

// ------------------------------------------------------------------ the monitor

/// The monitor of one gateway instance: a [`Sink`] feeding the windows, and the evaluation
/// task ([`Monitor::run`]) turning them into crossings.
pub struct Monitor {
    plan: Arc<ArcSwap<Plan>>,
    settings: MonitoringSettings,
    store: Store,
    targets: Arc<Vec<TargetSettings>>,
    instance: String,
    windows: Mutex<HashMap<String, Window>>,
    crossings: Mutex<HashMap<(String, Threshold), Crossing>>,
    evaluations: AtomicU64,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// The row of `platform`'s `threshold` crossing.
pub fn flow_id(platform: &str, threshold: Threshold) -> String {
    format!("{KIND}/{platform}/{}", threshold.as_str())
}

/// A vote to write: this instance sees the threshold tripped (with its value, limit and
/// start), or no longer does.
#[derive(Debug, Clone, Copy)]
struct Vote {
    observed: f64,
    limit: f64,
    since: i64,
}

impl Monitor {
    /// A monitor of the platforms of `plan`, under `settings`, sending its events to the
    /// `targets` subscribed to them through `store`.
    pub fn new(
        store: Store,
        plan: Arc<ArcSwap<Plan>>,
        targets: Arc<Vec<TargetSettings>>,
        settings: MonitoringSettings,
    ) -> Self {
        Monitor {
            plan,
            settings,
            store,
            targets,
            instance: format!("monitor-{}", uuid::Uuid::new_v4().simple()),
            windows: Mutex::new(HashMap::new()),
            crossings: Mutex::new(HashMap::new()),
            evaluations: AtomicU64::new(0),
        }
    }

    /// The gateway-wide defaults.
    pub fn defaults(&self) -> &MonitoringPlan {
        &self.settings.defaults
    }

    /// How many evaluations have completed.
    pub fn evaluations(&self) -> u64 {
        self.evaluations.load(Ordering::SeqCst)
    }

    fn vote_ttl_ms(&self) -> i64 {
        let ttl = self.settings.every * VOTE_TTL_EVALUATIONS;
        i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// The thresholds of `platform`, when it is in the current plan and watches any windowed
    /// threshold.
    fn windowed_thresholds(&self, platform: &str) -> Option<Thresholds> {
        let plan = self.plan.load();
        let t = plan
            .platforms
            .get(platform)?
            .monitoring
            .over(&self.settings.defaults);
        (t.error_rate.is_some() || t.latency_p95.is_some() || t.callback_refusal_rate.is_some())
            .then_some(t)
    }

    fn with_window(&self, platform: &str, f: impl FnOnce(&mut Window, Instant)) {
        let Some(t) = self.windowed_thresholds(platform) else {
            return;
        };
        let now = Instant::now();
        let Ok(mut windows) = self.windows.lock() else {
            return;
        };
        let w = windows
            .entry(platform.to_string())
            .or_insert_with(|| Window::new(t.window, now));
        if w.window != t.window {
            // The window was changed by a reload: start counting afresh.
            *w = Window::new(t.window, now);
        }
        f(w, now);
    }

    /// Runs the evaluations every `monitoring.every` until `stop` resolves. `breakers` tells
    /// since when each platform's breaker has been open (the engine's transport room);
    /// `notify` wakes the dispatcher when events were stored.
    pub async fn run<B>(
        self: Arc<Self>,
        breakers: B,
        notify: Option<Arc<Notify>>,
        stop: impl Future<Output = ()>,
    ) where
        B: Fn() -> HashMap<String, Instant> + Send,
    {
        let mut tick = tokio::time::interval(self.settings.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {
                    let open = breakers();
                    match self.evaluate(&open).await {
                        Ok(true) => {
                            if let Some(n) = &notify {
                                n.notify_one();
                            }
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!("monitoring thresholds not evaluated: {e}"),
                    }
                    self.evaluations.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// One evaluation of every platform's thresholds, with `breakers` open since the times
    /// given; returns whether events were stored.
    pub async fn evaluate(&self, breakers: &HashMap<String, Instant>) -> Result<bool, StoreError> {
        let plan = self.plan.load_full();
        let now = Instant::now();
        let now_ms = now_ms();
        let watched: Vec<(String, Thresholds)> = plan
            .platforms
            .values()
            .map(|p| (p.name.clone(), p.monitoring.over(&self.settings.defaults)))
            .collect();
        let dead = if watched.iter().any(|(_, t)| t.dead_letters.is_some()) {
            match self.store.dead_letters_by_platform().await {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!("dead letters not counted: {e}");
                    None
                }
            }
        } else {
            None
        };
        // Decide every change first (no lock is held across the store's awaits).
        let mut votes: Vec<(String, Threshold, Option<Vote>)> = Vec::new();
        {
            let totals: HashMap<String, Totals> = match self.windows.lock() {
                Ok(mut w) => {
                    w.retain(|name, _| plan.platforms.contains_key(name));
                    w.iter().map(|(k, v)| (k.clone(), v.totals(now))).collect()
                }
                Err(_) => HashMap::new(),
            };
            let Ok(mut crossings) = self.crossings.lock() else {
                return Ok(false);
            };
            for (name, t) in &watched {
                for threshold in Threshold::ALL {
                    let key = (name.clone(), threshold);
                    let Some(limit) = threshold.limit(t) else {
                        // Not (or no longer) watched: a vote standing is withdrawn.
                        if crossings.remove(&key).is_some_and(|c| c.tripped) {
                            votes.push((name.clone(), threshold, None));
                        }
                        continue;
                    };
                    let observed = match threshold {
                        // A closed breaker has been open for no time: that is the value a
                        // recovered crossing reports, not the last time it was open.
                        Threshold::BreakerOpen => Some(
                            breakers
                                .get(name)
                                .map_or(0.0, |since| ms(now.saturating_duration_since(*since))),
                        ),
                        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
                        Threshold::DeadLetters => match &dead {
                            Some(d) => Some(d.get(name).copied().unwrap_or(0) as f64),
                            // Unknown this time: nothing changes.
                            None => continue,
                        },
                        _ => totals
                            .get(name)
                            .and_then(|tot| windowed(threshold, tot, t.min_calls)),
                    };
                    let c = crossings.entry(key).or_default();
                    let change = c.step(
                        observed,
                        limit,
                        threshold.recover_at(t),
                        t.hold,
                        now,
                        now_ms,
                    );
                    let refresh_every = self.settings.every * 2;
                    let vote = Vote {
                        observed: c.value,
                        limit,
                        since: c.since,
                    };
                    match change {
                        Some(Change::Tripped { .. }) => {
                            c.voted = Some(now);
                            votes.push((name.clone(), threshold, Some(vote)));
                        }
                        Some(Change::Cleared) => {
                            c.voted = None;
                            votes.push((name.clone(), threshold, None));
                        }
                        None if c.tripped
                            && c.voted.is_none_or(|v| {
                                now.saturating_duration_since(v) >= refresh_every
                            }) =>
                        {
                            c.voted = Some(now);
                            votes.push((name.clone(), threshold, Some(vote)));
                        }
                        None => {}
                    }
                }
            }
            // Platforms no longer in the plan: their votes are withdrawn.
            let gone: Vec<(String, Threshold)> = crossings
                .keys()
                .filter(|(name, _)| !plan.platforms.contains_key(name))
                .cloned()
                .collect();
            for key in gone {
                if crossings.remove(&key).is_some_and(|c| c.tripped) {
                    votes.push((key.0, key.1, None));
                }
            }
        }
        let mut stored = false;
        for (platform, threshold, vote) in votes {
            match self.vote(&platform, threshold, vote, now_ms).await {
                Ok(s) => stored |= s,
                Err(e) => {
                    tracing::warn!(%platform, threshold = threshold.as_str(), "the crossing could not be saved: {e}");
                    // Written again at the next evaluation.
                    if let Ok(mut crossings) = self.crossings.lock()
                        && let Some(c) = crossings.get_mut(&(platform.clone(), threshold))
                    {
                        c.voted = None;
                    }
                }
            }
        }
        // Crossings whose votes ran out (their instances stopped): closed by whoever comes.
        for id in self.store.flows_due(KIND, now_ms, 100).await? {
            let Some((platform, threshold)) = parse_flow_id(&id) else {
                continue;
            };
            match self.vote_as(&platform, threshold, None, now_ms, None).await {
                Ok(s) => stored |= s,
                Err(e) => tracing::warn!(%platform, "an expired crossing could not be closed: {e}"),
            }
        }
        Ok(stored)
    }

    /// Writes this instance's vote on `platform`'s `threshold` crossing.
    async fn vote(
        &self,
        platform: &str,
        threshold: Threshold,
        vote: Option<Vote>,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.vote_as(platform, threshold, vote, now, Some(&self.instance))
            .await
    }

    /// Writes `voter`'s vote (none: only drops the expired votes), opening or closing the
    /// crossing with its event in the same transaction; retried on a conflicting write.
    /// Returns whether an event was stored.
    async fn vote_as(
        &self,
        platform: &str,
        threshold: Threshold,
        vote: Option<Vote>,
        now: i64,
        voter: Option<&str>,
    ) -> Result<bool, StoreError> {
        let id = flow_id(platform, threshold);
        let ttl = self.vote_ttl_ms();
        for _ in 0..8 {
            let found = self.store.flow_get(&id).await?;
            let expected = found.as_ref().map(|f| f.version);
            let mut state = match found {
                Some(f) if f.state.is_object() => f.state,
                _ => {
                    json!({ "platform": platform, "threshold": threshold.as_str(), "open": null, "votes": {} })
                }
            };
            if expected.is_none() && vote.is_none() {
                // Nothing stands and nothing is voted: no row to write.
                return Ok(false);
            }
            let before = state.clone();
            let mut votes: Map<String, Value> = state
                .get("votes")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            // The value last reported, whoever reported it.
            let last_seen = votes
                .values()
                .max_by_key(|v| v.get("at").and_then(Value::as_i64).unwrap_or(0))
                .and_then(|v| v.get("observed"))
                .and_then(Value::as_f64);
            votes.retain(|_, v| {
                v.get("at")
                    .and_then(Value::as_i64)
                    .is_some_and(|at| at.saturating_add(ttl) > now)
            });
            if let Some(voter) = voter {
                votes.remove(voter);
                if let Some(v) = vote {
                    votes.insert(
                        voter.to_string(),
                        json!({ "observed": v.observed, "limit": v.limit, "since": v.since, "at": now }),
                    );
                }
            }
            let mut open = state.get("open").cloned().filter(Value::is_object);
            let mut events = Vec::new();
            match (&open, votes.is_empty()) {
                (None, false) => {
                    let v = vote.or_else(|| vote_of(votes.values().next()));
                    if let Some(v) = v {
                        let o =
                            json!({ "since": v.since, "observed": v.observed, "limit": v.limit });
                        events = self.events(platform, threshold, DEGRADED, &o, None, now);
                        open = Some(o);
                    }
                }
                (Some(o), true) => {
                    let mut o = o.clone();
                    // The value it came back with: the withdrawing instance's, else the last
                    // one reported.
                    let observed = voter
                        .and_then(|_| self.current_value(platform, threshold))
                        .or(last_seen);
                    if let (Some(map), Some(observed)) = (o.as_object_mut(), observed) {
                        map.insert("observed".into(), json!(observed));
                    }
                    events = self.events(platform, threshold, RECOVERED, &o, Some(now), now);
                    open = None;
                }
                (Some(o), false) => {
                    // Still open: keep the value shown up to date.
                    let mut o = o.clone();
                    if let (Some(map), Some(v)) = (o.as_object_mut(), vote) {
                        map.insert("observed".into(), json!(v.observed));
                        map.insert("limit".into(), json!(v.limit));
                    }
                    open = Some(o);
                }
                (None, true) => {}
            }
            let due = open.as_ref().and_then(|_| {
                votes
                    .values()
                    .filter_map(|v| v.get("at").and_then(Value::as_i64))
                    .min()
                    .map(|at| at.saturating_add(ttl))
            });
            if let Some(map) = state.as_object_mut() {
                map.insert("open".into(), open.unwrap_or(Value::Null));
                map.insert("votes".into(), Value::Object(votes));
            }
            if state == before && expected.is_some() {
                return Ok(false);
            }
            match self
                .store
                .flow_save_with_events(&id, KIND, &state, expected, now, due, &events)
                .await
            {
                Ok(_) => {
                    if let Some(e) = events.first() {
                        tracing::info!(%platform, threshold = threshold.as_str(), "{} sent", e.event_type);
                    }
                    return Ok(!events.is_empty());
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict {
            id,
            expected: None,
            found: None,
        })
    }

    /// This instance's current value of a threshold, when it has one.
    fn current_value(&self, platform: &str, threshold: Threshold) -> Option<f64> {
        let crossings = self.crossings.lock().ok()?;
        let c = crossings.get(&(platform.to_string(), threshold))?;
        Some(c.value)
    }

    /// The `event_type` event of a crossing `open` (`since`, `observed`, `limit`) for every
    /// subscribed target.
    fn events(
        &self,
        platform: &str,
        threshold: Threshold,
        event_type: &str,
        open: &Value,
        recovered_at: Option<i64>,
        now: i64,
    ) -> Vec<NewEvent> {
        let since = open.get("since").and_then(Value::as_i64).unwrap_or(now);
        let mut data = json!({
            "threshold": threshold.as_str(),
            "observed": open.get("observed").cloned().unwrap_or(json!(0)),
            "limit": open.get("limit").cloned().unwrap_or(json!(0)),
            "unit": threshold.unit(),
            "since": rfc3339_ms(since),
        });
        if let (Some(map), Some(at)) = (data.as_object_mut(), recovered_at) {
            map.insert("recovered_at".into(), json!(rfc3339_ms(at)));
        }
        let key = format!("{platform}:{event_type}:{}:{since}", threshold.as_str());
        let envelope = json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "type": event_type,
            "platform": platform,
            "occurred_at": rfc3339_ms(now),
            "received_at": rfc3339_ms(now),
            "data": data,
            "idempotency_key": key,
        })
        .to_string();
        self.targets
            .iter()
            .filter(|t| t.events.iter().any(|e| e == event_type))
            .map(|t| NewEvent {
                event_id: format!("{key}/{}", t.name),
                target: t.name.clone(),
                event_type: event_type.to_string(),
                payload: envelope.clone(),
                idempotency_key: key.clone(),
                max_attempts: i64::from(t.max_attempts),
            })
            .collect()
    }

    /// The thresholds currently tripped, by platform, as the store holds them (whichever
    /// instance saw them): each with its `threshold`, `observed` value, `limit`, `unit`,
    /// `since` (RFC 3339) and how many `instances` see it.
    pub async fn tripped(&self) -> Result<HashMap<String, Vec<Value>>, StoreError> {
        let rows = self.store.flows_created(KIND, 0, i64::MAX, 10_000).await?;
        let mut out: HashMap<String, Vec<Value>> = HashMap::new();
        for (id, flow) in rows {
            let Some((platform, threshold)) = parse_flow_id(&id) else {
                continue;
            };
            let Some(open) = flow.state.get("open").filter(|o| o.is_object()) else {
                continue;
            };
            let instances = flow
                .state
                .get("votes")
                .and_then(Value::as_object)
                .map_or(0, Map::len);
            out.entry(platform).or_default().push(json!({
                "threshold": threshold.as_str(),
                "observed": open.get("observed"),
                "limit": open.get("limit"),
                "unit": threshold.unit(),
                "since": rfc3339_ms(open.get("since").and_then(Value::as_i64).unwrap_or(0)),
                "instances": instances,
            }));
        }
        Ok(out)
    }
}

fn vote_of(v: Option<&Value>) -> Option<Vote> {
    let v = v?;
    Some(Vote {
        observed: v.get("observed")?.as_f64()?,
        limit: v.get("limit")?.as_f64()?,
        since: v.get("since")?.as_i64()?,
    })
}

fn parse_flow_id(id: &str) -> Option<(String, Threshold)> {
    let rest = id.strip_prefix(KIND)?.strip_prefix('/')?;
    let (platform, name) = rest.rsplit_once('/')?;
    let threshold = Threshold::ALL.into_iter().find(|t| t.as_str() == name)?;
    Some((platform.to_string(), threshold))
}

impl Sink for Monitor {
    fn call(&self, seen: &CallSeen<'_>) {
        let error = match seen.outcome {
            Outcome::Ok => false,
            Outcome::Refused
            | Outcome::TransportError
            | Outcome::Timeout
            | Outcome::Unavailable
            | Outcome::MappingError => true,
            // The caller's input and the gateway's own failures say nothing of the platform.
            Outcome::InvalidInput | Outcome::Error => return,
        };
        self.with_window(seen.platform, |w, now| w.call(now, error, seen.elapsed));
    }

    fn callback(&self, seen: &CallbackSeen<'_>) {
        let refused = match seen.outcome {
            CallbackOutcome::Accepted | CallbackOutcome::Duplicate => false,
            CallbackOutcome::Refused(_) => true,
            CallbackOutcome::Error => return,
        };
        self.with_window(seen.platform, |w, now| w.delivery(now, refused));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(10);

    /// Steps `c` once a second from `t0` through `values`, returning the changes with the
    /// second they happened at.
    fn run(c: &mut Crossing, t0: Instant, values: &[Option<f64>]) -> Vec<(usize, Change)> {
        values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let secs = u64::try_from(i).unwrap();
                let now = t0 + Duration::from_secs(secs);
                c.step(*v, 0.5, 0.8, HOLD, now, i64::try_from(i).unwrap() * 1000)
                    .map(|ch| (i, ch))
            })
            .collect()
    }

    #[test]
    fn a_crossing_trips_after_the_hold_and_clears_after_the_hold() {
        let mut c = Crossing::default();
        let t0 = Instant::now();
        // Above from second 2; tripped at 12 (2 + hold), reported as since second 2.
        let mut values = vec![Some(0.1), Some(0.1)];
        values.extend(std::iter::repeat_n(Some(0.9), 20));
        // Back under 0.4 (0.8 × 0.5) from second 22: cleared at 32.
        values.extend(std::iter::repeat_n(Some(0.3), 15));
        let changes = run(&mut c, t0, &values);
        assert_eq!(
            changes,
            vec![(12, Change::Tripped { since: 2000 }), (32, Change::Cleared)]
        );
    }

    #[test]
    fn flapping_around_the_limit_changes_nothing_more() {
        let mut c = Crossing::default();
        let t0 = Instant::now();
        // Crossing the limit for 5 s out of every 6: never for a whole hold.
        let flap: Vec<Option<f64>> = (0..120)
            .map(|i| Some(if i % 6 == 5 { 0.45 } else { 0.55 }))
            .collect();
        assert_eq!(run(&mut c, t0, &flap), vec![]);
        assert!(!c.tripped());
        // Tripped, then flapping between the limit and the recovery level (0.4 to 0.5): it
        // stays tripped, one change in all.
        let mut values = vec![Some(0.9); 11];
        values.extend((0..120).map(|i| Some(if i % 2 == 0 { 0.45 } else { 0.6 })));
        // And dipping under the recovery level for less than the hold: still tripped.
        values.extend((0..120).map(|i| Some(if i % 10 == 0 { 0.9 } else { 0.1 })));
        let changes = run(&mut Crossing::default(), t0, &values);
        assert_eq!(changes, vec![(10, Change::Tripped { since: 0 })]);
    }

    #[test]
    fn nothing_to_judge_counts_as_back() {
        let mut c = Crossing::default();
        let t0 = Instant::now();
        let mut values = vec![Some(0.9); 11];
        values.extend(vec![None; 11]);
        assert_eq!(
            run(&mut c, t0, &values),
            vec![(10, Change::Tripped { since: 0 }), (21, Change::Cleared)]
        );
    }

    #[test]
    fn windows_count_what_they_hold_and_forget_what_slid_out() {
        let t0 = Instant::now();
        // 20 slots of 100 ms.
        let mut w = Window::new(Duration::from_secs(2), t0);
        for i in 0..10u32 {
            w.call(
                t0 + Duration::from_millis(50),
                i < 3,
                Duration::from_millis(10),
            );
        }
        w.delivery(t0 + Duration::from_millis(150), true);
        w.delivery(t0 + Duration::from_millis(150), false);
        let t = w.totals(t0 + Duration::from_millis(1500));
        assert_eq!((t.calls, t.errors, t.deliveries, t.refusals), (10, 3, 2, 1));
        assert_eq!(windowed(Threshold::ErrorRate, &t, 10), Some(0.3));
        assert_eq!(windowed(Threshold::ErrorRate, &t, 11), None);
        assert_eq!(windowed(Threshold::CallbackRefusalRate, &t, 2), Some(0.5));
        // Slot 0 leaves the window at 2 s; slot 1 (the deliveries) at 2.1 s.
        let t = w.totals(t0 + Duration::from_millis(2050));
        assert_eq!((t.calls, t.deliveries), (0, 2));
        let t = w.totals(t0 + Duration::from_millis(2150));
        assert_eq!((t.calls, t.deliveries), (0, 0));
        // A slot reused a lap later starts from nothing.
        w.call(t0 + Duration::from_millis(2050), true, Duration::ZERO);
        let t = w.totals(t0 + Duration::from_millis(2050));
        assert_eq!((t.calls, t.errors), (1, 1));
    }

    #[test]
    fn p95_is_the_bound_of_the_bucket_holding_it() {
        let t0 = Instant::now();
        let mut w = Window::new(Duration::from_secs(60), t0);
        // 95 calls of 10 ms and 5 of 5 s: the 95th is 10 ms, the 96th 5 s.
        for _ in 0..95 {
            w.call(t0, false, Duration::from_millis(10));
        }
        for _ in 0..5 {
            w.call(t0, false, Duration::from_secs(5));
        }
        let p95 = w.totals(t0).p95_ms().unwrap();
        // The bucket bound above 10 ms: 1.2^13 ≈ 10.70 ms (1.2^12 ≈ 8.92 is below).
        assert!((10.0..=12.0).contains(&p95), "{p95}");
        w.call(t0, false, Duration::from_secs(5));
        let p95 = w.totals(t0).p95_ms().unwrap();
        // 101 calls: the 96th (ceil 95.95) is now one of the 5 s calls.
        assert!((5000.0..=6000.0).contains(&p95), "{p95}");
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert_eq!(bucket_of(Duration::from_secs(100_000)), BUCKETS - 1);
    }

    #[test]
    fn flow_ids_round_trip() {
        for t in Threshold::ALL {
            let id = flow_id("some-platform", t);
            assert_eq!(parse_flow_id(&id), Some(("some-platform".to_string(), t)));
        }
        assert_eq!(parse_flow_id("sync/acme"), None);
    }
}
