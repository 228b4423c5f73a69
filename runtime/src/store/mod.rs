//! Durable state: key mappings, idempotency records, the callback inbox, the event outbox,
//! flow state, pushed credentials and the replay guard.
//!
//! One implementation over `sqlx`'s `Any` driver serves both backends: embedded SQLite (the
//! default, a file under `./data/`, WAL mode, `synchronous=FULL`) and PostgreSQL (for several
//! gateway instances sharing work). SQL is written once with `$n` parameters in ascending
//! order, which both accept; where the dialects differ (column types, claiming rows) each
//! backend has its own statement. Every method that acknowledges something to the outside
//! returns only after its transaction is committed. Deliveries are recorded by one writer task
//! per store that groups concurrent ones into shared transactions (`inbox`).
//!
//! Times are Unix milliseconds passed in by the caller, so tests control the clock.

mod crypto;
mod inbox;
mod migrate;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use crate::config::Secret;
pub use crypto::CredentialCipher;
pub use inbox::{
    BATCH_MAX as INBOX_BATCH_MAX, POSTGRES_WRITERS as INBOX_POSTGRES_WRITERS,
    QUEUE_MAX as INBOX_QUEUE_MAX,
};

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be opened at start.
    #[error("cannot open the store at {url}: {reason}\n  help: {hint}")]
    Open {
        /// The URL, password hidden.
        url: String,
        /// What went wrong.
        reason: String,
        /// What to do about it.
        hint: String,
    },
    /// A statement failed.
    #[error("the store failed while {what}: {source}")]
    Query {
        /// What the store was doing.
        what: &'static str,
        /// The database's error.
        source: sqlx::Error,
    },
    /// An optimistic update lost a race.
    #[error("flow '{id}' was changed concurrently: expected version {expected:?}, found {found:?}")]
    Conflict {
        /// The flow id.
        id: String,
        /// The version the caller read.
        expected: Option<i64>,
        /// The version in the store.
        found: Option<i64>,
    },
    /// A key mapping would map one id to two.
    #[error("{platform}/{kind}: {message}")]
    MappingConflict {
        /// Platform.
        platform: String,
        /// Entity kind.
        kind: String,
        /// Which ids collide.
        message: String,
    },
    /// A statement failed for a group of deliveries recorded in one transaction: each caller
    /// of the group gets this error, none of them is acknowledged.
    #[error("the store failed while {what}: {reason}")]
    Group {
        /// What the store was doing.
        what: &'static str,
        /// The database's error, in words.
        reason: String,
    },
    /// The store's writer has stopped (the store is shutting down): nothing was recorded.
    #[error("the store is shutting down and records nothing more; send the delivery again later")]
    Stopped,
    /// Stored credentials cannot be decrypted or decoded.
    #[error("stored credentials of '{platform}' cannot be read: {reason}")]
    Credentials {
        /// Platform.
        platform: String,
        /// Why.
        reason: String,
    },
}

fn q(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

/// Options for opening a store.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// `sqlite://PATH` or `postgres://...`.
    pub url: String,
    /// PostgreSQL schema to use (created when missing). Default: the connection's default.
    pub schema: Option<String>,
    /// Key encrypting pushed credentials at rest (32 bytes, base64). Without it they are
    /// stored in clear text.
    pub credentials_key: Option<Secret>,
    /// Pool size. Default: 8.
    pub max_connections: Option<u32>,
}

/// The store. Cheap to clone: clones share the connection pool.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    cipher: Option<CredentialCipher>,
    inbox: inbox::InboxWriter,
}

/// A URL with its password replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    // The password may itself contain '@': the host follows the last one.
    let authority = match authority.rsplit_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{auth}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.to_ascii_lowercase().contains("password") => {
                        format!("{k}=***")
                    }
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

fn sqlite_file(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| path.to_string())
}

