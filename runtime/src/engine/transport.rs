//! Transport policy: a rate limit matching the platform's quota, a concurrency cap, retries
//! with exponential backoff and full jitter, and a circuit breaker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Semaphore;

use crate::plan::{BreakerPlan, TransportPlan};

/// Paces calls so that no more than `qps` start per second. Callers queue in order; each
/// starts `1/qps` after the previous start. Nothing is reserved ahead: a caller that goes
/// away while queued gives its place up, and a caller whose turn would come after its
/// deadline is refused at once.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    /// The start of the last call let through.
    last: Mutex<Option<Instant>>,
    /// The queue: held by the caller whose turn is next, while it waits for it.
    turn: tokio::sync::Mutex<()>,
    /// Callers queued or waiting for their turn.
    waiting: AtomicUsize,
}

/// Counts a queued caller for as long as it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pacer {
    /// A pacer for `qps` calls per second.
    pub fn new(qps: f64) -> Self {
        Pacer {
            interval: Duration::from_secs_f64(1.0 / qps.max(0.001)),
            last: Mutex::new(None),
            turn: tokio::sync::Mutex::new(()),
            waiting: AtomicUsize::new(0),
        }
    }

    /// The earliest start after the last one.
    fn next_free(&self, now: Instant) -> Instant {
        let last = self.last.lock().ok().and_then(|l| *l);
        match last.and_then(|l| l.checked_add(self.interval)) {
            Some(n) if n > now => n,
            _ => now,
        }
    }

    /// Waits for this call's turn. `Err(wait)` when the turn would come after `deadline`
    /// (estimated from the callers queued ahead): `wait` is how long until a turn is likely
    /// free. Dropping the future gives the place up.
    pub async fn wait(&self, deadline: Instant) -> Result<(), Duration> {
        let now = Instant::now();
        let ahead = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        let queued = self
            .interval
            .saturating_mul(u32::try_from(ahead).unwrap_or(u32::MAX));
        let estimate = later(self.next_free(now), queued);
        if estimate > deadline {
            return Err(estimate.saturating_duration_since(now));
        }
        let Ok(_turn) = tokio::time::timeout_at(deadline, self.turn.lock()).await else {
            let now = Instant::now();
            return Err(self.next_free(now).saturating_duration_since(now));
        };
        let now = Instant::now();
        let slot = self.next_free(now);
        if slot > deadline {
            return Err(slot.saturating_duration_since(now));
        }
        tokio::time::sleep_until(slot).await;
        if let Ok(mut last) = self.last.lock() {
            *last = Some(slot);
        }
        Ok(())
    }
}

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls fail fast until the instant given.
    Open(Instant),
    /// One trial call is in flight.
    HalfOpen,
}

/// A circuit breaker counting outcomes in fixed windows.
#[derive(Debug)]
pub struct Breaker {
    plan: BreakerPlan,
    inner: Mutex<BreakerInner>,
}

#[derive(Debug)]
struct BreakerInner {
    state: BreakerState,
    /// When it last opened from closed; kept while it is open or half-open.
    opened_at: Option<Instant>,
    window_start: Instant,
    calls: u32,
    failures: u32,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(plan: BreakerPlan, now: Instant) -> Self {
        Breaker {
            plan,
            inner: Mutex::new(BreakerInner {
                state: BreakerState::Closed,
                opened_at: None,
                window_start: now,
                calls: 0,
                failures: 0,
            }),
        }
    }

