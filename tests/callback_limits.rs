//! Hostile callbacks are refused cheaply (issue 10, point 2): per-route limits on body size,
//! field count and nesting depth, refused deliveries recorded without their body, and
//! retention of the inbox.

use entrepot::store::{InboxOutcome, NewDelivery, NewEvent, Retention};
use sqlx::Row;

use crate::callback_semantics::{SECRET, hmac_hex, platform_with, serve_yaml};
use crate::support::root;

/// The hostile form of the issue: 2 000 000 bytes, 300 000 empty fields, a fake signature.
fn hostile_form() -> Vec<u8> {
    let mut body = b"sign=0123456789ABCDEF0123456789ABCDEF".to_vec();
    for _ in 0..300_000 {
        body.extend_from_slice(b"&x=");
    }
    body.extend_from_slice(b"&pad=");
    body.resize(2_000_000, b'a');
    body
}

/// Sizes of the bodies stored with the deliveries, newest first.
async fn stored_body_sizes(dir_db: &str) -> Vec<(i64, Option<String>)> {
    let pool = sqlx::SqlitePool::connect(dir_db).await.unwrap();
    let rows = sqlx::query("SELECT length(body), rejection FROM inbox ORDER BY id DESC")
        .fetch_all(&pool)
        .await
        .unwrap();
    rows.iter()
        .map(|r| (r.get::<i64, _>(0), r.get::<Option<String>, _>(1)))
        .collect()
}

#[tokio::test]
async fn the_hostile_form_is_refused_and_stored_without_its_body() {
    let text = std::fs::read_to_string(root().join("platforms/yanxuan.yaml")).unwrap();
    let s = serve_yaml(&text, &[("app_key", "k"), ("app_secret", "s")]).await;
    let body = hostile_form();
    assert_eq!(body.len(), 2_000_000);
    let r = s
        .http
        .post(s.url("/callbacks/yanxuan/notify"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "the route's reject status");
    let rows = stored_body_sizes(&s.db_url()).await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].0 <= 4096, "{} bytes of body stored", rows[0].0);
    let listed = s.deliveries().await;
    assert_eq!(listed[0]["body_bytes"], 2_000_000, "{listed:?}");
    assert_eq!(listed[0]["body_stored_bytes"], rows[0].0, "{listed:?}");
}

fn limited_routes() -> String {
    platform_with(
        r#"  - path: /hooks/form
    format: form
    limits: { body: 64KiB, fields: 10, depth: 4 }
    verify:
      signature: { field: sign }
      steps:
        - { name: params, kind: canonical, from: [form], exclude: [sign] }
        - { name: sig, kind: digest, alg: hmac-sha256, input: "{{params}}", key: "{{credentials.secret}}" }
      expect: "{{sig}}"
      reject_status: 403
    event_type: { path: $.type, map: { changed: product.changed } }
  - path: /hooks/json
    limits: { body: 64KiB, fields: 10, depth: 4 }
    verify:
      signature: { header: X-Sig }
      steps:
        - { name: sig, kind: digest, alg: hmac-sha256, input: "{{body}}", key: "{{credentials.secret}}" }
      expect: "{{sig}}"
      reject_status: 403
    event_type: { header: X-Event, map: { changed: product.changed } }
  - path: /hooks/big
    format: form
    limits: { body: 4MiB, fields: 1000 }
    verify:
      signature: { field: sign }
      steps:
        - { name: params, kind: canonical, from: [form], exclude: [sign] }
        - { name: sig, kind: digest, alg: hmac-sha256, input: "{{params}}", key: "{{credentials.secret}}" }
      expect: "{{sig}}"
    event_type: { path: $.type, map: { changed: product.changed } }
"#,
    )
}

