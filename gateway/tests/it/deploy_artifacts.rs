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
//! would; only paths are relocated under a temp dir (`/etc/depot/...` and the binary).

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

/// Writes node `id`'s rendered files under `root/node-{id}` (VM paths relocated), checks the
/// units with systemd-analyze, and returns the command systemd would run.
fn install(root: &Path, id: u8, files: &BTreeMap<String, String>) -> Command {
    let home = root.join(format!("node-{id}"));
    let relocate = |vm_path: &str| -> PathBuf { home.join(vm_path.trim_start_matches('/')) };
    for (path, content) in files {
        let local = relocate(path);
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, content).unwrap();
    }
    let unit = &files["/etc/systemd/system/depot.service"];
    let secrets_unit = &files["/etc/systemd/system/depot-secrets.service"];

    // systemd-analyze checks that the programs exist: the relocated ones stand in.
    let units = home.join("units");
    std::fs::create_dir_all(&units).unwrap();
    let depot_path = depot().display().to_string();
    std::fs::write(units.join("depot.service"), unit.replace("/usr/local/bin/depot", &depot_path)).unwrap();
    let fetch = relocate("/usr/local/lib/depot/fetch-secrets");
    std::fs::set_permissions(&fetch, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(
        units.join("depot-secrets.service"),
        secrets_unit.replace("/usr/local/lib/depot/fetch-secrets", &fetch.display().to_string()),
    )
    .unwrap();
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

    // What fetch-secrets leaves in the EnvironmentFile is what read-secrets prints: the secrets
    // file as the module wrote it.
    assert_eq!(unit_value(unit, "EnvironmentFile"), "/run/depot/secrets.env");
    assert!(files["/usr/local/lib/depot/read-secrets"].contains("cat /etc/depot/secrets.env"));
    let env = environment_file(&files["/etc/depot/secrets.env"]);

    let exec_start: Vec<&str> = unit_value(unit, "ExecStart").split_whitespace().collect();
    assert_eq!(exec_start[0], "/usr/local/bin/depot");
    let args: Vec<String> = exec_start[1..]
        .iter()
        .map(|a| if a.starts_with("/etc/depot/") { relocate(a).display().to_string() } else { (*a).to_owned() })
        .collect();
    let mut command = Command::new(depot());
    command.args(&args).env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
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