impl Store {
    /// Opens the store, creating the SQLite file (and its directory) or the PostgreSQL schema
    /// when missing, and applies pending migrations. Fails with an actionable message when the
    /// database is unreachable or the file is not a database.
    pub async fn open(options: &StoreOptions) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let shown = redact_url(&options.url);
        let open_err = |reason: String, hint: &str| StoreError::Open {
            url: shown.clone(),
            reason,
            hint: hint.to_string(),
        };
        let backend = if options.url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if options.url.starts_with("postgres://") || options.url.starts_with("postgresql://")
        {
            Backend::Postgres
        } else {
            return Err(open_err(
                "the URL is neither sqlite: nor postgres://".into(),
                "use sqlite://data/entrepot.db or postgres://user@host:5432/db",
            ));
        };
        let mut url = options.url.clone();
        if backend == Backend::Sqlite {
            let file = sqlite_file(&url).unwrap_or_default();
            if let Some(dir) = std::path::Path::new(&file)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|e| {
                    open_err(
                        format!("cannot create the directory {}: {e}", dir.display()),
                        "check the permissions of the directory, or point store.url elsewhere",
                    )
                })?;
            }
            if !url.contains('?') {
                url.push_str("?mode=rwc");
            }
        }
        let cipher = match &options.credentials_key {
            Some(key) => Some(CredentialCipher::new(key).map_err(|reason| {
                open_err(reason, "ENTREPOT_CREDENTIALS_KEY must be 32 random bytes in base64 (e.g. `openssl rand -base64 32`)")
            })?),
            None => None,
        };
        let backend_hint = match backend {
            Backend::Sqlite => {
                "if the file is damaged, move it away (the gateway then starts with an empty store) or restore it from a backup"
            }
            Backend::Postgres => {
                "check that the server runs and accepts this user, and the URL in entrepot.yaml (store.url) or ENTREPOT_STORE_URL"
            }
        };
        // One direct connection first: a pool would retry until its timeout and report only
        // that, hiding the real reason (refused connection, not a database, bad password).
        {
            use sqlx::Connection;
            let mut conn =
                tokio::time::timeout(Duration::from_secs(10), sqlx::AnyConnection::connect(&url))
                    .await
                    .map_err(|_| {
                        open_err(
                            "the database did not answer within 10s".into(),
                            backend_hint,
                        )
                    })?
                    .map_err(|e| open_err(describe(&e), backend_hint))?;
            if backend == Backend::Sqlite {
                // Other instances may be opening the same fresh file: wait for their locks.
                conn.execute("PRAGMA busy_timeout = 10000")
                    .await
                    .map_err(|e| open_err(describe(&e), backend_hint))?;
                conn.execute("PRAGMA journal_mode = WAL")
                    .await
                    .map_err(|e| open_err(describe(&e), backend_hint))?;
            }
            let _ = conn.close().await;
        }
        let schema = options.schema.clone();
        let pool = AnyPoolOptions::new()
            .max_connections(
                options
                    .max_connections
                    .unwrap_or(if backend == Backend::Sqlite { 4 } else { 8 }),
            )
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                let schema = schema.clone();
                Box::pin(async move {
                    match backend {
                        Backend::Sqlite => {
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = FULL").await?;
                        }
                        Backend::Postgres => {
                            if let Some(s) = &schema {
                                let quoted = s.replace('"', "\"\"");
                                let created = conn
                                    .execute(
                                        format!("CREATE SCHEMA IF NOT EXISTS \"{quoted}\"")
                                            .as_str(),
                                    )
                                    .await;
                                if let Err(e) = created {
                                    // `IF NOT EXISTS` does not hold when another instance
                                    // creates the schema at the same moment: that one is fine.
                                    let exists = sqlx::query(
                                        "SELECT 1 FROM pg_namespace WHERE nspname = $1",
                                    )
                                    .bind(s.as_str())
                                    .fetch_optional(&mut *conn)
                                    .await?
                                    .is_some();
                                    if !exists {
                                        return Err(e);
                                    }
                                }
                                conn.execute(format!("SET search_path TO \"{quoted}\"").as_str())
                                    .await?;
                            }
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| open_err(describe(&e), backend_hint))?;
        let store = Store {
            inbox: inbox::InboxWriter::spawn(pool.clone(), backend),
            pool,
            backend,
            cipher,
        };
        migrate::run(&store).await.map_err(|e| {
            open_err(
                format!("migrating the schema failed: {e}"),
                "a store written by a newer entrepot cannot be opened by an older one; otherwise check the database's permissions",
            )
        })?;
        Ok(store)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(q("checking the connection"))?;
        Ok(())
    }

    // ------------------------------------------------------------------ key mappings

    /// Records `internal_id` ↔ `platform_id`. Recording an existing pair again is fine; a pair
    /// that would give either id a second partner is a [`StoreError::MappingConflict`].
    pub async fn map_put(
        &self,
        platform: &str,
        kind: &str,
        internal_id: &str,
        platform_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO key_mappings (platform, kind, internal_id, platform_id, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(platform)
        .bind(kind)
        .bind(internal_id)
        .bind(platform_id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(q("recording a key mapping"))?
        .rows_affected();
        if inserted == 1 {
            return Ok(());
        }
        let existing = self
            .to_platform(platform, kind, &[internal_id.to_string()])
            .await?;
        match existing.get(internal_id) {
            Some(p) if p == platform_id => Ok(()),
            Some(p) => Err(StoreError::MappingConflict {
                platform: platform.into(),
                kind: kind.into(),
                message: format!(
                    "internal id '{internal_id}' is already mapped to platform id '{p}'"
                ),
            }),
            None => Err(StoreError::MappingConflict {
                platform: platform.into(),
                kind: kind.into(),
                message: format!(
                    "platform id '{platform_id}' is already mapped to another internal id"
                ),
            }),
        }
    }

    async fn lookup(
        &self,
        sql_head: &str,
        platform: &str,
        kind: &str,
        ids: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(200) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!("{sql_head} ({})", marks.join(", "));
            let mut query = sqlx::query(&sql).bind(platform).bind(kind);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query
                .fetch_all(&self.pool)
                .await
                .map_err(q("looking key mappings up"))?
            {
                out.insert(
                    row.try_get(0).map_err(q("reading a key mapping"))?,
                    row.try_get(1).map_err(q("reading a key mapping"))?,
                );
            }
        }
        Ok(out)
    }

    /// Platform ids of internal ids (those without a mapping are absent).
    pub async fn to_platform(
        &self,
        platform: &str,
        kind: &str,
        internal_ids: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        self.lookup(
            "SELECT internal_id, platform_id FROM key_mappings WHERE platform = $1 AND kind = $2 AND internal_id IN",
            platform,
            kind,
            internal_ids,
        )
        .await
    }

    /// Internal ids of platform ids (those without a mapping are absent).
    pub async fn to_internal(
        &self,
        platform: &str,
        kind: &str,
        platform_ids: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        self.lookup(
            "SELECT platform_id, internal_id FROM key_mappings WHERE platform = $1 AND kind = $2 AND platform_id IN",
            platform,
            kind,
            platform_ids,
        )
        .await
    }

    /// Internal ids of platform ids, allocating a new internal id (`<kind>_<32 hex>`) for each
    /// platform id seen for the first time. Safe under concurrency: two callers allocating for
    /// the same platform id get the same internal id.
    pub async fn to_internal_or_allocate(
        &self,
        platform: &str,
        kind: &str,
        platform_ids: &[String],
        now: i64,
    ) -> Result<HashMap<String, String>, StoreError> {
        let mut found = self.to_internal(platform, kind, platform_ids).await?;
        let missing: Vec<&String> = platform_ids
            .iter()
            .filter(|p| !found.contains_key(*p))
            .collect();
        if missing.is_empty() {
            return Ok(found);
        }
        for pid in &missing {
            let internal = format!("{kind}_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(
                "INSERT INTO key_mappings (platform, kind, internal_id, platform_id, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(platform)
            .bind(kind)
            .bind(&internal)
            .bind(pid.as_str())
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(q("allocating an internal id"))?;
        }
        let owned: Vec<String> = missing.into_iter().cloned().collect();
        found.extend(self.to_internal(platform, kind, &owned).await?);
        Ok(found)
    }

    /// Mappings of one platform and kind, ordered by internal id, after `after` (paging).
    pub async fn mappings(
        &self,
        platform: &str,
        kind: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT internal_id, platform_id FROM key_mappings WHERE platform = $1 AND kind = $2 AND internal_id > $3 ORDER BY internal_id LIMIT $4",
        )
        .bind(platform)
        .bind(kind)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("listing key mappings"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(q("reading a key mapping"))?,
                    r.try_get(1).map_err(q("reading a key mapping"))?,
                ))
            })
            .collect()
    }

    /// Which platforms own an internal id: `(platform, platform_id)` pairs.
    pub async fn owners(
        &self,
        kind: &str,
        internal_id: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT platform, platform_id FROM key_mappings WHERE kind = $1 AND internal_id = $2 ORDER BY platform")
            .bind(kind)
            .bind(internal_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q("finding the owner of an id"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(q("reading an owner"))?,
                    r.try_get(1).map_err(q("reading an owner"))?,
                ))
            })
            .collect()
    }

    // ------------------------------------------------------------------ idempotency

    /// Starts work under an idempotency key: [`IdemBegin::New`] when the caller should do the
    /// work (the key is now reserved), or the state a previous call left.
    pub async fn idem_begin(
        &self,
        key: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<IdemBegin, StoreError> {
        // An expired record no longer protects anything.
        sqlx::query("DELETE FROM idempotency WHERE key = $1 AND expires_at <= $2")
            .bind(key)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(q("expiring an idempotency record"))?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency (key, state, response, created_at, expires_at) VALUES ($1, 'pending', NULL, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(key)
        .bind(now)
        .bind(now.saturating_add(ttl_ms))
        .execute(&self.pool)
        .await
        .map_err(q("reserving an idempotency key"))?
        .rows_affected();
        if inserted == 1 {
            return Ok(IdemBegin::New);
        }
        let row = sqlx::query("SELECT state, response FROM idempotency WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("reading an idempotency record"))?;
        Ok(match row {
            None => IdemBegin::Pending,
            Some(r) => {
                let state: String = r.try_get(0).map_err(q("reading an idempotency record"))?;
                let response: Option<String> =
                    r.try_get(1).map_err(q("reading an idempotency record"))?;
                match (state.as_str(), response) {
                    ("done", Some(resp)) => IdemBegin::Done(resp),
                    _ => IdemBegin::Pending,
                }
            }
        })
    }

    /// Stores the outcome of work started with [`Store::idem_begin`].
    pub async fn idem_finish(&self, key: &str, response: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE idempotency SET state = 'done', response = $1 WHERE key = $2")
            .bind(response)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(q("storing an idempotent outcome"))?;
        Ok(())
    }

    /// Releases a reserved key whose work failed, so a retry may do it again.
    pub async fn idem_abandon(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency WHERE key = $1 AND state = 'pending'")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(q("releasing an idempotency key"))?;
        Ok(())
    }

    // ------------------------------------------------------------------ inbox and outbox

    /// Records a delivery and the events it produced in one transaction, and returns once that
    /// transaction is committed. A verified delivery whose dedupe key was already recorded for
    /// the platform produces nothing new: it is recorded as a duplicate of the earlier one (so
    /// resends are visible), before and regardless of its replay key. Refused deliveries and
    /// duplicates keep at most the first [`KEPT_BODY_BYTES`] of their body and
    /// [`KEPT_HEADER_BYTES`] of headers ([`kept_headers`]).
    ///
    /// Concurrent calls share transactions (group commit): a free writer of the store (one for
    /// SQLite, [`INBOX_POSTGRES_WRITERS`] for PostgreSQL) records the deliveries waiting at
    /// that moment (at most [`INBOX_BATCH_MAX`]) one after the other in
    /// one transaction, each with the outcome it would have alone. At most
    /// [`INBOX_QUEUE_MAX`] deliveries wait; further callers wait for room.
    pub async fn inbox_record(
        &self,
        d: &NewDelivery,
        events: &[NewEvent],
        now: i64,
    ) -> Result<InboxOutcome, StoreError> {
        // The events join the trace of the callback storing them (see crate::telemetry).
        let trace = crate::telemetry::current_traceparent();
        self.inbox.record(d, events, Vec::new(), now, trace).await
    }

    /// Records a delivery like [`Store::inbox_record`], and in the same transaction (only
    /// when it is stored: not for a duplicate or a replay) the stock levels it reports: each
    /// [`StockCheck`] whose level crossed into low adds its events. So the low-stock state and
    /// the `inventory.low` events it causes are stored with the delivery or not at all, and a
    /// resent delivery changes nothing.
    pub async fn inbox_record_with_stock(
        &self,
        d: &NewDelivery,
        events: &[NewEvent],
        stock: Vec<StockCheck>,
        now: i64,
    ) -> Result<InboxOutcome, StoreError> {
        let trace = crate::telemetry::current_traceparent();
        self.inbox.record(d, events, stock, now, trace).await
    }

    /// The latest deliveries, newest first, optionally of one platform.
    pub async fn inbox_recent(
        &self,
        platform: Option<&str>,
        limit: i64,
    ) -> Result<Vec<InboxRow>, StoreError> {
        const COLUMNS: &str = "id, platform, route, claimed_key, verified, rejection, event_type, received_at, body_bytes, CAST(length(body) AS BIGINT), duplicate_of";
        let rows = match platform {
            Some(p) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM inbox WHERE platform = $1 ORDER BY id DESC LIMIT $2"
                ))
                .bind(p)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM inbox ORDER BY id DESC LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(q("listing deliveries"))?;
        rows.iter().map(inbox_row).collect()
    }

    /// Adds events to the outbox (not tied to a delivery).
    /// Events carry the trace they are enqueued in, if any (see [`OutboxRow::traceparent`]).
    pub async fn outbox_enqueue(&self, events: &[NewEvent], now: i64) -> Result<(), StoreError> {
        let trace = crate::telemetry::current_traceparent();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(q("starting to enqueue events"))?;
        for e in events {
            insert_event(&mut tx, e, None, now, trace.as_deref()).await?;
        }
        tx.commit().await.map_err(q("committing events"))?;
        Ok(())
    }

    /// Claims up to `limit` due events for `owner` until `now + lease_ms`, counting an attempt
    /// for each. No two owners hold the same row at once; a row whose lease ran out (its owner
    /// crashed) can be claimed again.
    pub async fn outbox_claim(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            // SQLite runs one writing statement at a time: the statement itself is the lock.
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM outbox WHERE delivered_at IS NULL AND dead = 0 AND next_attempt_at <= $3 \
             AND (lease_until IS NULL OR lease_until <= $3) ORDER BY next_attempt_at, id LIMIT $4 {lock}) \
             RETURNING {OUTBOX_COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(now.saturating_add(lease_ms))
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(q("claiming events to deliver"))?;
        let mut out: Vec<OutboxRow> = rows.iter().map(outbox_row).collect::<Result<_, _>>()?;
        out.sort_by_key(|r| (r.next_attempt_at, r.id));
        Ok(out)
    }

    /// Marks a claimed event delivered; `false` when `owner` no longer holds it.
    pub async fn outbox_complete(
        &self,
        id: i64,
        owner: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE outbox SET delivered_at = $1, lease_owner = NULL, lease_until = NULL, last_error = NULL \
             WHERE id = $2 AND lease_owner = $3 AND delivered_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(q("marking an event delivered"))?
        .rows_affected();
        Ok(n == 1)
    }

    /// Records a failed attempt: the event is due again at `retry_at`, or dead-lettered when
    /// `retry_at` is `None`. `false` when `owner` no longer holds it.
    pub async fn outbox_fail(
        &self,
        id: i64,
        owner: &str,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE outbox SET last_error = $1, next_attempt_at = $2, dead = $3, lease_owner = NULL, lease_until = NULL \
             WHERE id = $4 AND lease_owner = $5 AND delivered_at IS NULL",
        )
        .bind(error)
        .bind(retry_at.unwrap_or(0))
        .bind(i64::from(retry_at.is_none()))
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(q("recording a failed delivery"))?
        .rows_affected();
        Ok(n == 1)
    }

    /// Per target with undelivered events: how many are pending, how many are dead-lettered,
    /// and when the oldest pending one was stored — in one grouped query, sorted by target.
    /// Targets with nothing undelivered are absent.
    pub async fn outbox_backlog(&self) -> Result<Vec<Backlog>, StoreError> {
        let rows = sqlx::query(
            "SELECT target, COUNT(CASE WHEN dead = 0 THEN 1 END), COUNT(CASE WHEN dead = 1 THEN 1 END), \
             MIN(CASE WHEN dead = 0 THEN created_at END) FROM outbox WHERE delivered_at IS NULL \
             GROUP BY target ORDER BY target",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("counting undelivered events"))?;
        rows.iter()
            .map(|r| {
                Ok(Backlog {
                    target: r.try_get(0).map_err(q("reading the outbox backlog"))?,
                    pending: r.try_get(1).map_err(q("reading the outbox backlog"))?,
                    dead: r.try_get(2).map_err(q("reading the outbox backlog"))?,
                    oldest_pending_at: r.try_get(3).map_err(q("reading the outbox backlog"))?,
                })
            })
            .collect()
    }

    /// Dead-lettered events, oldest first.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let sql =
            format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE dead = 1 ORDER BY id LIMIT $1");
        let rows = sqlx::query(&sql)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(q("listing dead letters"))?;
        rows.iter().map(outbox_row).collect()
    }

    /// How many dead-lettered events each platform's deliveries (callbacks and pollers)
    /// produced, by platform; platforms without any are absent.
    pub async fn dead_letters_by_platform(
        &self,
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT i.platform, COUNT(*) FROM outbox o JOIN inbox i ON i.id = o.inbox_id \
             WHERE o.dead = 1 GROUP BY i.platform",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("counting dead letters"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>(0)
                        .map_err(q("counting dead letters"))?,
                    r.try_get::<i64, _>(1).map_err(q("counting dead letters"))?,
                ))
            })
            .collect()
    }

    /// Puts dead-lettered events (one, or all) back in the queue, due at `now`, with their
    /// attempts reset. Returns how many.
    pub async fn replay_dead(&self, id: Option<i64>, now: i64) -> Result<u64, StoreError> {
        let result = match id {
            Some(id) => sqlx::query("UPDATE outbox SET dead = 0, attempts = 0, next_attempt_at = $1 WHERE dead = 1 AND id = $2")
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await,
            None => sqlx::query("UPDATE outbox SET dead = 0, attempts = 0, next_attempt_at = $1 WHERE dead = 1")
                .bind(now)
                .execute(&self.pool)
                .await,
        };
        Ok(result.map_err(q("replaying dead letters"))?.rows_affected())
    }

    /// One event by id.
    pub async fn outbox_get(&self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        let sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("reading an event"))?;
        row.as_ref().map(outbox_row).transpose()
    }

    // ------------------------------------------------------------------ flows

    /// A flow's state and version.
    pub async fn flow_get(&self, id: &str) -> Result<Option<FlowState>, StoreError> {
        let row = sqlx::query("SELECT kind, state, version, updated_at FROM flows WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("reading a flow"))?;
        let Some(r) = row else { return Ok(None) };
        let state: String = r.try_get(1).map_err(q("reading a flow"))?;
        Ok(Some(FlowState {
            kind: r.try_get(0).map_err(q("reading a flow"))?,
            state: serde_json::from_str(&state).unwrap_or(Value::Null),
            version: r.try_get(2).map_err(q("reading a flow"))?,
            updated_at: r.try_get(3).map_err(q("reading a flow"))?,
        }))
    }

    /// Saves a flow's state if its version is still `expected` (`None`: the flow must not
    /// exist yet). Returns the new version, or [`StoreError::Conflict`].
    pub async fn flow_save(
        &self,
        id: &str,
        kind: &str,
        state: &Value,
        expected: Option<i64>,
        now: i64,
    ) -> Result<i64, StoreError> {
        self.flow_write(id, kind, state, expected, now, None).await
    }

    /// Saves a flow's state like [`Store::flow_save`] and sets when it is next due: `Some(t)`
    /// while it has work left (at `t`, Unix ms), `None` once it has none.
    pub async fn flow_save_due(
        &self,
        id: &str,
        kind: &str,
        state: &Value,
        expected: Option<i64>,
        now: i64,
        due_at: Option<i64>,
    ) -> Result<i64, StoreError> {
        self.flow_write(id, kind, state, expected, now, Some(due_at))
            .await
    }

    /// Saves a flow's state like [`Store::flow_save_due`] and, only when that succeeds, adds
    /// `events` to the outbox in the same transaction: a state change and the events it
    /// announces are stored together or not at all.
    #[allow(clippy::too_many_arguments)]
    pub async fn flow_save_with_events(
        &self,
        id: &str,
        kind: &str,
        state: &Value,
        expected: Option<i64>,
        now: i64,
        due_at: Option<i64>,
        events: &[NewEvent],
    ) -> Result<i64, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(q("starting to save a flow"))?;
        let n = flow_write_in(
            &mut *tx,
            id,
            kind,
            &state.to_string(),
            expected,
            now,
            Some(due_at),
        )
        .await
        .map_err(q("saving a flow"))?;
        if n == 1 {
            let trace = crate::telemetry::current_traceparent();
            for e in events {
                insert_event(&mut tx, e, None, now, trace.as_deref()).await?;
            }
            tx.commit().await.map_err(q("committing a flow"))?;
            return Ok(expected.unwrap_or(0) + 1);
        }
        let _ = tx.rollback().await;
        let found = self.flow_get(id).await?.map(|f| f.version);
        Err(StoreError::Conflict {
            id: id.into(),
            expected,
            found,
        })
    }

    /// The compare-and-set write of a flow; `due`: `None` leaves the due time as it is (a new
    /// flow has none), `Some(d)` sets it to `d`.
    async fn flow_write(
        &self,
        id: &str,
        kind: &str,
        state: &Value,
        expected: Option<i64>,
        now: i64,
        due: Option<Option<i64>>,
    ) -> Result<i64, StoreError> {
        let text = state.to_string();
        let n = flow_write_in(&self.pool, id, kind, &text, expected, now, due)
            .await
            .map_err(q("saving a flow"))?;
        if n == 1 {
            return Ok(expected.unwrap_or(0) + 1);
        }
        let found = self.flow_get(id).await?.map(|f| f.version);
        Err(StoreError::Conflict {
            id: id.into(),
            expected,
            found,
        })
    }

    /// Takes (or renews) the lease of flow `id` for `owner` until `now + lease_ms`, unless
    /// another owner holds a lease that has not run out. Returns whether `owner` holds it.
    pub async fn flow_lease(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE flows SET lease_owner = $1, lease_until = $2 WHERE id = $3 \
             AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= $4 OR lease_owner = $1)",
        )
        .bind(owner)
        .bind(now.saturating_add(lease_ms))
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(q("leasing a flow"))?
        .rows_affected();
        Ok(n == 1)
    }

    /// Gives up `owner`'s lease of flow `id` (another instance may take it at once).
    pub async fn flow_release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE flows SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(q("releasing a flow"))?;
        Ok(())
    }

    /// Ids of up to `limit` flows of `kind` due by `now` whose lease is free (never taken,
    /// released, or run out), the longest-waiting first. Take each with [`Store::flow_lease`]
    /// before working on it: another instance may take it first.
    pub async fn flows_due(
        &self,
        kind: &str,
        now: i64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM flows WHERE kind = $1 AND due_at IS NOT NULL AND due_at <= $2 \
             AND (lease_until IS NULL OR lease_until <= $2) ORDER BY due_at LIMIT $3",
        )
        .bind(kind)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("finding due flows"))?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(q("reading a due flow")))
            .collect()
    }

    /// Up to `limit` flows of `kind` recorded within `[from, to)` (Unix ms), oldest first, as
    /// `(id, state)`.
    pub async fn flows_created(
        &self,
        kind: &str,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<(String, FlowState)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, state, version, updated_at FROM flows WHERE kind = $1 \
             AND created_at >= $2 AND created_at < $3 ORDER BY created_at, id LIMIT $4",
        )
        .bind(kind)
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("listing flows"))?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get(2).map_err(q("reading a flow"))?;
                Ok((
                    r.try_get(0).map_err(q("reading a flow"))?,
                    FlowState {
                        kind: r.try_get(1).map_err(q("reading a flow"))?,
                        state: serde_json::from_str(&state).unwrap_or(Value::Null),
                        version: r.try_get(3).map_err(q("reading a flow"))?,
                        updated_at: r.try_get(4).map_err(q("reading a flow"))?,
                    },
                ))
            })
            .collect()
    }

    /// How many flows of `kind` have work left (a due time), due or not.
    pub async fn flows_unfinished(&self, kind: &str) -> Result<i64, StoreError> {
        sqlx::query("SELECT COUNT(*) FROM flows WHERE kind = $1 AND due_at IS NOT NULL")
            .bind(kind)
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get::<i64, _>(0))
            .map_err(q("counting unfinished flows"))
    }

    // ------------------------------------------------------------------ product sync

    /// The content hashes last sent of `spu_ids` (internal ids) of `platform`, by target and
    /// product; products never sent to a target are absent.
    pub async fn product_hashes(
        &self,
        platform: &str,
        spu_ids: &[String],
    ) -> Result<HashMap<(String, String), String>, StoreError> {
        let mut out = HashMap::new();
        for chunk in spu_ids.chunks(200) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "SELECT target, spu_id, hash FROM product_hashes WHERE platform = $1 AND spu_id IN ({})",
                marks.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(platform);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query
                .fetch_all(&self.pool)
                .await
                .map_err(q("reading product hashes"))?
            {
                let read = || q("reading a product hash");
                out.insert(
                    (
                        row.try_get(0).map_err(read())?,
                        row.try_get(1).map_err(read())?,
                    ),
                    row.try_get(2).map_err(read())?,
                );
            }
        }
        Ok(out)
    }

    /// Records, in one transaction, the events of changed products and their new content
    /// hashes: a product is either queued for the product center with its hash recorded, or
    /// neither.
    /// `hashes` are `(target, spu_id, hash)`.
    pub async fn product_upserts(
        &self,
        platform: &str,
        hashes: &[(String, String, String)],
        events: &[NewEvent],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(q("starting to record product upserts"))?;
        let trace = crate::telemetry::current_traceparent();
        for e in events {
            insert_event(&mut tx, e, None, now, trace.as_deref()).await?;
        }
        for (target, spu_id, hash) in hashes {
            sqlx::query(
                "INSERT INTO product_hashes (platform, target, spu_id, hash, updated_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (platform, target, spu_id) DO UPDATE SET hash = excluded.hash, updated_at = excluded.updated_at",
            )
            .bind(platform)
            .bind(target)
            .bind(spu_id)
            .bind(hash)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(q("recording a product hash"))?;
        }
        tx.commit().await.map_err(q("committing product upserts"))?;
        Ok(())
    }

    // ------------------------------------------------------------------ credentials

    /// Stores a platform's pushed credentials if `version` is newer than the stored one.
    ///
    /// The set it replaces is kept with the time of the push, for the rotation window (see
    /// [`StoredCredentials::previous`]); the first push of a platform replaces no pushed set,
    /// so the values in force before it came from the credentials file or the environment and
    /// an empty set is kept.
    pub async fn credentials_put(
        &self,
        platform: &str,
        version: i64,
        values: &Map<String, Value>,
        now: i64,
    ) -> Result<CredentialPut, StoreError> {
        let payload = self.seal_credentials(values);
        let nothing_pushed_before = self.seal_credentials(&Map::new());
        let n = sqlx::query(
            "INSERT INTO credential_sets (platform, version, payload, updated_at, previous, rotated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (platform) DO UPDATE SET version = excluded.version, payload = excluded.payload, updated_at = excluded.updated_at, \
             previous = credential_sets.payload, rotated_at = excluded.updated_at \
             WHERE credential_sets.version < excluded.version",
        )
        .bind(platform)
        .bind(version)
        .bind(&payload)
        .bind(now)
        .bind(&nothing_pushed_before)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(q("storing credentials"))?
        .rows_affected();
        if n == 1 {
            return Ok(CredentialPut::Accepted);
        }
        let current = self
            .credentials_get(platform)
            .await?
            .map(|c| c.version)
            .unwrap_or_default();
        Ok(CredentialPut::Stale { current })
    }

    fn seal_credentials(&self, values: &Map<String, Value>) -> String {
        let plain = Value::Object(values.clone()).to_string();
        match &self.cipher {
            Some(c) => c.seal(plain.as_bytes()),
            None => format!("plain:{plain}"),
        }
    }

    fn open_credentials(
        &self,
        platform: &str,
        payload: &str,
    ) -> Result<Map<String, Value>, StoreError> {
        let bad = |reason: String| StoreError::Credentials {
            platform: platform.into(),
            reason,
        };
        let plain = match payload.strip_prefix("plain:") {
            Some(p) => p.as_bytes().to_vec(),
            None => match &self.cipher {
                Some(c) => c.open(payload).map_err(bad)?,
                None => {
                    return Err(bad(
                        "they are encrypted and ENTREPOT_CREDENTIALS_KEY is not set".into(),
                    ));
                }
            },
        };
        match serde_json::from_slice(&plain) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(bad("the stored value is not a mapping".into())),
        }
    }

    /// A platform's pushed credentials, with the set the last push replaced.
    pub async fn credentials_get(
        &self,
        platform: &str,
    ) -> Result<Option<StoredCredentials>, StoreError> {
        let row = sqlx::query(
            "SELECT version, payload, updated_at, previous, rotated_at FROM credential_sets WHERE platform = $1",
        )
        .bind(platform)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("reading credentials"))?;
        let Some(r) = row else { return Ok(None) };
        let payload: String = r.try_get(1).map_err(q("reading credentials"))?;
        let values = self.open_credentials(platform, &payload)?;
        let previous: Option<String> = r.try_get(3).map_err(q("reading credentials"))?;
        let rotated_at: Option<i64> = r.try_get(4).map_err(q("reading credentials"))?;
        let previous = match (previous, rotated_at) {
            (Some(p), Some(at)) => Some(Rotation {
                values: self.open_credentials(platform, &p)?,
                rotated_at: at,
            }),
            // Stored before the store kept them.
            _ => None,
        };
        Ok(Some(StoredCredentials {
            version: r.try_get(0).map_err(q("reading credentials"))?,
            values,
            updated_at: r.try_get(2).map_err(q("reading credentials"))?,
            previous,
        }))
    }

    /// Every platform with pushed credentials, with the version (values are read with
    /// [`Store::credentials_get`]).
    pub async fn credentials_platforms(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT platform, version FROM credential_sets ORDER BY platform")
            .fetch_all(&self.pool)
            .await
            .map_err(q("listing credentials"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(q("reading credentials"))?,
                    r.try_get(1).map_err(q("reading credentials"))?,
                ))
            })
            .collect()
    }

    // ------------------------------------------------------------------ replay guard

    /// Records a replay key until `expires`; `false` when it is already recorded and has not
    /// expired (a replay).
    pub async fn replay_first_sighting(
        &self,
        key: &str,
        now: i64,
        expires: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "INSERT INTO replay_keys (key, expires_at) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE replay_keys.expires_at <= $3",
        )
        .bind(key)
        .bind(expires)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(q("checking a replay key"))?
        .rows_affected();
        Ok(n == 1)
    }

    /// Forgets expired replay keys and idempotency records, and what `retention` lets go:
    /// refused deliveries older than `refused`; verified deliveries (duplicates included)
    /// older than `deliveries` whose events were all delivered (a delivery with an event still
    /// pending or dead-lettered stays, and so does that event); delivered events older than
    /// `events`. Returns how many rows went.
    pub async fn prune(&self, now: i64, retention: &Retention) -> Result<u64, StoreError> {
        let before = |d: std::time::Duration| {
            now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        };
        let steps: [(&str, i64, &'static str); 5] = [
            (
                "DELETE FROM replay_keys WHERE expires_at <= $1",
                now,
                "pruning replay keys",
            ),
            (
                "DELETE FROM idempotency WHERE expires_at <= $1",
                now,
                "pruning idempotency records",
            ),
            (
                "DELETE FROM inbox WHERE verified = 0 AND received_at < $1",
                before(retention.refused),
                "pruning refused deliveries",
            ),
            (
                "DELETE FROM inbox WHERE verified <> 0 AND received_at < $1 AND NOT EXISTS \
                 (SELECT 1 FROM outbox WHERE outbox.inbox_id = inbox.id AND outbox.delivered_at IS NULL)",
                before(retention.deliveries),
                "pruning deliveries",
            ),
            (
                "DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < $1",
                before(retention.events),
                "pruning delivered events",
            ),
        ];
        let mut removed = 0;
        for (sql, bound, what) in steps {
            removed += sqlx::query(sql)
                .bind(bound)
                .execute(&self.pool)
                .await
                .map_err(q(what))?
                .rows_affected();
        }
        Ok(removed)
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// The compare-and-set statement of [`Store::flow_write`], on a pool or in a transaction;
/// returns the rows written (1, or 0 on a version conflict).
async fn flow_write_in<'e, E>(
    exec: E,
    id: &str,
    kind: &str,
    text: &str,
    expected: Option<i64>,
    now: i64,
    due: Option<Option<i64>>,
) -> Result<u64, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let done = match (expected, due) {
        (None, due) => sqlx::query("INSERT INTO flows (id, kind, state, version, updated_at, due_at, created_at) VALUES ($1, $2, $3, 1, $4, $5, $4) ON CONFLICT DO NOTHING")
            .bind(id)
            .bind(kind)
            .bind(text)
            .bind(now)
            .bind(due.flatten())
            .execute(exec)
            .await,
        (Some(v), None) => sqlx::query("UPDATE flows SET state = $1, version = version + 1, updated_at = $2 WHERE id = $3 AND version = $4")
            .bind(text)
            .bind(now)
            .bind(id)
            .bind(v)
            .execute(exec)
            .await,
        (Some(v), Some(due_at)) => sqlx::query("UPDATE flows SET state = $1, version = version + 1, updated_at = $2, due_at = $3 WHERE id = $4 AND version = $5")
            .bind(text)
            .bind(now)
            .bind(due_at)
            .bind(id)
            .bind(v)
            .execute(exec)
            .await,
    }?;
    Ok(done.rows_affected())
}

