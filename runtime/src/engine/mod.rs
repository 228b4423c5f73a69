//! The outbound engine: validates a canonical input, translates its ids, builds and signs the
//! platform's request, sends it under the transport policy, judges and decodes the answer,
//! maps it onto the canonical model and translates the ids back.

// A `Problem` is the failure path of a network call: its size does not matter next to the call.
#![allow(clippy::result_large_err)]

pub mod build;
pub mod decode;
pub mod mapping;
pub mod problem;
pub mod transport;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::Instrument;

use crate::credentials::{CredentialSets, Credentials, Token};
use crate::ids::{Ids, store_problem};
use crate::observe::{CallSeen, Observer, Outcome};
use crate::plan::{AuthPlan, OperationPlan, PlatformPlan, TransportPlan};
use crate::store::Store;
use crate::template::text_of;
use build::{BuildError, BuildInput, BuiltRequest, build, method_text};
use problem::{Problem, ProblemKind};
use transport::{ReadFailure, Transport, backoff};

/// The largest platform error details (as JSON text) passed on to the caller.
const MAX_PLATFORM_DETAILS: usize = 4096;

/// What a call produced.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutcome {
    /// The canonical output.
    Output(Value),
    /// The request that would be sent (dry run).
    DryRun(Box<BuiltRequest>),
}

/// The outbound engine; one per gateway, shared by all requests. Its state lives in rooms of
/// their own — transport, credentials, ids — so callbacks, pollers and flows use credentials and
/// ids without the engine.
pub struct Engine {
    store: Store,
    transport: Transport,
    credentials: Arc<Credentials>,
    ids: Arc<Ids>,
    observer: Observer,
    monitoring: Arc<crate::plan::MonitoringPlan>,
}

impl<'a> From<&'a Engine> for crate::callbacks::Services<'a> {
    fn from(e: &'a Engine) -> Self {
        crate::callbacks::Services {
            credentials: &e.credentials,
            ids: &e.ids,
            observer: &e.observer,
            monitoring: &e.monitoring,
        }
    }
}

