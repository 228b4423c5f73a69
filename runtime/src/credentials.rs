//! Where credential values come from: a credentials file and the environment. Values are
//! secrets: they are only ever placed into requests and signatures, never printed.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::config::EnvLookup;
use crate::engine::build::credential_env_var;
use crate::plan::PlatformPlan;

/// Credentials by platform, then by name.
pub type CredentialSets = HashMap<String, Map<String, Value>>;

/// Reads a credentials file: a YAML (or JSON) mapping of platform → credential name → value.
///
/// ```yaml
/// acme:
///   app_key: "..."
///   app_secret: "..."
/// ```
pub fn read_file(path: &Path) -> Result<CredentialSets, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the credentials file {}: {e}", path.display()))?;
    let value: Value = serde_yaml_ng::from_str(&text).map_err(|e| {
        // Never echo the file's content: it holds secrets.
        let at = e
            .location()
            .map(|l| format!(" at line {}", l.line()))
            .unwrap_or_default();
        format!(
            "the credentials file {} is not valid YAML{at}",
            path.display()
        )
    })?;
    let Value::Object(platforms) = value else {
        return Err(format!(
            "the credentials file {} must map platform names to credentials",
            path.display()
        ));
    };
    let mut out = CredentialSets::new();
    for (platform, creds) in platforms {
        let Value::Object(creds) = creds else {
            return Err(format!(
                "in {}, '{platform}' must map credential names to values",
                path.display()
            ));
        };
        let mut map = Map::new();
        for (name, v) in creds {
            let text = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                _ => {
                    return Err(format!(
                        "in {}, {platform}.{name} must be text",
                        path.display()
                    ));
                }
            };
            map.insert(name, Value::String(text));
        }
        out.insert(platform, map);
    }
    Ok(out)
}

/// The credentials of `platform`: from `sets` first, then from the environment variables
/// `ENTREPOT_CREDENTIAL_<PLATFORM>_<NAME>`.
pub fn resolve(
    platform: &PlatformPlan,
    sets: &CredentialSets,
    env: EnvLookup<'_>,
) -> Map<String, Value> {
    let mut out = sets.get(&platform.name).cloned().unwrap_or_default();
    for name in &platform.credentials {
        if !out.contains_key(name)
            && let Some(v) = env(&credential_env_var(&platform.name, name))
        {
            out.insert(name.clone(), Value::String(v));
        }
    }
    out
}

/// Replaces every occurrence of a credential value (of four characters or more) in `text`
/// with `***`, longest first.
pub fn mask(text: &str, credentials: &Map<String, Value>) -> String {
    let mut secrets: Vec<&str> = credentials
        .values()
        .filter_map(Value::as_str)
        .filter(|s| s.chars().count() >= 4)
        .collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(s, "***");
        // Also as it appears in URLs and form bodies.
        for encoded in [
            crate::template::percent_encode(s, true),
            crate::template::percent_encode(s, false),
        ] {
            if encoded != s {
                out = out.replace(&encoded, "***");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_longest_first() {
        let mut c = Map::new();
        c.insert("a".into(), Value::String("secret".into()));
        c.insert("b".into(), Value::String("secret-long".into()));
        c.insert("c".into(), Value::String("ab".into()));
        assert_eq!(mask("x secret-long y secret ab", &c), "x *** y *** ab");
        c.insert("d".into(), Value::String("a/b c+d".into()));
        assert_eq!(mask("k=a%2Fb+c%2Bd&j=a%2Fb%20c%2Bd", &c), "k=***&j=***");
    }
}
