//! The platform file: one YAML document describing one external platform.
//!
//! Every field's doc comment becomes the description editors show from
//! `schemas/platform.schema.json`, so they are written for integrators.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One external supplier platform, described entirely in YAML.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlatformFile {
    /// Stable identifier of the platform: lowercase letters, digits, `_` and `-`, starting with
    /// a letter. It appears in URLs (`/v1/platforms/{platform}/...`) and in the key-mapping store,
    /// so changing it later orphans stored mappings.
    pub platform: String,
    /// Human-readable name shown in listings and status pages.
    #[serde(default)]
    pub title: Option<String>,
    /// Free text for the people maintaining this file.
    #[serde(default)]
    pub description: Option<String>,
    /// Non-secret settings (base URL, quotas, region...). Referenced from templates as
    /// `{{settings.NAME}}`. A string value may be `${env:NAME}` or `${env:NAME:-default}` to
    /// read an environment variable at load time. The config center may override them.
    #[serde(default)]
    pub settings: IndexMap<String, SettingValue>,
    /// After credentials are pushed, how long inbound verification still accepts signatures
    /// made with the previous values (outbound requests use the new ones at once), such as
    /// `10m`. Default: none.
    #[serde(default)]
    pub rotation_window: Option<String>,
    /// Names of the secret values this platform needs (for example `app_key`, `app_secret`).
    /// Their values never live in this file: they come from the credential store, a
    /// credentials file or the environment. Referenced as `{{credentials.NAME}}`.
    #[serde(default)]
    pub credentials: Vec<String>,
    /// Request defaults shared by every operation; an operation's own `request` adds to and
    /// overrides them key by key.
    #[serde(default)]
    pub request: RequestSpec,
    /// How every answer of this platform is judged and decoded; an operation may override.
    #[serde(default)]
    pub response: ResponseSpec,
    /// The canonical operations this platform supports, keyed by canonical name
    /// (`product.list`, `product.get`, `inventory.get`, `order.create`, `order.get`,
    /// `order.list`, `order.cancel`, `logistics.get`). Every one is optional.
    #[serde(default)]
    pub operations: IndexMap<String, Operation>,
    /// Routes on which this platform pushes notifications, mounted under `/callbacks/`.
    #[serde(default)]
    pub callbacks: Vec<Callback>,
    /// Scheduled fetches of messages, for platforms that offer a "fetch my messages" call
    /// instead of (or besides) callbacks. Each message goes through the same pipeline as a
    /// callback delivery (deduplicated, mapped, stored, dispatched).
    #[serde(default)]
    pub pollers: Vec<Poller>,
    /// How requests prove who sends them, besides (or instead of) a signing recipe.
    /// Default: `none`.
    #[serde(default)]
    pub auth: Option<AuthSpec>,
    /// How calls to this platform are sent: timeouts, retries, rate limit, concurrency cap and
    /// circuit breaker. An operation's own `transport` overrides these field by field.
    #[serde(default)]
    pub transport: TransportSpec,
    /// Id kinds (`spu`, `sku`, `order`...) → what to do with a platform id that has no internal
    /// id yet. Every kind the file uses (a mapping's `id`, an operation's `ids` or `record`)
    /// must be listed here, so a misspelt kind is a load-time error rather than an id
    /// namespace of its own. Default: none.
    #[serde(default)]
    pub ids: IndexMap<String, IdPolicy>,
    /// Monitoring thresholds of this platform: when one is crossed the gateway sends
    /// `platform.degraded` (or `inventory.low` for stock) to the targets subscribed to it, and
    /// `platform.recovered` once it is back (see docs/operations.md). Each field left out takes
    /// the gateway-wide default of `monitoring.defaults` in `entrepot.yaml`; a threshold set in
    /// neither is not watched. Default: none.
    #[serde(default)]
    pub monitoring: MonitoringSpec,
}

