//! Seed data: products (SPUs) with their SKUs, prices and inventory.

/// A set of products the simulator starts with. Build one with [`Catalog::new`] and
/// [`Catalog::with_spu`], or use [`Catalog::sample`] / [`Catalog::large`].
///
/// SPUs keep the order they were added in; that is the order of the paged listing.
/// Ids should be unique: when an SPU or SKU id repeats, the first one wins for look-ups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    /// The products, in listing order.
    pub spus: Vec<Spu>,
}

/// A product (the platform's "item").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spu {
    /// Platform SPU id, e.g. `"1001"`.
    pub id: String,
    /// Product name.
    pub name: String,
    /// Short description (`simpleDesc`).
    pub simple_desc: String,
    /// On sale (`status` 1) or not (`status` 0).
    pub on_sale: bool,
    /// The product's SKUs.
    pub skus: Vec<Sku>,
    /// When it last changed (`updateTime`); the change feed of `yanxuan.item.id.batch.get`
    /// (`updatedSince`) filters on it. Seed products: [`CATALOG_EPOCH`] (plus `i` seconds for
    /// [`Catalog::large`]'s product `i`).
    pub updated_at: time::OffsetDateTime,
}

/// When the seed catalog's products last changed: 2026-01-01T00:00:00Z.
pub const CATALOG_EPOCH: time::OffsetDateTime = time::macros::datetime!(2026-01-01 00:00:00 UTC);

/// A sellable variant of a product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sku {
    /// Platform SKU id, e.g. `"100101"`.
    pub id: String,
    /// Variant label (`displayString`), e.g. `"颜色:米白"`.
    pub display: String,
    /// Channel price in fen (`channelPrice` is this formatted as yuan).
    pub price_fen: i64,
    /// Available inventory.
    pub inventory: i64,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a product (builder style).
    pub fn with_spu(mut self, spu: Spu) -> Self {
        self.spus.push(spu);
        self
    }

    /// Three products, six SKUs:
    ///
    /// | spu | name | status | sku | displayString | price | inventory |
    /// | --- | --- | --- | --- | --- | --- | --- |
    /// | 1001 | 日式和风懒人沙发 | 1 | 100101 | 颜色:米白 | 299.00 | 20 |
    /// | | | | 100102 | 颜色:浅灰 | 299.00 | 5 |
    /// | 1002 | 澳洲进口纯羊毛被 | 1 | 100201 | 规格:150*200cm | 399.00 | 12 |
    /// | | | | 100202 | 规格:200*230cm | 499.00 | 0 |
    /// | | | | 100203 | 规格:220*240cm | 559.50 | 3 |
    /// | 1003 | 手工冷制皂(3块装) | 0 | 100301 | 默认 | 12.50 | 100 |
    pub fn sample() -> Self {
        Catalog::new()
            .with_spu(
                Spu::new("1001", "日式和风懒人沙发")
                    .simple_desc("榻榻米上的慵懒时光")
                    .with_sku(Sku::new("100101", "颜色:米白", 29900, 20))
                    .with_sku(Sku::new("100102", "颜色:浅灰", 29900, 5)),
            )
            .with_spu(
                Spu::new("1002", "澳洲进口纯羊毛被")
                    .simple_desc("100%澳洲美利奴羊毛")
                    .with_sku(Sku::new("100201", "规格:150*200cm", 39900, 12))
                    .with_sku(Sku::new("100202", "规格:200*230cm", 49900, 0))
                    .with_sku(Sku::new("100203", "规格:220*240cm", 55950, 3)),
            )
            .with_spu(
                Spu::new("1003", "手工冷制皂(3块装)")
                    .simple_desc("温和洁面，天然植物油")
                    .on_sale(false)
                    .with_sku(Sku::new("100301", "默认", 1250, 100)),
            )
    }

    /// A generated catalog for paging tests: `n_spu` products, each with `skus_per_spu` SKUs,
    /// all on sale.
    ///
    /// SPU `i` (0-based) has id `1000001 + i` (`"1000001"`, `"1000002"`, …), name `"测试商品{i+1}"`;
    /// its SKU `j` has id `<spu id><j+1 as 3 digits>` (`"1000001001"`), price
    /// `9.90 + ((i*7 + j*3) % 200)` yuan and inventory `10 + (i + j) % 50`.
    pub fn large(n_spu: usize, skus_per_spu: usize) -> Self {
        let spus = (0..n_spu)
            .map(|i| {
                let spu_id = (1_000_001u64 + i as u64).to_string();
                let skus = (0..skus_per_spu)
                    .map(|j| {
                        let price_units = (i.wrapping_mul(7).wrapping_add(j.wrapping_mul(3))) % 200;
                        let stock = (i.wrapping_add(j)) % 50;
                        Sku::new(
                            &format!("{spu_id}{:03}", j + 1),
                            &format!("规格:{}号", j + 1),
                            990 + price_units as i64 * 100,
                            10 + stock as i64,
                        )
                    })
                    .collect();
                Spu {
                    id: spu_id,
                    name: format!("测试商品{}", i + 1),
                    simple_desc: format!("分页测试用商品第{}号", i + 1),
                    on_sale: true,
                    skus,
                    updated_at: CATALOG_EPOCH + time::Duration::seconds(i as i64),
                }
            })
            .collect();
        Catalog { spus }
    }

    /// Every SKU of every product, in listing order.
    pub fn skus(&self) -> impl Iterator<Item = &Sku> {
        self.spus.iter().flat_map(|spu| spu.skus.iter())
    }
}

impl Spu {
    /// A product on sale with no description and no SKUs yet.
    pub fn new(id: &str, name: &str) -> Self {
        Spu {
            id: id.to_string(),
            name: name.to_string(),
            simple_desc: String::new(),
            on_sale: true,
            skus: Vec::new(),
            updated_at: CATALOG_EPOCH,
        }
    }

    /// Sets the short description.
    pub fn simple_desc(mut self, desc: &str) -> Self {
        self.simple_desc = desc.to_string();
        self
    }

    /// Sets whether the product is on sale.
    pub fn on_sale(mut self, on_sale: bool) -> Self {
        self.on_sale = on_sale;
        self
    }

    /// Adds a SKU.
    pub fn with_sku(mut self, sku: Sku) -> Self {
        self.skus.push(sku);
        self
    }
}

impl Sku {
    /// A SKU with its label, price in fen and inventory.
    pub fn new(id: &str, display: &str, price_fen: i64, inventory: i64) -> Self {
        Sku {
            id: id.to_string(),
            display: display.to_string(),
            price_fen,
            inventory,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn sample_shape() {
        let c = Catalog::sample();
        assert_eq!(c.spus.len(), 3);
        assert_eq!(
            c.spus.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["1001", "1002", "1003"]
        );
        assert!(c.spus.iter().all(|s| (1..=3).contains(&s.skus.len())));
        assert_eq!(c.skus().count(), 6);
    }

    #[test]
    fn large_ids_are_unique() {
        let c = Catalog::large(120, 3);
        assert_eq!(c.spus.len(), 120);
        let ids: HashSet<&str> = c.skus().map(|s| s.id.as_str()).collect();
        assert_eq!(ids.len(), 360);
        assert_eq!(c.spus.first().map(|s| s.id.as_str()), Some("1000001"));
        assert_eq!(c.skus().next().map(|s| s.id.as_str()), Some("1000001001"));
        assert!(c.skus().all(|s| s.price_fen >= 990 && s.inventory >= 10));
    }
}
