//! Reconciliation: the orders the gateway recorded (order sagas paid within a time window)
//! against what one platform reports, listing each mismatch.
//!
//! Only canonical operations are used, so it works for every platform described in YAML:
//! - `order.list` (optional): the platform's orders created within the window, page by page.
//!   Without it, orders the gateway never recorded cannot be found, and the report says so.
//! - `order.get`: each recorded order the listing did not show (or every recorded order, when
//!   the platform cannot list), with bounded concurrency.
//!
//! Kinds of mismatch: an order missing on the platform, an order missing on the gateway's side,
//! a status, an amount (`total`, `freight`) or a line (SKU, quantity, unit price) that differs.

// A `Problem` is the failure path of a request that calls platforms: its size does not matter
// next to the calls.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::engine::problem::{Problem, ProblemKind};
use crate::engine::{CallOutcome, Engine};
use crate::flows::saga::{self, PartState, Saga};
use crate::plan::PlatformPlan;
use crate::template::text_of;
use crate::timefmt::rfc3339;

/// The longest window one report covers: 31 days.
pub const MAX_WINDOW: Duration = Duration::from_secs(31 * 24 * 3600);

/// Recorded orders (of every platform) one report reads at most.
pub const MAX_ORDERS: usize = 2000;

/// Orders one report reads from a platform's listing at most.
pub const MAX_LISTED: usize = 5000;

/// Pages of a platform's listing one report reads at most.
const MAX_PAGES: usize = 500;

/// `order.get` calls in flight at once (the platform's own rate limit still applies).
const CONCURRENCY: usize = 8;

/// The time window of a report, `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Start (RFC 3339, UTC).
    pub from: String,
    /// End, excluded (RFC 3339, UTC).
    pub to: String,
    /// Start, Unix ms.
    pub from_ms: i64,
    /// End, Unix ms.
    pub to_ms: i64,
}

fn parse_time(name: &str, text: &str) -> Result<OffsetDateTime, Problem> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let date = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(text, &date) {
        return Ok(d.midnight().assume_utc());
    }
    Err(Problem::new(
        ProblemKind::InvalidInput,
        format!(
            "{name} '{text}' is not a time: write an RFC 3339 time (2024-05-01T00:00:00Z) or a date (2024-05-01, midnight UTC)"
        ),
    ))
}

fn ms_of(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Checks a report's window: both ends given, RFC 3339 times or dates, `from` before `to`, at
/// most [`MAX_WINDOW`] apart.
pub fn window(from: Option<&str>, to: Option<&str>) -> Result<Window, Problem> {
    let (Some(from), Some(to)) = (from, to) else {
        return Err(Problem::new(
            ProblemKind::InvalidInput,
            "give the window with from and to (RFC 3339 times or dates, such as from=2024-05-01&to=2024-05-02)",
        ));
    };
    let (f, t) = (parse_time("from", from)?, parse_time("to", to)?);
    if f >= t {
        return Err(Problem::new(
            ProblemKind::InvalidInput,
            format!("from ({from}) must be before to ({to})"),
        ));
    }
    if (t - f) > MAX_WINDOW {
        return Err(Problem::new(
            ProblemKind::InvalidInput,
            format!(
                "the window from {from} to {to} is longer than {} days; reconcile it in shorter windows",
                MAX_WINDOW.as_secs() / 86_400
            ),
        ));
    }
    let utc = |x: OffsetDateTime| {
        x.to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .unwrap_or_default()
    };
    Ok(Window {
        from: utc(f),
        to: utc(t),
        from_ms: ms_of(f),
        to_ms: ms_of(t),
    })
}

/// What differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MismatchKind {
    /// The gateway created the order on the platform; the platform does not have it.
    MissingOnPlatform,
    /// The platform has an order the gateway has no record of (or recorded as not created).
    MissingInEntrepot,
    /// The status differs.
    Status,
    /// An amount (`total` or `freight`) differs.
    Amount,
    /// A line (SKU, quantity, unit price) differs or is on one side only.
    Line,
}

impl MismatchKind {
    fn as_str(self) -> &'static str {
        match self {
            MismatchKind::MissingOnPlatform => "missing_on_platform",
            MismatchKind::MissingInEntrepot => "missing_in_entrepot",
            MismatchKind::Status => "status",
            MismatchKind::Amount => "amount",
            MismatchKind::Line => "line",
        }
    }
}

