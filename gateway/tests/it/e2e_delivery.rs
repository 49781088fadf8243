//! End to end against the real `depot dev` binary: redelivery after the ack wait, max deliveries
//! into the dead letters and a redrive to that group only, idempotency keys (single and batch),
//! delayed delivery, the 413 limits, and the per-IP rate limit's 429.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::e2e::*;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

const WITHIN: Duration = Duration::from_secs(10);

fn put(server: &Server, path: &str, body: Value) {
    let r = server.json("PUT", path, Some(&body));
    assert_eq!(r.status, 201, "PUT {path}: {r:?}");
}

/// One fetch; the messages it returned.
fn fetch(server: &Server, station: &str, group: &str, body: Value) -> Vec<Value> {
    let path = format!("/v1/stations/{station}/consumer-groups/{group}/fetch");
    let r = server.json("POST", &path, Some(&body));
    assert_eq!(r.status, 200, "{r:?}");
    r.body["messages"].as_array().unwrap().clone()
}

/// Long-polls until a fetch returns something.
fn fetch_some(server: &Server, station: &str, group: &str) -> Vec<Value> {
    eventually(WITHIN, "a fetch that returns a message", || {
        Some(fetch(server, station, group, json!({"wait_ms": 2000, "max_messages": 1}))).filter(|m| !m.is_empty())
    })
}

/// Ack, nack, ...: the per-receipt results.
fn receipts(server: &Server, station: &str, group: &str, verb: &str, receipts: &[&Value]) -> Value {
    let path = format!("/v1/stations/{station}/consumer-groups/{group}/{verb}");
    let r = server.json("POST", &path, Some(&json!({ "receipts": receipts })));
    assert_eq!(r.status, 200, "{r:?}");
    r.body["results"].clone()
}

fn produce(server: &Server, station: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    send(server.addr, Some(&server.token), "POST", &format!("/v1/stations/{station}/messages"), headers, body)
}

fn time(rfc3339: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339.as_str().unwrap()).unwrap().with_timezone(&Utc)
}

#[test]
fn unacked_message_is_redelivered_after_ack_wait_with_a_new_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    put(&server, "/v1/stations/redeliver", json!({}));
    // The server accepts any ack wait ≥ 1 ms; 300 ms leaves room to ack the second delivery in
    // time on a loaded machine.
    put(&server, "/v1/stations/redeliver/consumer-groups/g", json!({"ack_wait_ms": 300}));
    assert_eq!(produce(&server, "redeliver", &[("Content-Type", "text/plain")], b"once").status, 201);

    let started = Instant::now();
    let first = fetch(&server, "redeliver", "g", json!({"wait_ms": 5000}));
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(
        (&first[0]["offset"], &first[0]["attempt"], &first[0]["payload"]),
        (&json!(0), &json!(1), &json!("once"))
    );
    // In flight: not handed out again before its ack wait runs out.
    assert_eq!(fetch(&server, "redeliver", "g", json!({"wait_ms": 0})), Vec::<Value>::new());

    let second = fetch_some(&server, "redeliver", "g");
    let waited = started.elapsed();
    assert_eq!((&second[0]["offset"], &second[0]["attempt"]), (&json!(0), &json!(2)), "{second:?}");
    assert_ne!(second[0]["receipt"], first[0]["receipt"]);
    assert!(waited >= Duration::from_millis(280), "redelivered after {waited:?}, before the 300 ms ack wait");

    let results = receipts(&server, "redeliver", "g", "ack", &[&first[0]["receipt"], &second[0]["receipt"]]);
    assert_eq!(results, json!(["stale_receipt", "ok"]));
    // Acked: nothing comes back, and the group is done with it.
    assert_eq!(fetch(&server, "redeliver", "g", json!({"wait_ms": 500})), Vec::<Value>::new());
    let group = server.json("GET", "/v1/stations/redeliver/consumer-groups/g", None);
    assert_eq!((&group.body["pending"], &group.body["acked_floor"]), (&json!(0), &json!(1)), "{group:?}");
}

