//! [`MetadataStore`] on Postgres: what a cluster uses, one database shared by every node.
//!
//! Connections: a deadpool-postgres pool over tokio-postgres, created lazily ([`PostgresStore::connect`]
//! touches no network, so a node starts while Postgres is down). **No TLS yet**: connections use
//! `NoTls`, so the metadata URL must point at a trusted network path (loopback, a private link or a
//! sidecar proxy) until TLS support lands.
//!
//! Bounded waits: every call gives up with [`MetaError::Unavailable`] instead of hanging. Getting a
//! connection is bounded by the pool's `wait_timeout` (a free slot), `create_timeout` (connecting,
//! also the TCP connect timeout) and `recycle_timeout`; running the call's statements is bounded by
//! `query_timeout`. A call that runs out of time cancels its query on the server and discards the
//! connection rather than returning it to the pool.
//!
//! Schema: [`MIGRATIONS`] are the numbered, forward-only files of `migrations/` at the workspace
//! root, embedded in the binary. [`PostgresStore::migrate`] applies the missing ones in order, each
//! in its own transaction, recorded in `depot_schema_migrations (version, applied_at)`, while holding
//! a session advisory lock ([`MIGRATION_LOCK`]) on a dedicated connection: concurrent migrators
//! serialize, and the later ones find nothing to do. A database whose version is newer than this
//! binary is refused as [`MetaError::Corrupt`]. Never edit a shipped migration: add the next number.
//!
//! Semantics mirror [`super::sqlite::SqliteStore`] (the conformance suite checks both): text keys
//! use the "C" collation so orderings are bytewise as in SQLite; `u64` ids and offsets are stored as
//! BIGINT and one above `i64::MAX` is refused as `Corrupt`, never wrapped; unique violations (SQLSTATE
//! 23505) are [`MetaError::Conflict`], undecodable rows `Corrupt`, anything else (connection, pool,
//! timeouts, other database errors) `Unavailable`. All values reach SQL as bound parameters; the only
//! SQL assembled at run time is the choice among fixed filter clauses in [`dead_letters_sql`].
//!
//! Text: Postgres cannot store U+0000. A string holding one is refused ([`MetaError::Unavailable`],
//! as the trait has no "invalid input" kind) and nothing is stored, except in a dead-letter
//! pointer's free-form `last_error`, where it is replaced by U+FFFD so the outbox never stalls.
//!
//! Refresh-token rotation runs in one READ COMMITTED transaction that locks the presented row with
//! `SELECT ... FOR UPDATE`: concurrent presentations of one token queue on that lock, the first
//! rotates it and the next ones see it spent.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::{
    ApiKey, AuditEntry, AuditRecord, DeadLetterPointer, DeadLetterQuery, Digest, Invalidation, MetaError,
    MetadataStore, Millis, Page, RefreshOutcome, RefreshToken, Role, User,
};

/// Forward-only migrations as (version, SQL), in order; versions are 1, 2, 3...
pub const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../../migrations/0001_init.sql")),
    (2, include_str!("../../../migrations/0002_user_ids.sql")),
];

/// The version of a fully migrated database.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory-lock key every migrator takes (`depot` + `meta` in ASCII).
pub const MIGRATION_LOCK: i64 = 0x6465_706f_746d_6574;

/// Page sizes of [`MetadataStore::dead_letters`] and [`MetadataStore::audit_log`] are clamped here.
const MAX_LIMIT: u32 = 1000;

/// Pool size and timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    /// Most connections open at once.
    pub max_size: usize,
    /// Longest wait for a free connection when all `max_size` are busy.
    pub wait_timeout: Duration,
    /// Longest wait to open a new connection (also the TCP connect timeout).
    pub create_timeout: Duration,
    /// Longest wait to check a pooled connection before reuse.
    pub recycle_timeout: Duration,
    /// Longest a call may run its statements once it holds a connection.
    pub query_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> PoolOptions {
        PoolOptions {
            max_size: 16,
            wait_timeout: Duration::from_secs(5),
            create_timeout: Duration::from_secs(5),
            recycle_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
        }
    }
}

