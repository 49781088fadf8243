//! One segment file: creation, recovery scan, index file, chunked reads.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;

use super::format::{
    check_file_header, decode_index, encode_file_header, encode_index, index_file_name, index_tmp_name, log_file_name,
    parse_record_header, record_crc, FILE_HEADER_LEN, RECORD_HEADER_LEN, RECORD_MAGIC,
};
use super::handle::{FileCache, Handle};
use super::{LogError, LogOptions, Recovery, Verify};

/// Size of sequential reads (recovery scans and `iter_from`).
pub(crate) const CHUNK: usize = 1 << 20;
/// Record positions are stored as u32, so no record may start beyond this offset; the log
/// rolls before an append would cross it.
pub(crate) const MAX_RECORD_START: u64 = u32::MAX as u64;
/// How much of a removed segment [`Segment::free`] gives back at a time.
const FREE_STEP: u64 = 4 << 20;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_path_buf(), source }
}

/// Ok(true) if the file existed and was removed.
pub(crate) fn remove_if_exists(path: &Path) -> Result<bool, LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

pub(crate) struct Segment {
    pub path: PathBuf,
    pub base_seq: u64,
    /// Shared with `SyncPoint`s so a group committer can fsync it without holding the log.
    pub file: Arc<Handle>,
    /// Byte offset of every record; `positions[i]` holds seq `base_seq + i`.
    pub positions: Vec<u32>,
    /// Bytes written to the OS (not necessarily durable); the next record goes here. This is
    /// the segment's logical length.
    pub len: u64,
    /// Length of the file, `>= len`; bytes `len..alloc` are zero (preallocated space).
    pub alloc: u64,
    /// Has a valid `.idx`; appending would make it stale, so the next append rolls instead.
    pub sealed: bool,
}

impl Segment {
    /// Creates the file and writes its header; neither the file nor the directory entry is
    /// synced here (the caller tracks both as dirty).
    pub fn create(dir: &Path, base: u64, cache: Option<&Arc<FileCache>>) -> Result<Segment, LogError> {
        let path = dir.join(log_file_name(base));
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(io_err(&path))?;
        file.write_all_at(&encode_file_header(base), 0).map_err(io_err(&path))?;
        Ok(Segment {
            file: Handle::new(path.clone(), file, false, cache),
            path,
            base_seq: base,
            positions: Vec::new(),
            len: FILE_HEADER_LEN,
            alloc: FILE_HEADER_LEN,
            sealed: false,
        })
    }

    /// The segment's open descriptor (reopened if a cache closed it).
    pub fn fd(&self) -> Result<Arc<File>, LogError> {
        self.file.file().map_err(io_err(&self.path))
    }

    pub fn records(&self) -> u64 {
        self.positions.len() as u64
    }

    pub fn next_seq(&self) -> u64 {
        self.base_seq + self.records()
    }

    pub fn index_path(&self) -> PathBuf {
        self.path.with_file_name(index_file_name(self.base_seq))
    }

    /// Start and end byte offsets of the `i`-th record.
    pub fn record_span(&self, i: usize) -> (u64, u64) {
        let start = u64::from(self.positions[i]);
        let end = self.positions.get(i + 1).map_or(self.len, |&p| u64::from(p));
        (start, end)
    }

