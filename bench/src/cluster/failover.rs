//! Workload 4: the leader SIGKILLed under producers that write to the followers, the time to
//! the first acknowledged write after the kill, and the killed node's way back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use depot_tests::cluster::Cluster;
use depot_tests::http::AsyncConn as Conn;
use serde_json::Value;

use super::{recovered, replication, wait_leader, Settings, FAILOVER_PRODUCERS, FAILOVER_STATION, REQUEST_TIMEOUT};
use crate::load::{request, KIB};

/// What the failover producers share with the main thread.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    kill_at: OnceLock<Instant>,
    /// When the first write sent after the kill was acknowledged.
    first_ack: Mutex<Option<Instant>>,
    acked_before: AtomicU64,
    acked_after: AtomicU64,
    /// Failures after the kill by kind, and the first answer of each failing status.
    failures: Mutex<BTreeMap<String, (u64, String)>>,
}

impl Shared {
    fn acked(&self, sent: Instant) {
        match self.kill_at.get() {
            Some(kill) if sent >= *kill => {
                self.acked_after.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                let mut first = self.first_ack.lock().unwrap_or_else(|e| e.into_inner());
                *first = Some(first.map_or(now, |f| f.min(now)));
            }
            _ => {
                self.acked_before.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn failed(&self, kind: String, detail: impl FnOnce() -> String) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.entry(kind).or_insert_with(|| (0, detail())).0 += 1;
    }
}

/// One producer: single produces to `targets[k % n]`, moving to the next target after any
/// failure; runs until `shared.stop`.
async fn producer(targets: Vec<SocketAddr>, k: usize, req: Arc<Vec<u8>>, shared: Arc<Shared>) {
    let mut at = k;
    let mut conn: Option<Conn> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let addr = targets[at % targets.len()];
        let sent = Instant::now();
        let attempt = async {
            if conn.is_none() {
                conn = Some(tokio::time::timeout(REQUEST_TIMEOUT, Conn::open(addr)).await??);
            }
            let c = conn.as_mut().context("no connection")?;
            let status = tokio::time::timeout(REQUEST_TIMEOUT, c.roundtrip(&req)).await??;
            Ok::<_, anyhow::Error>((status, c.body().to_vec()))
        };
        match attempt.await {
            Ok((201, _)) => {
                shared.acked(sent);
                continue;
            }
            Ok((status, body)) => {
                shared.failed(status.to_string(), || String::from_utf8_lossy(&body).chars().take(300).collect())
            }
            Err(e) => {
                conn = None;
                let kind = if e.is::<tokio::time::error::Elapsed>() { "timeout" } else { "connection" };
                shared.failed(kind.to_owned(), || format!("{e:#}"));
            }
        }
        at += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One round of workload 4.
pub(super) struct Kill {
    pub(super) leader: u64,
    pub(super) new_leader: Option<u64>,
    pub(super) unavailable: Duration,
    /// From the relaunch of the killed node until it is back (see [`super::recovered`]).
    pub(super) recovery: Duration,
    pub(super) acked_before: u64,
    pub(super) acked_after: u64,
    pub(super) failures: BTreeMap<String, (u64, String)>,
    /// [`super::replication`] just before the kill.
    pub(super) replication_before: Value,
}

fn kill_leader(rt: &tokio::runtime::Runtime, cluster: &mut Cluster, s: &Settings) -> anyhow::Result<Kill> {
    let leader = wait_leader(cluster, Duration::from_secs(30))?;
    let targets: Vec<SocketAddr> =
        cluster.ids().into_iter().filter(|&id| id != leader).map(|id| cluster.api(id)).collect();
    let req = Arc::new(request(
        "POST",
        &format!("/v1/stations/{FAILOVER_STATION}/messages"),
        Some(cluster.token()),
        "application/octet-stream",
        &[b'k'; KIB],
    ));
    let shared = Arc::new(Shared::default());
    let producers: Vec<_> =
        (0..FAILOVER_PRODUCERS).map(|k| rt.spawn(producer(targets.clone(), k, req.clone(), shared.clone()))).collect();
    std::thread::sleep(s.steady);
    let replication_before = replication(cluster);
    let steady = shared.acked_before.load(Ordering::Relaxed);
    let kill_at = Instant::now();
    let _ = shared.kill_at.set(kill_at);
    cluster.kill(leader);
    let deadline = kill_at + Duration::from_secs(30);
    let first = loop {
        if let Some(first) = *shared.first_ack.lock().unwrap_or_else(|e| e.into_inner()) {
            break Some(first);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // A little more load on the new leader, then stop.
    if first.is_some() {
        std::thread::sleep(Duration::from_millis(300));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for p in producers {
        rt.block_on(p)?;
    }
    let failures = std::mem::take(&mut *shared.failures.lock().unwrap_or_else(|e| e.into_inner()));
    if steady == 0 {
        bail!("no write was acknowledged in the {:?} before the kill: {failures:?}", s.steady);
    }
    let Some(first) = first else {
        bail!(
            "no write acknowledged within 30 s of SIGKILL to leader {leader}; failures: {failures:?}; \
             replication just before the kill: {replication_before}\n{}",
            cluster.diagnostics()
        );
    };
    let unavailable = first - kill_at;
    let new_leader = cluster.agreed_leader();
    let relaunched = Instant::now();
    cluster.try_launch(leader).map_err(|e| anyhow!(e))?;
    cluster
        .try_eventually(Duration::from_secs(60), &format!("node {leader} back"), || {
            recovered(cluster, leader).then_some(())
        })
        .map_err(|e| anyhow!(e))?;
    Ok(Kill {
        leader,
        new_leader,
        unavailable,
        recovery: relaunched.elapsed(),
        acked_before: shared.acked_before.load(Ordering::Relaxed),
        acked_after: shared.acked_after.load(Ordering::Relaxed),
        failures,
        replication_before,
    })
}

pub(super) fn failover(
    rt: &tokio::runtime::Runtime,
    cluster: &mut Cluster,
    s: &Settings,
    kills: &mut Vec<Kill>,
) -> anyhow::Result<()> {
    for round in 1..=s.kills {
        let k = kill_leader(rt, cluster, s).with_context(|| format!("failover round {round}"))?;
        let failures: Vec<String> = k.failures.iter().map(|(kind, (n, _))| format!("{kind} ×{n}")).collect();
        eprintln!(
            "kill {round}: leader {} SIGKILLed; first acknowledged write after {} ms (new leader {}); \
             node back after {} ms; acked {} before, {} after; failures after the kill: {}; \
             replication before the kill: {}",
            k.leader,
            k.unavailable.as_millis(),
            k.new_leader.map_or("?".to_owned(), |l| l.to_string()),
            k.recovery.as_millis(),
            k.acked_before,
            k.acked_after,
            if failures.is_empty() { "none".to_owned() } else { failures.join(", ") },
            k.replication_before
        );
        kills.push(k);
    }
    Ok(())
}
