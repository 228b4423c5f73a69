//! The HTTP server (HTTP/1.1, with header and body timeouts and a connection cap): the
//! canonical API, callbacks and the admin API. Knows no platform by name: it serves whatever
//! the current plan holds.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use opentelemetry::context::FutureExt as _;
use serde_json::{Value, json};

use crate::engine::CallOutcome;
use crate::engine::problem::{Problem, ProblemKind};
use crate::plan::Plan;

/// Shared state of the server.
#[derive(Clone, Default)]
pub struct AppState {
    /// The current plan; each request takes one snapshot and uses it to the end.
    pub plan: Arc<ArcSwap<Plan>>,
    /// The store (absent only in tests of routes that need none).
    pub store: Option<crate::store::Store>,
    /// The outbound engine (absent only in tests of routes that need none).
    pub engine: Option<Arc<crate::engine::Engine>>,
    /// Internal targets of events.
    pub targets: Arc<Vec<crate::compile::gateway::TargetSettings>>,
    /// Bearer token of the admin API; without one every admin route refuses.
    pub admin_token: Option<crate::config::Secret>,
    /// Wakes the dispatcher when events were stored.
    pub notify: Option<Arc<tokio::sync::Notify>>,
    /// Hot reload of the platform files.
    pub reloader: Option<Arc<crate::reload::Reloader>>,
    /// Whether a callback's `{{url}}` takes its scheme and host from `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` (`server.trust_forwarded_headers`); else `http` and the `Host`
    /// header. Default: false.
    pub trust_forwarded_headers: bool,
    /// The order saga (absent only in tests of routes that need none).
    pub orders: Option<Arc<crate::flows::saga::Orders>>,
    /// Product sync (absent: the sync routes answer 503).
    pub sync: Option<Arc<crate::flows::sync::Syncer>>,
    /// The metrics `/metrics` serves; the engine and dispatcher report to it through their
    /// observer (see `cli::serve`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Monitoring thresholds (absent: the status lists no tripped threshold).
    pub monitor: Option<Arc<crate::monitor::Monitor>>,
}

/// Largest body accepted (callbacks and canonical calls alike): 2 MiB.
pub const CALLBACK_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The router with every route.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/platforms", get(platforms))
        .route("/v1/openapi.json", get(openapi))
        .route(
            "/v1/platforms/{platform}/operations/{operation}",
            post(call_operation),
        )
        .route("/v1/operations/{operation}", post(route_operation))
        .route("/v1/mappings/{platform}/{kind}", get(mapping))
        .route("/v1/orders/{order_id}", get(order_get))
        .route("/v1/reconciliation", get(reconciliation))
        .route("/v1/orders/{order_id}/check", post(order_check))
        .route("/v1/orders/{order_id}/paid", post(order_paid))
        .route("/callbacks/{*route}", axum::routing::any(callback))
        .route("/admin/v1/deliveries", get(admin_deliveries))
        .route("/admin/v1/dead-letters", get(admin_dead_letters))
        .route("/admin/v1/dead-letters/replay", post(admin_replay_all))
        .route("/admin/v1/dead-letters/{id}/replay", post(admin_replay_one))
        .route(
            "/admin/v1/platforms/{platform}/credentials",
            axum::routing::put(admin_push_credentials),
        )
        .route(
            "/admin/v1/platforms/{platform}/sync",
            post(admin_sync_start).get(admin_sync_state),
        )
        .route(
            "/admin/v1/platforms/{platform}/sync/{id}",
            get(admin_sync_run),
        )
        .route("/admin/v1/reload", post(admin_reload))
        .route("/admin/v1/status", get(admin_status))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(CALLBACK_BODY_LIMIT))
        .with_state(state)
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let plan = state.plan.load();
    let store_ok = match &state.store {
        Some(s) => s.ping().await.is_ok(),
        None => true,
    };
    let status = if store_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if store_ok { "ready" } else { "store unavailable" },
        "platforms": plan.platforms.len(),
    });
    (status, Json(body))
}

