//! Building a request: a pure function of the plan, the input, the clock, the nonce and the
//! credentials. No I/O, so a signed request can be printed, snapshot-tested and diffed.

mod body_map;
mod xml_place;

pub use xml_place::xml_name_ok;

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::config::platform::HttpMethod;
use crate::config::recipe::PlaceTarget;
use crate::plan::{AuthPlan, BodyPlan, JsonTemplate, OperationPlan, PlatformPlan};
use crate::recipe::{Parts, RunEnv, Trace};
use crate::template::{
    CompiledTemplate, NONCE_KEY, NOW_KEY, UrlError, lookup, percent_encode, text_of,
};

/// A fully built (and signed) request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltRequest {
    /// HTTP method.
    pub method: HttpMethod,
    /// The URL including the encoded query string.
    pub url: String,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// The body bytes (empty when there is none).
    pub body: Vec<u8>,
    /// The body's content type, when there is a body.
    pub content_type: Option<String>,
    /// What the signing recipe computed, step by step.
    pub trace: Trace,
}

/// What a request is built from besides the plan.
#[derive(Debug, Clone)]
pub struct BuildInput<'a> {
    /// The canonical input of the operation.
    pub input: &'a Value,
    /// Credential values by name.
    pub credentials: &'a Map<String, Value>,
    /// The clock of this request.
    pub now: OffsetDateTime,
    /// A fixed nonce (previews, tests); random when absent.
    pub nonce: Option<String>,
    /// The access token, for platforms authenticating with a token endpoint.
    pub token: Option<String>,
}

/// Why a request could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A template failed to render.
    #[error("{platform}/{operation}: cannot render {place}: {message}")]
    Render {
        /// Platform.
        platform: String,
        /// Operation.
        operation: String,
        /// Which part of the request.
        place: String,
        /// What went wrong.
        message: String,
    },
    /// A credential the platform needs has no value.
    #[error(
        "{platform}: credential '{name}' has no value; push it to the credential store, put it in the credentials file or set {env}"
    )]
    MissingCredential {
        /// Platform.
        platform: String,
        /// Credential name.
        name: String,
        /// The environment variable that would provide it.
        env: String,
    },
    /// An input cannot form a valid request (a line break in a header, a dot segment in the
    /// URL's path). The value itself is not repeated.
    #[error("{platform}/{operation}: {fields}: {message}")]
    InvalidInput {
        /// Platform.
        platform: String,
        /// Operation.
        operation: String,
        /// The input fields, dotted (`input.reason`).
        fields: String,
        /// Why the request cannot be formed.
        message: String,
    },
    /// The signing recipe failed.
    #[error("{platform}/{operation}: {source}")]
    Sign {
        /// Platform.
        platform: String,
        /// Operation.
        operation: String,
        /// The failure.
        source: crate::recipe::RecipeError,
    },
}

/// The environment variable that provides a credential: `ENTREPOT_CREDENTIAL_<PLATFORM>_<NAME>`.
pub fn credential_env_var(platform: &str, name: &str) -> String {
    let up = |s: &str| s.to_ascii_uppercase().replace('-', "_");
    format!("ENTREPOT_CREDENTIAL_{}_{}", up(platform), up(name))
}

