//! Disks a test fills: a tmpfs of a chosen size, ballast files, free space.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted by the test (it must run as root, as CI does), unmounted when dropped.
pub struct Tmpfs {
    path: PathBuf,
    /// The temp dir it is mounted on, if the guard made it: removed after the unmount.
    _dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// A tmpfs of `size` (as `mount -o size=` takes it) on a fresh temp dir.
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("creating a temp dir: {e}"));
        let mut fs = Tmpfs::mount_at(dir.path(), size);
        fs._dir = Some(dir);
        fs
    }

    /// A tmpfs of `size` mounted on the existing empty dir `path`.
    pub fn mount_at(path: &Path, size: &str) -> Tmpfs {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "depot-disk-full-test"])
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("this test mounts a tmpfs and needs `mount` (util-linux): {e}"));
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and must run as root (CI does): mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { path: path.to_path_buf(), _dir: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Bytes an unprivileged writer may still use on the file system of `path`.
pub fn free_bytes(path: &Path) -> u64 {
    let st = rustix::fs::statvfs(path).unwrap_or_else(|e| panic!("statvfs {}: {e}", path.display()));
    st.f_bavail * st.f_frsize
}

/// Fills `path` with `bytes` of data (not a sparse file: tmpfs counts what is written).
pub fn write_ballast(path: &Path, bytes: u64) {
    let chunk = vec![0x5au8; 1 << 20];
    let mut file = std::fs::File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        std::io::Write::write_all(&mut file, &chunk[..n]).unwrap_or_else(|e| panic!("writing ballast: {e}"));
        left -= n as u64;
    }
}
