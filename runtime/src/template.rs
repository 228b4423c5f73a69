//! Templates: compiled once at load, rendered per request without parsing.
//!
//! Templates are Handlebars with HTML escaping off and a fixed set of helpers. A template
//! without `{{` is kept as literal text, and a template that is exactly one reference such as
//! `{{body}}` is kept as that reference, so the common cases never touch the Handlebars engine.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, PathSeg, RenderContext, RenderError,
    RenderErrorReason, Renderable, Template,
};
use serde_json::Value;

use crate::timefmt::{TimeFormat, parse_offset};

/// Helpers entrepot adds to Handlebars.
pub const HELPERS: &[&str] = &[
    "raw",
    "join",
    "json",
    "urlencode",
    "default",
    "upper",
    "lower",
    "now",
    "format_time",
    "uuid",
    "fen_to_yuan",
    "yuan_to_fen",
    "base64_encode",
    "base64_decode",
    "base64url_encode",
    "base64url_decode",
    "hex_to_base64",
    "hex_to_base64url",
    "base64_to_hex",
    "replace",
    "substring",
    "split_part",
    "canonical_json",
];

/// Helpers Handlebars itself provides.
const BUILTIN_HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "eq", "ne", "gt", "gte", "lt", "lte", "and", "or",
    "not", "len",
];

/// Helpers that change the context inside their block, so names there are relative to it.
const SCOPING_HELPERS: &[&str] = &["each", "with"];

/// Root key of the render context holding the request's clock, as Unix milliseconds.
pub const NOW_KEY: &str = "_now_ms";
/// Root key of the render context holding the request's nonce.
pub const NONCE_KEY: &str = "_nonce";

static REGISTRY: LazyLock<Handlebars<'static>> = LazyLock::new(|| {
    let mut r = Handlebars::new();
    r.register_escape_fn(handlebars::no_escape);
    r.register_helper("raw", Box::new(raw));
    r.register_helper("join", Box::new(join));
    r.register_helper("json", Box::new(json));
    r.register_helper("urlencode", Box::new(urlencode));
    r.register_helper("default", Box::new(default));
    r.register_helper("upper", Box::new(upper));
    r.register_helper("lower", Box::new(lower));
    r.register_helper("now", Box::new(now));
    r.register_helper("format_time", Box::new(format_time));
    r.register_helper("uuid", Box::new(uuid));
    r.register_helper("fen_to_yuan", Box::new(fen_to_yuan));
    r.register_helper("yuan_to_fen", Box::new(yuan_to_fen));
    r.register_helper("base64_encode", Box::new(base64_encode));
    r.register_helper("base64_decode", Box::new(base64_decode));
    r.register_helper("base64url_encode", Box::new(base64url_encode));
    r.register_helper("base64url_decode", Box::new(base64url_decode));
    r.register_helper("hex_to_base64", Box::new(hex_to_base64));
    r.register_helper("hex_to_base64url", Box::new(hex_to_base64url));
    r.register_helper("base64_to_hex", Box::new(base64_to_hex));
    r.register_helper("replace", Box::new(replace));
    r.register_helper("substring", Box::new(substring));
    r.register_helper("split_part", Box::new(split_part));
    r.register_helper("canonical_json", Box::new(canonical_json));
    r
});

/// A template ready to render.
#[derive(Debug, Clone)]
pub struct CompiledTemplate {
    source: String,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    Literal(String),
    Ref(Vec<String>),
    Engine(Arc<Template>),
}

/// What a template refers to, found at compile time.
#[derive(Debug, Default, Clone)]
pub struct Analysis {
    /// Helper names called.
    pub helpers: Vec<String>,
    /// Variable paths read at the top level (outside `each`/`with` blocks), as segments.
    pub paths: Vec<Vec<String>>,
    /// Literal time formats and offsets given to `now`.
    pub now_args: Vec<String>,
    /// Of `paths`, those written out directly (`{{input.x}}`), not given to a helper.
    pub outputs: Vec<Vec<String>>,
    /// Paths read inside `each`/`with` blocks (or through `@root`/`../`), resolved to the
    /// top level where the block's context is a known path: a segment `[]` stands for "an
    /// element of the list before it" (`{{#each input.lines}}{{sku_id}}{{/each}}` reads
    /// `input.lines.[].sku_id`).
    pub scoped: Vec<Vec<String>>,
}

/// The segment of an analysed path that stands for an element of a list (inside `each`).
pub const ELEMENT: &str = "[]";

/// Where analysis is in a template: the context of each enclosing block, outermost first; the
/// root is `Some([])`, a block over something not a plain path is `None` (its context is
/// unknown, so relative paths inside are not resolved).
struct Scopes(Vec<Option<Vec<String>>>);

impl Scopes {
    fn root() -> Self {
        Scopes(vec![Some(Vec::new())])
    }

    fn depth(&self) -> usize {
        self.0.len() - 1
    }

    /// The absolute path that `written` (a path as written at this point: `x.y`, `this.x`,
    /// `../x`, `@root.x`) leads to, if known.
    fn resolve(&self, written: &str) -> Option<Vec<String>> {
        let mut level = self.0.len() - 1;
        let mut rest = written;
        if let Some(r) = rest.strip_prefix("@root") {
            level = 0;
            rest = r.trim_start_matches(['.', '/']);
        } else {
            while let Some(r) = rest.strip_prefix("../") {
                level = level.checked_sub(1)?;
                rest = r;
            }
        }
        let mut out = self.0.get(level)?.clone()?;
        for seg in rest.split(['.', '/']) {
            match seg {
                "" | "this" => {}
                s if s.starts_with('@') || s.starts_with('[') => return None,
                s => out.push(s.to_string()),
            }
        }
        Some(out)
    }
}

/// A problem with a template, found at compile time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateProblem {
    /// What is wrong.
    pub message: String,
    /// A suggested fix.
    pub hint: Option<String>,
    /// Whether it is a syntax error (otherwise an unknown helper).
    pub syntax: bool,
}