    /// Writes `<base>.idx` via a synced temp file and rename. The caller must have synced the
    /// `.log` first (an index must never describe data that is not durable) and must fsync
    /// the directory afterwards.
    pub fn write_index(&self) -> Result<(), LogError> {
        let tmp = self.path.with_file_name(index_tmp_name(self.base_seq));
        let data = encode_index(self.base_seq, self.len, &self.positions);
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&data).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        let idx = self.index_path();
        fs::rename(&tmp, &idx).map_err(io_err(&idx))
    }

    /// Unlinks the `.log` and then the `.idx` (a crash in between leaves a stray `.idx` that
    /// `open` removes), then hands the segment to the reaper, which closes its descriptor and
    /// so frees the file off this thread. The caller makes the unlinks durable.
    pub fn remove(self) -> Result<(), LogError> {
        // Taken before the unlink, so the reaper shrinks this very file: a descriptor reopened
        // by path later could be a new segment's of the same name.
        let open = self.file.open_file();
        fs::remove_file(&self.path).map_err(io_err(&self.path))?;
        remove_if_exists(&self.index_path())?;
        super::reaper::later(move || self.free(open));
        Ok(())
    }

    /// Frees an unlinked segment's blocks a few MiB at a time through `open` (if it was open
    /// when unlinked; if not, the unlink freed it already), then closes it. One close of a whole
    /// segment frees it in one go, and on a `discard` mount that is one discard of up to
    /// `segment_bytes` that the device serves ahead of the fsyncs queued behind it.
    fn free(self, open: Option<Arc<File>>) {
        if let Some(fd) = open {
            let mut len = self.alloc.max(self.len);
            while len > FREE_STEP {
                len -= FREE_STEP;
                if fd.set_len(len).is_err() {
                    break;
                }
            }
        }
        drop(self);
    }

    /// Opens and validates an existing segment, repairing a torn tail if this is the last
    /// one. May write or remove its index; the caller fsyncs the directory afterwards.
    pub fn open(
        dir: &Path,
        base: u64,
        is_last: bool,
        opts: LogOptions,
        recovery: &mut Recovery,
        cache: Option<&Arc<FileCache>>,
    ) -> Result<Segment, LogError> {
        let path = dir.join(log_file_name(base));
        let idx_path = dir.join(index_file_name(base));
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io_err(&path))?;
        let file_len = file.metadata().map_err(io_err(&path))?.len();
        let mk = |file: File, positions: Vec<u32>, len: u64, alloc: u64, sealed: bool| Segment {
            path: path.clone(),
            base_seq: base,
            file: Handle::new(path.clone(), file, false, cache),
            positions,
            len,
            alloc,
            sealed,
        };

        if !is_last && opts.verify == Verify::Tail {
            if let Some(positions) = trusted_index(&file, &path, &idx_path, base, file_len)? {
                return Ok(mk(file, positions, file_len, file_len, true));
            }
        }

        let scan = scan(&file, &path, base, file_len)?;
        let mut positions = scan.positions;
        let mut len = file_len;
        let mut alloc = file_len;
        if let ScanOutcome::Bad { position, detail, torn_candidate } = scan.outcome {
            let BadTail { data_end, zero_tail, torn } =
                judge_bad_tail(&file, &path, base, positions.len(), position, torn_candidate, file_len, is_last)?;
            if !torn {
                return Err(LogError::Corrupt { path, position, detail });
            }
            if opts.after_clean_shutdown && !zero_tail {
                let detail = format!(
                    "{detail}; the log was shut down cleanly with every record fsynced, so a damaged \
                     tail is corruption, not a torn write"
                );
                return Err(LogError::Corrupt { path, position, detail });
            }
            if opts.preallocate && position > 0 {
                // Keep the file's length: everything past `position` is, or becomes,
                // preallocated space. An all-zero tail is just that and is not reported.
                len = position;
                if !zero_tail {
                    write_zeros(&file, position, data_end).map_err(io_err(&path))?;
                    file.sync_data().map_err(io_err(&path))?;
                    warn!(
                        path = %path.display(), position, zeroed = data_end - position, %detail,
                        "zeroed torn tail of log segment"
                    );
                    recovery.torn_tail = Some((path.clone(), position));
                    recovery.truncated_bytes += data_end - position;
                }
            } else {
                if position == 0 {
                    // Nothing after the header can be valid: restart the file from its header.
                    file.set_len(0).map_err(io_err(&path))?;
                    file.write_all_at(&encode_file_header(base), 0).map_err(io_err(&path))?;
                    len = FILE_HEADER_LEN;
                } else {
                    file.set_len(position).map_err(io_err(&path))?;
                    len = position;
                }
                alloc = len;
                file.sync_all().map_err(io_err(&path))?;
                if file_len > 0 {
                    warn!(
                        path = %path.display(), position, truncated = file_len - position, %detail,
                        "truncated torn tail of log segment"
                    );
                    recovery.torn_tail = Some((path.clone(), position));
                    recovery.truncated_bytes += file_len - position;
                }
            }
        }

        let idx_matches = read_index(&idx_path, base, len).is_some_and(|p| p == positions);
        let sealed = if is_last {
            // An index that does not describe the file exactly is stale: it must not survive
            // to be trusted after further appends or truncations.
            if !idx_matches {
                remove_if_exists(&idx_path)?;
            } else if alloc > len {
                // Sealing trims before writing the index, so this is not expected; a sealed
                // segment must not keep a zero tail once a later segment exists.
                file.set_len(len).map_err(io_err(&path))?;
                file.sync_data().map_err(io_err(&path))?;
                alloc = len;
            }
            idx_matches
        } else {
            if !idx_matches {
                let seg = mk(file, std::mem::take(&mut positions), len, alloc, true);
                seg.file.sync_data().map_err(io_err(&path))?;
                seg.write_index()?;
                return Ok(seg);
            }
            true
        };
        Ok(mk(file, positions, len, alloc, sealed))
    }
}

