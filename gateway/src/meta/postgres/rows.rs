//! Between SQL and the store's types: error classification, row decoding, and the one statement
//! assembled at run time ([`dead_letters_sql`]).

use std::collections::HashMap;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::meta::{ApiKey, AuditEntry, AuditRecord, DeadLetterPointer, DeadLetterQuery, Digest, MetaError, Role, User};

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

pub(super) fn to_i64(v: u64, what: &str) -> Result<i64, MetaError> {
    i64::try_from(v).map_err(|_| corrupt(format!("{what} {v} does not fit in a signed 64-bit integer")))
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

pub(super) const DEAD_LETTER_COLUMNS: &str = r#"id, station, grp, "offset", reason, attempts, last_error, dead_at"#;

pub(super) fn dead_letter_row(row: &Row) -> Result<DeadLetterPointer, MetaError> {
    Ok(DeadLetterPointer {
        id: from_i64(row.try_get(0).decoded()?, "dead-letter id")?,
        station: row.try_get(1).decoded()?,
        group: row.try_get(2).decoded()?,
        offset: from_i64(row.try_get(3).decoded()?, "dead-letter offset")?,
        reason: row.try_get(4).decoded()?,
        attempts: from_i64(row.try_get(5).decoded()?, "attempts")?,
        last_error: row.try_get(6).decoded()?,
        dead_at: row.try_get(7).decoded()?,
    })
}

pub(super) fn rows<T>(rows: &[Row], decode: fn(&Row) -> Result<T, MetaError>) -> Result<Vec<T>, MetaError> {
    rows.iter().map(decode).collect()
}

pub(super) type Param = Box<dyn ToSql + Sync + Send>;

/// The SQL [`MetadataStore::dead_letters`] runs for `query`, with `$n` placeholders: one of the
/// fixed filter combinations, each served by an index ending in (dead_at, id). Public so tests can
/// EXPLAIN exactly what the store runs.
///
/// Its parameters, in order, each present only when its filter is set: `station` (text), `group`
/// (text), `reason` (text), `since` (int8), `until` (int8), `after.0` and `after.1` (int8), then
/// the row limit (int8: the page size plus one, to learn whether another page follows).
pub fn dead_letters_sql(query: &DeadLetterQuery) -> String {
    dead_letters_statement(query, 0, 0).0
}

/// The statement and its parameters, the last of which is `fetch` (the row limit).
pub(super) fn dead_letters_statement(query: &DeadLetterQuery, after_id: i64, fetch: i64) -> (String, Vec<Param>) {
    let mut sql = format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE station = $1");
    let mut args: Vec<Param> = vec![Box::new(query.station.clone())];
    let mut push = |sql: &mut String, clause: &str, arg: Param| {
        args.push(arg);
        sql.push_str(&clause.replace("$?", &format!("${}", args.len())));
    };
    if let Some(group) = &query.group {
        push(&mut sql, " AND grp = $?", Box::new(group.clone()));
    }
    if let Some(reason) = &query.reason {
        push(&mut sql, " AND reason = $?", Box::new(reason.clone()));
    }
    if let Some(since) = query.since {
        push(&mut sql, " AND dead_at >= $?", Box::new(since));
    }
    if let Some(until) = query.until {
        push(&mut sql, " AND dead_at < $?", Box::new(until));
    }
    if let Some((dead_at, _)) = query.after {
        push(&mut sql, " AND (dead_at, id) > ($?", Box::new(dead_at));
        push(&mut sql, ", $?)", Box::new(after_id));
    }
    push(&mut sql, " ORDER BY dead_at, id LIMIT $?", Box::new(fetch));
    (sql, args)
}

/// The last of each (station, group, offset), in order: one `INSERT ... ON CONFLICT DO UPDATE`
/// cannot touch a row twice, and a later duplicate in a batch replaces an earlier one.
pub(super) fn last_of_each(pointers: &[DeadLetterPointer]) -> Vec<&DeadLetterPointer> {
    let mut last: HashMap<(&str, &str, u64), usize> = HashMap::with_capacity(pointers.len());
    for (i, p) in pointers.iter().enumerate() {
        last.insert((p.station.as_str(), p.group.as_str(), p.offset), i);
    }
    pointers
        .iter()
        .enumerate()
        .filter(|(i, p)| last.get(&(p.station.as_str(), p.group.as_str(), p.offset)) == Some(i))
        .map(|(_, p)| p)
        .collect()
}