impl CompiledTemplate {
    /// Parses a template. Syntax errors and unknown helpers are problems.
    pub fn compile(source: &str) -> Result<(Self, Analysis), TemplateProblem> {
        if !source.contains("{{") {
            return Ok((
                CompiledTemplate {
                    source: source.to_string(),
                    body: Body::Literal(source.to_string()),
                },
                Analysis::default(),
            ));
        }
        let template = Template::compile(source).map_err(|e| TemplateProblem {
            message: format!("template does not parse: {}", e.reason()),
            hint: Some(
                "templates use {{name}}, {{helper arg 'text'}} and {{#if x}}...{{/if}}".into(),
            ),
            syntax: true,
        })?;
        let mut analysis = Analysis::default();
        analyse(&template.elements, &mut Scopes::root(), &mut analysis);
        for name in &analysis.helpers {
            if !HELPERS.contains(&name.as_str()) && !BUILTIN_HELPERS.contains(&name.as_str()) {
                let known = HELPERS.iter().chain(BUILTIN_HELPERS).copied();
                return Err(TemplateProblem {
                    message: format!("unknown template helper '{name}'"),
                    hint: Some(match crate::diagnostics::did_you_mean(name, known) {
                        Some(best) => format!("did you mean '{best}'?"),
                        None => format!("available helpers: {}", HELPERS.join(", ")),
                    }),
                    syntax: false,
                });
            }
        }
        let body = match single_ref(&template) {
            Some(path) => Body::Ref(path),
            None => Body::Engine(Arc::new(template)),
        };
        Ok((
            CompiledTemplate {
                source: source.to_string(),
                body,
            },
            analysis,
        ))
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// When the template is exactly one reference (`{{a.b}}`), its path.
    pub fn as_ref_path(&self) -> Option<&[String]> {
        match &self.body {
            Body::Ref(p) => Some(p),
            _ => None,
        }
    }

    /// When the template has no placeholders, its text.
    pub fn as_literal(&self) -> Option<&str> {
        match &self.body {
            Body::Literal(s) => Some(s),
            _ => None,
        }
    }

    /// The `input.*` paths the template reads (outside `each`/`with` blocks), dotted.
    pub fn input_paths(&self) -> Vec<String> {
        match &self.body {
            Body::Literal(_) => Vec::new(),
            Body::Ref(path) => input_paths_of(std::slice::from_ref(path)),
            Body::Engine(t) => {
                let mut a = Analysis::default();
                analyse(&t.elements, &mut Scopes::root(), &mut a);
                input_paths_of(&a.paths)
            }
        }
    }

    /// Renders over `data`. Missing values render as empty text.
    pub fn render(&self, data: &Value) -> Result<String, String> {
        match &self.body {
            Body::Literal(s) => Ok(s.clone()),
            Body::Ref(path) => Ok(lookup(data, path).map(text_of).unwrap_or_default()),
            Body::Engine(template) => {
                let ctx = Context::wraps(data).map_err(|e| e.to_string())?;
                let mut rc = RenderContext::new(None);
                let mut out = StringOut(String::new());
                template
                    .render(&REGISTRY, &ctx, &mut rc, &mut out)
                    .map_err(|e| render_error_text(&e))?;
                Ok(out.0)
            }
        }
    }
}

fn input_paths_of(paths: &[Vec<String>]) -> Vec<String> {
    let mut out: Vec<String> = paths
        .iter()
        .filter(|p| p.first().is_some_and(|r| r == "input"))
        .map(|p| p.join("."))
        .collect();
    out.dedup();
    out
}

/// A request URL template. Each value is encoded for the part of the URL it lands in, so a
/// value can never change the URL's shape:
///
/// - in the path (after the first `/` following the host), a value is one path segment:
///   every byte outside `A-Z a-z 0-9 - . _ ~` is percent-encoded (`/`, `?`, `#`, `%` too),
///   and a value that would make a whole segment `.` or `..` is refused;
/// - in an inline query or fragment (after `?` or `#`), a value is percent-encoded the same
///   way, so it cannot add parameters;
/// - before the path (scheme, host, a leading `{{settings.base_url}}`), values are inserted
///   as they are: only settings, credentials and the platform's own names may appear there,
///   never `input` (a load-time error).
///
/// `{{raw x}}` inserts a value unencoded (for a configured path prefix with slashes);
/// `{{urlencode x}}` is already encoded and is kept as it is. Neither may be given an input:
/// that is a load-time error.
#[derive(Debug, Clone)]
pub struct UrlTemplate {
    source: String,
    parts: Vec<UrlPart>,
}

#[derive(Debug, Clone)]
enum UrlPart {
    Literal(String),
    Value {
        template: Arc<Template>,
        /// `raw` or `urlencode`: inserted as rendered.
        verbatim: bool,
        raw: bool,
        /// The `input.*` paths it reads.
        inputs: Vec<String>,
    },
}

/// Where a URL template places input values where they could reshape the URL (load time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlProblem {
    /// Input values before the path: they could change the scheme or the host.
    InputBeforePath(Vec<String>),
    /// Input values given to `raw` or `urlencode`, left unencoded or unchecked.
    VerbatimInput(Vec<String>),
}

/// Why a URL could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// A template failed to render.
    Render(String),
    /// Input values would form a `.` or `..` path segment.
    DotSegment(Vec<String>),
    /// Input values landed before the path.
    InputBeforePath(Vec<String>),
}

/// Which part of a URL the text so far ends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UrlZone {
    BeforePath,
    Path,
    QueryOrFragment,
}

fn zone_of(text: &str) -> UrlZone {
    if text.contains(['?', '#']) {
        return UrlZone::QueryOrFragment;
    }
    let rest = text.split_once("://").map(|(_, r)| r).unwrap_or(text);
    if rest.contains('/') {
        UrlZone::Path
    } else {
        UrlZone::BeforePath
    }
}

