//! Receiving platform callbacks: find the route in the current plan, verify the delivery
//! (signature, timestamp window, durable replay guard), classify and map it into a canonical
//! event, deduplicate it, store the delivery and its events for every subscribed target in one
//! transaction, and only then answer with the acknowledgement the platform expects.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tracing::Instrument;

use crate::compile::gateway::TargetSettings;
use crate::config::platform::BodyFormat;
use crate::credentials::Credentials;
use crate::engine::decode;
use crate::ids::Ids;
use crate::observe::{CallbackOutcome, CallbackSeen, Observer, Refusal};
use crate::plan::{AckPlan, CallbackPlan, DiscriminatorPlan, Plan, PlatformPlan};
use crate::recipe::{Parts, Rejection, RunEnv};
use crate::store::{InboxOutcome, NewDelivery, NewEvent, StockCheck};
use crate::template::text_of;
use crate::timefmt::unix_ms;

/// A delivery as received.
#[derive(Debug, Clone, Default)]
pub struct Inbound {
    /// HTTP method.
    pub method: String,
    /// The route after `/callbacks`, such as `/acme/notify`.
    pub route: String,
    /// The full URL as received, with its query string (scheme and host as the sender used
    /// them). When empty, `/callbacks{route}` and the query string stand for it.
    pub url: String,
    /// The query string exactly as received, without the `?`.
    pub raw_query: String,
    /// Query parameters, decoded; when empty they are read from `raw_query` (after the
    /// route's field limit is checked).
    pub query: Vec<(String, String)>,
    /// Headers as received.
    pub headers: Vec<(String, String)>,
    /// The exact body; when `over_limit` is set, at most its first bytes.
    pub body: Vec<u8>,
    /// Set when the body was larger than the route's `limits.body`: the size declared or
    /// read before reading stopped.
    pub over_limit: Option<u64>,
}

/// The answer to a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Content type.
    pub content_type: String,
    /// Body.
    pub body: Vec<u8>,
    /// How the delivery ended, as reported to the observer.
    pub outcome: CallbackOutcome,
}

impl Reply {
    /// The gateway could not handle the delivery: the sender should try again later.
    fn error(status: u16, message: &str) -> Reply {
        Reply::refusal(status, message, CallbackOutcome::Error)
    }

    fn refusal(status: u16, message: &str, outcome: CallbackOutcome) -> Reply {
        Reply {
            status,
            content_type: "application/json".into(),
            body: json!({ "error": message }).to_string().into_bytes(),
            outcome,
        }
    }
}

/// Finds the platform and callback of `route` in `plan`.
pub fn find<'p>(plan: &'p Plan, route: &str) -> Option<(&'p Arc<PlatformPlan>, &'p CallbackPlan)> {
    plan.platforms
        .values()
        .find_map(|p| p.callbacks.iter().find(|c| c.path == route).map(|c| (p, c)))
}

/// Records a refused delivery (never acknowledged, never an event; at most the start of its
/// body is kept) and makes its answer.
async fn refused(
    store: &crate::store::Store,
    mut d: NewDelivery,
    status: u16,
    why: Refusal,
    reason: String,
) -> Reply {
    tracing::warn!(platform = %d.platform, route = %d.route, "delivery refused: {reason}");
    d.rejection = Some(reason.clone());
    d.verified = false;
    d.body.truncate(crate::store::KEPT_BODY_BYTES);
    if let Err(e) = store.inbox_record(&d, &[], d.received_at).await {
        tracing::error!("cannot record a refused delivery: {e}");
    }
    Reply::refusal(status, &reason, CallbackOutcome::Refused(why))
}

/// A delivery over one of its route's limits, with the reason; `fallback` is the status of a
/// route without `verify` (otherwise its `reject_status` is answered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverLimit {
    /// Why.
    pub reason: String,
    /// Status of a route without `verify`.
    pub fallback: u16,
}

