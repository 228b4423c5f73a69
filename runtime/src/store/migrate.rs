//! Schema migrations, applied in order at start. Each is written once, with the few type
//! names that differ between the backends filled in.

use sqlx::Row;

use super::{Backend, Store};

/// `(version, statements)`; `{id}` is an auto-increment primary key, `{bytes}` a byte column.
const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE key_mappings (platform TEXT NOT NULL, kind TEXT NOT NULL, internal_id TEXT NOT NULL, \
         platform_id TEXT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (platform, kind, internal_id), \
         UNIQUE (platform, kind, platform_id))",
            "CREATE INDEX key_mappings_by_internal ON key_mappings (kind, internal_id)",
            "CREATE TABLE idempotency (key TEXT PRIMARY KEY, state TEXT NOT NULL, response TEXT, \
         created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL)",
            "CREATE TABLE inbox (id {id}, platform TEXT NOT NULL, route TEXT NOT NULL, dedupe_key TEXT, \
         claimed_key TEXT, headers TEXT NOT NULL, body {bytes} NOT NULL, verified BIGINT NOT NULL, rejection TEXT, \
         event_type TEXT, received_at BIGINT NOT NULL, UNIQUE (platform, dedupe_key))",
            "CREATE TABLE outbox (id {id}, event_id TEXT NOT NULL UNIQUE, inbox_id BIGINT, target TEXT NOT NULL, \
         event_type TEXT NOT NULL, payload TEXT NOT NULL, idempotency_key TEXT NOT NULL, attempts BIGINT NOT NULL, \
         max_attempts BIGINT NOT NULL, next_attempt_at BIGINT NOT NULL, last_error TEXT, dead BIGINT NOT NULL, \
         delivered_at BIGINT, lease_owner TEXT, lease_until BIGINT, created_at BIGINT NOT NULL)",
            "CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE delivered_at IS NULL AND dead = 0",
            "CREATE TABLE flows (id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, version BIGINT NOT NULL, \
         updated_at BIGINT NOT NULL)",
            "CREATE TABLE credential_sets (platform TEXT PRIMARY KEY, version BIGINT NOT NULL, payload TEXT NOT NULL, \
         updated_at BIGINT NOT NULL)",
            "CREATE TABLE replay_keys (key TEXT PRIMARY KEY, expires_at BIGINT NOT NULL)",
        ],
    ),
    (
        2,
        &[
            // The set a push replaced (sealed like `payload`), and when: inbound verification
            // still accepts it during the platform's rotation window, also after a restart.
            "ALTER TABLE credential_sets ADD COLUMN previous TEXT",
            "ALTER TABLE credential_sets ADD COLUMN rotated_at BIGINT",
        ],
    ),
    (
        // Refused and duplicate deliveries keep at most the start of their body: the size received
        // is kept beside it. A duplicate names the delivery it repeats. Retention prunes by age.
        3,
        &[
            "ALTER TABLE inbox ADD COLUMN body_bytes BIGINT",
            "ALTER TABLE inbox ADD COLUMN duplicate_of BIGINT",
            "CREATE INDEX inbox_by_age ON inbox (received_at)",
            "CREATE INDEX outbox_by_inbox ON outbox (inbox_id)",
        ],
    ),
    (
        // Flows with work left are due at a time (NULL: nothing left to do) and leased by the
        // instance working on them, so a restarted or another instance resumes them.
        4,
        &[
            "ALTER TABLE flows ADD COLUMN due_at BIGINT",
            "ALTER TABLE flows ADD COLUMN lease_owner TEXT",
            "ALTER TABLE flows ADD COLUMN lease_until BIGINT",
            "CREATE INDEX flows_due ON flows (kind, due_at) WHERE due_at IS NOT NULL",
        ],
    ),
    (
        // Product sync: the content hash of the last version of each product sent to the
        // product center, so an unchanged product is not sent again.
        5,
        &[
            "CREATE TABLE product_hashes (platform TEXT NOT NULL, spu_id TEXT NOT NULL, hash TEXT NOT NULL, \
         updated_at BIGINT NOT NULL, PRIMARY KEY (platform, spu_id))",
        ],
    ),
    (
        // When a flow was recorded, so reconciliation reads the orders of a time window; rows
        // from before take their last update.
        6,
        &[
            "ALTER TABLE flows ADD COLUMN created_at BIGINT",
            "UPDATE flows SET created_at = updated_at WHERE created_at IS NULL",
            "CREATE INDEX flows_by_created ON flows (kind, created_at)",
        ],
    ),
    (
        // Product hashes per target: a target added later gets every product once, the others
        // only what changed. The hashes of before name no target and are dropped, so the next
        // sync sends each product once more, with the same Idempotency-Key as before.
        7,
        &[
            "CREATE TABLE product_hashes_next (platform TEXT NOT NULL, target TEXT NOT NULL, \
         spu_id TEXT NOT NULL, hash TEXT NOT NULL, updated_at BIGINT NOT NULL, \
         PRIMARY KEY (platform, target, spu_id))",
            "DROP TABLE product_hashes",
            "ALTER TABLE product_hashes_next RENAME TO product_hashes",
        ],
    ),
    (
        // Monitoring counts the dead letters of each platform on every evaluation: an index of
        // the (few) dead rows spares it a scan of every delivered event kept.
        8,
        &["CREATE INDEX outbox_dead ON outbox (inbox_id) WHERE dead = 1"],
    ),
    (
        // The W3C `traceparent` of the call or callback that produced an event, so its delivery
        // (maybe by another instance, maybe much later) joins that trace. NULL: none.
        9,
        &["ALTER TABLE outbox ADD COLUMN traceparent TEXT"],
    ),
];

