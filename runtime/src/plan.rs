//! The compiled, immutable description of every platform. Built once by `compile`, shared as
//! `Arc`, never changed: a reload builds a new one and swaps it in.

use std::path::PathBuf;
use std::sync::Arc;

use indexmap::IndexMap;
use jsonpath_rust::parser::model::JpQuery;
use serde_json::Value;

use crate::config::platform::{BodyFormat, HttpMethod, ValueType};
use crate::recipe::{SignPlan, VerifyPlan};
use crate::template::CompiledTemplate;

/// Every platform, by name.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Platforms by their `platform` identifier, in file order.
    pub platforms: IndexMap<String, Arc<PlatformPlan>>,
}

/// One platform, compiled.
#[derive(Debug)]
pub struct PlatformPlan {
    /// The platform identifier.
    pub name: String,
    /// Human-readable name.
    pub title: Option<String>,
    /// The file it was compiled from.
    pub file: PathBuf,
    /// SHA-256 of the file's bytes, hex: the loaded version.
    pub version: String,
    /// Settings after `${env:...}` expansion.
    pub settings: serde_json::Map<String, Value>,
    /// Names of the credentials it needs.
    pub credentials: Vec<String>,
    /// Operations by canonical name.
    pub operations: IndexMap<String, OperationPlan>,
    /// Callback routes.
    pub callbacks: Vec<CallbackPlan>,
    /// What to do with unknown platform ids, by id kind (absent: allocate).
    pub id_policies: std::collections::HashMap<String, crate::config::platform::IdPolicy>,
    /// How requests authenticate.
    pub auth: AuthPlan,
    /// Scheduled fetches of messages.
    pub pollers: Vec<PollerPlan>,
    /// How long the previous credentials still verify inbound deliveries after a push.
    pub rotation_window: Option<std::time::Duration>,
    /// The monitoring thresholds the file declares (the gateway's defaults fill the rest).
    pub monitoring: MonitoringPlan,
}

/// Monitoring thresholds as declared in one place (a platform file, or the gateway's
/// defaults), checked; `None` where that place says nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MonitoringPlan {
    /// Window of the rates and the p95 latency.
    pub window: Option<std::time::Duration>,
    /// How long a crossing (either way) must last before it is reported.
    pub hold: Option<std::time::Duration>,
    /// Fraction of a limit at or below which a tripped threshold is back.
    pub recover_at: Option<f64>,
    /// Fewest calls or deliveries in the window for a rate or percentile to count.
    pub min_calls: Option<u32>,
    /// Error rate limit.
    pub error_rate: Option<f64>,
    /// p95 latency limit.
    pub latency_p95: Option<std::time::Duration>,
    /// Longest time the breaker may stay open.
    pub breaker_open: Option<std::time::Duration>,
    /// Callback refusal rate limit.
    pub callback_refusal_rate: Option<f64>,
    /// Most dead letters of the platform's events.
    pub dead_letters: Option<u64>,
    /// Stock at or below which `inventory.low` is sent.
    pub low_stock: Option<u64>,
    /// Stock thresholds by internal SKU id.
    pub low_stock_skus: std::collections::HashMap<String, u64>,
}

/// The thresholds watched for one platform: its own over the gateway's defaults, over the
/// built-in defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Window of the rates and the p95 latency.
    pub window: std::time::Duration,
    /// How long a crossing (either way) must last before it is reported.
    pub hold: std::time::Duration,
    /// Fraction of a limit at or below which a tripped threshold is back.
    pub recover_at: f64,
    /// Fewest calls or deliveries in the window for a rate or percentile to count.
    pub min_calls: u32,
    /// Error rate limit.
    pub error_rate: Option<f64>,
    /// p95 latency limit.
    pub latency_p95: Option<std::time::Duration>,
    /// Longest time the breaker may stay open.
    pub breaker_open: Option<std::time::Duration>,
    /// Callback refusal rate limit.
    pub callback_refusal_rate: Option<f64>,
    /// Most dead letters of the platform's events.
    pub dead_letters: Option<u64>,
}

