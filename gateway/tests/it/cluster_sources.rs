//! A webhook source on a real 3-node cluster: deliveries signed as GitHub signs them, posted by
//! curl to the ingest URL on every node, are stored once each (a redelivery through another node
//! answers the first offset); a token rotation made through one follower refuses the old URL on
//! every node at once, a follower cut off from the leader's log before the rotation included
//! (its proposal is refused at apply, behind the rotation in the log); a deletion likewise. Every node ends with
//! the same messages and the same totals on the source.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use depot_tests::http::{curl, Response};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const STATION: &str = "events";
const SOURCE: &str = "gh";
/// GitHub's documented example: this secret and body give this signature.
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const GITHUB_BODY: &[u8] = b"Hello, World!";
const GITHUB_SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
const GITHUB_DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
/// How long replicated state and refusal reports (about once a second per node) may take.
const WITHIN: Duration = Duration::from_secs(20);

/// `X-Hub-Signature-256` of `body`: `sha256=` and the hex HMAC-SHA256 under the source's secret.
fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(GITHUB_SECRET.as_bytes()).unwrap();
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// A delivery, as GitHub posts it: no Authorization header, signed, with its delivery id.
#[derive(Debug)]
struct Delivery {
    id: String,
    body: Vec<u8>,
}

impl Delivery {
    fn new(id: &str, body: &[u8]) -> Delivery {
        Delivery { id: id.to_owned(), body: body.to_vec() }
    }

    /// A JSON event, its own delivery id.
    fn event(id: &str) -> Delivery {
        let body = json!({"zen": "Keep it logically awesome.", "hook_id": 42, "delivery": id});
        Delivery::new(id, body.to_string().as_bytes())
    }

    /// Whether `message` (as `GET .../messages/{offset}` shows it) is this delivery: its body
    /// (JSON shown as JSON, anything else in base64) and its source.
    fn is(&self, message: &Value) -> bool {
        let body = match (&message["payload"], message["payload_base64"].as_str()) {
            (Value::Null, Some(b64)) => STANDARD.decode(b64).ok(),
            (payload, None) => {
                serde_json::from_slice::<Value>(&self.body).ok().filter(|b| b == payload).map(|_| self.body.clone())
            }
            _ => None,
        };
        body.as_deref() == Some(self.body.as_slice()) && message["headers"]["depot-source"] == SOURCE
    }

    /// Posted by curl to `url` on `node`.
    fn post(&self, c: &Cluster, node: u64, url: &str) -> Response {
        let signature = sign(&self.body);
        let headers = [
            ("Content-Type", "application/json"),
            ("User-Agent", "GitHub-Hookshot/044aadd"),
            ("X-GitHub-Event", "ping"),
            ("X-GitHub-Delivery", self.id.as_str()),
            ("X-Hub-Signature-256", signature.as_str()),
        ];
        curl(c.api(node), "POST", url, &headers, &self.body)
    }
}

/// `(offset, duplicate)` of an accepted delivery.
fn accepted(c: &Cluster, node: u64, r: &Response) -> (u64, bool) {
    if r.status != 200 {
        c.fail(&format!("a delivery through node {node} was not accepted: {r:?}"));
    }
    (r.body["offset"].as_u64().unwrap(), r.body["duplicate"].as_bool().unwrap())
}

/// Asserts `r` is the 401 `invalid_token` problem.
fn refused(c: &Cluster, node: u64, what: &str, r: &Response) {
    let problem = r.header("content-type") == Some("application/problem+json");
    if r.status != 401 || !problem || r.body["code"] != "invalid_token" {
        c.fail(&format!("{what} through node {node} was not refused with invalid_token: {r:?}"));
    }
}

fn ingest_url(c: &Cluster, r: &Response) -> String {
    match r.body["ingest_url"].as_str() {
        Some(url) if url.starts_with(&format!("/v1/ingest/{SOURCE}/")) => url.to_owned(),
        _ => c.fail(&format!("no ingest_url in {r:?}")),
    }
}

