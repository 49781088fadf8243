//! Per-request observability: a request id (`X-Request-Id`), a tracing span around the request
//! (method, route pattern, status, latency), the request metrics, and the access log: one line
//! per request at INFO with target `depot::access` (method, route pattern, status, latency,
//! principal, request id). It names the route pattern, never the path (an ingest URL's path is
//! its credential), and no header, so no token reaches the log. `access_log = false` turns it
//! off; answers 5xx are logged at WARN either way. With traces on, a W3C `traceparent` header
//! makes the span a child of the caller's span ([`crate::telemetry::incoming_parent`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use tracing::Instrument;

use crate::auth::Principal;
use crate::state::AppState;

pub const REQUEST_ID: &str = "x-request-id";

/// The id of the request being served, in the request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// An incoming id is kept when it is 1-64 chars of `[A-Za-z0-9-_]`.
pub fn valid_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new id, unique within the process and across restarts: boot time and a counter.
pub fn new_request_id() -> String {
    static BOOT: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let boot = *BOOT
        .get_or_init(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or_default());
    format!("{boot:x}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map_or_else(new_request_id, str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        route = tracing::field::Empty,
        status = tracing::field::Empty,
        latency_us = tracing::field::Empty,
    );
    if let Some(parent) = crate::telemetry::incoming_parent(req.headers()) {
        // Fails only without the OpenTelemetry layer (traces off), when there is nothing to
        // continue.
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, parent);
    }
    let result = next.call(req).instrument(span.clone()).await;
    let latency = start.elapsed();
    let (status, route) = match &result {
        Ok(res) => (res.status(), res.request().match_pattern()),
        Err(e) => (e.as_response_error().status_code(), None),
    };
    span.record("route", route.as_deref().unwrap_or(crate::metrics::UNMATCHED));
    span.record("status", status.as_u16());
    span.record("latency_us", u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    let principal = match &result {
        Ok(res) => res.request().extensions().get::<Principal>().map(Principal::actor),
        Err(_) => None,
    };
    let access_log = state.as_ref().is_none_or(|s| s.access_log);
    span.in_scope(|| {
        let route = route.as_deref().unwrap_or(crate::metrics::UNMATCHED);
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let principal = principal.as_deref().unwrap_or("-");
        // The span's fields are repeated: with a filter above INFO they are not recorded.
        if status.is_server_error() {
            tracing::warn!(target: "depot::access", request_id = %id, %method, route = %route, status = status.as_u16(), latency_us, principal = %principal, "request answered");
        } else if access_log {
            tracing::info!(target: "depot::access", request_id = %id, %method, route = %route, status = status.as_u16(), latency_us, principal = %principal, "request answered");
        }
    });
    if let Some(state) = &state {
        state.metrics.observe(route.as_deref(), &method, status.as_u16(), latency);
        if status.as_u16() == 429 {
            crate::metrics::Metrics::add(&state.metrics.rate_limited, 1);
        }
    }
    let mut res = result?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HeaderName::from_static(REQUEST_ID), value);
    }
    Ok(res)
}
