//! Harness of the end-to-end tests: the real `depot dev` binary on a random loopback port, and
//! a few lines of HTTP/1.1 over `std::net::TcpStream` (one request per connection).

#![allow(clippy::unwrap_used, dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ADMIN_PASSWORD: &str = "e2e-admin-password";

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// The admin token `depot dev` printed.
    pub token: String,
}

/// Starts `depot dev` on `data_dir` with extra environment, and waits for its banner.
pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
    start_under(&[], data_dir, env)
}

/// Like [`start`], run through `wrapper` (a command that execs the rest of its arguments, such
/// as `prlimit --nofile=1024:1024 --`), so the server's pid is still the child's.
pub fn start_under(wrapper: &[&str], data_dir: &Path, env: &[(&str, &str)]) -> Server {
    let depot = env!("CARGO_BIN_EXE_depot");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(depot);
            c
        }
        None => Command::new(depot),
    };
    command
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("DEPOT_LOG", "warn")
        .env("DEPOT_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.spawn().unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    // Owned by the guard from here on, so a failed assertion never leaves a server running.
    let mut server = Server { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), token: String::new() };
    let stdout = server.child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep reading to the end, like a log collector would.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Generous: a node with tens of thousands of stations opens every log first.
    let deadline = Instant::now() + Duration::from_secs(180);
    while server.token.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("depot dev printed no address and token within 180 s");
        if let Some(rest) = line.strip_prefix("depot: listening on http://") {
            server.addr = rest.split_whitespace().next().unwrap().parse().unwrap();
        }
        if let Some(token) = line.strip_prefix("export DEPOT_TOKEN=") {
            server.token = token.trim().to_owned();
        }
    }
    server
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Asserts a problem+json answer with this status and code.
    pub fn problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self:?}");
        assert_eq!(self.body["code"], code, "{self:?}");
    }
}

/// One request, waiting up to 60 s for the answer. `token: None` sends no Authorization header.
/// Panics on connection errors and timeouts; [`request`] returns them.
pub fn send(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    request(addr, token, method, path, headers, body, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"))
}

/// One HTTP/1.1 request on its own connection. Connection errors, timeouts and garbled answers
/// are `Err`; the timeout bounds the whole exchange.
pub fn request(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response, String> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(|e| format!("send to {addr}: {e}"))?;
    // The server may answer (413, 401) and close before reading a large body.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{method} {path} on {addr}: no complete answer within {timeout:?}"));
        }
        stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(format!("{method} {path} on {addr}: no complete answer within {timeout:?}"));
            }
            // A server that answers early (413, 401) may reset the connection after its answer.
            Err(_) if response.windows(4).any(|w| w == b"\r\n\r\n") => break,
            Err(e) => return Err(format!("{method} {path} on {addr}: {e}")),
        }
    }
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{method} {path} on {addr}: connection closed without an answer"))?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let raw = response[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {path} on {addr}: no status line in {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Ok(Response { status, headers, body, raw })
}

impl Server {
    /// A JSON request as admin.
    pub fn json(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        self.json_as(Some(&self.token), method, path, body)
    }

    pub fn json_as(&self, token: Option<&str>, method: &str, path: &str, body: Option<&Value>) -> Response {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        send(self.addr, token, method, path, &[("Content-Type", "application/json")], &bytes)
    }

    /// SIGTERM, then the exit status, which must be success (a clean drain).
    pub fn terminate(&mut self) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "depot dev exited with {exit} after SIGTERM");
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no drain, no clean-shutdown marker.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Already exited after `terminate`: kill fails harmlessly and wait returns the status.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns `Some`, or panics after `within`.
pub fn eventually<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `depot dev` on `data_dir` expecting it to refuse to start: waits up to 30 s for it to exit
/// and returns its exit status and what it wrote to stderr.
pub fn start_refused(data_dir: &Path) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_depot"))
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("DEPOT_LOG", "warn")
        .env("DEPOT_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("depot dev on {} still runs after 30 s; it should have refused to start", data_dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!status.success(), "depot dev on {} exited with {status}: {stderr}", data_dir.display());
    (status, stderr)
}

/// A tmpfs mounted by the test (it must run as root, as CI does), unmounted when dropped.
pub struct Tmpfs {
    path: std::path::PathBuf,
    /// The temp dir it is mounted on, if the guard made it: removed after the unmount.
    _dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// A tmpfs of `size` (as `mount -o size=` takes it) on a fresh temp dir.
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let mut fs = Tmpfs::mount_at(dir.path(), size);
        fs._dir = Some(dir);
        fs
    }

    /// A tmpfs of `size` mounted on the existing empty dir `path`.
    pub fn mount_at(path: &Path, size: &str) -> Tmpfs {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "depot-disk-full-test"])
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("this test mounts a tmpfs and needs `mount` (util-linux): {e}"));
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and must run as root (CI does): mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { path: path.to_path_buf(), _dir: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

pub fn free_bytes(path: &Path) -> u64 {
    let st = rustix::fs::statvfs(path).unwrap();
    st.f_bavail * st.f_frsize
}

/// Fills `path` with `bytes` of data (not a sparse file: tmpfs counts what is written).
pub fn write_ballast(path: &Path, bytes: u64) {
    let chunk = vec![0x5au8; 1 << 20];
    let mut file = std::fs::File::create(path).unwrap();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        std::io::Write::write_all(&mut file, &chunk[..n]).unwrap();
        left -= n as u64;
    }
}

/// One keep-alive HTTP/1.1 connection, for tests that send many requests (one connection per
/// request would leave tens of thousands of sockets in TIME_WAIT).
pub struct Conn {
    addr: SocketAddr,
    token: String,
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr, token: &str) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn { addr, token: token.to_owned(), reader: BufReader::new(stream) }
    }

    /// One request as the connection's user; the answer's body must carry a Content-Length.
    pub fn call(&mut self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Response {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            self.token,
            body.len()
        );
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: no status line in {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: answer without Content-Length: {headers:?}"));
        let mut raw = vec![0; len];
        self.reader.read_exact(&mut raw).unwrap();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Response { status, headers, body, raw }
    }

    pub fn json(&mut self, method: &str, path: &str, body: &Value) -> Response {
        self.call(method, path, "application/json", body.to_string().as_bytes())
    }
}

/// Descriptors a process holds open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}
