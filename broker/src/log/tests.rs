#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use proptest::prelude::*;

use super::format::{encode_record, FILE_HEADER_LEN, RECORD_HEADER_LEN};
use super::*;

fn opts(segment_bytes: u64, verify: Verify) -> LogOptions {
    LogOptions { segment_bytes, verify, preallocate: false, after_clean_shutdown: false, sync_on_open: true }
}

fn popts(segment_bytes: u64, verify: Verify) -> LogOptions {
    LogOptions { segment_bytes, verify, preallocate: true, after_clean_shutdown: false, sync_on_open: true }
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8).collect()
}

/// Fixed-size records make byte positions easy to compute in corruption tests.
const PLEN: usize = 100;
const REC: u64 = (RECORD_HEADER_LEN + PLEN) as u64;

fn fill(log: &mut SegmentedLog, seqs: std::ops::Range<u64>) {
    for s in seqs {
        log.append(s, &payload(s, PLEN)).unwrap();
    }
}

fn assert_contents(log: &SegmentedLog, seqs: std::ops::Range<u64>) {
    assert_eq!(log.first_seq(), seqs.start);
    assert_eq!(log.next_seq(), seqs.end);
    for s in seqs.clone() {
        assert_eq!(log.read(s).unwrap().unwrap(), payload(s, PLEN), "seq {s}");
    }
    let all: Vec<_> = log.iter_from(0).map(|r| r.unwrap()).collect();
    assert_eq!(all.len() as u64, seqs.end - seqs.start);
    for (s, p) in all {
        assert_eq!(p, payload(s, PLEN));
    }
}

fn seg_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn flip_byte(path: &Path, pos: u64) {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, pos).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, pos).unwrap();
}

fn append_raw(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn expect_corrupt(dir: &Path, verify: Verify) -> (PathBuf, u64) {
    expect_corrupt_with(dir, opts(1 << 20, verify))
}

fn expect_corrupt_with(dir: &Path, o: LogOptions) -> (PathBuf, u64) {
    match SegmentedLog::open(dir, o) {
        Err(LogError::Corrupt { path, position, .. }) => (path, position),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, open succeeded"),
    }
}

#[test]
fn append_read_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (mut log, rec) = SegmentedLog::open(&dir, opts(1 << 20, Verify::Full)).unwrap();
    assert_eq!(rec.segments, 0);
    assert!(log.is_empty());
    assert_eq!(log.read(0).unwrap(), None);
    let sizes = [0usize, 1, 7, 100, 4096, 70_000];
    for (i, &n) in sizes.iter().enumerate() {
        log.append(10 + i as u64, &payload(i as u64, n)).unwrap();
    }
    assert_eq!(log.first_seq(), 10);
    assert_eq!(log.next_seq(), 16);
    for (i, &n) in sizes.iter().enumerate() {
        assert_eq!(log.read(10 + i as u64).unwrap().unwrap(), payload(i as u64, n));
    }
    assert_eq!(log.read(9).unwrap(), None);
    assert_eq!(log.read(16).unwrap(), None);
    let from: Vec<u64> = log.iter_from(13).map(|r| r.unwrap().0).collect();
    assert_eq!(from, vec![13, 14, 15]);
    assert!(matches!(log.append(17, b"x"), Err(LogError::NonContiguous { expected: 16, got: 17 })));
    assert!(matches!(log.append(15, b"x"), Err(LogError::NonContiguous { expected: 16, got: 15 })));
    assert_eq!(log.bytes(), fs::metadata(seg_path(&dir, 10)).unwrap().len());
}

#[test]
fn rolls_by_size_and_writes_indexes() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
    fill(&mut log, 0..100);
    let segs = log.segments();
    assert!(segs.len() >= 10, "{} segments", segs.len());
    let mut next = 0;
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s.base_seq, next);
        next += s.records;
        assert_eq!(s.path, seg_path(tmp.path(), s.base_seq));
        let is_last = i + 1 == segs.len();
        assert_eq!(s.path.with_extension("idx").exists(), !is_last);
        if !is_last {
            // Rolls once the segment is at least segment_bytes, not before.
            assert!(s.len_bytes >= 1000 && s.len_bytes < 1000 + REC);
        }
    }
    assert_eq!(next, 100);
    assert_contents(&log, 0..100);
    let from: Vec<u64> = log.iter_from(37).map(|r| r.unwrap().0).collect();
    assert_eq!(from, (37..100).collect::<Vec<_>>());
}

#[test]
fn reopen_full_and_tail_identical() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
        fill(&mut log, 5..205);
        log.sync().unwrap();
    }
    let mut seen = Vec::new();
    for verify in [Verify::Full, Verify::Tail, Verify::Full] {
        let (mut log, rec) = SegmentedLog::open(tmp.path(), opts(1000, verify)).unwrap();
        assert_eq!(rec.records, 200);
        assert_eq!(rec.truncated_bytes, 0);
        assert!(rec.torn_tail.is_none());
        assert_contents(&log, 5..205);
        seen.push(log.segments().iter().map(|s| (s.base_seq, s.records, s.len_bytes)).collect::<Vec<_>>());
        log.append(205, b"more").unwrap();
        log.truncate_from(205).unwrap();
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1], seen[2]);
}

#[test]
fn tail_trusts_index_but_reads_still_verify() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
        fill(&mut log, 0..50);
    }
    // Damage a payload byte of seq 2 in the first (sealed) segment.
    let pos2 = FILE_HEADER_LEN + 2 * REC;
    flip_byte(&seg_path(tmp.path(), 0), pos2 + RECORD_HEADER_LEN as u64 + 5);
    let (log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Tail)).unwrap();
    match log.read(2) {
        Err(LogError::Corrupt { path, position, .. }) => {
            assert_eq!(path, seg_path(tmp.path(), 0));
            assert_eq!(position, pos2);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(log.read(3).unwrap().unwrap(), payload(3, PLEN));
    let errs: Vec<_> = log.iter_from(0).collect();
    assert_eq!(errs.len(), 3, "iteration stops after the error");
    assert!(matches!(errs[2], Err(LogError::Corrupt { .. })));
    drop(log);
    assert_eq!(expect_corrupt(tmp.path(), Verify::Full), (seg_path(tmp.path(), 0), pos2));
    // A sealed segment whose index is gone is scanned even in Tail mode.
    fs::remove_file(tmp.path().join(format!("{:020}.idx", 0))).unwrap();
    assert_eq!(expect_corrupt(tmp.path(), Verify::Tail), (seg_path(tmp.path(), 0), pos2));
}

#[test]
fn torn_tail_garbage_is_truncated() {
    for garbage in [vec![0xAB; 37], vec![0u8; 4096], vec![1, 2, 3]] {
        let tmp = tempfile::tempdir().unwrap();
        let last = {
            let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Tail)).unwrap();
            fill(&mut log, 0..30);
            log.segments().last().unwrap().clone()
        };
        append_raw(&last.path, &garbage);
        let (mut log, rec) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Tail)).unwrap();
        assert_eq!(rec.torn_tail, Some((last.path.clone(), last.len_bytes)));
        assert_eq!(rec.truncated_bytes, garbage.len() as u64);
        assert_eq!(fs::metadata(&last.path).unwrap().len(), last.len_bytes);
        assert_contents(&log, 0..30);
        fill(&mut log, 30..40);
        drop(log);
        let (log, rec) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
        assert!(rec.torn_tail.is_none());
        assert_contents(&log, 0..40);
    }
}

