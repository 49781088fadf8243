//! In-process helpers: a node (broker, SQLite metadata, auth) in a temp dir and the app built
//! from the gateway library, called through actix's test service.

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use actix_web::test;
use actix_web::HttpMessage;
use std::cell::RefCell;
use std::sync::Arc;

use depot_broker::{Broker, BrokerOptions};
use depot_gateway::auth::{Auth, AuthConfig, Principal};
use depot_gateway::meta::{MetadataStore, Role, SqliteStore};
use depot_gateway::{AppState, GatewayConfig};
use serde_json::Value;

pub const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

pub struct Node {
    pub broker: Broker,
    pub auth: Arc<Auth>,
    /// An access token of the user `admin`, sent by [`send`] unless a request has its own.
    pub admin_token: String,
    pub dir: tempfile::TempDir,
}

thread_local! {
    /// The admin token of the node this test thread built last (actix tests run on one thread).
    static TOKEN: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub async fn node() -> Node {
    node_with_auth(AuthConfig::with_secret(SECRET.to_vec())).await
}

pub async fn node_with_auth(config: AuthConfig) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerOptions::new(dir.path())).await.unwrap();
    let store: Arc<dyn MetadataStore> = Arc::new(SqliteStore::open(&dir.path().join("metadata.sqlite")).unwrap());
    let auth = Arc::new(Auth::new(config, store).unwrap());
    let admin = auth.create_user("admin", "admin-password", Role::Admin).await.unwrap();
    let admin = Principal::user(&admin);
    let admin_token = auth.access_token(&admin).unwrap();
    TOKEN.with(|t| *t.borrow_mut() = Some(admin_token.clone()));
    Node { broker, auth, admin_token, dir }
}

impl Node {
    pub fn state(&self) -> AppState {
        AppState::new(self.broker.clone(), self.auth.clone())
    }

    pub fn state_with(&self, config: GatewayConfig) -> AppState {
        AppState::with_config(self.broker.clone(), self.auth.clone(), config)
    }
}

/// A request without credentials (marked so [`send`] does not add the admin token).
pub fn anonymous(req: test::TestRequest) -> test::TestRequest {
    req.insert_header(("x-test-anonymous", "1"))
}

pub fn bearer(req: test::TestRequest, token: &str) -> test::TestRequest {
    req.insert_header(("authorization", format!("Bearer {token}")))
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: actix_web::web::Bytes,
}

impl Resp {
    /// Asserts a problem+json answer with this status and code.
    pub fn problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.headers.get("content-type").unwrap(), "application/problem+json", "{self:?}");
        assert_eq!(self.body["code"], code, "{self:?}");
        assert_eq!(self.body["status"], status, "{self:?}");
        for field in ["type", "title", "detail"] {
            assert!(self.body[field].is_string(), "{field} missing: {self:?}");
        }
    }

    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        &self.body
    }
}

pub async fn send<S, B>(app: &S, req: test::TestRequest) -> Resp
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut req = req.to_request();
    let anonymous = req.headers_mut().remove("x-test-anonymous").next().is_some();
    if !anonymous && !req.headers().contains_key("authorization") {
        if let Some(token) = TOKEN.with(|t| t.borrow().clone()) {
            req.headers_mut()
                .insert(actix_web::http::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        }
    }
    let resp = test::call_service(app, req).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let raw = test::read_body(resp).await;
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Resp { status, headers, body, raw }
}

pub fn get(uri: &str) -> test::TestRequest {
    test::TestRequest::get().uri(uri)
}

pub fn delete(uri: &str) -> test::TestRequest {
    test::TestRequest::delete().uri(uri)
}

pub fn put_json(uri: &str, body: Value) -> test::TestRequest {
    test::TestRequest::put().uri(uri).set_json(body)
}

pub fn post_json(uri: &str, body: Value) -> test::TestRequest {
    test::TestRequest::post().uri(uri).set_json(body)
}
