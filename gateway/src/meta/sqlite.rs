//! [`MetadataStore`] on one SQLite file in the data dir: the single-node default.
//!
//! Durability: WAL with `synchronous=FULL`, so a returned write survives power loss. The file is
//! created owner-only (0600 on Unix) since it holds password hashes and secret digests.
//!
//! Schema: [`MIGRATIONS`] are forward-only and numbered by position; `PRAGMA user_version` is how
//! many have been applied. [`SqliteStore::open`] applies the missing ones in one `BEGIN IMMEDIATE`
//! transaction (so two processes opening one file cannot both migrate) and refuses a file whose
//! version is newer than this binary. Never edit a shipped migration: append a new one.
//!
//! Concurrency: one connection behind a mutex; every call runs on tokio's blocking pool, so async
//! callers never stall the runtime. The mutex serialises calls within the process and
//! `BEGIN IMMEDIATE` takes SQLite's write lock up front, which is what makes refresh-token rotation
//! atomic (no read-then-upgrade race) across processes too.
//!
//! Integers: SQLite stores i64. The `u64` ids and offsets of the broker fit; one that does not is
//! refused with [`MetaError::Corrupt`] rather than wrapped. All values reach SQL as bound
//! parameters; the only SQL assembled at run time is the choice among fixed filter clauses.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior};

use super::{
    ApiKey, AuditEntry, AuditRecord, DeadLetterPointer, DeadLetterQuery, Digest, MetaError, MetadataStore, Millis,
    Page, RefreshOutcome, RefreshToken, Role, User,
};

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

/// Page sizes of [`MetadataStore::dead_letters`] and [`MetadataStore::audit_log`] are clamped here.
const MAX_LIMIT: u32 = 1000;

