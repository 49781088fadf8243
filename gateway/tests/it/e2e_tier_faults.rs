//! Tiering against a bucket that answers 500s, then answers slowly, through the kit's fault
//! front ([`depot_tests::s3_faults`]) before a real s3s-fs process, on one `depot dev` node:
//! - 500s: produce goes on, uploads fail (counted), /readyz stays 200 and says the bucket is
//!   unreachable, nothing is tiered and everything reads back from local disk;
//! - slow (3 s a request): tiering still catalogues segments while a produce answers at once;
//! - healthy again: tiering catches up and the local copies go; then with 500s again and a cold
//!   cache (restart), a read of a tiered offset answers 503 `tier_unavailable` with
//!   Retry-After while local offsets read; healthy again, everything reads back byte-identical.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use crate::e2e::*;
use crate::tier_common::*;
use depot_tests::s3::S3Server;
use depot_tests::s3_faults::{Mode, S3Front};
use serde_json::{json, Value};

const BUCKET: &str = "tier-faults";
const STATION: &str = "faulty";
const WITHIN: Duration = Duration::from_secs(60);
/// Messages produced while the bucket answers 500s.
const COUNT: u64 = 400;
/// The delay of every request in the slow phase.
const SLOW: Duration = Duration::from_secs(3);
/// A produce must answer well within the slow bucket's delay: it never waits for an upload.
const PRODUCE_WITHIN: Duration = Duration::from_millis(1500);

fn start_node(dir: &Path, s3: &S3Server, front: &S3Front) -> Server {
    let mut env = front.depot_env(s3, BUCKET);
    env.push(("DEPOT_SEGMENT_BYTES".to_owned(), "65536".to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    start(dir, &env)
}

/// Produces the message of `offset` alone (its bytes as the body); must be acknowledged at
/// that offset.
fn produce_one(server: &Server, offset: u64) {
    let path = format!("/v1/stations/{STATION}/messages");
    let headers = [("Content-Type", "application/octet-stream")];
    let r = send(server.addr, Some(&server.token), "POST", &path, &headers, &payload(offset));
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["offset"], offset, "{r:?}");
}

fn tiered_segments(stats: &Value) -> u64 {
    stats["tiered"]["segments"].as_u64().unwrap_or(0)
}

/// Every message of `0..count` once, in order, byte-identical.
fn check_all(server: &Server, count: u64, what: &str) {
    let all = browse_all(server, STATION, "");
    let offsets: Vec<u64> = all.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (0..count).collect::<Vec<_>>(), "{what}: the offsets browsed");
    for m in &all {
        let offset = m["offset"].as_u64().unwrap();
        assert!(decoded(m) == payload(offset), "{what}: the payload of offset {offset} differs");
    }
}

