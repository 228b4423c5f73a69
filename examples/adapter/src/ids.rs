//! Internal ids ↔ platform ids, kept in memory: a platform id seen for the first time gets a
//! new internal id `<kind>_<32 hex>` (the gateway's format).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// The kinds of id the adapter translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A product.
    Spu,
    /// A SKU.
    Sku,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Spu => "spu",
            Kind::Sku => "sku",
        }
    }
}

#[derive(Default)]
struct Pairs {
    to_platform: HashMap<String, String>,
    to_internal: HashMap<String, String>,
}

#[derive(Default)]
struct Maps {
    spu: Pairs,
    sku: Pairs,
}

impl Maps {
    fn of(&mut self, kind: Kind) -> &mut Pairs {
        match kind {
            Kind::Spu => &mut self.spu,
            Kind::Sku => &mut self.sku,
        }
    }
}

/// The id mappings of one adapter process.
#[derive(Default)]
pub struct IdMap {
    maps: Mutex<Maps>,
}

impl IdMap {
    /// The internal id of a platform id, allocated on first sight.
    pub fn internal(&self, kind: Kind, platform_id: &str) -> String {
        let mut maps = self.maps.lock().unwrap_or_else(PoisonError::into_inner);
        let pairs = maps.of(kind);
        if let Some(internal) = pairs.to_internal.get(platform_id) {
            return internal.clone();
        }
        let internal = format!("{}_{}", kind.prefix(), uuid::Uuid::new_v4().simple());
        pairs
            .to_internal
            .insert(platform_id.to_string(), internal.clone());
        pairs
            .to_platform
            .insert(internal.clone(), platform_id.to_string());
        internal
    }

    /// The platform id of an internal id, if the adapter has seen it.
    pub fn platform(&self, kind: Kind, internal_id: &str) -> Option<String> {
        let mut maps = self.maps.lock().unwrap_or_else(PoisonError::into_inner);
        maps.of(kind).to_platform.get(internal_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_once_and_translates_back() {
        let ids = IdMap::default();
        let a = ids.internal(Kind::Spu, "1001");
        assert_eq!(a.len(), 4 + 32);
        assert!(a.starts_with("spu_"));
        assert_eq!(ids.internal(Kind::Spu, "1001"), a);
        assert_eq!(ids.platform(Kind::Spu, &a).as_deref(), Some("1001"));
        // Kinds are separate.
        assert_eq!(ids.platform(Kind::Sku, &a), None);
        assert!(ids.internal(Kind::Sku, "1001").starts_with("sku_"));
    }
}
