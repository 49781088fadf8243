//! The deploy artifacts boot a cluster: Terraform renders `terraform/modules/node-config` for three
//! nodes offline (as its `terraform test` does), and three `depot serve` processes start from
//! exactly the files it renders, the way systemd would run them: `ExecStart` of the rendered
//! `depot.service`, its `EnvironmentFile` filled from the rendered secrets file, the rendered
//! config file with its data dir, ports and peers. The rendered units pass
//! `systemd-analyze verify`. The metadata store is a TLS-only Postgres (plain connections refused),
//! reached with the `sslmode=require` URL the cloud modules deliver. Then a produce / fetch / ack
//! round goes through every node.
//!
//! The nodes listen on three loopback addresses (127.77.0.1-3) with the same ports, as three VMs
//! would; only the VM's directories (`/etc/depot`, `/run/depot`, ...) and the binary's path are
//! relocated under a temp dir, in every file. `depot-secrets.service`'s script runs as on the VM
//! (it needs the `depot` user, created if missing) and leaves the cluster secret in its own file.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::e2e::{depot, request};
use crate::terraform_boot::{node_config_module, terraform};

const NODES: u8 = 3;
const START_DEADLINE: Duration = Duration::from_secs(90);
const ADMIN_PASSWORD: &str = "deploy-artifacts-admin-password";

fn node_ip(id: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 77, 0, id)
}

/// Two ports free on every node's address (each VM has its own; here they share the kernel).
fn free_ports() -> (u16, u16) {
    for _ in 0..50 {
        let probe = |port: u16| {
            (1..=NODES).map(|id| TcpListener::bind(SocketAddr::new(IpAddr::V4(node_ip(id)), port))).collect::<Vec<_>>()
        };
        let first = TcpListener::bind(SocketAddr::new(IpAddr::V4(node_ip(1)), 0)).unwrap().local_addr().unwrap().port();
        let second =
            TcpListener::bind(SocketAddr::new(IpAddr::V4(node_ip(1)), 0)).unwrap().local_addr().unwrap().port();
        if first != second && probe(first).iter().chain(probe(second).iter()).all(Result::is_ok) {
            return (first, second);
        }
    }
    panic!("no pair of ports free on 127.77.0.1-3");
}

/// `terraform output -json files` of each node: path -> content.
fn render(
    dir: &Path,
    api_port: u16,
    cluster_port: u16,
    metadata_url: &str,
    root: &Path,
) -> Vec<BTreeMap<String, String>> {
    std::fs::create_dir_all(dir.join("plugin-cache")).unwrap();
    std::fs::write(dir.join("terraformrc"), "disable_checkpoint = true\n").unwrap();
    let peers: Vec<String> = (1..=NODES).map(|id| format!("{{ id = {id}, host = \"{}\" }}", node_ip(id))).collect();
    let secrets = format!(
        "DEPOT_CLUSTER_SECRET={}\nDEPOT_JWT_SECRET={}\nDEPOT_METADATA_URL={metadata_url}\nDEPOT_ADMIN_PASSWORD={ADMIN_PASSWORD}\n",
        depot_tests::cluster::hex(32),
        depot_tests::cluster::hex(32),
    );
    let mut main_tf = String::new();
    for id in 1..=NODES {
        main_tf.push_str(&format!(
            r#"module "node{id}" {{
  source            = "{module}"
  node_id           = {id}
  cluster_id        = "deploy-artifacts"
  peers             = [{peers}]
  listen_address    = "{ip}"
  api_port          = {api_port}
  cluster_port      = {cluster_port}
  mount_point       = "{mount}"
  volume_device     = "/dev/disk/by-id/virtio-depot-data-{id}"
  volume_filesystem = "ext4"
  binary_url        = "https://downloads.example.com/depot/0.1.0/depot-x86_64-linux"
  binary_sha256     = "5f2b9c0e4d6a8b1c3e5f7a9b0c2d4e6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d"
  secrets_env       = {secrets}
}}

output "files{id}" {{
  value     = module.node{id}.files
  sensitive = true
}}

"#,
            module = node_config_module().display(),
            peers = peers.join(", "),
            ip = node_ip(id),
            mount = root.join(format!("node-{id}/var/lib/depot")).display(),
            secrets = serde_json::to_string(&secrets).unwrap(),
        ));
    }
    std::fs::write(dir.join("main.tf"), main_tf).unwrap();
    terraform(dir, &["init", "-input=false", "-no-color"]);
    terraform(dir, &["apply", "-auto-approve", "-input=false", "-no-color"]);
    (1..=NODES)
        .map(|id| {
            let out: Value =
                serde_json::from_str(&terraform(dir, &["output", "-no-color", "-json", &format!("files{id}")]))
                    .unwrap();
            out.as_object()
                .unwrap()
                .iter()
                .map(|(path, file)| (path.clone(), file["content"].as_str().unwrap().to_owned()))
                .collect()
        })
        .collect()
}