/// Monitoring thresholds, in a platform file (`monitoring`) or as gateway-wide defaults
/// (`monitoring.defaults` in `entrepot.yaml`). Every field is optional: a platform's own value
/// wins over the default, field by field; a threshold set in neither is not watched.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitoringSpec {
    /// The sliding window over which the error rate, the p95 latency and the callback refusal
    /// rate are computed, from `1s` to `1d`, such as `5m`. Default: `5m`.
    #[serde(default)]
    pub window: Option<String>,
    /// How long a threshold must stay crossed before `platform.degraded` is sent, and stay
    /// back before `platform.recovered` is sent, so a value flapping around its limit sends
    /// nothing, such as `1m`; `0s` reports at the first evaluation. Default: `1m`.
    #[serde(default)]
    pub hold: Option<String>,
    /// Hysteresis: a tripped rate, latency or dead-letter threshold counts as back only once
    /// its value is at or below this fraction of its limit (above 0, at most 1), such as
    /// `0.8`. Default: `0.8`.
    #[serde(default)]
    pub recover_at: Option<f64>,
    /// Fewest calls (for `error_rate` and `latency_p95`) or callback deliveries (for
    /// `callback_refusal_rate`) in the window for the rate or percentile to count; with fewer,
    /// the threshold is not crossed (and a tripped one recovers). At least 1. Default: `20`.
    #[serde(default)]
    pub min_calls: Option<u32>,
    /// Trips when the share of canonical calls failing because of the platform (refused,
    /// transport error, timeout, breaker or rate-limit refusal, unmappable answer) over the
    /// window is above this fraction (above 0, at most 1), such as `0.2`. Calls refused for
    /// the caller's own input and the gateway's own failures do not count. Default: none.
    #[serde(default)]
    pub error_rate: Option<f64>,
    /// Trips when the 95th percentile of the duration of canonical calls over the window
    /// (slot waits, attempts and backoffs included; measured to within about 20%) is above
    /// this, such as `2s`. Default: none.
    #[serde(default)]
    pub latency_p95: Option<String>,
    /// Trips when the platform's circuit breaker has stayed open (or half-open) for longer
    /// than this, such as `1m`, as seen by this gateway instance. Default: none.
    #[serde(default)]
    pub breaker_open: Option<String>,
    /// Trips when the share of this platform's callback deliveries refused (bad signature,
    /// timestamp or replay, over a limit, malformed) over the window is above this fraction
    /// (above 0, at most 1), such as `0.1`. Default: none.
    #[serde(default)]
    pub callback_refusal_rate: Option<f64>,
    /// Trips when more than this many events produced by this platform's callbacks and pollers
    /// are dead-lettered (for any target), such as `10`; `0` trips at the first one. Only
    /// replaying them brings it back (nothing removes a dead letter). Default: none.
    #[serde(default)]
    pub dead_letters: Option<u64>,
    /// `inventory.low` is sent when a SKU's stock reported by an `inventory.changed` callback
    /// falls to or below this many units, such as `5`: once per crossing (staying low sends
    /// nothing more; going back above re-arms it). Default: none.
    #[serde(default)]
    pub low_stock: Option<u64>,
    /// Stock thresholds of single SKUs, by the mall's internal SKU id (the `sku_id` of the
    /// events), overriding `low_stock` for them, such as `{ SKU-1: 20 }`. Default: none.
    #[serde(default)]
    pub low_stock_skus: IndexMap<String, u64>,
}

/// An authentication scheme. Values are templates over `credentials` and `settings`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[allow(clippy::large_enum_variant)] // read once per file load; boxing would only add noise
pub enum AuthSpec {
    /// No authentication (or only a signing recipe).
    None,
    /// A fixed key in a header or a query parameter.
    ApiKey {
        /// Where the key goes.
        #[serde(rename = "in")]
        location: KeyLocation,
        /// Header or parameter name, such as `X-Api-Key`.
        name: String,
        /// The key, such as `{{credentials.api_key}}`.
        value: String,
    },
    /// HTTP Basic authentication.
    Basic {
        /// User name, such as `{{credentials.user}}`.
        username: String,
        /// Password, such as `{{credentials.password}}`.
        password: String,
    },
    /// A fixed bearer token: `Authorization: Bearer <token>`.
    Bearer {
        /// The token, such as `{{credentials.token}}`.
        token: String,
    },
    /// OAuth 2 client credentials (or any token endpoint): the gateway requests a token, caches
    /// it, refreshes it before it expires and once when the platform answers 401, with a single
    /// refresh in flight however many calls wait for it.
    Oauth2 {
        /// URL of the token endpoint.
        token_url: String,
        /// Form fields of the token request, such as `grant_type: client_credentials`,
        /// `client_id: "{{credentials.client_id}}"`, `client_secret: ...`.
        form: IndexMap<String, String>,
        /// Extra headers of the token request (for example HTTP Basic client credentials).
        #[serde(default)]
        headers: IndexMap<String, String>,
        /// JSONPath of the token in the answer. Default: `$.access_token`.
        #[serde(default)]
        token_path: Option<String>,
        /// JSONPath of the token's lifetime in seconds. Default: `$.expires_in`.
        #[serde(default)]
        expires_in_path: Option<String>,
        /// Lifetime assumed when the answer gives none. Default: `1h`.
        #[serde(default)]
        default_ttl: Option<String>,
        /// How long before expiry the token is renewed. Default: `60s`.
        #[serde(default)]
        refresh_before: Option<String>,
        /// Header receiving the token. Default: `Authorization`.
        #[serde(default)]
        header: Option<String>,
        /// Template of that header's value over `token`. Default: `Bearer {{token}}`.
        #[serde(default)]
        value: Option<String>,
    },
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyLocation {
    /// A request header.
    Header,
    /// A query-string parameter.
    Query,
}

/// What happens to a platform id without an internal id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdPolicy {
    /// Allocate a new internal id and remember the pair (products seen for the first time).
    Allocate,
    /// Refuse the answer with a mapping error (ids that must have been created by the mall).
    Require,
    /// The platform uses the mall's own ids for this kind (an order placed under the mall's
    /// order id): an id without a mapping passes unchanged both ways, so the gateway can ask
    /// about an order whose creation it never saw answered. Pairs an operation `record`s are
    /// still kept (and route calls by owner).
    Same,
}

