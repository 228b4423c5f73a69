//! Product sync (`runtime/src/flows/sync.rs`) against both sample platforms' simulators, each
//! with a generated catalog of 1 000 products: full syncs land every product in a test product
//! center exactly once, an interrupted sync resumes where it stopped, an incremental sync lists
//! only what changed, and a product.changed callback refreshes just that product. Expected
//! products come from the simulators' own catalogs.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use entrepot::compile::gateway::SyncSettings;
use entrepot::credentials::CredentialSets;
use entrepot::dispatch::{DispatchOptions, Dispatcher};
use entrepot::engine::Engine;
use entrepot::flows::sync::{Mode, Status, SyncError, Syncer};
use entrepot::server::AppState;
use entrepot::store::Store;
use serde_json::Value;
use tokio::sync::mpsc;

use time::format_description::well_known::Rfc3339;

use crate::support::root;

const PRODUCTS: usize = 1000;
const APP_KEY: &str = "sync-app-key";
const APP_SECRET: &str = "sync-app-secret";
const CLIENT_ID: &str = "sync-client";
const CLIENT_SECRET: &str = "sync-client-secret";
const WEBHOOK_SECRET: &str = "whsec_cmVzdC1zaW0td2ViaG9vay1zZWNyZXQtZm9yLXRlc3Rz";
const ADMIN: &str = "sync-admin-token";

/// One delivery the product center received: its Idempotency-Key header and the event.
type Received = (String, Value);

/// The test product center: records every delivery and answers 200.
async fn center(
    State(seen): State<mpsc::UnboundedSender<Received>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let _ = seen.send((key, serde_json::from_str(&body).unwrap_or(Value::Null)));
    StatusCode::OK
}

enum Sim {
    Channel(channel_sim::Simulator),
    Rest(rest_sim::Simulator),
}

struct Harness {
    platform: &'static str,
    sim: Sim,
    store: Store,
    engine: Arc<Engine>,
    plan: Arc<ArcSwap<entrepot::plan::Plan>>,
    targets: Arc<Vec<entrepot::compile::gateway::TargetSettings>>,
    notify: Arc<tokio::sync::Notify>,
    received: mpsc::UnboundedReceiver<Received>,
    mirrored: mpsc::UnboundedReceiver<Received>,
    url: String,
    _dir: tempfile::TempDir,
}

fn settings(lease: Duration) -> SyncSettings {
    SyncSettings {
        page_size: 100,
        lease,
        schedules: Vec::new(),
    }
}

/// A gateway for `platform` (`yanxuan` or `acme-rest`) in front of its simulator with 1 000
/// products, a product center subscribed to product.upserted, a dispatcher with the sync's
/// consumer, and the HTTP server with the admin API.
async fn start(platform: &'static str, lease: Duration) -> (Harness, Arc<Syncer>) {
    start_on(platform, lease, None).await
}

/// The harness on `store` (default: a fresh SQLite store).
async fn start_on(
    platform: &'static str,
    lease: Duration,
    store: Option<Store>,
) -> (Harness, Arc<Syncer>) {
    start_with(platform, lease, store, false, false).await
}

/// The widest window of the windowed REST simulator, and where its catalog starts.
const WINDOW_DAYS: u64 = 30;
const CATALOG_START: &str = "2026-01-01T00:00:00Z";

