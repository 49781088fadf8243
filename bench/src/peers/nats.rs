//! NATS JetStream through async-nats: one `nats-server` per durability mode, file storage,
//! one replica. `sync_interval: always` fsyncs every write before the publish is acknowledged;
//! the default flushes to disk every 2 minutes (acknowledged before fsync). W6: three clustered
//! `nats-server`s on loopback, the streams with three replicas.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use super::{closed_loop, e2e_us, epoch, stamp_of, stamped, Cfg, Op, Pacer, Proc, Sample, Target, BATCH, KIB, W6};

/// Publishers filling W4's queue (not timed).
const FILLERS: usize = 64;

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

struct Single {
    js: jetstream::Context,
    subject: &'static str,
    payload: Bytes,
}

impl Op for Single {
    async fn run(&mut self) -> anyhow::Result<()> {
        self.js.publish(self.subject, self.payload.clone()).await.map_err(err)?.await.map_err(err)?;
        Ok(())
    }
}

struct Batch {
    js: jetstream::Context,
    subject: &'static str,
    payload: Bytes,
}

impl Op for Batch {
    async fn run(&mut self) -> anyhow::Result<()> {
        let mut acks = Vec::with_capacity(BATCH);
        for _ in 0..BATCH {
            acks.push(self.js.publish(self.subject, self.payload.clone()).await.map_err(err)?);
        }
        for ack in acks {
            ack.await.map_err(err)?;
        }
        Ok(())
    }
}

fn binary() -> anyhow::Result<(std::path::PathBuf, String)> {
    let bin = super::program("DEPOT_BENCH_NATS_SERVER", &["/var/tmp/depot-peers/venv/bin/nats-server", "nats-server"])?;
    let version = crate::sys::output(&bin.display().to_string(), &["--version"]);
    Ok((bin, version))
}

/// Starts `nats-server` in `dir` with JetStream in `dir/store` and `extra` configuration; returns
/// it and its client URL once it is ready.
fn start(bin: &Path, dir: &Path, sync_always: bool, extra: &str) -> anyhow::Result<(Proc, String)> {
    std::fs::create_dir_all(dir)?;
    let store = dir.join("store");
    let sync = if sync_always { "\n  sync_interval: always" } else { "" };
    let conf = format!(
        "listen: 127.0.0.1:-1\nhttp: 0\njetstream {{\n  store_dir: {:?}\n  max_file_store: 64G{sync}\n}}\n{extra}",
        store.display().to_string()
    );
    std::fs::write(dir.join("nats.conf"), conf)?;
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("-c").arg(dir.join("nats.conf"));
    let mut server = Proc::spawn("nats-server", cmd, dir.join("nats.log"))?;
    let addr = server.wait_for("Listening for client connections on ", Duration::from_secs(30))?;
    server.wait_for("Server is ready", Duration::from_secs(30))?;
    Ok((server, format!("nats://{}", addr.trim())))
}

/// `n` single-message publishers to `subject`, each on a connection of its own.
async fn singles(url: &str, subject: &'static str, n: usize) -> anyhow::Result<Vec<Single>> {
    let mut ops = Vec::new();
    for _ in 0..n {
        let js = jetstream::new(async_nats::connect(url).await.map_err(err)?);
        ops.push(Single { js, subject, payload: Bytes::from(vec![0x5au8; KIB]) });
    }
    Ok(ops)
}

/// W2 (subject `w2`, through `urls.0`) and W3 (`w3`, through `urls.1`), recorded as workloads
/// `at` and `at + 1`.
async fn w2_w3(
    urls: (&str, &str),
    cfg: &Cfg,
    t: &mut Target,
    at: usize,
    time: (Duration, Duration),
) -> anyhow::Result<()> {
    t.record(at, closed_loop(singles(urls.0, "w2", cfg.single_conns).await?, 1, time.0, time.1).await);
    let mut ops = Vec::new();
    for _ in 0..cfg.batch_conns {
        let js = jetstream::new(async_nats::connect(urls.1).await.map_err(err)?);
        ops.push(Batch { js, subject: "w3", payload: Bytes::from(vec![0x5au8; KIB]) });
    }
    t.record(at + 1, closed_loop(ops, BATCH as u64, time.0, time.1).await);
    Ok(())
}

fn durability(sync_always: bool) -> (&'static str, &'static str) {
    if sync_always {
        ("JetStream sync", "sync_interval: always, fsync before ack")
    } else {
        ("JetStream default", "default: ack before fsync, flush every 2 min")
    }
}