const OUTBOX_COLUMNS: &str = "id, event_id, inbox_id, target, event_type, payload, idempotency_key, attempts, max_attempts, next_attempt_at, last_error, dead, delivered_at, lease_owner, traceparent";

/// Records an event; `trace` is the `traceparent` of the span that produced it.
async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    e: &NewEvent,
    inbox_id: Option<i64>,
    now: i64,
    trace: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox (event_id, inbox_id, target, event_type, payload, idempotency_key, attempts, max_attempts, next_attempt_at, dead, created_at, traceparent) \
         VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, 0, $9, $10) ON CONFLICT DO NOTHING",
    )
    .bind(&e.event_id)
    .bind(inbox_id)
    .bind(&e.target)
    .bind(&e.event_type)
    .bind(&e.payload)
    .bind(&e.idempotency_key)
    .bind(e.max_attempts)
    .bind(now)
    .bind(now)
    .bind(trace)
    .execute(&mut **tx)
    .await
    .map_err(q("recording an event"))?;
    Ok(())
}

fn outbox_row(r: &AnyRow) -> Result<OutboxRow, StoreError> {
    let e = q("reading an event");
    let get_i = |i: usize| r.try_get::<i64, _>(i);
    Ok(OutboxRow {
        id: get_i(0).map_err(q("reading an event"))?,
        event_id: r.try_get(1).map_err(q("reading an event"))?,
        inbox_id: r.try_get(2).map_err(q("reading an event"))?,
        target: r.try_get(3).map_err(q("reading an event"))?,
        event_type: r.try_get(4).map_err(q("reading an event"))?,
        payload: r.try_get(5).map_err(q("reading an event"))?,
        idempotency_key: r.try_get(6).map_err(q("reading an event"))?,
        attempts: get_i(7).map_err(q("reading an event"))?,
        max_attempts: get_i(8).map_err(q("reading an event"))?,
        next_attempt_at: get_i(9).map_err(q("reading an event"))?,
        last_error: r.try_get(10).map_err(q("reading an event"))?,
        dead: get_i(11).map_err(q("reading an event"))? != 0,
        delivered_at: r.try_get(12).map_err(q("reading an event"))?,
        lease_owner: r.try_get(13).map_err(q("reading an event"))?,
        traceparent: r.try_get(14).map_err(e)?,
    })
}

