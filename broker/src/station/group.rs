//! One consumer group's delivery state over one station.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::dead_letter::Dead;
use super::index::MessageIndex;
use super::types::after;
use super::types::{DeadLetterReason, Delivery, GroupConfig, Millis, Receipt, ReceiptResult, SettleOp};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Status {
    /// Handed out as delivery number `delivery`; expires at `deadline`.
    Pending { delivery: u64, deadline: Millis },
    /// Waiting to be redelivered at `due` (after a nack or an expired ack wait).
    Scheduled { due: Millis },
    /// Redelivery due (or redriven): handed out before anything else, lowest offset first.
    Ready,
    /// Passed over by the cursor because it is not deliverable before `at`.
    Delayed { at: Millis },
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Entry {
    /// Deliveries so far (reset by a redrive).
    attempts: u32,
    status: Status,
}

/// Invariants:
/// - every offset below `cursor` and at or above the station's first offset is either done
///   (acked or dead-lettered) or a key of `entries`, so the acked floor is the lowest key of
///   `entries` (or `cursor`) and the lag is `entries.len() + next - cursor`;
/// - each entry is in exactly the one index set that matches its status;
/// - after every apply the message at `cursor` (if any) is deliverable at the state clock,
///   since delayed ones are moved into `delayed` as soon as the cursor reaches them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Group {
    pub(crate) config: GroupConfig,
    cursor: u64,
    /// Delivery numbers in `issued_from + 1 ..= last_delivery` were issued by this group. The
    /// base comes from the station, so a re-created group never reissues an old receipt.
    issued_from: u64,
    last_delivery: u64,
    entries: BTreeMap<u64, Entry>,
    pending: BTreeSet<(Millis, u64)>,
    scheduled: BTreeSet<(Millis, u64)>,
    ready: BTreeSet<u64>,
    delayed: BTreeSet<(Millis, u64)>,
    pub(crate) dead_lettered: u64,
}

impl Group {
    pub(crate) fn new(config: GroupConfig, cursor: u64, issued_from: u64, log: &MessageIndex, now: Millis) -> Self {
        let mut group = Group {
            config,
            cursor,
            issued_from,
            last_delivery: issued_from,
            entries: BTreeMap::new(),
            pending: BTreeSet::new(),
            scheduled: BTreeSet::new(),
            ready: BTreeSet::new(),
            delayed: BTreeSet::new(),
            dead_lettered: 0,
        };
        group.skip_delayed(log, now);
        group
    }

    pub(crate) fn cursor(&self) -> u64 {
        self.cursor
    }

    pub(crate) fn last_delivery(&self) -> u64 {
        self.last_delivery
    }

    pub(crate) fn acked_floor(&self) -> u64 {
        self.entries.first_key_value().map_or(self.cursor, |(offset, _)| (*offset).min(self.cursor))
    }

    pub(crate) fn lag(&self, next: u64) -> u64 {
        self.entries.len() as u64 + next.saturating_sub(self.cursor)
    }

    pub(crate) fn pending_count(&self) -> u64 {
        self.pending.len() as u64
    }

    fn room(&self) -> u64 {
        u64::from(self.config.max_pending).saturating_sub(self.pending_count())
    }

    /// Moves the group to `target`: every delivery state is forgotten, so outstanding receipts
    /// stop being valid, and the delivery counter carries on.
    pub(crate) fn reposition(&mut self, target: u64, log: &MessageIndex, now: Millis) {
        self.cursor = target;
        self.entries.clear();
        self.pending.clear();
        self.scheduled.clear();
        self.ready.clear();
        self.delayed.clear();
        self.skip_delayed(log, now);
    }

    fn unindex(&mut self, offset: u64, status: Status) {
        match status {
            Status::Pending { deadline, .. } => self.pending.remove(&(deadline, offset)),
            Status::Scheduled { due } => self.scheduled.remove(&(due, offset)),
            Status::Ready => self.ready.remove(&offset),
            Status::Delayed { at } => self.delayed.remove(&(at, offset)),
        };
    }

    fn index(&mut self, offset: u64, status: Status) {
        match status {
            Status::Pending { deadline, .. } => self.pending.insert((deadline, offset)),
            Status::Scheduled { due } => self.scheduled.insert((due, offset)),
            Status::Ready => self.ready.insert(offset),
            Status::Delayed { at } => self.delayed.insert((at, offset)),
        };
    }

