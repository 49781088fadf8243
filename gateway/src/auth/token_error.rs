//! What a client is told about a bearer token that is refused: which check failed and, for a
//! claim, which claim, in words of our own. jsonwebtoken's messages for a claim that does not
//! deserialize are serde's parser messages ("missing field `exp` at line 1 column 131"), which
//! describe our parser rather than the token; they never reach the client.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::{Error, ErrorKind};
use serde_json::Value;

use super::{PrincipalKind, Role};
use crate::meta::Scope;

/// What each claim of our own access tokens must be.
#[derive(Clone, Copy)]
enum Expect {
    Text,
    Seconds,
    Kind,
    Role,
    /// Optional; a list of scopes when present.
    Scopes,
}

/// Every claim [`super::Claims`] reads, as tokens carry them.
const CLAIMS: &[(&str, Expect)] = &[
    ("sub", Expect::Text),
    ("kind", Expect::Kind),
    ("role", Expect::Role),
    ("scopes", Expect::Scopes),
    ("exp", Expect::Seconds),
    ("iat", Expect::Seconds),
    ("nbf", Expect::Seconds),
    ("iss", Expect::Text),
    ("aud", Expect::Text),
    ("jti", Expect::Text),
];

/// The 401 detail for a token of ours that jsonwebtoken refused; `token` is only read (its
/// signature already checked) to name the claim that did not fit.
pub(crate) fn describe(error: &Error, token: &str) -> String {
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired (claim `exp`)".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (claim `nbf`)".to_owned(),
        ErrorKind::InvalidIssuer => "the token's issuer (claim `iss`) is not accepted here".to_owned(),
        ErrorKind::InvalidAudience => "the token's audience (claim `aud`) is not this server".to_owned(),
        ErrorKind::InvalidSubject => "the token's subject (claim `sub`) is not accepted here".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => match CLAIMS.iter().find(|(name, _)| name == claim) {
            Some((name, _)) => format!("the token lacks the claim `{name}`"),
            None => "the token lacks a required claim".to_owned(),
        },
        ErrorKind::InvalidSignature => "the token's signature is invalid".to_owned(),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token's algorithm is not accepted here".to_owned()
        }
        ErrorKind::Json(_) => wrong_claim(token),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => "malformed token".to_owned(),
        _ => "invalid token".to_owned(),
    }
}

/// Names the first claim that is missing or not what this server issues.
fn wrong_claim(token: &str) -> String {
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok())
        .and_then(|json| serde_json::from_slice::<Value>(&json).ok());
    let Some(Value::Object(claims)) = claims else {
        return "the token's claims are not a JSON object".to_owned();
    };
    for (name, expect) in CLAIMS {
        let Some(value) = claims.get(*name).filter(|v| !v.is_null()) else {
            if matches!(expect, Expect::Scopes) {
                continue;
            }
            return format!("the token lacks the claim `{name}`");
        };
        let (fits, what) = match expect {
            Expect::Text => (value.is_string(), "a string"),
            Expect::Seconds => (value.is_u64(), "a whole number of seconds"),
            Expect::Kind => {
                (serde_json::from_value::<PrincipalKind>(value.clone()).is_ok(), "a kind this server issues")
            }
            Expect::Role => (serde_json::from_value::<Role>(value.clone()).is_ok(), "`admin` or `member`"),
            Expect::Scopes => (serde_json::from_value::<Vec<Scope>>(value.clone()).is_ok(), "a list of scopes"),
        };
        if !fits {
            return format!("the token's claim `{name}` is not {what}");
        }
    }
    "the token's claims are not those this server issues".to_owned()
}
