//! Asking other nodes for their status.

use std::collections::BTreeMap;

use futures_util::future::join_all;

use super::PROBE_TIMEOUT;
use crate::net::rpc::{Call, NodeStatus, Reply};
use crate::raft::NodeId;
use crate::replica::Replica;

/// Asks each `(node, address)` for its status, in parallel, each bounded by [`PROBE_TIMEOUT`];
/// the answers by node (`None`: no answer).
pub(super) async fn probe(r: &Replica, targets: Vec<(NodeId, String)>) -> BTreeMap<NodeId, Option<NodeStatus>> {
    let calls = targets.into_iter().map(|(id, addr)| async move {
        match r.directory.peers.call(id, &addr, Call::Status, PROBE_TIMEOUT).await {
            Ok(Reply::Status(s)) => (id, Some(*s)),
            _ => (id, None),
        }
    });
    join_all(calls).await.into_iter().collect()
}

/// The status of every configured peer that answered.
pub(super) async fn probe_peers(r: &Replica) -> Vec<NodeStatus> {
    let me = r.node_id;
    let targets = r.directory.configured().iter().filter(|(id, _)| **id != me).map(|(id, a)| (*id, a.clone()));
    probe(r, targets.collect()).await.into_values().flatten().collect()
}
