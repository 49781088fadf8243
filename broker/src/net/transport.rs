//! Connections between nodes: one multiplexed TCP connection per peer, dialed on demand and
//! authenticated with the cluster secret, and the listener that serves the other nodes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::rpc::{self, Call, Hello, Reply, Welcome, GROUP, PROTOCOL};
use crate::raft::NodeId;

/// How long a dial and its handshake may take. Short: a peer that does not answer within it is
/// treated as down, and openraft retries.
const DIAL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a listener waits for a dialer's [`Hello`].
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Who this node is on the wire.
#[derive(Clone)]
pub struct Credentials {
    pub cluster_id: String,
    pub node_id: NodeId,
    pub proof: [u8; 32],
}

/// The dialing side: a connection per peer, reused by every call to that peer.
pub struct Peers {
    me: Credentials,
    slots: Mutex<HashMap<NodeId, Slot>>,
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
        Peers { me, slots: Mutex::new(HashMap::new()) }
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
        let (read, write) = stream.into_split();
        let mut read = BufReader::with_capacity(64 << 10, read);
        let mut write = BufWriter::with_capacity(64 << 10, write);
        let hello = Hello {
            protocol: PROTOCOL,
            cluster_id: self.me.cluster_id.clone(),
            from: self.me.node_id,
            to,
            proof: self.me.proof,
        };
        rpc::write_frame(&mut write, &hello).await.map_err(|e| unreachable(e.to_string()))?;
        match rpc::read_frame::<_, Welcome>(&mut read).await.map_err(|e| unreachable(e.to_string()))? {
            Welcome::Accepted => {}
            Welcome::Refused(reason) => return Err(unreachable(format!("refused: {reason}"))),
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

/// Accepts connections until `stop` turns true. Each connection must open with a [`Hello`]
/// carrying this cluster's id, this node's id and the secret's proof; anything else is refused
/// with the reason and closed.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    me: Credentials,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
) {
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
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, me, handler, stop).await {
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
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut read = BufReader::with_capacity(64 << 10, read);
    let mut write = BufWriter::with_capacity(64 << 10, write);
    let hello: Hello = tokio::time::timeout(HELLO_TIMEOUT, rpc::read_frame(&mut read))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no hello"))??;
    if let Some(reason) = refusal(&hello, &me) {
        tracing::warn!(from = hello.from, %reason, "cluster connection refused");
        rpc::write_frame(&mut write, &Welcome::Refused(reason.clone())).await?;
        return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, reason));
    }
    rpc::write_frame(&mut write, &Welcome::Accepted).await?;
    let from = hello.from;
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

fn refusal(hello: &Hello, me: &Credentials) -> Option<String> {
    if !rpc::constant_time_eq(&hello.proof, &me.proof) {
        return Some("wrong cluster secret".into());
    }
    if hello.protocol != PROTOCOL {
        return Some(format!("protocol {} spoken, {PROTOCOL} expected", hello.protocol));
    }
    if hello.cluster_id != me.cluster_id {
        return Some(format!(
            "node {} belongs to cluster {}, this node (node {}) to cluster {}",
            hello.from, hello.cluster_id, me.node_id, me.cluster_id
        ));
    }
    if hello.to != me.node_id {
        return Some(format!("this is node {}, not node {}", me.node_id, hello.to));
    }
    None
}