pub(crate) fn run(rt: &tokio::runtime::Runtime, cfg: &Cfg, dir: &Path, sync_always: bool) -> anyhow::Result<Target> {
    let (bin, version) = binary()?;
    let (mut server, url) = start(&bin, dir, sync_always, "")?;
    eprintln!("  nats-server {version} on {url}");
    let (label, durability) = durability(sync_always);
    let mut t = Target::new("NATS JetStream", version, label, durability);
    let big = cfg.drain.min(if sync_always { cfg.drain_slow } else { cfg.drain });
    rt.block_on(async {
        let client = async_nats::connect(&url).await.map_err(err)?;
        let js = jetstream::new(client);
        for (name, max_bytes) in [("W1", 512i64 << 20), ("W2", 512 << 20), ("W3", 512 << 20), ("W4", -1), ("W5", -1)] {
            js.create_stream(stream::Config {
                name: name.to_owned(),
                subjects: vec![name.to_lowercase()],
                storage: stream::StorageType::File,
                max_bytes,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(err)?;
        }
        t.record(0, closed_loop(singles(&url, "w1", 1).await?, 1, cfg.warmup, cfg.duration).await);
        w2_w3((&url, &url), cfg, &mut t, 1, (cfg.warmup, cfg.duration)).await?;
        let mut w4 = drain(&url, &js, big).await;
        if let Ok(s) = &mut w4 {
            if big < cfg.drain {
                s.note = Some(format!("{} messages: filling at one fsync per message takes too long", s.messages));
            }
        }
        t.record(3, w4);
        t.record(4, e2e(&js, cfg).await);
        Ok::<_, anyhow::Error>(())
    })?;
    server.check_alive()?;
    server.stop(Duration::from_secs(20));
    Ok(t)
}

/// W6: three `nats-server`s (`n1`..`n3`) in cluster `depotbench` on loopback, routes to each
/// other, JetStream in each (same durability as the single server); streams `W2` and `W3` with
/// 3 replicas; each workload connects to the server that leads its stream.
pub(crate) fn cluster(
    rt: &tokio::runtime::Runtime,
    cfg: &Cfg,
    dir: &Path,
    sync_always: bool,
    t: &mut Target,
) -> anyhow::Result<()> {
    let (bin, _) = binary()?;
    let routes: Vec<u16> = (0..3).map(|_| depot_tests::ports::free_loopback_port()).collect();
    let mut servers = Vec::new();
    let mut urls = Vec::new();
    // Started one after the other: each waits only for its own readiness, not for the routes.
    for (i, port) in routes.iter().enumerate() {
        let others: Vec<String> =
            routes.iter().filter(|p| *p != port).map(|p| format!("nats-route://127.0.0.1:{p}")).collect();
        let extra = format!(
            "server_name: n{}\ncluster {{\n  name: depotbench\n  listen: 127.0.0.1:{port}\n  routes: [{}]\n}}\n",
            i + 1,
            others.join(", ")
        );
        let started = start(&bin, &dir.join(format!("n{}", i + 1)), sync_always, &extra);
        let (server, url) = match started {
            Ok(s) => s,
            Err(e) => {
                super::stop_all(&mut servers, Duration::from_secs(20));
                return Err(e);
            }
        };
        servers.push(server);
        urls.push(url);
    }
    let started = Instant::now();
    eprintln!("  nats-server cluster: {}", urls.join(", "));
    let outcome = rt.block_on(async {
        let js = jetstream::new(async_nats::connect(&urls[0]).await.map_err(err)?);
        let mut leaders = Vec::new();
        for name in ["W2", "W3"] {
            let config = stream::Config {
                name: name.to_owned(),
                subjects: vec![name.to_lowercase()],
                storage: stream::StorageType::File,
                max_bytes: 512 << 20,
                num_replicas: 3,
                ..Default::default()
            };
            // Until the cluster has elected its JetStream meta leader, creating a stream fails.
            let deadline = Instant::now() + Duration::from_secs(30);
            let stream = loop {
                match js.create_stream(config.clone()).await {
                    Ok(s) => break s,
                    Err(e) if Instant::now() > deadline => bail!("creating stream {name}: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            let info = stream.get_info().await.map_err(err)?;
            let cluster = info.cluster.unwrap_or_default();
            let leader = cluster.leader.unwrap_or_default();
            let i = leader.strip_prefix('n').and_then(|n| n.parse::<usize>().ok()).filter(|n| (1..=3).contains(n));
            let i = i.ok_or_else(|| anyhow!("stream {name}: no leader reported ({leader:?})"))?;
            eprintln!(
                "  stream {name}: leader {leader}, replicas {}, created {:.1} s after the servers were ready",
                cluster.replicas.len() + 1,
                started.elapsed().as_secs_f64()
            );
            leaders.push(urls[i - 1].clone());
        }
        w2_w3((&leaders[0], &leaders[1]), cfg, t, W6, (cfg.cluster_warmup, cfg.cluster_duration)).await
    });
    for s in &mut servers {
        if let Err(e) = s.check_alive() {
            eprintln!("  {e:#}");
        }
    }
    super::stop_all(&mut servers, Duration::from_secs(20));
    outcome
}

/// W4: fill `w4` with 64 batch producers (the fill is not timed), then drain it through one durable pull consumer
/// (batches of up to 1000), acknowledging every 100th message with `AckPolicy::All` (which
/// acknowledges everything before it, as Depot's ack of 100 receipts and AMQP's `multiple` do).
async fn drain(url: &str, js: &jetstream::Context, n: u64) -> anyhow::Result<Sample> {
    let payload = Bytes::from(vec![0x5au8; KIB]);
    let per = n.div_ceil(BATCH as u64 * FILLERS as u64);
    let mut fills = Vec::new();
    for _ in 0..FILLERS {
        let js = jetstream::new(async_nats::connect(url).await.map_err(err)?);
        let mut op = Batch { js, subject: "w4", payload: payload.clone() };
        fills.push(tokio::spawn(async move {
            for _ in 0..per {
                op.run().await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for f in fills {
        f.await??;
    }
    let total = per * BATCH as u64 * FILLERS as u64;
    eprintln!("    filled w4 with {total} messages");
    let _ = std::process::Command::new("sync").status();
    let stream = js.get_stream("W4").await.map_err(err)?;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("drain".to_owned()),
            ack_policy: consumer::AckPolicy::All,
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await
        .map_err(err)?;
    let start = Instant::now();
    let mut messages = consumer.stream().max_messages_per_batch(1000).messages().await.map_err(err)?;
    let mut got = 0u64;
    while got < total {
        let Some(m) = messages.next().await else { bail!("the consumer ended after {got} of {total}") };
        let m = m.map_err(err)?;
        got += 1;
        if got == total {
            m.double_ack().await.map_err(err)?;
        } else if got.is_multiple_of(BATCH as u64) {
            m.ack().await.map_err(err)?;
        }
    }
    Ok(Sample::new(got, start.elapsed().as_secs_f64(), Vec::new()))
}

/// W5: 4 producer tasks on one connection publish at `cfg.e2e_rate` in total, without
/// waiting for each acknowledgement before the next publish (acknowledgements are awaited in
/// the background); one pull consumer receives, acknowledging every 100th (`AckPolicy::All`).
async fn e2e(js: &jetstream::Context, cfg: &Cfg) -> anyhow::Result<Sample> {
    const PRODUCERS: usize = 4;
    let stream = js.get_stream("W5").await.map_err(err)?;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("e2e".to_owned()),
            ack_policy: consumer::AckPolicy::All,
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await
        .map_err(err)?;
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = ((start + cfg.e2e_warmup) - epoch()).as_nanos() as u64;
    let mut messages = consumer.stream().max_messages_per_batch(1000).messages().await.map_err(err)?;
    let consumer = {
        let (sent, done) = (sent.clone(), done.clone());
        tokio::spawn(async move {
            let (mut lat, mut got) = (Vec::new(), 0u64);
            loop {
                if done.load(Ordering::Relaxed) && got >= sent.load(Ordering::Relaxed) {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let Ok(next) = tokio::time::timeout(Duration::from_millis(100), messages.next()).await else {
                    continue;
                };
                let Some(m) = next else { bail!("the consumer ended") };
                let m = m.map_err(err)?;
                let stamp = stamp_of(&m.payload).unwrap_or(0);
                if stamp >= measure_from {
                    lat.push(e2e_us(stamp));
                }
                got += 1;
                if got.is_multiple_of(BATCH as u64) {
                    m.ack().await.map_err(err)?;
                }
            }
        })
    };
    let total = cfg.e2e_warmup + cfg.e2e_duration;
    let mut producers = Vec::new();
    for k in 0..PRODUCERS {
        let js = js.clone();
        let sent = sent.clone();
        let mut pacer = Pacer::new(start, cfg.e2e_rate, total, k, PRODUCERS);
        producers.push(tokio::spawn(async move {
            let mut acks = tokio::task::JoinSet::new();
            while let Some(stamp) = pacer.tick().await {
                let ack = js.publish("w5", Bytes::from(stamped(stamp))).await.map_err(err)?;
                sent.fetch_add(1, Ordering::Relaxed);
                acks.spawn(async move { ack.await.map_err(err).map(drop) });
                while let Some(r) = acks.try_join_next() {
                    r??;
                }
            }
            while let Some(r) = acks.join_next().await {
                r??;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for p in producers {
        p.await??;
    }
    let note = super::lag_note(start, total);
    done.store(true, Ordering::Relaxed);
    let lat = match tokio::time::timeout(Duration::from_secs(30), consumer).await {
        Ok(r) => r??,
        Err(_) => bail!("the consumer did not catch up within 30 s of the last publish"),
    };
    let mut s = Sample::new(lat.len() as u64, cfg.e2e_duration.as_secs_f64(), lat);
    s.note = note;
    Ok(s)
}
