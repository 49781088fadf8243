//! Crash consistency of the Raft log store and state machine where a power cut (or a kill) lands
//! between two steps openraft or a snapshot install takes, or in a station log tail written
//! back out of order: issue 13's holes 1, 3 and 4.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use bytes::Bytes;
use depot_broker::log::Verify;
use depot_broker::raft::log_store::LogStore;
use depot_broker::raft::state_machine::{SmOptions, StateMachine, Stored};
use depot_broker::raft::{Entry, LogId, Proposal};
use depot_broker::station::{Command, Envelope, NewMessage, StationConfig};
use depot_powercut::{Mode, Op, PowerCut};
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload};

pub(crate) fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn blank(index: u64) -> Entry {
    Entry { log_id: log_id(index), payload: EntryPayload::Blank }
}

pub(crate) fn normal(index: u64, command: Command) -> Entry {
    let env = Envelope { now: 1_000 + index as i64, command };
    Entry { log_id: log_id(index), payload: EntryPayload::Normal(Proposal { envelopes: vec![env].into() }) }
}

fn log_options() -> depot_broker::log::LogOptions {
    depot_broker::log::LogOptions {
        segment_bytes: 4096,
        verify: Verify::Full,
        preallocate: false,
        after_clean_shutdown: false,
        sync_on_open: true,
    }
}

pub(crate) fn sm_options(dir: &Path) -> SmOptions {
    // A cache of 8 files: the cuts also cover files closed and reopened.
    SmOptions::new(dir.join("sm"), 4096, Verify::Full, 8)
}

fn open(dir: &Path) -> (LogStore, StateMachine) {
    let log = LogStore::open(&dir.join("raft"), log_options()).unwrap();
    let sm = StateMachine::open(sm_options(dir)).unwrap();
    log.link_snapshot(sm.durable_snapshot());
    (log, sm)
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Hole 1: openraft queues a follower's snapshot install and then purges the log the snapshot
/// covers without waiting for the install. A crash before the install made `current` durable
/// must not find the log purged past `current`: openraft would then ask for entries that no
/// longer exist on every start.
#[test]
fn a_purge_never_passes_the_durable_snapshot_and_completes_once_one_covers_it() {
    let tmp = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        {
            let (mut log, mut sm) = open(tmp.path());
            // From index 0, as openraft starts a log: a log that starts later is a hole
            // unless a purge point on disk covers what is missing.
            log.blocking_append((0..=50).map(blank)).await.unwrap();
            sm.apply((1..=20).map(blank)).await.unwrap();
            sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
            // The install of a snapshot up to 40 was queued; openraft purges at once.
            log.purge(log_id(40)).await.unwrap();
            assert!(
                log.last_purged().is_some_and(|p| p.index <= 20),
                "purged to {:?} while the durable snapshot covers 20",
                log.last_purged()
            );
            // The crash: the install never finished.
        }
        let (mut log, mut sm) = open(tmp.path());
        let state = log.get_log_state().await.unwrap();
        // The purge to 20 deleted no segment, so it wrote no purge point (see
        // `raft_log_purges_write_the_purge_point_only_before_deleting_and_survive_a_power_cut`).
        assert!(
            state.last_purged_log_id.is_none_or(|p| p.index <= 20),
            "the purge point on disk passed current's last index: {:?}",
            state.last_purged_log_id
        );
        assert_eq!(state.last_log_id, Some(log_id(50)));
        let entries = log.try_get_log_entries(21..=50).await.unwrap();
        assert_eq!(entries.len(), 30, "entries after the durable snapshot must still be there");

        // Once a snapshot covering the purge is durable, the rest of the purge is carried out.
        log.purge(log_id(40)).await.unwrap();
        assert_eq!(log.last_purged(), Some(log_id(20)));
        sm.apply((21..=45).map(blank)).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        log.blocking_append([blank(51)]).await.unwrap();
        assert_eq!(log.last_purged(), Some(log_id(40)));
        drop(log);
        let (mut log, _sm) = open(tmp.path());
        let on_disk = log.get_log_state().await.unwrap().last_purged_log_id;
        assert!(on_disk.is_none_or(|p| p.index <= 40), "purged past 40: {on_disk:?}");
        let from = on_disk.map_or(0, |p| p.index + 1);
        assert_eq!(log.try_get_log_entries(from..=51).await.unwrap().len() as u64, 52 - from);
    });
}

