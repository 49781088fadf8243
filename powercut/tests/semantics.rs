//! What survives a power cut of the power-cut file system: each test writes through the mount,
//! cuts, and reads what the remounted file system (and its backing directory) holds.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use depot_powercut::{Mode, Op, PowerCut};

/// A mount on a fresh backing directory; unmounts before the directories are removed.
struct Fixture {
    pc: PowerCut,
    _tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("temp dir");
        let backing = tmp.path().join("backing");
        let mnt = tmp.path().join("mnt");
        fs::create_dir(&backing).expect("backing dir");
        fs::create_dir(&mnt).expect("mount point");
        let pc =
            PowerCut::mount(&backing, &mnt).unwrap_or_else(|e| panic!("cannot mount the power-cut file system: {e}"));
        Fixture { pc, _tmp: tmp }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.pc.mountpoint().join(rel)
    }

    fn cut(&mut self) {
        self.pc.cut().expect("cut and remount");
    }
}

fn write_file(path: &Path, bytes: &[u8], sync: bool) {
    let mut f = OpenOptions::new().create(true).write(true).truncate(true).open(path).expect("open for write");
    f.write_all(bytes).expect("write");
    if sync {
        f.sync_all().expect("fsync file");
    }
}

fn sync_dir(path: &Path) {
    File::open(path).expect("open dir").sync_all().expect("fsync dir");
}

fn read(path: &Path) -> Option<Vec<u8>> {
    match fs::read(path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => panic!("reading {}: {e}", path.display()),
    }
}

#[test]
fn unsynced_write_is_lost_synced_write_stays() {
    let mut fx = Fixture::new();
    write_file(&fx.path("a"), b"", true);
    write_file(&fx.path("b"), b"", true);
    sync_dir(fx.pc.mountpoint());
    write_file(&fx.path("a"), b"never synced", false);
    write_file(&fx.path("b"), b"synced", true);
    assert_eq!(read(&fx.path("a")).as_deref(), Some(&b"never synced"[..]), "visible before the cut");
    fx.cut();
    assert_eq!(read(&fx.path("a")).as_deref(), Some(&b""[..]), "an unsynced write must be gone");
    assert_eq!(read(&fx.path("b")).as_deref(), Some(&b"synced"[..]), "a synced write must stay");
    assert_eq!(
        fs::read(fx.pc.backing().join("b")).expect("backing"),
        b"synced",
        "the backing dir holds the durable state"
    );
}

#[test]
fn new_file_whose_directory_was_not_fsynced_vanishes() {
    let mut fx = Fixture::new();
    write_file(&fx.path("kept"), b"k", true);
    sync_dir(fx.pc.mountpoint());
    write_file(&fx.path("new"), b"data synced, entry not", true);
    fx.cut();
    assert_eq!(read(&fx.path("new")), None);
    assert_eq!(read(&fx.path("kept")).as_deref(), Some(&b"k"[..]));
}

#[test]
fn new_directory_needs_its_parent_fsynced() {
    let mut fx = Fixture::new();
    fs::create_dir(fx.path("d")).expect("mkdir");
    write_file(&fx.path("d/f"), b"x", true);
    sync_dir(&fx.path("d"));
    fx.cut();
    assert!(!fx.path("d").exists(), "d's own entry was never fsynced in its parent");

    fs::create_dir(fx.path("d")).expect("mkdir");
    write_file(&fx.path("d/f"), b"x", true);
    sync_dir(&fx.path("d"));
    sync_dir(fx.pc.mountpoint());
    fx.cut();
    assert_eq!(read(&fx.path("d/f")).as_deref(), Some(&b"x"[..]));
}

#[test]
fn rename_before_directory_fsync_is_undone() {
    let mut fx = Fixture::new();
    write_file(&fx.path("current"), b"old", true);
    sync_dir(fx.pc.mountpoint());
    write_file(&fx.path("current.tmp"), b"new", true);
    fs::rename(fx.path("current.tmp"), fx.path("current")).expect("rename");
    assert_eq!(read(&fx.path("current")).as_deref(), Some(&b"new"[..]));
    fx.cut();
    assert_eq!(read(&fx.path("current")).as_deref(), Some(&b"old"[..]), "the rename was not durable");
    assert_eq!(read(&fx.path("current.tmp")), None);

    write_file(&fx.path("current.tmp"), b"new", true);
    fs::rename(fx.path("current.tmp"), fx.path("current")).expect("rename");
    sync_dir(fx.pc.mountpoint());
    fx.cut();
    assert_eq!(read(&fx.path("current")).as_deref(), Some(&b"new"[..]));
}

