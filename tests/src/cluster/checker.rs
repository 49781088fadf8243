//! A Jepsen-style checker of a queue history (after Jepsen's `queue` / RabbitMQ's `total-queue`
//! and Redpanda's offset checks): pure logic over what clients attempted, were told and read.
//!
//! The history is of one station: offsets are that station's. Values are unique per produce
//! attempt (the workload writes `p{thread}-{seq}`, with the value as its idempotency key), so a
//! value names one logical message. A value may have several produce attempts (retries with the
//! same key); it counts as acknowledged when any response carried its offset.
//!
//! Anomalies (each must be empty for [`Report::is_valid`]):
//! - `lost`: acknowledged, never read;
//! - `duplicated`: one value read at two different offsets;
//! - `unexpected`: read, never attempted;
//! - `failed_but_read`: read, although every attempt was definitely refused (4xx);
//! - `offset_anomalies`: one offset read with two different values;
//! - `acknowledged_offset_mismatch`: read (or acknowledged) at an offset other than the one a
//!   produce acknowledged;
//! - `floor_regressions`: a group's `acked_floor` lower than an earlier observation by the same
//!   observer (this presumes group views are linearizable, i.e. answered through the leader);
//! - `redelivered_after_ack`: an offset delivered by a fetch sent after an ack of it was answered
//!   `ok` in the same group.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

/// What one produce attempt was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response carried this offset.
    Ok { offset: u64 },
    /// 503, 5xx, a timeout or a broken connection: the write may or may not have happened.
    Indeterminate,
    /// A definite refusal (4xx): not written.
    Failed { status: u16 },
}

#[derive(Clone, Debug)]
pub struct Attempt {
    pub value: String,
    pub key: String,
    /// The node the request was sent to.
    pub node: u64,
    pub outcome: Outcome,
}

/// One delivery by a fetch.
#[derive(Clone, Debug)]
pub struct Read {
    pub group: String,
    pub value: String,
    pub offset: u64,
    pub attempt: u32,
    pub node: u64,
    /// When the fetch that delivered it was sent.
    pub at: Instant,
}

/// One receipt's ack result.
#[derive(Clone, Debug)]
pub struct Ack {
    pub group: String,
    pub offset: u64,
    /// `ok`, `stale_receipt`, `unknown_receipt`, or the client's note of a failed request.
    pub result: String,
    /// When the answer arrived.
    pub at: Instant,
}

