//! The shape of the canonical model, read from its JSON Schemas (`schemas/canonical/`): which
//! fields an operation's input, an operation's output and an event's data have, which are
//! required, and which paths lead to lists — so a reference to a field that does not exist, or
//! that could only ever reach one element of a list, is found when the file loads.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::Value;

use crate::canonical::SCHEMA_FILES;

static SCHEMAS: LazyLock<HashMap<&'static str, Value>> = LazyLock::new(|| {
    SCHEMA_FILES
        .iter()
        .filter_map(|(name, text)| Some((*name, serde_json::from_str(text).ok()?)))
        .collect()
});

/// The schema of a value of any shape.
static ANY: Value = Value::Bool(true);

/// A place in a canonical schema: the file it is in and the schema node (its `$ref`, if any,
/// not yet followed, so keywords beside a `$ref` still apply).
#[derive(Debug, Clone, Copy)]
pub struct Node {
    file: &'static str,
    schema: &'static Value,
}

/// What a path leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// A list, with the path of the list (as written, dotted).
    List(String),
    /// The path continues past a list (`input.lines.sku_id`, `input.lines.0.sku_id`): it can
    /// reach one element at most. The dotted path of the list.
    ThroughList(String),
    /// The path names a field the schema does not have.
    Unknown {
        /// The dotted path of the object (or value) the field was looked up in.
        parent: String,
        /// The field as written.
        field: String,
        /// The fields `parent` has (empty when it is a single value).
        known: Vec<&'static str>,
    },
    /// Anything else, or a place the schema does not describe.
    Other,
}

fn node_of(file: &str, pointer: &str) -> Option<Node> {
    let (file, doc) = SCHEMAS.get_key_value(file)?;
    Some(Node {
        file,
        schema: doc.pointer(pointer)?,
    })
}

/// The node of the canonical input of `operation`, when the operation has a schema.
pub fn input_node(operation: &str) -> Option<Node> {
    node_of(&format!("{operation}.json"), "/properties/input")
}

/// The node of the canonical output of `operation`, when the operation has a schema.
pub fn output_node(operation: &str) -> Option<Node> {
    node_of(&format!("{operation}.json"), "/properties/output")
}

/// The node of the data of canonical event `event`, when the event has a schema.
pub fn event_node(event: &str) -> Option<Node> {
    node_of(&format!("events/{event}.json"), "")
}

