//! What the delivering node knows of each push group and Raft does not keep: attempts in
//! flight, counts by outcome, the latency histogram and the last attempts. Diagnostics, not
//! state: a leader change starts them afresh on the new leader. (The group's totals, last
//! times and last error are settled through Raft: see `PushStats`.)

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use depot_broker::station::Millis;

use crate::metrics::LATENCY_BUCKETS;

/// Attempts kept per group, newest first.
pub const ATTEMPTS_KEPT: usize = 1000;

/// How one attempt ended, as metrics count them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Delivered,
    /// An HTTP status that is neither 2xx nor 410.
    HttpError,
    /// 410 Gone: the group is disabled (a hook deleted).
    Gone,
    Timeout,
    ConnectionError,
    BlockedAddress,
    Redirect,
}

impl Outcome {
    const ALL: [Outcome; 7] = [
        Outcome::Delivered,
        Outcome::HttpError,
        Outcome::Gone,
        Outcome::Timeout,
        Outcome::ConnectionError,
        Outcome::BlockedAddress,
        Outcome::Redirect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::HttpError => "http_error",
            Outcome::Gone => "gone",
            Outcome::Timeout => "timeout",
            Outcome::ConnectionError => "connection_error",
            Outcome::BlockedAddress => "blocked_address",
            Outcome::Redirect => "redirect",
        }
    }
}

/// One attempt as the attempts log shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptRecord {
    /// Numbers attempts of the group on this node, for paging.
    pub seq: u64,
    pub at: Millis,
    pub offset: u64,
    pub attempt: u32,
    pub status: Option<u16>,
    pub latency: Duration,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

/// One push group's live figures on this node.
#[derive(Default)]
pub struct GroupLive {
    pub in_flight: AtomicU64,
    by_outcome: [AtomicU64; Outcome::ALL.len()],
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_nanos: AtomicU64,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    next_seq: u64,
    attempts: VecDeque<AttemptRecord>,
}

impl GroupLive {
    /// Counts one attempt and logs it (the oldest beyond [`ATTEMPTS_KEPT`] is dropped).
    pub fn record(&self, outcome: Outcome, mut record: AttemptRecord) {
        self.by_outcome[Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0)].fetch_add(1, Ordering::Relaxed);
        let seconds = record.latency.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(record.latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        record.seq = log.next_seq;
        log.next_seq += 1;
        log.attempts.push_front(record);
        log.attempts.truncate(ATTEMPTS_KEPT);
    }

    /// Attempts awaiting an answer now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Up to `limit` attempts older than `before` (a `seq`; `None`: from the newest), newest
    /// first, and whether more follow.
    pub fn attempts(&self, before: Option<u64>, limit: usize) -> (Vec<AttemptRecord>, bool) {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let mut page: Vec<AttemptRecord> =
            log.attempts.iter().filter(|a| before.is_none_or(|b| a.seq < b)).take(limit + 1).cloned().collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }
}

/// Every push group's live figures on this node, by (station, group).
#[derive(Default)]
pub struct Live {
    groups: Mutex<BTreeMap<(String, String), Arc<GroupLive>>>,
}

impl Live {
    /// The group's figures, created empty on first use.
    pub fn group(&self, station: &str, group: &str) -> Arc<GroupLive> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.entry((station.to_owned(), group.to_owned())).or_default().clone()
    }

    /// The group's figures if this node has any.
    pub fn get(&self, station: &str, group: &str) -> Option<Arc<GroupLive>> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.get(&(station.to_owned(), group.to_owned())).cloned()
    }

    /// Forgets the groups `keep` says no longer exist.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).retain(|(s, g), _| keep(s, g));
    }

    /// The push series in the Prometheus text format. `states` gives each push group's state.
    pub fn render(&self, out: &mut String, states: &[(String, String, &'static str)]) {
        let groups: Vec<((String, String), Arc<GroupLive>)> =
            self.groups.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let label = |s: &str, g: &str| format!("station=\"{}\",group=\"{}\"", escape(s), escape(g));
        let _ = writeln!(out, "# HELP depot_push_deliveries_total Push delivery attempts by outcome.");
        let _ = writeln!(out, "# TYPE depot_push_deliveries_total counter");
        for ((s, g), live) in &groups {
            for (outcome, n) in Outcome::ALL.iter().zip(&live.by_outcome) {
                let _ = writeln!(
                    out,
                    "depot_push_deliveries_total{{{},outcome=\"{}\"}} {}",
                    label(s, g),
                    outcome.as_str(),
                    n.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP depot_push_attempt_duration_seconds Push attempt latency, until the answer was read."
        );
        let _ = writeln!(out, "# TYPE depot_push_attempt_duration_seconds histogram");
        for ((s, g), live) in &groups {
            let l = label(s, g);
            for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&live.buckets) {
                let _ = writeln!(
                    out,
                    "depot_push_attempt_duration_seconds_bucket{{{l},le=\"{bound}\"}} {}",
                    bucket.load(Ordering::Relaxed)
                );
            }
            let count = live.latency_count.load(Ordering::Relaxed);
            let sum = live.latency_sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "depot_push_attempt_duration_seconds_bucket{{{l},le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "depot_push_attempt_duration_seconds_sum{{{l}}} {sum}");
            let _ = writeln!(out, "depot_push_attempt_duration_seconds_count{{{l}}} {count}");
        }
        let _ = writeln!(out, "# HELP depot_push_in_flight Push deliveries awaiting an answer.");
        let _ = writeln!(out, "# TYPE depot_push_in_flight gauge");
        for ((s, g), live) in &groups {
            let _ = writeln!(out, "depot_push_in_flight{{{}}} {}", label(s, g), live.in_flight.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# HELP depot_push_state Each push group's state: 1 for the state it is in.");
        let _ = writeln!(out, "# TYPE depot_push_state gauge");
        for (s, g, state) in states {
            for candidate in ["active", "paused", "disabled"] {
                let _ = writeln!(
                    out,
                    "depot_push_state{{{},state=\"{candidate}\"}} {}",
                    label(s, g),
                    u8::from(candidate == *state)
                );
            }
        }
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(offset: u64) -> AttemptRecord {
        AttemptRecord {
            seq: 0,
            at: 1,
            offset,
            attempt: 1,
            status: Some(500),
            latency: Duration::from_millis(3),
            error: Some("HTTP 500".into()),
            response_excerpt: None,
        }
    }

    #[test]
    fn the_log_keeps_the_newest_thousand_and_pages_newest_first() {
        let live = GroupLive::default();
        for offset in 0..1500 {
            live.record(Outcome::HttpError, attempt(offset));
        }
        let (first, more) = live.attempts(None, 600);
        assert!(more);
        assert_eq!(first[0].offset, 1499);
        let (second, more) = live.attempts(Some(first[599].seq), 600);
        assert!(!more);
        assert_eq!(second.len(), ATTEMPTS_KEPT - 600);
        assert_eq!(second.last().map(|a| a.offset), Some(500));
        assert_eq!(live.by_outcome[1].load(Ordering::Relaxed), 1500);
    }
}
