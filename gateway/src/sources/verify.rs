//! Signature checks for incoming webhooks, one per sender scheme, each over the raw body bytes.
//!
//! | scheme | headers | signed content | encoding |
//! |---|---|---|---|
//! | `github` | `x-hub-signature-256: sha256=<sig>` | body | hex |
//! | `stripe` | `stripe-signature: t=<unix s>,v1=<sig>[,v1=...]` | `{t}.{body}` | hex |
//! | `shopify` | `x-shopify-hmac-sha256: <sig>` | body | base64 |
//! | `standard_webhooks` | `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<sig> ...` | `{id}.{timestamp}.{body}` | base64 |
//! | `hmac_sha256` | the configured header: `[sha256=]<sig>` | body | hex |
//!
//! Every signature is HMAC-SHA256, compared in constant time ([`Mac::verify_slice`]). The key is
//! the secret's bytes as given, except for `standard_webhooks`, whose secret is `whsec_` and the
//! base64 of the key. Schemes that sign a timestamp (`stripe`, `standard_webhooks`) also refuse
//! a delivery whose timestamp is more than `tolerance_ms` away from now, either way, so a
//! captured delivery cannot be replayed later. The signature is checked before the timestamp:
//! only a genuine delivery is ever told that it is stale.
//!
//! Secrets never appear in errors or `Debug` output.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The longest secret accepted, in characters (as the OpenAPI document counts them).
pub const MAX_SECRET_CHARS: usize = 1024;
/// The timestamp tolerance when the config names none, in milliseconds (API.md).
pub const DEFAULT_TOLERANCE_MS: u64 = 300_000;
/// The bounds of `tolerance_ms`: one second to one day.
pub const MIN_TOLERANCE_MS: u64 = 1_000;
pub const MAX_TOLERANCE_MS: u64 = 86_400_000;

/// The prefix of a Standard Webhooks secret; the rest is the standard base64 of the key.
const WHSEC_PREFIX: &str = "whsec_";
/// The prefix GitHub puts before its hex signature, optional for `hmac_sha256`.
const SHA256_PREFIX: &str = "sha256=";

const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
const STRIPE_SIGNATURE: &str = "stripe-signature";
const SHOPIFY_SIGNATURE: &str = "x-shopify-hmac-sha256";
const WEBHOOK_ID: &str = "webhook-id";
const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
const WEBHOOK_SIGNATURE: &str = "webhook-signature";
const SVIX_ID: &str = "svix-id";
const SVIX_TIMESTAMP: &str = "svix-timestamp";
const SVIX_SIGNATURE: &str = "svix-signature";

/// How a sender signs its deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    Github,
    Stripe,
    Shopify,
    StandardWebhooks,
    HmacSha256,
}

impl Scheme {
    pub const ALL: [Scheme; 5] =
        [Scheme::Github, Scheme::Stripe, Scheme::Shopify, Scheme::StandardWebhooks, Scheme::HmacSha256];

    /// The scheme named `s` in a source's config (exact, lower-case).
    pub fn parse(s: &str) -> Option<Scheme> {
        Scheme::ALL.into_iter().find(|scheme| scheme.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Github => "github",
            Scheme::Stripe => "stripe",
            Scheme::Shopify => "shopify",
            Scheme::StandardWebhooks => "standard_webhooks",
            Scheme::HmacSha256 => "hmac_sha256",
        }
    }

    /// The headers whose value is the sender's delivery id, the first one present used as the
    /// Idempotency-Key by default. Stripe sends none: its event's `id` is in the body.
    pub fn default_idempotency_headers(self) -> &'static [&'static str] {
        match self {
            Scheme::Github => &["x-github-delivery"],
            Scheme::StandardWebhooks => &[WEBHOOK_ID, SVIX_ID],
            Scheme::Shopify => &["x-shopify-webhook-id"],
            Scheme::Stripe | Scheme::HmacSha256 => &[],
        }
    }

    fn signs_timestamp(self) -> bool {
        matches!(self, Scheme::Stripe | Scheme::StandardWebhooks)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a delivery was refused. The messages describe the request, never the secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the `{0}` header is missing")]
    MissingHeader(String),
    #[error("malformed signature: {0}")]
    Malformed(String),
    #[error("the signature does not match the body")]
    BadSignature,
    #[error("the signed timestamp is {age_ms} ms old, more than the source's tolerance")]
    Stale { age_ms: i64 },
    #[error("the signed timestamp is {ahead_ms} ms ahead of the server's clock, more than the source's tolerance")]
    Future { ahead_ms: i64 },
}

impl Refusal {
    /// A stable reason label for metrics and the problem's code: "missing_signature",
    /// "malformed_signature", "bad_signature", "stale_timestamp" (for both stale and future).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::MissingHeader(_) => "missing_signature",
            Refusal::Malformed(_) => "malformed_signature",
            Refusal::BadSignature => "bad_signature",
            Refusal::Stale { .. } | Refusal::Future { .. } => "stale_timestamp",
        }
    }
}

