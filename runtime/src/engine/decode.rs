//! Decoding platform answers (and callback bodies) into JSON values: JSON as is, form bodies as
//! an object of fields, XML as nested objects, plain text as one string.
//!
//! A form body keeps every field: a name seen once is a string, a name seen several times is an
//! array of its values in the order they came (`a=1&b=2&a=3` is `{"a": ["1", "3"], "b": "2"}`);
//! [`form_pairs`] gives the pairs themselves, in order, for signatures.
//!
//! Bounded checks on the raw bytes ([`count_pairs`], [`json_depth_within`],
//! [`xml_depth_within`]) let a callback refuse a hostile body before anything is built from it.
//!
//! XML becomes JSON by a fixed rule: an element's children become keys of an object (a name
//! seen twice becomes an array), attributes become `@name` keys, an element with only text
//! becomes that text, and text beside children is kept under `#text`. The root element's name
//! is the single top-level key, so `<xml><code>0</code></xml>` maps with `$.xml.code`.

use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::{Map, Value};

use crate::config::platform::BodyFormat;

/// Why a body does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the body is not valid {format}: {message}")]
pub struct DecodeError {
    /// The expected format.
    pub format: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Decodes `body` written in `format`.
pub fn decode(format: BodyFormat, body: &[u8]) -> Result<Value, DecodeError> {
    decode_within(format, body, MAX_DEPTH)
}

/// Decodes `body` written in `format`, refusing XML nested deeper than `max_depth`.
pub fn decode_within(
    format: BodyFormat,
    body: &[u8],
    max_depth: usize,
) -> Result<Value, DecodeError> {
    match format {
        BodyFormat::Json => serde_json::from_slice(body).map_err(|e| DecodeError {
            format: "JSON",
            message: e.to_string(),
        }),
        BodyFormat::Form => Ok(form_document(form_pairs(body)?)),
        BodyFormat::Xml => xml_to_json(body, max_depth),
        BodyFormat::Text => Ok(Value::String(String::from_utf8_lossy(body).into_owned())),
    }
}

/// The `name=value` pairs of a form body, decoded, every one in order.
pub fn form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, DecodeError> {
    serde_urlencoded::from_bytes(body).map_err(|e| DecodeError {
        format: "form data",
        message: e.to_string(),
    })
}

/// The document of form pairs: a name seen once is a string, a name seen several times an
/// array of its values in order.
pub fn form_document(pairs: Vec<(String, String)>) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        match m.get_mut(&k) {
            Some(Value::Array(items)) => items.push(Value::String(v)),
            Some(first) => {
                let earlier = first.take();
                *first = Value::Array(vec![earlier, Value::String(v)]);
            }
            None => {
                m.insert(k, Value::String(v));
            }
        }
    }
    Value::Object(m)
}

/// How many `name=value` pairs a form body or query string holds (empty pieces between `&`s
/// are not pairs), counted without decoding or allocating; stops counting past `limit`.
pub fn count_pairs(raw: &[u8], limit: usize) -> usize {
    let mut n = 0usize;
    for piece in raw.split(|b| *b == b'&') {
        if !piece.is_empty() {
            n += 1;
            if n > limit {
                break;
            }
        }
    }
    n
}

