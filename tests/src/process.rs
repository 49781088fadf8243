//! Servers run as child processes: started, awaited until they print where they listen,
//! signalled, and always killed and reaped when dropped, so a failed assertion never leaves one
//! running.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{send, Response};

/// What a server prints once it serves: `... listening on http://ADDR ...`.
const LISTENING: &str = "listening on http://";
/// What `depot dev` prints with the admin's access token.
const TOKEN: &str = "export DEPOT_TOKEN=";

/// The `depot dev` command line: a single node on a port of its own choosing, logging warnings,
/// with `password` for the admin. `wrapper` is a command that execs the rest of its arguments
/// (such as `prlimit --nofile=1024:1024 --`), so the server's pid is still the child's.
pub fn dev_command(depot: &Path, wrapper: &[&str], data_dir: &Path, password: &str) -> Command {
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
        .env("DEPOT_ADMIN_PASSWORD", password);
    command
}

/// A server process. Its stdout is read to the end by a thread of its own (a server must never
/// block on a full pipe); its stderr goes where the command said.
pub struct Server {
    name: String,
    child: Child,
    pub addr: SocketAddr,
    /// The admin token `depot dev` printed; empty for servers that print none.
    pub token: String,
    /// Lines of stdout not yet looked at.
    lines: Mutex<mpsc::Receiver<String>>,
}

impl Server {
    /// Starts `command` and waits up to `within` for its `listening on http://ADDR` line.
    pub fn start(name: &str, mut command: Command, within: Duration) -> Result<Server, String> {
        command.stdout(Stdio::piped()).stdin(Stdio::null());
        let mut child = command.spawn().map_err(|e| format!("starting {name} ({command:?}): {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Owned by the guard from here on.
        let mut server = Server {
            name: name.to_owned(),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: String::new(),
            lines: Mutex::new(lines),
        };
        let line = server.wait_line(within, |l| l.contains(LISTENING))?;
        let rest = line.split(LISTENING).nth(1).unwrap_or_default();
        let addr = rest.split_whitespace().next().unwrap_or_default();
        server.addr = addr.parse().map_err(|_| format!("{name}: no address in {line:?}"))?;
        Ok(server)
    }

    /// Starts `depot dev` (see [`dev_command`]), waits up to `within` for its address and the
    /// admin token it prints.
    pub fn start_dev(command: Command, within: Duration) -> Result<Server, String> {
        let deadline = Instant::now() + within;
        let mut server = Server::start("depot dev", command, within)?;
        let left = deadline.saturating_duration_since(Instant::now());
        let line = server.wait_line(left, |l| l.starts_with(TOKEN))?;
        server.token = line[TOKEN.len()..].trim().to_owned();
        Ok(server)
    }

    /// Waits up to `within` for a line of stdout that `matches`, and returns it; lines before it
    /// are skipped. `Err` if the process ends first.
    pub fn wait_line(&mut self, within: Duration, matches: impl Fn(&str) -> bool) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = self.lines.lock().unwrap_or_else(|p| p.into_inner()).recv_timeout(left);
            match next {
                Ok(line) if matches(&line) => return Ok(line),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("{}: not printed within {within:?}", self.name));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
                    return Err(format!("{} exited ({status}) before printing what was awaited", self.name));
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A JSON request as the admin of `depot dev` (60 s at most; panics on connection errors).
    pub fn json(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        self.json_as(Some(&self.token), method, path, body)
    }

    /// A JSON request with `token` (`None`: no Authorization header).
    pub fn json_as(&self, token: Option<&str>, method: &str, path: &str, body: Option<&Value>) -> Response {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        send(self.addr, token, method, path, &[("Content-Type", "application/json")], &bytes)
    }

    /// Sends `signal` (a name such as `TERM`) with `kill(1)`.
    pub fn signal(&self, signal: &str) -> Result<(), String> {
        signal_pid(self.child.id(), signal)
    }

    /// SIGTERM, then the exit status, which must be success (a clean drain).
    pub fn terminate(&mut self) {
        self.signal("TERM").unwrap_or_else(|e| panic!("{e}"));
        let exit = self.child.wait().unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name));
        assert!(exit.success(), "{} exited with {exit} after SIGTERM", self.name);
    }

