//! One file per resource; each registers its own routes in its `configure`.

use depot_broker::station::Outcome;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::error::ApiError;

pub mod consume;
pub mod dead_letters;
pub mod groups;
pub mod messages;
pub mod ops;
pub mod stations;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.configure(stations::configure)
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
