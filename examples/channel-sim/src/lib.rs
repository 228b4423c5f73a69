//! A hand-written simulator of a supplier platform's *channel API* (NetEase Yanxuan style),
//! for testing the entrepot gateway against an implementation written independently of the
//! gateway's YAML description.
//!
//! # The channel API
//!
//! Every call is `POST /channel/api.json` with an `application/x-www-form-urlencoded` body
//! holding `appKey`, `timestamp` (`yyyy-MM-dd HH:mm:ss`, UTC+8), `method`, `sign` and the
//! method's own fields. Answers are HTTP 200 with `{"code": "200", "msg": "success",
//! "result": …}` or `{"code": "<code>", "msg": "<message>", "result": null}`.
//!
//! Checks, in order: a missing (or empty) common field → `400`; wrong `appKey` → `401`;
//! bad [`sign`] → `402`; unparsable `timestamp` → `400`; `timestamp` more than 10 minutes
//! from the simulator's clock → `403`; unknown `method` → `404`. A body that is not
//! `application/x-www-form-urlencoded` → `400`; a verb other than POST → HTTP 405.
//!
//! | method | fields | result |
//! | --- | --- | --- |
//! | `yanxuan.item.id.batch.get` | `pageNo`=1, `pageSize`=50 (1..=100), `updatedSince` (RFC 3339, optional: only products changed since) | `{"total", "pageNo", "nextPageNo" (or null), "items": [ITEM]}` |
//! | `yanxuan.item.batch.get` | `itemIds` (comma-separated) | `[ITEM]`; none known → `6002` |
//! | `yanxuan.item.inventory.get` | `skuIds` | `[{"skuId", "inventory"}]` (unknown left out) |
//! | `yanxuan.order.paid.create` | `order` (JSON) | `{"orderId"}`; `400` / `6002` / `6001` / `6005` |
//! | `yanxuan.order.paid.get` | `orderId` | `{"orderId", "orderStatus", "receiverName", "receiverMobile", "receiverProvinceName", "receiverCityName", "receiverDistrictName", "receiverAddressDetail", "orderSkus", "realPrice", "expFee"}`; `6003` |
//! | `yanxuan.order.paid.list` | `startTime`, `endTime` (`yyyy-MM-dd HH:mm:ss`, UTC+8; created at or after start, before end), `pageNo`=1, `pageSize`=50 (1..=100) | `{"total", "pageNo", "nextPageNo" (or null), "orders": [the `paid.get` result with `createTime`]}` |
//! | `yanxuan.order.paid.cancel` | `orderId` | `{"orderId", "cancelStatus": 1 \| 2}`; `6003` |
//! | `yanxuan.order.express.get` | `orderId` | `{"orderId", "packages": [{"expressCompany", "expressNo", "shipTime"}]}`; `6003` |
//!
//! ITEM is `{"id", "name", "simpleDesc", "status": 1|0, "skuList": [{"id", "displayString",
//! "channelPrice": "12.50", "inventory"}]}`. Prices are yuan strings with two decimals; the
//! simulator keeps integer fen internally.
//!
//! # The control API (JSON, unsigned)
//!
//! * `POST /__sim/faults` — queue a [`Fault`]; answers `{"queued": bool, "pending": n}`.
//! * `GET /__sim/requests` — the [`RequestLog`] list, in arrival order.
//! * `POST /__sim/inventory` `{"skuId", "inventory"}` — answers the same; 404 unknown SKU.
//! * `POST /__sim/ship` `{"orderId", "expressCompany", "expressNo"}` — adds a package, sets
//!   `SHIPPED`, answers the stored order; 404 unknown order, 409 cancelled order.
//! * `GET /__sim/orders` — every stored order (see [`Simulator::order`]).
//! * `POST /__sim/drift` — a [`Drift`]: changes the order book behind the gateway's back, for
//!   reconciliation tests; answers the order as stored afterwards; 404 unknown order or line.
//! * `POST /__sim/reset` — clears faults and the request log; answers `{"ok": true}`.
//!
//! Control errors are `{"error": "<message>"}` with a 4xx status.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use channel_sim::{Catalog, Fault, FaultKind, SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::new("K", "S", Catalog::sample())).await?;
//! sim.push_fault(Fault::new(FaultKind::Http503).method("yanxuan.order.paid.create"));
//! let url = format!("{}/channel/api.json", sim.base_url());
//! // … point the gateway at `url`, run the test, then inspect:
//! let calls = sim.requests();
//! # drop((url, calls));
//! sim.stop().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod catalog;
mod money;
mod notify;
mod server;
mod signing;
mod state;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use catalog::{CATALOG_EPOCH, Catalog, Sku, Spu};
pub use money::{format_fen, parse_yuan};
pub use notify::{Spoil, send_notification};
pub use signing::{PLATFORM_OFFSET, format_timestamp, parse_timestamp, sign, signed_form};

