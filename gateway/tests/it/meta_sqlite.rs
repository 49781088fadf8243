#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use crate::meta::conformance;
use depot_gateway::meta::sqlite::{MIGRATIONS, SCHEMA_VERSION};
use depot_gateway::meta::{Action, ApiKey, MetaError, MetadataStore, Role, Scope, SqliteStore, User};

fn user(name: &str) -> User {
    User {
        id: format!("usr_{name}"),
        username: name.to_owned(),
        password_hash: "$argon2id$x".to_owned(),
        role: Role::Admin,
        created_at: 1,
    }
}

fn key(id: &str, owner: &str) -> ApiKey {
    ApiKey {
        id: id.to_owned(),
        name: "ci".to_owned(),
        owner: owner.to_owned(),
        owner_id: format!("usr_{owner}"),
        digest: [7; 32],
        scopes: vec![Scope { stations: "*".to_owned(), actions: vec![Action::Produce] }],
        created_at: 2,
        expires_at: None,
    }
}

fn user_version(path: &std::path::Path) -> u32 {
    rusqlite::Connection::open(path).unwrap().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("meta.db")).unwrap();
    conformance::run(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_twice_on_one_store() {
    let store: Arc<dyn MetadataStore> = Arc::new(SqliteStore::open_in_memory().unwrap());
    conformance::run(Arc::clone(&store)).await;
    conformance::run(store).await;
}

#[tokio::test]
async fn reopening_keeps_data_and_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/meta.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.create_user(&user("alice")).await.unwrap();
        store.create_api_key(&key("key_1", "alice")).await.unwrap();
    }
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    const { assert!(SCHEMA_VERSION >= 1) };

    let first = SqliteStore::open(&path).unwrap();
    let second = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION, "reopening must not migrate again");
    for store in [&first, &second] {
        assert_eq!(store.user("alice").await.unwrap(), Some(user("alice")));
        assert_eq!(store.api_key_by_digest(&[7; 32]).await.unwrap(), Some(key("key_1", "alice")));
        assert_eq!(store.user_count().await.unwrap(), 1);
    }
    second.create_user(&user("bob")).await.unwrap();
    assert_eq!(first.users().await.unwrap().len(), 2, "two stores on one file see each other's writes");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the file holds password hashes: owner-only, got {mode:o}");
    }
}

#[tokio::test]
async fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    drop(SqliteStore::open(&path).unwrap());
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    assert!(matches!(SqliteStore::open(&path), Err(MetaError::Corrupt(_))));
}

#[tokio::test]
async fn undecodable_rows_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let store = SqliteStore::open(&path).unwrap();
    store.create_user(&user("alice")).await.unwrap();
    store.create_api_key(&key("key_1", "alice")).await.unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute("UPDATE users SET role = 'root'", []).unwrap();
    raw.execute("UPDATE api_keys SET scopes = 'not json'", []).unwrap();
    assert!(matches!(store.user("alice").await, Err(MetaError::Corrupt(_))));
    assert!(matches!(store.users().await, Err(MetaError::Corrupt(_))));
    assert!(matches!(store.api_key("key_1").await, Err(MetaError::Corrupt(_))));
}

#[tokio::test]
async fn integrity_and_limits() {
    let store = SqliteStore::open_in_memory().unwrap();
    assert!(store.create_api_key(&key("key_orphan", "nobody")).await.is_err(), "a key needs an existing owner");
    store.create_user(&user("alice")).await.unwrap();
    store.create_api_key(&key("key_1", "alice")).await.unwrap();
    assert!(
        matches!(store.create_api_key(&key("key_2", "alice")).await, Err(MetaError::Conflict(_))),
        "digests are unique"
    );

    assert_eq!(store.audit_log(None, 0).await.unwrap().len(), 0);
}

use crate::meta::revival;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_users_credentials_never_work_again_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("meta.db")).unwrap();
    revival::a_deleted_users_credentials_never_work_again(Arc::new(store)).await;
}

/// Migration 2 gives the users of a version-1 file ids, and binds their keys to them.
#[tokio::test]
async fn upgrading_gives_existing_users_ids_and_binds_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(MIGRATIONS[0]).unwrap();
        db.execute_batch(
            "INSERT INTO users VALUES ('old-a', '$argon2id$x', 'admin', 1), ('old-b', '$argon2id$x', 'member', 1);
             INSERT INTO api_keys VALUES ('key_a', 'k', 'old-a', zeroblob(32), '[]', 2, NULL);",
        )
        .unwrap();
        db.pragma_update(None, "user_version", 1).unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let (a, b) = (store.user("old-a").await.unwrap().unwrap(), store.user("old-b").await.unwrap().unwrap());
    assert!(a.id.starts_with("usr_") && b.id.starts_with("usr_") && a.id != b.id, "{a:?} {b:?}");
    assert_eq!(store.user_by_id(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.api_key("key_a").await.unwrap().unwrap().owner_id, a.id, "a key is bound to its owner's id");
}
