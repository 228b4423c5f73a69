//! Mapping a platform document onto the canonical model, with the compiled [`MappingPlan`].
//!
//! Mapping is pure: ids marked with `id:` are left as platform ids and reported, so the caller
//! can translate them all in one batch per kind through the store.

use std::borrow::Cow;

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;

use crate::config::platform::ValueType;
use crate::plan::{MappingPlan, MappingSource};
use crate::template::{decimal_text_to_minor, text_of, yuan_text_to_fen};

/// A platform id found while mapping, to translate into an internal id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundId {
    /// JSON pointer of the value in the output.
    pub pointer: String,
    /// Entity kind.
    pub kind: String,
    /// The platform's id.
    pub platform_id: String,
}

/// The result of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The canonical value.
    pub value: Value,
    /// Ids to translate.
    pub ids: Vec<FoundId>,
    /// Optional values that were absent (left out).
    pub missing_optional: u64,
}

/// Why a document does not map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct MappingError {
    /// The output field, like `items[3].price.amount`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Where the mapper is in the output: field names and array indexes (in the source and in the
/// output, which differ when items are left out). Strings are only built for errors and ids.
enum Part<'p> {
    Field(&'p str),
    Index { src: usize, out: usize },
}

struct Cx<'a, 'p> {
    doc: &'a Value,
    extra: &'a Map<String, Value>,
    ids: Vec<FoundId>,
    missing: u64,
    path: Vec<Part<'p>>,
}

impl Cx<'_, '_> {
    /// `items[3].price.amount`, or "the output" at the top.
    fn field(&self) -> String {
        let mut out = String::new();
        for part in &self.path {
            match part {
                Part::Field(f) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(f);
                }
                Part::Index { src, .. } => out.push_str(&format!("[{src}]")),
            }
        }
        if out.is_empty() {
            "the output".into()
        } else {
            out
        }
    }

    /// The JSON pointer of the current value in the output.
    fn pointer(&self) -> String {
        let mut out = String::new();
        for part in &self.path {
            out.push('/');
            match part {
                Part::Field(f) => out.push_str(&f.replace('~', "~0").replace('/', "~1")),
                Part::Index { out: i, .. } => out.push_str(&i.to_string()),
            }
        }
        out
    }

    fn error(&self, message: String) -> MappingError {
        MappingError {
            field: self.field(),
            message,
        }
    }
}

/// Maps `doc` with `plan`. `extra` holds the other template variables (`settings`,
/// `platform`).
pub fn map_document(
    plan: &MappingPlan,
    doc: &Value,
    extra: &Map<String, Value>,
) -> Result<Mapped, MappingError> {
    let mut cx = Cx {
        doc,
        extra,
        ids: Vec::new(),
        missing: 0,
        path: Vec::new(),
    };
    let value = map_value(&mut cx, plan, doc)?.unwrap_or(Value::Null);
    Ok(Mapped {
        value,
        ids: cx.ids,
        missing_optional: cx.missing,
    })
}

fn source<'v>(
    cx: &Cx<'_, '_>,
    plan: &MappingPlan,
    item: &'v Value,
) -> Result<Option<Cow<'v, Value>>, MappingError> {
    Ok(match &plan.source {
        MappingSource::Current => Some(Cow::Borrowed(item)),
        MappingSource::Path(p) => p.first(item).map(Cow::Borrowed),
        MappingSource::Value(v) => Some(Cow::Owned(v.clone())),
        MappingSource::Template(t) => {
            let mut ctx = cx.extra.clone();
            ctx.insert("item".into(), item.clone());
            ctx.insert("doc".into(), cx.doc.clone());
            let text = t
                .render(&Value::Object(ctx))
                .map_err(|message| cx.error(message))?;
            Some(Cow::Owned(Value::String(text)))
        }
    })
}

fn map_value<'p>(
    cx: &mut Cx<'_, 'p>,
    plan: &'p MappingPlan,
    item: &Value,
) -> Result<Option<Value>, MappingError> {
    let found = source(cx, plan, item)?.filter(|v| !v.is_null());
    let Some(found) = found else {
        return missing(cx, plan, "no value");
    };
    if let Some(each) = &plan.each {
        let items = each.query(&found);
        let mut out = Vec::with_capacity(items.len());
        for (src, it) in items.into_iter().enumerate() {
            cx.path.push(Part::Index {
                src,
                out: out.len(),
            });
            let mapped = map_one(cx, plan, it);
            cx.path.pop();
            if let Some(v) = mapped? {
                out.push(v);
            }
        }
        return Ok(Some(Value::Array(out)));
    }
    map_one(cx, plan, &found)
}

