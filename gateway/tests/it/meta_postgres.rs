//! The Postgres metadata store against a real Postgres (see `depot-pgtest` for which one): the
//! conformance suite, migrations, the EXPLAIN plans of the dead-letter list queries, hostile strings
//! and bounded waits when Postgres is down or stuck.

#![allow(clippy::unwrap_used)]

use depot_pgtest as pg;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::meta::conformance;
use depot_gateway::meta::postgres::{MIGRATIONS, MIGRATION_LOCK, SCHEMA_VERSION};
use depot_gateway::meta::{
    Action, ApiKey, AuditEntry, MetaError, MetadataStore, PoolOptions, PostgresStore, RefreshOutcome, RefreshToken,
    Role, Scope, User,
};
use serde_json::Value;
use tokio_postgres::{Client, NoTls};

async fn store(url: &str) -> PostgresStore {
    let store = PostgresStore::connect(url, PoolOptions::default()).unwrap();
    store.migrate().await.unwrap();
    store
}

/// A raw connection to `url`, for looking behind the store's back.
async fn raw(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

pub(crate) fn user(name: &str) -> User {
    User {
        id: format!("usr_{name}"),
        username: name.to_owned(),
        password_hash: "$argon2id$x".to_owned(),
        role: Role::Admin,
        created_at: 1,
    }
}

fn key(id: &str, owner: &str, digest: u8) -> ApiKey {
    ApiKey {
        id: id.to_owned(),
        name: "ci".to_owned(),
        owner: owner.to_owned(),
        owner_id: format!("usr_{owner}"),
        digest: [digest; 32],
        scopes: vec![Scope { stations: "*".to_owned(), actions: vec![Action::Produce] }],
        created_at: 2,
        expires_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_postgres() {
    let store: Arc<dyn MetadataStore> = Arc::new(store(&pg::database().await).await);
    conformance::run(Arc::clone(&store)).await;
    // Again on the same database: the suite must not depend on a clean slate.
    conformance::run(store).await;
}

/// Migration 2 gives the users of a version-1 database ids, and binds their keys to them.
#[tokio::test]
async fn upgrading_gives_existing_users_ids_and_binds_their_keys() {
    let url = pg::database().await;
    let db = raw(&url).await;
    db.batch_execute(
        "CREATE TABLE depot_schema_migrations (version INTEGER NOT NULL PRIMARY KEY, \
         applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await
    .unwrap();
    db.batch_execute(MIGRATIONS[0].1).await.unwrap();
    db.batch_execute(
        "INSERT INTO depot_schema_migrations (version) VALUES (1);
         INSERT INTO users VALUES ('old-a', '$argon2id$x', 'admin', 1), ('old-b', '$argon2id$x', 'member', 1);
         INSERT INTO api_keys VALUES ('key_a', 'k', 'old-a', decode(repeat('01', 32), 'hex'), '[]', 2, NULL);",
    )
    .await
    .unwrap();
    let store = store(&url).await;
    let (a, b) = (store.user("old-a").await.unwrap().unwrap(), store.user("old-b").await.unwrap().unwrap());
    assert!(a.id.starts_with("usr_") && b.id.starts_with("usr_") && a.id != b.id, "{a:?} {b:?}");
    assert_eq!(store.user_by_id(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.api_key("key_a").await.unwrap().unwrap().owner_id, a.id, "a key is bound to its owner's id");
}

use crate::meta::revival;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_users_credentials_never_work_again_on_postgres() {
    let store: Arc<dyn MetadataStore> = Arc::new(store(&pg::database().await).await);
    revival::a_deleted_users_credentials_never_work_again(store).await;
}

#[tokio::test]
async fn migrations_applied_twice_are_a_no_op() {
    let url = pg::database().await;
    let store = PostgresStore::connect(&url, PoolOptions::default()).unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 0, "a fresh database has no schema");
    let all: Vec<i32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
    assert_eq!(all, (1..=SCHEMA_VERSION).collect::<Vec<_>>(), "migrations are numbered 1, 2, 3...");
    assert_eq!(store.migrate().await.unwrap(), all, "the first migrate applies every migration");
    store.create_user(&user("alice")).await.unwrap();
    assert_eq!(store.migrate().await.unwrap(), Vec::<i32>::new(), "the second migrate applies nothing");
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    let c = raw(&url).await;
    let rows = c.query("SELECT version FROM depot_schema_migrations ORDER BY version", &[]).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>(), all, "each version recorded once");
    assert_eq!(store.user("alice").await.unwrap(), Some(user("alice")), "migrating again keeps the data");
}

#[tokio::test]
async fn concurrent_migrators_serialize() {
    let url = pg::database().await;
    let (a, b) = (
        PostgresStore::connect(&url, PoolOptions::default()).unwrap(),
        PostgresStore::connect(&url, PoolOptions::default()).unwrap(),
    );
    // Hold the migration lock, so both migrators are seen waiting on it before either runs.
    let holder = raw(&url).await;
    holder.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.unwrap();
    let (ta, tb) = (tokio::spawn(async move { a.migrate().await }), tokio::spawn(async move { b.migrate().await }));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = holder
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "both migrators must wait on the advisory lock ({waiting} waiting)");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    holder.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await.unwrap();
    let mut applied = vec![ta.await.unwrap().unwrap(), tb.await.unwrap().unwrap()];
    applied.sort();
    let all: Vec<i32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
    assert_eq!(applied, [vec![], all], "one migrator applies everything, the other then finds nothing to do");
    let store = store(&url).await;
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    store.create_user(&user("alice")).await.unwrap();
}

#[tokio::test]
async fn refuses_a_newer_schema() {
    let url = pg::database().await;
    let store = store(&url).await;
    raw(&url)
        .await
        .execute("INSERT INTO depot_schema_migrations (version) VALUES ($1)", &[&(SCHEMA_VERSION + 1)])
        .await
        .unwrap();
    assert!(matches!(store.migrate().await, Err(MetaError::Corrupt(_))), "a newer schema must be refused");
}

#[tokio::test]
async fn undecodable_rows_are_corrupt() {
    let url = pg::database().await;
    let store = store(&url).await;
    store.create_user(&user("alice")).await.unwrap();
    store.create_api_key(&key("key_1", "alice", 7)).await.unwrap();
    store
        .append_audit(&AuditEntry {
            at: 1,
            actor: "a".into(),
            action: "x".into(),
            target: "t".into(),
            detail: Value::Null,
        })
        .await
        .unwrap();
    let c = raw(&url).await;
    c.batch_execute(
        "UPDATE users SET role = 'root'; UPDATE api_keys SET scopes = 'not json'; \
         UPDATE audit_log SET detail = '{'",
    )
    .await
    .unwrap();
    assert!(matches!(store.user("alice").await, Err(MetaError::Corrupt(_))));
    assert!(matches!(store.users().await, Err(MetaError::Corrupt(_))));
    assert!(matches!(store.api_key("key_1").await, Err(MetaError::Corrupt(_))));
    assert!(matches!(store.audit_log(None, 10).await, Err(MetaError::Corrupt(_))));
    c.batch_execute("UPDATE api_keys SET scopes = '[]', digest = '\\x0102'").await.unwrap();
    assert!(matches!(store.api_key("key_1").await, Err(MetaError::Corrupt(_))), "a digest of the wrong length");
}

#[tokio::test]
async fn integrity_and_limits() {
    let store = store(&pg::database().await).await;
    assert!(store.create_api_key(&key("key_orphan", "nobody", 1)).await.is_err(), "a key needs an existing owner");
    store.create_user(&user("alice")).await.unwrap();
    store.create_api_key(&key("key_1", "alice", 7)).await.unwrap();
    assert!(
        matches!(store.create_api_key(&key("key_2", "alice", 7)).await, Err(MetaError::Conflict(_))),
        "digests are unique"
    );
    let token =
        RefreshToken { digest: [9; 32], family: "f".into(), username: "alice".into(), issued_at: 1, expires_at: 9 };
    store.insert_refresh_token(&token).await.unwrap();
    assert!(
        matches!(store.insert_refresh_token(&token).await, Err(MetaError::Conflict(_))),
        "token digests are unique"
    );
    let clash = RefreshToken { digest: [9; 32], ..token.clone() };
    assert!(
        matches!(store.rotate_refresh_token(&[9; 32], 2, &clash).await, Err(MetaError::Conflict(_))),
        "a replacement with a taken digest is a Conflict"
    );
    let next = RefreshToken { digest: [10; 32], ..token.clone() };
    assert_eq!(
        store.rotate_refresh_token(&[9; 32], 2, &next).await.unwrap(),
        RefreshOutcome::Rotated { username: "alice".into(), family: "f".into() },
        "a failed rotation changes nothing"
    );
}

#[tokio::test]
async fn hostile_strings_are_stored_verbatim_and_inert() {
    const PAYLOADS: [&str; 8] = [
        "'; DROP TABLE users; --",
        "\" OR 1=1 --",
        "x' OR '1'='1",
        "$1 $2 ?1 :name %s {}",
        "%",
        "_",
        "back\\slash \\x00 E'\\n'",
        "$$; DROP TABLE dead_letters; $$",
    ];
    let url = pg::database().await;
    let store = store(&url).await;
    for (i, payload) in PAYLOADS.iter().enumerate() {
        let username = format!("u{i}{payload}");
        store.create_user(&user(&username)).await.unwrap();
        let k = ApiKey { name: payload.to_string(), ..key(&format!("key_{payload}"), &username, i as u8) };
        store.create_api_key(&k).await.unwrap();
        assert_eq!(store.api_key(&k.id).await.unwrap(), Some(k.clone()), "a hostile key id round-trips");

        let t = RefreshToken {
            digest: [100 + i as u8; 32],
            family: payload.to_string(),
            username: username.clone(),
            issued_at: 1,
            expires_at: 100,
        };
        store.insert_refresh_token(&t).await.unwrap();
        let next = RefreshToken { digest: [200 + i as u8; 32], ..t.clone() };
        assert_eq!(
            store.rotate_refresh_token(&t.digest, 2, &next).await.unwrap(),
            RefreshOutcome::Rotated { username: username.clone(), family: payload.to_string() },
            "a hostile family and username round-trip"
        );

        let e = AuditEntry {
            at: 1,
            actor: payload.to_string(),
            action: "x".into(),
            target: "t".into(),
            detail: Value::Object([(payload.to_string(), Value::from(*payload))].into_iter().collect()),
        };
        store.append_audit(&e).await.unwrap();
        assert_eq!(store.audit_log(None, 1).await.unwrap()[0].entry, e, "a hostile actor round-trips");
    }
    // Wildcards are not patterns: "%" and "_" match only themselves.
    for wildcard in ["%", "_"] {
        assert_eq!(store.api_keys(Some(&format!("u{wildcard}"))).await.unwrap().len(), 0);
        assert_eq!(store.user(&format!("u{wildcard}")).await.unwrap(), None);
    }
    // Everything is still there, verbatim, in the tables themselves.
    let c = raw(&url).await;
    let stored: Vec<String> =
        c.query("SELECT actor FROM audit_log ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(stored, PAYLOADS, "audit actors are stored verbatim");
    let families: Vec<String> = c
        .query("SELECT DISTINCT family FROM refresh_tokens ORDER BY family", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut want: Vec<String> = PAYLOADS.iter().map(|p| p.to_string()).collect();
    want.sort();
    assert_eq!(families, want, "families are stored verbatim");
    assert_eq!(store.user_count().await.unwrap(), PAYLOADS.len() as u64, "no user was added or dropped");

    // Deletes by hostile names delete exactly their own rows.
    for (i, payload) in PAYLOADS.iter().enumerate() {
        assert!(store.revoke_refresh_family(&[100 + i as u8; 32]).await.unwrap());
        assert!(store.delete_api_key(&format!("key_{payload}")).await.unwrap());
        assert!(store.delete_user(&format!("u{i}{payload}")).await.unwrap());
    }
    assert_eq!(store.user_count().await.unwrap(), 0);
    let tables: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = ANY($1)",
            &[&vec!["users", "api_keys", "refresh_tokens", "audit_log", "dead_letters"]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 5, "every table survived");

    // Postgres text cannot hold U+0000: such a string is refused, not truncated, and stores nothing.
    assert!(store.create_user(&user("nul\0byte")).await.is_err());
    assert_eq!(store.user_count().await.unwrap(), 0);
}

/// Postgres stopped: calls fail fast as `Unavailable`; restarted: they work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_is_unavailable_within_the_pool_timeout() {
    // Its own server: stopping the shared one would break the other tests.
    let server = pg::PgServer::start();
    let url = server.database().await;
    let timeout = Duration::from_secs(2);
    let options = PoolOptions {
        max_size: 4,
        wait_timeout: timeout,
        create_timeout: timeout,
        recycle_timeout: timeout,
        query_timeout: timeout,
    };
    let store = PostgresStore::connect(&url, options).unwrap();
    store.migrate().await.unwrap();
    store.create_user(&user("alice")).await.unwrap();
    store.ping().await.unwrap();

    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let outcome = store.user("alice").await;
        let took = started.elapsed();
        assert!(matches!(outcome, Err(MetaError::Unavailable(_))), "Postgres down must be Unavailable: {outcome:?}");
        assert!(took < timeout + Duration::from_secs(1), "a call must not wait past the pool timeout: {took:?}");
    }
    assert!(matches!(store.ping().await, Err(MetaError::Unavailable(_))));

    server.start_again().unwrap();
    assert_eq!(store.user("alice").await.unwrap(), Some(user("alice")), "calls work again after a restart");
    store.ping().await.unwrap();
}

/// A server that accepts TCP connections and never answers: connecting is bounded too.
#[tokio::test]
async fn a_silent_server_is_unavailable_within_the_create_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let timeout = Duration::from_millis(800);
    let options = PoolOptions {
        max_size: 2,
        wait_timeout: timeout,
        create_timeout: timeout,
        recycle_timeout: timeout,
        query_timeout: timeout,
    };
    let store = PostgresStore::connect(&format!("postgres://postgres@127.0.0.1:{port}/x"), options).unwrap();
    for _ in 0..2 {
        let started = Instant::now();
        let outcome = store.ping().await;
        let took = started.elapsed();
        assert!(matches!(outcome, Err(MetaError::Unavailable(_))), "{outcome:?}");
        assert!(took < timeout + Duration::from_millis(700), "connecting must give up in time: {took:?}");
    }
    let started = Instant::now();
    assert!(matches!(store.migrate().await, Err(MetaError::Unavailable(_))));
    assert!(started.elapsed() < timeout + Duration::from_millis(700), "migrate's connect is bounded too");
    drop(listener);
}

/// A statement stuck on a lock: the call gives up after the query timeout, the store recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_statement_is_unavailable_within_the_query_timeout() {
    let url = pg::database().await;
    store(&url).await;
    let timeout = Duration::from_secs(1);
    let options = PoolOptions { max_size: 2, query_timeout: timeout, ..PoolOptions::default() };
    let store = PostgresStore::connect(&url, options).unwrap();
    store.create_user(&user("alice")).await.unwrap();

    let mut locker = raw(&url).await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let started = Instant::now();
    let outcome = store.user_count().await;
    let took = started.elapsed();
    assert!(matches!(outcome, Err(MetaError::Unavailable(_))), "a stuck call must be Unavailable: {outcome:?}");
    assert!(took < timeout + Duration::from_millis(700), "a call must not wait past the query timeout: {took:?}");

    // The abandoned statement was cancelled on the server, not left queued behind the lock.
    wait_until_no_statement_waits_for_a_lock(&tx).await;
    tx.rollback().await.unwrap();
    assert_eq!(store.user_count().await.unwrap(), 1, "the store works once the lock is gone");
}