impl UrlTemplate {
    /// Parses a URL template; problems are those [`CompiledTemplate::compile`] finds, plus
    /// the places where inputs could reshape the URL.
    pub fn compile(source: &str) -> Result<(Self, Analysis, Vec<UrlProblem>), TemplateProblem> {
        let (_, analysis) = CompiledTemplate::compile(source)?;
        if !source.contains("{{") {
            let t = UrlTemplate {
                source: source.to_string(),
                parts: vec![UrlPart::Literal(source.to_string())],
            };
            return Ok((t, analysis, Vec::new()));
        }
        let template = Template::compile(source).map_err(|e| TemplateProblem {
            message: format!("template does not parse: {}", e.reason()),
            hint: None,
            syntax: true,
        })?;
        let mut parts = Vec::new();
        let mut problems = Vec::new();
        // Literal text only: where a value lands, as far as can be known before rendering.
        let mut literal = String::new();
        for (i, e) in template.elements.iter().enumerate() {
            match e {
                TemplateElement::RawString(text) => {
                    literal.push_str(text);
                    parts.push(UrlPart::Literal(text.clone()));
                }
                TemplateElement::Comment(_) => {}
                other => {
                    let mut a = Analysis::default();
                    analyse(std::slice::from_ref(other), &mut Scopes::root(), &mut a);
                    let inputs = input_paths_of(&a.paths);
                    let helper = match other {
                        TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                            match &h.name {
                                Parameter::Name(n) if !h.params.is_empty() => Some(n.as_str()),
                                _ => None,
                            }
                        }
                        _ => None,
                    };
                    let raw = helper == Some("raw");
                    let verbatim = raw || helper == Some("urlencode");
                    if !inputs.is_empty() {
                        if zone_of(&literal) == UrlZone::BeforePath {
                            problems.push(UrlProblem::InputBeforePath(inputs.clone()));
                        } else if verbatim {
                            problems.push(UrlProblem::VerbatimInput(inputs.clone()));
                        }
                    }
                    let mut sub = Template::new();
                    sub.elements = vec![other.clone()];
                    sub.mapping = template.mapping.get(i).cloned().into_iter().collect();
                    parts.push(UrlPart::Value {
                        template: Arc::new(sub),
                        verbatim,
                        raw,
                        inputs,
                    });
                }
            }
        }
        Ok((
            UrlTemplate {
                source: source.to_string(),
                parts,
            },
            analysis,
            problems,
        ))
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders over `data`, encoding each value for the part of the URL it lands in.
    pub fn render(&self, data: &Value) -> Result<String, UrlError> {
        let mut out = String::new();
        // Byte ranges of encoded values in the path, with the inputs they read.
        let mut placed: Vec<(usize, usize, &[String])> = Vec::new();
        for part in &self.parts {
            match part {
                UrlPart::Literal(text) => out.push_str(text),
                UrlPart::Value {
                    template,
                    verbatim,
                    raw,
                    inputs,
                } => {
                    let ctx = Context::wraps(data).map_err(|e| UrlError::Render(e.to_string()))?;
                    let mut rc = RenderContext::new(None);
                    let mut text = StringOut(String::new());
                    template
                        .render(&REGISTRY, &ctx, &mut rc, &mut text)
                        .map_err(|e| UrlError::Render(render_error_text(&e)))?;
                    let text = text.0;
                    let zone = zone_of(&out);
                    if zone == UrlZone::BeforePath {
                        if !inputs.is_empty() {
                            return Err(UrlError::InputBeforePath(inputs.clone()));
                        }
                        out.push_str(&text);
                        continue;
                    }
                    let start = out.len();
                    if *verbatim {
                        out.push_str(&text);
                    } else {
                        out.push_str(&percent_encode(&text, false));
                    }
                    if zone == UrlZone::Path && !raw {
                        placed.push((start, out.len(), inputs));
                    }
                }
            }
        }
        // No value may make (part of) a `.` or `..` segment: URL parsers resolve those.
        let after_scheme = out.find("://").map(|i| i + 3).unwrap_or(0);
        let path_start = out
            .get(after_scheme..)
            .and_then(|r| r.find('/'))
            .map(|i| i + after_scheme);
        if let Some(path_start) = path_start {
            let path_end = out
                .get(path_start..)
                .and_then(|r| r.find(['?', '#']))
                .map(|i| i + path_start)
                .unwrap_or(out.len());
            let mut at = path_start;
            for seg in out.get(path_start..path_end).unwrap_or("").split('/') {
                let (s, e) = (at, at + seg.len());
                at = e + 1;
                if seg != "." && seg != ".." {
                    continue;
                }
                let mut fields: Vec<String> = placed
                    .iter()
                    .filter(|(ps, pe, _)| *ps < e && s < *pe)
                    .flat_map(|(_, _, inputs)| inputs.iter().cloned())
                    .collect();
                if placed.iter().any(|(ps, pe, _)| *ps < e && s < *pe) {
                    fields.dedup();
                    return Err(UrlError::DotSegment(fields));
                }
            }
        }
        Ok(out)
    }
}

fn render_error_text(e: &RenderError) -> String {
    // The reason names the helper or value; the template text is known to the caller.
    e.reason().to_string()
}

/// Looks a path of keys up in a JSON value; numeric keys index arrays.
pub fn lookup<'v>(data: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(data, |v, k| match v {
        Value::Object(m) => m.get(k),
        Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// The text a value renders as: strings as they are, `null` as nothing, others as JSON.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

struct StringOut(String);

impl Output for StringOut {
    fn write(&mut self, seg: &str) -> Result<(), std::io::Error> {
        self.0.push_str(seg);
        Ok(())
    }
}

