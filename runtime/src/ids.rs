//! Id translation: internal (mall) ids ↔ platform ids, per platform and id kind.
//!
//! The store keeps the mappings and is the only place they are created, with its uniqueness
//! guarantee (one partner per id, per platform and kind), so several instances sharing a
//! PostgreSQL store agree. A mapping never changes once it exists and is never removed, so a
//! pair the store answered once is the answer forever: found pairs are kept in a bounded
//! in-memory cache, both directions, filled on first use. Only pairs the store returned enter
//! the cache, and an id the cache does not hold is always asked of the store — "not mapped" is
//! never cached, since another instance may map it a moment later — so the cache never answers
//! what the store would not.

use std::collections::HashMap;
use std::sync::Arc;

use quick_cache::sync::Cache;
use serde_json::Value;
use time::OffsetDateTime;

use crate::config::platform::IdPolicy;
use crate::engine::mapping::Mapped;
use crate::engine::problem::{Problem, ProblemKind};
use crate::plan::{OperationPlan, PlatformPlan};
use crate::store::{Store, StoreError};
use crate::template::text_of;

/// Mappings kept in memory per direction unless configured otherwise.
pub const DEFAULT_CACHE: usize = 100_000;

/// Id translation for every part of the gateway: the outbound engine, callbacks, pollers,
/// flows.
pub struct Ids {
    store: Store,
    /// `platform, kind, internal id` → platform id; `None` when the cache is off.
    to_platform: Option<Cache<Key, Arc<str>>>,
    /// `platform, kind, platform id` → internal id.
    to_internal: Option<Cache<Key, Arc<str>>>,
}

impl std::fmt::Debug for Ids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ids")
            .field("cached", &self.cached())
            .finish_non_exhaustive()
    }
}

/// A cache key: platform, kind and id, joined by a separator no name or id contains.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key(Box<str>);

impl Key {
    fn new(platform: &str, kind: &str, id: &str) -> Self {
        let mut s = String::with_capacity(platform.len() + kind.len() + id.len() + 2);
        s.push_str(platform);
        s.push('\u{0}');
        s.push_str(kind);
        s.push('\u{0}');
        s.push_str(id);
        Key(s.into_boxed_str())
    }
}

impl Ids {
    /// Translation over `store`, keeping up to `capacity` pairs per direction in memory
    /// (0: no cache, every look-up asks the store).
    pub fn new(store: Store, capacity: usize) -> Self {
        let cache = || (capacity > 0).then(|| Cache::new(capacity));
        Ids {
            store,
            to_platform: cache(),
            to_internal: cache(),
        }
    }

    /// The store the mappings live in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How many pairs the cache holds, both directions together.
    pub fn cached(&self) -> usize {
        self.to_platform.as_ref().map_or(0, Cache::len)
            + self.to_internal.as_ref().map_or(0, Cache::len)
    }

    /// Remembers a pair the store holds, in both directions.
    fn learn(&self, platform: &str, kind: &str, internal: &str, platform_id: &str) {
        if let (Some(fwd), Some(rev)) = (&self.to_platform, &self.to_internal) {
            fwd.insert(Key::new(platform, kind, internal), Arc::from(platform_id));
            rev.insert(Key::new(platform, kind, platform_id), Arc::from(internal));
        }
    }

