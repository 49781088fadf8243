//! The contract of [`MetadataStore`], as one executable check every backend must pass.
//!
//! [`run`] panics, naming the broken rule, at the first violation. It needs no particular starting
//! state and leaves its rows behind: every name it creates carries a fresh random run id and counts
//! are checked as differences, so it can also run against a shared database. Times are fixed
//! [`Millis`] values around [`T0`], since the trait takes the caller's clock.
//!
//! Rules it pins down beyond the trait's signatures:
//! - a conflicting create changes nothing;
//! - a rotated token's replacement joins the presented token's family and user, whatever the
//!   `family` and `username` fields of `replacement` say (the caller holds only an opaque secret);
//! - a token whose `expires_at` equals `now` is expired;
//! - a `Reused` or `Invalid` rotation stores no replacement;
//! - of N concurrent rotations of one live token, one is `Rotated`, the first loser `Reused` (which
//!   revokes the family) and later ones `Reused` or `Invalid`;
//! - dead-letter pages are ordered by (dead_at, id), `next` is the last item's (dead_at, id), and a
//!   page that ends exactly at the last row has no `next`.

use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use depot_gateway::meta::{
    Action, ApiKey, AuditEntry, Digest, MetaError, MetadataStore, Millis, RefreshOutcome, RefreshToken, Role, Scope,
    User,
};

/// The suite's clock: 2023-11-14T22:13:20Z.
pub const T0: Millis = 1_700_000_000_000;

/// Checks every method of `store` against the contract; panics on the first violation.
pub async fn run(store: Arc<dyn MetadataStore>) {
    let run = format!("c{:016x}", rand::random::<u64>());
    let s = store.as_ref();
    s.ping().await.expect("ping must succeed on a healthy store");
    users(s, &run).await;
    user_deletion_cascades(s, &run).await;
    api_keys(s, &run).await;
    refresh_tokens(s, &run).await;
    concurrent_rotation(&store, &run).await;
    audit_log(s, &run).await;
    hostile_strings(s, &run).await;
}

fn digest(run: &str, label: &str) -> Digest {
    Sha256::digest(format!("{run}/{label}")).into()
}

/// The id the suite gives a user: unique per run, like the names.
fn user_id(username: &str) -> String {
    format!("usr_{username}")
}

fn user(username: &str, role: Role, created_at: Millis) -> User {
    User {
        id: user_id(username),
        username: username.to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".to_owned(),
        role,
        created_at,
    }
}

fn key(run: &str, id: &str, owner: &str, created_at: Millis) -> ApiKey {
    ApiKey {
        id: format!("key_{run}_{id}"),
        name: format!("{id} key"),
        owner: owner.to_owned(),
        owner_id: user_id(owner),
        digest: digest(run, id),
        scopes: vec![
            Scope { stations: "orders*".to_owned(), actions: vec![Action::Produce, Action::Consume] },
            Scope { stations: "*".to_owned(), actions: vec![Action::Manage] },
        ],
        created_at,
        expires_at: Some(created_at + 86_400_000),
    }
}

fn token(run: &str, label: &str, family: &str, username: &str, issued_at: Millis) -> RefreshToken {
    RefreshToken {
        digest: digest(run, label),
        family: family.to_owned(),
        username: username.to_owned(),
        issued_at,
        expires_at: issued_at + 1000,
    }
}

/// A replacement as an honest caller builds it: it cannot know the family or the user.
fn replacement(run: &str, label: &str, issued_at: Millis) -> RefreshToken {
    token(run, label, "", "", issued_at)
}

/// The outcome with the family blanked, so cases compare on what they are about;
/// `rotation_keeps_the_family` checks the family itself.
async fn rotate(s: &dyn MetadataStore, presented: &Digest, now: Millis, next: &RefreshToken) -> RefreshOutcome {
    blank_family(s.rotate_refresh_token(presented, now, next).await.expect("rotate_refresh_token"))
}

