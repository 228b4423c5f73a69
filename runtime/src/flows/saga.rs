//! The order saga: checking that an order can be fulfilled, creating it on every platform
//! involved once it is paid, and cancelling what was created when a part cannot be.
//!
//! Only canonical operations are used (`inventory.get`, `order.create`, `order.get`,
//! `order.cancel`), so the saga runs for every platform described in YAML. Its state is one
//! document in the store's `flows` table (kind [`KIND`], id `order:<order_id>`), saved with
//! compare-and-set; every step is recorded there *before* it is acted on, so an instance that
//! dies at any point leaves a saga another instance (or itself, restarted) resumes once its
//! lease runs out.
//!
//! The steps of a paid order, per platform part:
//! 1. `pending` → `creating`: the attempt is recorded, then `order.create` is sent with the
//!    mall's order id (the idempotency key of the canonical operation). A platform whose
//!    `order.create` is not `retry_safe` is first asked with `order.get` whether an earlier
//!    attempt created the order, from the second attempt on.
//! 2. `creating` → `created` on success; `failed` when the platform refuses the order; a
//!    failure worth retrying (time-out, 5xx, rate limit) is tried again with backoff until the
//!    `orders.create_deadline`.
//! 3. A refusal or the deadline turns the saga to `compensating`: parts that were created are
//!    cancelled (`order.cancel`, retried for as long as it fails), parts whose creation is
//!    uncertain are settled first (asked again or looked up), and `order.cancelled` is sent to
//!    the targets with the reason, after the first round of cancels.

// A `Problem` is the failure path of a request that calls platforms: its size does not matter
// next to the calls.
#![allow(clippy::result_large_err)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::compile::gateway::{OrderSettings, TargetSettings};
use crate::engine::problem::{Problem, ProblemKind};
use crate::engine::{CallOutcome, Engine};
use crate::observe::{FlowSeen, Observer};
use crate::plan::Plan;
use crate::store::{NewEvent, Store, StoreError};
use crate::template::text_of;
use crate::timefmt::{now_ms, rfc3339_ms, unix_ms};

/// The flow kind of order sagas in the store.
pub const KIND: &str = "order_saga";

/// Lines of one order at most (`check` and `paid`).
pub const MAX_LINES: usize = 200;

/// Steps kept in a saga's history; older ones (but the first) are dropped.
pub const MAX_STEPS: usize = 200;

/// Rounds one run of a saga makes before it lets others have a turn.
const MAX_ROUNDS: usize = 64;

/// Sagas one instance works on at once.
const MAX_RUNNING: usize = 32;

/// The store id of the saga of `order_id`.
pub fn flow_id(order_id: &str) -> String {
    format!("order:{order_id}")
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaState {
    /// Parts are being created.
    Creating,
    /// Every part was created (done).
    Created,
    /// A part could not be created: what was created is being cancelled.
    Compensating,
    /// Every part created was cancelled, and the order center was told (done).
    Cancelled,
}

/// Where one platform's part is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartState {
    /// Not sent yet.
    Pending,
    /// Sent at least once, outcome not known yet (or a failure to retry).
    Creating,
    /// Created on the platform.
    Created,
    /// Refused by the platform: nothing was created.
    Failed,
    /// Never created (the saga was compensated before it was, or it was settled as absent).
    NotCreated,
    /// A cancel was sent and has not succeeded yet.
    Cancelling,
    /// Cancelled on the platform (or accepted for cancelling).
    Cancelled,
}

/// One platform's part of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// Platform name.
    pub platform: String,
    /// The SKUs of the order this platform supplies.
    pub sku_ids: Vec<String>,
    /// The canonical `order.create` input of this part.
    pub input: Value,
    /// Where the part is.
    pub state: PartState,
    /// The platform's own order id, once known.
    #[serde(default)]
    pub platform_order_id: Option<String>,
    /// The order's status on the platform (canonical), once known.
    #[serde(default)]
    pub status: Option<String>,
    /// `order.create` attempts recorded.
    #[serde(default)]
    pub create_attempts: u32,
    /// `order.cancel` attempts recorded.
    #[serde(default)]
    pub cancel_attempts: u32,
    /// The last error.
    #[serde(default)]
    pub error: Option<String>,
    /// When the next try is due (RFC 3339), after a failure.
    #[serde(default)]
    pub retry_at: Option<String>,
    /// The same, in Unix ms.
    #[serde(default)]
    pub retry_at_ms: Option<i64>,
}

/// One step of the saga's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// When (RFC 3339).
    pub at: String,
    /// The platform, for steps of one part.
    #[serde(default)]
    pub platform: Option<String>,
    /// What: `paid`, `order.create`, `order.get`, `order.cancel`, `compensate`,
    /// `order.cancelled sent`, `event order.shipped`...
    pub step: String,
    /// `started`, `ok`, `retry`, `failed`, `found`, `absent`...
    pub outcome: String,
    /// The error, for failed steps.
    #[serde(default)]
    pub error: Option<String>,
}

