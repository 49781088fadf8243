//! How a client command fails: a message for people and an exit code for scripts.
//!
//! The codes are part of the command line's contract (docs/cli.md): add, never renumber.

use std::fmt;

use serde_json::Value;

/// The exit codes of the client commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Anything else, including a request the server refused as invalid (400, 413).
    Other = 1,
    /// The command line itself is wrong: an unknown flag, a missing argument, a bad value.
    Usage = 2,
    /// The station, group, key, user, ... does not exist (404).
    NotFound = 3,
    /// Not logged in, a spent session, or not allowed (401, 403).
    Auth = 4,
    /// The request conflicts with the current state (409, 422).
    Conflict = 5,
    /// The server cannot be reached or cannot serve now (connection errors, 429, 502-504, 507).
    Unavailable = 6,
}

/// The exit codes as `--help` and the docs list them.
pub const EXIT_CODES: &str = "Exit codes: 0 ok, 1 other error (including invalid requests), 2 usage, 3 not found, \
4 not logged in or not allowed, 5 conflict, 6 server unavailable or rate limited (retry later).";

#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure { exit, message: message.into() }
    }

    pub fn other(message: impl Into<String>) -> Failure {
        Failure::new(Exit::Other, message)
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(Exit::Usage, message)
    }

    pub fn auth(message: impl Into<String>) -> Failure {
        Failure::new(Exit::Auth, message)
    }

    /// The failure an HTTP answer with `status` stands for; `body` is its problem+json (or
    /// whatever it was) and gives the message.
    pub fn from_answer(status: u16, body: &[u8]) -> Failure {
        let exit = match status {
            404 => Exit::NotFound,
            401 | 403 => Exit::Auth,
            409 | 422 => Exit::Conflict,
            429 | 502..=504 | 507 => Exit::Unavailable,
            _ => Exit::Other,
        };
        let problem: Option<Value> = serde_json::from_slice(body).ok();
        let text = |field: &str| problem.as_ref().and_then(|p| p[field].as_str()).filter(|s| !s.is_empty());
        let what = text("detail").or_else(|| text("title")).map(str::to_owned).unwrap_or_else(|| {
            // Not problem+json (a proxy's page, say): its first line, bounded.
            let body = String::from_utf8_lossy(body);
            let line = body.lines().next().unwrap_or_default().trim();
            if line.is_empty() {
                "the server answered without a reason".to_owned()
            } else {
                line.chars().take(200).collect()
            }
        });
        let code = text("code").map(|c| format!("{c}, ")).unwrap_or_default();
        Failure::new(exit, format!("{what} ({code}HTTP {status})"))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl From<reqwest::Error> for Failure {
    fn from(e: reqwest::Error) -> Failure {
        // reqwest's own Display stops at "error sending request"; the innermost cause says why
        // (`Connection refused (os error 111)`, a certificate problem, ...).
        let mut cause: &dyn std::error::Error = &e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        let server = e.url().map(|u| format!("{}://{}", u.scheme(), u.authority())).unwrap_or_default();
        let (exit, message) = if e.is_timeout() {
            (Exit::Unavailable, format!("no answer from {server} in time"))
        } else if e.is_connect() {
            (Exit::Unavailable, format!("cannot reach {server}: {cause}"))
        } else if e.is_request() {
            (Exit::Unavailable, format!("the request to {server} failed: {cause}"))
        } else {
            (Exit::Other, format!("{e}: {cause}"))
        };
        Failure::new(exit, message)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::other(e.to_string())
    }
}

/// The JSON of a success (`null` for an empty body such as a 204), or the failure.
pub fn answer(status: u16, bytes: &[u8]) -> Result<Value, Failure> {
    if !(200..300).contains(&status) {
        return Err(Failure::from_answer(status, bytes));
    }
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Failure::new(Exit::Other, format!("the server answered HTTP {status} with a body that is not JSON: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_give_their_detail_and_an_exit_code_by_status() {
        let body = br#"{"type":"about:blank","title":"Station not found","status":404,"detail":"station nope does not exist","code":"station_not_found"}"#;
        let f = Failure::from_answer(404, body);
        assert_eq!(f.exit, Exit::NotFound);
        assert_eq!(f.message, "station nope does not exist (station_not_found, HTTP 404)");
        assert_eq!(Failure::from_answer(403, b"{}").exit, Exit::Auth);
        assert_eq!(Failure::from_answer(409, b"").exit, Exit::Conflict);
        assert_eq!(Failure::from_answer(503, b"").exit, Exit::Unavailable);
        let f = Failure::from_answer(400, b"<html>bad gateway page</html>\nmore");
        assert_eq!((f.exit, f.message.as_str()), (Exit::Other, "<html>bad gateway page</html> (HTTP 400)"));
    }
}