/// Builds and signs the request of `op` on `platform`.
pub fn build(
    platform: &PlatformPlan,
    op: &OperationPlan,
    bi: &BuildInput<'_>,
) -> Result<BuiltRequest, BuildError> {
    for name in &platform.credentials {
        let has = bi.credentials.get(name).is_some_and(|v| !v.is_null());
        if !has {
            return Err(BuildError::MissingCredential {
                platform: platform.name.clone(),
                name: name.clone(),
                env: credential_env_var(&platform.name, name),
            });
        }
    }
    let now_ms = i64::try_from(bi.now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    let mut ctx = Map::new();
    ctx.insert("input".into(), bi.input.clone());
    ctx.insert("settings".into(), Value::Object(platform.settings.clone()));
    ctx.insert("credentials".into(), Value::Object(bi.credentials.clone()));
    ctx.insert("platform".into(), Value::String(platform.name.clone()));
    ctx.insert("operation".into(), Value::String(op.name.clone()));
    ctx.insert(NOW_KEY.into(), Value::from(now_ms));
    if let Some(n) = &bi.nonce {
        ctx.insert(NONCE_KEY.into(), Value::String(n.clone()));
    }
    let ctx = Value::Object(ctx);
    let err = |place: &str, message: String| BuildError::Render {
        platform: platform.name.clone(),
        operation: op.name.clone(),
        place: place.to_string(),
        message,
    };
    let render = |t: &CompiledTemplate, place: &str| t.render(&ctx).map_err(|m| err(place, m));
    let pairs = |list: &[(String, CompiledTemplate)], what: &str| {
        list.iter()
            .map(|(k, t)| Ok((k.clone(), render(t, &format!("{what} '{k}'"))?)))
            .collect::<Result<Vec<_>, BuildError>>()
    };
    let req = &op.request;
    let invalid_input = |fields: &[String], message: String| BuildError::InvalidInput {
        platform: platform.name.clone(),
        operation: op.name.clone(),
        fields: fields.join(", "),
        message,
    };
    let base_url = req.url.render(&ctx).map_err(|e| match e {
        UrlError::Render(m) => err("the url", m),
        UrlError::DotSegment(fields) => invalid_input(
            &fields,
            "a value placed in the URL's path cannot be '.' or '..' (it would move the request to another path)".into(),
        ),
        UrlError::InputBeforePath(fields) => err(
            "the url",
            format!("{} lands before the URL's path", fields.join(", ")),
        ),
    })?;
    if let Err(e) = reqwest::Url::parse(&base_url) {
        return Err(err(
            "the url",
            format!(
                "the result is not a valid URL ({e}); check `request.url` and the settings it reads"
            ),
        ));
    }
    let mut query = pairs(&req.query, "query parameter")?;
    if req.omit_empty {
        query.retain(|(_, v)| !v.is_empty());
    }
    let mut headers = pairs(&req.headers, "header")?;
    let (mut form, mut json_bytes, fixed_type) = match &req.body {
        BodyPlan::None => (None, None, None),
        BodyPlan::Form(fields) => (Some(pairs(fields, "form field")?), None, None),
        BodyPlan::Json(t) => {
            let v = render_json(t, &ctx).map_err(|m| err("the JSON body", m))?;
            (
                None,
                Some(serde_json::to_vec(&v).unwrap_or_default()),
                Some("application/json"),
            )
        }
        BodyPlan::Xml(t) => {
            let v = render_json(t, &ctx).map_err(|m| err("the XML body", m))?;
            (
                None,
                Some(to_xml(&v).into_bytes()),
                Some("application/xml; charset=utf-8"),
            )
        }
        BodyPlan::Mapped(m) => {
            let (bytes, ctype) = body_map::render(m, &ctx).map_err(|e| {
                if e.input {
                    invalid_input(&[format!("body field {}", e.field)], e.message)
                } else {
                    err(&format!("body field {}", e.field), e.message)
                }
            })?;
            (None, Some(bytes), Some(ctype))
        }
    };
    let body_of = |form: &Option<Vec<(String, String)>>, json_bytes: &Option<Vec<u8>>| match (
        form, json_bytes,
    ) {
        (Some(f), _) => encode_pairs(f, true).into_bytes(),
        (None, Some(j)) => j.clone(),
        (None, None) => Vec::new(),
    };
    match &platform.auth {
        AuthPlan::None => {}
        AuthPlan::Header(name, t) => {
            set_header(&mut headers, name.clone(), render(t, "the auth header")?)
        }
        AuthPlan::Query(name, t) => {
            set_pair(&mut query, name.clone(), render(t, "the auth parameter")?)
        }
        AuthPlan::Basic(u, p) => {
            use base64::Engine as _;
            let pair = format!(
                "{}:{}",
                render(u, "the user name")?,
                render(p, "the password")?
            );
            let value = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            );
            set_header(&mut headers, "Authorization".into(), value);
        }
        AuthPlan::OAuth2(o) => {
            let token = bi
                .token
                .clone()
                .ok_or_else(|| err("the access token", "no token was obtained".into()))?;
            let mut tctx = Map::new();
            tctx.insert("token".into(), Value::String(token));
            let value = o
                .value
                .render(&Value::Object(tctx))
                .map_err(|m| err("the token header", m))?;
            set_header(&mut headers, o.header.clone(), value);
        }
    }
    // A declared Content-Type replaces the default one (one header on the wire), and the
    // signing recipe sees the content type that will be sent.
    let content_type_of = |form: &Option<Vec<(String, String)>>, headers: &[(String, String)]| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone())
            .or_else(|| match (form, fixed_type) {
                (Some(_), _) => Some("application/x-www-form-urlencoded; charset=utf-8".into()),
                (None, Some(t)) => Some(t.to_string()),
                (None, None) => None,
            })
    };
    let mut trace = Trace::default();
    if let Some(sign) = &req.sign {
        let mut seen = headers.clone();
        if let Some(ct) = content_type_of(&form, &headers) {
            set_header(&mut seen, "Content-Type".into(), ct);
        }
        // A query written in the `url` template is part of the request like `query:`: the
        // recipe sees it first, as it is sent.
        let url = with_query(&base_url, &query);
        let raw_query = url_query(&url).to_string();
        let mut seen_query: Vec<(String, String)> =
            serde_urlencoded::from_str(url_query(&base_url)).unwrap_or_default();
        seen_query.extend(query.iter().cloned());
        let parts = Parts {
            method: method_text(req.method).to_string(),
            url,
            path: url_path(&base_url),
            query: seen_query,
            raw_query,
            form: form.clone().unwrap_or_default(),
            headers: seen,
            body: body_of(&form, &json_bytes),
        };
        let env = RunEnv {
            credentials: bi.credentials,
            settings: &platform.settings,
            platform: &platform.name,
            now: bi.now,
            nonce: bi.nonce.clone(),
        };
        let (placed, t) = sign
            .run_operation(&parts, &env, &op.name)
            .map_err(|source| BuildError::Sign {
                platform: platform.name.clone(),
                operation: op.name.clone(),
                source,
            })?;
        trace = t;
        for (target, name, value) in placed {
            match target {
                PlaceTarget::Query => set_pair(&mut query, name, value),
                PlaceTarget::Form => set_pair(form.get_or_insert_with(Vec::new), name, value),
                PlaceTarget::Header => set_header(&mut headers, name, value),
                PlaceTarget::Xml => {
                    let body = json_bytes.as_deref().unwrap_or_default();
                    json_bytes = Some(
                        xml_place::place(body, &name, &value)
                            .map_err(|m| err(&format!("the XML element <{name}>"), m))?,
                    );
                }
            }
        }
    }
    check_headers(&headers, &req.headers, &ctx).map_err(|e| match e {
        HeaderError::Input(fields) => invalid_input(
            &fields,
            "cannot be sent in a header: it holds a line break or another control character"
                .into(),
        ),
        HeaderError::Config(name) => err(
            &format!("header '{name}'"),
            "the value holds a line break or another control character, or the name is not a valid header name; check its template and the credentials or settings it reads".into(),
        ),
    })?;
    let content_type = content_type_of(&form, &headers);
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));

    Ok(BuiltRequest {
        method: req.method,
        url: with_query(&base_url, &query),
        headers,
        body: body_of(&form, &json_bytes),
        content_type,
        trace,
    })
}