impl MonitoringPlan {
    /// Default window: 5 minutes.
    pub const DEFAULT_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);
    /// Default hold: 1 minute.
    pub const DEFAULT_HOLD: std::time::Duration = std::time::Duration::from_secs(60);
    /// Default hysteresis fraction: 0.8.
    pub const DEFAULT_RECOVER_AT: f64 = 0.8;
    /// Default fewest calls: 20.
    pub const DEFAULT_MIN_CALLS: u32 = 20;

    /// The thresholds watched: these, over `defaults`, over the built-in defaults.
    pub fn over(&self, defaults: &MonitoringPlan) -> Thresholds {
        Thresholds {
            window: self
                .window
                .or(defaults.window)
                .unwrap_or(Self::DEFAULT_WINDOW),
            hold: self.hold.or(defaults.hold).unwrap_or(Self::DEFAULT_HOLD),
            recover_at: self
                .recover_at
                .or(defaults.recover_at)
                .unwrap_or(Self::DEFAULT_RECOVER_AT),
            min_calls: self
                .min_calls
                .or(defaults.min_calls)
                .unwrap_or(Self::DEFAULT_MIN_CALLS),
            error_rate: self.error_rate.or(defaults.error_rate),
            latency_p95: self.latency_p95.or(defaults.latency_p95),
            breaker_open: self.breaker_open.or(defaults.breaker_open),
            callback_refusal_rate: self
                .callback_refusal_rate
                .or(defaults.callback_refusal_rate),
            dead_letters: self.dead_letters.or(defaults.dead_letters),
        }
    }

    /// The stock threshold of internal SKU `sku`: its own (here, then in `defaults`), else
    /// the platform-wide one (here, then in `defaults`).
    pub fn low_stock_of(&self, sku: &str, defaults: &MonitoringPlan) -> Option<u64> {
        self.low_stock_skus
            .get(sku)
            .or_else(|| defaults.low_stock_skus.get(sku))
            .copied()
            .or(self.low_stock)
            .or(defaults.low_stock)
    }

    /// Whether any stock threshold is set here or in `defaults`.
    pub fn watches_stock(&self, defaults: &MonitoringPlan) -> bool {
        self.low_stock.is_some()
            || defaults.low_stock.is_some()
            || !self.low_stock_skus.is_empty()
            || !defaults.low_stock_skus.is_empty()
    }
}

/// A compiled poller.
#[derive(Debug)]
pub struct PollerPlan {
    /// Name.
    pub name: String,
    /// Interval.
    pub every: std::time::Duration,
    /// The fetch, as an operation.
    pub op: OperationPlan,
    /// Where the messages are.
    pub items: JsonPathExpr,
    /// Event type of a message.
    pub event_type: DiscriminatorPlan,
    /// Event mappings.
    pub events: IndexMap<String, MappingPlan>,
    /// Deduplication key.
    pub dedupe_key: Option<CompiledTemplate>,
    /// The event time, mapped from the message (absent: the receive time).
    pub occurred_at: Option<MappingPlan>,
}

/// How requests authenticate, compiled.
#[derive(Debug)]
pub enum AuthPlan {
    /// Nothing to add.
    None,
    /// A header with a templated value (API key in a header, bearer token).
    Header(String, CompiledTemplate),
    /// A query parameter with a templated value.
    Query(String, CompiledTemplate),
    /// HTTP Basic from a user name and a password.
    Basic(CompiledTemplate, CompiledTemplate),
    /// A token from a token endpoint.
    OAuth2(Box<OAuth2Plan>),
}

/// A token endpoint and how its token is used.
#[derive(Debug)]
pub struct OAuth2Plan {
    /// Token endpoint URL.
    pub token_url: CompiledTemplate,
    /// Form fields of the token request.
    pub form: Vec<(String, CompiledTemplate)>,
    /// Headers of the token request.
    pub headers: Vec<(String, CompiledTemplate)>,
    /// Where the token is in the answer.
    pub token_path: JsonPathExpr,
    /// Where its lifetime (seconds) is.
    pub expires_in_path: JsonPathExpr,
    /// Lifetime when the answer has none.
    pub default_ttl: std::time::Duration,
    /// Renewal margin before expiry.
    pub refresh_before: std::time::Duration,
    /// Header receiving the token.
    pub header: String,
    /// Its value, over `token`.
    pub value: CompiledTemplate,
}

impl PlatformPlan {
    /// The policy for unknown platform ids of `kind`.
    pub fn id_policy(&self, kind: &str) -> crate::config::platform::IdPolicy {
        self.id_policies
            .get(kind)
            .copied()
            .unwrap_or(crate::config::platform::IdPolicy::Allocate)
    }
}

