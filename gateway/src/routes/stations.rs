//! Stations: create or update, read, list, delete.

use actix_web::{delete, get, put, web, HttpRequest, HttpResponse};
use depot_broker::station::{
    DeadLetterConfig, Retention, StationConfig, StationTiering, StationView, MIN_TIER_AFTER_MS,
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::extract::{Anyone, Manage, SeeStation};
use crate::auth::Authorized;
use crate::encoding::{self, rfc3339};
use crate::error::{check_name, ApiError, Problem};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(put_station).service(list_stations).service(get_station).service(delete_station);
}

/// Largest PUT body accepted; configs are small.
const CONFIG_BODY_LIMIT: usize = 64 * 1024;

/// Distinguishes an absent field (use the default) from an explicit `null` (no limit).
fn explicit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// Retention limits; a message goes when any limit is reached.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionInput {
    /// Maximum age in ms (default 7 days); `null` for no age limit.
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<u64>, nullable, minimum = 1)]
    pub max_age_ms: Option<Option<u64>>,
    /// Maximum number of retained messages (default none).
    #[schema(minimum = 1)]
    pub max_messages: Option<u64>,
    /// Maximum retained payload bytes (default none).
    #[schema(minimum = 1)]
    pub max_bytes: Option<u64>,
    /// Delete a message once every consumer group has acked it (default false).
    pub ack_based: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterInput {
    /// Default true.
    pub enabled: Option<bool>,
    /// How long dead letters are kept, in ms (default 7 days).
    pub retention_ms: Option<u64>,
}

/// A station's configuration; omitted fields take their defaults (PUT replaces the whole config).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StationConfigInput {
    pub retention: Option<RetentionInput>,
    /// Least number of nodes holding the station: 1, 3 or 5, at most the cluster's voters
    /// (default min(3, cluster size)).
    #[schema(schema_with = replicas_schema)]
    pub replicas: Option<u8>,
    /// Idempotency-key window in ms (default 120000).
    pub dedup_window_ms: Option<u64>,
    /// Largest payload accepted, in bytes (default 1 MiB).
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub max_message_bytes: Option<u64>,
    pub dead_letter: Option<DeadLetterInput>,
    /// Sealed segments whose newest message is older than `after_ms` move to the server's
    /// `[tiering]` bucket and are read back from there (absent: never). Needs a server with a
    /// `[tiering]` bucket.
    pub tiering: Option<TieringInput>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TieringInput {
    /// At least 1000.
    #[schema(minimum = 1000)]
    pub after_ms: u64,
}

/// `replicas`: 1, 3 or 5 (or null for the default).
fn replicas_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .enum_values(Some([serde_json::json!(1), serde_json::json!(3), serde_json::json!(5), serde_json::Value::Null]))
        .build()
}

impl StationConfigInput {
    /// The tiering setting asked for; refused on a server without a bucket.
    fn tiering(&self, enabled: bool) -> Result<Option<StationTiering>, ApiError> {
        match &self.tiering {
            None => Ok(None),
            Some(_) if !enabled => Err(ApiError::InvalidRequest(
                "tiering needs a bucket: this server has no [tiering] settings".to_owned(),
            )),
            Some(t) if t.after_ms < MIN_TIER_AFTER_MS => {
                Err(ApiError::InvalidRequest(format!("tiering.after_ms must be at least {MIN_TIER_AFTER_MS}")))
            }
            Some(t) => Ok(Some(StationTiering { after_ms: t.after_ms })),
        }
    }