/// How calls are sent. Every field is optional; defaults are given per field.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransportSpec {
    /// Deadline of the whole call, from the moment it is accepted to the last byte of the
    /// answer: waiting for a rate-limit or concurrency slot, every attempt, backoffs and
    /// `Retry-After` waits all count against it. Default: `10s`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Time allowed for one attempt (connection to last byte), within `timeout`; set it
    /// shorter than `timeout` to leave room for retrying an attempt that timed out.
    /// Default: the whole `timeout`.
    #[serde(default)]
    pub attempt_timeout: Option<String>,
    /// Time allowed to connect. Default: `3s`.
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// Retries after a failed attempt (timeouts, connection errors, 5xx, retryable business
    /// codes). Only operations that are safe to repeat are retried. Default: `2`.
    #[serde(default)]
    pub retries: Option<u32>,
    /// First backoff; each retry doubles it, with full jitter, up to `backoff_max`.
    /// Default: `200ms`.
    #[serde(default)]
    pub backoff: Option<String>,
    /// Longest backoff. Default: `5s`.
    #[serde(default)]
    pub backoff_max: Option<String>,
    /// Whether this operation may be repeated without harm. Default: true for reads
    /// (`*.get`, `*.list`), false for `order.create` and `order.cancel` (set it to true when
    /// the platform deduplicates them, for example by the order id).
    #[serde(default)]
    pub retry_safe: Option<bool>,
    /// The platform's quota in calls per second; calls wait for their turn, in order. A call
    /// whose turn would come after its deadline is refused at once (503 with `retry_after`);
    /// a caller that goes away gives its turn up. Default: none.
    #[serde(default)]
    pub qps: Option<f64>,
    /// Calls in flight at once; a call waiting for a free place counts the wait against its
    /// `timeout`, and is refused (503) when none comes free in time. Default: 64.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Circuit breaker. Default: opens at a 50% failure rate over at least 20 calls in 30s,
    /// half-opens after 15s.
    #[serde(default)]
    pub breaker: Option<BreakerSpec>,
    /// Largest answer read from the platform (and from its OAuth 2 token endpoint): a number
    /// of bytes, or a number with a unit `B`, `KiB`, `MiB` or `GiB`, such as `32MiB`; 1 byte to
    /// `1GiB`. An answer declaring a larger `Content-Length` is refused before its body is
    /// read, and reading any other answer stops at the limit: the call fails with a 502
    /// naming the limit (not retried; it counts as a failure of the platform for the circuit
    /// breaker). Default: `16MiB`.
    #[serde(default)]
    pub max_answer: Option<ByteSize>,
}

/// When the circuit breaker opens and when it tries again.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    /// Failure rate (0 to 1) that opens the breaker. Default: `0.5`.
    #[serde(default)]
    pub failure_rate: Option<f64>,
    /// Calls needed in the window before the rate counts. Default: `20`.
    #[serde(default)]
    pub min_calls: Option<u32>,
    /// Length of the counting window. Default: `30s`.
    #[serde(default)]
    pub window: Option<String>,
    /// How long the breaker stays open before letting one trial call through. Default: `15s`.
    #[serde(default)]
    pub cool_down: Option<String>,
    /// Set to false to disable the breaker. Default: true.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A setting's value: a string, a number or a boolean.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum SettingValue {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Integer(i64),
    /// A decimal number.
    Float(f64),
    /// A string; `${env:NAME}` and `${env:NAME:-default}` are expanded at load time.
    String(String),
}

/// HTTP method of an outbound request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

