//! The tiering catalog: which segments of which station are in the bucket, under which key,
//! and which objects are waiting to be deleted. The leader uploads (`tier::uploader`) and then
//! proposes `TierSegment`; retention and station deletion move keys to `tier_garbage`, which
//! the leader deletes from the bucket and then forgets with `TierForget`.

use std::collections::BTreeMap;

use super::{BrokerState, CommandError, MessageMeta, Name, Outcome, StationTiering, TierStats, TieredSegment};

/// The shortest `after_ms`: one second.
pub const MIN_TIER_AFTER_MS: u64 = 1_000;

/// A station's catalog, by first offset.
pub(super) type Catalog = BTreeMap<u64, TieredSegment>;

/// Whether a catalogued segment shares an offset with `first..=last` (catalogued segments never
/// overlap one another, so only the last one starting at or before `last` can).
fn overlaps(catalog: &Catalog, first: u64, last: u64) -> bool {
    catalog.range(..=last).next_back().is_some_and(|(_, s)| s.last_offset >= first)
}

impl BrokerState {
    pub(super) fn set_station_tiering(
        &mut self,
        station: &str,
        tiering: Option<StationTiering>,
    ) -> Result<Outcome, CommandError> {
        self.station(station)?;
        match tiering {
            Some(t) if t.after_ms < MIN_TIER_AFTER_MS => {
                Err(CommandError::Invalid(format!("tiering.after_ms must be at least {MIN_TIER_AFTER_MS}")))
            }
            Some(t) => {
                self.tier_config.insert(station.to_owned(), t);
                Ok(Outcome::Put { created: false })
            }
            None => {
                self.tier_config.remove(station);
                Ok(Outcome::Put { created: false })
            }
        }
    }

    pub(super) fn tier_segment(
        &mut self,
        station: &str,
        station_id: u64,
        segment: &TieredSegment,
    ) -> Result<Outcome, CommandError> {
        let state = self.station(station)?;
        let stale = |why: &str| {
            CommandError::Invalid(format!("segment {}..={} {why}", segment.first_offset, segment.last_offset))
        };
        if state.id != station_id {
            // Uploaded from an earlier incarnation: its object is garbage.
            self.tier_garbage.insert(segment.key.clone());
            return Err(stale("belongs to a deleted incarnation of the station"));
        }
        if segment.first_offset > segment.last_offset || segment.last_offset >= state.log.next {
            return Err(stale("is not a range of the station's log"));
        }
        if segment.last_offset < state.log.first {
            self.tier_garbage.insert(segment.key.clone());
            return Err(stale("was removed by retention meanwhile"));
        }
        let catalog = self.tiered.entry(station_id).or_default();
        if overlaps(catalog, segment.first_offset, segment.last_offset) {
            // The same upload again (after a leader change): its key is the catalogued one. A
            // new leader whose segments are cut elsewhere made an object the catalog does not
            // take: garbage.
            if catalog.get(&segment.first_offset).is_none_or(|s| s.key != segment.key) {
                self.tier_garbage.insert(segment.key.clone());
            }
            return Ok(Outcome::Ticked);
        }
        catalog.insert(segment.first_offset, segment.clone());
        Ok(Outcome::Ticked)
    }

    pub(super) fn tier_forget(&mut self, keys: &[String]) -> Outcome {
        for key in keys {
            self.tier_garbage.remove(key);
        }
        Outcome::Ticked
    }

    /// Moves the catalog entries of `station` that retention passed to the garbage.
    pub(super) fn prune_tiered(&mut self, station: &str) {
        let Some(state) = self.stations.get(station) else { return };
        let (id, first) = (state.id, state.log.first);
        let Some(catalog) = self.tiered.get_mut(&id) else { return };
        while let Some(entry) = catalog.first_entry() {
            if entry.get().last_offset >= first {
                break;
            }
            self.tier_garbage.insert(entry.remove().key);
        }
    }

    /// A deleted station's tiered objects become garbage.
    pub(super) fn drop_tiered(&mut self, station_id: u64) {
        for (_, segment) in self.tiered.remove(&station_id).unwrap_or_default() {
            self.tier_garbage.insert(segment.key);
        }
    }

    pub(super) fn tier_stats(&self, station_id: u64) -> TierStats {
        let Some(catalog) = self.tiered.get(&station_id) else { return TierStats::default() };
        TierStats {
            segments: catalog.len() as u64,
            bytes: catalog.values().map(|s| s.bytes).sum(),
            first_offset: catalog.values().next().map(|s| s.first_offset),
            last_offset: catalog.values().next_back().map(|s| s.last_offset),
        }
    }

    /// Every station with tiering on: (name, id, setting), by name.
    pub fn tiering_stations(&self) -> Vec<(Name, u64, StationTiering)> {
        self.tier_config.iter().filter_map(|(name, t)| Some((name.clone(), self.stations.get(name)?.id, *t))).collect()
    }

    /// Whether any offset of `first..=last` of station `station_id` is in the catalog.
    pub fn is_tiered(&self, station_id: u64, first: u64, last: u64) -> bool {
        self.tiered.get(&station_id).is_some_and(|c| overlaps(c, first, last))
    }

    /// The catalog of station `station_id`, by first offset.
    pub fn tiered_segments(&self, station_id: u64) -> Vec<TieredSegment> {
        self.tiered.get(&station_id).map(|c| c.values().cloned().collect()).unwrap_or_default()
    }

    /// The catalogued segment of station `station_id` that holds `offset`.
    pub fn tiered_segment_at(&self, station_id: u64, offset: u64) -> Option<TieredSegment> {
        let catalog = self.tiered.get(&station_id)?;
        let (_, segment) = catalog.range(..=offset).next_back()?;
        (segment.last_offset >= offset).then(|| segment.clone())
    }

    /// The first offset from `from` on that the catalog of station `station_id` does not
    /// cover without a gap (`from` itself when the catalog does not hold it).
    pub fn tier_covered_until(&self, station_id: u64, from: u64) -> u64 {
        let mut until = from;
        while let Some(segment) = self.tiered_segment_at(station_id, until) {
            until = segment.last_offset.saturating_add(1);
        }
        until
    }

    /// The metas of the retained offsets of `first..end` of station `station_id`, in order.
    pub fn message_metas(&self, station_id: u64, first: u64, end: u64) -> Vec<MessageMeta> {
        let Some(state) = self.names.get(&station_id).and_then(|name| self.stations.get(name)) else {
            return Vec::new();
        };
        (first.max(state.log.first)..end.min(state.log.next)).filter_map(|o| state.log.meta(o).copied()).collect()
    }

    /// Keys of objects to delete from the bucket.
    pub fn tier_garbage(&self) -> Vec<String> {
        self.tier_garbage.iter().cloned().collect()
    }
}
