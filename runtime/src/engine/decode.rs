//! Decoding platform answers (and callback bodies) into JSON values: JSON as is, form bodies as
//! an object of fields, XML as nested objects.
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
    match format {
        BodyFormat::Json => serde_json::from_slice(body).map_err(|e| DecodeError {
            format: "JSON",
            message: e.to_string(),
        }),
        BodyFormat::Form => {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(body).map_err(|e| DecodeError {
                    format: "form data",
                    message: e.to_string(),
                })?;
            let mut m = Map::new();
            for (k, v) in pairs {
                m.entry(k).or_insert(Value::String(v));
            }
            Ok(Value::Object(m))
        }
        BodyFormat::Xml => xml_to_json(body),
    }
}

/// Deepest XML nesting accepted (serde_json's own limit for JSON).
const MAX_DEPTH: usize = 128;

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

fn xml_to_json(body: &[u8]) -> Result<Value, DecodeError> {
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
                if stack.len() >= MAX_DEPTH {
                    return Err(bad(format!(
                        "elements are nested deeper than {MAX_DEPTH} levels"
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
        assert_eq!(
            decode(BodyFormat::Form, b"a=1&b=x+y&a=2").unwrap(),
            json!({"a": "1", "b": "x y"})
        );
    }
}
