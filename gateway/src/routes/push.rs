//! Push groups' own operations: pause, resume, rotate the signing secret, send a test event,
//! read the attempts log.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use bytes::Bytes;
use depot_broker::station::{PushGroup, PushState};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::extract::{Manage, SeeStation};
use crate::auth::Authorized;
use crate::encoding::{self, rfc3339};
use crate::error::{ApiError, Problem};
use crate::push::engine::FORWARDED;
use crate::push::live::AttemptRecord;
use crate::push::sign;
use crate::routes::groups::{names, Group};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(pause).service(resume).service(rotate_secret).service(test_event).service(attempts);
}

/// The longest a rotated-out secret may keep signing: 30 days.
pub const MAX_OLD_VALID_MS: u64 = 30 * 24 * 3600 * 1000;
const DEFAULT_OLD_VALID_MS: u64 = 24 * 3600 * 1000;
/// A test event's body, at most.
const TEST_BODY_LIMIT: usize = 64 * 1024;

/// The push side of `group`, or 409 `consumer_group_not_push` (404 if there is no such group).
async fn push_of(state: &AppState, station: &str, group: &str) -> Result<PushGroup, ApiError> {
    let view = state.broker.group(station, group).await?;
    view.push.ok_or_else(|| {
        ApiError::Broker(
            depot_broker::station::CommandError::WrongDelivery {
                station: station.to_owned(),
                group: group.to_owned(),
                push: false,
            }
            .into(),
        )
    })
}

async fn set_state(
    state: &AppState,
    path: web::Path<(String, String)>,
    to: PushState,
) -> Result<web::Json<Group>, ApiError> {
    let (station, group) = names(path)?;
    let view = state.broker.set_push_state(&station, &group, to, None).await?;
    Ok(web::Json(Group::new(&station, view, state.pusher.live())))
}

