//! The replicated state of the broker: stations, consumer groups, deliveries, dedup keys,
//! delays and dead letters.
//!
//! Pure and deterministic: every replica applies the same [`Envelope`] sequence and reaches the
//! same state. Time is the leader's stamp on each envelope, kept monotone as the state clock;
//! nothing here reads a clock, does I/O or iterates a hash map. Payloads are not kept: the
//! storage layer appends them to the station log and follows the [`Effect`]s.

mod dead_letter;
mod dedup;
mod group;
mod index;
mod push;
mod source;
mod state;
mod tier;
pub mod types;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use dead_letter::Outbox;
use push::MAX_PUSH_SECRETS;
pub use push::MAX_PUSH_URL_BYTES;
pub use source::{is_header_name, MAX_CAPTURE_HEADERS, MAX_SOURCES, MAX_SOURCE_RATE_PER_S, MAX_SOURCE_SECRET_CHARS};
pub use state::MAX_IDEMPOTENCY_KEY_CHARS;
use state::{Ctx, StationState};
pub use tier::MIN_TIER_AFTER_MS;
pub use types::*;

/// Longest station or group name, in characters.
const MAX_NAME_CHARS: usize = 128;
/// Most messages one fetch may ask for.
const MAX_FETCH_MESSAGES: u32 = 1000;
/// Most backoff steps a group may configure.
const MAX_BACKOFF_STEPS: usize = 100;

/// Checks a station or consumer-group name: 1-128 chars of `a-z 0-9 . _ -`, starting with a
/// letter or digit.
pub fn validate_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-');
    match name.chars().next() {
        None => Err("name must not be empty".to_owned()),
        Some(c) if !(c.is_ascii_lowercase() || c.is_ascii_digit()) => {
            Err(format!("name {name:?} must start with a lower-case letter or a digit"))
        }
        _ if name.len() > MAX_NAME_CHARS => Err(format!("name must be at most {MAX_NAME_CHARS} characters")),
        _ if !name.chars().all(allowed) => Err(format!("name {name:?} may only contain a-z, 0-9, '.', '_' and '-'")),
        _ => Ok(()),
    }
}

fn validate_station_config(config: &StationConfig) -> Result<(), String> {
    if !matches!(config.replicas, 1 | 3 | 5) {
        return Err(format!("replicas must be 1, 3 or 5, not {}", config.replicas));
    }
    // Sizes are kept as u32 per message.
    if config.max_message_bytes == 0 || config.max_message_bytes > u64::from(u32::MAX) {
        return Err(format!("max_message_bytes must be between 1 and {}", u32::MAX));
    }
    let retention = &config.retention;
    for (field, value) in [
        ("max_age_ms", retention.max_age_ms),
        ("max_messages", retention.max_messages),
        ("max_bytes", retention.max_bytes),
    ] {
        if value == Some(0) {
            return Err(format!("retention.{field} must be positive when set"));
        }
    }
    Ok(())
}

fn validate_group_config(config: &GroupConfig) -> Result<(), String> {
    if config.ack_wait_ms == 0 {
        return Err("ack_wait_ms must be positive".to_owned());
    }
    if config.max_deliveries == 0 {
        return Err("max_deliveries must be positive".to_owned());
    }
    if config.max_pending == 0 {
        return Err("max_pending must be positive".to_owned());
    }
    if config.backoff_ms.len() > MAX_BACKOFF_STEPS {
        return Err(format!("backoff_ms may have at most {MAX_BACKOFF_STEPS} steps"));
    }
    Ok(())
}

/// A receipt as a settling command carries it.
trait Settled: Copy {
    /// The receipt, if it may settle a delivery of the station whose id is `station_id`.
    fn on_station(self, station_id: u64) -> Option<Receipt>;
}

impl Settled for Receipt {
    fn on_station(self, _: u64) -> Option<Receipt> {
        Some(self)
    }
}

impl Settled for BoundReceipt {
    fn on_station(self, station_id: u64) -> Option<Receipt> {
        (self.station_id == station_id).then_some(self.receipt)
    }
}

/// Starts a serialized [`BrokerState`] that has sources. A state serialized before has
/// [`STATE_V3_MARKER`] or [`STATE_V2_MARKER`], or, before the receipt key, no marker: it starts
/// with its clock (i64 LE), which would have to be some 10^8 years ahead to read as these bytes.
const STATE_MARKER: &[u8; 8] = b"DEPOTST5";
/// Starts a state serialized with sources but before tiering.
const STATE_V4_MARKER: &[u8; 8] = b"DEPOTST4";
/// Starts a state serialized with push groups but before sources.
const STATE_V3_MARKER: &[u8; 8] = b"DEPOTST3";
/// Starts a state serialized with the receipt key but before push groups.
const STATE_V2_MARKER: &[u8; 8] = b"DEPOTST2";

