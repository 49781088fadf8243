//! Each consumer group's lag over the last hour, for the dashboard's chart: the node samples every
//! group it has applied every [`SAMPLE_EVERY`] and keeps the samples in memory (so a restart
//! starts an empty history, and each node of a cluster keeps its own).
//!
//! Bounded: at most [`MAX_SAMPLES`] per group (an hour of samples) and [`MAX_GROUPS`] groups; a
//! group that is deleted (or whose station is deleted, or deleted and created again) loses its
//! history at the next sample. Past the group cap, groups not yet followed are not recorded
//! until others go: the followed ones keep a continuous line rather than all of them thinning.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use depot_broker::station::StationView;
use serde::Serialize;

/// How often every group's lag is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// How far back the history goes, in milliseconds.
pub const KEEP_MS: i64 = 3600 * 1000;
/// Samples kept per group: an hour of them, and one more for the sample that starts the hour.
pub const MAX_SAMPLES: usize = (KEEP_MS as u128 / SAMPLE_EVERY.as_millis()) as usize + 1;
/// Groups followed at most: with [`MAX_SAMPLES`] samples of 24 bytes each, about 8.7 MB.
pub const MAX_GROUPS: usize = 1000;

/// One group's figures at one time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Messages the group has not yet acked or dead-lettered.
    pub lag: u64,
    /// Deliveries in flight.
    pub pending: u64,
}

/// A group as it is followed: by station incarnation too, so a station deleted and created
/// again under the same name starts a new history.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    station: String,
    station_id: u64,
    group: String,
}

/// The histories, behind a lock held only to copy in or out.
#[derive(Debug, Default)]
pub struct LagHistory {
    groups: Mutex<HashMap<Key, VecDeque<Sample>>>,
}

/// One group's figures as a sample sees them.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    pub station: &'a str,
    /// The station's incarnation.
    pub station_id: u64,
    pub group: &'a str,
    pub lag: u64,
    pub pending: u64,
}

/// Every group of `stations`.
pub fn observed(stations: &[StationView]) -> impl Iterator<Item = Observed<'_>> {
    stations.iter().flat_map(|s| {
        s.groups.iter().map(move |g| Observed {
            station: &s.name,
            station_id: s.id,
            group: &g.name,
            lag: g.lag,
            pending: g.pending,
        })
    })
}

impl LagHistory {
    /// Records one sample of every group in `groups` (all the groups there are), taken at
    /// `now_ms`; forgets groups that are gone and samples older than an hour.
    pub fn record<'a>(&self, now_ms: i64, groups: impl IntoIterator<Item = Observed<'a>>) {
        let groups: Vec<(Key, Sample)> = groups
            .into_iter()
            .map(|g| {
                let key = Key { station: g.station.to_owned(), station_id: g.station_id, group: g.group.to_owned() };
                (key, Sample { at_ms: now_ms, lag: g.lag, pending: g.pending })
            })
            .collect();
        let present: HashSet<&Key> = groups.iter().map(|(key, _)| key).collect();
        let mut history = self.groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Gone groups first, so their room goes to new ones in this same sample.
        history.retain(|key, _| present.contains(key));
        for (key, sample) in groups {
            if history.contains_key(&key) || history.len() < MAX_GROUPS {
                let samples = history.entry(key).or_default();
                samples.push_back(sample);
                trim(samples, now_ms);
            }
        }
    }

    /// Samples every group this node has applied, now.
    pub fn sample(&self, broker: &depot_broker::Broker) {
        let stations = broker.stations_now();
        self.record(chrono::Utc::now().timestamp_millis(), observed(&stations));
    }

    /// Samples every [`SAMPLE_EVERY`], the first right away, until the task is aborted.
    pub fn start(self: &std::sync::Arc<Self>, broker: depot_broker::Broker) -> tokio::task::JoinHandle<()> {
        let history = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                history.sample(&broker);
            }
        })
    }

    /// The samples of `group` of `station`, oldest first (empty for a group not followed).
    pub fn samples(&self, station: &str, group: &str) -> Vec<Sample> {
        let groups = self.groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // At most one incarnation of a station is followed: `record` drops the others.
        groups
            .iter()
            .find(|(key, _)| key.station == station && key.group == group)
            .map(|(_, samples)| samples.iter().copied().collect())
            .unwrap_or_default()
    }

    /// How many groups are followed.
    pub fn groups(&self) -> usize {
        self.groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

/// Drops samples older than the hour, then the oldest beyond the cap (a clock that jumps back
/// could otherwise keep more).
fn trim(samples: &mut VecDeque<Sample>, now_ms: i64) {
    while samples.front().is_some_and(|s| s.at_ms < now_ms - KEEP_MS) {
        samples.pop_front();
    }
    while samples.len() > MAX_SAMPLES {
        samples.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A station as `(name, id, &[(group, lag)])`.
    type Station<'a> = (&'a str, u64, &'a [(&'a str, u64)]);

    /// Every group of `stations`.
    fn groups<'a>(stations: &'a [Station<'a>]) -> Vec<Observed<'a>> {
        stations
            .iter()
            .flat_map(|(station, station_id, groups)| {
                groups.iter().map(move |(group, lag)| Observed {
                    station,
                    station_id: *station_id,
                    group,
                    lag: *lag,
                    pending: 0,
                })
            })
            .collect()
    }

    #[test]
    fn samples_accumulate_and_older_than_an_hour_are_dropped() {
        let history = LagHistory::default();
        for i in 0..400 {
            history.record(i * 10_000, groups(&[("s", 1, &[("g", i as u64)])]));
        }
        let samples = history.samples("s", "g");
        assert_eq!(samples.len(), MAX_SAMPLES);
        assert_eq!(samples.last().map(|s| (s.at_ms, s.lag)), Some((3_990_000, 399)));
        assert_eq!(samples[0].at_ms, 3_990_000 - KEEP_MS);
        assert!(history.samples("s", "other").is_empty());
    }

    #[test]
    fn deleted_groups_and_stations_lose_their_history() {
        let history = LagHistory::default();
        history.record(0, groups(&[("s", 1, &[("a", 1), ("b", 2)]), ("t", 2, &[("c", 3)])]));
        history.record(10_000, groups(&[("s", 1, &[("a", 4)])]));
        assert_eq!(history.groups(), 1);
        assert_eq!(history.samples("s", "a").len(), 2);
        assert!(history.samples("s", "b").is_empty() && history.samples("t", "c").is_empty());
        // Created again under the same name: a new history.
        history.record(20_000, groups(&[("s", 7, &[("a", 0)])]));
        assert_eq!(history.samples("s", "a"), [Sample { at_ms: 20_000, lag: 0, pending: 0 }]);
    }

    #[test]
    fn past_the_group_cap_new_groups_wait_for_room() {
        let history = LagHistory::default();
        let names: Vec<String> = (0..=MAX_GROUPS).map(|i| format!("g{i:05}")).collect();
        let many: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        history.record(0, groups(&[("s", 1, &many)]));
        assert_eq!(history.groups(), MAX_GROUPS);
        let last = names[MAX_GROUPS].as_str();
        assert!(history.samples("s", last).is_empty());
        // One followed group goes; the one left out is followed from the next sample on.
        history.record(10_000, groups(&[("s", 1, &many[1..])]));
        assert_eq!(history.groups(), MAX_GROUPS);
        assert_eq!(history.samples("s", last).len(), 1);
    }
}