#[test]
fn max_deliveries_dead_letters_and_redrive_returns_to_that_group_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    put(&server, "/v1/stations/dls", json!({}));
    put(&server, "/v1/stations/dls/consumer-groups/group-a", json!({"ack_wait_ms": 200, "max_deliveries": 2}));
    put(&server, "/v1/stations/dls/consumer-groups/group-b", json!({}));
    assert_eq!(produce(&server, "dls", &[("Content-Type", "application/json")], br#"{"n":1}"#).status, 201);

    // A: two deliveries, neither acked.
    let first = fetch_some(&server, "dls", "group-a");
    assert_eq!((&first[0]["offset"], &first[0]["attempt"]), (&json!(0), &json!(1)), "{first:?}");
    let second = fetch_some(&server, "dls", "group-a");
    assert_eq!((&second[0]["offset"], &second[0]["attempt"]), (&json!(0), &json!(2)), "{second:?}");

    // The second ack wait runs out: dead-lettered for A, with no third delivery.
    let dead = eventually(WITHIN, "the dead letter of group-a", || {
        let r = server.json("GET", "/v1/stations/dls/dead-letters?consumer_group=group-a", None);
        assert_eq!(r.status, 200, "{r:?}");
        let list = r.body["dead_letters"].as_array().unwrap().clone();
        (!list.is_empty()).then_some(list)
    });
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert_eq!(
        (&d["offset"], &d["consumer_group"], &d["reason"], &d["attempts"]),
        (&json!(0), &json!("group-a"), &json!("max_deliveries"), &json!(2)),
        "{d:?}"
    );
    assert!(d["dead_at"].is_string() && d["id"].is_u64(), "{d:?}");
    assert_eq!(fetch(&server, "dls", "group-a", json!({"wait_ms": 300})), Vec::<Value>::new());
    assert_eq!(receipts(&server, "dls", "group-a", "ack", &[&second[0]["receipt"]]), json!(["stale_receipt"]));
    let group_a = server.json("GET", "/v1/stations/dls/consumer-groups/group-a", None);
    assert_eq!((&group_a.body["dead_lettered"], &group_a.body["pending"]), (&json!(1), &json!(0)), "{group_a:?}");

    // B is untouched by A's failures: one normal delivery, acked.
    let b = fetch(&server, "dls", "group-b", json!({"wait_ms": 0}));
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!((&b[0]["offset"], &b[0]["attempt"], &b[0]["payload"]), (&json!(0), &json!(1), &json!({"n": 1})));
    assert_eq!(receipts(&server, "dls", "group-b", "ack", &[&b[0]["receipt"]]), json!(["ok"]));
    let r = server.json("GET", "/v1/stations/dls/dead-letters?consumer_group=group-b", None);
    assert_eq!(r.body["dead_letters"], json!([]), "{r:?}");

    let r = server.json("POST", "/v1/stations/dls/dead-letters/redrive", Some(&json!({"consumer_group": "group-a"})));
    assert_eq!((r.status, &r.body), (200, &json!({"redriven": 1})), "{r:?}");
    let r = server.json("GET", "/v1/stations/dls/dead-letters?consumer_group=group-a", None);
    assert_eq!(r.body["dead_letters"], json!([]), "a redriven dead letter is still listed: {r:?}");

    // Back to A with its attempts reset; B gets nothing new.
    let again = fetch_some(&server, "dls", "group-a");
    assert_eq!((&again[0]["offset"], &again[0]["attempt"]), (&json!(0), &json!(1)), "{again:?}");
    assert_eq!(receipts(&server, "dls", "group-a", "ack", &[&again[0]["receipt"]]), json!(["ok"]));
    assert_eq!(fetch(&server, "dls", "group-b", json!({"wait_ms": 300})), Vec::<Value>::new());
}

#[test]
fn idempotency_keys_single_and_batch() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    put(&server, "/v1/stations/idem", json!({}));
    let text = ("Content-Type", "text/plain");

    let r = produce(&server, "idem", &[text, ("Idempotency-Key", "k1")], b"hello");
    assert_eq!((r.status, &r.body), (201, &json!({"offset": 0, "duplicate": false})), "{r:?}");
    let r = produce(&server, "idem", &[text, ("Idempotency-Key", "k1")], b"hello");
    assert_eq!((r.status, &r.body), (200, &json!({"offset": 0, "duplicate": true})), "{r:?}");
    produce(&server, "idem", &[text, ("Idempotency-Key", "k1")], b"other").problem(422, "idempotency_key_reused");
    let station = server.json("GET", "/v1/stations/idem", None);
    assert_eq!(station.body["stats"]["messages"], json!(1), "{station:?}");

    // Batches: each item judged on its own, against earlier produces and earlier items alike.
    let hello = base64::engine::general_purpose::STANDARD.encode(b"hello");
    let batch = |messages: Value| {
        let r = server.json("POST", "/v1/stations/idem/messages/batch", Some(&json!({ "messages": messages })));
        assert_eq!(r.status, 200, "{r:?}");
        r.body["results"].clone()
    };
    let results = batch(json!([
        {"payload": {"n": 1}, "idempotency_key": "b1"},
        {"payload": {"n": 2}, "idempotency_key": "b2"},
        {"payload_base64": hello, "content_type": "text/plain", "idempotency_key": "k1"},
        {"payload": {"n": 1}, "idempotency_key": "b1"},
    ]));
    assert_eq!(
        results,
        json!([
            {"offset": 1, "duplicate": false},
            {"offset": 2, "duplicate": false},
            {"offset": 0, "duplicate": true},
            {"offset": 1, "duplicate": true},
        ])
    );
    let results = batch(json!([
        {"payload": {"n": 1}, "idempotency_key": "b1"},
        {"payload": {"n": 3}, "idempotency_key": "b2"},
        {"payload": {"n": 4}},
    ]));
    assert_eq!(results[0], json!({"offset": 1, "duplicate": true}));
    assert_eq!(results[1]["error"]["code"], json!("idempotency_key_reused"), "{results}");
    assert_eq!(results[2], json!({"offset": 3, "duplicate": false}));
    let r = produce(&server, "idem", &[("Content-Type", "application/json"), ("Idempotency-Key", "b2")], br#"{"n":2}"#);
    assert_eq!((r.status, &r.body), (200, &json!({"offset": 2, "duplicate": true})), "{r:?}");

    let station = server.json("GET", "/v1/stations/idem", None);
    assert_eq!(station.body["stats"]["messages"], json!(4), "{station:?}");
}

#[test]
fn delayed_messages_wait_without_blocking_ready_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    put(&server, "/v1/stations/later", json!({}));
    put(&server, "/v1/stations/later/consumer-groups/g", json!({}));
    let text = ("Content-Type", "text/plain");

    let before = Utc::now();
    let r = produce(&server, "later", &[text, ("Depot-Delay", "1500")], b"delayed");
    let after = Utc::now();
    assert_eq!((r.status, &r.body["offset"], &r.body["duplicate"]), (201, &json!(0), &json!(false)), "{r:?}");
    let delayed_until = time(&r.body["deliver_at"]);
    let slack = chrono::Duration::milliseconds(50);
    assert!(
        delayed_until >= before + chrono::Duration::milliseconds(1500) - slack
            && delayed_until <= after + chrono::Duration::milliseconds(1500) + slack,
        "deliver_at {delayed_until} is not 1.5 s after the produce ({before} .. {after})"
    );

    let at = (Utc::now() + chrono::Duration::milliseconds(1700)).to_rfc3339_opts(SecondsFormat::Millis, true);
    let r = produce(&server, "later", &[text, ("Depot-Deliver-At", &at)], b"scheduled");
    assert_eq!((r.status, &r.body["offset"], &r.body["deliver_at"]), (201, &json!(1), &json!(at)), "{r:?}");
    let scheduled_until = time(&r.body["deliver_at"]);

    assert_eq!(fetch(&server, "later", "g", json!({"wait_ms": 0})), Vec::<Value>::new());
    let r = produce(&server, "later", &[text], b"now");
    assert_eq!(r.status, 201, "{r:?}");
    assert!(r.body.get("deliver_at").is_none(), "{r:?}");

    // The ready message behind the delayed ones comes first, alone.
    let ready = fetch(&server, "later", "g", json!({"wait_ms": 1000, "max_messages": 10}));
    assert_eq!(ready.len(), 1, "{ready:?}");
    assert_eq!((&ready[0]["offset"], &ready[0]["payload"]), (&json!(2), &json!("now")));
    assert_eq!(receipts(&server, "later", "g", "ack", &[&ready[0]["receipt"]]), json!(["ok"]));

    // Then each delayed one, by long poll, never before its time (the server stamps times with
    // the same clock, to the millisecond).
    let tolerance = chrono::Duration::milliseconds(5);
    for (offset, payload, until) in [(0, "delayed", delayed_until), (1, "scheduled", scheduled_until)] {
        let got = fetch_some(&server, "later", "g");
        let now = Utc::now();
        assert_eq!((&got[0]["offset"], &got[0]["payload"]), (&json!(offset), &json!(payload)), "{got:?}");
        assert!(now + tolerance >= until, "offset {offset} delivered at {now}, before its deliver_at {until}");
        assert_eq!(receipts(&server, "later", "g", "ack", &[&got[0]["receipt"]]), json!(["ok"]));
    }
    assert!(Utc::now() - before >= chrono::Duration::milliseconds(1650));
}

