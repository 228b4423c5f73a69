//! entrepot: a gateway that integrates external supplier platforms from one YAML file each.
//!
//! Data flows one way: **config → compile → plan → engine/server**.
//!
//! - [`config`]: serde types of the platform files and `entrepot.yaml`; YAML reading with
//!   line/column positions; `${env:X}` expansion.
//! - [`compile`]: checks configuration purely and builds the immutable [`plan::Plan`],
//!   collecting every problem as a located [`diagnostics::Diagnostic`].
//! - [`plan`]: the compiled platforms (templates, JSONPaths, recipes parsed once).
//! - [`engine`]: builds and signs requests (a pure function of plan, input, clock, nonce and
//!   credentials).
//! - [`credentials`]: where credential values come from, and masking them in output.
//! - [`template`]: Handlebars templates compiled once, with the integration helpers.
//! - [`recipe`]: signing and verification recipes.
//! - [`timefmt`]: the time formats platforms use.
//! - [`callbacks`]: receiving platform callbacks; [`poller`]: fetching messages on a schedule; [`dispatch`]: delivering events to internal
//!   targets.
//! - [`reload`]: hot reload of platform files, per platform.
//! - [`observe`]: where calls, callbacks, deliveries and flow steps are reported;
//!   [`metrics`]: the Prometheus metrics fed by it and served on `/metrics`.
//! - [`monitor`]: per-platform monitoring thresholds, sending `platform.degraded` and
//!   `platform.recovered`.
//! - [`server`]: the HTTP server; [`openapi`]: its OpenAPI document.
//! - [`store`]: durable state on SQLite or PostgreSQL.
//! - [`observe`]: what the gateway reports of its work; [`telemetry`]: its spans, the W3C
//!   trace context in and out, OTLP export and the log.
//! - [`schema`]: JSON Schemas generated from the config types; [`reference`]: the Markdown
//!   reference generated from the same doc comments.
//! - [`canonical`]: the mall's canonical operations, events and their schemas.
//! - [`cli`]: the command line (the binary only parses arguments and calls it); [`fdlimit`]:
//!   the open-file limit at start.

pub mod callbacks;
pub mod canonical;
pub mod cli;
pub mod compile;
pub mod config;
pub mod credentials;
pub mod diagnostics;
pub mod dispatch;
pub mod engine;
pub mod fdlimit;
pub mod flows;
pub mod ids;
pub mod metrics;
pub mod monitor;
pub mod observe;
pub mod openapi;
pub mod plan;
pub mod poller;
pub mod recipe;
pub mod reference;
pub mod reload;
pub mod schema;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod template;
pub mod timefmt;
