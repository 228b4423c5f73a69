//! Signing and verification recipes, compiled once and run without parsing.
//!
//! A recipe is a list of named steps (templates, canonical strings, digests, times, nonces)
//! evaluated in order over the parts of a request; a signing recipe then places values into
//! the request, and a verification recipe compares a value with the signature the sender
//! supplied, in constant time, after checking the timestamp window.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Digest as _;
use subtle::ConstantTimeEq;
use time::{OffsetDateTime, UtcOffset};

use crate::compile::{Cx, Scope};
use crate::config::recipe::{
    DigestAlg, Encoding, KeyDecode, KeyIdSource, NonceFormat, ParamSource, PlaceTarget, Repeated,
    SignRecipe, SignatureSource, SortOrder, Step, UrlEncoding, VerifyRecipe,
};
use crate::config::source::DocPath;
use crate::diagnostics::Code;
use crate::plan::JsonPathExpr;
use crate::template::{CompiledTemplate, percent_encode};
use crate::timefmt::{TimeFormat, parse_offset};

/// Variables every recipe template may use.
pub const RECIPE_ROOTS: &[&str] = &[
    "method",
    "url",
    "path",
    "query",
    "raw_query",
    "form",
    "headers",
    "body",
    "credentials",
    "settings",
    "platform",
];
/// Extra variables of verification recipes.
pub const VERIFY_ROOTS: &[&str] = &["signature"];
/// Extra variables of signing recipes: the operation's canonical name (empty when a recipe
/// signs an event for an internal system).
pub const SIGN_ROOTS: &[&str] = &["operation"];

/// A compiled signing recipe.
#[derive(Debug)]
pub struct SignPlan {
    steps: Vec<StepPlan>,
    /// Where values go: target, name, template.
    pub place: Vec<(PlaceTarget, String, CompiledTemplate)>,
}

/// A compiled verification recipe.
#[derive(Debug)]
pub struct VerifyPlan {
    source: SignatureSource,
    /// The JSONPath of the signature when it is a field of a JSON body.
    sig_json: Option<JsonPathExpr>,
    /// Path of the signature inside a base64 JSON envelope, when the value is one.
    envelope: Option<Vec<String>>,
    steps: Vec<StepPlan>,
    expect: CompiledTemplate,
    /// When `expect` is exactly a public-key signature step (RSA, Ed25519, ECDSA): the index
    /// of that step, checked against the candidates with the public key.
    rsa_step: Option<usize>,
    ignore_case: bool,
    timestamp: Option<TimestampPlan>,
    /// Replay guard: key template and how long keys are kept.
    pub replay: Option<(CompiledTemplate, Duration)>,
    /// Status answered to a rejected delivery.
    pub reject_status: u16,
}

#[derive(Debug)]
struct TimestampPlan {
    value: CompiledTemplate,
    format: TimeFormat,
    offset: UtcOffset,
    tolerance: Duration,
}

#[derive(Debug)]
struct StepPlan {
    name: String,
    kind: StepKind,
    /// Key material (a raw value, or one used as a later step's key): never shown in traces.
    secret: bool,
}

#[derive(Debug)]
enum StepKind {
    Template(CompiledTemplate),
    Canonical(CanonicalPlan),
    Digest(DigestPlan),
    Time(TimeFormat, UtcOffset),
    Nonce(NonceFormat),
}

#[derive(Debug)]
struct CanonicalPlan {
    from: Vec<ParamSource>,
    /// The object whose fields are the `json` parameters (`None`: the top-level object).
    json_path: Option<JsonPathExpr>,
    /// Parameters read from a JSON body by path: name → path.
    json_fields: Vec<(String, JsonPathExpr)>,
    /// In a verification recipe whose signature is a JSON field: the object holding it and
    /// the field's name, left out when this step reads that same object.
    drop_json: Option<(JsonPathExpr, String)>,
    /// In a verification recipe whose signature is an XML element: its name, left out of the
    /// `xml` parameters.
    drop_xml: Option<String>,
    include: Vec<String>,
    exclude: Vec<String>,
    skip_empty: bool,
    lowercase_keys: bool,
    trim_values: bool,
    /// Text → replacement, longest text first.
    escape: Vec<(String, String)>,
    encode: UrlEncoding,
    sort: SortOrder,
    repeated: Repeated,
    repeated_separator: String,
    pair: Vec<PairPiece>,
    separator: String,
}

#[derive(Debug, PartialEq)]
enum PairPiece {
    Text(String),
    Key,
    Value,
}

#[derive(Debug)]
struct DigestPlan {
    alg: DigestAlg,
    input: CompiledTemplate,
    key: Option<CompiledTemplate>,
    key_strip_prefix: Option<String>,
    key_decode: KeyDecode,
    encode: Encoding,
    key_id: Option<KeyIdPlan>,
}

/// How a step finds its key by the id a delivery carries.
#[derive(Debug)]
struct KeyIdPlan {
    /// The id, or the base64 JSON envelope holding it.
    value: CompiledTemplate,
    /// Path of the id inside the envelope, when there is one.
    json_field: Option<Vec<String>>,
    /// Reference to the map of key id → key (for example `settings.webhook_keys`).
    map: Vec<String>,
}

// ---------------------------------------------------------------- compile

fn compile_steps(
    cx: &mut Cx<'_>,
    steps: &[Step],
    path: &DocPath,
    roots: &[&str],
) -> (Vec<StepPlan>, Vec<String>, Vec<String>) {
    let mut plans = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut binary: Vec<String> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let sp = path.index(i);
        let name = step_name(step).to_string();
        if names.contains(&name)
            || roots.contains(&name.as_str())
            || crate::template::HELPERS.contains(&name.as_str())
        {
            cx.error(&sp.key("name"), Code::DuplicateStep, format!("step name '{name}' is already taken"))
                .hint = Some("give every step a name of its own that is neither a request part (method, body, headers...) nor a template helper".into());
        }
        let scope_names = names.clone();
        let scope = Scope {
            roots,
            extra: &scope_names,
        };
        let kind = match step {
            Step::Template { template, .. } => {
                let t = cx.template(template, &sp.key("template"), &scope);
                if let Some(t) = &t {
                    check_binary(cx, t, &binary, &sp.key("template"), false);
                }
                t.map(StepKind::Template)
            }
            Step::Canonical {
                from,
                json_path,
                json_fields,
                include,
                exclude,
                skip_empty,
                lowercase_keys,
                trim_values,
                escape,
                encode,
                sort,
                repeated,
                repeated_separator,
                pair,
                separator,
                ..
            } => {
                let pair_text = pair.as_deref().unwrap_or("{key}={value}");
                if escape.keys().any(String::is_empty) {
                    cx.error(
                        &sp.key("escape"),
                        Code::InvalidValue,
                        "an escape replaces an empty text",
                    )
                    .hint = Some(
                        "list the characters to replace, like `escape: { \":\": \"\\\\:\" }`"
                            .into(),
                    );
                }
                let mut escape: Vec<(String, String)> =
                    escape.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                escape.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
                let json_path = json_path.as_deref().and_then(|jp| {
                    if !from.contains(&ParamSource::Json) {
                        cx.error(
                            &sp.key("json_path"),
                            Code::Conflict,
                            "`json_path` is set but the step does not read `from: [json]`",
                        )
                        .hint = Some("add `json` to `from`, or remove `json_path`".into());
                    }
                    JsonPathExpr::parse(jp)
                        .map_err(|e| {
                            cx.error(
                                &sp.key("json_path"),
                                Code::InvalidValue,
                                format!("'{jp}' is not a JSONPath: {e}"),
                            )
                            .hint = Some("write the path of an object, like `$.data`".into());
                        })
                        .ok()
                });
                let mut fields = Vec::new();
                for (name, jp) in json_fields {
                    match JsonPathExpr::parse(jp) {
                        Ok(p) => fields.push((name.clone(), p)),
                        Err(e) => {
                            cx.error(
                                &sp.key("json_fields").key(name),
                                Code::InvalidValue,
                                format!("'{jp}' is not a JSONPath: {e}"),
                            )
                            .hint =
                                Some("write the path of the field, like `$.data.order.id`".into());
                        }
                    }
                }
                match compile_pair(pair_text) {
                    Ok(pair) => Some(StepKind::Canonical(CanonicalPlan {
                        from: from.clone(),
                        json_path,
                        json_fields: fields,
                        drop_json: None,
                        drop_xml: None,
                        include: include.clone(),
                        exclude: exclude.clone(),
                        skip_empty: skip_empty.unwrap_or(true),
                        lowercase_keys: *lowercase_keys,
                        trim_values: *trim_values,
                        escape,
                        encode: encode.unwrap_or(UrlEncoding::None),
                        sort: sort.unwrap_or(SortOrder::Key),
                        repeated: repeated.unwrap_or(Repeated::Repeat),
                        repeated_separator: repeated_separator
                            .clone()
                            .unwrap_or_else(|| ",".into()),
                        pair,
                        separator: separator.clone().unwrap_or_else(|| "&".into()),
                    })),
                    Err(e) => {
                        cx.error(&sp.key("pair"), Code::InvalidValue, e).hint =
                            Some("write pairs with {key} and {value}, like '{key}={value}' or '{key}{value}'".into());
                        None
                    }
                }
            }
            Step::Digest {
                alg,
                input,
                key,
                key_strip_prefix,
                key_decode,
                encode,
                key_id,
                ..
            } => {
                let input_t = cx.template(input, &sp.key("input"), &scope);
                let key_t = key
                    .as_ref()
                    .and_then(|k| cx.template(k, &sp.key("key"), &scope));
                if let Some(t) = &input_t {
                    check_binary(cx, t, &binary, &sp.key("input"), true);
                }
                if let Some(t) = &key_t {
                    check_binary(cx, t, &binary, &sp.key("key"), true);
                }
                let keyed = !matches!(
                    alg,
                    DigestAlg::Md5 | DigestAlg::Sha1 | DigestAlg::Sha256 | DigestAlg::Sha512
                );
                let key_id_plan = key_id
                    .as_ref()
                    .and_then(|k| compile_key_id(cx, k, key_t.as_ref(), &sp, &scope));
                if keyed && key.is_none() {
                    cx.error(&sp, Code::SigningKey, format!("algorithm {} needs a `key`", alg_name(*alg)))
                        .hint = Some("add `key: \"{{credentials.app_secret}}\"` (or the credential holding the key)".into());
                }
                if !keyed && key.is_some() {
                    cx.error(&sp.key("key"), Code::SigningKey, format!("algorithm {} takes no key", alg_name(*alg)))
                        .hint = Some("to mix a secret into a plain digest, put it in `input`, or use an hmac-* algorithm".into());
                }
                let encode = encode.unwrap_or(if is_public_key_alg(*alg) {
                    Encoding::Base64
                } else {
                    Encoding::Hex
                });
                if encode == Encoding::Raw {
                    binary.push(name.clone());
                }
                match (
                    input_t,
                    keyed == key.is_some(),
                    key_id.is_some() == key_id_plan.is_some(),
                ) {
                    (Some(input), true, true) => Some(StepKind::Digest(DigestPlan {
                        alg: *alg,
                        input,
                        key: key_t,
                        key_strip_prefix: key_strip_prefix.clone(),
                        key_decode: key_decode.unwrap_or(KeyDecode::Utf8),
                        encode,
                        key_id: key_id_plan,
                    })),
                    _ => None,
                }
            }
            Step::Time { format, offset, .. } => {
                let f = TimeFormat::parse(format)
                    .map_err(|e| cx.error(&sp.key("format"), Code::TimeFormat, e).hint = None)
                    .ok();
                let o = match offset {
                    Some(o) => parse_offset(o)
                        .map_err(|e| cx.error(&sp.key("offset"), Code::TimeFormat, e).hint = None)
                        .ok(),
                    None => Some(UtcOffset::UTC),
                };
                f.zip(o).map(|(f, o)| StepKind::Time(f, o))
            }
            Step::Nonce { format, .. } => {
                Some(StepKind::Nonce(format.unwrap_or(NonceFormat::Uuid)))
            }
        };
        if let Some(kind) = kind {
            plans.push(StepPlan {
                name: name.clone(),
                kind,
                secret: false,
            });
        }
        names.push(name);
    }
    // Steps that are raw bytes or serve as a later digest's key are key material.
    let keys: Vec<String> = plans
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::Digest(d) => d.key.as_ref().and_then(|k| match k.as_ref_path() {
                Some([one]) => Some(one.clone()),
                _ => None,
            }),
            _ => None,
        })
        .collect();
    for p in &mut plans {
        p.secret = binary.contains(&p.name) || keys.contains(&p.name);
    }
    (plans, names, binary)
}