#[test]
fn torn_partial_record_is_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let last = {
        let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1 << 20, Verify::Full)).unwrap();
        fill(&mut log, 0..10);
        log.segments().last().unwrap().clone()
    };
    let mut rec = Vec::new();
    encode_record(&mut rec, 10, PLEN as u32, &payload(10, PLEN));
    for cut in [3, RECORD_HEADER_LEN, RECORD_HEADER_LEN + 50, rec.len() - 1] {
        append_raw(&last.path, &rec[..cut]);
        let (log, r) = SegmentedLog::open(tmp.path(), opts(1 << 20, Verify::Full)).unwrap();
        assert_eq!(r.torn_tail, Some((last.path.clone(), last.len_bytes)), "cut {cut}");
        assert_eq!(r.truncated_bytes, cut as u64);
        assert_contents(&log, 0..10);
    }
    // The whole record is valid and is kept.
    append_raw(&last.path, &rec);
    let (mut log, r) = SegmentedLog::open(tmp.path(), opts(1 << 20, Verify::Full)).unwrap();
    assert!(r.torn_tail.is_none());
    assert_eq!(log.next_seq(), 11);
    log.append(11, b"ok").unwrap();
}

#[test]
fn empty_or_short_last_segment_is_fine() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
        fill(&mut log, 0..20);
        log.seal_active().unwrap();
    }
    // A crash right after creating the next segment: zero-length, then a torn header.
    for len in [0usize, 7] {
        fs::write(seg_path(tmp.path(), 20), &format::encode_file_header(20)[..len]).unwrap();
        let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Tail)).unwrap();
        assert_contents(&log, 0..20);
        assert_eq!(fs::metadata(seg_path(tmp.path(), 20)).unwrap().len(), FILE_HEADER_LEN);
        log.append(20, &payload(20, PLEN)).unwrap();
        log.truncate_from(20).unwrap();
        assert!(!seg_path(tmp.path(), 20).exists());
    }
    fs::write(seg_path(tmp.path(), 20), b"").unwrap();
    let (log, rec) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
    assert!(rec.torn_tail.is_none());
    let last = log.segments().last().unwrap().clone();
    assert_eq!((last.base_seq, last.records), (20, 0));
    assert_contents(&log, 0..20);
}

#[test]
fn flipped_byte_with_valid_records_after_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1 << 20, Verify::Full)).unwrap();
        fill(&mut log, 0..20);
    }
    let path = seg_path(tmp.path(), 0);
    let before = fs::read(&path).unwrap();
    let bad = FILE_HEADER_LEN + 7 * REC;
    flip_byte(&path, bad + RECORD_HEADER_LEN as u64 + 50);
    for verify in [Verify::Full, Verify::Tail] {
        assert_eq!(expect_corrupt(tmp.path(), verify), (path.clone(), bad));
    }
    // Header damage (bad magic / bad length) is treated the same way.
    flip_byte(&path, bad + RECORD_HEADER_LEN as u64 + 50);
    flip_byte(&path, bad + 1);
    assert_eq!(expect_corrupt(tmp.path(), Verify::Full), (path.clone(), bad));
    flip_byte(&path, bad + 1);
    flip_byte(&path, bad + 6);
    assert_eq!(expect_corrupt(tmp.path(), Verify::Full), (path.clone(), bad));
    // Nothing was truncated.
    assert_eq!(fs::metadata(&path).unwrap().len(), before.len() as u64);
    let err = SegmentedLog::open(tmp.path(), opts(1 << 20, Verify::Full)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()) && msg.contains(&format!("at byte {bad}")), "{msg}");
}

#[test]
fn corruption_in_non_last_segment_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
        fill(&mut log, 0..50);
    }
    let (log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
    let second = log.segments()[1].clone();
    drop(log);
    // Damage the last record of a middle segment: nothing valid follows it in that file,
    // but it is not the last segment, so it cannot be a torn tail.
    let last_pos = second.len_bytes - REC;
    flip_byte(&second.path, last_pos + RECORD_HEADER_LEN as u64 + 3);
    assert_eq!(expect_corrupt(tmp.path(), Verify::Full), (second.path.clone(), last_pos));
    fs::remove_file(second.path.with_extension("idx")).unwrap();
    assert_eq!(expect_corrupt(tmp.path(), Verify::Tail), (second.path.clone(), last_pos));
    assert_eq!(fs::metadata(&second.path).unwrap().len(), second.len_bytes);
}

#[test]
fn missing_middle_segment_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let segs = {
        let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
        fill(&mut log, 0..50);
        log.segments()
    };
    fs::remove_file(&segs[1].path).unwrap();
    let (path, _) = expect_corrupt(tmp.path(), Verify::Tail);
    assert_eq!(path, segs[2].path);
}

#[test]
fn stray_index_and_temp_files_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
        fill(&mut log, 0..20);
    }
    let stray = tmp.path().join(format!("{:020}.idx", 999));
    let temp = tmp.path().join(format!("{:020}.idx.tmp", 8));
    fs::write(&stray, b"junk").unwrap();
    fs::write(&temp, b"junk").unwrap();
    fs::write(tmp.path().join("unrelated.txt"), b"keep").unwrap();
    let (log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Tail)).unwrap();
    assert!(!stray.exists() && !temp.exists());
    assert!(tmp.path().join("unrelated.txt").exists());
    assert_contents(&log, 0..20);
}

#[test]
fn truncate_within_active_and_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
    fill(&mut log, 0..100);
    let active_base = log.segments().last().unwrap().base_seq;
    log.truncate_from(active_base + 1).unwrap();
    assert_contents(&log, 0..active_base + 1);
    log.truncate_from(active_base + 5).unwrap(); // beyond the end: no-op
    assert_eq!(log.next_seq(), active_base + 1);
    let n_before = log.segments().len();
    log.truncate_from(23).unwrap();
    assert!(log.segments().len() < n_before);
    assert_contents(&log, 0..23);
    let files: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    let logs = files.iter().filter(|n| n.to_string_lossy().ends_with(".log")).count();
    assert_eq!(logs, log.segments().len());
    // The truncated segment was sealed; it has no index any more and takes appends again.
    let last = log.segments().last().unwrap().clone();
    assert!(!last.path.with_extension("idx").exists());
    fill(&mut log, 23..60);
    drop(log);
    for verify in [Verify::Full, Verify::Tail] {
        let (log, rec) = SegmentedLog::open(tmp.path(), opts(1000, verify)).unwrap();
        assert!(rec.torn_tail.is_none());
        assert_contents(&log, 0..60);
    }
    // Truncating at a segment boundary removes that segment entirely.
    let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
    let boundary = log.segments()[2].base_seq;
    log.truncate_from(boundary).unwrap();
    assert_eq!(log.segments().len(), 2);
    assert_contents(&log, 0..boundary);
    drop(log);
    let (log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Tail)).unwrap();
    assert_contents(&log, 0..boundary);
}

