//! The table of settings: each one's name (spelled for the file, the environment and the
//! command line), its help, how to show its value and how to set it from text. Loading, layering
//! and validation are in the parent module.

use std::path::PathBuf;

use depot_broker::disk::MinFree;

use super::{Config, Mode};

/// One setting: its name, its help, how to show its value and how to set it from text.
pub struct Setting {
    pub name: &'static str,
    pub help: &'static str,
    pub(super) show: fn(&Config) -> String,
    pub(super) set: fn(&mut Config, &str) -> Result<(), String>,
}

impl Setting {
    pub fn flag(&self) -> String {
        format!("--{}", self.name.replace('_', "-"))
    }

    pub fn env(&self) -> String {
        format!("DEPOT_{}", self.name.to_uppercase())
    }
}

fn parse<T: std::str::FromStr>(v: &str, what: &str) -> Result<T, String> {
    v.trim().parse().map_err(|_| format!("{v:?} is not {what}"))
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "1" | "yes" => Ok(true),
        "false" | "off" | "0" | "no" => Ok(false),
        _ => Err(format!("{v:?} is not on/off")),
    }
}

fn non_empty(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

fn parse_peers(v: &str) -> Result<Vec<(u64, String)>, String> {
    let mut peers = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| format!("peer {part:?} is not id=host:port"))?;
        let id: u64 = parse(id, "a node id")?;
        if !addr.contains(':') {
            return Err(format!("peer {part:?}: the address needs a port"));
        }
        peers.push((id, addr.trim().to_owned()));
    }
    Ok(peers)
}

fn show_opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "(unset)".to_owned(), ToString::to_string)
}

fn show_path(v: &Option<PathBuf>) -> String {
    v.as_ref().map_or_else(|| "(unset)".to_owned(), |p| p.display().to_string())
}