fn step_name(step: &Step) -> &str {
    match step {
        Step::Template { name, .. }
        | Step::Canonical { name, .. }
        | Step::Digest { name, .. }
        | Step::Time { name, .. }
        | Step::Nonce { name, .. } => name,
    }
}

fn alg_name(alg: DigestAlg) -> &'static str {
    match alg {
        DigestAlg::Md5 => "md5",
        DigestAlg::Sha1 => "sha1",
        DigestAlg::Sha256 => "sha256",
        DigestAlg::Sha512 => "sha512",
        DigestAlg::HmacMd5 => "hmac-md5",
        DigestAlg::HmacSha1 => "hmac-sha1",
        DigestAlg::HmacSha256 => "hmac-sha256",
        DigestAlg::HmacSha512 => "hmac-sha512",
        DigestAlg::RsaSha256 => "rsa-sha256",
        DigestAlg::Ed25519 => "ed25519",
        DigestAlg::EcdsaP256Sha256 => "ecdsa-p256-sha256",
        DigestAlg::EcdsaP256Sha1 => "ecdsa-p256-sha1",
    }
}

/// Signature algorithms with a private key (signing) and a public key (verification).
fn is_public_key_alg(alg: DigestAlg) -> bool {
    matches!(
        alg,
        DigestAlg::RsaSha256
            | DigestAlg::Ed25519
            | DigestAlg::EcdsaP256Sha256
            | DigestAlg::EcdsaP256Sha1
    )
}

/// Algorithms the gateway only verifies (it never holds the sender's private key).
fn is_verify_only(alg: DigestAlg) -> bool {
    matches!(alg, DigestAlg::EcdsaP256Sha256 | DigestAlg::EcdsaP256Sha1)
}

fn compile_key_id(
    cx: &mut Cx<'_>,
    k: &KeyIdSource,
    key: Option<&CompiledTemplate>,
    sp: &DocPath,
    scope: &Scope<'_>,
) -> Option<KeyIdPlan> {
    let map = match key.and_then(CompiledTemplate::as_ref_path) {
        Some(path) => Some(path.to_vec()),
        None => {
            cx.error(&sp.key("key"), Code::SigningKey, "with `key_id`, `key` must be exactly one reference to the map of key ids to keys")
                .hint = Some("write `key: \"{{settings.webhook_keys}}\"` where that setting (or credential) holds a JSON object such as {\"k1\": \"MFkw...\"}".into());
            None
        }
    };
    let value = cx.template(&k.value, &sp.key("key_id").key("value"), scope);
    let json_field = match k.json_field.as_deref() {
        Some(f) => match envelope_path(f) {
            Ok(path) => Some(path),
            Err(message) => {
                cx.error(
                    &sp.key("key_id").key("json_field"),
                    Code::InvalidValue,
                    message,
                )
                .hint =
                    Some("name the envelope's field holding the key id, for example `kid`".into());
                return None;
            }
        },
        None => None,
    };
    Some(KeyIdPlan {
        value: value?,
        json_field,
        map: map?,
    })
}

/// The field names of a dotted envelope path (`sig.value`); an empty path or name is refused.
fn envelope_path(dotted: &str) -> Result<Vec<String>, String> {
    let dotted = dotted.trim();
    if dotted.is_empty() {
        return Err("`json_field` is empty".into());
    }
    let names: Vec<String> = dotted.split('.').map(str::to_string).collect();
    if names.iter().any(String::is_empty) {
        return Err(format!(
            "'{dotted}' has an empty field name between its dots"
        ));
    }
    Ok(names)
}

/// A binary value may only be used as a whole-template reference (where bytes are allowed).
fn check_binary(
    cx: &mut Cx<'_>,
    t: &CompiledTemplate,
    binary: &[String],
    path: &DocPath,
    bytes_ok: bool,
) {
    if bytes_ok && t.as_ref_path().is_some_and(|p| p.len() == 1) {
        return;
    }
    let roots: Vec<String> = CompiledTemplate::compile(t.source())
        .map(|(_, a)| a.paths.iter().filter_map(|p| p.first().cloned()).collect())
        .unwrap_or_default();
    for b in binary {
        if roots.contains(b) {
            cx.error(
                path,
                Code::BinaryInTemplate,
                format!("'{b}' holds raw bytes (`encode: raw`) and cannot be written into text"),
            )
            .hint = Some(format!(
                "use '{{{{{b}}}}}' alone as a digest's `key` or `input`, or give step '{b}' a text encoding such as hex"
            ));
        }
    }
}

fn compile_pair(text: &str) -> Result<Vec<PairPiece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        if start > 0 {
            pieces.push(PairPiece::Text(
                rest.get(..start).unwrap_or_default().to_string(),
            ));
        }
        let after = rest.get(start..).unwrap_or_default();
        if let Some(r) = after.strip_prefix("{key}") {
            pieces.push(PairPiece::Key);
            rest = r;
        } else if let Some(r) = after.strip_prefix("{value}") {
            pieces.push(PairPiece::Value);
            rest = r;
        } else {
            return Err(format!(
                "'{text}' has a placeholder other than {{key}} and {{value}}"
            ));
        }
    }
    if !rest.is_empty() {
        pieces.push(PairPiece::Text(rest.to_string()));
    }
    Ok(pieces)
}

/// Compiles a signing recipe, recording located problems.
pub fn compile_sign(cx: &mut Cx<'_>, recipe: &SignRecipe, path: &DocPath) -> Option<SignPlan> {
    let before = cx.problems.len();
    let roots: Vec<&str> = RECIPE_ROOTS.iter().chain(SIGN_ROOTS).copied().collect();
    let (steps, names, binary) = compile_steps(cx, &recipe.steps, &path.key("steps"), &roots);
    check_known_rsa_keys(cx, &recipe.steps, &steps, &path.key("steps"), None);
    for (i, step) in recipe.steps.iter().enumerate() {
        if let Step::Digest { alg, .. } = step
            && is_verify_only(*alg)
        {
            cx.error(&path.key("steps").index(i).key("alg"), Code::SigningKey, format!("{} only verifies signatures; it cannot sign a request", alg_name(*alg)))
                .hint = Some("sign with rsa-sha256, ed25519 or an hmac-* algorithm, or move this step to a callback's `verify` recipe".into());
        }
    }
    let scope = Scope {
        roots: &roots,
        extra: &names,
    };
    let mut place = Vec::new();
    for (i, p) in recipe.place.iter().enumerate() {
        let pp = path.key("place").index(i).key("value");
        if p.to == PlaceTarget::Xml && !crate::engine::build::xml_name_ok(&p.name) {
            cx.error(
                &path.key("place").index(i).key("name"),
                Code::InvalidValue,
                format!("'{}' is not an XML element name", p.name),
            )
            .hint = Some("name the element, like `sign`: a letter or `_` first, then letters, digits, `_`, `-` or `.`".into());
        }
        if let Some(t) = cx.template(&p.value, &pp, &scope) {
            check_binary(cx, &t, &binary, &pp, false);
            place.push((p.to, p.name.clone(), t));
        }
    }
    (cx.problems.len() == before).then_some(SignPlan { steps, place })
}

