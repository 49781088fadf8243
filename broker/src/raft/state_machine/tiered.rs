//! Local copies of tiered segments. Once the catalog holds a station's oldest segments and a
//! snapshot is durable, their files are deleted from the station's directory; reads of those
//! offsets then go to the bucket (see `crate::broker`). What the state keeps of each message
//! (its meta: times and size) cannot be read back from a deleted segment at the next start, so
//! it is first written beside the log in a *metas file* (`<first offset, 20 digits>.metas`),
//! which snapshots carry like segments: a node that catches up from a snapshot gets the metas
//! and never the tiered data.

use super::*;
use crate::station::MessageMeta;

/// The extension of a metas file.
const METAS: &str = "metas";

/// The metas of offsets `first..first + metas.len()` of one station.
#[derive(serde::Serialize, serde::Deserialize)]
struct MetasFile {
    first: u64,
    metas: Vec<MessageMeta>,
}

/// One metas file of a station: its offsets `first..end`, its path and length.
#[derive(Clone, Debug)]
pub(super) struct Metas {
    pub(super) end: u64,
    pub(super) path: PathBuf,
    pub(super) len: u64,
}

/// A station's metas files, by first offset.
pub(super) type StationMetas = BTreeMap<u64, Metas>;

fn metas_first(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(METAS)?.strip_suffix('.')?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok())?
}

impl Inner {
    /// Deletes the local copies of each station's oldest segments that the catalog covers,
    /// after writing their metas; run once a snapshot is durable. The snapshot just taken
    /// still links the files (so a start from it finds them), and the next one lists the
    /// metas file instead.
    pub(super) fn drop_tiered_copies(&mut self) -> Result<(), StorageError> {
        if !self.opts.drop_tiered_copies {
            return Ok(());
        }
        let ids: Vec<u64> = self.logs.keys().copied().collect();
        for id in ids {
            let Some((until, _)) = self.freeable(id) else { continue };
            // The current snapshot still links what is deleted below.
            self.current_links_deleted = true;
            let Some(local_first) = self.logs.get(&id).map(SegmentedLog::first_seq) else { continue };
            let (first, _) = self.state.station_offsets(id).unwrap_or((0, 0));
            let from = local_first.max(first);
            if from < until {
                let metas = self.state.message_metas(id, from, until);
                if metas.len() as u64 != until - from {
                    // Never expected; the copies then stay, which costs only disk.
                    tracing::warn!(
                        station_id = id,
                        from,
                        until,
                        "the state lacks metas of tiered offsets: local copies kept"
                    );
                    continue;
                }
                self.write_metas(id, from, metas)?;
            }
            // Oldest first, one segment at a time: a crash part way leaves a contiguous log.
            let Some(log) = self.logs.get_mut(&id) else { continue };
            let bases: Vec<u64> =
                log.segments().iter().skip(1).map(|s| s.base_seq).take_while(|&b| b <= until).collect();
            for (i, base) in bases.into_iter().enumerate() {
                log.purge_before(base).map_err(sm_err)?;
                if i == 0 {
                    crate::failpoint::hit("tier-local-delete");
                }
            }
            log.purge_before(until).map_err(sm_err)?;
        }
        Ok(())
    }

    /// Where the catalog lets station `id`'s local log start, and the bytes of the segment
    /// files that deleting up to there frees; `None` when it frees no whole segment (a metas
    /// file for nothing freed is churn).
    pub(super) fn freeable(&self, id: u64) -> Option<(u64, u64)> {
        let log = self.logs.get(&id)?;
        let until = self.state.tier_covered_until(id, log.first_seq()).min(log.next_seq());
        let segments = log.segments();
        let freed: u64 =
            segments.windows(2).take_while(|pair| pair[1].base_seq <= until).map(|pair| pair[0].len_bytes).sum();
        (freed > 0).then_some((until, freed))
    }

    fn write_metas(&mut self, id: u64, first: u64, metas: Vec<MessageMeta>) -> Result<(), StorageError> {
        let path = station_dir(&self.opts.dir, id).join(format!("{first:020}.{METAS}"));
        let end = first + metas.len() as u64;
        durable_file::write_atomic(&path, &MetasFile { first, metas }).map_err(sm_err)?;
        let len = fs::metadata(&path).map_err(io_err(&path)).map_err(sm_err)?.len();
        self.metas.entry(id).or_default().insert(first, Metas { end, path, len });
        Ok(())
    }

