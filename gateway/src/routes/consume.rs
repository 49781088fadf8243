//! Pull consumption: fetch (long poll), ack, nack, extend, dead-letter.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{post, web, HttpResponse};
use depot_broker::station::{ReceiptResult, SettleOp};
use depot_broker::Fetched;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::extract::Consume;
use crate::auth::Authorized;
use crate::encoding::{self, rfc3339, ReceiptText, RenderedPayload};
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
    #[schema(value_type = Vec<String>, min_items = 1, max_items = 1000)]
    pub receipts: Vec<ReceiptText>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NackRequest {
    #[schema(value_type = Vec<String>, min_items = 1, max_items = 1000)]
    pub receipts: Vec<ReceiptText>,
    /// Redeliver after this many ms (default 0); at most the server's `max_delay_ms` (default
    /// 31536000000, 365 days), longer: 400 `invalid_request`.
    #[schema(maximum = 31536000000_u64)]
    pub delay_ms: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    #[schema(value_type = Vec<String>, min_items = 1, max_items = 1000)]
    pub receipts: Vec<ReceiptText>,
    /// The new ack deadline, counted from now.
    #[schema(minimum = 1)]
    pub ack_wait_ms: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterRequest {
    #[schema(value_type = Vec<String>, min_items = 1, max_items = 1000)]
    pub receipts: Vec<ReceiptText>,
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
) -> Result<HttpResponse, ApiError> {
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
    crate::metrics::Metrics::add(&state.metrics.fetched, fetched.deliveries.len());
    let body = fetch_body(fetched).map_err(|e| ApiError::Internal(format!("writing the fetch answer: {e}")))?;
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}

/// The fetch answer: byte for byte what serde_json writes for [`FetchResult`] (see the tests),
/// written directly: receipts, offsets, counts and times need no escaping, and each payload's
/// base64 is encoded straight into the body ([`encoding::write_payload`]).
fn fetch_body(fetched: Fetched) -> serde_json::Result<Vec<u8>> {
    let payload_bytes: usize = fetched.messages.iter().map(|m| m.payload.len()).sum();
    let mut out = Vec::with_capacity(64 + payload_bytes / 3 * 4 + fetched.messages.len() * 256);
    out.extend_from_slice(br#"{"messages":["#);
    let messages = fetched.deliveries.into_iter().zip(fetched.messages).zip(fetched.receipts);
    for (i, ((d, m), receipt)) in messages.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"receipt":""#);
        encoding::write_receipt(&mut out, &receipt);
        out.extend_from_slice(br#"","offset":"#);
        serde_json::to_writer(&mut out, &m.offset)?;
        out.extend_from_slice(br#","attempt":"#);
        serde_json::to_writer(&mut out, &d.attempt)?;
        out.extend_from_slice(br#","produced_at":""#);
        out.extend_from_slice(rfc3339(m.produced_at).as_bytes());
        out.extend_from_slice(br#"","content_type":"#);
        serde_json::to_writer(&mut out, &m.content_type)?;
        out.extend_from_slice(br#","headers":"#);
        if m.headers.is_empty() {
            out.extend_from_slice(b"{}");
        } else {
            // Sorted, and the last of a repeated name wins, as in `Message::headers`.
            let headers: BTreeMap<&str, &str> = m.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            serde_json::to_writer(&mut out, &headers)?;
        }
        encoding::write_payload(&mut out, &m.content_type, &m.payload)?;
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// Settles receipts as sealed by fetch; one that does not decode or open (another station's or
/// group's, made up, tampered with) answers `unknown_receipt` in its slot.
async fn settle(
    state: &AppState,
    station: String,
    group: String,
    receipts: Vec<ReceiptText>,
    op: SettleOp,
) -> Result<web::Json<ReceiptResults>, ApiError> {
    if receipts.is_empty() || receipts.len() > MAX_RECEIPTS {
        return Err(ApiError::InvalidRequest(format!("give 1-{MAX_RECEIPTS} receipts, not {}", receipts.len())));
    }
    let answered = state.broker.settle(&station, &group, &receipts, op).await?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use depot_broker::station::{Delivery, Receipt};
    use depot_broker::StoredMessage;

    use super::*;

    fn message(offset: u64, content_type: &str, headers: &[(&str, &str)], payload: &[u8]) -> StoredMessage {
        StoredMessage {
            offset,
            produced_at: 1_765_000_000_123 + offset as i64,
            deliver_at: 0,
            content_type: content_type.to_owned(),
            headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            payload: bytes::Bytes::copy_from_slice(payload),
        }
    }

    /// What the handler answered before [`fetch_body`]: the derived serialization of
    /// [`FetchResult`].
    fn serde_body(fetched: Fetched) -> Vec<u8> {
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
            .collect();
        serde_json::to_vec(&FetchResult { messages }).unwrap()
    }

    #[test]
    fn the_fetch_answer_is_byte_for_byte_what_serde_json_writes_for_it() {
        let binary: Vec<u8> = (0..=255u8).cycle().take(1500).collect();
        let messages = vec![
            message(0, "application/octet-stream", &[], &binary),
            message(1, "application/json", &[("b", "2"), ("a", "1"), ("b", "3")], br#"{"z":1,"a":[true,null]}"#),
            message(2, "application/json", &[], b"not json"),
            message(
                3,
                "text/plain; charset=utf-8",
                &[("quote\"", "line\nbreak \u{2028} é")],
                "ünïcode \"x\"".as_bytes(),
            ),
            message(4, "TEXT/csv", &[], &[0xc3, 0x28]),
            message(5, "", &[], b""),
            message(6, "weird \"type\"\t\u{1}", &[], b"\x00\x01"),
            StoredMessage { produced_at: i64::MAX, ..message(u64::MAX, "text/plain", &[("", "")], b"") },
            StoredMessage { produced_at: -1, ..message(u64::MAX - 1, "application/json", &[], b"-0.0") },
        ];
        let n = messages.len();
        let fetched = Fetched {
            deliveries: (0..n as u64)
                .map(|i| Delivery { receipt: Receipt { offset: i, delivery: i + 7 }, attempt: i as u32 + 1 })
                .collect(),
            messages,
            receipts: (0..n).map(|i| [i as u8; depot_broker::receipt::SEALED_LEN]).collect(),
        };
        let written = fetch_body(fetched.clone()).unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(serde_body(fetched)).unwrap());
        assert_eq!(fetch_body(Fetched::default()).unwrap(), serde_body(Fetched::default()));
        assert_eq!(fetch_body(Fetched::default()).unwrap(), br#"{"messages":[]}"#);
    }
}
