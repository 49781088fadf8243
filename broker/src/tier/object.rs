//! The layout of a tiered object (docs/tiering.md): self-describing, so a reader outside Depot
//! can decode it, and indexed, so a reader can fetch one record with a ranged GET.
//!
//! ```text
//! "DEPOTSEG"                       8 bytes
//! header length n, u32 little-endian
//! header: n bytes of JSON {format: 2, cluster_id, station, station_id, first_offset,
//!         last_offset, records, index_bytes, index_crc32c, segment_bytes, segment_crc32c}
//! index: one u32 little-endian per record, its start within the segment file (4 * records
//!        bytes, CRC32C index_crc32c)
//! the segment file as the station log wrote it: "DPLG" file header, then one record per
//! message (magic, length, offset, CRC32C, the encoded message)
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::log::format::{
    check_file_header, le_u32, parse_record_header, record_crc, FILE_HEADER_LEN, RECORD_HEADER_LEN,
};

/// The first bytes of every tiered object.
pub const MAGIC: &[u8; 8] = b"DEPOTSEG";
/// The header's `format`.
pub const FORMAT: u32 = 2;
/// Bytes before the JSON header: the magic and the header's length.
pub const PREFIX_LEN: u64 = MAGIC.len() as u64 + 4;

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

/// The JSON header as stored: [`Header`] plus the lengths and CRC32Cs of the index and the
/// segment file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    #[serde(flatten)]
    pub header: Header,
    pub index_bytes: u64,
    pub index_crc32c: u32,
    pub segment_bytes: u64,
    pub segment_crc32c: u32,
}

impl Written {
    /// Checks what the header says against itself: the format, the record count against the
    /// offsets and the index's length. The returned error describes the problem.
    pub fn check(&self) -> Result<(), String> {
        let h = &self.header;
        if h.format != FORMAT {
            return Err(format!("unknown format {}", h.format));
        }
        if h.last_offset.checked_sub(h.first_offset).and_then(|d| d.checked_add(1)) != Some(h.records) {
            return Err(format!("{} records do not span offsets {}..={}", h.records, h.first_offset, h.last_offset));
        }
        if Some(self.index_bytes) != h.records.checked_mul(4) {
            return Err(format!("an index of {} bytes for {} records", self.index_bytes, h.records));
        }
        if self.segment_bytes > u64::from(u32::MAX) {
            return Err(format!("a segment of {} bytes", self.segment_bytes));
        }
        Ok(())
    }
}

/// Where the header's JSON ends (and the index begins), from the object's first
/// [`PREFIX_LEN`] bytes; an error if they are not the magic and a length.
pub fn header_end(prefix: &[u8]) -> Result<u64, String> {
    let rest = prefix.strip_prefix(MAGIC.as_slice()).ok_or("not a Depot tiered segment (magic)")?;
    let len = rest.get(..4).ok_or("truncated header length")?;
    Ok(PREFIX_LEN + u64::from(le_u32(len)))
}

/// Decodes the JSON header (`object[PREFIX_LEN..header_end]`) and checks it.
pub fn decode_header(json: &[u8]) -> Result<Written, String> {
    let written: Written = serde_json::from_slice(json).map_err(|e| format!("header: {e}"))?;
    written.check()?;
    Ok(written)
}

/// Decodes the index (`index_bytes` bytes after the header), checks its CRC32C and that its
/// positions are those of records within a segment file of `segment_bytes`.
pub fn decode_index(written: &Written, bytes: &[u8]) -> Result<Vec<u32>, String> {
    if bytes.len() as u64 != written.index_bytes || crc32c::crc32c(bytes) != written.index_crc32c {
        return Err("the index does not match the header's length and CRC32C".to_owned());
    }
    let index: Vec<u32> = bytes.chunks_exact(4).map(le_u32).collect();
    let header = RECORD_HEADER_LEN as u64;
    let ordered = index.windows(2).all(|w| u64::from(w[1]) >= u64::from(w[0]) + header);
    let first_ok = index.first().is_some_and(|&p| u64::from(p) == FILE_HEADER_LEN);
    let last_fits = index.last().is_some_and(|&p| u64::from(p) + header <= written.segment_bytes);
    if !ordered || !first_ok || !last_fits {
        return Err("the index's positions are not those of records in the segment".to_owned());
    }
    Ok(index)
}

/// Where record `i` of an index is in the segment file: `start..end`.
pub fn record_span(index: &[u32], segment_bytes: u64, i: usize) -> Option<(u64, u64)> {
    let start = u64::from(*index.get(i)?);
    let end = index.get(i + 1).map_or(segment_bytes, |&p| u64::from(p));
    Some((start, end))
}

