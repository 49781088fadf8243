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

use rusqlite::Connection;

use super::MetaError;

mod migrate;
mod rows;
mod store;

use migrate::migrate;
pub use migrate::{MIGRATIONS, SCHEMA_VERSION};
use rows::Sql;

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
