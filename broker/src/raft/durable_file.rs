//! Small durable files replaced atomically: write a temp file, fsync it, rename it over the old
//! one, fsync the directory. A trailing crc32c detects corruption; a corrupt file is an error,
//! never silently treated as absent.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("corrupt file {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError::Io { path: path.to_path_buf(), source }
}

pub fn fsync_dir(dir: &Path) -> Result<(), FileError> {
    crate::dirs::fsync_dir(dir).map_err(io_err(dir))
}

pub fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), FileError> {
    let mut bytes = bincode::serialize(value)
        .map_err(|e| FileError::Corrupt { path: path.to_path_buf(), detail: e.to_string() })?;
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    write_bytes_atomic(path, &bytes)
}

pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}

pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, FileError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let corrupt = |detail: String| FileError::Corrupt { path: path.to_path_buf(), detail };
    if bytes.len() < 4 {
        return Err(corrupt("shorter than its checksum".into()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let expected = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != expected {
        return Err(corrupt("checksum mismatch".into()));
    }
    bincode::deserialize(body).map(Some).map_err(|e| corrupt(e.to_string()))
}
