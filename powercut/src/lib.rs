//! A FUSE file system for tests that behaves like a disk losing its power.
//!
//! [`PowerCut::mount`] mirrors a backing directory at a mount point. Everything written through
//! the mount is visible at once, as with a page cache, but only becomes *durable* the way a
//! careful reading of POSIX allows:
//!
//! * file data (in 4 KiB pages) and the file's size: by an `fsync`/`fdatasync` of that file;
//! * a directory's entries (create, mkdir, symlink, link, rename, unlink, rmdir): by an `fsync`
//!   of that directory. A rename between two directories is durable on each side by that side's
//!   directory fsync.
//!
//! [`PowerCut::cut`] cuts the power: every later operation fails with `EIO`, the durable state
//! is written to the backing directory (nothing else), and the file system is mounted again from
//! it. In torn mode ([`Mode::Torn`]) a cut also keeps a random, seeded subset of the pending
//! pages, sizes and directory operations, as a disk that wrote some of its cache back on its own
//! schedule would (each operation, a rename included, is kept whole or not at all).
//!
//! Crash points: [`PowerCut::crash_after`] freezes the durable state right after the Nth fsync,
//! rename, unlink or link (counted from that call); a test then kills its process and calls
//! [`PowerCut::cut`]. [`PowerCut::freeze`] does the same at a moment the test picks.
//!
//! [`PowerCut::set_untorn`] keeps the pages of files under given paths from being torn (a torn
//! cut then drops all their pending pages), for a known gap that a run must not keep hitting.
//!
//! After a freeze every operation fails with `EIO`, so nothing the process is told succeeded
//! afterwards depends on a later fsync: an acknowledgement a client received must be durable.
//!
//! Needs `/dev/fuse` and `fusermount3` (Debian package `fuse3`); [`PowerCut::mount`] says so
//! plainly when either is missing.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Page size of the model: the unit a torn cut keeps or loses.
pub const PAGE: u64 = 4096;
pub(crate) const ROOT: u64 = 1;
pub(crate) const TTL: Duration = Duration::ZERO;

/// What a cut keeps besides the durable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing: every pending page, size and directory operation is lost.
    Clean,
    /// A random subset (each with probability 1/2, from this seed) of the pending pages, file
    /// sizes and directory operations, each operation whole.
    Torn { seed: u64 },
}

/// The operations a crash point counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `fsync`/`fdatasync` of a file or a directory.
    Fsync,
    /// `rename`.
    Rename,
    /// `unlink` or `rmdir`.
    Unlink,
    /// `link` (a new hard link).
    Link,
}

/// How many operations of each kind the mounted file system has served since it was mounted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub fsync: u64,
    pub rename: u64,
    pub unlink: u64,
    pub link: u64,
    /// Writes (each `write` call), for information.
    pub write: u64,
}

impl Counts {
    fn get(&self, op: Op) -> u64 {
        match op {
            Op::Fsync => self.fsync,
            Op::Rename => self.rename,
            Op::Unlink => self.unlink,
            Op::Link => self.link,
        }
    }
}

mod fuse;
mod state;

use fuse::{lock, Fs};
use state::*;

/// A mounted power-cut file system. Dropping it unmounts (the backing directory is then left as
/// it was at mount time or at the last cut).
pub struct PowerCut {
    backing: PathBuf,
    mountpoint: PathBuf,
    state: Arc<Mutex<State>>,
    session: Option<fuser::BackgroundSession>,
    cuts: u64,
}

impl std::fmt::Debug for PowerCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerCut").field("backing", &self.backing).field("mountpoint", &self.mountpoint).finish()
    }
}

/// Checks what a mount needs (`/dev/fuse`, `fusermount3` on `PATH`) and names what is missing.
pub fn check_prerequisites() -> io::Result<()> {
    check_prerequisites_in(Path::new("/dev/fuse"), std::env::var_os("PATH").as_deref())
}

/// [`check_prerequisites`] against a given device path and `PATH` value.
pub fn check_prerequisites_in(dev_fuse: &Path, path: Option<&OsStr>) -> io::Result<()> {
    if !dev_fuse.exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is missing: the power-cut file system needs the fuse kernel module", dev_fuse.display()),
        ));
    }
    let on_path =
        path.map(|paths| std::env::split_paths(paths).any(|d| d.join("fusermount3").is_file())).unwrap_or(false);
    if !on_path {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "fusermount3 is not on PATH: install the Debian package fuse3 (.ci/run does)",
        ));
    }
    Ok(())
}

impl PowerCut {
    /// Mounts a mirror of `backing` (an existing directory, all of whose content counts as
    /// durable) at `mountpoint` (an existing empty directory).
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<PowerCut> {
        check_prerequisites()?;
        let mountpoint = &mountpoint.canonicalize()?;
        let state = Arc::new(Mutex::new(State::load(backing)?));
        let mut pc =
            PowerCut { backing: backing.to_owned(), mountpoint: mountpoint.to_owned(), state, session: None, cuts: 0 };
        pc.start()?;
        Ok(pc)
    }

