//! The HTTP layer and the simulated supplier's state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::money::{format_cents, parse_cents};
use crate::{Drift, Fault, FaultKind, Product, RequestLog, Shared, SimConfig, WebhookLog};

struct Order {
    id: String,
    reference: String,
    status: &'static str,
    /// (sku, quantity, unit price in cents)
    lines: Vec<(String, i64, i64)>,
    shipping_fee: i64,
    total: i64,
    address: Value,
    created_at: String,
    shipments: Vec<Value>,
}

impl Order {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "reference": self.reference,
            "status": self.status,
            "currency": "EUR",
            "lines": self.lines.iter().map(|(sku, q, p)| json!({"sku": sku, "quantity": q, "unit_price": format_cents(*p)})).collect::<Vec<_>>(),
            "shipping_fee": format_cents(self.shipping_fee),
            "total": format_cents(self.total),
            "shipping_address": self.address,
            "created_at": self.created_at,
        })
    }
}

pub(crate) struct State {
    config: SimConfig,
    /// token → expiry
    pub(crate) tokens: HashMap<String, Instant>,
    pub(crate) faults: Vec<Fault>,
    pub(crate) requests: Vec<RequestLog>,
    orders: Vec<Order>,
    /// Orders ever created (ids stay unique when orders are deleted).
    created: usize,
    /// Idempotency-Key → (request body, order index)
    idempotency: HashMap<String, (Value, usize)>,
    pub(crate) webhook_url: Option<String>,
    pub(crate) webhooks: Vec<WebhookLog>,
    next_webhook: u64,
    /// Set by a `slow` fault for the call being handled: how long to hold its answer.
    hold_ms: Option<u64>,
}

impl State {
    pub(crate) fn new(config: SimConfig) -> State {
        State {
            config,
            tokens: HashMap::new(),
            faults: Vec::new(),
            requests: Vec::new(),
            orders: Vec::new(),
            created: 0,
            idempotency: HashMap::new(),
            webhook_url: None,
            webhooks: Vec::new(),
            next_webhook: 1,
            hold_ms: None,
        }
    }

    pub(crate) fn expire_tokens(&mut self) {
        let now = Instant::now();
        for expiry in self.tokens.values_mut() {
            *expiry = now;
        }
    }

    pub(crate) fn orders_json(&self) -> Vec<Value> {
        self.orders.iter().map(Order::json).collect()
    }

    fn product_json(p: &Product) -> Value {
        json!({
            "id": p.id,
            "name": p.name,
            "description": p.description,
            "status": if p.active { "active" } else { "archived" },
            "updated_at": p.updated_at,
            "variants": p.variants.iter().map(|v| json!({
                "sku": v.sku,
                "title": v.title,
                "price": {"amount": format_cents(v.price_cents), "currency": "EUR"},
                "stock": v.stock,
            })).collect::<Vec<_>>(),
        })
    }

    fn variant_mut(&mut self, sku: &str) -> Option<&mut crate::Variant> {
        self.config
            .catalog
            .iter_mut()
            .flat_map(|p| p.variants.iter_mut())
            .find(|v| v.sku == sku)
    }

    fn order_index(&self, id: &str) -> Option<usize> {
        self.orders.iter().position(|o| o.id == id)
    }

    fn next_order_id(&mut self) -> String {
        self.created += 1;
        format!("ord_{}", 5000 + self.created)
    }

