//! What the API port answers while the broker opens: recovery of a large data dir, or a member
//! of a cluster waiting for its peers. Probes get answers at once instead of hanging in the
//! listen backlog: `/livez` 200, `/readyz` 503 with the reason (which nodes answer and which are
//! missing), and every other request 503 `not_leader_unavailable` with `Retry-After`.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, HttpResponse};
use depot_broker::cluster::progress::StartupProgress;

use crate::error::{problem, Code};
use crate::routes::ops::{Health, StartupHealth};

/// How long a client told the node is starting should wait before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// The interim server; [`Starting::stop`] hands the listener back to the real one.
pub struct Starting {
    handle: ServerHandle,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Why the node cannot serve yet, and the peers' state when it is a member of a cluster.
fn health(progress: Option<&StartupProgress>) -> Health {
    let progress = progress.map(StartupProgress::get);
    let reason = match &progress {
        Some(p) if !p.configured.is_empty() => format!("starting: {}", p.describe()),
        _ => "starting: opening the data dir".to_owned(),
    };
    Health {
        status: "unavailable".to_owned(),
        reason: Some(reason),
        tiering: None,
        startup: progress.filter(|p| !p.configured.is_empty()).map(StartupHealth::from),
    }
}

/// Serves the interim answers on a clone of `listener` until [`Starting::stop`].
pub fn serve(listener: &TcpListener, progress: Option<StartupProgress>) -> std::io::Result<Starting> {
    let listener = listener.try_clone()?;
    let server = actix_web::HttpServer::new(move || {
        let progress = progress.clone();
        actix_web::App::new()
            .route("/livez", web::get().to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "ok"})) }))
            .route(
                "/readyz",
                web::get().to(move || {
                    let health = health(progress.as_ref());
                    async move { HttpResponse::ServiceUnavailable().json(health) }
                }),
            )
            .default_service(web::to(|| async {
                let mut response =
                    problem(Code::NotLeaderUnavailable, "unavailable: the node is starting; retry shortly".to_owned());
                response.headers_mut().insert(
                    actix_web::http::header::RETRY_AFTER,
                    actix_web::http::header::HeaderValue::from(RETRY_AFTER.as_secs()),
                );
                response
            }))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    let handle = server.handle();
    Ok(Starting { handle, server: tokio::spawn(server) })
}

impl Starting {
    /// Stops answering; connections arriving meanwhile wait in the listener's backlog for the
    /// real server.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.server.await;
    }
}