/// Checks a delivery against its route's limits on the raw bytes, building nothing: body
/// size, number of query parameters and form fields, nesting depth of JSON or XML.
pub fn check_limits(cb: &CallbackPlan, inbound: &Inbound) -> Result<(), OverLimit> {
    let l = &cb.limits;
    if let Some(n) = inbound.over_limit {
        return Err(OverLimit {
            reason: format!(
                "the body ({n} bytes or more) is larger than {} bytes, this route's limits.body",
                l.body
            ),
            fallback: 413,
        });
    }
    if inbound.body.len() > l.body {
        return Err(OverLimit {
            reason: format!(
                "the body ({} bytes) is larger than {} bytes, this route's limits.body",
                inbound.body.len(),
                l.body
            ),
            fallback: 413,
        });
    }
    let fields = |what: &str| OverLimit {
        reason: format!(
            "the {what} has more than {} fields, this route's limits.fields",
            l.fields
        ),
        fallback: 400,
    };
    if decode::count_pairs(inbound.raw_query.as_bytes(), l.fields) > l.fields
        || inbound.query.len() > l.fields
    {
        return Err(fields("query string"));
    }
    let depth = |e: String| OverLimit {
        reason: format!("{e}, this route's limits.depth"),
        fallback: 400,
    };
    match cb.format {
        BodyFormat::Form => {
            if decode::count_pairs(&inbound.body, l.fields) > l.fields {
                return Err(fields("form body"));
            }
        }
        BodyFormat::Json => decode::json_depth_within(&inbound.body, l.depth).map_err(depth)?,
        BodyFormat::Xml => decode::xml_depth_within(&inbound.body, l.depth).map_err(depth)?,
        BodyFormat::Text => {}
    }
    Ok(())
}

/// The recipe parts of a delivery that is within its route's limits: the form fields are
/// decoded (bounded by the limits) only for a form route, whose recipes may read them.
pub fn parts_of(cb: &CallbackPlan, inbound: Inbound) -> Result<Parts, decode::DecodeError> {
    let query = if inbound.query.is_empty() && !inbound.raw_query.is_empty() {
        decode::form_pairs(inbound.raw_query.as_bytes())?
    } else {
        inbound.query
    };
    let form = if cb.format == BodyFormat::Form {
        decode::form_pairs(&inbound.body)?
    } else {
        Vec::new()
    };
    let path = format!("/callbacks{}", inbound.route);
    let url = if inbound.url.is_empty() {
        if inbound.raw_query.is_empty() {
            path.clone()
        } else {
            format!("{path}?{}", inbound.raw_query)
        }
    } else {
        inbound.url
    };
    Ok(Parts {
        method: inbound.method,
        url,
        path,
        query,
        raw_query: inbound.raw_query,
        form,
        headers: inbound.headers,
        body: inbound.body,
    })
}

/// The document of a verified delivery, decoded per its route's `format`: an empty body (a
/// handshake) is an empty object; a form body reuses its decoded fields.
pub fn document_of(cb: &CallbackPlan, parts: &Parts) -> Result<Value, decode::DecodeError> {
    if parts.body.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match cb.format {
        BodyFormat::Form => Ok(decode::form_document(parts.form.clone())),
        f => decode::decode_within(f, &parts.body, cb.limits.depth),
    }
}

/// What callbacks need of the rest of the gateway: credentials to verify deliveries, ids to
/// translate the platform's ids in events (and, through it, the store).
#[derive(Clone, Copy)]
pub struct Services<'a> {
    /// The credentials room.
    pub credentials: &'a Credentials,
    /// The id translation room.
    pub ids: &'a Ids,
    /// Where the outcome of each delivery is reported.
    pub observer: &'a Observer,
    /// The gateway-wide monitoring defaults (stock thresholds of `inventory.changed`).
    pub monitoring: &'a crate::plan::MonitoringPlan,
}

