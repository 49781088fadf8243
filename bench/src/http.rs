//! `depot-bench http [--quick]`: measures the `depot` gateway over real HTTP against issue 3's
//! targets, next to a ceiling: a trivial actix-web handler served by this binary with the same
//! worker count, measured with the same client and concurrency.
//!
//! The server is the release `depot` binary next to this one, run as a child process
//! (`depot dev --listen 127.0.0.1:0`). The client is a minimal HTTP/1.1 keep-alive client over
//! `tokio::net::TcpStream`: one request in flight per connection, `Content-Length` bodies only.
//!
//! Settings (environment): `DEPOT_BENCH_CLIENT_THREADS` (client runtime workers, default 2),
//! `DEPOT_BENCH_SINGLE_CONNS` (default 64), `DEPOT_BENCH_BATCH_CONNS` (default 16),
//! `DEPOT_BENCH_CONSUMERS` (default 16), `DEPOT_BENCH_PAYLOAD` (`base64`, the default, or
//! `json`: how batch items carry their 1 KiB).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) const KIB: usize = 1024;
pub(crate) const BATCH: usize = 100;
const STATION: &str = "bench";
const BATCH_STATION: &str = "bench-batch";
const FETCH_STATION: &str = "bench-fetch";
const GROUP: &str = "g";

pub(crate) fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The client

/// One keep-alive HTTP/1.1 connection with one request in flight.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` holding data read from the socket.
    filled: usize,
    /// Where the last response's body lies in `buf`.
    body: (usize, usize),
}

/// The first place `needle` occurs in `haystack`: a scan for its first byte, then a compare.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
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

pub(crate) fn count(haystack: &[u8], needle: &[u8]) -> usize {
    let mut n = 0;
    let mut at = 0;
    while let Some(i) = find(&haystack[at..], needle) {
        n += 1;
        at += i + needle.len();
    }
    n
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: vec![0; 64 * KIB], filled: 0, body: (0, 0) })
    }

    pub(crate) fn body(&self) -> &[u8] {
        &self.buf[self.body.0..self.body.1]
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        if self.filled == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.stream.read(&mut self.buf[self.filled..]).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.filled += n;
        Ok(())
    }

    /// Sends a whole request (head and body) and reads the response; returns its status.
    pub(crate) async fn roundtrip(&mut self, request: &[u8]) -> anyhow::Result<u16> {
        // Drop the previous response.
        let (_, end) = self.body;
        self.buf.copy_within(end..self.filled, 0);
        self.filled -= end;
        self.body = (0, 0);
        self.stream.write_all(request).await?;
        let head_end = loop {
            if let Some(i) = find(&self.buf[..self.filled], b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).context("response head is not UTF-8")?;
        let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).context("no status line")?;
        let mut length = None;
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else { continue };
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>().context("bad Content-Length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                bail!("the client does not read Transfer-Encoding: {}", value.trim());
            }
        }
        let length = match (length, status) {
            (Some(n), _) => n,
            (None, 204 | 304) => 0,
            (None, _) => bail!("response {status} without Content-Length"),
        };
        while self.filled < head_end + length {
            self.fill().await?;
        }
        self.body = (head_end, head_end + length);
        Ok(status)
    }
}

/// Builds a complete request.
pub(crate) fn request(method: &str, path: &str, token: Option<&str>, content_type: &str, body: &[u8]) -> Vec<u8> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: depot\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{auth}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

// ---------------------------------------------------------------------------------------------
// Servers under test

pub(crate) struct Server {
    name: &'static str,
    child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) token: Option<String>,
    log: PathBuf,
}

