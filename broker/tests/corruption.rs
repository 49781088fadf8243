//! A byte flipped in the middle of a segment stops the node with an error that names the file
//! and the byte, and nothing is truncated.

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
