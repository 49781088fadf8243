//! Clusters of the kit ([`depot_tests::cluster`]) for the gateway's tests: this build's `depot`,
//! a fresh database of the shared test Postgres (`depot-pgtest`), a fault proxy on every link.

use std::sync::OnceLock;

pub use depot_tests::cluster::*;

use crate::e2e::depot;

pub const ADMIN_PASSWORD: &str = "cluster-admin-password";

/// The runtime that creates the test databases.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap())
}

/// `n` nodes, all started; returns once every node is ready and all agree on a leader, with
/// an admin token.
pub fn start(n: usize) -> Cluster {
    let ids: Vec<u64> = (1..=n as u64).collect();
    start_with(n, None, &ids)
}

/// `n` configured nodes, only `start_ids` started (with `--wait-for` if given). Waits for
/// readiness and logs in only when enough nodes were started for the cluster to go active.
pub fn start_with(n: usize, wait_for: Option<usize>, start_ids: &[u64]) -> Cluster {
    let mut config = Config::new(depot(), runtime().block_on(depot_pgtest::database()), ADMIN_PASSWORD);
    config.jwt_secret = Some(hex(32));
    config.wait_for = wait_for;
    config.proxied = true;
    Cluster::start(config, n, start_ids)
}

/// A fresh database of the shared TLS-only test Postgres.
pub fn tls_metadata_database() -> depot_pgtest::TlsDatabase {
    runtime().block_on(depot_pgtest::tls_database())
}