    /// Deletes the metas files of `id` that hold only offsets below `first` (retention).
    pub(super) fn drop_metas_below(&mut self, id: u64, first: u64) -> Result<(), StorageError> {
        let Some(files) = self.metas.get_mut(&id) else { return Ok(()) };
        let gone: Vec<u64> = files.iter().filter(|(_, m)| m.end <= first).map(|(&f, _)| f).collect();
        for f in gone {
            if let Some(m) = files.remove(&f) {
                remove_file_if_present(&m.path)?;
            }
        }
        Ok(())
    }

    /// The metas files in a station's directory (removing those wholly below `first` and the
    /// leftovers of an interrupted write), as the open of its log finds them.
    pub(super) fn scan_metas(&mut self, id: u64, first: u64) -> Result<(), StorageError> {
        let dir = station_dir(&self.opts.dir, id);
        let mut files = StationMetas::new();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.metas.remove(&id);
                return Ok(());
            }
            Err(e) => return Err(sm_err(io_err(&dir)(e))),
        };
        for entry in entries {
            let entry = entry.map_err(io_err(&dir)).map_err(sm_err)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if name.strip_suffix(".tmp").and_then(|stem| stem.parse::<u64>().ok()).is_some() {
                remove_file_if_present(&path)?;
                continue;
            }
            let Some(file_first) = metas_first(name) else { continue };
            let file: MetasFile = durable_file::read(&path).map_err(sm_err)?.ok_or_else(|| {
                sm_err(std::io::Error::other(format!("{} vanished while it was read", path.display())))
            })?;
            if file.first != file_first {
                return Err(sm_err(durable_file::FileError::Corrupt {
                    path,
                    detail: format!("holds offsets from {}, its name says {file_first}", file.first),
                }));
            }
            let end = file.first + file.metas.len() as u64;
            if end <= first {
                remove_file_if_present(&path)?;
                continue;
            }
            let len = entry.metadata().map_err(io_err(&path)).map_err(sm_err)?.len();
            files.insert(file_first, Metas { end, path, len });
        }
        if files.is_empty() {
            self.metas.remove(&id);
        } else {
            self.metas.insert(id, files);
        }
        Ok(())
    }

    /// Whether station `id`'s metas files (as `scan_metas` found and checked them) cover
    /// offsets `first..end` without a gap; reads no file.
    pub(super) fn metas_cover(&self, id: u64, first: u64, end: u64) -> bool {
        let files = self.metas.get(&id);
        let mut next = first;
        while next < end {
            match files.and_then(|f| f.range(..=next).next_back()).filter(|(_, m)| m.end > next) {
                Some((_, m)) => next = m.end,
                None => return false,
            }
        }
        true
    }

    /// The metas of offsets `first..end` of station `id` from its metas files, or `None` when
    /// they do not cover that range without a gap.
    pub(super) fn metas_from_files(
        &self,
        id: u64,
        first: u64,
        end: u64,
    ) -> Result<Option<Vec<MessageMeta>>, StorageError> {
        let mut out = Vec::with_capacity(end.saturating_sub(first) as usize);
        let mut next = first;
        let Some(files) = self.metas.get(&id) else { return Ok((first >= end).then_some(out)) };
        while next < end {
            let Some((_, m)) = files.range(..=next).next_back().filter(|(_, m)| m.end > next) else {
                return Ok(None);
            };
            let file: MetasFile = durable_file::read(&m.path).map_err(sm_err)?.ok_or_else(|| {
                sm_err(std::io::Error::other(format!("{} vanished while it was read", m.path.display())))
            })?;
            let skip = (next - file.first) as usize;
            let take = (end.min(m.end) - next) as usize;
            out.extend(file.metas.iter().skip(skip).take(take));
            next = end.min(m.end);
        }
        Ok(Some(out))
    }

    /// Every metas file, for a snapshot's manifest.
    pub(super) fn metas_files(&self) -> impl Iterator<Item = (u64, &Metas)> {
        self.metas.iter().flat_map(|(&id, files)| files.values().map(move |m| (id, m)))
    }
}

fn remove_file_if_present(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(sm_err(io_err(path)(e))),
    }
}