fn inbox_row(r: &AnyRow) -> Result<InboxRow, StoreError> {
    Ok(InboxRow {
        body_bytes: r.try_get(8).map_err(q("reading a delivery"))?,
        body_stored_bytes: r.try_get(9).map_err(q("reading a delivery"))?,
        duplicate_of: r.try_get(10).map_err(q("reading a delivery"))?,
        id: r.try_get(0).map_err(q("reading a delivery"))?,
        platform: r.try_get(1).map_err(q("reading a delivery"))?,
        route: r.try_get(2).map_err(q("reading a delivery"))?,
        dedupe_key: r.try_get(3).map_err(q("reading a delivery"))?,
        verified: r.try_get::<i64, _>(4).map_err(q("reading a delivery"))? != 0,
        rejection: r.try_get(5).map_err(q("reading a delivery"))?,
        event_type: r.try_get(6).map_err(q("reading a delivery"))?,
        received_at: r.try_get(7).map_err(q("reading a delivery"))?,
    })
}

/// A database error in words, without the URL (which may hold a password).
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => format!("cannot reach the database: {io}"),
        sqlx::Error::PoolTimedOut => "the database did not answer in time".into(),
        sqlx::Error::Database(db) => db.message().to_string(),
        sqlx::Error::Configuration(c) => format!("the URL is not usable: {c}"),
        other => other.to_string(),
    }
}

