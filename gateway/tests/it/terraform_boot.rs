//! The Terraform-rendered node config boots: terraform renders a single node's config offline
//! through the provider-free module terraform/modules/node-config (with the `[tiering]` table the
//! aws module passes), and the real `depot serve --config FILE` starts with it, becomes ready
//! although the bucket is out of reach, and lets a station tier (the bucket came from the
//! file). The same file without `[tiering]` boots too, and refuses station tiering.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::e2e::*;

const BUCKET: &str = "depot-tiering-boot-test";
/// A whole `terraform init` or `apply` of a provider-free module: seconds, offline.
const TERRAFORM_DEADLINE: Duration = Duration::from_secs(120);
const START_DEADLINE: Duration = Duration::from_secs(60);
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// `terraform/modules/node-config` of this checkout.
pub(crate) fn node_config_module() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../terraform/modules/node-config").canonicalize().unwrap()
}

/// Runs `terraform ARGS` in `dir` with its data, plugin cache and CLI config inside `dir` (no
/// network, no user config), up to [`TERRAFORM_DEADLINE`]; its stdout. Panics with its output
/// if it fails, and with a clear message if terraform is not installed.
pub(crate) fn terraform(dir: &Path, args: &[&str]) -> String {
    let (out, err) = (dir.join("terraform.out"), dir.join("terraform.err"));
    let mut child = Command::new("terraform")
        .args(args)
        .current_dir(dir)
        .env("TF_DATA_DIR", dir.join(".terraform-data"))
        .env("TF_PLUGIN_CACHE_DIR", dir.join("plugin-cache"))
        .env("TF_CLI_CONFIG_FILE", dir.join("terraformrc"))
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_IN_AUTOMATION", "1")
        .env("TF_INPUT", "0")
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `terraform` ({e}): this test needs Terraform >= 1.9 on PATH \
                 (https://developer.hashicorp.com/terraform/install); it runs offline, no provider is downloaded"
            )
        });
    let deadline = Instant::now() + TERRAFORM_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("terraform {args:?} still runs after {TERRAFORM_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(status.success(), "terraform {args:?} failed ({status}):\n{stdout}\n{stderr}");
    stdout
}

/// The config file text node-config renders for node 1 of a cluster of one, with the tiering
/// bucket passed as the aws module passes it.
fn render_config(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("plugin-cache")).unwrap();
    std::fs::write(dir.join("terraformrc"), "disable_checkpoint = true\n").unwrap();
    // The required variables as the module's tests give them; the single peer is this node, on
    // loopback (a node never dials itself).
    let main_tf = format!(
        r#"module "node" {{
  source            = "{module}"
  node_id           = 1
  cluster_id        = "tf-boot"
  peers             = [{{ id = 1, host = "127.0.0.1" }}]
  volume_device     = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0"
  volume_filesystem = "xfs"
  binary_url        = "https://downloads.example.com/depot/0.1.0/depot-x86_64-linux"
  binary_sha256     = "5f2b9c0e4d6a8b1c3e5f7a9b0c2d4e6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d"
  secrets_command   = "cat /dev/null"
  tiering = {{
    bucket   = "{BUCKET}"
    endpoint = "https://s3.eu-west-1.amazonaws.com"
    region   = "eu-west-1"
  }}
}}

output "config_toml" {{
  value = module.node.config_toml
}}
"#,
        module = node_config_module().display()
    );
    std::fs::write(dir.join("main.tf"), main_tf).unwrap();
    terraform(dir, &["init", "-input=false", "-no-color"]);
    terraform(dir, &["apply", "-auto-approve", "-input=false", "-no-color"]);
    terraform(dir, &["output", "-no-color", "-raw", "config_toml"])
}

/// `toml` without its `[tiering]` table (the header and its lines up to the next table).
fn without_tiering(toml: &str) -> String {
    let mut skipping = false;
    let mut kept = Vec::new();
    for line in toml.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            skipping = trimmed == "[tiering]";
        }
        if !skipping {
            kept.push(line);
        }
    }
    kept.join("\n") + "\n"
}

