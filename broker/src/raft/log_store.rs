//! The Raft log on disk: a [`SegmentedLog`] keyed by log index, plus a small meta file for the
//! vote and the purge point.
//!
//! openraft's storage rules, and how they hold here:
//! - the vote is on disk before `save_vote` returns (atomic replace + fsync of file and dir);
//! - `append` writes the entries to the OS, so they are readable at once, and hands the fsync to
//!   a [`GroupCommit`] thread, which calls openraft's callback only after the fsync succeeded;
//! - truncation removes entries from the end backwards and is durable before it returns, and a
//!   purge only moves the start, so the log never has holes (segments a power cut left below the
//!   purge point are removed before the log is opened: see [`super::purged`]);
//! - a purge never passes the state machine's durable snapshot: openraft asks a follower to purge
//!   the log a snapshot covers while that snapshot is still being installed, so what `purge`
//!   persists and deletes is clamped to the snapshot `current` names on disk
//!   ([`DurableSnapshot`]), and the rest is done once a later snapshot is durable.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend};
use serde::{Deserialize, Serialize};

use super::codec::{decode_entry, encode_entry};
use super::{durable_file, storage_err, Entry, LogId, StorageError, TypeConfig, Vote};
use crate::log::{last_record, GroupCommit, LogOptions, SegmentedLog, TailState};

/// Recently appended entries kept decoded, so applying them does not read them back from disk.
const CACHE_BYTES: usize = 64 << 20;
/// The payload bytes one AppendEntries carries, beyond its first entry.
const APPEND_BYTES: usize = 1 << 20;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct RaftMeta {
    vote: Option<Vote>,
    last_purged: Option<LogId>,
}

/// The last log index covered by the state machine's durable snapshot (the one `current` names,
/// fsynced), shared by the state machine, which moves it, and the log store, which never purges
/// past it. Clones share one value.
#[derive(Clone, Default)]
pub struct DurableSnapshot(Arc<(Mutex<Option<u64>>, Condvar)>);

impl DurableSnapshot {
    /// The snapshot covering entries up to `index` is durable (`None`: there is none).
    pub fn set(&self, index: Option<u64>) {
        let (value, changed) = &*self.0;
        *value.lock().unwrap_or_else(|p| p.into_inner()) = index;
        changed.notify_all();
    }