/// Outcome of [`Store::idem_begin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdemBegin {
    /// The key is reserved for the caller: do the work, then `idem_finish`.
    New,
    /// Another call holds the key and has not finished.
    Pending,
    /// Done before: the stored outcome.
    Done(String),
}

/// A delivery to record.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Platform.
    pub platform: String,
    /// Callback path.
    pub route: String,
    /// Deduplication key (recorded as a key only for verified deliveries).
    pub dedupe_key: Option<String>,
    /// Headers as JSON.
    pub headers: String,
    /// Raw body (for a refused delivery, at most its start is kept: [`KEPT_BODY_BYTES`]).
    pub body: Vec<u8>,
    /// Size of the body as received, which may be more than `body` holds.
    pub body_bytes: i64,
    /// Whether verification passed.
    pub verified: bool,
    /// Why it was rejected.
    pub rejection: Option<String>,
    /// Its canonical event type, when known.
    pub event_type: Option<String>,
    /// When it arrived (Unix ms).
    pub received_at: i64,
    /// A replay-guard key and its expiry (Unix ms), recorded with the delivery: a key still
    /// recorded from an earlier delivery makes this one [`InboxOutcome::Replayed`].
    pub replay: Option<(String, i64)>,
}

/// An event for an internal target.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Unique event id.
    pub event_id: String,
    /// Target name.
    pub target: String,
    /// Canonical event type.
    pub event_type: String,
    /// The event envelope as JSON.
    pub payload: String,
    /// Idempotency key sent to the target.
    pub idempotency_key: String,
    /// Attempts before dead-lettering.
    pub max_attempts: i64,
}

