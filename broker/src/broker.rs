//! The facade the gateway uses: submit a command and await its applied outcome; read views;
//! wait for messages without busy polling; pump the dead-letter outbox.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::ClientWriteError;
use openraft::{BasicNode, Config, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::error::BrokerError;
use crate::log::Verify;
use crate::raft::log_store::LogStore;
use crate::raft::network::NoPeers;
use crate::raft::state_machine::{SmOptions, StateMachine};
use crate::raft::{Applied, NodeId, Proposal, Raft, StoredMessage};
use crate::station::{
    BrokerState, Command, CommandError, DeadLetterRecord, Envelope, GroupView, Millis, OutboxEntry, Outcome,
    StationView,
};

pub(crate) const CLEAN_MARKER: &str = "clean-shutdown";
/// Upper bounds of one Raft entry, so a burst of producers cannot build an unbounded entry.
const MAX_PROPOSAL_COMMANDS: usize = 4096;
const MAX_PROPOSAL_BYTES: usize = 32 << 20;
/// How far the ticker may sleep past due work; expirations are also applied lazily by Fetch.
const TICK_MAX_SLEEP: Duration = Duration::from_millis(100);

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
            proposals_in_flight: 1,
            leader_wait: Duration::from_secs(5),
            preallocate_raft_log: false,
        }
    }
}

/// Receives dead-letter outbox entries; returning `Ok` means they are durably stored, after
/// which the outbox cursor advances (through Raft) past them. Storing must be idempotent on
/// (station, group, offset): after a crash an entry may be handed over again.
pub trait OutboxSink: Send + Sync + 'static {
    fn deliver(&self, entries: &[OutboxEntry]) -> impl Future<Output = Result<(), String>> + Send;
}

struct Pending {
    command: Command,
    reply: oneshot::Sender<Result<Applied, BrokerError>>,
}

struct Inner {
    raft: Raft,
    sm: StateMachine,
    node_id: NodeId,
    cluster_id: String,
    data_dir: PathBuf,
    proposals: Mutex<Option<mpsc::Sender<Pending>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    shutdown: watch::Sender<bool>,
    /// Set when the server starts draining: long polls return at once, commands still run.
    draining: watch::Sender<bool>,
    clock: LeaderClock,
    /// Payload bytes proposed since the last snapshot was requested.
    unsnapshotted: AtomicU64,
    snapshot_bytes: u64,
}

/// A handle to the running broker; clones share it.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
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

fn unavailable(reason: impl Into<String>) -> BrokerError {
    BrokerError::Unavailable { reason: reason.into(), retry_after: Duration::from_secs(1) }
}

impl Broker {
    /// Opens (or creates) the data dir, recovers, and returns once this node leads and has
    /// applied everything its log held, so no read sees less than was acknowledged before.
    pub async fn open(opts: BrokerOptions) -> Result<Broker, BrokerError> {
        let dir = opts.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(storage)?;
        // Before anything else touches the dir: a refused one is left exactly as it was.
        let identity = crate::identity::establish(&dir, opts.node_id, opts.cluster_id.as_deref())?;
        let marker = dir.join(CLEAN_MARKER);
        let clean = marker.exists();
        if clean {
            std::fs::remove_file(&marker).map_err(storage)?;
            crate::raft::fsync_dir(&dir).map_err(storage)?;
        } else {
            tracing::info!(dir = %dir.display(), "no clean-shutdown marker: verifying every checksum");
        }
        let verify = if clean { Verify::Tail } else { Verify::Full };
        let log = LogStore::open(&dir.join("raft"), opts.segment_bytes, verify, opts.preallocate_raft_log)
            .map_err(storage)?;
        let sm = StateMachine::open(SmOptions { dir: dir.join("sm"), segment_bytes: opts.segment_bytes, verify })
            .map_err(storage)?;
        let recover_to = log.last_index();

        let config = Config {
            cluster_name: "depot".into(),
            heartbeat_interval: 50,
            election_timeout_min: 150,
            election_timeout_max: 300,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_every),
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(storage)?);
        let raft = Raft::new(opts.node_id, config, NoPeers, log, sm.clone()).await.map_err(storage)?;
        if !raft.is_initialized().await.map_err(storage)? {
            let members = BTreeMap::from([(opts.node_id, BasicNode::default())]);
            raft.initialize(members).await.map_err(storage)?;
        }
        let node_id = opts.node_id;
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

