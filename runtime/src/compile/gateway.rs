//! Checks the gateway file and resolves its defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use crate::canonical;
use crate::config::gateway::GatewayFile;
use crate::config::source::{DocPath, SourceDoc};
use crate::config::{self, EnvLookup, Secret};
use crate::diagnostics::{Code, Diagnostic, did_you_mean};

use super::structure::Structure;

/// The gateway file used when none exists: the same text as the committed `entrepot.yaml`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../entrepot.yaml");

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default store URL.
pub const DEFAULT_STORE_URL: &str = "sqlite://data/entrepot.db";

static GATEWAY_STRUCTURE: LazyLock<Result<Structure, String>> =
    LazyLock::new(|| Structure::new(crate::schema::gateway_schema()));

/// The gateway's settings, resolved.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Where the file came from (`<embedded>` for the built-in default).
    pub file: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// Store URL (after `ENTREPOT_STORE_URL`).
    pub store_url: String,
    /// Id mappings kept in memory per direction.
    pub id_cache: usize,
    /// Platforms directory, resolved against the file's directory.
    pub platforms_dir: PathBuf,
    /// Admin bearer token; `None` disables the admin API.
    pub admin_token: Option<Secret>,
    /// Event targets.
    pub targets: Vec<TargetSettings>,
    /// Credentials file, resolved against the file's directory.
    pub credentials_file: Option<PathBuf>,
    /// Delivery settings of the dispatcher.
    pub delivery: crate::dispatch::DispatchOptions,
    /// Whether to watch the files.
    pub reload_watch: bool,
    /// Polling interval, when polling.
    pub reload_poll: Option<std::time::Duration>,
    /// Quiet time before a reload.
    pub reload_debounce: std::time::Duration,
    /// How long clients may take, how many are served at once, and whether forwarded headers
    /// are trusted.
    pub server: crate::server::ServerLimits,
    /// The order saga's deadlines, retries and lease.
    pub orders: OrderSettings,
    /// Product sync settings.
    pub sync: SyncSettings,
    /// Monitoring: how often thresholds are evaluated, and their defaults.
    pub monitoring: MonitoringSettings,
    /// Where spans are exported; `None`: they are not.
    pub otlp: Option<OtlpSettings>,
}

/// The OTLP exporter of spans, resolved (the `telemetry.otlp` block of the gateway file).
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// The full URL spans are POSTed to (ending in `/v1/traces`).
    pub endpoint: String,
    /// The spans' `service.name`.
    pub service_name: String,
    /// Share of the gateway's own root traces exported, 0 to 1.
    pub sample_ratio: f64,
    /// Headers sent with every export; their values may be secrets.
    pub headers: Vec<(String, Secret)>,
    /// Time allowed for one export.
    pub timeout: Duration,
}

/// The `monitoring` block of the gateway file, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitoringSettings {
    /// How often each instance evaluates the thresholds.
    pub every: Duration,
    /// Every platform's thresholds, unless its file says otherwise.
    pub defaults: crate::plan::MonitoringPlan,
}

impl Default for MonitoringSettings {
    fn default() -> Self {
        MonitoringSettings {
            every: Duration::from_secs(10),
            defaults: Default::default(),
        }
    }
}

/// The order saga's settings, resolved (the `orders` block of the gateway file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderSettings {
    /// Time from the payment within which every part must be created.
    pub create_deadline: std::time::Duration,
    /// First wait before a failed step is tried again.
    pub retry: std::time::Duration,
    /// Longest wait between two tries.
    pub retry_max: std::time::Duration,
    /// How long an instance holds a saga it works on.
    pub lease: std::time::Duration,
    /// How often unfinished sagas are looked for.
    pub poll: std::time::Duration,
}

impl Default for OrderSettings {
    fn default() -> Self {
        use std::time::Duration;
        OrderSettings {
            create_deadline: Duration::from_secs(120),
            retry: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
        }
    }
}