/// The commands that give station 1 several segments of 4 KiB.
pub(crate) fn station_history(first_index: u64, count: u64) -> Vec<Entry> {
    (0..count)
        .map(|i| {
            let index = first_index + i;
            if index == 1 {
                normal(index, Command::PutStation { station: "s".into(), config: StationConfig::default() })
            } else {
                let message = NewMessage {
                    content_type: "text/plain".into(),
                    headers: Vec::new(),
                    payload: Bytes::from(vec![b'a' + (index % 26) as u8; 1500]),
                    idempotency_key: None,
                    deliver_at: None,
                };
                normal(index, Command::Produce { station: "s".into(), messages: vec![message] })
            }
        })
        .collect()
}

/// A power-cut file system over `dir/backing`, mounted at `dir/mount`.
fn power_cut_mount(dir: &Path) -> PowerCut {
    let (backing, mount) = (dir.join("backing"), dir.join("mount"));
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mount).unwrap();
    PowerCut::mount(&backing, &mount)
        .unwrap_or_else(|e| panic!("this test needs a FUSE mount (/dev/fuse and fusermount3): {e}"))
}

fn segment_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| d.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".log")).count())
        .unwrap_or(0)
}

/// Hole 4: a follower installing a snapshot deleted its old `stations/` tree with
/// `remove_dir_all`; a power cut part way could keep some of those unlinks and not others,
/// leaving a station with non-contiguous segments that the next open judged corrupt. Here a
/// follower that applied the same history installs the leader's snapshot on the power-cut file
/// system, the power is cut right after each unlink in turn (torn: any subset of the pending
/// directory operations kept), and the state machine must open each time with the snapshot's
/// (or, cut before `current` was durable, its own) state complete.
#[test]
fn a_power_cut_during_a_snapshot_install_leaves_a_state_machine_that_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    // The leader: 30 entries, a snapshot of them.
    let leader_dir = tmp.path().join("leader");
    let mut leader = StateMachine::open(sm_options(&leader_dir)).unwrap();
    rt.block_on(async {
        leader.apply(station_history(1, 30)).await.unwrap();
        leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
    });
    let mut pc = power_cut_mount(tmp.path());
    let follower = pc.mountpoint().join("follower");
    let mut cuts = 0;
    let mut hit = 0;
    for (round, seed) in (0..24u64).map(|s| (s, 0x4011 + s)) {
        // The follower applied the first 20 entries itself (same station id, several segments)
        // and snapshotted them, everything durable, as a clean shutdown leaves it.
        if follower.exists() {
            std::fs::remove_dir_all(&follower).unwrap();
        }
        rt.block_on(async {
            let mut sm = StateMachine::open(sm_options(&follower)).unwrap();
            sm.apply(station_history(1, 20)).await.unwrap();
            sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
            sm.close().unwrap();
        });
        pc.sync_all();
        let stations = follower.join("sm/stations");
        let station = std::fs::read_dir(&stations).unwrap().next().unwrap().unwrap().path();
        assert!(segment_count(&station) >= 3, "the follower's station log has too few segments to tear");

        pc.set_mode(Mode::Torn { seed });
        let installed = rt.block_on(async {
            let mut sm = StateMachine::open(sm_options(&follower)).unwrap();
            pc.crash_after(Op::Unlink, 1 + round % 8);
            let mut snapshot = leader.get_current_snapshot().await.unwrap().unwrap();
            let mut stream = sm.begin_receiving_snapshot().await.unwrap();
            tokio::io::copy(&mut *snapshot.snapshot, &mut *stream).await.unwrap();
            sm.install_snapshot(&snapshot.meta, stream).await
        });
        hit += usize::from(pc.is_frozen());
        let _ = installed;
        pc.cut().unwrap();
        cuts += 1;
        let reopened = StateMachine::open(sm_options(&follower));
        let sm =
            reopened.unwrap_or_else(|e| panic!("round {round}: the state machine does not open after the cut: {e}"));
        let applied = sm.last_applied().map(|id| id.index);
        assert!(applied == Some(20) || applied == Some(30), "round {round}: state at {applied:?}");
        let expected = if applied == Some(30) { 29 } else { 19 };
        for offset in 0..expected {
            let m = sm.read_message("s", offset).unwrap();
            assert!(m.is_some(), "round {round}: message {offset} missing after the cut (state at {applied:?})");
        }
        drop(sm);
        pc.sync_all();
    }
    assert!(hit > cuts / 2, "the crash point was reached in only {hit} of {cuts} installs");
}