/// A stock level reported by a delivery, checked against its threshold when the delivery is
/// recorded ([`Store::inbox_record_with_stock`]). The last level of each SKU is kept in the
/// `flows` table (kind [`StockCheck::KIND`]).
#[derive(Debug, Clone)]
pub struct StockCheck {
    /// The flow row keeping the SKU's last level, such as `stock/PLATFORM/SKU`.
    pub flow_id: String,
    /// Units available now.
    pub available: i64,
    /// At or below this, the level is low.
    pub threshold: i64,
    /// The events stored when the level crosses into low.
    pub events: Vec<NewEvent>,
}

impl StockCheck {
    /// The flow kind of stock levels.
    pub const KIND: &'static str = "stock_level";
}

/// Outcome of [`Store::inbox_record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxOutcome {
    /// Recorded, with its events.
    Stored {
        /// Delivery id.
        id: i64,
    },
    /// Seen before; nothing new recorded.
    Duplicate {
        /// The earlier delivery's id.
        id: i64,
    },
    /// Its replay key was already recorded and has not expired; nothing recorded.
    Replayed,
}

/// A recorded delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRow {
    /// Id.
    pub id: i64,
    /// Platform.
    pub platform: String,
    /// Callback path.
    pub route: String,
    /// The dedupe key it carried.
    pub dedupe_key: Option<String>,
    /// Whether verification passed.
    pub verified: bool,
    /// Why it was rejected.
    pub rejection: Option<String>,
    /// Its event type.
    pub event_type: Option<String>,
    /// When it arrived.
    pub received_at: i64,
    /// Size of the body as received (unknown for deliveries recorded before it was kept).
    pub body_bytes: Option<i64>,
    /// Bytes of the body kept: all of it for an accepted delivery, at most
    /// [`KEPT_BODY_BYTES`] for a refused one or a duplicate.
    pub body_stored_bytes: i64,
    /// For a verified resend acknowledged by deduplication: the delivery it repeats.
    pub duplicate_of: Option<i64>,
}

