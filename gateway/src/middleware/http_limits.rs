//! Limits on a request's head, and the log level of connections actix gives up on.
//!
//! actix-http's h1 dispatcher refuses a head it cannot parse (400) or that overflows its 128 KiB
//! read buffer (431) by itself, with an empty body, before any application code runs; it then
//! logs the connection at ERROR ("stream error: ..."). So Depot refuses long URIs (414) and large
//! header sections (431) first, below actix's limits, with problem+json; and logs actix's own
//! refusals at WARN: a client's malformed request is not the server's error.

use std::fmt::Write as _;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::error::ApiError;

/// The longest request target (path and query), in bytes.
pub const MAX_URI: usize = 8 * 1024;

/// The largest header section (names, values and their separators), in bytes; actix refuses a
/// head past 128 KiB without a body.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The middleware: 414 past [`MAX_URI`], 431 past [`MAX_HEADER_BYTES`].
pub async fn head(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let uri = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let refused = if uri > MAX_URI {
        Some(ApiError::UriTooLong(format!("the request target has {uri} bytes; the limit is {MAX_URI}")))
    } else {
        let fields: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
        (fields > MAX_HEADER_BYTES).then(|| {
            ApiError::HeaderFieldsTooLarge(format!(
                "the header fields have {fields} bytes; the limit is {MAX_HEADER_BYTES}"
            ))
        })
    };
    match refused {
        None => next.call(req).await.map(ServiceResponse::map_into_boxed_body),
        Some(refused) => Ok(req.into_response(actix_web::ResponseError::error_response(&refused))),
    }
}

/// Where actix-http's h1 dispatcher logs the connections it closes on an error.
const ACTIX_H1: &str = "actix_http::h1::dispatcher";

/// The target Depot logs those connections under, at WARN.
pub const CLIENT_ERROR_TARGET: &str = "depot::http";

/// An ERROR of actix's h1 dispatcher: a connection closed on a parse error, an overflowing head or
/// an I/O error; the output layer drops these (see [`ClientErrorsAtWarn`]).
pub fn is_actix_connection_error(metadata: &Metadata<'_>) -> bool {
    metadata.target() == ACTIX_H1 && *metadata.level() == Level::ERROR
}

/// Logs each of actix's connection errors again at WARN under [`CLIENT_ERROR_TARGET`], with its
/// message; the output layer filters the original out with [`is_actix_connection_error`]. Stack it
/// above the output layer: logging from inside a layer below a per-layer filter would reuse that
/// filter's per-event state (the output then printed the ERROR and dropped the WARN).
pub struct ClientErrorsAtWarn;

impl<S: Subscriber> Layer<S> for ClientErrorsAtWarn {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if is_actix_connection_error(event.metadata()) {
            let mut message = Message(String::new());
            event.record(&mut message);
            tracing::warn!(target: CLIENT_ERROR_TARGET, error = %message.0, "closed a connection after a client error");
        }
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}
