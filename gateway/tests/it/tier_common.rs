//! What the single-node tiering tests share: identifiable payloads, reading them back, the
//! station's figures, /metrics and the bucket's objects.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use depot_tests::s3::S3Server;
use serde_json::{json, Value};

use crate::e2e::Server;

/// About 1 KiB that names its offset, with every byte value.
pub fn payload(offset: u64) -> Vec<u8> {
    let mut p = format!("{offset:06}:").into_bytes();
    p.extend((0..1000u64).map(|i| ((i * 7 + offset) % 256) as u8));
    p
}

/// The payload of a message as the API shows it (binary content: base64).
pub fn decoded(message: &Value) -> Vec<u8> {
    STANDARD.decode(message["payload_base64"].as_str().unwrap_or_else(|| panic!("no payload in {message}"))).unwrap()
}

/// The messages of `offsets`, [`payload`]s, in batches of `per_batch`.
pub fn produce_range(server: &Server, station: &str, offsets: std::ops::Range<u64>, per_batch: usize) {
    for chunk in offsets.collect::<Vec<_>>().chunks(per_batch) {
        let messages: Vec<Value> =
            chunk.iter().map(|&i| json!({"payload_base64": STANDARD.encode(payload(i))})).collect();
        let r = server.json(
            "POST",
            &format!("/v1/stations/{station}/messages/batch"),
            Some(&json!({"messages": messages})),
        );
        assert_eq!(r.status, 200, "{r:?}");
    }
}

pub fn stats(server: &Server, station: &str) -> Value {
    let r = server.json("GET", &format!("/v1/stations/{station}"), None);
    assert_eq!(r.status, 200, "{r:?}");
    r.body["stats"].clone()
}

/// One figure of `/metrics`.
pub fn metric(server: &Server, name: &str) -> i64 {
    let text = String::from_utf8_lossy(&server.json("GET", "/metrics", None).raw).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// The keys of the tiered objects in `bucket`.
pub fn dseg_objects(s3: &S3Server, bucket: &str) -> Vec<String> {
    s3.objects(bucket).into_iter().map(|(k, _)| k).filter(|k| k.ends_with(".dseg")).collect()
}

/// Every page of a browse of `station` (`query` without `limit`), following `next_cursor`.
pub fn browse_all(server: &Server, station: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = format!("/v1/stations/{station}/messages?limit=97&{query}");
    loop {
        let r = server.json("GET", &path, None);
        assert_eq!(r.status, 200, "{r:?}");
        out.extend(r.body["messages"].as_array().unwrap().iter().cloned());
        match r.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/stations/{station}/messages?limit=97&cursor={cursor}"),
            None => return out,
        }
    }
}