    /// Changes the order book behind the gateway's back; answers the order as stored
    /// afterwards (the deleted one for `delete`).
    pub(crate) fn drift(&mut self, drift: Drift) -> Result<Value, String> {
        let unknown = |id: &str| format!("no order {id}");
        match drift {
            Drift::Status { order_id, status } => {
                let status = match status.as_str() {
                    "confirmed" => "confirmed",
                    "shipped" => "shipped",
                    "cancelled" => "cancelled",
                    other => {
                        return Err(format!(
                            "unknown status '{other}' (confirmed, shipped or cancelled)"
                        ));
                    }
                };
                let i = self
                    .order_index(&order_id)
                    .ok_or_else(|| unknown(&order_id))?;
                let order = self.orders.get_mut(i).ok_or_else(|| unknown(&order_id))?;
                order.status = status;
                Ok(order.json())
            }
            Drift::Amount {
                order_id,
                total_cents,
            } => {
                let i = self
                    .order_index(&order_id)
                    .ok_or_else(|| unknown(&order_id))?;
                let order = self.orders.get_mut(i).ok_or_else(|| unknown(&order_id))?;
                order.total = total_cents;
                Ok(order.json())
            }
            Drift::Line {
                order_id,
                sku,
                quantity,
                unit_price_cents,
            } => {
                let i = self
                    .order_index(&order_id)
                    .ok_or_else(|| unknown(&order_id))?;
                let order = self.orders.get_mut(i).ok_or_else(|| unknown(&order_id))?;
                let line = order
                    .lines
                    .iter_mut()
                    .find(|(s, _, _)| *s == sku)
                    .ok_or_else(|| format!("order {order_id} has no line of {sku}"))?;
                line.1 = quantity;
                line.2 = unit_price_cents;
                Ok(order.json())
            }
            Drift::Delete { order_id } => {
                let i = self
                    .order_index(&order_id)
                    .ok_or_else(|| unknown(&order_id))?;
                if i >= self.orders.len() {
                    return Err(unknown(&order_id));
                }
                let order = self.orders.remove(i);
                // Idempotency records point at order positions: drop the deleted order's and
                // move the later ones down.
                self.idempotency.retain(|_, (_, at)| *at != i);
                for (_, at) in self.idempotency.values_mut() {
                    if *at > i {
                        *at -= 1;
                    }
                }
                Ok(order.json())
            }
            Drift::Create {
                reference,
                sku,
                quantity,
                unit_price_cents,
            } => {
                let id = self.next_order_id();
                let order = Order {
                    id,
                    reference,
                    status: "confirmed",
                    lines: vec![(sku, quantity, unit_price_cents)],
                    shipping_fee: 0,
                    total: quantity.saturating_mul(unit_price_cents),
                    address: json!({"name": "Walk-in", "phone": "", "line1": "1 Side Street",
                                    "city": "Lyon", "region": "", "postal_code": "69001"}),
                    created_at: OffsetDateTime::now_utc()
                        .format(&Rfc3339)
                        .unwrap_or_default(),
                    shipments: Vec::new(),
                };
                let json = order.json();
                self.orders.push(order);
                Ok(json)
            }
        }
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

type Answer = (StatusCode, Vec<(&'static str, String)>, Value);

fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    (
        status,
        Vec::new(),
        json!({"error": {"code": code, "message": message}}),
    )
}

fn ok(value: Value) -> Answer {
    (StatusCode::OK, Vec::new(), value)
}

fn respond((status, headers, body): Answer) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
    response
}

async fn handle(
    AxState(shared): AxState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    if path == "/oauth/token" {
        return respond(token(&shared, &method, &headers, &body));
    }
    if let Some(control) = path.strip_prefix("/__sim/") {
        return respond(control_api(&shared, &method, control, &body).await);
    }
    let json_body: Option<Value> = if body.is_empty() {
        None
    } else {
        serde_json::from_slice(&body).ok()
    };
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (answer, hold) = {
        let mut state = shared.lock();
        state.hold_ms = None;
        let answer = api_call(
            &mut state, &method, &path, &query, &headers, &body, &json_body,
        );
        let hold = state.hold_ms.take();
        state.requests.push(RequestLog {
            method: method.to_string(),
            path,
            query,
            idempotency_key,
            body: json_body,
            status: answer.0.as_u16(),
        });
        (answer, hold)
    };
    if let Some(ms) = hold {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    respond(answer)
}

fn form_field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Decodes `application/x-www-form-urlencoded` text.
fn parse_form(text: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = bytes
                        .get(i + 1..i + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    if let Some(v) = hex {
                        out.push(v);
                        i += 2;
                    } else {
                        out.push(b'%');
                    }
                }
                _ => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn token(shared: &Shared, method: &Method, headers: &HeaderMap, body: &[u8]) -> Answer {
    if method != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            Vec::new(),
            json!({"error": "invalid_request"}),
        );
    }
    let form = parse_form(&String::from_utf8_lossy(body));
    if form_field(&form, "grant_type") != Some("client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            Vec::new(),
            json!({"error": "unsupported_grant_type"}),
        );
    }
    // Credentials in the form, or HTTP Basic.
    let basic = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| {
            v.split_once(':')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        });
    let (id, secret) = match (
        form_field(&form, "client_id"),
        form_field(&form, "client_secret"),
    ) {
        (Some(id), Some(secret)) => (id.to_string(), secret.to_string()),
        _ => basic.unwrap_or_default(),
    };
    let mut state = shared.lock();
    if id != state.config.client_id || secret != state.config.client_secret {
        return (
            StatusCode::UNAUTHORIZED,
            Vec::new(),
            json!({"error": "invalid_client"}),
        );
    }
    let n = state.tokens.len() + 1;
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let access_token = format!("at_{n}_{:x}", nanos);
    let ttl = state.config.token_ttl;
    state
        .tokens
        .insert(access_token.clone(), Instant::now() + ttl);
    ok(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
    }))
}

