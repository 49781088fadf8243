//! Station logs and the snapshot directory at start: loading the current snapshot, clearing
//! what an interrupted run left behind, and opening (or relinking) each station's log.

use super::*;
use crate::log::LogOptions;

pub(super) fn load_snapshot(dir: &Path) -> Result<(snapshot::Manifest, BrokerState), durable_file::FileError> {
    let manifest = snapshot::read_manifest(dir)?;
    let path = snapshot::state_path(dir);
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    let corrupt = |detail: String| durable_file::FileError::Corrupt { path: path.clone(), detail };
    if bytes.len() as u64 != manifest.state_len || crc32c::crc32c(&bytes) != manifest.state_crc {
        return Err(corrupt("state does not match the manifest's length and checksum".into()));
    }
    let state = BrokerState::from_bytes(&bytes).map_err(|e| corrupt(e.to_string()))?;
    Ok((manifest, state))
}

/// Name prefix of a `stations/` tree a snapshot install replaced, until it is deleted.
pub(super) const TRASH_PREFIX: &str = "stations.trash-";

/// Station logs start writing back every MiB appended, so a snapshot's fsync finds little left
/// to write (see `SegmentedLog::set_write_behind`).
const STATION_WRITE_BEHIND: u64 = 1 << 20;

/// Deletes the replaced `stations/` trees a cut left behind.
pub(super) fn remove_trash(root: &Path) -> Result<(), durable_file::FileError> {
    let mut removed = false;
    for entry in fs::read_dir(root).map_err(io_err(root))? {
        let entry = entry.map_err(io_err(root))?;
        if entry.file_name().to_string_lossy().starts_with(TRASH_PREFIX) {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(io_err(&path))?;
            removed = true;
        }
    }
    if removed {
        durable_file::fsync_dir(root)?;
    }
    Ok(())
}

/// Removes snapshot directories other than `keep`, and leftovers of interrupted writes.
pub(super) fn remove_stale(snapshots: &Path, keep: Option<&str>) -> Result<(), durable_file::FileError> {
    let entries = fs::read_dir(snapshots).map_err(io_err(snapshots))?;
    for entry in entries {
        let entry = entry.map_err(io_err(snapshots))?;
        let name = entry.file_name();
        if Some(name.to_string_lossy().as_ref()) != keep {
            let path = entry.path();
            let removed = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            removed.map_err(io_err(&path))?;
        }
    }
    durable_file::fsync_dir(snapshots)
}

impl Inner {
    /// The last log index the current (durable) snapshot covers.
    pub(super) fn snapshot_index(&self) -> Option<u64> {
        self.current.as_ref().and_then(|(m, _)| m.last_log_id).map(|id| id.index)
    }

    pub(super) fn log_options(&self) -> LogOptions {
        LogOptions {
            segment_bytes: self.opts.segment_bytes,
            verify: self.opts.verify,
            preallocate: false,
            after_clean_shutdown: false,
            // What a station log holds up to the current snapshot was synced when the snapshot
            // was taken, and anything past it is cut off at start and replayed from Raft.
            sync_on_open: false,
        }
    }

    pub(super) fn open_log(&self, dir: &Path) -> Result<(SegmentedLog, crate::log::Recovery), StorageError> {
        let (mut log, recovery) =
            SegmentedLog::open_in(dir, self.log_options(), Some(&self.opts.files)).map_err(sm_err)?;
        log.set_write_behind(STATION_WRITE_BEHIND);
        Ok((log, recovery))
    }