/// Writes zeros over `from..to` (growing the file if `to` is past its end).
pub(crate) fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![0u8; (to.saturating_sub(from)).min(CHUNK as u64) as usize];
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

/// How a bad record at `position` reads, by the one rule recovery and offline inspection share.
pub(super) struct BadTail {
    /// End of the bytes after `position` that are not zero (zeros are never data); the file's
    /// length when that was not looked at (not the last segment, or a bad file header).
    pub data_end: u64,
    /// Nothing but zeros follows `position`.
    pub zero_tail: bool,
    /// A torn write, repaired by cutting: only in the last segment, when only zeros follow or
    /// no valid record with the next sequence number comes later. Anything else is corruption.
    pub torn: bool,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn judge_bad_tail(
    file: &File,
    path: &Path,
    base: u64,
    records_before: usize,
    position: u64,
    torn_candidate: bool,
    file_len: u64,
    is_last: bool,
) -> Result<BadTail, LogError> {
    let data_end =
        if is_last && position > 0 { nonzero_end(file, position, file_len).map_err(io_err(path))? } else { file_len };
    let zero_tail = data_end <= position;
    let expected = base + records_before as u64;
    let torn = is_last
        && (zero_tail
            || (torn_candidate
                && find_valid_after(file, position + 1, file_len, expected).map_err(io_err(path))?.is_none()));
    Ok(BadTail { data_end, zero_tail, torn })
}

/// One past the last nonzero byte in `from..to`, or `from` if they are all zero.
pub(crate) fn nonzero_end(file: &File, from: u64, to: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; (to.saturating_sub(from)).min(CHUNK as u64) as usize];
    let mut end = from;
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], pos)?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
            end = pos + i as u64 + 1;
        }
        pos += n as u64;
    }
    Ok(end)
}

fn read_index(idx_path: &Path, base: u64, log_len: u64) -> Option<Vec<u32>> {
    let data = fs::read(idx_path).ok()?;
    decode_index(&data, base, log_len)
}

/// Loads a sealed segment's positions from its index without scanning, after cheap sanity
/// checks of the file header and of the last record's header. CRCs are still verified on
/// every read, so trusting a bad index can surface as `Corrupt`, never as wrong data.
fn trusted_index(
    file: &File,
    path: &Path,
    idx_path: &Path,
    base: u64,
    file_len: u64,
) -> Result<Option<Vec<u32>>, LogError> {
    let Some(positions) = read_index(idx_path, base, file_len) else {
        return Ok(None);
    };
    let mut fh = [0u8; FILE_HEADER_LEN as usize];
    file.read_exact_at(&mut fh, 0).map_err(io_err(path))?;
    if check_file_header(&fh, base).is_some() {
        return Ok(None);
    }
    let Some(&last) = positions.last() else {
        return Ok(None);
    };
    let mut rh = [0u8; RECORD_HEADER_LEN];
    file.read_exact_at(&mut rh, u64::from(last)).map_err(io_err(path))?;
    let ok = parse_record_header(&rh).is_some_and(|h| {
        h.seq == base + positions.len() as u64 - 1
            && u64::from(last) + RECORD_HEADER_LEN as u64 + u64::from(h.len) == file_len
    });
    Ok(ok.then_some(positions))
}

/// Sequential reader over one file that serves slices out of a large buffer refilled with
/// `pread`, so it never touches the shared file cursor.
pub(crate) struct ChunkReader {
    buf: Vec<u8>,
    start: u64,
    filled: usize,
    end: u64,
}

impl ChunkReader {
    pub fn new(end: u64) -> Self {
        ChunkReader { buf: Vec::new(), start: 0, filled: 0, end }
    }

    pub fn reset(&mut self, end: u64) {
        self.start = 0;
        self.filled = 0;
        self.end = end;
    }

    /// `n` bytes at `pos`, or None if they extend past `end`.
    pub fn slice(&mut self, file: &File, pos: u64, n: usize) -> io::Result<Option<&[u8]>> {
        let Some(stop) = pos.checked_add(n as u64) else {
            return Ok(None);
        };
        if stop > self.end {
            return Ok(None);
        }
        if pos < self.start || stop > self.start + self.filled as u64 {
            let want = (self.end - pos).min(n.max(CHUNK) as u64) as usize;
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
            file.read_exact_at(&mut self.buf[..want], pos)?;
            self.start = pos;
            self.filled = want;
        }
        let off = (pos - self.start) as usize;
        Ok(Some(&self.buf[off..off + n]))
    }
}

