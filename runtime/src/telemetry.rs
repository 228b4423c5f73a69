//! Traces: the spans the gateway opens, the W3C trace context it takes in and passes on, the
//! OpenTelemetry pipeline that exports them over OTLP, and the log that names them.
//!
//! Spans (all at INFO, every field a configuration name, an outcome, a status code or an id
//! the gateway generates — never request data, credentials or signatures):
//! - `entrepot.call`: one canonical call (platform, operation, outcome);
//! - `entrepot.platform_request`: one HTTP attempt of a call (platform, operation, attempt,
//!   http.status_code), a child of the call;
//! - `entrepot.callback`: one callback delivery (platform, route, event_type, outcome);
//! - `entrepot.delivery`: one attempt to deliver an event to a target (target, event_type,
//!   attempt, http.status_code, outcome), a child of the call or callback that produced the
//!   event, whose trace context is stored with the event.
//!
//! A `traceparent` (and `tracestate`) received on the canonical API is the parent of the call
//! (an invalid one is ignored); each platform request and each delivery carries the
//! `traceparent` of its span. It is added to the request after signing, so no recipe ever
//! signs it.
//!
//! [`install`] sets up the process's subscriber once, in `serve`: the log (text or JSON lines
//! carrying `trace_id` and `span_id`) and the OpenTelemetry layer. Without OTLP settings the
//! layer still gives every span its ids, so trace context is propagated and logged; nothing is
//! exported. With them, spans are batched and sent over OTLP/HTTP (protobuf); export failures
//! are logged at most once a minute and never stop the gateway.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::compile::gateway::OtlpSettings;

/// How often at most a failed export is logged.
pub const EXPORT_REPORT_EVERY: Duration = Duration::from_secs(60);

/// The header names of the W3C trace context.
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Header pairs read as an OpenTelemetry carrier (names compared case-insensitively).
struct Headers<'a>(&'a axum::http::HeaderMap);

/// The longest `tracestate` taken from a caller: the 512 characters W3C Trace Context asks
/// every vendor to pass on. A longer one is dropped whole (the `traceparent` still counts), so
/// a caller cannot make the gateway send kilobytes of it to every platform.
pub const MAX_TRACESTATE: usize = 512;

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.0.get(key).and_then(|v| v.to_str().ok())?;
        (!key.eq_ignore_ascii_case(TRACESTATE) || value.len() <= MAX_TRACESTATE).then_some(value)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// One stored `traceparent` read as a carrier.
struct Stored<'a>(&'a str);

