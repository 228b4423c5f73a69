//! Checks against the canonical model: id kinds are declared under `ids:`, `ids:` paths name
//! fields of the operation's input, and mapped outputs and event data name the canonical
//! fields and map every required one.

use crate::config::platform::{Mapping, ValueType};
use crate::config::source::DocPath;
use crate::diagnostics::{Code, did_you_mean};
use crate::plan::{InputPath, InputSeg};

use super::Cx;
use super::input_shape::{self, Node};

impl Cx<'_> {
    /// Reports an id kind that the platform's `ids:` policies do not declare: such a kind
    /// would silently start an id namespace of its own.
    pub(super) fn check_kind_declared(&mut self, kind: &str, path: &DocPath) {
        let declared = &self.file.ids;
        if declared.contains_key(kind) {
            return;
        }
        let hint = match did_you_mean(kind, declared.keys().map(String::as_str)) {
            Some(best) => format!(
                "did you mean '{best}'? otherwise declare it under `ids:`, like `{kind}: allocate`"
            ),
            None => format!(
                "declare it under the platform's `ids:`, like `{kind}: allocate` (or `require` for ids the mall creates)"
            ),
        };
        self.error(
            path,
            Code::UndeclaredIdKind,
            format!("id kind '{kind}' is not declared under `ids:`"),
        )
        .hint = Some(hint);
    }

    /// Checks an operation's `ids:` path against its canonical input: every name a field,
    /// `[*]` exactly after the lists.
    pub(super) fn check_input_ids_path(&mut self, op: &str, p: &InputPath, path: &DocPath) {
        let Some(mut node) = input_shape::input_node(op) else {
            return;
        };
        let mut written = "input".to_string();
        for seg in &p.segs {
            match seg {
                InputSeg::Field(f) => {
                    if input_shape::is_list(node) {
                        self.error_key(
                            path,
                            Code::InvalidValue,
                            format!(
                                "'{}': '{written}' is a list in the canonical input of {op}",
                                p.source
                            ),
                        )
                        .hint = Some(format!(
                            "write `[*]` after it to reach every element, like `{}[*].{f}`",
                            written.trim_start_matches("input.")
                        ));
                        return;
                    }
                    let Some(next) = input_shape::property(node, f) else {
                        let known = input_shape::field_names(node);
                        let hint = if known.is_empty() {
                            format!("'{written}' is a single value, with no fields")
                        } else {
                            match did_you_mean(f, known.iter().copied()) {
                                Some(best) => format!("did you mean '{best}'?"),
                                None => {
                                    format!("the fields of '{written}' are: {}", known.join(", "))
                                }
                            }
                        };
                        self.error_key(
                            path,
                            Code::UnknownField,
                            format!(
                                "'{}' is not in the canonical input of {op}: '{written}' has no field '{f}'",
                                p.source
                            ),
                        )
                        .hint = Some(hint);
                        return;
                    };
                    node = next;
                    written.push('.');
                    written.push_str(f);
                }
                InputSeg::Each => {
                    let items = input_shape::items(node).filter(|_| input_shape::is_list(node));
                    let Some(items) = items else {
                        self.error_key(
                            path,
                            Code::InvalidValue,
                            format!(
                                "'{}': '{written}' is not a list in the canonical input of {op}, so `[*]` reaches nothing",
                                p.source
                            ),
                        )
                        .hint = Some("remove `[*]`".into());
                        return;
                    };
                    node = items;
                    written.push_str("[*]");
                }
            }
        }
        if input_shape::is_list(node) {
            self.error_key(
                path,
                Code::InvalidValue,
                format!(
                    "'{}' is a list in the canonical input of {op}: its ids would not be translated",
                    p.source
                ),
            )
            .hint = Some(format!("write `{}[*]`", p.source));
        }
    }

    /// Checks a mapping that builds a canonical value (an operation's output, an event's data)
    /// against its schema `node`: the fields it builds exist, the required ones are mapped so
    /// that they cannot be left out, and lists are built with `each`. `at` is the canonical
    /// path built so far (empty at the top), `of` names the value for messages.
    pub(super) fn check_model_mapping(
        &mut self,
        m: &Mapping,
        node: Node,
        path: &DocPath,
        at: &str,
        of: &str,
    ) {
        let mut node = node;
        let shown = if at.is_empty() { of } else { at };
        if m.each.is_some() {
            if !input_shape::is_list(node) {
                let message = if at.is_empty() {
                    format!("`each` builds a list, but {of} is an object")
                } else {
                    format!("`each` builds a list, but '{at}' is not a list in {of}")
                };
                self.error(&path.key("each"), Code::Mapping, message).hint =
                    Some("remove `each` and map the one value with `path`".into());
                return;
            }
            match input_shape::items(node) {
                Some(items) => node = items,
                None => return,
            }
        } else if m.fields.is_some()
            && input_shape::is_list(node)
            && !input_shape::may_be_object(node)
        {
            self.error(
                path,
                Code::Mapping,
                format!("'{shown}' is a list in {of}, but this mapping builds one object"),
            )
            .hint = Some(
                "add `each: JSONPATH` selecting the platform's elements; `fields` then maps each one"
                    .into(),
            );
            return;
        }
        let Some(fields) = &m.fields else {
            if m.each.is_none() {
                self.check_constants(m, node, path, shown, of);
            }
            return;
        };
        if !input_shape::may_be_object(node) {
            self.error(
                path,
                Code::Mapping,
                format!("'{shown}' is a single value in {of}, but this mapping builds an object"),
            )
            .hint =
                Some("map the value with `path`, `value` or `template` instead of `fields`".into());
            return;
        }
        let known = input_shape::field_names(node);
        for (name, sub) in fields {
            let fp = path.key("fields").key(name.clone());
            let child_at = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}.{name}")
            };
            match input_shape::property(node, name) {
                Some(child) => self.check_model_mapping(sub, child, &fp, &child_at, of),
                None => {
                    let hint = match did_you_mean(name, known.iter().copied()) {
                        Some(best) => format!("did you mean '{best}'?"),
                        None if known.is_empty() => {
                            format!("'{shown}' has no fields in {of}")
                        }
                        None if at.is_empty() => {
                            format!("the fields of {of} are: {}", known.join(", "))
                        }
                        None => format!("the fields of '{at}' are: {}", known.join(", ")),
                    };
                    self.error_key(
                        &fp,
                        Code::UnknownField,
                        format!("'{child_at}' is not a field of {of}"),
                    )
                    .hint = Some(hint);
                }
            }
        }
        for req in input_shape::required(node) {
            let req_at = if at.is_empty() {
                req.to_string()
            } else {
                format!("{at}.{req}")
            };
            match fields.get(req) {
                None => {
                    self.error(
                        &path.key("fields"),
                        Code::RequiredUnmapped,
                        format!("'{req_at}' is required in {of}, but it is not mapped"),
                    )
                    .hint = Some(format!(
                        "map it, like `{req}: {{ path: $.FIELD, required: true }}`, or give it a `value:` or a `default:`"
                    ));
                }
                Some(sub) if may_be_left_out(sub) => {
                    self.error(
                        &path.key("fields").key(req),
                        Code::RequiredUnmapped,
                        format!(
                            "'{req_at}' is required in {of}, but this mapping leaves it out when the platform sends no value"
                        ),
                    )
                    .hint = Some(
                        "add `required: true` (a missing value is then a mapping error naming the field) or a `default:`"
                            .into(),
                    );
                }
                Some(_) => {}
            }
        }
    }
}

