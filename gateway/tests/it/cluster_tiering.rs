//! Tiering on a real 3-node cluster sharing one bucket (a real s3s-fs process):
//! - the leader is killed while segments are being tiered and messages keep coming through the
//!   survivors: the new leader finishes tiering, the bucket holds exactly the catalogued ranges
//!   (contiguous from offset 0, no duplicate), every live node deletes its own local copies and
//!   reads every message back byte-identical, and so does the killed node once relaunched;
//! - a follower wiped, removed and replaced by an empty node catches up from a snapshot without downloading the tiered
//!   data (no segment files for the tiered range, an empty tier cache, no bytes read from the
//!   bucket), then reads the whole station from the bucket.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::cluster::{hex, Cluster, Config, ADMIN_PASSWORD};
use crate::e2e::depot;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use depot_broker::tier::object;
use depot_tests::http::request;
use depot_tests::s3::S3Server;
use serde_json::{json, Value};

const BUCKET: &str = "cluster-tiering";
const STATION: &str = "archive";
/// Single-message produces before the leader is killed, and after.
const BEFORE_KILL: u64 = 350;
const AFTER_KILL: u64 = 350;
const WITHIN: Duration = Duration::from_secs(45);

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap())
}

fn start(s3: &S3Server) -> Cluster {
    let mut config = Config::new(depot(), runtime().block_on(depot_pgtest::database()), ADMIN_PASSWORD);
    config.jwt_secret = Some(hex(32));
    config.proxied = true;
    config.env.extend(s3.depot_env(BUCKET));
    config.env.push(("DEPOT_SEGMENT_BYTES".to_owned(), "65536".to_owned()));
    config.env.push(("DEPOT_SNAPSHOT_EVERY".to_owned(), "20".to_owned()));
    Cluster::start(config, 3, &[1, 2, 3])
}

/// About 1 KiB naming message `i` (not its offset: a message's offset is what its produce
/// answered), with every byte value.
fn payload(i: u64) -> Vec<u8> {
    let mut p = format!("message-{i:06}:").into_bytes();
    p.extend((0..1000u64).map(|k| ((k * 31 + i) % 256) as u8));
    p
}

/// Produces messages `range` one POST each (the payload's bytes as the body), through `nodes` in turn, each with its own
/// idempotency key: an answer lost or refused (503 during an election) is retried on the next
/// node, so it is written once. Records each message's acknowledged offset.
fn produce(c: &Cluster, nodes: &[u64], range: std::ops::Range<u64>, acknowledged: &mut BTreeMap<u64, u64>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut turn = 0usize;
    for i in range {
        let key = format!("k-{i}");
        let body = payload(i);
        let headers = [("Content-Type", "application/octet-stream"), ("Idempotency-Key", key.as_str())];
        loop {
            let node = nodes[turn % nodes.len()];
            turn += 1;
            let path = format!("/v1/stations/{STATION}/messages");
            let r = request(c.api(node), Some(c.token()), "POST", &path, &headers, &body, Duration::from_secs(10));
            match r {
                Ok(r) if r.status == 200 || r.status == 201 => {
                    let offset = r.body["offset"].as_u64().unwrap_or_else(|| c.fail(&format!("no offset: {r:?}")));
                    acknowledged.insert(i, offset);
                    break;
                }
                Ok(r) if r.status != 503 && r.status != 429 => {
                    c.fail(&format!("producing message {i} via node {node}: {r:?}"))
                }
                _ => {}
            }
            if Instant::now() > deadline {
                c.fail(&format!("message {i} not acknowledged within 60 s"));
            }
            // Between retries of a refused produce (a leader is being elected); not a wait for
            // an event.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn stats(c: &Cluster, node: u64) -> Option<Value> {
    let r = c.try_call(node, "GET", &format!("/v1/stations/{STATION}"), None, Duration::from_secs(10)).ok()?;
    (r.status == 200).then(|| r.body["stats"].clone())
}

fn metric(c: &Cluster, node: u64, name: &str) -> i64 {
    let r = c.call(node, "GET", "/metrics", None);
    let text = String::from_utf8_lossy(&r.raw).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| c.fail(&format!("no {name} in the metrics of node {node}")))
}

/// The bucket's objects, decoded, as (first, last) offsets in key order; panics on an object
/// that does not decode.
fn object_ranges(s3: &S3Server) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = s3
        .objects(BUCKET)
        .into_iter()
        .filter(|(key, _)| key.ends_with(".dseg"))
        // An object deleted between the listing and the read is gone, not listed.
        .filter_map(|(key, _)| match std::fs::read(s3.object_path(BUCKET, &key)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            read => Some((key, read.unwrap())),
        })
        .map(|(key, bytes)| {
            let parsed = object::parse(&bytes).unwrap_or_else(|e| panic!("{key}: {e}"));
            let h = parsed.header;
            assert_eq!(h.records, h.last_offset - h.first_offset + 1, "{key}: {h:?}");
            assert_eq!(parsed.index.len() as u64, h.records, "{key}");
            (h.first_offset, h.last_offset)
        })
        .collect();
    ranges.sort();
    ranges
}

