//! `depot-bench tiering [--quick] [--dir DIR]`: what tiering costs and how fast it uploads, on
//! this machine, against a real S3-compatible server process (s3s-fs, from the test kit),
//! everything on loopback.
//!
//! 1. **Produce without tiering**: a fresh release `depot dev`; batches of 100 × 1 KiB with 16
//!    connections until `--bytes` (1 GiB; 256 MiB with `--quick`) are stored.
//! 2. **Produce with tiering**: the same on a fresh server with a `[tiering]` bucket and the
//!    station's `after_ms` at 1 s, so sealed 64 MiB segments upload while produce runs. Then
//!    the time until every sealed segment is in the bucket (`lag_bytes` 0 in /readyz).
//! 3. **The SDK alone**: the same client (`depot_broker::tier::Bucket`, same part size) puts
//!    as many 64 MiB objects one after another, as the uploader does, to the same server.
//!
//! Reported: produce MB/s and server CPU per MiB for 1 and 2 and their ratio (target: within
//! 10%), and the upload rate of 2 against 3 (target: at least 0.5×).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use depot_broker::tier::{Bucket, TierOptions, DEFAULT_PART_BYTES};
use depot_tests::s3::{S3Server, ACCESS_KEY, REGION, SECRET_KEY};
use serde_json::json;

use crate::load::{admin, batch_body, expect, load_until, request, start_depot_with, stop, token, Target, KIB};

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

/// Produces `bytes` of 1 KiB messages in batches of 100 with 16 connections.
fn produce(
    rt: &tokio::runtime::Runtime,
    server: &depot_tests::process::Server,
    bytes: u64,
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
    let messages = load_until(rt, target, &req, 16, bytes / KIB as u64)?;
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

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let base = match args.iter().position(|a| a == "--dir") {
        Some(i) => PathBuf::from(args.get(i + 1).context("--dir needs a value")?),
        None => std::env::temp_dir(),
    };
    let bytes: u64 = if quick { 256 << 20 } else { 1 << 30 };
    // The SDK client of step 3 takes its credentials from the default chain, like a node's.
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let tmp = tempfile::tempdir_in(&base)?;
    for run in ["plain", "tiered"] {
        std::fs::create_dir_all(tmp.path().join(run))?;
    }
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    eprintln!("s3s-fs at {}; {} MiB per run", s3.endpoint(), bytes >> 20);

    // 1. Without tiering.
    let server = start_depot_with(&rt, &tmp.path().join("plain"), &[])?;
    rt.block_on(expect(&server, "PUT", &format!("/v1/stations/{STATION}"), json!({}), &[201]))?;
    let plain = produce(&rt, &server, bytes)?;
    eprintln!("produce without tiering: {:.0} MB/s, server CPU {:.2} s", plain.mb_per_s(), plain.server_cpu_s);
    stop(server, &tmp.path().join("plain").join("depot.log"))?;

    // 2. With tiering: produce while sealed segments upload, then drain.
    let server = start_depot_with(&rt, &tmp.path().join("tiered"), &s3.depot_env(BUCKET))?;
    let station = json!({"tiering": {"after_ms": 1000}});
    rt.block_on(expect(&server, "PUT", &format!("/v1/stations/{STATION}"), station, &[201]))?;
    let started = Instant::now();
    let tiered = produce(&rt, &server, bytes)?;
    eprintln!("produce with tiering: {:.0} MB/s, server CPU {:.2} s", tiered.mb_per_s(), tiered.server_cpu_s);
    let sealed = (tiered.bytes / SEGMENT).saturating_sub(1).max(1);
    let deadline = Instant::now() + Duration::from_secs(600);
    let uploaded = loop {
        let (lag, reachable) = readyz_lag(&rt, &server)?;
        let done = tiered_bytes(&rt, &server)?;
        if reachable && lag == Some(0) && done >= sealed * SEGMENT * 9 / 10 {
            break done;
        }
        if Instant::now() > deadline {
            bail!("tiering did not catch up within 10 minutes (lag {lag:?}, {done} bytes tiered)");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let drained = started.elapsed().as_secs_f64();
    // Segments become eligible 1 s after they are sealed, so the window starts 1 s in.
    let upload_mb_s = uploaded as f64 / 1e6 / (drained - 1.0).max(1e-3);
    eprintln!("tiered {uploaded} bytes in {drained:.1} s from the start of produce");
    stop(server, &tmp.path().join("tiered").join("depot.log"))?;

    // 3. The SDK alone, same client and part size, objects of one segment each.
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
        let count = (uploaded / SEGMENT).max(1);
        let started = Instant::now();
        for i in 0..count {
            bucket.put(&bucket.key(&format!("{i:06}")), object.clone()).await?;
        }
        Ok::<_, anyhow::Error>((started.elapsed().as_secs_f64(), count * SEGMENT))
    })?;
    let sdk_mb_s = sdk_bytes as f64 / 1e6 / sdk_seconds;

    let ratio = tiered.mb_per_s() / plain.mb_per_s();
    let upload_ratio = upload_mb_s / sdk_mb_s;
    println!("| run | produce MB/s | server CPU s per GiB | note |");
    println!("|---|---|---|---|");
    println!("| without tiering | {:.0} | {:.2} | |", plain.mb_per_s(), plain.cpu_s_per_gib());
    println!("| with tiering | {:.0} | {:.2} | ratio {ratio:.2} |", tiered.mb_per_s(), tiered.cpu_s_per_gib());
    println!(
        "| upload (tiering) | {upload_mb_s:.0} | | {uploaded} bytes, drained {drained:.1} s after produce began |"
    );
    println!("| upload (SDK alone) | {sdk_mb_s:.0} | | ratio {upload_ratio:.2} |");
    println!(
        "{}",
        json!({"bytes": bytes, "produce_mb_s_plain": plain.mb_per_s().round(), "produce_mb_s_tiered": tiered.mb_per_s().round(),
            "produce_ratio": (ratio * 100.0).round() / 100.0, "upload_mb_s": upload_mb_s.round(), "sdk_mb_s": sdk_mb_s.round(),
            "upload_ratio": (upload_ratio * 100.0).round() / 100.0,
            "produce_target_met": ratio >= 0.9, "upload_target_met": upload_ratio >= 0.5})
    );
    Ok(())
}
