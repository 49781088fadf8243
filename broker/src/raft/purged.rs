//! Segment files left below a purge point by a power cut.
//!
//! A purge makes the purge point durable in the meta file, then unlinks whole segments, oldest
//! first, without fsyncing the directory (`SegmentedLog::purge_before_covered`). The unlinks stay
//! pending until some later directory sync, and a power cut may keep any subset of them: an older
//! segment can survive while a newer one is gone, a hole that opening the log refuses although
//! everything in it was disposable. Before a log is opened, [`drop_segments_below`] removes every
//! segment that lies wholly before the first record still needed.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use crate::log::format::{index_file_name, index_tmp_name, log_file_name, parse_file_name};

/// The base sequence of a segment file name `<20 digits>.log`.
fn segment_base(name: &str) -> Option<u64> {
    parse_file_name(name, "log")
}

/// Removes a segment's `.log` and whatever index files it has.
fn remove_segment(dir: &Path, base: u64) -> io::Result<()> {
    for name in [log_file_name(base), index_file_name(base), index_tmp_name(base)] {
        remove_if_present(&dir.join(name))?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("removing {}: {e}", path.display()))),
    }
}

/// Removes the segments of the log in `dir` whose records all precede `needed_from` (a segment
/// ends where the next one begins; the last one is always kept), and fsyncs `dir` if it removed
/// any. Returns how many it removed.
pub fn drop_segments_below(dir: &Path, needed_from: u64) -> io::Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io::Error::new(e.kind(), format!("listing {}: {e}", dir.display()))),
    };
    let mut bases = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(base) = entry.file_name().to_str().and_then(segment_base) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let mut removed = 0;
    for pair in bases.windows(2) {
        if pair[1] > needed_from {
            break;
        }
        remove_segment(dir, pair[0])?;
        removed += 1;
    }
    if removed > 0 {
        File::open(dir).and_then(|d| d.sync_all())?;
    }
    Ok(removed)
}

/// Cuts the log in `dir` back to what a snapshot recorded of it: `recorded` holds each
/// segment's file name and length at the snapshot. Everything past that was appended after
/// the snapshot without an fsync, is replayed from the Raft log, and after a power cut may have
/// been written back out of order (a later page kept, an earlier one lost), which would read as
/// corruption. Longer recorded segments are truncated to their recorded length; segments
/// started after the last recorded one are removed. Returns whether anything changed (the
/// changes are durable when it returns).
pub fn cut_to_snapshot(dir: &Path, recorded: &[(String, u64)]) -> io::Result<bool> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io::Error::new(e.kind(), format!("listing {}: {e}", dir.display()))),
    };
    let last_recorded = recorded.iter().filter_map(|(name, _)| segment_base(name)).max();
    let mut removed = false;
    let mut cut = false;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(base) = segment_base(name) else { continue };
        let path = entry.path();
        match recorded.iter().find(|(n, _)| n == name) {
            // Opened only when there is something to cut: most stations have nothing past it.
            Some(&(_, len)) if entry.metadata()?.len() > len => {
                let file = fs::OpenOptions::new().write(true).open(&path)?;
                file.set_len(len)?;
                file.sync_all()?;
                cut = true;
            }
            Some(_) => {}
            None if last_recorded.is_none_or(|last| base > last) => {
                remove_segment(dir, base)?;
                removed = true;
            }
            None => {}
        }
    }
    if removed {
        File::open(dir).and_then(|d| d.sync_all())?;
    }
    Ok(removed || cut)
}