/// A source's signature check: the scheme, its key and settings, validated once by [`Verifier::new`].
#[derive(Clone)]
pub struct Verifier {
    pub scheme: Scheme,
    /// The HMAC key: the secret's bytes, or for `standard_webhooks` the decoded key.
    key: Vec<u8>,
    /// For `hmac_sha256`: the header that carries the signature, lower-case.
    pub header: Option<String>,
    /// How far a signed timestamp may be from now, either way (`stripe`, `standard_webhooks`).
    pub tolerance_ms: u64,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field("key", &"<redacted>")
            .field("header", &self.header)
            .field("tolerance_ms", &self.tolerance_ms)
            .finish()
    }
}

impl Verifier {
    /// Checks the config and builds the verifier; Err is a message fit for a 400 answer.
    ///
    /// - `secret`: 1 to [`MAX_SECRET_CHARS`] characters. For `standard_webhooks` it is `whsec_` and the
    ///   standard base64 of the key. The sender generates that key, and the specification only
    ///   recommends 24 to 64 bytes, so any non-empty key is taken: refusing a sender's
    ///   unusual but valid key would leave its deliveries with nowhere to go.
    /// - `header`: required for `hmac_sha256` (an HTTP field name, stored lower-case) and refused
    ///   for the other schemes, whose headers are fixed.
    /// - `tolerance_ms`: [`MIN_TOLERANCE_MS`]..=[`MAX_TOLERANCE_MS`], default
    ///   [`DEFAULT_TOLERANCE_MS`]; schemes without a signed timestamp keep it but do not use it.
    pub fn new(
        scheme: Scheme,
        secret: &str,
        header: Option<&str>,
        tolerance_ms: Option<u64>,
    ) -> Result<Verifier, String> {
        if secret.is_empty() {
            return Err("the secret must not be empty".to_owned());
        }
        let chars = secret.chars().count();
        if chars > MAX_SECRET_CHARS {
            return Err(format!("the secret must be at most {MAX_SECRET_CHARS} characters, not {chars}"));
        }
        let key = match scheme {
            Scheme::StandardWebhooks => standard_webhooks_key(secret)?,
            Scheme::Github | Scheme::Stripe | Scheme::Shopify | Scheme::HmacSha256 => secret.as_bytes().to_vec(),
        };
        let header = match (scheme, header) {
            (Scheme::HmacSha256, Some(name)) if is_field_name(name) => Some(name.to_ascii_lowercase()),
            (Scheme::HmacSha256, Some(_)) => {
                return Err("`header` must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)".to_owned())
            }
            (Scheme::HmacSha256, None) => return Err("the hmac_sha256 scheme needs `header`".to_owned()),
            (_, Some(_)) => return Err(format!("`header` applies only to hmac_sha256, not to {scheme}")),
            (_, None) => None,
        };
        let tolerance_ms = tolerance_ms.unwrap_or(DEFAULT_TOLERANCE_MS);
        if !(MIN_TOLERANCE_MS..=MAX_TOLERANCE_MS).contains(&tolerance_ms) {
            return Err(format!("`tolerance_ms` must be {MIN_TOLERANCE_MS} to {MAX_TOLERANCE_MS}, not {tolerance_ms}"));
        }
        Ok(Verifier { scheme, key, header, tolerance_ms })
    }

    /// Verifies `body` (raw bytes) given a header lookup (lower-case names) and the current unix
    /// time in ms.
    pub fn verify(&self, header: &dyn Fn(&str) -> Option<String>, body: &[u8], now_ms: i64) -> Result<(), Refusal> {
        let required = |name: &str| -> Result<String, Refusal> {
            header(name).map(|value| value.trim().to_owned()).ok_or_else(|| Refusal::MissingHeader(name.to_owned()))
        };
        let timestamp_s = match self.scheme {
            Scheme::Github => {
                let value = required(GITHUB_SIGNATURE)?;
                let Some(hex) = value.strip_prefix(SHA256_PREFIX) else {
                    return Err(Refusal::Malformed(format!("`{GITHUB_SIGNATURE}` must start with `{SHA256_PREFIX}`")));
                };
                self.check(&[body], &[decode_hex(GITHUB_SIGNATURE, hex)?])?;
                None
            }
            Scheme::Stripe => {
                let value = required(STRIPE_SIGNATURE)?;
                let (timestamp, signatures) = parse_stripe(&value)?;
                let timestamp_s = parse_timestamp(STRIPE_SIGNATURE, timestamp)?;
                self.check(&[timestamp.as_bytes(), b".", body], &signatures)?;
                Some(timestamp_s)
            }
            Scheme::Shopify => {
                let value = required(SHOPIFY_SIGNATURE)?;
                self.check(&[body], &[decode_base64(SHOPIFY_SIGNATURE, &value)?])?;
                None
            }
            Scheme::StandardWebhooks => {
                // Svix, the specification's origin, sends the same three under `svix-` names
                // unless its sender has the unbranded ones.
                let either =
                    |name: &str, svix: &str| required(name).or_else(|missing| required(svix).map_err(|_| missing));
                let id = either(WEBHOOK_ID, SVIX_ID)?;
                let timestamp = either(WEBHOOK_TIMESTAMP, SVIX_TIMESTAMP)?;
                let value = either(WEBHOOK_SIGNATURE, SVIX_SIGNATURE)?;
                let timestamp_s = parse_timestamp(WEBHOOK_TIMESTAMP, &timestamp)?;
                let signatures = parse_standard_webhooks(&value)?;
                self.check(&[id.as_bytes(), b".", timestamp.as_bytes(), b".", body], &signatures)?;
                Some(timestamp_s)
            }
            Scheme::HmacSha256 => {
                // `new` guarantees the header for this scheme; an absent one can only match nothing.
                let name = self.header.as_deref().unwrap_or_default();
                let value = required(name)?;
                let hex = value.strip_prefix(SHA256_PREFIX).unwrap_or(&value);
                self.check(&[body], &[decode_hex(name, hex)?])?;
                None
            }
        };
        debug_assert_eq!(timestamp_s.is_some(), self.scheme.signs_timestamp());
        match timestamp_s {
            Some(timestamp_s) => self.check_fresh(timestamp_s, now_ms),
            None => Ok(()),
        }
    }

