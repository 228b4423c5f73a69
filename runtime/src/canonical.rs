//! The mall's canonical model: operation and event names, and their JSON Schemas (the files
//! under `schemas/canonical/`, embedded in the binary).

/// Canonical operations, in documentation order.
pub const OPERATIONS: &[&str] = &[
    "product.list",
    "product.get",
    "inventory.get",
    "order.create",
    "order.get",
    "order.list",
    "order.cancel",
    "logistics.get",
];

/// Listings bounded in time, which may declare `windows`: operation, the input field of the
/// window's start (included) and of its end (excluded).
pub const WINDOWED: &[(&str, &str, &str)] = &[
    ("product.list", "updated_since", "updated_before"),
    ("order.list", "from", "to"),
];

/// The input fields bounding a listing in time, when `op` is one.
pub fn window_fields(op: &str) -> Option<(&'static str, &'static str)> {
    WINDOWED
        .iter()
        .find(|(o, _, _)| *o == op)
        .map(|&(_, from, to)| (from, to))
}

/// Canonical events, in documentation order. `product.upserted` is the product sync's own
/// event (see [`crate::flows::sync`]); `platform.degraded` and `platform.recovered` are the
/// monitoring thresholds' (see [`crate::monitor`]); the others come from platform callbacks.
pub const EVENTS: &[&str] = &[
    "product.changed",
    "product.offline",
    "product.upserted",
    "inventory.changed",
    "inventory.low",
    "order.status_changed",
    "order.shipped",
    "order.cancelled",
    "platform.degraded",
    "platform.recovered",
];

/// The canonical schema files: path under `schemas/canonical/` and content.
pub const SCHEMA_FILES: &[(&str, &str)] = &[
    (
        "index.json",
        include_str!("../../schemas/canonical/index.json"),
    ),
    (
        "common.json",
        include_str!("../../schemas/canonical/common.json"),
    ),
    (
        "product.list.json",
        include_str!("../../schemas/canonical/product.list.json"),
    ),
    (
        "product.get.json",
        include_str!("../../schemas/canonical/product.get.json"),
    ),
    (
        "inventory.get.json",
        include_str!("../../schemas/canonical/inventory.get.json"),
    ),
    (
        "order.create.json",
        include_str!("../../schemas/canonical/order.create.json"),
    ),
    (
        "order.get.json",
        include_str!("../../schemas/canonical/order.get.json"),
    ),
    (
        "order.list.json",
        include_str!("../../schemas/canonical/order.list.json"),
    ),
    (
        "order.cancel.json",
        include_str!("../../schemas/canonical/order.cancel.json"),
    ),
    (
        "logistics.get.json",
        include_str!("../../schemas/canonical/logistics.get.json"),
    ),
    (
        "events/envelope.json",
        include_str!("../../schemas/canonical/events/envelope.json"),
    ),
    (
        "events/product.changed.json",
        include_str!("../../schemas/canonical/events/product.changed.json"),
    ),
    (
        "events/product.offline.json",
        include_str!("../../schemas/canonical/events/product.offline.json"),
    ),
    (
        "events/product.upserted.json",
        include_str!("../../schemas/canonical/events/product.upserted.json"),
    ),
    (
        "events/inventory.changed.json",
        include_str!("../../schemas/canonical/events/inventory.changed.json"),
    ),
    (
        "events/inventory.low.json",
        include_str!("../../schemas/canonical/events/inventory.low.json"),
    ),
    (
        "events/order.status_changed.json",
        include_str!("../../schemas/canonical/events/order.status_changed.json"),
    ),
    (
        "events/order.shipped.json",
        include_str!("../../schemas/canonical/events/order.shipped.json"),
    ),
    (
        "events/order.cancelled.json",
        include_str!("../../schemas/canonical/events/order.cancelled.json"),
    ),
    (
        "events/platform.degraded.json",
        include_str!("../../schemas/canonical/events/platform.degraded.json"),
    ),
    (
        "events/platform.recovered.json",
        include_str!("../../schemas/canonical/events/platform.recovered.json"),
    ),
];

/// Where the internal ids that decide which platform serves an operation are in its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// One id in a field (`order_id`).
    Field(&'static str, &'static str),
    /// Ids in an array's elements, which may belong to several platforms; the input is split
    /// per platform. The element itself is the id when the element field is `None`.
    Split {
        /// The array field.
        array: &'static str,
        /// The id field inside each element.
        id: Option<&'static str>,
        /// The id kind.
        kind: &'static str,
    },
}