async fn platforms(State(state): State<AppState>) -> Json<Value> {
    let plan = state.plan.load();
    let list: Vec<Value> = plan
        .platforms
        .values()
        .map(|p| {
            json!({
                "platform": p.name,
                "title": p.title,
                "version": p.version,
                "operations": p.operations.keys().collect::<Vec<_>>(),
                "callbacks": p.callbacks.iter().map(|c| format!("/callbacks{}", c.path)).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({ "platforms": list }))
}

/// How long clients may take, how many may be connected at once, and whether a proxy's
/// forwarded headers are trusted (`server:` in `entrepot.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time allowed to send a request's header block. Default: 10 s.
    pub header_timeout: std::time::Duration,
    /// Time allowed to send a request's body, counted from its arrival. Default: 30 s.
    pub body_timeout: std::time::Duration,
    /// Connections served at once; more wait to be accepted. Default: 1024.
    pub max_connections: usize,
    /// Whether `X-Forwarded-Proto`/`X-Forwarded-Host` make a callback's `{{url}}` (the server
    /// reads it from [`AppState::trust_forwarded_headers`], which the caller sets from this).
    /// Default: false.
    pub trust_forwarded_headers: bool,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: std::time::Duration::from_secs(10),
            body_timeout: std::time::Duration::from_secs(30),
            max_connections: 1024,
            trust_forwarded_headers: false,
        }
    }
}

/// Binds `addr` and serves until `shutdown` resolves, with the default [`ServerLimits`].
/// Returns the bound address through `bound` (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(addr, state, ServerLimits::default(), bound, shutdown).await
}