/// Hole 3: station logs are appended at apply time without an fsync, so after a snapshot the
/// kernel writes their tails back on its own schedule, and a cut may keep a later page and lose
/// an earlier one. Everything past the snapshot is replayed from the Raft log, so such a tail
/// must be cut off, never judged corrupt.
#[test]
fn a_station_log_tail_past_the_snapshot_torn_by_a_power_cut_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut pc = power_cut_mount(tmp.path());
    let opts = |dir: &Path| SmOptions::new(dir.join("sm"), 1 << 20, Verify::Full, 8);
    for seed in 0..10u64 {
        let dir = pc.mountpoint().join(format!("n{seed}"));
        rt.block_on(async {
            let mut sm = StateMachine::open(opts(&dir)).unwrap();
            sm.apply(station_history(1, 20)).await.unwrap();
            sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
            sm.apply(station_history(21, 20)).await.unwrap();
        });
        pc.set_mode(Mode::Torn { seed });
        pc.cut().unwrap();
        let sm = StateMachine::open(opts(&dir)).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        // The snapshot's 19 messages read back; Raft would replay the rest.
        for offset in 0..19 {
            let m = sm.read_message("s", offset).unwrap();
            let Some(Stored::Local(m)) = m else { panic!("seed {seed}: offset {offset} is {m:?}") };
            assert_eq!(m.payload.len(), 1500);
        }
        assert!(sm.read_message("s", 19).unwrap().is_none(), "seed {seed}: past the snapshot");
    }
}

/// A Raft log purge that deletes no segment only moves the log's start in memory: it writes
/// no meta file (before, every purge wrote it: a write, two fsyncs and a rename on the thread
/// that runs Raft, after every snapshot). A purge that deletes segments writes the purge point
/// first. Power cut (torn) after each fsync, rename and unlink in turn across a run of purges
/// of both kinds, the log must reopen with no hole: every entry after its purge point there.
#[test]
fn raft_log_purges_write_the_purge_point_only_before_deleting_and_survive_a_power_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut pc = power_cut_mount(tmp.path());
    // 1.5 KiB entries in 4 KiB segments: two entries per segment.
    let entries: Vec<Entry> = std::iter::once(blank(0)).chain(station_history(1, 40)).collect();
    let purges = [2u64, 3, 6, 7, 8, 15, 16, 30, 31];

    // Without a cut: which purges write anything at all.
    let dir = pc.mountpoint().join("plain");
    rt.block_on(async {
        let mut log = LogStore::open(&dir, log_options()).unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
        for upto in purges {
            let deletes = segment_count(&dir.join("log"));
            let before = pc.counts();
            log.purge(log_id(upto)).await.unwrap();
            let after = pc.counts();
            if segment_count(&dir.join("log")) == deletes {
                assert_eq!(
                    (after.fsync, after.rename),
                    (before.fsync, before.rename),
                    "purge to {upto} deleted no segment and still wrote"
                );
            } else {
                assert!(
                    after.rename > before.rename,
                    "purge to {upto} deleted a segment before writing the purge point"
                );
            }
        }
    });

    let mut cuts = 0;
    for (n, op) in [Op::Fsync, Op::Rename, Op::Unlink].into_iter().flat_map(|op| (1..=8u64).map(move |n| (n, op))) {
        let dir = pc.mountpoint().join(format!("cut-{op:?}-{n}"));
        rt.block_on(async {
            let mut log = LogStore::open(&dir, log_options()).unwrap();
            log.blocking_append(entries.clone()).await.unwrap();
        });
        pc.sync_all();
        pc.set_mode(Mode::Torn { seed: 0x9a5 + n });
        rt.block_on(async {
            let mut log = LogStore::open(&dir, log_options()).unwrap();
            pc.crash_after(op, n);
            for upto in purges {
                if log.purge(log_id(upto)).await.is_err() {
                    break;
                }
            }
        });
        // Removed segments are closed by the reaper; the unmount waits for no descriptor.
        depot_broker::log::wait_for_removals();
        pc.cut().unwrap();
        cuts += 1;
        rt.block_on(async {
            let mut log = LogStore::open(&dir, log_options())
                .unwrap_or_else(|e| panic!("{op:?} {n}: the Raft log does not open after the cut: {e}"));
            let state = log.get_log_state().await.unwrap();
            assert_eq!(state.last_log_id, Some(log_id(40)), "{op:?} {n}");
            let from = state.last_purged_log_id.map_or(0, |p| p.index + 1);
            let kept = log.try_get_log_entries(from..=40).await.unwrap();
            assert_eq!(kept.len() as u64, 41 - from, "{op:?} {n}: entries after the purge point {from} missing");
        });
        pc.sync_all();
    }
    assert_eq!(cuts, 24);
}

