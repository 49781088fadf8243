//! Encodings shared by the routes: RFC 3339 times, opaque receipts and cursors, payload
//! rendering, and reading a raw body under a limit.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::error::PayloadError;
use actix_web::{dev, web, FromRequest, HttpRequest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, SecondsFormat, Utc};
use depot_broker::receipt::SealedReceipt;
use depot_broker::station::Millis;
use depot_broker::StoredMessage;
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
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

/// Refuses a delay past `max_delay_ms` (the `max_delay_ms` setting), naming `field`.
pub fn check_delay(field: &str, delay_ms: u64, max_delay_ms: u64) -> Result<(), ApiError> {
    if delay_ms > max_delay_ms {
        return Err(ApiError::InvalidRequest(format!(
            "{field}: {delay_ms} ms is longer than the longest delay, {max_delay_ms} ms ({} days)",
            max_delay_ms / (24 * 3600 * 1000)
        )));
    }
    Ok(())
}

/// The time `delay_ms` after `now`, refused past `max_delay_ms`; never a wrapped or saturated time.
pub fn delay_until(field: &str, now: Millis, delay_ms: u64, max_delay_ms: u64) -> Result<Millis, ApiError> {
    check_delay(field, delay_ms, max_delay_ms)?;
    i64::try_from(delay_ms)
        .ok()
        .and_then(|delay| now.checked_add(delay))
        .ok_or_else(|| ApiError::InvalidRequest(format!("{field}: {delay_ms} ms from now is not a time")))
}

/// Refuses a delivery time more than `max_delay_ms` after `now`, naming `field`.
pub fn check_deliver_at(field: &str, now: Millis, at: Millis, max_delay_ms: u64) -> Result<Millis, ApiError> {
    let delay = at.checked_sub(now).unwrap_or(i64::MAX);
    match u64::try_from(delay) {
        Ok(delay) => check_delay(field, delay, max_delay_ms).map(|()| at),
        // In the past: deliverable now.
        Err(_) => Ok(at),
    }
}

/// A receipt is opaque to clients: base64url of the sealed receipt (see
/// `depot_broker::receipt`), 55 characters.
pub fn encode_receipt(sealed: &SealedReceipt) -> String {
    URL_SAFE_NO_PAD.encode(sealed)
}

/// Appends what [`encode_receipt`] answers, encoded straight into `out`.
pub fn write_receipt(out: &mut Vec<u8>, sealed: &SealedReceipt) {
    base64_simd::URL_SAFE_NO_PAD.encode_append(sealed, out);
}

/// A receipt as a request hands it in, decoded from its base64url text while the body is parsed:
/// no string is kept per receipt. Text that is not base64url, or far longer than any receipt,
/// decodes to no bytes, which the broker answers `unknown_receipt` without looking further. A
/// value that is not a string fails the body, as before.
#[derive(Clone, Copy)]
pub struct ReceiptText {
    bytes: [u8; RECEIPT_BYTES_MAX],
    len: u8,
}

/// Longer than any receipt Depot hands out (they are 55 characters).
const RECEIPT_CHARS_MAX: usize = 64;
const RECEIPT_BYTES_MAX: usize = RECEIPT_CHARS_MAX / 4 * 3;

impl ReceiptText {
    pub fn decode(s: &str) -> ReceiptText {
        let mut receipt = ReceiptText { bytes: [0; RECEIPT_BYTES_MAX], len: 0 };
        if s.len() <= RECEIPT_CHARS_MAX {
            if let Ok(len) = URL_SAFE_NO_PAD.decode_slice(s, &mut receipt.bytes) {
                receipt.len = len as u8;
            }
        }
        receipt
    }
}

impl AsRef<[u8]> for ReceiptText {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for ReceiptText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiptText({} bytes)", self.len)
    }
}

impl<'de> serde::Deserialize<'de> for ReceiptText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = ReceiptText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a receipt (a string)")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ReceiptText, E> {
                Ok(ReceiptText::decode(s))
            }
        }
        deserializer.deserialize_str(Text)
    }
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

/// A page's `cursor` query parameter: absent or empty means the first page.
pub fn page_cursor(cursor: Option<&str>) -> Result<Option<String>, ApiError> {
    cursor.filter(|c| !c.is_empty()).map(decode_cursor).transpose()
}

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

pub fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(ApiError::InvalidRequest(format!("limit must be between 1 and {MAX_LIMIT}, not {n}"))),
    }
}

