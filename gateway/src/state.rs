//! What every handler shares ([`AppState`]) and the gateway's own settings ([`GatewayConfig`]).
//!
//! This module sits below the routes, the middleware and the extractors, which all read the
//! state; it imports none of them back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use depot_broker::Broker;

use crate::auth::{self, Auth};
use crate::lag_history::LagHistory;
use crate::meta;
use crate::metrics::Metrics;
use crate::push::engine::Pusher;
use crate::push::guard::{Guard, Resolver, SystemResolver};
use crate::rate_limit::{RateLimitConfig, RateLimiter};
use crate::sources::Sources;

/// The longest a message may be withheld (`Depot-Delay`, `Depot-Deliver-At`, `delay_ms`,
/// `backoff_ms`) by default: 365 days, in milliseconds.
pub const DEFAULT_MAX_DELAY_MS: u64 = 365 * 24 * 3600 * 1000;

/// How long a request body may take to arrive, by default.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle client connection stays open, by default: longer than the idle timeouts of
/// the load balancers in front of Depot (AWS ALB and DigitalOcean 60 s, Google Cloud's 600 s),
/// so the balancer closes idle connections first and never sends a request into one Depot is
/// closing (a classic source of intermittent 502s).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(650);
/// How long a client may take to send a request line and headers, by default.
pub const DEFAULT_REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The gateway's own settings.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Per client IP, before authentication.
    pub rate_limit: RateLimitConfig,
    /// Per credential (user, API key, external subject), after authentication.
    pub credential_rate_limit: RateLimitConfig,
    /// Longer delays are refused (400), in milliseconds.
    pub max_delay_ms: u64,
    /// A body still arriving after this long is answered 408.
    pub body_read_timeout: Duration,
    /// How long an idle client connection stays open (zero: closed after each response).
    pub keep_alive: Duration,
    /// One INFO line per request (`depot::access`).
    pub access_log: bool,
    /// A request line and headers still arriving after this long are answered 408.
    pub request_head_timeout: Duration,
    /// Push delivery may go to loopback, private and link-local addresses.
    pub push_allow_private_networks: bool,
    /// Resolves push hosts; `None`: the system resolver. Tests inject their own.
    pub push_resolver: Option<Arc<dyn Resolver>>,
}

impl std::fmt::Debug for dyn Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            rate_limit: RateLimitConfig::default(),
            credential_rate_limit: RateLimitConfig::default(),
            max_delay_ms: DEFAULT_MAX_DELAY_MS,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            keep_alive: DEFAULT_KEEP_ALIVE,
            access_log: true,
            request_head_timeout: DEFAULT_REQUEST_HEAD_TIMEOUT,
            push_allow_private_networks: false,
            push_resolver: None,
        }
    }
}

/// What every handler shares. Cheap to clone; clones share the limiter and the metrics.
#[derive(Clone)]
pub struct AppState {
    pub broker: Broker,
    pub auth: Arc<Auth>,
    /// One limiter for every worker: building one per worker would multiply the quota.
    pub limiter: Arc<RateLimiter>,
    pub credential_limiter: Arc<RateLimiter>,
    pub metrics: Arc<Metrics>,
    /// Delivers push groups while this node leads (started by the server, see `Pusher::start`).
    pub pusher: Pusher,
    /// This node's side of webhook sources: rate limits and refusal counts.
    pub sources: Sources,
    /// Each group's lag over the last hour, for the dashboard (sampled by the server, see
    /// `LagHistory::start`).
    pub lag_history: Arc<LagHistory>,
    /// Longer delays are refused (400), in milliseconds.
    pub max_delay_ms: u64,
    /// A body still arriving after this long is answered 408.
    pub body_read_timeout: Duration,
    /// One INFO line per request (`depot::access`).
    pub access_log: bool,
    /// Connection settings for the server that serves this state.
    pub keep_alive: Duration,
    pub request_head_timeout: Duration,
    /// The OpenAPI document as `/openapi.json` serves it; attached by the app builder, which
    /// builds the routes the document describes.
    pub(crate) openapi_json: web::Bytes,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    pub(crate) shutting_down: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(broker: Broker, auth: Arc<Auth>) -> AppState {
        AppState::with_config(broker, auth, GatewayConfig::default())
    }

    pub fn with_config(broker: Broker, auth: Arc<Auth>, config: GatewayConfig) -> AppState {
        let resolver = config.push_resolver.clone().unwrap_or_else(|| Arc::new(SystemResolver));
        let guard = Guard::new(config.push_allow_private_networks, resolver);
        // Building the client fails only if TLS cannot start at all, which nothing can serve.
        let pusher = Pusher::new(broker.clone(), guard).unwrap_or_else(|e| panic!("the push HTTP client: {e}"));
        AppState {
            pusher,
            sources: Sources::default(),
            lag_history: Arc::new(LagHistory::default()),
            broker,
            auth,
            limiter: Arc::new(RateLimiter::new(config.rate_limit)),
            credential_limiter: Arc::new(RateLimiter::named("credential", config.credential_rate_limit)),
            metrics: Arc::new(Metrics::default()),
            max_delay_ms: config.max_delay_ms,
            body_read_timeout: config.body_read_timeout,
            keep_alive: config.keep_alive,
            request_head_timeout: config.request_head_timeout,
            access_log: config.access_log,
            openapi_json: web::Bytes::new(),
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Records an admin action. A failure is logged, not answered: the action itself is done.
    pub async fn audit(&self, actor: &auth::Principal, action: &str, target: &str, detail: serde_json::Value) {
        let entry = meta::AuditEntry {
            at: auth::now_millis(),
            actor: actor.actor(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail,
        };
        if let Err(e) = self.auth.store().append_audit(&entry).await {
            tracing::error!(error = %e, action, target, "audit log: entry not recorded");
        }
    }

    /// Voting members of the cluster.
    pub fn voters(&self) -> u8 {
        self.broker.voters().min(u8::MAX as usize) as u8
    }

    /// `None` when the node can serve; otherwise why not.
    pub fn not_ready(&self) -> Option<String> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Some("shutting down".to_owned());
        }
        if let Some(fault) = self.broker.storage_fault() {
            return Some(format!("storage failure, rebuilding the Raft core from disk: {fault}"));
        }
        if !self.broker.has_leader() {
            return Some(match self.broker.startup() {
                Some(progress) => format!("starting: {}", progress.describe()),
                None => "no Raft leader".to_owned(),
            });
        }
        if let Ok(space) = self.broker.disk_space() {
            if space.low() {
                return Some(format!(
                    "storage full: {} bytes free in the data dir, below the watermark of {} bytes; new messages \
                     are refused",
                    space.free, space.min_free
                ));
            }
        }
        None
    }
}
