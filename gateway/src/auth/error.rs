//! What authentication and credential management fail with. Free of HTTP: the HTTP layer maps it
//! to its problem+json answers (`From<AuthError> for ApiError` in `crate::error`).

use crate::meta::MetaError;
use crate::rate_limit::Limited;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials, or bad ones: a wrong password, an unknown, expired or revoked token or key.
    #[error("{0}")]
    Unauthorized(String),
    /// A username used up its failed logins.
    #[error("too many requests; retry after {} s", .0.retry_after)]
    RateLimited(Limited),
    /// Too many password checks at once; worth retrying shortly.
    #[error("{0}")]
    Overloaded(String),
    /// An API key's scopes are not acceptable.
    #[error("{0}")]
    InvalidScopes(String),
    /// The metadata store failed or refused (`Conflict` when a name is taken).
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A bug or a broken dependency on our side.
    #[error("internal: {0}")]
    Internal(String),
}
