//! Webhook sources end to end: the real `depot dev` binary takes deliveries posted by curl to
//! source ingest URLs, signed as the senders sign them: GitHub's published example, Stripe's
//! and Standard Webhooks' own Python libraries, Shopify's scheme by Python's `hmac`. Forgeries,
//! stale timestamps, wrong, rotated and deleted tokens are refused with nothing stored, and
//! a sender's retries are stored once.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::e2e::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use depot_tests::http::curl;
use depot_tests::webhooks::{run_python, sign_as_senders};
use serde_json::{json, Value};

const STATION: &str = "events";
const WITHIN: Duration = Duration::from_secs(20);
/// GitHub's documented example: this secret and body give this signature.
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const GITHUB_BODY: &[u8] = b"Hello, World!";
const GITHUB_SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
const STRIPE_SECRET: &str = "whsec_e2e0f1e2d3c4b5a69788796a5b4c3d2e";
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SHOPIFY_SECRET: &str = "shpss_e2e_0123456789abcdef";

fn start_server(dir: &std::path::Path) -> Server {
    let server = start(dir, &[]);
    let r = server.json("PUT", &format!("/v1/stations/{STATION}"), Some(&json!({"dedup_window_ms": 3_600_000})));
    assert_eq!(r.status, 201, "{r:?}");
    server
}

/// Creates source `name`; answers its ingest path (shown only now).
fn create_source(server: &Server, name: &str, config: Value) -> String {
    let r = server.json("PUT", &format!("/v1/sources/{name}"), Some(&config));
    assert_eq!(r.status, 201, "{r:?}");
    r.body["ingest_url"].as_str().unwrap_or_else(|| panic!("no ingest_url: {r:?}")).to_owned()
}

fn post(server: &Server, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    curl(server.addr, "POST", url, headers, body)
}

/// `(offset, duplicate)` of an accepted delivery.
fn accepted(r: &Response) -> (u64, bool) {
    assert_eq!(r.status, 200, "{r:?}");
    (r.body["offset"].as_u64().unwrap(), r.body["duplicate"].as_bool().unwrap())
}

fn next_offset(server: &Server) -> u64 {
    let r = server.json("GET", &format!("/v1/stations/{STATION}"), None);
    assert_eq!(r.status, 200, "{r:?}");
    r.body["stats"]["last_offset"].as_u64().map_or(0, |l| l + 1)
}

