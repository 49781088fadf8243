//! Between SQL and the store's types: error classification and row decoding.

use rusqlite::{ErrorCode, Row};

use crate::meta::{ApiKey, AuditEntry, AuditRecord, Digest, MetaError, Role, User};

pub(super) fn corrupt(msg: String) -> MetaError {
    MetaError::Corrupt(msg)
}

/// Converts rusqlite results into the store's error kinds.
pub(super) trait Sql<T> {
    fn meta(self) -> Result<T, MetaError>;
    /// Like [`Sql::meta`], but a unique violation becomes `Conflict(what())`.
    fn taken(self, what: impl FnOnce() -> String) -> Result<T, MetaError>;
}

impl<T> Sql<T> for rusqlite::Result<T> {
    fn meta(self) -> Result<T, MetaError> {
        self.map_err(classify)
    }

    fn taken(self, what: impl FnOnce() -> String) -> Result<T, MetaError> {
        self.map_err(|e| match classify(e) {
            MetaError::Conflict(_) => MetaError::Conflict(what()),
            other => other,
        })
    }
}

pub(super) fn classify(e: rusqlite::Error) -> MetaError {
    use rusqlite::Error as E;
    match &e {
        E::SqliteFailure(f, _)
            if f.code == ErrorCode::ConstraintViolation
                && matches!(
                    f.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
        {
            MetaError::Conflict(e.to_string())
        }
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::InvalidColumnType(..)
        | E::Utf8Error(..) => MetaError::Corrupt(e.to_string()),
        _ => MetaError::Unavailable(e.to_string()),
    }
}

pub(super) fn from_i64<T: TryFrom<i64>>(v: i64, what: &str) -> Result<T, MetaError> {
    T::try_from(v).map_err(|_| corrupt(format!("stored {what} {v} is out of range")))
}

pub(super) fn digest_of(bytes: Vec<u8>, what: &str) -> Result<Digest, MetaError> {
    Digest::try_from(bytes.as_slice()).map_err(|_| corrupt(format!("stored {what} digest has {} bytes", bytes.len())))
}

/// Row readers return the SQL error outside and the decoding error inside.
pub(super) type Decoded<T> = rusqlite::Result<Result<T, MetaError>>;

pub(super) fn collect<T>(rows: impl Iterator<Item = Decoded<T>>) -> Result<Vec<T>, MetaError> {
    rows.map(|r| r.meta()?).collect()
}

pub(super) const USER_COLUMNS: &str = "username, password_hash, role, created_at, id";

pub(super) fn user_row(row: &Row<'_>) -> Decoded<User> {
    let role: String = row.get(2)?;
    let (username, password_hash, created_at, id) = (row.get(0)?, row.get(1)?, row.get(3)?, row.get(4)?);
    Ok(Role::parse(&role)
        .map(|role| User { id, username, password_hash, role, created_at })
        .ok_or_else(|| corrupt(format!("unknown role `{role}`"))))
}

pub(super) const KEY_COLUMNS: &str = "id, name, owner, digest, scopes, created_at, expires_at, owner_id";

pub(super) fn key_row(row: &Row<'_>) -> Decoded<ApiKey> {
    let (id, name, owner): (String, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
    let (digest, scopes): (Vec<u8>, String) = (row.get(3)?, row.get(4)?);
    let (created_at, expires_at, owner_id) = (row.get(5)?, row.get(6)?, row.get(7)?);
    let digest = match digest_of(digest, "api key") {
        Ok(digest) => digest,
        Err(e) => return Ok(Err(e)),
    };
    Ok(serde_json::from_str(&scopes)
        .map(|scopes| ApiKey { id: id.clone(), name, owner, owner_id, digest, scopes, created_at, expires_at })
        .map_err(|e| corrupt(format!("scopes of api key `{id}`: {e}"))))
}

pub(super) fn audit_row(row: &Row<'_>) -> Decoded<AuditRecord> {
    let (id, at, actor, action, target) = (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
    let detail: String = row.get(5)?;
    Ok(serde_json::from_str(&detail)
        .map(|detail| AuditRecord { id, entry: AuditEntry { at, actor, action, target, detail } })
        .map_err(|e| corrupt(format!("detail of audit record {id}: {e}"))))
}
