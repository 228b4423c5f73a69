//! The gateway file, `entrepot.yaml`: where to listen, where state lives, where the platform
//! files are, and which internal systems receive events.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The gateway's own configuration.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// Address and port to listen on. Default: `127.0.0.1:8080`. Use `0.0.0.0:8080` to accept
    /// connections from other machines.
    #[serde(default)]
    pub listen: Option<String>,
    /// Where the gateway keeps its state.
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// Directory of the platform files (`*.yaml`), relative to this file. Default: `platforms`.
    #[serde(default)]
    pub platforms_dir: Option<String>,
    /// The admin API.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Internal systems that receive canonical events, by name.
    #[serde(default)]
    pub targets: IndexMap<String, Target>,
    /// How events are delivered to the targets.
    #[serde(default)]
    pub delivery: Option<DeliveryConfig>,
    /// How platform files are reloaded while the gateway runs.
    #[serde(default)]
    pub reload: Option<ReloadConfig>,
    /// How long clients may take to send a request, and how many are served at once.
    #[serde(default)]
    pub server: Option<ServerConfig>,
    /// How long stored deliveries and delivered events are kept (see docs/limits.md).
    #[serde(default)]
    pub retention: Option<RetentionConfig>,
    /// The order saga: how long creating an order may take before it is cancelled, how
    /// failed steps are retried, and how instances share the work (see docs/flows.md).
    #[serde(default)]
    pub orders: Option<OrdersConfig>,
    /// A credentials file (platform → credential name → value), relative to this file. Keep
    /// it out of git. Credentials it lacks come from `ENTREPOT_CREDENTIAL_<PLATFORM>_<NAME>`.
    #[serde(default)]
    pub credentials_file: Option<String>,
    /// Product sync into the product center: page size, lease and schedules (see
    /// docs/flows.md). Products go to the targets subscribed to `product.upserted`.
    #[serde(default)]
    pub sync: Option<SyncConfig>,
    /// Monitoring thresholds: how often they are evaluated and the defaults of every
    /// platform (see docs/operations.md).
    #[serde(default)]
    pub monitoring: Option<MonitoringConfig>,
    /// Traces: where the gateway's spans are exported (see docs/operations.md). Default: not
    /// exported; trace context is still taken from `traceparent`, passed on and logged.
    #[serde(default)]
    pub telemetry: Option<TelemetryConfig>,
}

/// Traces.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Export spans to an OpenTelemetry collector over OTLP/HTTP (protobuf). Default: none.
    /// Read when the gateway starts; a change needs a restart.
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
}

/// An OTLP/HTTP exporter of spans.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's OTLP/HTTP address, such as `http://127.0.0.1:4318`; spans are POSTed to
    /// its `/v1/traces` (give a URL ending in `/v1/traces` to name the path yourself). May be
    /// `${env:NAME}`.
    pub endpoint: String,
    /// The `service.name` of the spans. Default: `entrepot`.
    #[serde(default)]
    pub service_name: Option<String>,
    /// Share of traces started by the gateway that are exported, from 0 to 1. A trace whose
    /// caller sent a `traceparent` follows the caller's sampled flag instead. Default: 1.
    #[serde(default)]
    pub sample_ratio: Option<f64>,
    /// Headers sent with every export, such as an API key (write `${env:NAME}` to keep it out
    /// of the file; values are never logged). Default: none.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Time allowed for one export. Default: `10s`.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// How monitoring thresholds are evaluated, and their gateway-wide defaults.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitoringConfig {
    /// How often each instance evaluates the thresholds, from `10ms` to `1h`. Default: `10s`.
    #[serde(default)]
    pub every: Option<String>,
    /// Thresholds of every platform, each overridable in a platform file's `monitoring`.
    /// Default: none.
    #[serde(default)]
    pub defaults: Option<crate::config::platform::MonitoringSpec>,
}

/// Product sync settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Products asked for per `product.list` page, 1 to 500 (the platform may cap it lower).
    /// Default: 50.
    #[serde(default)]
    pub page_size: Option<u32>,
    /// How long an instance holds a platform's sync lease without renewing it (it renews after
    /// every page). Only the holder syncs that platform; when it dies, another instance can
    /// resume the sync after this. Default: `60s`.
    #[serde(default)]
    pub lease: Option<String>,
    /// Sync schedules by platform name (its file's `platform:`).
    #[serde(default)]
    pub platforms: IndexMap<String, SyncSchedule>,
}

/// When a platform is synced.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncSchedule {
    /// Time between the end of one sync and the start of the next incremental one, such as
    /// `15m`. An incremental sync asks only for products changed since the stored checkpoint;
    /// a platform without a checkpoint yet gets a full sync.
    pub every: String,
    /// Time between full syncs, such as `1d`. Default: none (only the first sync is full).
    #[serde(default)]
    pub full_every: Option<String>,
}

/// Where state lives.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Store URL: `sqlite://PATH` (the default is `sqlite://data/entrepot.db`, created on first
    /// start) or `postgres://user@host:port/db` for several gateway instances sharing work. The
    /// environment variable `ENTREPOT_STORE_URL` overrides it. May be `${env:NAME}`.
    pub url: String,
    /// How many id mappings (internal id ↔ platform id) to keep in memory, per direction
    /// (default 100000; 0 asks the store every time). Mappings never change once allocated,
    /// so the cache only spares store round trips; it is filled on first use.
    #[serde(default)]
    pub id_cache: Option<u64>,
}

/// The admin API.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token required on every `/admin` route. Write `${env:NAME}` so the value stays
    /// out of git. When it is unset or empty, every `/admin` route refuses.
    #[serde(default)]
    pub token: Option<String>,
}