    pub fn get(&self) -> Option<u64> {
        *self.0 .0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits up to `timeout` for a durable snapshot covering `index`; true when there is one.
    fn wait_for(&self, index: u64, timeout: Duration) -> bool {
        let (value, changed) = &*self.0;
        let guard = value.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = changed
            .wait_timeout_while(guard, timeout, |v| v.is_none_or(|v| v < index))
            .unwrap_or_else(|p| p.into_inner());
        guard.is_some_and(|v| v >= index)
    }
}

/// How long an append that must follow a purge waits for the snapshot that purge needs.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(30);

struct Inner {
    log: SegmentedLog,
    meta: RaftMeta,
    /// The purge openraft asked for, past what the durable snapshot allows so far.
    purge_wanted: Option<LogId>,
    /// `meta.last_purged` moved past the purge point in the meta file (no file deleted since).
    purge_unsaved: bool,
    /// Not linked (`None`): purges are not clamped (a log store used without a state machine).
    durable: Option<DurableSnapshot>,
    meta_path: PathBuf,
    last_log_id: Option<LogId>,
    cache: BTreeMap<u64, (Entry, usize)>,
    cache_bytes: usize,
    buf: Vec<u8>,
}

/// The Raft log store; clones share one log, which is how openraft's log reader is served.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    committer: Arc<GroupCommit>,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock already stopped Raft; the data on disk is what counts.
    inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LogStore {
    /// Opens the log in `dir/log` with `opts` (see [`LogOptions::after_clean_shutdown`]).
    pub fn open(dir: &Path, opts: LogOptions) -> Result<LogStore, StorageError> {
        let logs = |e: crate::log::LogError| storage_err(ErrorSubject::Logs, ErrorVerb::Read, e);
        let io = |e: std::io::Error| storage_err(ErrorSubject::Logs, ErrorVerb::Read, e);
        let meta_path = dir.join("raft-meta");
        let meta: RaftMeta = durable_file::read(&meta_path)
            .map_err(|e| storage_err(ErrorSubject::Vote, ErrorVerb::Read, e))?
            .unwrap_or_default();
        let purged_next = meta.last_purged.map_or(0, |id| id.index + 1);
        let dropped = super::purged::drop_segments_below(&dir.join("log"), purged_next).map_err(io)?;
        if dropped > 0 {
            tracing::warn!(segments = dropped, "raft log: removed segments a power cut left below the purge point");
        }
        let (log, recovery) = SegmentedLog::open(&dir.join("log"), opts).map_err(logs)?;
        if let Some((path, pos)) = &recovery.torn_tail {
            tracing::warn!(path = %path.display(), position = pos, "raft log: truncated a torn tail that was never acknowledged");
        }
        let mut inner = Inner {
            log,
            meta,
            purge_wanted: None,
            purge_unsaved: false,
            durable: None,
            meta_path,
            last_log_id: None,
            cache: BTreeMap::new(),
            cache_bytes: 0,
            buf: Vec::new(),
        };
        if !inner.log.is_empty() {
            if inner.log.first_seq() > purged_next {
                return Err(io(std::io::Error::other(format!(
                    "raft log starts at index {} but everything before {} should be present: a hole",
                    inner.log.first_seq(),
                    purged_next
                ))));
            }
            if inner.log.first_seq() < purged_next {
                inner.log.purge_before(purged_next).map_err(logs)?;
            }
        }
        if !inner.log.is_empty() {
            let last = inner.log.next_seq() - 1;
            let bytes = inner.log.read(last).map_err(logs)?.ok_or_else(|| io(missing(last)))?;
            let entry = decode_entry(&bytes).map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            inner.last_log_id = Some(entry.log_id);
        }
        Ok(LogStore { inner: Arc::new(Mutex::new(inner)), committer: Arc::new(GroupCommit::spawn("raft-log-sync")) })
    }

    /// Links the log to the state machine's durable snapshot: from here on a purge never passes
    /// it (see the module doc).
    pub fn link_snapshot(&self, durable: DurableSnapshot) {
        lock(&self.inner).durable = Some(durable);
    }

    /// The purge point on disk.
    pub fn last_purged(&self) -> Option<LogId> {
        lock(&self.inner).meta.last_purged
    }

    /// Index of the last entry on disk, if any.
    pub fn last_index(&self) -> Option<u64> {
        lock(&self.inner).last_log_id.map(|id| id.index)
    }

    /// Nothing was ever stored: no entry, no purge, no vote.
    pub fn is_pristine(&self) -> bool {
        let inner = lock(&self.inner);
        inner.last_log_id.is_none() && inner.meta.last_purged.is_none() && inner.meta.vote.is_none()
    }
}

/// The Raft log as the next [`LogStore::open`] would find it, read without modifying anything.
#[derive(Clone, Debug)]
pub struct LogOnDisk {
    pub vote: Option<Vote>,
    pub last_purged: Option<LogId>,
    /// The last entry's id, or the purge point when no entry follows it.
    pub last_log_id: Option<LogId>,
    /// What follows the last valid entry on disk.
    pub tail: TailState,
}

/// Reads the vote, the purge point and the last entry of the Raft log in `dir` (the directory
/// [`LogStore::open`] takes) with read-only handles: no recovery, no truncation, no fsync.
pub fn read_on_disk(dir: &Path) -> Result<LogOnDisk, Box<dyn std::error::Error + Send + Sync>> {
    let meta: RaftMeta = durable_file::read(&dir.join("raft-meta"))?.unwrap_or_default();
    let last = last_record(&dir.join("log"))?;
    let mut last_log_id = match &last.record {
        Some((index, bytes)) => {
            let entry = decode_entry(bytes)?;
            if entry.log_id.index != *index {
                return Err(format!("raft log record {index} holds entry {}", entry.log_id.index).into());
            }
            Some(entry.log_id)
        }
        None => None,
    };
    if last_log_id.is_none_or(|id| meta.last_purged.is_some_and(|p| id.index <= p.index)) {
        last_log_id = meta.last_purged;
    }
    Ok(LogOnDisk { vote: meta.vote, last_purged: meta.last_purged, last_log_id, tail: last.tail })
}

fn missing(index: u64) -> std::io::Error {
    std::io::Error::other(format!("raft log entry {index} is missing"))
}

impl Inner {
    /// Entries `start..end`, stopping early (after at least one) once `budget` bytes are read.
    fn read_entries(&mut self, start: u64, end: u64, budget: usize) -> Result<Vec<Entry>, StorageError> {
        let start = start.max(self.log.first_seq());
        let end = end.min(self.log.next_seq());
        let mut out = Vec::with_capacity(end.saturating_sub(start).min(1024) as usize);
        let mut read = 0;
        for index in start..end {
            if !out.is_empty() && read >= budget {
                break;
            }
            if let Some((entry, size)) = self.cache.get(&index) {
                read += size;
                out.push(entry.clone());
                continue;
            }
            let err = |e: crate::log::LogError| storage_err(ErrorSubject::LogIndex(index), ErrorVerb::Read, e);
            let bytes = self
                .log
                .read(index)
                .map_err(err)?
                .ok_or_else(|| storage_err(ErrorSubject::LogIndex(index), ErrorVerb::Read, missing(index)))?;
            read += bytes.len();
            out.push(decode_entry(&bytes).map_err(|e| storage_err(ErrorSubject::LogIndex(index), ErrorVerb::Read, e))?);
        }
        Ok(out)
    }

