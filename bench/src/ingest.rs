//! `depot-bench ingest [--quick] [--dir DIR]`: a webhook source's ingest path against a plain
//! produce, on one release `depot dev`, same client, same body, same concurrency (issue 16's
//! target: an ingest at most 10% slower than a produce).
//!
//! Both post the same 1 KiB body: a produce with a bearer token to
//! `POST /v1/stations/{s}/messages`, an ingest to the source's URL with GitHub's
//! `X-Hub-Signature-256` (HMAC-SHA256 of the body) and an `X-GitHub-Event` header the source
//! captures. Neither carries a delivery id, so each request stores one new message. The two
//! alternate, `--rounds` times each (default 3), so drift of the shared machine hits both
//! alike; each round is reported, then the medians and their ratio.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use depot_tests::http::encode;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::load::{admin, expect, load, progress, request, start_depot, stop, token, Outcome, Target, Work, KIB};
use crate::sys::env_usize;

const PRODUCE_STATION: &str = "bench-produce";
const INGEST_STATION: &str = "bench-ingest";
const SOURCE: &str = "bench-github";
const SECRET: &str = "bench-secret-0123456789";

fn github_signature(body: &[u8]) -> anyhow::Result<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).context("HMAC key")?;
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256={hex}"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Server CPU per message, in µs.
fn cpu_us(o: &Outcome) -> f64 {
    o.server_cpu_s * 1e6 / (o.messages.max(1) as f64)
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let base = match args.iter().position(|a| a == "--dir") {
        Some(i) => PathBuf::from(args.get(i + 1).context("--dir needs a value")?),
        None => std::env::temp_dir(),
    };
    let rounds = match args.iter().position(|a| a == "--rounds") {
        Some(i) => args.get(i + 1).context("--rounds needs a value")?.parse().context("--rounds")?,
        None => 3usize,
    };
    let (warmup, duration) = if quick {
        (Duration::from_millis(300), Duration::from_secs(1))
    } else {
        (Duration::from_secs(1), Duration::from_secs(5))
    };
    let conns = env_usize("DEPOT_BENCH_SINGLE_CONNS", 64);
    let client_threads = env_usize("DEPOT_BENCH_CLIENT_THREADS", 2);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(client_threads).enable_all().build()?;
    let tmp = tempfile::tempdir_in(&base)?;
    let server = start_depot(&rt, tmp.path())?;
    let retention = json!({"retention": {"max_bytes": 512u64 << 20}});
    let source = json!({
        "station": INGEST_STATION,
        "verify": {"scheme": "github", "secret": SECRET},
        "capture_headers": ["x-github-event"],
        "rate_per_s": 100_000,
    });
    let ingest_url = rt.block_on(async {
        for station in [PRODUCE_STATION, INGEST_STATION] {
            expect(&server, "PUT", &format!("/v1/stations/{station}"), retention.clone(), &[200, 201]).await?;
        }
        let (status, text) =
            admin(server.addr, token(&server), "PUT", &format!("/v1/sources/{SOURCE}"), source).await?;
        anyhow::ensure!(status == 201, "PUT /v1/sources/{SOURCE}: {status} {text}");
        let created: serde_json::Value = serde_json::from_str(&text)?;
        created["ingest_url"].as_str().map(str::to_owned).context("no ingest_url in the source's answer")
    })?;
    let tok = token(&server).map(str::to_owned);
    let body = [b'x'; KIB];
    let produce_path = format!("/v1/stations/{PRODUCE_STATION}/messages");
    let produce = Arc::new(request("POST", &produce_path, tok.as_deref(), "application/octet-stream", &body));
    let signature = github_signature(&body)?;
    let headers = [
        ("Content-Type", "application/octet-stream"),
        ("X-Hub-Signature-256", signature.as_str()),
        ("X-GitHub-Event", "push"),
    ];
    let ingest = Arc::new(encode("POST", &ingest_url, None, &headers, &body));
    let work = |request: &Arc<Vec<u8>>, ok| Work::Fixed { request: request.clone(), ok, items: 1, offsets: true };

    let mut results: Vec<(&str, usize, Outcome)> = Vec::new();
    for (c, label) in [(conns, "conns"), (1, "conn")] {
        for round in 0..rounds {
            for (name, request, ok) in [("produce", &produce, 201), ("ingest", &ingest, 200)] {
                let o = load(&rt, Target::of(&server), work(request, ok), c, warmup, duration)?;
                progress(&format!("{name} {c} {label} round {}", round + 1), "depot", &o);
                results.push((name, c, o));
            }
        }
    }
    stop(server, &tmp.path().join("depot.log"))?;

    println!("| workload | connections | msg/s (median of {rounds}) | server CPU µs/msg | p50 µs | p99 µs |");
    println!("|---|---|---|---|---|---|");
    let mut medians = Vec::new();
    for c in [conns, 1] {
        for name in ["produce", "ingest"] {
            let picked: Vec<&Outcome> = results.iter().filter(|r| r.0 == name && r.1 == c).map(|r| &r.2).collect();
            let errors: u64 = picked.iter().map(|o| o.errors).sum();
            let rate = median(picked.iter().map(|o| o.msg_per_s()).collect());
            let cpu = median(picked.iter().map(|o| cpu_us(o)).collect());
            let p50 = median(picked.iter().map(|o| f64::from(o.percentile(0.5))).collect());
            let p99 = median(picked.iter().map(|o| f64::from(o.percentile(0.99))).collect());
            println!(
                "| {name} | {c} | {rate:.0} | {cpu:.1} | {p50:.0} | {p99:.0} |{}",
                if errors > 0 { " errors!" } else { "" }
            );
            medians.push((name, c, rate, cpu, p50));
        }
    }
    for c in [conns, 1] {
        let get = |name| medians.iter().find(|m| m.0 == name && m.1 == c).copied();
        if let (Some(p), Some(i)) = (get("produce"), get("ingest")) {
            let ratio = i.2 / p.2.max(1e-9);
            println!(
                "{}",
                json!({"connections": c, "ingest_over_produce_rate": (ratio * 1000.0).round() / 1000.0,
                    "produce_msg_per_s": p.2 as u64, "ingest_msg_per_s": i.2 as u64,
                    "produce_cpu_us_per_msg": (p.3 * 10.0).round() / 10.0, "ingest_cpu_us_per_msg": (i.3 * 10.0).round() / 10.0,
                    "produce_p50_us": p.4, "ingest_p50_us": i.4,
                    "target_met": ratio >= 0.9})
            );
        }
    }
    Ok(())
}
