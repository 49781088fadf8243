//! openraft glue: the type configuration, the log store, the state machine and snapshots.
//!
//! A single node is a Raft cluster of one and runs exactly this code; more nodes add a network,
//! not a different path.

// openraft's traits return its `StorageError` (224 bytes); our helpers return the same type so
// errors pass through unchanged. Boxing it would only move the cost.
#![allow(clippy::result_large_err)]

pub mod codec;
pub(crate) mod durable_file;
pub mod log_store;
pub mod purged;
pub mod snapshot;
pub mod state_machine;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::station::{Envelope, Outcome};

/// One Raft entry's payload: every command the proposer coalesced while the previous entry was
/// being made durable. One fsync carries them all (group commit above openraft, which awaits each
/// append's flush before starting the next).
///
/// The commands are shared: the log store's cache keeps the entry while the state machine
/// applies it and followers are sent it, and each of those takes a copy. On disk and on the
/// wire it is the plain sequence of commands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub envelopes: Arc<[Envelope]>,
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proposal({} commands)", self.envelopes.len())
    }
}

/// A message read back from a station log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub offset: u64,
    pub produced_at: crate::station::Millis,
    pub deliver_at: crate::station::Millis,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub payload: bytes::Bytes,
}

impl StoredMessage {
    /// Stands in for a message still to be read from the bucket.
    pub(crate) fn placeholder(offset: u64) -> StoredMessage {
        StoredMessage {
            offset,
            produced_at: 0,
            deliver_at: 0,
            content_type: String::new(),
            headers: Vec::new(),
            payload: bytes::Bytes::new(),
        }
    }
}

/// What applying one command answered. `messages` is filled for `Fetch` only, aligned with the
/// deliveries of `Outcome::Fetched`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub outcome: Outcome,
    pub messages: Vec<StoredMessage>,
    /// For `Fetch`: the id of the station the deliveries were made on, as of the apply (the
    /// incarnation their receipts are bound to).
    pub station_id: Option<u64>,
}

/// The answers to one [`Proposal`], in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalResult {
    pub applied: Vec<Applied>,
}

pub type NodeId = u64;

/// What the membership records about a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Where other nodes reach it (its cluster port).
    pub cluster_addr: String,
    /// Its public API, for operators; empty until the node has told the leader.
    pub api_addr: String,
    /// The random id of its data dir; empty until the node has told the leader. A node on a
    /// wiped dir has a new one and is refused under its old id.
    pub incarnation: String,
}

impl Member {
    /// Whether this record already holds what a node's join announces (its API address and
    /// incarnation). The cluster address is the one peers dial, which the joining node may know
    /// under another name, so a join never changes it.
    pub fn records_join(&self, joining: &Member) -> bool {
        self.api_addr == joining.api_addr && self.incarnation == joining.incarnation
    }
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cluster {} api {}", self.cluster_addr, self.api_addr)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Proposal,
        R = ProposalResult,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = snapshot::SnapshotStream,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;

/// Maps any error into openraft's storage error for the given subject and verb.
pub(crate) fn storage_err(
    subject: openraft::ErrorSubject<NodeId>,
    verb: openraft::ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}