/// Product sync settings, resolved (see [`crate::flows::sync`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SyncSettings {
    /// Products per `product.list` page.
    pub page_size: u32,
    /// How long a sync lease lasts without renewal.
    pub lease: std::time::Duration,
    /// Schedules: platform, incremental interval, full interval.
    pub schedules: Vec<SyncScheduleSettings>,
}

/// One platform's sync schedule, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncScheduleSettings {
    /// The platform.
    pub platform: String,
    /// Time between syncs.
    pub every: std::time::Duration,
    /// Time between full syncs.
    pub full_every: Option<std::time::Duration>,
}

/// Default products per page of a sync.
pub const DEFAULT_SYNC_PAGE_SIZE: u32 = 50;

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            page_size: DEFAULT_SYNC_PAGE_SIZE,
            lease: std::time::Duration::from_secs(60),
            schedules: Vec::new(),
        }
    }
}

/// One event target, resolved.
#[derive(Debug, Clone)]
pub struct TargetSettings {
    /// Target name.
    pub name: String,
    /// Delivery URL.
    pub url: String,
    /// Canonical events it receives.
    pub events: Vec<String>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
    /// Credential names of the signing recipe.
    pub credentials: Vec<String>,
    /// The compiled signing recipe.
    pub sign: Option<std::sync::Arc<crate::recipe::SignPlan>>,
    /// Deliveries in flight at once.
    pub concurrency: u32,
}

