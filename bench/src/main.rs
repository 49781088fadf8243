//! `depot-bench broker [--quick] [--dir DIR]`: measures the broker core against issue 2's
//! targets and prints a markdown table plus one JSON line per figure. Each phase runs in its own
//! child process so that peak RSS and recovery time belong to that phase alone.
//!
//! `depot-bench http [--quick] [--dir DIR]`: measures the `depot` gateway over HTTP against
//! issue 3's targets; see [`http`].
//!
//! `depot-bench meta [--quick]`: the metadata stores (Postgres, SQLite) against issue 4's
//! targets; see [`meta`].
//!
//! `depot-bench peers [--quick] [--out DIR]`: issue 7's workloads against Depot, NATS JetStream
//! and RabbitMQ on this machine; see [`peers`].
//!
//! `depot-bench cluster [--quick] [--dir DIR] [--out DIR]`: issue 5's targets on a replicated
//! 3-node cluster on this machine, leader failover included; see [`cluster`].
//!
//! `depot-bench push [--quick] [--dir DIR]`: push delivery's throughput, latency and isolation
//! against receivers in this process; see [`push`].
//!
//! `depot-bench onewrite [--quick] [--dir DIR]`: issue 19's storage layouts (today's two writes,
//! the Raft log as the store, one log per station) on Depot's own log code; see [`onewrite`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use depot_broker::station::{Command, GroupConfig, NewMessage, Retention, SettleOp, StationConfig};
use depot_broker::{Broker, BrokerOptions};
use serde_json::json;

mod cluster;
mod http;
mod ingest;
mod load;
mod meta;
mod onewrite;
mod peers;
mod push;
mod sys;
mod tiering;

const KIB: usize = 1024;

/// A bench message carrying `payload` (shared, not copied).
pub(crate) fn message(payload: &Bytes) -> NewMessage {
    NewMessage {
        content_type: "application/octet-stream".into(),
        headers: Vec::new(),
        payload: payload.clone(),
        idempotency_key: None,
        deliver_at: None,
    }
}

async fn open(dir: &Path) -> anyhow::Result<Broker> {
    let mut opts = BrokerOptions::new(dir);
    if let Some(n) = std::env::var("DEPOT_BENCH_IN_FLIGHT").ok().and_then(|v| v.parse().ok()) {
        opts.proposals_in_flight = n;
    }
    opts.preallocate_raft_log = std::env::var("DEPOT_BENCH_PREALLOCATE").is_ok_and(|v| v == "1");
    Ok(Broker::open(opts).await?)
}

async fn put_station(broker: &Broker, name: &str, config: StationConfig) -> anyhow::Result<()> {
    broker.submit(Command::PutStation { station: name.into(), config }).await?;
    Ok(())
}

