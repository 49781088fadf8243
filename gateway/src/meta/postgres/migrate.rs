//! The schema: [`MIGRATIONS`], applied in order under [`MIGRATION_LOCK`].

use super::rows::{describe, Pg};
use super::{MetaError, PostgresStore};

/// Forward-only migrations as (version, SQL), in order; versions are 1, 2, 3...
pub const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../../../migrations/0001_init.sql")),
    (2, include_str!("../../../../migrations/0002_user_ids.sql")),
];

/// The version of a fully migrated database.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory-lock key every migrator takes (`depot` + `meta` in ASCII).
pub const MIGRATION_LOCK: i64 = 0x6465_706f_746d_6574;

impl PostgresStore {
    /// Applies the missing [`MIGRATIONS`] in order and returns the versions it applied (none when
    /// the schema was current). Holds [`MIGRATION_LOCK`] throughout, so a concurrent `migrate`, on
    /// this node or another, waits for this one and then finds nothing to do. Waiting for that lock
    /// is not bounded by the pool's timeouts; connecting is.
    pub async fn migrate(&self) -> Result<Vec<i32>, MetaError> {
        let connecting = self.config.connect(self.tls.connector.clone());
        let (mut client, connection) = tokio::time::timeout(self.options.create_timeout, connecting)
            .await
            .map_err(|_| MetaError::Unavailable("timed out connecting to postgres to migrate".to_owned()))?
            .map_err(|e| {
                MetaError::Unavailable(format!("connecting to postgres to migrate: {}", self.tls.explain(describe(&e))))
            })?;
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