#[test]
fn truncate_at_or_below_first_seq_resets() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
    fill(&mut log, 10..40);
    log.truncate_from(10).unwrap();
    assert!(log.is_empty());
    assert_eq!((log.first_seq(), log.next_seq()), (10, 10));
    fill(&mut log, 10..12);
    drop(log);
    let (log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
    assert_contents(&log, 10..12);
}

/// Descriptors of this process open on `path` (unlinked files show as "<path> (deleted)").
fn open_descriptors_on(path: &Path) -> usize {
    let deleted = format!("{} (deleted)", path.display());
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == path || target.to_string_lossy() == deleted)
        .count()
}

/// A purged segment's last close frees its file (page-cache eviction, block frees, discards
/// on a `discard` mount: tens of milliseconds for a 64 MiB segment), so it happens on the
/// reaper thread, never on the purging one. Failed before the reaper: the descriptor was
/// closed inside `purge_before`.
#[test]
fn purge_unlinks_on_the_caller_and_closes_on_the_reaper() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
    fill(&mut log, 0..30);
    let first = log.segments()[0].path.clone();
    assert_eq!(open_descriptors_on(&first), 1, "the log holds its segment open");
    reaper::tests::pause();
    let purged = log.purge_before(log.segments()[1].base_seq);
    let still_open = open_descriptors_on(&first);
    reaper::tests::resume();
    purged.unwrap();
    assert!(!first.exists(), "the name is gone when purge_before returns");
    assert_eq!(still_open, 1, "the descriptor is closed by the reaper, not by purge_before");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while open_descriptors_on(&first) > 0 {
        assert!(std::time::Instant::now() < deadline, "the reaper never closed {}", first.display());
        std::thread::yield_now();
    }
    assert_contents(&log, log.segments()[0].base_seq.max(log.first_seq())..30);
}

/// The reaper frees a removed segment through the descriptor it had when it was unlinked,
/// never by reopening its path: with a file cache that closed that descriptor, the path may
/// name a new segment by then (a reset to the same base), and shrinking it would cut records
/// out of the live log. Failed before: the reaper reopened the path and shrank the new file.
#[test]
fn the_reaper_never_touches_a_new_segment_of_the_same_name() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = FileCache::new(1);
    let big = 64 << 10;
    let (mut log, _) = SegmentedLog::open_in(tmp.path(), opts(16 << 20, Verify::Full), Some(&cache)).unwrap();
    for s in 0..80 {
        log.append(s, &payload(s, big)).unwrap();
    }
    log.sync().unwrap();
    reaper::tests::pause();
    // Back to seq 0: the 5 MiB segment `0.log` goes to the reaper and a new `0.log` replaces it.
    let reset = log.truncate_from(0);
    let refill: Vec<_> = (0..40).map(|s| log.append(s, &payload(s + 1000, big))).collect();
    reaper::tests::resume();
    reset.unwrap();
    refill.into_iter().for_each(|r| r.unwrap());
    log.sync().unwrap();
    wait_for_removals();
    for s in 0..40 {
        assert_eq!(log.read(s).unwrap().as_deref(), Some(&payload(s + 1000, big)[..]), "record {s}");
    }
    drop(log);
    let (log, recovery) = SegmentedLog::open_in(tmp.path(), opts(16 << 20, Verify::Full), Some(&cache)).unwrap();
    assert!(recovery.torn_tail.is_none(), "the new segment was changed under the log: {:?}", recovery.torn_tail);
    assert_eq!(log.next_seq(), 40);
}

#[test]
fn purge_before_drops_whole_old_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
    fill(&mut log, 0..100);
    let segs = log.segments();
    let bytes_before = log.bytes();
    let cut = segs[3].base_seq + 2;
    log.purge_before(cut).unwrap();
    assert_eq!(log.first_seq(), cut);
    assert_eq!(log.read(cut - 1).unwrap(), None);
    assert_contents(&log, cut..100);
    let after = log.segments();
    assert_eq!(after[0].base_seq, segs[3].base_seq, "the segment holding `cut` is kept");
    assert_eq!(after.len(), segs.len() - 3);
    assert!(log.bytes() < bytes_before);
    for s in &segs[..3] {
        assert!(!s.path.exists() && !s.path.with_extension("idx").exists());
    }
    log.purge_before(5).unwrap(); // below first_seq: no-op
    assert_eq!(log.first_seq(), cut);
    // Purging everything keeps the active segment; the log stays appendable.
    log.purge_before(100).unwrap();
    assert!(log.is_empty());
    assert_eq!(log.segments().len(), 1);
    fill(&mut log, 100..103);
    drop(log);
    for verify in [Verify::Tail, Verify::Full] {
        let (log, _) = SegmentedLog::open(tmp.path(), opts(1000, verify)).unwrap();
        // After reopen the start is the first retained segment's base (documented).
        let base = log.segments()[0].base_seq;
        assert!(base <= 100);
        assert_eq!(log.first_seq(), base);
        assert_eq!(log.next_seq(), 103);
        for s in base..103 {
            assert_eq!(log.read(s).unwrap().unwrap(), payload(s, PLEN));
        }
    }
}

#[test]
fn purge_past_the_end_resets() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
    fill(&mut log, 0..30);
    log.purge_before(500).unwrap();
    assert_eq!((log.first_seq(), log.next_seq()), (500, 500));
    assert_eq!(log.segments().len(), 1);
    drop(log);
    let (log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
    assert_eq!((log.first_seq(), log.next_seq()), (500, 500));
}

#[test]
fn reset_is_durable_and_sets_next_seq() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
    fill(&mut log, 0..50);
    log.reset(1000).unwrap();
    assert!(log.is_empty());
    assert_eq!((log.first_seq(), log.next_seq()), (1000, 1000));
    assert_eq!(log.read(10).unwrap(), None);
    assert!(matches!(log.append(999, b"x"), Err(LogError::NonContiguous { expected: 1000, got: 999 })));
    drop(log);
    let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
    assert_eq!((log.first_seq(), log.next_seq()), (1000, 1000));
    assert_eq!(log.segments().len(), 1);
    fill(&mut log, 1000..1010);
    // Reset to a lower seq works too.
    log.reset(3).unwrap();
    fill(&mut log, 3..5);
    drop(log);
    let (log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Tail)).unwrap();
    assert_contents(&log, 3..5);
}

