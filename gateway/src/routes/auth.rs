//! Tokens: log in with a password or an API key, refresh (rotating), revoke.

use actix_web::{post, web, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::Issued;
use crate::encoding;
use crate::error::{ApiError, Problem};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(token).service(refresh).service(revoke);
}

/// The longest username or password read; argon2 work is bounded by it.
pub const MAX_PASSWORD: usize = 1024;

/// Either `{username, password}` or `{api_key}` (documented as [`TokenRequestDoc`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub username: Option<String>,
    pub password: Option<String>,
    /// An API key `dk_...`: the token carries the key's scopes.
    pub api_key: Option<String>,
}

/// The documented shape of [`TokenRequest`]: exactly one of `{username, password}` and
/// `{api_key}` (the other fields absent or null).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
#[schema(as = TokenRequest)]
pub enum TokenRequestDoc {
    Password(PasswordLoginDoc),
    ApiKey(ApiKeyLoginDoc),
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PasswordLoginDoc {
    username: String,
    password: String,
    #[schema(schema_with = crate::routes::null_schema)]
    api_key: Option<()>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ApiKeyLoginDoc {
    #[schema(schema_with = crate::routes::null_schema)]
    username: Option<()>,
    #[schema(schema_with = crate::routes::null_schema)]
    password: Option<()>,
    /// An API key `dk_...`: the token carries the key's scopes.
    api_key: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Single use: `/v1/auth/refresh` spends it and answers a new one.
    pub refresh_token: String,
}

impl From<Issued> for TokenResponse {
    fn from(i: Issued) -> Self {
        TokenResponse {
            access_token: i.access_token,
            token_type: "Bearer".to_owned(),
            expires_in: i.expires_in,
            refresh_token: i.refresh_token,
        }
    }
}

/// Log in: a username and password, or an API key, for an access token and a refresh token.
///
/// Password guessing is limited per username: after 10 failed password logins within 15 minutes,
/// every login for that username gets 429 `rate_limited` with `Retry-After` and
/// `RateLimit-Policy: "login";q=10;w=900` until the window ends, whether or not the user exists.
/// A success resets the count.
#[utoipa::path(
    tag = "auth",
    request_body = TokenRequestDoc,
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, description = "invalid_body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized: wrong credentials", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "metadata_unavailable, or overloaded: more password logins at once than the node checks in parallel waited past the bound (with Retry-After)", body = Problem, content_type = "application/problem+json"),
    ),
    security(())
)]
#[post("/v1/auth/token")]
async fn token(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: encoding::Json<TokenRequest>,
) -> Result<web::Json<TokenResponse>, ApiError> {
    let principal = match body.into_inner() {
        TokenRequest { username: Some(username), password: Some(password), api_key: None } => {
            let login = if username.len() > MAX_PASSWORD || password.len() > MAX_PASSWORD {
                Err(ApiError::Unauthorized("wrong username or password".to_owned()))
            } else {
                state.auth.login(&username, &password).await.map_err(ApiError::from)
            };
            if let Err(e) = &login {
                failed_login(&req, &state, &username, e);
            }
            login?
        }
        TokenRequest { username: None, password: None, api_key: Some(key) } => state.auth.login_with_key(&key).await?,
        _ => return Err(ApiError::InvalidBody("give either username and password, or api_key".to_owned())),
    };
    Ok(web::Json(state.auth.issue(&principal).await?.into()))
}

/// The longest part of a username that a log line shows.
const LOGGED_USERNAME: usize = 128;

/// Logs a refused password login at WARN (never the password) and counts it.
fn failed_login(req: &HttpRequest, state: &AppState, username: &str, error: &ApiError) {
    let (counter, why) = match error {
        ApiError::Unauthorized(_) => (&state.metrics.login_failures, "wrong username or password"),
        ApiError::RateLimited(_) => (&state.metrics.login_locked_out, "too many failed logins for this username"),
        _ => return,
    };
    crate::metrics::Metrics::add(counter, 1);
    let xff = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let client_ip = state.limiter.client_ip(req.peer_addr(), xff);
    let request_id =
        req.extensions().get::<crate::middleware::observe::RequestId>().map(|id| id.0.clone()).unwrap_or_default();
    let username: String = username.chars().take(LOGGED_USERNAME).collect();
    tracing::warn!(%username, %client_ip, %request_id, "password login refused: {why}");
}

/// Trade a refresh token for a new pair. The presented token is spent; presenting a spent one
/// again revokes its whole family (every token descended from the same login).
#[utoipa::path(
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, description = "invalid_body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized: invalid, expired, spent or revoked", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "metadata_unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(())
)]
#[post("/v1/auth/refresh")]
async fn refresh(
    state: web::Data<AppState>,
    body: encoding::Json<RefreshRequest>,
) -> Result<web::Json<TokenResponse>, ApiError> {
    Ok(web::Json(state.auth.refresh(&body.refresh_token).await?.into()))
}

/// Revoke a refresh token and its whole family. Unknown tokens are accepted too (204), so the
/// answer says nothing about which tokens exist.
#[utoipa::path(
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "invalid_body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "metadata_unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(())
)]
#[post("/v1/auth/revoke")]
async fn revoke(state: web::Data<AppState>, body: encoding::Json<RefreshRequest>) -> Result<HttpResponse, ApiError> {
    state.auth.revoke(&body.refresh_token).await?;
    Ok(HttpResponse::NoContent().finish())
}