    fn cache_insert(&mut self, index: u64, entry: Entry, size: usize) {
        self.cache_bytes += size;
        if let Some((_, old)) = self.cache.insert(index, (entry, size)) {
            self.cache_bytes -= old;
        }
        while self.cache_bytes > CACHE_BYTES {
            match self.cache.pop_first() {
                Some((_, (_, size))) => self.cache_bytes -= size,
                None => break,
            }
        }
    }

    /// Carries out as much of the wanted purge as the durable snapshot allows: persists the
    /// purge point first, then deletes (a crash between leaves extra old segments, which the next
    /// open removes; never a hole).
    fn advance_purge(&mut self) -> Result<(), StorageError> {
        let Some(wanted) = self.purge_wanted else { return Ok(()) };
        let allowed = match &self.durable {
            None => wanted.index,
            Some(d) => match d.get() {
                Some(index) => index.min(wanted.index),
                None => return Ok(()),
            },
        };
        let target = if allowed == wanted.index {
            wanted
        } else {
            // Short of what openraft asked: the id of the last entry the snapshot covers, which
            // is still in the log (nothing past the durable purge point was deleted).
            match self.cache.get(&allowed) {
                Some((entry, _)) => entry.log_id,
                None => match self.read_entries(allowed, allowed + 1, usize::MAX) {
                    Ok(mut entries) if entries.len() == 1 => entries.remove(0).log_id,
                    // Not in this log: wait for a snapshot that reaches the log's entries.
                    _ => return Ok(()),
                },
            }
        };
        let err = |e| storage_err(ErrorSubject::Log(target), ErrorVerb::Delete, e);
        let reset = target.index >= self.log.next_seq() || self.log.is_empty();
        if self.meta.last_purged.is_none_or(|p| p.index < target.index) {
            self.meta.last_purged = Some(target);
            self.purge_unsaved = true;
        }
        // The purge point on disk must cover every file deleted. A purge that deletes none
        // only moves the log's start in memory, and the meta file (two fsyncs, on the thread
        // that runs Raft) is written with the next purge that deletes a segment: a crash before
        // that leaves an older purge point with the entries after it still present, which is
        // what the log looked like before this purge.
        if self.purge_unsaved && (reset || self.log.purge_deletes_files(target.index + 1)) {
            self.save_meta()?;
        }
        if reset {
            self.log.reset(target.index + 1).map_err(err)?;
        } else {
            // The purge point is durable above, and `open` drops what a power cut left below it.
            self.log.purge_before_covered(target.index + 1).map_err(err)?;
        }
        if target == wanted {
            self.purge_wanted = None;
        }
        Ok(())
    }

    fn save_meta(&mut self) -> Result<(), StorageError> {
        durable_file::write_atomic(&self.meta_path, &self.meta)
            .map_err(|e| storage_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.purge_unsaved = false;
        Ok(())
    }
}

fn range_to_bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e + 1,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = range_to_bounds(&range);
        lock(&self.inner).read_entries(start, end, usize::MAX)
    }

