//! The packaging in the repository works with this build: `depot probe` (the container's health
//! check), the Dockerfile's settings and health check, and the systemd unit, which passes
//! `systemd-analyze verify` and whose `ExecStart` starts a node.
//!
//! No Docker engine runs on the test machines (only the client is installed), so the image itself
//! is not built here: what the image runs is checked instead, with this build's binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use depot_tests::process::dev_command;

use crate::e2e::{depot, Server};

const DEADLINE: Duration = Duration::from_secs(30);

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn dev_server(dir: &Path) -> Server {
    let command = dev_command(depot(), &[], &dir.join("data"), "deploy-files-password");
    Server::start_dev(command, DEADLINE).unwrap_or_else(|e| panic!("{e}"))
}

fn run(mut command: Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

#[test]
fn depot_probe_passes_for_a_live_node_and_fails_clearly_for_a_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = dev_server(dir.path());
    let mut probe = Command::new(depot());
    probe.args(["probe", "--url", &format!("http://{}/livez", server.addr)]);
    let out = run(probe);
    assert!(out.status.success(), "{out:?}");

    // Nothing listens on a port just released.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut probe = Command::new(depot());
    probe.args(["probe", "--url", &format!("http://{free}/livez")]);
    let out = run(probe);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("connecting"), "{out:?}");

    // A path that answers 404 is not healthy.
    let mut probe = Command::new(depot());
    probe.args(["probe", "--url", &format!("http://{}/nowhere", server.addr)]);
    let out = run(probe);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"), "{out:?}");
}

/// The Dockerfile's instructions as (keyword, rest of line), continuation lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_file("Dockerfile")).unwrap();
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        current.push_str(line.trim_end_matches('\\'));
        current.push(' ');
        if !line.ends_with('\\') {
            joined.push(std::mem::take(&mut current));
        }
    }
    joined
        .into_iter()
        .map(|l| {
            let (keyword, rest) = l.trim().split_once(' ').unwrap_or((l.trim(), ""));
            (keyword.to_uppercase(), rest.trim().to_owned())
        })
        .collect()
}

#[test]
fn the_dockerfile_runs_this_binary_non_root_with_real_settings_and_a_working_health_check() {
    let instructions = dockerfile();
    let all = |k: &str| instructions.iter().filter(|(i, _)| i == k).map(|(_, r)| r.clone()).collect::<Vec<_>>();
    let stages = all("FROM");
    assert!(stages.len() >= 2, "a multi-stage build: {stages:?}");
    let runtime = stages.last().unwrap();
    assert!(runtime.contains("distroless"), "the runtime stage has a minimal base: {runtime}");
    let user = all("USER").last().cloned().expect("a USER for the runtime stage");
    assert!(!["root", "0", "0:0"].contains(&user.as_str()), "runs as {user}");
    let build = all("RUN").join("\n");
    assert!(build.contains("cargo build --release --locked -p depot-gateway --bin depot"), "{build}");

    // Every DEPOT_* the runtime image sets is a real setting of `depot serve`.
    let last_from = instructions.iter().rposition(|(i, _)| i == "FROM").unwrap();
    let runtime_env: Vec<String> =
        instructions[last_from..].iter().filter(|(i, _)| i == "ENV").map(|(_, r)| r.clone()).collect();
    let help = run({
        let mut c = Command::new(depot());
        c.args(["serve", "--help"]);
        c
    });
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let env = runtime_env.join(" ");
    let settings: Vec<(String, String)> =
        env.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    assert!(settings.iter().any(|(k, _)| k == "DEPOT_LISTEN"), "{env}");
    for (name, _) in &settings {
        assert!(help.contains(name.as_str()), "the image sets {name}, which depot serve does not know:\n{help}");
    }

    // The health check, exactly as the image runs it, against a live node whose listen address
    // is in DEPOT_LISTEN as the image's ENV has it (0.0.0.0:PORT).
    let check = all("HEALTHCHECK").pop().expect("a HEALTHCHECK");
    let args: Vec<String> = serde_json::from_str(check.split_once("CMD").expect("HEALTHCHECK ... CMD [...]").1.trim())
        .unwrap_or_else(|e| panic!("the health check is an exec-form JSON array ({e}): {check}"));
    assert_eq!(args[0], "/usr/local/bin/depot", "{args:?}");
    let dir = tempfile::tempdir().unwrap();
    let server = dev_server(dir.path());
    let mut command = Command::new(depot());
    command.args(&args[1..]).env("DEPOT_LISTEN", format!("0.0.0.0:{}", server.addr.port()));
    let out = run(command);
    assert!(out.status.success(), "the image's health check fails against a live node: {out:?}");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_and_its_exec_start_starts_a_node() {
    let unit = std::fs::read_to_string(repo_file("deploy/systemd/depot.service")).unwrap();
    let exec_start = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart").to_owned();
    let dir = tempfile::tempdir().unwrap();
    // systemd-analyze checks that the program exists: this build's binary stands in for
    // /usr/local/bin/depot.
    let local = unit.replace("/usr/local/bin/depot", &depot().display().to_string());
    let path = dir.path().join("depot.service");
    std::fs::write(&path, local).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap_or_else(|e| {
        panic!("cannot run systemd-analyze ({e}): install Debian's systemd package (.ci/run does)")
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {out:?}");

    // ExecStart as written, with the config and data dir in a temp dir.
    let config = dir.path().join("depot.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\n").unwrap();
    let data = dir.path().join("data");
    let args: Vec<String> = exec_start
        .split_whitespace()
        .skip(1)
        .map(|a| match a {
            "/etc/depot/depot.toml" => config.display().to_string(),
            "/var/lib/depot/data" => data.display().to_string(),
            other => other.to_owned(),
        })
        .collect();
    let mut command = Command::new(depot());
    command.args(&args).env("DEPOT_ADMIN_PASSWORD", "systemd-unit-password").env("DEPOT_LOG", "warn");
    let mut server = Server::start("depot serve", command, DEADLINE).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let r = crate::e2e::request(server.addr, None, "GET", "/livez", &[], &[], DEADLINE).unwrap();
    assert_eq!(r.status, 200);
    assert!(data.join("raft").is_dir(), "the node uses the unit's --data-dir");
    server.terminate();
}