fn blank_family(outcome: RefreshOutcome) -> RefreshOutcome {
    match outcome {
        RefreshOutcome::Rotated { username, .. } => RefreshOutcome::Rotated { username, family: String::new() },
        other => other,
    }
}

fn rotated(username: &str) -> RefreshOutcome {
    RefreshOutcome::Rotated { username: username.to_owned(), family: String::new() }
}

async fn users(s: &dyn MetadataStore, run: &str) {
    let before = s.user_count().await.expect("user_count");
    let (alice, bob, carol) = (format!("{run}-alice"), format!("{run}-bob"), format!("{run}-carol"));
    s.create_user(&user(&carol, Role::Admin, T0)).await.expect("create_user");
    s.create_user(&user(&alice, Role::Member, T0 + 1)).await.expect("create_user");
    s.create_user(&user(&bob, Role::Member, T0 + 2)).await.expect("create_user");
    assert_eq!(s.user_count().await.expect("user_count"), before + 3, "user_count must grow by the users created");

    match s.create_user(&user(&alice, Role::Admin, T0 + 9)).await {
        Err(MetaError::Conflict(_)) => {}
        other => panic!("create_user with a taken username must be Conflict, got {other:?}"),
    }
    assert_eq!(
        s.user(&alice).await.expect("user"),
        Some(user(&alice, Role::Member, T0 + 1)),
        "user must read back what was created, untouched by a conflicting create"
    );
    assert_eq!(s.user(&carol).await.expect("user").map(|u| u.role), Some(Role::Admin), "roles must round-trip");
    assert_eq!(s.user(&format!("{run}-nobody")).await.expect("user"), None, "an unknown user must be None");
    assert_eq!(s.user_count().await.expect("user_count"), before + 3, "a conflicting create must not add a user");
    assert_eq!(
        s.user_by_id(&user_id(&alice)).await.expect("user_by_id"),
        Some(user(&alice, Role::Member, T0 + 1)),
        "user_by_id must find a user by the id it was created with"
    );
    assert_eq!(s.user_by_id(&alice).await.expect("user_by_id"), None, "a username is not an id");
    let same_id = User { username: format!("{run}-mallory"), ..user(&alice, Role::Admin, T0) };
    match s.create_user(&same_id).await {
        Err(MetaError::Conflict(_)) => {}
        other => panic!("create_user with a taken id must be Conflict, got {other:?}"),
    }
    assert_eq!(s.user(&same_id.username).await.expect("user"), None, "a create with a taken id stores nothing");

    let listed: Vec<String> =
        s.users().await.expect("users").into_iter().map(|u| u.username).filter(|n| n.starts_with(run)).collect();
    assert_eq!(listed, [alice.clone(), bob.clone(), carol.clone()], "users() must be ordered by username");

    assert!(s.delete_user(&bob).await.expect("delete_user"), "delete_user of an existing user must be true");
    assert!(!s.delete_user(&bob).await.expect("delete_user"), "delete_user of a deleted user must be false");
    assert_eq!(s.user(&bob).await.expect("user"), None, "a deleted user must be gone");
    assert_eq!(s.user_by_id(&user_id(&bob)).await.expect("user_by_id"), None, "a deleted user's id must be gone");
    let bob_again = User { id: format!("usr_{run}-bob-2"), ..user(&bob, Role::Admin, T0 + 3) };
    s.create_user(&bob_again).await.expect("re-creating a deleted username");
    assert_eq!(
        s.user_by_id(&user_id(&bob)).await.expect("user_by_id"),
        None,
        "the id of a deleted user must not find a later user of the same name"
    );
    assert_eq!(s.user(&bob).await.expect("user"), Some(bob_again.clone()), "the new user keeps its own id");
    assert!(s.delete_user(&bob).await.expect("delete_user"));
    assert_eq!(s.user_count().await.expect("user_count"), before + 2, "user_count must drop on delete");
}