/// Whether `text` may be sent as a header value (RFC 9110 field-value: no control
/// characters but tab).
fn header_value_ok(text: &str) -> bool {
    text.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

enum HeaderError {
    /// These inputs hold what a header cannot carry.
    Input(Vec<String>),
    /// The header (by name) is invalid through the configuration.
    Config(String),
}

/// Checks the final headers before anything is sent; an invalid value is traced back to the
/// inputs its template reads.
fn check_headers(
    headers: &[(String, String)],
    templates: &[(String, CompiledTemplate)],
    ctx: &Value,
) -> Result<(), HeaderError> {
    for (name, value) in headers {
        let name_ok = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok();
        if name_ok && header_value_ok(value) {
            continue;
        }
        let inputs = templates
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, t)| t.input_paths())
            .unwrap_or_default();
        let bad: Vec<String> = inputs
            .iter()
            .filter(|p| {
                let path: Vec<String> = p.split('.').map(str::to_string).collect();
                lookup(ctx, &path).is_some_and(|v| !header_value_ok(&text_of(v)))
            })
            .cloned()
            .collect();
        return Err(match (name_ok, bad.is_empty()) {
            (true, false) => HeaderError::Input(bad),
            _ => HeaderError::Config(name.clone()),
        });
    }
    Ok(())
}

fn set_pair(list: &mut Vec<(String, String)>, name: String, value: String) {
    match list.iter_mut().find(|(k, _)| *k == name) {
        Some((_, v)) => *v = value,
        None => list.push((name, value)),
    }
}

fn set_header(list: &mut Vec<(String, String)>, name: String, value: String) {
    match list.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(&name)) {
        Some((_, v)) => *v = value,
        None => list.push((name, value)),
    }
}

/// The method as text.
pub fn method_text(m: HttpMethod) -> &'static str {
    match m {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Delete => "DELETE",
    }
}

