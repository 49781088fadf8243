//! `inspect` on real data dirs, the choice of the latest store, and the cluster identity checks
//! of `Broker::open`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use depot_broker::cluster::ClusterOptions;
use depot_broker::inspect::{inspect, latest, InspectError, Position};
use depot_broker::station::{Command, NewMessage, StationConfig};
use depot_broker::{Broker, BrokerError, BrokerOptions};

fn message(i: usize) -> NewMessage {
    NewMessage {
        content_type: "text/plain".into(),
        headers: Vec::new(),
        payload: Bytes::from(format!("message {i}")),
        idempotency_key: None,
        deliver_at: None,
    }
}

/// Opens the broker, produces `messages` one per entry, and returns it still running.
async fn open_and_produce(opts: BrokerOptions, messages: usize) -> Broker {
    let broker = Broker::open(opts).await.unwrap();
    broker.submit(Command::PutStation { station: "s".into(), config: StationConfig::default() }).await.unwrap();
    for i in 0..messages {
        broker.submit(Command::Produce { station: "s".into(), messages: vec![message(i)] }).await.unwrap();
    }
    broker
}

async fn produce_and_stop(opts: BrokerOptions, messages: usize) -> Broker {
    let broker = open_and_produce(opts, messages).await;
    broker.shutdown().await.unwrap();
    broker
}

fn options(dir: &Path) -> BrokerOptions {
    BrokerOptions { snapshot_every: 1_000_000, ..BrokerOptions::new(dir) }
}

/// Every file under `dir` with its contents, to prove a reader changed nothing.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for (path, bytes) in tree(from) {
        let target = to.join(path.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
}

#[tokio::test]
async fn clean_shutdown_reads_clean_with_the_last_position() {
    let dir = tempfile::tempdir().unwrap();
    let broker = produce_and_stop(options(dir.path()), 20).await;
    let before = tree(dir.path());
    let first = inspect(dir.path()).unwrap();
    assert_eq!(tree(dir.path()), before, "inspect changed the data dir");

    assert!(first.clean, "{first:?}");
    assert_eq!(first.cluster_id.as_deref(), Some(broker.cluster_id()));
    assert_eq!(first.node_id, Some(1));
    let last = first.last.unwrap();
    // The membership entry, the leader's blank entry, the station and 20 messages.
    assert!(last.index >= 22, "{first:?}");
    assert!(last.term >= 1, "{first:?}");
    let vote = first.vote.unwrap();
    assert_eq!((vote.term, vote.voted_for, vote.committed), (last.term, Some(1), true));
    assert!(first.notes.is_empty(), "{first:?}");

    // A restart adds the leader's blank entry (a single voter resumes its committed vote, so
    // the term stays) and the three messages.
    produce_and_stop(options(dir.path()), 3).await;
    let second = inspect(dir.path()).unwrap();
    let next = second.last.unwrap();
    assert!(next.term >= last.term && next.index == last.index + 4, "{first:?} then {second:?}");
    assert_eq!(second.cluster_id, first.cluster_id);
    assert!(second.clean);
}

#[tokio::test]
async fn a_node_that_did_not_shut_down_reads_dirty() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_and_produce(options(dir.path()), 10).await;
    // While it runs: no marker (it was consumed on open), the log readable beside the writer.
    let running = inspect(dir.path()).unwrap();
    assert!(!running.clean, "{running:?}");
    assert!(running.last.unwrap().index >= 12, "{running:?}");
    drop(broker);
    let dropped = inspect(dir.path()).unwrap();
    assert!(!dropped.clean, "{dropped:?}");
    assert_eq!(dropped.last, running.last);
}

#[tokio::test]
async fn snapshot_gives_a_known_committed_index() {
    let dir = tempfile::tempdir().unwrap();
    let opts = BrokerOptions { snapshot_every: 10, ..BrokerOptions::new(dir.path()) };
    produce_and_stop(opts, 40).await;
    let store = inspect(dir.path()).unwrap();
    let committed = store.committed_index.expect("a snapshot was built");
    // The first snapshot is due once 10 entries are applied: indexes 0 to 9 (the log starts with
    // the initial membership at 0). It is often built a little later, at a higher index.
    assert!(committed >= 9 && committed <= store.last.unwrap().index, "{store:?}");
}

