//! The free-space watermark: new data is refused while the data dir's file system has less free
//! space than the watermark, so that what must still be written (acks, deletes, snapshots, the
//! Raft metadata) finds room, and the node never reaches a full disk through its own produce.
//!
//! Free space is read with `statvfs`, which walks the data dir's path each time: on a busy node
//! that was 4% of a single produce's server CPU. A reading well above the watermark (by
//! [`HEADROOM`]) therefore stands for [`FRESH`]; anything nearer the watermark is read again on
//! every check. To cross the headroom within that time, this node and every other process
//! together would have to write 6.4 GB/s, which no disk here does: the refusal still comes
//! before the disk is full, and as soon as the file system says the space is gone.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::BrokerError;

/// Floor of the automatic watermark: room for the largest batch (16 MiB) written to the Raft log
/// and to a station log, a snapshot and a preallocation step, with margin.
const AUTO_FLOOR: u64 = 64 << 20;
/// Ceiling of the automatic watermark.
const AUTO_CEILING: u64 = 1 << 30;

/// How much free space the data dir's file system must keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinFree {
    /// 5% of the file system, at most 1 GiB and at least 64 MiB.
    Auto,
    Bytes(u64),
    /// A percentage (0-100) of the file system's size.
    Percent(u8),
    /// No watermark (tests of what happens on a really full disk).
    Off,
}

impl MinFree {
    /// `auto`, `off`, `N%`, or a size in bytes with an optional `KiB`/`MiB`/`GiB` suffix.
    pub fn parse(text: &str) -> Result<MinFree, String> {
        let text = text.trim();
        let bad = || format!("{text:?}: expected auto, off, a percentage such as 5%, or a size such as 512MiB");
        match text {
            "auto" => return Ok(MinFree::Auto),
            "off" => return Ok(MinFree::Off),
            _ => {}
        }
        if let Some(p) = text.strip_suffix('%') {
            let p: u8 = p.trim().parse().map_err(|_| bad())?;
            return if p <= 100 { Ok(MinFree::Percent(p)) } else { Err(bad()) };
        }
        let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => text.split_at(i),
            None => (text, ""),
        };
        let shift = match unit.trim() {
            "" | "B" => 0,
            "KiB" => 10,
            "MiB" => 20,
            "GiB" => 30,
            "TiB" => 40,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        n.checked_mul(1 << shift).map(MinFree::Bytes).ok_or_else(bad)
    }

    /// The watermark in bytes on a file system of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            MinFree::Auto => (total / 20).clamp(AUTO_FLOOR, AUTO_CEILING),
            MinFree::Bytes(b) => b,
            MinFree::Percent(p) => total / 100 * u64::from(p),
            MinFree::Off => 0,
        }
    }
}

impl std::fmt::Display for MinFree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MinFree::Auto => f.write_str("auto"),
            MinFree::Bytes(b) => write!(f, "{b}"),
            MinFree::Percent(p) => write!(f, "{p}%"),
            MinFree::Off => f.write_str("off"),
        }
    }
}

/// Space on the data dir's file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Available to this (unprivileged) process.
    pub free: u64,
    pub total: u64,
    pub min_free: u64,
}

impl Space {
    pub fn low(&self) -> bool {
        self.free < self.min_free
    }
}

/// How long a reading far enough above the watermark stands for the next checks.
const FRESH: Duration = Duration::from_millis(10);
/// How far above the watermark a reading must be to stand for [`FRESH`].
const HEADROOM: u64 = 64 << 20;

#[derive(Debug)]
pub(crate) struct DiskWatch {
    dir: PathBuf,
    min_free: MinFree,
    /// When the last reading well above the watermark was taken.
    clear_since: Mutex<Option<Instant>>,
    #[cfg(test)]
    reads: std::sync::atomic::AtomicU64,
}

