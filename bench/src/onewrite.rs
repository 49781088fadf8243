//! `depot-bench onewrite [--quick] [--dir DIR] [--writers N] [--batch N] [--stations 1,10,1000]
//! [--seconds S] [--layouts today,raft-store,...]`: issue 19's prototype of one write per
//! payload byte.
//!
//! It drives Depot's own storage code (`SegmentedLog`, `GroupCommit`, the real Raft entry and
//! station record encodings) on a temp dir on the real disk (default `/var/tmp`), without
//! openraft or HTTP: `--writers` threads (16) each submit batches of `--batch` (100) 1 KiB
//! produces, each batch to a station drawn at random among `--stations`, and wait for it to be
//! durable. Every station log exists and holds one synced record before the clock starts, so
//! runs measure appends, not log creation. Storage layouts:
//!
//! * `today`: one proposer coalesces every waiting batch into one Raft entry, appends it to
//!   the Raft log and waits for its `GroupCommit` fsync (the broker's depth-1 pipeline), then
//!   applies it: every message is appended to its station log, not fsynced. A snapshot every
//!   256 MiB of payload (`snapshot_bytes`) fsyncs the station logs on another thread, after
//!   which the proposer purges the Raft log up to it.
//! * `raft-store` (option a): the same Raft log and commit, but station logs get a 16-byte
//!   index record per message (Raft index, byte position, length) instead of the message.
//!   Snapshots fsync the index logs; the Raft log is never purged (retention would decide).
//! * `per-station` (option b, one shared commit): each station's log is its Raft group's log.
//!   One proposer takes every waiting batch, appends one entry per station touched to that
//!   station's log, and hands all their sync points to one `GroupCommit` (one fdatasync per
//!   touched log, one after another), so groups share commit rounds but not fsyncs.
//! * `per-station-parallel` (option b, one shared round, fsyncs at once): as `per-station`, but
//!   the round's fsyncs run concurrently, one thread each.
//! * `per-station-independent` (option b, one commit stream per group): every station commits
//!   on its own. The writer that finds its station idle becomes its committer: it appends one
//!   entry with everything queued there, fsyncs that log on its own thread and answers the
//!   batches, so up to `--writers` fsync streams run at once, as N Raft groups would.
//!
//! `--quick` runs 1 s per layout with 1 and 1,000 stations (about a minute on a loaded 2-vCPU
//! machine); otherwise 10 s each with 1, 10 and 1,000. `longest_stall_ms` is the longest gap
//! of a 10 ms ticker during a run (a SIGSTOP or CPU starvation of this process shows there); a
//! run with a stall over 250 ms is run again, up to 4 runs in all. `loadavg` is the 1-minute
//! load when it ended.
//!
//! Per layout and station count it reports: payload msg/s, p50/p99 batch latency, fsyncs per
//! second (every fsync through `depot_broker::log`, the snapshot's and segment rolls' included),
//! commit rounds per second, CPU µs per message (user + system of this process from
//! `/proc/self/stat`, the writers' encoding included), and written bytes per payload byte
//! twice: `proc_write_bytes` from `/proc/self/io` (bytes this process dirtied for the block
//! layer, counted when written, so buffered station-log writes count even before writeback)
//! and `device_sectors` from `/sys/dev/block/MAJ:MIN/stat` of the disk holding the dir
//! (everything that reached the device, the file system's journal included, other processes'
//! writes too), read after the logs still unsynced were fsynced at the end of the run.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use depot_broker::log::{fsync_stats, FileCache, GroupCommit, LogOptions, SegmentedLog, SyncPoint, Verify};
use depot_broker::raft::codec::{encode_entry, encode_message};
use depot_broker::raft::{Entry, Proposal};
use depot_broker::station::{Command, Envelope, NewMessage};
use serde_json::json;

const KIB: usize = 1024;
/// Depot's defaults: segment size, snapshot every 256 MiB of payload, descriptor cache.
const SEGMENT_BYTES: u64 = 64 << 20;
const SNAPSHOT_BYTES: u64 = 256 << 20;
const MAX_OPEN_FILES: usize = 1024;
/// The index record of option a: Raft index u64, byte position u32, length u32.
const INDEX_RECORD: usize = 16;
/// A run with a longer stall is run again, up to `ATTEMPTS` runs in all.
const MAX_STALL_MS: u64 = 250;
const ATTEMPTS: u32 = 4;
/// Most fsyncs `per-station-parallel` runs at once.
const PARALLEL_SYNCS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Today,
    RaftStore,
    PerStation,
    PerStationParallel,
    PerStationIndependent,
}