async fn user_deletion_cascades(s: &dyn MetadataStore, run: &str) {
    let (dave, erin) = (format!("{run}-dave"), format!("{run}-erin"));
    s.create_user(&user(&dave, Role::Admin, T0)).await.expect("create_user");
    s.create_user(&user(&erin, Role::Member, T0)).await.expect("create_user");
    let (k1, k2, kept) = (key(run, "dave1", &dave, T0), key(run, "dave2", &dave, T0 + 1), key(run, "erin1", &erin, T0));
    for k in [&k1, &k2, &kept] {
        s.create_api_key(k).await.expect("create_api_key");
    }
    let (t_dave, t_erin) = (token(run, "dave-rt", "dave-fam", &dave, T0), token(run, "erin-rt", "erin-fam", &erin, T0));
    s.insert_refresh_token(&t_dave).await.expect("insert_refresh_token");
    s.insert_refresh_token(&t_erin).await.expect("insert_refresh_token");

    assert!(s.delete_user(&dave).await.expect("delete_user"), "delete_user of an existing user must be true");
    for k in [&k1, &k2] {
        assert_eq!(s.api_key(&k.id).await.expect("api_key"), None, "deleting a user must delete their keys");
        assert_eq!(
            s.api_key_by_digest(&k.digest).await.expect("api_key_by_digest"),
            None,
            "a deleted user's key must not authenticate"
        );
    }
    assert!(s.api_keys(Some(&dave)).await.expect("api_keys").is_empty(), "a deleted user must own no keys");
    assert_eq!(
        rotate(s, &t_dave.digest, T0 + 1, &replacement(run, "dave-rt2", T0 + 1)).await,
        RefreshOutcome::Invalid,
        "deleting a user must delete their refresh tokens"
    );
    assert_eq!(s.api_key(&kept.id).await.expect("api_key"), Some(kept), "another user's key must survive");
    assert_eq!(
        rotate(s, &t_erin.digest, T0 + 1, &replacement(run, "erin-rt2", T0 + 1)).await,
        rotated(&erin),
        "another user's refresh token must survive"
    );
}

async fn api_keys(s: &dyn MetadataStore, run: &str) {
    let (owner, other) = (format!("{run}-frank"), format!("{run}-grace"));
    s.create_user(&user(&owner, Role::Admin, T0)).await.expect("create_user");
    s.create_user(&user(&other, Role::Member, T0)).await.expect("create_user");
    let k1 = key(run, "k1", &owner, T0 + 10);
    let k0 = ApiKey { expires_at: None, scopes: vec![], ..key(run, "k0", &owner, T0 + 10) };
    let k3 = key(run, "k3", &other, T0 + 5);
    for k in [&k1, &k0, &k3] {
        s.create_api_key(k).await.expect("create_api_key");
    }

    let taken = ApiKey { digest: digest(run, "k1-again"), name: "dup".to_owned(), ..k1.clone() };
    match s.create_api_key(&taken).await {
        Err(MetaError::Conflict(_)) => {}
        other => panic!("create_api_key with a taken id must be Conflict, got {other:?}"),
    }
    assert_eq!(s.api_key(&k1.id).await.expect("api_key"), Some(k1.clone()), "a conflicting create changes nothing");
    assert_eq!(
        s.api_key_by_digest(&taken.digest).await.expect("api_key_by_digest"),
        None,
        "a conflicting create must store nothing"
    );

    assert_eq!(s.api_key_by_digest(&k1.digest).await.expect("api_key_by_digest"), Some(k1.clone()));
    assert_eq!(s.api_key_by_digest(&k0.digest).await.expect("api_key_by_digest"), Some(k0.clone()));
    assert_eq!(s.api_key_by_digest(&digest(run, "no such key")).await.expect("api_key_by_digest"), None);
    assert_eq!(s.api_key(&k3.id).await.expect("api_key"), Some(k3.clone()), "keys must round-trip exactly");
    assert_eq!(s.api_key(&format!("key_{run}_none")).await.expect("api_key"), None, "unknown id must be None");

    assert_eq!(
        s.api_keys(Some(&owner)).await.expect("api_keys"),
        [k0.clone(), k1.clone()],
        "api_keys(owner) must list only the owner's keys, by creation then id"
    );
    let ours = |keys: Vec<ApiKey>| keys.into_iter().filter(|k| k.id.starts_with(&format!("key_{run}_k"))).collect();
    let all: Vec<ApiKey> = ours(s.api_keys(None).await.expect("api_keys"));
    assert_eq!(all, [k3.clone(), k0.clone(), k1.clone()], "api_keys(None) must list every key, by creation then id");

    assert!(s.delete_api_key(&k0.id).await.expect("delete_api_key"), "deleting an existing key must be true");
    assert!(!s.delete_api_key(&k0.id).await.expect("delete_api_key"), "deleting a deleted key must be false");
    assert_eq!(s.api_key_by_digest(&k0.digest).await.expect("api_key_by_digest"), None, "deleted keys are gone");
    assert_eq!(s.api_keys(Some(&owner)).await.expect("api_keys"), [k1], "only the deleted key must go");
}