/// `depot serve --config FILE` with what cannot work on this machine overridden, waiting for
/// its banner; its stderr goes to `stderr_log`.
fn serve(config: &Path, data_dir: &Path, stderr_log: &Path) -> Server {
    let secret_file = data_dir.with_extension("cluster-secret");
    depot_tests::cluster::write_secret_file(&secret_file, "terraform-boot-cluster-secret").unwrap();
    let mut command = Command::new(depot());
    command
        .arg("serve")
        .arg("--config")
        .arg(config)
        // The file says data_dir = "/var/lib/depot/data" (the VM's volume), listen =
        // "0.0.0.0:4444" and cluster_listen = "0.0.0.0:6222": not writable, and fixed public
        // ports, here. A temp dir and loopback ports of the kernel's choosing instead.
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"])
        // The file names /run/depot/cluster-secret, which depot-secrets.service writes on the VM
        // from the secrets' DEPOT_CLUSTER_SECRET: the same, in the temp dir.
        .arg("--cluster-secret-file")
        .arg(secret_file);
    // Nothing inherited may change what the file says (DEPOT_*), or where the AWS SDK looks for
    // credentials (AWS_*).
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("DEPOT_") || name.starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    // What the VM's secrets.env delivers (the file says so): the admin's password. Static AWS
    // credentials as a platform without an instance role would give them; no instance metadata
    // probe, no ~/.aws files.
    command
        .env("DEPOT_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("DEPOT_LOG", "info")
        .env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", data_dir.join("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", data_dir.join("no-aws-credentials"))
        .stderr(File::create(stderr_log).unwrap());
    Server::start("depot serve", command, START_DEADLINE).unwrap_or_else(|e| {
        panic!(
            "depot serve refused the Terraform-rendered config {}: {e}\nstderr:\n{}",
            config.display(),
            std::fs::read_to_string(stderr_log).unwrap_or_default()
        )
    })
}

/// Waits for `/readyz` 200, checks `/livez`, and logs in as the admin.
fn ready_and_logged_in(server: &mut Server, stderr_log: &Path) {
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let last = match request(server.addr, None, "GET", "/readyz", &[], &[], Duration::from_secs(5)) {
            Ok(r) if r.status == 200 => break,
            Ok(r) => format!("{} {}", r.status, r.body),
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "/readyz not 200 within {READY_DEADLINE:?}; last answer: {last}\nstderr:\n{}",
            std::fs::read_to_string(stderr_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.json_as(None, "GET", "/livez", None).status, 200);
    let login = json!({"username": "admin", "password": ADMIN_PASSWORD});
    let r = server.json_as(None, "POST", "/v1/auth/token", Some(&login));
    assert_eq!(r.status, 200, "{r:?}");
    server.token = r.body["access_token"].as_str().unwrap().to_owned();
}

#[test]
fn terraform_rendered_node_config_boots_depot_serve() {
    let dir = tempfile::tempdir().unwrap();
    let terraform_dir = dir.path().join("terraform");
    std::fs::create_dir(&terraform_dir).unwrap();
    let toml = render_config(&terraform_dir);

    // The module must keep rendering what the node is started with.
    assert!(toml.contains("\n[tiering]\n"), "no [tiering] table in the rendered config:\n{toml}");
    for line in [
        format!("bucket = \"{BUCKET}\""),
        "endpoint = \"https://s3.eu-west-1.amazonaws.com\"".to_owned(),
        "region = \"eu-west-1\"".to_owned(),
        "node_id = 1".to_owned(),
        "peers = \"1=127.0.0.1:6222\"".to_owned(),
        "wait_for = 1".to_owned(),
        "cluster_id = \"tf-boot\"".to_owned(),
        "cluster_secret_file = \"/run/depot/cluster-secret\"".to_owned(),
    ] {
        assert!(toml.lines().any(|l| l == line), "{line:?} not in the rendered config:\n{toml}");
    }
    assert!(!toml.contains("metadata_url"), "the embedded store is used without a metadata_url:\n{toml}");

    // With [tiering]: ready although the bucket is out of reach, and a station may tier.
    let config = dir.path().join("depot.toml");
    std::fs::write(&config, format!("{toml}\n")).unwrap();
    let data = dir.path().join("data");
    let stderr_log = dir.path().join("serve.stderr");
    let mut server = serve(&config, &data, &stderr_log);
    ready_and_logged_in(&mut server, &stderr_log);
    let r = server.json("PUT", "/v1/stations/s", Some(&json!({"tiering": {"after_ms": 60000}})));
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["config"]["tiering"]["after_ms"], 60000, "{r:?}");
    server.terminate();

    // Without [tiering]: the node boots, and station tiering is refused (no bucket).
    let plain = without_tiering(&toml);
    assert!(!plain.contains("[tiering]") && !plain.contains(BUCKET), "{plain}");
    let plain_config = dir.path().join("depot-plain.toml");
    std::fs::write(&plain_config, plain).unwrap();
    let stderr_log = dir.path().join("serve-plain.stderr");
    let mut server = serve(&plain_config, &dir.path().join("data-plain"), &stderr_log);
    ready_and_logged_in(&mut server, &stderr_log);
    let r = server.json("PUT", "/v1/stations/s", Some(&json!({"tiering": {"after_ms": 60000}})));
    r.problem(400, "invalid_request");
    server.terminate();
}