impl Layout {
    const ALL: [Layout; 5] = [
        Layout::Today,
        Layout::RaftStore,
        Layout::PerStation,
        Layout::PerStationParallel,
        Layout::PerStationIndependent,
    ];

    fn name(self) -> &'static str {
        match self {
            Layout::Today => "today",
            Layout::RaftStore => "raft-store",
            Layout::PerStation => "per-station",
            Layout::PerStationParallel => "per-station-parallel",
            Layout::PerStationIndependent => "per-station-independent",
        }
    }
}

struct Args {
    base: PathBuf,
    writers: usize,
    batch: usize,
    stations: Vec<usize>,
    seconds: f64,
    layouts: Vec<Layout>,
}

fn parse_args(args: &[String]) -> anyhow::Result<Args> {
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
    let base = value("--dir").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
    let writers = value("--writers").map_or(Ok(16), |v| v.parse()).context("--writers")?;
    let batch = value("--batch").map_or(Ok(100), |v| v.parse()).context("--batch")?;
    let stations = match value("--stations") {
        Some(list) => list.split(',').map(str::parse).collect::<Result<Vec<usize>, _>>().context("--stations")?,
        None if quick => vec![1, 1000],
        None => vec![1, 10, 1000],
    };
    let seconds = value("--seconds").map_or(Ok(if quick { 1.0 } else { 10.0 }), |v| v.parse()).context("--seconds")?;
    let layouts = match value("--layouts") {
        Some(list) => list
            .split(',')
            .map(|n| Layout::ALL.into_iter().find(|l| l.name() == n).with_context(|| format!("unknown layout {n}")))
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => Layout::ALL.to_vec(),
    };
    if writers == 0 || batch == 0 || stations.contains(&0) {
        bail!("--writers, --batch and --stations must be positive");
    }
    Ok(Args { base, writers, batch, stations, seconds, layouts })
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let args = parse_args(args)?;
    let tmp = tempfile::Builder::new().prefix("depot-onewrite-").tempdir_in(&args.base)?;
    let device = device_stat_path(tmp.path());
    let mut results = Vec::new();
    for &stations in &args.stations {
        for &layout in &args.layouts {
            let dir = tmp.path().join(format!("{}-{stations}", layout.name()));
            // A run this process spent stopped (SIGSTOP) or starved of CPU for long is not
            // a figure of the layout: it is run again, up to `ATTEMPTS` times in all.
            let mut attempt = 1;
            let r = loop {
                std::fs::create_dir_all(&dir)?;
                // Every run ends with its files fsynced, so none leaves writeback to the next one.
                let mut r = measure(layout, stations, &args, &dir, device.as_deref())?;
                std::fs::remove_dir_all(&dir)?;
                r["attempt"] = json!(attempt);
                eprintln!("{r}");
                if r["longest_stall_ms"].as_u64().unwrap_or(0) <= MAX_STALL_MS || attempt == ATTEMPTS {
                    break r;
                }
                attempt += 1;
            };
            results.push(r);
        }
    }
    println!("| layout | stations | batch | msg/s | p50 ms | p99 ms | fsyncs/s | commits/s | CPU µs/msg | write_bytes/payload | device/payload | stall ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {:.2} | {:.2} | {} | {} |",
            r["layout"].as_str().unwrap_or(""),
            r["stations"],
            r["batch"],
            r["msg_per_s"],
            r["p50_us"].as_f64().unwrap_or(0.0) / 1000.0,
            r["p99_us"].as_f64().unwrap_or(0.0) / 1000.0,
            r["fsyncs_per_s"],
            r["commits_per_s"],
            r["cpu_us_per_msg"].as_f64().unwrap_or(0.0),
            r["proc_write_bytes_per_payload_byte"].as_f64().unwrap_or(0.0),
            r["device_per_payload_byte"].as_f64().map_or("n/a".into(), |v| format!("{v:.2}")),
            r["longest_stall_ms"],
        );
    }
    println!("{}", serde_json::to_string(&results)?);
    Ok(())
}

/// Counters read before and after a run.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    write_bytes: u64,
    sectors: Option<u64>,
    fsyncs: u64,
    cpu_s: f64,
}

