//! `product.get` through each path: the simulator called directly (a signed channel-API call,
//! the floor), the hand-written adapter, and the gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hyper::StatusCode;
use serde_json::{Value, json};

use crate::load::{self, Call, Check, MakeCall};
use crate::platform;
use crate::report::RunStats;

/// The simulator's demo app key (what `channel-sim` accepts by default).
pub const APP_KEY: &str = "sim-app-key";
/// The simulator's demo app secret.
pub const APP_SECRET: &str = "sim-app-secret";
/// The product every path reads: the platform id of the first product of the simulator's
/// sample catalog (two SKUs).
pub const PRODUCT: &str = "1001";

const OPERATION: &str = "/v1/platforms/yanxuan/operations/product.get";

/// One way to get the product.
#[derive(Clone)]
pub struct Path {
    /// Row name.
    pub name: &'static str,
    /// Where to send.
    pub addr: SocketAddr,
    /// What to send.
    pub make: MakeCall,
    /// What counts as success.
    pub check: Check,
}

/// The simulator called directly: each request signed with a fresh timestamp.
pub fn direct(addr: SocketAddr) -> Path {
    let make: MakeCall = Arc::new(|| {
        let body = platform::signed_form(
            APP_KEY,
            APP_SECRET,
            "yanxuan.item.batch.get",
            &[("itemIds", PRODUCT)],
        )?;
        Ok(Call::post(
            "/channel/api.json",
            "application/x-www-form-urlencoded",
            body,
        ))
    });
    Path {
        name: "simulator direct",
        addr,
        make,
        check: |status, body| status == StatusCode::OK && contains(body, b"\"code\":\"200\""),
    }
}

/// The canonical `product.get` of the adapter or the gateway, for internal id `spu_id`.
pub fn canonical(name: &'static str, addr: SocketAddr, spu_id: &str) -> Path {
    let body = bytes::Bytes::from(json!({ "spu_id": spu_id }).to_string());
    let make: MakeCall =
        Arc::new(move || Ok(Call::post(OPERATION, "application/json", body.clone())));
    Path {
        name,
        addr,
        make,
        check: |status, body| status == StatusCode::OK && contains(body, b"\"product\""),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// POSTs a canonical operation and returns its JSON answer, failing on anything but 200.
pub async fn call(addr: SocketAddr, operation: &str, input: &Value) -> anyhow::Result<Value> {
    let path = format!("/v1/platforms/yanxuan/operations/{operation}");
    let (status, body) = load::once(
        addr,
        &Call::post(&path, "application/json", input.to_string()),
    )
    .await?;
    if status != StatusCode::OK {
        bail!(
            "{path} on {addr} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body).with_context(|| format!("{path} on {addr}: not JSON"))
}

/// The gateway's internal id of the sample product, after a listing has allocated it.
pub async fn gateway_spu(addr: SocketAddr) -> anyhow::Result<String> {
    call(addr, "product.list", &json!({})).await?;
    let path = format!("/v1/mappings/yanxuan/spu?platform_id={PRODUCT}");
    let (status, body) = load::once(addr, &Call::get(&path)).await?;
    if status != StatusCode::OK {
        bail!(
            "{path} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let v: Value = serde_json::from_slice(&body).context("the mapping answer is not JSON")?;
    v.get("internal_id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .context("the mapping answer has no internal_id")
}

/// The adapter's internal id of the product titled `title`, after a listing has allocated it.
pub async fn adapter_spu(addr: SocketAddr, title: &str) -> anyhow::Result<String> {
    let list = call(addr, "product.list", &json!({})).await?;
    list.get("items")
        .and_then(Value::as_array)
        .and_then(|items| {
            items
                .iter()
                .find(|i| i.get("title").and_then(Value::as_str) == Some(title))
        })
        .and_then(|i| i.get("spu_id"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .with_context(|| format!("the adapter's listing has no product titled {title}"))
}

/// `v` with every `spu_id` / `sku_id` value replaced by its kind, after checking that it is
/// an internal id of the gateway's form, `<kind>_<32 hex>`.
pub fn without_ids(v: &Value) -> anyhow::Result<Value> {
    Ok(match v {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, x) in map {
                let kind = k.strip_suffix("_id").filter(|k| *k == "spu" || *k == "sku");
                let value = match (kind, x.as_str()) {
                    (Some(kind), Some(id)) => {
                        let hex = id
                            .strip_prefix(kind)
                            .and_then(|r| r.strip_prefix('_'))
                            .filter(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
                        if hex.is_none() {
                            bail!("{k} {id} is not of the form {kind}_<32 hex>");
                        }
                        Value::String(format!("<{kind} id>"))
                    }
                    _ => without_ids(x)?,
                };
                out.insert(k.clone(), value);
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(without_ids).collect::<Result<_, _>>()?)
        }
        other => other.clone(),
    })
}

/// Runs `path` at `connections` connections for `duration`, then at one connection for
/// `single`.
pub async fn measure(
    path: &Path,
    connections: usize,
    duration: Duration,
    single: Duration,
) -> anyhow::Result<(RunStats, RunStats)> {
    let loaded = load::drive(
        path.addr,
        connections,
        duration,
        path.make.clone(),
        path.check,
    )
    .await?;
    let alone = load::drive(path.addr, 1, single, path.make.clone(), path.check).await?;
    for (sample, what) in [(&loaded, "loaded"), (&alone, "single-connection")] {
        if sample.latencies.is_empty() {
            bail!(
                "{}: no request of the {what} run succeeded; first failure: {}",
                path.name,
                sample.first_error.as_deref().unwrap_or("none recorded")
            );
        }
    }
    Ok((RunStats::of(&loaded), RunStats::of(&alone)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_blanked() {
        let v = json!({"product": {"spu_id": "spu_0123456789abcdef0123456789abcdef", "skus": [{"sku_id": "sku_ffffffffffffffffffffffffffffffff", "title": "x"}]}});
        assert_eq!(
            without_ids(&v).unwrap(),
            json!({"product": {"spu_id": "<spu id>", "skus": [{"sku_id": "<sku id>", "title": "x"}]}})
        );
        assert!(without_ids(&json!({"spu_id": "1001"})).is_err());
        assert!(without_ids(&json!({"sku_id": "spu_0123456789abcdef0123456789abcdef"})).is_err());
    }

    #[test]
    fn checks() {
        let d = direct("127.0.0.1:1".parse().unwrap());
        assert!((d.check)(StatusCode::OK, br#"{"code":"200","result":[]}"#));
        assert!(!(d.check)(
            StatusCode::OK,
            br#"{"code":"403","msg":"timestamp expired"}"#
        ));
        let call = (d.make)().unwrap();
        assert!(String::from_utf8_lossy(&call.body).contains("itemIds=1001"));
    }
}
