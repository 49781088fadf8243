//! Keeps the Raft core running: openraft's core quits for good on a storage error, and this
//! rebuilds it from disk in-process (see [`supervise_raft`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::watch;

use super::{storage, Replica};
use crate::net::network::Network;
use crate::raft::log_store::LogStore;
use crate::raft::{NodeId, Raft};
use crate::BrokerError;

/// Retries of a Raft core rebuild back off from this...
const REBUILD_BACKOFF_MIN: Duration = Duration::from_millis(250);
/// ...to this, so a node resumes within a few seconds of its disk getting space again.
const REBUILD_BACKOFF_MAX: Duration = Duration::from_secs(4);
/// A rebuilt core that runs this long is healthy again: the next failure starts a new backoff.
const REBUILD_STABLE: Duration = Duration::from_secs(30);

/// openraft's Raft core quits for good on any storage error (a full disk, too many open files,
/// an I/O error). This rebuilds it from disk, as a restart would, while the process keeps its
/// data-dir lock, its listeners and its clients: until then commands answer `StorageFull` or
/// `Unavailable`, and reads of the state keep working.
pub(crate) async fn supervise_raft(replica: Arc<Replica>) {
    let inner = &*replica;
    let mut shutdown = inner.shutdown.subscribe();
    // Waits between rebuilds: doubling from the least to the most, with jitter.
    let policy = ExponentialBuilder::new()
        .with_min_delay(REBUILD_BACKOFF_MIN)
        .with_max_delay(REBUILD_BACKOFF_MAX)
        .with_jitter()
        .without_max_times();
    let mut delays = policy.build();
    let mut rebuilt_at: Option<Instant> = None;
    let mut leader: Option<NodeId> = None;
    loop {
        let mut metrics = inner.raft().metrics();
        let fatal = loop {
            if *shutdown.borrow() {
                return;
            }
            if let Err(fatal) = &metrics.borrow().running_state {
                break fatal.to_string();
            }
            let seen = metrics.borrow().current_leader;
            if seen.is_some() && seen != leader {
                leader = seen;
                inner.leader_changes.fetch_add(1, Ordering::Relaxed);
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { break "the Raft core stopped".to_owned() },
                _ = shutdown.changed() => {}
            }
        };
        if *shutdown.borrow() {
            return;
        }
        tracing::error!(error = %fatal, "the Raft core stopped on a storage failure; rebuilding it from disk");
        *inner.fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(fatal);
        // A core that fails again soon after a rebuild (the disk is still full) is rebuilt
        // after a growing pause, not in a tight loop of reloads.
        if rebuilt_at.is_some_and(|at| at.elapsed() < REBUILD_STABLE) {
            if pause(&mut shutdown, next_delay(&mut delays)).await {
                return;
            }
        } else {
            delays = policy.build();
        }
        loop {
            match rebuild_raft(inner).await {
                Ok(()) => break,
                Err(e) => {
                    let retry_in = next_delay(&mut delays);
                    tracing::warn!(error = %e, ?retry_in, "rebuilding the Raft core failed");
                    *inner.fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    if pause(&mut shutdown, retry_in).await {
                        return;
                    }
                }
            }
        }
        *inner.fault.lock().unwrap_or_else(|p| p.into_inner()) = None;
        rebuilt_at = Some(Instant::now());
        tracing::warn!("the Raft core was rebuilt from disk and runs again");
    }
}

async fn rebuild_raft(inner: &Replica) -> Result<(), BrokerError> {
    // The old core has quit; this joins what is left of it.
    let _ = inner.raft().shutdown().await;
    let sm = inner.sm.for_new_core().map_err(storage)?;
    let log = LogStore::open(&inner.core.log_dir, inner.core.log).map_err(storage)?;
    log.link_snapshot(sm.durable_snapshot());
    let network = Network { directory: inner.directory.clone() };
    let raft = Raft::new(inner.node_id, inner.core.config.clone(), network, log, sm).await.map_err(storage)?;
    *inner.raft.write().unwrap_or_else(|p| p.into_inner()) = raft;
    Ok(())
}

/// The next wait between rebuilds (the policy never runs out; the most, should it).
fn next_delay(delays: &mut ExponentialBackoff) -> Duration {
    delays.next().unwrap_or(REBUILD_BACKOFF_MAX)
}

/// Waits `pause`, or less if the broker shuts down meanwhile; true when it does.
async fn pause(shutdown: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = shutdown.changed() => {}
    }
    *shutdown.borrow()
}
