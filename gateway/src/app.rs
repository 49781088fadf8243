//! The actix application ([`app`]) and its server ([`run`]).

use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{web, App, HttpRequest};
use utoipa_swagger_ui::SwaggerUi;

use crate::error::ApiError;
use crate::middleware::{http_limits, observe, ratelimit};
use crate::state::AppState;
use crate::{encoding, routes};

/// How long shutdown waits for in-flight requests; longer than the longest long poll.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

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
    Err(unrouted(req.method(), req.path()))
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
    // The dashboard, like /docs, is a page and not part of the API document.
    crate::ui::configure(cfg);
}

/// The application with its state; what [`run`] serves and tests call in-process.
pub fn app(
    mut state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    state.openapi_json = crate::openapi::served_json();
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
    let keep_alive = match state.keep_alive {
        d if d.is_zero() => actix_http::KeepAlive::Disabled,
        d => actix_http::KeepAlive::Timeout(d),
    };
    let head_timeout = state.request_head_timeout;
    let builder = actix_server::Server::build();
    let drain = builder.graceful_shutdown_signal();
    let server = builder
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
        .listen("depot-http", listener, move || {
            // Called once on each worker thread, inside its runtime: the broker's answers to this
            // worker's requests come in one batch per Raft entry (one wake instead of one each).
            depot_broker::serve_replies_on_this_thread();
            let drain = drain.clone();
            let app = app(state.clone()).into_factory().map_err(|e| e.error_response());
            actix_http::HttpService::build()
                .keep_alive(keep_alive)
                .client_request_timeout(head_timeout)
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
    if ab > encoding::JSON_BODY_LIMIT {
        ab
    } else {
        encoding::JSON_BODY_LIMIT
    }
};

/// Called for a request with `Expect: 100-continue`, before actix answers `100 Continue`: a
/// declared body past [`MAX_BODY`] gets 413 instead (each route's own, smaller limit is checked
/// by the route, before it reads the body).
async fn expect_continue(req: actix_http::Request) -> Result<actix_http::Request, actix_web::Error> {
    match encoding::declared_length(&req.head().headers) {
        Some(length) if length > MAX_BODY as u64 => Err(ApiError::PayloadTooLarge(format!(
            "the body has {length} bytes; no request may have more than {MAX_BODY}"
        ))
        .into()),
        _ => Ok(req),
    }
}

/// Serves the API on `listener` until `shutdown` resolves; then stops accepting, lets in-flight
/// requests (long polls included) finish, and shuts the broker down.
pub async fn run(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let broker = state.broker.clone();
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
    // Push groups are delivered from here on, while this node leads.
    let pusher = state.pusher.clone();
    pusher.start();
    // Refused ingest deliveries reach the sources' replicated totals from here on.
    let reporter = state.sources.start(broker.clone());
    // The dashboard's lag charts have their past hour from here on.
    let lag_sampler = state.lag_history.start(broker.clone());
    let server = serve(listener, state)?;
    let handle = server.handle();
    let mut server = std::pin::pin!(server);
    let served = tokio::select! {
        r = &mut server => r,
        () = shutdown => {
            shutting_down.store(true, Ordering::Release);
            // Long polls answer now instead of holding the drain for up to 20 s.
            broker.begin_drain();
            // No new push attempt starts; those under way finish and are settled.
            pusher.stop();
            tracing::info!("shutting down: draining in-flight requests");
            let (r, ()) = tokio::join!(&mut server, handle.stop(true));
            r
        }
    };
    pruner.abort();
    reporter.abort();
    lag_sampler.abort();
    if let Some(task) = listener_task {
        task.abort();
    }
    let stopped = broker.shutdown().await.map_err(std::io::Error::other);
    served.and(stopped)
}

/// The documented paths as actix patterns, with the methods each has, most specific first
/// (fewest parameters), so `/dead-letters/redrive` wins over `/dead-letters/{id}`.
fn route_table() -> &'static [(String, actix_web::dev::ResourceDef, Vec<&'static str>)] {
    static TABLE: std::sync::OnceLock<Vec<(String, actix_web::dev::ResourceDef, Vec<&'static str>)>> =
        std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table: Vec<_> = crate::openapi::openapi()
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("HEAD", item.head.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                    ("OPTIONS", item.options.is_some()),
                    ("TRACE", item.trace.is_some()),
                ];
                let methods = methods.into_iter().filter(|(_, has)| *has).map(|(m, _)| m).collect();
                (path.clone(), actix_web::dev::ResourceDef::new(path.as_str()), methods)
            })
            .collect();
        table.sort_by_key(|(path, _, _)| path.matches('{').count());
        table
    })
}

/// What to answer for a request no route took: 405 `method_not_allowed` (with `Allow`) when its
/// path names a documented resource that lacks the method; 400 when the method fits but a path
/// parameter does not (e.g. a dead-letter id that is not a number); else 404 `not_found`.
fn unrouted(method: &actix_web::http::Method, path: &str) -> ApiError {
    match route_table().iter().find(|(_, def, _)| def.is_match(path)) {
        Some((template, _, methods)) if methods.contains(&method.as_str()) => {
            ApiError::InvalidRequest(format!("path {path} does not fit {template}"))
        }
        Some((_, _, methods)) => ApiError::MethodNotAllowed { method: method.to_string(), allow: methods.join(", ") },
        None => ApiError::RouteNotFound(format!("{method} {path}")),
    }
}
