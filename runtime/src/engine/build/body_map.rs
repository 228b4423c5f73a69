//! Rendering a request body mapped from the canonical input (`request.body`): the mirror of
//! the response mapping. Pure; written out as JSON (numbers digit for digit) or XML.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::config::platform::RequestValueType;
use crate::plan::{BodyMappingPlan, RequestMappingPlan, RequestSource};
use crate::template::{lookup, text_of};

/// A body value about to be written. Numbers are kept as their exact text.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Null,
    Bool(bool),
    Num(String),
    /// Text, and whether XML writes it as CDATA.
    Str(String, bool),
    Arr(Vec<Out>),
    Obj(Vec<(String, Out)>),
}

/// Why a body could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    /// The body field, like `lines[2].quantity`.
    pub field: String,
    /// What is wrong (never the value itself).
    pub message: String,
    /// Whether the input is at fault (otherwise the configuration).
    pub input: bool,
}

struct Cx<'a> {
    ctx: &'a Value,
    at: Vec<String>,
}

impl Cx<'_> {
    fn field(&self) -> String {
        let mut out = String::new();
        for part in &self.at {
            if !part.starts_with('[') && !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
        if out.is_empty() {
            "(the body)".into()
        } else {
            out
        }
    }

    fn input_error(&self, message: impl Into<String>) -> BodyError {
        BodyError {
            field: self.field(),
            message: message.into(),
            input: true,
        }
    }
}

/// Renders the body: its bytes and content type.
pub fn render(plan: &BodyMappingPlan, ctx: &Value) -> Result<(Vec<u8>, &'static str), BodyError> {
    let mut cx = Cx {
        ctx,
        at: Vec::new(),
    };
    let fields = object(&mut cx, &plan.fields, None)?;
    Ok(match &plan.xml_root {
        None => {
            let mut out = String::new();
            write_json(&Out::Obj(fields), &mut out);
            (out.into_bytes(), "application/json")
        }
        Some(root) => {
            let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
            xml_element(root, &Out::Obj(fields), &mut out).map_err(|message| BodyError {
                field: cx.field(),
                message,
                input: false,
            })?;
            (out.into_bytes(), "application/xml; charset=utf-8")
        }
    })
}

fn object(
    cx: &mut Cx<'_>,
    fields: &[(String, RequestMappingPlan)],
    item: Option<&Value>,
) -> Result<Vec<(String, Out)>, BodyError> {
    let mut out = Vec::with_capacity(fields.len());
    for (name, plan) in fields {
        cx.at.push(name.clone());
        let v = value(cx, plan, item);
        cx.at.pop();
        if let Some(v) = v? {
            out.push((name.clone(), v));
        }
    }
    Ok(out)
}

/// The value at a dotted path; `item` is the current element.
fn get<'v>(ctx: &'v Value, item: Option<&'v Value>, path: &[String]) -> Option<&'v Value> {
    match path.split_first() {
        Some((root, rest)) if root == "item" => item.and_then(|i| lookup(i, rest)),
        _ => lookup(ctx, path),
    }
    .filter(|v| !v.is_null())
}

/// One field: `None` when it is left out.
fn value(
    cx: &mut Cx<'_>,
    plan: &RequestMappingPlan,
    item: Option<&Value>,
) -> Result<Option<Out>, BodyError> {
    let Some(each) = &plan.each else {
        return element(cx, plan, item, None);
    };
    let list = match get(cx.ctx, item, each) {
        None => return absent(cx, plan, &each.join(".")),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(cx.input_error(format!("'{}' is not a list", each.join("."))));
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, el) in list.iter().enumerate() {
        cx.at.push(format!("[{i}]"));
        let v = element(cx, plan, Some(el), Some(el));
        let v = match v {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(cx.input_error(
                "this element maps to no value; every element of the list must be sent (give a `default` or `nullable: true`)",
            )),
            Err(e) => Err(e),
        };
        cx.at.pop();
        out.push(v?);
    }
    Ok(Some(Out::Arr(out)))
}

