//! This node as a member: serving the other nodes' calls, the start-up checks, bootstrap, and
//! the membership operations behind `/v1/cluster`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use tokio::net::TcpListener;

use super::transport::{self, CallError, Credentials, Handler};
use super::wire::{Call, NodeStatus, Reply};
use super::{ClusterOptions, ClusterView, NodeView, PROBE_TIMEOUT};
use crate::broker::{unavailable, Broker};
use crate::error::BrokerError;
use crate::raft::{Member, NodeId};

/// How long adding a node may wait for it to catch up before answering (it stays a learner and
/// is promoted by a later call).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves calls from other nodes. Raft's own calls are refused until the start-up checks
/// passed, so a node that must be refused never votes or accepts entries.
struct Gate {
    broker: Broker,
    open: AtomicBool,
}

impl Handler for Gate {
    async fn handle(&self, from: NodeId, call: Call) -> Reply {
        let b = &self.broker;
        let raft = b.inner.raft();
        let raft_call = matches!(call, Call::Append(_) | Call::Vote(_) | Call::Snapshot(_));
        if raft_call && !self.open.load(Ordering::Acquire) {
            return Reply::Refused(format!("node {} is starting", b.node_id()));
        }
        match call {
            Call::Append(rpc) => Reply::Append(raft.append_entries(rpc).await),
            Call::Vote(rpc) => Reply::Vote(raft.vote(rpc).await),
            Call::Snapshot(rpc) => Reply::Snapshot(raft.install_snapshot(rpc).await),
            Call::Status => Reply::Status(Box::new(status(b))),
            Call::Submit(command) => {
                if !leads(b) {
                    return Reply::Refused(format!("node {} does not lead", b.node_id()));
                }
                Reply::Submit(b.propose(command).await)
            }
            Call::ReadIndex => {
                if !leads(b) {
                    return Reply::Refused(format!("node {} does not lead", b.node_id()));
                }
                Reply::ReadIndex(leader_read_index(b).await)
            }
            Call::Join(member) => Reply::Done(record_join(b, from, member).await),
            Call::AddNode { id, member } => Reply::Done(add_node_here(b, id, member).await),
            Call::RemoveNode(id) => Reply::Done(remove_node_here(b, id).await),
        }
    }
}

fn leads(b: &Broker) -> bool {
    b.inner.raft().metrics().borrow().current_leader == Some(b.node_id())
}

pub(crate) fn status(b: &Broker) -> NodeStatus {
    let m = b.inner.raft().metrics().borrow().clone();
    let membership = m.membership_config.as_ref().clone();
    NodeStatus {
        node_id: b.node_id(),
        cluster_id: b.cluster_id().to_owned(),
        member: b.inner.member.clone(),
        initialized: membership.membership().voter_ids().next().is_some(),
        leader: m.current_leader,
        term: m.current_term,
        last_log_index: m.last_log_index,
        last_applied: m.last_applied.map(|l| l.index),
        membership: Some(membership),
    }
}

/// Starts serving the cluster port, refuses to go on if this data dir was wiped under an id the
/// cluster knows, then lets Raft in and starts bootstrap and the join announcement.
/// `fresh`: this node's Raft log was empty when it opened.
pub(crate) async fn start(b: &Broker, opts: &ClusterOptions, me: Credentials, fresh: bool) -> Result<(), BrokerError> {
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|e| BrokerError::Storage(format!("binding the cluster port {}: {e}", opts.listen)))?;
    let gate = Arc::new(Gate { broker: b.clone(), open: AtomicBool::new(false) });
    let stop = b.inner.shutdown.subscribe();
    let server = tokio::spawn(transport::serve(listener, me, gate.clone(), stop));
    b.track(server);
    check_incarnation(b, opts.wait_for, fresh).await?;
    gate.open.store(true, Ordering::Release);
    let broker = b.clone();
    let opts = opts.clone();
    b.track(tokio::spawn(async move { bootstrap(&broker, &opts).await }));
    let broker = b.clone();
    b.track(tokio::spawn(async move { announce(&broker).await }));
    Ok(())
}