/// How long a call waits for another process's write lock before failing as unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite backend. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating it and its parent dir if needed) and migrates the file at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, MetaError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| MetaError::Unavailable(format!("creating {}: {e}", parent.display())))?;
        }
        create_private(path)?;
        let conn = Connection::open(path).meta()?;
        SqliteStore::init(conn)
    }

    /// A private, migrated in-memory database: for tests.
    pub fn open_in_memory() -> Result<SqliteStore, MetaError> {
        SqliteStore::init(Connection::open_in_memory().meta()?)
    }

    fn init(mut conn: Connection) -> Result<SqliteStore, MetaError> {
        conn.busy_timeout(BUSY_TIMEOUT).meta()?;
        let _mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).meta()?;
        conn.pragma_update(None, "synchronous", "FULL").meta()?;
        conn.pragma_update(None, "foreign_keys", "ON").meta()?;
        migrate(&mut conn)?;
        Ok(SqliteStore { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` on the connection on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, MetaError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic cannot leave a half-done transaction behind: dropping one rolls it back.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(|e| MetaError::Unavailable(format!("metadata task failed: {e}")))?
    }
}

#[cfg(unix)]
fn create_private(path: &Path) -> Result<(), MetaError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(MetaError::Unavailable(format!("creating {}: {e}", path.display()))),
    }
}

#[cfg(not(unix))]
fn create_private(_: &Path) -> Result<(), MetaError> {
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), MetaError> {
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

fn corrupt(msg: String) -> MetaError {
    MetaError::Corrupt(msg)
}

/// Converts rusqlite results into the store's error kinds.
trait Sql<T> {
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

fn classify(e: rusqlite::Error) -> MetaError {
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

fn to_i64(v: u64, what: &str) -> Result<i64, MetaError> {
    i64::try_from(v).map_err(|_| corrupt(format!("{what} {v} does not fit in a signed 64-bit integer")))
}

fn from_i64<T: TryFrom<i64>>(v: i64, what: &str) -> Result<T, MetaError> {
    T::try_from(v).map_err(|_| corrupt(format!("stored {what} {v} is out of range")))
}

fn digest_of(bytes: Vec<u8>, what: &str) -> Result<Digest, MetaError> {
    Digest::try_from(bytes.as_slice()).map_err(|_| corrupt(format!("stored {what} digest has {} bytes", bytes.len())))
}

/// Row readers return the SQL error outside and the decoding error inside.
type Decoded<T> = rusqlite::Result<Result<T, MetaError>>;

fn collect<T>(rows: impl Iterator<Item = Decoded<T>>) -> Result<Vec<T>, MetaError> {
    rows.map(|r| r.meta()?).collect()
}

const USER_COLUMNS: &str = "username, password_hash, role, created_at, id";

fn user_row(row: &Row<'_>) -> Decoded<User> {
    let role: String = row.get(2)?;
    let (username, password_hash, created_at, id) = (row.get(0)?, row.get(1)?, row.get(3)?, row.get(4)?);
    Ok(Role::parse(&role)
        .map(|role| User { id, username, password_hash, role, created_at })
        .ok_or_else(|| corrupt(format!("unknown role `{role}`"))))
}

const KEY_COLUMNS: &str = "id, name, owner, digest, scopes, created_at, expires_at, owner_id";

fn key_row(row: &Row<'_>) -> Decoded<ApiKey> {
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

fn audit_row(row: &Row<'_>) -> Decoded<AuditRecord> {
    let (id, at, actor, action, target) = (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
    let detail: String = row.get(5)?;
    Ok(serde_json::from_str(&detail)
        .map(|detail| AuditRecord { id, entry: AuditEntry { at, actor, action, target, detail } })
        .map_err(|e| corrupt(format!("detail of audit record {id}: {e}"))))
}

const DEAD_LETTER_COLUMNS: &str = r#"id, station, grp, "offset", reason, attempts, last_error, dead_at"#;

fn dead_letter_row(row: &Row<'_>) -> Decoded<DeadLetterPointer> {
    let (id, offset, attempts): (i64, i64, i64) = (row.get(0)?, row.get(3)?, row.get(5)?);
    let (station, group, reason, last_error, dead_at) =
        (row.get(1)?, row.get(2)?, row.get(4)?, row.get(6)?, row.get(7)?);
    let ints = (from_i64(id, "dead-letter id"), from_i64(offset, "dead-letter offset"), from_i64(attempts, "attempts"));
    Ok(match ints {
        (Ok(id), Ok(offset), Ok(attempts)) => {
            Ok(DeadLetterPointer { id, station, group, offset, reason, attempts, last_error, dead_at })
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
    })
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn ping(&self) -> Result<(), MetaError> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())).meta()).await
    }

    async fn create_user(&self, user: &User) -> Result<(), MetaError> {
        let u = user.clone();
        self.with(move |c| {
            c.prepare_cached(&format!("INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"))
                .meta()?
                .execute(params![u.username, u.password_hash, u.role.as_str(), u.created_at, u.id])
                .taken(|| format!("user `{}` (or one with its id)", u.username))
                .map(drop)
        })
        .await
    }

    async fn user(&self, username: &str) -> Result<Option<User>, MetaError> {
        let name = username.to_owned();
        self.with(move |c| {
            c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"))
                .meta()?
                .query_row([name], user_row)
                .optional()
                .meta()?
                .transpose()
        })
        .await
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>, MetaError> {
        let id = id.to_owned();
        self.with(move |c| {
            c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))
                .meta()?
                .query_row([id], user_row)
                .optional()
                .meta()?
                .transpose()
        })
        .await
    }

    async fn users(&self) -> Result<Vec<User>, MetaError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY username")).meta()?;
            let rows = stmt.query_map([], user_row).meta()?;
            collect(rows)
        })
        .await
    }

    async fn user_count(&self) -> Result<u64, MetaError> {
        self.with(|c| {
            let n: i64 = c.query_row("SELECT count(*) FROM users", [], |r| r.get(0)).meta()?;
            from_i64(n, "user count")
        })
        .await
    }

    async fn delete_user(&self, username: &str) -> Result<bool, MetaError> {
        let name = username.to_owned();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).meta()?;
            tx.execute("DELETE FROM api_keys WHERE owner = ?1", [&name]).meta()?;
            tx.execute("DELETE FROM refresh_tokens WHERE username = ?1", [&name]).meta()?;
            let n = tx.execute("DELETE FROM users WHERE username = ?1", [&name]).meta()?;
            tx.commit().meta()?;
            Ok(n > 0)
        })
        .await
    }

    async fn create_api_key(&self, key: &ApiKey) -> Result<(), MetaError> {
        let k = key.clone();
        let scopes = serde_json::to_string(&k.scopes).map_err(|e| corrupt(format!("encoding scopes: {e}")))?;
        self.with(move |c| {
            c.prepare_cached(&format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"))
                .meta()?
                .execute(params![k.id, k.name, k.owner, &k.digest[..], scopes, k.created_at, k.expires_at, k.owner_id])
                .taken(|| format!("api key `{}` (or one with its digest)", k.id))
                .map(drop)
        })
        .await
    }

    async fn api_key_by_digest(&self, digest: &Digest) -> Result<Option<ApiKey>, MetaError> {
        let d = *digest;
        self.with(move |c| {
            c.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE digest = ?1"))
                .meta()?
                .query_row([&d[..]], key_row)
                .optional()
                .meta()?
                .transpose()
        })
        .await
    }

    async fn api_keys(&self, owner: Option<&str>) -> Result<Vec<ApiKey>, MetaError> {
        let owner = owner.map(str::to_owned);
        self.with(move |c| match owner {
            Some(owner) => {
                let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE owner = ?1 ORDER BY created_at, id");
                let mut stmt = c.prepare_cached(&sql).meta()?;
                let rows = stmt.query_map([owner], key_row).meta()?;
                collect(rows)
            }
            None => {
                let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id");
                let mut stmt = c.prepare_cached(&sql).meta()?;
                let rows = stmt.query_map([], key_row).meta()?;
                collect(rows)
            }
        })
        .await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, MetaError> {
        let id = id.to_owned();
        self.with(move |c| {
            c.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"))
                .meta()?
                .query_row([id], key_row)
                .optional()
                .meta()?
                .transpose()
        })
        .await
    }

    async fn delete_api_key(&self, id: &str) -> Result<bool, MetaError> {
        let id = id.to_owned();
        self.with(move |c| Ok(c.execute("DELETE FROM api_keys WHERE id = ?1", [id]).meta()? > 0)).await
    }

    async fn insert_refresh_token(&self, token: &RefreshToken) -> Result<(), MetaError> {
        let t = token.clone();
        self.with(move |c| insert_token(c, &t, &t.family, &t.username)).await
    }

    /// The replacement joins the presented token's family and user: the caller only holds an
    /// opaque secret, so whatever `replacement.family` and `replacement.username` say is ignored.
    async fn rotate_refresh_token(
        &self,
        presented: &Digest,
        now: Millis,
        replacement: &RefreshToken,
    ) -> Result<RefreshOutcome, MetaError> {
        let (d, next) = (*presented, replacement.clone());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).meta()?;
            let found: Option<(String, String, Millis, bool, bool)> = tx
                .prepare_cached(
                    "SELECT family, username, expires_at, spent, revoked FROM refresh_tokens WHERE digest = ?1",
                )
                .meta()?
                .query_row([&d[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                .optional()
                .meta()?;
            let outcome = match found {
                None | Some((_, _, _, _, true)) => RefreshOutcome::Invalid,
                Some((family, _, _, true, false)) => {
                    tx.execute("UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1", [family]).meta()?;
                    RefreshOutcome::Reused
                }
                Some((_, _, expires_at, false, false)) if expires_at <= now => RefreshOutcome::Invalid,
                Some((family, username, _, false, false)) => {
                    tx.execute("UPDATE refresh_tokens SET spent = 1 WHERE digest = ?1", [&d[..]]).meta()?;
                    insert_token(&tx, &next, &family, &username)?;
                    RefreshOutcome::Rotated { username, family }
                }
            };
            tx.commit().meta()?;
            Ok(outcome)
        })
        .await
    }

    async fn revoke_refresh_family(&self, presented: &Digest) -> Result<bool, MetaError> {
        let d = *presented;
        self.with(move |c| {
            let n = c
                .execute(
                    "UPDATE refresh_tokens SET revoked = 1 \
                     WHERE family = (SELECT family FROM refresh_tokens WHERE digest = ?1)",
                    [&d[..]],
                )
                .meta()?;
            Ok(n > 0)
        })
        .await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), MetaError> {
        let e = entry.clone();
        let detail = serde_json::to_string(&e.detail).map_err(|err| corrupt(format!("encoding detail: {err}")))?;
        self.with(move |c| {
            c.prepare_cached("INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)")
                .meta()?
                .execute(params![e.at, e.actor, e.action, e.target, detail])
                .meta()
                .map(drop)
        })
        .await
    }

    /// `limit` is clamped to 1..=1000.
    async fn audit_log(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditRecord>, MetaError> {
        let limit = limit.clamp(1, MAX_LIMIT);
        self.with(move |c| {
            const COLUMNS: &str = "SELECT id, at, actor, action, target, detail FROM audit_log";
            let (sql, args) = match before {
                Some(before) => {
                    (format!("{COLUMNS} WHERE id < ?1 ORDER BY id DESC LIMIT ?2"), vec![before, limit.into()])
                }
                None => (format!("{COLUMNS} ORDER BY id DESC LIMIT ?1"), vec![limit.into()]),
            };
            let mut stmt = c.prepare_cached(&sql).meta()?;
            let rows = stmt.query_map(params_from_iter(args), audit_row).meta()?;
            collect(rows)
        })
        .await
    }

    async fn upsert_dead_letters(&self, pointers: &[DeadLetterPointer]) -> Result<(), MetaError> {
        let rows = pointers
            .iter()
            .map(|p| Ok((to_i64(p.id, "dead-letter id")?, to_i64(p.offset, "dead-letter offset")?, p.clone())))
            .collect::<Result<Vec<_>, MetaError>>()?;
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).meta()?;
            {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "INSERT INTO dead_letters ({DEAD_LETTER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                         ON CONFLICT (station, grp, \"offset\") DO UPDATE SET id = excluded.id, \
                         reason = excluded.reason, attempts = excluded.attempts, \
                         last_error = excluded.last_error, dead_at = excluded.dead_at"
                    ))
                    .meta()?;
                for (id, offset, p) in &rows {
                    stmt.execute(params![
                        id,
                        p.station,
                        p.group,
                        offset,
                        p.reason,
                        p.attempts,
                        p.last_error,
                        p.dead_at
                    ])
                    .meta()?;
                }
            }
            tx.commit().meta()
        })
        .await
    }

    /// `limit` is clamped to 1..=1000.
    async fn dead_letters(&self, query: &DeadLetterQuery) -> Result<Page<DeadLetterPointer>, MetaError> {
        let limit = query.limit.clamp(1, MAX_LIMIT);
        let mut sql = format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE station = ?");
        let mut args = vec![Value::Text(query.station.clone())];
        if let Some(group) = &query.group {
            sql.push_str(" AND grp = ?");
            args.push(Value::Text(group.clone()));
        }
        if let Some(reason) = &query.reason {
            sql.push_str(" AND reason = ?");
            args.push(Value::Text(reason.clone()));
        }
        if let Some(since) = query.since {
            sql.push_str(" AND dead_at >= ?");
            args.push(Value::Integer(since));
        }
        if let Some(until) = query.until {
            sql.push_str(" AND dead_at < ?");
            args.push(Value::Integer(until));
        }
        if let Some((dead_at, id)) = query.after {
            sql.push_str(" AND (dead_at, id) > (?, ?)");
            args.extend([Value::Integer(dead_at), Value::Integer(to_i64(id, "dead-letter id")?)]);
        }
        sql.push_str(" ORDER BY dead_at, id LIMIT ?");
        args.push(Value::Integer(i64::from(limit) + 1));
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&sql).meta()?;
            let rows = stmt.query_map(params_from_iter(args), dead_letter_row).meta()?;
            let mut items = collect(rows)?;
            let more = items.len() > limit as usize;
            items.truncate(limit as usize);
            let next = if more { items.last().map(|p| (p.dead_at, p.id)) } else { None };
            Ok(Page { items, next })
        })
        .await
    }

    async fn delete_dead_letter(&self, station: &str, id: u64) -> Result<bool, MetaError> {
        let (station, id) = (station.to_owned(), to_i64(id, "dead-letter id")?);
        self.with(move |c| {
            Ok(c.execute("DELETE FROM dead_letters WHERE station = ?1 AND id = ?2", params![station, id]).meta()? > 0)
        })
        .await
    }

    async fn delete_station_dead_letters(&self, station: &str) -> Result<u64, MetaError> {
        let station = station.to_owned();
        self.with(move |c| {
            let n = c.execute("DELETE FROM dead_letters WHERE station = ?1", [station]).meta()?;
            Ok(n as u64)
        })
        .await
    }
}

fn insert_token(c: &Connection, t: &RefreshToken, family: &str, username: &str) -> Result<(), MetaError> {
    c.prepare_cached(
        "INSERT INTO refresh_tokens (digest, family, username, issued_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .meta()?
    .execute(params![&t.digest[..], family, username, t.issued_at, t.expires_at])
    .taken(|| "a refresh token with this digest".to_owned())
    .map(drop)
}
