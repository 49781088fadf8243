//! Open files stay bounded however many stations there are: the real `depot dev` binary, started
//! with an open-file limit of 1,024 (soft and hard, by `prlimit`), creates 20,000 stations,
//! produces to and fetches from every one of them, and restarts under the same limit with every
//! message still there. Before station logs kept their files in a bounded cache, each station
//! held two files open and a node like this one died of EMFILE at about 500 stations.
//!
//! `DEPOT_TEST_STATIONS` sets another number of stations.

#![allow(clippy::unwrap_used)]

use std::thread;
use std::time::Instant;

use crate::e2e::*;
use depot_tests::serial::Heavy;
use serde_json::json;

const LIMIT: usize = 1024;
const CLIENTS: usize = 4;

fn stations() -> usize {
    std::env::var("DEPOT_TEST_STATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

fn start_limited(dir: &std::path::Path) -> Server {
    let limit = format!("--nofile={LIMIT}:{LIMIT}");
    // Four clients back to back outrun `depot dev`'s default per-address limit (1,000 requests a
    // second) on a fast client: a 429 here would be the client's pace, not what this test checks.
    let server = start_under(&["prlimit", &limit, "--"], dir, &[("DEPOT_RATE_LIMIT", "off")]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    assert_eq!(line.split_whitespace().nth(3), Some(LIMIT.to_string().as_str()), "{line}");
    server
}

/// The value of an unlabelled series in the /metrics text.
fn metric(conn: &mut Conn, name: &str) -> u64 {
    let r = conn.call("GET", "/metrics", "text/plain", b"");
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.raw).unwrap();
    let line = text.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{name}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Runs `work(conn, i)` for every station index on `CLIENTS` connections at once, checking the
/// server's open files every 100 stations; returns the most seen.
fn for_each_station(server: &Server, indexes: Vec<usize>, work: fn(&mut Conn, usize)) -> usize {
    let pid = server.pid();
    let chunks: Vec<Vec<usize>> =
        (0..CLIENTS).map(|c| indexes.iter().copied().skip(c).step_by(CLIENTS).collect()).collect();
    thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || {
                    let mut conn = Conn::open(server.addr, &server.token);
                    let mut most = 0;
                    for (n, i) in chunk.into_iter().enumerate() {
                        work(&mut conn, i);
                        if n % 100 == 0 {
                            most = most.max(open_fds(pid));
                        }
                    }
                    most
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).max().unwrap_or(0)
    })
}

fn create_produce_fetch(conn: &mut Conn, i: usize) {
    let station = format!("/v1/stations/s{i:05}");
    assert_eq!(conn.json("PUT", &station, &json!({})).status, 201, "create s{i}");
    assert_eq!(conn.json("PUT", &format!("{station}/consumer-groups/g"), &json!({})).status, 201);
    let r = conn.call("POST", &format!("{station}/messages"), "text/plain", format!("m{i}").as_bytes());
    assert_eq!((r.status, &r.body["offset"]), (201, &json!(0)), "produce to s{i}: {r:?}");
    let r = conn.json("POST", &format!("{station}/consumer-groups/g/fetch"), &json!({"max_messages": 1}));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["messages"][0]["payload"], format!("m{i}"), "fetch from s{i}: {r:?}");
}

fn fetch_again(conn: &mut Conn, i: usize) {
    let station = format!("/v1/stations/s{i:05}");
    assert_eq!(conn.json("PUT", &format!("{station}/consumer-groups/h"), &json!({})).status, 201);
    let r = conn.json("POST", &format!("{station}/consumer-groups/h/fetch"), &json!({"max_messages": 1}));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["messages"][0]["payload"], format!("m{i}"), "s{i} after the restart: {r:?}");
}

#[test]
fn twenty_thousand_stations_under_an_open_file_limit_of_1024_produce_fetch_and_restart() {
    let _heavy = Heavy::take();
    let n = stations();
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_limited(dir.path());

    let started = Instant::now();
    let most = for_each_station(&server, (0..n).collect(), create_produce_fetch);
    let created = started.elapsed();
    assert!(most < LIMIT, "{most} files open under a limit of {LIMIT}");
    let mut conn = Conn::open(server.addr, &server.token);
    let cap = metric(&mut conn, "depot_station_files_open_max");
    assert!(cap as usize <= LIMIT / 2, "the cache takes at most half the limit: {cap}");
    assert!(metric(&mut conn, "depot_station_files_open") <= cap);
    assert!(metric(&mut conn, "depot_station_file_reopens_total") > 0, "files were closed and reopened");
    drop(conn);

    server.terminate();
    let restart = Instant::now();
    let server = start_limited(dir.path());
    let restarted = restart.elapsed();
    let pid = server.pid();
    assert!(open_fds(pid) < LIMIT, "{} files open after the restart", open_fds(pid));

    // Every station is back with its message.
    let mut conn = Conn::open(server.addr, &server.token);
    let mut seen = 0;
    let mut cursor = String::new();
    loop {
        let r = conn.call("GET", &format!("/v1/stations?limit=1000&cursor={cursor}"), "application/json", b"");
        assert_eq!(r.status, 200, "{r:?}");
        for s in r.body["stations"].as_array().unwrap() {
            assert_eq!(s["stats"]["messages"], 1, "{s}");
            // Fetched but not acked: still owed to the group (its delivery may have expired).
            assert_eq!(s["consumer_groups"][0]["lag"], 1, "{s}");
            seen += 1;
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, n);
    // Reads after the restart go through files reopened on demand; every tenth station is
    // enough to show it (the listing above already saw every message).
    let most_after = for_each_station(&server, (0..n).step_by(10).collect(), fetch_again);
    assert!(most_after < LIMIT, "{most_after} files open after the restart");
    // A new connection: the server closes keep-alive connections idle for 5 s.
    let mut conn = Conn::open(server.addr, &server.token);
    assert!(metric(&mut conn, "depot_station_files_open") <= cap);
    eprintln!(
        "{n} stations under RLIMIT_NOFILE {LIMIT}: created, produced and fetched in {created:?}, \
         at most {most} files open; restart to serving {restarted:?}; at most {most_after} open after"
    );
    drop(server);
    // Keep the data dir's removal out of the timings above.
    drop(dir);
}