impl<'a> From<&'a Arc<Engine>> for crate::callbacks::Services<'a> {
    fn from(e: &'a Arc<Engine>) -> Self {
        e.as_ref().into()
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// One attempt's failure.
enum Attempt {
    /// Worth retrying (transport error, 5xx, 429, retryable business code).
    Retryable(Problem),
    /// Final.
    Final(Problem),
    /// The platform refused the access token.
    Unauthorized(Problem),
}

impl Engine {
    /// An engine using `store` for ids, credentials from `credentials` and the environment.
    pub fn new(store: Store, credentials: CredentialSets, env: fn(&str) -> Option<String>) -> Self {
        Engine {
            credentials: Arc::new(Credentials::new(store.clone(), credentials, env)),
            ids: Arc::new(Ids::new(store.clone(), crate::ids::DEFAULT_CACHE)),
            transport: Transport::default(),
            observer: Observer::default(),
            monitoring: Arc::default(),
            store,
        }
    }

    /// Since when each platform's circuit breaker has not been closed (open or half-open
    /// breakers only), as this instance sees it.
    pub fn breakers_open_since(&self) -> HashMap<String, Instant> {
        self.transport.breakers_open_since()
    }

    /// The same engine with the gateway-wide monitoring defaults (`monitoring.defaults` in
    /// `entrepot.yaml`), which callbacks read for stock thresholds.
    pub fn with_monitoring(mut self, defaults: crate::plan::MonitoringPlan) -> Self {
        self.monitoring = Arc::new(defaults);
        self
    }

    /// The same engine reporting its calls to `observer`.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = observer;
        self
    }

    /// Where the engine reports its calls (see [`crate::observe`]).
    pub fn observer(&self) -> &Observer {
        &self.observer
    }

    /// The same engine keeping up to `capacity` id mappings per direction in memory (0: none).
    pub fn with_id_cache(mut self, capacity: usize) -> Self {
        self.ids = Arc::new(Ids::new(self.store.clone(), capacity));
        self
    }

    /// Every platform whose circuit breaker has counted calls, and whether it refuses calls
    /// now (see [`Transport::breakers_open`]).
    pub fn breakers_open(&self) -> Vec<(String, bool)> {
        self.transport.breakers_open()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The credentials room.
    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    /// The id translation room.
    pub fn ids(&self) -> &Arc<Ids> {
        &self.ids
    }

    /// Replaces the credentials read from the credentials file (after it changed).
    pub fn set_file_credentials(&self, sets: CredentialSets) {
        self.credentials.set_file_credentials(sets);
    }

    /// The credentials of a platform (see [`Credentials::credentials_for`]).
    pub fn credentials_for(&self, platform: &PlatformPlan) -> Map<String, Value> {
        self.credentials.credentials_for(platform)
    }

    /// The credentials in force before the last push, within the rotation window (see
    /// [`Credentials::previous_credentials_for`]).
    pub fn previous_credentials_for(
        &self,
        platform: &PlatformPlan,
        now: OffsetDateTime,
    ) -> Option<Map<String, Value>> {
        self.credentials.previous_credentials_for(platform, now)
    }

    /// Loads the credentials pushed earlier (see [`Credentials::load_pushed`]).
    pub async fn load_pushed(&self) -> Result<usize, crate::store::StoreError> {
        self.credentials.load_pushed().await
    }

    /// Stores pushed credentials (see [`Credentials::push`]).
    pub async fn push_credentials(
        &self,
        platform: &str,
        version: i64,
        values: Map<String, Value>,
        now: OffsetDateTime,
    ) -> Result<crate::store::CredentialPut, crate::store::StoreError> {
        self.credentials.push(platform, version, values, now).await
    }

    /// Versions of the pushed credentials, by platform (never their values).
    pub fn credential_versions(&self) -> HashMap<String, i64> {
        self.credentials.versions()
    }

    fn client(&self, t: &TransportPlan) -> Result<reqwest::Client, Problem> {
        self.transport
            .client(t)
            .map_err(|e| Problem::new(ProblemKind::Configuration, e))
    }

    /// Runs canonical operation `op_name` on `platform` with `input`, and reports how it ended
    /// to the observer (not for a dry run, nor for an operation the platform does not offer:
    /// its name is the caller's, not the configuration's).
    pub async fn call(
        &self,
        platform: &PlatformPlan,
        op_name: &str,
        input: &Value,
        dry_run: bool,
    ) -> Result<CallOutcome, Problem> {
        if dry_run {
            return self.call_once(platform, op_name, input, dry_run).await;
        }
        let started = Instant::now();
        let offered = platform.operations.get_key_value(op_name).map(|(k, _)| k);
        // A child of the caller's trace when it sent a `traceparent` (see crate::telemetry).
        let span = tracing::info_span!(
            "entrepot.call",
            otel.kind = "server",
            platform = %platform.name,
            operation = offered.map(String::as_str),
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let result = self
            .call_once(platform, op_name, input, dry_run)
            .instrument(span.clone())
            .await;
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(p) => p.kind.map_or(Outcome::Error, Outcome::of),
        };
        span.record("outcome", outcome.as_str());
        if outcome != Outcome::Ok {
            span.record("otel.status_code", "error");
        }
        if let Some(operation) = offered {
            self.observer.call(&CallSeen {
                platform: &platform.name,
                operation,
                outcome,
                elapsed: started.elapsed(),
            });
        }
        result
    }

    async fn call_once(
        &self,
        platform: &PlatformPlan,
        op_name: &str,
        input: &Value,
        dry_run: bool,
    ) -> Result<CallOutcome, Problem> {
        let at = |p: Problem| p.at(&platform.name, op_name);
        let op = platform.operations.get(op_name).ok_or_else(|| {
            let known: Vec<&str> = platform.operations.keys().map(String::as_str).collect();
            at(Problem::new(
                ProblemKind::NotFound,
                format!(
                    "platform '{}' does not offer '{op_name}' (it offers: {})",
                    platform.name,
                    known.join(", ")
                ),
            ))
        })?;
        let errors = crate::canonical::input_problems(op_name, input);
        if !errors.is_empty() {
            let mut p = Problem::new(
                ProblemKind::InvalidInput,
                format!("the input of {op_name} is not valid: {}", errors.join("; ")),
            );
            p.errors = errors;
            return Err(at(p));
        }
        let translated = self
            .ids
            .translate_input(platform, op, input)
            .await
            .map_err(at)?;
        let credentials = self.credentials_for(platform);
        let build_once = |token: Option<String>| {
            build(
                platform,
                op,
                &BuildInput {
                    input: &translated,
                    credentials: &credentials,
                    now: OffsetDateTime::now_utc(),
                    nonce: None,
                    token,
                },
            )
            .map_err(|e| at(build_problem(e)))
        };
        if dry_run {
            // The token, when there is one, is not fetched for a dry run.
            let token =
                matches!(platform.auth, AuthPlan::OAuth2(_)).then(|| "<access token>".to_string());
            return Ok(CallOutcome::DryRun(Box::new(build_once(token)?)));
        }
        let doc = self
            .send(platform, op, &credentials, build_once)
            .await
            .map_err(at)?;
        // Pairs learnt from the answer are stored first, so the output can translate them.
        self.record(platform, op, input, &doc).await.map_err(at)?;
        let output = self
            .map_output(platform, op, &doc, input)
            .await
            .map_err(at)?;
        Ok(CallOutcome::Output(output))
    }

    async fn send(
        &self,
        platform: &PlatformPlan,
        op: &OperationPlan,
        credentials: &Map<String, Value>,
        build_once: impl Fn(Option<String>) -> Result<BuiltRequest, Problem>,
    ) -> Result<Value, Problem> {
        let t = &op.transport;
        // One deadline for the whole call: slot waits, attempts, backoffs, Retry-After waits.
        let deadline = transport::later(Instant::now(), t.timeout);
        let client = self.client(t)?;
        let (pacer, cap, breaker) = self.transport.limits(&platform.name, t);
        let attempts = if t.retry_safe { t.retries + 1 } else { 1 };
        let mut last = Problem::new(ProblemKind::PlatformUnavailable, "no attempt was made");
        let oauth = matches!(platform.auth, AuthPlan::OAuth2(_));
        let mut token = if oauth {
            Some(
                self.token(&client, platform, credentials, None, deadline, t.max_answer)
                    .await?,
            )
        } else {
            None
        };
        let mut refreshed = false;
        let mut attempt = 0;
        let mut pause: Option<Duration> = None;
        let mut out_of_time = false;
        while attempt < attempts {
            attempt += 1;
            if attempt > 1 {
                let wait = pause
                    .take()
                    .unwrap_or_else(|| backoff(attempt - 1, t.backoff, t.backoff_max));
                if transport::later(Instant::now(), wait) >= deadline {
                    out_of_time = true;
                    break;
                }
                tokio::time::sleep(wait).await;
            }
            // Built before any wait: an input that cannot form a request is refused at once
            // and never reaches the breaker.
            let built_at = Instant::now();
            let mut request = build_once(token.clone())?;
            let admission = match &breaker {
                Some(b) => match b.allow(Instant::now()) {
                    Ok(a) => Some(a),
                    Err(wait) => {
                        let mut p = Problem::new(
                            ProblemKind::PlatformUnavailable,
                            format!(
                                "the circuit breaker for '{}' is open after repeated failures; calls resume in {}s",
                                platform.name,
                                wait.as_secs().max(1)
                            ),
                        );
                        p.retry_after = Some(ceil_secs(wait));
                        return Err(p);
                    }
                },
                None => None,
            };
            let _permit = match tokio::time::timeout_at(deadline, cap.acquire()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => {
                    return Err(Problem::new(
                        ProblemKind::PlatformUnavailable,
                        "the gateway is shutting down",
                    ));
                }
                Err(_) => {
                    let mut p = Problem::new(
                        ProblemKind::PlatformUnavailable,
                        format!(
                            "all {} connections to '{}' stayed busy for the whole deadline of {:?}; try again later or raise `transport.concurrency`",
                            t.concurrency, platform.name, t.timeout
                        ),
                    );
                    p.retry_after = Some(1);
                    return Err(p);
                }
            };
            if let Some(p) = &pacer {
                let queued_at = Instant::now();
                let turn = p.wait(deadline).await;
                self.observer
                    .rate_limit_wait(&platform.name, queued_at.elapsed());
                if let Err(wait) = turn {
                    let mut p = Problem::new(
                        ProblemKind::PlatformUnavailable,
                        format!(
                            "the rate limit of '{}' ({} calls/s) has no turn free within the call's deadline of {:?}; try again in {}s",
                            platform.name,
                            t.qps.unwrap_or_default(),
                            t.timeout,
                            ceil_secs(wait)
                        ),
                    );
                    p.retry_after = Some(ceil_secs(wait));
                    return Err(p);
                }
            }
            if built_at.elapsed() > Duration::from_millis(1) {
                // Waited for a slot: sign with the clock of the moment it is sent.
                request = build_once(token.clone())?;
            }
            let span = tracing::info_span!(
                "entrepot.platform_request",
                otel.kind = "client",
                platform = %platform.name,
                operation = %op.name,
                attempt,
                http.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            let outcome = self
                .attempt(&client, platform, op, &request, deadline)
                .instrument(span.clone())
                .await;
            if outcome.is_err() {
                span.record("otel.status_code", "error");
            }
            drop(span);
            // A rejected token is renewed once and the call made again: the platform refused it
            // before doing anything, so this is safe even for operations that are not.
            if let Err(Attempt::Unauthorized(p)) = &outcome
                && oauth
            {
                if let Some(a) = admission {
                    a.record(true, Instant::now());
                }
                if refreshed {
                    return Err(p.clone());
                }
                refreshed = true;
                attempt -= 1;
                token = Some(
                    self.token(
                        &client,
                        platform,
                        credentials,
                        token.as_deref(),
                        deadline,
                        t.max_answer,
                    )
                    .await?,
                );
                continue;
            }
            if let Some(a) = admission {
                // Only failures of the platform count: not business refusals, not inputs
                // that could not form a request, not the gateway's own limits.
                let failed = match &outcome {
                    Ok(_) => false,
                    Err(Attempt::Retryable(p) | Attempt::Final(p) | Attempt::Unauthorized(p)) => {
                        p.is_platform_failure() || p.kind == Some(ProblemKind::MappingError)
                    }
                };
                let formed = !matches!(&outcome, Err(Attempt::Final(p)) if matches!(p.kind, Some(ProblemKind::InvalidInput | ProblemKind::Configuration)));
                if formed {
                    a.record(!failed, Instant::now());
                }
            }
            match outcome {
                Ok(doc) => return Ok(doc),
                Err(Attempt::Final(p) | Attempt::Unauthorized(p)) => return Err(p),
                Err(Attempt::Retryable(p)) => {
                    tracing::warn!(platform = %platform.name, operation = %op.name, attempt, "{p}");
                    pause = p.retry_after.map(Duration::from_secs);
                    last = p;
                }
            }
        }
        if !t.retry_safe {
            last.detail
                .push_str(" (not retried: the operation is not marked safe to repeat)");
        } else if out_of_time {
            last.detail.push_str(&format!(
                " (not retried: the wait before another attempt would pass the call's deadline of {:?})",
                t.timeout
            ));
        }
        Err(last)
    }

    /// The platform's access token: the cached one while it is fresh, else a new one. With
    /// `stale`, a token the platform refused: it is replaced unless another call already did.
    /// The lock makes concurrent callers wait for one request to the token endpoint.
    async fn token(
        &self,
        client: &reqwest::Client,
        platform: &PlatformPlan,
        credentials: &Map<String, Value>,
        stale: Option<&str>,
        deadline: Instant,
        max_answer: usize,
    ) -> Result<String, Problem> {
        let AuthPlan::OAuth2(o) = &platform.auth else {
            return Err(Problem::new(
                ProblemKind::Configuration,
                format!("'{}' does not authenticate with OAuth 2", platform.name),
            ));
        };
        let slot = self.credentials.token_slot(&platform.name).ok_or_else(|| {
            Problem::new(ProblemKind::Configuration, "the token cache is unusable")
        })?;
        let Ok(mut cached) = tokio::time::timeout_at(deadline, slot.lock()).await else {
            return Err(Problem::new(
                ProblemKind::PlatformTimeout,
                format!(
                    "no access token of '{}' came within the call's deadline",
                    platform.name
                ),
            ));
        };
        let now = Instant::now();
        if let Some(t) = cached.as_ref() {
            let refused = stale == Some(t.value.as_str());
            if !refused && now < t.renew_at {
                return Ok(t.value.clone());
            }
        }
        let mut ctx = Map::new();
        ctx.insert("credentials".into(), Value::Object(credentials.clone()));
        ctx.insert("settings".into(), Value::Object(platform.settings.clone()));
        ctx.insert("platform".into(), Value::String(platform.name.clone()));
        let ctx = Value::Object(ctx);
        let render = |t: &crate::template::CompiledTemplate| {
            t.render(&ctx).map_err(|e| {
                Problem::new(
                    ProblemKind::Configuration,
                    format!("the token request of '{}': {e}", platform.name),
                )
            })
        };
        let url = render(&o.token_url)?;
        let form: Vec<(String, String)> = o
            .form
            .iter()
            .map(|(k, t)| Ok((k.clone(), render(t)?)))
            .collect::<Result<_, Problem>>()?;
        let mut req = client
            .post(&url)
            .timeout(deadline.saturating_duration_since(Instant::now()))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(build::encode_pairs(&form, true));
        for (k, t) in &o.headers {
            req = req.header(k.as_str(), render(t)?);
        }
        let unavailable = |d: String| Problem::new(ProblemKind::PlatformFailed, d);
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                Problem::new(
                    ProblemKind::PlatformTimeout,
                    format!(
                        "the token endpoint of '{}' did not answer within the call's deadline",
                        platform.name
                    ),
                )
            } else {
                unavailable(format!(
                    "cannot reach the token endpoint of '{}': {}",
                    platform.name,
                    root_cause(&e)
                ))
            }
        })?;
        let status = resp.status().as_u16();
        let body = transport::read_limited(resp, max_answer)
            .await
            .map_err(|e| match e {
                ReadFailure::TooLarge(seen) => too_large(
                    &format!("the token answer of '{}'", platform.name),
                    max_answer,
                    &seen,
                ),
                ReadFailure::Broke(e) if e.is_timeout() => Problem::new(
                    ProblemKind::PlatformTimeout,
                    format!(
                        "the token endpoint of '{}' did not answer within the call's deadline",
                        platform.name
                    ),
                ),
                ReadFailure::Broke(e) => unavailable(format!(
                    "the token answer of '{}' broke off: {}",
                    platform.name,
                    root_cause(&e)
                )),
            })?;
        let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let value = o
            .token_path
            .first(&doc)
            .and_then(Value::as_str)
            .filter(|_| (200..300).contains(&status));
        let Some(value) = value else {
            return Err(Problem::new(
                ProblemKind::PlatformError,
                format!(
                    "the token endpoint of '{}' gave no token (HTTP {status}, nothing at {}); check the client credentials",
                    platform.name,
                    o.token_path.source()
                ),
            ));
        };
        let ttl = o
            .expires_in_path
            .first(&doc)
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .map(std::time::Duration::from_secs)
            .unwrap_or(o.default_ttl);
        let renew_at = now
            .checked_add(
                ttl.saturating_sub(o.refresh_before)
                    .min(std::time::Duration::from_secs(86_400 * 365)),
            )
            .unwrap_or(now);
        *cached = Some(Token {
            value: value.to_string(),
            renew_at,
        });
        tracing::info!(platform = %platform.name, ttl_secs = ttl.as_secs(), "access token obtained");
        self.observer.token_renewed(&platform.name);
        Ok(value.to_string())
    }

    async fn attempt(
        &self,
        client: &reqwest::Client,
        platform: &PlatformPlan,
        op: &OperationPlan,
        r: &BuiltRequest,
        deadline: Instant,
    ) -> Result<Value, Attempt> {
        let t = &op.transport;
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = t.attempt_timeout.min(left);
        let timed_out = || {
            let within = if timeout < t.timeout {
                format!(
                    "{timeout:?} (what was left of the call's deadline of {:?})",
                    t.timeout
                )
            } else {
                format!("{timeout:?}")
            };
            Attempt::Retryable(Problem::new(
                ProblemKind::PlatformTimeout,
                format!("'{}' did not answer within {within}", platform.name),
            ))
        };
        if timeout.is_zero() {
            return Err(timed_out());
        }
        let method = reqwest::Method::from_bytes(method_text(r.method).as_bytes())
            .unwrap_or(reqwest::Method::POST);
        let mut req = client.request(method, &r.url).timeout(timeout);
        for (k, v) in &r.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(ct) = &r.content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct.as_str());
        }
        // The trace context of this attempt, added after signing: never part of what a recipe
        // signs. A platform file that sets its own `traceparent` keeps it.
        let span = tracing::Span::current();
        if !r
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
        {
            for (k, v) in crate::telemetry::headers_for(&span) {
                req = req.header(k, v);
            }
        }
        if !r.body.is_empty() {
            req = req.body(r.body.clone());
        }
        let failed =
            |detail: String| Attempt::Retryable(Problem::new(ProblemKind::PlatformFailed, detail));
        let resp = req.send().await.map_err(|e| {
            if e.is_builder() {
                // The request could not be formed; build() checks what inputs can break, so
                // this is the configuration's doing. Nothing was sent.
                Attempt::Final(Problem::new(
                    ProblemKind::Configuration,
                    format!(
                        "the request of '{}' to {} cannot be formed: {}",
                        platform.name,
                        op.name,
                        root_cause(&e)
                    ),
                ))
            } else if e.is_timeout() {
                timed_out()
            } else {
                failed(format!(
                    "cannot reach '{}': {}",
                    platform.name,
                    root_cause(&e)
                ))
            }
        })?;
        let status = resp.status().as_u16();
        span.record("http.status_code", status);
        let wait = (status == 429 || status == 503)
            .then(|| {
                resp.headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| transport::retry_after(v, std::time::SystemTime::now()))
            })
            .flatten();
        let body = transport::read_limited(resp, t.max_answer)
            .await
            .map_err(|e| match e {
                // Asking again would most likely bring the same answer: not retried.
                ReadFailure::TooLarge(seen) => Attempt::Final(too_large(
                    &format!("the answer of '{}' (HTTP {status})", platform.name),
                    t.max_answer,
                    &seen,
                )),
                ReadFailure::Broke(e) if e.is_timeout() => timed_out(),
                ReadFailure::Broke(e) => failed(format!(
                    "the answer of '{}' broke off: {}",
                    platform.name,
                    root_cause(&e)
                )),
            })?;
        if status >= 500 || status == 429 {
            let kind = if status == 429 {
                ProblemKind::PlatformRateLimited
            } else {
                ProblemKind::PlatformFailed
            };
            let mut p = Problem::new(kind, format!("'{}' answered HTTP {status}", platform.name));
            p.platform_status = Some(status);
            if let Some(w) = wait {
                p.retry_after = Some(ceil_secs(w));
                p.detail
                    .push_str(&format!(", asking to wait {}s", ceil_secs(w)));
            }
            return Err(Attempt::Retryable(p));
        }
        if status == 401 && matches!(platform.auth, AuthPlan::OAuth2(_)) {
            return Err(Attempt::Unauthorized(Problem::new(
                ProblemKind::PlatformError,
                format!(
                    "'{}' refused the access token (HTTP 401), also after renewing it",
                    platform.name
                ),
            )));
        }
        let a = &op.answer;
        let doc = decode::decode(a.format, &body).map_err(|e| {
            Attempt::Final(Problem::new(
                ProblemKind::MappingError,
                format!(
                    "the answer of '{}' (HTTP {status}) cannot be read: {e}",
                    platform.name
                ),
            ))
        })?;
        let status_ok = if a.success_status.is_empty() {
            (200..300).contains(&status)
        } else {
            a.success_status.contains(&status)
        };
        let code = a
            .success_path
            .as_ref()
            .and_then(|p| p.first(&doc))
            .map(text_of);
        let code_ok = match (&a.success_path, &code) {
            (None, _) => true,
            (Some(_), Some(c)) => a.success_values.iter().any(|v| v == c),
            (Some(_), None) => false,
        };
        if status_ok && code_ok {
            return Ok(doc);
        }
        let platform_code = a
            .error_code
            .as_ref()
            .and_then(|p| p.first(&doc))
            .map(text_of)
            .or(code);
        let platform_message = a
            .error_message
            .as_ref()
            .and_then(|p| p.first(&doc))
            .map(text_of);
        let retryable = platform_code
            .as_ref()
            .is_some_and(|c| a.retryable.contains(c));
        let mut p = Problem::new(
            ProblemKind::PlatformError,
            format!(
                "'{}' refused {} (HTTP {status}, code {}): {}",
                platform.name,
                op.name,
                platform_code.as_deref().unwrap_or("none"),
                platform_message.as_deref().unwrap_or("no message")
            ),
        );
        p.platform_code = platform_code;
        p.platform_message = platform_message;
        p.platform_details = a
            .error_details
            .as_ref()
            .and_then(|path| path.first(&doc))
            .filter(|d| serde_json::to_vec(d).is_ok_and(|t| t.len() <= MAX_PLATFORM_DETAILS))
            .cloned();
        p.platform_status = (!status_ok).then_some(status);
        p.retryable = retryable;
        Err(if retryable {
            Attempt::Retryable(p)
        } else {
            Attempt::Final(p)
        })
    }

    async fn map_output(
        &self,
        platform: &PlatformPlan,
        op: &OperationPlan,
        doc: &Value,
        input: &Value,
    ) -> Result<Value, Problem> {
        let Some(plan) = &op.output else {
            return Ok(doc.clone());
        };
        let mut extra = Map::new();
        extra.insert("settings".into(), Value::Object(platform.settings.clone()));
        extra.insert("platform".into(), Value::String(platform.name.clone()));
        // The caller's input, with the mall's own ids: for answers that do not repeat it.
        extra.insert("input".into(), input.clone());
        let mapped = mapping::map_document(plan, doc, &extra).map_err(|e| {
            Problem::new(
                ProblemKind::MappingError,
                format!(
                    "the answer of '{}' to {} does not map: {e}",
                    platform.name, op.name
                ),
            )
        })?;
        if mapped.missing_optional > 0 {
            tracing::debug!(platform = %platform.name, operation = %op.name, missing = mapped.missing_optional, "optional values absent");
        }
        self.translate_ids(platform, mapped).await
    }

    /// Replaces the platform ids found while mapping with internal ids (see
    /// [`Ids::translate_mapped`]).
    pub async fn translate_ids(
        &self,
        platform: &PlatformPlan,
        mapped: mapping::Mapped,
    ) -> Result<Value, Problem> {
        self.ids.translate_mapped(platform, mapped).await
    }

    async fn record(
        &self,
        platform: &PlatformPlan,
        op: &OperationPlan,
        input: &Value,
        doc: &Value,
    ) -> Result<(), Problem> {
        let now = OffsetDateTime::now_utc().unix_timestamp() * 1000;
        for r in &op.record {
            let mut ctx = Map::new();
            ctx.insert("input".into(), input.clone());
            let internal = r
                .internal
                .render(&Value::Object(ctx))
                .map_err(|e| Problem::new(ProblemKind::Configuration, e))?;
            let Some(pid) = r.platform.first(doc).map(text_of).filter(|p| !p.is_empty()) else {
                return Err(Problem::new(
                    ProblemKind::MappingError,
                    format!(
                        "'{}' answered without the {} id at {}",
                        platform.name,
                        r.kind,
                        r.platform.source()
                    ),
                ));
            };
            self.ids
                .record(&platform.name, &r.kind, &internal, &pid, now)
                .await
                .map_err(|e| match e {
                    crate::store::StoreError::MappingConflict { message, .. } => {
                        Problem::new(ProblemKind::MappingError, message)
                    }
                    other => store_problem(other),
                })?;
        }
        Ok(())
    }
}

