//! End to end against the real `depot dev` binary: logins, the 401/403 matrix per scope, forged
//! tokens, refresh rotation with family revocation, revoked keys and users, and a restart that
//! keeps every credential.

#![allow(clippy::unwrap_used)]

use crate::e2e::*;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "e2e-jwt-secret-0123456789abcdef0123456789";

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn claims(sub: &str, role: &str, exp: i64, nbf: i64, aud: &str) -> Value {
    let now = now() as i64;
    json!({"sub": sub, "kind": "user", "role": role, "exp": now + exp, "iat": now, "nbf": now + nbf,
           "iss": "depot", "aud": aud, "jti": "forged"})
}

fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn login(server: &Server, body: Value) -> Response {
    server.json_as(None, "POST", "/v1/auth/token", Some(&body))
}

fn produce(server: &Server, token: &str, station: &str) -> u16 {
    let path = format!("/v1/stations/{station}/messages");
    send(server.addr, Some(token), "POST", &path, &[("Content-Type", "text/plain")], b"hello").status
}

fn fetch(server: &Server, token: &str, station: &str) -> u16 {
    let path = format!("/v1/stations/{station}/consumer-groups/g/fetch");
    server.json_as(Some(token), "POST", &path, Some(&json!({}))).status
}

fn unauthorized(r: &Response) {
    r.problem(401, "unauthorized");
    assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")), "{r:?}");
}

