//! The canonical HTTP API, the gateway's route for the operations this adapter knows:
//! `POST /v1/platforms/yanxuan/operations/{product.get|product.list}`, plus `GET /healthz`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Adapter;
use crate::ids::Kind;
use crate::mapping::{self, Item, ItemPage, ProductGet, ProductList};

/// The platform name in the route, as in `platforms/yanxuan.yaml`.
const PLATFORM: &str = "yanxuan";

/// An RFC 9457 problem, shaped like the gateway's.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    slug: &'static str,
    detail: String,
    platform_status: Option<String>,
}

impl Problem {
    /// A problem of kind `slug` answered with `status`.
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            slug,
            detail: detail.into(),
            platform_status: None,
        }
    }

    /// The platform refused the call with business code `code`.
    pub fn platform_error(code: String, msg: Option<String>) -> Self {
        Problem {
            platform_status: Some(code.clone()),
            ..Problem::new(
                StatusCode::BAD_GATEWAY,
                "platform-error",
                format!(
                    "the platform refused the call: {code} {}",
                    msg.unwrap_or_default()
                ),
            )
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("https://entrepot.dev/problems/{}", self.slug),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let (Some(code), Some(map)) = (self.platform_status, body.as_object_mut()) {
            map.insert("platform_status".into(), Value::String(code));
        }
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// The adapter's routes.
pub fn router(adapter: Arc<Adapter>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/v1/platforms/{platform}/operations/{operation}",
            post(operation),
        )
        .with_state(adapter)
}

async fn operation(
    State(adapter): State<Arc<Adapter>>,
    Path((platform, operation)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if platform != PLATFORM {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no platform '{platform}' (this adapter knows '{PLATFORM}')"),
        )
        .into_response();
    }
    let result = match operation.as_str() {
        "product.get" => product_get(&adapter, &body).await.map(|o| json_ok(&o)),
        "product.list" => product_list(&adapter, &body).await.map(|o| json_ok(&o)),
        other => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no operation '{other}' (this adapter knows product.get and product.list)"),
        )),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn json_ok<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot write the answer: {e}"),
        )
        .into_response(),
    }
}

fn input<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-input",
            format!("the input is not valid: {e}"),
        )
    })
}

fn result_as<T: serde::de::DeserializeOwned>(result: Value) -> Result<T, Problem> {
    serde_json::from_value(result).map_err(|e| {
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "mapping-error",
            format!("the platform's answer does not fit: {e}"),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductGetInput {
    spu_id: String,
}

async fn product_get(adapter: &Adapter, body: &[u8]) -> Result<ProductGet, Problem> {
    let input: ProductGetInput = input(body)?;
    let platform_id = adapter
        .ids
        .platform(Kind::Spu, &input.spu_id)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown-id",
                format!("spu '{}' has no mapping on '{PLATFORM}'", input.spu_id),
            )
        })?;
    let result = adapter
        .call("yanxuan.item.batch.get", &[("itemIds", &platform_id)])
        .await?;
    let items: Vec<Item> = result_as(result)?;
    let item = items.into_iter().next().ok_or_else(|| {
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "mapping-error",
            "the platform's answer has no product",
        )
    })?;
    let product = mapping::product(item, &adapter.ids)
        .map_err(|e| Problem::new(StatusCode::BAD_GATEWAY, "mapping-error", e))?;
    Ok(ProductGet { product })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductListInput {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    page: Option<u32>,
    #[serde(default)]
    page_size: Option<u32>,
}

async fn product_list(adapter: &Adapter, body: &[u8]) -> Result<ProductList, Problem> {
    let input: ProductListInput = if body.is_empty() {
        input(b"{}")?
    } else {
        input(body)?
    };
    let page_no = input
        .cursor
        .unwrap_or_else(|| input.page.unwrap_or(1).to_string());
    let page_size = input.page_size.unwrap_or(50).to_string();
    let result = adapter
        .call(
            "yanxuan.item.id.batch.get",
            &[("pageNo", &page_no), ("pageSize", &page_size)],
        )
        .await?;
    let page: ItemPage = result_as(result)?;
    let items = page
        .items
        .into_iter()
        .map(|item| mapping::product(item, &adapter.ids))
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| Problem::new(StatusCode::BAD_GATEWAY, "mapping-error", e))?;
    let next_cursor = match page.next_page_no {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    };
    Ok(ProductList {
        items,
        next_cursor,
        total: page.total,
    })
}
