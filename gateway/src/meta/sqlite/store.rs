//! [`MetadataStore`] on the connection: each call one statement or one transaction, on the
//! blocking pool.

use async_trait::async_trait;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};

use super::rows::{audit_row, collect, corrupt, from_i64, key_row, user_row, Sql, KEY_COLUMNS, USER_COLUMNS};
use super::SqliteStore;
use crate::meta::{
    ApiKey, AuditEntry, AuditRecord, Digest, MetaError, MetadataStore, Millis, RefreshOutcome, RefreshToken, User,
    MAX_PAGE,
};

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
        let limit = limit.clamp(1, MAX_PAGE);
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
