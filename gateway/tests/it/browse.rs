//! Browsing a station's messages: paging in both orders, single reads, rendering, and that
//! browsing delivers nothing.

use std::collections::BTreeSet;

use crate::common::*;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::test;
use depot_gateway::app;
use serde_json::{json, Value};

fn produce(station: &str, content_type: &str, body: Vec<u8>) -> test::TestRequest {
    test::TestRequest::post()
        .uri(&format!("/v1/stations/{station}/messages"))
        .insert_header(("content-type", content_type.to_owned()))
        .insert_header(("depot-header-trace", "t1"))
        .set_payload(body)
}

/// Produces `count` text messages `m0`, `m1`, ... on a new station `s`.
async fn station_with<S, B>(app: &S, count: usize)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    send(app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    let messages: Vec<Value> = (0..count).map(|i| json!({"payload": format!("m{i}")})).collect();
    if !messages.is_empty() {
        send(app, post_json("/v1/stations/s/messages/batch", json!({"messages": messages}))).await.ok(200);
    }
}

fn offsets(page: &Value) -> Vec<u64> {
    page["messages"].as_array().unwrap().iter().map(|m| m["offset"].as_u64().unwrap()).collect()
}

#[actix_web::test]
async fn ascending_pages_cover_every_offset_once() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    station_with(&app, 25).await;
    let mut seen = Vec::new();
    let mut uri = "/v1/stations/s/messages?limit=7".to_owned();
    let mut pages = 0;
    loop {
        let page = send(&app, get(&uri)).await;
        let body = page.ok(200).clone();
        seen.extend(offsets(&body));
        pages += 1;
        match body.get("next_cursor") {
            Some(cursor) => uri = format!("/v1/stations/s/messages?limit=7&cursor={}", cursor.as_str().unwrap()),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(seen, (0..25).collect::<Vec<_>>());
    // The default page is the first 100 from the first retained offset, and the last page has
    // no cursor.
    let all = send(&app, get("/v1/stations/s/messages")).await;
    assert_eq!(offsets(all.ok(200)), (0..25).collect::<Vec<_>>());
    assert!(all.body.get("next_cursor").is_none(), "{all:?}");
}

#[actix_web::test]
async fn descending_starts_at_the_newest_and_pages_down() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    station_with(&app, 10).await;
    let first = send(&app, get("/v1/stations/s/messages?order=desc&limit=4")).await;
    assert_eq!(offsets(first.ok(200)), vec![9, 8, 7, 6]);
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = send(&app, get(&format!("/v1/stations/s/messages?limit=4&cursor={cursor}"))).await;
    assert_eq!(offsets(second.ok(200)), vec![5, 4, 3, 2]);
    // The cursor keeps its order; repeating it is fine, contradicting it is not.
    send(&app, get(&format!("/v1/stations/s/messages?order=desc&limit=4&cursor={cursor}"))).await.ok(200);
    send(&app, get(&format!("/v1/stations/s/messages?order=asc&limit=4&cursor={cursor}")))
        .await
        .problem(400, "invalid_request");
    let cursor = second.body["next_cursor"].as_str().unwrap().to_owned();
    let last = send(&app, get(&format!("/v1/stations/s/messages?limit=4&cursor={cursor}"))).await;
    assert_eq!(offsets(last.ok(200)), vec![1, 0]);
    assert!(last.body.get("next_cursor").is_none(), "{last:?}");

    // A new message is the first of the next descending page.
    send(&app, produce("s", "text/plain", b"newest".to_vec())).await.ok(201);
    let newest = send(&app, get("/v1/stations/s/messages?order=desc&limit=1")).await;
    assert_eq!(offsets(newest.ok(200)), vec![10]);
    assert_eq!(newest.body["messages"][0]["payload"], "newest");
}

