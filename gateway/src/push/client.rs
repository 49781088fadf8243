//! The outbound HTTP client of push delivery: one POST per attempt, reported as an [`Attempt`]
//! and never as an error.
//!
//! What it refuses to do, and why: it follows no redirect (a receiver could bounce a delivery
//! to an internal address), uses no proxy from `HTTP(S)_PROXY` (the environment must not
//! reroute deliveries), and connects only to addresses the [`Guard`] allows: names resolve
//! through [`Guard`] itself and IP literals are checked before sending. Answers are read up to
//! [`MAX_READ`] and only their first [`EXCERPT_LEN`] bytes are kept, so a receiver can neither
//! exhaust memory nor use Depot to read internal pages back.

use std::error::Error as StdError;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use url::{Host, Url};

use super::guard::{is_blocked, BlockedAddress, Guard, ResolveError};

/// Answer bytes read at most; the rest is dropped with the connection.
pub const MAX_READ: usize = 64 * 1024;
/// Answer bytes kept in [`Attempt::excerpt`] at most.
pub const EXCERPT_LEN: usize = 256;
/// Time allowed to open a TCP connection (and the TLS handshake's connect part).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle pooled connections are closed after this long.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest cause kept in a `connection_error: ...` message, in bytes.
const MAX_CAUSE_LEN: usize = 200;

/// The outcome of one delivery attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    /// The answer's status, when one came.
    pub status: Option<u16>,
    /// From the start of the attempt to its end (answer read, or failure).
    pub latency: Duration,
    /// None for a 2xx answer; else `"HTTP {status}"`, `"redirect (HTTP {status}) not
    /// followed"`, `"timeout"`, `"blocked_address"`, `"connection_error: {cause}"` or
    /// `"invalid_request: {what}"` (a configured header that HTTP cannot carry).
    pub error: Option<String>,
    /// The answer's `Retry-After`, as a delay from now (delay-seconds or an HTTP-date).
    pub retry_after: Option<Duration>,
    /// The first [`EXCERPT_LEN`] bytes of the answer's body, as UTF-8 (lossy), when not empty.
    pub excerpt: Option<String>,
}

impl Attempt {
    fn failed(started: Instant, error: String) -> Attempt {
        Attempt { status: None, latency: started.elapsed(), error: Some(error), retry_after: None, excerpt: None }
    }
}

/// The push delivery client of one server: cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct PushClient {
    http: reqwest::Client,
    guard: Guard,
}

impl std::fmt::Debug for PushClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushClient").field("allow_private", &self.guard.allow_private()).finish_non_exhaustive()
    }
}

impl PushClient {
    /// A client whose every connection goes through `guard`. Err only when the TLS setup
    /// fails (the message says why).
    pub fn new(guard: Guard) -> Result<PushClient, String> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .dns_resolver(Arc::new(GuardResolver(guard.clone())))
            .user_agent(concat!("Depot-Push/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the push HTTP client: {}", chain(&e)))?;
        Ok(PushClient { http, guard })
    }

    /// POSTs `body` with `headers` to `url`, all of it (connect, answer, body read) within
    /// `timeout`. When the answer's status came but its body did not finish in time, the
    /// attempt is judged by the status (the excerpt holds what arrived).
    pub async fn post(&self, url: &Url, headers: &[(String, String)], body: Bytes, timeout: Duration) -> Attempt {
        let started = Instant::now();
        let mut map = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                return Attempt::failed(started, format!("invalid_request: header name {name:?}"));
            };
            let Ok(value) = HeaderValue::from_str(value) else {
                return Attempt::failed(started, format!("invalid_request: value of {name}"));
            };
            map.append(header, value);
        }
        self.send(url, map, body, timeout).await
    }

    /// [`PushClient::post`] with the headers already a map (the engine builds them so, without
    /// parsing each name again).
    pub async fn send(&self, url: &Url, headers: HeaderMap, body: Bytes, timeout: Duration) -> Attempt {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        if is_ip_literal_blocked(url, self.guard.allow_private()) {
            return Attempt::failed(started, BlockedAddress.to_string());
        }
        let request = self.http.post(url.clone()).headers(headers).body(body);
        let mut response = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => return Attempt::failed(started, "timeout".to_owned()),
            Ok(Err(e)) => return Attempt::failed(started, describe(&e)),
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        let retry_after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);

        let mut head = Vec::new();
        let mut read = 0usize;
        while read < MAX_READ {
            match tokio::time::timeout_at(deadline, response.chunk()).await {
                Ok(Ok(Some(chunk))) => {
                    let keep = chunk.len().min(EXCERPT_LEN.saturating_sub(head.len()));
                    head.extend_from_slice(&chunk[..keep]);
                    read = read.saturating_add(chunk.len());
                }
                // The end, a broken body or the deadline: the excerpt is what came.
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
            }
        }
        drop(response);

        let error = match status {
            200..=299 => None,
            300..=399 => Some(format!("redirect (HTTP {status}) not followed")),
            _ => Some(format!("HTTP {status}")),
        };
        Attempt { status: Some(status), latency: started.elapsed(), error, retry_after, excerpt: excerpt(&head) }
    }
}

