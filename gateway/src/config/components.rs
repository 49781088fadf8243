//! What each part of the node gets from the settings: the gateway, the auth layer, the
//! metadata store and the broker's cluster options.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Config;
use crate::auth::{AuthConfig, ExternalIssuer};
use crate::meta::postgres::PoolOptions;
use crate::rate_limit::RateLimitConfig;
use crate::state::GatewayConfig;

impl Config {
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

    /// The auth settings with the given HS256 secret.
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

    /// Whether the metadata store is Postgres (else the embedded one).
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
