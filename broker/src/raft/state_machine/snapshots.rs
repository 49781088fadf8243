//! Building a snapshot (on a blocking thread, fenced by the core's generation) and installing
//! one received from the leader.

use super::station_logs::TRASH_PREFIX;
use super::*;

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let shared = self.shared.clone();
        let generation = self.generation;
        tokio::task::spawn_blocking(move || build_snapshot(&shared, generation)).await.map_err(snap_err)??;
        let current = self.shared.read().current.clone();
        let (meta, dir) = current.ok_or_else(|| snap_err(std::io::Error::other("snapshot vanished")))?;
        let reader = ArchiveReader::open(&dir).map_err(snap_err)?;
        Ok(Snapshot { meta, snapshot: Box::new(SnapshotStream::Archive(reader)) })
    }
}

/// Captures the state under the lock (cheap: serialize state, list segments), then fsyncs and
/// links outside it so apply is held up only for the capture.
pub(super) fn build_snapshot(shared: &Shared, generation: u64) -> Result<(), StorageError> {
    let closed = shared.snapshot_io();
    if *closed {
        return Err(snap_err(std::io::Error::other("state machine closed")));
    }
    fence(shared, generation)?;
    let (meta, state, files, points, root) = {
        let mut inner = shared.write();
        inner.snapshot_seq += 1;
        // Captured after every deletion so far: it lists their metas files, not the segments.
        inner.current_links_deleted = false;
        let state = inner.state.to_bytes().map_err(snap_err)?;
        let last = inner.last_applied;
        let snapshot_id = match last {
            Some(id) => format!("{:020}-{}-{}", id.index, id.leader_id.term, inner.snapshot_seq),
            None => format!("none-{}", inner.snapshot_seq),
        };
        let meta = SnapshotMeta { last_log_id: last, last_membership: inner.membership.clone(), snapshot_id };
        let mut files = Vec::new();
        let mut points = Vec::new();
        for (&id, log) in &inner.logs {
            points.push(log.sync_point());
            for seg in log.segments() {
                let name = seg.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                files.push((SnapshotFile { station_id: id, name, len: seg.len_bytes }, seg.path.clone()));
            }
        }
        for (id, m) in inner.metas_files() {
            let name = m.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            files.push((SnapshotFile { station_id: id, name, len: m.len }, m.path.clone()));
        }
        (meta, state, files, points, inner.opts.dir.clone())
    };
    for point in points {
        point.sync().map_err(snap_err)?;
    }
    let dir = root.join("snapshots").join(&meta.snapshot_id);
    snapshot::write_local(&dir, meta.clone(), &state, &files).map_err(snap_err)?;
    durable_file::write_atomic(&root.join("current"), &meta.snapshot_id).map_err(snap_err)?;
    let mut inner = shared.write();
    let upto = meta.last_log_id.map_or(0, |id| id.index);
    inner.current = Some((meta.clone(), dir));
    shared.durable.set(inner.snapshot_index());
    inner.run_deferred(upto)?;
    drop(inner);
    remove_stale(&root.join("snapshots"), Some(&meta.snapshot_id)).map_err(snap_err)
}

impl StateMachine {
    pub(super) async fn install(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotStream>,
    ) -> Result<(), StorageError> {
        let mut stream = *snapshot;
        let root = self.shared.read().opts.dir.clone();
        // The archive is received and unpacked in `incoming/`, apart from `snapshots/`: openraft
        // runs a build in its own task, so one may finish during the unpack, and a build clears
        // every other name out of `snapshots/`. The unpacked snapshot moves in under the lock.
        let name = format!("installed-{}", meta.snapshot_id);
        let staged = root.join(INCOMING).join(&name);
        if staged.exists() {
            fs::remove_dir_all(&staged).map_err(snap_err)?;
        }
        let manifest = snapshot::unpack(&mut stream, &staged).await.map_err(snap_err)?;
        if let SnapshotStream::Incoming { path, .. } = &stream {
            let _ = fs::remove_file(path);
        }
        if manifest.meta.last_log_id != meta.last_log_id {
            return Err(snap_err(std::io::Error::other("snapshot archive does not match its meta")));
        }
        let (_, state) = load_snapshot(&staged).map_err(snap_err)?;
        // Held from here to the end: no build and no shutdown overlaps the swap.
        let closed = self.shared.snapshot_io();
        if *closed {
            return Err(snap_err(std::io::Error::other("state machine closed")));
        }
        self.fenced()?;
        let snapshots = root.join("snapshots");
        let dir = snapshots.join(&name);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(snap_err)?;
        }
        fs::rename(&staged, &dir).map_err(io_err(&dir)).map_err(snap_err)?;
        durable_file::fsync_dir(&snapshots).map_err(snap_err)?;
        durable_file::fsync_dir(&root.join(INCOMING)).map_err(snap_err)?;
        durable_file::write_atomic(&root.join("current"), &name).map_err(snap_err)?;
        self.shared.durable.set(meta.last_log_id.map(|id| id.index));
        let trash = {
            let mut inner = self.shared.write();
            inner.logs.clear();
            inner.deferred.clear();
            // The old tree leaves in one rename, durable (with the new, empty tree) before any of
            // it is deleted: a cut part way through the deletion must not leave a station with
            // some of its segments, which opening it would judge corrupt.
            let stations = root.join("stations");
            inner.snapshot_seq += 1;
            let trash = root.join(format!("{TRASH_PREFIX}{}", inner.snapshot_seq));
            fs::rename(&stations, &trash).map_err(io_err(&stations)).map_err(snap_err)?;
            crate::dirs::ensure_durable(&stations).map_err(io_err(&stations)).map_err(snap_err)?;
            inner.state = state;
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            inner.current = Some((meta.clone(), dir));
            for (id, _) in inner.state.stations() {
                inner.relink_station(id)?;
            }
            inner.open_station_logs()?;
            durable_file::fsync_dir(&root).map_err(snap_err)?;
            trash
        };
        fs::remove_dir_all(&trash).map_err(io_err(&trash)).map_err(snap_err)?;
        durable_file::fsync_dir(&root).map_err(snap_err)?;
        remove_stale(&root.join("snapshots"), Some(&name)).map_err(snap_err)?;
        self.shared.applied.send_replace(meta.last_log_id.map_or(0, |id| id.index));
        self.shared.wakes.wake(&super::Touched::everything());
        Ok(())
    }
}
