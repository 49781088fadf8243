//! Depot over HTTP/1.1: the release `depot dev` and the keep-alive client of [`crate::load`].

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use depot_pgtest::{Durability, PgServer};
use depot_tests::http::{find, AsyncConn as Conn};
use depot_tests::process::Server;

use super::{e2e_us, epoch, Cfg, Pacer, Sample, Target, BATCH, KIB, W6};
use crate::load::{self, batch_body, expect, expect_at, load, load_until, request, token, Outcome, Work};

fn sample(o: Outcome) -> Sample {
    let mut s = Sample::new(o.messages, o.seconds, o.latencies_us);
    s.errors = o.errors;
    if let Some(e) = o.first_error {
        eprintln!("    first error: {}", e.chars().take(300).collect::<String>());
    }
    s
}

pub(crate) fn run(rt: &tokio::runtime::Runtime, cfg: &Cfg, dir: &Path) -> anyhow::Result<Target> {
    std::fs::create_dir_all(dir)?;
    let server = load::start_depot(rt, dir)?;
    let version = format!("this tree, commit {}", crate::sys::output("git", &["rev-parse", "--short", "HEAD"]));
    let mut t = Target::new("Depot", version, "Depot", "fsync before ack");
    let tok = token(&server);
    rt.block_on(async {
        let short = json!({"retention": {"max_bytes": 512u64 << 20}});
        for station in ["w1", "w2", "w3"] {
            expect(&server, "PUT", &format!("/v1/stations/{station}"), short.clone(), &[200, 201]).await?;
        }
        for station in ["w4", "w5"] {
            expect(&server, "PUT", &format!("/v1/stations/{station}"), json!({}), &[200, 201]).await?;
        }
        expect(&server, "PUT", "/v1/stations/w5/consumer-groups/g", json!({"start": "earliest"}), &[200, 201]).await
    })?;
    let at = load::Target::of(&server);
    t.record(0, load(rt, at, single(tok, "w1"), 1, cfg.warmup, cfg.duration).map(sample));
    w2_w3(rt, at, tok, cfg, &mut t, 1, (cfg.warmup, cfg.duration));
    t.record(3, drain(rt, &server, cfg, &batch(tok, "w4")));
    t.record(4, e2e(rt, &server, cfg));
    load::stop(server, &dir.join("depot.log"))?;
    Ok(t)
}

/// Single 1 KiB produces to `station`.
fn single(tok: Option<&str>, station: &str) -> Work {
    let req =
        request("POST", &format!("/v1/stations/{station}/messages"), tok, "application/octet-stream", &[b'x'; KIB]);
    Work::Fixed { request: Arc::new(req), ok: 201, items: 1, offsets: true }
}

/// A batch of 100 × 1 KiB (base64) to `station`.
fn batch(tok: Option<&str>, station: &str) -> Arc<Vec<u8>> {
    let body = batch_body("base64");
    Arc::new(request("POST", &format!("/v1/stations/{station}/messages/batch"), tok, "application/json", &body))
}

/// W2 (stations `w2`) and W3 (`w3`) against `server` as `tok`, recorded as workloads `at` and
/// `at + 1`.
fn w2_w3(
    rt: &tokio::runtime::Runtime,
    server: load::Target,
    tok: Option<&str>,
    cfg: &Cfg,
    t: &mut Target,
    at: usize,
    time: (Duration, Duration),
) {
    t.record(at, load(rt, server, single(tok, "w2"), cfg.single_conns, time.0, time.1).map(sample));
    let w3 = Work::Fixed { request: batch(tok, "w3"), ok: 200, items: BATCH as u64, offsets: true };
    t.record(at + 1, load(rt, server, w3, cfg.batch_conns, time.0, time.1).map(sample));
}

