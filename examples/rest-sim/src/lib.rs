//! A hand-written simulator of a modern REST/JSON supplier API, for testing the entrepot
//! gateway against an implementation written independently of the gateway's YAML description
//! (`platforms/acme-rest.yaml`). It checks every token and computes every webhook signature
//! itself.
//!
//! # The API
//!
//! * `POST /oauth/token` — OAuth 2 client credentials: a form with
//!   `grant_type=client_credentials`, `client_id` and `client_secret` (or HTTP Basic). Answers
//!   `{"access_token", "token_type": "Bearer", "expires_in"}`; a wrong client → 401
//!   `{"error": "invalid_client"}`, another grant type → 400 `{"error": "unsupported_grant_type"}`.
//! * Every `/v2/` call needs `Authorization: Bearer <token>`; a missing, unknown or expired token
//!   → 401 (`unauthorized` / `token_expired`), checked on every call.
//! * `GET /v2/products?cursor=&limit=&updated_since=&updated_before=` — `{"data": [PRODUCT],
//!   "next_cursor": "…" | null, "total"}`; `limit` 1..=100 (default 20); a `cursor` that is
//!   empty or unknown → 422; `updated_since` (RFC 3339) lists only products changed at or
//!   after it (the change feed), `updated_before` only those changed before it; an unreadable
//!   one → 422. With [`SimConfig::product_window`] set, both are required and at most that far
//!   apart.
//! * `GET /v2/products/{id}` — PRODUCT; 404 unknown.
//! * `GET /v2/inventory?sku=A,B` — `{"data": [{"sku", "available"}]}` (unknown SKUs left out);
//!   no `sku` → 422.
//! * `POST /v2/orders` with an `Idempotency-Key` header and `{"reference", "currency": "EUR",
//!   "lines": [{"sku", "quantity", "unit_price": "19.99"}], "shipping_fee", "total",
//!   "shipping_address": {"name", "phone", "line1", "city", "region", "postal_code"}}` —
//!   201 ORDER. The same key with the same body answers the same order again (header
//!   `Idempotent-Replayed: true`); the same key with another body → 409
//!   `idempotency_key_reused`; no key → 400. Unknown SKU, wrong price, too little stock, a total
//!   that is not the sum → 422 `validation_failed` with `details`.
//! * `GET /v2/orders?created_from=&created_to=&cursor=&limit=` — the orders created within
//!   `[created_from, created_to)` (RFC 3339, both required), `{"data": [ORDER], "next_cursor":
//!   "…" | null}`; `limit` 1..=100 (default 20); a bad time, limit or cursor → 422, and so is a
//!   window wider than [`SimConfig::order_window`] when that is set.
//! * `GET /v2/orders/{id}` — ORDER; 404 unknown.
//! * `POST /v2/orders/{id}/cancel` — ORDER with `status: cancelled`; a shipped order → 409
//!   `order_already_shipped`.
//! * `GET /v2/orders/{id}/shipments` — `{"data": [{"carrier", "tracking_number",
//!   "shipped_at"}]}`.
//!
//! PRODUCT is `{"id", "name", "description", "status": "active" | "archived", "variants":
//! [{"sku", "title", "price": {"amount": "19.99", "currency": "EUR"}, "stock"}]}`; ORDER is
//! `{"id", "reference", "status": "confirmed" | "shipped" | "cancelled", "currency", "lines",
//! "shipping_fee", "total", "shipping_address", "created_at"}`. Prices are decimal strings in
//! EUR with two decimals; the simulator keeps integer cents. Errors are `{"error": {"code",
//! "message", "details"?}}`.
//!
//! # Webhooks (Standard Webhooks)
//!
//! When a webhook URL is set, shipping an order sends `order.shipped`, changing stock sends
//! `stock.changed` and changing a product sends `product.updated` (`{"id"}`): a JSON POST `{"type", "timestamp", "data"}` with the headers `webhook-id`,
//! `webhook-timestamp` (Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body" keyed with the base64-decoded secret after its `whsec_` prefix>`.
//!
//! # The control API (JSON, unauthenticated)
//!
//! * `POST /__sim/faults` `{"kind": "rate_limited" | "server_error" | "slow", "route": "GET
//!   /v2/inventory", "retry_after": 1, "times": 1, "delay_ms": 0}` — the next matching calls
//!   (after the token check) answer 429 with `Retry-After` or 503, or (`slow`) are processed
//!   and answered only after `delay_ms`. `route` is `"METHOD /path"` without the query; absent
//!   matches every call.
//! * `DELETE /__sim/faults` — drops every queued fault: the API answers normally again.
//! * `GET /__sim/requests` — every API call, in arrival order.
//! * `POST /__sim/expire-tokens` — every token issued so far expires now.
//! * `POST /__sim/webhook-url` `{"url"}` — where webhooks go.
//! * `POST /__sim/ship` `{"order_id", "carrier", "tracking_number"}` — ships an order.
//! * `POST /__sim/stock` `{"sku", "available"}` — sets a SKU's stock.
//! * `GET /__sim/orders`, `GET /__sim/webhooks` — stored orders, webhook deliveries.
//! * `POST /__sim/drift` — a [`Drift`] (`{"kind": "status", "order_id", "status"}`...):
//!   changes the order book behind the gateway's back, for reconciliation tests; answers the
//!   order as stored afterwards; 404 unknown order or line.