/// Compiles a gateway document. `base` is the directory relative paths are resolved against.
pub fn compile_gateway(
    mut doc: SourceDoc,
    base: &Path,
    env: EnvLookup<'_>,
) -> Result<GatewaySettings, Vec<Diagnostic>> {
    let mut problems = Vec::new();
    config::expand_env_in(&mut doc, &DocPath::root(), env, &mut problems);
    match &*GATEWAY_STRUCTURE {
        Ok(s) => problems.extend(s.check(&doc)),
        Err(e) => problems.push(doc.at(
            &DocPath::root(),
            Code::Gateway,
            format!("internal error: the gateway schema does not compile: {e}"),
        )),
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let file: GatewayFile = serde_json::from_value(doc.value.clone())
        .map_err(|e| vec![doc.at(&DocPath::root(), Code::Type, e.to_string())])?;
    let listen_text = file.listen.clone().unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen = listen_text.parse::<SocketAddr>().map_err(|_| {
        problems.push(
            doc.at(
                &DocPath::root().key("listen"),
                Code::Gateway,
                format!("'{listen_text}' is not an address and port"),
            )
            .with_hint("write it like 127.0.0.1:8080 or 0.0.0.0:8080"),
        )
    });
    let store_url = env("ENTREPOT_STORE_URL")
        .filter(|s| !s.is_empty())
        .or_else(|| file.store.as_ref().map(|s| s.url.clone()))
        .unwrap_or_else(|| DEFAULT_STORE_URL.into());
    if !(store_url.starts_with("sqlite:")
        || store_url.starts_with("postgres://")
        || store_url.starts_with("postgresql://"))
    {
        problems.push(
            doc.at(&DocPath::root().key("store").key("url"), Code::Gateway, "the store URL must start with sqlite:, postgres:// or postgresql://")
                .with_hint("use sqlite://data/entrepot.db for one instance, postgres://user@host/db for several"),
        );
    }
    let mut targets = Vec::new();
    for (name, t) in &file.targets {
        let tp = DocPath::root().key("targets").key(name.clone());
        if name.starts_with('@') {
            problems.push(
                doc.at(
                    &tp,
                    Code::Gateway,
                    format!("target name '{name}' starts with '@', which is kept for the gateway's own consumers"),
                )
                .with_hint("name the target without the leading '@'"),
            );
        }
        for (i, e) in t.events.iter().enumerate() {
            if !canonical::EVENTS.contains(&e.as_str()) {
                let mut d = doc.at(
                    &tp.key("events").index(i),
                    Code::UnknownEvent,
                    format!("unknown canonical event '{e}'"),
                );
                if let Some(best) = did_you_mean(e, canonical::EVENTS.iter().copied()) {
                    d = d.with_hint(format!("did you mean '{best}'?"));
                }
                problems.push(d);
            }
        }
        if !(t.url.starts_with("http://") || t.url.starts_with("https://")) {
            problems.push(doc.at(
                &tp.key("url"),
                Code::Gateway,
                "a target URL must start with http:// or https://",
            ));
        }
        let sign = t.sign.as_ref().and_then(|recipe| {
            // The recipe is checked exactly like a platform's, against the target's credentials.
            let pseudo: crate::config::platform::PlatformFile =
                serde_json::from_value(serde_json::json!({
                    "platform": name,
                    "credentials": t.credentials,
                }))
                .ok()?;
            let mut cx = super::Cx::for_document(&doc, &pseudo);
            let plan = crate::recipe::compile_sign(&mut cx, recipe, &tp.key("sign"));
            if recipe
                .place
                .iter()
                .any(|p| p.to == crate::config::recipe::PlaceTarget::Xml)
            {
                cx.error(
                    &tp.key("sign").key("place"),
                    Code::Conflict,
                    "events are sent as JSON: a signature cannot be placed in an XML element",
                )
                .hint = Some("place the signature in a header or a query parameter".into());
            }
            problems.append(&mut cx.problems);
            plan.map(std::sync::Arc::new)
        });
        targets.push(TargetSettings {
            name: name.clone(),
            url: t.url.clone(),
            events: t.events.clone(),
            headers: t
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            max_attempts: t.max_attempts.unwrap_or(10),
            credentials: t.credentials.clone(),
            sign,
            concurrency: t.concurrency.unwrap_or(8).max(1),
        });
    }
    let mut reload_poll = None;
    let mut reload_debounce = std::time::Duration::from_millis(250);
    if let Some(r) = &file.reload {
        let rp = DocPath::root().key("reload");
        if let Some(p) = &r.poll {
            match super::parse_duration(p) {
                Ok(d) => reload_poll = Some(d),
                Err(e) => problems.push(doc.at(&rp.key("poll"), Code::Duration, e)),
            }
        }
        if let Some(d) = &r.debounce {
            match super::parse_duration(d) {
                Ok(d) => reload_debounce = d,
                Err(e) => problems.push(doc.at(&rp.key("debounce"), Code::Duration, e)),
            }
        }
    }
    let mut delivery = crate::dispatch::DispatchOptions::default();
    if let Some(d) = &file.delivery {
        let dp = DocPath::root().key("delivery");
        for (value, key, slot) in [
            (&d.lease, "lease", &mut delivery.lease),
            (&d.backoff, "backoff", &mut delivery.backoff),
            (&d.backoff_max, "backoff_max", &mut delivery.backoff_max),
            (&d.timeout, "timeout", &mut delivery.timeout),
        ] {
            if let Some(text) = value {
                match super::parse_duration(text) {
                    Ok(v) => *slot = v,
                    Err(e) => problems.push(
                        doc.at(&dp.key(key), Code::Duration, e)
                            .with_hint("write a number and a unit: 500ms, 30s, 5m, 1h or 7d"),
                    ),
                }
            }
        }
    }
    if let Some(r) = &file.retention {
        let rp = DocPath::root().key("retention");
        let slots = &mut delivery.retention;
        for (value, key, slot) in [
            (&r.deliveries, "deliveries", &mut slots.deliveries),
            (&r.refused, "refused", &mut slots.refused),
            (&r.events, "events", &mut slots.events),
            (&r.prune_every, "prune_every", &mut slots.prune_every),
        ] {
            if let Some(text) = value {
                match super::parse_duration(text) {
                    Ok(v) if !v.is_zero() => *slot = v,
                    Ok(_) => problems.push(
                        doc.at(
                            &rp.key(key),
                            Code::Duration,
                            format!("{key} cannot be zero"),
                        )
                        .with_hint("write a duration such as 1h, 1d or 7d"),
                    ),
                    Err(e) => problems.push(
                        doc.at(&rp.key(key), Code::Duration, e)
                            .with_hint("write a number and a unit: 500ms, 30s, 5m, 1h or 7d"),
                    ),
                }
            }
        }
    }
    let mut server = crate::server::ServerLimits::default();
    if let Some(sc) = &file.server {
        let sp = DocPath::root().key("server");
        for (value, key, slot) in [
            (
                &sc.header_timeout,
                "header_timeout",
                &mut server.header_timeout,
            ),
            (&sc.body_timeout, "body_timeout", &mut server.body_timeout),
        ] {
            if let Some(text) = value {
                match super::parse_duration(text) {
                    Ok(v) if !v.is_zero() => *slot = v,
                    Ok(_) => problems.push(
                        doc.at(
                            &sp.key(key),
                            Code::Duration,
                            "a zero timeout would refuse every request",
                        )
                        .with_hint("give a time such as 10s or 30s"),
                    ),
                    Err(e) => problems.push(
                        doc.at(&sp.key(key), Code::Duration, e)
                            .with_hint("write a number and a unit: 500ms, 30s, 5m, 1h or 7d"),
                    ),
                }
            }
        }
        match sc.max_connections {
            Some(0) => problems.push(
                doc.at(
                    &sp.key("max_connections"),
                    Code::Gateway,
                    "the gateway must serve at least one connection",
                )
                .with_hint("leave it out for the default of 1024"),
            ),
            Some(n) => server.max_connections = usize::try_from(n).unwrap_or(usize::MAX),
            None => {}
        }
        if let Some(trust) = sc.trust_forwarded_headers {
            server.trust_forwarded_headers = trust;
        }
    }
    let mut orders = OrderSettings::default();
    if let Some(o) = &file.orders {
        let op = DocPath::root().key("orders");
        for (value, key, slot) in [
            (
                &o.create_deadline,
                "create_deadline",
                &mut orders.create_deadline,
            ),
            (&o.retry, "retry", &mut orders.retry),
            (&o.retry_max, "retry_max", &mut orders.retry_max),
            (&o.lease, "lease", &mut orders.lease),
            (&o.poll, "poll", &mut orders.poll),
        ] {
            if let Some(text) = value {
                match super::parse_duration(text) {
                    Ok(v) if !v.is_zero() => *slot = v,
                    Ok(_) => problems.push(
                        doc.at(
                            &op.key(key),
                            Code::Duration,
                            format!("{key} cannot be zero"),
                        )
                        .with_hint("give a time such as 1s, 30s or 2m"),
                    ),
                    Err(e) => problems.push(
                        doc.at(&op.key(key), Code::Duration, e)
                            .with_hint("write a number and a unit: 500ms, 30s, 5m, 1h or 7d"),
                    ),
                }
            }
        }
        if orders.retry_max < orders.retry {
            problems.push(
                doc.at(
                    &op.key("retry_max"),
                    Code::Gateway,
                    "retry_max is shorter than retry",
                )
                .with_hint("make retry_max at least as long as retry"),
            );
        }
    }
    let sync = sync_settings(&doc, file.sync.as_ref(), &mut problems);
    let monitoring = monitoring_settings(&doc, file.monitoring.as_ref(), &mut problems);
    let otlp = file
        .telemetry
        .as_ref()
        .and_then(|t| t.otlp.as_ref())
        .and_then(|o| otlp_settings(&doc, o, &mut problems));
    let Ok(listen) = listen else {
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(GatewaySettings {
        file: doc.file.clone(),
        listen,
        store_url,
        id_cache: file
            .store
            .as_ref()
            .and_then(|s| s.id_cache)
            .map_or(crate::ids::DEFAULT_CACHE, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            }),
        platforms_dir: base.join(file.platforms_dir.as_deref().unwrap_or("platforms")),
        admin_token: file
            .admin
            .and_then(|a| a.token)
            .filter(|t| !t.is_empty())
            .map(Secret::new),
        targets,
        credentials_file: file.credentials_file.as_deref().map(|f| base.join(f)),
        delivery,
        reload_watch: file.reload.as_ref().and_then(|r| r.watch).unwrap_or(true),
        reload_poll,
        reload_debounce,
        server,
        orders,
        sync,
        monitoring,
        otlp,
    })
}

/// Resolves `telemetry.otlp`: an http(s) endpoint, a ratio from 0 to 1, header names and
/// values that HTTP allows (a value is never repeated in a message: it may be a secret).
fn otlp_settings(
    doc: &SourceDoc,
    o: &crate::config::gateway::OtlpConfig,
    problems: &mut Vec<Diagnostic>,
) -> Option<OtlpSettings> {
    let op = DocPath::root().key("telemetry").key("otlp");
    let before = problems.len();
    let endpoint = match reqwest::Url::parse(o.endpoint.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            let text = u.as_str().trim_end_matches('/').to_string();
            if u.path().trim_end_matches('/').ends_with("/v1/traces") {
                text
            } else {
                format!("{text}/v1/traces")
            }
        }
        Ok(_) => {
            problems.push(
                doc.at(
                    &op.key("endpoint"),
                    Code::Gateway,
                    "the OTLP endpoint must be an http:// or https:// URL with a host",
                )
                .with_hint(
                    "write the collector's OTLP/HTTP address, such as http://127.0.0.1:4318",
                ),
            );
            String::new()
        }
        Err(e) => {
            problems.push(
                doc.at(
                    &op.key("endpoint"),
                    Code::Gateway,
                    format!("'{}' is not a URL: {e}", o.endpoint),
                )
                .with_hint(
                    "write the collector's OTLP/HTTP address, such as http://127.0.0.1:4318",
                ),
            );
            String::new()
        }
    };
    let sample_ratio = o.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        problems.push(
            doc.at(
                &op.key("sample_ratio"),
                Code::Gateway,
                format!("sample_ratio {sample_ratio} is outside 0 to 1"),
            )
            .with_hint("write 1 to export every trace, 0.1 for one in ten"),
        );
    }
    let service_name = o.service_name.clone().unwrap_or_else(|| "entrepot".into());
    if service_name.trim().is_empty() {
        problems.push(
            doc.at(
                &op.key("service_name"),
                Code::Gateway,
                "the service name is empty",
            )
            .with_hint("leave it out for the default of entrepot"),
        );
    }
    let mut headers = Vec::new();
    for (name, value) in &o.headers {
        let hp = op.key("headers").key(name.clone());
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(
                doc.at(
                    &hp,
                    Code::Gateway,
                    format!("'{name}' is not an HTTP header name"),
                )
                .with_hint("use letters, digits and dashes, such as x-api-key"),
            );
        } else if reqwest::header::HeaderValue::from_str(value).is_err() {
            problems.push(
                doc.at(
                    &hp,
                    Code::Gateway,
                    "the value is not a valid HTTP header value (a line break or a control character)",
                )
                .with_hint("check the value, or the environment variable it comes from"),
            );
        } else {
            headers.push((name.clone(), Secret::new(value.clone())));
        }
    }
    let mut timeout = Duration::from_secs(10);
    if let Some(t) = &o.timeout {
        match super::parse_duration(t) {
            Ok(d) if !d.is_zero() => timeout = d,
            Ok(_) => problems.push(
                doc.at(&op.key("timeout"), Code::Duration, "timeout cannot be zero")
                    .with_hint("give a time such as 10s"),
            ),
            Err(e) => problems.push(
                doc.at(&op.key("timeout"), Code::Duration, e)
                    .with_hint("write a number and a unit: 500ms, 30s, 5m, 1h or 7d"),
            ),
        }
    }
    (problems.len() == before).then_some(OtlpSettings {
        endpoint,
        service_name,
        sample_ratio,
        headers,
        timeout,
    })
}

