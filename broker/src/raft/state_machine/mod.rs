//! The Raft state machine: the pure [`BrokerState`] plus one [`SegmentedLog`] per station.
//!
//! Applying a committed entry runs each command through `BrokerState::apply` (which decides
//! offsets, deliveries and receipts) and then does the I/O that decision implies: append produced
//! payloads to the station log, read fetched ones back. Station logs are not fsynced on apply:
//! the Raft log already made the command durable, so a crash only loses what replaying the Raft
//! log redoes. They are fsynced when a snapshot is built, and only then may Raft purge its log.
//!
//! Deleting data is deferred to the same point: retention and station deletion remove files only
//! after a snapshot that no longer needs them is durable, so recovery from the current snapshot
//! always finds every segment it refers to.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend};
use tokio::sync::watch;

use super::codec::{decode_message, decode_meta};
use super::log_store::DurableSnapshot;
use super::snapshot::{self, ArchiveReader, SnapshotFile, SnapshotStream};
use super::{
    durable_file, storage_err, Applied, Entry, LogId, ProposalResult, SnapshotMeta, StorageError, StoredMembership,
    StoredMessage, TypeConfig,
};
use crate::log::{FileCache, FileCacheStats, SegmentedLog, Verify};
use crate::station::{BrokerState, Command, Effect, Envelope, Outcome, Produced, TieredSegment};

mod snapshots;
mod station_logs;
mod tiered;
mod unwritten;
mod wakes;

use unwritten::Unwritten;
pub use wakes::StationChanges;
use wakes::{StationWakes, Touched};

/// Where a retained message is: read from the local log, or in a tiered object.
#[derive(Clone, Debug)]
pub enum Stored {
    Local(StoredMessage),
    Tiered(TieredSegment),
}

use station_logs::{load_snapshot, remove_stale, remove_trash};

/// Where snapshots from the leader are received and unpacked, beside `snapshots/` (whose
/// builds clear out every name but their own) and moved into it when installed.
const INCOMING: &str = "incoming";

#[derive(Clone, Debug)]
pub struct SmOptions {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub verify: Verify,
    /// Holds the descriptors of every station log's segments and directory, so open files stay
    /// bounded however many stations there are.
    pub files: Arc<FileCache>,
    /// This node reads tiered data from the bucket, so it deletes its local copies of
    /// catalogued segments. Off (a node without a bucket), it keeps them and serves every read
    /// from its own disk.
    pub drop_tiered_copies: bool,
}

impl SmOptions {
    pub fn new(dir: PathBuf, segment_bytes: u64, verify: Verify, max_open_files: usize) -> SmOptions {
        SmOptions { dir, segment_bytes, verify, files: FileCache::new(max_open_files), drop_tiered_copies: false }
    }
}

struct Inner {
    opts: SmOptions,
    state: BrokerState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    logs: BTreeMap<u64, SegmentedLog>,
    /// The metas files of stations whose oldest segments were tiered and deleted locally.
    metas: BTreeMap<u64, tiered::StationMetas>,
    /// Deletions waiting for a snapshot taken at or after the log index they were applied at.
    deferred: Vec<(u64, Effect)>,
    current: Option<(SnapshotMeta, PathBuf)>,
    /// Local copies of tiered segments were deleted after `current` was captured: it still
    /// links them, so a node catching up from it would receive tiered data (see
    /// [`StateMachine::snapshot_links_deleted`]).
    current_links_deleted: bool,
    snapshot_seq: u64,
}

pub struct Shared {
    inner: RwLock<Inner>,
    /// Held while a snapshot is built or installed, and by shutdown: snapshot I/O runs outside
    /// `inner` and must never outlive the broker that started it.
    /// The flag is set by `close`; snapshot I/O that starts after it is refused.
    snapshot_io: Mutex<bool>,
    /// Bumped after every applied batch; the ticker waits on it.
    applied: watch::Sender<u64>,
    /// Long polls wait on these: only the stations a batch changed are woken.
    wakes: StationWakes,
    /// Bumped by `reload`: handles of an earlier generation (held by a Raft core that quit) are
    /// fenced off, so nothing they do lands on the state reloaded from disk.
    generation: AtomicU64,
    /// An apply or snapshot install failed part way: the state in memory may be half changed.
    failed: AtomicBool,
    /// The highest index applied before a reload from disk: until the state is back there,
    /// reads must wait (see `Broker::barrier`), or they would see it go back in time.
    floor: AtomicU64,
    /// What the snapshot `current` names on disk covers: the Raft log never purges past it.
    durable: DurableSnapshot,
}

