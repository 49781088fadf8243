//! Stations, consumer groups, seek and dead letters. Reads run a read barrier first, so they see
//! every write acknowledged before them, on any node.

use super::messages::unexpected;
use super::Broker;
use crate::error::BrokerError;
use crate::raft::StoredMessage;
use crate::station::{
    Command, CommandError, DeadLetterRecord, GroupConfig, GroupView, Outcome, RedriveSelector, SeekTo, StationConfig,
    StationView,
};

/// The answer to a create-or-update: what now is, and whether this call created it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Put<T> {
    pub created: bool,
    pub value: T,
}

/// One page of a station's dead letters, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeadLetterPage {
    pub records: Vec<DeadLetterRecord>,
    /// With `with_messages`: each record's message, aligned with `records` (`None` once
    /// retention removed it); otherwise empty.
    pub messages: Vec<Option<StoredMessage>>,
    /// More records pass the filter after the last one of this page.
    pub more: bool,
}

impl Broker {
    /// Creates `station`, or updates its configuration.
    pub async fn put_station(&self, station: &str, config: StationConfig) -> Result<Put<StationView>, BrokerError> {
        let command = Command::PutStation { station: station.into(), config };
        let created = match self.replica.submit(command).await?.outcome {
            Outcome::Put { created } => created,
            other => return Err(unexpected("put station", other)),
        };
        Ok(Put { created, value: self.station(station).await? })
    }

    /// Sets when `station`'s sealed segments move to the bucket (`None`: never); answers the
    /// station as it now is.
    pub async fn set_station_tiering(
        &self,
        station: &str,
        tiering: Option<crate::station::StationTiering>,
    ) -> Result<StationView, BrokerError> {
        self.replica.submit(Command::SetStationTiering { station: station.into(), tiering }).await?;
        self.station(station).await
    }

    /// Whether this node has a bucket to tier to.
    pub fn tiering_enabled(&self) -> bool {
        self.replica.tier.is_some()
    }

    pub async fn station(&self, station: &str) -> Result<StationView, BrokerError> {
        self.replica.barrier().await?;
        let view = self.read(|s| s.station_view(station));
        view.map(|v| self.with_local_bytes(v)).ok_or_else(|| CommandError::StationNotFound(station.into()).into())
    }

    fn with_local_bytes(&self, mut view: StationView) -> StationView {
        view.local_bytes = self.replica.sm.local_bytes(view.id);
        view
    }

    /// Every station, by name.
    pub async fn stations(&self) -> Result<Vec<StationView>, BrokerError> {
        self.replica.barrier().await?;
        Ok(self.stations_now())
    }

    /// Every station as this node has applied them, without a read barrier (for metrics).
    pub fn stations_now(&self) -> Vec<StationView> {
        self.read(|s| s.list_stations()).into_iter().map(|v| self.with_local_bytes(v)).collect()
    }

    /// One station's configuration as this node has applied it, without a read barrier.
    pub fn station_config_now(&self, station: &str) -> Option<crate::station::StationConfig> {
        self.read(|s| s.station_config(station).cloned())
    }

    /// Deletes `station` with its messages, groups and dead letters.
    pub async fn delete_station(&self, station: &str) -> Result<(), BrokerError> {
        self.replica.submit(Command::DeleteStation { station: station.into() }).await.map(drop)
    }

    /// Creates consumer group `group` on `station`, or updates its configuration.
    pub async fn put_group(
        &self,
        station: &str,
        group: &str,
        config: GroupConfig,
    ) -> Result<Put<GroupView>, BrokerError> {
        let command = Command::PutGroup { station: station.into(), group: group.into(), config };
        match self.replica.submit(command).await?.outcome {
            Outcome::GroupPut { created, group } => Ok(Put { created, value: group }),
            other => Err(unexpected("put group", other)),
        }
    }

    pub async fn group(&self, station: &str, group: &str) -> Result<GroupView, BrokerError> {
        self.replica.barrier().await?;
        Ok(self.read(|s| s.group_view(station, group))?)
    }

    pub async fn delete_group(&self, station: &str, group: &str) -> Result<(), BrokerError> {
        self.replica.submit(Command::DeleteGroup { station: station.into(), group: group.into() }).await.map(drop)
    }

    /// Moves `group`'s position on `station`; answers the group as it now is.
    pub async fn seek(&self, station: &str, group: &str, to: SeekTo) -> Result<GroupView, BrokerError> {
        let command = Command::Seek { station: station.into(), group: group.into(), to };
        match self.replica.submit(command).await?.outcome {
            Outcome::Group(view) => Ok(view),
            other => Err(unexpected("seek", other)),
        }
    }

    /// A page of `station`'s dead letters with ids after `after`, those `filter` keeps, and
    /// with `with_messages` their messages, all read after one read barrier.
    pub async fn dead_letters(
        &self,
        station: &str,
        after: Option<u64>,
        limit: usize,
        with_messages: bool,
        filter: impl Fn(&DeadLetterRecord) -> bool,
    ) -> Result<DeadLetterPage, BrokerError> {
        self.replica.barrier().await?;
        let (records, more) = self.read(|s| s.dead_letter_page(station, after, limit, filter))?;
        let mut messages = Vec::new();
        if with_messages {
            for r in &records {
                messages.push(self.message_now(station, r.offset).await?);
            }
        }
        Ok(DeadLetterPage { records, messages, more })
    }

    /// Sends the selected dead letters back to their own groups; answers how many went.
    pub async fn redrive(&self, station: &str, selector: RedriveSelector) -> Result<u64, BrokerError> {
        match self.replica.submit(Command::Redrive { station: station.into(), selector }).await?.outcome {
            Outcome::Redriven(redriven) => Ok(redriven),
            other => Err(unexpected("redrive", other)),
        }
    }

    pub async fn delete_dead_letter(&self, station: &str, id: u64) -> Result<(), BrokerError> {
        self.replica.submit(Command::DeleteDeadLetter { station: station.into(), id }).await.map(drop)
    }
}
