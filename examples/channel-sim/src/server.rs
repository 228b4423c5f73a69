//! The HTTP layer: the channel API endpoint with fault injection and request logging, and
//! the unsigned `/__sim/` control API.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::header::{ALLOW, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::routing::{any, get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::state::{Reply, ShipError, State, field};
use crate::{Fault, FaultKind, RequestLog};

/// Default delay of a `slow` fault without `delay_ms`.
const DEFAULT_SLOW_MS: u64 = 1_000;
/// Default delay of a `timeout` fault without `delay_ms`.
const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// State shared by the handlers and the [`crate::Simulator`] handle.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Set to `true` to stop the server; pending fault sleeps wake up on it.
    pub shutdown: watch::Sender<bool>,
}

impl Shared {
    pub fn new(state: State) -> Shared {
        Shared {
            state: Mutex::new(state),
            shutdown: watch::Sender::new(false),
        }
    }

    /// Locks the state. A poisoned lock is taken over: the state is plain data.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps `ms` milliseconds, or less if the simulator is stopped meanwhile.
    async fn sleep(&self, ms: u64) {
        let mut stop = self.shutdown.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            _ = stop.wait_for(|stopped| *stopped) => {}
        }
    }
}

/// The simulator's routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/channel/api.json", any(channel_api))
        .route("/__sim/faults", post(post_fault))
        .route("/__sim/requests", get(get_requests))
        .route("/__sim/inventory", post(post_inventory))
        .route("/__sim/ship", post(post_ship))
        .route("/__sim/orders", get(get_orders))
        .route("/__sim/drift", post(post_drift))
        .route("/__sim/reset", post(post_reset))
        .with_state(shared)
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    respond(status, "application/json;charset=UTF-8", value.to_string())
}

fn html_response(status: StatusCode, title: &str) -> Response {
    respond(
        status,
        "text/html;charset=UTF-8",
        format!(
            "<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center><hr><center>nginx</center></body></html>"
        ),
    )
}

/// Decodes the form body; anything but `application/x-www-form-urlencoded` is refused.
fn parse_form(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, Reply> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(Reply::err(
            "400",
            "unsupported content type, expected application/x-www-form-urlencoded",
        ));
    }
    serde_urlencoded::from_bytes(body)
        .map_err(|e| Reply::err("400", format!("invalid form body: {e}")))
}

/// `POST /channel/api.json`.
///
/// Order of events: decode the form; take the first queued fault matching the request's
/// `method` field (if any); run the platform's checks and the method unless the fault
/// replaces the answer; log the request; then, for `slow` / `timeout`, sleep before answering.
async fn channel_api(
    AxState(shared): AxState<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at_ms = now_millis();
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if method != Method::POST {
        shared.lock().log(RequestLog {
            method: String::new(),
            at_ms,
            outcome: "405".to_string(),
            traceparent,
        });
        let mut response = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &Reply::err("405", "method not allowed, use POST").to_json(),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let fields = parse_form(&headers, &body);
    let api_method = fields
        .as_ref()
        .ok()
        .and_then(|f| field(f, "method"))
        .unwrap_or("")
        .to_string();

    let (fault, reply) = {
        let mut state = shared.lock();
        let fault = state.take_fault(&api_method);
        // Only a slow fault lets the request through (processed now, answered late).
        let processes = fault.as_ref().is_none_or(|f| f.kind == FaultKind::Slow);
        let reply = if processes {
            Some(match &fields {
                Ok(fields) => state.handle(fields),
                Err(reply) => reply.clone(),
            })
        } else {
            None
        };
        let outcome = match (&fault, &reply) {
            (Some(f), _) => format!("fault:{}", f.kind.as_str()),
            (None, Some(r)) => r.outcome(),
            (None, None) => "ok".to_string(),
        };
        state.log(RequestLog {
            method: api_method,
            at_ms,
            outcome,
            traceparent,
        });
        (fault, reply)
    };

    let Some(fault) = fault else {
        let reply = reply.unwrap_or_else(|| Reply::err("500", "internal error"));
        return json_response(StatusCode::OK, &reply.to_json());
    };
    match fault.kind {
        FaultKind::Http500 => html_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error",
        ),
        FaultKind::Http503 => html_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Temporarily Unavailable",
        ),
        FaultKind::Malformed => respond(
            StatusCode::OK,
            "application/json;charset=UTF-8",
            "{\"code\": \"200\", \"result\": ".to_string(),
        ),
        FaultKind::Business => {
            let code = fault.code.unwrap_or_else(|| "500".to_string());
            let msg = fault
                .msg
                .unwrap_or_else(|| "injected business error".to_string());
            json_response(StatusCode::OK, &Reply::err(&code, msg).to_json())
        }
        FaultKind::Timeout => {
            shared
                .sleep(fault.delay_ms.unwrap_or(DEFAULT_TIMEOUT_MS))
                .await;
            html_response(StatusCode::GATEWAY_TIMEOUT, "504 Gateway Time-out")
        }
        FaultKind::Slow => {
            shared
                .sleep(fault.delay_ms.unwrap_or(DEFAULT_SLOW_MS))
                .await;
            let reply = reply.unwrap_or_else(|| Reply::err("500", "internal error"));
            json_response(StatusCode::OK, &reply.to_json())
        }
    }
}