/// Runs `tasks` producers, each sending `batch` messages per request, for `duration`.
/// Returns (messages acknowledged, elapsed, per-request latencies in µs).
async fn produce_load(
    broker: &Broker,
    station: &str,
    tasks: usize,
    batch: usize,
    duration: Duration,
    limit_bytes: Option<u64>,
) -> anyhow::Result<(u64, Duration, Vec<u64>)> {
    let payload = Bytes::from(vec![0x5au8; KIB]);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (broker, station, payload, done, stop) =
            (broker.clone(), station.to_string(), payload.clone(), done.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < duration {
                let messages = (0..batch).map(|_| message(&payload)).collect();
                let t = Instant::now();
                broker.submit(Command::Produce { station: station.clone(), messages }).await?;
                latencies.push(t.elapsed().as_micros() as u64);
                let total = done.fetch_add(batch as u64, Ordering::Relaxed) + batch as u64;
                if limit_bytes.is_some_and(|l| total * KIB as u64 >= l) {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.await??);
    }
    Ok((done.load(Ordering::Relaxed), start.elapsed(), latencies))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes this process handed to write syscalls, and bytes it caused to reach the block layer.
fn io_written() -> (u64, u64) {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        io.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    (field("wchar:"), field("write_bytes:"))
}

fn emit(value: serde_json::Value) {
    println!("{value}");
}

async fn phase(name: &str, dir: &Path, quick: bool) -> anyhow::Result<()> {
    let secs = if quick { 3 } else { 10 };
    match name {
        "fsync" => {
            let path = dir.join("fsync-probe");
            let mut f = std::fs::File::create(&path)?;
            let block = vec![1u8; KIB];
            let n = if quick { 500 } else { 2000 };
            let t = Instant::now();
            for _ in 0..n {
                f.write_all(&block)?;
                f.sync_data()?;
            }
            let per = t.elapsed() / n;
            // The ceiling for durable throughput: large appends, each fdatasynced.
            let big = vec![2u8; 4 << 20];
            let rounds = if quick { 25 } else { 100 };
            let t = Instant::now();
            for _ in 0..rounds {
                f.write_all(&big)?;
                f.sync_data()?;
            }
            let mb_s = (rounds as f64 * 4.0 * 1.048_576) / t.elapsed().as_secs_f64();
            emit(json!({"phase": "fsync", "append_fdatasync_us": per.as_micros() as u64,
                "per_s": (1.0 / per.as_secs_f64()) as u64, "fsynced_mb_per_s": mb_s as u64}));
        }
        "batch100" | "single64" | "single1" => {
            let broker = open(dir).await?;
            let short = StationConfig {
                retention: Retention { max_bytes: Some(512 << 20), ..Retention::default() },
                ..StationConfig::default()
            };
            put_station(&broker, "bench", short).await?;
            let (tasks, batch) = match name {
                "batch100" => (16, 100),
                "single64" => (64, 1),
                _ => (1, 1),
            };
            let (wchar0, disk0) = io_written();
            let (n, elapsed, mut lat) =
                produce_load(&broker, "bench", tasks, batch, Duration::from_secs(secs), None).await?;
            let (wchar1, disk1) = io_written();
            lat.sort_unstable();
            let payload = (n * KIB as u64).max(1) as f64;
            let ratio = |bytes: u64| (bytes as f64 / payload * 100.0).round() / 100.0;
            emit(json!({"phase": name, "messages": n, "seconds": elapsed.as_secs_f64(),
                "msg_per_s": (n as f64 / elapsed.as_secs_f64()) as u64,
                "p50_us": percentile(&lat, 0.5), "p99_us": percentile(&lat, 0.99),
                "written_per_payload_byte": ratio(wchar1 - wchar0),
                "disk_per_payload_byte": ratio(disk1 - disk0)}));
            broker.shutdown().await?;
        }
        "fetch_ack" => {
            let broker = open(dir).await?;
            put_station(&broker, "bench", StationConfig::default()).await?;
            let total = if quick { 100_000 } else { 400_000 };
            produce_load(&broker, "bench", 16, 100, Duration::from_secs(3600), Some(total * KIB as u64)).await?;
            // Measure fetch + ack alone, not the writeback of the fill.
            std::process::Command::new("sync").status()?;
            let group = GroupConfig::default();
            broker.submit(Command::PutGroup { station: "bench".into(), group: "g".into(), config: group }).await?;
            let start = Instant::now();
            let acked = Arc::new(AtomicU64::new(0));
            let mut handles = Vec::new();
            let consumers: usize =
                std::env::var("DEPOT_BENCH_CONSUMERS").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
            for _ in 0..consumers {
                let (broker, acked) = (broker.clone(), acked.clone());
                handles.push(tokio::spawn(async move {
                    loop {
                        let fetched = broker.fetch("bench", "g", 100, None, Duration::ZERO).await?;
                        if fetched.receipts.is_empty() {
                            return Ok::<_, anyhow::Error>(());
                        }
                        let n = fetched.receipts.len() as u64;
                        broker.settle("bench", "g", &fetched.receipts, SettleOp::Ack).await?;
                        acked.fetch_add(n, Ordering::Relaxed);
                    }
                }));
            }
            for h in handles {
                h.await??;
            }
            let elapsed = start.elapsed();
            let n = acked.load(Ordering::Relaxed);
            emit(json!({"phase": name, "messages": n, "seconds": elapsed.as_secs_f64(),
                "msg_per_s": (n as f64 / elapsed.as_secs_f64()) as u64}));
            broker.shutdown().await?;
        }
        "memory" => {
            let broker = open(dir).await?;
            let short = StationConfig {
                retention: Retention { max_age_ms: Some(10_000), max_bytes: Some(256 << 20), ..Retention::default() },
                ..StationConfig::default()
            };
            put_station(&broker, "flow", short).await?;
            let gib = if quick { 1u64 } else { 5 };
            let (n, elapsed, _) =
                produce_load(&broker, "flow", 16, 100, Duration::from_secs(3600), Some(gib << 30)).await?;
            let disk = dir_bytes(dir);
            emit(json!({"phase": name, "gib": gib, "messages": n, "seconds": elapsed.as_secs_f64(),
                "rss_peak_mib": rss_peak_kib() / 1024, "disk_mib_after": disk >> 20}));
            broker.shutdown().await?;
        }
        "fill1g" => {
            let broker = open(dir).await?;
            put_station(&broker, "big", StationConfig::default()).await?;
            let gib = if quick { 256u64 << 20 } else { 1 << 30 };
            let (n, elapsed, _) = produce_load(&broker, "big", 16, 100, Duration::from_secs(3600), Some(gib)).await?;
            emit(json!({"phase": name, "messages": n, "seconds": elapsed.as_secs_f64()}));
            broker.shutdown().await?;
        }
        "recover" => {
            let t = Instant::now();
            let broker = open(dir).await?;
            let elapsed = t.elapsed();
            let stats = broker.station("big").await?.stats;
            emit(json!({"phase": name,
                "seconds": elapsed.as_secs_f64(), "station_mib": stats.bytes >> 20, "messages": stats.messages}));
            broker.shutdown().await?;
        }
        other => bail!("unknown phase {other}"),
    }
    Ok(())
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            total += if p.is_dir() { dir_bytes(&p) } else { e.metadata().map_or(0, |m| m.len()) };
        }
    }
    total
}