#[tokio::test]
async fn torn_tail_is_a_note_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    produce_and_stop(options(dir.path()), 5).await;
    let clean = inspect(dir.path()).unwrap();
    let log_dir = dir.path().join("raft/log");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&log_dir).unwrap().map(|e| e.unwrap().path()).collect();
    segments.retain(|p| p.extension().is_some_and(|x| x == "log"));
    segments.sort();
    let last_segment = segments.pop().unwrap();
    let mut bytes = std::fs::read(&last_segment).unwrap();
    bytes.extend_from_slice(&[0x5e, 0xa5, 0x70, 0xd3, 9, 9]); // a record header cut short
    std::fs::write(&last_segment, &bytes).unwrap();
    std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();

    let torn = inspect(dir.path()).unwrap();
    assert_eq!(torn.last, clean.last);
    assert!(!torn.clean);
    assert_eq!(torn.notes.len(), 1, "{torn:?}");
    assert!(torn.notes[0].contains("torn write") && torn.notes[0].contains("cuts it off"), "{torn:?}");
    assert_eq!(std::fs::read(&last_segment).unwrap(), bytes, "inspect repaired the tail");
}

#[tokio::test]
async fn latest_is_highest_term_then_index_then_clean() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    produce_and_stop(options(a.path()), 2).await;
    produce_and_stop(options(b.path()), 30).await;
    let stores = vec![inspect(a.path()).unwrap(), inspect(b.path()).unwrap()];
    assert_eq!(stores[0].last.unwrap().term, stores[1].last.unwrap().term, "{stores:?}");
    assert_eq!(latest(&stores), Some(1), "same term, more entries: {stores:?}");

    // A higher term beats a longer log of an older term (a single node keeps its term across
    // restarts, so the term is raised by hand here).
    let mut stores = stores;
    stores[0].last = stores[0].last.map(|p| Position { term: p.term + 1, ..p });
    assert!(stores[0].last.unwrap().index < stores[1].last.unwrap().index, "{stores:?}");
    assert_eq!(latest(&stores), Some(0), "higher term: {stores:?}");

    // A dirty copy of `a` ties with it on (term, index): the clean one wins, whatever the order.
    let c = tempfile::tempdir().unwrap();
    copy_dir(a.path(), c.path());
    std::fs::remove_file(c.path().join("clean-shutdown")).unwrap();
    let stores = vec![inspect(c.path()).unwrap(), inspect(a.path()).unwrap()];
    assert_eq!(stores[0].last, stores[1].last);
    assert_eq!(latest(&stores), Some(1), "{stores:?}");
    assert_eq!(latest(&[]), None);
}

#[test]
fn missing_and_foreign_dirs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    assert!(matches!(inspect(&missing), Err(InspectError::Missing { .. })));
    let err = inspect(dir.path()).unwrap_err();
    assert!(matches!(err, InspectError::NotADataDir { .. }), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(inspect(&file), Err(InspectError::NotADataDir { .. })));
}

