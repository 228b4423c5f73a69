//! What the gateway sees of its own work, reported in one place.
//!
//! Every canonical call, callback delivery and target delivery is reported here exactly once,
//! when it ends, and so are the steps of the flows (product sync, order saga), with names that
//! come only from the configuration (platform, operation, route, target) and an outcome from a
//! closed set — never request data — so whatever listens has bounded cardinality. Listeners
//! are [`Sink`]s: the Prometheus metrics and the monitoring thresholds are two of them. An
//! [`Observer`] is cheap to clone and shared by the engine, the callback routes and the
//! dispatcher.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::problem::ProblemKind;

/// How a canonical call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The canonical output was produced.
    Ok,
    /// The platform answered with a refusal: a business error code or HTTP 4xx, or it asked
    /// the gateway to slow down (429).
    Refused,
    /// The platform could not be reached, broke the connection off, or answered HTTP 5xx.
    TransportError,
    /// The platform did not answer within the operation's deadline.
    Timeout,
    /// The gateway did not send the call: the circuit breaker is open, or no rate-limit or
    /// connection slot came free within the deadline.
    Unavailable,
    /// The platform's answer does not map onto the canonical model.
    MappingError,
    /// The caller's input was refused before anything was sent: invalid, an unknown
    /// operation, or an id without a mapping.
    InvalidInput,
    /// The gateway's own side failed: its configuration, credentials or store.
    Error,
}

impl Outcome {
    /// Every outcome, in documentation order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::Refused,
        Outcome::TransportError,
        Outcome::Timeout,
        Outcome::Unavailable,
        Outcome::MappingError,
        Outcome::InvalidInput,
        Outcome::Error,
    ];

    /// The outcome of a call that failed with `kind`.
    pub fn of(kind: ProblemKind) -> Self {
        match kind {
            ProblemKind::InvalidInput | ProblemKind::NotFound | ProblemKind::UnknownId => {
                Outcome::InvalidInput
            }
            ProblemKind::PlatformError | ProblemKind::PlatformRateLimited => Outcome::Refused,
            ProblemKind::PlatformFailed => Outcome::TransportError,
            ProblemKind::PlatformTimeout => Outcome::Timeout,
            ProblemKind::PlatformUnavailable => Outcome::Unavailable,
            ProblemKind::MappingError => Outcome::MappingError,
            ProblemKind::Configuration | ProblemKind::StoreUnavailable => Outcome::Error,
        }
    }

    /// Its label value: `ok`, `refused`, `transport_error`, `timeout`, `unavailable`,
    /// `mapping_error`, `invalid_input` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::TransportError => "transport_error",
            Outcome::Timeout => "timeout",
            Outcome::Unavailable => "unavailable",
            Outcome::MappingError => "mapping_error",
            Outcome::InvalidInput => "invalid_input",
            Outcome::Error => "error",
        }
    }
}

/// One canonical call that ended (dry runs are not reported).
#[derive(Debug, Clone, Copy)]
pub struct CallSeen<'a> {
    /// The platform's name.
    pub platform: &'a str,
    /// The canonical operation.
    pub operation: &'a str,
    /// How it ended.
    pub outcome: Outcome,
    /// From the moment the engine took the call to its end: slot waits, every attempt and
    /// backoffs included.
    pub elapsed: Duration,
}

/// Why a callback delivery was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No signature, or one that does not match.
    Signature,
    /// The timestamp is missing, malformed or outside the allowed window.
    Timestamp,
    /// The delivery was seen before (its replay key), or carries no replay key.
    Replay,
    /// Over the route's limits: body size, field counts, nesting.
    Limits,
    /// The body cannot be read or mapped: undecodable, no deduplication key, a field that
    /// does not map.
    Malformed,
}

impl Refusal {
    /// Its label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Signature => "signature",
            Refusal::Timestamp => "timestamp",
            Refusal::Replay => "replay",
            Refusal::Limits => "limits",
            Refusal::Malformed => "malformed",
        }
    }
}

/// How a callback delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallbackOutcome {
    /// Verified, stored and acknowledged (a handshake answered counts here too).
    Accepted,
    /// Verified and acknowledged, but a delivery with its deduplication key was stored
    /// before: no new event.
    Duplicate,
    /// Refused, and why.
    Refused(Refusal),
    /// The gateway could not handle it (its store, its own recipe setup); the sender is told
    /// to try again later.
    Error,
}

impl CallbackOutcome {
    /// Its label value: `accepted`, `duplicate`, `refused` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackOutcome::Accepted => "accepted",
            CallbackOutcome::Duplicate => "duplicate",
            CallbackOutcome::Refused(_) => "refused",
            CallbackOutcome::Error => "error",
        }
    }
}

/// One callback delivery that ended.
#[derive(Debug, Clone, Copy)]
pub struct CallbackSeen<'a> {
    /// The platform's name.
    pub platform: &'a str,
    /// The route's path, as configured.
    pub route: &'a str,
    /// How it ended.
    pub outcome: CallbackOutcome,
}

/// How one attempt to deliver an event to a target ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryOutcome {
    /// The target took it.
    Delivered,
    /// It failed and is due again after a backoff.
    Retry,
    /// It failed for the last time and is kept as a dead letter.
    DeadLettered,
}

