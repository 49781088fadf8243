//! `depot-bench peers [--quick] [--out DIR] [--dir DIR]`: issue 7's workloads W1–W5 against
//! Depot over HTTP, NATS JetStream (async-nats) and RabbitMQ (lapin), each server started by
//! this binary in a temp dir on random loopback ports and stopped at the end (guards with `Drop`
//! also stop them on error).
//!
//! - W1: one connection, one durable produce at a time: latency p50/p99.
//! - W2: 64 producers, each one message at a time, waiting for its acknowledgement: msg/s.
//! - W3: 16 producers, each sending 100 messages (one batch request, or 100 publishes) then
//!   waiting for all 100 acknowledgements: msg/s.
//! - W4: drain a queue filled beforehand (1M messages, `--quick` 100k) with consume + ack: msg/s.
//! - W5: end-to-end latency (produce to consumer receipt) at a fixed open-loop rate of 10k msg/s:
//!   p50/p99/p999.
//! - W6: W2 and W3 again against a 3-node replicated cluster on this machine (`W6/W2`, `W6/W3`):
//!   three `depot serve` nodes (the cluster of `depot-bench cluster`), a station with 3 replicas,
//!   through the leader; three clustered `nats-server`s, a stream with 3 replicas, through its
//!   leader's server; three RabbitMQ nodes clustered by classic config peer discovery, a quorum
//!   queue (3 members), through the node that declared it (its leader). `--quick` runs W6 for
//!   Depot and JetStream with fsync only, to stay within 2 minutes.
//!
//! Peers are found at `DEPOT_BENCH_NATS_SERVER` (default: `nats-server` on `PATH`, then
//! `/var/tmp/depot-peers/venv/bin/nats-server`) and `DEPOT_BENCH_RABBITMQ_SERVER` (default:
//! `/usr/lib/rabbitmq/bin/rabbitmq-server`). `DEPOT_BENCH_PEERS` selects targets, a comma-separated
//! subset of `depot,nats,rabbitmq` (default all). `scripts/bench-peers` installs them and runs this.
//! `DEPOT_BENCH_E2E_TRACE=FILE` writes every W5 message's timings against Depot to `FILE` (see
//! `depot::e2e`). `DEPOT_BENCH_E2E_ACK=pipelined` makes W5's Depot consumers ack on a second
//! connection without waiting before the next fetch (default `awaited`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

mod chart;
mod depot;
mod nats;
mod proc;
mod rabbit;

use crate::sys::output;
pub(crate) use proc::{program, stop_all, Proc};

pub(crate) const KIB: usize = 1024;
pub(crate) const BATCH: usize = 100;

/// The settings of one run.
#[derive(Clone, Debug)]
pub(crate) struct Cfg {
    pub warmup: Duration,
    pub duration: Duration,
    pub single_conns: usize,
    pub batch_conns: usize,
    /// Messages filled then drained in W4.
    pub drain: u64,
    /// W4's fill for peers that fsync every message one at a time (JetStream `sync_interval: always`).
    pub drain_slow: u64,
    pub e2e_rate: u64,
    pub e2e_warmup: Duration,
    pub e2e_duration: Duration,
    /// W6's warm-up and measurement, for each of its two workloads.
    pub cluster_warmup: Duration,
    pub cluster_duration: Duration,
}

/// Index in [`Target::w`] of W6's W2 and W3: W6's W2 is `W6 + 0`, its W3 `W6 + 1`.
pub(crate) const W6: usize = 5;
const WORKLOADS_N: usize = 7;

/// The name of workload `i` (0-based) in logs, failures and the JSON.
pub(crate) fn wname(i: usize) -> &'static str {
    ["W1", "W2", "W3", "W4", "W5", "W6/W2", "W6/W3"][i]
}

/// One workload's measurement.
#[derive(Default, Clone, Debug)]
pub(crate) struct Sample {
    pub messages: u64,
    pub seconds: f64,
    /// Sorted, µs.
    pub lat_us: Vec<u32>,
    pub errors: u64,
    pub note: Option<String>,
}

