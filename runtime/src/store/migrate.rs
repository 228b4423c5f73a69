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
        // Refused and duplicate deliveries keep at most the start of their body: the size received
        // is kept beside it. A duplicate names the delivery it repeats. Retention prunes by age.
        2,
        &[
            "ALTER TABLE inbox ADD COLUMN body_bytes BIGINT",
            "ALTER TABLE inbox ADD COLUMN duplicate_of BIGINT",
            "CREATE INDEX inbox_by_age ON inbox (received_at)",
            "CREATE INDEX outbox_by_inbox ON outbox (inbox_id)",
        ],
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

/// Applies every migration newer than the store's schema, each in its own transaction.
pub async fn run(store: &Store) -> Result<(), String> {
    let pool = store.pool();
    sqlx::query("CREATE TABLE IF NOT EXISTS entrepot_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        .execute(pool)
        .await
        .map_err(|e| e.to_string())?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM entrepot_migrations")
        .fetch_one(pool)
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
        let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
        for s in *statements {
            sqlx::query(&dialect(s, store.backend()))
                .execute(&mut *tx)
                .await
                .map_err(|e| format!("migration {version}: {e}"))?;
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        // Two instances starting together: the second one's insert conflicts and rolls back.
        sqlx::query("INSERT INTO entrepot_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(*version)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| format!("migration {version}: {e}"))?;
        tx.commit().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}