/// The station's `last_offset` on `node` (`None` before the first message).
fn last_offset(c: &Cluster, node: u64) -> Option<u64> {
    let r = c.call(node, "GET", &format!("/v1/stations/{STATION}"), None);
    assert_eq!(r.status, 200, "node {node}: {r:?}");
    r.body["stats"]["last_offset"].as_u64()
}

/// `(last_applied, last_log_index)` of `node` (`GET /v1/cluster`).
fn applied(c: &Cluster, node: u64) -> (u64, u64) {
    let view = c.view(node).unwrap_or_else(|| c.fail(&format!("GET /v1/cluster on node {node} failed")));
    (view["last_applied"].as_u64().unwrap(), view["last_log_index"].as_u64().unwrap())
}

/// `GET /v1/sources/gh` on `node`.
fn source(c: &Cluster, node: u64) -> Value {
    let r = c.call(node, "GET", &format!("/v1/sources/{SOURCE}"), None);
    assert_eq!(r.status, 200, "node {node}: {r:?}");
    r.body
}

#[test]
fn a_source_on_three_nodes_takes_deliveries_through_any_node_and_a_rotation_refuses_the_old_url_everywhere_at_once() {
    let launched = Instant::now();
    // The signer agrees with GitHub's published example.
    assert_eq!(sign(GITHUB_BODY), GITHUB_SIGNATURE);
    let c = crate::cluster::start(3);
    let started = Instant::now();
    c.create_station(STATION);
    let config = json!({"station": STATION, "verify": {"scheme": "github", "secret": GITHUB_SECRET}});
    let r = c.call(1, "PUT", &format!("/v1/sources/{SOURCE}"), Some(&config));
    assert_eq!(r.status, 201, "{r:?}");
    let url = ingest_url(&c, &r);
    let leader = c.wait_leader(WITHIN);
    let followers: Vec<u64> = c.ids().into_iter().filter(|&id| id != leader).collect();
    let (follower_a, follower_b) = (followers[0], followers[1]);

    // What was stored, by offset; and how many deliveries were answered 200 (duplicates too).
    let mut stored: Vec<Delivery> = Vec::new();
    let mut answered_200 = 0u64;

    // GitHub's example through a follower: the first message.
    let example = Delivery::new(GITHUB_DELIVERY, GITHUB_BODY);
    let signature = sign(&example.body);
    let headers = [("X-GitHub-Delivery", GITHUB_DELIVERY), ("X-Hub-Signature-256", signature.as_str())];
    assert_eq!(signature, GITHUB_SIGNATURE);
    let r = curl(c.api(follower_a), "POST", &url, &headers, GITHUB_BODY);
    assert_eq!(accepted(&c, follower_a, &r), (0, false), "{r:?}");
    stored.push(example);
    answered_200 += 1;

    // One delivery through every node, each its own delivery id: the next offsets in turn.
    let mut sent_through: Vec<(u64, usize)> = Vec::new();
    for node in c.ids() {
        let delivery = Delivery::event(&format!("delivery-through-node-{node}"));
        let r = delivery.post(&c, node, &url);
        let want = stored.len() as u64;
        assert_eq!(accepted(&c, node, &r), (want, false), "through node {node}: {r:?}");
        sent_through.push((node, stored.len()));
        stored.push(delivery);
        answered_200 += 1;
    }
    // GitHub's "Redeliver" of the one that went through the leader, through a follower: the
    // first offset, stored once.
    let (_, index) = *sent_through.iter().find(|(node, _)| *node == leader).unwrap();
    let r = stored[index].post(&c, follower_b, &url);
    assert_eq!(accepted(&c, follower_b, &r), (index as u64, true), "redelivery through node {follower_b}: {r:?}");
    answered_200 += 1;

    // Rotation through follower A while the leader's link to follower B is cut, so B has not
    // applied it (nor anything after it) when it takes the old URL: its own state still holds
    // the old token, so it proposes, and the leader-ordered log refuses the proposal at apply.
    // B forwards to the leader on its own link, which stays up. Then at once the old URL on
    // the leader and on A. Each delivery is signed correctly and new: only the token refuses it.
    c.cut(leader, follower_b);
    let before_rotation = applied(&c, leader).1;
    let r = c.call(follower_a, "POST", &format!("/v1/sources/{SOURCE}/rotate-token"), None);
    assert_eq!(r.status, 200, "rotate through node {follower_a}: {r:?}");
    let rotated_at = Instant::now();
    let rotated = ingest_url(&c, &r);
    assert_ne!(rotated, url);
    let delivery = Delivery::event(&format!("old-url-through-node-{follower_b}"));
    refused(&c, follower_b, "the old URL after the rotation", &delivery.post(&c, follower_b, &url));
    let (stale, _) = applied(&c, follower_b);
    c.heal();
    assert!(
        stale <= before_rotation,
        "node {follower_b} had applied up to {stale}, past {before_rotation} where the rotation came after: \
         the refusal did not come from a follower behind the rotation"
    );
    for node in [leader, follower_a] {
        let delivery = Delivery::event(&format!("old-url-through-node-{node}"));
        refused(&c, node, "the old URL after the rotation", &delivery.post(&c, node, &url));
    }
    let refusals_within = rotated_at.elapsed();
    // The new URL through the other follower: the next offset.
    let delivery = Delivery::event("new-url-through-follower");
    let r = delivery.post(&c, follower_b, &rotated);
    assert_eq!(accepted(&c, follower_b, &r), (stored.len() as u64, false), "new URL through node {follower_b}: {r:?}");
    stored.push(delivery);
    answered_200 += 1;

    // Every node holds exactly the accepted messages, and counts them on the source.
    let last = stored.len() as u64 - 1;
    for node in c.ids() {
        let seen = c.eventually(WITHIN, &format!("node {node} at the last accepted offset"), || {
            last_offset(&c, node).filter(|&l| l >= last)
        });
        assert_eq!(seen, last, "node {node} holds more messages than were accepted");
        for (offset, delivery) in stored.iter().enumerate() {
            let r = c.call(node, "GET", &format!("/v1/stations/{STATION}/messages/{offset}"), None);
            assert_eq!(r.status, 200, "node {node}, offset {offset}: {r:?}");
            assert!(delivery.is(&r.body), "node {node}, offset {offset}: {} is not {delivery:?}", r.body);
        }
        let past = c.call(node, "GET", &format!("/v1/stations/{STATION}/messages/{}", last + 1), None);
        past.problem(404, "message_not_found");

        let totals = c.eventually(WITHIN, &format!("node {node} counts the source's deliveries"), || {
            let s = source(&c, node);
            (s["accepted_total"].as_u64() >= Some(answered_200) && s["rejected"]["invalid_token"].as_u64() >= Some(3))
                .then_some(s)
        });
        assert_eq!(totals["accepted_total"], answered_200, "node {node}: {totals}");
        assert_eq!(totals["rejected"], json!({"invalid_token": 3}), "node {node}: {totals}");
        assert_eq!(totals["rejected_total"], 3, "node {node}: {totals}");
        assert!(totals.get("ingest_url").is_none(), "node {node}: {totals}");
    }

    // Deleted through the leader: the URL is refused at once through each follower, and nothing
    // more is stored.
    let r = c.call(leader, "DELETE", &format!("/v1/sources/{SOURCE}"), None);
    assert_eq!(r.status, 204, "{r:?}");
    for node in [follower_b, follower_a] {
        let delivery = Delivery::event(&format!("deleted-through-node-{node}"));
        refused(&c, node, "the URL after the deletion", &delivery.post(&c, node, &rotated));
    }
    for node in c.ids() {
        c.call(node, "GET", &format!("/v1/sources/{SOURCE}"), None).problem(404, "source_not_found");
        assert_eq!(last_offset(&c, node), Some(last), "node {node} stored a refused delivery");
    }

    println!(
        "cluster sources: up in {:?}; leader {leader}, rotated through {follower_a} (node \
         {follower_b} at applied index {stale} when it refused the old URL); {} messages, \
         {answered_200} deliveries answered 200; the old URL refused on all 3 nodes within {refusals_within:?} \
         of the rotation's answer; done in {:?}",
        started - launched,
        stored.len(),
        launched.elapsed()
    );
    assert!(launched.elapsed() < Duration::from_secs(120), "the test took {:?}", launched.elapsed());
}