async fn refresh_tokens(s: &dyn MetadataStore, run: &str) {
    let (heidi, ivan) = (format!("{run}-heidi"), format!("{run}-ivan"));
    s.create_user(&user(&heidi, Role::Member, T0)).await.expect("create_user");
    s.create_user(&user(&ivan, Role::Member, T0)).await.expect("create_user");
    let heidi_rotated = rotated(&heidi);

    let unknown = rotate(s, &digest(run, "never issued"), T0, &replacement(run, "u1", T0)).await;
    assert_eq!(unknown, RefreshOutcome::Invalid, "an unknown token must be Invalid");
    assert_eq!(
        rotate(s, &digest(run, "u1"), T0, &replacement(run, "u2", T0)).await,
        RefreshOutcome::Invalid,
        "an Invalid rotation must not store its replacement"
    );

    // Rotation, then reuse of a spent token.
    let fam = format!("{run}-fam-a");
    let a = token(run, "a", &fam, &heidi, T0);
    s.insert_refresh_token(&a).await.expect("insert_refresh_token");
    assert_eq!(
        rotate(s, &a.digest, T0 + 10, &replacement(run, "b", T0 + 10)).await,
        heidi_rotated,
        "a live token rotates"
    );
    let b = digest(run, "b");
    assert_eq!(
        rotate(s, &b, T0 + 20, &replacement(run, "c", T0 + 20)).await,
        heidi_rotated,
        "the replacement must be live, belong to the presented token's user, and expire when it says"
    );
    let c = digest(run, "c");
    assert_eq!(
        rotate(s, &b, T0 + 30, &replacement(run, "x", T0 + 30)).await,
        RefreshOutcome::Reused,
        "presenting a spent token must be Reused"
    );
    assert_eq!(
        rotate(s, &c, T0 + 31, &replacement(run, "y", T0 + 31)).await,
        RefreshOutcome::Invalid,
        "after a reuse, the family's live token (the replacement it was given) must be revoked"
    );
    for label in ["x", "y"] {
        assert_eq!(
            rotate(s, &digest(run, label), T0 + 32, &replacement(run, "z", T0 + 32)).await,
            RefreshOutcome::Invalid,
            "a Reused or Invalid rotation must not store its replacement"
        );
    }

    // Expiry: `expires_at` is exclusive, and an expired presentation changes nothing.
    let e = token(run, "e", &format!("{run}-fam-e"), &heidi, T0);
    s.insert_refresh_token(&e).await.expect("insert_refresh_token");
    assert_eq!(
        rotate(s, &e.digest, e.expires_at, &replacement(run, "e2", e.expires_at)).await,
        RefreshOutcome::Invalid,
        "a token is expired when expires_at <= now"
    );
    assert_eq!(
        rotate(s, &e.digest, e.expires_at - 1, &replacement(run, "e3", e.expires_at - 1)).await,
        heidi_rotated,
        "an expired presentation must not spend or revoke the token"
    );

    // Revoking a family, by any of its tokens, spares other families.
    let f1 = token(run, "f1", &format!("{run}-fam-f"), &ivan, T0);
    let g1 = token(run, "g1", &format!("{run}-fam-g"), &ivan, T0);
    s.insert_refresh_token(&f1).await.expect("insert_refresh_token");
    s.insert_refresh_token(&g1).await.expect("insert_refresh_token");
    let ivan_rotated = rotated(&ivan);
    let outcome = s.rotate_refresh_token(&f1.digest, T0 + 1, &replacement(run, "f2", T0 + 1)).await;
    assert_eq!(
        outcome.expect("rotate_refresh_token"),
        RefreshOutcome::Rotated { username: ivan.clone(), family: f1.family.clone() },
        "a rotation must name the presented token's user and family"
    );
    assert!(
        s.revoke_refresh_family(&f1.digest).await.expect("revoke_refresh_family"),
        "revoking by a known (even spent) token must be true"
    );
    assert!(
        !s.revoke_refresh_family(&digest(run, "never issued")).await.expect("revoke_refresh_family"),
        "revoking by an unknown token must be false"
    );
    assert_eq!(
        rotate(s, &digest(run, "f2"), T0 + 2, &replacement(run, "f3", T0 + 2)).await,
        RefreshOutcome::Invalid,
        "every token of a revoked family must be Invalid"
    );
    assert_eq!(
        rotate(s, &g1.digest, T0 + 2, &replacement(run, "g2", T0 + 2)).await,
        ivan_rotated,
        "revoking one family must spare the user's other families"
    );
}