impl Extractor for Stored<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// The trace context headers written for one span.
#[derive(Default)]
struct Out(Vec<(&'static str, String)>);

impl Injector for Out {
    fn set(&mut self, key: &str, value: String) {
        let name = match key {
            TRACEPARENT => TRACEPARENT,
            TRACESTATE => TRACESTATE,
            _ => return,
        };
        if !value.is_empty() {
            self.0.push((name, value));
        }
    }
}

/// The trace context a request carries in its `traceparent` and `tracestate` headers: the
/// parent of the spans opened for it. A missing or invalid `traceparent` gives an empty
/// context (the spans start a trace of their own); it is never an error.
pub fn extract(headers: &axum::http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new()
        .extract_with_context(&opentelemetry::Context::new(), &Headers(headers))
}

/// The trace context of a stored `traceparent` (see [`current_traceparent`]); empty when it
/// is not a valid one.
pub fn parse_traceparent(traceparent: &str) -> opentelemetry::Context {
    TraceContextPropagator::new()
        .extract_with_context(&opentelemetry::Context::new(), &Stored(traceparent))
}

/// The `traceparent` and `tracestate` headers naming `span` as the parent of what a request
/// causes downstream. Empty when the span has no trace (no OpenTelemetry layer is installed,
/// or the span is disabled).
pub fn headers_for(span: &tracing::Span) -> Vec<(&'static str, String)> {
    if span.is_disabled() {
        return Vec::new();
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut out = Out::default();
    TraceContextPropagator::new().inject_context(&cx, &mut out);
    out.0
}

/// The `traceparent` of the span the current task is in (the call or callback that is
/// storing an event), to be stored with what it produces. `None` outside any trace.
pub fn current_traceparent() -> Option<String> {
    let cx = opentelemetry::Context::current();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut out = Out::default();
    TraceContextPropagator::new().inject_context(&cx, &mut out);
    out.0
        .into_iter()
        .find(|(k, _)| *k == TRACEPARENT)
        .map(|(_, v)| v)
}

/// Makes `span` a child of the trace context `cx` (a stored or received one). Must be called
/// before anything enters the span or reads its context; an empty context changes nothing.
pub fn set_parent(span: &tracing::Span, cx: opentelemetry::Context) {
    if cx.span().span_context().is_valid() {
        // Fails only without an OpenTelemetry layer, where there is no trace to join.
        let _ = span.set_parent(cx);
    }
}

/// The current trace and span ids (lower-case hex), when the current task is in a span.
pub fn current_ids() -> Option<(String, String)> {
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// Reports something at most once per period; counts what it kept quiet in between.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    /// A throttle letting one report through per `every`.
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Whether to report now; `Some(n)`: yes, and `n` reports were kept quiet since the last.
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let Ok(mut s) = self.state.lock() else {
            return None;
        };
        match s.0 {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                s.1 = s.1.saturating_add(1);
                None
            }
            _ => {
                let quiet = s.1;
                *s = (Some(now), 0);
                Some(quiet)
            }
        }
    }
}

/// An exporter whose failures are logged (at most once per [`EXPORT_REPORT_EVERY`]) instead
/// of passed up: the spans of a failed batch are dropped and the gateway goes on.
#[derive(Debug)]
struct Quiet<E> {
    inner: E,
    /// The endpoint without any user or password, for the log.
    endpoint: String,
    throttle: Throttle,
}

impl<E: SpanExporter> SpanExporter for Quiet<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        if let Err(e) = self.inner.export(batch).await
            && let Some(quiet) = self.throttle.allow(Instant::now())
        {
            tracing::warn!(
                endpoint = %self.endpoint,
                spans,
                failures_not_logged = quiet,
                "cannot export spans over OTLP: {e}; they are dropped (the next failure is logged in a minute at the earliest)"
            );
        }
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// An OTLP URL without its user and password, for the log.
fn redact(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(the configured endpoint)".into(),
    }
}

/// The tracer provider of the process: without OTLP settings it only gives spans their ids
/// (its own root spans are not sampled, a received `traceparent`'s sampled flag is kept);
/// with them, spans are sampled by `sample_ratio` (following a received parent's decision) and
/// exported in batches.
pub fn provider(otlp: Option<&OtlpSettings>) -> Result<SdkTracerProvider, String> {
    let Some(o) = otlp else {
        return Ok(SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .build());
    };
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(o.endpoint.clone())
        .with_timeout(o.timeout)
        .with_headers(
            o.headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_string()))
                .collect(),
        )
        .build()
        .map_err(|e| format!("cannot set up the OTLP exporter: {e}"))?;
    let exporter = Quiet {
        inner: exporter,
        endpoint: redact(&o.endpoint),
        throttle: Throttle::new(EXPORT_REPORT_EVERY),
    };
    Ok(SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            o.sample_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(o.service_name.clone())
                .build(),
        )
        .with_batch_exporter(exporter)
        .build())
}

/// The process's trace pipeline; [`Telemetry::shutdown`] exports what is left.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    exporting: bool,
}

impl Telemetry {
    /// Exports the spans still waiting and stops the exporter (at most a few seconds).
    pub fn shutdown(self) {
        if !self.exporting {
            return;
        }
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!("the last spans could not be exported: {e}");
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStyle {
    /// For people; coloured when `ansi`.
    Text {
        /// Colour codes.
        ansi: bool,
    },
    /// One JSON object per line, with `trace_id` and `span_id` inside a span.
    Json,
}

/// A JSON line formatter that puts the current `trace_id` and `span_id` first.
struct WithTraceIds<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithTraceIds<F>
where
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        writer.write_str(&with_ids(&line, current_ids()))
    }
}

