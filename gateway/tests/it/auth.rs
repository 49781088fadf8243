//! In-process tests of the auth, users and API-key endpoints: error paths, ownership, audit,
//! per-credential rate limits and external issuers.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::common::*;
use actix_web::test;
use depot_gateway::auth::{AuthConfig, ExternalIssuer};
use depot_gateway::ratelimit::RateLimitConfig;
use depot_gateway::{app, GatewayConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// A throwaway Ed25519 key pair of an "external issuer", made for these tests.
const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJi8hT9hMQHXhyiAFCbZrb1jv+jzlh9IromcmRxUMbz4\n-----END PRIVATE KEY-----\n";
const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEANrEq4Fd2rufQuj8Wkg6lIs4wGMx8TStmXbD7iT+yJf4=\n-----END PUBLIC KEY-----\n";

fn login(username: &str, password: &str) -> test::TestRequest {
    anonymous(post_json("/v1/auth/token", json!({"username": username, "password": password})))
}

#[actix_web::test]
async fn token_refresh_and_revoke_error_paths() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, anonymous(post_json("/v1/auth/token", json!({"username": "admin", "password": "x", "extra": 1}))))
        .await
        .problem(400, "invalid_body");
    send(&app, anonymous(post_json("/v1/auth/token", json!({"api_key": "dk_x", "username": "admin"}))))
        .await
        .problem(400, "invalid_body");
    send(&app, anonymous(post_json("/v1/auth/token", json!({"api_key": "not-a-key"}))))
        .await
        .problem(401, "unauthorized");
    send(&app, login("admin", &"x".repeat(5000))).await.problem(401, "unauthorized");
    let ok = send(&app, login("admin", "admin-password")).await;
    let refresh = ok.ok(200)["refresh_token"].as_str().unwrap().to_owned();
    for garbage in ["", "drt_nope", "x"] {
        send(&app, anonymous(post_json("/v1/auth/refresh", json!({"refresh_token": garbage}))))
            .await
            .problem(401, "unauthorized");
    }
    let r = send(&app, anonymous(post_json("/v1/auth/revoke", json!({"refresh_token": "drt_unknown"})))).await;
    assert_eq!(r.status, 204, "revoking an unknown token says nothing about which exist");
    let r = send(&app, anonymous(post_json("/v1/auth/revoke", json!({"refresh_token": refresh.clone()})))).await;
    assert_eq!(r.status, 204);
    send(&app, anonymous(post_json("/v1/auth/refresh", json!({"refresh_token": refresh}))))
        .await
        .problem(401, "unauthorized");
}