/// The state as serialized before tiering, field for field.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct StateV4 {
    clock: Millis,
    last_station_id: u64,
    stations: BTreeMap<Name, StationState>,
    names: BTreeMap<u64, Name>,
    outbox: Outbox,
    receipt_key: Option<ReceiptKey>,
    push: BTreeMap<(Name, Name), PushGroup>,
    sources: BTreeMap<Name, Source>,
}

impl From<StateV4> for BrokerState {
    fn from(v4: StateV4) -> BrokerState {
        let StateV4 { clock, last_station_id, stations, names, outbox, receipt_key, push, sources } = v4;
        BrokerState {
            clock,
            last_station_id,
            stations,
            names,
            outbox,
            receipt_key,
            push,
            sources,
            ..BrokerState::default()
        }
    }
}

/// The state as serialized before sources, field for field.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct StateV3 {
    clock: Millis,
    last_station_id: u64,
    stations: BTreeMap<Name, StationState>,
    names: BTreeMap<u64, Name>,
    outbox: Outbox,
    receipt_key: Option<ReceiptKey>,
    push: BTreeMap<(Name, Name), PushGroup>,
}

impl From<StateV3> for BrokerState {
    fn from(v3: StateV3) -> BrokerState {
        let StateV3 { clock, last_station_id, stations, names, outbox, receipt_key, push } = v3;
        BrokerState { clock, last_station_id, stations, names, outbox, receipt_key, push, ..BrokerState::default() }
    }
}

/// The state as serialized before push groups, field for field.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct StateV2 {
    clock: Millis,
    last_station_id: u64,
    stations: BTreeMap<Name, StationState>,
    names: BTreeMap<u64, Name>,
    outbox: Outbox,
    receipt_key: Option<ReceiptKey>,
}

impl From<StateV2> for BrokerState {
    fn from(v2: StateV2) -> BrokerState {
        let StateV2 { clock, last_station_id, stations, names, outbox, receipt_key } = v2;
        BrokerState { clock, last_station_id, stations, names, outbox, receipt_key, ..BrokerState::default() }
    }
}

/// The state as serialized before it held a receipt key, field for field.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct StateV1 {
    clock: Millis,
    last_station_id: u64,
    stations: BTreeMap<Name, StationState>,
    names: BTreeMap<u64, Name>,
    outbox: Outbox,
}

impl From<StateV1> for BrokerState {
    fn from(v1: StateV1) -> BrokerState {
        let StateV1 { clock, last_station_id, stations, names, outbox } = v1;
        let mut state = BrokerState {
            clock,
            last_station_id,
            stations,
            names,
            outbox,
            receipt_key: None,
            ..BrokerState::default()
        };
        state.index_deadlines();
        state
    }
}

/// When each station next has time-driven work (see `StationState::next_tick_at`), so that a
/// tick visits only the stations that are due, and finding the next tick does not visit all.
/// Derived from the stations, never serialized.
#[derive(Clone, Debug, Default)]
struct Deadlines {
    by_time: BTreeSet<(Millis, Name)>,
    of: BTreeMap<Name, Millis>,
}

impl Deadlines {
    fn set(&mut self, station: &str, at: Option<Millis>) {
        if self.of.get(station).copied() == at {
            return;
        }
        if let Some(old) = self.of.remove(station) {
            self.by_time.remove(&(old, station.to_owned()));
        }
        if let Some(at) = at {
            self.of.insert(station.to_owned(), at);
            self.by_time.insert((at, station.to_owned()));
        }
    }

