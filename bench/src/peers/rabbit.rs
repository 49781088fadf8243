//! RabbitMQ (Debian's `rabbitmq-server`) through lapin with publisher confirms, one node started
//! as a child process: quorum queues (the Raft WAL is fsynced before a publish is confirmed) and
//! classic durable queues with persistent messages (confirmed once the message store has
//! written them to disk).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::{closed_loop, e2e_us, epoch, stamp_of, stamped, Cfg, Op, Pacer, Proc, Sample, Target, BATCH, KIB};

/// Publishers filling W4's queue (not timed).
const FILLERS: usize = 64;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Quorum,
    Classic,
}

fn props() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn publish(ch: &Channel, queue: &str, payload: &[u8]) -> anyhow::Result<lapin::PublisherConfirm> {
    Ok(ch.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), payload, props()).await?)
}

async fn confirmed(confirm: lapin::PublisherConfirm) -> anyhow::Result<()> {
    if !confirm.await?.is_ack() {
        bail!("publish not confirmed (nack)");
    }
    Ok(())
}

struct Single {
    ch: Channel,
    queue: String,
    payload: Vec<u8>,
}

impl Op for Single {
    async fn run(&mut self) -> anyhow::Result<()> {
        confirmed(publish(&self.ch, &self.queue, &self.payload).await?).await
    }
}

struct Batch {
    ch: Channel,
    queue: String,
    payload: Vec<u8>,
}

impl Op for Batch {
    async fn run(&mut self) -> anyhow::Result<()> {
        let mut confirms = Vec::with_capacity(BATCH);
        for _ in 0..BATCH {
            confirms.push(publish(&self.ch, &self.queue, &self.payload).await?);
        }
        for c in confirms {
            confirmed(c).await?;
        }
        Ok(())
    }
}

/// A channel in confirm mode on a connection of its own.
async fn channel(url: &str) -> anyhow::Result<(Connection, Channel)> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok((conn, ch))
}

async fn declare(ch: &Channel, name: &str, kind: Kind) -> anyhow::Result<()> {
    let mut args = FieldTable::default();
    if kind == Kind::Quorum {
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    }
    let opts = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    ch.queue_declare(name.into(), opts, args).await?;
    Ok(())
}