#[actix_web::test]
async fn users_are_validated_and_audited() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    let user = |name: &str, password: &str, role: &str| {
        post_json("/v1/users", json!({"username": name, "password": password, "role": role}))
    };
    send(&app, user("Bad Name", "long-enough", "member")).await.problem(400, "invalid_name");
    send(&app, user("ok", "short", "member")).await.problem(400, "invalid_body");
    send(&app, user("ok", "long-enough", "root")).await.problem(400, "invalid_body");
    let created = send(&app, user("carol", "long-enough", "admin")).await;
    assert_eq!(created.ok(201)["username"], "carol");
    assert!(created.body["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(!String::from_utf8_lossy(&created.raw).contains("argon2"), "a hash in an answer");
    send(&app, user("carol", "long-enough", "admin")).await.problem(409, "already_exists");
    let list = send(&app, get("/v1/users")).await;
    let names: Vec<&str> =
        list.ok(200)["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "carol"]);
    send(&app, delete("/v1/users/nobody")).await.problem(404, "user_not_found");
    send(&app, delete("/v1/users/admin")).await.problem(403, "forbidden");
    assert_eq!(send(&app, delete("/v1/users/carol")).await.status, 204);
    let audit = n.auth.store().audit_log(None, 10).await.unwrap();
    let actions: Vec<(&str, &str, &str)> =
        audit.iter().map(|r| (r.entry.action.as_str(), r.entry.target.as_str(), r.entry.actor.as_str())).collect();
    assert_eq!(actions, [("user.delete", "carol", "admin"), ("user.create", "carol", "admin")]);
    assert!(!format!("{audit:?}").contains("long-enough"), "a password in the audit log");
}

#[actix_web::test]
async fn api_keys_are_validated_and_owned() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    let key = |body: Value| post_json("/v1/api-keys", body);
    let scope = json!([{"stations": "orders*", "actions": ["produce"]}]);
    send(&app, key(json!({"name": "k", "scopes": []}))).await.problem(400, "invalid_request");
    send(&app, key(json!({"name": "k", "scopes": [{"stations": "Orders", "actions": ["produce"]}]})))
        .await
        .problem(400, "invalid_request");
    send(&app, key(json!({"name": "k", "scopes": [{"stations": "o", "actions": []}]})))
        .await
        .problem(400, "invalid_request");
    send(&app, key(json!({"name": "k", "scopes": [{"stations": "o", "actions": ["fly"]}]})))
        .await
        .problem(400, "invalid_body");
    send(&app, key(json!({"name": "", "scopes": scope}))).await.problem(400, "invalid_request");
    send(&app, key(json!({"name": "k".repeat(129), "scopes": scope}))).await.problem(400, "invalid_request");
    send(&app, key(json!({"name": "k", "scopes": scope, "expires_at": "2001-01-01T00:00:00Z"})))
        .await
        .problem(400, "invalid_request");
    send(&app, key(json!({"name": "k", "scopes": scope, "expires_at": "soon"}))).await.problem(400, "invalid_request");

    // A member's keys are theirs; the admin sees every key.
    send(&app, post_json("/v1/users", json!({"username": "dan", "password": "dan-password", "role": "member"})))
        .await
        .ok(201);
    let dan = send(&app, login("dan", "dan-password")).await.ok(200)["access_token"].as_str().unwrap().to_owned();
    let admins = send(&app, key(json!({"name": "admin-key", "scopes": scope}))).await;
    let admin_key_id = admins.ok(201)["id"].as_str().unwrap().to_owned();
    let dans = send(
        &app,
        bearer(key(json!({"name": "dan-key", "scopes": scope, "expires_at": "2999-01-01T00:00:00Z"})), &dan),
    )
    .await;
    assert_eq!(dans.ok(201)["owner"], "dan");
    assert_eq!(dans.body["expires_at"], "2999-01-01T00:00:00.000Z");
    let listed = send(&app, bearer(get("/v1/api-keys"), &dan)).await;
    assert_eq!(listed.ok(200)["api_keys"].as_array().unwrap().len(), 1);
    assert!(listed.body["api_keys"][0].get("key").is_none(), "a secret listed");
    assert_eq!(send(&app, get("/v1/api-keys")).await.ok(200)["api_keys"].as_array().unwrap().len(), 2);
    send(&app, bearer(delete(&format!("/v1/api-keys/{admin_key_id}")), &dan)).await.problem(404, "api_key_not_found");
    send(&app, bearer(get("/v1/users"), &dan)).await.problem(403, "forbidden");
}

#[actix_web::test]
async fn an_expired_key_stops_working() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/s", json!({}))).await.ok(201);
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let body = json!({"name": "brief", "scopes": [{"stations": "*", "actions": ["manage"]}],
                      "expires_at": soon.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)});
    let key = send(&app, post_json("/v1/api-keys", body)).await.ok(201)["key"].as_str().unwrap().to_owned();
    assert_eq!(send(&app, bearer(get("/v1/stations/s"), &key)).await.status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = send(&app, bearer(get("/v1/stations/s"), &key)).await;
        if r.status == 401 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the key still works after expiring: {r:?}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn each_credential_has_its_own_quota() {
    let n = node().await;
    let tight = RateLimitConfig { period: Duration::from_secs(3600), ..RateLimitConfig::per_second(1, 3) };
    let app = test::init_service(app(
        n.state_with(GatewayConfig { credential_rate_limit: tight, ..GatewayConfig::default() })
    ))
    .await;
    send(&app, post_json("/v1/users", json!({"username": "eve", "password": "eve-password", "role": "member"})))
        .await
        .ok(201);
    let eve = send(&app, login("eve", "eve-password")).await;
    let eve = eve.ok(200)["access_token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        assert_eq!(send(&app, get("/v1/stations")).await.status, 200);
    }
    let limited = send(&app, get("/v1/stations")).await;
    limited.problem(429, "rate_limited");
    assert_eq!(limited.headers.get("ratelimit-policy").unwrap(), "\"credential\";q=3;w=10800");
    assert!(limited.headers.get("retry-after").is_some());
    // Another credential from the same address keeps its own quota.
    assert_eq!(send(&app, bearer(get("/v1/stations"), &eve)).await.status, 200);
}

#[actix_web::test]
async fn external_eddsa_tokens_get_only_their_scopes() {
    let mut config = AuthConfig::with_secret(SECRET.to_vec());
    config.external.push(ExternalIssuer {
        algorithm: Algorithm::EdDSA,
        public_key_pem: ED_PUBLIC.to_owned(),
        issuer: "https://idp.example".to_owned(),
        audience: "depot-prod".to_owned(),
    });
    let n = node_with_auth(config).await;
    let app = test::init_service(app(n.state())).await;
    send(&app, put_json("/v1/stations/orders", json!({}))).await.ok(201);
    send(&app, put_json("/v1/stations/billing", json!({}))).await.ok(201);
    let now = chrono::Utc::now().timestamp();
    let sign = |claims: Value| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &claims,
            &EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let claims = |aud: &str, exp: i64| {
        json!({"sub": "svc-1", "iss": "https://idp.example", "aud": aud, "exp": now + exp, "nbf": now - 1,
               "scopes": [{"stations": "orders", "actions": ["produce"]}]})
    };
    let good = sign(claims("depot-prod", 300));
    let produce =
        |station: &str| test::TestRequest::post().uri(&format!("/v1/stations/{station}/messages")).set_payload("x");
    assert_eq!(send(&app, bearer(produce("orders"), &good)).await.status, 201);
    send(&app, bearer(produce("billing"), &good)).await.problem(403, "forbidden");
    send(&app, bearer(get("/v1/users"), &good)).await.problem(403, "forbidden");
    send(&app, bearer(produce("orders"), &sign(claims("elsewhere", 300)))).await.problem(401, "unauthorized");
    send(&app, bearer(produce("orders"), &sign(claims("depot-prod", -60)))).await.problem(401, "unauthorized");
    // Without scopes an external token grants nothing.
    let bare = sign(
        json!({"sub": "svc-2", "iss": "https://idp.example", "aud": "depot-prod", "exp": now + 300, "nbf": now - 1}),
    );
    send(&app, bearer(produce("orders"), &bare)).await.problem(403, "forbidden");
}

/// Issue 12, item 8: create member carol, log in (token T), delete carol, re-create carol as
/// admin: T, carol's refresh token and carol's API key must never work again, whatever the new
/// carol may do. Everything happens within one second, as an attacker would do it.
#[actix_web::test]
async fn a_recreated_user_does_not_revive_old_tokens() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    let carol = |role: &str| json!({"username": "carol", "password": "carol-password", "role": role});
    send(&app, post_json("/v1/users", carol("member"))).await.ok(201);
    let pair = send(&app, login("carol", "carol-password")).await.ok(200).clone();
    let old_token = pair["access_token"].as_str().unwrap().to_owned();
    let old_refresh = pair["refresh_token"].as_str().unwrap().to_owned();
    let scopes = json!([{"stations": "*", "actions": ["produce", "consume", "manage"]}]);
    let key = send(&app, bearer(post_json("/v1/api-keys", json!({"name": "k", "scopes": scopes})), &old_token)).await;
    let old_key = key.ok(201)["key"].as_str().unwrap().to_owned();
    assert_eq!(send(&app, bearer(get("/v1/stations"), &old_token)).await.status, 200);
    assert_eq!(send(&app, bearer(get("/v1/stations"), &old_key)).await.status, 200);

    assert_eq!(send(&app, delete("/v1/users/carol")).await.status, 204);
    send(&app, post_json("/v1/users", carol("admin"))).await.ok(201);

    let mallory = json!({"username": "mallory", "password": "mallory-password", "role": "admin"});
    for old in [&old_token, &old_key] {
        send(&app, bearer(get("/v1/stations"), old)).await.problem(401, "unauthorized");
        send(&app, bearer(get("/v1/users"), old)).await.problem(401, "unauthorized");
        send(&app, bearer(post_json("/v1/users", mallory.clone()), old)).await.problem(401, "unauthorized");
    }
    send(&app, anonymous(post_json("/v1/auth/refresh", json!({"refresh_token": old_refresh}))))
        .await
        .problem(401, "unauthorized");
    send(&app, anonymous(post_json("/v1/auth/token", json!({"api_key": old_key})))).await.problem(401, "unauthorized");
    send(&app, login("mallory", "mallory-password")).await.problem(401, "unauthorized");

    // The new carol is herself, with her own role.
    let fresh = send(&app, login("carol", "carol-password")).await.ok(200)["access_token"].as_str().unwrap().to_owned();
    assert_eq!(send(&app, bearer(get("/v1/users"), &fresh)).await.status, 200);
}

