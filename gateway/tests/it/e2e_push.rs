//! Push delivery and REST hooks end to end: the real `depot dev` binary delivers to real local
//! HTTP receivers (the test kit's), and every delivery's signature is checked by the Standard
//! Webhooks reference library for Python, not by Depot's code.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::e2e::*;
use depot_tests::receiver::{Behaviour, Receiver, Recorded};
use depot_tests::webhooks::verify_standard_webhooks;
use serde_json::{json, Value};

const WITHIN: Duration = Duration::from_secs(20);

fn put(server: &Server, path: &str, body: Value) -> Value {
    let r = server.json("PUT", path, Some(&body));
    assert!(r.status == 201 || r.status == 200, "PUT {path}: {r:?}");
    r.body
}

fn produce(server: &Server, station: &str, body: &[u8]) -> u64 {
    let path = format!("/v1/stations/{station}/messages");
    let r = send(server.addr, Some(&server.token), "POST", &path, &[("Content-Type", "application/json")], body);
    assert_eq!(r.status, 201, "{r:?}");
    r.body["offset"].as_u64().unwrap()
}

fn group(server: &Server, station: &str, group: &str) -> Value {
    let r = server.json("GET", &format!("/v1/stations/{station}/consumer-groups/{group}"), None);
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

/// A station and a push group on it delivering to `url`; answers the PUT's body.
fn push_group(server: &Server, station: &str, name: &str, config: Value) -> Value {
    put(server, &format!("/v1/stations/{station}"), json!({}));
    put(server, &format!("/v1/stations/{station}/consumer-groups/{name}"), config)
}

/// Each request as the verifier takes it.
fn signed(requests: &[Recorded]) -> Vec<(String, String, String, Vec<u8>)> {
    requests
        .iter()
        .map(|r| {
            let h = |n: &str| r.header(n).unwrap_or_else(|| panic!("no {n} header in {r:?}")).to_owned();
            (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"), r.body.clone())
        })
        .collect()
}

fn settled(server: &Server, station: &str, name: &str) -> Value {
    eventually(WITHIN, "the group has nothing left to deliver", || {
        let g = group(server, station, name);
        (g["lag"] == 0 && g["pending"] == 0).then_some(g)
    })
}

#[test]
fn a_failing_receiver_gets_the_message_again_after_each_backoff_step_until_it_acks() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let receiver = Receiver::start(Behaviour::FailThenOk { failures: 2, status: 500 });
    let created = push_group(
        &server,
        "orders",
        "billing",
        json!({"backoff_ms": [300, 600], "push": {"url": receiver.url(), "headers": {"x-tenant": "t1"}}}),
    );
    let secret = created["push"]["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(created["push"]["state"], "active");
    let offset = produce(&server, "orders", br#"{"order": 7}"#);

    let requests = receiver.wait_for(3, WITHIN);
    assert_eq!(requests.len(), 3, "{requests:?}");
    for (i, r) in requests.iter().enumerate() {
        assert_eq!(r.method, "POST");
        assert_eq!(r.body, br#"{"order": 7}"#);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("webhook-id"), requests[0].header("webhook-id"), "the id is the same on every retry");
        assert_eq!(r.header("depot-attempt"), Some((i + 1).to_string().as_str()));
        assert_eq!(r.header("depot-offset"), Some(offset.to_string().as_str()));
        assert_eq!(r.header("depot-station"), Some("orders"));
        assert_eq!(r.header("x-tenant"), Some("t1"));
    }
    let gaps = [requests[1].at - requests[0].at, requests[2].at - requests[1].at];
    assert!(gaps[0] >= Duration::from_millis(290), "retried after {:?}, before the 300 ms backoff step", gaps[0]);
    assert!(gaps[1] >= Duration::from_millis(590), "retried after {:?}, before the 600 ms backoff step", gaps[1]);
    verify_standard_webhooks(&secret, &signed(&requests)).unwrap();

    let g = settled(&server, "orders", "billing");
    assert_eq!((&g["push"]["delivered_total"], &g["push"]["failed_total"]), (&json!(1), &json!(2)), "{g}");
    assert_eq!(g["push"]["secret_hint"], secret[secret.len() - 4..]);
    assert!(g["push"].get("secret").is_none(), "the secret is shown only once: {g}");
    let log = server.json("GET", "/v1/stations/orders/consumer-groups/billing/push/attempts", None);
    assert_eq!(log.status, 200, "{log:?}");
    let attempts = log.body["attempts"].as_array().unwrap();
    let statuses: Vec<&Value> = attempts.iter().map(|a| &a["status"]).collect();
    assert_eq!(statuses, [&json!(200), &json!(500), &json!(500)], "newest first: {attempts:?}");
    assert_eq!(attempts[1]["error"], "HTTP 500");
    // Nothing more comes: the ack stuck.
    assert_eq!(receiver.wait_for(4, Duration::from_millis(500)).len(), 3);
}

#[test]
fn a_receiver_that_always_fails_sends_the_message_to_the_dead_letters_and_redrive_delivers_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let receiver = Receiver::start(Behaviour::Status(500));
    push_group(&server, "dlq", "g", json!({"max_deliveries": 3, "backoff_ms": [20], "push": {"url": receiver.url()}}));
    produce(&server, "dlq", br#""doomed""#);

    let dead = eventually(WITHIN, "a dead letter", || {
        let r = server.json("GET", "/v1/stations/dlq/dead-letters", None);
        r.body["dead_letters"].as_array().filter(|d| !d.is_empty()).cloned()
    });
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((&dead[0]["reason"], &dead[0]["attempts"]), (&json!("max_deliveries"), &json!(3)));
    assert_eq!(dead[0]["last_error"], "HTTP 500");
    assert_eq!(receiver.requests().len(), 3);

    receiver.set(Behaviour::Status(204));
    let r = server.json("POST", "/v1/stations/dlq/dead-letters/redrive", Some(&json!({})));
    assert_eq!((r.status, &r.body["redriven"]), (200, &json!(1)), "{r:?}");
    let requests = receiver.wait_for(4, WITHIN);
    assert_eq!(requests[3].header("depot-attempt"), Some("1"), "attempts start over after a redrive");
    assert_eq!(requests[3].header("webhook-id"), requests[0].header("webhook-id"));
    settled(&server, "dlq", "g");
}

#[test]
fn retry_after_is_honoured_gone_disables_and_redirects_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);

    // 429 with Retry-After: 2 holds the retry back although the backoff step is 10 ms.
    let limited = Receiver::start(Behaviour::StatusWithHeaders(429, vec![("retry-after".into(), "2".into())]));
    push_group(&server, "limited", "g", json!({"backoff_ms": [10], "push": {"url": limited.url()}}));
    produce(&server, "limited", b"1");
    limited.wait_for(1, WITHIN);
    limited.set(Behaviour::Status(200));
    let requests = limited.wait_for(2, WITHIN);
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= Duration::from_millis(1990), "retried {gap:?} after a 429 with Retry-After: 2");
    settled(&server, "limited", "g");

    // 410 disables the group; its messages are kept; resume carries on.
    let gone = Receiver::start(Behaviour::Status(410));
    push_group(&server, "gone", "g", json!({"push": {"url": gone.url()}}));
    produce(&server, "gone", b"2");
    let g = eventually(WITHIN, "the group disabled", || {
        let g = group(&server, "gone", "g");
        (g["push"]["state"] == "disabled").then_some(g)
    });
    assert!(g["push"]["disabled_reason"].as_str().unwrap().contains("410"), "{g}");
    assert_eq!(g["lag"], 1, "the message is kept: {g}");
    gone.set(Behaviour::Status(204));
    let r = server.json("POST", "/v1/stations/gone/consumer-groups/g/push/resume", None);
    assert_eq!((r.status, &r.body["push"]["state"]), (200, &json!("active")), "{r:?}");
    let requests = gone.wait_for(2, WITHIN);
    assert_eq!(requests[1].header("depot-attempt"), Some("1"), "the 410'd attempt is not counted");
    settled(&server, "gone", "g");

    // A redirect is a failed attempt, and its target never hears from Depot.
    let target = Receiver::start(Behaviour::Status(200));
    let redirecting = Receiver::start(Behaviour::Redirect(target.url()));
    push_group(&server, "moved", "g", json!({"max_deliveries": 1, "push": {"url": redirecting.url()}}));
    produce(&server, "moved", b"3");
    let dead = eventually(WITHIN, "the redirected message dead-lettered", || {
        let r = server.json("GET", "/v1/stations/moved/dead-letters", None);
        r.body["dead_letters"].as_array().filter(|d| !d.is_empty()).cloned()
    });
    assert!(dead[0]["last_error"].as_str().unwrap().contains("redirect"), "{dead:?}");
    assert_eq!(target.requests().len(), 0, "the redirect was followed");
    assert_eq!(target.connections(), 0);
}

#[test]
fn a_receiver_that_never_answers_times_out_and_does_not_hold_back_another_group() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let hung = Receiver::start(Behaviour::Hang);
    let healthy = Receiver::start(Behaviour::Status(204));
    push_group(&server, "shared", "hung", json!({"push": {"url": hung.url(), "timeout_ms": 1000, "max_in_flight": 4}}));
    put(&server, "/v1/stations/shared/consumer-groups/healthy", json!({"push": {"url": healthy.url()}}));
    let started = Instant::now();
    for i in 0..200 {
        produce(&server, "shared", format!("{i}").as_bytes());
    }
    let produced = started.elapsed();
    healthy.wait_for(200, WITHIN);
    let delivered = started.elapsed();
    settled(&server, "shared", "healthy");
    println!(
        "200 messages: produced in {produced:?}, all delivered to the healthy group in {delivered:?} beside a hung one"
    );
    assert!(delivered < Duration::from_secs(10), "the healthy group took {delivered:?} beside a hung one");

    let timeout = eventually(WITHIN, "a timed-out attempt in the log", || {
        let r = server.json("GET", "/v1/stations/shared/consumer-groups/hung/push/attempts", None);
        r.body["attempts"].as_array().and_then(|a| a.first().cloned())
    });
    assert_eq!(timeout["error"], "timeout", "{timeout}");
    let ms = timeout["latency_ms"].as_u64().unwrap();
    assert!((1000..5000).contains(&ms), "timed out after {ms} ms with a 1000 ms timeout");
    // A hung attempt frees its slot only by timing out, so each of the 4 slots starts at most one
    // attempt per second: the count is bounded by the time gone by, however slow the machine is.
    let attempts = hung.requests().len() as u64;
    let seconds = started.elapsed().as_secs();
    assert!(
        attempts <= 4 * (seconds + 1),
        "{attempts} attempts in {seconds} s: more than max_in_flight 4 with a 1 s timeout allows"
    );
}