/// A saga's stored state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saga {
    /// The mall's order id.
    pub order_id: String,
    /// Where the saga is.
    pub state: SagaState,
    /// Why the order was cancelled.
    #[serde(default)]
    pub reason: Option<String>,
    /// When the payment was recorded (RFC 3339).
    pub paid_at: String,
    /// Until when parts may be created (RFC 3339).
    pub deadline: String,
    /// The same, in Unix ms.
    pub deadline_ms: i64,
    /// Whether `order.cancelled` was handed to the outbox.
    #[serde(default)]
    pub reported: bool,
    /// The `order.create` input as paid.
    pub input: Value,
    /// One part per platform.
    pub parts: Vec<Part>,
    /// What happened, oldest first.
    pub steps: Vec<Step>,
    /// Steps dropped from the history to keep it within [`MAX_STEPS`].
    #[serde(default)]
    pub steps_dropped: u64,
}

impl Saga {
    fn step(
        &mut self,
        now: i64,
        platform: Option<&str>,
        step: &str,
        outcome: &str,
        error: Option<&str>,
    ) {
        if self.steps.len() >= MAX_STEPS {
            self.steps.remove(1.min(self.steps.len().saturating_sub(1)));
            self.steps_dropped = self.steps_dropped.saturating_add(1);
        }
        self.steps.push(Step {
            at: rfc3339_ms(now),
            platform: platform.map(str::to_string),
            step: step.into(),
            outcome: outcome.into(),
            error: error.map(str::to_string),
        });
    }

    fn finished(&self) -> bool {
        matches!(self.state, SagaState::Created | SagaState::Cancelled)
    }

    /// Moves the saga on from what its parts say; returns the platform whose part caused a
    /// compensation, when one starts now.
    fn transition(&mut self, now: i64, deadline: Duration) {
        match self.state {
            SagaState::Creating => {
                if self.parts.iter().all(|p| p.state == PartState::Created) {
                    self.state = SagaState::Created;
                    self.step(now, None, "created", "ok", None);
                    return;
                }
                let refused = self
                    .parts
                    .iter()
                    .find(|p| p.state == PartState::Failed)
                    .map(|p| {
                        format!(
                            "{} refused the order: {}",
                            p.platform,
                            p.error.as_deref().unwrap_or("no reason given")
                        )
                    });
                let late = (now >= self.deadline_ms).then(|| {
                    let open: Vec<String> = self
                        .parts
                        .iter()
                        .filter(|p| p.state != PartState::Created)
                        .map(|p| match &p.error {
                            Some(e) => format!("{} ({e})", p.platform),
                            None => p.platform.clone(),
                        })
                        .collect();
                    format!(
                        "the order was not created within the deadline of {}s on {}",
                        deadline.as_secs(),
                        open.join(", ")
                    )
                });
                if let Some(reason) = refused.or(late) {
                    self.state = SagaState::Compensating;
                    self.step(now, None, "compensate", "started", Some(&reason));
                    self.reason = Some(reason);
                }
            }
            SagaState::Compensating => {
                for p in &mut self.parts {
                    if p.state == PartState::Pending {
                        p.state = PartState::NotCreated;
                    }
                }
                let settled = self.parts.iter().all(|p| {
                    matches!(
                        p.state,
                        PartState::Failed | PartState::NotCreated | PartState::Cancelled
                    )
                });
                if settled && self.reported {
                    self.state = SagaState::Cancelled;
                    self.step(now, None, "cancelled", "ok", None);
                }
            }
            SagaState::Created | SagaState::Cancelled => {}
        }
    }

    /// When the saga next has something to do (Unix ms), `None` when finished.
    fn next_due(&self, now: i64) -> Option<i64> {
        if self.finished() {
            return None;
        }
        let mut due: Option<i64> = None;
        for p in &self.parts {
            let at = match (self.state, p.state) {
                (_, PartState::Pending) => Some(now),
                (SagaState::Creating, PartState::Creating) => {
                    Some(p.retry_at_ms.unwrap_or(now).min(self.deadline_ms))
                }
                (
                    SagaState::Compensating,
                    PartState::Creating | PartState::Created | PartState::Cancelling,
                ) => Some(p.retry_at_ms.unwrap_or(now)),
                _ => None,
            };
            if let Some(at) = at {
                due = Some(due.map_or(at, |d| d.min(at)));
            }
        }
        if self.state == SagaState::Creating {
            due = Some(due.map_or(self.deadline_ms, |d| d.min(self.deadline_ms)));
        }
        Some(due.unwrap_or(now))
    }
}

/// What one part needs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Create it; `lookup` first asks `order.get` whether an earlier attempt created it;
    /// `settle`: the saga is compensating, so a refusal means "not created".
    Create { lookup: bool, settle: bool },
    /// Cancel it.
    Cancel,
}

/// What a part's action came to.
#[derive(Debug, Clone)]
enum Outcome {
    Created {
        platform_order_id: Option<String>,
        status: Option<String>,
        found: bool,
    },
    Retry(String),
    Refused(String),
    Cancelled(String),
    CancelFailed(String),
}

