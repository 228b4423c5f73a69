//! Placing a computed value into an XML request body as a top-level element (a child of the
//! root), for schemes that send their signature as a `<sign>` element of the signed body.

use quick_xml::Reader;
use quick_xml::events::Event;

/// Whether `name` may be written as an element name: a letter or `_` first, then letters,
/// digits, `_`, `-` and `.` (no prefix, no spaces, nothing to escape).
pub fn xml_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
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
    out
}

/// `body` with `<name>value</name>` (the value escaped) as a child of the root: it replaces
/// the first child element of that name, or is added as the root's last child.
pub fn place(body: &[u8], name: &str, value: &str) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the XML body is not UTF-8".to_string())?;
    let element = format!("<{name}>{}</{name}>", escape(value));
    let mut reader = Reader::from_str(text);
    let mut depth = 0usize;
    // Start of the child being replaced, while inside it.
    let mut replacing: Option<usize> = None;
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader
            .read_event()
            .map_err(|e| format!("the XML body cannot be read: {e}"))?;
        let after = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        match event {
            Event::Start(e) => {
                if depth == 1 && replacing.is_none() && e.local_name().as_ref() == name.as_bytes() {
                    replacing = Some(before);
                }
                depth += 1;
            }
            Event::Empty(e) => match depth {
                0 => {
                    // `<root/>`: open it, add the child, close it.
                    let tag = text.get(before..after).unwrap_or_default();
                    let open = tag.trim_end_matches("/>").trim_end();
                    let root = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    return Ok(splice(
                        text,
                        before,
                        after,
                        &format!("{open}>{element}</{root}>"),
                    ));
                }
                1 if replacing.is_none() && e.local_name().as_ref() == name.as_bytes() => {
                    return Ok(splice(text, before, after, &element));
                }
                _ => {}
            },
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                match (depth, replacing) {
                    (1, Some(start)) => return Ok(splice(text, start, after, &element)),
                    (0, _) => return Ok(splice(text, before, before, &element)),
                    _ => {}
                }
            }
            Event::Eof => return Err("the XML body has no root element".into()),
            _ => {}
        }
    }
}

fn splice(text: &str, from: usize, to: usize, with: &str) -> Vec<u8> {
    let mut out = String::with_capacity(text.len() + with.len());
    out.push_str(text.get(..from).unwrap_or_default());
    out.push_str(with);
    out.push_str(text.get(to..).unwrap_or_default());
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(body: &str) -> String {
        String::from_utf8(place(body.as_bytes(), "sign", "A&B").unwrap()).unwrap()
    }

    #[test]
    fn adds_or_replaces_a_child_of_the_root() {
        assert_eq!(
            placed("<?xml version=\"1.0\"?><xml><a>1</a><b><sign>x</sign></b></xml>"),
            "<?xml version=\"1.0\"?><xml><a>1</a><b><sign>x</sign></b><sign>A&amp;B</sign></xml>"
        );
        assert_eq!(
            placed("<xml><sign>old <i>x</i></sign><a>1</a></xml>"),
            "<xml><sign>A&amp;B</sign><a>1</a></xml>"
        );
        assert_eq!(
            placed("<xml><a>1</a><sign/></xml>"),
            "<xml><a>1</a><sign>A&amp;B</sign></xml>"
        );
        assert_eq!(
            placed("<xml v=\"1\"/>"),
            "<xml v=\"1\"><sign>A&amp;B</sign></xml>"
        );
        assert!(place(b"", "sign", "x").is_err());
        assert!(place(b"<xml><a></xml>", "sign", "x").is_err());
    }

    #[test]
    fn names() {
        assert!(xml_name_ok("sign"));
        assert!(xml_name_ok("sign_type-2.x"));
        assert!(!xml_name_ok(""));
        assert!(!xml_name_ok("1a"));
        assert!(!xml_name_ok("a b"));
        assert!(!xml_name_ok("a<b"));
    }
}