    fn start(&mut self) -> io::Result<()> {
        let mut config = fuser::Config::default();
        config.mount_options =
            vec![fuser::MountOption::FSName("powercut".into()), fuser::MountOption::Subtype("powercut".into())];
        let fs = Fs { state: self.state.clone() };
        let session = fuser::spawn_mount(fs, &self.mountpoint, &config).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("mounting the power-cut file system at {}: {e}", self.mountpoint.display()),
            )
        })?;
        self.session = Some(session);
        // The mount is in place once the kernel answers for it with our root.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if is_mounted(&self.mountpoint) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "{} did not appear as a mount within 10 s",
                    self.mountpoint.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop(&mut self) -> io::Result<()> {
        if let Some(session) = self.session.take() {
            let result = session.umount_and_join();
            if !is_mounted(&self.mountpoint) {
                // Gone: the session may still report how the kernel ended the connection.
                return Ok(());
            }
            // Busy (a process still holds a file): detach it lazily so nothing is left behind.
            let _ = std::process::Command::new("fusermount3").arg("-u").arg("-z").arg(&self.mountpoint).status();
            let e = result.err().unwrap_or_else(|| io::Error::other("still mounted after the session ended"));
            return Err(io::Error::new(e.kind(), format!("unmounting {}: {e}", self.mountpoint.display())));
        }
        Ok(())
    }

    /// Where the file system is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The backing directory: after a cut it holds exactly the durable state.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// What the next cut keeps.
    pub fn set_mode(&self, mode: Mode) {
        lock(&self.state).mode = mode;
    }

    /// Files under these paths (relative to the mount point) are never torn: a torn cut drops
    /// all their pending pages and size changes, as a clean cut does. Directory operations stay
    /// torn everywhere.
    pub fn set_untorn(&self, paths: Vec<PathBuf>) {
        lock(&self.state).untorn = paths;
    }

    /// Freezes the durable state right after the `n`th operation of kind `op` from now (`n` ≥ 1).
    pub fn crash_after(&self, op: Op, n: u64) {
        let mut st = lock(&self.state);
        let base = st.counts.get(op);
        st.crash_at = Some((op, base + n.max(1)));
    }

    /// Operations served since the last mount.
    pub fn counts(&self) -> Counts {
        lock(&self.state).counts
    }

    /// Whether the power is out (a crash point was reached or [`PowerCut::freeze`] was called).
    pub fn is_frozen(&self) -> bool {
        lock(&self.state).frozen
    }

    /// Cuts the power now: the durable state (plus, in torn mode, part of what was pending) is
    /// fixed and every later operation fails with `EIO`.
    pub fn freeze(&self) {
        lock(&self.state).freeze();
    }

    /// Makes everything pending durable, as a clean shutdown would.
    pub fn sync_all(&self) {
        lock(&self.state).sync_all();
    }

    /// How many cuts this mount has been through.
    pub fn cuts(&self) -> u64 {
        self.cuts
    }

    /// The power cut and the reboot: freezes (if not frozen yet), unmounts, replaces the backing
    /// directory's content with the durable state and mounts it again. Every process using the
    /// mount must have exited first.
    pub fn cut(&mut self) -> io::Result<()> {
        lock(&self.state).freeze();
        self.stop()?;
        let staging = self.backing.with_file_name(format!(
            "{}.powercut-staging",
            self.backing.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        ));
        if staging.exists() {
            fs::remove_dir_all(&staging)?;
        }
        fs::create_dir(&staging)?;
        let (mode, untorn) = {
            let st = lock(&self.state);
            st.materialize(&staging)?;
            (st.mode, st.untorn.clone())
        };
        for e in fs::read_dir(&self.backing)? {
            let p = e?.path();
            if fs::symlink_metadata(&p)?.is_dir() {
                fs::remove_dir_all(&p)?;
            } else {
                fs::remove_file(&p)?;
            }
        }
        for e in fs::read_dir(&staging)? {
            let e = e?;
            fs::rename(e.path(), self.backing.join(e.file_name()))?;
        }
        fs::remove_dir(&staging)?;
        let mut fresh = State::load(&self.backing)?;
        fresh.mode = mode;
        fresh.untorn = untorn;
        self.state = Arc::new(Mutex::new(fresh));
        self.cuts += 1;
        self.start()
    }

    /// Unmounts, leaving the backing directory as it was at the last mount or cut.
    pub fn unmount(mut self) -> io::Result<()> {
        self.stop()
    }
}

impl Drop for PowerCut {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Whether `path` (canonical) is a mount point of this file system type (from /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| {
        let mut f = l.split(' ');
        if f.nth(4) != Some(want.as_str()) {
            return false;
        }
        // After the separator: the type (`fuse` or `fuse.powercut`) and the source.
        let mut tail = l.split(" - ").nth(1).unwrap_or("").split(' ');
        tail.next().is_some_and(|t| t.starts_with("fuse")) && tail.next() == Some("powercut")
    })
}