#[test]
fn rotated_secrets_sign_side_by_side_until_the_old_one_expires() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let receiver = Receiver::start(Behaviour::Status(204));
    let first = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let created = push_group(&server, "rot", "g", json!({"push": {"url": receiver.url(), "secret": first}}));
    assert_eq!(created["push"]["secret"], first);
    produce(&server, "rot", b"1");
    let one = receiver.wait_for(1, WITHIN);
    verify_standard_webhooks(first, &signed(&one)).unwrap();

    let r = server.json(
        "POST",
        "/v1/stations/rot/consumer-groups/g/push/rotate-secret",
        Some(&json!({"old_valid_ms": 600000})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let second = r.body["secret"].as_str().unwrap().to_owned();
    produce(&server, "rot", b"2");
    let two = receiver.wait_for(2, WITHIN);
    let during = signed(&two[1..]);
    assert_eq!(during[0].2.split(' ').count(), 2, "two signatures during the overlap: {}", during[0].2);
    verify_standard_webhooks(first, &during).unwrap();
    verify_standard_webhooks(&second, &during).unwrap();

    // The old secret stops signing once it expires (here at once).
    let r =
        server.json("POST", "/v1/stations/rot/consumer-groups/g/push/rotate-secret", Some(&json!({"old_valid_ms": 0})));
    let third = r.body["secret"].as_str().unwrap().to_owned();
    produce(&server, "rot", b"3");
    let three = receiver.wait_for(3, WITHIN);
    let after = signed(&three[2..]);
    verify_standard_webhooks(&third, &after).unwrap();
    assert!(verify_standard_webhooks(&second, &after).is_err(), "an expired secret still signs");
    assert!(verify_standard_webhooks(first, &after).is_err(), "an expired secret still signs");
}

#[test]
fn pull_operations_on_a_push_group_and_push_operations_on_a_pull_group_are_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let receiver = Receiver::start(Behaviour::Status(204));
    push_group(&server, "mixed", "pushed", json!({"push": {"url": receiver.url()}}));
    put(&server, "/v1/stations/mixed/consumer-groups/pulled", json!({}));
    for verb in ["fetch", "ack", "nack", "extend"] {
        let body = match verb {
            "fetch" => json!({"wait_ms": 0}),
            "extend" => json!({"receipts": ["x"], "ack_wait_ms": 1000}),
            _ => json!({"receipts": ["x"]}),
        };
        let r = server.json("POST", &format!("/v1/stations/mixed/consumer-groups/pushed/{verb}"), Some(&body));
        r.problem(409, "consumer_group_is_push");
    }
    for verb in ["pause", "resume", "test"] {
        let r = server.json("POST", &format!("/v1/stations/mixed/consumer-groups/pulled/push/{verb}"), None);
        r.problem(409, "consumer_group_not_push");
    }

    // Push and pull groups on one station each get every message.
    produce(&server, "mixed", b"42");
    receiver.wait_for(1, WITHIN);
    let r = server.json("POST", "/v1/stations/mixed/consumer-groups/pulled/fetch", Some(&json!({"wait_ms": 5000})));
    assert_eq!(r.body["messages"].as_array().unwrap().len(), 1, "{r:?}");

    // Bad push configs are refused with the field named.
    for (push, code) in [
        (json!({"url": "ftp://example.com/"}), "invalid_push_url"),
        (json!({"url": "http://user@127.0.0.1/"}), "invalid_push_url"),
        (json!({"url": receiver.url(), "secret": "not-a-secret"}), "invalid_request"),
        (json!({"url": receiver.url(), "timeout_ms": 10}), "invalid_request"),
        (json!({"url": receiver.url(), "max_in_flight": 0}), "invalid_request"),
        (json!({"url": receiver.url(), "headers": {"webhook-id": "x"}}), "invalid_request"),
        (json!({"url": receiver.url(), "nope": 1}), "invalid_body"),
    ] {
        let r = server.json("PUT", "/v1/stations/mixed/consumer-groups/bad", Some(&json!({ "push": push })));
        r.problem(400, code);
    }
    // An attempt may not outlast the ack wait: it would be handed out again while under way.
    let body = json!({"ack_wait_ms": 15000, "push": {"url": receiver.url(), "timeout_ms": 15000}});
    let r = server.json("PUT", "/v1/stations/mixed/consumer-groups/bad", Some(&body));
    r.problem(400, "invalid_request");
    assert!(r.body["detail"].as_str().unwrap().contains("ack_wait_ms"), "{r:?}");
}