/// The state machine handed to openraft; clones share the same state.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
    generation: u64,
}

pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    generation: u64,
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    storage_err(ErrorSubject::StateMachine, ErrorVerb::Write, e)
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError {
    storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> durable_file::FileError + '_ {
    move |source| durable_file::FileError::Io { path: path.to_path_buf(), source }
}

fn station_dir(root: &Path, id: u64) -> PathBuf {
    root.join("stations").join(format!("{id:020}"))
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn snapshot_io(&self) -> MutexGuard<'_, bool> {
        self.snapshot_io.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StateMachine {
    /// Opens the state machine from its current snapshot and the station logs beside it. Raft
    /// then re-applies committed entries after the snapshot.
    pub fn open(opts: SmOptions) -> Result<StateMachine, StorageError> {
        let inner = load(opts)?;
        let (applied, _) = watch::channel(0);
        let durable = DurableSnapshot::default();
        durable.set(inner.snapshot_index());
        Ok(StateMachine {
            shared: Arc::new(Shared {
                inner: RwLock::new(inner),
                snapshot_io: Mutex::new(false),
                applied,
                wakes: StationWakes::new(),
                generation: AtomicU64::new(0),
                failed: AtomicBool::new(false),
                floor: AtomicU64::new(0),
                durable,
            }),
            generation: 0,
        })
    }

    /// The handle for a Raft core rebuilt after a storage failure; every older handle is fenced
    /// off (its calls fail) from here on, so the core that quit cannot touch the state again.
    /// Readers and subscribers keep their handles.
    ///
    /// When the failure hit the Raft log, what is in memory is exactly what was applied, and is
    /// kept: reads never go back. When it hit an apply or a snapshot install, the state may be
    /// half changed and is reloaded from disk, as `open` would; reads then see the last
    /// snapshot plus the station logs until the new core has re-applied the committed entries.
    pub fn for_new_core(&self) -> Result<StateMachine, StorageError> {
        let _snapshot_io = self.shared.snapshot_io();
        let mut inner = self.shared.write();
        let generation = self.shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
        if self.shared.failed.load(Ordering::Acquire) {
            tracing::warn!("the state machine failed part way through a change: reloading it from disk");
            let before = inner.last_applied.map_or(0, |id| id.index);
            self.shared.floor.fetch_max(before, Ordering::AcqRel);
            let mut opts = inner.opts.clone();
            opts.verify = Verify::Full;
            *inner = load(opts)?;
            self.shared.failed.store(false, Ordering::Release);
            let last = inner.last_applied.map_or(0, |id| id.index);
            drop(inner);
            self.shared.applied.send_replace(last);
            self.shared.wakes.wake(&Touched::everything());
        }
        Ok(StateMachine { shared: self.shared.clone(), generation })
    }

    /// The durable snapshot's reach, for [`super::log_store::LogStore::link_snapshot`].
    pub fn durable_snapshot(&self) -> DurableSnapshot {
        self.shared.durable.clone()
    }

    fn failed<T>(&self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if result.is_err() {
            self.shared.failed.store(true, Ordering::Release);
        }
        result
    }

    fn fenced(&self) -> Result<(), StorageError> {
        fence(&self.shared, self.generation)
    }
}

fn fence(shared: &Shared, generation: u64) -> Result<(), StorageError> {
    if shared.generation.load(Ordering::Acquire) == generation {
        Ok(())
    } else {
        Err(sm_err(std::io::Error::other(
            "this Raft core's state machine was reloaded from disk after a storage failure",
        )))
    }
}

/// The state machine's state as on disk: the current snapshot and the station logs beside it.
fn load(opts: SmOptions) -> Result<Inner, StorageError> {
    let root = opts.dir.clone();
    for sub in ["stations", "snapshots", INCOMING] {
        let path = root.join(sub);
        crate::dirs::ensure_durable(&path).map_err(io_err(&path)).map_err(sm_err)?;
    }
    remove_trash(&root).map_err(sm_err)?;
    // Snapshots from the leader that were being received or unpacked when the node stopped.
    remove_stale(&root.join(INCOMING), None).map_err(sm_err)?;
    let current: Option<String> = durable_file::read(&root.join("current")).map_err(sm_err)?;
    let mut inner = Inner {
        opts,
        state: BrokerState::default(),
        last_applied: None,
        membership: StoredMembership::default(),
        logs: BTreeMap::new(),
        metas: BTreeMap::new(),
        deferred: Vec::new(),
        current: None,
        current_links_deleted: false,
        snapshot_seq: 0,
    };
    if let Some(name) = &current {
        let dir = root.join("snapshots").join(name);
        let (manifest, state) = load_snapshot(&dir).map_err(sm_err)?;
        inner.state = state;
        inner.last_applied = manifest.meta.last_log_id;
        inner.membership = manifest.meta.last_membership.clone();
        inner.current = Some((manifest.meta, dir));
    }
    remove_stale(&root.join("snapshots"), current.as_deref()).map_err(sm_err)?;
    inner.open_station_logs()?;
    Ok(inner)
}

impl StateMachine {
    /// Reads the replicated state. Keep `f` short: apply waits for it.
    pub fn read<R>(&self, f: impl FnOnce(&BrokerState) -> R) -> R {
        f(&self.shared.read().state)
    }

    /// A station's sealed segments (every one but the one being appended to), oldest first.
    pub fn sealed_segments(&self, station_id: u64) -> Vec<crate::log::SegmentInfo> {
        let inner = self.shared.read();
        let mut segments = inner.logs.get(&station_id).map(SegmentedLog::segments).unwrap_or_default();
        segments.pop();
        segments
    }

    /// What the station logs' descriptor cache holds.
    pub fn open_files(&self) -> FileCacheStats {
        self.shared.read().opts.files.stats()
    }

    pub fn last_applied(&self) -> Option<LogId> {
        self.shared.read().last_applied
    }

    /// Reads see a state at least this recent once `last_applied` reaches it: after a reload
    /// from disk, the index applied before it; else 0.
    pub fn floor(&self) -> u64 {
        self.shared.floor.load(Ordering::Acquire)
    }

    /// Changes whenever a batch of entries has been applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.applied.subscribe()
    }

    /// Changes from now on that may make something ready on `station`: batches with a command
    /// on it, and those that may have changed every station (see `wakes`).
    pub fn station_changes(&self, station: &str) -> StationChanges {
        self.shared.wakes.subscribe(station)
    }

    /// Reads one retained message of a station; `None` outside the retained range. A message
    /// whose local copy was deleted after tiering answers where it is in the bucket.
    pub fn read_message(&self, station: &str, offset: u64) -> Result<Option<Stored>, StorageError> {
        let inner = self.shared.read();
        let Some(id) = inner.state.station_id(station) else { return Ok(None) };
        let retained = inner.state.station_offsets(id).is_some_and(|(first, next)| (first..next).contains(&offset));
        let Some(log) = inner.logs.get(&id).filter(|_| retained) else { return Ok(None) };
        if offset < log.first_seq() {
            return Ok(inner.state.tiered_segment_at(id, offset).map(Stored::Tiered));
        }
        match log.read(offset).map_err(sm_err)? {
            Some(record) => Ok(Some(Stored::Local(decode_message(offset, record).map_err(sm_err)?))),
            None => Ok(None),
        }
    }

    /// Reads the messages of an applied `Fetch` into `applied.messages`, aligned with its
    /// deliveries. A delivery whose message retention removed (or whose station was deleted)
    /// since the apply is dropped: it cannot be consumed, and its group forgets it as it
    /// forgets every removed message. Messages whose local copies were deleted after tiering
    /// are left as placeholders (offset only) and answered in the result, with their segments,
    /// for the caller to read from the bucket outside the lock.
    pub fn read_fetched(&self, applied: &mut Applied) -> Result<Vec<(usize, TieredSegment)>, StorageError> {
        let (Outcome::Fetched(deliveries), Some(id)) = (&mut applied.outcome, applied.station_id) else {
            return Ok(Vec::new());
        };
        let inner = self.shared.read();
        let Some(log) = inner.logs.get(&id) else {
            deliveries.clear();
            return Ok(Vec::new());
        };
        let retained = inner.state.station_offsets(id);
        let mut messages = Vec::with_capacity(deliveries.len());
        let mut kept = Vec::with_capacity(deliveries.len());
        let mut tiered = Vec::new();
        let offsets: Vec<u64> = deliveries.iter().map(|d| d.receipt.offset).collect();
        // Records read ahead, the first of them at offset `run_at`: a fetch mostly hands out
        // consecutive offsets, read together (see `SegmentedLog::read_run`).
        let (mut run, mut run_at) = (Vec::new().into_iter(), 0);
        for (i, d) in deliveries.drain(..).enumerate() {
            let offset = d.receipt.offset;
            if !retained.is_some_and(|(first, next)| (first..next).contains(&offset)) {
                continue;
            }
            if offset < log.first_seq() {
                let Some(segment) = inner.state.tiered_segment_at(id, offset) else { continue };
                tiered.push((messages.len(), segment));
                messages.push(StoredMessage::placeholder(offset));
            } else {
                if run_at != offset || run.len() == 0 {
                    let consecutive = offsets[i..].windows(2).take_while(|w| w[1] == w[0] + 1).count();
                    run = log.read_run(offset, consecutive + 1).map_err(sm_err)?.into_iter();
                    run_at = offset;
                }
                let Some(record) = run.next() else { continue };
                run_at += 1;
                messages.push(decode_message(offset, record).map_err(sm_err)?);
            }
            kept.push(d);
        }
        *deliveries = kept;
        applied.messages = messages;
        Ok(tiered)
    }

    /// Whether local copies of tiered segments were deleted since the current snapshot was
    /// captured: that snapshot still links them (a start from it finds them), so it must be
    /// followed by another one, listing the metas files instead, before a node that catches up
    /// from a snapshot receives only metas (and before the disk holds the files no longer).
    pub fn snapshot_links_deleted(&self) -> bool {
        self.shared.read().current_links_deleted
    }

    /// Bytes of local copies of tiered segments that the next snapshot lets this node delete.
    pub fn freeable_tiered_bytes(&self) -> u64 {
        let inner = self.shared.read();
        if !inner.opts.drop_tiered_copies {
            return 0;
        }
        inner.logs.keys().filter_map(|&id| inner.freeable(id)).map(|(_, bytes)| bytes).sum()
    }

    /// Bytes of station `id` on this node's disk: its log's segments and metas files.
    pub fn local_bytes(&self, id: u64) -> u64 {
        let inner = self.shared.read();
        let log = inner.logs.get(&id).map_or(0, SegmentedLog::bytes);
        log + inner.metas.get(&id).map_or(0, |files| files.values().map(|m| m.len).sum())
    }

    /// For a clean shutdown: waits for snapshot I/O in progress, refuses any later, and fsyncs
    /// every station log.
    pub fn close(&self) -> Result<(), StorageError> {
        let mut closed = self.shared.snapshot_io();
        *closed = true;
        let mut inner = self.shared.write();
        for log in inner.logs.values_mut() {
            log.sync().map_err(sm_err)?;
        }
        Ok(())
    }
}

