//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): a secret is `whsec_` and
//! the standard base64 of the key bytes; a signature is `v1,` and the standard base64 of
//! HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}"); while a rotated secret is still
//! valid, the `webhook-signature` header carries one signature per key, space-separated, and a
//! receiver accepts the delivery when any of them matches its secret.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

/// The prefix every secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// Key lengths accepted from users, in bytes (API.md: 24-64).
pub const MIN_KEY_BYTES: usize = 24;
pub const MAX_KEY_BYTES: usize = 64;
/// The key length of a generated secret, in bytes.
const GENERATED_KEY_BYTES: usize = 32;

/// A fresh secret: `whsec_` and the standard base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut key = [0u8; GENERATED_KEY_BYTES];
    rand::rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The key bytes of a secret, or a message fit for a 400 answer (it never repeats the secret).
pub fn parse_secret(s: &str) -> Result<Vec<u8>, String> {
    let Some(encoded) = s.strip_prefix(SECRET_PREFIX) else {
        return Err(format!("the secret must start with `{SECRET_PREFIX}`"));
    };
    let key =
        STANDARD.decode(encoded).map_err(|_| format!("the secret after `{SECRET_PREFIX}` must be standard base64"))?;
    if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
        return Err(format!("the secret must encode {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, not {}", key.len()));
    }
    Ok(key)
}

/// The `webhook-signature` header: one `v1,<base64>` per key, space-separated, in the order
/// of `keys` (the current secret first, by convention). `timestamp` is Unix seconds, the value
/// sent as `webhook-timestamp`.
pub fn signature_header(id: &str, timestamp: i64, body: &[u8], keys: &[&[u8]]) -> String {
    let signatures: Vec<String> =
        keys.iter().map(|key| format!("v1,{}", STANDARD.encode(sign(key, id, timestamp, body)))).collect();
    signatures.join(" ")
}

fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail; the fallback keeps it panic-free.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// What reads show of a secret: its last 4 characters.
pub fn secret_hint(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The published test vector of the Standard Webhooks reference libraries
    /// (standard-webhooks/standard-webhooks, `libraries/python/tests/test_webhooks.py`,
    /// `test_sign_function`; the other libraries' tests use the same values).
    #[test]
    fn reproduces_the_standard_webhooks_test_vector() {
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let header = signature_header("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#, &[&key]);
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn several_keys_sign_space_separated_in_order() {
        let first = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let second = parse_secret(&generate_secret()).unwrap();
        let body = b"payload";
        let both = signature_header("msg_1", 1700000000, body, &[&first, &second]);
        let one = signature_header("msg_1", 1700000000, body, &[&first]);
        let other = signature_header("msg_1", 1700000000, body, &[&second]);
        assert_eq!(both, format!("{one} {other}"));
        assert_ne!(one, other);
        assert_eq!(signature_header("msg_1", 1700000000, body, &[]), "");
    }

    #[test]
    fn the_signature_covers_id_timestamp_and_body() {
        let key = parse_secret(&generate_secret()).unwrap();
        let base = signature_header("msg_1", 1700000000, b"a", &[&key]);
        assert_ne!(base, signature_header("msg_2", 1700000000, b"a", &[&key]));
        assert_ne!(base, signature_header("msg_1", 1700000001, b"a", &[&key]));
        assert_ne!(base, signature_header("msg_1", 1700000000, b"b", &[&key]));
    }

    #[test]
    fn generated_secrets_are_fresh_32_byte_keys() {
        let a = generate_secret();
        let b = generate_secret();
        assert!(a.starts_with("whsec_"));
        assert_eq!(parse_secret(&a).unwrap().len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn parse_secret_refuses_what_is_not_a_secret() {
        let with_len = |n: usize| format!("whsec_{}", STANDARD.encode(vec![7u8; n]));
        assert_eq!(parse_secret(&with_len(24)).unwrap().len(), 24);
        assert_eq!(parse_secret(&with_len(64)).unwrap().len(), 64);
        for bad in [
            with_len(23),
            with_len(65),
            with_len(0),
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
            "whsec_not base64!".to_string(),
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS".to_string(),
            "whsec_".to_string(),
            String::new(),
            "whsec_\u{e9}\u{e9}".to_string(),
        ] {
            let err = parse_secret(&bad).unwrap_err();
            assert!(err.contains("secret"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_hint_is_the_last_four_characters() {
        assert_eq!(secret_hint("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "LaSw");
        assert_eq!(secret_hint("abc"), "abc");
        assert_eq!(secret_hint(""), "");
        assert_eq!(secret_hint("x\u{e9}\u{e9}\u{e9}\u{e9}"), "\u{e9}\u{e9}\u{e9}\u{e9}");
    }
}
