//! `depot-bench cluster [--quick] [--dir DIR] [--out DIR]`: issue 5's targets on a replicated
//! 3-node cluster, all on this machine.
//!
//! Three release `depot serve` processes (next to this binary) on loopback ports, one data dir
//! each in a temp dir under `--dir` (default: the system temp dir), their metadata in a throwaway
//! Postgres started by `depot-pgtest` with production durability (`fsync=on`). Environment of the
//! nodes: `DEPOT_ADMIN_PASSWORD`, `DEPOT_LOG=warn` (`$DEPOT_BENCH_NODE_LOG` if set) and
//! `DEPOT_RATE_LIMIT=off`. The client is the HTTP/1.1 keep-alive client of [`crate::http`],
//! authenticated with an admin access token (valid on every node: the JWT secret derives from
//! the cluster secret).
//!
//! 1. Batches of 100 × 1 KiB (base64), 16 connections; 2. single 1 KiB produces, 64 connections;
//! 3. one connection, one single produce at a time (latency). Each first against the leader,
//!    then, for context, against a follower, which forwards to the leader.
//! 4. Failover: 4 connections of single produces against the two followers (2 each); the leader
//!    gets SIGKILL; the figure is the time from the kill to the first acknowledged write sent after
//!    it (producers retry on any status but 201, on connection errors and after 10 s without an
//!    answer, moving to the other node each time). The killed node is launched again and the
//!    round ends once it answers `/readyz` 200 and the leader reports all 3 nodes reachable with a
//!    known `matched_index`. 10 rounds (`--quick`: 5).
//!
//! Prints a markdown table; writes it and the figures as JSON to `--out DIR` (or
//! `$DEPOT_BENCH_OUT`) as `cluster.md` and `cluster.json`, else prints the JSON too. Every child is
//! stopped and every temp dir removed at the end, on error too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use depot_pgtest::{Durability, PgServer};
use serde_json::{json, Value};

use crate::http::{self, env_usize, expect, figure, load, request, Conn, Outcome, Server, Work, BATCH, KIB};
use crate::peers::{free_port, output};

const NODES: u64 = 3;
/// `Server` names, by node id - 1.
const NAMES: [&str; NODES as usize] = ["depot node 1", "depot node 2", "depot node 3"];
const SINGLE_STATION: &str = "bench";
const BATCH_STATION: &str = "bench-batch";
const FAILOVER_STATION: &str = "failover";
/// Producers kept running while the leader is killed.
const FAILOVER_PRODUCERS: usize = 4;
/// A failover producer gives up on a request after this long and tries the other node: longer
/// than the target, so that the nodes, not the client, decide when a request fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of a probe (`/readyz`, `/v1/cluster`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

struct Settings {
    quick: bool,
    warmup: Duration,
    duration: Duration,
    single_conns: usize,
    batch_conns: usize,
    kills: usize,
    /// How long the failover producers run before the kill.
    steady: Duration,
}

// ---------------------------------------------------------------------------------------------
// The cluster

struct Node {
    api: SocketAddr,
    cluster: SocketAddr,
    dir: PathBuf,
    server: Option<Server>,
    launches: u32,
}

pub(crate) struct Cluster {
    root: PathBuf,
    nodes: Vec<Node>,
    peers: String,
    metadata_url: String,
    secret: String,
    password: String,
    token: Option<String>,
}

fn secret() -> String {
    format!("{:016x}{:016x}", http::random_u64(), http::random_u64())
}

/// One request on a new connection, answered within [`PROBE_TIMEOUT`]: status and body.
async fn call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> anyhow::Result<(u16, Vec<u8>)> {
    tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut conn = Conn::open(addr).await?;
        let status = conn.roundtrip(&request(method, path, token, "application/json", b"")).await?;
        Ok((status, conn.body().to_vec()))
    })
    .await
    .with_context(|| format!("{method} {path} on {addr}: no answer within {PROBE_TIMEOUT:?}"))?
}

