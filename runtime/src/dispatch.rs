//! Delivering stored events to internal targets, at least once: claim due rows with a lease,
//! POST each with an idempotency key, mark it delivered on a 2xx, otherwise retry with backoff
//! until the target's `max_attempts`, then dead-letter it.
//!
//! Targets named with a leading `@` are internal [`Consumer`]s of the gateway itself (the
//! product sync's `@sync` fetches the products named by `product.changed` callbacks): their
//! rows are handed to the consumer instead of being POSTed, with the same leases, retries and
//! dead letters.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tracing::Instrument;

use crate::compile::gateway::TargetSettings;
use crate::engine::transport::backoff;
use crate::observe::{DeliveryOutcome, DeliverySeen, Observer};
use crate::store::{OutboxRow, Store};
use crate::timefmt::now_ms;

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct DispatchOptions {
    /// How long a claimed row is held before another instance may take it.
    pub lease: Duration,
    /// First retry delay; doubles per attempt with full jitter.
    pub backoff: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Time allowed for one delivery.
    pub timeout: Duration,
    /// How often the outbox is looked at without a notification.
    pub poll: Duration,
    /// How long stored rows are kept, and how often the store is pruned.
    pub retention: crate::store::Retention,
}

impl Default for DispatchOptions {
    fn default() -> Self {
        DispatchOptions {
            lease: Duration::from_secs(60),
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            poll: Duration::from_secs(1),
            retention: crate::store::Retention::default(),
        }
    }
}