#[test]
fn pause_holds_delivery_and_resume_carries_on_and_the_test_event_is_signed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let receiver = Receiver::start(Behaviour::Status(204));
    let created = push_group(&server, "paused", "g", json!({"push": {"url": receiver.url()}}));
    let secret = created["push"]["secret"].as_str().unwrap().to_owned();
    let r = server.json("POST", "/v1/stations/paused/consumer-groups/g/push/pause", None);
    assert_eq!((r.status, &r.body["push"]["state"]), (200, &json!("paused")), "{r:?}");
    produce(&server, "paused", b"1");
    assert_eq!(receiver.wait_for(1, Duration::from_millis(700)).len(), 0, "delivered while paused");
    let r = server.json("POST", "/v1/stations/paused/consumer-groups/g/push/resume", None);
    assert_eq!(r.status, 200, "{r:?}");
    receiver.wait_for(1, WITHIN);

    let r =
        server.json("POST", "/v1/stations/paused/consumer-groups/g/push/test", Some(&json!({"payload": {"hello": 1}})));
    assert_eq!((r.status, &r.body["status"]), (200, &json!(204)), "{r:?}");
    let requests = receiver.wait_for(2, WITHIN);
    assert_eq!(requests[1].body, br#"{"hello":1}"#);
    verify_standard_webhooks(&secret, &signed(&requests)).unwrap();
    let g = settled(&server, "paused", "g");
    assert_eq!(g["push"]["delivered_total"], 1, "a test event is not counted: {g}");

    let metrics = send(server.addr, Some(&server.token), "GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&metrics.raw);
    assert!(
        text.contains(r#"depot_push_deliveries_total{station="paused",group="g",outcome="delivered"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"depot_push_state{station="paused",group="g",state="active"} 1"#));
    assert!(text.contains(r#"depot_push_in_flight{station="paused",group="g"} 0"#));
    assert!(text.contains(r#"depot_push_attempt_duration_seconds_count{station="paused",group="g"} 1"#), "{text}");
}

#[test]
fn hooks_subscribe_to_new_messages_with_json_bodies_and_a_gone_target_deletes_its_hook() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let receiver = Receiver::start(Behaviour::Status(200));
    put(&server, "/v1/stations/zap", json!({}));
    produce(&server, "zap", br#"{"before": true}"#);
    let r = server.json("POST", "/v1/hooks", Some(&json!({"target_url": receiver.url(), "station": "zap"})));
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.body["id"].as_str().unwrap().to_owned();
    let secret = r.body["secret"].as_str().unwrap().to_owned();
    assert_eq!((&r.body["station"], &r.body["target_url"]), (&json!("zap"), &json!(receiver.url())));

    let path = "/v1/stations/zap/messages";
    let r = send(
        server.addr,
        Some(&server.token),
        "POST",
        path,
        &[("Content-Type", "application/json"), ("Depot-Header-Trace", "t-9")],
        br#"{"after": true}"#,
    );
    assert_eq!(r.status, 201);
    let requests = receiver.wait_for(1, WITHIN);
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["payload"], json!({"after": true}), "a hook starts at the latest offset: {body}");
    assert_eq!((&body["station"], &body["offset"]), (&json!("zap"), &json!(1)));
    assert_eq!(body["id"], requests[0].header("webhook-id").unwrap());
    assert_eq!(body["headers"], json!({"trace": "t-9"}));
    assert_eq!(body["content_type"], "application/json");
    assert!(body["produced_at"].as_str().unwrap().ends_with('Z'));
    verify_standard_webhooks(&secret, &signed(&requests)).unwrap();

    let list = server.json("GET", "/v1/hooks", None);
    assert_eq!(list.body["hooks"][0]["id"], id.as_str(), "{list:?}");
    assert!(list.body["hooks"][0].get("secret").is_none());
    assert_eq!(server.json("GET", &format!("/v1/hooks/{id}"), None).status, 200);
    server.json("GET", "/v1/hooks/hook-nope", None).problem(404, "hook_not_found");
    server
        .json("POST", "/v1/hooks", Some(&json!({"target_url": receiver.url(), "station": "none"})))
        .problem(404, "station_not_found");

    // Unsubscribe.
    assert_eq!(server.json("DELETE", &format!("/v1/hooks/{id}"), None).status, 204);
    server.json("GET", &format!("/v1/hooks/{id}"), None).problem(404, "hook_not_found");

    // A target that answers 410 deletes its hook.
    let gone = Receiver::start(Behaviour::Status(410));
    let r = server.json("POST", "/v1/hooks", Some(&json!({"target_url": gone.url(), "station": "zap"})));
    let gone_id = r.body["id"].as_str().unwrap().to_owned();
    produce(&server, "zap", b"{}");
    gone.wait_for(1, WITHIN);
    eventually(WITHIN, "the gone hook deleted", || {
        (server.json("GET", &format!("/v1/hooks/{gone_id}"), None).status == 404).then_some(())
    });
}

#[test]
fn without_private_networks_allowed_private_destinations_are_refused_when_put() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[("DEPOT_PUSH_ALLOW_PRIVATE_NETWORKS", "off")]);
    put(&server, "/v1/stations/guarded", json!({}));
    for url in [
        "http://127.0.0.1:9/",
        "http://localhost:9/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://2130706433/",
        "http://0x7f.0.0.1/",
        "http://224.0.0.1/",
    ] {
        let r = server.json("PUT", "/v1/stations/guarded/consumer-groups/g", Some(&json!({"push": {"url": url}})));
        r.problem(400, "invalid_push_url");
        let r = server.json("POST", "/v1/hooks", Some(&json!({"target_url": url, "station": "guarded"})));
        r.problem(400, "invalid_push_url");
    }
    // A public literal passes the check (no message is produced, so nothing is sent to it).
    let r = server.json(
        "PUT",
        "/v1/stations/guarded/consumer-groups/g",
        Some(&json!({"push": {"url": "https://8.8.8.8/"}})),
    );
    assert_eq!(r.status, 201, "{r:?}");
}

#[test]
fn depot_dev_says_that_push_may_reach_private_networks() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    let line = server.wait_line(WITHIN, |l| l.contains("push delivery may reach private networks"));
    assert!(line.is_ok(), "the dev banner does not say so: {line:?}");
}

#[test]
fn push_limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let receiver = Receiver::start(Behaviour::Status(204));
    put(&server, "/v1/stations/limits", json!({}));

    let headers: serde_json::Map<String, Value> = (0..33).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    let r = server.json(
        "PUT",
        "/v1/stations/limits/consumer-groups/g",
        Some(&json!({"push": {"url": receiver.url(), "headers": headers}})),
    );
    r.problem(400, "invalid_request");
    let long = "v".repeat(8 * 1024 + 1);
    let r = server.json(
        "PUT",
        "/v1/stations/limits/consumer-groups/g",
        Some(&json!({"push": {"url": receiver.url(), "headers": {"x-long": long}}})),
    );
    r.problem(400, "invalid_request");
    let url = format!("http://127.0.0.1/{}", "a".repeat(2048));
    let r = server.json("PUT", "/v1/stations/limits/consumer-groups/g", Some(&json!({"push": {"url": url}})));
    r.problem(400, "invalid_push_url");

    put(&server, "/v1/stations/limits/consumer-groups/g", json!({"push": {"url": receiver.url()}}));
    let path = "/v1/stations/limits/consumer-groups/g/push";
    for query in ["limit=0", "limit=1001", "cursor=not-a-cursor"] {
        server.json("GET", &format!("{path}/attempts?{query}"), None).problem(400, "invalid_request");
    }
    let r = server.json("POST", &format!("{path}/rotate-secret"), Some(&json!({"old_valid_ms": 2_592_000_001_u64})));
    r.problem(400, "invalid_request");
    let r = server.json("POST", &format!("{path}/rotate-secret"), Some(&json!({"secret": "whsec_short"})));
    r.problem(400, "invalid_request");
    server
        .json("POST", "/v1/stations/limits/consumer-groups/nope/push/pause", None)
        .problem(404, "consumer_group_not_found");

    // A station holds at most 100 hooks.
    for _ in 0..100 {
        let r = server.json("POST", "/v1/hooks", Some(&json!({"target_url": receiver.url(), "station": "limits"})));
        assert_eq!(r.status, 201, "{r:?}");
    }
    let r = server.json("POST", "/v1/hooks", Some(&json!({"target_url": receiver.url(), "station": "limits"})));
    r.problem(400, "invalid_request");
    let page = server.json("GET", "/v1/hooks?limit=60", None);
    assert_eq!(page.body["hooks"].as_array().unwrap().len(), 60);
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let rest = server.json("GET", &format!("/v1/hooks?limit=60&cursor={cursor}"), None);
    assert_eq!(rest.body["hooks"].as_array().unwrap().len(), 40, "{rest:?}");
    assert!(rest.body.get("next_cursor").is_none());
}

#[test]
fn max_in_flight_bounds_attempts_under_way_and_rate_per_s_paces_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);

    // A receiver that never answers holds every attempt: no more than max_in_flight start.
    let hung = Receiver::start(Behaviour::Hang);
    let config = json!({"push": {"url": hung.url(), "max_in_flight": 3, "timeout_ms": 10000}});
    push_group(&server, "bounded", "g", config);
    for i in 0..10 {
        produce(&server, "bounded", format!("{i}").as_bytes());
    }
    assert_eq!(hung.wait_for(3, WITHIN).len(), 3);
    assert_eq!(hung.wait_for(4, Duration::from_millis(1500)).len(), 3, "more than max_in_flight under way");
    let g = group(&server, "bounded", "g");
    assert_eq!(g["push"]["in_flight"], 3, "{g}");

    // 5 attempts per second: 20 messages take at least (20 - 5) / 5 = 3 s after the first.
    let receiver = Receiver::start(Behaviour::Status(204));
    push_group(&server, "paced", "g", json!({"push": {"url": receiver.url(), "rate_per_s": 5}}));
    for i in 0..20 {
        produce(&server, "paced", format!("{i}").as_bytes());
    }
    let requests = receiver.wait_for(20, WITHIN);
    let span = requests[19].at - requests[0].at;
    assert!(span >= Duration::from_millis(2900), "20 attempts at 5/s took only {span:?}");
}