#[test]
fn sync_points_track_dirty_state() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
    assert!(log.sync_point().is_empty());
    log.append(0, b"a").unwrap();
    let p = log.sync_point();
    assert!(!p.is_empty());
    assert!(p.dir.is_some(), "a new segment file needs a directory fsync");
    p.sync().unwrap();
    assert!(log.sync_point().is_empty());
    log.append(1, b"b").unwrap();
    let p = log.sync_point();
    assert_eq!(p.files.len(), 1);
    assert!(p.dir.is_none());
    log.sync().unwrap();
    assert!(log.sync_point().is_empty());
    // A roll seals (syncs) the old segment; only the new one is dirty.
    fill(&mut log, 2..40);
    let p = log.sync_point();
    assert_eq!(p.files.len(), 1);
    assert!(Arc::ptr_eq(&p.files[0], &log.segments.last().unwrap().file));
}

#[test]
fn seal_active_starts_new_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1 << 20, Verify::Full)).unwrap();
    log.seal_active().unwrap(); // nothing to seal
    fill(&mut log, 0..5);
    log.seal_active().unwrap();
    log.seal_active().unwrap();
    assert!(seg_path(tmp.path(), 0).with_extension("idx").exists());
    fill(&mut log, 5..8);
    assert_eq!(log.segments().iter().map(|s| s.base_seq).collect::<Vec<_>>(), vec![0, 5]);
    drop(log);
    let (log, _) = SegmentedLog::open(tmp.path(), opts(1 << 20, Verify::Tail)).unwrap();
    assert_contents(&log, 0..8);
}

#[test]
fn sealed_last_segment_stays_sealed_after_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1 << 20, Verify::Full)).unwrap();
        fill(&mut log, 0..5);
        log.seal_active().unwrap();
    }
    let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1 << 20, Verify::Tail)).unwrap();
    fill(&mut log, 5..6);
    assert_eq!(log.segments().len(), 2);
    drop(log);
    let (log, _) = SegmentedLog::open(tmp.path(), opts(1 << 20, Verify::Tail)).unwrap();
    assert_contents(&log, 0..6);
}

#[test]
fn write_error_poisons_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1 << 20, Verify::Full)).unwrap();
    fill(&mut log, 0..3);
    // /dev/full fails every write with ENOSPC.
    let full = OpenOptions::new().read(true).write(true).open("/dev/full").unwrap();
    log.segments.last_mut().unwrap().file = Handle::new("/dev/full".into(), full, false, None);
    assert!(matches!(log.append(3, b"x"), Err(LogError::Io { .. })));
    assert!(log.is_poisoned());
    assert_eq!(log.next_seq(), 3);
    assert!(matches!(log.append(3, b"x"), Err(LogError::Poisoned)));
    assert!(matches!(log.sync(), Err(LogError::Poisoned)));
    assert!(matches!(log.truncate_from(1), Err(LogError::Poisoned)));
    assert!(matches!(log.purge_before(2), Err(LogError::Poisoned)));
    assert!(matches!(log.reset(0), Err(LogError::Poisoned)));
    assert!(matches!(log.seal_active(), Err(LogError::Poisoned)));
    drop(log);
    let (log, _) = SegmentedLog::open(tmp.path(), opts(1 << 20, Verify::Full)).unwrap();
    assert_contents(&log, 0..3);
}

#[test]
fn large_scan_crosses_segments() {
    // 64 MiB of 1 KiB records over several segments: iter_from and a Full reopen see all of them.
    // Speed is measured by the bench binary, not here.
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentedLog::open(tmp.path(), opts(16 << 20, Verify::Full)).unwrap();
    let body = vec![7u8; 1024];
    let n = 64 * 1024;
    for s in 0..n {
        log.append(s, &body).unwrap();
    }
    let mut count = 0u64;
    for r in log.iter_from(0) {
        let (_, p) = r.unwrap();
        assert_eq!(p.len(), 1024);
        count += 1;
    }
    assert_eq!(count, n);
    drop(log);
    let (log, _) = SegmentedLog::open(tmp.path(), opts(16 << 20, Verify::Full)).unwrap();
    assert_eq!(log.next_seq(), n);
    assert!(log.segments().len() > 1);
}

#[test]
fn group_commit_many_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = SegmentedLog::open(tmp.path(), opts(64 * 1024, Verify::Full)).unwrap();
    let log = Arc::new(Mutex::new(log));
    let gc = Arc::new(GroupCommit::spawn("test-gc"));
    let (tx, rx) = mpsc::channel::<(u64, bool, bool)>();
    let threads = 8;
    let per = 200;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (log, gc, tx) = (Arc::clone(&log), Arc::clone(&gc), tx.clone());
            std::thread::spawn(move || {
                for _ in 0..per {
                    let (seq, point) = {
                        let mut log = log.lock().unwrap();
                        let seq = log.next_seq();
                        log.append(seq, &payload(seq, 200)).unwrap();
                        (seq, log.sync_point())
                    };
                    let before = gc.batches();
                    let (gc2, tx) = (Arc::clone(&gc), tx.clone());
                    gc.submit(
                        point,
                        Box::new(move |r| {
                            // A batch that started after this submission has completed.
                            let _ = tx.send((seq, r.is_ok(), gc2.batches() > before));
                        }),
                    );
                }
            })
        })
        .collect();
    drop(tx);
    for h in handles {
        h.join().unwrap();
    }
    let results: Vec<_> = rx.iter().collect();
    assert_eq!(results.len(), threads * per);
    assert!(results.iter().all(|&(_, ok, after)| ok && after));
    let n = (threads * per) as u64;
    assert!(gc.batches() >= 1 && gc.batches() <= n);
    assert!(log.lock().unwrap().sync_point().is_empty(), "everything submitted is durable");
    let log = log.lock().unwrap();
    assert_eq!(log.next_seq(), n);
    for s in 0..n {
        assert_eq!(log.read(s).unwrap().unwrap(), payload(s, 200));
    }
}

#[test]
fn group_commit_callbacks_in_submission_order_and_drained_on_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1 << 20, Verify::Full)).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let gc = GroupCommit::spawn("order-gc");
    for i in 0..300u64 {
        log.append(i, b"x").unwrap();
        let order = Arc::clone(&order);
        gc.submit(log.sync_point(), Box::new(move |r| order.lock().unwrap().push((i, r.is_ok()))));
    }
    drop(gc); // joins after draining the queue
    let order = order.lock().unwrap();
    assert_eq!(order.len(), 300);
    assert!(order.iter().enumerate().all(|(i, &(j, ok))| i as u64 == j && ok));
}