fn build_problem(e: BuildError) -> Problem {
    match e {
        BuildError::MissingCredential { .. } => {
            Problem::new(ProblemKind::Configuration, e.to_string())
        }
        BuildError::Render { .. } | BuildError::Sign { .. } => {
            Problem::new(ProblemKind::Configuration, e.to_string())
        }
        BuildError::InvalidInput {
            ref fields,
            ref message,
            ..
        } => {
            let mut p = Problem::new(ProblemKind::InvalidInput, e.to_string());
            p.errors = vec![format!("{fields}: {message}")];
            p
        }
    }
}

/// Whole seconds, rounded up (for `Retry-After`).
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The problem of an answer larger than `transport.max_answer`: a failure of the platform
/// (502, counted by the circuit breaker), not worth retrying at once.
fn too_large(what: &str, limit: usize, seen: &str) -> Problem {
    let mut p = Problem::new(
        ProblemKind::PlatformFailed,
        format!(
            "{what} is larger than transport.max_answer ({limit} bytes): {seen}; it was not read further. If the platform's answers are really this large, raise `transport.max_answer` in its platform file"
        ),
    );
    p.retryable = false;
    p
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl Engine {
    /// Runs `op_name` on whichever platforms own the internal ids in `input`: an input whose
    /// ids belong to several platforms (an order with SKUs of two suppliers) is split into one
    /// call per platform. The answer lists every part with its platform, ids and outcome.
    pub async fn route(
        &self,
        plan: &crate::plan::Plan,
        op_name: &str,
        input: &Value,
    ) -> Result<(bool, Value), Problem> {
        if crate::canonical::owner_of(op_name).is_none() {
            return Err(Problem::new(
                ProblemKind::NotFound,
                format!(
                    "{op_name} cannot be routed by ids; call /v1/platforms/{{platform}}/operations/{op_name}"
                ),
            ));
        }
        let errors = crate::canonical::input_problems(op_name, input);
        if !errors.is_empty() {
            let mut p = Problem::new(
                ProblemKind::InvalidInput,
                format!("the input of {op_name} is not valid: {}", errors.join("; ")),
            );
            p.errors = errors;
            return Err(p);
        }
        let parts = self.split(op_name, input).await?;
        let mut all_ok = true;
        let mut out = Vec::new();
        for Routed {
            platform: p,
            ids,
            input: part_input,
        } in parts
        {
            let Some(platform) = plan.platforms.get(&p) else {
                all_ok = false;
                let problem = Problem::new(
                    ProblemKind::NotFound,
                    format!("the ids belong to platform '{p}', which is not loaded"),
                )
                .at(&p, op_name);
                out.push(serde_json::json!({"platform": p, "ids": ids, "status": problem.status, "problem": problem}));
                continue;
            };
            match self.call(platform, op_name, &part_input, false).await {
                Ok(CallOutcome::Output(v)) => out.push(
                    serde_json::json!({"platform": p, "ids": ids, "status": 200, "output": v}),
                ),
                Ok(CallOutcome::DryRun(_)) => {}
                Err(problem) => {
                    all_ok = false;
                    out.push(serde_json::json!({"platform": p, "ids": ids, "status": problem.status, "problem": problem}));
                }
            }
        }
        Ok((all_ok, serde_json::json!({ "parts": out })))
    }

    /// Splits `input` of `op_name` into one part per platform owning its internal ids (see
    /// [`Engine::route`]), without calling anything. The input is not validated here.
    pub async fn split(&self, op_name: &str, input: &Value) -> Result<Vec<Routed>, Problem> {
        use crate::canonical::{Owner, owner_of};
        let Some(owner) = owner_of(op_name) else {
            return Err(Problem::new(
                ProblemKind::NotFound,
                format!(
                    "{op_name} cannot be routed by ids; call /v1/platforms/{{platform}}/operations/{op_name}"
                ),
            ));
        };
        let owner_platform = |kind: &'static str, id: String| async move {
            let owners = self.ids.owners(kind, &id).await.map_err(store_problem)?;
            match owners.as_slice() {
                [(p, _)] => Ok(p.clone()),
                [] => Err(Problem::new(
                    ProblemKind::UnknownId,
                    format!("{kind} '{id}' belongs to no platform (no key mapping)"),
                )),
                many => Err(Problem::new(
                    ProblemKind::UnknownId,
                    format!(
                        "{kind} '{id}' is mapped on several platforms ({}); call one explicitly",
                        many.iter()
                            .map(|(p, _)| p.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
        };
        // One part per platform, in the order platforms first appear.
        let mut parts: Vec<Routed> = Vec::new();
        match owner {
            Owner::Field(field, kind) => {
                let id = input.get(field).map(text_of).unwrap_or_default();
                let p = owner_platform(kind, id.clone()).await?;
                parts.push(Routed {
                    platform: p,
                    ids: vec![id],
                    input: input.clone(),
                });
            }
            Owner::Split { array, id, kind } => {
                let items = input
                    .get(array)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let mut groups: Vec<(String, Vec<String>, Vec<Value>)> = Vec::new();
                for item in items {
                    let key = match id {
                        Some(f) => item.get(f).map(text_of).unwrap_or_default(),
                        None => text_of(&item),
                    };
                    let p = owner_platform(kind, key.clone()).await?;
                    match groups.iter_mut().find(|(gp, _, _)| *gp == p) {
                        Some((_, ids, elems)) => {
                            ids.push(key);
                            elems.push(item);
                        }
                        None => groups.push((p, vec![key], vec![item])),
                    }
                }
                for (i, (p, ids, elems)) in groups.into_iter().enumerate() {
                    let mut part = input.clone();
                    if let Some(obj) = part.as_object_mut() {
                        obj.insert(array.to_string(), Value::Array(elems.clone()));
                        // An order split across suppliers: each part pays for its own lines;
                        // the freight goes with the first part.
                        if op_name == "order.create" {
                            let lines: i64 = elems
                                .iter()
                                .map(|l| {
                                    let q = l.get("quantity").and_then(Value::as_i64).unwrap_or(0);
                                    let a = l
                                        .pointer("/unit_price/amount")
                                        .and_then(Value::as_i64)
                                        .unwrap_or(0);
                                    q.saturating_mul(a)
                                })
                                .fold(0i64, i64::saturating_add);
                            let freight = if i == 0 {
                                obj.get("freight")
                                    .and_then(|f| f.get("amount"))
                                    .and_then(Value::as_i64)
                                    .unwrap_or(0)
                            } else {
                                0
                            };
                            if i > 0 {
                                obj.remove("freight");
                            }
                            if let Some(total) = obj.get_mut("total").and_then(Value::as_object_mut)
                            {
                                total.insert(
                                    "amount".into(),
                                    Value::from(lines.saturating_add(freight)),
                                );
                            }
                        }
                    }
                    parts.push(Routed {
                        platform: p,
                        ids,
                        input: part,
                    });
                }
            }
        }
        Ok(parts)
    }
}

/// One platform's part of a routed input.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// The platform owning the part's ids.
    pub platform: String,
    /// The internal ids that put the part on this platform.
    pub ids: Vec<String>,
    /// The part's canonical input.
    pub input: Value,
}

impl Engine {
    /// Sends an operation that has no canonical input (a poller's fetch) and returns the
    /// platform's answer as decoded, after judging it.
    pub async fn fetch(
        &self,
        platform: &PlatformPlan,
        op: &OperationPlan,
    ) -> Result<Value, Problem> {
        let credentials = self.credentials_for(platform);
        let input = Value::Object(Map::new());
        let build_once = |token: Option<String>| {
            build(
                platform,
                op,
                &BuildInput {
                    input: &input,
                    credentials: &credentials,
                    now: OffsetDateTime::now_utc(),
                    nonce: None,
                    token,
                },
            )
            .map_err(|e| build_problem(e).at(&platform.name, &op.name))
        };
        self.send(platform, op, &credentials, build_once)
            .await
            .map_err(|p| p.at(&platform.name, &op.name))
    }
}
