//! Segment files left below a purge point by a power cut.
//!
//! A purge unlinks whole segments, oldest first, and fsyncs the directory once at the end. Until
//! that fsync the unlinks are pending, and a power cut may keep any subset of them: an older
//! segment can survive while a newer one is gone, a hole that opening the log refuses although
//! everything in it was disposable. Before a log is opened, [`drop_segments_below`] removes every
//! segment that lies wholly before the first record still needed.

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// The base sequence of a segment file name `<20 digits>.log`.
fn segment_base(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
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
        let base = pair[0];
        for name in [format!("{base:020}.log"), format!("{base:020}.idx"), format!("{base:020}.idx.tmp")] {
            remove_if_present(&dir.join(name))?;
        }
        removed += 1;
    }
    if removed > 0 {
        File::open(dir).and_then(|d| d.sync_all())?;
    }
    Ok(removed)
}