impl Sample {
    pub fn new(messages: u64, seconds: f64, mut lat_us: Vec<u32>) -> Sample {
        lat_us.sort_unstable();
        Sample { messages, seconds, lat_us, errors: 0, note: None }
    }

    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds.max(1e-9)
    }

    pub fn pct(&self, p: f64) -> u32 {
        if self.lat_us.is_empty() {
            return 0;
        }
        self.lat_us[((self.lat_us.len() as f64 - 1.0) * p).round() as usize]
    }

    fn json(&self) -> serde_json::Value {
        json!({"messages": self.messages, "seconds": (self.seconds * 1000.0).round() / 1000.0,
            "msg_per_s": self.rate().round() as u64, "p50_us": self.pct(0.5), "p99_us": self.pct(0.99),
            "p999_us": self.pct(0.999), "max_us": self.lat_us.last().copied().unwrap_or(0),
            "samples": self.lat_us.len(), "errors": self.errors, "note": self.note})
    }
}

/// All workloads against one target in one durability mode.
#[derive(Debug)]
pub(crate) struct Target {
    pub system: &'static str,
    pub version: String,
    /// Short label for tables and the chart.
    pub label: &'static str,
    pub durability: &'static str,
    /// W1..W5, then W6's W2 and W3 ([`W6`]); `None` where it did not run (the reason is in
    /// `failures`).
    pub w: [Option<Sample>; WORKLOADS_N],
    pub failures: Vec<String>,
}

impl Target {
    pub fn new(system: &'static str, version: String, label: &'static str, durability: &'static str) -> Target {
        Target { system, version, label, durability, w: Default::default(), failures: Vec::new() }
    }

    /// Records workload `i` (0-based), keeping going after an error.
    pub fn record(&mut self, i: usize, r: anyhow::Result<Sample>) {
        match r {
            Ok(s) => {
                eprintln!(
                    "  {} {}: {:.0} msg/s, p50 {} µs, p99 {} µs, p999 {} µs ({} messages, {:.2} s, {} errors)",
                    self.label,
                    wname(i),
                    s.rate(),
                    s.pct(0.5),
                    s.pct(0.99),
                    s.pct(0.999),
                    s.messages,
                    s.seconds,
                    s.errors
                );
                self.w[i] = Some(s);
            }
            Err(e) => {
                eprintln!("  {} {} failed: {e:#}", self.label, wname(i));
                self.failures.push(format!("{}: {e:#}", wname(i)));
            }
        }
    }

    /// Records why W6 has no figures (both of its workloads, where nothing is recorded yet):
    /// `not run: <reason>`, or the error.
    pub fn w6_missing(&mut self, why: &str) {
        for i in [W6, W6 + 1] {
            if self.w[i].is_none() && self.why(i).is_none() {
                eprintln!("  {} {}: {why}", self.label, wname(i));
                self.failures.push(format!("{}: {why}", wname(i)));
            }
        }
    }

    /// The reason workload `i` has no figure, if one was recorded.
    fn why(&self, i: usize) -> Option<&str> {
        let prefix = format!("{}: ", wname(i));
        self.failures.iter().find_map(|f| f.strip_prefix(prefix.as_str()))
    }
}

// ---------------------------------------------------------------------------------------------
// Load drivers shared by the peers

