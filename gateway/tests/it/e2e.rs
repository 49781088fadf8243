//! Harness of the end-to-end tests: the real `depot dev` binary on a random loopback port, run
//! by the test kit ([`depot_tests::process`]), and the kit's HTTP/1.1 client.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

pub use depot_tests::disk::{free_bytes, write_ballast, Tmpfs};
pub use depot_tests::http::{request, send, Conn, Response};
pub use depot_tests::process::{eventually, open_fds, Server};

pub const ADMIN_PASSWORD: &str = "e2e-admin-password";

/// The `depot` binary cargo built for these tests.
pub fn depot() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_depot"))
}

/// Starts `depot dev` on `data_dir` with extra environment, and waits for its banner.
pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
    start_under(&[], data_dir, env)
}

/// Like [`start`], run through `wrapper` (a command that execs the rest of its arguments, such
/// as `prlimit --nofile=1024:1024 --`), so the server's pid is still the child's.
pub fn start_under(wrapper: &[&str], data_dir: &Path, env: &[(&str, &str)]) -> Server {
    let mut command = depot_tests::process::dev_command(depot(), wrapper, data_dir, ADMIN_PASSWORD);
    command.stderr(Stdio::null()).envs(env.iter().copied());
    // Generous: a node with tens of thousands of stations opens every log first.
    Server::start_dev(command, Duration::from_secs(180)).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `depot dev` on `data_dir` expecting it to refuse to start: waits up to 30 s for it to exit
/// and returns its exit status and what it wrote to stderr.
pub fn start_refused(data_dir: &Path) -> (ExitStatus, String) {
    let command = depot_tests::process::dev_command(depot(), &[], data_dir, ADMIN_PASSWORD);
    depot_tests::process::start_refused(command, Duration::from_secs(30))
}