#[test]
fn unlink_and_rmdir_before_directory_fsync_are_undone() {
    let mut fx = Fixture::new();
    fs::create_dir(fx.path("d")).expect("mkdir");
    write_file(&fx.path("f"), b"f", true);
    sync_dir(fx.pc.mountpoint());
    fs::remove_file(fx.path("f")).expect("unlink");
    fs::remove_dir(fx.path("d")).expect("rmdir");
    fx.cut();
    assert_eq!(read(&fx.path("f")).as_deref(), Some(&b"f"[..]));
    assert!(fx.path("d").is_dir());

    fs::remove_file(fx.path("f")).expect("unlink");
    sync_dir(fx.pc.mountpoint());
    fx.cut();
    assert_eq!(read(&fx.path("f")), None);
}

#[test]
fn hard_link_needs_its_directory_fsynced() {
    let mut fx = Fixture::new();
    write_file(&fx.path("f"), b"shared", true);
    sync_dir(fx.pc.mountpoint());
    fs::hard_link(fx.path("f"), fx.path("g")).expect("link");
    fx.cut();
    assert_eq!(read(&fx.path("g")), None);
    fs::hard_link(fx.path("f"), fx.path("g")).expect("link");
    sync_dir(fx.pc.mountpoint());
    fx.cut();
    assert_eq!(read(&fx.path("g")).as_deref(), Some(&b"shared"[..]));
    let (a, b) = (fs::metadata(fx.path("f")).expect("f"), fs::metadata(fx.path("g")).expect("g"));
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&a), 2);
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&a), std::os::unix::fs::MetadataExt::ino(&b));
}

#[test]
fn opening_with_truncate_empties_the_file() {
    let fx = Fixture::new();
    write_file(&fx.path("f"), b"0123456789", true);
    write_file(&fx.path("f"), b"abc", false);
    assert_eq!(read(&fx.path("f")).as_deref(), Some(&b"abc"[..]));
}

#[test]
fn size_change_needs_fsync() {
    let mut fx = Fixture::new();
    write_file(&fx.path("f"), &[7u8; 10_000], true);
    sync_dir(fx.pc.mountpoint());
    let f = OpenOptions::new().write(true).open(fx.path("f")).expect("open");
    f.set_len(10).expect("truncate");
    drop(f);
    assert_eq!(fs::metadata(fx.path("f")).expect("stat").len(), 10);
    fx.cut();
    assert_eq!(read(&fx.path("f")).expect("f"), vec![7u8; 10_000], "the truncate was not durable");

    let f = OpenOptions::new().write(true).open(fx.path("f")).expect("open");
    f.set_len(10).expect("truncate");
    f.sync_data().expect("fdatasync");
    drop(f);
    fx.cut();
    assert_eq!(read(&fx.path("f")).expect("f"), vec![7u8; 10]);
}

#[test]
fn crash_after_the_nth_fsync_keeps_exactly_what_came_before() {
    let mut fx = Fixture::new();
    write_file(&fx.path("f"), b"", true);
    sync_dir(fx.pc.mountpoint());
    fx.pc.crash_after(Op::Fsync, 2);
    let f = OpenOptions::new().write(true).open(fx.path("f")).expect("open");
    f.write_all_at(b"one", 0).expect("write");
    f.sync_data().expect("first fsync");
    f.write_all_at(b"two", 3).expect("write");
    f.sync_data().expect("second fsync: the crash point itself succeeds");
    assert!(fx.pc.is_frozen());
    let err = f.write_all_at(b"three", 6).expect_err("after the crash point every operation fails");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    drop(f);
    fx.cut();
    assert_eq!(read(&fx.path("f")).as_deref(), Some(&b"onetwo"[..]));
    assert!(!fx.pc.is_frozen(), "the remounted file system runs again");
}

#[test]
fn crash_after_the_nth_rename_unlink_and_link() {
    for op in [Op::Rename, Op::Unlink, Op::Link] {
        let mut fx = Fixture::new();
        write_file(&fx.path("f"), b"f", true);
        sync_dir(fx.pc.mountpoint());
        fx.pc.crash_after(op, 1);
        match op {
            Op::Rename => fs::rename(fx.path("f"), fx.path("g")).expect("rename"),
            Op::Unlink => fs::remove_file(fx.path("f")).expect("unlink"),
            _ => fs::hard_link(fx.path("f"), fx.path("g")).expect("link"),
        }
        assert!(fx.pc.is_frozen(), "{op:?}: frozen right after the first");
        assert_eq!(
            File::open(fx.pc.mountpoint()).and_then(|d| d.sync_all()).expect_err("frozen").raw_os_error(),
            Some(libc::EIO)
        );
        fx.cut();
        assert_eq!(read(&fx.path("f")).as_deref(), Some(&b"f"[..]), "{op:?}: the directory was never fsynced");
        assert_eq!(read(&fx.path("g")), None, "{op:?}");
    }
}