/// Handles one delivery. `notify` is called when new events were stored.
///
/// The order keeps a hostile delivery cheap: the route's limits are checked on the raw bytes,
/// then the signature is verified (on the raw body, or on the form fields of a form route),
/// and only a verified delivery is decoded, mapped and stored in full.
///
/// How it ended is reported to the services' observer (a delivery to a route that does not
/// exist is not: its path is the sender's, not the configuration's).
pub async fn receive(
    plan: &Plan,
    services: impl Into<Services<'_>>,
    targets: &[TargetSettings],
    inbound: Inbound,
    now: OffsetDateTime,
    notify: &(dyn Fn() + Send + Sync),
) -> Reply {
    let Some((platform, cb)) = find(plan, &inbound.route) else {
        return Reply::refusal(
            404,
            "no callback route here",
            CallbackOutcome::Refused(Refusal::Malformed),
        );
    };
    let services: Services<'_> = services.into();
    // A trace of its own: a platform's `traceparent` is not believed (see crate::telemetry).
    let span = tracing::info_span!(
        parent: None,
        "entrepot.callback",
        otel.kind = "server",
        platform = %platform.name,
        route = %cb.path,
        event_type = tracing::field::Empty,
        outcome = tracing::field::Empty,
        refusal = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let reply = receive_at(platform, cb, services, targets, inbound, now, notify)
        .instrument(span.clone())
        .await;
    span.record("outcome", reply.outcome.as_str());
    match reply.outcome {
        CallbackOutcome::Refused(why) => {
            span.record("refusal", why.as_str());
        }
        CallbackOutcome::Error => {
            span.record("otel.status_code", "error");
        }
        CallbackOutcome::Accepted | CallbackOutcome::Duplicate => {}
    }
    services.observer.callback(&CallbackSeen {
        platform: &platform.name,
        route: &cb.path,
        outcome: reply.outcome,
    });
    reply
}

async fn receive_at(
    platform: &PlatformPlan,
    cb: &CallbackPlan,
    services: Services<'_>,
    targets: &[TargetSettings],
    inbound: Inbound,
    now: OffsetDateTime,
    notify: &(dyn Fn() + Send + Sync),
) -> Reply {
    let store = services.ids.store();
    let headers_json = {
        let m: Map<String, Value> = inbound
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), Value::String(v.clone())))
            .collect();
        Value::Object(m).to_string()
    };
    let body_bytes = inbound
        .over_limit
        .unwrap_or(u64::try_from(inbound.body.len()).unwrap_or(u64::MAX));
    let mut delivery = NewDelivery {
        platform: platform.name.clone(),
        route: cb.path.clone(),
        dedupe_key: None,
        headers: headers_json,
        body: Vec::new(),
        body_bytes: i64::try_from(body_bytes).unwrap_or(i64::MAX),
        verified: false,
        rejection: None,
        event_type: None,
        received_at: unix_ms(now),
        replay: None,
    };
    let reject_status = cb.verify.as_ref().map(|v| v.reject_status);
    let refuse = |mut d: NewDelivery, body: &[u8], status: u16, why: Refusal, reason: String| {
        d.body = body
            .get(..crate::store::KEPT_BODY_BYTES)
            .unwrap_or(body)
            .to_vec();
        refused(store, d, status, why, reason)
    };

    if let Err(over) = check_limits(cb, &inbound) {
        let status = reject_status.unwrap_or(over.fallback);
        return refuse(
            delivery,
            &inbound.body,
            status,
            Refusal::Limits,
            over.reason,
        )
        .await;
    }
    let start = inbound
        .body
        .get(..crate::store::KEPT_BODY_BYTES)
        .unwrap_or(&inbound.body)
        .to_vec();
    let parts = match parts_of(cb, inbound) {
        Ok(p) => p,
        Err(e) => {
            let status = reject_status.unwrap_or(400);
            return refuse(delivery, &start, status, Refusal::Malformed, e.to_string()).await;
        }
    };
    if let Some(verify) = &cb.verify {
        let creds = services.credentials.credentials_for(platform);
        let env = RunEnv {
            credentials: &creds,
            settings: &platform.settings,
            platform: &platform.name,
            now,
            nonce: None,
        };
        // During a rotation window the previous credentials verify too.
        let previous = services.credentials.previous_credentials_for(platform, now);
        let result = match (verify.verify(&parts, &env), &previous) {
            (Err(Rejection::Mismatch), Some(prev)) => {
                let env = RunEnv {
                    credentials: prev,
                    settings: &platform.settings,
                    platform: &platform.name,
                    now,
                    nonce: None,
                };
                verify.verify(&parts, &env)
            }
            (r, _) => r,
        };
        if let Err(r) = result {
            if let Rejection::Recipe(e @ crate::recipe::RecipeError::Step { .. }) = &r {
                // The gateway's own setup failed (an unreadable key in a credential...): the
                // reason is logged and recorded; the sender only learns to try again later.
                let _ = refuse(
                    delivery,
                    &parts.body,
                    503,
                    Refusal::Signature,
                    format!("the recipe could not run: {e}"),
                )
                .await;
                return Reply::error(
                    503,
                    "this delivery cannot be verified right now; try again later",
                );
            }
            let why = match r {
                Rejection::BadTimestamp(_) | Rejection::Stale { .. } => Refusal::Timestamp,
                Rejection::Replayed => Refusal::Replay,
                _ => Refusal::Signature,
            };
            return refuse(
                delivery,
                &parts.body,
                verify.reject_status,
                why,
                r.to_string(),
            )
            .await;
        }
        // The durable replay guard: a key seen before (and not expired) is a replay.
        if let Some((_, ttl)) = &verify.replay {
            let key = match verify.replay_key(&parts, &env) {
                Ok(Some(k)) if !k.is_empty() => k,
                _ => {
                    return refuse(
                        delivery,
                        &parts.body,
                        verify.reject_status,
                        Refusal::Replay,
                        "the delivery has no replay key".into(),
                    )
                    .await;
                }
            };
            let expires =
                unix_ms(now).saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
            // Recorded in the same transaction as the delivery: a delivery that could not be
            // stored (and so was not acknowledged) does not burn its key.
            delivery.replay = Some((format!("{}:{key}", platform.name), expires));
        }
    }
    // Decoded only now that it is verified.
    let doc = match document_of(cb, &parts) {
        Ok(d) => d,
        Err(e) => {
            return refuse(
                delivery,
                &parts.body,
                400,
                Refusal::Malformed,
                e.to_string(),
            )
            .await;
        }
    };
    delivery.verified = true;
    let mut ctx = delivery_context(platform, &doc, &parts.headers, &parts.query);
    // A handshake is answered at once and never stored: it needs no dedupe key.
    if let Some(h) = &cb.handshake
        && value_of(&h.value, &doc, &parts.headers).as_deref() == Some(h.equals.as_str())
    {
        ctx.insert("event_type".into(), Value::String(h.equals.clone()));
        return match answer(&h.ack, &Value::Object(ctx)) {
            Ok(reply) => {
                tracing::info!(platform = %platform.name, route = %cb.path, "handshake '{}' answered", h.equals);
                reply
            }
            Err(e) => {
                let reason = format!("the handshake's answer cannot be written: {e}");
                refuse(delivery, &parts.body, 400, Refusal::Malformed, reason).await
            }
        };
    }
    // The acknowledgement is written before the delivery is stored: a delivery that is
    // stored is always acknowledged.
    let raw_type = value_of(&cb.event_type, &doc, &parts.headers).unwrap_or_default();
    let ack = cb.acks.get(&raw_type).unwrap_or(&cb.ack);
    ctx.insert("event_type".into(), Value::String(raw_type));
    let reply = match answer(ack, &Value::Object(ctx)) {
        Ok(r) => r,
        Err(e) => {
            let reason = format!("the acknowledgement cannot be written: {e}");
            return refuse(delivery, &parts.body, 400, Refusal::Malformed, reason).await;
        }
    };
    let spec = Ingest {
        event_type: &cb.event_type,
        events: &cb.events,
        dedupe_key: cb.dedupe_key.as_ref(),
        replay_status: reject_status.unwrap_or(401),
        occurred_at: cb.occurred_at.as_ref(),
    };
    let Parts {
        headers,
        query,
        body,
        ..
    } = parts;
    delivery.body = body;
    match ingest(
        platform, &spec, services, targets, delivery, &doc, &headers, &query, now, notify,
    )
    .await
    {
        Ok(outcome) => Reply { outcome, ..reply },
        Err(refusal) => refusal,
    }
}