/// How much of the body of a refused or duplicate delivery is kept: 4 KiB.
pub const KEPT_BODY_BYTES: usize = 4096;

/// How much of the headers (as JSON) of a refused or duplicate delivery is kept: 4 KiB.
pub const KEPT_HEADER_BYTES: usize = 4096;

/// The headers of a refused or duplicate delivery as they are kept: the JSON object as it
/// came when it fits in [`KEPT_HEADER_BYTES`]; otherwise names longer than 128 bytes and
/// values longer than 256 bytes are cut (a value ends with `… (N bytes)`), and the headers
/// that no longer fit are left out, counted under the key `…`.
pub fn kept_headers(json: &str) -> String {
    const NAME: usize = 128;
    const VALUE: usize = 256;
    if json.len() <= KEPT_HEADER_BYTES {
        return json.to_string();
    }
    let Ok(Value::Object(all)) = serde_json::from_str::<Value>(json) else {
        return "{}".into();
    };
    let cut = |text: &str, max: usize| -> String {
        if text.len() <= max {
            return text.to_string();
        }
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!(
            "{}… ({} bytes)",
            text.get(..end).unwrap_or_default(),
            text.len()
        )
    };
    // Room for the count of the headers left out.
    let budget = KEPT_HEADER_BYTES - 64;
    let mut kept = Map::new();
    let mut size = 2;
    let mut left_out = 0usize;
    for (name, value) in &all {
        let name = cut(name, NAME);
        let text = value
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        let value = Value::String(cut(&text, VALUE));
        // `"name":value,` with the quotes and escapes JSON adds.
        let entry = Value::String(name.clone()).to_string().len() + value.to_string().len() + 2;
        if left_out > 0 || size + entry > budget {
            left_out += 1;
            continue;
        }
        size += entry;
        kept.insert(name, value);
    }
    if left_out > 0 {
        kept.insert(
            "…".into(),
            Value::String(format!("{left_out} more header(s) not kept")),
        );
    }
    Value::Object(kept).to_string()
}

