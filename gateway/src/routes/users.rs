//! Users (administrators only).

use actix_web::{delete, get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::extract::AdminInPerson;
use crate::auth::Authorized;
use crate::encoding::{self, rfc3339};
use crate::error::{ApiError, Problem};
use crate::meta::{Role, User};
use crate::routes::auth::MAX_PASSWORD;
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(create_user).service(list_users).service(delete_user);
}

pub const MIN_PASSWORD: usize = 8;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    /// 1-128 characters of `a-z 0-9 . _ - @`, starting with a letter or digit.
    #[schema(pattern = r"^[a-z0-9][a-z0-9._@-]{0,127}$", min_length = 1, max_length = 128)]
    pub username: String,
    /// 8-1024 characters.
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
    #[schema(example = "member")]
    pub role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserBody {
    pub username: String,
    pub role: Role,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&User> for UserBody {
    fn from(u: &User) -> Self {
        UserBody { username: u.username.clone(), role: u.role, created_at: rfc3339(u.created_at) }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserBody>,
}

pub fn check_username(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name.bytes().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-@".contains(&c));
    if valid {
        Ok(())
    } else {
        Err(ApiError::InvalidName(format!(
            "username {name:?}: 1-128 characters of a-z 0-9 . _ - @, starting with a letter or digit"
        )))
    }
}

/// Create a user.
#[utoipa::path(
    tag = "users",
    request_body = NewUserBody,
    responses(
        (status = 201, body = UserBody),
        (status = 400, description = "invalid_name or invalid_body", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "already_exists", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/users")]
async fn create_user(
    auth: Authorized<AdminInPerson>,
    state: web::Data<AppState>,
    body: encoding::Json<NewUserBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    check_username(&body.username)?;
    // Characters below, bytes above: the login reads at most MAX_PASSWORD bytes.
    let chars = body.password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&chars) || body.password.len() > MAX_PASSWORD {
        return Err(ApiError::InvalidBody(format!("password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")));
    }
    let user = state.auth.create_user(&body.username, &body.password, body.role).await?;
    state.audit(&auth.principal, "user.create", &user.username, serde_json::json!({"role": user.role.as_str()})).await;
    Ok(HttpResponse::Created().json(UserBody::from(&user)))
}

/// List users by name.
#[utoipa::path(tag = "users", responses((status = 200, body = UserList)))]
#[get("/v1/users")]
async fn list_users(
    _auth: Authorized<AdminInPerson>,
    state: web::Data<AppState>,
) -> Result<web::Json<UserList>, ApiError> {
    let users = state.auth.store().users().await?;
    Ok(web::Json(UserList { users: users.iter().map(UserBody::from).collect() }))
}

/// Delete a user with their API keys and refresh tokens; their tokens stop working at once.
#[utoipa::path(
    tag = "users",
    params(("username" = String, Path, description = "Username")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "forbidden: deleting yourself", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "user_not_found", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/users/{username}")]
async fn delete_user(
    auth: Authorized<AdminInPerson>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let username = path.into_inner();
    if username == auth.principal.subject {
        return Err(ApiError::Forbidden("an administrator cannot delete themselves".to_owned()));
    }
    if !state.auth.delete_user(&username).await? {
        return Err(ApiError::UserNotFound(username));
    }
    state.audit(&auth.principal, "user.delete", &username, serde_json::json!({})).await;
    Ok(HttpResponse::NoContent().finish())
}
