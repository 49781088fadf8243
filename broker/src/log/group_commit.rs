//! Dirty tracking, `SyncPoint`s and the background group committer.
//!
//! Durability bookkeeping uses a per-log epoch counter: every change that needs an fsync
//! (a write to a segment, a file created in the directory) bumps the epoch and tags the
//! affected file (or the directory) with it. A `SyncPoint` captures every handle tagged after
//! the log's `durable` epoch together with the current epoch; once all of them are synced,
//! every change up to that epoch is durable, so `durable` advances to it. Invariant: every
//! change tagged `<= durable` has been fsynced. This lets `sync_point(&self)` stay cheap and
//! read-only while handles that are already durable drop out of later sync points.

use std::fmt;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle, ThreadId};

use tracing::error;

use super::handle::Handle;

pub(crate) struct DirtyTracker {
    epoch: u64,
    files: Vec<(Arc<Handle>, u64)>,
    /// Epoch of the last directory change not yet known durable; 0 = clean.
    dir_epoch: u64,
    durable: Arc<AtomicU64>,
}

impl DirtyTracker {
    pub fn new() -> Self {
        DirtyTracker { epoch: 0, files: Vec::new(), dir_epoch: 0, durable: Arc::new(AtomicU64::new(0)) }
    }

    pub fn mark_file(&mut self, file: &Arc<Handle>) {
        self.epoch += 1;
        let epoch = self.epoch;
        // Almost always the active segment, i.e. the last entry.
        if let Some(entry) = self.files.iter_mut().rev().find(|(f, _)| Arc::ptr_eq(f, file)) {
            entry.1 = epoch;
            return;
        }
        let durable = self.durable.load(Ordering::Acquire);
        self.files.retain(|(_, e)| *e > durable);
        self.files.push((Arc::clone(file), epoch));
    }

    pub fn mark_dir(&mut self) {
        self.epoch += 1;
        self.dir_epoch = self.epoch;
    }

    /// True if a directory change is not yet known durable.
    pub fn dir_dirty(&self) -> bool {
        self.dir_epoch > self.durable.load(Ordering::Acquire)
    }

    /// The file was fully synced (or deleted) directly by the log.
    pub fn forget_file(&mut self, file: &Arc<Handle>) {
        self.files.retain(|(f, _)| !Arc::ptr_eq(f, file));
    }

    /// The directory was fsynced directly by the log.
    pub fn dir_synced(&mut self) {
        self.dir_epoch = 0;
    }

    pub fn point(&self, dir: &Arc<Handle>) -> SyncPoint {
        let durable = self.durable.load(Ordering::Acquire);
        SyncPoint {
            files: self.files.iter().filter(|(_, e)| *e > durable).map(|(f, _)| Arc::clone(f)).collect(),
            dir: (self.dir_epoch > durable).then(|| Arc::clone(dir)),
            epoch: self.epoch,
            durable: Arc::clone(&self.durable),
        }
    }

    /// After a successful `point().sync()` taken with `&mut` access (nothing changed since).
    pub fn all_synced(&mut self) {
        self.files.clear();
        self.dir_epoch = 0;
    }
}

/// What was dirty in one log when it was captured. Syncing it makes every append made
/// before the capture durable.
#[derive(Debug)]
pub struct SyncPoint {
    pub(crate) files: Vec<Arc<Handle>>,
    pub(crate) dir: Option<Arc<Handle>>,
    epoch: u64,
    durable: Arc<AtomicU64>,
}

impl SyncPoint {
    /// A point with the given handles and no log behind it (tests).
    #[cfg(test)]
    pub(crate) fn from_files(files: Vec<Arc<Handle>>, dir: Option<Arc<Handle>>) -> SyncPoint {
        SyncPoint { files, dir, epoch: 0, durable: Arc::new(AtomicU64::new(0)) }
    }

    /// True if nothing needs syncing (everything captured was already durable).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dir.is_none()
    }

    pub fn sync(&self) -> io::Result<()> {
        for f in &self.files {
            f.sync_data()?;
        }
        if let Some(d) = &self.dir {
            d.sync_all()?;
        }
        self.mark_durable();
        Ok(())
    }

    pub(crate) fn mark_durable(&self) {
        self.durable.fetch_max(self.epoch, Ordering::AcqRel);
    }
}

type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

struct Request {
    point: SyncPoint,
    done: Done,
}

struct Shared {
    failed: AtomicBool,
    batches: AtomicU64,
}

