//! Push groups: their configuration and state, and what the delivering node proposes. Delivery
//! itself (HTTP, signing, retries' timing) is the caller's: the broker keeps the replicated
//! model that push and pull groups share.

use std::time::Duration;

use super::messages::{unexpected, Fetched, Take};
use super::{Broker, Put};
use crate::error::BrokerError;
use crate::station::{
    Command, GroupConfig, GroupView, Name, Outcome, PushConfig, PushGroup, PushResult, PushState, Receipt,
    ReceiptResult, SecretChoice,
};

impl Broker {
    /// Creates push group `group` on `station`, or updates it (a pull group becomes a push
    /// group). A `Generated` secret is used only if the group has none yet.
    pub async fn put_push_group(
        &self,
        station: &str,
        group: &str,
        config: GroupConfig,
        push: PushConfig,
        secret: SecretChoice,
    ) -> Result<Put<GroupView>, BrokerError> {
        let command = Command::PutPushGroup { station: station.into(), group: group.into(), config, push, secret };
        match self.replica.submit(command).await?.outcome {
            Outcome::GroupPut { created, group } => Ok(Put { created, value: group }),
            other => Err(unexpected("put push group", other)),
        }
    }

    /// Pauses, resumes or disables a push group; answers the group as it now is.
    pub async fn set_push_state(
        &self,
        station: &str,
        group: &str,
        state: PushState,
        reason: Option<String>,
    ) -> Result<GroupView, BrokerError> {
        let command = Command::SetPushState { station: station.into(), group: group.into(), state, reason };
        self.group_outcome("set push state", command).await
    }

    /// Makes `secret` the group's signing secret; the previous ones sign for `old_valid_ms` more.
    pub async fn rotate_push_secret(
        &self,
        station: &str,
        group: &str,
        secret: String,
        old_valid_ms: u64,
    ) -> Result<GroupView, BrokerError> {
        let command = Command::RotatePushSecret { station: station.into(), group: group.into(), secret, old_valid_ms };
        self.group_outcome("rotate push secret", command).await
    }

    async fn group_outcome(&self, operation: &str, command: Command) -> Result<GroupView, BrokerError> {
        match self.replica.submit(command).await?.outcome {
            Outcome::Group(view) => Ok(view),
            other => Err(unexpected(operation, other)),
        }
    }

    /// Takes up to `max_messages` of an active push group to deliver, waiting up to `wait` for
    /// one. The deliveries carry raw receipts: they settle through [`Broker::push_settle`].
    pub async fn push_fetch(
        &self,
        station: &str,
        group: &str,
        max_messages: u32,
        wait: Duration,
    ) -> Result<Fetched, BrokerError> {
        self.when_ready(station, group, wait, Take::Push { max_messages }).await
    }

    /// Records how deliveries ended, in one command; answers one result per delivery.
    pub async fn push_settle(
        &self,
        station: &str,
        group: &str,
        results: Vec<(Receipt, PushResult)>,
    ) -> Result<Vec<ReceiptResult>, BrokerError> {
        let command = Command::PushSettle { station: station.into(), group: group.into(), results };
        match self.replica.submit(command).await?.outcome {
            Outcome::Receipts(results) => Ok(results),
            other => Err(unexpected("push settle", other)),
        }
    }

    /// Every push group as this node has applied them: (station, group, push side).
    pub fn push_groups_now(&self) -> Vec<(Name, Name, PushGroup)> {
        self.read(|s| s.push_groups())
    }

    /// The push side of one group as this node has applied it.
    pub fn push_group_now(&self, station: &str, group: &str) -> Option<PushGroup> {
        self.read(|s| s.push_group(station, group).cloned())
    }

    /// The id of `station`'s current incarnation as this node has applied it.
    pub fn station_id_now(&self, station: &str) -> Option<u64> {
        self.read(|s| s.station_id(station))
    }

    /// Whether this node is the Raft leader now (the node that delivers push groups).
    pub fn is_leader(&self) -> bool {
        self.replica.leads()
    }
}
