//! The credential cache: users by id and API keys by digest and by id, each entry trusted for the
//! configured TTL, so most requests authenticate without asking the metadata store.
//!
//! A deletion must take effect at once: [`CredentialCache::forget`] drops what it names, and bumps
//! a generation, so a lookup that started before it does not cache its (possibly stale) answer.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::AuthError;
use crate::meta::{Digest, Invalidation, Millis, Role, Scope};

/// An API key as authentication needs it.
#[derive(Clone)]
pub(super) struct KeyGrant {
    pub id: String,
    pub owner: String,
    pub owner_id: String,
    pub owner_role: Role,
    pub scopes: Arc<[Scope]>,
    pub expires_at: Option<Millis>,
}

/// A user's name and role, or `None` when there is no such user.
pub(super) type UserEntry = Option<(String, Role)>;

struct Cached<T> {
    value: T,
    at: Instant,
}

impl<T: Clone> Cached<T> {
    fn fresh(&self, ttl: Duration) -> Option<T> {
        (self.at.elapsed() < ttl).then(|| self.value.clone())
    }
}

#[derive(Default)]
struct Tables {
    keys_by_digest: HashMap<Digest, Cached<Option<KeyGrant>>>,
    keys_by_id: HashMap<String, Cached<Option<KeyGrant>>>,
    /// By user id.
    users: HashMap<String, Cached<UserEntry>>,
    /// Bumped by every invalidation. A lookup that started before a bump does not cache its
    /// answer: it may describe what was just deleted.
    generation: u64,
}

/// Most entries a table keeps; beyond it the table is cleared (a flood of random keys must not
/// grow memory).
const CACHE_MAX: usize = 100_000;

pub(super) struct CredentialCache {
    ttl: Duration,
    tables: Mutex<Tables>,
}

impl CredentialCache {
    pub fn new(ttl: Duration) -> CredentialCache {
        CredentialCache { ttl, tables: Mutex::new(Tables::default()) }
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub async fn user(
        &self,
        id: &str,
        load: impl Future<Output = Result<UserEntry, AuthError>>,
    ) -> Result<UserEntry, AuthError> {
        self.cached(|t| &mut t.users, id.to_owned(), load).await
    }

    pub async fn key_by_digest(
        &self,
        digest: &Digest,
        load: impl Future<Output = Result<Option<KeyGrant>, AuthError>>,
    ) -> Result<Option<KeyGrant>, AuthError> {
        self.cached(|t| &mut t.keys_by_digest, *digest, load).await
    }

    pub async fn key_by_id(
        &self,
        id: &str,
        load: impl Future<Output = Result<Option<KeyGrant>, AuthError>>,
    ) -> Result<Option<KeyGrant>, AuthError> {
        self.cached(|t| &mut t.keys_by_id, id.to_owned(), load).await
    }

    /// `key`'s entry in the table `table` picks, or else what `load` answers, cached unless an
    /// invalidation happened while it loaded (then it may describe what was just deleted).
    async fn cached<K: Hash + Eq, V: Clone>(
        &self,
        table: fn(&mut Tables) -> &mut HashMap<K, Cached<V>>,
        key: K,
        load: impl Future<Output = Result<V, AuthError>>,
    ) -> Result<V, AuthError> {
        let generation = {
            let mut tables = self.tables();
            if let Some(hit) = table(&mut tables).get(&key).and_then(|c| c.fresh(self.ttl)) {
                return Ok(hit);
            }
            tables.generation
        };
        let value = load.await?;
        let mut tables = self.tables();
        if tables.generation == generation {
            let entries = table(&mut tables);
            if entries.len() >= CACHE_MAX {
                entries.clear();
            }
            entries.insert(key, Cached { value: value.clone(), at: Instant::now() });
        }
        Ok(value)
    }

    /// Forgets what this node or another one changed, so a deletion takes effect at once.
    pub fn forget(&self, what: &Invalidation) {
        let mut tables = self.tables();
        tables.generation += 1;
        match what {
            Invalidation::User(_) => {
                // Users are cached by id, and the notice names a username: drop them all (rare).
                tables.users.clear();
                // A deleted user's keys are gone too; drop every cached key rather than track owners.
                tables.keys_by_digest.clear();
                tables.keys_by_id.clear();
            }
            Invalidation::ApiKey(id) => {
                tables.keys_by_id.remove(id);
                tables.keys_by_digest.retain(|_, c| c.value.as_ref().is_none_or(|g| g.id != *id));
            }
            Invalidation::All => *tables = Tables { generation: tables.generation, ..Tables::default() },
        }
    }
}
