//! Structural checks: a document against the JSON Schema generated from the config types.
//! Unlike deserializing, this reports *every* unknown key, wrong type and missing key at once,
//! each at its own line and column.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use crate::config::source::{DocPath, SourceDoc};
use crate::diagnostics::{Code, Diagnostic, did_you_mean};

/// A compiled schema and the schema document (to look up allowed keys for hints).
pub struct Structure {
    validator: Validator,
    schema: Value,
}

impl Structure {
    /// Compiles a generated schema. Fails only when the generated schema itself is broken.
    pub fn new(schema: Value) -> Result<Self, String> {
        let validator = jsonschema::validator_for(&schema).map_err(|e| e.to_string())?;
        Ok(Structure { validator, schema })
    }

    /// Every structural problem of `doc`, located.
    pub fn check(&self, doc: &SourceDoc) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for error in self.validator.iter_errors(&doc.value) {
            self.report(doc, &error, &mut out);
        }
        out.sort_by_key(|d| (d.line, d.column));
        out.dedup();
        out
    }

    fn report(&self, doc: &SourceDoc, error: &ValidationError<'_>, out: &mut Vec<Diagnostic>) {
        let path = DocPath::from_pointer(error.instance_path().as_str());
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let allowed = self.allowed_keys(error.schema_path().as_str());
                for key in unexpected {
                    let at = path.key(key.clone());
                    let mut d = doc.at_key(&at, Code::UnknownKey, format!("unknown key '{key}'"));
                    let names = allowed.iter().map(String::as_str);
                    d = match did_you_mean(key, names) {
                        Some(best) => d.with_hint(format!("did you mean '{best}'?")),
                        None if !allowed.is_empty() => {
                            d.with_hint(format!("allowed keys here: {}", allowed.join(", ")))
                        }
                        None => d,
                    };
                    out.push(d);
                }
            }
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                out.push(
                    doc.at(
                        &path,
                        Code::MissingKey,
                        format!("missing required key '{name}'"),
                    )
                    .with_hint(format!("add '{name}:' here")),
                );
            }
            ValidationErrorKind::Type { kind } => {
                let expected = match kind {
                    TypeKind::Single(t) => t.to_string(),
                    TypeKind::Multiple(ts) => {
                        let names: Vec<String> = ts.iter().map(|t| t.to_string()).collect();
                        names.join(" or ")
                    }
                };
                out.push(doc.at(
                    &path,
                    Code::Type,
                    format!("expected {expected}, found {}", describe(error.instance())),
                ));
            }
            ValidationErrorKind::Enum { options } => {
                let found = error.instance();
                let choices: Vec<String> = options
                    .as_array()
                    .map(|a| a.iter().map(value_text).collect())
                    .unwrap_or_default();
                let mut d = doc.at(
                    &path,
                    Code::InvalidValue,
                    format!(
                        "{} is not one of: {}",
                        value_text(found),
                        choices.join(", ")
                    ),
                );
                if let Some(best) = found
                    .as_str()
                    .and_then(|s| did_you_mean(s, choices.iter().map(String::as_str)))
                {
                    d = d.with_hint(format!("did you mean {best}?"));
                }
                out.push(d);
            }
            ValidationErrorKind::Constant { expected_value } => {
                out.push(doc.at(
                    &path,
                    Code::InvalidValue,
                    format!("expected {}", value_text(expected_value)),
                ));
            }
            ValidationErrorKind::AnyOf { context }
            | ValidationErrorKind::OneOfNotValid { context } => {
                if let Some(choices) = constant_choices(context, error.instance_path().as_str()) {
                    let found = error.instance();
                    let mut d = doc.at(
                        &path,
                        Code::InvalidValue,
                        format!(
                            "{} is not one of: {}",
                            value_text(found),
                            choices.join(", ")
                        ),
                    );
                    if let Some(best) = found
                        .as_str()
                        .and_then(|s| did_you_mean(s, choices.iter().map(String::as_str)))
                    {
                        d = d.with_hint(format!("did you mean '{best}'?"));
                    }
                    out.push(d);
                    return;
                }
                match best_branch(context, error.instance_path().as_str()) {
                    Some(branch) => {
                        for e in branch {
                            self.report(doc, e, out);
                        }
                    }
                    None => {
                        let shapes = self.branch_shapes(context);
                        let mut d = doc.at(
                            &path,
                            Code::Type,
                            format!("{} does not fit here", describe(error.instance())),
                        );
                        if !shapes.is_empty() {
                            d = d.with_hint(format!("expected one of: {}", shapes.join("; ")));
                        }
                        out.push(d);
                    }
                }
            }
            _ => out.push(doc.at(&path, Code::InvalidValue, error.to_string())),
        }
    }

    /// Whether `value` has no structural problem.
    pub fn is_valid(&self, value: &Value) -> bool {
        self.validator.is_valid(value)
    }

    /// A copy of `value` with every structurally wrong part removed, so the rest can still be
    /// checked for meaning. Array elements are never removed (that would shift the indexes of
    /// their neighbours, and so the positions of later problems): the nearest mapping entry
    /// holding the array goes instead. `None` when nothing usable is left.
    pub fn prune(&self, value: &Value) -> Option<Value> {
        let mut value = value.clone();
        for _ in 0..16 {
            let mut errors = Vec::new();
            for e in self.validator.iter_errors(&value) {
                leaf_paths(&e, &mut errors);
            }
            if errors.is_empty() {
                return Some(value);
            }
            for pointer in errors {
                let mut path = DocPath::from_pointer(&pointer);
                // Remove a mapping entry, never an array element: climb past indexes.
                while matches!(path.0.last(), Some(crate::config::source::Seg::Index(_))) {
                    path = path.parent()?;
                }
                if path.0.is_empty() {
                    return None;
                }
                remove(&mut value, &path);
            }
        }
        None
    }

    /// Keys allowed by the object schema owning the `additionalProperties` at `schema_path`.
    fn allowed_keys(&self, schema_path: &str) -> Vec<String> {
        let owner = schema_path
            .rsplit_once('/')
            .map(|(owner, _)| owner)
            .unwrap_or_default();
        self.schema
            .pointer(owner)
            .and_then(|s| s.get("properties"))
            .and_then(Value::as_object)
            .map(|props| props.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A short description of what each branch of an `anyOf`/`oneOf` wanted.
    fn branch_shapes(&self, context: &[Vec<ValidationError<'static>>]) -> Vec<String> {
        let mut shapes = Vec::new();
        for branch in context {
            for e in branch {
                match e.kind() {
                    ValidationErrorKind::Type { kind } => {
                        let s = match kind {
                            TypeKind::Single(t) => t.to_string(),
                            TypeKind::Multiple(ts) => ts
                                .iter()
                                .map(|t| t.to_string())
                                .collect::<Vec<_>>()
                                .join("/"),
                        };
                        if !shapes.contains(&s) {
                            shapes.push(s);
                        }
                    }
                    ValidationErrorKind::Constant { expected_value } => {
                        let s = format!("kind: {}", value_text(expected_value));
                        if !shapes.contains(&s) {
                            shapes.push(s);
                        }
                    }
                    _ => {}
                }
            }
        }
        shapes
    }
}

/// When every branch of an `anyOf`/`oneOf` is a constant (a documented enum), the constants.
fn constant_choices(context: &[Vec<ValidationError<'static>>], at: &str) -> Option<Vec<String>> {
    let mut choices = Vec::new();
    for branch in context {
        let [only] = branch.as_slice() else {
            return None;
        };
        if only.instance_path().as_str() != at {
            return None;
        }
        match only.kind() {
            ValidationErrorKind::Constant { expected_value } => {
                choices.push(plain_text(expected_value))
            }
            ValidationErrorKind::Enum { options } => {
                choices.extend(options.as_array()?.iter().map(plain_text));
            }
            _ => return None,
        }
    }
    Some(choices)
}

fn plain_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The branch of an `anyOf`/`oneOf` the author most likely meant: among branches whose shape
/// (type, tag constant) matches the value itself, the one with the fewest problems.
fn best_branch<'e>(
    context: &'e [Vec<ValidationError<'static>>],
    at: &str,
) -> Option<&'e Vec<ValidationError<'static>>> {
    context
        .iter()
        .filter(|branch| {
            !branch.iter().any(|e| {
                let here = e.instance_path().as_str() == at;
                let tag = e.instance_path().as_str().rsplit_once('/');
                let shape = matches!(e.kind(), ValidationErrorKind::Type { .. }) && here;
                let wrong_tag = matches!(
                    e.kind(),
                    ValidationErrorKind::Constant { .. } | ValidationErrorKind::Enum { .. }
                ) && tag.is_some_and(|(p, k)| p == at && k == "kind");
                let missing_tag = matches!(
                    e.kind(),
                    ValidationErrorKind::Required { property } if property == "kind"
                ) && here;
                shape || wrong_tag || missing_tag
            })
        })
        .min_by_key(|branch| branch.len())
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {}", quote_short(s)),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => quote_short(s),
        other => other.to_string(),
    }
}

fn quote_short(s: &str) -> String {
    let mut short: String = s.chars().take(40).collect();
    if short.len() < s.len() {
        short.push('…');
    }
    format!("'{short}'")
}

fn remove(value: &mut Value, path: &DocPath) {
    let Some((last, parent)) = path.0.split_last() else {
        return;
    };
    let parent = DocPath(parent.to_vec());
    if let (Some(Value::Object(map)), crate::config::source::Seg::Key(k)) =
        (value.pointer_mut(&parent.pointer()), last)
    {
        map.shift_remove(k);
    }
}

/// The paths of the values really at fault: inside `anyOf`/`oneOf`, those of the branch the
/// author meant; for unknown keys, the keys themselves.
fn leaf_paths(e: &ValidationError<'_>, out: &mut Vec<String>) {
    let at = e.instance_path().as_str();
    match e.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            for k in unexpected {
                out.push(DocPath::from_pointer(at).key(k.clone()).pointer());
            }
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context }
            if constant_choices(context, at).is_none() =>
        {
            match best_branch(context, at) {
                Some(branch) => branch.iter().for_each(|b| leaf_paths(b, out)),
                None => out.push(at.to_string()),
            }
        }
        _ => out.push(at.to_string()),
    }
}