/// One operation a closed-loop task repeats: produce one message or one batch.
pub(crate) trait Op: Send + 'static {
    fn run(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Runs each op in its own task back to back for `warmup` then `duration`; counts the
/// operations (of `per_op` messages) that complete inside the measured window.
pub(crate) async fn closed_loop<O: Op>(
    ops: Vec<O>,
    per_op: u64,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Sample> {
    let measure_from = Instant::now() + warmup;
    let end = measure_from + duration;
    let handles: Vec<_> = ops
        .into_iter()
        .map(|mut op| {
            tokio::spawn(async move {
                let (mut n, mut lat, mut last) = (0u64, Vec::new(), None);
                while Instant::now() < end {
                    let t = Instant::now();
                    op.run().await?;
                    let now = Instant::now();
                    if now >= measure_from && now < end {
                        n += per_op;
                        lat.push(micros(now - t));
                        last = Some(now);
                    }
                }
                Ok::<_, anyhow::Error>((n, lat, last))
            })
        })
        .collect();
    let (mut n, mut lat, mut last) = (0, Vec::new(), None::<Instant>);
    for h in handles {
        let (tn, tl, tlast) = h.await??;
        n += tn;
        lat.extend(tl);
        last = last.max(tlast);
    }
    let seconds = last.map_or(duration, |l| l - measure_from).as_secs_f64();
    Ok(Sample::new(n, seconds, lat))
}

pub(crate) fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The instant end-to-end timestamps count from (nanoseconds since it travel in payloads).
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Open-loop pacing for W5: message `i` of the whole run is due at `start + i / rate`; producer
/// `k` of `of` sends the messages with `i % of == k`.
pub(crate) struct Pacer {
    start: Instant,
    rate: u64,
    next: u64,
    step: u64,
    total: u64,
    last_wake: Instant,
}

impl Pacer {
    pub fn new(start: Instant, rate: u64, duration: Duration, k: usize, of: usize) -> Pacer {
        let total = (rate as f64 * duration.as_secs_f64()) as u64;
        Pacer { start, rate, next: k as u64, step: of as u64, total, last_wake: start }
    }

    /// Waits until the next message is due; returns its timestamp (ns since [`epoch`]), or `None`
    /// when the run is over.
    ///
    /// The timestamp is the due time, except that a message that fell due while this producer
    /// slept on the timer (which has 1 ms granularity) is stamped with the time it woke up:
    /// timer slack is not the broker's, but a producer held up by a slow acknowledgement is
    /// (stamping due times then avoids coordinated omission).
    pub async fn tick(&mut self) -> Option<u64> {
        if self.next >= self.total {
            return None;
        }
        let due = self.start + Duration::from_nanos(self.next * 1_000_000_000 / self.rate);
        self.next += self.step;
        if Instant::now() < due {
            tokio::time::sleep_until(due.into()).await;
            self.last_wake = Instant::now();
        }
        let stamp = due.max(self.last_wake);
        Some((stamp - epoch()).as_nanos() as u64)
    }
}

/// W5's note when the producers could not keep to the rate: they finished sending more than
/// 100 ms after the last message was due.
pub(crate) fn lag_note(start: Instant, total: Duration) -> Option<String> {
    let lag = Instant::now().saturating_duration_since(start + total);
    (lag > Duration::from_millis(100))
        .then(|| format!("rate not sustained: sending finished {:.1} s late", lag.as_secs_f64()))
}

/// End-to-end latency of a message stamped `stamp_ns` (see [`Pacer::tick`]), received now.
pub(crate) fn e2e_us(stamp_ns: u64) -> u32 {
    let now = (Instant::now() - epoch()).as_nanos() as u64;
    u32::try_from(now.saturating_sub(stamp_ns) / 1000).unwrap_or(u32::MAX)
}

/// A 1 KiB binary payload whose first 8 bytes carry `stamp` (little-endian).
pub(crate) fn stamped(stamp: u64) -> Vec<u8> {
    let mut p = vec![0x5a; KIB];
    p[..8].copy_from_slice(&stamp.to_le_bytes());
    p
}

pub(crate) fn stamp_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.get(..8)?.try_into().ok()?))
}

