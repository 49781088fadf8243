//! The schema: [`MIGRATIONS`], counted by `PRAGMA user_version`.

use rusqlite::{Connection, TransactionBehavior};

use super::rows::{corrupt, Sql};
use crate::meta::MetaError;

/// Forward-only schema migrations; the schema version is how many of them have been applied.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    username      TEXT    NOT NULL PRIMARY KEY,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE api_keys (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    owner      TEXT    NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    digest     BLOB    NOT NULL UNIQUE,
    scopes     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
) STRICT;
CREATE INDEX api_keys_by_created ON api_keys (created_at, id);
CREATE INDEX api_keys_by_owner ON api_keys (owner, created_at, id);

CREATE TABLE refresh_tokens (
    digest     BLOB    NOT NULL PRIMARY KEY,
    family     TEXT    NOT NULL,
    username   TEXT    NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    spent      INTEGER NOT NULL DEFAULT 0,
    revoked    INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_by_username ON refresh_tokens (username);

CREATE TABLE audit_log (
    id     INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT    NOT NULL,
    detail TEXT    NOT NULL
) STRICT;

CREATE TABLE dead_letters (
    station    TEXT    NOT NULL,
    grp        TEXT    NOT NULL,
    "offset"   INTEGER NOT NULL,
    id         INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    last_error TEXT,
    dead_at    INTEGER NOT NULL,
    PRIMARY KEY (station, grp, "offset")
) STRICT, WITHOUT ROWID;
CREATE INDEX dead_letters_by_time ON dead_letters (station, dead_at, id);
CREATE INDEX dead_letters_by_group ON dead_letters (station, grp, dead_at, id);
CREATE INDEX dead_letters_by_reason ON dead_letters (station, reason, dead_at, id);
CREATE INDEX dead_letters_by_id ON dead_letters (station, id);
"#,
    r#"
-- Immutable user ids, never reused: access tokens name them and API keys record their owner's,
-- so nothing issued to a deleted user works for a later user of the same name.
ALTER TABLE users ADD COLUMN id TEXT NOT NULL DEFAULT '';
UPDATE users SET id = 'usr_' || lower(hex(randomblob(12)));
CREATE UNIQUE INDEX users_by_id ON users (id);
ALTER TABLE api_keys ADD COLUMN owner_id TEXT NOT NULL DEFAULT '';
UPDATE api_keys SET owner_id = (SELECT id FROM users WHERE users.username = api_keys.owner);
"#,
];

/// The `user_version` of a fully migrated file.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

pub(super) fn migrate(conn: &mut Connection) -> Result<(), MetaError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).meta()?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).meta()?;
    let applied = usize::try_from(version).map_err(|_| corrupt(format!("negative schema version {version}")))?;
    if applied > MIGRATIONS.len() {
        return Err(corrupt(format!(
            "schema version {applied} is newer than this binary's {}; upgrade Depot",
            MIGRATIONS.len()
        )));
    }
    for (done, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql).meta()?;
        tx.pragma_update(None, "user_version", (done + 1) as i64).meta()?;
    }
    tx.commit().meta()
}