/// One mismatch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mismatch {
    /// What differs.
    pub kind: MismatchKind,
    /// The mall's order id.
    pub order_id: String,
    /// The platform's order id, when known.
    pub platform_order_id: Option<String>,
    /// What field: `status`, `total`, `freight`, `lines[<sku_id>]`; none for a missing order.
    pub field: Option<String>,
    /// The gateway's value (null when it has none).
    pub entrepot: Value,
    /// The platform's value (null when it has none).
    pub platform: Value,
    /// Words about it (the platform's answer for a missing order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A recorded order that could not be compared (the platform failed to answer).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unchecked {
    /// The mall's order id.
    pub order_id: String,
    /// The platform's order id, when known.
    pub platform_order_id: Option<String>,
    /// Why.
    pub error: String,
}

/// Counts of a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Orders recorded in the window with a part on the platform.
    pub recorded: usize,
    /// Recorded orders compared with the platform's.
    pub compared: usize,
    /// Recorded orders still being created (not compared).
    pub in_flight: usize,
    /// Orders the platform listed in the window (none without a listing).
    pub listed: Option<usize>,
    /// Recorded orders that could not be compared (see `unchecked`).
    pub unchecked: usize,
    /// Mismatches in all.
    pub mismatches: usize,
    /// Mismatches per kind.
    pub by_kind: BTreeMap<String, usize>,
}

/// A reconciliation report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The platform.
    pub platform: String,
    /// Window start (RFC 3339).
    pub from: String,
    /// Window end, excluded (RFC 3339).
    pub to: String,
    /// Whether the platform's orders were listed, so orders missing on the gateway's side
    /// were looked for.
    pub missing_in_entrepot_checked: bool,
    /// Why something could not be checked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The counts.
    pub summary: Summary,
    /// The mismatches, by order id then kind.
    pub mismatches: Vec<Mismatch>,
    /// Recorded orders that could not be compared.
    pub unchecked: Vec<Unchecked>,
}

fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