    /// Whether a call may go now. An open breaker whose cool-down is over lets exactly one
    /// trial call through (half-open). The call reports its outcome through the returned
    /// admission; a trial dropped without an outcome (its caller went away, or the request
    /// could not be formed) lets the next call be the trial.
    pub fn allow(&self, now: Instant) -> Result<Admission<'_>, Duration> {
        let Ok(mut b) = self.inner.lock() else {
            return Ok(Admission {
                breaker: self,
                trial: false,
            });
        };
        match b.state {
            BreakerState::Closed => Ok(Admission {
                breaker: self,
                trial: false,
            }),
            BreakerState::Open(until) if now >= until => {
                b.state = BreakerState::HalfOpen;
                Ok(Admission {
                    breaker: self,
                    trial: true,
                })
            }
            BreakerState::Open(until) => Err(until - now),
            BreakerState::HalfOpen => Err(self.plan.cool_down),
        }
    }

    /// Records the outcome of a call that was allowed.
    fn record(&self, ok: bool, now: Instant) {
        let Ok(mut b) = self.inner.lock() else { return };
        match b.state {
            BreakerState::HalfOpen => {
                b.state = if ok {
                    b.opened_at = None;
                    BreakerState::Closed
                } else {
                    BreakerState::Open(later(now, self.plan.cool_down))
                };
                b.window_start = now;
                b.calls = 0;
                b.failures = 0;
            }
            BreakerState::Open(_) => {}
            BreakerState::Closed => {
                if now.duration_since(b.window_start) > self.plan.window {
                    b.window_start = now;
                    b.calls = 0;
                    b.failures = 0;
                }
                b.calls += 1;
                if !ok {
                    b.failures += 1;
                }
                let rate = f64::from(b.failures) / f64::from(b.calls.max(1));
                if b.calls >= self.plan.min_calls && rate >= self.plan.failure_rate {
                    b.state = BreakerState::Open(later(now, self.plan.cool_down));
                    b.opened_at = Some(now);
                }
            }
        }
    }

    /// Since when it has not been closed (open, or half-open between two open spells);
    /// `None` while it is closed.
    pub fn open_since(&self) -> Option<Instant> {
        self.inner.lock().ok().and_then(|b| match b.state {
            BreakerState::Closed => None,
            _ => b.opened_at,
        })
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.inner
            .lock()
            .map(|b| b.state)
            .unwrap_or(BreakerState::Closed)
    }
}

/// A call let through by a [`Breaker`]; report its outcome with [`Admission::record`].
#[derive(Debug)]
pub struct Admission<'a> {
    breaker: &'a Breaker,
    trial: bool,
}

impl Admission<'_> {
    /// Records the outcome: `ok` is false only for failures of the platform.
    pub fn record(mut self, ok: bool, now: Instant) {
        self.breaker.record(ok, now);
        self.trial = false;
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.trial {
            return;
        }
        // A trial without an outcome: the next call may try at once.
        if let Ok(mut b) = self.breaker.inner.lock()
            && b.state == BreakerState::HalfOpen
        {
            b.state = BreakerState::Open(Instant::now());
        }
    }
}

/// The transport room: HTTP clients, pacers, concurrency caps and circuit breakers, shared by
/// every outbound call of the gateway and kept across reloads.
#[derive(Default)]
pub struct Transport {
    clients: Mutex<HashMap<u128, reqwest::Client>>,
    pacers: Mutex<HashMap<(String, u64), Arc<Pacer>>>,
    caps: Mutex<HashMap<(String, u32), Arc<Semaphore>>>,
    breakers: Mutex<HashMap<String, Arc<Breaker>>>,
}

/// What limits one platform's calls: its pacer (when it has a rate), its concurrency cap and
/// its breaker (when it has one).
pub type Limits = (Option<Arc<Pacer>>, Arc<Semaphore>, Option<Arc<Breaker>>);

