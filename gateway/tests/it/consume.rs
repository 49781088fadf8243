#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::common::*;
use actix_web::test;
use bytes::Bytes;
use depot_broker::station::{Command, NewMessage};
use depot_broker::{Broker, BrokerOptions};
use depot_gateway::{app, AppState};
use serde_json::{json, Value};

fn produce(station: &str, body: &'static [u8]) -> test::TestRequest {
    test::TestRequest::post().uri(&format!("/v1/stations/{station}/messages")).set_payload(body)
}

fn receipts(fetched: &Value) -> Vec<String> {
    fetched["messages"].as_array().unwrap().iter().map(|m| m["receipt"].as_str().unwrap().to_owned()).collect()
}

#[actix_web::test]
async fn groups_lifecycle_and_seek() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    for _ in 0..3 {
        send(&app, produce("s", b"m")).await.ok(201);
    }
    let g =
        send(&app, put_json("/v1/stations/s/consumer-groups/g", json!({"start": "latest", "ack_wait_ms": 1000}))).await;
    let b = g.ok(201);
    assert_eq!(b["name"], "g");
    assert_eq!(b["config"]["start"], "latest");
    assert_eq!(b["config"]["ack_wait_ms"], 1000);
    assert_eq!(b["config"]["max_deliveries"], 5);
    assert_eq!(b["config"]["max_pending"], 10000);
    assert_eq!(b["delivered_offset"], 3);
    for key in ["lag", "pending", "acked_floor", "dead_lettered"] {
        assert!(b[key].is_u64(), "{key}");
    }
    send(&app, put_json("/v1/stations/s/consumer-groups/g", json!({"max_deliveries": 2}))).await.ok(200);
    let e = send(&app, test::TestRequest::put().uri("/v1/stations/s/consumer-groups/h")).await;
    assert_eq!(e.ok(201)["config"]["start"], "earliest");
    let o = send(&app, put_json("/v1/stations/s/consumer-groups/o", json!({"start": {"offset": 1}}))).await;
    assert_eq!(o.ok(201)["config"]["start"], json!({"offset": 1}));
    let t =
        send(&app, put_json("/v1/stations/s/consumer-groups/t", json!({"start": {"time": "2020-01-01T00:00:00Z"}})))
            .await;
    assert_eq!(t.ok(201)["config"]["start"], json!({"time": "2020-01-01T00:00:00.000Z"}));

    let list = send(&app, get("/v1/stations/s/consumer-groups")).await;
    assert_eq!(list.ok(200)["consumer_groups"].as_array().unwrap().len(), 4);
    let station = send(&app, get("/v1/stations/s")).await;
    assert_eq!(station.ok(200)["consumer_groups"].as_array().unwrap().len(), 4);

    let sought = send(&app, post_json("/v1/stations/s/consumer-groups/g/seek", json!({"offset": 1}))).await;
    assert_eq!(sought.ok(200)["delivered_offset"], 1);
    let f = send(&app, post_json("/v1/stations/s/consumer-groups/g/fetch", json!({"max_messages": 10}))).await;
    assert_eq!(f.ok(200)["messages"].as_array().unwrap().len(), 2);
    send(&app, post_json("/v1/stations/s/consumer-groups/g/seek", json!({"time": "2020-01-01T00:00:00Z"})))
        .await
        .ok(200);
    send(
        &app,
        post_json("/v1/stations/s/consumer-groups/g/seek", json!({"offset": 1, "time": "2020-01-01T00:00:00Z"})),
    )
    .await
    .problem(400, "invalid_body");
    send(&app, post_json("/v1/stations/s/consumer-groups/g/seek", json!({}))).await.problem(400, "invalid_body");

    send(&app, get("/v1/stations/s/consumer-groups/g")).await.ok(200);
    send(&app, delete("/v1/stations/s/consumer-groups/g")).await.ok(204);
    send(&app, get("/v1/stations/s/consumer-groups/g")).await.problem(404, "consumer_group_not_found");
    send(&app, delete("/v1/stations/s/consumer-groups/g")).await.problem(404, "consumer_group_not_found");
    send(&app, get("/v1/stations/x/consumer-groups")).await.problem(404, "station_not_found");
    send(&app, put_json("/v1/stations/x/consumer-groups/g", json!({}))).await.problem(404, "station_not_found");
    send(&app, put_json("/v1/stations/s/consumer-groups/G!", json!({}))).await.problem(400, "invalid_name");
    send(&app, put_json("/v1/stations/s/consumer-groups/g", json!({"start": "middle"})))
        .await
        .problem(400, "invalid_body");
    send(&app, put_json("/v1/stations/s/consumer-groups/g", json!({"wat": 1}))).await.problem(400, "invalid_body");
    send(&app, put_json("/v1/stations/s/consumer-groups/g", json!({"ack_wait_ms": 0})))
        .await
        .problem(400, "invalid_request");
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn fetch_validation_and_404s() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    send(&app, put_json("/v1/stations/s/consumer-groups/g", json!({}))).await.ok(201);
    let fetch = "/v1/stations/s/consumer-groups/g/fetch";
    send(&app, post_json(fetch, json!({"wait_ms": 20001}))).await.problem(400, "invalid_request");
    send(&app, post_json(fetch, json!({"max_messages": 0}))).await.problem(400, "invalid_request");
    send(&app, post_json(fetch, json!({"max_messages": 1001}))).await.problem(400, "invalid_request");
    send(&app, post_json(fetch, json!({"unknown": 1}))).await.problem(400, "invalid_body");
    send(&app, post_json("/v1/stations/s/consumer-groups/nope/fetch", json!({})))
        .await
        .problem(404, "consumer_group_not_found");
    send(&app, post_json("/v1/stations/nope/consumer-groups/g/fetch", json!({})))
        .await
        .problem(404, "station_not_found");
    let empty = send(&app, post_json(fetch, json!({"wait_ms": 0}))).await;
    assert_eq!(empty.ok(200)["messages"], json!([]));
    for op in ["ack", "nack", "dead-letter"] {
        let uri = format!("/v1/stations/s/consumer-groups/nope/{op}");
        send(&app, post_json(&uri, json!({"receipts": ["x"]}))).await.problem(404, "consumer_group_not_found");
        let uri = format!("/v1/stations/s/consumer-groups/g/{op}");
        send(&app, post_json(&uri, json!({"receipts": []}))).await.problem(400, "invalid_request");
        send(&app, post_json(&uri, json!({"receipt": ["x"]}))).await.problem(400, "invalid_body");
    }
    send(&app, post_json("/v1/stations/s/consumer-groups/g/extend", json!({"receipts": ["x"]})))
        .await
        .problem(400, "invalid_body");
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn long_poll_returns_when_a_message_lands() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    send(&app, put_json("/v1/stations/s/consumer-groups/g", json!({}))).await.ok(201);
    let broker = n.broker.clone();
    // Runs once the fetch below is parked waiting (this runtime has one thread).
    let producer = actix_web::rt::spawn(async move {
        let message = NewMessage {
            content_type: "text/plain".into(),
            headers: Vec::new(),
            payload: Bytes::from_static(b"ping"),
            idempotency_key: None,
            deliver_at: None,
        };
        broker.submit(Command::Produce { station: "s".into(), messages: vec![message] }).await.unwrap();
    });
    let started = Instant::now();
    let r = send(&app, post_json("/v1/stations/s/consumer-groups/g/fetch", json!({"wait_ms": 20000}))).await;
    assert!(started.elapsed() < Duration::from_secs(15));
    let msgs = r.ok(200)["messages"].as_array().unwrap().clone();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["payload"], "ping");
    producer.await.unwrap();
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn receipts_ok_stale_unknown() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    send(&app, put_json("/v1/stations/s/consumer-groups/g", json!({}))).await.ok(201);
    send(&app, produce("s", b"a")).await.ok(201);
    send(&app, produce("s", b"b")).await.ok(201);
    let g = "/v1/stations/s/consumer-groups/g";
    let first = receipts(send(&app, post_json(&format!("{g}/fetch"), json!({"max_messages": 1}))).await.ok(200));
    assert_eq!(first.len(), 1);
    let nacked = send(&app, post_json(&format!("{g}/nack"), json!({"receipts": first, "delay_ms": 0}))).await;
    assert_eq!(nacked.ok(200)["results"], json!(["ok"]));
    let again = send(&app, post_json(&format!("{g}/fetch"), json!({"max_messages": 2}))).await;
    let msgs = again.ok(200)["messages"].as_array().unwrap().clone();
    let redelivered = msgs.iter().find(|m| m["offset"] == 0).unwrap();
    assert_eq!(redelivered["attempt"], 2);
    let second = receipts(&again.body);
    assert_eq!(second.len(), 2);

    let extended =
        send(&app, post_json(&format!("{g}/extend"), json!({"receipts": second, "ack_wait_ms": 60000}))).await;
    assert_eq!(extended.ok(200)["results"], json!(["ok", "ok"]));

    let forged = base64_receipt(999, 1);
    let body = json!({"receipts": [first[0], second[0], "not-a-receipt", forged, second[1]]});
    let acked = send(&app, post_json(&format!("{g}/ack"), body)).await;
    assert_eq!(acked.ok(200)["results"], json!(["stale_receipt", "ok", "unknown_receipt", "unknown_receipt", "ok"]));
    let group = send(&app, get(g)).await;
    assert_eq!(group.ok(200)["acked_floor"], 2);
    assert_eq!(group.body["pending"], 0);
    let only_bad = send(&app, post_json(&format!("{g}/ack"), json!({"receipts": ["zz"]}))).await;
    assert_eq!(only_bad.ok(200)["results"], json!(["unknown_receipt"]));
    n.broker.shutdown().await.unwrap();
}