fn unauthorized(code: &str, message: &str) -> Answer {
    let mut a = error(StatusCode::UNAUTHORIZED, code, message);
    a.1.push((
        WWW_AUTHENTICATE.as_str(),
        format!("Bearer error=\"invalid_token\", error_description=\"{message}\""),
    ));
    a
}

fn query_param(query: &str, name: &str) -> Option<String> {
    parse_form(query)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn api_call(
    state: &mut State,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    raw: &[u8],
    body: &Option<Value>,
) -> Answer {
    // The token, on every call.
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(bearer) = bearer else {
        return unauthorized("unauthorized", "an Authorization: Bearer token is required");
    };
    match state.tokens.get(bearer) {
        None => return unauthorized("unauthorized", "unknown access token"),
        Some(expiry) if *expiry <= Instant::now() => {
            return unauthorized("token_expired", "the access token has expired");
        }
        Some(_) => {}
    }
    // Injected faults.
    let route = format!("{method} {path}");
    if let Some(i) = state
        .faults
        .iter()
        .position(|f| f.route.as_deref().is_none_or(|r| r == route))
    {
        let fault = state.faults.remove(i);
        if fault.times > 1 {
            state.faults.insert(
                i,
                Fault {
                    times: fault.times - 1,
                    ..fault.clone()
                },
            );
        }
        if fault.kind == FaultKind::Slow {
            // Processed as usual below; only the answer waits.
            state.hold_ms = Some(fault.delay_ms);
        }
        match fault.kind {
            FaultKind::RateLimited => {
                let mut a = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests, retry later",
                );
                a.1.push((RETRY_AFTER.as_str(), fault.retry_after.to_string()));
                return a;
            }
            FaultKind::ServerError => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "temporarily unavailable",
                );
            }
            FaultKind::Slow => {}
        }
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["v2", "products"]) => list_products(state, query),
        ("GET", ["v2", "products", id]) => state
            .config
            .catalog
            .iter()
            .find(|p| p.id == *id)
            .map(|p| ok(State::product_json(p)))
            .unwrap_or_else(|| error(StatusCode::NOT_FOUND, "not_found", "no such product")),
        ("GET", ["v2", "inventory"]) => inventory(state, query),
        ("POST", ["v2", "orders"]) => create_order(state, headers, raw, body),
        ("GET", ["v2", "orders"]) => list_orders(state, query),
        ("GET", ["v2", "orders", id]) => match state.order_index(id) {
            Some(i) => ok(state.orders.get(i).map(Order::json).unwrap_or_default()),
            None => error(StatusCode::NOT_FOUND, "not_found", "no such order"),
        },
        ("POST", ["v2", "orders", id, "cancel"]) => cancel_order(state, id),
        ("GET", ["v2", "orders", id, "shipments"]) => match state.order_index(id) {
            // Like many REST APIs, the list does not repeat the order it belongs to.
            Some(i) => ok(json!({
                "data": state.orders.get(i).map(|o| o.shipments.clone()).unwrap_or_default()
            })),
            None => error(StatusCode::NOT_FOUND, "not_found", "no such order"),
        },
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    }
}

