//! The layout of a tiered object (docs/tiering.md): self-describing, so a reader outside Depot
//! can decode it.
//!
//! ```text
//! "DEPOTSEG"                       8 bytes
//! header length, u32 little-endian
//! header: JSON {format, cluster_id, station, station_id, first_offset, last_offset, records,
//!               segment_bytes, segment_crc32c}
//! the segment file as the station log wrote it: "DPLG" file header, then one record per
//! message (magic, length, offset, CRC32C, the encoded message)
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The first bytes of every tiered object.
pub const MAGIC: &[u8; 8] = b"DEPOTSEG";
/// The header's `format`.
pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    pub cluster_id: String,
    pub station: String,
    pub station_id: u64,
    pub first_offset: u64,
    pub last_offset: u64,
    pub records: u64,
}

#[derive(Serialize, Deserialize)]
struct Written<'a> {
    #[serde(flatten)]
    header: std::borrow::Cow<'a, Header>,
    segment_bytes: u64,
    segment_crc32c: u32,
}

/// The object's name under the bucket's prefix: unique per cluster, station incarnation and
/// range, so an upload repeated (after a crash or a leader change) writes the same object.
pub fn name(cluster_id: &str, station_id: u64, first: u64, last: u64) -> String {
    format!("{}{station_id}/{first:020}-{last:020}.dseg", cluster_prefix(cluster_id))
}

/// Where every object of this cluster's stations is, under the bucket's prefix.
pub fn cluster_prefix(cluster_id: &str) -> String {
    format!("{cluster_id}/stations/")
}

/// The object for the segment file at `path`.
pub fn build(header: &Header, path: &Path) -> std::io::Result<Vec<u8>> {
    let segment = std::fs::read(path)?;
    let written = Written {
        header: std::borrow::Cow::Borrowed(header),
        segment_bytes: segment.len() as u64,
        segment_crc32c: crc32c::crc32c(&segment),
    };
    let json = serde_json::to_vec(&written).map_err(std::io::Error::other)?;
    let json_len = u32::try_from(json.len()).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + json.len() + segment.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&json_len.to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&segment);
    Ok(out)
}

/// Reads an object back: its header and the segment file's bytes, checked against the CRC32C
/// the header records.
pub fn parse(object: &[u8]) -> Result<(Header, &[u8]), String> {
    let rest = object.strip_prefix(MAGIC.as_slice()).ok_or("not a Depot tiered segment (magic)")?;
    let (len, rest) = rest.split_at_checked(4).ok_or("truncated header length")?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let (json, segment) = rest.split_at_checked(len).ok_or("truncated header")?;
    let written: Written<'static> = serde_json::from_slice(json).map_err(|e| format!("header: {e}"))?;
    if written.header.format != FORMAT {
        return Err(format!("unknown format {}", written.header.format));
    }
    if segment.len() as u64 != written.segment_bytes || crc32c::crc32c(segment) != written.segment_crc32c {
        return Err("the segment does not match the header's length and CRC32C".to_owned());
    }
    Ok((written.header.into_owned(), segment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_reads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000007.log");
        std::fs::write(&path, b"DPLG-segment-bytes").expect("write");
        let header = Header {
            format: FORMAT,
            cluster_id: "c1".into(),
            station: "orders".into(),
            station_id: 3,
            first_offset: 7,
            last_offset: 9,
            records: 3,
        };
        let object = build(&header, &path).expect("build");
        assert_eq!(parse(&object), Ok((header, b"DPLG-segment-bytes".as_slice())));
        let mut damaged = object.clone();
        *damaged.last_mut().expect("bytes") ^= 1;
        assert!(parse(&damaged).is_err());
        assert!(parse(&object[..object.len() - 1]).is_err());
        assert!(parse(b"DEPOTSEG\xff\xff\xff\xff").is_err());
        assert_eq!(name("c1", 3, 7, 9), "c1/stations/3/00000000000000000007-00000000000000000009.dseg");
    }
}