/// The file a `$ref` written in `from` points to: relative to `from`'s directory.
fn ref_file(from: &'static str, target: &str) -> Option<&'static str> {
    if target.is_empty() {
        return Some(from);
    }
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    for seg in target.split('/') {
        match seg {
            "." | "" => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    SCHEMA_FILES.iter().map(|(n, _)| *n).find(|n| *n == joined)
}

/// The node `node`'s `$ref` points to, if it has one.
fn deref(node: Node) -> Option<Node> {
    let r = node.schema.get("$ref")?.as_str()?;
    let (file, pointer) = r.split_once('#').unwrap_or((r, ""));
    let file = ref_file(node.file, file)?;
    let schema = SCHEMAS.get(file)?.pointer(pointer)?;
    Some(Node { file, schema })
}

/// The node and the nodes its `$ref`s lead to: all of them apply together.
fn facets(node: Node) -> Vec<Node> {
    let mut out = vec![node];
    let mut at = node;
    for _ in 0..16 {
        match deref(at) {
            Some(next) => {
                out.push(next);
                at = next;
            }
            None => break,
        }
    }
    out
}

/// The ways a value may match `node` (`anyOf`/`oneOf` alternatives), each as the set of
/// schema nodes that apply together.
fn variants(node: Node) -> Vec<Vec<Node>> {
    variants_at(node, 0)
}

fn variants_at(node: Node, depth: usize) -> Vec<Vec<Node>> {
    let all = facets(node);
    let alts = all.iter().find_map(|f| {
        ["anyOf", "oneOf"]
            .iter()
            .find_map(|k| f.schema.get(*k).and_then(Value::as_array))
            .map(|a| (f.file, a))
    });
    let Some((file, alts)) = alts.filter(|_| depth < 8) else {
        return vec![all];
    };
    let common: Vec<Node> = all
        .iter()
        .copied()
        .filter(|f| f.schema.get("anyOf").is_none() && f.schema.get("oneOf").is_none())
        .collect();
    alts.iter()
        .flat_map(|schema| variants_at(Node { file, schema }, depth + 1))
        .map(|mut v| {
            v.extend(common.iter().copied());
            v
        })
        .collect()
}

fn has_type(variant: &[Node], wanted: &str) -> bool {
    variant.iter().any(|f| match f.schema.get("type") {
        Some(Value::String(t)) => t == wanted,
        Some(Value::Array(ts)) => ts.iter().any(|t| t.as_str() == Some(wanted)),
        _ => false,
    })
}

fn is_object_variant(variant: &[Node]) -> bool {
    has_type(variant, "object") || variant.iter().any(|f| f.schema.get("properties").is_some())
}

/// Whether a variant says nothing of its type (any value).
fn untyped(variant: &[Node]) -> bool {
    !variant.iter().any(|f| {
        f.schema.get("type").is_some()
            || f.schema.get("properties").is_some()
            || f.schema.get("items").is_some()
            || f.schema.get("enum").is_some()
            || f.schema.get("const").is_some()
    })
}

/// Whether a value of `node` may be a list.
pub fn is_list(node: Node) -> bool {
    variants(node).iter().any(|v| has_type(v, "array"))
}

/// Whether a value of `node` may be an object with fields (or is not described).
pub fn may_be_object(node: Node) -> bool {
    variants(node)
        .iter()
        .any(|v| is_object_variant(v) || untyped(v))
}

/// The elements of a list node.
pub fn items(node: Node) -> Option<Node> {
    variants(node).into_iter().find_map(|v| {
        v.into_iter().find_map(|n| {
            let schema = n.schema.get("items")?;
            Some(Node {
                file: n.file,
                schema,
            })
        })
    })
}

/// The node of field `name` of an object node: a declared property, or what
/// `additionalProperties` allows. `None` when no variant of the node has such a field.
pub fn property(node: Node, name: &str) -> Option<Node> {
    let vs = variants(node);
    let declared = vs.iter().flatten().find_map(|n| {
        let schema = n.schema.get("properties")?.get(name)?;
        Some(Node {
            file: n.file,
            schema,
        })
    });
    declared.or_else(|| {
        vs.iter().find_map(|v| {
            if !is_object_variant(v) && !untyped(v) {
                return None;
            }
            match v.iter().find_map(|f| f.schema.get("additionalProperties")) {
                Some(Value::Bool(false)) => None,
                Some(schema @ Value::Object(_)) => Some(Node {
                    file: v.first().map_or("", |f| f.file),
                    schema,
                }),
                // Open (or not described): a field of any shape.
                _ => Some(Node {
                    file: v.first().map_or("", |f| f.file),
                    schema: &ANY,
                }),
            }
        })
    })
}

/// The only values `node` allows (its `enum`s and `const`s), or `None` when some alternative
/// allows any value of its type.
pub fn allowed_values(node: Node) -> Option<Vec<&'static Value>> {
    let mut out = Vec::new();
    for v in variants(node) {
        let mut found = false;
        for f in &v {
            if let Some(Value::Array(values)) = f.schema.get("enum") {
                out.extend(values.iter());
                found = true;
            }
            if let Some(c) = f.schema.get("const") {
                out.push(c);
                found = true;
            }
        }
        if !found {
            return None;
        }
    }
    Some(out)
}

/// The declared fields of an object node, in schema order.
pub fn field_names(node: Node) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for n in variants(node).iter().flatten() {
        if let Some(Value::Object(props)) = n.schema.get("properties") {
            for k in props.keys() {
                if !out.contains(&k.as_str()) {
                    out.push(k.as_str());
                }
            }
        }
    }
    out
}

/// The fields every object value of `node` must have.
pub fn required(node: Node) -> Vec<&'static str> {
    let mut sets = variants(node)
        .into_iter()
        .filter(|v| is_object_variant(v))
        .map(|v| {
            let mut names: Vec<&'static str> = Vec::new();
            for f in v {
                if let Some(Value::Array(r)) = f.schema.get("required") {
                    names.extend(r.iter().filter_map(Value::as_str));
                }
            }
            names
        });
    let Some(first) = sets.next() else {
        return Vec::new();
    };
    let rest: Vec<Vec<&'static str>> = sets.collect();
    let mut out: Vec<&'static str> = first
        .into_iter()
        .filter(|n| rest.iter().all(|r| r.contains(n)))
        .collect();
    out.dedup();
    out
}