/// A systemd `EnvironmentFile`: `KEY=VALUE` lines, comments and blank lines skipped.
fn environment_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

/// The value of `key=` in a unit file.
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or_else(|| panic!("no {key}= in\n{unit}"))
}

/// The VM directories the rendered files name, which the test relocates under a node's home.
const VM_DIRS: [&str; 4] = ["/etc/depot", "/run/depot", "/usr/local/lib/depot", "/etc/systemd/system"];

/// The service user the rendered units and scripts name (`useradd` as on the VM, if missing).
fn ensure_depot_user() {
    let known = Command::new("getent").args(["passwd", "depot"]).output().is_ok_and(|o| o.status.success());
    if !known {
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "depot"])
            .output()
            .unwrap_or_else(|e| panic!("useradd depot: {e} (the test runs as root, as CI does)"));
        let raced = String::from_utf8_lossy(&out.stderr).contains("already exists");
        assert!(out.status.success() || raced, "useradd depot: {out:?}");
    }
}

/// Writes node `id`'s rendered files under `root/node-{id}` (only the VM's directories
/// relocated, in every file), checks the units with systemd-analyze, runs `depot-secrets`'s
/// script as systemd would before each start, and returns the command `depot.service` runs.
fn install(root: &Path, id: u8, files: &BTreeMap<String, String>) -> Command {
    let home = root.join(format!("node-{id}"));
    let relocate_text = |text: &str| -> String {
        let mut text = text.replace("/usr/local/bin/depot", &depot().display().to_string());
        for dir in VM_DIRS {
            text = text.replace(dir, &home.join(dir.trim_start_matches('/')).display().to_string());
        }
        text
    };
    let relocate = |vm_path: &str| -> PathBuf { PathBuf::from(relocate_text(vm_path)) };
    for (path, content) in files {
        let local = relocate(path);
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, relocate_text(content)).unwrap();
        if path.starts_with("/usr/local/lib/depot/") {
            std::fs::set_permissions(&local, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        }
    }
    let unit = std::fs::read_to_string(relocate("/etc/systemd/system/depot.service")).unwrap();
    let units = relocate("/etc/systemd/system");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(units.join("depot.service"))
        .arg(units.join("depot-secrets.service"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}): install Debian's systemd package (.ci/run does)")
        });
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "node {id}: the rendered units fail systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // depot-secrets.service: its script, as root, before the start.
    ensure_depot_user();
    let secrets_unit = std::fs::read_to_string(units.join("depot-secrets.service")).unwrap();
    let out = Command::new(unit_value(&secrets_unit, "ExecStart")).output().unwrap();
    assert!(out.status.success(), "node {id}: fetch-secrets failed: {out:?}");
    let env_file = unit_value(&unit, "EnvironmentFile");
    let env = environment_file(&std::fs::read_to_string(env_file).unwrap());
    assert!(env.iter().all(|(k, _)| k != "DEPOT_CLUSTER_SECRET"), "the cluster secret is not in the environment");
    let secret_file = relocate("/run/depot/cluster-secret");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&secret_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", secret_file.display());

    let exec_start: Vec<String> = unit_value(&unit, "ExecStart").split_whitespace().map(str::to_owned).collect();
    assert_eq!(Path::new(&exec_start[0]), depot());
    let args = &exec_start[1..];
    assert!(
        !args.iter().any(|a| a.contains("secret") && !a.ends_with(".toml")),
        "a secret on the command line: {args:?}"
    );
    let mut command = Command::new(depot());
    command.args(args).env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command.envs(env).env("DEPOT_LOG", "warn");
    command.stderr(Stdio::from(std::fs::File::create(home.join("depot.log")).unwrap()));
    command
}