#[test]
fn group_commit_failure_is_permanent() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1 << 20, Verify::Full)).unwrap();
    let gc = GroupCommit::spawn("fail-gc");
    let (tx, rx) = mpsc::channel();
    let sender = |tx: &mpsc::Sender<(u32, bool)>, id: u32| {
        let tx = tx.clone();
        Box::new(move |r: std::io::Result<()>| {
            let _ = tx.send((id, r.is_ok()));
        })
    };
    log.append(0, b"a").unwrap();
    gc.submit(log.sync_point(), sender(&tx, 0));
    assert_eq!(rx.recv().unwrap(), (0, true));
    // fsync on /dev/null fails with EINVAL, standing in for a failing disk.
    let null = Handle::new("/dev/null".into(), File::open("/dev/null").unwrap(), false, None);
    log.append(1, b"b").unwrap();
    let mut files = log.sync_point().files;
    files.push(null);
    gc.submit(SyncPoint::from_files(files, None), sender(&tx, 1));
    assert_eq!(rx.recv().unwrap(), (1, false));
    assert!(gc.is_failed());
    let gc_batches_after_failure = gc.batches();
    log.append(2, b"c").unwrap();
    for id in 2..5 {
        gc.submit(log.sync_point(), sender(&tx, id));
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    gc.submit(
        SyncPoint::from_files(Vec::new(), None),
        Box::new(move |r| {
            assert!(r.is_err());
            c.fetch_add(1, Ordering::SeqCst);
        }),
    );
    drop(gc);
    drop(tx);
    let rest: Vec<_> = rx.iter().collect();
    assert_eq!(rest, vec![(2, false), (3, false), (4, false)]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(!log.sync_point().is_empty(), "a failed sync never marks data durable");
    assert_eq!(gc_batches_after_failure, 1);
}

#[derive(Debug, Clone)]
enum Op {
    Append(u8, u16),
    Truncate(u8),
    Purge(u8),
    Reset(u8),
    Seal,
    Sync,
    Reopen(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..20, 0u16..300).prop_map(|(n, len)| Op::Append(n, len)),
        2 => any::<u8>().prop_map(Op::Truncate),
        2 => any::<u8>().prop_map(Op::Purge),
        1 => any::<u8>().prop_map(Op::Reset),
        1 => Just(Op::Seal),
        1 => Just(Op::Sync),
        2 => any::<bool>().prop_map(Op::Reopen),
    ]
}

/// Picks a seq in `[first, next + 2]` from a byte.
fn pick(first: u64, next: u64, b: u8) -> u64 {
    first + (u64::from(b) * (next + 3 - first)) / 256
}

fn check_model(log: &SegmentedLog, model: &BTreeMap<u64, Vec<u8>>, first: u64, next: u64) {
    assert_eq!(log.first_seq(), first);
    assert_eq!(log.next_seq(), next);
    if first > 0 {
        assert_eq!(log.read(first - 1).unwrap(), None);
    }
    assert_eq!(log.read(next).unwrap(), None);
    for s in first..next {
        assert_eq!(log.read(s).unwrap().as_deref(), Some(&model[&s][..]), "seq {s}");
    }
    let it: Vec<_> = log.iter_from(first).map(|r| r.unwrap()).collect();
    assert_eq!(it.len() as u64, next - first);
    for (s, p) in it {
        assert_eq!(&p[..], &model[&s][..]);
    }
}

/// On-disk shape: sealed segments end exactly at their last record; only the active one may
/// extend past its logical end, only when preallocating, and only with zeros.
fn check_files(log: &SegmentedLog, preallocate: bool) {
    let segs = log.segments();
    for (i, s) in segs.iter().enumerate() {
        let data = fs::read(&s.path).unwrap();
        let file_len = data.len() as u64;
        if i + 1 < segs.len() || !preallocate {
            assert_eq!(file_len, s.len_bytes, "{}", s.path.display());
        } else {
            assert!(file_len >= s.len_bytes, "{}", s.path.display());
            assert!(data[s.len_bytes as usize..].iter().all(|&b| b == 0), "nonzero bytes past the logical end");
        }
    }
}

fn run_model(ops: Vec<Op>, seg: u64, preallocate: bool) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let o = |verify| LogOptions {
        segment_bytes: seg,
        verify,
        preallocate,
        after_clean_shutdown: false,
        sync_on_open: true,
    };
    let (mut log, _) = SegmentedLog::open(tmp.path(), o(Verify::Tail)).unwrap();
    // Write-behind every third of a segment: its bookkeeping across rolls, truncations,
    // resets and reopens is exercised along with everything else.
    log.set_write_behind(seg / 3);
    // `model` holds every record that may still be physically retained; [first, next)
    // is what the log must serve.
    let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let (mut first, mut next) = (0u64, 0u64);
    for op in ops {
        match op {
            Op::Append(n, len) => {
                for _ in 0..n {
                    let p = payload(next, usize::from(len));
                    log.append(next, &p).unwrap();
                    model.insert(next, p);
                    next += 1;
                }
            }
            Op::Truncate(b) => {
                let s = pick(first, next, b);
                log.truncate_from(s).unwrap();
                if s >= next {
                } else if s <= first {
                    model.clear();
                    first = s;
                    next = s;
                } else if s < next {
                    model.retain(|&k, _| k < s);
                    next = s;
                }
            }
            Op::Purge(b) => {
                let s = pick(first, next, b);
                log.purge_before(s).unwrap();
                if s > next {
                    model.clear();
                    next = s;
                }
                first = first.max(s);
            }
            Op::Reset(b) => {
                let s = pick(first, next, b);
                log.reset(s).unwrap();
                model.clear();
                first = s;
                next = s;
            }
            Op::Seal => log.seal_active().unwrap(),
            Op::Sync => log.sync().unwrap(),
            Op::Reopen(full) => {
                drop(log);
                let v = if full { Verify::Full } else { Verify::Tail };
                let (mut l, rec) = SegmentedLog::open(tmp.path(), o(v)).unwrap();
                l.set_write_behind(seg / 3);
                log = l;
                prop_assert!(rec.torn_tail.is_none());
                prop_assert_eq!(rec.truncated_bytes, 0);
                prop_assert_eq!(log.next_seq(), next);
                // The physical start may lie before the logical one; both must be served
                // from retained data.
                prop_assert!(log.first_seq() <= first);
                first = log.first_seq();
                prop_assert!(model.contains_key(&first) || first == next);
            }
        }
        check_model(&log, &model, first, next);
        check_files(&log, preallocate);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn matches_vec_model(ops in proptest::collection::vec(op(), 1..40), seg in 200u64..2000) {
        run_model(ops, seg, false)?;
    }

    #[test]
    fn matches_vec_model_preallocated(ops in proptest::collection::vec(op(), 1..40), seg in 200u64..2000) {
        run_model(ops, seg, true)?;
    }
}

#[test]
fn handles_are_thread_safe() {
    fn send_static<T: Send + 'static>() {}
    fn send_sync<T: Send + Sync>() {}
    send_static::<SyncPoint>();
    send_sync::<SegmentedLog>();
    send_sync::<GroupCommit>();
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn all_zero(path: &Path, from: u64, to: u64) -> bool {
    let data = fs::read(path).unwrap();
    data[from as usize..to as usize].iter().all(|&b| b == 0)
}

fn write_at(path: &Path, pos: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, pos).unwrap();
}

