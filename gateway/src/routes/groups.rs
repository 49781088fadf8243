//! Consumer groups: create or update, read, list, delete, seek.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use depot_broker::station::{
    GroupConfig, GroupView, PushBody, PushConfig, PushGroup, PushState, SecretChoice, SeekTo, StartPosition,
};
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::extract::{Manage, SeeStation};
use crate::auth::Authorized;
use crate::encoding::{self, rfc3339};
use crate::error::{check_name, ApiError, Problem};
use crate::push::engine::reserved_header;
use crate::push::guard::Guard;
use crate::push::live::Live;
use crate::push::sign;
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(put_group).service(list_groups).service(get_group).service(delete_group).service(seek);
}

const CONFIG_BODY_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NamedStart {
    Earliest,
    Latest,
}

/// Where a new group starts: `"earliest"`, `"latest"`, `{"offset": n}` or `{"time": "RFC 3339"}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Start {
    Named(NamedStart),
    Offset(OffsetStart),
    Time(TimeStart),
}

// Read by `StartVisitor`, not by an untagged derive: serde reads an untagged enum through a
// buffer of its own, past `encoding::from_json`'s rule that a whole-number float is an integer
// (`{"offset": 268435455.0}` was refused).
impl<'de> Deserialize<'de> for Start {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Start, D::Error> {
        deserializer.deserialize_any(StartVisitor)
    }
}

/// Dispatches on the JSON shape (a string or an object) and reads each field through the
/// deserializer it was given, so the field types' own rules apply.
struct StartVisitor;

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum StartField {
    Offset,
    Time,
}

impl<'de> Visitor<'de> for StartVisitor {
    type Value = Start;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#""earliest", "latest", {"offset": n} or {"time": "RFC 3339"}"#)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Start, E> {
        NamedStart::deserialize(de::value::StrDeserializer::<E>::new(v)).map(Start::Named)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Start, A::Error> {
        let start = match map.next_key::<StartField>()? {
            Some(StartField::Offset) => Start::Offset(OffsetStart { offset: map.next_value()? }),
            Some(StartField::Time) => Start::Time(TimeStart { time: map.next_value()? }),
            None => return Err(de::Error::invalid_length(0, &self)),
        };
        if map.next_key::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("start takes exactly one of offset and time"));
        }
        Ok(start)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OffsetStart {
    pub offset: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeStart {
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub time: String,
}

/// A group's configuration; omitted fields take their defaults (PUT replaces the whole config).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupConfigInput {
    /// Default "earliest". Only used when the group is created; use seek to move it later.
    pub start: Option<Start>,
    /// How long a delivery may stay unacked before it is redelivered (default 30000).
    #[schema(minimum = 1)]
    pub ack_wait_ms: Option<u64>,
    /// Deliveries before the message is dead-lettered (default 5).
    #[schema(minimum = 1)]
    pub max_deliveries: Option<u32>,
    /// Redelivery delay after the n-th failed attempt: `backoff_ms[min(n, len) - 1]` (default none);
    /// at most 100 steps, each at most the server's `max_delay_ms` (default 31536000000, 365 days).
    #[schema(max_items = 100)]
    pub backoff_ms: Option<Vec<u64>>,
    /// Most deliveries in flight at once (default 10000).
    #[schema(minimum = 1)]
    pub max_pending: Option<u32>,
    /// Makes this a push group: the server delivers each message to `push.url` (a webhook)
    /// instead of consumers fetching it. Absent: a pull group.
    pub push: Option<PushInput>,
}

/// Where and how a push group delivers.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushInput {
    /// `http` or `https`; its host must not be (or resolve only to) a loopback, private,
    /// shared, link-local, unique-local, multicast or unspecified address unless the server
    /// allows private networks (400 `invalid_push_url`).
    #[schema(max_length = 2048)]
    pub url: String,
    /// `whsec_` + base64 of 24-64 bytes. Absent: one is generated on create (and an update
    /// keeps the current one). Shown once, in this PUT's answer.
    #[schema(pattern = r"^whsec_[A-Za-z0-9+/]{32,86}={0,2}$")]
    pub secret: Option<String>,
    /// Extra request headers sent with every delivery (at most 32; not `webhook-*`,
    /// `depot-*`, `content-type` or hop-by-hop headers).
    pub headers: Option<BTreeMap<String, String>>,
    /// Per attempt, 1000-60000 (default 15000); shorter than the group's `ack_wait_ms`.
    #[schema(minimum = 1000, maximum = 60000)]
    pub timeout_ms: Option<u64>,
    /// Attempts under way at once, 1-1000 (default 16).
    #[schema(minimum = 1, maximum = 1000)]
    pub max_in_flight: Option<u32>,
    /// Attempts started per second at most (default: no limit).
    #[schema(minimum = 1)]
    pub rate_per_s: Option<u32>,
}

