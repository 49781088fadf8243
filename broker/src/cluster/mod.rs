//! Running as one node of several: the transport on the cluster port, openraft's network over
//! it, forwarding to the leader, and the lifecycle rules of a member (who bootstraps, when a
//! cluster goes active, who may rejoin).
//!
//! Lifecycle:
//! - **Bootstrap.** The lowest id in `--peers` initializes the cluster with every configured
//!   peer as a voter, once `wait_for` of them answer (itself included) and none reports an
//!   already initialized cluster. The others wait to be contacted.
//! - **Incarnations.** Every data dir gets a random incarnation on its first start; each member
//!   tells the leader its own ([`Call::Join`]), which records it in the membership. A node that
//!   starts on a wiped dir has a new incarnation: if a peer's membership knows its id under
//!   another one, it is refused before it takes part in Raft. It may have acknowledged entries it
//!   no longer holds, and letting it vote could lose them.
//! - **Everything else** (elections, an old leader stepping down, a lagging node catching up
//!   from the log or a snapshot) is Raft's.

pub mod network;
pub(crate) mod node;
pub mod transport;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::raft::{Member, NodeId};
use transport::Peers;

/// Settings of a node that talks to other nodes.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Where to serve the other nodes (the cluster port).
    pub listen: SocketAddr,
    pub secret: String,
    /// Every member's cluster address, this node's own included. Used to bootstrap, and
    /// preferred over the addresses the membership records.
    pub peers: Vec<(NodeId, String)>,
    /// This node's public API address, shown in `GET /v1/cluster`.
    pub api_addr: String,
    /// Bootstrap waits until this many configured peers answer (this node included).
    pub wait_for: usize,
}

/// Where each node is: the configured peers, else what the membership says.
pub struct Directory {
    pub(crate) peers: Peers,
    configured: BTreeMap<NodeId, String>,
}

impl Directory {
    pub(crate) fn new(peers: Peers, configured: &[(NodeId, String)]) -> Directory {
        Directory { peers, configured: configured.iter().cloned().collect() }
    }

    pub fn address(&self, id: NodeId, member: Option<&Member>) -> Option<String> {
        self.configured.get(&id).cloned().or_else(|| member.map(|m| m.cluster_addr.clone()).filter(|a| !a.is_empty()))
    }

    pub fn configured(&self) -> &BTreeMap<NodeId, String> {
        &self.configured
    }
}

/// `GET /v1/cluster`: the cluster as one node sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterView {
    pub cluster_id: String,
    pub node_id: NodeId,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub nodes: Vec<NodeView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeView {
    pub id: NodeId,
    pub api_addr: String,
    pub cluster_addr: String,
    /// `voter` or `learner`.
    pub role: String,
    /// How far the leader knows this node's log matches its own (known on the leader only).
    pub matched_index: Option<u64>,
    pub reachable: bool,
}

/// How long a status probe of one node may take.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
