//! [`MetadataStore`] on the pool: one method, one short transaction or statement.

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::listen::{listen, NOTIFY_CHANNEL};
use super::rows::{audit_row, corrupt, from_i64, key_row, rows, user_row, Pg, KEY_COLUMNS, USER_COLUMNS};
use super::PostgresStore;
use crate::meta::{
    ApiKey, AuditEntry, AuditRecord, Digest, Invalidation, MetaError, MetadataStore, Millis, RefreshOutcome,
    RefreshToken, User, MAX_PAGE,
};

/// Revokes every token of `family`. The rows are locked first, in one order: that waits for a
/// rotation in flight in the family to commit, so the UPDATE (a new statement, hence a new
/// snapshot under READ COMMITTED) also catches the token that rotation inserted.
async fn revoke_family(tx: &tokio_postgres::Transaction<'_>, family: &str) -> Result<(), MetaError> {
    tx.execute("SELECT 1 FROM refresh_tokens WHERE family = $1 ORDER BY digest FOR UPDATE", &[&family]).await.meta()?;
    tx.execute("UPDATE refresh_tokens SET revoked = TRUE WHERE family = $1", &[&family]).await.meta()?;
    Ok(())
}

const INSERT_TOKEN: &str =
    "INSERT INTO refresh_tokens (digest, family, username, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)";

#[async_trait]
impl MetadataStore for PostgresStore {
    async fn invalidations(&self) -> Result<Option<mpsc::Receiver<Invalidation>>, MetaError> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(listen(self.config.clone(), self.tls.clone(), tx));
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
        let limit = i64::from(limit.clamp(1, MAX_PAGE));
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
}