/// Binds `addr` and serves HTTP/1.1 until `shutdown` resolves, holding clients to `limits`: a
/// header block must arrive within `header_timeout` of the connection being ready for it
/// (else the connection is closed; this also closes idle kept-alive connections), a body within
/// `body_timeout` of its request (else 408 and the connection is closed), and at most
/// `max_connections` connections are served at once (the others wait in the listen queue).
/// On shutdown it stops accepting, lets requests in progress finish and closes idle
/// connections.
pub async fn serve_with(
    addr: SocketAddr,
    state: AppState,
    limits: ServerLimits,
    bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    bound(listener.local_addr()?);
    let app = router(state).layer(axum::middleware::from_fn_with_state(
        limits.body_timeout,
        body_deadline,
    ));
    let places = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    // HTTP/1.1 only: its header timer runs from the moment a request is awaited, so a
    // connection that sends nothing, or a header block that never ends, is closed.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A place first, then a connection: beyond the cap, clients wait to be accepted.
        let place = tokio::select! {
            p = places.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection closed: {e}");
            }
            drop(place);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A request body that must be complete by a deadline; past it, reading fails and `expired`
/// is set.
struct DeadlineBody {
    inner: axum::body::Body,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    expired: Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.expired
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Poll::Ready(Some(Err(axum::Error::new(
                    "the request body took too long",
                ))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Gives every request body until `limit` after the request arrived; a body still incomplete
/// then is answered 408 and its connection closed.
async fn body_deadline(
    State(limit): State<std::time::Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let expired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = expired.clone();
    let request = request.map(|inner| {
        axum::body::Body::new(DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            expired: flag,
        })
    });
    let response = next.run(request).await;
    if !expired.load(std::sync::atomic::Ordering::SeqCst) {
        return response;
    }
    let mut p = Problem::new(
        ProblemKind::InvalidInput,
        format!(
            "the request body did not arrive within {} ms; send it at once",
            limit.as_millis()
        ),
    );
    p.status = 408;
    p.title = "Request timeout".into();
    let mut response = problem_response(&p);
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// A problem as an HTTP answer (`application/problem+json`).
pub fn problem_response(p: &Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(p).unwrap_or_default();
    let mut resp = (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
        body,
    )
        .into_response();
    if let Some(secs) = p.retry_after {
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(secs),
        );
    }
    resp
}

/// The engine, or the answer saying there is none.
fn engine_of(state: &AppState) -> Result<&Arc<crate::engine::Engine>, Box<Response>> {
    state.engine.as_ref().ok_or_else(|| {
        Box::new(problem_response(&Problem::new(
            ProblemKind::Configuration,
            "this server has no engine",
        )))
    })
}

/// Deepest nesting of arrays and objects in a canonical input: 32.
pub const INPUT_MAX_DEPTH: usize = 32;

/// Most values (array items and object members) in a canonical input: 10 000.
pub const INPUT_MAX_VALUES: usize = 10_000;

/// A canonical input from a request body, or the 400 answer naming what is wrong. Its shape is
/// checked on the bytes first ([`INPUT_MAX_DEPTH`], [`INPUT_MAX_VALUES`]): decoded, a body of
/// many small values takes some 25 times its size.
fn json_input(body: &[u8]) -> Result<Value, Box<Problem>> {
    crate::engine::decode::json_shape_within(body, INPUT_MAX_DEPTH, INPUT_MAX_VALUES).map_err(
        |e| {
            Box::new(Problem::new(
                ProblemKind::InvalidInput,
                format!(
                    "the request body is refused: {e}; canonical inputs are small, split the call"
                ),
            ))
        },
    )?;
    serde_json::from_slice(body).map_err(|e| {
        Box::new(Problem::new(
            ProblemKind::InvalidInput,
            format!("the request body is not JSON: {e}"),
        ))
    })
}

async fn call_operation(
    State(state): State<AppState>,
    Path((platform, operation)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // One snapshot of the plan for the whole call.
    let plan = state.plan.load_full();
    let Some(p) = plan.platforms.get(&platform) else {
        let known: Vec<&str> = plan.platforms.keys().map(String::as_str).collect();
        return problem_response(&Problem::new(
            ProblemKind::NotFound,
            format!("no platform '{platform}' (loaded: {})", known.join(", ")),
        ));
    };
    let engine = match engine_of(&state) {
        Ok(e) => e,
        Err(r) => return *r,
    };
    let input = match json_input(&body) {
        Ok(v) => v,
        Err(p) => return problem_response(&p.at(&platform, &operation)),
    };
    // The caller's `traceparent`, when valid, is the parent of the call's span.
    let call = engine
        .call(p, &operation, &input, false)
        .with_context(crate::telemetry::extract(&headers));
    match call.await {
        Ok(CallOutcome::Output(v)) => Json(v).into_response(),
        Ok(CallOutcome::DryRun(_)) => StatusCode::NO_CONTENT.into_response(),
        Err(problem) => problem_response(&problem),
    }
}

/// Query of a mapping lookup: exactly one of the two ids.
#[derive(Debug, serde::Deserialize)]
struct MappingQuery {
    internal_id: Option<String>,
    platform_id: Option<String>,
}

async fn mapping(
    State(state): State<AppState>,
    Path((platform, kind)): Path<(String, String)>,
    Query(q): Query<MappingQuery>,
) -> Response {
    let Some(store) = &state.store else {
        return problem_response(&Problem::new(
            ProblemKind::StoreUnavailable,
            "this server has no store",
        ));
    };
    let result = match (&q.internal_id, &q.platform_id) {
        (Some(i), None) => store
            .to_platform(&platform, &kind, std::slice::from_ref(i))
            .await
            .map(|m| m.get(i).map(|p| (i.clone(), p.clone()))),
        (None, Some(p)) => store
            .to_internal(&platform, &kind, std::slice::from_ref(p))
            .await
            .map(|m| m.get(p).map(|i| (i.clone(), p.clone()))),
        _ => {
            return problem_response(&Problem::new(
                ProblemKind::InvalidInput,
                "give exactly one of ?internal_id=... and ?platform_id=...",
            ));
        }
    };
    match result {
        Ok(Some((internal_id, platform_id))) => {
            Json(json!({"platform": platform, "kind": kind, "internal_id": internal_id, "platform_id": platform_id})).into_response()
        }
        Ok(None) => problem_response(&Problem::new(
            ProblemKind::NotFound,
            format!("no {kind} mapping on '{platform}' for that id"),
        )),
        Err(e) => {
            tracing::error!("{e}");
            problem_response(&Problem::new(ProblemKind::StoreUnavailable, "the gateway's store failed; see the gateway's log"))
        }
    }
}

/// The query of `GET /v1/reconciliation`.
#[derive(Debug, serde::Deserialize)]
struct ReconcileQuery {
    platform: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

async fn reconciliation(
    State(state): State<AppState>,
    Query(q): Query<ReconcileQuery>,
) -> Response {
    let Some(engine) = &state.engine else {
        return problem_response(&Problem::new(
            ProblemKind::StoreUnavailable,
            "this server has no engine and store",
        ));
    };
    let Some(name) = q.platform.as_deref().filter(|p| !p.is_empty()) else {
        return problem_response(&Problem::new(
            ProblemKind::InvalidInput,
            "give the platform: /v1/reconciliation?platform=NAME&from=...&to=...",
        ));
    };
    let window = match crate::flows::reconcile::window(q.from.as_deref(), q.to.as_deref()) {
        Ok(w) => w,
        Err(p) => return problem_response(&p),
    };
    let plan = state.plan.load_full();
    let Some(platform) = plan.platforms.get(name) else {
        let known: Vec<&str> = plan.platforms.keys().map(String::as_str).collect();
        return problem_response(&Problem::new(
            ProblemKind::NotFound,
            format!(
                "no platform '{name}' is loaded (loaded: {})",
                known.join(", ")
            ),
        ));
    };
    match crate::flows::reconcile::reconcile(engine, platform, &window).await {
        Ok(report) => Json(report).into_response(),
        Err(p) => problem_response(&p),
    }
}

async fn route_operation(
    State(state): State<AppState>,
    Path(operation): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let plan = state.plan.load_full();
    let engine = match engine_of(&state) {
        Ok(e) => e,
        Err(r) => return *r,
    };
    let input = match json_input(&body) {
        Ok(v) => v,
        Err(p) => return problem_response(&p),
    };
    let routed = engine
        .route(&plan, &operation, &input)
        .with_context(crate::telemetry::extract(&headers));
    match routed.await {
        Ok((true, v)) => Json(v).into_response(),
        Ok((false, v)) => (StatusCode::BAD_GATEWAY, Json(v)).into_response(),
        Err(problem) => problem_response(&problem),
    }
}

/// The order saga, or the answer saying there is none.
fn orders_of(state: &AppState) -> Result<&Arc<crate::flows::saga::Orders>, Box<Response>> {
    state.orders.as_ref().ok_or_else(|| {
        Box::new(problem_response(&Problem::new(
            ProblemKind::Configuration,
            "this server runs no order saga",
        )))
    })
}

async fn order_check(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let orders = match orders_of(&state) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let input = match json_input(&body) {
        Ok(v) => v,
        Err(p) => return problem_response(&p),
    };
    match orders.check(&order_id, &input).await {
        Ok(v) => Json(v).into_response(),
        Err(p) => problem_response(&p),
    }
}

async fn order_paid(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    use crate::flows::saga::PaidError;
    let orders = match orders_of(&state) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let input = match json_input(&body) {
        Ok(v) => v,
        Err(p) => return problem_response(&p),
    };
    match orders.paid(&order_id, input).await {
        // Recorded: answered, then worked on (the worker resumes it if this instance dies).
        Ok(saga) => {
            let runner = orders.clone();
            let id = order_id.clone();
            tokio::spawn(async move { runner.advance(&id).await });
            (
                StatusCode::ACCEPTED,
                [(
                    axum::http::header::LOCATION,
                    format!("/v1/orders/{}", percent_path(&order_id)),
                )],
                Json(json!({
                    "order_id": saga.order_id,
                    "state": saga.state,
                    "parts": saga.parts.iter().map(|p| json!({"platform": p.platform, "sku_ids": p.sku_ids, "state": p.state})).collect::<Vec<_>>(),
                    "deadline": saga.deadline,
                })),
            )
                .into_response()
        }
        Err(PaidError::Problem(p)) => problem_response(&p),
        Err(PaidError::Conflict(detail)) => (
            StatusCode::CONFLICT,
            [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
            Json(json!({
                "type": "https://entrepot.dev/problems/order-conflict",
                "title": "Order already recorded",
                "status": 409,
                "detail": detail,
                "retryable": false,
            })),
        )
            .into_response(),
    }
}

async fn order_get(State(state): State<AppState>, Path(order_id): Path<String>) -> Response {
    let orders = match orders_of(&state) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    match orders.get(&order_id).await {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => problem_response(&Problem::new(
            ProblemKind::NotFound,
            format!(
                "no order saga for order '{order_id}'; record it with POST /v1/orders/{{order_id}}/paid"
            ),
        )),
        Err(p) => problem_response(&p),
    }
}

/// An id for a URL path: every byte but unreserved ASCII percent-encoded.
fn percent_path(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document().clone())
}

async fn callback(
    State(state): State<AppState>,
    Path(route): Path<String>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
    body: axum::body::Body,
) -> Response {
    let plan = state.plan.load_full();
    let Some(engine) = &state.engine else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let route = format!("/{route}");
    // The body is read no further than the route's limit (nothing is read for an unknown
    // route, or when the declared length is already over the limit).
    let (body, over_limit) = match crate::callbacks::find(&plan, &route) {
        None => (Vec::new(), None),
        Some((_, cb)) => {
            let declared = headers
                .get(axum::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            match declared {
                Some(n) if n > u64::try_from(cb.limits.body).unwrap_or(u64::MAX) => {
                    (Vec::new(), Some(n))
                }
                _ => match read_capped(body, cb.limits.body).await {
                    Ok(read) => read,
                    Err(e) => {
                        tracing::warn!(route = %route, "a callback body could not be read: {e}");
                        return (
                            StatusCode::BAD_REQUEST,
                            Json(json!({ "error": "the body could not be read" })),
                        )
                            .into_response();
                    }
                },
            }
        }
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or_default().trim().to_string())
            .filter(|v| !v.is_empty())
    };
    // The URL as the sender used it: http and the Host header, or, behind a trusted proxy
    // (`server.trust_forwarded_headers`), the scheme and host of its X-Forwarded-Proto and
    // X-Forwarded-Host when present. A client's own X-Forwarded-* are not believed.
    let forwarded = |name: &str| {
        if state.trust_forwarded_headers {
            header(name)
        } else {
            None
        }
    };
    let scheme = forwarded("x-forwarded-proto").unwrap_or_else(|| "http".into());
    let host = forwarded("x-forwarded-host")
        .or_else(|| header("host"))
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    let inbound = crate::callbacks::Inbound {
        method: method.as_str().to_string(),
        route,
        url: format!("{scheme}://{host}{path_and_query}"),
        raw_query: uri.query().unwrap_or_default().to_string(),
        query: Vec::new(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        over_limit,
    };
    let notify = state.notify.clone();
    let wake = move || {
        if let Some(n) = &notify {
            n.notify_one();
        }
    };
    let reply = crate::callbacks::receive(
        &plan,
        engine,
        &state.targets,
        inbound,
        time::OffsetDateTime::now_utc(),
        &wake,
    )
    .await;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(axum::http::header::CONTENT_TYPE, reply.content_type)],
        reply.body,
    )
        .into_response()
}

/// Reads a body up to `limit` bytes. Past the limit, reading stops: the first
/// [`crate::store::KEPT_BODY_BYTES`] are returned with the size read so far.
async fn read_capped(
    body: axum::body::Body,
    limit: usize,
) -> Result<(Vec<u8>, Option<u64>), axum::Error> {
    use axum::body::HttpBody;
    let mut body = std::pin::pin!(body);
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if buf.len().saturating_add(data.len()) > limit {
            let read = buf.len().saturating_add(data.len());
            let mut start = buf;
            start.extend_from_slice(&data);
            start.truncate(crate::store::KEPT_BODY_BYTES);
            return Ok((start, Some(u64::try_from(read).unwrap_or(u64::MAX))));
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf, None))
}

/// Refuses unless the request carries the admin bearer token (compared in constant time).
fn admin_refusal(state: &AppState, headers: &axum::http::HeaderMap) -> Option<Response> {
    use subtle::ConstantTimeEq;
    let Some(token) = &state.admin_token else {
        // Switched off by configuration: unavailable, not a server error.
        let mut p = Problem::new(
            ProblemKind::Configuration,
            "the admin API is disabled: set admin.token in entrepot.yaml (for example from ENTREPOT_ADMIN_TOKEN) and restart",
        );
        p.status = 503;
        p.title = "The admin API is disabled".into();
        return Some(problem_response(&p));
    };
    // `Authorization: <scheme> <token>`; the scheme name is case-insensitive (RFC 9110 §11.1).
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim_start())
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
        None
    } else {
        let mut p = Problem::new(
            ProblemKind::Configuration,
            "the admin API needs `Authorization: Bearer <admin token>`",
        );
        p.status = 401;
        p.title = "Unauthorized".into();
        Some(problem_response(&p))
    }
}

/// Query of the admin listings.
#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    platform: Option<String>,
    limit: Option<i64>,
}

