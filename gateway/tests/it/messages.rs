#![allow(clippy::unwrap_used)]

use crate::common::*;
use actix_web::test;
use depot_gateway::app;
use serde_json::json;

fn produce(station: &str, body: &'static [u8]) -> test::TestRequest {
    test::TestRequest::post().uri(&format!("/v1/stations/{station}/messages")).set_payload(body)
}

#[actix_web::test]
async fn single_produce_stores_payload_headers_and_type() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    send(&app, put_json("/v1/stations/s/consumer-groups/g", json!({}))).await.ok(201);

    let r = send(
        &app,
        produce("s", b"{\"a\":1}")
            .insert_header(("content-type", "application/json"))
            .insert_header(("depot-header-Trace-Id", "t1"))
            .insert_header(("authorization", format!("Bearer {}", n.admin_token)))
            .insert_header(("cookie", "c=1"))
            .insert_header(("x-other", "no")),
    )
    .await;
    let b = r.ok(201);
    assert_eq!(b["offset"], 0);
    assert_eq!(b["duplicate"], false);
    assert!(b.get("deliver_at").is_none());
    send(&app, produce("s", b"hello").insert_header(("content-type", "text/plain"))).await.ok(201);
    send(&app, produce("s", b"\x00\x01")).await.ok(201);

    let f = send(&app, post_json("/v1/stations/s/consumer-groups/g/fetch", json!({"max_messages": 10}))).await;
    let msgs = f.ok(200)["messages"].as_array().unwrap().clone();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[0]["payload"], json!({"a": 1}));
    assert_eq!(msgs[0]["content_type"], "application/json");
    assert_eq!(msgs[0]["headers"], json!({"trace-id": "t1"}));
    assert_eq!(msgs[0]["attempt"], 1);
    assert!(msgs[0]["produced_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(msgs[1]["payload"], "hello");
    assert_eq!(msgs[2]["content_type"], "application/octet-stream");
    assert_eq!(msgs[2]["payload_base64"], "AAE=");
    assert!(msgs[2].get("payload").is_none());
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn single_produce_errors() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, produce("nope", b"x")).await.problem(404, "station_not_found");
    send(&app, produce("No", b"x")).await.problem(400, "invalid_name");
    send(&app, put_json("/v1/stations/small", json!({"max_message_bytes": 4}))).await.ok(201);
    send(&app, produce("small", b"12345")).await.problem(413, "payload_too_large");
    send(&app, produce("small", b"1234")).await.ok(201);
    let key = "k".repeat(257);
    send(&app, produce("small", b"1").insert_header(("idempotency-key", key))).await.problem(400, "invalid_request");
    send(&app, produce("small", b"1").insert_header(("depot-delay", "soon"))).await.problem(400, "invalid_request");
    send(&app, produce("small", b"1").insert_header(("depot-deliver-at", "tomorrow")))
        .await
        .problem(400, "invalid_request");
    // Both headers: the later of the two times applies.
    let far = (chrono::Utc::now() + chrono::Duration::days(300)).format("%Y-%m-%dT00:00:00Z").to_string();
    let both =
        produce("small", b"1").insert_header(("depot-delay", "5")).insert_header(("depot-deliver-at", far.as_str()));
    assert_eq!(send(&app, both).await.ok(201)["deliver_at"], far.replace(":00Z", ":00.000Z"));
    let both = produce("small", b"1")
        .insert_header(("depot-delay", "5"))
        .insert_header(("depot-deliver-at", "2000-01-01T00:00:00Z"));
    let later = send(&app, both).await.ok(201)["deliver_at"].as_str().unwrap().to_owned();
    assert!(later.as_str() > "2020-01-01", "{later}");
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn idempotency_duplicate_and_reuse() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    send(&app, produce("s", b"zero")).await.ok(201);
    let first = send(&app, produce("s", b"one").insert_header(("idempotency-key", "k1"))).await;
    assert_eq!(first.ok(201)["offset"], 1);
    let again = send(&app, produce("s", b"one").insert_header(("idempotency-key", "k1"))).await;
    let b = again.ok(200);
    assert_eq!(b["offset"], 1);
    assert_eq!(b["duplicate"], true);
    send(&app, produce("s", b"other").insert_header(("idempotency-key", "k1")))
        .await
        .problem(422, "idempotency_key_reused");
    let st = send(&app, get("/v1/stations/s")).await;
    assert_eq!(st.ok(200)["stats"]["messages"], 2);
    assert_eq!(st.body["stats"]["last_offset"], 1);
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn batch_judges_each_item() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({"max_message_bytes": 16}))).await.ok(201);
    send(&app, put_json("/v1/stations/s/consumer-groups/g", json!({}))).await.ok(201);
    let body = json!({"messages": [
        {"payload": {"n": 1}},
        {"payload_base64": "aGk=", "content_type": "text/plain", "headers": {"K": "v"}},
        {"payload": 1, "payload_base64": "aGk="},
        {},
        {"payload_base64": "!!!"},
        {"payload": "x".repeat(40)},
        {"payload": 2, "idempotency_key": "k"},
        {"payload": 3, "idempotency_key": "k"},
        {"payload": 4, "delay_ms": 60000},
    ]});
    let r = send(&app, post_json("/v1/stations/s/messages/batch", body)).await;
    let results = r.ok(200)["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 9);
    assert_eq!(results[0], json!({"offset": 0, "duplicate": false}));
    assert_eq!(results[1], json!({"offset": 1, "duplicate": false}));
    assert_eq!(results[2]["error"]["code"], "invalid_request");
    assert_eq!(results[3]["error"]["code"], "invalid_request");
    assert_eq!(results[4]["error"]["code"], "invalid_request");
    assert_eq!(results[5]["error"]["code"], "payload_too_large");
    assert_eq!(results[6], json!({"offset": 2, "duplicate": false}));
    assert_eq!(results[7]["error"]["code"], "idempotency_key_reused");
    assert_eq!(results[8], json!({"offset": 3, "duplicate": false}));

    let f = send(&app, post_json("/v1/stations/s/consumer-groups/g/fetch", json!({"max_messages": 10}))).await;
    let msgs = f.ok(200)["messages"].as_array().unwrap().clone();
    assert_eq!(msgs.len(), 3, "the delayed message is not delivered yet: {msgs:?}");
    assert_eq!(msgs[0]["payload"], json!({"n": 1}));
    assert_eq!(msgs[0]["content_type"], "application/json");
    assert_eq!(msgs[1]["payload"], "hi");
    assert_eq!(msgs[1]["headers"], json!({"k": "v"}));

    send(&app, post_json("/v1/stations/nope/messages/batch", json!({"messages": [{"payload": 1}]})))
        .await
        .problem(404, "station_not_found");
    send(&app, post_json("/v1/stations/nope/messages/batch", json!({"messages": [{}]})))
        .await
        .problem(404, "station_not_found");
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn batch_limits() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    let items: Vec<_> = (0..1001).map(|i| json!({"payload": i})).collect();
    send(&app, post_json("/v1/stations/s/messages/batch", json!({"messages": items})))
        .await
        .problem(400, "invalid_request");
    send(&app, post_json("/v1/stations/s/messages/batch", json!({"messages": []})))
        .await
        .problem(400, "invalid_request");
    let big = "x".repeat(16 << 20);
    send(&app, post_json("/v1/stations/s/messages/batch", json!({"messages": [{"payload": big}]})))
        .await
        .problem(413, "payload_too_large");
    send(&app, post_json("/v1/stations/s/messages/batch", json!({"messages": [{"payload": 1, "extra": 2}]})))
        .await
        .problem(400, "invalid_body");
    send(&app, post_json("/v1/stations/s/messages/batch", json!({"messages": [], "more": 1})))
        .await
        .problem(400, "invalid_body");
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn delayed_message_waits_for_its_time() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    send(&app, put_json("/v1/stations/s/consumer-groups/g", json!({}))).await.ok(201);
    let before = n.broker.now();
    let r = send(&app, produce("s", b"later").insert_header(("depot-delay", "300"))).await;
    let deliver_at = r.ok(201)["deliver_at"].as_str().unwrap().to_owned();
    let at = chrono::DateTime::parse_from_rfc3339(&deliver_at).unwrap().timestamp_millis();
    assert!(at >= before + 300, "{deliver_at}");

    let now = send(&app, post_json("/v1/stations/s/consumer-groups/g/fetch", json!({}))).await;
    assert!(now.ok(200)["messages"].as_array().unwrap().is_empty());
    let waited = send(&app, post_json("/v1/stations/s/consumer-groups/g/fetch", json!({"wait_ms": 10000}))).await;
    let msgs = waited.ok(200)["messages"].as_array().unwrap().clone();
    assert_eq!(msgs.len(), 1);
    assert!(n.broker.now() >= at);

    let far = (chrono::Utc::now() + chrono::Duration::days(300)).format("%Y-%m-%dT00:00:00Z").to_string();
    let r = send(&app, produce("s", b"x").insert_header(("depot-deliver-at", far.as_str()))).await;
    assert_eq!(r.ok(201)["deliver_at"], far.replace(":00Z", ":00.000Z"));
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn whole_floats_convert_only_where_an_integer_is_wanted() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    send(&app, put_json("/v1/stations/s/consumer-groups/g", json!({}))).await.ok(201);
    let batch = r#"{"messages": [{"payload": {"price": 10.0, "big": 9007199254740993.0}, "delay_ms": 0.0}]}"#;
    let r = send(&app, test::TestRequest::post().uri("/v1/stations/s/messages/batch").set_payload(batch)).await;
    assert_eq!(r.ok(200)["results"][0]["offset"], 0, "{r:?}");
    let f = send(&app, post_json("/v1/stations/s/consumer-groups/g/fetch", json!({}))).await;
    let raw = String::from_utf8_lossy(&f.raw).into_owned();
    assert!(raw.contains("\"price\":10.0"), "a float in a free-form payload was rewritten: {raw}");
    // Past 2^53 a whole float is not exact: refused where an integer is wanted.
    send(&app, post_json("/v1/stations/s/consumer-groups/g/fetch", json!({"max_messages": 9007199254740994.0_f64})))
        .await
        .problem(400, "invalid_body");
}