#[tokio::test]
async fn limits_refuse_with_a_clear_reason() {
    let s = serve_yaml(&limited_routes(), &[("secret", SECRET)]).await;
    let post = |path: &str, body: Vec<u8>, sig: Option<String>| {
        let mut r = s.http.post(s.url(path)).body(body);
        if let Some(sig) = sig {
            r = r.header("x-sig", sig);
        }
        r.send()
    };
    // Ten fields in all (`type` and `sign` count), correctly signed: accepted. Eleven, even
    // correctly signed: refused.
    for (n, status) in [(8, 200), (9, 403)] {
        let fields: Vec<String> = (0..n).map(|i| format!("f{i}=v")).collect();
        let mut sorted = fields.clone();
        sorted.push("type=changed".into());
        sorted.sort();
        let sign = hmac_hex(SECRET, sorted.join("&").as_bytes());
        let body = format!("type=changed&{}&sign={sign}", fields.join("&"));
        let r = post("/callbacks/hooks/form", body.into_bytes(), None)
            .await
            .unwrap();
        let st = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(st, status, "{n} fields: {text}");
        if status == 403 {
            assert!(text.contains("more than 10 fields"), "{text}");
        }
    }
    // JSON nested four deep is accepted, five deep is refused, even correctly signed.
    for (body, status) in [
        (r#"{"a":{"b":[{"c":1}]}}"#, 200),
        (r#"{"a":{"b":[{"c":[1]}]}}"#, 403),
    ] {
        let r = s
            .http
            .post(s.url("/callbacks/hooks/json"))
            .header("x-sig", hmac_hex(SECRET, body.as_bytes()))
            .header("x-event", "changed")
            .body(body)
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(st, status, "{body}: {text}");
        if status == 403 {
            assert!(text.contains("nested deeper than 4"), "{text}");
        }
    }
    // A body over the route's 64 KiB: refused at read time, whatever it holds.
    let big = vec![b' '; 64 * 1024 + 1];
    let sig = hmac_hex(SECRET, &big);
    let r = post("/callbacks/hooks/json", big, Some(sig)).await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let text = r.text().await.unwrap();
    assert!(text.contains("larger than 65536 bytes"), "{text}");
    // The hostile form on a route that allows 4 MiB but 1000 fields: refused by the count,
    // with the route's reject status (the default 401 here).
    let r = post("/callbacks/hooks/big", hostile_form(), None)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let text = r.text().await.unwrap();
    assert!(text.contains("more than 1000 fields"), "{text}");
    let rows = stored_body_sizes(&s.db_url()).await;
    assert!(rows.iter().all(|(n, _)| *n <= 4096), "{rows:?}");
}

#[test]
fn limits_are_checked_when_the_file_is_compiled() {
    let yaml = platform_with(&crate::callback_semantics::body_route(
        "/hooks/x",
        "    limits: { body: 2GiB, fields: 0, depth: 100000 }\n",
    ));
    let doc =
        entrepot::config::source::parse(std::path::Path::new("hooks.yaml"), yaml.clone()).unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
    let text = crate::support::render(&compiled.diagnostics);
    assert!(text.contains("callbacks[0].limits.body"), "{text}");
    assert!(text.contains("callbacks[0].limits.fields"), "{text}");
    assert!(text.contains("callbacks[0].limits.depth"), "{text}");
}

fn delivery(platform: &str, key: Option<&str>, verified: bool, at: i64) -> NewDelivery {
    NewDelivery {
        platform: platform.into(),
        route: "/p/notify".into(),
        dedupe_key: key.map(str::to_string),
        headers: "{}".into(),
        body: b"body".to_vec(),
        body_bytes: 4,
        verified,
        rejection: (!verified).then(|| "the signature does not match".to_string()),
        event_type: None,
        received_at: at,
        replay: None,
    }
}

fn event(id: &str) -> NewEvent {
    NewEvent {
        event_id: id.into(),
        target: "center".into(),
        event_type: "product.changed".into(),
        payload: "{}".into(),
        idempotency_key: id.into(),
        max_attempts: 5,
    }
}

#[tokio::test]
async fn pruning_keeps_recent_rows_and_pending_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let day = 86_400_000_i64;
    let now = 100 * day;
    let retention = Retention {
        deliveries: std::time::Duration::from_secs(7 * 86_400),
        refused: std::time::Duration::from_secs(86_400),
        events: std::time::Duration::from_secs(7 * 86_400),
        prune_every: std::time::Duration::from_secs(600),
    };
    let rec = |d: NewDelivery, events: Vec<NewEvent>| {
        let store = store.clone();
        async move {
            store
                .inbox_record(&d, &events, d.received_at)
                .await
                .unwrap()
        }
    };
    // Refused: two days old (goes), an hour old (stays).
    rec(delivery("p", None, false, now - 2 * day), vec![]).await;
    rec(delivery("p", None, false, now - day / 24), vec![]).await;
    // Verified, ten days old: one whose event was delivered (goes, with its event), one whose
    // event is still pending (stays, and so does the event), one dead-lettered (stays).
    rec(
        delivery("p", Some("old-done"), true, now - 10 * day),
        vec![event("e-done")],
    )
    .await;
    rec(
        delivery("p", Some("old-pending"), true, now - 10 * day),
        vec![event("e-pending")],
    )
    .await;
    rec(
        delivery("p", Some("old-dead"), true, now - 10 * day),
        vec![event("e-dead")],
    )
    .await;
    // Verified, a day old: stays.
    rec(delivery("p", Some("recent"), true, now - day), vec![]).await;
    let claimed = store
        .outbox_claim("me", now - 10 * day, 60_000, 10)
        .await
        .unwrap();
    for row in &claimed {
        match row.event_id.as_str() {
            "e-done" => assert!(
                store
                    .outbox_complete(row.id, "me", now - 9 * day)
                    .await
                    .unwrap()
            ),
            "e-dead" => assert!(store.outbox_fail(row.id, "me", "gone", None).await.unwrap()),
            _ => assert!(
                store
                    .outbox_fail(row.id, "me", "later", Some(now + day))
                    .await
                    .unwrap()
            ),
        }
    }

    let removed = store.prune(now, &retention).await.unwrap();
    assert_eq!(
        removed, 3,
        "one refused, one delivered delivery, one delivered event"
    );
    let left = store.inbox_recent(Some("p"), 100).await.unwrap();
    let mut keys: Vec<String> = left
        .iter()
        .map(|r| {
            r.dedupe_key
                .clone()
                .unwrap_or_else(|| format!("refused@{}", r.received_at))
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "old-dead".to_string(),
            "old-pending".into(),
            "recent".into(),
            format!("refused@{}", now - day / 24),
        ]
    );
    let pending = store
        .outbox_claim("me", now + 2 * day, 60_000, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].event_id, "e-pending");
    assert_eq!(store.dead_letters(10).await.unwrap().len(), 1);
    // A dedupe key is forgotten with its delivery, and remembered while the delivery is kept.
    let again = rec(delivery("p", Some("recent"), true, now), vec![]).await;
    assert!(matches!(again, InboxOutcome::Duplicate { .. }), "{again:?}");
    let again = rec(delivery("p", Some("old-done"), true, now), vec![]).await;
    assert!(matches!(again, InboxOutcome::Stored { .. }), "{again:?}");
}