impl Counters {
    fn read(device: Option<&Path>) -> Counters {
        let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
        Counters {
            write_bytes: proc_io_field(&io, "write_bytes").unwrap_or(0),
            sectors: device.and_then(|p| std::fs::read_to_string(p).ok()).and_then(|s| sectors_written(&s)),
            fsyncs: fsync_stats().count,
            cpu_s: depot_tests::process::cpu_seconds("/proc/self/stat"),
        }
    }
}

/// A field of `/proc/<pid>/io`, such as `write_bytes`.
fn proc_io_field(io: &str, name: &str) -> Option<u64> {
    io.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).and_then(|v| v.trim().parse().ok())
}

/// Sectors written (of 512 bytes, whatever the device's block size), the 7th field of a
/// `/sys/block/<dev>/stat` line.
fn sectors_written(stat: &str) -> Option<u64> {
    stat.split_whitespace().nth(6)?.parse().ok()
}

/// Major and minor of a Linux `dev_t` (glibc's encoding: 12 bits of major, 20 of minor, split).
fn major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// The stat file of the block device (or partition) holding `dir`, if it has one (not on tmpfs
/// or overlay).
fn device_stat_path(dir: &Path) -> Option<PathBuf> {
    let (major, minor) = major_minor(std::fs::metadata(dir).ok()?.dev());
    let path = PathBuf::from(format!("/sys/dev/block/{major}:{minor}/stat"));
    path.exists().then_some(path)
}

fn entry(index: u64, envelopes: Vec<Envelope>) -> Entry {
    Entry {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: openraft::EntryPayload::Normal(Proposal { envelopes: envelopes.into() }),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn options(sync_on_open: bool) -> LogOptions {
    LogOptions {
        segment_bytes: SEGMENT_BYTES,
        verify: Verify::Tail,
        preallocate: false,
        after_clean_shutdown: false,
        sync_on_open,
    }
}

/// A produce batch waiting for the proposer, answered once durable.
struct Request {
    station: usize,
    messages: Vec<NewMessage>,
    done: Sender<()>,
}

/// Waits until every point handed to `committer` is durable.
fn commit(committer: &GroupCommit, points: Vec<SyncPoint>) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel();
    let n = points.len();
    for point in points {
        let tx = tx.clone();
        committer.submit(point, Box::new(move |r| drop(tx.send(r))));
    }
    for _ in 0..n {
        rx.recv().context("group commit gone")??;
    }
    Ok(())
}

/// Syncs every point at once, one thread each (up to `PARALLEL_SYNCS` at a time), so the file
/// system can put their journal commits and cache flushes together.
fn sync_parallel(points: Vec<SyncPoint>) -> anyhow::Result<()> {
    for chunk in points.chunks(PARALLEL_SYNCS) {
        thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|p| s.spawn(move || p.sync())).collect();
            handles.into_iter().try_for_each(|h| -> anyhow::Result<()> {
                h.join().map_err(|_| anyhow::anyhow!("sync thread panicked"))??;
                Ok(())
            })
        })?;
    }
    Ok(())
}

/// One storage layout's logs, driven by the proposer thread.
struct Store {
    layout: Layout,
    raft: Option<SegmentedLog>,
    raft_next: u64,
    /// Station logs (or per-station Raft logs), with each one's next seq.
    stations: Vec<(SegmentedLog, u64)>,
    committer: GroupCommit,
    buf: Vec<u8>,
    payload_since_snapshot: u64,
    /// Raft index the last durable snapshot covers, set by the snapshot thread.
    snapshot_durable: Arc<AtomicU64>,
    snapshot_busy: Arc<AtomicBool>,
    purged_to: u64,
    commits: u64,
}

