//! Integration tests: one binary, a module per area.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

mod callbacks;
mod cases;
mod cli;
mod crash;
mod credentials;
mod engine;
mod engine_auth;
mod layout;
mod pollers;
mod recipe_properties;
mod reload;
mod request_body;
mod schemas;
mod secrets;
mod server;
mod store;
mod transport;
mod vectors;
