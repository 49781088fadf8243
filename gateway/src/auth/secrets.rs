//! Secrets and ids: API keys, refresh tokens, generated passwords and JWT secrets, their digests,
//! and password hashing.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest as _, Sha256};

use super::AuthError;
use crate::meta::{Digest, Millis};

pub const API_KEY_PREFIX: &str = "dk_";
pub const REFRESH_PREFIX: &str = "drt_";

pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// Whole seconds since the Unix epoch, as tokens' `exp`, `iat` and `nbf` count them.
pub(super) fn now_secs() -> u64 {
    u64::try_from(now_millis() / 1000).unwrap_or(0)
}

pub(super) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

pub(super) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of a secret: keys and refresh tokens are 256 random bits, so a fast hash suffices.
pub fn digest(secret: &str) -> Digest {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new API key: the secret shown once, and the public id.
pub fn new_api_key() -> (String, String) {
    (format!("{API_KEY_PREFIX}{}", b64(&random_bytes::<32>())), format!("key_{}", b64(&random_bytes::<9>())))
}

pub fn new_refresh_token() -> String {
    format!("{REFRESH_PREFIX}{}", b64(&random_bytes::<32>()))
}

/// A random password for `depot dev`'s first start: 24 URL-safe characters.
pub fn generate_password() -> String {
    b64(&random_bytes::<18>())
}

/// A random HS256 secret.
pub fn generate_secret() -> Vec<u8> {
    random_bytes::<32>().to_vec()
}

/// argon2id with the crate's defaults (19 MiB, 2 passes). CPU-heavy: call off the runtime.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).map_err(|e| AuthError::Internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(format!("hashing a password: {e}")))
}

pub(super) fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A new user id: random, so never one a deleted user had.
pub fn new_user_id() -> String {
    format!("usr_{}", b64(&random_bytes::<12>()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_their_prefix_and_differ() {
        let (a, id_a) = new_api_key();
        let (b, id_b) = new_api_key();
        assert!(a.starts_with("dk_") && id_a.starts_with("key_"));
        assert_ne!(a, b);
        assert_ne!(id_a, id_b);
        assert!(new_refresh_token().starts_with("drt_"));
        assert_ne!(digest(&a), digest(&b));
    }

    #[test]
    fn passwords_verify_only_with_the_right_one() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }
}
