//! Byte layout of segment files, records and index files (see the module doc of `log`).

use std::path::Path;

use super::LogError;

/// "DPLG" little-endian; first 4 bytes of every `.log` file.
pub(crate) const FILE_MAGIC: u32 = u32::from_le_bytes(*b"DPLG");
/// "DPIX" little-endian; first 4 bytes of every `.idx` file.
pub(crate) const INDEX_MAGIC: u32 = u32::from_le_bytes(*b"DPIX");
pub(crate) const FORMAT_VERSION: u32 = 1;
/// File header: magic u32, version u32, base seq u64.
pub(crate) const FILE_HEADER_LEN: u64 = 16;
/// Nonzero so that zero-filled blocks (a common torn-write artefact) never parse as a record.
pub(crate) const RECORD_MAGIC: u32 = 0xD370_A55E;
/// Record header: magic u32, payload len u32, seq u64, crc32c u32.
pub(crate) const RECORD_HEADER_LEN: usize = 20;
/// Index header: magic u32, version u32, base seq u64, record count u64, covered `.log` length u64.
const INDEX_HEADER_LEN: usize = 32;

pub(crate) fn log_file_name(base: u64) -> String {
    format!("{base:020}.log")
}

pub(crate) fn index_file_name(base: u64) -> String {
    format!("{base:020}.idx")
}

pub(crate) fn index_tmp_name(base: u64) -> String {
    format!("{base:020}.idx.tmp")
}

/// Parses `<20 digits>.<ext>`; anything else in the directory is not ours to interpret.
pub(crate) fn parse_file_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub(crate) fn encode_file_header(base: u64) -> [u8; FILE_HEADER_LEN as usize] {
    let mut h = [0u8; FILE_HEADER_LEN as usize];
    h[0..4].copy_from_slice(&FILE_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&base.to_le_bytes());
    h
}

/// Returns a description of what is wrong, or None if the header is valid for `base`.
pub(crate) fn check_file_header(h: &[u8], base: u64) -> Option<String> {
    if h.len() < FILE_HEADER_LEN as usize {
        return Some("short file header".into());
    }
    let magic = le_u32(&h[0..4]);
    let version = le_u32(&h[4..8]);
    let hbase = le_u64(&h[8..16]);
    if magic != FILE_MAGIC {
        Some(format!("bad file magic {magic:#010x}"))
    } else if version != FORMAT_VERSION {
        Some(format!("unsupported format version {version}"))
    } else if hbase != base {
        Some(format!("file header base seq {hbase} does not match file name base {base}"))
    } else {
        None
    }
}

pub(crate) fn record_crc(seq: u64, len: u32, payload: &[u8]) -> u32 {
    let mut pre = [0u8; 12];
    pre[0..8].copy_from_slice(&seq.to_le_bytes());
    pre[8..12].copy_from_slice(&len.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&pre), payload)
}

fn record_header(seq: u64, len: u32, crc: u32) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Replaces the contents of `buf` with one encoded record, reusing its allocation.
#[cfg(test)]
pub(crate) fn encode_record(buf: &mut Vec<u8>, seq: u64, len: u32, payload: &[u8]) {
    buf.clear();
    buf.reserve(RECORD_HEADER_LEN + payload.len());
    buf.extend_from_slice(&record_header(seq, len, record_crc(seq, len, payload)));
    buf.extend_from_slice(payload);
}