/// The order saga of one gateway instance: the HTTP handlers use it to check and record
/// orders, and its worker resumes every saga with work left.
pub struct Orders {
    engine: Arc<Engine>,
    plan: Arc<ArcSwap<Plan>>,
    targets: Arc<Vec<TargetSettings>>,
    notify: Option<Arc<tokio::sync::Notify>>,
    settings: OrderSettings,
    owner: String,
    running: Mutex<HashSet<String>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Orders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orders")
            .field("owner", &self.owner)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Why `paid` refused an order.
#[derive(Debug)]
pub enum PaidError {
    /// The input is not a valid order, or names SKUs no platform owns.
    Problem(Box<Problem>),
    /// The order was recorded before with another content.
    Conflict(String),
}

impl From<Problem> for PaidError {
    fn from(p: Problem) -> Self {
        PaidError::Problem(Box::new(p))
    }
}

/// Removes the in-process mark of a running saga when its run ends.
struct Running<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

fn store_problem(e: StoreError) -> Problem {
    tracing::error!("{e}");
    Problem::new(
        ProblemKind::StoreUnavailable,
        "the gateway's store failed; see the gateway's log",
    )
}

/// Checks an order id from a URL path.
pub fn check_order_id(order_id: &str) -> Result<(), Problem> {
    if order_id.is_empty() || order_id.chars().count() > 128 {
        return Err(Problem::new(
            ProblemKind::InvalidInput,
            "an order id has 1 to 128 characters",
        ));
    }
    if order_id.chars().any(char::is_control) {
        return Err(Problem::new(
            ProblemKind::InvalidInput,
            "an order id cannot contain control characters",
        ));
    }
    Ok(())
}

impl Orders {
    /// The saga of one instance, with a fresh owner id for its leases.
    pub fn new(
        engine: Arc<Engine>,
        plan: Arc<ArcSwap<Plan>>,
        targets: Arc<Vec<TargetSettings>>,
        notify: Option<Arc<tokio::sync::Notify>>,
        settings: OrderSettings,
    ) -> Self {
        Orders {
            engine,
            plan,
            targets,
            notify,
            settings,
            owner: format!("saga-{}", uuid::Uuid::new_v4()),
            running: Mutex::new(HashSet::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_RUNNING)),
        }
    }

    /// Where the saga reports its ends, retries and failed cancels (the engine's observer).
    fn observer(&self) -> &Observer {
        self.engine.observer()
    }

    fn store(&self) -> &Store {
        self.engine.store()
    }

    // -------------------------------------------------------------- check

