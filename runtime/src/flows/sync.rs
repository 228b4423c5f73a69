//! Product sync: every product of a platform into the product center, as idempotent upserts.
//!
//! Built on canonical operations only, so every platform described in YAML can be synced:
//!
//! - **Pages.** A sync pages through `product.list` by following `next_cursor` until it is
//!   null; each platform file maps its own pagination (page numbers, offsets, cursors or
//!   tokens) onto `cursor` / `next_cursor`. An incremental sync passes `updated_since`.
//! - **Upserts.** Each product becomes a `product.upserted` event for the targets that
//!   subscribe to it, with the Idempotency-Key `<platform>:<spu_id>:<content hash>`. The last
//!   hash sent per product is stored with the events in one transaction, so an unchanged
//!   product is not sent again and the same product twice gives the same result.
//! - **Checkpoints.** The run's state (cursor, counts) is saved after every page in the
//!   store's `flows` table (compare-and-set), so an interrupted sync resumes after the last
//!   page it finished; a finished sync leaves the checkpoint (`updated_since`) of the next
//!   incremental one.
//! - **One at a time.** The same flow row holds a lease: only its holder syncs the platform,
//!   on any instance; it renews it with every page, and a crashed holder's lease runs out.
//! - **Shared rate limit.** Calls go through [`Engine::call`], one at a time, so they queue
//!   for the platform's pacer and connection cap with live traffic and never hold more than
//!   one turn.
//! - **Callbacks.** `product.changed` / `product.offline` events reach the internal consumer
//!   `@sync` (see [`crate::dispatch::Consumer`]), which fetches that product with
//!   `product.get` and upserts it; the outbox makes this durable and retried.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::compile::gateway::{SyncSettings, TargetSettings};
use crate::engine::problem::{Problem, ProblemKind};
use crate::engine::{CallOutcome, Engine};
use crate::observe::FlowSeen;
use crate::plan::{Plan, PlatformPlan};
use crate::store::{NewEvent, OutboxRow, StoreError};
use crate::timefmt::{now_ms, rfc3339};

/// The kind of the sync's rows in the `flows` table.
pub const KIND: &str = "product-sync";
/// The event the sync sends to the product center.
pub const UPSERTED: &str = "product.upserted";
/// The internal consumer of `product.changed` / `product.offline` events.
pub const CONSUMER: &str = "@sync";
/// The events the consumer reacts to.
pub const TRIGGERS: &[&str] = &["product.changed", "product.offline"];
/// Pages one sync reads at most: a platform whose cursors never end cannot hold it forever.
pub const MAX_PAGES: u64 = 1_000_000;
/// Finished runs kept in a platform's history.
pub const HISTORY: usize = 10;
/// How far before the checkpoint an incremental sync starts, so clock differences between the
/// gateway and the platform lose nothing (products seen twice are not sent twice).
pub const OVERLAP: Duration = Duration::from_secs(60);
/// Attempts per page before a sync stops as failed (the engine's own retries come first).
const PAGE_ATTEMPTS: u32 = 3;

/// A full sync lists everything; an incremental one only what changed since the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every product.
    Full,
    /// Products changed since the checkpoint.
    Incremental,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Paging (or its holder died: the lease tells).
    Running,
    /// Stopped on request after a page; the next sync resumes it.
    Interrupted,
    /// Stopped by an error; the next sync resumes it.
    Failed,
    /// Every page read.
    Done,
}

impl Mode {
    /// `full` or `incremental`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Incremental => "incremental",
        }
    }
}

impl Status {
    /// `running`, `interrupted`, `failed` or `done`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Interrupted => "interrupted",
            Status::Failed => "failed",
            Status::Done => "done",
        }
    }
}

/// One sync run and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The sync id.
    pub id: String,
    /// Full or incremental.
    pub mode: Mode,
    /// Where it is.
    pub status: Status,
    /// The cursor of the next page (absent: the first page, or done).
    pub cursor: Option<String>,
    /// Only products changed since this time (incremental runs).
    pub updated_since: Option<String>,
    /// The start of the current time window (RFC 3339), when the platform lists products
    /// only over bounded windows (`windows` on its `product.list`). Windows follow each
    /// other from the platform's `start` (full) or `updated_since` (incremental) up to the
    /// moment the run started.
    #[serde(default)]
    pub window: Option<String>,
    /// Pages read.
    pub pages: u64,
    /// Products read.
    pub items: u64,
    /// Products sent to the product center (new or changed).
    pub sent: u64,
    /// Products read but unchanged since they were last sent.
    pub unchanged: u64,
    /// Failed page attempts and unusable products.
    pub errors: u64,
    /// Products in all pages, when the platform says.
    pub total: Option<u64>,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: Option<String>,
    /// How many times it was resumed.
    pub resumed: u32,
    /// The last error.
    pub last_error: Option<String>,
    /// Last change, Unix milliseconds.
    pub updated_ms: i64,
}