/// How `POST /v1/operations/{operation}` finds the platform(s) of a call; `None` for
/// operations that need an explicit platform (`product.list`, `order.list`).
pub fn owner_of(operation: &str) -> Option<Owner> {
    Some(match operation {
        "product.get" => Owner::Field("spu_id", "spu"),
        "inventory.get" => Owner::Split {
            array: "sku_ids",
            id: None,
            kind: "sku",
        },
        "order.create" => Owner::Split {
            array: "lines",
            id: Some("sku_id"),
            kind: "sku",
        },
        "order.get" | "order.cancel" | "logistics.get" => Owner::Field("order_id", "order"),
        _ => return None,
    })
}

/// Base URI of the canonical schemas (their `$id`s).
pub const BASE_URI: &str = "https://entrepot.dev/schemas/canonical/";

struct Embedded;

impl jsonschema::Retrieve for Embedded {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        let text = uri.as_str();
        let name = text.strip_prefix(BASE_URI).unwrap_or(text);
        let name = name.split('#').next().unwrap_or(name);
        let (_, content) = SCHEMA_FILES
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| format!("no embedded canonical schema {text}"))?;
        Ok(serde_json::from_str(content)?)
    }
}

static INPUT_VALIDATORS: std::sync::LazyLock<
    std::collections::HashMap<&'static str, jsonschema::Validator>,
> = std::sync::LazyLock::new(|| {
    OPERATIONS
        .iter()
        .filter_map(|op| {
            let schema =
                serde_json::json!({ "$ref": format!("{BASE_URI}{op}.json#/properties/input") });
            // Formats are assertions here: a `date-time` must be a real RFC 3339 time, not
            // only shaped like one (`0000-00-00T00:00:00Z` is refused).
            jsonschema::options()
                .with_retriever(Embedded)
                .should_validate_formats(true)
                .build(&schema)
                .ok()
                .map(|v| (*op, v))
        })
        .collect()
});

/// Most problems listed for one input: 20 (then a last line says there are more).
pub const MAX_INPUT_PROBLEMS: usize = 20;

/// Problems of a canonical operation's input, each as `field: message` (empty when valid); at
/// most [`MAX_INPUT_PROBLEMS`], and a last line saying there are more.
pub fn input_problems(operation: &str, input: &serde_json::Value) -> Vec<String> {
    let Some(v) = INPUT_VALIDATORS.get(operation) else {
        return vec![format!("'{operation}' is not a canonical operation")];
    };
    // The common case first: a valid input stops at the first check of each keyword instead
    // of collecting every error with its location.
    if v.is_valid(input) {
        return Vec::new();
    }
    let mut problems: Vec<String> = v
        .iter_errors(input)
        .take(MAX_INPUT_PROBLEMS + 1)
        .map(|e| {
            let at = e
                .instance_path()
                .as_str()
                .trim_start_matches('/')
                .replace('/', ".");
            let at = if at.is_empty() {
                "input".to_string()
            } else {
                format!("input.{at}")
            };
            format!("{at}: {}", e.masked())
        })
        .collect();
    if problems.len() > MAX_INPUT_PROBLEMS {
        problems.truncate(MAX_INPUT_PROBLEMS);
        problems.push(format!(
            "input: more problems (only the first {MAX_INPUT_PROBLEMS} are listed)"
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lists_exactly_the_canonical_names() {
        let (_, index) = SCHEMA_FILES
            .iter()
            .find(|(n, _)| *n == "index.json")
            .unwrap();
        let index: serde_json::Value = serde_json::from_str(index).unwrap();
        let ops: Vec<&str> = index["operations"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let events: Vec<&str> = index["events"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(ops, OPERATIONS);
        assert_eq!(events, EVENTS);
    }

    #[test]
    fn every_operation_has_an_input_validator() {
        for op in OPERATIONS {
            assert!(INPUT_VALIDATORS.contains_key(op), "{op}");
        }
        assert!(input_problems("inventory.get", &serde_json::json!({"sku_ids": ["a"]})).is_empty());
        let problems = input_problems("inventory.get", &serde_json::json!({"sku_ids": []}));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("input.sku_ids:"), "{problems:?}");
        assert!(!input_problems("order.create", &serde_json::json!({"order_id": "o1"})).is_empty());
    }

    #[test]
    fn every_schema_is_json() {
        for (name, text) in SCHEMA_FILES {
            serde_json::from_str::<serde_json::Value>(text)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
