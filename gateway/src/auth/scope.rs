//! Station patterns of API-key scopes: a station name where `*` matches any run of characters
//! (`orders*`, `*-eu`, `*`). Nothing else is special.

use super::AuthError;
use crate::meta::{Action, Scope};

/// Most scopes on one key, and the longest pattern: bounds the work of every check.
pub const MAX_SCOPES: usize = 32;
pub const MAX_PATTERN: usize = 128;

/// Whether `station` matches `pattern`. Iterative with one backtrack point: linear in practice,
/// never exponential.
pub fn matches(pattern: &str, station: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), station.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Validates the scopes of a new key: each pattern is a station name with optional `*`, and
/// names at least one action.
pub fn validate(scopes: &[Scope]) -> Result<(), AuthError> {
    if scopes.is_empty() || scopes.len() > MAX_SCOPES {
        return Err(AuthError::InvalidScopes(format!("a key needs 1-{MAX_SCOPES} scopes")));
    }
    for scope in scopes {
        let p = &scope.stations;
        let valid_chars = p.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-*".contains(&c));
        if p.is_empty() || p.len() > MAX_PATTERN || !valid_chars {
            return Err(AuthError::InvalidScopes(format!(
                "scope pattern {p:?}: 1-{MAX_PATTERN} characters of a-z 0-9 . _ - and * wildcards"
            )));
        }
        if scope.actions.is_empty() {
            return Err(AuthError::InvalidScopes(format!("scope {p:?} grants no action")));
        }
        if scope.actions.contains(&Action::Metrics) && p != "*" {
            return Err(AuthError::InvalidScopes(format!(
                "scope {p:?}: the metrics action shows every station, so its scope must be \"*\""
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn wildcards() {
        assert!(matches("*", "anything"));
        assert!(matches("orders*", "orders"));
        assert!(matches("orders*", "orders-eu"));
        assert!(!matches("orders*", "order"));
        assert!(matches("*-eu", "orders-eu"));
        assert!(!matches("*-eu", "orders-us"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
        assert!(matches("**", ""));
    }

    #[test]
    fn many_stars_stay_fast() {
        let pattern = "*a".repeat(60);
        assert!(!matches(&pattern, &"a".repeat(59)));
    }
}
