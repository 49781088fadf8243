//! `depot-bench tiering [--quick] [--dir DIR] [--bytes N] [--conns N]`: what tiering costs, how fast it
//! uploads and how fast a replay reads back from the bucket, on this machine, against a real
//! S3-compatible server process (s3s-fs, from the test kit), everything on loopback.
//!
//! 1. **Produce without tiering**: a fresh release `depot dev`; batches of 100 × 1 KiB with 16
//!    connections (`--conns`) until `--bytes` (5 GiB; 256 MiB with `--quick`) are stored, with the default
//!    7-day retention. The data dir's disk use (`du`, hard links counted once) is sampled.
//! 2. **Produce with tiering**: the same on a fresh server with a `[tiering]` bucket and the
//!    station's `after_ms` at 10 s (1 s with `--quick`), so sealed 64 MiB segments upload and
//!    their local copies go while produce runs. Then until every sealed segment is in the
//!    bucket and its local copy deleted. Reported: the peak disk use of the data dir without
//!    and with the read cache.
//! 3. **Replay from the tier, cold**: the tiered server restarted (its cache is emptied at
//!    start); a new group from offset 0 drains with fetch 100 + ack on 16 connections for up to
//!    30 s (at most the whole station), reading tiered offsets through the cache.
//! 4. **The SDK alone**: the same client (`depot_broker::tier::Bucket`, same part size) puts
//!    as many 64 MiB objects one after another, as the uploader does, to the same server.
//!
//! Targets (issue 17): produce with tiering within 10% of without; local disk under 1 GiB
//! plus the cache; replay at least 100 MB/s; upload at least 0.5× the SDK alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use depot_broker::tier::{Bucket, TierOptions, DEFAULT_PART_BYTES};
use depot_tests::s3::{S3Server, ACCESS_KEY, REGION, SECRET_KEY};
use serde_json::json;

use crate::load::{
    admin, batch_body, expect, load, load_until, request, start_depot_with, stop, token, Target, Work, KIB,
};

const STATION: &str = "bench-tiered";
const BUCKET: &str = "tiering";
const SEGMENT: u64 = 64 << 20;

struct Produced {
    seconds: f64,
    bytes: u64,
    server_cpu_s: f64,
}

impl Produced {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds.max(1e-9)
    }

    fn cpu_s_per_gib(&self) -> f64 {
        self.server_cpu_s / (self.bytes as f64 / f64::from(1u32 << 30))
    }
}

/// Produces `bytes` of 1 KiB messages in batches of 100 with `conns` connections.
fn produce(
    rt: &tokio::runtime::Runtime,
    server: &depot_tests::process::Server,
    bytes: u64,
    conns: usize,
) -> anyhow::Result<Produced> {
    let body = batch_body("base64");
    let req = Arc::new(request(
        "POST",
        &format!("/v1/stations/{STATION}/messages/batch"),
        token(server),
        "application/json",
        &body,
    ));
    let target = Target::of(server);
    let cpu0 = target.cpu_seconds();
    let started = Instant::now();
    let messages = load_until(rt, target, &req, conns, bytes / KIB as u64)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(Produced { seconds, bytes: messages * KIB as u64, server_cpu_s: target.cpu_seconds() - cpu0 })
}

fn readyz_lag(
    rt: &tokio::runtime::Runtime,
    server: &depot_tests::process::Server,
) -> anyhow::Result<(Option<u64>, bool)> {
    let (_, text) = rt.block_on(admin(server.addr, None, "GET", "/readyz", json!({})))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    Ok((v["tiering"]["lag_bytes"].as_u64(), v["tiering"]["reachable"] == true))
}

fn tiered_bytes(rt: &tokio::runtime::Runtime, server: &depot_tests::process::Server) -> anyhow::Result<u64> {
    let (_, text) =
        rt.block_on(admin(server.addr, token(server), "GET", &format!("/v1/stations/{STATION}"), json!({})))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    v["stats"]["tiered"]["bytes"].as_u64().context("no stats.tiered.bytes")
}