/// How to build a request. Every string value is a template: `{{input.sku_id}}`,
/// `{{settings.base_url}}`, `{{credentials.app_key}}`, helpers such as
/// `{{join input.sku_ids ','}}` or `{{now 'yyyy-MM-dd HH:mm:ss' tz='+08:00'}}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// HTTP method. Default: `POST`.
    #[serde(default)]
    pub method: Option<HttpMethod>,
    /// Full URL template, for example `{{settings.base_url}}/orders/{{input.order_id}}`.
    /// Each value is encoded for where it lands, so no value can change the URL's shape: in
    /// the path it is one segment (every byte outside `A-Z a-z 0-9 - . _ ~` percent-encoded,
    /// and `.`/`..` refused with a 400); after `?` it is an encoded query value; before the
    /// path (a leading `{{settings.base_url}}`) it is inserted as it is, and inputs may not
    /// appear there. `{{raw settings.x}}` inserts a configured value unencoded (a prefix with
    /// slashes); `raw` and `urlencode` may not be given inputs. Default: the platform's
    /// `request.url`; one of the two is required.
    #[serde(default)]
    pub url: Option<String>,
    /// Query-string parameters, in the order given. Values are templates.
    #[serde(default)]
    pub query: IndexMap<String, String>,
    /// Request headers. Values are templates.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Form fields sent as `application/x-www-form-urlencoded`. Values are templates.
    /// Mutually exclusive with `json`.
    #[serde(default)]
    pub form: IndexMap<String, String>,
    /// A JSON body. Its structure is kept as written; every string leaf is a template, so data
    /// can never break the JSON. Mutually exclusive with `form`.
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// An XML body, written as YAML: the single top-level key is the root element, nested keys
    /// are child elements, a list repeats an element, `@name` keys are attributes and `#text` is
    /// an element's text. String leaves are templates, escaped when written. Mutually exclusive
    /// with `form` and `json`.
    #[serde(default)]
    pub xml: Option<serde_json::Value>,
    /// A JSON or XML body built by mapping from the canonical input, field by field: nested
    /// objects, arrays built per element (`each: input.lines`), constants, defaults, optional
    /// fields and typed values (decimals from minor units). The mirror of a response mapping.
    /// Mutually exclusive with `form`, `json` and `xml`. Default: none.
    #[serde(default)]
    pub body: Option<BodyMapping>,
    /// When true, query parameters whose value renders empty are left out of the URL (so a
    /// first page can leave out `cursor`) and are not signed. Default: false (sent as
    /// `name=`); an operation's value overrides the platform's.
    #[serde(default)]
    pub omit_empty: Option<bool>,
    /// Signing recipe run over the fully built request (see the recipe reference).
    #[serde(default)]
    pub sign: Option<crate::config::recipe::SignRecipe>,
}

/// A request body mapped from the canonical input.
///
/// ```yaml
/// body:
///   fields:
///     reference: { path: input.order_id }
///     lines:
///       each: input.lines
///       fields:
///         sku: { path: item.sku_id }
///         quantity: { path: item.quantity, type: integer }
///         unit_price: { path: item.unit_price.amount, type: decimal, scale: 2 }
/// ```
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BodyMapping {
    /// Format of the body sent. Default: `json` (`application/json`); `xml` sends
    /// `application/xml` with the element named by `root`.
    #[serde(default)]
    pub format: Option<RequestBodyFormat>,
    /// For `format: xml`: the name of the root element, such as `order`. Required for XML,
    /// not allowed for JSON.
    #[serde(default)]
    pub root: Option<String>,
    /// The body's top-level fields (in XML: the root's child elements; a name starting with
    /// `@` is an attribute and `#text` the element's text): field name → its mapping.
    /// Fields are written in the order given.
    pub fields: IndexMap<String, RequestMapping>,
}

/// Format of a mapped request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestBodyFormat {
    /// A JSON object (the default).
    #[default]
    Json,
    /// An XML document under one root element.
    Xml,
}

