//! REST hooks, as Zapier-like platforms subscribe and unsubscribe: each hook is a push group
//! on its station, named by the hook's id, that starts at the latest offset and posts each new
//! message as a JSON object.

use actix_web::{delete, get, post, web, HttpResponse};
use depot_broker::station::{GroupConfig, GroupView, PushBody, PushGroup, StartPosition};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::extract::Anyone;
use crate::auth::{Authorized, Principal};
use crate::encoding::{self, rfc3339};
use crate::error::{check_name, ApiError, Problem};
use crate::meta::Action;
use crate::routes::groups::{secret_in_force, PushInput, PushStatus};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(create_hook).service(list_hooks).service(get_hook).service(delete_hook);
}

/// Hooks one station may have.
pub const MAX_HOOKS_PER_STATION: usize = 100;
const HOOK_PREFIX: &str = "hook-";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HookRequest {
    /// Where each new message is posted (`http` or `https`); the address rules of push groups
    /// apply (400 `invalid_push_url`).
    #[schema(max_length = 2048)]
    pub target_url: String,
    /// The station's name.
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]*$", min_length = 1, max_length = 128)]
    pub station: String,
    /// `whsec_` + base64 of 24-64 bytes; absent: one is generated.
    #[schema(pattern = r"^whsec_[A-Za-z0-9+/]{32,86}={0,2}$")]
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Hook {
    /// Also the name of the hook's consumer group on its station.
    pub id: String,
    pub target_url: String,
    pub station: String,
    /// RFC 3339.
    pub created_at: String,
    /// The signing secret: only in the creation answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub push: PushStatus,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HookList {
    pub hooks: Vec<Hook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HookQuery {
    /// 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn hook(state: &AppState, station: &str, group: &str, push: &PushGroup) -> Option<Hook> {
    let created_at = push.config.hook_created_at?;
    Some(Hook {
        id: group.to_owned(),
        target_url: push.config.url.clone(),
        station: station.to_owned(),
        created_at: rfc3339(created_at),
        secret: None,
        push: PushStatus::new(station, group, push, state.pusher.live()),
    })
}

fn may_consume(principal: &Principal, station: &str) -> Result<(), ApiError> {
    match principal.allows(Action::Consume, station) {
        true => Ok(()),
        false => Err(ApiError::Forbidden(format!("not allowed to consume on station {station:?}"))),
    }
}

/// Every hook this node has applied, after a read barrier, by id.
async fn all_hooks(state: &AppState) -> Result<Vec<(String, String, PushGroup)>, ApiError> {
    state.broker.barrier().await?;
    let mut hooks: Vec<_> =
        state.broker.push_groups_now().into_iter().filter(|(_, _, p)| p.config.hook_created_at.is_some()).collect();
    hooks.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(hooks)
}

async fn find(state: &AppState, id: &str) -> Result<(String, PushGroup), ApiError> {
    let not_found = || ApiError::HookNotFound(id.to_owned());
    if !id.starts_with(HOOK_PREFIX) || check_name(id).is_err() {
        return Err(not_found());
    }
    let found = all_hooks(state).await?.into_iter().find(|(_, group, _)| group == id);
    found.map(|(station, _, push)| (station, push)).ok_or_else(not_found)
}

/// Subscribe: a push subscription to the station's new messages (from the latest offset on),
/// each posted as a JSON object of the message, signed as push deliveries are.
#[utoipa::path(
    tag = "hooks",
    request_body(content = HookRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = Hook),
        (status = 400, description = "invalid_body, invalid_name, invalid_push_url or too many hooks on the station", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed to consume on the station", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/hooks")]