fn store_of(state: &AppState) -> Result<&crate::store::Store, Box<Response>> {
    state.store.as_ref().ok_or_else(|| {
        Box::new(problem_response(&Problem::new(
            ProblemKind::StoreUnavailable,
            "this server has no store",
        )))
    })
}

/// The store, after checking the admin token: the gate of every admin route that reads or
/// changes stored state.
fn admin_store<'s>(
    state: &'s AppState,
    headers: &axum::http::HeaderMap,
) -> Result<&'s crate::store::Store, Box<Response>> {
    if let Some(r) = admin_refusal(state, headers) {
        return Err(Box::new(r));
    }
    store_of(state)
}

fn store_failed(e: crate::store::StoreError) -> Response {
    tracing::error!("{e}");
    problem_response(&Problem::new(
        ProblemKind::StoreUnavailable,
        "the gateway's store failed; see the gateway's log",
    ))
}

async fn admin_deliveries(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let store = match admin_store(&state, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match store.inbox_recent(q.platform.as_deref(), q.limit.unwrap_or(100).clamp(1, 1000)).await {
        Ok(rows) => Json(json!({ "deliveries": rows.iter().map(|r| json!({
            "id": r.id, "platform": r.platform, "route": r.route, "dedupe_key": r.dedupe_key,
            "verified": r.verified, "rejection": r.rejection, "event_type": r.event_type, "received_at_ms": r.received_at,
            "duplicate_of": r.duplicate_of, "body_bytes": r.body_bytes, "body_stored_bytes": r.body_stored_bytes,
        })).collect::<Vec<_>>() }))
        .into_response(),
        Err(e) => store_failed(e),
    }
}

async fn admin_dead_letters(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let store = match admin_store(&state, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match store
        .dead_letters(q.limit.unwrap_or(100).clamp(1, 1000))
        .await
    {
        Ok(rows) => Json(json!({ "dead_letters": rows.iter().map(|r| json!({
            "id": r.id, "event_id": r.event_id, "target": r.target, "event_type": r.event_type,
            "attempts": r.attempts, "last_error": r.last_error,
            "payload": serde_json::from_str::<Value>(&r.payload).unwrap_or(Value::Null),
        })).collect::<Vec<_>>() }))
        .into_response(),
        Err(e) => store_failed(e),
    }
}

async fn replay(state: &AppState, headers: &axum::http::HeaderMap, id: Option<i64>) -> Response {
    let store = match admin_store(state, headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let now = i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX);
    match store.replay_dead(id, now).await {
        Ok(n) => {
            if let Some(notify) = &state.notify {
                notify.notify_one();
            }
            Json(json!({ "replayed": n })).into_response()
        }
        Err(e) => store_failed(e),
    }
}

async fn admin_replay_all(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Response {
    replay(&state, &headers, None).await
}

async fn admin_replay_one(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    replay(&state, &headers, Some(id)).await
}

/// Body of a credential push.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialPush {
    /// The config center's version; only a newer one replaces the stored values.
    version: i64,
    /// Credential name → value.
    values: serde_json::Map<String, Value>,
}

async fn admin_push_credentials(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(platform): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = admin_refusal(&state, &headers) {
        return r;
    }
    let engine = match engine_of(&state) {
        Ok(e) => e,
        Err(r) => return *r,
    };
    // The body holds secrets: errors never echo it.
    let push: CredentialPush = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(_) => {
            return problem_response(&Problem::new(
                ProblemKind::InvalidInput,
                "the body must be {\"version\": <integer>, \"values\": {\"<name>\": \"<value>\", ...}}",
            ));
        }
    };
    let plan = state.plan.load_full();
    let Some(p) = plan.platforms.get(&platform) else {
        return problem_response(&Problem::new(
            ProblemKind::NotFound,
            format!("no platform '{platform}'"),
        ));
    };
    let unknown: Vec<&str> = push
        .values
        .keys()
        .filter(|k| !p.credentials.contains(k))
        .map(String::as_str)
        .collect();
    let not_text = push.values.iter().any(|(_, v)| !v.is_string());
    if !unknown.is_empty() || not_text {
        let detail = if not_text {
            "every credential value must be a string".to_string()
        } else {
            format!(
                "'{platform}' declares no credential named {} (it declares: {})",
                unknown.join(", "),
                p.credentials.join(", ")
            )
        };
        return problem_response(&Problem::new(ProblemKind::InvalidInput, detail));
    }
    match engine
        .push_credentials(
            &platform,
            push.version,
            push.values,
            time::OffsetDateTime::now_utc(),
        )
        .await
    {
        Ok(crate::store::CredentialPut::Accepted) => {
            tracing::info!(platform = %platform, version = push.version, "credentials pushed");
            Json(json!({ "platform": platform, "version": push.version })).into_response()
        }
        Ok(crate::store::CredentialPut::Stale { current }) => {
            let mut p = Problem::new(
                ProblemKind::InvalidInput,
                format!(
                    "version {} is not newer than the stored version {current}; nothing changed",
                    push.version
                ),
            );
            p.status = 409;
            p.title = "Stale credentials push".into();
            problem_response(&p)
        }
        Err(e) => store_failed(e),
    }
}

/// Query of `POST /admin/v1/platforms/{p}/sync`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncQuery {
    /// A full sync instead of an incremental one.
    full: Option<bool>,
}