#[test]
fn credentials_scopes_and_forged_tokens_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("DEPOT_JWT_SECRET", SECRET)];
    let mut server = start(dir.path(), &env);
    let admin = server.token.clone();

    // Password login: the shape of API.md, and nothing about which part was wrong.
    let r = login(&server, json!({"username": "admin", "password": ADMIN_PASSWORD}));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 900);
    let refresh_1 = r.body["refresh_token"].as_str().unwrap().to_owned();
    assert!(refresh_1.starts_with("drt_"));
    let claims_part = r.body["access_token"].as_str().unwrap().split('.').nth(1).unwrap().to_owned();
    let decoded: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims_part).unwrap()).unwrap();
    for claim in ["sub", "role", "exp", "iat", "nbf", "iss", "aud", "jti"] {
        assert!(!decoded[claim].is_null(), "claim {claim} missing: {decoded}");
    }
    assert!(!decoded.to_string().contains(ADMIN_PASSWORD), "a password in the claims");
    // `sub` is the user's immutable id, not the name a later user may take.
    let admin_id = decoded["sub"].as_str().unwrap().to_owned();
    assert!(admin_id.starts_with("usr_"), "{decoded}");
    unauthorized(&login(&server, json!({"username": "admin", "password": "wrong-password"})));
    unauthorized(&login(&server, json!({"username": "nobody", "password": "wrong-password"})));
    login(&server, json!({"username": "admin"})).problem(400, "invalid_body");

    for station in ["orders-eu", "billing"] {
        assert_eq!(server.json("PUT", &format!("/v1/stations/{station}"), None).status, 201);
        assert_eq!(server.json("PUT", &format!("/v1/stations/{station}/consumer-groups/g"), None).status, 201);
    }

    // Keys with one action each on orders*.
    let key = |name: &str, action: &str| {
        let r = server.json(
            "POST",
            "/v1/api-keys",
            Some(&json!({"name": name, "scopes": [{"stations": "orders*", "actions": [action]}]})),
        );
        assert_eq!(r.status, 201, "{r:?}");
        assert!(r.body["key"].as_str().unwrap().starts_with("dk_"));
        (r.body["id"].as_str().unwrap().to_owned(), r.body["key"].as_str().unwrap().to_owned())
    };
    let (producer_id, producer) = key("producer", "produce");
    let (_, consumer) = key("consumer", "consume");
    let listed = server.json("GET", "/v1/api-keys", None);
    assert_eq!(listed.body["api_keys"].as_array().unwrap().len(), 2);
    assert!(!String::from_utf8_lossy(&listed.raw).contains(&producer), "a key's secret listed");

    // The 401/403 matrix.
    assert_eq!(produce(&server, &producer, "orders-eu"), 201);
    assert_eq!(produce(&server, &producer, "billing"), 403);
    assert_eq!(fetch(&server, &producer, "orders-eu"), 403);
    assert_eq!(fetch(&server, &consumer, "orders-eu"), 200);
    assert_eq!(produce(&server, &consumer, "orders-eu"), 403);
    assert_eq!(fetch(&server, &consumer, "billing"), 403);
    server.json_as(Some(&producer), "PUT", "/v1/stations/orders-new", None).problem(403, "forbidden");
    server.json_as(Some(&producer), "DELETE", "/v1/stations/orders-eu", None).problem(403, "forbidden");
    server.json_as(Some(&producer), "GET", "/v1/users", None).problem(403, "forbidden");
    let minted = json!({"name": "x", "scopes": [{"stations": "*", "actions": ["manage"]}]});
    server.json_as(Some(&producer), "POST", "/v1/api-keys", Some(&minted)).problem(403, "forbidden");
    let visible = server.json_as(Some(&producer), "GET", "/v1/stations", None);
    assert_eq!(visible.body["stations"].as_array().unwrap().len(), 1, "{visible:?}");
    unauthorized(&server.json_as(None, "GET", "/v1/stations", None));
    unauthorized(&server.json_as(Some("garbage"), "GET", "/v1/stations", None));
    unauthorized(&server.json_as(Some("dk_unknown"), "GET", "/v1/stations", None));
    assert_eq!(server.json_as(None, "GET", "/livez", None).status, 200, "probes need no token");

    // A member: the whole data plane, no administration.
    let r = server.json(
        "POST",
        "/v1/users",
        Some(&json!({"username": "bob", "password": "bob-password", "role": "member"})),
    );
    assert_eq!((r.status, &r.body["role"]), (201, &json!("member")), "{r:?}");
    server
        .json("POST", "/v1/users", Some(&json!({"username": "bob", "password": "other-password", "role": "member"})))
        .problem(409, "already_exists");
    let bob = login(&server, json!({"username": "bob", "password": "bob-password"})).body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(produce(&server, &bob, "billing"), 201);
    server.json_as(Some(&bob), "GET", "/v1/users", None).problem(403, "forbidden");
    server.json_as(Some(&bob), "DELETE", "/v1/users/admin", None).problem(403, "forbidden");

    // A token exchanged for a key keeps the key's scopes.
    let r = login(&server, json!({"api_key": producer}));
    assert_eq!(r.status, 200, "{r:?}");
    let producer_jwt = r.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(produce(&server, &producer_jwt, "orders-eu"), 201);
    assert_eq!(produce(&server, &producer_jwt, "billing"), 403);

    // Forged tokens.
    assert_eq!(
        produce(&server, &sign(&claims(&admin_id, "admin", 600, 0, "depot"), SECRET), "billing"),
        201,
        "control"
    );
    let expired = sign(&claims(&admin_id, "admin", -60, -120, "depot"), SECRET);
    unauthorized(&server.json_as(Some(&expired), "GET", "/v1/stations", None));
    let not_yet = sign(&claims(&admin_id, "admin", 600, 60, "depot"), SECRET);
    unauthorized(&server.json_as(Some(&not_yet), "GET", "/v1/stations", None));
    let wrong_audience = sign(&claims(&admin_id, "admin", 600, 0, "someone-else"), SECRET);
    unauthorized(&server.json_as(Some(&wrong_audience), "GET", "/v1/stations", None));
    let wrong_secret = sign(&claims(&admin_id, "admin", 600, 0, "depot"), "another-secret-0123456789abcdef0123456789");
    unauthorized(&server.json_as(Some(&wrong_secret), "GET", "/v1/stations", None));
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims(&admin_id, "admin", 600, 0, "depot").to_string().as_bytes())
    );
    unauthorized(&server.json_as(Some(&none), "GET", "/v1/stations", None));
    let mut parts: Vec<String> = bob.split('.').map(str::to_owned).collect();
    let mut payload: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    payload["role"] = json!("admin");
    parts[1] = b64(payload.to_string().as_bytes());
    let tampered = parts.join(".");
    unauthorized(&server.json_as(Some(&tampered), "GET", "/v1/users", None));

    // Refresh: rotated on use; reusing a spent token revokes its family.
    let r = server.json_as(None, "POST", "/v1/auth/refresh", Some(&json!({"refresh_token": refresh_1})));
    assert_eq!(r.status, 200, "{r:?}");
    let refresh_2 = r.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh_1, refresh_2);
    unauthorized(&server.json_as(None, "POST", "/v1/auth/refresh", Some(&json!({"refresh_token": refresh_1}))));
    unauthorized(&server.json_as(None, "POST", "/v1/auth/refresh", Some(&json!({"refresh_token": refresh_2}))));
    let refresh_3 = login(&server, json!({"username": "admin", "password": ADMIN_PASSWORD})).body["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = server.json_as(None, "POST", "/v1/auth/revoke", Some(&json!({"refresh_token": refresh_3})));
    assert_eq!(r.status, 204, "{r:?}");
    unauthorized(&server.json_as(None, "POST", "/v1/auth/refresh", Some(&json!({"refresh_token": refresh_3}))));
    let kept = login(&server, json!({"username": "admin", "password": ADMIN_PASSWORD})).body["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // A deleted key stops at once, and so do tokens exchanged for it; a deleted user too.
    assert_eq!(server.json("DELETE", &format!("/v1/api-keys/{producer_id}"), None).status, 204);
    unauthorized(&server.json_as(Some(&producer), "GET", "/v1/stations", None));
    unauthorized(&server.json_as(Some(&producer_jwt), "GET", "/v1/stations", None));
    server.json("DELETE", &format!("/v1/api-keys/{producer_id}"), None).problem(404, "api_key_not_found");
    assert_eq!(server.json("DELETE", "/v1/users/bob", None).status, 204);
    unauthorized(&server.json_as(Some(&bob), "GET", "/v1/stations", None));
    server.json("DELETE", "/v1/users/bob", None).problem(404, "user_not_found");

    // A restart keeps users, keys, refresh tokens and the signing secret.
    server.terminate();
    let mut server = start(dir.path(), &env);
    assert_eq!(fetch(&server, &consumer, "orders-eu"), 200, "the consumer key was lost");
    assert_eq!(server.json_as(Some(&admin), "GET", "/v1/users", None).status, 200, "the old admin token was lost");
    assert_eq!(login(&server, json!({"username": "admin", "password": ADMIN_PASSWORD})).status, 200);
    let r = server.json_as(None, "POST", "/v1/auth/refresh", Some(&json!({"refresh_token": kept})));
    assert_eq!(r.status, 200, "the refresh token was lost: {r:?}");
    unauthorized(&server.json_as(Some(&producer), "GET", "/v1/stations", None));
    let users = server.json("GET", "/v1/users", None);
    assert_eq!(users.body["users"].as_array().unwrap().len(), 1, "{users:?}");
    server.terminate();
}

#[test]
fn a_generated_admin_password_and_secret_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // No DEPOT_JWT_SECRET: the secret is generated into the data dir and reused.
    let mut server = start(dir.path(), &[]);
    let token = server.token.clone();
    assert_eq!(server.json("GET", "/v1/stations", None).status, 200);
    server.terminate();
    let mut server = start(dir.path(), &[]);
    assert_eq!(server.json_as(Some(&token), "GET", "/v1/stations", None).status, 200);
    let secret = std::fs::metadata(dir.path().join("jwt-secret")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(secret.permissions().mode() & 0o077, 0, "the secret file is readable by others");
    server.terminate();
}
