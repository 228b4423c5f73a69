//! Compiling request bodies mapped from the canonical input (`request.body`), and the check
//! that no reference can only reach one element of a list.

use crate::config::platform::{BodyMapping, RequestBodyFormat, RequestMapping, RequestValueType};
use crate::config::source::{DocPath, Seg};
use crate::diagnostics::{Code, did_you_mean};
use crate::plan::{BodyMappingPlan, RequestMappingPlan, RequestSource};
use crate::template::Analysis;

use super::input_shape::{self, Node, Reach};
use super::{Cx, REQUEST_ROOTS, Scope};

/// Whether `path` is in the platform-wide `request` (shared by every operation).
fn platform_wide(path: &DocPath) -> bool {
    matches!(path.0.first(), Some(Seg::Key(k)) if k == "request")
}

/// What `item` is where a mapping is compiled.
#[derive(Clone, Copy)]
struct ItemScope {
    /// Whether `item` is defined here.
    defined: bool,
    /// Its schema node, when known.
    node: Option<Node>,
}

const EACH_HINT: &str = "build the list element by element with `each`, like `lines: { each: input.lines, fields: { sku: { path: item.sku_id } } }`";

/// Whether `name` is a usable XML element or attribute name.
fn xml_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || "_-.:".contains(c))
}