fn base64_receipt(offset: u64, delivery: u64) -> String {
    use base64::Engine;
    let mut raw = offset.to_be_bytes().to_vec();
    raw.extend_from_slice(&delivery.to_be_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn fetch_one(station: &str, group: &str) -> test::TestRequest {
    post_json(&format!("/v1/stations/{station}/consumer-groups/{group}/fetch"), json!({"max_messages": 1}))
}

fn settle(station: &str, group: &str, op: &str, receipts: &[String]) -> test::TestRequest {
    let mut body = json!({ "receipts": receipts });
    if op == "extend" {
        body["ack_wait_ms"] = json!(60_000);
    }
    post_json(&format!("/v1/stations/{station}/consumer-groups/{group}/{op}"), body)
}

const SETTLE_OPS: [&str; 4] = ["ack", "nack", "extend", "dead-letter"];

// Issue 12, item 9: stations rx and ry with group g and one message each handed out the same
// receipt, and rx's receipt acked ry's delivery.
#[actix_web::test]
async fn a_receipt_settles_nothing_on_another_station() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    for s in ["rx", "ry"] {
        send(&app, put_json(&format!("/v1/stations/{s}"), json!({}))).await.ok(201);
        send(&app, put_json(&format!("/v1/stations/{s}/consumer-groups/g"), json!({}))).await.ok(201);
        send(&app, produce(s, b"one")).await.ok(201);
    }
    let rx = receipts(send(&app, fetch_one("rx", "g")).await.ok(200));
    let ry = receipts(send(&app, fetch_one("ry", "g")).await.ok(200));
    assert_eq!((rx.len(), ry.len()), (1, 1));
    assert_ne!(rx, ry, "the same offset and delivery on two stations must not give the same receipt");
    assert!(rx[0].len() <= 64, "receipt of {} chars", rx[0].len());

    for op in SETTLE_OPS {
        let cross = send(&app, settle("ry", "g", op, &rx)).await;
        assert_eq!(cross.ok(200)["results"], json!(["unknown_receipt"]), "{op}");
    }
    let group = send(&app, get("/v1/stations/ry/consumer-groups/g")).await;
    assert_eq!((group.ok(200)["pending"].as_u64(), group.body["acked_floor"].as_u64()), (Some(1), Some(0)));
    assert_eq!(send(&app, settle("ry", "g", "ack", &ry)).await.ok(200)["results"], json!(["ok"]));
    assert_eq!(send(&app, settle("rx", "g", "ack", &rx)).await.ok(200)["results"], json!(["ok"]));
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn a_receipt_settles_nothing_in_another_group() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    for g in ["a", "b"] {
        send(&app, put_json(&format!("/v1/stations/s/consumer-groups/{g}"), json!({}))).await.ok(201);
    }
    send(&app, produce("s", b"one")).await.ok(201);
    let a = receipts(send(&app, fetch_one("s", "a")).await.ok(200));
    let b = receipts(send(&app, fetch_one("s", "b")).await.ok(200));
    assert_ne!(a, b);
    for op in SETTLE_OPS {
        assert_eq!(send(&app, settle("s", "b", op, &a)).await.ok(200)["results"], json!(["unknown_receipt"]), "{op}");
    }
    assert_eq!(send(&app, get("/v1/stations/s/consumer-groups/b")).await.ok(200)["pending"], 1);
    assert_eq!(send(&app, settle("s", "b", "ack", &b)).await.ok(200)["results"], json!(["ok"]));
    assert_eq!(send(&app, settle("s", "a", "ack", &a)).await.ok(200)["results"], json!(["ok"]));
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn a_receipt_settles_nothing_on_a_recreated_station() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    let create = || async {
        send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
        send(&app, put_json("/v1/stations/s/consumer-groups/g", json!({}))).await.ok(201);
        send(&app, produce("s", b"one")).await.ok(201);
        receipts(send(&app, fetch_one("s", "g")).await.ok(200))
    };
    let old = create().await;
    send(&app, delete("/v1/stations/s")).await.ok(204);
    let new = create().await;
    assert_ne!(old, new);
    assert_eq!(send(&app, settle("s", "g", "ack", &old)).await.ok(200)["results"], json!(["unknown_receipt"]));
    assert_eq!(send(&app, get("/v1/stations/s/consumer-groups/g")).await.ok(200)["pending"], 1);
    assert_eq!(send(&app, settle("s", "g", "ack", &new)).await.ok(200)["results"], json!(["ok"]));
    n.broker.shutdown().await.unwrap();
}

/// Receipts a client could make up from a real one: counted, bit-flipped, cut short, extended,
/// or not base64url at all.
fn forgeries(real: &str) -> Vec<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let raw = URL_SAFE_NO_PAD.decode(real).unwrap();
    let mut out = vec![base64_receipt(0, 1), base64_receipt(0, 2), base64_receipt(1, 1)];
    // The real receipt's fields with the next offset or delivery counted on, MAC kept.
    for at in [16, 24] {
        let mut counted = raw.clone();
        let at = at.min(raw.len() - 1);
        counted[at] = counted[at].wrapping_add(1);
        out.push(URL_SAFE_NO_PAD.encode(&counted));
    }
    for bit in (0..raw.len() * 8).step_by(3) {
        let mut flipped = raw.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        out.push(URL_SAFE_NO_PAD.encode(&flipped));
    }
    for len in [0, 1, 16, raw.len() - 1] {
        out.push(URL_SAFE_NO_PAD.encode(&raw[..len]));
    }
    out.push(real[..real.len() - 1].to_owned());
    out.push(format!("{real}A"));
    out.push(format!("{real}AAAA"));
    let mut longer = raw.clone();
    longer.push(0);
    out.push(URL_SAFE_NO_PAD.encode(&longer));
    out.push(base64::engine::general_purpose::STANDARD.encode(&raw) + "=");
    for garbage in ["", "zz", "not-a-receipt", "!!!!", "====", "a b", "é", "\u{0}", "%2F%2F", "/+/+"] {
        out.push(garbage.to_owned());
    }
    out.push("A".repeat(100_000));
    out
}