/// Whether `url`'s host is an IP literal that the guard blocks. Such hosts never reach the
/// resolver, so they are checked here.
pub fn is_ip_literal_blocked(url: &Url, allow_private: bool) -> bool {
    let ip = match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(Host::Domain(_)) | None => return false,
    };
    !allow_private && is_blocked(ip)
}

/// reqwest's resolver: the guard's allowed addresses only. A blocked name fails with
/// [`BlockedAddress`] itself as the error, so that it is found in the request error's chain.
struct GuardResolver(Guard);

impl Resolve for GuardResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // The port is set by the connector from the URL.
            match guard.resolve_filtered(&host, 0).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                Err(ResolveError::Blocked(blocked)) => Err(blocked.into()),
                Err(ResolveError::Io(e)) => Err(e.into()),
            }
        })
    }
}

/// The attempt error for a failed request.
fn describe(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<BlockedAddress>() {
            return BlockedAddress.to_string();
        }
        source = err.source();
    }
    if e.is_timeout() {
        return "timeout".to_owned();
    }
    format!("connection_error: {}", root_cause(e))
}

/// The innermost cause's message ("Connection refused (os error 111)"), shortened.
fn root_cause(e: &(dyn StdError + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    truncate(cause.to_string(), MAX_CAUSE_LEN)
}

/// Every message of an error chain, for the one setup error.
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        out.push_str(": ");
        out.push_str(&err.to_string());
        source = err.source();
    }
    out
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn excerpt(head: &[u8]) -> Option<String> {
    if head.is_empty() {
        return None;
    }
    // A multi-byte character cut at the end becomes U+FFFD (3 bytes): cut again to the limit.
    Some(truncate(String::from_utf8_lossy(head).into_owned(), EXCERPT_LEN))
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 section 10.2.3); a date in the past
/// is no delay.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after(""), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let later = SystemTime::now() + Duration::from_secs(3600);
        let delay = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(delay > Duration::from_secs(3500) && delay <= Duration::from_secs(3600));
    }

    #[test]
    fn excerpts_stay_within_the_limit() {
        assert_eq!(excerpt(b""), None);
        assert_eq!(excerpt(b"ok").unwrap(), "ok");
        let mut cut = vec![b'a'; EXCERPT_LEN - 1];
        cut.push(0xc3);
        let e = excerpt(&cut).unwrap();
        assert!(e.len() <= EXCERPT_LEN);
        assert!(e.starts_with("aaa"));
    }

    #[test]
    fn ip_literals_are_checked_unless_private_networks_are_allowed() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(is_ip_literal_blocked(&url("http://127.0.0.1:1/"), false));
        assert!(is_ip_literal_blocked(&url("http://[::ffff:10.0.0.1]/"), false));
        assert!(!is_ip_literal_blocked(&url("http://127.0.0.1:1/"), true));
        assert!(!is_ip_literal_blocked(&url("http://8.8.8.8/"), false));
        assert!(!is_ip_literal_blocked(&url("http://localhost/"), false));
    }
}
