//! Credentials for a request: a token from the environment, or a stored context whose access
//! token is refreshed when it is about to expire.
//!
//! Refresh tokens rotate: `/v1/auth/refresh` spends the one presented and answers the next, and
//! presenting a spent one again revokes the whole session. So the next one is written to the
//! configuration (atomically, under the lock) before the new access token is used, and a command
//! that waited for the lock first looks whether another one refreshed meanwhile.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::config::{self, ConfigLock};
use super::failure::{self, Exit, Failure};

/// An access token closer than this to its expiry is refreshed first (seconds): clocks drift
/// and a request takes time.
const EXPIRY_MARGIN: u64 = 30;

/// Used when `DEPOT_TOKEN` is set and nothing names a server: where `depot dev` listens.
pub const DEFAULT_URL: &str = "http://127.0.0.1:4444/";

pub enum Session {
    /// `DEPOT_TOKEN`: an access token or an API key, used as it is.
    Static(String),
    /// A context of the configuration file.
    Stored { path: PathBuf, name: String, access: Option<(String, u64)> },
}

/// A server's base URL, with a trailing slash so paths join below it.
pub fn parse_url(text: &str) -> Result<url::Url, Failure> {
    let mut url = url::Url::parse(text.trim())
        .map_err(|e| Failure::usage(format!("{text:?} is not a URL ({e}); e.g. http://127.0.0.1:4444")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Failure::usage(format!("{text:?}: the server's URL must be http:// or https:// with a host")));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Session {
    pub fn can_refresh(&self) -> bool {
        matches!(self, Session::Stored { .. })
    }

    /// The bearer token for the next request; `force` refreshes even a token that looks valid
    /// (the server refused it).
    pub async fn access_token(
        &mut self,
        http: &reqwest::Client,
        base: &url::Url,
        force: bool,
    ) -> Result<String, Failure> {
        let (path, name, access) = match self {
            Session::Static(token) => return Ok(token.clone()),
            Session::Stored { path, name, access } => (path, name, access),
        };
        if let (false, Some((token, expires))) = (force, access.as_ref()) {
            if *expires > now() + EXPIRY_MARGIN {
                return Ok(token.clone());
            }
        }
        let refused = if force { access.as_ref().map(|(t, _)| t.clone()) } else { None };
        let _lock = ConfigLock::take(path)?;
        let mut file = config::load(path)?;
        let context = file
            .contexts
            .get_mut(name.as_str())
            .ok_or_else(|| Failure::auth(format!("the context {name:?} was removed: run `depot login` again")))?;
        // Another command may have refreshed while this one waited for the lock.
        if let (Some(token), Some(expires)) = (&context.access_token, context.access_expires_at) {
            if expires > now() + EXPIRY_MARGIN && refused.as_ref() != Some(token) {
                *access = Some((token.clone(), expires));
                return Ok(token.clone());
            }
        }
        let issued = post_token(http, base, "v1/auth/refresh", &json!({ "refresh_token": context.refresh_token }))
            .await
            .map_err(|e| match e.exit {
                Exit::Auth => Failure::auth(format!(
                    "the session of context {name:?} has expired or was revoked ({e}): run `depot login` again"
                )),
                _ => e,
            })?;
        context.refresh_token = issued.refresh_token;
        context.access_token = Some(issued.access_token.clone());
        context.access_expires_at = Some(issued.expires_at);
        // Durable before the access token is used: the refresh token just spent is now worthless.
        config::save(path, &file)?;
        *access = Some((issued.access_token.clone(), issued.expires_at));
        Ok(issued.access_token)
    }
}

/// What `/v1/auth/token` and `/v1/auth/refresh` answer.
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// POSTs `body` to a token endpoint (no bearer token) and reads the pair it answers.
pub async fn post_token(http: &reqwest::Client, base: &url::Url, path: &str, body: &Value) -> Result<Issued, Failure> {
    let url = base.join(path).map_err(|e| Failure::other(e.to_string()))?;
    let response = http.post(url).header("content-type", "application/json").body(body.to_string()).send().await?;
    let status = response.status().as_u16();
    let answer = failure::answer(status, &response.bytes().await?)?;
    let text = |field: &str| answer[field].as_str().map(str::to_owned);
    match (text("access_token"), text("refresh_token"), answer["expires_in"].as_u64()) {
        (Some(access_token), Some(refresh_token), Some(expires_in)) => {
            Ok(Issued { access_token, refresh_token, expires_at: now() + expires_in })
        }
        _ => Err(Failure::other(format!("{path} answered without a token pair: {answer}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_end_in_a_slash() {
        assert_eq!(
            parse_url("http://127.0.0.1:4444").map(|u| u.to_string()).ok(),
            Some("http://127.0.0.1:4444/".into())
        );
        assert_eq!(parse_url("https://h/depot?x=1").map(|u| u.to_string()).ok(), Some("https://h/depot/".into()));
        assert!(parse_url("ftp://h").is_err_and(|e| e.exit == Exit::Usage));
        assert!(parse_url("127.0.0.1:4444").is_err());
    }
}
