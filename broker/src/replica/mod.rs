//! This node's replica of the Raft group: the running Raft core, the state machine it applies
//! to, the proposer that batches commands into entries, the way to the leader, and the
//! background tasks that keep it going. The facade ([`crate::Broker`]) and the cluster jobs
//! ([`crate::cluster`]) both work through it; it calls neither of them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::ClientWriteError;
use openraft::Config;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::dir_lock::DirLock;
use crate::disk::DiskWatch;
use crate::error::BrokerError;
use crate::log::LogOptions;
use crate::net::Directory;
use crate::raft::state_machine::StateMachine;
use crate::raft::{Applied, Member, NodeId, Proposal, Raft};
use crate::receipt::ReceiptKey;
use crate::station::{BrokerState, Command, Envelope, Millis};

pub(crate) mod park;
pub(crate) mod replies;
mod route;
pub(crate) mod supervisor;
pub(crate) mod ticker;

pub(crate) use route::{call_leader, refused, unexpected, Routed};

/// Upper bounds of one Raft entry, so a burst of producers cannot build an unbounded entry.
const MAX_PROPOSAL_COMMANDS: usize = 4096;
const MAX_PROPOSAL_BYTES: usize = 32 << 20;

pub(crate) struct Pending {
    command: Command,
    reply: replies::Reply,
    /// Where the answer goes: the proposing thread's mailbox, if it serves one.
    mailbox: Option<Arc<replies::Mailbox>>,
}

impl Pending {
    /// A proposal of `command` from the calling thread.
    pub(crate) fn new(command: Command, reply: replies::Reply) -> Pending {
        Pending { command, reply, mailbox: replies::this_thread() }
    }
}

/// What building a Raft core takes (again after a storage failure).
pub(crate) struct CoreSetup {
    pub(crate) config: Arc<Config>,
    pub(crate) log_dir: PathBuf,
    pub(crate) log: LogOptions,
}

pub(crate) struct Replica {
    /// Replaced by [`supervisor::supervise_raft`] when a storage failure stops the Raft core.
    pub(crate) raft: RwLock<Raft>,
    pub(crate) core: CoreSetup,
    /// Why the Raft core is down (a storage failure), while it is being rebuilt.
    pub(crate) fault: Mutex<Option<String>>,
    pub(crate) sm: StateMachine,
    /// What the tiering uploader reports; `None` when tiering is off.
    pub(crate) tier: Option<crate::tier::uploader::StatusCell>,
    /// Reads tiered messages whose local copies were deleted; `None` when tiering is off.
    pub(crate) tier_reader: Option<Arc<crate::tier::TierReader>>,
    pub(crate) node_id: NodeId,
    pub(crate) cluster_id: String,
    /// This node's own membership record.
    pub(crate) member: Member,
    pub(crate) directory: Arc<Directory>,
    /// This node serves a cluster port (it may have peers), so reads need the leader's word.
    pub(crate) clustered: bool,
    /// A member's start: which peers answer until it knows a leader; `None` for a cluster of one.
    pub(crate) startup: Option<crate::cluster::progress::StartupProgress>,
    pub(crate) leader_wait: Duration,
    pub(crate) commit_timeout: Duration,
    pub(crate) data_dir: PathBuf,
    pub(crate) proposals: Mutex<Option<mpsc::Sender<Pending>>>,
    /// Long polls waiting for messages; the proposer adds them to entries that store some.
    pub(crate) parked: Arc<park::ParkedFetches>,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Set when the server starts draining: long polls return at once, commands still run.
    pub(crate) draining: watch::Sender<bool>,
    pub(crate) clock: LeaderClock,
    /// Payload bytes proposed since the last snapshot was requested.
    pub(crate) unsnapshotted: AtomicU64,
    pub(crate) snapshot_bytes: u64,
    /// The exclusive lock on the data dir, held until shutdown (or the process ends).
    pub(crate) dir_lock: Mutex<Option<DirLock>>,
    pub(crate) disk: DiskWatch,
    /// The replicated receipt key once this node has seen it (it never changes once set).
    pub(crate) receipt_key: OnceLock<ReceiptKey>,
    /// Times the leader this node knows of became a different node (the first one it learns of
    /// counts); kept by [`supervisor::supervise_raft`], which sees every change of the metrics.
    pub(crate) leader_changes: AtomicU64,
}

