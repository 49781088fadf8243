//! Closed-loop HTTP load against a Depot server (or the ceiling server), through the test kit's
//! tokio keep-alive client ([`depot_tests::http::AsyncConn`]): one request in flight per
//! connection, requests encoded once and re-sent as they are. Shared by `depot-bench http`,
//! `cluster` and `peers`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use depot_tests::http::{count, encode, find, AsyncConn as Conn};
use depot_tests::process::{cpu_seconds, Server};
use serde_json::json;

use crate::sys::random_u64;

pub(crate) const KIB: usize = 1024;
pub(crate) const BATCH: usize = 100;

/// Builds a complete request with a `Content-Type`.
pub(crate) fn request(method: &str, path: &str, token: Option<&str>, content_type: &str, body: &[u8]) -> Vec<u8> {
    encode(method, path, token, &[("Content-Type", content_type)], body)
}

/// Where load goes: a server's address, and the process whose CPU time is reported.
#[derive(Clone, Copy)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) pid: u32,
}

impl Target {
    pub(crate) fn of(server: &Server) -> Target {
        Target { addr: server.addr, pid: server.pid() }
    }

    pub(crate) fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.pid))
    }
}

/// The admin token a server was given, if any.
pub(crate) fn token(server: &Server) -> Option<&str> {
    Some(server.token.as_str()).filter(|t| !t.is_empty())
}

/// The release `depot` next to this executable.
pub(crate) fn depot_binary() -> anyhow::Result<PathBuf> {
    depot_tests::process::sibling_binary("depot").with_context(|| {
        "depot not found next to depot-bench: build both with\n  cargo build --release -p depot-gateway -p depot-bench"
    })
}

