//! Station records of one apply call, written to their log in one write per run.
//!
//! An entry of single-message produces used to cost one `pwrite` per message: each command's
//! records went to the station log as the command was applied. Records with consecutive offsets
//! on one station are now kept here, by reference to the commands that hold them, and written
//! together when a record of another station or offset comes, when a station's log is about to
//! be removed, and before the apply call returns. Nothing reads a station log during an apply
//! (it holds the state machine's lock; a fetch's messages are read after it), so no reader can
//! miss them, and the station log's durability is unchanged: it is fsynced at snapshots, the
//! Raft log before the apply.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::sm_err;
use crate::log::SegmentedLog;
use crate::raft::codec::encode_message;
use crate::raft::StorageError;
use crate::station::{Envelope, Millis, NewMessage};

/// One record: message `message` of command `command` of `commands`.
struct Record {
    produced_at: Millis,
    commands: Arc<[Envelope]>,
    command: usize,
    message: usize,
}

impl Record {
    fn message(&self) -> Option<&NewMessage> {
        self.commands.get(self.command).and_then(|env| env.command.new_messages().get(self.message))
    }
}

/// A run of records for consecutive offsets of one station, not written yet.
#[derive(Default)]
pub(super) struct Unwritten {
    station: u64,
    first: u64,
    records: Vec<Record>,
}

impl Unwritten {
    /// Adds the record of `offset` on station `station`, writing what is held first when the
    /// record does not continue it.
    pub(super) fn push(
        &mut self,
        logs: &mut BTreeMap<u64, SegmentedLog>,
        station: u64,
        offset: u64,
        record: (Millis, &Arc<[Envelope]>, usize, usize),
    ) -> Result<(), StorageError> {
        let continues = self.station == station && self.first + self.records.len() as u64 == offset;
        if !continues {
            self.write(logs)?;
            self.station = station;
            self.first = offset;
        }
        let (produced_at, commands, command, message) = record;
        let record = Record { produced_at, commands: commands.clone(), command, message };
        if record.message().is_none() {
            return Err(sm_err(std::io::Error::other(format!("no message {message} in command {command}"))));
        }
        self.records.push(record);
        Ok(())
    }

    /// Writes what is held to its station's log (nothing if that log is gone).
    pub(super) fn write(&mut self, logs: &mut BTreeMap<u64, SegmentedLog>) -> Result<(), StorageError> {
        if self.records.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.records);
        let Some(log) = logs.get_mut(&self.station) else { return Ok(()) };
        // Every record names a message (`push` checked).
        log.append_run(self.first, records.len(), |i, buf| {
            if let Some((record, message)) = records.get(i).and_then(|r| Some((r, r.message()?))) {
                encode_message(message, record.produced_at, buf);
            }
        })
        .map_err(sm_err)
    }
}