    /// Ok when any of `signatures` is HMAC-SHA256(key, concatenated `parts`).
    fn check(&self, parts: &[&[u8]], signatures: &[Vec<u8>]) -> Result<(), Refusal> {
        // HMAC takes keys of any length, and `new` refuses empty ones, so this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.key).map_err(|_| Refusal::BadSignature)?;
        for part in parts {
            mac.update(part);
        }
        // `verify_slice` compares in constant time; only which candidate matched can leak.
        if signatures.iter().any(|signature| mac.clone().verify_slice(signature).is_ok()) {
            Ok(())
        } else {
            Err(Refusal::BadSignature)
        }
    }

    fn check_fresh(&self, timestamp_s: i64, now_ms: i64) -> Result<(), Refusal> {
        let age_ms = now_ms.saturating_sub(timestamp_s.saturating_mul(1000));
        // At most a day (MAX_TOLERANCE_MS), so it fits.
        let tolerance = i64::try_from(self.tolerance_ms).unwrap_or(i64::MAX);
        if age_ms > tolerance {
            Err(Refusal::Stale { age_ms })
        } else if age_ms < -tolerance {
            Err(Refusal::Future { ahead_ms: age_ms.saturating_neg() })
        } else {
            Ok(())
        }
    }
}

/// The key of a `whsec_` secret.
fn standard_webhooks_key(secret: &str) -> Result<Vec<u8>, String> {
    let Some(encoded) = secret.strip_prefix(WHSEC_PREFIX) else {
        return Err(format!("a standard_webhooks secret must start with `{WHSEC_PREFIX}`"));
    };
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| format!("a standard_webhooks secret must be `{WHSEC_PREFIX}` and standard base64"))?;
    if key.is_empty() {
        return Err(format!("a standard_webhooks secret must encode a key after `{WHSEC_PREFIX}`"));
    }
    Ok(key)
}

/// `t=<timestamp>` and the decoded `v1` signatures of a `Stripe-Signature` value. Other
/// schemes (`v0`, test-mode signatures) are skipped: only `v1` is an HMAC-SHA256 of the secret.
fn parse_stripe(value: &str) -> Result<(&str, Vec<Vec<u8>>), Refusal> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in value.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            return Err(Refusal::Malformed(format!("`{STRIPE_SIGNATURE}` items must be key=value")));
        };
        match key {
            "t" if timestamp.is_some() => {
                return Err(Refusal::Malformed(format!("`{STRIPE_SIGNATURE}` has more than one t=")))
            }
            "t" => timestamp = Some(value),
            "v1" => signatures.push(decode_hex(STRIPE_SIGNATURE, value)?),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return Err(Refusal::Malformed(format!("`{STRIPE_SIGNATURE}` has no t= timestamp")));
    };
    if signatures.is_empty() {
        return Err(Refusal::Malformed(format!("`{STRIPE_SIGNATURE}` has no v1= signature")));
    }
    Ok((timestamp, signatures))
}

/// The decoded `v1` signatures of a `webhook-signature` value: space-separated
/// `<version>,<base64>` entries. Other versions (`v1a`, asymmetric) are skipped.
fn parse_standard_webhooks(value: &str) -> Result<Vec<Vec<u8>>, Refusal> {
    let mut signatures = Vec::new();
    for entry in value.split_ascii_whitespace() {
        let Some((version, signature)) = entry.split_once(',') else {
            return Err(Refusal::Malformed(format!("`{WEBHOOK_SIGNATURE}` entries must be <version>,<signature>")));
        };
        if version == "v1" {
            signatures.push(decode_base64(WEBHOOK_SIGNATURE, signature)?);
        }
    }
    if signatures.is_empty() {
        return Err(Refusal::Malformed(format!("`{WEBHOOK_SIGNATURE}` has no v1 signature")));
    }
    Ok(signatures)
}

