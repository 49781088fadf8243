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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    Request, TimeOrNow, WriteFlags,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Page size of the model: the unit a torn cut keeps or loses.
pub const PAGE: u64 = 4096;
const ROOT: u64 = 1;
const TTL: Duration = Duration::ZERO;

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

type Page = Arc<Vec<u8>>;

#[derive(Clone, Default)]
struct Data {
    size: u64,
    pages: BTreeMap<u64, Page>,
}

impl Data {
    fn pages_for(size: u64) -> u64 {
        size.div_ceil(PAGE)
    }

    fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        if offset >= self.size {
            return Vec::new();
        }
        let end = self.size.min(offset.saturating_add(len));
        let mut out = vec![0u8; (end - offset) as usize];
        let mut pos = offset;
        while pos < end {
            let idx = pos / PAGE;
            let in_page = (pos % PAGE) as usize;
            let n = ((PAGE as usize - in_page) as u64).min(end - pos) as usize;
            if let Some(p) = self.pages.get(&idx) {
                let at = (pos - offset) as usize;
                out[at..at + n].copy_from_slice(&p[in_page..in_page + n]);
            }
            pos += n as u64;
        }
        out
    }
}

enum Body {
    File { cur: Data, dur: Data, dirty: BTreeSet<u64>, size_dirty: bool },
    Dir { cur: BTreeMap<OsString, u64>, dur: BTreeMap<OsString, u64>, parent: u64 },
    Symlink(PathBuf),
}

struct Node {
    body: Body,
    perm: u16,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: SystemTime,
}

/// A directory operation not yet made durable by a directory fsync.
#[derive(Clone)]
enum DirOp {
    /// `name` in `dir` now names `ino` (`None`: is removed).
    Set { dir: u64, name: OsString, ino: Option<u64> },
    /// A rename: removes the source and sets the target in one step.
    Rename { from: u64, from_name: OsString, to: u64, to_name: OsString, ino: u64 },
}

struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    pending: Vec<DirOp>,
    counts: Counts,
    mode: Mode,
    /// Paths (relative to the mount) whose files' pages a torn cut never tears.
    untorn: Vec<PathBuf>,
    frozen: bool,
    crash_at: Option<(Op, u64)>,
    dir_handles: HashMap<u64, Vec<(u64, FileType, OsString)>>,
    next_fh: u64,
}

fn kind_of(body: &Body) -> FileType {
    match body {
        Body::File { .. } => FileType::RegularFile,
        Body::Dir { .. } => FileType::Directory,
        Body::Symlink(_) => FileType::Symlink,
    }
}

impl State {
    fn empty() -> State {
        State {
            nodes: HashMap::new(),
            next_ino: ROOT + 1,
            pending: Vec::new(),
            counts: Counts::default(),
            mode: Mode::Clean,
            untorn: Vec::new(),
            frozen: false,
            crash_at: None,
            dir_handles: HashMap::new(),
            next_fh: 1,
        }
    }

    /// Reads the backing directory: all of it is durable.
    fn load(backing: &Path) -> io::Result<State> {
        let mut st = State::empty();
        let meta = fs::metadata(backing)?;
        st.nodes.insert(
            ROOT,
            Node {
                body: Body::Dir { cur: BTreeMap::new(), dur: BTreeMap::new(), parent: ROOT },
                perm: (meta.permissions().mode() & 0o7777) as u16,
                uid: meta.uid(),
                gid: meta.gid(),
                nlink: 2,
                mtime: SystemTime::now(),
            },
        );
        let mut links: HashMap<(u64, u64), u64> = HashMap::new();
        st.load_dir(backing, ROOT, &mut links)?;
        Ok(st)
    }

