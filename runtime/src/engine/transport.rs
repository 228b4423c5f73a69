//! Transport policy: a rate limit matching the platform's quota, a concurrency cap, retries
//! with exponential backoff and full jitter, and a circuit breaker.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::plan::BreakerPlan;

/// Paces calls so that no more than `qps` start per second: each call takes the next free
/// slot, `1/qps` after the previous one, and waits for it.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer for `qps` calls per second.
    pub fn new(qps: f64) -> Self {
        Pacer {
            interval: Duration::from_secs_f64(1.0 / qps.max(0.001)),
            next: Mutex::new(None),
        }
    }

    /// The instant this call may start (reserving it).
    pub fn reserve(&self, now: Instant) -> Instant {
        let Ok(mut next) = self.next.lock() else {
            return now;
        };
        let slot = match *next {
            Some(n) if n > now => n,
            _ => now,
        };
        *next = Some(slot + self.interval);
        slot
    }

    /// Waits for this call's slot.
    pub async fn wait(&self) {
        let slot = self.reserve(Instant::now());
        tokio::time::sleep_until(slot).await;
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
                window_start: now,
                calls: 0,
                failures: 0,
            }),
        }
    }

    /// Whether a call may go now. An open breaker whose cool-down is over lets exactly one
    /// trial call through (half-open).
    pub fn allow(&self, now: Instant) -> Result<(), Duration> {
        let Ok(mut b) = self.inner.lock() else {
            return Ok(());
        };
        match b.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open(until) if now >= until => {
                b.state = BreakerState::HalfOpen;
                Ok(())
            }
            BreakerState::Open(until) => Err(until - now),
            BreakerState::HalfOpen => Err(self.plan.cool_down),
        }
    }

    /// Records the outcome of a call that was allowed.
    pub fn record(&self, ok: bool, now: Instant) {
        let Ok(mut b) = self.inner.lock() else { return };
        match b.state {
            BreakerState::HalfOpen => {
                b.state = if ok {
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
                }
            }
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.inner
            .lock()
            .map(|b| b.state)
            .unwrap_or(BreakerState::Closed)
    }
}

/// `now + d`, capped at a year from now (durations come from configuration).
fn later(now: Instant, d: Duration) -> Instant {
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
            assert!(b.allow(t0).is_ok());
            b.record(ok, t0);
        }
        assert_eq!(b.state(), BreakerState::Closed, "fewer than min_calls");
        b.record(false, t0);
        assert_eq!(b.state(), BreakerState::Open(t0 + Duration::from_secs(10)));
        assert!(b.allow(t0 + Duration::from_secs(9)).is_err());
        // After the cool-down one trial goes through; a second waits for its outcome.
        let t1 = t0 + Duration::from_secs(10);
        assert!(b.allow(t1).is_ok());
        assert!(b.allow(t1).is_err());
        b.record(false, t1);
        assert_eq!(b.state(), BreakerState::Open(t1 + Duration::from_secs(10)));
        let t2 = t1 + Duration::from_secs(10);
        assert!(b.allow(t2).is_ok());
        b.record(true, t2);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow(t2).is_ok());
    }

    #[test]
    fn pacer_spaces_calls() {
        let p = Pacer::new(4.0);
        let t0 = Instant::now();
        let slots: Vec<Duration> = (0..4).map(|_| p.reserve(t0) - t0).collect();
        assert_eq!(
            slots,
            vec![
                Duration::ZERO,
                Duration::from_millis(250),
                Duration::from_millis(500),
                Duration::from_millis(750)
            ]
        );
        // A call long after the last slot starts at once.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(p.reserve(later), later);
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