use server::{Shared, router};
use state::State;

/// The `appKey` the simulator's binary accepts unless told otherwise (`--app-key`); the
/// demo credentials in `examples/channel-sim/demo-credentials.yaml` are these.
pub const DEMO_APP_KEY: &str = "sim-app-key";
/// The app secret the simulator's binary checks signatures with unless told otherwise
/// (`--app-secret`).
pub const DEMO_APP_SECRET: &str = "sim-app-secret";

/// How the simulator is set up.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The only accepted `appKey`.
    pub app_key: String,
    /// The app secret used to check `sign`.
    pub app_secret: String,
    /// Products, SKUs and initial inventory.
    pub catalog: Catalog,
    /// The simulator's clock for the timestamp check, `shipTime` and `createdAt`; the system
    /// clock when `None`. (The request log's `at_ms` always uses the system clock.)
    pub fixed_now: Option<time::OffsetDateTime>,
}

impl SimConfig {
    /// A configuration with the system clock.
    pub fn new(app_key: &str, app_secret: &str, catalog: Catalog) -> SimConfig {
        SimConfig {
            app_key: app_key.to_string(),
            app_secret: app_secret.to_string(),
            catalog,
            fixed_now: None,
        }
    }

    /// Freezes the simulator's clock at `now`.
    pub fn fixed_now(mut self, now: time::OffsetDateTime) -> SimConfig {
        self.fixed_now = Some(now);
        self
    }
}

/// What an injected fault does to a matching request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultKind {
    /// HTTP 500 with a small HTML body; the request is not processed.
    #[serde(rename = "http_500")]
    Http500,
    /// HTTP 503 with a small HTML body; the request is not processed.
    #[serde(rename = "http_503")]
    Http503,
    /// No answer for `delay_ms` (default 30 s) or until the client goes away or the simulator
    /// stops, then HTTP 504 with an HTML body; the request is not processed.
    #[serde(rename = "timeout")]
    Timeout,
    /// The request **is processed at once** (its effects happen) but the answer is held back
    /// for `delay_ms` (default 1 s) — so a client that gives up meanwhile has still, e.g.,
    /// created the order.
    #[serde(rename = "slow")]
    Slow,
    /// HTTP 200 with the truncated body `{"code": "200", "result": `; not processed.
    #[serde(rename = "malformed")]
    Malformed,
    /// HTTP 200 `{"code": code (default "500"), "msg": msg (default "injected business
    /// error"), "result": null}`; not processed.
    #[serde(rename = "business")]
    Business,
}

impl FaultKind {
    /// The wire name (`"http_500"`, `"slow"`, …), also used in [`RequestLog::outcome`].
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Http500 => "http_500",
            FaultKind::Http503 => "http_503",
            FaultKind::Timeout => "timeout",
            FaultKind::Slow => "slow",
            FaultKind::Malformed => "malformed",
            FaultKind::Business => "business",
        }
    }
}