#[test]
fn too_large_bodies_answer_413_and_oversized_batches_400() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    put(&server, "/v1/stations/small", json!({"max_message_bytes": 1024}));
    let octets = ("Content-Type", "application/octet-stream");

    produce(&server, "small", &[octets], &[7u8; 2048]).problem(413, "payload_too_large");
    let r = produce(&server, "small", &[octets], &[7u8; 1024]);
    assert_eq!((r.status, &r.body["offset"]), (201, &json!(0)), "{r:?}");

    // In a batch the station's limit fails that item only.
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let body = json!({"messages": [{"payload_base64": b64(&[7u8; 2048])}, {"payload": "fits"}]});
    let r = server.json("POST", "/v1/stations/small/messages/batch", Some(&body));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["results"][0]["error"]["code"], json!("payload_too_large"), "{r:?}");
    assert_eq!(r.body["results"][1], json!({"offset": 1, "duplicate": false}), "{r:?}");

    // A batch body over 16 MiB: refused as too large, without a 500 or a hang.
    let huge = json!({"messages": [{"payload_base64": b64(&vec![0u8; 12 << 20])}]}).to_string();
    assert!(huge.len() > 16 << 20);
    let started = Instant::now();
    let r = send(
        server.addr,
        Some(&server.token),
        "POST",
        "/v1/stations/small/messages/batch",
        &[("Content-Type", "application/json")],
        huge.as_bytes(),
    );
    r.problem(413, "payload_too_large");
    assert!(started.elapsed() < Duration::from_secs(10), "413 after {:?}", started.elapsed());

    // More than 1000 messages: 400; exactly 1000 is fine.
    let items = |n: usize| json!({"messages": vec![json!({"payload": 1}); n]});
    server.json("POST", "/v1/stations/small/messages/batch", Some(&items(1001))).problem(400, "invalid_request");
    let r = server.json("POST", "/v1/stations/small/messages/batch", Some(&items(1000)));
    assert_eq!(r.status, 200, "{r:?}");
    let results = r.body["results"].as_array().unwrap();
    assert_eq!((results.len(), &results[999]), (1000, &json!({"offset": 1001, "duplicate": false})));

    let station = server.json("GET", "/v1/stations/small", None);
    assert_eq!(station.body["stats"]["messages"], json!(1002), "{station:?}");
}