/// Every setting but the file-only `external_issuers`.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "node_id",
        help: "Raft node id of this node",
        show: |c| c.node_id.to_string(),
        set: |c, v| {
            c.node_id = parse(v, "a node id")?;
            Ok(())
        },
    },
    Setting {
        name: "listen",
        help: "address of the public HTTP API",
        show: |c| c.listen.to_string(),
        set: |c, v| {
            c.listen = parse(v, "an address like 0.0.0.0:4444")?;
            Ok(())
        },
    },
    Setting {
        name: "cluster_listen",
        help: "address of Raft traffic between nodes (never the public API)",
        show: |c| c.cluster_listen.to_string(),
        set: |c, v| {
            c.cluster_listen = parse(v, "an address like 0.0.0.0:6222")?;
            Ok(())
        },
    },
    Setting {
        name: "peers",
        help: "every node of the cluster as id=host:port,...; unset: this node alone",
        show: |c| c.peers.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(","),
        set: |c, v| {
            c.peers = parse_peers(v)?;
            Ok(())
        },
    },
    Setting {
        name: "data_dir",
        help: "directory of the logs, snapshots and embedded metadata",
        show: |c| c.data_dir.display().to_string(),
        set: |c, v| {
            c.data_dir = PathBuf::from(v);
            Ok(())
        },
    },
    Setting {
        name: "disk_free_min",
        help: "free space the data dir's file system keeps: produce answers 507 storage_full below it (acks, deletes and snapshots still write) and /readyz 503; auto = 5%, at least 64 MiB, at most 1 GiB; or N%, a size such as 512MiB, or off",
        show: |c| c.disk_free_min.to_string(),
        set: |c, v| {
            c.disk_free_min = MinFree::parse(v)?;
            Ok(())
        },
    },
    Setting {
        name: "max_open_files",
        help: "station-log files (segments and directories) kept open at once across all stations; the least recently used are closed and reopened when needed; at most half the process's open-file limit is used",
        show: |c| c.max_open_files.to_string(),
        set: |c, v| {
            c.max_open_files = parse(v, "a file count")?;
            if c.max_open_files == 0 {
                return Err("max_open_files must be at least 1".into());
            }
            Ok(())
        },
    },
    Setting {
        name: "snapshot_every",
        help: "Raft entries between snapshots; each snapshot lets the Raft log be purged (1-10000000)",
        show: |c| c.snapshot_every.to_string(),
        set: |c, v| {
            c.snapshot_every = parse(v, "a number of entries")?;
            Ok(())
        },
    },
    Setting {
        name: "segment_bytes",
        help: "size of each segment file of the Raft log and the station logs, in bytes (65536-1073741824)",
        show: |c| c.segment_bytes.to_string(),
        set: |c, v| {
            c.segment_bytes = parse(v, "a number of bytes")?;
            Ok(())
        },
    },
    Setting {
        name: "metadata_url",
        help: "metadata store: postgres://... or sqlite:PATH; unset: <data_dir>/metadata.sqlite",
        show: |c| show_opt(&c.metadata_url),
        set: |c, v| {
            c.metadata_url = non_empty(v);
            Ok(())
        },
    },
    Setting {
        name: "metadata_ca_file",
        help: "PEM file of the CAs that Postgres's certificate must chain to (sslmode verify-ca and verify-full; require then verifies too); the URL's sslrootcert wins; unset: the system's roots",
        show: |c| c.metadata_ca_file.as_ref().map_or_else(|| "(unset)".to_owned(), |p| p.display().to_string()),
        set: |c, v| {
            c.metadata_ca_file = non_empty(v).map(PathBuf::from);
            Ok(())
        },
    },
    Setting {
        name: "metadata_pool_size",
        help: "Postgres connections per node",
        show: |c| c.metadata_pool_size.to_string(),
        set: |c, v| {
            c.metadata_pool_size = parse(v, "a connection count")?;
            Ok(())
        },
    },
    Setting {
        name: "metadata_timeout_ms",
        help: "longest wait on Postgres for a connection or a query, in milliseconds",
        show: |c| c.metadata_timeout_ms.to_string(),
        set: |c, v| {
            c.metadata_timeout_ms = parse(v, "milliseconds")?;
            Ok(())
        },
    },
    Setting {
        name: "cluster_secret",
        help: "shared secret authenticating cluster traffic, at least 16 bytes; as a flag it shows in the process list: prefer cluster_secret_file or DEPOT_CLUSTER_SECRET",
        show: |c| c.cluster_secret.as_ref().map_or("(unset)", |_| "(set)").to_owned(),
        set: |c, v| {
            c.cluster_secret = non_empty(v);
            Ok(())
        },
    },
    Setting {
        name: "cluster_secret_file",
        help: "file holding the cluster secret (one trailing newline is ignored), read at start; readable by depot's user only",
        show: |c| show_path(&c.cluster_secret_file),
        set: |c, v| {
            c.cluster_secret_file = non_empty(v).map(PathBuf::from);
            Ok(())
        },
    },
    Setting {
        name: "cluster_tls_cert",
        help: "PEM certificate of this node for TLS on the cluster port, naming its cluster address; with cluster_tls_key and cluster_tls_ca",
        show: |c| show_path(&c.cluster_tls_cert),
        set: |c, v| {
            c.cluster_tls_cert = non_empty(v).map(PathBuf::from);
            Ok(())
        },
    },
    Setting {
        name: "cluster_tls_key",
        help: "PEM private key of cluster_tls_cert",
        show: |c| show_path(&c.cluster_tls_key),
        set: |c, v| {
            c.cluster_tls_key = non_empty(v).map(PathBuf::from);
            Ok(())
        },
    },
    Setting {
        name: "cluster_tls_ca",
        help: "PEM CA certificate(s) every node's cluster_tls_cert chains to; peers without such a certificate are refused",
        show: |c| show_path(&c.cluster_tls_ca),
        set: |c, v| {
            c.cluster_tls_ca = non_empty(v).map(PathBuf::from);
            Ok(())
        },
    },
    Setting {
        name: "cluster_id",
        help: "the cluster this node belongs to: a data dir of another cluster is refused; unset: the data dir's own (random when new)",
        show: |c| show_opt(&c.cluster_id),
        set: |c, v| {
            c.cluster_id = non_empty(v);
            Ok(())
        },
    },
    Setting {
        name: "wait_for",
        help: "the cluster goes active once this many members are up; unset: all peers",
        show: |c| show_opt(&c.wait_for),
        set: |c, v| {
            c.wait_for = Some(parse(v, "a member count")?);
            Ok(())
        },
    },
    Setting {
        name: "jwt_secret",
        help: "HS256 secret of access tokens, at least 32 bytes; unset: derived from the cluster secret in a cluster, else generated into <data_dir>/jwt-secret",
        show: |c| c.jwt_secret.as_ref().map_or("(generated)", |_| "(set)").to_owned(),
        set: |c, v| {
            c.jwt_secret = non_empty(v);
            Ok(())
        },
    },
    Setting {
        name: "jwt_issuer",
        help: "`iss` of access tokens",
        show: |c| c.jwt_issuer.clone(),
        set: |c, v| {
            c.jwt_issuer = v.trim().to_owned();
            Ok(())
        },
    },
    Setting {
        name: "jwt_audience",
        help: "`aud` of access tokens",
        show: |c| c.jwt_audience.clone(),
        set: |c, v| {
            c.jwt_audience = v.trim().to_owned();
            Ok(())
        },
    },
    Setting {
        name: "jwt_leeway",
        help: "seconds of clock skew tolerated on exp and nbf, at most 5",
        show: |c| c.jwt_leeway.to_string(),
        set: |c, v| {
            c.jwt_leeway = parse(v, "seconds")?;
            Ok(())
        },
    },
    Setting {
        name: "access_token_ttl",
        help: "seconds an access token lives",
        show: |c| c.access_token_ttl.to_string(),
        set: |c, v| {
            c.access_token_ttl = parse(v, "seconds")?;
            Ok(())
        },
    },
    Setting {
        name: "refresh_token_ttl",
        help: "seconds a refresh token lives",
        show: |c| c.refresh_token_ttl.to_string(),
        set: |c, v| {
            c.refresh_token_ttl = parse(v, "seconds")?;
            Ok(())
        },
    },
    Setting {
        name: "credential_cache_ttl_ms",
        help:
            "milliseconds users and API keys are cached; when the metadata store is down, checks fail closed after it",
        show: |c| c.credential_cache_ttl_ms.to_string(),
        set: |c, v| {
            c.credential_cache_ttl_ms = parse(v, "milliseconds")?;
            Ok(())
        },
    },
    Setting {
        name: "rate_limit",
        help: "rate limiting on or off",
        show: |c| if c.rate_limit { "on" } else { "off" }.to_owned(),
        set: |c, v| {
            c.rate_limit = parse_bool(v)?;
            Ok(())
        },
    },
    Setting {
        name: "rate_limit_ip_per_second",
        help: "requests per second per client IP, before authentication",
        show: |c| c.rate_limit_ip_per_second.to_string(),
        set: |c, v| {
            c.rate_limit_ip_per_second = parse(v, "a rate")?;
            Ok(())
        },
    },
    Setting {
        name: "rate_limit_ip_burst",
        help: "requests at once per client IP",
        show: |c| c.rate_limit_ip_burst.to_string(),
        set: |c, v| {
            c.rate_limit_ip_burst = parse(v, "a count")?;
            Ok(())
        },
    },
    Setting {
        name: "rate_limit_credential_per_second",
        help: "requests per second per credential (user, API key), after authentication",
        show: |c| c.rate_limit_credential_per_second.to_string(),
        set: |c, v| {
            c.rate_limit_credential_per_second = parse(v, "a rate")?;
            Ok(())
        },
    },
    Setting {
        name: "rate_limit_credential_burst",
        help: "requests at once per credential",
        show: |c| c.rate_limit_credential_burst.to_string(),
        set: |c, v| {
            c.rate_limit_credential_burst = parse(v, "a count")?;
            Ok(())
        },
    },
    Setting {
        name: "trusted_proxies",
        help: "comma-separated proxy addresses or CIDR ranges (10.0.0.0/8) whose X-Forwarded-For is believed",
        show: |c| c.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        set: |c, v| {
            c.trusted_proxies = v
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(parse_net)
                .collect::<Result<_, _>>()?;
            Ok(())
        },
    },
    Setting {
        name: "max_delay_ms",
        help: "the longest a message may be withheld (Depot-Delay, Depot-Deliver-At, delay_ms, backoff_ms), in milliseconds; longer is refused with 400",
        show: |c| c.max_delay_ms.to_string(),
        set: |c, v| {
            c.max_delay_ms = parse(v, "milliseconds")?;
            Ok(())
        },
    },
    Setting {
        name: "tiering_bucket",
        help: "[tiering] bucket that sealed segments move to (S3, GCS through its S3 endpoint, DigitalOcean Spaces, ...); unset: tiering off",
        show: |c| show_opt(&c.tiering.bucket),
        set: |c, v| {
            c.tiering.bucket = non_empty(v);
            Ok(())
        },
    },
    Setting {
        name: "tiering_endpoint",
        help: "[tiering] S3-compatible endpoint URL; unset: AWS S3 for the region",
        show: |c| show_opt(&c.tiering.endpoint),
        set: |c, v| {
            c.tiering.endpoint = non_empty(v);
            Ok(())
        },
    },
    Setting {
        name: "tiering_region",
        help: "[tiering] region of the bucket; unset: the AWS SDK's default chain (AWS_REGION, profile)",
        show: |c| show_opt(&c.tiering.region),
        set: |c, v| {
            c.tiering.region = non_empty(v);
            Ok(())
        },
    },
    Setting {
        name: "tiering_prefix",
        help: "[tiering] prefix of every object key",
        show: |c| c.tiering.prefix.clone(),
        set: |c, v| {
            c.tiering.prefix = v.trim().to_owned();
            Ok(())
        },
    },
    Setting {
        name: "tiering_path_style",
        help: "[tiering] path-style addressing (endpoint/bucket/key) instead of virtual-hosted (bucket.endpoint/key)",
        show: |c| c.tiering.path_style.to_string(),
        set: |c, v| {
            c.tiering.path_style = parse_bool(v)?;
            Ok(())
        },
    },
    Setting {
        name: "tiering_part_bytes",
        help: "[tiering] objects larger than this are uploaded in parts of this size (multipart upload), 5 MiB to 5 GiB",
        show: |c| c.tiering.part_bytes.to_string(),
        set: |c, v| {
            c.tiering.part_bytes = parse(v, "a number of bytes")?;
            Ok(())
        },
    },
    Setting {
        name: "tiering_cache_bytes",
        help: "[tiering] bytes of tiered data cached on local disk for reads",
        show: |c| c.tiering.cache_bytes.to_string(),
        set: |c, v| {
            c.tiering.cache_bytes = parse(v, "a number of bytes")?;
            Ok(())
        },
    },
    Setting {
        name: "push_allow_private_networks",
        help: "push delivery (webhooks out) may go to loopback, private (RFC 1918), shared, link-local and unique-local addresses; off by default for depot serve (a guard against SSRF), on for depot dev",
        show: |c| c.push_allow_private_networks.to_string(),
        set: |c, v| {
            c.push_allow_private_networks = parse_bool(v)?;
            Ok(())
        },
    },
    Setting {
        name: "access_log",
        help: "log one INFO line per request (target depot::access: method, route pattern, status, latency, principal, request id; never a token or a path)",
        show: |c| c.access_log.to_string(),
        set: |c, v| {
            c.access_log = parse_bool(v)?;
            Ok(())
        },
    },
    Setting {
        name: "keep_alive_secs",
        help: "seconds an idle client connection is kept open; above load balancers' idle timeouts (AWS 60 s, DigitalOcean 60 s, Google Cloud 600 s) so the balancer, not Depot, closes idle connections (else intermittent 502s); 0 closes after each response",
        show: |c| c.keep_alive_secs.to_string(),
        set: |c, v| {
            c.keep_alive_secs = parse(v, "seconds")?;
            Ok(())
        },
    },
    Setting {
        name: "request_head_timeout_ms",
        help: "milliseconds a client may take to send a request's line and headers, from the connection (or the previous response); a slower one is answered 408 and closed",
        show: |c| c.request_head_timeout_ms.to_string(),
        set: |c, v| {
            c.request_head_timeout_ms = parse(v, "milliseconds")?;
            Ok(())
        },
    },
    Setting {
        name: "body_read_timeout_ms",
        help: "milliseconds a request body may take to arrive; a slower one is answered 408",
        show: |c| c.body_read_timeout_ms.to_string(),
        set: |c, v| {
            c.body_read_timeout_ms = parse(v, "milliseconds")?;
            Ok(())
        },
    },
];

