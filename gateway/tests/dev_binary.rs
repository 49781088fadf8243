//! End to end against the real `depot dev` binary on a random loopback port: produce → fetch →
//! ack, a long poll woken by a produce, SIGTERM exiting 0, and a restart that keeps the data.

#![allow(clippy::unwrap_used)]

mod e2e;

use e2e::*;
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
