//! Heavy tests one at a time. Every integration test of a crate runs in one binary, on as many
//! threads as the machine has cores (two here): a cluster of three nodes, twenty thousand
//! stations or a file system cut from power each take the machine on their own, and two at once
//! make elections and deadlines flaky. Each takes a [`Heavy`] for its whole run; light tests
//! run beside it.

use std::sync::{Condvar, Mutex};

static BUSY: Mutex<bool> = Mutex::new(false);
static FREE: Condvar = Condvar::new();

/// Held by a heavy test (or a [`crate::cluster::Cluster`]) while it runs; one at a time per
/// process. A test that panics releases it too.
#[must_use = "the guard serialises only while it is held"]
pub struct Heavy(());

impl Heavy {
    /// Waits until no other heavy test runs.
    pub fn take() -> Heavy {
        let mut busy = BUSY.lock().unwrap_or_else(|p| p.into_inner());
        while *busy {
            busy = FREE.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        *busy = true;
        Heavy(())
    }
}

impl Drop for Heavy {
    fn drop(&mut self) {
        *BUSY.lock().unwrap_or_else(|p| p.into_inner()) = false;
        FREE.notify_one();
    }
}