fn syncer_of(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Arc<crate::flows::sync::Syncer>, Box<Response>> {
    if let Some(r) = admin_refusal(state, headers) {
        return Err(Box::new(r));
    }
    state.sync.clone().ok_or_else(|| {
        let mut p = Problem::new(
            ProblemKind::Configuration,
            "this server does not sync products",
        );
        p.status = 503;
        Box::new(problem_response(&p))
    })
}

/// Starts (or resumes) a sync and answers at once with its id; the sync runs on.
async fn admin_sync_start(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(platform): Path<String>,
    Query(q): Query<SyncQuery>,
) -> Response {
    let syncer = match syncer_of(&state, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let started = match syncer.start(&platform, q.full.unwrap_or(false)).await {
        Ok(s) => s,
        Err(e) => {
            if let crate::flows::sync::SyncError::Store(inner) = &e {
                tracing::error!("{inner}");
            }
            return problem_response(&e.problem());
        }
    };
    let run = started.run.clone();
    tokio::spawn(async move {
        if let Err(e) = syncer.run(started, &|_| {}).await {
            tracing::warn!("{e}");
        }
    });
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "sync_id": run.id,
            "platform": platform,
            "mode": run.mode,
            "resumed": run.resumed > 0,
            "status": format!("/admin/v1/platforms/{platform}/sync/{}", run.id),
        })),
    )
        .into_response()
}

