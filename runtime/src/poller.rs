//! Pollers: for platforms that offer a "fetch my messages" call, fetch on a schedule and feed
//! each message through the same pipeline as a callback delivery.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::callbacks::{Ingest, ingest};
use crate::compile::gateway::TargetSettings;
use crate::engine::Engine;
use crate::engine::problem::Problem;
use crate::plan::{Plan, PlatformPlan, PollerPlan};
use crate::store::NewDelivery;

/// Fetches once and ingests every message; returns how many messages the answer held.
pub async fn poll_once(
    platform: &PlatformPlan,
    poller: &PollerPlan,
    engine: &Engine,
    targets: &[TargetSettings],
    notify: &(dyn Fn() + Send + Sync),
) -> Result<usize, Problem> {
    let doc = engine.fetch(platform, &poller.op).await?;
    let messages: Vec<Value> = poller.items.query(&doc).into_iter().cloned().collect();
    let spec = Ingest {
        event_type: &poller.event_type,
        events: &poller.events,
        dedupe_key: poller.dedupe_key.as_ref(),
        // Polled messages carry no replay key.
        replay_status: 401,
        occurred_at: poller.occurred_at.as_ref(),
    };
    for m in &messages {
        let now = OffsetDateTime::now_utc();
        let delivery = NewDelivery {
            platform: platform.name.clone(),
            route: format!("poll:{}", poller.name),
            dedupe_key: None,
            headers: "{}".into(),
            body_bytes: i64::try_from(m.to_string().len()).unwrap_or(i64::MAX),
            body: m.to_string().into_bytes(),
            verified: true,
            rejection: None,
            event_type: None,
            received_at: i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX),
            replay: None,
        };
        // A message that cannot be stored is fetched again next time; one that is refused is
        // recorded with its reason.
        if let Err(reply) = ingest(
            platform,
            &spec,
            engine.into(),
            targets,
            delivery,
            m,
            &[],
            &[],
            now,
            notify,
        )
        .await
        {
            tracing::warn!(platform = %platform.name, poller = %poller.name, status = reply.status, "a polled message was not ingested");
        }
    }
    Ok(messages.len())
}

/// Runs every poller of the current plan on its schedule until `shutdown` resolves. Pollers
/// of platforms added by a reload start; those of removed platforms stop.
pub async fn run(
    plan: Arc<ArcSwap<Plan>>,
    engine: Arc<Engine>,
    targets: Arc<Vec<TargetSettings>>,
    notify: Arc<tokio::sync::Notify>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut last: HashMap<(String, String), Instant> = HashMap::new();
    let wake = move || notify.notify_one();
    loop {
        let snapshot = plan.load_full();
        for p in snapshot.platforms.values() {
            for poller in &p.pollers {
                let key = (p.name.clone(), poller.name.clone());
                let due = last.get(&key).is_none_or(|t| t.elapsed() >= poller.every);
                if due {
                    last.insert(key, Instant::now());
                    if let Err(problem) = poll_once(p, poller, &engine, &targets, &wake).await {
                        tracing::warn!(platform = %p.name, poller = %poller.name, "{problem}");
                    }
                }
            }
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
}
