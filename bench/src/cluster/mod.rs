//! `depot-bench cluster [--quick] [--dir DIR] [--out DIR]`: issue 5's targets on a replicated
//! 3-node cluster, all on this machine.
//!
//! Three release `depot serve` processes (next to this binary) started by the test kit's cluster
//! harness ([`depot_tests::cluster`], direct links, no proxies) on loopback ports, one data dir
//! each in a temp dir under `--dir` (default: the system temp dir), their metadata in a throwaway
//! Postgres started by `depot-pgtest` with production durability (`fsync=on`). Environment of the
//! nodes: the kit's ([`depot_tests::cluster::serve_command`]), with `DEPOT_LOG=warn`
//! (`$DEPOT_BENCH_NODE_LOG` if set). The client is the test kit's HTTP/1.1 keep-alive client (see
//! [`crate::load`]), authenticated with an admin access token (valid on every node: the JWT
//! secret derives from the cluster secret).
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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use depot_pgtest::{Durability, PgServer};
use depot_tests::cluster::{Cluster, Config};
use depot_tests::process;
use serde_json::{json, Value};

use crate::load::{self, batch_body, expect_at, figure, load, progress, request, Outcome, Target, Work, BATCH, KIB};
use crate::sys::{env_usize, output, random_u64};

mod failover;

use failover::{failover, Kill};

const NODES: u64 = 3;
const SINGLE_STATION: &str = "bench";
const BATCH_STATION: &str = "bench-batch";
const FAILOVER_STATION: &str = "failover";
/// Producers kept running while the leader is killed.
const FAILOVER_PRODUCERS: usize = 4;
/// A failover producer gives up on a request after this long and tries the other node: longer
/// than the target, so that the nodes, not the client, decide when a request fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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
// The cluster: the test kit's, with direct links

/// Three release `depot serve` nodes in a temp dir under `dir`, their metadata at
/// `metadata_url`; returns once all are ready and agree on a leader, logged in as admin.
pub(crate) fn start(dir: &Path, metadata_url: String) -> anyhow::Result<Cluster> {
    let password = format!("bench-{:016x}{:016x}", random_u64(), random_u64());
    let mut config = Config::new(&load::depot_binary()?, metadata_url, &password);
    config.cluster_id = "bench".to_owned();
    config.log = std::env::var("DEPOT_BENCH_NODE_LOG").unwrap_or_else(|_| "warn".to_owned());
    config.dir = Some(dir.to_owned());
    let ids: Vec<u64> = (1..=NODES).collect();
    let cluster = Cluster::try_start(config, NODES as usize, &ids).map_err(|e| anyhow!(e))?;
    for id in cluster.ids() {
        eprintln!("node {id}: API {}, cluster port {}", cluster.api(id), cluster.cluster_addr(id));
    }
    Ok(cluster)
}

/// Node `id` as a target of load.
pub(crate) fn target(cluster: &Cluster, id: u64) -> anyhow::Result<Target> {
    let pid = cluster.pid(id).with_context(|| format!("node {id} is not running"))?;
    Ok(Target { addr: cluster.api(id), pid })
}

/// The leader every running node names, once they agree.
pub(crate) fn wait_leader(cluster: &Cluster, within: Duration) -> anyhow::Result<u64> {
    cluster
        .try_eventually(within, "a leader all running nodes agree on", || cluster.agreed_leader())
        .map_err(|e| anyhow!(e))
}

/// SIGTERM to every running node at once; waits for them to stop.
pub(crate) fn stop(cluster: &mut Cluster) {
    if let Err(e) = cluster.stop_all(Duration::from_secs(30)) {
        eprintln!("{e}");
    }
}

/// Node `id` back: `/readyz` 200, and the leader (that all agree on) reports 3 nodes, all
/// reachable, each with a known `matched_index`.
fn recovered(cluster: &Cluster, id: u64) -> bool {
    if !cluster.ready(id) {
        return false;
    }
    let Some(leader) = cluster.agreed_leader() else { return false };
    let Some(view) = cluster.view(leader) else { return false };
    let nodes = view["nodes"].as_array().map_or(&[][..], Vec::as_slice);
    nodes.len() == NODES as usize
        && nodes.iter().all(|n| {
            n["reachable"].as_bool() == Some(true) && (n["id"] == leader || n["matched_index"].as_u64().is_some())
        })
}