/// The leader's clock: wall time in ms, never going backwards, stamped on every proposal.
pub(crate) struct LeaderClock {
    last: AtomicI64,
}

impl LeaderClock {
    pub(crate) fn new() -> LeaderClock {
        LeaderClock { last: AtomicI64::new(0) }
    }

    pub(crate) fn now(&self) -> Millis {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis);
        let prev = self.last.fetch_max(wall, Ordering::AcqRel);
        prev.max(wall)
    }
}

pub(crate) fn storage(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Storage(e.to_string())
}

pub(crate) fn unavailable(reason: impl Into<String>) -> BrokerError {
    BrokerError::Unavailable { reason: reason.into(), retry_after: Duration::from_secs(1) }
}

impl Replica {
    /// The running Raft core (a cheap handle).
    pub(crate) fn raft(&self) -> Raft {
        self.raft.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn leads(&self) -> bool {
        self.raft().metrics().borrow().current_leader == Some(self.node_id)
    }

    pub(crate) fn track(&self, task: JoinHandle<()>) {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
    }

    /// Reads the replicated state as of the last applied entry.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&BrokerState) -> R) -> R {
        self.sm.read(f)
    }

    /// Bytes old enough to tier that the bucket does not have yet (the leader's figure).
    fn tier_lag_bytes(&self) -> u64 {
        self.tier.as_ref().map_or(0, |cell| cell.lock().lag_bytes)
    }

    /// A produce refused under the disk watermark. Tiering counts twice here: the refusal says
    /// how much local data waits for the bucket, and local copies that are already in the
    /// bucket are freed at once (a snapshot is asked for) instead of at the next snapshot.
    fn disk_low(&self, e: BrokerError) -> BrokerError {
        let BrokerError::StorageFull { free_bytes, min_free_bytes, .. } = e else { return e };
        if self.sm.freeable_tiered_bytes() > 0 {
            let raft = self.raft();
            tokio::spawn(async move {
                if let Err(e) = raft.trigger().snapshot().await {
                    tracing::debug!(error = %e, "snapshot to free tiered segments not triggered");
                }
            });
        }
        BrokerError::StorageFull { free_bytes, min_free_bytes, tier_lag_bytes: self.tier_lag_bytes() }
    }

    pub(crate) fn storage_fault(&self) -> Option<String> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The error for a request that reached a Raft core stopped by a storage failure: a full disk
    /// is `StorageFull`; anything else `Unavailable` while the core is rebuilt from disk.
    pub(crate) fn storage_failure(&self, detail: &str) -> BrokerError {
        // By the message: openraft's `AnyError` keeps a storage error's text but not its type, so
        // the `io::ErrorKind` is gone by here; `io::Error` always prints the errno ("os error 28").
        if detail.contains("No space left on device") || detail.contains("os error 28") {
            let space = self.disk.space().ok();
            return BrokerError::StorageFull {
                free_bytes: space.map_or(0, |s| s.free),
                min_free_bytes: space.map_or(0, |s| s.min_free),
                tier_lag_bytes: self.tier_lag_bytes(),
            };
        }
        unavailable(format!("storage failure ({detail}); the node is rebuilding its Raft core from disk"))
    }

    /// Proposes `command` through this node's Raft (which must lead) and waits for it to apply.
    /// New messages are refused while the disk is under its watermark. A fetch's messages are
    /// read here, on the node that proposed it, after the apply (which only decides deliveries).
    pub(crate) async fn propose(&self, command: Command) -> Result<Applied, BrokerError> {
        if matches!(command, Command::Produce { .. } | Command::Ingest { .. }) {
            if let Err(e) = self.disk.check() {
                return Err(self.disk_low(e));
            }
        }
        let sender = self.proposals.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let sender = sender.ok_or(BrokerError::ShuttingDown)?;
        if let Some(fault) = self.storage_fault() {
            return Err(self.storage_failure(&fault));
        }
        let (reply, rx) = oneshot::channel();
        sender.send(Pending::new(command, reply)).await.map_err(|_| BrokerError::ShuttingDown)?;
        self.answer(rx).await
    }