/// A group's `acked_floor` as one observer (a client thread) saw it.
#[derive(Clone, Debug)]
pub struct FloorObservation {
    pub observer: String,
    pub group: String,
    pub acked_floor: u64,
    /// The node that answered.
    pub node: u64,
    /// When the answer arrived.
    pub at: Instant,
    /// The same, from the start of the workload (to set it beside the nemesis's log).
    pub since_start: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct History {
    pub attempts: Vec<Attempt>,
    pub reads: Vec<Read>,
    pub acks: Vec<Ack>,
    pub floors: Vec<FloorObservation>,
}

impl History {
    pub fn extend(&mut self, other: History) {
        self.attempts.extend(other.attempts);
        self.reads.extend(other.reads);
        self.acks.extend(other.acks);
        self.floors.extend(other.floors);
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloorRegression {
    pub observer: String,
    pub group: String,
    pub earlier: u64,
    pub later: u64,
    /// Which node answered each, and when (ms from the workload's start): a stale read is told
    /// from a checker artefact by these.
    pub earlier_from: (u64, u128),
    pub later_from: (u64, u128),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetMismatch {
    pub value: String,
    /// Every offset a produce response gave for this value.
    pub acknowledged: Vec<u64>,
    /// Every offset it was read at.
    pub read: Vec<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Distinct values attempted.
    pub attempted: usize,
    /// Distinct values some response acknowledged with an offset.
    pub acknowledged: usize,
    /// Distinct values never acknowledged with at least one indeterminate attempt.
    pub indeterminate: usize,
    /// Distinct values every attempt of which was definitely refused.
    pub failed: usize,
    /// Produce attempts (tries, not values) answered indeterminately: how often faults hit writes.
    pub indeterminate_attempts: usize,
    /// Distinct values read.
    pub read: usize,
    /// Deliveries (reads), counting redeliveries.
    pub deliveries: usize,
    /// Indeterminate values that were read (allowed: the write happened).
    pub indeterminate_read: usize,
    /// Acks answered `ok`.
    pub acks_ok: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub lost: Vec<String>,
    /// Value, the distinct offsets it was read at.
    pub duplicated: Vec<(String, Vec<u64>)>,
    pub unexpected: Vec<String>,
    pub failed_but_read: Vec<String>,
    /// Offset, the distinct values read at it.
    pub offset_anomalies: Vec<(u64, Vec<String>)>,
    pub floor_regressions: Vec<FloorRegression>,
    pub acknowledged_offset_mismatch: Vec<OffsetMismatch>,
    /// Group, offset.
    pub redelivered_after_ack: Vec<(String, u64)>,
    pub counts: Counts,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.unexpected.is_empty()
            && self.failed_but_read.is_empty()
            && self.offset_anomalies.is_empty()
            && self.floor_regressions.is_empty()
            && self.acknowledged_offset_mismatch.is_empty()
            && self.redelivered_after_ack.is_empty()
    }
}

/// Shows the counts and, per anomaly, how many and the first few.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 10;
        fn list<T: fmt::Debug>(f: &mut fmt::Formatter<'_>, name: &str, items: &[T]) -> fmt::Result {
            if items.is_empty() {
                writeln!(f, "  {name}: none")
            } else {
                let first: Vec<&T> = items.iter().take(SHOWN).collect();
                writeln!(f, "  {name}: {} (first {}): {first:?}", items.len(), first.len())
            }
        }
        let c = &self.counts;
        writeln!(
            f,
            "history: {} attempted, {} acknowledged, {} indeterminate ({} of them read), {} refused \
             ({} tries answered indeterminately); {} values read in {} deliveries; {} acks ok",
            c.attempted,
            c.acknowledged,
            c.indeterminate,
            c.indeterminate_read,
            c.failed,
            c.indeterminate_attempts,
            c.read,
            c.deliveries,
            c.acks_ok
        )?;
        writeln!(f, "anomalies ({}):", if self.is_valid() { "none" } else { "FOUND" })?;
        list(f, "lost", &self.lost)?;
        list(f, "duplicated", &self.duplicated)?;
        list(f, "unexpected", &self.unexpected)?;
        list(f, "failed_but_read", &self.failed_but_read)?;
        list(f, "offset_anomalies", &self.offset_anomalies)?;
        list(f, "floor_regressions", &self.floor_regressions)?;
        list(f, "acknowledged_offset_mismatch", &self.acknowledged_offset_mismatch)?;
        list(f, "redelivered_after_ack", &self.redelivered_after_ack)
    }
}

/// What the attempts of one value add up to.
#[derive(Default)]
struct Fate {
    acknowledged: BTreeSet<u64>,
    indeterminate: bool,
}

pub fn check(history: &History) -> Report {
    let mut report = Report::default();

    let mut fates: BTreeMap<&str, Fate> = BTreeMap::new();
    for a in &history.attempts {
        let fate = fates.entry(a.value.as_str()).or_default();
        match a.outcome {
            Outcome::Ok { offset } => {
                fate.acknowledged.insert(offset);
            }
            Outcome::Indeterminate => {
                fate.indeterminate = true;
                report.counts.indeterminate_attempts += 1;
            }
            Outcome::Failed { .. } => {}
        }
    }

    let mut read_at: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    let mut values_at: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for r in &history.reads {
        read_at.entry(r.value.as_str()).or_default().insert(r.offset);
        values_at.entry(r.offset).or_default().insert(r.value.as_str());
    }

    for (value, fate) in &fates {
        let read = read_at.get(value);
        if !fate.acknowledged.is_empty() {
            report.counts.acknowledged += 1;
            if read.is_none() {
                report.lost.push(value.to_string());
            }
            let read_elsewhere = read.is_some_and(|offsets| offsets.iter().any(|o| !fate.acknowledged.contains(o)));
            if fate.acknowledged.len() > 1 || read_elsewhere {
                report.acknowledged_offset_mismatch.push(OffsetMismatch {
                    value: value.to_string(),
                    acknowledged: fate.acknowledged.iter().copied().collect(),
                    read: read.map(|o| o.iter().copied().collect()).unwrap_or_default(),
                });
            }
        } else if fate.indeterminate {
            report.counts.indeterminate += 1;
            if read.is_some() {
                report.counts.indeterminate_read += 1;
            }
        } else {
            report.counts.failed += 1;
            if read.is_some() {
                report.failed_but_read.push(value.to_string());
            }
        }
    }
    report.counts.attempted = fates.len();

    for (value, offsets) in &read_at {
        if !fates.contains_key(value) {
            report.unexpected.push(value.to_string());
        }
        if offsets.len() > 1 {
            report.duplicated.push((value.to_string(), offsets.iter().copied().collect()));
        }
    }
    for (offset, values) in &values_at {
        if values.len() > 1 {
            report.offset_anomalies.push((*offset, values.iter().map(|v| v.to_string()).collect()));
        }
    }
    report.counts.read = read_at.len();
    report.counts.deliveries = history.reads.len();

    // Per (observer, group), in time order: never below an earlier observation.
    let mut floors: HashMap<(&str, &str), Vec<&FloorObservation>> = HashMap::new();
    for o in &history.floors {
        floors.entry((o.observer.as_str(), o.group.as_str())).or_default().push(o);
    }
    let mut keys: Vec<_> = floors.keys().copied().collect();
    keys.sort_unstable();
    for key in keys {
        let observations = floors.get_mut(&key).unwrap();
        observations.sort_by_key(|o| o.at);
        let mut highest: Option<&FloorObservation> = None;
        for &o in observations.iter() {
            match highest {
                Some(h) if o.acked_floor < h.acked_floor => report.floor_regressions.push(FloorRegression {
                    observer: o.observer.clone(),
                    group: o.group.clone(),
                    earlier: h.acked_floor,
                    later: o.acked_floor,
                    earlier_from: (h.node, h.since_start.as_millis()),
                    later_from: (o.node, o.since_start.as_millis()),
                }),
                _ => highest = Some(o),
            }
        }
    }

    // The first `ok` ack of each (group, offset); a fetch sent after it must not deliver it.
    let mut acked: HashMap<(&str, u64), Instant> = HashMap::new();
    for a in history.acks.iter().filter(|a| a.result == "ok") {
        report.counts.acks_ok += 1;
        let at = acked.entry((a.group.as_str(), a.offset)).or_insert(a.at);
        *at = (*at).min(a.at);
    }
    let mut redelivered: BTreeSet<(&str, u64)> = BTreeSet::new();
    for r in &history.reads {
        if acked.get(&(r.group.as_str(), r.offset)).is_some_and(|at| r.at > *at) {
            redelivered.insert((r.group.as_str(), r.offset));
        }
    }
    report.redelivered_after_ack = redelivered.into_iter().map(|(g, o)| (g.to_owned(), o)).collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small history builder; times are milliseconds after one base instant.
    struct H {
        base: Instant,
        history: History,
    }

    impl H {
        fn new() -> H {
            H { base: Instant::now(), history: History::default() }
        }

        fn at(&self, ms: u64) -> Instant {
            self.base + Duration::from_millis(ms)
        }

        fn attempt(mut self, value: &str, outcome: Outcome) -> H {
            self.history.attempts.push(Attempt { value: value.into(), key: value.into(), node: 1, outcome });
            self
        }

        fn ok(self, value: &str, offset: u64) -> H {
            self.attempt(value, Outcome::Ok { offset })
        }

        fn read(self, value: &str, offset: u64) -> H {
            self.read_in("g", value, offset, 0)
        }

        fn read_in(mut self, group: &str, value: &str, offset: u64, ms: u64) -> H {
            let at = self.at(ms);
            self.history.reads.push(Read { group: group.into(), value: value.into(), offset, attempt: 1, node: 2, at });
            self
        }

        fn ack(mut self, offset: u64, result: &str, ms: u64) -> H {
            let at = self.at(ms);
            self.history.acks.push(Ack { group: "g".into(), offset, result: result.into(), at });
            self
        }

        fn floor(mut self, observer: &str, acked_floor: u64, ms: u64) -> H {
            let at = self.at(ms);
            self.history.floors.push(FloorObservation {
                observer: observer.into(),
                group: "g".into(),
                acked_floor,
                node: 3,
                at,
                since_start: Duration::from_millis(ms),
            });
            self
        }

        fn check(&self) -> Report {
            check(&self.history)
        }
    }

    /// Three acknowledged, one indeterminate that appeared, one that did not, one refused;
    /// redeliveries before the ack; floors rising per observer.
    fn clean() -> H {
        H::new()
            .ok("p0-1", 0)
            .ok("p0-2", 1)
            .attempt("p1-1", Outcome::Indeterminate)
            .ok("p1-1", 2)
            .attempt("p1-2", Outcome::Indeterminate)
            .attempt("p1-3", Outcome::Indeterminate)
            .attempt("p1-3", Outcome::Indeterminate)
            .attempt("p2-1", Outcome::Failed { status: 400 })
            .read("p0-1", 0)
            .read_in("g", "p0-1", 0, 50)
            .read("p0-2", 1)
            .read("p1-1", 2)
            .read("p1-2", 3)
            .ack(0, "stale_receipt", 40)
            .ack(0, "ok", 60)
            .ack(1, "ok", 10)
            .read_in("audit", "p0-1", 0, 100)
            .floor("c0", 0, 0)
            .floor("c0", 2, 100)
            .floor("c1", 1, 50)
            .floor("c0", 2, 200)
    }

    #[test]
    fn a_clean_history_passes_with_its_counts() {
        let report = clean().check();
        assert!(report.is_valid(), "{report}");
        assert_eq!(
            report.counts,
            Counts {
                attempted: 6,
                acknowledged: 3,
                indeterminate: 2,
                failed: 1,
                indeterminate_attempts: 4,
                read: 4,
                deliveries: 6,
                indeterminate_read: 1,
                acks_ok: 2,
            }
        );
        assert!(report.to_string().contains("anomalies (none)"), "{report}");
    }

    #[test]
    fn lost_acknowledged_value() {
        let report = clean().ok("p0-3", 4).check();
        assert_eq!(report.lost, vec!["p0-3".to_owned()]);
        assert!(!report.is_valid());
        assert!(report.to_string().contains("lost: 1"), "{report}");
    }

    #[test]
    fn duplicated_value() {
        let report = clean().read("p1-2", 7).check();
        assert_eq!(report.duplicated, vec![("p1-2".to_owned(), vec![3, 7])]);
        assert!(!report.is_valid());
    }

    #[test]
    fn unexpected_value() {
        let report = clean().read("nobody", 9).check();
        assert_eq!(report.unexpected, vec!["nobody".to_owned()]);
        assert!(!report.is_valid());
    }

    #[test]
    fn refused_value_that_was_read() {
        let report = clean().read("p2-1", 9).check();
        assert_eq!(report.failed_but_read, vec!["p2-1".to_owned()]);
        assert!(!report.is_valid());
    }

    #[test]
    fn offset_with_two_values() {
        let report = clean().attempt("p1-9", Outcome::Indeterminate).read("p1-9", 1).check();
        assert_eq!(report.offset_anomalies, vec![(1, vec!["p0-2".to_owned(), "p1-9".to_owned()])]);
        assert!(!report.is_valid());
    }

    #[test]
    fn read_at_another_offset_than_acknowledged() {
        let report = clean().ok("p0-3", 5).read("p0-3", 6).check();
        assert_eq!(
            report.acknowledged_offset_mismatch,
            vec![OffsetMismatch { value: "p0-3".into(), acknowledged: vec![5], read: vec![6] }]
        );
        assert!(report.lost.is_empty() && report.duplicated.is_empty());
        assert!(!report.is_valid());

        // Two acknowledgements of one value at different offsets.
        let report = clean().ok("p0-1", 8).check();
        assert_eq!(report.acknowledged_offset_mismatch[0].acknowledged, vec![0, 8]);
        assert!(!report.is_valid());
    }

    #[test]
    fn floor_going_back_for_one_observer() {
        // Another observer lower than c0 is fine; c0 itself going back is not.
        let report = clean().floor("c1", 0, 30).check();
        assert!(report.is_valid(), "observations out of order in the vector are sorted by time: {report}");
        let report = clean().floor("c0", 1, 300).check();
        assert_eq!(
            report.floor_regressions,
            vec![FloorRegression {
                observer: "c0".into(),
                group: "g".into(),
                earlier: 2,
                later: 1,
                earlier_from: (3, 200),
                later_from: (3, 300),
            }]
        );
        assert!(!report.is_valid());
    }

    #[test]
    fn delivery_after_an_ok_ack() {
        // Offset 1 was acked ok at 10 ms; a fetch sent at 20 ms delivered it again.
        let report = clean().read_in("g", "p0-2", 1, 20).check();
        assert_eq!(report.redelivered_after_ack, vec![("g".to_owned(), 1)]);
        assert!(!report.is_valid());
        // The same in another group is no redelivery.
        let report = clean().read_in("audit", "p0-2", 1, 20).check();
        assert!(report.is_valid(), "{report}");
    }
}
