//! The canonical API keeps its own contract: every answer of the sample platform fits the
//! canonical output schema (read from `schemas/canonical/` here, by an independent validator),
//! inputs are checked for formats, every status a route answers is in the OpenAPI document,
//! the admin gate answers clearly, and unreadable RSA keys are caught at load or refused
//! without internals.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use channel_sim::{Catalog, SimConfig, Simulator};
use entrepot::credentials::CredentialSets;
use entrepot::engine::Engine;
use entrepot::server::{AppState, serve};
use serde_json::{Value, json};

use crate::support::root;

const KEY: &str = "contract-app-key";
const SECRET: &str = "contract-app-secret";
const ADMIN: &str = "contract-admin-token";

struct Gateway {
    url: String,
    sim: Simulator,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The sample platform against the simulator, served with a store, an engine and, when given,
/// an admin token.
async fn start(admin: Option<&str>) -> Gateway {
    let sim = Simulator::start(SimConfig::new(KEY, SECRET, Catalog::sample()))
        .await
        .unwrap();
    let base = sim.base_url();
    let text = std::fs::read_to_string(root().join("platforms/yanxuan.yaml")).unwrap();
    let doc = entrepot::config::source::parse(Path::new("platforms/yanxuan.yaml"), text).unwrap();
    let env = move |name: &str| (name == "YANXUAN_BASE_URL").then(|| base.clone());
    let compiled = entrepot::compile::compile_docs(vec![doc], &env);
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let mut creds = CredentialSets::new();
    creds.insert(
        "yanxuan".into(),
        [
            ("app_key".to_string(), json!(KEY)),
            ("app_secret".to_string(), json!(SECRET)),
        ]
        .into_iter()
        .collect(),
    );
    let state = AppState {
        plan: Arc::new(ArcSwap::from_pointee(compiled.plan)),
        store: Some(store.clone()),
        engine: Some(Arc::new(Engine::new(store, creds, |_| None))),
        admin_token: admin.map(entrepot::config::Secret::new),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        "127.0.0.1:0".parse().unwrap(),
        state,
        move |a| {
            let _ = tx.send(a);
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let addr = rx.await.unwrap();
    Gateway {
        url: format!("http://{addr}"),
        sim,
        http: reqwest::Client::new(),
        _dir: dir,
        _stop: stop,
    }
}

impl Gateway {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn call(&self, op: &str, input: Value) -> (u16, Value) {
        self.send(
            "POST",
            &format!("/v1/platforms/yanxuan/operations/{op}"),
            Some(input),
        )
        .await
    }

    async fn ok(&self, op: &str, input: Value) -> Value {
        let (status, body) = self.call(op, input).await;
        assert_eq!(status, 200, "{op}: {body}");
        body
    }
}

fn order_input(order_id: &str, sku: &str) -> Value {
    json!({
        "order_id": order_id,
        "lines": [{"sku_id": sku, "quantity": 1, "unit_price": {"amount": 29900, "currency": "CNY"}}],
        "address": {"name": "张三", "phone": "13800000000", "province": "浙江省", "city": "杭州市", "district": "西湖区", "detail": "文三路 1 号"},
        "total": {"amount": 29900, "currency": "CNY"},
        "freight": {"amount": 0, "currency": "CNY"}
    })
}

/// Every mapped output of the sample platform, on first, middle and last pages, before and
/// after shipping, accepted and refused cancellations, fits its canonical output schema.
#[tokio::test]
async fn every_mapped_output_matches_its_canonical_schema() {
    let gw = start(None).await;
    let mut outputs: Vec<(&str, Value)> = Vec::new();
    let first = gw.ok("product.list", json!({"page_size": 2})).await;
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    outputs.push(("product.list", first.clone()));
    let last = gw
        .ok("product.list", json!({"page_size": 2, "cursor": cursor}))
        .await;
    // The last page says so with a null cursor, as the schema requires (not by leaving it out).
    assert_eq!(last.get("next_cursor"), Some(&Value::Null), "{last}");
    outputs.push(("product.list", last));
    outputs.push(("product.list", gw.ok("product.list", json!({})).await));
    let spu = first["items"][0]["spu_id"].as_str().unwrap().to_string();
    let sku = first["items"][0]["skus"][0]["sku_id"]
        .as_str()
        .unwrap()
        .to_string();
    outputs.push((
        "product.get",
        gw.ok("product.get", json!({"spu_id": spu})).await,
    ));
    outputs.push((
        "inventory.get",
        gw.ok("inventory.get", json!({"sku_ids": [sku]})).await,
    ));
    outputs.push((
        "order.create",
        gw.ok("order.create", order_input("contract-1", &sku)).await,
    ));
    outputs.push((
        "order.create",
        gw.ok("order.create", order_input("contract-2", &sku)).await,
    ));
    outputs.push((
        "order.get",
        gw.ok("order.get", json!({"order_id": "contract-1"})).await,
    ));
    outputs.push((
        "logistics.get",
        gw.ok("logistics.get", json!({"order_id": "contract-1"}))
            .await,
    ));
    gw.sim.ship("contract-1", "顺丰", "SF1");
    outputs.push((
        "logistics.get",
        gw.ok("logistics.get", json!({"order_id": "contract-1"}))
            .await,
    ));
    outputs.push((
        "order.get",
        gw.ok("order.get", json!({"order_id": "contract-1"})).await,
    ));
    outputs.push((
        "order.cancel",
        gw.ok("order.cancel", json!({"order_id": "contract-1"}))
            .await,
    ));
    outputs.push((
        "order.cancel",
        gw.ok("order.cancel", json!({"order_id": "contract-2"}))
            .await,
    ));
    let mut covered: Vec<&str> = outputs.iter().map(|(op, _)| *op).collect();
    covered.sort_unstable();
    covered.dedup();
    assert_eq!(covered.len(), 7, "{covered:?}");
    for (op, out) in &outputs {
        let problems = crate::support::output_problems(op, out);
        assert!(problems.is_empty(), "{op} answered {out}\n{problems:#?}");
    }
}

/// `date-time` fields are checked as RFC 3339, not only by their shape.
#[tokio::test]
async fn date_time_inputs_are_validated() {
    let gw = start(None).await;
    for bad in [
        "0000-00-00T00:00:00Z",
        "2026-02-30T10:00:00Z",
        "2026-11-28T25:00:00+08:00",
    ] {
        let (status, body) = gw.call("product.list", json!({"updated_since": bad})).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body.to_string().contains("input.updated_since"),
            "{bad}: {body}"
        );
    }
    for good in ["2026-11-28T10:00:00+08:00", "2024-02-29T23:59:59.5Z"] {
        let (status, body) = gw
            .call("product.list", json!({"updated_since": good}))
            .await;
        assert_eq!(status, 200, "{good}: {body}");
    }
}

/// Every status the canonical routes answer is listed for that route in `/v1/openapi.json`.
#[tokio::test]
async fn every_answered_status_is_documented() {
    let gw = start(None).await;
    let (_, doc) = gw.send("GET", "/v1/openapi.json", None).await;
    let first = gw.ok("product.list", json!({"page_size": 1})).await;
    let sku = first["items"][0]["skus"][0]["sku_id"]
        .as_str()
        .unwrap()
        .to_string();
    let op = "/v1/platforms/{platform}/operations";
    let cases: Vec<(&str, String, String, Option<Value>)> = vec![
        (
            "GET",
            "/v1/mappings/{platform}/{kind}".into(),
            "/v1/mappings/yanxuan/sku".into(),
            None,
        ),
        (
            "GET",
            "/v1/mappings/{platform}/{kind}".into(),
            format!("/v1/mappings/yanxuan/sku?internal_id={sku}&platform_id=1"),
            None,
        ),
        (
            "GET",
            "/v1/mappings/{platform}/{kind}".into(),
            "/v1/mappings/yanxuan/sku?internal_id=nope".into(),
            None,
        ),
        (
            "GET",
            "/v1/mappings/{platform}/{kind}".into(),
            format!("/v1/mappings/yanxuan/sku?internal_id={sku}"),
            None,
        ),
        (
            "POST",
            format!("{op}/inventory.get"),
            "/v1/platforms/nowhere/operations/inventory.get".into(),
            Some(json!({"sku_ids": ["x"]})),
        ),
        (
            "POST",
            format!("{op}/inventory.get"),
            "/v1/platforms/yanxuan/operations/inventory.get".into(),
            Some(json!({"sku_ids": []})),
        ),
        (
            "POST",
            format!("{op}/inventory.get"),
            "/v1/platforms/yanxuan/operations/inventory.get".into(),
            Some(json!("not an object")),
        ),
        (
            "POST",
            format!("{op}/order.get"),
            "/v1/platforms/yanxuan/operations/order.get".into(),
            Some(json!({"order_id": "never-seen"})),
        ),
        (
            "POST",
            format!("{op}/inventory.get"),
            "/v1/platforms/yanxuan/operations/inventory.get".into(),
            Some(json!({"sku_ids": [sku]})),
        ),
        (
            "POST",
            "/v1/operations/inventory.get".into(),
            "/v1/operations/inventory.get".into(),
            Some(json!({"sku_ids": []})),
        ),
        (
            "POST",
            "/v1/operations/order.get".into(),
            "/v1/operations/order.get".into(),
            Some(json!({"order_id": "never-seen"})),
        ),
        (
            "POST",
            "/v1/operations/inventory.get".into(),
            "/v1/operations/inventory.get".into(),
            Some(json!({"sku_ids": [sku]})),
        ),
        (
            "POST",
            format!("{op}/inventory.get"),
            "/v1/platforms/yanxuan/operations/inventory.get".into(),
            Some(json!({"sku_ids": ["x".repeat(3 << 20)]})),
        ),
        (
            "POST",
            "/v1/operations/inventory.get".into(),
            "/v1/operations/inventory.get".into(),
            Some(json!({"sku_ids": ["x".repeat(3 << 20)]})),
        ),
        ("GET", "/v1/platforms".into(), "/v1/platforms".into(), None),
        ("GET", "/healthz".into(), "/healthz".into(), None),
        ("GET", "/readyz".into(), "/readyz".into(), None),
    ];
    for (method, template, path, body) in cases {
        let (status, answer) = gw.send(method, &path, body).await;
        let responses = &doc["paths"][&template][method.to_ascii_lowercase()]["responses"];
        assert!(
            responses.get(status.to_string()).is_some(),
            "{method} {path} answered {status} ({answer}), which {template} does not document: {responses}"
        );
    }
}

/// The admin API without a token is switched off, and says so with 503 (not a server error);
/// the bearer scheme is matched without regard to case (RFC 9110 §11.1).
#[tokio::test]
async fn admin_gate_answers_clearly() {
    let off = start(None).await;
    let resp = off
        .http
        .get(format!("{}/admin/v1/status", off.url))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("admin.token"),
        "{body}"
    );

    let on = start(Some(ADMIN)).await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let resp = on
            .http
            .get(format!("{}/admin/v1/status", on.url))
            .header("authorization", format!("{scheme} {ADMIN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{scheme}");
    }
    for wrong in [
        format!("Bearer {ADMIN}x"),
        format!("Basic {ADMIN}"),
        ADMIN.to_string(),
    ] {
        let resp = on
            .http
            .get(format!("{}/admin/v1/status", on.url))
            .header("authorization", wrong.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{wrong}");
    }
}

/// A platform file whose RSA step takes its key from `extra` (a literal or a setting).
fn rsa_platform(key: &str, settings: &str) -> entrepot::compile::Compiled {
    let text = format!(
        "platform: rsa_contract\n{settings}credentials: [app_id]\nrequest:\n  url: \"http://127.0.0.1:9/gw\"\n  form: {{ app_id: \"{{{{credentials.app_id}}}}\" }}\n  sign:\n    steps:\n      - {{ name: content, kind: canonical, from: [form] }}\n      - {{ name: sig, kind: digest, alg: rsa-sha256, input: \"{{{{content}}}}\", key: {key} }}\n    place:\n      - {{ to: form, name: sign, value: \"{{{{sig}}}}\" }}\noperations:\n  order.create: {{}}\n"
    );
    let doc = entrepot::config::source::parse(Path::new("rsa_contract.yaml"), text).unwrap();
    entrepot::compile::compile_docs(vec![doc], &|_| None)
}

/// An RSA key written in the file (literally or as a setting) that is not a usable key is a
/// located load-time diagnostic; a good one loads.
#[test]
fn unreadable_rsa_keys_in_the_file_are_load_time_diagnostics() {
    let literal = rsa_platform("\"not a pem key\"", "");
    let text = crate::support::render(&literal.diagnostics);
    assert!(
        text.contains("rsa_contract.yaml:9:")
            && text.contains("E_SIGNING_KEY")
            && text.contains("request.sign.steps[1].key"),
        "{text}"
    );
    let setting = rsa_platform(
        "\"{{settings.private_key}}\"",
        "settings: { private_key: \"-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----\" }\n",
    );
    let text = crate::support::render(&setting.diagnostics);
    assert!(
        text.contains("E_SIGNING_KEY") && text.contains("request.sign.steps[1].key"),
        "{text}"
    );
    // A public key where the signing step needs a private one is caught too.
    let public =
        std::fs::read_to_string(root().join("tests/vectors/rsa-test-key.pub.pem")).unwrap();
    let wrong_kind = rsa_platform(
        "\"{{settings.private_key}}\"",
        &format!("settings: {{ private_key: {} }}\n", json!(public)),
    );
    assert!(
        crate::support::render(&wrong_kind.diagnostics).contains("E_SIGNING_KEY"),
        "{:?}",
        wrong_kind.diagnostics
    );
    let private = std::fs::read_to_string(root().join("tests/vectors/rsa-test-key.pem")).unwrap();
    let good = rsa_platform(
        "\"{{settings.private_key}}\"",
        &format!("settings: {{ private_key: {} }}\n", json!(private)),
    );
    assert!(good.diagnostics.is_empty(), "{:?}", good.diagnostics);
}

/// An RSA key from a credential that turns out unreadable at run time refuses the delivery
/// without a 500 and without telling the sender anything about the gateway's keys.
#[tokio::test]
async fn unreadable_rsa_credential_is_refused_without_internals() {
    let compiled =
        entrepot::compile::compile_files(&[root().join("tests/vectors/rsa.yaml")], &|_| None);
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let mut creds = CredentialSets::new();
    creds.insert(
        "vector_rsa".into(),
        [
            ("private_key".to_string(), json!("garbage")),
            (
                "platform_public_key".to_string(),
                json!("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----"),
            ),
        ]
        .into_iter()
        .collect(),
    );
    let engine = Engine::new(store, creds, |_| None);
    let reply = entrepot::callbacks::receive(
        &compiled.plan,
        &engine,
        &[],
        entrepot::callbacks::Inbound {
            method: "POST".into(),
            route: "/vector-rsa/notify".into(),
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            body: b"notify_type=trade_status_sync&sign=AAAA".to_vec(),
            ..Default::default()
        },
        time::OffsetDateTime::now_utc(),
        &|| {},
    )
    .await;
    let body = String::from_utf8_lossy(&reply.body).to_string();
    assert_eq!(reply.status, 503, "{body}");
    for internal in ["RSA", "PEM", "key", "step", "sig"] {
        assert!(!body.contains(internal), "{internal} in {body}");
    }
}

/// A canonical input is small: a 2 MiB body of 700 000 empty objects (which decoded would take
/// some 50 MB, 25 times its size) is refused from a scan of its bytes, before anything is built,
/// with a short 400 that names the limit. So is one nested deeper than the limit.
#[tokio::test]
async fn hostile_canonical_inputs_are_refused_before_they_are_built() {
    let gw = start(None).await;
    let mut wide = b"{\"sku_ids\":[".to_vec();
    while wide.len() < 2 * 1024 * 1024 - 16 {
        wide.extend_from_slice(b"{},");
    }
    wide.extend_from_slice(b"{}]}");
    let deep = format!("{{\"sku_ids\":{}{}}}", "[".repeat(100), "]".repeat(100));
    for path in [
        "/v1/platforms/yanxuan/operations/inventory.get",
        "/v1/operations/inventory.get",
    ] {
        for (body, names) in [
            (wide.clone(), "more than 10000 values"),
            (deep.clone().into_bytes(), "nested deeper than 32"),
        ] {
            let r = gw
                .http
                .post(format!("{}{path}", gw.url))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert_eq!(status, 400, "{path}: {}", text.get(..500).unwrap_or(&text));
            assert!(text.len() < 4096, "{path}: a {} byte answer", text.len());
            assert!(text.contains(names), "{path}: {text}");
        }
        // Within the limits but wrong in every one of its 500 items: the problem lists 20 and
        // says there are more, instead of one line per item.
        let many: Vec<Value> = (0..500).map(|_| json!({})).collect();
        let (status, answer) = gw
            .send("POST", path, Some(json!({ "sku_ids": many })))
            .await;
        assert_eq!(status, 400, "{answer}");
        let errors = answer["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 21, "{answer}");
        assert!(
            errors[20].as_str().unwrap().contains("only the first 20"),
            "{answer}"
        );
    }
}