fn path_segments(segs: &[PathSeg]) -> Option<Vec<String>> {
    segs.iter()
        .map(|s| match s {
            PathSeg::Named(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn single_ref(template: &Template) -> Option<Vec<String>> {
    let [TemplateElement::Expression(h)] = template.elements.as_slice() else {
        return None;
    };
    if !h.params.is_empty() || !h.hash.is_empty() {
        return None;
    }
    match &h.name {
        Parameter::Path(handlebars::Path::Relative((segs, _))) => {
            let path = path_segments(segs)?;
            match path.as_slice() {
                [one]
                    if HELPERS.contains(&one.as_str())
                        || BUILTIN_HELPERS.contains(&one.as_str()) =>
                {
                    None
                }
                _ => Some(path),
            }
        }
        Parameter::Name(n)
            if !HELPERS.contains(&n.as_str()) && !BUILTIN_HELPERS.contains(&n.as_str()) =>
        {
            Some(vec![n.clone()])
        }
        _ => None,
    }
}

fn analyse(elements: &[TemplateElement], scopes: &mut Scopes, out: &mut Analysis) {
    for e in elements {
        match e {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                analyse_call(&h.name, &h.params, &h.hash, scopes, out);
            }
            TemplateElement::HelperBlock(h) => {
                let name = match &h.name {
                    Parameter::Name(n) => n.clone(),
                    _ => String::new(),
                };
                out.helpers.push(name.clone());
                for p in h.params.iter().chain(h.hash.values()) {
                    analyse_param(p, scopes, out);
                }
                if let Some(t) = &h.template {
                    if SCOPING_HELPERS.contains(&name.as_str()) {
                        let context = match h.params.first() {
                            Some(Parameter::Path(handlebars::Path::Relative((_, written)))) => {
                                scopes.resolve(written).map(|mut base| {
                                    if name == "each" {
                                        base.push(ELEMENT.to_string());
                                    }
                                    base
                                })
                            }
                            _ => None,
                        };
                        scopes.0.push(context);
                        analyse(&t.elements, scopes, out);
                        scopes.0.pop();
                    } else {
                        analyse(&t.elements, scopes, out);
                    }
                }
                if let Some(t) = &h.inverse {
                    analyse(&t.elements, scopes, out);
                }
            }
            _ => {}
        }
    }
}

fn analyse_call(
    name: &Parameter,
    params: &[Parameter],
    hash: &HashMap<String, Parameter>,
    scopes: &mut Scopes,
    out: &mut Analysis,
) {
    match name {
        Parameter::Name(n) if !params.is_empty() || !hash.is_empty() => {
            out.helpers.push(n.clone());
            if n == "now" {
                for p in params.iter().chain(hash.values()) {
                    if let Parameter::Literal(Value::String(s)) = p {
                        out.now_args.push(s.clone());
                    }
                }
            }
        }
        Parameter::Name(n) if HELPERS.contains(&n.as_str()) => out.helpers.push(n.clone()),
        Parameter::Path(handlebars::Path::Relative((segs, _))) if matches!(segs.as_slice(), [PathSeg::Named(n)] if HELPERS.contains(&n.as_str())) => {
            if let [PathSeg::Named(n)] = segs.as_slice() {
                out.helpers.push(n.clone());
            }
        }
        other => {
            let before = out.paths.len();
            analyse_param(other, scopes, out);
            if let Some(written) = out.paths.get(before..) {
                out.outputs.extend(written.iter().cloned());
            }
        }
    }
    for p in params.iter().chain(hash.values()) {
        analyse_param(p, scopes, out);
    }
}

fn analyse_param(p: &Parameter, scopes: &mut Scopes, out: &mut Analysis) {
    match p {
        Parameter::Name(n) if scopes.depth() == 0 => out.paths.push(vec![n.clone()]),
        Parameter::Name(n) => {
            if let Some(path) = scopes.resolve(n) {
                out.scoped.push(path);
            }
        }
        Parameter::Path(handlebars::Path::Relative((segs, written))) => {
            let plain = segs.iter().all(|s| matches!(s, PathSeg::Named(_)));
            if scopes.depth() == 0 && plain {
                if let Some(path) = path_segments(segs) {
                    out.paths.push(path);
                }
            } else if !segs.is_empty()
                && let Some(path) = scopes.resolve(written)
            {
                out.scoped.push(path);
            }
        }
        Parameter::Subexpression(sub) => {
            analyse(std::slice::from_ref(sub.element.as_ref()), scopes, out);
        }
        _ => {}
    }
}

// ---- helpers ----

fn param_value<'a>(h: &'a Helper<'_>, i: usize) -> Option<&'a Value> {
    h.param(i).map(|p| p.value())
}

/// `{{raw x}}`: the value as it is. Only meaningful in URL templates, where values are
/// otherwise encoded.
fn raw(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    out.write(&param_value(h, 0).map(text_of).unwrap_or_default())?;
    Ok(())
}

fn join(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let sep = param_value(h, 1).and_then(Value::as_str).unwrap_or(",");
    let text = match param_value(h, 0) {
        Some(Value::Array(items)) => items.iter().map(text_of).collect::<Vec<_>>().join(sep),
        Some(other) => text_of(other),
        None => String::new(),
    };
    out.write(&text)?;
    Ok(())
}

fn json(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let v = param_value(h, 0).cloned().unwrap_or(Value::Null);
    out.write(&serde_json::to_string(&v).unwrap_or_default())?;
    Ok(())
}

/// RFC 3986 percent-encoding: only `A-Za-z0-9-_.~` kept.
pub fn percent_encode(text: &str, space_as_plus: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' if space_as_plus => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn urlencode(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    write_text(h, out, |t| percent_encode(t, false))
}

fn default(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let v = param_value(h, 0).filter(|v| !v.is_null() && v.as_str() != Some(""));
    let chosen = v
        .or_else(|| param_value(h, 1))
        .map(text_of)
        .unwrap_or_default();
    out.write(&chosen)?;
    Ok(())
}

/// Writes the first parameter's text, transformed.
fn write_text(h: &Helper, out: &mut dyn Output, f: fn(&str) -> String) -> HelperResult {
    out.write(&f(&param_value(h, 0).map(text_of).unwrap_or_default()))?;
    Ok(())
}

fn upper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    write_text(h, out, str::to_uppercase)
}

fn lower(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    write_text(h, out, str::to_lowercase)
}

static TIME_FORMATS: LazyLock<RwLock<HashMap<String, TimeFormat>>> =
    LazyLock::new(Default::default);

/// A compiled time format, parsed at most once per distinct text.
pub fn cached_format(text: &str) -> Result<TimeFormat, String> {
    if let Some(f) = TIME_FORMATS.read().ok().and_then(|m| m.get(text).cloned()) {
        return Ok(f);
    }
    let f = TimeFormat::parse(text)?;
    if let Ok(mut m) = TIME_FORMATS.write() {
        m.insert(text.to_string(), f.clone());
    }
    Ok(f)
}

fn fail(helper: &str, message: String) -> RenderError {
    RenderErrorReason::Other(format!("{helper}: {message}")).into()
}

fn now(
    h: &Helper,
    _: &Handlebars,
    ctx: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let ms = ctx
        .data()
        .get(NOW_KEY)
        .and_then(Value::as_i64)
        .ok_or_else(|| fail("now", "no clock in this context".into()))?;
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| fail("now", e.to_string()))?;
    let format = param_value(h, 0)
        .and_then(Value::as_str)
        .unwrap_or("unix_seconds");
    let format = cached_format(format).map_err(|e| fail("now", e))?;
    let offset = match h.hash_get("tz").map(|v| v.value()) {
        Some(Value::String(tz)) => parse_offset(tz).map_err(|e| fail("now", e))?,
        _ => time::UtcOffset::UTC,
    };
    out.write(&format.format(at, offset))?;
    Ok(())
}

/// `{{format_time input.from 'yyyy-MM-dd HH:mm:ss' tz='+08:00'}}`: an RFC 3339 time of the
/// input written in a platform's format (default `unix_seconds`), at the offset `tz` (default
/// UTC). A value that is not an RFC 3339 time is an error.
fn format_time(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let v = param_value(h, 0).cloned().unwrap_or(Value::Null);
    let at = v
        .as_str()
        .and_then(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        })
        .ok_or_else(|| fail("format_time", format!("{v} is not an RFC 3339 time")))?;
    let format = param_value(h, 1)
        .and_then(Value::as_str)
        .unwrap_or("unix_seconds");
    let format = cached_format(format).map_err(|e| fail("format_time", e))?;
    let offset = match h.hash_get("tz").map(|v| v.value()) {
        Some(Value::String(tz)) => parse_offset(tz).map_err(|e| fail("format_time", e))?,
        _ => time::UtcOffset::UTC,
    };
    out.write(&format.format(at, offset))?;
    Ok(())
}