impl Inner {
    /// Applies command `k` of `commands`; its new messages join `unwritten`, which the caller
    /// writes before it lets go of the state.
    fn apply_envelope(
        &mut self,
        index: u64,
        commands: &Arc<[Envelope]>,
        k: usize,
        unwritten: &mut Unwritten,
    ) -> Result<Applied, StorageError> {
        let Some(env) = commands.get(k) else {
            return Err(sm_err(std::io::Error::other(format!("entry {index} has no command {k}"))));
        };
        let outcome = self.state.apply(env);
        let mut station_id = None;
        match (&env.command, &outcome) {
            (Command::Produce { .. } | Command::Ingest { .. }, Outcome::Produced(results)) => {
                let new = env.command.new_messages();
                // An ingest's station is its source's, which a successful ingest leaves in place.
                let station = match &env.command {
                    Command::Ingest { source, .. } => self.state.source(source).map(|s| s.config.station.as_str()),
                    _ => env.command.station(),
                };
                let id = station.and_then(|station| self.state.station_id(station));
                let produced_at = self.state.clock();
                if let Some(id) = id.filter(|id| self.logs.contains_key(id)) {
                    // The new messages, by offset; runs of consecutive offsets, across commands,
                    // go to the log in one write each.
                    for (m, result) in results.iter().enumerate().take(new.len()) {
                        if let Ok(Produced { offset, duplicate: false }) = result {
                            unwritten.push(&mut self.logs, id, *offset, (produced_at, commands, k, m))?;
                        }
                    }
                }
            }
            (Command::Fetch { station, .. } | Command::PushFetch { station, .. }, Outcome::Fetched(_)) => {
                // The messages are read by the node that proposed the fetch, after the apply
                // (`read_fetched`): every other replica would read them for nothing.
                station_id = self.state.station_id(station);
            }
            _ => {}
        }
        for effect in self.state.take_effects() {
            match effect {
                Effect::StationCreated { id, .. } => {
                    let dir = station_dir(&self.opts.dir, id);
                    let (mut log, _) = self.open_log(&dir)?;
                    if !log.is_empty() || log.next_seq() != 0 {
                        log.reset(0).map_err(sm_err)?;
                    }
                    self.logs.insert(id, log);
                }
                Effect::StationDropped { id } => {
                    unwritten.write(&mut self.logs)?;
                    self.logs.remove(&id);
                    self.metas.remove(&id);
                    self.deferred.push((index, effect));
                }
                Effect::PrefixRemoved { .. } => self.deferred.push((index, effect)),
            }
        }
        Ok(Applied { outcome, messages: Vec::new(), station_id })
    }