/// Who holds a platform's sync, and until when (Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// The holder: instance and run.
    pub holder: String,
    /// When it runs out unless renewed.
    pub until_ms: i64,
}

/// The stored sync state of one platform (one `flows` row).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlatformSync {
    /// The lease, while a sync runs.
    pub lease: Option<Lease>,
    /// The current run, or the last one.
    pub run: Option<Run>,
    /// Where the next incremental sync starts: the start of the last finished one.
    pub checkpoint: Option<String>,
    /// When the last full sync started (Unix ms).
    pub last_full_ms: Option<i64>,
    /// When the last sync finished (Unix ms).
    pub last_done_ms: Option<i64>,
    /// The last finished or replaced runs, newest first.
    pub history: Vec<Run>,
}

/// Why a sync cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// No such platform is loaded.
    #[error("no platform '{platform}' is loaded (loaded: {known})")]
    UnknownPlatform {
        /// The platform asked for.
        platform: String,
        /// The loaded ones.
        known: String,
    },
    /// The platform's file lacks an operation the sync needs.
    #[error("platform '{platform}' does not offer {operation}, which product sync needs")]
    NotOffered {
        /// The platform.
        platform: String,
        /// The missing operation.
        operation: &'static str,
    },
    /// Nothing would receive the products.
    #[error(
        "no target subscribes to product.upserted: add it to the `events` of the product center's target in entrepot.yaml"
    )]
    NoTarget,
    /// Another sync of the platform holds the lease.
    #[error(
        "a sync of '{platform}' is already running ({holder}); its lease runs out in {seconds}s unless renewed"
    )]
    Busy {
        /// The platform.
        platform: String,
        /// The lease holder.
        holder: String,
        /// Seconds left on the lease.
        seconds: i64,
    },
    /// The lease was taken over (this holder was too slow to renew it).
    #[error("the sync of '{platform}' lost its lease to another instance; that one continues it")]
    LeaseLost {
        /// The platform.
        platform: String,
    },
    /// The platform's answers stopped the sync.
    #[error("the sync of '{platform}' stopped: {reason}")]
    Platform {
        /// The platform.
        platform: String,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SyncError {
    /// The error as an HTTP problem.
    pub fn problem(&self) -> Problem {
        let kind = match self {
            SyncError::UnknownPlatform { .. } => ProblemKind::NotFound,
            SyncError::NotOffered { .. } | SyncError::NoTarget => ProblemKind::Configuration,
            SyncError::Busy { .. } | SyncError::LeaseLost { .. } => ProblemKind::InvalidInput,
            SyncError::Platform { .. } => ProblemKind::PlatformFailed,
            SyncError::Store(_) => ProblemKind::StoreUnavailable,
        };
        let mut p = Problem::new(
            kind,
            match self {
                // Store details go to the log, not to the caller.
                SyncError::Store(_) => "the gateway's store failed; see the gateway's log".into(),
                other => other.to_string(),
            },
        );
        if matches!(self, SyncError::Busy { .. } | SyncError::LeaseLost { .. }) {
            p.status = 409;
            p.title = "A sync is already running".into();
        }
        if matches!(self, SyncError::NotOffered { .. } | SyncError::NoTarget) {
            p.status = 422;
        }
        p
    }
}

/// A started (or resumed) run, held by this process until it ends.
#[derive(Debug)]
pub struct Started {
    /// The platform.
    pub platform: String,
    /// The run.
    pub run: Run,
    holder: String,
    state: PlatformSync,
    version: i64,
}

/// What one batch of products gave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upserted {
    /// Sent (new or changed).
    pub sent: u64,
    /// Unchanged, not sent.
    pub unchanged: u64,
    /// Unusable (no `spu_id`).
    pub skipped: u64,
}

