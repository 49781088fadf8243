//! An S3-compatible object store as a child process, for the tiering tests: `s3s-fs`, the file
//! system server of the `s3s` project (crates.io), which Depot did not write.
//!
//! `.ci/run` installs it into `/var/tmp/depot-tools` and exports `DEPOT_S3S_FS`; without it
//! [`DEFAULT_BINARY`] is used, and [`S3Server::start`] panics if neither exists.
//!
//! What the server is like (s3s-fs 0.14.1):
//! - path-style addressing only (`http://127.0.0.1:PORT/BUCKET/KEY`): virtual-hosted style
//!   would need `--domain`, which the kit does not pass;
//! - SigV4 with [`ACCESS_KEY`] / [`SECRET_KEY`]; any region is accepted ([`REGION`] is what the
//!   kit's tests sign with); unsigned requests get 403. Every request must carry
//!   `x-amz-content-sha256` (the payload's hex SHA-256, or `UNSIGNED-PAYLOAD`), or it gets 400
//!   `InvalidRequest`; a payload that does not match its signed hash gets 500 `InternalError`;
//! - bucket names follow S3's rules (3 to 63 characters, lowercase...): `ab` is refused with
//!   400 `InvalidBucketName`;
//! - on disk, under [`S3Server::root`]: a bucket is the directory `ROOT/BUCKET` (creating the
//!   directory creates the bucket, as `CreateBucket` does), an object is the plain file
//!   `ROOT/BUCKET/KEY` holding exactly the object's bytes (a `/` in the key makes
//!   subdirectories); per-object metadata sits beside the buckets in
//!   `ROOT/.bucket-B64(BUCKET).object-B64(KEY).{metadata,internal}.json` (URL-safe base64
//!   without padding). An upload is written to `ROOT/.tmp.N.internal.part` and renamed into
//!   place, so a file under `ROOT/BUCKET` is always a complete object (no fsync: the server
//!   gives no durability across a power cut). Multipart parts wait in
//!   `ROOT/.upload_id-UUID.part-N` until the upload completes;
//!   DELETE removes the object's file but leaves its two metadata files behind;
//! - multipart uploads work (parts of 5 MiB and a last smaller one, ETag `"MD5-N"`), and so do
//!   ranged GETs (206). curl 7.88 signs a bare `?uploads` wrongly: write `?uploads=`;
//! - `If-None-Match: *` and `If-Match: ETAG` on PUT are honoured (checked before writing, not
//!   atomically with it); a GET in a missing bucket answers 404 `NoSuchKey`, not `NoSuchBucket`;
//! - SIGINT stops it gracefully (up to 10 s for open connections); SIGTERM ends it at once.

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_loopback_port;
use crate::process::{log_tail, signal_pid};

/// Where `.ci/run` installs the binary.
pub const DEFAULT_BINARY: &str = "/var/tmp/depot-tools/bin/s3s-fs";
/// The only credentials the server accepts.
pub const ACCESS_KEY: &str = "depot-test-access-key";
pub const SECRET_KEY: &str = "depot-test-secret-key";
/// The region the kit's tests sign with (the server accepts any).
pub const REGION: &str = "us-east-1";

/// How long a start may take before the test fails.
const START_WITHIN: Duration = Duration::from_secs(30);
/// How long a graceful stop may take (the server waits up to 10 s for open connections).
const STOP_WITHIN: Duration = Duration::from_secs(15);

/// The `s3s-fs` binary: `$DEPOT_S3S_FS`, else [`DEFAULT_BINARY`]; panics if it is not there.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("DEPOT_S3S_FS").map_or_else(|| PathBuf::from(DEFAULT_BINARY), PathBuf::from);
    assert!(
        path.is_file(),
        "the S3 server binary s3s-fs is not at {}: run .ci/run, which installs it into /var/tmp/depot-tools \
         and exports DEPOT_S3S_FS (or point DEPOT_S3S_FS at an s3s-fs binary)",
        path.display()
    );
    path
}

