#![allow(clippy::unwrap_used)]

use crate::common::*;
use actix_web::test;
use depot_gateway::app;
use serde_json::json;

#[actix_web::test]
async fn station_lifecycle() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;

    let created = send(&app, test::TestRequest::put().uri("/v1/stations/orders")).await;
    let s = created.ok(201);
    assert_eq!(s["name"], "orders");
    assert_eq!(s["config"]["retention"]["max_age_ms"], 7 * 24 * 3600 * 1000u64);
    assert_eq!(s["config"]["replicas"], 1);
    assert_eq!(s["config"]["dedup_window_ms"], 120000);
    assert_eq!(s["config"]["max_message_bytes"], 1 << 20);
    assert_eq!(s["config"]["dead_letter"]["enabled"], true);
    assert_eq!(s["stats"]["messages"], 0);
    assert!(s["created_at"].as_str().unwrap().ends_with('Z'));

    let same = send(&app, put_json("/v1/stations/orders", json!({}))).await;
    same.ok(200);
    let updated = send(
        &app,
        put_json(
            "/v1/stations/orders",
            json!({"retention": {"max_age_ms": null, "max_messages": 10}, "dedup_window_ms": 5000}),
        ),
    )
    .await;
    let s = updated.ok(200);
    assert_eq!(s["config"]["retention"]["max_age_ms"], serde_json::Value::Null);
    assert_eq!(s["config"]["retention"]["max_messages"], 10);
    assert_eq!(s["config"]["dedup_window_ms"], 5000);

    let got = send(&app, get("/v1/stations/orders")).await;
    assert_eq!(got.ok(200)["config"]["dedup_window_ms"], 5000);

    send(&app, delete("/v1/stations/orders")).await.ok(204);
    send(&app, get("/v1/stations/orders")).await.problem(404, "station_not_found");
    send(&app, delete("/v1/stations/orders")).await.problem(404, "station_not_found");
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn station_errors() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/Bad%20Name", json!({}))).await.problem(400, "invalid_name");
    send(&app, put_json("/v1/stations/_x", json!({}))).await.problem(400, "invalid_name");
    send(&app, get("/v1/stations/UPPER")).await.problem(400, "invalid_name");
    send(&app, put_json("/v1/stations/a", json!({"bogus": 1}))).await.problem(400, "invalid_body");
    send(&app, put_json("/v1/stations/a", json!({"retention": {"nope": true}}))).await.problem(400, "invalid_body");
    // Objects are objects: serde alone would read `[null, null]` as a struct's fields.
    send(&app, put_json("/v1/stations/a", json!({"dead_letter": [null, null]}))).await.problem(400, "invalid_body");
    send(&app, put_json("/v1/stations/a", json!([1]))).await.problem(400, "invalid_body");
    // Integers: a fraction or a value past u64::MAX is refused (a whole float is read as integer).
    send(&app, put_json("/v1/stations/a", json!({"dedup_window_ms": 1.5}))).await.problem(400, "invalid_body");
    let past_u64 = test::TestRequest::put()
        .uri("/v1/stations/a")
        .insert_header(("content-type", "application/json"))
        .set_payload(r#"{"dedup_window_ms": 18446744073709551616}"#);
    send(&app, past_u64).await.problem(400, "invalid_body");
    let malformed = test::TestRequest::put()
        .uri("/v1/stations/a")
        .insert_header(("content-type", "application/json"))
        .set_payload("{not json");
    send(&app, malformed).await.problem(400, "invalid_body");
    let too_many = send(&app, put_json("/v1/stations/a", json!({"replicas": 3}))).await;
    too_many.problem(400, "invalid_request");
    assert!(too_many.body["detail"].as_str().unwrap().contains("voter"));
    send(&app, put_json("/v1/stations/a", json!({"replicas": 2}))).await.problem(400, "invalid_request");
    send(&app, put_json("/v1/stations/a", json!({"max_message_bytes": 0}))).await.problem(400, "invalid_request");
    let huge = test::TestRequest::put().uri("/v1/stations/a").set_payload(vec![b' '; 128 * 1024]);
    send(&app, huge).await.problem(413, "payload_too_large");
    send(&app, get("/v1/nothing/here")).await.problem(404, "not_found");
    send(&app, get("/v1/stations?limit=0")).await.problem(400, "invalid_request");
    send(&app, get("/v1/stations?limit=1001")).await.problem(400, "invalid_request");
    send(&app, get("/v1/stations?cursor=%%%")).await.problem(400, "invalid_request");
    send(&app, get("/v1/stations?limit=abc")).await.problem(400, "invalid_request");
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn whole_number_floats_read_as_integers() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    let body = json!({"max_message_bytes": 1024.0, "retention": {"max_messages": 18446744073709551615u64}});
    let created = send(&app, put_json("/v1/stations/f", body)).await;
    assert_eq!(created.ok(201)["config"]["max_message_bytes"], 1024);
    assert_eq!(created.body["config"]["retention"]["max_messages"], u64::MAX);
    let group = json!({"ack_wait_ms": 17901.0, "max_deliveries": 4.0});
    let g = send(&app, put_json("/v1/stations/f/consumer-groups/g", group)).await;
    assert_eq!(g.ok(201)["config"]["ack_wait_ms"], 17901);
    let batch = json!({"messages": [{"payload": {"n": 2.5}, "delay_ms": 0.0}]});
    let stored = send(&app, post_json("/v1/stations/f/messages/batch", batch)).await;
    assert_eq!(stored.ok(200)["results"][0]["offset"], 0);
    send(&app, get("/v1/stations?cursor=")).await.ok(200);
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn station_list_pages() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    for name in ["c", "a", "e", "b", "d"] {
        send(&app, put_json(&format!("/v1/stations/{name}"), json!({}))).await.ok(201);
    }
    let mut seen = Vec::new();
    let mut uri = "/v1/stations?limit=2".to_owned();
    loop {
        let page = send(&app, get(&uri)).await;
        let body = page.ok(200);
        for s in body["stations"].as_array().unwrap() {
            seen.push(s["name"].as_str().unwrap().to_owned());
        }
        match body.get("next_cursor").and_then(|c| c.as_str()) {
            Some(c) => uri = format!("/v1/stations?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    let all = send(&app, get("/v1/stations")).await;
    assert_eq!(all.ok(200)["stations"].as_array().unwrap().len(), 5);
    assert!(all.body.get("next_cursor").is_none());
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn ops_endpoints() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    assert_eq!(send(&app, get("/livez")).await.ok(200)["status"], "ok");
    assert_eq!(send(&app, get("/readyz")).await.ok(200)["status"], "ok");
    let doc = send(&app, get("/openapi.json")).await;
    assert_eq!(doc.ok(200)["openapi"], "3.1.0");
    assert!(doc.body["paths"]["/v1/stations/{station}/messages"].is_object());
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn docs_are_served_locally() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    let redirect = send(&app, get("/docs")).await;
    assert_eq!(redirect.status.as_u16(), 308);
    assert_eq!(redirect.headers.get("location").unwrap(), "/docs/");
    let page = send(&app, get("/docs/")).await;
    assert_eq!(page.status.as_u16(), 200);
    let html = String::from_utf8_lossy(&page.raw);
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(!html.contains("https://"), "assets must not come from a CDN");
    let init = send(&app, get("/docs/swagger-initializer.js")).await;
    assert_eq!(init.status.as_u16(), 200);
    assert!(String::from_utf8_lossy(&init.raw).contains("/openapi.json"));
    let css = send(&app, get("/docs/swagger-ui.css")).await;
    assert_eq!(css.status.as_u16(), 200);
    n.broker.shutdown().await.unwrap();
}

#[actix_web::test]
async fn a_cluster_of_one_reports_itself_and_refuses_membership_changes_without_a_cluster_port() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    let view = send(&app, get("/v1/cluster")).await;
    let body = view.ok(200);
    assert_eq!(body["node_id"], 1);
    assert_eq!(body["leader_id"], 1);
    assert_eq!(body["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(body["nodes"][0]["role"], "voter");
    assert_eq!(body["nodes"][0]["reachable"], true);
    let add = json!({"id": 2, "api_addr": "127.0.0.1:4445", "cluster_addr": "127.0.0.1:6223"});
    send(&app, post_json("/v1/cluster/nodes", add)).await.problem(409, "membership_conflict");
    send(&app, delete("/v1/cluster/nodes/1")).await.problem(409, "membership_conflict");
    for bad in ["", "no-port", "host:0", "host:65536", ":80", "a b:80"] {
        let body = json!({"id": 2, "api_addr": bad, "cluster_addr": "127.0.0.1:6223"});
        send(&app, post_json("/v1/cluster/nodes", body)).await.problem(400, "invalid_body");
    }
    let body = json!({"id": 0, "api_addr": "127.0.0.1:4445", "cluster_addr": "127.0.0.1:6223"});
    send(&app, post_json("/v1/cluster/nodes", body)).await.problem(400, "invalid_body");
    send(&app, delete("/v1/cluster/nodes/x")).await.problem(400, "invalid_request");
    // Administrators only: without credentials, 401.
    let r = send(&app, anonymous(get("/v1/cluster"))).await;
    assert_eq!(r.status.as_u16(), 401);
}