    /// What a proposed command came to, once its entry is applied: a fetch's messages are read
    /// here, on the node that proposed it (the apply only decides deliveries).
    pub(crate) async fn answer(
        &self,
        rx: impl std::future::Future<Output = Result<Result<Applied, BrokerError>, oneshot::error::RecvError>>,
    ) -> Result<Applied, BrokerError> {
        let mut applied = match tokio::time::timeout(self.commit_timeout, rx).await {
            Ok(applied) => applied.map_err(|_| BrokerError::ShuttingDown)??,
            Err(_) => {
                return Err(unavailable(format!(
                    "not committed within {:?} (no quorum?); the outcome is unknown, retry (idempotently)",
                    self.commit_timeout
                )))
            }
        };
        let tiered = self.sm.read_fetched(&mut applied).map_err(storage)?;
        crate::tier::fill::fill(self.tier_reader.as_deref(), &mut applied.messages, tiered).await?;
        Ok(applied)
    }

    /// Starts the proposer; commands reach it through [`Replica::propose`].
    pub(crate) fn start_proposer(self: &Arc<Replica>, in_flight: usize) {
        let (tx, rx) = mpsc::channel(16_384);
        *self.proposals.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        self.track(tokio::spawn(run_proposer(self.clone(), rx, in_flight.max(1))));
    }
}

fn command_bytes(command: &Command) -> usize {
    match command.new_messages() {
        [] => 64,
        messages => messages.iter().map(|m| m.payload.len() + 64).sum(),
    }
}

/// Batching proposals: while up to `in_flight` entries are being made durable, every command
/// that arrives waits in the channel, and the next entry carries all of them. (The fsyncs of
/// those entries are batched again below, by the Raft log's `log::group_commit`.)
async fn run_proposer(replica: Arc<Replica>, mut rx: mpsc::Receiver<Pending>, in_flight: usize) {
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
        if replica.unsnapshotted.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64 >= replica.snapshot_bytes {
            replica.unsnapshotted.store(0, Ordering::Relaxed);
            if let Err(e) = replica.raft().trigger().snapshot().await {
                tracing::warn!(error = %e, "snapshot not triggered");
            }
        }
        // Long polls waiting on the stations this entry writes to ride in it, after the writes.
        let carried = replica
            .parked
            .carry(&batch, |source| replica.read(|s| s.source(source).map(|source| source.config.station.clone())));
        batch.extend(carried);
        let now = replica.clock.now();
        let mut replies = Vec::with_capacity(batch.len());
        let mut envelopes = Vec::with_capacity(batch.len());
        for p in batch {
            envelopes.push(Envelope { now, command: p.command });
            replies.push((p.reply, p.mailbox));
        }
        // Sent in order from this one task, so entries keep the order commands arrived in.
        let receiver = replica.raft().client_write_ff(Proposal { envelopes: envelopes.into() }).await;
        let replica = replica.clone();
        tokio::spawn(async move {
            let result = match receiver {
                Ok(rx) => match rx.await {
                    Ok(Ok(response)) => Ok(response.data.applied),
                    Ok(Err(e)) => Err(client_write_error(e)),
                    Err(_) => Err(unavailable("raft stopped before answering")),
                },
                Err(e) => Err(replica.storage_failure(&e.to_string())),
            };
            drop(permit);
            match result {
                Ok(applied) => {
                    for ((reply, mailbox), applied) in replies.into_iter().zip(applied) {
                        replies::answer(mailbox.as_deref(), reply, Ok(applied));
                    }
                }
                Err(e) => {
                    for (reply, mailbox) in replies {
                        replies::answer(mailbox.as_deref(), reply, Err(e.clone()));
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
