//! File handles of segments and log directories, held open for good or through a bounded
//! cache shared by many logs.
//!
//! A broker with tens of thousands of stations cannot keep each station's segment and
//! directory open: the process would run into its open-file limit. A log opened with a
//! [`FileCache`] keeps its handles in that cache, which holds at most `cap` of them open and
//! closes the least recently used one when it needs room; the next use reopens the file by
//! path. Idle logs therefore hold no descriptor at all.
//!
//! Closing a file with unsynced writes loses nothing: the writes stay in the kernel's page
//! cache, and an fsync through a handle opened later flushes them (Linux syncs the file, not
//! the descriptor, and reports a writeback error to a descriptor opened after it as long as
//! nobody has seen it yet). So dirty tracking holds [`Handle`]s, not descriptors, and a sync
//! point reopens what the cache closed. A descriptor in use when it is evicted stays open
//! until that use ends, so the cap can be exceeded by the number of operations in flight.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hashlink::LruCache;

/// Open descriptors shared by every log opened with it, least recently used closed first.
pub struct FileCache {
    cap: usize,
    next_id: AtomicU64,
    open: Mutex<LruCache<u64, Arc<File>>>,
    reopens: AtomicU64,
    evictions: AtomicU64,
}

/// What a [`FileCache`] holds and has done, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileCacheStats {
    pub cap: usize,
    pub open: usize,
    /// Files opened again after the cache had closed them.
    pub reopens: u64,
    /// Descriptors closed to make room.
    pub evictions: u64,
}

impl fmt::Debug for FileCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileCache").field("stats", &self.stats()).finish()
    }
}

impl FileCache {
    /// A cache holding at most `cap` descriptors open (at least one).
    pub fn new(cap: usize) -> Arc<FileCache> {
        let cap = cap.max(1);
        Arc::new(FileCache {
            cap,
            next_id: AtomicU64::new(1),
            open: Mutex::new(LruCache::new_unbounded()),
            reopens: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> FileCacheStats {
        FileCacheStats {
            cap: self.cap,
            open: self.lock().len(),
            reopens: self.reopens.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<u64, Arc<File>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: u64) -> Option<Arc<File>> {
        self.lock().get(&id).cloned()
    }

    /// Adds an open descriptor, closing the least recently used ones past the cap.
    fn insert(&self, id: u64, file: Arc<File>) {
        let mut closed = Vec::new();
        {
            let mut open = self.lock();
            if let Some(old) = open.insert(id, file) {
                closed.push(old);
            }
            while open.len() > self.cap {
                match open.remove_lru() {
                    Some((_, f)) => closed.push(f),
                    None => break,
                }
            }
        }
        // Closed outside the lock: close(2) can take a while on some file systems.
        self.evictions.fetch_add(closed.len() as u64, Ordering::Relaxed);
        drop(closed);
    }

    fn remove(&self, id: u64) {
        let removed = self.lock().remove(&id);
        drop(removed);
    }
}

enum Kind {
    /// Open for the handle's whole life.
    Pinned(Arc<File>),
    /// Open while the cache keeps it; reopened by path when needed.
    Cached { cache: Arc<FileCache>, id: u64 },
}

/// A segment file or a log directory, opened on demand.
pub(crate) struct Handle {
    path: PathBuf,
    dir: bool,
    kind: Kind,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("path", &self.path)
            .field("cached", &matches!(self.kind, Kind::Cached { .. }))
            .finish()
    }
}

impl Handle {
    /// Wraps a file (or directory) just opened at `path`, pinned open without a cache.
    pub fn new(path: PathBuf, file: File, dir: bool, cache: Option<&Arc<FileCache>>) -> Arc<Handle> {
        let kind = match cache {
            None => Kind::Pinned(Arc::new(file)),
            Some(cache) => {
                let id = cache.next_id.fetch_add(1, Ordering::Relaxed);
                cache.insert(id, Arc::new(file));
                Kind::Cached { cache: Arc::clone(cache), id }
            }
        };
        Arc::new(Handle { path, dir, kind })
    }

    /// Opens a directory read-only.
    pub fn open_dir(path: &Path, cache: Option<&Arc<FileCache>>) -> io::Result<Arc<Handle>> {
        let file = File::open(path)?;
        Ok(Handle::new(path.to_path_buf(), file, true, cache))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open descriptor, reopening the file if the cache closed it.
    pub fn file(&self) -> io::Result<Arc<File>> {
        match &self.kind {
            Kind::Pinned(file) => Ok(Arc::clone(file)),
            Kind::Cached { cache, id } => {
                if let Some(file) = cache.get(*id) {
                    return Ok(file);
                }
                let file = if self.dir {
                    File::open(&self.path)?
                } else {
                    OpenOptions::new().read(true).write(true).open(&self.path)?
                };
                let file = Arc::new(file);
                cache.reopens.fetch_add(1, Ordering::Relaxed);
                cache.insert(*id, Arc::clone(&file));
                Ok(file)
            }
        }
    }

    /// The descriptor if one is open now; never reopens by path (whatever is at the path may
    /// be another file by then, e.g. after the segment was removed and a new one created).
    pub fn open_file(&self) -> Option<Arc<File>> {
        match &self.kind {
            Kind::Pinned(file) => Some(Arc::clone(file)),
            Kind::Cached { cache, id } => cache.get(*id),
        }
    }

    pub fn sync_data(&self) -> io::Result<()> {
        let file = self.file()?;
        super::fsync_stats::timed(|| file.sync_data())
    }

    pub fn sync_all(&self) -> io::Result<()> {
        let file = self.file()?;
        super::fsync_stats::timed(|| file.sync_all())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Kind::Cached { cache, id } = &self.kind {
            cache.remove(*id);
        }
    }
}
