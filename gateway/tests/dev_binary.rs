//! End to end against the real `depot dev` binary on a random loopback port: produce → fetch →
//! ack, a long poll woken by a produce, SIGTERM exiting 0, and a restart that keeps the data.
//! The HTTP client is a few lines over `std::net::TcpStream` (one request per connection).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

struct Server {
    child: Child,
    addr: SocketAddr,
}

fn start(data_dir: &Path) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_depot"))
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("DEPOT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Owned by the guard from here on, so a failed assertion never leaves a server running.
    let mut server = Server { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)) };
    let stdout = server.child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep reading to the end even after the address was found, like a log collector would.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("depot dev printed no address within 60 s");
        if let Some(rest) = line.strip_prefix("depot: listening on http://") {
            server.addr = rest.split_whitespace().next().unwrap().parse().unwrap();
            return server;
        }
    }
}

fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let value = if body.is_empty() { Value::Null } else { serde_json::from_str(body).unwrap() };
    (status, value)
}

impl Drop for Server {
    fn drop(&mut self) {
        // Already exited after `terminate`: kill fails harmlessly and wait returns the status.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        request(self.addr, method, path, body)
    }

    /// SIGTERM, then the exit status, which must be success (a clean drain).
    fn terminate(&mut self) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "depot dev exited with {exit} after SIGTERM");
    }
}

#[test]
fn dev_binary_produce_fetch_ack_long_poll_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());

    assert_eq!(server.request("PUT", "/v1/stations/orders", None).0, 201);
    assert_eq!(server.request("PUT", "/v1/stations/orders/consumer-groups/billing", None).0, 201);
    let (status, produced) = server.request("POST", "/v1/stations/orders/messages", Some(&json!({"id": 1})));
    assert_eq!((status, &produced["offset"]), (201, &json!(0)));

    let (status, fetched) =
        server.request("POST", "/v1/stations/orders/consumer-groups/billing/fetch", Some(&json!({"wait_ms": 5000})));
    assert_eq!(status, 200);
    let message = &fetched["messages"][0];
    assert_eq!(message["payload"], json!({"id": 1}));
    let receipt = message["receipt"].clone();
    let (status, acked) = server.request(
        "POST",
        "/v1/stations/orders/consumer-groups/billing/ack",
        Some(&json!({"receipts": [receipt]})),
    );
    assert_eq!((status, acked), (200, json!({"results": ["ok"]})));

    // A long poll parked on an empty group returns the message produced while it waits.
    let poll = {
        let addr = server.addr;
        std::thread::spawn(move || {
            let fetch = json!({"wait_ms": 20000});
            request(addr, "POST", "/v1/stations/orders/consumer-groups/billing/fetch", Some(&fetch))
        })
    };
    // The poller may not have parked yet when this produce lands; then it finds the message on
    // its first look. Either way it must answer with it, not with an empty list after 20 s.
    let (status, _) = server.request("POST", "/v1/stations/orders/messages", Some(&json!({"id": 2})));
    assert_eq!(status, 201);
    let (status, polled) = poll.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(polled["messages"][0]["payload"], json!({"id": 2}));

    server.terminate();

    let mut server = start(dir.path());
    let (status, station) = server.request("GET", "/v1/stations/orders", None);
    assert_eq!(status, 200);
    assert_eq!(station["stats"]["messages"], json!(2));
    let (_, group) = server.request("GET", "/v1/stations/orders/consumer-groups/billing", None);
    assert_eq!(group["acked_floor"], json!(1), "the ack before the restart was lost: {group}");
    assert_eq!(group["pending"], json!(1));
    server.terminate();
}