#[test]
fn preallocated_round_trip_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let path = seg_path(tmp.path(), 0);
    let logical = FILE_HEADER_LEN + 50 * REC;
    {
        let (mut log, _) = SegmentedLog::open(tmp.path(), popts(1 << 20, Verify::Full)).unwrap();
        fill(&mut log, 0..50);
        assert_eq!(log.bytes(), logical);
        assert_eq!(log.segments()[0].len_bytes, logical);
        assert!(file_len(&path) > logical + (512 << 10), "file is preallocated: {}", file_len(&path));
        assert!(all_zero(&path, logical, file_len(&path)));
        // The zeros and the new file's directory entry were synced before the first record.
        let p = log.sync_point();
        assert!(p.dir.is_none());
        assert_eq!(p.files.len(), 1);
        assert_contents(&log, 0..50);
        // Dropped without a sync: open makes what it finds durable.
    }
    let physical = file_len(&path);
    for verify in [Verify::Full, Verify::Tail, Verify::Full] {
        let (mut log, rec) = SegmentedLog::open(tmp.path(), popts(1 << 20, verify)).unwrap();
        assert!(rec.torn_tail.is_none());
        assert_eq!((rec.records, rec.truncated_bytes), (50, 0));
        assert_eq!(log.bytes(), logical);
        assert_eq!(log.segments()[0].len_bytes, logical);
        assert_eq!(file_len(&path), physical, "the preallocated space is kept");
        assert_contents(&log, 0..50);
        // Appends go at the logical end, inside the preallocated space.
        log.append(50, &payload(50, PLEN)).unwrap();
        assert_eq!(file_len(&path), physical);
        log.truncate_from(50).unwrap();
        assert_eq!(file_len(&path), physical);
    }
    let (mut log, _) = SegmentedLog::open(tmp.path(), popts(1 << 20, Verify::Tail)).unwrap();
    fill(&mut log, 50..60);
    log.sync().unwrap();
    drop(log);
    let (log, rec) = SegmentedLog::open(tmp.path(), popts(1 << 20, Verify::Full)).unwrap();
    assert!(rec.torn_tail.is_none());
    assert_contents(&log, 0..60);
}

#[test]
fn preallocated_grows_in_chunks_and_keeps_zeros_ahead() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentedLog::open(tmp.path(), popts(64 << 20, Verify::Full)).unwrap();
    let body = vec![9u8; 1024];
    let path = seg_path(tmp.path(), 0);
    let mut extensions = 0;
    let mut last_len = 0;
    for s in 0..8 * 1024u64 {
        log.append(s, &body).unwrap();
        let (logical, physical) = (log.bytes(), file_len(&path));
        assert!(physical >= logical + PREALLOC_LOW_WATER, "{physical} vs {logical}");
        if physical != last_len {
            extensions += 1;
            last_len = physical;
        }
    }
    // ~8 MiB of records in steps of PREALLOC_CHUNK.
    assert!((2..=4).contains(&extensions), "{extensions} extensions");
    assert!(all_zero(&path, log.bytes(), file_len(&path)));
}

#[test]
fn preallocated_garbage_in_zero_area_is_torn_tail() {
    let mut partial = Vec::new();
    encode_record(&mut partial, 30, PLEN as u32, &payload(30, PLEN));
    partial.truncate(RECORD_HEADER_LEN + 40);
    // (offset past the last record, garbage)
    let cases: Vec<(u64, Vec<u8>)> = vec![(0, vec![0xAB; 37]), (0, partial), (0, vec![1, 2, 3]), (5000, vec![7; 10])];
    for (gap, garbage) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let last = {
            let (mut log, _) = SegmentedLog::open(tmp.path(), popts(1 << 20, Verify::Tail)).unwrap();
            fill(&mut log, 0..30);
            log.sync().unwrap();
            log.segments().last().unwrap().clone()
        };
        let physical = file_len(&last.path);
        write_at(&last.path, last.len_bytes + gap, &garbage);
        let (mut log, rec) = SegmentedLog::open(tmp.path(), popts(1 << 20, Verify::Tail)).unwrap();
        assert_eq!(rec.torn_tail, Some((last.path.clone(), last.len_bytes)));
        assert_eq!(rec.truncated_bytes, gap + garbage.len() as u64);
        assert_eq!(file_len(&last.path), physical, "zeroed in place, not truncated");
        assert!(all_zero(&last.path, last.len_bytes, physical));
        assert_eq!(log.bytes(), last.len_bytes);
        assert_contents(&log, 0..30);
        fill(&mut log, 30..40);
        drop(log);
        for verify in [Verify::Full, Verify::Tail] {
            let (log, rec) = SegmentedLog::open(tmp.path(), popts(1 << 20, verify)).unwrap();
            assert!(rec.torn_tail.is_none());
            assert_eq!(rec.truncated_bytes, 0);
            assert_contents(&log, 0..40);
        }
    }
}

#[test]
fn preallocated_flipped_byte_with_valid_records_after_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = SegmentedLog::open(tmp.path(), popts(1 << 20, Verify::Full)).unwrap();
        fill(&mut log, 0..20);
    }
    let path = seg_path(tmp.path(), 0);
    let before = fs::read(&path).unwrap();
    assert!(before.len() as u64 > FILE_HEADER_LEN + 20 * REC);
    let bad = FILE_HEADER_LEN + 7 * REC;
    flip_byte(&path, bad + RECORD_HEADER_LEN as u64 + 50);
    for verify in [Verify::Full, Verify::Tail] {
        assert_eq!(expect_corrupt_with(tmp.path(), popts(1 << 20, verify)), (path.clone(), bad));
        assert_eq!(expect_corrupt_with(tmp.path(), opts(1 << 20, verify)), (path.clone(), bad));
    }
    let err = SegmentedLog::open(tmp.path(), popts(1 << 20, Verify::Full)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()) && msg.contains(&format!("at byte {bad}")), "{msg}");
    // Nothing was modified.
    flip_byte(&path, bad + RECORD_HEADER_LEN as u64 + 50);
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn preallocated_truncate_zeroes_removed_records() {
    let tmp = tempfile::tempdir().unwrap();
    let path = seg_path(tmp.path(), 0);
    let (old_end, new_end, physical) = {
        let (mut log, _) = SegmentedLog::open(tmp.path(), popts(1 << 20, Verify::Full)).unwrap();
        fill(&mut log, 0..20);
        let old_end = log.bytes();
        let physical = file_len(&path);
        log.truncate_from(10).unwrap();
        assert_contents(&log, 0..10);
        let new_end = log.bytes();
        assert_eq!(new_end, FILE_HEADER_LEN + 10 * REC);
        assert_eq!(file_len(&path), physical, "truncation keeps the preallocated space");
        assert!(all_zero(&path, new_end, physical));
        (old_end, new_end, physical)
    };
    // A torn write at the old end: had records 10..20 survived, they would be valid records
    // after the damage and recovery would refuse to open.
    write_at(&path, old_end, &[0x5A; 64]);
    let (mut log, rec) = SegmentedLog::open(tmp.path(), popts(1 << 20, Verify::Full)).unwrap();
    assert_eq!(rec.torn_tail, Some((path.clone(), new_end)));
    assert_eq!(rec.truncated_bytes, old_end + 64 - new_end);
    assert_eq!(file_len(&path), physical);
    assert_contents(&log, 0..10);
    fill(&mut log, 10..15);
    drop(log);
    let (log, rec) = SegmentedLog::open(tmp.path(), popts(1 << 20, Verify::Tail)).unwrap();
    assert!(rec.torn_tail.is_none());
    assert_contents(&log, 0..15);
}

