//! Issue 12, item 8, on any metadata store: create member carol, log in (token T), delete carol,
//! re-create carol as admin: T, carol's refresh token and carol's API key never work again.
//! Included by `meta_sqlite.rs` and `meta_postgres.rs`, so the sequence runs on both stores.

use std::sync::Arc;

use depot_gateway::auth::AuthError;
use depot_gateway::auth::{self, Auth, AuthConfig};
use depot_gateway::meta::{Action, ApiKey, MetadataStore, Role, Scope};

fn refused<T: std::fmt::Debug>(what: &str, outcome: Result<T, AuthError>) {
    match outcome {
        Err(AuthError::Unauthorized(_)) => {}
        other => panic!("{what} must be refused with 401 after carol was deleted and re-created, got {other:?}"),
    }
}

pub async fn a_deleted_users_credentials_never_work_again(store: Arc<dyn MetadataStore>) {
    let auth = Auth::new(AuthConfig::with_secret(auth::generate_secret()), store.clone()).unwrap();
    // Unique per run: the Postgres database may be shared with other tests.
    let name = format!("carol-{}", auth::new_user_id().to_lowercase().replace('_', "-"));
    let first = auth.create_user(&name, "carol-password", Role::Member).await.unwrap();
    let principal = auth.login(&name, "carol-password").await.unwrap();
    let issued = auth.issue(&principal).await.unwrap();
    let (key_secret, key_id) = auth::new_api_key();
    let key = ApiKey {
        id: key_id,
        name: "carol's".to_owned(),
        owner: name.clone(),
        owner_id: first.id.clone(),
        digest: auth::digest(&key_secret),
        scopes: vec![Scope { stations: "*".to_owned(), actions: vec![Action::Produce] }],
        created_at: auth::now_millis(),
        expires_at: None,
    };
    store.create_api_key(&key).await.unwrap();
    assert_eq!(auth.authenticate(&issued.access_token).await.unwrap().role, Role::Member);
    assert!(auth.authenticate(&key_secret).await.is_ok());

    assert!(auth.delete_user(&name).await.unwrap());
    let second = auth.create_user(&name, "carol-password", Role::Admin).await.unwrap();
    assert_ne!(first.id, second.id, "a re-created user must get a new id");
    // As if the deletion had missed carol's key (the store deletes it with her): the key is bound
    // to the first carol's id, so it still grants nothing to the second carol.
    store.create_api_key(&key).await.unwrap();

    refused("the first carol's access token", auth.authenticate(&issued.access_token).await);
    refused("the first carol's API key", auth.authenticate(&key_secret).await);
    refused("logging in with the first carol's API key", auth.login_with_key(&key_secret).await);
    refused("the first carol's refresh token", auth.refresh(&issued.refresh_token).await);

    let now = auth.login(&name, "carol-password").await.unwrap();
    assert_eq!((now.role, now.owner_id.as_deref()), (Role::Admin, Some(second.id.as_str())));
    let fresh = auth.issue(&now).await.unwrap();
    assert!(auth.authenticate(&fresh.access_token).await.unwrap().is_admin());
    assert!(auth.refresh(&fresh.refresh_token).await.is_ok(), "the second carol's refresh token works");
}