/// Resolves the `monitoring` section: the evaluation interval and the defaults, checked.
fn monitoring_settings(
    doc: &SourceDoc,
    file: Option<&crate::config::gateway::MonitoringConfig>,
    problems: &mut Vec<Diagnostic>,
) -> MonitoringSettings {
    let mut out = MonitoringSettings::default();
    let Some(file) = file else { return out };
    let mp = DocPath::root().key("monitoring");
    if let Some(text) = &file.every {
        match super::parse_duration(text) {
            Ok(d) if (Duration::from_millis(10)..=Duration::from_secs(3600)).contains(&d) => {
                out.every = d;
            }
            Ok(d) => problems.push(
                doc.at(
                    &mp.key("every"),
                    Code::Duration,
                    format!("the evaluation interval must be from 10ms to 1h, not {d:?}"),
                )
                .with_hint("leave it out for the default of 10s"),
            ),
            Err(e) => problems.push(
                doc.at(&mp.key("every"), Code::Duration, e)
                    .with_hint("write a number and a unit: 500ms, 30s, 5m, 1h or 7d"),
            ),
        }
    }
    if let Some(defaults) = &file.defaults {
        out.defaults = super::monitoring::monitoring(doc, defaults, &mp.key("defaults"), problems);
    }
    out
}

