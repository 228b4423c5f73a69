//! Request bodies mapped from the canonical input (`request.body`): built per list element,
//! typed, with optional fields; and a 3-line order that reaches a platform with every line.
//! Every expected body below is written out by hand.

use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use entrepot::credentials::CredentialSets;
use entrepot::engine::Engine;
use entrepot::engine::build::{BuildError, BuildInput, BuiltRequest, build};
use entrepot::plan::PlatformPlan;
use entrepot::server::{AppState, serve};
use serde_json::{Map, Value, json};

/// A REST/JSON supplier taking orders with several lines.
const SHOP: &str = r#"
platform: rest_shop
settings:
  base_url: BASE
request:
  url: "{{settings.base_url}}/v1"
operations:
  order.create:
    request:
      method: POST
      url: "{{settings.base_url}}/v1/orders"
      headers: { Idempotency-Key: "{{input.order_id}}" }
      body:
        fields:
          reference: { path: input.order_id, required: true }
          currency: { path: input.total.currency }
          total: { path: input.total.amount, type: decimal, scale: 2 }
          shipping: { path: input.freight.amount, type: number, scale: 2, default: 0 }
          note: { path: input.buyer_message }
          paid_at: { path: input.paid_at, nullable: true }
          channel: { value: mall }
          lines:
            each: input.lines
            fields:
              sku: { path: item.sku_id }
              quantity: { path: item.quantity, type: integer }
              unit_price: { path: item.unit_price.amount, type: decimal, scale: 2 }
          recipient:
            path: input.address
            fields:
              name: { path: item.name }
              street: { path: item.detail }
              city: { template: "{{item.postal_code}} {{item.city}}" }
              region: { path: item.district, default: "" }
    response:
      fields:
        order_id: { path: $.reference, required: true }
        platform_order_id: { path: $.id, required: true }
        status: { value: paid }
  order.get:
    request:
      method: POST
      url: "{{settings.base_url}}/v1/orders/lookup"
      body:
        format: xml
        root: lookup
        fields:
          "@version": { value: "2" }
          order: { path: input.order_id }
    response: { path: $.output }
  product.list:
    request:
      method: GET
      url: "{{settings.base_url}}/v1/products"
      omit_empty: true
      query:
        cursor: "{{input.cursor}}"
        limit: "{{default input.page_size 50}}"
    response: { path: $.output }
  inventory.get:
    request:
      method: GET
      url: "{{settings.base_url}}/v1/stock"
      query:
        cursor: ""
        ids: "{{join input.sku_ids ','}}"
    response: { path: $.output }
"#;

fn compile(text: &str) -> Arc<PlatformPlan> {
    let doc =
        entrepot::config::source::parse(Path::new("platform.yaml"), text.to_string()).unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
    assert!(
        compiled.diagnostics.is_empty(),
        "{}",
        crate::support::render(&compiled.diagnostics)
    );
    compiled.plan.platforms.values().next().unwrap().clone()
}

fn build_op(p: &PlatformPlan, op: &str, input: &Value) -> Result<BuiltRequest, BuildError> {
    let credentials = Map::new();
    build(
        p,
        &p.operations[op],
        &BuildInput {
            input,
            credentials: &credentials,
            now: time::OffsetDateTime::UNIX_EPOCH,
            nonce: Some("n".into()),
            token: None,
        },
    )
}

fn eur(amount: i64) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

fn three_line_order() -> Value {
    json!({
        "order_id": "M-1001",
        "lines": [
            {"sku_id": "A-1", "quantity": 2, "unit_price": eur(1999)},
            {"sku_id": "B-2", "quantity": 1, "unit_price": eur(5)},
            {"sku_id": "C-3", "quantity": 3, "unit_price": eur(120000)}
        ],
        "address": {"name": "Ana Ruiz", "phone": "+34 600 000 000", "province": "Madrid",
                    "city": "Madrid", "detail": "Calle \"Mayor\" 1", "postal_code": "28013"},
        "total": eur(364503),
        "freight": eur(500)
    })
}

/// The body the platform must receive for `three_line_order()`: 2×19.99 + 0.05 + 3×1200.00
/// + 5.00 shipping = 3645.03.
const THREE_LINE_BODY: &str = concat!(
    r#"{"reference":"M-1001","currency":"EUR","total":"3645.03","shipping":5.00,"#,
    r#""paid_at":null,"channel":"mall","lines":["#,
    r#"{"sku":"A-1","quantity":2,"unit_price":"19.99"},"#,
    r#"{"sku":"B-2","quantity":1,"unit_price":"0.05"},"#,
    r#"{"sku":"C-3","quantity":3,"unit_price":"1200.00"}],"#,
    r#""recipient":{"name":"Ana Ruiz","street":"Calle \"Mayor\" 1","city":"28013 Madrid","region":""}}"#
);