// ---------------------------------------------------------------------------------------------
// The run and its report

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let quick = args.iter().any(|a| a == "--quick");
    let flag = |name: &str| -> anyhow::Result<Option<PathBuf>> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(Some(PathBuf::from(args.get(i + 1).with_context(|| format!("{name} needs a value"))?))),
            None => Ok(None),
        }
    };
    let base = flag("--dir")?.unwrap_or_else(std::env::temp_dir);
    let out = flag("--out")?;
    let cfg = if quick {
        Cfg {
            warmup: Duration::from_millis(300),
            duration: Duration::from_millis(1500),
            single_conns: 64,
            batch_conns: 16,
            drain: 100_000,
            drain_slow: 20_000,
            e2e_rate: 10_000,
            e2e_warmup: Duration::from_millis(500),
            e2e_duration: Duration::from_secs(2),
            cluster_warmup: Duration::from_millis(300),
            cluster_duration: Duration::from_secs(1),
        }
    } else {
        Cfg {
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            single_conns: 64,
            batch_conns: 16,
            drain: 1_000_000,
            drain_slow: 100_000,
            e2e_rate: 10_000,
            e2e_warmup: Duration::from_secs(1),
            e2e_duration: Duration::from_secs(10),
            cluster_warmup: Duration::from_secs(1),
            cluster_duration: Duration::from_secs(5),
        }
    };
    let only = std::env::var("DEPOT_BENCH_PEERS").unwrap_or_else(|_| "depot,nats,rabbitmq".to_owned());
    let wants = |name: &str| only.split(',').any(|s| s.trim() == name);
    let _ = epoch();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let tmp = tempfile::tempdir_in(&base)?;
    let mut targets = Vec::new();
    // Each W6 cluster runs in a directory of its own that is removed right after it.
    let w6 = |t: &mut Target, name: &str, f: &dyn Fn(&mut Target, &Path) -> anyhow::Result<()>| {
        let dir = tmp.path().join(name);
        eprintln!("== {} W6: 3-node cluster", t.label);
        let started = Instant::now();
        if let Err(e) = f(t, &dir) {
            eprintln!("  {} W6 failed: {e:#}", t.label);
            t.w6_missing(&format!("{e:#}"));
        }
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("  W6 took {:.1} s, cluster start and stop included", started.elapsed().as_secs_f64());
    };
    if wants("depot") {
        eprintln!("== Depot");
        let mut t = depot::run(&rt, &cfg, &tmp.path().join("depot"))?;
        let _ = std::fs::remove_dir_all(tmp.path().join("depot"));
        w6(&mut t, "depot-cluster", &|t, dir| depot::cluster(&rt, &cfg, dir, t));
        targets.push(t);
    }
    if wants("nats") {
        for sync_always in [true, false] {
            eprintln!("== NATS JetStream, sync always: {sync_always}");
            let dir = tmp.path().join(if sync_always { "nats-sync" } else { "nats-default" });
            let single = nats::run(&rt, &cfg, &dir, sync_always);
            let _ = std::fs::remove_dir_all(&dir);
            match single {
                Ok(mut t) => {
                    if sync_always || !quick {
                        w6(&mut t, "nats-cluster", &|t, dir| nats::cluster(&rt, &cfg, dir, sync_always, t));
                    } else {
                        t.w6_missing("not run with --quick (2-minute bound); the full run measures it");
                    }
                    targets.push(t);
                }
                Err(e) => eprintln!("NATS failed: {e:#}"),
            }
        }
    }
    if wants("rabbitmq") {
        eprintln!("== RabbitMQ");
        let single = rabbit::run(&rt, &cfg, &tmp.path().join("rabbitmq"));
        let _ = std::fs::remove_dir_all(tmp.path().join("rabbitmq"));
        match single {
            Ok(mut ts) => {
                for t in &mut ts {
                    if t.label == rabbit::QUORUM && !quick {
                        w6(t, "rabbitmq-cluster", &|t, dir| rabbit::cluster(&rt, &cfg, dir, t));
                    } else if t.label == rabbit::QUORUM {
                        t.w6_missing("not run with --quick (2-minute bound); the full run measures it");
                    } else {
                        t.w6_missing(
                            "not run: classic queues do not replicate (mirroring is deprecated); W6 uses quorum queues",
                        );
                    }
                }
                targets.extend(ts);
            }
            Err(e) => eprintln!("RabbitMQ failed: {e:#}"),
        }
    }
    drop(rt);
    let elapsed = started.elapsed();
    eprintln!("all targets took {:.0} s", elapsed.as_secs_f64());
    let table = markdown(&targets, &cfg);
    println!("{table}");
    let report = json!({
        "date": output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "mode": if quick { "quick" } else { "full" },
        "seconds": elapsed.as_secs_f64().round(),
        "machine": {"cpus": std::thread::available_parallelism().map_or(0, usize::from),
            "kernel": output("uname", &["-r"])},
        "config": format!("{cfg:?}"),
        "targets": targets.iter().map(|t| json!({"system": t.system, "version": t.version, "label": t.label,
            "durability": t.durability, "failures": t.failures,
            "workloads": t.w.iter().enumerate().map(|(i, s)| (wname(i).to_owned(),
                s.as_ref().map_or(serde_json::Value::Null, Sample::json))).collect::<serde_json::Map<_, _>>()}))
            .collect::<Vec<_>>(),
        "W6": "W6/W2 and W6/W3 are W2 and W3 against a 3-node replicated cluster on this machine: \
            Depot 3 `depot serve` nodes, station replicas 3, via the leader; JetStream 3 clustered \
            nats-servers, stream num_replicas 3, via the stream leader's server; RabbitMQ 3 nodes, \
            quorum queue of 3 members, via its leader's node",
    });
    if let Some(out) = out {
        std::fs::create_dir_all(&out)?;
        std::fs::write(out.join("peers.json"), serde_json::to_string_pretty(&report)? + "\n")?;
        std::fs::write(out.join("peers.md"), &table)?;
        chart::draw(&targets, &out.join("latency.png"))?;
        eprintln!("wrote {}/peers.json, peers.md and latency.png", out.display());
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn fmt_rate(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

fn fmt_us(us: u32) -> String {
    if us >= 10_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else if us >= 1000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// The figure shown for workload `i`, and the number a ratio is taken of.
fn cell(i: usize, s: &Sample) -> (String, f64) {
    let mut text = match i {
        0 => format!("p50 {}, p99 {}", fmt_us(s.pct(0.5)), fmt_us(s.pct(0.99))),
        4 => format!("p50 {}, p99 {}, p999 {}", fmt_us(s.pct(0.5)), fmt_us(s.pct(0.99)), fmt_us(s.pct(0.999))),
        _ => format!("{} msg/s", fmt_rate(s.rate())),
    };
    if s.errors > 0 {
        text.push_str(&format!(" ({} errors)", s.errors));
    }
    if let Some(n) = &s.note {
        text.push_str(&format!(" ({n})"));
    }
    let key = match i {
        0 => s.pct(0.5) as f64,
        4 => s.pct(0.99) as f64,
        _ => s.rate(),
    };
    (text, key)
}

const WORKLOADS: [&str; WORKLOADS_N] = [
    "W1 one connection, one durable produce at a time",
    "W2 64 producers, single messages",
    "W3 16 producers, batches of 100",
    "W4 drain (consume + ack)",
    "W5 end-to-end at 10k msg/s open loop",
    "W6 3-node cluster: W2 64 producers, single messages",
    "W6 3-node cluster: W3 16 producers, batches of 100",
];

fn markdown(targets: &[Target], cfg: &Cfg) -> String {
    let mut s = String::new();
    let depot = targets.iter().find(|t| t.system == "Depot");
    s.push_str("| workload |");
    for t in targets {
        s.push_str(&format!(" {} ({}) |", t.label, t.durability));
    }
    s.push_str(" target | met? |\n|---|");
    for _ in targets {
        s.push_str("---|");
    }
    s.push_str("---|---|\n");
    for (i, name) in WORKLOADS.iter().enumerate() {
        let name = match i {
            3 => format!("W4 drain {} messages (consume + ack)", fmt_rate(cfg.drain as f64)),
            _ => (*name).to_owned(),
        };
        s.push_str(&format!("| {name} |"));
        let d = depot.and_then(|d| d.w[i].as_ref());
        for t in targets {
            match &t.w[i] {
                None => {
                    let why = t.why(i).unwrap_or("failed");
                    let why: String = why.chars().take(100).collect();
                    if why.starts_with("not run") {
                        s.push_str(&format!(" {why} |"));
                    } else {
                        s.push_str(&format!(" failed: {why} |"));
                    }
                }
                Some(x) => {
                    let (text, key) = cell(i, x);
                    match d.map(|d| cell(i, d).1) {
                        Some(dk) if t.system != "Depot" && key > 0.0 => {
                            s.push_str(&format!(" {text}; Depot/peer **{:.2}×** |", dk / key));
                        }
                        _ => s.push_str(&format!(" {text} |")),
                    }
                }
            }
        }
        let (target, met) = targets_met(i, d, targets);
        s.push_str(&format!(" {target} | {met} |\n"));
    }
    s
}

fn targets_met(i: usize, d: Option<&Sample>, targets: &[Target]) -> (&'static str, String) {
    let peer = |label: &str| targets.iter().find(|t| t.label == label).and_then(|t| t.w[i].as_ref());
    let yes = |b: bool| if b { "yes".to_owned() } else { "**no**".to_owned() };
    let Some(d) = d else { return ("", "—".to_owned()) };
    match i {
        0 => ("p50 ≤ 300 µs", yes(d.pct(0.5) <= 300)),
        1 => (
            "≥ 5× JetStream sync always",
            peer("JetStream sync").map_or("—".to_owned(), |p| yes(d.rate() >= 5.0 * p.rate())),
        ),
        2 => ("≥ 2× JetStream default, ≥ 1.5× RabbitMQ quorum", {
            let js = peer("JetStream default").map(|p| d.rate() >= 2.0 * p.rate());
            let rq = peer("RabbitMQ quorum").map(|p| d.rate() >= 1.5 * p.rate());
            format!("JetStream: {}, RabbitMQ: {}", js.map_or("—".to_owned(), yes), rq.map_or("—".to_owned(), yes))
        }),
        3 => ("≥ 300k msg/s", yes(d.rate() >= 300_000.0)),
        4 => ("p99 ≤ 5 ms", yes(d.pct(0.99) <= 5000)),
        _ => ("—", "—".to_owned()),
    }
}