#![warn(missing_docs)]

mod api;
mod money;
mod webhook;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use money::{format_cents, parse_cents};
pub use webhook::{sign_webhook, verify_webhook};

/// The client id the simulator's binary accepts unless told otherwise.
pub const DEMO_CLIENT_ID: &str = "demo-client";
/// The client secret the simulator's binary accepts unless told otherwise.
pub const DEMO_CLIENT_SECRET: &str = "demo-client-secret";
/// The webhook secret the simulator's binary signs with unless told otherwise.
pub const DEMO_WEBHOOK_SECRET: &str = "whsec_c2ltdWxhdG9yLXdlYmhvb2stc2VjcmV0";

/// One sellable variant.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Variant {
    /// The SKU code.
    pub sku: String,
    /// Display title.
    pub title: String,
    /// Price in euro cents.
    pub price_cents: i64,
    /// Units in stock.
    pub stock: i64,
}

/// One product.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Product {
    /// Product id, such as `prd_1001`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Whether it is sold (`active`) or not (`archived`).
    pub active: bool,
    /// Its variants.
    pub variants: Vec<Variant>,
    /// When it last changed (RFC 3339, UTC): the change feed (`updated_since`) filters on it.
    /// Default: [`CATALOG_EPOCH`].
    #[serde(default = "epoch")]
    pub updated_at: String,
}

/// When the seed catalogs' products last changed.
pub const CATALOG_EPOCH: &str = "2026-01-01T00:00:00Z";

fn epoch() -> String {
    CATALOG_EPOCH.to_string()
}