/// Standard base64 with its padding, or else URL-safe without padding (SIMD).
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let decode = |b: base64_simd::Base64| b.decode_to_vec(s).ok();
    decode(base64_simd::STANDARD).or_else(|| decode(base64_simd::URL_SAFE_NO_PAD))
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().as_bytes();
    essence.eq_ignore_ascii_case(b"application/json")
        || essence.len().checked_sub(5).is_some_and(|at| essence[at..].eq_ignore_ascii_case(b"+json"))
}

fn is_text(content_type: &str) -> bool {
    content_type.trim_start().as_bytes().get(..5).is_some_and(|p| p.eq_ignore_ascii_case(b"text/"))
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
    #[schema(value_type = Option<String>)]
    pub payload_base64: Option<Box<serde_json::value::RawValue>>,
}

/// `payload` in base64 as a ready JSON string. The base64 alphabet needs no escaping, so the
/// response writer copies it as is instead of checking every byte again (on fetch, that check
/// was the largest single cost).
fn base64_json(payload: &[u8]) -> Box<serde_json::value::RawValue> {
    let mut text = String::with_capacity(payload.len().div_ceil(3) * 4 + 2);
    text.push('"');
    base64_simd::STANDARD.encode_append(payload, &mut text);
    text.push('"');
    // Quotes around base64 are always a valid JSON string, so the fallback is unreachable.
    serde_json::value::RawValue::from_string(text).unwrap_or_default()
}

/// How a payload is shown (see [`RenderedPayload`]).
enum Shown<'a> {
    Json(serde_json::Value),
    Text(&'a str),
    Base64,
}

fn shown<'a>(content_type: &str, payload: &'a [u8]) -> Shown<'a> {
    if is_json(content_type) {
        if let Ok(value) = serde_json::from_slice(payload) {
            return Shown::Json(value);
        }
    } else if is_text(content_type) {
        if let Ok(text) = std::str::from_utf8(payload) {
            return Shown::Text(text);
        }
    }
    Shown::Base64
}

pub fn render_payload(content_type: &str, payload: &[u8]) -> RenderedPayload {
    match shown(content_type, payload) {
        Shown::Json(value) => RenderedPayload { payload: Some(value), payload_base64: None },
        Shown::Text(text) => {
            RenderedPayload { payload: Some(serde_json::Value::String(text.to_owned())), payload_base64: None }
        }
        Shown::Base64 => RenderedPayload { payload: None, payload_base64: Some(base64_json(payload)) },
    }
}

