//! Encodings shared by the routes: RFC 3339 times, opaque receipts and cursors, payload
//! rendering, and reading a raw body under a limit.

use actix_web::web;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, SecondsFormat, Utc};
use depot_broker::station::{Millis, Receipt};
use depot_broker::StoredMessage;
use futures_util::StreamExt;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;

/// Unix milliseconds as an RFC 3339 UTC string with millisecond precision.
pub fn rfc3339(ms: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn parse_rfc3339(field: &str, value: &str) -> Result<Millis, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|e| ApiError::InvalidRequest(format!("{field}: not an RFC 3339 time ({e})")))
}

/// A receipt is opaque to clients: base64url of offset and delivery, big-endian.
pub fn encode_receipt(r: Receipt) -> String {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&r.offset.to_be_bytes());
    raw[8..].copy_from_slice(&r.delivery.to_be_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

pub fn decode_receipt(s: &str) -> Option<Receipt> {
    let raw = URL_SAFE_NO_PAD.decode(s).ok()?;
    let raw: [u8; 16] = raw.try_into().ok()?;
    let (offset, delivery) = raw.split_at(8);
    Some(Receipt {
        offset: u64::from_be_bytes(offset.try_into().ok()?),
        delivery: u64::from_be_bytes(delivery.try_into().ok()?),
    })
}

/// Page cursors are opaque: base64url of the last key of the previous page.
pub fn encode_cursor(last: &str) -> String {
    URL_SAFE_NO_PAD.encode(last)
}

pub fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .ok_or_else(|| ApiError::InvalidRequest("cursor: not a cursor this server issued".to_owned()))
}

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

pub fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(ApiError::InvalidRequest(format!("limit must be between 1 and {MAX_LIMIT}, not {n}"))),
    }
}

pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).ok().or_else(|| URL_SAFE_NO_PAD.decode(s).ok())
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

fn is_text(content_type: &str) -> bool {
    content_type.trim_start().to_ascii_lowercase().starts_with("text/")
}

/// A payload as a message body shows it: a JSON value for JSON content, a string for `text/*`,
/// otherwise (or when the bytes do not parse as such) base64.
#[derive(Debug, Serialize, ToSchema)]
pub struct RenderedPayload {
    /// The payload, for JSON (a JSON value) and `text/*` content (a string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// The payload in standard base64, for every other content type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

pub fn render_payload(content_type: &str, payload: &[u8]) -> RenderedPayload {
    let value = if is_json(content_type) {
        serde_json::from_slice(payload).ok()
    } else if is_text(content_type) {
        std::str::from_utf8(payload).ok().map(|s| serde_json::Value::String(s.to_owned()))
    } else {
        None
    };
    match value {
        Some(v) => RenderedPayload { payload: Some(v), payload_base64: None },
        None => RenderedPayload { payload: None, payload_base64: Some(STANDARD.encode(payload)) },
    }
}

/// A stored message as list endpoints show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageBody {
    pub offset: u64,
    /// RFC 3339.
    pub produced_at: String,
    pub content_type: String,
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(flatten)]
    pub payload: RenderedPayload,
}

pub fn message_body(m: &StoredMessage) -> MessageBody {
    MessageBody {
        offset: m.offset,
        produced_at: rfc3339(m.produced_at),
        content_type: m.content_type.clone(),
        headers: m.headers.iter().cloned().collect(),
        payload: render_payload(&m.content_type, &m.payload),
    }
}

/// Reads the whole request body, answering 413 past `limit` bytes.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::InvalidBody(format!("reading the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(format!("the body exceeds {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses an optional JSON body: empty (or JSON `null`, as the document allows) means
/// `T::default()`.
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice::<Option<T>>(body)
        .map(Option::unwrap_or_default)
        .map_err(|e| ApiError::InvalidBody(e.to_string()))
}
