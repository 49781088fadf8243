//! A first run as a new user pastes it: the banner's curl lines work as printed, `depot dev`
//! logs text that reads like a first start (not crash recovery), and every request leaves one
//! access-log line that names no token. Also: JSON access lines from the default format, the
//! setting that turns them off, and the keep-alive that outlasts load balancers' idle timeouts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use depot_tests::process::dev_command;
use serde_json::Value;

use crate::e2e::{depot, Server};

const DEADLINE: Duration = Duration::from_secs(30);

/// `depot dev` on a fresh dir with the default log filter, stderr to a file.
fn dev(dir: &std::path::Path, env: &[(&str, &str)]) -> (Server, std::path::PathBuf) {
    let stderr = dir.join("stderr.log");
    let mut command = dev_command(depot(), &[], &dir.join("data"), "first-run-password");
    command.env_remove("DEPOT_LOG").stderr(std::fs::File::create(&stderr).unwrap());
    for (k, v) in env {
        command.env(k, v);
    }
    (Server::start_dev(command, DEADLINE).unwrap_or_else(|e| panic!("{e}")), stderr)
}

/// Polls the log until a line holds every one of `parts`.
fn wait_log_line(log: &std::path::Path, parts: &[&str]) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_owned();
        }
        assert!(Instant::now() < deadline, "no log line with {parts:?} in:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_banner_curl_lines_work_as_printed_and_the_log_reads_like_a_first_run() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, stderr) = dev(dir.path(), &[]);
    let mut lines = Vec::new();
    while lines.len() < 4 {
        let line =
            server.wait_line(DEADLINE, |l| l.trim_start().starts_with("curl ")).expect("the banner's curl lines");
        lines.push(line.trim().to_owned());
    }
    // Each line exactly as printed, through a shell, with the token the banner exported.
    let out = dir.path().join("out.json");
    for line in &lines {
        let run = Command::new("bash")
            .arg("-c")
            .arg(format!("{line} -sS -o '{}' -w '%{{http_code}}'", out.display()))
            .env("DEPOT_TOKEN", &server.token)
            .output()
            .expect("bash and curl (installed by .ci/run)");
        let code = String::from_utf8_lossy(&run.stdout).to_string();
        let body = std::fs::read_to_string(&out).unwrap_or_default();
        assert!(code.starts_with('2'), "{line}\nanswered {code}: {body}\n{}", String::from_utf8_lossy(&run.stderr));
    }
    // The last line fetched the message the second produced.
    let fetched: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(fetched["messages"].as_array().map(Vec::len), Some(1), "{fetched}");

    let line = wait_log_line(&stderr, &["request answered", "route=/v1/stations/{station}/messages", "status=201"]);
    assert!(line.contains("method=POST") && line.contains("principal=admin"), "{line}");
    assert!(line.contains("request_id=") && line.contains("latency_us="), "{line}");
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(!log.contains(&server.token), "a token reached the log:\n{log}");
    assert!(log.contains("new data dir"), "{log}");
    assert!(!log.contains("clean-shutdown marker") && !log.contains("verifying every checksum"), "{log}");
    // Text for people, and no colour codes into a file.
    assert!(log.lines().all(|l| !l.starts_with('{')), "JSON in depot dev:\n{log}");
    assert!(!log.contains('\u{1b}'), "colour codes written to a file:\n{log}");
}

#[test]
fn access_lines_are_json_by_default_outside_dev_and_the_setting_turns_them_off() {
    let dir = tempfile::tempdir().unwrap();
    let (server, stderr) = dev(dir.path(), &[("DEPOT_LOG_FORMAT", "json")]);
    let r = crate::e2e::request(server.addr, Some(&server.token), "GET", "/v1/stations", &[], &[], DEADLINE).unwrap();
    assert_eq!(r.status, 200);
    let line = wait_log_line(&stderr, &["\"target\":\"depot::access\"", "/v1/stations"]);
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let f = &v["fields"];
    assert_eq!(
        (f["method"].as_str(), f["route"].as_str(), f["status"].as_u64()),
        (Some("GET"), Some("/v1/stations"), Some(200)),
        "{line}"
    );
    assert_eq!(f["principal"], "admin", "{line}");
    assert!(f["latency_us"].is_u64() && f["request_id"].is_string(), "{line}");
    assert_eq!(v["level"], "INFO", "{line}");

    let quiet = tempfile::tempdir().unwrap();
    let (server, stderr) = dev(quiet.path(), &[("DEPOT_LOG_FORMAT", "json"), ("DEPOT_ACCESS_LOG", "false")]);
    for _ in 0..3 {
        let r =
            crate::e2e::request(server.addr, Some(&server.token), "GET", "/v1/stations", &[], &[], DEADLINE).unwrap();
        assert_eq!(r.status, 200);
    }
    // A later line proves the log is written up to here: a clean stop logs at INFO.
    let mut server = server;
    server.terminate();
    wait_log_line(&stderr, &["shutting down"]);
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(!log.contains("depot::access"), "access_log = false still logged requests:\n{log}");
}

/// Sends one keep-alive GET /livez on `stream` and reads its whole answer.
fn livez(stream: &mut TcpStream) -> String {
    stream.write_all(b"GET /livez HTTP/1.1\r\nHost: depot\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"}") {
        let n = stream.read(&mut buf).expect("reading the answer");
        assert!(n > 0, "closed before answering: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn idle_connections_outlast_load_balancer_timeouts_and_the_setting_shortens_them() {
    // Default: still open after 7 s idle (actix's own default closed it after 5 s), so a load
    // balancer's 60 s idle timeout, not Depot, ends it. An observation window, not a sync.
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = dev(dir.path(), &[]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    assert!(livez(&mut stream).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_secs(7));
    assert!(livez(&mut stream).starts_with("HTTP/1.1 200"), "the idle connection was closed");

    // keep_alive_secs = 1: the server closes an idle connection itself, soon.
    let short = tempfile::tempdir().unwrap();
    let (server, _) = dev(short.path(), &[("DEPOT_KEEP_ALIVE_SECS", "1")]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    assert!(livez(&mut stream).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let n = stream.read(&mut [0u8; 64]).expect("the server closes, it does not hang");
    assert_eq!(n, 0, "expected the idle connection to be closed");
    assert!(started.elapsed() < Duration::from_secs(10), "closed only after {:?}", started.elapsed());
}