/// W6: the 3-node cluster of `depot-bench cluster` (Postgres from depot-pgtest with fsync on,
/// nodes in `dir`), stations `w2` and `w3` with 3 replicas, W2 and W3 through the leader.
pub(crate) fn cluster(rt: &tokio::runtime::Runtime, cfg: &Cfg, dir: &Path, t: &mut Target) -> anyhow::Result<()> {
    let pg = PgServer::try_start_with(Durability::Full).map_err(|e| anyhow::anyhow!(e))?;
    let metadata_url = rt.block_on(pg.database());
    std::fs::create_dir_all(dir)?;
    let mut cluster = crate::cluster::start(dir, metadata_url)?;
    let outcome = (|| {
        let leader = crate::cluster::wait_leader(&cluster, Duration::from_secs(30))?;
        let server = crate::cluster::target(&cluster, leader)?;
        let tok = Some(cluster.token());
        eprintln!("  leader: node {leader} ({})", server.addr);
        let station = json!({"replicas": 3, "retention": {"max_bytes": 512u64 << 20}});
        rt.block_on(async {
            for name in ["w2", "w3"] {
                expect_at(server.addr, tok, "PUT", &format!("/v1/stations/{name}"), station.clone(), &[200, 201])
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        })?;
        w2_w3(rt, server, tok, cfg, t, W6, (cfg.cluster_warmup, cfg.cluster_duration));
        Ok(())
    })();
    // The nodes first (their drop kills any left), then Postgres (its drop removes its dir).
    crate::cluster::stop(&mut cluster);
    drop(cluster);
    drop(pg);
    outcome
}

/// W4: fill `w4`, let the fill reach the disk, then drain it with 16 consumers of fetch 100 + ack.
fn drain(rt: &tokio::runtime::Runtime, server: &Server, cfg: &Cfg, fill: &Arc<Vec<u8>>) -> anyhow::Result<Sample> {
    let filled = load_until(rt, load::Target::of(server), fill, 16, cfg.drain)?;
    eprintln!("    filled w4 with {filled} messages");
    let _ = std::process::Command::new("sync").status();
    let group = "/v1/stations/w4/consumer-groups/g";
    rt.block_on(expect(server, "PUT", group, json!({"start": "earliest"}), &[200, 201]))?;
    let tok = token(server);
    let work = Work::FetchAck {
        fetch: Arc::new(request(
            "POST",
            &format!("{group}/fetch"),
            tok,
            "application/json",
            br#"{"max_messages":100}"#,
        )),
        ack_path: Arc::new(format!("{group}/ack")),
        token: tok.map(|t| Arc::new(t.to_owned())),
    };
    let mut s = sample(load(rt, load::Target::of(server), work, 16, Duration::ZERO, Duration::from_secs(300))?);
    if s.messages < filled {
        s.note = Some(format!("drained {} of {filled}", s.messages));
    }
    Ok(s)
}

/// W5: 64 producer connections, each one request at a time, paced together at `cfg.e2e_rate`;
/// two consumers long-poll fetch 100 + ack. Latency from the stamp in the (text) payload to
/// the consumer reading it.
///
/// Each consumer waits for its ack's answer before the next fetch, unless
/// `DEPOT_BENCH_E2E_ACK=pipelined`: then it hands the receipts to a task of its own, which acks
/// on a second connection (the receipts queued meanwhile in one request, up to 1,000), and
/// fetches again at once, as JetStream's consumer acks without waiting. Every ack must still
/// answer 200 before the workload ends.
fn e2e(rt: &tokio::runtime::Runtime, server: &Server, cfg: &Cfg) -> anyhow::Result<Sample> {
    const PRODUCERS: usize = 64;
    const CONSUMERS: usize = 2;
    let addr = server.addr;
    let token = token(server).map(str::to_owned);
    // Every message's timings, for finding where a tail comes from: `P stamp_ns sent_us
    // produce_us` (sent_us: how late the producer sent it), `C stamp_ns end_to_end_us`, and
    // `E wall_clock_ns` of the stamps' zero.
    let trace_to = std::env::var("DEPOT_BENCH_E2E_TRACE").ok().filter(|p| !p.is_empty());
    let tracing = trace_to.is_some();
    let pipelined = match std::env::var("DEPOT_BENCH_E2E_ACK").as_deref() {
        Ok("pipelined") => true,
        Ok("" | "awaited") | Err(_) => false,
        Ok(other) => bail!("DEPOT_BENCH_E2E_ACK={other:?}: expected \"awaited\" or \"pipelined\""),
    };
    rt.block_on(async {
        let sent = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let start = Instant::now() + Duration::from_millis(50);
        let measure_from = ((start + cfg.e2e_warmup) - epoch()).as_nanos() as u64;
        let total = cfg.e2e_warmup + cfg.e2e_duration;
        let mut producers = Vec::new();
        for k in 0..PRODUCERS {
            let (sent, token) = (sent.clone(), token.clone());
            let mut pacer = Pacer::new(start, cfg.e2e_rate, total, k, PRODUCERS);
            producers.push(tokio::spawn(async move {
                let mut conn = Conn::open(addr).await?;
                let mut body = vec![b'x'; KIB];
                let mut trace = Vec::new();
                while let Some(stamp) = pacer.tick().await {
                    body[..20].copy_from_slice(format!("{stamp:020}").as_bytes());
                    let req = request("POST", "/v1/stations/w5/messages", token.as_deref(), "text/plain", &body);
                    let sent_at = e2e_us(stamp);
                    let status = conn.roundtrip(&req).await?;
                    if tracing {
                        trace.push(format!("P {stamp} {sent_at} {}\n", e2e_us(stamp) - sent_at));
                    }
                    if status != 201 {
                        bail!("produce: {status} {}", String::from_utf8_lossy(conn.body()));
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, anyhow::Error>(trace.concat())
            }));
        }
        let received = Arc::new(AtomicU64::new(0));
        let mut consumers = Vec::new();
        for _ in 0..CONSUMERS {
            let (sent, done, received, token) = (sent.clone(), done.clone(), received.clone(), token.clone());
            consumers.push(tokio::spawn(async move {
                let mut conn = Conn::open(addr).await?;
                // With pipelined acks, a task of this consumer's sends them, one request at a time.
                let (acks, acker) = if pipelined {
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
                    let mut ack_conn = Conn::open(addr).await?;
                    let token = token.clone();
                    let acker = tokio::spawn(async move {
                        // The ack bodies queued meanwhile go in one request, up to 1,000 receipts.
                        while let Some(first) = rx.recv().await {
                            let mut body = first;
                            let mut bodies = 1;
                            while bodies < 10 {
                                let Ok(more) = rx.try_recv() else { break };
                                let (Some(list), Some(rest)) = (
                                    more.strip_prefix(b"{\"receipts\":[".as_slice()),
                                    body.strip_suffix(b"]}".as_slice()).map(<[u8]>::len),
                                ) else {
                                    bail!("unexpected ack body");
                                };
                                let list = list.to_vec();
                                body.truncate(rest);
                                body.push(b',');
                                body.extend_from_slice(&list);
                                bodies += 1;
                            }
                            let ack = request(
                                "POST",
                                "/v1/stations/w5/consumer-groups/g/ack",
                                token.as_deref(),
                                "application/json",
                                &body,
                            );
                            let status = ack_conn.roundtrip(&ack).await?;
                            if status != 200 {
                                bail!("ack: {status} {}", String::from_utf8_lossy(ack_conn.body()));
                            }
                        }
                        Ok::<_, anyhow::Error>(())
                    });
                    (Some(tx), Some(acker))
                } else {
                    (None, None)
                };
                let tok = token.as_deref();
                let fetch = request(
                    "POST",
                    "/v1/stations/w5/consumer-groups/g/fetch",
                    tok,
                    "application/json",
                    br#"{"max_messages":100,"wait_ms":200}"#,
                );
                let mut lat = Vec::new();
                let mut trace = Vec::new();
                let mut receipts = Vec::new();
                loop {
                    if done.load(Ordering::Relaxed) && received.load(Ordering::Relaxed) >= sent.load(Ordering::Relaxed)
                    {
                        drop(acks);
                        if let Some(acker) = acker {
                            acker.await??;
                        }
                        return Ok::<_, anyhow::Error>((lat, trace.concat()));
                    }
                    let status = conn.roundtrip(&fetch).await?;
                    if status != 200 {
                        bail!("fetch: {status} {}", String::from_utf8_lossy(conn.body()));
                    }
                    let n = load::ack_body(conn.body(), &mut receipts)?;
                    let mut rest = conn.body();
                    while let Some(i) = find(rest, b"\"payload\":\"") {
                        rest = &rest[i + 11..];
                        let digits = std::str::from_utf8(rest.get(..20).context("short payload")?)?;
                        let stamp: u64 = digits.parse().with_context(|| format!("bad stamp {digits:?}"))?;
                        if stamp >= measure_from {
                            lat.push(e2e_us(stamp));
                            if tracing {
                                trace.push(format!("C {stamp} {}\n", lat[lat.len() - 1]));
                            }
                        }
                    }
                    if n == 0 {
                        continue;
                    }
                    received.fetch_add(n, Ordering::Relaxed);
                    if let Some(acks) = &acks {
                        acks.send(receipts.clone()).map_err(|_| anyhow::anyhow!("the ack task stopped"))?;
                        continue;
                    }
                    let ack =
                        request("POST", "/v1/stations/w5/consumer-groups/g/ack", tok, "application/json", &receipts);
                    let status = conn.roundtrip(&ack).await?;
                    if status != 200 {
                        bail!("ack: {status} {}", String::from_utf8_lossy(conn.body()));
                    }
                }
            }));
        }
        let mut traced = String::new();
        for p in producers {
            traced += &p.await??;
        }
        let note = super::lag_note(start, total);
        done.store(true, Ordering::Relaxed);
        let mut lat = Vec::new();
        for c in consumers {
            match tokio::time::timeout(Duration::from_secs(30), c).await {
                Ok(r) => {
                    let (l, t) = r??;
                    lat.extend(l);
                    traced += &t;
                }
                Err(_) => bail!("consumers did not drain within 30 s of the last produce"),
            }
        }
        if let Some(path) = &trace_to {
            // The wall-clock time of the stamps' zero, to line them up with a server's log.
            let since = Instant::now() - epoch();
            let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)? - since;
            traced += &format!("E {}\n", wall.as_nanos());
            std::fs::write(path, traced).with_context(|| format!("writing {path}"))?;
        }
        let n = lat.len() as u64;
        let mut s = Sample::new(n, cfg.e2e_duration.as_secs_f64(), lat);
        s.note = note;
        Ok(s)
    })
}
