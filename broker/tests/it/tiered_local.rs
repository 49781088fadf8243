//! Local copies of tiered segments: deleted once the catalog holds them and a snapshot is
//! durable, their metas kept in a metas file, and neither the next start nor a follower's
//! snapshot install needs the deleted data.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use depot_broker::raft::state_machine::{StateMachine, Stored};
use depot_broker::raft::Entry;
use depot_broker::station::{Command, MessageMeta, Retention, StationConfig, TieredSegment};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use tokio::io::AsyncReadExt;

use crate::power_cut::{normal, runtime, station_history};

/// The options of a node that reads tiered data from a bucket (so it deletes local copies).
fn sm_options(dir: &Path) -> depot_broker::raft::state_machine::SmOptions {
    depot_broker::raft::state_machine::SmOptions { drop_tiered_copies: true, ..crate::power_cut::sm_options(dir) }
}

fn files(dir: &Path, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|n| n.ends_with(ext));
    names.sort();
    names
}

fn station_dir(sm_dir: &Path, id: u64) -> std::path::PathBuf {
    sm_dir.join("stations").join(format!("{id:020}"))
}

/// `TierSegment` entries from `first_index` on for every sealed segment of station `id`.
fn tier_all(sm: &StateMachine, id: u64, first_index: u64) -> (Vec<Entry>, Vec<TieredSegment>) {
    let mut entries = Vec::new();
    let mut segments = Vec::new();
    for (i, seg) in sm.sealed_segments(id).into_iter().enumerate() {
        let segment = TieredSegment {
            first_offset: seg.base_seq,
            last_offset: seg.base_seq + seg.records - 1,
            bytes: seg.len_bytes,
            key: format!("c/stations/{id}/{}", seg.base_seq),
            tiered_at: 0,
        };
        let command = Command::TierSegment { station: "s".into(), station_id: id, segment: segment.clone() };
        entries.push(normal(first_index + i as u64, command));
        segments.push(segment);
    }
    (entries, segments)
}

fn metas(sm: &StateMachine, id: u64, end: u64) -> Vec<Option<MessageMeta>> {
    sm.read(|s| (0..end).map(|o| s.message_meta(id, o)).collect())
}

fn assert_reads(sm: &StateMachine, segments: &[TieredSegment], next: u64, context: &str) {
    let tiered_end = segments.last().map_or(0, |s| s.last_offset + 1);
    for offset in 0..next {
        match sm.read_message("s", offset).unwrap() {
            Some(Stored::Tiered(seg)) => {
                assert!(offset < tiered_end, "{context}: offset {offset} is not tiered but reads as {seg:?}");
                assert!((seg.first_offset..=seg.last_offset).contains(&offset), "{context}: {offset} in {seg:?}");
            }
            Some(Stored::Local(m)) => {
                assert_eq!(m.offset, offset);
                assert_eq!(m.payload.len(), 1500, "{context}: offset {offset}");
            }
            None => panic!("{context}: offset {offset} is missing"),
        }
    }
}