    /// Whether each line of an order can be fulfilled: the lines are routed by SKU to their
    /// platforms and each platform is asked `inventory.get` at once, concurrently. Changes
    /// nothing. `lines` are `{"sku_id", "quantity"}` objects (other members are ignored).
    pub async fn check(&self, order_id: &str, body: &Value) -> Result<Value, Problem> {
        check_order_id(order_id)?;
        let lines = parse_lines(body)?;
        // Wanted units per SKU, and the SKUs of each platform.
        let mut wanted: Vec<(String, i64)> = Vec::new();
        for (sku, q) in &lines {
            match wanted.iter_mut().find(|(s, _)| s == sku) {
                Some((_, n)) => *n = n.saturating_add(*q),
                None => wanted.push((sku.clone(), *q)),
            }
        }
        let mut owner_of: Vec<(String, Result<String, String>)> = Vec::new();
        let mut by_platform: Vec<(String, Vec<String>)> = Vec::new();
        for (sku, _) in &wanted {
            let owners = self
                .engine
                .ids()
                .owners("sku", sku)
                .await
                .map_err(store_problem)?;
            let owner = match owners.as_slice() {
                [(p, _)] => Ok(p.clone()),
                [] => Err(format!(
                    "sku '{sku}' belongs to no platform (no key mapping)"
                )),
                _ => Err(format!("sku '{sku}' is mapped on several platforms")),
            };
            if let Ok(p) = &owner {
                match by_platform.iter_mut().find(|(bp, _)| bp == p) {
                    Some((_, skus)) => skus.push(sku.clone()),
                    None => by_platform.push((p.clone(), vec![sku.clone()])),
                }
            }
            owner_of.push((sku.clone(), owner));
        }
        let plan = self.plan.load_full();
        let calls = by_platform.iter().map(|(p, skus)| {
            let plan = &plan;
            async move {
                let Some(platform) = plan.platforms.get(p) else {
                    return Err(format!("platform '{p}' is not loaded"));
                };
                let input = json!({ "sku_ids": skus });
                match self
                    .engine
                    .call(platform, "inventory.get", &input, false)
                    .await
                {
                    Ok(CallOutcome::Output(v)) => Ok(v),
                    Ok(CallOutcome::DryRun(_)) => Err("no answer".to_string()),
                    Err(problem) => Err(problem.detail),
                }
            }
        });
        let answers = futures::future::join_all(calls).await;
        let stock = |platform: &str, sku: &str| -> Result<i64, String> {
            let i = by_platform
                .iter()
                .position(|(p, _)| p == platform)
                .ok_or_else(|| "not asked".to_string())?;
            let answer = answers
                .get(i)
                .ok_or_else(|| "not asked".to_string())?
                .as_ref()
                .map_err(|e| format!("the stock could not be read: {e}"))?;
            Ok(answer
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|item| item.get("sku_id").map(text_of).as_deref() == Some(sku))
                .filter_map(|item| item.get("available").and_then(Value::as_i64))
                .sum())
        };
        let mut all = true;
        let mut out = Vec::new();
        for (sku, q) in &lines {
            let total = wanted
                .iter()
                .find(|(s, _)| s == sku)
                .map_or(*q, |(_, n)| *n);
            let owner = owner_of
                .iter()
                .find(|(s, _)| s == sku)
                .map(|(_, o)| o.clone())
                .unwrap_or_else(|| Err("not routed".into()));
            let line = match owner {
                Err(reason) => {
                    json!({"sku_id": sku, "quantity": q, "fulfillable": false, "reason": reason})
                }
                Ok(platform) => match stock(&platform, sku) {
                    Err(reason) => {
                        json!({"sku_id": sku, "quantity": q, "platform": platform, "fulfillable": false, "reason": reason})
                    }
                    Ok(available) if available >= total => {
                        json!({"sku_id": sku, "quantity": q, "platform": platform, "available": available, "fulfillable": true})
                    }
                    Ok(available) => {
                        json!({"sku_id": sku, "quantity": q, "platform": platform, "available": available, "fulfillable": false,
                        "reason": format!("{available} available, {total} wanted")})
                    }
                },
            };
            all &= line.get("fulfillable") == Some(&Value::Bool(true));
            out.push(line);
        }
        Ok(json!({ "order_id": order_id, "fulfillable": all, "lines": out }))
    }

    // -------------------------------------------------------------- paid

    /// Records the saga of a paid order (`input` is its `order.create` input) and returns its
    /// state; the caller answers 202 and starts [`Orders::advance`]. Recording the same order
    /// again answers the saga as it is.
    pub async fn paid(&self, order_id: &str, mut input: Value) -> Result<Saga, PaidError> {
        check_order_id(order_id).map_err(PaidError::from)?;
        let Some(obj) = input.as_object_mut() else {
            return Err(PaidError::from(Problem::new(
                ProblemKind::InvalidInput,
                "the body is the order.create input of the order: a JSON object",
            )));
        };
        match obj.get("order_id") {
            None => {
                obj.insert("order_id".into(), Value::String(order_id.into()));
            }
            Some(v) if v.as_str() == Some(order_id) => {}
            Some(_) => {
                return Err(PaidError::from(Problem::new(
                    ProblemKind::InvalidInput,
                    format!("the body's order_id is not the order id of the URL ('{order_id}')"),
                )));
            }
        }
        let n = obj
            .get("lines")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if n > MAX_LINES {
            return Err(PaidError::from(Problem::new(
                ProblemKind::InvalidInput,
                format!("an order has at most {MAX_LINES} lines ({n} given)"),
            )));
        }
        let errors = crate::canonical::input_problems("order.create", &input);
        if !errors.is_empty() {
            let mut p = Problem::new(
                ProblemKind::InvalidInput,
                format!(
                    "the order is not a valid order.create input: {}",
                    errors.join("; ")
                ),
            );
            p.errors = errors;
            return Err(PaidError::from(p));
        }
        let id = flow_id(order_id);
        if let Some(existing) = self
            .store()
            .flow_get(&id)
            .await
            .map_err(|e| PaidError::from(store_problem(e)))?
        {
            return self.same_order(existing.state, &input);
        }
        let routed = self
            .engine
            .split("order.create", &input)
            .await
            .map_err(PaidError::from)?;
        let now = now_ms();
        let deadline_ms = now.saturating_add(ms(self.settings.create_deadline));
        let mut saga = Saga {
            order_id: order_id.into(),
            state: SagaState::Creating,
            reason: None,
            paid_at: rfc3339_ms(now),
            deadline: rfc3339_ms(deadline_ms),
            deadline_ms,
            reported: false,
            input: input.clone(),
            parts: routed
                .into_iter()
                .map(|r| Part {
                    platform: r.platform,
                    sku_ids: r.ids,
                    input: r.input,
                    state: PartState::Pending,
                    platform_order_id: None,
                    status: None,
                    create_attempts: 0,
                    cancel_attempts: 0,
                    error: None,
                    retry_at: None,
                    retry_at_ms: None,
                })
                .collect(),
            steps: Vec::new(),
            steps_dropped: 0,
        };
        saga.step(now, None, "paid", "recorded", None);
        let state = serde_json::to_value(&saga).map_err(|e| {
            PaidError::from(Problem::new(ProblemKind::Configuration, e.to_string()))
        })?;
        match self
            .store()
            .flow_save_due(&id, KIND, &state, None, now, Some(now))
            .await
        {
            Ok(_) => Ok(saga),
            // Recorded a moment ago by another request.
            Err(StoreError::Conflict { .. }) => match self.store().flow_get(&id).await {
                Ok(Some(f)) => self.same_order(f.state, &input),
                Ok(None) => Err(PaidError::Conflict(
                    "the order is being recorded; try again".into(),
                )),
                Err(e) => Err(PaidError::from(store_problem(e))),
            },
            Err(e) => Err(PaidError::from(store_problem(e))),
        }
    }

    fn same_order(&self, state: Value, input: &Value) -> Result<Saga, PaidError> {
        let saga: Saga = serde_json::from_value(state).map_err(|e| {
            PaidError::from(Problem::new(
                ProblemKind::Configuration,
                format!("the stored saga cannot be read: {e}"),
            ))
        })?;
        if &saga.input == input {
            Ok(saga)
        } else {
            Err(PaidError::Conflict(format!(
                "order '{}' was recorded as paid before with other content; an order is paid once",
                saga.order_id
            )))
        }
    }

    /// The stored saga of `order_id` with its version and last update, as `GET
    /// /v1/orders/{order_id}` shows it.
    pub async fn get(&self, order_id: &str) -> Result<Option<Value>, Problem> {
        check_order_id(order_id)?;
        let Some(flow) = self
            .store()
            .flow_get(&flow_id(order_id))
            .await
            .map_err(store_problem)?
        else {
            return Ok(None);
        };
        let mut v = flow.state;
        if let Some(obj) = v.as_object_mut() {
            obj.remove("deadline_ms");
            obj.remove("input");
            if let Some(parts) = obj.get_mut("parts").and_then(Value::as_array_mut) {
                for p in parts.iter_mut().filter_map(Value::as_object_mut) {
                    p.remove("input");
                    p.remove("retry_at_ms");
                }
            }
            obj.insert("version".into(), json!(flow.version));
            obj.insert("updated_at".into(), json!(rfc3339_ms(flow.updated_at)));
        }
        Ok(Some(v))
    }

    // -------------------------------------------------------------- the worker

    /// Runs the saga of `order_id` as far as it can go now, unless another run (here or in
    /// another instance) holds it.
    pub async fn advance(self: &Arc<Self>, order_id: &str) {
        let id = flow_id(order_id);
        self.advance_flow(&id).await;
    }

    async fn advance_flow(self: &Arc<Self>, id: &str) {
        {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if !running.insert(id.to_string()) {
                return;
            }
        }
        let _mark = Running {
            set: &self.running,
            id: id.to_string(),
        };
        for _ in 0..MAX_ROUNDS {
            match self.round(id).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(saga = %id, "the saga stops for now: {e}");
                    break;
                }
            }
        }
        if let Err(e) = self.store().flow_release(id, &self.owner).await {
            tracing::warn!(saga = %id, "{e}");
        }
    }

    /// Resumes every saga with work due, every `orders.poll`, until `stop` resolves.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(self.settings.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {}
            }
            let due = match self
                .store()
                .flows_due(KIND, now_ms(), i64::try_from(MAX_RUNNING).unwrap_or(32))
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!("cannot look for unfinished sagas: {e}");
                    continue;
                }
            };
            for id in due {
                let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                    break;
                };
                let me = self.clone();
                tokio::spawn(async move {
                    me.advance_flow(&id).await;
                    drop(slot);
                });
            }
        }
    }

    async fn load(&self, id: &str) -> Result<Option<(Saga, i64)>, String> {
        let Some(flow) = self.store().flow_get(id).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let saga: Saga = serde_json::from_value(flow.state)
            .map_err(|e| format!("the stored saga cannot be read: {e}"))?;
        Ok(Some((saga, flow.version)))
    }

    async fn save(
        &self,
        id: &str,
        saga: &Saga,
        version: i64,
        due: Option<i64>,
    ) -> Result<i64, StoreError> {
        let state = serde_json::to_value(saga).unwrap_or(Value::Null);
        self.store()
            .flow_save_due(id, KIND, &state, Some(version), now_ms(), due)
            .await
    }

    fn retry_safe(&self, plan: &Plan, platform: &str) -> bool {
        plan.platforms
            .get(platform)
            .and_then(|p| p.operations.get("order.create"))
            .is_some_and(|op| op.transport.retry_safe)
    }

    fn wait(&self, attempts: u32) -> Duration {
        let n = attempts.saturating_sub(1).min(20);
        self.settings
            .retry
            .saturating_mul(1u32 << n)
            .min(self.settings.retry_max)
    }

    /// One round: take the lease, move the saga on, record the actions due, run them
    /// concurrently and record their outcomes. `Ok(true)`: more may be due at once.
    async fn round(&self, id: &str) -> Result<bool, String> {
        let now = now_ms();
        let lease = ms(self.settings.lease);
        if !self
            .store()
            .flow_lease(id, &self.owner, now, lease)
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(false);
        }
        let Some((mut saga, version)) = self.load(id).await? else {
            return Ok(false);
        };
        let before = saga.clone();
        saga.transition(now, self.settings.create_deadline);
        let plan = self.plan.load_full();
        let actions = self.actions(&saga, &plan, now);
        if saga.finished() || actions.is_empty() {
            let report = saga.state == SagaState::Compensating && !saga.reported;
            if report {
                self.report(&mut saga, now).await?;
                saga.transition(now, self.settings.create_deadline);
            }
            if saga.state == SagaState::Created && before.state != SagaState::Created {
                self.observer()
                    .flow(&FlowSeen::SagaEnded { outcome: "created" });
            }
            let due = saga.next_due(now);
            if saga != before || due.is_none() {
                match self.save(id, &saga, version, due).await {
                    Ok(_) => {}
                    Err(StoreError::Conflict { .. }) => return Ok(true),
                    Err(e) => return Err(e.to_string()),
                }
            } else if let Some(d) = due {
                // Nothing changed: only the due time.
                match self.save(id, &saga, version, Some(d)).await {
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            return Ok(report);
        }
        // Every action is recorded before it is acted on.
        for (i, action) in &actions {
            let Some(part) = saga.parts.get_mut(*i) else {
                continue;
            };
            part.retry_at = None;
            part.retry_at_ms = None;
            let platform = part.platform.clone();
            let step = match action {
                Action::Create { .. } => {
                    part.state = PartState::Creating;
                    part.create_attempts = part.create_attempts.saturating_add(1);
                    "order.create"
                }
                Action::Cancel => {
                    part.state = PartState::Cancelling;
                    part.cancel_attempts = part.cancel_attempts.saturating_add(1);
                    "order.cancel"
                }
            };
            saga.step(now, Some(&platform), step, "started", None);
        }
        let version = match self.save(id, &saga, version, Some(now)).await {
            Ok(v) => v,
            // Changed meanwhile (a callback, or another instance): start the round again.
            Err(StoreError::Conflict { .. }) => return Ok(true),
            Err(e) => return Err(e.to_string()),
        };
        let reason = saga.reason.clone().unwrap_or_default();
        let order_id = saga.order_id.clone();
        let calls = actions.iter().map(|(i, action)| {
            let part = saga.parts.get(*i).cloned();
            let plan = &plan;
            let reason = &reason;
            let order_id = &order_id;
            async move {
                let outcome = match part {
                    Some(part) => self.act(plan, order_id, &part, *action, reason).await,
                    None => Outcome::Retry("no such part".into()),
                };
                (*i, *action, outcome)
            }
        });
        let outcomes = futures::future::join_all(calls).await;
        let compensating = saga.state == SagaState::Compensating;
        // Recorded on the latest state: a callback may have updated the saga meanwhile.
        let mut version = version;
        for _ in 0..8 {
            let now = now_ms();
            self.apply(&mut saga, &outcomes, now);
            if compensating && !saga.reported {
                self.report(&mut saga, now).await?;
            }
            match self.save(id, &saga, version, Some(now)).await {
                Ok(_) => return Ok(true),
                Err(StoreError::Conflict { .. }) => {
                    let Some((fresh, v)) = self.load(id).await? else {
                        return Ok(false);
                    };
                    saga = fresh;
                    version = v;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("the saga kept changing while its outcomes were recorded".into())
    }

    /// The actions due now, by part index.
    fn actions(&self, saga: &Saga, plan: &Plan, now: i64) -> Vec<(usize, Action)> {
        let due = |p: &Part| p.retry_at_ms.is_none_or(|t| t <= now);
        let mut out = Vec::new();
        for (i, p) in saga.parts.iter().enumerate() {
            let lookup = p.create_attempts > 0 && !self.retry_safe(plan, &p.platform);
            let action = match (saga.state, p.state) {
                (SagaState::Creating, PartState::Pending) => Some(Action::Create {
                    lookup: false,
                    settle: false,
                }),
                (SagaState::Creating, PartState::Creating) if due(p) => Some(Action::Create {
                    lookup,
                    settle: false,
                }),
                (SagaState::Compensating, PartState::Creating) if due(p) => Some(Action::Create {
                    lookup,
                    settle: true,
                }),
                (SagaState::Compensating, PartState::Created | PartState::Cancelling) if due(p) => {
                    Some(Action::Cancel)
                }
                _ => None,
            };
            if let Some(a) = action {
                out.push((i, a));
            }
        }
        // The order center hears of the cancellation once the created parts were asked to
        // cancel, without waiting for parts whose creation is still being settled.
        if saga.state == SagaState::Compensating && !saga.reported {
            out.retain(|(_, a)| *a == Action::Cancel);
        }
        out
    }

    /// Runs one part's action on its platform.
    async fn act(
        &self,
        plan: &Plan,
        order_id: &str,
        part: &Part,
        action: Action,
        reason: &str,
    ) -> Outcome {
        let Some(platform) = plan.platforms.get(&part.platform) else {
            let e = format!("platform '{}' is not loaded", part.platform);
            return match action {
                Action::Cancel => Outcome::CancelFailed(e),
                Action::Create { .. } => Outcome::Retry(e),
            };
        };
        match action {
            Action::Create { lookup, .. } => {
                if lookup {
                    let input = json!({ "order_id": order_id });
                    match self.engine.call(platform, "order.get", &input, false).await {
                        Ok(CallOutcome::Output(v)) => {
                            let order = v.get("order").cloned().unwrap_or(Value::Null);
                            return Outcome::Created {
                                platform_order_id: order.get("platform_order_id").map(text_of),
                                status: order.get("status").map(text_of),
                                found: true,
                            };
                        }
                        Ok(CallOutcome::DryRun(_)) => return Outcome::Retry("no answer".into()),
                        // Asked and not there: the earlier attempt created nothing.
                        Err(p) if !p.retryable => {
                            tracing::info!(order = %order_id, platform = %part.platform, "order not found on the platform before creating again: {}", p.detail);
                        }
                        Err(p) => {
                            return Outcome::Retry(format!("looking the order up: {}", p.detail));
                        }
                    }
                }
                match self
                    .engine
                    .call(platform, "order.create", &part.input, false)
                    .await
                {
                    Ok(CallOutcome::Output(v)) => Outcome::Created {
                        platform_order_id: v.get("platform_order_id").map(text_of),
                        status: v.get("status").map(text_of),
                        found: false,
                    },
                    Ok(CallOutcome::DryRun(_)) => Outcome::Retry("no answer".into()),
                    Err(p) if p.retryable => Outcome::Retry(p.detail),
                    // A refusal: nothing was created (while compensating: nothing to cancel).
                    Err(p) => Outcome::Refused(p.detail),
                }
            }
            Action::Cancel => {
                let mut input = json!({ "order_id": order_id });
                if !reason.is_empty()
                    && let Some(obj) = input.as_object_mut()
                {
                    let short: String = reason.chars().take(500).collect();
                    obj.insert("reason".into(), Value::String(short));
                }
                match self
                    .engine
                    .call(platform, "order.cancel", &input, false)
                    .await
                {
                    Ok(CallOutcome::Output(v)) => {
                        let status = v.get("status").map(text_of).unwrap_or_default();
                        if status == "rejected" {
                            Outcome::CancelFailed("the platform rejected the cancel".into())
                        } else {
                            Outcome::Cancelled(status)
                        }
                    }
                    Ok(CallOutcome::DryRun(_)) => Outcome::CancelFailed("no answer".into()),
                    Err(p) => Outcome::CancelFailed(p.detail),
                }
            }
        }
    }

    fn apply(&self, saga: &mut Saga, outcomes: &[(usize, Action, Outcome)], now: i64) {
        let state = saga.state;
        let deadline = saga.deadline_ms;
        for (i, action, outcome) in outcomes {
            let Some(part) = saga.parts.get(*i) else {
                continue;
            };
            let platform = part.platform.clone();
            let (attempts, cancels) = (part.create_attempts, part.cancel_attempts);
            let retry_create =
                now.saturating_add(ms(self.wait(attempts)))
                    .min(if state == SagaState::Creating {
                        deadline
                    } else {
                        i64::MAX
                    });
            let retry_cancel = now.saturating_add(ms(self.wait(cancels)));
            let (step, outcome_text, error): (&str, &str, Option<String>) = {
                let Some(part) = saga.parts.get_mut(*i) else {
                    continue;
                };
                match outcome {
                    Outcome::Created {
                        platform_order_id,
                        status,
                        found,
                    } => {
                        part.state = PartState::Created;
                        part.platform_order_id = platform_order_id.clone();
                        part.status = status.clone();
                        part.error = None;
                        if *found {
                            ("order.get", "found", None)
                        } else {
                            ("order.create", "ok", None)
                        }
                    }
                    Outcome::Retry(e) => {
                        self.observer().flow(&FlowSeen::SagaStepRetried);
                        part.state = PartState::Creating;
                        part.error = Some(e.clone());
                        part.retry_at_ms = Some(retry_create);
                        part.retry_at = Some(rfc3339_ms(retry_create));
                        ("order.create", "retry", Some(e.clone()))
                    }
                    Outcome::Refused(e) => {
                        let settle = matches!(action, Action::Create { settle: true, .. });
                        part.state = if settle {
                            PartState::NotCreated
                        } else {
                            PartState::Failed
                        };
                        part.error = Some(e.clone());
                        ("order.create", "failed", Some(e.clone()))
                    }
                    Outcome::Cancelled(status) => {
                        part.state = PartState::Cancelled;
                        part.status = Some(if status == "cancelling" {
                            "cancelling".into()
                        } else {
                            "cancelled".into()
                        });
                        part.error = None;
                        ("order.cancel", "ok", None)
                    }
                    Outcome::CancelFailed(e) => {
                        self.observer().flow(&FlowSeen::SagaCancelFailed);
                        part.state = PartState::Cancelling;
                        part.error = Some(e.clone());
                        part.retry_at_ms = Some(retry_cancel);
                        part.retry_at = Some(rfc3339_ms(retry_cancel));
                        tracing::warn!(order = %saga.order_id, platform = %platform, "cancelling the order failed, it is tried again: {e}");
                        ("order.cancel", "failed", Some(e.clone()))
                    }
                }
            };
            saga.step(now, Some(&platform), step, outcome_text, error.as_deref());
        }
    }

    /// Hands `order.cancelled` to the outbox for every target that subscribes to it. The
    /// event's id is the order's, so doing this twice (after a crash) stores it once.
    async fn report(&self, saga: &mut Saga, now: i64) -> Result<(), String> {
        let reason = saga
            .reason
            .clone()
            .unwrap_or_else(|| "the order could not be created".into());
        let platform = saga
            .parts
            .iter()
            .find(|p| p.state == PartState::Failed)
            .or_else(|| saga.parts.iter().find(|p| p.state != PartState::Cancelled))
            .or(saga.parts.first())
            .map(|p| p.platform.clone())
            .unwrap_or_default();
        let at = rfc3339_ms(now);
        let idempotency_key = format!("saga:{}:order.cancelled", saga.order_id);
        let envelope = json!({
            "id": idempotency_key,
            "type": "order.cancelled",
            "platform": platform,
            "occurred_at": at,
            "received_at": at,
            "data": { "order_id": saga.order_id, "reason": reason, "at": at },
            "idempotency_key": idempotency_key,
        });
        let events: Vec<NewEvent> = self
            .targets
            .iter()
            .filter(|t| t.events.iter().any(|e| e == "order.cancelled"))
            .map(|t| NewEvent {
                event_id: format!("{idempotency_key}/{}", t.name),
                target: t.name.clone(),
                event_type: "order.cancelled".into(),
                payload: envelope.to_string(),
                idempotency_key: idempotency_key.clone(),
                max_attempts: i64::from(t.max_attempts),
            })
            .collect();
        if events.is_empty() {
            tracing::warn!(order = %saga.order_id, "no target subscribes to order.cancelled: the cancelled order is reported to no one");
        } else {
            self.store()
                .outbox_enqueue(&events, now)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(n) = &self.notify {
                n.notify_one();
            }
        }
        self.observer().flow(&FlowSeen::SagaEnded {
            outcome: "cancelled",
        });
        saga.reported = true;
        saga.step(now, None, "order.cancelled sent", "ok", Some(&reason));
        Ok(())
    }
}

/// `(sku_id, quantity)` of each line of a check body.
fn parse_lines(body: &Value) -> Result<Vec<(String, i64)>, Problem> {
    let bad = |m: String| Problem::new(ProblemKind::InvalidInput, m);
    let lines = body
        .get("lines")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("the body needs `lines`: [{\"sku_id\", \"quantity\"}, ...]".into()))?;
    if lines.is_empty() || lines.len() > MAX_LINES {
        return Err(bad(format!(
            "an order has 1 to {MAX_LINES} lines ({} given)",
            lines.len()
        )));
    }
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let sku = line
            .get("sku_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.chars().count() <= 128)
            .ok_or_else(|| {
                bad(format!(
                    "lines[{i}].sku_id must be a string of 1 to 128 characters"
                ))
            })?;
        let q = line
            .get("quantity")
            .and_then(Value::as_i64)
            .filter(|q| *q >= 1)
            .ok_or_else(|| {
                bad(format!(
                    "lines[{i}].quantity must be a whole number of at least 1"
                ))
            })?;
        out.push((sku.to_string(), q));
    }
    Ok(out)
}

/// Applies an order event from a platform (`order.shipped`, `order.cancelled`,
/// `order.status_changed`, already mapped to canonical `data`) to the saga of its order, if
/// there is one: the part of that platform takes the new status, and the history a step.
/// Events of orders the saga does not know change nothing.
pub async fn observe(
    store: &Store,
    platform: &str,
    event_type: &str,
    data: &Value,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let status = match event_type {
        "order.shipped" => "shipped".to_string(),
        "order.cancelled" => "cancelled".to_string(),
        "order.status_changed" => match data.get("status").and_then(Value::as_str) {
            Some(s) => s.to_string(),
            None => return Ok(()),
        },
        _ => return Ok(()),
    };
    let Some(order_id) = data.get("order_id").and_then(Value::as_str) else {
        return Ok(());
    };
    let id = flow_id(order_id);
    for _ in 0..8 {
        let Some(flow) = store.flow_get(&id).await? else {
            return Ok(());
        };
        let Ok(mut saga) = serde_json::from_value::<Saga>(flow.state) else {
            return Ok(());
        };
        let Some(part) = saga.parts.iter_mut().find(|p| p.platform == platform) else {
            return Ok(());
        };
        part.status = Some(status.clone());
        if let Some(pid) = data.get("platform_order_id").and_then(Value::as_str)
            && part.platform_order_id.is_none()
        {
            part.platform_order_id = Some(pid.to_string());
        }
        // The platform cancelled a created part on its own: the part is cancelled, and so is
        // the saga once no part stands (the event itself tells the order center).
        let cancelled_here = event_type == "order.cancelled" && part.state == PartState::Created;
        if cancelled_here {
            part.state = PartState::Cancelled;
        }
        let none_stands = saga.parts.iter().all(|p| {
            matches!(
                p.state,
                PartState::Cancelled | PartState::NotCreated | PartState::Failed
            )
        });
        if cancelled_here && saga.state == SagaState::Created && none_stands {
            saga.state = SagaState::Cancelled;
            if saga.reason.is_none() {
                saga.reason = Some(match data.get("reason").and_then(Value::as_str) {
                    Some(r) if !r.is_empty() => format!("cancelled by {platform}: {r}"),
                    _ => format!("cancelled by {platform}"),
                });
            }
        }
        let at = unix_ms(now);
        saga.step(
            at,
            Some(platform),
            &format!("event {event_type}"),
            &status,
            None,
        );
        let state = serde_json::to_value(&saga).unwrap_or(Value::Null);
        let due = saga.next_due(at).map(|_| at);
        match store
            .flow_save_due(&id, KIND, &state, Some(flow.version), at, due)
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
