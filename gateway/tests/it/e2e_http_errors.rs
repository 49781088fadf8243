//! Requests the HTTP layer refuses, against the real `depot dev` binary (its logging is set up
//! in main): long URIs and large header sections get problem+json (414, 431); what actix refuses
//! by itself (an unparsable request line, a head past its 128 KiB buffer) gets its bare 400 / 431,
//! and none of it is logged at ERROR, only at WARN.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use depot_tests::process::dev_command;
use serde_json::Value;

use crate::e2e::{depot, Server};

const DEADLINE: Duration = Duration::from_secs(30);

struct Dev {
    server: Server,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// `depot dev` with its default log filter, JSON logs to a file.
fn dev() -> Dev {
    let dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("stderr.log");
    let mut command = dev_command(depot(), &[], &dir.path().join("data"), "http-errors-password");
    command.env_remove("DEPOT_LOG").env("DEPOT_LOG_FORMAT", "json").stderr(std::fs::File::create(&stderr).unwrap());
    let server = Server::start("depot dev", command, DEADLINE).unwrap_or_else(|e| panic!("{e}"));
    Dev { server, stderr, _dir: dir }
}

/// Sends raw bytes and reads the answer until the server closes or the body is complete.
fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    // The server may answer and close before reading all of a large head: ignore a reset write.
    let _ = stream.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if buf.is_empty() => panic!("no answer: {e}"),
            Err(_) => 0,
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok()))
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), serde_json::from_str(body).unwrap_or(Value::Null))
}

fn assert_problem((status, head, body): &(u16, String, Value), want: u16, code: &str) {
    assert_eq!(*status, want, "{head}\n{body}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/problem+json"), "{head}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], want, "{body}");
}

#[test]
fn refused_heads_get_problems_and_are_logged_below_error() {
    let dev = dev();
    let long_uri = format!("GET /v1/stations?cursor={} HTTP/1.1\r\nHost: d\r\n\r\n", "a".repeat(10 * 1024));
    assert_problem(&raw(dev.server.addr, long_uri.as_bytes()), 414, "uri_too_long");
    let big_headers: String = (0..40).map(|i| format!("X-Filler-{i}: {}\r\n", "b".repeat(2000))).collect();
    let request = format!("GET /v1/stations HTTP/1.1\r\nHost: d\r\n{big_headers}\r\n");
    assert_problem(&raw(dev.server.addr, request.as_bytes()), 431, "header_fields_too_large");
    // Below both limits: on to the route (401 without a token).
    assert_problem(&raw(dev.server.addr, b"GET /v1/stations HTTP/1.1\r\nHost: d\r\n\r\n"), 401, "unauthorized");

    // What actix refuses before any application code: its own status, no body to give.
    let (status, head, _) = raw(dev.server.addr, b"NOT A REQUEST LINE\r\n\r\n");
    assert_eq!(status, 400, "{head}");
    let huge: String = (0..90).map(|i| format!("X-Filler-{i}: {}\r\n", "c".repeat(1600))).collect();
    let (status, head, _) = raw(dev.server.addr, format!("GET / HTTP/1.1\r\nHost: d\r\n{huge}\r\n").as_bytes());
    assert_eq!(status, 431, "{head}");

    // Logged at WARN under depot::http, never at ERROR. Poll the log file until the WARN line
    // for the bad request line is there.
    let deadline = Instant::now() + DEADLINE;
    let log = loop {
        let log = std::fs::read_to_string(&dev.stderr).unwrap();
        if log.lines().filter(|l| l.contains("\"target\":\"depot::http\"")).count() >= 2 {
            break log;
        }
        assert!(Instant::now() < deadline, "no WARN for the refused connections:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    for line in log.lines() {
        let entry: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        assert_ne!(entry["level"], "ERROR", "{line}");
        if entry["target"] == "depot::http" {
            assert_eq!(entry["level"], "WARN", "{line}");
        }
    }
}
