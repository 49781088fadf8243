//! Reads of tiered offsets end to end: once the catalog holds a station's sealed segments and
//! a snapshot is durable, their local copies are deleted and the disk shrinks; every message
//! still reads back byte-identical through fetch from 0, seek, browse (both ways), one by one
//! and as dead-letter payloads, from the bucket (real s3s-fs process) through the cache, also
//! after a restart. With the bucket down, reads that need it answer 503 `tier_unavailable` with
//! Retry-After while produce and local reads go on.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use crate::e2e::*;
use crate::tier_common::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use depot_tests::s3::S3Server;
use serde_json::{json, Value};

const BUCKET: &str = "tier-reads";
const STATION: &str = "archive";
const WITHIN: Duration = Duration::from_secs(60);
const COUNT: u64 = 600;

fn start_tiered(dir: &Path, s3: &S3Server) -> Server {
    start_armed(dir, s3, None)
}

/// [`start_tiered`] with a crash point armed (`depot_broker::failpoint`).
fn start_armed(dir: &Path, s3: &S3Server, failpoint: Option<&str>) -> Server {
    let mut env = s3.depot_env(BUCKET);
    env.push(("DEPOT_SEGMENT_BYTES".to_owned(), "65536".to_owned()));
    if let Some(point) = failpoint {
        env.push((depot_broker::failpoint::ENV.to_owned(), point.to_owned()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    start(dir, &env)
}

fn segment_files(dir: &Path) -> usize {
    let stations = dir.join("sm").join("stations");
    std::fs::read_dir(&stations)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".log"))
        .count()
}

/// Fetches (and acks) everything group `group` has, checking each payload.
fn consume_all(server: &Server, group: &str) -> Vec<u64> {
    let mut offsets = Vec::new();
    loop {
        let r = server.json(
            "POST",
            &format!("/v1/stations/{STATION}/consumer-groups/{group}/fetch"),
            Some(&json!({"max_messages": 100})),
        );
        assert_eq!(r.status, 200, "{r:?}");
        let messages = r.body["messages"].as_array().unwrap().clone();
        if messages.is_empty() {
            return offsets;
        }
        for m in &messages {
            let offset = m["offset"].as_u64().unwrap();
            assert_eq!(decoded(m), payload(offset), "fetch: offset {offset}");
            offsets.push(offset);
        }
        let receipts: Vec<Value> = messages.iter().map(|m| m["receipt"].clone()).collect();
        let r = server.json(
            "POST",
            &format!("/v1/stations/{STATION}/consumer-groups/{group}/ack"),
            Some(&json!({"receipts": receipts})),
        );
        assert_eq!(r.status, 200, "{r:?}");
    }
}

#[test]
fn tiered_offsets_read_back_from_the_bucket_once_local_copies_are_gone() {
    let mut s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let server = start_tiered(dir.path(), &s3);
    let r = server.json("PUT", &format!("/v1/stations/{STATION}"), Some(&json!({"tiering": {"after_ms": 1000}})));
    assert_eq!(r.status, 201, "{r:?}");
    let group = |name: &str, body: Value| {
        let r = server.json("PUT", &format!("/v1/stations/{STATION}/consumer-groups/{name}"), Some(&body));
        assert_eq!(r.status, 201, "{r:?}");
    };
    group("g", json!({}));
    group("dl", json!({"max_deliveries": 1}));
    produce_range(&server, STATION, 0..COUNT, 100);
    let files_before = segment_files(dir.path());
    assert!(files_before >= 6, "{files_before} segment files");

    // Tiered, then deleted locally: the disk shrinks to about the segment being written.
    let s = eventually(WITHIN, "local copies of tiered segments are deleted", || {
        let s = stats(&server, STATION);
        (s["tiered"]["segments"].as_u64() >= Some(5) && s["local_bytes"].as_u64() < Some(s["bytes"].as_u64()? / 4))
            .then_some(s)
    });
    assert!(segment_files(dir.path()) < files_before / 2, "{s}");
    assert_eq!(s["messages"], COUNT, "{s}");
    let tiered_last = s["tiered"]["last_offset"].as_u64().unwrap();

    // Browse up and down, one message at a time, fetch from 0 and a replay after a seek.
    let check = |messages: &[Value], expected: Vec<u64>, what: &str| {
        let offsets: Vec<u64> = messages.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
        assert_eq!(offsets, expected, "{what}");
        for m in messages {
            assert_eq!(decoded(m), payload(m["offset"].as_u64().unwrap()), "{what}");
        }
    };
    check(&browse_all(&server, STATION, "order=asc"), (0..COUNT).collect(), "browse up");
    check(
        &browse_all(&server, STATION, &format!("order=desc&from_offset={tiered_last}")),
        (0..=tiered_last).rev().collect(),
        "browse down",
    );
    for offset in [0, 1, tiered_last / 2, tiered_last, tiered_last + 1, COUNT - 1] {
        let r = server.json("GET", &format!("/v1/stations/{STATION}/messages/{offset}"), None);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(decoded(&r.body), payload(offset), "message {offset}");
    }
    assert_eq!(consume_all(&server, "g"), (0..COUNT).collect::<Vec<_>>(), "fetch from 0");
    let r = server.json("POST", &format!("/v1/stations/{STATION}/consumer-groups/g/seek"), Some(&json!({"offset": 7})));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(consume_all(&server, "g"), (7..COUNT).collect::<Vec<_>>(), "replay after a seek");
    assert!(metric(&server, "depot_tier_cache_hits_total") > 0);
    assert!(metric(&server, "depot_tier_cache_bytes") > 0);

    // A dead letter of a tiered message carries its payload.
    let r = server.json(
        "POST",
        &format!("/v1/stations/{STATION}/consumer-groups/dl/fetch"),
        Some(&json!({"max_messages": 2})),
    );
    let receipts: Vec<Value> = r.body["messages"].as_array().unwrap().iter().map(|m| m["receipt"].clone()).collect();
    assert_eq!(receipts.len(), 2, "{r:?}");
    let r = server.json(
        "POST",
        &format!("/v1/stations/{STATION}/consumer-groups/dl/dead-letter"),
        Some(&json!({"receipts": receipts})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = server.json("GET", &format!("/v1/stations/{STATION}/dead-letters?include_payload=true"), None);
    assert_eq!(r.status, 200, "{r:?}");
    let letters = r.body["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 2, "{r:?}");
    for l in letters {
        assert_eq!(decoded(&l["message"]), payload(l["offset"].as_u64().unwrap()), "{l}");
    }

    // A restart empties the cache; the deleted copies stay deleted and everything still reads.
    server.stop(Duration::from_secs(30)).unwrap();
    let server = start_tiered(dir.path(), &s3);
    assert!(segment_files(dir.path()) < files_before / 2);
    check(&browse_all(&server, STATION, "order=asc&from_offset=0"), (0..COUNT).collect(), "browse after a restart");

    // The bucket down, the cache cold (another restart): reads that need the bucket answer
    // 503 tier_unavailable with Retry-After; local reads and produce go on.
    server.stop(Duration::from_secs(30)).unwrap();
    s3.stop();
    let server = start_tiered(dir.path(), &s3);
    let r = server.json("GET", &format!("/v1/stations/{STATION}/messages/0"), None);
    r.problem(503, "tier_unavailable");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    let r = server.json("GET", &format!("/v1/stations/{STATION}/messages?limit=10"), None);
    r.problem(503, "tier_unavailable");
    let r = server.json("GET", &format!("/v1/stations/{STATION}/messages/{}", COUNT - 1), None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(decoded(&r.body), payload(COUNT - 1));
    let r = server.json(
        "POST",
        &format!("/v1/stations/{STATION}/messages"),
        Some(&json!({"payload_base64": STANDARD.encode(payload(COUNT))})),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(server.json("GET", "/readyz", None).status, 200);
    s3.restart();
    let r = eventually(WITHIN, "reads work once the bucket is back", || {
        let r = server.json("GET", &format!("/v1/stations/{STATION}/messages/0"), None);
        (r.status == 200).then_some(r)
    });
    assert_eq!(decoded(&r.body), payload(0));
}

/// The disk watermark counts tiering: with the bucket down, a full disk's refusal says how
/// much local data waits for the bucket; once the bucket is back, tiering frees the local
/// copies and produce resumes with the ballast still there.
#[test]
fn a_full_disk_waiting_for_the_bucket_says_so_and_tiering_frees_it() {
    let _heavy = depot_tests::serial::Heavy::take();
    let fs = Tmpfs::mount("256m");
    let data = fs.path().join("data");
    let mut s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let mut env = s3.depot_env(BUCKET);
    env.push(("DEPOT_SEGMENT_BYTES".to_owned(), "1048576".to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = start(&data, &env);
    let r = server.json("PUT", &format!("/v1/stations/{STATION}"), Some(&json!({"tiering": {"after_ms": 1000}})));
    assert_eq!(r.status, 201, "{r:?}");
    s3.stop();

    // The automatic watermark on 256 MiB is its floor, 64 MiB: leave 16 MiB above it.
    let watermark = 64u64 << 20;
    write_ballast(&fs.path().join("ballast"), free_bytes(fs.path()) - watermark - (16 << 20));
    let body = vec![b'y'; 256 << 10];
    let produce =
        || send(server.addr, Some(&server.token), "POST", &format!("/v1/stations/{STATION}/messages"), &[], &body);
    let mut acknowledged = 0u64;
    while produce().status == 201 {
        acknowledged += 1;
        assert!(acknowledged < 200, "200 messages of 256 KiB taken with 16 MiB above the watermark");
    }
    assert!(acknowledged > 8, "only {acknowledged} messages before the watermark");
    let refused = eventually(WITHIN, "the refusal names the data waiting for the bucket", || {
        let r = produce();
        assert_ne!(r.status, 201, "a produce was taken under the watermark: {r:?}");
        r.body["detail"].as_str().is_some_and(|d| d.contains("wait to move to the tiering bucket")).then_some(r)
    });
    refused.problem(507, "storage_full");

    // The bucket back: tiering uploads, the local copies go, and produce resumes.
    s3.restart();
    eventually(WITHIN, "produce resumes once tiering freed the disk", || (produce().status == 201).then_some(()));
    acknowledged += 1;
    let s = stats(&server, STATION);
    assert_eq!(s["messages"], acknowledged, "{s}");
    assert!(s["tiered"]["segments"].as_u64() >= Some(1), "{s}");
    // Nothing acknowledged is lost: every message reads back, tiered ones from the bucket.
    let messages = browse_all(&server, STATION, "order=asc");
    assert_eq!(messages.len() as u64, acknowledged);
}

/// Crash points: a node killed between an upload and its catalog entry uploads the same object
/// again (the same key: no duplicate, no orphan); a node killed part way through deleting local
/// copies opens, reads everything, and finishes the deletion.
#[test]
fn a_crash_between_upload_and_catalog_or_during_the_local_delete_loses_nothing() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();

    // Killed right after the first upload, before its catalog entry.
    let mut server = start_armed(dir.path(), &s3, Some("tier-after-upload"));
    let r = server.json("PUT", &format!("/v1/stations/{STATION}"), Some(&json!({"tiering": {"after_ms": 1000}})));
    assert_eq!(r.status, 201, "{r:?}");
    produce_range(&server, STATION, 0..400, 100);
    let exit = server.wait_exit(WITHIN).expect("the node did not stop at the failpoint");
    assert!(!exit.success(), "{exit:?}");
    let before = dseg_objects(&s3, BUCKET);
    assert_eq!(before.len(), 1, "{before:?}");

    let server = start_tiered(dir.path(), &s3);
    let s = eventually(WITHIN, "tiering finishes after the crash", || {
        let s = stats(&server, STATION);
        (s["tiered"]["segments"].as_u64() >= Some(5) && s["local_bytes"].as_u64() < Some(s["bytes"].as_u64()? / 4))
            .then_some(s)
    });
    let after = dseg_objects(&s3, BUCKET);
    assert_eq!(after.len() as u64, s["tiered"]["segments"].as_u64().unwrap(), "an orphan or a gap: {after:?}");
    assert!(after.contains(&before[0]), "the object uploaded before the crash is not the catalogued one");
    let all = browse_all(&server, STATION, "order=asc");
    assert_eq!(all.len(), 400);
    for m in &all {
        assert_eq!(decoded(m), payload(m["offset"].as_u64().unwrap()));
    }
    // Only the segment being written stays, so nothing is left to delete at the next start.
    eventually(WITHIN, "every sealed segment's local copy is deleted", || {
        (segment_files(dir.path()) == 1).then_some(())
    });
    server.stop(Duration::from_secs(30)).unwrap();

    // Killed after the first local segment of a deletion is gone.
    let mut server = start_armed(dir.path(), &s3, Some("tier-local-delete"));
    produce_range(&server, STATION, 400..800, 100);
    let exit = server.wait_exit(WITHIN).expect("the node did not stop at the local-delete failpoint");
    assert!(!exit.success(), "{exit:?}");
    let server = start_tiered(dir.path(), &s3);
    let all = browse_all(&server, STATION, "order=asc");
    assert_eq!(all.len(), 800);
    for m in &all {
        assert_eq!(decoded(m), payload(m["offset"].as_u64().unwrap()));
    }
    eventually(WITHIN, "the deletion finishes", || {
        let s = stats(&server, STATION);
        (s["local_bytes"].as_u64() < Some(s["bytes"].as_u64()? / 4)).then_some(())
    });
    assert_eq!(dseg_objects(&s3, BUCKET).len() as u64, stats(&server, STATION)["tiered"]["segments"].as_u64().unwrap());
}
