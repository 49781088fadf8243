//! The model: what the file system shows (the page cache) and what is durable, per inode.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{Errno, FileAttr, FileType, INodeNo, Request};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Counts, Mode, Op, PAGE, ROOT};

pub(crate) type Page = Arc<Vec<u8>>;

#[derive(Clone, Default)]
pub(crate) struct Data {
    pub(crate) size: u64,
    pub(crate) pages: BTreeMap<u64, Page>,
}

impl Data {
    pub(crate) fn pages_for(size: u64) -> u64 {
        size.div_ceil(PAGE)
    }

    pub(crate) fn read(&self, offset: u64, len: u64) -> Vec<u8> {
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

pub(crate) enum Body {
    File { cur: Data, dur: Data, dirty: BTreeSet<u64>, size_dirty: bool },
    Dir { cur: BTreeMap<OsString, u64>, dur: BTreeMap<OsString, u64>, parent: u64 },
    Symlink(PathBuf),
}

pub(crate) struct Node {
    pub(crate) body: Body,
    pub(crate) perm: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) nlink: u32,
    pub(crate) mtime: SystemTime,
}

/// A directory operation not yet made durable by a directory fsync.
#[derive(Clone)]
pub(crate) enum DirOp {
    /// `name` in `dir` now names `ino` (`None`: is removed).
    Set { dir: u64, name: OsString, ino: Option<u64> },
    /// A rename: removes the source and sets the target in one step.
    Rename { from: u64, from_name: OsString, to: u64, to_name: OsString, ino: u64 },
}

pub(crate) struct State {
    pub(crate) nodes: HashMap<u64, Node>,
    pub(crate) next_ino: u64,
    pub(crate) pending: Vec<DirOp>,
    pub(crate) counts: Counts,
    pub(crate) mode: Mode,
    /// Paths (relative to the mount) whose files' pages a torn cut never tears.
    pub(crate) untorn: Vec<PathBuf>,
    pub(crate) frozen: bool,
    pub(crate) crash_at: Option<(Op, u64)>,
    pub(crate) dir_handles: HashMap<u64, Vec<(u64, FileType, OsString)>>,
    pub(crate) next_fh: u64,
}

pub(crate) fn kind_of(body: &Body) -> FileType {
    match body {
        Body::File { .. } => FileType::RegularFile,
        Body::Dir { .. } => FileType::Directory,
        Body::Symlink(_) => FileType::Symlink,
    }
}

impl State {
    pub(crate) fn empty() -> State {
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
    pub(crate) fn load(backing: &Path) -> io::Result<State> {
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

    pub(crate) fn load_dir(&mut self, path: &Path, dir: u64, links: &mut HashMap<(u64, u64), u64>) -> io::Result<()> {
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

    pub(crate) fn attr(&self, ino: u64) -> Option<FileAttr> {
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

    pub(crate) fn dir(&self, ino: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get(&ino).map(|n| &n.body) {
            Some(Body::Dir { cur, .. }) => Ok(cur),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    pub(crate) fn dir_mut(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.body) {
            Some(Body::Dir { cur, .. }) => Ok(cur),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    pub(crate) fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    /// Counts an operation and freezes when it is the crash point.
    pub(crate) fn count(&mut self, op: Op) {
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

    pub(crate) fn live(&self) -> Result<(), Errno> {
        if self.frozen {
            Err(Errno::EIO)
        } else {
            Ok(())
        }
    }

    pub(crate) fn new_node(&mut self, body: Body, perm: u16, req: &Request) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if matches!(body, Body::Dir { .. }) { 2 } else { 1 };
        self.nodes.insert(ino, Node { body, perm, uid: req.uid(), gid: req.gid(), nlink, mtime: SystemTime::now() });
        ino
    }

    pub(crate) fn add_entry(
        &mut self,
        parent: u64,
        name: &OsStr,
        body: Body,
        perm: u16,
        req: &Request,
    ) -> Result<u64, Errno> {
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

    pub(crate) fn touch(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.mtime = SystemTime::now();
        }
    }

    pub(crate) fn drop_link(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink = n.nlink.saturating_sub(1);
        }
    }

    pub(crate) fn remove(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
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

    pub(crate) fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<(), Errno> {
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

    pub(crate) fn set_size(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
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
    pub(crate) fn fsync(&mut self, ino: u64) -> Result<(), Errno> {
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
    pub(crate) fn freeze(&mut self) {
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
    pub(crate) fn untorn_files(&self) -> BTreeSet<u64> {
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

    pub(crate) fn set_durable(&mut self, dir: u64, name: OsString, ino: Option<u64>) {
        if let Some(Node { body: Body::Dir { dur, .. }, .. }) = self.nodes.get_mut(&dir) {
            match ino {
                Some(ino) => dur.insert(name, ino),
                None => dur.remove(&name),
            };
        }
    }

    /// Writes the durable tree into `target` (an empty directory).
    pub(crate) fn materialize(&self, target: &Path) -> io::Result<()> {
        let mut written: HashMap<u64, PathBuf> = HashMap::new();
        let mut seen_dirs: BTreeSet<u64> = BTreeSet::new();
        self.materialize_dir(ROOT, target, &mut written, &mut seen_dirs)
    }

    pub(crate) fn materialize_dir(
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
    pub(crate) fn sync_all(&mut self) {
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
