//! Browsing: reading a station's retained messages by offset, in either order, without
//! delivering them (no group's state changes).

use actix_web::{get, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::extract::Consume;
use crate::auth::Authorized;
use crate::encoding::{self, BrowsedMessage};
use crate::error::{check_name, ApiError, Problem};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(browse_messages).service(browse_message);
}

/// A page stops adding messages once their payloads reach this many bytes (it always holds at
/// least one), so that a page of large messages stays a reasonable answer.
pub const PAGE_MAX_BYTES: u64 = 8 << 20;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BrowseQuery {
    /// The first offset of the page: default the first retained offset (`asc`) or the newest
    /// (`desc`). Upward, offsets retention removed are skipped; past the end the page is empty.
    pub from_offset: Option<u64>,
    /// `asc` (default) or `desc`.
    #[param(inline, value_type = Option<BrowseOrder>)]
    pub order: Option<String>,
    /// 1-1000, default 100. A page also stops once its payloads reach 8 MiB.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page, an opaque token; it continues in the same order (and
    /// takes the place of `from_offset`). Absent (or empty) for the first page.
    #[param(pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$")]
    pub cursor: Option<String>,
}

/// The order of a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BrowseOrder {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

impl BrowseOrder {
    fn parse(order: &str) -> Result<BrowseOrder, ApiError> {
        match order {
            "asc" => Ok(BrowseOrder::Asc),
            "desc" => Ok(BrowseOrder::Desc),
            other => Err(ApiError::InvalidRequest(format!("order must be asc or desc, not {other:?}"))),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            BrowseOrder::Asc => "asc",
            BrowseOrder::Desc => "desc",
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BrowsePage {
    /// In the order asked for.
    pub messages: Vec<BrowsedMessage>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A cursor holds the order and the offset the next page starts at: `asc:17`.
fn encode_cursor(order: BrowseOrder, next: u64) -> String {
    encoding::encode_cursor(&format!("{}:{next}", order.as_str()))
}

fn decode_cursor(cursor: &str) -> Result<(BrowseOrder, u64), ApiError> {
    let foreign = || ApiError::InvalidRequest("cursor: not a cursor this server issued".to_owned());
    let (order, next) = cursor.split_once(':').ok_or_else(foreign)?;
    let order = BrowseOrder::parse(order).map_err(|_| foreign())?;
    Ok((order, next.parse().map_err(|_| foreign())?))
}

/// The order and first offset of the page asked for.
fn start(q: &BrowseQuery) -> Result<(BrowseOrder, Option<u64>), ApiError> {
    let order = q.order.as_deref().map(BrowseOrder::parse).transpose()?;
    match encoding::page_cursor(q.cursor.as_deref())? {
        Some(cursor) => {
            let (cursor_order, next) = decode_cursor(&cursor)?;
            if order.is_some_and(|o| o != cursor_order) {
                return Err(ApiError::InvalidRequest(format!(
                    "cursor continues a page in {} order; leave order out or give the same",
                    cursor_order.as_str()
                )));
            }
            Ok((cursor_order, Some(next)))
        }
        None => Ok((order.unwrap_or(BrowseOrder::Asc), q.from_offset)),
    }
}

/// Browse a station's retained messages without delivering them: no group's state changes.
#[utoipa::path(
    tag = "messages",
    params(crate::routes::StationPath, BrowseQuery),
    responses(
        (status = 200, body = BrowsePage),
        (status = 400, description = "Invalid name or query (order asc or desc, limit 1-1000, a cursor this server issued)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "tier_unavailable: a message is in the tiering bucket, which could not be read (Retry-After); or not_leader_unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/stations/{station}/messages")]
async fn browse_messages(
    _auth: Authorized<Consume>,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<BrowseQuery>,
) -> Result<web::Json<BrowsePage>, ApiError> {
    let station = path.into_inner();
    check_name(&station)?;
    let q = query.into_inner();
    let limit = encoding::page_limit(q.limit)?;
    let (order, from) = start(&q)?;
    let page = state.broker.browse(&station, from, limit, order == BrowseOrder::Desc, PAGE_MAX_BYTES).await?;
    let messages = page.messages.iter().map(|m| BrowsedMessage::from_stored(&station, page.station_id, m)).collect();
    Ok(web::Json(BrowsePage { messages, next_cursor: page.next.map(|next| encode_cursor(order, next)) }))
}

/// The path of one message.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct MessagePath {
    /// Station name.
    #[param(pattern = r"^[a-z0-9][a-z0-9._-]*$", min_length = 1, max_length = 128)]
    station: String,
    /// The message's offset.
    offset: u64,
}

/// Read one retained message by offset, without delivering it.
#[utoipa::path(
    tag = "messages",
    params(MessagePath),
    responses(
        (status = 200, body = BrowsedMessage),
        (status = 400, description = "Invalid name or offset", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found, or message_not_found: retention removed the offset or it is past the end", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "tier_unavailable: a message is in the tiering bucket, which could not be read (Retry-After); or not_leader_unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/stations/{station}/messages/{offset:[0-9]+}")]
async fn browse_message(
    _auth: Authorized<Consume>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<web::Json<BrowsedMessage>, ApiError> {
    let (station, offset) = path.into_inner();
    check_name(&station)?;
    let offset = offset
        .parse::<u64>()
        .map_err(|_| ApiError::InvalidRequest(format!("offset must be a number, not {offset:?}")))?;
    // A one-message page from `offset`: it starts later when retention removed the offset.
    let page = state.broker.browse(&station, Some(offset), 1, false, u64::MAX).await?;
    match page.messages.first() {
        Some(m) if m.offset == offset => Ok(web::Json(BrowsedMessage::from_stored(&station, page.station_id, m))),
        _ => Err(ApiError::MessageNotFound(format!("station {station:?} retains no message at offset {offset}"))),
    }
}
