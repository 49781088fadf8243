//! Crash points for the tests that kill a node at a precise step (tiering's "between the
//! upload and the catalog commit", "during the local delete"). `DEPOT_FAILPOINTS` names the
//! points, comma-separated; reaching one aborts the process at once, as a crash would: no
//! destructor runs and no clean-shutdown marker is written. Unset (always, outside tests), a
//! point costs one read of a value initialised once.

use std::sync::OnceLock;

/// The variable the points are read from, once per process.
pub const ENV: &str = "DEPOT_FAILPOINTS";

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var(ENV)
            .map(|v| v.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    })
}

/// Aborts the process if `point` is armed.
pub(crate) fn hit(point: &str) {
    if armed().iter().any(|p| p == point) {
        eprintln!("failpoint {point}: aborting the process");
        std::process::abort();
    }
}