/// Starts a server and waits for its `listening on http://ADDR` line; its stderr goes to `log`.
pub(crate) fn start(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Server> {
    cmd.stderr(Stdio::from(std::fs::File::create(log)?));
    Server::start(name, cmd, Duration::from_secs(180))
        .map_err(|e| anyhow!("{e}\n{}", depot_tests::process::log_tail(log, 30)))
}

/// SIGTERM, then up to 30 s for the server to stop; a failed exit is reported with its log.
pub(crate) fn stop(server: Server, log: &Path) -> anyhow::Result<()> {
    let status = server.stop(Duration::from_secs(30)).map_err(|e| anyhow!(e))?;
    if !status.success() {
        eprintln!("the server exited with {status}:\n{}", std::fs::read_to_string(log).unwrap_or_default());
    }
    Ok(())
}

/// Starts the release `depot dev` next to this executable on a fresh data directory under `dir`
/// (log in `dir/depot.log`) and logs in as admin.
pub(crate) fn start_depot(rt: &tokio::runtime::Runtime, dir: &Path) -> anyhow::Result<Server> {
    start_depot_with(rt, dir, &[])
}

/// [`start_depot`] with more environment (settings `DEPOT_*`, credentials).
pub(crate) fn start_depot_with(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    env: &[(String, String)],
) -> anyhow::Result<Server> {
    // Kept beside the data dir, so a restart on the same dir logs in with the same password.
    let kept = dir.join("admin-password");
    let password = match std::fs::read_to_string(&kept) {
        Ok(p) => p,
        Err(_) => {
            let p = format!("bench-{:016x}", random_u64());
            std::fs::write(&kept, &p)?;
            p
        }
    };
    let mut cmd = depot_tests::process::dev_command(&depot_binary()?, &[], &dir.join("data"), &password);
    cmd.env("DEPOT_RATE_LIMIT", "off");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let mut server = start("depot", cmd, &dir.join("depot.log"))?;
    eprintln!("depot listening on {}", server.addr);
    if let Some(token) = rt.block_on(login(server.addr, &password))? {
        server.token = token;
    }
    Ok(server)
}

pub(crate) async fn admin(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<(u16, String)> {
    let mut conn = Conn::open(addr).await?;
    let req = request(method, path, token, "application/json", body.to_string().as_bytes());
    let status = conn.roundtrip(&req).await?;
    Ok((status, String::from_utf8_lossy(conn.body()).into_owned()))
}

/// An admin request that must answer one of `ok`.
pub(crate) async fn expect(
    server: &Server,
    method: &str,
    path: &str,
    body: serde_json::Value,
    ok: &[u16],
) -> anyhow::Result<()> {
    expect_at(server.addr, token(server), method, path, body, ok).await
}

pub(crate) async fn expect_at(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: serde_json::Value,
    ok: &[u16],
) -> anyhow::Result<()> {
    let (status, text) = admin(addr, token, method, path, body).await?;
    if !ok.contains(&status) {
        bail!("{method} {path}: {status} {text}");
    }
    Ok(())
}

/// Logs in as admin when the server has authentication; proceeds without when it answers 404.
async fn login(addr: SocketAddr, password: &str) -> anyhow::Result<Option<String>> {
    let (status, text) =
        admin(addr, None, "POST", "/v1/auth/token", json!({"username": "admin", "password": password})).await?;
    match status {
        200 => {
            let v: serde_json::Value = serde_json::from_str(&text)?;
            let token = v["access_token"].as_str().context("no access_token in the token answer")?;
            eprintln!("authenticated as admin (Bearer access token)");
            Ok(Some(token.to_owned()))
        }
        404 => {
            eprintln!("POST /v1/auth/token answered 404: no authentication in this build; going on without");
            Ok(None)
        }
        other => bail!("POST /v1/auth/token: {other} {text}"),
    }
}

/// A batch of 100 × 1 KiB, as `json` strings or (any other `kind`) base64.
pub(crate) fn batch_body(kind: &str) -> Vec<u8> {
    let payload = vec![b'x'; KIB];
    let item = match kind {
        "json" => json!({"payload": String::from_utf8_lossy(&payload)}),
        _ => json!({"payload_base64": base64::engine::general_purpose::STANDARD.encode(&payload)}),
    };
    json!({"messages": vec![item; BATCH]}).to_string().into_bytes()
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
    pub(crate) server_cpu_s: f64,
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
                    let n = ack_body(conn.body(), &mut receipts)?;
                    if n == 0 {
                        // Drained.
                        break;
                    }
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
    target: Target,
    work: Work,
    conns: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let cpu0 = (cpu_seconds("/proc/self/stat"), target.cpu_seconds());
    let (outcome, measure_from) = rt.block_on(async {
        let measure_from = Instant::now() + warmup;
        let end = measure_from + duration;
        let handles: Vec<_> =
            (0..conns).map(|_| tokio::spawn(connection(target.addr, work.clone(), measure_from, end))).collect();
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
    let cpu1 = (cpu_seconds("/proc/self/stat"), target.cpu_seconds());
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

/// Produces `total` messages with `conns` connections of batch requests; returns how many.
pub(crate) fn load_until(
    rt: &tokio::runtime::Runtime,
    target: Target,
    req: &Arc<Vec<u8>>,
    conns: usize,
    total: u64,
) -> anyhow::Result<u64> {
    let per_conn = total.div_ceil(BATCH as u64 * conns as u64);
    rt.block_on(async {
        let handles: Vec<_> = (0..conns)
            .map(|_| {
                let (addr, req) = (target.addr, req.clone());
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

/// Writes into `out` the body of an ack of every receipt in a fetch answer (`{"receipts":[...]}`),
/// scanning the bytes instead of parsing JSON; answers how many receipts it found.
pub(crate) fn ack_body(fetched: &[u8], out: &mut Vec<u8>) -> anyhow::Result<u64> {
    out.clear();
    out.extend_from_slice(b"{\"receipts\":[");
    let mut n = 0u64;
    let mut rest = fetched;
    while let Some(i) = find(rest, b"\"receipt\":\"") {
        rest = &rest[i + 11..];
        let len = rest.iter().position(|&b| b == b'"').context("unterminated receipt")?;
        if n > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(&rest[..len]);
        out.push(b'"');
        rest = &rest[len..];
        n += 1;
    }
    out.extend_from_slice(b"]}");
    Ok(n)
}
