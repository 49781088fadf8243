//! A minimal HTTP/1.1 client for tests and benchmarks: requests are encoded once into bytes (a
//! benchmark re-sends the same bytes), answers are parsed in place in a buffer kept per
//! connection, so a keep-alive round trip allocates nothing. Bodies carry a `Content-Length`
//! (or none at all on 204 / 304, or run to the end of a `Connection: close` answer); chunked
//! answers are refused.
//!
//! One parser, three ways to use it:
//! - [`request`] / [`send`]: one request on its own connection (`Connection: close`), blocking,
//!   with a deadline over the whole exchange; connection errors and timeouts are values.
//! - [`Conn`]: a blocking keep-alive connection, for tests sending many requests.
//! - [`AsyncConn`]: a tokio keep-alive connection with one request in flight, for load.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a connection reads into first; it doubles when an answer needs more.
const BUFFER: usize = 64 * 1024;

/// Why an exchange failed.
#[derive(Debug)]
pub enum Error {
    Io(std::io::Error),
    /// No complete answer before the deadline.
    Timeout,
    /// The server closed the connection before a complete answer.
    Closed,
    /// An answer this client does not read.
    Malformed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Timeout => write!(f, "no complete answer within the deadline"),
            Error::Closed => write!(f, "the server closed the connection"),
            Error::Malformed(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
            Error::Timeout
        } else {
            Error::Io(e)
        }
    }
}

/// A complete request: head and body, ready to be written as is (and again).
///
/// `Host: depot`; `Authorization: Bearer TOKEN` when a token is given; then `headers`.
pub fn encode(method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = head(method, path, token, headers, body.len());
    r.extend_from_slice(body);
    r
}