/// An acknowledgement rendered over a delivery.
fn answer(ack: &AckPlan, ctx: &Value) -> Result<Reply, String> {
    let status = ack.status.render(ctx)?;
    let status = AckPlan::http_status(&status)
        .ok_or_else(|| format!("the status '{status}' is not an HTTP status (100 to 599)"))?;
    Ok(Reply {
        status,
        content_type: ack.content_type.clone(),
        body: ack.body.render(ctx)?.into_bytes(),
        outcome: CallbackOutcome::Accepted,
    })
}

/// The variables of a delivery's templates (dedupe key, acknowledgements).
fn delivery_context(
    platform: &PlatformPlan,
    doc: &Value,
    headers: &[(String, String)],
    query: &[(String, String)],
) -> Map<String, Value> {
    let mut ctx = Map::new();
    ctx.insert("body".into(), doc.clone());
    ctx.insert(
        "headers".into(),
        Value::Object(
            headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), Value::String(v.clone())))
                .collect(),
        ),
    );
    // A repeated query parameter is an array of its values, as in form bodies.
    ctx.insert("query".into(), decode::form_document(query.to_vec()));
    ctx.insert("settings".into(), Value::Object(platform.settings.clone()));
    ctx.insert("platform".into(), Value::String(platform.name.clone()));
    ctx
}