pub(super) fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// A TOML value as the text a flag would carry.
pub(super) fn toml_text(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(items) => items.iter().map(toml_text).collect::<Result<Vec<_>, _>>().map(|v| v.join(",")),
        other => Err(format!("{} is not a value this setting takes", other.type_str())),
    }
}

/// The id of `--config FILE` among a command's arguments.
pub(super) const CONFIG_ARG: &str = "config";

const AFTER_HELP: &str = "Settings are layered: defaults < TOML file (--config or DEPOT_CONFIG) < DEPOT_* \
environment < flags.
DEPOT_ADMIN_PASSWORD (environment only) creates the user admin when the metadata store has no users.
File only: [[external_issuers]] with algorithm = \"RS256\" or \"EdDSA\", public_key_pem, issuer, audience.";

/// `command` with every setting as a flag (`--access-token-ttl VALUE`), documented with its
/// environment variable and its default in `mode`, and `--config FILE`.
pub fn command(command: clap::Command, mode: Mode) -> clap::Command {
    use clap::{Arg, ArgAction};
    let defaults = Config::defaults(mode);
    let config = Arg::new(CONFIG_ARG)
        .long("config")
        .value_name("FILE")
        .env("DEPOT_CONFIG")
        .help("TOML file of settings (names as below, in snake_case); the environment and flags override it");
    SETTINGS
        .iter()
        .fold(command.arg(config), |command, s| {
            command.arg(
                Arg::new(s.name)
                    .long(s.name.replace('_', "-"))
                    .value_name("VALUE")
                    .env(s.env())
                    .action(ArgAction::Set)
                    .allow_hyphen_values(true)
                    .help(format!("{}; default {}", s.help, (s.show)(&defaults))),
            )
        })
        .args_override_self(true)
        .after_help(AFTER_HELP)
}

/// `--help` of a command: every setting with its flag, env var and default.
pub fn help(mode: Mode) -> String {
    command(clap::Command::new(mode.command()), mode).render_help().to_string()
}

/// An address (a single-host range) or a CIDR range.
fn parse_net(text: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(ipnet::IpNet::from(ip.to_canonical()));
    }
    let net: ipnet::IpNet =
        text.parse().map_err(|_| format!("{text:?} is not an IP address or a CIDR range such as 10.0.0.0/8"))?;
    // 10.0.0.1/8 is almost always a typo for 10.0.0.0/8 or 10.0.0.1/32: refused, not widened.
    if net.trunc() != net {
        return Err(format!("{text:?} has host bits set: write {} or a single address", net.trunc()));
    }
    Ok(net)
}
