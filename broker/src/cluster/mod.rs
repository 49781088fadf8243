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

mod bootstrap;
pub(crate) mod membership;
mod probe;
pub mod progress;
mod serve;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use crate::net::transport::{self, Credentials};
use crate::raft::NodeId;
use crate::replica::Replica;

/// Settings of a node that talks to other nodes.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The cluster port, bound by the caller (so a bind failure is the caller's to report, and
    /// a test can bind port 0 and learn the address before it starts the node).
    pub listener: Arc<std::net::TcpListener>,
    pub secret: String,
    /// Every member's cluster address, this node's own included. Used to bootstrap, and
    /// preferred over the addresses the membership records.
    pub peers: Vec<(NodeId, String)>,
    /// This node's public API address, shown in `GET /v1/cluster`.
    pub api_addr: String,
    /// Bootstrap waits until this many configured peers answer (this node included).
    pub wait_for: usize,
    /// Which peers answer until the cluster has a leader; the caller may read it while
    /// [`crate::Broker::open`] waits for them.
    pub startup: progress::StartupProgress,
    /// TLS on the cluster port, served and dialed; `None`: plain TCP.
    pub tls: Option<crate::net::tls::ClusterTls>,
}

impl ClusterOptions {
    /// The address the cluster port listens on, as this node would advertise it when no peer
    /// list names it.
    pub fn listen_addr(&self) -> String {
        self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default()
    }
}

/// Starts serving the cluster port, refuses to go on if this data dir was wiped under an id the
/// cluster knows, then lets Raft in and starts bootstrap and the join announcement.
/// `fresh`: this node's Raft log was empty when it opened.
pub(crate) async fn start(
    replica: &Arc<Replica>,
    opts: &ClusterOptions,
    me: Credentials,
    fresh: bool,
) -> Result<(), BrokerError> {
    let listener = opts
        .listener
        .try_clone()
        .and_then(|l| {
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        })
        .map_err(|e| BrokerError::Storage(format!("serving the cluster port {}: {e}", opts.listen_addr())))?;
    let gate = Arc::new(serve::Gate::new(replica.clone()));
    let stop = replica.shutdown.subscribe();
    replica.track(tokio::spawn(transport::serve(listener, me, gate.clone(), stop)));
    bootstrap::check_incarnation(replica, opts, fresh).await?;
    gate.open.store(true, Ordering::Release);
    let (r, o) = (replica.clone(), opts.clone());
    replica.track(tokio::spawn(async move { bootstrap::bootstrap(&r, &o).await }));
    let r = replica.clone();
    replica.track(tokio::spawn(async move { bootstrap::announce(&r).await }));
    let (r, o) = (replica.clone(), opts.clone());
    replica.track(tokio::spawn(async move { bootstrap::track_startup(&r, &o).await }));
    Ok(())
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