/// A JSON object line with `"trace_id"` and `"span_id"` first (unchanged without ids).
fn with_ids(line: &str, ids: Option<(String, String)>) -> String {
    match (ids, line.strip_prefix('{')) {
        (Some((trace, span)), Some(rest)) => {
            let sep = if rest.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            format!("{{\"trace_id\":\"{trace}\",\"span_id\":\"{span}\"{sep}{rest}")
        }
        _ => line.to_string(),
    }
}

/// Installs the process's subscriber: the log to standard output (filtered by `RUST_LOG`,
/// default `info`) and the OpenTelemetry layer (which sees only the gateway's own spans, never
/// log events, whatever `RUST_LOG` says). Fails when a subscriber is already installed or the
/// exporter cannot be set up.
pub fn install(style: LogStyle, otlp: Option<&OtlpSettings>) -> Result<Telemetry, String> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    let provider = provider(otlp)?;
    let tracer = provider.tracer("entrepot");
    let spans_only = tracing_subscriber::filter::filter_fn(|meta| {
        meta.is_span() && meta.name().starts_with("entrepot.")
    });
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_level(false)
        .with_target(false)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(spans_only);
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let log = match style {
        LogStyle::Text { ansi } => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stdout)
            .with_ansi(ansi)
            .with_filter(filter())
            .boxed(),
        LogStyle::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stdout)
            .with_ansi(false)
            .event_format(WithTraceIds(tracing_subscriber::fmt::format().json()))
            .with_filter(filter())
            .boxed(),
    };
    let subscriber = tracing_subscriber::registry().with(log).with(otel);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| format!("cannot install the log: {e}"))?;
    Ok(Telemetry {
        provider,
        exporting: otlp.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_received_traceparent_is_read_and_a_bad_one_ignored() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let cx = extract(&h);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        // Version ff, an all-zero trace id, garbage: no parent, no error.
        for bad in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "not a traceparent",
        ] {
            h.insert("traceparent", bad.parse().unwrap());
            assert!(!extract(&h).span().span_context().is_valid(), "{bad}");
            assert!(!parse_traceparent(bad).span().span_context().is_valid());
        }
    }

    #[test]
    fn a_tracestate_over_512_characters_is_dropped() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        // 8 members of 62 characters and 7 commas: 503 characters, kept.
        let member = |i: usize| format!("k{i}={}", "v".repeat(59));
        let short: Vec<String> = (0..8).map(member).collect();
        let short = short.join(",");
        assert_eq!(short.len(), 503);
        h.insert("tracestate", short.parse().unwrap());
        let cx = extract(&h);
        assert_eq!(cx.span().span_context().trace_state().header(), short);
        // One more member: 566 characters, dropped; the parent still holds.
        let long: Vec<String> = (0..9).map(member).collect();
        h.insert("tracestate", long.join(",").parse().unwrap());
        let cx = extract(&h);
        assert!(cx.span().span_context().is_valid());
        assert_eq!(cx.span().span_context().trace_state().header(), "");
    }

    #[test]
    fn ids_go_first_in_a_json_line() {
        let ids = Some(("ab".repeat(16), "cd".repeat(8)));
        assert_eq!(
            with_ids("{\"level\":\"INFO\"}\n", ids.clone()),
            format!(
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",\"level\":\"INFO\"}}\n",
                "ab".repeat(16),
                "cd".repeat(8)
            )
        );
        assert_eq!(with_ids("{\"a\":1}\n", None), "{\"a\":1}\n");
        let line = with_ids("{}", ids);
        assert!(
            serde_json::from_str::<serde_json::Value>(&line).is_ok(),
            "{line}"
        );
    }

    #[test]
    fn the_throttle_lets_one_report_through_per_period() {
        let t = Throttle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(t.allow(t0), Some(0));
        assert_eq!(t.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(59)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(60)), Some(2));
        assert_eq!(t.allow(t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn an_endpoint_is_logged_without_its_password() {
        assert_eq!(
            redact("http://user:pw@127.0.0.1:4318/v1/traces"),
            "http://127.0.0.1:4318/v1/traces"
        );
    }
}
