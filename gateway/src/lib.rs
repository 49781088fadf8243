//! Depot's gateway: the HTTP API of API.md over [`depot_broker::Broker`].
//!
//! [`app`] builds the actix application (tests build the very same one in-process); [`run`]
//! serves it on a listener until a shutdown future resolves; [`openapi`] is the document
//! generated from the handlers in `routes/`.

use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{web, App, HttpRequest};
use depot_broker::Broker;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod http_limits;
pub mod meta;
pub mod metrics;
pub mod observe;
pub mod ratelimit;
pub mod routes;
pub mod wire;

use auth::Auth;
use error::ApiError;
use metrics::Metrics;
use ratelimit::{RateLimitConfig, RateLimiter};

/// How long shutdown waits for in-flight requests; longer than the longest long poll.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// The longest a message may be withheld (`Depot-Delay`, `Depot-Deliver-At`, `delay_ms`,
/// `backoff_ms`) by default: 365 days, in milliseconds.
pub const DEFAULT_MAX_DELAY_MS: u64 = 365 * 24 * 3600 * 1000;

/// How long a request body may take to arrive, by default.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

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
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            rate_limit: RateLimitConfig::default(),
            credential_rate_limit: RateLimitConfig::default(),
            max_delay_ms: DEFAULT_MAX_DELAY_MS,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
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
    /// Longer delays are refused (400), in milliseconds.
    pub max_delay_ms: u64,
    /// A body still arriving after this long is answered 408.
    pub body_read_timeout: Duration,
    openapi_json: web::Bytes,
    shutting_down: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(broker: Broker, auth: Arc<Auth>) -> AppState {
        AppState::with_config(broker, auth, GatewayConfig::default())
    }

    pub fn with_config(broker: Broker, auth: Arc<Auth>, config: GatewayConfig) -> AppState {
        AppState {
            broker,
            auth,
            limiter: Arc::new(RateLimiter::new(config.rate_limit)),
            credential_limiter: Arc::new(RateLimiter::named("credential", config.credential_rate_limit)),
            metrics: Arc::new(Metrics::default()),
            max_delay_ms: config.max_delay_ms,
            body_read_timeout: config.body_read_timeout,
            openapi_json: web::Bytes::from(openapi_json()),
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
            return Some("no Raft leader".to_owned());
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

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Depot HTTP API",
        description = "Depot, an HTTP-first message broker. Errors are RFC 9457 problem+json with a stable `code`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(error::Problem)),
    tags(
        (name = "stations", description = "Stations hold messages"),
        (name = "messages", description = "Produce"),
        (name = "consumer-groups", description = "Consumer groups"),
        (name = "consume", description = "Pull consumption and settlement"),
        (name = "dead-letters", description = "Dead letters"),
        (name = "cluster", description = "Cluster membership"),
        (name = "operations", description = "Health, metrics and documents"),
    )
)]
struct ApiDoc;

/// The OpenAPI 3.1 document, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut api) =
        App::new().into_utoipa_app().openapi(ApiDoc::openapi()).configure(routes::configure).split_for_parts();
    add_rate_limited_responses(&mut api);
    add_body_timeout_responses(&mut api);
    add_head_limit_responses(&mut api);
    add_auth(&mut api);
    routes::refine_document(&mut api);
    api
}

/// Paths that need no credentials.
pub const PUBLIC_PATHS: [&str; 6] =
    ["/livez", "/readyz", "/openapi.json", "/v1/auth/token", "/v1/auth/refresh", "/v1/auth/revoke"];

/// A problem+json body, in the OpenAPI document.
fn problem_content() -> utoipa::openapi::Content {
    utoipa::openapi::ContentBuilder::new().schema(Some(utoipa::openapi::Ref::from_schema_name("Problem"))).build()
}

/// A problem+json response described by `description`, in the OpenAPI document.
fn problem_response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    utoipa::openapi::RefOr::T(
        utoipa::openapi::ResponseBuilder::new()
            .description(description)
            .content("application/problem+json", problem_content())
            .build(),
    )
}

/// Every operation but the public ones requires a bearer token and can answer 401 and 403.
fn add_auth(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
    let components = api.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        "bearer".to_owned(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT or API key")
                .description(Some(
                    "An access JWT from POST /v1/auth/token, or an API key `dk_...`. Missing or invalid: \
                     401 `unauthorized` with `WWW-Authenticate: Bearer`; valid but not allowed: 403 `forbidden`.",
                ))
                .build(),
        ),
    );
    let problem = problem_response;
    const UNAUTHORIZED: &str = "unauthorized: no bearer token, or an invalid, expired or revoked one";
    const FORBIDDEN: &str = "forbidden: the credential does not allow this";
    for (path, item) in api.paths.paths.iter_mut() {
        if PUBLIC_PATHS.contains(&path.as_str()) || path.starts_with("/docs") {
            continue;
        }
        for operation in crate::operations_mut(item) {
            operation.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
            let responses = &mut operation.responses.responses;
            responses.insert("401".to_owned(), problem(UNAUTHORIZED));
            responses.insert("403".to_owned(), problem(FORBIDDEN));
        }
    }
}