#[test]
fn retention_is_read_from_the_gateway_file() {
    let compile = |text: &str| {
        let doc = entrepot::config::source::parse(
            std::path::Path::new("entrepot.yaml"),
            text.to_string(),
        )
        .unwrap();
        entrepot::compile::gateway::compile_gateway(doc, std::path::Path::new("."), &|_| None)
    };
    let defaults = compile("targets: {}\n").unwrap().delivery.retention;
    assert_eq!(defaults.deliveries.as_secs(), 7 * 86_400);
    assert_eq!(defaults.refused.as_secs(), 86_400);
    assert_eq!(defaults.events.as_secs(), 7 * 86_400);
    assert_eq!(defaults.prune_every.as_secs(), 600);
    let set = compile("retention: { deliveries: 3d, refused: 2h, events: 12h, prune_every: 1m }\n")
        .unwrap()
        .delivery
        .retention;
    assert_eq!(
        (
            set.deliveries.as_secs(),
            set.refused.as_secs(),
            set.events.as_secs(),
            set.prune_every.as_secs()
        ),
        (3 * 86_400, 7_200, 43_200, 60)
    );
    let bad = compile("retention: { refused: 1 week, events: 0d }\n").unwrap_err();
    let text = crate::support::render(&bad);
    assert!(text.contains("retention.refused"), "{text}");
    assert!(
        text.contains("retention.events: events cannot be zero"),
        "{text}"
    );
}

/// Sizes of the headers stored with the deliveries, newest first.
async fn stored_header_sizes(dir_db: &str) -> Vec<i64> {
    let pool = sqlx::SqlitePool::connect(dir_db).await.unwrap();
    sqlx::query_scalar::<_, i64>("SELECT length(headers) FROM inbox ORDER BY id DESC")
        .fetch_all(&pool)
        .await
        .unwrap()
}