/// A generated catalog for paging tests: `n` active products `prd_<100001 + i>` named
/// `Product <i + 1>`, each with two variants `SKU-<100001 + i>-A` (price `10.00 + i % 90`
/// EUR, stock `i % 50`) and `-B` (one euro more, stock 5), changed at [`CATALOG_EPOCH`] plus
/// `i` seconds.
pub fn large_catalog(n: usize) -> Vec<Product> {
    let epoch = time::macros::datetime!(2026-01-01 00:00:00 UTC);
    (0..n)
        .map(|i| {
            let id = 100_001 + i as u64;
            let cents = 1000 + (i % 90) as i64 * 100;
            Product {
                id: format!("prd_{id}"),
                name: format!("Product {}", i + 1),
                description: format!("Generated product number {}", i + 1),
                active: true,
                variants: vec![
                    Variant {
                        sku: format!("SKU-{id}-A"),
                        title: "Variant A".into(),
                        price_cents: cents,
                        stock: (i % 50) as i64,
                    },
                    Variant {
                        sku: format!("SKU-{id}-B"),
                        title: "Variant B".into(),
                        price_cents: cents + 100,
                        stock: 5,
                    },
                ],
                updated_at: (epoch + time::Duration::seconds(i as i64))
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// The sample catalog: three products, five variants.
pub fn sample_catalog() -> Vec<Product> {
    let v = |sku: &str, title: &str, price_cents: i64, stock: i64| Variant {
        sku: sku.into(),
        title: title.into(),
        price_cents,
        stock,
    };
    vec![
        Product {
            id: "prd_1001".into(),
            name: "Linen shirt".into(),
            description: "Washed linen, regular fit".into(),
            active: true,
            variants: vec![
                v("SHIRT-M", "Size M", 4990, 12),
                v("SHIRT-L", "Size L", 4990, 3),
            ],
            updated_at: epoch(),
        },
        Product {
            id: "prd_1002".into(),
            name: "Espresso cups (set of 2)".into(),
            description: "Stoneware".into(),
            active: true,
            variants: vec![v("CUPS-2", "Set of 2", 1999, 40)],
            updated_at: epoch(),
        },
        Product {
            id: "prd_1003".into(),
            name: "Desk lamp".into(),
            description: "Discontinued".into(),
            active: false,
            variants: vec![
                v("LAMP-BLK", "Black", 12905, 0),
                v("LAMP-WHT", "White", 12905, 1),
            ],
            updated_at: epoch(),
        },
    ]
}

/// How the simulator is set up.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The only accepted OAuth client id.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// The Standard Webhooks secret (`whsec_` + base64).
    pub webhook_secret: String,
    /// Lifetime of issued tokens (the `expires_in` answered).
    pub token_ttl: Duration,
    /// Products and stock.
    pub catalog: Vec<Product>,
    /// When set, the product listing answers only bounded windows of time, as some platforms
    /// do: `updated_since` and `updated_before` are both required and at most this far apart
    /// (else 422 `window_required` / `window_too_wide`).
    pub product_window: Option<Duration>,
    /// When set, the order listing answers only windows at most this wide (else 422
    /// `window_too_wide`).
    pub order_window: Option<Duration>,
}

impl SimConfig {
    /// A configuration with the sample catalog and one-hour tokens.
    pub fn new(client_id: &str, client_secret: &str, webhook_secret: &str) -> SimConfig {
        SimConfig {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            webhook_secret: webhook_secret.into(),
            token_ttl: Duration::from_secs(3600),
            catalog: sample_catalog(),
            product_window: None,
            order_window: None,
        }
    }
}

/// What an injected fault answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 429 with `Retry-After: retry_after` and a JSON error `rate_limited`.
    RateLimited,
    /// HTTP 503 with a JSON error `unavailable`.
    ServerError,
    /// The call **is processed** (an order is created, stock taken) but its answer is held
    /// back for `delay_ms`: a client that gives up meanwhile has still created the order.
    Slow,
}

/// A fault for the next matching calls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// What is answered.
    pub kind: FaultKind,
    /// `"METHOD /path"` (no query) the fault applies to; every call when absent.
    #[serde(default)]
    pub route: Option<String>,
    /// Seconds for `Retry-After` (default 1).
    #[serde(default = "one")]
    pub retry_after: u64,
    /// How many calls it applies to (default 1).
    #[serde(default = "one")]
    pub times: u64,
    /// How long a `slow` answer is held back, in milliseconds (default 0).
    #[serde(default)]
    pub delay_ms: u64,
}

fn one() -> u64 {
    1
}

/// A change of the order book made behind the gateway's back (what reconciliation must find).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Drift {
    /// Sets an order's status (`confirmed`, `shipped` or `cancelled`).
    Status {
        /// The API's order id (`ord_…`).
        order_id: String,
        /// The new status.
        status: String,
    },
    /// Sets an order's total, in cents.
    Amount {
        /// The API's order id.
        order_id: String,
        /// The new total.
        total_cents: i64,
    },
    /// Sets one line's quantity and unit price (cents).
    Line {
        /// The API's order id.
        order_id: String,
        /// The line's SKU.
        sku: String,
        /// The new quantity.
        quantity: i64,
        /// The new unit price, in cents.
        unit_price_cents: i64,
    },
    /// Deletes an order.
    Delete {
        /// The API's order id.
        order_id: String,
    },
    /// Creates a `confirmed` order of one line (total = quantity × price) that no client
    /// asked for; its id is the next `ord_…`.
    Create {
        /// The order's `reference`.
        reference: String,
        /// The line's SKU.
        sku: String,
        /// The quantity.
        quantity: i64,
        /// The unit price, in cents.
        unit_price_cents: i64,
    },
}

