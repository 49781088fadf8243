//! A fault front for the S3 server of [`crate::s3`]: an HTTP/1.1 proxy on a loopback port of its
//! own that forwards each request to the server, or answers it with a 500, or forwards it late,
//! as its [`Mode`] says at the moment the request's head arrives. The mode can be switched at
//! any time, and it applies to requests on connections already open (the AWS SDK keeps its
//! connections alive), because the front reads every request and every response whole.
//!
//! A Depot node uses the front once `DEPOT_TIERING_ENDPOINT` is [`S3Front::endpoint`] (see
//! [`S3Front::depot_env`]): the SDK signs the `Host` it connects to, and the server checks the
//! signature against the `Host` header it receives, which the front leaves as it is.
//!
//! Framing (RFC 9112): a request body is `Content-Length` bytes or `chunked` chunks up to the
//! last one and the trailers (the aws-chunked encoding the SDK may use travels inside either);
//! `Expect: 100-continue` is answered by the front itself. A response body is `Content-Length`
//! bytes, `chunked`, none (HEAD, 1xx, 204, 304) or everything up to the server's close.
//!
//! Threads: one accepting, one per client connection. Dropping the front stops and joins them
//! all (their sockets are shut down, so no read blocks).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::s3::S3Server;

/// What the front does with each request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forwards it to the server and its answer back.
    Pass,
    /// Reads it whole, then answers `500 InternalError` (an S3 XML error) and closes the
    /// connection; the server never sees it.
    Error500,
    /// Waits this long, then forwards it as `Pass` does.
    Slow(Duration),
}

/// The body of every injected 500.
pub const ERROR_BODY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
    <Error><Code>InternalError</Code><Message>injected</Message></Error>";

/// Requests the front has seen, by the mode that handled them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub pass: u64,
    pub error500: u64,
    pub slow: u64,
}

#[derive(Default)]
struct Counters {
    pass: AtomicU64,
    error500: AtomicU64,
    slow: AtomicU64,
}

struct Shared {
    upstream: SocketAddr,
    mode: Mutex<Mode>,
    counts: Counters,
    stop: AtomicBool,
    /// Every open socket the front opened or accepted, by a number of its own, so that a drop
    /// can shut them down.
    sockets: Mutex<HashMap<u64, TcpStream>>,
    next_socket: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Keeps a handle of `stream` until [`Shared::unregister`]; the number to unregister it with.
    fn register(&self, stream: &TcpStream) -> u64 {
        let id = self.next_socket.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            let mut sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
            if self.stopped() {
                let _ = clone.shutdown(Shutdown::Both);
            }
            sockets.insert(id, clone);
        }
        id
    }

    fn unregister(&self, id: u64) {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
}

/// The fault front; stops when dropped.
pub struct S3Front {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl S3Front {
    /// Starts a front of `server` in mode `Pass`.
    pub fn start(server: &S3Server) -> S3Front {
        S3Front::start_to(server.addr())
    }

