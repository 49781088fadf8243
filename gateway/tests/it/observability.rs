//! Rate limits, /metrics (in-process, and on a live node) and request ids.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::common::*;
use actix_web::test;
use depot_gateway::ratelimit::{RateKey, RateLimitConfig, RateLimiter};
use depot_gateway::{app, GatewayConfig};
use serde_json::json;

fn peer(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), 40000)
}

/// Two requests per hour, so nothing refills during a test.
fn tiny(trusted: &[&str]) -> GatewayConfig {
    GatewayConfig {
        rate_limit: RateLimitConfig {
            enabled: true,
            requests: 1,
            period: Duration::from_secs(3600),
            burst: 2,
            trusted_proxies: trusted.iter().map(|t| t.parse::<ipnet::IpNet>().unwrap()).collect(),
        },
        ..GatewayConfig::default()
    }
}

#[actix_web::test]
async fn over_the_burst_is_429_with_headers() {
    let n = node().await;
    let app = test::init_service(app(n.state_with(tiny(&[])))).await;
    for _ in 0..2 {
        send(&app, get("/v1/stations").peer_addr(peer("10.0.0.1"))).await.ok(200);
    }
    let r = send(&app, get("/v1/stations").peer_addr(peer("10.0.0.1"))).await;
    r.problem(429, "rate_limited");
    let retry: u64 = r.headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((3000..=3600).contains(&retry), "{retry}");
    assert_eq!(r.headers.get("ratelimit-policy").unwrap(), "\"ip\";q=2;w=7200");
    assert_eq!(r.headers.get("ratelimit").unwrap().to_str().unwrap(), format!("\"ip\";r=0;t={retry}"));
    assert!(r.headers.get("x-request-id").is_some());

    // Probes are exempt.
    for _ in 0..5 {
        send(&app, get("/livez").peer_addr(peer("10.0.0.1"))).await.ok(200);
    }
    // Another client has its own bucket.
    send(&app, get("/v1/stations").peer_addr(peer("10.0.0.2"))).await.ok(200);
    // The 429 is counted.
    let m = send(&app, get("/metrics").peer_addr(peer("10.0.0.3"))).await;
    let text = std::str::from_utf8(&m.raw).unwrap();
    assert!(text.contains("depot_rate_limited_total 1\n"), "{text}");
    assert!(
        text.contains("depot_http_requests_total{route=\"/v1/stations\",method=\"GET\",status=\"4xx\"} 1\n"),
        "{text}"
    );
}

#[actix_web::test]
async fn spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let n = node().await;
    let app = test::init_service(app(n.state_with(tiny(&[])))).await;
    for i in 0..2 {
        let req =
            get("/v1/stations").peer_addr(peer("10.0.0.1")).insert_header(("x-forwarded-for", format!("1.2.3.{i}")));
        send(&app, req).await.ok(200);
    }
    let req = get("/v1/stations").peer_addr(peer("10.0.0.1")).insert_header(("x-forwarded-for", "9.9.9.9"));
    send(&app, req).await.problem(429, "rate_limited");
}

#[actix_web::test]
async fn forwarded_for_from_a_trusted_proxy_names_the_client() {
    let n = node().await;
    let app = test::init_service(app(n.state_with(tiny(&["10.9.9.9/32"])))).await;
    for client in ["1.1.1.1", "2.2.2.2", "3.3.3.3"] {
        // The leftmost hop is client-controlled; the rightmost untrusted one counts.
        let req = get("/v1/stations")
            .peer_addr(peer("10.9.9.9"))
            .insert_header(("x-forwarded-for", format!("6.6.6.6, {client}")));
        send(&app, req).await.ok(200);
    }
}

#[actix_web::test]
async fn a_trusted_proxy_range_covers_every_balancer_address_and_no_other() {
    // Load balancers forward from any address of their subnet.
    let n = node().await;
    let app = test::init_service(app(n.state_with(tiny(&["10.20.0.0/16"])))).await;
    for (balancer, client) in [("10.20.0.5", "1.1.1.1"), ("10.20.200.7", "2.2.2.2"), ("10.20.3.3", "3.3.3.3")] {
        let req = get("/v1/stations").peer_addr(peer(balancer)).insert_header(("x-forwarded-for", client));
        send(&app, req).await.ok(200);
    }
    // One client behind several balancer addresses shares its bucket (a burst of 2).
    let req = get("/v1/stations").peer_addr(peer("10.20.9.9")).insert_header(("x-forwarded-for", "1.1.1.1"));
    send(&app, req).await.ok(200);
    let req = get("/v1/stations").peer_addr(peer("10.20.8.8")).insert_header(("x-forwarded-for", "1.1.1.1"));
    send(&app, req).await.problem(429, "rate_limited");
    // Outside the range the header is not believed: the peer is the key.
    for i in 0..2 {
        let req =
            get("/v1/stations").peer_addr(peer("10.21.0.1")).insert_header(("x-forwarded-for", format!("4.4.4.{i}")));
        send(&app, req).await.ok(200);
    }
    let req = get("/v1/stations").peer_addr(peer("10.21.0.1")).insert_header(("x-forwarded-for", "4.4.4.9"));
    send(&app, req).await.problem(429, "rate_limited");
}