/// One operation: the merged request and how its answer is read.
#[derive(Debug)]
pub struct OperationPlan {
    /// Canonical operation name.
    pub name: String,
    /// How the request is built and signed.
    pub request: RequestPlan,
    /// How the answer is judged.
    pub answer: AnswerPlan,
    /// How the answer maps to the canonical output.
    pub output: Option<MappingPlan>,
    /// Internal ids in the input to translate, with their kinds.
    pub input_ids: Vec<(InputPath, String)>,
    /// Id pairs to remember after success.
    pub record: Vec<RecordPlan>,
    /// How calls are sent.
    pub transport: TransportPlan,
    /// Time windows of a listing bounded in time (see [`WindowsPlan`]).
    pub windows: Option<WindowsPlan>,
}

/// How a listing bounded in time is split: consecutive windows `[from, to)` no wider than
/// `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowsPlan {
    /// The widest window.
    pub max: std::time::Duration,
    /// Where a full listing starts.
    pub start: Option<time::OffsetDateTime>,
}

impl WindowsPlan {
    /// The window starting at `from` and ending at `until` at the latest; `None` when `from`
    /// is not before `until`.
    pub fn window_from(
        &self,
        from: time::OffsetDateTime,
        until: time::OffsetDateTime,
    ) -> Option<(time::OffsetDateTime, time::OffsetDateTime)> {
        if from >= until {
            return None;
        }
        let to = from
            .checked_add(time::Duration::try_from(self.max).unwrap_or(time::Duration::MAX))
            .map_or(until, |t| t.min(until));
        Some((from, to))
    }

    /// Every window covering `[from, until)`, in order.
    pub fn windows(
        &self,
        from: time::OffsetDateTime,
        until: time::OffsetDateTime,
    ) -> impl Iterator<Item = (time::OffsetDateTime, time::OffsetDateTime)> + '_ {
        std::iter::successors(self.window_from(from, until), move |&(_, to)| {
            self.window_from(to, until)
        })
    }
}

/// A path into the canonical input: fields, and `[*]` for every element of an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPath {
    /// The path as written.
    pub source: String,
    /// Its segments.
    pub segs: Vec<InputSeg>,
}

/// One segment of an [`InputPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSeg {
    /// A field of an object.
    Field(String),
    /// Every element of an array.
    Each,
}

impl InputPath {
    /// Parses `lines[*].sku_id`.
    pub fn parse(source: &str) -> Result<Self, String> {
        let mut segs = Vec::new();
        for part in source.split('.') {
            let (name, each) = match part.strip_suffix("[*]") {
                Some(n) => (n, true),
                None => (part, false),
            };
            let ok =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(format!(
                    "'{source}' is not an input path (write fields joined by '.', with [*] after arrays, like lines[*].sku_id)"
                ));
            }
            segs.push(InputSeg::Field(name.to_string()));
            if each {
                segs.push(InputSeg::Each);
            }
        }
        Ok(InputPath {
            source: source.to_string(),
            segs,
        })
    }

    /// Every string (or number) value at this path, mutably.
    pub fn visit_mut<'v>(&self, value: &'v mut Value, out: &mut Vec<&'v mut Value>) {
        fn walk<'v>(segs: &[InputSeg], v: &'v mut Value, out: &mut Vec<&'v mut Value>) {
            match segs.split_first() {
                None => {
                    if v.is_string() || v.is_number() {
                        out.push(v);
                    }
                }
                Some((InputSeg::Field(f), rest)) => {
                    if let Some(child) = v.get_mut(f.as_str()) {
                        walk(rest, child, out);
                    }
                }
                Some((InputSeg::Each, rest)) => {
                    if let Value::Array(items) = v {
                        for item in items {
                            walk(rest, item, out);
                        }
                    }
                }
            }
        }
        walk(&self.segs, value, out);
    }
}

/// A pair of ids to remember after success.
#[derive(Debug)]
pub struct RecordPlan {
    /// Id kind.
    pub kind: String,
    /// Template of the internal id over `input`.
    pub internal: CompiledTemplate,
    /// Where the platform id is in the answer.
    pub platform: JsonPathExpr,
}