impl Store {
    fn open(layout: Layout, stations: usize, dir: &Path) -> anyhow::Result<Store> {
        let cache = FileCache::new(MAX_OPEN_FILES);
        let raft = match layout {
            Layout::Today | Layout::RaftStore => Some(SegmentedLog::open(&dir.join("raft/log"), options(true))?.0),
            _ => None,
        };
        // The logs are new: their directories are made durable here at once, and each gets a
        // first record, synced, so the run measures appends to existing logs, not their creation.
        let root = dir.join("stations");
        for i in 0..stations {
            std::fs::create_dir_all(root.join(i.to_string()))?;
        }
        depot_broker::dirs::fsync_dir(&root)?;
        let mut logs = Vec::with_capacity(stations);
        for i in 0..stations {
            let (mut log, _) = SegmentedLog::open_in(&root.join(i.to_string()), options(false), Some(&cache))?;
            log.append(0, b"warm-up")?;
            logs.push((log, 1));
        }
        sync_parallel(logs.iter().map(|(log, _)| log.sync_point()).collect())?;
        Ok(Store {
            layout,
            raft,
            raft_next: 1,
            stations: logs,
            committer: GroupCommit::spawn("onewrite-sync"),
            buf: Vec::new(),
            payload_since_snapshot: 0,
            snapshot_durable: Arc::new(AtomicU64::new(0)),
            snapshot_busy: Arc::new(AtomicBool::new(false)),
            purged_to: 0,
            commits: 0,
        })
    }

    /// Makes one round of requests durable (and applied), in order.
    fn propose(&mut self, round: &mut [Request], now: i64) -> anyhow::Result<()> {
        match self.layout {
            Layout::Today | Layout::RaftStore => self.propose_one_log(round, now),
            Layout::PerStation | Layout::PerStationParallel => self.propose_per_station(round, now),
            Layout::PerStationIndependent => unreachable!("committed by the writers"),
        }
    }

    fn propose_one_log(&mut self, round: &mut [Request], now: i64) -> anyhow::Result<()> {
        let index = self.raft_next;
        let entry = entry(index, envelopes(round, now));
        encode_entry(&entry, &mut self.buf)?;
        let raft = self.raft.as_mut().context("no raft log")?;
        let durable = self.snapshot_durable.load(Ordering::Acquire);
        if durable > self.purged_to && self.layout == Layout::Today {
            raft.purge_before(durable + 1)?;
            self.purged_to = durable;
        }
        raft.append(index, &self.buf)?;
        self.raft_next += 1;
        commit(&self.committer, vec![raft.sync_point()])?;
        self.commits += 1;
        // Apply. Positions of option a are the payload's place in the entry, estimated from the
        // encoded sizes before it: the prototype measures bytes, it never reads them back.
        let mut position = 0u32;
        let openraft::EntryPayload::Normal(proposal) = entry.payload else { bail!("not a proposal") };
        for (r, env) in round.iter().zip(proposal.envelopes.iter()) {
            let Command::Produce { messages, .. } = &env.command else { bail!("not a produce") };
            let (log, next) = &mut self.stations[r.station];
            for msg in messages {
                self.buf.clear();
                match self.layout {
                    Layout::Today => encode_message(msg, now, &mut self.buf),
                    _ => {
                        position += (msg.payload.len() + 64) as u32;
                        self.buf.extend_from_slice(&index.to_le_bytes());
                        self.buf.extend_from_slice(&position.to_le_bytes());
                        self.buf.extend_from_slice(&(msg.payload.len() as u32).to_le_bytes());
                        debug_assert_eq!(self.buf.len(), INDEX_RECORD);
                    }
                }
                log.append(*next, &self.buf)?;
                *next += 1;
                self.payload_since_snapshot += msg.payload.len() as u64;
            }
        }
        if self.payload_since_snapshot >= SNAPSHOT_BYTES && !self.snapshot_busy.swap(true, Ordering::AcqRel) {
            self.payload_since_snapshot = 0;
            let points: Vec<SyncPoint> = self.stations.iter().map(|(log, _)| log.sync_point()).collect();
            let (durable, busy) = (Arc::clone(&self.snapshot_durable), Arc::clone(&self.snapshot_busy));
            // The snapshot's fsyncs run beside the commits, as openraft's snapshot builder does.
            thread::spawn(move || {
                if points.iter().all(|p| p.sync().is_ok()) {
                    durable.store(index, Ordering::Release);
                }
                busy.store(false, Ordering::Release);
            });
        }
        Ok(())
    }