/// How one field of a request body is built from the canonical input.
///
/// A mapping reads one value (`path`, `value` or `template`), or builds an object from
/// `fields`, or builds an array with `each` (an input path to a list) and `fields` (or
/// `path`) applied to every element, which is called `item` inside. Paths are names joined by
/// `.`, starting with `input` (the canonical input), `item` (the current element of the
/// nearest `each`, or the value found by a `path` given with `fields`) or `settings`.
///
/// A value that is absent (missing or `null`) leaves the field out, unless `default` gives a
/// value, `nullable: true` sends `null`, or `required: true` refuses the call. A path that can
/// only reach one element of a list (`input.lines.sku_id`, `input.lines.0.sku_id`) is refused
/// when the file loads: build the list with `each`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestMapping {
    /// Where the value is, such as `input.order_id` or `item.sku_id`. With `fields`, the
    /// object is sent only when this value is present, and `item` inside is this value.
    /// Default: none.
    #[serde(default)]
    pub path: Option<String>,
    /// A constant value, sent as written (a string, number, boolean, list or object).
    /// Default: none.
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// A template producing a string, over `input`, `item`, `settings`, `credentials`,
    /// `platform` and `operation`, such as `"{{input.address.province}} {{input.address.city}}"`.
    /// Default: none.
    #[serde(default)]
    pub template: Option<String>,
    /// An input path to a list, such as `input.lines`: the field is an array with one mapped
    /// element per list element (`item` inside). An element that maps to nothing is an error,
    /// never left out. Default: none.
    #[serde(default)]
    pub each: Option<String>,
    /// Builds an object: field name → its mapping. Default: none.
    #[serde(default)]
    pub fields: Option<IndexMap<String, RequestMapping>>,
    /// Converts the value before it is sent. Default: sent as found in the input.
    #[serde(rename = "type", default)]
    pub kind: Option<RequestValueType>,
    /// For `type: decimal` and `type: number`: the value is an integer in minor units and is
    /// divided by 10^scale, such as 1999 with scale 2 → `19.99`, with scale 3 → `1.999`, with
    /// scale 0 → `1999`. Any currency's exponent can be given (0 to 18). Default: none (the
    /// value is already a decimal number).
    #[serde(default)]
    pub scale: Option<u32>,
    /// Translates canonical values into platform values (`standard: STD`); the input value is
    /// looked up as text. A value missing from the table is an error unless `default` is set.
    /// Default: none.
    #[serde(default)]
    pub map: Option<IndexMap<String, serde_json::Value>>,
    /// Value sent when the input has none (or a value missing from `map`), as written.
    /// Default: none.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// When the input has no value: true sends `null`, false leaves the field out.
    /// Default: false.
    #[serde(default)]
    pub nullable: bool,
    /// When true, an absent value refuses the call with an error naming the field.
    /// Default: false.
    #[serde(default)]
    pub required: bool,
    /// For XML bodies: write the text as a CDATA section (`<![CDATA[...]]>`) instead of
    /// escaping it. Default: false.
    #[serde(default)]
    pub cdata: bool,
}

/// Conversion applied to a value of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestValueType {
    /// Text; numbers and booleans are written out.
    String,
    /// A whole number (numeric text is accepted); a JSON number.
    Integer,
    /// An exact decimal sent as a JSON string (`"19.99"`); with `scale`, from minor units.
    Decimal,
    /// An exact decimal sent as a JSON number (`19.99`, written digit for digit, never
    /// rounded through floating point); with `scale`, from minor units.
    Number,
    /// `true`/`false`; also `1`/`0` and `"true"`/`"false"`.
    Bool,
}