pub const DEFAULT_PUSH_TIMEOUT_MS: u64 = 15_000;
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 16;
const MAX_PUSH_HEADER_BYTES: usize = 8 * 1024;

/// A push request checked against the contract: the config, and the secret to propose.
pub(crate) struct CheckedPush {
    pub config: PushConfig,
    pub secret: SecretChoice,
}

impl PushInput {
    pub(crate) async fn check(self, guard: &Guard, body: PushBody) -> Result<CheckedPush, ApiError> {
        let url = guard.check_url(&self.url).await.map_err(ApiError::InvalidPushUrl)?;
        let mut headers = Vec::new();
        for (name, value) in self.headers.unwrap_or_default() {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ApiError::InvalidRequest(format!("push.headers: {name:?} is not a header name")));
            }
            if reserved_header(&name) {
                return Err(ApiError::InvalidRequest(format!("push.headers: {name:?} is set by the server")));
            }
            if HeaderValue::from_str(&value).is_err() || value.len() > MAX_PUSH_HEADER_BYTES {
                return Err(ApiError::InvalidRequest(format!(
                    "push.headers: the value of {name:?} must be visible ASCII, at most {MAX_PUSH_HEADER_BYTES} bytes"
                )));
            }
            headers.push((name.to_ascii_lowercase(), value));
        }
        let secret = match self.secret {
            Some(given) => {
                sign::parse_secret(&given).map_err(|e| ApiError::InvalidRequest(format!("push.secret: {e}")))?;
                SecretChoice::Given(given)
            }
            None => SecretChoice::Generated(sign::generate_secret()),
        };
        let config = PushConfig {
            url: url.to_string(),
            headers,
            timeout_ms: self.timeout_ms.unwrap_or(DEFAULT_PUSH_TIMEOUT_MS),
            max_in_flight: self.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            rate_per_s: self.rate_per_s,
            body,
            hook_created_at: None,
        };
        Ok(CheckedPush { config, secret })
    }
}

/// Documents the bound of each `backoff_ms` step (utoipa has no attribute for an item's bound).
pub(crate) fn document_backoff_bound(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::{ArrayItems, Schema};
    use utoipa::openapi::RefOr;
    let Some(RefOr::T(Schema::Object(input))) =
        api.components.as_mut().and_then(|c| c.schemas.get_mut("GroupConfigInput"))
    else {
        return;
    };
    if let Some(RefOr::T(Schema::Array(steps))) = input.properties.get_mut("backoff_ms") {
        if let ArrayItems::RefOrSchema(item) = &mut steps.items {
            if let RefOr::T(Schema::Object(step)) = item.as_mut() {
                step.maximum = Some(utoipa::Number::UInt(crate::state::DEFAULT_MAX_DELAY_MS as usize));
            }
        }
    }
}

