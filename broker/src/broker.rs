//! The facade the gateway uses: submit a command and await its applied outcome; read views;
//! wait for messages without busy polling; pump the dead-letter outbox.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::ClientWriteError;
use openraft::{Config, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::cluster::network::Network;
use crate::cluster::node::{call_leader, unexpected, Routed};
use crate::cluster::transport::{Credentials, Peers};
use crate::cluster::wire::{self, Call, Reply};
use crate::cluster::{ClusterOptions, Directory};
use crate::dir_lock::DirLock;
use crate::disk::{DiskWatch, MinFree, Space};
use crate::error::BrokerError;
use crate::log::{LogOptions, Verify};
use crate::open_files::{open_file_budget, DEFAULT_MAX_OPEN_FILES};
use crate::raft::log_store::LogStore;
use crate::raft::state_machine::{SmOptions, StateMachine};
use crate::raft::{Applied, Member, NodeId, Proposal, Raft, StoredMessage};
use crate::receipt::{self, ReceiptKey, SealedReceipt};
use crate::station::{
    BrokerState, Command, CommandError, DeadLetterRecord, Delivery, Envelope, GroupView, Millis, OutboxEntry, Outcome,
    ReceiptResult, SettleOp, StationView,
};

mod supervisor;

pub(crate) const CLEAN_MARKER: &str = "clean-shutdown";
/// Upper bounds of one Raft entry, so a burst of producers cannot build an unbounded entry.
const MAX_PROPOSAL_COMMANDS: usize = 4096;
const MAX_PROPOSAL_BYTES: usize = 32 << 20;
/// How far the ticker may sleep past due work; expirations are also applied lazily by Fetch.
const TICK_MAX_SLEEP: Duration = Duration::from_millis(100);
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
}

impl BrokerOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> BrokerOptions {
        BrokerOptions {
            data_dir: data_dir.into(),
            node_id: 1,
            cluster_id: None,
            segment_bytes: 64 << 20,
            snapshot_every: 2_000,
            snapshot_bytes: 256 << 20,
            log_kept_after_snapshot: 500,
            proposals_in_flight: 1,
            leader_wait: Duration::from_secs(5),
            preallocate_raft_log: false,
            commit_timeout: Duration::from_secs(5),
            cluster: None,
            min_free_disk: MinFree::Auto,
            max_open_files: DEFAULT_MAX_OPEN_FILES,
        }
    }
}

/// Receives dead-letter outbox entries; returning `Ok` means they are durably stored, after
/// which the outbox cursor advances (through Raft) past them. Storing must be idempotent on
/// (station, group, offset): after a crash an entry may be handed over again.
pub trait OutboxSink: Send + Sync + 'static {
    fn deliver(&self, entries: &[OutboxEntry]) -> impl Future<Output = Result<(), String>> + Send;
}

/// What a fetch handed out, aligned: each delivery, its message and its sealed receipt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    pub deliveries: Vec<Delivery>,
    pub messages: Vec<StoredMessage>,
    pub receipts: Vec<SealedReceipt>,
}

struct Pending {
    command: Command,
    reply: oneshot::Sender<Result<Applied, BrokerError>>,
}

pub(crate) struct Inner {
    /// Replaced by [`supervisor::supervise_raft`] when a storage failure stops the Raft core.
    raft: RwLock<Raft>,
    /// What building a Raft core from disk takes, again after a storage failure.
    core: CoreSetup,
    /// Why the Raft core is down (a storage failure), while it is being rebuilt.
    fault: Mutex<Option<String>>,
    sm: StateMachine,
    node_id: NodeId,
    cluster_id: String,
    /// This node's own membership record.
    pub(crate) member: Member,
    pub(crate) directory: Arc<Directory>,
    pub(crate) cluster: Option<ClusterOptions>,
    pub(crate) leader_wait: Duration,
    commit_timeout: Duration,
    data_dir: PathBuf,
    proposals: Mutex<Option<mpsc::Sender<Pending>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Set when the server starts draining: long polls return at once, commands still run.
    draining: watch::Sender<bool>,
    clock: LeaderClock,
    /// Payload bytes proposed since the last snapshot was requested.
    unsnapshotted: AtomicU64,
    snapshot_bytes: u64,
    /// The exclusive lock on the data dir, held until shutdown (or the process ends).
    dir_lock: Mutex<Option<DirLock>>,
    disk: DiskWatch,
    /// The replicated receipt key once this node has seen it (it never changes once set).
    receipt_key: OnceLock<ReceiptKey>,
}