    /// Splits `ids` into those the cache (`cache`) answers and those to ask the store for.
    fn split<'a>(
        cache: Option<&Cache<Key, Arc<str>>>,
        platform: &str,
        kind: &str,
        ids: &'a [String],
    ) -> (HashMap<String, String>, Vec<&'a String>) {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for id in ids {
            match cache.and_then(|c| c.get(&Key::new(platform, kind, id))) {
                Some(hit) => {
                    found.insert(id.clone(), hit.to_string());
                }
                None => missing.push(id),
            }
        }
        (found, missing)
    }

    /// Platform ids of internal ids (those without a mapping are absent).
    pub async fn to_platform(
        &self,
        platform: &str,
        kind: &str,
        internal_ids: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        let (mut found, missing) =
            Self::split(self.to_platform.as_ref(), platform, kind, internal_ids);
        if missing.is_empty() {
            return Ok(found);
        }
        let ask: Vec<String> = missing.into_iter().cloned().collect();
        for (internal, pid) in self.store.to_platform(platform, kind, &ask).await? {
            self.learn(platform, kind, &internal, &pid);
            found.insert(internal, pid);
        }
        Ok(found)
    }

    /// Internal ids of platform ids (those without a mapping are absent).
    pub async fn to_internal(
        &self,
        platform: &str,
        kind: &str,
        platform_ids: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        let (mut found, missing) =
            Self::split(self.to_internal.as_ref(), platform, kind, platform_ids);
        if missing.is_empty() {
            return Ok(found);
        }
        let ask: Vec<String> = missing.into_iter().cloned().collect();
        for (pid, internal) in self.store.to_internal(platform, kind, &ask).await? {
            self.learn(platform, kind, &internal, &pid);
            found.insert(pid, internal);
        }
        Ok(found)
    }

    /// Internal ids of platform ids, allocating an internal id in the store for each platform
    /// id seen for the first time (the store decides, so concurrent allocations agree).
    pub async fn to_internal_or_allocate(
        &self,
        platform: &str,
        kind: &str,
        platform_ids: &[String],
        now_ms: i64,
    ) -> Result<HashMap<String, String>, StoreError> {
        let (mut found, missing) =
            Self::split(self.to_internal.as_ref(), platform, kind, platform_ids);
        if missing.is_empty() {
            return Ok(found);
        }
        let ask: Vec<String> = missing.into_iter().cloned().collect();
        for (pid, internal) in self
            .store
            .to_internal_or_allocate(platform, kind, &ask, now_ms)
            .await?
        {
            self.learn(platform, kind, &internal, &pid);
            found.insert(pid, internal);
        }
        Ok(found)
    }

    /// Records `internal_id` ↔ `platform_id` in the store (see [`Store::map_put`]), and
    /// remembers the pair once the store has it.
    pub async fn record(
        &self,
        platform: &str,
        kind: &str,
        internal_id: &str,
        platform_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let known = self
            .to_platform
            .as_ref()
            .and_then(|c| c.get(&Key::new(platform, kind, internal_id)));
        if known.as_deref() == Some(platform_id) {
            return Ok(());
        }
        self.store
            .map_put(platform, kind, internal_id, platform_id, now_ms)
            .await?;
        self.learn(platform, kind, internal_id, platform_id);
        Ok(())
    }

    /// Which platforms own an internal id: `(platform, platform_id)` pairs. Always asked of
    /// the store: another platform may map the same id at any time.
    pub async fn owners(
        &self,
        kind: &str,
        internal_id: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.store.owners(kind, internal_id).await
    }

    /// The canonical input of `op` with its internal ids (at the operation's `ids` paths)
    /// replaced by the platform's ids. An id without a mapping is an `unknown-id` problem.
    pub async fn translate_input(
        &self,
        platform: &PlatformPlan,
        op: &OperationPlan,
        input: &Value,
    ) -> Result<Value, Problem> {
        let mut out = input.clone();
        if op.input_ids.is_empty() {
            return Ok(out);
        }
        let mut wanted: HashMap<&str, Vec<String>> = HashMap::new();
        for (path, kind) in &op.input_ids {
            let mut found = Vec::new();
            path.visit_mut(&mut out, &mut found);
            wanted
                .entry(kind.as_str())
                .or_default()
                .extend(found.into_iter().map(|v| text_of(v)));
        }
        let mut maps: HashMap<&str, HashMap<String, String>> = HashMap::new();
        for (kind, ids) in &wanted {
            let m = self
                .to_platform(&platform.name, kind, ids)
                .await
                .map_err(store_problem)?;
            // The platform knows these ids as the mall's own: an unmapped one is sent as is.
            let same = platform.id_policy(kind) == IdPolicy::Same;
            if let Some(missing) = ids.iter().find(|i| !same && !m.contains_key(*i)) {
                return Err(Problem::new(
                    ProblemKind::UnknownId,
                    format!(
                        "{kind} '{missing}' is not known on platform '{}' (no key mapping)",
                        platform.name
                    ),
                ));
            }
            maps.insert(kind, m);
        }
        for (path, kind) in &op.input_ids {
            let mut slots = Vec::new();
            path.visit_mut(&mut out, &mut slots);
            for slot in slots {
                if let Some(pid) = maps.get(kind.as_str()).and_then(|m| m.get(&text_of(slot))) {
                    *slot = Value::String(pid.clone());
                }
            }
        }
        Ok(out)
    }

    /// Replaces the platform ids found while mapping with internal ids, one batch per kind,
    /// following the platform's `ids` policies.
    pub async fn translate_mapped(
        &self,
        platform: &PlatformPlan,
        mapped: Mapped,
    ) -> Result<Value, Problem> {
        let mut mapped = mapped;
        let mut by_kind: HashMap<&str, Vec<String>> = HashMap::new();
        for id in &mapped.ids {
            by_kind
                .entry(id.kind.as_str())
                .or_default()
                .push(id.platform_id.clone());
        }
        let now = OffsetDateTime::now_utc().unix_timestamp() * 1000;
        let mut internal: HashMap<&str, HashMap<String, String>> = HashMap::new();
        for (kind, mut ids) in by_kind {
            ids.sort();
            ids.dedup();
            let m = match platform.id_policy(kind) {
                IdPolicy::Allocate => {
                    self.to_internal_or_allocate(&platform.name, kind, &ids, now)
                        .await
                }
                IdPolicy::Require => self.to_internal(&platform.name, kind, &ids).await,
                IdPolicy::Same => {
                    self.to_internal(&platform.name, kind, &ids)
                        .await
                        .map(|mut m| {
                            for id in &ids {
                                m.entry(id.clone()).or_insert_with(|| id.clone());
                            }
                            m
                        })
                }
            }
            .map_err(store_problem)?;
            internal.insert(kind, m);
        }
        for id in &mapped.ids {
            let found = internal
                .get(id.kind.as_str())
                .and_then(|m| m.get(&id.platform_id));
            let Some(found) = found else {
                return Err(Problem::new(
                    ProblemKind::MappingError,
                    format!(
                        "'{}' answered with {} '{}', which has no internal id (the platform's `ids` policy for '{}' is require)",
                        platform.name, id.kind, id.platform_id, id.kind
                    ),
                ));
            };
            if let Some(slot) = mapped.value.pointer_mut(&id.pointer) {
                *slot = Value::String(found.clone());
            }
        }
        Ok(mapped.value)
    }
}

/// A store failure, as a problem for the caller: the details go to the log, not to callers.
pub(crate) fn store_problem(e: StoreError) -> Problem {
    tracing::error!("{e}");
    Problem::new(
        ProblemKind::StoreUnavailable,
        "the gateway's store failed; see the gateway's log",
    )
}