/// How calls are sent, with every default resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportPlan {
    /// Whole-call deadline (slot waits, attempts, backoffs).
    pub timeout: std::time::Duration,
    /// Longest single attempt (at most `timeout`).
    pub attempt_timeout: std::time::Duration,
    /// Connect timeout.
    pub connect_timeout: std::time::Duration,
    /// Retries after a failed attempt (only when `retry_safe`).
    pub retries: u32,
    /// First backoff.
    pub backoff: std::time::Duration,
    /// Longest backoff.
    pub backoff_max: std::time::Duration,
    /// Whether the operation may be repeated.
    pub retry_safe: bool,
    /// Calls per second allowed.
    pub qps: Option<f64>,
    /// Calls in flight at once.
    pub concurrency: u32,
    /// Circuit breaker.
    pub breaker: Option<BreakerPlan>,
    /// Largest answer read, in bytes.
    pub max_answer: usize,
}

impl TransportPlan {
    /// Default of `max_answer`: 16 MiB.
    pub const DEFAULT_MAX_ANSWER: usize = 16 * 1024 * 1024;
    /// Upper bound of `max_answer`: 1 GiB.
    pub const MAX_MAX_ANSWER: usize = 1024 * 1024 * 1024;
}

/// Circuit breaker settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPlan {
    /// Failure rate that opens it.
    pub failure_rate: f64,
    /// Calls needed before the rate counts.
    pub min_calls: u32,
    /// Counting window.
    pub window: std::time::Duration,
    /// Open time before a trial call.
    pub cool_down: std::time::Duration,
}

/// A request, ready to build.
#[derive(Debug)]
pub struct RequestPlan {
    /// HTTP method.
    pub method: HttpMethod,
    /// URL template (values encoded for where they land).
    pub url: crate::template::UrlTemplate,
    /// Query parameters.
    pub query: Vec<(String, CompiledTemplate)>,
    /// Headers.
    pub headers: Vec<(String, CompiledTemplate)>,
    /// Body.
    pub body: BodyPlan,
    /// Signing recipe.
    pub sign: Option<SignPlan>,
    /// Whether query parameters rendering empty are left out.
    pub omit_empty: bool,
}

/// A request body.
#[derive(Debug)]
pub enum BodyPlan {
    /// No body.
    None,
    /// Form fields.
    Form(Vec<(String, CompiledTemplate)>),
    /// A JSON document whose string leaves are templates.
    Json(JsonTemplate),
    /// An XML document described as JSON (see the `xml` request field).
    Xml(JsonTemplate),
    /// A body mapped from the canonical input (the `body` request field).
    Mapped(BodyMappingPlan),
}

/// A request body mapped from the canonical input.
#[derive(Debug)]
pub struct BodyMappingPlan {
    /// The root element's name for XML; `None` for JSON.
    pub xml_root: Option<String>,
    /// Top-level fields.
    pub fields: Vec<(String, RequestMappingPlan)>,
}

/// One compiled field of a mapped request body.
#[derive(Debug)]
pub struct RequestMappingPlan {
    /// Where the value comes from.
    pub source: RequestSource,
    /// The list to map element by element.
    pub each: Option<Vec<String>>,
    /// Object fields.
    pub fields: Option<Vec<(String, RequestMappingPlan)>>,
    /// Conversion.
    pub kind: Option<crate::config::platform::RequestValueType>,
    /// Minor-unit scale of decimals.
    pub scale: Option<u32>,
    /// Value translation table, keyed by text.
    pub map: Option<IndexMap<String, Value>>,
    /// Fallback value.
    pub default: Option<Value>,
    /// Whether an absent value is sent as `null`.
    pub nullable: bool,
    /// Whether an absent value is an error.
    pub required: bool,
    /// Whether XML text is written as CDATA.
    pub cdata: bool,
}

/// Where a request body value comes from.
#[derive(Debug)]
pub enum RequestSource {
    /// The current scope itself (an object built from `fields`, or each element).
    Current,
    /// A dotted path from a root (`input`, `item`, `settings`...).
    Path(Vec<String>),
    /// A constant.
    Value(Value),
    /// A template.
    Template(CompiledTemplate),
}

/// A JSON document whose string leaves are templates.
#[derive(Debug)]
pub enum JsonTemplate {
    /// A non-string leaf, kept as written.
    Value(Value),
    /// A string leaf.
    Text(CompiledTemplate),
    /// An array.
    Array(Vec<JsonTemplate>),
    /// An object.
    Object(Vec<(String, JsonTemplate)>),
}

