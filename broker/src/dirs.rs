//! Directories that survive a power cut. A new directory exists after a power loss only once its
//! entry in the parent is on disk (an fsync of the parent), and what is inside it only once the
//! directory itself is fsynced: [`ensure_durable`] does both, for every level it creates.

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// Makes the entries of `dir` durable (the one place the crate fsyncs a directory).
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io::Error::new(e.kind(), format!("syncing {}: {e}", dir.display())))
}

fn parent_of(dir: &Path) -> &Path {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Creates `dir` and any missing parents, and fsyncs `dir` and its parent (also when `dir`
/// already existed: an earlier run may have created it and lost power before its entry was
/// durable). Each parent this call creates is made durable the same way first.
///
/// A parent this process may not read (an existing dir under, say, a `--x` directory) cannot be
/// fsynced; when `dir` already existed that is only warned about.
pub fn ensure_durable(dir: &Path) -> io::Result<()> {
    let parent = parent_of(dir);
    let existed = dir.is_dir();
    if !existed {
        if !parent.is_dir() {
            ensure_durable(parent)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))),
        }
    }
    fsync_dir(dir)?;
    match fsync_dir(parent) {
        Err(e) if existed && e.kind() == io::ErrorKind::PermissionDenied => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot fsync the parent of an existing directory; its entry may not survive a power cut if it is new");
            Ok(())
        }
        other => other,
    }
}
