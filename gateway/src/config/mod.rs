//! Settings of `depot dev` and `depot serve`: defaults here, then a TOML file, then `DEPOT_*`
//! environment variables, then flags; then [`Config::validate`].
//!
//! Every setting has one name, spelled three ways: `access_token_ttl` in the file,
//! `DEPOT_ACCESS_TOKEN_TTL` in the environment, `--access-token-ttl` on the command line. The
//! table [`SETTINGS`] is the single place that lists them, with their help; `--help` prints it
//! with each default. External token issuers are lists, so only the file sets them
//! (`[[external_issuers]]` with `algorithm`, `public_key_pem`, `issuer`, `audience`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use depot_broker::disk::MinFree;
use serde::Deserialize;

use crate::auth::{AuthConfig, ExternalIssuer, MAX_LEEWAY_SECS};
use crate::meta::postgres::PoolOptions;
use crate::rate_limit::RateLimitConfig;
use crate::state::GatewayConfig;

mod settings;

pub use settings::{command as settings_command, help, Setting, SETTINGS};
use settings::{setting, toml_text};

/// Which command is starting: they differ only in defaults and in what they print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One node on loopback, a generated admin password printed on first start.
    Dev,
    /// A production node.
    Serve,
}

impl Mode {
    /// The command that starts a node in this mode.
    pub fn command(self) -> &'static str {
        match self {
            Mode::Dev => "dev",
            Mode::Serve => "serve",
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExternalIssuerConfig {
    /// `RS256` or `EdDSA`.
    pub algorithm: String,
    pub public_key_pem: String,
    pub issuer: String,
    pub audience: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub node_id: u64,
    pub listen: SocketAddr,
    pub cluster_listen: SocketAddr,
    /// `(node id, cluster address)`; empty means this node alone.
    pub peers: Vec<(u64, String)>,
    pub data_dir: PathBuf,
    /// New messages are refused (507 `storage_full`) while the data dir's file system has less
    /// free space than this.
    pub disk_free_min: MinFree,
    /// Station-log files kept open at once, across all stations.
    pub max_open_files: usize,
    /// Raft entries between snapshots (each snapshot lets the Raft log be purged).
    pub snapshot_every: u64,
    /// Size of each segment file of the Raft log and of station logs, in bytes.
    pub segment_bytes: u64,
    /// `None`: the embedded SQLite file `<data_dir>/metadata.sqlite`.
    pub metadata_url: Option<String>,
    /// CA certificates (PEM) that Postgres's certificate must chain to; `None`: the URL's
    /// `sslrootcert`, else the system's roots.
    pub metadata_ca_file: Option<PathBuf>,
    /// Postgres connections per node.
    pub metadata_pool_size: usize,
    /// Longest wait on Postgres for a connection or a query, in milliseconds.
    pub metadata_timeout_ms: u64,
    /// From `cluster_secret`, `DEPOT_CLUSTER_SECRET`, or the file `cluster_secret_file` names
    /// (read by [`Config::from_matches`]).
    pub cluster_secret: Option<String>,
    /// A file holding the cluster secret, so that it is on no command line.
    pub cluster_secret_file: Option<PathBuf>,
    /// TLS on the cluster port: this node's certificate and key, and the CA of every node's
    /// certificate (PEM files). All three or none.
    pub cluster_tls_cert: Option<PathBuf>,
    pub cluster_tls_key: Option<PathBuf>,
    pub cluster_tls_ca: Option<PathBuf>,
    /// The cluster this node belongs to; `None`: whatever the data dir holds (a new one gets a
    /// random id).
    pub cluster_id: Option<String>,
    pub wait_for: Option<u32>,
    /// `None`: generated on first start and kept in `<data_dir>/jwt-secret`.
    pub jwt_secret: Option<String>,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub jwt_leeway: u64,
    pub access_token_ttl: u64,
    pub refresh_token_ttl: u64,
    /// Milliseconds a user or API key is trusted from the cache (the fail-closed bound when the
    /// metadata store is down).
    pub credential_cache_ttl_ms: u64,
    pub external_issuers: Vec<ExternalIssuerConfig>,
    pub rate_limit: bool,
    pub rate_limit_ip_per_second: u32,
    pub rate_limit_ip_burst: u32,
    pub rate_limit_credential_per_second: u32,
    pub rate_limit_credential_burst: u32,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The longest a message may be withheld, in milliseconds; longer delays are refused.
    pub max_delay_ms: u64,
    /// Milliseconds a request body may take to arrive before the request is answered 408.
    pub body_read_timeout_ms: u64,
    /// One INFO line per request (method, route, status, latency, principal, request id).
    pub access_log: bool,
    /// Seconds an idle keep-alive connection stays open (0: none).
    pub keep_alive_secs: u64,
    /// Milliseconds a client may take to send a request head.
    pub request_head_timeout_ms: u64,
    /// Push delivery may go to loopback, private and link-local addresses.
    pub push_allow_private_networks: bool,
    /// `[tiering]`: where sealed segments go (API.md "Tiering"); off without a bucket.
    pub tiering: Tiering,
}

/// The `[tiering]` settings. Credentials are not among them: they come from the AWS SDK's
/// default chain (environment, profile, instance role).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tiering {
    /// The bucket; `None` leaves tiering off.
    pub bucket: Option<String>,
    /// An S3-compatible endpoint (`https://...`); `None`: AWS S3 for the region.
    pub endpoint: Option<String>,
    /// `None`: the SDK's default chain (for example `AWS_REGION`).
    pub region: Option<String>,
    /// Object keys start with this.
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual-hosted.
    pub path_style: bool,
    /// The local cache of tiered data, in bytes.
    pub cache_bytes: u64,
    /// Objects larger than this are uploaded in parts of this size.
    pub part_bytes: u64,
}

impl Default for Tiering {
    fn default() -> Tiering {
        Tiering {
            bucket: None,
            endpoint: None,
            region: None,
            prefix: String::new(),
            path_style: false,
            cache_bytes: 1 << 30,
            part_bytes: depot_broker::tier::DEFAULT_PART_BYTES,
        }
    }
}

/// The smallest tiering cache: a few segments' worth of ranged reads.
pub const MIN_TIER_CACHE_BYTES: u64 = 16 << 20;

/// The largest `max_delay_ms`: 100 years, so that now plus a delay is a time that renders.
pub const MAX_MAX_DELAY_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

impl Config {
    /// The defaults. Each comes from the module that owns the setting (the broker's options, the
    /// Postgres pool, auth, the rate limiter), so it is defined once.
    pub fn defaults(mode: Mode) -> Config {
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        let broker = depot_broker::BrokerOptions::new("depot-data");
        let pool = PoolOptions::default();
        let auth = AuthConfig::with_secret(Vec::new());
        let ip_limit = RateLimitConfig::default();
        Config {
            node_id: 1,
            listen: match mode {
                Mode::Dev => SocketAddr::from(([127, 0, 0, 1], 4444)),
                Mode::Serve => any(4444),
            },
            cluster_listen: match mode {
                Mode::Dev => SocketAddr::from(([127, 0, 0, 1], 6222)),
                Mode::Serve => any(6222),
            },
            peers: Vec::new(),
            data_dir: broker.data_dir.clone(),
            disk_free_min: MinFree::Auto,
            max_open_files: depot_broker::open_files::DEFAULT_MAX_OPEN_FILES,
            snapshot_every: broker.snapshot_every,
            segment_bytes: broker.segment_bytes,
            metadata_url: None,
            metadata_ca_file: None,
            metadata_pool_size: pool.max_size,
            metadata_timeout_ms: pool.query_timeout.as_millis() as u64,
            cluster_secret: None,
            cluster_secret_file: None,
            cluster_tls_cert: None,
            cluster_tls_key: None,
            cluster_tls_ca: None,
            cluster_id: None,
            wait_for: None,
            jwt_secret: None,
            jwt_issuer: auth.issuer,
            jwt_audience: auth.audience,
            jwt_leeway: auth.leeway_secs,
            access_token_ttl: auth.access_ttl.as_secs(),
            refresh_token_ttl: auth.refresh_ttl.as_secs(),
            credential_cache_ttl_ms: auth.cache_ttl.as_millis() as u64,
            external_issuers: Vec::new(),
            rate_limit: true,
            rate_limit_ip_per_second: ip_limit.requests,
            rate_limit_ip_burst: ip_limit.burst,
            rate_limit_credential_per_second: 5000,
            rate_limit_credential_burst: 10000,
            trusted_proxies: Vec::new(),
            max_delay_ms: crate::state::DEFAULT_MAX_DELAY_MS,
            body_read_timeout_ms: crate::state::DEFAULT_BODY_READ_TIMEOUT.as_millis() as u64,
            access_log: true,
            keep_alive_secs: crate::state::DEFAULT_KEEP_ALIVE.as_secs(),
            request_head_timeout_ms: crate::state::DEFAULT_REQUEST_HEAD_TIMEOUT.as_millis() as u64,
            push_allow_private_networks: mode == Mode::Dev,
            tiering: Tiering::default(),
        }
    }
}

/// Where each layer comes from; tests pass their own environment. `args` is used by
/// [`Config::load`] only.
pub struct Sources<'a> {
    pub args: &'a [String],
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub read_file: &'a dyn Fn(&str) -> Result<String, String>,
}