#[test]
fn preallocated_roll_and_seal_trim_sealed_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentedLog::open(tmp.path(), popts(1000, Verify::Full)).unwrap();
    fill(&mut log, 0..100);
    let segs = log.segments();
    assert!(segs.len() >= 10);
    for s in &segs[..segs.len() - 1] {
        assert_eq!(file_len(&s.path), s.len_bytes, "sealed segment {} is trimmed", s.base_seq);
        assert!(s.path.with_extension("idx").exists());
    }
    let active = segs.last().unwrap().clone();
    assert!(file_len(&active.path) > active.len_bytes);
    log.seal_active().unwrap();
    assert_eq!(file_len(&active.path), active.len_bytes);
    fill(&mut log, 100..105);
    drop(log);
    // Tail trusts the indexes: they describe the whole (trimmed) files.
    for verify in [Verify::Tail, Verify::Full] {
        let (log, rec) = SegmentedLog::open(tmp.path(), popts(1000, verify)).unwrap();
        assert!(rec.torn_tail.is_none());
        let n = log.segments.len();
        assert!(log.segments[..n - 1].iter().all(|s| s.sealed));
        assert_contents(&log, 0..105);
        check_files(&log, true);
    }
}

#[test]
fn non_preallocated_open_truncates_zero_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let path = seg_path(tmp.path(), 0);
    let logical = {
        let (mut log, _) = SegmentedLog::open(tmp.path(), popts(1 << 20, Verify::Full)).unwrap();
        fill(&mut log, 0..20);
        log.sync().unwrap();
        log.bytes()
    };
    let physical = file_len(&path);
    assert!(physical > logical);
    for verify in [Verify::Tail, Verify::Full] {
        let (mut log, rec) = SegmentedLog::open(tmp.path(), opts(1 << 20, verify)).unwrap();
        // Zeros are never data: cut off like any torn tail, never Corrupt.
        if verify == Verify::Tail {
            assert_eq!(rec.torn_tail, Some((path.clone(), logical)));
            assert_eq!(rec.truncated_bytes, physical - logical);
        } else {
            assert!(rec.torn_tail.is_none());
        }
        assert_eq!(file_len(&path), logical);
        assert_contents(&log, 0..20);
        log.append(20, &payload(20, PLEN)).unwrap();
        log.truncate_from(20).unwrap();
        assert_eq!(file_len(&path), logical);
    }
    // And back: a preallocating open of the trimmed file preallocates again on append.
    let (mut log, rec) = SegmentedLog::open(tmp.path(), popts(1 << 20, Verify::Full)).unwrap();
    assert!(rec.torn_tail.is_none());
    fill(&mut log, 20..25);
    assert!(file_len(&path) > log.bytes());
    assert_contents(&log, 0..25);
}

#[test]
fn preallocated_empty_segment_with_zero_tail_is_clean() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = SegmentedLog::open(tmp.path(), popts(1 << 20, Verify::Full)).unwrap();
        fill(&mut log, 0..20);
        log.seal_active().unwrap();
    }
    // A crash after the next segment's header and zeros were written, before any record.
    let mut data = format::encode_file_header(20).to_vec();
    data.resize(64 << 10, 0);
    fs::write(seg_path(tmp.path(), 20), &data).unwrap();
    let (mut log, rec) = SegmentedLog::open(tmp.path(), popts(1 << 20, Verify::Tail)).unwrap();
    assert!(rec.torn_tail.is_none());
    let last = log.segments().last().unwrap().clone();
    assert_eq!((last.base_seq, last.records, last.len_bytes), (20, 0, FILE_HEADER_LEN));
    fill(&mut log, 20..25);
    assert_eq!(log.segments().len(), 2);
    drop(log);
    let (log, rec) = SegmentedLog::open(tmp.path(), popts(1 << 20, Verify::Full)).unwrap();
    assert!(rec.torn_tail.is_none());
    assert_contents(&log, 0..25);
}

/// Descriptors this process holds open on files under `dir`.
fn fds_under(dir: &Path) -> usize {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[test]
fn logs_sharing_a_file_cache_keep_at_most_its_cap_of_files_open() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let cache = FileCache::new(4);
    let mut logs: Vec<SegmentedLog> = (0..20)
        .map(|i| {
            // Every other log preallocates, so that path reopens files too.
            let o = if i % 2 == 0 { opts(400, Verify::Full) } else { popts(400, Verify::Full) };
            SegmentedLog::open_in(&root.join(format!("{i}")), o, Some(&cache)).unwrap().0
        })
        .collect();
    assert!(fds_under(&root) <= 4, "{} open after opening 20 logs", fds_under(&root));
    for round in 0..12u64 {
        for log in &mut logs {
            log.append(round, &payload(round, PLEN)).unwrap();
            assert!(fds_under(&root) <= 4);
        }
        // Reads and iteration of logs whose files the cache closed meanwhile.
        for log in &logs {
            assert_eq!(log.read(round).unwrap().unwrap(), payload(round, PLEN));
            assert_eq!(log.iter_from(0).count() as u64, round + 1);
        }
        assert!(fds_under(&root) <= 4);
    }
    for log in &mut logs {
        assert!(log.segments().len() > 1, "segments must roll for this test to mean anything");
        log.sync().unwrap();
        log.truncate_from(10).unwrap();
        log.purge_before(3).unwrap();
        assert!(fds_under(&root) <= 4);
    }
    let stats = cache.stats();
    assert_eq!(stats.cap, 4);
    assert!(stats.open <= 4);
    assert!(stats.evictions > 0 && stats.reopens > 0, "{stats:?}");
    drop(logs);
    assert_eq!(cache.stats().open, 0, "dropping a log closes its files");
    assert_eq!(fds_under(&root), 0);
    for i in 0..20 {
        let o = if i % 2 == 0 { opts(400, Verify::Full) } else { popts(400, Verify::Full) };
        let (log, _) = SegmentedLog::open_in(&root.join(format!("{i}")), o, Some(&cache)).unwrap();
        assert_eq!(log.next_seq(), 10);
        for s in log.first_seq()..10 {
            assert_eq!(log.read(s).unwrap().unwrap(), payload(s, PLEN), "log {i} seq {s}");
        }
    }
}