impl Transport {
    /// The HTTP client for `t`'s connect timeout (clients keep their connection pools).
    pub fn client(&self, t: &TransportPlan) -> Result<reqwest::Client, String> {
        let key = t.connect_timeout.as_millis();
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| "the HTTP client pool is unusable".to_string())?;
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client = reqwest::Client::builder()
            .connect_timeout(t.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("entrepot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// The limits of `platform`'s calls under `t`.
    pub fn limits(&self, platform: &str, t: &TransportPlan) -> Limits {
        let pacer = t.qps.and_then(|q| {
            let mut m = self.pacers.lock().ok()?;
            Some(
                m.entry((platform.to_string(), q.to_bits()))
                    .or_insert_with(|| Arc::new(Pacer::new(q)))
                    .clone(),
            )
        });
        let cap = self
            .caps
            .lock()
            .map(|mut m| {
                m.entry((platform.to_string(), t.concurrency))
                    .or_insert_with(|| Arc::new(Semaphore::new(t.concurrency as usize)))
                    .clone()
            })
            .unwrap_or_else(|_| Arc::new(Semaphore::new(t.concurrency as usize)));
        let breaker = t.breaker.as_ref().and_then(|b| {
            let mut m = self.breakers.lock().ok()?;
            Some(
                m.entry(platform.to_string())
                    .or_insert_with(|| Arc::new(Breaker::new(b.clone(), Instant::now())))
                    .clone(),
            )
        });
        (pacer, cap, breaker)
    }

    /// Every platform whose breaker has counted calls, and whether it refuses calls now (open,
    /// or half-open with its one trial call in flight). A platform never called, or without a
    /// breaker, is absent.
    pub fn breakers_open(&self) -> Vec<(String, bool)> {
        let Ok(m) = self.breakers.lock() else {
            return Vec::new();
        };
        m.iter()
            .map(|(platform, b)| (platform.clone(), b.state() != BreakerState::Closed))
            .collect()
    }
}

impl Transport {
    /// Since when each platform's circuit breaker has not been closed, for the platforms
    /// whose breaker is open or half-open.
    pub fn breakers_open_since(&self) -> HashMap<String, Instant> {
        self.breakers
            .lock()
            .map(|m| {
                m.iter()
                    .filter_map(|(name, b)| b.open_since().map(|t| (name.clone(), t)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// How long a `Retry-After` value asks to wait: delay-seconds or an HTTP date
/// (RFC 9110 section 10.2.3), from `now`. `None` when it is neither.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(v).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(Duration::from_secs(86_400 * 365)))
}

/// `now + d`, capped at a year from now (durations come from configuration).
pub fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(Duration::from_secs(86_400 * 365)))
        .unwrap_or(now)
}

/// The wait before retry number `attempt` (1-based): a random duration up to
/// `base * 2^(attempt-1)`, capped at `max` ("full jitter").
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let cap = exp.min(max);
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> BreakerPlan {
        BreakerPlan {
            failure_rate: 0.5,
            min_calls: 4,
            window: Duration::from_secs(30),
            cool_down: Duration::from_secs(10),
        }
    }

    #[test]
    fn breaker_opens_half_opens_and_recovers() {
        let t0 = Instant::now();
        let b = Breaker::new(plan(), t0);
        for ok in [true, false, false] {
            b.allow(t0).unwrap().record(ok, t0);
        }
        assert_eq!(b.state(), BreakerState::Closed, "fewer than min_calls");
        b.allow(t0).unwrap().record(false, t0);
        assert_eq!(b.state(), BreakerState::Open(t0 + Duration::from_secs(10)));
        assert!(b.allow(t0 + Duration::from_secs(9)).is_err());
        // After the cool-down one trial goes through; a second waits for its outcome.
        let t1 = t0 + Duration::from_secs(10);
        let trial = b.allow(t1).unwrap();
        assert!(b.allow(t1).is_err());
        trial.record(false, t1);
        assert_eq!(b.state(), BreakerState::Open(t1 + Duration::from_secs(10)));
        let t2 = t1 + Duration::from_secs(10);
        b.allow(t2).unwrap().record(true, t2);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow(t2).is_ok());
    }

    #[test]
    fn open_since_spans_half_open_trials_until_closed() {
        let t0 = Instant::now();
        let b = Breaker::new(plan(), t0);
        assert_eq!(b.open_since(), None);
        for _ in 0..4 {
            b.allow(t0).unwrap().record(false, t0);
        }
        assert_eq!(b.open_since(), Some(t0));
        // A failed trial reopens it: still open since the first opening.
        let t1 = t0 + Duration::from_secs(10);
        b.allow(t1).unwrap().record(false, t1);
        assert_eq!(b.open_since(), Some(t0));
        let t2 = t1 + Duration::from_secs(10);
        b.allow(t2).unwrap().record(true, t2);
        assert_eq!(b.open_since(), None);
    }

    #[test]
    fn an_abandoned_trial_lets_the_next_call_try() {
        let t0 = Instant::now();
        let b = Breaker::new(plan(), t0);
        for _ in 0..4 {
            b.allow(t0).unwrap().record(false, t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        drop(b.allow(t1).unwrap());
        // Not stuck half-open: another call is the trial.
        b.allow(t1 + Duration::from_millis(1))
            .unwrap()
            .record(true, t1);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn pacer_spaces_calls() {
        let p = Pacer::new(20.0);
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(10);
        for i in 0..4u32 {
            p.wait(deadline).await.unwrap();
            // Call i starts no earlier than i intervals of 50 ms after the first.
            assert!(t0.elapsed() >= Duration::from_millis(50) * i, "call {i}");
        }
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn pacer_refuses_turns_past_the_deadline_and_forgets_abandoned_callers() {
        let p = std::sync::Arc::new(Pacer::new(10.0));
        let t0 = Instant::now();
        p.wait(t0 + Duration::from_secs(1)).await.unwrap();
        // 200 callers queue, then go away before their turn.
        let queued: Vec<_> = (0..200)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move { p.wait(t0 + Duration::from_secs(60)).await })
            })
            .collect();
        while p.waiting.load(Ordering::SeqCst) < 200 {
            tokio::task::yield_now().await;
        }
        // With 200 ahead (20 s of turns), a caller with a 1 s deadline is refused at once,
        // told how long the queue is.
        let asked = Instant::now();
        let refused = p.wait(asked + Duration::from_secs(1)).await.unwrap_err();
        assert!(asked.elapsed() < Duration::from_millis(50));
        assert!(refused >= Duration::from_secs(20), "{refused:?}");
        for q in &queued {
            q.abort();
        }
        for q in queued {
            let _ = q.await;
        }
        assert_eq!(p.waiting.load(Ordering::SeqCst), 0);
        // Their places are given up: the next caller waits about one interval (100 ms), not
        // behind 200 turns (20 s).
        let t1 = Instant::now();
        p.wait(t1 + Duration::from_secs(1)).await.unwrap();
        assert!(
            t1.elapsed() < Duration::from_millis(500),
            "{:?}",
            t1.elapsed()
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        // RFC 9110's example date, 784111777 + 120 seconds after the epoch.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn backoff_is_bounded() {
        for attempt in 1..10 {
            let d = backoff(attempt, Duration::from_millis(100), Duration::from_secs(1));
            assert!(
                d <= Duration::from_millis(100 * (1 << (attempt - 1))).min(Duration::from_secs(1))
            );
        }
    }
}

/// Why an answer's body was not read whole.
#[derive(Debug)]
pub enum ReadFailure {
    /// The body is larger than the limit: what showed it (a declared `Content-Length`, or the
    /// bytes that arrived).
    TooLarge(String),
    /// The connection broke off or timed out while reading.
    Broke(reqwest::Error),
}

/// Reads an answer's body, chunk by chunk, to at most `limit` bytes. An answer declaring a
/// larger `Content-Length` is refused before any of its body is read; any other stops being
/// read as soon as more than `limit` bytes arrived, so a platform answering garbage costs at
/// most `limit` bytes of memory.
pub async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ReadFailure> {
    let declared = resp.content_length();
    if let Some(n) = declared
        && n > limit as u64
    {
        return Err(ReadFailure::TooLarge(format!(
            "it declares {n} bytes (Content-Length)"
        )));
    }
    // Grown as bytes arrive: a declared size is not trusted for more than a first guess.
    let first = declared.map_or(0, |n| usize::try_from(n).unwrap_or(0).min(64 * 1024));
    let mut body = Vec::with_capacity(first);
    while let Some(chunk) = resp.chunk().await.map_err(ReadFailure::Broke)? {
        if chunk.len() > limit.saturating_sub(body.len()) {
            return Err(ReadFailure::TooLarge(format!(
                "more than {limit} bytes arrived"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
