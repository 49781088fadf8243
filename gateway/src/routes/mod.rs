//! One file per resource; each registers its own routes in its `configure`.

use utoipa_actix_web::service_config::ServiceConfig;

pub mod api_keys;
pub mod auth;
pub mod browse;
pub mod cluster;
pub mod consume;
pub mod dead_letters;
pub mod groups;
pub mod hooks;
pub mod messages;
pub mod ops;
pub mod push;
pub mod sources;
pub mod stations;
pub mod users;

/// The router tries routes in this order, each by its pattern, so the hot data plane (produce,
/// then fetch and settle) comes first.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.configure(messages::configure)
        .configure(sources::configure)
        .configure(consume::configure)
        .configure(browse::configure)
        .configure(groups::configure)
        .configure(push::configure)
        .configure(hooks::configure)
        .configure(stations::configure)
        .configure(dead_letters::configure)
        .configure(auth::configure)
        .configure(users::configure)
        .configure(api_keys::configure)
        .configure(cluster::configure)
        .configure(ops::configure);
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