/// A refused delivery, and a resend acknowledged as a duplicate (the replay guard does not
/// look at those), keep at most a few KiB of their headers too: a 300 000-byte unsigned header
/// (the server accepts header blocks of about 400 KB) must not grow the store by as much each
/// time. The kept headers stay a JSON object, with the names of the headers that were cut.
#[tokio::test]
async fn refused_and_duplicate_deliveries_keep_at_most_a_few_kib_of_headers() {
    let s = serve_yaml(
        &platform_with(&crate::callback_semantics::body_route(
            "/hooks/json",
            "    dedupe_key: \"{{headers.[x-id]}}\"\n",
        )),
        &[("secret", SECRET)],
    )
    .await;
    let junk = "j".repeat(300_000);
    let body = r#"{"n":1}"#;
    let send = |sig: String, extra: Option<&str>| {
        let mut r = s
            .http
            .post(s.url("/callbacks/hooks/json"))
            .header("x-sig", sig)
            .header("x-id", "d-1")
            .header("x-event", "changed");
        if let Some(v) = extra {
            r = r.header("x-junk", v);
        }
        r.body(body).send()
    };
    // Refused (wrong signature), with the big header.
    let r = send("00".into(), Some(&junk)).await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // Genuine, without it: stored with every header.
    let genuine = hmac_hex(SECRET, body.as_bytes());
    assert_eq!(send(genuine.clone(), None).await.unwrap().status(), 200);
    // A resend of the genuine delivery with the big header added: acknowledged as a duplicate.
    assert_eq!(send(genuine, Some(&junk)).await.unwrap().status(), 200);
    let listed = s.deliveries().await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed[0]["duplicate_of"].is_i64(), "{listed:?}");
    let sizes = stored_header_sizes(&s.db_url()).await;
    assert!(
        sizes[0] <= 4096,
        "a duplicate kept {} bytes of headers",
        sizes[0]
    );
    assert!(
        sizes[2] <= 4096,
        "a refused delivery kept {} bytes of headers",
        sizes[2]
    );
    // What is kept is still a JSON object naming the headers, the cut one included.
    let pool = sqlx::SqlitePool::connect(&s.db_url()).await.unwrap();
    let kept: Vec<String> = sqlx::query_scalar("SELECT headers FROM inbox ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    for text in [&kept[0], &kept[2]] {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["x-id"], "d-1", "{text}");
        assert!(v.get("x-junk").is_some(), "{text}");
    }
    // The accepted delivery keeps all of its headers.
    let v: serde_json::Value = serde_json::from_str(&kept[1]).unwrap();
    assert_eq!(v["x-id"], "d-1");
}

/// The deepest nesting a route may declare is one its deliveries can have: a correctly signed
/// JSON body nested exactly that deep is accepted (serde_json, which decodes it once it is
/// verified, stops at 127 levels, so 128 cannot be declared).
#[tokio::test]
async fn the_largest_allowed_depth_is_honoured_for_json() {
    let route = |depth: usize| {
        platform_with(&crate::callback_semantics::body_route(
            "/hooks/deep",
            &format!("    limits: {{ depth: {depth} }}\n"),
        ))
    };
    let doc =
        entrepot::config::source::parse(std::path::Path::new("hooks.yaml"), route(128)).unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
    let text = crate::support::render(&compiled.diagnostics);
    assert!(
        text.contains("callbacks[0].limits.depth: depth: 128 is outside 1 to 127"),
        "{text}"
    );
    let s = serve_yaml(&route(127), &[("secret", SECRET)]).await;
    for (depth, status) in [(127, 200), (128, 403)] {
        let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let r = s
            .http
            .post(s.url("/callbacks/hooks/deep"))
            .header("x-sig", hmac_hex(SECRET, body.as_bytes()))
            .header("x-event", "changed")
            .body(body)
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        assert_eq!(st, status, "{depth}: {}", r.text().await.unwrap());
    }
}