fn list_products(state: &State, query: &str) -> Answer {
    let limit = match query_param(query, "limit") {
        None => 20,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_limit",
                    "limit must be an integer from 1 to 100",
                );
            }
        },
    };
    // The change feed: only products changed at or after `updated_since` (and before
    // `updated_before`).
    let bound = |name: &str| match query_param(query, name) {
        None => Ok(None),
        Some(s) => OffsetDateTime::parse(&s, &Rfc3339).map(Some).map_err(|_| {
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("invalid_{name}"),
                &format!("{name} must be an RFC 3339 time"),
            )
        }),
    };
    let since = match bound("updated_since") {
        Ok(t) => t,
        Err(answer) => return answer,
    };
    let before = match bound("updated_before") {
        Ok(t) => t,
        Err(answer) => return answer,
    };
    if let Some(widest) = state.config.product_window {
        let (Some(from), Some(to)) = (since, before) else {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "window_required",
                "give updated_since and updated_before",
            );
        };
        if to - from > widest || to < from {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "window_too_wide",
                &format!(
                    "updated_since and updated_before are at most {}s apart",
                    widest.as_secs()
                ),
            );
        }
    }
    let listed: Vec<&Product> = state
        .config
        .catalog
        .iter()
        .filter(|p| {
            let at = OffsetDateTime::parse(&p.updated_at, &Rfc3339).ok();
            since.is_none_or(|t| at.is_some_and(|at| at >= t))
                && before.is_none_or(|t| at.is_some_and(|at| at < t))
        })
        .collect();
    // Cursors are `c_<offset>`; an empty cursor is refused, as the real API does.
    let start = match query_param(query, "cursor") {
        None => 0,
        Some(c) => match c.strip_prefix("c_").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n < listed.len() => n,
            _ => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_cursor",
                    "cursor is not one this API returned",
                );
            }
        },
    };
    let total = listed.len();
    let end = start.saturating_add(limit).min(total);
    let data: Vec<Value> = listed
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .map(|p| State::product_json(p))
        .collect();
    let next = (end < total).then(|| format!("c_{end}"));
    ok(json!({"data": data, "next_cursor": next, "total": total}))
}

fn list_orders(state: &State, query: &str) -> Answer {
    let invalid =
        |code: &str, message: &str| error(StatusCode::UNPROCESSABLE_ENTITY, code, message);
    let time = |name: &str| -> Result<OffsetDateTime, Answer> {
        let Some(text) = query_param(query, name) else {
            return Err(invalid(
                "missing_window",
                "give created_from and created_to",
            ));
        };
        OffsetDateTime::parse(&text, &Rfc3339).map_err(|_| {
            invalid(
                "invalid_time",
                "created_from and created_to are RFC 3339 times",
            )
        })
    };
    let (from, to) = match (time("created_from"), time("created_to")) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(a), _) | (_, Err(a)) => return a,
    };
    if let Some(widest) = state.config.order_window
        && (to - from > widest || to < from)
    {
        return invalid(
            "window_too_wide",
            &format!(
                "created_from and created_to are at most {}s apart",
                widest.as_secs()
            ),
        );
    }
    let limit = match query_param(query, "limit") {
        None => 20,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => return invalid("invalid_limit", "limit must be an integer from 1 to 100"),
        },
    };
    let inside: Vec<&Order> = state
        .orders
        .iter()
        .filter(|o| {
            OffsetDateTime::parse(&o.created_at, &Rfc3339).is_ok_and(|t| t >= from && t < to)
        })
        .collect();
    // Cursors are `o_<offset>` into the window's orders.
    let start = match query_param(query, "cursor") {
        None => 0,
        Some(c) => match c.strip_prefix("o_").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n < inside.len() => n,
            _ => return invalid("invalid_cursor", "cursor is not one this API returned"),
        },
    };
    let end = start.saturating_add(limit).min(inside.len());
    let data: Vec<Value> = inside
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .map(|o| o.json())
        .collect();
    let next = (end < inside.len()).then(|| format!("o_{end}"));
    ok(json!({"data": data, "next_cursor": next}))
}