/// Appends one encoded record to `buf`, its payload written by `write_payload` straight after
/// the header (no copy). When the payload is longer than `max_payload`, leaves `buf` as it was
/// and answers the payload's length.
pub(crate) fn append_record(
    buf: &mut Vec<u8>,
    seq: u64,
    max_payload: usize,
    write_payload: impl FnOnce(&mut Vec<u8>),
) -> Result<(), usize> {
    let start = buf.len();
    buf.extend_from_slice(&[0; RECORD_HEADER_LEN]);
    write_payload(buf);
    let payload = &buf[start + RECORD_HEADER_LEN..];
    if payload.len() > max_payload {
        let len = payload.len();
        buf.truncate(start);
        return Err(len);
    }
    let len = payload.len() as u32;
    let header = record_header(seq, len, record_crc(seq, len, payload));
    buf[start..start + RECORD_HEADER_LEN].copy_from_slice(&header);
    Ok(())
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordHeader {
    pub len: u32,
    pub seq: u64,
    pub crc: u32,
}

/// None if the magic does not match. `h` must hold at least `RECORD_HEADER_LEN` bytes.
pub(crate) fn parse_record_header(h: &[u8]) -> Option<RecordHeader> {
    if h.len() < RECORD_HEADER_LEN || le_u32(&h[0..4]) != RECORD_MAGIC {
        return None;
    }
    Some(RecordHeader { len: le_u32(&h[4..8]), seq: le_u64(&h[8..16]), crc: le_u32(&h[16..20]) })
}

/// Checks one whole encoded record (header + payload) that the in-memory index says holds
/// `seq`; on success the payload is `rec[RECORD_HEADER_LEN..]`.
pub(crate) fn verify_record(path: &Path, position: u64, seq: u64, rec: &[u8]) -> Result<(), LogError> {
    let corrupt = |detail: String| LogError::Corrupt { path: path.to_path_buf(), position, detail };
    let Some(h) = parse_record_header(rec) else {
        return Err(corrupt("bad record magic".into()));
    };
    if h.len as usize != rec.len() - RECORD_HEADER_LEN {
        return Err(corrupt(format!(
            "record length {} does not match index ({})",
            h.len,
            rec.len() - RECORD_HEADER_LEN
        )));
    }
    if h.seq != seq {
        return Err(corrupt(format!("record seq {} where {seq} was expected", h.seq)));
    }
    let payload = &rec[RECORD_HEADER_LEN..];
    if record_crc(h.seq, h.len, payload) != h.crc {
        return Err(corrupt("crc mismatch".into()));
    }
    Ok(())
}

pub(crate) fn encode_index(base: u64, log_len: u64, positions: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_HEADER_LEN + positions.len() * 4 + 4);
    out.extend_from_slice(&INDEX_MAGIC.to_le_bytes());
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&(positions.len() as u64).to_le_bytes());
    out.extend_from_slice(&log_len.to_le_bytes());
    for p in positions {
        out.extend_from_slice(&p.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes an index file and checks it against the `.log` it claims to describe. Any
/// mismatch yields None: the caller falls back to scanning, so a stale or damaged index can
/// cost time but never data.
pub(crate) fn decode_index(data: &[u8], base: u64, log_len: u64) -> Option<Vec<u32>> {
    if data.len() < INDEX_HEADER_LEN + 4 {
        return None;
    }
    let (body, crc) = data.split_at(data.len() - 4);
    if crc32c::crc32c(body) != le_u32(crc) {
        return None;
    }
    if le_u32(&body[0..4]) != INDEX_MAGIC
        || le_u32(&body[4..8]) != FORMAT_VERSION
        || le_u64(&body[8..16]) != base
        || le_u64(&body[24..32]) != log_len
    {
        return None;
    }
    let count = usize::try_from(le_u64(&body[16..24])).ok()?;
    let raw = &body[INDEX_HEADER_LEN..];
    if count == 0 || raw.len() != count.checked_mul(4)? {
        return None;
    }
    let positions: Vec<u32> = raw.chunks_exact(4).map(le_u32).collect();
    let ordered = positions.windows(2).all(|w| u64::from(w[1]) >= u64::from(w[0]) + RECORD_HEADER_LEN as u64);
    let last_fits = positions.last().is_some_and(|&p| u64::from(p) + RECORD_HEADER_LEN as u64 <= log_len);
    if positions[0] as u64 != FILE_HEADER_LEN || !ordered || !last_fits {
        return None;
    }
    Some(positions)
}

pub(crate) fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

pub(crate) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}
