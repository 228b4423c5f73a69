//! The store conformance suite: written once, run against SQLite and PostgreSQL.
//!
//! PostgreSQL runs when `ENTREPOT_TEST_POSTGRES_URL` is set (`.ci/run` sets it to this
//! machine's server); each run uses a fresh schema.

use std::collections::HashSet;

use entrepot::store::{
    CredentialPut, IdemBegin, InboxOutcome, NewDelivery, NewEvent, Store, StoreError, StoreOptions,
};
use serde_json::{Map, Value, json};

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/entrepot.db", dir.path().display());
    let store = Store::open(&StoreOptions {
        url,
        ..Default::default()
    })
    .await
    .unwrap();
    (store, dir)
}

pub fn postgres_url(announce: bool) -> Option<String> {
    let url = std::env::var("ENTREPOT_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() && announce {
        // Written past the test harness's capture, so it shows in a normal `cargo test` run.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: the PostgreSQL half of the store suite (set ENTREPOT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test to run it)"
        );
    }
    url
}

pub async fn postgres(url: &str, schema: &str) -> Store {
    Store::open(&StoreOptions {
        url: url.into(),
        schema: Some(schema.into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

pub fn fresh_schema() -> String {
    format!("entrepot_test_{}", uuid::Uuid::new_v4().simple())
}

pub async fn drop_schema(url: &str, schema: &str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

#[tokio::test]
async fn conformance_sqlite() {
    let (store, _dir) = sqlite().await;
    conformance(&store).await;
}

#[tokio::test]
async fn conformance_postgres() {
    let Some(url) = postgres_url(true) else {
        return;
    };
    let schema = fresh_schema();
    let store = postgres(&url, &schema).await;
    conformance(&store).await;
    store.close().await;
    drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn concurrent_claims_sqlite() {
    let (store, _dir) = sqlite().await;
    // Two handles on one pool stand for two tasks; SQLite serves one instance.
    concurrent_claims(&store, &store.clone()).await;
}

#[tokio::test]
async fn concurrent_claims_postgres_two_instances() {
    let Some(url) = postgres_url(false) else {
        return;
    };
    let schema = fresh_schema();
    // Two pools stand for two gateway instances.
    let a = postgres(&url, &schema).await;
    let b = postgres(&url, &schema).await;
    concurrent_claims(&a, &b).await;
    a.close().await;
    b.close().await;
    drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn survives_reopen_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/entrepot.db", dir.path().display());
    let opts = StoreOptions {
        url,
        ..Default::default()
    };
    let store = Store::open(&opts).await.unwrap();
    store.map_put("p", "sku", "sku_1", "P1", 1).await.unwrap();
    store.outbox_enqueue(&[event("e1", "t")], 1).await.unwrap();
    // Claimed, then the process "dies" without completing.
    assert_eq!(
        store
            .outbox_claim("dead-instance", 10, 1_000, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    store.close().await;
    drop(store);
    let store = Store::open(&opts).await.unwrap();
    assert_eq!(
        store
            .to_platform("p", "sku", &["sku_1".into()])
            .await
            .unwrap()["sku_1"],
        "P1"
    );
    // Within the lease nobody gets it; after it, it is claimable again.
    assert!(
        store
            .outbox_claim("new", 500, 1_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store.outbox_claim("new", 1_010, 1_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
}

#[tokio::test]
async fn corrupt_sqlite_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("entrepot.db");
    std::fs::write(
        &file,
        b"this is not a database, just some text that fills the header page....",
    )
    .unwrap();
    let err = Store::open(&StoreOptions {
        url: format!("sqlite://{}", file.display()),
        ..Default::default()
    })
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{text}");
    assert!(
        text.contains("not a database") && text.contains("help:"),
        "{text}"
    );
}

#[tokio::test]
async fn unreachable_postgres_is_a_clear_error() {
    // Port 1 on loopback: nothing listens there.
    let err = Store::open(&StoreOptions {
        url: "postgres://u:hunter2@127.0.0.1:1/db".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("postgres://u:***@127.0.0.1:1/db"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("cannot reach the database"), "{text}");
}

fn event(id: &str, target: &str) -> NewEvent {
    NewEvent {
        event_id: id.into(),
        target: target.into(),
        event_type: "product.changed".into(),
        payload: json!({"id": id}).to_string(),
        idempotency_key: format!("idem-{id}"),
        max_attempts: 3,
    }
}

fn delivery(key: Option<&str>, verified: bool) -> NewDelivery {
    NewDelivery {
        platform: "p".into(),
        route: "/p/notify".into(),
        dedupe_key: key.map(str::to_string),
        headers: "{}".into(),
        body: b"{\"a\":1}".to_vec(),
        body_bytes: 7,
        verified,
        rejection: (!verified).then(|| "the signature does not match".into()),
        event_type: Some("product.changed".into()),
        received_at: 5,
        replay: None,
    }
}

async fn conformance(s: &Store) {
    s.ping().await.unwrap();

    // Key mappings: unique both ways, batch lookups, allocation, paging, owners.
    s.map_put("p", "sku", "sku_a", "A", 1).await.unwrap();
    s.map_put("p", "sku", "sku_a", "A", 2).await.unwrap(); // same pair again: fine
    assert!(matches!(
        s.map_put("p", "sku", "sku_a", "B", 3).await,
        Err(StoreError::MappingConflict { .. })
    ));
    assert!(matches!(
        s.map_put("p", "sku", "sku_z", "A", 3).await,
        Err(StoreError::MappingConflict { .. })
    ));
    s.map_put("q", "sku", "sku_a", "QA", 1).await.unwrap(); // another platform may share the internal id
    let ids: Vec<String> = vec!["sku_a".into(), "sku_missing".into()];
    let to_p = s.to_platform("p", "sku", &ids).await.unwrap();
    assert_eq!(to_p.len(), 1);
    assert_eq!(to_p["sku_a"], "A");
    assert_eq!(
        s.to_internal("p", "sku", &["A".into()]).await.unwrap()["A"],
        "sku_a"
    );
    let many: Vec<String> = (0..450).map(|i| format!("P{i}")).collect();
    let allocated = s
        .to_internal_or_allocate("p", "spu", &many, 10)
        .await
        .unwrap();
    assert_eq!(allocated.len(), 450);
    assert!(allocated.values().all(|v| v.starts_with("spu_")));
    assert_eq!(
        allocated.values().collect::<HashSet<_>>().len(),
        450,
        "internal ids must be distinct"
    );
    let again = s
        .to_internal_or_allocate("p", "spu", &many, 11)
        .await
        .unwrap();
    assert_eq!(again, allocated, "allocation is stable");
    let page1 = s.mappings("p", "spu", None, 100).await.unwrap();
    let page2 = s
        .mappings("p", "spu", Some(&page1.last().unwrap().0), 1000)
        .await
        .unwrap();
    assert_eq!(page1.len() + page2.len(), 450);
    assert!(page1.last().unwrap().0 < page2[0].0);
    assert_eq!(
        s.owners("sku", "sku_a").await.unwrap(),
        vec![("p".into(), "A".into()), ("q".into(), "QA".into())]
    );

    // Idempotency: first caller works, a concurrent one waits, later ones get the answer.
    assert_eq!(
        s.idem_begin("k1", 100, 1_000).await.unwrap(),
        IdemBegin::New
    );
    assert_eq!(
        s.idem_begin("k1", 101, 1_000).await.unwrap(),
        IdemBegin::Pending
    );
    s.idem_finish("k1", "{\"ok\":true}").await.unwrap();
    assert_eq!(
        s.idem_begin("k1", 102, 1_000).await.unwrap(),
        IdemBegin::Done("{\"ok\":true}".into())
    );
    // After expiry the key is free again; an abandoned key too.
    assert_eq!(
        s.idem_begin("k1", 1_200, 1_000).await.unwrap(),
        IdemBegin::New
    );
    s.idem_abandon("k1").await.unwrap();
    assert_eq!(
        s.idem_begin("k1", 1_201, 1_000).await.unwrap(),
        IdemBegin::New
    );

    // Inbox: a delivery and its events in one go; the same dedupe key again adds nothing.
    let first = s
        .inbox_record(&delivery(Some("n-1"), true), &[event("ev-1", "center")], 20)
        .await
        .unwrap();
    let InboxOutcome::Stored { id } = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        s.inbox_record(
            &delivery(Some("n-1"), true),
            &[event("ev-1b", "center")],
            21
        )
        .await
        .unwrap(),
        InboxOutcome::Duplicate { id }
    );
    // Rejected deliveries are recorded too, never count as the key's first sighting.
    let forged = s
        .inbox_record(&delivery(Some("n-2"), false), &[], 22)
        .await
        .unwrap();
    assert!(matches!(forged, InboxOutcome::Stored { .. }));
    assert!(matches!(
        s.inbox_record(&delivery(Some("n-2"), true), &[], 23)
            .await
            .unwrap(),
        InboxOutcome::Stored { .. }
    ));
    let recent = s.inbox_recent(Some("p"), 10).await.unwrap();
    // The resend of n-1 is listed too, as a duplicate of the first.
    assert_eq!(recent.len(), 4);
    assert_eq!(recent[2].duplicate_of, Some(id));
    assert_eq!(recent[3].duplicate_of, None);
    assert!(
        !recent[1].verified
            && recent[1].rejection.as_deref() == Some("the signature does not match")
    );

    // A replay key is recorded with its delivery: a new delivery reusing it is a replay, a
    // resend of the stored delivery (same dedupe key) is still a duplicate.
    let guarded = |key: &str, at: i64| NewDelivery {
        replay: Some(("p:nonce-1".into(), 1_000)),
        received_at: at,
        ..delivery(Some(key), true)
    };
    let first = s.inbox_record(&guarded("g-1", 10), &[], 10).await.unwrap();
    assert!(matches!(first, InboxOutcome::Stored { .. }));
    assert_eq!(
        s.inbox_record(&guarded("g-2", 11), &[event("ev-replayed", "center")], 11)
            .await
            .unwrap(),
        InboxOutcome::Replayed
    );
    assert!(matches!(
        s.inbox_record(&guarded("g-1", 12), &[], 12).await.unwrap(),
        InboxOutcome::Duplicate { .. }
    ));
    // After its expiry the key may be used again.
    assert!(matches!(
        s.inbox_record(&guarded("g-3", 1_000), &[], 1_000)
            .await
            .unwrap(),
        InboxOutcome::Stored { .. }
    ));

    // Outbox: claim, fail with retry, claim again later, complete; dead letters and replay.
    let claimed = s.outbox_claim("i1", 30, 1_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event_id, "ev-1");
    assert_eq!(claimed[0].inbox_id, Some(id));
    assert_eq!(claimed[0].attempts, 1);
    assert!(
        s.outbox_claim("i2", 31, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased rows are not claimable"
    );
    assert!(
        s.outbox_fail(claimed[0].id, "i1", "target answered 503", Some(100))
            .await
            .unwrap()
    );
    assert!(
        s.outbox_claim("i2", 99, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let retry = s.outbox_claim("i2", 100, 1_000, 10).await.unwrap();
    assert_eq!(retry[0].attempts, 2);
    assert_eq!(retry[0].last_error.as_deref(), Some("target answered 503"));
    assert!(
        !s.outbox_complete(retry[0].id, "i1", 101).await.unwrap(),
        "a lost lease cannot complete"
    );
    assert!(s.outbox_complete(retry[0].id, "i2", 101).await.unwrap());
    assert_eq!(
        s.outbox_get(retry[0].id)
            .await
            .unwrap()
            .unwrap()
            .delivered_at,
        Some(101)
    );
    assert!(
        s.outbox_claim("i3", 10_000, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "delivered rows stay delivered"
    );

    // A crash between claim and completion: the lease runs out and another owner gets the row.
    s.outbox_enqueue(&[event("ev-crash", "center")], 150)
        .await
        .unwrap();
    let held = s.outbox_claim("crashed", 150, 1_000, 10).await.unwrap();
    assert_eq!(held.len(), 1);
    assert!(
        s.outbox_claim("survivor", 1_149, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "lease still held"
    );
    let taken = s.outbox_claim("survivor", 1_150, 1_000, 10).await.unwrap();
    assert_eq!((taken.len(), taken[0].attempts), (1, 2));
    assert!(
        !s.outbox_complete(taken[0].id, "crashed", 1_151)
            .await
            .unwrap(),
        "the old owner lost it"
    );
    assert!(
        s.outbox_complete(taken[0].id, "survivor", 1_151)
            .await
            .unwrap()
    );

    s.outbox_enqueue(&[event("ev-2", "center"), event("ev-3", "center")], 200)
        .await
        .unwrap();
    for row in s.outbox_claim("i1", 200, 1_000, 10).await.unwrap() {
        assert!(s.outbox_fail(row.id, "i1", "gave up", None).await.unwrap());
    }
    let dead = s.dead_letters(10).await.unwrap();
    assert_eq!(
        dead.iter().map(|r| r.event_id.as_str()).collect::<Vec<_>>(),
        vec!["ev-2", "ev-3"]
    );
    assert_eq!(s.replay_dead(Some(dead[0].id), 300).await.unwrap(), 1);
    assert_eq!(s.replay_dead(None, 300).await.unwrap(), 1);
    let replayed = s.outbox_claim("i1", 300, 1_000, 10).await.unwrap();
    assert_eq!(replayed.len(), 2);
    assert!(replayed.iter().all(|r| r.attempts == 1 && !r.dead));
    // Enqueuing an event id twice keeps one.
    s.outbox_enqueue(&[event("ev-2", "center")], 400)
        .await
        .unwrap();
    assert!(
        s.outbox_claim("i9", 400, 1_000, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Flows: optimistic versions.
    assert_eq!(
        s.flow_save(
            "order-1",
            "order_saga",
            &json!({"step": "created"}),
            None,
            1
        )
        .await
        .unwrap(),
        1
    );
    assert!(matches!(
        s.flow_save("order-1", "order_saga", &json!({}), None, 2)
            .await,
        Err(StoreError::Conflict { found: Some(1), .. })
    ));
    assert_eq!(
        s.flow_save(
            "order-1",
            "order_saga",
            &json!({"step": "paid"}),
            Some(1),
            3
        )
        .await
        .unwrap(),
        2
    );
    assert!(matches!(
        s.flow_save(
            "order-1",
            "order_saga",
            &json!({"step": "stale"}),
            Some(1),
            4
        )
        .await,
        Err(StoreError::Conflict {
            expected: Some(1),
            found: Some(2),
            ..
        })
    ));
    let f = s.flow_get("order-1").await.unwrap().unwrap();
    assert_eq!(
        (f.kind.as_str(), f.state["step"].as_str(), f.version),
        ("order_saga", Some("paid"), 2)
    );

    // Flows with work left: due times and leases.
    assert!(
        s.flows_due("order_saga", 100, 10).await.unwrap().is_empty(),
        "no due time yet"
    );
    s.flow_save_due("order-2", "order_saga", &json!({}), None, 10, Some(50))
        .await
        .unwrap();
    s.flow_save_due("order-3", "order_saga", &json!({}), None, 10, Some(20))
        .await
        .unwrap();
    s.flow_save_due("sync-1", "product_sync", &json!({}), None, 10, Some(20))
        .await
        .unwrap();
    assert_eq!(
        s.flows_due("order_saga", 30, 10).await.unwrap(),
        ["order-3"]
    );
    assert_eq!(
        s.flows_due("order_saga", 60, 10).await.unwrap(),
        ["order-3", "order-2"],
        "the longest-waiting first"
    );
    assert_eq!(s.flows_unfinished("order_saga").await.unwrap(), 2);
    // One holder at a time; the holder renews; a lease that ran out is taken over.
    assert!(s.flow_lease("order-3", "a", 60, 100).await.unwrap());
    assert!(!s.flow_lease("order-3", "b", 61, 100).await.unwrap());
    assert!(s.flow_lease("order-3", "a", 62, 100).await.unwrap());
    assert_eq!(
        s.flows_due("order_saga", 100, 10).await.unwrap(),
        ["order-2"]
    );
    assert!(s.flow_lease("order-3", "b", 162, 100).await.unwrap());
    assert!(!s.flow_lease("order-3", "a", 163, 100).await.unwrap());
    s.flow_release("order-3", "a").await.unwrap();
    assert!(
        !s.flow_lease("order-3", "c", 164, 100).await.unwrap(),
        "only the holder releases"
    );
    s.flow_release("order-3", "b").await.unwrap();
    assert!(s.flow_lease("order-3", "c", 165, 100).await.unwrap());
    // Finished: no due time, never due again; the version still guards the state.
    let v = s.flow_get("order-2").await.unwrap().unwrap().version;
    assert!(matches!(
        s.flow_save_due("order-2", "order_saga", &json!({}), Some(v + 1), 70, None)
            .await,
        Err(StoreError::Conflict { .. })
    ));
    s.flow_save_due(
        "order-2",
        "order_saga",
        &json!({"done": true}),
        Some(v),
        70,
        None,
    )
    .await
    .unwrap();
    assert!(
        !s.flows_due("order_saga", 10_000, 10)
            .await
            .unwrap()
            .contains(&"order-2".to_string())
    );
    assert_eq!(s.flows_unfinished("order_saga").await.unwrap(), 1);

    // Credentials: versioned compare-and-set.
    let creds = |v: &str| -> Map<String, Value> {
        [("app_secret".to_string(), json!(v))].into_iter().collect()
    };
    assert_eq!(
        s.credentials_put("p", 5, &creds("five"), 1).await.unwrap(),
        CredentialPut::Accepted
    );
    assert_eq!(
        s.credentials_put("p", 4, &creds("four"), 2).await.unwrap(),
        CredentialPut::Stale { current: 5 }
    );
    assert_eq!(
        s.credentials_put("p", 5, &creds("five again"), 2)
            .await
            .unwrap(),
        CredentialPut::Stale { current: 5 }
    );
    assert_eq!(
        s.credentials_put("p", 6, &creds("six"), 3).await.unwrap(),
        CredentialPut::Accepted
    );
    let c = s.credentials_get("p").await.unwrap().unwrap();
    assert_eq!(
        (c.version, c.values["app_secret"].as_str()),
        (6, Some("six"))
    );
    // The set the last push replaced, and when, for the rotation window.
    let previous = c.previous.clone().unwrap();
    assert_eq!((previous.values, previous.rotated_at), (creds("five"), 3));
    assert!(
        !format!("{c:?}").contains("six") && !format!("{c:?}").contains("five"),
        "credentials must not print their values"
    );
    // A first push replaces no pushed set: the values in force came from elsewhere.
    s.credentials_put("q", 1, &creds("one"), 7).await.unwrap();
    let first = s
        .credentials_get("q")
        .await
        .unwrap()
        .unwrap()
        .previous
        .unwrap();
    assert_eq!((first.values, first.rotated_at), (Map::new(), 7));
    assert!(s.credentials_get("nobody").await.unwrap().is_none());

    // Replay guard: a key is refused until it expires.
    assert!(s.replay_first_sighting("p:msg-1", 10, 100).await.unwrap());
    assert!(!s.replay_first_sighting("p:msg-1", 50, 150).await.unwrap());
    assert!(s.replay_first_sighting("p:msg-1", 100, 200).await.unwrap());
    assert!(
        s.prune(1_000_000, &entrepot::store::Retention::default())
            .await
            .unwrap()
            >= 1
    );
}

async fn concurrent_claims(a: &Store, b: &Store) {
    let events: Vec<NewEvent> = (0..200)
        .map(|i| event(&format!("c-{i}"), "center"))
        .collect();
    a.outbox_enqueue(&events, 1).await.unwrap();
    let claim_all = |store: Store, owner: &'static str| async move {
        let mut mine = Vec::new();
        loop {
            let batch = store.outbox_claim(owner, 10, 60_000, 7).await.unwrap();
            if batch.is_empty() {
                return mine;
            }
            for row in batch {
                mine.push(row.event_id.clone());
                assert!(store.outbox_complete(row.id, owner, 11).await.unwrap());
            }
        }
    };
    let (x, y) = tokio::join!(
        tokio::spawn(claim_all(a.clone(), "instance-a")),
        tokio::spawn(claim_all(b.clone(), "instance-b"))
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let xs: HashSet<&String> = x.iter().collect();
    let ys: HashSet<&String> = y.iter().collect();
    assert!(xs.is_disjoint(&ys), "a row was claimed by both");
    assert_eq!(x.len() + y.len(), 200, "every row delivered exactly once");
    assert_eq!(xs.len(), x.len());
}

/// The migration versions recorded in a store, read over a connection of its own.
async fn recorded_versions(pool: &sqlx::AnyPool) -> Vec<i64> {
    sqlx::query_scalar::<_, i64>("SELECT version FROM entrepot_migrations ORDER BY version")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Opens `options` three times at once (three instances starting together); every open must
/// succeed.
async fn open_three_at_once(options: &StoreOptions) -> Vec<Store> {
    let opens = (0..3).map(|_| {
        let options = options.clone();
        tokio::spawn(async move { Store::open(&options).await })
    });
    let mut stores = Vec::new();
    for (i, r) in futures::future::join_all(opens)
        .await
        .into_iter()
        .enumerate()
    {
        match r.unwrap() {
            Ok(s) => stores.push(s),
            Err(e) => panic!("instance {i} did not start: {e}"),
        }
    }
    stores
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn three_instances_start_together_on_a_fresh_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/fresh/entrepot.db", dir.path().display());
    let stores = open_three_at_once(&StoreOptions {
        url: url.clone(),
        ..Default::default()
    })
    .await;
    // The reference: the versions one instance alone records on another fresh file.
    let alone = format!("sqlite://{}/alone.db", dir.path().display());
    Store::open(&StoreOptions {
        url: alone.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    sqlx::any::install_default_drivers();
    let expected = recorded_versions(&sqlx::AnyPool::connect(&alone).await.unwrap()).await;
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    assert_eq!(recorded_versions(&pool).await, expected);
    for s in &stores {
        s.map_put("p", "sku", "a", "A", 1).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn three_instances_start_together_on_a_fresh_postgres_schema() {
    let Some(url) = postgres_url(false) else {
        return;
    };
    let schema = fresh_schema();
    let stores = open_three_at_once(&StoreOptions {
        url: url.clone(),
        schema: Some(schema.clone()),
        ..Default::default()
    })
    .await;
    let reference = fresh_schema();
    postgres(&url, &reference).await.close().await;
    sqlx::any::install_default_drivers();
    let versions_in = |schema: String| {
        let url = url.clone();
        async move {
            let pool = sqlx::any::AnyPoolOptions::new()
                .after_connect(move |conn, _| {
                    let set = format!("SET search_path TO \"{schema}\"");
                    Box::pin(async move {
                        sqlx::Executor::execute(conn, set.as_str()).await?;
                        Ok(())
                    })
                })
                .connect(&url)
                .await
                .unwrap();
            let v = recorded_versions(&pool).await;
            pool.close().await;
            v
        }
    };
    let expected = versions_in(reference.clone()).await;
    assert!(!expected.is_empty());
    assert_eq!(versions_in(schema.clone()).await, expected);
    for s in &stores {
        s.map_put("p", "sku", "a", "A", 1).await.unwrap();
        s.close().await;
    }
    drop_schema(&url, &schema).await;
    drop_schema(&url, &reference).await;
}

// ---------------------------------------------------------------- concurrent deliveries

#[tokio::test]
async fn concurrent_deliveries_sqlite() {
    let (store, _dir) = sqlite().await;
    concurrent_deliveries(&store).await;
}

#[tokio::test]
async fn concurrent_deliveries_postgres() {
    let Some(url) = postgres_url(false) else {
        return;
    };
    let schema = fresh_schema();
    let store = postgres(&url, &schema).await;
    concurrent_deliveries(&store).await;
    store.close().await;
    drop_schema(&url, &schema).await;
}

/// 200 deliveries at once (on the test's single-threaded runtime they are all queued before
/// the store's writer runs, so they share transactions): 120 dedupe keys, each sent once
/// more by 80 of them; 10 refused deliveries carrying taken keys; two new deliveries reusing
/// one replay key. Every delivery gets the answer it would get alone.
async fn concurrent_deliveries(s: &Store) {
    let keyed = |i: usize| NewDelivery {
        received_at: 100,
        ..delivery(Some(&format!("c-{}", i % 120)), true)
    };
    let mut calls: Vec<(NewDelivery, Vec<NewEvent>)> = (0..200)
        .map(|i| (keyed(i), vec![event(&format!("ev-c-{i}"), "center")]))
        .collect();
    for i in 0..10 {
        calls.push((delivery(Some(&format!("c-{i}")), false), vec![]));
    }
    for key in ["r-1", "r-2"] {
        let guarded = NewDelivery {
            replay: Some(("p:shared-nonce".into(), 10_000)),
            ..delivery(Some(key), true)
        };
        calls.push((guarded, vec![event(&format!("ev-{key}"), "center")]));
    }
    let outcomes = futures::future::join_all(
        calls
            .iter()
            .map(|(d, events)| s.inbox_record(d, events, 100)),
    )
    .await;
    let outcomes: Vec<InboxOutcome> = outcomes.into_iter().map(Result::unwrap).collect();

    // Per key: one stored delivery, the others its duplicates.
    let mut stored_of_key = std::collections::HashMap::new();
    for (i, o) in outcomes.iter().take(200).enumerate() {
        if let InboxOutcome::Stored { id } = o {
            assert!(
                stored_of_key.insert(i % 120, *id).is_none(),
                "key c-{} stored twice",
                i % 120
            );
        }
    }
    assert_eq!(stored_of_key.len(), 120);
    for (i, o) in outcomes.iter().take(200).enumerate() {
        let first = stored_of_key[&(i % 120)];
        assert!(
            *o == InboxOutcome::Stored { id: first } || *o == InboxOutcome::Duplicate { id: first },
            "delivery {i}: {o:?}, the key's stored delivery is {first}"
        );
    }
    let duplicates = outcomes
        .iter()
        .filter(|o| matches!(o, InboxOutcome::Duplicate { .. }))
        .count();
    assert_eq!(duplicates, 80);
    // Refused ones are recorded, never duplicates.
    assert!(
        outcomes[200..210]
            .iter()
            .all(|o| matches!(o, InboxOutcome::Stored { .. }))
    );
    // One replay key, two new deliveries: one stored, one a replay.
    let replay_pair = &outcomes[210..212];
    assert_eq!(
        replay_pair
            .iter()
            .filter(|o| **o == InboxOutcome::Replayed)
            .count(),
        1,
        "{replay_pair:?}"
    );

    // The rows: 120 + 80 duplicates + 10 refused + 1 of the replay pair.
    let rows = s.inbox_recent(Some("p"), 1_000).await.unwrap();
    assert_eq!(rows.len(), 211);
    assert_eq!(rows.iter().filter(|r| r.duplicate_of.is_some()).count(), 80);
    assert_eq!(rows.iter().filter(|r| !r.verified).count(), 10);
    for r in rows.iter().filter(|r| r.duplicate_of.is_some()) {
        let key: usize = r.dedupe_key.as_deref().unwrap()[2..].parse().unwrap();
        assert_eq!(r.duplicate_of, Some(stored_of_key[&key]), "{r:?}");
    }
    // One event per stored verified delivery, tied to it: 120 + 1.
    let events = s.outbox_claim("check", 1_000, 1_000, 1_000).await.unwrap();
    assert_eq!(events.len(), 121);
    let mut stored_ids: HashSet<i64> = stored_of_key.values().copied().collect();
    for o in &outcomes[210..212] {
        if let InboxOutcome::Stored { id } = o {
            stored_ids.insert(*id);
        }
    }
    let event_owners: HashSet<i64> = events.iter().map(|e| e.inbox_id.unwrap()).collect();
    assert_eq!(event_owners, stored_ids);
}

#[tokio::test]
async fn one_failing_delivery_spares_the_others_sqlite() {
    let (store, dir) = sqlite().await;
    let file = format!("sqlite://{}/nested/entrepot.db", dir.path().display());
    let pool = sqlx::SqlitePool::connect(&file).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER poison BEFORE INSERT ON inbox WHEN NEW.route = '/poison' \
         BEGIN SELECT RAISE(ABORT, 'poisoned delivery'); END",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    one_failing_delivery_spares_the_others(&store).await;
}

#[tokio::test]
async fn one_failing_delivery_spares_the_others_postgres() {
    let Some(url) = postgres_url(false) else {
        return;
    };
    let schema = fresh_schema();
    let store = postgres(&url, &schema).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    for sql in [
        format!(
            "CREATE FUNCTION \"{schema}\".poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.route = '/poison' THEN RAISE EXCEPTION 'poisoned delivery'; END IF; RETURN NEW; END $$"
        ),
        format!(
            "CREATE TRIGGER poison BEFORE INSERT ON \"{schema}\".inbox FOR EACH ROW EXECUTE FUNCTION \"{schema}\".poison()"
        ),
    ] {
        sqlx::query(&sql).execute(&pool).await.unwrap();
    }
    pool.close().await;
    one_failing_delivery_spares_the_others(&store).await;
    store.close().await;
    drop_schema(&url, &schema).await;
}

/// 50 deliveries at once, 3 of which the database refuses (a trigger): those 3 get an error,
/// the 47 others are stored with their events.
async fn one_failing_delivery_spares_the_others(s: &Store) {
    let calls: Vec<(NewDelivery, Vec<NewEvent>)> = (0..50)
        .map(|i| {
            let d = NewDelivery {
                route: if [7, 20, 41].contains(&i) {
                    "/poison".into()
                } else {
                    "/p/notify".into()
                },
                ..delivery(Some(&format!("f-{i}")), true)
            };
            (d, vec![event(&format!("ev-f-{i}"), "center")])
        })
        .collect();
    let outcomes = futures::future::join_all(
        calls
            .iter()
            .map(|(d, events)| s.inbox_record(d, events, 100)),
    )
    .await;
    for (i, o) in outcomes.iter().enumerate() {
        if [7, 20, 41].contains(&i) {
            let e = o.as_ref().unwrap_err().to_string();
            assert!(e.contains("poisoned delivery"), "delivery {i}: {e}");
        } else {
            assert!(
                matches!(o, Ok(InboxOutcome::Stored { .. })),
                "delivery {i}: {o:?}"
            );
        }
    }
    assert_eq!(s.inbox_recent(Some("p"), 1_000).await.unwrap().len(), 47);
    assert_eq!(
        s.outbox_claim("check", 1_000, 1_000, 1_000)
            .await
            .unwrap()
            .len(),
        47
    );
    // The same deliveries alone: the refused one fails, the next one is stored.
    let poisoned = NewDelivery {
        route: "/poison".into(),
        ..delivery(Some("f-alone"), true)
    };
    assert!(s.inbox_record(&poisoned, &[], 100).await.is_err());
    assert!(matches!(
        s.inbox_record(&delivery(Some("f-alone"), true), &[], 100)
            .await
            .unwrap(),
        InboxOutcome::Stored { .. }
    ));
}

// ---------------------------------------------------------------- outbox backlog

#[tokio::test]
async fn outbox_backlog_sqlite() {
    let (store, _dir) = sqlite().await;
    outbox_backlog(&store).await;
}

#[tokio::test]
async fn outbox_backlog_postgres() {
    let Some(url) = postgres_url(false) else {
        return;
    };
    let schema = fresh_schema();
    let store = postgres(&url, &schema).await;
    outbox_backlog(&store).await;
    store.close().await;
    drop_schema(&url, &schema).await;
}

/// Per target: pending (due, backing off or claimed), dead, and the oldest pending event's
/// storage time; delivered events count nowhere and a target with nothing undelivered is
/// absent. The expected rows are worked out by hand from the steps below.
async fn outbox_backlog(s: &Store) {
    use entrepot::store::Backlog;
    let row = |target: &str, pending, dead, oldest| Backlog {
        target: target.into(),
        pending,
        dead,
        oldest_pending_at: oldest,
    };
    assert_eq!(s.outbox_backlog().await.unwrap(), vec![]);
    s.outbox_enqueue(&[event("a1", "a")], 100).await.unwrap();
    s.outbox_enqueue(&[event("a2", "a")], 200).await.unwrap();
    s.outbox_enqueue(&[event("b1", "b")], 300).await.unwrap();
    s.outbox_enqueue(&[event("c1", "c")], 50).await.unwrap();
    let claimed = s.outbox_claim("i", 400, 1_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 4);
    let id = |event: &str| claimed.iter().find(|r| r.event_id == event).unwrap().id;
    assert!(s.outbox_complete(id("b1"), "i", 410).await.unwrap());
    assert!(s.outbox_fail(id("c1"), "i", "gave up", None).await.unwrap());
    assert!(
        s.outbox_fail(id("a1"), "i", "busy", Some(5_000))
            .await
            .unwrap()
    );
    // a2 stays claimed: being delivered is pending too.
    s.outbox_enqueue(&[event("d1", "d")], 600).await.unwrap();
    s.outbox_enqueue(&[event("d2", "d")], 700).await.unwrap();
    let claimed = s.outbox_claim("i", 800, 1_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    let id = |event: &str| claimed.iter().find(|r| r.event_id == event).unwrap().id;
    assert!(s.outbox_fail(id("d1"), "i", "gave up", None).await.unwrap());
    assert!(
        s.outbox_fail(id("d2"), "i", "busy", Some(9_000))
            .await
            .unwrap()
    );
    assert_eq!(
        s.outbox_backlog().await.unwrap(),
        vec![
            row("a", 2, 0, Some(100)),
            row("c", 0, 1, None),
            row("d", 1, 1, Some(700)),
        ]
    );
    // Replayed dead letters are pending again, with the time they were first stored.
    assert_eq!(s.replay_dead(None, 900).await.unwrap(), 2);
    assert_eq!(
        s.outbox_backlog().await.unwrap(),
        vec![
            row("a", 2, 0, Some(100)),
            row("c", 1, 0, Some(50)),
            row("d", 2, 0, Some(600)),
        ]
    );
}
