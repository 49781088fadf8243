//! How long the logs' fsyncs take, process-wide: a histogram of atomic counters, so the
//! committer thread records a sync without a lock and a scrape reads it without stopping it.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Upper bounds of the buckets, in seconds: from a fast NVMe flush to a disk in trouble.
pub const FSYNC_BUCKETS: [f64; 16] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Every fsync of a Raft-log or station-log file or directory made through a [`super::Handle`].
static FSYNCS: Histogram = Histogram::new();

struct Histogram {
    /// Syncs per bucket (not cumulative); a sync slower than the last bound is only in `count`.
    buckets: [AtomicU64; FSYNC_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; FSYNC_BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// A reading of the fsync histogram. The fields are read one after another while syncs go on,
/// so `count` may run a few syncs ahead of the buckets, never behind them: a sync bumps `count`
/// before its bucket (release), and a reading loads the buckets (acquire) before `count`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsyncStats {
    /// Syncs per bucket of [`FSYNC_BUCKETS`], not cumulative.
    pub buckets: [u64; FSYNC_BUCKETS.len()],
    pub count: u64,
    pub sum_nanos: u64,
}

/// The fsyncs of this process so far (failed ones included: they took their time too).
pub fn fsync_stats() -> FsyncStats {
    let mut buckets = [0; FSYNC_BUCKETS.len()];
    for (out, b) in buckets.iter_mut().zip(&FSYNCS.buckets) {
        *out = b.load(Ordering::Acquire);
    }
    FsyncStats {
        buckets,
        count: FSYNCS.count.load(Ordering::Relaxed),
        sum_nanos: FSYNCS.sum_nanos.load(Ordering::Relaxed),
    }
}

/// Runs `sync` and records how long it took.
pub(crate) fn timed(sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    let started = Instant::now();
    let result = sync();
    let took = started.elapsed();
    let secs = took.as_secs_f64();
    FSYNCS.sum_nanos.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    FSYNCS.count.fetch_add(1, Ordering::Relaxed);
    if let Some(i) = FSYNC_BUCKETS.iter().position(|le| secs <= *le) {
        FSYNCS.buckets[i].fetch_add(1, Ordering::Release);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_lands_in_its_bucket_and_in_the_count_and_sum() {
        // The histogram is process-wide and other tests sync too: compare readings, never
        // absolute values, and only in the direction other syncs cannot undo.
        let before = fsync_stats();
        let started = Instant::now();
        let err = timed(|| {
            std::thread::sleep(std::time::Duration::from_millis(30));
            Err(io::Error::other("a failed sync counts too"))
        });
        assert!(err.is_err(), "the sync's own result comes back");
        let after = fsync_stats();
        assert!(after.count > before.count);
        assert!(after.sum_nanos >= before.sum_nanos + 30_000_000);
        // 30 ms is above the 25 ms bound: the 50 ms bucket or a higher one got it (unless the
        // process was paused past the last bound, 5 s, which only the count records).
        let at_least_50ms = |s: &FsyncStats| -> u64 {
            FSYNC_BUCKETS.iter().zip(s.buckets).filter(|(le, _)| **le >= 0.05).map(|(_, n)| n).sum()
        };
        if started.elapsed().as_secs_f64() < 5.0 {
            assert!(at_least_50ms(&after) > at_least_50ms(&before));
        }
        assert!(after.count >= after.buckets.iter().sum::<u64>());
    }
}
