//! The actix middleware every request passes, outermost first: [`observe`] (request id, span,
//! metrics), [`ratelimit`] (per client IP), [`http_limits`] (the request head's size).
//!
//! Each reads the shared [`crate::state::AppState`] from the app data and answers refusals with
//! [`crate::error::ApiError`]; none calls a handler's code.

pub mod http_limits;
pub mod observe;
pub mod ratelimit;
