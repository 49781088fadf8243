//! Reading a log's last record without opening it for writing: no recovery, no truncation, no
//! index rewrite, no fsync. For offline tools (`depot admin inspect`) that must leave a data dir
//! exactly as they found it, even one a running node is using.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{parse_file_name, verify_record, RECORD_HEADER_LEN};
use super::segment::{io_err, judge_bad_tail, scan, BadTail, ScanOutcome};
use super::LogError;

/// What follows the last valid record of the last segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TailState {
    /// Nothing, or only zeros (preallocated space).
    Clean,
    /// A torn, never-acknowledged write at this byte; the next open cuts it off.
    Torn { path: PathBuf, position: u64, detail: String },
    /// Damage that is not a torn write; the next open refuses the log.
    Corrupt { path: PathBuf, position: u64, detail: String },
}

/// The last valid record of a log, as the next `SegmentedLog::open` would see it.
#[derive(Clone, Debug)]
pub struct LastRecord {
    /// `(seq, payload)`; `None` when the log holds no valid record.
    pub record: Option<(u64, Vec<u8>)>,
    pub tail: TailState,
    pub segments: usize,
}

/// Finds the last valid record of the log in `dir` using read-only file handles. A missing
/// directory is an empty log.
pub fn last_record(dir: &Path) -> Result<LastRecord, LogError> {
    let mut bases = Vec::new();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(io_err(dir))?;
                if let Some(base) = entry.file_name().to_str().and_then(|n| parse_file_name(n, "log")) {
                    bases.push(base);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(dir)(e)),
    }
    bases.sort_unstable();
    let mut out = LastRecord { record: None, tail: TailState::Clean, segments: bases.len() };
    for (i, &base) in bases.iter().enumerate().rev() {
        let is_last = i + 1 == bases.len();
        let path = dir.join(super::format::log_file_name(base));
        let file = File::open(&path).map_err(io_err(&path))?;
        let file_len = file.metadata().map_err(io_err(&path))?.len();
        let scanned = scan(&file, &path, base, file_len)?;
        if let ScanOutcome::Bad { position, detail, torn_candidate } = scanned.outcome {
            let BadTail { zero_tail, torn, .. } = judge_bad_tail(
                &file,
                &path,
                base,
                scanned.positions.len(),
                position,
                torn_candidate,
                file_len,
                is_last,
            )?;
            if !torn {
                out.tail = TailState::Corrupt { path: path.clone(), position, detail };
            } else if !zero_tail {
                out.tail = TailState::Torn { path: path.clone(), position, detail };
            }
        }
        if let Some(&start) = scanned.positions.last() {
            let seq = base + scanned.positions.len() as u64 - 1;
            let start = u64::from(start);
            let mut header = [0u8; RECORD_HEADER_LEN];
            file.read_exact_at(&mut header, start).map_err(io_err(&path))?;
            let len = u64::from(super::format::le_u32(&header[4..8]));
            let mut rec = vec![0u8; RECORD_HEADER_LEN + len as usize];
            file.read_exact_at(&mut rec, start).map_err(io_err(&path))?;
            verify_record(&path, start, seq, &rec)?;
            rec.drain(..RECORD_HEADER_LEN);
            out.record = Some((seq, rec));
            return Ok(out);
        }
        // A segment without records (just rolled, or cut back to its header): the last record,
        // if any, is in the one before.
    }
    Ok(out)
}
