//! Authentication and authorization.
//!
//! A request carries `Authorization: Bearer <token>` where the token is either
//! - an access JWT: HS256 signed with our secret, or RS256/EdDSA from a configured external
//!   issuer; `exp`, `nbf`, `iss` and `aud` are checked with at most 5 s of leeway; or
//! - an API key `dk_...`, stored only as its SHA-256 digest, limited to its scopes.
//!
//! [`Auth::authenticate`] turns the token into a [`Principal`]; the extractors in [`extract`]
//! put the permission a handler needs into its signature. Deleting a key or a user takes effect
//! at once on this node: the caches below are invalidated by the same call that deletes, and
//! entries expire after [`AuthConfig::cache_ttl`] (30 s by default) as the backstop for other
//! writers of the store. When the store is unreachable, a credential whose entry expired is
//! refused (503), never let through: checks fail closed. Our own access tokens, once verified,
//! are remembered whole until their `exp`, so a repeat skips the signature check and the JSON
//! (about a tenth of a single produce's server CPU); their subject is still looked up every time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::meta::{ApiKey, Digest, Invalidation, MetaError, MetadataStore, Millis, Role, Scope, User};

mod cache;
mod error;
pub mod extract;
pub mod login_limit;
pub mod password;
mod principal;
pub mod scope;
mod secrets;
mod token_error;

pub use error::AuthError;
pub use extract::{Authorized, Need};
pub use principal::{Principal, PrincipalKind};
pub use secrets::{
    digest, generate_password, generate_secret, hash_password, new_api_key, new_refresh_token, new_user_id, now_millis,
    API_KEY_PREFIX, REFRESH_PREFIX,
};

use cache::KeyGrant;
use secrets::{b64, now_secs, random_bytes, verify_password};

/// How long a cached key or user is trusted without asking the store again, by default.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// The longest cache TTL allowed: past it, a deletion missed by the listener lingers too long.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(300);
/// The most clock skew tolerated on `exp` and `nbf`.
pub const MAX_LEEWAY_SECS: u64 = 5;

/// A public key of an external issuer whose tokens we accept.
#[derive(Clone, Debug)]
pub struct ExternalIssuer {
    /// RS256 or EdDSA.
    pub algorithm: Algorithm,
    /// PEM of the public key.
    pub public_key_pem: String,
    pub issuer: String,
    pub audience: String,
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// HS256 secret of our own access tokens; at least 32 bytes.
    pub jwt_secret: Vec<u8>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Clock skew tolerated on `exp`/`nbf`, at most [`MAX_LEEWAY_SECS`].
    pub leeway_secs: u64,
    pub external: Vec<ExternalIssuer>,
    /// How long users and keys are cached (at most [`MAX_CACHE_TTL`]).
    pub cache_ttl: Duration,
    /// Most password hashes computed at once (see [`password::PasswordPool`]).
    pub password_workers: usize,
    /// Longest wait for a password worker before 503 `overloaded`.
    pub password_wait: Duration,
    /// Failed password logins allowed per username and window (see [`login_limit::LoginLimit`]).
    pub login_max_failures: u32,
    pub login_failure_window: Duration,
}

impl AuthConfig {
    /// Defaults with the given secret.
    pub fn with_secret(jwt_secret: Vec<u8>) -> AuthConfig {
        AuthConfig {
            jwt_secret,
            issuer: "depot".to_owned(),
            audience: "depot".to_owned(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            leeway_secs: MAX_LEEWAY_SECS,
            external: Vec::new(),
            cache_ttl: CACHE_TTL,
            password_workers: password::default_workers(),
            password_wait: password::DEFAULT_WAIT,
            login_max_failures: login_limit::DEFAULT_MAX_FAILURES,
            login_failure_window: login_limit::DEFAULT_WINDOW,
        }
    }
}

/// The claims of our access tokens. Never a password.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// A user's immutable id (`usr_...`) or an API key's id (`key_...`), as `kind` says; never a
    /// username, which a later user may take.
    pub sub: String,
    pub kind: PrincipalKind,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Scope>>,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    pub iss: String,
    pub aud: String,
    pub jti: String,
}

