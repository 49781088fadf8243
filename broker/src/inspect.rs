//! `depot admin inspect`: what a data dir holds, read offline and without changing a byte.
//!
//! Nothing here opens a log for writing, runs recovery or fsyncs: the Raft log's last entry is
//! found by a read-only scan, the vote and purge point come from `raft/raft-meta`, the identity
//! from `cluster-identity`, and clean or dirty from the clean-shutdown marker. A dir a running
//! node holds (see [`crate::dir_lock`]) is reported as running, with a note that it was read
//! while it changes; its marker is gone, so it reads as dirty, which is what it would be if that
//! node were killed at this moment.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::broker::CLEAN_MARKER;
use crate::dir_lock::{self, Holder};
use crate::identity;
use crate::log::TailState;
use crate::raft::log_store::read_on_disk;
use crate::raft::snapshot::read_current_meta;
use crate::raft::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{}: no such directory", path.display())]
    Missing { path: PathBuf },
    #[error("{}: not a depot data dir ({reason})", path.display())]
    NotADataDir { path: PathBuf, reason: String },
    #[error("{}: {detail}", path.display())]
    Unreadable { path: PathBuf, detail: String },
}

/// A Raft log position: the term of the leader that wrote the entry, and its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Position {
    pub term: u64,
    pub index: u64,
}

/// The latest vote the node persisted: the term it is in and whom it voted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct VoteView {
    pub term: u64,
    pub voted_for: Option<NodeId>,
    /// The vote was granted by a quorum (its node led in that term).
    pub committed: bool,
}

/// The process that held a data dir when it was inspected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Running {
    pub pid: Option<u32>,
}

/// What one data dir holds.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    pub path: String,
    /// `None` for a dir written before identities existed (the next start records one).
    pub cluster_id: Option<String>,
    pub node_id: Option<NodeId>,
    /// The last entry of the Raft log (or the snapshot it was purged up to); `None` if empty.
    pub last: Option<Position>,
    pub vote: Option<VoteView>,
    /// Known committed: the index the last snapshot covers (the commit index itself is not
    /// persisted, so entries past it may be committed too).
    pub committed_index: Option<u64>,
    /// Whether the clean-shutdown marker is present. A running node's dir is dirty.
    pub clean: bool,
    /// A running process holds the dir's lock (its pid, when it recorded one): what was read may
    /// already be out of date.
    pub running: Option<Running>,
    /// Problems found in the log's tail: a torn write the next start cuts off, or corruption it
    /// refuses.
    pub notes: Vec<String>,
}

impl Inspection {
    pub fn last_index(&self) -> Option<u64> {
        self.last.map(|p| p.index)
    }

    pub fn last_term(&self) -> Option<u64> {
        self.last.map(|p| p.term)
    }

    /// How up to date the store is, as Raft compares logs ((term, index) of the last entry),
    /// with a clean shutdown preferred on ties.
    fn rank(&self) -> (Option<Position>, bool) {
        (self.last, self.clean)
    }
}

/// Reads `dir` offline. Errors name the dir; a corrupt tail is a note, not an error.
pub fn inspect(dir: &Path) -> Result<Inspection, InspectError> {
    let path = dir.to_path_buf();
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(InspectError::Missing { path }),
        Err(e) => return Err(InspectError::Unreadable { path, detail: e.to_string() }),
    };
    if !meta.is_dir() {
        return Err(InspectError::NotADataDir { path, reason: "not a directory".into() });
    }
    let raft_dir = dir.join("raft");
    let identity_path = identity::identity_path(dir);
    if !raft_dir.is_dir() && !identity_path.exists() {
        return Err(InspectError::NotADataDir {
            path,
            reason: format!("neither raft/ nor {} is there", identity::IDENTITY_FILE),
        });
    }
    let unreadable = |detail: String| InspectError::Unreadable { path: dir.to_path_buf(), detail };
    let identity = identity::read(dir).map_err(|e| unreadable(e.to_string()))?;
    let log = read_on_disk(&raft_dir).map_err(|e| unreadable(format!("raft log: {e}")))?;
    let snapshot = read_current_meta(&dir.join("sm")).map_err(|e| unreadable(format!("snapshot: {e}")))?;
    let clean = dir.join(CLEAN_MARKER).exists();
    let running = match dir_lock::holder(dir).map_err(|e| unreadable(format!("{}: {e}", dir_lock::LOCK_FILE)))? {
        Holder::Free => None,
        Holder::Held { pid } => Some(Running { pid }),
    };

    let mut notes = Vec::new();
    if let Some(Running { pid }) = running {
        let who = pid.map_or_else(|| "a running depot".to_owned(), |pid| format!("a running depot (pid {pid})"));
        notes.push(format!(
            "{who} holds this dir: it was read (and not changed) while that node writes it, so it may already \
             be out of date"
        ));
    }
    match &log.tail {
        TailState::Clean => {}
        TailState::Torn { path, position, detail } => notes.push(format!(
            "torn write at byte {position} of {} ({detail}): never acknowledged, the next start cuts it off",
            path.display()
        )),
        TailState::Corrupt { path, position, detail } => notes.push(format!(
            "corrupt record at byte {position} of {} ({detail}): the next start refuses this log",
            path.display()
        )),
    }
    if clean && !matches!(log.tail, TailState::Clean) {
        notes.push("marked clean, yet the log tail is damaged".into());
    }
    Ok(Inspection {
        path: dir.display().to_string(),
        cluster_id: identity.as_ref().map(|i| i.cluster_id.clone()),
        node_id: identity.map(|i| i.node_id),
        last: log.last_log_id.map(|id| Position { term: id.leader_id.term, index: id.index }),
        vote: log.vote.map(|v| VoteView {
            term: v.leader_id.term,
            voted_for: v.leader_id.voted_for(),
            committed: v.committed,
        }),
        committed_index: snapshot.and_then(|m| m.last_log_id).map(|id| id.index),
        clean,
        running,
        notes,
    })
}

/// The position in `stores` of the latest store: highest (term, index) of the last entry, a
/// clean one preferred on ties, the first given on full ties. `None` if `stores` is empty.
pub fn latest(stores: &[Inspection]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, store) in stores.iter().enumerate() {
        if best.is_none_or(|b| store.rank() > stores[b].rank()) {
            best = Some(i);
        }
    }
    best
}
