//! The data dir's lock: one process at a time writes a data dir.
//!
//! Two processes writing one Raft log and one set of station logs hand out the same offsets and
//! overwrite each other's acknowledged records. The first process to open a dir takes an
//! exclusive `flock` on `<dir>/LOCK` and writes its pid there; the kernel releases the lock when
//! the process ends, however it ends, so a killed node never blocks its own restart. The pid in
//! the file only names the holder in messages; the lock itself is what counts.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::Path;

use crate::BrokerError;

/// The lock file's name inside a data dir.
pub const LOCK_FILE: &str = "LOCK";

/// The exclusive lock on a data dir, held until dropped (or the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Who holds a data dir's lock, as seen from another process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// Nobody: no process has the dir open.
    Free,
    /// A running process, with the pid it recorded (if it got to write it).
    Held { pid: Option<u32> },
}

impl DirLock {
    /// Takes the lock on `dir`, or refuses with [`BrokerError::DataDir`] naming the dir and the
    /// holder's pid.
    pub fn acquire(dir: &Path) -> Result<DirLock, BrokerError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| BrokerError::Storage(format!("{}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(in_use(dir, &path, recorded_pid(&path))),
            Err(TryLockError::Error(e)) => {
                return Err(BrokerError::Storage(format!("locking {}: {e}", path.display())));
            }
        }
        // Only a message names the pid, so it needs no fsync.
        file.set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(|e| BrokerError::Storage(format!("{}: {e}", path.display())))?;
        Ok(DirLock { _file: file })
    }
}

/// Whether a process holds `dir`'s lock. Reads only; to tell, it takes and at once drops a shared
/// lock, which a node starting in that instant would see as the dir being in use (it refuses, and
/// a retry starts it).
pub fn holder(dir: &Path) -> std::io::Result<Holder> {
    let path = dir.join(LOCK_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Holder::Free),
        Err(e) => return Err(e),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(Holder::Free),
        Err(TryLockError::WouldBlock) => Ok(Holder::Held { pid: recorded_pid(&path) }),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

fn recorded_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn in_use(dir: &Path, path: &Path, pid: Option<u32>) -> BrokerError {
    let by = pid.map_or_else(|| "another depot process".to_owned(), |pid| format!("another depot process (pid {pid})"));
    BrokerError::DataDir(format!(
        "{} is in use by {by}, which holds the lock on {}; stop that one first, or give this one a \
         --data-dir of its own",
        dir.display(),
        path.display()
    ))
}
