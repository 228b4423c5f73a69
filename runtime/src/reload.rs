//! Hot reload, per platform: compile every platform file, and swap in one step a plan where
//! each valid file's platform is replaced, each invalid file's platform keeps its last good
//! plan (its problems are reported), added files add platforms and deleted files remove them.
//! A request holds the snapshot it started with, so a swap never changes a call in flight.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use sha2::Digest;
use time::OffsetDateTime;

use crate::compile::{self, platform_files};
use crate::config::{self, EnvLookup};
use crate::diagnostics::Diagnostic;
use crate::plan::{Plan, PlatformPlan};

/// What one platform file last did.
#[derive(Debug, Clone, Serialize)]
pub struct FileStatus {
    /// The file.
    pub file: PathBuf,
    /// The platform it defines (as last loaded successfully).
    pub platform: Option<String>,
    /// SHA-256 of the content that is serving.
    pub version: Option<String>,
    /// When that content was loaded (RFC 3339).
    pub loaded_at: Option<String>,
    /// Problems of the file's current content; empty when it is the one serving.
    pub errors: Vec<Diagnostic>,
}

/// The outcome of one reload.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// `ok` when every file compiled, else `error`.
    pub result: &'static str,
    /// Platforms added, changed and removed.
    pub added: Vec<String>,
    /// Platforms whose plan changed.
    pub changed: Vec<String>,
    /// Platforms removed.
    pub removed: Vec<String>,
    /// Files read and compiled (files whose content did not change since they last compiled
    /// are not compiled again).
    pub compiled: usize,
    /// How long the reload took, in milliseconds.
    pub duration_ms: u64,
    /// Every problem found.
    pub errors: Vec<Diagnostic>,
}

#[derive(Default)]
struct State {
    files: HashMap<PathBuf, FileStatus>,
    totals: HashMap<&'static str, u64>,
}

/// Reloads the platforms of one directory into a shared plan.
pub struct Reloader {
    dir: PathBuf,
    plan: Arc<ArcSwap<Plan>>,
    env: fn(&str) -> Option<String>,
    state: Mutex<State>,
    /// Serialises reloads (watcher, admin call and SIGHUP may coincide).
    running: tokio::sync::Mutex<()>,
    /// Counts finished reloads, for anyone waiting for one.
    pub done: tokio::sync::watch::Sender<u64>,
    /// The gateway file and the settings it had at start, which cannot change while running.
    gateway: Option<(PathBuf, std::net::SocketAddr, String)>,
    /// The engine whose credentials are refreshed on every reload (pushed ones from the store,
    /// and the credentials file when there is one).
    credentials: Option<(Option<PathBuf>, Arc<crate::engine::Engine>)>,
}

