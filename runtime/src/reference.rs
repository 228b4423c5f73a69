//! The field-by-field reference of the YAML formats (`docs/reference.md`), generated from the
//! same doc comments as the JSON Schemas, so the two never disagree.

use std::fmt::Write as _;

use serde_json::Value;

/// Markdown documenting every type of the platform file and the gateway file.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Reference: the platform file and the gateway file\n\n\
         Generated from the configuration types by `cargo run -- schema --out schemas --docs docs/reference.md`;\n\
         a test fails when it is stale. Editors show the same text from `schemas/*.schema.json`.\n\
         Signing and verification recipes are explained with examples in [recipes.md](recipes.md).\n",
    );
    for (title, schema) in [
        (
            "Platform file (`platforms/*.yaml`)",
            crate::schema::platform_schema(),
        ),
        (
            "Gateway file (`entrepot.yaml`)",
            crate::schema::gateway_schema(),
        ),
    ] {
        let _ = write!(out, "\n## {title}\n");
        section(&mut out, "Top level", &schema);
        if let Some(Value::Object(defs)) = schema.get("$defs") {
            for (name, def) in defs {
                section(&mut out, name, def);
            }
        }
    }
    out
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn type_of(s: &Value) -> String {
    if let Some(Value::String(r)) = s.get("$ref") {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("[{name}](#{})", name.to_ascii_lowercase());
    }
    if let Some(Value::Array(options)) = s.get("anyOf").or_else(|| s.get("oneOf")) {
        let parts: Vec<String> = options
            .iter()
            .filter(|o| o.get("type") != Some(&Value::from("null")))
            .map(type_of)
            .collect();
        return parts.join(" or ");
    }
    if let Some(Value::String(c)) = s.get("const") {
        return format!("`{c}`");
    }
    if let Some(Value::Array(values)) = s.get("enum") {
        return values
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".into(),
    };
    match ty.as_str() {
        "array" => format!(
            "list of {}",
            s.get("items").map(type_of).unwrap_or_else(|| "any".into())
        ),
        "object" => match s.get("additionalProperties") {
            Some(v @ Value::Object(_)) => format!("map of name → {}", type_of(v)),
            _ => "mapping".into(),
        },
        other => other.to_string(),
    }
}

fn section(out: &mut String, name: &str, s: &Value) {
    let _ = write!(out, "\n### {name}\n\n");
    if let Some(Value::String(d)) = s.get("description") {
        let _ = writeln!(out, "{}\n", d.trim());
    }
    if let Some(Value::Object(props)) = s.get("properties") {
        let required: Vec<&str> = s
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push_str("| field | type | required | description |\n| --- | --- | --- | --- |\n");
        for (field, p) in props {
            let desc = p
                .get("description")
                .and_then(Value::as_str)
                .map(one_line)
                .unwrap_or_default();
            let req = if required.contains(&field.as_str()) {
                "yes"
            } else {
                ""
            };
            let _ = writeln!(out, "| `{field}` | {} | {req} | {desc} |", type_of(p));
        }
    } else if let Some(Value::Array(variants)) = s.get("oneOf").or_else(|| s.get("anyOf")) {
        out.push_str("One of:\n\n");
        for v in variants {
            let label = v
                .pointer("/properties/kind/const")
                .and_then(Value::as_str)
                .map(|k| format!("`kind: {k}`"))
                .unwrap_or_else(|| type_of(v));
            let desc = v
                .get("description")
                .and_then(Value::as_str)
                .map(one_line)
                .unwrap_or_default();
            let _ = writeln!(out, "- {label} — {desc}");
            if let Some(Value::Object(props)) = v.get("properties") {
                for (field, p) in props.iter().filter(|(f, _)| *f != "kind") {
                    let d = p
                        .get("description")
                        .and_then(Value::as_str)
                        .map(one_line)
                        .unwrap_or_default();
                    let _ = writeln!(out, "  - `{field}` ({}): {d}", type_of(p));
                }
            }
        }
    } else {
        let _ = writeln!(out, "Type: {}", type_of(s));
    }
}