/// An internal consumer of events, registered with [`Dispatcher::with_consumer`].
pub trait Consumer: Send + Sync {
    /// Handles one event; `Err` (a reason) makes the dispatcher retry it later, then
    /// dead-letter it, as for an HTTP target.
    fn consume<'a>(
        &'a self,
        row: &'a OutboxRow,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// Deliveries in flight at once to one internal consumer.
const CONSUMER_CONCURRENCY: usize = 4;

/// The dispatcher of one gateway instance.
pub struct Dispatcher {
    store: Store,
    targets: HashMap<String, TargetSettings>,
    caps: HashMap<String, Arc<Semaphore>>,
    consumers: HashMap<String, Arc<dyn Consumer>>,
    client: reqwest::Client,
    owner: String,
    options: DispatchOptions,
    credentials: crate::credentials::CredentialSets,
    env: fn(&str) -> Option<String>,
    observer: Observer,
    /// Wakes the dispatcher when events were stored.
    pub notify: Arc<Notify>,
}

impl Dispatcher {
    /// A dispatcher for `targets`; their signing credentials come from `credentials` (keyed by
    /// target name) and the environment.
    pub fn new(
        store: Store,
        targets: &[TargetSettings],
        options: DispatchOptions,
        credentials: crate::credentials::CredentialSets,
        env: fn(&str) -> Option<String>,
    ) -> Self {
        let caps = targets
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    Arc::new(Semaphore::new(t.concurrency as usize)),
                )
            })
            .collect();
        Dispatcher {
            store,
            targets: targets
                .iter()
                .map(|t| (t.name.clone(), t.clone()))
                .collect(),
            caps,
            consumers: HashMap::new(),
            client: reqwest::Client::builder()
                .timeout(options.timeout)
                .build()
                .unwrap_or_default(),
            owner: format!("dispatcher-{}", uuid::Uuid::new_v4().simple()),
            options,
            credentials,
            env,
            observer: Observer::default(),
            notify: Arc::new(Notify::new()),
        }
    }

    /// The same dispatcher reporting each delivery attempt to `observer`.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = observer;
        self
    }

    /// The same dispatcher handing the rows of target `name` (which starts with `@`) to
    /// `consumer`.
    pub fn with_consumer(mut self, name: &str, consumer: Arc<dyn Consumer>) -> Self {
        self.caps.insert(
            name.to_string(),
            Arc::new(Semaphore::new(CONSUMER_CONCURRENCY)),
        );
        self.consumers.insert(name.to_string(), consumer);
        self
    }

    /// Delivers until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        // None until the first prune, which runs at start: an instance restarted more often
        // than `prune_every` still prunes.
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            // Expired replay keys and idempotency records, and rows past their retention, go
            // at start and then every `retention.prune_every`.
            if last_prune.is_none_or(|t| t.elapsed() > self.options.retention.prune_every) {
                last_prune = Some(tokio::time::Instant::now());
                match self.store.prune(now_ms(), &self.options.retention).await {
                    Ok(n) if n > 0 => tracing::info!(
                        rows = n,
                        "expired replay keys and idempotency records, and rows past their retention, removed"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("cannot prune the store: {e}"),
                }
            }
            let delivered = self.tick().await;
            if delivered > 0 {
                continue;
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = self.notify.notified() => {}
                () = tokio::time::sleep(self.options.poll) => {}
            }
        }
    }

    /// Claims and delivers one batch; returns how many rows were handled.
    pub async fn tick(self: &Arc<Self>) -> usize {
        let lease = i64::try_from(self.options.lease.as_millis()).unwrap_or(60_000);
        // No more rows than can be in flight at once, so none waits for a slot while its lease
        // runs out.
        let batch = i64::try_from(
            self.targets
                .values()
                .map(|t| t.concurrency as usize)
                .sum::<usize>()
                .saturating_add(self.consumers.len() * CONSUMER_CONCURRENCY)
                .clamp(1, 64),
        )
        .unwrap_or(64);
        let rows = match self
            .store
            .outbox_claim(&self.owner, now_ms(), lease, batch)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot claim events: {e}");
                return 0;
            }
        };
        let n = rows.len();
        let mut tasks = tokio::task::JoinSet::new();
        for row in rows {
            let me = self.clone();
            tasks.spawn(async move { me.deliver(row).await });
        }
        while tasks.join_next().await.is_some() {}
        n
    }

    fn sign(
        &self,
        target: &TargetSettings,
        sign: &crate::recipe::SignPlan,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<crate::recipe::Placed>, String> {
        let parts = crate::recipe::Parts {
            method: "POST".into(),
            url: url.to_string(),
            path: crate::engine::build::url_path(url),
            query: Vec::new(),
            raw_query: url
                .split_once('?')
                .map(|(_, q)| q.to_string())
                .unwrap_or_default(),
            form: Vec::new(),
            headers: headers.to_vec(),
            body: body.to_vec(),
        };
        let mut creds = self
            .credentials
            .get(&target.name)
            .cloned()
            .unwrap_or_default();
        for name in &target.credentials {
            if !creds.contains_key(name)
                && let Some(v) = (self.env)(&crate::engine::build::credential_env_var(
                    &target.name,
                    name,
                ))
            {
                creds.insert(name.clone(), serde_json::Value::String(v));
            }
        }
        let settings = serde_json::Map::new();
        let env = crate::recipe::RunEnv {
            credentials: &creds,
            settings: &settings,
            platform: &target.name,
            now: time::OffsetDateTime::now_utc(),
            nonce: None,
        };
        sign.run(&parts, &env)
            .map(|(placed, _)| placed)
            .map_err(|e| format!("cannot sign for target '{}': {e}", target.name))
    }

    /// Delivers one row in its `entrepot.delivery` span, a child of the call or callback that
    /// produced the event when its trace context was stored with it.
    async fn deliver(&self, row: OutboxRow) {
        let span = tracing::info_span!(
            parent: None,
            "entrepot.delivery",
            otel.kind = "client",
            target = %row.target,
            event_type = %row.event_type,
            attempt = row.attempts,
            http.status_code = tracing::field::Empty,
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        if let Some(parent) = &row.traceparent {
            crate::telemetry::set_parent(&span, crate::telemetry::parse_traceparent(parent));
        }
        self.deliver_in_span(row).instrument(span).await;
    }

    async fn deliver_in_span(&self, row: OutboxRow) {
        if let Some(consumer) = self.consumers.get(&row.target) {
            let _permit = match self.caps.get(&row.target) {
                Some(cap) => cap.clone().acquire_owned().await.ok(),
                None => None,
            };
            let started = Instant::now();
            let outcome = consumer.consume(&row).await;
            self.settle(&row, outcome, started).await;
            return;
        }
        let Some(target) = self.targets.get(&row.target) else {
            // The target was removed from the configuration: keep the event, dead-lettered.
            let _ = self
                .store
                .outbox_fail(
                    row.id,
                    &self.owner,
                    &format!("no target named '{}' is configured", row.target),
                    None,
                )
                .await;
            return;
        };
        let _permit = match self.caps.get(&row.target) {
            Some(cap) => cap.clone().acquire_owned().await.ok(),
            None => None,
        };
        let started = Instant::now();
        let mut headers: Vec<(String, String)> = vec![
            ("Content-Type".into(), "application/json".into()),
            ("Idempotency-Key".into(), row.idempotency_key.clone()),
            ("X-Entrepot-Event".into(), row.event_type.clone()),
        ];
        headers.extend(target.headers.iter().cloned());
        let mut url = target.url.clone();
        if let Some(sign) = &target.sign {
            match self.sign(target, sign, &url, &headers, row.payload.as_bytes()) {
                Ok(placed) => {
                    for (to, name, value) in placed {
                        match to {
                            crate::config::recipe::PlaceTarget::Header => {
                                headers.push((name, value))
                            }
                            _ => {
                                let sep = if url.contains('?') { '&' } else { '?' };
                                url = format!(
                                    "{url}{sep}{}",
                                    crate::engine::build::encode_pairs(&[(name, value)], false)
                                );
                            }
                        }
                    }
                }
                Err(e) => {
                    // A recipe that cannot run is a configuration problem: keep the event.
                    let _ = self.store.outbox_fail(row.id, &self.owner, &e, None).await;
                    record_outcome(DeliveryOutcome::DeadLettered);
                    self.observer.delivery(&DeliverySeen {
                        target: &row.target,
                        event_type: &row.event_type,
                        outcome: DeliveryOutcome::DeadLettered,
                        elapsed: started.elapsed(),
                    });
                    return;
                }
            }
        }
        let mut req = self.client.post(&url).body(row.payload.clone());
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        // The trace context of this delivery, added after signing: never part of what a recipe
        // signs. A target configured with its own `traceparent` header keeps it.
        let span = tracing::Span::current();
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
        {
            for (k, v) in crate::telemetry::headers_for(&span) {
                req = req.header(k, v);
            }
        }
        let sent = req.send().await;
        if let Ok(resp) = &sent {
            span.record("http.status_code", resp.status().as_u16());
        }
        let outcome = match sent {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!(
                "target '{}' answered HTTP {}",
                row.target,
                resp.status().as_u16()
            )),
            // Without the URL: it may carry a token or a signature in its query.
            Err(e) => Err(format!(
                "cannot deliver to target '{}': {}",
                row.target,
                e.without_url()
            )),
        };
        self.settle(&row, outcome, started).await;
    }

    /// Records the outcome of a delivery: delivered, due again after a backoff, or
    /// dead-lettered after its last attempt.
    async fn settle(&self, row: &OutboxRow, outcome: Result<(), String>, started: Instant) {
        let elapsed = started.elapsed();
        let seen = |outcome| DeliverySeen {
            target: &row.target,
            event_type: &row.event_type,
            outcome,
            elapsed,
        };
        let result = match outcome {
            Ok(()) => {
                record_outcome(DeliveryOutcome::Delivered);
                self.observer.delivery(&seen(DeliveryOutcome::Delivered));
                self.store
                    .outbox_complete(row.id, &self.owner, now_ms())
                    .await
            }
            Err(error) => {
                let attempts = u32::try_from(row.attempts).unwrap_or(u32::MAX);
                let retry_at = (row.attempts < row.max_attempts).then(|| {
                    let wait = backoff(attempts, self.options.backoff, self.options.backoff_max);
                    now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
                });
                if retry_at.is_none() {
                    tracing::error!(event = %row.event_id, "dead-lettered after {} attempts: {error}", row.attempts);
                    record_outcome(DeliveryOutcome::DeadLettered);
                    self.observer.delivery(&seen(DeliveryOutcome::DeadLettered));
                } else {
                    tracing::warn!(event = %row.event_id, attempt = row.attempts, "{error}");
                    record_outcome(DeliveryOutcome::Retry);
                    self.observer.delivery(&seen(DeliveryOutcome::Retry));
                }
                self.store
                    .outbox_fail(row.id, &self.owner, &error, retry_at)
                    .await
            }
        };
        match result {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                event = %row.event_id,
                "the lease on this event ran out during its delivery; another instance may deliver it again (the receiver deduplicates by Idempotency-Key)"
            ),
            Err(e) => tracing::error!("cannot record the outcome of event {}: {e}", row.event_id),
        }
    }
}

/// Records how a delivery attempt ended on its span (the current one).
fn record_outcome(outcome: DeliveryOutcome) {
    let span = tracing::Span::current();
    span.record("outcome", outcome.as_str());
    if outcome != DeliveryOutcome::Delivered {
        span.record("otel.status_code", "error");
    }
}