impl GroupConfigInput {
    fn into_config(self, max_delay_ms: u64) -> Result<(GroupConfig, Option<PushInput>), ApiError> {
        for step in self.backoff_ms.iter().flatten() {
            encoding::check_delay("backoff_ms", *step, max_delay_ms)?;
        }
        let d = GroupConfig::default();
        let start = match self.start {
            None | Some(Start::Named(NamedStart::Earliest)) => StartPosition::Earliest,
            Some(Start::Named(NamedStart::Latest)) => StartPosition::Latest,
            Some(Start::Offset(o)) => StartPosition::Offset(o.offset),
            Some(Start::Time(t)) => StartPosition::Time(encoding::parse_rfc3339("start.time", &t.time)?),
        };
        let config = GroupConfig {
            start,
            ack_wait_ms: self.ack_wait_ms.unwrap_or(d.ack_wait_ms),
            max_deliveries: self.max_deliveries.unwrap_or(d.max_deliveries),
            backoff_ms: self.backoff_ms.unwrap_or(d.backoff_ms),
            max_pending: self.max_pending.unwrap_or(d.max_pending),
        };
        Ok((config, self.push))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupConfigBody {
    pub start: Start,
    pub ack_wait_ms: u64,
    pub max_deliveries: u32,
    pub backoff_ms: Vec<u64>,
    pub max_pending: u32,
    /// A push group's delivery settings (without its secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushConfigBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PushConfigBody {
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u64,
    pub max_in_flight: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<u32>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PushStateBody {
    Active,
    Paused,
    Disabled,
}

/// A push group's delivery state. Totals, times and the last error are settled through Raft
/// (every node shows the same); `in_flight` is the delivering node's (the Raft leader's), and
/// the group's `pending` on any node.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushStatus {
    pub url: String,
    pub state: PushStateBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    pub in_flight: u64,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub delivered_total: u64,
    pub failed_total: u64,
    /// The last 4 characters of the signing secret.
    pub secret_hint: String,
    /// The signing secret: only in the answer of the PUT (or hook creation) that set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl PushStatus {
    pub(crate) fn new(station: &str, group: &str, push: &PushGroup, live: &Live) -> PushStatus {
        let in_flight = live.get(station, group).map_or(0, |g| g.in_flight());
        let stats = &push.stats;
        PushStatus {
            url: push.config.url.clone(),
            state: match push.state {
                PushState::Active => PushStateBody::Active,
                PushState::Paused => PushStateBody::Paused,
                PushState::Disabled => PushStateBody::Disabled,
            },
            disabled_reason: push.disabled_reason.clone(),
            in_flight,
            last_attempt_at: stats.last_attempt_at.map(rfc3339),
            last_success_at: stats.last_success_at.map(rfc3339),
            last_error: stats.last_error.clone(),
            delivered_total: stats.delivered_total,
            failed_total: stats.failed_total,
            secret_hint: push.secrets.first().map(|s| sign::secret_hint(&s.secret)).unwrap_or_default(),
            secret: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Group {
    pub name: String,
    pub config: GroupConfigBody,
    /// Retained messages not yet acked or dead-lettered by this group.
    pub lag: u64,
    /// Deliveries in flight.
    pub pending: u64,
    /// The next offset to be delivered for the first time.
    pub delivered_offset: u64,
    /// Every offset below this one is acked or dead-lettered.
    pub acked_floor: u64,
    pub dead_lettered: u64,
    /// Set for a push group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushStatus>,
}

impl Group {
    /// The group as the API shows it, with a push group's live figures from `live`.
    pub fn new(station: &str, v: GroupView, live: &Live) -> Group {
        let push = v.push.as_ref().map(|p| PushStatus::new(station, &v.name, p, live));
        let push_config = v.push.as_ref().map(|p| PushConfigBody {
            url: p.config.url.clone(),
            headers: p.config.headers.iter().cloned().collect(),
            timeout_ms: p.config.timeout_ms,
            max_in_flight: p.config.max_in_flight,
            rate_per_s: p.config.rate_per_s,
        });
        let c = v.config;
        let start = match c.start {
            StartPosition::Earliest => Start::Named(NamedStart::Earliest),
            StartPosition::Latest => Start::Named(NamedStart::Latest),
            StartPosition::Offset(offset) => Start::Offset(OffsetStart { offset }),
            StartPosition::Time(t) => Start::Time(TimeStart { time: rfc3339(t) }),
        };
        Group {
            name: v.name,
            config: GroupConfigBody {
                start,
                ack_wait_ms: c.ack_wait_ms,
                max_deliveries: c.max_deliveries,
                backoff_ms: c.backoff_ms,
                max_pending: c.max_pending,
                push: push_config,
            },
            lag: v.lag,
            pending: v.pending,
            delivered_offset: v.delivered_offset,
            acked_floor: v.acked_floor,
            dead_lettered: v.dead_lettered,
            push,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupList {
    pub consumer_groups: Vec<Group>,
}

/// `{"offset": n}` or `{"time": "RFC 3339"}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeekRequest {
    pub offset: Option<u64>,
    /// RFC 3339: the first message produced at or after this time.
    pub time: Option<String>,
}

/// The documented shape of [`SeekRequest`]: exactly one of `offset` and `time` (the other absent
/// or null).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
#[schema(as = SeekRequest)]
pub enum SeekRequestDoc {
    Offset(SeekOffsetDoc),
    Time(SeekTimeDoc),
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct SeekOffsetDoc {
    offset: u64,
    #[schema(schema_with = crate::routes::null_schema)]
    time: Option<()>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct SeekTimeDoc {
    #[schema(schema_with = crate::routes::null_schema)]
    offset: Option<()>,
    /// RFC 3339: the first message produced at or after this time.
    #[schema(format = DateTime)]
    time: String,
}

/// The secret a push PUT proposed, if the group now signs with it (a generated one is not
/// used when the group already had a secret).
pub(crate) fn secret_in_force(view: &GroupView, proposed: Option<SecretChoice>) -> Option<String> {
    let secret = match proposed? {
        SecretChoice::Given(s) | SecretChoice::Generated(s) => s,
    };
    (view.push.as_ref()?.secrets.first()?.secret == secret).then_some(secret)
}

/// Puts the signing secret into a push group's answer, the one time it is shown.
pub(crate) fn show_secret(view: &mut Group, secret: Option<String>) {
    if let Some(push) = view.push.as_mut() {
        push.secret = secret;
    }
}

pub(crate) fn names(path: web::Path<(String, String)>) -> Result<(String, String), ApiError> {
    let (station, group) = path.into_inner();
    check_name(&station)?;
    check_name(&group)?;
    Ok((station, group))
}

/// Create a consumer group, or replace its configuration.
#[utoipa::path(
    tag = "consumer-groups",
    params(crate::routes::GroupPath),
    request_body(content = Option<GroupConfigInput>, content_type = "application/json", description = "Optional; an empty body means all defaults"),
    responses(
        (status = 201, description = "Created", body = Group),
        (status = 200, description = "Updated", body = Group),
        (status = 400, description = "Invalid name, body or config", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/stations/{station}/consumer-groups/{group}")]
async fn put_group(
    _auth: Authorized<Manage>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (station, group) = names(path)?;
    let input: GroupConfigInput = encoding::optional_json(&encoding::read_body(&req, body, CONFIG_BODY_LIMIT).await?)?;
    let (config, push) = input.into_config(state.max_delay_ms)?;
    let (put, shown) = match push {
        None => (state.broker.put_group(&station, &group, config).await?, None),
        Some(push) => {
            let CheckedPush { config: push, secret } = push.check(state.pusher.guard(), PushBody::Raw).await?;
            let put = state.broker.put_push_group(&station, &group, config, push, secret.clone()).await?;
            (put, Some(secret))
        }
    };
    let secret = secret_in_force(&put.value, shown);
    let mut view = Group::new(&station, put.value, state.pusher.live());
    show_secret(&mut view, secret);
    Ok(if put.created { HttpResponse::Created().json(view) } else { HttpResponse::Ok().json(view) })
}

/// List a station's consumer groups.
#[utoipa::path(
    tag = "consumer-groups",
    params(crate::routes::StationPath),
    responses(
        (status = 200, body = GroupList),
        (status = 400, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/stations/{station}/consumer-groups")]
async fn list_groups(
    _auth: Authorized<SeeStation>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<web::Json<GroupList>, ApiError> {
    let station = path.into_inner();
    check_name(&station)?;
    let view = state.broker.station(&station).await?;
    let live = state.pusher.live();
    Ok(web::Json(GroupList {
        consumer_groups: view.groups.into_iter().map(|g| Group::new(&station, g, live)).collect(),
    }))
}

/// Read one consumer group.
#[utoipa::path(
    tag = "consumer-groups",
    params(crate::routes::GroupPath),
    responses(
        (status = 200, body = Group),
        (status = 400, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found or consumer_group_not_found", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/stations/{station}/consumer-groups/{group}")]
async fn get_group(
    _auth: Authorized<SeeStation>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<web::Json<Group>, ApiError> {
    let (station, group) = names(path)?;
    Ok(web::Json(Group::new(&station, state.broker.group(&station, &group).await?, state.pusher.live())))
}

/// Delete a consumer group and its deliveries.
#[utoipa::path(
    tag = "consumer-groups",
    params(crate::routes::GroupPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found or consumer_group_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/stations/{station}/consumer-groups/{group}")]
async fn delete_group(
    _auth: Authorized<Manage>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (station, group) = names(path)?;
    state.broker.delete_group(&station, &group).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Move a group's position to an offset or a time.
#[utoipa::path(
    tag = "consumer-groups",
    params(crate::routes::GroupPath),
    request_body = SeekRequestDoc,
    responses(
        (status = 200, body = Group),
        (status = 400, description = "Invalid name or body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "station_not_found or consumer_group_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/stations/{station}/consumer-groups/{group}/seek")]
async fn seek(
    _auth: Authorized<Manage>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: encoding::Json<SeekRequest>,
) -> Result<web::Json<Group>, ApiError> {
    let (station, group) = names(path)?;
    let to = match body.into_inner() {
        SeekRequest { offset: Some(offset), time: None } => SeekTo::Offset(offset),
        SeekRequest { offset: None, time: Some(time) } => SeekTo::Time(encoding::parse_rfc3339("time", &time)?),
        SeekRequest { .. } => return Err(ApiError::InvalidBody("give exactly one of offset and time".to_owned())),
    };
    Ok(web::Json(Group::new(&station, state.broker.seek(&station, &group, to).await?, state.pusher.live())))
}
