//! The broker's facade: the typed operations the gateway (and every other caller) uses. Each
//! one validates what it can, proposes its command through the replica or reads with a read
//! barrier first, and answers domain types; nobody outside this module sees a `Command`'s
//! `Outcome`. Opening, the accessors and shutdown are here; the operations are in `messages`
//! (produce, fetch, settle, browse) and `manage` (stations, groups, seek, dead letters).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use openraft::{Config, SnapshotPolicy};
use tokio::sync::watch;

use crate::cluster::{ClusterOptions, ClusterView};
use crate::dir_lock::DirLock;
use crate::disk::{DiskWatch, MinFree, Space};
use crate::error::BrokerError;
use crate::log::{LogOptions, Verify};
use crate::net::network::Network;
use crate::net::transport::{Credentials, Peers};
use crate::net::Directory;
use crate::open_files::{open_file_budget, DEFAULT_MAX_OPEN_FILES};
use crate::raft::log_store::LogStore;
use crate::raft::state_machine::{SmOptions, StateMachine};
use crate::raft::{Applied, Member, NodeId, Raft};
use crate::replica::{self, storage, unavailable, CoreSetup, LeaderClock, Replica};
use crate::station::{BrokerState, Command, Millis};

mod manage;
mod messages;
mod push;
mod sources;
mod status;

pub use manage::{DeadLetterPage, Put};
pub use messages::{BrowsePage, Fetched, ProduceResults};
pub use status::RaftStatus;

pub(crate) const CLEAN_MARKER: &str = "clean-shutdown";
/// Where the cache of tiered data is kept in the data dir (emptied at every start).
const TIER_CACHE: &str = "tier-cache";
/// How long shutdown waits for the background tasks before aborting those still running.
const SHUTDOWN_TASK_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct BrokerOptions {
    pub data_dir: PathBuf,
    pub node_id: NodeId,
    /// The cluster this node is started for. A data dir that belongs to another cluster is
    /// refused, naming both ids; a new data dir records this id (or, when `None`, a new random
    /// one).
    pub cluster_id: Option<String>,
    /// Segment size of the Raft log and of station logs.
    pub segment_bytes: u64,
    /// Build a snapshot (and then purge the Raft log) after this many entries...
    pub snapshot_every: u64,
    /// ...or after this many payload bytes, whichever comes first. Retention deletes files only
    /// once a snapshot covers the deletion, so this also bounds how far disk use overshoots.
    pub snapshot_bytes: u64,
    /// In a cluster: Raft entries kept after a snapshot covers them, so a follower a little
    /// behind catches up from the log instead of a whole snapshot. (A cluster of one keeps none.)
    pub log_kept_after_snapshot: u64,
    /// Raft entries in flight at once. Commands arriving meanwhile join the next entry.
    pub proposals_in_flight: usize,
    /// How long a command waits for a leader before answering `Unavailable`.
    pub leader_wait: Duration,
    /// Keep zero-filled space ahead of the Raft log's write position, so an fsync does not
    /// also commit a file-size change (about 45 µs less per durable write on the reference
    /// disk). Trade-off: after a power loss the kernel may have persisted unsynced pages out of
    /// order, leaving a zero hole before a later record; recovery then refuses to start (it
    /// cannot tell that hole from lost acknowledged data) instead of dropping the torn tail.
    pub preallocate_raft_log: bool,
    /// How long a proposed command may wait to be committed before it answers `Unavailable`
    /// (its outcome then unknown: a leader without a quorum never commits it, a later leader
    /// may). Never a false success.
    pub commit_timeout: Duration,
    /// Set to run as a member of a cluster of several nodes; `None`: a cluster of one, without
    /// a cluster port.
    pub cluster: Option<ClusterOptions>,
    /// New messages are refused with `StorageFull` while the data dir's file system has less
    /// free space than this (see [`crate::disk`]).
    pub min_free_disk: MinFree,
    /// Segment and directory descriptors of station logs kept open at once, across all
    /// stations (least recently used closed first); at most half the process's open-file
    /// limit is used, whatever this says.
    pub max_open_files: usize,
    /// The bucket sealed segments of stations with tiering on move to; `None`: tiering off.
    pub tier: Option<crate::tier::Bucket>,
}

