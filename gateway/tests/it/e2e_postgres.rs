//! `depot serve` on a real Postgres metadata store, end to end: dead letters are listed from the
//! broker and never copied into Postgres; with Postgres down the data path keeps working (dead
//! letters included), /readyz says why not, credential checks fail closed once the cache TTL runs
//! out, and no request hangs.

#![allow(clippy::unwrap_used)]

use depot_pgtest as pg;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::e2e::{depot, eventually, send, Response, Server};
use serde_json::{json, Value};

const PASSWORD: &str = "pg-admin-password";

/// `depot serve`, with the admin's token once logged in.
struct Serve {
    server: Server,
}

/// Starts `depot serve` and logs in as admin.
fn serve(data_dir: &Path, url: &str, env: &[(&str, &str)]) -> Serve {
    let mut server = spawn(data_dir, url, env);
    let login = server.call(None, "POST", "/v1/auth/token", Some(json!({"username": "admin", "password": PASSWORD})));
    assert_eq!(login.status, 200, "{login:?}");
    server.server.token = login.body["access_token"].as_str().unwrap().to_owned();
    server
}

/// Starts `depot serve` and waits for its address.
fn spawn(data_dir: &Path, url: &str, env: &[(&str, &str)]) -> Serve {
    let mut command = Command::new(depot());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--metadata-url", url, "--data-dir"])
        .arg(data_dir)
        .env("DEPOT_LOG", "warn")
        .env("DEPOT_ADMIN_PASSWORD", PASSWORD)
        .env("DEPOT_RATE_LIMIT", "off")
        .stderr(Stdio::null())
        .envs(env.iter().copied());
    Serve { server: Server::start("depot serve", command, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}")) }
}

impl Serve {
    fn call(&self, token: Option<&str>, method: &str, path: &str, body: Option<Value>) -> Response {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        send(self.server.addr, token, method, path, &[("Content-Type", "application/json")], &bytes)
    }

    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        self.call(Some(&self.server.token), method, path, body)
    }

    /// Produces `n` messages on a new station and dead-letters them all for group `g`.
    fn dead_letter(&self, station: &str, n: usize) {
        assert_eq!(self.admin("PUT", &format!("/v1/stations/{station}"), None).status, 201);
        assert_eq!(self.admin("PUT", &format!("/v1/stations/{station}/consumer-groups/g"), None).status, 201);
        for i in 0..n {
            assert_eq!(
                self.admin("POST", &format!("/v1/stations/{station}/messages"), Some(json!({"i": i}))).status,
                201
            );
        }
        let group = format!("/v1/stations/{station}/consumer-groups/g");
        let fetched = self.admin("POST", &format!("{group}/fetch"), Some(json!({"max_messages": n})));
        let receipts: Vec<Value> =
            fetched.body["messages"].as_array().unwrap().iter().map(|m| m["receipt"].clone()).collect();
        assert_eq!(receipts.len(), n);
        let body = json!({"receipts": receipts, "reason": "poison"});
        assert_eq!(self.admin("POST", &format!("{group}/dead-letter"), Some(body)).status, 200);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// (rows, distinct (station, group, offset)) of a station's pointers in Postgres.
fn pointers(rt: &tokio::runtime::Runtime, url: &str, station: &str) -> (i64, i64) {
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        let driver = tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT count(*), count(DISTINCT (grp, \"offset\")) FROM dead_letters WHERE station = $1",
                &[&station],
            )
            .await
            .unwrap();
        driver.abort();
        (row.get(0), row.get(1))
    })
}

/// Dead letters are kept once, in the broker: listed through the API after a restart, never
/// copied into the metadata store's old `dead_letters` table.
#[test]
fn dead_letters_are_listed_from_the_broker_and_not_copied_to_postgres() {
    let rt = runtime();
    let server = pg::PgServer::start();
    let url = rt.block_on(server.database());
    let dir = tempfile::tempdir().unwrap();

    let depot = serve(dir.path(), &url, &[]);
    depot.dead_letter("poisoned", 5);
    let listed = depot.admin("GET", "/v1/stations/poisoned/dead-letters?limit=2", None);
    assert_eq!(listed.body["dead_letters"].as_array().unwrap().len(), 2, "{:?}", listed.body);
    assert!(listed.body["next_cursor"].is_string(), "a page of 2 of 5 has a next page");
    drop(depot);

    let depot = serve(dir.path(), &url, &[]);
    let listed = depot.admin("GET", "/v1/stations/poisoned/dead-letters", None);
    assert_eq!(listed.body["dead_letters"].as_array().unwrap().len(), 5, "{:?}", listed.body);
    assert_eq!(pointers(&rt, &url, "poisoned"), (0, 0), "no copy in the metadata store");
}

#[test]
fn postgres_down_keeps_the_data_path_and_fails_credentials_closed() {
    let rt = runtime();
    let server = pg::PgServer::start();
    let url = rt.block_on(server.database());
    let dir = tempfile::tempdir().unwrap();
    let depot =
        serve(dir.path(), &url, &[("DEPOT_CREDENTIAL_CACHE_TTL_MS", "4000"), ("DEPOT_METADATA_TIMEOUT_MS", "1000")]);
    let key = depot.admin(
        "POST",
        "/v1/api-keys",
        Some(json!({"name": "worker", "scopes": [{"stations": "*", "actions": ["produce", "consume", "manage"]}]})),
    );
    let key = key.body["key"].as_str().unwrap().to_owned();
    assert_eq!(depot.call(Some(&key), "PUT", "/v1/stations/orders", None).status, 201);
    assert_eq!(depot.call(Some(&key), "PUT", "/v1/stations/orders/consumer-groups/g", None).status, 201);
    assert_eq!(depot.admin("GET", "/readyz", None).status, 200);

    // A producer keeps going through the whole outage; what it was told is stored must be there.
    assert_eq!(depot.call(Some(&key), "PUT", "/v1/stations/load", None).status, 201);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (addr, key, stop) = (depot.server.addr, key.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut acked, mut refused) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = send(addr, Some(&key), "POST", "/v1/stations/load/messages", &[], b"x");
                match r.status {
                    201 => acked += 1,
                    503 => refused += 1,
                    other => panic!("produce answered {other}: {r:?}"),
                }
            }
            (acked, refused)
        })
    };

    server.stop();
    // The key is cached: produce, fetch, ack and dead-letter keep working.
    let started = Instant::now();
    for i in 0..5 {
        let r = depot.call(Some(&key), "POST", "/v1/stations/orders/messages", Some(json!({"i": i})));
        assert_eq!(r.status, 201, "{r:?}");
    }
    let fetched =
        depot.call(Some(&key), "POST", "/v1/stations/orders/consumer-groups/g/fetch", Some(json!({"max_messages": 5})));
    let receipts: Vec<Value> =
        fetched.body["messages"].as_array().unwrap().iter().map(|m| m["receipt"].clone()).collect();
    assert_eq!(receipts.len(), 5, "{fetched:?}");
    let acked = depot.call(
        Some(&key),
        "POST",
        "/v1/stations/orders/consumer-groups/g/ack",
        Some(json!({"receipts": receipts[..3]})),
    );
    assert_eq!(acked.body["results"], json!(["ok", "ok", "ok"]));
    let dl = depot.call(
        Some(&key),
        "POST",
        "/v1/stations/orders/consumer-groups/g/dead-letter",
        Some(json!({"receipts": receipts[3..]})),
    );
    assert_eq!(dl.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "the data path waited on Postgres: {:?}",
        started.elapsed()
    );

    let ready = depot.call(None, "GET", "/readyz", None);
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(ready.body["reason"].as_str().unwrap().contains("metadata store"), "{ready:?}");

    // Past the cache TTL the key cannot be checked: refused with 503, never let through, and
    // answered within the store timeout.
    eventually(Duration::from_secs(10), "the cached key to expire and fail closed", || {
        let asked = Instant::now();
        let r = depot.call(Some(&key), "GET", "/v1/stations/orders", None);
        assert!(asked.elapsed() < Duration::from_secs(4), "a request hung on Postgres: {:?}", asked.elapsed());
        assert!(r.status == 200 || r.status == 503, "{r:?}");
        (r.status == 503).then(|| r.problem(503, "metadata_unavailable"))
    });
    let login = depot.call(None, "POST", "/v1/auth/token", Some(json!({"username": "admin", "password": PASSWORD})));
    login.problem(503, "metadata_unavailable");

    server.start_again().unwrap();
    eventually(Duration::from_secs(20), "readiness after Postgres returns", || {
        (depot.call(None, "GET", "/readyz", None).status == 200).then_some(())
    });
    assert_eq!(depot.call(Some(&key), "GET", "/v1/stations/orders", None).status, 200);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, refused) = producer.join().unwrap();
    let load = depot.call(Some(&key), "GET", "/v1/stations/load", None);
    assert_eq!(load.body["stats"]["messages"], json!(acked), "acknowledged produces lost or extra: {load:?}");
    assert!(
        acked > 0 && refused > 0,
        "the load ran through the outage: {acked} acked, {refused} refused (fail closed)"
    );
    let listed = depot.call(Some(&key), "GET", "/v1/stations/orders/dead-letters", None);
    assert_eq!(
        listed.body["dead_letters"].as_array().map(Vec::len),
        Some(2),
        "made while Postgres was down: {listed:?}"
    );
    let group = depot.call(Some(&key), "GET", "/v1/stations/orders/consumer-groups/g", None);
    // Acked and dead-lettered while Postgres was down: all five are settled.
    assert_eq!((&group.body["acked_floor"], &group.body["dead_lettered"]), (&json!(5), &json!(2)), "{group:?}");
}

#[test]
fn depot_migrate_applies_once_then_does_nothing() {
    let rt = runtime();
    let server = pg::PgServer::start();
    let url = rt.block_on(server.database());
    let migrate = || {
        let out = Command::new(env!("CARGO_BIN_EXE_depot"))
            .args(["migrate", "--metadata-url", &url])
            .env("DEPOT_LOG", "warn")
            .output()
            .unwrap();
        assert!(out.status.success(), "depot migrate failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let latest = depot_gateway::meta::postgres::SCHEMA_VERSION;
    let all: Vec<i32> = (1..=latest).collect();
    let first = migrate();
    assert!(
        first.contains(&format!("version {latest}")) && first.contains(&format!("applied now: {all:?}")),
        "{first}"
    );
    let second = migrate();
    assert!(second.contains(&format!("version {latest}")) && second.contains("applied now: []"), "{second}");
}
