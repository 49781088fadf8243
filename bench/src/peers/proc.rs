//! The peers' servers as child processes: found on the machine, started in a process group of
//! their own with their output in a log file, awaited until they log that they are ready, and
//! stopped (all of a cluster at once) or killed on drop.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A server started as a child process, its output in a log file; killed on drop.
pub(crate) struct Proc {
    pub name: &'static str,
    child: Child,
    pub log: PathBuf,
    /// Run after the child has exited (e.g. stopping epmd).
    pub on_stop: Option<Command>,
}

impl Proc {
    /// Starts `cmd` in its own process group (signals go to the whole group).
    pub fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Proc> {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(&log)?;
        cmd.stdout(out.try_clone()?).stderr(out).stdin(Stdio::null()).process_group(0);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Proc { name, child, log, on_stop: None })
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits for `pattern` in the log; returns the text after it on that line.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log_text();
            if let Some(line) = text.lines().find(|l| l.contains(pattern)) {
                return Ok(line.split(pattern).nth(1).unwrap_or_default().to_owned());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited with {status} before {pattern:?}:\n{}", self.name, tail(&text));
            }
            if Instant::now() > deadline {
                bail!("{}: no {pattern:?} within {timeout:?}:\n{}", self.name, tail(&text));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited with {status}:\n{}", self.name, tail(&self.log_text()));
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if let Ok(None) = self.child.try_wait() {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(None) = self.child.try_wait() {
                eprintln!("{} did not stop within {grace:?} of SIGTERM; killing it", self.name);
                let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if let Some(mut cmd) = self.on_stop.take() {
            let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// Stops `procs` all at once (SIGTERM, then SIGKILL after `grace`), then runs their `on_stop`
/// commands (a shared epmd goes only once every node is down).
pub(crate) fn stop_all(procs: &mut [Proc], grace: Duration) {
    let after: Vec<Command> = procs.iter_mut().filter_map(|p| p.on_stop.take()).collect();
    std::thread::scope(|s| {
        for p in procs.iter_mut() {
            s.spawn(move || p.stop(grace));
        }
    });
    for mut cmd in after {
        let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

pub(crate) fn program(env: &str, candidates: &[&str]) -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Ok(PathBuf::from(p));
    }
    for c in candidates {
        if c.contains('/') {
            if Path::new(c).is_file() {
                return Ok(PathBuf::from(c));
            }
        } else if let Some(p) = std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|d| d.join(c)).find(|p| p.is_file()))
        {
            return Ok(p);
        }
    }
    bail!("none of {candidates:?} found (set {env}, or run scripts/bench-peers, which installs the peers)")
}