pub(crate) fn run(rt: &tokio::runtime::Runtime, cfg: &Cfg, dir: &Path) -> anyhow::Result<Vec<Target>> {
    let bin = super::program("DEPOT_BENCH_RABBITMQ_SERVER", &["/usr/lib/rabbitmq/bin/rabbitmq-server"])?;
    let version = {
        let v = super::output("dpkg-query", &["-W", "-f", "${Version}", "rabbitmq-server"]);
        let erl = super::output("dpkg-query", &["-W", "-f", "${Version}", "erlang-base"]);
        format!("{} (Debian), Erlang {}", v.lines().next().unwrap_or("?"), erl.lines().next().unwrap_or("?"))
    };
    std::fs::create_dir_all(dir)?;
    let (amqp, dist, epmd) = (super::free_port()?, super::free_port()?, super::free_port()?);
    std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
    std::fs::write(
        dir.join("rabbitmq.conf"),
        format!("listeners.tcp.default = 127.0.0.1:{amqp}\nloopback_users = none\n"),
    )?;
    let cookie = dir.join(".erlang.cookie");
    std::fs::write(&cookie, format!("DEPOTBENCH{:016X}", crate::http::random_u64()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))?;
    }
    let node = format!("depotbench{}@localhost", std::process::id());
    let mut cmd = std::process::Command::new(&bin);
    cmd.env("HOME", dir)
        .env("RABBITMQ_NODENAME", &node)
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", amqp.to_string())
        .env("RABBITMQ_DIST_PORT", dist.to_string())
        .env("ERL_EPMD_PORT", epmd.to_string())
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_PID_FILE", dir.join("rabbitmq.pid"));
    let mut server = Proc::spawn("rabbitmq-server", cmd, dir.join("rabbitmq.out"))?;
    let mut stop_epmd = std::process::Command::new("epmd");
    stop_epmd.args(["-kill"]).env("ERL_EPMD_PORT", epmd.to_string());
    server.on_stop = Some(stop_epmd);
    let url = format!("amqp://guest:guest@127.0.0.1:{amqp}/%2f");
    let started = Instant::now();
    rt.block_on(async {
        loop {
            match Connection::connect(&url, ConnectionProperties::default()).await {
                Ok(c) => {
                    let _ = c.close(200, "ok".into()).await;
                    return Ok::<_, anyhow::Error>(());
                }
                Err(e) if started.elapsed() > Duration::from_secs(90) => {
                    return Err(e).context("RabbitMQ did not accept a connection within 90 s");
                }
                Err(_) => {
                    server.check_alive()?;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    })?;
    eprintln!("  rabbitmq {version} on {url}, up in {:.1} s", started.elapsed().as_secs_f64());
    let mut targets = Vec::new();
    for kind in [Kind::Quorum, Kind::Classic] {
        let mut t = match kind {
            Kind::Quorum => {
                Target::new("RabbitMQ", version.clone(), "RabbitMQ quorum", "quorum queue, fsync before confirm")
            }
            Kind::Classic => Target::new(
                "RabbitMQ",
                version.clone(),
                "RabbitMQ classic",
                "classic durable queue, persistent, confirm after disk write",
            ),
        };
        let prefix = if kind == Kind::Quorum { "q" } else { "c" };
        rt.block_on(workloads(&mut t, &url, cfg, kind, prefix))?;
        server.check_alive()?;
        targets.push(t);
    }
    server.stop(Duration::from_secs(30));
    Ok(targets)
}

async fn workloads(t: &mut Target, url: &str, cfg: &Cfg, kind: Kind, prefix: &str) -> anyhow::Result<()> {
    let (_admin, admin) = channel(url).await?;
    for w in ["w1", "w2", "w3", "w4", "w5"] {
        declare(&admin, &format!("{prefix}-{w}"), kind).await?;
    }
    let payload = vec![0x5au8; KIB];
    // Connections must outlive their channels' use.
    let mut conns = Vec::new();
    let singles = |n: usize, queue: String| {
        let payload = payload.clone();
        let url = url.to_owned();
        async move {
            let mut ops = Vec::new();
            let mut cs = Vec::new();
            for _ in 0..n {
                let (c, ch) = channel(&url).await?;
                cs.push(c);
                ops.push(Single { ch, queue: queue.clone(), payload: payload.clone() });
            }
            Ok::<_, anyhow::Error>((cs, ops))
        }
    };
    let (cs, ops) = singles(1, format!("{prefix}-w1")).await?;
    t.record(0, closed_loop(ops, 1, cfg.warmup, cfg.duration).await);
    conns.extend(cs);
    let (cs, ops) = singles(cfg.single_conns, format!("{prefix}-w2")).await?;
    t.record(1, closed_loop(ops, 1, cfg.warmup, cfg.duration).await);
    conns.extend(cs);
    purge(&admin, &format!("{prefix}-w1")).await;
    purge(&admin, &format!("{prefix}-w2")).await;
    let mut ops = Vec::new();
    for _ in 0..cfg.batch_conns {
        let (c, ch) = channel(url).await?;
        conns.push(c);
        ops.push(Batch { ch, queue: format!("{prefix}-w3"), payload: payload.clone() });
    }
    t.record(2, closed_loop(ops, BATCH as u64, cfg.warmup, cfg.duration).await);
    purge(&admin, &format!("{prefix}-w3")).await;
    t.record(3, drain(url, &format!("{prefix}-w4"), cfg).await);
    t.record(4, e2e(url, &format!("{prefix}-w5"), cfg).await);
    for c in conns {
        let _ = c.close(200, "done".into()).await;
    }
    Ok(())
}

async fn purge(ch: &Channel, queue: &str) {
    let _ = ch.queue_purge(queue.into(), lapin::options::QueuePurgeOptions::default()).await;
}

/// W4: fill the queue with 64 batch publishers (the fill is not timed), then drain it with one consumer (prefetch
/// 1000), acknowledging every 100th delivery with `multiple`.
async fn drain(url: &str, queue: &str, cfg: &Cfg) -> anyhow::Result<Sample> {
    let per = cfg.drain.div_ceil(BATCH as u64 * FILLERS as u64);
    let mut fills = Vec::new();
    for _ in 0..FILLERS {
        let (c, ch) = channel(url).await?;
        let mut op = Batch { ch, queue: queue.to_owned(), payload: vec![0x5au8; KIB] };
        fills.push(tokio::spawn(async move {
            for _ in 0..per {
                op.run().await?;
            }
            let _ = c.close(200, "done".into()).await;
            Ok::<_, anyhow::Error>(())
        }));
    }
    for f in fills {
        f.await??;
    }
    let total = per * BATCH as u64 * FILLERS as u64;
    eprintln!("    filled {queue} with {total} messages");
    let _ = std::process::Command::new("sync").status();
    let (conn, ch) = channel(url).await?;
    ch.basic_qos(1000, BasicQosOptions::default()).await?;
    let start = Instant::now();
    let mut consumer =
        ch.basic_consume(queue.into(), "drain".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    let mut got = 0u64;
    while got < total {
        let Some(d) = consumer.next().await else { bail!("the consumer ended after {got} of {total}") };
        let d = d?;
        got += 1;
        if got.is_multiple_of(BATCH as u64) || got == total {
            d.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
    let elapsed = start.elapsed();
    let _ = conn.close(200, "done".into()).await;
    Ok(Sample::new(got, elapsed.as_secs_f64(), Vec::new()))
}

/// W5: 4 publishers on their own connections at `cfg.e2e_rate` in total, confirms awaited in
/// the background; one consumer (prefetch 1000) acknowledging every 100th with `multiple`.
async fn e2e(url: &str, queue: &str, cfg: &Cfg) -> anyhow::Result<Sample> {
    const PRODUCERS: usize = 4;
    let (cconn, cch) = channel(url).await?;
    cch.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut deliveries =
        cch.basic_consume(queue.into(), "e2e".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = ((start + cfg.e2e_warmup) - epoch()).as_nanos() as u64;
    let consumer = {
        let (sent, done) = (sent.clone(), done.clone());
        tokio::spawn(async move {
            let (mut lat, mut got) = (Vec::new(), 0u64);
            loop {
                if done.load(Ordering::Relaxed) && got >= sent.load(Ordering::Relaxed) {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let Ok(next) = tokio::time::timeout(Duration::from_millis(100), deliveries.next()).await else {
                    continue;
                };
                let Some(d) = next else { bail!("the consumer ended") };
                let d = d?;
                let stamp = stamp_of(&d.data).unwrap_or(0);
                if stamp >= measure_from {
                    lat.push(e2e_us(stamp));
                }
                got += 1;
                if got.is_multiple_of(BATCH as u64) {
                    d.ack(BasicAckOptions { multiple: true }).await?;
                }
            }
        })
    };
    let total = cfg.e2e_warmup + cfg.e2e_duration;
    let mut producers = Vec::new();
    for k in 0..PRODUCERS {
        let (conn, ch) = channel(url).await?;
        let (sent, queue) = (sent.clone(), queue.to_owned());
        let mut pacer = Pacer::new(start, cfg.e2e_rate, total, k, PRODUCERS);
        producers.push(tokio::spawn(async move {
            let mut confirms = tokio::task::JoinSet::new();
            while let Some(stamp) = pacer.tick().await {
                let c = publish(&ch, &queue, &stamped(stamp)).await?;
                sent.fetch_add(1, Ordering::Relaxed);
                confirms.spawn(confirmed(c));
                while let Some(r) = confirms.try_join_next() {
                    r??;
                }
            }
            while let Some(r) = confirms.join_next().await {
                r??;
            }
            let _ = conn.close(200, "done".into()).await;
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
    let _ = cconn.close(200, "done".into()).await;
    let mut s = Sample::new(lat.len() as u64, cfg.e2e_duration.as_secs_f64(), lat);
    s.note = note;
    Ok(s)
}
