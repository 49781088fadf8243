//! Three brokers in one process, talking over the cluster transport on loopback: forwarding to
//! the leader, a node that was away catching up from a snapshot after the leader purged its log,
//! the handshake refusing a wrong secret or another cluster, and all of it over TLS.

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use depot_broker::cluster::ClusterOptions;
use depot_broker::net::rpc::Call;
use depot_broker::net::tls::ClusterTls;
use depot_broker::net::transport::{CallError, Credentials, Peers};
use depot_broker::station::{Command, GroupConfig, NewMessage, Outcome, ReceiptResult, SettleOp, StationConfig};
use depot_broker::{Broker, BrokerOptions};

const SECRET: &str = "cluster-test-secret-0123";
const WAIT: Duration = Duration::from_secs(20);

/// Each node's cluster port, bound once for the whole test: a node that restarts gets its own
/// port back, and nothing else can take it meanwhile.
struct Layout {
    listeners: Vec<Arc<TcpListener>>,
    addrs: Vec<SocketAddr>,
}

impl Layout {
    fn new(n: usize) -> Layout {
        let listeners: Vec<_> = (0..n).map(|_| Arc::new(TcpListener::bind("127.0.0.1:0").unwrap())).collect();
        let addrs = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        Layout { listeners, addrs }
    }

    fn options(&self, dir: &Path, id: u64, snapshot_every: u64) -> BrokerOptions {
        let mut opts = BrokerOptions::new(dir);
        opts.node_id = id;
        opts.cluster_id = Some("in-process".into());
        opts.snapshot_every = snapshot_every;
        opts.log_kept_after_snapshot = 0;
        opts.cluster = Some(ClusterOptions {
            listener: self.listeners[id as usize - 1].clone(),
            secret: SECRET.into(),
            peers: self.addrs.iter().enumerate().map(|(i, a)| (i as u64 + 1, a.to_string())).collect(),
            api_addr: format!("api-{id}:1"),
            wait_for: self.addrs.len(),
            startup: Default::default(),
            tls: None,
        });
        opts
    }
}

/// A CA of the test's own, and node certificates for 127.0.0.1 signed by it.
struct Pki {
    ca_pem: String,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
        Pki { ca_pem: issuer.pem(), issuer }
    }

    /// A node's TLS: a certificate of this CA, trusting `trusted` (this CA's PEM, normally).
    fn node_trusting(&self, trusted: &str) -> ClusterTls {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "depot node");
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ClusterTls::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes(), trusted.as_bytes()).unwrap()
    }

    fn node(&self) -> ClusterTls {
        self.node_trusting(&self.ca_pem)
    }
}

async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn message(i: usize) -> NewMessage {
    NewMessage {
        content_type: "text/plain".into(),
        headers: Vec::new(),
        payload: Bytes::from(format!("m{i}")),
        idempotency_key: Some(format!("k{i}")),
        deliver_at: None,
    }
}

async fn open_all(layout: &Layout, dirs: &[tempfile::TempDir], snapshot_every: u64) -> Vec<Broker> {
    let opens =
        dirs.iter().enumerate().map(|(i, d)| Broker::open(layout.options(d.path(), i as u64 + 1, snapshot_every)));
    futures_util::future::join_all(opens).await.into_iter().map(|b| b.unwrap()).collect()
}