    /// Sets the status of an existing entry, keeping the index sets in step.
    fn set_status(&mut self, offset: u64, status: Status) {
        let Some(entry) = self.entries.get_mut(&offset) else { return };
        let old = std::mem::replace(&mut entry.status, status);
        self.unindex(offset, old);
        self.index(offset, status);
    }

    fn insert(&mut self, offset: u64, entry: Entry) {
        if let Some(old) = self.entries.insert(offset, entry) {
            self.unindex(offset, old.status);
        }
        self.index(offset, entry.status);
    }

    fn remove(&mut self, offset: u64) -> Option<Entry> {
        let entry = self.entries.remove(&offset)?;
        self.unindex(offset, entry.status);
        Some(entry)
    }

    /// Marks `offset` done after a delivery failed for good.
    fn give_up(&mut self, offset: u64, reason: DeadLetterReason, last_error: Option<String>, dead: &mut Vec<Dead>) {
        if let Some(entry) = self.remove(offset) {
            dead.push(Dead { offset, reason, attempts: entry.attempts, last_error });
        }
    }

    fn backoff_ms(&self, attempts: u32) -> u64 {
        let steps = &self.config.backoff_ms;
        let step = usize::try_from(attempts.max(1)).unwrap_or(usize::MAX).min(steps.len());
        step.checked_sub(1).and_then(|i| steps.get(i)).copied().unwrap_or(0)
    }

    /// Moves the cursor past messages not deliverable at `now` into the delayed set, so they
    /// never hold back the ready messages behind them.
    pub(crate) fn skip_delayed(&mut self, log: &MessageIndex, now: Millis) {
        while let Some(meta) = log.meta(self.cursor) {
            if meta.deliver_at <= now {
                break;
            }
            let at = meta.deliver_at;
            self.insert(self.cursor, Entry { attempts: 0, status: Status::Delayed { at } });
            self.cursor += 1;
        }
    }

    /// Ends every delivery whose ack wait ran out by `now`: redelivery after the backoff step,
    /// or the dead-letter station once max deliveries is reached.
    pub(crate) fn expire(&mut self, now: Millis, dead: &mut Vec<Dead>) {
        while let Some(&(deadline, offset)) = self.pending.first() {
            if deadline > now {
                break;
            }
            let attempts = self.entries.get(&offset).map_or(0, |entry| entry.attempts);
            if attempts >= self.config.max_deliveries {
                self.give_up(offset, DeadLetterReason::MaxDeliveries, None, dead);
            } else {
                let due = after(deadline, self.backoff_ms(attempts));
                self.set_status(offset, Status::Scheduled { due });
            }
        }
    }

    fn promote_due(&mut self, now: Millis) {
        while let Some(&(due, offset)) = self.scheduled.first() {
            if due > now {
                break;
            }
            self.set_status(offset, Status::Ready);
        }
    }

    /// The next offset a fetch at `now` would hand out, without changing anything (scheduled
    /// redeliveries are assumed promoted). Returns whether it is a first delivery from the cursor.
    fn next_candidate(&self, log: &MessageIndex, now: Millis) -> Option<(u64, bool)> {
        let due_scheduled = self.scheduled.first().filter(|(due, _)| *due <= now).map(|(_, offset)| *offset);
        if let Some(offset) = self.ready.first().copied().or(due_scheduled) {
            return Some((offset, false));
        }
        if let Some(&(at, offset)) = self.delayed.first() {
            if at <= now {
                return Some((offset, false));
            }
        }
        let meta = log.meta(self.cursor)?;
        (meta.deliver_at <= now).then_some((self.cursor, true))
    }

    /// Hands out up to `max_messages` (bounded by max pending and `max_bytes`, yet at least one
    /// when any is available). Call `expire` first.
    pub(crate) fn fetch(
        &mut self,
        log: &MessageIndex,
        now: Millis,
        max_messages: u32,
        max_bytes: Option<u64>,
    ) -> Vec<Delivery> {
        self.promote_due(now);
        self.skip_delayed(log, now);
        let budget = self.room().min(u64::from(max_messages));
        let mut out = Vec::new();
        let mut bytes = 0u64;
        while (out.len() as u64) < budget {
            let Some((offset, from_cursor)) = self.next_candidate(log, now) else { break };
            let size = log.size(offset);
            if max_bytes.is_some_and(|limit| !out.is_empty() && bytes.saturating_add(size) > limit) {
                break;
            }
            bytes = bytes.saturating_add(size);
            let attempts = if from_cursor {
                self.cursor += 1;
                0
            } else {
                self.entries.get(&offset).map_or(0, |entry| entry.attempts)
            };
            self.last_delivery += 1;
            let attempt = attempts.saturating_add(1);
            let deadline = after(now, self.config.ack_wait_ms);
            let status = Status::Pending { delivery: self.last_delivery, deadline };
            self.insert(offset, Entry { attempts: attempt, status });
            if from_cursor {
                self.skip_delayed(log, now);
            }
            out.push(Delivery { receipt: Receipt { offset, delivery: self.last_delivery }, attempt });
        }
        out
    }