/// Two nodes on one Postgres: what one deletes stops working on the other within a second, even
/// though the other had it cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_reach_every_node_within_a_second() {
    use depot_gateway::auth::{self, Auth, AuthConfig, Principal};
    use depot_gateway::meta::Invalidation;
    let url = pg::database().await;
    let secret = b"0123456789abcdef0123456789abcdef-pg".to_vec();
    let node_a = Auth::new(AuthConfig::with_secret(secret.clone()), Arc::new(store(&url).await)).unwrap();
    let store_b = Arc::new(store(&url).await);
    let node_b = Arc::new(Auth::new(AuthConfig::with_secret(secret), store_b.clone()).unwrap());
    let mut heard = store_b.invalidations().await.unwrap().expect("Postgres announces deletions");
    let first = tokio::time::timeout(Duration::from_secs(10), heard.recv()).await.unwrap();
    assert_eq!(first, Some(Invalidation::All), "listening starts by dropping every cache");
    let forwarder = {
        let node_b = node_b.clone();
        tokio::spawn(async move {
            while let Some(what) = heard.recv().await {
                node_b.forget(&what);
            }
        })
    };

    let kim = node_a.create_user("kim", "kim-password", Role::Member).await.unwrap();
    let (key_secret, key_id) = auth::new_api_key();
    let api_key =
        ApiKey { digest: auth::digest(&key_secret), owner_id: kim.id.clone(), ..key(&key_id, &kim.username, 0) };
    store_b.create_api_key(&api_key).await.unwrap();
    let kim_token = node_b.access_token(&Principal::user(&kim)).unwrap();
    assert!(node_b.authenticate(&key_secret).await.is_ok(), "node B caches the key");
    assert!(node_b.authenticate(&kim_token).await.is_ok(), "node B caches the user");

    let gone_within = |what: &'static str, token: String| {
        let node_b = node_b.clone();
        async move {
            let started = Instant::now();
            while node_b.authenticate(&token).await.is_ok() {
                assert!(started.elapsed() < Duration::from_secs(1), "{what} still works on node B after 1 s");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert!(node_a.delete_api_key(&key_id).await.unwrap());
    gone_within("the deleted key", key_secret).await;
    assert!(node_a.delete_user("kim").await.unwrap());
    gone_within("the deleted user's token", kim_token).await;
    forwarder.abort();
}

/// Waits (up to 5 s) until no other session of `tx`'s database waits for a lock: a timed-out
/// statement was cancelled on the server, not left queued behind the lock `tx` holds.
pub(crate) async fn wait_until_no_statement_waits_for_a_lock(tx: &tokio_postgres::Transaction<'_>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let waiting: i64 = tx
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the timed-out statement must be cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
