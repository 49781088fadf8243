//! The HTTP server over a real socket: what only the connection shows (declared lengths,
//! `Expect: 100-continue`, slow bodies), against the in-process server that `depot` runs
//! ([`depot_gateway::run`] on a port-0 listener). Every wait has a deadline; none is a sleep.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use depot_gateway::GatewayConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longer than any answer takes: reaching it means the server did not answer.
const DEADLINE: Duration = Duration::from_secs(20);

struct Server {
    addr: SocketAddr,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _node: Node,
}

async fn server(config: GatewayConfig) -> Server {
    let node = node().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = node.state_with(config);
    let task = actix_web::rt::spawn(depot_gateway::run(listener, state, async move {
        let _ = stopped.await;
    }));
    let token = node.admin_token.clone();
    let server = Server { addr, token, stop: Some(stop), task, _node: node };
    let created = server.exchange(&server.request("PUT", "/v1/stations/s", "Content-Length: 0\r\n")).await;
    assert_eq!(created.status, 201, "{created:?}");
    server
}

impl Server {
    fn request(&self, method: &str, path: &str, headers: &str) -> String {
        format!("{method} {path} HTTP/1.1\r\nHost: depot\r\nAuthorization: Bearer {}\r\n{headers}\r\n", self.token)
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    async fn exchange(&self, request: &str) -> Answer {
        let mut stream = self.connect().await;
        stream.write_all(request.as_bytes()).await.unwrap();
        read_answer(&mut stream).await
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(DEADLINE, &mut self.task).await.unwrap().unwrap().unwrap();
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Value,
}

impl Answer {
    fn problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(self.head.to_ascii_lowercase().contains("content-type: application/problem+json"), "{self:?}");
        assert_eq!(self.body["code"], code, "{self:?}");
        assert_eq!(self.body["status"], status, "{self:?}");
    }

    fn closes(&self) -> bool {
        self.head.to_ascii_lowercase().contains("connection: close")
    }
}

/// Reads one response (head, then `Content-Length` bytes of body) within [`DEADLINE`].
async fn read_answer(stream: &mut TcpStream) -> Answer {
    tokio::time::timeout(DEADLINE, read_one(stream)).await.expect("no answer within the deadline")
}

async fn read_one(stream: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed before an answer: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()))
        .and_then(Result::ok)
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed inside a body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
    Answer { status, head, body }
}

/// Reads until the server closes the connection, within [`DEADLINE`].
async fn closed(stream: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
}

fn slow_config(body_read_timeout: Duration) -> GatewayConfig {
    GatewayConfig { body_read_timeout, ..GatewayConfig::default() }
}

/// A declared body over the limit is refused before any of it arrives (batch and token already
/// were; single produce waited for a body that never came).
#[actix_web::test]
async fn a_declared_length_over_the_limit_is_413_at_once() {
    // A body read timeout far past the deadline: only a 413 can answer in time.
    let s = server(slow_config(Duration::from_secs(3600))).await;
    for length in [104_857_600, (16 << 20) + 1] {
        for path in ["/v1/stations/s/messages", "/v1/stations/s/messages/batch", "/v1/stations/s"] {
            let method = if path == "/v1/stations/s" { "PUT" } else { "POST" };
            let mut stream = s.connect().await;
            let head = s.request(method, path, &format!("Content-Length: {length}\r\n"));
            stream.write_all(head.as_bytes()).await.unwrap();
            let answer = read_answer(&mut stream).await;
            answer.problem(413, "payload_too_large");
            assert!(answer.closes(), "{answer:?}");
            closed(&mut stream).await;
        }
    }
    // A route's own, smaller limit too (station config bodies: 64 KiB).
    let answer = s.exchange(&s.request("PUT", "/v1/stations/s", "Content-Length: 65537\r\n")).await;
    answer.problem(413, "payload_too_large");
    s.stop().await;
}

/// `Expect: 100-continue` with a body over the limit is answered 413, not `100 Continue`; within
/// the limit, 100 Continue and then the answer.
#[actix_web::test]
async fn expect_continue_is_refused_over_the_limit() {
    let s = server(GatewayConfig::default()).await;
    let mut stream = s.connect().await;
    let head = s.request("POST", "/v1/stations/s/messages", "Content-Length: 104857600\r\nExpect: 100-continue\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await;
    answer.problem(413, "payload_too_large");
    closed(&mut stream).await;

    let mut stream = s.connect().await;
    let head = s.request("POST", "/v1/stations/s/messages", "Content-Length: 5\r\nExpect: 100-continue\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let go_on = read_answer(&mut stream).await;
    assert_eq!(go_on.status, 100, "{go_on:?}");
    stream.write_all(b"hello").await.unwrap();
    let stored = read_answer(&mut stream).await;
    assert_eq!(stored.status, 201, "{stored:?}");
    assert_eq!(stored.body["offset"], 0, "{stored:?}");
    s.stop().await;
}

/// A body that trickles in (a byte every 50 ms, never finishing) is cut off with 408 once the
/// body read timeout has passed since the handler began reading it, and the connection closes.
#[actix_web::test]
async fn a_trickled_body_is_408_after_the_read_timeout() {
    let timeout = Duration::from_millis(600);
    let s = server(slow_config(timeout)).await;
    for (path, type_) in
        [("/v1/stations/s/messages", "text/plain"), ("/v1/stations/s/messages/batch", "application/json")]
    {
        let mut stream = s.connect().await;
        let head = s.request("POST", path, &format!("Content-Type: {type_}\r\nContent-Length: 1000\r\n"));
        stream.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let (mut read, mut write) = stream.into_split();
        // The trickle: paced, not a synchronisation; it stops when the answer has come.
        let trickle = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(50));
            loop {
                every.tick().await;
                if write.write_all(b"{").await.is_err() {
                    break;
                }
            }
        });
        let answer = tokio::time::timeout(DEADLINE, async {
            let mut stream_buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = read.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed without an answer");
                stream_buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = stream_buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&stream_buf[..end]).into_owned();
                    return head;
                }
            }
        })
        .await
        .expect("no answer to a trickled body within the deadline");
        trickle.abort();
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.to_ascii_lowercase().contains("application/problem+json"), "{answer}");
        assert!(started.elapsed() >= timeout, "408 before the timeout: {:?}", started.elapsed());
    }
    // A body that arrives whole, promptly, is unaffected.
    let answer =
        s.exchange(&format!("{}hello", s.request("POST", "/v1/stations/s/messages", "Content-Length: 5\r\n"))).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    s.stop().await;
}
