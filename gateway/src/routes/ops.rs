//! Operations: liveness, readiness, metrics, the OpenAPI document.

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::extract::ScrapeMetrics;
use crate::auth::Authorized;
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(livez).service(readyz).service(metrics).service(openapi_json);
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable`.
    pub status: String,
    /// Why the node cannot serve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// On a node with a `[tiering]` bucket: whether it answers. An unreachable bucket does not
    /// make the node unready (messages stay on local disk until it is back).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tiering: Option<TieringHealth>,
    /// On a member of a cluster that has not known a leader since it started: which configured
    /// nodes answer and which are missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup: Option<StartupHealth>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StartupHealth {
    /// Every configured node id, this one included.
    pub configured: Vec<u64>,
    /// The configured nodes that answered the last probe, this one included.
    pub up: Vec<u64>,
    /// The configured nodes that did not.
    pub missing: Vec<u64>,
    /// How many must answer before a new cluster is initialized.
    pub wait_for: usize,
}

impl From<depot_broker::cluster::progress::Progress> for StartupHealth {
    fn from(p: depot_broker::cluster::progress::Progress) -> StartupHealth {
        StartupHealth { missing: p.missing(), configured: p.configured, up: p.up, wait_for: p.wait_for }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TieringHealth {
    pub bucket: String,
    /// `null` before the first request to the bucket.
    pub reachable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Bytes of sealed segments old enough to tier that are not in the bucket yet.
    pub lag_bytes: u64,
}

fn tiering_health(state: &AppState) -> Option<TieringHealth> {
    state.broker.tier_status().map(|s| TieringHealth {
        bucket: s.bucket,
        reachable: s.reachable,
        last_error: s.last_error,
        lag_bytes: s.lag_bytes,
    })
}

/// The process is up.
#[utoipa::path(tag = "operations", responses((status = 200, body = Health)))]
#[get("/livez")]
async fn livez() -> web::Json<Health> {
    web::Json(Health { status: "ok".to_owned(), reason: None, tiering: None, startup: None })
}

/// How long /readyz waits for the metadata store.
const READY_PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The node can serve requests.
///
/// Ready means: it has a Raft leader that a quorum confirms, it has applied what that leader
/// committed, it is not shutting down, and the metadata store answers.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, body = Health), (status = 503, description = "Not ready, with the reason", body = Health))
)]
#[get("/readyz")]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let reason = match state.not_ready() {
        Some(reason) => Some(reason),
        // A leader cut off from its quorum still names itself leader: ask the quorum.
        None => match tokio::time::timeout(READY_PING_TIMEOUT, state.broker.barrier()).await {
            Ok(Err(e)) => Some(format!("raft: {e}")),
            Err(_) => Some("raft: the leader did not confirm a quorum within 1 s".to_owned()),
            Ok(Ok(())) => match tokio::time::timeout(READY_PING_TIMEOUT, state.auth.store().ping()).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("metadata store: {e}")),
                Err(_) => Some("metadata store: no answer within 1 s".to_owned()),
            },
        },
    };
    let tiering = tiering_health(&state);
    let startup = state.broker.startup();
    match reason {
        None => HttpResponse::Ok().json(Health { status: "ok".to_owned(), reason: None, tiering, startup: None }),
        Some(reason) => HttpResponse::ServiceUnavailable().json(Health {
            status: "unavailable".to_owned(),
            reason: Some(reason),
            tiering,
            startup: startup.map(StartupHealth::from),
        }),
    }
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(tag = "operations", responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
#[get("/openapi.json")]
async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(state.openapi_json.clone())
}

/// Prometheus metrics, text exposition format 0.0.4, every name starting with `depot_`; each
/// family, its labels and meaning are in docs/observability.md. The main ones: requests
/// (`depot_http_requests_total`, `depot_http_request_duration_seconds`,
/// `depot_rate_limited_total`, `depot_login_failures_total`); messages
/// (`depot_messages_produced_total`, `depot_messages_fetched_total`,
/// `depot_messages_acked_total`, `depot_messages_dead_lettered_total`); consumer groups
/// (`depot_consumer_group_lag`, `depot_consumer_group_pending`,
/// `depot_consumer_group_dead_lettered`); stations (`depot_station_messages`,
/// `depot_station_bytes`, `depot_station_local_bytes`, `depot_station_tiered_bytes`); Raft
/// (`depot_raft_term`, `depot_raft_commit_index`, `depot_raft_apply_lag`,
/// `depot_raft_leader_changes_total`, `depot_raft_is_leader`, `depot_raft_has_leader`); disk
/// (`depot_log_fsync_duration_seconds`, `depot_disk_free_bytes`, `depot_disk_min_free_bytes`);
/// push (`depot_push_deliveries_total`, `depot_push_attempt_duration_seconds`); sources
/// (`depot_source_requests_total`); tiering, on nodes with a bucket (`depot_tier_uploads_total`,
/// `depot_tier_upload_failures_total`, `depot_tier_lag_bytes`); and the process
/// (`depot_process_resident_memory_bytes`, `depot_process_cpu_seconds_total`, `depot_open_fds`).
///
/// It names every station and group, so it needs a bearer token: an administrator's, or an API
/// key (or a token exchanged for one) of an administrator whose scopes grant the `metrics` action
/// (`{"stations": "*", "actions": ["metrics"]}`); external tokens need `metrics` in their scopes.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain; version=0.0.4"))
)]
#[get("/metrics")]
async fn metrics(_auth: Authorized<ScrapeMetrics>, state: web::Data<AppState>) -> HttpResponse {
    let stations = state.broker.stations_now();
    let mut text = state.metrics.render(&stations, state.broker.open_files());
    let node = crate::node_metrics::NodeFigures {
        raft: state.broker.raft_status().await,
        fsyncs: depot_broker::log::fsync_stats(),
        disk: state.broker.disk_space().ok(),
        stations: &stations,
        process: crate::process_stats::read(),
    };
    crate::node_metrics::render_node(&mut text, &node);
    let states: Vec<(String, String, &'static str)> =
        state.broker.push_groups_now().into_iter().map(|(s, g, p)| (s, g, p.state.as_str())).collect();
    state.pusher.live().render(&mut text, &states);
    state.sources.render(&mut text);
    if let Some(tier) = state.broker.tier_status() {
        crate::metrics::render_tier(&mut text, &tier);
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text)
}