pub(crate) enum ScanOutcome {
    Clean,
    /// `torn_candidate`: the damage is of a kind a torn write can produce (as opposed to a
    /// well-formed record with the wrong seq, which is never torn).
    Bad {
        position: u64,
        detail: String,
        torn_candidate: bool,
    },
}

pub(crate) struct Scan {
    pub positions: Vec<u32>,
    pub outcome: ScanOutcome,
}

/// Validates the file header and every record in order, stopping at the first bad one.
pub(crate) fn scan(file: &File, path: &Path, base: u64, file_len: u64) -> Result<Scan, LogError> {
    let mut rd = ChunkReader::new(file_len);
    let mut positions = Vec::new();
    let bad =
        |position: u64, detail: String, torn_candidate: bool| ScanOutcome::Bad { position, detail, torn_candidate };
    let header_problem = match rd.slice(file, 0, FILE_HEADER_LEN as usize).map_err(io_err(path))? {
        None => Some("short file header".to_string()),
        Some(h) => check_file_header(h, base),
    };
    if let Some(detail) = header_problem {
        return Ok(Scan { positions, outcome: bad(0, detail, true) });
    }
    let mut pos = FILE_HEADER_LEN;
    let mut seq = base;
    let outcome = loop {
        if pos == file_len {
            break ScanOutcome::Clean;
        }
        if pos > MAX_RECORD_START {
            break bad(pos, "record starts beyond the 4 GiB segment limit".into(), false);
        }
        let Some(hb) = rd.slice(file, pos, RECORD_HEADER_LEN).map_err(io_err(path))? else {
            break bad(pos, format!("truncated record header ({} bytes left)", file_len - pos), true);
        };
        let Some(h) = parse_record_header(hb) else {
            break bad(pos, "bad record magic".into(), true);
        };
        let total = RECORD_HEADER_LEN as u64 + u64::from(h.len);
        if pos + total > file_len {
            break bad(pos, format!("record length {} runs past end of file ({file_len} bytes)", h.len), true);
        }
        let Some(rec) = rd.slice(file, pos, total as usize).map_err(io_err(path))? else {
            break bad(pos, "record runs past end of file".into(), true);
        };
        if record_crc(h.seq, h.len, &rec[RECORD_HEADER_LEN..]) != h.crc {
            break bad(pos, "crc mismatch".into(), true);
        }
        if h.seq != seq {
            break bad(pos, format!("record seq {} where {seq} was expected", h.seq), false);
        }
        positions.push(pos as u32);
        pos += total;
        seq += 1;
    };
    Ok(Scan { positions, outcome })
}

/// Looks for any fully valid record starting at or after `from` whose seq could belong to
/// this log at that point (`expected` up to one record per header-size of remaining bytes).
/// Finding one proves the damage before it is not a torn tail.
pub(crate) fn find_valid_after(file: &File, from: u64, file_len: u64, expected: u64) -> io::Result<Option<u64>> {
    let hl = RECORD_HEADER_LEN as u64;
    if from >= file_len {
        return Ok(None);
    }
    let max_seq = expected.saturating_add((file_len - from) / hl);
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut buf = Vec::new();
    let mut payload = Vec::new();
    let mut win_start = from;
    while win_start + hl <= file_len {
        let n = (file_len - win_start).min(CHUNK as u64) as usize;
        buf.resize(n, 0);
        file.read_exact_at(&mut buf, win_start)?;
        let last = n - RECORD_HEADER_LEN;
        for i in 0..=last {
            if buf[i..i + 4] != magic {
                continue;
            }
            let Some(h) = parse_record_header(&buf[i..]) else {
                continue;
            };
            let p = win_start + i as u64;
            let total = hl + u64::from(h.len);
            if h.seq < expected || h.seq > max_seq || p + total > file_len {
                continue;
            }
            let body = if i + total as usize <= n {
                &buf[i + RECORD_HEADER_LEN..i + total as usize]
            } else {
                payload.resize(h.len as usize, 0);
                file.read_exact_at(&mut payload, p + hl)?;
                &payload[..]
            };
            if record_crc(h.seq, h.len, body) == h.crc {
                return Ok(Some(p));
            }
        }
        if win_start + n as u64 >= file_len {
            break;
        }
        win_start += last as u64 + 1;
    }
    Ok(None)
}
