//! The cluster secret as real `depot serve` processes take it, and the cluster port's
//! handshake between them: the kit's nodes read the secret from a file (never from their command
//! line), a node with another secret cannot join and the logs say why, and a secret file that
//! cannot work stops the node before it starts.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::cluster::{self, hex, write_secret_file};
use crate::e2e::depot;

/// Node `id`'s command line, as the kernel shows it to every user (`ps`).
fn cmdline(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

#[test]
fn nodes_take_the_secret_from_a_file_and_a_node_with_another_secret_cannot_join() {
    let mut c = cluster::start(3);
    let leader = c.wait_leader(Duration::from_secs(30));
    let secret_file = c.data_dir(1).with_file_name("cluster-secret");
    let secret = std::fs::read_to_string(&secret_file).unwrap().trim_end().to_owned();
    assert!(secret.len() >= 16);
    for id in c.ids() {
        let args = cmdline(c.pid(id).unwrap());
        assert!(args.iter().any(|a| a == "--cluster-secret-file"), "node {id}: {args:?}");
        assert!(!args.iter().any(|a| a.contains(&secret)), "node {id} shows the secret: {args:?}");
    }

    let intruder = c.add_node();
    c.set_secret(intruder, &hex(24));
    c.launch_unawaited(intruder);
    let members: Vec<u64> = c.ids().into_iter().filter(|&id| id != intruder).collect();
    // Each side logs why: the members that it did not prove the secret, the intruder that it
    // was refused for that.
    let refused = format!("wrong cluster secret: node {intruder} did not prove");
    c.eventually(Duration::from_secs(30), "both sides to log the refusal", || {
        let own = c.launch_stderr(intruder);
        let by_member = members.iter().any(|&id| {
            let log = c.launch_stderr(id);
            log.lines().any(|l| l.contains("cluster connection refused") && l.contains(&refused))
        });
        let told = own.lines().any(|l| l.contains("cluster handshake failed") && l.contains(&refused));
        (by_member && told).then_some(())
    });
    assert!(c.pid(intruder).is_some(), "the intruder still runs, waiting for a peer that never answers");
    let view = c.view(leader).unwrap();
    let ids: Vec<u64> = view["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, members, "{view}");
    c.kill(intruder);
    c.wait_leader(Duration::from_secs(10));
}

/// `depot ARGS` on its own, with no inherited `DEPOT_*` setting, to its end.
fn depot_alone(args: &[&str], dir: &Path) -> Output {
    let mut command = Command::new(depot());
    command.args(args).current_dir(dir).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("DEPOT_") {
            command.env_remove(name);
        }
    }
    command.env("DEPOT_LOG", "warn");
    command.output().unwrap()
}

#[test]
fn an_empty_secret_file_stops_the_node_and_a_shared_one_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty-secret");
    std::fs::write(&empty, "\n").unwrap();
    let peers = "1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3";
    let out = depot_alone(
        &["serve", "--cluster-secret-file", empty.to_str().unwrap(), "--peers", peers, "--data-dir", "data"],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("cluster_secret_file: {} is empty", empty.display())), "{stderr}");

    let missing = dir.path().join("missing");
    let out = depot_alone(&["serve", "--cluster-secret-file", missing.to_str().unwrap()], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("cluster_secret_file: reading"), "{stderr}");

    // Readable by others: used, with a warning (`migrate` reads the settings as `serve` does,
    // and ends).
    let shared = dir.path().join("shared-secret");
    write_secret_file(&shared, &hex(24)).unwrap();
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = depot_alone(&["migrate", "--cluster-secret-file", shared.to_str().unwrap()], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the cluster secret file is open to group or others") && stderr.contains("644"),
        "{stderr}"
    );
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = depot_alone(&["migrate", "--cluster-secret-file", shared.to_str().unwrap()], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("open to group or others"), "{stderr}");
}