/// Access tokens name the user by an immutable id, not by name: a token forged with a username
/// in `sub` (as tokens were before user ids) is refused.
#[actix_web::test]
async fn a_username_in_sub_is_not_a_user() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": "admin", "kind": "user", "role": "admin", "exp": now + 600, "iat": now,
                        "nbf": now, "iss": "depot", "aud": "depot", "jti": "old"});
    let old = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap();
    send(&app, bearer(get("/v1/stations"), &old)).await.problem(401, "unauthorized");
    let admin = n.auth.store().user("admin").await.unwrap().unwrap();
    assert!(admin.id.starts_with("usr_"), "{admin:?}");
    let claims = json!({"sub": admin.id, "kind": "user", "role": "member", "exp": now + 600, "iat": now,
                        "nbf": now, "iss": "depot", "aud": "depot", "jti": "new"});
    let by_id =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap();
    assert_eq!(send(&app, bearer(get("/v1/users"), &by_id)).await.status, 200, "the role comes from the store");
}

/// Blocks password jobs until opened, so tests hold the pool's workers without timing.
#[derive(Default)]
struct Gate {
    open: std::sync::Mutex<bool>,
    changed: std::sync::Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.changed.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.changed.notify_all();
    }
}

/// Holds every worker of the node's password pool until the gate opens.
async fn occupy_password_workers(n: &Node, gate: &std::sync::Arc<Gate>) -> Vec<tokio::task::JoinHandle<()>> {
    let workers = n.auth.passwords().size();
    let held: Vec<_> = (0..workers)
        .map(|_| {
            let (auth, gate) = (n.auth.clone(), gate.clone());
            actix_web::rt::spawn(async move { auth.passwords().run(move || gate.wait()).await.unwrap() })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while n.auth.passwords().running() < workers {
        assert!(std::time::Instant::now() < deadline, "the password workers never all started");
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    held
}

/// Issue 12, item 5: a login flood waits for the bounded password pool instead of starting a
/// blocking thread (and 19 MiB) per request, and the node keeps answering meanwhile.
#[actix_web::test]
async fn a_login_flood_runs_on_the_bounded_password_pool() {
    let mut config = AuthConfig::with_secret(SECRET.to_vec());
    config.password_workers = 2;
    config.password_wait = Duration::from_secs(600);
    let n = node_with_auth(config).await;
    let app = test::init_service(app(n.state())).await;
    let gate = std::sync::Arc::new(Gate::default());
    let held = occupy_password_workers(&n, &gate).await;

    let logins =
        futures_util::future::join_all((0..40).map(|i| send(&app, login(&format!("flood-{i}"), "wrong-password"))));
    let meanwhile = async {
        // Every worker is busy and 40 logins wait: the node still answers at once.
        send(&app, anonymous(get("/livez"))).await.ok(200);
        send(&app, get("/v1/stations")).await.ok(200);
        assert_eq!(n.auth.passwords().running(), 2, "the waiting logins started no work of their own");
        gate.open();
    };
    let (answers, ()) = futures_util::future::join(logins, meanwhile).await;
    for held in held {
        held.await.unwrap();
    }
    for answer in answers {
        answer.problem(401, "unauthorized");
    }
    assert_eq!(n.auth.passwords().peak(), 2, "never more password work at once than workers");
}

/// A login that finds no free password worker within the wait bound gets 503 with Retry-After.
#[actix_web::test]
async fn a_login_past_the_wait_bound_is_503_overloaded() {
    let mut config = AuthConfig::with_secret(SECRET.to_vec());
    config.password_workers = 1;
    config.password_wait = Duration::ZERO;
    let n = node_with_auth(config).await;
    let app = test::init_service(app(n.state())).await;
    let gate = std::sync::Arc::new(Gate::default());
    let held = occupy_password_workers(&n, &gate).await;
    let r = send(&app, login("admin", "admin-password")).await;
    r.problem(503, "overloaded");
    assert!(r.headers.get("retry-after").is_some(), "{r:?}");
    gate.open();
    for held in held {
        held.await.unwrap();
    }
    send(&app, login("admin", "admin-password")).await.ok(200);
}

/// Collects log lines written by the handlers (the actix test runtime runs them on this thread).
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The process's WARN and ERROR lines. A global subscriber, since a thread-local one can miss
    /// events while other tests run in parallel (tracing caches each call site's interest).
    fn global() -> Logs {
        static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_max_level(tracing::Level::WARN)
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
            logs
        })
        .clone()
    }
}

