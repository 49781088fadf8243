//! Dead letters: list (with payloads on request), redrive, delete.

use actix_web::{delete, get, post, web, HttpResponse};
use depot_broker::station::{DeadLetterReason, DeadLetterRecord, RedriveSelector};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::extract::Manage;
use crate::auth::Authorized;
use crate::encoding::{self, rfc3339, MessageBody};
use crate::error::{check_name, ApiError, Problem};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_dead_letters).service(redrive).service(delete_dead_letter);
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Only this group's dead letters.
    #[param(pattern = r"^[a-z0-9][a-z0-9._-]*$", min_length = 1, max_length = 128)]
    pub consumer_group: Option<String>,
    /// `max_deliveries`, `explicit` or `expired`.
    #[param(inline, value_type = Option<DeadLetterReasonDoc>)]
    pub reason: Option<String>,
    /// Include each message (when still retained). Default false.
    pub include_payload: Option<bool>,
    /// 1-1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page, an opaque token; absent (or empty) for the first page.
    #[param(pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$")]
    pub cursor: Option<String>,
}

/// Why a message was dead-lettered.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum DeadLetterReasonDoc {
    MaxDeliveries,
    Explicit,
    Expired,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetter {
    pub id: u64,
    pub offset: u64,
    pub consumer_group: String,
    /// `max_deliveries`, `explicit` or `expired`.
    pub reason: String,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// RFC 3339.
    pub dead_at: String,
    /// With `include_payload=true`, while retention still holds the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `ids` redrives those dead letters; otherwise every dead letter of `consumer_group` (or of
/// every group when it is absent).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    pub ids: Option<Vec<u64>>,
    pub consumer_group: Option<String>,
}

/// The documented shape of [`RedriveRequest`]: `ids`, or `consumer_group`, or neither; not both.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
#[schema(as = RedriveRequest)]
pub enum RedriveRequestDoc {
    Ids(RedriveIdsDoc),
    Group(RedriveGroupDoc),
}

/// Redrive these dead letters.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RedriveIdsDoc {
    ids: Vec<u64>,
    #[schema(schema_with = crate::routes::null_schema)]
    consumer_group: Option<()>,
}

/// Redrive every dead letter of `consumer_group`, or of every group when it is absent.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RedriveGroupDoc {
    #[schema(schema_with = crate::routes::null_schema)]
    ids: Option<()>,
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]*$", min_length = 1, max_length = 128)]
    consumer_group: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RedriveResult {
    pub redriven: u64,
}

fn parse_reason(reason: &str) -> Result<DeadLetterReason, ApiError> {
    [DeadLetterReason::MaxDeliveries, DeadLetterReason::Explicit, DeadLetterReason::Expired]
        .into_iter()
        .find(|r| r.as_str() == reason)
        .ok_or_else(|| {
            ApiError::InvalidRequest(format!("reason must be max_deliveries, explicit or expired, not {reason:?}"))
        })
}

/// List a station's dead letters, oldest first.
#[utoipa::path(
    tag = "dead-letters",
    params(crate::routes::StationPath, DeadLetterQuery),
    responses(
        (status = 200, body = DeadLetterList),
        (status = 400, description = "Invalid name or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "tier_unavailable: a message is in the tiering bucket, which could not be read (Retry-After); or not_leader_unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/stations/{station}/dead-letters")]
async fn list_dead_letters(
    _auth: Authorized<Manage>,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<DeadLetterQuery>,
) -> Result<web::Json<DeadLetterList>, ApiError> {
    let station = path.into_inner();
    check_name(&station)?;
    let q = query.into_inner();
    if let Some(g) = &q.consumer_group {
        check_name(g)?;
    }
    let reason = q.reason.as_deref().map(parse_reason).transpose()?;
    let limit = encoding::page_limit(q.limit)?;
    let after = match encoding::page_cursor(q.cursor.as_deref())? {
        Some(c) => Some(
            c.parse::<u64>()
                .map_err(|_| ApiError::InvalidRequest("cursor: not a cursor this server issued".to_owned()))?,
        ),
        None => None,
    };
    let group = q.consumer_group.as_deref();
    let keep = |r: &DeadLetterRecord| group.is_none_or(|g| r.group == g) && reason.is_none_or(|want| r.reason == want);
    let include = q.include_payload.unwrap_or(false);
    let page = state.broker.dead_letters(&station, after, limit, include, keep).await?;
    let next_cursor =
        if page.more { page.records.last().map(|r| encoding::encode_cursor(&r.id.to_string())) } else { None };
    let mut messages = page.messages.into_iter();
    let mut dead_letters = Vec::with_capacity(page.records.len());
    for r in page.records {
        let message = messages.next().flatten().as_ref().map(encoding::message_body);
        dead_letters.push(DeadLetter {
            id: r.id,
            offset: r.offset,
            consumer_group: r.group,
            reason: r.reason.as_str().to_owned(),
            attempts: r.attempts,
            last_error: r.last_error,
            dead_at: rfc3339(r.dead_at),
            message,
        });
    }
    Ok(web::Json(DeadLetterList { dead_letters, next_cursor }))
}

/// Send dead letters back to their own group, with attempts reset.
#[utoipa::path(
    tag = "dead-letters",
    params(crate::routes::StationPath),
    request_body = RedriveRequestDoc,
    responses(
        (status = 200, body = RedriveResult),
        (status = 400, description = "Invalid name or body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/stations/{station}/dead-letters/redrive")]
async fn redrive(
    auth: Authorized<Manage>,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: encoding::Json<RedriveRequest>,
) -> Result<web::Json<RedriveResult>, ApiError> {
    let station = path.into_inner();
    check_name(&station)?;
    let selector = match body.into_inner() {
        RedriveRequest { ids: Some(_), consumer_group: Some(_) } => {
            return Err(ApiError::InvalidBody("give ids or consumer_group, not both".to_owned()))
        }
        RedriveRequest { ids: Some(ids), consumer_group: None } => RedriveSelector::Ids(ids),
        RedriveRequest { ids: None, consumer_group } => {
            if let Some(g) = &consumer_group {
                check_name(g)?;
            }
            RedriveSelector::Group(consumer_group)
        }
    };
    let redriven = state.broker.redrive(&station, selector).await?;
    state.audit(&auth.principal, "dead_letters.redrive", &station, serde_json::json!({"redriven": redriven})).await;
    Ok(web::Json(RedriveResult { redriven }))
}

/// Delete one dead letter.
#[utoipa::path(
    tag = "dead-letters",
    params(crate::routes::DeadLetterPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid name or id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found or dead_letter_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/stations/{station}/dead-letters/{id:[0-9]+}")]
async fn delete_dead_letter(
    auth: Authorized<Manage>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (station, id) = path.into_inner();
    check_name(&station)?;
    let id = id
        .parse::<u64>()
        .map_err(|_| ApiError::InvalidRequest(format!("dead-letter id must be a number, not {id:?}")))?;
    state.broker.delete_dead_letter(&station, id).await?;
    state.audit(&auth.principal, "dead_letter.delete", &station, serde_json::json!({"id": id})).await;
    Ok(HttpResponse::NoContent().finish())
}