/// Claims read from an external issuer's token: only `sub` is required; `role` defaults to
/// member and `scopes` to none (a token that grants nothing unless it says so).
#[derive(Clone, Debug, Deserialize)]
struct ExternalClaims {
    sub: String,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    scopes: Option<Vec<Scope>>,
}

/// A freshly issued pair, as `/v1/auth/token` answers it.
#[derive(Clone, Debug)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: String,
}

fn meta(e: MetaError) -> AuthError {
    AuthError::from(e)
}

/// The authentication service: shared by every worker.
pub struct Auth {
    config: AuthConfig,
    store: Arc<dyn MetadataStore>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    external: Vec<(ExternalIssuer, DecodingKey, Validation)>,
    cache: cache::CredentialCache,
    /// A real argon2 hash, verified when the username is unknown so that the answer takes as
    /// long as for a wrong password.
    decoy_hash: String,
    /// Where every password hash and verification runs.
    passwords: password::PasswordPool,
    /// Failed password logins per username.
    login_limit: login_limit::LoginLimit,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("issuer", &self.config.issuer).field("audience", &self.config.audience).finish()
    }
}

fn validation(algorithm: Algorithm, issuer: &str, audience: &str, leeway: u64) -> Validation {
    let mut v = Validation::new(algorithm);
    v.leeway = leeway.min(MAX_LEEWAY_SECS);
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    v
}

impl Auth {
    pub fn new(config: AuthConfig, store: Arc<dyn MetadataStore>) -> Result<Auth, String> {
        if config.cache_ttl > MAX_CACHE_TTL {
            return Err(format!("the credential cache TTL must be at most {} s", MAX_CACHE_TTL.as_secs()));
        }
        if config.jwt_secret.len() < 32 {
            return Err("the JWT secret must be at least 32 bytes".to_owned());
        }
        let mut external = Vec::new();
        for issuer in &config.external {
            let key = match issuer.algorithm {
                Algorithm::RS256 => DecodingKey::from_rsa_pem(issuer.public_key_pem.as_bytes()),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(issuer.public_key_pem.as_bytes()),
                other => {
                    return Err(format!(
                        "external issuer {}: algorithm {other:?} is not supported; use RS256 or EdDSA",
                        issuer.issuer
                    ))
                }
            }
            .map_err(|e| format!("external issuer {}: public key: {e}", issuer.issuer))?;
            let v = validation(issuer.algorithm, &issuer.issuer, &issuer.audience, config.leeway_secs);
            external.push((issuer.clone(), key, v));
        }
        let decoy_hash = hash_password(&generate_password()).map_err(|e| e.to_string())?;
        Ok(Auth {
            encoding: EncodingKey::from_secret(&config.jwt_secret),
            decoding: DecodingKey::from_secret(&config.jwt_secret),
            validation: validation(Algorithm::HS256, &config.issuer, &config.audience, config.leeway_secs),
            external,
            cache: cache::CredentialCache::new(config.cache_ttl),
            decoy_hash,
            passwords: password::PasswordPool::new(config.password_workers, config.password_wait),
            login_limit: login_limit::LoginLimit::new(config.login_max_failures, config.login_failure_window),
            store,
            config,
        })
    }

    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The pool that runs password work (for its bound and counters).
    pub fn passwords(&self) -> &password::PasswordPool {
        &self.passwords
    }

