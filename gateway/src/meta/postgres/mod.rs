//! [`MetadataStore`] on Postgres: what a cluster uses, one database shared by every node.
//!
//! Connections: a deadpool-postgres pool over tokio-postgres, created lazily ([`PostgresStore::connect`]
//! touches no network, so a node starts while Postgres is down). TLS is rustls, configured by
//! libpq's `sslmode` and `sslrootcert` in the URL and the `metadata_ca_file` setting (see [`tls`]);
//! the pool, `migrate`, the LISTEN connection and query cancellation share one connector.
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
//! timeouts, other database errors) `Unavailable`. All values reach SQL as bound parameters; no SQL
//! is assembled at run time.
//!
//! Text: Postgres cannot store U+0000. A string holding one is refused ([`MetaError::Unavailable`],
//! as the trait has no "invalid input" kind) and nothing is stored.
//!
//! Refresh-token rotation runs in one READ COMMITTED transaction that locks the presented row with
//! `SELECT ... FOR UPDATE`: concurrent presentations of one token queue on that lock, the first
//! rotates it and the next ones see it spent.

use std::time::Duration;

use std::path::Path;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};

use super::MetaError;

pub use listen::NOTIFY_CHANNEL;
pub use migrate::{MIGRATIONS, MIGRATION_LOCK, SCHEMA_VERSION};
use rows::describe;
pub use tls::{split_url, PgTls, SslMode};

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

/// The Postgres backend. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    config: tokio_postgres::Config,
    options: PoolOptions,
    tls: PgTls,
}

impl std::fmt::Debug for PostgresStore {
    // The config holds the password: print neither.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("options", &self.options).field("tls", &self.tls).finish_non_exhaustive()
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
    /// others succeed. TLS as the URL's `sslmode` and `sslrootcert` say (see [`tls`]).
    pub fn connect(url: &str, options: PoolOptions) -> Result<PostgresStore, MetaError> {
        PostgresStore::connect_with_ca_file(url, options, None)
    }

    /// Like [`PostgresStore::connect`], trusting the CA certificates of the PEM file `ca_file`
    /// (the `metadata_ca_file` setting) unless the URL names its own `sslrootcert`. Reads that file
    /// now: an unreadable one is an error here, not at the first call.
    pub fn connect_with_ca_file(
        url: &str,
        options: PoolOptions,
        ca_file: Option<&Path>,
    ) -> Result<PostgresStore, MetaError> {
        let split = split_url(url).map_err(MetaError::Unavailable)?;
        let tls = PgTls::new(split.sslmode, split.sslrootcert.as_deref(), ca_file).map_err(MetaError::Unavailable)?;
        // Never echo the URL: it may hold a password.
        let mut config: tokio_postgres::Config =
            split.rest.parse().map_err(|e| MetaError::Unavailable(format!("invalid postgres metadata url: {e}")))?;
        config.ssl_mode(tls.tokio_mode());
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.create_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("depot");
        }
        let manager = Manager::from_config(
            config.clone(),
            tls.connector.clone(),
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
        Ok(PostgresStore { pool, config, options, tls })
    }

    async fn conn(&self) -> Result<Object, MetaError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => {
                MetaError::Unavailable(format!("connecting to postgres: {}", self.tls.explain(describe(&e))))
            }
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
                let tls = self.tls.connector.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(limit, cancel.cancel_query(tls)).await;
                });
                drop(client);
                Err(MetaError::Unavailable(format!("postgres did not answer within {:?}", self.options.query_timeout)))
            }
        }
    }
}

mod listen;
mod migrate;
mod rows;
mod store;
pub mod tls;
