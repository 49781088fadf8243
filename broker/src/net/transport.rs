//! Connections between nodes: one multiplexed TCP connection per peer, dialed on demand and
//! authenticated by the handshake of [`super::handshake`], and the listener that serves the
//! other nodes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::handshake::{self, HandshakeError, HANDSHAKE_TIMEOUT};
use super::rpc::{self, Call, Reply, GROUP};
use crate::raft::NodeId;

pub use super::handshake::Credentials;

/// How long a dial and its handshake may take. Short: a peer that does not answer within it is
/// treated as down, and openraft retries.
const DIAL_TIMEOUT: Duration = Duration::from_millis(500);
/// The two directions of a connection, plain TCP or TLS alike.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Splits `stream`, which is TCP or TLS, for a reader and a writer task.
fn halves<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) -> (ReadHalf, WriteHalf) {
    let (read, write) = tokio::io::split(stream);
    (Box::new(read), Box::new(write))
}

/// A handshake refused for the same reason by (or to) the same node is logged once per this
/// long: openraft and the probes retry several times a second.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing was sent: the peer could not be reached (or refused the handshake).
    #[error("node {0} is unreachable: {1}")]
    Unreachable(NodeId, String),
    /// The call was sent, but the connection failed or the deadline passed before an answer:
    /// its effect is unknown.
    #[error("node {0} did not answer: {1}")]
    NoAnswer(NodeId, String),
}

/// Which handshake refusals were logged lately, so that a misconfigured node shows up in the
/// log without flooding it.
#[derive(Default)]
struct Refusals(Mutex<HashMap<(NodeId, String), Instant>>);

impl Refusals {
    /// Whether this refusal was not logged within [`REFUSAL_LOG_EVERY`] (and records it now).
    fn worth_logging(&self, peer: NodeId, reason: &str) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Dialers choose the node id they claim: bounded, whatever they send.
        if seen.len() >= 1024 {
            seen.retain(|_, at| now.duration_since(*at) < REFUSAL_LOG_EVERY);
            if seen.len() >= 1024 {
                seen.clear();
            }
        }
        match seen.get_mut(&(peer, reason.to_owned())) {
            Some(at) if now.duration_since(*at) < REFUSAL_LOG_EVERY => false,
            Some(at) => {
                *at = now;
                true
            }
            None => {
                seen.insert((peer, reason.to_owned()), now);
                true
            }
        }
    }
}

/// The dialing side: a connection per peer, reused by every call to that peer.
pub struct Peers {
    me: Credentials,
    slots: Mutex<HashMap<NodeId, Slot>>,
    refusals: Refusals,
}

/// The connection to one peer; the async lock makes concurrent callers share one dial.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>;

struct Conn {
    frames: mpsc::UnboundedSender<Vec<u8>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next: AtomicU64,
    dead: AtomicBool,
    /// The reader and writer tasks, stopped with the connection (which closes the socket and
    /// drops whatever was still queued for it).
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Conn {
    fn fail_all(&self) {
        self.dead.store(true, Ordering::Release);
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
        for task in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.fail_all();
    }
}

impl Peers {
    pub fn new(me: Credentials) -> Peers {
        Peers { me, slots: Mutex::new(HashMap::new()), refusals: Refusals::default() }
    }

