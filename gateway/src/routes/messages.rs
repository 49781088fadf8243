//! Produce: one raw message, or a JSON batch.

use std::collections::BTreeMap;

use actix_web::http::header::{self, HeaderMap};
use actix_web::{post, web, HttpRequest, HttpResponse};
use bytes::Bytes;
use depot_broker::station::{ItemError, Millis, NewMessage, MAX_IDEMPOTENCY_KEY_CHARS};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::extract::Produce;
use crate::auth::Authorized;
use crate::encoding::{self, rfc3339};
use crate::error::{check_name, ApiError, Problem};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(produce).service(produce_batch);
}

/// The largest single-message body read; a station's own `max_message_bytes` applies within it.
pub const SINGLE_BODY_LIMIT: usize = 16 << 20;
pub const BATCH_BODY_LIMIT: usize = 16 << 20;
pub const BATCH_MAX_MESSAGES: usize = 1000;
const HEADER_PREFIX: &str = "depot-header-";

/// Raw bytes, stored as they arrive.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct RawPayload(pub Vec<u8>);

#[derive(Debug, Serialize, ToSchema)]
pub struct ProduceResult {
    pub offset: u64,
    pub duplicate: bool,
    /// RFC 3339; present when the message is delayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliver_at: Option<String>,
}

fn idempotency_key(key: Option<String>) -> Result<Option<String>, ApiError> {
    match key {
        Some(k) if k.is_empty() || k.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS => {
            Err(ApiError::InvalidRequest(format!("idempotency key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} characters")))
        }
        other => Ok(other),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| v.to_str().map_err(|_| ApiError::InvalidRequest(format!("header {name} must be visible ASCII"))))
        .transpose()
}

/// Maps an item's refusal for a single produce.
pub(crate) fn item_error(e: ItemError) -> ApiError {
    match e {
        ItemError::TooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
        ItemError::IdempotencyKeyReused => ApiError::IdempotencyKeyReused(e.to_string()),
        ItemError::Invalid(d) => ApiError::InvalidRequest(d),
    }
}

/// Produce one message. The body is the payload, stored as-is with its Content-Type.
#[utoipa::path(
    tag = "messages",
    params(
        crate::routes::StationPath,
        ("Content-Type" = Option<String>, Header, description = "Stored with the message; default application/octet-stream"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 256, description = "1-256 characters; a repeat within the dedup window answers 200 with the original offset"),
        ("Depot-Delay" = Option<u64>, Header, maximum = 31536000000_u64, description = "No group delivers the message before this many ms from now. With `Depot-Deliver-At` too, the later of the two times applies. At most the server's `max_delay_ms` (default 31536000000, 365 days); longer: 400 `invalid_request`"),
        ("Depot-Deliver-At" = Option<String>, Header, format = DateTime, description = "RFC 3339: no group delivers the message before then. With `Depot-Delay` too, the later of the two times applies. At most `max_delay_ms` (default 365 days) from now; later: 400 `invalid_request`"),
        ("Depot-Header-Name" = Option<String>, Header, description = "Any `Depot-Header-<name>` is stored as message header `<name>` (lower-cased); no other header is stored"),
    ),
    request_body(content = RawPayload, content_type = "*/*", description = "The payload, any bytes"),
    responses(
        (status = 201, description = "Stored durably", body = ProduceResult),
        (status = 200, description = "Duplicate of an earlier message with the same Idempotency-Key", body = ProduceResult),
        (status = 400, description = "Invalid name or headers", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "idempotency_key_reused", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "storage_full: the data dir's disk is under its free-space watermark (nothing was stored) or full (the outcome is unknown: retry with the same Idempotency-Key)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/stations/{station}/messages")]
async fn produce(
    _auth: Authorized<Produce>,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let station = path.into_inner();
    check_name(&station)?;
    let h = req.headers();
    let content_type = header_str(h, header::CONTENT_TYPE.as_str())?.unwrap_or("application/octet-stream").to_owned();
    let key = idempotency_key(header_str(h, "idempotency-key")?.map(str::to_owned))?;
    // Both may be given: the later of the two times applies.
    let now = state.broker.now();
    let delay = header_str(h, "depot-delay")?
        .map(|delay| {
            let ms = delay
                .trim()
                .parse::<u64>()
                .map_err(|_| ApiError::InvalidRequest("Depot-Delay must be a number of milliseconds".to_owned()))?;
            encoding::delay_until("Depot-Delay", now, ms, state.max_delay_ms)
        })
        .transpose()?;
    let at = header_str(h, "depot-deliver-at")?
        .map(|at| {
            let at = encoding::parse_rfc3339("Depot-Deliver-At", at)?;
            encoding::check_deliver_at("Depot-Deliver-At", now, at, state.max_delay_ms)
        })
        .transpose()?;
    let deliver_at = delay.max(at);
    let mut headers = Vec::new();
    for (name, value) in h {
        if let Some(stored) = name.as_str().strip_prefix(HEADER_PREFIX) {
            if stored.is_empty() {
                continue;
            }
            let value =
                value.to_str().map_err(|_| ApiError::InvalidRequest(format!("header {name} must be visible ASCII")))?;
            headers.push((stored.to_owned(), value.to_owned()));
        }
    }
    let payload = encoding::read_body(&req, body, SINGLE_BODY_LIMIT).await?;
    let message = NewMessage { content_type, headers, payload, idempotency_key: key, deliver_at };
    let result = state
        .broker
        .produce(&station, vec![message])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal("produce answered no result".to_owned()))?
        .map_err(item_error)?;
    if result.duplicate {
        return Ok(HttpResponse::Ok().json(ProduceResult { offset: result.offset, duplicate: true, deliver_at: None }));
    }
    crate::metrics::Metrics::add(&state.metrics.produced, 1);
    let deliver_at = deliver_at.map(rfc3339);
    Ok(HttpResponse::Created().json(ProduceResult { offset: result.offset, duplicate: false, deliver_at }))
}