#[tokio::test]
async fn another_clusters_data_dir_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = BrokerOptions { cluster_id: Some("alpha".into()), ..options(dir.path()) };
    let broker = produce_and_stop(alpha.clone(), 1).await;
    assert_eq!(broker.cluster_id(), "alpha");
    let before = tree(dir.path());

    let beta = BrokerOptions { cluster_id: Some("beta".into()), ..options(dir.path()) };
    let err = Broker::open(beta).await.err().expect("opened another cluster's data dir");
    assert!(matches!(err, BrokerError::DataDir(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("belongs to cluster alpha, this node was started for cluster beta"), "{text}");
    assert_eq!(tree(dir.path()), before, "a refused start changed the data dir");

    let node2 = BrokerOptions { node_id: 2, ..alpha.clone() };
    let err = Broker::open(node2).await.err().expect("opened node 1's data dir as node 2");
    let text = err.to_string();
    assert!(matches!(err, BrokerError::DataDir(_)), "{text}");
    assert!(text.contains("belongs to node 1 of cluster alpha, this node was started as node 2"), "{text}");
    assert_eq!(tree(dir.path()), before, "a refused start changed the data dir");

    // Without an expected id, the stored one is used.
    let broker = Broker::open(options(dir.path())).await.unwrap();
    assert_eq!(broker.cluster_id(), "alpha");
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_data_dir_in_use_is_refused_until_its_broker_stops() {
    let dir = tempfile::tempdir().unwrap();
    let first = open_and_produce(options(dir.path()), 3).await;
    let err = Broker::open(options(dir.path())).await.err().expect("opened a data dir another broker holds");
    let text = err.to_string();
    assert!(matches!(err, BrokerError::DataDir(_)), "{text}");
    let pid = std::process::id();
    assert!(text.contains(&format!("is in use by another depot process (pid {pid})")), "{text}");
    assert!(text.contains(&dir.path().display().to_string()), "{text}");

    // Inspection reads a running node's dir without taking it over, and says so.
    let running = inspect(dir.path()).unwrap();
    assert_eq!(running.running.map(|r| r.pid), Some(Some(pid)));
    assert!(running.notes.iter().any(|n| n.contains(&format!("(pid {pid}) holds this dir"))), "{:?}", running.notes);
    assert!(!running.clean);
    first.submit(Command::Produce { station: "s".into(), messages: vec![message(99)] }).await.unwrap();
    first.shutdown().await.unwrap();

    let stopped = inspect(dir.path()).unwrap();
    assert!(stopped.clean && stopped.running.is_none(), "{stopped:?}");
    let second = Broker::open(options(dir.path())).await.unwrap();
    second.shutdown().await.unwrap();
    assert!(inspect(dir.path()).unwrap().clean);
}

#[tokio::test]
async fn a_new_data_dir_gets_a_random_cluster_id_that_stays() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    let first = produce_and_stop(options(one.path()), 0).await.cluster_id().to_owned();
    let other = produce_and_stop(options(two.path()), 0).await.cluster_id().to_owned();
    assert_eq!(first.len(), 32, "{first}");
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
    assert_ne!(first, other);
    let again = produce_and_stop(options(one.path()), 0).await.cluster_id().to_owned();
    assert_eq!(again, first);

    let bad = BrokerOptions { cluster_id: Some("has space".into()), ..options(one.path()) };
    assert!(matches!(Broker::open(bad).await, Err(BrokerError::DataDir(_))));
}

#[tokio::test]
async fn a_new_cluster_node_without_a_cluster_id_is_refused_saying_what_to_add() {
    let dir = tempfile::tempdir().unwrap();
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (listener, other) = (bind(), bind());
    let (me, other) = (listener.local_addr().unwrap(), other.local_addr().unwrap());
    let mut opts = BrokerOptions { node_id: 1, ..options(dir.path()) };
    opts.cluster = Some(ClusterOptions {
        listener: std::sync::Arc::new(listener),
        secret: "a cluster secret of some length".into(),
        peers: vec![(1, me.to_string()), (2, other.to_string())],
        api_addr: "api-1:1".into(),
        wait_for: 1,
        startup: Default::default(),
        tls: None,
    });
    let err = Broker::open(opts.clone()).await.err().expect("a new cluster node started without a cluster id");
    let text = err.to_string();
    assert!(matches!(err, BrokerError::DataDir(_)), "{text}");
    assert!(text.contains("--cluster-id") && text.contains(&dir.path().display().to_string()), "{text}");
    assert!(!dir.path().join("cluster-identity").exists(), "the refused dir got an identity");

    // With the id it starts; afterwards the dir's own id is enough.
    let broker = Broker::open(BrokerOptions { cluster_id: Some("prod".into()), ..opts.clone() }).await.unwrap();
    broker.shutdown().await.unwrap();
    let broker = Broker::open(opts).await.unwrap();
    assert_eq!(broker.cluster_id(), "prod");
    broker.shutdown().await.unwrap();
}