/// Unix seconds, as decimal digits.
fn parse_timestamp(header: &str, value: &str) -> Result<i64, Refusal> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::Malformed(format!("the timestamp in `{header}` must be unix seconds")));
    }
    value.parse().map_err(|_| Refusal::Malformed(format!("the timestamp in `{header}` is out of range")))
}

/// Hex digits of either case, two per byte.
fn decode_hex(header: &str, hex: &str) -> Result<Vec<u8>, Refusal> {
    let malformed = || Refusal::Malformed(format!("the signature in `{header}` must be hex"));
    let digit = |b: u8| -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    };
    let bytes = hex.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(2) {
        return Err(malformed());
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(malformed)
}

fn decode_base64(header: &str, value: &str) -> Result<Vec<u8>, Refusal> {
    STANDARD.decode(value).map_err(|_| Refusal::Malformed(format!("the signature in `{header}` must be base64")))
}

/// An HTTP field name (RFC 9110 `token`).
fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A header lookup over fixed `(lower-case name, value)` pairs.
    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
    }

    fn verify(v: &Verifier, pairs: &[(&str, &str)], body: &[u8], now_ms: i64) -> Result<(), Refusal> {
        v.verify(&headers(pairs), body, now_ms)
    }

    /// Any clock: the schemes without a timestamp ignore it.
    const NOW_MS: i64 = 1_750_000_000_000;

    // GitHub's published example ("Validating webhook deliveries", "Testing the webhook payload
    // validation", docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries).
    const GITHUB_SECRET: &str = "It's a Secret to Everybody";
    const GITHUB_BODY: &[u8] = b"Hello, World!";
    const GITHUB_SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    // The Standard Webhooks reference libraries' test vector (standard-webhooks/standard-webhooks,
    // libraries/python/tests/test_webhooks.py, `test_sign_function`; the other libraries share it).
    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TIMESTAMP: &str = "1614265330";
    const SW_NOW_MS: i64 = 1_614_265_330_000;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    /// Well-formed, but nobody's signature: 32 zero bytes.
    const SW_OTHER: &str = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    // Stripe and Shopify publish no fixed vector; these were computed with Python's standard
    // `hmac` module, independently of this code:
    //   hmac.new(b"whsec_test_secret", b"1700000000." + STRIPE_BODY, sha256).hexdigest()
    //   base64.b64encode(hmac.new(b"shopify-test-secret", SHOPIFY_BODY, sha256).digest())
    //   hmac.new(b"plain-shared-secret", HMAC_BODY, sha256).hexdigest()
    // (the integration test `source_verify` also checks signatures made by stripe-python).
    const STRIPE_SECRET: &str = "whsec_test_secret";
    const STRIPE_T: i64 = 1_700_000_000;
    const STRIPE_BODY: &[u8] = br#"{"id":"evt_test_webhook","object":"event"}"#;
    const STRIPE_V1: &str = "d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990";
    /// The same payload signed with `whsec_other_secret`.
    const STRIPE_V1_OTHER: &str = "6515ce04fde11c3c71436ee3c02aff501075a9f7d68e269fd397405848335f68";
    const SHOPIFY_SECRET: &str = "shopify-test-secret";
    const SHOPIFY_BODY: &[u8] = br#"{"id":820982911946154508,"email":"jon@example.com"}"#;
    const SHOPIFY_SIGNATURE: &str = "mNfrdp3JGPIAycLjYyaBMlDV8vLpLMGbKSueYfs6Poo=";
    const HMAC_SECRET: &str = "plain-shared-secret";
    const HMAC_BODY: &[u8] = br#"{"event":"ping"}"#;
    const HMAC_SIGNATURE: &str = "e671fc8c2fd4f074b0ef33eab70adf75fc327c95ef91ecd52cbb504bb3bae245";

    fn malformed(result: Result<(), Refusal>) -> bool {
        matches!(result, Err(Refusal::Malformed(_)))
    }

    #[test]
    fn github_accepts_its_published_example() {
        let v = Verifier::new(Scheme::Github, GITHUB_SECRET, None, None).unwrap();
        assert_eq!(verify(&v, &[("x-hub-signature-256", GITHUB_SIGNATURE)], GITHUB_BODY, NOW_MS), Ok(()));
        let upper = format!("sha256={}", GITHUB_SIGNATURE["sha256=".len()..].to_ascii_uppercase());
        assert_eq!(verify(&v, &[("x-hub-signature-256", &upper)], GITHUB_BODY, NOW_MS), Ok(()));
    }

    #[test]
    fn github_refuses_forgeries_and_malformed_headers() {
        let v = Verifier::new(Scheme::Github, GITHUB_SECRET, None, None).unwrap();
        let signed = [("x-hub-signature-256", GITHUB_SIGNATURE)];
        assert_eq!(verify(&v, &signed, b"Hello, World?", NOW_MS), Err(Refusal::BadSignature));
        let other = Verifier::new(Scheme::Github, "another secret", None, None).unwrap();
        assert_eq!(verify(&other, &signed, GITHUB_BODY, NOW_MS), Err(Refusal::BadSignature));
        assert_eq!(verify(&v, &[], GITHUB_BODY, NOW_MS), Err(Refusal::MissingHeader("x-hub-signature-256".to_owned())));
        let bare = &GITHUB_SIGNATURE["sha256=".len()..];
        assert!(malformed(verify(&v, &[("x-hub-signature-256", bare)], GITHUB_BODY, NOW_MS)));
        assert!(malformed(verify(&v, &[("x-hub-signature-256", "sha256=zz")], GITHUB_BODY, NOW_MS)));
        assert!(malformed(verify(&v, &[("x-hub-signature-256", "sha256=abc")], GITHUB_BODY, NOW_MS)));
        assert!(malformed(verify(&v, &[("x-hub-signature-256", "sha256=")], GITHUB_BODY, NOW_MS)));
        // Well-formed hex of the wrong length is simply not the signature.
        assert_eq!(
            verify(&v, &[("x-hub-signature-256", "sha256=abcd")], GITHUB_BODY, NOW_MS),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn standard_webhooks_accepts_the_reference_vector() {
        let v = Verifier::new(Scheme::StandardWebhooks, SW_SECRET, None, None).unwrap();
        let h = [("webhook-id", SW_ID), ("webhook-timestamp", SW_TIMESTAMP), ("webhook-signature", SW_SIGNATURE)];
        assert_eq!(verify(&v, &h, SW_BODY, SW_NOW_MS), Ok(()));
        // Svix's branded names carry the same signature.
        let svix = [("svix-id", SW_ID), ("svix-timestamp", SW_TIMESTAMP), ("svix-signature", SW_SIGNATURE)];
        assert_eq!(verify(&v, &svix, SW_BODY, SW_NOW_MS), Ok(()));
        assert_eq!(verify(&v, &svix[1..], SW_BODY, SW_NOW_MS), Err(Refusal::MissingHeader("webhook-id".to_owned())));
    }

    #[test]
    fn standard_webhooks_accepts_any_matching_v1_among_several() {
        let v = Verifier::new(Scheme::StandardWebhooks, SW_SECRET, None, None).unwrap();
        let several = format!("{SW_OTHER} v1a,c29tZXRoaW5nIGVsc2U= {SW_SIGNATURE}");
        let h = [("webhook-id", SW_ID), ("webhook-timestamp", SW_TIMESTAMP), ("webhook-signature", &several)];
        assert_eq!(verify(&v, &h, SW_BODY, SW_NOW_MS), Ok(()));
        let none = format!("{SW_OTHER} v1a,c29tZXRoaW5nIGVsc2U=");
        let h = [("webhook-id", SW_ID), ("webhook-timestamp", SW_TIMESTAMP), ("webhook-signature", &none)];
        assert_eq!(verify(&v, &h, SW_BODY, SW_NOW_MS), Err(Refusal::BadSignature));
    }

    #[test]
    fn standard_webhooks_refuses_forgeries() {
        let v = Verifier::new(Scheme::StandardWebhooks, SW_SECRET, None, None).unwrap();
        let h = [("webhook-id", SW_ID), ("webhook-timestamp", SW_TIMESTAMP), ("webhook-signature", SW_SIGNATURE)];
        assert_eq!(verify(&v, &h, br#"{"test": 2432232315}"#, SW_NOW_MS), Err(Refusal::BadSignature));
        let other =
            Verifier::new(Scheme::StandardWebhooks, "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", None, None).unwrap();
        assert_eq!(verify(&other, &h, SW_BODY, SW_NOW_MS), Err(Refusal::BadSignature));
        // The id and the timestamp are signed too.
        let h = [("webhook-id", "msg_other"), ("webhook-timestamp", SW_TIMESTAMP), ("webhook-signature", SW_SIGNATURE)];
        assert_eq!(verify(&v, &h, SW_BODY, SW_NOW_MS), Err(Refusal::BadSignature));
        let h = [("webhook-id", SW_ID), ("webhook-timestamp", "1614265331"), ("webhook-signature", SW_SIGNATURE)];
        assert_eq!(verify(&v, &h, SW_BODY, SW_NOW_MS), Err(Refusal::BadSignature));
    }

    #[test]
    fn standard_webhooks_names_each_missing_header() {
        let v = Verifier::new(Scheme::StandardWebhooks, SW_SECRET, None, None).unwrap();
        let all = [("webhook-id", SW_ID), ("webhook-timestamp", SW_TIMESTAMP), ("webhook-signature", SW_SIGNATURE)];
        for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            let h: Vec<(&str, &str)> = all.iter().copied().filter(|(name, _)| *name != missing).collect();
            assert_eq!(verify(&v, &h, SW_BODY, SW_NOW_MS), Err(Refusal::MissingHeader(missing.to_owned())));
        }
    }

    #[test]
    fn standard_webhooks_refuses_malformed_headers() {
        let v = Verifier::new(Scheme::StandardWebhooks, SW_SECRET, None, None).unwrap();
        for (timestamp, signature) in [
            (SW_TIMESTAMP, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            (SW_TIMESTAMP, "v1,not*base64"),
            (SW_TIMESTAMP, "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            (SW_TIMESTAMP, ""),
            ("1614265330.5", SW_SIGNATURE),
            ("-1614265330", SW_SIGNATURE),
            ("soon", SW_SIGNATURE),
            ("99999999999999999999999", SW_SIGNATURE),
        ] {
            let h = [("webhook-id", SW_ID), ("webhook-timestamp", timestamp), ("webhook-signature", signature)];
            assert!(malformed(verify(&v, &h, SW_BODY, SW_NOW_MS)), "{timestamp:?} {signature:?}");
        }
    }

    #[test]
    fn standard_webhooks_refuses_timestamps_beyond_the_tolerance() {
        let v = Verifier::new(Scheme::StandardWebhooks, SW_SECRET, None, None).unwrap();
        let h = [("webhook-id", SW_ID), ("webhook-timestamp", SW_TIMESTAMP), ("webhook-signature", SW_SIGNATURE)];
        assert_eq!(verify(&v, &h, SW_BODY, SW_NOW_MS + 300_000), Ok(()));
        assert_eq!(verify(&v, &h, SW_BODY, SW_NOW_MS - 300_000), Ok(()));
        assert_eq!(verify(&v, &h, SW_BODY, SW_NOW_MS + 300_001), Err(Refusal::Stale { age_ms: 300_001 }));
        assert_eq!(verify(&v, &h, SW_BODY, SW_NOW_MS - 300_001), Err(Refusal::Future { ahead_ms: 300_001 }));
        let tight = Verifier::new(Scheme::StandardWebhooks, SW_SECRET, None, Some(1_000)).unwrap();
        assert_eq!(verify(&tight, &h, SW_BODY, SW_NOW_MS + 1_001), Err(Refusal::Stale { age_ms: 1_001 }));
    }

    fn stripe_header(t: i64, v1s: &[&str]) -> String {
        let mut header = format!("t={t}");
        for v1 in v1s {
            header.push_str(&format!(",v1={v1}"));
        }
        header
    }

    #[test]
    fn stripe_accepts_a_matching_v1() {
        let v = Verifier::new(Scheme::Stripe, STRIPE_SECRET, None, None).unwrap();
        let h = stripe_header(STRIPE_T, &[STRIPE_V1]);
        assert_eq!(verify(&v, &[("stripe-signature", &h)], STRIPE_BODY, STRIPE_T * 1000), Ok(()));
        // While a secret is rolled Stripe sends one v1 per secret, and v0 in test mode.
        let several = format!("t={STRIPE_T},v1={STRIPE_V1_OTHER},v1={STRIPE_V1},v0={STRIPE_V1_OTHER}");
        assert_eq!(verify(&v, &[("stripe-signature", &several)], STRIPE_BODY, STRIPE_T * 1000), Ok(()));
    }

    #[test]
    fn stripe_refuses_forgeries() {
        let v = Verifier::new(Scheme::Stripe, STRIPE_SECRET, None, None).unwrap();
        let now = STRIPE_T * 1000;
        let h = stripe_header(STRIPE_T, &[STRIPE_V1]);
        assert_eq!(verify(&v, &[("stripe-signature", &h)], b"{}", now), Err(Refusal::BadSignature));
        let other = Verifier::new(Scheme::Stripe, "whsec_wrong", None, None).unwrap();
        assert_eq!(verify(&other, &[("stripe-signature", &h)], STRIPE_BODY, now), Err(Refusal::BadSignature));
        // The timestamp is signed: moving it breaks the signature.
        let moved = stripe_header(STRIPE_T + 1, &[STRIPE_V1]);
        assert_eq!(verify(&v, &[("stripe-signature", &moved)], STRIPE_BODY, now), Err(Refusal::BadSignature));
        // A v0 alone is not accepted, even when it holds the right value.
        let v0 = format!("t={STRIPE_T},v0={STRIPE_V1}");
        assert!(malformed(verify(&v, &[("stripe-signature", &v0)], STRIPE_BODY, now)));
        let only_other = stripe_header(STRIPE_T, &[STRIPE_V1_OTHER]);
        assert_eq!(verify(&v, &[("stripe-signature", &only_other)], STRIPE_BODY, now), Err(Refusal::BadSignature));
    }

    #[test]
    fn stripe_refuses_missing_and_malformed_headers() {
        let v = Verifier::new(Scheme::Stripe, STRIPE_SECRET, None, None).unwrap();
        let now = STRIPE_T * 1000;
        assert_eq!(verify(&v, &[], STRIPE_BODY, now), Err(Refusal::MissingHeader("stripe-signature".to_owned())));
        for header in [
            format!("v1={STRIPE_V1}"),
            format!("t={STRIPE_T}"),
            format!("t={STRIPE_T},v1=not-hex"),
            format!("t={STRIPE_T},v1={}", &STRIPE_V1[1..]),
            format!("t=,v1={STRIPE_V1}"),
            format!("t=yesterday,v1={STRIPE_V1}"),
            format!("t={STRIPE_T},t={STRIPE_T},v1={STRIPE_V1}"),
            format!("t={STRIPE_T},{STRIPE_V1}"),
            String::new(),
        ] {
            assert!(malformed(verify(&v, &[("stripe-signature", &header)], STRIPE_BODY, now)), "{header:?}");
        }
    }

    #[test]
    fn stripe_refuses_timestamps_beyond_the_tolerance() {
        let v = Verifier::new(Scheme::Stripe, STRIPE_SECRET, None, Some(60_000)).unwrap();
        let h = stripe_header(STRIPE_T, &[STRIPE_V1]);
        let signed = [("stripe-signature", h.as_str())];
        let at = STRIPE_T * 1000;
        assert_eq!(verify(&v, &signed, STRIPE_BODY, at + 60_000), Ok(()));
        assert_eq!(verify(&v, &signed, STRIPE_BODY, at + 60_001), Err(Refusal::Stale { age_ms: 60_001 }));
        assert_eq!(verify(&v, &signed, STRIPE_BODY, at - 60_001), Err(Refusal::Future { ahead_ms: 60_001 }));
        // A forgery is told it is a forgery, whatever its timestamp.
        assert_eq!(verify(&v, &signed, b"{}", at + 3_600_000), Err(Refusal::BadSignature));
    }

    #[test]
    fn shopify_accepts_the_base64_hmac_of_the_body() {
        let v = Verifier::new(Scheme::Shopify, SHOPIFY_SECRET, None, None).unwrap();
        assert_eq!(verify(&v, &[("x-shopify-hmac-sha256", SHOPIFY_SIGNATURE)], SHOPIFY_BODY, NOW_MS), Ok(()));
    }

    #[test]
    fn shopify_refuses_forgeries_and_malformed_headers() {
        let v = Verifier::new(Scheme::Shopify, SHOPIFY_SECRET, None, None).unwrap();
        let signed = [("x-shopify-hmac-sha256", SHOPIFY_SIGNATURE)];
        assert_eq!(verify(&v, &signed, br#"{"id":1}"#, NOW_MS), Err(Refusal::BadSignature));
        let other = Verifier::new(Scheme::Shopify, "not-the-secret", None, None).unwrap();
        assert_eq!(verify(&other, &signed, SHOPIFY_BODY, NOW_MS), Err(Refusal::BadSignature));
        assert_eq!(
            verify(&v, &[], SHOPIFY_BODY, NOW_MS),
            Err(Refusal::MissingHeader("x-shopify-hmac-sha256".to_owned()))
        );
        assert!(malformed(verify(&v, &[("x-shopify-hmac-sha256", "not base64!")], SHOPIFY_BODY, NOW_MS)));
        // Shopify's signature is base64, not hex: the hex of the right HMAC is refused.
        let hex: String = STANDARD.decode(SHOPIFY_SIGNATURE).unwrap().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(verify(&v, &[("x-shopify-hmac-sha256", &hex)], SHOPIFY_BODY, NOW_MS), Err(Refusal::BadSignature));
    }

    #[test]
    fn hmac_sha256_reads_the_named_header_with_or_without_a_prefix() {
        let v = Verifier::new(Scheme::HmacSha256, HMAC_SECRET, Some("X-Signature"), None).unwrap();
        assert_eq!(v.header.as_deref(), Some("x-signature"));
        let prefixed = format!("sha256={HMAC_SIGNATURE}");
        let upper = HMAC_SIGNATURE.to_ascii_uppercase();
        for value in [HMAC_SIGNATURE, prefixed.as_str(), upper.as_str()] {
            assert_eq!(verify(&v, &[("x-signature", value)], HMAC_BODY, NOW_MS), Ok(()), "{value}");
        }
    }

    #[test]
    fn hmac_sha256_refuses_forgeries_and_malformed_headers() {
        let v = Verifier::new(Scheme::HmacSha256, HMAC_SECRET, Some("x-signature"), None).unwrap();
        assert_eq!(verify(&v, &[("x-signature", HMAC_SIGNATURE)], b"{}", NOW_MS), Err(Refusal::BadSignature));
        let other = Verifier::new(Scheme::HmacSha256, "other", Some("x-signature"), None).unwrap();
        assert_eq!(verify(&other, &[("x-signature", HMAC_SIGNATURE)], HMAC_BODY, NOW_MS), Err(Refusal::BadSignature));
        // Another header carrying the right value does not count.
        assert_eq!(
            verify(&v, &[("x-hub-signature-256", HMAC_SIGNATURE)], HMAC_BODY, NOW_MS),
            Err(Refusal::MissingHeader("x-signature".to_owned()))
        );
        assert!(malformed(verify(&v, &[("x-signature", "sha256=xyz")], HMAC_BODY, NOW_MS)));
        assert!(malformed(verify(&v, &[("x-signature", "")], HMAC_BODY, NOW_MS)));
    }

    #[test]
    fn new_checks_the_config() {
        let refused =
            |scheme, secret: &str, header, tolerance| Verifier::new(scheme, secret, header, tolerance).is_err();
        assert!(refused(Scheme::Github, "", None, None));
        assert!(refused(Scheme::Github, &"s".repeat(MAX_SECRET_CHARS + 1), None, None));
        assert!(!refused(Scheme::Github, &"s".repeat(MAX_SECRET_CHARS), None, None));
        assert!(!refused(Scheme::Github, &"é".repeat(MAX_SECRET_CHARS), None, None));
        assert!(refused(Scheme::StandardWebhooks, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", None, None));
        assert!(refused(Scheme::StandardWebhooks, "whsec_not base64!", None, None));
        assert!(refused(Scheme::StandardWebhooks, "whsec_", None, None));
        // Any non-empty key: the sender chose it.
        assert!(!refused(Scheme::StandardWebhooks, "whsec_AQ==", None, None));
        assert!(refused(Scheme::HmacSha256, "s", None, None));
        assert!(refused(Scheme::HmacSha256, "s", Some(""), None));
        assert!(refused(Scheme::HmacSha256, "s", Some("x signature"), None));
        assert!(refused(Scheme::HmacSha256, "s", Some("x-signature:"), None));
        assert!(refused(Scheme::Github, "s", Some("x-signature"), None));
        assert!(refused(Scheme::Stripe, "s", None, Some(MIN_TOLERANCE_MS - 1)));
        assert!(refused(Scheme::Stripe, "s", None, Some(MAX_TOLERANCE_MS + 1)));
        assert!(!refused(Scheme::Stripe, "s", None, Some(MIN_TOLERANCE_MS)));
        assert!(!refused(Scheme::Stripe, "s", None, Some(MAX_TOLERANCE_MS)));
        assert_eq!(Verifier::new(Scheme::Stripe, "s", None, None).unwrap().tolerance_ms, DEFAULT_TOLERANCE_MS);
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        for (scheme, secret, header) in [
            (Scheme::Github, GITHUB_SECRET, None),
            (Scheme::Stripe, STRIPE_SECRET, None),
            (Scheme::Shopify, SHOPIFY_SECRET, None),
            (Scheme::StandardWebhooks, SW_SECRET, None),
            (Scheme::HmacSha256, HMAC_SECRET, Some("x-signature")),
        ] {
            let v = Verifier::new(scheme, secret, header, None).unwrap();
            let debug = format!("{v:?}");
            assert!(!debug.contains(secret) && !debug.contains(&secret[secret.len() - 8..]), "{debug}");
            let refusal = verify(&v, &[], b"", NOW_MS).unwrap_err();
            assert!(!format!("{refusal} {refusal:?}").contains(secret));
        }
        let err = Verifier::new(Scheme::StandardWebhooks, "whsec_sekrit!!", None, None).unwrap_err();
        assert!(!err.contains("sekrit"), "{err}");
    }

    #[test]
    fn schemes_round_trip_their_names() {
        for scheme in Scheme::ALL {
            assert_eq!(Scheme::parse(scheme.as_str()), Some(scheme));
        }
        assert_eq!(Scheme::parse("GitHub"), None);
        assert_eq!(Scheme::parse("hmac-sha256"), None);
        assert_eq!(Scheme::Github.default_idempotency_headers(), ["x-github-delivery"]);
        assert_eq!(Scheme::StandardWebhooks.default_idempotency_headers(), ["webhook-id", "svix-id"]);
        assert_eq!(Scheme::Shopify.default_idempotency_headers(), ["x-shopify-webhook-id"]);
        assert!(Scheme::Stripe.default_idempotency_headers().is_empty());
    }

    #[test]
    fn refusals_have_stable_reasons() {
        assert_eq!(Refusal::MissingHeader("x".to_owned()).reason(), "missing_signature");
        assert_eq!(Refusal::Malformed("x".to_owned()).reason(), "malformed_signature");
        assert_eq!(Refusal::BadSignature.reason(), "bad_signature");
        assert_eq!(Refusal::Stale { age_ms: 1 }.reason(), "stale_timestamp");
        assert_eq!(Refusal::Future { ahead_ms: 1 }.reason(), "stale_timestamp");
    }
}