    /// Ok only for the delivery currently in flight; Stale for one this group issued earlier
    /// for an offset it has delivered; Unknown for anything else.
    pub(crate) fn check(&self, receipt: Receipt) -> ReceiptResult {
        match self.entries.get(&receipt.offset) {
            Some(Entry { status: Status::Pending { delivery, .. }, .. }) if *delivery == receipt.delivery => {
                ReceiptResult::Ok
            }
            _ if receipt.delivery > self.issued_from
                && receipt.delivery <= self.last_delivery
                && receipt.offset < self.cursor =>
            {
                ReceiptResult::Stale
            }
            _ => ReceiptResult::Unknown,
        }
    }

    pub(crate) fn settle(
        &mut self,
        receipt: Receipt,
        op: &SettleOp,
        now: Millis,
        dead: &mut Vec<Dead>,
    ) -> ReceiptResult {
        match op {
            SettleOp::Ack => self.ack(receipt),
            SettleOp::Nack { delay_ms } => self.nack(receipt, now, *delay_ms, dead),
            SettleOp::Extend { ack_wait_ms } => self.extend(receipt, now, *ack_wait_ms),
            SettleOp::DeadLetter { reason } => self.dead_letter(receipt, reason.as_deref(), dead),
        }
    }

    pub(crate) fn ack(&mut self, receipt: Receipt) -> ReceiptResult {
        let result = self.check(receipt);
        if result == ReceiptResult::Ok {
            self.remove(receipt.offset);
        }
        result
    }

    pub(crate) fn nack(&mut self, receipt: Receipt, now: Millis, delay_ms: u64, dead: &mut Vec<Dead>) -> ReceiptResult {
        self.fail(receipt, now, |_| delay_ms, None, dead)
    }

    /// A push attempt failed with `error`: redelivery after the backoff step (the ack wait when
    /// the group has none), no sooner than `not_before_ms`; the dead-letter station once max
    /// deliveries is reached.
    pub(crate) fn push_failed(
        &mut self,
        receipt: Receipt,
        now: Millis,
        error: &str,
        not_before_ms: u64,
        dead: &mut Vec<Dead>,
    ) -> ReceiptResult {
        let wait = self.config.ack_wait_ms;
        let has_backoff = !self.config.backoff_ms.is_empty();
        let delay = |backoff: u64| if has_backoff { backoff } else { wait }.max(not_before_ms);
        self.fail(receipt, now, delay, Some(error.to_owned()), dead)
    }

    /// Hands a delivery back without counting its attempt: deliverable again at once.
    pub(crate) fn release(&mut self, receipt: Receipt) -> ReceiptResult {
        let result = self.check(receipt);
        if result == ReceiptResult::Ok {
            if let Some(entry) = self.entries.get_mut(&receipt.offset) {
                entry.attempts = entry.attempts.saturating_sub(1);
            }
            self.set_status(receipt.offset, Status::Ready);
        }
        result
    }

    /// Ends a delivery that failed: `delay(backoff step)` until the next attempt, or the
    /// dead-letter station with `last_error` once max deliveries is reached.
    fn fail(
        &mut self,
        receipt: Receipt,
        now: Millis,
        delay: impl Fn(u64) -> u64,
        last_error: Option<String>,
        dead: &mut Vec<Dead>,
    ) -> ReceiptResult {
        let result = self.check(receipt);
        if result == ReceiptResult::Ok {
            let attempts = self.entries.get(&receipt.offset).map_or(0, |entry| entry.attempts);
            if attempts >= self.config.max_deliveries {
                self.give_up(receipt.offset, DeadLetterReason::MaxDeliveries, last_error, dead);
            } else {
                let due = after(now, delay(self.backoff_ms(attempts)));
                self.set_status(receipt.offset, Status::Scheduled { due });
            }
        }
        result
    }

    pub(crate) fn extend(&mut self, receipt: Receipt, now: Millis, ack_wait_ms: u64) -> ReceiptResult {
        let result = self.check(receipt);
        if result == ReceiptResult::Ok {
            let status = Status::Pending { delivery: receipt.delivery, deadline: after(now, ack_wait_ms) };
            self.set_status(receipt.offset, status);
        }
        result
    }