fn uuid(
    _: &Helper,
    _: &Handlebars,
    ctx: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    match ctx.data().get(NONCE_KEY).and_then(Value::as_str) {
        Some(fixed) => out.write(fixed)?,
        None => out.write(&uuid::Uuid::new_v4().to_string())?,
    }
    Ok(())
}

/// Integer fen written as a yuan decimal with two places: 1250 → `12.50`, -5 → `-0.05`.
pub fn fen_to_yuan_text(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// A yuan decimal read exactly as integer fen: `12.5` → 1250. More than two decimals, or
/// anything that is not a decimal number, is an error (no silent rounding of money).
pub fn yuan_text_to_fen(text: &str) -> Result<i64, String> {
    decimal_text_to_minor(text, 2).map_err(|e| {
        if e.ends_with("too large") {
            e
        } else {
            format!("'{text}' is not an amount in yuan with at most two decimals")
        }
    })
}

/// An exact decimal amount in major units (`"19.99"`, `"-3"`, `"1.5"`) as integer minor units
/// with `scale` decimals (19.99 with scale 2 → 1999). More significant decimals than `scale`,
/// anything that is not a plain decimal number, and amounts past `i64` are refused: money is
/// never rounded.
pub fn decimal_text_to_minor(text: &str, scale: u32) -> Result<i64, String> {
    let t = text.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac = frac.trim_end_matches('0');
    let width = usize::try_from(scale).unwrap_or(usize::MAX);
    let ok = !whole.is_empty()
        && whole.chars().all(|c| c.is_ascii_digit())
        && frac.chars().all(|c| c.is_ascii_digit())
        && frac.len() <= width;
    if !ok {
        return Err(format!(
            "'{text}' is not a decimal amount with at most {scale} decimals"
        ));
    }
    let too_large = || format!("'{text}' is too large");
    let whole: i64 = whole.parse().map_err(|_| too_large())?;
    let factor = 10i64.checked_pow(scale).ok_or_else(too_large)?;
    let frac: i64 = if width == 0 {
        0
    } else {
        format!("{frac:0<width$}")
            .parse()
            .map_err(|_| too_large())?
    };
    let minor = whole
        .checked_mul(factor)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(too_large)?;
    Ok(if neg { -minor } else { minor })
}

fn fen_to_yuan(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let v = param_value(h, 0).cloned().unwrap_or(Value::Null);
    let fen = match &v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        fail(
            "fen_to_yuan",
            format!("{v} is not an integer amount in fen"),
        )
    })?;
    out.write(&fen_to_yuan_text(fen))?;
    Ok(())
}

fn yuan_to_fen(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let text = param_value(h, 0).map(text_of).unwrap_or_default();
    let fen = yuan_text_to_fen(&text).map_err(|e| fail("yuan_to_fen", e))?;
    out.write(&fen.to_string())?;
    Ok(())
}

// ---- value transforms ----

/// The text of the first parameter, transformed by `f`; a failure is a render error naming
/// the helper (never the value, which may be a secret).
fn transform(
    h: &Helper,
    out: &mut dyn Output,
    name: &str,
    f: fn(&str) -> Result<String, String>,
) -> HelperResult {
    let text = param_value(h, 0).map(text_of).unwrap_or_default();
    let v = f(&text).map_err(|e| fail(name, e))?;
    out.write(&v)?;
    Ok(())
}

macro_rules! transform_helper {
    ($name:ident, $f:expr) => {
        fn $name(
            h: &Helper,
            _: &Handlebars,
            _: &Context,
            _: &mut RenderContext,
            out: &mut dyn Output,
        ) -> HelperResult {
            transform(h, out, stringify!($name), $f)
        }
    };
}

/// Bytes decoded from standard or URL-safe base64, padding optional.
fn base64_bytes(text: &str, url: bool) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let t = text.trim().trim_end_matches('=');
    let engine = if url {
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
    } else {
        &base64::engine::general_purpose::STANDARD_NO_PAD
    };
    engine.decode(t).map_err(|_| {
        format!(
            "the value ({} characters) is not valid {}",
            text.chars().count(),
            if url { "base64url" } else { "base64" }
        )
    })
}

fn utf8_text(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| {
        "the decoded bytes are not UTF-8 text; use base64_to_hex to read binary values".into()
    })
}

fn hex_bytes(text: &str) -> Result<Vec<u8>, String> {
    hex::decode(text.trim()).map_err(|_| {
        format!(
            "the value ({} characters) is not valid hex",
            text.chars().count()
        )
    })
}

/// Base64 of any text, as in the recipes' encodings: standard with padding, or URL-safe
/// without padding.
fn base64_text(bytes: &[u8], url: bool) -> String {
    use base64::Engine as _;
    if url {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    } else {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

transform_helper!(base64_encode, |t| Ok(base64_text(t.as_bytes(), false)));
transform_helper!(base64url_encode, |t| Ok(base64_text(t.as_bytes(), true)));
transform_helper!(base64_decode, |t| utf8_text(base64_bytes(t, false)?));
transform_helper!(base64url_decode, |t| utf8_text(base64_bytes(t, true)?));
transform_helper!(hex_to_base64, |t| Ok(base64_text(&hex_bytes(t)?, false)));
transform_helper!(hex_to_base64url, |t| Ok(base64_text(&hex_bytes(t)?, true)));
// Either alphabet: the two differ only in characters 62 and 63.
transform_helper!(base64_to_hex, |t| {
    let url = t.contains(['-', '_']);
    Ok(hex::encode(base64_bytes(t, url)?))
});

/// `{{replace text from to}}`: every occurrence of `from` replaced by `to`.
fn replace(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let text = param_value(h, 0).map(text_of).unwrap_or_default();
    let from = param_value(h, 1).map(text_of).unwrap_or_default();
    let to = param_value(h, 2).map(text_of).unwrap_or_default();
    if from.is_empty() {
        out.write(&text)?;
    } else {
        out.write(&text.replace(&from, &to))?;
    }
    Ok(())
}

/// A whole-number parameter (a number or numeric text).
fn int_param(h: &Helper, i: usize, helper: &str, what: &str) -> Result<Option<i64>, RenderError> {
    match param_value(h, i) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| fail(helper, format!("the {what} must be a whole number"))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| fail(helper, format!("the {what} must be a whole number"))),
        Some(_) => Err(fail(helper, format!("the {what} must be a whole number"))),
    }
}

