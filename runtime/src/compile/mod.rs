//! Turns configuration into a [`Plan`]: templates parsed, JSONPaths parsed, recipes checked,
//! every problem of every file collected with its location. Pure: no network, no async.

pub mod gateway;
pub mod input_shape;
mod model;
pub mod monitoring;
mod request_map;
pub mod structure;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use indexmap::IndexMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::canonical;
use crate::config::platform::{
    BodyFormat, HttpMethod, Mapping, Operation, PlatformFile, RequestSpec, ResponseSpec, ValueType,
};

/// The most decimals a currency amount may declare (`scale`), on either side of a mapping.
pub const MAX_SCALE: u32 = 18;
use crate::config::source::{DocPath, SourceDoc};
use crate::config::{self, EnvLookup};
use crate::diagnostics::{Code, Diagnostic, did_you_mean};
use crate::plan::AuthPlan;
use crate::plan::{
    AnswerPlan, BodyPlan, CallbackPlan, DiscriminatorPlan, InputPath, JsonPathExpr, JsonTemplate,
    MappingPlan, MappingSource, OperationPlan, Plan, PlatformPlan, RecordPlan, RequestPlan,
    TransportPlan,
};
use crate::template::CompiledTemplate;
use crate::timefmt::{TimeFormat, parse_offset};
use structure::Structure;

static PLATFORM_STRUCTURE: LazyLock<Result<Structure, String>> =
    LazyLock::new(|| Structure::new(crate::schema::platform_schema()));

/// Template variables available to request templates.
pub const REQUEST_ROOTS: &[&str] = &["input", "settings", "credentials", "platform", "operation"];
/// Template variables available to mapping templates.
pub const MAPPING_ROOTS: &[&str] = &["item", "doc", "settings", "platform"];
/// Roots of templates in an operation's response mapping: the mapping roots and the
/// operation's canonical input (as the caller gave it, with the mall's own ids).
pub const RESPONSE_MAPPING_ROOTS: &[&str] = &["item", "doc", "settings", "platform", "input"];
/// Template variables available to callback templates (dedupe keys).
pub const CALLBACK_ROOTS: &[&str] = &["body", "headers", "query", "settings", "platform"];
/// Variables of acknowledgement templates: a delivery's, and the platform's name of its type.
pub const ACK_ROOTS: &[&str] = &[
    "body",
    "headers",
    "query",
    "settings",
    "platform",
    "event_type",
];

/// What a callback route answers, compiled.
struct CallbackAnswers {
    ack: Option<crate::plan::AckPlan>,
    acks: IndexMap<String, crate::plan::AckPlan>,
    handshake: Option<crate::plan::HandshakePlan>,
    occurred_at: Option<MappingPlan>,
}

/// The result of compiling a set of platform files.
#[derive(Debug, Default)]
pub struct Compiled {
    /// Platforms that compiled without errors.
    pub plan: Plan,
    /// Every problem found, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    /// Whether any error was found.
    pub fn has_errors(&self) -> bool {
        !self.diagnostics.is_empty()
    }
}

/// The platform files under `paths`: files as given, directories searched (not recursively)
/// for `*.yaml` and `*.yml`, sorted by name.
pub fn platform_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Diagnostic> {
    let mut files = Vec::new();
    for p in paths {
        if !p.exists() {
            return Err(Diagnostic::error(
                Code::Io,
                p,
                Default::default(),
                String::new(),
                "no such file or directory".into(),
            )
            .with_hint("create it, or point `platforms_dir` in entrepot.yaml (or the validate arguments) at the platform files"));
        }
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|e| {
                Diagnostic::error(
                    Code::Io,
                    p,
                    Default::default(),
                    String::new(),
                    format!("cannot read the directory: {e}"),
                )
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|f| {
                    f.is_file()
                        && matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                })
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// Reads and compiles platform files, reporting every problem of every file.
pub fn compile_files(files: &[PathBuf], env: EnvLookup<'_>) -> Compiled {
    let mut docs = Vec::new();
    let mut diagnostics = Vec::new();
    for f in files {
        match config::source::read(f) {
            Ok(doc) => docs.push(doc),
            Err(d) => diagnostics.push(d),
        }
    }
    let mut out = compile_docs(docs, env);
    diagnostics.append(&mut out.diagnostics);
    out.diagnostics = diagnostics;
    out
}

/// Compiles already-read platform documents, checking them against each other too.
pub fn compile_docs(docs: Vec<SourceDoc>, env: EnvLookup<'_>) -> Compiled {
    let mut out = Compiled::default();
    let mut seen_platforms: HashMap<String, PathBuf> = HashMap::new();
    let mut seen_paths: HashMap<String, (String, PathBuf)> = HashMap::new();
    for doc in docs {
        match compile_platform(doc, env) {
            Ok((plan, doc)) => {
                let mut ok = true;
                if let Some(first) = seen_platforms.get(&plan.name) {
                    out.diagnostics.push(
                        doc.at(
                            &DocPath::root().key("platform"),
                            Code::DuplicatePlatform,
                            format!(
                                "platform '{}' is already defined in {}",
                                plan.name,
                                first.display()
                            ),
                        )
                        .with_hint(
                            "each platform is described by exactly one file; rename one of them",
                        ),
                    );
                    ok = false;
                }
                for (i, cb) in plan.callbacks.iter().enumerate() {
                    if let Some((owner, file)) = seen_paths.get(&cb.path) {
                        out.diagnostics.push(
                            doc.at(
                                &DocPath::root().key("callbacks").index(i).key("path"),
                                Code::DuplicateCallbackPath,
                                format!(
                                    "callback path '{}' is already used by platform '{owner}' ({})",
                                    cb.path,
                                    file.display()
                                ),
                            )
                            .with_hint(
                                "prefix callback paths with the platform name, like /NAME/notify",
                            ),
                        );
                        ok = false;
                    }
                }
                if ok {
                    seen_platforms.insert(plan.name.clone(), plan.file.clone());
                    for cb in &plan.callbacks {
                        seen_paths.insert(cb.path.clone(), (plan.name.clone(), plan.file.clone()));
                    }
                    out.plan.platforms.insert(plan.name.clone(), Arc::new(plan));
                }
            }
            Err(mut problems) => out.diagnostics.append(&mut problems),
        }
    }
    out
}

/// Compiles one platform document on its own (no cross-file checks).
pub fn compile_platform(
    mut doc: SourceDoc,
    env: EnvLookup<'_>,
) -> Result<(PlatformPlan, SourceDoc), Vec<Diagnostic>> {
    let mut problems = Vec::new();
    config::expand_env_in(
        &mut doc,
        &DocPath::root().key("settings"),
        env,
        &mut problems,
    );
    let structure = match &*PLATFORM_STRUCTURE {
        Ok(s) => s,
        Err(e) => {
            return Err(vec![Diagnostic::error(
                Code::InvalidValue,
                &doc.file,
                Default::default(),
                String::new(),
                format!("internal error: the platform schema does not compile: {e}"),
            )]);
        }
    };
    let structural = structure.check(&doc);
    let usable = if structural.is_empty() {
        Some(doc.value.clone())
    } else {
        // Keep checking the meaning of what is structurally sound, so one run reports all.
        structure.prune(&doc.value)
    };
    problems.extend(structural);
    let file: PlatformFile = match usable.map(serde_json::from_value::<PlatformFile>) {
        Some(Ok(f)) => f,
        Some(Err(e)) if problems.is_empty() => {
            return Err(vec![doc.at(&DocPath::root(), Code::Type, e.to_string())]);
        }
        _ => return Err(problems),
    };
    let mut cx = Cx {
        doc: &doc,
        file: &file,
        problems: Vec::new(),
        input_op: None,
        input_reads: Default::default(),
    };
    let plan = cx.platform();
    problems.append(&mut cx.problems);
    if problems.is_empty() {
        Ok((plan, doc))
    } else {
        problems.sort_by_key(|d| (d.line, d.column));
        // The platform-wide request is compiled with each operation: report its problems once.
        let mut seen = std::collections::HashSet::new();
        problems.retain(|d| seen.insert(d.to_string()));
        Err(problems)
    }
}

/// What templates in one place may refer to.
pub struct Scope<'a> {
    /// Root variable names allowed.
    pub roots: &'a [&'a str],
    /// More allowed roots (recipe step names).
    pub extra: &'a [String],
}