/// Compiles a verification recipe, recording located problems.
pub fn compile_verify(
    cx: &mut Cx<'_>,
    recipe: &VerifyRecipe,
    path: &DocPath,
) -> Option<VerifyPlan> {
    let before = cx.problems.len();
    let roots: Vec<&str> = RECIPE_ROOTS.iter().chain(VERIFY_ROOTS).copied().collect();
    let src = &recipe.signature;
    let places = [
        src.header.is_some(),
        src.field.is_some(),
        src.json.is_some(),
        src.xml.is_some(),
    ];
    if places.iter().filter(|p| **p).count() != 1 {
        cx.error(
            &path.key("signature"),
            Code::Conflict,
            "the signature needs exactly one of `header`, `field`, `json` and `xml`",
        );
    }
    let sig_json = src.json.as_deref().and_then(|jp| {
        let found = JsonPathExpr::parse(jp)
            .ok()
            .zip(split_json_field(jp))
            .and_then(|(full, (parent, field))| {
                JsonPathExpr::parse(&parent)
                    .ok()
                    .map(|parent| (full, parent, field))
            });
        if found.is_none() {
            cx.error(
                &path.key("signature").key("json"),
                Code::InvalidValue,
                format!("'{jp}' is not a JSONPath ending in a field name"),
            )
            .hint = Some(
                "write the path of the field holding the signature, like `$.sign` or `$.data.sign`"
                    .into(),
            );
        }
        found
    });
    if let Some(x) = &src.xml
        && !crate::engine::build::xml_name_ok(x)
    {
        cx.error(
            &path.key("signature").key("xml"),
            Code::InvalidValue,
            format!("'{x}' is not an XML element name"),
        )
        .hint = Some("name the element holding the signature, like `sign`".into());
    }
    if src.split.is_some() && src.pairs.is_some() {
        cx.error(
            &path.key("signature"),
            Code::Conflict,
            "use either `split` or `pairs`, not both",
        );
    }
    let envelope = src.envelope.as_ref().and_then(|e| {
        envelope_path(&e.json_field)
            .map_err(|message| {
                cx.error(
                    &path.key("signature").key("envelope").key("json_field"),
                    Code::InvalidValue,
                    message,
                )
                .hint = Some("name the envelope's field holding the signature, for example `signature` or `sig.value`".into());
            })
            .ok()
    });
    let (mut steps, names, binary) = compile_steps(cx, &recipe.steps, &path.key("steps"), &roots);
    // The field or element holding the signature is not one of the signed parameters.
    for s in &mut steps {
        if let StepKind::Canonical(c) = &mut s.kind {
            c.drop_json = sig_json.as_ref().map(|(_, p, f)| (p.clone(), f.clone()));
            c.drop_xml = src.xml.clone();
        }
    }
    let scope = Scope {
        roots: &roots,
        extra: &names,
    };
    let expect = cx.template(&recipe.expect, &path.key("expect"), &scope);
    let mut rsa_step = None;
    if let Some(t) = &expect {
        let target = t.as_ref_path().and_then(|p| match p {
            [one] => Some(one.clone()),
            _ => None,
        });
        let rsa_index = steps.iter().position(|s| {
            matches!(&s.kind, StepKind::Digest(d) if is_public_key_alg(d.alg))
                && Some(&s.name) == target.as_ref()
        });
        let public = steps.iter().find_map(|s| match &s.kind {
            StepKind::Digest(d) if is_public_key_alg(d.alg) => Some(d.alg),
            _ => None,
        });
        if let Some(alg) = public
            && rsa_index.is_none()
        {
            cx.error(&path.key("expect"), Code::SigningKey, format!("an {} verification must be checked with the public key: `expect` must be exactly the signature step, like '{{{{sig}}}}'", alg_name(alg)));
        }
        rsa_step = rsa_index;
        check_binary(cx, t, &binary, &path.key("expect"), false);
        check_known_rsa_keys(cx, &recipe.steps, &steps, &path.key("steps"), rsa_step);
    }
    let timestamp = recipe.timestamp.as_ref().and_then(|ts| {
        let tp = path.key("timestamp");
        let value = cx.template(&ts.value, &tp.key("value"), &scope);
        let format = TimeFormat::parse(ts.format.as_deref().unwrap_or("unix_seconds"))
            .map_err(|e| cx.error(&tp.key("format"), Code::TimeFormat, e).hint = None)
            .ok();
        let offset = parse_offset(ts.offset.as_deref().unwrap_or("+00:00"))
            .map_err(|e| cx.error(&tp.key("offset"), Code::TimeFormat, e).hint = None)
            .ok();
        let tolerance = cx.duration(
            ts.tolerance.as_deref().unwrap_or("5m"),
            &tp.key("tolerance"),
        );
        Some(TimestampPlan {
            value: value?,
            format: format?,
            offset: offset?,
            tolerance: tolerance?,
        })
    });
    let replay = recipe.replay.as_ref().and_then(|r| {
        let rp = path.key("replay");
        let key = cx.template(&r.key, &rp.key("key"), &scope);
        let ttl = cx.duration(r.ttl.as_deref().unwrap_or("24h"), &rp.key("ttl"));
        key.zip(ttl)
    });
    if let Some(status) = recipe.reject_status
        && !(400..=599).contains(&status)
    {
        cx.error(
            &path.key("reject_status"),
            Code::InvalidValue,
            format!("{status} is not an error status"),
        )
        .hint = Some("refused deliveries need a 4xx or 5xx status, usually 401 or 403".into());
    }
    let expect = expect?;
    (cx.problems.len() == before).then_some(VerifyPlan {
        source: recipe.signature.clone(),
        sig_json: sig_json.map(|(full, _, _)| full),
        envelope,
        steps,
        expect,
        rsa_step,
        ignore_case: recipe.ignore_case,
        timestamp,
        replay,
        reject_status: recipe.reject_status.unwrap_or(401),
    })
}

// ---------------------------------------------------------------- run

/// The parts of an HTTP request a recipe reads.
#[derive(Debug, Clone, Default)]
pub struct Parts {
    /// Method, upper case.
    pub method: String,
    /// The full URL, with its query string.
    pub url: String,
    /// The path (without query).
    pub path: String,
    /// Query parameters, in order, decoded.
    pub query: Vec<(String, String)>,
    /// The query string exactly as sent or received, without the `?` (empty when none).
    pub raw_query: String,
    /// Form fields, in order, decoded.
    pub form: Vec<(String, String)>,
    /// Headers, in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The exact body bytes.
    pub body: Vec<u8>,
}

/// Everything a recipe run needs besides the request.
#[derive(Debug, Clone)]
pub struct RunEnv<'a> {
    /// Credential values by name.
    pub credentials: &'a Map<String, Value>,
    /// Settings by name.
    pub settings: &'a Map<String, Value>,
    /// The platform identifier.
    pub platform: &'a str,
    /// The clock of this request.
    pub now: OffsetDateTime,
    /// A fixed nonce (previews, tests); random when absent.
    pub nonce: Option<String>,
}

/// What a recipe run computed: every step's value, in order. Key material (raw values and
/// values used as a later step's key) shows as `***`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// Step name → value (`***` for key material).
    pub steps: Vec<(String, String)>,
}

/// Why a recipe could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipeError {
    /// A step failed (bad key, template error...).
    #[error("signing step '{step}' failed: {message}")]
    Step {
        /// The step.
        step: String,
        /// What went wrong.
        message: String,
    },
    /// The key id the request carries names no usable key (absent, unreadable envelope,
    /// unknown id): the request's fault, not the recipe's.
    #[error("signing step '{step}': {message}")]
    KeyId {
        /// The step.
        step: String,
        /// What went wrong.
        message: String,
    },
    /// A template step could not read a value of the request (a helper refused it, such as
    /// `base64_decode` of text that is not base64): the request's fault, not the setup's.
    #[error("signing step '{step}' failed: {message}")]
    Value {
        /// The step.
        step: String,
        /// What went wrong.
        message: String,
    },
}