    /// SIGTERM, then up to `within` for the process to end (SIGKILL after that): how it ended,
    /// `Err` if it had to be killed.
    pub fn stop(mut self, within: Duration) -> Result<ExitStatus, String> {
        let _ = self.signal("TERM");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(format!("{} did not stop within {within:?} of SIGTERM", self.name))
    }

    /// Waits up to `within` for the process to end by itself: how it ended, `None` if it still
    /// runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no drain, no clean-shutdown marker.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// CPU seconds (user and system) the process has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Already exited after `terminate`: kill fails harmlessly and wait returns the status.
        self.kill();
    }
}

/// Sends `signal` (a name such as `TERM`, `STOP`) to `pid` with `kill(1)`.
pub fn signal_pid(pid: u32, signal: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("running kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{signal} {pid} failed: {status}"))
    }
}

/// Runs `command` expecting the server to refuse to start: waits up to `within` for it to exit
/// and returns its exit status and what it wrote to stderr. Panics if it runs on or succeeds.
pub fn start_refused(mut command: Command, within: Duration) -> (ExitStatus, String) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("waiting for {command:?}: {e}")) {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still runs after {within:?}; it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(!status.success(), "{command:?} exited with {status}: {stderr}");
    (status, stderr)
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `within`.
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

/// Descriptors a process holds open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// The local ends of process `pid`'s IPv4 TCP connections to `remote`, from `/proc/PID/net/tcp`
/// (every socket of the network namespace) kept to the sockets among the process's descriptors.
/// Stop the process first (SIGSTOP) for a set that cannot change while it is read.
pub fn tcp_connections_to(pid: u32, remote: SocketAddr) -> Result<BTreeSet<SocketAddr>, String> {
    let fd_dir = format!("/proc/{pid}/fd");
    let mut inodes = BTreeSet::new();
    for entry in std::fs::read_dir(&fd_dir).map_err(|e| format!("{fd_dir}: {e}"))? {
        let Ok(target) = entry.and_then(|e| std::fs::read_link(e.path())) else { continue };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            inodes.insert(inode.to_owned());
        }
    }
    let table_path = format!("/proc/{pid}/net/tcp");
    let table = std::fs::read_to_string(&table_path).map_err(|e| format!("{table_path}: {e}"))?;
    let mut local = BTreeSet::new();
    // `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(from), Some(to), Some(inode)) = (fields.get(1), fields.get(2), fields.get(9)) else { continue };
        if inodes.contains(*inode) && proc_net_address(to) == Some(remote) {
            local.extend(proc_net_address(from));
        }
    }
    Ok(local)
}

/// An IPv4 address as `/proc/net/tcp` prints it: the address's four bytes in memory order as
/// one host-order hexadecimal number, a colon, the port in hexadecimal.
fn proc_net_address(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::from((std::net::Ipv4Addr::from(ip.to_ne_bytes()), port)))
}

/// CPU seconds (user + system) from a `/proc/PID/stat` file (100 ticks a second).
pub fn cpu_seconds(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime is field 14, stime 15; `rest` starts at field 3.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// The last `n` lines of a log file (empty if it cannot be read).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A binary that sits next to the running executable (or one directory up, where cargo puts a
/// test's binaries), such as a benchmark's release `depot`.
pub fn sibling_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join(name), dir.parent()?.join(name)].into_iter().find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn a_connection_is_found_by_its_owner_and_its_remote_end_only() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let remote = listener.local_addr().unwrap();
        let ours = TcpStream::connect(remote).unwrap();
        let (_accepted, _) = listener.accept().unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let _elsewhere = TcpStream::connect(other.local_addr().unwrap()).unwrap();

        let found = tcp_connections_to(std::process::id(), remote).unwrap();
        // Not the accepted end (its remote end is ours), nor the connection to the other port.
        assert_eq!(found, BTreeSet::from([ours.local_addr().unwrap()]));
        // A process without sockets of its own sees the same table and keeps nothing of it.
        let mut child = Command::new("sleep").arg("10").spawn().unwrap();
        let theirs = tcp_connections_to(child.id(), remote);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(theirs.unwrap(), BTreeSet::new());
    }

    #[test]
    fn proc_net_addresses_are_read_as_the_kernel_prints_them() {
        assert_eq!(proc_net_address("0100007F:1F90"), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(proc_net_address("00000000:0000"), Some("0.0.0.0:0".parse().unwrap()));
        assert_eq!(proc_net_address("0100007F"), None);
        assert_eq!(proc_net_address("zz:1F90"), None);
    }
}
