//! Dead-letter pointers flow from the broker's outbox into the metadata store.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::common::*;
use actix_web::test;
use depot_gateway::app;
use depot_gateway::meta::outbox::StoreSink;
use depot_gateway::meta::DeadLetterQuery;
use serde_json::json;

#[actix_web::test]
async fn dead_letters_reach_the_store_once() {
    let n = node().await;
    let store = n.auth.store().clone();
    n.broker.spawn_outbox(StoreSink::new(store.clone()));
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    send(&app, put_json("/v1/stations/s/consumer-groups/g", json!({}))).await.ok(201);
    for body in ["a", "b", "c"] {
        send(&app, test::TestRequest::post().uri("/v1/stations/s/messages").set_payload(body)).await.ok(201);
    }
    let g = "/v1/stations/s/consumer-groups/g";
    let fetched = send(&app, post_json(&format!("{g}/fetch"), json!({"max_messages": 2}))).await;
    let receipts: Vec<_> =
        fetched.ok(200)["messages"].as_array().unwrap().iter().map(|m| m["receipt"].clone()).collect();
    let dl =
        send(&app, post_json(&format!("{g}/dead-letter"), json!({"receipts": receipts, "reason": "bad input"}))).await;
    assert_eq!(dl.ok(200)["results"], json!(["ok", "ok"]));

    let query =
        DeadLetterQuery { station: "s".into(), group: Some("g".into()), limit: 100, ..DeadLetterQuery::default() };
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let page = store.dead_letters(&query).await.unwrap();
        if page.items.len() >= 2 {
            break page;
        }
        assert!(Instant::now() < deadline, "pointers did not reach the store: {page:?}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    };
    let offsets: Vec<u64> = page.items.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, [0, 1]);
    assert!(page.items.iter().all(|p| p.reason == "explicit" && p.last_error.as_deref() == Some("bad input")));
    // The API lists the same records the store received.
    let listed = send(&app, get("/v1/stations/s/dead-letters?consumer_group=g")).await;
    let ids: Vec<u64> =
        listed.ok(200)["dead_letters"].as_array().unwrap().iter().map(|d| d["id"].as_u64().unwrap()).collect();
    let stored: Vec<u64> = page.items.iter().map(|p| p.id).collect();
    assert_eq!(ids, stored);
    n.broker.shutdown().await.unwrap();
}