impl Cluster {
    pub(crate) fn new(root: &Path, metadata_url: String) -> anyhow::Result<Cluster> {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let mut nodes = Vec::new();
        for id in 1..=NODES {
            let dir = root.join(format!("n{id}"));
            std::fs::create_dir_all(&dir)?;
            nodes.push(Node {
                api: loopback(free_port()?),
                cluster: loopback(free_port()?),
                dir,
                server: None,
                launches: 0,
            });
        }
        let peers = nodes.iter().zip(1..).map(|(n, id)| format!("{id}={}", n.cluster)).collect::<Vec<_>>().join(",");
        Ok(Cluster {
            root: root.to_owned(),
            nodes,
            peers,
            metadata_url,
            secret: secret(),
            password: format!("bench-{}", secret()),
            token: None,
        })
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    fn ids(&self) -> impl Iterator<Item = u64> {
        1..=NODES
    }

    fn running(&self) -> Vec<u64> {
        self.ids().filter(|&id| self.node(id).server.is_some()).collect()
    }

    pub(crate) fn server(&self, id: u64) -> anyhow::Result<&Server> {
        self.node(id).server.as_ref().with_context(|| format!("node {id} is not running"))
    }

    /// The command that launches node `id` (its next launch) and the file for its stderr.
    fn command(&mut self, id: u64) -> (Command, PathBuf) {
        let (peers, metadata_url, secret, password) =
            (self.peers.clone(), self.metadata_url.clone(), self.secret.clone(), self.password.clone());
        let node = &mut self.nodes[(id - 1) as usize];
        node.launches += 1;
        let log = self.root.join(format!("n{id}.launch{}.log", node.launches));
        let mut cmd = Command::new(http::depot_binary().unwrap_or_else(|_| PathBuf::from("depot")));
        cmd.arg("serve")
            .args(["--node-id", &id.to_string()])
            .args(["--listen", &node.api.to_string()])
            .args(["--cluster-listen", &node.cluster.to_string()])
            .args(["--peers", &peers])
            .arg("--data-dir")
            .arg(&node.dir)
            .args(["--metadata-url", &metadata_url])
            .args(["--cluster-secret", &secret])
            .args(["--cluster-id", "bench"])
            .env("DEPOT_ADMIN_PASSWORD", &password)
            .env("DEPOT_LOG", std::env::var("DEPOT_BENCH_NODE_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .env("DEPOT_RATE_LIMIT", "off");
        (cmd, log)
    }

    fn started(&mut self, id: u64, mut server: Server) {
        server.token = self.token.clone();
        self.nodes[(id - 1) as usize].server = Some(server);
    }

    /// Starts every node (all at once: a new node waits for its peers before it serves), waits
    /// until all are ready and agree on a leader, logs in.
    pub(crate) fn start(&mut self, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
        http::depot_binary()?;
        let commands: Vec<_> = self.ids().map(|id| self.command(id)).collect();
        let started: Vec<anyhow::Result<Server>> = std::thread::scope(|s| {
            let handles: Vec<_> = commands
                .into_iter()
                .zip(NAMES)
                .map(|((cmd, log), name)| s.spawn(move || Server::start(name, cmd, log)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("the launch thread panicked"))))
                .collect()
        });
        let mut first_error = None;
        for (id, server) in self.ids().zip(started) {
            match server {
                Ok(server) => self.started(id, server),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        for id in self.ids() {
            eprintln!("node {id}: API {}, cluster port {}", self.node(id).api, self.node(id).cluster);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for id in self.ids() {
            self.wait_until(rt, deadline, &format!("node {id} ready"), |c| c.ready(rt, id))?;
        }
        let mut first = self.nodes[0].server.take().context("node 1 is not running")?;
        let login = rt.block_on(http::login(&mut first, &self.password));
        self.token = first.token.clone();
        self.nodes[0].server = Some(first);
        login?;
        for node in &mut self.nodes {
            if let Some(server) = &mut node.server {
                server.token = self.token.clone();
            }
        }
        self.wait_leader(rt, Duration::from_secs(30))?;
        Ok(())
    }

    /// Launches node `id` again on its ports and data dir; returns once it serves.
    fn launch(&mut self, id: u64) -> anyhow::Result<()> {
        let (cmd, log) = self.command(id);
        let server = Server::start(NAMES[(id - 1) as usize], cmd, log)?;
        self.started(id, server);
        Ok(())
    }

    /// SIGKILL (dropping a `Server` kills it and reaps it).
    fn kill(&mut self, id: u64) {
        self.nodes[(id - 1) as usize].server = None;
    }

    /// SIGTERM to every running node at once; waits for them to stop.
    pub(crate) fn stop(&mut self) {
        let servers: Vec<Server> = self.nodes.iter_mut().filter_map(|n| n.server.take()).collect();
        std::thread::scope(|s| {
            for server in servers {
                s.spawn(move || {
                    if let Err(e) = server.stop() {
                        eprintln!("{e:#}");
                    }
                });
            }
        });
    }

    fn ready(&self, rt: &tokio::runtime::Runtime, id: u64) -> bool {
        self.node(id).server.is_some()
            && rt.block_on(call(self.node(id).api, "GET", "/readyz", None)).is_ok_and(|(status, _)| status == 200)
    }

    /// `GET /v1/cluster` on node `id`, if it answers 200.
    fn view(&self, rt: &tokio::runtime::Runtime, id: u64) -> Option<Value> {
        let (status, body) = rt.block_on(call(self.node(id).api, "GET", "/v1/cluster", self.token.as_deref())).ok()?;
        (status == 200).then(|| serde_json::from_slice(&body).ok()).flatten()
    }

    /// The leader every running node names, if they agree and it runs.
    fn leader(&self, rt: &tokio::runtime::Runtime) -> Option<u64> {
        let running = self.running();
        let mut named = running.iter().map(|&id| self.view(rt, id).and_then(|v| v["leader_id"].as_u64()));
        let leader = named.next()??;
        (named.all(|l| l == Some(leader)) && running.contains(&leader)).then_some(leader)
    }

    pub(crate) fn wait_leader(&self, rt: &tokio::runtime::Runtime, within: Duration) -> anyhow::Result<u64> {
        let mut leader = None;
        self.wait_until(rt, Instant::now() + within, "a leader all running nodes agree on", |c| {
            leader = c.leader(rt);
            leader.is_some()
        })?;
        leader.context("no leader")
    }

    /// Node `id` back: `/readyz` 200, and the leader (that all agree on) reports 3 nodes, all
    /// reachable, each with a known `matched_index`.
    fn recovered(&self, rt: &tokio::runtime::Runtime, id: u64) -> bool {
        if !self.ready(rt, id) {
            return false;
        }
        let Some(leader) = self.leader(rt) else { return false };
        let Some(view) = self.view(rt, leader) else { return false };
        let nodes = view["nodes"].as_array().map_or(&[][..], Vec::as_slice);
        nodes.len() == NODES as usize
            && nodes.iter().all(|n| {
                n["reachable"].as_bool() == Some(true) && (n["id"] == leader || n["matched_index"].as_u64().is_some())
            })
    }

    fn wait_until(
        &self,
        rt: &tokio::runtime::Runtime,
        deadline: Instant,
        what: &str,
        mut check: impl FnMut(&Cluster) -> bool,
    ) -> anyhow::Result<()> {
        loop {
            if check(self) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{what}: not within the deadline\n{}", self.diagnostics(rt));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// CPU seconds the running nodes have used so far.
    fn cpu_seconds(&self) -> f64 {
        self.nodes.iter().filter_map(|n| n.server.as_ref()).map(Server::cpu_seconds).sum()
    }

    /// Every running node's `/v1/cluster`, then the last lines of every node's latest stderr.
    fn diagnostics(&self, rt: &tokio::runtime::Runtime) -> String {
        let mut text = String::new();
        for id in self.running() {
            let view = self.view(rt, id).map_or("no answer".to_owned(), |v| v.to_string());
            text.push_str(&format!("node {id}: {view}\n"));
        }
        for (id, node) in self.ids().zip(&self.nodes) {
            let content = std::fs::read_to_string(self.log(id, node.launches)).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            text.push_str(&format!("--- node {id}, launch {} (stderr, last 20 lines):\n", node.launches));
            for line in &lines[lines.len().saturating_sub(20)..] {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    fn log(&self, id: u64, launch: u32) -> PathBuf {
        self.root.join(format!("n{id}.launch{launch}.log"))
    }

    /// Copies every node's logs into `dir`.
    fn keep_logs(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (id, node) in self.ids().zip(&self.nodes) {
            for launch in 1..=node.launches {
                let log = self.log(id, launch);
                std::fs::copy(&log, dir.join(log.file_name().context("log name")?))?;
            }
        }
        Ok(())
    }

    /// Replication as the leader sees it: its last log index and each node's `matched_index`.
    fn replication(&self, rt: &tokio::runtime::Runtime) -> Value {
        let Some(leader) = self.leader(rt) else { return json!({"leader": null}) };
        let Some(view) = self.view(rt, leader) else { return json!({"leader": leader}) };
        let matched: serde_json::Map<String, Value> = view["nodes"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|n| (n["id"].to_string(), n["matched_index"].clone()))
            .collect();
        json!({"leader": leader, "last_log_index": view["last_log_index"], "matched_index": matched})
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads 1-3

struct Measured {
    outcome: Outcome,
    /// CPU seconds of all three nodes over the warm-up and the measurement.
    cluster_cpu_s: f64,
    /// [`Cluster::replication`] right after the measurement.
    replication: Value,
}

struct Row {
    id: &'static str,
    what: String,
    target: &'static str,
    /// Whether a via-leader outcome meets the target.
    meets: fn(&Outcome) -> bool,
    latency: bool,
    leader: Option<Measured>,
    follower: Option<Measured>,
}

impl Row {
    fn met(&self) -> Option<bool> {
        self.leader.as_ref().map(|m| m.outcome.errors == 0 && (self.meets)(&m.outcome))
    }
}

fn measure(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    node: u64,
    work: Work,
    conns: usize,
    s: &Settings,
) -> anyhow::Result<Measured> {
    // Start with no dirty pages left over from the workload before.
    let _ = Command::new("sync").status();
    let cpu0 = cluster.cpu_seconds();
    let outcome = load(rt, cluster.server(node)?, work, conns, s.warmup, s.duration)?;
    let cluster_cpu_s = cluster.cpu_seconds() - cpu0;
    Ok(Measured { outcome, cluster_cpu_s, replication: cluster.replication(rt) })
}

fn workloads(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    s: &Settings,
    rows: &mut [Row],
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    let leader = cluster.wait_leader(rt, Duration::from_secs(30))?;
    let follower = cluster.ids().find(|&id| id != leader).context("no follower")?;
    eprintln!("leader: node {leader}; follower measured: node {follower}");
    let retention = json!({"retention": {"max_bytes": 512u64 << 20}});
    let server = cluster.server(leader)?;
    rt.block_on(async {
        for station in [SINGLE_STATION, BATCH_STATION, FAILOVER_STATION] {
            expect(server, "PUT", &format!("/v1/stations/{station}"), retention.clone(), &[200, 201]).await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let tok = cluster.token.as_deref();
    let single = Arc::new(request(
        "POST",
        &format!("/v1/stations/{SINGLE_STATION}/messages"),
        tok,
        "application/octet-stream",
        &[b'x'; KIB],
    ));
    let batch_body = http::batch_body("base64");
    let batch = Arc::new(request(
        "POST",
        &format!("/v1/stations/{BATCH_STATION}/messages/batch"),
        tok,
        "application/json",
        &batch_body,
    ));
    let work = |id: &str| match id {
        "batch100" => {
            (Work::Fixed { request: batch.clone(), ok: 200, items: BATCH as u64, offsets: true }, s.batch_conns)
        }
        "single_64conns" => (Work::Fixed { request: single.clone(), ok: 201, items: 1, offsets: true }, s.single_conns),
        _ => (Work::Fixed { request: single.clone(), ok: 201, items: 1, offsets: true }, 1),
    };
    // Latency first, while nothing else has run; the leader's figures before the follower's.
    for (node, via) in [(leader, "leader"), (follower, "follower")] {
        for row in rows.iter_mut().rev() {
            let (w, conns) = work(row.id);
            match measure(rt, cluster, node, w, conns, s) {
                Ok(m) => {
                    http::progress(row.id, via, &m.outcome);
                    eprintln!("  cluster CPU {:.2} s; replication after it: {}", m.cluster_cpu_s, m.replication);
                    if m.outcome.errors > 0 {
                        failures.push(format!("{} via the {via}: {} errors", row.id, m.outcome.errors));
                    }
                    *(if via == "leader" { &mut row.leader } else { &mut row.follower }) = Some(m);
                }
                Err(e) => {
                    eprintln!("{} via the {via} failed: {e:#}", row.id);
                    failures.push(format!("{} via the {via}: {e:#}", row.id));
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Workload 4: the leader killed

/// What the failover producers share with the main thread.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    kill_at: OnceLock<Instant>,
    /// When the first write sent after the kill was acknowledged.
    first_ack: Mutex<Option<Instant>>,
    acked_before: AtomicU64,
    acked_after: AtomicU64,
    /// Failures after the kill by kind, and the first answer of each failing status.
    failures: Mutex<BTreeMap<String, (u64, String)>>,
}

impl Shared {
    fn acked(&self, sent: Instant) {
        match self.kill_at.get() {
            Some(kill) if sent >= *kill => {
                self.acked_after.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                let mut first = self.first_ack.lock().unwrap_or_else(|e| e.into_inner());
                *first = Some(first.map_or(now, |f| f.min(now)));
            }
            _ => {
                self.acked_before.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn failed(&self, kind: String, detail: impl FnOnce() -> String) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.entry(kind).or_insert_with(|| (0, detail())).0 += 1;
    }
}

/// One producer: single produces to `targets[k % n]`, moving to the next target after any
/// failure; runs until `shared.stop`.
async fn producer(targets: Vec<SocketAddr>, k: usize, req: Arc<Vec<u8>>, shared: Arc<Shared>) {
    let mut at = k;
    let mut conn: Option<Conn> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let addr = targets[at % targets.len()];
        let sent = Instant::now();
        let attempt = async {
            if conn.is_none() {
                conn = Some(tokio::time::timeout(REQUEST_TIMEOUT, Conn::open(addr)).await??);
            }
            let c = conn.as_mut().context("no connection")?;
            let status = tokio::time::timeout(REQUEST_TIMEOUT, c.roundtrip(&req)).await??;
            Ok::<_, anyhow::Error>((status, c.body().to_vec()))
        };
        match attempt.await {
            Ok((201, _)) => {
                shared.acked(sent);
                continue;
            }
            Ok((status, body)) => {
                shared.failed(status.to_string(), || String::from_utf8_lossy(&body).chars().take(300).collect())
            }
            Err(e) => {
                conn = None;
                let kind = if e.is::<tokio::time::error::Elapsed>() { "timeout" } else { "connection" };
                shared.failed(kind.to_owned(), || format!("{e:#}"));
            }
        }
        at += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One round of workload 4.
struct Kill {
    leader: u64,
    new_leader: Option<u64>,
    unavailable: Duration,
    /// From the relaunch of the killed node until it is back (see [`Cluster::recovered`]).
    recovery: Duration,
    acked_before: u64,
    acked_after: u64,
    failures: BTreeMap<String, (u64, String)>,
    /// [`Cluster::replication`] just before the kill.
    replication_before: Value,
}

fn kill_leader(rt: &tokio::runtime::Runtime, cluster: &mut Cluster, s: &Settings) -> anyhow::Result<Kill> {
    let leader = cluster.wait_leader(rt, Duration::from_secs(30))?;
    let targets: Vec<SocketAddr> = cluster.ids().filter(|&id| id != leader).map(|id| cluster.node(id).api).collect();
    let req = Arc::new(request(
        "POST",
        &format!("/v1/stations/{FAILOVER_STATION}/messages"),
        cluster.token.as_deref(),
        "application/octet-stream",
        &[b'k'; KIB],
    ));
    let shared = Arc::new(Shared::default());
    let producers: Vec<_> =
        (0..FAILOVER_PRODUCERS).map(|k| rt.spawn(producer(targets.clone(), k, req.clone(), shared.clone()))).collect();
    std::thread::sleep(s.steady);
    let replication_before = cluster.replication(rt);
    let steady = shared.acked_before.load(Ordering::Relaxed);
    let kill_at = Instant::now();
    let _ = shared.kill_at.set(kill_at);
    cluster.kill(leader);
    let deadline = kill_at + Duration::from_secs(30);
    let first = loop {
        if let Some(first) = *shared.first_ack.lock().unwrap_or_else(|e| e.into_inner()) {
            break Some(first);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // A little more load on the new leader, then stop.
    if first.is_some() {
        std::thread::sleep(Duration::from_millis(300));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for p in producers {
        rt.block_on(p)?;
    }
    let failures = std::mem::take(&mut *shared.failures.lock().unwrap_or_else(|e| e.into_inner()));
    if steady == 0 {
        bail!("no write was acknowledged in the {:?} before the kill: {failures:?}", s.steady);
    }
    let Some(first) = first else {
        bail!(
            "no write acknowledged within 30 s of SIGKILL to leader {leader}; failures: {failures:?}; \
             replication just before the kill: {replication_before}\n{}",
            cluster.diagnostics(rt)
        );
    };
    let unavailable = first - kill_at;
    let new_leader = cluster.leader(rt);
    let relaunched = Instant::now();
    cluster.launch(leader)?;
    cluster.wait_until(rt, relaunched + Duration::from_secs(60), &format!("node {leader} back"), |c| {
        c.recovered(rt, leader)
    })?;
    Ok(Kill {
        leader,
        new_leader,
        unavailable,
        recovery: relaunched.elapsed(),
        acked_before: shared.acked_before.load(Ordering::Relaxed),
        acked_after: shared.acked_after.load(Ordering::Relaxed),
        failures,
        replication_before,
    })
}

fn failover(
    rt: &tokio::runtime::Runtime,
    cluster: &mut Cluster,
    s: &Settings,
    kills: &mut Vec<Kill>,
) -> anyhow::Result<()> {
    for round in 1..=s.kills {
        let k = kill_leader(rt, cluster, s).with_context(|| format!("failover round {round}"))?;
        let failures: Vec<String> = k.failures.iter().map(|(kind, (n, _))| format!("{kind} ×{n}")).collect();
        eprintln!(
            "kill {round}: leader {} SIGKILLed; first acknowledged write after {} ms (new leader {}); \
             node back after {} ms; acked {} before, {} after; failures after the kill: {}; \
             replication before the kill: {}",
            k.leader,
            k.unavailable.as_millis(),
            k.new_leader.map_or("?".to_owned(), |l| l.to_string()),
            k.recovery.as_millis(),
            k.acked_before,
            k.acked_after,
            if failures.is_empty() { "none".to_owned() } else { failures.join(", ") },
            k.replication_before
        );
        kills.push(k);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The run and its report

fn median(sorted: &[Duration]) -> Duration {
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

fn cell(m: &Option<Measured>, latency: bool) -> String {
    match m {
        None => "not measured".to_owned(),
        Some(m) if m.outcome.errors > 0 => format!("**failed**: {} errors", m.outcome.errors),
        Some(m) => figure(&m.outcome, latency),
    }
}

fn markdown(rows: &[Row], kills: &[Kill], s: &Settings) -> String {
    let mut t = String::from("| workload | target | via the leader | met? | via a follower (forwarded) |\n");
    t.push_str("|---|---|---|---|---|\n");
    for r in rows {
        let met = match r.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        t.push_str(&format!(
            "| {} | {} | {} | {met} | {} |\n",
            r.what,
            r.target,
            cell(&r.leader, r.latency),
            cell(&r.follower, r.latency)
        ));
    }
    let mut down: Vec<Duration> = kills.iter().map(|k| k.unavailable).collect();
    down.sort_unstable();
    let mut back: Vec<Duration> = kills.iter().map(|k| k.recovery).collect();
    back.sort_unstable();
    let complete = kills.len() == s.kills;
    let (median_down, max_down) = (median(&down), down.last().copied().unwrap_or_default());
    let met = if !complete {
        format!("**failed** after {} of {} rounds", kills.len(), s.kills)
    } else if median_down <= Duration::from_secs(2) && max_down <= Duration::from_secs(5) {
        "yes".to_owned()
    } else {
        "**no**".to_owned()
    };
    let all: Vec<String> = kills.iter().map(|k| format!("{:.2}", k.unavailable.as_secs_f64())).collect();
    t.push_str(&format!(
        "| leader SIGKILLed under {FAILOVER_PRODUCERS} producers → first acknowledged write, {} kills | median ≤ 2 s, max ≤ 5 s | median **{}**, max **{}** (each, s: {}) | {met} | — |\n",
        kills.len(),
        secs(median_down),
        secs(max_down),
        all.join(", ")
    ));
    t.push_str(&format!(
        "| killed node relaunched → `/readyz` 200 and 3 nodes reachable | — | median {}, max {} | — | — |\n",
        secs(median(&back)),
        secs(back.last().copied().unwrap_or_default())
    ));
    t
}

fn measured_json(row: &Row, via: &str, m: &Measured) -> Value {
    let o = &m.outcome;
    json!({"workload": row.id, "via": via, "messages": o.messages, "requests": o.requests,
        "seconds": (o.seconds * 1000.0).round() / 1000.0, "msg_per_s": o.msg_per_s() as u64,
        "p50_us": o.percentile(0.5), "p99_us": o.percentile(0.99), "errors": o.errors, "first_error": o.first_error,
        "cluster_cpu_s": (m.cluster_cpu_s * 100.0).round() / 100.0, "replication_after": m.replication,
        "client_cpu_s": (o.client_cpu_s * 100.0).round() / 100.0,
        "target": row.target, "met": (via == "leader").then(|| row.met()).flatten()})
}

fn flag(args: &[String], name: &str) -> anyhow::Result<Option<PathBuf>> {
    let Some(i) = args.iter().position(|a| a == name) else { return Ok(None) };
    Ok(Some(PathBuf::from(args.get(i + 1).with_context(|| format!("{name} needs a value"))?)))
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let load_before = output("cat", &["/proc/loadavg"]);
    let quick = args.iter().any(|a| a == "--quick");
    let base = flag(args, "--dir")?.unwrap_or_else(std::env::temp_dir);
    let out = flag(args, "--out")?
        .or_else(|| std::env::var_os("DEPOT_BENCH_OUT").filter(|v| !v.is_empty()).map(PathBuf::from));
    let s = Settings {
        quick,
        warmup: if quick { Duration::from_millis(300) } else { Duration::from_secs(1) },
        duration: if quick { Duration::from_secs(1) } else { Duration::from_secs(5) },
        single_conns: env_usize("DEPOT_BENCH_SINGLE_CONNS", 64),
        batch_conns: env_usize("DEPOT_BENCH_BATCH_CONNS", 16),
        kills: env_usize("DEPOT_BENCH_KILLS", if quick { 5 } else { 10 }),
        steady: if quick { Duration::from_millis(500) } else { Duration::from_secs(1) },
    };
    let client_threads = env_usize("DEPOT_BENCH_CLIENT_THREADS", 2);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(client_threads).enable_all().build()?;
    eprintln!(
        "3-node cluster on {} CPUs; client: {client_threads} threads; {} s per workload after {} ms warm-up; {} leader kills",
        std::thread::available_parallelism().map_or(0, usize::from),
        s.duration.as_secs_f64(),
        s.warmup.as_millis(),
        s.kills
    );
    let pg = PgServer::try_start_with(Durability::Full).map_err(|e| anyhow!(e))?;
    let metadata_url = rt.block_on(pg.database());
    let tmp = tempfile::Builder::new().prefix("depot-bench-cluster-").tempdir_in(&base)?;
    let mut rows = vec![
        Row {
            id: "batch100",
            what: format!("batch POST, 100 × 1 KiB (base64), {} connections", s.batch_conns),
            target: "≥ 150k msg/s",
            meets: |o| o.msg_per_s() >= 150_000.0,
            latency: false,
            leader: None,
            follower: None,
        },
        Row {
            id: "single_64conns",
            what: format!("single POST, 1 KiB, {} connections", s.single_conns),
            target: "≥ 30k msg/s",
            meets: |o| o.msg_per_s() >= 30_000.0,
            latency: false,
            leader: None,
            follower: None,
        },
        Row {
            id: "single_1conn",
            what: "single POST, 1 KiB, one connection, one at a time".to_owned(),
            target: "p50 ≤ 600 µs",
            meets: |o| o.percentile(0.5) <= 600,
            latency: true,
            leader: None,
            follower: None,
        },
    ];
    let mut kills = Vec::new();
    let mut failures = Vec::new();
    let mut cluster = Cluster::new(tmp.path(), metadata_url)?;
    let outcome = cluster.start(&rt).and_then(|()| {
        workloads(&rt, &cluster, &s, &mut rows, &mut failures)?;
        failover(&rt, &mut cluster, &s, &mut kills)
    });
    if let Err(e) = outcome {
        eprintln!("cluster bench failed: {e:#}");
        failures.push(format!("{e:#}"));
    }
    if let (false, Some(out)) = (failures.is_empty(), &out) {
        // Stopped nodes log their shutdown too.
        cluster.stop();
        match cluster.keep_logs(&out.join("cluster-logs")) {
            Ok(()) => eprintln!("the nodes' logs are in {}", out.join("cluster-logs").display()),
            Err(e) => eprintln!("keeping the nodes' logs: {e:#}"),
        }
    }
    cluster.stop();
    drop(cluster);
    drop(rt);
    // The nodes are stopped: their data can go, then Postgres (its drop removes its dir).
    tmp.close().context("removing the cluster's temp dir")?;
    drop(pg);
    let elapsed = started.elapsed();
    eprintln!("cluster bench took {:.0} s", elapsed.as_secs_f64());

    let table = markdown(&rows, &kills, &s);
    println!("{table}");
    let mut down: Vec<Duration> = kills.iter().map(|k| k.unavailable).collect();
    down.sort_unstable();
    let mut workloads = Vec::new();
    for r in &rows {
        for (via, m) in [("leader", &r.leader), ("follower", &r.follower)] {
            if let Some(m) = m {
                workloads.push(measured_json(r, via, m));
            }
        }
    }
    let report = json!({
        "date": output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "commit": output("git", &["rev-parse", "--short", "HEAD"]),
        "uncommitted": output("git", &["status", "--short", "--untracked-files=no"]),
        "mode": if s.quick { "quick" } else { "full" },
        "seconds": elapsed.as_secs_f64().round(),
        "machine": {"cpus": std::thread::available_parallelism().map_or(0, usize::from),
            "kernel": output("uname", &["-r"]),
            "load_average_before": load_before, "load_average_after": output("cat", &["/proc/loadavg"])},
        "config": {"nodes": NODES, "warmup_ms": s.warmup.as_millis() as u64, "duration_ms": s.duration.as_millis() as u64,
            "client_threads": client_threads, "postgres": "depot-pgtest, fsync=on"},
        "workloads": workloads,
        "failover": {
            "producers": FAILOVER_PRODUCERS, "rounds_planned": s.kills, "rounds": kills.len(),
            "median_ms": ms(median(&down)), "max_ms": down.last().map_or(0.0, |d| ms(*d)),
            "met": kills.len() == s.kills && median(&down) <= Duration::from_secs(2)
                && down.last().is_some_and(|d| *d <= Duration::from_secs(5)),
            "kills": kills.iter().map(|k| json!({"leader": k.leader, "new_leader": k.new_leader,
                "first_ack_ms": ms(k.unavailable), "node_back_ms": ms(k.recovery),
                "acked_before_kill": k.acked_before, "replication_before_kill": k.replication_before, "acked_after_kill": k.acked_after,
                "failures_after_kill": k.failures.iter().map(|(kind, (n, first))|
                    (kind.clone(), json!({"count": n, "first": first}))).collect::<serde_json::Map<_, _>>()}))
                .collect::<Vec<_>>(),
        },
        "failures": failures,
    });
    if let Some(out) = out {
        std::fs::create_dir_all(&out)?;
        std::fs::write(out.join("cluster.json"), serde_json::to_string_pretty(&report)? + "\n")?;
        std::fs::write(out.join("cluster.md"), &table)?;
        eprintln!("wrote {}/cluster.json and cluster.md", out.display());
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if !failures.is_empty() {
        bail!("{} failure(s): {}", failures.len(), failures.join("; "));
    }
    Ok(())
}
