//! `SegmentedLog`: a segmented, checksummed, append-only record log on local disk, and
//! `GroupCommit`, which batches the fsyncs that make appends durable.
//!
//! Records are opaque byte strings identified by a contiguous `u64` seq (the Raft log index,
//! or a station's message offset).
//!
//! # On-disk format (all integers little-endian)
//!
//! * The directory holds segments `<base>.log`, where `<base>` is the seq of the segment's
//!   first record, zero-padded to 20 digits, plus optional `<base>.idx` for sealed segments.
//!   Temp files are `<base>.idx.tmp` (written, synced, renamed, then the directory synced).
//! * `.log` = 16-byte file header `{magic "DPLG" u32, version u32 = 1, base seq u64}`, then
//!   records back to back. Record = 20-byte header `{magic 0xD370A55E u32, payload len u32,
//!   seq u64, crc32c u32}` + payload; the crc covers `seq ‖ len ‖ payload`.
//! * `.idx` = `{magic "DPIX" u32, version u32, base seq u64, count u64, covered .log length
//!   u64}`, then one u32 byte offset per record, then crc32c of everything before it. It is
//!   trusted only if its crc, base and covered length all match the `.log`, so a stale index
//!   is detected rather than believed.
//! * Record offsets are u32: the log rolls before any record would start past 4 GiB.
//! * Only the last segment may extend past its last record, and only with zero bytes (see
//!   Preallocation). Zero bytes never parse as a record (the record magic is nonzero).
//!
//! # Recovery
//!
//! `open` validates every segment (`Verify::Full`) or trusts sealed segments' indexes
//! (`Verify::Tail`) and scans the last one. At the first bad record of the last segment, if
//! no valid record (right magic, fitting length, plausible seq, good crc) exists anywhere
//! after it, the damage is a torn, never-acknowledged write and the file is truncated there
//! (a preallocating log instead overwrites the damaged bytes with zeros and keeps the file's
//! length). Anything else is reported as `LogError::Corrupt` and nothing is modified. A log
//! opened with `LogOptions::after_clean_shutdown` was fsynced in full when it was closed, so
//! there every damaged byte is `Corrupt`, the tail's included.
//!
//! If every byte from that position to the end of the file is zero, a preallocating log
//! treats it as preallocated space: nothing is reported and the next append goes there. A
//! log opened without preallocation truncates such a zero tail and reports it as a torn tail
//! (as it does any other torn tail); zero bytes are never data, so this is never `Corrupt`.
//!
//! # Preallocation
//!
//! With `LogOptions::preallocate`, the active segment's file is kept zero-filled ahead of the
//! write position: when less than `PREALLOC_LOW_WATER` of zeroed space remains after the
//! next record, zeros are written in a chunk of up to `PREALLOC_CHUNK` (capped near
//! `segment_bytes`) and fdatasynced (with the directory, if the file is new) before any
//! record is written into that space. Appends then overwrite already-allocated blocks, so
//! their fdatasync need not commit file-size or extent metadata. The logical length (the
//! write position) is kept in memory; `bytes()` and `SegmentInfo::len_bytes` report it.
//! Sealing trims the file to its logical length before the data sync and the `.idx` write,
//! so sealed segments never have a zero tail. `truncate_from` overwrites the removed bytes
//! of the active segment with zeros (instead of shrinking the file), so no stale valid record
//! survives past the logical end, where a later torn write could make recovery find "a
//! valid record after a bad one" and refuse to open.
//!
//! # Durability
//!
//! `append` only writes to the OS. Appends become durable through `sync`, or by passing a
//! `sync_point` to a `GroupCommit`. `truncate_from`, `purge_before`, `reset` and
//! `seal_active` are durable when they return. After any write or fsync error the log is
//! poisoned: every later mutating call fails with `LogError::Poisoned`.
//!
//! # Logical start
//!
//! `purge_before` moves `first_seq` immediately but deletes only whole segments, so after a
//! reopen `first_seq` is the base of the first retained segment, which may be lower than the
//! last purge point. Owners that need an exact logical start persist it themselves.

