//! Where credential values come from: a credentials file, the environment, and pushes from the
//! config center (kept in the store, with the set each push replaced for the rotation window);
//! and the access tokens obtained with them. Values are secrets: they are only ever placed
//! into requests and signatures, never printed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::config::EnvLookup;
use crate::engine::build::credential_env_var;
use crate::plan::PlatformPlan;
use crate::store::{CredentialPut, Rotation, Store, StoreError, StoredCredentials};

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

/// A cached access token.
#[derive(Debug, Clone)]
pub struct Token {
    /// The token.
    pub value: String,
    /// When to obtain a new one.
    pub renew_at: tokio::time::Instant,
}

/// The slot of a platform's access token: whoever holds its lock obtains or reads the token,
/// so concurrent calls share one token request.
pub type TokenSlot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// Every credential of the gateway, for outbound calls, callbacks and flows alike.
pub struct Credentials {
    store: Store,
    file: RwLock<Arc<CredentialSets>>,
    env: fn(&str) -> Option<String>,
    /// Sets pushed by the config center, with the set each replaced.
    pushed: RwLock<HashMap<String, StoredCredentials>>,
    tokens: Mutex<HashMap<String, TokenSlot>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials from the credentials file's `sets` and `env`; pushes go to `store`.
    pub fn new(store: Store, sets: CredentialSets, env: fn(&str) -> Option<String>) -> Self {
        Credentials {
            store,
            file: RwLock::new(Arc::new(sets)),
            env,
            pushed: RwLock::default(),
            tokens: Mutex::default(),
        }
    }

    fn file_sets(&self) -> Arc<CredentialSets> {
        self.file.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Replaces the credentials read from the credentials file (after it changed).
    pub fn set_file_credentials(&self, sets: CredentialSets) {
        if let Ok(mut c) = self.file.write() {
            *c = Arc::new(sets);
        }
    }

    /// The credentials of a platform: pushed values win, name by name, over the credentials
    /// file's, which win over the environment's.
    pub fn credentials_for(&self, platform: &PlatformPlan) -> Map<String, Value> {
        let mut creds = resolve(platform, &self.file_sets(), &self.env);
        if let Ok(m) = self.pushed.read()
            && let Some(p) = m.get(&platform.name)
        {
            creds.extend(p.values.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        creds
    }

    /// The credentials a platform used before its last push, while its rotation window lasts:
    /// inbound verification accepts them too. They are the credentials file's and the
    /// environment's values with the pushed set the push replaced over them (none at the first
    /// push: then the file's and environment's values are the ones that were in force).
    pub fn previous_credentials_for(
        &self,
        platform: &PlatformPlan,
        now: OffsetDateTime,
    ) -> Option<Map<String, Value>> {
        let window = platform.rotation_window?;
        let previous = self
            .pushed
            .read()
            .ok()?
            .get(&platform.name)?
            .previous
            .clone()?;
        let now_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let within = now_ms.saturating_sub(previous.rotated_at) <= window_ms;
        within.then(|| {
            let mut creds = resolve(platform, &self.file_sets(), &self.env);
            creds.extend(previous.values);
            creds
        })
    }

    /// Loads the credentials pushed earlier, with the sets they replaced (both survive
    /// restarts in the store, and pushes through other instances sharing it show here). A
    /// set this instance holds at a newer version than the store showed (a push that landed
    /// while this read ran) is kept.
    pub async fn load_pushed(&self) -> Result<usize, StoreError> {
        let platforms = self.store.credentials_platforms().await?;
        let mut loaded = HashMap::new();
        for (platform, _) in &platforms {
            if let Some(c) = self.store.credentials_get(platform).await? {
                loaded.insert(platform.clone(), c);
            }
        }
        let n = loaded.len();
        if let Ok(mut m) = self.pushed.write() {
            // A push may have been stored and installed while this read ran: what it read is
            // then older, and must not undo the push. So a set held here stays unless the
            // read has it at a newer (or the same) version; sets are never deleted from the
            // store, so one the read lacks is one pushed since.
            for (platform, fresh) in loaded {
                let newer = m
                    .get(&platform)
                    .is_none_or(|held| held.version <= fresh.version);
                if newer {
                    m.insert(platform, fresh);
                }
            }
        }
        Ok(n)
    }

    /// Stores pushed credentials if `version` is newer than the stored one (compare-and-set:
    /// an older push never overwrites a newer one); they take effect for the next request, and
    /// the values they replace stay valid for inbound verification during the platform's
    /// `rotation_window`.
    pub async fn push(
        &self,
        platform: &str,
        version: i64,
        values: Map<String, Value>,
        now: OffsetDateTime,
    ) -> Result<CredentialPut, StoreError> {
        let ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let outcome = self
            .store
            .credentials_put(platform, version, &values, ms)
            .await?;
        if outcome == CredentialPut::Accepted {
            // What the store now holds, with the set it replaced (which may have come from
            // another instance); if that read fails, what this instance knows.
            let stored = match self.store.credentials_get(platform).await {
                Ok(Some(c)) => c,
                _ => {
                    let before = self
                        .pushed
                        .read()
                        .ok()
                        .and_then(|m| m.get(platform).map(|p| p.values.clone()))
                        .unwrap_or_default();
                    StoredCredentials {
                        version,
                        values,
                        updated_at: ms,
                        previous: Some(Rotation {
                            values: before,
                            rotated_at: ms,
                        }),
                    }
                }
            };
            if let Ok(mut m) = self.pushed.write() {
                m.insert(platform.to_string(), stored);
            }
        }
        Ok(outcome)
    }

    /// Versions of the pushed credentials, by platform (never their values).
    pub fn versions(&self) -> HashMap<String, i64> {
        self.pushed
            .read()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.version)).collect())
            .unwrap_or_default()
    }

    /// The access-token slot of `platform` (`None` only if the slot table is unusable).
    pub fn token_slot(&self, platform: &str) -> Option<TokenSlot> {
        let mut tokens = self.tokens.lock().ok()?;
        Some(tokens.entry(platform.to_string()).or_default().clone())
    }
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
