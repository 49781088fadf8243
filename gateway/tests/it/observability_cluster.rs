//! The Raft series on a real 3-node cluster: one node says it leads, every node counts the
//! leader it learned of, followers apply what the leader committed, and when the leader is
//! killed the survivors count the change and move to a higher term.

use std::time::Duration;

use crate::cluster::{self, checker::Outcome, Cluster};
use crate::scrape::Scrape;

const WITHIN: Duration = Duration::from_secs(30);

fn scrape(c: &Cluster, id: u64) -> Option<Scrape> {
    let r = c.try_call(id, "GET", "/metrics", None, Duration::from_secs(5)).ok()?;
    (r.status == 200).then(|| Scrape::parse(&String::from_utf8_lossy(&r.raw)))
}

#[test]
fn raft_series_follow_replication_and_an_election_on_every_node() {
    // The cluster holds the test binary's `Heavy` guard while it runs.
    let mut c = cluster::start(3);
    let leader = c.wait_leader(WITHIN);
    let before = c.eventually(WITHIN, "every node to report a leader", || {
        let all: Vec<(u64, Scrape)> =
            c.ids().into_iter().map(|id| Some((id, scrape(&c, id)?))).collect::<Option<_>>()?;
        all.iter().all(|(_, m)| m.get("depot_raft_has_leader") == Some(1.0)).then_some(all)
    });
    for (id, m) in &before {
        assert_eq!(m.value("depot_raft_is_leader"), f64::from(u8::from(*id == leader)), "node {id}");
        assert!(m.value("depot_raft_leader_changes_total") >= 1.0, "node {id}");
        assert_eq!(m.value("depot_raft_term"), before[0].1.value("depot_raft_term"), "node {id}");
    }

    c.create_station("observed");
    let client = c.client();
    for i in 0..10 {
        let (outcome, r) = client.produce_one(leader, "observed", &format!("v{i}"));
        assert!(matches!(outcome, Outcome::Ok { .. }), "{r:?}");
    }
    // Followers learn of the commit with the leader's next message, then apply it.
    let committed = scrape(&c, leader).unwrap().value("depot_raft_commit_index");
    for id in c.ids() {
        c.eventually(WITHIN, &format!("node {id} to apply the leader's commit index"), || {
            let m = scrape(&c, id)?;
            let caught_up = m.value("depot_raft_commit_index") >= committed
                && m.value("depot_raft_last_applied_index") >= committed
                && m.value("depot_raft_apply_lag") == 0.0;
            caught_up.then_some(())
        });
    }

    let old_term = before[0].1.value("depot_raft_term");
    c.kill(leader);
    let new = c.eventually(WITHIN, "the survivors to elect a new leader", || c.leader().filter(|&l| l != leader));
    for (id, m) in before.iter().filter(|(id, _)| *id != leader) {
        let counted = m.value("depot_raft_leader_changes_total");
        c.eventually(WITHIN, &format!("node {id} to count the new leader"), || {
            let now = scrape(&c, *id)?;
            let moved = now.value("depot_raft_leader_changes_total") > counted
                && now.value("depot_raft_term") > old_term
                && now.value("depot_raft_is_leader") == f64::from(u8::from(*id == new));
            moved.then_some(())
        });
    }
}