pub(crate) mod format;
mod fsync_stats;
mod group_commit;
mod handle;
mod iter;
mod peek;
mod reaper;
mod segment;
#[cfg(test)]
mod tests;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use self::format::{parse_file_name, verify_record, RECORD_HEADER_LEN};
use self::group_commit::DirtyTracker;
use self::handle::Handle;
use self::segment::{io_err, remove_if_exists, write_zeros, Segment, MAX_RECORD_START};

pub use self::fsync_stats::{fsync_stats, FsyncStats, FSYNC_BUCKETS};
pub use self::group_commit::{GroupCommit, SyncPoint};
pub use self::handle::{FileCache, FileCacheStats};
pub use self::iter::LogIter;
pub use self::peek::{last_record, LastRecord, TailState};
pub(crate) use self::reaper::drop_later;
pub use self::reaper::wait_for_removals;

/// Largest payload a record can carry (its length field is a u32).
pub const MAX_PAYLOAD: usize = u32::MAX as usize - RECORD_HEADER_LEN;

/// Most bytes [`SegmentedLog::read_run`] reads at once (more only for one longer record).
pub const READ_RUN_BYTES: u64 = 1 << 20;
/// [`SegmentedLog::append_run`] writes what it has encoded once it holds this many bytes.
const WRITE_RUN_BYTES: u64 = 1 << 20;

/// Preallocation tops up the zeroed space once less than this remains after the next record.
const PREALLOC_LOW_WATER: u64 = 1 << 20;
/// Zeros written per preallocation step.
const PREALLOC_CHUNK: u64 = 4 << 20;
/// Preallocation stops this far past `segment_bytes` (the record that crosses
/// `segment_bytes` is the segment's last); a larger final record grows the file itself.
const PREALLOC_SLACK: u64 = 64 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOptions {
    /// Roll to a new segment once the active one is at least this many bytes.
    pub segment_bytes: u64,
    pub verify: Verify,
    /// Keep the active segment zero-filled ahead of the write position (see the module doc),
    /// so appends overwrite allocated space instead of growing the file.
    pub preallocate: bool,
    /// The log was closed cleanly (every record fsynced): damage at the tail cannot be a torn
    /// write, so it is `Corrupt` like damage anywhere else. Only zeros (preallocated space) may
    /// follow the last record.
    pub after_clean_shutdown: bool,
    /// `open` fsyncs the last segment and the directory, so that whatever it reports is durable
    /// even if a crashed process left unsynced appends in the page cache. An owner that makes
    /// the records it relies on durable by other means (station logs: the snapshot syncs what it
    /// covers, and recovery cuts off the rest) turns it off, sparing two fsyncs per log at start.
    pub sync_on_open: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// CRC-scan every segment on open.
    Full,
    /// Trust sealed segments' index files when valid; scan only the last segment (and any
    /// sealed segment whose index is missing or invalid).
    Tail,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("i/o error on {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("corrupt record in {} at byte {position}: {detail}", path.display())]
    Corrupt { path: PathBuf, position: u64, detail: String },
    #[error("non-contiguous append: expected seq {expected}, got {got}")]
    NonContiguous { expected: u64, got: u64 },
    #[error("log poisoned by an earlier write or fsync failure; it must be reopened")]
    Poisoned,
    #[error("record payload of {len} bytes exceeds the maximum of {MAX_PAYLOAD}")]
    TooLarge { len: usize },
}

#[derive(Debug, Default)]
pub struct Recovery {
    pub segments: usize,
    pub records: u64,
    pub truncated_bytes: u64,
    /// File and byte offset at which a torn tail was cut off.
    pub torn_tail: Option<(PathBuf, u64)>,
}

#[derive(Debug, Clone)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub base_seq: u64,
    pub records: u64,
    pub len_bytes: u64,
}

