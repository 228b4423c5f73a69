//! The shape of a canonical operation's input, read from its JSON Schema
//! (`schemas/canonical/<operation>.json`): which paths lead to lists, so a reference that could
//! only ever reach one element of a list is found when the file loads.

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

/// A place in a canonical schema: the file it is in and the schema node.
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
    /// Anything else, or a place the schema does not describe.
    Other,
}

/// The node of the canonical input of `operation`, when the operation has a schema.
pub fn input_node(operation: &str) -> Option<Node> {
    let file = SCHEMA_FILES
        .iter()
        .map(|(n, _)| *n)
        .find(|n| n.strip_suffix(".json") == Some(operation))?;
    let schema = SCHEMAS.get(file)?.get("properties")?.get("input")?;
    Some(resolve(Node { file, schema }))
}

/// Follows `$ref`s until a node that is not one.
fn resolve(mut node: Node) -> Node {
    for _ in 0..16 {
        let Some(r) = node.schema.get("$ref").and_then(Value::as_str) else {
            return node;
        };
        let (file, pointer) = r.split_once('#').unwrap_or((r, ""));
        let file = if file.is_empty() {
            node.file
        } else {
            match SCHEMA_FILES.iter().map(|(n, _)| *n).find(|n| *n == file) {
                Some(f) => f,
                None => return node,
            }
        };
        let Some(target) = SCHEMAS.get(file).and_then(|d| d.pointer(pointer)) else {
            return node;
        };
        node = Node {
            file,
            schema: target,
        };
    }
    node
}

/// The alternatives of a node (`anyOf`/`oneOf`), or the node itself.
fn alternatives(node: Node) -> Vec<Node> {
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(alts)) = node.schema.get(key) {
            return alts
                .iter()
                .map(|schema| {
                    resolve(Node {
                        file: node.file,
                        schema,
                    })
                })
                .collect();
        }
    }
    vec![node]
}

fn is_list(node: Node) -> bool {
    alternatives(node)
        .iter()
        .any(|n| n.schema.get("type").and_then(Value::as_str) == Some("array"))
}

/// The elements of a list node.
pub fn items(node: Node) -> Option<Node> {
    alternatives(node).into_iter().find_map(|n| {
        let schema = n.schema.get("items")?;
        Some(resolve(Node {
            file: n.file,
            schema,
        }))
    })
}

fn property(node: Node, name: &str) -> Option<Node> {
    alternatives(node).into_iter().find_map(|n| {
        let schema = n.schema.get("properties")?.get(name)?;
        Some(resolve(Node {
            file: n.file,
            schema,
        }))
    })
}

/// Walks `segs` (the path after its root, which is `start`) and says whether it leads to a
/// list or past one; `prefix` is the root's name, for messages.
pub fn reach(start: Node, prefix: &str, segs: &[String]) -> (Reach, Option<Node>) {
    let mut node = start;
    let mut written = prefix.to_string();
    for seg in segs {
        if is_list(node) {
            return (Reach::ThroughList(written), None);
        }
        match property(node, seg) {
            Some(n) => node = n,
            None => return (Reach::Other, None),
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
        assert_eq!(reach(input, "input", &segs("nothing.here")).0, Reach::Other);
        let (_, lines) = reach(input, "input", &segs("lines"));
        let line = items(lines.unwrap()).unwrap();
        assert_eq!(
            reach(line, "item", &segs("unit_price.amount")).0,
            Reach::Other
        );
        assert!(input_node("no.such").is_none());
    }
}