async fn concurrent_rotation(store: &Arc<dyn MetadataStore>, run: &str) {
    const RACERS: usize = 8;
    let judy = format!("{run}-judy");
    store.create_user(&user(&judy, Role::Member, T0)).await.expect("create_user");
    let t = token(run, "race", &format!("{run}-fam-race"), &judy, T0);
    store.insert_refresh_token(&t).await.expect("insert_refresh_token");
    let racers: Vec<_> = (0..RACERS)
        .map(|i| {
            let (store, presented, next) =
                (Arc::clone(store), t.digest, replacement(run, &format!("race-{i}"), T0 + 1));
            tokio::spawn(async move { store.rotate_refresh_token(&presented, T0 + 1, &next).await })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(RACERS);
    for racer in racers {
        outcomes.push(blank_family(racer.await.expect("rotation task panicked").expect("rotate_refresh_token")));
    }
    let rotated = outcomes.iter().filter(|o| **o == rotated(&judy)).count();
    let reused = outcomes.iter().filter(|o| **o == RefreshOutcome::Reused).count();
    assert_eq!(rotated, 1, "concurrent rotations of one token must rotate it once: {outcomes:?}");
    assert!(
        reused >= 1,
        "a loser must see the token spent (Reused), or its family already revoked (Invalid): {outcomes:?}"
    );
    for i in 0..RACERS {
        assert_eq!(
            rotate(store.as_ref(), &digest(run, &format!("race-{i}")), T0 + 2, &replacement(run, "race-x", T0 + 2))
                .await,
            RefreshOutcome::Invalid,
            "after the losers' reuse, the winner's replacement must be revoked and no other stored"
        );
    }
}

async fn audit_log(s: &dyn MetadataStore, run: &str) {
    let actor = format!("{run}-auditor");
    let entries: Vec<AuditEntry> = (0..5)
        .map(|i| AuditEntry {
            at: T0 + i,
            actor: actor.clone(),
            action: "user.create".to_owned(),
            target: format!("{run}-target-{i}"),
            detail: serde_json::json!({ "i": i, "nested": { "ok": true, "list": [1, "two", null] } }),
        })
        .collect();
    for e in &entries {
        s.append_audit(e).await.expect("append_audit");
    }
    let ours: Vec<_> =
        s.audit_log(None, 1000).await.expect("audit_log").into_iter().filter(|r| r.entry.actor == actor).collect();
    let newest_first: Vec<AuditEntry> = entries.iter().rev().cloned().collect();
    assert_eq!(
        ours.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(),
        newest_first,
        "audit_log must return appended entries verbatim, newest first"
    );
    let ids: Vec<i64> = ours.iter().map(|r| r.id).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "audit ids must grow with appends: {ids:?}");

    assert_eq!(s.audit_log(None, 3).await.expect("audit_log").len(), 3, "audit_log must honour limit");
    let page = s.audit_log(Some(ids[1]), 2).await.expect("audit_log");
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[2], ids[3]],
        "audit_log(before) must continue, newest first, strictly below `before`"
    );
    let oldest = ids[ids.len() - 1];
    let below = s.audit_log(Some(oldest), 1000).await.expect("audit_log");
    assert!(below.iter().all(|r| r.id < oldest && r.entry.actor != actor), "`before` must exclude ids >= it");
}

