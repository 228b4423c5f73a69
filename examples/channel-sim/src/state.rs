//! The simulated platform: authentication checks and the business methods, as synchronous
//! functions over in-memory state (the HTTP layer lives in `server.rs`).

use std::collections::{HashMap, VecDeque};

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::catalog::{Catalog, Sku, Spu};
use crate::money::{format_fen, json_yuan};
use crate::signing::{format_timestamp, parse_timestamp, sign};
use crate::{Fault, RequestLog, SimConfig};

/// How far a request's `timestamp` may be from the simulator's clock.
const TIMESTAMP_TOLERANCE: time::Duration = time::Duration::minutes(10);

/// The default and the largest `pageSize` of `yanxuan.item.id.batch.get`.
const DEFAULT_PAGE_SIZE: u64 = 50;
const MAX_PAGE_SIZE: u64 = 100;

/// A business answer: `{"code", "msg", "result"}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub code: String,
    pub msg: String,
    pub result: Value,
}

impl Reply {
    pub fn ok(result: Value) -> Reply {
        Reply {
            code: "200".to_string(),
            msg: "success".to_string(),
            result,
        }
    }

    pub fn err(code: &str, msg: impl Into<String>) -> Reply {
        Reply {
            code: code.to_string(),
            msg: msg.into(),
            result: Value::Null,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({ "code": self.code, "msg": self.msg, "result": self.result })
    }

    /// The request-log outcome: `"ok"` or the business code.
    pub fn outcome(&self) -> String {
        if self.code == "200" {
            "ok".to_string()
        } else {
            self.code.clone()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderStatus {
    Paid,
    Shipped,
    Cancelled,
}

impl OrderStatus {
    fn parse(text: &str) -> Option<OrderStatus> {
        match text {
            "PAID" => Some(OrderStatus::Paid),
            "SHIPPED" => Some(OrderStatus::Shipped),
            "CANCELLED" => Some(OrderStatus::Cancelled),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Paid => "PAID",
            OrderStatus::Shipped => "SHIPPED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }
}

#[derive(Debug, Clone)]
struct OrderLine {
    sku_id: String,
    sale_count: i64,
    origin_price_fen: i64,
}

#[derive(Debug, Clone)]
struct Package {
    express_company: String,
    express_no: String,
    ship_time: String,
}

#[derive(Debug, Clone)]
struct Order {
    order_id: String,
    status: OrderStatus,
    receiver_name: String,
    receiver_mobile: String,
    receiver_province_name: String,
    receiver_city_name: String,
    receiver_district_name: Option<String>,
    receiver_address_detail: String,
    real_price_fen: i64,
    exp_fee_fen: i64,
    lines: Vec<OrderLine>,
    packages: Vec<Package>,
    created_at: String,
}

impl Order {
    fn lines_json(&self) -> Value {
        Value::Array(
            self.lines
                .iter()
                .map(|l| {
                    json!({
                        "skuId": l.sku_id,
                        "saleCount": l.sale_count,
                        "originPrice": format_fen(l.origin_price_fen),
                    })
                })
                .collect(),
        )
    }

    fn packages_json(&self) -> Value {
        Value::Array(
            self.packages
                .iter()
                .map(|p| {
                    json!({
                        "expressCompany": p.express_company,
                        "expressNo": p.express_no,
                        "shipTime": p.ship_time,
                    })
                })
                .collect(),
        )
    }

    /// The `yanxuan.order.paid.get` result.
    fn paid_get_json(&self) -> Value {
        json!({
            "orderId": self.order_id,
            "orderStatus": self.status.as_str(),
            "receiverName": self.receiver_name,
            "receiverMobile": self.receiver_mobile,
            "receiverProvinceName": self.receiver_province_name,
            "receiverCityName": self.receiver_city_name,
            "receiverDistrictName": self.receiver_district_name,
            "receiverAddressDetail": self.receiver_address_detail,
            "orderSkus": self.lines_json(),
            "realPrice": format_fen(self.real_price_fen),
            "expFee": format_fen(self.exp_fee_fen),
        })
    }

    /// Everything stored, for the control API.
    fn full_json(&self) -> Value {
        json!({
            "orderId": self.order_id,
            "orderStatus": self.status.as_str(),
            "receiverName": self.receiver_name,
            "receiverMobile": self.receiver_mobile,
            "receiverProvinceName": self.receiver_province_name,
            "receiverCityName": self.receiver_city_name,
            "receiverDistrictName": self.receiver_district_name,
            "receiverAddressDetail": self.receiver_address_detail,
            "realPrice": format_fen(self.real_price_fen),
            "expFee": format_fen(self.exp_fee_fen),
            "orderSkus": self.lines_json(),
            "packages": self.packages_json(),
            "createdAt": self.created_at,
        })
    }
}

/// Why a control-API `ship` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShipError {
    UnknownOrder,
    Cancelled,
}

/// All mutable state of one simulator.
pub(crate) struct State {
    app_key: String,
    app_secret: String,
    catalog: Catalog,
    spu_index: HashMap<String, usize>,
    sku_index: HashMap<String, (usize, usize)>,
    orders: Vec<Order>,
    order_index: HashMap<String, usize>,
    faults: VecDeque<Fault>,
    log: Vec<RequestLog>,
    fixed_now: Option<OffsetDateTime>,
}

impl State {
    pub fn new(config: SimConfig) -> State {
        let mut spu_index = HashMap::new();
        let mut sku_index = HashMap::new();
        for (i, spu) in config.catalog.spus.iter().enumerate() {
            spu_index.entry(spu.id.clone()).or_insert(i);
            for (j, sku) in spu.skus.iter().enumerate() {
                sku_index.entry(sku.id.clone()).or_insert((i, j));
            }
        }
        State {
            app_key: config.app_key,
            app_secret: config.app_secret,
            catalog: config.catalog,
            spu_index,
            sku_index,
            orders: Vec::new(),
            order_index: HashMap::new(),
            faults: VecDeque::new(),
            log: Vec::new(),
            fixed_now: config.fixed_now,
        }
    }

    /// The simulator's clock: the fixed instant when configured, the system clock otherwise.
    pub fn now(&self) -> OffsetDateTime {
        self.fixed_now.unwrap_or_else(OffsetDateTime::now_utc)
    }

    pub fn set_now(&mut self, now: Option<OffsetDateTime>) {
        self.fixed_now = now;
    }

    // ---- faults and the request log -------------------------------------------------------

    pub fn push_fault(&mut self, fault: Fault) {
        if fault.times > 0 {
            self.faults.push_back(fault);
        }
    }

    pub fn pending_faults(&self) -> usize {
        self.faults.len()
    }

    /// Consumes one use of the first queued fault that matches `method` (a fault without a
    /// method matches every request).
    pub fn take_fault(&mut self, method: &str) -> Option<Fault> {
        let pos = self
            .faults
            .iter()
            .position(|f| f.method.as_deref().is_none_or(|m| m == method))?;
        let fault = self.faults.get_mut(pos)?;
        let taken = fault.clone();
        fault.times = fault.times.saturating_sub(1);
        if fault.times == 0 {
            self.faults.remove(pos);
        }
        Some(taken)
    }

    pub fn log(&mut self, entry: RequestLog) {
        self.log.push(entry);
    }

    pub fn requests(&self) -> Vec<RequestLog> {
        self.log.clone()
    }

    /// Clears faults and the request log (orders and inventory stay).
    pub fn reset(&mut self) {
        self.faults.clear();
        self.log.clear();
    }

    // ---- control operations ---------------------------------------------------------------

    fn sku(&self, id: &str) -> Option<&Sku> {
        let (i, j) = *self.sku_index.get(id)?;
        self.catalog.spus.get(i)?.skus.get(j)
    }

    fn sku_mut(&mut self, id: &str) -> Option<&mut Sku> {
        let (i, j) = *self.sku_index.get(id)?;
        self.catalog.spus.get_mut(i)?.skus.get_mut(j)
    }

    fn spu(&self, id: &str) -> Option<&Spu> {
        self.catalog.spus.get(*self.spu_index.get(id)?)
    }

    fn order_ref(&self, id: &str) -> Option<&Order> {
        self.orders.get(*self.order_index.get(id)?)
    }

    fn order_mut(&mut self, id: &str) -> Option<&mut Order> {
        self.orders.get_mut(*self.order_index.get(id)?)
    }

    pub fn inventory(&self, sku: &str) -> Option<i64> {
        self.sku(sku).map(|s| s.inventory)
    }

    /// Sets a SKU's inventory; `false` when the SKU is unknown.
    pub fn set_inventory(&mut self, sku: &str, n: i64) -> bool {
        match self.sku_mut(sku) {
            Some(s) => {
                s.inventory = n;
                true
            }
            None => false,
        }
    }

    /// Ships an order (PAID or already SHIPPED: adds a package and sets SHIPPED).
    pub fn ship(&mut self, order_id: &str, company: &str, no: &str) -> Result<Value, ShipError> {
        let ship_time = format_timestamp(self.now());
        let order = self.order_mut(order_id).ok_or(ShipError::UnknownOrder)?;
        if order.status == OrderStatus::Cancelled {
            return Err(ShipError::Cancelled);
        }
        order.status = OrderStatus::Shipped;
        order.packages.push(Package {
            express_company: company.to_string(),
            express_no: no.to_string(),
            ship_time,
        });
        Ok(order.full_json())
    }

    pub fn order(&self, order_id: &str) -> Option<Value> {
        self.order_ref(order_id).map(Order::full_json)
    }

    pub fn orders(&self) -> Vec<Value> {
        self.orders.iter().map(Order::full_json).collect()
    }

    // ---- the channel API --------------------------------------------------------------------

    /// Runs one channel-API call: the common checks in the platform's order, then the method.
    pub fn handle(&mut self, fields: &[(String, String)]) -> Reply {
        let get = |name: &str| field(fields, name);
        for name in ["appKey", "timestamp", "method", "sign"] {
            if get(name).is_none() {
                return Reply::err("400", format!("missing required parameter: {name}"));
            }
        }
        let (Some(app_key), Some(timestamp), Some(method), Some(signature)) =
            (get("appKey"), get("timestamp"), get("method"), get("sign"))
        else {
            return Reply::err("400", "missing required parameter");
        };
        if app_key != self.app_key {
            return Reply::err("401", "invalid appKey");
        }
        if sign(&self.app_secret, fields) != signature {
            return Reply::err("402", "invalid sign");
        }
        let Some(sent_at) = parse_timestamp(timestamp) else {
            return Reply::err(
                "400",
                "invalid timestamp, expected yyyy-MM-dd HH:mm:ss (UTC+8)",
            );
        };
        if (self.now() - sent_at).abs() > TIMESTAMP_TOLERANCE {
            return Reply::err("403", "timestamp expired");
        }
        match method {
            "yanxuan.item.id.batch.get" => self.item_page(fields),
            "yanxuan.item.batch.get" => self.item_batch(fields),
            "yanxuan.item.inventory.get" => self.inventory_get(fields),
            "yanxuan.order.paid.create" => self.order_create(fields),
            "yanxuan.order.paid.get" => self.order_get(fields),
            "yanxuan.order.paid.list" => self.order_list(fields),
            "yanxuan.order.paid.cancel" => self.order_cancel(fields),
            "yanxuan.order.express.get" => self.express_get(fields),
            other => Reply::err("404", format!("unknown method: {other}")),
        }
    }

    fn item_json(spu: &Spu) -> Value {
        json!({
            "id": spu.id,
            "name": spu.name,
            "simpleDesc": spu.simple_desc,
            "status": if spu.on_sale { 1 } else { 0 },
            "skuList": spu.skus.iter().map(|s| json!({
                "id": s.id,
                "displayString": s.display,
                "channelPrice": format_fen(s.price_fen),
                "inventory": s.inventory,
            })).collect::<Vec<_>>(),
        })
    }

    /// Changes a product with `edit` and stamps it changed now; `false` when unknown.
    pub fn edit_product(&mut self, id: &str, edit: impl FnOnce(&mut Spu)) -> bool {
        let now = self.now();
        let Some(i) = self.spu_index.get(id).copied() else {
            return false;
        };
        match self.catalog.spus.get_mut(i) {
            Some(spu) => {
                edit(spu);
                spu.updated_at = now;
                true
            }
            None => false,
        }
    }

    fn item_page(&self, fields: &[(String, String)]) -> Reply {
        let page_no = match positive(field(fields, "pageNo"), 1) {
            Some(n) => n,
            None => return Reply::err("400", "invalid pageNo: must be a positive integer"),
        };
        let page_size = match positive(field(fields, "pageSize"), DEFAULT_PAGE_SIZE) {
            Some(n) if n <= MAX_PAGE_SIZE => n,
            _ => return Reply::err("400", "invalid pageSize: must be between 1 and 100"),
        };
        // The change feed: only products changed at or after `updatedSince` (RFC 3339).
        let since = match field(fields, "updatedSince").filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => {
                match OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
                    Ok(t) => Some(t),
                    Err(_) => {
                        return Reply::err("400", "invalid updatedSince: must be an RFC 3339 time");
                    }
                }
            }
        };
        let listed: Vec<&Spu> = self
            .catalog
            .spus
            .iter()
            .filter(|s| since.is_none_or(|t| s.updated_at >= t))
            .collect();
        let total = listed.len() as u64;
        let start = (page_no - 1).saturating_mul(page_size);
        let items: Vec<Value> = listed
            .into_iter()
            .skip(usize::try_from(start).unwrap_or(usize::MAX))
            .take(usize::try_from(page_size).unwrap_or(usize::MAX))
            .map(Self::item_json)
            .collect();
        let next = if start.saturating_add(page_size) < total {
            json!(page_no.saturating_add(1))
        } else {
            Value::Null
        };
        Reply::ok(json!({
            "total": total,
            "pageNo": page_no,
            "nextPageNo": next,
            "items": items,
        }))
    }

    fn item_batch(&self, fields: &[(String, String)]) -> Reply {
        let Some(raw) = field(fields, "itemIds") else {
            return Reply::err("400", "missing required parameter: itemIds");
        };
        let items: Vec<Value> = id_list(raw)
            .into_iter()
            .filter_map(|id| self.spu(id))
            .map(Self::item_json)
            .collect();
        if items.is_empty() {
            return Reply::err("6002", "item not found");
        }
        Reply::ok(Value::Array(items))
    }

    fn inventory_get(&self, fields: &[(String, String)]) -> Reply {
        let Some(raw) = field(fields, "skuIds") else {
            return Reply::err("400", "missing required parameter: skuIds");
        };
        let result: Vec<Value> = id_list(raw)
            .into_iter()
            .filter_map(|id| self.sku(id))
            .map(|s| json!({ "skuId": s.id, "inventory": s.inventory }))
            .collect();
        Reply::ok(Value::Array(result))
    }

    fn order_create(&mut self, fields: &[(String, String)]) -> Reply {
        let Some(raw) = field(fields, "order") else {
            return Reply::err("400", "missing required parameter: order");
        };
        let new = match parse_order(raw) {
            Ok(order) => order,
            Err(msg) => return Reply::err("400", msg),
        };
        // Idempotency: a known orderId answers as the first call did, reserving nothing.
        if self.order_index.contains_key(&new.order_id) {
            return Reply::ok(json!({ "orderId": new.order_id }));
        }
        // Total quantity wanted per SKU (a SKU may appear on several lines).
        let mut wanted: Vec<(String, i64)> = Vec::new();
        for line in &new.lines {
            if self.sku(&line.sku_id).is_none() {
                return Reply::err("6002", format!("item not found: sku {}", line.sku_id));
            }
            match wanted.iter_mut().find(|(id, _)| *id == line.sku_id) {
                Some((_, n)) => *n = n.saturating_add(line.sale_count),
                None => wanted.push((line.sku_id.clone(), line.sale_count)),
            }
        }
        for (sku_id, n) in &wanted {
            let available = self.inventory(sku_id).unwrap_or(0);
            if available < *n {
                return Reply::err("6001", "inventory not enough");
            }
        }
        let mut expected: i64 = new.exp_fee_fen;
        for line in &new.lines {
            let Some(amount) = line
                .origin_price_fen
                .checked_mul(line.sale_count)
                .and_then(|a| a.checked_add(expected))
            else {
                return Reply::err("400", "order amount out of range");
            };
            expected = amount;
        }
        if expected != new.real_price_fen {
            return Reply::err("6005", "price mismatch");
        }
        for (sku_id, n) in &wanted {
            if let Some(sku) = self.sku_mut(sku_id) {
                sku.inventory = sku.inventory.saturating_sub(*n);
            }
        }
        let created_at = format_timestamp(self.now());
        let order_id = new.order_id.clone();
        self.order_index.insert(order_id.clone(), self.orders.len());
        self.orders.push(Order {
            order_id: new.order_id,
            status: OrderStatus::Paid,
            receiver_name: new.receiver_name,
            receiver_mobile: new.receiver_mobile,
            receiver_province_name: new.receiver_province_name,
            receiver_city_name: new.receiver_city_name,
            receiver_district_name: new.receiver_district_name,
            receiver_address_detail: new.receiver_address_detail,
            real_price_fen: new.real_price_fen,
            exp_fee_fen: new.exp_fee_fen,
            lines: new.lines,
            packages: Vec::new(),
            created_at,
        });
        Reply::ok(json!({ "orderId": order_id }))
    }

    fn order_get(&self, fields: &[(String, String)]) -> Reply {
        let Some(id) = field(fields, "orderId") else {
            return Reply::err("400", "missing required parameter: orderId");
        };
        match self.order_ref(id) {
            Some(order) => Reply::ok(order.paid_get_json()),
            None => Reply::err("6003", "order not found"),
        }
    }

    fn order_list(&self, fields: &[(String, String)]) -> Reply {
        let mut window = Vec::new();
        for name in ["startTime", "endTime"] {
            let Some(raw) = field(fields, name) else {
                return Reply::err("400", format!("missing required parameter: {name}"));
            };
            let Some(t) = parse_timestamp(raw) else {
                return Reply::err(
                    "400",
                    format!("invalid {name}, expected yyyy-MM-dd HH:mm:ss (UTC+8)"),
                );
            };
            window.push(t);
        }
        let (Some(start), Some(end)) = (window.first().copied(), window.get(1).copied()) else {
            return Reply::err("400", "missing startTime or endTime");
        };
        let page_no = match positive(field(fields, "pageNo"), 1) {
            Some(n) => n,
            None => return Reply::err("400", "invalid pageNo: must be a positive integer"),
        };
        let page_size = match positive(field(fields, "pageSize"), DEFAULT_PAGE_SIZE) {
            Some(n) if n <= MAX_PAGE_SIZE => n,
            _ => return Reply::err("400", "invalid pageSize: must be between 1 and 100"),
        };
        let inside: Vec<&Order> = self
            .orders
            .iter()
            .filter(|o| parse_timestamp(&o.created_at).is_some_and(|t| t >= start && t < end))
            .collect();
        let total = inside.len() as u64;
        let start_at = (page_no - 1).saturating_mul(page_size);
        let orders: Vec<Value> = inside
            .iter()
            .skip(usize::try_from(start_at).unwrap_or(usize::MAX))
            .take(usize::try_from(page_size).unwrap_or(usize::MAX))
            .map(|o| {
                let mut v = o.paid_get_json();
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("createTime".into(), json!(o.created_at));
                }
                v
            })
            .collect();
        let next = if start_at.saturating_add(page_size) < total {
            json!(page_no.saturating_add(1))
        } else {
            Value::Null
        };
        Reply::ok(json!({
            "total": total,
            "pageNo": page_no,
            "nextPageNo": next,
            "orders": orders,
        }))
    }

    /// Changes the order book behind the gateway's back (see [`crate::Drift`]); answers the
    /// order as stored afterwards (the deleted order for `delete`).
    pub fn drift(&mut self, drift: crate::Drift) -> Result<Value, String> {
        use crate::Drift;
        let unknown = |id: &str| format!("unknown order: {id}");
        match drift {
            Drift::Status {
                order_id,
                order_status,
            } => {
                let status = OrderStatus::parse(&order_status).ok_or_else(|| {
                    format!("unknown orderStatus '{order_status}' (PAID, SHIPPED or CANCELLED)")
                })?;
                let order = self
                    .order_mut(&order_id)
                    .ok_or_else(|| unknown(&order_id))?;
                order.status = status;
                Ok(order.full_json())
            }
            Drift::Amount {
                order_id,
                real_price_fen,
            } => {
                let order = self
                    .order_mut(&order_id)
                    .ok_or_else(|| unknown(&order_id))?;
                order.real_price_fen = real_price_fen;
                Ok(order.full_json())
            }
            Drift::Line {
                order_id,
                sku_id,
                sale_count,
                origin_price_fen,
            } => {
                let order = self
                    .order_mut(&order_id)
                    .ok_or_else(|| unknown(&order_id))?;
                let line = order
                    .lines
                    .iter_mut()
                    .find(|l| l.sku_id == sku_id)
                    .ok_or_else(|| format!("order {order_id} has no line of sku {sku_id}"))?;
                line.sale_count = sale_count;
                line.origin_price_fen = origin_price_fen;
                Ok(order.full_json())
            }
            Drift::Delete { order_id } => {
                let i = *self
                    .order_index
                    .get(&order_id)
                    .ok_or_else(|| unknown(&order_id))?;
                if i >= self.orders.len() {
                    return Err(unknown(&order_id));
                }
                let order = self.orders.remove(i);
                self.order_index = self
                    .orders
                    .iter()
                    .enumerate()
                    .map(|(i, o)| (o.order_id.clone(), i))
                    .collect();
                Ok(order.full_json())
            }
            Drift::Create {
                order_id,
                sku_id,
                sale_count,
                origin_price_fen,
            } => {
                if self.order_index.contains_key(&order_id) {
                    return Err(format!("order {order_id} exists"));
                }
                let created_at = format_timestamp(self.now());
                let order = Order {
                    order_id: order_id.clone(),
                    status: OrderStatus::Paid,
                    receiver_name: "Walk-in".into(),
                    receiver_mobile: "13900000000".into(),
                    receiver_province_name: "Zhejiang".into(),
                    receiver_city_name: "Hangzhou".into(),
                    receiver_district_name: None,
                    receiver_address_detail: "1 Side Street".into(),
                    real_price_fen: origin_price_fen.saturating_mul(sale_count),
                    exp_fee_fen: 0,
                    lines: vec![OrderLine {
                        sku_id,
                        sale_count,
                        origin_price_fen,
                    }],
                    packages: Vec::new(),
                    created_at,
                };
                let json = order.full_json();
                self.order_index.insert(order_id, self.orders.len());
                self.orders.push(order);
                Ok(json)
            }
        }
    }

    fn order_cancel(&mut self, fields: &[(String, String)]) -> Reply {
        let Some(id) = field(fields, "orderId") else {
            return Reply::err("400", "missing required parameter: orderId");
        };
        let Some(order) = self.order_mut(id) else {
            return Reply::err("6003", "order not found");
        };
        let cancel_status = match order.status {
            OrderStatus::Paid => {
                order.status = OrderStatus::Cancelled;
                let release: Vec<(String, i64)> = order
                    .lines
                    .iter()
                    .map(|l| (l.sku_id.clone(), l.sale_count))
                    .collect();
                for (sku_id, n) in release {
                    if let Some(sku) = self.sku_mut(&sku_id) {
                        sku.inventory = sku.inventory.saturating_add(n);
                    }
                }
                1
            }
            OrderStatus::Cancelled => 1,
            OrderStatus::Shipped => 2,
        };
        Reply::ok(json!({ "orderId": id, "cancelStatus": cancel_status }))
    }

    fn express_get(&self, fields: &[(String, String)]) -> Reply {
        let Some(id) = field(fields, "orderId") else {
            return Reply::err("400", "missing required parameter: orderId");
        };
        match self.order_ref(id) {
            Some(order) => Reply::ok(json!({
                "orderId": order.order_id,
                "packages": order.packages_json(),
            })),
            None => Reply::err("6003", "order not found"),
        }
    }
}

/// The first non-empty value of a form field (empty values count as absent, as they do for
/// the signature).
pub(crate) fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// A positive decimal integer field, or `default` when absent.
fn positive(value: Option<&str>, default: u64) -> Option<u64> {
    match value {
        None => Some(default),
        Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<u64>().ok().filter(|n| *n > 0)
        }
        Some(_) => None,
    }
}

/// Splits a comma-separated id list, trimming blanks, dropping empties and repeats.
fn id_list(raw: &str) -> Vec<&str> {
    let mut ids: Vec<&str> = Vec::new();
    for id in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

struct NewOrder {
    order_id: String,
    receiver_name: String,
    receiver_mobile: String,
    receiver_province_name: String,
    receiver_city_name: String,
    receiver_district_name: Option<String>,
    receiver_address_detail: String,
    real_price_fen: i64,
    exp_fee_fen: i64,
    lines: Vec<OrderLine>,
}

/// A required text field: a non-empty string, or a number (coerced to its text).
fn text(obj: &Map<String, Value>, name: &str) -> Result<String, String> {
    match obj.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::String(_)) | Some(Value::Null) | None => Err(format!("missing field: {name}")),
        Some(_) => Err(format!("invalid field: {name} must be a string")),
    }
}

