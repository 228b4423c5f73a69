//! The OpenAPI 3.1 document of the canonical API, built once from the canonical JSON Schemas
//! (the same files that validate inputs), served at `/v1/openapi.json`.

use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use crate::canonical::{OPERATIONS, SCHEMA_FILES, owner_of};

static DOCUMENT: LazyLock<Value> = LazyLock::new(build);

/// The document.
pub fn document() -> &'static Value {
    &DOCUMENT
}

fn file(name: &str) -> Value {
    SCHEMA_FILES
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, text)| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null)
}

/// Rewrites references between the schema files into references inside the document.
fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref")
                && let Some((_, def)) = r.split_once("#/$defs/")
            {
                *r = format!("#/components/schemas/{def}");
            }
            m.remove("$id");
            m.remove("$schema");
            for child in m.values_mut() {
                rewrite_refs(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

fn problem_content() -> Value {
    json!({ "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } })
}

fn problem_responses() -> Value {
    let problem = problem_content();
    json!({
        "400": { "description": "The input is not valid (each problem named in `errors`).", "content": problem },
        "404": { "description": "No such platform or operation (the problem's detail says which).", "content": problem },
        "422": { "description": "An id is not known on the platform.", "content": problem },
        "408": { "description": "The request body did not arrive within the server's `body_timeout`; the connection is closed.", "content": problem },
        "413": { "description": "The request body is larger than the gateway accepts (2 MiB)." },
        "429": { "description": "The platform asked to slow down (its HTTP 429); `retry_after` says how long, when it did.", "content": problem },
        "500": { "description": "The gateway is not configured for this call (a credential has no value, the signing recipe cannot run).", "content": problem },
        "502": { "description": "The platform refused the call (`platform_code`, `platform_status`, `platform_details`), failed (unreachable, HTTP 5xx: `platform_status`), or its answer does not map.", "content": problem },
        "503": { "description": "The call could not be made on the gateway's side: open circuit breaker, no rate-limit or concurrency slot free within the deadline (`retry_after`), or the gateway's store is unavailable.", "content": problem },
        "504": { "description": "The platform did not answer within the operation's deadline.", "content": problem },
    })
}

fn build() -> Value {
    let mut schemas = Map::new();
    if let Some(Value::Object(defs)) = file("common.json").get("$defs").cloned() {
        for (k, mut v) in defs {
            rewrite_refs(&mut v);
            schemas.insert(k, v);
        }
    }
    schemas.insert(
        "Problem".into(),
        json!({
            "type": "object",
            "description": "RFC 9457 problem details.",
            "properties": {
                "type": { "type": "string" }, "title": { "type": "string" }, "status": { "type": "integer" },
                "detail": { "type": "string" }, "platform": { "type": "string" }, "operation": { "type": "string" },
                "platform_code": { "type": "string" }, "platform_message": { "type": "string" },
                "platform_status": { "type": "integer", "description": "The platform's HTTP status, when it answered with a failure status." },
                "platform_details": { "description": "Further details of the platform's error, as the platform gave them (`response.error.details`)." },
                "retry_after": { "type": "integer", "description": "Seconds to wait before trying again (also the Retry-After header)." },
                "retryable": { "type": "boolean" }, "errors": { "type": "array", "items": { "type": "string" } }
            },
            "required": ["type", "title", "status", "detail", "retryable"]
        }),
    );
    let mut paths = Map::new();
    for op in OPERATIONS {
        let mut schema = file(&format!("{op}.json"));
        rewrite_refs(&mut schema);
        let input = schema
            .pointer("/properties/input")
            .cloned()
            .unwrap_or(json!({}));
        let output = schema
            .pointer("/properties/output")
            .cloned()
            .unwrap_or(json!({}));
        let input_name = format!("{op}.input");
        let output_name = format!("{op}.output");
        schemas.insert(input_name.clone(), input);
        schemas.insert(output_name.clone(), output);
        let body = json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{input_name}") } } } });
        let mut responses = problem_responses();
        if let Value::Object(r) = &mut responses {
            r.insert(
                "200".into(),
                json!({ "description": "The canonical output.", "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{output_name}") } } } }),
            );
        }
        paths.insert(
            format!("/v1/platforms/{{platform}}/operations/{op}"),
            json!({ "post": {
                "operationId": format!("{}_on_platform", op.replace('.', "_")),
                "summary": format!("{op} on one platform"),
                "parameters": [{ "name": "platform", "in": "path", "required": true, "schema": { "type": "string" } }],
                "requestBody": body,
                "responses": responses,
            }}),
        );
        if owner_of(op).is_some() {
            paths.insert(
                format!("/v1/operations/{op}"),
                json!({ "post": {
                    "operationId": format!("{}_routed", op.replace('.', "_")),
                    "summary": format!("{op} on the platform(s) owning the ids in the input; split per platform"),
                    "requestBody": body,
                    "responses": {
                        "200": { "description": "Every part succeeded.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/RoutedParts" } } } },
                        "502": { "description": "At least one part failed; each part has its status.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/RoutedParts" } } } },
                        "400": problem_responses().get("400").cloned().unwrap_or_default(),
                        "404": problem_responses().get("404").cloned().unwrap_or_default(),
                        "408": problem_responses().get("408").cloned().unwrap_or_default(),
                        "413": problem_responses().get("413").cloned().unwrap_or_default(),
                        "422": problem_responses().get("422").cloned().unwrap_or_default(),
                        "503": { "description": "The gateway's store is unavailable.", "content": problem_content() },
                    },
                }}),
            );
        }
    }
    schemas.insert(
        "RoutedParts".into(),
        json!({ "type": "object", "properties": { "parts": { "type": "array", "items": { "type": "object", "properties": {
            "platform": { "type": "string" }, "ids": { "type": "array", "items": { "type": "string" } },
            "status": { "type": "integer" }, "output": {}, "problem": { "$ref": "#/components/schemas/Problem" }
        }, "required": ["platform", "ids", "status"] } } }, "required": ["parts"] }),
    );
    paths.insert(
        "/v1/platforms".into(),
        json!({ "get": { "operationId": "list_platforms", "summary": "The loaded platforms and the operations each offers.", "responses": { "200": { "description": "Platforms." } } } }),
    );
    paths.insert(
        "/v1/mappings/{platform}/{kind}".into(),
        json!({ "get": {
            "operationId": "lookup_mapping",
            "summary": "Translate one id: give exactly one of internal_id and platform_id.",
            "parameters": [
                { "name": "platform", "in": "path", "required": true, "schema": { "type": "string" } },
                { "name": "kind", "in": "path", "required": true, "schema": { "type": "string" } },
                { "name": "internal_id", "in": "query", "schema": { "type": "string" } },
                { "name": "platform_id", "in": "query", "schema": { "type": "string" } }
            ],
            "responses": {
                "200": { "description": "The pair." },
                "400": { "description": "Neither or both of internal_id and platform_id were given.", "content": problem_content() },
                "404": { "description": "No mapping of that kind on that platform for that id.", "content": problem_content() },
                "503": { "description": "The gateway's store is unavailable.", "content": problem_content() }
            }
        }}),
    );
    let order_param = json!({ "name": "order_id", "in": "path", "required": true, "description": "The mall's order id (1 to 128 characters).", "schema": { "type": "string", "minLength": 1, "maxLength": 128 } });
    paths.insert(
        "/v1/orders/{order_id}/check".into(),
        json!({ "post": {
            "operationId": "check_order",
            "summary": "Whether each line of an order can be fulfilled: lines are routed by SKU to their platforms, each asked inventory.get at once. Changes nothing.",
            "parameters": [order_param],
            "requestBody": { "required": true, "content": { "application/json": { "schema": {
                "type": "object", "required": ["lines"], "description": "The order, or just its lines; other members are ignored.",
                "properties": { "lines": { "type": "array", "minItems": 1, "maxItems": 200, "items": {
                    "type": "object", "required": ["sku_id", "quantity"],
                    "properties": { "sku_id": { "$ref": "#/components/schemas/id" }, "quantity": { "type": "integer", "minimum": 1 } } } } } } } } },
            "responses": {
                "200": { "description": "Per line: its platform, the units available and whether the line can be fulfilled, or the reason it cannot (an unknown SKU, a platform that failed).", "content": { "application/json": { "schema": {
                    "type": "object", "required": ["order_id", "fulfillable", "lines"],
                    "properties": { "order_id": { "type": "string" }, "fulfillable": { "type": "boolean" }, "lines": { "type": "array", "items": {
                        "type": "object", "required": ["sku_id", "quantity", "fulfillable"],
                        "properties": { "sku_id": { "type": "string" }, "quantity": { "type": "integer" }, "platform": { "type": "string" }, "available": { "type": "integer" }, "fulfillable": { "type": "boolean" }, "reason": { "type": "string" } } } } } } } } },
                "400": { "description": "The body has no valid lines.", "content": problem_content() },
                "503": { "description": "The gateway's store is unavailable.", "content": problem_content() }
            }
        }}),
    );
    paths.insert(
        "/v1/orders/{order_id}/paid".into(),
        json!({ "post": {
            "operationId": "order_paid",
            "summary": "Record a paid order's saga, then create it on every platform involved (in the background). Answered once the saga is stored.",
            "parameters": [order_param],
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/order.create.input" } } } },
            "responses": {
                "202": { "description": "Recorded (or recorded before with the same content): `order_id`, `state`, `parts` (platform, sku_ids, state) and the creation `deadline`. Follow it at the `Location`, GET /v1/orders/{order_id}." },
                "400": { "description": "Not a valid order.create input, or its order_id is not the URL's.", "content": problem_content() },
                "409": { "description": "The order was recorded as paid before with other content.", "content": problem_content() },
                "422": { "description": "A SKU belongs to no platform (or to several).", "content": problem_content() },
                "503": { "description": "The gateway's store is unavailable: nothing was recorded.", "content": problem_content() }
            }
        }}),
    );
    paths.insert(
        "/v1/orders/{order_id}".into(),
        json!({ "get": {
            "operationId": "get_order_saga",
            "summary": "The order's saga: its state (creating, created, compensating, cancelled), the reason of a cancellation, each platform's part (state, platform order id, status, attempts, last error, next retry) and every step with its time and error.",
            "parameters": [order_param],
            "responses": {
                "200": { "description": "The saga." },
                "400": { "description": "Not an order id.", "content": problem_content() },
                "404": { "description": "No saga for this order.", "content": problem_content() },
                "503": { "description": "The gateway's store is unavailable.", "content": problem_content() }
            }
        }}),
    );
    let query = |name: &str, what: &str| json!({ "name": name, "in": "query", "required": true, "description": what, "schema": { "type": "string" } });
    paths.insert(
        "/v1/reconciliation".into(),
        json!({ "get": {
            "operationId": "reconcile",
            "summary": "Compares the orders recorded (order sagas paid within [from, to)) with what one platform reports (its order.list, else order.get per order) and lists each mismatch: missing_on_platform, missing_in_entrepot, status, amount, line; with a summary (orders recorded, compared, in flight, listed, unchecked; mismatches by kind). Without order.list, orders missing on entrepot's side are not looked for and a note says so.",
            "parameters": [
                query("platform", "The platform, as named in its file's `platform:`."),
                query("from", "Window start: an RFC 3339 time or a date (midnight UTC)."),
                query("to", "Window end, excluded; at most 31 days after from."),
            ],
            "responses": {
                "200": { "description": "The report: platform, from, to, missing_in_entrepot_checked, notes, summary, mismatches (kind, order_id, platform_order_id, field, entrepot, platform, detail), unchecked (order_id, platform_order_id, error)." },
                "400": { "description": "No platform, a bad or too long window, or more orders in it than one report reads (2000 recorded, 5000 listed): the detail says what to fix.", "content": problem_content() },
                "404": { "description": "No such platform is loaded.", "content": problem_content() },
                "503": { "description": "The gateway's store is unavailable.", "content": problem_content() }
            }
        }}),
    );
    for (p, what) in [
        ("/healthz", "The process is alive."),
        ("/readyz", "The store answers."),
    ] {
        let mut responses = json!({ "200": { "description": "OK" } });
        if p == "/readyz"
            && let Value::Object(r) = &mut responses
        {
            r.insert(
                "503".into(),
                json!({ "description": "The store does not answer." }),
            );
        }
        paths.insert(
            p.into(),
            json!({ "get": { "summary": what, "responses": responses } }),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "entrepot canonical API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The mall's own API over every external platform. Money is integer minor units (fen) with a currency; times are RFC 3339; failures are RFC 9457 problem details."
        },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|c| refs(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| refs(c, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_and_every_operation_is_there() {
        let doc = document();
        let mut all = Vec::new();
        refs(doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("external reference {r}"));
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
        for op in OPERATIONS {
            assert!(
                doc["paths"]
                    .get(format!("/v1/platforms/{{platform}}/operations/{op}"))
                    .is_some(),
                "{op}"
            );
        }
        assert!(
            doc["paths"].get("/v1/operations/product.list").is_none(),
            "product.list is not routable"
        );
    }
}
