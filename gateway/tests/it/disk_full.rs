//! A data dir on a small tmpfs that this test mounts itself (CI runs as root), filled by a
//! ballast file: produce answers 507 `storage_full` before the disk is actually full, `/readyz`
//! says why, stored messages can still be fetched and acked, and once the ballast is gone the
//! node takes messages again without a restart. Without the watermark the disk really fills:
//! the Raft core stops on the write error and is rebuilt from disk once there is space, with no
//! 500 on the way. No acknowledged message is lost.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use crate::e2e::*;
use depot_tests::serial::Heavy;
use serde_json::{json, Value};

fn produce(server: &Server, body: &[u8]) -> Response {
    send(server.addr, Some(&server.token), "POST", "/v1/stations/big/messages", &[("Content-Type", "text/plain")], body)
}

#[test]
fn produce_is_refused_under_the_watermark_and_resumes_when_space_is_freed() {
    let _heavy = Heavy::take();
    let fs = Tmpfs::mount("256m");
    let data: PathBuf = fs.path().join("data");
    let server = start(&data, &[]);
    assert_eq!(server.json("PUT", "/v1/stations/big", None).status, 201);
    assert_eq!(server.json("PUT", "/v1/stations/big/consumer-groups/g", None).status, 201);

    // The automatic watermark on 256 MiB is its floor, 64 MiB: leave 12 MiB above it.
    let watermark = 64u64 << 20;
    let ballast = fs.path().join("ballast");
    write_ballast(&ballast, free_bytes(fs.path()) - watermark - (12 << 20));

    let payload = vec![b'x'; 256 << 10];
    let mut acknowledged = 0u64;
    let refused = loop {
        let r = produce(&server, &payload);
        match r.status {
            201 => acknowledged += 1,
            _ => break r,
        }
        assert!(acknowledged < 200, "200 messages of 256 KiB taken with 12 MiB above the watermark");
    };
    refused.problem(507, "storage_full");
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
    assert!(acknowledged > 0, "refused before anything was written: the ballast left too little");
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(detail.contains("below the watermark"), "{detail}");

    let ready = send(server.addr, None, "GET", "/readyz", &[], b"");
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(ready.body["reason"].as_str().unwrap().contains("storage full"), "{ready:?}");
    assert_eq!(send(server.addr, None, "GET", "/livez", &[], b"").status, 200);

    // What is stored can be read and acked: acks still find room.
    let station = server.json("GET", "/v1/stations/big", None);
    assert_eq!(station.status, 200, "{station:?}");
    assert_eq!(station.body["stats"]["messages"], json!(acknowledged), "{station:?}");
    let fetched = server.json("POST", "/v1/stations/big/consumer-groups/g/fetch", Some(&json!({"max_messages": 3})));
    assert_eq!(fetched.status, 200, "{fetched:?}");
    let receipts: Vec<Value> =
        fetched.body["messages"].as_array().unwrap().iter().map(|m| m["receipt"].clone()).collect();
    assert!(!receipts.is_empty(), "{fetched:?}");
    let acked = server.json("POST", "/v1/stations/big/consumer-groups/g/ack", Some(&json!({"receipts": receipts})));
    assert_eq!(acked.status, 200, "{acked:?}");
    assert!(acked.body["results"].as_array().unwrap().iter().all(|r| r == "ok"), "{acked:?}");

    // Space freed: produce works again within 10 s, without a restart.
    std::fs::remove_file(&ballast).unwrap();
    eventually(Duration::from_secs(10), "produce to work again after space was freed", || {
        (produce(&server, b"after").status == 201).then_some(())
    });
    acknowledged += 1;
    assert_eq!(send(server.addr, None, "GET", "/readyz", &[], b"").status, 200);
    let station = server.json("GET", "/v1/stations/big", None);
    assert_eq!(station.body["stats"]["messages"], json!(acknowledged), "{station:?}");
}

#[test]
fn a_really_full_disk_answers_507_and_the_node_recovers_without_a_restart() {
    let _heavy = Heavy::take();
    let fs = Tmpfs::mount("96m");
    let data: PathBuf = fs.path().join("data");
    let server = start(&data, &[("DEPOT_DISK_FREE_MIN", "off")]);
    assert_eq!(server.json("PUT", "/v1/stations/big", None).status, 201);

    let ballast = fs.path().join("ballast");
    write_ballast(&ballast, free_bytes(fs.path()) - (6 << 20));

    let payload = vec![b'x'; 256 << 10];
    let mut acknowledged = 0u64;
    let mut refused = 0u64;
    while refused < 5 {
        let r = produce(&server, &payload);
        match r.status {
            201 => acknowledged += 1,
            507 => {
                r.problem(507, "storage_full");
                refused += 1;
            }
            503 => refused += 1,
            _ => panic!("a full disk answered {r:?}"),
        }
        assert!(acknowledged < 100, "100 messages of 256 KiB fitted in 6 MiB");
    }
    assert!(acknowledged > 0, "the ballast left no room at all");
    let ready = send(server.addr, None, "GET", "/readyz", &[], b"");
    assert_eq!(ready.status, 503, "{ready:?}");
    // A read answers what was stored, or 503/507 while the state is rebuilt: never less than
    // was acknowledged, never a 500.
    let station = server.json("GET", "/v1/stations/big", None);
    match station.status {
        200 => assert!(station.body["stats"]["messages"].as_u64().unwrap() >= acknowledged, "{station:?}"),
        503 | 507 => assert!(station.header("retry-after").is_some(), "{station:?}"),
        _ => panic!("a read during a full disk answered {station:?}"),
    }

    std::fs::remove_file(&ballast).unwrap();
    eventually(Duration::from_secs(10), "produce to work again after space was freed", || {
        (produce(&server, b"after").status == 201).then_some(())
    });
    assert_eq!(send(server.addr, None, "GET", "/readyz", &[], b"").status, 200);
    let station = server.json("GET", "/v1/stations/big", None);
    let stored = station.body["stats"]["messages"].as_u64().unwrap();
    // Refused writes had an unknown outcome (a record may have reached the disk before the
    // failure); acknowledged ones are all there.
    assert!(
        stored > acknowledged && stored <= acknowledged + 1 + refused,
        "{stored} stored, {acknowledged} acknowledged"
    );
}
