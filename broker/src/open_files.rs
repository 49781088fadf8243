//! The process's open-file limit, and the share of it that station logs may keep open.
//!
//! Every station log keeps its descriptors in one cache (see [`crate::log::FileCache`]) whose
//! cap is [`open_file_budget`]: the configured cap, but never more than half the limit, so that
//! client sockets, the Raft log, snapshots and the metadata store always find room.

use rustix::process::{getrlimit, setrlimit, Resource};

/// Station-log descriptors kept open at once unless configured otherwise.
pub const DEFAULT_MAX_OPEN_FILES: usize = 1024;
/// Kept open whatever the limit, so a tiny limit slows the node down rather than stopping it.
const MIN_BUDGET: usize = 16;

/// The soft open-file limit in force, `None` if unlimited.
pub fn open_file_limit() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}

/// Raises the soft open-file limit to the hard limit, as servers commonly do at start (the
/// soft default of 1,024 is a leftover of `select`, which Depot does not use). Returns the
/// soft limit in force afterwards; a refusal leaves the limit as it was.
pub fn raise_open_file_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "could not raise the open-file limit");
        }
    }
    open_file_limit()
}

/// How many station-log descriptors may stay open: `wanted`, at most half the open-file limit.
pub fn open_file_budget(wanted: usize) -> usize {
    let budget = match open_file_limit() {
        Some(limit) => wanted.min(usize::try_from(limit / 2).unwrap_or(usize::MAX)),
        None => wanted,
    };
    let budget = budget.max(MIN_BUDGET);
    if budget < wanted {
        tracing::info!(
            wanted,
            budget,
            limit = open_file_limit(),
            "station logs keep fewer files open than configured: half the open-file limit"
        );
    }
    budget
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_never_exceeds_half_the_limit_nor_the_wish() {
        let limit = open_file_limit();
        let budget = open_file_budget(usize::MAX);
        match limit {
            Some(l) => assert!(budget as u64 <= (l / 2).max(MIN_BUDGET as u64), "{budget} of {l}"),
            None => assert_eq!(budget, usize::MAX),
        }
        assert_eq!(open_file_budget(20), 20.min(budget).max(MIN_BUDGET));
        assert_eq!(open_file_budget(1), MIN_BUDGET);
    }
}
