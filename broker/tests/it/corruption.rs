//! A byte flipped in the middle of a segment stops the node with an error that names the file
//! and the byte, and nothing is truncated. At the tail of the Raft log the rule depends on how
//! the node stopped: after a clean shutdown every record was fsynced, so damage there is
//! corruption too; after a crash, damage in the last record with nothing valid after it is a
//! torn write that was never acknowledged, and is cut off.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use depot_broker::station::{Command, NewMessage, StationConfig};
use depot_broker::{Broker, BrokerError, BrokerOptions};

async fn fill(opts: BrokerOptions, messages: usize) {
    let broker = Broker::open(opts).await.unwrap();
    broker.submit(Command::PutStation { station: "s".into(), config: StationConfig::default() }).await.unwrap();
    for i in 0..messages {
        let message = NewMessage {
            content_type: "text/plain".into(),
            headers: Vec::new(),
            payload: Bytes::from(format!("message {i} {}", "x".repeat(200))),
            idempotency_key: None,
            deliver_at: None,
        };
        broker.submit(Command::Produce { station: "s".into(), messages: vec![message] }).await.unwrap();
    }
    broker.shutdown().await.unwrap();
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

/// Flips one byte in the middle of `file`; returns the file's length, which must not change.
fn flip_middle(file: &Path) -> u64 {
    let mut bytes = std::fs::read(file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(file, &bytes).unwrap();
    bytes.len() as u64
}

async fn assert_refused(opts: BrokerOptions, file: &Path, len: u64) {
    let err = match Broker::open(opts).await {
        Ok(_) => panic!("the broker started on a corrupt {}", file.display()),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(matches!(err, BrokerError::Storage(_)), "{text}");
    assert!(text.contains(&file.display().to_string()), "error does not name {}: {text}", file.display());
    assert!(text.contains("at byte"), "error does not name the byte: {text}");
    assert_eq!(std::fs::metadata(file).unwrap().len(), len, "the corrupt file was truncated");
}

#[tokio::test]
async fn flipped_byte_in_raft_log_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let opts = BrokerOptions { snapshot_every: 1_000_000, ..BrokerOptions::new(dir.path()) };
    fill(opts.clone(), 200).await;
    let log = segments(&dir.path().join("raft/log")).into_iter().next().unwrap();
    let len = flip_middle(&log);
    assert_refused(opts.clone(), &log, len).await;
    // Still refused after a crash-style start (no clean-shutdown marker): never repaired silently.
    let _ = std::fs::remove_file(dir.path().join("clean-shutdown"));
    assert_refused(opts, &log, len).await;
}

#[tokio::test]
async fn flipped_byte_in_station_log_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let opts = BrokerOptions { snapshot_every: 20, segment_bytes: 16 << 10, ..BrokerOptions::new(dir.path()) };
    fill(opts.clone(), 300).await;
    let station_dir = std::fs::read_dir(dir.path().join("sm/stations")).unwrap().next().unwrap().unwrap().path();
    let files = segments(&station_dir);
    assert!(files.len() > 2, "expected several segments, got {files:?}");
    // A sealed segment in the middle of the log, which the snapshot covers.
    let victim = files[files.len() / 2].clone();
    let len = flip_middle(&victim);
    assert_refused(opts, &victim, len).await;
}

/// One past the last nonzero byte of `file` (a preallocated log has zeros after its data).
fn data_end(file: &Path) -> usize {
    let bytes = std::fs::read(file).unwrap();
    bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
}

/// Flips the byte `back` bytes before the end of `file`'s data; returns the file's length.
fn flip_near_end(file: &Path, back: usize) -> u64 {
    let mut bytes = std::fs::read(file).unwrap();
    let at = data_end(file) - back;
    bytes[at] ^= 0x40;
    std::fs::write(file, &bytes).unwrap();
    bytes.len() as u64
}

async fn produce_batches(opts: BrokerOptions, batches: usize, per_batch: usize) {
    let broker = Broker::open(opts).await.unwrap();
    broker.submit(Command::PutStation { station: "s".into(), config: StationConfig::default() }).await.unwrap();
    for b in 0..batches {
        let messages = (0..per_batch)
            .map(|i| NewMessage {
                content_type: "text/plain".into(),
                headers: Vec::new(),
                payload: Bytes::from(format!("batch {b} message {i}")),
                idempotency_key: None,
                deliver_at: None,
            })
            .collect();
        broker.submit(Command::Produce { station: "s".into(), messages }).await.unwrap();
    }
    broker.shutdown().await.unwrap();
}

async fn stored_messages(opts: BrokerOptions) -> u64 {
    let broker = Broker::open(opts).await.unwrap();
    let messages = broker.station("s").await.unwrap().stats.messages;
    broker.shutdown().await.unwrap();
    messages
}

#[tokio::test]
async fn damaged_raft_tail_after_a_clean_shutdown_refuses_to_start_every_time() {
    for preallocate in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let opts = BrokerOptions {
            snapshot_every: 1_000_000,
            preallocate_raft_log: preallocate,
            ..BrokerOptions::new(dir.path())
        };
        produce_batches(opts.clone(), 2, 100).await;
        assert!(dir.path().join("clean-shutdown").exists());
        let log = dir.path().join("raft/log/00000000000000000000.log");
        let len = flip_near_end(&log, 20);
        assert_refused(opts.clone(), &log, len).await;
        let err = Broker::open(opts.clone()).await.err().unwrap().to_string();
        assert!(err.contains("shut down cleanly"), "{err}");
        // The marker stays, so a second start does not mistake the damage for a torn write.
        assert!(dir.path().join("clean-shutdown").exists());
        assert_refused(opts, &log, len).await;
    }
}

#[tokio::test]
async fn damaged_last_raft_record_after_a_crash_is_cut_off_as_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let opts = BrokerOptions { snapshot_every: 1_000_000, ..BrokerOptions::new(dir.path()) };
    produce_batches(opts.clone(), 2, 100).await;
    let log = dir.path().join("raft/log/00000000000000000000.log");
    flip_near_end(&log, 20);
    // As after a crash: the last record's write may have been torn, and was never acknowledged.
    std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
    assert_eq!(stored_messages(opts).await, 100, "the torn last batch is cut off, the first one kept");
}

#[tokio::test]
async fn damage_before_a_valid_raft_record_after_a_crash_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let opts = BrokerOptions { snapshot_every: 1_000_000, ..BrokerOptions::new(dir.path()) };
    produce_batches(opts.clone(), 3, 100).await;
    let log = dir.path().join("raft/log/00000000000000000000.log");
    std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
    // Half a batch before the last one begins, in the middle of the second batch's record: a
    // valid record follows, so this cannot be a torn write.
    let batch = data_end(&log) / 3;
    let len = flip_near_end(&log, batch * 3 / 2);
    assert_refused(opts, &log, len).await;
}