impl DiskWatch {
    pub(crate) fn new(dir: &Path, min_free: MinFree) -> DiskWatch {
        DiskWatch {
            dir: dir.to_path_buf(),
            min_free,
            clear_since: Mutex::new(None),
            #[cfg(test)]
            reads: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Reads the file system's free space now.
    pub(crate) fn space(&self) -> std::io::Result<Space> {
        #[cfg(test)]
        self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let st = rustix::fs::statvfs(&self.dir)?;
        let unit = st.f_frsize.max(1);
        let total = st.f_blocks.saturating_mul(unit);
        Ok(Space { free: st.f_bavail.saturating_mul(unit), total, min_free: self.min_free.bytes(total) })
    }

    /// `Err(StorageFull)` while free space is under the watermark. A file system that cannot be
    /// asked is not held against the write: the write itself then tells.
    pub(crate) fn check(&self) -> Result<(), BrokerError> {
        if self.min_free == MinFree::Off {
            return Ok(());
        }
        let now = Instant::now();
        let mut clear_since = self.clear_since.lock().unwrap_or_else(|p| p.into_inner());
        if clear_since.is_some_and(|at| now.saturating_duration_since(at) < FRESH) {
            return Ok(());
        }
        let space = self.space();
        *clear_since = match &space {
            Ok(s) if s.free.saturating_sub(s.min_free) >= HEADROOM => Some(now),
            _ => None,
        };
        drop(clear_since);
        match space {
            Ok(space) if space.low() => Err(BrokerError::StorageFull {
                free_bytes: space.free,
                min_free_bytes: space.min_free,
                tier_lag_bytes: 0,
            }),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the free space of the data dir");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// A watermark `above` bytes under the file system's free space as it is now.
    fn watch_with_room(dir: &Path, above: u64) -> DiskWatch {
        let free = DiskWatch::new(dir, MinFree::Off).space().unwrap().free;
        DiskWatch::new(dir, MinFree::Bytes(free.saturating_sub(above)))
    }

    #[test]
    fn a_reading_well_above_the_watermark_stands_for_a_moment() {
        let dir = tempfile::tempdir().unwrap();
        // 1 GiB of room: another process could still take some while the test runs.
        let watch = watch_with_room(dir.path(), 1 << 30);
        let started = Instant::now();
        for _ in 0..100 {
            watch.check().unwrap();
        }
        let reads = watch.reads.load(Ordering::Relaxed);
        // Each read stands for 10 ms: 100 checks within that take one read, on a slow machine a few.
        let most = 1 + started.elapsed().as_millis() as u64 / 10;
        assert!(reads <= most, "{reads} reads for 100 checks in {:?}", started.elapsed());
    }

    #[test]
    fn near_or_under_the_watermark_every_check_reads_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let near = watch_with_room(dir.path(), 16 << 20);
        for _ in 0..20 {
            // Refused or not (other tests write to this file system too), each check reads.
            let _ = near.check();
        }
        assert_eq!(near.reads.load(Ordering::Relaxed), 20, "a reading within 64 MiB of the watermark was reused");

        let free = DiskWatch::new(dir.path(), MinFree::Off).space().unwrap().free;
        let under = DiskWatch::new(dir.path(), MinFree::Bytes(free.saturating_add(1 << 30)));
        for _ in 0..5 {
            assert!(matches!(under.check(), Err(BrokerError::StorageFull { .. })));
        }
        assert_eq!(under.reads.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn parses_every_form_and_refuses_the_rest() {
        assert_eq!(MinFree::parse("auto"), Ok(MinFree::Auto));
        assert_eq!(MinFree::parse("off"), Ok(MinFree::Off));
        assert_eq!(MinFree::parse("5%"), Ok(MinFree::Percent(5)));
        assert_eq!(MinFree::parse("1048576"), Ok(MinFree::Bytes(1 << 20)));
        assert_eq!(MinFree::parse("512MiB"), Ok(MinFree::Bytes(512 << 20)));
        assert_eq!(MinFree::parse("2GiB"), Ok(MinFree::Bytes(2 << 30)));
        for bad in ["", "101%", "-1", "5 %x", "1.5GiB", "12XB", "99999999999999999999TiB", "%"] {
            assert!(MinFree::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn auto_is_five_percent_within_its_floor_and_ceiling() {
        assert_eq!(MinFree::Auto.bytes(100 << 30), 1 << 30);
        assert_eq!(MinFree::Auto.bytes(10 << 30), (10 << 30) / 20);
        assert_eq!(MinFree::Auto.bytes(256 << 20), 64 << 20);
        assert_eq!(MinFree::Percent(10).bytes(1000), 100);
        assert_eq!(MinFree::Off.bytes(1000), 0);
    }
}