/// Walks `segs` (the path after its root, which is `start`) and says whether it leads to a
/// list, past one, or to a field the schema does not have; `prefix` is the root's name, for
/// messages.
pub fn reach(start: Node, prefix: &str, segs: &[String]) -> (Reach, Option<Node>) {
    let mut node = start;
    let mut written = prefix.to_string();
    for seg in segs {
        if seg == crate::template::ELEMENT {
            // An element of a list, as inside `{{#each}}`.
            match items(node).filter(|_| is_list(node)) {
                Some(item) => {
                    node = item;
                    written.push_str(seg);
                    continue;
                }
                None => return (Reach::Other, None),
            }
        }
        if is_list(node) {
            return (Reach::ThroughList(written), None);
        }
        match property(node, seg) {
            Some(n) => node = n,
            None => {
                return (
                    Reach::Unknown {
                        parent: written,
                        field: seg.clone(),
                        known: field_names(node),
                    },
                    None,
                );
            }
        }
        written.push('.');
        written.push_str(seg);
    }
    if is_list(node) {
        (Reach::List(written), Some(node))
    } else {
        (Reach::Other, Some(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        p.split('.').map(str::to_string).collect()
    }

    #[test]
    fn lists_are_found_through_refs() {
        let input = input_node("order.create").unwrap();
        assert_eq!(
            reach(input, "input", &segs("lines")).0,
            Reach::List("input.lines".into())
        );
        for p in ["lines.sku_id", "lines.0.sku_id", "lines.0"] {
            assert_eq!(
                reach(input, "input", &segs(p)).0,
                Reach::ThroughList("input.lines".into()),
                "{p}"
            );
        }
        assert_eq!(reach(input, "input", &segs("total.amount")).0, Reach::Other);
        assert_eq!(
            reach(input, "input", &segs("nothing.here")).0,
            Reach::Unknown {
                parent: "input".into(),
                field: "nothing".into(),
                known: vec![
                    "order_id",
                    "lines",
                    "address",
                    "total",
                    "freight",
                    "buyer_message",
                    "paid_at"
                ],
            }
        );
        let (_, lines) = reach(input, "input", &segs("lines"));
        let line = items(lines.unwrap()).unwrap();
        assert_eq!(
            reach(line, "item", &segs("unit_price.amount")).0,
            Reach::Other
        );
        assert!(input_node("no.such").is_none());
    }

    #[test]
    fn outputs_and_events_follow_relative_refs_and_keywords_beside_them() {
        // logistics.get: each shipment is common.json's shipment, with `events` required
        // beside the `$ref`.
        let out = output_node("logistics.get").unwrap();
        let (_, shipments) = reach(out, "output", &segs("shipments"));
        let shipment = items(shipments.unwrap()).unwrap();
        assert_eq!(
            required(shipment),
            vec!["events", "carrier", "tracking_number"]
        );
        assert!(property(shipment, "tracking_no").is_none());
        // Events refer to "../common.json".
        let shipped = event_node("order.shipped").unwrap();
        let shipment = property(shipped, "shipment").unwrap();
        assert_eq!(
            field_names(shipment),
            vec![
                "carrier",
                "tracking_number",
                "shipped_at",
                "lines",
                "events"
            ]
        );
        // A nullable cursor (anyOf [cursor, null]) is a single value, not an object or list.
        let list = output_node("product.list").unwrap();
        let cursor = property(list, "next_cursor").unwrap();
        assert!(!is_list(cursor) && !may_be_object(cursor));
        assert_eq!(required(list), vec!["items", "next_cursor"]);
        // Free-form attributes take any name.
        let (_, items_node) = reach(list, "output", &segs("items"));
        let product = items(items_node.unwrap()).unwrap();
        let (_, skus) = reach(product, "item", &segs("skus"));
        let sku = items(skus.unwrap()).unwrap();
        let attributes = property(sku, "attributes").unwrap();
        assert!(property(attributes, "colour").is_some());
        assert!(event_node("no.such").is_none());
    }
}