/// One message of a batch: exactly one of `payload` and `payload_base64`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchMessage {
    /// Any JSON value; stored as its JSON text with content type application/json unless
    /// `content_type` says otherwise.
    pub payload: Option<serde_json::Value>,
    /// Raw bytes in base64 (standard or URL-safe); content type application/octet-stream
    /// unless given.
    pub payload_base64: Option<String>,
    pub content_type: Option<String>,
    /// Message headers; names are lower-cased.
    pub headers: Option<BTreeMap<String, String>>,
    /// 1-256 characters.
    pub idempotency_key: Option<String>,
    /// No group delivers the message before this many ms from now; at most the server's
    /// `max_delay_ms` (default 31536000000, 365 days), longer is the item's `invalid_request`.
    #[schema(maximum = 31536000000_u64)]
    pub delay_ms: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1-1000 messages.
    #[schema(min_items = 1, max_items = 1000)]
    pub messages: Vec<BatchMessage>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemProblem {
    /// `invalid_request`, `payload_too_large` or `idempotency_key_reused`.
    pub code: String,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchItemResult {
    Stored { offset: u64, duplicate: bool },
    Failed { error: ItemProblem },
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    /// One per message, in order.
    pub results: Vec<BatchItemResult>,
}

fn failed(e: ApiError) -> BatchItemResult {
    BatchItemResult::Failed { error: ItemProblem { code: e.code().as_str().to_owned(), detail: e.to_string() } }
}

fn batch_item(m: BatchMessage, now: Millis, max_delay_ms: u64) -> Result<NewMessage, ApiError> {
    let (payload, default_type) = match (m.payload, m.payload_base64) {
        (Some(value), None) => (
            Bytes::from(serde_json::to_vec(&value).map_err(|e| ApiError::InvalidRequest(e.to_string()))?),
            "application/json",
        ),
        (None, Some(b64)) => (
            Bytes::from(
                encoding::decode_base64(&b64)
                    .ok_or_else(|| ApiError::InvalidRequest("payload_base64 is not base64".to_owned()))?,
            ),
            "application/octet-stream",
        ),
        _ => return Err(ApiError::InvalidRequest("give exactly one of payload and payload_base64".to_owned())),
    };
    let headers = m.headers.unwrap_or_default().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    Ok(NewMessage {
        content_type: m.content_type.unwrap_or_else(|| default_type.to_owned()),
        headers,
        payload,
        idempotency_key: idempotency_key(m.idempotency_key)?,
        deliver_at: m.delay_ms.map(|d| encoding::delay_until("delay_ms", now, d, max_delay_ms)).transpose()?,
    })
}

/// Produce up to 1000 messages in one durable write; each is judged on its own.
#[utoipa::path(
    tag = "messages",
    params(crate::routes::StationPath),
    request_body = BatchRequest,
    responses(
        (status = 200, description = "One result per message, in order", body = BatchResult),
        (status = 400, description = "Invalid name or body, or more than 1000 messages", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 16 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "storage_full: the data dir's disk is under its free-space watermark (nothing was stored) or full (the outcome is unknown: retry with the same Idempotency-Key)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/stations/{station}/messages/batch")]
async fn produce_batch(
    _auth: Authorized<Produce>,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: encoding::Json<BatchRequest>,
) -> Result<web::Json<BatchResult>, ApiError> {
    let station = path.into_inner();
    check_name(&station)?;
    let items = body.into_inner().messages;
    if items.is_empty() || items.len() > BATCH_MAX_MESSAGES {
        return Err(ApiError::InvalidRequest(format!(
            "a batch holds 1-{BATCH_MAX_MESSAGES} messages, not {}",
            items.len()
        )));
    }
    let now = state.broker.now();
    let mut results: Vec<Option<BatchItemResult>> = Vec::with_capacity(items.len());
    let mut valid = Vec::new();
    for item in items {
        match batch_item(item, now, state.max_delay_ms) {
            Ok(m) => {
                valid.push(m);
                results.push(None);
            }
            Err(e) => results.push(Some(failed(e))),
        }
    }
    // An empty list still answers 404 for an unknown station, as a batch with valid items would.
    let mut stored = state.broker.produce(&station, valid).await?.into_iter();
    let results = results
        .into_iter()
        .map(|slot| match slot {
            Some(error) => Ok(error),
            None => match stored.next() {
                Some(Ok(p)) => Ok(BatchItemResult::Stored { offset: p.offset, duplicate: p.duplicate }),
                Some(Err(e)) => Ok(failed(item_error(e))),
                None => Err(ApiError::Internal("produce answered fewer results than messages".to_owned())),
            },
        })
        .collect::<Result<Vec<_>, _>>()?;
    let stored = results.iter().filter(|r| matches!(r, BatchItemResult::Stored { duplicate: false, .. })).count();
    crate::metrics::Metrics::add(&state.metrics.produced, stored);
    Ok(web::Json(BatchResult { results }))
}