    /// Runs deletions that the snapshot at `upto` no longer needs.
    fn run_deferred(&mut self, upto: u64) -> Result<(), StorageError> {
        let pending = std::mem::take(&mut self.deferred);
        for (index, effect) in pending {
            if index > upto {
                self.deferred.push((index, effect));
                continue;
            }
            match effect {
                Effect::PrefixRemoved { id, first_offset } => {
                    if let Some(log) = self.logs.get_mut(&id) {
                        log.purge_before(first_offset).map_err(sm_err)?;
                    }
                    self.drop_metas_below(id, first_offset)?;
                }
                Effect::StationDropped { id } => {
                    self.metas.remove(&id);
                    let dir = station_dir(&self.opts.dir, id);
                    if dir.exists() {
                        fs::remove_dir_all(&dir).map_err(io_err(&dir)).map_err(sm_err)?;
                    }
                }
                Effect::StationCreated { .. } => {}
            }
        }
        self.drop_tiered_copies()
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let inner = self.shared.read();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ProposalResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let mut last = 0;
        let mut touched = Touched::default();
        let mut unwritten = Unwritten::default();
        {
            let mut inner = self.shared.write();
            self.fenced()?;
            for entry in entries {
                last = entry.log_id.index;
                inner.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => results.push(ProposalResult::default()),
                    EntryPayload::Normal(proposal) => {
                        let mut applied = Vec::with_capacity(proposal.envelopes.len());
                        for (k, env) in proposal.envelopes.iter().enumerate() {
                            // Before the apply: an ingest's station is its source's, which a
                            // later command of the batch may delete.
                            touched.note(&inner.state, &env.command);
                            let outcome =
                                inner.apply_envelope(entry.log_id.index, &proposal.envelopes, k, &mut unwritten);
                            applied.push(self.failed(outcome)?);
                        }
                        results.push(ProposalResult { applied });
                    }
                    EntryPayload::Membership(m) => {
                        inner.membership = StoredMembership::new(Some(entry.log_id), m);
                        results.push(ProposalResult::default());
                    }
                }
            }
            let inner = &mut *inner;
            let written = unwritten.write(&mut inner.logs);
            self.failed(written)?;
        }
        self.shared.applied.send_replace(last);
        self.shared.wakes.wake(&touched);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { shared: self.shared.clone(), generation: self.generation }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotStream>, StorageError> {
        self.fenced()?;
        let path = {
            let mut inner = self.shared.write();
            inner.snapshot_seq += 1;
            inner.opts.dir.join(INCOMING).join(format!("stream-{}", inner.snapshot_seq))
        };
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(snap_err)?;
        Ok(Box::new(SnapshotStream::Incoming { file, path }))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotStream>,
    ) -> Result<(), StorageError> {
        let installed = self.install(meta, snapshot).await;
        self.failed(installed)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self.shared.read().current.clone();
        match current {
            Some((meta, dir)) => {
                let reader = ArchiveReader::open(&dir).map_err(snap_err)?;
                Ok(Some(Snapshot { meta, snapshot: Box::new(SnapshotStream::Archive(reader)) }))
            }
            None => Ok(None),
        }
    }
}