/// Why a delivery was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No signature where the recipe says it is.
    #[error("the delivery carries no signature in {0}")]
    Missing(String),
    /// The signature does not match.
    #[error("the signature does not match")]
    Mismatch,
    /// The timestamp is missing or malformed.
    #[error("the delivery's timestamp is missing or malformed: {0}")]
    BadTimestamp(String),
    /// The timestamp is outside the window.
    #[error(
        "the delivery's timestamp is {skew_secs}s away from now, more than the {tolerance_secs}s allowed"
    )]
    Stale {
        /// Distance from now, seconds.
        skew_secs: i64,
        /// Allowed distance, seconds.
        tolerance_secs: u64,
    },
    /// The delivery's replay key was already seen.
    #[error("the delivery was already received (replay key seen before)")]
    Replayed,
    /// The signature holds more candidates than [`MAX_SIGNATURE_CANDIDATES`]: each would cost
    /// a verification (a public-key one for RSA and ECDSA recipes), so none is tried.
    #[error(
        "the delivery's {where_} holds {found} signature candidates, more than the {max} the gateway tries: none was tried",
        max = MAX_SIGNATURE_CANDIDATES
    )]
    TooManyCandidates {
        /// Where the signature was read (`header X`, `field Y`).
        where_: String,
        /// Candidates found there.
        found: usize,
    },
    /// The signature's envelope (base64 of a JSON object) cannot be read, lacks the signature
    /// field, or holds a non-text there.
    #[error("the delivery's signature in {where_} cannot be read: {reason}")]
    Unreadable {
        /// Where the signature was read (`header X`, `field Y`).
        where_: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key id the delivery carries names no key of the gateway (or none is there).
    #[error("the delivery's key id cannot be used: {0}")]
    UnknownKey(String),
    /// The recipe itself failed.
    #[error(transparent)]
    Recipe(RecipeError),
}

impl From<RecipeError> for Rejection {
    fn from(e: RecipeError) -> Self {
        match e {
            RecipeError::KeyId { message, .. } => Rejection::UnknownKey(message),
            other => Rejection::Recipe(other),
        }
    }
}

/// The most signature candidates (`split` pieces or `pairs` entries of the signature key) one
/// delivery may carry. Each is a verification, so a delivery with more is refused before any.
pub const MAX_SIGNATURE_CANDIDATES: usize = 16;

/// Remembers replay keys until they expire. The in-memory guard serves one process; the store
/// provides a durable one shared by several instances.
pub trait ReplayGuard: Send + Sync {
    /// Records `key` until `expires`; `false` when it is already recorded and not yet expired.
    fn first_sighting(&self, key: &str, now: OffsetDateTime, expires: OffsetDateTime) -> bool;
}

/// A replay guard in memory, pruned of expired keys as it goes.
#[derive(Debug, Default)]
pub struct MemoryReplayGuard {
    seen: Mutex<HashMap<String, OffsetDateTime>>,
}

impl ReplayGuard for MemoryReplayGuard {
    fn first_sighting(&self, key: &str, now: OffsetDateTime, expires: OffsetDateTime) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            // A poisoned lock means a panic elsewhere; refusing is the safe answer.
            return false;
        };
        if seen.len() > 4096 {
            seen.retain(|_, until| *until > now);
        }
        match seen.get(key) {
            Some(until) if *until > now => false,
            _ => {
                seen.insert(key.to_string(), expires);
                true
            }
        }
    }
}

struct Run<'a> {
    ctx: Value,
    bytes: HashMap<String, Vec<u8>>,
    parts: &'a Parts,
    trace: Trace,
}

fn pairs_object(pairs: &[(String, String)], lowercase: bool) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        let k = if lowercase {
            k.to_ascii_lowercase()
        } else {
            k.clone()
        };
        m.entry(k).or_insert_with(|| Value::String(v.clone()));
    }
    Value::Object(m)
}

impl<'a> Run<'a> {
    fn new(parts: &'a Parts, env: &RunEnv<'_>, signature: Option<Map<String, Value>>) -> Self {
        let mut ctx = Map::new();
        ctx.insert("method".into(), Value::String(parts.method.clone()));
        ctx.insert("url".into(), Value::String(parts.url.clone()));
        ctx.insert("path".into(), Value::String(parts.path.clone()));
        ctx.insert("query".into(), pairs_object(&parts.query, false));
        ctx.insert("raw_query".into(), Value::String(parts.raw_query.clone()));
        ctx.insert("form".into(), pairs_object(&parts.form, false));
        ctx.insert("headers".into(), pairs_object(&parts.headers, true));
        ctx.insert(
            "body".into(),
            Value::String(String::from_utf8_lossy(&parts.body).into_owned()),
        );
        ctx.insert("credentials".into(), Value::Object(env.credentials.clone()));
        ctx.insert("settings".into(), Value::Object(env.settings.clone()));
        ctx.insert("platform".into(), Value::String(env.platform.to_string()));
        if let Some(sig) = signature {
            ctx.insert("signature".into(), Value::Object(sig));
        }
        // The `now` and `uuid` helpers read the run's clock and nonce.
        let now_ms = i64::try_from(env.now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        ctx.insert(crate::template::NOW_KEY.into(), Value::from(now_ms));
        if let Some(n) = &env.nonce {
            ctx.insert(crate::template::NONCE_KEY.into(), Value::String(n.clone()));
        }
        Run {
            ctx: Value::Object(ctx),
            bytes: HashMap::new(),
            parts,
            trace: Trace::default(),
        }
    }

    fn set(&mut self, name: &str, value: Vec<u8>, text: bool, secret: bool) {
        let shown = if text {
            String::from_utf8_lossy(&value).into_owned()
        } else {
            format!("hex:{}", hex::encode(&value))
        };
        if text && let Value::Object(m) = &mut self.ctx {
            m.insert(name.to_string(), Value::String(shown.clone()));
        }
        let traced = if secret { "***".to_string() } else { shown };
        self.trace.steps.push((name.to_string(), traced));
        self.bytes.insert(name.to_string(), value);
    }

    fn render(&self, t: &CompiledTemplate, step: &str) -> Result<String, RecipeError> {
        t.render(&self.ctx).map_err(|message| RecipeError::Value {
            step: step.to_string(),
            message,
        })
    }

    /// Bytes of a template: exact bytes for a whole-template reference to a step or the body.
    fn render_bytes(&self, t: &CompiledTemplate, step: &str) -> Result<Vec<u8>, RecipeError> {
        if let Some([one]) = t.as_ref_path() {
            if let Some(b) = self.bytes.get(one) {
                return Ok(b.clone());
            }
            if one == "body" {
                return Ok(self.parts.body.clone());
            }
        }
        Ok(self.render(t, step)?.into_bytes())
    }

    /// The key bytes of a digest step (decoded as declared), chosen by the delivery's key id
    /// when the step has one.
    fn step_key(&self, d: &DigestPlan, step: &str) -> Result<Option<Vec<u8>>, RecipeError> {
        let fail = |message: String| RecipeError::Step {
            step: step.to_string(),
            message,
        };
        let by_request = |message: String| RecipeError::KeyId {
            step: step.to_string(),
            message,
        };
        let Some(k) = &d.key else { return Ok(None) };
        let raw = match &d.key_id {
            None => self.render_bytes(k, step)?,
            Some(kid) => {
                let id = self.render(&kid.value, step)?;
                let id = match &kid.json_field {
                    Some(field) => {
                        match envelope_field("key-id", &id, field).map_err(by_request)? {
                            Value::String(s) if !s.is_empty() => s,
                            Value::Number(n) => n.to_string(),
                            _ => {
                                return Err(by_request(format!(
                                    "the key-id envelope's field '{}' is not a key id (text or number)",
                                    field.join(".")
                                )));
                            }
                        }
                    }
                    None => id.trim().to_string(),
                };
                if id.is_empty() {
                    return Err(by_request("it carries no key id".into()));
                }
                match select_key(&self.ctx, &kid.map, &id) {
                    Ok(key) => key.into_bytes(),
                    Err(KeyChoice::Unknown(m)) => return Err(by_request(m)),
                    Err(KeyChoice::Setup(m)) => return Err(fail(m)),
                }
            }
        };
        decode_key(&raw, d).map(Some).map_err(fail)
    }

    /// Runs `steps` in order, leaving out the one at `skip` (an RSA verification step, which is
    /// checked against the candidates instead of computed).
    fn steps(
        &mut self,
        steps: &[StepPlan],
        env: &RunEnv<'_>,
        skip: Option<usize>,
    ) -> Result<(), RecipeError> {
        for (i, s) in steps.iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            let fail = |message: String| RecipeError::Step {
                step: s.name.clone(),
                message,
            };
            match &s.kind {
                StepKind::Template(t) => {
                    let v = self.render(t, &s.name)?;
                    self.set(&s.name, v.into_bytes(), true, s.secret);
                }
                StepKind::Canonical(c) => {
                    let v = canonical(c, self.parts);
                    self.set(&s.name, v.into_bytes(), true, s.secret);
                }
                StepKind::Time(f, o) => {
                    let v = f.format(env.now, *o);
                    self.set(&s.name, v.into_bytes(), true, s.secret);
                }
                StepKind::Nonce(f) => {
                    let v = env.nonce.clone().unwrap_or_else(|| fresh_nonce(*f));
                    self.set(&s.name, v.into_bytes(), true, s.secret);
                }
                StepKind::Digest(d) => {
                    let input = self.render_bytes(&d.input, &s.name)?;
                    let key = self.step_key(d, &s.name)?;
                    let out = digest(d.alg, &input, key.as_deref()).map_err(fail)?;
                    match encode(&out, d.encode) {
                        Some(text) => self.set(&s.name, text.into_bytes(), true, s.secret),
                        None => self.set(&s.name, out, false, s.secret),
                    }
                }
            }
        }
        Ok(())
    }
}

/// The value at a dotted path inside a base64 (or base64url, padding optional) JSON object
/// envelope; `what` names the envelope in the reasons (`key-id`, `signature`).
fn envelope_field(what: &str, envelope: &str, field: &[String]) -> Result<Value, String> {
    let t = envelope.trim().trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
        .map_err(|_| format!("the {what} envelope is not base64"))?;
    let json = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return Err(format!(
                "the {what} envelope is not base64 of a JSON object"
            ));
        }
    };
    let dotted = field.join(".");
    field
        .iter()
        .try_fold(&json, |v, f| v.get(f.as_str()))
        .cloned()
        .ok_or_else(|| format!("the {what} envelope has no field '{dotted}'"))
}

