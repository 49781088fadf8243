//! Dead-letter records of a station (the one place they are kept and listed from), and the
//! retired outbox that once copied them to the metadata store: still read from older states.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::types::after;
use super::types::{DeadLetterReason, DeadLetterRecord, Millis, Name, OutboxEntry};

/// A message that one group gave up on; turned into a record by the station if enabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dead {
    pub(crate) offset: u64,
    pub(crate) reason: DeadLetterReason,
    pub(crate) attempts: u32,
    pub(crate) last_error: Option<String>,
}

/// Records by id. Ids grow with the state clock, so `dead_at` is non-decreasing in id order and
/// retention only ever removes from the front.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct DeadLetters {
    pub(crate) records: BTreeMap<u64, DeadLetterRecord>,
    /// The last id handed out; ids start at 1 and are never reused within a station.
    last_id: u64,
}

impl DeadLetters {
    pub(crate) fn add(&mut self, station: &str, group: &str, dead: Dead, now: Millis) {
        self.last_id += 1;
        let record = DeadLetterRecord {
            id: self.last_id,
            station: station.to_owned(),
            group: group.to_owned(),
            offset: dead.offset,
            reason: dead.reason,
            attempts: dead.attempts,
            last_error: dead.last_error,
            dead_at: now,
        };
        self.records.insert(record.id, record);
    }

    pub(crate) fn expire(&mut self, now: Millis, retention_ms: u64) {
        while let Some(entry) = self.records.first_entry() {
            if after(entry.get().dead_at, retention_ms) > now {
                break;
            }
            entry.remove();
        }
    }

    pub(crate) fn next_expiry(&self, retention_ms: u64) -> Option<Millis> {
        self.records.first_key_value().map(|(_, record)| after(record.dead_at, retention_ms))
    }

    /// Ids of the records a redrive selects, ascending. `group: None` selects every record.
    pub(crate) fn select_group(&self, group: Option<&Name>) -> Vec<u64> {
        self.records
            .values()
            .filter(|record| group.is_none_or(|g| &record.group == g))
            .map(|record| record.id)
            .collect()
    }
}

/// Dead-letter records waiting to reach the metadata store, oldest first.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Outbox {
    pub(crate) entries: VecDeque<OutboxEntry>,
    /// The last sequence number handed out; they start at 1.
    last_seq: u64,
}

impl Outbox {
    pub(crate) fn advance(&mut self, upto: u64) {
        while self.entries.front().is_some_and(|entry| entry.seq <= upto) {
            self.entries.pop_front();
        }
    }
}