fn map_one<'p>(
    cx: &mut Cx<'_, 'p>,
    plan: &'p MappingPlan,
    v: &Value,
) -> Result<Option<Value>, MappingError> {
    if let Some(fields) = &plan.fields {
        let mut obj = Map::with_capacity(fields.len());
        for (name, sub) in fields {
            cx.path.push(Part::Field(name));
            let mapped = map_value(cx, sub, v);
            cx.path.pop();
            if let Some(value) = mapped? {
                obj.insert(name.clone(), value);
            }
        }
        return Ok(Some(Value::Object(obj)));
    }
    let mut value = v.clone();
    if let Some(table) = &plan.map {
        let key = match &value {
            Value::String(s) => Cow::Borrowed(s.as_str()),
            other => Cow::Owned(text_of(other)),
        };
        match table.get(key.as_ref()) {
            Some(mapped) => value = mapped.clone(),
            None => {
                return match &plan.default {
                    Some(d) => Ok(Some(d.clone())),
                    None => Err(cx.error(format!(
                        "the platform value {} is not in the `map` table",
                        short(&value)
                    ))),
                };
            }
        }
    }
    if let Some(kind) = plan.kind {
        value = convert(&value, kind, plan).map_err(|message| cx.error(message))?;
    }
    if let Some(kind) = &plan.id {
        let text = text_of(&value);
        if text.is_empty() {
            return missing(cx, plan, "an empty id");
        }
        cx.ids.push(FoundId {
            pointer: cx.pointer(),
            kind: kind.clone(),
            platform_id: text.clone(),
        });
        value = Value::String(text);
    }
    Ok(Some(value))
}

fn missing(
    cx: &mut Cx<'_, '_>,
    plan: &MappingPlan,
    what: &str,
) -> Result<Option<Value>, MappingError> {
    if let Some(d) = &plan.default {
        return Ok(Some(d.clone()));
    }
    if plan.required {
        let at = match &plan.source {
            MappingSource::Path(p) => format!(" at {}", p.source()),
            _ => String::new(),
        };
        return Err(cx.error(format!("required, but the platform sent {what}{at}")));
    }
    cx.missing += 1;
    Ok(None)
}

fn short(v: &Value) -> String {
    let t = v.to_string();
    if t.chars().count() > 60 {
        format!("{}…", t.chars().take(60).collect::<String>())
    } else {
        t
    }
}

