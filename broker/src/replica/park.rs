//! Long polls parked where the proposer sees them. A fetch that found nothing waits here; the
//! next entry that stores messages on its station carries the fetch along, after the produce.
//! The waiting consumer's deliveries are then decided by the producer's entry, in the same apply,
//! instead of by an entry of their own proposed once that apply woke it.
//!
//! Nothing here is replicated: a carried fetch is an ordinary command in the entry, applied the
//! same way on every node. A parked fetch that is never carried costs nothing; its long poll
//! still wakes on every change of the state and takes its own entry then, as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::Pending;
use crate::error::BrokerError;
use crate::raft::Applied;
use crate::station::Command;

struct Parked {
    id: u64,
    group: String,
    max_messages: u32,
    pending: Pending,
}

/// The fetches parked on this node, by station.
#[derive(Default)]
pub(crate) struct ParkedFetches {
    next_id: AtomicU64,
    count: AtomicUsize,
    by_station: Mutex<HashMap<String, Vec<Parked>>>,
}

/// One parked fetch, as its long poll holds it. Dropped while still parked, it unparks.
pub(crate) struct Ticket {
    fetches: Arc<ParkedFetches>,
    station: String,
    id: u64,
    parked: bool,
    /// The outcome of the entry that carried the fetch, if one did.
    pub(crate) reply: oneshot::Receiver<Result<Applied, BrokerError>>,
}

impl ParkedFetches {
    /// Parks `command`, a fetch of `group` on `station` for up to `max_messages`.
    pub(crate) fn park(self: &Arc<Self>, station: &str, group: &str, max_messages: u32, command: Command) -> Ticket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        let parked = Parked { id, group: group.to_owned(), max_messages, pending: Pending::new(command, reply) };
        let mut by_station = self.by_station.lock().unwrap_or_else(|p| p.into_inner());
        by_station.entry(station.to_owned()).or_default().push(parked);
        self.count.fetch_add(1, Ordering::Relaxed);
        Ticket { fetches: self.clone(), station: station.to_owned(), id, parked: true, reply: rx }
    }

    /// Fetches parked now.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Takes the parked fetches that `batch`'s new messages can serve, oldest first: per group of
    /// each station written to, fetches until their `max_messages` cover the messages stored
    /// there. A source's deliveries count for the station `source_station` names. The caller
    /// proposes them after `batch`, in the same entry.
    pub(crate) fn carry(&self, batch: &[Pending], source_station: impl Fn(&str) -> Option<String>) -> Vec<Pending> {
        if self.len() == 0 {
            return Vec::new();
        }
        let mut stored: HashMap<String, u64> = HashMap::new();
        for p in batch {
            let (station, count) = match &p.command {
                Command::Produce { station, messages } => (station.clone(), messages.len()),
                Command::Ingest { source, .. } => match source_station(source) {
                    Some(station) => (station, 1),
                    None => continue,
                },
                _ => continue,
            };
            *stored.entry(station).or_default() += count as u64;
        }
        let mut carried = Vec::new();
        let mut by_station = self.by_station.lock().unwrap_or_else(|p| p.into_inner());
        for (station, count) in stored {
            let Some(parked) = by_station.get_mut(&station) else { continue };
            let mut covered: HashMap<String, u64> = HashMap::new();
            let mut kept = Vec::with_capacity(parked.len());
            for p in parked.drain(..) {
                let served = covered.entry(p.group.clone()).or_default();
                if *served < count {
                    *served += u64::from(p.max_messages.max(1));
                    carried.push(p.pending);
                } else {
                    kept.push(p);
                }
            }
            if kept.is_empty() {
                by_station.remove(&station);
            } else {
                *parked = kept;
            }
        }
        self.count.fetch_sub(carried.len(), Ordering::Relaxed);
        carried
    }

    /// Removes the fetch `id` if it is still parked.
    fn unpark(&self, station: &str, id: u64) -> bool {
        let mut by_station = self.by_station.lock().unwrap_or_else(|p| p.into_inner());
        let Some(parked) = by_station.get_mut(station) else { return false };
        let Some(i) = parked.iter().position(|p| p.id == id) else { return false };
        parked.remove(i);
        if parked.is_empty() {
            by_station.remove(station);
        }
        self.count.fetch_sub(1, Ordering::Relaxed);
        true
    }
}