impl DeliveryOutcome {
    /// Its label value: `delivered`, `retry` or `dead_lettered`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retry => "retry",
            DeliveryOutcome::DeadLettered => "dead_lettered",
        }
    }
}

/// One delivery attempt that ended.
#[derive(Debug, Clone, Copy)]
pub struct DeliverySeen<'a> {
    /// The target's name (or an internal consumer's, starting with `@`).
    pub target: &'a str,
    /// The canonical event type.
    pub event_type: &'a str,
    /// How it ended.
    pub outcome: DeliveryOutcome,
    /// How long the attempt took.
    pub elapsed: Duration,
}

/// A step of a flow (product sync, order saga) worth counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowSeen<'a> {
    /// A product sync run of `platform` started or resumed; `mode` is `full` or
    /// `incremental`.
    SyncStarted {
        /// The platform's name.
        platform: &'a str,
        /// `full` or `incremental`.
        mode: &'static str,
    },
    /// A page of a product sync was read and `sent` of its products went to the product
    /// center (new or changed).
    SyncPage {
        /// The platform's name.
        platform: &'a str,
        /// Products sent.
        sent: u64,
    },
    /// A product sync run ended: `done`, `failed` or `interrupted`.
    SyncEnded {
        /// The platform's name.
        platform: &'a str,
        /// `done`, `failed` or `interrupted`.
        status: &'static str,
    },
    /// An order saga finished: the order was `created` on every platform, or `cancelled`
    /// (compensated and reported).
    SagaEnded {
        /// `created` or `cancelled`.
        outcome: &'static str,
    },
    /// A cancel of a created order failed (it is tried again).
    SagaCancelFailed,
    /// An order creation failed and was scheduled again.
    SagaStepRetried,
}

/// A listener of what the gateway reports. Every method has an empty default, so a sink
/// takes only what it needs. Called inline on the reporting task: a sink must not block.
pub trait Sink: Send + Sync {
    /// A canonical call ended.
    fn call(&self, _seen: &CallSeen<'_>) {}
    /// A callback delivery ended.
    fn callback(&self, _seen: &CallbackSeen<'_>) {}
    /// A delivery attempt ended.
    fn delivery(&self, _seen: &DeliverySeen<'_>) {}
    /// A call waited `waited` for its turn under `platform`'s rate limit.
    fn rate_limit_wait(&self, _platform: &str, _waited: Duration) {}
    /// An OAuth access token of `platform` was fetched or renewed.
    fn token_renewed(&self, _platform: &str) {}
    /// A flow took a step worth counting.
    fn flow(&self, _seen: &FlowSeen<'_>) {}
}

/// The sinks of one gateway; reporting goes to each in turn.
#[derive(Clone, Default)]
pub struct Observer {
    sinks: Arc<[Arc<dyn Sink>]>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl Observer {
    /// An observer reporting to `sinks`.
    pub fn new(sinks: Vec<Arc<dyn Sink>>) -> Self {
        Observer {
            sinks: sinks.into(),
        }
    }

    /// Reports a canonical call.
    pub fn call(&self, seen: &CallSeen<'_>) {
        for s in self.sinks.iter() {
            s.call(seen);
        }
    }

    /// Reports a callback delivery.
    pub fn callback(&self, seen: &CallbackSeen<'_>) {
        for s in self.sinks.iter() {
            s.callback(seen);
        }
    }

    /// Reports a delivery attempt.
    pub fn delivery(&self, seen: &DeliverySeen<'_>) {
        for s in self.sinks.iter() {
            s.delivery(seen);
        }
    }

    /// Reports a wait for a rate-limit turn.
    pub fn rate_limit_wait(&self, platform: &str, waited: Duration) {
        for s in self.sinks.iter() {
            s.rate_limit_wait(platform, waited);
        }
    }

    /// Reports an access token fetched or renewed.
    pub fn token_renewed(&self, platform: &str) {
        for s in self.sinks.iter() {
            s.token_renewed(platform);
        }
    }

    /// Reports a step of a flow.
    pub fn flow(&self, seen: &FlowSeen<'_>) {
        for s in self.sinks.iter() {
            s.flow(seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Tape(Mutex<Vec<String>>);

    impl Sink for Tape {
        fn call(&self, s: &CallSeen<'_>) {
            if let Ok(mut t) = self.0.lock() {
                t.push(format!(
                    "{} {} {}",
                    s.platform,
                    s.operation,
                    s.outcome.as_str()
                ));
            }
        }
    }

    #[test]
    fn every_sink_hears_every_report() {
        let (a, b) = (Arc::new(Tape::default()), Arc::new(Tape::default()));
        let observer = Observer::new(vec![a.clone(), b.clone()]);
        observer.call(&CallSeen {
            platform: "p",
            operation: "product.get",
            outcome: Outcome::of(ProblemKind::PlatformTimeout),
            elapsed: Duration::ZERO,
        });
        // A sink that does not listen to callbacks is not bothered by one.
        observer.callback(&CallbackSeen {
            platform: "p",
            route: "/cb",
            outcome: CallbackOutcome::Refused(Refusal::Signature),
        });
        for t in [a, b] {
            assert_eq!(*t.0.lock().unwrap(), vec!["p product.get timeout"]);
        }
    }

    #[test]
    fn labels_are_distinct() {
        let labels: std::collections::HashSet<_> =
            Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(labels.len(), Outcome::ALL.len());
    }
}
