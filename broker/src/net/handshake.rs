//! How two nodes prove to each other that they share the cluster secret, once per connection,
//! before any call crosses it.
//!
//! ```text
//! dialer                                             listener
//!   Hello { protocol, cluster_id, from, to, nonce_d } ->
//!                                                    <- Challenge::Nonce(nonce_l)
//!   Proof(HMAC(k, "dialer" ‖ transcript))             ->
//!                                                    <- Welcome::Accepted(HMAC(k, "listener" ‖ transcript))
//! ```
//!
//! `k` is derived from the secret with HKDF-SHA256, so neither the secret nor anything computed
//! from it alone crosses the wire. The transcript binds the protocol, the cluster id, both node
//! ids, both nonces (32 random bytes each, fresh per connection) and, under TLS, the session's
//! exporter value: a proof recorded from one connection is worthless on the next (the other
//! side's nonce differs), a listener's proof cannot be sent back as a dialer's (the role is in
//! the MAC), and a relay between two TLS sessions cannot pass proofs through (the exporters
//! differ). The listener proves itself only after the dialer has, so it never computes a proof
//! for someone who does not know the secret.
//!
//! What it does not do: without TLS, every frame after the handshake is plaintext and not
//! authenticated. Someone on the path can read the traffic, and one able to rewrite packets can
//! take over or alter an authenticated connection. The handshake keeps out nodes and clients
//! that do not know the secret; TLS on the cluster port ([`super::tls`]) is what protects the
//! traffic itself.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};

use super::rpc::{self, PROTOCOL};
use super::tls::ClusterTls;
use crate::raft::NodeId;

/// The largest handshake message either side reads: a hello is a cluster id (at most 128 bytes)
/// and a few numbers; anything much larger is not a node of this cluster.
pub const MAX_HANDSHAKE_FRAME: usize = 4 << 10;
/// How long a listener gives a dialer to finish the handshake; a peer that connects and says
/// nothing is dropped then.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

const NONCE: usize = 32;
type Tag = [u8; 32];

/// The key the handshake proves knowledge of, derived from the cluster secret.
#[derive(Clone)]
pub struct ClusterKey([u8; 32]);

impl ClusterKey {
    pub fn derive(secret: &str) -> ClusterKey {
        let mut key = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(Some(b"depot cluster secret"), secret.as_bytes())
            .expand(b"depot cluster handshake v1", &mut key)
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 output length"));
        ClusterKey(key)
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

/// Who this node is on the wire.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub cluster_id: String,
    pub node_id: NodeId,
    pub key: ClusterKey,
    /// TLS on the cluster port, when configured: then every connection, served or dialed, is TLS.
    pub tls: Option<ClusterTls>,
}

impl Credentials {
    pub fn new(cluster_id: impl Into<String>, node_id: NodeId, secret: &str) -> Credentials {
        Credentials { cluster_id: cluster_id.into(), node_id, key: ClusterKey::derive(secret), tls: None }
    }