#[test]
async fn keys_ipv6_by_64_and_ignores_untrusted_headers() {
    let limiter = RateLimiter::new(RateLimitConfig::default());
    let a = limiter.key_for(Some(peer("2001:db8:1:2:aaaa::1")), None);
    let b = limiter.key_for(Some(peer("2001:db8:1:2:bbbb::9")), Some("5.5.5.5"));
    let c = limiter.key_for(Some(peer("2001:db8:1:3::1")), None);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a, RateKey::Ip("2001:db8:1:2::".parse::<IpAddr>().unwrap()));
    assert_eq!(
        limiter.key_for(Some(peer("::ffff:10.0.0.1")), None),
        RateKey::Ip("10.0.0.1".parse::<IpAddr>().unwrap())
    );
}

#[test]
async fn pruning_bounds_the_limiter() {
    // Buckets refill in 1 µs, so every key but the newest is prunable right away.
    let limiter = RateLimiter::new(RateLimitConfig::per_second(1_000_000, 1));
    for i in 0..10_000u32 {
        let ip = IpAddr::from(i.to_be_bytes());
        limiter.check(&RateKey::ip(ip)).unwrap();
    }
    assert_eq!(limiter.len(), 10_000);
    let left = limiter.prune();
    assert!(left < 100, "{left} keys left after pruning");
    assert_eq!(left, limiter.len());
}

#[actix_web::test]
async fn metrics_count_routes_produce_and_lag() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/orders", json!({}))).await.ok(201);
    send(&app, put_json("/v1/stations/orders/consumer-groups/billing", json!({}))).await;
    for i in 0..3 {
        send(&app, post_json("/v1/stations/orders/messages", json!({"n": i}))).await.ok(201);
    }
    send(&app, get("/v1/stations/nope")).await.problem(404, "station_not_found");
    let r = send(&app, get("/metrics")).await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.headers.get("content-type").unwrap(), "text/plain; version=0.0.4; charset=utf-8");
    let text = std::str::from_utf8(&r.raw).unwrap();
    for line in [
        "depot_http_requests_total{route=\"/v1/stations/{station}/messages\",method=\"POST\",status=\"2xx\"} 3\n",
        "depot_http_requests_total{route=\"/v1/stations/{station}\",method=\"GET\",status=\"4xx\"} 1\n",
        "depot_http_request_duration_seconds_count{route=\"/v1/stations/{station}/messages\",method=\"POST\"} 3\n",
        "depot_http_request_duration_seconds_bucket{route=\"/v1/stations/{station}/messages\",method=\"POST\",le=\"+Inf\"} 3\n",
        "depot_messages_produced_total 3\n",
        "depot_consumer_group_lag{station=\"orders\",group=\"billing\"} 3\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // Raw paths never become labels.
    assert!(!text.contains("/v1/stations/orders"), "{text}");
}

#[actix_web::test]
async fn request_ids_are_echoed_or_generated() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    let r = send(&app, get("/livez").insert_header(("x-request-id", "abc-123_X"))).await;
    assert_eq!(r.headers.get("x-request-id").unwrap(), "abc-123_X");

    let a = send(&app, get("/livez")).await.headers.get("x-request-id").unwrap().to_str().unwrap().to_owned();
    let b = send(&app, get("/v1/nope")).await.headers.get("x-request-id").unwrap().to_str().unwrap().to_owned();
    assert_ne!(a, b);
    for id in [&a, &b] {
        assert!(depot_gateway::observe::valid_request_id(id), "{id}");
    }
    for bad in ["has space", "semi;colon", &"x".repeat(65)] {
        let r = send(&app, get("/livez").insert_header(("x-request-id", bad))).await;
        let got = r.headers.get("x-request-id").unwrap().to_str().unwrap();
        assert_ne!(got, bad);
        assert!(depot_gateway::observe::valid_request_id(got), "{got}");
    }
}

