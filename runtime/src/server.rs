//! The HTTP server: health endpoints and the platform listing. Knows no platform by name: it
//! serves whatever the current plan holds.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::engine::CallOutcome;
use crate::engine::problem::{Problem, ProblemKind};
use crate::plan::Plan;

/// Shared state of the server.
#[derive(Clone)]
pub struct AppState {
    /// The current plan; each request takes one snapshot and uses it to the end.
    pub plan: Arc<ArcSwap<Plan>>,
    /// The store (absent only in tests of routes that need none).
    pub store: Option<crate::store::Store>,
    /// The outbound engine (absent only in tests of routes that need none).
    pub engine: Option<Arc<crate::engine::Engine>>,
}

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

/// Binds `addr` and serves until `shutdown` resolves. Returns the bound address through
/// `bound` (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    bound(listener.local_addr()?);
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A problem as an HTTP answer (`application/problem+json`).
pub fn problem_response(p: &Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(p).unwrap_or_default();
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
        body,
    )
        .into_response()
}

async fn call_operation(
    State(state): State<AppState>,
    Path((platform, operation)): Path<(String, String)>,
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
    let Some(engine) = &state.engine else {
        return problem_response(&Problem::new(
            ProblemKind::Configuration,
            "this server has no engine",
        ));
    };
    let input: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return problem_response(
                &Problem::new(
                    ProblemKind::InvalidInput,
                    format!("the request body is not JSON: {e}"),
                )
                .at(&platform, &operation),
            );
        }
    };
    match engine.call(p, &operation, &input, false).await {
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

async fn route_operation(
    State(state): State<AppState>,
    Path(operation): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let plan = state.plan.load_full();
    let Some(engine) = &state.engine else {
        return problem_response(&Problem::new(
            ProblemKind::Configuration,
            "this server has no engine",
        ));
    };
    let input: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return problem_response(&Problem::new(
                ProblemKind::InvalidInput,
                format!("the request body is not JSON: {e}"),
            ));
        }
    };
    match engine.route(&plan, &operation, &input).await {
        Ok((true, v)) => Json(v).into_response(),
        Ok((false, v)) => (StatusCode::BAD_GATEWAY, Json(v)).into_response(),
        Err(problem) => problem_response(&problem),
    }
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document().clone())
}