impl Cx<'_> {
    /// Compiles a mapped request body.
    pub(super) fn body_mapping(
        &mut self,
        b: &BodyMapping,
        path: &DocPath,
    ) -> Option<BodyMappingPlan> {
        let before = self.problems.len();
        let xml_root = match (b.format.unwrap_or_default(), &b.root) {
            (RequestBodyFormat::Json, Some(_)) => {
                self.error(
                    &path.key("root"),
                    Code::Conflict,
                    "`root` names the root element of an XML body, but this body is JSON",
                )
                .hint = Some("add `format: xml`, or remove `root`".into());
                None
            }
            (RequestBodyFormat::Json, None) => None,
            (RequestBodyFormat::Xml, Some(r)) => {
                if !xml_name_ok(r) {
                    self.error(
                        &path.key("root"),
                        Code::InvalidValue,
                        format!("'{r}' is not a valid XML element name"),
                    )
                    .hint = Some(
                        "start with a letter or '_'; use letters, digits, '_', '-', '.'".into(),
                    );
                }
                Some(r.clone())
            }
            (RequestBodyFormat::Xml, None) => {
                self.error(
                    path,
                    Code::MissingKey,
                    "an XML body needs `root`, the name of its root element",
                )
                .hint = Some("add `root: request` (the element the platform expects)".into());
                None
            }
        };
        let xml = b.format == Some(RequestBodyFormat::Xml);
        let top = ItemScope {
            defined: false,
            node: None,
        };
        let fields = self.request_fields(&b.fields, &path.key("fields"), top, xml);
        (self.problems.len() == before).then_some(BodyMappingPlan { xml_root, fields })
    }

    fn request_fields(
        &mut self,
        fields: &indexmap::IndexMap<String, RequestMapping>,
        path: &DocPath,
        item: ItemScope,
        xml: bool,
    ) -> Vec<(String, RequestMappingPlan)> {
        let mut out = Vec::new();
        for (name, m) in fields {
            let fp = path.key(name.clone());
            if xml {
                let bare = name.strip_prefix('@').unwrap_or(name);
                if name != "#text" && !xml_name_ok(bare) {
                    self.error_key(
                        &fp,
                        Code::InvalidValue,
                        format!("'{name}' is not a valid XML element or attribute name"),
                    )
                    .hint = Some(
                        "use letters, digits, '_', '-', '.'; `@name` for an attribute, `#text` for the element's text".into(),
                    );
                }
            }
            if let Some(plan) = self.request_mapping(m, &fp, item, xml) {
                out.push((name.clone(), plan));
            }
        }
        out
    }

    fn request_mapping(
        &mut self,
        m: &RequestMapping,
        path: &DocPath,
        item: ItemScope,
        xml: bool,
    ) -> Option<RequestMappingPlan> {
        let before = self.problems.len();
        let sources = [m.path.is_some(), m.value.is_some(), m.template.is_some()];
        if sources.iter().filter(|s| **s).count() > 1 {
            self.error(
                path,
                Code::Mapping,
                "a mapping takes its value from only one of `path`, `value` and `template`",
            );
        }
        if m.fields.is_none()
            && m.each.is_none()
            && !sources.iter().any(|s| *s)
            && m.default.is_none()
        {
            self.error(path, Code::Mapping, "this mapping produces nothing")
                .hint = Some("give it a `path`, `value`, `template`, `fields` or `each`".into());
        }
        if m.fields.is_some() && (m.kind.is_some() || m.map.is_some() || m.scale.is_some()) {
            self.error(
                path,
                Code::Mapping,
                "a mapping with `fields` builds an object, so `type`, `scale` and `map` do not apply",
            );
        }
        if m.fields.is_some() && (m.value.is_some() || m.template.is_some()) {
            self.error(
                path,
                Code::Mapping,
                "a mapping with `fields` builds an object, so it takes no `value` or `template`",
            )
            .hint = Some("use `path` to send the object only when that input is present".into());
        }
        if let Some(scale) = m.scale {
            if !matches!(
                m.kind,
                Some(RequestValueType::Decimal | RequestValueType::Number)
            ) {
                self.error(
                    &path.key("scale"),
                    Code::Mapping,
                    "`scale` converts minor units into a decimal, so it needs `type: decimal` (sent as a string) or `type: number`",
                );
            } else if scale > 18 {
                self.error(
                    &path.key("scale"),
                    Code::InvalidValue,
                    format!("scale {scale} is out of range"),
                )
                .hint = Some("give the number of decimals of the currency, 0 to 18".into());
            }
        }
        if m.cdata && !xml {
            self.error(
                &path.key("cdata"),
                Code::Mapping,
                "`cdata` only applies to XML bodies",
            );
        }
        // `each` binds `item` to each element of a list.
        let mut inner = item;
        let each = match &m.each {
            Some(e) => {
                let ep = path.key("each");
                match self.request_path(e, &ep, item) {
                    Some((segs, reach, node)) => {
                        match reach {
                            Reach::List(_) => {}
                            Reach::ThroughList(list) => self.through_list(&ep, e, &list),
                            Reach::Other if node.is_some() => {
                                self.error(
                                    &ep,
                                    Code::InvalidValue,
                                    format!("`each` needs a list, but '{e}' is not one"),
                                )
                                .hint = Some(
                                    "give the path of a list of the input, like `input.lines`"
                                        .into(),
                                );
                            }
                            Reach::Other => {}
                            Reach::Unknown {
                                parent,
                                field,
                                known,
                            } => self.unknown_input_field(&ep, e, &parent, &field, &known),
                        }
                        inner = ItemScope {
                            defined: true,
                            node: node.and_then(input_shape::items),
                        };
                        Some(segs)
                    }
                    None => None,
                }
            }
            None => None,
        };
        let source = if let Some(p) = &m.path {
            let pp = path.key("path");
            match self.request_path(p, &pp, inner) {
                Some((segs, reach, node)) => {
                    match reach {
                        Reach::ThroughList(list) => self.through_list(&pp, p, &list),
                        Reach::List(list)
                            if m.kind.is_some() || m.map.is_some() || m.fields.is_some() =>
                        {
                            self.error(
                                &pp,
                                Code::ArrayAsScalar,
                                format!(
                                    "'{list}' is a list, but this mapping makes one value of it"
                                ),
                            )
                            .hint = Some(EACH_HINT.into());
                        }
                        Reach::Unknown {
                            parent,
                            field,
                            known,
                        } => self.unknown_input_field(&pp, p, &parent, &field, &known),
                        _ => {}
                    }
                    if m.fields.is_some() {
                        inner = ItemScope {
                            defined: true,
                            node,
                        };
                    }
                    Some(RequestSource::Path(segs))
                }
                None => None,
            }
        } else if let Some(v) = &m.value {
            Some(RequestSource::Value(v.clone()))
        } else if let Some(t) = &m.template {
            let extra = if inner.defined {
                vec!["item".to_string()]
            } else {
                Vec::new()
            };
            let scope = Scope {
                roots: REQUEST_ROOTS,
                extra: &extra,
            };
            let tp = path.key("template");
            let compiled = self.template(t, &tp, &scope);
            if let (Some(_), Some(node)) = (&compiled, inner.node) {
                self.check_item_refs(t, node, &tp);
            }
            compiled.map(RequestSource::Template)
        } else {
            Some(RequestSource::Current)
        };
        let fields = m
            .fields
            .as_ref()
            .map(|f| self.request_fields(f, &path.key("fields"), inner, xml));
        if self.problems.len() != before {
            return None;
        }
        Some(RequestMappingPlan {
            source: source?,
            each,
            fields,
            kind: m.kind,
            scale: m.scale,
            map: m.map.clone(),
            default: m.default.clone(),
            nullable: m.nullable,
            required: m.required,
            cdata: m.cdata,
        })
    }

    /// Parses a dotted path of a request mapping and checks its root; says what it reaches in
    /// the canonical input.
    fn request_path(
        &mut self,
        source: &str,
        path: &DocPath,
        item: ItemScope,
    ) -> Option<(Vec<String>, Reach, Option<Node>)> {
        let segs: Vec<String> = source.split('.').map(str::to_string).collect();
        let ok = segs.iter().all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        });
        let Some((root, rest)) = segs.split_first().filter(|_| ok) else {
            self.error(
                path,
                Code::InvalidValue,
                format!("'{source}' is not a path"),
            )
            .hint = Some("write names joined by '.', starting with `input` or `item`, like input.address.city".into());
            return None;
        };
        let mut roots: Vec<&str> = REQUEST_ROOTS.to_vec();
        if item.defined {
            roots.push("item");
        }
        if !roots.contains(&root.as_str()) {
            let hint = if root == "item" {
                "`item` is only defined inside `each`, or under a `path` given with `fields`"
                    .to_string()
            } else {
                match did_you_mean(root, roots.iter().copied()) {
                    Some(best) => format!("did you mean '{best}'?"),
                    None => format!("available here: {}", roots.join(", ")),
                }
            };
            self.error(
                path,
                Code::UnknownVariable,
                format!("unknown variable '{root}' in path '{source}'"),
            )
            .hint = Some(hint);
            return None;
        }
        let second = rest.first().map(String::as_str);
        match (root.as_str(), second) {
            ("settings", Some(name)) if !self.file.settings.contains_key(name) => {
                self.error(
                    path,
                    Code::UndeclaredSetting,
                    format!("setting '{name}' is not declared"),
                )
                .hint = Some(format!(
                    "add '{name}: VALUE' under the platform's `settings:`"
                ));
                return None;
            }
            ("credentials", Some(name)) if !self.file.credentials.iter().any(|c| c == name) => {
                self.error(
                    path,
                    Code::UndeclaredCredential,
                    format!("credential '{name}' is not declared"),
                )
                .hint = Some(format!(
                    "add '{name}' to the platform's `credentials:` list"
                ));
                return None;
            }
            _ => {}
        }
        if root == "input"
            && let Some(field) = rest.first()
        {
            self.input_reads.insert(field.clone());
        }
        let start = match root.as_str() {
            "input" => self.input_op.as_deref().and_then(input_shape::input_node),
            "item" => item.node,
            _ => None,
        };
        let (reach, node) = match start {
            Some(start) => input_shape::reach(start, root, rest),
            None => (Reach::Other, None),
        };
        Some((segs, reach, node))
    }

    /// The `item.X` references of a template (one that compiled) name fields of `node`, the
    /// element of the canonical input that `item` is.
    fn check_item_refs(&mut self, source: &str, node: Node, path: &DocPath) {
        let Ok((_, analysis)) = crate::template::CompiledTemplate::compile(source) else {
            return;
        };
        for p in &analysis.paths {
            let Some(("item", rest)) = p.split_first().map(|(r, rest)| (r.as_str(), rest)) else {
                continue;
            };
            if let Reach::Unknown {
                parent,
                field,
                known,
            } = input_shape::reach(node, "item", rest).0
            {
                self.unknown_input_field(path, &p.join("."), &parent, &field, &known);
            }
        }
    }

    /// Reports a reference to a field the canonical input does not have: `written` as written,
    /// `parent` (dotted) has no field `field`; `known` are the fields it has.
    pub(super) fn unknown_input_field(
        &mut self,
        path: &DocPath,
        written: &str,
        parent: &str,
        field: &str,
        known: &[&str],
    ) {
        let of = match self.input_op.as_deref() {
            Some(op) => format!("the canonical input of {op}"),
            None => "the canonical input".to_string(),
        };
        let hint = if known.is_empty() {
            format!("'{parent}' is a single value, with no fields: remove '.{field}'")
        } else {
            match did_you_mean(field, known.iter().copied()) {
                Some(best) => format!("did you mean '{parent}.{best}'?"),
                None => format!("the fields of '{parent}' are: {}", known.join(", ")),
            }
        };
        self.error(
            path,
            Code::UnknownField,
            format!("'{written}' is not in {of}: '{parent}' has no field '{field}'"),
        )
        .hint = Some(hint);
    }

    fn through_list(&mut self, path: &DocPath, source: &str, list: &str) {
        self.error(
            path,
            Code::ArrayAsScalar,
            format!(
                "'{source}' reads into the list '{list}': it reaches one element at most, so the others would be lost"
            ),
        )
        .hint = Some(EACH_HINT.into());
    }

    /// Templates of an operation's request: a reference into a list (`input.lines.0.sku_id`,
    /// `input.lines.sku_id`) or a whole list written as one text value is an error, since it
    /// renders one element at most; so is a field the operation's canonical input does not
    /// have (outside the platform-wide `request`). `whole_value`: the template is a JSON leaf that keeps the
    /// referenced value's type (a whole list is copied as a list).
    pub(super) fn check_list_refs(&mut self, a: &Analysis, whole_value: bool, path: &DocPath) {
        for p in a.paths.iter().chain(&a.scoped) {
            if let [root, field, ..] = p.as_slice()
                && root == "input"
            {
                self.input_reads.insert(field.clone());
            }
        }
        let Some(input) = self.input_op.as_deref().and_then(input_shape::input_node) else {
            return;
        };
        let wide = platform_wide(path);
        for p in &a.paths {
            let Some((root, rest)) = p.split_first() else {
                continue;
            };
            if root != "input" {
                continue;
            }
            let written = p.join(".");
            match input_shape::reach(input, "input", rest).0 {
                Reach::ThroughList(list) => {
                    self.error(
                        path,
                        Code::ArrayAsScalar,
                        format!(
                            "'{written}' reads into the list '{list}': it renders one element at most, so the others would be lost"
                        ),
                    )
                    .hint = Some(format!(
                        "map the body with `body:` and {EACH_HINT}; in a template, loop with {{{{#each {list}}}}}...{{{{/each}}}}"
                    ));
                }
                Reach::Unknown {
                    parent,
                    field,
                    known,
                } => {
                    if !wide {
                        self.unknown_input_field(path, &written, &parent, &field, &known);
                    } else if self.first_operation_with_input() && !self.some_input_has(rest) {
                        // The platform-wide request serves every operation: a field that
                        // some operation has renders empty for the others, but one that no
                        // operation has is a mistake, reported once (here, for the first).
                        let mut known = known;
                        if parent == "input" {
                            known = self.all_input_fields();
                        }
                        self.unknown_wide_input_field(path, &written, &parent, &field, &known);
                    }
                }
                Reach::List(list) if !whole_value && a.outputs.contains(p) => {
                    self.error(
                        path,
                        Code::ArrayAsScalar,
                        format!("'{list}' is a list, but here it is written as one text value"),
                    )
                    .hint = Some(format!(
                        "map the body with `body:` and `each: {list}`, or write {{{{join {list} ','}}}} for a list of plain values"
                    ));
                }
                _ => {}
            }
        }
        for p in &a.scoped {
            let Some((root, rest)) = p.split_first() else {
                continue;
            };
            if root != "input" {
                continue;
            }
            let written = p.join(".").replace(".[]", "[]");
            let reach = input_shape::reach(input, "input", rest).0;
            let Reach::Unknown {
                parent,
                field,
                known,
            } = reach
            else {
                continue;
            };
            if !wide {
                self.unknown_input_field(path, &written, &parent, &field, &known);
            } else if self.first_operation_with_input() && !self.some_input_has(rest) {
                self.unknown_wide_input_field(path, &written, &parent, &field, &known);
            }
        }
    }

    /// Whether the operation being compiled is the first of the file with a canonical input
    /// (where problems of the platform-wide request are reported, once).
    fn first_operation_with_input(&self) -> bool {
        let first = self
            .file
            .operations
            .keys()
            .find(|op| input_shape::input_node(op).is_some());
        first.is_some() && first.map(String::as_str) == self.input_op.as_deref()
    }

    /// Whether the canonical input of some operation of the file reaches `rest` (a path after
    /// `input`).
    fn some_input_has(&self, rest: &[String]) -> bool {
        self.file.operations.keys().any(|op| {
            input_shape::input_node(op).is_some_and(|node| {
                !matches!(
                    input_shape::reach(node, "input", rest).0,
                    Reach::Unknown { .. }
                )
            })
        })
    }

    /// The top-level fields of the canonical inputs of the file's operations.
    fn all_input_fields(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for op in self.file.operations.keys() {
            if let Some(node) = input_shape::input_node(op) {
                for f in input_shape::field_names(node) {
                    if !out.contains(&f) {
                        out.push(f);
                    }
                }
            }
        }
        out
    }

    /// Reports a reference of the platform-wide request to a field no operation of the file
    /// has in its canonical input.
    fn unknown_wide_input_field(
        &mut self,
        path: &DocPath,
        written: &str,
        parent: &str,
        field: &str,
        known: &[&str],
    ) {
        let ops: Vec<&str> = self.file.operations.keys().map(String::as_str).collect();
        let hint = match did_you_mean(field, known.iter().copied()) {
            Some(best) => format!("did you mean '{parent}.{best}'?"),
            None if known.is_empty() => {
                format!("'{parent}' is a single value, with no fields: remove '.{field}'")
            }
            None => format!("the fields of '{parent}' are: {}", known.join(", ")),
        };
        self.error(
            path,
            Code::UnknownField,
            format!(
                "'{written}' is in the canonical input of no operation of this file ({}): '{parent}' has no field '{field}'",
                ops.join(", ")
            ),
        )
        .hint = Some(hint);
    }
}
