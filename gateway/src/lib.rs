//! Depot's gateway: the HTTP API of API.md over [`depot_broker::Broker`].
//!
//! [`app`] builds the actix application (tests build the very same one in-process); [`run`]
//! serves it on a listener until a shutdown future resolves; [`openapi()`] is the document
//! generated from the handlers in `routes/`. The module layout is described in
//! docs/architecture.md ("Gateway modules").

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod core_thread;
pub mod encoding;
pub mod error;
pub mod lag_history;
pub mod meta;
pub mod metrics;
pub mod middleware;
pub mod node_metrics;
pub mod openapi;
pub mod process_stats;
pub mod push;
pub mod rate_limit;
pub mod routes;
pub mod sources;
pub mod starting;
pub mod state;
pub mod telemetry;
pub mod ui;

pub use app::{app, configure, run, MAX_BODY};
pub use middleware::{http_limits, observe, ratelimit};
pub use openapi::{openapi, openapi_json, PUBLIC_PATHS};
pub use state::{AppState, GatewayConfig, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_MAX_DELAY_MS};
