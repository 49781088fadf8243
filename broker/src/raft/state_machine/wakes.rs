//! Which waiting long polls an applied batch wakes: those on the stations it changed.
//!
//! A long poll waits until its station may have something for its group. It used to wake on
//! every applied batch, look, and park again: with 200 polls waiting on one station, single
//! POSTs to another cost 3.4 times the server CPU (docs/benchmarks.md, "Issue 19, eighth
//! step"). Each station a batch's commands act on now wakes only the polls on it. Commands
//! whose effects reach more than one station, or that the state must resolve to one (a tick,
//! an ingest whose source is gone), wake every poll, as a snapshot installed or a state
//! reloaded from disk does. What becomes ready with time alone (a delay or a lease running
//! out) is each poll's own timer, as before.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::station::{BrokerState, Command};

/// Stations an applied batch changed, as far as waiting long polls are concerned.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    all: bool,
    stations: Vec<String>,
}

impl Touched {
    /// Notes what `command`, applied to `state`, may have made ready.
    pub(crate) fn note(&mut self, state: &BrokerState, command: &Command) {
        if self.all {
            return;
        }
        let station = match command {
            // Nothing any consumer group waits for.
            Command::OutboxAdvance { .. }
            | Command::InitReceiptKey { .. }
            | Command::RotateSourceToken { .. }
            | Command::DeleteSource { .. }
            | Command::CountRejected { .. }
            | Command::TierForget { .. } => return,
            Command::Ingest { source, .. } => state.source(source).map(|source| source.config.station.as_str()),
            other => other.station(),
        };
        match station {
            Some(station) if self.stations.iter().any(|s| s == station) => {}
            Some(station) => self.stations.push(station.to_owned()),
            None => self.all = true,
        }
    }

    pub(crate) fn everything() -> Touched {
        Touched { all: true, stations: Vec::new() }
    }
}

/// The wake-ups of waiting long polls, by station.
#[derive(Debug)]
pub(crate) struct StationWakes {
    /// Only stations that someone waits on, or waited on since they last changed.
    stations: Mutex<HashMap<String, watch::Sender<()>>>,
    all: watch::Sender<()>,
}

impl StationWakes {
    pub(crate) fn new() -> StationWakes {
        StationWakes { stations: Mutex::new(HashMap::new()), all: watch::channel(()).0 }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<()>>> {
        self.stations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes from now on that may make something on `station` ready.
    pub(crate) fn subscribe(&self, station: &str) -> StationChanges {
        let mut stations = self.lock();
        let station = match stations.get(station) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(());
                stations.insert(station.to_owned(), sender);
                receiver
            }
        };
        drop(stations);
        StationChanges { station, all: self.all.subscribe() }
    }

    pub(crate) fn wake(&self, touched: &Touched) {
        if touched.all {
            self.all.send_replace(());
            return;
        }
        if touched.stations.is_empty() {
            return;
        }
        let mut stations = self.lock();
        for name in &touched.stations {
            if let Some(sender) = stations.get(name) {
                if sender.receiver_count() == 0 {
                    // Nobody waits on it any more.
                    stations.remove(name);
                } else {
                    sender.send_replace(());
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn watched(&self) -> usize {
        self.lock().len()
    }
}

/// What one long poll waits on: its station's changes, and changes to every station.
#[derive(Debug)]
pub struct StationChanges {
    station: watch::Receiver<()>,
    all: watch::Receiver<()>,
}

impl StationChanges {
    /// Resolves at the first change since the last call (or since the subscription).
    pub async fn changed(&mut self) {
        // A sender gone (the broker closed) never resolves here; the poll ends by its timer or
        // the drain that closing starts.
        let station = async {
            if self.station.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let all = async {
            if self.all.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = station => {}
            () = all => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn touched(stations: &[&str]) -> Touched {
        Touched { all: false, stations: stations.iter().map(|s| (*s).to_owned()).collect() }
    }

    async fn woken(changes: &mut StationChanges) -> bool {
        tokio::time::timeout(Duration::from_millis(20), changes.changed()).await.is_ok()
    }

    #[tokio::test]
    async fn a_poll_wakes_for_its_station_and_for_everything_but_not_for_others() {
        let wakes = StationWakes::new();
        let mut a = wakes.subscribe("a");
        wakes.wake(&touched(&["b", "c"]));
        assert!(!woken(&mut a).await, "woken by other stations");
        wakes.wake(&touched(&["b", "a"]));
        assert!(woken(&mut a).await);
        assert!(!woken(&mut a).await, "one change wakes once");
        wakes.wake(&Touched::everything());
        assert!(woken(&mut a).await);
        // A change between subscribing and waiting is not missed.
        let mut again = wakes.subscribe("a");
        wakes.wake(&touched(&["a"]));
        assert!(woken(&mut again).await);
    }

    #[test]
    fn stations_nobody_waits_on_are_forgotten_when_they_change() {
        let wakes = StationWakes::new();
        let a = wakes.subscribe("a");
        let b = wakes.subscribe("b");
        assert_eq!(wakes.watched(), 2);
        drop((a, b));
        wakes.wake(&touched(&["a"]));
        assert_eq!(wakes.watched(), 1, "a has no poll left and changed");
        wakes.wake(&touched(&["unwatched"]));
        assert_eq!(wakes.watched(), 1);
    }

    #[test]
    fn commands_without_a_waiting_consumer_wake_nothing_and_a_tick_wakes_everything() {
        let state = BrokerState::default();
        let mut t = Touched::default();
        t.note(&state, &Command::OutboxAdvance { upto: 3 });
        assert!(!t.all && t.stations.is_empty());
        t.note(&state, &Command::DeleteStation { station: "s".into() });
        t.note(&state, &Command::DeleteStation { station: "s".into() });
        assert_eq!(t.stations, vec!["s".to_owned()]);
        // A tick may make any station's deliveries due again.
        t.note(&state, &Command::Tick);
        assert!(t.all);
    }
}
