//! Running out of open files is not fatal: the real `depot dev` binary with its open-file limit
//! lowered (with `prlimit`, on the running process) creates stations until a write fails with
//! EMFILE. That request answers 503 with `Retry-After`, never 500; the Raft core, which openraft
//! stops on any storage error, is rebuilt once the limit is raised again, with every station
//! acknowledged before still there, and new writes work without a restart.
//!
//! Station logs keep at most `max_open_files` open, but the budget is set at start from the limit
//! then in force, so lowering the limit under a running node still makes it run out: this covers
//! what happens when it does. `many_stations.rs` covers staying under a limit set before start.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use crate::e2e::*;
use depot_tests::serial::Heavy;

fn set_open_files(pid: u32, soft: u64, hard: u64) {
    let out = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:{hard}")])
        .output()
        .unwrap_or_else(|e| panic!("this test lowers a process's open-file limit with prlimit (util-linux): {e}"));
    assert!(out.status.success(), "prlimit failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The process's hard limit on open files (a limit it may raise its soft one back to).
fn hard_open_files_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(4).unwrap().parse().unwrap()
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn too_many_open_files_answers_503_and_the_node_recovers_once_the_limit_is_raised() {
    let _heavy = Heavy::take();
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let pid = server.pid();
    let hard = hard_open_files_limit(pid);
    set_open_files(pid, open_files(pid) as u64 + 64, hard);

    let mut created = Vec::new();
    let refused = loop {
        let name = format!("s{}", created.len());
        let r = request(
            server.addr,
            Some(&server.token),
            "PUT",
            &format!("/v1/stations/{name}"),
            &[],
            b"",
            Duration::from_secs(10),
        );
        match r {
            Ok(r) if r.status == 201 => created.push(name),
            Ok(r) => break r,
            Err(e) => panic!("station {name}: no answer ({e}) before any refusal"),
        }
        assert!(created.len() < 200, "200 stations created under a limit of 64 more open files");
    };
    refused.problem(503, "not_leader_unavailable");
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
    assert!(!created.is_empty(), "refused before any station was created");

    set_open_files(pid, hard, hard);
    eventually(Duration::from_secs(20), "station creation to work again once the limit is raised", || {
        let r =
            request(server.addr, Some(&server.token), "PUT", "/v1/stations/after", &[], b"", Duration::from_secs(5))
                .ok()?;
        (r.status == 201).then_some(())
    });
    let stations = server.json("GET", "/v1/stations", None);
    assert_eq!(stations.status, 200, "{stations:?}");
    let names: Vec<&str> =
        stations.body["stations"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    for name in &created {
        assert!(names.contains(&name.as_str()), "acknowledged station {name} is gone: {names:?}");
    }
}