fn hash(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// A platform file's compiled plan with the hash of its text, or its problems.
type FileResult = Result<(Arc<PlatformPlan>, String), Vec<Diagnostic>>;

/// Reads every file, and parses and compiles those whose content changed since they last compiled
/// without problems (in parallel, off the async threads); unchanged files keep the plan that
/// serves. Returns the results in file order, and how many files were compiled.
async fn prepare(
    files: Vec<PathBuf>,
    previous: &HashMap<PathBuf, FileStatus>,
    old: &Plan,
    env: fn(&str) -> Option<String>,
) -> (Vec<(PathBuf, FileResult)>, usize) {
    let mut results: Vec<(PathBuf, Option<FileResult>)> = Vec::with_capacity(files.len());
    let mut to_compile = Vec::new();
    for file in files {
        // Only the text is read here: parsing (most of the cost of an unchanged file) is left
        // to the files that changed.
        match config::source::read_text(&file) {
            Err(d) => results.push((file, Some(Err(vec![d])))),
            Ok(text) => {
                let text_hash = hash(&text);
                let serving = previous
                    .get(&file)
                    .filter(|b| b.errors.is_empty() && b.version.as_deref() == Some(&text_hash))
                    .and_then(|b| b.platform.as_ref())
                    .and_then(|name| old.platforms.get(name));
                match serving {
                    Some(plan) => results.push((file, Some(Ok((plan.clone(), text_hash))))),
                    None => {
                        to_compile.push((results.len(), file.clone(), text, text_hash));
                        results.push((file, None));
                    }
                }
            }
        }
    }
    let unreadable = results
        .iter()
        .filter(|(_, r)| matches!(r, Some(Err(_))))
        .count();
    let attempted = to_compile.len() + unreadable;
    let compiled = tokio::task::spawn_blocking(move || compile_all(to_compile, env))
        .await
        .unwrap_or_default();
    for (i, r) in compiled {
        if let Some(slot) = results.get_mut(i) {
            slot.1 = Some(r);
        }
    }
    let out = results
        .into_iter()
        .map(|(file, r)| {
            let r = r.unwrap_or_else(|| {
                Err(vec![Diagnostic::error(
                    crate::diagnostics::Code::Io,
                    &file,
                    Default::default(),
                    String::new(),
                    "internal error: the file's compilation did not finish".into(),
                )])
            });
            (file, r)
        })
        .collect();
    (out, attempted)
}

/// Compiles documents on as many threads as the machine has cores.
fn compile_all(
    docs: Vec<(usize, PathBuf, String, String)>,
    env: fn(&str) -> Option<String>,
) -> Vec<(usize, FileResult)> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(docs.len().max(1));
    let one = |(i, file, text, text_hash): (usize, PathBuf, String, String)| {
        let env: EnvLookup<'_> = &env;
        let r = config::source::parse(&file, text)
            .map_err(|d| vec![d])
            .and_then(|doc| compile::compile_platform(doc, env))
            .map(|(p, _)| (Arc::new(p), text_hash));
        (i, r)
    };
    if threads <= 1 {
        return docs.into_iter().map(one).collect();
    }
    let mut shares: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    for (n, d) in docs.into_iter().enumerate() {
        if let Some(share) = shares.get_mut(n % threads) {
            share.push(d);
        }
    }
    std::thread::scope(|scope| {
        let running: Vec<_> = shares
            .into_iter()
            .map(|share| scope.spawn(move || share.into_iter().map(one).collect::<Vec<_>>()))
            .collect();
        running
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

impl Reloader {
    /// A reloader for `dir` serving into `plan`.
    pub fn new(dir: PathBuf, plan: Arc<ArcSwap<Plan>>, env: fn(&str) -> Option<String>) -> Self {
        Reloader {
            dir,
            plan,
            env,
            state: Mutex::default(),
            running: tokio::sync::Mutex::new(()),
            done: tokio::sync::watch::channel(0).0,
            gateway: None,
            credentials: None,
        }
    }

    /// Also re-reads the gateway file on every reload and refuses, with a clear message,
    /// changes of the settings that cannot change while running (listen address, store URL).
    pub fn with_gateway_file(
        mut self,
        file: PathBuf,
        listen: std::net::SocketAddr,
        store_url: String,
    ) -> Self {
        self.gateway = Some((file, listen, store_url));
        self
    }

    fn gateway_problems(&self) -> Vec<Diagnostic> {
        let Some((file, listen, store_url)) = &self.gateway else {
            return Vec::new();
        };
        if !file.exists() {
            return Vec::new();
        }
        let env: EnvLookup<'_> = &self.env;
        match crate::compile::gateway::load_gateway(file, true, env) {
            Err(problems) => problems,
            Ok(g) => {
                let mut out = Vec::new();
                let refuse = |what: &str, key: &str| {
                    Diagnostic::error(
                        crate::diagnostics::Code::Gateway,
                        file,
                        Default::default(),
                        key.to_string(),
                        format!(
                            "{what} cannot change while the gateway runs; the running value stays"
                        ),
                    )
                    .with_hint("restart the gateway to apply it")
                };
                if g.listen != *listen {
                    out.push(refuse("the listen address", "listen"));
                }
                if g.store_url != *store_url {
                    out.push(refuse("the store URL", "store.url"));
                }
                out
            }
        }
    }

    /// On every reload, also re-reads the credentials pushed through other instances and, when
    /// given, the credentials file, and hands them to `engine`. A file that cannot be read
    /// keeps the previous values (the problem is reported, without any of its content).
    pub fn with_engine(
        mut self,
        engine: Arc<crate::engine::Engine>,
        credentials_file: Option<PathBuf>,
    ) -> Self {
        self.credentials = Some((credentials_file, engine));
        self
    }

    async fn reload_credentials(&self) -> Vec<Diagnostic> {
        let Some((file, engine)) = &self.credentials else {
            return Vec::new();
        };
        // Pushes that reached another instance sharing the store.
        if let Err(e) = engine.load_pushed().await {
            tracing::warn!("cannot re-read the pushed credentials: {e}");
        }
        let Some(file) = file else { return Vec::new() };
        match crate::credentials::read_file(file) {
            Ok(sets) => {
                engine.set_file_credentials(sets);
                Vec::new()
            }
            Err(message) => vec![
                Diagnostic::error(
                    crate::diagnostics::Code::Io,
                    file,
                    Default::default(),
                    String::new(),
                    message,
                )
                .with_hint("the previous credentials stay in use until the file is fixed"),
            ],
        }
    }

    /// The shared plan.
    pub fn plan(&self) -> &Arc<ArcSwap<Plan>> {
        &self.plan
    }

    /// Compiles the directory and swaps the new plan in.
    pub async fn reload(&self) -> ReloadReport {
        let _one_at_a_time = self.running.lock().await;
        let started = std::time::Instant::now();
        let old = self.plan.load_full();
        let files = match platform_files(std::slice::from_ref(&self.dir)) {
            Ok(f) => f,
            Err(d) => {
                // The directory itself is unreadable: keep everything serving.
                return self.finish(
                    started,
                    ReloadReport {
                        result: "error",
                        added: vec![],
                        changed: vec![],
                        removed: vec![],
                        compiled: 0,
                        duration_ms: 0,
                        errors: vec![d],
                    },
                );
            }
        };
        let previous: HashMap<PathBuf, FileStatus> = self
            .state
            .lock()
            .map(|s| s.files.clone())
            .unwrap_or_default();
        let mut next = Plan::default();
        let mut statuses = HashMap::new();
        let mut errors = Vec::new();
        let mut callback_paths: HashMap<String, String> = HashMap::new();
        let now = OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let (prepared, compiled_count) = prepare(files, &previous, &old, self.env).await;
        for (file, compiled) in prepared {
            let before = previous.get(&file);
            let keep_last_good =
                |next: &mut Plan, status: &mut FileStatus, paths: &mut HashMap<String, String>| {
                    if let Some(name) = before.and_then(|b| b.platform.clone()) {
                        // The kept plan keeps its callback routes too, so no other file takes them.
                        let clash = old.platforms.get(&name).is_some_and(|p| {
                            p.callbacks.iter().any(|c| paths.contains_key(&c.path))
                        });
                        if let Some(p) = old.platforms.get(&name)
                            && !next.platforms.contains_key(&name)
                            && !clash
                        {
                            for c in &p.callbacks {
                                paths.insert(c.path.clone(), name.clone());
                            }
                            next.platforms.insert(name.clone(), p.clone());
                        }
                        status.platform = Some(name);
                        status.version = before.and_then(|b| b.version.clone());
                        status.loaded_at = before.and_then(|b| b.loaded_at.clone());
                    }
                };
            let mut status = FileStatus {
                file: file.clone(),
                platform: None,
                version: None,
                loaded_at: None,
                errors: Vec::new(),
            };
            match compiled {
                Ok((p, text_hash)) => {
                    let clash = if next.platforms.contains_key(&p.name) {
                        Some(format!(
                            "platform '{}' is already defined by another file",
                            p.name
                        ))
                    } else {
                        p.callbacks.iter().find_map(|c| {
                            callback_paths.get(&c.path).map(|owner| {
                                format!(
                                    "callback path '{}' is already used by platform '{owner}'",
                                    c.path
                                )
                            })
                        })
                    };
                    if let Some(message) = clash {
                        let d = Diagnostic::error(
                            crate::diagnostics::Code::DuplicatePlatform,
                            &file,
                            Default::default(),
                            String::new(),
                            message,
                        );
                        status.errors.push(d.clone());
                        errors.push(d);
                        keep_last_good(&mut next, &mut status, &mut callback_paths);
                    } else {
                        for c in &p.callbacks {
                            callback_paths.insert(c.path.clone(), p.name.clone());
                        }
                        // An unchanged file keeps its plan object (and its loaded_at).
                        let unchanged = before.is_some_and(|b| {
                            b.version.as_deref() == Some(text_hash.as_str()) && b.errors.is_empty()
                        });
                        let plan = p;
                        status.platform = Some(plan.name.clone());
                        status.version = Some(text_hash);
                        status.loaded_at = if unchanged {
                            before.and_then(|b| b.loaded_at.clone())
                        } else {
                            Some(now.clone())
                        };
                        next.platforms.insert(plan.name.clone(), plan);
                    }
                }
                Err(mut problems) => {
                    status.errors.clone_from(&problems);
                    errors.append(&mut problems);
                    keep_last_good(&mut next, &mut status, &mut callback_paths);
                }
            }
            statuses.insert(file, status);
        }
        let added: Vec<String> = next
            .platforms
            .keys()
            .filter(|k| !old.platforms.contains_key(*k))
            .cloned()
            .collect();
        let removed: Vec<String> = old
            .platforms
            .keys()
            .filter(|k| !next.platforms.contains_key(*k))
            .cloned()
            .collect();
        let changed: Vec<String> = next
            .platforms
            .iter()
            .filter(|(k, v)| old.platforms.get(*k).is_some_and(|o| !Arc::ptr_eq(o, v)))
            .map(|(k, _)| k.clone())
            .collect();
        self.plan.store(Arc::new(next));
        if let Ok(mut s) = self.state.lock() {
            s.files = statuses;
        }
        errors.extend(self.gateway_problems());
        errors.extend(self.reload_credentials().await);
        let result = if errors.is_empty() { "ok" } else { "error" };
        self.finish(
            started,
            ReloadReport {
                result,
                added,
                changed,
                removed,
                compiled: compiled_count,
                duration_ms: 0,
                errors,
            },
        )
    }

    fn finish(&self, started: std::time::Instant, mut report: ReloadReport) -> ReloadReport {
        report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Ok(mut s) = self.state.lock() {
            *s.totals.entry(report.result).or_default() += 1;
        }
        if report.errors.is_empty() {
            tracing::info!(added = ?report.added, changed = ?report.changed, removed = ?report.removed, compiled = report.compiled, duration_ms = report.duration_ms, "platforms reloaded");
        } else {
            for d in &report.errors {
                tracing::error!("{d}");
            }
            tracing::warn!(
                added = ?report.added,
                changed = ?report.changed,
                removed = ?report.removed,
                compiled = report.compiled,
                duration_ms = report.duration_ms,
                problems = report.errors.len(),
                "platforms reloaded with problems; invalid files keep their last good plan"
            );
        }
        self.done.send_modify(|n| *n += 1);
        report
    }

    /// Per-file status, sorted by file.
    pub fn files(&self) -> Vec<FileStatus> {
        let mut files: Vec<FileStatus> = self
            .state
            .lock()
            .map(|s| s.files.values().cloned().collect())
            .unwrap_or_default();
        files.sort_by(|a, b| a.file.cmp(&b.file));
        files
    }

    /// Reloads so far, by result.
    pub fn totals(&self) -> Vec<(&'static str, u64)> {
        let mut t: Vec<(&'static str, u64)> = self
            .state
            .lock()
            .map(|s| s.totals.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default();
        t.sort();
        t
    }

    /// Watches the directory (and `extra` files' directories) and reloads after each burst of
    /// relevant changes has been quiet for `debounce`. With `poll`, the file system is polled
    /// at that interval instead (for file systems without change events). Runs until
    /// `shutdown`.
    ///
    /// Only changes that can alter what a reload reads count (see [`WatchFilter`]): opening or
    /// reading a file (as every reload does) and writing other files there (a log beside
    /// `entrepot.yaml`) do not start a reload.
    ///
    /// The watch is registered before this returns, so no change made afterwards is missed;
    /// the returned future does the reloading.
    pub fn watch(
        self: Arc<Self>,
        extra: Vec<PathBuf>,
        debounce: Duration,
        poll: Option<Duration>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static, String> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let filter = WatchFilter::new(&self.dir, &extra);
        let dirs = filter.dirs();
        let handler = move |event: notify::Result<notify::Event>| {
            if event.as_ref().is_ok_and(|e| filter.relevant(e)) {
                let _ = tx.send(());
            }
        };
        // Directories, not files: editors that save by rename and ConfigMap symlink swaps
        // replace the file, which a watch on the file itself would lose.
        let mut watcher: Box<dyn notify::Watcher + Send> = match poll {
            Some(interval) => Box::new(
                notify::PollWatcher::new(
                    handler,
                    notify::Config::default().with_poll_interval(interval),
                )
                .map_err(|e| format!("cannot poll the platforms directory: {e}"))?,
            ),
            None => Box::new(
                notify::recommended_watcher(handler)
                    .map_err(|e| format!("cannot watch the platforms directory: {e}"))?,
            ),
        };
        for d in &dirs {
            watcher
                .watch(d, notify::RecursiveMode::NonRecursive)
                .map_err(|e| format!("cannot watch {}: {e}", d.display()))?;
        }
        Ok(async move {
            // The watcher lives as long as the loop.
            let _watcher = watcher;
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    () = &mut shutdown => return,
                    got = rx.recv() => {
                        if got.is_none() {
                            return;
                        }
                        // Let the burst settle: every further change restarts the quiet period.
                        while let Ok(Some(())) = tokio::time::timeout(debounce, rx.recv()).await {}
                        self.reload().await;
                    }
                }
            }
        })
    }
}

/// Which file system events can change what a reload reads.
///
/// The watch is on directories (editors that save by writing a new file and renaming it over
/// the old one, and ConfigMap symlink swaps, replace the file, which a watch on the file itself
/// would lose), so the events are filtered by file name:
/// - in the platforms directory, `*.yaml` and `*.yml` files;
/// - in the directory of each extra file (`entrepot.yaml`, the credentials file), that file;
/// - in every watched directory, `..data`, the symlink a Kubernetes ConfigMap volume swaps to
///   publish new contents;
/// - a watched directory itself being removed or renamed.
///
/// Only creations, content and name changes and removals count: opening, reading and closing
/// a file (every reload does that) and access-time updates never start a reload.
#[derive(Debug, Clone)]
pub struct WatchFilter {
    dirs: Vec<WatchedDir>,
}

#[derive(Debug, Clone)]
struct WatchedDir {
    /// As given (events name paths under it).
    path: PathBuf,
    /// Canonical form, when it exists, for events that name it differently.
    canonical: Option<PathBuf>,
    /// Every `*.yaml` / `*.yml` file counts (the platforms directory).
    any_yaml: bool,
    /// These file names count.
    names: Vec<std::ffi::OsString>,
}

/// The name of the symlink a Kubernetes ConfigMap volume swaps on every update.
const CONFIGMAP_DATA: &str = "..data";

impl WatchFilter {
    /// The filter for a platforms directory and the extra files the gateway reads.
    pub fn new(platforms_dir: &Path, extra: &[PathBuf]) -> Self {
        let mut filter = WatchFilter { dirs: Vec::new() };
        filter.entry(platforms_dir.to_path_buf()).any_yaml = true;
        for f in extra {
            let (Some(parent), Some(name)) = (f.parent(), f.file_name()) else {
                continue;
            };
            let parent = if parent.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                parent.to_path_buf()
            };
            let dir = filter.entry(parent);
            if !dir.names.iter().any(|n| n == name) {
                dir.names.push(name.to_os_string());
            }
        }
        filter
    }

    fn entry(&mut self, path: PathBuf) -> &mut WatchedDir {
        let canonical = std::fs::canonicalize(&path).ok();
        let found = self.dirs.iter().position(|d| {
            d.path == path || (canonical.is_some() && d.canonical.as_ref() == canonical.as_ref())
        });
        let index = match found {
            Some(i) => i,
            None => {
                self.dirs.push(WatchedDir {
                    path,
                    canonical,
                    any_yaml: false,
                    names: Vec::new(),
                });
                self.dirs.len() - 1
            }
        };
        // `index` is in range: found by `position` or just pushed.
        #[allow(clippy::indexing_slicing)]
        &mut self.dirs[index]
    }

    /// The directories to watch.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }

    /// Whether `event` can change what a reload reads.
    pub fn relevant(&self, event: &notify::Event) -> bool {
        use notify::EventKind;
        use notify::event::{MetadataKind, ModifyKind};
        match event.kind {
            EventKind::Access(_)
            | EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => {
                return false;
            }
            _ => {}
        }
        // No path (e.g. the kernel's event queue overflowed and events were lost): look again.
        if event.paths.is_empty() {
            return true;
        }
        event
            .paths
            .iter()
            .any(|p| self.path_relevant(p, &event.kind))
    }

    fn path_relevant(&self, path: &Path, kind: &notify::EventKind) -> bool {
        use notify::EventKind;
        use notify::event::ModifyKind;
        // The watched directory itself, removed or renamed away.
        if matches!(
            kind,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
        ) && self.find(path).is_some()
        {
            return true;
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return false;
        };
        let Some(dir) = self.find(parent) else {
            return false;
        };
        name == CONFIGMAP_DATA
            || dir.names.iter().any(|n| n == name)
            || (dir.any_yaml
                && matches!(
                    Path::new(name).extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                ))
    }

    fn find(&self, path: &Path) -> Option<&WatchedDir> {
        let path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        self.dirs.iter().find(|d| d.path == path).or_else(|| {
            // Named another way (absolute, through a symlink): compare canonical forms. Only
            // for names that do not match as given, so the common case costs no system call.
            let canonical = std::fs::canonicalize(path).ok()?;
            self.dirs
                .iter()
                .find(|d| d.canonical.as_ref() == Some(&canonical))
        })
    }
}

/// Whether `platform` serves from `plan` (for tests and status pages).
pub fn serving<'p>(plan: &'p Plan, platform: &str) -> Option<&'p Arc<PlatformPlan>> {
    plan.platforms.get(platform)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind,
        RenameMode,
    };
    use notify::{Event, EventKind};

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn only_changes_of_the_files_read_count() {
        // `serve` started beside entrepot.yaml with `platforms_dir: platforms`.
        let filter = WatchFilter::new(
            Path::new("platforms"),
            &[
                PathBuf::from("entrepot.yaml"),
                PathBuf::from("secrets/credentials.yaml"),
            ],
        );
        assert_eq!(
            filter.dirs(),
            vec![
                PathBuf::from("platforms"),
                PathBuf::from("."),
                PathBuf::from("secrets")
            ]
        );
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let relevant = [
            event(write, "platforms/a.yaml"),
            event(write, "platforms/b.yml"),
            event(EventKind::Create(CreateKind::File), "platforms/new.yaml"),
            event(EventKind::Remove(RemoveKind::File), "platforms/a.yaml"),
            event(
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                "platforms/a.yaml",
            ),
            // What the poll watcher reports for a changed file.
            event(
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::WriteTime)),
                "platforms/a.yaml",
            ),
            event(write, "./entrepot.yaml"),
            event(write, "secrets/credentials.yaml"),
            event(
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                "secrets/..data",
            ),
            event(EventKind::Remove(RemoveKind::Folder), "platforms"),
            // Events were lost: look again.
            Event::new(EventKind::Other),
        ];
        for e in &relevant {
            assert!(filter.relevant(e), "{e:?}");
        }
        let noise = [
            event(write, "./gateway.log"),
            event(EventKind::Create(CreateKind::File), "./gateway.log"),
            event(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                "platforms/a.yaml",
            ),
            event(
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                "./entrepot.yaml",
            ),
            event(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                "platforms",
            ),
            event(
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
                "platforms/a.yaml",
            ),
            event(write, "platforms/notes.txt"),
            event(write, "platforms/.a.yaml.swp"),
            // Only the named files count beside entrepot.yaml, not every YAML file there.
            event(write, "./docker-compose.yaml"),
            event(write, "secrets/other.yaml"),
            event(write, "elsewhere/a.yaml"),
            event(EventKind::Create(CreateKind::Folder), "data"),
        ];
        for e in &noise {
            assert!(!filter.relevant(e), "{e:?}");
        }
    }
}
