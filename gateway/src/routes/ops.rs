//! Operations: liveness, readiness, the OpenAPI document.

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(livez).service(readyz).service(openapi_json);
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable`.
    pub status: String,
    /// Why the node cannot serve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The process is up.
#[utoipa::path(tag = "operations", responses((status = 200, body = Health)))]
#[get("/livez")]
async fn livez() -> web::Json<Health> {
    web::Json(Health { status: "ok".to_owned(), reason: None })
}

/// The node can serve requests.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, body = Health), (status = 503, description = "Not ready, with the reason", body = Health))
)]
#[get("/readyz")]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.not_ready() {
        None => HttpResponse::Ok().json(Health { status: "ok".to_owned(), reason: None }),
        Some(reason) => {
            HttpResponse::ServiceUnavailable().json(Health { status: "unavailable".to_owned(), reason: Some(reason) })
        }
    }
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(tag = "operations", responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
#[get("/openapi.json")]
async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(state.openapi_json.clone())
}
