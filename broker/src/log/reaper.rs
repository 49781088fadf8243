//! Closes removed segments, drops other large things and starts writebacks, all off the
//! caller's thread.
//!
//! Unlinking a segment only removes its name: the file lives on while a descriptor is open, and
//! the last close frees it. Freeing a 64 MiB segment drops its pages from the page cache and
//! returns its blocks to the filesystem, which on a filesystem mounted with `discard` waits
//! for the device to discard them. Measured on this machine (`perf sched`, W5 of
//! `depot-bench peers`): the Raft log purge after a snapshot closed its segment on the thread
//! that runs Raft and apply, which stood still for tens of milliseconds, and every produce,
//! fetch and ack waited behind it.
//!
//! So a removed segment's name goes on the caller's thread (and is made durable there, in
//! order, by the caller), and its descriptor is handed to one background thread that closes
//! it. Nothing is lost if the process dies first: the name is already gone, and the kernel
//! frees an unlinked file when its last descriptor closes, at exit at the latest.

use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

static REAPER: OnceLock<Mutex<Option<Sender<Job>>>> = OnceLock::new();

/// Runs `job` on the reaper thread, or here if that thread cannot be started.
pub(crate) fn later(job: impl FnOnce() + Send + 'static) {
    let slot = REAPER.get_or_init(|| Mutex::new(spawn()));
    let sender = slot.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let job: Job = Box::new(job);
    match sender {
        Some(tx) => {
            if let Err(mpsc::SendError(job)) = tx.send(job) {
                job();
            }
        }
        None => job(),
    }
}

/// Drops `value` on the reaper thread: for large structures whose freeing should not hold up
/// the thread that lets go of them.
pub(crate) fn drop_later<T: Send + 'static>(value: T) {
    later(move || drop(value));
}

/// Starts the writeback of `len` bytes of `file` from `offset` and returns without waiting
/// for it. Best effort: an error here leaves the pages to the next fsync, which reports it.
pub(crate) fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
    // SAFETY: `sync_file_range` reads no memory of ours; the descriptor is open for the call's
    // duration (borrowed from `file`).
    #[allow(unsafe_code)]
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Returns once every segment removed so far is closed (for tests that unmount a file
/// system right after dropping a log).
pub fn wait_for_removals() {
    if REAPER.get().is_none() {
        return;
    }
    let (tx, rx) = mpsc::channel();
    later(move || {
        let _ = tx.send(());
    });
    let _ = rx.recv();
}

fn spawn() -> Option<Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let started = std::thread::Builder::new().name("depot-reaper".into()).spawn(move || {
        for job in rx {
            #[cfg(test)]
            tests::pause_point();
            job();
        }
    });
    match started {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::warn!(error = %e, "could not start the segment reaper; removed segments are closed inline");
            None
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Condvar, Mutex};

    static PAUSED: Mutex<bool> = Mutex::new(false);
    static RESUMED: Condvar = Condvar::new();

    /// Holds the reaper before its next drop until [`resume`]; for tests that must see a
    /// removed segment still open after the removing call returned.
    pub(crate) fn pause() {
        *PAUSED.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }

    pub(crate) fn resume() {
        *PAUSED.lock().unwrap_or_else(|p| p.into_inner()) = false;
        RESUMED.notify_all();
    }

    pub(super) fn pause_point() {
        let mut paused = PAUSED.lock().unwrap_or_else(|p| p.into_inner());
        while *paused {
            paused = RESUMED.wait(paused).unwrap_or_else(|p| p.into_inner());
        }
    }
}
