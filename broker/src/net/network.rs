//! openraft's network over [`Peers`]: each RPC is one call on the peer's connection, bounded by
//! openraft's own deadline.

use std::sync::Arc;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use super::rpc::{Call, Reply};
use super::transport::CallError;
use super::Directory;
use crate::raft::{Member, NodeId, TypeConfig};

/// Builds a client per target. Addresses come from the [`Directory`]: the configured peers
/// first, else the address the membership records.
#[derive(Clone)]
pub struct Network {
    pub(crate) directory: Arc<Directory>,
}

pub struct Client {
    directory: Arc<Directory>,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Client {
        let addr = self.directory.address(target, Some(node)).unwrap_or_default();
        Client { directory: self.directory.clone(), target, addr }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Text(String);

type Rpc<E> = RPCError<NodeId, Member, E>;

impl Client {
    async fn call<E: std::error::Error>(&self, call: Call, option: &RPCOption) -> Result<Reply, Rpc<E>> {
        if self.addr.is_empty() {
            let e = Text(format!("no address known for node {}", self.target));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        match self.directory.peers.call(self.target, &self.addr, call, option.hard_ttl()).await {
            Ok(Reply::Refused(reason)) => Err(RPCError::Unreachable(Unreachable::new(&Text(reason)))),
            Ok(reply) => Ok(reply),
            Err(e @ CallError::Unreachable(..)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e @ CallError::NoAnswer(..)) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    fn unexpected<E: std::error::Error>(&self, reply: Reply) -> Rpc<E> {
        RPCError::Network(NetworkError::new(&Text(format!("node {} answered {reply:?}", self.target))))
    }

    fn remote<E: std::error::Error>(&self, e: E) -> Rpc<E> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl RaftNetwork<TypeConfig> for Client {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, Rpc<RaftError<NodeId>>> {
        match self.call(Call::Append(rpc), &option).await? {
            Reply::Append(r) => r.map_err(|e| self.remote(e)),
            other => Err(self.unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, Rpc<RaftError<NodeId, InstallSnapshotError>>> {
        match self.call(Call::Snapshot(rpc), &option).await? {
            Reply::Snapshot(r) => r.map_err(|e| self.remote(e)),
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, Rpc<RaftError<NodeId>>> {
        match self.call(Call::Vote(rpc), &option).await? {
            Reply::Vote(r) => r.map_err(|e| self.remote(e)),
            other => Err(self.unexpected(other)),
        }
    }
}
