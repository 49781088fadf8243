//! Webhook sources: managing them (`/v1/sources`) and the ingest URL their senders post to
//! (`/v1/ingest/{source}/{token}`), which needs no `Authorization` header: the token in the
//! URL and the sender's own signature take its place.
//!
//! An ingest is a produce behind two checks made before anything is proposed: the token (its
//! hash against the source's, in constant time) and the signature over the raw body. The
//! proposed command carries the token's hash, and apply checks it again, so a rotation or a
//! deletion refuses the old URL on every node from the same log entry on.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use bytes::Bytes;
use depot_broker::station::{
    is_header_name, NewMessage, Source as StoredSource, SourceConfig, SourceVerify, MAX_CAPTURE_HEADERS,
    MAX_IDEMPOTENCY_KEY_CHARS, MAX_SOURCE_RATE_PER_S,
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::extract::Anyone;
use crate::auth::{Authorized, Principal};
use crate::encoding::{self, rfc3339};
use crate::error::{check_name, ApiError, Code, Problem};
use crate::meta::Action;
use crate::routes::messages::{item_error, RawPayload, SINGLE_BODY_LIMIT};
use crate::sources::verify::{Refusal, Scheme, Verifier};
use crate::sources::{hash_token, ingest_path, new_token};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(ingest)
        .service(put_source)
        .service(list_sources)
        .service(get_source)
        .service(delete_source)
        .service(rotate_token);
}

/// Deliveries per second each node admits for a source that names no rate.
pub const DEFAULT_RATE_PER_S: u32 = 1000;
/// The message header naming the source a delivery came through.
const SOURCE_HEADER: &str = "depot-source";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyInput {
    pub scheme: Scheme,
    /// The signing secret the sender was given (for `standard_webhooks`: `whsec_` + base64).
    /// Never returned.
    #[schema(min_length = 1, max_length = 1024)]
    pub secret: String,
    /// `hmac_sha256` only (and required there): the header carrying the hex HMAC, optionally
    /// prefixed `sha256=`.
    #[schema(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", min_length = 1, max_length = 128)]
    pub header: Option<String>,
    /// `stripe` and `standard_webhooks`: how far the signed timestamp may be from the server's
    /// clock, either way. Default 300000.
    #[schema(minimum = 1000, maximum = 86400000)]
    pub tolerance_ms: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceRequest {
    /// The station deliveries are produced on; needs `manage` on it.
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]*$", min_length = 1, max_length = 128)]
    pub station: String,
    /// How the sender signs. Absent: the ingest URL's token alone admits a delivery.
    pub verify: Option<VerifyInput>,
    /// Request headers stored as message headers (names lower-cased), at most 32.
    #[schema(schema_with = header_names_schema)]
    pub capture_headers: Option<Vec<String>>,
    /// The request header whose value becomes the Idempotency-Key. Default: the scheme's
    /// delivery id (`X-GitHub-Delivery`, `webhook-id`, `X-Shopify-Webhook-Id`; for `stripe` the
    /// event's `id` in the body).
    #[schema(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", min_length = 1, max_length = 128)]
    pub idempotency_header: Option<String>,
    /// Deliveries per second each node admits (bursts of as many); more answer 429. Default 1000.
    #[schema(minimum = 1, maximum = 100000)]
    pub rate_per_s: Option<u32>,
}