/// CPU seconds the running nodes have used so far.
fn cpu_seconds(cluster: &Cluster) -> f64 {
    cluster
        .running()
        .into_iter()
        .filter_map(|id| cluster.pid(id))
        .map(|pid| process::cpu_seconds(&format!("/proc/{pid}/stat")))
        .sum()
}

/// Copies every node's logs into `dir`.
fn keep_logs(cluster: &Cluster, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for id in cluster.ids() {
        for (log, kind) in cluster.logs(id).into_iter().zip(["stdout", "stderr"]) {
            std::fs::copy(log, dir.join(format!("n{id}.{kind}.log")))?;
        }
    }
    Ok(())
}

/// Replication as the leader sees it: its last log index and each node's `matched_index`.
fn replication(cluster: &Cluster) -> Value {
    let Some(leader) = cluster.agreed_leader() else { return json!({"leader": null}) };
    let Some(view) = cluster.view(leader) else { return json!({"leader": leader}) };
    let matched: serde_json::Map<String, Value> = view["nodes"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|n| (n["id"].to_string(), n["matched_index"].clone()))
        .collect();
    json!({"leader": leader, "last_log_index": view["last_log_index"], "matched_index": matched})
}

// ---------------------------------------------------------------------------------------------
// Workloads 1-3

struct Measured {
    outcome: Outcome,
    /// CPU seconds of all three nodes over the warm-up and the measurement.
    cluster_cpu_s: f64,
    /// [`replication`] right after the measurement.
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
    let cpu0 = cpu_seconds(cluster);
    let outcome = load(rt, target(cluster, node)?, work, conns, s.warmup, s.duration)?;
    let cluster_cpu_s = cpu_seconds(cluster) - cpu0;
    Ok(Measured { outcome, cluster_cpu_s, replication: replication(cluster) })
}

fn workloads(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    s: &Settings,
    rows: &mut [Row],
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    let leader = wait_leader(cluster, Duration::from_secs(30))?;
    let follower = cluster.ids().into_iter().find(|&id| id != leader).context("no follower")?;
    eprintln!("leader: node {leader}; follower measured: node {follower}");
    let retention = json!({"retention": {"max_bytes": 512u64 << 20}});
    let (addr, tok) = (cluster.api(leader), Some(cluster.token()));
    rt.block_on(async {
        for station in [SINGLE_STATION, BATCH_STATION, FAILOVER_STATION] {
            expect_at(addr, tok, "PUT", &format!("/v1/stations/{station}"), retention.clone(), &[200, 201]).await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let single = Arc::new(request(
        "POST",
        &format!("/v1/stations/{SINGLE_STATION}/messages"),
        tok,
        "application/octet-stream",
        &[b'x'; KIB],
    ));
    let batch_body = batch_body("base64");
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
                    progress(row.id, via, &m.outcome);
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
    match start(&base, metadata_url) {
        Ok(mut cluster) => {
            let outcome = workloads(&rt, &cluster, &s, &mut rows, &mut failures)
                .and_then(|()| failover(&rt, &mut cluster, &s, &mut kills));
            if let Err(e) = outcome {
                eprintln!("cluster bench failed: {e:#}");
                failures.push(format!("{e:#}"));
            }
            // Stopped nodes log their shutdown too.
            stop(&mut cluster);
            if let (false, Some(out)) = (failures.is_empty(), &out) {
                match keep_logs(&cluster, &out.join("cluster-logs")) {
                    Ok(()) => eprintln!("the nodes' logs are in {}", out.join("cluster-logs").display()),
                    Err(e) => eprintln!("keeping the nodes' logs: {e:#}"),
                }
            }
            // The nodes are stopped: dropping the cluster removes their dirs.
        }
        Err(e) => {
            eprintln!("cluster bench failed: {e:#}");
            failures.push(format!("{e:#}"));
        }
    }
    drop(rt);
    // Then Postgres (its drop removes its dir).
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