/// The head of a request whose body of `length` bytes is sent after it.
fn head(method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], length: usize) -> Vec<u8> {
    let mut r = Vec::with_capacity(160 + path.len() + length);
    let _ = write!(r, "{method} {path} HTTP/1.1\r\nHost: depot\r\nContent-Length: {length}\r\n");
    if let Some(token) = token {
        let _ = write!(r, "Authorization: Bearer {token}\r\n");
    }
    for (name, value) in headers {
        let _ = write!(r, "{name}: {value}\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r
}

/// The first place `needle` occurs in `haystack`: a scan for its first byte, then a compare.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let last_start = haystack.len().checked_sub(needle.len())?;
    let mut at = 0;
    while at <= last_start {
        at += haystack[at..=last_start].iter().position(|&b| b == first)?;
        if &haystack[at..at + needle.len()] == needle {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// How often `needle` occurs in `haystack`, without overlaps.
pub fn count(haystack: &[u8], needle: &[u8]) -> usize {
    let mut n = 0;
    let mut at = 0;
    while let Some(i) = find(&haystack[at..], needle) {
        n += 1;
        at += i + needle.len();
    }
    n
}

/// An answer, owned: for assertions.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The body as JSON, `Null` when it is not.
    pub body: Value,
    pub raw: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Asserts a problem+json answer with this status and code.
    pub fn problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self:?}");
        assert_eq!(self.body["code"], code, "{self:?}");
    }
}

/// Bytes read from one connection and the answer found at their start.
struct Incoming {
    buf: Vec<u8>,
    /// Bytes of `buf` holding data read from the socket.
    filled: usize,
    /// The answer being read: its status, where its head ends and its body length, once the
    /// head is complete (`None` for a body that runs to the end of the connection).
    head: Option<(u16, usize, Option<usize>)>,
    /// Where the answer's body lies in `buf`, once complete.
    body: (usize, usize),
}

impl Incoming {
    fn new() -> Incoming {
        Incoming { buf: vec![0; BUFFER], filled: 0, head: None, body: (0, 0) }
    }

    /// Forgets the last answer, keeping any bytes read past it.
    fn next(&mut self) {
        let end = self.body.1;
        self.buf.copy_within(end..self.filled, 0);
        self.filled -= end;
        self.head = None;
        self.body = (0, 0);
    }

    /// Room for the next read, grown when full.
    fn spare(&mut self) -> &mut [u8] {
        if self.filled == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        &mut self.buf[self.filled..]
    }

    /// Whether a whole answer is here; `closed`: the server closed the connection, which ends a
    /// body without a length.
    fn complete(&mut self, closed: bool) -> Result<bool, Error> {
        if self.head.is_none() {
            let Some(i) = find(&self.buf[..self.filled], b"\r\n\r\n") else {
                return if closed { Err(Error::Closed) } else { Ok(false) };
            };
            self.head = Some(parse_head(&self.buf[..i + 4])?);
        }
        let Some((_, head_end, length)) = self.head else { return Ok(false) };
        match length {
            Some(n) if self.filled >= head_end + n => {
                self.body = (head_end, head_end + n);
                Ok(true)
            }
            Some(_) if closed => Err(Error::Closed),
            Some(_) => Ok(false),
            None if closed => {
                self.body = (head_end, self.filled);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// After a reset: whatever arrived of an answer whose head is complete.
    fn truncated(&mut self) -> bool {
        if self.head.is_none() {
            let _ = self.complete(false);
        }
        let Some((_, head_end, length)) = self.head else { return false };
        self.body = (head_end, length.map_or(self.filled, |n| self.filled.min(head_end + n)));
        true
    }

    fn status(&self) -> u16 {
        self.head.map_or(0, |(status, _, _)| status)
    }

    fn body(&self) -> &[u8] {
        &self.buf[self.body.0..self.body.1]
    }

    fn head(&self) -> &str {
        let end = self.head.map_or(0, |(_, end, _)| end);
        std::str::from_utf8(&self.buf[..end]).unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head().split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn response(&self) -> Response {
        let headers = self
            .head()
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let raw = self.body().to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Response { status: self.status(), headers, body, raw }
    }
}

/// Status, end of the head and body length (`None`: to the end of the connection).
fn parse_head(head: &[u8]) -> Result<(u16, usize, Option<usize>), Error> {
    let text = std::str::from_utf8(head).map_err(|_| Error::Malformed("the answer's head is not UTF-8".into()))?;
    let status: u16 = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Malformed(format!("no status line in {:?}", text.lines().next().unwrap_or(""))))?;
    let mut length = None;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else { continue };
        if name.eq_ignore_ascii_case("content-length") {
            let n = value.trim().parse().map_err(|_| Error::Malformed(format!("bad Content-Length {value:?}")))?;
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Error::Malformed(format!("this client does not read Transfer-Encoding: {}", value.trim())));
        }
    }
    if length.is_none() && matches!(status, 204 | 304) {
        length = Some(0);
    }
    Ok((status, head.len(), length))
}

/// One request on its own connection, waiting up to 60 s for the answer. `token: None` sends
/// no Authorization header. Panics on connection errors and timeouts; [`request`] returns them.
pub fn send(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    request(addr, token, method, path, headers, body, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"))
}

/// One HTTP/1.1 request on its own connection. Connection errors, timeouts and garbled answers
/// are `Err`; the timeout bounds the whole exchange.
pub fn request(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response, String> {
    let mut all = Vec::with_capacity(headers.len() + 1);
    all.push(("Connection", "close"));
    all.extend_from_slice(headers);
    let head = head(method, path, token, &all, body.len());
    exchange(addr, &head, body, timeout).map_err(|e| match e {
        Error::Timeout => format!("{method} {path} on {addr}: no complete answer within {timeout:?}"),
        Error::Closed => format!("{method} {path} on {addr}: connection closed without an answer"),
        e => format!("{method} {path} on {addr}: {e}"),
    })
}

fn exchange(addr: SocketAddr, head: &[u8], body: &[u8], timeout: Duration) -> Result<Response, Error> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(head)?;
    // The server may answer (413, 401) and close before reading a large body.
    let _ = stream.write_all(body);
    let mut incoming = Incoming::new();
    loop {
        if incoming.complete(false)? {
            return Ok(incoming.response());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(incoming.spare()) {
            Ok(0) => {
                incoming.complete(true)?;
                return Ok(incoming.response());
            }
            Ok(n) => incoming.filled += n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(Error::Timeout);
            }
            // A server that answers early (413, 401) may reset the connection after its answer.
            Err(_) if incoming.truncated() => return Ok(incoming.response()),
            Err(e) => return Err(Error::Io(e)),
        }
    }
}

/// A blocking keep-alive HTTP/1.1 connection, for tests that send many requests (one
/// connection per request would leave tens of thousands of sockets in TIME_WAIT).
pub struct Conn {
    stream: TcpStream,
    incoming: Incoming,
    token: Option<String>,
}

impl Conn {
    /// Connects as `token`'s user with 60 s timeouts; panics if it cannot.
    pub fn open(addr: SocketAddr, token: &str) -> Conn {
        let mut conn = Conn::connect(addr, Duration::from_secs(60)).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        conn.token = Some(token.to_owned());
        conn
    }

    /// Connects with `timeout` for the connect and for every read and write after it.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, Error> {
        let stream = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(10)))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, incoming: Incoming::new(), token: None })
    }

    /// Sends an encoded request and reads its answer; returns the status.
    pub fn roundtrip(&mut self, request: &[u8]) -> Result<u16, Error> {
        self.incoming.next();
        self.stream.write_all(request)?;
        while !self.incoming.complete(false)? {
            let n = self.stream.read(self.incoming.spare())?;
            if n == 0 {
                self.incoming.complete(true)?;
                break;
            }
            self.incoming.filled += n;
        }
        Ok(self.incoming.status())
    }

    /// The last answer's body.
    pub fn body(&self) -> &[u8] {
        self.incoming.body()
    }

    /// The last answer, owned.
    pub fn response(&self) -> Response {
        self.incoming.response()
    }

    /// One request as the connection's user; panics on connection errors.
    pub fn call(&mut self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Response {
        let request = encode(method, path, self.token.as_deref(), &[("Content-Type", content_type)], body);
        if let Err(e) = self.roundtrip(&request) {
            panic!("{method} {path}: {e}");
        }
        self.response()
    }

    pub fn json(&mut self, method: &str, path: &str, body: &Value) -> Response {
        self.call(method, path, "application/json", body.to_string().as_bytes())
    }
}