/// The harness; `windowed`: the REST simulator lists products only over windows of at most
/// [`WINDOW_DAYS`], its products changed 6 hours apart from [`CATALOG_START`] on, and the
/// platform file declares those windows on its product.list. `mirror`: a second product
/// center, `mirror`, subscribes too (its deliveries in `Harness::mirrored`).
async fn start_with(
    platform: &'static str,
    lease: Duration,
    store: Option<Store>,
    windowed: bool,
    mirror: bool,
) -> (Harness, Arc<Syncer>) {
    let (sim, file, env_name) = match platform {
        "yanxuan" => {
            let config = channel_sim::SimConfig::new(
                APP_KEY,
                APP_SECRET,
                channel_sim::Catalog::large(PRODUCTS, 2),
            );
            (
                Sim::Channel(channel_sim::Simulator::start(config).await.unwrap()),
                "platforms/yanxuan.yaml",
                "YANXUAN_BASE_URL",
            )
        }
        _ => {
            let mut config = rest_sim::SimConfig::new(CLIENT_ID, CLIENT_SECRET, WEBHOOK_SECRET);
            config.catalog = rest_sim::large_catalog(PRODUCTS);
            if windowed {
                let start = time::OffsetDateTime::parse(CATALOG_START, &Rfc3339).unwrap();
                for (i, p) in config.catalog.iter_mut().enumerate() {
                    let at = start + time::Duration::hours(6 * i as i64);
                    p.updated_at = at.format(&Rfc3339).unwrap();
                }
                config.product_window = Some(Duration::from_secs(WINDOW_DAYS * 86_400));
            }
            (
                Sim::Rest(rest_sim::Simulator::start(config).await.unwrap()),
                "platforms/acme-rest.yaml",
                "ACME_REST_BASE_URL",
            )
        }
    };
    let base = match &sim {
        Sim::Channel(s) => s.base_url(),
        Sim::Rest(s) => s.base_url(),
    };
    let mut text = std::fs::read_to_string(root().join(file)).unwrap();
    if windowed {
        let at = "  product.list:\n";
        assert!(text.contains(at));
        text = text.replace(
            at,
            &format!("{at}    windows: {{ max: {WINDOW_DAYS}d, start: \"{CATALOG_START}\" }}\n"),
        );
    }
    let doc = entrepot::config::source::parse(Path::new(file), text).unwrap();
    let env = move |name: &str| (name == env_name).then(|| base.clone());
    let compiled = entrepot::compile::compile_docs(vec![doc], &env);
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );

    let (tx, received) = mpsc::unbounded_channel();
    let (mirror_tx, mirrored) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route("/products", post(center))
        .with_state(tx)
        .merge(
            axum::Router::new()
                .route("/mirror", post(center))
                .with_state(mirror_tx),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let center_url = format!("http://{}/products", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut gateway = format!(
        "targets:\n  product_center:\n    url: {center_url}\n    events: [product.upserted]\n"
    );
    if mirror {
        let url = center_url.replace("/products", "/mirror");
        gateway.push_str(&format!(
            "  mirror:\n    url: {url}\n    events: [product.upserted]\n"
        ));
    }
    let targets = crate::support::gateway_targets(gateway);

    let dir = tempfile::tempdir().unwrap();
    let store = match store {
        Some(s) => s,
        None => crate::support::sqlite_store(&dir).await,
    };
    let creds = crate::support::sample_credentials(
        (APP_KEY, APP_SECRET),
        (CLIENT_ID, CLIENT_SECRET, WEBHOOK_SECRET),
    );
    // Sync steps and platform calls reach /metrics through the engine's observer.
    let metrics = Arc::new(entrepot::metrics::Metrics::new());
    let observer = entrepot::observe::Observer::new(vec![metrics.clone()]);
    let engine = Arc::new(Engine::new(store.clone(), creds, |_| None).with_observer(observer));
    let plan = Arc::new(ArcSwap::from_pointee(compiled.plan));
    let dispatcher = Dispatcher::new(
        store.clone(),
        &targets,
        DispatchOptions {
            backoff: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            poll: Duration::from_millis(20),
            ..Default::default()
        },
        CredentialSets::new(),
        |_| None,
    );
    let notify = dispatcher.notify.clone();
    let targets = Arc::new(targets);
    let syncer = Arc::new(
        Syncer::new(
            plan.clone(),
            engine.clone(),
            targets.clone(),
            settings(lease),
        )
        .with_notify(notify.clone()),
    );
    let dispatcher =
        Arc::new(dispatcher.with_consumer(entrepot::flows::sync::CONSUMER, syncer.clone()));
    tokio::spawn(dispatcher.run(std::future::pending()));
    let mut all_targets = (*targets).clone();
    all_targets.extend(entrepot::flows::sync::consumer_target(&targets));
    let state = AppState {
        plan: plan.clone(),
        store: Some(store.clone()),
        engine: Some(engine.clone()),
        targets: Arc::new(all_targets),
        admin_token: Some(entrepot::config::Secret::new(ADMIN.to_string())),
        notify: Some(notify.clone()),
        sync: Some(syncer.clone()),
        metrics,
        ..Default::default()
    };
    let addr = crate::support::serve_on_loopback(state).await;
    let h = Harness {
        platform,
        sim,
        store,
        engine,
        plan,
        targets,
        notify,
        received,
        mirrored,
        url: format!("http://{addr}"),
        _dir: dir,
    };
    (h, syncer)
}

impl Harness {
    /// Another instance's syncer over the same store and platforms.
    fn other_instance(&self, lease: Duration) -> Syncer {
        Syncer::new(
            self.plan.clone(),
            self.engine.clone(),
            self.targets.clone(),
            settings(lease),
        )
        .with_notify(self.notify.clone())
    }

    fn channel(&self) -> &channel_sim::Simulator {
        match &self.sim {
            Sim::Channel(s) => s,
            Sim::Rest(_) => panic!("not the channel simulator"),
        }
    }

    /// The simulator's own catalog: platform product id → name.
    fn catalog(&self) -> HashMap<String, String> {
        match self.platform {
            "yanxuan" => channel_sim::Catalog::large(PRODUCTS, 2)
                .spus
                .into_iter()
                .map(|s| (s.id, s.name))
                .collect(),
            _ => rest_sim::large_catalog(PRODUCTS)
                .into_iter()
                .map(|p| (p.id, p.name))
                .collect(),
        }
    }

    /// Internal ids of platform product ids.
    async fn internal_ids(&self, platform_ids: &[String]) -> HashMap<String, String> {
        self.store
            .to_internal(self.platform, "spu", platform_ids)
            .await
            .unwrap()
    }

    /// The next `n` deliveries to the product center.
    async fn receive(&mut self, n: usize) -> Vec<Received> {
        let mut out = Vec::new();
        while out.len() < n {
            let next = tokio::time::timeout(Duration::from_secs(30), self.received.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} deliveries within 30s", out.len()))
                .unwrap();
            out.push(next);
        }
        out
    }

    /// How many product.list calls the simulator answered.
    fn list_calls(&self) -> usize {
        match &self.sim {
            Sim::Channel(s) => s
                .requests()
                .iter()
                .filter(|r| r.method == "yanxuan.item.id.batch.get")
                .count(),
            Sim::Rest(s) => s
                .requests()
                .iter()
                .filter(|r| r.method == "GET" && r.path == "/v2/products")
                .count(),
        }
    }

    /// Checks that `deliveries` are every catalog product exactly once, as canonical
    /// product.upserted events with the title the simulator holds.
    async fn assert_whole_catalog(&self, deliveries: &[Received]) {
        let catalog = self.catalog();
        let ids: Vec<String> = catalog.keys().cloned().collect();
        let internal = self.internal_ids(&ids).await;
        assert_eq!(internal.len(), PRODUCTS, "every product got an internal id");
        let by_internal: HashMap<&String, &String> = internal.iter().map(|(p, i)| (i, p)).collect();
        let mut seen = HashSet::new();
        let mut keys = HashSet::new();
        for (n, (key, event)) in deliveries.iter().enumerate() {
            assert_eq!(event["type"], "product.upserted", "{event}");
            assert_eq!(event["platform"], self.platform);
            assert_eq!(&event["idempotency_key"], key);
            let spu = event["data"]["spu_id"].as_str().unwrap().to_string();
            let platform_id = by_internal
                .get(&spu)
                .unwrap_or_else(|| panic!("{spu} is not a catalog product"));
            assert_eq!(
                event["data"]["product"]["title"].as_str(),
                Some(catalog[*platform_id].as_str())
            );
            assert!(
                key.starts_with(&format!("{}:{spu}:", self.platform)),
                "{key}"
            );
            if n < 5 {
                let problems = crate::support::canonical_problems("events/envelope.json", event);
                assert!(problems.is_empty(), "{problems:?} in {event}");
                let problems = crate::support::canonical_problems(
                    "events/product.upserted.json",
                    &event["data"],
                );
                assert!(problems.is_empty(), "{problems:?} in {event}");
            }
            assert!(seen.insert(spu.clone()), "{spu} delivered twice");
            keys.insert(key.clone());
        }
        assert_eq!(seen.len(), PRODUCTS);
        assert_eq!(keys.len(), PRODUCTS);
    }
}

async fn full_sync_lands_every_product_once(platform: &'static str, store: Option<Store>) {
    let (mut h, syncer) = start_on(platform, Duration::from_secs(60), store).await;
    let run = syncer.sync(platform, true, &|_| {}).await.unwrap();
    assert_eq!(run.status, Status::Done);
    assert_eq!(run.mode, Mode::Full);
    assert_eq!(run.pages, 10, "{run:?}");
    assert_eq!((run.items, run.sent, run.unchanged), (1000, 1000, 0));
    assert_eq!(run.total, Some(1000));
    assert_eq!(h.list_calls(), 10);
    let deliveries = h.receive(PRODUCTS).await;
    h.assert_whole_catalog(&deliveries).await;

    // The same products again: nothing is resent.
    let again = syncer.sync(platform, true, &|_| {}).await.unwrap();
    assert_eq!((again.items, again.sent, again.unchanged), (1000, 0, 1000));
    assert_ne!(again.id, run.id);
    assert!(
        h.received.try_recv().is_err(),
        "an unchanged product was resent"
    );

    // Two full runs, both done, 10 pages each; the products were sent by the first only.
    let metrics = reqwest::get(format!("{}/metrics", h.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let p = ("platform", platform);
    let read = |name: &str, labels: &[(&str, &str)]| crate::support::metric(&metrics, name, labels);
    assert_eq!(
        read("entrepot_sync_runs_started_total", &[p, ("mode", "full")]),
        Some(2.0)
    );
    assert_eq!(
        read(
            "entrepot_sync_runs_finished_total",
            &[p, ("status", "done")]
        ),
        Some(2.0)
    );
    assert_eq!(
        read("entrepot_sync_products_sent_total", &[p]),
        Some(PRODUCTS as f64)
    );
    assert_eq!(
        read(
            "entrepot_platform_requests_total",
            &[p, ("operation", "product.list"), ("outcome", "ok")]
        ),
        Some(20.0)
    );
}

#[tokio::test]
async fn yanxuan_full_sync_lands_every_product_once() {
    full_sync_lands_every_product_once("yanxuan", None).await;
}

#[tokio::test]
async fn acme_rest_full_sync_lands_every_product_once() {
    full_sync_lands_every_product_once("acme-rest", None).await;
}

/// The same on PostgreSQL (its flows row, product hashes and outbox), when it is configured.
#[tokio::test]
async fn full_sync_on_postgresql() {
    let Some(url) = crate::store::postgres_url(false) else {
        return;
    };
    let schema = crate::store::fresh_schema();
    let store = crate::store::postgres(&url, &schema).await;
    full_sync_lands_every_product_once("yanxuan", Some(store.clone())).await;
    store.close().await;
    crate::store::drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn an_interrupted_sync_resumes_where_it_stopped() {
    // A lease of 1ms: the crashed instance's lease has run out when the next one starts.
    let (mut h, syncer) = start("yanxuan", Duration::from_millis(1)).await;
    let reached = Arc::new(tokio::sync::Notify::new());
    let signal = reached.clone();
    let crashing = tokio::spawn(async move {
        let _ = syncer
            .sync("yanxuan", true, &move |run| {
                if run.pages == 4 {
                    signal.notify_one();
                }
            })
            .await;
    });
    reached.notified().await;
    // The instance dies in the middle of the sync.
    crashing.abort();
    let _ = crashing.await;
    let before = h.list_calls();
    assert!(
        (4..10).contains(&before),
        "{before} pages read before the crash"
    );

    let other = h.other_instance(Duration::from_secs(60));
    let run = other.sync("yanxuan", false, &|_| {}).await.unwrap();
    assert_eq!(run.status, Status::Done);
    assert_eq!(run.mode, Mode::Full, "the unfinished full sync is resumed");
    assert_eq!(run.resumed, 1);
    assert_eq!(run.pages, 10, "{run:?}");
    // Only the page in flight at the crash, if any, is read twice.
    let after = h.list_calls();
    assert!(
        after <= 11,
        "{after} list calls: the resumed sync started over"
    );
    let deliveries = h.receive(PRODUCTS).await;
    h.assert_whole_catalog(&deliveries).await;
    assert_eq!(run.sent + run.unchanged, run.items);
}

#[tokio::test]
async fn one_sync_of_a_platform_at_a_time() {
    let (h, syncer) = start("acme-rest", Duration::from_secs(60)).await;
    let started = syncer.start("acme-rest", true).await.unwrap();
    // Another instance is refused while the lease holds.
    let other = h.other_instance(Duration::from_secs(60));
    match other.start("acme-rest", true).await {
        Err(SyncError::Busy { seconds, .. }) => assert!(seconds > 0),
        other => panic!("{other:?}"),
    }
    let http = reqwest::Client::new();
    let url = format!("{}/admin/v1/platforms/acme-rest/sync", h.url);
    let resp = http.post(&url).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(resp.status(), 409);
    // Progress of the running sync.
    let id = started.run.id.clone();
    let resp = http
        .get(format!("{url}/{id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let run: Value = resp.json().await.unwrap();
    assert_eq!(run["status"], "running");
    let done = syncer.run(started, &|_| {}).await.unwrap();
    assert_eq!(done.status, Status::Done);
    let run: Value = http
        .get(format!("{url}/{id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (run["status"].as_str(), run["items"].as_u64()),
        (Some("done"), Some(1000))
    );
    // Free again: the API starts one and answers at once with its id.
    let resp = http.post(&url).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["mode"], "incremental");
    assert!(body["sync_id"].as_str().unwrap().starts_with("sync_"));
    // Unknown platform, no token.
    let resp = http
        .post(format!("{}/admin/v1/platforms/nope/sync", h.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = http.post(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn an_incremental_sync_lists_only_what_changed() {
    incremental_sync_lists_only_what_changed(None).await;
}

/// The incremental and the callback-driven syncs on PostgreSQL, when it is configured.
#[tokio::test]
async fn incremental_and_callback_syncs_on_postgresql() {
    let Some(url) = crate::store::postgres_url(false) else {
        return;
    };
    for run in 0..2 {
        let schema = crate::store::fresh_schema();
        let store = crate::store::postgres(&url, &schema).await;
        match run {
            0 => incremental_sync_lists_only_what_changed(Some(store.clone())).await,
            _ => product_changed_callback_updates_just_that_product(Some(store.clone())).await,
        }
        store.close().await;
        crate::store::drop_schema(&url, &schema).await;
    }
}

async fn incremental_sync_lists_only_what_changed(store: Option<Store>) {
    let (mut h, syncer) = start_on("acme-rest", Duration::from_secs(60), store).await;
    let full = syncer.sync("acme-rest", false, &|_| {}).await.unwrap();
    assert_eq!(
        full.mode,
        Mode::Full,
        "no checkpoint yet: the first sync is full"
    );
    h.receive(PRODUCTS).await;
    let Sim::Rest(sim) = &h.sim else {
        unreachable!()
    };
    for id in ["prd_100011", "prd_100500"] {
        sim.edit_product(id, |p| p.name = format!("{} (new)", p.name))
            .await
            .unwrap();
    }
    let run = syncer.sync("acme-rest", false, &|_| {}).await.unwrap();
    assert_eq!(run.mode, Mode::Incremental);
    assert!(run.updated_since.is_some());
    assert_eq!((run.pages, run.items, run.sent), (1, 2, 2), "{run:?}");
    let last = sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == "/v2/products")
        .unwrap();
    assert!(last.query.contains("updated_since="), "{}", last.query);
    let deliveries = h.receive(2).await;
    let internal = h
        .internal_ids(&["prd_100011".into(), "prd_100500".into()])
        .await;
    let mut titles: Vec<(String, String)> = deliveries
        .iter()
        .map(|(_, e)| {
            (
                e["data"]["spu_id"].as_str().unwrap().to_string(),
                e["data"]["product"]["title"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    titles.sort();
    let mut expected = vec![
        (
            internal["prd_100011"].clone(),
            "Product 11 (new)".to_string(),
        ),
        (
            internal["prd_100500"].clone(),
            "Product 500 (new)".to_string(),
        ),
    ];
    expected.sort();
    assert_eq!(titles, expected);
}

#[tokio::test]
async fn a_product_changed_callback_updates_just_that_product() {
    product_changed_callback_updates_just_that_product(None).await;
}

async fn product_changed_callback_updates_just_that_product(store: Option<Store>) {
    let (mut h, syncer) = start_on("yanxuan", Duration::from_secs(60), store).await;
    syncer.sync("yanxuan", true, &|_| {}).await.unwrap();
    h.receive(PRODUCTS).await;
    let sim = h.channel();
    assert!(sim.edit_product("1000042", |s| s.name = "改名商品".into()));
    sim.reset();
    let url = format!("{}/callbacks/yanxuan/notify", h.url);
    let (status, body) = channel_sim::send_notification(
        &url,
        APP_KEY,
        APP_SECRET,
        "yanxuan.notification.item.changed",
        &[("itemId", "1000042"), ("notifyId", "n-42")],
        channel_sim::Spoil::None,
    )
    .await
    .unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"code":"200"}"#));
    let delivered = h.receive(1).await;
    let (_, event) = &delivered[0];
    let internal = h.internal_ids(&["1000042".into()]).await;
    assert_eq!(
        event["data"]["spu_id"].as_str(),
        Some(internal["1000042"].as_str())
    );
    assert_eq!(event["data"]["product"]["title"], "改名商品");
    assert_eq!(event["data"]["sync_id"], "callback");
    // Just that product was fetched, with product.get; nothing was listed.
    let methods: Vec<String> = h
        .channel()
        .requests()
        .into_iter()
        .map(|r| r.method)
        .collect();
    assert_eq!(methods, ["yanxuan.item.batch.get"]);
    // The next full sync finds nothing new to send.
    let run = syncer.sync("yanxuan", true, &|_| {}).await.unwrap();
    assert_eq!((run.sent, run.unchanged), (0, 1000));
    assert!(h.received.try_recv().is_err());
}

/// A platform that lists products only over bounded windows of time: the sync walks the
/// windows its file declares from their start to the moment it started, pages through each,
/// lands every product exactly once, and resumes in the middle of a window after a crash.
#[tokio::test]
async fn a_windowed_listing_is_walked_window_by_window_and_resumes() {
    let began = time::OffsetDateTime::now_utc();
    let (mut h, syncer) =
        start_with("acme-rest", Duration::from_millis(1), None, true, false).await;
    let reached = Arc::new(tokio::sync::Notify::new());
    let signal = reached.clone();
    let crashing = tokio::spawn(async move {
        let _ = syncer
            .sync("acme-rest", true, &move |run| {
                if run.pages == 5 {
                    signal.notify_one();
                }
            })
            .await;
    });
    reached.notified().await;
    crashing.abort();
    let _ = crashing.await;
    let before = h.list_calls();

    let other = h.other_instance(Duration::from_secs(60));
    let run = other.sync("acme-rest", false, &|_| {}).await.unwrap();
    assert_eq!(run.status, Status::Done, "{run:?}");
    assert_eq!((run.mode, run.resumed), (Mode::Full, 1));
    assert_eq!(run.items, PRODUCTS as u64, "{run:?}");
    assert_eq!(run.total, None, "a window's total is not the catalog's");
    let deliveries = h.receive(PRODUCTS).await;
    h.assert_whole_catalog(&deliveries).await;

    // What the simulator was asked: the first page of every window, in order.
    let Sim::Rest(sim) = &h.sim else {
        unreachable!()
    };
    let param = |query: &str, name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(|v| v.replace("%3A", ":"))
    };
    let lists: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == "/v2/products")
        .collect();
    assert!(before >= 5, "{before} pages read before the crash");
    let mut windows: Vec<(time::OffsetDateTime, time::OffsetDateTime)> = Vec::new();
    for r in &lists {
        let since = param(&r.query, "updated_since").expect("every request is windowed");
        let until = param(&r.query, "updated_before").expect("every request is windowed");
        let since = time::OffsetDateTime::parse(&since, &Rfc3339).unwrap();
        let until = time::OffsetDateTime::parse(&until, &Rfc3339).unwrap();
        assert!(until - since <= time::Duration::days(WINDOW_DAYS as i64));
        if param(&r.query, "cursor").is_none() && windows.last() != Some(&(since, until)) {
            windows.push((since, until));
        }
    }
    let start = time::OffsetDateTime::parse(CATALOG_START, &Rfc3339).unwrap();
    assert_eq!(windows.first().map(|w| w.0), Some(start));
    for pair in windows.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "windows follow each other: {pair:?}");
        assert_eq!(
            pair[0].1 - pair[0].0,
            time::Duration::days(WINDOW_DAYS as i64)
        );
    }
    // The last window ends when the run started: after this test began, before now.
    let end = windows.last().unwrap().1;
    assert!(end >= began - time::Duration::seconds(1) && end <= time::OffsetDateTime::now_utc());
    let expected = ((end - start).whole_seconds() as u64).div_ceil(WINDOW_DAYS * 86_400);
    assert_eq!(windows.len() as u64, expected);
    // Only the page in flight at the crash, if any, was read twice.
    let pages: HashSet<&str> = lists.iter().map(|r| r.query.as_str()).collect();
    assert!(
        lists.len() <= pages.len() + 1,
        "{} calls for {} pages",
        lists.len(),
        pages.len()
    );
}

/// Hashes are kept per target: a product center that subscribes later gets every product
/// once, while the one that had them gets nothing again.
#[tokio::test]
async fn a_target_added_later_gets_every_product_once() {
    let (mut h, syncer) = start_with("acme-rest", Duration::from_secs(60), None, false, true).await;
    // Before the mirror subscribed: a syncer that knows only the first product center.
    let first: Vec<_> = h
        .targets
        .iter()
        .filter(|t| t.name == "product_center")
        .cloned()
        .collect();
    let before = Syncer::new(
        h.plan.clone(),
        h.engine.clone(),
        Arc::new(first),
        settings(Duration::from_secs(60)),
    )
    .with_notify(h.notify.clone());
    let run = before.sync("acme-rest", true, &|_| {}).await.unwrap();
    assert_eq!((run.sent, run.unchanged), (1000, 0));
    let deliveries = h.receive(PRODUCTS).await;
    h.assert_whole_catalog(&deliveries).await;

    // Now both subscribe: only the mirror is sent the products, each once.
    let run = syncer.sync("acme-rest", true, &|_| {}).await.unwrap();
    assert_eq!(
        (run.items, run.sent, run.unchanged),
        (1000, 1000, 0),
        "{run:?}"
    );
    let mut mirrored = Vec::new();
    while mirrored.len() < PRODUCTS {
        let next = tokio::time::timeout(Duration::from_secs(30), h.mirrored.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} mirrored within 30s", mirrored.len()))
            .unwrap();
        mirrored.push(next);
    }
    h.assert_whole_catalog(&mirrored).await;
    // The same Idempotency-Keys as the first center got: same products, same versions.
    let first_keys: HashSet<&String> = deliveries.iter().map(|(k, _)| k).collect();
    assert!(mirrored.iter().all(|(k, _)| first_keys.contains(k)));

    // A third sync sends nothing to either.
    let run = syncer.sync("acme-rest", true, &|_| {}).await.unwrap();
    assert_eq!((run.sent, run.unchanged), (0, 1000));
    assert!(
        h.received.try_recv().is_err(),
        "the first center got products again"
    );
    assert!(
        h.mirrored.try_recv().is_err(),
        "the mirror got products again"
    );
}