    pub fn with_tls(self, tls: Option<ClusterTls>) -> Credentials {
        Credentials { tls, ..self }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub cluster_id: String,
    pub from: NodeId,
    /// The node the dialer means to reach, so a misrouted connection is refused.
    pub to: NodeId,
    pub nonce: [u8; NONCE],
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Challenge {
    Nonce([u8; NONCE]),
    /// Refused before any proof: the dialer speaks another protocol.
    Refused(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Proof(pub Tag);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Welcome {
    /// The listener's own proof.
    Accepted(Tag),
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no handshake within {0:?}")]
    TimedOut(Duration),
    /// The other side refused this node, for the reason it gave.
    #[error("refused: {0}")]
    RefusedByPeer(String),
    /// This node refused the other side (and told it why, when it could).
    #[error("{reason}")]
    Refused { peer: NodeId, reason: String },
}

#[derive(Clone, Copy)]
enum Role {
    Dialer,
    Listener,
}

/// The MAC of one side over everything both sides agreed on. Variable-length fields are
/// length-prefixed, so no two transcripts encode alike.
fn proof(key: &ClusterKey, role: Role, hello: &Hello, listener_nonce: &[u8; NONCE], binding: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.0).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(b"depot cluster handshake\0");
    mac.update(&hello.protocol.to_le_bytes());
    mac.update(match role {
        Role::Dialer => b"D",
        Role::Listener => b"L",
    });
    mac.update(&(hello.cluster_id.len() as u64).to_le_bytes());
    mac.update(hello.cluster_id.as_bytes());
    mac.update(&hello.from.to_le_bytes());
    mac.update(&hello.to.to_le_bytes());
    mac.update(&hello.nonce);
    mac.update(listener_nonce);
    mac.update(&(binding.len() as u64).to_le_bytes());
    mac.update(binding);
    mac
}

fn tag(mac: Hmac<Sha256>) -> Tag {
    mac.finalize().into_bytes().into()
}

fn nonce() -> [u8; NONCE] {
    // rand's thread RNG: ChaCha12 seeded from the OS, reseeded periodically.
    rand::random()
}

async fn read<R: AsyncRead + Unpin, T: serde::de::DeserializeOwned>(r: &mut R) -> std::io::Result<T> {
    rpc::read_frame_within(r, MAX_HANDSHAKE_FRAME).await
}

/// The dialer's side: proves this node to `to` and checks `to`'s proof. `binding`: the TLS
/// session's exporter value, empty without TLS. The caller bounds the time.
pub async fn dial<R, W>(
    r: &mut R,
    w: &mut W,
    me: &Credentials,
    to: NodeId,
    binding: &[u8],
) -> Result<(), HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let hello = Hello { protocol: PROTOCOL, cluster_id: me.cluster_id.clone(), from: me.node_id, to, nonce: nonce() };
    rpc::write_frame(w, &hello).await?;
    let theirs = match read::<_, Challenge>(r).await? {
        Challenge::Nonce(n) => n,
        Challenge::Refused(reason) => return Err(HandshakeError::RefusedByPeer(reason)),
    };
    if theirs == hello.nonce {
        return Err(HandshakeError::Refused { peer: to, reason: format!("node {to} echoed this node's nonce") });
    }
    rpc::write_frame(w, &Proof(tag(proof(&me.key, Role::Dialer, &hello, &theirs, binding)))).await?;
    match read::<_, Welcome>(r).await? {
        Welcome::Accepted(theirs_proof) => proof(&me.key, Role::Listener, &hello, &theirs, binding)
            .verify_slice(&theirs_proof)
            .map_err(|_| HandshakeError::Refused {
                peer: to,
                reason: format!(
                    "the node answering as node {to} did not prove it knows the cluster secret (its secret differs, \
                     or something else answers at its address)"
                ),
            }),
        Welcome::Refused(reason) => Err(HandshakeError::RefusedByPeer(reason)),
    }
}

/// The listener's side: checks the dialer's proof, then that it means this cluster and this
/// node, and proves this node in turn; the dialer's node id. A refusal is told to the dialer
/// (the cluster id and node ids only once it has proven the secret). Gives up after `timeout`.
pub async fn accept<R, W>(
    r: &mut R,
    w: &mut W,
    me: &Credentials,
    binding: &[u8],
    timeout: Duration,
) -> Result<NodeId, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    tokio::time::timeout(timeout, accept_unbounded(r, w, me, binding))
        .await
        .map_err(|_| HandshakeError::TimedOut(timeout))?
}

async fn accept_unbounded<R, W>(
    r: &mut R,
    w: &mut W,
    me: &Credentials,
    binding: &[u8],
) -> Result<NodeId, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let hello: Hello = read(r).await?;
    let peer = hello.from;
    if hello.protocol != PROTOCOL {
        let reason = format!("protocol {} spoken, {PROTOCOL} expected", hello.protocol);
        rpc::write_frame(w, &Challenge::Refused(reason.clone())).await?;
        return Err(HandshakeError::Refused { peer, reason });
    }
    let mine = nonce();
    rpc::write_frame(w, &Challenge::Nonce(mine)).await?;
    let Proof(theirs) = read(r).await?;
    let refuse = |reason: String| HandshakeError::Refused { peer, reason };
    let refusal = if proof(&me.key, Role::Dialer, &hello, &mine, binding).verify_slice(&theirs).is_err() {
        Some(format!("wrong cluster secret: node {peer} did not prove it knows this cluster's secret"))
    } else if hello.cluster_id != me.cluster_id {
        Some(format!(
            "wrong cluster id: node {peer} belongs to cluster {}, this node (node {}) to cluster {}",
            hello.cluster_id, me.node_id, me.cluster_id
        ))
    } else if hello.to != me.node_id {
        Some(format!("wrong node: this is node {}, not node {}", me.node_id, hello.to))
    } else {
        None
    };
    if let Some(reason) = refusal {
        rpc::write_frame(w, &Welcome::Refused(reason.clone())).await?;
        return Err(refuse(reason));
    }
    rpc::write_frame(w, &Welcome::Accepted(tag(proof(&me.key, Role::Listener, &hello, &mine, binding)))).await?;
    Ok(peer)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const SECRET: &str = "handshake-test-secret";
    const LONG: Duration = Duration::from_secs(10);

