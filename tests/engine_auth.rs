//! Authentication kinds: API key, basic, bearer, and OAuth 2 client credentials against a
//! hand-written token server on 127.0.0.1:0.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use entrepot::credentials::CredentialSets;
use entrepot::engine::build::{BuildInput, build};
use entrepot::engine::{CallOutcome, Engine};
use serde_json::{Value, json};

use crate::support::root;

#[derive(Default)]
struct Mock {
    tokens_issued: AtomicUsize,
    current: Mutex<String>,
}

async fn token(
    State(m): State<Arc<Mock>>,
    Form(form): Form<Vec<(String, String)>>,
) -> (StatusCode, Json<Value>) {
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if field("grant_type") != Some("client_credentials")
        || field("client_id") != Some("cid")
        || field("client_secret") != Some("csecret")
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        );
    }
    // Slow enough that concurrent callers overlap.
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let n = m.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
    let t = format!("tok-{n}");
    *m.current.lock().unwrap() = t.clone();
    (
        StatusCode::OK,
        Json(json!({"access_token": t, "token_type": "bearer", "expires_in": 120})),
    )
}

async fn inventory(State(m): State<Arc<Mock>>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let expected = format!("Bearer {}", m.current.lock().unwrap());
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_token", "message": "token expired or revoked"})),
        );
    }
    (
        StatusCode::OK,
        Json(json!({"data": [{"sku": "a", "qty": 3}]})),
    )
}

async fn mock() -> (Arc<Mock>, String) {
    let m = Arc::new(Mock::default());
    let app = Router::new()
        .route("/oauth/token", post(token))
        .route("/v1/inventory", get(inventory))
        .with_state(m.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (m, url)
}

async fn engine(
    url: &str,
    secret: &str,
    refresh_before: &str,
) -> (Engine, Arc<entrepot::plan::PlatformPlan>, tempfile::TempDir) {
    let text = std::fs::read_to_string(root().join("tests/platforms/oauth.yaml"))
        .unwrap()
        .replace(
            "refresh_before: 60s",
            &format!("refresh_before: {refresh_before}"),
        );
    let doc = entrepot::config::source::parse(Path::new("oauth.yaml"), text).unwrap();
    let url = url.to_string();
    let compiled = entrepot::compile::compile_docs(vec![doc], &move |n| {
        (n == "OAUTH_DEMO_URL").then(|| url.clone())
    });
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let mut creds = CredentialSets::new();
    creds.insert(
        "oauth_demo".into(),
        [
            ("client_id".to_string(), json!("cid")),
            ("client_secret".to_string(), json!(secret)),
        ]
        .into_iter()
        .collect(),
    );
    let plan = compiled.plan.platforms["oauth_demo"].clone();
    (Engine::new(store, creds, |_| None), plan, dir)
}

async fn inventory_call(
    e: &Engine,
    p: &entrepot::plan::PlatformPlan,
) -> Result<Value, entrepot::engine::problem::Problem> {
    match e
        .call(p, "inventory.get", &json!({"sku_ids": ["a"]}), false)
        .await?
    {
        CallOutcome::Output(v) => Ok(v),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn one_token_for_concurrent_calls_and_one_renewal_on_401() {
    let (m, url) = mock().await;
    let (e, p, _dir) = engine(&url, "csecret", "60s").await;
    let calls = (0..16).map(|_| inventory_call(&e, &p));
    for r in futures::future::join_all(calls).await {
        assert_eq!(
            r.unwrap(),
            json!({"items": [{"sku_id": "a", "available": 3}]})
        );
    }
    assert_eq!(
        m.tokens_issued.load(Ordering::SeqCst),
        1,
        "a single refresh in flight"
    );
    // The platform revokes the token: the next call is refused once, renews, and succeeds.
    *m.current.lock().unwrap() = "revoked".into();
    inventory_call(&e, &p).await.unwrap();
    assert_eq!(m.tokens_issued.load(Ordering::SeqCst), 2);
    inventory_call(&e, &p).await.unwrap();
    assert_eq!(
        m.tokens_issued.load(Ordering::SeqCst),
        2,
        "the renewed token is cached"
    );
}

#[tokio::test]
async fn tokens_are_renewed_before_they_expire() {
    let (m, url) = mock().await;
    // The token lives 120s; renewing 120s before expiry means every call needs a fresh one.
    let (e, p, _dir) = engine(&url, "csecret", "120s").await;
    for n in 1..=3 {
        inventory_call(&e, &p).await.unwrap();
        assert_eq!(m.tokens_issued.load(Ordering::SeqCst), n);
    }
}

#[tokio::test]
async fn refused_client_credentials_are_a_clear_problem() {
    let (_m, url) = mock().await;
    let (e, p, _dir) = engine(&url, "wrong", "60s").await;
    let problem = inventory_call(&e, &p).await.unwrap_err();
    assert_eq!(problem.status, 502);
    assert!(
        problem.detail.contains("gave no token") && problem.detail.contains("client credentials"),
        "{problem}"
    );
    assert!(!problem.detail.contains("wrong"));
}

fn compile_inline(auth: &str) -> Arc<entrepot::plan::PlatformPlan> {
    let text = format!(
        "platform: p\ncredentials: [user, pass, key]\n{auth}\nrequest: {{ method: GET, url: \"http://127.0.0.1:9/x\" }}\noperations:\n  order.get: {{}}\n"
    );
    let doc = entrepot::config::source::parse(Path::new("p.yaml"), text).unwrap();
    let c = entrepot::compile::compile_docs(vec![doc], &|_| None);
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
    c.plan.platforms["p"].clone()
}

#[test]
fn static_auth_kinds_are_placed() {
    let creds = [
        ("user", "Aladdin"),
        ("pass", "open sesame"),
        ("key", "k-123"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), json!(v)))
    .collect();
    let build_with = |auth: &str| {
        let p = compile_inline(auth);
        build(
            &p,
            &p.operations["order.get"],
            &BuildInput {
                input: &json!({}),
                credentials: &creds,
                now: time::OffsetDateTime::now_utc(),
                nonce: None,
                token: None,
            },
        )
        .unwrap()
    };
    // RFC 7617's example: Aladdin / open sesame.
    let r = build_with(
        "auth: { kind: basic, username: \"{{credentials.user}}\", password: \"{{credentials.pass}}\" }",
    );
    assert_eq!(
        r.headers,
        vec![(
            "Authorization".to_string(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==".to_string()
        )]
    );
    let r = build_with("auth: { kind: bearer, token: \"{{credentials.key}}\" }");
    assert_eq!(
        r.headers,
        vec![("Authorization".to_string(), "Bearer k-123".to_string())]
    );
    let r = build_with(
        "auth: { kind: api_key, in: header, name: X-Api-Key, value: \"{{credentials.key}}\" }",
    );
    assert_eq!(
        r.headers,
        vec![("X-Api-Key".to_string(), "k-123".to_string())]
    );
    let r = build_with(
        "auth: { kind: api_key, in: query, name: api_key, value: \"{{credentials.key}}\" }",
    );
    assert_eq!(r.url, "http://127.0.0.1:9/x?api_key=k-123");
}
