//! The rate-limit middleware (our own over `governor`: actix-governor is GPL). The limiter itself
//! is [`crate::rate_limit`]; one lives in [`crate::state::AppState`], shared by every worker, and
//! [`crate::app::run`] prunes it every [`PRUNE_EVERY`], so memory stays bounded when keys rotate.
//!
//! Over quota: 429 `rate_limited` with `Retry-After` (whole seconds, rounded up) and the IETF
//! draft (draft-ietf-httpapi-ratelimit-headers) structured fields
//! `RateLimit-Policy: "ip";q=<burst>;w=<window secs>` and `RateLimit: "ip";r=0;t=<secs>`.

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use crate::error::ApiError;
pub use crate::rate_limit::{RateKey, RateLimitConfig, RateLimiter};
use crate::state::AppState;

/// Paths never limited: probes must keep working under load.
pub const EXEMPT_PATHS: [&str; 2] = ["/livez", "/readyz"];

/// How often [`crate::run`] prunes the limiter.
pub const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// The middleware: answers 429 over quota, passes everything else on.
pub async fn limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let limited = match req.app_data::<web::Data<AppState>>() {
        Some(state) if !EXEMPT_PATHS.contains(&req.path()) => {
            let xff = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
            let key = state.limiter.key_for(req.peer_addr(), xff);
            state.limiter.check(&key).err()
        }
        _ => None,
    };
    let Some(limited) = limited else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    let response = actix_web::ResponseError::error_response(&ApiError::RateLimited(limited));
    Ok(req.into_response(response))
}