#[actix_web::test]
async fn from_offset_in_both_orders() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    station_with(&app, 10).await;
    let up = send(&app, get("/v1/stations/s/messages?from_offset=6")).await;
    assert_eq!(offsets(up.ok(200)), vec![6, 7, 8, 9]);
    let down = send(&app, get("/v1/stations/s/messages?from_offset=3&order=desc")).await;
    assert_eq!(offsets(down.ok(200)), vec![3, 2, 1, 0]);
    // Past the end: nothing upward; downward from the newest.
    let beyond = send(&app, get("/v1/stations/s/messages?from_offset=50")).await;
    assert_eq!(offsets(beyond.ok(200)), Vec::<u64>::new());
    assert!(beyond.body.get("next_cursor").is_none());
    let down = send(&app, get("/v1/stations/s/messages?from_offset=50&order=desc&limit=2")).await;
    assert_eq!(offsets(down.ok(200)), vec![9, 8]);
    // An empty station has an empty page in both orders.
    send(&app, put_json("/v1/stations/empty", json!({}))).await.ok(201);
    for order in ["asc", "desc"] {
        let page = send(&app, get(&format!("/v1/stations/empty/messages?order={order}"))).await;
        assert_eq!(offsets(page.ok(200)), Vec::<u64>::new());
    }
}

#[actix_web::test]
async fn bad_queries_are_refused() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    station_with(&app, 3).await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "order=up",
        "from_offset=x",
        "from_offset=-1",
        "cursor=!!",
        "cursor=bm90LWEtY3Vyc29y",
        "surprise=1",
    ] {
        send(&app, get(&format!("/v1/stations/s/messages?{query}"))).await.problem(400, "invalid_request");
    }
    send(&app, get("/v1/stations/s/messages?limit=1000")).await.ok(200);
    send(&app, get("/v1/stations/nope/messages")).await.problem(404, "station_not_found");
    send(&app, get("/v1/stations/nope/messages/0")).await.problem(404, "station_not_found");
    send(&app, get("/v1/stations/S!/messages")).await.problem(400, "invalid_name");
    send(&app, get("/v1/stations/s/messages/abc")).await.problem(400, "invalid_request");
}

#[actix_web::test]
async fn single_message_reads_and_not_found() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({"retention": {"max_messages": 3}}))).await.ok(201);
    for i in 0..5u8 {
        send(&app, produce("s", "text/plain", vec![b'a' + i])).await.ok(201);
    }
    // Retention keeps offsets 2, 3 and 4.
    let m = send(&app, get("/v1/stations/s/messages/3")).await;
    let body = m.ok(200);
    assert_eq!(body["offset"], 3);
    assert_eq!(body["station"], "s");
    assert_eq!(body["payload"], "d");
    assert!(body["id"].as_str().unwrap().starts_with("msg_"), "{body}");
    assert!(body.get("receipt").is_none() && body.get("attempt").is_none(), "{body}");
    send(&app, get("/v1/stations/s/messages/0")).await.problem(404, "message_not_found");
    send(&app, get("/v1/stations/s/messages/1")).await.problem(404, "message_not_found");
    send(&app, get("/v1/stations/s/messages/5")).await.problem(404, "message_not_found");
    send(&app, get("/v1/stations/s/messages/18446744073709551615")).await.problem(404, "message_not_found");
    // Upward from a removed offset starts at the first retained one.
    let page = send(&app, get("/v1/stations/s/messages?from_offset=0")).await;
    assert_eq!(offsets(page.ok(200)), vec![2, 3, 4]);
    let page = send(&app, get("/v1/stations/s/messages?from_offset=1&order=desc")).await;
    assert_eq!(offsets(page.ok(200)), Vec::<u64>::new());
    // The page's and the single read's messages are the same, id included.
    let page = send(&app, get("/v1/stations/s/messages?from_offset=3&limit=1")).await;
    assert_eq!(page.ok(200)["messages"][0], m.body);
}

#[actix_web::test]
async fn ids_are_distinct_and_never_reused_by_a_new_station() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    station_with(&app, 3).await;
    let ids = |page: &Value| -> Vec<String> {
        page["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect()
    };
    let before = ids(send(&app, get("/v1/stations/s/messages")).await.ok(200));
    assert_eq!(before.iter().collect::<BTreeSet<_>>().len(), 3);
    send(&app, delete("/v1/stations/s")).await.ok(204);
    station_with(&app, 3).await;
    let after = ids(send(&app, get("/v1/stations/s/messages")).await.ok(200));
    assert!(before.iter().all(|id| !after.contains(id)), "{before:?} {after:?}");
}