/// A position among `len` items: from the start, or from the end when negative; clamped.
fn position(index: i64, len: usize) -> usize {
    let len_i = i64::try_from(len).unwrap_or(i64::MAX);
    let p = if index < 0 {
        len_i.saturating_add(index).max(0)
    } else {
        index.min(len_i)
    };
    usize::try_from(p).unwrap_or(len)
}

/// `{{substring text start [len]}}`: by characters; a negative start counts from the end;
/// bounds past the text are clamped, never an error.
fn substring(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let text = param_value(h, 0).map(text_of).unwrap_or_default();
    let start = int_param(h, 1, "substring", "start")?.unwrap_or(0);
    let len = int_param(h, 2, "substring", "length")?;
    if len.is_some_and(|l| l < 0) {
        return Err(fail("substring", "the length must not be negative".into()));
    }
    let count = text.chars().count();
    let from = position(start, count);
    let take = len
        .map(|l| usize::try_from(l).unwrap_or(usize::MAX))
        .unwrap_or(usize::MAX);
    let piece: String = text.chars().skip(from).take(take).collect();
    out.write(&piece)?;
    Ok(())
}

/// `{{split_part text sep index}}`: the piece at `index` (0 is the first; negative counts
/// from the end) of the text split at every `sep`; empty when there is no such piece.
fn split_part(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let text = param_value(h, 0).map(text_of).unwrap_or_default();
    let sep = param_value(h, 1).map(text_of).unwrap_or_default();
    let index = int_param(h, 2, "split_part", "index")?.unwrap_or(0);
    if sep.is_empty() {
        return Err(fail("split_part", "the separator must not be empty".into()));
    }
    let pieces: Vec<&str> = text.split(sep.as_str()).collect();
    let piece = if index < 0 {
        let back = usize::try_from(index.unsigned_abs()).unwrap_or(usize::MAX);
        pieces.len().checked_sub(back).and_then(|i| pieces.get(i))
    } else {
        usize::try_from(index).ok().and_then(|i| pieces.get(i))
    };
    out.write(piece.copied().unwrap_or_default())?;
    Ok(())
}

/// A JSON value with every object's keys sorted by their bytes, at every level; with
/// `strings`, every scalar becomes a string (`null` the empty string).
pub fn canonical_json_value(v: &Value, strings: bool) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            let mut out = serde_json::Map::new();
            for k in keys {
                if let Some(item) = m.get(k) {
                    out.insert(k.clone(), canonical_json_value(item, strings));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| canonical_json_value(i, strings))
                .collect(),
        ),
        Value::Null if strings => Value::String(String::new()),
        Value::Bool(_) | Value::Number(_) if strings => Value::String(text_of(v)),
        other => other.clone(),
    }
}