async fn create_hook(
    auth: Authorized<Anyone>,
    state: web::Data<AppState>,
    body: encoding::Json<HookRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner();
    check_name(&request.station)?;
    may_consume(&auth.principal, &request.station)?;
    if request.target_url.len() > 2048 {
        return Err(ApiError::InvalidPushUrl("target_url must be at most 2048 bytes".to_owned()));
    }
    let on_station = all_hooks(&state).await?.iter().filter(|(s, _, _)| *s == request.station).count();
    if on_station >= MAX_HOOKS_PER_STATION {
        return Err(ApiError::InvalidRequest(format!(
            "station {:?} has {MAX_HOOKS_PER_STATION} hooks, the most it may have",
            request.station
        )));
    }
    let input = PushInput {
        url: request.target_url,
        secret: request.secret,
        headers: None,
        timeout_ms: None,
        max_in_flight: None,
        rate_per_s: None,
    };
    let mut checked = input.check(state.pusher.guard(), PushBody::Message).await?;
    checked.config.hook_created_at = Some(state.broker.now());
    let id = format!("{HOOK_PREFIX}{:016x}", rand::random::<u64>());
    let config = GroupConfig { start: StartPosition::Latest, ..GroupConfig::default() };
    let put =
        state.broker.put_push_group(&request.station, &id, config, checked.config, checked.secret.clone()).await?;
    let secret = secret_in_force(&put.value, Some(checked.secret));
    let hook = created(&state, &request.station, put.value, secret)?;
    Ok(HttpResponse::Created().json(hook))
}

fn created(state: &AppState, station: &str, view: GroupView, secret: Option<String>) -> Result<Hook, ApiError> {
    let push = view.push.as_ref().ok_or_else(|| ApiError::Internal("a new hook without push".to_owned()))?;
    let mut hook =
        hook(state, station, &view.name, push).ok_or_else(|| ApiError::Internal("a hook without its time".into()))?;
    hook.secret = secret;
    Ok(hook)
}

/// List the hooks on stations the caller may consume from, by id.
#[utoipa::path(
    tag = "hooks",
    params(HookQuery),
    responses(
        (status = 200, body = HookList),
        (status = 400, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/hooks")]
async fn list_hooks(
    auth: Authorized<Anyone>,
    state: web::Data<AppState>,
    query: web::Query<HookQuery>,
) -> Result<web::Json<HookList>, ApiError> {
    let query = query.into_inner();
    let limit = encoding::page_limit(query.limit)?;
    let after = encoding::page_cursor(query.cursor.as_deref())?;
    let mut page: Vec<Hook> = all_hooks(&state)
        .await?
        .iter()
        .filter(|(station, group, _)| {
            auth.principal.allows(Action::Consume, station) && after.as_ref().is_none_or(|a| group > a)
        })
        .filter_map(|(station, group, push)| hook(&state, station, group, push))
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let next_cursor = match (more, page.last()) {
        (true, Some(last)) => Some(encoding::encode_cursor(&last.id)),
        _ => None,
    };
    Ok(web::Json(HookList { hooks: page, next_cursor }))
}

/// Read one hook.
#[utoipa::path(
    tag = "hooks",
    params(("id" = String, Path, description = "The hook's id")),
    responses(
        (status = 200, body = Hook),
        (status = 403, description = "Not allowed to consume on the hook's station", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "hook_not_found", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/hooks/{id}")]
async fn get_hook(
    auth: Authorized<Anyone>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<web::Json<Hook>, ApiError> {
    let id = path.into_inner();
    let (station, push) = find(&state, &id).await?;
    may_consume(&auth.principal, &station)?;
    hook(&state, &station, &id, &push).map(web::Json).ok_or(ApiError::HookNotFound(id))
}

/// Unsubscribe: the hook and its consumer group are deleted.
#[utoipa::path(
    tag = "hooks",
    params(("id" = String, Path, description = "The hook's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not allowed to consume on the hook's station", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "hook_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/hooks/{id}")]
async fn delete_hook(
    auth: Authorized<Anyone>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let (station, _) = find(&state, &id).await?;
    may_consume(&auth.principal, &station)?;
    state.broker.delete_group(&station, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}
