//! Sequential, CRC-verified iteration over a `SegmentedLog`.

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;

use super::format::{verify_record, RECORD_HEADER_LEN};
use super::segment::{io_err, ChunkReader};
use super::{LogError, SegmentedLog};

/// Iterator returned by [`SegmentedLog::iter_from`]. Stops after the first error.
pub struct LogIter<'a> {
    log: &'a SegmentedLog,
    seg: usize,
    seq: u64,
    reader: ChunkReader,
    /// The current segment's descriptor, taken from its handle once per segment.
    fd: Option<Arc<File>>,
    done: bool,
}

impl<'a> LogIter<'a> {
    pub(crate) fn new(log: &'a SegmentedLog, seq: u64) -> Self {
        let seq = seq.max(log.first_seq());
        let seg = log.segment_index(seq).unwrap_or(0);
        let end = log.segments.get(seg).map_or(0, |s| s.len);
        LogIter { log, seg, seq, reader: ChunkReader::new(end), fd: None, done: false }
    }

    fn next_record(&mut self) -> Result<(u64, Bytes), LogError> {
        while self.log.segments[self.seg].next_seq() <= self.seq {
            self.seg += 1;
            self.reader.reset(self.log.segments[self.seg].len);
            self.fd = None;
        }
        let seg = &self.log.segments[self.seg];
        let fd = match &self.fd {
            Some(fd) => Arc::clone(fd),
            None => {
                let fd = seg.fd()?;
                self.fd = Some(Arc::clone(&fd));
                fd
            }
        };
        let (start, end) = seg.record_span((self.seq - seg.base_seq) as usize);
        let rec =
            self.reader.slice(&fd, start, (end - start) as usize).map_err(io_err(&seg.path))?.ok_or_else(|| {
                LogError::Corrupt {
                    path: seg.path.clone(),
                    position: start,
                    detail: "record extends past the segment's end".into(),
                }
            })?;
        verify_record(&seg.path, start, self.seq, rec)?;
        let payload = Bytes::copy_from_slice(&rec[RECORD_HEADER_LEN..]);
        let seq = self.seq;
        self.seq += 1;
        Ok((seq, payload))
    }
}

impl Iterator for LogIter<'_> {
    type Item = Result<(u64, Bytes), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.seq >= self.log.next_seq() {
            return None;
        }
        let item = self.next_record();
        self.done = item.is_err();
        Some(item)
    }
}
