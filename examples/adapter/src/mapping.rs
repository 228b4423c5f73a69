//! The platform's answers and the canonical model, and the mapping between them (the
//! `response` sections of `platforms/yanxuan.yaml`, by hand).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{IdMap, Kind};

/// Every answer: `{"code": "200", "msg": ..., "result": ...}`.
#[derive(Debug, Deserialize)]
pub struct Answer {
    /// Business code; `"200"` is success.
    pub code: Value,
    /// Message of a refusal.
    #[serde(default)]
    pub msg: Option<String>,
    /// The method's result.
    #[serde(default)]
    pub result: Option<Value>,
}

impl Answer {
    /// The business code as text (the platform sends a string; a number is read the same).
    pub fn code_text(&self) -> String {
        match &self.code {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// A product as the platform writes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    /// Platform SPU id.
    pub id: String,
    /// Product name.
    pub name: String,
    /// Short description.
    #[serde(default)]
    pub simple_desc: Option<String>,
    /// `1` on sale, `0` not.
    #[serde(default)]
    pub status: Option<Value>,
    /// The SKUs.
    #[serde(default)]
    pub sku_list: Vec<ItemSku>,
}

/// A SKU as the platform writes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemSku {
    /// Platform SKU id.
    pub id: String,
    /// Variant label.
    #[serde(default)]
    pub display_string: Option<String>,
    /// Price in yuan, `"299.00"`.
    pub channel_price: String,
    /// Units available.
    #[serde(default)]
    pub inventory: Option<i64>,
}

/// The result of `yanxuan.item.id.batch.get`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemPage {
    /// Products in total.
    #[serde(default)]
    pub total: Option<i64>,
    /// The next page, or null on the last one.
    #[serde(default)]
    pub next_page_no: Option<Value>,
    /// The page's products.
    #[serde(default)]
    pub items: Vec<Item>,
}

/// Canonical output of `product.get`.
#[derive(Debug, Serialize)]
pub struct ProductGet {
    /// The product.
    pub product: Product,
}

/// Canonical output of `product.list`.
#[derive(Debug, Serialize)]
pub struct ProductList {
    /// The page's products.
    pub items: Vec<Product>,
    /// Cursor of the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// Products in total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
}

/// A canonical product.
#[derive(Debug, Serialize)]
pub struct Product {
    /// Internal product id.
    pub spu_id: String,
    /// Title.
    pub title: String,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `on_sale` or `off_sale`.
    pub status: &'static str,
    /// The SKUs.
    pub skus: Vec<Sku>,
}

/// A canonical SKU.
#[derive(Debug, Serialize)]
pub struct Sku {
    /// Internal SKU id.
    pub sku_id: String,
    /// Title of the variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Units available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
    /// Unit price.
    pub price: Money,
}

/// An amount in the currency's minor unit.
#[derive(Debug, Serialize)]
pub struct Money {
    /// Amount in fen.
    pub amount: i64,
    /// Always `CNY` on this platform.
    pub currency: &'static str,
}

/// Maps one platform product, translating its ids (allocated on first sight).
pub fn product(item: Item, ids: &IdMap) -> Result<Product, String> {
    let status = match &item.status {
        Some(Value::Number(n)) if n.as_i64() == Some(1) => "on_sale",
        Some(Value::String(s)) if s == "1" => "on_sale",
        _ => "off_sale",
    };
    let skus = item
        .sku_list
        .into_iter()
        .map(|s| {
            let amount = yuan_to_fen(&s.channel_price).ok_or_else(|| {
                format!(
                    "sku {}: channelPrice '{}' is not an amount in yuan",
                    s.id, s.channel_price
                )
            })?;
            Ok(Sku {
                sku_id: ids.internal(Kind::Sku, &s.id),
                title: s.display_string,
                available: s.inventory,
                price: Money {
                    amount,
                    currency: "CNY",
                },
            })
        })
        .collect::<Result<Vec<Sku>, String>>()?;
    Ok(Product {
        spu_id: ids.internal(Kind::Spu, &item.id),
        title: item.name,
        description: item.simple_desc,
        status,
        skus,
    })
}

/// Parses a yuan amount with at most two decimals (`"12"`, `"12.5"`, `"12.50"`) into fen.
pub fn yuan_to_fen(s: &str) -> Option<i64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || frac.len() > 2
        || !(int.chars().chain(frac.chars())).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let yuan: i64 = int.parse().ok()?;
    let fen: i64 = format!("{frac:0<2}").parse().ok()?;
    yuan.checked_mul(100)?.checked_add(fen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan() {
        assert_eq!(yuan_to_fen("299.00"), Some(29900));
        assert_eq!(yuan_to_fen("559.5"), Some(55950));
        assert_eq!(yuan_to_fen("12"), Some(1200));
        assert_eq!(yuan_to_fen("0.05"), Some(5));
        assert_eq!(yuan_to_fen("1.005"), None);
        assert_eq!(yuan_to_fen("-1"), None);
        assert_eq!(yuan_to_fen(".5"), None);
        assert_eq!(yuan_to_fen(""), None);
    }

    #[test]
    fn maps_an_item() {
        let item: Item = serde_json::from_str(
            r#"{"id":"1003","name":"皂","simpleDesc":"d","status":0,
                "skuList":[{"id":"100301","displayString":"默认","channelPrice":"12.50","inventory":100}]}"#,
        )
        .unwrap();
        let ids = IdMap::default();
        let p = product(item, &ids).unwrap();
        assert_eq!(p.status, "off_sale");
        assert_eq!(p.skus[0].price.amount, 1250);
        assert_eq!(
            ids.platform(Kind::Sku, &p.skus[0].sku_id).as_deref(),
            Some("100301")
        );
        assert_eq!(ids.platform(Kind::Spu, &p.spu_id).as_deref(), Some("1003"));
    }
}