/// Disk use of `dir` in bytes as `du` counts it (allocated blocks, hard links once).
fn du(dir: &std::path::Path) -> u64 {
    let out = std::process::Command::new("du").arg("-s").arg("--block-size=1").arg(dir).output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// Disk use of a data dir's parts at one moment, in bytes as `du` counts them (allocated blocks,
/// each hard-linked file once, in the part listed first).
#[derive(Clone, Copy, Debug, Default)]
struct DiskUse {
    raft: u64,
    stations: u64,
    /// Only what no station log links any more (hard links to live segments count there).
    snapshots: u64,
    cache: u64,
    other: u64,
}

impl DiskUse {
    fn sample(data: &std::path::Path) -> DiskUse {
        let parts = ["raft", "sm/stations", "sm/snapshots", "tier-cache"].map(|p| data.join(p));
        let out = std::process::Command::new("du").arg("-s").arg("--block-size=1").args(&parts).arg(data).output();
        let text = out.ok().and_then(|o| String::from_utf8(o.stdout).ok()).unwrap_or_default();
        let mut sizes = [0u64; 5];
        for (line, size) in text.lines().zip(sizes.iter_mut()) {
            *size = line.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
        let [raft, stations, snapshots, cache, other] = sizes;
        DiskUse { raft, stations, snapshots, cache, other }
    }

    /// Everything but the read cache.
    fn local(&self) -> u64 {
        self.raft + self.stations + self.snapshots + self.other
    }

    fn describe(&self) -> String {
        format!(
            "raft log {:.0}, station logs {:.0}, snapshots only {:.0}, other {:.0}",
            mib(self.raft),
            mib(self.stations),
            mib(self.snapshots),
            mib(self.other)
        )
    }
}

/// Samples the disk use of a data dir every 250 ms until dropped; keeps the sample with the most
/// local bytes (the read cache apart) and the cache's own peak.
struct DiskPeak {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<(DiskUse, u64)>>,
}

impl DiskPeak {
    fn start(data: PathBuf) -> DiskPeak {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut peak, mut cache) = (DiskUse::default(), 0u64);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let now = DiskUse::sample(&data);
                if now.local() > peak.local() {
                    peak = now;
                }
                cache = cache.max(now.cache);
                std::thread::sleep(Duration::from_millis(250));
            }
            (peak, cache)
        });
        DiskPeak { stop, handle: Some(handle) }
    }

    /// (the sample with the most local bytes, the peak of the cache).
    fn finish(mut self) -> (DiskUse, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

fn station_stats(
    rt: &tokio::runtime::Runtime,
    server: &depot_tests::process::Server,
) -> anyhow::Result<serde_json::Value> {
    let (_, text) =
        rt.block_on(admin(server.addr, token(server), "GET", &format!("/v1/stations/{STATION}"), json!({})))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    Ok(v["stats"].clone())
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let base = match args.iter().position(|a| a == "--dir") {
        Some(i) => PathBuf::from(args.get(i + 1).context("--dir needs a value")?),
        None => std::env::temp_dir(),
    };
    let bytes: u64 = match args.iter().position(|a| a == "--bytes") {
        Some(i) => args.get(i + 1).context("--bytes needs a value")?.parse().context("--bytes: a number of bytes")?,
        None if quick => 256 << 20,
        None => 5 << 30,
    };
    let after_ms: u64 = if quick { 1_000 } else { 10_000 };
    // Fewer connections produce slower: what stays local is about the produce rate times
    // `after_ms` plus the upload lag, so the disk figure depends on the rate.
    let conns: usize = match args.iter().position(|a| a == "--conns") {
        Some(i) => args.get(i + 1).context("--conns needs a value")?.parse().context("--conns: a number")?,
        None => 16,
    };
    // The SDK client of step 4 takes its credentials from the default chain, like a node's.
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let tmp = tempfile::tempdir_in(&base)?;
    if std::env::var_os("DEPOT_BENCH_KEEP").is_some() {
        eprintln!("keeping {}", tmp.path().display());
    }
    for run in ["plain", "tiered"] {
        std::fs::create_dir_all(tmp.path().join(run))?;
    }
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    eprintln!("s3s-fs at {}; {} MiB per run; after_ms {after_ms}", s3.endpoint(), bytes >> 20);

    // 1. Without tiering.
    let plain_dir = tmp.path().join("plain");
    let server = start_depot_with(&rt, &plain_dir, &[])?;
    rt.block_on(expect(&server, "PUT", &format!("/v1/stations/{STATION}"), json!({}), &[201]))?;
    let peak = DiskPeak::start(plain_dir.join("data"));
    let plain = produce(&rt, &server, bytes, conns)?;
    let (plain_peak, _) = peak.finish();
    let plain_disk = plain_peak.local();
    eprintln!("produce without tiering: {:.0} MB/s, server CPU {:.2} s", plain.mb_per_s(), plain.server_cpu_s);
    stop(server, &plain_dir.join("depot.log"))?;
    std::fs::remove_dir_all(&plain_dir)?;

    // 2. With tiering: produce while sealed segments upload and their copies go, then drain.
    let tiered_dir = tmp.path().join("tiered");
    let server = start_depot_with(&rt, &tiered_dir, &s3.depot_env(BUCKET))?;
    let station = json!({"tiering": {"after_ms": after_ms}});
    rt.block_on(expect(&server, "PUT", &format!("/v1/stations/{STATION}"), station, &[201]))?;
    let peak = DiskPeak::start(tiered_dir.join("data"));
    let started = Instant::now();
    // The S3 server shares the 2 cores: its CPU while produce runs is what the bucket costs
    // produce here, and would be another machine's in production.
    let s3_cpu = || s3.pid().map_or(0.0, |pid| depot_tests::process::cpu_seconds(&format!("/proc/{pid}/stat")));
    let s3_cpu0 = s3_cpu();
    let tiered = produce(&rt, &server, bytes, conns)?;
    let s3_cpu_s = s3_cpu() - s3_cpu0;
    eprintln!(
        "produce with tiering: {:.0} MB/s, server CPU {:.2} s, S3 server CPU meanwhile {s3_cpu_s:.2} s",
        tiered.mb_per_s(),
        tiered.server_cpu_s
    );
    let sealed = (tiered.bytes / SEGMENT).saturating_sub(1).max(1);
    let deadline = Instant::now() + Duration::from_secs(900);
    let uploaded = loop {
        let (lag, reachable) = readyz_lag(&rt, &server)?;
        let done = tiered_bytes(&rt, &server)?;
        if reachable && lag == Some(0) && done >= sealed * SEGMENT * 9 / 10 {
            break done;
        }
        if Instant::now() > deadline {
            bail!("tiering did not catch up within 15 minutes (lag {lag:?}, {done} bytes tiered)");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let drained = started.elapsed().as_secs_f64();
    // Segments become eligible `after_ms` after they are sealed, so the window starts then.
    let upload_mb_s = uploaded as f64 / 1e6 / (drained - after_ms as f64 / 1e3).max(1e-3);
    eprintln!("tiered {uploaded} bytes in {drained:.1} s from the start of produce");
    let deadline = Instant::now() + Duration::from_secs(120);
    let stats = loop {
        let stats = station_stats(&rt, &server)?;
        if stats["local_bytes"].as_u64().is_some_and(|l| l < 3 * SEGMENT) || Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The snapshot that follows the deletion lets go of the deleted files (within seconds).
    let data = tiered_dir.join("data");
    let deadline = Instant::now() + Duration::from_secs(30);
    let local = stats["local_bytes"].as_u64().unwrap_or(0);
    let settled_disk = loop {
        // Once the snapshot links only what is still local.
        if du(&data.join("sm/snapshots")) <= local + (1 << 20) || Instant::now() > deadline {
            break du(&data);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let (tiered_peak, _) = peak.finish();
    let tiered_disk = tiered_peak.local();
    eprintln!("peak data dir with tiering {:.0} MiB: {}", mib(tiered_disk), tiered_peak.describe());
    let part = |p: &str| du(&data.join(p)) >> 20;
    eprintln!(
        "after tiering: {stats}; data dir {settled_disk} bytes (MiB: raft {}, snapshots {}, stations {})",
        part("raft"),
        part("sm/snapshots"),
        part("sm/stations")
    );
    stop(server, &tiered_dir.join("depot.log"))?;

    // 3. Replay from the tier with a cold cache.
    let server = start_depot_with(&rt, &tiered_dir, &s3.depot_env(BUCKET))?;
    let group = format!("/v1/stations/{STATION}/consumer-groups/replay");
    rt.block_on(expect(&server, "PUT", &group, json!({"start": "earliest"}), &[201]))?;
    let tok = token(&server).map(str::to_owned);
    let work = Work::FetchAck {
        fetch: Arc::new(request(
            "POST",
            &format!("{group}/fetch"),
            tok.as_deref(),
            "application/json",
            br#"{"max_messages":100}"#,
        )),
        ack_path: Arc::new(format!("{group}/ack")),
        token: tok.clone().map(Arc::new),
    };
    let peak = DiskPeak::start(tiered_dir.join("data"));
    let replay = load(&rt, Target::of(&server), work, 16, Duration::ZERO, Duration::from_secs(30))?;
    let (replay_peak, replay_cache) = peak.finish();
    let replay_disk = replay_peak.local();
    if replay.errors > 0 {
        bail!("replay: {} errors, the first: {:?}", replay.errors, replay.first_error);
    }
    let replay_mb_s = replay.messages as f64 * KIB as f64 / 1e6 / replay.seconds.max(1e-9);
    let replay_cpu_us = replay.server_cpu_s * 1e6 / replay.messages.max(1) as f64;
    let metrics = rt.block_on(admin(server.addr, token(&server), "GET", "/metrics", json!({})))?.1;
    let read_bytes = metrics
        .lines()
        .find_map(|l| l.strip_prefix("depot_tier_read_bytes_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    eprintln!(
        "replay: {} messages in {:.1} s, {read_bytes} bytes read from the bucket",
        replay.messages, replay.seconds
    );
    stop(server, &tiered_dir.join("depot.log"))?;

    // 4. The SDK alone, same client and part size, objects of one segment each.
    let options = TierOptions {
        bucket: BUCKET.to_owned(),
        endpoint: Some(s3.endpoint()),
        region: Some(REGION.to_owned()),
        prefix: "baseline/".to_owned(),
        path_style: true,
        cache_bytes: 1 << 30,
        part_bytes: DEFAULT_PART_BYTES,
    };
    let (sdk_seconds, sdk_bytes) = rt.block_on(async {
        let bucket = Bucket::new(options).await;
        let object = vec![b'o'; SEGMENT as usize];
        let count = (uploaded / SEGMENT).clamp(1, 16);
        let started = Instant::now();
        for i in 0..count {
            bucket.put(&bucket.key(&format!("{i:06}")), object.clone()).await?;
        }
        Ok::<_, anyhow::Error>((started.elapsed().as_secs_f64(), count * SEGMENT))
    })?;
    let sdk_mb_s = sdk_bytes as f64 / 1e6 / sdk_seconds;
    if std::env::var_os("DEPOT_BENCH_KEEP").is_some() {
        let _ = tmp.keep();
    }

    let ratio = tiered.mb_per_s() / plain.mb_per_s();
    let upload_ratio = upload_mb_s / sdk_mb_s;
    println!("| run | MB/s | server CPU | peak data dir (without cache) | note |");
    println!("|---|---|---|---|---|");
    println!(
        "| produce without tiering | {:.0} | {:.2} s per GiB | {:.0} MiB | |",
        plain.mb_per_s(),
        plain.cpu_s_per_gib(),
        mib(plain_disk)
    );
    println!(
        "| produce with tiering | {:.0} | {:.2} s per GiB (+ S3 server {:.2}) | {:.0} MiB ({}) | ratio {ratio:.2}; {:.0} MiB once drained |",
        tiered.mb_per_s(),
        tiered.cpu_s_per_gib(),
        s3_cpu_s / (tiered.bytes as f64 / f64::from(1u32 << 30)),
        mib(tiered_disk),
        tiered_peak.describe(),
        mib(settled_disk)
    );
    println!(
        "| replay from the tier, cold cache (fetch 100 + ack, 16 conns) | {replay_mb_s:.0} | {replay_cpu_us:.1} µs per message | {:.0} MiB, cache peak {:.0} MiB | {} messages in {:.1} s; {:.0} MiB read from the bucket |",
        mib(replay_disk),
        mib(replay_cache),
        replay.messages,
        replay.seconds,
        mib(read_bytes)
    );
    println!(
        "| upload (tiering) | {upload_mb_s:.0} | | | {uploaded} bytes, drained {drained:.1} s after produce began |"
    );
    println!("| upload (SDK alone) | {sdk_mb_s:.0} | | | ratio {upload_ratio:.2} |");
    println!(
        "{}",
        json!({"bytes": bytes, "after_ms": after_ms, "conns": conns, "produce_mb_s_plain": plain.mb_per_s().round(), "produce_mb_s_tiered": tiered.mb_per_s().round(),
            "produce_ratio": (ratio * 100.0).round() / 100.0, "peak_disk_mib_plain": mib(plain_disk).round(),
            "peak_disk_mib_tiered": mib(tiered_disk).round(), "peak_disk_parts_tiered": tiered_peak.describe(), "s3_server_cpu_s_during_produce": (s3_cpu_s * 100.0).round() / 100.0, "replay_mb_s": replay_mb_s.round(),
            "replay_cpu_us_per_msg": (replay_cpu_us * 10.0).round() / 10.0,
            "upload_mb_s": upload_mb_s.round(), "sdk_mb_s": sdk_mb_s.round(),
            "upload_ratio": (upload_ratio * 100.0).round() / 100.0,
            "produce_target_met": ratio >= 0.9, "disk_target_met": tiered_disk < (1 << 30),
            "replay_target_met": replay_mb_s >= 100.0, "upload_target_met": upload_ratio >= 0.5})
    );
    Ok(())
}