    fn into_config(self, voters: u8) -> Result<StationConfig, ApiError> {
        let defaults = StationConfig::default();
        let retention = self.retention.unwrap_or_default();
        let dead_letter = self.dead_letter.unwrap_or_default();
        let replicas = self.replicas.unwrap_or(voters.min(3));
        if !matches!(replicas, 1 | 3 | 5) {
            return Err(ApiError::InvalidRequest(format!("replicas must be 1, 3 or 5, not {replicas}")));
        }
        if replicas > voters {
            return Err(ApiError::InvalidRequest(format!(
                "replicas {replicas} is larger than the cluster's {voters} voter(s)"
            )));
        }
        Ok(StationConfig {
            retention: Retention {
                max_age_ms: retention.max_age_ms.unwrap_or(defaults.retention.max_age_ms),
                max_messages: retention.max_messages,
                max_bytes: retention.max_bytes,
                ack_based: retention.ack_based.unwrap_or(defaults.retention.ack_based),
            },
            replicas,
            dedup_window_ms: self.dedup_window_ms.unwrap_or(defaults.dedup_window_ms),
            max_message_bytes: self.max_message_bytes.unwrap_or(defaults.max_message_bytes),
            dead_letter: DeadLetterConfig {
                enabled: dead_letter.enabled.unwrap_or(defaults.dead_letter.enabled),
                retention_ms: dead_letter.retention_ms.unwrap_or(defaults.dead_letter.retention_ms),
            },
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionBody {
    /// `null`: no age limit.
    pub max_age_ms: Option<u64>,
    pub max_messages: Option<u64>,
    pub max_bytes: Option<u64>,
    pub ack_based: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterBody {
    pub enabled: bool,
    pub retention_ms: u64,
}

/// The effective configuration.
#[derive(Debug, Serialize, ToSchema)]
pub struct StationConfigBody {
    pub retention: RetentionBody,
    pub replicas: u8,
    pub dedup_window_ms: u64,
    pub max_message_bytes: u64,
    pub dead_letter: DeadLetterBody,
    /// Absent: the station does not tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tiering: Option<TieringBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TieringBody {
    pub after_ms: u64,
}

/// What of the station is in the bucket.
#[derive(Debug, Serialize, ToSchema)]
pub struct TieredBody {
    pub segments: u64,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_offset: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StationStatsBody {
    pub messages: u64,
    pub bytes: u64,
    /// Offset of the oldest retained message (equals `last_offset + 1` when empty).
    pub first_offset: u64,
    /// Offset of the newest message; `null` before the first message.
    pub last_offset: Option<u64>,
    pub tiered: TieredBody,
    /// Bytes of the station's log on this node's disk: segment files (with record headers) and
    /// the metas kept of segments whose local copies were deleted after tiering.
    pub local_bytes: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupSummary {
    pub name: String,
    pub lag: u64,
    pub pending: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Station {
    pub name: String,
    pub config: StationConfigBody,
    pub stats: StationStatsBody,
    pub consumer_groups: Vec<GroupSummary>,
    /// RFC 3339.
    pub created_at: String,
}

impl From<StationView> for Station {
    fn from(v: StationView) -> Self {
        let c = v.config;
        Station {
            name: v.name,
            config: StationConfigBody {
                retention: RetentionBody {
                    max_age_ms: c.retention.max_age_ms,
                    max_messages: c.retention.max_messages,
                    max_bytes: c.retention.max_bytes,
                    ack_based: c.retention.ack_based,
                },
                replicas: c.replicas,
                dedup_window_ms: c.dedup_window_ms,
                max_message_bytes: c.max_message_bytes,
                dead_letter: DeadLetterBody {
                    enabled: c.dead_letter.enabled,
                    retention_ms: c.dead_letter.retention_ms,
                },
                tiering: v.tiering.map(|t| TieringBody { after_ms: t.after_ms }),
            },
            stats: StationStatsBody {
                messages: v.stats.messages,
                bytes: v.stats.bytes,
                first_offset: v.stats.first_offset,
                last_offset: v.stats.next_offset.checked_sub(1),
                tiered: TieredBody {
                    segments: v.tiered.segments,
                    bytes: v.tiered.bytes,
                    first_offset: v.tiered.first_offset,
                    last_offset: v.tiered.last_offset,
                },
                local_bytes: v.local_bytes,
            },
            consumer_groups: v
                .groups
                .into_iter()
                .map(|g| GroupSummary { name: g.name, lag: g.lag, pending: g.pending })
                .collect(),
            created_at: rfc3339(v.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StationList {
    pub stations: Vec<Station>,
    /// Present when there are more stations; pass it as `cursor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page, an opaque token; absent (or empty) for the first page.
    #[param(pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$")]
    pub cursor: Option<String>,
}

/// Create or replace a station's configuration.
#[utoipa::path(
    tag = "stations",
    params(crate::routes::StationPath),
    request_body(content = Option<StationConfigInput>, content_type = "application/json", description = "Optional; an empty body means all defaults"),
    responses(
        (status = 201, description = "Created", body = Station),
        (status = 200, description = "Updated (or unchanged)", body = Station),
        (status = 400, description = "Invalid name, body or config", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/stations/{station}")]
async fn put_station(
    _auth: Authorized<Manage>,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let station = path.into_inner();
    check_name(&station)?;
    let input: StationConfigInput =
        encoding::optional_json(&encoding::read_body(&req, body, CONFIG_BODY_LIMIT).await?)?;
    let tiering = input.tiering(state.broker.tiering_enabled())?;
    let config = input.into_config(state.voters())?;
    let mut put = state.broker.put_station(&station, config).await?;
    if put.value.tiering != tiering {
        put.value = state.broker.set_station_tiering(&station, tiering).await?;
    }
    let view = Station::from(put.value);
    Ok(if put.created { HttpResponse::Created().json(view) } else { HttpResponse::Ok().json(view) })
}

/// List stations by name.
#[utoipa::path(
    tag = "stations",
    params(PageQuery),
    responses(
        (status = 200, body = StationList),
        (status = 400, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/stations")]
async fn list_stations(
    auth: Authorized<Anyone>,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<StationList>, ApiError> {
    let limit = encoding::page_limit(query.limit)?;
    let after = encoding::page_cursor(query.cursor.as_deref())?;
    let mut views = state.broker.stations().await?;
    views.retain(|v| auth.principal.sees(&v.name));
    views.sort_by(|a, b| a.name.cmp(&b.name));
    let mut page: Vec<StationView> =
        views.into_iter().filter(|v| after.as_ref().is_none_or(|a| v.name > *a)).take(limit + 1).collect();
    let next_cursor = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|v| encoding::encode_cursor(&v.name))
    } else {
        None
    };
    Ok(web::Json(StationList { stations: page.into_iter().map(Station::from).collect(), next_cursor }))
}

/// Read one station.
#[utoipa::path(
    tag = "stations",
    params(crate::routes::StationPath),
    responses(
        (status = 200, body = Station),
        (status = 400, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/stations/{station}")]
async fn get_station(
    _auth: Authorized<SeeStation>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<web::Json<Station>, ApiError> {
    let station = path.into_inner();
    check_name(&station)?;
    Ok(web::Json(state.broker.station(&station).await?.into()))
}

/// Delete a station with its messages, groups and dead letters.
#[utoipa::path(
    tag = "stations",
    params(crate::routes::StationPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/stations/{station}")]
async fn delete_station(
    auth: Authorized<Manage>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let station = path.into_inner();
    check_name(&station)?;
    state.broker.delete_station(&station).await?;
    state.audit(&auth.principal, "station.delete", &station, serde_json::json!({})).await;
    Ok(HttpResponse::NoContent().finish())
}
