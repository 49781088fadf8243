//! The gateway's one error type and its mapping to RFC 9457 problem+json.
//!
//! Every `code` has exactly one status and title, in the one table below (`error_codes!`);
//! clients rely on `code`, so codes are only ever added, never renamed.

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use depot_broker::station::CommandError;
use depot_broker::BrokerError;
use serde::Serialize;

use crate::auth::AuthError;
use crate::meta::MetaError;
use crate::rate_limit::Limited;
use utoipa::ToSchema;

/// Declares [`Code`] and its table from one row per code: the variant, its HTTP status, the
/// `code` string clients match on and the problem's title.
macro_rules! error_codes {
    ($($variant:ident => $status:ident, $code:literal, $title:literal;)*) => {
        /// The stable error codes of the API.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            /// Every code, in the table's order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code's row: status, code string, title.
            const fn row(self) -> (StatusCode, &'static str, &'static str) {
                match self {
                    $(Code::$variant => (StatusCode::$status, $code, $title),)*
                }
            }
        }
    };
}

error_codes! {
    InvalidRequest => BAD_REQUEST, "invalid_request", "Invalid request";
    InvalidName => BAD_REQUEST, "invalid_name", "Invalid name";
    InvalidBody => BAD_REQUEST, "invalid_body", "Invalid body";
    NotFound => NOT_FOUND, "not_found", "Not found";
    StationNotFound => NOT_FOUND, "station_not_found", "Station not found";
    ConsumerGroupNotFound => NOT_FOUND, "consumer_group_not_found", "Consumer group not found";
    DeadLetterNotFound => NOT_FOUND, "dead_letter_not_found", "Dead letter not found";
    HookNotFound => NOT_FOUND, "hook_not_found", "Hook not found";
    SourceNotFound => NOT_FOUND, "source_not_found", "Source not found";
    InvalidToken => UNAUTHORIZED, "invalid_token", "Invalid ingest URL";
    MissingSignature => UNAUTHORIZED, "missing_signature", "Missing signature";
    MalformedSignature => UNAUTHORIZED, "malformed_signature", "Malformed signature";
    BadSignature => UNAUTHORIZED, "bad_signature", "Bad signature";
    StaleTimestamp => UNAUTHORIZED, "stale_timestamp", "Signed timestamp out of tolerance";
    InvalidPushUrl => BAD_REQUEST, "invalid_push_url", "Invalid push URL";
    ConsumerGroupIsPush => CONFLICT, "consumer_group_is_push", "Consumer group is a push group";
    ConsumerGroupNotPush => CONFLICT, "consumer_group_not_push", "Consumer group is not a push group";
    MessageNotFound => NOT_FOUND, "message_not_found", "Message not found";
    PayloadTooLarge => PAYLOAD_TOO_LARGE, "payload_too_large", "Payload too large";
    RequestTimeout => REQUEST_TIMEOUT, "request_timeout", "Request timeout";
    UriTooLong => URI_TOO_LONG, "uri_too_long", "URI too long";
    HeaderFieldsTooLarge => REQUEST_HEADER_FIELDS_TOO_LARGE, "header_fields_too_large", "Request header fields too large";
    UnsupportedMediaType => UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Unsupported media type";
    MethodNotAllowed => METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed";
    IdempotencyKeyReused => UNPROCESSABLE_ENTITY, "idempotency_key_reused", "Idempotency key reused";
    RateLimited => TOO_MANY_REQUESTS, "rate_limited", "Too many requests";
    Unauthorized => UNAUTHORIZED, "unauthorized", "Unauthorized";
    Forbidden => FORBIDDEN, "forbidden", "Forbidden";
    UserNotFound => NOT_FOUND, "user_not_found", "User not found";
    ApiKeyNotFound => NOT_FOUND, "api_key_not_found", "API key not found";
    AlreadyExists => CONFLICT, "already_exists", "Already exists";
    MembershipConflict => CONFLICT, "membership_conflict", "Membership change not possible";
    MetadataUnavailable => SERVICE_UNAVAILABLE, "metadata_unavailable", "Metadata store unavailable";
    Overloaded => SERVICE_UNAVAILABLE, "overloaded", "Overloaded";
    NotLeaderUnavailable => SERVICE_UNAVAILABLE, "not_leader_unavailable", "Unavailable";
    ShuttingDown => SERVICE_UNAVAILABLE, "shutting_down", "Shutting down";
    TierUnavailable => SERVICE_UNAVAILABLE, "tier_unavailable", "Tiered data unavailable";
    StorageFull => INSUFFICIENT_STORAGE, "storage_full", "Storage full";
    Internal => INTERNAL_SERVER_ERROR, "internal", "Internal error";
}

impl Code {
    pub fn status(self) -> StatusCode {
        self.row().0
    }

