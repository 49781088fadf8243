//! RabbitMQ (Debian's `rabbitmq-server`) through lapin with publisher confirms, one node started
//! as a child process: quorum queues (the Raft WAL is fsynced before a publish is confirmed) and
//! classic durable queues with persistent messages (confirmed once the message store has
//! written them to disk). W6: three nodes clustered at boot by classic config peer discovery,
//! a quorum queue with a member on each.

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

use super::{closed_loop, e2e_us, epoch, stamp_of, stamped, Cfg, Op, Pacer, Proc, Sample, Target, BATCH, KIB, W6};

/// Publishers filling W4's queue (not timed).
const FILLERS: usize = 64;

/// The label of the quorum queue target (the one W6 runs for).
pub(crate) const QUORUM: &str = "RabbitMQ quorum";

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

/// What the nodes of one run share: the `HOME` with the Erlang cookie (for the nodes and
/// `rabbitmqctl`), the plugins file and the epmd port.
struct Home {
    dir: std::path::PathBuf,
    epmd: u16,
}

impl Home {
    fn new(dir: &Path) -> anyhow::Result<Home> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        let cookie = dir.join(".erlang.cookie");
        std::fs::write(&cookie, format!("DEPOTBENCH{:016X}", crate::sys::random_u64()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))?;
        }
        Ok(Home { dir: dir.to_owned(), epmd: depot_tests::ports::free_loopback_port() })
    }

    /// Starts node `name` in `dir` (under this home) with AMQP on `amqp` and `conf` appended to
    /// its configuration.
    fn node(&self, bin: &Path, name: &str, dir: &Path, amqp: u16, conf: &str) -> anyhow::Result<Proc> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{amqp}\nloopback_users = none\n{conf}"),
        )?;
        let mut cmd = std::process::Command::new(bin);
        cmd.env("HOME", &self.dir)
            .env("RABBITMQ_NODENAME", name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", amqp.to_string())
            .env("RABBITMQ_DIST_PORT", depot_tests::ports::free_loopback_port().to_string())
            .env("ERL_EPMD_PORT", self.epmd.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("rabbitmq.pid"));
        Proc::spawn("rabbitmq-server", cmd, dir.join("rabbitmq.out"))
    }

    /// The command that stops this home's epmd.
    fn stop_epmd(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new("epmd");
        cmd.args(["-kill"]).env("ERL_EPMD_PORT", self.epmd.to_string());
        cmd
    }
}