        let (tx, rx) = mpsc::channel(16_384);
        let (shutdown, _) = watch::channel(false);
        let (draining, _) = watch::channel(false);
        let broker = Broker {
            inner: Arc::new(Inner {
                raft,
                sm,
                node_id,
                cluster_id: identity.cluster_id,
                data_dir: dir,
                proposals: Mutex::new(Some(tx)),
                tasks: Mutex::new(Vec::new()),
                shutdown,
                draining,
                clock: LeaderClock { last: AtomicI64::new(0) },
                unsnapshotted: AtomicU64::new(0),
                snapshot_bytes: opts.snapshot_bytes,
            }),
        };
        let proposer = tokio::spawn(run_proposer(broker.inner.clone(), rx, opts.proposals_in_flight.max(1)));
        let ticker = tokio::spawn(run_ticker(broker.clone()));
        broker.track(proposer);
        broker.track(ticker);
        Ok(broker)
    }

    fn track(&self, task: JoinHandle<()>) {
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
        self.inner.raft.metrics().borrow().current_leader.is_some()
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

    /// Proposes `command` and waits until it is committed (fsynced) and applied. An outcome
    /// that refuses the command (`Outcome::Error`) comes back as `BrokerError::Command`.
    pub async fn submit(&self, command: Command) -> Result<Applied, BrokerError> {
        let sender = self.inner.proposals.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let sender = sender.ok_or(BrokerError::ShuttingDown)?;
        let (reply, rx) = oneshot::channel();
        sender.send(Pending { command, reply }).await.map_err(|_| BrokerError::ShuttingDown)?;
        let applied = rx.await.map_err(|_| BrokerError::ShuttingDown)??;
        match applied.outcome {
            Outcome::Error(e) => Err(e.into()),
            _ => Ok(applied),
        }
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

    /// Fetches up to `max_messages`, waiting up to `wait` for at least one. Waiting costs no
    /// Raft traffic: the fetch is proposed only once the state says something is ready.
    pub async fn fetch(
        &self,
        station: &str,
        group: &str,
        max_messages: u32,
        max_bytes: Option<u64>,
        wait: Duration,
    ) -> Result<Applied, BrokerError> {
        let deadline = Instant::now() + wait;
        let mut changes = self.inner.sm.subscribe();
        let mut draining = self.inner.draining.subscribe();
        loop {
            let now = self.now();
            let ready = self.read(|s| s.ready(station, group, now))?;
            if ready {
                let command = Command::Fetch { station: station.into(), group: group.into(), max_messages, max_bytes };
                let applied = self.submit(command).await?;
                if matches!(&applied.outcome, Outcome::Fetched(d) if !d.is_empty()) || Instant::now() >= deadline {
                    return Ok(applied);
                }
                // Another consumer took it first: wait for the next change rather than spin.
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() || *draining.borrow() {
                return Ok(Applied { outcome: Outcome::Fetched(Vec::new()), messages: Vec::new() });
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
                let entries = broker.read(|s| s.outbox(512));
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
        for task in tasks {
            let _ = task.await;
        }
        self.inner.raft.shutdown().await.map_err(storage)?;
        self.inner.sm.close().map_err(storage)?;
        let marker = self.inner.data_dir.join(CLEAN_MARKER);
        std::fs::write(&marker, b"").map_err(storage)?;
        std::fs::File::open(&marker).and_then(|f| f.sync_all()).map_err(storage)?;
        crate::raft::fsync_dir(&self.inner.data_dir).map_err(storage)
    }
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
            if let Err(e) = inner.raft.trigger().snapshot().await {
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
        let receiver = inner.raft.client_write_ff(Proposal { envelopes }).await;
        tokio::spawn(async move {
            let result = match receiver {
                Ok(rx) => match rx.await {
                    Ok(Ok(response)) => Ok(response.data.applied),
                    Ok(Err(e)) => Err(client_write_error(e)),
                    Err(_) => Err(unavailable("raft stopped before answering")),
                },
                Err(e) => Err(storage(e)),
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

fn client_write_error(e: ClientWriteError<NodeId, BasicNode>) -> BrokerError {
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
        let leads = broker.inner.raft.metrics().borrow().current_leader == Some(broker.inner.node_id);
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