fn run_child(phase: &str, dir: &Path, quick: bool) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("phase").arg(phase).arg(dir);
    if quick {
        cmd.arg("--quick");
    }
    // Start each phase with no dirty pages left over from the previous one.
    let _ = std::process::Command::new("sync").status();
    let out = cmd.output().with_context(|| format!("running phase {phase}"))?;
    if !out.status.success() {
        bail!("phase {phase} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().context("phase printed nothing")?;
    Ok(serde_json::from_str(line)?)
}

fn drop_caches() -> bool {
    std::process::Command::new("sync").status().is_ok_and(|s| s.success())
        && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    match args.first().map(String::as_str) {
        Some("phase") => {
            let name = args.get(1).context("phase name")?;
            let dir = PathBuf::from(args.get(2).context("phase dir")?);
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(phase(name, &dir, quick))
        }
        Some("broker") => {
            let base = match args.iter().position(|a| a == "--dir") {
                Some(i) => PathBuf::from(args.get(i + 1).context("--dir needs a value")?),
                None => std::env::current_dir()?,
            };
            let tmp = tempfile::tempdir_in(&base)?;
            let mut results = Vec::new();
            for name in ["fsync", "single1", "single64", "batch100", "fetch_ack", "memory"] {
                let dir = tmp.path().join(name);
                std::fs::create_dir_all(&dir)?;
                let r = run_child(name, &dir, quick)?;
                eprintln!("{r}");
                results.push(r);
                std::fs::remove_dir_all(&dir)?;
            }
            let dir = tmp.path().join("recovery");
            std::fs::create_dir_all(&dir)?;
            run_child("fill1g", &dir, quick)?;
            let mut warm = run_child("recover", &dir, quick)?;
            warm["mode"] = json!("clean shutdown, page cache warm");
            eprintln!("{warm}");
            results.push(warm);
            let _ = std::fs::remove_file(dir.join("clean-shutdown"));
            let cold = drop_caches();
            let mut dirty = run_child("recover", &dir, quick)?;
            dirty["mode"] = json!(if cold {
                "after a crash (full checksum scan), page cache dropped"
            } else {
                "after a crash (full checksum scan)"
            });
            eprintln!("{dirty}");
            results.push(dirty);
            println!("{}", serde_json::to_string_pretty(&results)?);
            Ok(())
        }
        Some("http") => http::run(&args[1..]),
        Some("http-ceiling") => http::ceiling(&args[1..]),
        Some("meta") => meta::run(&args[1..]),
        Some("peers") => peers::run(&args[1..]),
        Some("cluster") => cluster::run(&args[1..]),
        Some("push") => push::run(&args[1..]),
        Some("ingest") => ingest::run(&args[1..]),
        Some("tiering") => tiering::run(&args[1..]),
        Some("onewrite") => onewrite::run(&args[1..]),
        _ => bail!(
            "usage: depot-bench broker [--quick] [--dir DIR]\n       depot-bench http [--quick] [--dir DIR]\n       \
             depot-bench meta [--quick]\n       depot-bench peers [--quick] [--dir DIR] [--out DIR]\n       \
             depot-bench cluster [--quick] [--dir DIR] [--out DIR]\n       depot-bench push [--quick] [--dir DIR]\n       \
             depot-bench ingest [--quick] [--rounds N] [--dir DIR]\n       depot-bench tiering [--quick] [--dir DIR]\n       \
             depot-bench onewrite [--quick] [--dir DIR] [--writers N] [--stations 1,10,1000] [--seconds S]"
        ),
    }
}
