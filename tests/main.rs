//! Integration tests: one binary, a module per area.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

mod answer_limits;
mod callback_acks;
mod callback_fuzz;
mod callback_limits;
mod callback_semantics;
mod callbacks;
mod cases;
mod cli;
mod config_fuzz;
mod contract;
mod crash;
mod credentials;
mod engine;
mod engine_auth;
mod ids;
mod layout;
mod metrics;
mod observability;
mod pollers;
mod recipe_properties;
mod recipe_transforms;
mod reconcile;
mod reload;
mod request_body;
mod rest_platform;
mod saga;
mod schemas;
mod secrets;
mod server;
mod signatures;
mod slow_clients;
mod store;
mod sync;
mod thresholds;
mod traces;
mod transport;
mod vectors;
mod xml_json_signatures;