/// Every way to delay a message is bounded by `max_delay_ms` (default 365 days): past it, 400
/// (or the batch item's `invalid_request`), never a wrapped or saturated time.
#[actix_web::test]
async fn delays_past_the_maximum_are_refused() {
    const MAX: u64 = 365 * 24 * 3600 * 1000;
    assert_eq!(depot_gateway::DEFAULT_MAX_DELAY_MS, MAX);
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    let delayed = |ms: String| produce("s", b"x").insert_header(("depot-delay", ms));
    for bad in [i64::MAX.to_string(), u64::MAX.to_string(), (MAX + 1).to_string()] {
        let r = send(&app, delayed(bad.clone())).await;
        r.problem(400, "invalid_request");
        assert!(r.body["detail"].as_str().unwrap().contains("longest delay"), "{bad}: {r:?}");
    }
    send(&app, delayed("18446744073709551616".to_owned())).await.problem(400, "invalid_request");
    send(&app, delayed("-1".to_owned())).await.problem(400, "invalid_request");
    for ok in [MAX, MAX - 1] {
        let before = n.broker.now();
        let r = send(&app, delayed(ok.to_string())).await;
        let at = r.ok(201)["deliver_at"].as_str().unwrap().to_owned();
        let at = chrono::DateTime::parse_from_rfc3339(&at).unwrap().timestamp_millis();
        assert!(at >= before + ok as i64 && at <= n.broker.now() + ok as i64, "{ok}: {r:?}");
    }

    let deliver_at = |days: i64| {
        let at = (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339();
        produce("s", b"x").insert_header(("depot-deliver-at", at))
    };
    send(&app, deliver_at(366)).await.problem(400, "invalid_request");
    send(&app, produce("s", b"x").insert_header(("depot-deliver-at", "9999-12-31T23:59:59Z")))
        .await
        .problem(400, "invalid_request");
    send(&app, deliver_at(364)).await.ok(201);
    send(&app, deliver_at(-1)).await.ok(201);

    let batch = json!({"messages": [
        {"payload": 1, "delay_ms": i64::MAX},
        {"payload": 2, "delay_ms": MAX + 1},
        {"payload": 3, "delay_ms": MAX},
    ]});
    let r = send(&app, post_json("/v1/stations/s/messages/batch", batch)).await;
    let results = r.ok(200)["results"].as_array().unwrap().clone();
    assert_eq!(results[0]["error"]["code"], "invalid_request", "{r:?}");
    assert_eq!(results[1]["error"]["code"], "invalid_request", "{r:?}");
    assert!(results[2]["offset"].is_u64(), "{r:?}");

    let group = |backoff: u64| json!({"backoff_ms": [1000, backoff]});
    send(&app, put_json("/v1/stations/s/consumer-groups/g", group(MAX + 1))).await.problem(400, "invalid_request");
    send(&app, put_json("/v1/stations/s/consumer-groups/g", group(MAX))).await.ok(201);
    let fetched = send(&app, post_json("/v1/stations/s/consumer-groups/g/fetch", json!({"max_messages": 1}))).await;
    let receipt = fetched.ok(200)["messages"][0]["receipt"].clone();
    let nack = |delay: u64| json!({"receipts": [receipt.clone()], "delay_ms": delay});
    send(&app, post_json("/v1/stations/s/consumer-groups/g/nack", nack(i64::MAX as u64)))
        .await
        .problem(400, "invalid_request");
    send(&app, post_json("/v1/stations/s/consumer-groups/g/nack", nack(MAX + 1))).await.problem(400, "invalid_request");
    let r = send(&app, post_json("/v1/stations/s/consumer-groups/g/nack", nack(MAX))).await;
    assert_eq!(r.ok(200)["results"], json!(["ok"]));
    n.broker.shutdown().await.unwrap();
}

/// `max_delay_ms` is a setting: a node configured with a shorter one refuses past it.
#[actix_web::test]
async fn the_maximum_delay_is_configurable() {
    let n = node().await;
    let config = depot_gateway::GatewayConfig { max_delay_ms: 1000, ..Default::default() };
    let app = test::init_service(app(n.state_with(config))).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    send(&app, produce("s", b"x").insert_header(("depot-delay", "1001"))).await.problem(400, "invalid_request");
    send(&app, produce("s", b"x").insert_header(("depot-delay", "1000"))).await.ok(201);
    n.broker.shutdown().await.unwrap();
}