fn inventory(state: &State, query: &str) -> Answer {
    let Some(skus) = query_param(query, "sku").filter(|s| !s.is_empty()) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_sku",
            "give sku=A,B",
        );
    };
    let data: Vec<Value> = skus
        .split(',')
        .filter_map(|s| {
            state
                .config
                .catalog
                .iter()
                .flat_map(|p| p.variants.iter())
                .find(|v| v.sku == s)
        })
        .map(|v| json!({"sku": v.sku, "available": v.stock}))
        .collect();
    ok(json!({ "data": data }))
}

fn create_order(
    state: &mut State,
    headers: &HeaderMap,
    raw: &[u8],
    body: &Option<Value>,
) -> Answer {
    let Some(body) = body else {
        let message = if raw.is_empty() {
            "a JSON body is required"
        } else {
            "the body is not JSON"
        };
        return error(StatusCode::BAD_REQUEST, "invalid_json", message);
    };
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "idempotency_key_missing",
            "POST /v2/orders needs an Idempotency-Key header",
        );
    };
    if let Some((first, index)) = state.idempotency.get(key) {
        if first != body {
            return error(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was used with another request body",
            );
        }
        let order = state
            .orders
            .get(*index)
            .map(Order::json)
            .unwrap_or_default();
        return (
            StatusCode::CREATED,
            vec![("idempotent-replayed", "true".to_string())],
            order,
        );
    }
    let mut details = Vec::new();
    let text = |v: &Value, field: &str| v.get(field).and_then(Value::as_str).map(str::to_string);
    let reference = text(body, "reference").unwrap_or_default();
    if reference.is_empty() {
        details.push(json!({"field": "reference", "issue": "required"}));
    }
    if body.get("currency").and_then(Value::as_str) != Some("EUR") {
        details.push(json!({"field": "currency", "issue": "must be EUR"}));
    }
    let mut lines = Vec::new();
    match body.get("lines").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            for (i, line) in list.iter().enumerate() {
                let sku = text(line, "sku").unwrap_or_default();
                let quantity = line.get("quantity").and_then(Value::as_i64).unwrap_or(0);
                let price = line
                    .get("unit_price")
                    .and_then(Value::as_str)
                    .and_then(parse_cents);
                let variant = state
                    .config
                    .catalog
                    .iter()
                    .flat_map(|p| p.variants.iter())
                    .find(|v| v.sku == sku);
                match variant {
                    None => details
                        .push(json!({"field": format!("lines[{i}].sku"), "issue": "unknown_sku"})),
                    Some(v) => {
                        if quantity < 1 {
                            details.push(json!({"field": format!("lines[{i}].quantity"), "issue": "must be a positive integer"}));
                        } else if quantity > v.stock {
                            details.push(json!({"field": format!("lines[{i}].quantity"), "issue": "insufficient_stock"}));
                        }
                        match price {
                            None => details.push(json!({"field": format!("lines[{i}].unit_price"), "issue": "must be a decimal string with two decimals"})),
                            Some(p) if p != v.price_cents => details.push(json!({"field": format!("lines[{i}].unit_price"), "issue": format!("price_mismatch: the price is {}", format_cents(v.price_cents))})),
                            Some(_) => {}
                        }
                    }
                }
                lines.push((sku, quantity, price.unwrap_or(0)));
            }
        }
        _ => details.push(json!({"field": "lines", "issue": "at least one line is required"})),
    }
    let fee = body
        .get("shipping_fee")
        .and_then(Value::as_str)
        .and_then(parse_cents);
    let total = body
        .get("total")
        .and_then(Value::as_str)
        .and_then(parse_cents);
    let sum: i64 = lines
        .iter()
        .map(|(_, q, p)| q.saturating_mul(*p))
        .sum::<i64>()
        .saturating_add(fee.unwrap_or(0));
    match (fee, total) {
        (None, _) => details.push(json!({"field": "shipping_fee", "issue": "must be a decimal string with two decimals"})),
        (_, None) => details.push(json!({"field": "total", "issue": "must be a decimal string with two decimals"})),
        (_, Some(t)) if t != sum => details.push(json!({"field": "total", "issue": format!("total_mismatch: lines and shipping make {}", format_cents(sum))})),
        _ => {}
    }
    let address = body.get("shipping_address").cloned().unwrap_or(Value::Null);
    for field in ["name", "line1", "city", "postal_code"] {
        if address
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            details
                .push(json!({"field": format!("shipping_address.{field}"), "issue": "required"}));
        }
    }
    if !details.is_empty() {
        let mut a = error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "the order was refused, see details",
        );
        if let Some(e) = a.2.get_mut("error").and_then(Value::as_object_mut) {
            e.insert("details".into(), Value::Array(details));
        }
        return a;
    }
    for (sku, quantity, _) in &lines {
        if let Some(v) = state.variant_mut(sku) {
            v.stock -= quantity;
        }
    }
    let order = Order {
        id: state.next_order_id(),
        reference,
        status: "confirmed",
        lines,
        shipping_fee: fee.unwrap_or(0),
        total: total.unwrap_or(0),
        address,
        created_at: OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default(),
        shipments: Vec::new(),
    };
    let answer = order.json();
    state.orders.push(order);
    state
        .idempotency
        .insert(key.to_string(), (body.clone(), state.orders.len() - 1));
    (StatusCode::CREATED, Vec::new(), answer)
}