    fn propose_per_station(&mut self, round: &mut [Request], now: i64) -> anyhow::Result<()> {
        let mut by_station: HashMap<usize, Vec<Envelope>> = HashMap::new();
        let stations: Vec<usize> = round.iter().map(|r| r.station).collect();
        for (r, env) in stations.into_iter().zip(envelopes(round, now)) {
            by_station.entry(r).or_default().push(env);
        }
        let mut points = Vec::with_capacity(by_station.len());
        for (station, envelopes) in by_station {
            let (log, next) = &mut self.stations[station];
            encode_entry(&entry(*next, envelopes), &mut self.buf)?;
            log.append(*next, &self.buf)?;
            *next += 1;
            points.push(log.sync_point());
        }
        if self.layout == Layout::PerStationParallel {
            sync_parallel(points)?;
        } else {
            commit(&self.committer, points)?;
        }
        self.commits += 1;
        Ok(())
    }

    /// Fsyncs what is still unsynced (station logs of `today` and `raft-store`), so the device
    /// counter sees every byte of the run.
    fn flush(&mut self) -> anyhow::Result<()> {
        while self.snapshot_busy.load(Ordering::Acquire) {
            thread::sleep(Duration::from_millis(5));
        }
        sync_parallel(self.stations.iter().map(|(log, _)| log.sync_point()).collect())
    }
}

/// The round's produce commands, taking the messages out of the requests (as the proposer
/// moves commands into its proposal).
fn envelopes(round: &mut [Request], now: i64) -> Vec<Envelope> {
    round
        .iter_mut()
        .map(|r| Envelope {
            now,
            command: Command::Produce { station: format!("s{}", r.station), messages: std::mem::take(&mut r.messages) },
        })
        .collect()
}

/// One station of `per-station-independent`: its log (its Raft group's) and the batches
/// waiting for its committer.
struct Group {
    log: SegmentedLog,
    next: u64,
    queue: Vec<Request>,
    busy: bool,
}

/// Queues `req` on its station; if no committer is at work there, this thread becomes it.
fn commit_independent(groups: &[Mutex<Group>], req: Request) -> anyhow::Result<()> {
    fn lock(g: &Mutex<Group>) -> std::sync::MutexGuard<'_, Group> {
        g.lock().unwrap_or_else(|p| p.into_inner())
    }
    let group = &groups[req.station];
    let mut g = lock(group);
    g.queue.push(req);
    if g.busy {
        return Ok(());
    }
    g.busy = true;
    let mut buf = Vec::new();
    loop {
        let mut round = std::mem::take(&mut g.queue);
        if round.is_empty() {
            g.busy = false;
            return Ok(());
        }
        let index = g.next;
        g.next += 1;
        encode_entry(&entry(index, envelopes(&mut round, now_ms())), &mut buf)?;
        g.log.append(index, &buf)?;
        let point = g.log.sync_point();
        drop(g);
        point.sync()?;
        for r in &round {
            let _ = r.done.send(());
        }
        g = lock(group);
    }
}

/// The random station of a writer's next batch (xorshift64).
fn next_station(state: &mut u64, stations: usize) -> usize {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state % stations as u64) as usize
}

