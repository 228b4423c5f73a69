//! Recording deliveries with group commit: a writer task takes the deliveries that are
//! waiting, records them all in one transaction and answers each caller with its own outcome
//! once `COMMIT` has returned. A SQLite store has one writer; a PostgreSQL store a few, whose
//! groups are written side by side (a resend in another writer's group waits for that group's
//! commit on the unique key, then is its duplicate, as with separate instances).
//!
//! Nothing waits for company: the writer takes what is queued when it is free (at most
//! [`BATCH_MAX`]); a lone delivery is written at once, in its own transaction. Each delivery is
//! recorded exactly as it would be alone, in queue order, so a resend queued behind its
//! original is that one's duplicate. When a statement fails for one delivery of a group the
//! transaction is rolled back and the group is recorded again one delivery per transaction, so
//! that delivery gets its error and the others their outcome; when the transaction cannot be
//! begun or committed every caller of the group gets the error, and none is acknowledged.

use std::sync::Arc;

use sqlx::{AnyPool, Row};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{
    Backend, InboxOutcome, KEPT_BODY_BYTES, NewDelivery, NewEvent, StockCheck, StoreError,
    insert_event, q,
};
use super::{describe, kept_headers};

/// Most deliveries recorded in one transaction.
pub const BATCH_MAX: usize = 256;

/// Writers of a PostgreSQL store, each recording its own group at a time.
pub const POSTGRES_WRITERS: usize = 4;

/// Most deliveries waiting for the writer; further callers wait for room (backpressure).
pub const QUEUE_MAX: usize = 1024;

/// A delivery waiting to be recorded, with the caller's reply channel.
struct Pending {
    delivery: NewDelivery,
    events: Vec<NewEvent>,
    stock: Vec<StockCheck>,
    now: i64,
    /// The `traceparent` its events are stored with.
    trace: Option<String>,
    reply: oneshot::Sender<Result<InboxOutcome, StoreError>>,
}

/// The handle callers enqueue deliveries on; clones share the writer.
#[derive(Debug, Clone)]
pub(super) struct InboxWriter {
    queue: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("platform", &self.delivery.platform)
            .field("route", &self.delivery.route)
            .finish()
    }
}

impl InboxWriter {
    /// Starts the writer tasks on the current Tokio runtime: one for SQLite (which writes one
    /// transaction at a time anyway), [`POSTGRES_WRITERS`] for PostgreSQL (whose transactions
    /// run side by side, each waiting for its own round trips). They end when the last handle
    /// is dropped.
    pub(super) fn spawn(pool: AnyPool, backend: Backend) -> InboxWriter {
        let (queue, rx) = mpsc::channel(QUEUE_MAX);
        let rx = Arc::new(Mutex::new(rx));
        let writers = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => POSTGRES_WRITERS,
        };
        for _ in 0..writers {
            tokio::spawn(run(pool.clone(), rx.clone()));
        }
        InboxWriter { queue }
    }

    /// Records one delivery and its events (with the `traceparent` of the callback that
    /// produced them); returns after the transaction holding it committed.
    pub(super) async fn record(
        &self,
        delivery: &NewDelivery,
        events: &[NewEvent],
        stock: Vec<StockCheck>,
        now: i64,
        trace: Option<String>,
    ) -> Result<InboxOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            delivery: delivery.clone(),
            events: events.to_vec(),
            stock,
            now,
            trace,
            reply,
        };
        self.queue
            .send(pending)
            .await
            .map_err(|_| StoreError::Stopped)?;
        // The writer answers every delivery it took; it drops one unanswered only when its
        // runtime shuts down.
        answer.await.map_err(|_| StoreError::Stopped)?
    }
}

async fn run(pool: AnyPool, rx: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    // A free writer waits for one delivery, then takes those already queued behind it.
    while rx.lock().await.recv_many(&mut batch, BATCH_MAX).await > 0 {
        let size = batch.len();
        let outcomes = write(&pool, &batch).await;
        tracing::debug!(deliveries = size, "deliveries recorded in one transaction");
        for (pending, outcome) in batch.drain(..).zip(outcomes) {
            // A caller that gave up waiting is gone; its delivery is recorded all the same and
            // its sender sends it again unacknowledged (a duplicate then).
            let _ = pending.reply.send(outcome);
        }
    }
}