/// Strings that break naively built SQL, or encodings, must be stored verbatim and stay inert.
async fn hostile_strings(s: &dyn MetadataStore, run: &str) {
    const PAYLOADS: [&str; 7] = [
        "'; DROP TABLE users; --",
        "\" OR 1=1 --",
        "Robert'); DROP TABLE api_keys;--",
        "x' OR '1'='1",
        "ünïcödé 😀 名前 \u{202e}rtl",
        "back\\slash %_ wildcards * ?1 $1 :name",
        "tab\tnewline\nquote'\"`",
    ];
    let before = s.user_count().await.expect("user_count");
    for (i, payload) in PAYLOADS.iter().enumerate() {
        let name = format!("{run}-evil{i}-{payload}");
        let u = User { password_hash: payload.to_string(), ..user(&name, Role::Member, T0) };
        s.create_user(&u).await.expect("create_user with a hostile name");
        assert_eq!(s.user(&name).await.expect("user"), Some(u), "a hostile username must round-trip");

        let k = ApiKey {
            name: payload.to_string(),
            scopes: vec![Scope { stations: payload.to_string(), actions: vec![Action::Consume] }],
            ..key(run, &format!("evil{i}"), &name, T0)
        };
        s.create_api_key(&k).await.expect("create_api_key with hostile strings");
        assert_eq!(s.api_key(&k.id).await.expect("api_key"), Some(k.clone()), "hostile key fields must round-trip");
        assert_eq!(s.api_keys(Some(&name)).await.expect("api_keys"), [k], "a hostile owner must match only itself");

        let e = AuditEntry {
            at: T0,
            actor: format!("{run}-evil{i}"),
            action: payload.to_string(),
            target: payload.to_string(),
            detail: serde_json::json!({ "payload": payload }),
        };
        s.append_audit(&e).await.expect("append_audit with hostile strings");
        let newest = s.audit_log(None, 1).await.expect("audit_log");
        assert_eq!(newest.first().map(|r| &r.entry), Some(&e), "hostile audit fields must round-trip");
    }
    assert_eq!(s.user(&format!("{run}-evil3-x' OR '1'='2")).await.expect("user"), None, "lookups must be literal");
    assert_eq!(s.user("' OR '1'='1").await.expect("user"), None, "lookups must be literal");
    assert_eq!(
        s.user_count().await.expect("user_count"),
        before + PAYLOADS.len() as u64,
        "hostile strings must not have dropped or added users"
    );
    assert!(s.ping().await.is_ok(), "the store must still work");
}