fn csv_value(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Report {
    /// The mismatches as CSV (RFC 4180), one per line after a header: `kind, order_id,
    /// platform_order_id, field, entrepot, platform, detail`; structured values are JSON.
    pub fn to_csv(&self) -> String {
        let mut out =
            String::from("kind,order_id,platform_order_id,field,entrepot,platform,detail\n");
        for m in &self.mismatches {
            let row = [
                m.kind.as_str().to_string(),
                m.order_id.clone(),
                m.platform_order_id.clone().unwrap_or_default(),
                m.field.clone().unwrap_or_default(),
                csv_value(&m.entrepot),
                csv_value(&m.platform),
                m.detail.clone().unwrap_or_default(),
            ];
            let row: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
            out.push_str(&row.join(","));
            out.push('\n');
        }
        out
    }

    /// One line for people: what was compared and the mismatches by kind.
    pub fn summary_line(&self) -> String {
        let kinds: Vec<String> = self
            .summary
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let mut line = format!(
            "{}: {} recorded orders from {} to {}, {} compared, {} in flight, {} unchecked; {} mismatches",
            self.platform,
            self.summary.recorded,
            self.from,
            self.to,
            self.summary.compared,
            self.summary.in_flight,
            self.summary.unchecked,
            self.summary.mismatches,
        );
        if !kinds.is_empty() {
            line.push_str(&format!(" ({})", kinds.join(", ")));
        }
        for note in &self.notes {
            line.push_str(&format!("; {note}"));
        }
        line
    }
}

/// A recorded order the platform should have.
struct Expected {
    order_id: String,
    platform_order_id: Option<String>,
    status: Option<String>,
    input: Value,
}

fn store_problem(e: crate::store::StoreError) -> Problem {
    tracing::error!("{e}");
    Problem::new(
        ProblemKind::StoreUnavailable,
        "the gateway's store failed; see the gateway's log",
    )
}

/// What the platform answered about one order.
enum Seen {
    Order(Value),
    Missing(String),
    Failed(String),
}

/// Compares the orders recorded in `window` with what `platform` reports.
pub async fn reconcile(
    engine: &Engine,
    platform: &PlatformPlan,
    window: &Window,
) -> Result<Report, Problem> {
    let name = platform.name.as_str();
    let limit = i64::try_from(MAX_ORDERS)
        .unwrap_or(i64::MAX)
        .saturating_add(1);
    let flows = engine
        .store()
        .flows_created(saga::KIND, window.from_ms, window.to_ms, limit)
        .await
        .map_err(store_problem)?;
    if flows.len() > MAX_ORDERS {
        return Err(Problem::new(
            ProblemKind::InvalidInput,
            format!(
                "more than {MAX_ORDERS} orders were recorded from {} to {}; reconcile shorter windows",
                window.from, window.to
            ),
        ));
    }
    let mut notes = Vec::new();
    let mut expected: Vec<Expected> = Vec::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    // Orders recorded as never created on this platform, with their part's state.
    let mut absent: HashMap<String, &'static str> = HashMap::new();
    let mut unchecked: Vec<Unchecked> = Vec::new();
    for (id, flow) in flows {
        let saga: Saga = match serde_json::from_value(flow.state) {
            Ok(s) => s,
            Err(e) => {
                unchecked.push(Unchecked {
                    order_id: id.strip_prefix("order:").unwrap_or(&id).to_string(),
                    platform_order_id: None,
                    error: format!("the stored saga cannot be read: {e}"),
                });
                continue;
            }
        };
        let Some(part) = saga.parts.iter().find(|p| p.platform == name) else {
            continue;
        };
        match part.state {
            PartState::Created | PartState::Cancelling | PartState::Cancelled => {
                let status = match part.state {
                    PartState::Cancelled => Some("cancelled".to_string()),
                    _ => part.status.clone(),
                };
                expected.push(Expected {
                    order_id: saga.order_id.clone(),
                    platform_order_id: part.platform_order_id.clone(),
                    status,
                    input: part.input.clone(),
                });
            }
            PartState::Pending | PartState::Creating => {
                in_flight.insert(saga.order_id.clone());
            }
            PartState::Failed => {
                absent.insert(saga.order_id.clone(), "failed");
            }
            PartState::NotCreated => {
                absent.insert(saga.order_id.clone(), "not_created");
            }
        }
    }
    let recorded = expected.len() + in_flight.len() + absent.len();

    // The platform's listing, when it has one.
    let listed = if platform.operations.contains_key("order.list") {
        match list(engine, platform, window).await {
            Ok(items) => Some(items),
            Err(p) if p.kind == Some(ProblemKind::InvalidInput) => return Err(p),
            Err(p) => {
                notes.push(format!(
                    "listing the platform's orders failed ({}): orders missing on entrepot's side were not checked",
                    p.detail
                ));
                None
            }
        }
    } else {
        notes.push(format!(
            "{name} declares no order.list: orders missing on entrepot's side could not be checked"
        ));
        None
    };

    // The platform's view of each expected order: from the listing, else order.get.
    let mut seen: Vec<Option<Seen>> = Vec::with_capacity(expected.len());
    let mut used: HashSet<usize> = HashSet::new();
    for e in &expected {
        let found = listed.as_ref().and_then(|items| {
            items.iter().enumerate().find(|(i, o)| {
                !used.contains(i)
                    && (o.get("order_id").map(text_of).as_deref() == Some(e.order_id.as_str())
                        || (e.platform_order_id.is_some()
                            && o.get("platform_order_id").map(text_of) == e.platform_order_id))
            })
        });
        match found {
            Some((i, o)) => {
                used.insert(i);
                seen.push(Some(Seen::Order(o.clone())));
            }
            None => seen.push(None),
        }
    }
    let asks: Vec<(usize, String)> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_none())
        .filter_map(|(i, _)| expected.get(i).map(|e| (i, e.order_id.clone())))
        .collect();
    let answers: Vec<(usize, Seen)> = futures::stream::iter(asks)
        .map(|(i, order_id)| async move {
            let input = json!({ "order_id": order_id });
            let seen = match engine.call(platform, "order.get", &input, false).await {
                Ok(CallOutcome::Output(v)) => match v.get("order") {
                    Some(o) => Seen::Order(o.clone()),
                    None => Seen::Failed("the platform's answer has no order".into()),
                },
                Ok(CallOutcome::DryRun(_)) => Seen::Failed("no answer".into()),
                Err(p) if p.kind == Some(ProblemKind::PlatformError) && !p.retryable => {
                    Seen::Missing(p.detail)
                }
                Err(p) => Seen::Failed(p.detail),
            };
            (i, seen)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for (i, s) in answers {
        if let Some(slot) = seen.get_mut(i) {
            *slot = Some(s);
        }
    }

    let mut mismatches = Vec::new();
    let mut compared = 0;
    for (e, s) in expected.iter().zip(seen) {
        match s {
            Some(Seen::Order(o)) => {
                compared += 1;
                compare(e, &o, &mut mismatches);
            }
            Some(Seen::Missing(detail)) => {
                compared += 1;
                mismatches.push(Mismatch {
                    kind: MismatchKind::MissingOnPlatform,
                    order_id: e.order_id.clone(),
                    platform_order_id: e.platform_order_id.clone(),
                    field: None,
                    entrepot: e.status.clone().map_or(Value::Null, Value::String),
                    platform: Value::Null,
                    detail: Some(detail),
                });
            }
            Some(Seen::Failed(error)) => unchecked.push(Unchecked {
                order_id: e.order_id.clone(),
                platform_order_id: e.platform_order_id.clone(),
                error,
            }),
            None => unchecked.push(Unchecked {
                order_id: e.order_id.clone(),
                platform_order_id: e.platform_order_id.clone(),
                error: "the platform was not asked".into(),
            }),
        }
    }

    // Listed orders no recorded order claimed.
    if let Some(items) = &listed {
        for (i, o) in items.iter().enumerate() {
            if used.contains(&i) {
                continue;
            }
            let order_id = o.get("order_id").map(text_of).unwrap_or_default();
            if in_flight.contains(&order_id) {
                continue;
            }
            let entrepot = match absent.get(&order_id) {
                Some(state) => Value::String((*state).to_string()),
                None => {
                    // Recorded outside the window (paid just before it, say) is not missing.
                    if recorded_elsewhere(engine, name, &order_id).await? {
                        continue;
                    }
                    Value::Null
                }
            };
            mismatches.push(Mismatch {
                kind: MismatchKind::MissingInEntrepot,
                order_id,
                platform_order_id: o.get("platform_order_id").map(text_of),
                field: None,
                entrepot,
                platform: o.get("status").cloned().unwrap_or(Value::Null),
                detail: None,
            });
        }
    }

    mismatches.sort_by(|a, b| {
        (a.order_id.as_str(), a.kind, a.field.as_deref()).cmp(&(
            b.order_id.as_str(),
            b.kind,
            b.field.as_deref(),
        ))
    });
    let mut by_kind = BTreeMap::new();
    for m in &mismatches {
        *by_kind.entry(m.kind.as_str().to_string()).or_insert(0) += 1;
    }
    Ok(Report {
        platform: name.to_string(),
        from: window.from.clone(),
        to: window.to.clone(),
        missing_in_entrepot_checked: listed.is_some(),
        notes,
        summary: Summary {
            recorded,
            compared,
            in_flight: in_flight.len(),
            listed: listed.as_ref().map(Vec::len),
            unchecked: unchecked.len(),
            mismatches: mismatches.len(),
            by_kind,
        },
        mismatches,
        unchecked,
    })
}

/// Whether the saga of `order_id` (recorded at any time) has a part on `platform` that exists
/// there or is being created.
async fn recorded_elsewhere(
    engine: &Engine,
    platform: &str,
    order_id: &str,
) -> Result<bool, Problem> {
    if order_id.is_empty() {
        return Ok(false);
    }
    let Some(flow) = engine
        .store()
        .flow_get(&saga::flow_id(order_id))
        .await
        .map_err(store_problem)?
    else {
        return Ok(false);
    };
    let Ok(saga) = serde_json::from_value::<Saga>(flow.state) else {
        return Ok(false);
    };
    Ok(saga.parts.iter().any(|p| {
        p.platform == platform
            && matches!(
                p.state,
                PartState::Created
                    | PartState::Cancelling
                    | PartState::Cancelled
                    | PartState::Pending
                    | PartState::Creating
            )
    }))
}

/// Every order the platform lists in the window, page by page, within [`MAX_LISTED`]; split
/// into the narrower windows the platform's `order.list` declares, if it does.
async fn list(
    engine: &Engine,
    platform: &PlatformPlan,
    window: &Window,
) -> Result<Vec<Value>, Problem> {
    let windows = platform
        .operations
        .get("order.list")
        .and_then(|o| o.windows);
    let bounds = |t: &str| {
        OffsetDateTime::parse(t, &Rfc3339).map_err(|e| {
            Problem::new(
                ProblemKind::InvalidInput,
                format!("'{t}' is not an RFC 3339 time: {e}"),
            )
        })
    };
    let spans: Vec<(String, String)> = match windows {
        None => vec![(window.from.clone(), window.to.clone())],
        Some(w) => w
            .windows(bounds(&window.from)?, bounds(&window.to)?)
            .map(|(from, to)| (rfc3339(from), rfc3339(to)))
            .collect(),
    };
    let mut items = Vec::new();
    let mut pages = 0;
    for (from, to) in &spans {
        list_window(engine, platform, window, from, to, &mut items, &mut pages).await?;
    }
    Ok(items)
}

/// The orders the platform lists from `from` to `to`, added to `items`; `pages` counts the
/// pages of the whole report against [`MAX_PAGES`].
async fn list_window(
    engine: &Engine,
    platform: &PlatformPlan,
    window: &Window,
    from: &str,
    to: &str,
    items: &mut Vec<Value>,
    pages: &mut usize,
) -> Result<(), Problem> {
    let mut cursor: Option<String> = None;
    while *pages < MAX_PAGES {
        *pages += 1;
        let mut input = json!({ "from": from, "to": to });
        if let (Some(c), Some(obj)) = (&cursor, input.as_object_mut()) {
            obj.insert("cursor".into(), Value::String(c.clone()));
        }
        let page = match engine.call(platform, "order.list", &input, false).await? {
            CallOutcome::Output(v) => v,
            CallOutcome::DryRun(_) => {
                return Err(Problem::new(ProblemKind::PlatformFailed, "no answer"));
            }
        };
        if let Some(page_items) = page.get("items").and_then(Value::as_array) {
            items.extend(page_items.iter().cloned());
        }
        if items.len() > MAX_LISTED {
            return Err(Problem::new(
                ProblemKind::InvalidInput,
                format!(
                    "{} lists more than {MAX_LISTED} orders from {} to {}; reconcile shorter windows",
                    platform.name, window.from, window.to
                ),
            ));
        }
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(next) if !next.is_empty() && cursor.as_deref() != Some(next) => {
                cursor = Some(next.to_string());
            }
            _ => return Ok(()),
        }
    }
    Err(Problem::new(
        ProblemKind::InvalidInput,
        format!(
            "{} lists more than {MAX_PAGES} pages of orders from {} to {}; reconcile shorter windows",
            platform.name, window.from, window.to
        ),
    ))
}

fn money(v: Option<&Value>) -> Option<(i64, String)> {
    let v = v?;
    Some((
        v.get("amount").and_then(Value::as_i64)?,
        v.get("currency").map(text_of).unwrap_or_default(),
    ))
}

fn money_json((amount, currency): &(i64, String)) -> Value {
    json!({ "amount": amount, "currency": currency })
}

/// `(sku_id, quantity, unit price)` per SKU, quantities of repeated SKUs added up.
fn lines(order: &Value) -> BTreeMap<String, (i64, Option<(i64, String)>)> {
    let mut out: BTreeMap<String, (i64, Option<(i64, String)>)> = BTreeMap::new();
    for l in order
        .get("lines")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let sku = l.get("sku_id").map(text_of).unwrap_or_default();
        let q = l.get("quantity").and_then(Value::as_i64).unwrap_or(0);
        let price = money(l.get("unit_price"));
        let entry = out.entry(sku).or_insert((0, price));
        entry.0 = entry.0.saturating_add(q);
    }
    out
}