/// Records `batch` and returns one outcome per delivery, in order, each final: what is `Ok`
/// is committed.
async fn write(pool: &AnyPool, batch: &[Pending]) -> Vec<Result<InboxOutcome, StoreError>> {
    if let [one] = batch {
        return vec![write_alone(pool, one).await];
    }
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => return fail_all(batch, "starting to record deliveries", &e),
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    for p in batch {
        match record(
            &mut tx,
            &p.delivery,
            &p.events,
            &p.stock,
            p.now,
            p.trace.as_deref(),
        )
        .await
        {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => {
                // Which delivery failed and why is known only by recording each alone.
                tracing::debug!("a group of deliveries is recorded one by one after: {e}");
                let _ = tx.rollback().await;
                return write_one_by_one(pool, batch).await;
            }
        }
    }
    match tx.commit().await {
        Ok(()) => outcomes.into_iter().map(Ok).collect(),
        // Perhaps committed, perhaps not: none is acknowledged, the senders send them again
        // and deduplication counts each once.
        Err(e) => fail_all(batch, "committing deliveries", &e),
    }
}

/// The fallback after a failed group: each delivery in its own transaction. When no
/// transaction can be begun at all (the database is gone), the rest fail at once.
async fn write_one_by_one(
    pool: &AnyPool,
    batch: &[Pending],
) -> Vec<Result<InboxOutcome, StoreError>> {
    let mut outcomes = Vec::with_capacity(batch.len());
    for (i, p) in batch.iter().enumerate() {
        let tx = match pool.begin().await {
            Ok(tx) => tx,
            Err(e) => {
                let rest = batch.get(i..).unwrap_or_default();
                outcomes.extend(fail_all(rest, "starting to record deliveries", &e));
                return outcomes;
            }
        };
        let outcome = write_in(tx, p).await;
        // The database refused this delivery's statement: the others may still go in. Any
        // other failure (connection, protocol) is the store's, and ends the group.
        if let Err(StoreError::Query { what, source }) = &outcome
            && !matches!(source, sqlx::Error::Database(_))
        {
            let (what, reason) = (*what, describe(source));
            outcomes.push(outcome);
            let rest = batch.get(i + 1..).unwrap_or_default();
            outcomes.extend(rest.iter().map(|_| {
                Err(StoreError::Group {
                    what,
                    reason: reason.clone(),
                })
            }));
            return outcomes;
        }
        outcomes.push(outcome);
    }
    outcomes
}

async fn write_alone(pool: &AnyPool, p: &Pending) -> Result<InboxOutcome, StoreError> {
    let tx = pool
        .begin()
        .await
        .map_err(q("starting to record a delivery"))?;
    write_in(tx, p).await
}