/// Compilation state for one file.
pub struct Cx<'a> {
    /// The document being compiled.
    pub doc: &'a SourceDoc,
    file: &'a PlatformFile,
    /// Problems found so far.
    pub problems: Vec<Diagnostic>,
    /// The canonical operation whose request is being compiled: `input` references are
    /// checked against its input schema.
    input_op: Option<String>,
    /// The top-level `input` fields read by the templates and body paths compiled since it
    /// was last taken (an operation's request: see [`Cx::windows`]).
    input_reads: std::collections::BTreeSet<String>,
}

impl<'a> Cx<'a> {
    /// A compilation context for parts of another document (the gateway file) that use the
    /// platform mechanisms, such as a target's signing recipe; `file` declares the
    /// credentials they may use.
    pub fn for_document(doc: &'a SourceDoc, file: &'a PlatformFile) -> Self {
        Cx {
            doc,
            file,
            problems: Vec::new(),
            input_op: None,
            input_reads: Default::default(),
        }
    }
}

impl Cx<'_> {
    /// The text of setting `name` (after `${env:...}` expansion), when it is a string.
    pub fn setting_text(&self, name: &str) -> Option<&str> {
        match self.file.settings.get(name) {
            Some(crate::config::platform::SettingValue::String(s)) => Some(s),
            _ => None,
        }
    }

    /// Records a problem at the value at `path`.
    pub fn error(
        &mut self,
        path: &DocPath,
        code: Code,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.problems.push(self.doc.at(path, code, message));
        let last = self.problems.len() - 1;
        #[allow(clippy::indexing_slicing)] // just pushed
        &mut self.problems[last]
    }

    /// Records a problem at the key of the entry at `path`.
    pub fn error_key(
        &mut self,
        path: &DocPath,
        code: Code,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.problems.push(self.doc.at_key(path, code, message));
        let last = self.problems.len() - 1;
        #[allow(clippy::indexing_slicing)] // just pushed
        &mut self.problems[last]
    }

    fn platform(&mut self) -> PlatformPlan {
        let f = self.file;
        let name_ok = f
            .platform
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase())
            && f.platform
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !name_ok {
            self.error(
                &DocPath::root().key("platform"),
                Code::PlatformName,
                format!("'{}' is not a valid platform identifier", f.platform),
            )
            .hint =
                Some("use lowercase letters, digits, '_' and '-', starting with a letter".into());
        }
        let settings: serde_json::Map<String, Value> = f
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(Value::Null)))
            .collect();
        let mut operations = IndexMap::new();
        for (name, op) in &f.operations {
            let path = DocPath::root().key("operations").key(name.clone());
            if !canonical::OPERATIONS.contains(&name.as_str()) {
                let hint = match did_you_mean(name, canonical::OPERATIONS.iter().copied()) {
                    Some(best) => format!("did you mean '{best}'?"),
                    None => format!("canonical operations: {}", canonical::OPERATIONS.join(", ")),
                };
                self.error_key(
                    &path,
                    Code::UnknownOperation,
                    format!("unknown canonical operation '{name}'"),
                )
                .hint = Some(hint);
                continue;
            }
            if let Some(plan) = self.operation(name, op, &path) {
                operations.insert(name.clone(), plan);
            }
        }
        let mut callbacks = Vec::new();
        for (i, cb) in f.callbacks.iter().enumerate() {
            let path = DocPath::root().key("callbacks").index(i);
            if let Some(plan) = self.callback(cb, &path, &callbacks) {
                callbacks.push(plan);
            }
        }
        PlatformPlan {
            name: f.platform.clone(),
            title: f.title.clone(),
            file: self.doc.file.clone(),
            version: hex::encode(Sha256::digest(self.doc.text.as_bytes())),
            settings,
            credentials: f.credentials.clone(),
            operations,
            callbacks,
            id_policies: f.ids.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            auth: self.auth(),
            pollers: self.pollers(),
            rotation_window: f
                .rotation_window
                .as_ref()
                .and_then(|w| self.duration(w, &DocPath::root().key("rotation_window"))),
            monitoring: monitoring::monitoring(
                self.doc,
                &f.monitoring,
                &DocPath::root().key("monitoring"),
                &mut self.problems,
            ),
        }
    }

    fn auth(&mut self) -> AuthPlan {
        use crate::config::platform::{AuthSpec, KeyLocation};
        let path = DocPath::root().key("auth");
        let scope = Scope {
            roots: &["credentials", "settings", "platform"],
            extra: &[],
        };
        let Some(spec) = self.file.auth.clone() else {
            return AuthPlan::None;
        };
        let plan = match spec {
            AuthSpec::None => Some(AuthPlan::None),
            AuthSpec::ApiKey {
                location,
                name,
                value,
            } => self
                .template(&value, &path.key("value"), &scope)
                .map(|t| match location {
                    KeyLocation::Header => AuthPlan::Header(name, t),
                    KeyLocation::Query => AuthPlan::Query(name, t),
                }),
            AuthSpec::Bearer { token } => self
                .template(&format!("Bearer {token}"), &path.key("token"), &scope)
                .map(|t| AuthPlan::Header("Authorization".into(), t)),
            AuthSpec::Basic { username, password } => {
                let u = self.template(&username, &path.key("username"), &scope);
                let p = self.template(&password, &path.key("password"), &scope);
                u.zip(p).map(|(u, p)| AuthPlan::Basic(u, p))
            }
            AuthSpec::Oauth2 {
                token_url,
                form,
                headers,
                token_path,
                expires_in_path,
                default_ttl,
                refresh_before,
                header,
                value,
            } => {
                let url = self.template(&token_url, &path.key("token_url"), &scope);
                let form = self.templates(&form, &path.key("form"), &scope);
                let headers = self.templates(&headers, &path.key("headers"), &scope);
                let tp = self.json_path(
                    token_path.as_deref().unwrap_or("$.access_token"),
                    &path.key("token_path"),
                );
                let ep = self.json_path(
                    expires_in_path.as_deref().unwrap_or("$.expires_in"),
                    &path.key("expires_in_path"),
                );
                let ttl = self.duration(
                    default_ttl.as_deref().unwrap_or("1h"),
                    &path.key("default_ttl"),
                );
                let before = self.duration(
                    refresh_before.as_deref().unwrap_or("60s"),
                    &path.key("refresh_before"),
                );
                let value = self.template(
                    value.as_deref().unwrap_or("Bearer {{token}}"),
                    &path.key("value"),
                    &Scope {
                        roots: &["token"],
                        extra: &[],
                    },
                );
                match (url, tp, ep, ttl, before, value) {
                    (
                        Some(token_url),
                        Some(token_path),
                        Some(expires_in_path),
                        Some(default_ttl),
                        Some(refresh_before),
                        Some(value),
                    ) => Some(AuthPlan::OAuth2(Box::new(crate::plan::OAuth2Plan {
                        token_url,
                        form,
                        headers,
                        token_path,
                        expires_in_path,
                        default_ttl,
                        refresh_before,
                        header: header.unwrap_or_else(|| "Authorization".into()),
                        value,
                    }))),
                    _ => None,
                }
            }
        };
        plan.unwrap_or(AuthPlan::None)
    }

    fn transport(
        &mut self,
        op_name: &str,
        op: &crate::config::platform::TransportSpec,
        path: &DocPath,
    ) -> TransportPlan {
        use crate::config::platform::TransportSpec;
        let base: &TransportSpec = &self.file.transport;
        let base_path = DocPath::root().key("transport");
        let op_path = path.key("transport");
        let dur =
            |o: &Option<String>, b: &Option<String>, key: &str, default: u64, cx: &mut Self| {
                let (text, p) = match (o, b) {
                    (Some(t), _) => (t.clone(), op_path.key(key)),
                    (None, Some(t)) => (t.clone(), base_path.key(key)),
                    (None, None) => return std::time::Duration::from_millis(default),
                };
                cx.duration(&text, &p)
                    .unwrap_or(std::time::Duration::from_millis(default))
            };
        let timeout = dur(&op.timeout, &base.timeout, "timeout", 10_000, self);
        let attempt_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let attempt_timeout = dur(
            &op.attempt_timeout,
            &base.attempt_timeout,
            "attempt_timeout",
            attempt_ms,
            self,
        )
        .min(timeout);
        let connect_timeout = dur(
            &op.connect_timeout,
            &base.connect_timeout,
            "connect_timeout",
            3_000,
            self,
        );
        let backoff = dur(&op.backoff, &base.backoff, "backoff", 200, self);
        let backoff_max = dur(
            &op.backoff_max,
            &base.backoff_max,
            "backoff_max",
            5_000,
            self,
        );
        let read_only = !matches!(op_name, "order.create" | "order.cancel");
        let qps = op.qps.or(base.qps);
        if let Some(q) = qps
            && !(q > 0.0 && q.is_finite())
        {
            self.error(
                &op_path.key("qps"),
                Code::InvalidValue,
                format!("qps must be a positive number, not {q}"),
            );
        }
        let breaker_spec = op.breaker.as_ref().or(base.breaker.as_ref());
        let breaker = match breaker_spec {
            Some(b) if b.enabled == Some(false) => None,
            other => {
                let b = other.cloned().unwrap_or_default();
                let bp = if op.breaker.is_some() {
                    op_path.key("breaker")
                } else {
                    base_path.key("breaker")
                };
                let rate = b.failure_rate.unwrap_or(0.5);
                if !(rate > 0.0 && rate <= 1.0) {
                    self.error(
                        &bp.key("failure_rate"),
                        Code::InvalidValue,
                        format!("failure_rate must be above 0 and at most 1, not {rate}"),
                    );
                }
                let window = b
                    .window
                    .as_deref()
                    .and_then(|w| self.duration(w, &bp.key("window")))
                    .unwrap_or(std::time::Duration::from_secs(30));
                let cool_down = b
                    .cool_down
                    .as_deref()
                    .and_then(|w| self.duration(w, &bp.key("cool_down")))
                    .unwrap_or(std::time::Duration::from_secs(15));
                Some(crate::plan::BreakerPlan {
                    failure_rate: rate,
                    min_calls: b.min_calls.unwrap_or(20),
                    window,
                    cool_down,
                })
            }
        };
        let max_answer = match (&op.max_answer, &base.max_answer) {
            (Some(m), _) => Some((m, op_path.key("max_answer"))),
            (None, Some(m)) => Some((m, base_path.key("max_answer"))),
            (None, None) => None,
        }
        .and_then(|(m, p)| self.answer_limit(m, &p))
        .unwrap_or(TransportPlan::DEFAULT_MAX_ANSWER);
        TransportPlan {
            max_answer,
            timeout,
            attempt_timeout,
            connect_timeout,
            retries: op.retries.or(base.retries).unwrap_or(2),
            backoff,
            backoff_max,
            retry_safe: op.retry_safe.or(base.retry_safe).unwrap_or(read_only),
            qps,
            concurrency: op.concurrency.or(base.concurrency).unwrap_or(64).max(1),
            breaker,
        }
    }

    fn operation(&mut self, name: &str, op: &Operation, path: &DocPath) -> Option<OperationPlan> {
        let before = self.problems.len();
        self.input_op = Some(name.to_string());
        self.input_reads.clear();
        let request = self.request(&self.file.request, &op.request, path);
        let request_reads = std::mem::take(&mut self.input_reads);
        let answer = self.answer(&self.file.response, op.answer.as_ref(), path);
        let output = op
            .response
            .as_ref()
            .and_then(|m| self.mapping(m, &path.key("response"), false));
        if let (Some(m), Some(node)) = (&op.response, input_shape::output_node(name)) {
            let of = format!("the canonical output of {name}");
            self.check_model_mapping(m, node, &path.key("response"), "", &of);
        }
        let mut input_ids = Vec::new();
        for (p, kind) in &op.ids {
            let ip = path.key("ids").key(p.clone());
            if self.check_kind(kind, &ip) {
                self.check_kind_declared(kind, &ip);
            }
            match InputPath::parse(p) {
                Ok(parsed) => {
                    self.check_input_ids_path(name, &parsed, &ip);
                    input_ids.push((parsed, kind.clone()));
                }
                Err(e) => {
                    self.error_key(&ip, Code::InvalidValue, e);
                }
            }
        }
        let mut record = Vec::new();
        for (i, r) in op.record.iter().enumerate() {
            let rp = path.key("record").index(i);
            if self.check_kind(&r.kind, &rp.key("kind")) {
                self.check_kind_declared(&r.kind, &rp.key("kind"));
            }
            let scope = Scope {
                roots: &["input"],
                extra: &[],
            };
            let internal = self.template(&r.internal, &rp.key("internal"), &scope);
            let platform = self.json_path(&r.platform, &rp.key("platform"));
            if let (Some(internal), Some(platform)) = (internal, platform) {
                record.push(RecordPlan {
                    kind: r.kind.clone(),
                    internal,
                    platform,
                });
            }
        }
        self.input_op = None;
        let transport = self.transport(name, &op.transport, path);
        let windows = op.windows.as_ref().and_then(|w| {
            let reads = request.is_some().then_some(&request_reads);
            self.windows(name, w, reads, &path.key("windows"))
        });
        let request = request?;
        (self.problems.len() == before).then(|| OperationPlan {
            name: name.to_string(),
            request,
            answer,
            output,
            input_ids,
            record,
            transport,
            windows,
        })
    }

    /// Compiles an operation's `windows`: only listings bounded in time take them, and their
    /// request must read both bounds the flows fill in (`reads`: the `input` fields the
    /// request reads, when it compiled).
    fn windows(
        &mut self,
        op: &str,
        w: &crate::config::platform::WindowsSpec,
        reads: Option<&std::collections::BTreeSet<String>>,
        path: &DocPath,
    ) -> Option<crate::plan::WindowsPlan> {
        let Some((lower, upper)) = crate::canonical::window_fields(op) else {
            let bounded: Vec<String> = crate::canonical::WINDOWED
                .iter()
                .map(|(o, _, _)| o.to_string())
                .collect();
            self.error_key(
                path,
                Code::InvalidValue,
                format!(
                    "{op} is not a listing bounded in time: only {} take `windows`",
                    bounded.join(" and ")
                ),
            )
            .hint = Some("remove `windows:` from this operation".into());
            return None;
        };
        let max = self.duration(&w.max, &path.key("max"));
        if max.is_some_and(|m| m.is_zero()) {
            self.error(
                &path.key("max"),
                Code::InvalidValue,
                "a window of 0 lists nothing",
            )
            .hint = Some(format!(
                "write the widest span the platform accepts between {lower} and {upper}, such as 30d"
            ));
        }
        let max = max.filter(|m| !m.is_zero());
        let unread: Vec<&str> = [lower, upper]
            .into_iter()
            .filter(|f| reads.is_some_and(|r| !r.contains(*f)))
            .collect();
        if let Some(first) = unread.first() {
            let fields = unread
                .iter()
                .map(|f| format!("input.{f}"))
                .collect::<Vec<_>>()
                .join(" and ");
            self.error(
                path,
                Code::InvalidValue,
                format!(
                    "each window is passed to {op} as input.{lower} and input.{upper}, but its request never reads {fields}: the platform would list past the window"
                ),
            )
            .hint = Some(format!(
                "map them onto the platform's bounds, such as `query: {{ {first}: \"{{{{input.{first}}}}}\" }}`"
            ));
        }
        let start = match &w.start {
            Some(_) if op != "product.list" => {
                self.error(
                    &path.key("start"),
                    Code::InvalidValue,
                    format!(
                        "{op} windows follow the caller's own {lower} and {upper}: `start` is not used"
                    ),
                )
                .hint = Some("remove `start:`; only product.list windows have one".into());
                return None;
            }
            Some(text) => match time::OffsetDateTime::parse(
                text,
                &time::format_description::well_known::Rfc3339,
            ) {
                Ok(t) if t > time::OffsetDateTime::now_utc() => {
                    self.error(
                        &path.key("start"),
                        Code::InvalidValue,
                        format!(
                            "'{text}' is in the future: a full sync walks the windows from `start` to now, so it would list nothing"
                        ),
                    )
                    .hint = Some(
                        "write the time of the oldest change the platform keeps, such as 2020-01-01T00:00:00Z"
                            .into(),
                    );
                    return None;
                }
                Ok(t) => Some(t),
                Err(e) => {
                    self.error(
                        &path.key("start"),
                        Code::InvalidValue,
                        format!("'{text}' is not an RFC 3339 time: {e}"),
                    )
                    .hint = Some("write it like 2020-01-01T00:00:00Z".into());
                    return None;
                }
            },
            None if op == "product.list" => {
                self.error(
                    path,
                    Code::MissingKey,
                    "windows of product.list need `start`: a full product sync walks the windows from there",
                )
                .hint = Some(
                    "add `start:` with the time of the oldest change the platform keeps, such as 2020-01-01T00:00:00Z"
                        .into(),
                );
                return None;
            }
            None => None,
        };
        Some(crate::plan::WindowsPlan { max: max?, start })
    }

    /// Checks the characters of an id kind; true when it is well formed.
    fn check_kind(&mut self, kind: &str, path: &DocPath) -> bool {
        let ok = !kind.is_empty()
            && kind
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            self.error(
                path,
                Code::IdKind,
                format!("'{kind}' is not a valid entity kind"),
            )
            .hint = Some("use lowercase letters, digits and '_', like spu, sku or order".into());
        }
        ok
    }

    fn request(
        &mut self,
        base: &RequestSpec,
        op: &RequestSpec,
        op_path: &DocPath,
    ) -> Option<RequestPlan> {
        let base_path = DocPath::root().key("request");
        let op_req = op_path.key("request");
        let scope = Scope {
            roots: REQUEST_ROOTS,
            extra: &[],
        };
        let url_src = match (&op.url, &base.url) {
            (Some(u), _) => Some((u, op_req.key("url"))),
            (None, Some(u)) => Some((u, base_path.key("url"))),
            (None, None) => None,
        };
        let Some((url_src, url_path)) = url_src else {
            self.error(
                &op_req,
                Code::MissingKey,
                "no request URL: neither the operation nor the platform's `request` sets `url`",
            )
            .hint = Some("add `url: \"{{settings.base_url}}/...\"` under `request:`".into());
            return None;
        };
        let url = self
            .template(url_src, &url_path, &scope)
            .and_then(|_| self.url_template(url_src, &url_path));
        let merged = |key: &str,
                      a: &IndexMap<String, String>,
                      b: &IndexMap<String, String>,
                      cx: &mut Self| {
            let mut out: IndexMap<String, (String, DocPath)> = IndexMap::new();
            for (k, v) in a {
                out.insert(k.clone(), (v.clone(), base_path.key(key).key(k.clone())));
            }
            for (k, v) in b {
                out.insert(k.clone(), (v.clone(), op_req.key(key).key(k.clone())));
            }
            out.into_iter()
                .filter_map(|(k, (v, p))| cx.template(&v, &p, &scope).map(|t| (k, t)))
                .collect::<Vec<_>>()
        };
        let query = merged("query", &base.query, &op.query, self);
        let headers = merged("headers", &base.headers, &op.headers, self);
        let form = merged("form", &base.form, &op.form, self);
        let json = match (&op.json, &base.json) {
            (Some(j), _) => Some(self.json_template(j, &op_req.key("json"), &scope)),
            (None, Some(j)) => Some(self.json_template(j, &base_path.key("json"), &scope)),
            (None, None) => None,
        };
        let xml = match (&op.xml, &base.xml) {
            (Some(x), _) => Some((x, op_req.key("xml"))),
            (None, Some(x)) => Some((x, base_path.key("xml"))),
            (None, None) => None,
        };
        let xml = match xml {
            Some((Value::Object(m), p)) if m.len() == 1 => {
                Some(self.json_template(&Value::Object(m.clone()), &p, &scope))
            }
            Some((_, p)) => {
                self.error(
                    &p,
                    Code::InvalidValue,
                    "an XML body needs exactly one top-level key: the root element",
                )
                .hint =
                    Some("write it like `xml: { request: { id: \"{{input.order_id}}\" } }`".into());
                None
            }
            None => None,
        };
        let mapped = match (&op.body, &base.body) {
            (Some(b), _) => self.body_mapping(b, &op_req.key("body")),
            (None, Some(b)) => self.body_mapping(b, &base_path.key("body")),
            (None, None) => None,
        };
        let has_mapped = op.body.is_some() || base.body.is_some();
        let bodies = usize::from(!form.is_empty())
            + usize::from(json.is_some())
            + usize::from(xml.is_some())
            + usize::from(has_mapped);
        let body = if bodies > 1 {
            self.error(&op_req, Code::Conflict, "the request has more than one body: `form`, `json`, `xml` and `body` exclude each other")
                .hint = Some("keep exactly one of them, counting the platform-wide `request` and the operation's together".into());
            BodyPlan::None
        } else if let Some(j) = json {
            BodyPlan::Json(j)
        } else if let Some(x) = xml {
            BodyPlan::Xml(x)
        } else if let Some(m) = mapped {
            BodyPlan::Mapped(m)
        } else if !form.is_empty() {
            BodyPlan::Form(form)
        } else {
            BodyPlan::None
        };
        let sign = match (&op.sign, &base.sign) {
            (Some(s), _) => crate::recipe::compile_sign(self, s, &op_req.key("sign")),
            (None, Some(s)) => crate::recipe::compile_sign(self, s, &base_path.key("sign")),
            (None, None) => None,
        };
        let places_form = sign.as_ref().is_some_and(|s| {
            s.place
                .iter()
                .any(|(t, _, _)| *t == crate::config::recipe::PlaceTarget::Form)
        });
        let json_body = match &body {
            BodyPlan::Json(_) => true,
            BodyPlan::Mapped(m) => m.xml_root.is_none(),
            _ => false,
        };
        let places_xml = op.sign.as_ref().or(base.sign.as_ref()).is_some_and(|s| {
            s.place
                .iter()
                .any(|p| p.to == crate::config::recipe::PlaceTarget::Xml)
        });
        let xml_body = match &body {
            BodyPlan::Xml(_) => true,
            BodyPlan::Mapped(m) => m.xml_root.is_some(),
            _ => false,
        };
        if places_xml && !xml_body {
            self.error(
                &op_req,
                Code::Conflict,
                "the signing recipe places an XML element but the request has no XML body",
            )
            .hint = Some(
                "give the request an `xml` body (or `body: { format: xml }`), or place the signature in a header, a query parameter or a form field".into(),
            );
        }
        if places_form && json_body {
            self.error(
                &op_req,
                Code::Conflict,
                "the signing recipe places a form field but the request has a JSON body",
            )
            .hint = Some(
                "place the signature in a header or a query parameter, or send a form body".into(),
            );
        }
        Some(RequestPlan {
            method: op.method.or(base.method).unwrap_or(HttpMethod::Post),
            url: url?,
            query,
            headers,
            body,
            sign,
            omit_empty: op.omit_empty.or(base.omit_empty).unwrap_or(false),
        })
    }

    /// The request URL as a [`crate::template::UrlTemplate`], with the places where an input
    /// could reshape the URL reported (the template itself was checked by `template`).
    fn url_template(
        &mut self,
        source: &str,
        path: &DocPath,
    ) -> Option<crate::template::UrlTemplate> {
        use crate::template::{UrlProblem, UrlTemplate};
        let (url, _, problems) = UrlTemplate::compile(source).ok()?;
        let before = self.problems.len();
        for p in problems {
            match p {
                UrlProblem::InputBeforePath(fields) => {
                    self.error(
                        path,
                        Code::UrlInput,
                        format!(
                            "{} is placed before the URL's path, where it could change the scheme or the host",
                            fields.join(", ")
                        ),
                    )
                    .hint = Some(
                        "put inputs after a literal '/' that starts the path, like `{{settings.base_url}}/orders/{{input.order_id}}`".into(),
                    );
                }
                UrlProblem::VerbatimInput(fields) => {
                    self.error(
                        path,
                        Code::UrlInput,
                        format!(
                            "{} is inserted into the URL without encoding (`raw`/`urlencode`), so an input could change the URL's path or query",
                            fields.join(", ")
                        ),
                    )
                    .hint = Some(
                        "write `{{input.x}}`: in the path a value is one encoded segment, in the query an encoded value; keep `raw` for values from settings".into(),
                    );
                }
            }
        }
        (self.problems.len() == before).then_some(url)
    }

    fn json_template(&mut self, value: &Value, path: &DocPath, scope: &Scope<'_>) -> JsonTemplate {
        match value {
            Value::String(s) => match self.template_checked(s, path, scope, true) {
                Some(t) => JsonTemplate::Text(t),
                None => JsonTemplate::Value(Value::Null),
            },
            Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.json_template(v, &path.index(i), scope))
                    .collect(),
            ),
            Value::Object(map) => JsonTemplate::Object(
                map.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            self.json_template(v, &path.key(k.clone()), scope),
                        )
                    })
                    .collect(),
            ),
            other => JsonTemplate::Value(other.clone()),
        }
    }

    fn answer(
        &mut self,
        base: &ResponseSpec,
        op: Option<&ResponseSpec>,
        op_path: &DocPath,
    ) -> AnswerPlan {
        let base_path = DocPath::root().key("response");
        let op_path = op_path.key("answer");
        let pick = |f: fn(&ResponseSpec) -> bool| match op {
            Some(o) if f(o) => (o, op_path.clone()),
            _ => (base, base_path.clone()),
        };
        let format = op
            .and_then(|o| o.format)
            .or(base.format)
            .unwrap_or(BodyFormat::Json);
        let (s_spec, s_path) = pick(|r| r.success.is_some());
        let (e_spec, e_path) = pick(|r| r.error.is_some());
        let mut plan = AnswerPlan {
            format,
            success_status: Vec::new(),
            success_path: None,
            success_values: Vec::new(),
            error_code: None,
            error_message: None,
            error_details: None,
            retryable: Vec::new(),
        };
        if let Some(s) = &s_spec.success {
            let sp = s_path.key("success");
            plan.success_status = s.status.clone();
            plan.success_path = s
                .path
                .as_ref()
                .and_then(|p| self.json_path(p, &sp.key("path")));
            plan.success_values = s
                .equals
                .iter()
                .chain(&s.one_of)
                .map(crate::template::text_of)
                .collect();
            if s.equals.is_some() && !s.one_of.is_empty() {
                self.error(&sp, Code::Conflict, "both `equals` and `one_of` are set")
                    .hint = Some("put every success value in `one_of`".into());
            }
            if s.path.is_some() && plan.success_values.is_empty() {
                self.error(
                    &sp,
                    Code::MissingKey,
                    "`path` is set but no success value is given",
                )
                .hint = Some("add `equals: VALUE` (or `one_of: [...]`)".into());
            }
            if s.path.is_none() && !plan.success_values.is_empty() {
                self.error(
                    &sp,
                    Code::MissingKey,
                    "a success value is given but no `path` to read it from",
                )
                .hint = Some("add `path: $.code` (the JSONPath of the business code)".into());
            }
        }
        if let Some(e) = &e_spec.error {
            let ep = e_path.key("error");
            plan.error_code = e
                .code
                .as_ref()
                .and_then(|p| self.json_path(p, &ep.key("code")));
            plan.error_message = e
                .message
                .as_ref()
                .and_then(|p| self.json_path(p, &ep.key("message")));
            plan.error_details = e
                .details
                .as_ref()
                .and_then(|p| self.json_path(p, &ep.key("details")));
            plan.retryable = e.retryable.clone();
        }
        plan
    }

    fn mapping(&mut self, m: &Mapping, path: &DocPath, in_item: bool) -> Option<MappingPlan> {
        let before = self.problems.len();
        let sources = [m.path.is_some(), m.value.is_some(), m.template.is_some()];
        if sources.iter().filter(|s| **s).count() > 1 {
            self.error(
                path,
                Code::Mapping,
                "a mapping takes its value from only one of `path`, `value` and `template`",
            );
        }
        if m.fields.is_none()
            && m.each.is_none()
            && !sources.iter().any(|s| *s)
            && m.default.is_none()
        {
            self.error(path, Code::Mapping, "this mapping produces nothing")
                .hint = Some("give it a `path`, `value`, `template`, `fields` or `each`".into());
        }
        if m.fields.is_some() && (m.kind.is_some() || m.map.is_some() || m.id.is_some()) {
            self.error(
                path,
                Code::Mapping,
                "a mapping with `fields` builds an object, so `type`, `map` and `id` do not apply",
            );
        }
        if let Some(kind) = &m.id
            && self.check_kind(kind, &path.key("id"))
        {
            self.check_kind_declared(kind, &path.key("id"));
        }
        let time_format = match (&m.format, &m.offset) {
            (None, None) => None,
            (f, o) => {
                let format = match f {
                    Some(f) => TimeFormat::parse(f)
                        .map_err(|e| {
                            self.error(&path.key("format"), Code::TimeFormat, e).hint = None
                        })
                        .ok(),
                    None => Some(TimeFormat::UnixSeconds),
                };
                let offset = match o {
                    Some(o) => parse_offset(o)
                        .map_err(|e| {
                            self.error(&path.key("offset"), Code::TimeFormat, e).hint = None
                        })
                        .ok(),
                    None => Some(time::UtcOffset::UTC),
                };
                format.zip(offset)
            }
        };
        let _ = in_item;
        match (m.kind, m.scale) {
            (Some(ValueType::MinorUnits), None) => {
                self.error(
                    &path.key("type"),
                    Code::Mapping,
                    "`type: minor_units` needs the currency's `scale` (its number of decimals)",
                )
                .hint = Some("add `scale: 2` for EUR, USD or CNY, `scale: 0` for JPY".into());
            }
            (Some(ValueType::MinorUnits), Some(s)) if s > MAX_SCALE => {
                self.error(
                    &path.key("scale"),
                    Code::InvalidValue,
                    format!("scale {s} is more than {MAX_SCALE} decimals"),
                )
                .hint = Some("give the currency's number of decimals, such as 2".into());
            }
            (Some(ValueType::MinorUnits), Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                self.error(
                    &path.key("scale"),
                    Code::Mapping,
                    "`scale` only applies to `type: minor_units`",
                )
                .hint = Some("add `type: minor_units`, or remove `scale`".into());
            }
        }
        let source = if let Some(p) = &m.path {
            self.json_path(p, &path.key("path"))
                .map(MappingSource::Path)
        } else if let Some(v) = &m.value {
            Some(MappingSource::Value(v.clone()))
        } else if let Some(t) = &m.template {
            let scope = Scope {
                roots: if self.input_op.is_some() {
                    RESPONSE_MAPPING_ROOTS
                } else {
                    MAPPING_ROOTS
                },
                extra: &[],
            };
            self.template(t, &path.key("template"), &scope)
                .map(MappingSource::Template)
        } else {
            Some(MappingSource::Current)
        };
        let each = m
            .each
            .as_ref()
            .and_then(|p| self.json_path(p, &path.key("each")));
        let fields = m.fields.as_ref().map(|fields| {
            fields
                .iter()
                .filter_map(|(k, v)| {
                    self.mapping(v, &path.key("fields").key(k.clone()), true)
                        .map(|p| (k.clone(), p))
                })
                .collect::<Vec<_>>()
        });
        if self.problems.len() != before {
            return None;
        }
        Some(MappingPlan {
            source: source?,
            each,
            fields,
            kind: m.kind,
            map: m.map.clone(),
            default: m.default.clone(),
            required: m.required,
            id: m.id.clone(),
            time_format,
            scale: m.scale.unwrap_or(0),
        })
    }

    fn callback(
        &mut self,
        cb: &crate::config::platform::Callback,
        path: &DocPath,
        earlier: &[CallbackPlan],
    ) -> Option<CallbackPlan> {
        let before = self.problems.len();
        let path_ok = cb.path.starts_with('/')
            && cb.path.len() > 1
            && cb
                .path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c))
            && !cb.path.contains("//")
            && !cb.path.ends_with('/');
        if !path_ok {
            self.error(&path.key("path"), Code::CallbackPath, format!("'{}' is not a valid callback path", cb.path))
                .hint = Some("write it like /platform/notify: starting with '/', letters, digits, '-', '_', '.' and single '/' separators".into());
        } else if earlier.iter().any(|e| e.path == cb.path) {
            self.error(
                &path.key("path"),
                Code::DuplicateCallbackPath,
                format!("callback path '{}' is declared twice in this file", cb.path),
            );
        }
        let (disc, events, dedupe_key) =
            self.ingest_spec(&cb.event_type, &cb.events, cb.dedupe_key.as_ref(), path);
        let verify = cb
            .verify
            .as_ref()
            .and_then(|v| crate::recipe::compile_verify(self, v, &path.key("verify")));
        let answers = self.callback_answers(cb, path);
        let limits = self.callback_limits(cb.limits.as_ref(), &path.key("limits"));
        if self.problems.len() != before {
            return None;
        }
        Some(CallbackPlan {
            limits,
            path: cb.path.clone(),
            format: cb.format.unwrap_or_default(),
            verify,
            event_type: disc,
            events,
            dedupe_key,
            ack: answers.ack?,
            acks: answers.acks,
            handshake: answers.handshake,
            occurred_at: answers.occurred_at,
        })
    }

    /// Compiles what a callback route answers (`ack`, `acks`, `handshake`) and its
    /// `occurred_at` mapping.
    fn callback_answers(
        &mut self,
        cb: &crate::config::platform::Callback,
        path: &DocPath,
    ) -> CallbackAnswers {
        let ack = self.ack(cb.ack.as_ref(), &path.key("ack"));
        let mut acks = IndexMap::new();
        for (kind, a) in &cb.acks {
            if let Some(plan) = self.ack(Some(a), &path.key("acks").key(kind.clone())) {
                acks.insert(kind.clone(), plan);
            }
        }
        let handshake = cb.handshake.as_ref().and_then(|h| {
            let hp = path.key("handshake");
            if h.path.is_some() == h.header.is_some() {
                self.error(
                    &hp,
                    Code::Conflict,
                    "the handshake needs exactly one of `path` and `header`",
                )
                .hint = Some(
                    "name where the marking value is, like `path: $.type` or `header: X-Event-Type`"
                        .into(),
                );
            }
            let value = DiscriminatorPlan {
                path: h
                    .path
                    .as_ref()
                    .and_then(|p| self.json_path(p, &hp.key("path"))),
                header: h.header.as_ref().map(|x| x.to_ascii_lowercase()),
                map: IndexMap::new(),
            };
            let ack = self.ack(Some(&h.ack), &hp.key("ack"));
            Some(crate::plan::HandshakePlan {
                value,
                equals: h.equals.clone(),
                ack: ack?,
            })
        });
        let occurred_at = self.occurred_at(cb.occurred_at.as_ref(), path);
        CallbackAnswers {
            ack,
            acks,
            handshake,
            occurred_at,
        }
    }

    /// Compiles the mapping of an event's `occurred_at` (a callback's or a poller's).
    fn occurred_at(&mut self, m: Option<&Mapping>, path: &DocPath) -> Option<MappingPlan> {
        let m = m?;
        let op = path.key("occurred_at");
        if m.each.is_some() || m.fields.is_some() || m.id.is_some() || m.map.is_some() {
            self.error(
                &op,
                Code::Mapping,
                "occurred_at reads one time, so `each`, `fields`, `id` and `map` do not apply",
            )
            .hint = Some("write it like `{ path: $.event_time }`".into());
            return None;
        }
        if m.kind
            .is_some_and(|k| k != crate::config::platform::ValueType::Time)
        {
            self.error(&op.key("type"), Code::Mapping, "occurred_at is a time")
                .hint = Some("leave `type` out (or write `type: time`)".into());
            return None;
        }
        let mut m = m.clone();
        m.kind = Some(crate::config::platform::ValueType::Time);
        self.mapping(&m, &op, false)
    }

    /// Compiles an acknowledgement (`None`: the default one).
    fn ack(
        &mut self,
        ack: Option<&crate::config::platform::Ack>,
        path: &DocPath,
    ) -> Option<crate::plan::AckPlan> {
        use crate::config::platform::AckStatus;
        let scope = Scope {
            roots: ACK_ROOTS,
            extra: &[],
        };
        let status_text = match ack.and_then(|a| a.status.as_ref()) {
            None => "200".to_string(),
            Some(AckStatus::Code(n)) => n.to_string(),
            Some(AckStatus::Template(t)) => t.clone(),
        };
        let status = self.template(&status_text, &path.key("status"), &scope);
        // A fixed status is checked now; a templated one when it is rendered.
        if let Some(text) = status.as_ref().and_then(|t| t.as_literal())
            && crate::plan::AckPlan::http_status(text).is_none()
        {
            self.error(
                &path.key("status"),
                Code::InvalidValue,
                format!("'{text}' is not an HTTP status"),
            )
            .hint = Some("use the status the platform expects, usually 200".into());
            return None;
        }
        let body = self.template(
            ack.and_then(|a| a.body.as_deref()).unwrap_or_default(),
            &path.key("body"),
            &scope,
        )?;
        Some(crate::plan::AckPlan {
            status: status?,
            body,
            content_type: ack
                .and_then(|a| a.content_type.clone())
                .unwrap_or_else(|| "application/json".into()),
        })
    }

    /// Reads `transport.max_answer`, within 1 byte to 1 GiB.
    fn answer_limit(
        &mut self,
        size: &crate::config::platform::ByteSize,
        path: &DocPath,
    ) -> Option<usize> {
        let max = TransportPlan::MAX_MAX_ANSWER;
        match size.bytes() {
            Ok(n) if (1..=max as u64).contains(&n) => usize::try_from(n).ok(),
            Ok(n) => {
                self.error(
                    path,
                    Code::InvalidValue,
                    format!("an answer limit of {n} bytes is outside 1 byte to 1GiB"),
                )
                .hint = Some("write a size like 512KiB or 16MiB (at most 1GiB)".into());
                None
            }
            Err(e) => {
                self.error(path, Code::InvalidValue, e).hint = Some(
                    "write a number of bytes, or a number and a unit: 65536, 512KiB, 16MiB".into(),
                );
                None
            }
        }
    }

    /// Resolves a callback route's limits against their defaults and bounds.
    fn callback_limits(
        &mut self,
        limits: Option<&crate::config::platform::CallbackLimits>,
        path: &DocPath,
    ) -> crate::plan::CallbackLimitsPlan {
        use crate::plan::CallbackLimitsPlan as L;
        let mut out = L::default();
        let Some(l) = limits else {
            return out;
        };
        if let Some(size) = &l.body {
            match size.bytes() {
                Ok(n) if (1..=L::MAX_BODY as u64).contains(&n) => {
                    out.body = usize::try_from(n).unwrap_or(L::MAX_BODY);
                }
                Ok(n) => {
                    self.error(
                        &path.key("body"),
                        Code::InvalidValue,
                        format!("a body limit of {n} bytes is outside 1 byte to 64MiB"),
                    )
                    .hint = Some("write a size like 256KiB or 1MiB (at most 64MiB)".into());
                }
                Err(e) => {
                    self.error(&path.key("body"), Code::InvalidValue, e).hint = Some(
                        "write a number of bytes, or a number and a unit: 4096, 512KiB, 1MiB"
                            .into(),
                    );
                }
            }
        }
        for (value, key, slot, max) in [
            (l.fields, "fields", &mut out.fields, L::MAX_FIELDS),
            (l.depth, "depth", &mut out.depth, L::MAX_DEPTH),
        ] {
            if let Some(n) = value {
                match usize::try_from(n) {
                    Ok(n) if (1..=max).contains(&n) => *slot = n,
                    _ => {
                        self.error(
                            &path.key(key),
                            Code::InvalidValue,
                            format!("{key}: {n} is outside 1 to {max}"),
                        )
                        .hint = Some(format!("write a whole number from 1 to {max}"));
                    }
                }
            }
        }
        out
    }

    /// Compiles what turns a delivery into events (shared by callbacks and pollers).
    fn ingest_spec(
        &mut self,
        event_type: &crate::config::platform::Discriminator,
        events: &IndexMap<String, Mapping>,
        dedupe_key: Option<&String>,
        path: &DocPath,
    ) -> (
        DiscriminatorPlan,
        IndexMap<String, MappingPlan>,
        Option<CompiledTemplate>,
    ) {
        let disc_path = path.key("event_type");
        let d = event_type;
        if d.path.is_some() == d.header.is_some() {
            self.error(
                &disc_path,
                Code::Conflict,
                "the event type needs exactly one of `path` and `header`",
            );
        }
        let disc = DiscriminatorPlan {
            path: d
                .path
                .as_ref()
                .and_then(|p| self.json_path(p, &disc_path.key("path"))),
            header: d.header.as_ref().map(|h| h.to_ascii_lowercase()),
            map: d.map.clone(),
        };
        for (value, event) in &d.map {
            self.check_event(event, &disc_path.key("map").key(value.clone()));
        }
        let mut mapped = IndexMap::new();
        for (event, m) in events {
            let ep = path.key("events").key(event.clone());
            if self.check_event(event, &ep) {
                if let Some(node) = input_shape::event_node(event) {
                    let of = format!("the data of event {event}");
                    self.check_model_mapping(m, node, &ep, "", &of);
                }
                if let Some(plan) = self.mapping(m, &ep, false) {
                    mapped.insert(event.clone(), plan);
                }
            }
        }
        let scope = Scope {
            roots: CALLBACK_ROOTS,
            extra: &[],
        };
        let dedupe_key = dedupe_key.and_then(|t| self.template(t, &path.key("dedupe_key"), &scope));
        (disc, mapped, dedupe_key)
    }

    fn pollers(&mut self) -> Vec<crate::plan::PollerPlan> {
        let mut out = Vec::new();
        let pollers = self.file.pollers.clone();
        for (i, p) in pollers.iter().enumerate() {
            let path = DocPath::root().key("pollers").index(i);
            if pollers.iter().take(i).any(|q| q.name == p.name) {
                self.error(
                    &path.key("name"),
                    Code::InvalidValue,
                    format!("two pollers are named '{}'", p.name),
                );
            }
            let before = self.problems.len();
            let every = self.duration(&p.every, &path.key("every"));
            let request = self.request(&self.file.request, &p.request, &path);
            let answer = self.answer(&self.file.response, p.answer.as_ref(), &path);
            let items = self.json_path(&p.items, &path.key("items"));
            let (event_type, events, dedupe_key) =
                self.ingest_spec(&p.event_type, &p.events, p.dedupe_key.as_ref(), &path);
            let occurred_at = self.occurred_at(p.occurred_at.as_ref(), &path);
            let transport = self.transport(
                "poll",
                &crate::config::platform::TransportSpec::default(),
                &path,
            );
            if self.problems.len() != before {
                continue;
            }
            if let (Some(every), Some(request), Some(items)) = (every, request, items) {
                out.push(crate::plan::PollerPlan {
                    name: p.name.clone(),
                    every,
                    op: OperationPlan {
                        name: format!("poll:{}", p.name),
                        request,
                        answer,
                        output: None,
                        input_ids: Vec::new(),
                        record: Vec::new(),
                        transport,
                        windows: None,
                    },
                    items,
                    event_type,
                    events,
                    dedupe_key,
                    occurred_at,
                });
            }
        }
        out
    }

    fn check_event(&mut self, event: &str, path: &DocPath) -> bool {
        if canonical::EVENTS.contains(&event) {
            return true;
        }
        let hint = match did_you_mean(event, canonical::EVENTS.iter().copied()) {
            Some(best) => format!("did you mean '{best}'?"),
            None => format!("canonical events: {}", canonical::EVENTS.join(", ")),
        };
        self.error(
            path,
            Code::UnknownEvent,
            format!("unknown canonical event '{event}'"),
        )
        .hint = Some(hint);
        false
    }

    /// Parses a JSONPath, recording a located problem when it does not parse.
    pub fn json_path(&mut self, source: &str, path: &DocPath) -> Option<JsonPathExpr> {
        match JsonPathExpr::parse(source) {
            Ok(p) => Some(p),
            Err(e) => {
                self.error(
                    path,
                    Code::JsonPath,
                    format!("'{source}' is not a valid JSONPath: {e}"),
                )
                .hint = Some("JSONPaths start with $, like $.data.items[*].skuId".into());
                None
            }
        }
    }

    /// Compiles a template and checks what it refers to, recording located problems.
    pub fn template(
        &mut self,
        source: &str,
        path: &DocPath,
        scope: &Scope<'_>,
    ) -> Option<CompiledTemplate> {
        self.template_checked(source, path, scope, false)
    }

    /// [`Self::template`]; `whole_value` is true where a template that is exactly one
    /// reference keeps the referenced value's type (a JSON body's leaf), so a whole list may
    /// be copied there.
    fn template_checked(
        &mut self,
        source: &str,
        path: &DocPath,
        scope: &Scope<'_>,
        whole_value: bool,
    ) -> Option<CompiledTemplate> {
        let (template, analysis) = match CompiledTemplate::compile(source) {
            Ok(t) => t,
            Err(p) => {
                let code = if p.syntax {
                    Code::TemplateSyntax
                } else {
                    Code::UnknownHelper
                };
                let d = self.error(path, code, p.message);
                d.hint = p.hint;
                return None;
            }
        };
        let before = self.problems.len();
        for var in &analysis.paths {
            let Some(root) = var.first() else { continue };
            if root.starts_with('@') || root == "this" {
                continue;
            }
            let known = scope.roots.contains(&root.as_str()) || scope.extra.contains(root);
            if !known {
                let names = scope
                    .roots
                    .iter()
                    .copied()
                    .chain(scope.extra.iter().map(String::as_str));
                let hint = match did_you_mean(root, names) {
                    Some(best) => format!("did you mean '{best}'?"),
                    None => {
                        let mut all: Vec<&str> = scope.roots.to_vec();
                        for e in scope.extra {
                            if !all.contains(&e.as_str()) {
                                all.push(e);
                            }
                        }
                        format!("available here: {}", all.join(", "))
                    }
                };
                self.error(
                    path,
                    Code::UnknownVariable,
                    format!("unknown variable '{}' in template", var.join(".")),
                )
                .hint = Some(hint);
                continue;
            }
            let second = var.get(1).map(String::as_str);
            match (root.as_str(), second) {
                ("credentials", Some(name)) if !self.file.credentials.iter().any(|c| c == name) => {
                    let hint = match did_you_mean(
                        name,
                        self.file.credentials.iter().map(String::as_str),
                    ) {
                        Some(best) => format!(
                            "did you mean '{best}'? otherwise add '{name}' to `credentials:`"
                        ),
                        None => format!("add '{name}' to the platform's `credentials:` list"),
                    };
                    self.error(
                        path,
                        Code::UndeclaredCredential,
                        format!("credential '{name}' is not declared"),
                    )
                    .hint = Some(hint);
                }
                ("settings", Some(name)) if !self.file.settings.contains_key(name) => {
                    let hint =
                        match did_you_mean(name, self.file.settings.keys().map(String::as_str)) {
                            Some(best) => format!(
                                "did you mean '{best}'? otherwise add '{name}' under `settings:`"
                            ),
                            None => format!("add '{name}: VALUE' under the platform's `settings:`"),
                        };
                    self.error(
                        path,
                        Code::UndeclaredSetting,
                        format!("setting '{name}' is not declared"),
                    )
                    .hint = Some(hint);
                }
                _ => {}
            }
        }
        self.check_list_refs(
            &analysis,
            whole_value && template.as_ref_path().is_some(),
            path,
        );
        for arg in &analysis.now_args {
            let bad = if arg.starts_with('+') || arg.starts_with('-') || arg == "Z" {
                parse_offset(arg).err()
            } else {
                TimeFormat::parse(arg).err()
            };
            if let Some(e) = bad {
                self.error(path, Code::TimeFormat, e);
            }
        }
        (self.problems.len() == before).then_some(template)
    }

    /// Compiles every value of a map of templates (leaving out, and reporting, bad ones).
    fn templates(
        &mut self,
        map: &IndexMap<String, String>,
        path: &DocPath,
        scope: &Scope<'_>,
    ) -> Vec<(String, CompiledTemplate)> {
        map.iter()
            .filter_map(|(k, v)| {
                self.template(v, &path.key(k.clone()), scope)
                    .map(|t| (k.clone(), t))
            })
            .collect()
    }

    /// Parses a duration such as `500ms`, `30s`, `5m`, `1h`, `7d`.
    pub fn duration(&mut self, text: &str, path: &DocPath) -> Option<std::time::Duration> {
        match parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(path, Code::Duration, e).hint =
                    Some("write a number and a unit: 500ms, 30s, 5m, 1h or 7d".into());
                None
            }
        }
    }
}