fn dialect(sql: &str, backend: Backend) -> String {
    let (id, bytes) = match backend {
        Backend::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"),
        Backend::Postgres => ("BIGSERIAL PRIMARY KEY", "BYTEA"),
    };
    sql.replace("{id}", id).replace("{bytes}", bytes)
}

/// The newest schema version this build knows.
pub fn latest() -> i64 {
    MIGRATIONS.iter().map(|(v, _)| *v).max().unwrap_or(0)
}

/// Applies every migration newer than the store's schema.
///
/// Instances starting together on one fresh store take turns: the first migrates, the others
/// wait for it and then find nothing left to do. On PostgreSQL a session advisory lock, keyed
/// by the schema (stores in different schemas do not wait for each other), is held on one
/// connection for the whole run, and each migration is its own transaction; on SQLite the
/// whole run is one `BEGIN IMMEDIATE` transaction, which takes the database's write lock
/// before reading the schema version.
pub async fn run(store: &Store) -> Result<(), String> {
    let mut conn = store.pool().acquire().await.map_err(|e| e.to_string())?;
    match store.backend() {
        Backend::Postgres => {
            // `pg_advisory_lock` returns `void`, which the `Any` driver cannot decode: count it.
            sqlx::query(
                "SELECT COUNT(*) FROM (SELECT pg_advisory_lock(hashtext('entrepot_migrations:' || COALESCE(current_schema(), '')))) AS locked",
            )
            .execute(&mut *conn)
            .await
            .map_err(|e| format!("waiting for other instances' migrations: {e}"))?;
            let result = apply(&mut conn, Backend::Postgres).await;
            let unlocked = sqlx::query(
                "SELECT pg_advisory_unlock(hashtext('entrepot_migrations:' || COALESCE(current_schema(), '')))",
            )
            .execute(&mut *conn)
            .await;
            if unlocked.is_err() {
                // Never hand a connection that may still hold the lock back to the pool.
                let _ = conn.close().await;
            }
            result
        }
        Backend::Sqlite => {
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *conn)
                .await
                .map_err(|e| format!("waiting for other instances' migrations: {e}"))?;
            let result = apply(&mut conn, Backend::Sqlite).await;
            let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
            match sqlx::query(end).execute(&mut *conn).await {
                Ok(_) => result,
                Err(e) => {
                    // Never hand a connection inside a transaction back to the pool.
                    let _ = conn.close().await;
                    result.and(Err(e.to_string()))
                }
            }
        }
    }
}

/// Creates the version table, reads the version and applies what is newer; the caller holds
/// the migration lock.
async fn apply(conn: &mut sqlx::AnyConnection, backend: Backend) -> Result<(), String> {
    use sqlx::Connection;
    sqlx::query("CREATE TABLE IF NOT EXISTS entrepot_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        .execute(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM entrepot_migrations")
        .fetch_one(&mut *conn)
        .await
        .and_then(|r| r.try_get::<i64, _>(0))
        .map_err(|e| e.to_string())?;
    if current > latest() {
        return Err(format!(
            "the store has schema version {current}, newer than this build's {}",
            latest()
        ));
    }
    for (version, statements) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let failed = |e: sqlx::Error| format!("migration {version}: {e}");
        match backend {
            Backend::Postgres => {
                let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
                apply_one(&mut tx, *version, statements, backend)
                    .await
                    .map_err(failed)?;
                tx.commit().await.map_err(|e| e.to_string())?;
            }
            // The caller's transaction covers the whole run.
            Backend::Sqlite => apply_one(conn, *version, statements, backend)
                .await
                .map_err(failed)?,
        }
    }
    Ok(())
}

async fn apply_one(
    conn: &mut sqlx::AnyConnection,
    version: i64,
    statements: &[&str],
    backend: Backend,
) -> Result<(), sqlx::Error> {
    for s in statements {
        sqlx::query(&dialect(s, backend))
            .execute(&mut *conn)
            .await?;
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    sqlx::query("INSERT INTO entrepot_migrations (version, applied_at) VALUES ($1, $2)")
        .bind(version)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
