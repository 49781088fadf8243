//! Pull consumption: fetch (long poll), ack, nack, extend, dead-letter.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{post, web};
use depot_broker::station::{ReceiptResult, SettleOp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::extract::Consume;
use crate::auth::Authorized;
use crate::encoding::{self, rfc3339, RenderedPayload};
use crate::error::{check_name, ApiError, Problem};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(fetch).service(ack).service(nack).service(extend).service(dead_letter);
}

pub const MAX_WAIT_MS: u64 = 20_000;
pub const MAX_FETCH: u32 = 1000;
const DEFAULT_FETCH: u32 = 10;
/// Receipts per ack/nack/extend/dead-letter call.
pub const MAX_RECEIPTS: usize = 1000;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    /// 1-1000, default 10.
    #[schema(minimum = 1, maximum = 1000)]
    pub max_messages: Option<u32>,
    /// How long to wait for at least one message, 0-20000 ms (default 0).
    #[schema(maximum = 20000)]
    pub wait_ms: Option<u64>,
    /// Stop adding messages once their payloads reach this many bytes (at least one is returned).
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    /// Opaque; pass it to ack, nack, extend or dead-letter.
    pub receipt: String,
    pub offset: u64,
    /// 1 on the first delivery.
    pub attempt: u32,
    /// RFC 3339.
    pub produced_at: String,
    pub content_type: String,
    pub headers: BTreeMap<String, String>,
    #[serde(flatten)]
    pub payload: RenderedPayload,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FetchResult {
    /// Empty when nothing arrived within `wait_ms`.
    pub messages: Vec<Message>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptsRequest {
    /// 1-1000 receipts from fetch.
    #[schema(min_items = 1, max_items = 1000)]
    pub receipts: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NackRequest {
    #[schema(min_items = 1, max_items = 1000)]
    pub receipts: Vec<String>,
    /// Redeliver after this many ms (default 0); at most the server's `max_delay_ms` (default
    /// 31536000000, 365 days), longer: 400 `invalid_request`.
    #[schema(maximum = 31536000000_u64)]
    pub delay_ms: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    #[schema(min_items = 1, max_items = 1000)]
    pub receipts: Vec<String>,
    /// The new ack deadline, counted from now.
    #[schema(minimum = 1)]
    pub ack_wait_ms: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterRequest {
    #[schema(min_items = 1, max_items = 1000)]
    pub receipts: Vec<String>,
    /// Kept as the dead letter's `last_error`.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStatus {
    Ok,
    /// The message was delivered again since (or acked): this receipt no longer counts.
    StaleReceipt,
    /// Not a receipt of this group.
    UnknownReceipt,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptResults {
    /// One per receipt, in order.
    pub results: Vec<ReceiptStatus>,
}

fn names(path: web::Path<(String, String)>) -> Result<(String, String), ApiError> {
    let (station, group) = path.into_inner();
    check_name(&station)?;
    check_name(&group)?;
    Ok((station, group))
}

/// Fetch messages for a group, waiting up to `wait_ms` for at least one.
#[utoipa::path(
    tag = "consume",
    params(crate::routes::GroupPath),
    request_body = FetchRequest,
    responses(
        (status = 200, body = FetchResult),
        (status = 400, description = "Invalid name or body (max_messages 1-1000, wait_ms 0-20000)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found or consumer_group_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "tier_unavailable: a message is in the tiering bucket, which could not be read (Retry-After); or not_leader_unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/stations/{station}/consumer-groups/{group}/fetch")]
async fn fetch(
    _auth: Authorized<Consume>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: encoding::Json<FetchRequest>,
) -> Result<web::Json<FetchResult>, ApiError> {
    let (station, group) = names(path)?;
    let req = body.into_inner();
    let max_messages = req.max_messages.unwrap_or(DEFAULT_FETCH);
    if !(1..=MAX_FETCH).contains(&max_messages) {
        return Err(ApiError::InvalidRequest(format!("max_messages must be 1-{MAX_FETCH}, not {max_messages}")));
    }
    let wait_ms = req.wait_ms.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::InvalidRequest(format!("wait_ms must be 0-{MAX_WAIT_MS}, not {wait_ms}")));
    }
    let fetched =
        state.broker.fetch(&station, &group, max_messages, req.max_bytes, Duration::from_millis(wait_ms)).await?;
    let messages = fetched
        .deliveries
        .into_iter()
        .zip(fetched.messages)
        .zip(fetched.receipts)
        .map(|((d, m), receipt)| Message {
            receipt: encoding::encode_receipt(&receipt),
            offset: m.offset,
            attempt: d.attempt,
            produced_at: rfc3339(m.produced_at),
            payload: encoding::render_payload(&m.content_type, &m.payload),
            content_type: m.content_type,
            headers: m.headers.into_iter().collect(),
        })
        .collect::<Vec<_>>();
    crate::metrics::Metrics::add(&state.metrics.fetched, messages.len());
    Ok(web::Json(FetchResult { messages }))
}

/// Settles receipts as sealed by fetch; one that does not decode or open (another station's or
/// group's, made up, tampered with) answers `unknown_receipt` in its slot.
async fn settle(
    state: &AppState,
    station: String,
    group: String,
    receipts: Vec<String>,
    op: SettleOp,
) -> Result<web::Json<ReceiptResults>, ApiError> {
    if receipts.is_empty() || receipts.len() > MAX_RECEIPTS {
        return Err(ApiError::InvalidRequest(format!("give 1-{MAX_RECEIPTS} receipts, not {}", receipts.len())));
    }
    let sealed: Vec<Vec<u8>> = receipts.iter().map(|r| encoding::decode_receipt(r).unwrap_or_default()).collect();
    let answered = state.broker.settle(&station, &group, &sealed, op).await?;
    let results = answered
        .into_iter()
        .map(|r| match r {
            ReceiptResult::Ok => ReceiptStatus::Ok,
            ReceiptResult::Stale => ReceiptStatus::StaleReceipt,
            ReceiptResult::Unknown => ReceiptStatus::UnknownReceipt,
        })
        .collect();
    Ok(web::Json(ReceiptResults { results }))
}

/// Acknowledge deliveries: the group is done with these messages.
#[utoipa::path(
    tag = "consume",
    params(crate::routes::GroupPath),
    request_body = ReceiptsRequest,
    responses(
        (status = 200, body = ReceiptResults),
        (status = 400, description = "Invalid name or body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found or consumer_group_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/stations/{station}/consumer-groups/{group}/ack")]
async fn ack(
    _auth: Authorized<Consume>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: encoding::Json<ReceiptsRequest>,
) -> Result<web::Json<ReceiptResults>, ApiError> {
    let (station, group) = names(path)?;
    let answered = settle(&state, station, group, body.into_inner().receipts, SettleOp::Ack).await?;
    crate::metrics::Metrics::add(&state.metrics.acked, settled(&answered));
    Ok(answered)
}

/// How many receipts were settled.
fn settled(answered: &ReceiptResults) -> usize {
    answered.results.iter().filter(|r| matches!(r, ReceiptStatus::Ok)).count()
}

/// Give deliveries back for redelivery after `delay_ms`.
#[utoipa::path(
    tag = "consume",
    params(crate::routes::GroupPath),
    request_body = NackRequest,
    responses(
        (status = 200, body = ReceiptResults),
        (status = 400, description = "Invalid name or body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found or consumer_group_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/stations/{station}/consumer-groups/{group}/nack")]
async fn nack(
    _auth: Authorized<Consume>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: encoding::Json<NackRequest>,
) -> Result<web::Json<ReceiptResults>, ApiError> {
    let (station, group) = names(path)?;
    let NackRequest { receipts, delay_ms } = body.into_inner();
    let delay_ms = delay_ms.unwrap_or(0);
    encoding::check_delay("delay_ms", delay_ms, state.max_delay_ms)?;
    settle(&state, station, group, receipts, SettleOp::Nack { delay_ms }).await
}

/// Push the ack deadline of deliveries to `ack_wait_ms` from now.
#[utoipa::path(
    tag = "consume",
    params(crate::routes::GroupPath),
    request_body = ExtendRequest,
    responses(
        (status = 200, body = ReceiptResults),
        (status = 400, description = "Invalid name or body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found or consumer_group_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/stations/{station}/consumer-groups/{group}/extend")]
async fn extend(
    _auth: Authorized<Consume>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: encoding::Json<ExtendRequest>,
) -> Result<web::Json<ReceiptResults>, ApiError> {
    let (station, group) = names(path)?;
    let ExtendRequest { receipts, ack_wait_ms } = body.into_inner();
    if ack_wait_ms == 0 {
        return Err(ApiError::InvalidRequest("ack_wait_ms must be positive".to_owned()));
    }
    settle(&state, station, group, receipts, SettleOp::Extend { ack_wait_ms }).await
}

/// Send deliveries to the dead-letter store now.
#[utoipa::path(
    tag = "consume",
    params(crate::routes::GroupPath),
    request_body = DeadLetterRequest,
    responses(
        (status = 200, body = ReceiptResults),
        (status = 400, description = "Invalid name or body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found or consumer_group_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/stations/{station}/consumer-groups/{group}/dead-letter")]
async fn dead_letter(
    _auth: Authorized<Consume>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: encoding::Json<DeadLetterRequest>,
) -> Result<web::Json<ReceiptResults>, ApiError> {
    let (station, group) = names(path)?;
    let DeadLetterRequest { receipts, reason } = body.into_inner();
    let answered = settle(&state, station, group, receipts, SettleOp::DeadLetter { reason }).await?;
    crate::metrics::Metrics::add(&state.metrics.dead_lettered, settled(&answered));
    Ok(answered)
}