/// An `s3s-fs` process on a loopback port of its own, serving a fresh temporary root. Killed
/// when dropped; the root is deleted with it.
pub struct S3Server {
    binary: PathBuf,
    port: u16,
    /// Holds `root/` and the server's log.
    dir: tempfile::TempDir,
    root: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl S3Server {
    /// Starts the server and waits until it accepts connections.
    pub fn start() -> S3Server {
        let binary = binary();
        let dir = tempfile::Builder::new().prefix("depot-s3-").tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let log = dir.path().join("s3s-fs.log");
        let mut server = S3Server { binary, port: free_loopback_port(), dir, root, log, child: None };
        server.spawn();
        server
    }

    /// The environment that points a Depot node's `[tiering]` at `bucket` on this server
    /// (path-style, this server's credentials, no instance-metadata lookups).
    pub fn depot_env(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("DEPOT_TIERING_BUCKET", bucket.to_owned()),
            ("DEPOT_TIERING_ENDPOINT", self.endpoint()),
            ("DEPOT_TIERING_REGION", REGION.to_owned()),
            ("DEPOT_TIERING_PATH_STYLE", "on".to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// `http://127.0.0.1:PORT`, the same across restarts.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The directory the server stores buckets and objects in (see the module's notes).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file an object's bytes are in, whether or not it exists: `ROOT/BUCKET/KEY`.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// Creates `name` (a valid S3 bucket name) as the server does: a directory under the root.
    /// Works whether the server runs or not.
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir(self.root.join(name)).unwrap_or_else(|e| panic!("creating bucket {name}: {e}"));
    }

    /// The objects stored in `bucket`, read from disk: (key, length) sorted by key. Panics if
    /// the bucket does not exist.
    pub fn objects(&self, bucket: &str) -> Vec<(String, u64)> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, u64)>) {
            for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
                let entry = entry.unwrap();
                let name = entry.file_name().to_string_lossy().into_owned();
                let kind = entry.file_type().unwrap();
                if kind.is_dir() {
                    walk(&entry.path(), &format!("{prefix}{name}/"), out);
                } else if kind.is_file() {
                    out.push((format!("{prefix}{name}"), entry.metadata().unwrap().len()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root.join(bucket), "", &mut out);
        out.sort();
        out
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGINT and waits for the process to end (SIGKILL if it takes over 15 s): the port
    /// refuses connections once this returns.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // A paused server handles the SIGINT only once continued.
        let _ = signal_pid(child.id(), "CONT");
        let _ = signal_pid(child.id(), "INT");
        let deadline = Instant::now() + STOP_WITHIN;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("s3s-fs did not stop within {STOP_WITHIN:?} of SIGINT; log:\n{}", self.log_tail());
    }

    /// SIGKILL: requests in flight are cut off.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs, then starts it again on the same port and root.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// SIGSTOP: the kernel still accepts connections into the listen backlog but nothing
    /// answers, so clients time out (an unresponsive, not a down, server).
    pub fn pause(&self) {
        let pid = self.pid().expect("pause: the S3 server is not running");
        signal_pid(pid, "STOP").unwrap_or_else(|e| panic!("{e}"));
    }

    /// SIGCONT after [`pause`](Self::pause): connections waiting in the backlog are served.
    pub fn resume(&self) {
        let pid = self.pid().expect("resume: the S3 server is not running");
        signal_pid(pid, "CONT").unwrap_or_else(|e| panic!("{e}"));
    }

    /// The last lines of the server's log (all its runs).
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 40)
    }

    /// The temporary directory holding the root and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the S3 server already runs");
        let log = OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut command = Command::new(&self.binary);
        command
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = command.spawn().unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls until the port accepts a connection; panics (with the log) if the process exits
    /// first or `START_WITHIN` passes.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_WITHIN;
        let addr = self.addr();
        loop {
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                panic!("s3s-fs exited ({status}) before serving on {addr}; log:\n{}", self.log_tail());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "s3s-fs does not accept connections on {addr} after {START_WITHIN:?}; log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
