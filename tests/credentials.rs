//! Credentials pushed by a config center: compare-and-set versions, effect without restart,
//! persistence across restarts, and a rotation window for inbound verification.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use channel_sim::{Catalog, SimConfig, Simulator};
use entrepot::callbacks::{Inbound, receive};
use entrepot::credentials::CredentialSets;
use entrepot::engine::Engine;
use entrepot::server::AppState;
use entrepot::store::{Store, StoreOptions};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::support::root;

const KEY: &str = "rotating-app-key";
const OLD: &str = "the-old-app-secret";
const NEW: &str = "the-new-app-secret";
const ADMIN: &str = "config-center-token";

fn plan(base_url: String) -> entrepot::plan::Plan {
    let text = std::fs::read_to_string(root().join("platforms/yanxuan.yaml"))
        .unwrap()
        .replace(
            "credentials: [app_key, app_secret]",
            "credentials: [app_key, app_secret]\nrotation_window: 10m",
        );
    let doc = entrepot::config::source::parse(Path::new("yanxuan.yaml"), text).unwrap();
    let c = entrepot::compile::compile_docs(vec![doc], &move |n| {
        (n == "YANXUAN_BASE_URL").then(|| base_url.clone())
    });
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
    c.plan
}

async fn put(http: &reqwest::Client, url: &str, token: &str, body: Value) -> (u16, Value) {
    let r = http
        .put(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn pushed_credentials_take_effect_persist_and_rotate() {
    let sim = Simulator::start(SimConfig::new(KEY, OLD, Catalog::sample()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        url: format!("sqlite://{}/gw.db", dir.path().display()),
        ..Default::default()
    };
    let store = Store::open(&opts).await.unwrap();
    let engine = Arc::new(Engine::new(store.clone(), CredentialSets::new(), |_| None));
    let plan = Arc::new(ArcSwap::from_pointee(plan(sim.base_url())));
    let state = AppState {
        plan: plan.clone(),
        store: Some(store.clone()),
        engine: Some(engine.clone()),
        admin_token: Some(entrepot::config::Secret::new(ADMIN)),
        ..Default::default()
    };
    let addr = crate::support::serve_on_loopback(state).await;
    let http = reqwest::Client::new();
    let creds_url = format!("http://{addr}/admin/v1/platforms/yanxuan/credentials");
    let call = || {
        http.post(format!(
            "http://{addr}/v1/platforms/yanxuan/operations/product.list"
        ))
        .json(&json!({}))
        .send()
    };

    // No credentials yet: a clear configuration problem naming what is missing.
    let r = call().await.unwrap();
    assert_eq!(r.status().as_u16(), 500);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("credential 'app_key' has no value")
    );

    // The push needs the admin token; then it takes effect for the next request.
    let (status, _) = put(
        &http,
        &creds_url,
        "wrong",
        json!({"version": 1, "values": {"app_key": KEY, "app_secret": OLD}}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = put(
        &http,
        &creds_url,
        ADMIN,
        json!({"version": 1, "values": {"app_key": KEY, "app_secret": OLD}}),
    )
    .await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(1)));
    assert_eq!(call().await.unwrap().status().as_u16(), 200);

    // An older (or equal) version is refused and changes nothing.
    let (status, body) = put(
        &http,
        &creds_url,
        ADMIN,
        json!({"version": 0, "values": {"app_secret": "older"}}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        !body.to_string().contains("older"),
        "a refusal never echoes secrets: {body}"
    );
    assert_eq!(call().await.unwrap().status().as_u16(), 200);
    let (status, _) = put(
        &http,
        &creds_url,
        ADMIN,
        json!({"version": 1, "values": {"app_key": "x"}}),
    )
    .await;
    assert_eq!(status, 409);
    let (status, body) = put(
        &http,
        &creds_url,
        ADMIN,
        json!({"version": 2, "values": {"bogus": "x"}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // A restart keeps them.
    let restarted = Engine::new(
        Store::open(&opts).await.unwrap(),
        CredentialSets::new(),
        |_| None,
    );
    assert_eq!(restarted.load_pushed().await.unwrap(), 1);
    let p = plan.load_full().platforms["yanxuan"].clone();
    assert_eq!(restarted.credentials_for(&p)["app_secret"], OLD);

    // Rotation: version 2 carries a new secret. Outbound requests use it at once (the
    // simulator still knows only the old one, so it now refuses us)...
    let (status, _) = put(
        &http,
        &creds_url,
        ADMIN,
        json!({"version": 2, "values": {"app_key": KEY, "app_secret": NEW}}),
    )
    .await;
    assert_eq!(status, 200);
    let r = call().await.unwrap();
    assert_eq!(r.status().as_u16(), 502);
    assert!(r.text().await.unwrap().contains("invalid sign"));

    // ...while deliveries signed with the old secret still verify during the window, and not
    // after it. Deliveries signed with the new secret verify throughout.
    let snapshot = plan.load_full();
    let notice = |secret: &str, id: &str, at: OffsetDateTime| Inbound {
        method: "POST".into(),
        route: "/yanxuan/notify".into(),
        headers: vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: channel_sim::signed_form(
            KEY,
            secret,
            "yanxuan.notification.inventory.count.changed",
            at,
            &[("notifyId", id), ("skuId", "100101"), ("inventory", "1")],
        )
        .into_bytes(),
        ..Default::default()
    };
    let now = OffsetDateTime::now_utc();
    let later = now + time::Duration::minutes(11);
    let r = receive(
        &snapshot,
        &engine,
        &[],
        notice(OLD, "r-1", now),
        now,
        &|| {},
    )
    .await;
    assert_eq!(r.status, 200, "old secret within the window");
    let r = receive(
        &snapshot,
        &engine,
        &[],
        notice(NEW, "r-2", now),
        now,
        &|| {},
    )
    .await;
    assert_eq!(r.status, 200, "new secret");
    let r = receive(
        &snapshot,
        &engine,
        &[],
        notice(OLD, "r-3", later),
        later,
        &|| {},
    )
    .await;
    assert_eq!(r.status, 401, "old secret after the window");
    let r = receive(
        &snapshot,
        &engine,
        &[],
        notice(NEW, "r-4", later),
        later,
        &|| {},
    )
    .await;
    assert_eq!(r.status, 200, "new secret after the window");
}

fn notice(secret: &str, id: &str, at: OffsetDateTime) -> Inbound {
    Inbound {
        method: "POST".into(),
        route: "/yanxuan/notify".into(),
        headers: vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: channel_sim::signed_form(
            KEY,
            secret,
            "yanxuan.notification.inventory.count.changed",
            at,
            &[("notifyId", id), ("skuId", "100101"), ("inventory", "1")],
        )
        .into_bytes(),
        ..Default::default()
    }
}

/// The status `engine` answers a delivery signed with `secret` at `at`.
async fn delivered(
    plan: &entrepot::plan::Plan,
    engine: &Engine,
    secret: &str,
    id: &str,
    at: OffsetDateTime,
) -> u16 {
    receive(plan, engine, &[], notice(secret, id, at), at, &|| {})
        .await
        .status
}

fn file_credentials(secret: &str) -> CredentialSets {
    let mut sets = CredentialSets::new();
    sets.insert(
        "yanxuan".into(),
        [
            ("app_key".to_string(), json!(KEY)),
            ("app_secret".to_string(), json!(secret)),
        ]
        .into_iter()
        .collect(),
    );
    sets
}

fn pushed(secret: &str) -> serde_json::Map<String, Value> {
    [
        ("app_key".to_string(), json!(KEY)),
        ("app_secret".to_string(), json!(secret)),
    ]
    .into_iter()
    .collect()
}

#[tokio::test]
async fn the_file_value_stays_valid_for_the_window_after_the_first_push_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        url: format!("sqlite://{}/gw.db", dir.path().display()),
        ..Default::default()
    };
    // The plan's window is 10 minutes; the simulator is never called.
    let plan = plan("http://127.0.0.1:9".into());
    let engine = Engine::new(
        Store::open(&opts).await.unwrap(),
        file_credentials(OLD),
        |_| None,
    );
    let pushed_at = OffsetDateTime::now_utc();
    let (within, after) = (
        pushed_at + time::Duration::minutes(9),
        pushed_at + time::Duration::minutes(11),
    );
    assert_eq!(delivered(&plan, &engine, OLD, "f-0", pushed_at).await, 200);
    engine
        .push_credentials("yanxuan", 1, pushed(NEW), pushed_at)
        .await
        .unwrap();
    assert_eq!(
        delivered(&plan, &engine, OLD, "f-1", pushed_at).await,
        200,
        "the file's value right after the first push"
    );
    assert_eq!(delivered(&plan, &engine, NEW, "f-2", pushed_at).await, 200);
    assert_eq!(
        delivered(&plan, &engine, OLD, "f-3", within).await,
        200,
        "the file's value at the end of the window"
    );
    assert_eq!(
        delivered(&plan, &engine, OLD, "f-4", after).await,
        401,
        "the file's value after the window"
    );
    assert_eq!(delivered(&plan, &engine, NEW, "f-5", after).await, 200);

    // A restart: a new engine on the same store (and the same file) keeps the window.
    drop(engine);
    let restarted = Engine::new(
        Store::open(&opts).await.unwrap(),
        file_credentials(OLD),
        |_| None,
    );
    assert_eq!(restarted.load_pushed().await.unwrap(), 1);
    assert_eq!(
        delivered(&plan, &restarted, OLD, "f-6", within).await,
        200,
        "the file's value within the window, after a restart"
    );
    assert_eq!(
        delivered(&plan, &restarted, OLD, "f-7", after).await,
        401,
        "the file's value after the window, after a restart"
    );
}

/// The environment of a gateway whose yanxuan credentials come from variables.
fn env_credentials(name: &str) -> Option<String> {
    match name {
        "ENTREPOT_CREDENTIAL_YANXUAN_APP_KEY" => Some(KEY.into()),
        "ENTREPOT_CREDENTIAL_YANXUAN_APP_SECRET" => Some(OLD.into()),
        _ => None,
    }
}

#[tokio::test]
async fn the_environment_value_stays_valid_for_the_window_after_the_first_push() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let plan = plan("http://127.0.0.1:9".into());
    let engine = Engine::new(store, CredentialSets::new(), env_credentials);
    let pushed_at = OffsetDateTime::now_utc();
    engine
        .push_credentials("yanxuan", 1, pushed(NEW), pushed_at)
        .await
        .unwrap();
    assert_eq!(delivered(&plan, &engine, OLD, "e-1", pushed_at).await, 200);
    let after = pushed_at + time::Duration::minutes(11);
    assert_eq!(delivered(&plan, &engine, OLD, "e-2", after).await, 401);
}

#[tokio::test]
async fn a_pushed_value_replaced_by_a_push_stays_valid_after_a_restart_and_is_stored_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 32]);
    let opts = StoreOptions {
        url: format!("sqlite://{}/gw.db", dir.path().display()),
        credentials_key: Some(entrepot::config::Secret::new(key)),
        ..Default::default()
    };
    let plan = plan("http://127.0.0.1:9".into());
    let engine = Engine::new(
        Store::open(&opts).await.unwrap(),
        file_credentials(OLD),
        |_| None,
    );
    let first = OffsetDateTime::now_utc();
    engine
        .push_credentials("yanxuan", 1, pushed(NEW), first)
        .await
        .unwrap();
    // The second push, 20 minutes later: the file's value is out of its window, the first
    // pushed value starts one.
    let second = first + time::Duration::minutes(20);
    const NEWER: &str = "the-newer-app-secret";
    engine
        .push_credentials("yanxuan", 2, pushed(NEWER), second)
        .await
        .unwrap();
    let within = second + time::Duration::minutes(5);
    let after = second + time::Duration::minutes(11);
    drop(engine);
    let restarted = Engine::new(
        Store::open(&opts).await.unwrap(),
        file_credentials(OLD),
        |_| None,
    );
    restarted.load_pushed().await.unwrap();
    assert_eq!(delivered(&plan, &restarted, NEW, "p-1", within).await, 200);
    assert_eq!(
        delivered(&plan, &restarted, NEWER, "p-2", within).await,
        200
    );
    assert_eq!(delivered(&plan, &restarted, OLD, "p-3", within).await, 401);
    assert_eq!(delivered(&plan, &restarted, NEW, "p-4", after).await, 401);
    restarted.store().close().await;
    // Neither pushed value is anywhere in the store's files in clear text.
    let mut read = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        // The WAL and shared-memory files may vanish as the last connection closes.
        let bytes = match std::fs::read(entry.unwrap().path()) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{e}"),
        };
        read += 1;
        for secret in [NEW, NEWER] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} stored in clear text"
            );
        }
    }
    assert!(read > 0, "the store's database file was read");
}