fn cancel_order(state: &mut State, id: &str) -> Answer {
    let Some(order) = state.orders.iter_mut().find(|o| o.id == id) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such order");
    };
    match order.status {
        "shipped" => error(
            StatusCode::CONFLICT,
            "order_already_shipped",
            "a shipped order cannot be cancelled",
        ),
        "cancelled" => ok(order.json()),
        _ => {
            order.status = "cancelled";
            let lines = order.lines.clone();
            let answer = order.json();
            for (sku, quantity, _) in lines {
                if let Some(v) = state.variant_mut(&sku) {
                    v.stock += quantity;
                }
            }
            ok(answer)
        }
    }
}

/// Sends a webhook (when a URL is set) and logs it.
async fn deliver(
    shared: &Shared,
    event_type: &str,
    data: Value,
) -> Result<Option<WebhookLog>, String> {
    let (url, id) = {
        let mut state = shared.lock();
        let Some(url) = state.webhook_url.clone() else {
            return Ok(None);
        };
        let id = format!("msg_{:06}", state.next_webhook);
        state.next_webhook += 1;
        (url, id)
    };
    let now = OffsetDateTime::now_utc();
    let body = json!({
        "type": event_type,
        "timestamp": now.format(&Rfc3339).unwrap_or_default(),
        "data": data,
    })
    .to_string();
    let status = crate::webhook::send(
        &url,
        &shared.webhook_secret,
        &id,
        now.unix_timestamp(),
        &body,
    )
    .await
    .unwrap_or(0);
    let log = WebhookLog {
        id,
        event_type: event_type.to_string(),
        body,
        status,
    };
    shared.lock().webhooks.push(log.clone());
    Ok(Some(log))
}