/// Asks each `(node, address)` for its status, in parallel, each bounded by [`PROBE_TIMEOUT`];
/// the answers by node (`None`: no answer).
async fn probe(b: &Broker, targets: Vec<(NodeId, String)>) -> BTreeMap<NodeId, Option<NodeStatus>> {
    let calls = targets.into_iter().map(|(id, addr)| async move {
        match b.inner.directory.peers.call(id, &addr, Call::Status, PROBE_TIMEOUT).await {
            Ok(Reply::Status(s)) => (id, Some(*s)),
            _ => (id, None),
        }
    });
    join_all(calls).await.into_iter().collect()
}

/// The status of every configured peer that answered.
async fn probe_peers(b: &Broker) -> Vec<NodeStatus> {
    let me = b.node_id();
    let targets = b.inner.directory.configured().iter().filter(|(id, _)| **id != me).map(|(id, a)| (*id, a.clone()));
    probe(b, targets.collect()).await.into_values().flatten().collect()
}

/// Refuses a node whose incarnation differs from the one a peer's membership records for its id:
/// its data dir was wiped (or replaced) since it last took part. A node whose own log is empty
/// waits until at least one peer answers (unless it may go active alone, `wait_for` 1), so it
/// cannot slip in while they are merely slow.
async fn check_incarnation(b: &Broker, wait_for: usize, fresh: bool) -> Result<(), BrokerError> {
    let me = b.node_id();
    let others = b.inner.directory.configured().keys().filter(|id| **id != me).count();
    let mut waited = Instant::now();
    loop {
        let answers = probe_peers(b).await;
        for s in &answers {
            let Some(known) = s.membership.as_ref().and_then(|m| m.membership().get_node(&me).cloned()) else {
                continue;
            };
            if !known.incarnation.is_empty() && known.incarnation != b.inner.member.incarnation {
                return Err(BrokerError::DataDir(format!(
                    "node {me} of cluster {cluster}: this data dir ({dir}) is not the one the cluster knows as node \
                     {me} (incarnation {mine}, the cluster recorded {known}). It was wiped or replaced, and a node \
                     that lost its data may not rejoin under its old id: it could have acknowledged writes it no \
                     longer holds. Remove it with DELETE /v1/cluster/nodes/{me}, then rejoin as a new node: start \
                     with another --node-id and an empty data dir, and add it with POST /v1/cluster/nodes.",
                    cluster = b.cluster_id(),
                    dir = b.data_dir().display(),
                    mine = b.inner.member.incarnation,
                    known = known.incarnation,
                )));
            }
        }
        if !answers.is_empty() || others == 0 || !fresh || wait_for <= 1 {
            return Ok(());
        }
        if waited.elapsed() >= Duration::from_secs(5) {
            tracing::info!(node = me, "new data dir: waiting for a peer to answer before joining");
            waited = Instant::now();
        }
        if *b.inner.shutdown.borrow() {
            return Err(BrokerError::ShuttingDown);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The lowest configured id initializes the cluster, once `wait_for` peers answer and none of
/// them is already part of an initialized cluster.
async fn bootstrap(b: &Broker, opts: &ClusterOptions) {
    let me = b.node_id();
    let configured = b.inner.directory.configured().clone();
    if configured.keys().next() != Some(&me) {
        return;
    }
    let mut shutdown = b.inner.shutdown.subscribe();
    let mut logged = Instant::now() - Duration::from_secs(60);
    loop {
        match b.inner.raft().is_initialized().await {
            Ok(true) | Err(_) => return,
            Ok(false) => {}
        }
        let answers = probe_peers(b).await;
        if answers.iter().any(|s| s.initialized) {
            return;
        }
        let up = answers.len() + 1;
        if up >= opts.wait_for.max(1) {
            // Each peer that answered is recorded with its incarnation from the start, so a
            // wiped one is recognised however soon it is wiped.
            let members: BTreeMap<NodeId, Member> = configured
                .iter()
                .map(|(id, addr)| {
                    let member = if *id == me {
                        b.inner.member.clone()
                    } else {
                        let answered = answers.iter().find(|s| s.node_id == *id).map(|s| s.member.clone());
                        Member { cluster_addr: addr.clone(), ..answered.unwrap_or_default() }
                    };
                    (*id, member)
                })
                .collect();
            match b.inner.raft().initialize(members).await {
                Ok(()) => tracing::info!(node = me, members = configured.len(), "cluster initialized"),
                Err(e) => tracing::info!(node = me, error = %e, "cluster not initialized here"),
            }
            return;
        }
        if logged.elapsed() >= Duration::from_secs(5) {
            tracing::info!(up, wait_for = opts.wait_for, "waiting for members before the cluster goes active");
            logged = Instant::now();
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Until the membership records this node's incarnation and API address, tells the leader.
async fn announce(b: &Broker) {
    let me = b.node_id();
    let mut shutdown = b.inner.shutdown.subscribe();
    loop {
        let recorded = {
            let m = b.inner.raft().metrics();
            let m = m.borrow();
            m.membership_config.membership().get_node(&me).cloned()
        };
        match recorded {
            Some(r) if r.records_join(&b.inner.member) => return,
            Some(_) => {
                let join = || Call::Join(b.inner.member.clone());
                let result = match call_leader(b, join, Duration::from_secs(5), Duration::from_secs(5)).await {
                    Ok(Routed::Here) => record_join(b, me, b.inner.member.clone()).await,
                    Ok(Routed::Answered(Reply::Done(r))) => r,
                    Ok(Routed::Answered(other)) => Err(unexpected(other)),
                    Err(e) => Err(e),
                };
                match result {
                    Err(e @ BrokerError::DataDir(_)) => {
                        tracing::error!(error = %e, "this node's data dir is not the one the cluster knows");
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "join not recorded yet"),
                    Ok(()) => {}
                }
            }
            None => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Where a call meant for the leader was answered.
// Returned once per call and matched at once: boxing the reply would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Routed {
    /// This node leads: the caller handles the call itself.
    Here,
    /// The leader answered.
    Answered(Reply),
}

/// Sends a call to the current leader, each attempt bounded by `per_call`. While no leader is
/// known, or the known one refuses (it no longer leads) or cannot be reached (nothing was sent),
/// it waits for a leader change and tries again, up to `wait` in all. A call that was sent but
/// got no answer is not repeated: its outcome is unknown.
pub(crate) async fn call_leader(
    b: &Broker,
    call: impl Fn() -> Call,
    wait: Duration,
    per_call: Duration,
) -> Result<Routed, BrokerError> {
    let deadline = Instant::now() + wait;
    let mut metrics = b.inner.raft().metrics();
    loop {
        let target = {
            let m = metrics.borrow_and_update();
            m.current_leader.map(|l| (l, b.inner.directory.address(l, m.membership_config.membership().get_node(&l))))
        };
        let why = match target {
            Some((l, _)) if l == b.node_id() => return Ok(Routed::Here),
            Some((l, Some(addr))) => match b.inner.directory.peers.call(l, &addr, call(), per_call).await {
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

pub(crate) fn unexpected(reply: Reply) -> BrokerError {
    unavailable(format!("unexpected answer from the leader: {reply:?}"))
}

async fn leader_read_index(b: &Broker) -> Result<u64, BrokerError> {
    match tokio::time::timeout(b.inner.leader_wait, b.inner.raft().ensure_linearizable()).await {
        Ok(Ok(log_id)) => Ok(log_id.map_or(0, |l| l.index)),
        Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)))) => {
            Err(unavailable(format!("no quorum confirms this leader (reached: {:?})", q.got)))
        }
        Ok(Err(e)) => Err(unavailable(format!("leadership not confirmed: {e}"))),
        Err(_) => Err(unavailable("leadership not confirmed by a quorum in time")),
    }
}

/// The index a read must wait for: confirmed by the leader (this node or another).
pub(crate) async fn read_index(b: &Broker, deadline: Instant) -> Result<u64, BrokerError> {
    let left = deadline.saturating_duration_since(Instant::now());
    match call_leader(b, || Call::ReadIndex, left, left.max(Duration::from_millis(100))).await? {
        Routed::Here => leader_read_index(b).await,
        Routed::Answered(Reply::ReadIndex(r)) => r,
        Routed::Answered(other) => Err(unexpected(other)),
    }
}

/// Records a member's incarnation and API address in the membership (on the leader).
async fn record_join(b: &Broker, from: NodeId, member: Member) -> Result<(), BrokerError> {
    if !leads(b) {
        return Err(unavailable("not the leader"));
    }
    let known = b.inner.raft().metrics().borrow().membership_config.membership().get_node(&from).cloned();
    let Some(known) = known else {
        return Err(BrokerError::Membership(format!(
            "node {from} is not a member; add it with POST /v1/cluster/nodes"
        )));
    };
    if !known.incarnation.is_empty() && known.incarnation != member.incarnation {
        return Err(BrokerError::DataDir(format!(
            "node {from} presents incarnation {}, the cluster recorded {}: rejoin as a new node",
            member.incarnation, known.incarnation
        )));
    }
    if known.records_join(&member) {
        return Ok(());
    }
    let update = Member { cluster_addr: known.cluster_addr.clone(), ..member };
    change(b, ChangeMembers::SetNodes(BTreeMap::from([(from, update)]))).await
}

async fn change(b: &Broker, changes: ChangeMembers<NodeId, Member>) -> Result<(), BrokerError> {
    match tokio::time::timeout(CATCH_UP_TIMEOUT, b.inner.raft().change_membership(changes, true)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(membership_error(e)),
        Err(_) => Err(unavailable("the membership change was not committed in time")),
    }
}

fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> BrokerError {
    match e {
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => BrokerError::Membership(e.to_string()),
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => unavailable("leadership changed; retry"),
        RaftError::Fatal(e) => BrokerError::Storage(e.to_string()),
    }
}

async fn add_node_here(b: &Broker, id: NodeId, member: Member) -> Result<(), BrokerError> {
    if !leads(b) {
        return Err(unavailable("not the leader"));
    }
    let membership = b.inner.raft().metrics().borrow().membership_config.membership().clone();
    if membership.voter_ids().any(|v| v == id) {
        return Ok(());
    }
    if membership.get_node(&id).is_none() {
        // The new node's incarnation is recorded from the start, so a wipe is always recognised.
        let addr = b.inner.directory.address(id, Some(&member)).unwrap_or_default();
        let member = match b.inner.directory.peers.call(id, &addr, Call::Status, PROBE_TIMEOUT * 4).await {
            Ok(Reply::Status(s)) => Member { incarnation: s.member.incarnation, ..member },
            _ => return Err(unavailable(format!("node {id} does not answer at {addr}: start it first"))),
        };
        let added = tokio::time::timeout(CATCH_UP_TIMEOUT, b.inner.raft().add_learner(id, member, true)).await;
        match added {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(membership_error(e)),
            Err(_) => return Err(unavailable("the new node did not catch up in time; it stays a learner, retry")),
        }
    }
    let caught_up = b
        .inner
        .raft()
        .wait(Some(CATCH_UP_TIMEOUT))
        .metrics(
            |m| {
                let last = m.last_log_index;
                m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map(|l| l.index) >= last
            },
            "the learner caught up",
        )
        .await;
    if caught_up.is_err() {
        return Err(unavailable("the new node did not catch up in time; it stays a learner, retry"));
    }
    change(b, ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await
}

async fn remove_node_here(b: &Broker, id: NodeId) -> Result<(), BrokerError> {
    if !leads(b) {
        return Err(unavailable("not the leader"));
    }
    let membership = b.inner.raft().metrics().borrow().membership_config.membership().clone();
    if membership.get_node(&id).is_none() {
        return Err(BrokerError::NoSuchNode(id));
    }
    if membership.voter_ids().any(|v| v == id) {
        if membership.voter_ids().count() == 1 {
            return Err(BrokerError::Membership(format!("node {id} is the last voter")));
        }
        change(b, ChangeMembers::RemoveVoters(BTreeSet::from([id]))).await?;
    }
    change(b, ChangeMembers::RemoveNodes(BTreeSet::from([id]))).await
}

impl Broker {
    /// Adds node `id` as a learner, waits for it to catch up, and makes it a voter.
    pub async fn add_node(&self, id: NodeId, api_addr: String, cluster_addr: String) -> Result<(), BrokerError> {
        self.require_cluster()?;
        let member = Member { cluster_addr, api_addr, incarnation: String::new() };
        let call = || Call::AddNode { id, member: member.clone() };
        match call_leader(self, call, self.inner.leader_wait, CATCH_UP_TIMEOUT + Duration::from_secs(5)).await? {
            Routed::Here => add_node_here(self, id, member).await,
            Routed::Answered(Reply::Done(r)) => r,
            Routed::Answered(other) => Err(unexpected(other)),
        }
    }

    /// Removes node `id` from the cluster (as a voter, then entirely).
    pub async fn remove_node(&self, id: NodeId) -> Result<(), BrokerError> {
        self.require_cluster()?;
        let call = || Call::RemoveNode(id);
        match call_leader(self, call, self.inner.leader_wait, CATCH_UP_TIMEOUT + Duration::from_secs(5)).await? {
            Routed::Here => remove_node_here(self, id).await,
            Routed::Answered(Reply::Done(r)) => r,
            Routed::Answered(other) => Err(unexpected(other)),
        }
    }

    fn require_cluster(&self) -> Result<(), BrokerError> {
        match self.inner.cluster {
            Some(_) => Ok(()),
            None => Err(BrokerError::Membership(
                "this node runs without a cluster port; start it with a cluster secret to add nodes".into(),
            )),
        }
    }

    /// The cluster as this node sees it; other members are probed (each bounded by
    /// [`PROBE_TIMEOUT`]) for reachability and their API address.
    pub async fn cluster_view(&self) -> ClusterView {
        let m = self.inner.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let leader_view = m.state == ServerState::Leader;
        let targets = membership
            .nodes()
            .filter(|(id, _)| **id != self.node_id())
            .filter_map(|(id, node)| Some((*id, self.inner.directory.address(*id, Some(node))?)))
            .collect();
        let probed = probe(self, targets).await;
        let nodes = membership
            .nodes()
            .map(|(id, node)| {
                let me = *id == self.node_id();
                let status = probed.get(id).cloned().flatten();
                let api_addr = if me {
                    self.inner.member.api_addr.clone()
                } else {
                    status.as_ref().map(|s| s.member.api_addr.clone()).unwrap_or_else(|| node.api_addr.clone())
                };
                let matched_index = if leader_view {
                    m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map(|l| l.index)
                } else {
                    None
                };
                NodeView {
                    id: *id,
                    api_addr,
                    cluster_addr: self.inner.directory.address(*id, Some(node)).unwrap_or_default(),
                    role: if voters.contains(id) { "voter" } else { "learner" }.to_owned(),
                    matched_index,
                    reachable: me || status.is_some(),
                }
            })
            .collect();
        ClusterView {
            cluster_id: self.cluster_id().to_owned(),
            node_id: self.node_id(),
            leader_id: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            nodes,
        }
    }
}