/// The key named `id` in the map at `path` of the run's context: a JSON object, or text
/// holding one (settings and credentials are text).
fn select_key(ctx: &Value, path: &[String], id: &str) -> Result<String, KeyChoice> {
    let where_ = path.join(".");
    let not_map = || KeyChoice::Setup(format!("{where_} is not a JSON object of key ids to keys"));
    let map = path
        .iter()
        .try_fold(ctx, |v, p| v.get(p.as_str()))
        .ok_or_else(|| {
            KeyChoice::Setup(format!(
                "{where_} is not set: it should map key ids to keys"
            ))
        })?;
    let parsed;
    let map = match map {
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text).map_err(|_| not_map())?;
            &parsed
        }
        other => other,
    };
    let Value::Object(keys) = map else {
        return Err(not_map());
    };
    let shown: String = id.chars().take(64).collect();
    match keys.get(id) {
        Some(Value::String(k)) => Ok(k.clone()),
        Some(_) => Err(KeyChoice::Setup(format!(
            "the key with id '{shown}' in {where_} is not text"
        ))),
        None => Err(KeyChoice::Unknown(format!(
            "no key with id '{shown}' in {where_} ({} keys known)",
            keys.len()
        ))),
    }
}

/// Why no key was chosen: the id names none (the request's fault), or the map itself is
/// unusable (the gateway's setup).
enum KeyChoice {
    Unknown(String),
    Setup(String),
}

fn fresh_nonce(f: NonceFormat) -> String {
    let id = uuid::Uuid::new_v4();
    match f {
        NonceFormat::Uuid => id.to_string(),
        NonceFormat::Hex => id.simple().to_string(),
        NonceFormat::Alnum => {
            const ALPHABET: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            // Rejection sampling: bytes of 248 and above would favour the first characters.
            let mut out = String::with_capacity(16);
            while out.len() < 16 {
                for b in uuid::Uuid::new_v4().as_bytes() {
                    if *b < 248 && out.len() < 16 {
                        let c = ALPHABET
                            .get(usize::from(*b) % ALPHABET.len())
                            .copied()
                            .unwrap_or(b'0');
                        out.push(char::from(c));
                    }
                }
            }
            out
        }
    }
}

fn decode_key(raw: &[u8], d: &DigestPlan) -> Result<Vec<u8>, String> {
    let mut raw = raw;
    if let Some(prefix) = &d.key_strip_prefix {
        raw = raw.strip_prefix(prefix.as_bytes()).unwrap_or(raw);
    }
    let text = || std::str::from_utf8(raw).map_err(|_| "the key is not text".to_string());
    let unpadded = |t: &str| t.trim().trim_end_matches('=').to_string();
    match d.key_decode {
        KeyDecode::Utf8 => Ok(raw.to_vec()),
        KeyDecode::Hex => {
            hex::decode(text()?.trim()).map_err(|_| "the key is not valid hex".into())
        }
        KeyDecode::Base64 => base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(unpadded(text()?))
            .map_err(|_| "the key is not valid base64".into()),
        KeyDecode::Base64url => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(unpadded(text()?))
            .map_err(|_| "the key is not valid base64url".into()),
    }
}

fn hmac_of<M: Mac + KeyInit>(key: &[u8], input: &[u8]) -> Result<Vec<u8>, String> {
    let mut mac = <M as KeyInit>::new_from_slice(key)
        .map_err(|_| "the HMAC key is not usable".to_string())?;
    mac.update(input);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// RSA keys known when the file loads (written literally, or a single `{{settings.NAME}}`)
/// are read now, so an unreadable key is a located diagnostic instead of a failure of every
/// request or delivery. `verify_step` is the step checked with a public key (a verification
/// recipe's); every other rsa-sha256 step signs with a private key. Keys from credentials are
/// only known at run time.
fn check_known_rsa_keys(
    cx: &mut Cx<'_>,
    config: &[Step],
    plans: &[StepPlan],
    path: &DocPath,
    verify_step: Option<usize>,
) {
    for (i, step) in config.iter().enumerate() {
        let name = step_name(step);
        let Some((
            index,
            StepPlan {
                kind: StepKind::Digest(d),
                ..
            },
        )) = plans.iter().enumerate().find(|(_, p)| p.name == name)
        else {
            continue;
        };
        if !is_public_key_alg(d.alg) {
            continue;
        }
        let Some(key) = &d.key else { continue };
        let text = match (key.as_literal(), key.as_ref_path()) {
            (Some(literal), _) => literal.to_string(),
            (None, Some([root, setting])) if root == "settings" => match cx.setting_text(setting) {
                Some(t) => t.to_string(),
                None => continue,
            },
            _ => continue,
        };
        let public = verify_step == Some(index) || is_verify_only(d.alg);
        let read_one = |text: &str| {
            decode_key(text.as_bytes(), d).and_then(|raw| {
                if public {
                    PublicKey::read(d.alg, &raw).map(|_| ())
                } else {
                    read_private(d.alg, &raw)
                }
            })
        };
        // With a key id, the setting is a JSON object of key id → key: every key is read.
        let read = match &d.key_id {
            None => read_one(&text),
            Some(_) => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(keys)) => keys.iter().try_for_each(|(id, k)| match k {
                    Value::String(k) => read_one(k).map_err(|m| format!("key '{id}': {m}")),
                    _ => Err(format!("key '{id}' is not text")),
                }),
                _ => Err("with `key_id`, the key must be a JSON object of key ids to keys, such as {\"k1\": \"MFkw...\"}".into()),
            },
        };
        if let Err(message) = read {
            cx.error(&path.index(i).key("key"), Code::SigningKey, message)
                .hint = Some(if public {
                "give the platform's public key as PEM text (-----BEGIN PUBLIC KEY-----...) or as the bare base64 of its DER, usually from a setting or a credential".into()
            } else {
                "give your private key as PEM text (-----BEGIN PRIVATE KEY-----...) or as the bare base64 of its DER, usually from a credential".into()
            });
        }
    }
}

type KeyCache<K> = LazyLock<Mutex<HashMap<[u8; 32], Arc<K>>>>;
static PRIVATE_KEYS: KeyCache<rsa::PrivateKey> = LazyLock::new(Default::default);
static PUBLIC_KEYS: KeyCache<PublicKey> = LazyLock::new(Default::default);

fn cached<K>(
    cache: &KeyCache<K>,
    tag: &str,
    raw: &[u8],
    parse: impl FnOnce(KeyForm) -> Result<K, String>,
) -> Result<Arc<K>, String> {
    let mut h = sha2::Sha256::new();
    h.update(tag.as_bytes());
    h.update([0]);
    h.update(raw);
    let id: [u8; 32] = h.finalize().into();
    if let Some(k) = cache.lock().ok().and_then(|m| m.get(&id).cloned()) {
        return Ok(k);
    }
    let key = Arc::new(parse(key_form(raw))?);
    if let Ok(mut m) = cache.lock() {
        // Keys come from the configuration, so few are expected; a bound keeps a recipe that
        // takes its key from elsewhere from growing the cache without end.
        if m.len() >= 1024 {
            m.clear();
        }
        m.insert(id, key.clone());
    }
    Ok(key)
}

/// A key as written: PEM text, or bytes (DER or a raw key) from bare base64 text or given
/// as bytes (after `key_decode`).
enum KeyForm {
    Pem(String),
    Bytes(Vec<u8>),
}

fn key_form(raw: &[u8]) -> KeyForm {
    if let Ok(text) = std::str::from_utf8(raw) {
        let t = text.trim();
        if t.starts_with("-----BEGIN") {
            return KeyForm::Pem(t.to_string());
        }
        // Bare base64 as platforms publish keys: the DER body without the armour, possibly
        // wrapped over several lines.
        let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
        let compact = compact.trim_end_matches('=');
        if !compact.is_empty() {
            let b64 = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(compact)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(compact));
            if let Ok(bytes) = b64 {
                return KeyForm::Bytes(bytes);
            }
        }
    }
    KeyForm::Bytes(raw.to_vec())
}

const KEY_SHAPES: &str = "PEM, or the bare base64 of its DER";

fn private_key(raw: &[u8]) -> Result<Arc<rsa::PrivateKey>, String> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    cached(&PRIVATE_KEYS, "rsa", raw, |form| {
        match form {
            KeyForm::Pem(text) => rsa::PrivateKey::from_pkcs8_pem(&text)
                .or_else(|_| rsa::PrivateKey::from_pkcs1_pem(&text))
                .ok(),
            KeyForm::Bytes(der) => rsa::PrivateKey::from_pkcs8_der(&der)
                .or_else(|_| rsa::PrivateKey::from_pkcs1_der(&der))
                .ok(),
        }
        .ok_or_else(|| {
            format!("the key is not an RSA private key (PKCS#8 or PKCS#1) in {KEY_SHAPES}")
        })
    })
}