impl Ticket {
    /// Takes the fetch back: `true` if it was still parked (no answer will come), `false` if an
    /// entry carries it (its answer comes on `reply`, and the deliveries in it are this fetch's).
    pub(crate) fn unpark(&mut self) -> bool {
        let unparked = self.parked && self.fetches.unpark(&self.station, self.id);
        self.parked = false;
        unparked
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.parked {
            self.fetches.unpark(&self.station, self.id);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::station::NewMessage;

    fn fetch(station: &str, group: &str) -> Command {
        Command::Fetch { station: station.into(), group: group.into(), max_messages: 2, max_bytes: None }
    }

    fn produce(station: &str, n: usize) -> Pending {
        let message = NewMessage {
            content_type: "text/plain".into(),
            headers: Vec::new(),
            payload: Bytes::from_static(b"x"),
            idempotency_key: None,
            deliver_at: None,
        };
        let (reply, _) = oneshot::channel();
        Pending::new(Command::Produce { station: station.into(), messages: vec![message; n] }, reply)
    }

    fn no_sources(_: &str) -> Option<String> {
        None
    }

    fn ingest(source: &str) -> Pending {
        let Command::Produce { mut messages, .. } = produce("", 1).command else { unreachable!() };
        let (reply, _) = oneshot::channel();
        let command =
            Command::Ingest { source: source.into(), token_hash: Default::default(), message: messages.remove(0) };
        Pending::new(command, reply)
    }

    fn groups(carried: &[Pending]) -> Vec<String> {
        carried
            .iter()
            .map(|p| match &p.command {
                Command::Fetch { station, group, .. } => format!("{station}/{group}"),
                other => panic!("carried {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_produce_carries_enough_fetches_of_each_group_oldest_first() {
        let fetches = Arc::new(ParkedFetches::default());
        let _a1 = fetches.park("s", "a", 2, fetch("s", "a"));
        let _a2 = fetches.park("s", "a", 2, fetch("s", "a"));
        let mut a3 = fetches.park("s", "a", 2, fetch("s", "a"));
        let _b1 = fetches.park("s", "b", 2, fetch("s", "b"));
        let mut other = fetches.park("t", "a", 2, fetch("t", "a"));
        assert_eq!(fetches.len(), 5);

        // Three messages on `s`: two fetches of `a` (2 each) cover them, one of `b` is carried.
        let carried = fetches.carry(&[produce("s", 1), produce("s", 2)], no_sources);
        let mut names = groups(&carried);
        names.sort();
        assert_eq!(names, ["s/a", "s/a", "s/b"]);
        assert_eq!(fetches.len(), 2);
        // Still parked: the third of `a`, and the one on another station.
        assert!(a3.unpark());
        assert!(!a3.unpark(), "unparked twice");
        assert!(other.unpark());
        assert_eq!(fetches.len(), 0);
    }

    #[test]
    fn a_source_delivery_carries_fetches_of_its_station() {
        let fetches = Arc::new(ParkedFetches::default());
        let _s = fetches.park("s", "a", 1, fetch("s", "a"));
        let _t = fetches.park("t", "a", 1, fetch("t", "a"));
        let station_of = |source: &str| (source == "hook").then(|| "t".to_owned());
        assert!(fetches.carry(&[ingest("gone")], station_of).is_empty(), "a source it cannot find carries nothing");
        assert_eq!(groups(&fetches.carry(&[ingest("hook")], station_of)), ["t/a"]);
        assert_eq!(fetches.len(), 1);
    }

    #[test]
    fn a_carried_fetch_cannot_be_unparked_and_its_answer_comes_on_the_ticket() {
        let fetches = Arc::new(ParkedFetches::default());
        let mut ticket = fetches.park("s", "a", 10, fetch("s", "a"));
        let carried = fetches.carry(&[produce("s", 1)], no_sources);
        assert_eq!(carried.len(), 1);
        assert!(!ticket.unpark(), "a carried fetch is in an entry: its answer must be awaited");
        let pending = carried.into_iter().next().unwrap();
        pending.reply.send(Err(BrokerError::ShuttingDown)).unwrap();
        assert!(matches!(ticket.reply.try_recv(), Ok(Err(BrokerError::ShuttingDown))));
    }

    #[test]
    fn nothing_is_carried_without_new_messages_and_a_dropped_ticket_unparks() {
        let fetches = Arc::new(ParkedFetches::default());
        let ticket = fetches.park("s", "a", 10, fetch("s", "a"));
        assert!(fetches.carry(&[produce("s", 0), produce("t", 3)], no_sources).is_empty());
        let (reply, _) = oneshot::channel();
        assert!(fetches.carry(&[Pending::new(Command::Tick, reply)], no_sources).is_empty());
        assert_eq!(fetches.len(), 1);
        drop(ticket);
        assert_eq!(fetches.len(), 0);
        assert!(fetches.by_station.lock().unwrap().is_empty(), "an emptied station stays listed");
    }

    /// A broker with stations `stations`, group `g` on `s`, its receipt key set (so a long poll
    /// proposes nothing before it parks), and a 60 s long poll of `s`/`g`, parked.
    async fn parked_long_poll(
        dir: &std::path::Path,
        stations: &[&str],
    ) -> (crate::Broker, tokio::task::JoinHandle<Result<crate::Fetched, BrokerError>>) {
        use std::time::{Duration, Instant};

        use crate::station::{GroupConfig, StationConfig};

        let broker = crate::Broker::open(crate::BrokerOptions::new(dir)).await.unwrap();
        for station in stations {
            let put = Command::PutStation { station: (*station).into(), config: StationConfig::default() };
            broker.submit(put).await.unwrap();
        }
        let put_group = Command::PutGroup { station: "s".into(), group: "g".into(), config: GroupConfig::default() };
        broker.submit(put_group).await.unwrap();
        assert!(broker.fetch("s", "g", 10, None, Duration::ZERO).await.unwrap().deliveries.is_empty());

        let poller = {
            let broker = broker.clone();
            tokio::spawn(async move { broker.fetch("s", "g", 10, None, Duration::from_secs(60)).await })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while broker.replica.parked.len() == 0 {
            assert!(Instant::now() < deadline, "the long poll never parked");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (broker, poller)
    }

    #[tokio::test]
    async fn a_waiting_fetch_rides_in_the_entry_of_the_produce_that_serves_it() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, poller) = parked_long_poll(dir.path(), &["s"]).await;
        let station = "s".to_owned();
        let before = broker.raft_status().await.last_log_index;
        let message = produce(&station, 1).command;
        broker.submit(message).await.unwrap();
        let fetched = poller.await.unwrap().unwrap();
        assert_eq!(fetched.messages.len(), 1);
        assert_eq!(fetched.messages[0].payload, Bytes::from_static(b"x"));
        assert_eq!(fetched.receipts.len(), 1);
        let after = broker.raft_status().await.last_log_index;
        assert_eq!(after - before, 1, "the fetch took an entry of its own instead of the produce's");
        assert_eq!(broker.replica.parked.len(), 0);

        // The receipt it handed out settles like any other.
        let acked = broker.settle("s", "g", &fetched.receipts, crate::station::SettleOp::Ack).await.unwrap();
        assert_eq!(acked, vec![crate::station::ReceiptResult::Ok]);
        broker.shutdown().await.unwrap();
    }

    /// A long poll waits through entries that touch other stations without waking: it was parked
    /// once, not again after each of them (it failed with one park per produce on `other`).
    #[tokio::test]
    async fn a_long_poll_sleeps_through_produces_on_other_stations() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, poller) = parked_long_poll(dir.path(), &["s", "other"]).await;
        let parks = broker.replica.parked.next_id.load(Ordering::Relaxed);
        for _ in 0..20 {
            broker.submit(produce("other", 1).command).await.unwrap();
        }
        // Each produce above was applied before its submit returned; a poll woken by one would
        // have parked again by the time the next was applied, or be running now: give it the
        // chance to, then count.
        tokio::task::yield_now().await;
        assert_eq!(broker.replica.parked.len(), 1);
        assert_eq!(
            broker.replica.parked.next_id.load(Ordering::Relaxed),
            parks,
            "the long poll on s woke (and parked again) for produces on another station"
        );

        // Its own station still wakes it, and a change to a group of it does too.
        broker.submit(produce("s", 1).command).await.unwrap();
        let fetched = poller.await.unwrap().unwrap();
        assert_eq!(fetched.messages.len(), 1);
        broker.shutdown().await.unwrap();
    }
}