/// Every reload re-reads the pushed credentials (`load_pushed`) while a push may be stored at
/// the same moment; a read taken before the push finishes must not replace what the push
/// installed. Here the store's row is put back as such a read would have seen it (the older
/// version, then no row at all): the pushed values stay in force.
#[tokio::test]
async fn a_reload_reading_before_a_push_does_not_undo_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/gw.db", dir.path().display());
    let opts = StoreOptions {
        url: url.clone(),
        ..Default::default()
    };
    let plan = plan("http://127.0.0.1:9".into());
    let platform = plan.platforms["yanxuan"].clone();
    let engine = Engine::new(
        Store::open(&opts).await.unwrap(),
        file_credentials(OLD),
        |_| None,
    );
    let secret = |e: &Engine| e.credentials_for(&platform)["app_secret"].clone();
    let now = OffsetDateTime::now_utc();
    engine
        .push_credentials("yanxuan", 1, pushed("first-push"), now)
        .await
        .unwrap();
    // The read of a reload that started before push 2 was stored: version 1.
    let before_push_2 = {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let row: (i64, String) = sqlx::query_as(
            "SELECT version, payload FROM credential_sets WHERE platform = 'yanxuan'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        row
    };
    engine
        .push_credentials("yanxuan", 2, pushed(NEW), now)
        .await
        .unwrap();
    assert_eq!(secret(&engine), json!(NEW));
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE credential_sets SET version = ?, payload = ?, previous = NULL WHERE platform = 'yanxuan'")
        .bind(before_push_2.0)
        .bind(&before_push_2.1)
        .execute(&pool)
        .await
        .unwrap();
    engine.load_pushed().await.unwrap();
    assert_eq!(secret(&engine), json!(NEW), "an older read undid push 2");
    // The read of a reload that started before the platform's first push: no row.
    sqlx::query("DELETE FROM credential_sets")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    engine.load_pushed().await.unwrap();
    assert_eq!(
        secret(&engine),
        json!(NEW),
        "a read without the row undid the push"
    );
}
