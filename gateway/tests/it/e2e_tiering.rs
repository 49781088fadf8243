//! Tiering end to end: the real `depot dev` binary with a `[tiering]` bucket on a real
//! S3-compatible server process (s3s-fs, from the test kit). Sealed segments of a station with
//! `tiering.after_ms` become objects that decode on their own; the catalog survives a restart;
//! retention and station deletion delete the objects; an unreachable bucket delays tiering,
//! shows in /readyz and /metrics, and loses nothing.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use crate::e2e::*;
use crate::tier_common::metric;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use depot_broker::tier::object;
use depot_tests::s3::S3Server;
use serde_json::{json, Value};

const BUCKET: &str = "tiering";
const STATION: &str = "tiered";
const WITHIN: Duration = Duration::from_secs(60);
/// Small segments, so that a few hundred messages seal several.
const SEGMENT_BYTES: &str = "65536";

fn env(s3: &S3Server) -> Vec<(String, String)> {
    let mut env = s3.depot_env(BUCKET);
    env.push(("DEPOT_TIERING_PREFIX".to_owned(), "depot/".to_owned()));
    env.push(("DEPOT_SEGMENT_BYTES".to_owned(), SEGMENT_BYTES.to_owned()));
    env
}

fn start_tiered(dir: &std::path::Path, s3: &S3Server) -> Server {
    start_with(dir, s3, &[])
}

/// Like [`start_tiered`], with settings that replace the defaults of [`env`].
fn start_with(dir: &std::path::Path, s3: &S3Server, extra: &[(&str, &str)]) -> Server {
    let mut env = env(s3);
    for (k, v) in extra {
        env.retain(|(name, _)| name != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    start(dir, &env)
}

fn station(server: &Server) -> Value {
    let r = server.json("GET", &format!("/v1/stations/{STATION}"), None);
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

/// `count` messages of about 1 KiB, each its offset's text, in batches of 100.
fn produce(server: &Server, from: usize, count: usize) {
    for chunk in (from..from + count).collect::<Vec<_>>().chunks(100) {
        let messages: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"payload_base64": STANDARD.encode(format!("{i:06}:{}", "x".repeat(1000)))}))
            .collect();
        let r = server.json(
            "POST",
            &format!("/v1/stations/{STATION}/messages/batch"),
            Some(&json!({"messages": messages})),
        );
        assert_eq!(r.status, 200, "{r:?}");
    }
}

/// The station's objects in the bucket, decoded: (key, header). An object the node deletes
/// between the listing and the read (retention, a station's deletion) is gone, not listed.
fn objects(s3: &S3Server) -> Vec<(String, object::Header)> {
    s3.objects(BUCKET)
        .into_iter()
        .filter(|(key, _)| key.ends_with(".dseg"))
        .filter_map(|(key, _)| match std::fs::read(s3.object_path(BUCKET, &key)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            read => Some((key, read.unwrap())),
        })
        .map(|(key, bytes)| {
            let parsed = object::parse(&bytes).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert!(parsed.segment.starts_with(b"DPLG"), "{key}: the segment file is not a station log");
            assert_eq!(parsed.index.len() as u64, parsed.header.records, "{key}: one index entry per record");
            (key, parsed.header)
        })
        .collect()
}