impl Cx<'_> {
    /// The constants a leaf mapping may produce — its `value` (when no `map` follows), its
    /// `map` values (when no `type` converts them to something else) and its `default` — are
    /// values the canonical field allows, where it allows only some (an `enum`).
    fn check_constants(&mut self, m: &Mapping, node: Node, path: &DocPath, shown: &str, of: &str) {
        let Some(allowed) = input_shape::allowed_values(node) else {
            return;
        };
        let converted = !matches!(m.kind, None | Some(ValueType::String));
        let mut constants: Vec<(&serde_json::Value, DocPath)> = Vec::new();
        if let Some(v) = &m.value
            && m.map.is_none()
            && !converted
        {
            constants.push((v, path.key("value")));
        }
        if let Some(table) = &m.map
            && !converted
        {
            for (k, v) in table {
                constants.push((v, path.key("map").key(k.clone())));
            }
        }
        if let Some(v) = &m.default {
            constants.push((v, path.key("default")));
        }
        for (v, at) in constants {
            if allowed.contains(&v) {
                continue;
            }
            let names: Vec<&str> = allowed.iter().filter_map(|a| a.as_str()).collect();
            let written = crate::template::text_of(v);
            let hint = match did_you_mean(&written, names.iter().copied()) {
                Some(best) => format!("did you mean '{best}'?"),
                None => format!(
                    "the values of '{shown}' are: {}",
                    allowed
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            self.error(
                &at,
                Code::InvalidValue,
                format!("{v} is not a value of '{shown}' in {of}"),
            )
            .hint = Some(hint);
        }
    }
}

/// Whether a mapping may produce nothing: it reads a `path` that may find no value and has
/// neither `required: true` nor a `default`. Mappings without a `path` build their value from
/// the current item (`fields`, `each`) or produce one (`value`, `template`).
fn may_be_left_out(m: &Mapping) -> bool {
    m.path.is_some()
        && m.value.is_none()
        && m.template.is_none()
        && !m.required
        && m.default.is_none()
}
