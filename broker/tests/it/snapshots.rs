//! A node's own snapshot builds running beside an install of the leader's snapshot.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use depot_broker::raft::state_machine::StateMachine;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

use crate::power_cut::{runtime, sm_options, station_history};

/// openraft runs a snapshot build in its own task, so a follower may build one while it
/// receives and unpacks the leader's. A build used to clear every other name out of
/// `snapshots/`, the install's half-unpacked directory included, and the failed install stopped
/// the Raft core of a node that was catching up. Here builds run back to back through every
/// install: each install and each build must succeed and the installed state must read whole.
#[test]
fn snapshots_built_during_an_install_leave_it_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut leader = StateMachine::open(sm_options(&tmp.path().join("leader"))).unwrap();
    rt.block_on(async {
        leader.apply(station_history(1, 120)).await.unwrap();
        leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
    });
    for round in 0..30 {
        let dir = tmp.path().join(format!("follower-{round}"));
        rt.block_on(async {
            let mut sm = StateMachine::open(sm_options(&dir)).unwrap();
            sm.apply(station_history(1, 20)).await.unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let mut builder = sm.get_snapshot_builder().await;
            let building = tokio::spawn({
                let stop = stop.clone();
                async move {
                    let mut builds = 0u32;
                    while !stop.load(Ordering::Acquire) {
                        builder.build_snapshot().await.map_err(|e| format!("build {builds}: {e}"))?;
                        builds += 1;
                    }
                    Ok::<u32, String>(builds)
                }
            });
            let mut snapshot = leader.get_current_snapshot().await.unwrap().unwrap();
            let mut stream = sm.begin_receiving_snapshot().await.unwrap();
            tokio::io::copy(&mut *snapshot.snapshot, &mut *stream).await.unwrap();
            let installed = sm.install_snapshot(&snapshot.meta, stream).await;
            stop.store(true, Ordering::Release);
            let built = building.await.unwrap();
            installed.unwrap_or_else(|e| panic!("round {round}: the install failed: {e}"));
            built.unwrap_or_else(|e| panic!("round {round}: a build beside the install failed: {e}"));
            assert_eq!(sm.last_applied().map(|id| id.index), Some(120), "round {round}");
            for offset in [0u64, 60, 118] {
                assert!(sm.read_message("s", offset).unwrap().is_some(), "round {round}: message {offset} missing");
            }
            sm.close().unwrap();
        });
        // What the builds and the install left on disk opens to the installed state.
        let sm = StateMachine::open(sm_options(&dir)).unwrap();
        assert_eq!(sm.last_applied().map(|id| id.index), Some(120), "round {round}: after reopening");
    }
}