fn convert(v: &Value, kind: ValueType, plan: &MappingPlan) -> Result<Value, String> {
    let bad = |what: &str| format!("expected {what}, found {}", short(v));
    Ok(match kind {
        ValueType::String => Value::String(text_of(v)),
        ValueType::Integer => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => v.clone(),
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
                _ => return Err(bad("an integer")),
            },
            Value::String(s) => {
                Value::from(s.trim().parse::<i64>().map_err(|_| bad("an integer"))?)
            }
            _ => return Err(bad("an integer")),
        },
        ValueType::Decimal => {
            let t = text_of(v);
            let digits = t.trim().trim_start_matches(['-', '+']);
            let (w, f) = digits.split_once('.').unwrap_or((digits, ""));
            let ok = !w.is_empty()
                && w.chars().all(|c| c.is_ascii_digit())
                && f.chars().all(|c| c.is_ascii_digit());
            if !ok || matches!(v, Value::Bool(_) | Value::Array(_) | Value::Object(_)) {
                return Err(bad("a decimal number"));
            }
            Value::String(t.trim().to_string())
        }
        ValueType::Bool => match v {
            Value::Bool(_) => v.clone(),
            Value::Number(n) if n.as_i64() == Some(1) => Value::Bool(true),
            Value::Number(n) if n.as_i64() == Some(0) => Value::Bool(false),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "y" | "yes" => Value::Bool(true),
                "false" | "0" | "n" | "no" => Value::Bool(false),
                _ => return Err(bad("a boolean")),
            },
            _ => return Err(bad("a boolean")),
        },
        ValueType::Fen => {
            let text = text_of(v);
            Value::from(
                yuan_text_to_fen(&text)
                    .map_err(|_| bad("an amount in yuan with at most two decimals"))?,
            )
        }
        ValueType::MinorUnits => {
            if !matches!(v, Value::Number(_) | Value::String(_)) {
                return Err(bad("a decimal amount"));
            }
            Value::from(decimal_text_to_minor(&text_of(v), plan.scale).map_err(|_| {
                bad(&format!(
                    "a decimal amount with at most {} decimals",
                    plan.scale
                ))
            })?)
        }
        ValueType::Time => {
            let text = text_of(v);
            let parsed = if let Some((format, offset)) = &plan.time_format {
                format.parse_time(text.trim(), *offset)
            } else if let Ok(t) = time::OffsetDateTime::parse(text.trim(), &Rfc3339) {
                Ok(t)
            } else {
                let digits = text.trim();
                match (digits.len(), digits.parse::<i64>()) {
                    (13, Ok(ms)) => {
                        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                            .map_err(|e| e.to_string())
                    }
                    (_, Ok(s)) => {
                        time::OffsetDateTime::from_unix_timestamp(s).map_err(|e| e.to_string())
                    }
                    _ => Err(String::new()),
                }
            };
            let t = parsed.map_err(|_| {
                bad("a time (RFC 3339, Unix seconds or milliseconds, or the mapping's `format`)")
            })?;
            // Canonical times are in UTC.
            Value::String(
                t.to_offset(time::UtcOffset::UTC)
                    .format(&Rfc3339)
                    .map_err(|e| e.to_string())?,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::parse;
    use serde_json::json;
    use std::path::Path;

    fn plan(yaml_response: &str) -> MappingPlan {
        let doc = parse(Path::new("t.yaml"), yaml_response.to_string()).unwrap();
        crate::compile::bare_mapping(&doc, &["spu", "sku"]).unwrap()
    }

    #[test]
    fn maps_nested_arrays_types_and_ids() {
        let p = plan(
            "fields:\n  items:\n    each: $.result[*]\n    fields:\n      spu_id: { path: $.id, id: spu, required: true }\n      status: { path: $.st, map: { \"1\": on_sale }, default: off_sale }\n      skus:\n        each: $.skus[*]\n        fields:\n          sku_id: { path: $.id, id: sku }\n          amount: { path: $.price, type: fen }\n          stock: { path: $.n, type: integer }\n  currency: { value: CNY }\n  note: { path: $.none }",
        );
        let doc = json!({"result": [
            {"id": 7, "st": 1, "skus": [{"id": "s1", "price": "12.5", "n": "3"}]},
            {"id": "8", "st": 0, "skus": []}
        ]});
        let out = map_document(&p, &doc, &Map::new()).unwrap();
        assert_eq!(
            out.value,
            json!({"items": [
                {"spu_id": "7", "status": "on_sale", "skus": [{"sku_id": "s1", "amount": 1250, "stock": 3}]},
                {"spu_id": "8", "status": "off_sale", "skus": []}
            ], "currency": "CNY"})
        );
        let ids: Vec<(&str, &str, &str)> = out
            .ids
            .iter()
            .map(|i| (i.pointer.as_str(), i.kind.as_str(), i.platform_id.as_str()))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("/items/0/spu_id", "spu", "7"),
                ("/items/0/skus/0/sku_id", "sku", "s1"),
                ("/items/1/spu_id", "spu", "8")
            ]
        );
        assert_eq!(out.missing_optional, 1);
    }

    #[test]
    fn minor_units_follow_the_declared_scale() {
        let p = plan(
            "fields:\n  eur: { path: $.eur, type: minor_units, scale: 2 }\n  jpy: { path: $.jpy, type: minor_units, scale: 0 }\n  kwd: { path: $.kwd, type: minor_units, scale: 3 }\n  neg: { path: $.neg, type: minor_units, scale: 2 }",
        );
        // Hand-computed: 19.99 EUR = 1999 cents; 1500 JPY has no minor unit; 1.5 KWD = 1500
        // fils; a JSON number is read as written, -0.5 = -50.
        let doc = json!({"eur": "19.99", "jpy": 1500, "kwd": "1.5", "neg": -0.5});
        let out = map_document(&p, &doc, &Map::new()).unwrap();
        assert_eq!(
            out.value,
            json!({"eur": 1999, "jpy": 1500, "kwd": 1500, "neg": -50})
        );
        // More decimals than the currency has are refused, never rounded.
        for (field, value) in [
            ("eur", json!("19.999")),
            ("jpy", json!("1.5")),
            ("eur", json!("12,50")),
            ("eur", json!(true)),
        ] {
            let mut doc = json!({"eur": "1", "jpy": 1, "kwd": "1", "neg": 1});
            doc[field] = value.clone();
            let err = map_document(&p, &doc, &Map::new()).unwrap_err();
            assert_eq!(err.field, field, "{value}");
        }
    }

    #[test]
    fn required_and_type_errors_name_the_field() {
        let p = plan(
            "fields:\n  items:\n    each: $.r[*]\n    fields:\n      id: { path: $.id, required: true }\n      n: { path: $.n, type: integer }",
        );
        let m = &p;
        let err = map_document(m, &json!({"r": [{"id": 1}, {"n": 2}]}), &Map::new()).unwrap_err();
        assert_eq!(err.field, "items[1].id");
        assert!(
            err.message.contains("required") && err.message.contains("$.id"),
            "{err}"
        );
        let err = map_document(m, &json!({"r": [{"id": 1, "n": "x"}]}), &Map::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "items[0].n: expected an integer, found \"x\""
        );
    }

    #[test]
    fn conversions() {
        let p = plan(
            "fields:\n  t: { path: $.t, type: time, format: \"yyyy-MM-dd HH:mm:ss\", offset: \"+08:00\" }\n  r: { path: $.r, type: time }\n  b: { path: $.b, type: bool }\n  d: { path: $.d, type: decimal }",
        );
        let m = &p;
        let out = map_document(
            m,
            &json!({"t": "2016-01-01 12:00:00", "r": 1451620800, "b": "1", "d": 12.5}),
            &Map::new(),
        )
        .unwrap();
        assert_eq!(
            out.value,
            json!({"t": "2016-01-01T04:00:00Z", "r": "2016-01-01T04:00:00Z", "b": true, "d": "12.5"})
        );
    }
}
