//! The credential cache: users by id and API keys by digest and by id, each entry trusted for the
//! configured TTL, so most requests authenticate without asking the metadata store.
//!
//! A deletion must take effect at once: [`CredentialCache::forget`] drops what it names, and bumps
//! a generation, so a lookup that started before it does not cache its (possibly stale) answer.

use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use moka::sync::Cache;

use super::{AuthError, Claims};
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

/// Most entries each table keeps; past it the least useful ones are evicted (a flood of random
/// keys must not grow memory, nor push out every live credential at once).
const CACHE_MAX: u64 = 100_000;

/// Most verified access tokens kept (each about half a KiB with its claims).
const TOKENS_MAX: u64 = 10_000;

pub(super) struct CredentialCache {
    ttl: Duration,
    keys_by_digest: Cache<Digest, Option<KeyGrant>>,
    keys_by_id: Cache<String, Option<KeyGrant>>,
    /// By user id.
    users: Cache<String, UserEntry>,
    /// Our own access tokens whose signature, issuer and audience were verified, by the whole
    /// token, with their claims: a repeat skips the HMAC and the JSON. Trusted only before
    /// their `exp`; the subject is still looked up (`users`, `keys_by_id`) on every request, so
    /// deleting a user or key ends its tokens at once, cached or not.
    tokens: Cache<Box<str>, Arc<Claims>>,
    /// Bumped by every invalidation. A lookup that started before a bump does not cache its
    /// answer: it may describe what was just deleted. Held while an answer is stored and while
    /// an invalidation runs, so none slips in between.
    generation: Mutex<u64>,
}

impl CredentialCache {
    pub fn new(ttl: Duration) -> CredentialCache {
        fn table<K: Hash + Eq + Send + Sync + 'static, V: Clone + Send + Sync + 'static>(ttl: Duration) -> Cache<K, V> {
            Cache::builder().max_capacity(CACHE_MAX).time_to_live(ttl).support_invalidation_closures().build()
        }
        CredentialCache {
            ttl,
            keys_by_digest: table(ttl),
            keys_by_id: table(ttl),
            users: table(ttl),
            tokens: Cache::builder().max_capacity(TOKENS_MAX).time_to_live(ttl).build(),
            generation: Mutex::new(0),
        }
    }

    /// The claims of `token` if it was verified before and has not expired at `now_secs`
    /// (strictly before `exp`: near it, the caller verifies again with its leeway).
    pub fn verified_token(&self, token: &str, now_secs: u64) -> Option<Arc<Claims>> {
        self.tokens.get(token).filter(|claims| now_secs < claims.exp)
    }

    /// Remembers `token` as verified, with its claims (not when the TTL is zero: no caching).
    pub fn remember_token(&self, token: &str, claims: Arc<Claims>) {
        if !self.ttl.is_zero() {
            self.tokens.insert(token.into(), claims);
        }
    }

    fn generation(&self) -> MutexGuard<'_, u64> {
        self.generation.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub async fn user(
        &self,
        id: &str,
        load: impl Future<Output = Result<UserEntry, AuthError>>,
    ) -> Result<UserEntry, AuthError> {
        self.cached(&self.users, id.to_owned(), load).await
    }

    pub async fn key_by_digest(
        &self,
        digest: &Digest,
        load: impl Future<Output = Result<Option<KeyGrant>, AuthError>>,
    ) -> Result<Option<KeyGrant>, AuthError> {
        self.cached(&self.keys_by_digest, *digest, load).await
    }

    pub async fn key_by_id(
        &self,
        id: &str,
        load: impl Future<Output = Result<Option<KeyGrant>, AuthError>>,
    ) -> Result<Option<KeyGrant>, AuthError> {
        self.cached(&self.keys_by_id, id.to_owned(), load).await
    }

    /// `key`'s entry in `table`, or else what `load` answers, cached unless an invalidation
    /// happened while it loaded (then it may describe what was just deleted).
    async fn cached<K, V>(
        &self,
        table: &Cache<K, V>,
        key: K,
        load: impl Future<Output = Result<V, AuthError>>,
    ) -> Result<V, AuthError>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        if let Some(hit) = table.get(&key) {
            return Ok(hit);
        }
        let before = *self.generation();
        let value = load.await?;
        let generation = self.generation();
        if *generation == before && !self.ttl.is_zero() {
            table.insert(key, value.clone());
        }
        Ok(value)
    }

    /// Forgets what this node or another one changed, so a deletion takes effect at once.
    pub fn forget(&self, what: &Invalidation) {
        let mut generation = self.generation();
        *generation += 1;
        match what {
            Invalidation::User(_) => {
                // Users are cached by id, and the notice names a username: drop them all (rare).
                self.users.invalidate_all();
                // A deleted user's keys are gone too; drop every cached key rather than track owners.
                self.keys_by_digest.invalidate_all();
                self.keys_by_id.invalidate_all();
            }
            Invalidation::ApiKey(id) => {
                self.keys_by_id.invalidate(id);
                let id = id.clone();
                let dropped = self
                    .keys_by_digest
                    .invalidate_entries_if(move |_, grant| grant.as_ref().is_some_and(|g| g.id == id));
                if dropped.is_err() {
                    // Only when closures are not enabled, which `new` does: fail safe anyway.
                    self.keys_by_digest.invalidate_all();
                }
            }
            Invalidation::All => {
                self.users.invalidate_all();
                self.keys_by_digest.invalidate_all();
                self.keys_by_id.invalidate_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PrincipalKind;

    fn claims(exp: u64) -> Arc<Claims> {
        Arc::new(Claims {
            sub: "usr_a".into(),
            kind: PrincipalKind::User,
            role: Role::Member,
            scopes: None,
            exp,
            iat: 0,
            nbf: 0,
            iss: "depot".into(),
            aud: "depot".into(),
            jti: "j".into(),
        })
    }

    #[test]
    fn a_verified_token_is_trusted_only_whole_and_only_before_it_expires() {
        let cache = CredentialCache::new(Duration::from_secs(30));
        cache.remember_token("header.claims.signature", claims(100));
        assert_eq!(cache.verified_token("header.claims.signature", 99).map(|c| c.exp), Some(100));
        assert!(cache.verified_token("header.claims.signature", 100).is_none(), "expired: verify again");
        for other in ["header.claims.signaturf", "header.claims.signatur", "header.claims.signature.", ""] {
            assert!(cache.verified_token(other, 0).is_none(), "{other:?} is not the verified token");
        }
    }

    #[test]
    fn a_zero_ttl_caches_no_token() {
        let cache = CredentialCache::new(Duration::ZERO);
        cache.remember_token("t", claims(100));
        assert!(cache.verified_token("t", 0).is_none());
    }
}
