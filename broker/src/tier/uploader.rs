//! The leader's tiering work, one pass every [`SCAN_EVERY`]: upload each sealed segment whose
//! newest message is older than its station's `after_ms` and propose `TierSegment` for it, and
//! delete the objects the catalog let go of (retention, deleted stations) and propose
//! `TierForget` for them. Failures are retried on the next passes, backing off with jitter;
//! nothing local is touched, so an unreachable bucket only delays tiering.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::bucket::Bucket;
use super::object;
use crate::error::BrokerError;
use crate::replica::Replica;
use crate::station::{Command, TieredSegment};

/// How often a pass runs while the bucket answers.
pub const SCAN_EVERY: Duration = Duration::from_millis(500);
/// Waits after failed passes: doubling from [`SCAN_EVERY`] up to this, with jitter.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Snapshots asked for to delete local copies of tiered segments come at most this often. A
/// copy's bytes leave the disk at the second snapshot after its catalog entry (the first deletes
/// the file, the next stops linking it), so this bounds how long catalogued data lingers.
const SNAPSHOT_AT_MOST_EVERY: Duration = Duration::from_millis(500);
/// A follower checks that the bucket answers this often (for /readyz and /metrics).
const PROBE_EVERY: Duration = Duration::from_secs(30);
/// The leader looks for orphaned objects on its first pass and then this often.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// An object neither catalogued nor listed as garbage is an orphan once it is this old: an
/// upload still under way on a deposed leader (up to the SDK's operation timeout) may yet be
/// catalogued through the new one.
const ORPHAN_AGE: Duration = Duration::from_secs(300);

/// What tiering has done on this node, for /metrics and /readyz.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TierStatus {
    pub bucket: String,
    /// Whether the last request to the bucket succeeded; `None` before the first.
    pub reachable: Option<bool>,
    pub last_error: Option<String>,
    pub uploads_total: u64,
    pub uploaded_bytes_total: u64,
    pub upload_failures_total: u64,
    pub deletes_total: u64,
    pub delete_failures_total: u64,
    /// Objects found in the bucket that no catalog entry names (and deleted).
    pub orphans_deleted_total: u64,
    /// Bytes of sealed segments old enough to tier that are not in the bucket yet (leader only).
    pub lag_bytes: u64,
    /// The cache of tiered data read back from the bucket.
    pub cache: super::TierCacheStats,
}

/// The shared cell the uploader writes and the broker reads.
#[derive(Clone, Debug, Default)]
pub(crate) struct StatusCell(Arc<Mutex<TierStatus>>);

impl StatusCell {
    pub(crate) fn lock(&self) -> MutexGuard<'_, TierStatus> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn succeeded(&self) {
        let mut s = self.lock();
        s.reachable = Some(true);
        s.last_error = None;
    }

    fn failed(&self, error: String) {
        let mut s = self.lock();
        s.reachable = Some(false);
        s.last_error = Some(error);
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Runs until the broker shuts down.
pub(crate) async fn run(replica: Arc<Replica>, bucket: Bucket, status: StatusCell) {
    let mut shutdown = replica.shutdown.subscribe();
    let mut failures = 0u32;
    let mut probed: Option<tokio::time::Instant> = None;
    let mut swept: Option<tokio::time::Instant> = None;
    let mut snapshot_asked: Option<tokio::time::Instant> = None;
    while !*shutdown.borrow() {
        let ok = if replica.leads() {
            let mut ok = pass(&replica, &bucket, &status, &mut snapshot_asked).await;
            if ok && swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
                ok = sweep(&replica, &bucket, &status).await;
                if ok {
                    swept = Some(tokio::time::Instant::now());
                }
            }
            ok
        } else {
            swept = None;
            status.lock().lag_bytes = 0;
            if probed.is_none_or(|at| at.elapsed() >= PROBE_EVERY) {
                probed = Some(tokio::time::Instant::now());
                match bucket.probe().await {
                    Ok(()) => status.succeeded(),
                    Err(e) => status.failed(e.to_string()),
                }
            }
            true
        };
        free_local_copies(&replica, &mut snapshot_asked).await;
        failures = if ok { 0 } else { failures.saturating_add(1) };
        let wait = backoff(failures);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// On every node: local copies of catalogued segments are deleted once a snapshot is durable
/// (`raft::state_machine`), so when there are some, a snapshot is asked for, at most once per
/// [`SNAPSHOT_AT_MOST_EVERY`], rather than waiting for the usual count of entries or bytes.
async fn free_local_copies(replica: &Replica, asked: &mut Option<tokio::time::Instant>) {
    if asked.is_some_and(|at| at.elapsed() < SNAPSHOT_AT_MOST_EVERY)
        || (replica.sm.freeable_tiered_bytes() == 0 && !replica.sm.snapshot_links_deleted())
    {
        return;
    }
    *asked = Some(tokio::time::Instant::now());
    if let Err(e) = replica.raft().trigger().snapshot().await {
        tracing::debug!(error = %e, "snapshot to free tiered segments not triggered");
    }
}

/// The wait after `failures` failed passes in a row.
fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return SCAN_EVERY;
    }
    let base = SCAN_EVERY.saturating_mul(1 << failures.min(8)).min(MAX_BACKOFF);
    base / 2 + base.mul_f64(rand::random::<f64>() / 2.0)
}