#[test]
fn a_sync_point_outlives_the_eviction_of_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let cache = FileCache::new(2);
    let (mut a, _) = SegmentedLog::open_in(&root.join("a"), opts(1 << 20, Verify::Full), Some(&cache)).unwrap();
    fill(&mut a, 0..3);
    let point = a.sync_point();
    assert!(!point.is_empty());
    let others: Vec<_> = (0..3)
        .map(|i| SegmentedLog::open_in(&root.join(format!("o{i}")), opts(1 << 20, Verify::Full), Some(&cache)).unwrap())
        .collect();
    assert_eq!(fds_under(&root.join("a")), 0, "a's files were closed to make room");
    let reopens = cache.stats().reopens;
    let gc = GroupCommit::spawn("test-cache-sync");
    let (tx, rx) = mpsc::channel();
    gc.submit(point, Box::new(move |r| tx.send(r.is_ok()).unwrap()));
    assert!(rx.recv().unwrap(), "syncing through reopened files works");
    assert!(cache.stats().reopens > reopens);
    assert!(a.sync_point().is_empty(), "the point's sync made a's appends durable");
    drop(others);
    assert_contents(&a, 0..3);
}

#[test]
fn a_run_reads_what_single_reads_do_up_to_its_segment_end_and_byte_cap() {
    let tmp = tempfile::tempdir().unwrap();
    // Segments of about 1,000 bytes: records 0-7, 8-15, ... (100-byte payloads).
    let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
    fill(&mut log, 0..30);
    let bases: Vec<u64> = log.segments.iter().map(|s| s.base_seq).collect();
    assert!(bases.len() >= 3, "segments: {bases:?}");
    let segment_end = |seq: u64| bases.iter().copied().find(|&b| b > seq).unwrap_or(30);
    for seq in 0..32u64 {
        for count in [0usize, 1, 2, 5, 100] {
            let run = log.read_run(seq, count).unwrap();
            let expected: Vec<Bytes> = (seq..segment_end(seq).min(seq + count as u64).min(30))
                .map(|s| Bytes::from(payload(s, PLEN)))
                .collect();
            assert_eq!(run, expected, "seq {seq}, count {count}");
        }
    }
    // The byte cap: one record longer than the cap is read alone, and a run stops before the cap.
    let big = READ_RUN_BYTES as usize;
    let tmp2 = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentedLog::open(tmp2.path(), opts(64 << 20, Verify::Full)).unwrap();
    for s in 0..4 {
        log.append(s, &payload(s, big / 3)).unwrap();
    }
    log.append(4, &payload(4, big + 1)).unwrap();
    log.append(5, &payload(5, 10)).unwrap();
    let lens = |run: Vec<Bytes>| run.iter().map(Bytes::len).collect::<Vec<_>>();
    assert_eq!(lens(log.read_run(0, 10).unwrap()), vec![big / 3; 2], "three would pass the cap with headers");
    assert_eq!(lens(log.read_run(4, 10).unwrap()), vec![big + 1]);
    assert_eq!(log.read_run(5, 10).unwrap(), vec![Bytes::from(payload(5, 10))]);
}

#[test]
fn a_run_with_a_damaged_record_fails_naming_that_record() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Full)).unwrap();
        fill(&mut log, 0..30);
        assert!(log.segments[1].base_seq > 5, "segment 0 holds records 0-5");
    }
    // Damage seq 4 in the first (sealed) segment, which a start in Tail mode does not read.
    let pos4 = FILE_HEADER_LEN + 4 * REC;
    flip_byte(&seg_path(tmp.path(), 0), pos4 + RECORD_HEADER_LEN as u64 + 3);
    let (log, _) = SegmentedLog::open(tmp.path(), opts(1000, Verify::Tail)).unwrap();
    match log.read_run(1, 5) {
        Err(LogError::Corrupt { path, position, .. }) => {
            assert_eq!(path, seg_path(tmp.path(), 0));
            assert_eq!(position, pos4);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(log.read_run(1, 3).unwrap().len(), 3, "a run that ends before it is whole");
    assert_eq!(log.read_run(5, 1).unwrap().len(), 1);
}

/// Every file of a log directory, by name, with its bytes.
fn dir_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).unwrap()))
        .collect()
}

#[test]
fn a_run_appends_what_single_appends_do_byte_for_byte() {
    // Payload sizes that cross segments of 4 KiB mid-run, and a run longer than a write holds.
    let sizes: Vec<usize> = (0..400).map(|i| [0, 1, 100, 900, 3000, 5000][i % 6]).collect();
    let runs = [1usize, 3, 7, 50, 339];
    for (segment_bytes, preallocate) in [(4096, false), (4096, true), (64 << 20, false)] {
        let o = LogOptions { preallocate, ..opts(segment_bytes, Verify::Full) };
        let (one, many) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut a, _) = SegmentedLog::open(one.path(), o).unwrap();
        let (mut b, _) = SegmentedLog::open(many.path(), o).unwrap();
        let mut seq = 5u64;
        for &n in &runs {
            for s in seq..seq + n as u64 {
                a.append(s, &payload(s, sizes[(s - 5) as usize])).unwrap();
            }
            b.append_run(seq, n, |i, buf| {
                let s = seq + i as u64;
                buf.extend_from_slice(&payload(s, sizes[(s - 5) as usize]));
            })
            .unwrap();
            seq += n as u64;
        }
        // A big run in one call: more than WRITE_RUN_BYTES before any roll when segments are large.
        let big = (WRITE_RUN_BYTES as usize * 5 / 2) / 4096;
        for s in seq..seq + big as u64 {
            a.append(s, &payload(s, 4096)).unwrap();
        }
        b.append_run(seq, big, |i, buf| buf.extend_from_slice(&payload(seq + i as u64, 4096))).unwrap();
        let end = seq + big as u64;
        assert_eq!((b.first_seq(), b.next_seq()), (5, end));
        assert_eq!(b.segments.len(), a.segments.len());
        for s in (5..end).step_by(7) {
            assert_eq!(b.read(s).unwrap(), a.read(s).unwrap(), "seq {s}");
        }
        a.sync().unwrap();
        b.sync().unwrap();
        drop((a, b));
        assert_eq!(
            dir_bytes(many.path()),
            dir_bytes(one.path()),
            "segment_bytes {segment_bytes}, preallocate {preallocate}"
        );
        let (mut b, _) = SegmentedLog::open(many.path(), opts(segment_bytes, Verify::Full)).unwrap();
        assert_eq!((b.first_seq(), b.next_seq()), (5, end));
        assert_eq!(
            b.append_run(4, 1, |_, _| {}).unwrap_err().to_string(),
            LogError::NonContiguous { expected: end, got: 4 }.to_string()
        );
    }
}

#[test]
fn a_record_over_the_payload_limit_leaves_the_buffer_as_it_was() {
    let mut buf = b"earlier".to_vec();
    assert_eq!(format::append_record(&mut buf, 3, 10, |b| b.extend_from_slice(&[1; 11])), Err(11));
    assert_eq!(buf, b"earlier");
    assert_eq!(format::append_record(&mut buf, 3, 10, |b| b.extend_from_slice(&[1; 10])), Ok(()));
    let mut expected = Vec::new();
    encode_record(&mut expected, 3, 10, &[1; 10]);
    assert_eq!(&buf[b"earlier".len()..], &expected[..]);
}
