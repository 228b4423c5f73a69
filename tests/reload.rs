//! Hot reload under load: 50 edits of a platform file, some invalid, while requests keep
//! flowing; a watcher that follows files appearing and disappearing; settings that cannot
//! change at run time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use channel_sim::{Catalog, SimConfig, Simulator};
use entrepot::credentials::CredentialSets;
use entrepot::engine::Engine;
use entrepot::reload::Reloader;
use entrepot::server::AppState;
use serde_json::{Value, json};

use crate::support::root;

const ADMIN: &str = "reload-admin-token";

fn sample_with(base_url: &str, title: &str) -> String {
    std::fs::read_to_string(root().join("platforms/yanxuan.yaml"))
        .unwrap()
        .replace("${env:YANXUAN_BASE_URL:-http://127.0.0.1:18080}", base_url)
        .replace(
            "title: NetEase Yanxuan (channel API)",
            &format!("title: {title}"),
        )
        // Above the platform's real quota, so the load is not paced to 20 calls a second.
        .replace("qps: 20", "qps: 2000")
}

#[tokio::test]
async fn fifty_edits_under_load_fail_no_request() {
    let sim = Simulator::start(SimConfig::new("k", "s", Catalog::sample()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let platforms = dir.path().join("platforms");
    std::fs::create_dir(&platforms).unwrap();
    let file = platforms.join("yanxuan.yaml");
    std::fs::write(&file, sample_with(&sim.base_url(), "v-initial")).unwrap();

    let store = crate::support::sqlite_store(&dir).await;
    let mut creds = CredentialSets::new();
    creds.insert(
        "yanxuan".into(),
        [
            ("app_key".to_string(), json!("k")),
            ("app_secret".to_string(), json!("s")),
        ]
        .into_iter()
        .collect(),
    );
    let plan: Arc<ArcSwap<entrepot::plan::Plan>> = Arc::default();
    let reloader = Arc::new(Reloader::new(platforms.clone(), plan.clone(), |_| None));
    assert_eq!(reloader.reload().await.result, "ok");
    let state = AppState {
        plan: plan.clone(),
        store: Some(store.clone()),
        engine: Some(Arc::new(Engine::new(store, creds, |_| None))),
        admin_token: Some(entrepot::config::Secret::new(ADMIN)),
        reloader: Some(reloader.clone()),
        ..Default::default()
    };
    let addr = crate::support::serve_on_loopback(state).await;
    let http = reqwest::Client::new();

    // Steady load: bounded, on loopback, until the edits are done.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (stop, ok, failed, http) = (stop.clone(), ok.clone(), failed.clone(), http.clone());
        load.push(tokio::spawn(async move {
            for _ in 0..5_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let r = http
                    .post(format!(
                        "http://{addr}/v1/platforms/yanxuan/operations/product.list"
                    ))
                    .json(&json!({"page_size": 1}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }

    let title = |http: reqwest::Client| async move {
        let v: Value = http
            .get(format!("http://{addr}/v1/platforms"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["platforms"][0]["title"].as_str().unwrap().to_string()
    };
    let mut serving = "v-initial".to_string();
    for i in 0..50 {
        let valid = i % 5 != 4;
        let text = if valid {
            sample_with(&sim.base_url(), &format!("v-{i}"))
        } else {
            // An unknown key on line 4: a located error, and the old plan keeps serving.
            sample_with(&sim.base_url(), &format!("v-{i}")).replacen(
                "platform: yanxuan\n",
                "platform: yanxuan\ntitel: typo\n",
                1,
            )
        };
        // Where the mistake is, counted in the text written (not by the code under test).
        let bad_line = text
            .lines()
            .position(|l| l.starts_with("titel:"))
            .map(|i| i + 1);
        std::fs::write(&file, text).unwrap();
        let report: Value = http
            .post(format!("http://{addr}/admin/v1/reload"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if valid {
            assert_eq!(report["result"], "ok", "{report}");
            serving = format!("v-{i}");
        } else {
            assert_eq!(report["result"], "error", "{report}");
            let status: Value = http
                .get(format!("http://{addr}/admin/v1/status"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let err = status["platforms"][0]["last_error"][0]
                .as_str()
                .unwrap()
                .to_string();
            let at = format!(
                "yanxuan.yaml:{}:1: error[E_UNKNOWN_KEY]: titel: unknown key 'titel'",
                bad_line.unwrap()
            );
            assert!(err.contains(&at), "{err}");
        }
        assert_eq!(title(http.clone()).await, serving, "edit {i}");
    }
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no request failed");
    assert!(
        ok.load(Ordering::SeqCst) > 50,
        "the load ran throughout: {}",
        ok.load(Ordering::SeqCst)
    );
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("entrepot_reload_total{result=\"ok\"} 41"),
        "{metrics}"
    );
    assert!(
        metrics.contains("entrepot_reload_total{result=\"error\"} 10"),
        "{metrics}"
    );
}

async fn next_reload(rx: &mut tokio::sync::watch::Receiver<u64>) {
    tokio::time::timeout(Duration::from_secs(20), rx.changed())
        .await
        .expect("a reload within 20s")
        .unwrap();
}

#[tokio::test]
async fn the_watcher_follows_added_and_removed_files() {
    let dir = tempfile::tempdir().unwrap();
    let plan: Arc<ArcSwap<entrepot::plan::Plan>> = Arc::default();
    let reloader = Arc::new(Reloader::new(
        dir.path().to_path_buf(),
        plan.clone(),
        |_| None,
    ));
    reloader.reload().await;
    let mut done = reloader.done.subscribe();
    done.mark_unchanged();
    // The watch is registered when `watch` returns: the changes below cannot be missed.
    let watching = reloader
        .clone()
        .watch(
            vec![],
            Duration::from_millis(50),
            None,
            std::future::pending(),
        )
        .unwrap();
    tokio::spawn(watching);
    let file = dir.path().join("extra.yaml");
    // Editors often save by writing a temporary file and renaming it over the old one.
    let tmp: PathBuf = dir.path().join(".extra.yaml.tmp");
    std::fs::write(&tmp, "platform: extra\nrequest: { url: \"http://127.0.0.1:9/\" }\noperations:\n  order.get: {}\n").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    loop {
        next_reload(&mut done).await;
        if plan.load().platforms.contains_key("extra") {
            break;
        }
    }
    std::fs::remove_file(&file).unwrap();
    loop {
        next_reload(&mut done).await;
        if !plan.load().platforms.contains_key("extra") {
            break;
        }
    }
}

#[tokio::test]
async fn listen_and_store_cannot_change_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = dir.path().join("entrepot.yaml");
    std::fs::write(
        &gateway,
        "listen: 127.0.0.1:8181\nstore: { url: \"sqlite://data/a.db\" }\n",
    )
    .unwrap();
    let plan: Arc<ArcSwap<entrepot::plan::Plan>> = Arc::default();
    let reloader = Reloader::new(root().join("platforms"), plan, |_| None).with_gateway_file(
        gateway.clone(),
        "127.0.0.1:8181".parse().unwrap(),
        "sqlite://data/a.db".into(),
    );
    assert_eq!(reloader.reload().await.result, "ok");
    std::fs::write(
        &gateway,
        "listen: 0.0.0.0:9000\nstore: { url: \"postgres://x@127.0.0.1/y\" }\n",
    )
    .unwrap();
    let report = reloader.reload().await;
    assert_eq!(report.result, "error");
    let text: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("listen: the listen address cannot change while the gateway runs")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("store.url: the store URL cannot change while the gateway runs")),
        "{text:?}"
    );
    assert!(Path::new(&gateway).exists());
}

#[tokio::test]
async fn the_credentials_file_reloads_and_a_broken_one_keeps_the_last_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let engine = Arc::new(Engine::new(store, CredentialSets::new(), |_| None));
    let file = dir.path().join("credentials.yaml");
    let plan: Arc<ArcSwap<entrepot::plan::Plan>> = Arc::default();
    let reloader = Reloader::new(root().join("platforms"), plan.clone(), |_| None)
        .with_engine(engine.clone(), Some(file.clone()));
    let secret = |engine: &Engine| {
        let p = plan.load_full().platforms["yanxuan"].clone();
        engine.credentials_for(&p).get("app_secret").cloned()
    };
    std::fs::write(&file, "yanxuan:\n  app_key: k\n  app_secret: first\n").unwrap();
    assert_eq!(reloader.reload().await.result, "ok");
    assert_eq!(secret(&engine), Some(json!("first")));
    std::fs::write(&file, "yanxuan:\n  app_key: k\n  app_secret: second\n").unwrap();
    reloader.reload().await;
    assert_eq!(secret(&engine), Some(json!("second")));
    std::fs::write(&file, "yanxuan: [unclosed\n  app_secret: third-not-shown\n").unwrap();
    let report = reloader.reload().await;
    assert_eq!(report.result, "error");
    let text: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("credentials.yaml") && t.contains("not valid YAML")),
        "{text:?}"
    );
    assert!(!text.concat().contains("third-not-shown"));
    assert_eq!(
        secret(&engine),
        Some(json!("second")),
        "a broken file keeps the last values"
    );
}

/// A minimal valid platform file with a distinct callback-free definition.
fn tiny_platform(name: &str, title: &str) -> String {
    format!(
        "platform: {name}\ntitle: {title}\nrequest: {{ url: \"http://127.0.0.1:9/\" }}\noperations:\n  order.get: {{}}\n"
    )
}

fn title_of(plan: &ArcSwap<entrepot::plan::Plan>, platform: &str) -> Option<String> {
    plan.load()
        .platforms
        .get(platform)
        .and_then(|p| p.title.clone())
}

/// A quiet period several times the debounce: a reload the watcher wrongly started would have
/// begun (and, since every reload opens the files again, kept going) within it.
const SETTLE: Duration = Duration::from_millis(400);
const DEBOUNCE: Duration = Duration::from_millis(50);

#[tokio::test]
async fn a_log_in_the_config_directory_and_reading_the_files_cause_no_reload() {
    // The layout of `entrepot serve > gateway.log 2>&1` run beside its files.
    let dir = tempfile::tempdir().unwrap();
    let platforms = dir.path().join("platforms");
    std::fs::create_dir(&platforms).unwrap();
    let platform_file = platforms.join("alpha.yaml");
    std::fs::write(&platform_file, tiny_platform("alpha", "first")).unwrap();
    let gateway = dir.path().join("entrepot.yaml");
    std::fs::write(&gateway, "platforms_dir: platforms\n").unwrap();
    let credentials = dir.path().join("credentials.yaml");
    std::fs::write(&credentials, "alpha:\n  token: t\n").unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let engine = Arc::new(Engine::new(store, CredentialSets::new(), |_| None));
    let plan: Arc<ArcSwap<entrepot::plan::Plan>> = Arc::default();
    let reloader = Arc::new(
        Reloader::new(platforms.clone(), plan.clone(), |_| None)
            .with_engine(engine, Some(credentials.clone())),
    );
    assert_eq!(reloader.reload().await.result, "ok");
    let mut done = reloader.done.subscribe();
    let start = *done.borrow_and_update();
    let watching = reloader
        .clone()
        .watch(
            vec![credentials.clone(), gateway.clone()],
            DEBOUNCE,
            None,
            std::future::pending(),
        )
        .unwrap();
    tokio::spawn(watching);

    // Noise: a log written line by line beside entrepot.yaml, a stray file in the platforms
    // directory, and every file the gateway reads opened and read (as each reload does).
    let log = dir.path().join("gateway.log");
    for i in 0..20 {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        writeln!(f, "line {i}").unwrap();
        for f in [&platform_file, &gateway, &credentials] {
            std::fs::read_to_string(f).unwrap();
        }
        std::fs::read_dir(&platforms).unwrap().for_each(drop);
    }
    std::fs::write(platforms.join("notes.txt"), "not a platform").unwrap();
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        *done.borrow(),
        start,
        "the noise started {} reload(s)",
        *done.borrow() - start
    );

    // A real edit still reloads, exactly once; the reload's own reading of the files does not
    // start another one. (Saved as editors do, by a rename: one event, however slow the
    // machine, where truncating and writing in place could be two bursts.)
    let tmp = platforms.join(".alpha.yaml.tmp");
    std::fs::write(&tmp, tiny_platform("alpha", "second")).unwrap();
    std::fs::rename(&tmp, &platform_file).unwrap();
    next_reload(&mut done).await;
    assert_eq!(title_of(&plan, "alpha").as_deref(), Some("second"));
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        *done.borrow(),
        start + 1,
        "one edit, one reload (the reload must not trigger itself)"
    );

    // The files beside the platforms count too: the credentials file and entrepot.yaml.
    std::fs::write(&credentials, "alpha:\n  token: u\n").unwrap();
    next_reload(&mut done).await;
    std::fs::write(&gateway, "platforms_dir: platforms\n# edited\n").unwrap();
    next_reload(&mut done).await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_configmap_style_symlink_swap_reloads() {
    // Kubernetes mounts a ConfigMap as `name -> ..data/name`, `..data -> ..<timestamp>`, and
    // updates it by pointing `..data` at a new directory (a rename of a new symlink over it).
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("..2026_01_01_00_00_00.1");
    std::fs::create_dir(&first).unwrap();
    std::fs::write(first.join("alpha.yaml"), tiny_platform("alpha", "first")).unwrap();
    symlink(first.file_name().unwrap(), dir.path().join("..data")).unwrap();
    symlink("..data/alpha.yaml", dir.path().join("alpha.yaml")).unwrap();
    let plan: Arc<ArcSwap<entrepot::plan::Plan>> = Arc::default();
    let reloader = Arc::new(Reloader::new(
        dir.path().to_path_buf(),
        plan.clone(),
        |_| None,
    ));
    assert_eq!(reloader.reload().await.result, "ok");
    assert_eq!(title_of(&plan, "alpha").as_deref(), Some("first"));
    let mut done = reloader.done.subscribe();
    done.mark_unchanged();
    let watching = reloader
        .clone()
        .watch(vec![], DEBOUNCE, None, std::future::pending())
        .unwrap();
    tokio::spawn(watching);
    let second = dir.path().join("..2026_01_01_00_01_00.2");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(second.join("alpha.yaml"), tiny_platform("alpha", "second")).unwrap();
    symlink(second.file_name().unwrap(), dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    loop {
        next_reload(&mut done).await;
        if title_of(&plan, "alpha").as_deref() == Some("second") {
            break;
        }
    }
}

/// A reload compiles only the files whose content changed: the others keep their plan objects
/// without being compiled again; a file that failed is compiled again each time (its problems
/// are reported every time), and a start with many files compiles them all.
#[tokio::test]
async fn a_reload_compiles_only_the_files_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let sample = std::fs::read_to_string(root().join("platforms/yanxuan.yaml")).unwrap();
    let copy = |i: usize| {
        sample
            .replace("platform: yanxuan", &format!("platform: copy{i}"))
            .replace("/yanxuan/", &format!("/copy{i}/"))
    };
    for i in 0..12 {
        std::fs::write(dir.path().join(format!("p{i:02}.yaml")), copy(i)).unwrap();
    }
    let plan: Arc<ArcSwap<entrepot::plan::Plan>> = Arc::default();
    let reloader = Reloader::new(dir.path().to_path_buf(), plan.clone(), |_| None);
    let first = reloader.reload().await;
    assert_eq!(first.result, "ok", "{:?}", first.errors);
    assert_eq!(first.compiled, 12);
    assert_eq!(plan.load().platforms.len(), 12);
    let before = plan.load_full();

    // Nothing changed: nothing is compiled, every plan object stays.
    let idle = reloader.reload().await;
    assert_eq!((idle.result, idle.compiled), ("ok", 0));

    // One file edited (a setting changed), one broken.
    std::fs::write(
        dir.path().join("p03.yaml"),
        copy(3).replace("timeout: 5s", "timeout: 7s"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p07.yaml"),
        "platform: copy7\noperations: [",
    )
    .unwrap();
    let edit = reloader.reload().await;
    assert_eq!(edit.result, "error");
    assert_eq!(edit.compiled, 2);
    assert_eq!(edit.changed, vec!["copy3".to_string()]);
    let after = plan.load_full();
    for (name, p) in &after.platforms {
        let same = Arc::ptr_eq(p, &before.platforms[name]);
        assert_eq!(same, name != "copy3", "{name}");
    }
    // The broken file is compiled again on the next reload, and reported again.
    let again = reloader.reload().await;
    assert_eq!((again.result, again.compiled), ("error", 1));
}