/// Revokes every token of `family`. The rows are locked first, in one order: that waits for a
/// rotation in flight in the family to commit, so the UPDATE (a new statement, hence a new
/// snapshot under READ COMMITTED) also catches the token that rotation inserted.
async fn revoke_family(tx: &tokio_postgres::Transaction<'_>, family: &str) -> Result<(), MetaError> {
    tx.execute("SELECT 1 FROM refresh_tokens WHERE family = $1 ORDER BY digest FOR UPDATE", &[&family]).await.meta()?;
    tx.execute("UPDATE refresh_tokens SET revoked = TRUE WHERE family = $1", &[&family]).await.meta()?;
    Ok(())
}

/// The channel on which deletions of users and API keys are announced to every node.
pub const NOTIFY_CHANNEL: &str = "depot_auth";

/// Listens on [`NOTIFY_CHANNEL`] on a connection of its own (a pooled one would be recycled) and
/// forwards what it hears until `tx`'s receiver is gone. Each time LISTEN takes effect (the first
/// time, and after every reconnection) it sends [`Invalidation::All`]: whatever was cached before
/// may have been deleted while nobody listened.
async fn listen(mut config: tokio_postgres::Config, tx: mpsc::Sender<Invalidation>) {
    // A half-open connection (after a partition) would look alive for hours without keepalives;
    // with them it is noticed within about a minute, and the reconnect drops every cache.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(10))
        .keepalives_retries(3);
    while !tx.is_closed() {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (heard_tx, mut heard) = mpsc::unbounded_channel::<String>();
                let driver = tokio::spawn(async move {
                    while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                        match message {
                            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                                if heard_tx.send(n.payload().to_owned()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => return,
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}")).await {
                    Ok(()) => {
                        if tx.send(Invalidation::All).await.is_err() {
                            driver.abort();
                            return;
                        }
                        loop {
                            let payload = tokio::select! {
                                heard = heard.recv() => match heard {
                                    Some(payload) => payload,
                                    None => break,
                                },
                                () = tx.closed() => {
                                    driver.abort();
                                    return;
                                }
                            };
                            let what = match payload.split_once(':') {
                                Some(("user", name)) => Invalidation::User(name.to_owned()),
                                Some(("key", id)) => Invalidation::ApiKey(id.to_owned()),
                                _ => Invalidation::All,
                            };
                            if tx.send(what).await.is_err() {
                                driver.abort();
                                return;
                            }
                        }
                        tracing::warn!("metadata store: lost the notification connection; reconnecting");
                    }
                    Err(e) => tracing::warn!(error = %e, "metadata store: LISTEN failed; retrying"),
                }
                driver.abort();
            }
            Err(e) => tracing::debug!(error = %e, "metadata store: cannot connect to listen; retrying"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// The Postgres backend. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    config: tokio_postgres::Config,
    options: PoolOptions,
}

impl std::fmt::Debug for PostgresStore {
    // The config holds the password: print neither.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("options", &self.options).finish_non_exhaustive()
    }
}

/// Runs `$body` with `$c`, a pooled connection, within the query timeout. `$body` is the body of an
/// async block returning `Result<T, MetaError>`.
macro_rules! with_conn {
    ($store:expr, |$c:ident| $body:block) => {{
        let store: &PostgresStore = $store;
        #[allow(unused_mut)]
        let mut $c = store.conn().await?;
        let out = tokio::time::timeout(store.options.query_timeout, async { $body }).await;
        store.settle($c, out)
    }};
}

impl PostgresStore {
    /// A store on the database at `url` (`postgres://user:password@host:port/dbname?...`). Opens no
    /// connection: the first call does, and [`PostgresStore::migrate`] must have run before the
    /// others succeed.
    pub fn connect(url: &str, options: PoolOptions) -> Result<PostgresStore, MetaError> {
        // Never echo the URL: it may hold a password.
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| MetaError::Unavailable(format!("invalid postgres metadata url: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.create_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("depot");
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            // `Fast` only checks that the connection is open; a dead one that looks open is caught
            // by the query timeout, which discards it.
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_size.max(1))
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.create_timeout))
            .recycle_timeout(Some(options.recycle_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| MetaError::Unavailable(format!("building the postgres pool: {e}")))?;
        Ok(PostgresStore { pool, config, options })
    }

    /// Applies the missing [`MIGRATIONS`] in order and returns the versions it applied (none when
    /// the schema was current). Holds [`MIGRATION_LOCK`] throughout, so a concurrent `migrate`, on
    /// this node or another, waits for this one and then finds nothing to do. Waiting for that lock
    /// is not bounded by the pool's timeouts; connecting is.
    pub async fn migrate(&self) -> Result<Vec<i32>, MetaError> {
        let connecting = self.config.connect(NoTls);
        let (mut client, connection) = tokio::time::timeout(self.options.create_timeout, connecting)
            .await
            .map_err(|_| MetaError::Unavailable("timed out connecting to postgres to migrate".to_owned()))?
            .meta()?;
        // A dedicated session: when it ends, even by cancellation, the server releases the lock.
        let driver = tokio::spawn(connection);
        let result = migrate_on(&mut client).await;
        drop(client);
        let _ = driver.await;
        result
    }

    /// The highest applied migration; 0 on a database never migrated.
    pub async fn schema_version(&self) -> Result<i32, MetaError> {
        with_conn!(self, |c| {
            let row = c.query_one("SELECT to_regclass('depot_schema_migrations') IS NOT NULL", &[]).await.meta()?;
            if !row.try_get::<_, bool>(0).decoded()? {
                return Ok(0);
            }
            let row = c.query_one("SELECT coalesce(max(version), 0) FROM depot_schema_migrations", &[]).await.meta()?;
            row.try_get(0).decoded()
        })
    }

    async fn conn(&self) -> Result<Object, MetaError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => MetaError::Unavailable(format!("connecting to postgres: {}", describe(&e))),
            other => MetaError::Unavailable(format!("postgres pool: {other}")),
        })
    }

    /// Hands the connection back, or, when the call ran out of time, cancels what it was running
    /// and discards it: its state is unknown and the server may be stuck.
    fn settle<T>(
        &self,
        c: Object,
        out: Result<Result<T, MetaError>, tokio::time::error::Elapsed>,
    ) -> Result<T, MetaError> {
        match out {
            Ok(result) => result,
            Err(_) => {
                let client = Object::take(c);
                let cancel = client.cancel_token();
                let limit = self.options.create_timeout;
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(limit, cancel.cancel_query(NoTls)).await;
                });
                drop(client);
                Err(MetaError::Unavailable(format!("postgres did not answer within {:?}", self.options.query_timeout)))
            }
        }
    }
}

