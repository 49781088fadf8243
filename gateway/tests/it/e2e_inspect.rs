//! End to end: `depot admin inspect` on data dirs left by the real `depot dev`, after a clean
//! stop (SIGTERM) and after a SIGKILL, and the choice of the latest store between them.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use crate::e2e::*;
use serde_json::{json, Value};

fn inspect(args: &[&Path], json: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_depot"));
    command.args(["admin", "inspect"]).env("DEPOT_LOG", "warn");
    if json {
        command.arg("--json");
    }
    command.args(args).output().unwrap()
}

fn inspect_json(args: &[&Path]) -> Value {
    let out = inspect(args, true);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn produce(server: &Server, n: usize) {
    for i in 0..n {
        let r = server.json("POST", "/v1/stations/orders/messages", Some(&json!({ "id": i })));
        assert_eq!(r.status, 201, "{r:?}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn inspect_reports_clean_then_dirty_and_names_the_latest_store() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    let mut server = start(&dir, &[]);
    assert_eq!(server.json("PUT", "/v1/stations/orders", None).status, 201);
    produce(&server, 5);
    server.terminate();

    let missing = root.path().join("missing");
    let report = inspect_json(&[&dir, &missing]);
    let store = &report["stores"][0];
    assert_eq!(store["path"], dir.display().to_string(), "{report:#}");
    let cluster = store["cluster_id"].as_str().unwrap().to_owned();
    assert!(cluster.len() == 32 && cluster.bytes().all(|b| b.is_ascii_hexdigit()), "{report:#}");
    assert_eq!(store["node_id"], 1, "{report:#}");
    assert_eq!(store["state"], "clean", "{report:#}");
    assert_eq!(store["clean"], true, "{report:#}");
    assert!(store["last_term"].as_u64().unwrap() >= 1, "{report:#}");
    // The membership entry, the leader's blank entry, the station, 5 messages and whatever the
    // ticker proposed.
    let clean_index = store["last_index"].as_u64().unwrap();
    assert!(clean_index >= 7, "{report:#}");
    assert_eq!(store["latest"], true, "{report:#}");
    assert_eq!(report["latest"], dir.display().to_string(), "{report:#}");
    let error = report["stores"][1]["error"].as_str().unwrap();
    assert!(error.contains("missing") && error.contains("no such directory"), "{report:#}");

    // Keep the clean store, then run again and SIGKILL the node.
    let old = root.path().join("old-copy");
    copy_dir(&dir, &old);
    let mut server = start(&dir, &[]);
    produce(&server, 3);
    server.kill();

    let report = inspect_json(&[&old, &dir]);
    let (copy, killed) = (&report["stores"][0], &report["stores"][1]);
    assert_eq!(copy["state"], "clean", "{report:#}");
    assert_eq!(killed["state"], "dirty", "{report:#}");
    assert_eq!(killed["cluster_id"], cluster.as_str(), "{report:#}");
    assert!(killed["last_index"].as_u64().unwrap() >= clean_index + 3, "{report:#}");
    assert_eq!(report["latest"], dir.display().to_string(), "the killed node has more: {report:#}");
    assert_eq!((copy["latest"].as_bool(), killed["latest"].as_bool()), (Some(false), Some(true)));

    // The table, for people.
    let out = inspect(&[&old, &dir], false);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("PATH"), "{text}");
    assert!(text.contains(&cluster) && text.contains("dirty") && text.contains("clean"), "{text}");
    assert!(text.contains(&format!("latest: {} (term ", dir.display())), "{text}");

    // Nothing readable: a failure that names the dir.
    let out = inspect(&[&missing], false);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("no readable data dir") && stderr.contains("missing"), "{stderr}");

    // The dir still starts, and stops cleanly again. (One request first: `depot dev` prints its
    // banner before it installs the SIGTERM handler, so an immediate SIGTERM kills it outright.)
    let mut server = start(&dir, &[]);
    assert_eq!(server.json("GET", "/v1/stations/orders", None).status, 200);
    server.terminate();
    assert_eq!(inspect_json(&[&dir])["stores"][0]["state"], "clean");
}

#[test]
fn a_data_dir_of_another_cluster_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[("DEPOT_CLUSTER_ID", "alpha")]);
    server.terminate();
    assert_eq!(inspect_json(&[dir.path()])["stores"][0]["cluster_id"], "alpha");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_depot"))
        .args(["dev", "--listen", "127.0.0.1:0", "--cluster-id", "beta", "--data-dir"])
        .arg(dir.path())
        .env("DEPOT_LOG", "warn")
        .output()
        .unwrap();
    assert!(!refused.status.success(), "started on another cluster's data dir");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("alpha") && stderr.contains("beta"), "{stderr}");
}

#[test]
fn inspect_of_a_running_nodes_dir_says_it_runs_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    let mut server = start(&dir, &[]);
    assert_eq!(server.json("PUT", "/v1/stations/orders", None).status, 201);
    produce(&server, 3);

    let report = inspect_json(&[&dir]);
    let store = &report["stores"][0];
    assert_eq!(store["state"], "running", "{report:#}");
    assert_eq!(store["running"], true, "{report:#}");
    assert_eq!(store["running_pid"], json!(server.pid()), "{report:#}");
    let table = String::from_utf8(inspect(&[&dir], false).stdout).unwrap();
    assert!(table.contains(&format!("a running depot (pid {}) holds this dir", server.pid())), "{table}");

    // The node goes on as if nothing happened.
    produce(&server, 1);
    server.terminate();
    let report = inspect_json(&[&dir]);
    assert_eq!(report["stores"][0]["state"], "clean", "{report:#}");
    assert_eq!(report["stores"][0]["running"], false, "{report:#}");
}
