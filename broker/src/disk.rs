//! The free-space watermark: new data is refused while the data dir's file system has less free
//! space than the watermark, so that what must still be written (acks, deletes, snapshots, the
//! Raft metadata) finds room, and the node never reaches a full disk through its own produce.
//!
//! Free space is read with `statvfs` on every check: a few microseconds, and exact even when
//! another process fills the disk.

use std::path::{Path, PathBuf};

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

#[derive(Debug)]
pub(crate) struct DiskWatch {
    dir: PathBuf,
    min_free: MinFree,
}

impl DiskWatch {
    pub(crate) fn new(dir: &Path, min_free: MinFree) -> DiskWatch {
        DiskWatch { dir: dir.to_path_buf(), min_free }
    }

    pub(crate) fn space(&self) -> std::io::Result<Space> {
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
        match self.space() {
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
mod tests {
    use super::*;

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