/// Waits until `url` accepts an AMQP connection (90 s at most).
fn wait_amqp(rt: &tokio::runtime::Runtime, url: &str, server: &mut Proc) -> anyhow::Result<()> {
    let started = Instant::now();
    rt.block_on(async {
        loop {
            match Connection::connect(url, ConnectionProperties::default()).await {
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
    })
}

fn amqp_url(port: u16) -> String {
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

fn binary() -> anyhow::Result<std::path::PathBuf> {
    super::program("DEPOT_BENCH_RABBITMQ_SERVER", &["/usr/lib/rabbitmq/bin/rabbitmq-server"])
}

pub(crate) fn run(rt: &tokio::runtime::Runtime, cfg: &Cfg, dir: &Path) -> anyhow::Result<Vec<Target>> {
    let bin = binary()?;
    let version = {
        let v = crate::sys::output("dpkg-query", &["-W", "-f", "${Version}", "rabbitmq-server"]);
        let erl = crate::sys::output("dpkg-query", &["-W", "-f", "${Version}", "erlang-base"]);
        format!("{} (Debian), Erlang {}", v.lines().next().unwrap_or("?"), erl.lines().next().unwrap_or("?"))
    };
    let home = Home::new(dir)?;
    let amqp = depot_tests::ports::free_loopback_port();
    let node = format!("depotbench{}@localhost", std::process::id());
    let mut server = home.node(&bin, &node, dir, amqp, "")?;
    server.on_stop = Some(home.stop_epmd());
    let url = amqp_url(amqp);
    let started = Instant::now();
    wait_amqp(rt, &url, &mut server)?;
    eprintln!("  rabbitmq {version} on {url}, up in {:.1} s", started.elapsed().as_secs_f64());
    let mut targets = Vec::new();
    for kind in [Kind::Quorum, Kind::Classic] {
        let mut t = match kind {
            Kind::Quorum => Target::new("RabbitMQ", version.clone(), QUORUM, "quorum queue, fsync before confirm"),
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
    let (cs, ops) = singles(url, 1, &format!("{prefix}-w1")).await?;
    t.record(0, closed_loop(ops, 1, cfg.warmup, cfg.duration).await);
    purge(&admin, &format!("{prefix}-w1")).await;
    w2_w3(t, url, &admin, cfg, prefix, 1, (cfg.warmup, cfg.duration)).await?;
    t.record(3, drain(url, &format!("{prefix}-w4"), cfg).await);
    t.record(4, e2e(url, &format!("{prefix}-w5"), cfg).await);
    close(cs).await;
    Ok(())
}

/// `n` single-message publishers to `queue`, each on a connection of its own (the connections
/// must outlive their channels' use).
async fn singles(url: &str, n: usize, queue: &str) -> anyhow::Result<(Vec<Connection>, Vec<Single>)> {
    let mut ops = Vec::new();
    let mut cs = Vec::new();
    for _ in 0..n {
        let (c, ch) = channel(url).await?;
        cs.push(c);
        ops.push(Single { ch, queue: queue.to_owned(), payload: vec![0x5au8; KIB] });
    }
    Ok((cs, ops))
}

async fn close(conns: Vec<Connection>) {
    for c in conns {
        let _ = c.close(200, "done".into()).await;
    }
}

/// W2 (queue `{prefix}-w2`) and W3 (`{prefix}-w3`), recorded as workloads `at` and `at + 1`;
/// each queue is purged after its workload.
async fn w2_w3(
    t: &mut Target,
    url: &str,
    admin: &Channel,
    cfg: &Cfg,
    prefix: &str,
    at: usize,
    time: (Duration, Duration),
) -> anyhow::Result<()> {
    let (mut conns, ops) = singles(url, cfg.single_conns, &format!("{prefix}-w2")).await?;
    t.record(at, closed_loop(ops, 1, time.0, time.1).await);
    purge(admin, &format!("{prefix}-w2")).await;
    let mut ops = Vec::new();
    for _ in 0..cfg.batch_conns {
        let (c, ch) = channel(url).await?;
        conns.push(c);
        ops.push(Batch { ch, queue: format!("{prefix}-w3"), payload: vec![0x5au8; KIB] });
    }
    t.record(at + 1, closed_loop(ops, BATCH as u64, time.0, time.1).await);
    purge(admin, &format!("{prefix}-w3")).await;
    close(conns).await;
    Ok(())
}

/// W6: three nodes on this machine sharing a home (cookie) and an epmd, clustered at boot by
/// classic config peer discovery (all three listed), checked with `rabbitmqctl cluster_status`;
/// quorum queues declared on node 1 (so led by it: the default leader locator is client-local,
/// and the initial group size is the cluster's 3 nodes); W2 and W3 through node 1.
pub(crate) fn cluster(rt: &tokio::runtime::Runtime, cfg: &Cfg, dir: &Path, t: &mut Target) -> anyhow::Result<()> {
    let bin = binary()?;
    let home = Home::new(dir)?;
    let pid = std::process::id();
    let names: Vec<String> = (1..=3).map(|i| format!("depotbench{pid}c{i}@localhost")).collect();
    let discovery: String = std::iter::once("cluster_formation.peer_discovery_backend = classic_config\n".to_owned())
        .chain(names.iter().zip(1..).map(|(n, i)| format!("cluster_formation.classic_config.nodes.{i} = {n}\n")))
        .collect();
    let started = Instant::now();
    let mut nodes = Vec::new();
    let mut ports = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let amqp = depot_tests::ports::free_loopback_port();
        match home.node(&bin, name, &dir.join(format!("n{}", i + 1)), amqp, &discovery) {
            Ok(p) => nodes.push(p),
            Err(e) => {
                super::stop_all(&mut nodes, Duration::from_secs(30));
                let _ = home.stop_epmd().status();
                return Err(e);
            }
        }
        ports.push(amqp);
    }
    if let Some(last) = nodes.last_mut() {
        // Dropped last (on error), stopped after all (`stop_all`).
        last.on_stop = Some(home.stop_epmd());
    }
    let outcome = (|| {
        for (node, port) in nodes.iter_mut().zip(&ports) {
            wait_amqp(rt, &amqp_url(*port), node)?;
        }
        let ctl = bin.with_file_name("rabbitmqctl");
        let status = |node: &str| {
            let out = std::process::Command::new(&ctl)
                .args(["-n", node, "cluster_status", "--formatter", "json"])
                .env("HOME", &home.dir)
                .env("ERL_EPMD_PORT", home.epmd.to_string())
                .output();
            let v: serde_json::Value =
                out.ok().and_then(|o| serde_json::from_slice(&o.stdout).ok()).unwrap_or_default();
            v["running_nodes"].as_array().map_or(0, Vec::len)
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while status(&names[0]) < 3 {
            if Instant::now() > deadline {
                bail!("the nodes did not form a 3-node cluster within 30 s: {} running", status(&names[0]));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!("  3-node RabbitMQ cluster up in {:.1} s", started.elapsed().as_secs_f64());
        let url = amqp_url(ports[0]);
        rt.block_on(async {
            let (conn, admin) = channel(&url).await?;
            for w in ["w2", "w3"] {
                declare(&admin, &format!("r-{w}"), Kind::Quorum).await?;
            }
            let r = w2_w3(t, &url, &admin, cfg, "r", W6, (cfg.cluster_warmup, cfg.cluster_duration)).await;
            let _ = conn.close(200, "done".into()).await;
            r
        })?;
        let members = crate::sys::output(
            "env",
            &[
                &format!("HOME={}", home.dir.display()),
                &format!("ERL_EPMD_PORT={}", home.epmd),
                &ctl.display().to_string(),
                "-n",
                &names[0],
                "list_queues",
                "name",
                "type",
                "members",
                "--quiet",
            ],
        );
        eprintln!("  queues: {}", members.replace('\n', "; "));
        Ok(())
    })();
    for node in &mut nodes {
        if let Err(e) = node.check_alive() {
            eprintln!("  {e:#}");
        }
    }
    super::stop_all(&mut nodes, Duration::from_secs(30));
    outcome
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
