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

use depot_broker::disk::MinFree;
use serde::Deserialize;

use crate::auth::{AuthConfig, MAX_LEEWAY_SECS};
use crate::meta::postgres::PoolOptions;
use crate::rate_limit::RateLimitConfig;

mod components;
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

/// `Debug` shows every setting but the secrets: `cluster_secret`, `jwt_secret` and
/// `metadata_url` (which may hold the Postgres password) print as whether they are set.
#[derive(Clone, PartialEq, Eq)]
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

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured, so that a new field cannot be left out (or printed) unnoticed.
        let Config {
            node_id,
            listen,
            cluster_listen,
            peers,
            data_dir,
            disk_free_min,
            max_open_files,
            snapshot_every,
            segment_bytes,
            metadata_url,
            metadata_ca_file,
            metadata_pool_size,
            metadata_timeout_ms,
            cluster_secret,
            cluster_secret_file,
            cluster_tls_cert,
            cluster_tls_key,
            cluster_tls_ca,
            cluster_id,
            wait_for,
            jwt_secret,
            jwt_issuer,
            jwt_audience,
            jwt_leeway,
            access_token_ttl,
            refresh_token_ttl,
            credential_cache_ttl_ms,
            external_issuers,
            rate_limit,
            rate_limit_ip_per_second,
            rate_limit_ip_burst,
            rate_limit_credential_per_second,
            rate_limit_credential_burst,
            trusted_proxies,
            max_delay_ms,
            body_read_timeout_ms,
            access_log,
            keep_alive_secs,
            request_head_timeout_ms,
            push_allow_private_networks,
            tiering,
        } = self;
        f.debug_struct("Config")
            .field("node_id", node_id)
            .field("listen", listen)
            .field("cluster_listen", cluster_listen)
            .field("peers", peers)
            .field("data_dir", data_dir)
            .field("disk_free_min", disk_free_min)
            .field("max_open_files", max_open_files)
            .field("snapshot_every", snapshot_every)
            .field("segment_bytes", segment_bytes)
            .field("metadata_url", &metadata_url.as_ref().map(|_| Redacted))
            .field("metadata_ca_file", metadata_ca_file)
            .field("metadata_pool_size", metadata_pool_size)
            .field("metadata_timeout_ms", metadata_timeout_ms)
            .field("cluster_secret", &cluster_secret.as_ref().map(|_| Redacted))
            .field("cluster_secret_file", cluster_secret_file)
            .field("cluster_tls_cert", cluster_tls_cert)
            .field("cluster_tls_key", cluster_tls_key)
            .field("cluster_tls_ca", cluster_tls_ca)
            .field("cluster_id", cluster_id)
            .field("wait_for", wait_for)
            .field("jwt_secret", &jwt_secret.as_ref().map(|_| Redacted))
            .field("jwt_issuer", jwt_issuer)
            .field("jwt_audience", jwt_audience)
            .field("jwt_leeway", jwt_leeway)
            .field("access_token_ttl", access_token_ttl)
            .field("refresh_token_ttl", refresh_token_ttl)
            .field("credential_cache_ttl_ms", credential_cache_ttl_ms)
            .field("external_issuers", external_issuers)
            .field("rate_limit", rate_limit)
            .field("rate_limit_ip_per_second", rate_limit_ip_per_second)
            .field("rate_limit_ip_burst", rate_limit_ip_burst)
            .field("rate_limit_credential_per_second", rate_limit_credential_per_second)
            .field("rate_limit_credential_burst", rate_limit_credential_burst)
            .field("trusted_proxies", trusted_proxies)
            .field("max_delay_ms", max_delay_ms)
            .field("body_read_timeout_ms", body_read_timeout_ms)
            .field("access_log", access_log)
            .field("keep_alive_secs", keep_alive_secs)
            .field("request_head_timeout_ms", request_head_timeout_ms)
            .field("push_allow_private_networks", push_allow_private_networks)
            .field("tiering", tiering)
            .finish()
    }
}

/// Stands for a secret in `Debug` output.
struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
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
}

#[cfg(test)]
mod tests;