/// Whether `ranges` cover `0..=last` back to back.
fn contiguous(ranges: &[(u64, u64)]) -> Option<u64> {
    let mut next = 0;
    for &(first, last) in ranges {
        if first != next || last < first {
            return None;
        }
        next = last + 1;
    }
    next.checked_sub(1)
}

/// The whole station as node `node` browses it: (offset, payload) oldest first.
fn browse_all(c: &Cluster, node: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut path = format!("/v1/stations/{STATION}/messages?limit=100");
    loop {
        let r = c.call(node, "GET", &path, None);
        if r.status != 200 {
            c.fail(&format!("browsing on node {node}: {r:?}"));
        }
        for m in r.body["messages"].as_array().unwrap() {
            let data = STANDARD.decode(m["payload_base64"].as_str().unwrap()).unwrap();
            out.push((m["offset"].as_u64().unwrap(), data));
        }
        match r.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/stations/{STATION}/messages?limit=100&cursor={cursor}"),
            None => return out,
        }
    }
}

/// Every acknowledged message at its offset, byte-identical, nothing else.
fn check_all(c: &Cluster, node: u64, acknowledged: &BTreeMap<u64, u64>) {
    let all = browse_all(c, node);
    let by_offset: BTreeMap<u64, u64> = acknowledged.iter().map(|(&i, &o)| (o, i)).collect();
    assert_eq!(by_offset.len(), acknowledged.len(), "two messages acknowledged at one offset");
    let offsets: Vec<u64> = all.iter().map(|(o, _)| *o).collect();
    let expected: Vec<u64> = by_offset.keys().copied().collect();
    if offsets != expected {
        c.fail(&format!(
            "node {node} browsed {} messages, {} acknowledged (first browsed {:?}, last {:?})",
            offsets.len(),
            expected.len(),
            offsets.first(),
            offsets.last()
        ));
    }
    for (offset, data) in &all {
        if *data != payload(by_offset[offset]) {
            c.fail(&format!("node {node}: offset {offset} does not read back as message {}", by_offset[offset]));
        }
    }
}

/// Station log segment files (`.log`) under a node's data dir.
fn segment_files(data: &Path) -> usize {
    let Ok(stations) = std::fs::read_dir(data.join("sm").join("stations")) else { return 0 };
    stations
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).into_iter().flatten())
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log")))
        .count()
}

/// Segment files (`.log`) linked by the snapshots in `dir` (`<data dir>/sm/snapshots`).
fn snapshot_segment_files(dir: &Path) -> usize {
    let Ok(snapshots) = std::fs::read_dir(dir) else { return 0 };
    snapshots
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).into_iter().flatten())
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log")))
        .count()
}

fn installed_snapshots(data: &Path) -> usize {
    let Ok(dir) = std::fs::read_dir(data.join("sm").join("snapshots")) else { return 0 };
    dir.filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with("installed-"))).count()
}

/// Every sealed segment tiered: the leader has no lag, the bucket holds exactly the catalogued
/// ranges back to back from offset 0, and each of `nodes` has deleted its own local copies.
fn wait_tiered(c: &Cluster, s3: &S3Server, nodes: &[u64], total: u64) -> (u64, Vec<(u64, u64)>) {
    c.eventually(WITHIN, "every sealed segment tiered and the local copies deleted on every live node", || {
        let leader = c.leader()?;
        let ready = request(c.api(leader), None, "GET", "/readyz", &[], &[], Duration::from_secs(5)).ok()?;
        if ready.body["tiering"]["lag_bytes"] != 0 || ready.body["tiering"]["reachable"] != true {
            return None;
        }
        let s = stats(c, leader)?;
        let ranges = object_ranges(s3);
        let last = contiguous(&ranges)?;
        if s["tiered"]["segments"].as_u64()? != ranges.len() as u64
            || s["tiered"]["first_offset"] != 0
            || s["tiered"]["last_offset"] != last
            || s["messages"] != total
        {
            return None;
        }
        for &node in nodes {
            let s = stats(c, node)?;
            if s["tiered"]["last_offset"] != last || s["local_bytes"].as_u64()? >= s["bytes"].as_u64()? / 4 {
                return None;
            }
        }
        Some((leader, ranges))
    })
}