    /// Sends `call` to node `to` at `addr` and waits up to `timeout` for its reply.
    pub async fn call(&self, to: NodeId, addr: &str, call: Call, timeout: Duration) -> Result<Reply, CallError> {
        let conn = tokio::time::timeout(timeout, self.connection(to, addr))
            .await
            .map_err(|_| CallError::Unreachable(to, format!("no connection to {addr} within {timeout:?}")))??;
        let id = conn.next.fetch_add(1, Ordering::Relaxed);
        let frame = rpc::encode(&(id, GROUP, call)).map_err(|e| CallError::Unreachable(to, e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        if conn.frames.send(frame).is_err() || conn.dead.load(Ordering::Acquire) {
            conn.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            return Err(CallError::Unreachable(to, "connection closed".into()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(CallError::NoAnswer(to, "connection lost".into())),
            Err(_) => {
                // The peer is stalled (paused, overloaded, or cut off without a reset). Calls
                // queued behind this one would only add to the backlog a stalled peer has to
                // read, and openraft retries a timed-out append in full: start over on a new
                // connection instead.
                conn.fail_all();
                Err(CallError::NoAnswer(to, format!("no answer within {timeout:?}")))
            }
        }
    }

    /// Drops every connection (calls in flight keep theirs until they finish).
    pub fn close(&self) {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    async fn connection(&self, to: NodeId, addr: &str) -> Result<Arc<Conn>, CallError> {
        let slot = self.slots.lock().unwrap_or_else(|p| p.into_inner()).entry(to).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.dead.load(Ordering::Acquire)) {
            return Ok(conn.clone());
        }
        *slot = None;
        let conn = tokio::time::timeout(DIAL_TIMEOUT, self.dial(to, addr))
            .await
            .map_err(|_| CallError::Unreachable(to, format!("{addr}: no handshake within {DIAL_TIMEOUT:?}")))??;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn dial(&self, to: NodeId, addr: &str) -> Result<Arc<Conn>, CallError> {
        let unreachable = |e: String| CallError::Unreachable(to, format!("{addr}: {e}"));
        let stream = TcpStream::connect(addr).await.map_err(|e| unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let ((read, write), binding) = match &self.me.tls {
            None => {
                let (read, write) = stream.into_split();
                let plain: (ReadHalf, WriteHalf) = (Box::new(read), Box::new(write));
                (plain, Vec::new())
            }
            Some(tls) => match tls.connect(addr, stream).await {
                Ok((stream, binding)) => (halves(stream), binding.to_vec()),
                Err(e) => {
                    let reason = format!("TLS: {e}");
                    if self.refusals.worth_logging(to, &reason) {
                        tracing::warn!(node = to, %addr, %reason, "cluster handshake failed: no connection to this node");
                    }
                    return Err(unreachable(reason));
                }
            },
        };
        let mut read = BufReader::with_capacity(64 << 10, read);
        let mut write = BufWriter::with_capacity(64 << 10, write);
        match handshake::dial(&mut read, &mut write, &self.me, to, &binding).await {
            Ok(()) => {}
            Err(HandshakeError::Io(e)) => return Err(unreachable(e.to_string())),
            Err(e) => {
                let reason = e.to_string();
                if self.refusals.worth_logging(to, &reason) {
                    tracing::warn!(node = to, %addr, %reason, "cluster handshake failed: no connection to this node");
                }
                return Err(unreachable(reason));
            }
        }
        let (frames, mut outgoing) = mpsc::unbounded_channel::<Vec<u8>>();
        let conn = Arc::new(Conn {
            frames,
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            dead: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
        });
        // The tasks hold the connection weakly: once no slot or caller holds it, the writer's
        // queue closes, the socket is shut and the reader sees the end.
        let writer_conn = Arc::downgrade(&conn);
        let writer = tokio::spawn(async move {
            while let Some(frame) = outgoing.recv().await {
                if write.write_all(&frame).await.is_err() {
                    break;
                }
                // Everything already queued goes out with this flush.
                let mut ok = true;
                while let Ok(frame) = outgoing.try_recv() {
                    if write.write_all(&frame).await.is_err() {
                        ok = false;
                        break;
                    }
                }
                if !ok || write.flush().await.is_err() {
                    break;
                }
            }
            if let Some(conn) = writer_conn.upgrade() {
                conn.fail_all();
            }
        });
        let reader_conn: Weak<Conn> = Arc::downgrade(&conn);
        let reader = tokio::spawn(async move {
            while let Ok((id, reply)) = rpc::read_frame::<_, (u64, Reply)>(&mut read).await {
                let Some(conn) = reader_conn.upgrade() else { return };
                let waiter = conn.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(reply);
                }
            }
            if let Some(conn) = reader_conn.upgrade() {
                conn.fail_all();
            }
        });
        conn.tasks.lock().unwrap_or_else(|p| p.into_inner()).extend([writer.abort_handle(), reader.abort_handle()]);
        Ok(conn)
    }
}

/// Answers calls from other nodes.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, from: NodeId, call: Call) -> impl Future<Output = Reply> + Send;
}

/// Accepts connections until `stop` turns true. Each connection must open with the handshake
/// ([`handshake::accept`]): a dialer that does not prove the cluster secret, or means another
/// cluster or node, is refused with the reason and closed.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    me: Credentials,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
) {
    let refusals = Arc::new(Refusals::default());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cluster listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let me = me.clone();
        let handler = handler.clone();
        let stop = stop.clone();
        let refusals = refusals.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, me, handler, stop, &refusals).await {
                tracing::debug!(%peer, error = %e, "cluster connection closed");
            }
        });
    }
}

async fn serve_connection<H: Handler>(
    stream: TcpStream,
    me: Credentials,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
    refusals: &Refusals,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let peer_addr = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let started = tokio::time::Instant::now();
    let ((read, write), binding) = match &me.tls {
        None => {
            let (read, write) = stream.into_split();
            let plain: (ReadHalf, WriteHalf) = (Box::new(read), Box::new(write));
            (plain, Vec::new())
        }
        Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
            Ok(Ok((stream, binding))) => (halves(stream), binding.to_vec()),
            Ok(Err(e)) => {
                // The dialer's node id is not known yet: one line per reason.
                let reason = format!("TLS: {e}");
                if refusals.worth_logging(0, &reason) {
                    tracing::warn!(%peer_addr, %reason, "cluster connection refused");
                }
                return Err(e);
            }
            Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no TLS handshake")),
        },
    };
    let mut read = BufReader::with_capacity(64 << 10, read);
    let mut write = BufWriter::with_capacity(64 << 10, write);
    let left = HANDSHAKE_TIMEOUT.saturating_sub(started.elapsed());
    let from = match handshake::accept(&mut read, &mut write, &me, &binding, left).await {
        Ok(from) => from,
        Err(HandshakeError::Io(e)) => return Err(e),
        Err(HandshakeError::Refused { peer, reason }) => {
            if refusals.worth_logging(peer, &reason) {
                tracing::warn!(node = peer, %peer_addr, %reason, "cluster connection refused");
            }
            return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, reason));
        }
        Err(e) => return Err(std::io::Error::other(e)),
    };
    let (replies, mut outgoing) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            write.write_all(&frame).await?;
            while let Ok(frame) = outgoing.try_recv() {
                write.write_all(&frame).await?;
            }
            write.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    });
    loop {
        let frame = tokio::select! {
            f = rpc::read_frame::<_, (u64, u64, Call)>(&mut read) => f,
            _ = stop.changed() => break,
        };
        let Ok((id, group, call)) = frame else { break };
        let handler = handler.clone();
        let replies = replies.clone();
        tokio::spawn(async move {
            let reply = if group == GROUP {
                handler.handle(from, call).await
            } else {
                Reply::Refused(format!("unknown raft group {group}"))
            };
            match rpc::encode(&(id, reply)) {
                Ok(frame) => {
                    let _ = replies.send(frame);
                }
                Err(e) => tracing::error!(error = %e, "cluster reply not encodable"),
            }
        });
    }
    drop(replies);
    writer.abort();
    Ok(())
}
