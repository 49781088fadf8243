//! One station: its message index, groups, dedup keys and dead letters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::dead_letter::{Dead, DeadLetters};
use super::dedup::{digest, Dedup, Lookup};
use super::group::Group;
use super::index::MessageIndex;
use super::types::{after, Effect};
use super::types::{
    CommandError, Delivery, GroupConfig, GroupView, ItemError, MessageMeta, Millis, Name, NewMessage, Produced,
    ReceiptResult, RedriveSelector, SeekTo, StartPosition, StationConfig, StationStats, StationView, TierStats,
};

/// Longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 256;

/// What a mutating station operation needs besides the station itself.
pub(crate) struct Ctx<'a> {
    pub(crate) now: Millis,
    pub(crate) effects: &'a mut Vec<Effect>,
}

fn group_not_found(station: &str, group: &str) -> CommandError {
    CommandError::GroupNotFound { station: station.to_owned(), group: group.to_owned() }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StationState {
    pub(crate) id: u64,
    pub(crate) name: Name,
    pub(crate) config: StationConfig,
    pub(crate) created_at: Millis,
    pub(crate) log: MessageIndex,
    pub(crate) groups: BTreeMap<Name, Group>,
    dedup: Dedup,
    pub(crate) dead: DeadLetters,
    /// Highest delivery number any deleted group of this station issued; new groups count on
    /// from here so that no receipt is ever issued twice on the station.
    delivery_watermark: u64,
}

impl StationState {
    pub(crate) fn new(id: u64, name: Name, config: StationConfig, now: Millis) -> Self {
        StationState {
            id,
            name,
            config,
            created_at: now,
            log: MessageIndex::default(),
            groups: BTreeMap::new(),
            dedup: Dedup::default(),
            dead: DeadLetters::default(),
            delivery_watermark: 0,
        }
    }

    pub(crate) fn group(&self, name: &str) -> Result<&Group, CommandError> {
        self.groups.get(name).ok_or_else(|| group_not_found(&self.name, name))
    }

    pub(crate) fn view(&self) -> StationView {
        StationView {
            name: self.name.clone(),
            config: self.config.clone(),
            stats: StationStats {
                messages: self.log.len(),
                bytes: self.log.bytes(),
                first_offset: self.log.first,
                next_offset: self.log.next,
            },
            groups: self.groups.iter().map(|(name, group)| self.group_view_of(name, group)).collect(),
            created_at: self.created_at,
            tiering: None,
            tiered: TierStats::default(),
            id: self.id,
            local_bytes: 0,
        }
    }

    fn group_view_of(&self, name: &str, group: &Group) -> GroupView {
        GroupView {
            name: name.to_owned(),
            config: group.config.clone(),
            lag: group.lag(self.log.next),
            pending: group.pending_count(),
            delivered_offset: group.cursor(),
            acked_floor: group.acked_floor(),
            dead_lettered: group.dead_lettered,
            push: None,
        }
    }

    pub(crate) fn group_view(&self, name: &str) -> Result<GroupView, CommandError> {
        Ok(self.group_view_of(name, self.group(name)?))
    }

    fn start_offset(&self, start: &StartPosition) -> u64 {
        match start {
            StartPosition::Earliest => self.log.first,
            StartPosition::Latest => self.log.next,
            StartPosition::Offset(offset) => (*offset).clamp(self.log.first, self.log.next),
            StartPosition::Time(time) => self.log.offset_at_time(*time),
        }
    }

    /// Creates the group at its start position, or updates its config (the start position only
    /// matters at creation).
    pub(crate) fn put_group(
        &mut self,
        name: &str,
        config: GroupConfig,
        ctx: &mut Ctx,
    ) -> Result<(bool, GroupView), CommandError> {
        let created = !self.groups.contains_key(name);
        if let Some(group) = self.groups.get_mut(name) {
            group.config = config;
        } else {
            let cursor = self.start_offset(&config.start);
            let group = Group::new(config, cursor, self.delivery_watermark, &self.log, ctx.now);
            self.groups.insert(name.to_owned(), group);
        }
        self.enforce_retention(ctx);
        Ok((created, self.group_view(name)?))
    }

    pub(crate) fn delete_group(&mut self, name: &str, ctx: &mut Ctx) -> Result<(), CommandError> {
        let group = self.groups.remove(name).ok_or_else(|| group_not_found(&self.name, name))?;
        self.delivery_watermark = self.delivery_watermark.max(group.last_delivery());
        self.enforce_retention(ctx);
        Ok(())
    }

    pub(crate) fn seek(&mut self, name: &str, to: SeekTo, ctx: &mut Ctx) -> Result<GroupView, CommandError> {
        let target = match to {
            SeekTo::Offset(offset) => self.start_offset(&StartPosition::Offset(offset)),
            SeekTo::Time(time) => self.start_offset(&StartPosition::Time(time)),
        };
        let group = self.groups.get_mut(name).ok_or_else(|| group_not_found(&self.name, name))?;
        group.reposition(target, &self.log, ctx.now);
        self.enforce_retention(ctx);
        self.group_view(name)
    }

    pub(crate) fn produce(&mut self, messages: &[NewMessage], ctx: &mut Ctx) -> Vec<Result<Produced, ItemError>> {
        let results = messages.iter().map(|message| self.produce_one(message, ctx.now)).collect();
        for group in self.groups.values_mut() {
            group.skip_delayed(&self.log, ctx.now);
        }
        self.enforce_retention(ctx);
        results
    }

    fn produce_one(&mut self, message: &NewMessage, now: Millis) -> Result<Produced, ItemError> {
        let size = message.payload.len() as u64;
        let limit = self.config.max_message_bytes;
        if size > limit {
            return Err(ItemError::TooLarge { size, limit });
        }
        // The limit is validated to fit in u32, so this never saturates.
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        let meta = MessageMeta { produced_at: now, deliver_at: message.deliver_at.unwrap_or(0), size };
        let Some(key) = &message.idempotency_key else {
            return Ok(Produced { offset: self.log.push(meta), duplicate: false });
        };
        let chars = key.chars().count();
        if chars == 0 || chars > MAX_IDEMPOTENCY_KEY_CHARS {
            return Err(ItemError::Invalid(format!(
                "idempotency key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} characters"
            )));
        }
        let digest = digest(&message.payload);
        match self.dedup.lookup(key, &digest, now, self.config.dedup_window_ms) {
            Lookup::Duplicate(offset) => Ok(Produced { offset, duplicate: true }),
            Lookup::Reused => Err(ItemError::IdempotencyKeyReused),
            Lookup::Fresh => {
                let offset = self.log.push(meta);
                self.dedup.record(key.clone(), digest, offset, now);
                Ok(Produced { offset, duplicate: false })
            }
        }
    }

    pub(crate) fn fetch(
        &mut self,
        name: &str,
        max_messages: u32,
        max_bytes: Option<u64>,
        ctx: &mut Ctx,
    ) -> Result<Vec<Delivery>, CommandError> {
        let mut dead = Vec::new();
        let group = self.groups.get_mut(name).ok_or_else(|| group_not_found(&self.name, name))?;
        group.expire(ctx.now, &mut dead);
        let deliveries = group.fetch(&self.log, ctx.now, max_messages, max_bytes);
        self.bury(name, dead, ctx);
        self.enforce_retention(ctx);
        Ok(deliveries)
    }

    /// Applies `op` to each receipt in order, then records what died and enforces retention.
    pub(crate) fn on_receipts<R: Copy>(
        &mut self,
        name: &str,
        receipts: &[R],
        ctx: &mut Ctx,
        mut op: impl FnMut(&mut Group, R, &mut Vec<Dead>) -> ReceiptResult,
    ) -> Result<Vec<ReceiptResult>, CommandError> {
        let mut dead = Vec::new();
        let group = self.groups.get_mut(name).ok_or_else(|| group_not_found(&self.name, name))?;
        let results = receipts.iter().map(|receipt| op(group, *receipt, &mut dead)).collect();
        self.bury(name, dead, ctx);
        self.enforce_retention(ctx);
        Ok(results)
    }

    /// Turns what `group` gave up on into dead-letter records, if the station keeps dead
    /// letters; otherwise the messages are simply done for the group.
    fn bury(&mut self, group: &str, dead: Vec<Dead>, ctx: &mut Ctx) {
        if !self.config.dead_letter.enabled || dead.is_empty() {
            return;
        }
        let Some(state) = self.groups.get_mut(group) else { return };
        for one in dead {
            state.dead_lettered += 1;
            self.dead.add(&self.name, group, one, ctx.now);
        }
    }

    /// Drops the oldest messages that age, count, bytes or ack-based retention no longer keeps.
    pub(crate) fn enforce_retention(&mut self, ctx: &mut Ctx) {
        let retention = &self.config.retention;
        let mut first = self.log.first;
        if let Some(max_age_ms) = retention.max_age_ms {
            first = first.max(self.log.first_kept(|meta| after(meta.produced_at, max_age_ms) > ctx.now));
        }
        if let Some(max_messages) = retention.max_messages {
            first = first.max(self.log.next.saturating_sub(max_messages));
        }
        if retention.ack_based && !self.groups.is_empty() {
            let floor = self.groups.values().map(Group::acked_floor).min().unwrap_or(self.log.first);
            first = first.max(floor);
        }
        if let Some(max_bytes) = retention.max_bytes {
            first = self.log.first_within_bytes(first, max_bytes);
        }
        self.remove_prefix(first, ctx);
    }

    fn remove_prefix(&mut self, first: u64, ctx: &mut Ctx) {
        let first = first.min(self.log.next);
        if first <= self.log.first {
            return;
        }
        self.log.remove_below(first);
        let names: Vec<Name> = self.groups.keys().cloned().collect();
        for name in names {
            let mut dead = Vec::new();
            if let Some(group) = self.groups.get_mut(&name) {
                group.trim(first, &self.log, ctx.now, &mut dead);
            }
            self.bury(&name, dead, ctx);
        }
        ctx.effects.push(Effect::PrefixRemoved { id: self.id, first_offset: first });
    }

    /// Time-driven work: expired deliveries of every group, retention, dedup and dead-letter expiry.
    pub(crate) fn tick(&mut self, ctx: &mut Ctx) {
        let names: Vec<Name> = self.groups.keys().cloned().collect();
        for name in names {
            let mut dead = Vec::new();
            if let Some(group) = self.groups.get_mut(&name) {
                group.expire(ctx.now, &mut dead);
            }
            self.bury(&name, dead, ctx);
        }
        self.enforce_retention(ctx);
        self.dedup.expire(ctx.now, self.config.dedup_window_ms);
        self.dead.expire(ctx.now, self.config.dead_letter.retention_ms);
    }

    /// Removes the selected records whose message is still retained and whose group still
    /// exists, and hands each message back to its group. Returns how many.
    pub(crate) fn redrive(&mut self, selector: &RedriveSelector, ctx: &mut Ctx) -> u64 {
        let ids = match selector {
            RedriveSelector::Ids(ids) => ids.clone(),
            RedriveSelector::Group(group) => self.dead.select_group(group.as_ref()),
        };
        let mut count = 0;
        for id in ids {
            let Some(record) = self.dead.records.get(&id) else { continue };
            if record.offset < self.log.first {
                continue;
            }
            let Some(group) = self.groups.get_mut(&record.group) else { continue };
            group.redrive(record.offset);
            self.dead.records.remove(&id);
            count += 1;
        }
        self.enforce_retention(ctx);
        count
    }

    pub(crate) fn next_tick_at(&self) -> Option<Millis> {
        let deadlines = self.groups.values().filter_map(Group::next_deadline);
        let age = self
            .config
            .retention
            .max_age_ms
            .and_then(|max_age_ms| self.log.oldest().map(|meta| after(meta.produced_at, max_age_ms)));
        let dedup = self.dedup.next_expiry(self.config.dedup_window_ms);
        let dead = self.dead.next_expiry(self.config.dead_letter.retention_ms);
        deadlines.chain([age, dedup, dead].into_iter().flatten()).min()
    }

    #[cfg(test)]
    pub(crate) fn dedup_len(&self) -> usize {
        self.dedup.len()
    }
}