/// Pruning runs when the gateway starts, then every `prune_every`: a gateway restarted more
/// often than `prune_every` (10 minutes by default: redeploys, a crash loop, short-lived
/// instances) must still prune. Here `prune_every` is an hour and a refused delivery two days
/// old goes within seconds of the start.
#[tokio::test]
async fn pruning_runs_at_start_not_only_after_prune_every() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let now =
        i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap();
    let day = 86_400_000_i64;
    store
        .inbox_record(
            &delivery("p", None, false, now - 2 * day),
            &[],
            now - 2 * day,
        )
        .await
        .unwrap();
    store
        .inbox_record(&delivery("p", None, false, now), &[], now)
        .await
        .unwrap();
    let options = entrepot::dispatch::DispatchOptions {
        retention: Retention {
            prune_every: std::time::Duration::from_secs(3600),
            ..Retention::default()
        },
        ..Default::default()
    };
    let dispatcher = std::sync::Arc::new(entrepot::dispatch::Dispatcher::new(
        store.clone(),
        &[],
        options,
        Default::default(),
        |_| None,
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(dispatcher.run(async move {
        let _ = stopped.await;
    }));
    // Nothing to await from the outside: look at the store until the old row is gone.
    let started = std::time::Instant::now();
    let mut left = store.inbox_recent(Some("p"), 10).await.unwrap().len();
    while left != 1 && started.elapsed() < std::time::Duration::from_secs(5) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        left = store.inbox_recent(Some("p"), 10).await.unwrap().len();
    }
    stop.send(()).unwrap();
    running.await.unwrap();
    assert_eq!(
        left, 1,
        "the two-day-old refused delivery was not pruned at start"
    );
}

/// Routes whose signature header holds several candidates: `t=..,v1=..,v1=..` pairs
/// (Stripe-style) and a space-separated list.
fn candidate_routes() -> String {
    platform_with(
        r#"  - path: /hooks/pairs
    verify:
      signature: { header: Signature, pairs: { key: v1 } }
      steps:
        - { name: sig, kind: digest, alg: hmac-sha256, input: "{{signature.t}}.{{body}}", key: "{{credentials.secret}}" }
      expect: "{{sig}}"
      timestamp: { value: "{{signature.t}}", tolerance: 5m }
      reject_status: 403
    event_type: { header: X-Event, map: { changed: product.changed } }
  - path: /hooks/split
    verify:
      signature: { header: X-Sig, split: " " }
      steps:
        - { name: sig, kind: digest, alg: hmac-sha256, input: "{{body}}", key: "{{credentials.secret}}" }
      expect: "{{sig}}"
      reject_status: 403
    event_type: { header: X-Event, map: { changed: product.changed } }
"#,
    )
}

#[tokio::test]
async fn at_most_sixteen_signature_candidates_are_tried() {
    let s = serve_yaml(&candidate_routes(), &[("secret", SECRET)]).await;
    let body = r#"{"id":1}"#;
    let t = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    let genuine_pair = hmac_hex(SECRET, format!("{t}.{body}").as_bytes());
    let genuine_body = hmac_hex(SECRET, body.as_bytes());
    // `n` candidates in all, the genuine one last (a sender's key rotation puts it anywhere).
    let fakes = |n: usize| -> Vec<String> { (1..n).map(|i| format!("{i:064x}")).collect() };
    for (n, status) in [(2, 200), (16, 200), (17, 403), (1100, 403)] {
        let mut v1: Vec<String> = fakes(n).iter().map(|f| format!("v1={f}")).collect();
        v1.push(format!("v1={genuine_pair}"));
        let header = format!("t={t},{}", v1.join(","));
        let r = s
            .http
            .post(s.url("/callbacks/hooks/pairs"))
            .header("signature", header)
            .header("x-event", "changed")
            .body(body)
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(st, status, "pairs, {n} candidates: {text}");
        if status == 403 {
            assert!(
                text.contains(&format!("{n} signature candidates"))
                    && text.contains("more than the 16"),
                "{text}"
            );
        }

        let mut list = fakes(n);
        list.push(genuine_body.clone());
        let r = s
            .http
            .post(s.url("/callbacks/hooks/split"))
            .header("x-sig", list.join(" "))
            .header("x-event", "changed")
            .body(body)
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(st, status, "split, {n} candidates: {text}");
        if status == 403 {
            assert!(
                text.contains(&format!("{n} signature candidates"))
                    && text.contains("more than the 16"),
                "{text}"
            );
        }
    }
}