    /// What one AppendEntries carries: bounded in bytes, because openraft gives each append
    /// only the heartbeat interval to complete. A follower far behind catches up in many
    /// appends that each finish in time, never in one that times out and is retried forever.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        lock(&self.inner).read_entries(start, end, APPEND_BYTES)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = lock(&self.inner);
        let last_purged_log_id = inner.meta.last_purged;
        Ok(LogState { last_purged_log_id, last_log_id: inner.last_log_id.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut inner = lock(&self.inner);
        inner.meta.vote = Some(*vote);
        inner.save_meta()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(lock(&self.inner).meta.vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let point = {
            let mut inner = lock(&self.inner);
            inner.advance_purge()?;
            for entry in entries {
                let index = entry.log_id.index;
                let log_id = entry.log_id;
                if let Some(wanted) = inner.purge_wanted.filter(|_| index > inner.log.next_seq()) {
                    // Past a purge still waiting for its snapshot (a follower's install, whose
                    // `current` openraft does not wait for before new entries arrive): the log
                    // continues only once that snapshot is durable and the purge is done.
                    let durable = inner.durable.clone().unwrap_or_default();
                    drop(inner);
                    let ready = durable.wait_for(wanted.index, SNAPSHOT_WAIT);
                    inner = lock(&self.inner);
                    if !ready {
                        return Err(storage_err(
                            ErrorSubject::Log(log_id),
                            ErrorVerb::Write,
                            std::io::Error::other(format!(
                                "entry {index} follows a purge up to {} whose snapshot is not durable after {SNAPSHOT_WAIT:?}",
                                wanted.index
                            )),
                        ));
                    }
                    inner.advance_purge()?;
                }
                if inner.log.is_empty() && inner.log.next_seq() != index {
                    // An empty log (fresh, or purged up to a snapshot) starts wherever the next
                    // entry does; a non-empty one must stay contiguous.
                    inner.log.reset(index).map_err(|e| storage_err(ErrorSubject::Log(log_id), ErrorVerb::Write, e))?;
                }
                let mut buf = std::mem::take(&mut inner.buf);
                encode_entry(&entry, &mut buf)
                    .map_err(|e| storage_err(ErrorSubject::Log(log_id), ErrorVerb::Write, e))?;
                inner
                    .log
                    .append(index, &buf)
                    .map_err(|e| storage_err(ErrorSubject::Log(log_id), ErrorVerb::Write, e))?;
                let size = buf.len();
                inner.buf = buf;
                inner.last_log_id = Some(entry.log_id);
                inner.cache_insert(index, entry, size);
            }
            inner.log.sync_point()
        };
        self.committer.submit(point, Box::new(move |result| callback.log_io_completed(result)));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = lock(&self.inner);
        let err = |e| storage_err(ErrorSubject::Log(log_id), ErrorVerb::Delete, e);
        inner.log.truncate_from(log_id.index).map_err(err)?;
        let _ = inner.cache.split_off(&log_id.index);
        inner.cache_bytes = inner.cache.values().map(|(_, size)| size).sum();
        inner.last_log_id = if log_id.index == 0 || inner.log.is_empty() {
            inner.meta.last_purged
        } else {
            let last = log_id.index - 1;
            match inner.cache.get(&last) {
                Some((entry, _)) => Some(entry.log_id),
                None => inner.read_entries(last, last + 1, usize::MAX)?.pop().map(|e| e.log_id),
            }
        };
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = lock(&self.inner);
        if inner.purge_wanted.is_none_or(|w| w.index < log_id.index) {
            inner.purge_wanted = Some(log_id);
        }
        inner.advance_purge()?;
        let keep = inner.cache.split_off(&(log_id.index + 1));
        let purged = std::mem::replace(&mut inner.cache, keep);
        let freed: usize = purged.values().map(|(_, size)| size).sum();
        inner.cache_bytes = inner.cache_bytes.saturating_sub(freed);
        // Up to `CACHE_BYTES` of entries: freeing them took milliseconds on the thread that
        // runs Raft, after every snapshot.
        crate::log::drop_later(purged);
        if inner.last_log_id.is_none_or(|last| last.index <= log_id.index) {
            inner.last_log_id = Some(log_id);
        }
        Ok(())
    }
}
