//! The FUSE side: each kernel request answered from the model in [`crate::state`].

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use fuser::{
    Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

use super::state::*;
use super::{Op, PAGE, TTL};

pub(crate) struct Fs {
    pub(crate) state: Arc<Mutex<State>>,
}

pub(crate) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Fs {
    pub(crate) fn st(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub(crate) fn reply_entry(st: &State, ino: Result<u64, Errno>, reply: ReplyEntry) {
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