/// Issue 12, item 10: `/metrics` names every station and group, so it needs an administrator or
/// an administrator's key with the `metrics` action; the probes stay open.
#[actix_web::test]
async fn metrics_need_an_admin_or_a_metrics_key() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/secret-customer", json!({}))).await.ok(201);

    let r = send(&app, anonymous(get("/metrics"))).await;
    r.problem(401, "unauthorized");
    assert!(r.headers.get("www-authenticate").is_some(), "{r:?}");
    assert!(!String::from_utf8_lossy(&r.raw).contains("secret-customer"));
    send(&app, anonymous(get("/livez"))).await.ok(200);
    assert_ne!(send(&app, anonymous(get("/readyz"))).await.status.as_u16(), 401, "readiness needs no token");

    let key = |scopes: serde_json::Value| post_json("/v1/api-keys", json!({"name": "prometheus", "scopes": scopes}));
    let metrics_only = json!([{"stations": "*", "actions": ["metrics"]}]);
    let created = send(&app, key(metrics_only.clone())).await;
    let scraper = created.ok(201)["key"].as_str().unwrap().to_owned();
    let r = send(&app, bearer(get("/metrics"), &scraper)).await;
    assert_eq!(r.status.as_u16(), 200, "{r:?}");
    assert!(String::from_utf8_lossy(&r.raw).contains("depot_http_requests_total"));
    // The metrics action grants nothing on stations.
    let listed = send(&app, bearer(get("/v1/stations"), &scraper)).await;
    assert_eq!(listed.ok(200)["stations"], json!([]));
    let produce = post_json("/v1/stations/secret-customer/messages", json!({}));
    send(&app, bearer(produce, &scraper)).await.problem(403, "forbidden");
    // A token exchanged for the key keeps its scope.
    let exchanged = send(&app, anonymous(post_json("/v1/auth/token", json!({"api_key": scraper})))).await;
    let exchanged = exchanged.ok(200)["access_token"].as_str().unwrap().to_owned();
    assert_eq!(send(&app, bearer(get("/metrics"), &exchanged)).await.status.as_u16(), 200);

    // Other keys and members: 403; a metrics scope narrower than every station: 400.
    let producer = send(&app, key(json!([{"stations": "*", "actions": ["produce", "consume", "manage"]}]))).await;
    let producer = producer.ok(201)["key"].as_str().unwrap().to_owned();
    send(&app, bearer(get("/metrics"), &producer)).await.problem(403, "forbidden");
    send(&app, key(json!([{"stations": "orders*", "actions": ["metrics"]}]))).await.problem(400, "invalid_request");
    let member = json!({"username": "mia", "password": "mia-password", "role": "member"});
    send(&app, post_json("/v1/users", member)).await.ok(201);
    let login = json!({"username": "mia", "password": "mia-password"});
    let mia = send(&app, anonymous(post_json("/v1/auth/token", login))).await;
    let mia = mia.ok(200)["access_token"].as_str().unwrap().to_owned();
    send(&app, bearer(get("/metrics"), &mia)).await.problem(403, "forbidden");
    send(&app, bearer(key(metrics_only), &mia)).await.problem(403, "forbidden");
}

