//! How far a member's start has come: which configured nodes answer, until the cluster has a
//! leader this node knows. Shown by `/readyz` (also while the broker is still opening) and logged
//! once per change, naming the nodes still missing.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::raft::NodeId;

/// A handle the caller creates before [`crate::Broker::open`] and reads while it runs; clones
/// share it.
#[derive(Clone, Debug, Default)]
pub struct StartupProgress(Arc<Mutex<Progress>>);

/// What a starting member knows about its peers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Every configured node, this one included.
    pub configured: Vec<NodeId>,
    /// The configured nodes that answered the last probe, this one included.
    pub up: Vec<NodeId>,
    /// Nodes that must answer before the lowest id initializes a new cluster.
    pub wait_for: usize,
    /// This node knows a leader: the start is over.
    pub active: bool,
}

impl Progress {
    /// The configured nodes that did not answer the last probe.
    pub fn missing(&self) -> Vec<NodeId> {
        self.configured.iter().copied().filter(|id| !self.up.contains(id)).collect()
    }

    /// One line for the log and `/readyz`: "1 of 3 nodes up, waiting for 2, 3".
    pub fn describe(&self) -> String {
        let missing = self.missing();
        let mut text = format!("{} of {} nodes up", self.up.len(), self.configured.len());
        if missing.is_empty() {
            text.push_str(", waiting for a leader");
        } else {
            let names: Vec<String> = missing.iter().map(u64::to_string).collect();
            text.push_str(&format!(", waiting for {}", names.join(", ")));
        }
        text
    }
}

impl StartupProgress {
    pub fn new() -> StartupProgress {
        StartupProgress::default()
    }

    pub fn get(&self) -> Progress {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records which nodes answered; logs the new state when it differs from the last.
    pub(crate) fn observe(&self, me: NodeId, configured: &[NodeId], answered: &[NodeId], wait_for: usize) {
        let mut up: Vec<NodeId> = configured.iter().copied().filter(|id| *id == me || answered.contains(id)).collect();
        up.dedup();
        let mut p = self.lock();
        if p.active || (p.configured == configured && p.up == up && p.wait_for == wait_for) {
            return;
        }
        p.configured = configured.to_vec();
        p.up = up;
        p.wait_for = wait_for;
        let line = p.describe();
        drop(p);
        tracing::info!(node = me, "{line}");
    }

    /// The node knows a leader: logged once.
    pub(crate) fn activate(&self, me: NodeId, leader: NodeId) {
        let mut p = self.lock();
        if p.active {
            return;
        }
        p.active = true;
        drop(p);
        tracing::info!(node = me, leader, "the cluster is active: node {leader} leads");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_missing_nodes_and_changes_once() {
        let progress = StartupProgress::new();
        progress.observe(1, &[1, 2, 3], &[], 2);
        let p = progress.get();
        assert_eq!((p.up.clone(), p.missing()), (vec![1], vec![2, 3]));
        assert_eq!(p.describe(), "1 of 3 nodes up, waiting for 2, 3");
        progress.observe(1, &[1, 2, 3], &[3], 2);
        assert_eq!(progress.get().describe(), "2 of 3 nodes up, waiting for 2");
        progress.observe(1, &[1, 2, 3], &[2, 3], 2);
        assert_eq!(progress.get().describe(), "3 of 3 nodes up, waiting for a leader");
        progress.activate(1, 1);
        assert!(progress.get().active);
        // Once active, later probes change nothing.
        progress.observe(1, &[1, 2, 3], &[], 2);
        assert_eq!(progress.get().up, vec![1, 2, 3]);
    }
}