/// One background thread that turns many concurrent durability requests into one fsync per
/// distinct file per batch.
pub struct GroupCommit {
    tx: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    thread_id: Option<ThreadId>,
    shared: Arc<Shared>,
}

impl fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCommit")
            .field("failed", &self.is_failed())
            .field("batches", &self.batches())
            .finish_non_exhaustive()
    }
}

fn failed_error() -> io::Error {
    io::Error::other("group commit failed earlier (an fsync error); the log must be reopened")
}

impl GroupCommit {
    pub fn spawn(name: &str) -> GroupCommit {
        let shared = Arc::new(Shared { failed: AtomicBool::new(false), batches: AtomicU64::new(0) });
        let (tx, rx) = mpsc::channel();
        let worker_shared = Arc::clone(&shared);
        match thread::Builder::new().name(name.to_string()).spawn(move || run(&rx, &worker_shared)) {
            Ok(handle) => {
                let thread_id = Some(handle.thread().id());
                GroupCommit { tx: Some(tx), thread: Some(handle), thread_id, shared }
            }
            Err(e) => {
                // Without a committer nothing can be made durable: fail every request rather
                // than panic the caller.
                error!(name, error = %e, "could not spawn group commit thread");
                shared.failed.store(true, Ordering::Release);
                GroupCommit { tx: None, thread: None, thread_id: None, shared }
            }
        }
    }

    /// Queues `point`; `done` runs on the committer thread once the point is durable (Ok) or
    /// can never become durable (Err). Callbacks run in submission order.
    pub fn submit(&self, point: SyncPoint, done: Box<dyn FnOnce(io::Result<()>) + Send>) {
        if self.shared.failed.load(Ordering::Acquire) {
            done(Err(failed_error()));
            return;
        }
        let Some(tx) = &self.tx else {
            done(Err(failed_error()));
            return;
        };
        if let Err(mpsc::SendError(req)) = tx.send(Request { point, done }) {
            self.shared.failed.store(true, Ordering::Release);
            (req.done)(Err(failed_error()));
        }
    }

    /// True once an fsync failed; every later request fails.
    pub fn is_failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    /// Number of batches successfully synced so far. Incremented after a batch's fsyncs
    /// complete and before its callbacks run.
    pub fn batches(&self) -> u64 {
        self.shared.batches.load(Ordering::Acquire)
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        // Closing the channel lets the thread drain what is queued and exit.
        self.tx = None;
        if let Some(handle) = self.thread.take() {
            // A callback that drops the committer must not join its own thread.
            if self.thread_id != Some(thread::current().id()) && handle.join().is_err() {
                error!("group commit thread panicked");
            }
        }
    }
}

fn run(rx: &Receiver<Request>, shared: &Shared) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(req) = rx.try_recv() {
            batch.push(req);
        }
        let result = if shared.failed.load(Ordering::Acquire) { Err(failed_error()) } else { sync_batch(&batch) };
        match result {
            Ok(()) => {
                for req in &batch {
                    req.point.mark_durable();
                }
                shared.batches.fetch_add(1, Ordering::AcqRel);
                for req in batch {
                    call(req.done, Ok(()));
                }
            }
            Err(e) => {
                // The kernel may have dropped the dirty pages after a failed fsync, so a retry
                // could "succeed" without the data: never report success again.
                if !shared.failed.swap(true, Ordering::AcqRel) {
                    error!(error = %e, "group commit fsync failed; failing all further requests");
                }
                for req in batch {
                    call(req.done, Err(io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
    }
}

fn call(done: Done, result: io::Result<()>) {
    if catch_unwind(AssertUnwindSafe(move || done(result))).is_err() {
        error!("group commit callback panicked");
    }
}

/// fsyncs each distinct file once, then each distinct directory.
fn sync_batch(batch: &[Request]) -> io::Result<()> {
    let mut files: Vec<&Arc<Handle>> = Vec::new();
    let mut dirs: Vec<&Arc<Handle>> = Vec::new();
    for req in batch {
        for f in &req.point.files {
            if !files.iter().any(|g| Arc::ptr_eq(g, f)) {
                files.push(f);
            }
        }
        if let Some(d) = &req.point.dir {
            if !dirs.iter().any(|g| Arc::ptr_eq(g, d)) {
                dirs.push(d);
            }
        }
    }
    for f in files {
        f.sync_data()?;
    }
    for d in dirs {
        d.sync_all()?;
    }
    Ok(())
}