/// Issue 20: a real node's /metrics carries Raft, fsync, disk, station-size and process series,
/// each with HELP and TYPE, and they move as the node works. (A plain test: `test` here is actix's.)
#[::std::prelude::v1::test]
fn a_live_node_exports_raft_fsync_disk_station_and_process_figures() {
    use crate::e2e::{eventually, start};
    use crate::scrape::Scrape;

    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), &[]);
    let within = Duration::from_secs(60);
    let before = eventually(within, "this node to lead", || {
        let m = Scrape::of(&server);
        (m.get("depot_raft_is_leader") == Some(1.0)).then_some(m)
    });
    for (name, kind) in [
        ("depot_raft_term", "gauge"),
        ("depot_raft_last_log_index", "gauge"),
        ("depot_raft_commit_index", "gauge"),
        ("depot_raft_last_applied_index", "gauge"),
        ("depot_raft_apply_lag", "gauge"),
        ("depot_raft_leader_changes_total", "counter"),
        ("depot_raft_is_leader", "gauge"),
        ("depot_raft_has_leader", "gauge"),
        ("depot_log_fsync_duration_seconds", "histogram"),
        ("depot_disk_free_bytes", "gauge"),
        ("depot_disk_total_bytes", "gauge"),
        ("depot_disk_min_free_bytes", "gauge"),
        ("depot_station_messages", "gauge"),
        ("depot_station_bytes", "gauge"),
        ("depot_station_local_bytes", "gauge"),
        ("depot_station_tiered_bytes", "gauge"),
        ("depot_process_resident_memory_bytes", "gauge"),
        ("depot_process_virtual_memory_bytes", "gauge"),
        ("depot_process_cpu_seconds_total", "counter"),
        ("depot_process_start_time_seconds", "gauge"),
        ("depot_process_max_fds", "gauge"),
        ("depot_process_threads", "gauge"),
        ("depot_open_fds", "gauge"),
    ] {
        assert!(before.declares(name, kind), "{name} is not a {kind} with HELP in\n{}", before.text);
    }
    assert!(before.value("depot_raft_term") >= 1.0);
    assert!(before.value("depot_raft_leader_changes_total") >= 1.0);
    assert_eq!(before.value("depot_raft_has_leader"), 1.0);

    let r = server.json("PUT", "/v1/stations/observed", Some(&json!({})));
    assert_eq!(r.status, 201, "{r:?}");
    for i in 0..20 {
        let r = server.json("POST", "/v1/stations/observed/messages", Some(&json!({"n": i, "pad": "x".repeat(100)})));
        assert_eq!(r.status, 201, "{r:?}");
    }
    let committed_before = before.value("depot_raft_commit_index");
    let after = eventually(within, "the commit index to grow and every committed entry to be applied", || {
        let m = Scrape::of(&server);
        let grew = m.value("depot_raft_commit_index") >= committed_before + 20.0;
        (grew && m.value("depot_raft_apply_lag") == 0.0).then_some(m)
    });
    assert!(after.value("depot_raft_last_applied_index") >= after.value("depot_raft_commit_index"));
    assert!(after.value("depot_raft_last_log_index") >= after.value("depot_raft_commit_index"));
    assert_eq!(after.value("depot_raft_term"), before.value("depot_raft_term"), "no election on a single node");
    assert_eq!(after.value("depot_raft_leader_changes_total"), before.value("depot_raft_leader_changes_total"));

    // Every acknowledged produce waited for the Raft log's fsync.
    let fsyncs = |m: &Scrape| m.value("depot_log_fsync_duration_seconds_count");
    assert!(fsyncs(&after) >= fsyncs(&before) + 20.0, "{} -> {}", fsyncs(&before), fsyncs(&after));
    assert_eq!(after.value("depot_log_fsync_duration_seconds_bucket{le=\"+Inf\"}"), fsyncs(&after));
    assert!(after.value("depot_log_fsync_duration_seconds_sum") > before.value("depot_log_fsync_duration_seconds_sum"));
    let mut previous = 0.0;
    for line in after.text.lines().filter(|l| l.starts_with("depot_log_fsync_duration_seconds_bucket")) {
        let n: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
        assert!(n >= previous, "buckets must be cumulative: {line}");
        previous = n;
    }

    let (free, total) = (after.value("depot_disk_free_bytes"), after.value("depot_disk_total_bytes"));
    assert!(free > 0.0 && free <= total, "free {free}, total {total}");
    assert!(after.value("depot_disk_min_free_bytes") <= total);

    assert_eq!(after.value("depot_station_messages{station=\"observed\"}"), 20.0);
    assert!(after.value("depot_station_bytes{station=\"observed\"}") >= 20.0 * 100.0);
    assert!(after.value("depot_station_local_bytes{station=\"observed\"}") > 0.0);
    assert_eq!(after.value("depot_station_tiered_bytes{station=\"observed\"}"), 0.0);

    assert!(after.value("depot_process_resident_memory_bytes") > 1e6);
    assert!(after.value("depot_process_virtual_memory_bytes") >= after.value("depot_process_resident_memory_bytes"));
    assert!(after.value("depot_open_fds") > 0.0);
    assert!(after.value("depot_open_fds") <= after.value("depot_process_max_fds"));
    assert!(after.value("depot_process_threads") >= 1.0);
    assert!(after.value("depot_process_cpu_seconds_total") >= before.value("depot_process_cpu_seconds_total"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = after.value("depot_process_start_time_seconds");
    // Clock ticks round the start; the node started within this test.
    assert!(started > now - 600.0 && started <= now + 1.0, "started {started}, now {now}");
}
