//! One file per resource; each registers its own routes in its `configure`.

use depot_broker::station::Outcome;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::error::ApiError;

pub mod api_keys;
pub mod auth;
pub mod consume;
pub mod dead_letters;
pub mod groups;
pub mod messages;
pub mod ops;
pub mod stations;
pub mod users;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.configure(auth::configure)
        .configure(users::configure)
        .configure(api_keys::configure)
        .configure(stations::configure)
        .configure(messages::configure)
        .configure(groups::configure)
        .configure(consume::configure)
        .configure(dead_letters::configure)
        .configure(ops::configure);
}

/// The broker answered an outcome that does not belong to the command: a bug, not bad input.
pub(crate) fn unexpected(outcome: Outcome) -> ApiError {
    ApiError::Internal(format!("unexpected outcome {outcome:?}"))
}

/// The path of a station's operations; documents the name rules (API.md: 1-128 of `a-z 0-9 . _ -`,
/// starting with a letter or digit). Handlers still validate with [`crate::error::check_name`].
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct StationPath {
    /// Station name.
    #[param(pattern = r"^[a-z0-9][a-z0-9._-]*$", min_length = 1, max_length = 128)]
    station: String,
}

/// The path of a consumer group's operations.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct GroupPath {
    /// Station name.
    #[param(pattern = r"^[a-z0-9][a-z0-9._-]*$", min_length = 1, max_length = 128)]
    station: String,
    /// Consumer group name.
    #[param(pattern = r"^[a-z0-9][a-z0-9._-]*$", min_length = 1, max_length = 128)]
    group: String,
}

/// The path of one dead letter.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct DeadLetterPath {
    /// Station name.
    #[param(pattern = r"^[a-z0-9][a-z0-9._-]*$", min_length = 1, max_length = 128)]
    station: String,
    /// Dead-letter id.
    id: u64,
}

/// A field that may only be absent or `null` (documents "give one of these, not both").
pub(crate) fn null_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::Null).build()
}

/// The documented paths as actix patterns, with the methods each has, most specific first
/// (fewest parameters), so `/dead-letters/redrive` wins over `/dead-letters/{id}`.
fn route_table() -> &'static [(String, actix_web::dev::ResourceDef, Vec<&'static str>)] {
    static TABLE: std::sync::OnceLock<Vec<(String, actix_web::dev::ResourceDef, Vec<&'static str>)>> =
        std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table: Vec<_> = crate::openapi()
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("HEAD", item.head.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                    ("OPTIONS", item.options.is_some()),
                    ("TRACE", item.trace.is_some()),
                ];
                let methods = methods.into_iter().filter(|(_, has)| *has).map(|(m, _)| m).collect();
                (path.clone(), actix_web::dev::ResourceDef::new(path.as_str()), methods)
            })
            .collect();
        table.sort_by_key(|(path, _, _)| path.matches('{').count());
        table
    })
}

/// What to answer for a request no route took: 405 `method_not_allowed` (with `Allow`) when its
/// path names a documented resource that lacks the method; 400 when the method fits but a path
/// parameter does not (e.g. a dead-letter id that is not a number); else 404 `not_found`.
pub fn unrouted(method: &actix_web::http::Method, path: &str) -> ApiError {
    match route_table().iter().find(|(_, def, _)| def.is_match(path)) {
        Some((template, _, methods)) if methods.contains(&method.as_str()) => {
            ApiError::InvalidRequest(format!("path {path} does not fit {template}"))
        }
        Some((_, _, methods)) => ApiError::MethodNotAllowed { method: method.to_string(), allow: methods.join(", ") },
        None => ApiError::RouteNotFound(format!("{method} {path}")),
    }
}