fn ed25519_private(raw: &[u8]) -> Result<ed25519_dalek::SigningKey, String> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let bad = || {
        format!(
            "the key is not an Ed25519 private key (PKCS#8 in {KEY_SHAPES}, or the 32-byte seed or 64-byte seed and public key in base64)"
        )
    };
    match key_form(raw) {
        KeyForm::Pem(text) => ed25519_dalek::SigningKey::from_pkcs8_pem(&text).map_err(|_| bad()),
        KeyForm::Bytes(b) => {
            if let Ok(seed) = <[u8; 32]>::try_from(b.as_slice()) {
                Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
            } else if let Ok(pair) = <[u8; 64]>::try_from(b.as_slice()) {
                ed25519_dalek::SigningKey::from_keypair_bytes(&pair).map_err(|_| {
                    "the 64-byte Ed25519 key's second half is not the public key of its first half (the seed)".to_string()
                })
            } else {
                ed25519_dalek::SigningKey::from_pkcs8_der(&b).map_err(|_| bad())
            }
        }
    }
}

/// A public key that checks signatures of one algorithm.
#[derive(Debug)]
enum PublicKey {
    Rsa(rsa::pkcs1v15::VerifyingKey<sha2::Sha256>),
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// Reads (or finds in the cache) the public key of a signature algorithm.
    fn read(alg: DigestAlg, raw: &[u8]) -> Result<Arc<PublicKey>, String> {
        cached(&PUBLIC_KEYS, alg_name(alg), raw, |form| match alg {
            DigestAlg::Ed25519 => {
                use ed25519_dalek::pkcs8::DecodePublicKey;
                match form {
                    KeyForm::Pem(text) => ed25519_dalek::VerifyingKey::from_public_key_pem(&text).ok(),
                    KeyForm::Bytes(b) => match <[u8; 32]>::try_from(b.as_slice()) {
                        Ok(raw) => ed25519_dalek::VerifyingKey::from_bytes(&raw).ok(),
                        Err(_) => ed25519_dalek::VerifyingKey::from_public_key_der(&b).ok(),
                    },
                }
                .map(PublicKey::Ed25519)
                .ok_or_else(|| format!("the key is not an Ed25519 public key (SPKI in {KEY_SHAPES}, or the raw 32 bytes in base64)"))
            }
            DigestAlg::EcdsaP256Sha256 | DigestAlg::EcdsaP256Sha1 => {
                use p256::pkcs8::DecodePublicKey;
                match form {
                    KeyForm::Pem(text) => p256::ecdsa::VerifyingKey::from_public_key_pem(&text).ok(),
                    KeyForm::Bytes(b) => p256::ecdsa::VerifyingKey::from_public_key_der(&b)
                        .or_else(|_| p256::ecdsa::VerifyingKey::from_sec1_bytes(&b))
                        .ok(),
                }
                .map(PublicKey::P256)
                .ok_or_else(|| format!("the key is not a P-256 public key (SPKI in {KEY_SHAPES}, or the SEC1 point in base64)"))
            }
            _ => {
                use rsa::pkcs1::DecodeRsaPublicKey;
                use rsa::pkcs8::DecodePublicKey;
                match form {
                    KeyForm::Pem(text) => rsa::PublicKey::from_public_key_pem(&text)
                        .or_else(|_| rsa::PublicKey::from_pkcs1_pem(&text))
                        .ok(),
                    KeyForm::Bytes(der) => rsa::PublicKey::from_public_key_der(&der)
                        .or_else(|_| rsa::PublicKey::from_pkcs1_der(&der))
                        .ok(),
                }
                .map(|k| PublicKey::Rsa(rsa::pkcs1v15::VerifyingKey::new(k)))
                .ok_or_else(|| {
                    format!("the key is not an RSA public key (SPKI or PKCS#1) in {KEY_SHAPES}")
                })
            }
        })
    }

    /// Whether `sig` is a signature of `input` by this key under `alg`.
    fn verifies(&self, alg: DigestAlg, input: &[u8], sig: &[u8]) -> bool {
        use rsa::signature::Verifier;
        match self {
            PublicKey::Rsa(k) => rsa::pkcs1v15::Signature::try_from(sig)
                .is_ok_and(|sig| k.verify(input, &sig).is_ok()),
            PublicKey::Ed25519(k) => ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|sig| k.verify_strict(input, &sig).is_ok()),
            PublicKey::P256(k) => {
                use p256::ecdsa::signature::hazmat::PrehashVerifier;
                let prehash = match alg {
                    DigestAlg::EcdsaP256Sha1 => sha1::Sha1::digest(input).to_vec(),
                    _ => sha2::Sha256::digest(input).to_vec(),
                };
                // Raw `r || s` (64 bytes) or DER; both name the same pair, and either
                // verifies only when it is a genuine signature. A high `s` is as valid as its
                // low twin, so it is normalised rather than refused.
                let raw = (sig.len() == 64)
                    .then(|| p256::ecdsa::Signature::from_slice(sig).ok())
                    .flatten();
                let der = p256::ecdsa::Signature::from_der(sig).ok();
                [raw, der]
                    .into_iter()
                    .flatten()
                    .any(|s| k.verify_prehash(&prehash, &s.normalize_s()).is_ok())
            }
        }
    }
}

/// Reads a private key, to report an unreadable one when the file loads.
fn read_private(alg: DigestAlg, raw: &[u8]) -> Result<(), String> {
    match alg {
        DigestAlg::RsaSha256 => private_key(raw).map(|_| ()),
        DigestAlg::Ed25519 => ed25519_private(raw).map(|_| ()),
        other => Err(format!("{} only verifies signatures", alg_name(other))),
    }
}

/// Signs `input` with a private key (RSA PKCS#1 v1.5 over SHA-256, or Ed25519).
fn sign_with(alg: DigestAlg, key: &[u8], input: &[u8]) -> Result<Vec<u8>, String> {
    use rsa::signature::{SignatureEncoding, Signer};
    match alg {
        DigestAlg::RsaSha256 => {
            let k = private_key(key)?;
            let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(rsa::PrivateKey::clone(&k));
            Ok(signer
                .try_sign(input)
                .map_err(|e| format!("RSA signing failed: {e}"))?
                .to_vec())
        }
        DigestAlg::Ed25519 => Ok(ed25519_private(key)?.sign(input).to_bytes().to_vec()),
        other => Err(format!(
            "{} only verifies signatures; it cannot sign",
            alg_name(other)
        )),
    }
}

fn digest(alg: DigestAlg, input: &[u8], key: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let key = key.unwrap_or_default();
    Ok(match alg {
        DigestAlg::Md5 => md5::Md5::digest(input).to_vec(),
        DigestAlg::Sha1 => sha1::Sha1::digest(input).to_vec(),
        DigestAlg::Sha256 => sha2::Sha256::digest(input).to_vec(),
        DigestAlg::Sha512 => sha2::Sha512::digest(input).to_vec(),
        DigestAlg::HmacMd5 => hmac_of::<hmac::Hmac<md5::Md5>>(key, input)?,
        DigestAlg::HmacSha1 => hmac_of::<hmac::Hmac<sha1::Sha1>>(key, input)?,
        DigestAlg::HmacSha256 => hmac_of::<hmac::Hmac<sha2::Sha256>>(key, input)?,
        DigestAlg::HmacSha512 => hmac_of::<hmac::Hmac<sha2::Sha512>>(key, input)?,
        DigestAlg::RsaSha256
        | DigestAlg::Ed25519
        | DigestAlg::EcdsaP256Sha256
        | DigestAlg::EcdsaP256Sha1 => sign_with(alg, key, input)?,
    })
}

fn encode(bytes: &[u8], e: Encoding) -> Option<String> {
    Some(match e {
        Encoding::Hex => hex::encode(bytes),
        Encoding::HexUpper => hex::encode_upper(bytes),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
        Encoding::Base64url => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        Encoding::Raw => return None,
    })
}

fn decode(text: &str, e: Encoding) -> Option<Vec<u8>> {
    let t = text.trim();
    match e {
        Encoding::Hex | Encoding::HexUpper => hex::decode(t).ok(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(t.trim_end_matches('='))
            .ok(),
        Encoding::Base64url => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t.trim_end_matches('='))
            .ok(),
        Encoding::Raw => Some(t.as_bytes().to_vec()),
    }
}

fn collapse_ws(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Replaces every listed text in one pass, trying the longest first (`table` is sorted so):
/// what a replacement writes is never replaced again.
fn escape_text(text: &str, table: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        match table
            .iter()
            .find(|(from, _)| !from.is_empty() && rest.starts_with(from.as_str()))
        {
            Some((from, to)) => {
                out.push_str(to);
                rest = rest.get(from.len()..).unwrap_or_default();
            }
            None => {
                out.push(c);
                rest = rest.get(c.len_utf8()..).unwrap_or_default();
            }
        }
    }
    out
}