/// One pass; false when the bucket or a proposal failed. Each catalogued segment may ask for the
/// snapshot that frees it at once, so a long pass (an upload backlog) does not hold copies.
async fn pass(
    replica: &Arc<Replica>,
    bucket: &Bucket,
    status: &StatusCell,
    snapshot_asked: &mut Option<tokio::time::Instant>,
) -> bool {
    let mut ok = forget_garbage(replica, bucket, status).await;
    let now = now_ms();
    let stations = replica.read(|s| s.tiering_stations());
    let mut lag = 0u64;
    for (station, id, tiering) in stations {
        let segments = replica.sm.sealed_segments(id);
        for segment in segments {
            if segment.records == 0 {
                continue;
            }
            let (first, last) = (segment.base_seq, segment.base_seq + segment.records - 1);
            let (tiered, newest) =
                replica.read(|s| (s.is_tiered(id, first, last), s.message_meta(id, last).map(|m| m.produced_at)));
            let Some(newest) = newest else { continue };
            if tiered {
                continue;
            }
            if now.saturating_sub(newest) < i64::try_from(tiering.after_ms).unwrap_or(i64::MAX) {
                // Later segments hold newer messages.
                break;
            }
            // Counted as lag unless it is catalogued below.
            lag += segment.len_bytes;
            if !ok {
                continue;
            }
            let header = object::Header {
                format: object::FORMAT,
                cluster_id: replica.cluster_id.clone(),
                station: station.clone(),
                station_id: id,
                first_offset: first,
                last_offset: last,
                records: segment.records,
            };
            let path = segment.path.clone();
            let built = tokio::task::spawn_blocking(move || object::build(&header, &path)).await;
            let body = match built {
                Ok(Ok(body)) => body,
                // A damaged segment is never uploaded (`build` checks every record).
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    tracing::warn!(error = %e, station, first, "a segment to tier is damaged; it is not tiered");
                    continue;
                }
                // Retention may have removed the file since the list was taken.
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, station, first, "a segment to tier could not be read");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading a segment to tier failed");
                    continue;
                }
            };
            let segment_bytes = segment.len_bytes;
            let key = bucket.key(&object::name(&replica.cluster_id, id, first, last));
            let bytes = body.len() as u64;
            if let Err(e) = bucket.put(&key, body).await {
                tracing::warn!(error = %e, station, first, "uploading a segment failed; retrying with backoff");
                let mut s = status.lock();
                s.upload_failures_total += 1;
                drop(s);
                status.failed(e.to_string());
                ok = false;
                continue;
            }
            status.succeeded();
            crate::failpoint::hit("tier-after-upload");
            let segment = TieredSegment { first_offset: first, last_offset: last, bytes, key, tiered_at: now };
            match replica.submit(Command::TierSegment { station: station.clone(), station_id: id, segment }).await {
                Ok(_) => {
                    {
                        let mut s = status.lock();
                        s.uploads_total += 1;
                        s.uploaded_bytes_total += bytes;
                    }
                    lag = lag.saturating_sub(segment_bytes);
                    free_local_copies(replica, snapshot_asked).await;
                }
                // Retention or a deletion got there first: the object is garbage now.
                Err(BrokerError::Command(e)) => tracing::debug!(error = %e, station, first, "segment not catalogued"),
                Err(e) => {
                    tracing::warn!(error = %e, station, first, "the catalog entry was not committed; the upload is redone");
                    ok = false;
                }
            }
        }
    }
    status.lock().lag_bytes = lag;
    ok
}

/// Deletes the objects the catalog let go of and proposes forgetting those deleted.
async fn forget_garbage(replica: &Arc<Replica>, bucket: &Bucket, status: &StatusCell) -> bool {
    let garbage = replica.read(|s| s.tier_garbage());
    if garbage.is_empty() {
        return true;
    }
    let mut deleted = Vec::new();
    let mut ok = true;
    for key in garbage {
        match bucket.delete(&key).await {
            Ok(()) => deleted.push(key),
            Err(e) => {
                tracing::warn!(error = %e, key, "deleting a tiered object failed; retrying with backoff");
                status.lock().delete_failures_total += 1;
                status.failed(e.to_string());
                ok = false;
                break;
            }
        }
    }
    if deleted.is_empty() {
        return ok;
    }
    let count = deleted.len() as u64;
    match replica.submit(Command::TierForget { keys: deleted }).await {
        Ok(_) => {
            status.lock().deletes_total += count;
            ok
        }
        Err(e) => {
            tracing::warn!(error = %e, "forgetting deleted objects was not committed; deleting again later");
            false
        }
    }
}

/// Deletes objects under this cluster's prefix that neither the catalog nor the garbage list
/// names and that are older than [`ORPHAN_AGE`]: uploads whose catalog entry was never
/// committed (the leader died first) or was refused.
async fn sweep(replica: &Arc<Replica>, bucket: &Bucket, status: &StatusCell) -> bool {
    let prefix = bucket.key(&object::cluster_prefix(&replica.cluster_id));
    let listed = match bucket.list(&prefix).await {
        Ok(listed) => listed,
        Err(e) => {
            tracing::warn!(error = %e, "listing the bucket for orphaned objects failed");
            status.failed(e.to_string());
            return false;
        }
    };
    let known: std::collections::BTreeSet<String> = replica.read(|s| {
        let mut keys: std::collections::BTreeSet<String> = s.tier_garbage().into_iter().collect();
        for (id, _) in s.stations() {
            keys.extend(s.tiered_segments(id).into_iter().map(|t| t.key));
        }
        keys
    });
    let before = now_ms() / 1000 - i64::try_from(ORPHAN_AGE.as_secs()).unwrap_or(i64::MAX);
    for orphan in listed.iter().filter(|l| !known.contains(&l.key) && l.modified_s <= before) {
        match bucket.delete(&orphan.key).await {
            Ok(()) => {
                tracing::info!(key = orphan.key, "deleted an orphaned tiered object");
                status.lock().orphans_deleted_total += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, key = orphan.key, "deleting an orphaned object failed");
                status.lock().delete_failures_total += 1;
                status.failed(e.to_string());
                return false;
            }
        }
    }
    true
}