/// A tokio keep-alive HTTP/1.1 connection with one request in flight.
pub struct AsyncConn {
    stream: tokio::net::TcpStream,
    incoming: Incoming,
}

impl AsyncConn {
    pub async fn open(addr: SocketAddr) -> Result<AsyncConn, Error> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(AsyncConn { stream, incoming: Incoming::new() })
    }

    /// Sends an encoded request and reads its answer; returns the status.
    pub async fn roundtrip(&mut self, request: &[u8]) -> Result<u16, Error> {
        self.incoming.next();
        self.stream.write_all(request).await?;
        while !self.incoming.complete(false)? {
            let n = self.stream.read(self.incoming.spare()).await?;
            if n == 0 {
                self.incoming.complete(true)?;
                break;
            }
            self.incoming.filled += n;
        }
        Ok(self.incoming.status())
    }

    /// The last answer's body.
    pub fn body(&self) -> &[u8] {
        self.incoming.body()
    }

    /// A header of the last answer.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.incoming.header(name)
    }
}

/// One request by curl, an HTTP client Depot did not write: `body` is sent byte for byte
/// (`--data-binary`), with exactly the `headers` given (curl's default `Content-Type` is
/// removed unless one is given). Panics when curl cannot run or reach the server.
pub fn curl(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("a temp dir for curl: {e}"));
    let (input, head, output) = (dir.path().join("in"), dir.path().join("head"), dir.path().join("out"));
    std::fs::write(&input, body).unwrap_or_else(|e| panic!("writing curl's input: {e}"));
    let mut command = std::process::Command::new("curl");
    command.args(["-sS", "--max-time", "30", "-X", method, "-D"]).arg(&head).arg("-o").arg(&output);
    command.arg("--data-binary").arg(format!("@{}", input.display()));
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type")) {
        command.args(["-H", "Content-Type:"]);
    }
    for (name, value) in headers {
        command.arg("-H").arg(format!("{name}: {value}"));
    }
    command.arg(format!("http://{addr}{path}"));
    let out = command.output().unwrap_or_else(|e| panic!("cannot run curl (apt-get install -y curl): {e}"));
    assert!(out.status.success(), "curl {method} {path} failed: {}", String::from_utf8_lossy(&out.stderr));
    let head = std::fs::read_to_string(&head).unwrap_or_default();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw = std::fs::read(&output).unwrap_or_default();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Response { status, headers, body, raw }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &[u8], closed: bool) -> Result<Option<(u16, Vec<u8>)>, Error> {
        let mut incoming = Incoming::new();
        incoming.buf[..bytes.len()].copy_from_slice(bytes);
        incoming.filled = bytes.len();
        Ok(incoming.complete(closed)?.then(|| (incoming.status(), incoming.body().to_vec())))
    }

    #[test]
    fn answers_are_read_by_length_or_to_the_close() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}extra";
        assert_eq!(parsed(ok, false).unwrap(), Some((200, b"{}".to_vec())));
        assert_eq!(parsed(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{}", false).unwrap(), None);
        assert!(matches!(parsed(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{}", true), Err(Error::Closed)));
        assert_eq!(parsed(b"HTTP/1.1 204 No Content\r\n\r\n", false).unwrap(), Some((204, Vec::new())));
        assert_eq!(parsed(b"HTTP/1.1 200 OK\r\n\r\nabc", false).unwrap(), None);
        assert_eq!(parsed(b"HTTP/1.1 200 OK\r\n\r\nabc", true).unwrap(), Some((200, b"abc".to_vec())));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(matches!(parsed(chunked, false), Err(Error::Malformed(_))));
    }

    #[test]
    fn a_kept_connection_starts_the_next_answer_after_the_last() {
        let mut incoming = Incoming::new();
        let two = b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\nX-A: b\r\n\r\n1HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2";
        incoming.buf[..two.len()].copy_from_slice(two);
        incoming.filled = two.len();
        assert!(incoming.complete(false).unwrap());
        assert_eq!((incoming.status(), incoming.body(), incoming.header("x-a")), (201, &b"1"[..], Some("b")));
        incoming.next();
        assert!(incoming.complete(false).unwrap());
        assert_eq!((incoming.status(), incoming.body()), (200, &b"2"[..]));
        assert_eq!(incoming.response().headers, vec![("content-length".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn encoded_requests_carry_length_token_and_headers() {
        let r = encode("POST", "/x", Some("t"), &[("Content-Type", "a/b")], b"hi");
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "POST /x HTTP/1.1\r\nHost: depot\r\nContent-Length: 2\r\nAuthorization: Bearer t\r\nContent-Type: a/b\r\n\r\nhi"
        );
        assert_eq!(count(b"\"ok\",\"ok\"", b"\"ok\""), 2);
        let h = head("PUT", "/y", None, &[], 7);
        assert_eq!(String::from_utf8(h).unwrap(), "PUT /y HTTP/1.1\r\nHost: depot\r\nContent-Length: 7\r\n\r\n");
    }
}