pub struct SegmentedLog {
    dir: PathBuf,
    dir_file: Arc<Handle>,
    /// Where segment and directory descriptors are kept; `None` keeps them open for good.
    cache: Option<Arc<FileCache>>,
    opts: LogOptions,
    /// Ordered and contiguous by seq; the last one is the active one. Empty only for a log
    /// that has never been appended to (or reset).
    segments: Vec<Segment>,
    first_seq: u64,
    next_seq: u64,
    /// Reused encode buffer so an append allocates only when a record outgrows it.
    buf: Vec<u8>,
    dirty: DirtyTracker,
    poisoned: bool,
    /// Start the writeback of every this many bytes appended (0: leave it to the kernel); see
    /// [`SegmentedLog::set_write_behind`].
    write_behind: u64,
    /// The active segment (by base) and the offset up to which its writeback was started.
    written_back: (u64, u64),
}

impl std::fmt::Debug for SegmentedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentedLog")
            .field("dir", &self.dir)
            .field("first_seq", &self.first_seq)
            .field("next_seq", &self.next_seq)
            .field("segments", &self.segments.len())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

fn fsync_dir(dir: &Path) -> Result<(), LogError> {
    crate::dirs::fsync_dir(dir).map_err(io_err(dir))
}

/// Creates `dir` if missing and makes its entry durable in the parent.
fn ensure_dir(dir: &Path) -> Result<(), LogError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => fsync_dir(p),
        _ => fsync_dir(Path::new(".")),
    }
}