#[test]
fn a_bucket_answering_500s_or_slowly_delays_tiering_but_never_produce_and_loses_nothing() {
    let began = Instant::now();
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let front = S3Front::start(&s3);
    let dir = tempfile::tempdir().unwrap();
    let server = start_node(dir.path(), &s3, &front);
    let r = server.json("PUT", &format!("/v1/stations/{STATION}"), Some(&json!({"tiering": {"after_ms": 1000}})));
    assert_eq!(r.status, 201, "{r:?}");
    // The leader's first pass lists the bucket (the orphan sweep) through the front. Once that
    // request went through, passes with nothing to upload make no request, so the backoff
    // below counts only the failures of the 500s.
    eventually(WITHIN, "the first listing of the bucket through the front", || {
        (front.counts().pass >= 1).then_some(())
    });

    // 500s: produce and local reads carry on; uploads fail and say so; nothing is tiered.
    front.set_mode(Mode::Error500);
    produce_range(&server, STATION, 0..COUNT, 50);
    let failures = eventually(WITHIN, "uploads fail against the 500s", || {
        let n = metric(&server, "depot_tier_upload_failures_total");
        (n >= 2).then_some(n)
    });
    let seen = front.counts();
    assert!(seen.error500 >= 2, "the SDK never reached the injected 500s: {seen:?}");
    let ready = eventually(WITHIN, "/readyz says the bucket is unreachable, with a lag", || {
        let ready = server.json("GET", "/readyz", None);
        assert_eq!(ready.status, 200, "a bucket answering 500s must not make the node unready: {ready:?}");
        (ready.body["tiering"]["reachable"] == false && ready.body["tiering"]["lag_bytes"].as_u64() > Some(0))
            .then_some(ready)
    });
    let error = ready.body["tiering"]["last_error"].as_str().unwrap_or_else(|| panic!("no last_error: {ready:?}"));
    assert!(error.contains("500") || error.contains("InternalError"), "{error}");
    let s = stats(&server, STATION);
    assert_eq!(tiered_segments(&s), 0, "{s}");
    assert!(dseg_objects(&s3, BUCKET).is_empty(), "{:?}", dseg_objects(&s3, BUCKET));
    assert!(s["local_bytes"].as_u64() >= s["bytes"].as_u64(), "{s}");
    check_all(&server, COUNT, "with the bucket answering 500s");
    let mut count = COUNT;

    // Slow: tiering makes progress at a request per 3 s, and produce does not wait for it. The
    // first upload waits out the backoff the 500s built up (at most 30 s).
    front.set_mode(Mode::Slow(SLOW));
    let mut slowest = Duration::ZERO;
    let mut last_sent: Option<Instant> = None;
    let s = eventually(Duration::from_secs(75), "segments catalogued through the slow bucket", || {
        // A produce every 200 ms or so, timed, while the uploads crawl.
        if last_sent.is_none_or(|at| at.elapsed() >= Duration::from_millis(200)) {
            let sent = Instant::now();
            produce_one(&server, count);
            slowest = slowest.max(sent.elapsed());
            last_sent = Some(sent);
            count += 1;
        }
        let s = stats(&server, STATION);
        (tiered_segments(&s) >= 2).then_some(s)
    });
    let during_slow = front.counts();
    assert!(during_slow.slow >= 2, "no request went through the slow front: {during_slow:?}");
    println!(
        "slow bucket: {} segments catalogued, slowest of {} produces {slowest:?}",
        tiered_segments(&s),
        count - COUNT
    );
    assert!(
        slowest < PRODUCE_WITHIN,
        "a produce took {slowest:?} while the bucket answered in {SLOW:?}: produce waits for uploads"
    );
    assert!(metric(&server, "depot_tier_upload_failures_total") >= failures);

    // Healthy: tiering catches up, the lag drains and the local copies are deleted.
    front.set_mode(Mode::Pass);
    let s = eventually(WITHIN, "tiering caught up and the local copies deleted", || {
        let ready = server.json("GET", "/readyz", None);
        let s = stats(&server, STATION);
        (ready.body["tiering"]["reachable"] == true
            && ready.body["tiering"]["lag_bytes"] == 0
            && tiered_segments(&s) >= 5
            && s["local_bytes"].as_u64() < Some(s["bytes"].as_u64()? / 4))
        .then_some(s)
    });
    assert_eq!(s["messages"], count, "{s}");
    assert_eq!(dseg_objects(&s3, BUCKET).len() as u64, tiered_segments(&s), "{s}");
    let tiered_last = s["tiered"]["last_offset"].as_u64().unwrap();
    assert!(tiered_last + 1 < count, "{s}");

    // 500s again, with the cache emptied by a restart: a tiered offset answers 503
    // tier_unavailable with Retry-After; the newest (local) offsets still read.
    front.set_mode(Mode::Error500);
    server.stop(Duration::from_secs(30)).unwrap();
    let server = start_node(dir.path(), &s3, &front);
    let before = front.counts().error500;
    let r = server.json("GET", &format!("/v1/stations/{STATION}/messages/0"), None);
    r.problem(503, "tier_unavailable");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    assert!(front.counts().error500 > before, "the read never reached the bucket: {:?}", front.counts());
    let r = server.json("GET", &format!("/v1/stations/{STATION}/messages/{tiered_last}"), None);
    r.problem(503, "tier_unavailable");
    let newest = count - 1;
    let r = server.json("GET", &format!("/v1/stations/{STATION}/messages/{newest}"), None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(decoded(&r.body) == payload(newest), "offset {newest} read back different");
    assert_eq!(server.json("GET", "/readyz", None).status, 200);

    // Healthy again: offset 0 reads back byte-identical, and so does the whole station.
    front.set_mode(Mode::Pass);
    let r = eventually(WITHIN, "offset 0 reads once the bucket is healthy", || {
        let r = server.json("GET", &format!("/v1/stations/{STATION}/messages/0"), None);
        (r.status == 200).then_some(r)
    });
    assert!(decoded(&r.body) == payload(0), "offset 0 read back different");
    check_all(&server, count, "after the faults");
    assert!(metric(&server, "depot_tier_read_bytes_total") > 0);
    let counts = front.counts();
    println!("s3 front: {counts:?}; {count} messages; the test took {:?}", began.elapsed());
}