fn one() -> u32 {
    1
}

/// A queued fault. JSON form (the body of `POST /__sim/faults`):
/// `{"method": "yanxuan.order.paid.create" | null, "kind": "http_503", "times": 1,
/// "delay_ms": 500, "code": "6001", "msg": "…"}`; only `kind` is required.
///
/// Each request to `/channel/api.json` consumes one use of the *first* queued fault whose
/// `method` is null or equals the request's `method` field; faults are checked before the
/// signature and other checks, so they apply to any request, valid or not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Only requests with this `method` field; `None` matches every request.
    #[serde(default)]
    pub method: Option<String>,
    /// What happens.
    pub kind: FaultKind,
    /// How many requests it applies to (default 1; 0 queues nothing).
    #[serde(default = "one")]
    pub times: u32,
    /// Delay for `slow` and `timeout`, in milliseconds.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Business code for `business`.
    #[serde(default)]
    pub code: Option<String>,
    /// Business message for `business`.
    #[serde(default)]
    pub msg: Option<String>,
}

impl Fault {
    /// A fault of `kind` for any method, once.
    pub fn new(kind: FaultKind) -> Fault {
        Fault {
            method: None,
            kind,
            times: 1,
            delay_ms: None,
            code: None,
            msg: None,
        }
    }

    /// A `business` fault answering `code` / `msg`, once.
    pub fn business(code: &str, msg: &str) -> Fault {
        Fault {
            code: Some(code.to_string()),
            msg: Some(msg.to_string()),
            ..Fault::new(FaultKind::Business)
        }
    }

    /// Restricts the fault to requests for `method`.
    pub fn method(mut self, method: &str) -> Fault {
        self.method = Some(method.to_string());
        self
    }

    /// Applies the fault to `n` requests.
    pub fn times(mut self, n: u32) -> Fault {
        self.times = n;
        self
    }

    /// Sets the delay of a `slow` or `timeout` fault.
    pub fn delay_ms(mut self, ms: u64) -> Fault {
        self.delay_ms = Some(ms);
        self
    }
}

/// One request received on `/channel/api.json`. JSON form:
/// `{"method": "yanxuan.item.inventory.get", "at_ms": 1718000000000, "outcome": "ok",
/// "traceparent": "00-…-…-01"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLog {
    /// The request's `method` form field (empty when absent or the body was unreadable).
    pub method: String,
    /// When it was received, in Unix milliseconds (system clock).
    pub at_ms: u64,
    /// `"ok"`, the business code of the answer (`"402"`, `"6001"`, …), `"405"` for a
    /// non-POST request, or `"fault:<kind>"` when a fault was applied.
    pub outcome: String,
    /// The request's W3C `traceparent` header, as received (absent when it had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// A change of the order book made behind the gateway's back (what reconciliation must find).
/// JSON form (the body of `POST /__sim/drift`): `{"kind": "status", "orderId": "M1",
/// "orderStatus": "SHIPPED"}`, fields in camelCase.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Drift {
    /// Sets an order's `orderStatus` (`PAID`, `SHIPPED` or `CANCELLED`).
    Status {
        /// The order.
        order_id: String,
        /// The new status.
        order_status: String,
    },
    /// Sets an order's `realPrice`, in fen.
    Amount {
        /// The order.
        order_id: String,
        /// The new total, in fen.
        real_price_fen: i64,
    },
    /// Sets one line's count and unit price (fen).
    Line {
        /// The order.
        order_id: String,
        /// The line's SKU.
        sku_id: String,
        /// The new count.
        sale_count: i64,
        /// The new unit price, in fen.
        origin_price_fen: i64,
    },
    /// Deletes an order.
    Delete {
        /// The order.
        order_id: String,
    },
    /// Creates a `PAID` order of one line (total = count × price) that the gateway never made.
    Create {
        /// The new order's id.
        order_id: String,
        /// The line's SKU.
        sku_id: String,
        /// The count.
        sale_count: i64,
        /// The unit price, in fen.
        origin_price_fen: i64,
    },
}