#[test]
fn a_leader_killed_while_tiering_and_a_replaced_follower_catching_up_from_a_snapshot_lose_nothing_and_download_nothing()
{
    let began = Instant::now();
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let mut c = start(&s3);
    let leader = c.wait_leader(Duration::from_secs(10));
    let body = json!({"replicas": 3, "tiering": {"after_ms": 1000}});
    let r = c.call(leader, "PUT", &format!("/v1/stations/{STATION}"), Some(&body));
    assert_eq!(r.status, 201, "{r:?}");

    // Produce over every node until tiering is under way, then kill the leader.
    let mut acknowledged = BTreeMap::new();
    produce(&c, &[1, 2, 3], 0..BEFORE_KILL, &mut acknowledged);
    c.eventually(WITHIN, "tiering under way (a segment catalogued)", || {
        (stats(&c, leader)?["tiered"]["segments"].as_u64()? >= 1).then_some(())
    });
    let killed = c.wait_leader(Duration::from_secs(10));
    c.kill(killed);
    let killed_at = Instant::now();
    let survivors = c.running();
    produce(&c, &survivors, BEFORE_KILL..BEFORE_KILL + AFTER_KILL, &mut acknowledged);
    let new_leader = c.wait_leader(Duration::from_secs(20));
    assert_ne!(new_leader, killed);
    let total = acknowledged.len() as u64;
    assert_eq!(total, BEFORE_KILL + AFTER_KILL);

    let (_, ranges) = wait_tiered(&c, &s3, &survivors, total);
    let tiered_after_kill = killed_at.elapsed();
    assert!(ranges.len() >= 8, "{ranges:?}");
    for &node in &survivors {
        check_all(&c, node, &acknowledged);
    }

    // The killed node relaunched: it catches up, deletes its copies and reads everything.
    c.launch(killed);
    let all = c.running();
    let (leader, ranges) = wait_tiered(&c, &s3, &all, total);
    check_all(&c, killed, &acknowledged);
    let failover_done = began.elapsed();

    // A follower wiped loses its place (a node that lost its data may not rejoin under its old
    // id): it is removed, and its replacement joins empty under a new id. The leader's log
    // keeps 500 entries after a snapshot, and over 700 were written: the new node can only
    // catch up from a snapshot, which carries the metas of the tiered segments, never their data.
    // Once a node has deleted its copies, a snapshot follows that lists their metas instead:
    // the leader's current snapshot no longer links the tiered segments.
    let leader_snapshots = c.data_dir(leader).join("sm").join("snapshots");
    c.eventually(Duration::from_secs(15), "a snapshot of the leader's that links no tiered segment", || {
        (snapshot_segment_files(&leader_snapshots) <= 1).then_some(())
    });
    let follower = *all.iter().find(|&&id| id != leader).unwrap();
    c.wipe(follower);
    let r = c.call(leader, "DELETE", &format!("/v1/cluster/nodes/{follower}"), None);
    assert!((200..300).contains(&r.status), "{r:?}");
    let joined = c.add_node();
    c.launch(joined);
    let body = json!({"id": joined, "api_addr": c.api(joined).to_string(), "cluster_addr": c.cluster_addr(joined).to_string()});
    let r = c.call(leader, "POST", "/v1/cluster/nodes", Some(&body));
    assert!((200..300).contains(&r.status), "{r:?}");
    let data = c.data_dir(joined).to_path_buf();
    c.eventually(WITHIN, "the new node installs a snapshot and catches up", || {
        let leader_view = c.view(leader)?;
        let view = c.view(joined)?;
        (installed_snapshots(&data) >= 1
            && view["last_applied"].as_u64()? >= leader_view["last_log_index"].as_u64()?
            && stats(&c, joined)?["messages"] == total)
            .then_some(())
    });
    let files = segment_files(&data);
    assert!(files <= 2, "the new node holds {files} segment files after catching up (tiered: {ranges:?})");
    let cache = data.join("tier-cache");
    let cached: Vec<_> = std::fs::read_dir(&cache).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(cached.is_empty(), "the tier cache of the new node is not empty: {cached:?}");
    assert_eq!(metric(&c, joined, "depot_tier_read_bytes_total"), 0, "the new node downloaded tiered data to catch up");
    let s = stats(&c, joined).unwrap();
    assert!(s["local_bytes"].as_u64() < Some(s["bytes"].as_u64().unwrap() / 4), "{s}");
    check_all(&c, joined, &acknowledged);
    assert!(metric(&c, joined, "depot_tier_read_bytes_total") > 0);

    println!(
        "cluster tiering: {total} messages, {} objects; leader {killed} killed, tiering done {tiered_after_kill:?} \
         after the kill, failover part {failover_done:?}, whole test {:?}",
        ranges.len(),
        began.elapsed()
    );
}
