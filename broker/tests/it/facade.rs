//! The broker facade end to end: commands through openraft, the state machine and the station
//! logs, across restarts. Waiting is done by the facade's own long poll or by polling with a
//! deadline, never by sleeping.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use depot_broker::station::{
    Command, CommandError, Delivery, GroupConfig, ItemError, NewMessage, Outcome, Receipt, ReceiptResult, Retention,
    SettleOp, StationConfig,
};
use depot_broker::{Broker, BrokerError, BrokerOptions, Fetched};

const WAIT: Duration = Duration::from_secs(10);

fn msg(payload: &str) -> NewMessage {
    NewMessage {
        content_type: "text/plain".into(),
        headers: vec![("trace".into(), payload.into())],
        payload: Bytes::from(payload.to_string()),
        idempotency_key: None,
        deliver_at: None,
    }
}

fn opts(dir: &std::path::Path) -> BrokerOptions {
    BrokerOptions::new(dir)
}

async fn station(broker: &Broker, name: &str, config: StationConfig) {
    broker.submit(Command::PutStation { station: name.into(), config }).await.expect("put station");
}

async fn group(broker: &Broker, station: &str, name: &str, config: GroupConfig) {
    broker.submit(Command::PutGroup { station: station.into(), group: name.into(), config }).await.expect("put group");
}

async fn produce(broker: &Broker, station: &str, messages: Vec<NewMessage>) -> Vec<u64> {
    let applied = broker.submit(Command::Produce { station: station.into(), messages }).await.expect("produce");
    let Outcome::Produced(results) = applied.outcome else { panic!("unexpected {:?}", applied.outcome) };
    results.into_iter().map(|r| r.expect("item accepted").offset).collect()
}

fn deliveries(fetched: &Fetched) -> Vec<Delivery> {
    fetched.deliveries.clone()
}

