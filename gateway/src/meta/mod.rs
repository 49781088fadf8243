//! The metadata store: users, API keys, refresh tokens and the audit log of admin actions.
//! (Dead letters are kept, and listed, in the broker's replicated state only.)
//!
//! [`MetadataStore`] is the small trait every backend implements: [`sqlite::SqliteStore`] (one
//! file in the data dir, the single-node default) and [`postgres::PostgresStore`] (shared by the
//! nodes of a cluster). Both must pass the conformance suite of the gateway's integration tests
//! (`tests/it/meta/conformance.rs`). The store holds no secrets in clear:
//! API keys and refresh tokens are stored as SHA-256 digests (they are 256-bit random strings, so a
//! fast hash is enough), and passwords as argon2 PHC strings computed by the caller.
//!
//! Times are Unix milliseconds ([`Millis`]) supplied by the caller, so tests control the clock.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod postgres;
pub mod sqlite;

pub use postgres::{PoolOptions, PostgresStore};
pub use sqlite::SqliteStore;

pub type Millis = i64;

/// A SHA-256 digest of a secret (API key or refresh token).
pub type Digest = [u8; 32];

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// A unique name or id is taken.
    #[error("{0} already exists")]
    Conflict(String),
    /// The backend cannot be reached or failed; the request may be retried.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// Stored data that cannot be decoded: a bug or tampering, never bad input.
    #[error("metadata store corrupt: {0}")]
    Corrupt(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Immutable and never reused (`usr_...`, random): what tokens and keys are bound to, so
    /// nothing of a deleted user works for a later user of the same name.
    pub id: String,
    pub username: String,
    /// argon2 PHC string.
    pub password_hash: String,
    pub role: Role,
    pub created_at: Millis,
}

/// What an API key may do on the stations its scope names. `metrics` is not about stations: it
/// lets the key read `/metrics` (which names every station), so its scope must name `*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Produce,
    Consume,
    Manage,
    Metrics,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Produce => "produce",
            Action::Consume => "consume",
            Action::Manage => "manage",
            Action::Metrics => "metrics",
        }
    }
}

/// `stations` is a name or a pattern with `*` wildcards (`orders*`, `*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub stations: String,
    pub actions: Vec<Action>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// Public identifier (`key_...`), safe to show and log.
    pub id: String,
    pub name: String,
    /// The user who created it; the key never grants more than this user's role.
    pub owner: String,
    /// The [`User::id`] of `owner` when the key was created: the key works only while the user
    /// of that name still has this id.
    pub owner_id: String,
    pub digest: Digest,
    pub scopes: Vec<Scope>,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshToken {
    pub digest: Digest,
    /// Every token rotated from one login shares its family.
    pub family: String,
    pub username: String,
    pub issued_at: Millis,
    pub expires_at: Millis,
}

/// What presenting a refresh token did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// It was live: it is now spent and `replacement` is stored in its family, for its user (the
    /// caller's `replacement.family` and `replacement.username` are ignored: it only holds the
    /// opaque secret).
    Rotated { username: String, family: String },
    /// It was already spent: its whole family is now revoked.
    Reused,
    /// Unknown, expired or revoked: nothing changed.
    Invalid,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: Millis,
    /// Who did it: a username or an API key id.
    pub actor: String,
    /// e.g. `user.create`, `api_key.delete`, `station.delete`.
    pub action: String,
    /// What it was done to (a username, key id, station name...).
    pub target: String,
    /// Extra facts as JSON, never a secret.
    pub detail: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub entry: AuditEntry,
}

/// The most rows one page of [`MetadataStore::audit_log`] holds; larger limits are clamped to
/// it.
pub const MAX_PAGE: u32 = 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<(Millis, u64)>,
}

/// What a node must forget from its credential caches because another node deleted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    User(String),
    /// An API key by id.
    ApiKey(String),
    /// Everything: notifications may have been missed (the listener reconnected).
    All,
}

/// Every backend implements this; the conformance suite (`tests/it/meta/conformance.rs`) checks
/// the contract.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Cheap round trip to the backend (for /readyz).
    async fn ping(&self) -> Result<(), MetaError>;

    /// Deletions made by other nodes sharing this store, as they happen. `None` when the store
    /// cannot be shared (SQLite), so there is nothing to hear.
    async fn invalidations(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Invalidation>>, MetaError> {
        Ok(None)
    }

    /// `Conflict` when the username or the id is taken.
    async fn create_user(&self, user: &User) -> Result<(), MetaError>;
    async fn user(&self, username: &str) -> Result<Option<User>, MetaError>;
    /// The user with this [`User::id`].
    async fn user_by_id(&self, id: &str) -> Result<Option<User>, MetaError>;
    /// Ordered by username.
    async fn users(&self) -> Result<Vec<User>, MetaError>;
    async fn user_count(&self) -> Result<u64, MetaError>;
    /// Also deletes the user's API keys and refresh tokens. `false` when there was no such user.
    async fn delete_user(&self, username: &str) -> Result<bool, MetaError>;

    /// `Conflict` when the id is taken.
    async fn create_api_key(&self, key: &ApiKey) -> Result<(), MetaError>;
    async fn api_key_by_digest(&self, digest: &Digest) -> Result<Option<ApiKey>, MetaError>;
    /// Ordered by creation, then id. `owner: None` lists every key.
    async fn api_keys(&self, owner: Option<&str>) -> Result<Vec<ApiKey>, MetaError>;
    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, MetaError>;
    /// `false` when there was no such key.
    async fn delete_api_key(&self, id: &str) -> Result<bool, MetaError>;

    async fn insert_refresh_token(&self, token: &RefreshToken) -> Result<(), MetaError>;
    /// Atomically: a live token (not spent, not revoked, `expires_at > now`) is marked spent and
    /// `replacement` is inserted (`Rotated`); a spent one revokes every token of its family
    /// (`Reused`); anything else is `Invalid`. Concurrent calls with one token rotate it once.
    async fn rotate_refresh_token(
        &self,
        presented: &Digest,
        now: Millis,
        replacement: &RefreshToken,
    ) -> Result<RefreshOutcome, MetaError>;
    /// Revokes the family of the token. `false` when the token is unknown.
    async fn revoke_refresh_family(&self, presented: &Digest) -> Result<bool, MetaError>;

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), MetaError>;
    /// Newest first; `before`: only ids below it.
    async fn audit_log(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditRecord>, MetaError>;
}