    fn load_dir(&mut self, path: &Path, dir: u64, links: &mut HashMap<(u64, u64), u64>) -> io::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(path)?.collect::<io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let meta = fs::symlink_metadata(&p)?;
            let name = e.file_name();
            let ino = if let Some(&ino) = links.get(&(meta.dev(), meta.ino())) {
                if let Some(n) = self.nodes.get_mut(&ino) {
                    n.nlink += 1;
                }
                ino
            } else {
                let ino = self.next_ino;
                self.next_ino += 1;
                let ft = meta.file_type();
                let body = if ft.is_dir() {
                    Body::Dir { cur: BTreeMap::new(), dur: BTreeMap::new(), parent: dir }
                } else if ft.is_symlink() {
                    Body::Symlink(fs::read_link(&p)?)
                } else if ft.is_file() {
                    let bytes = fs::read(&p)?;
                    let mut data = Data { size: bytes.len() as u64, pages: BTreeMap::new() };
                    for (i, chunk) in bytes.chunks(PAGE as usize).enumerate() {
                        if chunk.iter().any(|&b| b != 0) {
                            let mut page = vec![0u8; PAGE as usize];
                            page[..chunk.len()].copy_from_slice(chunk);
                            data.pages.insert(i as u64, Arc::new(page));
                        }
                    }
                    Body::File { cur: data.clone(), dur: data, dirty: BTreeSet::new(), size_dirty: false }
                } else {
                    continue;
                };
                let is_dir = matches!(body, Body::Dir { .. });
                self.nodes.insert(
                    ino,
                    Node {
                        body,
                        perm: (meta.permissions().mode() & 0o7777) as u16,
                        uid: meta.uid(),
                        gid: meta.gid(),
                        nlink: if is_dir { 2 } else { 1 },
                        mtime: SystemTime::now(),
                    },
                );
                if is_dir {
                    self.load_dir(&p, ino, links)?;
                } else if meta.file_type().is_file() {
                    links.insert((meta.dev(), meta.ino()), ino);
                }
                ino
            };
            if let Some(Node { body: Body::Dir { cur, dur, .. }, .. }) = self.nodes.get_mut(&dir) {
                cur.insert(name.clone(), ino);
                dur.insert(name, ino);
            }
        }
        Ok(())
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let n = self.nodes.get(&ino)?;
        let size = match &n.body {
            Body::File { cur, .. } => cur.size,
            Body::Dir { cur, .. } => cur.len() as u64,
            Body::Symlink(t) => t.as_os_str().len() as u64,
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            crtime: n.mtime,
            kind: kind_of(&n.body),
            perm: n.perm,
            nlink: n.nlink,
            uid: n.uid,
            gid: n.gid,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    fn dir(&self, ino: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get(&ino).map(|n| &n.body) {
            Some(Body::Dir { cur, .. }) => Ok(cur),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.body) {
            Some(Body::Dir { cur, .. }) => Ok(cur),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    /// Counts an operation and freezes when it is the crash point.
    fn count(&mut self, op: Op) {
        match op {
            Op::Fsync => self.counts.fsync += 1,
            Op::Rename => self.counts.rename += 1,
            Op::Unlink => self.counts.unlink += 1,
            Op::Link => self.counts.link += 1,
        }
        if let Some((at, n)) = self.crash_at {
            if at == op && self.counts.get(op) >= n {
                self.freeze();
            }
        }
    }

    fn live(&self) -> Result<(), Errno> {
        if self.frozen {
            Err(Errno::EIO)
        } else {
            Ok(())
        }
    }

    fn new_node(&mut self, body: Body, perm: u16, req: &Request) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if matches!(body, Body::Dir { .. }) { 2 } else { 1 };
        self.nodes.insert(ino, Node { body, perm, uid: req.uid(), gid: req.gid(), nlink, mtime: SystemTime::now() });
        ino
    }

    fn add_entry(&mut self, parent: u64, name: &OsStr, body: Body, perm: u16, req: &Request) -> Result<u64, Errno> {
        self.live()?;
        if self.dir(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.new_node(body, perm, req);
        self.dir_mut(parent)?.insert(name.to_owned(), ino);
        self.pending.push(DirOp::Set { dir: parent, name: name.to_owned(), ino: Some(ino) });
        self.touch(parent);
        Ok(ino)
    }

    fn touch(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.mtime = SystemTime::now();
        }
    }

    fn drop_link(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink = n.nlink.saturating_sub(1);
        }
    }

    fn remove(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        self.live()?;
        let ino = self.lookup(parent, name)?;
        match (&self.nodes[&ino].body, want_dir) {
            (Body::Dir { cur, .. }, true) => {
                if !cur.is_empty() {
                    return Err(Errno::ENOTEMPTY);
                }
            }
            (Body::Dir { .. }, false) => return Err(Errno::EISDIR),
            (_, true) => return Err(Errno::ENOTDIR),
            (_, false) => {}
        }
        self.dir_mut(parent)?.remove(name);
        self.drop_link(ino);
        self.pending.push(DirOp::Set { dir: parent, name: name.to_owned(), ino: None });
        self.touch(parent);
        self.count(Op::Unlink);
        Ok(())
    }

    fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<(), Errno> {
        self.live()?;
        let Some(Node { body: Body::File { cur, dirty, size_dirty, .. }, mtime, .. }) = self.nodes.get_mut(&ino) else {
            return Err(Errno::EBADF);
        };
        let mut pos = offset;
        let end = offset + bytes.len() as u64;
        while pos < end {
            let idx = pos / PAGE;
            let in_page = (pos % PAGE) as usize;
            let n = ((PAGE as usize - in_page) as u64).min(end - pos) as usize;
            let page = cur.pages.entry(idx).or_insert_with(|| Arc::new(vec![0u8; PAGE as usize]));
            let at = (pos - offset) as usize;
            Arc::make_mut(page)[in_page..in_page + n].copy_from_slice(&bytes[at..at + n]);
            dirty.insert(idx);
            pos += n as u64;
        }
        if end > cur.size {
            cur.size = end;
            *size_dirty = true;
        }
        *mtime = SystemTime::now();
        self.counts.write += 1;
        Ok(())
    }

    fn set_size(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        self.live()?;
        let Some(Node { body: Body::File { cur, dirty, size_dirty, .. }, mtime, .. }) = self.nodes.get_mut(&ino) else {
            return Err(Errno::EISDIR);
        };
        if size < cur.size {
            let keep = Data::pages_for(size);
            let gone: Vec<u64> = cur.pages.range(keep..).map(|(&k, _)| k).collect();
            for k in gone {
                cur.pages.remove(&k);
                dirty.insert(k);
            }
            // Zero the tail of the last, partial page.
            let tail = (size % PAGE) as usize;
            if tail != 0 {
                if let Some(p) = cur.pages.get_mut(&(size / PAGE)) {
                    Arc::make_mut(p)[tail..].fill(0);
                    dirty.insert(size / PAGE);
                }
            }
        }
        if size != cur.size {
            cur.size = size;
            *size_dirty = true;
        }
        *mtime = SystemTime::now();
        Ok(())
    }

    /// Makes a file's data and size, or a directory's entries, durable.
    fn fsync(&mut self, ino: u64) -> Result<(), Errno> {
        self.live()?;
        match self.nodes.get_mut(&ino).map(|n| &mut n.body) {
            Some(Body::File { cur, dur, dirty, size_dirty }) => {
                for idx in std::mem::take(dirty) {
                    match cur.pages.get(&idx) {
                        Some(p) => dur.pages.insert(idx, p.clone()),
                        None => dur.pages.remove(&idx),
                    };
                }
                dur.size = cur.size;
                let keep = Data::pages_for(dur.size);
                dur.pages.retain(|&k, _| k < keep);
                *size_dirty = false;
            }
            Some(Body::Dir { cur, dur, .. }) => {
                *dur = cur.clone();
                // Operations on this directory are durable now; a rename's other side is not.
                let mut rest = Vec::new();
                for op in std::mem::take(&mut self.pending) {
                    match op {
                        DirOp::Set { dir, .. } if dir == ino => {}
                        DirOp::Rename { from, to, .. } if from == ino && to == ino => {}
                        DirOp::Rename { from, from_name, to, ino: moved, .. } if to == ino => {
                            let _ = moved;
                            rest.push(DirOp::Set { dir: from, name: from_name, ino: None });
                        }
                        DirOp::Rename { from, to, to_name, ino: moved, .. } if from == ino => {
                            rest.push(DirOp::Set { dir: to, name: to_name, ino: Some(moved) });
                        }
                        other => rest.push(other),
                    }
                }
                self.pending = rest;
            }
            Some(Body::Symlink(_)) => {}
            None => return Err(Errno::ENOENT),
        }
        self.count(Op::Fsync);
        Ok(())
    }

    /// The power goes out now: in torn mode part of what is pending reaches the disk, the rest
    /// is lost, and nothing after this changes the durable state.
    fn freeze(&mut self) {
        if self.frozen {
            return;
        }
        self.frozen = true;
        if let Mode::Torn { seed } = self.mode {
            let mut rng = StdRng::seed_from_u64(seed);
            let untorn = self.untorn_files();
            let mut inos: Vec<u64> = self.nodes.keys().copied().collect();
            inos.sort_unstable();
            for ino in inos {
                if untorn.contains(&ino) {
                    continue;
                }
                if let Some(Node { body: Body::File { cur, dur, dirty, size_dirty }, .. }) = self.nodes.get_mut(&ino) {
                    for &idx in dirty.iter() {
                        if rng.random_bool(0.5) {
                            match cur.pages.get(&idx) {
                                Some(p) => dur.pages.insert(idx, p.clone()),
                                None => dur.pages.remove(&idx),
                            };
                        }
                    }
                    if *size_dirty && rng.random_bool(0.5) {
                        dur.size = cur.size;
                    }
                    let keep = Data::pages_for(dur.size);
                    dur.pages.retain(|&k, _| k < keep);
                }
            }
            for op in std::mem::take(&mut self.pending) {
                if !rng.random_bool(0.5) {
                    continue;
                }
                match op {
                    DirOp::Set { dir, name, ino } => self.set_durable(dir, name, ino),
                    DirOp::Rename { from, from_name, to, to_name, ino } => {
                        self.set_durable(from, from_name, None);
                        self.set_durable(to, to_name, Some(ino));
                    }
                }
            }
        }
        self.pending.clear();
    }

    /// Files now reachable under one of the `untorn` paths.
    fn untorn_files(&self) -> BTreeSet<u64> {
        let mut out = BTreeSet::new();
        let mut stack = vec![(ROOT, PathBuf::new())];
        let mut seen = BTreeSet::new();
        while let Some((dir, path)) = stack.pop() {
            if !seen.insert(dir) {
                continue;
            }
            let Some(Node { body: Body::Dir { cur, .. }, .. }) = self.nodes.get(&dir) else { continue };
            for (name, &ino) in cur {
                let p = path.join(name);
                match self.nodes.get(&ino).map(|n| &n.body) {
                    Some(Body::Dir { .. }) => stack.push((ino, p)),
                    Some(Body::File { .. }) if self.untorn.iter().any(|u| p.starts_with(u)) => {
                        out.insert(ino);
                    }
                    _ => {}
                }
            }
        }
        out
    }

    fn set_durable(&mut self, dir: u64, name: OsString, ino: Option<u64>) {
        if let Some(Node { body: Body::Dir { dur, .. }, .. }) = self.nodes.get_mut(&dir) {
            match ino {
                Some(ino) => dur.insert(name, ino),
                None => dur.remove(&name),
            };
        }
    }

    /// Writes the durable tree into `target` (an empty directory).
    fn materialize(&self, target: &Path) -> io::Result<()> {
        let mut written: HashMap<u64, PathBuf> = HashMap::new();
        let mut seen_dirs: BTreeSet<u64> = BTreeSet::new();
        self.materialize_dir(ROOT, target, &mut written, &mut seen_dirs)
    }

    fn materialize_dir(
        &self,
        dir: u64,
        path: &Path,
        written: &mut HashMap<u64, PathBuf>,
        seen_dirs: &mut BTreeSet<u64>,
    ) -> io::Result<()> {
        if !seen_dirs.insert(dir) {
            return Ok(());
        }
        let Some(Node { body: Body::Dir { dur, .. }, .. }) = self.nodes.get(&dir) else {
            return Ok(());
        };
        for (name, &ino) in dur {
            let Some(node) = self.nodes.get(&ino) else { continue };
            let p = path.join(name);
            match &node.body {
                Body::Dir { .. } => {
                    if seen_dirs.contains(&ino) {
                        continue;
                    }
                    fs::create_dir(&p)?;
                    fs::set_permissions(&p, fs::Permissions::from_mode(u32::from(node.perm)))?;
                    self.materialize_dir(ino, &p, written, seen_dirs)?;
                }
                Body::Symlink(target) => std::os::unix::fs::symlink(target, &p)?,
                Body::File { dur: data, .. } => {
                    if let Some(first) = written.get(&ino) {
                        fs::hard_link(first, &p)?;
                        continue;
                    }
                    let f = fs::File::create(&p)?;
                    for (&idx, page) in &data.pages {
                        let start = idx * PAGE;
                        let n = (data.size.saturating_sub(start)).min(PAGE) as usize;
                        std::os::unix::fs::FileExt::write_all_at(&f, &page[..n], start)?;
                    }
                    f.set_len(data.size)?;
                    fs::set_permissions(&p, fs::Permissions::from_mode(u32::from(node.perm)))?;
                    written.insert(ino, p);
                }
            }
        }
        Ok(())
    }

    /// Makes everything durable (a clean shutdown of the machine).
    fn sync_all(&mut self) {
        let inos: Vec<u64> = self.nodes.keys().copied().collect();
        let counts = self.counts;
        let crash_at = self.crash_at.take();
        for ino in inos {
            let _ = self.fsync(ino);
        }
        self.counts = counts;
        self.crash_at = crash_at;
        self.pending.clear();
    }
}