/// Format of a body sent or received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// JSON (the default).
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`. A name sent once is a string; a name sent several
    /// times is an array of its values, in the order sent (`a=1&a=2` is `{"a": ["1", "2"]}`),
    /// and a `canonical` step over `form` sees every pair.
    Form,
    /// XML; elements become object keys, repeated elements arrays, text content strings.
    Xml,
    /// Plain text: the whole body, decoded as UTF-8 (invalid sequences replaced), is one
    /// string, so `$` is the text itself.
    Text,
}

/// How answers are judged: which ones are successes and where the error code is.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    /// Format of the answer body. Default: `json`.
    #[serde(default)]
    pub format: Option<BodyFormat>,
    /// The condition an answer must meet to be a success. Default: HTTP status 2xx.
    #[serde(default)]
    pub success: Option<SuccessRule>,
    /// Where a failed answer keeps its code and message.
    #[serde(default)]
    pub error: Option<ErrorSpec>,
}

/// A success condition: the HTTP status and, optionally, a business code in the body.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SuccessRule {
    /// HTTP statuses counted as success. Default: any 2xx.
    #[serde(default)]
    pub status: Vec<u16>,
    /// JSONPath of a business code in the body, for example `$.code`.
    #[serde(default)]
    pub path: Option<String>,
    /// The value at `path` that means success (compared as text, so `200` and `"200"` match).
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    /// Several values at `path` that mean success. Use either `equals` or `one_of`.
    #[serde(default)]
    pub one_of: Vec<serde_json::Value>,
}

/// Where a failed answer keeps its code and message.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorSpec {
    /// JSONPath of the platform's error code, for example `$.code`.
    #[serde(default)]
    pub code: Option<String>,
    /// JSONPath of the platform's error message, for example `$.msg`.
    #[serde(default)]
    pub message: Option<String>,
    /// JSONPath of further details of the error (a list of field problems, for example
    /// `$.error.details`), passed on to the caller as `platform_details` when its JSON text
    /// is at most 4 KiB.
    #[serde(default)]
    pub details: Option<String>,
    /// Platform error codes after which a retry may succeed (rate limited, busy...).
    #[serde(default)]
    pub retryable: Vec<String>,
}

/// One canonical operation as this platform implements it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// What this operation is for on this platform, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// The request; adds to and overrides the platform-wide `request` key by key.
    #[serde(default)]
    pub request: RequestSpec,
    /// Answer judging for this operation; overrides the platform-wide `response` rules.
    #[serde(default)]
    pub answer: Option<ResponseSpec>,
    /// How the platform's answer maps onto the canonical output of this operation. Its
    /// `fields` are checked against the output schema when the file loads: each must be a
    /// canonical field, and each required field must be mapped so that it cannot be left out
    /// (`required: true`, a `default`, a `value` or a `template`). Default: the answer as it is.
    #[serde(default)]
    pub response: Option<Mapping>,
    /// Internal ids in the canonical input to translate into platform ids before the request
    /// is built: input path → id kind. Paths are field names joined by `.`, with `[*]` after
    /// an array, such as `sku_ids[*]`, `lines[*].sku_id` or `order_id`; checked against the
    /// operation's canonical input when the file loads. An id without a mapping is refused
    /// with a clear error. Default: none.
    #[serde(default)]
    pub ids: IndexMap<String, String>,
    /// Pairs of ids to remember after a successful call, such as the platform's order id for
    /// the mall's order id.
    #[serde(default)]
    pub record: Vec<RecordSpec>,
    /// Transport overrides for this operation.
    #[serde(default)]
    pub transport: TransportSpec,
    /// Time windows, for a listing the platform answers only over a bounded span of time:
    /// `product.list` between `updated_since` and `updated_before`, `order.list` between
    /// `from` and `to`; the request must read both bounds. The flows then split what they list
    /// into consecutive windows no wider than `max` and page through each window with its
    /// cursor. Default: none, one listing.
    #[serde(default)]
    pub windows: Option<WindowsSpec>,
}

/// How a listing bounded in time is split into windows.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowsSpec {
    /// The widest span one request may cover, such as `30d`, `24h` or `15m`.
    pub max: String,
    /// Where a full listing starts, as an RFC 3339 time such as `2020-01-01T00:00:00Z`: the
    /// oldest change the platform keeps, not in the future. Required on `product.list` (a full
    /// product sync walks the windows from here to the moment it started); refused on
    /// `order.list`, whose windows follow the caller's own bounds.
    #[serde(default)]
    pub start: Option<String>,
}

/// A pair of ids learnt from a successful call.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordSpec {
    /// Id kind, such as `order`; declared under the platform's `ids`.
    pub kind: String,
    /// Template of the internal id, over the canonical input: `{{input.order_id}}`.
    pub internal: String,
    /// JSONPath of the platform id in the answer: `$.result.orderId`.
    pub platform: String,
}

/// A mapping from a platform document (an answer or a callback body) to a canonical value.
///
/// A mapping either reads one value (`path`, `value` or `template`), or builds an object from
/// `fields`, or builds an array with `each` (a JSONPath selecting the items) and `fields` (or
/// `path`) applied to every item. Paths inside `each` are relative to the item.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// JSONPath of the value, for example `$.data.skuId`.
    #[serde(default)]
    pub path: Option<String>,
    /// A constant value.
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// A template producing a string, over `item` (the current item) and `doc` (the whole
    /// document); in an operation's response also `input`, the canonical input as the caller
    /// gave it (the mall's own ids), for answers that do not repeat it.
    #[serde(default)]
    pub template: Option<String>,
    /// JSONPath selecting several items; the result is an array with one mapped value each.
    #[serde(default)]
    pub each: Option<String>,
    /// Builds an object: canonical field name → its mapping.
    #[serde(default)]
    pub fields: Option<IndexMap<String, Mapping>>,
    /// Converts the value. Default: kept as found.
    #[serde(rename = "type", default)]
    pub kind: Option<ValueType>,
    /// Translates platform values (status codes...) into canonical ones; the platform value is
    /// looked up as text.
    #[serde(default)]
    pub map: Option<IndexMap<String, serde_json::Value>>,
    /// Value used when the platform sends none (or a value missing from `map`). An explicit
    /// `default: null` yields `null` (the field is present, with no value); without `default`
    /// a missing optional value is left out. Default: none.
    #[serde(default, deserialize_with = "present")]
    pub default: Option<serde_json::Value>,
    /// When true, a missing value is a mapping error naming the platform, operation and path.
    /// Default: false (a missing optional value is left out and counted).
    #[serde(default)]
    pub required: bool,
    /// Marks the value as an id of this entity kind (`spu`, `sku`, `order`...), declared under
    /// the platform's `ids`: it is translated between the platform's id and the mall's internal
    /// id by the key-mapping store. Default: none.
    #[serde(default)]
    pub id: Option<String>,
    /// For `type: time`: the platform's time format when it is not RFC 3339 or Unix
    /// seconds/milliseconds, such as `yyyy-MM-dd HH:mm:ss`.
    #[serde(default)]
    pub format: Option<String>,
    /// For `type: time` with a `format` that has no zone: its UTC offset, such as `+08:00`.
    /// Default: `+00:00`.
    #[serde(default)]
    pub offset: Option<String>,
    /// For `type: minor_units`: the currency's number of decimals, 0 to 18 (2 for EUR, USD or
    /// CNY; 0 for JPY; 3 for KWD). Required with `minor_units`, not allowed otherwise.
    #[serde(default)]
    pub scale: Option<u32>,
}

/// Conversion applied to a mapped value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// Text; numbers and booleans are written out.
    String,
    /// A whole number; numeric text is parsed.
    Integer,
    /// An exact decimal kept as text (`"12.50"`).
    Decimal,
    /// `true`/`false`; also `1`/`0` and `"true"`/`"false"`.
    Bool,
    /// A time, normalised to RFC 3339.
    Time,
    /// Money in yuan (decimal major units) converted to integer fen.
    Fen,
    /// Money as a decimal amount in major units (`"19.99"`, `19.99`) converted to integer minor
    /// units with the field's `scale`: the currency's number of decimals (2 for EUR or CNY →
    /// 1999, 0 for JPY, 3 for KWD). More decimals than `scale` are refused, never rounded.
    MinorUnits,
}

/// A scheduled fetch of the platform's messages.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Poller {
    /// Name, unique in this file; deliveries are recorded with the route `poll:NAME`.
    pub name: String,
    /// How often to fetch, such as `30s`.
    pub every: String,
    /// The fetch request; adds to the platform-wide `request` like an operation's.
    #[serde(default)]
    pub request: RequestSpec,
    /// Answer judging; overrides the platform-wide `response` rules.
    #[serde(default)]
    pub answer: Option<ResponseSpec>,
    /// JSONPath selecting the messages in the answer, such as `$.data.messages[*]`; each is one
    /// delivery.
    pub items: String,
    /// Picks the canonical event type of a message (paths are relative to the message).
    pub event_type: Discriminator,
    /// Canonical event type → how a message maps onto that event's data.
    #[serde(default)]
    pub events: IndexMap<String, Mapping>,
    /// Template of the deduplication key over the message as `body`, such as `{{body.id}}`:
    /// a message fetched twice makes one event.
    #[serde(default)]
    pub dedupe_key: Option<String>,
    /// Where the event's `occurred_at` comes from, as a callback's `occurred_at` (paths are
    /// relative to the message). Default: the time the message was fetched.
    #[serde(default)]
    pub occurred_at: Option<Mapping>,
}

/// A route on which the platform pushes notifications.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Callback {
    /// Path under `/callbacks`, starting with `/`, for example `/acme/notify`. Unique across
    /// all platforms.
    pub path: String,
    /// Format of the pushed body. Default: `json`.
    #[serde(default)]
    pub format: Option<BodyFormat>,
    /// Verification recipe: proves the delivery is genuine. Without it every delivery is
    /// accepted, which is only acceptable on a private network.
    #[serde(default)]
    pub verify: Option<crate::config::recipe::VerifyRecipe>,
    /// Picks the canonical event type of a delivery.
    pub event_type: Discriminator,
    /// Canonical event type → how the delivery's body maps onto that event's data.
    #[serde(default)]
    pub events: IndexMap<String, Mapping>,
    /// Template of the deduplication key (a delivery id, or a value built from the body such as
    /// `{{body.notifyId}}`). Deliveries with an already seen key produce no new event.
    #[serde(default)]
    pub dedupe_key: Option<String>,
    /// The answer the platform expects once the delivery is stored (also for a duplicate and
    /// for a delivery of an unknown type, which are stored too). Default: status 200, empty
    /// body, `application/json`.
    #[serde(default)]
    pub ack: Option<Ack>,
    /// Acknowledgements for some event types, by the platform's own name of the type (the
    /// value `event_type` reads, such as `url_verification` or `order.paid`), in place of
    /// `ack` for those deliveries. Default: none (`ack` answers every type).
    #[serde(default)]
    pub acks: IndexMap<String, Ack>,
    /// A handshake the sender makes before (or besides) real deliveries, such as a
    /// URL-verification request that must be answered with its `challenge`. A delivery that
    /// matches is verified like any other, then answered with the handshake's `ack` and never
    /// stored: it needs no dedupe key and makes no event. Default: none.
    #[serde(default)]
    pub handshake: Option<Handshake>,
    /// Where the event's `occurred_at` comes from: a mapping over the delivery's body (`path`
    /// or `template`, with the `format` and `offset` of `type: time`), such as
    /// `{ path: $.event_time }` or `{ path: $.created, format: "yyyy-MM-dd HH:mm:ss", offset:
    /// "+08:00" }`. Without `format`, RFC 3339, Unix seconds and Unix milliseconds (13 digits)
    /// are read. A delivery without the value gets the receive time; a value that cannot be
    /// read as a time refuses the delivery (400, recorded with the reason). Default: the
    /// receive time.
    #[serde(default)]
    pub occurred_at: Option<Mapping>,
    /// What a delivery may hold, checked on the raw bytes before it is verified or parsed.
    /// Default: `{ body: 1MiB, fields: 1000, depth: 32 }` (see docs/limits.md).
    #[serde(default)]
    pub limits: Option<CallbackLimits>,
}