    /// Signs an access token for `principal`.
    pub fn access_token(&self, principal: &Principal) -> Result<String, AuthError> {
        let now = now_secs();
        let sub = match principal.kind {
            PrincipalKind::User => principal
                .owner_id
                .clone()
                .ok_or_else(|| AuthError::Internal("a user principal without a user id".to_owned()))?,
            PrincipalKind::ApiKey | PrincipalKind::External => principal.subject.clone(),
        };
        let claims = Claims {
            sub,
            kind: principal.kind,
            role: principal.role,
            scopes: principal.scopes.as_ref().map(|s| s.to_vec()),
            exp: now + self.config.access_ttl.as_secs(),
            iat: now,
            nbf: now,
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            jti: b64(&random_bytes::<12>()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Internal(format!("signing a token: {e}")))
    }

    /// Issues an access token and a refresh token of a new family.
    pub async fn issue(&self, principal: &Principal) -> Result<Issued, AuthError> {
        let refresh_token = new_refresh_token();
        let now = now_millis();
        let record = crate::meta::RefreshToken {
            digest: digest(&refresh_token),
            family: refresh_family(principal)?,
            username: principal.owner.clone(),
            issued_at: now,
            expires_at: now + millis(self.config.refresh_ttl),
        };
        self.store.insert_refresh_token(&record).await.map_err(meta)?;
        Ok(Issued {
            access_token: self.access_token(principal)?,
            expires_in: self.config.access_ttl.as_secs(),
            refresh_token,
        })
    }

    /// `POST /v1/auth/token` with a username and password: 401 when wrong, 429 when the
    /// username has used up its failures (known or not, the answers are the same).
    pub async fn login(&self, username: &str, password: &str) -> Result<Principal, AuthError> {
        let who = digest(username);
        self.login_limit.attempt(&who, Instant::now()).map_err(AuthError::RateLimited)?;
        let checked = self.check_password(username, password).await;
        match &checked {
            Ok(_) => self.login_limit.succeeded(&who),
            Err(AuthError::Unauthorized(_)) => {}
            Err(_) => self.login_limit.uncount(&who),
        }
        checked
    }

    async fn check_password(&self, username: &str, password: &str) -> Result<Principal, AuthError> {
        let user = self.store.user(username).await.map_err(meta)?;
        let phc = user.as_ref().map_or_else(|| self.decoy_hash.clone(), |u| u.password_hash.clone());
        let password = password.to_owned();
        let ok = self.passwords.run(move || verify_password(&password, &phc)).await?;
        match user {
            Some(u) if ok => Ok(Principal::user(&u)),
            _ => Err(AuthError::Unauthorized("wrong username or password".to_owned())),
        }
    }

    /// `POST /v1/auth/refresh`: rotates the token and answers a new pair in the same family.
    pub async fn refresh(&self, presented: &str) -> Result<Issued, AuthError> {
        let invalid = || AuthError::Unauthorized("the refresh token is invalid, expired or revoked".to_owned());
        if !presented.starts_with(REFRESH_PREFIX) {
            return Err(invalid());
        }
        let replacement_token = new_refresh_token();
        let now = now_millis();
        // The family is the presented token's; the store keeps it on rotation.
        let replacement = crate::meta::RefreshToken {
            digest: digest(&replacement_token),
            family: String::new(),
            username: String::new(),
            issued_at: now,
            expires_at: now + millis(self.config.refresh_ttl),
        };
        match self.store.rotate_refresh_token(&digest(presented), now, &replacement).await.map_err(meta)? {
            crate::meta::RefreshOutcome::Rotated { username, family } => {
                let principal = self.principal_for_refresh(&username, &family).await?.ok_or_else(invalid)?;
                Ok(Issued {
                    access_token: self.access_token(&principal)?,
                    expires_in: self.config.access_ttl.as_secs(),
                    refresh_token: replacement_token,
                })
            }
            crate::meta::RefreshOutcome::Reused => {
                tracing::warn!("a spent refresh token was presented again; its family is revoked");
                Err(invalid())
            }
            crate::meta::RefreshOutcome::Invalid => Err(invalid()),
        }
    }

    /// Who a refresh family belongs to: the user or the API key its name binds it to (see
    /// [`refresh_family`]), if they still exist. A family of an older format names neither: it is
    /// refused, so its holder logs in again.
    async fn principal_for_refresh(&self, owner: &str, family: &str) -> Result<Option<Principal>, AuthError> {
        if let Some((id, _)) = family.strip_prefix("api_key:").and_then(|rest| rest.rsplit_once(':')) {
            return Ok(self.key_by_id(id).await?.filter(|g| g.owner == owner).map(|g| key_principal(&g)));
        }
        if let Some((user_id, _)) = family.strip_prefix("user:").and_then(|rest| rest.rsplit_once(':')) {
            return Ok(self.user_by_id(user_id).await?.filter(|(name, _)| name == owner).map(|(username, role)| {
                Principal {
                    owner: username.clone(),
                    subject: username,
                    owner_id: Some(user_id.to_owned()),
                    kind: PrincipalKind::User,
                    role,
                    scopes: None,
                }
            }));
        }
        Ok(None)
    }

    pub async fn revoke(&self, presented: &str) -> Result<(), AuthError> {
        self.store.revoke_refresh_family(&digest(presented)).await.map_err(meta)?;
        Ok(())
    }

    /// The principal of a bearer token, or 401.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let unauthorized = |why: &str| AuthError::Unauthorized(why.to_owned());
        if token.starts_with(API_KEY_PREFIX) {
            let grant =
                self.key_by_digest(&digest(token)).await?.ok_or_else(|| unauthorized("unknown or revoked API key"))?;
            return Ok(key_principal(&grant));
        }
        if let Some(claims) = self.cache.verified_token(token, now_secs()) {
            return self.check_claims(&claims).await;
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthorized("malformed token"))?;
        if header.alg == Algorithm::HS256 {
            let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
                .map_err(|e| unauthorized(&format!("invalid token: {}", token_error::describe(&e, token))))?;
            let claims = Arc::new(data.claims);
            let principal = self.check_claims(&claims).await?;
            self.cache.remember_token(token, claims);
            return Ok(principal);
        }
        for (issuer, key, validation) in &self.external {
            if issuer.algorithm != header.alg {
                continue;
            }
            if let Ok(data) = jsonwebtoken::decode::<ExternalClaims>(token, key, validation) {
                let c = data.claims;
                return Ok(Principal {
                    owner: c.sub.clone(),
                    owner_id: None,
                    subject: c.sub,
                    kind: PrincipalKind::External,
                    role: c.role.unwrap_or(Role::Member),
                    scopes: Some(c.scopes.unwrap_or_default().into()),
                });
            }
        }
        Err(unauthorized("invalid token"))
    }