/// Pause a push group: no new attempt starts until resume (attempts under way finish).
#[utoipa::path(
    tag = "push",
    params(crate::routes::GroupPath),
    responses(
        (status = 200, body = Group),
        (status = 400, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found or consumer_group_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "consumer_group_not_push", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/stations/{station}/consumer-groups/{group}/push/pause")]
async fn pause(
    _auth: Authorized<Manage>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<web::Json<Group>, ApiError> {
    set_state(&state, path, PushState::Paused).await
}

/// Resume a paused or disabled push group: delivery carries on where it stopped.
#[utoipa::path(
    tag = "push",
    params(crate::routes::GroupPath),
    responses(
        (status = 200, body = Group),
        (status = 400, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found or consumer_group_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "consumer_group_not_push", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/stations/{station}/consumer-groups/{group}/push/resume")]
async fn resume(
    _auth: Authorized<Manage>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<web::Json<Group>, ApiError> {
    set_state(&state, path, PushState::Active).await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// How long the current secret(s) keep signing beside the new one, 0-2592000000 (30 days;
    /// default 86400000, a day).
    #[schema(maximum = 2592000000_u64)]
    pub old_valid_ms: Option<u64>,
    /// The new secret, `whsec_` + base64 of 24-64 bytes; absent: one is generated.
    #[schema(pattern = r"^whsec_[A-Za-z0-9+/]{32,86}={0,2}$")]
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotateResult {
    /// The new signing secret, shown only here.
    pub secret: String,
}

/// Rotate a push group's signing secret: deliveries carry both signatures until the old
/// secret expires.
#[utoipa::path(
    tag = "push",
    params(crate::routes::GroupPath),
    request_body(content = Option<RotateRequest>, content_type = "application/json", description = "Optional"),
    responses(
        (status = 200, body = RotateResult),
        (status = 400, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found or consumer_group_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "consumer_group_not_push", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/stations/{station}/consumer-groups/{group}/push/rotate-secret")]
async fn rotate_secret(
    _auth: Authorized<Manage>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<web::Json<RotateResult>, ApiError> {
    let (station, group) = names(path)?;
    let input: RotateRequest = encoding::optional_json(&encoding::read_body(&req, body, TEST_BODY_LIMIT).await?)?;
    let old_valid_ms = input.old_valid_ms.unwrap_or(DEFAULT_OLD_VALID_MS);
    if old_valid_ms > MAX_OLD_VALID_MS {
        return Err(ApiError::InvalidRequest(format!("old_valid_ms must be at most {MAX_OLD_VALID_MS}")));
    }
    let secret = match input.secret {
        Some(given) => {
            sign::parse_secret(&given).map_err(|e| ApiError::InvalidRequest(format!("secret: {e}")))?;
            given
        }
        None => sign::generate_secret(),
    };
    state.broker.rotate_push_secret(&station, &group, secret.clone(), old_valid_ms).await?;
    Ok(web::Json(RotateResult { secret }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// The test event's JSON body; default `{"type": "depot.test"}`.
    pub payload: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    /// The endpoint's HTTP status, if it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// Why the attempt failed, as the attempts log would say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The start of the answer's body (at most 256 bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_excerpt: Option<String>,
}

/// Send one signed test event to the push group's URL now, from this node. Nothing is stored,
/// and the group's counters and attempts log are not touched.
#[utoipa::path(
    tag = "push",
    params(crate::routes::GroupPath),
    request_body(content = Option<TestRequest>, content_type = "application/json", description = "Optional"),
    responses(
        (status = 200, body = TestResult),
        (status = 400, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found or consumer_group_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "consumer_group_not_push", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/stations/{station}/consumer-groups/{group}/push/test")]
async fn test_event(
    _auth: Authorized<Manage>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<web::Json<TestResult>, ApiError> {
    let (station, group) = names(path)?;
    let input: TestRequest = encoding::optional_json(&encoding::read_body(&req, body, TEST_BODY_LIMIT).await?)?;
    let push = push_of(&state, &station, &group).await?;
    let payload = input.payload.unwrap_or_else(|| serde_json::json!({"type": "depot.test"}));
    let body = Bytes::from(serde_json::to_vec(&payload).map_err(|e| ApiError::InvalidBody(e.to_string()))?);
    let attempt = state.pusher.test_event(&station, push, body, "application/json").await;
    Ok(web::Json(TestResult {
        status: attempt.status,
        latency_ms: attempt.latency.as_millis() as u64,
        error: attempt.error,
        response_excerpt: attempt.excerpt,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AttemptsQuery {
    /// 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptBody {
    /// RFC 3339.
    pub at: String,
    pub offset: u64,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_excerpt: Option<String>,
}

impl From<AttemptRecord> for AttemptBody {
    fn from(a: AttemptRecord) -> AttemptBody {
        AttemptBody {
            at: rfc3339(a.at),
            offset: a.offset,
            attempt: a.attempt,
            status: a.status,
            latency_ms: a.latency.as_millis() as u64,
            error: a.error,
            response_excerpt: a.response_excerpt,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptList {
    pub attempts: Vec<AttemptBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A push group's delivery attempts, newest first: the last 1000 made by the node that
/// delivers the group (the Raft leader). Another node asks the leader; if the leader cannot be
/// reached, it lists those it made itself.
#[utoipa::path(
    tag = "push",
    params(crate::routes::GroupPath, AttemptsQuery),
    responses(
        (status = 200, body = AttemptList),
        (status = 400, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found or consumer_group_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "consumer_group_not_push", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/stations/{station}/consumer-groups/{group}/push/attempts")]
async fn attempts(
    _auth: Authorized<SeeStation>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<AttemptsQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (station, group) = names(path)?;
    let query = query.into_inner();
    if !req.headers().contains_key(FORWARDED) {
        let authorization = req.headers().get("authorization").and_then(|v| v.to_str().ok());
        let path_and_query = req.uri().path_and_query().map_or(req.path(), |p| p.as_str());
        if let Some((status, content_type, body)) = state.pusher.from_leader(path_and_query, authorization).await {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            return Ok(HttpResponse::build(status).content_type(content_type).body(body));
        }
    }
    let limit = encoding::page_limit(query.limit)?;
    let before = match encoding::page_cursor(query.cursor.as_deref())? {
        Some(c) => Some(c.parse::<u64>().map_err(|_| ApiError::InvalidRequest("cursor is not valid".to_owned()))?),
        None => None,
    };
    push_of(&state, &station, &group).await?;
    let (records, more) = match state.pusher.live().get(&station, &group) {
        Some(live) => live.attempts(before, limit),
        None => (Vec::new(), false),
    };
    let next_cursor = match (more, records.last()) {
        (true, Some(last)) => Some(encoding::encode_cursor(&last.seq.to_string())),
        _ => None,
    };
    Ok(HttpResponse::Ok()
        .json(AttemptList { attempts: records.into_iter().map(AttemptBody::from).collect(), next_cursor }))
}