/// Limits of one callback route. A delivery over a limit is refused with the route's
/// `verify.reject_status` (413 for the body size, 400 for the others, on a route without
/// `verify`), before any expensive work, and recorded with at most its first 4 KiB.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackLimits {
    /// Largest body: a number of bytes, or a number with a unit `B`, `KiB` or `MiB`, such as
    /// `64KiB`; at most `64MiB`. The body is read no further than this. Default: `1MiB`.
    #[serde(default)]
    pub body: Option<ByteSize>,
    /// Most `name=value` pairs in a form body, and separately in the query string (1 to
    /// 100000). Counted on the raw bytes before anything is decoded. Default: 1000.
    #[serde(default)]
    pub fields: Option<u64>,
    /// Deepest nesting of JSON arrays and objects, or XML elements (1 to 127). Checked on the
    /// raw bytes before anything is decoded. Default: 32.
    #[serde(default)]
    pub depth: Option<u64>,
}

/// A size in bytes: a number, or a number and a unit (`B`, `KiB`, `MiB`, `GiB`), like `64KiB`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ByteSize {
    /// A number of bytes.
    Bytes(u64),
    /// A number and a unit, like `512KiB` or `1MiB`.
    Text(String),
}

impl ByteSize {
    /// The size in bytes, or why it cannot be read.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            ByteSize::Bytes(n) => Ok(*n),
            ByteSize::Text(t) => {
                let t = t.trim();
                let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
                let (digits, unit) = t.split_at(split);
                let n: u64 = digits.parse().map_err(|_| format!("'{t}' is not a size"))?;
                let unit_size: u64 = match unit.trim() {
                    "" | "B" => 1,
                    "KiB" => 1024,
                    "MiB" => 1024 * 1024,
                    "GiB" => 1024 * 1024 * 1024,
                    other => return Err(format!("'{t}' has an unknown unit '{other}'")),
                };
                n.checked_mul(unit_size)
                    .ok_or_else(|| format!("'{t}' is too large"))
            }
        }
    }
}