/// The stored sync state of a platform: lease, current or last run, checkpoint, history.
async fn admin_sync_state(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(platform): Path<String>,
) -> Response {
    let syncer = match syncer_of(&state, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match syncer.status(&platform).await {
        Ok(s) => Json(json!({ "platform": platform, "sync": s })).into_response(),
        Err(e) => problem_response(&e.problem()),
    }
}

/// One run's progress.
async fn admin_sync_run(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path((platform, id)): Path<(String, String)>,
) -> Response {
    let syncer = match syncer_of(&state, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match syncer.find(&platform, &id).await {
        Ok(Some(run)) => Json(json!(run)).into_response(),
        Ok(None) => problem_response(&Problem::new(
            ProblemKind::NotFound,
            format!(
                "no sync '{id}' of '{platform}' (only the last {} are kept)",
                crate::flows::sync::HISTORY
            ),
        )),
        Err(e) => problem_response(&e.problem()),
    }
}

async fn admin_reload(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(r) = admin_refusal(&state, &headers) {
        return r;
    }
    let Some(reloader) = &state.reloader else {
        return problem_response(&Problem::new(
            ProblemKind::Configuration,
            "this server does not reload",
        ));
    };
    let report = reloader.reload().await;
    Json(json!(report)).into_response()
}

async fn admin_status(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(r) = admin_refusal(&state, &headers) {
        return r;
    }
    let plan = state.plan.load_full();
    let versions = state
        .engine
        .as_ref()
        .map(|e| e.credential_versions())
        .unwrap_or_default();
    let files = state
        .reloader
        .as_ref()
        .map(|r| r.files())
        .unwrap_or_default();
    // The crossings as the store holds them: the same on every instance.
    let tripped = match &state.monitor {
        Some(m) => match m.tripped().await {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("the tripped thresholds cannot be read: {e}");
                None
            }
        },
        None => Some(Default::default()),
    };
    let platforms: Vec<Value> = plan
        .platforms
        .values()
        .map(|p| {
            let file = files.iter().find(|f| f.platform.as_deref() == Some(p.name.as_str()));
            json!({
                // Each with its observed value, limit and since when; null when the store
                // cannot say.
                "tripped": tripped.as_ref().map(|t| t.get(&p.name).cloned().unwrap_or_default()),
                "platform": p.name,
                "version": file.and_then(|f| f.version.clone()).unwrap_or_else(|| p.version.clone()),
                "file": p.file,
                "loaded_at": file.and_then(|f| f.loaded_at.clone()),
                "last_error": file.map(|f| f.errors.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap_or_default(),
                // Versions only: values never leave the gateway.
                "credentials_version": versions.get(&p.name),
            })
        })
        .collect();
    let failing: Vec<Value> = files
        .iter()
        .filter(|f| f.platform.as_ref().is_none_or(|n| !plan.platforms.contains_key(n)) && !f.errors.is_empty())
        .map(|f| json!({ "file": f.file, "last_error": f.errors.iter().map(ToString::to_string).collect::<Vec<_>>() }))
        .collect();
    let totals = state
        .reloader
        .as_ref()
        .map(|r| r.totals())
        .unwrap_or_default();
    Json(json!({
        "platforms": platforms,
        "files_not_serving": failing,
        "reloads": totals.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<String, Value>>(),
    }))
    .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let plan = state.plan.load_full();
    let scraped = state
        .metrics
        .scrape(crate::metrics::Sources {
            plan: &plan,
            store: state.store.as_ref(),
            engine: state.engine.as_deref(),
            reloader: state.reloader.as_deref(),
            targets: &state.targets,
        })
        .await;
    match scraped {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                crate::metrics::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("{e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the metrics cannot be encoded; see the gateway's log\n",
            )
                .into_response()
        }
    }
}