/// A value without `each` (or one element of it: `current` is the element).
fn element(
    cx: &mut Cx<'_>,
    plan: &RequestMappingPlan,
    item: Option<&Value>,
    current: Option<&Value>,
) -> Result<Option<Out>, BodyError> {
    if let Some(fields) = &plan.fields {
        let scope = match &plan.source {
            RequestSource::Path(p) => match get(cx.ctx, item, p) {
                Some(found) => Some(found),
                None => return absent(cx, plan, &p.join(".")),
            },
            _ => item,
        };
        return Ok(Some(Out::Obj(object(cx, fields, scope)?)));
    }
    let found: Option<Cow<'_, Value>> = match &plan.source {
        RequestSource::Current => current.filter(|v| !v.is_null()).map(Cow::Borrowed),
        RequestSource::Path(p) => get(cx.ctx, item, p).map(Cow::Borrowed),
        RequestSource::Value(v) => Some(Cow::Borrowed(v)),
        RequestSource::Template(t) => {
            let text = match item {
                Some(i) => {
                    let mut ctx = cx.ctx.as_object().cloned().unwrap_or_else(Map::new);
                    ctx.insert("item".into(), i.clone());
                    t.render(&Value::Object(ctx))
                }
                None => t.render(cx.ctx),
            }
            .map_err(|message| BodyError {
                field: cx.field(),
                message,
                input: false,
            })?;
            Some(Cow::Owned(Value::String(text)))
        }
    };
    let Some(found) = found.filter(|v| !v.is_null()) else {
        let what = match &plan.source {
            RequestSource::Path(p) => p.join("."),
            _ => "the element".to_string(),
        };
        return absent(cx, plan, &what);
    };
    let mut v = found;
    if let Some(table) = &plan.map {
        let key = text_of(&v);
        match table.get(&key) {
            Some(mapped) => v = Cow::Owned(mapped.clone()),
            None => {
                return match &plan.default {
                    Some(d) => Ok(Some(plain(d, plan.cdata))),
                    None => Err(cx.input_error(
                        "the input value is not in the mapping's `map` table (add it, or give a `default`)",
                    )),
                };
            }
        }
    }
    let out = match plan.kind {
        None => plain(&v, plan.cdata),
        Some(kind) => convert(&v, kind, plan.scale, plan.cdata).map_err(|m| cx.input_error(m))?,
    };
    Ok(Some(out))
}

fn absent(cx: &Cx<'_>, plan: &RequestMappingPlan, what: &str) -> Result<Option<Out>, BodyError> {
    if let Some(d) = &plan.default {
        return Ok(Some(plain(d, plan.cdata)));
    }
    if plan.nullable {
        return Ok(Some(Out::Null));
    }
    if plan.required {
        return Err(cx.input_error(format!("required, but the input has no value at {what}")));
    }
    Ok(None)
}

/// A JSON value as it is.
fn plain(v: &Value, cdata: bool) -> Out {
    match v {
        Value::Null => Out::Null,
        Value::Bool(b) => Out::Bool(*b),
        Value::Number(n) => Out::Num(n.to_string()),
        Value::String(s) => Out::Str(s.clone(), cdata),
        Value::Array(a) => Out::Arr(a.iter().map(|v| plain(v, cdata)).collect()),
        Value::Object(m) => Out::Obj(
            m.iter()
                .map(|(k, v)| (k.clone(), plain(v, cdata)))
                .collect(),
        ),
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn convert(
    v: &Value,
    kind: RequestValueType,
    scale: Option<u32>,
    cdata: bool,
) -> Result<Out, String> {
    Ok(match kind {
        RequestValueType::String => match v {
            Value::Array(_) | Value::Object(_) => {
                return Err("expected a single value, found a list or an object".into());
            }
            other => Out::Str(text_of(other), cdata),
        },
        RequestValueType::Integer => {
            let text = scalar_text(v).ok_or("expected an integer")?;
            let n: i128 = match text.parse::<i128>() {
                Ok(n) => n,
                Err(_) => match v.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => f as i128,
                    _ => return Err("expected an integer".into()),
                },
            };
            Out::Num(n.to_string())
        }
        RequestValueType::Bool => Out::Bool(match v {
            Value::Bool(b) => *b,
            Value::Number(n) if n.as_i64() == Some(1) => true,
            Value::Number(n) if n.as_i64() == Some(0) => false,
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err("expected a boolean".into()),
            },
            _ => return Err("expected a boolean".into()),
        }),
        RequestValueType::Decimal | RequestValueType::Number => {
            let text = match (scalar_text(v), scale) {
                (Some(t), Some(scale)) => minor_units_to_decimal(&t, scale)
                    .ok_or("expected an integer amount in minor units")?,
                (Some(t), None) => normalise_decimal(&t).ok_or("expected a decimal number")?,
                (None, _) => return Err("expected a decimal number".into()),
            };
            if kind == RequestValueType::Decimal {
                Out::Str(text, cdata)
            } else {
                Out::Num(text)
            }
        }
    })
}

/// `-0012.50` → `-12.50`: a decimal written as a JSON number may be, digits kept as given.
/// `None` for anything else (exponents, `.5`, `5.`, words).
pub fn normalise_decimal(text: &str) -> Option<String> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, frac) = match body.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (body, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let mut out = String::new();
    let zero = whole == "0" && frac.is_none_or(|f| f.bytes().all(|b| b == b'0'));
    if neg && !zero {
        out.push('-');
    }
    out.push_str(whole);
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    Some(out)
}