impl Server {
    /// Starts `cmd` and waits for its `... listening on http://ADDR` line.
    pub(crate) fn start(name: &'static str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Server> {
        let stderr = std::fs::File::create(&log)?;
        cmd.stdout(Stdio::piped()).stderr(stderr).stdin(Stdio::null());
        let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let Some(line) = lines.next() else {
                let _ = child.wait();
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("{name} exited before listening:\n{log}");
            };
            let line = line?;
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                break addr.parse::<SocketAddr>().with_context(|| format!("{name}: bad address in {line:?}"))?;
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server { name, child, addr, token: None, log })
    }

    /// CPU seconds (user + system) the server has used so far, from /proc (100 ticks a second).
    pub(crate) fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }

    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    eprintln!("{} exited with {status}:\n{log}", self.name);
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("{} did not stop within 30 s of SIGTERM", self.name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn cpu_seconds(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime is field 14, stime 15; `rest` starts at field 3.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

pub(crate) fn depot_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("executable has no directory")?.join("depot");
    if !bin.is_file() {
        bail!(
            "{} not found: build it next to depot-bench with\n  cargo build --release -p depot-gateway -p depot-bench",
            bin.display()
        );
    }
    Ok(bin)
}

async fn admin(server: &Server, method: &str, path: &str, body: serde_json::Value) -> anyhow::Result<(u16, String)> {
    let mut conn = Conn::open(server.addr).await?;
    let req = request(method, path, server.token.as_deref(), "application/json", body.to_string().as_bytes());
    let status = conn.roundtrip(&req).await?;
    Ok((status, String::from_utf8_lossy(conn.body()).into_owned()))
}

pub(crate) async fn expect(
    server: &Server,
    method: &str,
    path: &str,
    body: serde_json::Value,
    ok: &[u16],
) -> anyhow::Result<()> {
    let (status, text) = admin(server, method, path, body).await?;
    if !ok.contains(&status) {
        bail!("{method} {path}: {status} {text}");
    }
    Ok(())
}

/// Logs in as admin when the server has authentication; proceeds without when it answers 404.
pub(crate) async fn login(server: &mut Server, password: &str) -> anyhow::Result<()> {
    let (status, text) =
        admin(server, "POST", "/v1/auth/token", json!({"username": "admin", "password": password})).await?;
    match status {
        200 => {
            let v: serde_json::Value = serde_json::from_str(&text)?;
            let token = v["access_token"].as_str().context("no access_token in the token answer")?;
            server.token = Some(token.to_owned());
            eprintln!("authenticated as admin (Bearer access token)");
        }
        404 => eprintln!("POST /v1/auth/token answered 404: no authentication in this build; going on without"),
        other => bail!("POST /v1/auth/token: {other} {text}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Load

/// What each request of a workload is and how its answer is judged.
#[derive(Clone)]
pub(crate) enum Work {
    /// The same request every time; `ok` is the expected status; `items` messages per request,
    /// and when `offsets` the body must report that many offsets.
    Fixed { request: Arc<Vec<u8>>, ok: u16, items: u64, offsets: bool },
    /// Fetch up to 100, then ack what came; stops when the group is drained.
    FetchAck { fetch: Arc<Vec<u8>>, ack_path: Arc<String>, token: Option<Arc<String>> },
}

#[derive(Default)]
struct Tally {
    messages: u64,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
    last: Option<Instant>,
}

impl Tally {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }
}

pub(crate) struct Outcome {
    pub(crate) messages: u64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) seconds: f64,
    pub(crate) latencies_us: Vec<u32>,
    pub(crate) client_cpu_s: f64,
    server_cpu_s: f64,
}

impl Outcome {
    pub(crate) fn msg_per_s(&self) -> f64 {
        self.messages as f64 / self.seconds.max(1e-9)
    }

    pub(crate) fn percentile(&self, p: f64) -> u32 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        self.latencies_us[((self.latencies_us.len() as f64 - 1.0) * p).round() as usize]
    }
}

/// One connection's loop: requests back to back until `end`; counts what completes in the
/// window `[measure_from, end)`.
async fn connection(addr: SocketAddr, work: Work, measure_from: Instant, end: Instant) -> anyhow::Result<Tally> {
    let mut conn = Conn::open(addr).await?;
    let mut t = Tally::default();
    let mut receipts: Vec<u8> = Vec::with_capacity(32 * KIB);
    while Instant::now() < end {
        let started = Instant::now();
        let (status, ok, done) = match &work {
            Work::Fixed { request, ok, items, offsets } => {
                let status = conn.roundtrip(request).await?;
                if status == *ok && *offsets && count(conn.body(), b"\"offset\"") as u64 != *items {
                    t.error(format!("{status}: {}", String::from_utf8_lossy(conn.body())));
                    continue;
                }
                (status, *ok, *items)
            }
            Work::FetchAck { fetch, ack_path, token } => {
                let status = conn.roundtrip(fetch).await?;
                if status != 200 {
                    (status, 200, 0)
                } else {
                    receipts.clear();
                    receipts.extend_from_slice(b"{\"receipts\":[");
                    let mut n = 0u64;
                    let mut rest = conn.body();
                    while let Some(i) = find(rest, b"\"receipt\":\"") {
                        rest = &rest[i + 11..];
                        let len = rest.iter().position(|&b| b == b'"').context("unterminated receipt")?;
                        if n > 0 {
                            receipts.push(b',');
                        }
                        receipts.push(b'"');
                        receipts.extend_from_slice(&rest[..len]);
                        receipts.push(b'"');
                        rest = &rest[len..];
                        n += 1;
                    }
                    if n == 0 {
                        // Drained.
                        break;
                    }
                    receipts.extend_from_slice(b"]}");
                    let ack =
                        request("POST", ack_path, token.as_deref().map(String::as_str), "application/json", &receipts);
                    let status = conn.roundtrip(&ack).await?;
                    if status == 200 && count(conn.body(), b"\"ok\"") as u64 != n {
                        t.error(format!("ack: {}", String::from_utf8_lossy(conn.body())));
                        continue;
                    }
                    (status, 200, n)
                }
            }
        };
        let now = Instant::now();
        if status != ok {
            t.error(format!("{status}: {}", String::from_utf8_lossy(conn.body())));
            if status == 429 || status >= 500 {
                // Do not spin on a server that refuses.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            continue;
        }
        if now >= measure_from && now < end {
            t.messages += done;
            t.requests += 1;
            t.latencies_us.push(u32::try_from((now - started).as_micros()).unwrap_or(u32::MAX));
            t.last = Some(now);
        }
    }
    Ok(t)
}

/// Runs `conns` connections of `work` for `warmup` then `duration`.
pub(crate) fn load(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    work: Work,
    conns: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let cpu0 = (cpu_seconds("/proc/self/stat"), server.cpu_seconds());
    let (outcome, measure_from) = rt.block_on(async {
        let measure_from = Instant::now() + warmup;
        let end = measure_from + duration;
        let handles: Vec<_> =
            (0..conns).map(|_| tokio::spawn(connection(server.addr, work.clone(), measure_from, end))).collect();
        let mut all = Tally::default();
        for h in handles {
            let t = h.await??;
            all.messages += t.messages;
            all.requests += t.requests;
            all.errors += t.errors;
            all.first_error = all.first_error.or(t.first_error);
            all.latencies_us.extend(t.latencies_us);
            all.last = all.last.max(t.last);
        }
        Ok::<_, anyhow::Error>((all, measure_from))
    })?;
    let cpu1 = (cpu_seconds("/proc/self/stat"), server.cpu_seconds());
    let seconds = outcome.last.map_or(duration, |last| last - measure_from).as_secs_f64();
    let mut latencies_us = outcome.latencies_us;
    latencies_us.sort_unstable();
    Ok(Outcome {
        messages: outcome.messages,
        requests: outcome.requests,
        errors: outcome.errors,
        first_error: outcome.first_error,
        seconds,
        latencies_us,
        client_cpu_s: cpu1.0 - cpu0.0,
        server_cpu_s: cpu1.1 - cpu0.1,
    })
}

// ---------------------------------------------------------------------------------------------
// Workloads

pub(crate) fn batch_body(kind: &str) -> Vec<u8> {
    let payload = vec![b'x'; KIB];
    let item = match kind {
        "json" => json!({"payload": String::from_utf8_lossy(&payload)}),
        _ => json!({"payload_base64": base64::engine::general_purpose::STANDARD.encode(&payload)}),
    };
    json!({"messages": vec![item; BATCH]}).to_string().into_bytes()
}

struct Row {
    id: &'static str,
    what: String,
    target: &'static str,
    /// Whether the figure meets the target.
    met: bool,
    depot: Outcome,
    ceiling: Option<Outcome>,
    latency: bool,
}

fn fmt_k(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

pub(crate) fn figure(o: &Outcome, latency: bool) -> String {
    if latency {
        format!("p50 {} µs, p99 {} µs", o.percentile(0.5), o.percentile(0.99))
    } else {
        format!("{} msg/s (p50 {} µs, p99 {} µs)", fmt_k(o.msg_per_s()), o.percentile(0.5), o.percentile(0.99))
    }
}

fn report(rows: &[Row]) {
    println!("| workload | target | depot | met? | ceiling (trivial actix handler) |");
    println!("|---|---|---|---|---|");
    for r in rows {
        let met = if r.depot.errors > 0 {
            format!("**failed**: {} errors", r.depot.errors)
        } else if r.met {
            "yes".to_owned()
        } else {
            "**no**".to_owned()
        };
        let ceiling = r.ceiling.as_ref().map_or("—".to_owned(), |c| {
            if c.errors > 0 {
                format!("failed: {} errors", c.errors)
            } else {
                figure(c, r.latency)
            }
        });
        println!("| {} | {} | {} | {met} | {ceiling} |", r.what, r.target, figure(&r.depot, r.latency));
    }
    for r in rows {
        for (server, o) in std::iter::once(("depot", &r.depot)).chain(r.ceiling.as_ref().map(|c| ("ceiling", c))) {
            println!(
                "{}",
                json!({"workload": r.id, "server": server, "messages": o.messages, "requests": o.requests,
                    "seconds": (o.seconds * 1000.0).round() / 1000.0, "msg_per_s": o.msg_per_s() as u64,
                    "p50_us": o.percentile(0.5), "p99_us": o.percentile(0.99), "errors": o.errors,
                    "first_error": o.first_error, "server_cpu_s": (o.server_cpu_s * 100.0).round() / 100.0,
                    "client_cpu_s": (o.client_cpu_s * 100.0).round() / 100.0,
                    "met": if server == "depot" { Some(r.met && o.errors == 0) } else { None }})
            );
        }
    }
}

pub(crate) fn progress(name: &str, server: &str, o: &Outcome) {
    eprintln!(
        "{name} [{server}]: {} msg/s, {} req, p50 {} µs, p99 {} µs, errors {}, cpu server {:.2} s client {:.2} s over {:.2} s{}",
        o.msg_per_s() as u64,
        o.requests,
        o.percentile(0.5),
        o.percentile(0.99),
        o.errors,
        o.server_cpu_s,
        o.client_cpu_s,
        o.seconds,
        o.first_error.as_ref().map(|e| format!("; first error: {}", e.chars().take(300).collect::<String>())).unwrap_or_default()
    );
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let base = match args.iter().position(|a| a == "--dir") {
        Some(i) => PathBuf::from(args.get(i + 1).context("--dir needs a value")?),
        None => std::env::temp_dir(),
    };
    let (warmup, duration) = if quick {
        (Duration::from_millis(300), Duration::from_secs(1))
    } else {
        (Duration::from_secs(1), Duration::from_secs(5))
    };
    let client_threads = env_usize("DEPOT_BENCH_CLIENT_THREADS", 2);
    let single_conns = env_usize("DEPOT_BENCH_SINGLE_CONNS", 64);
    let batch_conns = env_usize("DEPOT_BENCH_BATCH_CONNS", 16);
    let consumers = env_usize("DEPOT_BENCH_CONSUMERS", 16);
    let payload_kind = std::env::var("DEPOT_BENCH_PAYLOAD").unwrap_or_else(|_| "base64".to_owned());
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(client_threads).enable_all().build()?;
    eprintln!(
        "client: {client_threads} threads; server workers: {workers}; {} s per workload after {} ms warm-up",
        duration.as_secs_f64(),
        warmup.as_millis()
    );

    let tmp = tempfile::tempdir_in(&base)?;
    let server = start_depot(&rt, tmp.path())?;
    let started = Instant::now();
    let retention = json!({"retention": {"max_bytes": 512u64 << 20}});
    rt.block_on(async {
        for station in [STATION, BATCH_STATION] {
            expect(&server, "PUT", &format!("/v1/stations/{station}"), retention.clone(), &[200, 201]).await?;
        }
        expect(&server, "PUT", &format!("/v1/stations/{FETCH_STATION}"), json!({}), &[200, 201]).await
    })?;
    let token = server.token.clone();
    let tok = token.as_deref();
    let single_path = format!("/v1/stations/{STATION}/messages");
    let single = Arc::new(request("POST", &single_path, tok, "application/octet-stream", &[b'x'; KIB]));
    let batch_body = batch_body(&payload_kind);
    let batch_path = format!("/v1/stations/{BATCH_STATION}/messages/batch");
    let batch = Arc::new(request("POST", &batch_path, tok, "application/json", &batch_body));
    let fixed = |request: &Arc<Vec<u8>>, ok, items| Work::Fixed { request: request.clone(), ok, items, offsets: true };

    // 4 first, while nothing else has run: one connection, one request at a time.
    let latency = load(&rt, &server, fixed(&single, 201, 1), 1, warmup, duration)?;
    progress("single_1conn", "depot", &latency);
    let single64 = load(&rt, &server, fixed(&single, 201, 1), single_conns, warmup, duration)?;
    progress("single_64conns", "depot", &single64);
    let batched = load(&rt, &server, fixed(&batch, 200, BATCH as u64), batch_conns, warmup, duration)?;
    progress("batch100", "depot", &batched);

    // 3: fill a station, let the fill reach the disk, then drain it with fetch + ack.
    let fill = if quick { 300_000 } else { 1_500_000 };
    let fill_path = format!("/v1/stations/{FETCH_STATION}/messages/batch");
    let fill_req = Arc::new(request("POST", &fill_path, tok, "application/json", &batch_body));
    let filled = load_until(&rt, &server, &fill_req, 16, fill)?;
    eprintln!("filled {FETCH_STATION} with {filled} messages");
    let _ = Command::new("sync").status();
    rt.block_on(expect(
        &server,
        "PUT",
        &format!("/v1/stations/{FETCH_STATION}/consumer-groups/{GROUP}"),
        json!({"start": "earliest"}),
        &[200, 201],
    ))?;
    let group = format!("/v1/stations/{FETCH_STATION}/consumer-groups/{GROUP}");
    let work = Work::FetchAck {
        fetch: Arc::new(request(
            "POST",
            &format!("{group}/fetch"),
            tok,
            "application/json",
            br#"{"max_messages":100}"#,
        )),
        ack_path: Arc::new(format!("{group}/ack")),
        token: token.clone().map(Arc::new),
    };
    let fetched = load(&rt, &server, work, consumers, Duration::from_millis(200), duration * 2)?;
    progress("fetch_ack100", "depot", &fetched);
    let elapsed = started.elapsed();
    server.stop()?;
    eprintln!("depot phase took {:.0} s", elapsed.as_secs_f64());

    // The ceiling: a trivial actix-web handler, same workers, same client, same concurrency.
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("http-ceiling").arg(workers.to_string());
    let ceiling = Server::start("ceiling", cmd, tmp.path().join("ceiling.log"))?;
    let c_single = Arc::new(request("POST", "/", tok, "application/octet-stream", &[b'x'; KIB]));
    let c_batch = Arc::new(request("POST", "/", tok, "application/json", &batch_body));
    let c_fixed =
        |request: &Arc<Vec<u8>>, items| Work::Fixed { request: request.clone(), ok: 201, items, offsets: false };
    let c_latency = load(&rt, &ceiling, c_fixed(&c_single, 1), 1, warmup, duration)?;
    progress("single_1conn", "ceiling", &c_latency);
    let c_single64 = load(&rt, &ceiling, c_fixed(&c_single, 1), single_conns, warmup, duration)?;
    progress("single_64conns", "ceiling", &c_single64);
    let c_batched = load(&rt, &ceiling, c_fixed(&c_batch, BATCH as u64), batch_conns, warmup, duration)?;
    progress("batch100", "ceiling", &c_batched);
    ceiling.stop()?;

    let rows = vec![
        Row {
            id: "single_64conns",
            what: format!("single POST, 1 KiB, {single_conns} connections"),
            target: "≥ 50k msg/s",
            met: single64.msg_per_s() >= 50_000.0,
            depot: single64,
            ceiling: Some(c_single64),
            latency: false,
        },
        Row {
            id: "batch100",
            what: format!("batch POST, 100 × 1 KiB ({payload_kind}), {batch_conns} connections"),
            target: "≥ 350k msg/s",
            met: batched.msg_per_s() >= 350_000.0,
            depot: batched,
            ceiling: Some(c_batched),
            latency: false,
        },
        Row {
            id: "fetch_ack100",
            what: format!("fetch 100 + ack, {consumers} consumers, one group"),
            target: "≥ 300k msg/s",
            met: fetched.msg_per_s() >= 300_000.0,
            depot: fetched,
            ceiling: None,
            latency: false,
        },
        Row {
            id: "single_1conn",
            what: "single POST, 1 KiB, one connection, one at a time".to_owned(),
            target: "p50 ≤ 300 µs",
            met: latency.percentile(0.5) <= 300,
            depot: latency,
            ceiling: Some(c_latency),
            latency: true,
        },
    ];
    report(&rows);
    Ok(())
}

/// Starts the release `depot dev` next to this executable on a fresh data directory under `dir`
/// (log in `dir/depot.log`) and logs in as admin.
pub(crate) fn start_depot(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> anyhow::Result<Server> {
    let depot = depot_binary()?;
    let password = format!("bench-{:016x}", random_u64());
    let data = dir.join("data");
    let mut cmd = Command::new(&depot);
    cmd.arg("dev")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(&data)
        .env("DEPOT_LOG", "warn")
        .env("DEPOT_ADMIN_PASSWORD", &password)
        .env("DEPOT_RATE_LIMIT", "off");
    let mut server = Server::start("depot", cmd, dir.join("depot.log"))?;
    eprintln!("depot listening on {}", server.addr);
    rt.block_on(login(&mut server, &password))?;
    Ok(server)
}

/// Produces `total` messages with `conns` connections of batch requests; returns how many.
pub(crate) fn load_until(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    req: &Arc<Vec<u8>>,
    conns: usize,
    total: u64,
) -> anyhow::Result<u64> {
    let per_conn = total.div_ceil(BATCH as u64 * conns as u64);
    rt.block_on(async {
        let handles: Vec<_> = (0..conns)
            .map(|_| {
                let (addr, req) = (server.addr, req.clone());
                tokio::spawn(async move {
                    let mut conn = Conn::open(addr).await?;
                    for _ in 0..per_conn {
                        let status = conn.roundtrip(&req).await?;
                        if status != 200 {
                            bail!("fill: {status} {}", String::from_utf8_lossy(conn.body()));
                        }
                    }
                    Ok(per_conn * BATCH as u64)
                })
            })
            .collect();
        let mut n = 0;
        for h in handles {
            n += h.await??;
        }
        Ok(n)
    })
}

pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

// ---------------------------------------------------------------------------------------------
// The ceiling server

static OFFSET: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn trivial(body: actix_web::web::Bytes) -> actix_web::HttpResponse {
    let offset = OFFSET.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    actix_web::HttpResponse::Created().json(json!({"offset": offset, "duplicate": false, "bytes": body.len()}))
}

/// `depot-bench http-ceiling WORKERS`: serves `POST /` with [`trivial`] until SIGTERM.
pub fn ceiling(args: &[String]) -> anyhow::Result<()> {
    let workers: usize = args.first().context("http-ceiling WORKERS")?.parse()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let server = actix_web::HttpServer::new(|| {
            actix_web::App::new()
                .app_data(actix_web::web::PayloadConfig::new(16 << 20))
                .route("/", actix_web::web::post().to(trivial))
        })
        .workers(workers)
        .disable_signals()
        .listen(listener)?
        .run();
        println!("ceiling: listening on http://{addr} with {workers} workers");
        let handle = server.handle();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut server = std::pin::pin!(server);
        tokio::select! {
            r = &mut server => r,
            _ = term.recv() => {
                let (r, ()) = tokio::join!(&mut server, handle.stop(true));
                r
            }
        }
    })?;
    Ok(())
}
