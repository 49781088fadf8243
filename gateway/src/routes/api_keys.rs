//! API keys: created by a user for themselves (administrators see and delete every key).

use actix_web::{delete, get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::extract::Person;
use crate::auth::{self, scope, Authorized};
use crate::encoding::{self, rfc3339};
use crate::error::{ApiError, Problem};
use crate::meta::{Action, ApiKey, Scope};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(create_key).service(list_keys).service(delete_key);
}

const MAX_KEY_NAME: usize = 128;

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeBody {
    /// A station name, or a pattern with `*` wildcards (`orders*`, `*`).
    #[schema(pattern = r"^[a-z0-9._*-]{1,128}$", min_length = 1, max_length = 128)]
    pub stations: String,
    /// At least one action. `metrics` (read `/metrics`, which names every station) only with
    /// `stations: "*"`, and only in keys of administrators.
    #[schema(min_items = 1)]
    pub actions: Vec<Action>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    /// 1-128 printable characters (no control characters), for people.
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{1,128}$", min_length = 1, max_length = 128)]
    pub name: String,
    /// 1-32 scopes.
    #[schema(min_items = 1, max_items = 32)]
    pub scopes: Vec<ScopeBody>,
    /// RFC 3339; the key stops working then. Must be in the future.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyBody {
    pub id: String,
    pub name: String,
    /// The user who created it.
    pub owner: String,
    pub scopes: Vec<ScopeBody>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub id: String,
    pub name: String,
    /// The secret, `dk_...`: shown only in this answer, stored only as a digest.
    pub key: String,
    pub owner: String,
    pub scopes: Vec<ScopeBody>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub api_keys: Vec<KeyBody>,
}

fn scopes_body(scopes: &[Scope]) -> Vec<ScopeBody> {
    scopes.iter().map(|s| ScopeBody { stations: s.stations.clone(), actions: s.actions.clone() }).collect()
}

impl From<&ApiKey> for KeyBody {
    fn from(k: &ApiKey) -> Self {
        KeyBody {
            id: k.id.clone(),
            name: k.name.clone(),
            owner: k.owner.clone(),
            scopes: scopes_body(&k.scopes),
            created_at: rfc3339(k.created_at),
            expires_at: k.expires_at.map(rfc3339),
        }
    }
}

/// Create an API key for yourself. The answer is the only time the secret is shown.
#[utoipa::path(
    tag = "api-keys",
    request_body = NewKeyBody,
    responses(
        (status = 201, body = CreatedKey),
        (status = 400, description = "invalid_body or invalid_request (scopes, expiry)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/api-keys")]
async fn create_key(
    auth: Authorized<Person>,
    state: web::Data<AppState>,
    body: encoding::Json<NewKeyBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.name.is_empty() || body.name.chars().count() > MAX_KEY_NAME || body.name.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(format!("name must be 1-{MAX_KEY_NAME} printable characters")));
    }
    let mut scopes: Vec<Scope> =
        body.scopes.into_iter().map(|s| Scope { stations: s.stations, actions: s.actions }).collect();
    for s in &mut scopes {
        s.actions.sort_unstable();
        s.actions.dedup();
    }
    scope::validate(&scopes)?;
    // A key never exceeds its owner: only administrators may read /metrics.
    if !auth.principal.is_admin() && scopes.iter().any(|s| s.actions.contains(&Action::Metrics)) {
        return Err(ApiError::Forbidden("only an administrator may grant the metrics action".to_owned()));
    }
    let now = auth::now_millis();
    let expires_at = body.expires_at.as_deref().map(|t| encoding::parse_rfc3339("expires_at", t)).transpose()?;
    if expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::InvalidRequest("expires_at must be in the future".to_owned()));
    }
    let owner_id = auth.principal.owner_id.clone().ok_or_else(|| {
        ApiError::Forbidden("only a Depot user manages API keys; log in with a username and password".to_owned())
    })?;
    let (secret, id) = auth::new_api_key();
    let key = ApiKey {
        id,
        name: body.name,
        owner: auth.principal.subject.clone(),
        owner_id,
        digest: auth::digest(&secret),
        scopes,
        created_at: now,
        expires_at,
    };
    state.auth.store().create_api_key(&key).await?;
    state.audit(&auth.principal, "api_key.create", &key.id, serde_json::json!({"name": key.name})).await;
    let shown = KeyBody::from(&key);
    Ok(HttpResponse::Created().json(CreatedKey {
        id: shown.id,
        name: shown.name,
        key: secret,
        owner: shown.owner,
        scopes: shown.scopes,
        created_at: shown.created_at,
        expires_at: shown.expires_at,
    }))
}

/// Your API keys (an administrator sees every key), without their secrets.
#[utoipa::path(tag = "api-keys", responses((status = 200, body = KeyList)))]
#[get("/v1/api-keys")]
async fn list_keys(auth: Authorized<Person>, state: web::Data<AppState>) -> Result<web::Json<KeyList>, ApiError> {
    let owner = (!auth.principal.is_admin()).then_some(auth.principal.subject.as_str());
    let keys = state.auth.store().api_keys(owner).await?;
    Ok(web::Json(KeyList { api_keys: keys.iter().map(KeyBody::from).collect() }))
}

/// Delete an API key; it stops working at once.
#[utoipa::path(
    tag = "api-keys",
    params(("id" = String, Path, description = "Key id, `key_...`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "api_key_not_found (also for another user's key)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/api-keys/{id}")]
async fn delete_key(
    auth: Authorized<Person>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let visible = state
        .auth
        .store()
        .api_key(&id)
        .await?
        .is_some_and(|k| auth.principal.is_admin() || k.owner == auth.principal.subject);
    if !visible || !state.auth.delete_api_key(&id).await? {
        return Err(ApiError::ApiKeyNotFound(id));
    }
    state.audit(&auth.principal, "api_key.delete", &id, serde_json::json!({})).await;
    Ok(HttpResponse::NoContent().finish())
}