#[actix_web::test]
async fn payloads_render_by_content_type() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    send(&app, produce("s", "application/json", br#"{"a":[1,2]}"#.to_vec())).await.ok(201);
    send(&app, produce("s", "text/plain; charset=utf-8", "héllo".as_bytes().to_vec())).await.ok(201);
    send(&app, produce("s", "application/octet-stream", vec![0, 159, 255])).await.ok(201);
    send(&app, produce("s", "application/json", b"{not json".to_vec())).await.ok(201);
    let page = send(&app, get("/v1/stations/s/messages")).await;
    let m = page.ok(200)["messages"].as_array().unwrap().clone();
    assert_eq!(m[0]["payload"], json!({"a": [1, 2]}));
    assert_eq!(m[0]["content_type"], "application/json");
    assert_eq!(m[0]["headers"], json!({"trace": "t1"}));
    assert!(m[0]["produced_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(m[1]["payload"], "héllo");
    assert_eq!(m[2]["payload_base64"], "AJ//");
    assert!(m[2].get("payload").is_none());
    assert_eq!(m[3]["payload_base64"], "e25vdCBqc29u");
}

#[actix_web::test]
async fn a_page_stops_at_8_mib_of_payload() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/big", json!({"max_message_bytes": 5 << 20}))).await.ok(201);
    for _ in 0..3 {
        send(&app, produce("big", "application/octet-stream", vec![7; 3 << 20])).await.ok(201);
    }
    let first = send(&app, get("/v1/stations/big/messages")).await;
    assert_eq!(offsets(first.ok(200)), vec![0, 1]);
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let rest = send(&app, get(&format!("/v1/stations/big/messages?cursor={cursor}"))).await;
    assert_eq!(offsets(rest.ok(200)), vec![2]);
}

#[actix_web::test]
async fn browsing_changes_no_group() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    station_with(&app, 5).await;
    send(&app, put_json("/v1/stations/s/consumer-groups/g", json!({}))).await.ok(201);
    send(&app, post_json("/v1/stations/s/consumer-groups/g/fetch", json!({"max_messages": 2}))).await.ok(200);
    let group = |body: &Value| (body["lag"].clone(), body["pending"].clone(), body["delivered_offset"].clone());
    let before = group(send(&app, get("/v1/stations/s/consumer-groups/g")).await.ok(200));
    send(&app, get("/v1/stations/s/messages")).await.ok(200);
    send(&app, get("/v1/stations/s/messages?order=desc&limit=2")).await.ok(200);
    send(&app, get("/v1/stations/s/messages/4")).await.ok(200);
    let after = group(send(&app, get("/v1/stations/s/consumer-groups/g")).await.ok(200));
    assert_eq!(before, after);
    assert_eq!(before.1, 2);
    let fetched = send(&app, post_json("/v1/stations/s/consumer-groups/g/fetch", json!({"max_messages": 10}))).await;
    assert_eq!(offsets(fetched.ok(200)), vec![2, 3, 4]);
}

#[actix_web::test]
async fn browsing_needs_consume_on_the_station() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    station_with(&app, 2).await;
    send(&app, post_json("/v1/users", json!({"username": "dan", "password": "dan-password", "role": "member"})))
        .await
        .ok(201);
    let login = anonymous(post_json("/v1/auth/token", json!({"username": "dan", "password": "dan-password"})));
    let dan = send(&app, login).await.ok(200)["access_token"].as_str().unwrap().to_owned();
    let key = |actions: Value| {
        bearer(post_json("/v1/api-keys", json!({"name": "k", "scopes": [{"stations": "s", "actions": actions}]})), &dan)
    };
    let producer = send(&app, key(json!(["produce", "manage"]))).await.ok(201)["key"].as_str().unwrap().to_owned();
    let consumer = send(&app, key(json!(["consume"]))).await.ok(201)["key"].as_str().unwrap().to_owned();
    for uri in ["/v1/stations/s/messages", "/v1/stations/s/messages/0"] {
        send(&app, bearer(get(uri), &producer)).await.problem(403, "forbidden");
        send(&app, bearer(get(uri), &consumer)).await.ok(200);
    }
    send(&app, anonymous(get("/v1/stations/s/messages"))).await.problem(401, "unauthorized");
}