#[test]
fn a_multi_line_order_body_is_built_per_line() {
    let p = compile(&SHOP.replace("BASE", "http://127.0.0.1:9"));
    let req = build_op(&p, "order.create", &three_line_order()).unwrap();
    assert_eq!(String::from_utf8(req.body).unwrap(), THREE_LINE_BODY);
    assert_eq!(req.content_type.as_deref(), Some("application/json"));
    assert_eq!(req.url, "http://127.0.0.1:9/v1/orders");
    assert!(
        req.headers
            .contains(&("Idempotency-Key".to_string(), "M-1001".to_string()))
    );
}

#[test]
fn absent_inputs_are_left_out_sent_as_null_defaulted_or_refused() {
    let yaml = r#"
platform: optional_fields
request:
  url: "http://127.0.0.1:9/orders"
operations:
  order.create:
    request:
      body:
        fields:
          note: { path: input.buyer_message }
          note_or_null: { path: input.buyer_message, nullable: true }
          note_or_default: { path: input.buyer_message, default: "-" }
          district: { path: input.address.district, required: true }
          extra:
            path: input.freight
            fields:
              amount: { path: item.amount, type: integer }
    response: { path: $.output }
"#;
    let p = compile(yaml);
    let mut input = three_line_order();
    input["address"]["district"] = json!("Centro");
    let body = |input: &Value| {
        String::from_utf8(build_op(&p, "order.create", input).unwrap().body).unwrap()
    };
    assert_eq!(
        body(&input),
        r#"{"note_or_null":null,"note_or_default":"-","district":"Centro","extra":{"amount":500}}"#
    );
    input["buyer_message"] = json!("leave at the door");
    input.as_object_mut().unwrap().remove("freight");
    assert_eq!(
        body(&input),
        r#"{"note":"leave at the door","note_or_null":"leave at the door","note_or_default":"leave at the door","district":"Centro"}"#
    );
    input["address"].as_object_mut().unwrap().remove("district");
    match build_op(&p, "order.create", &input).unwrap_err() {
        BuildError::InvalidInput {
            fields, message, ..
        } => {
            assert_eq!(fields, "body field district");
            assert!(message.contains("input.address.district"), "{message}");
        }
        other => panic!("expected an input error, got {other}"),
    }
}

