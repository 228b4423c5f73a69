//! A hand-written adapter of the sample platform (`platforms/yanxuan.yaml`) against its
//! simulator (`examples/channel-sim`): what a person would write instead of the gateway, kept
//! as the reference the gateway is benchmarked against (`bench/`).
//!
//! It serves the gateway's canonical route for `product.get` (and `product.list`, to learn
//! ids), builds the same signed form request the gateway builds from the YAML file, calls the
//! platform, and maps the answer onto the same canonical output, translating ids with an
//! in-memory map. It does not use the `entrepot` crate.
//!
//! - [`signing`] — the MD5 signature and the UTC+8 timestamps.
//! - [`ids`] — internal ↔ platform ids, allocated on first sight.
//! - [`mapping`] — the platform's answers, the canonical model, and the mapping.
//! - [`server`] — the HTTP routes.

pub mod ids;
pub mod mapping;
pub mod server;
pub mod signing;

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;
use time::OffsetDateTime;

use crate::ids::IdMap;
use crate::mapping::Answer;
use crate::server::Problem;

/// Time allowed for one platform call (the sample platform's `transport.timeout`).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the platform is and the credentials to call it with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of the platform, e.g. `http://127.0.0.1:18080`; calls go to
    /// `<base_url>/channel/api.json`.
    pub base_url: String,
    /// The app key.
    pub app_key: String,
    /// The app secret the signature is made with.
    pub app_secret: String,
}

/// One adapter: its platform client and its id mappings.
pub struct Adapter {
    http: reqwest::Client,
    url: String,
    app_key: String,
    app_secret: String,
    /// Internal ↔ platform ids.
    pub ids: IdMap,
}

impl Adapter {
    /// An adapter calling the platform described by `config`.
    pub fn new(config: Config) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
        Ok(Adapter {
            http,
            url: format!("{}/channel/api.json", config.base_url.trim_end_matches('/')),
            app_key: config.app_key,
            app_secret: config.app_secret,
            ids: IdMap::default(),
        })
    }

    /// Calls `method` with `params` and returns its `result`, or the problem to answer.
    pub async fn call(&self, method: &str, params: &[(&str, &str)]) -> Result<Value, Problem> {
        let body = signing::signed_form(
            &self.app_key,
            &self.app_secret,
            OffsetDateTime::now_utc(),
            method,
            params,
        )
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?;
        let failed = |e: String| Problem::new(StatusCode::BAD_GATEWAY, "platform-failed", e);
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| failed(format!("the platform could not be reached: {e}")))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| failed(format!("the platform's answer broke off: {e}")))?;
        if !status.is_success() {
            return Err(failed(format!("the platform answered HTTP {status}")));
        }
        let answer: Answer = serde_json::from_slice(&bytes).map_err(|e| {
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "mapping-error",
                format!("the platform's answer is not JSON: {e}"),
            )
        })?;
        let code = answer.code_text();
        if code != "200" {
            return Err(Problem::platform_error(code, answer.msg));
        }
        Ok(answer.result.unwrap_or(Value::Null))
    }
}