fn message(server: &Server, offset: u64) -> Value {
    let r = server.json("GET", &format!("/v1/stations/{STATION}/messages/{offset}"), None);
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Shopify's `X-Shopify-Hmac-Sha256` of `body`, by Python's standard library.
fn shopify_signature(secret: &str, body: &[u8]) -> String {
    const SCRIPT: &str = r#"
import base64, hashlib, hmac, json, sys
job = json.load(sys.stdin)
mac = hmac.new(job["secret"].encode(), base64.b64decode(job["body"]), hashlib.sha256)
json.dump(base64.b64encode(mac.digest()).decode(), sys.stdout)
"#;
    let out = run_python(SCRIPT, &json!({"secret": secret, "body": STANDARD.encode(body)})).unwrap();
    out.as_str().unwrap().to_owned()
}

#[test]
fn deliveries_signed_as_github_stripe_shopify_and_standard_webhooks_sign_them_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());

    // GitHub: its documented example, posted as GitHub posts it.
    let config = json!({
        "station": STATION,
        "verify": {"scheme": "github", "secret": GITHUB_SECRET},
        "capture_headers": ["X-GitHub-Event", "x-github-hook-id"],
    });
    let github = create_source(&server, "github", config);
    assert!(github.starts_with("/v1/ingest/github/"), "{github}");
    let token = github.rsplit('/').next().unwrap();
    assert!(token.len() >= 32, "token {token:?} is shorter than 192 bits in base64");
    let headers = [
        ("Content-Type", "application/octet-stream"),
        ("X-Hub-Signature-256", GITHUB_SIGNATURE),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("X-GitHub-Event", "ping"),
        ("X-GitHub-Hook-Id", "42"),
    ];
    let first = accepted(&post(&server, &github, &headers, GITHUB_BODY));
    assert!(!first.1);
    // GitHub's "Redeliver" repeats the delivery id: stored once.
    assert_eq!(accepted(&post(&server, &github, &headers, GITHUB_BODY)), (first.0, true));
    let m = message(&server, first.0);
    assert_eq!(m["payload_base64"], STANDARD.encode(GITHUB_BODY), "{m}");
    assert_eq!(m["content_type"], "application/octet-stream");
    assert_eq!(m["headers"], json!({"depot-source": "github", "x-github-event": "ping", "x-github-hook-id": "42"}));

    // Stripe and Standard Webhooks: signed by the senders' own libraries.
    let stripe = create_source(
        &server,
        "stripe",
        json!({"station": STATION, "verify": {"scheme": "stripe", "secret": STRIPE_SECRET}}),
    );
    let standard = create_source(
        &server,
        "standard",
        json!({"station": STATION, "verify": {"scheme": "standard_webhooks", "secret": SW_SECRET}}),
    );
    let event = br#"{"id":"evt_1PxE2e","object":"event","type":"payment_intent.succeeded","data":{}}"#.to_vec();
    let binary = vec![0xff, 0x00, 0xfe, b'.', b'\n'];
    let now = now_s();
    let deliveries = [("msg_a".to_owned(), now, event.clone()), ("msg_b".to_owned(), now, binary.clone())];
    let signed = sign_as_senders(STRIPE_SECRET, SW_SECRET, &deliveries).unwrap();
    fn stripe_headers(signature: &str) -> Vec<(&str, &str)> {
        vec![("Content-Type", "application/json"), ("Stripe-Signature", signature)]
    }
    let signature = signed[0].stripe.clone().unwrap();
    let (offset, duplicate) = accepted(&post(&server, &stripe, &stripe_headers(&signature), &event));
    assert!(!duplicate);
    assert_eq!(message(&server, offset)["payload"]["id"], "evt_1PxE2e");
    // Stripe's retry of the same event, signed again a second later: the event id dedups it.
    let retry = sign_as_senders(STRIPE_SECRET, SW_SECRET, &[("msg_a".to_owned(), now + 1, event.clone())]).unwrap();
    let again = post(&server, &stripe, &stripe_headers(retry[0].stripe.as_deref().unwrap()), &event);
    assert_eq!(accepted(&again), (offset, true));

    for ((id, timestamp, body), s) in deliveries.iter().zip(&signed) {
        let ts = timestamp.to_string();
        let headers = [
            ("Content-Type", "application/octet-stream"),
            ("webhook-id", id.as_str()),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", s.standard_webhooks.as_str()),
        ];
        let (offset, duplicate) = accepted(&post(&server, &standard, &headers, body));
        assert!(!duplicate);
        assert_eq!(message(&server, offset)["payload_base64"], STANDARD.encode(body));
        assert_eq!(accepted(&post(&server, &standard, &headers, body)), (offset, true), "webhook-id {id}");
    }

    // Shopify: base64 HMAC of the body, its webhook id as the delivery id.
    let shopify = create_source(
        &server,
        "shopify",
        json!({"station": STATION, "verify": {"scheme": "shopify", "secret": SHOPIFY_SECRET}, "capture_headers": ["x-shopify-topic"]}),
    );
    let order = br#"{"id":820982911946154508,"email":"jon@example.com"}"#;
    let hmac = shopify_signature(SHOPIFY_SECRET, order);
    let headers = [
        ("Content-Type", "application/json"),
        ("X-Shopify-Hmac-Sha256", hmac.as_str()),
        ("X-Shopify-Topic", "orders/create"),
        ("X-Shopify-Webhook-Id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
    ];
    let (offset, _) = accepted(&post(&server, &shopify, &headers, order));
    assert_eq!(accepted(&post(&server, &shopify, &headers, order)), (offset, true));
    assert_eq!(message(&server, offset)["headers"]["x-shopify-topic"], "orders/create");

    // Any other HMAC-SHA256 signer: the hex HMAC in a header the source names.
    let generic = create_source(
        &server,
        "generic",
        json!({"station": STATION, "verify": {"scheme": "hmac_sha256", "secret": "generic-secret", "header": "X-Signature"}, "idempotency_header": "x-event-id"}),
    );
    let event = br#"{"event":"build.finished"}"#;
    let signature = format!("sha256={}", hmac_hex("generic-secret", event));
    let headers = [("X-Signature", signature.as_str()), ("X-Event-Id", "ev-1"), ("Content-Type", "application/json")];
    let (offset, _) = accepted(&post(&server, &generic, &headers, event));
    assert_eq!(accepted(&post(&server, &generic, &headers, event)), (offset, true));
    let bare = hmac_hex("generic-secret", event);
    assert!(!accepted(&post(&server, &generic, &[("X-Signature", bare.as_str())], event)).1);
    let zeros = format!("sha256={}", "0".repeat(64));
    post(&server, &generic, &[("X-Signature", zeros.as_str())], event).problem(401, "bad_signature");

    // Counted on the source and on /metrics; the secret never comes back.
    let r = server.json("GET", "/v1/sources/github", None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!((r.body["accepted_total"].as_u64(), r.body["rejected_total"].as_u64()), (Some(2), Some(0)), "{r:?}");
    assert!(r.body.get("ingest_url").is_none(), "{r:?}");
    let list = server.json("GET", "/v1/sources", None);
    assert_eq!(list.body["sources"].as_array().map(Vec::len), Some(5), "{list:?}");
    for secret in [GITHUB_SECRET, STRIPE_SECRET, SW_SECRET, SHOPIFY_SECRET] {
        let text = String::from_utf8_lossy(&list.raw);
        assert!(!text.contains(secret) && !text.contains(token), "{text}");
    }
    let metrics = server.json("GET", "/metrics", None);
    let text = String::from_utf8_lossy(&metrics.raw);
    assert!(text.contains(r#"depot_source_requests_total{source="stripe",outcome="accepted",reason=""} 2"#), "{text}");
}

#[test]
fn forged_stale_and_misaddressed_deliveries_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let config = json!({"station": STATION, "verify": {"scheme": "github", "secret": GITHUB_SECRET}});
    let github = create_source(&server, "github", config);
    let stripe = create_source(
        &server,
        "stripe",
        json!({"station": STATION, "verify": {"scheme": "stripe", "secret": STRIPE_SECRET, "tolerance_ms": 60000}}),
    );
    let open = create_source(&server, "open", json!({"station": STATION, "rate_per_s": 1}));
    let before = next_offset(&server);

    let signed = |signature: &'static str| vec![("X-Hub-Signature-256", signature), ("X-GitHub-Delivery", "d-1")];
    let refusals: Vec<(&str, Response)> = vec![
        ("bad_signature", post(&server, &github, &signed(GITHUB_SIGNATURE), b"Hello, World?")),
        (
            "bad_signature",
            post(
                &server,
                &github,
                &signed("sha256=0000000000000000000000000000000000000000000000000000000000000000"),
                GITHUB_BODY,
            ),
        ),
        ("missing_signature", post(&server, &github, &[("X-GitHub-Delivery", "d-2")], GITHUB_BODY)),
        ("malformed_signature", post(&server, &github, &signed("sha1=abc"), GITHUB_BODY)),
    ];
    // Stripe's library signing 10 minutes back and ahead: stale either way.
    let body = br#"{"id":"evt_late"}"#.to_vec();
    let now = now_s();
    let late = [("a".to_owned(), now - 600, body.clone()), ("b".to_owned(), now + 600, body.clone())];
    let late = sign_as_senders(STRIPE_SECRET, SW_SECRET, &late).unwrap();
    let mut refusals = refusals;
    for s in &late {
        let header = s.stripe.clone().unwrap();
        refusals.push(("stale_timestamp", post(&server, &stripe, &[("Stripe-Signature", header.as_str())], &body)));
    }
    // A wrong token, an unknown source.
    let wrong = format!("{}x", github);
    refusals.push(("invalid_token", post(&server, &wrong, &signed(GITHUB_SIGNATURE), GITHUB_BODY)));
    refusals.push(("invalid_token", post(&server, "/v1/ingest/nope/abc", &[], b"x")));
    for (code, r) in &refusals {
        r.problem(401, code);
        assert!(r.header("www-authenticate").is_some(), "{r:?}");
    }
    assert_eq!(next_offset(&server), before, "a refused delivery was stored");

    // The rate limit: one a second, so of five at once at least four are refused.
    let answers: Vec<u16> = (0..5).map(|_| post(&server, &open, &[], b"{}").status).collect();
    assert!(answers.iter().filter(|s| **s == 429).count() >= 4, "{answers:?}");
    assert!(answers.iter().filter(|s| **s == 200).count() <= 1, "{answers:?}");

    // The station's body limit.
    let r = server.json("PUT", &format!("/v1/stations/{STATION}"), Some(&json!({"max_message_bytes": 64})));
    assert_eq!(r.status, 200, "{r:?}");
    let signature = format!("sha256={}", hmac_hex(GITHUB_SECRET, &[b'a'; 65]));
    let r = post(&server, &github, &[("X-Hub-Signature-256", signature.as_str())], &[b'a'; 65]);
    r.problem(413, "payload_too_large");

    // Rotation: the old URL stops at once, the new one works. Deletion stops it too.
    let stored = next_offset(&server);
    let r = server.json("POST", "/v1/sources/github/rotate-token", None);
    assert_eq!(r.status, 200, "{r:?}");
    let rotated = r.body["ingest_url"].as_str().unwrap().to_owned();
    assert_ne!(rotated, github);
    post(&server, &github, &signed(GITHUB_SIGNATURE), GITHUB_BODY).problem(401, "invalid_token");
    assert_eq!(accepted(&post(&server, &rotated, &signed(GITHUB_SIGNATURE), GITHUB_BODY)).0, stored);
    assert_eq!(server.json("DELETE", "/v1/sources/github", None).status, 204);
    post(&server, &rotated, &signed(GITHUB_SIGNATURE), GITHUB_BODY).problem(401, "invalid_token");
    server.json("GET", "/v1/sources/github", None).problem(404, "source_not_found");
    assert_eq!(next_offset(&server), stored + 1);

    // Each node reports its refusals to the sources' totals, by reason.
    let totals = eventually(WITHIN, "the stripe source counts its stale deliveries", || {
        let r = server.json("GET", "/v1/sources/stripe", None);
        (r.body["rejected_total"] == 2).then_some(r.body)
    });
    assert_eq!(totals["rejected"], json!({"stale_timestamp": 2}), "{totals}");
    let open = eventually(WITHIN, "the open source counts its rate-limited deliveries", || {
        let r = server.json("GET", "/v1/sources/open", None);
        (r.body["rejected"]["rate_limited"].as_u64() >= Some(4)).then_some(r.body)
    });
    assert!(open["accepted_total"].as_u64() <= Some(1), "{open}");
    let text = String::from_utf8_lossy(&server.json("GET", "/metrics", None).raw).into_owned();
    for line in [
        r#"depot_source_requests_total{source="stripe",outcome="rejected",reason="stale_timestamp"} 2"#,
        // A wrong token and a rotated one; then the unknown source and the deleted one.
        r#"depot_source_requests_total{source="github",outcome="rejected",reason="invalid_token"} 2"#,
        r#"depot_source_requests_total{source="(unknown)",outcome="rejected",reason="invalid_token"} 2"#,
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}

#[test]
fn managing_sources_checks_its_input_and_the_callers_rights() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    for (config, what) in [
        (json!({"station": "missing"}), "station_not_found"),
        (json!({"station": STATION, "verify": {"scheme": "github", "secret": ""}}), "invalid_request"),
        (json!({"station": STATION, "verify": {"scheme": "sha1", "secret": "s"}}), "invalid_body"),
        (json!({"station": STATION, "verify": {"scheme": "hmac_sha256", "secret": "s"}}), "invalid_request"),
        (json!({"station": STATION, "verify": {"scheme": "standard_webhooks", "secret": "nope"}}), "invalid_request"),
        (
            json!({"station": STATION, "verify": {"scheme": "stripe", "secret": "s", "tolerance_ms": 5}}),
            "invalid_request",
        ),
        (json!({"station": STATION, "capture_headers": ["bad header"]}), "invalid_request"),
        (json!({"station": STATION, "rate_per_s": 0}), "invalid_request"),
        (json!({"station": STATION, "token": "mine"}), "invalid_body"),
    ] {
        let r = server.json("PUT", "/v1/sources/s1", Some(&config));
        let status = if what == "station_not_found" { 404 } else { 400 };
        r.problem(status, what);
    }
    server.json("PUT", "/v1/sources/Bad!", Some(&json!({"station": STATION}))).problem(400, "invalid_name");

    // An update keeps the URL and answers without it.
    let url = create_source(&server, "s1", json!({"station": STATION}));
    let r = server.json("PUT", "/v1/sources/s1", Some(&json!({"station": STATION, "capture_headers": ["X-A"]})));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.get("ingest_url").is_none());
    assert_eq!(r.body["capture_headers"], json!(["x-a"]));
    accepted(&post(&server, &url, &[("X-A", "1")], b"kept"));

    // A key that may only produce cannot manage sources, nor see them.
    let r = server.json(
        "POST",
        "/v1/api-keys",
        Some(&json!({"name": "producer", "scopes": [{"stations": "*", "actions": ["produce"]}]})),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let key = r.body["key"].as_str().unwrap().to_owned();
    let as_key = |method: &str, path: &str, body: Option<&Value>| server.json_as(Some(&key), method, path, body);
    as_key("PUT", "/v1/sources/s2", Some(&json!({"station": STATION}))).problem(403, "forbidden");
    as_key("GET", "/v1/sources/s1", None).problem(403, "forbidden");
    as_key("POST", "/v1/sources/s1/rotate-token", None).problem(403, "forbidden");
    let r = as_key("GET", "/v1/sources", None);
    assert_eq!((r.status, r.body["sources"].as_array().map(Vec::len)), (200, Some(0)), "{r:?}");
    // Without any credential, management is 401; the ingest URL needs none.
    server.json_as(None, "GET", "/v1/sources", None).problem(401, "unauthorized");
}

/// Hex HMAC-SHA256, by Python's standard library.
fn hmac_hex(secret: &str, body: &[u8]) -> String {
    const SCRIPT: &str = r#"
import base64, hashlib, hmac, json, sys
job = json.load(sys.stdin)
json.dump(hmac.new(job["secret"].encode(), base64.b64decode(job["body"]), hashlib.sha256).hexdigest(), sys.stdout)
"#;
    let out = run_python(SCRIPT, &json!({"secret": secret, "body": STANDARD.encode(body)})).unwrap();
    out.as_str().unwrap().to_owned()
}
