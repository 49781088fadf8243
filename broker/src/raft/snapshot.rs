//! Snapshots without copying message data.
//!
//! A snapshot is a directory `snapshots/<id>/` holding `manifest` (Raft meta, file list),
//! `state` (the serialized [`crate::station::BrokerState`], which excludes payloads) and a hard
//! link to every station log segment, each used only up to the length recorded in the manifest.
//! Segments are append-only, so later appends never change the recorded prefix, and a hard link
//! keeps a segment that retention deletes meanwhile.
//!
//! To send a snapshot, [`SnapshotStream::Archive`] presents the directory as one seekable
//! archive (`magic | header_len u64 | header | state | segment bytes...`) read lazily from disk.
//! A receiver writes that stream to a file ([`SnapshotStream::Incoming`]) and unpacks it into a
//! new snapshot directory. Neither side holds message data in memory.

use std::fs::{self, File};
use std::io::{self, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, AsyncWrite, ReadBuf};

use super::durable_file::{self, fsync_dir, FileError};
use super::SnapshotMeta;

const MAGIC: &[u8; 8] = b"DEPOTSN1";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotFile {
    pub station_id: u64,
    pub name: String,
    pub len: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub meta: SnapshotMeta,
    pub state_len: u64,
    /// crc32c of the state bytes.
    pub state_crc: u32,
    pub files: Vec<SnapshotFile>,
}

pub fn manifest_path(dir: &Path) -> PathBuf {
    dir.join("manifest")
}

pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("state")
}

/// Where a snapshot keeps a station segment: `<dir>/<station id>-<segment name>`. All in one
/// directory, so one directory fsync makes every link durable however many stations there are.
pub fn file_path(dir: &Path, f: &SnapshotFile) -> PathBuf {
    dir.join(format!("{:020}-{}", f.station_id, f.name))
}

/// Where a snapshot on disk holds a segment: [`file_path`], or `<dir>/<station id>/<segment
/// name>` in a snapshot written by an earlier version (one directory per station).
pub fn existing_file_path(dir: &Path, f: &SnapshotFile) -> PathBuf {
    let path = file_path(dir, f);
    if path.exists() {
        return path;
    }
    let per_station = dir.join(format!("{:020}", f.station_id)).join(&f.name);
    if per_station.exists() {
        per_station
    } else {
        path
    }
}

pub fn read_manifest(dir: &Path) -> Result<Manifest, FileError> {
    let path = manifest_path(dir);
    durable_file::read(&path)?.ok_or_else(|| FileError::Corrupt { path, detail: "missing".into() })
}

/// The meta of the state machine's current snapshot in `sm_dir` (the directory the state
/// machine opens), read without modifying anything; `None` before the first snapshot.
pub fn read_current_meta(sm_dir: &Path) -> Result<Option<SnapshotMeta>, FileError> {
    let Some(name) = durable_file::read::<String>(&sm_dir.join("current"))? else { return Ok(None) };
    Ok(Some(read_manifest(&sm_dir.join("snapshots").join(name))?.meta))
}

/// The data of a snapshot: either a local snapshot directory presented as an archive, or a file
/// being received from a leader.
pub enum SnapshotStream {
    Archive(ArchiveReader),
    Incoming { file: tokio::fs::File, path: PathBuf },
}

impl std::fmt::Debug for SnapshotStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotStream::Archive(a) => write!(f, "Archive({})", a.dir.display()),
            SnapshotStream::Incoming { path, .. } => write!(f, "Incoming({})", path.display()),
        }
    }
}

enum Part {
    Memory(Vec<u8>),
    File { path: PathBuf, len: u64 },
}

impl Part {
    fn len(&self) -> u64 {
        match self {
            Part::Memory(b) => b.len() as u64,
            Part::File { len, .. } => *len,
        }
    }
}

/// Reads a snapshot directory as one archive, one `pread` at a time, with at most one of its
/// files open (a snapshot of many stations has many segment files).
pub struct ArchiveReader {
    dir: PathBuf,
    parts: Vec<Part>,
    /// Offset of each part in the archive.
    starts: Vec<u64>,
    total: u64,
    pos: u64,
    open: Option<(usize, File)>,
}

impl ArchiveReader {
    pub fn open(dir: &Path) -> Result<ArchiveReader, FileError> {
        let manifest = read_manifest(dir)?;
        let header = bincode::serialize(&manifest)
            .map_err(|e| FileError::Corrupt { path: manifest_path(dir), detail: e.to_string() })?;
        let mut head = Vec::with_capacity(16 + header.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(header.len() as u64).to_le_bytes());
        head.extend_from_slice(&header);
        let mut parts = vec![Part::Memory(head), Part::File { path: state_path(dir), len: manifest.state_len }];
        for f in &manifest.files {
            parts.push(Part::File { path: existing_file_path(dir, f), len: f.len });
        }
        let mut starts = Vec::with_capacity(parts.len());
        let mut total = 0;
        for part in &parts {
            starts.push(total);
            total += part.len();
        }
        Ok(ArchiveReader { dir: dir.to_path_buf(), parts, starts, total, pos: 0, open: None })
    }