/// How an answer is judged.
#[derive(Debug)]
pub struct AnswerPlan {
    /// Body format.
    pub format: BodyFormat,
    /// Statuses counted as success; empty means any 2xx.
    pub success_status: Vec<u16>,
    /// Where the business code is.
    pub success_path: Option<JsonPathExpr>,
    /// Business codes meaning success, as text.
    pub success_values: Vec<String>,
    /// Where the error code is.
    pub error_code: Option<JsonPathExpr>,
    /// Where the error message is.
    pub error_message: Option<JsonPathExpr>,
    /// Where the error's details are.
    pub error_details: Option<JsonPathExpr>,
    /// Error codes worth retrying.
    pub retryable: Vec<String>,
}

/// A compiled mapping.
#[derive(Debug)]
pub struct MappingPlan {
    /// Where the value comes from.
    pub source: MappingSource,
    /// Items to map one by one.
    pub each: Option<JsonPathExpr>,
    /// Object fields.
    pub fields: Option<Vec<(String, MappingPlan)>>,
    /// Conversion.
    pub kind: Option<ValueType>,
    /// Value translation table, keyed by text.
    pub map: Option<IndexMap<String, Value>>,
    /// Fallback value.
    pub default: Option<Value>,
    /// Whether a missing value is an error.
    pub required: bool,
    /// Entity kind for id translation.
    pub id: Option<String>,
    /// Time pattern and offset for `type: time` values that are not RFC 3339.
    pub time_format: Option<(crate::timefmt::TimeFormat, time::UtcOffset)>,
    /// Decimals of the currency, for `type: minor_units`.
    pub scale: u32,
}

/// Where a mapped value comes from.
#[derive(Debug)]
pub enum MappingSource {
    /// The current item itself (a mapping with only `fields`, or `each` without `path`).
    Current,
    /// A JSONPath.
    Path(JsonPathExpr),
    /// A constant.
    Value(Value),
    /// A template.
    Template(CompiledTemplate),
}

/// A callback route.
#[derive(Debug)]
pub struct CallbackPlan {
    /// Path under `/callbacks`.
    pub path: String,
    /// Body format.
    pub format: BodyFormat,
    /// Verification.
    pub verify: Option<VerifyPlan>,
    /// Where the event type comes from.
    pub event_type: DiscriminatorPlan,
    /// Event mappings by canonical event name.
    pub events: IndexMap<String, MappingPlan>,
    /// Deduplication key template.
    pub dedupe_key: Option<CompiledTemplate>,
    /// Acknowledgement.
    pub ack: AckPlan,
    /// Acknowledgements by the platform's name of the event type.
    pub acks: IndexMap<String, AckPlan>,
    /// A handshake answered without being stored.
    pub handshake: Option<HandshakePlan>,
    /// The event time, mapped from the body (absent: the receive time).
    pub occurred_at: Option<MappingPlan>,
    /// What a delivery may hold.
    pub limits: CallbackLimitsPlan,
}

/// An acknowledgement, compiled.
#[derive(Debug)]
pub struct AckPlan {
    /// HTTP status, a template over the delivery (a literal for a fixed status).
    pub status: CompiledTemplate,
    /// Body template over the delivery.
    pub body: CompiledTemplate,
    /// Content type.
    pub content_type: String,
}

impl AckPlan {
    /// An HTTP status (100 to 599) written as text.
    pub fn http_status(text: &str) -> Option<u16> {
        text.trim()
            .parse::<u16>()
            .ok()
            .filter(|s| (100..=599).contains(s))
    }
}

/// A handshake rule, compiled.
#[derive(Debug)]
pub struct HandshakePlan {
    /// Where the marking value is: a body path, or a header (lower case).
    pub value: DiscriminatorPlan,
    /// The value that marks a handshake.
    pub equals: String,
    /// Its answer.
    pub ack: AckPlan,
}

/// The limits of a callback route, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackLimitsPlan {
    /// Largest body, bytes.
    pub body: usize,
    /// Most form fields (and, separately, query parameters).
    pub fields: usize,
    /// Deepest JSON/XML nesting.
    pub depth: usize,
}