impl SegmentedLog {
    /// Opens (or creates) the log in `dir`, keeping its files open until it is dropped.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<(SegmentedLog, Recovery), LogError> {
        Self::open_in(dir, opts, None)
    }

    /// Like [`SegmentedLog::open`], with every descriptor kept in `cache` (when given), which
    /// bounds how many files stay open across all the logs that share it.
    pub fn open_in(
        dir: &Path,
        opts: LogOptions,
        cache: Option<&Arc<FileCache>>,
    ) -> Result<(SegmentedLog, Recovery), LogError> {
        ensure_dir(dir)?;
        let dir_file = Handle::open_dir(dir, cache).map_err(io_err(dir))?;
        let mut bases = Vec::new();
        let mut indexes = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(base) = parse_file_name(name, "log") {
                bases.push(base);
            } else if let Some(base) = parse_file_name(name, "idx") {
                indexes.push(base);
            } else if parse_file_name(name, "idx.tmp").is_some() {
                remove_if_exists(&entry.path())?;
            }
        }
        bases.sort_unstable();
        for base in indexes {
            if bases.binary_search(&base).is_err() {
                remove_if_exists(&dir.join(format::index_file_name(base)))?;
            }
        }

        let mut recovery = Recovery::default();
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
        for (i, &base) in bases.iter().enumerate() {
            if let Some(prev) = segments.last() {
                if prev.next_seq() != base {
                    return Err(LogError::Corrupt {
                        path: dir.join(format::log_file_name(base)),
                        position: 0,
                        detail: format!(
                            "segment starts at seq {base} but the previous segment ends before seq {}",
                            prev.next_seq()
                        ),
                    });
                }
            }
            let seg = Segment::open(dir, base, i + 1 == bases.len(), opts, &mut recovery, cache)?;
            recovery.records += seg.records();
            segments.push(seg);
        }
        recovery.segments = segments.len();
        // A process crash (not a machine crash) can leave appends that were never synced in
        // the page cache. Syncing here makes everything `open` reports durable, so an owner
        // never treats such records as persisted while they could still vanish. Sealed
        // segments were synced before any later segment was created.
        if opts.sync_on_open {
            if let Some(last) = segments.last() {
                last.file.sync_data().map_err(io_err(&last.path))?;
            }
            dir_file.sync_all().map_err(io_err(dir))?;
        }
        let first_seq = segments.first().map_or(0, |s| s.base_seq);
        let next_seq = segments.last().map_or(0, Segment::next_seq);
        let log = SegmentedLog {
            dir: dir.to_path_buf(),
            dir_file,
            cache: cache.cloned(),
            opts,
            segments,
            first_seq,
            next_seq,
            buf: Vec::new(),
            dirty: DirtyTracker::new(),
            poisoned: false,
            write_behind: 0,
            written_back: (u64::MAX, 0),
        };
        Ok((log, recovery))
    }

    /// Once `bytes` have been appended to the active segment since the last time, starts their
    /// writeback to the disk without waiting for it (`sync_file_range`, on the reaper thread);
    /// 0 (the default) leaves writeback to the kernel. For logs that are fsynced only now and
    /// then (station logs, at each snapshot): otherwise that fsync writes out everything since
    /// the last one in one burst, and the Raft log's fsyncs wait behind it on the same disk.
    pub fn set_write_behind(&mut self, bytes: u64) {
        self.write_behind = bytes;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn is_empty(&self) -> bool {
        self.first_seq == self.next_seq
    }

    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments
            .iter()
            .map(|s| SegmentInfo { path: s.path.clone(), base_seq: s.base_seq, records: s.records(), len_bytes: s.len })
            .collect()
    }

    /// Runs a mutating operation, refusing it on a poisoned log and poisoning the log if it
    /// fails with an I/O error (its on-disk effect is then unknown).
    fn mutate<T>(&mut self, op: impl FnOnce(&mut Self) -> Result<T, LogError>) -> Result<T, LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        let result = op(self);
        if let Err(LogError::Io { .. }) = &result {
            self.poisoned = true;
        }
        result
    }

    pub fn append(&mut self, seq: u64, payload: &[u8]) -> Result<(), LogError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(LogError::TooLarge { len: payload.len() });
        }
        self.append_run(seq, 1, |_, buf| buf.extend_from_slice(payload))
    }

    /// Appends records `seq` to `seq + count - 1`, the payload of the `i`-th written by
    /// `write_payload(i, buf)` straight into the log's buffer: what `count` calls of
    /// [`append`](Self::append) would do, with one write per segment the run lands in instead
    /// of one per record. A payload over [`MAX_PAYLOAD`] fails the run after the records before
    /// it are appended.
    pub fn append_run(
        &mut self,
        seq: u64,
        count: usize,
        write_payload: impl FnMut(usize, &mut Vec<u8>),
    ) -> Result<(), LogError> {
        self.mutate(|log| log.append_run_inner(seq, count, write_payload))
    }

    fn append_run_inner(
        &mut self,
        seq: u64,
        count: usize,
        mut write_payload: impl FnMut(usize, &mut Vec<u8>),
    ) -> Result<(), LogError> {
        if count == 0 {
            return Ok(());
        }
        if self.segments.is_empty() {
            self.create_segment(seq)?;
            self.first_seq = seq;
            self.next_seq = seq;
        } else if seq != self.next_seq {
            return Err(LogError::NonContiguous { expected: self.next_seq, got: seq });
        }
        // Records encoded, not yet written: `self.buf`, starting at these offsets in it.
        self.buf.clear();
        let mut starts = Vec::with_capacity(count.min(1024));
        for i in 0..count {
            if self.active_needs_roll(self.buf.len() as u64, starts.len()) {
                self.write_encoded(&starts)?;
                starts.clear();
                self.roll()?;
            } else if self.buf.len() as u64 >= WRITE_RUN_BYTES {
                self.write_encoded(&starts)?;
                starts.clear();
            }
            let start = self.buf.len();
            let seq = self.next_seq + starts.len() as u64;
            if let Err(len) = format::append_record(&mut self.buf, seq, MAX_PAYLOAD, |buf| write_payload(i, buf)) {
                // Nothing of this record is written, as `append` checked before writing.
                self.write_encoded(&starts)?;
                return Err(LogError::TooLarge { len });
            }
            starts.push(start);
        }
        self.write_encoded(&starts)
    }

    /// Writes the records encoded in `self.buf` (starting at `starts`) at the end of the
    /// active segment, in one write.
    fn write_encoded(&mut self, starts: &[usize]) -> Result<(), LogError> {
        if starts.is_empty() {
            return Ok(());
        }
        if self.opts.preallocate {
            self.preallocate(self.buf.len() as u64)?;
        }
        let Some(active) = self.segments.last_mut() else {
            return Err(LogError::Io { path: self.dir.clone(), source: std::io::Error::other("no active segment") });
        };
        let fd = active.fd()?;
        fd.write_all_at(&self.buf, active.len).map_err(io_err(&active.path))?;
        active.positions.extend(starts.iter().map(|&s| (active.len + s as u64) as u32));
        active.len += self.buf.len() as u64;
        active.alloc = active.alloc.max(active.len);
        self.next_seq += starts.len() as u64;
        self.buf.clear();
        self.dirty.mark_file(&active.file);
        if self.write_behind > 0 {
            // A truncation or a reset may have moved the end back below what was written back.
            let from = if self.written_back.0 == active.base_seq { self.written_back.1.min(active.len) } else { 0 };
            if active.len - from >= self.write_behind {
                let to = active.len;
                self.written_back = (active.base_seq, to);
                reaper::later(move || reaper::start_writeback(&fd, from, to - from));
            }
        }
        Ok(())
    }

    /// Makes sure the active segment has zeroed space for a record of `rec_len` bytes at its
    /// write position, topping it up when less than `PREALLOC_LOW_WATER` would remain. New
    /// zeros are durable (file data and size, and the directory entry of a new file) before
    /// this returns, so a record written into them never needs a metadata commit to be
    /// durable, and recovery never sees a size change racing the record.
    fn preallocate(&mut self, rec_len: u64) -> Result<(), LogError> {
        let Some(active) = self.segments.last_mut() else { return Ok(()) };
        let need = active.len + rec_len;
        if active.alloc >= need.saturating_add(PREALLOC_LOW_WATER) {
            return Ok(());
        }
        let cap = self.opts.segment_bytes.min(MAX_RECORD_START + 1).saturating_add(PREALLOC_SLACK);
        let target = (active.alloc + PREALLOC_CHUNK).min(cap).next_multiple_of(4096).max(need);
        if target <= active.alloc {
            return Ok(());
        }
        write_zeros(&*active.fd()?, active.alloc, target).map_err(io_err(&active.path))?;
        active.file.sync_data().map_err(io_err(&active.path))?;
        active.alloc = target;
        // Everything written to this file so far is durable now.
        self.dirty.forget_file(&active.file);
        if self.dirty.dir_dirty() {
            // The file is new: make its entry durable along with its first zeros.
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Whether the next record must start a new segment, with `pending_bytes` of `pending`
    /// records encoded after the active segment's end and not yet written.
    fn active_needs_roll(&self, pending_bytes: u64, pending: usize) -> bool {
        self.segments.last().is_some_and(|a| {
            let len = a.len + pending_bytes;
            a.sealed || (a.records() + pending as u64 > 0 && (len >= self.opts.segment_bytes || len > MAX_RECORD_START))
        })
    }

    fn create_segment(&mut self, base: u64) -> Result<(), LogError> {
        // An index left behind for this base (e.g. by a crash mid-removal) must not be
        // mistaken for the new file's.
        remove_if_exists(&self.dir.join(format::index_file_name(base)))?;
        let seg = Segment::create(&self.dir, base, self.cache.as_ref())?;
        self.dirty.mark_file(&seg.file);
        self.dirty.mark_dir();
        self.segments.push(seg);
        Ok(())
    }

    fn roll(&mut self) -> Result<(), LogError> {
        self.seal_last()?;
        self.create_segment(self.next_seq)
    }

    /// Syncs the active segment and writes its index, both durable (including the directory,
    /// which also covers the segment's own creation so no later file can outlive it).
    fn seal_last(&mut self) -> Result<(), LogError> {
        let Some(active) = self.segments.last_mut() else { return Ok(()) };
        if active.sealed || active.records() == 0 {
            return Ok(());
        }
        // Sealed segments never keep preallocated space: the index covers the whole file.
        if active.alloc > active.len {
            active.fd()?.set_len(active.len).map_err(io_err(&active.path))?;
            active.alloc = active.len;
        }
        active.file.sync_data().map_err(io_err(&active.path))?;
        self.dirty.forget_file(&active.file);
        active.write_index()?;
        active.sealed = true;
        self.sync_dir()
    }

    fn sync_dir(&mut self) -> Result<(), LogError> {
        self.dir_file.sync_all().map_err(io_err(&self.dir))?;
        self.dirty.dir_synced();
        Ok(())
    }

    pub fn seal_active(&mut self) -> Result<(), LogError> {
        self.mutate(Self::seal_last)
    }

    /// Position of the segment holding `seq`, if any segment could.
    fn segment_index(&self, seq: u64) -> Option<usize> {
        self.segments.partition_point(|s| s.base_seq <= seq).checked_sub(1)
    }

    pub fn read(&self, seq: u64) -> Result<Option<Bytes>, LogError> {
        Ok(self.read_run(seq, 1)?.into_iter().next())
    }

    /// Up to `count` records from `seq` on, as [`read`](Self::read) answers each: read with one
    /// `pread` into one buffer that the answers share, and each verified. The run stops at the
    /// end of `seq`'s segment and before [`READ_RUN_BYTES`] (past it only for `seq`'s own
    /// record). Empty when the log does not hold `seq`.
    pub fn read_run(&self, seq: u64, count: usize) -> Result<Vec<Bytes>, LogError> {
        if seq < self.first_seq || seq >= self.next_seq || count == 0 {
            return Ok(Vec::new());
        }
        let Some(seg) = self.segment_index(seq).map(|i| &self.segments[i]) else { return Ok(Vec::new()) };
        let first = (seq - seg.base_seq) as usize;
        let held = (self.next_seq.min(seg.next_seq()) - seg.base_seq) as usize;
        let (start, mut end) = seg.record_span(first);
        let mut last = first + 1;
        while last < held.min(first.saturating_add(count)) {
            let (_, next_end) = seg.record_span(last);
            if next_end - start > READ_RUN_BYTES {
                break;
            }
            end = next_end;
            last += 1;
        }
        let mut buf = vec![0u8; (end - start) as usize];
        seg.fd()?.read_exact_at(&mut buf, start).map_err(io_err(&seg.path))?;
        let buf = Bytes::from(buf);
        (first..last)
            .map(|i| {
                let (rec_start, rec_end) = seg.record_span(i);
                let (from, to) = ((rec_start - start) as usize, (rec_end - start) as usize);
                verify_record(&seg.path, rec_start, seg.base_seq + i as u64, &buf[from..to])?;
                Ok(buf.slice(from + RECORD_HEADER_LEN..to))
            })
            .collect()
    }

    /// Records from `max(seq, first_seq())` to the end, in order; stops after an error.
    pub fn iter_from(&self, seq: u64) -> impl Iterator<Item = Result<(u64, Bytes), LogError>> + '_ {
        LogIter::new(self, seq)
    }

    pub fn sync(&mut self) -> Result<(), LogError> {
        self.mutate(|log| {
            let point = log.dirty.point(&log.dir_file);
            for f in &point.files {
                f.sync_data().map_err(io_err(f.path()))?;
            }
            if let Some(d) = &point.dir {
                d.sync_all().map_err(io_err(&log.dir))?;
            }
            point.mark_durable();
            log.dirty.all_synced();
            Ok(())
        })
    }

    pub fn sync_point(&self) -> SyncPoint {
        self.dirty.point(&self.dir_file)
    }

    /// Removes records `seq..`. If `seq <= first_seq()` this is `reset(seq)`; if
    /// `seq >= next_seq()` it does nothing.
    pub fn truncate_from(&mut self, seq: u64) -> Result<(), LogError> {
        if seq >= self.next_seq && !self.poisoned {
            return Ok(());
        }
        if seq <= self.first_seq {
            return self.reset(seq);
        }
        self.mutate(|log| log.truncate_inner(seq))
    }

    fn truncate_inner(&mut self, seq: u64) -> Result<(), LogError> {
        // first_seq < seq < next_seq here, so the first segment (base <= first_seq) stays.
        let mut dir_changed = false;
        while self.segments.len() > 1 && self.segments.last().is_some_and(|s| s.base_seq >= seq) {
            if let Some(seg) = self.segments.pop() {
                self.dirty.forget_file(&seg.file);
                seg.remove()?;
                // Newest first, each durable before the next: a cut leaves a contiguous prefix.
                self.sync_dir()?;
            }
        }
        let Some(active) = self.segments.last_mut() else { return Ok(()) };
        if active.sealed {
            dir_changed |= remove_if_exists(&active.index_path())?;
            active.sealed = false;
        }
        // The index removal must be durable before the file changes under it.
        if dir_changed {
            self.dir_file.sync_all().map_err(io_err(&self.dir))?;
            self.dirty.dir_synced();
        }
        let keep = (seq - active.base_seq) as usize;
        if keep < active.positions.len() {
            let new_len = u64::from(active.positions[keep]);
            if self.opts.preallocate {
                // Zeros rather than a shorter file: the space stays allocated, and nothing
                // that parses as a record survives past the logical end.
                write_zeros(&*active.fd()?, new_len, active.len).map_err(io_err(&active.path))?;
            } else {
                active.fd()?.set_len(new_len).map_err(io_err(&active.path))?;
                active.alloc = new_len;
            }
            active.positions.truncate(keep);
            active.len = new_len;
        }
        active.file.sync_all().map_err(io_err(&active.path))?;
        self.dirty.forget_file(&active.file);
        self.next_seq = seq;
        Ok(())
    }

    /// Whether `purge_before(seq)` would delete any file (a whole segment, or everything through
    /// `reset`), as opposed to only moving the logical start.
    pub fn purge_deletes_files(&self, seq: u64) -> bool {
        if seq <= self.first_seq && !self.poisoned {
            return false;
        }
        seq > self.next_seq || self.segments.get(1).is_some_and(|s| s.base_seq <= seq)
    }

    /// Drops records before `seq` logically and deletes whole segments that hold only such
    /// records. If `seq > next_seq()` every record is dropped and this is `reset(seq)`.
    pub fn purge_before(&mut self, seq: u64) -> Result<(), LogError> {
        self.purge(seq, true)
    }

    /// `purge_before` for an owner whose purge point, durable before this call, covers every
    /// segment removed, and which removes segments left below it before opening the log again
    /// (the Raft log: [`crate::raft::purged`]). The unlinks are then neither ordered nor made
    /// durable here: a power cut may keep any subset of them, and the next open settles them
    /// (as does the next directory sync this log makes for its own reasons). Spares a
    /// directory fsync per segment.
    pub fn purge_before_covered(&mut self, seq: u64) -> Result<(), LogError> {
        self.purge(seq, false)
    }

    fn purge(&mut self, seq: u64, ordered: bool) -> Result<(), LogError> {
        if seq <= self.first_seq && !self.poisoned {
            return Ok(());
        }
        if seq > self.next_seq {
            return self.reset(seq);
        }
        self.mutate(|log| {
            log.first_seq = log.first_seq.max(seq);
            while log.segments.len() > 1 && log.segments[1].base_seq <= seq {
                let seg = log.segments.remove(0);
                log.dirty.forget_file(&seg.file);
                seg.remove()?;
                if ordered {
                    // One removal durable before the next: a power cut may keep any subset of
                    // unsynced unlinks, and a later one kept with an earlier one lost is a hole.
                    log.sync_dir()?;
                }
            }
            Ok(())
        })
    }

    pub fn reset(&mut self, next_seq: u64) -> Result<(), LogError> {
        self.mutate(|log| {
            // Newest first, each durable before the next, so a crash or a power cut part-way
            // leaves a contiguous prefix, never a hole.
            while let Some(seg) = log.segments.pop() {
                log.dirty.forget_file(&seg.file);
                seg.remove()?;
                log.sync_dir()?;
            }
            log.first_seq = next_seq;
            log.next_seq = next_seq;
            log.create_segment(next_seq)?;
            if let Some(active) = log.segments.last() {
                active.file.sync_data().map_err(io_err(&active.path))?;
                log.dirty.forget_file(&active.file);
            }
            log.sync_dir()
        })
    }
}