/// A running simulator. Stop it with [`Simulator::stop`]; dropping it also asks the server to
/// stop (without waiting).
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl Simulator {
    /// Starts on `127.0.0.1` with a free port.
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        Simulator::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts on `addr` (port 0 picks a free port).
    pub async fn start_on(addr: SocketAddr, config: SimConfig) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(State::new(config)));
        let app = router(Arc::clone(&shared));
        let mut stop = shared.shutdown.subscribe();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            };
            // An accept loop error ends the server; there is no one to report it to.
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        Ok(Simulator {
            addr,
            shared,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<ip>:<port>`, without a trailing slash; the API is at
    /// `{base_url}/channel/api.json`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request log, in arrival order (same as `GET /__sim/requests`).
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.lock().requests()
    }

    /// Queues a fault (same as `POST /__sim/faults`). A fault with `times == 0` is ignored.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.lock().push_fault(fault);
    }

    /// Clears queued faults and the request log (same as `POST /__sim/reset`).
    pub fn reset(&self) {
        self.shared.lock().reset();
    }

    /// Sets a SKU's inventory (same as `POST /__sim/inventory`); unknown SKUs are ignored.
    pub fn set_inventory(&self, sku: &str, n: i64) {
        self.shared.lock().set_inventory(sku, n);
    }

    /// Changes a product (name, description, status, SKUs) and stamps it changed at the
    /// simulator's clock, so the change feed lists it; `false` when the product is unknown.
    /// The platform would then notify `yanxuan.notification.item.changed` with `itemId`
    /// (send it with [`send_notification`]).
    pub fn edit_product(&self, id: &str, edit: impl FnOnce(&mut Spu)) -> bool {
        self.shared.lock().edit_product(id, edit)
    }

    /// A SKU's current inventory.
    pub fn inventory(&self, sku: &str) -> Option<i64> {
        self.shared.lock().inventory(sku)
    }

    /// Ships an order (same as `POST /__sim/ship`): adds a package with `shipTime` = the
    /// simulator's clock and sets `SHIPPED`. Unknown or cancelled orders are ignored.
    pub fn ship(&self, order_id: &str, company: &str, no: &str) {
        let _ = self.shared.lock().ship(order_id, company, no);
    }

    /// A stored order, as in `GET /__sim/orders`:
    /// `{"orderId", "orderStatus", "receiverName", "receiverMobile", "receiverProvinceName",
    /// "receiverCityName", "receiverDistrictName" (or null), "receiverAddressDetail",
    /// "realPrice", "expFee", "orderSkus": [{"skuId", "saleCount", "originPrice"}],
    /// "packages": [{"expressCompany", "expressNo", "shipTime"}], "createdAt"}`.
    pub fn order(&self, order_id: &str) -> Option<serde_json::Value> {
        self.shared.lock().order(order_id)
    }

    /// Every stored order, in creation order.
    pub fn orders(&self) -> Vec<serde_json::Value> {
        self.shared.lock().orders()
    }

    /// Changes the order book behind the gateway's back (same as `POST /__sim/drift`); returns
    /// the order as stored afterwards (the deleted one for [`Drift::Delete`]).
    pub fn drift(&self, drift: Drift) -> Result<serde_json::Value, String> {
        self.shared.lock().drift(drift)
    }

    /// Moves the simulator's clock: `Some(t)` freezes it at `t`, `None` follows the system
    /// clock.
    pub fn set_now(&self, now: Option<time::OffsetDateTime>) {
        self.shared.lock().set_now(now);
    }

    /// Stops the server: no new connections, pending fault delays cut short, open
    /// connections given up to 5 seconds to finish.
    pub async fn stop(mut self) {
        self.shared.shutdown.send_replace(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}