pub(crate) async fn ship(
    shared: &Shared,
    order_id: &str,
    carrier: &str,
    tracking_number: &str,
) -> Result<Option<WebhookLog>, String> {
    let shipment = {
        let mut state = shared.lock();
        let Some(order) = state.orders.iter_mut().find(|o| o.id == order_id) else {
            return Err(format!("no order {order_id}"));
        };
        if order.status == "cancelled" {
            return Err(format!("order {order_id} is cancelled"));
        }
        order.status = "shipped";
        let shipment = json!({
            "carrier": carrier,
            "tracking_number": tracking_number,
            "shipped_at": OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
        });
        order.shipments.push(shipment.clone());
        shipment
    };
    let mut data = shipment;
    if let Some(o) = data.as_object_mut() {
        o.insert("order_id".into(), json!(order_id));
    }
    deliver(shared, "order.shipped", data).await
}

pub(crate) async fn edit_product(
    shared: &Shared,
    id: &str,
    edit: impl FnOnce(&mut Product),
) -> Result<Option<WebhookLog>, String> {
    {
        let mut state = shared.lock();
        let Some(p) = state.config.catalog.iter_mut().find(|p| p.id == id) else {
            return Err(format!("no product {id}"));
        };
        edit(p);
        p.updated_at = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
    }
    deliver(shared, "product.updated", json!({ "id": id })).await
}

pub(crate) async fn set_stock(
    shared: &Shared,
    sku: &str,
    available: i64,
) -> Result<Option<WebhookLog>, String> {
    {
        let mut state = shared.lock();
        let Some(v) = state.variant_mut(sku) else {
            return Err(format!("no SKU {sku}"));
        };
        v.stock = available;
    }
    deliver(
        shared,
        "stock.changed",
        json!({"items": [{"sku": sku, "available": available}]}),
    )
    .await
}

async fn control_api(shared: &Shared, method: &Method, path: &str, body: &[u8]) -> Answer {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |f: &str| {
        body.get(f)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let sim_error = |status: StatusCode, message: String| -> Answer {
        (status, Vec::new(), json!({ "error": message }))
    };
    match (method.as_str(), path) {
        ("POST", "faults") => match serde_json::from_value::<Fault>(body.clone()) {
            Ok(f) => {
                let mut state = shared.lock();
                state.faults.push(f);
                ok(json!({"queued": true, "pending": state.faults.len()}))
            }
            Err(e) => sim_error(StatusCode::BAD_REQUEST, e.to_string()),
        },
        ("DELETE", "faults") => {
            let mut state = shared.lock();
            let dropped = state.faults.len();
            state.faults.clear();
            ok(json!({"dropped": dropped}))
        }
        ("GET", "requests") => {
            ok(serde_json::to_value(&shared.lock().requests).unwrap_or_default())
        }
        ("POST", "expire-tokens") => {
            shared.lock().expire_tokens();
            ok(json!({"ok": true}))
        }
        ("POST", "webhook-url") => {
            shared.lock().webhook_url = Some(text("url"));
            ok(json!({"ok": true}))
        }
        ("POST", "ship") => {
            match ship(
                shared,
                &text("order_id"),
                &text("carrier"),
                &text("tracking_number"),
            )
            .await
            {
                Ok(w) => ok(json!({ "webhook": w })),
                Err(e) => sim_error(StatusCode::NOT_FOUND, e),
            }
        }
        ("POST", "stock") => {
            let available = body.get("available").and_then(Value::as_i64).unwrap_or(0);
            match set_stock(shared, &text("sku"), available).await {
                Ok(w) => ok(json!({ "webhook": w })),
                Err(e) => sim_error(StatusCode::NOT_FOUND, e),
            }
        }
        ("GET", "orders") => ok(Value::Array(shared.lock().orders_json())),
        ("POST", "drift") => match serde_json::from_value::<Drift>(body.clone()) {
            Ok(d) => match shared.lock().drift(d) {
                Ok(order) => ok(order),
                Err(e) => sim_error(StatusCode::NOT_FOUND, e),
            },
            Err(e) => sim_error(StatusCode::BAD_REQUEST, e.to_string()),
        },
        ("GET", "webhooks") => {
            ok(serde_json::to_value(&shared.lock().webhooks).unwrap_or_default())
        }
        _ => sim_error(
            StatusCode::NOT_FOUND,
            format!("no control route {method} /__sim/{path}"),
        ),
    }
}