    pub fn as_str(self) -> &'static str {
        self.row().1
    }

    pub fn title(self) -> &'static str {
        self.row().2
    }
}

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    InvalidBody(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    UriTooLong(String),
    #[error("{0}")]
    HeaderFieldsTooLarge(String),
    #[error("{0}")]
    IdempotencyKeyReused(String),
    #[error("{0}")]
    InvalidPushUrl(String),
    #[error("hook {0} not found")]
    HookNotFound(String),
    #[error("source {0} not found")]
    SourceNotFound(String),
    /// A delivery to an ingest URL refused before anything was stored: a bad token or
    /// signature (`code` says which, a 401 one).
    #[error("{detail}")]
    IngestRefused { code: Code, detail: String },
    /// The path names a resource, but not for this method; `allow` lists the methods it has.
    #[error("{method} is not allowed here; use {allow}")]
    MethodNotAllowed { method: String, allow: String },
    /// Over a rate limit.
    #[error("too many requests; retry after {} s", .0.retry_after)]
    RateLimited(Limited),
    /// No credentials, or bad ones.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    #[error("no user {0:?}")]
    UserNotFound(String),
    #[error("no API key {0:?}")]
    ApiKeyNotFound(String),
    /// Not retained: removed by retention, or not produced yet.
    #[error("{0}")]
    MessageNotFound(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// Too much work of one kind at once (password checks): 503 with Retry-After.
    #[error("{0}")]
    Overloaded(String),
    /// A bug on our side; the client sees a bare 500 and the details go to the log.
    #[error("internal: {0}")]
    Internal(String),
}

/// The problem+json body (RFC 9457).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:depot:error:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable snake_case code, e.g. `station_not_found`.
    pub code: String,
}

impl ApiError {
    /// The code, the client-facing detail, and a Retry-After hint.
    fn describe(&self) -> (Code, String, Option<Duration>) {
        match self {
            ApiError::InvalidRequest(d) => (Code::InvalidRequest, d.clone(), None),
            ApiError::InvalidName(d) => (Code::InvalidName, d.clone(), None),
            ApiError::InvalidBody(d) => (Code::InvalidBody, d.clone(), None),
            ApiError::UnsupportedMediaType(d) => (Code::UnsupportedMediaType, d.clone(), None),
            ApiError::PayloadTooLarge(d) => (Code::PayloadTooLarge, d.clone(), None),
            ApiError::RequestTimeout(d) => (Code::RequestTimeout, d.clone(), None),
            ApiError::UriTooLong(d) => (Code::UriTooLong, d.clone(), None),
            ApiError::HeaderFieldsTooLarge(d) => (Code::HeaderFieldsTooLarge, d.clone(), None),
            ApiError::IdempotencyKeyReused(d) => (Code::IdempotencyKeyReused, d.clone(), None),
            ApiError::MethodNotAllowed { .. } => (Code::MethodNotAllowed, self.to_string(), None),
            ApiError::RateLimited(l) => (Code::RateLimited, self.to_string(), Some(Duration::from_secs(l.retry_after))),
            ApiError::Unauthorized(d) => (Code::Unauthorized, d.clone(), None),
            ApiError::Forbidden(d) => (Code::Forbidden, d.clone(), None),
            ApiError::UserNotFound(_) => (Code::UserNotFound, self.to_string(), None),
            ApiError::HookNotFound(_) => (Code::HookNotFound, self.to_string(), None),
            ApiError::SourceNotFound(_) => (Code::SourceNotFound, self.to_string(), None),
            ApiError::IngestRefused { code, detail } => (*code, detail.clone(), None),
            ApiError::InvalidPushUrl(_) => (Code::InvalidPushUrl, self.to_string(), None),
            ApiError::ApiKeyNotFound(_) => (Code::ApiKeyNotFound, self.to_string(), None),
            ApiError::MessageNotFound(d) => (Code::MessageNotFound, d.clone(), None),
            ApiError::Meta(e) => match e {
                MetaError::Conflict(what) => (Code::AlreadyExists, format!("{what} already exists"), None),
                MetaError::Unavailable(_) => (
                    Code::MetadataUnavailable,
                    "the metadata store is unavailable".to_owned(),
                    Some(Duration::from_secs(1)),
                ),
                MetaError::Corrupt(_) => (Code::Internal, "internal error".to_owned(), None),
            },
            ApiError::RouteNotFound(_) => (Code::NotFound, self.to_string(), None),
            ApiError::Broker(e) => match e {
                BrokerError::Command(c) => match c {
                    CommandError::StationNotFound(_) => (Code::StationNotFound, c.to_string(), None),
                    CommandError::GroupNotFound { .. } => (Code::ConsumerGroupNotFound, c.to_string(), None),
                    CommandError::Invalid(d) => (Code::InvalidRequest, d.clone(), None),
                    CommandError::DeadLetterNotFound(_) => (Code::DeadLetterNotFound, c.to_string(), None),
                    CommandError::WrongDelivery { push: true, .. } => (Code::ConsumerGroupIsPush, c.to_string(), None),
                    CommandError::WrongDelivery { push: false, .. } => {
                        (Code::ConsumerGroupNotPush, c.to_string(), None)
                    }
                    CommandError::SourceNotFound(_) => (Code::SourceNotFound, c.to_string(), None),
                    CommandError::IngestRefused => (Code::InvalidToken, c.to_string(), None),
                },
                BrokerError::Unavailable { reason, retry_after } => {
                    (Code::NotLeaderUnavailable, format!("unavailable: {reason}"), Some(*retry_after))
                }
                BrokerError::TierUnavailable { reason, retry_after } => (
                    Code::TierUnavailable,
                    format!("the message is in the tiering bucket, which could not be read ({reason}); nothing changed, retry after Retry-After"),
                    Some(*retry_after),
                ),
                BrokerError::ShuttingDown => {
                    (Code::ShuttingDown, "the server is shutting down".to_owned(), Some(Duration::from_secs(1)))
                }
                BrokerError::StorageFull { .. } => (
                    Code::StorageFull,
                    format!("{e}; new messages are refused until space is freed: retry after Retry-After, with the same Idempotency-Key"),
                    Some(STORAGE_FULL_RETRY),
                ),
                BrokerError::Membership(reason) => (Code::MembershipConflict, reason.clone(), None),
                BrokerError::NoSuchNode(_) => (Code::NotFound, e.to_string(), None),
                BrokerError::Storage(_) | BrokerError::DataDir(_) => {
                    (Code::Internal, "internal error".to_owned(), None)
                }
            },
            ApiError::Overloaded(d) => (Code::Overloaded, d.clone(), Some(Duration::from_secs(1))),
            ApiError::Internal(_) => (Code::Internal, "internal error".to_owned(), None),
        }
    }