fn canonical(c: &CanonicalPlan, parts: &Parts) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for src in &c.from {
        match src {
            ParamSource::Query => pairs.extend(parts.query.iter().cloned()),
            ParamSource::Form => pairs.extend(parts.form.iter().cloned()),
            ParamSource::Headers => pairs.extend(parts.headers.iter().cloned()),
            ParamSource::Json => {
                if let Ok(doc) = serde_json::from_slice::<Value>(&parts.body) {
                    let object = match &c.json_path {
                        Some(p) => p.first(&doc),
                        None => Some(&doc),
                    };
                    // The signature's own field, when this is the object holding it.
                    let dropped = c.drop_json.as_ref().and_then(|(parent, field)| {
                        let holder = parent.first(&doc)?;
                        object
                            .is_some_and(|o| std::ptr::eq(o, holder))
                            .then_some(field.as_str())
                    });
                    if let Some(Value::Object(m)) = object {
                        pairs.extend(
                            m.iter()
                                .filter(|(k, _)| Some(k.as_str()) != dropped)
                                .map(|(k, v)| (k.clone(), crate::template::text_of(v))),
                        );
                    }
                }
            }
            ParamSource::Xml => {
                for (k, v) in xml_fields(&parts.body) {
                    if c.drop_xml.as_deref() != Some(k.as_str()) {
                        pairs.push((k, v));
                    }
                }
            }
        }
    }
    if !c.json_fields.is_empty()
        && let Ok(doc) = serde_json::from_slice::<Value>(&parts.body)
    {
        for (name, path) in &c.json_fields {
            if let Some(v) = path.first(&doc) {
                pairs.push((name.clone(), crate::template::text_of(v)));
            }
        }
    }
    let mut pairs: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(k, v)| {
            let k = if c.lowercase_keys {
                k.to_ascii_lowercase()
            } else {
                k
            };
            let v = if c.trim_values { collapse_ws(&v) } else { v };
            (k, v)
        })
        .filter(|(k, v)| {
            (c.include.is_empty() || c.include.iter().any(|i| i == k))
                && !c.exclude.iter().any(|x| x == k)
                && !(c.skip_empty && v.is_empty())
        })
        .map(|(k, v)| {
            if c.escape.is_empty() {
                (k, v)
            } else {
                (escape_text(&k, &c.escape), escape_text(&v, &c.escape))
            }
        })
        .map(|(k, v)| match c.encode {
            UrlEncoding::None => (k, v),
            UrlEncoding::Form => (percent_encode(&k, true), percent_encode(&v, true)),
            UrlEncoding::Rfc3986 => (percent_encode(&k, false), percent_encode(&v, false)),
        })
        .collect();
    match c.sort {
        SortOrder::Key => pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes())),
        SortOrder::KeyValue => pairs.sort_by(|a, b| {
            (a.0.as_bytes(), a.1.as_bytes()).cmp(&(b.0.as_bytes(), b.1.as_bytes()))
        }),
        SortOrder::None => {}
    }
    if c.repeated == Repeated::Join {
        let mut joined: Vec<(String, String)> = Vec::new();
        for (k, v) in pairs {
            match joined.iter_mut().find(|(jk, _)| *jk == k) {
                Some((_, jv)) => {
                    jv.push_str(&c.repeated_separator);
                    jv.push_str(&v);
                }
                None => joined.push((k, v)),
            }
        }
        pairs = joined;
    }
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push_str(&c.separator);
        }
        for piece in &c.pair {
            match piece {
                PairPiece::Text(t) => out.push_str(t),
                PairPiece::Key => out.push_str(k),
                PairPiece::Value => out.push_str(v),
            }
        }
    }
    out
}

/// The top-level elements of an XML body (children of its root) as name and text, in order;
/// a repeated element gives one pair per occurrence; an element with children or attributes
/// gives the compact JSON of its decoded form. Nothing for a body that is not XML.
fn xml_fields(body: &[u8]) -> Vec<(String, String)> {
    let Ok(Value::Object(doc)) =
        crate::engine::decode::decode(crate::config::platform::BodyFormat::Xml, body)
    else {
        return Vec::new();
    };
    let Some(Value::Object(root)) = doc.into_iter().next().map(|(_, v)| v) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in root {
        if k.starts_with('@') || k == "#text" {
            continue;
        }
        match v {
            Value::Array(items) => {
                out.extend(
                    items
                        .iter()
                        .map(|i| (k.clone(), crate::template::text_of(i))),
                );
            }
            v => out.push((k, crate::template::text_of(&v))),
        }
    }
    out
}

/// `$.a.sign` → (`$.a`, `sign`); `$['a']['sign']` → (`$['a']`, `sign`); `None` when the
/// path does not end in a plain field name.
fn split_json_field(path: &str) -> Option<(String, String)> {
    let path = path.trim();
    if let Some(inner) = path.strip_suffix("']") {
        let at = inner.rfind("['")?;
        let field = inner.get(at + 2..)?;
        let parent = inner.get(..at)?;
        return (!field.is_empty() && !field.contains(['\\', '\'']))
            .then(|| (parent.to_string(), field.to_string()));
    }
    let at = path.rfind('.')?;
    let field = path.get(at + 1..)?;
    let parent = path.get(..at)?;
    let plain = !field.is_empty()
        && field
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        && !parent.ends_with('.');
    plain.then(|| (parent.to_string(), field.to_string()))
}

/// A value a signing recipe places: where, under which name, and the value.
pub type Placed = (PlaceTarget, String, String);

impl SignPlan {
    /// Runs the steps over `parts` and returns the values to place, with the trace.
    /// `{{operation}}` is empty: [`SignPlan::run_operation`] gives it.
    pub fn run(
        &self,
        parts: &Parts,
        env: &RunEnv<'_>,
    ) -> Result<(Vec<Placed>, Trace), RecipeError> {
        self.run_operation(parts, env, "")
    }

    /// Runs the steps over the request of `operation` (the recipes' `{{operation}}`).
    pub fn run_operation(
        &self,
        parts: &Parts,
        env: &RunEnv<'_>,
        operation: &str,
    ) -> Result<(Vec<Placed>, Trace), RecipeError> {
        let mut run = Run::new(parts, env, None);
        if let Value::Object(m) = &mut run.ctx {
            m.insert("operation".into(), Value::String(operation.to_string()));
        }
        run.steps(&self.steps, env, None)?;
        let mut placed = Vec::new();
        for (target, name, t) in &self.place {
            placed.push((*target, name.clone(), run.render(t, name)?));
        }
        Ok((placed, run.trace))
    }
}