#[test]
fn decimals_from_minor_units_with_scale_0_2_and_3() {
    let yaml = r#"
platform: decimals
request:
  url: "http://127.0.0.1:9/orders"
operations:
  order.create:
    request:
      body:
        fields:
          s0: { path: input.total.amount, type: decimal, scale: 0 }
          s2: { path: input.total.amount, type: decimal, scale: 2 }
          s3: { path: input.total.amount, type: decimal, scale: 3 }
          n0: { path: input.total.amount, type: number, scale: 0 }
          n2: { path: input.total.amount, type: number, scale: 2 }
          n3: { path: input.total.amount, type: number, scale: 3 }
          q: { each: input.lines, fields: { n: { path: item.quantity, type: string } } }
    response: { path: $.output }
"#;
    let p = compile(yaml);
    let mut input = three_line_order();
    let body = |input: &Value| {
        String::from_utf8(build_op(&p, "order.create", input).unwrap().body).unwrap()
    };
    // JPY has no minor unit, EUR two decimals, KWD three: the scale is the file's to declare.
    input["total"] = json!({"amount": 1999, "currency": "JPY"});
    assert_eq!(
        body(&input),
        r#"{"s0":"1999","s2":"19.99","s3":"1.999","n0":1999,"n2":19.99,"n3":1.999,"q":[{"n":"2"},{"n":"1"},{"n":"3"}]}"#
    );
    input["total"] = json!({"amount": 7, "currency": "KWD"});
    assert_eq!(
        body(&input),
        r#"{"s0":"7","s2":"0.07","s3":"0.007","n0":7,"n2":0.07,"n3":0.007,"q":[{"n":"2"},{"n":"1"},{"n":"3"}]}"#
    );
    // Beyond what a double holds exactly, digits are still written one for one.
    input["total"] = json!({"amount": 9007199254740993_i64, "currency": "EUR"});
    let text = body(&input);
    assert!(text.contains(r#""n2":90071992547409.93,"#), "{text}");
}

#[test]
fn xml_bodies_are_mapped_too() {
    let p = compile(&SHOP.replace("BASE", "http://127.0.0.1:9"));
    let req = build_op(&p, "order.get", &json!({"order_id": "M-1<2>&"})).unwrap();
    assert_eq!(
        String::from_utf8(req.body).unwrap(),
        r#"<?xml version="1.0" encoding="UTF-8"?><lookup version="2"><order>M-1&lt;2&gt;&amp;</order></lookup>"#
    );
    assert_eq!(
        req.content_type.as_deref(),
        Some("application/xml; charset=utf-8")
    );
    let yaml = r#"
platform: xml_orders
request:
  url: "http://127.0.0.1:9/orders"
operations:
  order.create:
    request:
      body:
        format: xml
        root: order
        fields:
          "@id": { path: input.order_id }
          lines:
            fields:
              line:
                each: input.lines
                fields:
                  "@sku": { path: item.sku_id }
                  qty: { path: item.quantity, type: integer }
                  price: { path: item.unit_price.amount, type: decimal, scale: 2 }
          note: { path: input.buyer_message, cdata: true }
          paid: { path: input.paid_at, nullable: true }
    response: { path: $.output }
"#;
    let p = compile(yaml);
    let mut input = three_line_order();
    input["buyer_message"] = json!("ring <twice> & wait");
    let req = build_op(&p, "order.create", &input).unwrap();
    assert_eq!(
        String::from_utf8(req.body).unwrap(),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?><order id="M-1001"><lines>"#,
            r#"<line sku="A-1"><qty>2</qty><price>19.99</price></line>"#,
            r#"<line sku="B-2"><qty>1</qty><price>0.05</price></line>"#,
            r#"<line sku="C-3"><qty>3</qty><price>1200.00</price></line>"#,
            r#"</lines><note><![CDATA[ring <twice> & wait]]></note><paid></paid></order>"#
        )
    );
}

#[test]
fn empty_query_parameters_can_be_left_out() {
    let p = compile(&SHOP.replace("BASE", "http://127.0.0.1:9"));
    // `omit_empty: true`: a first page leaves `cursor` out.
    let req = build_op(&p, "product.list", &json!({})).unwrap();
    assert_eq!(req.url, "http://127.0.0.1:9/v1/products?limit=50");
    let req = build_op(
        &p,
        "product.list",
        &json!({"cursor": "c 2", "page_size": 10}),
    )
    .unwrap();
    assert_eq!(
        req.url,
        "http://127.0.0.1:9/v1/products?cursor=c%202&limit=10"
    );
    // Without it the empty parameter is sent, as before.
    let req = build_op(&p, "inventory.get", &json!({"sku_ids": ["a", "b"]})).unwrap();
    assert_eq!(req.url, "http://127.0.0.1:9/v1/stock?cursor=&ids=a%2Cb");
}

#[derive(Default)]
struct Recorder {
    bodies: Mutex<Vec<(String, String, String)>>,
}

async fn record(
    State(r): State<Arc<Recorder>>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> axum::Json<Value> {
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let reference = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["reference"].as_str().map(str::to_string))
        .unwrap_or_default();
    r.bodies
        .lock()
        .unwrap()
        .push((uri.path().to_string(), key, body));
    axum::Json(json!({"id": "P-77", "reference": reference}))
}

#[tokio::test]
async fn a_three_line_order_reaches_the_platform_with_every_line() {
    let recorder = Arc::new(Recorder::default());
    let app = Router::new().fallback(record).with_state(recorder.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let doc =
        entrepot::config::source::parse(Path::new("rest_shop.yaml"), SHOP.replace("BASE", &base))
            .unwrap();
    let compiled = entrepot::compile::compile_docs(vec![doc], &|_| None);
    assert!(compiled.diagnostics.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let engine = Arc::new(Engine::new(store.clone(), CredentialSets::new(), |_| None));
    let state = AppState {
        plan: Arc::new(ArcSwap::from_pointee(compiled.plan)),
        store: Some(store),
        engine: Some(engine),
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
    let resp = reqwest::Client::new()
        .post(format!(
            "http://{addr}/v1/platforms/rest_shop/operations/order.create"
        ))
        .json(&three_line_order())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["platform_order_id"], "P-77", "{answer}");
    let seen = recorder.bodies.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (path, key, body) = &seen[0];
    assert_eq!(path, "/v1/orders");
    assert_eq!(key, "M-1001");
    assert_eq!(body, THREE_LINE_BODY);
    let lines: Vec<String> = serde_json::from_str::<Value>(body).unwrap()["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["sku"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(lines, ["A-1", "B-2", "C-3"]);
    let _ = stop.send(());
}

#[test]
fn a_list_element_that_maps_to_nothing_is_refused_not_dropped() {
    let yaml = r#"
platform: strict_lines
request:
  url: "http://127.0.0.1:9/orders"
operations:
  order.create:
    request:
      body:
        fields:
          currencies: { each: input.lines, path: item.unit_price.currency }
    response: { path: $.output }
"#;
    let p = compile(yaml);
    let mut input = three_line_order();
    let req = build_op(&p, "order.create", &input).unwrap();
    assert_eq!(
        String::from_utf8(req.body).unwrap(),
        r#"{"currencies":["EUR","EUR","EUR"]}"#
    );
    input["lines"][1]["unit_price"]
        .as_object_mut()
        .unwrap()
        .remove("currency");
    match build_op(&p, "order.create", &input).unwrap_err() {
        BuildError::InvalidInput { fields, .. } => {
            assert_eq!(fields, "body field currencies[1]")
        }
        other => panic!("expected an input error, got {other}"),
    }
}
