//! Read-only figures about this node's Raft core, for metrics.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Broker;
use crate::raft::NodeId;

/// How long [`Broker::raft_status`] waits for the Raft core to report its commit index.
const COMMITTED_WAIT: Duration = Duration::from_millis(500);

/// This node's view of the Raft group. Indexes are Raft log indexes (0 before the first entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftStatus {
    pub term: u64,
    /// The last entry in this node's log (appended, not necessarily committed).
    pub last_log_index: u64,
    /// The last entry this node knows is committed; `None` when the core did not answer in time
    /// (it is stopped, being rebuilt, or busy).
    pub committed: Option<u64>,
    /// The last entry applied to this node's state machine.
    pub applied: u64,
    pub leader: Option<NodeId>,
    /// This node leads.
    pub leads: bool,
    /// Times the leader this node knows of became a different node since the process started
    /// (the first leader it learns of counts).
    pub leader_changes: u64,
    /// The last entry purged from this node's log (a follower further behind needs a snapshot).
    pub purged: Option<u64>,
}

impl Broker {
    /// The Raft core's figures as of now; asks the core for the commit index, which openraft's
    /// metrics do not carry.
    pub async fn raft_status(&self) -> RaftStatus {
        let raft = self.replica.raft();
        let m = raft.metrics().borrow().clone();
        let asked = tokio::time::timeout(COMMITTED_WAIT, raft.with_raft_state(|st| st.committed)).await;
        let committed = match asked {
            Ok(Ok(committed)) => Some(committed.map_or(0, |id| id.index)),
            Ok(Err(_)) | Err(_) => None,
        };
        RaftStatus {
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed,
            applied: m.last_applied.map_or(0, |id| id.index),
            leader: m.current_leader,
            leads: m.current_leader == Some(self.replica.node_id),
            leader_changes: self.replica.leader_changes.load(Ordering::Relaxed),
            purged: m.purged.map(|id| id.index),
        }
    }
}