async fn migrate_on(client: &mut tokio_postgres::Client) -> Result<Vec<i32>, MetaError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.meta()?;
    let result = apply_missing(client).await;
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await.meta();
    let applied = result?;
    unlocked?;
    Ok(applied)
}

async fn apply_missing(client: &mut tokio_postgres::Client) -> Result<Vec<i32>, MetaError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS depot_schema_migrations (
                 version    INTEGER     NOT NULL PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await
        .meta()?;
    let row = client.query_one("SELECT coalesce(max(version), 0) FROM depot_schema_migrations", &[]).await.meta()?;
    let current: i32 = row.try_get(0).decoded()?;
    if current > SCHEMA_VERSION {
        return Err(MetaError::Corrupt(format!(
            "schema version {current} is newer than this binary's {SCHEMA_VERSION}; upgrade Depot"
        )));
    }
    let mut applied = Vec::new();
    for &(version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = client.transaction().await.meta()?;
        tx.batch_execute(sql).await.meta()?;
        tx.execute("INSERT INTO depot_schema_migrations (version) VALUES ($1)", &[&version]).await.meta()?;
        tx.commit().await.meta()?;
        applied.push(version);
    }
    Ok(applied)
}

/// A tokio-postgres error in words: the server's code and message when it has them.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

fn classify(e: tokio_postgres::Error) -> MetaError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        MetaError::Conflict(describe(&e))
    } else {
        MetaError::Unavailable(describe(&e))
    }
}