/// `k=v&k=v`, percent-encoded (RFC 3986; `+` for spaces in form bodies).
pub fn encode_pairs(pairs: &[(String, String)], form: bool) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k, form), percent_encode(v, form)))
        .collect::<Vec<_>>()
        .join("&")
}

fn with_query(url: &str, query: &[(String, String)]) -> String {
    if query.is_empty() {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{}", encode_pairs(query, false))
}

/// The query of a URL as written: what follows the first `?`, up to a `#`; empty when none.
fn url_query(url: &str) -> &str {
    url.split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or_default())
        .unwrap_or_default()
}

/// The path of a URL: what follows the authority, up to the query; `/` when empty.
pub fn url_path(url: &str) -> String {
    let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let path = after_scheme
        .find('/')
        .map(|i| after_scheme.get(i..).unwrap_or("/"))
        .unwrap_or("/");
    let path = path.split(['?', '#']).next().unwrap_or("/");
    if path.is_empty() {
        "/".into()
    } else {
        path.to_string()
    }
}

fn render_json(t: &JsonTemplate, ctx: &Value) -> Result<Value, String> {
    Ok(match t {
        JsonTemplate::Value(v) => v.clone(),
        JsonTemplate::Text(t) => match t.as_ref_path() {
            // A whole-value reference keeps the referenced value's JSON type.
            Some(path) => lookup(ctx, path).cloned().unwrap_or(Value::Null),
            None => Value::String(t.render(ctx)?),
        },
        JsonTemplate::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_json(i, ctx))
                .collect::<Result<_, _>>()?,
        ),
        JsonTemplate::Object(fields) => {
            let mut m = Map::new();
            for (k, v) in fields {
                m.insert(k.clone(), render_json(v, ctx)?);
            }
            Value::Object(m)
        }
    })
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

fn xml_element(name: &str, v: &Value, out: &mut String) {
    match v {
        Value::Array(items) => {
            for item in items {
                xml_element(name, item, out);
            }
        }
        Value::Object(m) => {
            out.push('<');
            out.push_str(name);
            for (k, a) in m.iter().filter(|(k, _)| k.starts_with('@')) {
                out.push(' ');
                out.push_str(k.trim_start_matches('@'));
                out.push_str("=\"");
                xml_escape(&crate::template::text_of(a), out);
                out.push('"');
            }
            out.push('>');
            if let Some(t) = m.get("#text") {
                xml_escape(&crate::template::text_of(t), out);
            }
            for (k, child) in m
                .iter()
                .filter(|(k, _)| !k.starts_with('@') && *k != "#text")
            {
                xml_element(k, child, out);
            }
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        other => {
            out.push('<');
            out.push_str(name);
            out.push('>');
            xml_escape(&crate::template::text_of(other), out);
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
    }
}

/// Writes a JSON description of an XML document (one top-level key: the root) as XML.
pub fn to_xml(v: &Value) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    if let Value::Object(m) = v {
        for (name, child) in m {
            xml_element(name, child, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_bodies_are_escaped_and_read_back() {
        let v = serde_json::json!({"req": {"@v": "2", "id": "a<b & \"c\"", "item": [{"n": 1}, {"n": 2}], "note": {"@lang": "zh", "#text": "x"}}});
        let xml = to_xml(&v);
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><req v=\"2\"><id>a&lt;b &amp; &quot;c&quot;</id><item><n>1</n></item><item><n>2</n></item><note lang=\"zh\">x</note></req>"
        );
        // The answer decoder reads it back to the same shape (numbers become text).
        let back =
            crate::engine::decode::decode(crate::config::platform::BodyFormat::Xml, xml.as_bytes())
                .unwrap();
        assert_eq!(
            back,
            serde_json::json!({"req": {"@v": "2", "id": "a<b & \"c\"", "item": [{"n": "1"}, {"n": "2"}], "note": {"@lang": "zh", "#text": "x"}}})
        );
    }

    #[test]
    fn url_paths() {
        assert_eq!(url_path("https://example.amazonaws.com/"), "/");
        assert_eq!(url_path("https://example.amazonaws.com"), "/");
        assert_eq!(url_path("http://h:1/a/b?x=1"), "/a/b");
        assert_eq!(
            with_query("http://h/a", &[("k".into(), "a b&c".into())]),
            "http://h/a?k=a%20b%26c"
        );
        assert_eq!(encode_pairs(&[("k".into(), "a b".into())], true), "k=a+b");
    }
}