    pub fn code(&self) -> Code {
        self.describe().0
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Unauthorized(d) => ApiError::Unauthorized(d),
            AuthError::RateLimited(l) => ApiError::RateLimited(l),
            AuthError::Overloaded(d) => ApiError::Overloaded(d),
            AuthError::InvalidScopes(d) => ApiError::InvalidRequest(d),
            AuthError::Meta(e) => ApiError::Meta(e),
            AuthError::Internal(d) => ApiError::Internal(d),
        }
    }
}

/// How long a client refused for a full disk should wait: freeing space takes an operator or a
/// retention run, not a moment.
const STORAGE_FULL_RETRY: Duration = Duration::from_secs(10);

/// A problem+json response for `code`; used by handlers and by actix's own error hooks.
pub fn problem(code: Code, detail: String) -> HttpResponse {
    let status = code.status();
    HttpResponse::build(status).content_type("application/problem+json").json(Problem {
        kind: format!("urn:depot:error:{}", code.as_str()),
        title: code.title().to_owned(),
        status: status.as_u16(),
        detail,
        code: code.as_str().to_owned(),
    })
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code().status()
    }

    fn error_response(&self) -> HttpResponse {
        let (code, detail, retry_after) = self.describe();
        match self {
            ApiError::Broker(BrokerError::Storage(e)) | ApiError::Internal(e) => {
                tracing::error!(error = %e, "internal error");
            }
            ApiError::Meta(e @ (MetaError::Unavailable(_) | MetaError::Corrupt(_))) => {
                tracing::error!(error = %e, "metadata store error");
            }
            _ => {}
        }
        let mut response = problem(code, detail);
        if let ApiError::PayloadTooLarge(_) | ApiError::RequestTimeout(_) = self {
            // The rest of the body is not read: the connection cannot carry another request.
            response.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
        }
        if let ApiError::MethodNotAllowed { allow, .. } = self {
            if let Ok(value) = HeaderValue::from_str(allow) {
                response.headers_mut().insert(header::ALLOW, value);
            }
        }
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"depot\""));
            }
            // The ingest URL's token and the sender's signature are the credentials.
            ApiError::IngestRefused { .. } | ApiError::Broker(BrokerError::Command(CommandError::IngestRefused)) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Signature realm=\"depot-ingest\""));
            }
            ApiError::RateLimited(limited) => {
                for (name, value) in
                    [("ratelimit-policy", limited.policy_header()), ("ratelimit", limited.ratelimit_header())]
                {
                    if let Ok(value) = HeaderValue::from_str(&value) {
                        headers.insert(header::HeaderName::from_static(name), value);
                    }
                }
            }
            _ => {}
        }
        if let Some(after) = retry_after {
            let secs = after.as_secs().max(1);
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// Validates a station or consumer-group name before it reaches the broker.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    depot_broker::station::validate_name(name).map_err(ApiError::InvalidName)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_string_is_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{s}");
            assert!(!code.title().is_empty());
        }
    }
}