/// Resolves the `sync` section: page size, lease and schedules, each checked.
fn sync_settings(
    doc: &SourceDoc,
    file: Option<&crate::config::gateway::SyncConfig>,
    problems: &mut Vec<Diagnostic>,
) -> SyncSettings {
    let mut out = SyncSettings::default();
    let Some(file) = file else { return out };
    let sp = DocPath::root().key("sync");
    let duration =
        |text: &str, path: &DocPath, problems: &mut Vec<Diagnostic>| match super::parse_duration(
            text,
        ) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                problems.push(
                    doc.at(path, Code::Duration, "this duration cannot be zero")
                        .with_hint("give a time such as 30s, 15m or 1d"),
                );
                None
            }
            Err(e) => {
                problems.push(
                    doc.at(path, Code::Duration, e)
                        .with_hint("write a number and a unit: 500ms, 30s, 5m, 1h or 7d"),
                );
                None
            }
        };
    match file.page_size {
        Some(n) if (1..=500).contains(&n) => out.page_size = n,
        Some(n) => problems.push(
            doc.at(
                &sp.key("page_size"),
                Code::Gateway,
                format!("page_size {n} is outside 1 to 500 (product.list's limits)"),
            )
            .with_hint("leave it out for the default of 50"),
        ),
        None => {}
    }
    if let Some(l) = &file.lease
        && let Some(d) = duration(l, &sp.key("lease"), problems)
    {
        out.lease = d;
    }
    for (platform, schedule) in &file.platforms {
        let pp = sp.key("platforms").key(platform.clone());
        let every = duration(&schedule.every, &pp.key("every"), problems);
        let full_every = schedule
            .full_every
            .as_ref()
            .map(|f| duration(f, &pp.key("full_every"), problems));
        if let (Some(every), Some(full_every)) = (every, full_every.unwrap_or(Some(Duration::ZERO)))
        {
            out.schedules.push(SyncScheduleSettings {
                platform: platform.clone(),
                every,
                full_every: (!full_every.is_zero()).then_some(full_every),
            });
        }
    }
    out
}

/// Loads the gateway file at `path`, or the embedded default (relative to the current
/// directory) when `path` is the default name and does not exist.
pub fn load_gateway(
    path: &Path,
    explicit: bool,
    env: EnvLookup<'_>,
) -> Result<GatewaySettings, Vec<Diagnostic>> {
    if !explicit && !path.exists() {
        let doc = config::source::parse(
            Path::new("<embedded entrepot.yaml>"),
            EMBEDDED_DEFAULT.to_string(),
        )
        .map_err(|d| vec![d])?;
        return compile_gateway(doc, Path::new("."), env);
    }
    let doc = config::source::read(path).map_err(|d| vec![d])?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    compile_gateway(doc, &base, env)
}
