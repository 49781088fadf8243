//! Membership operations behind `/v1/cluster`: adding and removing nodes, recording a member's
//! join, and the cluster as this node sees it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};

use super::probe::probe;
use super::{ClusterView, NodeView, PROBE_TIMEOUT};
use crate::error::BrokerError;
use crate::net::rpc::{Call, Reply};
use crate::raft::{Member, NodeId};
use crate::replica::{call_leader, unavailable, unexpected, Replica, Routed};

/// How long adding a node may wait for it to catch up before answering (it stays a learner and
/// is promoted by a later call).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// Records a member's incarnation and API address in the membership (on the leader).
pub(super) async fn record_join(r: &Replica, from: NodeId, member: Member) -> Result<(), BrokerError> {
    if !r.leads() {
        return Err(unavailable("not the leader"));
    }
    let known = r.raft().metrics().borrow().membership_config.membership().get_node(&from).cloned();
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
    change(r, ChangeMembers::SetNodes(BTreeMap::from([(from, update)]))).await
}

async fn change(r: &Replica, changes: ChangeMembers<NodeId, Member>) -> Result<(), BrokerError> {
    match tokio::time::timeout(CATCH_UP_TIMEOUT, r.raft().change_membership(changes, true)).await {
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

pub(super) async fn add_node_here(r: &Replica, id: NodeId, member: Member) -> Result<(), BrokerError> {
    if !r.leads() {
        return Err(unavailable("not the leader"));
    }
    let membership = r.raft().metrics().borrow().membership_config.membership().clone();
    if membership.voter_ids().any(|v| v == id) {
        return Ok(());
    }
    if membership.get_node(&id).is_none() {
        // The new node's incarnation is recorded from the start, so a wipe is always recognised.
        let addr = r.directory.address(id, Some(&member)).unwrap_or_default();
        let member = match r.directory.peers.call(id, &addr, Call::Status, PROBE_TIMEOUT * 4).await {
            Ok(Reply::Status(s)) => Member { incarnation: s.member.incarnation, ..member },
            _ => return Err(unavailable(format!("node {id} does not answer at {addr}: start it first"))),
        };
        let added = tokio::time::timeout(CATCH_UP_TIMEOUT, r.raft().add_learner(id, member, true)).await;
        match added {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(membership_error(e)),
            Err(_) => return Err(unavailable("the new node did not catch up in time; it stays a learner, retry")),
        }
    }
    let caught_up = r
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
    change(r, ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await
}

pub(super) async fn remove_node_here(r: &Replica, id: NodeId) -> Result<(), BrokerError> {
    if !r.leads() {
        return Err(unavailable("not the leader"));
    }
    let membership = r.raft().metrics().borrow().membership_config.membership().clone();
    if membership.get_node(&id).is_none() {
        return Err(BrokerError::NoSuchNode(id));
    }
    if membership.voter_ids().any(|v| v == id) {
        if membership.voter_ids().count() == 1 {
            return Err(BrokerError::Membership(format!("node {id} is the last voter")));
        }
        change(r, ChangeMembers::RemoveVoters(BTreeSet::from([id]))).await?;
    }
    change(r, ChangeMembers::RemoveNodes(BTreeSet::from([id]))).await
}

/// Adds node `id` as a learner, waits for it to catch up, and makes it a voter.
pub(crate) async fn add_node(
    r: &Replica,
    id: NodeId,
    api_addr: String,
    cluster_addr: String,
) -> Result<(), BrokerError> {
    require_cluster(r)?;
    let member = Member { cluster_addr, api_addr, incarnation: String::new() };
    let call = || Call::AddNode { id, member: member.clone() };
    match call_leader(r, call, r.leader_wait, CATCH_UP_TIMEOUT + Duration::from_secs(5)).await? {
        Routed::Here => add_node_here(r, id, member).await,
        Routed::Answered(Reply::Done(r)) => r,
        Routed::Answered(other) => Err(unexpected(other)),
    }
}

/// Removes node `id` from the cluster (as a voter, then entirely).
pub(crate) async fn remove_node(r: &Replica, id: NodeId) -> Result<(), BrokerError> {
    require_cluster(r)?;
    let call = || Call::RemoveNode(id);
    match call_leader(r, call, r.leader_wait, CATCH_UP_TIMEOUT + Duration::from_secs(5)).await? {
        Routed::Here => remove_node_here(r, id).await,
        Routed::Answered(Reply::Done(r)) => r,
        Routed::Answered(other) => Err(unexpected(other)),
    }
}

fn require_cluster(r: &Replica) -> Result<(), BrokerError> {
    if r.clustered {
        return Ok(());
    }
    Err(BrokerError::Membership(
        "this node runs without a cluster port; start it with a cluster secret to add nodes".into(),
    ))
}

/// The cluster as this node sees it; other members are probed (each bounded by
/// [`PROBE_TIMEOUT`]) for reachability and their API address.
pub(crate) async fn cluster_view(r: &Replica) -> ClusterView {
    let m = r.raft().metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let leader_view = m.state == ServerState::Leader;
    let targets = membership
        .nodes()
        .filter(|(id, _)| **id != r.node_id)
        .filter_map(|(id, node)| Some((*id, r.directory.address(*id, Some(node))?)))
        .collect();
    let probed = probe(r, targets).await;
    let nodes = membership
        .nodes()
        .map(|(id, node)| {
            let me = *id == r.node_id;
            let status = probed.get(id).cloned().flatten();
            let api_addr = if me {
                r.member.api_addr.clone()
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
                cluster_addr: r.directory.address(*id, Some(node)).unwrap_or_default(),
                role: if voters.contains(id) { "voter" } else { "learner" }.to_owned(),
                matched_index,
                reachable: me || status.is_some(),
            }
        })
        .collect();
    ClusterView {
        cluster_id: r.cluster_id.clone(),
        node_id: r.node_id,
        leader_id: m.current_leader,
        term: m.current_term,
        last_log_index: m.last_log_index,
        last_applied: m.last_applied.map(|l| l.index),
        nodes,
    }
}
