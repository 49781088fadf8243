//! Joining a cluster at start: the incarnation check, bootstrap by the lowest id, and telling
//! the leader this node's incarnation and API address.

use std::collections::BTreeMap;
use std::time::Duration;

use super::membership::record_join;
use super::probe::probe_peers;
use super::ClusterOptions;
use crate::error::BrokerError;
use crate::net::rpc::{Call, NodeStatus, Reply};
use crate::raft::{Member, NodeId};
use crate::replica::{call_leader, unexpected, Replica, Routed};

/// Refuses a node whose incarnation differs from the one a peer's membership records for its id:
/// its data dir was wiped (or replaced) since it last took part. A node whose own log is empty
/// waits until at least one peer answers (unless it may go active alone, `wait_for` 1), so it
/// cannot slip in while they are merely slow.
pub(super) async fn check_incarnation(r: &Replica, opts: &ClusterOptions, fresh: bool) -> Result<(), BrokerError> {
    let me = r.node_id;
    let wait_for = opts.wait_for;
    let others = r.directory.configured().keys().filter(|id| **id != me).count();
    loop {
        let answers = probe_peers(r).await;
        observe(r, opts, &answers);
        for s in &answers {
            let Some(known) = s.membership.as_ref().and_then(|m| m.membership().get_node(&me).cloned()) else {
                continue;
            };
            if !known.incarnation.is_empty() && known.incarnation != r.member.incarnation {
                return Err(BrokerError::DataDir(format!(
                    "node {me} of cluster {cluster}: this data dir ({dir}) is not the one the cluster knows as node \
                     {me} (incarnation {mine}, the cluster recorded {known}). It was wiped or replaced, and a node \
                     that lost its data may not rejoin under its old id: it could have acknowledged writes it no \
                     longer holds. Remove it with DELETE /v1/cluster/nodes/{me}, then rejoin as a new node: start \
                     with another --node-id and an empty data dir, and add it with POST /v1/cluster/nodes.",
                    cluster = r.cluster_id,
                    dir = r.data_dir.display(),
                    mine = r.member.incarnation,
                    known = known.incarnation,
                )));
            }
        }
        if !answers.is_empty() || others == 0 || !fresh || wait_for <= 1 {
            return Ok(());
        }
        if *r.shutdown.borrow() {
            return Err(BrokerError::ShuttingDown);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The lowest configured id initializes the cluster, once `wait_for` peers answer and none of
/// them is already part of an initialized cluster.
pub(super) async fn bootstrap(r: &Replica, opts: &ClusterOptions) {
    let me = r.node_id;
    let configured = r.directory.configured().clone();
    if configured.keys().next() != Some(&me) {
        return;
    }
    let mut shutdown = r.shutdown.subscribe();
    loop {
        match r.raft().is_initialized().await {
            Ok(true) | Err(_) => return,
            Ok(false) => {}
        }
        let answers = probe_peers(r).await;
        observe(r, opts, &answers);
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
                        r.member.clone()
                    } else {
                        let answered = answers.iter().find(|s| s.node_id == *id).map(|s| s.member.clone());
                        Member { cluster_addr: addr.clone(), ..answered.unwrap_or_default() }
                    };
                    (*id, member)
                })
                .collect();
            match r.raft().initialize(members).await {
                Ok(()) => tracing::info!(node = me, members = configured.len(), "cluster initialized"),
                Err(e) => tracing::info!(node = me, error = %e, "cluster not initialized here"),
            }
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Until the membership records this node's incarnation and API address, tells the leader.
pub(super) async fn announce(r: &Replica) {
    let me = r.node_id;
    let mut shutdown = r.shutdown.subscribe();
    loop {
        let recorded = {
            let m = r.raft().metrics();
            let m = m.borrow();
            m.membership_config.membership().get_node(&me).cloned()
        };
        match recorded {
            Some(recorded) if recorded.records_join(&r.member) => return,
            Some(_) => {
                let join = || Call::Join(r.member.clone());
                let result = match call_leader(r, join, Duration::from_secs(5), Duration::from_secs(5)).await {
                    Ok(Routed::Here) => record_join(r, me, r.member.clone()).await,
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

/// Records which configured nodes answered, for `/readyz` and the log (one line per change).
fn observe(r: &Replica, opts: &ClusterOptions, answers: &[NodeStatus]) {
    let configured: Vec<NodeId> = r.directory.configured().keys().copied().collect();
    let answered: Vec<NodeId> = answers.iter().map(|s| s.node_id).collect();
    opts.startup.observe(r.node_id, &configured, &answered, opts.wait_for);
}

/// Until this node knows a leader, keeps probing the configured peers so the start's progress
/// stays current; then marks the start over.
pub(super) async fn track_startup(r: &Replica, opts: &ClusterOptions) {
    let mut shutdown = r.shutdown.subscribe();
    loop {
        let leader = r.raft().metrics().borrow().current_leader;
        if let Some(leader) = leader {
            opts.startup.activate(r.node_id, leader);
            return;
        }
        let answers = probe_peers(r).await;
        observe(r, opts, &answers);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
