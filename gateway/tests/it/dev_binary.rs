//! End to end against the real `depot dev` binary on a random loopback port: produce → fetch →
//! ack, a long poll woken by a produce, SIGTERM exiting 0, a restart that keeps the data, a
//! second process refused on a data dir in use, and a damaged log tail refused after a clean stop.

#![allow(clippy::unwrap_used)]

use crate::e2e::*;
use serde_json::{json, Value};

fn request(server: &Server, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let r = server.json(method, path, body);
    (r.status, r.body)
}

#[test]
fn dev_binary_produce_fetch_ack_long_poll_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);

    assert_eq!(request(&server, "PUT", "/v1/stations/orders", None).0, 201);
    assert_eq!(request(&server, "PUT", "/v1/stations/orders/consumer-groups/billing", None).0, 201);
    let (status, produced) = request(&server, "POST", "/v1/stations/orders/messages", Some(&json!({"id": 1})));
    assert_eq!((status, &produced["offset"]), (201, &json!(0)));

    let (status, fetched) =
        request(&server, "POST", "/v1/stations/orders/consumer-groups/billing/fetch", Some(&json!({"wait_ms": 5000})));
    assert_eq!(status, 200);
    let message = &fetched["messages"][0];
    assert_eq!(message["payload"], json!({"id": 1}));
    let receipt = message["receipt"].clone();
    let (status, acked) = request(
        &server,
        "POST",
        "/v1/stations/orders/consumer-groups/billing/ack",
        Some(&json!({"receipts": [receipt]})),
    );
    assert_eq!((status, acked), (200, json!({"results": ["ok"]})));

    // A long poll parked on an empty group returns the message produced while it waits.
    let poll = {
        let (addr, token) = (server.addr, server.token.clone());
        std::thread::spawn(move || {
            let fetch = json!({"wait_ms": 20000}).to_string();
            let path = "/v1/stations/orders/consumer-groups/billing/fetch";
            let r = send(addr, Some(&token), "POST", path, &[("Content-Type", "application/json")], fetch.as_bytes());
            (r.status, r.body)
        })
    };
    // The poller may not have parked yet when this produce lands; then it finds the message on
    // its first look. Either way it must answer with it, not with an empty list after 20 s.
    let (status, _) = request(&server, "POST", "/v1/stations/orders/messages", Some(&json!({"id": 2})));
    assert_eq!(status, 201);
    let (status, polled) = poll.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(polled["messages"][0]["payload"], json!({"id": 2}));

    server.terminate();

    let mut server = start(dir.path(), &[]);
    let (status, station) = request(&server, "GET", "/v1/stations/orders", None);
    assert_eq!(status, 200);
    assert_eq!(station["stats"]["messages"], json!(2));
    let (_, group) = request(&server, "GET", "/v1/stations/orders/consumer-groups/billing", None);
    assert_eq!(group["acked_floor"], json!(1), "the ack before the restart was lost: {group}");
    assert_eq!(group["pending"], json!(1));
    server.terminate();
}

#[test]
fn a_second_depot_on_a_data_dir_in_use_is_refused_and_a_killed_ones_lock_is_not_stale() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    assert_eq!(request(&server, "PUT", "/v1/stations/orders", None).0, 201);

    let (_, stderr) = start_refused(dir.path());
    let pid = server.pid();
    assert!(stderr.contains(&format!("is in use by another depot process (pid {pid})")), "{stderr}");
    assert!(stderr.contains(&dir.path().display().to_string()), "{stderr}");

    // The first one is untouched: it still serves what it had.
    let (status, station) = request(&server, "GET", "/v1/stations/orders", None);
    assert_eq!(status, 200, "{station}");

    // A killed node's lock dies with it: the restart is not blocked.
    server.kill();
    let server = start(dir.path(), &[]);
    let (status, station) = request(&server, "GET", "/v1/stations/orders", None);
    assert_eq!(status, 200, "{station}");
}

#[test]
fn a_damaged_raft_tail_after_a_clean_stop_is_refused_naming_file_and_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    assert_eq!(request(&server, "PUT", "/v1/stations/orders", None).0, 201);
    for batch in 0..2 {
        let messages: Vec<Value> =
            (0..100).map(|i| json!({ "payload": { "value": format!("{batch}-{i}") } })).collect();
        let (status, answer) =
            request(&server, "POST", "/v1/stations/orders/messages/batch", Some(&json!({ "messages": messages })));
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["results"][99]["offset"], json!(batch * 100 + 99), "{answer}");
    }
    server.terminate();

    let log = dir.path().join("raft/log/00000000000000000000.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[end - 20] ^= 0x40;
    std::fs::write(&log, &bytes).unwrap();

    for _ in 0..2 {
        let (_, stderr) = start_refused(dir.path());
        assert!(stderr.contains(&log.display().to_string()) && stderr.contains("at byte"), "{stderr}");
        assert!(stderr.contains("shut down cleanly"), "{stderr}");
        assert_eq!(std::fs::read(&log).unwrap(), bytes, "the refused start changed the log");
    }
}