    fn read_at(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.total {
            return Ok(0);
        }
        // The last part starting at or before `pos` that is not empty holds it.
        let mut i = self.starts.partition_point(|&s| s <= self.pos) - 1;
        while self.parts[i].len() == 0 || self.pos >= self.starts[i] + self.parts[i].len() {
            i += 1;
        }
        let within = self.pos - self.starts[i];
        let n = (buf.len() as u64).min(self.parts[i].len() - within) as usize;
        match &self.parts[i] {
            Part::Memory(bytes) => buf[..n].copy_from_slice(&bytes[within as usize..within as usize + n]),
            Part::File { path, .. } => {
                if self.open.as_ref().is_none_or(|(at, _)| *at != i) {
                    self.open = None;
                    self.open = Some((i, File::open(path)?));
                }
                if let Some((_, f)) = &self.open {
                    f.read_exact_at(&mut buf[..n], within)?;
                }
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl AsyncRead for SnapshotStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotStream::Archive(a) => {
                let n = a.read_at(buf.initialize_unfilled())?;
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            SnapshotStream::Incoming { file, .. } => Pin::new(file).poll_read(cx, buf),
        }
    }
}

impl AsyncSeek for SnapshotStream {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        match self.get_mut() {
            SnapshotStream::Archive(a) => {
                let target = match position {
                    SeekFrom::Start(p) => Some(p),
                    SeekFrom::End(d) => a.total.checked_add_signed(d),
                    SeekFrom::Current(d) => a.pos.checked_add_signed(d),
                };
                a.pos = target.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
                Ok(())
            }
            SnapshotStream::Incoming { file, .. } => Pin::new(file).start_seek(position),
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match self.get_mut() {
            SnapshotStream::Archive(a) => Poll::Ready(Ok(a.pos)),
            SnapshotStream::Incoming { file, .. } => Pin::new(file).poll_complete(cx),
        }
    }
}

fn read_only() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "a local snapshot archive is read-only")
}

impl AsyncWrite for SnapshotStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SnapshotStream::Archive(_) => Poll::Ready(Err(read_only())),
            SnapshotStream::Incoming { file, .. } => Pin::new(file).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotStream::Archive(_) => Poll::Ready(Ok(())),
            SnapshotStream::Incoming { file, .. } => Pin::new(file).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotStream::Archive(_) => Poll::Ready(Ok(())),
            SnapshotStream::Incoming { file, .. } => Pin::new(file).poll_shutdown(cx),
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError::Io { path: path.to_path_buf(), source }
}

/// Writes a snapshot directory at `dir` (which must not exist) from local parts: the state bytes
/// and hard links to segment files. Everything is fsynced before this returns.
pub fn write_local(
    dir: &Path,
    meta: SnapshotMeta,
    state: &[u8],
    segments: &[(SnapshotFile, PathBuf)],
) -> Result<(), FileError> {
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_at(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io_at(&tmp))?;
    durable_file::write_bytes_atomic(&state_path(&tmp), state)?;
    let mut files = Vec::with_capacity(segments.len());
    for (f, source) in segments {
        let target = file_path(&tmp, f);
        fs::hard_link(source, &target).map_err(io_at(&target))?;
        files.push(f.clone());
    }
    fsync_dir(&tmp)?;
    let manifest = Manifest { meta, state_len: state.len() as u64, state_crc: crc32c::crc32c(state), files };
    durable_file::write_atomic(&manifest_path(&tmp), &manifest)?;
    fs::rename(&tmp, dir).map_err(io_at(dir))?;
    fsync_dir(dir.parent().unwrap_or(Path::new(".")))
}

/// Unpacks an archive stream into a new snapshot directory at `dir`, fsynced.
pub async fn unpack<R: AsyncRead + AsyncSeek + Unpin>(stream: &mut R, dir: &Path) -> Result<Manifest, FileError> {
    use tokio::io::AsyncSeekExt;
    let corrupt = |detail: String| FileError::Corrupt { path: dir.to_path_buf(), detail };
    stream.seek(SeekFrom::Start(0)).await.map_err(io_at(dir))?;
    let mut magic = [0u8; 8];
    stream.read_exact(&mut magic).await.map_err(io_at(dir))?;
    if &magic != MAGIC {
        return Err(corrupt("not a Depot snapshot archive".into()));
    }
    let header_len = stream.read_u64_le().await.map_err(io_at(dir))?;
    if header_len > 1 << 30 {
        return Err(corrupt(format!("implausible header length {header_len}")));
    }
    let mut header = vec![0u8; header_len as usize];
    stream.read_exact(&mut header).await.map_err(io_at(dir))?;
    let manifest: Manifest = bincode::deserialize(&header).map_err(|e| corrupt(e.to_string()))?;

    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_at(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io_at(&tmp))?;
    copy_exact(stream, &state_path(&tmp), manifest.state_len).await?;
    for f in &manifest.files {
        // The names come from another node: never a path out of the snapshot directory.
        let plain = !f.name.is_empty() && f.name != ".." && f.name != "." && !f.name.contains(['/', '\0']);
        if !plain {
            return Err(corrupt(format!("segment name {:?} is not a plain file name", f.name)));
        }
        copy_exact(stream, &file_path(&tmp, f), f.len).await?;
    }
    durable_file::write_atomic(&manifest_path(&tmp), &manifest)?;
    fsync_dir(&tmp)?;
    fs::rename(&tmp, dir).map_err(io_at(dir))?;
    fsync_dir(dir.parent().unwrap_or(Path::new(".")))?;
    Ok(manifest)
}

async fn copy_exact<R: AsyncRead + Unpin>(stream: &mut R, path: &Path, len: u64) -> Result<(), FileError> {
    let mut out = tokio::fs::File::create(path).await.map_err(io_at(path))?;
    let copied = tokio::io::copy(&mut stream.take(len), &mut out).await.map_err(io_at(path))?;
    if copied != len {
        return Err(FileError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("snapshot archive ended after {copied} of {len} bytes"),
        });
    }
    out.sync_all().await.map_err(io_at(path))
}