struct Fs {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Fs {
    fn st(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn reply_entry(st: &State, ino: Result<u64, Errno>, reply: ReplyEntry) {
        match ino.and_then(|ino| st.attr(ino).ok_or(Errno::ENOENT)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let st = self.st();
        let ino = st.live().and_then(|()| st.lookup(parent.0, name));
        Self::reply_entry(&st, ino, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let st = self.st();
        match st.live().and_then(|()| st.attr(ino.0).ok_or(Errno::ENOENT)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.st();
        let mut result = st.live();
        if result.is_ok() {
            if let Some(size) = size {
                result = st.set_size(ino.0, size);
            }
        }
        if result.is_ok() {
            if let Some(mode) = mode {
                match st.nodes.get_mut(&ino.0) {
                    Some(n) => n.perm = (mode & 0o7777) as u16,
                    None => result = Err(Errno::ENOENT),
                }
            }
        }
        match result.and_then(|()| st.attr(ino.0).ok_or(Errno::ENOENT)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let st = self.st();
        match st.nodes.get(&ino.0).map(|n| &n.body) {
            Some(Body::Symlink(t)) if !st.frozen => reply.data(t.as_os_str().as_bytes()),
            _ => reply.error(Errno::EIO),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            reply.error(Errno::EPERM);
            return;
        }
        let mut st = self.st();
        let body = Body::File { cur: Data::default(), dur: Data::default(), dirty: BTreeSet::new(), size_dirty: false };
        let ino = st.add_entry(parent.0, name, body, (mode & !umask & 0o7777) as u16, req);
        Self::reply_entry(&st, ino, reply);
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let mut st = self.st();
        let body = Body::Dir { cur: BTreeMap::new(), dur: BTreeMap::new(), parent: parent.0 };
        let ino = st.add_entry(parent.0, name, body, (mode & !umask & 0o7777) as u16, req);
        if ino.is_ok() {
            if let Some(n) = st.nodes.get_mut(&parent.0) {
                n.nlink += 1;
            }
        }
        Self::reply_entry(&st, ino, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.st().remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.st();
        match st.remove(parent.0, name, true) {
            Ok(()) => {
                if let Some(n) = st.nodes.get_mut(&parent.0) {
                    n.nlink = n.nlink.saturating_sub(1);
                }
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let mut st = self.st();
        let ino = st.add_entry(parent.0, link_name, Body::Symlink(target.to_owned()), 0o777, req);
        Self::reply_entry(&st, ino, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.st();
        let result = (|| {
            st.live()?;
            if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
                return Err(Errno::EINVAL);
            }
            let ino = st.lookup(parent.0, name)?;
            st.dir(newparent.0)?;
            let moving_dir = matches!(st.nodes[&ino].body, Body::Dir { .. });
            if let Ok(old) = st.lookup(newparent.0, newname) {
                if old == ino {
                    return Ok(());
                }
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                match &st.nodes[&old].body {
                    Body::Dir { cur, .. } => {
                        if !moving_dir {
                            return Err(Errno::EISDIR);
                        }
                        if !cur.is_empty() {
                            return Err(Errno::ENOTEMPTY);
                        }
                    }
                    _ if moving_dir => return Err(Errno::ENOTDIR),
                    _ => {}
                }
                st.drop_link(old);
            }
            st.dir_mut(parent.0)?.remove(name);
            st.dir_mut(newparent.0)?.insert(newname.to_owned(), ino);
            if moving_dir {
                if let Some(Node { body: Body::Dir { parent: p, .. }, .. }) = st.nodes.get_mut(&ino) {
                    *p = newparent.0;
                }
            }
            st.pending.push(DirOp::Rename {
                from: parent.0,
                from_name: name.to_owned(),
                to: newparent.0,
                to_name: newname.to_owned(),
                ino,
            });
            st.touch(parent.0);
            st.touch(newparent.0);
            st.count(Op::Rename);
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let mut st = self.st();
        let result = (|| {
            st.live()?;
            if !matches!(st.nodes.get(&ino.0).map(|n| &n.body), Some(Body::File { .. })) {
                return Err(Errno::EPERM);
            }
            if st.dir(newparent.0)?.contains_key(newname) {
                return Err(Errno::EEXIST);
            }
            st.dir_mut(newparent.0)?.insert(newname.to_owned(), ino.0);
            if let Some(n) = st.nodes.get_mut(&ino.0) {
                n.nlink += 1;
            }
            st.pending.push(DirOp::Set { dir: newparent.0, name: newname.to_owned(), ino: Some(ino.0) });
            st.touch(newparent.0);
            st.count(Op::Link);
            Ok(ino.0)
        })();
        Self::reply_entry(&st, result, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let st = self.st();
        match st.live().and_then(|()| st.nodes.get(&ino.0).map(|_| ()).ok_or(Errno::ENOENT)) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.st();
        if st.frozen {
            reply.error(Errno::EIO);
            return;
        }
        match st.nodes.get(&ino.0).map(|n| &n.body) {
            Some(Body::File { cur, .. }) => reply.data(&cur.read(offset, u64::from(size))),
            Some(_) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.st().write(ino.0, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: fuser::LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.st().fsync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.st();
        let listing = (|| {
            st.live()?;
            let Some(Node { body: Body::Dir { cur, parent, .. }, .. }) = st.nodes.get(&ino.0) else {
                return Err(Errno::ENOTDIR);
            };
            let mut list =
                vec![(ino.0, FileType::Directory, OsString::from(".")), (*parent, FileType::Directory, "..".into())];
            for (name, &child) in cur {
                let kind = st.nodes.get(&child).map_or(FileType::RegularFile, |n| kind_of(&n.body));
                list.push((child, kind, name.clone()));
            }
            Ok(list)
        })();
        match listing {
            Ok(list) => {
                let fh = st.next_fh;
                st.next_fh += 1;
                st.dir_handles.insert(fh, list);
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let st = self.st();
        let Some(list) = st.dir_handles.get(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        for (i, (ino, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.st().dir_handles.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.st().fsync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // 64 GiB, nearly all free.
        let blocks = 64 * 1024 * 1024 * 1024 / PAGE;
        reply.statfs(blocks, blocks - 1, blocks - 1, 1 << 24, (1 << 24) - 1, PAGE as u32, 255, PAGE as u32);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.st();
        let body = Body::File { cur: Data::default(), dur: Data::default(), dirty: BTreeSet::new(), size_dirty: false };
        match st
            .add_entry(parent.0, name, body, (mode & !umask & 0o7777) as u16, req)
            .and_then(|ino| st.attr(ino).ok_or(Errno::ENOENT))
        {
            Ok(attr) => reply.created(&TTL, &attr, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut st = self.st();
        let result = (|| {
            st.live()?;
            let size = match st.nodes.get(&ino.0).map(|n| &n.body) {
                Some(Body::File { cur, .. }) => cur.size,
                _ => return Err(Errno::EBADF),
            };
            match mode {
                0 if offset + length > size => st.set_size(ino.0, offset + length),
                0 | libc::FALLOC_FL_KEEP_SIZE => Ok(()),
                _ => Err(Errno::EOPNOTSUPP),
            }
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

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