/// `capture_headers`: up to 32 HTTP header names (or null).
fn header_names_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    let name = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"))
        .min_length(Some(1))
        .max_length(Some(128));
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(name)
        .max_items(Some(MAX_CAPTURE_HEADERS))
        .build()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyStatus {
    pub scheme: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    pub tolerance_ms: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Source {
    pub name: String,
    pub station: String,
    /// `/v1/ingest/{source}/{token}`, to put after the server's address. The token is kept only
    /// as a hash, so this is in the answers that create the source and rotate its token, and
    /// nowhere else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyStatus>,
    pub capture_headers: Vec<String>,
    /// The header the Idempotency-Key is taken from, if one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_header: Option<String>,
    pub rate_per_s: u32,
    /// Deliveries stored or found to repeat an earlier one.
    pub accepted_total: u64,
    /// Deliveries refused (reported by each node about once a second).
    pub rejected_total: u64,
    /// `rejected_total` by reason: `invalid_token`, `missing_signature`, `malformed_signature`,
    /// `bad_signature`, `stale_timestamp`, `payload_too_large`, `rate_limited`, ...
    pub rejected: BTreeMap<String, u64>,
    /// RFC 3339.
    pub created_at: String,
}

impl Source {
    fn new(source: &StoredSource, token: Option<&str>) -> Source {
        let config = &source.config;
        Source {
            name: source.name.clone(),
            station: config.station.clone(),
            ingest_url: token.map(|t| ingest_path(&source.name, t)),
            verify: config.verify.as_ref().map(|v| VerifyStatus {
                scheme: v.scheme.clone(),
                header: v.header.clone(),
                tolerance_ms: v.tolerance_ms,
            }),
            capture_headers: config.capture_headers.clone(),
            idempotency_header: config.idempotency_header.clone(),
            rate_per_s: config.rate_per_s,
            accepted_total: source.accepted_total,
            rejected_total: source.rejected_total(),
            rejected: source.rejected.clone(),
            created_at: rfc3339(source.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceList {
    pub sources: Vec<Source>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SourceQuery {
    /// 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The path of one source.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct SourcePath {
    /// Source name (the rules of station names).
    #[param(pattern = r"^[a-z0-9][a-z0-9._-]*$", min_length = 1, max_length = 128)]
    source: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResult {
    pub offset: u64,
    /// True when the delivery repeats one already stored (same delivery id and body).
    pub duplicate: bool,
}

fn may_manage(principal: &Principal, station: &str) -> Result<(), ApiError> {
    match principal.allows(Action::Manage, station) {
        true => Ok(()),
        false => Err(ApiError::Forbidden(format!("not allowed to manage station {station:?}"))),
    }
}

/// A header name from a request body, lower-cased and checked.
fn header_name(field: &str, name: &str) -> Result<String, ApiError> {
    let lower = name.to_ascii_lowercase();
    match is_header_name(&lower) {
        true => Ok(lower),
        false => Err(ApiError::InvalidRequest(format!("{field}: {name:?} is not an HTTP header name"))),
    }
}

impl SourceRequest {
    /// The config to store, every field checked (400 on any fault).
    fn check(self) -> Result<SourceConfig, ApiError> {
        check_name(&self.station)?;
        let verify = match self.verify {
            None => None,
            Some(v) => {
                let checked = Verifier::new(v.scheme, &v.secret, v.header.as_deref(), v.tolerance_ms)
                    .map_err(|e| ApiError::InvalidRequest(format!("verify: {e}")))?;
                Some(SourceVerify {
                    scheme: v.scheme.as_str().to_owned(),
                    secret: v.secret,
                    header: checked.header,
                    tolerance_ms: checked.tolerance_ms,
                })
            }
        };
        let named = self.capture_headers.unwrap_or_default();
        if named.len() > MAX_CAPTURE_HEADERS {
            return Err(ApiError::InvalidRequest(format!(
                "capture_headers may name at most {MAX_CAPTURE_HEADERS} headers"
            )));
        }
        let mut capture_headers = Vec::with_capacity(named.len());
        for name in &named {
            let name = header_name("capture_headers", name)?;
            if !capture_headers.contains(&name) {
                capture_headers.push(name);
            }
        }
        let idempotency_header =
            self.idempotency_header.as_deref().map(|h| header_name("idempotency_header", h)).transpose()?;
        let rate_per_s = self.rate_per_s.unwrap_or(DEFAULT_RATE_PER_S);
        if !(1..=MAX_SOURCE_RATE_PER_S).contains(&rate_per_s) {
            return Err(ApiError::InvalidRequest(format!("rate_per_s must be 1-{MAX_SOURCE_RATE_PER_S}")));
        }
        Ok(SourceConfig { station: self.station, verify, capture_headers, idempotency_header, rate_per_s })
    }
}

/// One source after a read barrier, if the caller may manage its station.
async fn find(state: &AppState, principal: &Principal, name: &str) -> Result<StoredSource, ApiError> {
    check_name(name)?;
    state.broker.barrier().await?;
    let source = state.broker.source_now(name).ok_or_else(|| ApiError::SourceNotFound(name.to_owned()))?;
    may_manage(principal, &source.config.station)?;
    Ok(source)
}

/// Create or update a source. A new source gets its ingest URL, shown in this answer only; an
/// update keeps it. `verify.secret` is never returned.
#[utoipa::path(
    tag = "sources",
    params(SourcePath),
    request_body(content = SourceRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `ingest_url` is shown here only", body = Source),
        (status = 200, description = "Updated (the ingest URL stays)", body = Source),
        (status = 400, description = "invalid_body, invalid_name or invalid_request (verify, headers, rate)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed to manage the station (or the source's current one)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/sources/{source}")]
async fn put_source(
    auth: Authorized<Anyone>,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: encoding::Json<SourceRequest>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    check_name(&name)?;
    let config = body.into_inner().check()?;
    may_manage(&auth.principal, &config.station)?;
    state.broker.barrier().await?;
    // Moving a source takes the right to manage the station it leaves as well.
    if let Some(existing) = state.broker.source_now(&name) {
        may_manage(&auth.principal, &existing.config.station)?;
    }
    let (token, token_hash) = new_token();
    let put = state.broker.put_source(&name, config, token_hash).await?;
    if put.created {
        Ok(HttpResponse::Created().json(Source::new(&put.value, Some(&token))))
    } else {
        Ok(HttpResponse::Ok().json(Source::new(&put.value, None)))
    }
}

/// List the sources on stations the caller may manage, by name.
#[utoipa::path(
    tag = "sources",
    params(SourceQuery),
    responses(
        (status = 200, body = SourceList),
        (status = 400, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/sources")]
async fn list_sources(
    auth: Authorized<Anyone>,
    state: web::Data<AppState>,
    query: web::Query<SourceQuery>,
) -> Result<web::Json<SourceList>, ApiError> {
    let query = query.into_inner();
    let limit = encoding::page_limit(query.limit)?;
    let after = encoding::page_cursor(query.cursor.as_deref())?;
    state.broker.barrier().await?;
    let mut page: Vec<Source> = state
        .broker
        .sources_now()
        .iter()
        .filter(|s| {
            auth.principal.allows(Action::Manage, &s.config.station) && after.as_ref().is_none_or(|a| s.name > *a)
        })
        .take(limit + 1)
        .map(|s| Source::new(s, None))
        .collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let next_cursor = match (more, page.last()) {
        (true, Some(last)) => Some(encoding::encode_cursor(&last.name)),
        _ => None,
    };
    Ok(web::Json(SourceList { sources: page, next_cursor }))
}

/// Read one source (without its ingest URL or secret).
#[utoipa::path(
    tag = "sources",
    params(SourcePath),
    responses(
        (status = 200, body = Source),
        (status = 400, description = "invalid_name", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed to manage the source's station", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "source_not_found", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/sources/{source}")]
async fn get_source(
    auth: Authorized<Anyone>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<web::Json<Source>, ApiError> {
    let source = find(&state, &auth.principal, &path.into_inner()).await?;
    Ok(web::Json(Source::new(&source, None)))
}

/// Delete a source: its ingest URL stops working at once on every node.
#[utoipa::path(
    tag = "sources",
    params(SourcePath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "invalid_name", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed to manage the source's station", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "source_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/sources/{source}")]
async fn delete_source(
    auth: Authorized<Anyone>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let source = find(&state, &auth.principal, &path.into_inner()).await?;
    state.broker.delete_source(&source.name).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Give the source a new ingest URL; the old one is refused at once on every node.
#[utoipa::path(
    tag = "sources",
    params(SourcePath),
    responses(
        (status = 200, description = "The source with its new `ingest_url` (shown here only)", body = Source),
        (status = 400, description = "invalid_name", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed to manage the source's station", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "source_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/sources/{source}/rotate-token")]
async fn rotate_token(
    auth: Authorized<Anyone>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<web::Json<Source>, ApiError> {
    let source = find(&state, &auth.principal, &path.into_inner()).await?;
    let (token, token_hash) = new_token();
    let rotated = state.broker.rotate_source_token(&source.name, token_hash).await?;
    Ok(web::Json(Source::new(&rotated, Some(&token))))
}

/// The path of an ingest URL.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct IngestPath {
    /// Source name.
    #[param(max_length = 128)]
    source: String,
    /// The secret token of the source's ingest URL.
    #[param(max_length = 256)]
    token: String,
}

fn refused(code: Code, detail: impl Into<String>) -> ApiError {
    ApiError::IngestRefused { code, detail: detail.into() }
}

fn refusal(r: &Refusal) -> ApiError {
    let code = match r {
        Refusal::MissingHeader(_) => Code::MissingSignature,
        Refusal::Malformed(_) => Code::MalformedSignature,
        Refusal::BadSignature => Code::BadSignature,
        Refusal::Stale { .. } | Refusal::Future { .. } => Code::StaleTimestamp,
    };
    refused(code, r.to_string())
}

/// The sender's delivery id, the message's Idempotency-Key: the configured header, else the
/// scheme's (for `stripe`, the event's `id` in the JSON body).
fn delivery_id(req: &HttpRequest, config: &SourceConfig, body: &[u8]) -> Result<Option<String>, ApiError> {
    let header_value =
        |name: &str| req.headers().get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned());
    let scheme = config.verify.as_ref().and_then(|v| Scheme::parse(&v.scheme));
    let id = match (&config.idempotency_header, scheme) {
        (Some(name), _) => header_value(name),
        (None, Some(Scheme::Stripe)) => {
            #[derive(Deserialize)]
            struct Event {
                id: Option<serde_json::Value>,
            }
            serde_json::from_slice::<Event>(body).ok().and_then(|e| e.id).and_then(|id| id.as_str().map(str::to_owned))
        }
        (None, Some(scheme)) => scheme.default_idempotency_headers().iter().find_map(|name| header_value(name)),
        (None, None) => None,
    };
    match id {
        Some(id) if id.is_empty() || id.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS => {
            Err(ApiError::InvalidRequest(format!("the delivery id must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} characters")))
        }
        other => Ok(other),
    }
}

/// Where a sender posts: the body is stored as-is, with its Content-Type, on the source's
/// station, once the URL's token and the sender's signature check out. No `Authorization`
/// header. A sender's retry (same delivery id and body) answers the first one's offset.
#[utoipa::path(
    tag = "sources",
    params(IngestPath, ("Content-Type" = Option<String>, Header, description = "Stored with the message; default application/octet-stream")),
    request_body(content = RawPayload, content_type = "*/*", description = "The sender's body, any bytes"),
    security(()),
    responses(
        (status = 200, description = "Stored, or found to repeat an earlier delivery", body = IngestResult),
        (status = 400, description = "invalid_request: the delivery id is longer than 256 characters", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "invalid_token (unknown source, wrong, rotated or deleted token), missing_signature, malformed_signature, bad_signature or stale_timestamp; nothing is stored", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large: over the station's max_message_bytes", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "idempotency_key_reused: the delivery id came before with another body", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: over the source's rate_per_s", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "storage_full", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/ingest/{source}/{token}")]
async fn ingest(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<web::Json<IngestResult>, ApiError> {
    let (name, token) = path.into_inner();
    let token_hash = hash_token(&token);
    let matches = |s: &StoredSource| bool::from(s.token_hash.ct_eq(&token_hash));
    // A source made a moment ago through another node may not have reached this one: on a
    // miss, catch up once before refusing.
    let mut source = state.broker.source_now(&name).filter(matches);
    if source.is_none() && check_name(&name).is_ok() {
        state.broker.barrier().await?;
        source = state.broker.source_now(&name).filter(matches);
    }
    let counters = &state.sources;
    let Some(source) = source else {
        let known = state.broker.source_now(&name).is_some();
        counters.rejected(&name, known, "invalid_token");
        return Err(refused(Code::InvalidToken, "the ingest URL is not valid: unknown source or wrong token"));
    };
    let reject = |e: ApiError| {
        let reason = match &e {
            ApiError::IngestRefused { code, .. } => code.as_str(),
            other => other.code().as_str(),
        };
        counters.rejected(&name, true, reason);
        e
    };
    let config = &source.config;
    counters.admit(&name, config.rate_per_s).map_err(|l| reject(ApiError::RateLimited(l)))?;
    let limit = state
        .broker
        .station_config_now(&config.station)
        .map_or(SINGLE_BODY_LIMIT, |c| usize::try_from(c.max_message_bytes).unwrap_or(usize::MAX))
        .min(SINGLE_BODY_LIMIT);
    let payload: Bytes = encoding::read_body(&req, body, limit).await.map_err(reject)?;
    if let Some(v) = &config.verify {
        let scheme = Scheme::parse(&v.scheme)
            .ok_or_else(|| ApiError::Internal(format!("source {name} has an unknown scheme {:?}", v.scheme)))?;
        let verifier = Verifier::new(scheme, &v.secret, v.header.as_deref(), Some(v.tolerance_ms))
            .map_err(|e| ApiError::Internal(format!("source {name} has a config that no longer checks: {e}")))?;
        let lookup = |h: &str| req.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_owned);
        verifier.verify(&lookup, &payload, state.broker.now()).map_err(|r| reject(refusal(&r)))?;
    }
    let idempotency_key = delivery_id(&req, config, &payload).map_err(reject)?;
    let mut headers = vec![(SOURCE_HEADER.to_owned(), name.clone())];
    for captured in &config.capture_headers {
        for value in req.headers().get_all(captured) {
            headers.push((captured.clone(), String::from_utf8_lossy(value.as_bytes()).into_owned()));
        }
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map_or_else(|| "application/octet-stream".to_owned(), |v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let message = NewMessage { content_type, headers, payload, idempotency_key, deliver_at: None };
    let produced = match state.broker.ingest(&name, token_hash, message).await {
        Ok(Ok(produced)) => produced,
        Ok(Err(item)) => return Err(reject(item_error(item))),
        Err(e) => {
            let e = ApiError::from(e);
            // A rotation or deletion that committed first: refused, and counted as such.
            if e.code() == Code::InvalidToken {
                return Err(reject(e));
            }
            return Err(e);
        }
    };
    counters.accepted(&name);
    if !produced.duplicate {
        crate::metrics::Metrics::add(&state.metrics.produced, 1);
    }
    Ok(web::Json(IngestResult { offset: produced.offset, duplicate: produced.duplicate }))
}