    /// Our own token: its subject must still exist, so deleting a user or key ends its tokens.
    /// A user is found by the immutable id in `sub`, so a token of a deleted user never works
    /// again, even for a later user of the same name; the role comes from the store.
    async fn check_claims(&self, c: &Claims) -> Result<Principal, AuthError> {
        let gone = || AuthError::Unauthorized("the token's subject no longer exists".to_owned());
        match c.kind {
            PrincipalKind::User => {
                let (username, role) = self.user_by_id(&c.sub).await?.ok_or_else(gone)?;
                let scopes = c.scopes.clone().map(Into::into);
                Ok(Principal {
                    owner: username.clone(),
                    subject: username,
                    owner_id: Some(c.sub.clone()),
                    kind: PrincipalKind::User,
                    role,
                    scopes,
                })
            }
            PrincipalKind::ApiKey => {
                let grant = self.key_by_id(&c.sub).await?.ok_or_else(gone)?;
                Ok(key_principal(&grant))
            }
            PrincipalKind::External => Err(AuthError::Unauthorized("invalid token".to_owned())),
        }
    }

    /// The name and role of the user with this id, from the cache or the store.
    async fn user_by_id(&self, id: &str) -> Result<Option<(String, Role)>, AuthError> {
        let load = async { Ok(self.store.user_by_id(id).await.map_err(meta)?.map(|u| (u.username, u.role))) };
        self.cache.user(id, load).await
    }

