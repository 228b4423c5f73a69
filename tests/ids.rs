//! The id cache never answers what the store would not: pairs are answered from memory only
//! after the store returned them, "not mapped" is always asked again, and allocation stays a
//! store operation, so two instances sharing a store agree on every id.

use entrepot::ids::Ids;
use entrepot::store::{Store, StoreError, StoreOptions};

use crate::store::{drop_schema, fresh_schema, postgres, postgres_url};

const P: &str = "plat";

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Two instances (`a`, `b`: each its own pool and cache) over one store.
async fn two_instances_agree(a: &Ids, b: &Ids) {
    // A allocates; B, asking for the same platform ids and one more, sees A's ids.
    let first = a
        .to_internal_or_allocate(P, "spu", &ids(&["p1", "p2"]), 1)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    let seen = b
        .to_internal(P, "spu", &ids(&["p1", "p2", "p3"]))
        .await
        .unwrap();
    assert_eq!(seen.get("p1"), first.get("p1"));
    assert_eq!(seen.get("p2"), first.get("p2"));
    assert_eq!(seen.get("p3"), None);

    // p3 was "not mapped" for B a moment ago; A maps it now, and B sees it: absence is never
    // remembered.
    let p3 = a
        .to_internal_or_allocate(P, "spu", &ids(&["p3"]), 2)
        .await
        .unwrap();
    let again = b.to_internal(P, "spu", &ids(&["p3"])).await.unwrap();
    assert_eq!(again.get("p3"), p3.get("p3"));
    assert!(again.contains_key("p3"));

    // Both instances allocate the same new platform id at once: one internal id, the store's.
    let p4 = ids(&["p4"]);
    let (x, y) = tokio::join!(
        a.to_internal_or_allocate(P, "spu", &p4, 3),
        b.to_internal_or_allocate(P, "spu", &p4, 3),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.get("p4"), y.get("p4"));
    let stored = a
        .store()
        .to_internal(P, "spu", &ids(&["p4"]))
        .await
        .unwrap();
    assert_eq!(stored.get("p4"), x.get("p4"));

    // The reverse direction, from what A allocated.
    let internal_p1 = first["p1"].clone();
    let back = b
        .to_platform(P, "spu", std::slice::from_ref(&internal_p1))
        .await
        .unwrap();
    assert_eq!(back.get(&internal_p1).map(String::as_str), Some("p1"));

    // Recording: the store's uniqueness decides, whatever either cache holds.
    a.record(P, "order", "o-1", "po-1", 4).await.unwrap();
    a.record(P, "order", "o-1", "po-1", 4).await.unwrap();
    assert!(matches!(
        b.record(P, "order", "o-1", "po-2", 5).await,
        Err(StoreError::MappingConflict { .. })
    ));
    assert!(matches!(
        a.record(P, "order", "o-1", "po-2", 5).await,
        Err(StoreError::MappingConflict { .. })
    ));
    assert!(matches!(
        a.record(P, "order", "o-2", "po-1", 5).await,
        Err(StoreError::MappingConflict { .. })
    ));
    let orders = b
        .to_platform(P, "order", &ids(&["o-1", "o-2"]))
        .await
        .unwrap();
    assert_eq!(orders.get("o-1").map(String::as_str), Some("po-1"));
    assert_eq!(orders.get("o-2"), None);
    // Other platforms and kinds are other namespaces.
    assert!(
        b.to_internal("other", "spu", &ids(&["p1"]))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        b.to_internal(P, "sku", &ids(&["p1"]))
            .await
            .unwrap()
            .is_empty()
    );
}

/// With its store gone, a warm cache still answers the pairs the store gave it, and an id it
/// does not hold is an error, never "not mapped".
async fn store_down(cached: &Ids, store: &Store) {
    let known = cached
        .to_internal_or_allocate(P, "sku", &ids(&["s1"]), 1)
        .await
        .unwrap();
    let internal = known["s1"].clone();
    store.close().await;
    let again = cached.to_internal(P, "sku", &ids(&["s1"])).await.unwrap();
    assert_eq!(again.get("s1"), Some(&internal));
    let back = cached
        .to_platform(P, "sku", std::slice::from_ref(&internal))
        .await
        .unwrap();
    assert_eq!(back.get(&internal).map(String::as_str), Some("s1"));
    assert!(cached.to_internal(P, "sku", &ids(&["s2"])).await.is_err());
    assert!(
        cached
            .to_internal_or_allocate(P, "sku", &ids(&["s1", "s2"]), 2)
            .await
            .is_err()
    );
}

async fn sqlite(dir: &tempfile::TempDir) -> Store {
    Store::open(&StoreOptions {
        url: format!("sqlite://{}/ids.db", dir.path().display()),
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn two_instances_on_one_sqlite_file_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (sa, sb) = (sqlite(&dir).await, sqlite(&dir).await);
    two_instances_agree(&Ids::new(sa.clone(), 1000), &Ids::new(sb.clone(), 1000)).await;
    // And with the cache off on one side.
    let dir = tempfile::tempdir().unwrap();
    let (sa, sb) = (sqlite(&dir).await, sqlite(&dir).await);
    two_instances_agree(&Ids::new(sa, 1000), &Ids::new(sb, 0)).await;
}

#[tokio::test]
async fn two_instances_sharing_postgresql_agree() {
    let Some(url) = postgres_url(false) else {
        return;
    };
    let schema = fresh_schema();
    let (sa, sb) = (postgres(&url, &schema).await, postgres(&url, &schema).await);
    two_instances_agree(&Ids::new(sa.clone(), 1000), &Ids::new(sb.clone(), 1000)).await;
    sa.close().await;
    sb.close().await;
    drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn a_warm_cache_answers_only_what_the_store_gave() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    store_down(&Ids::new(store.clone(), 1000), &store).await;
}

#[tokio::test]
async fn without_a_cache_every_answer_comes_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    let cold = Ids::new(store.clone(), 0);
    cold.to_internal_or_allocate(P, "sku", &ids(&["s1"]), 1)
        .await
        .unwrap();
    assert_eq!(cold.cached(), 0);
    store.close().await;
    assert!(cold.to_internal(P, "sku", &ids(&["s1"])).await.is_err());
}

/// The cache is bounded: far more pairs than its capacity leave it at about its capacity.
#[tokio::test]
async fn the_cache_stays_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    let small = Ids::new(store, 100);
    let many: Vec<String> = (0..1000).map(|i| format!("p{i}")).collect();
    let got = small
        .to_internal_or_allocate(P, "spu", &many, 1)
        .await
        .unwrap();
    assert_eq!(got.len(), 1000);
    // Two directions, each bounded by 100 (quick_cache may hold slightly more while
    // admitting; never ten times more).
    assert!(small.cached() <= 2 * 110, "{}", small.cached());
    // Every answer is still right after evictions.
    let again = small.to_internal(P, "spu", &many).await.unwrap();
    assert_eq!(again, got);
}