    /// Starts a front of whatever listens on `upstream`, in mode `Pass`.
    pub fn start_to(upstream: SocketAddr) -> S3Front {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap_or_else(|e| panic!("binding the S3 front: {e}"));
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            mode: Mutex::new(Mode::Pass),
            counts: Counters::default(),
            stop: AtomicBool::new(false),
            sockets: Mutex::new(HashMap::new()),
            next_socket: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("s3-front-accept".to_owned())
            .spawn(move || accept(listener, accepting))
            .unwrap();
        S3Front { addr, shared, acceptor: Some(acceptor) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for `DEPOT_TIERING_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `server.depot_env(bucket)` with the endpoint replaced by this front's.
    pub fn depot_env(&self, server: &S3Server, bucket: &str) -> Vec<(String, String)> {
        let mut env = server.depot_env(bucket);
        for (k, v) in &mut env {
            if k == "DEPOT_TIERING_ENDPOINT" {
                *v = self.endpoint();
            }
        }
        env
    }

    /// Switches the mode: requests whose head arrives from now on get the new one.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Requests seen so far, by the mode that handled them.
    pub fn counts(&self) -> Counts {
        let c = &self.shared.counts;
        Counts {
            pass: c.pass.load(Ordering::SeqCst),
            error500: c.error500.load(Ordering::SeqCst),
            slow: c.slow.load(Ordering::SeqCst),
        }
    }
}

impl Drop for S3Front {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor, then unblock every connection thread.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for (_, s) in self.shared.sockets.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let threads: Vec<JoinHandle<()>> =
            self.shared.threads.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopped() {
            return;
        }
        let Ok(stream) = stream else { continue };
        let id = shared.register(&stream);
        let conn = Arc::clone(&shared);
        let spawned = std::thread::Builder::new().name("s3-front-conn".to_owned()).spawn(move || {
            let mut upstream = None;
            let _ = serve(stream, &conn, &mut upstream);
            if let Some(up) = upstream {
                conn.unregister(up.id);
            }
            conn.unregister(id);
        });
        if let Ok(handle) = spawned {
            let mut threads = shared.threads.lock().unwrap_or_else(|p| p.into_inner());
            threads.retain(|t| !t.is_finished());
            threads.push(handle);
        }
    }
}

/// A message head: the start line and the headers (names lowercased), and its raw bytes.
struct Head {
    start: String,
    headers: Vec<(String, String)>,
    raw: Vec<u8>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> io::Result<Option<u64>> {
        self.header("content-length")
            .map(|v| v.trim().parse().map_err(|_| invalid(format!("Content-Length {v:?}"))))
            .transpose()
    }

    fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.to_ascii_lowercase().contains("close"))
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads a head; `None` at a clean end of stream before its first byte.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return if raw.is_empty() { Ok(None) } else { Err(invalid("a head cut short".to_owned())) };
        }
        raw.extend_from_slice(&line);
        if raw.len() > 64 << 10 {
            return Err(invalid("a head over 64 KiB".to_owned()));
        }
        let text = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_owned();
        if text.is_empty() {
            if lines.is_empty() {
                // Blank lines before a request are allowed (RFC 9112 §2.2).
                raw.clear();
                continue;
            }
            break;
        }
        lines.push(text);
    }
    let start = lines.remove(0);
    let headers = lines
        .into_iter()
        .filter_map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned())))
        .collect();
    Ok(Some(Head { start, headers, raw }))
}

/// Reads a body framed by `head` into `out` (its wire bytes, framing included). `until_close`:
/// a body with neither framing runs to the end of the stream (responses only).
fn read_body(r: &mut impl BufRead, head: &Head, until_close: bool, out: &mut Vec<u8>) -> io::Result<()> {
    if head.chunked() {
        loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line)? == 0 {
                return Err(invalid("a chunked body cut short".to_owned()));
            }
            out.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line);
            let size = text.trim().split(';').next().unwrap_or("").trim().to_owned();
            let size = u64::from_str_radix(&size, 16).map_err(|_| invalid(format!("chunk size {size:?}")))?;
            if size == 0 {
                // Trailers up to an empty line.
                loop {
                    let mut line = Vec::new();
                    if r.read_until(b'\n', &mut line)? == 0 {
                        return Err(invalid("chunked trailers cut short".to_owned()));
                    }
                    out.extend_from_slice(&line);
                    if line == b"\r\n" || line == b"\n" {
                        return Ok(());
                    }
                }
            }
            // The chunk and its CRLF.
            let n = r.take(size + 2).read_to_end(out)?;
            if n as u64 != size + 2 {
                return Err(invalid("a chunk cut short".to_owned()));
            }
        }
    } else if let Some(len) = head.content_length()? {
        let n = r.take(len).read_to_end(out)?;
        if n as u64 != len {
            return Err(invalid("a body shorter than its Content-Length".to_owned()));
        }
        Ok(())
    } else if until_close {
        r.read_to_end(out).map(|_| ())
    } else {
        Ok(())
    }
}

/// The upstream connection of one client connection, opened when first needed and again after
/// the server closed it.
struct Upstream {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// Its number in [`Shared::sockets`].
    id: u64,
}

fn connect(shared: &Shared) -> io::Result<Upstream> {
    let stream = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    let id = shared.register(&stream);
    Ok(Upstream { reader: BufReader::new(stream.try_clone()?), writer: stream, id })
}

/// Serves one client connection until it closes, a 500 closes it, or the front stops.
fn serve(client: TcpStream, shared: &Shared, upstream: &mut Option<Upstream>) -> io::Result<()> {
    client.set_nodelay(true)?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut writer = client;
    while !shared.stopped() {
        let Some(head) = read_head(&mut reader)? else { return Ok(()) };
        if head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let mut request = head.raw.clone();
        read_body(&mut reader, &head, false, &mut request)?;
        let mode = shared.mode();
        match mode {
            Mode::Error500 => {
                shared.counts.error500.fetch_add(1, Ordering::SeqCst);
                let answer = format!(
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{ERROR_BODY}",
                    ERROR_BODY.len()
                );
                writer.write_all(answer.as_bytes())?;
                writer.flush()?;
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            Mode::Slow(delay) => {
                shared.counts.slow.fetch_add(1, Ordering::SeqCst);
                let until = Instant::now() + delay;
                while Instant::now() < until {
                    if shared.stopped() {
                        return Ok(());
                    }
                    std::thread::sleep(until.saturating_duration_since(Instant::now()).min(Duration::from_millis(20)));
                }
            }
            Mode::Pass => {
                shared.counts.pass.fetch_add(1, Ordering::SeqCst);
            }
        }
        let head_only = head.start.starts_with("HEAD ");
        // A kept-alive upstream connection the server closed meanwhile fails the write or the
        // read of the answer's head: then once more on a fresh connection.
        let mut answer = None;
        for _ in 0..2 {
            if upstream.is_none() {
                *upstream = Some(connect(shared)?);
            }
            let Some(up) = upstream.as_mut() else { unreachable!() };
            match forward(up, &request, head_only) {
                Ok(Some(a)) => {
                    answer = Some(a);
                    break;
                }
                Ok(None) | Err(_) => {
                    if let Some(up) = upstream.take() {
                        shared.unregister(up.id);
                    }
                }
            }
        }
        let Some((response, close)) = answer else {
            return Err(invalid("the S3 server did not answer".to_owned()));
        };
        writer.write_all(&response)?;
        writer.flush()?;
        if close || head.closes() {
            if let Some(up) = upstream.take() {
                let _ = up.writer.shutdown(Shutdown::Both);
                shared.unregister(up.id);
            }
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
    Ok(())
}

/// Sends one request upstream and reads its final answer: the answer's bytes and whether the
/// connection ends after it; `None` when the server closed before answering.
fn forward(up: &mut Upstream, request: &[u8], head_only: bool) -> io::Result<Option<(Vec<u8>, bool)>> {
    up.writer.write_all(request)?;
    up.writer.flush()?;
    loop {
        let Some(head) = read_head(&mut up.reader)? else { return Ok(None) };
        let status: u16 = head.start.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        if (100..200).contains(&status) {
            // The front answered any 100-continue itself.
            continue;
        }
        let mut out = head.raw.clone();
        let framed = head.chunked() || head.content_length()?.is_some();
        let close = head.closes() || (!framed && !head_only && status != 204 && status != 304);
        if !head_only && status != 204 && status != 304 {
            read_body(&mut up.reader, &head, true, &mut out)?;
        }
        return Ok(Some((out, close)));
    }
}