impl CallbackLimitsPlan {
    /// Default largest body: 1 MiB.
    pub const DEFAULT_BODY: usize = 1024 * 1024;
    /// Largest body a route may allow: 64 MiB.
    pub const MAX_BODY: usize = 64 * 1024 * 1024;
    /// Default most fields: 1000.
    pub const DEFAULT_FIELDS: usize = 1000;
    /// Most fields a route may allow.
    pub const MAX_FIELDS: usize = 100_000;
    /// Default deepest nesting: 32.
    pub const DEFAULT_DEPTH: usize = 32;
    /// Deepest nesting a route may allow: 127, the deepest JSON serde_json decodes (a
    /// verified body is decoded with it).
    pub const MAX_DEPTH: usize = 127;
}

impl Default for CallbackLimitsPlan {
    fn default() -> Self {
        CallbackLimitsPlan {
            body: Self::DEFAULT_BODY,
            fields: Self::DEFAULT_FIELDS,
            depth: Self::DEFAULT_DEPTH,
        }
    }
}

/// Where the event type of a delivery comes from.
#[derive(Debug)]
pub struct DiscriminatorPlan {
    /// A JSONPath into the body.
    pub path: Option<JsonPathExpr>,
    /// Or a header.
    pub header: Option<String>,
    /// Platform value → canonical event.
    pub map: IndexMap<String, String>,
}

/// A JSONPath parsed once.
///
/// Every path is parsed by `jsonpath-rust` (RFC 9535), which validates it and evaluates the
/// general case. Paths made only of names, indexes and `[*]` — nearly all mapping paths — are
/// also kept as a list of steps and evaluated directly, without the general engine's
/// bookkeeping; a test checks both evaluations agree.
#[derive(Debug, Clone)]
pub struct JsonPathExpr {
    source: String,
    query: Arc<JpQuery>,
    simple: Option<Vec<Step>>,
}

/// One step of a simple path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(i64),
    All,
}

/// `$.a.b[0]['c d'][*]` as steps; `None` for anything else (filters, slices, `..`, unions).
fn simple_steps(source: &str) -> Option<Vec<Step>> {
    let mut rest = source.strip_prefix('$')?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(".*") {
            steps.push(Step::All);
            rest = r;
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let name = r.get(..end)?;
            let ok = !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_');
            if !ok || name.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            steps.push(Step::Key(name.to_string()));
            rest = r.get(end..)?;
        } else if let Some(r) = rest.strip_prefix("[*]") {
            steps.push(Step::All);
            rest = r;
        } else if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']")?;
            let name = r.get(..end)?;
            if name.contains(['\\', '\'']) {
                return None;
            }
            steps.push(Step::Key(name.to_string()));
            rest = r.get(end + 2..)?;
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let n = r.get(..end)?;
            let ok = !n.is_empty()
                && n.trim_start_matches('-')
                    .chars()
                    .all(|c| c.is_ascii_digit())
                && !n.starts_with("-0")
                && (n == "0" || !n.trim_start_matches('-').starts_with('0'));
            if !ok {
                return None;
            }
            steps.push(Step::Index(n.parse().ok()?));
            rest = r.get(end + 1..)?;
        } else {
            return None;
        }
    }
    Some(steps)
}

fn walk<'a>(steps: &[Step], v: &'a Value, out: &mut Vec<&'a Value>) {
    let Some((step, rest)) = steps.split_first() else {
        out.push(v);
        return;
    };
    match (step, v) {
        (Step::Key(k), Value::Object(m)) => {
            if let Some(c) = m.get(k) {
                walk(rest, c, out);
            }
        }
        (Step::Index(i), Value::Array(a)) => {
            let len = i64::try_from(a.len()).unwrap_or(i64::MAX);
            let at = if *i < 0 { len + i } else { *i };
            if let Some(c) = usize::try_from(at).ok().and_then(|at| a.get(at)) {
                walk(rest, c, out);
            }
        }
        (Step::All, Value::Array(a)) => a.iter().for_each(|c| walk(rest, c, out)),
        (Step::All, Value::Object(m)) => m.values().for_each(|c| walk(rest, c, out)),
        _ => {}
    }
}

impl JsonPathExpr {
    /// Parses a JSONPath such as `$.data.items[*]`.
    pub fn parse(source: &str) -> Result<Self, String> {
        let query =
            jsonpath_rust::parser::parse_json_path(source).map_err(|e| one_line(&e.to_string()))?;
        Ok(JsonPathExpr {
            source: source.to_string(),
            query: Arc::new(query),
            simple: simple_steps(source),
        })
    }