#[test]
fn sealed_segments_become_objects_that_decode_alone_and_retention_and_deletion_remove_them() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let server = start_tiered(dir.path(), &s3);
    let r = server.json("PUT", &format!("/v1/stations/{STATION}"), Some(&json!({"tiering": {"after_ms": 1000}})));
    assert_eq!((r.status, &r.body["config"]["tiering"]), (201, &json!({"after_ms": 1000})), "{r:?}");
    produce(&server, 0, 400);

    // Every sealed segment (all but the one being written) reaches the bucket and the catalog.
    let tiered = eventually(WITHIN, "several segments are tiered", || {
        let s = station(&server);
        (s["stats"]["tiered"]["segments"].as_u64() >= Some(4)).then_some(s["stats"]["tiered"].clone())
    });
    let found = eventually(WITHIN, "the bucket holds what the catalog lists", || {
        let found = objects(&s3);
        (found.len() as u64 == station(&server)["stats"]["tiered"]["segments"].as_u64().unwrap()).then_some(found)
    });
    assert_eq!(tiered["first_offset"], 0, "{tiered}");
    let mut next = 0;
    for (key, header) in &found {
        assert!(key.starts_with("depot/"), "{key}: not under the prefix");
        assert_eq!((header.station.as_str(), header.first_offset), (STATION, next), "{key}");
        assert_eq!(header.records, header.last_offset - header.first_offset + 1, "{key}");
        next = header.last_offset + 1;
    }
    // Every message reads back, from the local copy or, once that is deleted, from the bucket.
    for offset in [0u64, 57, 399] {
        let m = server.json("GET", &format!("/v1/stations/{STATION}/messages/{offset}"), None);
        let payload = STANDARD.decode(m.body["payload_base64"].as_str().unwrap()).unwrap();
        assert!(payload.starts_with(format!("{offset:06}:").as_bytes()), "{m:?}");
    }
    // Counted when the uploader hears its catalog entry committed, a moment after the catalog
    // (and so the station's stats) shows it.
    eventually(WITHIN, "the uploads are counted", || {
        (metric(&server, "depot_tier_uploads_total") >= found.len() as i64).then_some(())
    });
    assert_eq!(metric(&server, "depot_tier_bucket_reachable"), 1);

    // The catalog is replicated state: it survives a restart. Meanwhile two objects no
    // catalog entry names appear, as a leader that died between an upload and its catalog
    // entry leaves them: the new leader's first pass deletes the one older than the orphan age
    // (5 min) and keeps the recent one, which may still be catalogued.
    server.stop(Duration::from_secs(30)).unwrap();
    let first_key = &found[0].0;
    let dir_of = first_key.rsplit_once('/').unwrap().0;
    let plant = |name: &str, age: Duration| {
        let key = format!("{dir_of}/{name}.dseg");
        let path = s3.object_path(BUCKET, &key);
        std::fs::copy(s3.object_path(BUCKET, first_key), &path).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::SystemTime::now() - age).unwrap();
        key
    };
    let old = plant("99999999999999999990-99999999999999999991", Duration::from_secs(3600));
    let recent = plant("99999999999999999992-99999999999999999993", Duration::ZERO);
    let server = start_tiered(dir.path(), &s3);
    let after = station(&server);
    assert!(after["stats"]["tiered"]["segments"].as_u64() >= tiered["segments"].as_u64(), "{after}");
    eventually(WITHIN, "the sweep deletes the old orphan", || {
        let keys: BTreeSet<String> = s3.objects(BUCKET).into_iter().map(|(k, _)| k).collect();
        (!keys.contains(&old)).then_some(keys)
    });
    assert!(s3.objects(BUCKET).iter().any(|(k, _)| *k == recent), "the recent orphan was deleted too early");
    // Counted once the bucket's delete has answered, a moment after the object is gone.
    eventually(WITHIN, "the orphan's delete is counted", || {
        (metric(&server, "depot_tier_orphans_deleted_total") >= 1).then_some(())
    });
    assert_eq!(metric(&server, "depot_tier_orphans_deleted_total"), 1);
    std::fs::remove_file(s3.object_path(BUCKET, &recent)).unwrap();

    // Retention removes the oldest messages: their objects go too.
    let r = server.json(
        "PUT",
        &format!("/v1/stations/{STATION}"),
        Some(&json!({"retention": {"max_messages": 100}, "tiering": {"after_ms": 1000}})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let first = station(&server)["stats"]["first_offset"].as_u64().unwrap();
    assert!(first >= 300, "retention kept from {first}");
    eventually(WITHIN, "objects of removed messages are deleted", || {
        objects(&s3).iter().all(|(_, h)| h.last_offset >= first).then_some(())
    });
    // Counted once the catalog forgets them, a Raft round after the bucket's delete.
    eventually(WITHIN, "the deletes are counted", || (metric(&server, "depot_tier_deletes_total") >= 1).then_some(()));

    // Deleting the station deletes the rest.
    assert_eq!(server.json("DELETE", &format!("/v1/stations/{STATION}"), None).status, 204);
    eventually(WITHIN, "the deleted station's objects are gone", || objects(&s3).is_empty().then_some(()));
}

#[test]
fn an_unreachable_bucket_delays_tiering_without_losing_anything_and_shows_in_readyz_and_metrics() {
    let mut s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let server = start_tiered(dir.path(), &s3);
    s3.stop();
    let r = server.json("PUT", &format!("/v1/stations/{STATION}"), Some(&json!({"tiering": {"after_ms": 1000}})));
    assert_eq!(r.status, 201, "{r:?}");
    // Produce is not held back by the bucket.
    produce(&server, 0, 300);
    let failures = eventually(WITHIN, "uploads fail while the bucket is down", || {
        let n = metric(&server, "depot_tier_upload_failures_total");
        (n >= 1).then_some(n)
    });
    let ready = server.json("GET", "/readyz", None);
    assert_eq!(ready.status, 200, "an unreachable bucket must not make the node unready: {ready:?}");
    assert_eq!(ready.body["tiering"]["reachable"], false, "{ready:?}");
    assert!(ready.body["tiering"]["last_error"].is_string(), "{ready:?}");
    assert!(ready.body["tiering"]["lag_bytes"].as_u64() > Some(0), "{ready:?}");
    assert!(metric(&server, "depot_tier_lag_bytes") > 0);
    assert_eq!(station(&server)["stats"]["tiered"]["segments"], 0);
    let offsets: BTreeSet<u64> = (0..300).collect();
    for offset in [0u64, 150, 299] {
        assert!(offsets.contains(&offset));
        let m = server.json("GET", &format!("/v1/stations/{STATION}/messages/{offset}"), None);
        assert_eq!(m.status, 200, "{m:?}");
    }

    // Back: tiering catches up (after its backoff) and the lag drains.
    s3.restart();
    eventually(WITHIN, "tiering catches up once the bucket is back", || {
        let s = station(&server);
        (s["stats"]["tiered"]["segments"].as_u64() >= Some(3)).then_some(())
    });
    eventually(WITHIN, "the bucket is reachable again", || {
        let ready = server.json("GET", "/readyz", None);
        (ready.body["tiering"]["reachable"] == true && ready.body["tiering"]["lag_bytes"] == 0).then_some(())
    });
    assert!(metric(&server, "depot_tier_upload_failures_total") >= failures);
    assert_eq!(objects(&s3).len() as u64, station(&server)["stats"]["tiered"]["segments"].as_u64().unwrap());
}

#[test]
fn a_segment_larger_than_a_part_goes_up_in_parts_and_reads_back_whole() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    // 12 MiB segments in parts of 5 MiB (S3's smallest): three parts each.
    let server =
        start_with(dir.path(), &s3, &[("DEPOT_SEGMENT_BYTES", "12582912"), ("DEPOT_TIERING_PART_BYTES", "5242880")]);
    let r = server.json("PUT", &format!("/v1/stations/{STATION}"), Some(&json!({"tiering": {"after_ms": 1000}})));
    assert_eq!(r.status, 201, "{r:?}");
    let big = STANDARD.encode(vec![b'p'; 10_000]);
    for _ in 0..26 {
        let messages: Vec<Value> = (0..100).map(|_| json!({"payload_base64": big})).collect();
        let r = server.json(
            "POST",
            &format!("/v1/stations/{STATION}/messages/batch"),
            Some(&json!({"messages": messages})),
        );
        assert_eq!(r.status, 200, "{r:?}");
    }
    let found = eventually(WITHIN, "a large segment is tiered", || {
        let found = objects(&s3);
        (!found.is_empty()).then_some(found)
    });
    for (key, header) in &found {
        let size = std::fs::metadata(s3.object_path(BUCKET, key)).unwrap().len();
        assert!(size > 2 * 5_242_880, "{key}: {size} bytes, not several parts");
        assert_eq!(header.first_offset, 0, "{key}");
    }
    // Nothing of the parts is left behind on the server.
    let leftovers: Vec<_> = std::fs::read_dir(s3.root())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with(".upload"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