/// Issue 12, item 6: at most 10 failed password logins per username in 15 minutes, then 429 with
/// Retry-After even for the right password, with the same answer for an unknown username; each
/// failure is logged at WARN (username, client IP, request id, never the password) and counted.
#[actix_web::test]
async fn password_guessing_is_limited_per_username_logged_and_counted() {
    let logs = Logs::global();
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    let carol = json!({"username": "carol", "password": "carol-password", "role": "member"});
    send(&app, post_json("/v1/users", carol)).await.ok(201);
    let attempt = |user: &str, password: &str, id: &str| {
        login(user, password)
            .peer_addr("192.0.2.7:40000".parse().unwrap())
            .insert_header(("x-request-id", id.to_owned()))
    };

    let mut refusals = Vec::new();
    for user in ["carol", "ghost"] {
        for i in 0..10 {
            let r = send(&app, attempt(user, &format!("guess-{i}-secret"), &format!("{user}-{i}"))).await;
            r.problem(401, "unauthorized");
        }
        let r = send(&app, attempt(user, &format!("{user}-password"), &format!("{user}-locked"))).await;
        r.problem(429, "rate_limited");
        let retry: u64 = r.headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
        assert!((1..=900).contains(&retry), "{retry}");
        assert_eq!(r.headers.get("ratelimit-policy").unwrap(), "\"login\";q=10;w=900");
        refusals.push(r);
    }
    assert_eq!(refusals[0].body, refusals[1].body, "a known and an unknown username get the same answer");
    // Other usernames are not affected.
    send(&app, login("admin", "admin-password")).await.ok(200);

    let metrics = send(&app, get("/metrics")).await;
    let text = std::str::from_utf8(&metrics.raw).unwrap();
    assert!(text.contains("depot_login_failures_total{reason=\"wrong_credentials\"} 20\n"), "{text}");
    assert!(text.contains("depot_login_failures_total{reason=\"too_many_failures\"} 2\n"), "{text}");

    let logged = logs.text();
    let line =
        logged.lines().find(|l| l.contains("carol-3")).unwrap_or_else(|| panic!("no log of carol-3 in\n{logged}"));
    assert!(line.contains("WARN") && line.contains("username=carol") && line.contains("client_ip=192.0.2.7"), "{line}");
    assert!(logged.lines().any(|l| l.contains("username=ghost") && l.contains("ghost-locked")), "{logged}");
    let ours = logged.lines().filter(|l| l.contains("password login refused"));
    assert!(ours.clone().count() >= 22, "{logged}");
    for line in ours {
        assert!(!line.contains("-secret") && !line.contains("carol-password"), "a password in the logs: {line}");
    }
}