/// How long stored rows are kept (`retention` in entrepot.yaml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Verified deliveries, duplicates included (and so their dedupe keys). Default: 7 days.
    pub deliveries: std::time::Duration,
    /// Refused deliveries. Default: 1 day.
    pub refused: std::time::Duration,
    /// Events delivered to their target. Default: 7 days.
    pub events: std::time::Duration,
    /// How often the store is pruned (also once at start). Default: 10 minutes.
    pub prune_every: std::time::Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Retention {
            deliveries: std::time::Duration::from_secs(7 * DAY),
            refused: std::time::Duration::from_secs(DAY),
            events: std::time::Duration::from_secs(7 * DAY),
            prune_every: std::time::Duration::from_secs(600),
        }
    }
}

/// An event in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Row id.
    pub id: i64,
    /// Event id.
    pub event_id: String,
    /// The delivery that produced it.
    pub inbox_id: Option<i64>,
    /// Target.
    pub target: String,
    /// Event type.
    pub event_type: String,
    /// Payload.
    pub payload: String,
    /// Idempotency key.
    pub idempotency_key: String,
    /// Attempts so far (including a claimed one in progress).
    pub attempts: i64,
    /// Attempts allowed.
    pub max_attempts: i64,
    /// When it is due.
    pub next_attempt_at: i64,
    /// Last failure.
    pub last_error: Option<String>,
    /// Dead-lettered.
    pub dead: bool,
    /// When it was delivered.
    pub delivered_at: Option<i64>,
    /// Who holds its lease.
    pub lease_owner: Option<String>,
    /// The W3C `traceparent` of the call or callback that produced it, when it was produced
    /// inside a trace: its deliveries join that trace.
    pub traceparent: Option<String>,
}

/// What waits in the outbox for one target ([`Store::outbox_backlog`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    /// The target.
    pub target: String,
    /// Events not delivered yet and not dead-lettered (due now, backing off, or being
    /// delivered).
    pub pending: i64,
    /// Dead-lettered events.
    pub dead: i64,
    /// When the oldest pending event was stored (Unix ms); `None` when nothing is pending.
    pub oldest_pending_at: Option<i64>,
}

/// A flow's stored state.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowState {
    /// Flow kind.
    pub kind: String,
    /// State document.
    pub state: Value,
    /// Version for optimistic updates.
    pub version: i64,
    /// Last update (Unix ms).
    pub updated_at: i64,
}

/// Outcome of [`Store::credentials_put`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialPut {
    /// Stored.
    Accepted,
    /// Refused: the store holds this version or a newer one.
    Stale {
        /// The stored version.
        current: i64,
    },
}

/// A platform's stored credentials.
#[derive(Clone, PartialEq)]
pub struct StoredCredentials {
    /// Version.
    pub version: i64,
    /// Values by name.
    pub values: Map<String, Value>,
    /// Last update (Unix ms).
    pub updated_at: i64,
    /// The pushed set the last push replaced (empty when it was the first push: the values in
    /// force then came from the credentials file or the environment), and when. `None` for
    /// sets stored before the store kept them.
    pub previous: Option<Rotation>,
}

impl std::fmt::Debug for StoredCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredentials")
            .field("version", &self.version)
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .field("previous", &self.previous)
            .finish()
    }
}

/// A pushed set replaced by a push.
#[derive(Clone, PartialEq)]
pub struct Rotation {
    /// Values by name.
    pub values: Map<String, Value>,
    /// When the push replaced them (Unix ms).
    pub rotated_at: i64,
}

impl std::fmt::Debug for Rotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotation")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .field("rotated_at", &self.rotated_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_headers_fit_in_4_kib_and_stay_json() {
        let small = r#"{"x-id":"1"}"#;
        assert_eq!(kept_headers(small), small);
        // 100 headers of 300 bytes each, multi-byte characters included: cut to 256 bytes
        // (never inside a character), then left out once 4 KiB is reached, and counted.
        let mut m = Map::new();
        for i in 0..100 {
            m.insert(
                format!("x-h{i:02}"),
                Value::String(format!("a{}", "é".repeat(150))),
            );
        }
        let kept = kept_headers(&Value::Object(m).to_string());
        assert!(kept.len() <= KEPT_HEADER_BYTES, "{}", kept.len());
        let v: Map<String, Value> = serde_json::from_str(&kept).unwrap();
        let first = v["x-h00"].as_str().unwrap();
        // Byte 256 is inside an `é`: the cut is at 255.
        assert!(first.ends_with("é… (301 bytes)"), "{first}");
        assert_eq!(first.len(), 255 + "… (301 bytes)".len());
        let shown = v.keys().filter(|k| k.starts_with("x-h")).count();
        assert!((10..100).contains(&shown), "{shown}");
        assert_eq!(
            v["…"],
            Value::String(format!("{} more header(s) not kept", 100 - shown))
        );
        // A huge name is cut too.
        let mut m = Map::new();
        m.insert("n".repeat(10_000), Value::String("v".into()));
        let kept = kept_headers(&Value::Object(m).to_string());
        assert!(kept.len() < 300, "{kept}");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://u:p@ss@h:1/db"),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=pw&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            sqlite_file("sqlite://data/x.db?mode=rwc").as_deref(),
            Some("data/x.db")
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
    }
}