#[actix_web::test]
async fn forged_receipts_are_unknown_and_never_an_error() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    send(&app, put_json("/v1/stations/s/consumer-groups/g", json!({}))).await.ok(201);
    send(&app, produce("s", b"one")).await.ok(201);
    send(&app, produce("s", b"two")).await.ok(201);
    let real = receipts(send(&app, fetch_one("s", "g")).await.ok(200));
    let forged = forgeries(&real[0]);
    assert!(forged.len() > 40);
    assert!(!forged.contains(&real[0]));

    for op in SETTLE_OPS {
        let batch = send(&app, settle("s", "g", op, &forged)).await;
        assert_eq!(batch.ok(200)["results"], json!(vec!["unknown_receipt"; forged.len()]), "{op}");
    }
    for one in &forged {
        let r = send(&app, settle("s", "g", "ack", std::slice::from_ref(one))).await;
        assert_eq!(r.ok(200)["results"], json!(["unknown_receipt"]), "{one:.80}");
    }
    // Forgeries beside a real receipt: each answered in its own slot.
    let mixed = [forged[..3].to_vec(), real.clone(), forged[3..6].to_vec()].concat();
    let r = send(&app, settle("s", "g", "ack", &mixed)).await;
    let expected = ["unknown_receipt"; 3].iter().chain(&["ok"]).chain(&["unknown_receipt"; 3]).collect::<Vec<_>>();
    assert_eq!(r.ok(200)["results"], json!(expected));
    let group = send(&app, get("/v1/stations/s/consumer-groups/g")).await;
    assert_eq!((group.ok(200)["pending"].as_u64(), group.body["acked_floor"].as_u64()), (Some(0), Some(1)));
    // Forgeries on an unknown station or group still answer 404, never a 5xx.
    send(&app, settle("nope", "g", "ack", &forged[..2])).await.problem(404, "station_not_found");
    send(&app, settle("s", "nope", "ack", &forged[..2])).await.problem(404, "consumer_group_not_found");
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn a_receipt_still_settles_after_a_restart() {
    let n = node().await;
    let fetched = {
        let app = test::init_service(app(n.state())).await;
        send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
        send(&app, put_json("/v1/stations/s/consumer-groups/g", json!({}))).await.ok(201);
        send(&app, produce("s", b"one")).await.ok(201);
        send(&app, produce("s", b"two")).await.ok(201);
        receipts(
            send(&app, post_json("/v1/stations/s/consumer-groups/g/fetch", json!({"max_messages": 2}))).await.ok(200),
        )
    };
    assert_eq!(fetched.len(), 2);
    n.broker.shutdown().await.unwrap();

    let broker = Broker::open(BrokerOptions::new(n.dir.path())).await.unwrap();
    let app = test::init_service(app(AppState::new(broker.clone(), n.auth.clone()))).await;
    assert_eq!(send(&app, settle("s", "g", "ack", &fetched[..1])).await.ok(200)["results"], json!(["ok"]));
    assert_eq!(send(&app, settle("s", "g", "ack", &fetched[..1])).await.ok(200)["results"], json!(["stale_receipt"]));
    let forged = forgeries(&fetched[1]);
    assert_eq!(
        send(&app, settle("s", "g", "ack", &forged[..5])).await.ok(200)["results"],
        json!(vec!["unknown_receipt"; 5])
    );
    assert_eq!(send(&app, settle("s", "g", "ack", &fetched[1..])).await.ok(200)["results"], json!(["ok"]));
    // A receipt sealed after the restart agrees with one sealed before it (one key, replicated).
    send(&app, produce("s", b"three")).await.ok(201);
    let after = receipts(send(&app, fetch_one("s", "g")).await.ok(200));
    assert_eq!(after[0].len(), fetched[0].len());
    assert_eq!(send(&app, settle("s", "g", "ack", &after)).await.ok(200)["results"], json!(["ok"]));
    broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn dead_letter_list_redrive_delete() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    send(&app, put_json("/v1/stations/s/consumer-groups/g1", json!({}))).await.ok(201);
    send(&app, put_json("/v1/stations/s/consumer-groups/g2", json!({}))).await.ok(201);
    send(&app, produce("s", b"{\"x\":1}").insert_header(("content-type", "application/json"))).await.ok(201);
    send(&app, produce("s", b"two")).await.ok(201);
    let g1 = "/v1/stations/s/consumer-groups/g1";
    let g2 = "/v1/stations/s/consumer-groups/g2";
    let r1 = receipts(send(&app, post_json(&format!("{g1}/fetch"), json!({"max_messages": 10}))).await.ok(200));
    let r2 = receipts(send(&app, post_json(&format!("{g2}/fetch"), json!({"max_messages": 10}))).await.ok(200));
    send(&app, post_json(&format!("{g2}/ack"), json!({"receipts": r2}))).await.ok(200);
    let dl = send(&app, post_json(&format!("{g1}/dead-letter"), json!({"receipts": r1, "reason": "bad input"}))).await;
    assert_eq!(dl.ok(200)["results"], json!(["ok", "ok"]));

    let list = send(&app, get("/v1/stations/s/dead-letters?include_payload=true")).await;
    let items = list.ok(200)["dead_letters"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["consumer_group"], "g1");
    assert_eq!(items[0]["reason"], "explicit");
    assert_eq!(items[0]["last_error"], "bad input");
    assert_eq!(items[0]["offset"], 0);
    assert_eq!(items[0]["message"]["payload"], json!({"x": 1}));
    assert!(items[0]["dead_at"].as_str().unwrap().ends_with('Z'));
    let without = send(&app, get("/v1/stations/s/dead-letters")).await;
    assert!(without.ok(200)["dead_letters"][0].get("message").is_none());
    let page = send(&app, get("/v1/stations/s/dead-letters?limit=1")).await;
    let cursor = page.ok(200)["next_cursor"].as_str().unwrap().to_owned();
    let rest = send(&app, get(&format!("/v1/stations/s/dead-letters?limit=1&cursor={cursor}"))).await;
    assert_eq!(rest.ok(200)["dead_letters"][0]["offset"], 1);
    assert!(rest.body.get("next_cursor").is_none());
    let none = send(&app, get("/v1/stations/s/dead-letters?consumer_group=g2")).await;
    assert_eq!(none.ok(200)["dead_letters"], json!([]));
    let by_reason = send(&app, get("/v1/stations/s/dead-letters?reason=max_deliveries")).await;
    assert_eq!(by_reason.ok(200)["dead_letters"], json!([]));
    send(&app, get("/v1/stations/s/dead-letters?reason=bored")).await.problem(400, "invalid_request");
    send(&app, get("/v1/stations/s/dead-letters?wat=1")).await.problem(400, "invalid_request");
    send(&app, get("/v1/stations/nope/dead-letters")).await.problem(404, "station_not_found");

    let second_id = items[1]["id"].as_u64().unwrap();
    send(&app, delete(&format!("/v1/stations/s/dead-letters/{second_id}"))).await.ok(204);
    send(&app, delete(&format!("/v1/stations/s/dead-letters/{second_id}"))).await.problem(404, "dead_letter_not_found");
    send(&app, delete("/v1/stations/s/dead-letters/abc")).await.problem(400, "invalid_request");

    send(&app, post_json("/v1/stations/s/dead-letters/redrive", json!({"ids": [1], "consumer_group": "g1"})))
        .await
        .problem(400, "invalid_body");
    let redriven = send(&app, post_json("/v1/stations/s/dead-letters/redrive", json!({"consumer_group": "g1"}))).await;
    assert_eq!(redriven.ok(200)["redriven"], 1);
    let back = send(&app, post_json(&format!("{g1}/fetch"), json!({"max_messages": 10}))).await;
    let msgs = back.ok(200)["messages"].as_array().unwrap().clone();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["offset"], 0);
    let other = send(&app, post_json(&format!("{g2}/fetch"), json!({"max_messages": 10}))).await;
    assert_eq!(other.ok(200)["messages"], json!([]), "redrive goes to its own group only");
    let left = send(&app, get("/v1/stations/s/dead-letters")).await;
    assert_eq!(left.ok(200)["dead_letters"], json!([]));
    let by_ids = send(&app, post_json("/v1/stations/s/dead-letters/redrive", json!({"ids": [12345]}))).await;
    assert_eq!(by_ids.ok(200)["redriven"], 0);
    n.broker.shutdown().await.unwrap();
}