    /// A key grants its owner's role only while the owner is the very user who created it.
    async fn grant(&self, key: Option<ApiKey>) -> Result<Option<KeyGrant>, AuthError> {
        let Some(key) = key else { return Ok(None) };
        let owner = self.user_by_id(&key.owner_id).await?;
        let Some((_, owner_role)) = owner.filter(|(name, _)| *name == key.owner) else { return Ok(None) };
        Ok(Some(KeyGrant {
            id: key.id,
            owner: key.owner,
            owner_id: key.owner_id,
            owner_role,
            scopes: key.scopes.into(),
            expires_at: key.expires_at,
        }))
    }

    fn live(grant: Option<KeyGrant>) -> Option<KeyGrant> {
        grant.filter(|g| g.expires_at.is_none_or(|at| at > now_millis()))
    }

    async fn key_by_digest(&self, d: &Digest) -> Result<Option<KeyGrant>, AuthError> {
        let load = async { self.grant(self.store.api_key_by_digest(d).await.map_err(meta)?).await };
        Ok(Self::live(self.cache.key_by_digest(d, load).await?))
    }

    async fn key_by_id(&self, id: &str) -> Result<Option<KeyGrant>, AuthError> {
        let load = async { self.grant(self.store.api_key(id).await.map_err(meta)?).await };
        Ok(Self::live(self.cache.key_by_id(id, load).await?))
    }

    /// Creates a user; `Conflict` when the name is taken.
    pub async fn create_user(&self, username: &str, password: &str, role: Role) -> Result<User, AuthError> {
        let password = password.to_owned();
        let password_hash = self.passwords.run(move || hash_password(&password)).await??;
        let user =
            User { id: new_user_id(), username: username.to_owned(), password_hash, role, created_at: now_millis() };
        self.store.create_user(&user).await.map_err(meta)?;
        self.forget(&Invalidation::User(username.to_owned()));
        Ok(user)
    }

    /// Deletes a user with their keys and refresh tokens; their tokens stop working at once.
    pub async fn delete_user(&self, username: &str) -> Result<bool, AuthError> {
        let deleted = self.store.delete_user(username).await.map_err(meta)?;
        self.forget(&Invalidation::User(username.to_owned()));
        Ok(deleted)
    }

    /// Deletes a key; it stops working at once.
    pub async fn delete_api_key(&self, id: &str) -> Result<bool, AuthError> {
        let deleted = self.store.delete_api_key(id).await.map_err(meta)?;
        self.forget(&Invalidation::ApiKey(id.to_owned()));
        Ok(deleted)
    }

    /// Forgets what this node or another one changed, so a deletion takes effect at once.
    pub fn forget(&self, what: &Invalidation) {
        self.cache.forget(what);
    }

    /// The API key named by an `api_key` login, as a principal.
    pub async fn login_with_key(&self, key: &str) -> Result<Principal, AuthError> {
        if !key.starts_with(API_KEY_PREFIX) {
            return Err(AuthError::Unauthorized("not an API key".to_owned()));
        }
        self.authenticate(key).await
    }
}

fn key_principal(grant: &KeyGrant) -> Principal {
    Principal {
        owner: grant.owner.clone(),
        owner_id: Some(grant.owner_id.clone()),
        subject: grant.id.clone(),
        kind: PrincipalKind::ApiKey,
        role: grant.owner_role,
        scopes: Some(grant.scopes.clone()),
    }
}

/// A new refresh family, named after what it is bound to: `user:{user id}:{random}` for a
/// password login, `api_key:{key id}:{random}` for an API key login (a refresh answers that key's
/// scopes, and nothing once it is deleted). A refresh checks that this user or key still exists.
fn refresh_family(principal: &Principal) -> Result<String, AuthError> {
    let id = b64(&random_bytes::<12>());
    match (principal.kind, &principal.owner_id) {
        (PrincipalKind::ApiKey, _) => Ok(format!("api_key:{}:{id}", principal.subject)),
        (PrincipalKind::User, Some(user_id)) => Ok(format!("user:{user_id}:{id}")),
        (PrincipalKind::User, None) | (PrincipalKind::External, _) => {
            Err(AuthError::Internal("only Depot users and API keys get refresh tokens".to_owned()))
        }
    }
}

fn millis(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