impl BrokerOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> BrokerOptions {
        BrokerOptions {
            data_dir: data_dir.into(),
            node_id: 1,
            cluster_id: None,
            segment_bytes: 64 << 20,
            snapshot_every: 20_000,
            snapshot_bytes: 256 << 20,
            log_kept_after_snapshot: 500,
            proposals_in_flight: 1,
            leader_wait: Duration::from_secs(5),
            preallocate_raft_log: false,
            commit_timeout: Duration::from_secs(5),
            cluster: None,
            min_free_disk: MinFree::Auto,
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            tier: None,
        }
    }
}

/// A handle to the running broker; clones share it.
#[derive(Clone)]
pub struct Broker {
    pub(crate) replica: Arc<Replica>,
}

impl Broker {
    /// Opens (or creates) the data dir and recovers. A cluster of one returns once this node
    /// leads and has applied everything its log held, so no read sees less than was acknowledged
    /// before. A member of a larger cluster returns once it serves the cluster port; a leader
    /// comes when a quorum is up (see [`crate::cluster`]).
    pub async fn open(opts: BrokerOptions) -> Result<Broker, BrokerError> {
        let dir = opts.data_dir.clone();
        // The data dir's own entry in its parent must be durable too, or a power cut can take
        // the whole dir away from a node that has acknowledged messages.
        crate::dirs::ensure_durable(&dir).map_err(storage)?;
        let dir_lock = DirLock::acquire(&dir)?;
        // Before anything else touches the dir: a refused one is left as it was (but for the lock).
        refuse_new_cluster_node_without_id(&opts)?;
        // No Raft log yet: a new data dir, with nothing to recover.
        let new_dir = !dir.join("raft").exists();
        let identity = crate::identity::establish(&dir, opts.node_id, opts.cluster_id.as_deref())?;
        let marker = dir.join(CLEAN_MARKER);
        let clean = marker.exists();
        if new_dir {
            tracing::info!(dir = %dir.display(), "new data dir");
        } else if !clean {
            tracing::info!(dir = %dir.display(), "no clean-shutdown marker: verifying every checksum");
        }
        let verify = if clean { Verify::Tail } else { Verify::Full };
        // After a clean shutdown every Raft record was fsynced: a damaged tail is corruption
        // (refused, naming the file and byte), never cut off as a torn write. Opening changes
        // nothing in that case, and the marker stays until the logs are open, so every later
        // start refuses the same way instead of treating the damage as a crash's torn write.
        let raft_log = LogOptions {
            segment_bytes: opts.segment_bytes,
            verify,
            preallocate: opts.preallocate_raft_log,
            after_clean_shutdown: clean,
            sync_on_open: true,
        };
        // Durable before anything inside them is: a cut must not leave cluster-identity without
        // raft/ and sm/, which would look like a pristine node and start afresh.
        for sub in ["raft", "sm"] {
            crate::dirs::ensure_durable(&dir.join(sub)).map_err(storage)?;
        }
        let log = LogStore::open(&dir.join("raft"), raft_log).map_err(storage)?;
        // A rebuild after a storage failure recovers like a start after a crash.
        let rebuild_log = LogOptions { verify: Verify::Full, after_clean_shutdown: false, ..raft_log };
        let max_open_files = open_file_budget(opts.max_open_files);
        let sm_options = SmOptions {
            drop_tiered_copies: opts.tier.is_some(),
            ..SmOptions::new(dir.join("sm"), opts.segment_bytes, verify, max_open_files)
        };
        let sm = StateMachine::open(sm_options).map_err(storage)?;
        log.link_snapshot(sm.durable_snapshot());
        if clean {
            std::fs::remove_file(&marker).map_err(storage)?;
            crate::dirs::fsync_dir(&dir).map_err(storage)?;
        }
        let recover_to = log.last_index();
        let pristine = log.is_pristine();

        let cluster = opts.cluster.clone();
        let configured = cluster.as_ref().map(|c| c.peers.clone()).unwrap_or_default();
        let member = Member {
            cluster_addr: configured
                .iter()
                .find(|(id, _)| *id == opts.node_id)
                .map(|(_, a)| a.clone())
                .or_else(|| cluster.as_ref().map(|c| c.listen_addr()))
                .unwrap_or_default(),
            api_addr: cluster.as_ref().map(|c| c.api_addr.clone()).unwrap_or_default(),
            incarnation: identity.incarnation.clone(),
        };
        let credentials = Credentials::new(
            identity.cluster_id.clone(),
            opts.node_id,
            cluster.as_ref().map_or("", |c| c.secret.as_str()),
        )
        .with_tls(cluster.as_ref().and_then(|c| c.tls.clone()));
        let directory = Arc::new(Directory::new(Peers::new(credentials.clone()), &configured));
        let node_id = opts.node_id;
        let alone = configured.iter().all(|(id, _)| *id == node_id);
        let config = if alone {
            Config {
                cluster_name: "depot".into(),
                heartbeat_interval: 50,
                election_timeout_min: 150,
                election_timeout_max: 300,
                snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_every),
                max_in_snapshot_log_to_keep: 0,
                purge_batch_size: 1,
                ..Default::default()
            }
        } else {
            Config {
                cluster_name: "depot".into(),
                // openraft bounds each append RPC by the heartbeat interval (and the log store
                // bounds the bytes of one append to fit). A follower refuses votes for
                // `election_timeout_max` after the last heartbeat (the leader lease), so a dead
                // leader is replaced after one to two election timeouts.
                heartbeat_interval: 100,
                election_timeout_min: 300,
                election_timeout_max: 600,
                install_snapshot_timeout: 10_000,
                snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_every),
                max_in_snapshot_log_to_keep: opts.log_kept_after_snapshot,
                purge_batch_size: 64,
                ..Default::default()
            }
        };
        let config = Arc::new(config.validate().map_err(storage)?);
        let network = Network { directory: directory.clone() };
        let raft = Raft::new(opts.node_id, config.clone(), network, log, sm.clone()).await.map_err(storage)?;
        if alone && !raft.is_initialized().await.map_err(storage)? {
            raft.initialize(BTreeMap::from([(node_id, member.clone())])).await.map_err(storage)?;
        }
        if alone {
            raft.wait(Some(opts.leader_wait.max(Duration::from_secs(30))))
                .metrics(
                    |m| {
                        m.current_leader == Some(node_id)
                            && recover_to.is_none_or(|i| m.last_applied.is_some_and(|a| a.index >= i))
                    },
                    "leader with the log applied",
                )
                .await
                .map_err(|e| unavailable(format!("recovery did not finish: {e}")))?;
        }

        let (shutdown, _) = watch::channel(false);
        let (draining, _) = watch::channel(false);
        let disk = DiskWatch::new(&dir, opts.min_free_disk);
        let tier_reader = match &opts.tier {
            Some(bucket) => Some(Arc::new(
                crate::tier::TierReader::new(bucket.clone(), dir.join(TIER_CACHE), bucket.options.cache_bytes)
                    .map_err(storage)?,
            )),
            None => None,
        };
        let replica = Arc::new(Replica {
            raft: RwLock::new(raft),
            core: CoreSetup { config, log_dir: dir.join("raft"), log: rebuild_log },
            fault: Mutex::new(None),
            sm,
            node_id,
            cluster_id: identity.cluster_id,
            member,
            directory,
            clustered: cluster.is_some(),
            startup: cluster.as_ref().map(|c| c.startup.clone()),
            leader_wait: opts.leader_wait,
            commit_timeout: opts.commit_timeout,
            data_dir: dir,
            proposals: Mutex::new(None),
            parked: Arc::default(),
            tasks: Mutex::new(Vec::new()),
            shutdown,
            draining,
            clock: LeaderClock::new(),
            unsnapshotted: AtomicU64::new(0),
            snapshot_bytes: opts.snapshot_bytes,
            dir_lock: Mutex::new(Some(dir_lock)),
            disk,
            receipt_key: OnceLock::new(),
            leader_changes: AtomicU64::new(0),
            tier_reader,
            tier: opts.tier.as_ref().map(|bucket| {
                let status = crate::tier::uploader::StatusCell::default();
                status.lock().bucket = bucket.options.bucket.clone();
                status
            }),
        });
        replica.start_proposer(opts.proposals_in_flight);
        replica.track(tokio::spawn(replica::ticker::run_ticker(replica.clone())));
        replica.track(tokio::spawn(replica::supervisor::supervise_raft(replica.clone())));
        if let (Some(bucket), Some(status)) = (opts.tier.clone(), replica.tier.clone()) {
            replica.track(tokio::spawn(crate::tier::uploader::run(replica.clone(), bucket, status)));
        }
        let broker = Broker { replica };
        if let Some(cluster) = &cluster {
            if let Err(e) = crate::cluster::start(&broker.replica, cluster, credentials, pristine).await {
                let _ = broker.shutdown().await;
                return Err(e);
            }
        }
        Ok(broker)
    }

    pub fn node_id(&self) -> NodeId {
        self.replica.node_id
    }

    /// The id of the cluster this node's data dir belongs to.
    pub fn cluster_id(&self) -> &str {
        &self.replica.cluster_id
    }

    /// Whether the Raft group currently knows a leader (this node or, in a cluster, another).
    /// A member's start while it has not known a leader yet: which configured nodes answer.
    /// `None` for a cluster of one and once the start is over.
    pub fn startup(&self) -> Option<crate::cluster::progress::Progress> {
        self.replica.startup.as_ref().map(|s| s.get()).filter(|p| !p.active)
    }

    pub fn has_leader(&self) -> bool {
        self.replica.raft().metrics().borrow().current_leader.is_some()
    }

    /// The voting members of the cluster (1 for a cluster of one).
    pub fn voters(&self) -> usize {
        self.replica.raft().metrics().borrow().membership_config.membership().voter_ids().count()
    }

    /// Starts draining: waiting fetches return what they have (usually nothing) at once, so a
    /// server can finish in-flight long polls quickly; commands keep working until `shutdown`.
    pub fn begin_drain(&self) {
        self.replica.draining.send_replace(true);
    }

    pub fn data_dir(&self) -> &Path {
        &self.replica.data_dir
    }

    /// The leader's current clock reading, as it would stamp a command now.
    pub fn now(&self) -> Millis {
        self.replica.clock.now()
    }

    /// The raw command path under the typed operations: proposes `command` (forwarded to the
    /// leader when this node does not lead) and waits until it is committed and applied. A
    /// refused command (`Outcome::Error`) comes back as `BrokerError::Command`. For tools and
    /// tests that drive the state machine directly; the gateway uses the typed operations.
    pub async fn submit(&self, command: Command) -> Result<Applied, BrokerError> {
        self.replica.submit(command).await
    }

    /// A read barrier: returns once this node has applied everything committed before the call
    /// (in a cluster, after the leader confirmed with a quorum that it still leads). The typed
    /// reads run it themselves; `/readyz` uses it as a probe.
    pub async fn barrier(&self) -> Result<(), BrokerError> {
        self.replica.barrier().await
    }

    /// Why the Raft core is down, while a storage failure keeps it from running (it is being
    /// rebuilt from disk); `None` when it runs.
    pub fn storage_fault(&self) -> Option<String> {
        self.replica.storage_fault()
    }

    /// What tiering has done on this node; `None` when it is off.
    pub fn tier_status(&self) -> Option<crate::tier::TierStatus> {
        let mut status = self.replica.tier.as_ref().map(|cell| cell.lock().clone())?;
        if let Some(reader) = &self.replica.tier_reader {
            status.cache = reader.stats();
        }
        Some(status)
    }

    /// Space on the data dir's file system, with the watermark it is held to.
    pub fn disk_space(&self) -> std::io::Result<Space> {
        self.replica.disk.space()
    }

    /// Station-log descriptors held open, against their cap.
    pub fn open_files(&self) -> crate::log::FileCacheStats {
        self.replica.sm.open_files()
    }

    /// Reads the replicated state as this node has applied it, without a read barrier (so
    /// possibly behind the leader): for metrics and tests.
    pub fn read<R>(&self, f: impl FnOnce(&BrokerState) -> R) -> R {
        self.replica.read(f)
    }

    /// Adds node `id` as a learner, waits for it to catch up, and makes it a voter.
    pub async fn add_node(&self, id: NodeId, api_addr: String, cluster_addr: String) -> Result<(), BrokerError> {
        crate::cluster::membership::add_node(&self.replica, id, api_addr, cluster_addr).await
    }

    /// Removes node `id` from the cluster (as a voter, then entirely).
    pub async fn remove_node(&self, id: NodeId) -> Result<(), BrokerError> {
        crate::cluster::membership::remove_node(&self.replica, id).await
    }

    /// The cluster as this node sees it; other members are probed for reachability and their
    /// API address.
    pub async fn cluster_view(&self) -> ClusterView {
        crate::cluster::membership::cluster_view(&self.replica).await
    }

    /// Stops taking commands, finishes those in flight, stops Raft, fsyncs station logs and
    /// leaves the clean-shutdown marker. Safe to call more than once.
    pub async fn shutdown(&self) -> Result<(), BrokerError> {
        let sender = self.replica.proposals.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(sender);
        self.replica.draining.send_replace(true);
        self.replica.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut *self.replica.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        // A task waiting on a proposal that cannot commit (no quorum) would wait forever:
        // stopping Raft below answers such proposals, so give up on the task instead.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_TASK_WAIT;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        self.replica.raft().shutdown().await.map_err(storage)?;
        self.replica.directory.peers.close();
        self.replica.sm.close().map_err(storage)?;
        let marker = self.replica.data_dir.join(CLEAN_MARKER);
        std::fs::write(&marker, b"").map_err(storage)?;
        std::fs::File::open(&marker).and_then(|f| f.sync_all()).map_err(storage)?;
        crate::dirs::fsync_dir(&self.replica.data_dir).map_err(storage)?;
        // Everything is on disk: another process may open the dir now.
        drop(self.replica.dir_lock.lock().unwrap_or_else(|p| p.into_inner()).take());
        Ok(())
    }
}

/// A new data dir of a node with peers needs the cluster id configured: each node would otherwise
/// mint its own random id on its first start, and the nodes would refuse each other for good. A
/// dir that already has an identity keeps its own, so existing nodes start as before.
fn refuse_new_cluster_node_without_id(opts: &BrokerOptions) -> Result<(), BrokerError> {
    let has_peers = opts.cluster.as_ref().is_some_and(|c| c.peers.iter().any(|(id, _)| *id != opts.node_id));
    if !has_peers || opts.cluster_id.is_some() {
        return Ok(());
    }
    if crate::identity::read(&opts.data_dir).map_err(storage)?.is_some() {
        return Ok(());
    }
    Err(BrokerError::DataDir(format!(
        "{} is a new data dir of a node with peers, and no cluster id is configured: give every node of \
         the cluster the same --cluster-id (or cluster_id in the config file, DEPOT_CLUSTER_ID), for \
         example --cluster-id prod; without one each new node would make up its own and refuse the others",
        opts.data_dir.display()
    )))
}