async fn leader(brokers: &[Broker]) -> u64 {
    until("a leader all nodes agree on", || {
        let views: Vec<_> = brokers.iter().map(|b| b.has_leader()).collect();
        views.iter().all(|v| *v).then_some(())
    })
    .await;
    brokers[0].cluster_view().await.leader_id.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_forward_and_a_returning_node_catches_up_from_a_snapshot() {
    let layout = Layout::new(3);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut brokers = open_all(&layout, &dirs, 20).await;
    let leader_id = leader(&brokers).await;
    let follower = brokers.iter().find(|b| b.node_id() != leader_id).unwrap().clone();
    assert_eq!(follower.voters(), 3);

    // Commands given to a follower run on the leader.
    follower.submit(Command::PutStation { station: "s".into(), config: StationConfig::default() }).await.unwrap();
    let applied = follower.submit(Command::Produce { station: "s".into(), messages: vec![message(0)] }).await.unwrap();
    assert!(matches!(applied.outcome, Outcome::Produced(_)));

    // Stop one follower, write enough for several snapshots (the leader purges its log), bring
    // it back: it must install a snapshot and then see every message.
    let away_index = brokers.iter().position(|b| b.node_id() != leader_id).unwrap();
    let away = brokers.remove(away_index);
    let away_id = away.node_id();
    let away_last = away.raft_status().await.last_log_index;
    away.shutdown().await.unwrap();
    drop(away);
    let writer = brokers.iter().find(|b| b.node_id() != away_id).unwrap().clone();
    let lead = brokers.iter().find(|b| b.node_id() == leader_id).unwrap().clone();
    // At least 200 messages, and on until the leader's log no longer holds what the stopped
    // node lacks: snapshots, and the purges after them, run in the background.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut produced = 1;
    while produced < 200 || lead.raft_status().await.purged.is_none_or(|p| p <= away_last) {
        assert!(Instant::now() < deadline, "the leader never purged its log past the stopped node");
        let produce = Command::Produce { station: "s".into(), messages: vec![message(produced)] };
        writer.submit(produce).await.unwrap();
        produced += 1;
    }
    let back = Broker::open(layout.options(dirs[away_index].path(), away_id, 20)).await.unwrap();
    back.barrier().await.unwrap();
    let snapshots = dirs[away_index].path().join("sm").join("snapshots");
    let installed = std::fs::read_dir(&snapshots)
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().starts_with("installed-"));
    assert!(installed, "the returning node caught up without installing a snapshot");
    let view = back.station("s").await.unwrap();
    assert_eq!(view.stats.next_offset, produced as u64, "{view:?}");
    for offset in [0u64, 57, produced as u64 - 1] {
        let m = back.message("s", offset).await.unwrap().unwrap();
        assert_eq!(m.payload, Bytes::from(format!("m{offset}")));
    }
    // An idempotent retry through the returned node finds the original offset.
    let again = back.submit(Command::Produce { station: "s".into(), messages: vec![message(57)] }).await.unwrap();
    match again.outcome {
        Outcome::Produced(r) => {
            let r = r[0].as_ref().unwrap();
            assert_eq!((r.offset, r.duplicate), (57, true));
        }
        other => panic!("unexpected {other:?}"),
    }
    back.shutdown().await.unwrap();
    for b in brokers {
        b.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_handshake_refuses_a_wrong_secret_another_cluster_and_a_wrong_node() {
    let layout = Layout::new(3);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let brokers = open_all(&layout, &dirs, 1000).await;
    leader(&brokers).await;
    let addr = layout.addrs[0].to_string();
    let call = |credentials: Credentials, to: u64| {
        let addr = addr.clone();
        async move { Peers::new(credentials).call(to, &addr, Call::Status, Duration::from_secs(2)).await }
    };
    let me = |cluster: &str, secret: &str| Credentials::new(cluster, 9, secret);
    let e = call(me("in-process", "not-the-secret-at-all"), 1).await.unwrap_err();
    assert!(matches!(&e, CallError::Unreachable(..)) && e.to_string().contains("wrong cluster secret"), "{e}");
    let e = call(me("other-cluster", SECRET), 1).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("other-cluster") && text.contains("in-process"), "both ids named: {text}");
    let e = call(me("in-process", SECRET), 2).await.unwrap_err();
    assert!(e.to_string().contains("wrong node: this is node 1, not node 2"), "{e}");
    assert!(call(me("in-process", SECRET), 1).await.is_ok());
    for b in brokers {
        b.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receipt_sealed_on_one_node_settles_on_any_other_after_a_failover() {
    let layout = Layout::new(3);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut brokers = open_all(&layout, &dirs, 1000).await;
    let leader_id = leader(&brokers).await;
    let follower = brokers.iter().find(|b| b.node_id() != leader_id).unwrap().clone();
    follower.submit(Command::PutStation { station: "s".into(), config: StationConfig::default() }).await.unwrap();
    let group = Command::PutGroup { station: "s".into(), group: "g".into(), config: GroupConfig::default() };
    follower.submit(group).await.unwrap();
    let produce = Command::Produce { station: "s".into(), messages: vec![message(0), message(1), message(2)] };
    follower.submit(produce).await.unwrap();

    // Sealed on a follower (the key proposed through it), settled on the leader.
    // (A long poll: the follower may not have applied the produce yet.)
    let fetched = follower.fetch("s", "g", 3, None, WAIT).await.unwrap();
    assert_eq!(fetched.receipts.len(), 3);
    let key = follower.receipt_key().await.unwrap();
    until("every node holding the one receipt key", || {
        brokers.iter().all(|b| b.read(|s| s.receipt_key()) == Some(key)).then_some(())
    })
    .await;
    let on_leader = brokers.iter().find(|b| b.node_id() == leader_id).unwrap().clone();
    let results = on_leader.settle("s", "g", &fetched.receipts[..1], SettleOp::Ack).await.unwrap();
    assert_eq!(results, vec![ReceiptResult::Ok]);

    // The leader goes away; the node that neither sealed nor led settles the rest.
    let old = brokers.remove(brokers.iter().position(|b| b.node_id() == leader_id).unwrap());
    old.shutdown().await.unwrap();
    drop(old);
    let third = brokers.iter().find(|b| b.node_id() != follower.node_id()).unwrap().clone();
    let deadline = Instant::now() + WAIT;
    while third.cluster_view().await.leader_id.is_none_or(|id| id == leader_id) {
        assert!(Instant::now() < deadline, "no new leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let results = third.settle("s", "g", &fetched.receipts[1..], SettleOp::Ack).await.unwrap();
    assert_eq!(results, vec![ReceiptResult::Ok; 2]);
    let results = third.settle("s", "g", &fetched.receipts[..1], SettleOp::Ack).await.unwrap();
    assert_eq!(results, vec![ReceiptResult::Stale]);
    for b in brokers {
        b.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_over_tls_works_and_refuses_a_peer_of_another_ca_or_without_tls() {
    let layout = Layout::new(3);
    let pki = Pki::new("depot test CA");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let opens = dirs.iter().enumerate().map(|(i, d)| {
        let mut opts = layout.options(d.path(), i as u64 + 1, 1000);
        opts.cluster.as_mut().unwrap().tls = Some(pki.node());
        Broker::open(opts)
    });
    let brokers: Vec<Broker> = futures_util::future::join_all(opens).await.into_iter().map(|b| b.unwrap()).collect();
    let leader_id = leader(&brokers).await;
    let follower = brokers.iter().find(|b| b.node_id() != leader_id).unwrap().clone();
    follower.submit(Command::PutStation { station: "s".into(), config: StationConfig::default() }).await.unwrap();
    let applied = follower.submit(Command::Produce { station: "s".into(), messages: vec![message(0)] }).await.unwrap();
    assert!(matches!(applied.outcome, Outcome::Produced(_)), "forwarded to the leader over TLS");

    let addr = layout.addrs[0].to_string();
    let call = |credentials: Credentials| {
        let addr = addr.clone();
        async move { Peers::new(credentials).call(1, &addr, Call::Status, Duration::from_secs(2)).await }
    };
    let me = |secret: &str, tls: Option<ClusterTls>| Credentials::new("in-process", 9, secret).with_tls(tls);
    assert!(call(me(SECRET, Some(pki.node()))).await.is_ok(), "a certificate of the cluster's CA is accepted");
    let other = Pki::new("another CA");
    for (what, credentials) in [
        ("a certificate of another CA", me(SECRET, Some(other.node()))),
        ("a certificate of another CA, trusting the cluster's", me(SECRET, Some(other.node_trusting(&pki.ca_pem)))),
        ("no TLS", me(SECRET, None)),
    ] {
        let e = call(credentials).await.unwrap_err();
        assert!(matches!(e, CallError::Unreachable(..)), "{what}: {e}");
    }
    // Inside TLS, the handshake still wants the secret.
    let e = call(me("not-the-secret-at-all", Some(pki.node()))).await.unwrap_err();
    assert!(e.to_string().contains("wrong cluster secret"), "{e}");
    for b in brokers {
        b.shutdown().await.unwrap();
    }
}