#[test]
fn torn_cut_keeps_a_subset_of_pages_and_renames_whole() {
    let mut fx = Fixture::new();
    const FILES: usize = 32;
    const PAGES: usize = 8;
    for i in 0..FILES {
        write_file(&fx.path(&format!("data{i}")), &vec![b'o'; PAGES * 4096], true);
        write_file(&fx.path(&format!("name{i}")), b"old", true);
    }
    sync_dir(fx.pc.mountpoint());
    for i in 0..FILES {
        let f = OpenOptions::new().write(true).open(fx.path(&format!("data{i}"))).expect("open");
        f.write_all_at(&vec![b'n'; PAGES * 4096], 0).expect("overwrite");
        write_file(&fx.path(&format!("name{i}.tmp")), b"new", true);
        fs::rename(fx.path(&format!("name{i}.tmp")), fx.path(&format!("name{i}"))).expect("rename");
    }
    fx.pc.set_mode(Mode::Torn { seed: 13 });
    fx.cut();
    let (mut new_pages, mut old_pages, mut renamed) = (0, 0, 0);
    for i in 0..FILES {
        let data = read(&fx.path(&format!("data{i}"))).expect("data file");
        assert_eq!(data.len(), PAGES * 4096);
        for page in data.chunks(4096) {
            match page[0] {
                b'n' => new_pages += 1,
                b'o' => old_pages += 1,
                other => panic!("page of neither version: {other}"),
            }
            assert!(page.iter().all(|&b| b == page[0]), "a page is kept or lost whole");
        }
        match read(&fx.path(&format!("name{i}"))).as_deref() {
            Some(b"new") => {
                renamed += 1;
                assert_eq!(read(&fx.path(&format!("name{i}.tmp"))), None, "a rename is kept whole");
            }
            Some(b"old") => {}
            other => panic!("name{i} after a torn cut: {other:?}"),
        }
    }
    assert!(
        new_pages > 0 && old_pages > 0,
        "a torn cut keeps some pending pages and loses others: {new_pages} new, {old_pages} old"
    );
    assert!(renamed > 0 && renamed < FILES, "a torn cut keeps some renames and loses others: {renamed} of {FILES}");
}

#[test]
fn untorn_paths_lose_all_pending_pages_in_a_torn_cut() {
    let mut fx = Fixture::new();
    fs::create_dir(fx.path("keep")).expect("mkdir");
    for i in 0..16 {
        write_file(&fx.path(&format!("keep/f{i}")), b"", true);
        write_file(&fx.path(&format!("t{i}")), b"", true);
    }
    sync_dir(&fx.path("keep"));
    sync_dir(fx.pc.mountpoint());
    for i in 0..16 {
        write_file(&fx.path(&format!("keep/f{i}")), &[b'x'; 4 * 4096], false);
        write_file(&fx.path(&format!("t{i}")), &[b'x'; 4 * 4096], false);
    }
    fx.pc.set_untorn(vec![PathBuf::from("keep")]);
    fx.pc.set_mode(Mode::Torn { seed: 5 });
    fx.cut();
    for i in 0..16 {
        assert_eq!(read(&fx.path(&format!("keep/f{i}"))).as_deref(), Some(&b""[..]), "untorn: nothing pending kept");
    }
    let torn: usize = (0..16).map(|i| read(&fx.path(&format!("t{i}"))).map_or(0, |b| b.len())).sum();
    assert!(torn > 0, "elsewhere a torn cut keeps some pending data");
}

#[test]
fn torn_cut_is_reproducible_from_its_seed() {
    let run = || {
        let mut fx = Fixture::new();
        for i in 0..16 {
            write_file(&fx.path(&format!("f{i}")), &[b'x'; 3 * 4096], false);
        }
        fx.pc.set_mode(Mode::Torn { seed: 99 });
        fx.cut();
        (0..16).map(|i| read(&fx.path(&format!("f{i}")))).collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn a_missing_prerequisite_is_named() {
    let err = depot_powercut::check_prerequisites_in(Path::new("/nonexistent/fuse"), None).expect_err("no device");
    assert!(err.to_string().contains("/nonexistent/fuse"), "{err}");
    let err = depot_powercut::check_prerequisites_in(Path::new("/dev/null"), Some("/nonexistent".as_ref()))
        .expect_err("no fusermount3");
    assert!(err.to_string().contains("fusermount3"), "{err}");
    depot_powercut::check_prerequisites().expect("this machine has /dev/fuse and fusermount3");
}
