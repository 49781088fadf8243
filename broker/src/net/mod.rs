//! Talking to the other nodes: the framed protocol on the cluster port ([`rpc`]), how both ends
//! of a connection prove they know the cluster secret ([`handshake`]), the connections that
//! carry it ([`transport`]), openraft's network over them ([`network`]), and
//! where each node is ([`Directory`]). Nothing here knows what a call means; the replica and the
//! cluster jobs do.

pub mod handshake;
pub mod network;
pub mod rpc;
pub mod tls;
pub mod transport;

use std::collections::BTreeMap;

use crate::raft::{Member, NodeId};
use transport::Peers;

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
