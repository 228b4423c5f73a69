//! Failures of canonical operations as RFC 9457 problem details
//! (`application/problem+json`), in words the caller can act on. Internal causes go to the
//! log, not into the problem.

use serde::Serialize;

/// Kinds of failure, each with its own `type` URI and HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// The canonical input is not valid.
    InvalidInput,
    /// No such platform, operation, order, sync or mapping: the detail says which.
    NotFound,
    /// An internal id has no mapping on the platform.
    UnknownId,
    /// The platform answered with an error.
    PlatformError,
    /// The platform failed: it could not be reached, broke the connection off, or answered
    /// with an HTTP 5xx status (502).
    PlatformFailed,
    /// The platform did not answer within the operation's deadline (504).
    PlatformTimeout,
    /// The platform asked the gateway to slow down (HTTP 429; passed on as 429).
    PlatformRateLimited,
    /// The call could not be made on the gateway's side: the circuit breaker is open, or no
    /// rate-limit or concurrency slot came free within the call's deadline (503).
    PlatformUnavailable,
    /// The platform's answer does not map onto the canonical model.
    MappingError,
    /// The gateway's configuration or credentials are incomplete.
    Configuration,
    /// The gateway's store failed.
    StoreUnavailable,
}

impl ProblemKind {
    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            ProblemKind::InvalidInput => 400,
            ProblemKind::NotFound => 404,
            ProblemKind::UnknownId => 422,
            ProblemKind::PlatformError
            | ProblemKind::MappingError
            | ProblemKind::PlatformFailed => 502,
            ProblemKind::PlatformTimeout => 504,
            ProblemKind::PlatformRateLimited => 429,
            ProblemKind::PlatformUnavailable | ProblemKind::StoreUnavailable => 503,
            ProblemKind::Configuration => 500,
        }
    }

    fn slug(self) -> &'static str {
        match self {
            ProblemKind::InvalidInput => "invalid-input",
            ProblemKind::NotFound => "not-found",
            ProblemKind::UnknownId => "unknown-id",
            ProblemKind::PlatformError => "platform-error",
            ProblemKind::PlatformFailed => "platform-failed",
            ProblemKind::PlatformTimeout => "platform-timeout",
            ProblemKind::PlatformRateLimited => "platform-rate-limited",
            ProblemKind::PlatformUnavailable => "platform-unavailable",
            ProblemKind::MappingError => "mapping-error",
            ProblemKind::Configuration => "configuration",
            ProblemKind::StoreUnavailable => "store-unavailable",
        }
    }

    fn title(self) -> &'static str {
        match self {
            ProblemKind::InvalidInput => "The input is not valid",
            ProblemKind::NotFound => "Not found",
            ProblemKind::UnknownId => "An id is not known on the platform",
            ProblemKind::PlatformError => "The platform refused the call",
            ProblemKind::PlatformFailed => "The platform failed",
            ProblemKind::PlatformTimeout => "The platform did not answer in time",
            ProblemKind::PlatformRateLimited => "The platform asks to slow down",
            ProblemKind::PlatformUnavailable => "The platform is unavailable",
            ProblemKind::MappingError => "The platform's answer does not fit the canonical model",
            ProblemKind::Configuration => "The gateway is not configured for this call",
            ProblemKind::StoreUnavailable => "The gateway's store is unavailable",
        }
    }
}

/// A problem detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// URI naming the kind.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the kind.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What happened, for this call.
    pub detail: String,
    /// The platform.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The canonical operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// The platform's own error code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_code: Option<String>,
    /// The platform's own error message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_message: Option<String>,
    /// Further details of the platform's error (its `response.error.details`), at most 4 KiB
    /// of JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_details: Option<serde_json::Value>,
    /// The HTTP status the platform answered with, when it answered with a failure status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_status: Option<u16>,
    /// Seconds to wait before trying again, from the platform's `Retry-After` or the
    /// gateway's own pacing; also sent as the `Retry-After` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Whether trying again later may succeed.
    pub retryable: bool,
    /// Individual input problems, for `invalid-input`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The kind, for code.
    #[serde(skip)]
    pub kind: Option<ProblemKind>,
}

impl Problem {
    /// A problem of `kind` with `detail`.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Problem {
            type_uri: format!("https://entrepot.dev/problems/{}", kind.slug()),
            title: kind.title().into(),
            status: kind.status(),
            detail: detail.into(),
            platform: None,
            operation: None,
            platform_code: None,
            platform_message: None,
            platform_details: None,
            platform_status: None,
            retry_after: None,
            retryable: matches!(
                kind,
                ProblemKind::PlatformUnavailable
                    | ProblemKind::PlatformFailed
                    | ProblemKind::PlatformTimeout
                    | ProblemKind::PlatformRateLimited
                    | ProblemKind::StoreUnavailable
            ),
            errors: Vec::new(),
            kind: Some(kind),
        }
    }

    /// Whether this failure is the platform's (it counts against the circuit breaker):
    /// transport errors, timeouts and 5xx answers. Invalid inputs, business refusals and
    /// the gateway's own limits are not.
    pub fn is_platform_failure(&self) -> bool {
        matches!(
            self.kind,
            Some(ProblemKind::PlatformFailed | ProblemKind::PlatformTimeout)
        )
    }

    /// The same problem, naming the platform and operation.
    pub fn at(mut self, platform: &str, operation: &str) -> Self {
        self.platform = Some(platform.into());
        self.operation = Some(operation.into());
        self
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.title, self.status, self.detail)
    }
}

impl std::error::Error for Problem {}
