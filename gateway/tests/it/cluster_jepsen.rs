//! The randomized run: a 3-node cluster under a produce/consume workload while a seeded nemesis
//! kills leaders and followers, pauses nodes, restarts the whole cluster and isolates leaders;
//! then heal, drain, and check the history (see `cluster/checker.rs`): nothing acknowledged
//! lost, no duplicates, no value at two offsets or offset with two values, no acked floor going
//! back, no redelivery after an ok ack; and every node at the same log position.
//!
//! `DEPOT_JEPSEN_SEED` fixes the nemesis's seed (printed at the start). `DEPOT_JEPSEN_LONG=1`
//! runs the long version (`scripts/jepsen-long`). The checker's own unit tests are in
//! `cluster/checker.rs` and run with this binary.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::cluster;
use crate::cluster::checker::{self, History, Read};
use crate::cluster::workload::{self, Fault, Nemesis, Shared, StopOnDrop};

const STATION: &str = "jepsen";
const GROUP: &str = "g";
const PRODUCERS: usize = 4;
const CONSUMERS: usize = 2;

/// How much of each fault, how many acknowledged values, and the time limit.
struct Plan {
    quotas: Vec<(Fault, usize)>,
    acknowledged: u64,
    limit: Duration,
    /// How long the final drain (and then the audit read) may take.
    drain: Duration,
}

fn plan() -> Plan {
    if std::env::var("DEPOT_JEPSEN_LONG").is_ok_and(|v| v == "1") {
        Plan {
            quotas: vec![
                (Fault::KillLeader, 100),
                (Fault::KillFollower, 100),
                (Fault::PartitionLeader, 100),
                (Fault::RestartAll, 30),
                (Fault::Pause, 30),
            ],
            acknowledged: 1_000_000,
            limit: Duration::from_secs(6 * 3600),
            drain: Duration::from_secs(3600),
        }
    } else {
        Plan {
            quotas: vec![
                (Fault::KillLeader, 10),
                (Fault::KillFollower, 10),
                (Fault::PartitionLeader, 3),
                (Fault::RestartAll, 3),
                (Fault::Pause, 3),
            ],
            acknowledged: 20_000,
            limit: Duration::from_secs(8 * 60),
            drain: Duration::from_secs(180),
        }
    }
}

fn seed() -> u64 {
    match std::env::var("DEPOT_JEPSEN_SEED") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("DEPOT_JEPSEN_SEED={s:?} is not a u64")),
        Err(_) => rand::random(),
    }
}

/// Median and max of `ms` (sorted in place).
fn median_max(ms: &mut [u64]) -> (u64, u64) {
    ms.sort_unstable();
    match ms {
        [] => (0, 0),
        _ => (ms[ms.len() / 2], ms[ms.len() - 1]),
    }
}

/// Names the seed last when the run fails (after the panic message and the cluster's own lines).
struct SeedNote(u64);

impl Drop for SeedNote {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("jepsen: failed with seed {0}; rerun with DEPOT_JEPSEN_SEED={0}", self.0);
        }
    }
}

