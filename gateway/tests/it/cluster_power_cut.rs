//! Power cuts in a three-node cluster: every node's data dir is its own power-cut mount
//! (`powercut/`). A producer records every acknowledged value; again and again one node (often
//! the leader) loses its power, at a random moment or right after its Nth fsync, and comes back
//! on what its disk kept. After every cut: its purge point does not pass its durable snapshot,
//! every acknowledged value reads back at its offset, the node's durable term never goes down,
//! and it never holds two different votes in one term.
//!
//! `DEPOT_POWERCUT_CLUSTER_CUTS` sets the number of cuts (default 20).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::cluster::{self, Cluster};
use depot_broker::raft::log_store::read_on_disk;
use depot_powercut::{Mode, Op, PowerCut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const STATION: &str = "orders";

/// Produces `values` through the running nodes, retrying what had no answer on the others;
/// value → offset of what was acknowledged. Gives up after 30 s (the outcome of what is left
/// is then unknown, and only acknowledged values are checked).
fn produce(c: &Cluster, values: &[String], acknowledged: &mut BTreeMap<String, u64>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let _ = c.client().produce_acknowledged(&c.running(), STATION, values, values.len(), deadline, acknowledged);
}

fn read_all(c: &Cluster, group: &str) -> BTreeMap<String, u64> {
    let leader = c.wait_leader(Duration::from_secs(60));
    let r = c.call(
        leader,
        "PUT",
        &format!("/v1/stations/{STATION}/consumer-groups/{group}"),
        Some(&json!({"start": "earliest", "max_pending": 1_000_000})),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let delivered = c
        .client()
        .drain(&[leader], STATION, group, Duration::from_secs(60))
        .unwrap_or_else(|e| c.fail(&format!("draining {group}: {e}")));
    delivered.into_iter().map(|m| (m.value, m.offset)).collect()
}

#[test]
fn power_cuts_in_a_three_node_cluster_lose_nothing_and_never_take_back_a_vote() {
    let cuts: usize = std::env::var("DEPOT_POWERCUT_CLUSTER_CUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("DEPOT_POWERCUT_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    println!("cluster power-cut run: seed {seed}");
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let backings = tempfile::tempdir().unwrap();
    let mut c = cluster::start_with(3, None, &[]);
    c.env = vec![("DEPOT_SNAPSHOT_EVERY".into(), "20".into()), ("DEPOT_SEGMENT_BYTES".into(), "65536".into())];
    let ids = c.ids();
    let mut mounts: BTreeMap<u64, PowerCut> = BTreeMap::new();
    for &id in &ids {
        let backing = backings.path().join(format!("node-{id}"));
        std::fs::create_dir(&backing).unwrap();
        let pc = PowerCut::mount(&backing, c.data_dir(id))
            .unwrap_or_else(|e| panic!("this test needs a FUSE mount (/dev/fuse and fusermount3): {e}"));
        mounts.insert(id, pc);
    }
    c.launch_all(&ids);
    c.wait_ready(Duration::from_secs(60));
    let leader = c.wait_leader(Duration::from_secs(60));
    assert_eq!(c.call(leader, "PUT", &format!("/v1/stations/{STATION}"), None).status, 201);

    let mut acknowledged = BTreeMap::new();
    // Per node: the durable vote's term after its last cut, and term → the node it voted for.
    let mut last_term: BTreeMap<u64, u64> = BTreeMap::new();
    let mut voted: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
    let mut torn = 0;
    let mut reached = 0;
    let mut votes_checked = 0;
    for cycle in 0..cuts {
        let values: Vec<String> = (0..40).map(|i| format!("v{cycle}-{i}")).collect();
        produce(&c, &values[..20], &mut acknowledged);
        let victim = match rng.random_range(0..3) {
            0 => c.leader().unwrap_or(ids[0]),
            _ => ids[rng.random_range(0..ids.len())],
        };
        let pc = mounts.get_mut(&victim).unwrap();
        let is_torn = rng.random_bool(0.5);
        torn += usize::from(is_torn);
        pc.set_mode(if is_torn { Mode::Torn { seed: rng.random() } } else { Mode::Clean });
        if rng.random_bool(0.5) {
            pc.crash_after(Op::Fsync, rng.random_range(1..=12));
        }
        // The rest of the values go, a few at a time, while the power may go out under them.
        for chunk in values[20..].chunks(4) {
            produce(&c, chunk, &mut acknowledged);
        }
        let pc = mounts.get_mut(&victim).unwrap();
        reached += usize::from(pc.is_frozen());
        pc.freeze();
        c.kill(victim);
        pc.cut().unwrap();

        let disk = read_on_disk(&pc.backing().join("raft")).unwrap_or_else(|e| {
            c.fail(&format!("cut {cycle}: node {victim}'s Raft log does not read after the cut: {e}"))
        });
        if let Some(purged) = disk.last_purged {
            let snapshot = depot_broker::inspect(pc.backing()).ok().and_then(|i| i.committed_index);
            assert!(
                snapshot.is_some_and(|s| s >= purged.index),
                "seed {seed}, cut {cycle}: node {victim}'s Raft log is purged to {} past its durable snapshot {snapshot:?}",
                purged.index
            );
        }
        if let Some(vote) = disk.vote {
            let term = vote.leader_id().term;
            let before = last_term.get(&victim).copied().unwrap_or(0);
            assert!(term >= before, "seed {seed}, cut {cycle}: node {victim}'s term went down from {before} to {term}");
            last_term.insert(victim, term);
            let candidate = vote.leader_id().node_id;
            if let Some(&earlier) = voted.entry(victim).or_default().get(&term) {
                assert_eq!(
                    earlier, candidate,
                    "seed {seed}, cut {cycle}: node {victim} holds votes for {earlier} and {candidate} in term {term}"
                );
            }
            voted.entry(victim).or_default().insert(term, candidate);
            votes_checked += 1;
        }
        if let Err(e) = c.try_launch(victim) {
            c.fail(&format!("seed {seed}, cut {cycle}: node {victim} does not start after the cut: {e}"));
        }
        c.wait_ready(Duration::from_secs(60));
        let read = read_all(&c, &format!("check-{cycle}"));
        let lost: Vec<&String> = acknowledged.keys().filter(|v| !read.contains_key(*v)).collect();
        let moved: Vec<&String> =
            acknowledged.iter().filter(|(v, o)| read.get(*v).is_some_and(|r| r != *o)).map(|(v, _)| v).collect();
        if !lost.is_empty() || !moved.is_empty() {
            c.fail(&format!(
                "seed {seed}, cut {cycle} (node {victim}, {}): {} of {} acknowledged values lost (first {:?}), {} at another offset",
                if is_torn { "torn" } else { "clean" },
                lost.len(),
                acknowledged.len(),
                &lost[..lost.len().min(5)],
                moved.len()
            ));
        }
    }
    println!(
        "cluster power-cut run: {cuts} cuts ({torn} torn, {reached} at a crash point), {votes_checked} durable votes checked, {} values acknowledged and read back after every cut, {:.1} s",
        acknowledged.len(),
        started.elapsed().as_secs_f64()
    );
    for id in ids {
        c.kill(id);
    }
    drop(mounts);
}