#[test]
fn tiered_segments_leave_the_disk_after_a_snapshot_and_nothing_needs_them_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("leader");
    let sm_dir = dir.join("sm");
    let rt = runtime();
    let mut sm = StateMachine::open(sm_options(&dir)).unwrap();
    let id = rt.block_on(async {
        sm.apply(station_history(1, 40)).await.unwrap();
        sm.read(|s| s.station_id("s")).unwrap()
    });
    let next = sm.read(|s| s.station_offsets(id)).unwrap().1;
    assert_eq!(next, 39);
    let before = metas(&sm, id, next);
    let segment_files = files(&station_dir(&sm_dir, id), ".log").len();
    assert!(segment_files >= 5, "expected several segments, found {segment_files}");
    assert_eq!(sm.freeable_tiered_bytes(), 0);

    // The catalog takes every sealed segment; the files stay until a snapshot is durable.
    let (entries, segments) = tier_all(&sm, id, 41);
    let last_index = 40 + entries.len() as u64;
    rt.block_on(async { sm.apply(entries).await.unwrap() });
    assert!(sm.freeable_tiered_bytes() > 0);
    assert_eq!(files(&station_dir(&sm_dir, id), ".log").len(), segment_files);
    assert!(files(&station_dir(&sm_dir, id), ".metas").is_empty());
    rt.block_on(async { sm.get_snapshot_builder().await.build_snapshot().await.unwrap() });
    assert_eq!(files(&station_dir(&sm_dir, id), ".log").len(), 1, "only the active segment stays");
    assert_eq!(files(&station_dir(&sm_dir, id), ".metas").len(), 1);
    let local = sm.local_bytes(id);
    assert!(local < 8192, "local bytes {local} after tiering");
    assert_reads(&sm, &segments, next, "after the snapshot");
    assert_eq!(metas(&sm, id, next), before);

    // A start from that snapshot (which still links the deleted files) opens on the metas
    // file: nothing comes back, and the state's metas are the same.
    sm.close().unwrap();
    drop(sm);
    let mut sm = StateMachine::open(sm_options(&dir)).unwrap();
    assert!(sm.snapshot_links_deleted(), "the current snapshot links deleted copies: another must follow");
    assert_eq!(sm.last_applied().map(|l| l.index), Some(last_index));
    assert_eq!(files(&station_dir(&sm_dir, id), ".log").len(), 1);
    assert_reads(&sm, &segments, next, "after a restart");
    assert_eq!(metas(&sm, id, next), before);

    // The next snapshot lists the metas file instead of the segments: a follower installing
    // it gets the metas and no tiered data.
    let snapshot_bytes = rt.block_on(async {
        sm.apply(vec![normal(last_index + 1, Command::Tick)]).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert!(!sm.snapshot_links_deleted());
        let mut snapshot = sm.get_current_snapshot().await.unwrap().unwrap();
        let mut archive = Vec::new();
        snapshot.snapshot.read_to_end(&mut archive).await.unwrap();
        let follower_dir = tmp.path().join("follower");
        let mut follower = StateMachine::open(sm_options(&follower_dir)).unwrap();
        let mut stream = follower.begin_receiving_snapshot().await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut *stream, &archive).await.unwrap();
        follower.install_snapshot(&snapshot.meta, stream).await.unwrap();
        assert_eq!(files(&station_dir(&follower_dir.join("sm"), id), ".log").len(), 1);
        assert_eq!(files(&station_dir(&follower_dir.join("sm"), id), ".metas").len(), 1);
        assert_reads(&follower, &segments, next, "on the follower");
        assert_eq!(metas(&follower, id, next), before);
        follower.close().unwrap();
        drop(follower);
        let follower = StateMachine::open(sm_options(&follower_dir)).unwrap();
        assert_reads(&follower, &segments, next, "on the follower after a restart");
        assert_eq!(metas(&follower, id, next), before);
        archive.len()
    });
    let tiered_bytes: u64 = segments.iter().map(|s| s.bytes).sum();
    assert!(
        (snapshot_bytes as u64) < tiered_bytes / 2,
        "the snapshot ({snapshot_bytes} bytes) carries tiered data ({tiered_bytes} bytes)"
    );

    // Retention past the tiered range deletes the metas file at the next snapshot.
    rt.block_on(async {
        let config = StationConfig {
            retention: Retention { max_messages: Some(2), ..Default::default() },
            ..Default::default()
        };
        sm.apply(vec![normal(last_index + 2, Command::PutStation { station: "s".into(), config })]).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    });
    assert!(files(&station_dir(&sm_dir, id), ".metas").is_empty(), "retention left the metas file");
    assert!(matches!(sm.read_message("s", next - 1).unwrap(), Some(Stored::Local(_))));
    assert!(sm.read_message("s", 0).unwrap().is_none());
}

/// A node without a bucket cannot read tiered data back, so it keeps its copies.
#[test]
fn a_node_without_a_bucket_keeps_its_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let rt = runtime();
    let mut sm = StateMachine::open(crate::power_cut::sm_options(&dir)).unwrap();
    let id = rt.block_on(async {
        sm.apply(station_history(1, 40)).await.unwrap();
        sm.read(|s| s.station_id("s")).unwrap()
    });
    let segments = files(&station_dir(&dir.join("sm"), id), ".log").len();
    let (entries, tiered) = tier_all(&sm, id, 41);
    rt.block_on(async {
        sm.apply(entries).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    });
    assert_eq!(sm.freeable_tiered_bytes(), 0);
    assert_eq!(files(&station_dir(&dir.join("sm"), id), ".log").len(), segments);
    assert!(tiered.len() >= 5);
    for offset in 0..39 {
        assert!(matches!(sm.read_message("s", offset).unwrap(), Some(Stored::Local(_))), "offset {offset}");
    }
}