fn line_json(sku: &str, line: Option<&(i64, Option<(i64, String)>)>) -> Value {
    match line {
        None => Value::Null,
        Some((q, price)) => json!({
            "sku_id": sku,
            "quantity": q,
            "unit_price": price.as_ref().map_or(Value::Null, money_json),
        }),
    }
}

/// The mismatches of one order the platform has.
fn compare(e: &Expected, order: &Value, out: &mut Vec<Mismatch>) {
    let platform_order_id = order
        .get("platform_order_id")
        .map(text_of)
        .or_else(|| e.platform_order_id.clone());
    let mut push = |kind, field: String, entrepot: Value, platform: Value| {
        out.push(Mismatch {
            kind,
            order_id: e.order_id.clone(),
            platform_order_id: platform_order_id.clone(),
            field: Some(field),
            entrepot,
            platform,
            detail: None,
        });
    };
    let status = order.get("status").map(text_of);
    if let (Some(mine), Some(theirs)) = (&e.status, &status)
        && mine != theirs
    {
        push(
            MismatchKind::Status,
            "status".into(),
            json!(mine),
            json!(theirs),
        );
    }
    let total = money(e.input.get("total"));
    if let (Some(mine), Some(theirs)) = (&total, money(order.get("total")))
        && *mine != theirs
    {
        push(
            MismatchKind::Amount,
            "total".into(),
            money_json(mine),
            money_json(&theirs),
        );
    }
    if let Some(theirs) = money(order.get("freight")) {
        let mine = money(e.input.get("freight"))
            .unwrap_or_else(|| (0, total.as_ref().map(|t| t.1.clone()).unwrap_or_default()));
        if mine != theirs {
            push(
                MismatchKind::Amount,
                "freight".into(),
                money_json(&mine),
                money_json(&theirs),
            );
        }
    }
    let (mine, theirs) = (lines(&e.input), lines(order));
    let skus: std::collections::BTreeSet<&String> = mine.keys().chain(theirs.keys()).collect();
    for sku in skus {
        let (m, t) = (mine.get(sku), theirs.get(sku));
        if m != t {
            push(
                MismatchKind::Line,
                format!("lines[{sku}]"),
                line_json(sku, m),
                line_json(sku, t),
            );
        }
    }
}