/// Every operation that reads a request body can answer 408 when the body arrives too slowly.
fn add_body_timeout_responses(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Ref, RefOr, ResponseBuilder};
    let response = ResponseBuilder::new()
        .description(
            "request_timeout: the body did not arrive within the server's `body_read_timeout_ms` \
             (default 30000); the connection is closed.",
        )
        .content("application/problem+json", problem_content())
        .build();
    api.components
        .get_or_insert_with(Default::default)
        .responses
        .insert("RequestTimeout".to_owned(), RefOr::T(response));
    for item in api.paths.paths.values_mut() {
        for operation in crate::operations_mut(item) {
            if operation.request_body.is_some() {
                operation
                    .responses
                    .responses
                    .insert("408".to_owned(), RefOr::Ref(Ref::from_response_name("RequestTimeout")));
            }
        }
    }
}

/// Every operation can answer 414 and 431 (limits on the request head).
fn add_head_limit_responses(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Ref, RefOr};
    let problem = problem_response;
    let responses = &mut api.components.get_or_insert_with(Default::default).responses;
    responses.insert(
        "UriTooLong".to_owned(),
        problem(&format!("uri_too_long: the request target is longer than {} bytes", http_limits::MAX_URI)),
    );
    responses.insert(
        "HeaderFieldsTooLarge".to_owned(),
        problem(&format!(
            "header_fields_too_large: the header fields are larger than {} bytes",
            http_limits::MAX_HEADER_BYTES
        )),
    );
    for item in api.paths.paths.values_mut() {
        for operation in crate::operations_mut(item) {
            let responses = &mut operation.responses.responses;
            responses.insert("414".to_owned(), RefOr::Ref(Ref::from_response_name("UriTooLong")));
            responses.insert("431".to_owned(), RefOr::Ref(Ref::from_response_name("HeaderFieldsTooLarge")));
        }
    }
}

/// Every operation but the exempt probes can answer 429; one shared response describes it.
fn add_rate_limited_responses(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::{KnownFormat, ObjectBuilder, Ref, RefOr, ResponseBuilder, SchemaFormat, Type};
    let integer =
        || ObjectBuilder::new().schema_type(Type::Integer).format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)));
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let response = ResponseBuilder::new()
        .description(
            "rate_limited: over the per-client-IP quota (IPv6 keyed by /64). Headers follow the IETF draft \
             (draft-ietf-httpapi-ratelimit-headers) structured-field form, only on 429: \
             `RateLimit-Policy: \"ip\";q=<burst>;w=<seconds to refill an empty bucket>` and \
             `RateLimit: \"ip\";r=0;t=<seconds until a request passes>`; `Retry-After` is the same \
             number of seconds, rounded up.",
        )
        .header("Retry-After", HeaderBuilder::new().schema(integer()).description(Some("Seconds to wait")).build())
        .header(
            "RateLimit-Policy",
            HeaderBuilder::new().schema(string()).description(Some("e.g. `\"ip\";q=2000;w=2`")).build(),
        )
        .header("RateLimit", HeaderBuilder::new().schema(string()).description(Some("e.g. `\"ip\";r=0;t=1`")).build())
        .content("application/problem+json", problem_content())
        .build();
    api.components.get_or_insert_with(Default::default).responses.insert("RateLimited".to_owned(), RefOr::T(response));
    for (path, item) in api.paths.paths.iter_mut() {
        if ratelimit::EXEMPT_PATHS.contains(&path.as_str()) {
            continue;
        }
        for operation in crate::operations_mut(item) {
            operation.responses.responses.insert("429".to_owned(), RefOr::Ref(Ref::from_response_name("RateLimited")));
        }
    }
}

/// Every operation of a path item.
pub(crate) fn operations_mut(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// The document as served and committed: pretty JSON with a trailing newline.
pub fn openapi_json() -> String {
    let mut json = openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    json.push('\n');
    json
}

fn json_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let api = match err {
        JsonPayloadError::OverflowKnownLength { length, limit } => {
            ApiError::PayloadTooLarge(format!("the body has {length} bytes; the limit is {limit}"))
        }
        JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge(format!("the body exceeds {limit} bytes")),
        JsonPayloadError::ContentType => {
            ApiError::UnsupportedMediaType("the body must be JSON (Content-Type: application/json)".to_owned())
        }
        other => ApiError::InvalidBody(other.to_string()),
    };
    api.into()
}

fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::InvalidRequest(format!("query: {err}")).into()
}

fn path_error(err: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::InvalidRequest(format!("path: {err}")).into()
}

async fn route_not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(routes::unrouted(req.method(), req.path()))
}

/// `/docs` serves the interactive docs under `/docs/`, assets bundled in the binary.
async fn docs_redirect() -> actix_web::HttpResponse {
    actix_web::HttpResponse::PermanentRedirect().insert_header((actix_web::http::header::LOCATION, "/docs/")).finish()
}

