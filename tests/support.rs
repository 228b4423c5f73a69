//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Diagnostics rendered as text, with paths relative to the repository root.
pub fn render(diagnostics: &[entrepot::diagnostics::Diagnostic]) -> String {
    let root = format!("{}/", root().display());
    diagnostics
        .iter()
        .map(|d| d.to_string().replace(&root, ""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A fixed environment for tests: only `CASE_REGION` is set.
pub fn test_env(name: &str) -> Option<String> {
    (name == "CASE_REGION").then(|| "cn-north".to_string())
}

/// A plain HTTP/1.1 GET over loopback: the whole answer and its body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    stream.read_to_string(&mut buf).await.unwrap();
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (buf, body)
}

/// A fresh SQLite store in `dir`.
pub async fn sqlite_store(dir: &tempfile::TempDir) -> entrepot::store::Store {
    let url = format!("sqlite://{}/gw.db", dir.path().display());
    entrepot::store::Store::open(&entrepot::store::StoreOptions {
        url,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Serves `state` on 127.0.0.1 (a free port) until the test ends; returns the address.
pub async fn serve_on_loopback(state: entrepot::server::AppState) -> std::net::SocketAddr {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(entrepot::server::serve(
        "127.0.0.1:0".parse().unwrap(),
        state,
        move |a| {
            let _ = tx.send(a);
        },
        std::future::pending(),
    ));
    rx.await.unwrap()
}

/// Loads the canonical schema files from disk for the validator (not the copies built into
/// the runtime), so tests check outputs against the committed schemas themselves.
struct CanonicalFromDisk;

impl jsonschema::Retrieve for CanonicalFromDisk {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        let name = uri
            .as_str()
            .strip_prefix("https://entrepot.dev/schemas/canonical/")
            .ok_or("not a canonical schema")?;
        let text = std::fs::read_to_string(root().join("schemas/canonical").join(name))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// Problems of `value` against the canonical schema at `reference` (relative to
/// `schemas/canonical/`, such as `events/order.shipped.json`), formats included.
pub fn canonical_problems(reference: &str, value: &serde_json::Value) -> Vec<String> {
    let schema = serde_json::json!({
        "$ref": format!("https://entrepot.dev/schemas/canonical/{reference}")
    });
    let validator = jsonschema::options()
        .with_retriever(CanonicalFromDisk)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Problems of `value` against the canonical output schema of operation `op`.
pub fn output_problems(op: &str, value: &serde_json::Value) -> Vec<String> {
    canonical_problems(&format!("{op}.json#/properties/output"), value)
}

/// Credentials of both sample platforms: yanxuan's `(app_key, app_secret)` and acme-rest's
/// `(client_id, client_secret, webhook_secret)`.
pub fn sample_credentials(
    yanxuan: (&str, &str),
    acme: (&str, &str, &str),
) -> entrepot::credentials::CredentialSets {
    let set = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect::<serde_json::Map<String, serde_json::Value>>()
    };
    let mut creds = entrepot::credentials::CredentialSets::new();
    creds.insert(
        "yanxuan".into(),
        set(&[("app_key", yanxuan.0), ("app_secret", yanxuan.1)]),
    );
    creds.insert(
        "acme-rest".into(),
        set(&[
            ("client_id", acme.0),
            ("client_secret", acme.1),
            ("webhook_secret", acme.2),
        ]),
    );
    creds
}

/// The targets of a gateway file's text.
pub fn gateway_targets(yaml: String) -> Vec<entrepot::compile::gateway::TargetSettings> {
    let doc = entrepot::config::source::parse(std::path::Path::new("entrepot.yaml"), yaml).unwrap();
    entrepot::compile::gateway::compile_gateway(doc, std::path::Path::new("."), &|_| None)
        .unwrap()
        .targets
}

/// The value of the sample `name{labels}` in a Prometheus text exposition (labels in any
/// order, exactly this set); `None` when there is no such sample. Written here, apart from the
/// gateway's encoder, so tests read `/metrics` the way a scraper does.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    wanted.sort();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, mut found) = match series.split_once('{') {
                None => (series, Vec::new()),
                Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}')?)?),
            };
            found.sort();
            (metric_name == name && found == wanted).then(|| parse_sample_value(value))?
        })
}

fn parse_sample_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => v.parse().ok(),
    }
}

/// `a="x",b="y"` (values with `\"`, `\\` and `\n` escapes) as pairs.
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek() == Some(&',') || chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        out.push((key.trim().to_string(), value));
    }
}