/// A whole-number float is an integer inside `start`'s alternatives too, as at the top level of a
/// body; fractions, negatives, values out of range and malformed `start`s are still 400.
#[actix_web::test]
async fn start_offset_reads_whole_floats_as_integers() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    let raw = |group: &str, body: &'static str| {
        test::TestRequest::put()
            .uri(&format!("/v1/stations/s/consumer-groups/{group}"))
            .insert_header(("content-type", "application/json"))
            .set_payload(body)
    };
    let g = send(&app, raw("a", r#"{"start": {"offset": 268435455.0}}"#)).await;
    assert_eq!(g.ok(201)["config"]["start"], json!({"offset": 268435455}));
    let g = send(&app, raw("b", r#"{"start": {"offset": 0.0}, "max_deliveries": 3.0}"#)).await;
    assert_eq!(g.ok(201)["config"]["start"], json!({"offset": 0}));
    let g = send(&app, raw("c", r#"{"start": {"time": "2020-01-01T00:00:00Z"}}"#)).await;
    assert_eq!(g.ok(201)["config"]["start"], json!({"time": "2020-01-01T00:00:00.000Z"}));
    let g = send(&app, raw("d", r#"{"start": "latest"}"#)).await;
    assert_eq!(g.ok(201)["config"]["start"], "latest");
    for bad in [
        r#"{"start": {"offset": 1.5}}"#,
        r#"{"start": {"offset": -1.0}}"#,
        r#"{"start": {"offset": 1e300}}"#,
        r#"{"start": {"offset": 18446744073709551616}}"#,
        r#"{"start": {"offset": "1"}}"#,
        r#"{"start": {"offset": 1, "time": "2020-01-01T00:00:00Z"}}"#,
        r#"{"start": {"offset": 1, "offset": 2}}"#,
        r#"{"start": {"at": 1}}"#,
        r#"{"start": {}}"#,
        r#"{"start": "middle"}"#,
        r#"{"start": 1}"#,
        r#"{"start": [1]}"#,
        r#"{"max_deliveries": 4294967296.0}"#,
    ] {
        send(&app, raw("bad", bad)).await.problem(400, "invalid_body");
    }
    send(&app, get("/v1/stations/s/consumer-groups/bad")).await.problem(404, "consumer_group_not_found");
    n.broker.shutdown().await.unwrap();
}
