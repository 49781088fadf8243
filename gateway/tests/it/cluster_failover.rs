//! Failover scenarios on a real 3-node cluster (`depot serve` processes on loopback, links
//! through fault-injecting proxies, one Postgres database): a follower then the leader killed,
//! two of three down, the whole cluster killed, a wiped data dir, an isolated leader, a node
//! added and removed, `--wait-for`, `depot admin inspect` after a dirty stop, and a follower's
//! disk full. Every wait is a poll with a deadline; a failure shows the tail of every node's
//! stderr.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::cluster::checker::Outcome;
use crate::cluster::{self, Cluster};
use crate::e2e::request;
use serde_json::{json, Value};

const STATION: &str = "orders";

/// `n` distinct values `{prefix}-{i}`.
fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Produces `values` in batches of 25 through `nodes` in turn, retrying what was not
/// acknowledged (same keys, next node) for up to 30 s; value → acknowledged offset.
fn produce_all(c: &Cluster, nodes: &[u64], values: &[String]) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut acknowledged = BTreeMap::new();
    let produced = c.client().produce_acknowledged(nodes, STATION, values, 25, deadline, &mut acknowledged);
    produced.unwrap_or_else(|e| c.fail(&e));
    acknowledged
}

/// Reads the whole station through a new group (from the earliest offset) via `nodes`:
/// value → offset.
fn read_all(c: &Cluster, nodes: &[u64], group: &str) -> BTreeMap<String, u64> {
    let body = json!({"start": "earliest"});
    let r = c.call(nodes[0], "PUT", &format!("/v1/stations/{STATION}/consumer-groups/{group}"), Some(&body));
    assert_eq!(r.status, 201, "{r:?}");
    drain(c, nodes, group)
}

/// Fetches and acks group `group` via `nodes` until it is empty: value → offset.
fn drain(c: &Cluster, nodes: &[u64], group: &str) -> BTreeMap<String, u64> {
    let delivered = c
        .client()
        .drain(nodes, STATION, group, Duration::from_secs(60))
        .unwrap_or_else(|e| c.fail(&format!("draining {group}: {e}")));
    let mut read = BTreeMap::new();
    for m in delivered {
        if let Some(other) = read.insert(m.value.clone(), m.offset).filter(|o| *o != m.offset) {
            c.fail(&format!("{} read at offsets {other} and {}", m.value, m.offset));
        }
    }
    read
}

/// Every acknowledged value was read, at the offset its produce was told.
fn assert_all_read(c: &Cluster, acknowledged: &BTreeMap<String, u64>, read: &BTreeMap<String, u64>) {
    let missing: Vec<&String> = acknowledged.keys().filter(|v| !read.contains_key(*v)).collect();
    let moved: Vec<(&String, &u64, &u64)> =
        acknowledged.iter().filter_map(|(v, o)| read.get(v).filter(|r| *r != o).map(|r| (v, o, r))).collect();
    if !missing.is_empty() || !moved.is_empty() {
        c.fail(&format!(
            "{} of {} acknowledged values lost (first: {:?}); at another offset (value, acked, read): {:?}",
            missing.len(),
            acknowledged.len(),
            &missing[..missing.len().min(10)],
            &moved[..moved.len().min(10)]
        ));
    }
}

/// A running node other than `leader`.
fn a_follower(c: &Cluster, leader: u64) -> u64 {
    c.running().into_iter().find(|&id| id != leader).unwrap()
}

fn setup(n: usize) -> Cluster {
    let c = cluster::start(n);
    c.create_station(STATION);
    c
}