/// Checks that JSON arrays and objects nest at most `max` deep, by a scan of the bytes (strings
/// skipped) that builds nothing. Malformed JSON passes here and fails when decoded.
pub fn json_depth_within(body: &[u8], max: usize) -> Result<(), String> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(format!(
                        "JSON arrays and objects are nested deeper than {max} levels"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Checks, by a scan of the bytes that builds nothing (strings skipped), that JSON arrays and
/// objects nest at most `max_depth` deep and that the document holds at most `max_values`
/// values (array items and object members: counted as the arrays, objects and `,` seen, plus
/// one, which is never fewer). Malformed JSON passes here and fails when decoded.
pub fn json_shape_within(body: &[u8], max_depth: usize, max_values: usize) -> Result<(), String> {
    json_depth_within(body, max_depth)?;
    let mut values = 1usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' | b',' => {
                values += 1;
                if values > max_values {
                    return Err(format!(
                        "the JSON holds more than {max_values} values (array items and object members)"
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks that XML elements nest at most `max` deep, reading the events without building
/// anything. Malformed XML passes here and fails when decoded.
pub fn xml_depth_within(body: &[u8], max: usize) -> Result<(), String> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Ok(());
    };
    let mut reader = Reader::from_str(text);
    let mut depth = 0usize;
    loop {
        match reader.read_event() {
            Ok(Event::Start(_)) => {
                depth += 1;
                if depth > max {
                    return Err(format!("XML elements are nested deeper than {max} levels"));
                }
            }
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::Eof) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

/// Deepest XML nesting accepted in answers (serde_json's own limit for JSON).
pub const MAX_DEPTH: usize = 128;

struct Node {
    name: String,
    fields: Map<String, Value>,
    text: String,
}

impl Node {
    fn into_value(self) -> Value {
        let text = self.text.trim().to_string();
        if self.fields.is_empty() {
            return Value::String(text);
        }
        let mut fields = self.fields;
        if !text.is_empty() {
            fields.insert("#text".into(), Value::String(text));
        }
        Value::Object(fields)
    }
}

fn add_child(parent: &mut Map<String, Value>, name: String, value: Value) {
    match parent.get_mut(&name) {
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
        None => {
            parent.insert(name, value);
        }
    }
}

fn xml_to_json(body: &[u8], max_depth: usize) -> Result<Value, DecodeError> {
    let bad = |message: String| DecodeError {
        format: "XML",
        message,
    };
    let text = std::str::from_utf8(body).map_err(|_| bad("it is not UTF-8".into()))?;
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    let open = |e: &quick_xml::events::BytesStart<'_>| -> Result<Node, DecodeError> {
        let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
        let mut fields = Map::new();
        for a in e.attributes() {
            let a = a.map_err(|e| bad(e.to_string()))?;
            let key = format!("@{}", String::from_utf8_lossy(a.key.local_name().as_ref()));
            let value = a.unescape_value().map_err(|e| bad(e.to_string()))?;
            fields.insert(key, Value::String(value.into_owned()));
        }
        Ok(Node {
            name,
            fields,
            text: String::new(),
        })
    };
    loop {
        let event = reader
            .read_event()
            .map_err(|e| bad(format!("at byte {}: {e}", reader.buffer_position())))?;
        match event {
            Event::Start(e) => {
                // Deep nesting would make the value itself a hazard (recursive drops).
                if stack.len() >= max_depth {
                    return Err(bad(format!(
                        "elements are nested deeper than {max_depth} levels"
                    )));
                }
                stack.push(open(&e)?);
            }
            Event::Empty(e) => {
                let node = open(&e)?;
                let (name, value) = (node.name.clone(), node.into_value());
                match stack.last_mut() {
                    Some(parent) => add_child(&mut parent.fields, name, value),
                    None => root = Some((name, value)),
                }
            }
            Event::End(_) => {
                let node = stack
                    .pop()
                    .ok_or_else(|| bad("a closing tag without an opening one".into()))?;
                let (name, value) = (node.name.clone(), node.into_value());
                match stack.last_mut() {
                    Some(parent) => add_child(&mut parent.fields, name, value),
                    None => root = Some((name, value)),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text
                        .push_str(&t.decode().map_err(|e| bad(e.to_string()))?);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t.into_inner()));
                }
            }
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| bad(e.to_string()))?;
                let resolved = quick_xml::escape::unescape(&format!("&{name};"))
                    .map_err(|_| bad(format!("unknown entity &{name};")))?
                    .into_owned();
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&resolved);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(bad("the document ends inside an element".into()));
    }
    let (name, value) = root.ok_or_else(|| bad("there is no element".into()))?;
    let mut top = Map::new();
    top.insert(name, value);
    Ok(Value::Object(top))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xml_becomes_nested_objects() {
        let xml = br#"<?xml version="1.0"?><xml><code>0</code><msg>ok &amp; fine</msg><items><item id="1"><n>a</n></item><item id="2"><n><![CDATA[b<c]]></n></item></items><empty/></xml>"#;
        assert_eq!(
            decode(BodyFormat::Xml, xml).unwrap(),
            json!({"xml": {"code": "0", "msg": "ok & fine", "items": {"item": [{"@id": "1", "n": "a"}, {"@id": "2", "n": "b<c"}]}, "empty": ""}})
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}{}", "<a>".repeat(10_000), "</a>".repeat(10_000));
        let err = decode(BodyFormat::Xml, deep.as_bytes()).unwrap_err();
        assert!(err.message.contains("nested deeper than 128"), "{err}");
        let ok = format!("{}x{}", "<a>".repeat(100), "</a>".repeat(100));
        assert!(decode(BodyFormat::Xml, ok.as_bytes()).is_ok());
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert!(decode(BodyFormat::Xml, b"<a><b></a>").is_err());
        assert!(decode(BodyFormat::Xml, b"<a>").is_err());
        assert!(decode(BodyFormat::Json, b"{\"code\": ").is_err());
    }

    #[test]
    fn repeated_form_names_keep_every_value_in_order() {
        assert_eq!(
            decode(BodyFormat::Form, b"a=1&b=x+y&a=2&a=").unwrap(),
            json!({"a": ["1", "2", ""], "b": "x y"})
        );
        assert_eq!(
            form_pairs(b"a=1&b=x+y&a=2").unwrap(),
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".into(), "x y".into()),
                ("a".into(), "2".into())
            ]
        );
    }

    #[test]
    fn text_is_one_string() {
        assert_eq!(
            decode(BodyFormat::Text, b"ping \xff").unwrap(),
            json!("ping \u{fffd}")
        );
    }

    /// The issue's hostile form: 2 000 000 bytes of 300 000 empty fields. Counting stops just
    /// past the limit, and nothing is decoded.
    #[test]
    fn pairs_are_counted_without_decoding() {
        let mut body = b"sign=F".to_vec();
        for _ in 0..300_000 {
            body.extend_from_slice(b"&x=");
        }
        body.extend_from_slice(b"&pad=");
        body.resize(2_000_000, b'a');
        assert_eq!(count_pairs(&body, 1000), 1001);
        assert_eq!(count_pairs(&body, usize::MAX), 300_002);
        assert_eq!(count_pairs(b"", 10), 0);
        assert_eq!(count_pairs(b"&&a=1&&b&", 10), 2);
    }

    #[test]
    fn values_are_counted_on_the_bytes() {
        // Counted by hand: the object, `a`, the array, its 3 items (2 commas), `b`: at most 7.
        let doc = br#"{"a":[1,2,"x,y,[{"],"b":{}}"#;
        assert!(json_shape_within(doc, 8, 7).is_ok());
        let err = json_shape_within(doc, 8, 5).unwrap_err();
        assert!(err.contains("more than 5 values"), "{err}");
        assert!(json_shape_within(b"[[[]]]", 2, 100).is_err());
        assert!(json_shape_within(b"1", 1, 1).is_ok());
    }

    #[test]
    fn depth_is_checked_on_the_bytes() {
        assert!(json_depth_within(br#"{"a":{"b":[1]}}"#, 3).is_ok());
        let err = json_depth_within(br#"{"a":{"b":[[1]]}}"#, 3).unwrap_err();
        assert!(err.contains("deeper than 3"), "{err}");
        // Brackets inside strings, escaped quotes included, do not count.
        assert!(json_depth_within(br#"{"a":"[[[[\"{{{{"}"#, 1).is_ok());
        let deep = "[".repeat(1_000_000);
        assert!(json_depth_within(deep.as_bytes(), 32).is_err());
        assert!(xml_depth_within(b"<a><b><c/></b></a>", 2).is_ok());
        assert!(xml_depth_within(b"<a><b><c></c></b></a>", 2).is_err());
    }
}