    /// Opens every station log the state knows and lines it up with the state: records past the
    /// state's end were applied after the snapshot and are dropped (Raft replays them); a log
    /// that lacks records the state holds is rebuilt from the snapshot's links.
    pub(super) fn open_station_logs(&mut self) -> Result<(), StorageError> {
        let root = self.opts.dir.clone();
        let stations_dir = root.join("stations");
        let known: BTreeMap<u64, ()> = self.state.stations().into_iter().map(|(id, _)| (id, ())).collect();
        let entries = fs::read_dir(&stations_dir).map_err(io_err(&stations_dir)).map_err(sm_err)?;
        for entry in entries {
            let entry = entry.map_err(io_err(&stations_dir)).map_err(sm_err)?;
            let id = entry.file_name().to_string_lossy().parse::<u64>().ok();
            if id.is_none_or(|id| !known.contains_key(&id)) {
                let path = entry.path();
                fs::remove_dir_all(&path).map_err(io_err(&path)).map_err(sm_err)?;
            }
        }
        durable_file::fsync_dir(&stations_dir).map_err(sm_err)?;
        self.logs.clear();
        self.metas.clear();
        // What the current snapshot recorded of each station's segments.
        let mut recorded: BTreeMap<u64, Vec<(String, u64)>> = BTreeMap::new();
        if let Some((_, snap_dir)) = &self.current {
            for f in snapshot::read_manifest(snap_dir).map_err(sm_err)?.files {
                recorded.entry(f.station_id).or_default().push((f.name, f.len));
            }
        }
        for &id in known.keys() {
            let dir = station_dir(&root, id);
            let segments = recorded.get(&id).map_or(&[][..], Vec::as_slice);
            if crate::raft::purged::cut_to_snapshot(&dir, segments).map_err(io_err(&dir)).map_err(sm_err)? {
                tracing::info!(
                    station_id = id,
                    "station log: cut back to its snapshot (the rest is replayed from Raft)"
                );
            }
            let log = match self.open_station_log(id)? {
                Some(log) => log,
                None => {
                    tracing::warn!(station_id = id, "station log behind its snapshot; relinking from the snapshot");
                    self.relink_station(id)?;
                    self.open_station_log(id)?.ok_or_else(|| {
                        sm_err(std::io::Error::other(format!(
                            "station log {} does not hold the records its snapshot refers to",
                            station_dir(&root, id).display()
                        )))
                    })?
                }
            };
            let (first, next) = self.state.station_offsets(id).unwrap_or((0, 0));
            let local_first = log.first_seq().max(first);
            // Offsets below the log's first were tiered and their files deleted: their metas
            // are in metas files (`open_station_log` checked that they cover them).
            let mut metas = self.metas_from_files(id, first, local_first)?.unwrap_or_default();
            metas.reserve((next - local_first) as usize);
            for item in log.iter_from(local_first) {
                let (seq, record) = item.map_err(sm_err)?;
                if seq >= next {
                    break;
                }
                metas.push(decode_meta(&record).map_err(sm_err)?);
            }
            self.state.restore_messages(id, metas);
            self.logs.insert(id, log);
        }
        // Copies deleted after the current snapshot was captured (before a restart): it still
        // links them, and a new one must follow (see `StateMachine::snapshot_links_deleted`).
        self.current_links_deleted = recorded.iter().any(|(&id, files)| {
            known.contains_key(&id)
                && files.iter().any(|(name, _)| name.ends_with(".log") && !station_dir(&root, id).join(name).exists())
        });
        Ok(())
    }

    /// Whether offsets `first..local_first`, missing from a station's log, were tiered and
    /// deleted locally: the catalog holds them and metas files keep what the state needs.
    fn tiered_away(&self, id: u64, first: u64, local_first: u64) -> Result<bool, StorageError> {
        Ok(self.state.tier_covered_until(id, first) >= local_first && self.metas_cover(id, first, local_first))
    }

    pub(super) fn open_station_log(&mut self, id: u64) -> Result<Option<SegmentedLog>, StorageError> {
        let dir = station_dir(&self.opts.dir, id);
        let (first, _) = self.state.station_offsets(id).unwrap_or((0, 0));
        self.scan_metas(id, first)?;
        crate::raft::purged::drop_segments_below(&dir, first).map_err(io_err(&dir)).map_err(sm_err)?;
        let (mut log, recovery) = self.open_log(&dir)?;
        if let Some((path, pos)) = recovery.torn_tail {
            tracing::warn!(path = %path.display(), position = pos, "station log: truncated a torn tail (replayed from the Raft log)");
        }
        let (first, next) = self.state.station_offsets(id).unwrap_or((0, 0));
        if log.is_empty() && first == next {
            log.reset(next).map_err(sm_err)?;
            return Ok(Some(log));
        }
        if log.first_seq() > first && !self.tiered_away(id, first, log.first_seq())? || log.next_seq() < next {
            return Ok(None);
        }
        if log.next_seq() > next {
            log.truncate_from(next).map_err(sm_err)?;
        }
        log.purge_before(first).map_err(sm_err)?;
        Ok(Some(log))
    }

    /// Rebuilds a station's directory from the current snapshot's links. The new directory is
    /// built beside it and renamed into place, and the old one renamed away before it is
    /// deleted, so a cut at any point leaves either the old directory or the complete new one
    /// (leftovers have names that are no station id, and the next open removes them).
    pub(super) fn relink_station(&self, id: u64) -> Result<(), StorageError> {
        let dir = station_dir(&self.opts.dir, id);
        let parent = dir.parent().unwrap_or(Path::new(".")).to_path_buf();
        let fresh = dir.with_extension("relink");
        let old = dir.with_extension("trash");
        for leftover in [&fresh, &old] {
            if leftover.exists() {
                fs::remove_dir_all(leftover).map_err(io_err(leftover)).map_err(sm_err)?;
            }
        }
        fs::create_dir_all(&fresh).map_err(io_err(&fresh)).map_err(sm_err)?;
        if let Some((_, snap_dir)) = &self.current {
            let manifest = snapshot::read_manifest(snap_dir).map_err(sm_err)?;
            for f in manifest.files.iter().filter(|f| f.station_id == id) {
                let target = fresh.join(&f.name);
                fs::hard_link(snapshot::existing_file_path(snap_dir, f), &target)
                    .map_err(io_err(&target))
                    .map_err(sm_err)?;
            }
        }
        durable_file::fsync_dir(&fresh).map_err(sm_err)?;
        let replaced = dir.exists();
        if replaced {
            fs::rename(&dir, &old).map_err(io_err(&dir)).map_err(sm_err)?;
        }
        fs::rename(&fresh, &dir).map_err(io_err(&dir)).map_err(sm_err)?;
        durable_file::fsync_dir(&parent).map_err(sm_err)?;
        if replaced {
            fs::remove_dir_all(&old).map_err(io_err(&old)).map_err(sm_err)?;
        }
        Ok(())
    }
}
