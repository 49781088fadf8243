//! What the state machine knows of a station's retained messages: offsets and metadata only.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::types::{MessageMeta, Millis};

/// The retained range `first..next` of a station's log.
///
/// Invariant: `metas[i]` describes offset `first + i`. The metas are not serialized: after a
/// snapshot is loaded the storage layer hands them back through `restore`, read from the log.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct MessageIndex {
    pub(crate) first: u64,
    pub(crate) next: u64,
    #[serde(skip)]
    metas: VecDeque<MessageMeta>,
    /// Sum of `metas[..].size`, in payload bytes.
    #[serde(skip)]
    bytes: u64,
}

impl MessageIndex {
    pub(crate) fn len(&self) -> u64 {
        self.next - self.first
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn meta(&self, offset: u64) -> Option<&MessageMeta> {
        let index = usize::try_from(offset.checked_sub(self.first)?).ok()?;
        self.metas.get(index)
    }

    /// Payload size of `offset`, 0 when it is not retained.
    pub(crate) fn size(&self, offset: u64) -> u64 {
        self.meta(offset).map_or(0, |meta| u64::from(meta.size))
    }

    pub(crate) fn oldest(&self) -> Option<&MessageMeta> {
        self.metas.front()
    }

    /// Appends one message and returns its offset.
    pub(crate) fn push(&mut self, meta: MessageMeta) -> u64 {
        let offset = self.next;
        self.metas.push_back(meta);
        self.bytes += u64::from(meta.size);
        self.next += 1;
        offset
    }

    /// Forgets every offset below `first` (clamped to `next`).
    pub(crate) fn remove_below(&mut self, first: u64) {
        let first = first.min(self.next);
        while self.first < first {
            if let Some(meta) = self.metas.pop_front() {
                self.bytes -= u64::from(meta.size);
            }
            self.first += 1;
        }
    }

    /// Offset of the first retained message produced at or after `time` (`next` if none).
    /// Relies on `produced_at` being non-decreasing along the log.
    pub(crate) fn offset_at_time(&self, time: Millis) -> u64 {
        self.first + self.metas.partition_point(|meta| meta.produced_at < time) as u64
    }

    /// The first offset at or after which messages satisfy `keep`; `keep` must be monotone
    /// (false for a prefix, true after it).
    pub(crate) fn first_kept(&self, keep: impl Fn(&MessageMeta) -> bool) -> u64 {
        self.first + self.metas.partition_point(|meta| !keep(meta)) as u64
    }

    /// The smallest offset `o >= from` such that dropping everything below `o` leaves at most
    /// `max_bytes` retained. Walks only the messages it would drop.
    pub(crate) fn first_within_bytes(&self, from: u64, max_bytes: u64) -> u64 {
        let mut offset = from.clamp(self.first, self.next);
        let mut remaining = self.bytes - self.bytes_below(offset);
        while remaining > max_bytes && offset < self.next {
            remaining -= self.size(offset);
            offset += 1;
        }
        offset
    }

    fn bytes_below(&self, offset: u64) -> u64 {
        (self.first..offset.min(self.next)).map(|o| self.size(o)).sum()
    }

    /// Replaces the metas after a snapshot load. Exactly `next - first` metas are expected; a
    /// short list is padded with zero-sized, undelayed entries stamped `fill_time`, so offsets
    /// stay aligned and nothing is delivered out of thin air.
    pub(crate) fn restore(&mut self, metas: impl IntoIterator<Item = MessageMeta>, fill_time: Millis) {
        let expected = usize::try_from(self.len()).unwrap_or(usize::MAX);
        self.metas = metas.into_iter().take(expected).collect();
        while self.metas.len() < expected {
            self.metas.push_back(MessageMeta { produced_at: fill_time, deliver_at: 0, size: 0 });
        }
        self.bytes = self.metas.iter().map(|meta| u64::from(meta.size)).sum();
    }
}
