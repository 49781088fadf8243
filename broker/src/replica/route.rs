//! The way to the leader: commands proposed here when this node leads, else forwarded; read
//! barriers confirmed by the leader; the status this node reports to others.

use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, RaftError};

use super::{unavailable, Replica};
use crate::error::BrokerError;
use crate::net::rpc::{Call, NodeStatus, Reply};
use crate::net::transport::CallError;
use crate::raft::Applied;
use crate::station::{Command, Outcome};

/// Where a call meant for the leader was answered.
// Returned once per call and matched at once: boxing the reply would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Routed {
    /// This node leads: the caller handles the call itself.
    Here,
    /// The leader answered.
    Answered(Reply),
}

pub(crate) fn unexpected(reply: Reply) -> BrokerError {
    unavailable(format!("unexpected answer from the leader: {reply:?}"))
}

/// Sends a call to the current leader, each attempt bounded by `per_call`. While no leader is
/// known, or the known one refuses (it no longer leads) or cannot be reached (nothing was sent),
/// it waits for a leader change and tries again, up to `wait` in all. A call that was sent but
/// got no answer is not repeated: its outcome is unknown.
pub(crate) async fn call_leader(
    r: &Replica,
    call: impl Fn() -> Call,
    wait: Duration,
    per_call: Duration,
) -> Result<Routed, BrokerError> {
    let deadline = Instant::now() + wait;
    let mut metrics = r.raft().metrics();
    loop {
        let target = {
            let m = metrics.borrow_and_update();
            m.current_leader.map(|l| (l, r.directory.address(l, m.membership_config.membership().get_node(&l))))
        };
        let why = match target {
            Some((l, _)) if l == r.node_id => return Ok(Routed::Here),
            Some((l, Some(addr))) => match r.directory.peers.call(l, &addr, call(), per_call).await {
                Ok(Reply::Refused(reason)) => reason,
                Ok(reply) => return Ok(Routed::Answered(reply)),
                Err(e @ CallError::Unreachable(..)) => e.to_string(),
                Err(e @ CallError::NoAnswer(..)) => {
                    return Err(unavailable(format!("{e}; the outcome is unknown, retry (idempotently)")))
                }
            },
            Some((l, None)) => format!("no address known for the leader, node {l}"),
            None => "no leader elected".to_owned(),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(unavailable(why));
        }
        tokio::select! {
            _ = metrics.changed() => {}
            _ = tokio::time::sleep(left.min(Duration::from_millis(50))) => {}
        }
    }
}

/// `applied`, or the error its outcome refused the command with.
pub(crate) fn refused(applied: Applied) -> Result<Applied, BrokerError> {
    match applied.outcome {
        Outcome::Error(e) => Err(e.into()),
        _ => Ok(applied),
    }
}

impl Replica {
    /// Proposes `command` and waits until it is committed (fsynced on a majority) and applied,
    /// on this node if it leads, else forwarded to the leader. An outcome that refuses the
    /// command (`Outcome::Error`) comes back as `BrokerError::Command`.
    pub(crate) async fn submit(&self, command: Command) -> Result<Applied, BrokerError> {
        refused(self.route(command).await?)
    }

    /// Sends `command` to the leader: proposed here if this node leads, else forwarded. While
    /// no leader is known, or the one known cannot be reached (nothing was sent), it waits for
    /// one up to `leader_wait`.
    async fn route(&self, command: Command) -> Result<Applied, BrokerError> {
        if self.leads() {
            return self.propose(command).await;
        }
        let forward = || Call::Submit(command.clone());
        let per_call = self.commit_timeout + Duration::from_secs(2);
        match call_leader(self, forward, self.leader_wait, per_call).await? {
            Routed::Here => self.propose(command).await,
            Routed::Answered(Reply::Submit(result)) => result,
            Routed::Answered(other) => Err(unexpected(other)),
        }
    }

    /// A read barrier: returns once this node has applied everything committed before the call,
    /// so a read after it sees every write acknowledged before it. Free on a cluster of one; in a
    /// larger cluster the leader first confirms with a quorum that it still leads (else, after
    /// `leader_wait`, `Unavailable`).
    pub(crate) async fn barrier(&self) -> Result<(), BrokerError> {
        // After a storage failure reloaded the state from disk, it is behind what reads saw
        // before until the rebuilt Raft core re-applies the committed entries: wait for that.
        let floor = self.sm.floor();
        if self.sm.last_applied().map_or(0, |id| id.index) < floor {
            self.raft()
                .wait(Some(self.leader_wait))
                .applied_index_at_least(Some(floor), "re-applied after a storage failure")
                .await
                .map_err(|_| match self.storage_fault() {
                    Some(fault) => self.storage_failure(&fault),
                    None => unavailable("the state is being re-applied after a storage failure"),
                })?;
        }
        if !self.clustered {
            return Ok(());
        }
        let deadline = Instant::now() + self.leader_wait;
        let index = self.read_index(deadline).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft()
            .wait(Some(left))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map(|_| ())
            .map_err(|e| unavailable(format!("did not catch up with the leader: {e}")))
    }

    /// The index a read must wait for: confirmed by the leader (this node or another).
    async fn read_index(&self, deadline: Instant) -> Result<u64, BrokerError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match call_leader(self, || Call::ReadIndex, left, left.max(Duration::from_millis(100))).await? {
            Routed::Here => self.leader_read_index().await,
            Routed::Answered(Reply::ReadIndex(r)) => r,
            Routed::Answered(other) => Err(unexpected(other)),
        }
    }

    /// On the leader: the commit index a read may be served at, once a quorum confirms this node
    /// still leads.
    pub(crate) async fn leader_read_index(&self) -> Result<u64, BrokerError> {
        match tokio::time::timeout(self.leader_wait, self.raft().ensure_linearizable()).await {
            Ok(Ok(log_id)) => Ok(log_id.map_or(0, |l| l.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)))) => {
                Err(unavailable(format!("no quorum confirms this leader (reached: {:?})", q.got)))
            }
            Ok(Err(e)) => Err(unavailable(format!("leadership not confirmed: {e}"))),
            Err(_) => Err(unavailable("leadership not confirmed by a quorum in time")),
        }
    }

    /// What this node tells others about itself.
    pub(crate) fn status(&self) -> NodeStatus {
        let m = self.raft().metrics().borrow().clone();
        let membership = m.membership_config.as_ref().clone();
        NodeStatus {
            node_id: self.node_id,
            cluster_id: self.cluster_id.clone(),
            member: self.member.clone(),
            initialized: membership.membership().voter_ids().next().is_some(),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            membership: Some(membership),
        }
    }
}