/// One API call as received.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RequestLog {
    /// HTTP method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// The raw query string (empty when none).
    pub query: String,
    /// The `Idempotency-Key` header, when sent.
    pub idempotency_key: Option<String>,
    /// The JSON body, when one was sent.
    pub body: Option<Value>,
    /// The status answered.
    pub status: u16,
}

/// One webhook delivery attempt.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WebhookLog {
    /// `webhook-id`.
    pub id: String,
    /// The event type.
    pub event_type: String,
    /// The body sent.
    pub body: String,
    /// The HTTP status answered by the receiver (0 when it could not be reached).
    pub status: u16,
}

/// A running simulator.
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

pub(crate) struct Shared {
    state: Mutex<api::State>,
    pub(crate) webhook_secret: String,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, api::State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Simulator {
    /// Starts the simulator on `127.0.0.1` with a free port.
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        Simulator::start_on(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts the simulator on `addr`.
    pub async fn start_on(config: SimConfig, addr: SocketAddr) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            webhook_secret: config.webhook_secret.clone(),
            state: Mutex::new(api::State::new(config)),
        });
        let app = api::router(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Simulator { addr, shared, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a fault.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Every API call so far.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.lock().requests.clone()
    }

    /// How many tokens were issued.
    pub fn tokens_issued(&self) -> usize {
        self.shared.lock().tokens.len()
    }

    /// Every token issued so far expires now.
    pub fn expire_tokens(&self) {
        self.shared.lock().expire_tokens();
    }

    /// Where webhooks are sent.
    pub fn set_webhook_url(&self, url: &str) {
        self.shared.lock().webhook_url = Some(url.to_string());
    }

    /// Every stored order, as the API shows it.
    pub fn orders(&self) -> Vec<Value> {
        self.shared.lock().orders_json()
    }

    /// Changes the order book behind the gateway's back (same as `POST /__sim/drift`);
    /// returns the order as stored afterwards (the deleted one for [`Drift::Delete`]).
    pub fn drift(&self, drift: Drift) -> Result<Value, String> {
        self.shared.lock().drift(drift)
    }

    /// Webhook deliveries so far.
    pub fn webhooks(&self) -> Vec<WebhookLog> {
        self.shared.lock().webhooks.clone()
    }

    /// Ships an order (and sends `order.shipped` when a webhook URL is set); returns the
    /// webhook delivery, if one was sent.
    pub async fn ship(
        &self,
        order_id: &str,
        carrier: &str,
        tracking_number: &str,
    ) -> Result<Option<WebhookLog>, String> {
        api::ship(&self.shared, order_id, carrier, tracking_number).await
    }

    /// Changes a product with `edit`, stamps it changed now, and sends `product.updated`
    /// (`{"id"}`) when a webhook URL is set; returns the webhook delivery, if one was sent.
    pub async fn edit_product(
        &self,
        id: &str,
        edit: impl FnOnce(&mut Product),
    ) -> Result<Option<WebhookLog>, String> {
        api::edit_product(&self.shared, id, edit).await
    }

    /// Sets a SKU's stock (and sends `stock.changed` when a webhook URL is set).
    pub async fn set_stock(&self, sku: &str, available: i64) -> Result<Option<WebhookLog>, String> {
        api::set_stock(&self.shared, sku, available).await
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