/// Converts tokio-postgres results into the store's error kinds.
trait Pg<T> {
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

fn corrupt(msg: String) -> MetaError {
    MetaError::Corrupt(msg)
}

fn to_i64(v: u64, what: &str) -> Result<i64, MetaError> {
    i64::try_from(v).map_err(|_| corrupt(format!("{what} {v} does not fit in a signed 64-bit integer")))
}

fn from_i64<T: TryFrom<i64>>(v: i64, what: &str) -> Result<T, MetaError> {
    T::try_from(v).map_err(|_| corrupt(format!("stored {what} {v} is out of range")))
}

fn digest_of(bytes: &[u8], what: &str) -> Result<Digest, MetaError> {
    Digest::try_from(bytes).map_err(|_| corrupt(format!("stored {what} digest has {} bytes", bytes.len())))
}

const USER_COLUMNS: &str = "username, password_hash, role, created_at, id";

fn user_row(row: &Row) -> Result<User, MetaError> {
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

const KEY_COLUMNS: &str = "id, name, owner, digest, scopes, created_at, expires_at, owner_id";

fn key_row(row: &Row) -> Result<ApiKey, MetaError> {
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

fn audit_row(row: &Row) -> Result<AuditRecord, MetaError> {
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

const DEAD_LETTER_COLUMNS: &str = r#"id, station, grp, "offset", reason, attempts, last_error, dead_at"#;

fn dead_letter_row(row: &Row) -> Result<DeadLetterPointer, MetaError> {
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

fn rows<T>(rows: &[Row], decode: fn(&Row) -> Result<T, MetaError>) -> Result<Vec<T>, MetaError> {
    rows.iter().map(decode).collect()
}

type Param = Box<dyn ToSql + Sync + Send>;

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
fn dead_letters_statement(query: &DeadLetterQuery, after_id: i64, fetch: i64) -> (String, Vec<Param>) {
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
fn last_of_each(pointers: &[DeadLetterPointer]) -> Vec<&DeadLetterPointer> {
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

const INSERT_TOKEN: &str =
    "INSERT INTO refresh_tokens (digest, family, username, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)";

#[async_trait]
impl MetadataStore for PostgresStore {
    async fn invalidations(&self) -> Result<Option<mpsc::Receiver<Invalidation>>, MetaError> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(listen(self.config.clone(), tx));
        Ok(Some(rx))
    }

    async fn ping(&self) -> Result<(), MetaError> {
        with_conn!(self, |c| { c.simple_query("SELECT 1").await.meta().map(drop) })
    }

    async fn create_user(&self, user: &User) -> Result<(), MetaError> {
        with_conn!(self, |c| {
            // Announced like a deletion: another node may have cached "no such user".
            let stmt = c
                .prepare_cached(&format!(
                    "WITH created AS (INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5) RETURNING username) \
                     SELECT pg_notify($6, 'user:' || username) FROM created"
                ))
                .await
                .meta()?;
            let role = user.role.as_str();
            c.query(&stmt, &[&user.username, &user.password_hash, &role, &user.created_at, &user.id, &NOTIFY_CHANNEL])
                .await
                .taken(|| format!("user `{}` (or one with its id)", user.username))
                .map(drop)
        })
    }

    async fn user(&self, username: &str) -> Result<Option<User>, MetaError> {
        with_conn!(self, |c| {
            let stmt =
                c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1")).await.meta()?;
            c.query_opt(&stmt, &[&username]).await.meta()?.as_ref().map(user_row).transpose()
        })
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>, MetaError> {
        with_conn!(self, |c| {
            let stmt = c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1")).await.meta()?;
            c.query_opt(&stmt, &[&id]).await.meta()?.as_ref().map(user_row).transpose()
        })
    }

    async fn users(&self) -> Result<Vec<User>, MetaError> {
        with_conn!(self, |c| {
            let stmt = c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY username")).await.meta()?;
            rows(&c.query(&stmt, &[]).await.meta()?, user_row)
        })
    }

    async fn user_count(&self) -> Result<u64, MetaError> {
        with_conn!(self, |c| {
            let stmt = c.prepare_cached("SELECT count(*) FROM users").await.meta()?;
            let n: i64 = c.query_one(&stmt, &[]).await.meta()?.try_get(0).decoded()?;
            from_i64(n, "user count")
        })
    }

    async fn delete_user(&self, username: &str) -> Result<bool, MetaError> {
        with_conn!(self, |c| {
            let tx = c.transaction().await.meta()?;
            tx.execute("DELETE FROM api_keys WHERE owner = $1", &[&username]).await.meta()?;
            tx.execute("DELETE FROM refresh_tokens WHERE username = $1", &[&username]).await.meta()?;
            let n = tx.execute("DELETE FROM users WHERE username = $1", &[&username]).await.meta()?;
            if n > 0 {
                // Delivered to every listener when the transaction commits, never before.
                let payload = format!("user:{username}");
                tx.execute("SELECT pg_notify($1, $2)", &[&NOTIFY_CHANNEL, &payload]).await.meta()?;
            }
            tx.commit().await.meta()?;
            Ok(n > 0)
        })
    }

    async fn create_api_key(&self, key: &ApiKey) -> Result<(), MetaError> {
        let scopes = serde_json::to_string(&key.scopes).map_err(|e| corrupt(format!("encoding scopes: {e}")))?;
        with_conn!(self, |c| {
            let stmt = c
                .prepare_cached(&format!(
                    "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ))
                .await
                .meta()?;
            c.execute(
                &stmt,
                &[
                    &key.id,
                    &key.name,
                    &key.owner,
                    &&key.digest[..],
                    &scopes,
                    &key.created_at,
                    &key.expires_at,
                    &key.owner_id,
                ],
            )
            .await
            .taken(|| format!("api key `{}` (or one with its digest)", key.id))
            .map(drop)
        })
    }

    async fn api_key_by_digest(&self, digest: &Digest) -> Result<Option<ApiKey>, MetaError> {
        with_conn!(self, |c| {
            let stmt =
                c.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE digest = $1")).await.meta()?;
            c.query_opt(&stmt, &[&&digest[..]]).await.meta()?.as_ref().map(key_row).transpose()
        })
    }

    async fn api_keys(&self, owner: Option<&str>) -> Result<Vec<ApiKey>, MetaError> {
        with_conn!(self, |c| {
            let found = match owner {
                Some(owner) => {
                    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE owner = $1 ORDER BY created_at, id");
                    let stmt = c.prepare_cached(&sql).await.meta()?;
                    c.query(&stmt, &[&owner]).await.meta()?
                }
                None => {
                    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id");
                    let stmt = c.prepare_cached(&sql).await.meta()?;
                    c.query(&stmt, &[]).await.meta()?
                }
            };
            rows(&found, key_row)
        })
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, MetaError> {
        with_conn!(self, |c| {
            let stmt = c.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1")).await.meta()?;
            c.query_opt(&stmt, &[&id]).await.meta()?.as_ref().map(key_row).transpose()
        })
    }

    async fn delete_api_key(&self, id: &str) -> Result<bool, MetaError> {
        with_conn!(self, |c| {
            let stmt = c
                .prepare_cached(
                    "WITH gone AS (DELETE FROM api_keys WHERE id = $1 RETURNING id) \
                     SELECT pg_notify($2, 'key:' || id) FROM gone",
                )
                .await
                .meta()?;
            Ok(!c.query(&stmt, &[&id, &NOTIFY_CHANNEL]).await.meta()?.is_empty())
        })
    }

    async fn insert_refresh_token(&self, token: &RefreshToken) -> Result<(), MetaError> {
        with_conn!(self, |c| {
            let stmt = c.prepare_cached(INSERT_TOKEN).await.meta()?;
            c.execute(&stmt, &[&&token.digest[..], &token.family, &token.username, &token.issued_at, &token.expires_at])
                .await
                .taken(|| "a refresh token with this digest".to_owned())
                .map(drop)
        })
    }

    /// The replacement joins the presented token's family and user: the caller only holds an
    /// opaque secret, so whatever `replacement.family` and `replacement.username` say is ignored.
    async fn rotate_refresh_token(
        &self,
        presented: &Digest,
        now: Millis,
        replacement: &RefreshToken,
    ) -> Result<RefreshOutcome, MetaError> {
        with_conn!(self, |c| {
            let tx = c.transaction().await.meta()?;
            // Concurrent presentations of one token queue here; under READ COMMITTED the next one
            // reads the row as the previous one committed it.
            let stmt = tx
                .prepare_cached(
                    "SELECT family, username, expires_at, spent, revoked FROM refresh_tokens \
                     WHERE digest = $1 FOR UPDATE",
                )
                .await
                .meta()?;
            let found = match tx.query_opt(&stmt, &[&&presented[..]]).await.meta()? {
                None => None,
                Some(row) => Some((
                    row.try_get::<_, String>(0).decoded()?,
                    row.try_get::<_, String>(1).decoded()?,
                    row.try_get::<_, Millis>(2).decoded()?,
                    row.try_get::<_, bool>(3).decoded()?,
                    row.try_get::<_, bool>(4).decoded()?,
                )),
            };
            let outcome = match found {
                None | Some((_, _, _, _, true)) => RefreshOutcome::Invalid,
                Some((family, _, _, true, false)) => {
                    revoke_family(&tx, &family).await?;
                    RefreshOutcome::Reused
                }
                Some((_, _, expires_at, false, false)) if expires_at <= now => RefreshOutcome::Invalid,
                Some((family, username, _, false, false)) => {
                    tx.execute("UPDATE refresh_tokens SET spent = TRUE WHERE digest = $1", &[&&presented[..]])
                        .await
                        .meta()?;
                    let insert = tx.prepare_cached(INSERT_TOKEN).await.meta()?;
                    tx.execute(
                        &insert,
                        &[
                            &&replacement.digest[..],
                            &family,
                            &username,
                            &replacement.issued_at,
                            &replacement.expires_at,
                        ],
                    )
                    .await
                    .taken(|| "a refresh token with this digest".to_owned())?;
                    RefreshOutcome::Rotated { username, family }
                }
            };
            tx.commit().await.meta()?;
            Ok(outcome)
        })
    }

    async fn revoke_refresh_family(&self, presented: &Digest) -> Result<bool, MetaError> {
        with_conn!(self, |c| {
            let tx = c.transaction().await.meta()?;
            let family: Option<String> = tx
                .query_opt("SELECT family FROM refresh_tokens WHERE digest = $1", &[&&presented[..]])
                .await
                .meta()?
                .map(|row| row.get(0));
            let Some(family) = family else { return Ok(false) };
            revoke_family(&tx, &family).await?;
            tx.commit().await.meta()?;
            Ok(true)
        })
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), MetaError> {
        let detail = serde_json::to_string(&entry.detail).map_err(|e| corrupt(format!("encoding detail: {e}")))?;
        with_conn!(self, |c| {
            let stmt = c
                .prepare_cached("INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)")
                .await
                .meta()?;
            c.execute(&stmt, &[&entry.at, &entry.actor, &entry.action, &entry.target, &detail]).await.meta().map(drop)
        })
    }

    /// `limit` is clamped to 1..=1000.
    async fn audit_log(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditRecord>, MetaError> {
        let limit = i64::from(limit.clamp(1, MAX_LIMIT));
        with_conn!(self, |c| {
            const COLUMNS: &str = "SELECT id, at, actor, action, target, detail FROM audit_log";
            let found = match before {
                Some(before) => {
                    let sql = format!("{COLUMNS} WHERE id < $1 ORDER BY id DESC LIMIT $2");
                    let stmt = c.prepare_cached(&sql).await.meta()?;
                    c.query(&stmt, &[&before, &limit]).await.meta()?
                }
                None => {
                    let stmt = c.prepare_cached(&format!("{COLUMNS} ORDER BY id DESC LIMIT $1")).await.meta()?;
                    c.query(&stmt, &[&limit]).await.meta()?
                }
            };
            rows(&found, audit_row)
        })
    }

    /// One statement per batch: the pointers go in as arrays and are unnested server-side.
    async fn upsert_dead_letters(&self, pointers: &[DeadLetterPointer]) -> Result<(), MetaError> {
        let pointers = last_of_each(pointers);
        let n = pointers.len();
        let (mut stations, mut groups, mut offsets, mut ids) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut reasons, mut attempts, mut errors, mut dead_ats) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for p in pointers {
            ids.push(to_i64(p.id, "dead-letter id")?);
            offsets.push(to_i64(p.offset, "dead-letter offset")?);
            stations.push(p.station.as_str());
            groups.push(p.group.as_str());
            reasons.push(p.reason.as_str());
            attempts.push(i64::from(p.attempts));
            // Postgres text cannot hold U+0000, and a pointer that can never be stored would stall
            // the outbox: a NUL in a consumer's free-form error becomes U+FFFD.
            errors.push(p.last_error.as_ref().map(|e| e.replace('\0', "\u{FFFD}")));
            dead_ats.push(p.dead_at);
        }
        if n == 0 {
            return Ok(());
        }
        with_conn!(self, |c| {
            let stmt = c
                .prepare_cached(&format!(
                    "INSERT INTO dead_letters ({DEAD_LETTER_COLUMNS}) \
                     SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::int8[], \
                                          $7::text[], $8::int8[]) \
                     ON CONFLICT (station, grp, \"offset\") DO UPDATE SET id = excluded.id, \
                     reason = excluded.reason, attempts = excluded.attempts, \
                     last_error = excluded.last_error, dead_at = excluded.dead_at"
                ))
                .await
                .meta()?;
            c.execute(&stmt, &[&ids, &stations, &groups, &offsets, &reasons, &attempts, &errors, &dead_ats])
                .await
                .meta()
                .map(drop)
        })
    }

    /// `limit` is clamped to 1..=1000.
    async fn dead_letters(&self, query: &DeadLetterQuery) -> Result<Page<DeadLetterPointer>, MetaError> {
        let limit = query.limit.clamp(1, MAX_LIMIT);
        let after_id = match query.after {
            Some((_, id)) => to_i64(id, "dead-letter id")?,
            None => 0,
        };
        let (sql, args) = dead_letters_statement(query, after_id, i64::from(limit) + 1);
        with_conn!(self, |c| {
            let stmt = c.prepare_cached(&sql).await.meta()?;
            let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
            let mut items = rows(&c.query(&stmt, &params).await.meta()?, dead_letter_row)?;
            let more = items.len() > limit as usize;
            items.truncate(limit as usize);
            let next = if more { items.last().map(|p| (p.dead_at, p.id)) } else { None };
            Ok(Page { items, next })
        })
    }

    async fn delete_dead_letter(&self, station: &str, id: u64) -> Result<bool, MetaError> {
        let id = to_i64(id, "dead-letter id")?;
        with_conn!(self, |c| {
            let stmt = c.prepare_cached("DELETE FROM dead_letters WHERE station = $1 AND id = $2").await.meta()?;
            Ok(c.execute(&stmt, &[&station, &id]).await.meta()? > 0)
        })
    }

    async fn delete_station_dead_letters(&self, station: &str) -> Result<u64, MetaError> {
        with_conn!(self, |c| {
            let stmt = c.prepare_cached("DELETE FROM dead_letters WHERE station = $1").await.meta()?;
            c.execute(&stmt, &[&station]).await.meta()
        })
    }
}