#[test]
fn jepsen_queue_under_kills_pauses_restarts_and_partitions() {
    let plan = plan();
    let seed = seed();
    eprintln!("jepsen: seed {seed} (rerun with DEPOT_JEPSEN_SEED={seed})");
    let started = Instant::now();
    let over = |what: &str| -> String {
        format!("jepsen run past its limit of {:?} while {what} (seed {seed}, {:?} in)", plan.limit, started.elapsed())
    };

    let _note = SeedNote(seed);
    let mut c = cluster::start(3);
    c.create_station(STATION);
    c.create_group(STATION, GROUP, 3000);
    let client = c.client();
    let shared = Shared::new();
    let _stop = StopOnDrop(shared.clone());
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|t| workload::producer(t, seed, client.clone(), STATION.to_owned(), shared.clone()))
        .collect();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|t| workload::consumer(t, seed, client.clone(), STATION.to_owned(), GROUP.to_owned(), shared.clone()))
        .collect();

    let mut nemesis = Nemesis::new(seed, &plan.quotas);
    while !nemesis.quotas_met() || shared.acknowledged.load(Ordering::SeqCst) < plan.acknowledged {
        if started.elapsed() > plan.limit {
            c.fail(&over(&format!(
                "faulting: {} of {} acknowledged, faults {:?}",
                shared.acknowledged.load(Ordering::SeqCst),
                plan.acknowledged,
                nemesis.done
            )));
        }
        let fault = nemesis.step(&mut c);
        eprintln!(
            "jepsen: {:>6.1} s  {fault:?}  ({} acknowledged)",
            started.elapsed().as_secs_f64(),
            shared.acknowledged.load(Ordering::SeqCst)
        );
    }

    // Heal everything, then stop producing (in-flight batches are seen through).
    c.heal();
    let stopped: Vec<u64> = c.ids().into_iter().filter(|id| !c.running().contains(id)).collect();
    c.launch_all(&stopped);
    c.wait_leader(Duration::from_secs(60));
    shared.stop_producing.store(true, Ordering::SeqCst);
    let mut history = History::default();
    for p in producers {
        history.extend(p.join().unwrap());
    }

    // Drain: consumers go on until nothing was delivered for 3 s and the group has no lag.
    let quiet = Duration::from_secs(3);
    c.eventually(plan.drain, "the consumers to drain the group", || {
        assert!(started.elapsed() < plan.limit, "{}", over("draining"));
        let since_delivery =
            shared.since_start().saturating_sub(Duration::from_millis(shared.last_delivery_ms.load(Ordering::SeqCst)));
        let node = c.responsive()[0];
        let view = client.group(node, STATION, GROUP).ok()?;
        (since_delivery > quiet && view["lag"] == 0 && view["pending"] == 0).then_some(())
    });
    shared.stop_consuming.store(true, Ordering::SeqCst);
    for consumer in consumers {
        history.extend(consumer.join().unwrap());
    }

    // An audit group reads the whole station once more: durability apart from delivery.
    c.create_group(STATION, "audit", 60_000);
    let audit =
        client.drain(&c.ids(), STATION, "audit", plan.drain).unwrap_or_else(|e| c.fail(&format!("audit read: {e}")));
    let read_at = Instant::now();
    history.reads.extend(audit.into_iter().map(|m| Read {
        group: "audit".to_owned(),
        value: m.value,
        offset: m.offset,
        attempt: m.attempt,
        node: 0,
        at: read_at,
    }));

    let (index, applied) = c.wait_converged(Duration::from_secs(60));
    let report = checker::check(&history);
    let writes = shared.acknowledged_writes.lock().unwrap().clone();
    let mut unavailable = workload::unavailability_ms(&nemesis.leader_kills, &writes);
    let (median, max) = median_max(&mut unavailable);

    eprintln!("jepsen: seed {seed}, {:.1} s", started.elapsed().as_secs_f64());
    eprintln!("jepsen: faults {:?}", nemesis.done);
    eprintln!("jepsen: every node at last_log_index {index}, last_applied {applied}");
    eprintln!("jepsen: {report}");
    eprintln!("leader-kill unavailability: median {median} ms, max {max} ms, n={}", unavailable.len());

    assert!(report.is_valid(), "anomalies found (seed {seed}):\n{report}\n{}{report}", c.diagnostics());
    assert!(
        report.counts.acknowledged as u64 >= plan.acknowledged,
        "only {} values acknowledged (seed {seed})",
        report.counts.acknowledged
    );
    let leader_kills = nemesis.done.get(&Fault::KillLeader).copied().unwrap_or(0);
    assert_eq!(unavailable.len(), leader_kills, "a leader kill was followed by no acknowledged write");
    assert!(started.elapsed() < plan.limit, "{}", over("checking"));
}