// ---- control API -----------------------------------------------------------------------

fn control_error(status: StatusCode, msg: impl Into<String>) -> Response {
    json_response(status, &json!({ "error": msg.into() }))
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid body: {e}"))
}

/// `POST /__sim/faults` → `{"queued": bool, "pending": n}`.
async fn post_fault(AxState(shared): AxState<Arc<Shared>>, body: Bytes) -> Response {
    let fault: Fault = match parse_json(&body) {
        Ok(f) => f,
        Err(msg) => return control_error(StatusCode::BAD_REQUEST, msg),
    };
    let queued = fault.times > 0;
    let mut state = shared.lock();
    state.push_fault(fault);
    json_response(
        StatusCode::OK,
        &json!({ "queued": queued, "pending": state.pending_faults() }),
    )
}

/// `GET /__sim/requests` → `[RequestLog…]`.
async fn get_requests(AxState(shared): AxState<Arc<Shared>>) -> Response {
    let log = shared.lock().requests();
    json_response(
        StatusCode::OK,
        &serde_json::to_value(log).unwrap_or_default(),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InventoryBody {
    sku_id: String,
    inventory: i64,
}

/// `POST /__sim/inventory` `{"skuId", "inventory"}` → `{"skuId", "inventory"}`, 404 if unknown.
async fn post_inventory(AxState(shared): AxState<Arc<Shared>>, body: Bytes) -> Response {
    let body: InventoryBody = match parse_json(&body) {
        Ok(b) => b,
        Err(msg) => return control_error(StatusCode::BAD_REQUEST, msg),
    };
    if shared.lock().set_inventory(&body.sku_id, body.inventory) {
        json_response(
            StatusCode::OK,
            &json!({ "skuId": body.sku_id, "inventory": body.inventory }),
        )
    } else {
        control_error(
            StatusCode::NOT_FOUND,
            format!("unknown sku: {}", body.sku_id),
        )
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShipBody {
    order_id: String,
    express_company: String,
    express_no: String,
}

/// `POST /__sim/ship` → the stored order; 404 unknown, 409 cancelled.
async fn post_ship(AxState(shared): AxState<Arc<Shared>>, body: Bytes) -> Response {
    let body: ShipBody = match parse_json(&body) {
        Ok(b) => b,
        Err(msg) => return control_error(StatusCode::BAD_REQUEST, msg),
    };
    let result = shared
        .lock()
        .ship(&body.order_id, &body.express_company, &body.express_no);
    match result {
        Ok(order) => json_response(StatusCode::OK, &order),
        Err(ShipError::UnknownOrder) => control_error(
            StatusCode::NOT_FOUND,
            format!("unknown order: {}", body.order_id),
        ),
        Err(ShipError::Cancelled) => control_error(
            StatusCode::CONFLICT,
            format!("order is cancelled: {}", body.order_id),
        ),
    }
}

/// `GET /__sim/orders` → every stored order, in creation order.
async fn get_orders(AxState(shared): AxState<Arc<Shared>>) -> Response {
    let orders = shared.lock().orders();
    json_response(StatusCode::OK, &Value::Array(orders))
}

/// `POST /__sim/drift` [`crate::Drift`] → the order as stored afterwards; 404 when it names an
/// unknown order or line, 400 for a body that is not a drift.
async fn post_drift(AxState(shared): AxState<Arc<Shared>>, body: Bytes) -> Response {
    let drift: crate::Drift = match parse_json(&body) {
        Ok(b) => b,
        Err(msg) => return control_error(StatusCode::BAD_REQUEST, msg),
    };
    match shared.lock().drift(drift) {
        Ok(order) => json_response(StatusCode::OK, &order),
        Err(msg) => control_error(StatusCode::NOT_FOUND, msg),
    }
}

/// `POST /__sim/reset` → `{"ok": true}`; clears faults and the request log.
async fn post_reset(AxState(shared): AxState<Arc<Shared>>) -> Response {
    shared.lock().reset();
    json_response(StatusCode::OK, &json!({ "ok": true }))
}
