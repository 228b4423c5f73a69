//! The HTTP server: health endpoints and the platform listing. Knows no platform by name: it
//! serves whatever the current plan holds.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::plan::Plan;

/// Shared state of the server.
#[derive(Clone)]
pub struct AppState {
    /// The current plan; each request takes one snapshot and uses it to the end.
    pub plan: Arc<ArcSwap<Plan>>,
    /// The store (absent only in tests of routes that need none).
    pub store: Option<crate::store::Store>,
}

/// The router with every route.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/platforms", get(platforms))
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
