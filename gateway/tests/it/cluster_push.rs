//! Push delivery across a leader's death on a real 3-node cluster: the leader delivers a push
//! group to a local receiver while messages are produced, is killed with SIGKILL in the middle,
//! and the new leader carries on. Every acknowledged message reaches the receiver at least once;
//! the duplicates are only the deliveries the old leader had not settled when it died.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::cluster::{hex, Cluster, Config, ADMIN_PASSWORD};
use crate::e2e::depot;
use depot_tests::process::tcp_connections_to;
use depot_tests::receiver::{Behaviour, Receiver, Recorded};
use serde_json::json;

const STATION: &str = "events";
const GROUP: &str = "webhook";
const MESSAGES: usize = 5000;
const BATCH: usize = 50;
const MAX_IN_FLIGHT: usize = 64;
const ACK_WAIT: Duration = Duration::from_millis(2000);
/// The leader is killed once the receiver has seen this many requests.
const KILL_AFTER: usize = 1000;
/// Production stops here until the kill, so that most messages are produced after it.
const PRODUCE_BEFORE_KILL_AT_MOST: usize = 2000;
/// The whole production, across the failover.
const PRODUCE_WITHIN: Duration = Duration::from_secs(60);

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap())
}

/// Three nodes as `cluster::start` makes them, allowed to push to loopback (the receiver's).
fn start() -> Cluster {
    let mut config = Config::new(depot(), runtime().block_on(depot_pgtest::database()), ADMIN_PASSWORD);
    config.jwt_secret = Some(hex(32));
    config.proxied = true;
    config.env.push(("DEPOT_PUSH_ALLOW_PRIVATE_NETWORKS".to_owned(), "on".to_owned()));
    Cluster::start(config, 3, &[1, 2, 3])
}

/// The `depot-offset` of a delivery.
fn offset(r: &Recorded) -> u64 {
    r.header("depot-offset").and_then(|o| o.parse().ok()).unwrap_or_else(|| panic!("no depot-offset in {r:?}"))
}

/// Whether every offset of `acknowledged` is in `received`.
fn covers(received: &[Recorded], acknowledged: &BTreeSet<u64>) -> bool {
    let seen: BTreeSet<u64> = received.iter().map(offset).collect();
    acknowledged.is_subset(&seen)
}

/// What the failover did: who was killed, when, and how much the receiver had seen by then.
struct Kill {
    leader: u64,
    at: Instant,
    received: usize,
    acknowledged: usize,
    /// The killed leader's ends of its connections to the receiver. The receiver reads what
    /// the leader wrote before it died after the kill too, so only the connection tells whose
    /// a delivery was.
    connections: BTreeSet<SocketAddr>,
}

impl Kill {
    /// Whether the killed leader sent `r`.
    fn sent(&self, r: &Recorded) -> bool {
        r.peer.is_some_and(|p| self.connections.contains(&p))
    }
}

