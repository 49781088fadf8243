#![allow(clippy::unwrap_used, dead_code)]

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use actix_web::test;
use depot_broker::{Broker, BrokerOptions};
use serde_json::Value;

pub struct Node {
    pub broker: Broker,
    pub dir: tempfile::TempDir,
}

pub async fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerOptions::new(dir.path())).await.unwrap();
    Node { broker, dir }
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
    let resp = test::call_service(app, req.to_request()).await;
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
