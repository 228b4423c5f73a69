//! The configuration as written: serde types for the platform files and the gateway file, and
//! reading YAML with positions. Nothing here does I/O beyond reading files.

pub mod gateway;
pub mod platform;
pub mod recipe;
pub mod source;

use crate::diagnostics::{Code, Diagnostic};
use source::{DocPath, SourceDoc};

/// Looks an environment variable up; injectable so tests do not touch the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Expands `${env:NAME}` and `${env:NAME:-default}` in `text`. Unset variables without a
/// default are reported with the variable's name.
pub fn expand_env(text: &str, env: EnvLookup<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${env:") {
        out.push_str(rest.get(..start).unwrap_or_default());
        let after = rest.get(start + 6..).unwrap_or_default();
        let Some(end) = after.find('}') else {
            return Err("an '${env:' reference is not closed with '}'".into());
        };
        let inner = after.get(..end).unwrap_or_default();
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("'{name}' is not a valid environment variable name"));
        }
        match (env(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (write '${{env:{name}:-DEFAULT}}' to give a default)"
                ));
            }
        }
        rest = after.get(end + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands environment references in every string under `path` of the document, in place,
/// collecting one diagnostic per failed reference.
pub fn expand_env_in(
    doc: &mut SourceDoc,
    path: &DocPath,
    env: EnvLookup<'_>,
    problems: &mut Vec<Diagnostic>,
) {
    fn walk(
        value: &mut serde_json::Value,
        path: &DocPath,
        env: EnvLookup<'_>,
        failed: &mut Vec<(DocPath, String)>,
    ) {
        match value {
            serde_json::Value::String(s) if s.contains("${env:") => match expand_env(s, env) {
                Ok(v) => *s = v,
                Err(e) => failed.push((path.clone(), e)),
            },
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item, &path.index(i), env, failed);
                }
            }
            serde_json::Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    walk(v, &path.key(k.clone()), env, failed);
                }
            }
            _ => {}
        }
    }
    let mut failed = Vec::new();
    if let Some(target) = doc.value.pointer_mut(&path.pointer()) {
        walk(target, path, env, &mut failed);
    }
    for (p, message) in failed {
        problems.push(doc.at(&p, Code::EnvMissing, message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion() {
        let env = |n: &str| (n == "HOST").then(|| "example.test".to_string());
        assert_eq!(
            expand_env("https://${env:HOST}/x", &env).unwrap(),
            "https://example.test/x"
        );
        assert_eq!(expand_env("${env:PORT:-8080}", &env).unwrap(), "8080");
        assert!(
            expand_env("${env:NOPE}", &env)
                .unwrap_err()
                .contains("NOPE")
        );
        assert!(expand_env("${env:HOST", &env).is_err());
        assert_eq!(expand_env("plain {{x}}", &env).unwrap(), "plain {{x}}");
    }
}

/// A secret value: printed as `***` by `Debug` and `Display`, so it cannot leak through logs or
/// error messages by accident. Read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}