async fn ack(broker: &Broker, station: &str, group: &str, receipts: Vec<Receipt>) -> Vec<ReceiptResult> {
    let applied =
        broker.submit(Command::Ack { station: station.into(), group: group.into(), receipts }).await.expect("ack");
    match applied.outcome {
        Outcome::Receipts(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn produce_fetch_ack_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(opts(dir.path())).await.unwrap();
    station(&broker, "orders", StationConfig::default()).await;
    group(&broker, "orders", "billing", GroupConfig::default()).await;
    let offsets = produce(&broker, "orders", vec![msg("a"), msg("b"), msg("c")]).await;
    assert_eq!(offsets, vec![0, 1, 2]);

    let fetched = broker.fetch("orders", "billing", 10, None, Duration::ZERO).await.unwrap();
    let d = deliveries(&fetched);
    assert_eq!(d.iter().map(|d| d.receipt.offset).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(fetched.messages.len(), 3);
    assert_eq!(fetched.messages[1].payload, Bytes::from_static(b"b"));
    assert_eq!(fetched.messages[1].content_type, "text/plain");
    assert_eq!(fetched.messages[1].headers, vec![("trace".to_string(), "b".to_string())]);
    assert!(d.iter().all(|d| d.attempt == 1));

    let results = ack(&broker, "orders", "billing", d.iter().map(|d| d.receipt).collect()).await;
    assert_eq!(results, vec![ReceiptResult::Ok; 3]);
    assert_eq!(ack(&broker, "orders", "billing", vec![d[0].receipt]).await, vec![ReceiptResult::Stale]);
    let view = broker.group("orders", "billing").await.unwrap();
    assert_eq!((view.lag, view.pending, view.acked_floor), (0, 0, 3));
    let empty = broker.fetch("orders", "billing", 10, None, Duration::ZERO).await.unwrap();
    assert!(deliveries(&empty).is_empty());
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn refusals_come_back_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(opts(dir.path())).await.unwrap();
    let err = broker.submit(Command::Produce { station: "nope".into(), messages: vec![msg("x")] }).await;
    assert!(matches!(err, Err(BrokerError::Command(CommandError::StationNotFound(_)))), "{err:?}");
    station(&broker, "s", StationConfig { max_message_bytes: 4, ..StationConfig::default() }).await;
    let applied =
        broker.submit(Command::Produce { station: "s".into(), messages: vec![msg("ok"), msg("too long")] }).await;
    let Outcome::Produced(results) = applied.unwrap().outcome else { panic!() };
    assert_eq!(results[0].as_ref().map(|p| p.offset), Ok(0));
    assert!(matches!(results[1], Err(ItemError::TooLarge { size: 8, limit: 4 })));
    let err = broker.fetch("s", "missing", 1, None, Duration::from_secs(1)).await;
    assert!(matches!(err, Err(BrokerError::Command(CommandError::GroupNotFound { .. }))), "{err:?}");
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn long_poll_wakes_on_produce_and_times_out_empty() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(opts(dir.path())).await.unwrap();
    station(&broker, "s", StationConfig::default()).await;
    group(&broker, "s", "g", GroupConfig::default()).await;

    let started = Instant::now();
    let empty = broker.fetch("s", "g", 10, None, Duration::from_millis(200)).await.unwrap();
    assert!(deliveries(&empty).is_empty());
    assert!(started.elapsed() >= Duration::from_millis(200), "returned before its wait ran out");

    let poller = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.fetch("s", "g", 10, None, WAIT).await })
    };
    // The poller is parked on the state; a produce must wake it well before WAIT.
    produce(&broker, "s", vec![msg("wake")]).await;
    let fetched = poller.await.unwrap().unwrap();
    assert_eq!(fetched.messages.len(), 1);
    assert_eq!(fetched.messages[0].payload, Bytes::from_static(b"wake"));
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn unacked_delivery_is_redelivered_after_ack_wait_and_old_receipt_goes_stale() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(opts(dir.path())).await.unwrap();
    station(&broker, "s", StationConfig::default()).await;
    group(&broker, "s", "g", GroupConfig { ack_wait_ms: 150, ..GroupConfig::default() }).await;
    produce(&broker, "s", vec![msg("retry me")]).await;

    let first = deliveries(&broker.fetch("s", "g", 1, None, Duration::ZERO).await.unwrap());
    assert_eq!(first.len(), 1);
    let second = deliveries(&broker.fetch("s", "g", 1, None, WAIT).await.unwrap());
    assert_eq!(second.len(), 1, "not redelivered within {WAIT:?}");
    assert_eq!(second[0].receipt.offset, 0);
    assert_eq!(second[0].attempt, 2);
    assert_eq!(ack(&broker, "s", "g", vec![first[0].receipt]).await, vec![ReceiptResult::Stale]);
    assert_eq!(ack(&broker, "s", "g", vec![second[0].receipt]).await, vec![ReceiptResult::Ok]);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn max_deliveries_dead_letters_through_the_ticker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(opts(dir.path())).await.unwrap();
    station(&broker, "s", StationConfig::default()).await;
    group(&broker, "s", "g", GroupConfig { ack_wait_ms: 50, max_deliveries: 1, ..GroupConfig::default() }).await;
    produce(&broker, "s", vec![msg("poison")]).await;
    assert_eq!(deliveries(&broker.fetch("s", "g", 1, None, Duration::ZERO).await.unwrap()).len(), 1);
    // Nobody fetches again: the leader's Tick must expire the delivery and dead-letter it.
    let deadline = Instant::now() + WAIT;
    loop {
        let dead = broker.read(|s| s.dead_letters("s")).unwrap();
        if let Some(record) = dead.first() {
            assert_eq!((record.offset, record.group.as_str(), record.attempts), (0, "g", 1));
            break;
        }
        assert!(Instant::now() < deadline, "no dead letter within {WAIT:?}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(broker.group("s", "g").await.unwrap().dead_lettered, 1);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn delayed_message_does_not_hold_back_ready_ones() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(opts(dir.path())).await.unwrap();
    station(&broker, "s", StationConfig::default()).await;
    group(&broker, "s", "g", GroupConfig::default()).await;
    let later = NewMessage { deliver_at: Some(broker.now() + 300), ..msg("later") };
    produce(&broker, "s", vec![later, msg("now")]).await;

    let first = broker.fetch("s", "g", 10, None, Duration::ZERO).await.unwrap();
    assert_eq!(first.messages.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![1]);
    let second = broker.fetch("s", "g", 10, None, WAIT).await.unwrap();
    assert_eq!(second.messages.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![0]);
    assert!(broker.now() >= second.messages[0].deliver_at, "delivered before its time");
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn state_and_messages_survive_restart_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let small = BrokerOptions { snapshot_every: 10, segment_bytes: 16 << 10, ..opts(dir.path()) };
    let broker = Broker::open(small.clone()).await.unwrap();
    station(&broker, "s", StationConfig::default()).await;
    group(&broker, "s", "g", GroupConfig::default()).await;
    for i in 0..60 {
        produce(&broker, "s", vec![msg(&format!("m{i}")), msg(&format!("n{i}"))]).await;
    }
    let fetched = deliveries(&broker.fetch("s", "g", 30, None, Duration::ZERO).await.unwrap());
    assert_eq!(fetched.len(), 30);
    ack(&broker, "s", "g", fetched[..10].iter().map(|d| d.receipt).collect()).await;
    let before = broker.group("s", "g").await.unwrap();
    broker.shutdown().await.unwrap();
    assert!(dir.path().join("sm/current").exists(), "expected at least one snapshot");

    let broker = Broker::open(small).await.unwrap();
    assert_eq!(broker.group("s", "g").await.unwrap(), before);
    assert_eq!(broker.station("s").await.unwrap().stats.messages, 120);
    // A receipt handed out before the restart still acks; one already acked is stale.
    let results = ack(&broker, "s", "g", vec![fetched[10].receipt, fetched[0].receipt]).await;
    assert_eq!(results, vec![ReceiptResult::Ok, ReceiptResult::Stale]);
    for i in 0..60u64 {
        let m = broker.message("s", 2 * i).await.unwrap().unwrap();
        assert_eq!(m.payload, Bytes::from(format!("m{i}")));
    }
    let next = deliveries(&broker.fetch("s", "g", 1, None, Duration::ZERO).await.unwrap());
    assert_eq!(next[0].receipt.offset, 30, "first deliveries continue where they stopped");
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn retention_deletes_segments_once_a_snapshot_covers_it() {
    let dir = tempfile::tempdir().unwrap();
    let small = BrokerOptions { snapshot_every: 5, segment_bytes: 8 << 10, ..opts(dir.path()) };
    let broker = Broker::open(small).await.unwrap();
    let short = StationConfig {
        retention: Retention { max_messages: Some(20), ..Retention::default() },
        ..StationConfig::default()
    };
    station(&broker, "s", short).await;
    let payload = "x".repeat(1000);
    for _ in 0..100 {
        produce(&broker, "s", vec![msg(&payload), msg(&payload)]).await;
    }
    let stats = broker.station("s").await.unwrap().stats;
    assert_eq!((stats.messages, stats.first_offset, stats.next_offset), (20, 180, 200));
    assert!(broker.message("s", 179).await.unwrap().is_none());
    assert_eq!(broker.message("s", 180).await.unwrap().unwrap().payload.len(), 1000);
    let station_dir = std::fs::read_dir(dir.path().join("sm/stations")).unwrap().next().unwrap().unwrap().path();
    // A purge may be removing files while we look: a vanished file counts as zero.
    let held = || -> u64 {
        std::fs::read_dir(&station_dir).unwrap().filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()
    };
    // 200 KB were produced; retention keeps 20 KB plus at most a snapshot interval and a segment,
    // once the snapshot the last produces asked for is durable (it is built in the background, and
    // on a loaded machine it can still be running here).
    let deadline = Instant::now() + WAIT;
    let mut bytes = held();
    while bytes >= 80 << 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        bytes = held();
    }
    assert!(bytes < 80 << 10, "station log still holds {bytes} bytes after {WAIT:?}");
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn dead_letters_page_by_id_from_the_one_copy_the_state_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(opts(dir.path())).await.unwrap();
    station(&broker, "s", StationConfig::default()).await;
    group(&broker, "s", "g", GroupConfig::default()).await;
    group(&broker, "s", "h", GroupConfig::default()).await;
    produce(&broker, "s", (0..5).map(|i| msg(&format!("{i}"))).collect()).await;
    for g in ["g", "h"] {
        let d = deliveries(&broker.fetch("s", g, 5, None, Duration::ZERO).await.unwrap());
        let receipts = d.iter().map(|d| d.receipt).collect();
        let reason = Some(format!("bad input for {g}"));
        broker.submit(Command::DeadLetter { station: "s".into(), group: g.into(), receipts, reason }).await.unwrap();
    }
    // Pages of two, all groups: ids 1-10 in order, each once.
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = broker.dead_letters("s", after, 2, false, |_| true).await.unwrap();
        assert!(page.records.len() <= 2);
        ids.extend(page.records.iter().map(|r| r.id));
        after = page.records.last().map(|r| r.id);
        if !page.more {
            break;
        }
    }
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());
    // A filtered page skips what it does not keep and still says whether more follow.
    let h = broker.dead_letters("s", None, 3, true, |r| r.group == "h").await.unwrap();
    assert_eq!(h.records.iter().map(|r| (r.id, r.offset)).collect::<Vec<_>>(), vec![(6, 0), (7, 1), (8, 2)]);
    assert!(h.more);
    let payloads: Vec<_> = h.messages.iter().map(|m| m.as_ref().map(|m| m.payload.clone())).collect();
    assert_eq!(payloads, ["0", "1", "2"].map(|p| Some(bytes::Bytes::from(p))), "messages aligned with records");
    assert!(h.records.iter().all(|r| r.last_error.as_deref() == Some("bad input for h")));
    assert!(broker.read(|s| s.outbox(10).is_empty()), "no second copy is queued for the metadata store");
    broker.shutdown().await.unwrap();

    // After a restart the same records page the same way; a deleted station takes them along.
    let broker = Broker::open(opts(dir.path())).await.unwrap();
    let all = broker.dead_letters("s", Some(8), 10, false, |_| true).await.unwrap();
    assert_eq!(all.records.iter().map(|r| r.id).collect::<Vec<_>>(), vec![9, 10]);
    assert!(!all.more);
    assert!(all.messages.is_empty(), "no messages unless asked for");
    broker.delete_station("s").await.unwrap();
    station(&broker, "s", StationConfig::default()).await;
    assert!(broker.dead_letters("s", None, 10, false, |_| true).await.unwrap().records.is_empty());
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn draining_releases_waiting_long_polls_and_commands_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(opts(dir.path())).await.unwrap();
    assert!(broker.has_leader());
    station(&broker, "s", StationConfig::default()).await;
    group(&broker, "s", "g", GroupConfig::default()).await;
    let poller = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.fetch("s", "g", 10, None, Duration::from_secs(60)).await })
    };
    broker.begin_drain();
    // Without the drain this poll would wait its full 60 s; the deadline is the test's bound.
    let fetched = tokio::time::timeout(Duration::from_secs(20), poller).await.expect("poll not released").unwrap();
    assert!(deliveries(&fetched.unwrap()).is_empty());
    assert_eq!(produce(&broker, "s", vec![msg("after drain")]).await, vec![0]);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn sealed_receipts_settle_after_a_restart_from_a_snapshot_alone() {
    let dir = tempfile::tempdir().unwrap();
    let small = BrokerOptions { snapshot_every: 3, ..opts(dir.path()) };
    let broker = Broker::open(small.clone()).await.unwrap();
    station(&broker, "s", StationConfig::default()).await;
    group(&broker, "s", "g", GroupConfig::default()).await;
    produce(&broker, "s", vec![msg("a"), msg("b")]).await;
    let fetched = broker.fetch("s", "g", 2, None, Duration::ZERO).await.unwrap();
    assert_eq!(fetched.receipts.len(), 2);
    let key = broker.receipt_key().await.unwrap();
    // Enough entries after the key's that a snapshot covers it and the log before is purged.
    for i in 0..10 {
        produce(&broker, "s", vec![msg(&format!("m{i}"))]).await;
    }
    broker.shutdown().await.unwrap();
    assert!(dir.path().join("sm/current").exists(), "expected a snapshot");

    let broker = Broker::open(small).await.unwrap();
    assert_eq!(broker.read(|s| s.receipt_key()), Some(key), "the key comes back from the snapshot");
    let results = broker.settle("s", "g", &fetched.receipts, SettleOp::Ack).await.unwrap();
    assert_eq!(results, vec![ReceiptResult::Ok; 2]);
    let mut tampered = fetched.receipts[0];
    tampered[40] ^= 1;
    let results = broker.settle("s", "g", &[tampered.to_vec(), fetched.receipts[0].to_vec()], SettleOp::Ack).await;
    assert_eq!(results.unwrap(), vec![ReceiptResult::Unknown, ReceiptResult::Stale]);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_first_fetches_agree_on_one_receipt_key() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(opts(dir.path())).await.unwrap();
    assert_eq!(broker.read(|s| s.receipt_key()), None);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let broker = broker.clone();
            tokio::spawn(async move { broker.receipt_key().await.unwrap() })
        })
        .collect();
    let mut keys = Vec::new();
    for task in tasks {
        keys.push(task.await.unwrap());
    }
    let first = keys[0];
    assert!(keys.iter().all(|k| *k == first));
    assert_eq!(broker.read(|s| s.receipt_key()), Some(first));
    broker.shutdown().await.unwrap();
}