    fn creds(cluster: &str, id: NodeId, secret: &str) -> Credentials {
        Credentials::new(cluster, id, secret)
    }

    /// Runs a dialer and a listener against each other over an in-memory pipe.
    async fn pair(
        dialer: Credentials,
        to: NodeId,
        listener: Credentials,
    ) -> (Result<(), HandshakeError>, Result<NodeId, HandshakeError>) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (mut ar, mut aw) = tokio::io::split(a);
        let (mut br, mut bw) = tokio::io::split(b);
        let dial = async {
            let r = dial(&mut ar, &mut aw, &dialer, to, b"").await;
            drop(aw);
            r
        };
        tokio::join!(dial, accept(&mut br, &mut bw, &listener, b"", LONG))
    }

    #[tokio::test]
    async fn the_same_secret_is_accepted_on_both_sides() {
        let (d, l) = pair(creds("c", 1, SECRET), 2, creds("c", 2, SECRET)).await;
        d.unwrap();
        assert_eq!(l.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_wrong_secret_another_cluster_or_node_is_refused_with_the_reason_on_both_sides() {
        for (dialer, to, listener, why) in [
            (creds("c", 1, "another-secret"), 2, creds("c", 2, SECRET), "wrong cluster secret"),
            (creds("c", 1, SECRET), 2, creds("c", 2, "another-secret"), "wrong cluster secret"),
            (creds("other", 1, SECRET), 2, creds("c", 2, SECRET), "wrong cluster id"),
            (creds("c", 1, SECRET), 3, creds("c", 2, SECRET), "wrong node: this is node 2, not node 3"),
        ] {
            let (d, l) = pair(dialer, to, listener).await;
            let (d, l) = (d.unwrap_err(), l.unwrap_err());
            assert!(matches!(&d, HandshakeError::RefusedByPeer(r) if r.contains(why)), "{why}: dialer {d}");
            assert!(matches!(&l, HandshakeError::Refused { peer: 1, reason } if reason.contains(why)), "{why}: {l}");
        }
        let (_, l) = pair(creds("other", 1, SECRET), 2, creds("c", 2, SECRET)).await;
        let text = l.unwrap_err().to_string();
        assert!(text.contains("cluster other") && text.contains("cluster c"), "both ids named: {text}");
    }

    /// A legitimate handshake between node 1 and node 2, with everything the dialer sent
    /// recorded on the way (what someone on the path sees).
    async fn recorded_handshake() -> Vec<u8> {
        let (mut dialer_out, mut tap_in) = tokio::io::duplex(1 << 16);
        let (mut tap_out, mut listener_in) = tokio::io::duplex(1 << 16);
        let (mut listener_out, mut dialer_in) = tokio::io::duplex(1 << 16);
        let dialer = creds("c", 1, SECRET);
        let listener = creds("c", 2, SECRET);
        let dial = async {
            dial(&mut dialer_in, &mut dialer_out, &dialer, 2, b"").await.unwrap();
            drop(dialer_out);
        };
        let tap = async {
            let mut recorded = Vec::new();
            let mut buf = [0u8; 256];
            loop {
                let n = tap_in.read(&mut buf).await.unwrap();
                if n == 0 {
                    return recorded;
                }
                recorded.extend_from_slice(&buf[..n]);
                tap_out.write_all(&buf[..n]).await.unwrap();
            }
        };
        let listen = accept(&mut listener_in, &mut listener_out, &listener, b"", LONG);
        let ((), recorded, accepted) = tokio::join!(dial, tap, listen);
        assert_eq!(accepted.unwrap(), 1);
        recorded
    }

    #[tokio::test]
    async fn a_recorded_handshake_replayed_on_a_new_connection_is_refused() {
        let recorded = recorded_handshake().await;
        let mut frames = &recorded[..];
        let hello: Hello = read(&mut frames).await.unwrap();
        let _: Proof = read(&mut frames).await.unwrap();
        assert!(frames.is_empty(), "a dialer sends a hello and a proof, nothing else");
        assert_eq!((hello.from, hello.to), (1, 2));

        // The same bytes, sent to node 2 again: its new nonce makes the old proof worthless.
        let (mut attacker, listener) = tokio::io::duplex(1 << 16);
        let (mut lr, mut lw) = tokio::io::split(listener);
        attacker.write_all(&recorded).await.unwrap();
        let e = accept(&mut lr, &mut lw, &creds("c", 2, SECRET), b"", LONG).await.unwrap_err();
        assert!(
            matches!(&e, HandshakeError::Refused { peer: 1, reason } if reason.contains("wrong cluster secret")),
            "{e}"
        );
        let mut answers = Vec::new();
        drop((lr, lw));
        attacker.read_to_end(&mut answers).await.unwrap();
        let mut answers = &answers[..];
        assert!(matches!(read(&mut answers).await.unwrap(), Challenge::Nonce(_)));
        assert!(matches!(read(&mut answers).await.unwrap(), Welcome::Refused(r) if r.contains("wrong cluster secret")));
    }

    #[tokio::test]
    async fn a_proof_reflected_to_the_other_role_is_refused() {
        let key = ClusterKey::derive(SECRET);

        // To a listener: the listener's proof of this very transcript, sent as the dialer's.
        let (dialer, listener) = tokio::io::duplex(1 << 16);
        let (mut lr, mut lw) = tokio::io::split(listener);
        let (mut dr, mut dw) = tokio::io::split(dialer);
        let hello = Hello { protocol: PROTOCOL, cluster_id: "c".into(), from: 1, to: 2, nonce: nonce() };
        let attack = async {
            rpc::write_frame(&mut dw, &hello).await.unwrap();
            let Challenge::Nonce(n) = read(&mut dr).await.unwrap() else { panic!("no nonce") };
            rpc::write_frame(&mut dw, &Proof(tag(proof(&key, Role::Listener, &hello, &n, b"")))).await.unwrap();
            read::<_, Welcome>(&mut dr).await.unwrap()
        };
        let listener = creds("c", 2, SECRET);
        let (answer, accepted) = tokio::join!(attack, accept(&mut lr, &mut lw, &listener, b"", LONG));
        assert!(matches!(answer, Welcome::Refused(r) if r.contains("wrong cluster secret")));
        assert!(matches!(accepted, Err(HandshakeError::Refused { .. })));

        // To a dialer: its own proof, sent back as the listener's.
        let (dialer, listener) = tokio::io::duplex(1 << 16);
        let (mut lr, mut lw) = tokio::io::split(listener);
        let (mut dr, mut dw) = tokio::io::split(dialer);
        let attack = async {
            let _: Hello = read(&mut lr).await.unwrap();
            rpc::write_frame(&mut lw, &Challenge::Nonce(nonce())).await.unwrap();
            let Proof(p) = read(&mut lr).await.unwrap();
            rpc::write_frame(&mut lw, &Welcome::Accepted(p)).await.unwrap();
        };
        let dialer = creds("c", 1, SECRET);
        let ((), dialed) = tokio::join!(attack, dial(&mut dr, &mut dw, &dialer, 2, b""));
        let e = dialed.unwrap_err();
        assert!(matches!(&e, HandshakeError::Refused { peer: 2, reason } if reason.contains("did not prove")), "{e}");
    }

    #[tokio::test]
    async fn the_tls_binding_is_part_of_the_proof() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (mut ar, mut aw) = tokio::io::split(a);
        let (mut br, mut bw) = tokio::io::split(b);
        let (dialer, listener) = (creds("c", 1, SECRET), creds("c", 2, SECRET));
        let (d, l) = tokio::join!(
            dial(&mut ar, &mut aw, &dialer, 2, b"session one"),
            accept(&mut br, &mut bw, &listener, b"session two", LONG)
        );
        assert!(matches!(d, Err(HandshakeError::RefusedByPeer(_))));
        assert!(matches!(l, Err(HandshakeError::Refused { .. })));
    }

    #[tokio::test]
    async fn a_silent_peer_is_dropped_at_the_deadline() {
        let (_a, b) = tokio::io::duplex(1 << 10);
        let (mut br, mut bw) = tokio::io::split(b);
        let started = std::time::Instant::now();
        let e = accept(&mut br, &mut bw, &creds("c", 2, SECRET), b"", Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(e, HandshakeError::TimedOut(_)), "{e}");
        assert!(started.elapsed() < LONG);
    }

    #[tokio::test]
    async fn oversized_handshake_frames_are_refused_before_they_are_read() {
        let (mut a, b) = tokio::io::duplex(1 << 10);
        let (mut br, mut bw) = tokio::io::split(b);
        a.write_all(&((MAX_HANDSHAKE_FRAME as u32) + 1).to_le_bytes()).await.unwrap();
        let e = accept(&mut br, &mut bw, &creds("c", 2, SECRET), b"", LONG).await.unwrap_err();
        assert!(matches!(&e, HandshakeError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData), "{e}");
    }
}