#[test]
fn three_nodes_start_from_the_rendered_deploy_files_and_serve_a_round() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("vms");
    let (api_port, cluster_port) = free_ports();
    // A TLS-only Postgres, with the URL the cloud modules build (`sslmode=require`: every managed
    // Postgres they create refuses plain connections).
    let metadata_url = crate::cluster::tls_metadata_database().url("localhost", "sslmode=require");
    let rendered = render(&dir.path().join("terraform"), api_port, cluster_port, &metadata_url, &root);

    let mut commands: Vec<Command> =
        rendered.iter().enumerate().map(|(i, files)| install(&root, i as u8 + 1, files)).collect();
    // Started together, as the VMs' systemd would; each waits for the others (--wait-for 3).
    let mut children = Vec::new();
    for command in &mut commands {
        children.push(command.stdin(Stdio::null()).stdout(Stdio::null()).spawn().unwrap());
    }
    let guard = Children(children);
    let api = |id: u8| SocketAddr::new(IpAddr::V4(node_ip(id)), api_port);
    let deadline = Instant::now() + START_DEADLINE;
    for id in 1..=NODES {
        loop {
            let r = request(api(id), None, "GET", "/readyz", &[], &[], Duration::from_secs(5));
            if r.as_ref().is_ok_and(|r| r.status == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} not ready: {r:?}\n{}",
                std::fs::read_to_string(root.join(format!("node-{id}/depot.log"))).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Each node used the data dir the rendered config names.
    for id in 1..=NODES {
        assert!(root.join(format!("node-{id}/var/lib/depot/data/raft")).is_dir(), "node {id}");
    }

    let login = json!({"username": "admin", "password": ADMIN_PASSWORD}).to_string();
    let headers = [("Content-Type", "application/json")];
    let r = request(api(2), None, "POST", "/v1/auth/token", &headers, login.as_bytes(), START_DEADLINE).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let token = r.body["access_token"].as_str().unwrap().to_owned();
    let call = |id: u8, method: &str, path: &str, body: Value| {
        request(api(id), Some(&token), method, path, &headers, body.to_string().as_bytes(), START_DEADLINE).unwrap()
    };
    let r = call(1, "PUT", "/v1/stations/deployed", json!({"replicas": 3}));
    assert_eq!(r.status, 201, "{r:?}");
    for id in 1..=NODES {
        let r = call(id, "POST", "/v1/stations/deployed/messages", json!({"from": id}));
        assert_eq!(r.status, 201, "produce through node {id}: {r:?}");
    }
    let r = call(3, "PUT", "/v1/stations/deployed/consumer-groups/g", json!({}));
    assert_eq!(r.status, 201, "{r:?}");
    let r =
        call(3, "POST", "/v1/stations/deployed/consumer-groups/g/fetch", json!({"max_messages": 10, "wait_ms": 1000}));
    assert_eq!(r.status, 200, "{r:?}");
    let messages = r.body["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), NODES as usize, "{r:?}");
    let receipts: Vec<Value> = messages.iter().map(|m| m["receipt"].clone()).collect();
    let r = call(2, "POST", "/v1/stations/deployed/consumer-groups/g/ack", json!({"receipts": receipts}));
    assert_eq!(r.status, 200, "{r:?}");
    drop(guard);
}

/// Kills the nodes when the test ends, passed or failed.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