    fn first(&self) -> Option<Millis> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Stations with work due at `now`, in name order.
    fn due(&self, now: Millis) -> Vec<Name> {
        let mut due: Vec<Name> = self.by_time.iter().take_while(|(at, _)| *at <= now).map(|(_, n)| n.clone()).collect();
        due.sort_unstable();
        due
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BrokerState {
    /// max(previous clock, every envelope's `now`): the only time apply uses.
    clock: Millis,
    /// The last station id handed out; ids start at 1 and are never reused.
    last_station_id: u64,
    stations: BTreeMap<Name, StationState>,
    names: BTreeMap<u64, Name>,
    outbox: Outbox,
    /// What receipts are sealed with; set once, by the first `InitReceiptKey` applied.
    receipt_key: Option<ReceiptKey>,
    /// The push side of push groups, by (station, group).
    push: BTreeMap<(Name, Name), PushGroup>,
    /// Webhook sources, by name.
    sources: BTreeMap<Name, Source>,
    /// Stations with tiering on, by name.
    tier_config: BTreeMap<Name, StationTiering>,
    /// The tiering catalog: each station's segments in the bucket, by station id.
    tiered: BTreeMap<u64, tier::Catalog>,
    /// Keys of objects to delete from the bucket.
    tier_garbage: BTreeSet<String>,
    /// Not replicated: each replica's storage layer drains them after every apply.
    #[serde(skip)]
    effects: Vec<Effect>,
    #[serde(skip)]
    deadlines: Deadlines,
}

impl BrokerState {
    /// The bytes a snapshot keeps of the state.
    pub fn to_bytes(&self) -> Result<Vec<u8>, bincode::Error> {
        let mut out = STATE_MARKER.to_vec();
        bincode::serialize_into(&mut out, self)?;
        Ok(out)
    }

    /// Reads [`BrokerState::to_bytes`], or a state serialized before push groups existed, or
    /// before the receipt key existed (it then has none, and the first fetch proposes one).
    pub fn from_bytes(bytes: &[u8]) -> Result<BrokerState, bincode::Error> {
        let mut state: BrokerState = if let Some(rest) = bytes.strip_prefix(STATE_MARKER) {
            bincode::deserialize(rest)?
        } else if let Some(rest) = bytes.strip_prefix(STATE_V4_MARKER) {
            bincode::deserialize::<StateV4>(rest).map(BrokerState::from)?
        } else if let Some(rest) = bytes.strip_prefix(STATE_V3_MARKER) {
            bincode::deserialize::<StateV3>(rest).map(BrokerState::from)?
        } else if let Some(rest) = bytes.strip_prefix(STATE_V2_MARKER) {
            bincode::deserialize::<StateV2>(rest).map(BrokerState::from)?
        } else {
            bincode::deserialize::<StateV1>(bytes).map(BrokerState::from)?
        };
        state.index_deadlines();
        Ok(state)
    }

    pub fn apply(&mut self, env: &Envelope) -> Outcome {
        self.clock = self.clock.max(env.now);
        let outcome = self.apply_command(&env.command).unwrap_or_else(Outcome::Error);
        if let Some(station) = env.command.station() {
            self.index_deadline(station);
        }
        outcome
    }

    /// Brings the deadline index of one station up to date after it may have changed.
    fn index_deadline(&mut self, station: &str) {
        // Every change to a station's log passes here: let go of what retention passed.
        self.prune_tiered(station);
        let at = self.stations.get(station).and_then(StationState::next_tick_at);
        self.deadlines.set(station, at);
    }

    fn index_deadlines(&mut self) {
        self.deadlines = Deadlines::default();
        let names: Vec<Name> = self.stations.keys().cloned().collect();
        for name in names {
            self.index_deadline(&name);
        }
    }

    fn station_mut(&mut self, name: &str) -> Result<(&mut StationState, Ctx<'_>), CommandError> {
        let station = self.stations.get_mut(name).ok_or_else(|| CommandError::StationNotFound(name.to_owned()))?;
        Ok((station, Ctx { now: self.clock, effects: &mut self.effects }))
    }

    fn station(&self, name: &str) -> Result<&StationState, CommandError> {
        self.stations.get(name).ok_or_else(|| CommandError::StationNotFound(name.to_owned()))
    }

    fn apply_command(&mut self, command: &Command) -> Result<Outcome, CommandError> {
        let now = self.clock;
        match command {
            Command::PutStation { station, config } => self.put_station(station, config),
            Command::DeleteStation { station } => {
                let state =
                    self.stations.remove(station).ok_or_else(|| CommandError::StationNotFound(station.clone()))?;
                self.names.remove(&state.id);
                self.effects.push(Effect::StationDropped { id: state.id });
                self.push.retain(|(s, _), _| s != station);
                self.sources.retain(|_, source| source.config.station != *station);
                self.tier_config.remove(station);
                self.drop_tiered(state.id);
                Ok(Outcome::Deleted)
            }
            Command::PutGroup { station, group, config } => {
                validate_name(group).map_err(CommandError::Invalid)?;
                validate_group_config(config).map_err(CommandError::Invalid)?;
                let (state, mut ctx) = self.station_mut(station)?;
                let (created, view) = state.put_group(group, config.clone(), &mut ctx)?;
                // A plain PUT makes the group a pull group.
                self.push.remove(&(station.clone(), group.clone()));
                Ok(Outcome::GroupPut { created, group: view })
            }
            Command::PutPushGroup { station, group, config, push, secret } => {
                self.put_push_group(station, group, config, push, secret)
            }
            Command::SetPushState { station, group, state, reason } => {
                let push = self.push_mut(station, group)?;
                push.state = *state;
                push.disabled_reason = if *state == PushState::Disabled { reason.clone() } else { None };
                Ok(Outcome::Group(self.group_view(station, group)?))
            }
            Command::RotatePushSecret { station, group, secret, old_valid_ms } => {
                let push = self.push_mut(station, group)?;
                let expires_at = after(now, *old_valid_ms);
                for old in &mut push.secrets {
                    old.expires_at = Some(old.expires_at.map_or(expires_at, |at| at.min(expires_at)));
                }
                push.secrets.retain(|s| s.expires_at.is_none_or(|at| at > now));
                push.secrets.insert(0, PushSecret { secret: secret.clone(), expires_at: None });
                push.secrets.truncate(MAX_PUSH_SECRETS);
                Ok(Outcome::Group(self.group_view(station, group)?))
            }
            Command::PushFetch { station, group, max_messages } => {
                if !(1..=MAX_FETCH_MESSAGES).contains(max_messages) {
                    return Err(CommandError::Invalid(format!("max_messages must be 1-{MAX_FETCH_MESSAGES}")));
                }
                if self.push_mut(station, group)?.state != PushState::Active {
                    return Ok(Outcome::Fetched(Vec::new()));
                }
                let (state, mut ctx) = self.station_mut(station)?;
                Ok(Outcome::Fetched(state.fetch(group, *max_messages, None, &mut ctx)?))
            }
            Command::PushSettle { station, group, results } => self.push_settle(station, group, results),
            Command::DeleteGroup { station, group } => {
                let (state, mut ctx) = self.station_mut(station)?;
                state.delete_group(group, &mut ctx)?;
                self.push.remove(&(station.clone(), group.clone()));
                Ok(Outcome::Deleted)
            }
            Command::Seek { station, group, to } => {
                let (state, mut ctx) = self.station_mut(station)?;
                let view = state.seek(group, *to, &mut ctx)?;
                Ok(Outcome::Group(self.with_push(station, view)))
            }
            Command::Produce { station, messages } => {
                let (state, mut ctx) = self.station_mut(station)?;
                Ok(Outcome::Produced(state.produce(messages, &mut ctx)))
            }
            Command::Fetch { station, group, max_messages, max_bytes } => {
                self.refuse_push(station, group)?;
                if !(1..=MAX_FETCH_MESSAGES).contains(max_messages) {
                    return Err(CommandError::Invalid(format!("max_messages must be 1-{MAX_FETCH_MESSAGES}")));
                }
                let (state, mut ctx) = self.station_mut(station)?;
                Ok(Outcome::Fetched(state.fetch(group, *max_messages, *max_bytes, &mut ctx)?))
            }
            Command::Ack { station, group, receipts } => self.settle(station, group, receipts, &SettleOp::Ack),
            Command::Nack { station, group, receipts, delay_ms } => {
                self.settle(station, group, receipts, &SettleOp::Nack { delay_ms: *delay_ms })
            }
            Command::Extend { station, group, receipts, ack_wait_ms } => {
                self.settle(station, group, receipts, &SettleOp::Extend { ack_wait_ms: *ack_wait_ms })
            }
            Command::DeadLetter { station, group, receipts, reason } => {
                self.settle(station, group, receipts, &SettleOp::DeadLetter { reason: reason.clone() })
            }
            Command::Settle { station, group, receipts, op } => {
                self.refuse_push(station, group)?;
                self.settle(station, group, receipts, op)
            }
            Command::Redrive { station, selector } => {
                let (state, mut ctx) = self.station_mut(station)?;
                Ok(Outcome::Redriven(state.redrive(selector, &mut ctx)))
            }
            Command::DeleteDeadLetter { station, id } => {
                let (state, _) = self.station_mut(station)?;
                state.dead.records.remove(id).ok_or(CommandError::DeadLetterNotFound(*id))?;
                Ok(Outcome::Deleted)
            }
            Command::Tick => {
                // A station that is not due has nothing to do: its tick would change nothing.
                for name in self.deadlines.due(now) {
                    let mut ctx = Ctx { now, effects: &mut self.effects };
                    if let Some(state) = self.stations.get_mut(&name) {
                        state.tick(&mut ctx);
                    }
                    self.index_deadline(&name);
                }
                Ok(Outcome::Ticked)
            }
            Command::OutboxAdvance { upto } => {
                self.outbox.advance(*upto);
                Ok(Outcome::Ticked)
            }
            Command::InitReceiptKey { key } => Ok(Outcome::ReceiptKey(*self.receipt_key.get_or_insert(*key))),
            Command::PutSource { source, config, token_hash } => self.put_source(source, config, token_hash),
            Command::RotateSourceToken { source, token_hash } => self.rotate_source_token(source, token_hash),
            Command::DeleteSource { source } => self.delete_source(source),
            Command::Ingest { source, token_hash, message } => self.ingest(source, token_hash, message),
            Command::CountRejected { counts } => Ok(self.count_rejected(counts)),
            Command::SetStationTiering { station, tiering } => self.set_station_tiering(station, *tiering),
            Command::TierSegment { station, station_id, segment } => self.tier_segment(station, *station_id, segment),
            Command::TierForget { keys } => Ok(self.tier_forget(keys)),
        }
    }

    /// Applies `op` to each receipt in order; a receipt bound to another incarnation of the
    /// station answers `Unknown` and changes nothing.
    fn settle<R: Settled>(
        &mut self,
        station: &str,
        group: &str,
        receipts: &[R],
        op: &SettleOp,
    ) -> Result<Outcome, CommandError> {
        let now = self.clock;
        let (state, mut ctx) = self.station_mut(station)?;
        let id = state.id;
        let results = state.on_receipts(group, receipts, &mut ctx, |g, r, dead| match r.on_station(id) {
            Some(receipt) => g.settle(receipt, op, now, dead),
            None => ReceiptResult::Unknown,
        })?;
        Ok(Outcome::Receipts(results))
    }

    fn put_station(&mut self, name: &str, config: &StationConfig) -> Result<Outcome, CommandError> {
        validate_name(name).map_err(CommandError::Invalid)?;
        validate_station_config(config).map_err(CommandError::Invalid)?;
        if let Ok((state, mut ctx)) = self.station_mut(name) {
            if state.config != *config {
                state.config = config.clone();
                state.enforce_retention(&mut ctx);
            }
            return Ok(Outcome::Put { created: false });
        }
        self.last_station_id += 1;
        let id = self.last_station_id;
        self.stations.insert(name.to_owned(), StationState::new(id, name.to_owned(), config.clone(), self.clock));
        self.names.insert(id, name.to_owned());
        self.effects.push(Effect::StationCreated { id, station: name.to_owned() });
        Ok(Outcome::Put { created: true })
    }

    /// Effects queued by `apply` since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub fn clock(&self) -> Millis {
        self.clock
    }

    /// The key receipts are sealed with, once the first `InitReceiptKey` has applied.
    pub fn receipt_key(&self) -> Option<ReceiptKey> {
        self.receipt_key
    }

    pub fn station_id(&self, station: &str) -> Option<u64> {
        self.stations.get(station).map(|state| state.id)
    }

    /// Every station as (id, name), by id.
    pub fn stations(&self) -> Vec<(u64, Name)> {
        self.names.iter().map(|(id, name)| (*id, name.clone())).collect()
    }

    /// `(first_offset, next_offset)` of a station's retained log.
    pub fn station_offsets(&self, id: u64) -> Option<(u64, u64)> {
        let state = self.stations.get(self.names.get(&id)?)?;
        Some((state.log.first, state.log.next))
    }

    /// What the state keeps of one retained message.
    pub fn message_meta(&self, id: u64, offset: u64) -> Option<MessageMeta> {
        self.stations.get(self.names.get(&id)?)?.log.meta(offset).copied()
    }

    /// A station's configuration, without building its view (which walks every group).
    pub fn station_config(&self, station: &str) -> Option<&StationConfig> {
        self.stations.get(station).map(|state| &state.config)
    }

    pub fn station_view(&self, station: &str) -> Option<StationView> {
        self.stations.get(station).map(|state| self.view_of(state))
    }

    fn view_of(&self, state: &StationState) -> StationView {
        let mut view = state.view();
        view.tiering = self.tier_config.get(&state.name).copied();
        view.tiered = self.tier_stats(state.id);
        view.groups = view.groups.into_iter().map(|g| self.with_push(&state.name, g)).collect();
        view
    }

    /// Every station, sorted by name.
    pub fn list_stations(&self) -> Vec<StationView> {
        self.stations.values().map(|state| self.view_of(state)).collect()
    }

    pub fn group_view(&self, station: &str, group: &str) -> Result<GroupView, CommandError> {
        Ok(self.with_push(station, self.station(station)?.group_view(group)?))
    }

    /// What an ack of `receipt` would answer now, without changing anything.
    pub fn receipt_status(&self, station: &str, group: &str, receipt: Receipt) -> Result<ReceiptResult, CommandError> {
        Ok(self.station(station)?.group(group)?.check(receipt))
    }

    /// A station's dead-letter records, sorted by id.
    pub fn dead_letters(&self, station: &str) -> Result<Vec<DeadLetterRecord>, CommandError> {
        Ok(self.station(station)?.dead.records.values().cloned().collect())
    }

    /// Up to `limit` dead letters of `station` with ids after `after`, oldest first, that pass
    /// `filter`; and whether more follow. Records are kept by id, so a page starts where the
    /// last one ended instead of scanning from the first record.
    pub fn dead_letter_page(
        &self,
        station: &str,
        after: Option<u64>,
        limit: usize,
        filter: impl Fn(&DeadLetterRecord) -> bool,
    ) -> Result<(Vec<DeadLetterRecord>, bool), CommandError> {
        let from = after.map_or(0, |a| a.saturating_add(1));
        let mut page: Vec<_> = self
            .station(station)?
            .dead
            .records
            .range(from..)
            .map(|(_, r)| r)
            .filter(|r| filter(r))
            .take(limit + 1)
            .cloned()
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        Ok((page, more))
    }

    /// Up to `limit` entries of the retired dead-letter outbox, oldest first: only a state
    /// written before dead letters were listed from the state itself has any.
    pub fn outbox(&self, limit: usize) -> Vec<OutboxEntry> {
        self.outbox.entries.iter().take(limit).cloned().collect()
    }

    /// Would a `Fetch` at `now` (not before the state clock) hand out at least one message,
    /// respecting max pending? False for an unknown station or group.
    pub fn has_ready(&self, station: &str, group: &str, now: Millis) -> bool {
        self.ready(station, group, now).unwrap_or(false)
    }

    /// `has_ready`, telling an unknown station or group apart from "nothing ready".
    pub fn ready(&self, station: &str, group: &str, now: Millis) -> Result<bool, CommandError> {
        let state = self.station(station)?;
        Ok(state.group(group)?.has_ready(&state.log, now.max(self.clock)))
    }

    /// The earliest time something becomes fetchable without a new produce: the state clock if
    /// something is ready now, else the next due redelivery, delayed message or ack deadline.
    /// With max pending reached, only the next ack deadline. None: nothing will come by itself.
    pub fn next_ready_at(&self, station: &str, group: &str) -> Option<Millis> {
        let state = self.station(station).ok()?;
        state.group(group).ok()?.next_ready_at(&state.log, self.clock)
    }

    /// The earliest time a `Tick` would change anything: an ack deadline, age retention of the
    /// oldest message, a dedup key or a dead-letter record expiring. May be at or before the
    /// clock, meaning a tick is due now.
    pub fn next_tick_at(&self) -> Option<Millis> {
        self.deadlines.first()
    }

    /// Hands back the metas of offsets `first_offset..next_offset` of a station, in order, after
    /// a snapshot was deserialized (they are not part of it). Extra metas are ignored; missing
    /// ones are filled with empty, undelayed entries stamped with the state clock.
    pub fn restore_messages(&mut self, station_id: u64, metas: impl IntoIterator<Item = MessageMeta>) {
        let Some(name) = self.names.get(&station_id) else { return };
        if let Some(state) = self.stations.get_mut(name) {
            state.log.restore(metas, self.clock);
        }
        let name = name.clone();
        self.index_deadline(&name);
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        let indexed: BTreeMap<Name, Millis> =
            self.stations.iter().filter_map(|(name, s)| Some((name.clone(), s.next_tick_at()?))).collect();
        assert_eq!(self.deadlines.of, indexed, "deadline index out of date");
        assert_eq!(self.deadlines.by_time.len(), indexed.len());
        for state in self.stations.values() {
            for group in state.groups.values() {
                group.check_invariants(&state.log);
            }
        }
    }
}