async fn write_in(
    mut tx: sqlx::Transaction<'static, sqlx::Any>,
    p: &Pending,
) -> Result<InboxOutcome, StoreError> {
    match record(
        &mut tx,
        &p.delivery,
        &p.events,
        &p.stock,
        p.now,
        p.trace.as_deref(),
    )
    .await
    {
        Ok(outcome) => {
            tx.commit().await.map_err(q("committing a delivery"))?;
            Ok(outcome)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

fn fail_all(
    batch: &[Pending],
    what: &'static str,
    e: &sqlx::Error,
) -> Vec<Result<InboxOutcome, StoreError>> {
    let reason = describe(e);
    tracing::error!(
        "the store failed while {what} ({} deliveries): {reason}",
        batch.len()
    );
    batch
        .iter()
        .map(|_| {
            Err(StoreError::Group {
                what,
                reason: reason.clone(),
            })
        })
        .collect()
}

/// Records one delivery inside `tx`, leaving nothing of it behind when it is a replay.
async fn record(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    d: &NewDelivery,
    events: &[NewEvent],
    stock: &[StockCheck],
    now: i64,
    trace: Option<&str>,
) -> Result<InboxOutcome, StoreError> {
    let kept = |body: &[u8]| body.get(..KEPT_BODY_BYTES).unwrap_or(body).to_vec();
    let (body, headers) = if d.verified {
        (d.body.clone(), d.headers.clone())
    } else {
        (kept(&d.body), kept_headers(&d.headers))
    };
    let inserted = sqlx::query(
        "INSERT INTO inbox (platform, route, dedupe_key, claimed_key, headers, body, verified, rejection, event_type, received_at, body_bytes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(&d.platform)
    .bind(&d.route)
    .bind(if d.verified { d.dedupe_key.clone() } else { None })
    .bind(d.dedupe_key.clone())
    .bind(headers)
    .bind(body)
    .bind(i64::from(d.verified))
    .bind(d.rejection.clone())
    .bind(d.event_type.clone())
    .bind(d.received_at)
    .bind(d.body_bytes)
    .fetch_optional(&mut **tx)
    .await
    .map_err(q("recording a delivery"))?;
    let Some(row) = inserted else {
        let id: i64 = sqlx::query("SELECT id FROM inbox WHERE platform = $1 AND dedupe_key = $2")
            .bind(&d.platform)
            .bind(d.dedupe_key.clone())
            .fetch_one(&mut **tx)
            .await
            .map_err(q("finding the earlier delivery"))?
            .try_get(0)
            .map_err(q("reading the earlier delivery"))?;
        sqlx::query(
            "INSERT INTO inbox (platform, route, dedupe_key, claimed_key, headers, body, verified, rejection, event_type, received_at, body_bytes, duplicate_of) \
             VALUES ($1, $2, NULL, $3, $4, $5, 1, NULL, $6, $7, $8, $9)",
        )
        .bind(&d.platform)
        .bind(&d.route)
        .bind(d.dedupe_key.clone())
        .bind(kept_headers(&d.headers))
        .bind(kept(&d.body))
        .bind(d.event_type.clone())
        .bind(d.received_at)
        .bind(d.body_bytes)
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(q("recording a duplicate delivery"))?;
        return Ok(InboxOutcome::Duplicate { id });
    };
    let id: i64 = row.try_get(0).map_err(q("reading the new delivery's id"))?;
    // A new delivery (a resend of a stored one was a duplicate above) whose replay key is
    // still recorded is a replay: nothing of it is kept.
    if let (true, Some((key, expires))) = (d.verified, &d.replay) {
        let fresh = sqlx::query(
            "INSERT INTO replay_keys (key, expires_at) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE replay_keys.expires_at <= $3",
        )
        .bind(key)
        .bind(*expires)
        .bind(d.received_at)
        .execute(&mut **tx)
        .await
        .map_err(q("checking a replay key"))?
        .rows_affected();
        if fresh == 0 {
            // Its row was written by this transaction only: removing it undoes the delivery
            // without touching the others of the group.
            sqlx::query("DELETE FROM inbox WHERE id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await
                .map_err(q("removing a replayed delivery"))?;
            return Ok(InboxOutcome::Replayed);
        }
    }
    for e in events {
        insert_event(tx, e, Some(id), now, trace).await?;
    }
    for s in stock {
        if stock_level(tx, s, now).await? {
            for e in &s.events {
                insert_event(tx, e, Some(id), now, trace).await?;
            }
        }
    }
    Ok(InboxOutcome::Stored { id })
}

/// Records the stock level of `s` in its flow row and tells whether it crossed into low:
/// it is at or below its threshold now, and was not at the last level recorded (or none was).
///
/// The decision is one conditional write, so two transactions recording the same SKU at once
/// (PostgreSQL writers, other instances) cannot both see the crossing: the second waits for
/// the first's row and then finds it low already. The state is written by this function only,
/// compactly, so `"low":true` appears in it exactly when the level is low.
async fn stock_level(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    s: &StockCheck,
    now: i64,
) -> Result<bool, StoreError> {
    let low = s.available <= s.threshold;
    let state = serde_json::json!({
        "available": s.available,
        "threshold": s.threshold,
        "low": low,
        "at": now,
    })
    .to_string();
    let inserted = sqlx::query(
        "INSERT INTO flows (id, kind, state, version, updated_at, created_at) VALUES ($1, $2, $3, 1, $4, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&s.flow_id)
    .bind(StockCheck::KIND)
    .bind(&state)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(q("recording a stock level"))?
    .rows_affected();
    if inserted == 1 {
        // The first level seen of this SKU: low is a crossing (nothing said it was above).
        return Ok(low);
    }
    if low {
        let crossed = sqlx::query(
            "UPDATE flows SET state = $1, version = version + 1, updated_at = $2 \
             WHERE id = $3 AND state NOT LIKE '%\"low\":true%'",
        )
        .bind(&state)
        .bind(now)
        .bind(&s.flow_id)
        .execute(&mut **tx)
        .await
        .map_err(q("recording a stock level"))?
        .rows_affected();
        if crossed == 1 {
            return Ok(true);
        }
    }
    sqlx::query(
        "UPDATE flows SET state = $1, version = version + 1, updated_at = $2 WHERE id = $3",
    )
    .bind(&state)
    .bind(now)
    .bind(&s.flow_id)
    .execute(&mut **tx)
    .await
    .map_err(q("recording a stock level"))?;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    fn pending(key: &str, route: &str, replay: Option<&str>) -> Pending {
        Pending {
            delivery: NewDelivery {
                platform: "p".into(),
                route: route.into(),
                dedupe_key: Some(key.into()),
                headers: "{}".into(),
                body: b"{}".to_vec(),
                body_bytes: 2,
                verified: true,
                rejection: None,
                event_type: Some("product.changed".into()),
                received_at: 10,
                replay: replay.map(|k| (k.to_string(), 1_000)),
            },
            events: vec![NewEvent {
                event_id: format!("ev-{key}-{route}"),
                target: "center".into(),
                event_type: "product.changed".into(),
                payload: "{}".into(),
                idempotency_key: format!("idem-{key}"),
                max_attempts: 3,
            }],
            stock: Vec::new(),
            now: 10,
            trace: None,
            reply: oneshot::channel().0,
        }
    }

    /// One group, written by one call: a resend behind its original, two new deliveries
    /// sharing a replay key, one the database refuses; each gets its own outcome.
    #[tokio::test]
    async fn a_group_answers_each_delivery_as_if_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreOptions {
            url: format!("sqlite://{}/s.db", dir.path().display()),
            ..Default::default()
        })
        .await
        .unwrap();
        sqlx::query(
            "CREATE TRIGGER poison BEFORE INSERT ON inbox WHEN NEW.route = '/poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned delivery'); END",
        )
        .execute(store.pool())
        .await
        .unwrap();
        let batch = vec![
            pending("a", "/n", None),
            pending("a", "/n", None),
            pending("b", "/n", Some("nonce")),
            pending("c", "/n", Some("nonce")),
            pending("d", "/poison", None),
            pending("e", "/n", None),
        ];
        let out = write(store.pool(), &batch).await;
        assert_eq!(out.len(), 6);
        let Some(Ok(InboxOutcome::Stored { id: a })) = out.first() else {
            panic!("{out:?}")
        };
        assert!(matches!(out.get(1), Some(Ok(InboxOutcome::Duplicate { id })) if id == a));
        assert!(matches!(out.get(2), Some(Ok(InboxOutcome::Stored { .. }))));
        assert!(matches!(out.get(3), Some(Ok(InboxOutcome::Replayed))));
        assert!(
            matches!(out.get(4), Some(Err(e)) if e.to_string().contains("poisoned delivery")),
            "{out:?}"
        );
        assert!(matches!(out.get(5), Some(Ok(InboxOutcome::Stored { .. }))));
        let rows = store.inbox_recent(Some("p"), 100).await.unwrap();
        let keys: Vec<_> = rows.iter().rev().map(|r| r.dedupe_key.clone()).collect();
        let k = |s: &str| Some(s.to_string());
        assert_eq!(keys, vec![k("a"), k("a"), k("b"), k("e")]);
        let events = store.outbox_claim("t", 100, 10, 100).await.unwrap();
        let ids: Vec<_> = events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, vec!["ev-a-/n", "ev-b-/n", "ev-e-/n"]);
    }
}
