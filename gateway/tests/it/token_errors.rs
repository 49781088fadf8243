//! A refused access token is described in words of our own: which check failed, which claim,
//! never serde's parser messages ("missing field `exp` at line 1 column 131").
#![allow(clippy::unwrap_used)]

use crate::common::*;
use actix_web::test;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use depot_gateway::app;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

fn claims_of(token: &str) -> serde_json::Map<String, Value> {
    let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap();
    match serde_json::from_slice(&payload).unwrap() {
        Value::Object(claims) => claims,
        other => panic!("claims: {other}"),
    }
}

fn sign(claims: &serde_json::Map<String, Value>) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

/// The detail names the claim and carries nothing of a parser's wording.
fn assert_names(r: &Resp, claim: &str) {
    r.problem(401, "unauthorized");
    let detail = r.body["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("`{claim}`")), "{claim}: {detail}");
    for parser_word in ["line", "column", "missing field", "invalid type", "expected", "unknown variant"] {
        assert!(!detail.contains(parser_word), "{claim}: parser detail leaked: {detail}");
    }
}

#[actix_web::test]
async fn refused_tokens_name_the_claim_without_parser_detail() {
    let n = node().await;
    let app = test::init_service(app(n.state())).await;
    let good = claims_of(&n.admin_token);
    send(&app, bearer(get("/v1/stations"), &sign(&good))).await.ok(200);

    // Each claim of an issued token, missing: the detail names it (a claim added to the tokens
    // without a description fails here).
    for claim in good.keys() {
        let mut claims = good.clone();
        claims.remove(claim);
        let r = send(&app, bearer(get("/v1/stations"), &sign(&claims))).await;
        assert_names(&r, claim);
        assert!(r.body["detail"].as_str().unwrap().contains("lacks"), "{r:?}");
    }
    // Of the wrong type or value.
    for (claim, value) in [
        ("exp", json!("soon")),
        ("exp", json!(-1)),
        ("nbf", json!(1.5)),
        ("sub", json!(7)),
        ("kind", json!("robot")),
        ("role", json!("root")),
        ("scopes", json!("everything")),
        ("aud", json!(["depot", "other"])),
    ] {
        let mut claims = good.clone();
        claims.insert(claim.to_owned(), value.clone());
        let r = send(&app, bearer(get("/v1/stations"), &sign(&claims))).await;
        assert_names(&r, claim);
    }
    // Valid JSON, failed checks.
    let now = good["iat"].as_u64().unwrap();
    for (claim, value) in [
        ("exp", json!(now - 3600)),
        ("nbf", json!(now + 3600)),
        ("iss", json!("someone-else")),
        ("aud", json!("someone-else")),
    ] {
        let mut claims = good.clone();
        claims.insert(claim.to_owned(), value);
        let r = send(&app, bearer(get("/v1/stations"), &sign(&claims))).await;
        assert_names(&r, claim);
    }
    n.broker.shutdown().await.unwrap();
}