fn one_message(station: &str, text: &str) -> Command {
    let message = NewMessage {
        content_type: "text/plain".into(),
        headers: vec![("n".into(), text.into())],
        payload: Bytes::from(text.repeat(2)),
        idempotency_key: None,
        deliver_at: None,
    };
    Command::Produce { station: station.into(), messages: vec![message] }
}

fn entry_of(index: u64, commands: Vec<Command>) -> Entry {
    let envelopes: Vec<Envelope> = commands.into_iter().map(|command| Envelope { now: 1_000, command }).collect();
    Entry { log_id: log_id(index), payload: EntryPayload::Normal(Proposal { envelopes: envelopes.into() }) }
}

fn payload_at(sm: &StateMachine, station: &str, offset: u64) -> Option<Bytes> {
    match sm.read_message(station, offset).unwrap() {
        Some(Stored::Local(m)) => Some(m.payload),
        _ => None,
    }
}

/// Issue 19: each produce command of an entry wrote its records to the station log on its own,
/// one `pwrite` per single POST. Records of consecutive offsets on one station are now written
/// together, across the commands of an entry, and read back as they were; a run breaks at
/// another station, and a station deleted in the same entry takes its records along. The
/// power-cut file system counts the writes, as FUSE requests: one write is split where it
/// crosses a 4 KiB page, so every station log here stays within its first page.
#[test]
fn an_entry_of_single_produces_reaches_the_station_log_in_one_write() {
    let tmp = tempfile::tempdir().unwrap();
    let pc = power_cut_mount(tmp.path());
    let dir = pc.mountpoint().join("node");
    runtime().block_on(async {
        let mut sm = StateMachine::open(SmOptions::new(dir.join("sm"), 1 << 20, Verify::Full, 8)).unwrap();
        let put = |s: &str| Command::PutStation { station: s.into(), config: StationConfig::default() };
        sm.apply([entry_of(1, vec![put("s"), put("t"), put("u")])]).await.unwrap();
        // A log's first record also writes its segment's header: not what is counted here.
        let first = ["s", "t", "u"].map(|s| one_message(s, "first")).to_vec();
        sm.apply([entry_of(2, first)]).await.unwrap();

        let before = pc.counts().write;
        let texts: Vec<String> = (0..30).map(|i| format!("m{i:02}")).collect();
        sm.apply([entry_of(3, texts.iter().map(|t| one_message("s", t)).collect())]).await.unwrap();
        let writes = pc.counts().write - before;
        assert_eq!(writes, 1, "30 single-message produces of one entry took {writes} writes to the station log");
        assert_eq!(payload_at(&sm, "s", 0).unwrap(), Bytes::from("first".repeat(2)));
        for (i, text) in texts.iter().enumerate() {
            assert_eq!(payload_at(&sm, "s", 1 + i as u64).unwrap(), Bytes::from(text.repeat(2)), "offset {}", 1 + i);
        }

        // Stations taking turns break the runs; a station deleted after its produces in the
        // same entry is gone, and the entries after it still land where they belong.
        let before = pc.counts().write;
        let mixed = vec![
            one_message("s", "s-a"),
            one_message("s", "s-b"),
            one_message("t", "t-a"),
            one_message("u", "u-a"),
            one_message("u", "u-b"),
            Command::DeleteStation { station: "u".into() },
            one_message("s", "s-c"),
            one_message("t", "t-b"),
        ];
        sm.apply([entry_of(4, mixed), entry_of(5, vec![one_message("t", "t-c")])]).await.unwrap();
        let writes = pc.counts().write - before;

        assert_eq!(writes, 5, "runs s, t, u, s, t+t: {writes} writes");
        let s: Vec<Bytes> = (31..34).map(|o| payload_at(&sm, "s", o).unwrap()).collect();
        assert_eq!(s, ["s-a", "s-b", "s-c"].map(|t| Bytes::from(t.repeat(2))));
        let t: Vec<Bytes> = (1..4).map(|o| payload_at(&sm, "t", o).unwrap()).collect();
        assert_eq!(t, ["t-a", "t-b", "t-c"].map(|t| Bytes::from(t.repeat(2))));
        assert_eq!(payload_at(&sm, "u", 0), None);
        assert_eq!(payload_at(&sm, "s", 34), None);
    });
}
