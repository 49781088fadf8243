//! Serving the other nodes' calls on the cluster port.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::membership;
use crate::net::rpc::{Call, Reply};
use crate::net::transport::Handler;
use crate::raft::NodeId;
use crate::replica::Replica;

/// Serves calls from other nodes. Raft's own calls are refused until the start-up checks
/// passed, so a node that must be refused never votes or accepts entries.
pub(super) struct Gate {
    replica: Arc<Replica>,
    pub(super) open: AtomicBool,
}

impl Gate {
    pub(super) fn new(replica: Arc<Replica>) -> Gate {
        Gate { replica, open: AtomicBool::new(false) }
    }
}

impl Handler for Gate {
    async fn handle(&self, from: NodeId, call: Call) -> Reply {
        let r = &self.replica;
        let raft = r.raft();
        let raft_call = matches!(call, Call::Append(_) | Call::Vote(_) | Call::Snapshot(_));
        if raft_call && !self.open.load(Ordering::Acquire) {
            return Reply::Refused(format!("node {} is starting", r.node_id));
        }
        match call {
            Call::Append(rpc) => Reply::Append(raft.append_entries(rpc).await),
            Call::Vote(rpc) => Reply::Vote(raft.vote(rpc).await),
            Call::Snapshot(rpc) => Reply::Snapshot(raft.install_snapshot(rpc).await),
            Call::Status => Reply::Status(Box::new(r.status())),
            Call::Submit(command) => {
                if !r.leads() {
                    return Reply::Refused(format!("node {} does not lead", r.node_id));
                }
                Reply::Submit(r.propose(command).await)
            }
            Call::ReadIndex => {
                if !r.leads() {
                    return Reply::Refused(format!("node {} does not lead", r.node_id));
                }
                Reply::ReadIndex(r.leader_read_index().await)
            }
            Call::Join(member) => Reply::Done(membership::record_join(r, from, member).await),
            Call::AddNode { id, member } => Reply::Done(membership::add_node_here(r, id, member).await),
            Call::RemoveNode(id) => Reply::Done(membership::remove_node_here(r, id).await),
        }
    }
}