/// Checks one whole encoded record (header and payload) that should hold `offset`; on success
/// its payload is `record[RECORD_HEADER_LEN..]`.
pub fn check_record(record: &[u8], offset: u64) -> Result<(), String> {
    let h = parse_record_header(record).ok_or_else(|| format!("offset {offset}: bad record magic"))?;
    if h.len as usize != record.len() - RECORD_HEADER_LEN {
        return Err(format!("offset {offset}: record length {} where {} was expected", h.len, record.len() - 20));
    }
    if h.seq != offset {
        return Err(format!("offset {offset}: the record holds offset {}", h.seq));
    }
    if record_crc(h.seq, h.len, &record[RECORD_HEADER_LEN..]) != h.crc {
        return Err(format!("offset {offset}: CRC32C mismatch"));
    }
    Ok(())
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

/// The record positions of a whole segment file holding offsets `first..=last`: every record
/// is checked (magic, length, offset, CRC32C) and must follow the previous one, up to the end.
fn scan(segment: &[u8], first: u64, last: u64) -> Result<Vec<u32>, String> {
    if let Some(problem) = check_file_header(segment, first) {
        return Err(problem);
    }
    let mut index = Vec::new();
    let mut pos = FILE_HEADER_LEN as usize;
    let mut offset = first;
    while pos < segment.len() {
        let rest = &segment[pos..];
        let h = parse_record_header(rest).ok_or_else(|| format!("byte {pos}: no record (magic or truncated)"))?;
        let end = RECORD_HEADER_LEN + h.len as usize;
        let record = rest.get(..end).ok_or_else(|| format!("byte {pos}: a truncated record"))?;
        if offset > last {
            return Err(format!("byte {pos}: a record past offset {last}"));
        }
        check_record(record, offset).map_err(|e| format!("byte {pos}: {e}"))?;
        index.push(u32::try_from(pos).map_err(|_| format!("a record at byte {pos} (past 4 GiB)"))?);
        pos += end;
        offset += 1;
    }
    if offset != last.wrapping_add(1) || index.is_empty() {
        return Err(format!("the segment holds offsets {first}..{offset}, not {first}..={last}"));
    }
    Ok(index)
}

/// The object for the segment file at `path`, which must hold exactly the offsets
/// `header.first_offset..=header.last_offset`, each record intact (else `InvalidData`).
/// `header.records` is set from them.
///
/// The file is read once, into the tail of the buffer the object is made in: the header and
/// the index go in front of it afterwards, so 64 MiB segments are not copied a second time.
pub fn build(header: &Header, path: &Path) -> std::io::Result<bytes::Bytes> {
    use std::io::Read;
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()));
    if header.last_offset < header.first_offset {
        return Err(invalid(format!("offsets {}..={}", header.first_offset, header.last_offset)));
    }
    let mut file = std::fs::File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).map_err(std::io::Error::other)?;
    // Room in front: the prefix, the JSON header (its fields are bounded but for the names)
    // and the index (4 bytes per record, and no record is shorter than its header). Only the
    // room is zeroed; the file is read into the rest of the capacity as it is.
    let json_room = 1024 + header.station.len() + header.cluster_id.len();
    let room = PREFIX_LEN as usize + json_room + 4 * (len / RECORD_HEADER_LEN + 1);
    let mut buf = Vec::with_capacity(room + len + 1);
    buf.resize(room, 0);
    // One byte more than the file had, to notice a file that changed while it was read.
    (&mut file).take(len as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() - room != len {
        return Err(invalid(format!("the segment changed size while it was read ({len} bytes before)")));
    }
    let segment = &buf[room..];
    let index = scan(segment, header.first_offset, header.last_offset).map_err(invalid)?;
    let index: Vec<u8> = index.iter().flat_map(|p| p.to_le_bytes()).collect();
    let mut header = header.clone();
    header.format = FORMAT;
    header.records = header.last_offset - header.first_offset + 1;
    let written = Written {
        header,
        index_bytes: index.len() as u64,
        index_crc32c: crc32c::crc32c(&index),
        segment_bytes: segment.len() as u64,
        segment_crc32c: crc32c::crc32c(segment),
    };
    let json = serde_json::to_vec(&written).map_err(std::io::Error::other)?;
    let json_len = u32::try_from(json.len()).map_err(std::io::Error::other)?;
    let front = PREFIX_LEN as usize + json.len() + index.len();
    let Some(start) = room.checked_sub(front) else {
        // Names that escape to more than the room (not a name Depot accepts): a copy.
        let mut out = Vec::with_capacity(front + len);
        for part in [MAGIC.as_slice(), &json_len.to_le_bytes(), &json, &index, segment] {
            out.extend_from_slice(part);
        }
        return Ok(out.into());
    };
    let mut at = start;
    for part in [MAGIC.as_slice(), &json_len.to_le_bytes(), &json, &index] {
        buf[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    Ok(bytes::Bytes::from(buf).slice(start..))
}

/// A whole object, decoded: its header, the index (each record's start within the segment
/// file) and the segment file's bytes, checked against the CRC32Cs the header records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub header: Header,
    pub index: Vec<u32>,
    pub segment: &'a [u8],
}

/// Reads an object back: see [`Parsed`].
pub fn parse(object: &[u8]) -> Result<Parsed<'_>, String> {
    let end = usize::try_from(header_end(object)?).map_err(|_| "header length")?;
    let json = object.get(PREFIX_LEN as usize..end).ok_or("truncated header")?;
    let written = decode_header(json)?;
    let rest = &object[end..];
    let (index, segment) =
        rest.split_at_checked(usize::try_from(written.index_bytes).unwrap_or(usize::MAX)).ok_or("truncated index")?;
    let index = decode_index(&written, index)?;
    if segment.len() as u64 != written.segment_bytes || crc32c::crc32c(segment) != written.segment_crc32c {
        return Err("the segment does not match the header's length and CRC32C".to_owned());
    }
    Ok(Parsed { header: written.header, index, segment })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::format::{encode_file_header, encode_record};

    /// A segment file of offsets 7..=9 with payloads of 0, 5 and 300 bytes.
    fn segment_file(dir: &Path) -> (std::path::PathBuf, Vec<Vec<u8>>) {
        let payloads = vec![Vec::new(), b"hello".to_vec(), vec![0xab; 300]];
        let mut file = encode_file_header(7).to_vec();
        let mut buf = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            encode_record(&mut buf, 7 + i as u64, p.len() as u32, p);
            file.extend_from_slice(&buf);
        }
        let path = dir.join("00000000000000000007.log");
        std::fs::write(&path, file).expect("write");
        (path, payloads)
    }

    fn header(first: u64, last: u64) -> Header {
        Header {
            format: FORMAT,
            cluster_id: "c1".into(),
            station: "orders".into(),
            station_id: 3,
            first_offset: first,
            last_offset: last,
            records: last - first + 1,
        }
    }

    #[test]
    fn an_object_reads_back_with_its_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, payloads) = segment_file(dir.path());
        let object = build(&header(7, 9), &path).expect("build");
        let parsed = parse(&object).expect("parse");
        assert_eq!(parsed.header, header(7, 9));
        assert_eq!(parsed.segment, std::fs::read(&path).expect("read").as_slice());
        assert_eq!(parsed.index, vec![16, 36, 61]);
        for (i, p) in payloads.iter().enumerate() {
            let (start, end) = record_span(&parsed.index, parsed.segment.len() as u64, i).expect("span");
            let record = &parsed.segment[start as usize..end as usize];
            assert_eq!(check_record(record, 7 + i as u64), Ok(()));
            assert_eq!(&record[RECORD_HEADER_LEN..], p.as_slice());
        }
        assert_eq!(name("c1", 3, 7, 9), "c1/stations/3/00000000000000000007-00000000000000000009.dseg");
    }

    #[test]
    fn names_that_escape_past_the_room_in_front_still_build_the_same_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _) = segment_file(dir.path());
        // Control characters escape to six bytes each in JSON: more than the room reserved.
        let long = Header { station: "\u{1}".repeat(400), ..header(7, 9) };
        let object = build(&long, &path).expect("build");
        let parsed = parse(&object).expect("parse");
        assert_eq!(parsed.header.station, long.station);
        assert_eq!(parsed.segment, std::fs::read(&path).expect("read").as_slice());
        assert_eq!(parsed.index, vec![16, 36, 61]);
    }

    #[test]
    fn a_damaged_or_truncated_object_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _) = segment_file(dir.path());
        let object = build(&header(7, 9), &path).expect("build").to_vec();
        let segment_start = object.len() - std::fs::read(&path).expect("read").len();
        let index_start = segment_start - 12;

        let mut damaged = object.clone();
        damaged[index_start + 4] ^= 1;
        assert!(parse(&damaged).expect_err("index").contains("index"));
        let mut damaged = object.clone();
        *damaged.last_mut().expect("bytes") ^= 1;
        assert!(parse(&damaged).expect_err("segment").contains("segment"));
        let mut damaged = object.clone();
        damaged[0] = b'X';
        assert!(parse(&damaged).expect_err("magic").contains("magic"));
        for len in [0, 5, 12, 40, index_start, index_start + 6, segment_start, object.len() - 1] {
            assert!(parse(&object[..len]).is_err(), "truncated to {len}");
        }
        assert!(parse(b"DEPOTSEG\xff\xff\xff\xff").is_err());
        // A header that lies about the index's length.
        let end = header_end(&object).expect("prefix") as usize;
        let mut written = decode_header(&object[PREFIX_LEN as usize..end]).expect("header");
        written.index_bytes = 8;
        assert!(written.check().is_err());
    }

    #[test]
    fn a_damaged_segment_file_is_not_built() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _) = segment_file(dir.path());
        // Offsets that do not match the file's.
        assert!(build(&header(7, 8), &path).is_err());
        assert!(build(&header(7, 10), &path).is_err());
        assert!(build(&header(6, 8), &path).is_err());
        let good = std::fs::read(&path).expect("read");
        // A flipped payload byte, a truncated record, a trailing zero.
        let damages: [fn(&mut Vec<u8>); 3] = [
            |b: &mut Vec<u8>| *b.last_mut().expect("bytes") ^= 1,
            |b: &mut Vec<u8>| {
                b.pop();
            },
            |b: &mut Vec<u8>| b.push(0),
        ];
        for damage in damages {
            let mut bytes = good.clone();
            damage(&mut bytes);
            std::fs::write(&path, &bytes).expect("write");
            let e = build(&header(7, 9), &path).expect_err("damaged");
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        }
    }
}