    pub(crate) fn dead_letter(
        &mut self,
        receipt: Receipt,
        reason: Option<&str>,
        dead: &mut Vec<Dead>,
    ) -> ReceiptResult {
        let result = self.check(receipt);
        if result == ReceiptResult::Ok {
            self.give_up(receipt.offset, DeadLetterReason::Explicit, reason.map(str::to_owned), dead);
        }
        result
    }

    /// Makes a dead-lettered offset deliverable again now, with its attempts reset. Offsets the
    /// group still has to deliver or holds in flight (after a seek) need nothing.
    pub(crate) fn redrive(&mut self, offset: u64) {
        if offset < self.cursor && !self.entries.contains_key(&offset) {
            self.insert(offset, Entry { attempts: 0, status: Status::Ready });
        }
    }

    /// Follows retention to `first`: state below it is dropped; deliveries that were handed
    /// out at least once and not done die as Expired (never-delivered ones are just skipped).
    pub(crate) fn trim(&mut self, first: u64, log: &MessageIndex, now: Millis, dead: &mut Vec<Dead>) {
        let kept = self.entries.split_off(&first);
        let dropped = std::mem::replace(&mut self.entries, kept);
        for (offset, entry) in dropped {
            self.unindex(offset, entry.status);
            if entry.attempts > 0 {
                dead.push(Dead {
                    offset,
                    reason: DeadLetterReason::Expired,
                    attempts: entry.attempts,
                    last_error: None,
                });
            }
        }
        if self.cursor < first {
            self.cursor = first;
            self.skip_delayed(log, now);
        }
    }

    /// Would a fetch at `now` hand out at least one message? `now` is at least the state clock.
    pub(crate) fn has_ready(&self, log: &MessageIndex, now: Millis) -> bool {
        // Expiring deliveries free their slots before the fetch hands anything out.
        let expiring = self.pending.first().is_some_and(|(deadline, _)| *deadline <= now);
        if self.room() == 0 && !expiring {
            return false;
        }
        if self.next_candidate(log, now).is_some() {
            return true;
        }
        // A delivery expiring by `now` is redelivered once its backoff has passed too.
        self.pending.range(..=(now, u64::MAX)).any(|&(deadline, offset)| {
            let attempts = self.entries.get(&offset).map_or(0, |entry| entry.attempts);
            attempts < self.config.max_deliveries && after(deadline, self.backoff_ms(attempts)) <= now
        })
    }

    /// The earliest time at or after `now` when a fetch may hand out something without a new
    /// produce: `now` if something is ready, else the next redelivery, delayed message or ack
    /// deadline. With max pending reached only deadlines count (acks arrive as commands).
    pub(crate) fn next_ready_at(&self, log: &MessageIndex, now: Millis) -> Option<Millis> {
        let deadline = self.pending.first().map(|(deadline, _)| *deadline);
        if self.room() == 0 {
            return deadline;
        }
        if self.next_candidate(log, now).is_some() {
            return Some(now);
        }
        let scheduled = self.scheduled.first().map(|(due, _)| *due);
        let delayed = self.delayed.first().map(|(at, _)| *at);
        let cursor = log.meta(self.cursor).map(|meta| meta.deliver_at);
        [deadline, scheduled, delayed, cursor].into_iter().flatten().min()
    }

    /// The earliest ack deadline, when a tick has deliveries to expire.
    pub(crate) fn next_deadline(&self) -> Option<Millis> {
        self.pending.first().map(|(deadline, _)| *deadline)
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self, log: &MessageIndex) {
        let mut count = 0;
        for (offset, entry) in &self.entries {
            assert!(*offset < self.cursor && *offset >= log.first, "entry {offset} outside range");
            let indexed = match entry.status {
                Status::Pending { deadline, .. } => self.pending.contains(&(deadline, *offset)),
                Status::Scheduled { due } => self.scheduled.contains(&(due, *offset)),
                Status::Ready => self.ready.contains(offset),
                Status::Delayed { at } => self.delayed.contains(&(at, *offset)),
            };
            assert!(indexed, "entry {offset} not indexed");
            count += 1;
        }
        let indexed = self.pending.len() + self.scheduled.len() + self.ready.len() + self.delayed.len();
        assert_eq!(count, indexed, "index sets hold stale offsets");
        assert!(self.cursor >= log.first && self.cursor <= log.next);
    }
}