/// The value a discriminator reads from a delivery, as text.
fn value_of(d: &DiscriminatorPlan, doc: &Value, headers: &[(String, String)]) -> Option<String> {
    match (&d.path, &d.header) {
        (Some(p), _) => p.first(doc).map(text_of),
        (None, Some(h)) => headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(h))
            .map(|(_, v)| v.clone()),
        (None, None) => None,
    }
}

/// What turns a verified delivery into events: shared by callbacks and pollers.
pub struct Ingest<'a> {
    /// Where the event type comes from.
    pub event_type: &'a crate::plan::DiscriminatorPlan,
    /// Event mappings.
    pub events: &'a indexmap::IndexMap<String, crate::plan::MappingPlan>,
    /// Deduplication key template.
    pub dedupe_key: Option<&'a crate::template::CompiledTemplate>,
    /// Status answered to a delivery refused as a replay (the route's `reject_status`).
    pub replay_status: u16,
    /// Where the event time is (absent: the receive time).
    pub occurred_at: Option<&'a crate::plan::MappingPlan>,
}

/// Stores a verified delivery: deduplicated, classified, mapped into events for every
/// subscribed target, all in one transaction. `Err` carries the answer for a refusal.
#[allow(clippy::too_many_arguments)]
pub async fn ingest(
    platform: &PlatformPlan,
    spec: &Ingest<'_>,
    services: Services<'_>,
    targets: &[TargetSettings],
    mut delivery: NewDelivery,
    doc: &Value,
    headers: &[(String, String)],
    query: &[(String, String)],
    now: OffsetDateTime,
    notify: &(dyn Fn() + Send + Sync),
) -> Result<CallbackOutcome, Reply> {
    let store = services.ids.store();
    let refuse = |d: NewDelivery, status: u16, reason: String| {
        refused(store, d, status, Refusal::Malformed, reason)
    };

    let ctx = Value::Object(delivery_context(platform, doc, headers, query));
    delivery.dedupe_key = match &spec.dedupe_key {
        Some(t) => match t.render(&ctx) {
            Ok(k) if !k.is_empty() => Some(k),
            Ok(_) => {
                return Err(refuse(
                    delivery,
                    400,
                    "the delivery has no deduplication key".into(),
                )
                .await);
            }
            Err(e) => {
                return Err(refuse(
                    delivery,
                    400,
                    format!("the deduplication key cannot be read: {e}"),
                )
                .await);
            }
        },
        None => None,
    };

    let raw_type = value_of(spec.event_type, doc, headers).unwrap_or_default();
    let mut events = Vec::new();
    let mut order_data: Option<Value> = None;
    let mut stock = Vec::new();
    match spec.event_type.map.get(&raw_type) {
        None => {
            // Kept and reported, never dropped: the platform gets its acknowledgement so it
            // stops resending, and the delivery is listed with the reason.
            tracing::warn!(platform = %platform.name, "callback with unknown event type '{raw_type}' stored without an event");
            delivery.rejection = Some(format!("unknown event type '{raw_type}'"));
        }
        Some(event_type) => {
            // The callback's span, when there is one (a name from the configuration).
            tracing::Span::current().record("event_type", event_type.as_str());
            delivery.event_type = Some(event_type.clone());
            let mut extra = Map::new();
            extra.insert("settings".into(), Value::Object(platform.settings.clone()));
            extra.insert("platform".into(), Value::String(platform.name.clone()));
            let received = now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let occurred = match spec.occurred_at {
                None => received.clone(),
                Some(m) => match crate::engine::mapping::map_document(m, doc, &extra) {
                    Ok(t) => match t.value {
                        Value::String(at) if !at.is_empty() => at,
                        _ => received.clone(),
                    },
                    Err(e) => {
                        return Err(refuse(
                            delivery,
                            400,
                            format!("the event time (occurred_at) cannot be read: {e}"),
                        )
                        .await);
                    }
                },
            };
            let data = match spec.events.get(event_type) {
                Some(mapping) => {
                    let mapped = match crate::engine::mapping::map_document(mapping, doc, &extra) {
                        Ok(m) => m,
                        Err(e) => {
                            return Err(refuse(
                                delivery,
                                400,
                                format!("the {event_type} delivery does not map: {e}"),
                            )
                            .await);
                        }
                    };
                    match services.ids.translate_mapped(platform, mapped).await {
                        Ok(v) => v,
                        Err(p) if p.status == 503 => {
                            return Err(Reply::error(
                                503,
                                "the gateway cannot store deliveries right now; send it again later",
                            ));
                        }
                        Err(p) => return Err(refuse(delivery, 400, p.detail).await),
                    }
                }
                None => doc.clone(),
            };
            if event_type.starts_with("order.") {
                order_data = Some(data.clone());
            }
            let id = uuid::Uuid::new_v4().to_string();
            let idempotency_key = format!(
                "{}:{}:{event_type}",
                platform.name,
                delivery.dedupe_key.clone().unwrap_or_else(|| id.clone())
            );
            let envelope = json!({
                "id": id,
                "type": event_type,
                "platform": platform.name,
                "occurred_at": occurred,
                "received_at": received,
                "data": data,
                "idempotency_key": idempotency_key,
            });
            for t in targets
                .iter()
                .filter(|t| t.events.iter().any(|e| e == event_type))
            {
                events.push(NewEvent {
                    event_id: format!("{id}/{}", t.name),
                    target: t.name.clone(),
                    event_type: event_type.clone(),
                    payload: envelope.to_string(),
                    idempotency_key: idempotency_key.clone(),
                    max_attempts: i64::from(t.max_attempts),
                });
            }
            if event_type == INVENTORY_CHANGED {
                stock = stock_checks(
                    platform,
                    services.monitoring,
                    targets,
                    &data,
                    &delivery,
                    now,
                );
            }
            if events.is_empty() {
                // Per delivery, so not at INFO: under load it would be most of the log.
                tracing::debug!(platform = %platform.name, "no target subscribes to {event_type}; the delivery is stored without events");
            }
        }
    }
    let watched = stock.iter().any(|s: &StockCheck| !s.events.is_empty());
    match store
        .inbox_record_with_stock(&delivery, &events, stock, unix_ms(now))
        .await
    {
        Ok(InboxOutcome::Stored { .. }) => {
            if !events.is_empty() || watched {
                notify();
            }
            // An order event also moves the order's saga on (the event itself is stored and
            // flows to the targets whatever happens here).
            if let (Some(event_type), Some(data)) = (&delivery.event_type, &order_data)
                && let Err(e) =
                    crate::flows::saga::observe(store, &platform.name, event_type, data, now).await
            {
                tracing::warn!(platform = %platform.name, "the order saga could not take the {event_type} event: {e}");
            }
        }
        Ok(InboxOutcome::Replayed) => {
            let status = spec.replay_status;
            let reason = Rejection::Replayed.to_string();
            return Err(refused(store, delivery, status, Refusal::Replay, reason).await);
        }
        Ok(InboxOutcome::Duplicate { id }) => {
            tracing::info!(platform = %platform.name, earlier = id, "duplicate callback acknowledged without a new event");
            return Ok(CallbackOutcome::Duplicate);
        }
        Err(e) => {
            // Not stored, so not acknowledged: the platform will send it again.
            tracing::error!("{e}");
            return Err(Reply::error(
                503,
                "the gateway cannot store deliveries right now; send it again later",
            ));
        }
    }
    Ok(CallbackOutcome::Accepted)
}

