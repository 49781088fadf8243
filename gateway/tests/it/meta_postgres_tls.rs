//! The Postgres metadata store over TLS, against a TLS-only throwaway Postgres whose certificate
//! (for `localhost` and `127.0.0.1`) is signed by a CA made up for the run (`depot-pgtest`'s
//! `tls_database`): each `sslmode`, a CA from the URL or from the `metadata_ca_file` setting, and
//! the failures an operator meets, each named by its message.

#![allow(clippy::unwrap_used)]

use depot_pgtest as pg;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::e2e::{depot, send, Server};
use crate::meta_postgres::user;
use depot_gateway::meta::postgres::{split_url, PgTls, SCHEMA_VERSION};
use depot_gateway::meta::{Invalidation, MetaError, MetadataStore, PoolOptions, PostgresStore};

/// `query`'s `{ca}` replaced by the test CA's file, percent-encoded.
fn with_ca(query: &str, db: &pg::TlsDatabase) -> String {
    let ca: String =
        percent_encoding::utf8_percent_encode(db.ca_file.to_str().unwrap(), percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    query.replace("{ca}", &ca)
}

/// A raw connection to `url` through the store's own kind of connector, for looking behind its back.
async fn raw(url: &str) -> tokio_postgres::Client {
    let split = split_url(url).unwrap();
    let tls = PgTls::new(split.sslmode, split.sslrootcert.as_deref(), None).unwrap();
    let mut config: tokio_postgres::Config = split.rest.parse().unwrap();
    config.ssl_mode(tls.tokio_mode());
    let (client, connection) = config.connect(tls.connector.clone()).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Whether the server sees the session `url` opens as encrypted.
async fn session_is_encrypted(url: &str) -> bool {
    let row = raw(url).await.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap();
    row.get(0)
}

/// Migrates through `url` and round-trips a user; the failure's message, if any.
async fn migrate_and_round_trip(url: &str, ca_file: Option<&Path>) -> Result<(), String> {
    let store = PostgresStore::connect_with_ca_file(url, PoolOptions::default(), ca_file).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let migrated = store.migrate().await.map_err(|e| e.to_string());
    assert!(started.elapsed() < Duration::from_secs(10), "migrate took {:?}", started.elapsed());
    migrated?;
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    store.create_user(&user("tls")).await.unwrap();
    assert_eq!(store.user("tls").await.unwrap(), Some(user("tls")));
    Ok(())
}

fn unavailable(e: MetaError) -> String {
    assert!(matches!(e, MetaError::Unavailable(_)), "{e:?}");
    e.to_string()
}

#[tokio::test]
async fn require_encrypts_every_connection_and_listen_hears_deletions() {
    let db = pg::tls_database().await;
    let url = db.url("127.0.0.1", "sslmode=require");
    let store = PostgresStore::connect(&url, PoolOptions::default()).unwrap();
    store.migrate().await.unwrap();
    store.create_user(&user("ana")).await.unwrap();
    assert_eq!(store.user("ana").await.unwrap(), Some(user("ana")));
    assert!(session_is_encrypted(&url).await, "sslmode=require makes an encrypted session");

    // The LISTEN connection goes through the same connector.
    let mut heard = store.invalidations().await.unwrap().expect("Postgres announces deletions");
    let first = tokio::time::timeout(Duration::from_secs(10), heard.recv()).await.unwrap();
    assert_eq!(first, Some(Invalidation::All), "LISTEN took effect over TLS");
    assert!(store.delete_user("ana").await.unwrap());
    let next = tokio::time::timeout(Duration::from_secs(10), heard.recv()).await.unwrap();
    assert_eq!(next, Some(Invalidation::User("ana".to_owned())));
}

#[tokio::test]
async fn prefer_uses_tls_when_the_server_offers_it() {
    let db = pg::tls_database().await;
    // No sslmode: libpq's and tokio-postgres's default, prefer.
    let url = db.url("127.0.0.1", "");
    migrate_and_round_trip(&url, None).await.unwrap();
    assert!(session_is_encrypted(&url).await);
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_name() {
    let db = pg::tls_database().await;
    let url = db.url("127.0.0.1", &with_ca("sslmode=verify-ca&sslrootcert={ca}", &db));
    migrate_and_round_trip(&url, None).await.unwrap();
    // A host name the certificate does not carry (the address given apart): verify-ca accepts it.
    let other_name = db.url("wrong.invalid", &with_ca("sslmode=verify-ca&sslrootcert={ca}&hostaddr=127.0.0.1", &db));
    assert!(session_is_encrypted(&other_name).await);
    // The CA from the setting instead of the URL.
    let db = pg::tls_database().await;
    migrate_and_round_trip(&db.url("127.0.0.1", "sslmode=verify-ca"), Some(&db.ca_file)).await.unwrap();
}

#[tokio::test]
async fn verify_full_checks_the_name() {
    let db = pg::tls_database().await;
    migrate_and_round_trip(&db.url("localhost", &with_ca("sslmode=verify-full&sslrootcert={ca}", &db)), None)
        .await
        .unwrap();
    // The certificate also names the address.
    let db = pg::tls_database().await;
    migrate_and_round_trip(&db.url("127.0.0.1", "sslmode=verify-full"), Some(&db.ca_file)).await.unwrap();

    let db = pg::tls_database().await;
    let url = db.url("wrong.invalid", &with_ca("sslmode=verify-full&sslrootcert={ca}&hostaddr=127.0.0.1", &db));
    let e = migrate_and_round_trip(&url, None).await.unwrap_err();
    assert!(e.contains("invalid peer certificate"), "{e}");
    assert!(e.contains("not valid for name") && e.contains("wrong.invalid"), "{e}");
    assert!(e.contains("sslmode=verify-full"), "{e}");
    // The pool's connections fail the same way.
    let store = PostgresStore::connect(&url, PoolOptions::default()).unwrap();
    let e = unavailable(store.user("x").await.unwrap_err());
    assert!(e.contains("not valid for name") && e.contains("sslmode=verify-full"), "{e}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let db = pg::tls_database().await;
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, pg::TestCa::new("another CA").pem()).unwrap();
    for mode in ["verify-ca", "verify-full"] {
        let e =
            migrate_and_round_trip(&db.url("localhost", &format!("sslmode={mode}")), Some(&other)).await.unwrap_err();
        assert!(e.contains("invalid peer certificate: UnknownIssuer"), "{e}");
        assert!(e.contains(&format!("sslmode={mode}")) && e.contains("other-ca.pem"), "{e}");
    }
    // As in libpq, require with a CA file verifies the chain.
    let e = migrate_and_round_trip(&db.url("localhost", "sslmode=require"), Some(&other)).await.unwrap_err();
    assert!(e.contains("UnknownIssuer") && e.contains("sslmode=require, checked as verify-ca"), "{e}");
    let store = PostgresStore::connect_with_ca_file(
        &db.url("localhost", "sslmode=verify-ca"),
        PoolOptions::default(),
        Some(&other),
    )
    .unwrap();
    let e = unavailable(store.user("x").await.unwrap_err());
    assert!(e.contains("UnknownIssuer") && e.contains("sslmode=verify-ca"), "{e}");
}

#[tokio::test]
async fn disable_against_a_tls_only_server_says_it_demands_tls() {
    let db = pg::tls_database().await;
    let url = db.url("127.0.0.1", "sslmode=disable");
    let e = migrate_and_round_trip(&url, None).await.unwrap_err();
    assert!(e.contains("pg_hba.conf rejects connection") && e.contains("no encryption"), "{e}");
    assert!(e.contains("the server demands TLS") && e.contains("sslmode=disable"), "{e}");
    let store = PostgresStore::connect(&url, PoolOptions::default()).unwrap();
    let started = Instant::now();
    let e = unavailable(store.user("x").await.unwrap_err());
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(e.contains("the server demands TLS"), "{e}");
}

#[tokio::test]
async fn an_unknown_sslmode_or_a_missing_ca_file_fails_at_connect() {
    let db = pg::tls_database().await;
    let e = unavailable(
        PostgresStore::connect(&db.url("localhost", "sslmode=verify_full"), PoolOptions::default()).unwrap_err(),
    );
    assert!(e.contains("sslmode=\"verify_full\" is not supported"), "{e}");
    let missing = Path::new("/nonexistent/depot-ca.pem");
    let e = unavailable(
        PostgresStore::connect_with_ca_file(
            &db.url("localhost", "sslmode=verify-full"),
            PoolOptions::default(),
            Some(missing),
        )
        .unwrap_err(),
    );
    assert!(e.contains("reading the CA file /nonexistent/depot-ca.pem"), "{e}");
}

/// Runs `depot migrate` with `args`, waiting at most a minute: (success, stdout + stderr).
fn depot_migrate(args: &[&str]) -> (bool, String) {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(depot())
        .arg("migrate")
        .args(args)
        .arg("--data-dir")
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("depot migrate {args:?} still runs after a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut out).unwrap();
    (status.success(), out)
}

#[tokio::test]
async fn depot_migrate_takes_the_ca_file_setting_and_refuses_an_unknown_sslmode() {
    let db = pg::tls_database().await;
    let url = db.url("localhost", "sslmode=verify-full");
    let ca = db.ca_file.to_str().unwrap().to_owned();
    let (ok, out) =
        tokio::task::spawn_blocking(move || depot_migrate(&["--metadata-url", &url, "--metadata-ca-file", &ca]))
            .await
            .unwrap();
    assert!(ok, "{out}");
    assert!(out.contains(&format!("schema at version {SCHEMA_VERSION}")), "{out}");

    let url = db.url("localhost", "sslmode=verify-fll");
    let (ok, out) = tokio::task::spawn_blocking(move || depot_migrate(&["--metadata-url", &url])).await.unwrap();
    assert!(!ok, "{out}");
    assert!(out.contains("sslmode=\"verify-fll\" is not supported"), "{out}");
    assert!(!out.contains("postgres@"), "the URL is never echoed: {out}");
}

#[tokio::test]
async fn require_against_a_server_without_tls_is_refused() {
    // The shared plain server: no TLS at all.
    let url = pg::database().await;
    let e = migrate_and_round_trip(&format!("{url}?sslmode=require"), None).await.unwrap_err();
    assert!(e.contains("server does not support TLS") && e.contains("sslmode=require"), "{e}");
    // prefer, the default, falls back to plain.
    migrate_and_round_trip(&url, None).await.unwrap();
}

/// A statement stuck on a lock is cancelled on the server when the call times out: the cancel
/// request goes over TLS too (the server refuses it in plain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_statement_is_cancelled_over_tls() {
    let db = pg::tls_database().await;
    let url = db.url("localhost", &with_ca("sslmode=verify-full&sslrootcert={ca}", &db));
    let timeout = Duration::from_secs(1);
    let options = PoolOptions { max_size: 2, query_timeout: timeout, ..PoolOptions::default() };
    let store = PostgresStore::connect(&url, options).unwrap();
    store.migrate().await.unwrap();
    store.create_user(&user("alice")).await.unwrap();

    let mut locker = raw(&url).await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let outcome = store.user_count().await;
    assert!(matches!(outcome, Err(MetaError::Unavailable(_))), "{outcome:?}");
    crate::meta_postgres::wait_until_no_statement_waits_for_a_lock(&tx).await;
    tx.rollback().await.unwrap();
    assert_eq!(store.user_count().await.unwrap(), 1, "the store works once the lock is gone");
}

/// `depot serve` on the TLS-only server with `verify-full` and the CA from `DEPOT_METADATA_CA_FILE`:
/// it migrates at start, the admin logs in (a read of the store), and `/readyz` is ready.
#[tokio::test]
async fn depot_serve_runs_on_a_tls_only_postgres() {
    let db = pg::tls_database().await;
    let url = db.url("localhost", "sslmode=verify-full");
    let ca = db.ca_file.clone();
    tokio::task::spawn_blocking(move || {
        let data = tempfile::tempdir().unwrap();
        let mut command = Command::new(depot());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--metadata-url", &url, "--data-dir"])
            .arg(data.path())
            .env("DEPOT_METADATA_CA_FILE", &ca)
            .env("DEPOT_LOG", "warn")
            .env("DEPOT_ADMIN_PASSWORD", "tls-admin-password")
            .env("DEPOT_RATE_LIMIT", "off")
            .stderr(Stdio::null());
        let server = Server::start("depot serve", command, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
        let body = br#"{"username": "admin", "password": "tls-admin-password"}"#;
        let json = [("Content-Type", "application/json")];
        let login = send(server.addr, None, "POST", "/v1/auth/token", &json, body);
        assert_eq!(login.status, 200, "{login:?}");
        let ready = send(server.addr, None, "GET", "/readyz", &[], b"");
        assert_eq!(ready.status, 200, "{ready:?}");
        let exit = server.stop(Duration::from_secs(30)).unwrap();
        assert!(exit.success(), "depot serve exited with {exit} after SIGTERM");
    })
    .await
    .unwrap();
}