#[test]
fn the_leader_killed_mid_push_loses_no_acknowledged_message_and_duplicates_only_its_unsettled_deliveries() {
    let launched = Instant::now();
    let mut c = start();
    let started = Instant::now();
    let startup = started - launched;
    c.create_station(STATION);
    let receiver = Receiver::start(Behaviour::Status(204));
    let body = json!({
        "start": "earliest",
        "ack_wait_ms": ACK_WAIT.as_millis() as u64,
        "push": {"url": receiver.url(), "max_in_flight": MAX_IN_FLIGHT, "timeout_ms": 1000},
    });
    let r = c.call(1, "PUT", &format!("/v1/stations/{STATION}/consumer-groups/{GROUP}"), Some(&body));
    assert_eq!(r.status, 201, "{r:?}");

    // Produce in batches, each value its own idempotency key, so a batch whose answer was lost
    // is retried (next node) without writing twice. Only offsets answered 200 count.
    let client = c.client().with_timeout(Duration::from_secs(5));
    let values: Vec<String> = (0..MESSAGES).map(|i| format!("m-{i}")).collect();
    let deadline = Instant::now() + PRODUCE_WITHIN;
    let mut acknowledged: BTreeMap<String, u64> = BTreeMap::new();
    let mut kill: Option<Kill> = None;
    for chunk in values.chunks(BATCH) {
        if kill.is_none() {
            let received = if acknowledged.len() >= PRODUCE_BEFORE_KILL_AT_MOST {
                receiver.wait_for(KILL_AFTER, deadline.saturating_duration_since(Instant::now())).len()
            } else {
                receiver.requests().len()
            };
            if received >= KILL_AFTER {
                let leader = c.wait_leader(Duration::from_secs(10));
                // Stopped first, so that its set of connections cannot change while it is read.
                c.pause(leader);
                let pid = c.pid(leader).unwrap();
                let connections = tcp_connections_to(pid, receiver.addr()).unwrap_or_else(|e| c.fail(&e));
                if connections.is_empty() {
                    c.fail(&format!("leader {leader} was pushing but has no connection to {}", receiver.addr()));
                }
                let received = receiver.requests().len();
                c.kill(leader);
                let at = Instant::now();
                kill = Some(Kill { leader, at, received, acknowledged: acknowledged.len(), connections });
            } else if acknowledged.len() >= PRODUCE_BEFORE_KILL_AT_MOST {
                c.fail(&format!(
                    "{received} deliveries of {} produced messages within the deadline",
                    acknowledged.len()
                ));
            }
        }
        let produced = client.produce_acknowledged(&c.running(), STATION, chunk, BATCH, deadline, &mut acknowledged);
        produced.unwrap_or_else(|e| c.fail(&e));
    }
    let produced = started.elapsed();
    let kill = kill.unwrap_or_else(|| c.fail("the leader was never killed"));
    assert!(
        MESSAGES - kill.acknowledged >= MESSAGES / 2,
        "only {} messages were produced after the kill",
        MESSAGES - kill.acknowledged
    );

    // Wait until the receiver has seen every acknowledged offset: at least as many requests as
    // offsets, then one more request at a time while some offset is still missing.
    let offsets: BTreeSet<u64> = acknowledged.values().copied().collect();
    assert_eq!(offsets.len(), MESSAGES, "two acknowledged values share an offset");
    let until = Instant::now() + Duration::from_secs(60);
    let mut want = offsets.len();
    let received = loop {
        let received = receiver.wait_for(want, until.saturating_duration_since(Instant::now()));
        if covers(&received, &offsets) {
            break received;
        }
        if Instant::now() >= until {
            let seen: BTreeSet<u64> = received.iter().map(offset).collect();
            let missing: Vec<&u64> = offsets.difference(&seen).take(20).collect();
            c.fail(&format!(
                "{} of {} acknowledged offsets never delivered within 60 s (first: {missing:?})",
                offsets.difference(&seen).count(),
                offsets.len()
            ));
        }
        want = received.len() + 1;
    };
    let delivered = started.elapsed();

    // The new leader's view of the group: nothing left to deliver, nothing pending.
    let new_leader = c.wait_leader(Duration::from_secs(10));
    assert_ne!(new_leader, kill.leader);
    let group = c.eventually(Duration::from_secs(30), "the group at lag 0 and pending 0 on the new leader", || {
        let g = client.group(new_leader, STATION, GROUP).ok()?;
        (g["lag"] == 0 && g["pending"] == 0).then_some(g)
    });
    assert_eq!(group["push"]["state"], "active", "{group}");
    // The totals are settled through Raft, so they survive the leader change and every node
    // shows them: each message acked once (the old leader's unsettled deliveries never counted).
    for node in c.running() {
        let totals = c.eventually(Duration::from_secs(10), "the push totals on every node", || {
            let g = client.group(node, STATION, GROUP).ok()?;
            (g["push"]["delivered_total"] == MESSAGES).then_some(g)
        });
        assert_eq!(totals["push"]["failed_total"], 0, "node {node}: {totals}");
    }

    // Duplicates. A delivery is settled by a replicated `PushSettle` after the receiver answered;
    // the old leader's deliveries that were in flight, or answered but not yet settled, when it
    // died stay pending, and the new leader delivers them again after their ack wait. Those are
    // at most: the deliveries in flight (`max_in_flight`), the answered ones in the settle
    // command being committed, and those queued behind it. Permits are given back on the answer,
    // before the settle, but each refill of the in-flight window waits for a `PushFetch` to
    // commit, so about one window's worth is answered per commit: at most `max_in_flight` in each
    // of the two settle batches. Hence 3 × max_in_flight; 2 × max_in_flight (the window and one
    // settle batch) is what a quiet machine shows, and is reported.
    let mut receipts: BTreeMap<u64, Vec<&Recorded>> = BTreeMap::new();
    for r in &received {
        receipts.entry(offset(r)).or_default().push(r);
    }
    let duplicated: Vec<(u64, &Vec<&Recorded>)> =
        receipts.iter().filter(|(_, rs)| rs.len() > 1).map(|(o, rs)| (*o, rs)).collect();
    let extra: usize = duplicated.iter().map(|(_, rs)| rs.len() - 1).sum();
    let before_kill_again = duplicated.iter().filter(|(_, rs)| rs[1].at < kill.at).count();
    // A duplicate is legitimate only when its first delivery was the old leader's.
    let first_by_others = duplicated.iter().filter(|(_, rs)| !kill.sent(rs[0])).count();
    let read_late = received.iter().filter(|r| r.at >= kill.at && kill.sent(r)).count();
    let window = received.iter().filter(|r| r.at < kill.at && r.at + ACK_WAIT >= kill.at).count();
    let resumed = received.iter().find(|r| !kill.sent(r) && r.at > kill.at).map(|r| r.at - kill.at);
    let (quiet, bound) = (2 * MAX_IN_FLIGHT, 3 * MAX_IN_FLIGHT);
    println!(
        "push failover: cluster up in {startup:?}; {MESSAGES} acknowledged, {} requests received; leader {} \
         killed {:?} in, after {} deliveries and {} acknowledged ({window} deliveries in the ack wait \
         before it, {read_late} of its deliveries read by the receiver after it); new leader \
         {new_leader}, its first delivery {resumed:?} after the kill; {} offsets duplicated ({extra} \
         extra deliveries; {before_kill_again} duplicated before the kill, {first_by_others} first \
         delivered by another node), bounds {quiet} (quiet) and {bound} (asserted); \
         produced in {produced:?}, all delivered in {delivered:?}, settled in {:?}",
        received.len(),
        kill.leader,
        kill.at - started,
        kill.received,
        kill.acknowledged,
        duplicated.len(),
        started.elapsed()
    );
    assert_eq!(first_by_others, 0, "offsets first delivered by another node than the old leader were delivered twice");
    assert!(duplicated.len() <= bound, "{} duplicated offsets, above {bound}", duplicated.len());
    for (offset, rs) in &duplicated {
        let ids: BTreeSet<&str> = rs.iter().filter_map(|r| r.header("webhook-id")).collect();
        assert_eq!(ids.len(), 1, "offset {offset} delivered with different webhook-ids: {ids:?}");
        let attempts: Vec<Option<&str>> = rs.iter().map(|r| r.header("depot-attempt")).collect();
        let counted: Vec<u32> = attempts.iter().filter_map(|a| a.and_then(|a| a.parse().ok())).collect();
        assert!(
            counted.len() == rs.len() && counted.windows(2).all(|w| w[0] < w[1]),
            "offset {offset} delivered again without a higher depot-attempt: {attempts:?}"
        );
    }
    assert!(launched.elapsed() < Duration::from_secs(110), "the test took {:?}", launched.elapsed());
}