/// What the command line asked for: a config, or the help text.
pub enum Loaded {
    Config(Box<Config>),
    Help,
}

impl Config {
    /// Parses `sources.args` (a command's arguments, without the command) against the settings
    /// table, then layers as [`Config::from_matches`] does.
    pub fn load(mode: Mode, sources: &Sources<'_>) -> Result<Loaded, String> {
        let command = settings::command(clap::Command::new(mode.command()).no_binary_name(true), mode);
        match command.try_get_matches_from(sources.args) {
            Ok(matches) => Config::from_matches(mode, &matches, sources).map(|c| Loaded::Config(Box::new(c))),
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => Ok(Loaded::Help),
            Err(e) => Err(e.to_string().trim_end().to_owned()),
        }
    }

    /// Layers defaults < file (`--config` or `DEPOT_CONFIG`) < env < flags, then validates.
    /// `matches` are of a command built by [`settings::command`]; only the values given on the
    /// command line are taken from it, the environment comes from `sources.env`.
    pub fn from_matches(mode: Mode, matches: &clap::ArgMatches, sources: &Sources<'_>) -> Result<Config, String> {
        let given = |id: &str| {
            (matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
                .then(|| matches.get_one::<String>(id).cloned())
                .flatten()
        };
        let file = given(settings::CONFIG_ARG).or_else(|| (sources.env)("DEPOT_CONFIG")).filter(|f| !f.is_empty());
        let mut config = Config::defaults(mode);
        if let Some(path) = file {
            let text = (sources.read_file)(&path)?;
            config.apply_toml(&text).map_err(|e| format!("{path}: {e}"))?;
        }
        for s in SETTINGS {
            if let Some(v) = (sources.env)(&s.env()) {
                (s.set)(&mut config, &v).map_err(|e| format!("{}: {e}", s.env()))?;
            }
        }
        for s in SETTINGS {
            if let Some(v) = given(s.name) {
                (s.set)(&mut config, &v).map_err(|e| format!("{}: {e}", s.flag()))?;
            }
        }
        config.read_cluster_secret_file(sources)?;
        config.validate()?;
        Ok(config)
    }

    /// Takes the cluster secret from `cluster_secret_file`, if one is named: its contents less
    /// one trailing newline. Refuses an empty file, and a secret given both ways (which one
    /// wins would depend on the layer, and an operator moving it to a file means the file).
    fn read_cluster_secret_file(&mut self, sources: &Sources<'_>) -> Result<(), String> {
        let Some(path) = &self.cluster_secret_file else { return Ok(()) };
        if self.cluster_secret.is_some() {
            return Err("cluster_secret and cluster_secret_file are both set; set only one (the file, or \
                        DEPOT_CLUSTER_SECRET, keeps the secret off the command line)"
                .to_owned());
        }
        let text = (sources.read_file)(&path.to_string_lossy()).map_err(|e| format!("cluster_secret_file: {e}"))?;
        let secret = match text.strip_suffix('\n') {
            Some(line) => line.strip_suffix('\r').unwrap_or(line),
            None => &text,
        };
        if secret.is_empty() {
            return Err(format!("cluster_secret_file: {} is empty", path.display()));
        }
        self.cluster_secret = Some(secret.to_owned());
        Ok(())
    }

    fn apply_toml(&mut self, text: &str) -> Result<(), String> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        for (key, value) in table {
            match key.as_str() {
                "external_issuers" => {
                    self.external_issuers =
                        value.try_into().map_err(|e: toml::de::Error| format!("external_issuers: {e}"))?;
                }
                "tiering" => {
                    let toml::Value::Table(table) = value else {
                        return Err("tiering must be a table ([tiering])".to_owned());
                    };
                    for (key, value) in table {
                        let name = format!("tiering_{key}");
                        let s = setting(&name).ok_or_else(|| format!("unknown setting {key:?} in [tiering]"))?;
                        (s.set)(self, &toml_text(&value).map_err(|e| format!("tiering.{key}: {e}"))?)
                            .map_err(|e| format!("tiering.{key}: {e}"))?;
                    }
                }
                other => {
                    let s = setting(other).ok_or_else(|| format!("unknown setting {other:?}"))?;
                    (s.set)(self, &toml_text(&value).map_err(|e| format!("{other}: {e}"))?)
                        .map_err(|e| format!("{other}: {e}"))?;
                }
            }
        }
        Ok(())
    }