/// Appends a message object's payload member, `,"payload":…` or `,"payload_base64":"…"`, as
/// serde_json writes [`render_payload`]'s answer, with base64 encoded straight into `out`: no
/// string of its own, no check, no copy. For answers with many messages (fetch).
pub fn write_payload(out: &mut Vec<u8>, content_type: &str, payload: &[u8]) -> serde_json::Result<()> {
    match shown(content_type, payload) {
        Shown::Json(value) => {
            out.extend_from_slice(br#","payload":"#);
            serde_json::to_writer(out, &value)
        }
        Shown::Text(text) => {
            out.extend_from_slice(br#","payload":"#);
            serde_json::to_writer(out, text)
        }
        Shown::Base64 => {
            out.extend_from_slice(br#","payload_base64":""#);
            base64_simd::STANDARD.encode_append(payload, out);
            out.push(b'"');
            Ok(())
        }
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

/// A message's id: the same on every read and delivery of the message, distinct across
/// messages, and never repeated by a later station of the same name (`station_id` is the
/// broker's station incarnation, never reused).
pub fn message_id(station_id: u64, offset: u64) -> String {
    format!("msg_{station_id}_{offset}")
}

/// A stored message as browsing (and push delivery) shows it: the fetched message's shape
/// without `receipt` and `attempt`, since nothing was delivered.
#[derive(Debug, Serialize, ToSchema)]
pub struct BrowsedMessage {
    /// `msg_<station incarnation>_<offset>`: stable for the message, never reused.
    #[schema(example = "msg_1_42")]
    pub id: String,
    pub station: String,
    pub offset: u64,
    /// RFC 3339.
    pub produced_at: String,
    pub content_type: String,
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(flatten)]
    pub payload: RenderedPayload,
}

impl BrowsedMessage {
    pub fn from_stored(station: &str, station_id: u64, m: &StoredMessage) -> BrowsedMessage {
        let MessageBody { offset, produced_at, content_type, headers, payload } = message_body(m);
        BrowsedMessage {
            id: message_id(station_id, offset),
            station: station.to_owned(),
            offset,
            produced_at,
            content_type,
            headers,
            payload,
        }
    }
}

/// Reads the whole request body: 413 at once when the declared `Content-Length` is past `limit`
/// (without waiting for a body that may never come), 413 once more than `limit` bytes arrived, and
/// 408 when the body takes longer than the `body_read_timeout_ms` setting.
pub async fn read_body(req: &HttpRequest, payload: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    check_declared_length(req, limit)?;
    read_stream(payload, limit, declared_length(req.headers()), body_read_timeout(req)).await
}

/// 413 when the request declares a body longer than `limit`.
pub fn check_declared_length(req: &HttpRequest, limit: usize) -> Result<(), ApiError> {
    match declared_length(req.headers()) {
        Some(length) if length > limit as u64 => {
            Err(ApiError::PayloadTooLarge(format!("the body has {length} bytes; the limit is {limit}")))
        }
        _ => Ok(()),
    }
}

/// The request's `Content-Length`, when it has a valid one.
pub fn declared_length(headers: &actix_web::http::header::HeaderMap) -> Option<u64> {
    headers
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

fn body_read_timeout(req: &HttpRequest) -> Duration {
    req.app_data::<web::Data<crate::state::AppState>>()
        .map_or(crate::state::DEFAULT_BODY_READ_TIMEOUT, |s| s.body_read_timeout)
}

async fn read_stream<S>(payload: S, limit: usize, declared: Option<u64>, timeout: Duration) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    match tokio::time::timeout(timeout, read_all(payload, limit, declared)).await {
        Ok(read) => read,
        Err(_) => Err(ApiError::RequestTimeout(format!(
            "the body did not arrive within {} ms; send it whole and promptly",
            timeout.as_millis()
        ))),
    }
}

/// The most a declared `Content-Length` reserves before the bytes arrive: a client that declares
/// 16 MiB and sends nothing holds no more than this.
const RESERVE_AHEAD: usize = 256 << 10;

/// Reads up to `limit` bytes into one buffer, sized from the declared length (up to
/// [`RESERVE_AHEAD`]) so that a body in many chunks is not copied again each time it grows.
async fn read_all<S>(mut payload: S, limit: usize, declared: Option<u64>) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    let expected = declared.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX).min(limit).min(RESERVE_AHEAD));
    let mut body = BytesMut::with_capacity(expected);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::InvalidBody(format!("reading the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(format!("the body exceeds {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Deserializes JSON text into `T` in one pass, reading a whole-number float (`1540.0`) where
/// `T` wants an integer, as JSON Schema does (it counts such numbers as integers), and refusing
/// an array where `T` wants an object (see [`strict`]). Only fields typed as integers convert, and
/// only floats within ±2^53 (exact in `f64`); free-form values such as a batch message's JSON
/// `payload` keep their numbers as sent.
///
/// The rule holds only where serde asks this deserializer for the field. Untagged and internally
/// tagged enums and `#[serde(flatten)]` first copy the input into serde's own buffer and read
/// their fields from that, past this wrapper; request types use none of them (a hand-written
/// visitor, as for `groups::Start`, reads alternatives without a buffer).
pub fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = T::deserialize(strict::Strict(&mut de))?;
    de.end()?;
    Ok(value)
}

/// The largest JSON request body (as `web::JsonConfig` in `configure()`).
pub const JSON_BODY_LIMIT: usize = 16 << 20;

/// A JSON request body, as `web::Json` but parsed by [`from_json`]: the same limits and answers
/// (413 `payload_too_large` past [`JSON_BODY_LIMIT`], 415 for a non-JSON Content-Type, 400
/// `invalid_body` for anything unparsable), and whole-number floats read as integers.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// As actix's `JsonConfig` with `content_type_required(false)`: a missing or unparsable
/// Content-Type is taken for JSON; a parsable one must have subtype `json` or suffix `+json`.
fn check_json_request(req: &HttpRequest, limit: usize) -> Result<(), ApiError> {
    if let Some(Ok(ct)) = req.headers().get(actix_web::http::header::CONTENT_TYPE).map(|v| v.to_str()) {
        let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if let Some((_, subtype)) = essence.split_once('/') {
            if subtype != "json" && !subtype.ends_with("+json") {
                return Err(ApiError::UnsupportedMediaType(
                    "the body must be JSON (Content-Type: application/json)".to_owned(),
                ));
            }
        }
    }
    check_declared_length(req, limit)
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut dev::Payload) -> Self::Future {
        let checked = check_json_request(req, JSON_BODY_LIMIT);
        let timeout = body_read_timeout(req);
        let declared = declared_length(req.headers());
        let payload = payload.take();
        Box::pin(async move {
            checked?;
            let body = read_stream(payload, JSON_BODY_LIMIT, declared, timeout).await?;
            from_json(&body).map(Json).map_err(|e| ApiError::InvalidBody(e.to_string()))
        })
    }
}

/// Parses an optional JSON body: empty (or JSON `null`, as the document allows) means
/// `T::default()`. Whole-number floats read as integers, as in [`from_json`].
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    from_json::<Option<T>>(body).map(Option::unwrap_or_default).map_err(|e| ApiError::InvalidBody(e.to_string()))
}

/// A deserializer wrapper that refuses a JSON array where a struct is expected.
///
/// serde's derived `Deserialize` for a struct also accepts its fields as a sequence (so
/// `"dead_letter": [null, null]` would read as `{}`); a request body is documented as objects, so
/// that must be a 400. [`Strict`] forwards every call to the wrapped deserializer, wrapping each
/// nested deserializer in turn, and answers an `invalid type` error for a sequence offered to a
/// struct. Static dispatch only: no allocation, no second parse.
mod strict;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;

    use super::{
        base64_json, decode_base64, encode_receipt, is_json, is_text, render_payload, write_payload, write_receipt,
    };

    /// A body in chunks is read whole whatever length it declared (none, its own, or a lie far
    /// larger), and the limit holds on what arrives, not on what was declared.
    #[tokio::test]
    async fn a_body_in_chunks_is_read_whole_and_held_to_its_limit() {
        use actix_web::web::Bytes;
        let chunks: Vec<Bytes> = (0..40u8).map(|i| Bytes::from(vec![i; 3_000])).collect();
        let whole: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let stream = || futures_util::stream::iter(chunks.clone().into_iter().map(Ok));
        for declared in [None, Some(whole.len() as u64), Some(u64::MAX), Some(10)] {
            let body = super::read_all(stream(), 1 << 20, declared).await.unwrap();
            assert_eq!(&body[..], &whole[..], "declared {declared:?}");
        }
        let over = super::read_all(stream(), whole.len() - 1, Some(10)).await;
        assert!(matches!(over, Err(crate::error::ApiError::PayloadTooLarge(_))), "{over:?}");
    }

    /// xorshift64*: reproducible inputs without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    /// What the `base64` crate (the decoder this replaced) answers: the reference.
    fn reference_decode(s: &str) -> Option<Vec<u8>> {
        STANDARD.decode(s).ok().or_else(|| URL_SAFE_NO_PAD.decode(s).ok())
    }

    #[test]
    fn a_receipt_written_in_place_is_the_one_encode_receipt_answers() {
        let mut rng = Rng(0x7777_0000_1234_5678);
        for _ in 0..2000 {
            let sealed: [u8; depot_broker::receipt::SEALED_LEN] = std::array::from_fn(|_| rng.next() as u8);
            let mut out = b"x".to_vec();
            write_receipt(&mut out, &sealed);
            assert_eq!(out, format!("x{}", encode_receipt(&sealed)).into_bytes());
        }
    }

    #[test]
    fn content_types_are_told_apart_as_before_without_allocating() {
        // The earlier code, lower-casing a copy of the content type: the reference.
        let reference_json = |ct: &str| {
            let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        };
        let reference_text = |ct: &str| ct.trim_start().to_ascii_lowercase().starts_with("text/");
        for ct in [
            "",
            "json",
            "+json",
            "+JSON",
            "a+json",
            "application/json",
            "Application/JSON",
            " application/json ; charset=utf-8",
            "application/vnd.api+json",
            "application/vnd.api+Json;x=y",
            "application/jsonx",
            "application/json5",
            "text/plain",
            "TEXT/html; charset=utf-8",
            "  text/",
            "text",
            "tex",
            "texts/x",
            "application/octet-stream",
            "application/€+json",
            "€json",
            "text€",
            "€",
            "é+json",
            "application/json€",
        ] {
            assert_eq!(is_json(ct), reference_json(ct), "{ct:?}");
            assert_eq!(is_text(ct), reference_text(ct), "{ct:?}");
        }
    }

    #[test]
    fn a_payload_written_in_place_is_what_serde_json_writes_for_its_rendering() {
        let mut rng = Rng(0x5151_5151_0000_0001);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("application/json", br#"{"b":[1,2.5,"x\n\u00e9"],"a":null}"#.to_vec()),
            ("application/json", b" [ 1 , {} ] ".to_vec()),
            ("application/json", b"{not json".to_vec()),
            ("application/cloudevents+json; charset=utf-8", br#""quoted \\ \u2028 \/""#.to_vec()),
            ("text/plain", "tab\t, quote \", control \u{1}, \u{2028}, é".as_bytes().to_vec()),
            ("text/plain", vec![0xff, 0xfe, b'a']),
            ("application/octet-stream", rng.bytes(1024)),
            ("application/octet-stream", Vec::new()),
            ("", rng.bytes(1)),
            ("image/png", rng.bytes(65_537)),
        ];
        for (ct, payload) in cases {
            let mut written = b"{\"x\":1".to_vec();
            write_payload(&mut written, ct, &payload).unwrap();
            written.push(b'}');
            let mut rendered = serde_json::to_vec(&render_payload(ct, &payload)).unwrap();
            rendered.splice(..1, b"{\"x\":1,".iter().copied());
            assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(rendered).unwrap(), "{ct:?}");
        }
    }

    #[test]
    fn payloads_encode_exactly_as_the_base64_crate_does() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for len in (0..=300).chain([1023, 1024, 1025, 4096, 65_537]) {
            let payload = rng.bytes(len);
            let json = base64_json(&payload);
            assert_eq!(json.get(), format!("\"{}\"", STANDARD.encode(&payload)), "length {len}");
        }
    }

    #[test]
    fn decoding_accepts_and_refuses_exactly_what_the_base64_crate_does() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let check = |s: &str| assert_eq!(decode_base64(s), reference_decode(s), "input {s:?}");
        for len in 0..=200 {
            let payload = rng.bytes(len);
            let standard = STANDARD.encode(&payload);
            let url = URL_SAFE_NO_PAD.encode(&payload);
            check(&standard);
            check(&url);
            check(standard.trim_end_matches('='));
            check(&format!("{standard}="));
            check(&format!("{url}="));
            check(&format!(" {standard}"));
            check(&format!("{standard}\n"));
            // One character changed anywhere, to every kind of character.
            if !standard.is_empty() {
                for replacement in ['A', '/', '+', '-', '_', '=', ' ', '\n', '.', 'é'] {
                    let at = rng.next() as usize % standard.len();
                    let mut changed: Vec<char> = standard.chars().collect();
                    changed[at] = replacement;
                    check(&changed.into_iter().collect::<String>());
                }
            }
        }
        // Random strings over the alphabets and padding, so non-canonical tails come up too.
        let alphabet: Vec<char> =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_=".chars().collect();
        for _ in 0..200_000 {
            let len = rng.next() as usize % 13;
            let s: String = (0..len).map(|_| alphabet[rng.next() as usize % alphabet.len()]).collect();
            check(&s);
        }
    }

    #[test]
    fn receipts_decode_while_the_body_is_parsed() {
        use super::ReceiptText;
        #[derive(serde::Deserialize)]
        struct Body {
            receipts: Vec<ReceiptText>,
        }
        let sealed = [7u8; depot_broker::receipt::SEALED_LEN];
        let text = encode_receipt(&sealed);
        // Escaped characters are unescaped first, as serde_json does for any string.
        let escaped = format!("\\u00{:x}{}", text.as_bytes()[0], &text[1..]);
        let long = "A".repeat(68);
        let json = format!(r#"{{"receipts": ["{text}", "{escaped}", "not a receipt!", "{long}", ""]}}"#);
        let body: Body = serde_json::from_str(&json).unwrap();
        let bytes: Vec<&[u8]> = body.receipts.iter().map(AsRef::as_ref).collect();
        assert_eq!(bytes, [&sealed[..], &sealed[..], &[][..], &[][..], &[][..]]);
        // A receipt that is not a string fails the body, as a list of strings did.
        assert!(serde_json::from_str::<Body>(r#"{"receipts": ["x", 5]}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"receipts": [null]}"#).is_err());
    }
}