/// An internal system that receives events over HTTP.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// URL the events are POSTed to. May be `${env:NAME}`.
    pub url: String,
    /// Canonical event types delivered to this target (`product.changed`, `order.shipped`...).
    pub events: Vec<String>,
    /// Extra headers sent with every delivery.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Delivery attempts before an event is dead-lettered. Default: 10.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Names of the secrets this target's signing recipe uses; their values come from the
    /// credentials file under the target's name, or `ENTREPOT_CREDENTIAL_<TARGET>_<NAME>`.
    #[serde(default)]
    pub credentials: Vec<String>,
    /// A signing recipe for deliveries, exactly as for platforms (see docs/recipes.md), for
    /// internal systems that require signed requests.
    #[serde(default)]
    pub sign: Option<crate::config::recipe::SignRecipe>,
    /// Deliveries in flight at once to this target. Default: 8.
    #[serde(default)]
    pub concurrency: Option<u32>,
}

/// How events are delivered to the targets.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// How long an instance holds an event it is delivering; if it dies, another instance (or
    /// the restarted one) takes the event after this. Default: `60s`.
    #[serde(default)]
    pub lease: Option<String>,
    /// First retry delay after a failed delivery; doubles per attempt, with jitter.
    /// Default: `1s`.
    #[serde(default)]
    pub backoff: Option<String>,
    /// Longest retry delay. Default: `5m`.
    #[serde(default)]
    pub backoff_max: Option<String>,
    /// Time allowed for one delivery. Default: `10s`.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// How platform files are reloaded while the gateway runs.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Set to false to reload only on `POST /admin/v1/reload` and SIGHUP. Default: true.
    #[serde(default)]
    pub watch: Option<bool>,
    /// Poll the file system at this interval instead of waiting for change events (for network
    /// file systems without them), such as `2s`. Default: events.
    #[serde(default)]
    pub poll: Option<String>,
    /// Quiet time after a burst of changes before reloading. Default: `250ms`.
    #[serde(default)]
    pub debounce: Option<String>,
}

/// Limits that keep slow or numerous clients from holding the gateway's connections.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Time a client has to send a request's header block, from the moment the connection is
    /// ready for a request (just opened, or idle after an answer); past it the connection is
    /// closed. This also ends idle kept-alive connections. Default: `10s`.
    #[serde(default)]
    pub header_timeout: Option<String>,
    /// Time a client has to send a request's whole body, counted from the request's arrival;
    /// past it the request is answered `408` and the connection closed. Default: `30s`.
    #[serde(default)]
    pub body_timeout: Option<String>,
    /// Connections served at once; further clients wait to be accepted until one closes. Each
    /// is a file descriptor: at start the soft open-file limit is raised to the hard one, and
    /// a warning is logged when it stays below this plus 256 (see docs/limits.md).
    /// Default: `1024`.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Whether the scheme and host of a callback's `{{url}}` are taken from the
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` headers (their first value). Turn it on only
    /// behind a reverse proxy that sets both and drops what clients send: otherwise any client
    /// can choose the URL a recipe signs. Off, the scheme is `http` and the host is the `Host`
    /// header. Default: `false`.
    #[serde(default)]
    pub trust_forwarded_headers: Option<bool>,
}

/// How long stored rows are kept; older ones are removed on a schedule. Expired replay keys
/// (each kept for its recipe's `replay.ttl`) and idempotency records go at the same time.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Verified deliveries, duplicates included. Their dedupe keys go with them: a resend
    /// arriving later than this is a new delivery, so keep it longer than the platforms' resend
    /// horizon. A delivery with an event not yet delivered (pending or dead-lettered) is kept.
    /// Default: `7d`.
    #[serde(default)]
    pub deliveries: Option<String>,
    /// Refused deliveries (bad signature, over a limit...). Default: `1d`.
    #[serde(default)]
    pub refused: Option<String>,
    /// Events delivered to their target. Pending and dead-lettered events are never removed.
    /// Default: `7d`.
    #[serde(default)]
    pub events: Option<String>,
    /// How often the store is pruned (it is also pruned when the gateway starts). Default:
    /// `10m`.
    #[serde(default)]
    pub prune_every: Option<String>,
}

/// The order saga (`POST /v1/orders/{order_id}/paid`; see docs/flows.md).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrdersConfig {
    /// How long, from the payment, the saga keeps trying to create an order on its
    /// platforms. When a platform has still not created its part by then (or refuses it at
    /// any time), the parts already created are cancelled and `order.cancelled` is sent to the
    /// targets so the order center can refund. Default: `2m`.
    #[serde(default)]
    pub create_deadline: Option<String>,
    /// First wait before a failed step is tried again; it doubles with each failure of the
    /// step, up to `retry_max`. Cancelling an order that was created is never given up: it
    /// is retried at `retry_max` for as long as it fails. Default: `1s`.
    #[serde(default)]
    pub retry: Option<String>,
    /// Longest wait between two tries of a step. Default: `1m`.
    #[serde(default)]
    pub retry_max: Option<String>,
    /// How long an instance holds a saga it is working on. An instance that dies leaves its
    /// sagas to the others (or to itself, restarted) once the lease runs out; it must exceed
    /// the longest platform call. Default: `30s`.
    #[serde(default)]
    pub lease: Option<String>,
    /// How often each instance looks for sagas with work left (resumed after a restart,
    /// retries that came due, sagas whose lease ran out). Default: `1s`.
    #[serde(default)]
    pub poll: Option<String>,
}