#[test]
fn per_ip_rate_limit_answers_429_and_spares_probes() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("DEPOT_RATE_LIMIT_IP_PER_SECOND", "1"), ("DEPOT_RATE_LIMIT_IP_BURST", "3")];
    let server = start(dir.path(), &env);

    let mut statuses = Vec::new();
    let limited = loop {
        let r = server.json("GET", "/v1/stations", None);
        statuses.push(r.status);
        if r.status != 200 {
            break r;
        }
        assert!(statuses.len() < 10, "no 429 within 10 requests at 1/s with bursts of 3: {statuses:?}");
    };
    limited.problem(429, "rate_limited");
    // The burst of 3 passes, then the limit applies (a 4th token needs a second to refill).
    assert!(statuses.len() >= 4, "{statuses:?}");
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1, "{limited:?}");
    assert_eq!(limited.header("ratelimit-policy"), Some("\"ip\";q=3;w=3"), "{limited:?}");
    let ratelimit = limited.header("ratelimit").unwrap();
    assert!(ratelimit.starts_with("\"ip\";r=0;t="), "{limited:?}");

    // Probes are never limited.
    for _ in 0..5 {
        let r = send(server.addr, None, "GET", "/livez", &[], b"");
        assert_eq!(r.status, 200, "{r:?}");
    }
}