/// Registers every route, the extractor configs that turn actix's own errors into
/// problem+json, and the problem+json 404 for unknown routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(routes::messages::BATCH_BODY_LIMIT)
            .content_type_required(false)
            .error_handler(json_error),
    )
    .app_data(web::QueryConfig::default().error_handler(query_error))
    .app_data(web::PathConfig::default().error_handler(path_error))
    .default_service(web::to(route_not_found));
    routes::configure(&mut utoipa_actix_web::service_config::ServiceConfig::new(cfg));
    cfg.route("/docs", web::get().to(docs_redirect))
        .service(SwaggerUi::new("/docs/{_:.*}").config(utoipa_swagger_ui::Config::from("/openapi.json")));
}

/// The application with its state; what [`run`] serves and tests call in-process.
pub fn app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(web::Data::new(state))
        .configure(configure)
        .wrap(actix_web::middleware::from_fn(http_limits::head))
        .wrap(actix_web::middleware::from_fn(ratelimit::limit))
        .wrap(actix_web::middleware::from_fn(observe::observe))
}

/// The HTTP server of [`app`], built as actix-web's `HttpServer` builds it (same defaults) but with
/// our own handler of `Expect: 100-continue`, which `HttpServer` does not let us set: actix
/// answers `100 Continue` before the application sees the request, so a body over every route's
/// limit is refused there, with 413, instead of being invited.
fn serve(listener: TcpListener, state: AppState) -> std::io::Result<actix_web::dev::Server> {
    use actix_service::{map_config, IntoServiceFactory, ServiceFactoryExt};
    let addr = listener.local_addr()?;
    let builder = actix_server::Server::build();
    let drain = builder.graceful_shutdown_signal();
    let server = builder
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
        .listen("depot-http", listener, move || {
            let drain = drain.clone();
            let app = app(state.clone()).into_factory().map_err(|e| e.error_response());
            actix_http::HttpService::build()
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                .h1_allow_half_closed(true)
                .local_addr(addr)
                .graceful_shutdown_signal(move || {
                    let drain = drain.clone();
                    async move { drain.notified().await }
                })
                .expect(actix_web::dev::fn_service(expect_continue))
                .finish(map_config(app, |()| actix_web::dev::AppConfig::default()))
                .tcp()
        })?
        .run();
    Ok(server)
}

/// The largest body any route reads.
pub const MAX_BODY: usize = {
    let (a, b) = (routes::messages::SINGLE_BODY_LIMIT, routes::messages::BATCH_BODY_LIMIT);
    let ab = if a > b { a } else { b };
    if ab > wire::JSON_BODY_LIMIT {
        ab
    } else {
        wire::JSON_BODY_LIMIT
    }
};

/// Called for a request with `Expect: 100-continue`, before actix answers `100 Continue`: a
/// declared body past [`MAX_BODY`] gets 413 instead (each route's own, smaller limit is checked
/// by the route, before it reads the body).
async fn expect_continue(req: actix_http::Request) -> Result<actix_http::Request, actix_web::Error> {
    match wire::declared_length(&req.head().headers) {
        Some(length) if length > MAX_BODY as u64 => Err(ApiError::PayloadTooLarge(format!(
            "the body has {length} bytes; no request may have more than {MAX_BODY}"
        ))
        .into()),
        _ => Ok(req),
    }
}

/// Serves the API on `listener` until `shutdown` resolves; then stops accepting, lets in-flight
/// requests (long polls included) finish, and shuts the broker down. Dead-letter pointers flow
/// from the broker's outbox into the metadata store meanwhile.
pub async fn run(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let broker = state.broker.clone();
    broker.spawn_outbox(meta::outbox::StoreSink::new(state.auth.store().clone()));
    let listener_task = match state.auth.store().invalidations().await {
        Ok(Some(mut heard)) => {
            let auth = state.auth.clone();
            Some(tokio::spawn(async move {
                while let Some(what) = heard.recv().await {
                    auth.forget(&what);
                }
            }))
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "not listening for other nodes' deletions; caches expire by TTL only");
            None
        }
    };
    let shutting_down = state.shutting_down.clone();
    // Keeps the limiters' tables bounded when clients rotate addresses or credentials.
    let limiters = [state.limiter.clone(), state.credential_limiter.clone()];
    let pruner = tokio::spawn(async move {
        let mut every = tokio::time::interval(ratelimit::PRUNE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            for limiter in &limiters {
                let left = limiter.prune();
                tracing::trace!(keys = left, "pruned a rate limiter");
            }
        }
    });
    let server = serve(listener, state)?;
    let handle = server.handle();
    let mut server = std::pin::pin!(server);
    let served = tokio::select! {
        r = &mut server => r,
        () = shutdown => {
            shutting_down.store(true, Ordering::Release);
            // Long polls answer now instead of holding the drain for up to 20 s.
            broker.begin_drain();
            tracing::info!("shutting down: draining in-flight requests");
            let (r, ()) = tokio::join!(&mut server, handle.stop(true));
            r
        }
    };
    pruner.abort();
    if let Some(task) = listener_task {
        task.abort();
    }
    let stopped = broker.shutdown().await.map_err(std::io::Error::other);
    served.and(stopped)
}