    /// The bucket to tier to, when `[tiering]` names one.
    pub fn tier_options(&self) -> Option<depot_broker::tier::TierOptions> {
        let t = &self.tiering;
        Some(depot_broker::tier::TierOptions {
            bucket: t.bucket.clone()?,
            endpoint: t.endpoint.clone(),
            region: t.region.clone(),
            prefix: t.prefix.clone(),
            path_style: t.path_style,
            cache_bytes: t.cache_bytes,
            part_bytes: t.part_bytes,
        })
    }

    fn validate_tiering(&self) -> Result<(), String> {
        let t = &self.tiering;
        let other_set = t.endpoint.is_some() || t.region.is_some() || !t.prefix.is_empty() || t.path_style;
        let Some(bucket) = &t.bucket else {
            return match other_set {
                true => Err("tiering: bucket is required when any other tiering setting is given".to_owned()),
                false => Ok(()),
            };
        };
        // S3's bucket naming rules, loose enough for GCS and Spaces.
        let valid = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_'));
        if !valid {
            return Err(format!("tiering.bucket: {bucket:?} is not a bucket name (3-63 of a-z 0-9 - . _)"));
        }
        if let Some(endpoint) = &t.endpoint {
            let url = url::Url::parse(endpoint).map_err(|e| format!("tiering.endpoint: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err("tiering.endpoint must be an http:// or https:// URL".to_owned());
            }
        }
        if t.prefix.len() > 512 || t.prefix.starts_with('/') {
            return Err("tiering.prefix must be at most 512 bytes and not start with '/'".to_owned());
        }
        if !(depot_broker::tier::MIN_PART_BYTES..=(5 << 30)).contains(&t.part_bytes) {
            return Err(format!(
                "tiering.part_bytes must be {} to {} (S3's part sizes)",
                depot_broker::tier::MIN_PART_BYTES,
                5u64 << 30
            ));
        }
        if t.cache_bytes < MIN_TIER_CACHE_BYTES {
            return Err(format!("tiering.cache_bytes must be at least {MIN_TIER_CACHE_BYTES}"));
        }
        Ok(())
    }

    /// Refuses settings that cannot work, naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_id == 0 {
            return Err("node_id must be at least 1".to_owned());
        }
        if let Some(url) = &self.metadata_url {
            if !self.uses_postgres() && !url.starts_with("sqlite:") {
                // Never echo the URL: it may carry a password.
                let scheme = url.split(':').next().unwrap_or_default();
                return Err(format!(
                    "metadata_url: scheme {scheme:?} is not postgres:// or sqlite:PATH (or leave it unset)"
                ));
            }
        }
        if self.uses_postgres() {
            // An unknown sslmode is refused here, at start, rather than at the first connection.
            let url = self.metadata_url.as_deref().unwrap_or_default();
            crate::meta::postgres::split_url(url)?;
        }
        if self.clustered() {
            if !self.uses_postgres() {
                return Err(
                    "peers: a cluster keeps its metadata in Postgres; set --metadata-url postgres://...".to_owned()
                );
            }
            if !self.peers.iter().any(|(id, _)| *id == self.node_id) {
                return Err(format!("peers: this node's id {} is not in the list", self.node_id));
            }
        }
        if !self.peers.is_empty() && self.cluster_secret.is_none() {
            return Err("cluster_secret: required with peers (it authenticates the cluster port); give it in a file \
                        with cluster_secret_file, or as DEPOT_CLUSTER_SECRET"
                .to_owned());
        }
        if let Some(secret) = &self.cluster_secret {
            if secret.len() < 16 {
                let what = if self.cluster_secret_file.is_some() { "cluster_secret_file" } else { "cluster_secret" };
                return Err(format!("{what}: the cluster secret must be at least 16 bytes"));
            }
        }
        let tls = [&self.cluster_tls_cert, &self.cluster_tls_key, &self.cluster_tls_ca];
        if tls.iter().any(|f| f.is_some()) {
            if tls.iter().any(|f| f.is_none()) {
                return Err(
                    "cluster_tls_cert, cluster_tls_key and cluster_tls_ca go together: set all three".to_owned()
                );
            }
            if self.cluster_secret.is_none() {
                return Err("cluster_tls_*: the cluster port is served only with a cluster secret".to_owned());
            }
        }
        let mut ids: Vec<u64> = self.peers.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.peers.len() || ids.first() == Some(&0) {
            return Err("peers: node ids must be distinct and at least 1".to_owned());
        }
        if let Some(n) = self.wait_for {
            if n == 0 || n as usize > self.peers.len().max(1) {
                return Err(format!("wait_for must be 1-{} (the number of peers)", self.peers.len().max(1)));
            }
        }
        if let Some(id) = &self.cluster_id {
            depot_broker::identity::validate_cluster_id(id).map_err(|e| format!("cluster_id: {e}"))?;
        }
        if !(1..=1024).contains(&self.metadata_pool_size) {
            return Err("metadata_pool_size must be 1-1024".to_owned());
        }
        if !(100..=600_000).contains(&self.metadata_timeout_ms) {
            return Err("metadata_timeout_ms must be 100-600000".to_owned());
        }
        if let Some(secret) = &self.jwt_secret {
            if secret.len() < 32 {
                return Err("jwt_secret must be at least 32 bytes".to_owned());
            }
        }
        if self.jwt_leeway > MAX_LEEWAY_SECS {
            return Err(format!("jwt_leeway must be at most {MAX_LEEWAY_SECS} seconds"));
        }
        self.validate_tiering()?;
        if self.jwt_issuer.is_empty() || self.jwt_audience.is_empty() {
            return Err("jwt_issuer and jwt_audience must not be empty".to_owned());
        }
        if !(1..=10_000_000).contains(&self.snapshot_every) {
            return Err("snapshot_every must be 1-10000000 entries".to_owned());
        }
        if !(64 << 10..=1 << 30).contains(&self.segment_bytes) {
            return Err("segment_bytes must be 65536-1073741824 bytes".to_owned());
        }
        if !(60..=24 * 3600).contains(&self.access_token_ttl) {
            return Err("access_token_ttl must be 60-86400 seconds".to_owned());
        }
        if !(60..=365 * 24 * 3600).contains(&self.refresh_token_ttl) {
            return Err("refresh_token_ttl must be 60 seconds to 365 days".to_owned());
        }
        let max_cache_ttl_ms = crate::auth::MAX_CACHE_TTL.as_millis();
        if u128::from(self.credential_cache_ttl_ms) > max_cache_ttl_ms {
            return Err(format!("credential_cache_ttl_ms must be at most {max_cache_ttl_ms}"));
        }
        let rates = [
            ("rate_limit_ip_per_second", self.rate_limit_ip_per_second),
            ("rate_limit_ip_burst", self.rate_limit_ip_burst),
            ("rate_limit_credential_per_second", self.rate_limit_credential_per_second),
            ("rate_limit_credential_burst", self.rate_limit_credential_burst),
        ];
        if let Some((name, _)) = rates.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1 (use rate_limit = off to disable limits)"));
        }
        if !(1..=MAX_MAX_DELAY_MS).contains(&self.max_delay_ms) {
            return Err(format!("max_delay_ms must be 1-{MAX_MAX_DELAY_MS} (100 years)"));
        }
        if !(100..=3_600_000).contains(&self.body_read_timeout_ms) {
            return Err("body_read_timeout_ms must be 100-3600000".to_owned());
        }
        if self.keep_alive_secs > 86_400 {
            return Err("keep_alive_secs must be 0-86400".to_owned());
        }
        if !(100..=600_000).contains(&self.request_head_timeout_ms) {
            return Err("request_head_timeout_ms must be 100-600000".to_owned());
        }
        for issuer in &self.external_issuers {
            if !matches!(issuer.algorithm.as_str(), "RS256" | "EdDSA") {
                return Err(format!("external issuer {}: algorithm must be RS256 or EdDSA", issuer.issuer));
            }
        }
        Ok(())
    }

    /// The gateway's settings.
    pub fn gateway(&self) -> GatewayConfig {
        let limit = |per_second, burst| RateLimitConfig {
            enabled: self.rate_limit,
            trusted_proxies: self.trusted_proxies.clone(),
            ..RateLimitConfig::per_second(per_second, burst)
        };
        GatewayConfig {
            rate_limit: limit(self.rate_limit_ip_per_second, self.rate_limit_ip_burst),
            credential_rate_limit: limit(self.rate_limit_credential_per_second, self.rate_limit_credential_burst),
            max_delay_ms: self.max_delay_ms,
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            keep_alive: Duration::from_secs(self.keep_alive_secs),
            access_log: self.access_log,
            request_head_timeout: Duration::from_millis(self.request_head_timeout_ms),
            push_allow_private_networks: self.push_allow_private_networks,
            push_resolver: None,
        }
    }

    /// The auth settings with the given HS256 secret.
    /// Whether this node is one of several (peers other than itself are configured).
    pub fn clustered(&self) -> bool {
        self.peers.iter().any(|(id, _)| *id != self.node_id)
    }

    /// Whether this node serves a cluster port: a node with a cluster secret does (so nodes can
    /// be added to it), others run as a cluster of one without it.
    pub fn serves_cluster_port(&self) -> bool {
        self.cluster_secret.is_some()
    }

    /// The cluster settings of the broker, with the cluster port the caller bound
    /// (`cluster_listen`); `None` for a node without a cluster secret.
    pub fn broker_cluster(
        &self,
        api_addr: SocketAddr,
        listener: std::net::TcpListener,
    ) -> Option<depot_broker::cluster::ClusterOptions> {
        let secret = self.cluster_secret.clone()?;
        let peers = if self.peers.is_empty() {
            vec![(self.node_id, self.cluster_listen.to_string())]
        } else {
            self.peers.clone()
        };
        let wait_for = self.wait_for.map_or(peers.len(), |n| n as usize);
        Some(depot_broker::cluster::ClusterOptions {
            listener: std::sync::Arc::new(listener),
            secret,
            peers,
            api_addr: api_addr.to_string(),
            wait_for,
            startup: Default::default(),
            tls: None,
        })
    }

    /// TLS on the cluster port from the three PEM files, when they are set.
    pub fn cluster_tls(&self) -> Result<Option<depot_broker::net::tls::ClusterTls>, String> {
        let (Some(cert), Some(key), Some(ca)) = (&self.cluster_tls_cert, &self.cluster_tls_key, &self.cluster_tls_ca)
        else {
            return Ok(None);
        };
        let read = |path: &PathBuf| std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()));
        depot_broker::net::tls::ClusterTls::from_pem(&read(cert)?, &read(key)?, &read(ca)?).map(Some)
    }

    pub fn auth(&self, jwt_secret: Vec<u8>) -> AuthConfig {
        AuthConfig {
            jwt_secret,
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            access_ttl: Duration::from_secs(self.access_token_ttl),
            refresh_ttl: Duration::from_secs(self.refresh_token_ttl),
            leeway_secs: self.jwt_leeway,
            cache_ttl: Duration::from_millis(self.credential_cache_ttl_ms),
            password_workers: crate::auth::password::default_workers(),
            password_wait: crate::auth::password::DEFAULT_WAIT,
            login_max_failures: crate::auth::login_limit::DEFAULT_MAX_FAILURES,
            login_failure_window: crate::auth::login_limit::DEFAULT_WINDOW,
            external: self
                .external_issuers
                .iter()
                .map(|e| ExternalIssuer {
                    algorithm: if e.algorithm == "EdDSA" {
                        jsonwebtoken::Algorithm::EdDSA
                    } else {
                        jsonwebtoken::Algorithm::RS256
                    },
                    public_key_pem: e.public_key_pem.clone(),
                    issuer: e.issuer.clone(),
                    audience: e.audience.clone(),
                })
                .collect(),
        }
    }

    pub fn uses_postgres(&self) -> bool {
        self.metadata_url.as_deref().is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
    }

    /// The Postgres pool's settings.
    pub fn pool_options(&self) -> PoolOptions {
        let timeout = Duration::from_millis(self.metadata_timeout_ms);
        PoolOptions {
            max_size: self.metadata_pool_size,
            wait_timeout: timeout,
            create_timeout: timeout,
            recycle_timeout: timeout,
            query_timeout: timeout,
        }
    }

    /// The embedded store's file.
    pub fn sqlite_path(&self) -> PathBuf {
        match self.metadata_url.as_deref().and_then(|u| u.strip_prefix("sqlite:")) {
            Some(path) => PathBuf::from(path.trim_start_matches("//")),
            None => self.data_dir.join("metadata.sqlite"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn load(mode: Mode, args: &[&str], env: &[(&str, &str)], file: Option<&str>) -> Result<Config, String> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let file = file.map(str::to_owned);
        let read = move |_: &str| file.clone().ok_or_else(|| "no such file".to_owned());
        match Config::load(mode, &Sources { args: &args, env: &lookup, read_file: &read })? {
            Loaded::Config(c) => Ok(*c),
            Loaded::Help => Err("help".to_owned()),
        }
    }

    #[test]
    fn file_then_env_then_flags() {
        let file = "listen = \"127.0.0.1:1\"\nrate_limit_ip_burst = 7\naccess_token_ttl = 120\ntrusted_proxies = [\"10.0.0.1\", \"10.1.0.0/16\"]\n";
        let c = load(
            Mode::Serve,
            &["--config", "f.toml", "--access-token-ttl", "300"],
            &[("DEPOT_LISTEN", "127.0.0.1:2"), ("DEPOT_ACCESS_TOKEN_TTL", "200")],
            Some(file),
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:2".parse().unwrap(), "env beats the file");
        assert_eq!(c.access_token_ttl, 300, "flags beat env");
        assert_eq!(c.rate_limit_ip_burst, 7, "the file beats defaults");
        assert_eq!(c.trusted_proxies.len(), 2);
        assert!(c.trusted_proxies[1].contains(&"10.1.200.3".parse::<IpAddr>().unwrap()));
        assert!(!c.trusted_proxies[0].contains(&"10.0.0.2".parse::<IpAddr>().unwrap()));
        assert_eq!(c.data_dir, PathBuf::from("depot-data"));
    }

    #[test]
    fn trusted_proxies_take_addresses_and_ranges() {
        let c =
            load(Mode::Serve, &["--trusted-proxies", "192.168.0.0/24, ::ffff:10.0.0.7,fd00::/8"], &[], None).unwrap();
        let trusted = |ip: &str| c.trusted_proxies.iter().any(|n| n.contains(&ip.parse::<IpAddr>().unwrap()));
        assert!(trusted("192.168.0.200") && trusted("10.0.0.7") && trusted("fd12::1"));
        assert!(!trusted("192.168.1.1") && !trusted("10.0.0.8") && !trusted("fe80::1"));
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "proxy.example", "10.0.0/8"] {
            let e = load(Mode::Serve, &["--trusted-proxies", bad], &[], None).unwrap_err();
            assert!(e.contains("trusted-proxies") || e.contains("trusted_proxies"), "{bad}: {e}");
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn modes_differ_in_defaults() {
        assert!(load(Mode::Dev, &[], &[], None).unwrap().listen.ip().is_loopback());
        assert!(!load(Mode::Serve, &[], &[], None).unwrap().listen.ip().is_loopback());
        let c = load(Mode::Dev, &["--listen=127.0.0.1:0", "--rate-limit", "off"], &[], None).unwrap();
        assert_eq!(c.listen.port(), 0);
        assert!(!c.rate_limit);
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let e = load(Mode::Serve, &["--bogus", "1"], &[], None).unwrap_err();
        assert!(e.contains("--bogus"), "{e}");
        let e = load(Mode::Serve, &["--listen", "nowhere"], &[], None).unwrap_err();
        assert!(e.contains("--listen"), "{e}");
        let e = load(Mode::Serve, &[], &[("DEPOT_JWT_SECRET", "short")], None).unwrap_err();
        assert!(e.contains("jwt_secret"), "{e}");
        let e = load(Mode::Serve, &["--jwt-leeway", "60"], &[], None).unwrap_err();
        assert!(e.contains("jwt_leeway"), "{e}");
        let e = load(Mode::Serve, &["--config", "f"], &[], Some("nope = 1")).unwrap_err();
        assert!(e.contains("unknown setting \"nope\""), "{e}");
        let e = load(Mode::Serve, &["--peers", "1=a:1,2=b:1"], &[], None).unwrap_err();
        assert!(e.contains("--metadata-url postgres://"), "a cluster without Postgres: {e}");
        let pg = ["--metadata-url", "postgres://u@127.0.0.1/depot"];
        let cluster = |extra: &[&str]| {
            let mut args = vec!["--peers", "1=a:1,2=b:1,3=c:1"];
            args.extend_from_slice(&pg);
            args.extend_from_slice(extra);
            load(Mode::Serve, &args, &[], None)
        };
        let e = cluster(&[]).unwrap_err();
        assert!(e.contains("cluster_secret: required"), "{e}");
        let e = cluster(&["--cluster-secret", "short"]).unwrap_err();
        assert!(e.contains("at least 16 bytes"), "{e}");
        let ok = cluster(&["--cluster-secret", "0123456789abcdef"]).unwrap();
        assert!(ok.clustered());
        let e = cluster(&["--cluster-secret", "0123456789abcdef", "--node-id", "4"]).unwrap_err();
        assert!(e.contains("id 4 is not in the list"), "{e}");
        let e = cluster(&["--cluster-secret", "0123456789abcdef", "--wait-for", "4"]).unwrap_err();
        assert!(e.contains("wait_for must be 1-3"), "{e}");
        let e = load(Mode::Serve, &["--peers", "1=a:1,1=b:1", "--cluster-secret", "0123456789abcdef"], &[], None)
            .unwrap_err();
        assert!(e.contains("distinct"), "{e}");
        let e = load(Mode::Serve, &["--metadata-url", "mysql://x"], &[], None).unwrap_err();
        assert!(e.contains("postgres://"), "{e}");
        let c = load(Mode::Serve, &["--metadata-url", "postgres://u@127.0.0.1/depot"], &[], None).unwrap();
        assert!(c.uses_postgres());
        let e =
            load(Mode::Serve, &["--metadata-url", "postgres://u:pw@h/depot?sslmode=verfy-ca"], &[], None).unwrap_err();
        assert!(e.contains("sslmode=\"verfy-ca\" is not supported") && !e.contains("pw@"), "{e}");
        let file =
            "metadata_url = \"postgres://u@h/depot?sslmode=verify-full\"\nmetadata_ca_file = \"/etc/depot/pg.pem\"";
        let c = load(Mode::Serve, &["--config", "f.toml"], &[], Some(file)).unwrap();
        assert_eq!(c.metadata_ca_file.as_deref(), Some(std::path::Path::new("/etc/depot/pg.pem")));
        let c = load(Mode::Serve, &[], &[("DEPOT_METADATA_CA_FILE", "/x.pem")], None).unwrap();
        assert_eq!(c.metadata_ca_file.as_deref(), Some(std::path::Path::new("/x.pem")));
        let e = load(Mode::Serve, &["--listen"], &[], None).unwrap_err();
        assert!(e.contains("--listen") && e.contains("value"), "{e}");
        let e = load(Mode::Serve, &["--rate-limit-ip-burst", "0"], &[], None).unwrap_err();
        assert!(e.contains("rate_limit_ip_burst"), "{e}");
        let e = load(Mode::Serve, &["--max-delay-ms", "9223372036854775807"], &[], None).unwrap_err();
        assert!(e.contains("max_delay_ms must be"), "{e}");
        let e = load(Mode::Serve, &["--body-read-timeout-ms", "0"], &[], None).unwrap_err();
        assert!(e.contains("body_read_timeout_ms must be"), "{e}");
        let c = load(Mode::Serve, &["--max-delay-ms", "1000", "--body-read-timeout-ms", "500"], &[], None).unwrap();
        assert_eq!(c.gateway().max_delay_ms, 1000);
        assert_eq!(c.gateway().body_read_timeout, Duration::from_millis(500));
        assert_eq!(Config::defaults(Mode::Serve).gateway().max_delay_ms, 365 * 24 * 3600 * 1000);
    }

    #[test]
    fn the_cluster_secret_comes_from_a_file_or_the_environment() {
        let read = |path: &str| match path {
            "/run/depot/secret" => Ok("0123456789abcdef-from-file\n".to_owned()),
            "/crlf" => Ok("0123456789abcdef-crlf\r\n".to_owned()),
            "/spaces" => Ok(" 0123456789abcdef \n".to_owned()),
            "/empty" => Ok(String::new()),
            "/newline" => Ok("\n".to_owned()),
            "/short" => Ok("short\n".to_owned()),
            _ => Err(format!("reading {path}: No such file or directory")),
        };
        let run = |args: &[&str], env: &[(&str, &str)], config: Option<&str>| {
            let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
            let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let config = config.map(str::to_owned);
            let read = move |path: &str| match (path, &config) {
                ("depot.toml", Some(text)) => Ok(text.clone()),
                _ => read(path),
            };
            match Config::load(Mode::Serve, &Sources { args: &args, env: &lookup, read_file: &read }) {
                Ok(Loaded::Config(c)) => Ok(c.cluster_secret),
                Ok(Loaded::Help) => Err("help".to_owned()),
                Err(e) => Err(e),
            }
        };
        let secret = |s: &str| Ok(Some(s.to_owned()));
        assert_eq!(
            run(&["--cluster-secret-file", "/run/depot/secret"], &[], None),
            secret("0123456789abcdef-from-file")
        );
        assert_eq!(run(&["--cluster-secret-file", "/crlf"], &[], None), secret("0123456789abcdef-crlf"));
        assert_eq!(
            run(&["--cluster-secret-file", "/spaces"], &[], None),
            secret(" 0123456789abcdef "),
            "only the newline goes"
        );
        assert_eq!(
            run(&[], &[("DEPOT_CLUSTER_SECRET_FILE", "/run/depot/secret")], None),
            secret("0123456789abcdef-from-file")
        );
        let toml = "cluster_secret_file = \"/run/depot/secret\"\n";
        assert_eq!(run(&["--config", "depot.toml"], &[], Some(toml)), secret("0123456789abcdef-from-file"));
        assert_eq!(run(&[], &[("DEPOT_CLUSTER_SECRET", "0123456789abcdef-env")], None), secret("0123456789abcdef-env"));
        assert_eq!(run(&["--cluster-secret", "0123456789abcdef-flag"], &[], None), secret("0123456789abcdef-flag"));

        for (args, env, refused) in [
            (&["--cluster-secret-file", "/empty"][..], &[][..], "cluster_secret_file: /empty is empty"),
            (&["--cluster-secret-file", "/newline"], &[], "cluster_secret_file: /newline is empty"),
            (&["--cluster-secret-file", "/short"], &[], "cluster_secret_file: the cluster secret must be at least 16"),
            (&["--cluster-secret-file", "/missing"], &[], "cluster_secret_file: reading /missing: No such file"),
            (
                &["--cluster-secret-file", "/run/depot/secret"],
                &[("DEPOT_CLUSTER_SECRET", "0123456789abcdef-env")],
                "cluster_secret and cluster_secret_file are both set",
            ),
        ] {
            let e = run(args, env, None).unwrap_err();
            assert!(e.contains(refused), "{args:?}: {e}");
            assert!(!e.contains("from-file") && !e.contains("-env"), "a refusal never echoes the secret: {e}");
        }
        // A flag naming the file overrides the file the config names.
        let toml = "cluster_secret_file = \"/missing\"\n";
        assert_eq!(
            run(&["--config", "depot.toml", "--cluster-secret-file", "/crlf"], &[], Some(toml)),
            secret("0123456789abcdef-crlf")
        );
    }

    #[test]
    fn cluster_tls_takes_all_three_files_and_a_secret() {
        let secret = ["--cluster-secret", "0123456789abcdef"];
        let files =
            ["--cluster-tls-cert", "/no/c.pem", "--cluster-tls-key", "/no/k.pem", "--cluster-tls-ca", "/no/ca.pem"];
        let e = load(Mode::Serve, &[&secret[..], &files[..2]].concat(), &[], None).unwrap_err();
        assert!(e.contains("go together"), "{e}");
        let e = load(Mode::Serve, &files, &[], None).unwrap_err();
        assert!(e.contains("only with a cluster secret"), "{e}");
        let c = load(Mode::Serve, &[&secret[..], &files[..]].concat(), &[], None).unwrap();
        let e = c.cluster_tls().unwrap_err();
        assert!(e.contains("reading /no/c.pem"), "{e}");
        assert!(load(Mode::Serve, &secret, &[], None).unwrap().cluster_tls().unwrap().is_none());
    }

    #[test]
    fn push_to_private_networks_is_off_for_serve_and_on_for_dev_unless_configured() {
        assert!(!Config::defaults(Mode::Serve).gateway().push_allow_private_networks);
        assert!(Config::defaults(Mode::Dev).gateway().push_allow_private_networks);
        let c = load(Mode::Serve, &["--push-allow-private-networks", "on"], &[], None).unwrap();
        assert!(c.gateway().push_allow_private_networks);
        let c = load(Mode::Dev, &[], &[("DEPOT_PUSH_ALLOW_PRIVATE_NETWORKS", "off")], None).unwrap();
        assert!(!c.gateway().push_allow_private_networks);
    }

    #[test]
    fn the_tiering_table_is_read_from_the_file_env_and_flags() {
        // What terraform/modules/node-config renders.
        let file = "node_id = 1\n\n[tiering]\nbucket = \"depot-tiering-1a2b\"\nendpoint = \"https://s3.eu-west-1.amazonaws.com\"\nregion = \"eu-west-1\"\n";
        let c = load(Mode::Serve, &["--config", "f"], &[], Some(file)).unwrap();
        assert_eq!(c.tiering.bucket.as_deref(), Some("depot-tiering-1a2b"));
        assert_eq!(c.tiering.endpoint.as_deref(), Some("https://s3.eu-west-1.amazonaws.com"));
        assert_eq!(c.tiering.region.as_deref(), Some("eu-west-1"));
        assert_eq!((c.tiering.path_style, c.tiering.cache_bytes), (false, 1 << 30));
        let c = load(
            Mode::Serve,
            &["--config", "f", "--tiering-path-style", "on"],
            &[("DEPOT_TIERING_PREFIX", "node-1/"), ("DEPOT_TIERING_CACHE_BYTES", "33554432")],
            Some(file),
        )
        .unwrap();
        assert_eq!(
            (c.tiering.prefix.as_str(), c.tiering.path_style, c.tiering.cache_bytes),
            ("node-1/", true, 32 << 20)
        );
        assert_eq!(load(Mode::Serve, &[], &[], None).unwrap().tiering, Tiering::default());
        for (file, refused) in [
            ("[tiering]\nbucket = \"b-1\"\nsecret = \"x\"\n", "unknown setting \"secret\" in [tiering]"),
            ("[tiering]\nendpoint = \"https://x\"\n", "bucket is required"),
            ("[tiering]\nbucket = \"B\"\n", "tiering.bucket"),
            ("[tiering]\nbucket = \"b-1\"\nendpoint = \"ftp://x\"\n", "tiering.endpoint"),
            ("[tiering]\nbucket = \"b-1\"\ncache_bytes = 1\n", "tiering.cache_bytes"),
            ("[tiering]\nbucket = \"b-1\"\npath_style = \"maybe\"\n", "tiering.path_style"),
            ("tiering = 1\n", "must be a table"),
        ] {
            let e = load(Mode::Serve, &["--config", "f"], &[], Some(file)).unwrap_err();
            assert!(e.contains(refused), "{file:?}: {e}");
        }
    }

    #[test]
    fn help_lists_every_setting_with_env_and_default() {
        let h = help(Mode::Serve);
        for s in SETTINGS {
            assert!(h.contains(&s.flag()) && h.contains(&s.env()), "{}", s.name);
        }
        assert!(h.contains("default 0.0.0.0:4444"));
        assert!(matches!(load(Mode::Serve, &["--help"], &[], None), Err(e) if e == "help"));
    }
}