#[test]
fn a_follower_then_the_leader_down_keeps_producing_and_consuming() {
    let mut c = setup(3);
    // `replicas` is checked against the voters: 3 by default on three nodes, 5 refused.
    let r = c.call(1, "PUT", "/v1/stations/five", Some(&json!({"replicas": 5})));
    r.problem(400, "invalid_request");
    assert!(r.body["detail"].as_str().unwrap().contains("3 voter"), "{r:?}");
    let r = c.call(2, "PUT", "/v1/stations/default-replicas", Some(&json!({})));
    assert_eq!((r.status, r.body["config"]["replicas"].as_u64()), (201, Some(3)), "{r:?}");
    c.create_group(STATION, "g", 5000);
    let mut acknowledged = produce_all(&c, &c.ids(), &values("before", 50));

    let leader = c.wait_leader(Duration::from_secs(10));
    let follower = a_follower(&c, leader);
    c.kill(follower);
    let survivors = c.running();
    acknowledged.extend(produce_all(&c, &survivors, &values("follower-down", 50)));
    let mut read = drain(&c, &survivors, "g");
    assert_all_read(&c, &acknowledged, &read);

    c.launch(follower);
    c.wait_converged(Duration::from_secs(30));
    let leader = c.wait_leader(Duration::from_secs(10));
    c.kill(leader);
    let killed = Instant::now();
    let survivors = c.running();
    // One value, retried with its key through both survivors until a response carries its offset.
    let client = c.client().with_timeout(Duration::from_secs(1));
    let mut turn = 0;
    let resumed = loop {
        let node = survivors[turn % survivors.len()];
        turn += 1;
        if let (Outcome::Ok { offset }, _) = client.produce_one(node, STATION, "leader-down-first") {
            acknowledged.insert("leader-down-first".to_owned(), offset);
            break killed.elapsed();
        }
        if killed.elapsed() > Duration::from_secs(30) {
            c.fail("no write acknowledged within 30 s of the leader's kill");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("a write was acknowledged {} ms after the leader was killed", resumed.as_millis());
    assert!(resumed < Duration::from_secs(3), "writes resumed only {resumed:?} after the leader's kill");

    acknowledged.extend(produce_all(&c, &survivors, &values("leader-down", 50)));
    read.extend(drain(&c, &survivors, "g"));
    assert_all_read(&c, &acknowledged, &read);
}

#[test]
fn two_of_three_down_acknowledge_nothing_and_the_cluster_recovers() {
    let mut c = setup(3);
    let acknowledged = produce_all(&c, &c.ids(), &values("before", 100));
    let leader = c.wait_leader(Duration::from_secs(10));
    let followers: Vec<u64> = c.running().into_iter().filter(|&id| id != leader).collect();
    for &f in &followers {
        c.kill(f);
    }

    // The leader alone: it cannot commit, so it refuses with 503 and Retry-After, in time.
    let client = c.client();
    for i in 0..2 {
        let asked = Instant::now();
        let (outcome, response) = client.produce_one(leader, STATION, &format!("outage-{i}"));
        let elapsed = asked.elapsed();
        let r = response.unwrap_or_else(|| c.fail(&format!("no answer within 15 s without a quorum ({outcome:?})")));
        assert!(!matches!(outcome, Outcome::Ok { .. }), "acknowledged without a quorum: {r:?}");
        r.problem(503, "not_leader_unavailable");
        assert!(r.header("retry-after").is_some(), "503 without Retry-After: {r:?}");
        assert!(elapsed < Duration::from_secs(12), "the refusal took {elapsed:?}");
    }
    let batch = json!({"messages": [{"payload": "outage-batch-0", "idempotency_key": "outage-batch-0"}]});
    let r = client.call(leader, "POST", &format!("/v1/stations/{STATION}/messages/batch"), Some(&batch));
    let r = r.unwrap_or_else(|e| c.fail(&format!("batch without a quorum: {e}")));
    r.problem(503, "not_leader_unavailable");
    assert!(r.header("retry-after").is_some(), "{r:?}");

    // One follower back: a quorum again. Everything acknowledged before is there; writes work.
    c.launch(followers[0]);
    c.wait_leader(Duration::from_secs(30));
    let running = c.running();
    let read = read_all(&c, &running, "after");
    assert_all_read(&c, &acknowledged, &read);
    let after = produce_all(&c, &running, &values("after", 50));
    assert_eq!(after.len(), 50);
}

#[test]
fn the_whole_cluster_killed_and_launched_loses_nothing_acknowledged() {
    let mut c = setup(3);
    c.create_group(STATION, "g", 30_000);
    let ids = c.ids();
    let acknowledged = produce_all(&c, &ids, &values("before", 200));
    // Part consumed and acked: the group's floor must survive too.
    let client = c.client();
    let fetched = client.fetch(ids[0], STATION, "g", 50, 1000).unwrap_or_else(|e| c.fail(&e));
    assert!(!fetched.is_empty());
    let receipts: Vec<&str> = fetched.iter().map(|m| m.receipt.as_str()).collect();
    let results = client.ack(ids[0], STATION, "g", &receipts).unwrap_or_else(|e| c.fail(&e));
    assert!(results.iter().all(|r| r == "ok"), "{results:?}");
    let floor = client.group(ids[0], STATION, "g").unwrap()["acked_floor"].as_u64().unwrap();
    assert!(floor >= fetched.len() as u64, "acked floor {floor} after acking {} from the start", fetched.len());

    for &id in &ids {
        c.kill(id);
    }
    c.launch_all(&ids);
    c.wait_ready(Duration::from_secs(60));

    let read = read_all(&c, &ids, "audit");
    assert_all_read(&c, &acknowledged, &read);
    let after = client.group(ids[1], STATION, "g").unwrap_or_else(|e| c.fail(&e));
    assert!(after["acked_floor"].as_u64().unwrap() >= floor, "the acked floor went back from {floor}: {after}");
    produce_all(&c, &ids, &values("after", 50));
}

#[test]
fn a_wiped_follower_is_refused_and_the_others_keep_writing() {
    let mut c = setup(3);
    let acknowledged = produce_all(&c, &c.ids(), &values("before", 20));
    let leader = c.wait_leader(Duration::from_secs(10));
    let follower = a_follower(&c, leader);
    c.wipe(follower);

    // Refused before or after its banner; either way it exits non-zero, saying what to do.
    let output = match c.try_launch(follower) {
        Err(output) => output,
        Ok(()) => {
            c.wait_exit(follower, Duration::from_secs(30));
            c.launch_stderr(follower)
        }
    };
    let status = c.last_exit(follower);
    assert!(status.is_some_and(|s| !s.success()), "a wiped node was not refused ({status:?}): {output}");
    assert!(output.contains("rejoin as a new node"), "{output}");

    let others = c.running();
    assert_eq!(others.len(), 2);
    produce_all(&c, &others, &values("after", 20));
    assert_all_read(&c, &acknowledged, &read_all(&c, &others, "audit"));
}

#[test]
fn an_isolated_leader_acknowledges_nothing_and_rejoins_the_new_term() {
    let c = setup(3);
    let mut acknowledged = produce_all(&c, &c.ids(), &values("before", 20));
    let old = c.wait_leader(Duration::from_secs(10));
    c.isolate(old);

    let client = c.client();
    for i in 0..2 {
        let (outcome, response) = client.produce_one(old, STATION, &format!("isolated-{i}"));
        assert!(!matches!(outcome, Outcome::Ok { .. }), "the isolated leader acknowledged a write: {response:?}");
        if let Some(r) = response {
            assert_eq!(r.status, 503, "{r:?}");
        }
    }

    let new = c
        .eventually(Duration::from_secs(15), "the majority to elect a new leader", || c.leader().filter(|&l| l != old));
    let majority: Vec<u64> = c.ids().into_iter().filter(|&id| id != old).collect();
    acknowledged.extend(produce_all(&c, &majority, &values("majority", 50)));

    c.heal();
    c.wait_converged(Duration::from_secs(30));
    let now = c.eventually(Duration::from_secs(30), "the old leader to follow the majority's leader", || {
        let seen = c.view(old)?["leader_id"].as_u64()?;
        (Some(seen) == c.leader()).then_some(seen)
    });
    assert_ne!(now, old, "the old leader still leads");
    assert_eq!(now, new, "another election happened after the heal");
    assert_all_read(&c, &acknowledged, &read_all(&c, &c.ids(), "audit"));
}

#[test]
fn a_node_is_added_catches_up_and_is_removed() {
    let mut c = setup(3);
    let acknowledged = produce_all(&c, &c.ids(), &values("before", 30));
    let new = c.add_node();
    c.launch(new);
    let leader = c.wait_leader(Duration::from_secs(10));
    let body = json!({"id": new, "api_addr": c.api(new).to_string(), "cluster_addr": c.cluster_addr(new).to_string()});
    let r = c.call(leader, "POST", "/v1/cluster/nodes", Some(&body));
    assert!((200..300).contains(&r.status), "{r:?}");

    let role_of = |view: &Value, id: u64| -> Option<String> {
        let nodes = view["nodes"].as_array()?;
        nodes.iter().find(|n| n["id"] == id).map(|n| n["role"].as_str().unwrap_or_default().to_owned())
    };
    c.eventually(Duration::from_secs(60), "the new node to become a voter", || {
        (role_of(&c.view(leader)?, new)? == "voter").then_some(())
    });
    c.wait_converged(Duration::from_secs(60));
    let view = c.view(new).unwrap_or_else(|| c.fail("the new node does not answer GET /v1/cluster"));
    assert_eq!(view["node_id"], new, "{view}");
    assert_eq!(view["leader_id"], leader, "{view}");
    assert_eq!(view["cluster_id"], c.cluster_id(), "{view}");

    // Read through the new node: it has everything written before it joined.
    assert_all_read(&c, &acknowledged, &read_all(&c, &[new], "via-new"));
    produce_all(&c, &[new], &values("via-new", 10));

    let r = c.call(leader, "DELETE", &format!("/v1/cluster/nodes/{new}"), None);
    assert!((200..300).contains(&r.status), "{r:?}");
    let originals: Vec<u64> = c.ids().into_iter().filter(|&id| id != new).collect();
    c.eventually(Duration::from_secs(30), "every node to drop the removed one from its view", || {
        originals.iter().all(|&id| c.view(id).is_some_and(|v| role_of(&v, new).is_none())).then_some(())
    });
    c.kill(new);
    c.wait_leader(Duration::from_secs(30));
    produce_all(&c, &originals, &values("after", 20));
}

#[test]
fn an_idle_cluster_appends_nothing_once_every_join_is_recorded() {
    // Each node reaches its peers through a proxy of its own, so the cluster address a node
    // announces is never the one the others recorded; a join must not rewrite it, or every node
    // writes a membership entry twice a second forever.
    let c = cluster::start(3);
    c.wait_leader(Duration::from_secs(30));
    // Bootstrap and the joins append a few entries; after that the log must stand still.
    let mut still: Option<(u64, Instant)> = None;
    c.eventually(Duration::from_secs(30), "every node's log standing still for 2 s", || {
        let (index, _) = c.wait_converged(Duration::from_secs(10));
        match still {
            Some((i, since)) if i == index => (since.elapsed() >= Duration::from_secs(2)).then_some(()),
            _ => {
                still = Some((index, Instant::now()));
                None
            }
        }
    });
}

#[test]
fn wait_for_three_keeps_two_nodes_inactive_until_the_third_starts() {
    let mut c = cluster::start_with(3, Some(3), &[1, 2]);
    // An observation window, not a synchronisation: not ready at any point of it.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for id in [1, 2] {
            let r = request(c.api(id), None, "GET", "/readyz", &[], &[], Duration::from_secs(5));
            let status = r.as_ref().map(|r| r.status);
            assert_eq!(status, Ok(503), "node {id} ready with 2 of the 3 it waits for: {r:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // No write is acknowledged. (If login itself is refused while inactive, none can be made.)
    match c.try_login() {
        Ok(token) => {
            let body = json!({"replicas": 3}).to_string();
            let headers = [("Content-Type", "application/json")];
            let r = request(
                c.api(1),
                Some(&token),
                "PUT",
                "/v1/stations/early",
                &headers,
                body.as_bytes(),
                Duration::from_secs(15),
            );
            if let Ok(r) = r {
                assert!(!(200..300).contains(&r.status), "a write was acknowledged while inactive: {r:?}");
            }
        }
        Err(e) => eprintln!("login refused while inactive: {e}"),
    }

    c.launch(3);
    c.wait_ready(Duration::from_secs(60));
    c.create_station(STATION);
    produce_all(&c, &c.ids(), &values("active", 20));
}

#[test]
fn inspect_after_a_dirty_stop_names_the_latest_store() {
    let mut c = setup(3);
    produce_all(&c, &c.ids(), &values("before", 20));
    let leader = c.wait_leader(Duration::from_secs(10));
    let behind = a_follower(&c, leader);
    c.kill(behind);
    let survivors = c.running();
    produce_all(&c, &survivors, &values("after", 20));
    let index = c.view(leader).and_then(|v| v["last_log_index"].as_u64()).unwrap_or_else(|| c.fail("no leader view"));
    for &id in &survivors {
        c.kill(id);
    }

    let ids = c.ids();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_depot"))
        .args(["admin", "inspect", "--json"])
        .args(ids.iter().map(|&id| c.data_dir(id)))
        .env("DEPOT_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stores = report["stores"].as_array().unwrap();
    assert_eq!(stores.len(), 3, "{report:#}");
    let position = |s: &Value| (s["last_term"].as_u64().unwrap(), s["last_index"].as_u64().unwrap());
    for (store, &id) in stores.iter().zip(&ids) {
        assert_eq!(store["path"], c.data_dir(id).display().to_string(), "{report:#}");
        assert_eq!(store["node_id"], id, "{report:#}");
        assert_eq!(store["cluster_id"], c.cluster_id(), "{report:#}");
        assert_eq!((&store["state"], &store["clean"]), (&json!("dirty"), &json!(false)), "{report:#}");
    }
    let best = stores.iter().map(position).max().unwrap();
    let latest: Vec<&Value> = stores.iter().filter(|s| s["latest"] == true).collect();
    assert_eq!(latest.len(), 1, "{report:#}");
    assert_eq!(report["latest"], latest[0]["path"], "{report:#}");
    assert_eq!(position(latest[0]), best, "the latest store is not the most advanced: {report:#}");
    assert_ne!(latest[0]["node_id"], behind, "the node killed first cannot be the latest: {report:#}");
    let behind_store = &stores[ids.iter().position(|&id| id == behind).unwrap()];
    assert!(position(behind_store) < best, "{report:#}");
    assert!(best.1 >= index, "the latest store ends before the index {index} the leader reported: {report:#}");
    let distinct: BTreeSet<&str> = stores.iter().filter_map(|s| s["cluster_id"].as_str()).collect();
    assert_eq!(report["clusters"], json!(distinct), "{report:#}");
}

#[test]
fn a_follower_paused_through_large_batches_catches_up_and_can_take_over() {
    let mut c = setup(3);
    let leader = c.wait_leader(Duration::from_secs(10));
    let lagging = a_follower(&c, leader);
    c.pause(lagging);
    // About 64 MiB the paused node misses, as 400 Raft entries of 160 KiB: far more than one
    // append can carry within openraft's per-append deadline (the heartbeat interval).
    let payload = "x".repeat(8 * 1024);
    let body = json!({"messages": (0..20).map(|_| json!({"payload": payload})).collect::<Vec<_>>()});
    for i in 0..400 {
        let r = c.call(leader, "POST", &format!("/v1/stations/{STATION}/messages/batch"), Some(&body));
        assert_eq!(r.status, 200, "batch {i}: {r:?}");
        assert!(r.body["results"].as_array().unwrap().iter().all(|x| x["offset"].is_u64()), "batch {i}: {r:?}");
    }
    c.resume(lagging);
    c.wait_converged(Duration::from_secs(60));
    // Caught up for real: with the old leader gone it holds the quorum with the other node.
    c.kill(leader);
    produce_all(&c, &c.running(), &values("after", 10));
}

#[test]
fn a_followers_full_disk_keeps_the_cluster_writing_and_it_catches_up_once_space_is_freed() {
    // Nodes 1 and 2 go active alone; node 3 starts on a small tmpfs of its own.
    let mut c = cluster::start_with(3, Some(2), &[1, 2]);
    let disk = crate::e2e::Tmpfs::mount_at(c.data_dir(3), "160m");
    c.launch(3);
    c.wait_ready(Duration::from_secs(60));
    c.create_station(STATION);
    let leader = c.wait_leader(Duration::from_secs(30));
    assert_ne!(leader, 3, "the node on the small disk leads; this test needs it to follow");

    let ballast = disk.path().join("ballast");
    crate::e2e::write_ballast(&ballast, crate::e2e::free_bytes(disk.path()) - (4 << 20));
    let blob = json!({ "blob": "x".repeat(256 << 10) });
    let messages = 30u64;
    for i in 0..messages {
        let r = c.call(leader, "POST", &format!("/v1/stations/{STATION}/messages"), Some(&blob));
        assert_eq!(r.status, 201, "message {i} with a follower's disk full: {r:?}");
    }
    c.eventually(Duration::from_secs(30), "node 3 to report itself unready on its full disk", || {
        (!c.ready(3)).then_some(())
    });

    std::fs::remove_file(&ballast).unwrap();
    c.eventually(Duration::from_secs(60), "node 3 to catch up once space is freed", || {
        let r = c.try_call(3, "GET", &format!("/v1/stations/{STATION}"), None, Duration::from_secs(5)).ok()?;
        (r.status == 200 && r.body["stats"]["messages"] == json!(messages)).then_some(())
    });
    c.eventually(Duration::from_secs(30), "node 3 ready again", || c.ready(3).then_some(()));
    let log = c.launch_stderr(3);
    assert!(log.contains("the Raft core was rebuilt from disk"), "node 3 never failed a write: {log}");
    drop(c);
    drop(disk);
}

/// The JSON log lines of node `id`'s current launch whose message contains `text`.
fn log_lines(c: &Cluster, id: u64, text: &str) -> usize {
    let log = std::fs::read_to_string(c.logs(id)[1]).unwrap_or_default();
    let launch = log.rsplit("===== launch").next().unwrap_or_default().to_owned();
    launch.lines().filter(|l| l.contains(text)).count()
}

/// Waits for node `id` to log `text` (the line follows the state readiness reports), then
/// returns how many times it did.
fn logged(c: &Cluster, id: u64, text: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    while log_lines(c, id, text) == 0 {
        assert!(Instant::now() < deadline, "node {id} never logged {text:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    log_lines(c, id, text)
}

#[test]
fn a_member_waiting_for_its_peers_answers_probes_and_names_the_missing() {
    let mut c = cluster::start_with(3, None, &[]);
    // The start's progress is logged at INFO.
    c.env.push(("DEPOT_LOG".to_owned(), "warn,depot_broker::cluster::progress=info".to_owned()));
    c.launch_in_background(1);
    let get = |c: &Cluster, path: &str| request(c.api(1), None, "GET", path, &[], &[], Duration::from_secs(5));
    // /livez answers at once (before, the port accepted and never answered while node 1 waited).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match get(&c, "/livez") {
            Ok(r) if r.status == 200 => break,
            other => assert!(Instant::now() < deadline, "node 1's /livez never answered 200: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Readiness names who is missing, once the first probe of the peers is done.
    let wanted = "1 of 3 nodes up, waiting for 2, 3";
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let r = get(&c, "/readyz").expect("/readyz answers while starting");
        assert_eq!(r.status, 503, "{r:?}");
        if r.body["reason"].as_str().is_some_and(|s| s.contains(wanted)) {
            break r;
        }
        assert!(Instant::now() < deadline, "/readyz never said {wanted:?}: {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ready.body["startup"]["missing"], json!([2, 3]), "{ready:?}");
    assert_eq!(ready.body["startup"]["up"], json!([1]), "{ready:?}");
    // Logged once, not again at every probe while nothing changes.
    assert_eq!(logged(&c, 1, wanted), 1, "one log line per change");
    // Anything else: 503 problem+json with Retry-After, not a hang.
    let r = get(&c, "/v1/stations").expect("the API answers while starting");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body["code"], "not_leader_unavailable", "{r:?}");
    assert!(r.header("retry-after").is_some(), "{r:?}");

    // Node 2 comes: node 1 opens; readiness and the log follow, one line per change.
    c.launch_in_background(2);
    c.await_started(1).expect("node 1 opens once a peer answers");
    c.await_started(2).expect("node 2 opens");
    let wanted = "2 of 3 nodes up, waiting for 3";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(&c, "/readyz").expect("/readyz answers");
        if r.status == 503 && r.body["reason"].as_str().is_some_and(|s| s.contains(wanted)) {
            assert_eq!(r.body["startup"]["missing"], json!([3]), "{r:?}");
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never said {wanted:?}: {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(logged(&c, 1, wanted) >= 1, "the change to 2 of 3 is logged");

    c.launch(3);
    c.wait_ready(Duration::from_secs(60));
    for id in c.ids() {
        let r = request(c.api(id), None, "GET", "/readyz", &[], &[], Duration::from_secs(5)).expect("/readyz");
        assert_eq!(r.status, 200, "node {id}: {r:?}");
        assert!(r.body.get("startup").is_none(), "node {id}: {r:?}");
    }
    assert_eq!(logged(&c, 1, "the cluster is active"), 1);
}
