//! The `depot serve` command line of a cluster's node: the one place it is built, for the
//! tests' clusters and the benchmarks' alike.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Random lower-case hex.
pub fn hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

/// Writes `secret` to `path`, readable by its owner only, as `--cluster-secret-file` expects.
pub fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(file, "{secret}")
}

/// What every node of a cluster shares.
#[derive(Clone, Debug)]
pub struct Config {
    /// The `depot` binary.
    pub depot: PathBuf,
    /// `--metadata-url`: every node's metadata store.
    pub metadata_url: String,
    pub cluster_id: String,
    pub cluster_secret: String,
    /// `DEPOT_JWT_SECRET`; `None` derives it from the cluster secret.
    pub jwt_secret: Option<String>,
    /// `DEPOT_ADMIN_PASSWORD`.
    pub admin_password: String,
    /// `--wait-for`; `None` waits for every peer.
    pub wait_for: Option<usize>,
    /// Node-to-node links through a fault proxy each, or direct.
    pub proxied: bool,
    /// `DEPOT_LOG`.
    pub log: String,
    /// Extra environment of every launch (settings such as `DEPOT_SNAPSHOT_EVERY`).
    pub env: Vec<(String, String)>,
    /// Where the cluster's temp dir is made (`None`: the system's temp dir).
    pub dir: Option<PathBuf>,
}

impl Config {
    /// Random cluster id and secrets, direct links, `DEPOT_LOG=warn`.
    pub fn new(depot: &Path, metadata_url: String, admin_password: &str) -> Config {
        Config {
            depot: depot.to_owned(),
            metadata_url,
            cluster_id: format!("test-{}", hex(8)),
            cluster_secret: hex(24),
            jwt_secret: None,
            admin_password: admin_password.to_owned(),
            wait_for: None,
            proxied: false,
            log: "warn".to_owned(),
            env: Vec::new(),
            dir: None,
        }
    }
}

/// The `depot serve` command line of node `id` of a cluster: its API and cluster addresses, its
/// `--peers`, its data dir, the file holding the cluster secret (as a deployment would: never on
/// the command line; see [`write_secret_file`]), and what every node shares. Rate limits are off (clients of a test
/// run many requests from one address) and access tokens last a day (long runs outlast the
/// default 15 minutes).
pub fn serve_command(
    config: &Config,
    id: u64,
    api: SocketAddr,
    cluster: SocketAddr,
    peers: &str,
    data_dir: &Path,
    secret_file: &Path,
) -> Command {
    let mut command = Command::new(&config.depot);
    command
        .arg("serve")
        .args(["--node-id", &id.to_string()])
        .args(["--listen", &api.to_string()])
        .args(["--cluster-listen", &cluster.to_string()])
        .args(["--peers", peers])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--metadata-url", &config.metadata_url])
        .arg("--cluster-secret-file")
        .arg(secret_file)
        .args(["--cluster-id", &config.cluster_id])
        .env("DEPOT_ADMIN_PASSWORD", &config.admin_password)
        .env("DEPOT_LOG", &config.log)
        .env("DEPOT_RATE_LIMIT", "off")
        .env("DEPOT_ACCESS_TOKEN_TTL", "86400");
    if let Some(jwt) = &config.jwt_secret {
        command.env("DEPOT_JWT_SECRET", jwt);
    }
    if let Some(n) = config.wait_for {
        command.args(["--wait-for", &n.to_string()]);
    }
    for (k, v) in &config.env {
        command.env(k, v);
    }
    command
}