    /// The path as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every value the path selects in `doc`.
    pub fn query<'a>(&self, doc: &'a Value) -> Vec<&'a Value> {
        match &self.simple {
            Some(steps) => {
                let mut out = Vec::new();
                walk(steps, doc, &mut out);
                out
            }
            None => self.query_general(doc),
        }
    }

    fn query_general<'a>(&self, doc: &'a Value) -> Vec<&'a Value> {
        jsonpath_rust::query::js_path_process(&self.query, doc)
            .map(|refs| refs.into_iter().map(|r| r.val).collect())
            .unwrap_or_default()
    }

    /// The first value the path selects, if any.
    pub fn first<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        match &self.simple {
            Some(steps) => {
                let mut out = Vec::new();
                walk(steps, doc, &mut out);
                out.into_iter().next()
            }
            None => self.query_general(doc).into_iter().next(),
        }
    }
}

/// Squeezes a parser's multi-line report into one line: where, and what was expected.
fn one_line(report: &str) -> String {
    let at = report
        .lines()
        .find_map(|l| l.find("--> ").and_then(|i| l.get(i + 4..)))
        .and_then(|pos| pos.rsplit(':').next())
        .map(|col| format!("at character {col}"));
    let expected = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("= "))
        .map(str::to_string);
    match (at, expected) {
        (Some(at), Some(exp)) => format!("{at}: {exp}"),
        (Some(at), None) => at,
        _ => report
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn windows_cover_the_span_back_to_back() {
        let w = WindowsPlan {
            max: std::time::Duration::from_secs(3600),
            start: None,
        };
        let t = |h: i64, m: i64| {
            time::macros::datetime!(2026-03-01 00:00 UTC) + time::Duration::minutes(h * 60 + m)
        };
        // 2h30 in windows of 1h: two whole ones and the half left.
        let got: Vec<_> = w.windows(t(0, 0), t(2, 30)).collect();
        assert_eq!(
            got,
            vec![(t(0, 0), t(1, 0)), (t(1, 0), t(2, 0)), (t(2, 0), t(2, 30))]
        );
        assert_eq!(w.window_from(t(2, 0), t(2, 0)), None);
        assert_eq!(w.windows(t(3, 0), t(2, 0)).count(), 0);
    }

    #[test]
    fn simple_paths_agree_with_the_general_engine() {
        let doc = json!({
            "a": {"b": [1, {"c": "x"}, [3, 4]], "d e": true, "n": null},
            "items": [{"id": 1, "sku": [{"id": "s1"}, {"id": "s2"}]}, {"id": 2, "sku": []}],
            "k9": {"x": 1, "y": 2}
        });
        let paths = [
            "$",
            "$.a",
            "$.a.b",
            "$.a.b[0]",
            "$.a.b[1].c",
            "$.a.b[-1]",
            "$.a.b[2][1]",
            "$.a.b[9]",
            "$['a']['d e']",
            "$.a.n",
            "$.items[*].id",
            "$.items[*].sku[*].id",
            "$.k9.*",
            "$.missing.x",
            "$.a.b[*]",
            "$.items[0].sku[1]",
        ];
        for p in paths {
            let e = JsonPathExpr::parse(p).unwrap();
            assert!(e.simple.is_some(), "{p} should be simple");
            assert_eq!(e.query(&doc), e.query_general(&doc), "{p}");
        }
        for p in [
            "$..id",
            "$.items[?@.id == 1]",
            "$.a.b[0:2]",
            "$.a['b','d e']",
        ] {
            let e = JsonPathExpr::parse(p).unwrap();
            assert!(e.simple.is_none(), "{p} is not simple");
        }
    }

    #[test]
    fn json_paths_parse_once_and_query() {
        let p = JsonPathExpr::parse("$.result[*].skuId").unwrap();
        let doc = json!({"result": [{"skuId": "a"}, {"skuId": "b"}]});
        assert_eq!(p.query(&doc), vec![&json!("a"), &json!("b")]);
        assert_eq!(
            JsonPathExpr::parse("$.code")
                .unwrap()
                .first(&json!({"code": 200})),
            Some(&json!(200))
        );
        for bad in ["$.result[*", "result", "$..", "$.a[?(@.x ==]"] {
            assert!(JsonPathExpr::parse(bad).is_err(), "{bad} should not parse");
        }
    }
}