/// Runs product syncs of every platform; one per gateway process.
pub struct Syncer {
    plan: Arc<ArcSwap<Plan>>,
    engine: Arc<Engine>,
    targets: Arc<Vec<TargetSettings>>,
    settings: SyncSettings,
    instance: String,
    notify: Option<Arc<tokio::sync::Notify>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The `flows` row of a platform's sync.
pub fn flow_id(platform: &str) -> String {
    format!("{KIND}:{platform}")
}

/// SHA-256 (lowercase hex) of a product's JSON with its keys sorted.
pub fn content_hash(product: &Value) -> String {
    let text = crate::template::canonical_json_value(product, false).to_string();
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// The Idempotency-Key of a product version: `<platform>:<spu_id>:<hash>` (the id is itself
/// hashed when the key would pass the envelope's 256 characters).
pub fn idempotency_key(platform: &str, spu_id: &str, hash: &str) -> String {
    let key = format!("{platform}:{spu_id}:{hash}");
    if key.len() <= 256 {
        return key;
    }
    let id = hex::encode(sha2::Sha256::digest(spu_id.as_bytes()));
    format!("{platform}:{id}:{hash}")
}

impl Syncer {
    /// A syncer over the current plan, calling platforms with `engine` and sending products to
    /// the targets subscribed to `product.upserted`.
    pub fn new(
        plan: Arc<ArcSwap<Plan>>,
        engine: Arc<Engine>,
        targets: Arc<Vec<TargetSettings>>,
        settings: SyncSettings,
    ) -> Self {
        Syncer {
            plan,
            engine,
            targets,
            settings,
            instance: format!("sync-{}", uuid::Uuid::new_v4().simple()),
            notify: None,
            stop: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Wakes `notify` (the dispatcher's) when products were queued.
    pub fn with_notify(mut self, notify: Arc<tokio::sync::Notify>) -> Self {
        self.notify = Some(notify);
        self
    }

    /// The settings.
    pub fn settings(&self) -> &SyncSettings {
        &self.settings
    }

    /// Asks every run of this syncer to stop after its current page (it is saved as
    /// `interrupted` and resumed by the next sync).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn platform(
        &self,
        name: &str,
        operation: &'static str,
    ) -> Result<Arc<PlatformPlan>, SyncError> {
        let plan = self.plan.load();
        let p = plan.platforms.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = plan.platforms.keys().map(String::as_str).collect();
            SyncError::UnknownPlatform {
                platform: name.to_string(),
                known: known.join(", "),
            }
        })?;
        if !p.operations.contains_key(operation) {
            return Err(SyncError::NotOffered {
                platform: name.to_string(),
                operation,
            });
        }
        Ok(p)
    }

    fn subscribers(&self) -> Vec<&TargetSettings> {
        self.targets
            .iter()
            .filter(|t| t.events.iter().any(|e| e == UPSERTED))
            .collect()
    }

    /// The stored sync state of `platform`.
    pub async fn status(&self, platform: &str) -> Result<Option<PlatformSync>, SyncError> {
        Ok(self.load(platform).await?.map(|(s, _)| s))
    }

    /// A run of `platform` by id: the current one or one in its history.
    pub async fn find(&self, platform: &str, id: &str) -> Result<Option<Run>, SyncError> {
        let Some(state) = self.status(platform).await? else {
            return Ok(None);
        };
        Ok(state
            .run
            .into_iter()
            .chain(state.history)
            .find(|r| r.id == id))
    }

    async fn load(&self, platform: &str) -> Result<Option<(PlatformSync, i64)>, SyncError> {
        let Some(row) = self.engine.store().flow_get(&flow_id(platform)).await? else {
            return Ok(None);
        };
        // A row this build cannot read is started afresh rather than blocking the platform.
        let state = serde_json::from_value(row.state).unwrap_or_else(|e| {
            tracing::warn!(
                platform,
                "the stored sync state cannot be read ({e}); starting afresh"
            );
            PlatformSync::default()
        });
        Ok(Some((state, row.version)))
    }

    /// Takes the platform's lease and starts a run: the unfinished one when there is one (a
    /// full sync asked for replaces an unfinished incremental one), else a new one — full
    /// when `full` or when there is no checkpoint yet.
    pub async fn start(&self, platform: &str, full: bool) -> Result<Started, SyncError> {
        self.platform(platform, "product.list")?;
        if self.subscribers().is_empty() {
            return Err(SyncError::NoTarget);
        }
        let id = flow_id(platform);
        let holder = format!("{}/{}", self.instance, uuid::Uuid::new_v4().simple());
        loop {
            let now = OffsetDateTime::now_utc();
            let ms = now_ms();
            let (mut state, version) = match self.load(platform).await? {
                Some((s, v)) => (s, Some(v)),
                None => (PlatformSync::default(), None),
            };
            if let Some(l) = &state.lease
                && l.until_ms > ms
            {
                return Err(SyncError::Busy {
                    platform: platform.to_string(),
                    holder: l.holder.clone(),
                    seconds: (l.until_ms - ms + 999) / 1000,
                });
            }
            let run = match state.run.take() {
                Some(mut r) if r.status != Status::Done && (!full || r.mode == Mode::Full) => {
                    r.status = Status::Running;
                    r.resumed = r.resumed.saturating_add(1);
                    r.updated_ms = ms;
                    r
                }
                previous => {
                    if let Some(mut p) = previous
                        && p.status != Status::Done
                    {
                        // Replaced by a full sync: kept in the history as interrupted.
                        p.status = Status::Interrupted;
                        remember(&mut state.history, p);
                    }
                    let incremental = !full && state.checkpoint.is_some();
                    let updated_since = state
                        .checkpoint
                        .as_deref()
                        .filter(|_| incremental)
                        .and_then(|c| OffsetDateTime::parse(c, &Rfc3339).ok())
                        .map(|c| rfc3339(c - OVERLAP));
                    Run {
                        id: format!("sync_{}", uuid::Uuid::new_v4().simple()),
                        mode: if incremental {
                            Mode::Incremental
                        } else {
                            Mode::Full
                        },
                        status: Status::Running,
                        cursor: None,
                        updated_since,
                        window: None,
                        pages: 0,
                        items: 0,
                        sent: 0,
                        unchanged: 0,
                        errors: 0,
                        total: None,
                        started_at: rfc3339(now),
                        finished_at: None,
                        resumed: 0,
                        last_error: None,
                        updated_ms: ms,
                    }
                }
            };
            state.lease = Some(Lease {
                holder: holder.clone(),
                until_ms: ms.saturating_add(millis(self.settings.lease)),
            });
            state.run = Some(run.clone());
            let value = serde_json::to_value(&state).unwrap_or(Value::Null);
            match self
                .engine
                .store()
                .flow_save(&id, KIND, &value, version, ms)
                .await
            {
                Ok(version) => {
                    tracing::info!(platform, sync = %run.id, mode = ?run.mode, resumed = run.resumed, "product sync started");
                    self.engine.observer().flow(&FlowSeen::SyncStarted {
                        platform,
                        mode: run.mode.as_str(),
                    });
                    return Ok(Started {
                        platform: platform.to_string(),
                        run,
                        holder,
                        state,
                        version,
                    });
                }
                // Someone else wrote meanwhile: read again (and find their lease).
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Saves the run (and renews the lease, or releases it when `release`); a lost
    /// compare-and-set means another holder took over.
    async fn save(&self, s: &mut Started, release: bool) -> Result<(), SyncError> {
        let ms = now_ms();
        s.run.updated_ms = ms;
        s.state.lease = (!release).then(|| Lease {
            holder: s.holder.clone(),
            until_ms: ms.saturating_add(millis(self.settings.lease)),
        });
        s.state.run = Some(s.run.clone());
        let value = serde_json::to_value(&s.state).unwrap_or(Value::Null);
        match self
            .engine
            .store()
            .flow_save(&flow_id(&s.platform), KIND, &value, Some(s.version), ms)
            .await
        {
            Ok(v) => {
                s.version = v;
                Ok(())
            }
            Err(StoreError::Conflict { .. }) => Err(SyncError::LeaseLost {
                platform: s.platform.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Ends a run with `status` (and `error`), releasing the lease.
    async fn end(
        &self,
        s: &mut Started,
        status: Status,
        error: Option<String>,
    ) -> Result<(), SyncError> {
        s.run.status = status;
        if error.is_some() {
            s.run.last_error = error;
        }
        if status == Status::Done {
            let now = OffsetDateTime::now_utc();
            s.run.finished_at = Some(rfc3339(now));
            s.state.checkpoint = Some(s.run.started_at.clone());
            s.state.last_done_ms = Some(now_ms());
            if s.run.mode == Mode::Full {
                s.state.last_full_ms = OffsetDateTime::parse(&s.run.started_at, &Rfc3339)
                    .ok()
                    .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0));
            }
            remember(&mut s.state.history, s.run.clone());
        }
        self.save(s, true).await?;
        self.engine.observer().flow(&FlowSeen::SyncEnded {
            platform: &s.platform,
            status: status.as_str(),
        });
        Ok(())
    }

    /// Reads pages until the last one, a failure, or [`Syncer::stop`]; calls `progress` after
    /// every page. Returns the run as it ended.
    pub async fn run(
        &self,
        mut s: Started,
        progress: &(dyn Fn(&Run) + Send + Sync),
    ) -> Result<Run, SyncError> {
        progress(&s.run);
        loop {
            if self.stopping() {
                self.end(&mut s, Status::Interrupted, None).await?;
                progress(&s.run);
                return Ok(s.run);
            }
            if s.run.pages >= MAX_PAGES {
                let reason =
                    format!("more than {MAX_PAGES} pages: the platform's cursors do not end");
                self.end(&mut s, Status::Failed, Some(reason.clone()))
                    .await?;
                return Err(SyncError::Platform {
                    platform: s.platform,
                    reason,
                });
            }
            let page = match self.page(&mut s).await {
                // Every window of a windowed listing was read.
                Ok(None) => {
                    s.run.cursor = None;
                    self.end(&mut s, Status::Done, None).await?;
                    tracing::info!(platform = %s.platform, sync = %s.run.id, pages = s.run.pages, items = s.run.items, sent = s.run.sent, "product sync done");
                    progress(&s.run);
                    return Ok(s.run);
                }
                Ok(Some(p)) => p,
                Err(reason) => {
                    tracing::warn!(platform = %s.platform, sync = %s.run.id, "product sync failed: {reason}");
                    self.end(&mut s, Status::Failed, Some(reason.clone()))
                        .await?;
                    progress(&s.run);
                    return Err(SyncError::Platform {
                        platform: s.platform,
                        reason,
                    });
                }
            };
            let got = self.upsert(&s.platform, &page.items, &s.run.id).await?;
            s.run.pages += 1;
            s.run.items += u64::try_from(page.items.len()).unwrap_or(u64::MAX);
            s.run.sent += got.sent;
            self.engine.observer().flow(&FlowSeen::SyncPage {
                platform: &s.platform,
                sent: got.sent,
            });
            s.run.unchanged += got.unchanged;
            s.run.errors += got.skipped;
            if page.total.is_some() {
                s.run.total = page.total;
            }
            if page.next.is_some() && page.next == s.run.cursor {
                let reason = "the platform answered the same cursor for the next page".to_string();
                self.end(&mut s, Status::Failed, Some(reason.clone()))
                    .await?;
                progress(&s.run);
                return Err(SyncError::Platform {
                    platform: s.platform,
                    reason,
                });
            }
            s.run.cursor = page.next;
            if let (None, Some(end)) = (&s.run.cursor, page.window_end) {
                // This window is done: the next one starts where it ended.
                s.run.window = Some(rfc3339(end));
            } else if s.run.cursor.is_none() {
                self.end(&mut s, Status::Done, None).await?;
                tracing::info!(platform = %s.platform, sync = %s.run.id, pages = s.run.pages, items = s.run.items, sent = s.run.sent, "product sync done");
                progress(&s.run);
                return Ok(s.run);
            }
            self.save(&mut s, false).await?;
            progress(&s.run);
        }
    }

    /// Starts (or resumes) a sync of `platform` and runs it to its end.
    pub async fn sync(
        &self,
        platform: &str,
        full: bool,
        progress: &(dyn Fn(&Run) + Send + Sync),
    ) -> Result<Run, SyncError> {
        let started = self.start(platform, full).await?;
        self.run(started, progress).await
    }

    /// The current time window of a run on a platform whose `product.list` declares
    /// `windows`; `Ok(None)` once the windows reach the moment the run started.
    fn window(
        s: &mut Started,
        w: &crate::plan::WindowsPlan,
    ) -> Result<Option<(OffsetDateTime, OffsetDateTime)>, String> {
        let parse = |t: &str| OffsetDateTime::parse(t, &Rfc3339).map_err(|e| e.to_string());
        let from = match (&s.run.window, s.run.mode, &s.run.updated_since) {
            (Some(w), _, _) => parse(w)?,
            (None, Mode::Incremental, Some(since)) => parse(since)?,
            (None, _, _) => w.start.ok_or(
                "product.list declares `windows` without `start`: a full sync does not know where to begin",
            )?,
        };
        s.run.window = Some(rfc3339(from));
        // A run never lists beyond its own start: what changes later is the next run's.
        let until = parse(&s.run.started_at)?;
        Ok(w.window_from(from, until))
    }

    /// Reads the run's next page, trying again after platform failures; `Err` is the reason
    /// the sync stops, `Ok(None)` that a windowed listing has no window left.
    async fn page(&self, s: &mut Started) -> Result<Option<Page>, String> {
        let mut input = serde_json::Map::new();
        input.insert("page_size".into(), json!(self.settings.page_size));
        if let Some(c) = &s.run.cursor {
            input.insert("cursor".into(), json!(c));
        }
        if let Some(u) = &s.run.updated_since {
            input.insert("updated_since".into(), json!(u));
        }
        let windows = self
            .platform(&s.platform, "product.list")
            .map_err(|e| e.to_string())?
            .operations
            .get("product.list")
            .and_then(|o| o.windows);
        let mut window_end = None;
        if let Some(w) = windows {
            let Some((from, to)) = Self::window(s, &w)? else {
                return Ok(None);
            };
            input.insert("updated_since".into(), json!(rfc3339(from)));
            input.insert("updated_before".into(), json!(rfc3339(to)));
            window_end = Some(to);
        }
        let input = Value::Object(input);
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A fresh snapshot per page: a reloaded platform file applies from the next page.
            let platform = self
                .platform(&s.platform, "product.list")
                .map_err(|e| e.to_string())?;
            let problem = match self
                .engine
                .call(&platform, "product.list", &input, false)
                .await
            {
                Ok(CallOutcome::Output(out)) => {
                    return Page::of(out).map(|p| {
                        Some(Page {
                            window_end,
                            // A window's total is not the whole catalog's.
                            total: p.total.filter(|_| window_end.is_none()),
                            ..p
                        })
                    });
                }
                Ok(CallOutcome::DryRun(_)) => return Err("a dry run answered".into()),
                Err(p) => p,
            };
            s.run.errors += 1;
            s.run.last_error = Some(problem.detail.clone());
            let retryable = problem.status >= 500 || problem.status == 429;
            if !retryable || attempt >= PAGE_ATTEMPTS || self.stopping() {
                return Err(problem.detail);
            }
            let wait = problem
                .retry_after
                .map(Duration::from_secs)
                .unwrap_or_else(|| Duration::from_millis(500u64 << attempt))
                .min(Duration::from_secs(30));
            let mut stop = self.stop.subscribe();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
    }

    /// Queues the changed ones of `products` (canonical products of `platform`) for the
    /// product center and records their hashes, in one transaction.
    pub async fn upsert(
        &self,
        platform: &str,
        products: &[Value],
        sync_id: &str,
    ) -> Result<Upserted, SyncError> {
        let mut out = Upserted::default();
        // The last version of a product listed twice in one batch wins.
        let mut seen: indexmap::IndexMap<String, (String, &Value)> = indexmap::IndexMap::new();
        for p in products {
            match p
                .get("spu_id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                Some(id) => {
                    seen.insert(id.to_string(), (content_hash(p), p));
                }
                None => {
                    tracing::warn!(platform, "a listed product has no spu_id; skipped");
                    out.skipped += 1;
                }
            }
        }
        if seen.is_empty() {
            return Ok(out);
        }
        let ids: Vec<String> = seen.keys().cloned().collect();
        let store = self.engine.store();
        let known = store.product_hashes(platform, &ids).await?;
        let now = OffsetDateTime::now_utc();
        let at = rfc3339(now);
        let targets = self.subscribers();
        let mut hashes = Vec::new();
        let mut events = Vec::new();
        for (spu_id, (hash, product)) in &seen {
            // Each target is sent what it has not had in this version.
            let due: Vec<&TargetSettings> = targets
                .iter()
                .filter(|t| known.get(&(t.name.clone(), spu_id.clone())) != Some(hash))
                .copied()
                .collect();
            if due.is_empty() {
                out.unchanged += 1;
                continue;
            }
            out.sent += 1;
            let id = uuid::Uuid::new_v4().to_string();
            let key = idempotency_key(platform, spu_id, hash);
            let envelope = json!({
                "id": id,
                "type": UPSERTED,
                "platform": platform,
                "occurred_at": at,
                "received_at": at,
                "data": {
                    "spu_id": spu_id,
                    "product": product,
                    "content_hash": hash,
                    "sync_id": sync_id,
                },
                "idempotency_key": key,
            })
            .to_string();
            for t in due {
                events.push(NewEvent {
                    event_id: format!("{id}/{}", t.name),
                    target: t.name.clone(),
                    event_type: UPSERTED.into(),
                    payload: envelope.clone(),
                    idempotency_key: key.clone(),
                    max_attempts: i64::from(t.max_attempts),
                });
                hashes.push((t.name.clone(), spu_id.clone(), hash.clone()));
            }
        }
        if !hashes.is_empty() {
            store
                .product_upserts(platform, &hashes, &events, now_ms())
                .await?;
            if let Some(n) = &self.notify {
                n.notify_one();
            }
        }
        Ok(out)
    }

    /// Fetches one product (internal id) with `product.get` and upserts it (sent only when it
    /// changed).
    pub async fn refresh(&self, platform: &str, spu_id: &str) -> Result<Upserted, SyncError> {
        let plan = self.platform(platform, "product.get")?;
        let answer = self
            .engine
            .call(&plan, "product.get", &json!({ "spu_id": spu_id }), false)
            .await;
        let product = match answer {
            Ok(CallOutcome::Output(out)) => out.get("product").cloned().unwrap_or(Value::Null),
            Ok(CallOutcome::DryRun(_)) => Value::Null,
            Err(p) => {
                return Err(SyncError::Platform {
                    platform: platform.to_string(),
                    reason: p.detail,
                });
            }
        };
        if !product.is_object() {
            return Err(SyncError::Platform {
                platform: platform.to_string(),
                reason: format!("product.get of '{spu_id}' answered no product"),
            });
        }
        self.upsert(platform, std::slice::from_ref(&product), "callback")
            .await
    }

    /// Runs the schedules of `entrepot.yaml` until `shutdown` resolves: each platform is
    /// synced when `every` has passed since its last sync ended (or failed), fully when
    /// `full_every` has passed since its last full one. Across instances the lease keeps it
    /// to one sync at a time.
    pub async fn run_schedules(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        if self.settings.schedules.is_empty() {
            return;
        }
        let tick = self
            .settings
            .schedules
            .iter()
            .map(|s| s.every / 10)
            .min()
            .unwrap_or(Duration::from_secs(60))
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::pin!(shutdown);
        let mut running: std::collections::HashMap<String, tokio::task::JoinHandle<()>> =
            std::collections::HashMap::new();
        loop {
            running.retain(|_, h| !h.is_finished());
            for schedule in &self.settings.schedules {
                if running.contains_key(&schedule.platform) {
                    continue;
                }
                let due = match self.status(&schedule.platform).await {
                    Ok(state) => due(state.as_ref(), schedule, now_ms()),
                    Err(e) => {
                        tracing::warn!(platform = %schedule.platform, "cannot read the sync state: {e}");
                        None
                    }
                };
                let Some(full) = due else { continue };
                let me = self.clone();
                let platform = schedule.platform.clone();
                running.insert(
                    platform.clone(),
                    tokio::spawn(async move {
                        match me.sync(&platform, full, &|_| {}).await {
                            Ok(_) | Err(SyncError::Busy { .. }) => {}
                            Err(e) => tracing::warn!(platform, "scheduled product sync: {e}"),
                        }
                    }),
                );
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(tick) => {}
            }
        }
        self.stop();
        for (_, h) in running {
            let _ = h.await;
        }
    }
}

/// The internal target through which callbacks reach the sync: present when some target
/// receives `product.upserted`. Add it to the targets callbacks and pollers use, and register
/// the [`Syncer`] as the dispatcher's consumer of the same name.
pub fn consumer_target(targets: &[TargetSettings]) -> Option<TargetSettings> {
    targets
        .iter()
        .any(|t| t.events.iter().any(|e| e == UPSERTED))
        .then(|| TargetSettings {
            name: CONSUMER.into(),
            url: "internal:product-sync".into(),
            events: TRIGGERS.iter().map(ToString::to_string).collect(),
            headers: Vec::new(),
            max_attempts: 10,
            credentials: Vec::new(),
            sign: None,
            concurrency: 4,
        })
}

/// Whether a scheduled sync is due, and whether it is full; `None` when not due.
pub fn due(
    state: Option<&PlatformSync>,
    schedule: &crate::compile::gateway::SyncScheduleSettings,
    now: i64,
) -> Option<bool> {
    let Some(state) = state else {
        return Some(true);
    };
    if state.lease.as_ref().is_some_and(|l| l.until_ms > now) {
        return None;
    }
    let full = match (schedule.full_every, state.last_full_ms) {
        (_, None) => true,
        (Some(every), Some(last)) => now.saturating_sub(last) >= millis(every),
        (None, Some(_)) => false,
    };
    let unfinished = state.run.as_ref().is_some_and(|r| r.status != Status::Done);
    let last = state
        .run
        .as_ref()
        .map(|r| r.updated_ms)
        .into_iter()
        .chain(state.last_done_ms)
        .max();
    let waited = last.is_none_or(|l| now.saturating_sub(l) >= millis(schedule.every));
    // An interrupted run is resumed at once; a failed one after `every`.
    let resume = state
        .run
        .as_ref()
        .is_some_and(|r| r.status == Status::Interrupted);
    (waited || resume || (unfinished && last.is_none())).then_some(full)
}

/// One line of progress for people: a bar when the total is known, pages, items, rate,
/// errors and the time left (`ETA`) when the total is known.
pub fn progress_line(platform: &str, run: &Run, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    #[allow(clippy::cast_precision_loss)]
    let rate = run.items as f64 / secs;
    let mode = match run.mode {
        Mode::Full => "full",
        Mode::Incremental => "incremental",
    };
    let mut line = format!("{platform} {mode} ");
    match run.total.filter(|t| *t > 0) {
        Some(total) => {
            const WIDTH: u64 = 24;
            let done = (run.items.min(total) * WIDTH) / total;
            let bar: String = (0..WIDTH)
                .map(|i| if i < done { '#' } else { '-' })
                .collect();
            line.push_str(&format!(
                "[{bar}] {} pages, {}/{total} items",
                run.pages, run.items
            ));
        }
        None => line.push_str(&format!("{} pages, {} items", run.pages, run.items)),
    }
    line.push_str(&format!(", {rate:.0} items/s, {} errors", run.errors));
    if let Some(total) = run.total
        && rate > 0.0
        && run.status == Status::Running
    {
        #[allow(clippy::cast_precision_loss)]
        let left = total.saturating_sub(run.items) as f64 / rate;
        line.push_str(&format!(", ETA {left:.0}s"));
    }
    line
}

/// The summary printed when a sync ends.
pub fn summary(platform: &str, run: &Run) -> String {
    let (status, mode) = (run.status.as_str(), run.mode.as_str());
    let mut text = format!(
        "sync {} of {platform} ({mode}): {status}; {} pages, {} products read, {} sent to the product center, {} unchanged, {} errors",
        run.id, run.pages, run.items, run.sent, run.unchanged, run.errors
    );
    if run.resumed > 0 {
        text.push_str(&format!(" (resumed {} times)", run.resumed));
    }
    if let Some(e) = &run.last_error
        && run.status != Status::Done
    {
        text.push_str(&format!("; last error: {e}"));
    }
    text
}

/// Adds a run to a history, newest first, at most [`HISTORY`] long.
fn remember(history: &mut Vec<Run>, run: Run) {
    history.retain(|r| r.id != run.id);
    history.insert(0, run);
    history.truncate(HISTORY);
}

/// One page of `product.list`, checked.
struct Page {
    items: Vec<Value>,
    next: Option<String>,
    total: Option<u64>,
    /// The end of the time window this page belongs to, on a windowed listing.
    window_end: Option<OffsetDateTime>,
}

impl Page {
    fn of(out: Value) -> Result<Page, String> {
        let Value::Object(mut out) = out else {
            return Err("product.list answered something other than an object".into());
        };
        let items = match out.remove("items") {
            Some(Value::Array(a)) => a,
            _ => return Err("product.list answered no `items` list".into()),
        };
        let next = match out.remove("next_cursor") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                return Err(format!(
                    "product.list answered a next_cursor that is not text: {other}"
                ));
            }
        };
        if next.as_ref().is_some_and(|n| n.len() > 4096) {
            return Err("product.list answered a next_cursor longer than 4096 characters".into());
        }
        let total = out.get("total").and_then(Value::as_u64);
        Ok(Page {
            items,
            next,
            total,
            window_end: None,
        })
    }
}

impl crate::dispatch::Consumer for Syncer {
    fn consume<'a>(
        &'a self,
        row: &'a OutboxRow,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let envelope: Value = serde_json::from_str(&row.payload)
                .map_err(|e| format!("the event is not JSON: {e}"))?;
            let platform = envelope
                .get("platform")
                .and_then(Value::as_str)
                .ok_or("the event names no platform")?;
            let spu_id = envelope
                .pointer("/data/spu_id")
                .and_then(Value::as_str)
                .ok_or("the event names no product (data.spu_id)")?;
            match self.refresh(platform, spu_id).await {
                Ok(u) => {
                    tracing::info!(
                        platform,
                        spu_id,
                        sent = u.sent,
                        "product refreshed after a callback"
                    );
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::gateway::SyncScheduleSettings;

    #[test]
    fn content_hash_ignores_key_order() {
        let a = json!({"spu_id": "s1", "title": "T", "skus": [{"sku_id": "k", "available": 1}]});
        let b = json!({"title": "T", "skus": [{"available": 1, "sku_id": "k"}], "spu_id": "s1"});
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_ne!(
            content_hash(&a),
            content_hash(&json!({"spu_id": "s1", "title": "U"}))
        );
        assert_eq!(content_hash(&a).len(), 64);
    }

    #[test]
    fn long_ids_keep_the_key_short() {
        let key = idempotency_key("p", &"x".repeat(300), &"0".repeat(64));
        assert!(key.len() <= 256, "{key}");
        assert_eq!(idempotency_key("p", "s1", "h"), "p:s1:h");
    }

    #[test]
    fn pages_are_checked() {
        let p = Page::of(json!({"items": [], "next_cursor": 3, "total": 7})).unwrap();
        assert_eq!(p.next.as_deref(), Some("3"));
        assert_eq!(p.total, Some(7));
        assert!(
            Page::of(json!({"items": [], "next_cursor": null}))
                .unwrap()
                .next
                .is_none()
        );
        assert!(Page::of(json!({"next_cursor": null})).is_err());
        assert!(Page::of(json!({"items": [], "next_cursor": {"a": 1}})).is_err());
        assert!(Page::of(json!([])).is_err());
    }

    #[test]
    fn schedules_fall_due() {
        let s = SyncScheduleSettings {
            platform: "p".into(),
            every: Duration::from_secs(60),
            full_every: Some(Duration::from_secs(3600)),
        };
        assert_eq!(due(None, &s, 0), Some(true));
        let mut state = PlatformSync {
            last_full_ms: Some(1_000),
            last_done_ms: Some(1_000),
            ..Default::default()
        };
        assert_eq!(due(Some(&state), &s, 30_000), None);
        assert_eq!(due(Some(&state), &s, 61_000), Some(false));
        assert_eq!(due(Some(&state), &s, 3_601_000), Some(true));
        state.lease = Some(Lease {
            holder: "x".into(),
            until_ms: 100_000,
        });
        assert_eq!(due(Some(&state), &s, 61_000), None);
    }
}
