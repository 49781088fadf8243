//! Between SQL and the store's types: error classification and row decoding.

use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use crate::meta::{ApiKey, AuditEntry, AuditRecord, Digest, MetaError, Role, User};

/// A tokio-postgres error in words: the server's code and message when it has them.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

pub(super) fn classify(e: tokio_postgres::Error) -> MetaError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        MetaError::Conflict(describe(&e))
    } else {
        MetaError::Unavailable(describe(&e))
    }
}

/// Converts tokio-postgres results into the store's error kinds.
pub(super) trait Pg<T> {
    fn meta(self) -> Result<T, MetaError>;
    /// Like [`Pg::meta`], but a unique violation becomes `Conflict(what())`.
    fn taken(self, what: impl FnOnce() -> String) -> Result<T, MetaError>;
    /// For reading a column: a failure means the stored value cannot be decoded.
    fn decoded(self) -> Result<T, MetaError>;
}

impl<T> Pg<T> for Result<T, tokio_postgres::Error> {
    fn meta(self) -> Result<T, MetaError> {
        self.map_err(classify)
    }

    fn taken(self, what: impl FnOnce() -> String) -> Result<T, MetaError> {
        self.map_err(|e| match classify(e) {
            MetaError::Conflict(_) => MetaError::Conflict(what()),
            other => other,
        })
    }

    fn decoded(self) -> Result<T, MetaError> {
        self.map_err(|e| MetaError::Corrupt(describe(&e)))
    }
}

pub(super) fn corrupt(msg: String) -> MetaError {
    MetaError::Corrupt(msg)
}

pub(super) fn from_i64<T: TryFrom<i64>>(v: i64, what: &str) -> Result<T, MetaError> {
    T::try_from(v).map_err(|_| corrupt(format!("stored {what} {v} is out of range")))
}

pub(super) fn digest_of(bytes: &[u8], what: &str) -> Result<Digest, MetaError> {
    Digest::try_from(bytes).map_err(|_| corrupt(format!("stored {what} digest has {} bytes", bytes.len())))
}

pub(super) const USER_COLUMNS: &str = "username, password_hash, role, created_at, id";

pub(super) fn user_row(row: &Row) -> Result<User, MetaError> {
    let role: String = row.try_get(2).decoded()?;
    let role = Role::parse(&role).ok_or_else(|| corrupt(format!("unknown role `{role}`")))?;
    Ok(User {
        username: row.try_get(0).decoded()?,
        password_hash: row.try_get(1).decoded()?,
        role,
        created_at: row.try_get(3).decoded()?,
        id: row.try_get(4).decoded()?,
    })
}

pub(super) const KEY_COLUMNS: &str = "id, name, owner, digest, scopes, created_at, expires_at, owner_id";

pub(super) fn key_row(row: &Row) -> Result<ApiKey, MetaError> {
    let id: String = row.try_get(0).decoded()?;
    let digest = digest_of(row.try_get(3).decoded()?, "api key")?;
    let scopes: &str = row.try_get(4).decoded()?;
    let scopes = serde_json::from_str(scopes).map_err(|e| corrupt(format!("scopes of api key `{id}`: {e}")))?;
    Ok(ApiKey {
        name: row.try_get(1).decoded()?,
        owner: row.try_get(2).decoded()?,
        digest,
        scopes,
        created_at: row.try_get(5).decoded()?,
        expires_at: row.try_get(6).decoded()?,
        owner_id: row.try_get(7).decoded()?,
        id,
    })
}

pub(super) fn audit_row(row: &Row) -> Result<AuditRecord, MetaError> {
    let id: i64 = row.try_get(0).decoded()?;
    let detail: &str = row.try_get(5).decoded()?;
    let detail = serde_json::from_str(detail).map_err(|e| corrupt(format!("detail of audit record {id}: {e}")))?;
    Ok(AuditRecord {
        id,
        entry: AuditEntry {
            at: row.try_get(1).decoded()?,
            actor: row.try_get(2).decoded()?,
            action: row.try_get(3).decoded()?,
            target: row.try_get(4).decoded()?,
            detail,
        },
    })
}

pub(super) fn rows<T>(rows: &[Row], decode: fn(&Row) -> Result<T, MetaError>) -> Result<Vec<T>, MetaError> {
    rows.iter().map(decode).collect()
}