/// A handle to the running broker; clones share it.
#[derive(Clone)]
pub struct Broker {
    pub(crate) inner: Arc<Inner>,
}

/// The leader's clock: wall time in ms, never going backwards, stamped on every proposal.
struct LeaderClock {
    last: AtomicI64,
}

impl LeaderClock {
    fn now(&self) -> Millis {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis);
        let prev = self.last.fetch_max(wall, Ordering::AcqRel);
        prev.max(wall)
    }
}

fn storage(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Storage(e.to_string())
}

pub(crate) fn unavailable(reason: impl Into<String>) -> BrokerError {
    BrokerError::Unavailable { reason: reason.into(), retry_after: Duration::from_secs(1) }
}

/// What building a Raft core takes.
struct CoreSetup {
    config: Arc<Config>,
    log_dir: PathBuf,
    log: LogOptions,
}

impl Inner {
    /// The running Raft core (a cheap handle).
    pub(crate) fn raft(&self) -> Raft {
        self.raft.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The error for a request that reached a Raft core stopped by a storage failure: a full disk
    /// is `StorageFull`; anything else `Unavailable` while the core is rebuilt from disk.
    fn storage_failure(&self, detail: &str) -> BrokerError {
        // By the message: openraft's `AnyError` keeps a storage error's text but not its type, so
        // the `io::ErrorKind` is gone by here; `io::Error` always prints the errno ("os error 28").
        if detail.contains("No space left on device") || detail.contains("os error 28") {
            let space = self.disk.space().ok();
            return BrokerError::StorageFull {
                free_bytes: space.map_or(0, |s| s.free),
                min_free_bytes: space.map_or(0, |s| s.min_free),
            };
        }
        unavailable(format!("storage failure ({detail}); the node is rebuilding its Raft core from disk"))
    }
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
        let identity = crate::identity::establish(&dir, opts.node_id, opts.cluster_id.as_deref())?;
        let marker = dir.join(CLEAN_MARKER);
        let clean = marker.exists();
        if !clean {
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
        let sm = StateMachine::open(SmOptions::new(dir.join("sm"), opts.segment_bytes, verify, max_open_files))
            .map_err(storage)?;
        log.link_snapshot(sm.durable_snapshot());
        if clean {
            std::fs::remove_file(&marker).map_err(storage)?;
            crate::raft::fsync_dir(&dir).map_err(storage)?;
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
                .or_else(|| cluster.as_ref().map(|c| c.listen.to_string()))
                .unwrap_or_default(),
            api_addr: cluster.as_ref().map(|c| c.api_addr.clone()).unwrap_or_default(),
            incarnation: identity.incarnation.clone(),
        };
        let credentials = Credentials {
            cluster_id: identity.cluster_id.clone(),
            node_id: opts.node_id,
            proof: wire::secret_proof(cluster.as_ref().map_or("", |c| c.secret.as_str())),
        };
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

        let (tx, rx) = mpsc::channel(16_384);
        let (shutdown, _) = watch::channel(false);
        let (draining, _) = watch::channel(false);
        let disk = DiskWatch::new(&dir, opts.min_free_disk);
        let broker = Broker {
            inner: Arc::new(Inner {
                raft: RwLock::new(raft),
                core: CoreSetup { config, log_dir: dir.join("raft"), log: rebuild_log },
                fault: Mutex::new(None),
                sm,
                node_id,
                cluster_id: identity.cluster_id,
                member,
                directory,
                cluster: cluster.clone(),
                leader_wait: opts.leader_wait,
                commit_timeout: opts.commit_timeout,
                data_dir: dir,
                proposals: Mutex::new(Some(tx)),
                tasks: Mutex::new(Vec::new()),
                shutdown,
                draining,
                clock: LeaderClock { last: AtomicI64::new(0) },
                unsnapshotted: AtomicU64::new(0),
                snapshot_bytes: opts.snapshot_bytes,
                dir_lock: Mutex::new(Some(dir_lock)),
                disk,
                receipt_key: OnceLock::new(),
            }),
        };
        let proposer = tokio::spawn(run_proposer(broker.inner.clone(), rx, opts.proposals_in_flight.max(1)));
        let ticker = tokio::spawn(run_ticker(broker.clone()));
        let supervisor = tokio::spawn(supervisor::supervise_raft(broker.clone()));
        broker.track(proposer);
        broker.track(ticker);
        broker.track(supervisor);
        if let Some(cluster) = &cluster {
            if let Err(e) = crate::cluster::node::start(&broker, cluster, credentials, pristine).await {
                let _ = broker.shutdown().await;
                return Err(e);
            }
        }
        Ok(broker)
    }

    pub(crate) fn track(&self, task: JoinHandle<()>) {
        self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The id of the cluster this node's data dir belongs to.
    pub fn cluster_id(&self) -> &str {
        &self.inner.cluster_id
    }

    /// Whether the Raft group currently knows a leader (this node or, in a cluster, another).
    pub fn has_leader(&self) -> bool {
        self.inner.raft().metrics().borrow().current_leader.is_some()
    }

    /// The voting members of the cluster (1 for a cluster of one).
    pub fn voters(&self) -> usize {
        self.inner.raft().metrics().borrow().membership_config.membership().voter_ids().count()
    }

    /// Starts draining: waiting fetches return what they have (usually nothing) at once, so a
    /// server can finish in-flight long polls quickly; commands keep working until `shutdown`.
    pub fn begin_drain(&self) {
        self.inner.draining.send_replace(true);
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// The leader's current clock reading, as it would stamp a command now.
    pub fn now(&self) -> Millis {
        self.inner.clock.now()
    }

    /// Proposes `command` and waits until it is committed (fsynced on a majority) and applied,
    /// on this node if it leads, else forwarded to the leader. An outcome that refuses the
    /// command (`Outcome::Error`) comes back as `BrokerError::Command`.
    pub async fn submit(&self, command: Command) -> Result<Applied, BrokerError> {
        let applied = self.route(command).await?;
        match applied.outcome {
            Outcome::Error(e) => Err(e.into()),
            _ => Ok(applied),
        }
    }

    /// Sends `command` to the leader: proposed here if this node leads, else forwarded. While
    /// no leader is known, or the one known cannot be reached (nothing was sent), it waits for
    /// one up to `leader_wait`.
    async fn route(&self, command: Command) -> Result<Applied, BrokerError> {
        if self.inner.raft().metrics().borrow().current_leader == Some(self.inner.node_id) {
            return self.propose(command).await;
        }
        let forward = || Call::Submit(command.clone());
        let per_call = self.inner.commit_timeout + Duration::from_secs(2);
        match call_leader(self, forward, self.inner.leader_wait, per_call).await? {
            Routed::Here => self.propose(command).await,
            Routed::Answered(Reply::Submit(result)) => result,
            Routed::Answered(other) => Err(unexpected(other)),
        }
    }

    /// Proposes `command` through this node's Raft (which must lead) and waits for it to apply.
    /// New messages are refused while the disk is under its watermark.
    pub(crate) async fn propose(&self, command: Command) -> Result<Applied, BrokerError> {
        if matches!(command, Command::Produce { .. }) {
            self.inner.disk.check()?;
        }
        let sender = self.inner.proposals.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let sender = sender.ok_or(BrokerError::ShuttingDown)?;
        if let Some(fault) = self.inner.fault.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(self.inner.storage_failure(&fault));
        }
        let (reply, rx) = oneshot::channel();
        sender.send(Pending { command, reply }).await.map_err(|_| BrokerError::ShuttingDown)?;
        match tokio::time::timeout(self.inner.commit_timeout, rx).await {
            Ok(applied) => applied.map_err(|_| BrokerError::ShuttingDown)?,
            Err(_) => Err(unavailable(format!(
                "not committed within {:?} (no quorum?); the outcome is unknown, retry (idempotently)",
                self.inner.commit_timeout
            ))),
        }
    }

    /// A read barrier: returns once this node has applied everything committed before the call,
    /// so a read after it sees every write acknowledged before it. Free on a cluster of one; in a
    /// larger cluster the leader first confirms with a quorum that it still leads (else, after
    /// `leader_wait`, `Unavailable`).
    pub async fn barrier(&self) -> Result<(), BrokerError> {
        // After a storage failure reloaded the state from disk, it is behind what reads saw
        // before until the rebuilt Raft core re-applies the committed entries: wait for that.
        let floor = self.inner.sm.floor();
        if self.inner.sm.last_applied().map_or(0, |id| id.index) < floor {
            self.inner
                .raft()
                .wait(Some(self.inner.leader_wait))
                .applied_index_at_least(Some(floor), "re-applied after a storage failure")
                .await
                .map_err(|_| match self.storage_fault() {
                    Some(fault) => self.inner.storage_failure(&fault),
                    None => unavailable("the state is being re-applied after a storage failure"),
                })?;
        }
        if self.inner.cluster.is_none() {
            return Ok(());
        }
        let deadline = Instant::now() + self.inner.leader_wait;
        let index = crate::cluster::node::read_index(self, deadline).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        self.inner
            .raft()
            .wait(Some(left))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map(|_| ())
            .map_err(|e| unavailable(format!("did not catch up with the leader: {e}")))
    }

    /// Why the Raft core is down, while a storage failure keeps it from running (it is being
    /// rebuilt from disk); `None` when it runs.
    pub fn storage_fault(&self) -> Option<String> {
        self.inner.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Space on the data dir's file system, with the watermark it is held to.
    pub fn disk_space(&self) -> std::io::Result<Space> {
        self.inner.disk.space()
    }

    /// Station-log descriptors held open, against their cap.
    pub fn open_files(&self) -> crate::log::FileCacheStats {
        self.inner.sm.open_files()
    }

    /// Reads the replicated state as of the last applied entry.
    pub fn read<R>(&self, f: impl FnOnce(&BrokerState) -> R) -> R {
        self.inner.sm.read(f)
    }

    pub fn station(&self, station: &str) -> Result<StationView, BrokerError> {
        self.read(|s| s.station_view(station)).ok_or_else(|| CommandError::StationNotFound(station.into()).into())
    }

    pub fn stations(&self) -> Vec<StationView> {
        self.read(|s| s.list_stations())
    }

    pub fn group(&self, station: &str, group: &str) -> Result<GroupView, BrokerError> {
        Ok(self.read(|s| s.group_view(station, group))?)
    }

    pub fn dead_letters(&self, station: &str) -> Result<Vec<DeadLetterRecord>, BrokerError> {
        Ok(self.read(|s| s.dead_letters(station))?)
    }

    /// One retained message by offset (`None` once retention removed it).
    pub fn message(&self, station: &str, offset: u64) -> Result<Option<StoredMessage>, BrokerError> {
        if self.read(|s| s.station_id(station)).is_none() {
            return Err(CommandError::StationNotFound(station.into()).into());
        }
        self.inner.sm.read_message(station, offset).map_err(storage)
    }

    /// The key receipts are sealed with: the replicated one, or, before any node has needed
    /// one, a fresh key proposed now (if several nodes propose at once, the first applied wins
    /// and every proposer gets that one back).
    pub async fn receipt_key(&self) -> Result<ReceiptKey, BrokerError> {
        if let Some(key) = self.inner.receipt_key.get().copied().or_else(|| self.read(|s| s.receipt_key())) {
            return Ok(*self.inner.receipt_key.get_or_init(|| key));
        }
        match self.submit(Command::InitReceiptKey { key: ReceiptKey::generate() }).await?.outcome {
            Outcome::ReceiptKey(key) => Ok(*self.inner.receipt_key.get_or_init(|| key)),
            other => Err(BrokerError::Storage(format!("receipt key: unexpected outcome {other:?}"))),
        }
    }

    /// Settles receipts that a fetch sealed, each handed in for `group` of `station`: answers
    /// one result per receipt, in order. A receipt that does not open (sealed for another
    /// station or group, made up, tampered with, not a receipt at all) answers `Unknown` and is
    /// not proposed; one bound to an earlier incarnation of the station answers `Unknown` when
    /// the command applies. Unknown station or group: `CommandError`, even if nothing opens.
    pub async fn settle(
        &self,
        station: &str,
        group: &str,
        receipts: &[impl AsRef<[u8]>],
        op: SettleOp,
    ) -> Result<Vec<ReceiptResult>, BrokerError> {
        let key = self.receipt_key().await?;
        let opened: Vec<_> = receipts.iter().map(|r| receipt::open(&key, station, group, r.as_ref())).collect();
        let bound: Vec<_> = opened.iter().flatten().copied().collect();
        let mut answered = if bound.is_empty() {
            self.barrier().await?;
            self.group(station, group)?;
            Vec::new()
        } else {
            let command = Command::Settle { station: station.into(), group: group.into(), receipts: bound, op };
            match self.submit(command).await?.outcome {
                Outcome::Receipts(results) => results,
                other => return Err(BrokerError::Storage(format!("settle: unexpected outcome {other:?}"))),
            }
        }
        .into_iter();
        opened
            .iter()
            .map(|o| match o {
                None => Ok(ReceiptResult::Unknown),
                Some(_) => {
                    answered.next().ok_or_else(|| BrokerError::Storage("settle: fewer results than receipts".into()))
                }
            })
            .collect()
    }

    /// Fetches up to `max_messages`, waiting up to `wait` for at least one. Waiting costs no
    /// Raft traffic: the fetch is proposed only once the state says something is ready. Each
    /// delivery comes with its receipt sealed for this station incarnation and group.
    pub async fn fetch(
        &self,
        station: &str,
        group: &str,
        max_messages: u32,
        max_bytes: Option<u64>,
        wait: Duration,
    ) -> Result<Fetched, BrokerError> {
        let deadline = Instant::now() + wait;
        let mut changes = self.inner.sm.subscribe();
        let mut draining = self.inner.draining.subscribe();
        let mut synced = false;
        loop {
            let now = self.now();
            let ready = match self.read(|s| s.ready(station, group, now)) {
                Ok(ready) => ready,
                // A follower may not have applied the station's creation yet.
                Err(_) if self.inner.cluster.is_some() && !synced => {
                    self.barrier().await?;
                    synced = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if ready {
                // Before deliveries are taken, so that sealing them cannot fail.
                let key = self.receipt_key().await?;
                let command = Command::Fetch { station: station.into(), group: group.into(), max_messages, max_bytes };
                let fetched = seal(&key, station, group, self.submit(command).await?)?;
                if !fetched.deliveries.is_empty() || Instant::now() >= deadline {
                    return Ok(fetched);
                }
                // Another consumer took it first: wait for the next change rather than spin.
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() || *draining.borrow() {
                return Ok(Fetched::default());
            }
            let next_ready = self.read(|s| s.next_ready_at(station, group));
            let sleep = match next_ready {
                Some(at) => remaining.min(Duration::from_millis(at.saturating_sub(now).max(1) as u64)),
                None => remaining,
            };
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = draining.changed() => {}
            }
        }
    }

    /// Hands each outbox entry to `sink`, then advances the outbox cursor through Raft.
    pub fn spawn_outbox<S: OutboxSink>(&self, sink: S) {
        let broker = self.clone();
        let task = tokio::spawn(async move {
            let mut changes = broker.inner.sm.subscribe();
            let mut shutdown = broker.inner.shutdown.subscribe();
            let mut backoff = Duration::from_millis(50);
            loop {
                if *shutdown.borrow() {
                    return;
                }
                let leads = broker.inner.raft().metrics().borrow().current_leader == Some(broker.inner.node_id);
                let entries = if leads { broker.read(|s| s.outbox(512)) } else { Vec::new() };
                if let Some(last) = entries.last().map(|e| e.seq) {
                    match sink.deliver(&entries).await {
                        Ok(()) => {
                            backoff = Duration::from_millis(50);
                            if let Err(e) = broker.submit(Command::OutboxAdvance { upto: last }).await {
                                tracing::warn!(error = %e, "outbox: cursor not advanced; entries will be handed over again");
                            }
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "outbox: sink failed; retrying");
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
                let wait = if entries.is_empty() { Duration::from_secs(1) } else { backoff };
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
        });
        self.track(task);
    }

    /// Stops taking commands, finishes those in flight, stops Raft, fsyncs station logs and
    /// leaves the clean-shutdown marker. Safe to call more than once.
    pub async fn shutdown(&self) -> Result<(), BrokerError> {
        let sender = self.inner.proposals.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(sender);
        self.inner.draining.send_replace(true);
        self.inner.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        // A task waiting on a proposal that cannot commit (no quorum) would wait forever:
        // stopping Raft below answers such proposals, so give up on the task instead.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_TASK_WAIT;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        self.inner.raft().shutdown().await.map_err(storage)?;
        self.inner.directory.peers.close();
        self.inner.sm.close().map_err(storage)?;
        let marker = self.inner.data_dir.join(CLEAN_MARKER);
        std::fs::write(&marker, b"").map_err(storage)?;
        std::fs::File::open(&marker).and_then(|f| f.sync_all()).map_err(storage)?;
        crate::raft::fsync_dir(&self.inner.data_dir).map_err(storage)?;
        // Everything is on disk: another process may open the dir now.
        drop(self.inner.dir_lock.lock().unwrap_or_else(|p| p.into_inner()).take());
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

/// Seals the receipts of an applied `Fetch`.
fn seal(key: &ReceiptKey, station: &str, group: &str, applied: Applied) -> Result<Fetched, BrokerError> {
    let Outcome::Fetched(deliveries) = applied.outcome else {
        return Err(BrokerError::Storage(format!("fetch: unexpected outcome {:?}", applied.outcome)));
    };
    if deliveries.len() != applied.messages.len() {
        return Err(BrokerError::Storage("fetch answered deliveries and messages of different lengths".into()));
    }
    let receipts = match applied.station_id {
        Some(id) => deliveries.iter().map(|d| receipt::seal(key, id, station, group, d.receipt)).collect(),
        None if deliveries.is_empty() => Vec::new(),
        None => return Err(BrokerError::Storage("fetch: deliveries without a station".into())),
    };
    Ok(Fetched { deliveries, messages: applied.messages, receipts })
}

fn command_bytes(command: &Command) -> usize {
    match command {
        Command::Produce { messages, .. } => messages.iter().map(|m| m.payload.len() + 64).sum(),
        _ => 64,
    }
}

/// Group commit: while up to `in_flight` entries are being made durable, every command that
/// arrives waits in the channel, and the next entry carries all of them.
async fn run_proposer(inner: Arc<Inner>, mut rx: mpsc::Receiver<Pending>, in_flight: usize) {
    let permits = Arc::new(Semaphore::new(in_flight));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let Some(first) = rx.recv().await else { return };
        let mut bytes = command_bytes(&first.command);
        let mut batch = vec![first];
        while batch.len() < MAX_PROPOSAL_COMMANDS && bytes < MAX_PROPOSAL_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += command_bytes(&p.command);
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        if inner.unsnapshotted.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64 >= inner.snapshot_bytes {
            inner.unsnapshotted.store(0, Ordering::Relaxed);
            if let Err(e) = inner.raft().trigger().snapshot().await {
                tracing::warn!(error = %e, "snapshot not triggered");
            }
        }
        let now = inner.clock.now();
        let mut replies = Vec::with_capacity(batch.len());
        let mut envelopes = Vec::with_capacity(batch.len());
        for p in batch {
            envelopes.push(Envelope { now, command: p.command });
            replies.push(p.reply);
        }
        // Sent in order from this one task, so entries keep the order commands arrived in.
        let receiver = inner.raft().client_write_ff(Proposal { envelopes }).await;
        let inner = inner.clone();
        tokio::spawn(async move {
            let result = match receiver {
                Ok(rx) => match rx.await {
                    Ok(Ok(response)) => Ok(response.data.applied),
                    Ok(Err(e)) => Err(client_write_error(e)),
                    Err(_) => Err(unavailable("raft stopped before answering")),
                },
                Err(e) => Err(inner.storage_failure(&e.to_string())),
            };
            drop(permit);
            match result {
                Ok(applied) => {
                    for (reply, applied) in replies.into_iter().zip(applied) {
                        let _ = reply.send(Ok(applied));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

fn client_write_error(e: ClientWriteError<NodeId, Member>) -> BrokerError {
    match e {
        ClientWriteError::ForwardToLeader(f) => unavailable(format!("not the leader (leader: {:?})", f.leader_id)),
        ClientWriteError::ChangeMembershipError(e) => unavailable(e.to_string()),
    }
}

/// Proposes a `Tick` when the state says time-driven work is due, while this node leads.
async fn run_ticker(broker: Broker) {
    let mut shutdown = broker.inner.shutdown.subscribe();
    // The flag, not only the change notification, ends the loop: a notification can be consumed
    // by a wait that lost a select race.
    while !*shutdown.borrow() {
        let now = broker.now();
        let due = broker.read(|s| s.next_tick_at());
        let leads = broker.inner.raft().metrics().borrow().current_leader == Some(broker.inner.node_id);
        if leads && due.is_some_and(|at| at <= now) {
            match broker.submit(Command::Tick).await {
                Ok(_) | Err(BrokerError::Command(_)) => {}
                Err(BrokerError::ShuttingDown) => return,
                Err(e) => tracing::warn!(error = %e, "tick not applied"),
            }
        }
        let sleep = match due {
            Some(at) if at > now => Duration::from_millis((at - now) as u64).min(TICK_MAX_SLEEP),
            Some(_) => Duration::from_millis(5),
            None => TICK_MAX_SLEEP,
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.changed() => {}
        }
    }
}
