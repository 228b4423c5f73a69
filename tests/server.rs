//! The server starts from the sample configuration and answers its health endpoints.

use std::sync::Arc;

use crate::support::http_get;
use arc_swap::ArcSwap;
use entrepot::server::{AppState, serve};

#[tokio::test]
async fn health_and_platform_listing() {
    let compiled =
        entrepot::compile::compile_dir(&crate::support::root().join("platforms"), &|_| None);
    assert!(compiled.diagnostics.is_empty());
    let state = AppState {
        plan: Arc::new(ArcSwap::from_pointee(compiled.plan)),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        "127.0.0.1:0".parse().unwrap(),
        state,
        move |addr| {
            let _ = tx.send(addr);
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    let addr = rx.await.unwrap();
    let (head, body) = http_get(addr, "/healthz").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, r#"{"status":"ok"}"#);
    let (_, body) = http_get(addr, "/v1/platforms").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let first = &v["platforms"][0];
    assert_eq!(first["operations"].as_array().unwrap().len(), 8, "{v}");
    let (_, body) = http_get(addr, "/v1/openapi.json").await;
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/platforms/{platform}/operations/order.create"]["post"].is_object());
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}