/// The event carrying stock levels.
const INVENTORY_CHANGED: &str = "inventory.changed";
/// The event sent when a stock level crosses into low.
const INVENTORY_LOW: &str = "inventory.low";

/// The stock levels of an `inventory.changed` event (`data.items[]`: `sku_id`, `available`)
/// that have a threshold (the platform's, over the gateway's defaults), each with the
/// `inventory.low` events it sends if it crossed into low. Each SKU's level is kept under
/// `stock/PLATFORM/SKU` (and `/WAREHOUSE` when the item names one); a SKU listed twice in
/// one delivery counts once, with its last level.
fn stock_checks(
    platform: &PlatformPlan,
    defaults: &crate::plan::MonitoringPlan,
    targets: &[TargetSettings],
    data: &Value,
    delivery: &NewDelivery,
    now: OffsetDateTime,
) -> Vec<StockCheck> {
    if !platform.monitoring.watches_stock(defaults) {
        return Vec::new();
    }
    let Some(items) = data.get("items").and_then(Value::as_array) else {
        return Vec::new();
    };
    let received = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut checks: Vec<StockCheck> = Vec::new();
    for item in items {
        let (Some(sku), Some(available)) = (
            item.get("sku_id").and_then(Value::as_str),
            item.get("available").and_then(Value::as_i64),
        ) else {
            continue;
        };
        let Some(threshold) = platform.monitoring.low_stock_of(sku, defaults) else {
            continue;
        };
        let threshold = i64::try_from(threshold).unwrap_or(i64::MAX);
        let flow_id = match item.get("warehouse").and_then(Value::as_str) {
            Some(w) => format!("stock/{}/{sku}/{w}", platform.name),
            None => format!("stock/{}/{sku}", platform.name),
        };
        // The delivery's dedupe key makes the event's key stable across a retried write; a
        // delivery is stored once, so the crossing it reports is too.
        let id = uuid::Uuid::new_v4().to_string();
        let idempotency_key = format!(
            "{}:{INVENTORY_LOW}:{sku}:{}",
            platform.name,
            delivery.dedupe_key.clone().unwrap_or_else(|| id.clone())
        );
        let envelope = json!({
            "id": id,
            "type": INVENTORY_LOW,
            "platform": platform.name,
            "occurred_at": received,
            "received_at": received,
            "data": { "sku_id": sku, "available": available.max(0), "threshold": threshold },
            "idempotency_key": idempotency_key,
        })
        .to_string();
        let events = targets
            .iter()
            .filter(|t| t.events.iter().any(|e| e == INVENTORY_LOW))
            .map(|t| NewEvent {
                event_id: format!("{id}/{}", t.name),
                target: t.name.clone(),
                event_type: INVENTORY_LOW.into(),
                payload: envelope.clone(),
                idempotency_key: idempotency_key.clone(),
                max_attempts: i64::from(t.max_attempts),
            })
            .collect();
        checks.retain(|c| c.flow_id != flow_id);
        checks.push(StockCheck {
            flow_id,
            available,
            threshold,
            events,
        });
    }
    checks
}