fn measure(
    layout: Layout,
    stations: usize,
    args: &Args,
    dir: &Path,
    device: Option<&Path>,
) -> anyhow::Result<serde_json::Value> {
    let payload = Bytes::from(vec![0x5au8; KIB]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let duration = Duration::from_secs_f64(args.seconds);
    let batch = args.batch;

    let setup = Instant::now();
    let mut store = Store::open(layout, stations, dir)?;
    let groups: Arc<Vec<Mutex<Group>>> = Arc::new(if layout == Layout::PerStationIndependent {
        std::mem::take(&mut store.stations)
            .into_iter()
            .map(|(log, next)| Mutex::new(Group { log, next, queue: Vec::new(), busy: false }))
            .collect()
    } else {
        Vec::new()
    });
    let (tx, rx): (Sender<Request>, Receiver<Request>) = mpsc::channel();

    let setup_s = setup.elapsed().as_secs_f64();
    // Longest time this process went without running a 10 ms tick: a SIGSTOP, or no CPU.
    let stall = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut longest = Duration::ZERO;
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(10));
                longest = longest.max(last.elapsed());
                last = Instant::now();
            }
            longest
        })
    };
    let before = Counters::read(device);
    let started = Instant::now();
    let proposer = (layout != Layout::PerStationIndependent).then(|| {
        thread::Builder::new().name("onewrite-proposer".into()).spawn(move || -> anyhow::Result<Store> {
            while let Ok(first) = rx.recv() {
                let mut round = vec![first];
                round.extend(rx.try_iter());
                store.propose(&mut round, now_ms())?;
                for r in &round {
                    let _ = r.done.send(());
                }
            }
            Ok(store)
        })
    });
    let proposer = proposer.transpose()?;
    let mut writers = Vec::new();
    for w in 0..args.writers {
        let (tx, stop, acked, payload, groups) =
            (tx.clone(), Arc::clone(&stop), Arc::clone(&acked), payload.clone(), Arc::clone(&groups));
        writers.push(thread::spawn(move || -> anyhow::Result<Vec<u64>> {
            let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (w as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
            let (done_tx, done_rx) = mpsc::channel();
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let station = next_station(&mut rng, stations);
                let messages = (0..batch).map(|_| crate::message(&payload)).collect();
                let req = Request { station, messages, done: done_tx.clone() };
                let t = Instant::now();
                if groups.is_empty() {
                    tx.send(req).ok().context("proposer gone")?;
                } else {
                    commit_independent(&groups, req)?;
                }
                done_rx.recv().context("batch never answered")?;
                latencies.push(t.elapsed().as_micros() as u64);
                acked.fetch_add(batch as u64, Ordering::Relaxed);
            }
            Ok(latencies)
        }));
    }
    drop(tx);
    thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for w in writers {
        latencies.extend(w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mid = Counters::read(device);
    let stall_ms = stall.join().map_or(0, |d| d.as_millis() as u64);
    let commits = match proposer {
        Some(p) => {
            let mut store = p.join().map_err(|_| anyhow::anyhow!("proposer panicked"))??;
            store.flush()?;
            store.commits
        }
        // Every group's log is fsynced already.
        None => groups.iter().map(|g| g.lock().map_or(0, |g| g.next - 1)).sum(),
    };
    let after = Counters::read(device);

    latencies.sort_unstable();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0);
    let n = acked.load(Ordering::Relaxed);
    let payload_bytes = (n * KIB as u64).max(1) as f64;
    let ratio = |b: u64| (b as f64 / payload_bytes * 1000.0).round() / 1000.0;
    let device_ratio = match (before.sectors, after.sectors) {
        (Some(a), Some(b)) => json!(ratio((b - a) * 512)),
        _ => json!(null),
    };
    Ok(json!({
        "layout": layout.name(), "stations": stations, "writers": args.writers, "batch": batch,
        "seconds": elapsed, "setup_seconds": setup_s, "longest_stall_ms": stall_ms, "messages": n,
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().next().unwrap_or(""),
        "msg_per_s": (n as f64 / elapsed) as u64,
        "p50_us": pct(0.5), "p99_us": pct(0.99),
        "fsyncs_per_s": ((mid.fsyncs - before.fsyncs) as f64 / elapsed) as u64,
        "commits_per_s": (commits as f64 / elapsed) as u64,
        "cpu_us_per_msg": ((mid.cpu_s - before.cpu_s) * 1e6 / n.max(1) as f64 * 100.0).round() / 100.0,
        "proc_write_bytes_per_payload_byte": ratio(after.write_bytes - before.write_bytes),
        "device_per_payload_byte": device_ratio,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sectors_written_from_a_block_stat_line() {
        let line = "  284370     8861 16617166   123456  9876543  1234567 87654321  7654321 0 1 2 3 4 5 6 7 8\n";
        assert_eq!(sectors_written(line), Some(87_654_321));
        assert_eq!(sectors_written("1 2 3"), None);
    }

    #[test]
    fn reads_write_bytes_not_cancelled_write_bytes() {
        let io = "rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 512\n";
        assert_eq!(proc_io_field(io, "write_bytes"), Some(8192));
        assert_eq!(proc_io_field(io, "cancelled_write_bytes"), Some(512));
        assert_eq!(proc_io_field(io, "wchar"), Some(20));
        assert_eq!(proc_io_field(io, "missing"), None);
    }

    #[test]
    fn splits_dev_t_into_major_and_minor() {
        // /dev/vda (254:0), an NVMe partition (259:1), and a minor past 255 (8:272).
        assert_eq!(major_minor(0xfe00), (254, 0));
        assert_eq!(major_minor(0x10301), (259, 1));
        assert_eq!(major_minor((8 << 8) | (272 & 0xff) | ((272 & !0xff) << 12)), (8, 272));
    }

    #[test]
    fn draws_stations_across_the_whole_range() {
        let mut rng = 12345;
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[next_station(&mut rng, 10)] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