/// `{{canonical_json value [strings=true]}}`: compact JSON with sorted keys. A string holding
/// a JSON object or array (a parameter carrying JSON) is read as that JSON.
fn canonical_json(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let v = param_value(h, 0).cloned().unwrap_or(Value::Null);
    let v = match &v {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(parsed @ (Value::Object(_) | Value::Array(_))) => parsed,
            _ => v,
        },
        _ => v,
    };
    let strings = h
        .hash_get("strings")
        .map(|p| p.value())
        .is_some_and(|s| s.as_bool() == Some(true) || s.as_str() == Some("true"));
    let text = serde_json::to_string(&canonical_json_value(&v, strings))
        .map_err(|e| fail("canonical_json", e.to_string()))?;
    out.write(&text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: &str, data: Value) -> String {
        CompiledTemplate::compile(t)
            .unwrap()
            .0
            .render(&data)
            .unwrap()
    }

    #[test]
    fn literal_ref_and_engine_bodies() {
        let (t, _) = CompiledTemplate::compile("plain").unwrap();
        assert_eq!(t.as_literal(), Some("plain"));
        let (t, _) = CompiledTemplate::compile("{{input.sku}}").unwrap();
        assert_eq!(
            t.as_ref_path(),
            Some(&["input".to_string(), "sku".to_string()][..])
        );
        assert_eq!(render("{{input.sku}}", json!({"input": {"sku": 7}})), "7");
        assert_eq!(render("a{{x}}<b>", json!({"x": "<&>"})), "a<&><b>");
    }

    #[test]
    fn helpers_render() {
        let data = json!({"ids": ["a", "b", "c"], "o": {"k": "v w"}, NOW_KEY: 1_451_620_800_000i64, NONCE_KEY: "n-1"});
        assert_eq!(render("{{join ids ','}}", data.clone()), "a,b,c");
        assert_eq!(render("{{json o}}", data.clone()), r#"{"k":"v w"}"#);
        assert_eq!(render("{{urlencode o.k}}", data.clone()), "v%20w");
        assert_eq!(render("{{default missing 'x'}}", data.clone()), "x");
        assert_eq!(
            render("{{now 'yyyy-MM-dd HH:mm:ss' tz='+08:00'}}", data.clone()),
            "2016-01-01 12:00:00"
        );
        assert_eq!(
            render(
                "{{format_time t 'yyyy-MM-dd HH:mm:ss' tz='+08:00'}}",
                json!({"t": "2024-05-01T00:00:00Z"})
            ),
            "2024-05-01 08:00:00"
        );
        assert_eq!(render("{{uuid}}", data.clone()), "n-1");
        assert_eq!(render("{{fen_to_yuan 1250}}", data.clone()), "12.50");
        assert_eq!(render("{{yuan_to_fen '0.5'}}", data), "50");
    }

    #[test]
    fn money_is_exact() {
        assert_eq!(fen_to_yuan_text(-5), "-0.05");
        assert_eq!(fen_to_yuan_text(100), "1.00");
        assert_eq!(yuan_text_to_fen("19.99").unwrap(), 1999);
        assert_eq!(yuan_text_to_fen("19.90").unwrap(), 1990);
        assert_eq!(yuan_text_to_fen("-3").unwrap(), -300);
        assert!(yuan_text_to_fen("1.999").is_err());
        assert!(yuan_text_to_fen("abc").is_err());
        assert!(yuan_text_to_fen("99999999999999999999").is_err());
    }

    fn render_err(t: &str, data: Value) -> String {
        CompiledTemplate::compile(t)
            .unwrap()
            .0
            .render(&data)
            .unwrap_err()
    }

    #[test]
    fn base64_follows_rfc_4648_test_vectors() {
        // RFC 4648 section 10: BASE64("") = "", ("f") = "Zg==", ... ("foobar") = "Zm9vYmFy".
        let vectors = [
            ("", "", ""),
            ("f", "Zg==", "Zg"),
            ("fo", "Zm8=", "Zm8"),
            ("foo", "Zm9v", "Zm9v"),
            ("foob", "Zm9vYg==", "Zm9vYg"),
            ("fooba", "Zm9vYmE=", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy", "Zm9vYmFy"),
        ];
        for (plain, b64, b64url) in vectors {
            let data = json!({"p": plain, "b": b64, "u": b64url});
            assert_eq!(render("{{base64_encode p}}", data.clone()), b64, "{plain}");
            assert_eq!(
                render("{{base64url_encode p}}", data.clone()),
                b64url,
                "{plain}"
            );
            assert_eq!(render("{{base64_decode b}}", data.clone()), plain, "{b64}");
            assert_eq!(
                render("{{base64url_decode u}}", data.clone()),
                plain,
                "{b64url}"
            );
            // Padding is optional when decoding.
            assert_eq!(render("{{base64url_decode b}}", data), plain, "{b64}");
        }
        // The two alphabets differ in 62 and 63 (RFC 4648 tables 1 and 2): the bytes
        // 0xFB 0xFF are "+/8=" in base64 and "-_8" in base64url.
        let data = json!({"h": "fbff", "b": "+/8=", "u": "-_8"});
        assert_eq!(render("{{hex_to_base64 h}}", data.clone()), "+/8=");
        assert_eq!(render("{{hex_to_base64url h}}", data.clone()), "-_8");
        assert_eq!(render("{{base64_to_hex b}}", data.clone()), "fbff");
        assert_eq!(render("{{base64_to_hex u}}", data.clone()), "fbff");
        // Any value: a number is encoded as its text, an object as compact JSON.
        let data = json!({"n": 12, "o": {"a": 1}});
        assert_eq!(render("{{base64_encode n}}", data.clone()), "MTI=");
        // base64 of '{"a":1}' (7 bytes) worked out by hand: eyJh Ijox fQ==.
        assert_eq!(render("{{base64_encode o}}", data), "eyJhIjoxfQ==");
        // A signed JSON token carried base64url-encoded, decoded to text and read.
        let data = json!({"t": "eyJ0eXAiOiJKV1QifQ"});
        assert_eq!(render("{{base64url_decode t}}", data), r#"{"typ":"JWT"}"#);
    }

    #[test]
    fn invalid_encodings_are_clear_render_errors() {
        let data = json!({"bad": "Zm9v!", "nottext": "/w==", "h": "abc", "x": "zz"});
        let e = render_err("{{base64_decode bad}}", data.clone());
        assert!(
            e.contains("base64_decode") && e.contains("not valid base64"),
            "{e}"
        );
        // Secrets may pass through helpers: the value itself is never in the message.
        assert!(!e.contains("Zm9v!"), "{e}");
        let e = render_err("{{base64_decode nottext}}", data.clone());
        assert!(
            e.contains("not UTF-8 text") && e.contains("base64_to_hex"),
            "{e}"
        );
        let e = render_err("{{hex_to_base64 h}}", data.clone());
        assert!(e.contains("not valid hex"), "{e}");
        let e = render_err("{{hex_to_base64 x}}", data.clone());
        assert!(e.contains("not valid hex"), "{e}");
        let e = render_err("{{base64url_decode bad}}", data);
        assert!(e.contains("not valid base64url"), "{e}");
    }

    #[test]
    fn replace_and_substring() {
        let data = json!({"op": "order.create", "s": "ab€cd", "n": 5});
        assert_eq!(
            render("{{replace op '.' '/'}}", data.clone()),
            "order/create"
        );
        assert_eq!(render("{{replace 'a.b.c' '.' ''}}", data.clone()), "abc");
        // An empty `from` changes nothing.
        assert_eq!(
            render("{{replace op '' 'x'}}", data.clone()),
            "order.create"
        );
        assert_eq!(
            render("/v1/{{lower (replace op '.' '/')}}", data.clone()),
            "/v1/order/create"
        );
        // By characters, not bytes: '€' is one character (three bytes).
        assert_eq!(render("{{substring s 2 1}}", data.clone()), "€");
        assert_eq!(render("{{substring s 2}}", data.clone()), "€cd");
        assert_eq!(render("{{substring s 0 2}}", data.clone()), "ab");
        // Out of bounds never panics: what is there is returned.
        assert_eq!(render("{{substring s 3 99}}", data.clone()), "cd");
        assert_eq!(render("{{substring s 99}}", data.clone()), "");
        assert_eq!(render("{{substring s 1 0}}", data.clone()), "");
        // A negative start counts from the end.
        assert_eq!(render("{{substring s -2}}", data.clone()), "cd");
        assert_eq!(render("{{substring s -99 1}}", data.clone()), "a");
        assert_eq!(render("{{substring n 0 1}}", data.clone()), "5");
        let e = render_err("{{substring s 'x'}}", data.clone());
        assert!(e.contains("substring") && e.contains("whole number"), "{e}");
        let e = render_err("{{substring s 0 -1}}", data);
        assert!(e.contains("substring") && e.contains("length"), "{e}");
    }

    #[test]
    fn split_part_takes_one_piece() {
        let data = json!({"t": "aGVhZA.cGF5bG9hZA.c2ln", "h": "v1,abc v1,def"});
        assert_eq!(render("{{split_part t '.' 0}}", data.clone()), "aGVhZA");
        assert_eq!(render("{{split_part t '.' 2}}", data.clone()), "c2ln");
        assert_eq!(render("{{split_part t '.' -1}}", data.clone()), "c2ln");
        assert_eq!(render("{{split_part t '.' 3}}", data.clone()), "");
        assert_eq!(render("{{split_part t '.' -4}}", data.clone()), "");
        assert_eq!(
            render("{{base64url_decode (split_part t '.' 1)}}", data.clone()),
            "payload"
        );
        assert_eq!(
            render("{{split_part (split_part h ' ' 1) ',' 1}}", data),
            "def"
        );
    }

    #[test]
    fn canonical_json_sorts_keys_and_can_stringify_scalars() {
        let data = json!({
            "o": {"b": 1, "a": {"z": true, "c": null}, "arr": [{"y": 2.5, "x": "s"}, 3]},
            "s": "{\"b\":2,\"a\":\"x\"}",
            "plain": "text",
        });
        // Keys sorted at every level, no spaces; arrays keep their order.
        assert_eq!(
            render("{{canonical_json o}}", data.clone()),
            r#"{"a":{"c":null,"z":true},"arr":[{"x":"s","y":2.5},3],"b":1}"#
        );
        assert_eq!(
            render("{{canonical_json o strings=true}}", data.clone()),
            r#"{"a":{"c":"","z":"true"},"arr":[{"x":"s","y":"2.5"},"3"],"b":"1"}"#
        );
        // JSON carried as text (a parameter holding JSON) is canonicalised as JSON.
        assert_eq!(
            render("{{canonical_json s}}", data.clone()),
            r#"{"a":"x","b":2}"#
        );
        // Other text is a JSON string.
        assert_eq!(
            render("{{canonical_json plain}}", data.clone()),
            r#""text""#
        );
        // Keys are ordered by their bytes (upper case before lower case).
        let data = json!({"o": {"b": 1, "B": 2, "a": 3, "_": 4}});
        assert_eq!(
            render("{{canonical_json o}}", data),
            r#"{"B":2,"_":4,"a":3,"b":1}"#
        );
    }

    #[test]
    fn new_helpers_are_known_to_the_compiler() {
        for h in [
            "base64_encode",
            "base64_decode",
            "base64url_encode",
            "base64url_decode",
            "hex_to_base64",
            "hex_to_base64url",
            "base64_to_hex",
            "replace",
            "substring",
            "split_part",
            "canonical_json",
        ] {
            assert!(HELPERS.contains(&h), "{h}");
            let (_, a) = CompiledTemplate::compile(&format!("{{{{{h} x 'a' 'b'}}}}")).unwrap();
            assert!(a.helpers.contains(&h.to_string()), "{h}");
        }
    }

    #[test]
    fn unknown_helper_suggests() {
        let err = CompiledTemplate::compile("{{jion input.ids ','}}").unwrap_err();
        assert_eq!(err.message, "unknown template helper 'jion'");
        assert_eq!(err.hint.as_deref(), Some("did you mean 'join'?"));
        assert!(CompiledTemplate::compile("{{#if x}}").unwrap_err().syntax);
    }

    fn url(t: &str, data: Value) -> Result<String, UrlError> {
        let (u, _, problems) = UrlTemplate::compile(t).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        u.render(&data)
    }

    #[test]
    fn url_values_are_encoded_for_where_they_land() {
        let data = json!({"settings": {"base_url": "http://h:1/api/v2"}, "input": {"id": "../../admin?x=1#f", "q": "a&b=c", "dots": "..", "one": "."}});
        // The leading base URL is inserted as it is; the path value is one segment.
        assert_eq!(
            url(
                "{{settings.base_url}}/orders/{{input.id}}?sig=s1",
                data.clone()
            )
            .unwrap(),
            "http://h:1/api/v2/orders/..%2F..%2Fadmin%3Fx%3D1%23f?sig=s1"
        );
        // A value in an inline query cannot add parameters.
        assert_eq!(
            url("http://h/search?q={{input.q}}&n=1", data.clone()).unwrap(),
            "http://h/search?q=a%26b%3Dc&n=1"
        );
        // A value cannot be, or complete, a dot segment.
        for (t, field) in [
            ("http://h/a/{{input.dots}}/b", "input.dots"),
            ("http://h/a/{{input.one}}", "input.one"),
            ("http://h/a/.{{input.one}}/b", "input.one"),
            ("http://h/a/{{input.one}}{{input.one}}?x", "input.one"),
        ] {
            assert_eq!(
                url(t, data.clone()),
                Err(UrlError::DotSegment(vec![field.into()])),
                "{t}"
            );
        }
        // Dots inside a longer segment are fine; so are the template's own dot segments.
        assert_eq!(
            url("http://h/./a.{{input.one}}", data.clone()).unwrap(),
            "http://h/./a.."
        );
        // raw keeps a configured prefix with its slashes.
        let data = json!({"settings": {"prefix": "api/v2"}, "operation": "order.get"});
        assert_eq!(
            url("http://h/{{raw settings.prefix}}/{{operation}}", data).unwrap(),
            "http://h/api/v2/order.get"
        );
    }

    #[test]
    fn url_inputs_that_could_reshape_the_url_are_load_time_problems() {
        let problems = |t: &str| UrlTemplate::compile(t).unwrap().2;
        assert_eq!(
            problems("http://{{input.host}}/a"),
            vec![UrlProblem::InputBeforePath(vec!["input.host".into()])]
        );
        assert_eq!(
            problems("{{settings.base_url}}{{input.id}}"),
            vec![UrlProblem::InputBeforePath(vec!["input.id".into()])]
        );
        assert_eq!(
            problems("{{settings.base_url}}/a/{{raw input.path}}"),
            vec![UrlProblem::VerbatimInput(vec!["input.path".into()])]
        );
        assert!(problems("{{settings.base_url}}/a/{{input.id}}?b={{input.q}}").is_empty());
    }

    #[test]
    fn analysis_finds_top_level_paths() {
        let (_, a) = CompiledTemplate::compile(
            "{{credentials.key}}{{#each input.items}}{{this.id}}{{/each}}{{join (lower settings.x) ','}}",
        )
        .unwrap();
        let paths: Vec<String> = a.paths.iter().map(|p| p.join(".")).collect();
        assert!(paths.contains(&"credentials.key".to_string()), "{paths:?}");
        assert!(paths.contains(&"input.items".to_string()), "{paths:?}");
        assert!(paths.contains(&"settings.x".to_string()), "{paths:?}");
        assert!(!paths.iter().any(|p| p.contains("this")), "{paths:?}");
        // Only the reference written out directly is an output; helper arguments are not.
        let outputs: Vec<String> = a.outputs.iter().map(|p| p.join(".")).collect();
        assert_eq!(outputs, vec!["credentials.key".to_string()]);
    }
}