/// Picks a canonical event type from a value of the delivery.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Discriminator {
    /// JSONPath into the body, for example `$.method`.
    #[serde(default)]
    pub path: Option<String>,
    /// Or a header name holding the type.
    #[serde(default)]
    pub header: Option<String>,
    /// Platform value → canonical event name (`product.changed`, `inventory.changed`,
    /// `inventory.low`, `product.offline`, `order.status_changed`, `order.shipped`,
    /// `order.cancelled`).
    pub map: IndexMap<String, String>,
}

/// A handshake delivery: recognised by one value of the delivery, answered with `ack`.
///
/// ```yaml
/// handshake:
///   path: $.type
///   equals: url_verification
///   ack: { content_type: text/plain, body: "{{body.challenge}}" }
/// ```
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Handshake {
    /// JSONPath into the body of the value that marks a handshake, such as `$.type`.
    /// Default: none; one of `path` and `header` is required.
    #[serde(default)]
    pub path: Option<String>,
    /// Or the header holding that value. Default: none.
    #[serde(default)]
    pub header: Option<String>,
    /// The value (compared as text) that makes a delivery a handshake, such as
    /// `url_verification`.
    pub equals: String,
    /// The answer to a handshake; its body is a template over the delivery, such as
    /// `"{{body.challenge}}"` or `'{"challenge":{{json body.challenge}}}'`.
    pub ack: Ack,
}

/// An acknowledgement answer.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// HTTP status: a number, or a template over the delivery (the same variables as `body`)
    /// that renders one, such as `"{{#if body.retry}}503{{else}}200{{/if}}"`. A status that
    /// renders as no HTTP status (100 to 599) refuses the delivery with 400, recorded with
    /// the reason. Default: 200.
    #[serde(default)]
    pub status: Option<AckStatus>,
    /// Body: a template over the delivery — `body` (the decoded body), `headers` (names
    /// lower-cased), `query`, `settings`, `platform` and `event_type` (the platform's name of
    /// the delivery's type) — such as `'{"code":"200","id":{{json body.id}}}'`. Values are
    /// inserted as they are: use the `json` helper to put a value inside JSON. Default: empty.
    #[serde(default)]
    pub body: Option<String>,
    /// Content type of the body. Default: `application/json`.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// The status of an acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum AckStatus {
    /// A fixed HTTP status, such as `200`.
    Code(u16),
    /// A template rendering the status, such as `"{{#if body.retry}}503{{else}}200{{/if}}"`.
    Template(String),
}

/// A key that is present is `Some`, even when its value is `null` (`default: null`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}