/// An integer amount in minor units as a decimal with `scale` decimals: `1999`, 2 → `19.99`;
/// `-5`, 2 → `-0.05`; `1999`, 0 → `1999`. `None` when `units` is not an integer.
pub fn minor_units_to_decimal(units: &str, scale: u32) -> Option<String> {
    let (neg, digits) = match units.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, units.strip_prefix('+').unwrap_or(units)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = digits.trim_start_matches('0');
    let scale = usize::try_from(scale).ok()?;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let split = padded.len() - scale;
    let (whole, frac) = (padded.get(..split)?, padded.get(split..)?);
    let mut out = String::new();
    if neg && !digits.is_empty() {
        out.push('-');
    }
    out.push_str(whole);
    if scale > 0 {
        out.push('.');
        out.push_str(frac);
    }
    Some(out)
}

fn write_json(v: &Out, out: &mut String) {
    match v {
        Out::Null => out.push_str("null"),
        Out::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Out::Num(n) => out.push_str(n),
        Out::Str(s, _) => out.push_str(&Value::String(s.clone()).to_string()),
        Out::Arr(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Out::Obj(fields) => {
            out.push('{');
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_json(v, out);
            }
            out.push('}');
        }
    }
}

fn xml_escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

fn xml_text(v: &Out, out: &mut String) -> Result<(), String> {
    match v {
        Out::Null => {}
        Out::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Out::Num(n) => out.push_str(n),
        Out::Str(s, false) => xml_escape(s, out),
        Out::Str(s, true) => {
            out.push_str("<![CDATA[");
            out.push_str(&s.replace("]]>", "]]]]><![CDATA[>"));
            out.push_str("]]>");
        }
        Out::Arr(_) | Out::Obj(_) => {
            return Err("a list or an object cannot be an attribute or a text".into());
        }
    }
    Ok(())
}

fn xml_element(name: &str, v: &Out, out: &mut String) -> Result<(), String> {
    match v {
        Out::Arr(items) => {
            for item in items {
                xml_element(name, item, out)?;
            }
        }
        Out::Obj(fields) => {
            out.push('<');
            out.push_str(name);
            for (k, a) in fields {
                if let Some(attr) = k.strip_prefix('@') {
                    out.push(' ');
                    out.push_str(attr);
                    out.push_str("=\"");
                    let mut text = String::new();
                    xml_text(a, &mut text)?;
                    if matches!(a, Out::Str(_, true)) {
                        // Attributes cannot hold CDATA: escape instead.
                        text.clear();
                        if let Out::Str(s, _) = a {
                            xml_escape(s, &mut text);
                        }
                    }
                    out.push_str(&text);
                    out.push('"');
                }
            }
            out.push('>');
            for (k, child) in fields {
                if k == "#text" {
                    xml_text(child, out)?;
                } else if !k.starts_with('@') {
                    xml_element(k, child, out)?;
                }
            }
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        scalar => {
            out.push('<');
            out.push_str(name);
            out.push('>');
            xml_text(scalar, out)?;
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_units_for_any_scale() {
        // Expected values written by hand.
        let cases = [
            ("1999", 2, "19.99"),
            ("1999", 0, "1999"),
            ("1999", 3, "1.999"),
            ("5", 2, "0.05"),
            ("-5", 2, "-0.05"),
            ("0", 2, "0.00"),
            ("-0", 3, "0.000"),
            ("100", 2, "1.00"),
            ("007", 1, "0.7"),
            ("123456789012345678901", 2, "1234567890123456789.01"),
        ];
        for (units, scale, want) in cases {
            assert_eq!(
                minor_units_to_decimal(units, scale).as_deref(),
                Some(want),
                "{units} scale {scale}"
            );
        }
        for bad in ["", "-", "1.5", "1e3", "abc", " 1"] {
            assert_eq!(minor_units_to_decimal(bad, 2), None, "{bad}");
        }
    }

    #[test]
    fn decimals_are_normalised_for_json() {
        for (text, want) in [
            ("12.50", Some("12.50")),
            ("-0012.5", Some("-12.5")),
            ("+3", Some("3")),
            ("-0.00", Some("0.00")),
            (".5", None),
            ("5.", None),
            ("1e5", None),
            ("NaN", None),
        ] {
            assert_eq!(normalise_decimal(text).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn cdata_and_escaping() {
        let v = Out::Obj(vec![
            ("@id".into(), Out::Str("a\"b".into(), false)),
            ("note".into(), Out::Str("x]]>y<".into(), true)),
            (
                "n".into(),
                Out::Arr(vec![Out::Num("1".into()), Out::Num("2".into())]),
            ),
        ]);
        let mut out = String::new();
        xml_element("r", &v, &mut out).unwrap();
        assert_eq!(
            out,
            "<r id=\"a&quot;b\"><note><![CDATA[x]]]]><![CDATA[>y<]]></note><n>1</n><n>2</n></r>"
        );
    }
}