impl VerifyPlan {
    /// The supplied signature candidates and the `k=v` pairs read with them.
    fn candidates(&self, parts: &Parts) -> Result<(Vec<String>, Map<String, Value>), Rejection> {
        let (raw, where_) = if let Some(h) = &self.source.header {
            let v = parts
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(h))
                .map(|(_, v)| v.clone());
            (v, format!("header {h}"))
        } else if let Some(p) = &self.sig_json {
            let v = serde_json::from_slice::<Value>(&parts.body)
                .ok()
                .and_then(|doc| match p.first(&doc) {
                    Some(Value::String(s)) => Some(s.clone()),
                    _ => None,
                });
            (v, format!("JSON field {}", p.source()))
        } else if let Some(x) = &self.source.xml {
            let v = xml_fields(&parts.body)
                .into_iter()
                .find(|(k, _)| k == x)
                .map(|(_, v)| v);
            (v, format!("XML element <{x}>"))
        } else {
            let f = self.source.field.clone().unwrap_or_default();
            let v = parts
                .form
                .iter()
                .chain(&parts.query)
                .find(|(k, _)| *k == f)
                .map(|(_, v)| v.clone());
            (v, format!("field {f}"))
        };
        let raw = raw
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| Rejection::Missing(where_.clone()))?;
        let raw = match &self.envelope {
            None => raw,
            Some(field) => {
                let unreadable = |reason: String| Rejection::Unreadable {
                    where_: where_.clone(),
                    reason,
                };
                match envelope_field("signature", &raw, field).map_err(unreadable)? {
                    Value::String(s) if !s.trim().is_empty() => s,
                    _ => {
                        return Err(unreadable(format!(
                            "the signature envelope's field '{}' is not text",
                            field.join(".")
                        )));
                    }
                }
            }
        };
        let mut pairs = Map::new();
        let candidates = if let Some(p) = &self.source.pairs {
            let sep = p.separator.as_deref().unwrap_or(",");
            let assign = p.assign.as_deref().unwrap_or("=");
            let mut found = Vec::new();
            for item in raw.split(sep) {
                if let Some((k, v)) = item.trim().split_once(assign) {
                    if k == p.key {
                        found.push(v.to_string());
                    }
                    pairs
                        .entry(k.to_string())
                        .or_insert_with(|| Value::String(v.to_string()));
                }
            }
            found
        } else if let Some(s) = &self.source.split {
            // Every piece, empty ones included so positions hold, is `{{signature.parts}}`.
            let pieces: Vec<Value> = raw
                .split(s.as_str())
                .map(|p| Value::String(p.to_string()))
                .collect();
            pairs.insert("parts".into(), Value::Array(pieces));
            raw.split(s.as_str())
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        } else {
            vec![raw]
        };
        if candidates.len() > MAX_SIGNATURE_CANDIDATES {
            return Err(Rejection::TooManyCandidates {
                where_,
                found: candidates.len(),
            });
        }
        Ok((candidates, pairs))
    }

    /// The value a genuine signature equals (for previews and tests), with the trace.
    pub fn expected(&self, parts: &Parts, env: &RunEnv<'_>) -> Result<(String, Trace), Rejection> {
        let pairs = self.candidates(parts).map(|(_, p)| p).unwrap_or_default();
        let mut run = Run::new(parts, env, Some(pairs));
        run.steps(&self.steps, env, self.rsa_step)?;
        let v = run.render(&self.expect, "expect")?;
        Ok((v, run.trace))
    }

    /// Verifies a delivery: signature (any candidate), then the timestamp window. The replay
    /// guard is the caller's (it needs the store); its key is [`VerifyPlan::replay_key`].
    pub fn verify(&self, parts: &Parts, env: &RunEnv<'_>) -> Result<(), Rejection> {
        self.verify_run(parts, env).map(|_| ())
    }

    fn verify_run<'p>(&self, parts: &'p Parts, env: &RunEnv<'_>) -> Result<Run<'p>, Rejection> {
        let (candidates, pairs) = self.candidates(parts)?;
        let mut run = Run::new(parts, env, Some(pairs));
        run.steps(&self.steps, env, self.rsa_step)?;
        let matched = match self.rsa_step.and_then(|i| self.steps.get(i)) {
            Some(StepPlan {
                kind: StepKind::Digest(d),
                name,
                ..
            }) => {
                let input = run.render_bytes(&d.input, name)?;
                let key = run.step_key(d, name)?.unwrap_or_default();
                let key = PublicKey::read(d.alg, &key).map_err(|message| RecipeError::Step {
                    step: name.clone(),
                    message,
                })?;
                candidates.iter().any(|c| {
                    decode(c, d.encode).is_some_and(|sig| key.verifies(d.alg, &input, &sig))
                })
            }
            _ => {
                let expected = run.render(&self.expect, "expect")?;
                let expected = if self.ignore_case {
                    expected.to_ascii_lowercase()
                } else {
                    expected
                };
                // Every candidate is compared, so timing does not reveal which one matched.
                candidates.iter().fold(false, |acc, c| {
                    let c = if self.ignore_case {
                        c.to_ascii_lowercase()
                    } else {
                        c.clone()
                    };
                    let eq = bool::from(c.as_bytes().ct_eq(expected.as_bytes()));
                    acc | eq
                })
            }
        };
        if !matched {
            return Err(Rejection::Mismatch);
        }
        if let Some(ts) = &self.timestamp {
            let text = run.render(&ts.value, "timestamp")?;
            if text.trim().is_empty() {
                return Err(Rejection::BadTimestamp("no timestamp".into()));
            }
            let at = ts
                .format
                .parse_time(&text, ts.offset)
                .map_err(Rejection::BadTimestamp)?;
            let skew = (env.now - at).whole_seconds();
            let tolerance = ts.tolerance.as_secs();
            if skew.unsigned_abs() > tolerance {
                return Err(Rejection::Stale {
                    skew_secs: skew,
                    tolerance_secs: tolerance,
                });
            }
        }
        Ok(run)
    }

    /// Verifies a delivery and then, when the recipe has a replay guard, records its key:
    /// a second delivery with the same key is refused. Only verified deliveries are recorded,
    /// so a forger cannot burn a genuine delivery's key.
    pub fn verify_delivery(
        &self,
        parts: &Parts,
        env: &RunEnv<'_>,
        guard: &dyn ReplayGuard,
    ) -> Result<(), Rejection> {
        let run = self.verify_run(parts, env)?;
        if let Some((template, ttl)) = &self.replay {
            let key = run.render(template, "replay")?;
            if key.is_empty() {
                return Err(Rejection::Missing("the replay key".into()));
            }
            let ttl = time::Duration::try_from(*ttl).unwrap_or(time::Duration::DAY);
            if !guard.first_sighting(&key, env.now, env.now + ttl) {
                return Err(Rejection::Replayed);
            }
        }
        Ok(())
    }

    /// The replay-guard key of a delivery, if the recipe has a guard.
    pub fn replay_key(&self, parts: &Parts, env: &RunEnv<'_>) -> Result<Option<String>, Rejection> {
        let Some((t, _)) = &self.replay else {
            return Ok(None);
        };
        let pairs = self.candidates(parts).map(|(_, p)| p).unwrap_or_default();
        let mut run = Run::new(parts, env, Some(pairs));
        run.steps(&self.steps, env, self.rsa_step)?;
        Ok(Some(run.render(t, "replay")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_patterns() {
        assert_eq!(
            compile_pair("{key}={value}").unwrap(),
            vec![
                PairPiece::Key,
                PairPiece::Text("=".into()),
                PairPiece::Value
            ]
        );
        assert_eq!(
            compile_pair("{key}{value}").unwrap(),
            vec![PairPiece::Key, PairPiece::Value]
        );
        assert!(compile_pair("{k}={v}").is_err());
    }

    #[test]
    fn canonical_sorts_filters_and_joins() {
        let parts = Parts {
            query: vec![
                ("b".into(), "2".into()),
                ("a".into(), "x y".into()),
                ("sign".into(), "zz".into()),
                ("e".into(), "".into()),
                ("a".into(), "0".into()),
            ],
            ..Parts::default()
        };
        let plan = CanonicalPlan {
            from: vec![ParamSource::Query],
            json_path: None,
            json_fields: Vec::new(),
            drop_json: None,
            drop_xml: None,
            include: vec![],
            exclude: vec!["sign".into()],
            skip_empty: true,
            lowercase_keys: false,
            trim_values: false,
            escape: Vec::new(),
            encode: UrlEncoding::Rfc3986,
            sort: SortOrder::KeyValue,
            repeated: Repeated::Repeat,
            repeated_separator: ",".into(),
            pair: compile_pair("{key}={value}").unwrap(),
            separator: "&".into(),
        };
        assert_eq!(canonical(&plan, &parts), "a=0&a=x%20y&b=2");
        let joined = CanonicalPlan {
            repeated: Repeated::Join,
            sort: SortOrder::Key,
            encode: UrlEncoding::None,
            ..plan
        };
        assert_eq!(canonical(&joined, &parts), "a=x y,0&b=2");
    }

    #[test]
    fn json_signature_paths_split_into_holder_and_field() {
        let split = |p: &str| split_json_field(p);
        assert_eq!(split("$.sign"), Some(("$".into(), "sign".into())));
        assert_eq!(split("$.data.sign"), Some(("$.data".into(), "sign".into())));
        assert_eq!(
            split("$.items[0].sign"),
            Some(("$.items[0]".into(), "sign".into()))
        );
        assert_eq!(
            split("$['data']['x y']"),
            Some(("$['data']".into(), "x y".into()))
        );
        assert_eq!(split("$"), None);
        assert_eq!(split("$..sign"), None);
        assert_eq!(split("$.items[0]"), None);
        assert_eq!(split("$.a.*"), None);
    }

    #[test]
    fn xml_fields_are_the_root_children() {
        let body = br#"<?xml version="1.0"?><xml a="1"><b>2</b><c><![CDATA[x&y]]></c><b>3</b><d><e>4</e></d><f/></xml>"#;
        let mut got = xml_fields(body);
        got.sort();
        let want: Vec<(String, String)> = [
            ("b", "2"),
            ("b", "3"),
            ("c", "x&y"),
            ("d", r#"{"e":"4"}"#),
            ("f", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
        assert!(xml_fields(b"{\"a\":1}").is_empty());
        assert!(xml_fields(b"<xml>text</xml>").is_empty());
    }

    #[test]
    fn escapes_apply_in_one_pass_longest_first() {
        let table = |pairs: &[(&str, &str)]| {
            let mut t: Vec<(String, String)> = pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            t.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
            t
        };
        // Whatever the order written, an inserted backslash is not escaped again.
        for t in [
            table(&[("\\", "\\\\"), (":", "\\:")]),
            table(&[(":", "\\:"), ("\\", "\\\\")]),
        ] {
            assert_eq!(escape_text("a\\b:c", &t), "a\\\\b\\:c");
        }
        // The longest text wins where several start at the same place.
        let t = table(&[("&", "&amp;"), ("&&", "AND")]);
        assert_eq!(escape_text("a&&b&c", &t), "aANDb&amp;c");
        assert_eq!(escape_text("€:", &table(&[(":", "%3A")])), "€%3A");
    }

    #[test]
    fn digests_match_published_values() {
        // RFC 1321 / FIPS 180 test strings, and RFC 4231 test case 2 for HMAC-SHA256.
        assert_eq!(
            hex::encode(digest(DigestAlg::Md5, b"abc", None).unwrap()),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            hex::encode(digest(DigestAlg::Sha1, b"abc", None).unwrap()),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex::encode(
                digest(
                    DigestAlg::HmacSha256,
                    b"what do ya want for nothing?",
                    Some(b"Jefe")
                )
                .unwrap()
            ),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // RFC 2202 test case 2 (HMAC-MD5, HMAC-SHA1), RFC 4231 test case 2 (HMAC-SHA512),
        // FIPS 180-2 "abc" (SHA-512).
        let jefe =
            |alg| hex::encode(digest(alg, b"what do ya want for nothing?", Some(b"Jefe")).unwrap());
        assert_eq!(jefe(DigestAlg::HmacMd5), "750c783e6ab0b503eaa86e310a5db738");
        assert_eq!(
            jefe(DigestAlg::HmacSha1),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            jefe(DigestAlg::HmacSha512),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
        assert_eq!(
            hex::encode(digest(DigestAlg::Sha512, b"abc", None).unwrap()),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn keys_decode_as_declared() {
        let plan = |key_decode, prefix: Option<&str>| DigestPlan {
            alg: DigestAlg::HmacSha256,
            input: CompiledTemplate::compile("x").unwrap().0,
            key: None,
            key_strip_prefix: prefix.map(str::to_string),
            key_decode,
            encode: Encoding::Hex,
            key_id: None,
        };
        assert_eq!(
            decode_key(b"whsec_AQID", &plan(KeyDecode::Base64, Some("whsec_"))).unwrap(),
            vec![1, 2, 3]
        );
        assert_eq!(
            decode_key(b"AQI", &plan(KeyDecode::Base64, None)).unwrap(),
            vec![1, 2]
        );
        assert_eq!(
            decode_key(b"0aFF", &plan(KeyDecode::Hex, None)).unwrap(),
            vec![10, 255]
        );
        assert_eq!(
            decode_key(b"_-8", &plan(KeyDecode::Base64url, None)).unwrap(),
            vec![255, 239]
        );
        assert!(decode_key(b"zz", &plan(KeyDecode::Hex, None)).is_err());
    }
}