fn amount(obj: &Map<String, Value>, name: &str) -> Result<i64, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Err(format!("missing field: {name}")),
        Some(v) => json_yuan(v).ok_or_else(|| {
            format!(
                "invalid field: {name} must be a non-negative yuan amount with at most two decimals"
            )
        }),
    }
}

fn count(obj: &Map<String, Value>, name: &str) -> Result<i64, String> {
    let n = match obj.get(name) {
        None | Some(Value::Null) => return Err(format!("missing field: {name}")),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) if s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        Some(_) => None,
    };
    n.filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid field: {name} must be a positive integer"))
}

/// Parses and structurally validates the `order` JSON of `yanxuan.order.paid.create`.
fn parse_order(raw: &str) -> Result<NewOrder, String> {
    let value: Value =
        serde_json::from_str(raw).map_err(|e| format!("invalid order: malformed JSON ({e})"))?;
    let Value::Object(obj) = value else {
        return Err("invalid order: not a JSON object".to_string());
    };
    let order_id = text(&obj, "orderId")?;
    let receiver_name = text(&obj, "receiverName")?;
    let receiver_mobile = text(&obj, "receiverMobile")?;
    let receiver_province_name = text(&obj, "receiverProvinceName")?;
    let receiver_city_name = text(&obj, "receiverCityName")?;
    let receiver_district_name = match obj.get("receiverDistrictName") {
        None | Some(Value::Null) => None,
        Some(_) => Some(text(&obj, "receiverDistrictName")?),
    };
    let receiver_address_detail = text(&obj, "receiverAddressDetail")?;
    let real_price_fen = amount(&obj, "realPrice")?;
    let exp_fee_fen = amount(&obj, "expFee")?;
    let lines_json = match obj.get("orderSkus") {
        None | Some(Value::Null) => return Err("missing field: orderSkus".to_string()),
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(_) => return Err("invalid field: orderSkus must be a non-empty array".to_string()),
    };
    let mut lines = Vec::with_capacity(lines_json.len());
    for (i, line) in lines_json.iter().enumerate() {
        let Value::Object(l) = line else {
            return Err(format!("invalid field: orderSkus[{i}] must be an object"));
        };
        let at = |e: String| format!("orderSkus[{i}]: {e}");
        lines.push(OrderLine {
            sku_id: text(l, "skuId").map_err(at)?,
            sale_count: count(l, "saleCount").map_err(at)?,
            origin_price_fen: amount(l, "originPrice").map_err(at)?,
        });
    }
    Ok(NewOrder {
        order_id,
        receiver_name,
        receiver_mobile,
        receiver_province_name,
        receiver_city_name,
        receiver_district_name,
        receiver_address_detail,
        real_price_fen,
        exp_fee_fen,
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_fields() {
        assert_eq!(positive(None, 7), Some(7));
        assert_eq!(positive(Some("3"), 7), Some(3));
        assert_eq!(positive(Some("0"), 7), None);
        assert_eq!(positive(Some("-1"), 7), None);
        assert_eq!(positive(Some("x"), 7), None);
        assert_eq!(positive(Some("99999999999999999999999"), 7), None);
    }

    #[test]
    fn id_lists() {
        assert_eq!(id_list("1, 2,,1 ,3"), ["1", "2", "3"]);
        assert!(id_list(" , ").is_empty());
    }

    #[test]
    fn order_parsing_errors_name_the_field() {
        let err = |raw: &str| parse_order(raw).err().unwrap_or_default();
        assert!(err("{").starts_with("invalid order: malformed JSON"));
        assert_eq!(err("[]"), "invalid order: not a JSON object");
        assert_eq!(err("{}"), "missing field: orderId");
        let base = r#"{"orderId":"o1","receiverName":"张三","receiverMobile":"13800000000",
            "receiverProvinceName":"浙江省","receiverCityName":"杭州市",
            "receiverAddressDetail":"网商路599号","realPrice":"10.00","expFee":"0"#;
        assert_eq!(err(&format!("{base}\"}}")), "missing field: orderSkus");
        assert_eq!(
            err(&format!(
                "{base}\",\"orderSkus\":[{{\"skuId\":\"1\",\"saleCount\":0,\"originPrice\":\"1\"}}]}}"
            )),
            "orderSkus[0]: invalid field: saleCount must be a positive integer"
        );
        assert!(
            parse_order(&format!(
                "{base}\",\"orderSkus\":[{{\"skuId\":1,\"saleCount\":\"2\",\"originPrice\":5}}]}}"
            ))
            .is_ok()
        );
    }
}
