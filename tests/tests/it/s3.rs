//! The kit's S3 server (`depot_tests::s3`) against curl's own SigV4 signing: objects put are
//! got back, listed by the server and found on disk; a stopped or killed server refuses
//! requests and, restarted on the same port and root, still has them; a paused one answers
//! nothing until resumed. Fails (does not skip) when s3s-fs is not installed.

#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::process::{Command, Stdio};

use depot_tests::s3::{S3Server, ACCESS_KEY, REGION, SECRET_KEY};

/// What curl got: the HTTP status (0 if none) and body, or curl's exit code when it failed
/// (7: connection refused, 28: timed out).
struct Reply {
    exit: i32,
    status: u16,
    body: Vec<u8>,
}

/// One path-style request by curl, signed with SigV4 (`--aws-sigv4`) as `secret`'s owner, the
/// payload's SHA-256 signed in `x-amz-content-sha256`. `max_time` in seconds.
fn s3(server: &S3Server, secret: Option<&str>, method: &str, path: &str, body: &[u8], max_time: u32) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::write(&input, body).unwrap();
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", &max_time.to_string(), "-X", method, "-o"])
        .arg(&output)
        .args(["-w", "%{http_code}"])
        .args(["-H", &format!("x-amz-content-sha256: {}", sha256_hex(body))]);
    if let Some(secret) = secret {
        command.args(["--aws-sigv4", &format!("aws:amz:{REGION}:s3"), "--user", &format!("{ACCESS_KEY}:{secret}")]);
    }
    if !body.is_empty() {
        command.args(["-H", "Content-Type: application/octet-stream", "--data-binary"]);
        command.arg(format!("@{}", input.display()));
    }
    command.arg(format!("{}{path}", server.endpoint()));
    let out = command.output().unwrap_or_else(|e| panic!("cannot run curl (apt-get install -y curl): {e}"));
    Reply {
        exit: out.status.code().unwrap_or(-1),
        status: String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0),
        body: std::fs::read(&output).unwrap_or_default(),
    }
}

/// A signed request with the right key that must succeed with 200.
fn ok(server: &S3Server, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let reply = s3(server, Some(SECRET_KEY), method, path, body, 20);
    assert!(
        reply.exit == 0 && reply.status == 200,
        "{method} {path}: curl exit {}, HTTP {}: {}\nserver log:\n{}",
        reply.exit,
        reply.status,
        String::from_utf8_lossy(&reply.body),
        server.log_tail()
    );
    reply.body
}

fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

/// curl signs SigV4 itself from 7.75 on.
fn assert_curl_signs() {
    let out = Command::new("curl").arg("--version").output().expect("curl is not installed (apt-get install -y curl)");
    let version = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<u32> =
        version.split_whitespace().nth(1).unwrap_or("").split('.').filter_map(|n| n.parse().ok()).collect();
    assert!(numbers.as_slice() >= [7, 75].as_slice(), "curl {numbers:?} cannot sign SigV4 (7.75 or later needed)");
}

#[test]
fn s3_server_serves_signed_requests_and_survives_stop_kill_and_pause() {
    assert_curl_signs();
    let mut server = S3Server::start();
    server.create_bucket("tiering");
    assert!(s3(&server, None, "GET", "/tiering/none", b"", 20).status == 403, "unsigned requests must be refused");

    let segment: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let key = "topics/orders/0/00000000000000000000.seg";
    ok(&server, "PUT", &format!("/tiering/{key}"), &segment);
    ok(&server, "PUT", "/tiering/manifest.json", b"{\"segments\":1}");
    assert_eq!(ok(&server, "GET", &format!("/tiering/{key}"), b""), segment);

    // The server's listing, and the files it keeps: ROOT/BUCKET/KEY with the object's bytes.
    let listing = String::from_utf8(ok(&server, "GET", "/tiering?list-type=2", b"")).unwrap();
    assert!(listing.contains(&format!("<Key>{key}</Key>")) && listing.contains("<Size>200000</Size>"), "{listing}");
    let expected = vec![("manifest.json".to_owned(), 14), (key.to_owned(), 200_000)];
    assert_eq!(server.objects("tiering"), expected);
    assert_eq!(std::fs::read(server.object_path("tiering", key)).unwrap(), segment);

    let wrong = s3(&server, Some("not-the-secret"), "GET", &format!("/tiering/{key}"), b"", 20);
    assert_eq!(wrong.status, 403, "a wrong secret must be refused: {}", String::from_utf8_lossy(&wrong.body));

    // Stopped: connections are refused; restarted on the same port and root: all still there.
    let endpoint = server.endpoint();
    server.stop();
    assert!(!server.is_running());
    let down = s3(&server, Some(SECRET_KEY), "GET", &format!("/tiering/{key}"), b"", 5);
    assert_eq!((down.exit, down.status), (7, 0), "a stopped server must refuse connections");
    server.restart();
    assert_eq!(server.endpoint(), endpoint);
    assert_eq!(ok(&server, "GET", &format!("/tiering/{key}"), b""), segment);
    assert_eq!(server.objects("tiering"), expected);

    // Paused: nothing answers (curl times out); resumed: served again.
    server.pause();
    let hung = s3(&server, Some(SECRET_KEY), "GET", "/tiering/manifest.json", b"", 1);
    assert_eq!((hung.exit, hung.status), (28, 0), "a paused server must not answer");
    server.resume();
    assert_eq!(ok(&server, "GET", "/tiering/manifest.json", b""), b"{\"segments\":1}");

    // Killed mid-life (and while paused, a stop still works): same again.
    server.kill();
    assert_eq!(s3(&server, Some(SECRET_KEY), "GET", "/tiering/manifest.json", b"", 5).exit, 7);
    server.restart();
    server.pause();
    server.stop();
    server.restart();
    assert_eq!(ok(&server, "GET", &format!("/tiering/{key}"), b""), segment);
}
