//! The consignment flows, built on canonical operations only (so they work for every platform
//! described in YAML) and on the store's flow state, so any instance can continue a flow
//! another started: product sync into the product center, the order saga (check, create after
//! payment, cancel when creation fails for good), and reconciliation.

pub mod reconcile;
pub mod saga;
pub mod sync;