/// Parses a duration such as `500ms`, `30s`, `5m`, `1h`, `7d`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a duration"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("'{text}' has an unknown unit '{unit}'")),
    };
    Ok(std::time::Duration::from_millis(n.saturating_mul(ms)))
}

/// Compiles the mapping that is the whole of `doc` on its own, as the mapping engine sees it:
/// not checked against a canonical schema, with the id `kinds` declared (the engine's tests map
/// documents of any shape).
#[cfg(test)]
pub(crate) fn bare_mapping(
    doc: &SourceDoc,
    kinds: &[&str],
) -> Result<MappingPlan, Vec<Diagnostic>> {
    let type_error =
        |e: serde_json::Error| vec![doc.at(&DocPath::root(), Code::Type, e.to_string())];
    let m: Mapping = serde_json::from_value(doc.value.clone()).map_err(type_error)?;
    let ids: serde_json::Map<String, Value> = kinds
        .iter()
        .map(|k| (k.to_string(), Value::String("allocate".into())))
        .collect();
    let file: PlatformFile =
        serde_json::from_value(serde_json::json!({ "platform": "t", "ids": ids }))
            .map_err(type_error)?;
    let mut cx = Cx::for_document(doc, &file);
    let plan = cx.mapping(&m, &DocPath::root(), false);
    match plan {
        Some(plan) if cx.problems.is_empty() => Ok(plan),
        _ => Err(cx.problems),
    }
}

/// Compiles every platform file in `dir` (used by `serve` and tests).
pub fn compile_dir(dir: &Path, env: EnvLookup<'_>) -> Compiled {
    match platform_files(&[dir.to_path_buf()]) {
        Ok(files) => compile_files(&files, env),
        Err(d) => Compiled {
            plan: Plan::default(),
            diagnostics: vec![d],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_duration("5m").unwrap().as_secs(), 300);
        assert_eq!(parse_duration("1h").unwrap().as_secs(), 3600);
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }
}
