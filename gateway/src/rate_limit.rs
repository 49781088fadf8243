//! Rate limits, free of HTTP: the keyed limiter over `governor` ([`RateLimiter`]) and a refusal
//! by any limit ([`Limited`]: per client IP, per credential, per username at login), which the
//! HTTP error renders as 429. A leaf: the middleware, auth, the state and the HTTP error all use
//! it without importing one another.
//!
//! Requests are keyed by client IP (the TCP peer; `X-Forwarded-For` only when the peer is a
//! configured trusted proxy), IPv6 by /64 so rotating addresses within one allocation shares a
//! bucket; after authentication, by credential.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

/// Why a request was refused by a rate limit, for the 429 headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limited {
    /// Which limit: `ip`, `credential` or `login`.
    pub policy: &'static str,
    /// Seconds until a request would pass, rounded up, at least 1.
    pub retry_after: u64,
    pub burst: u32,
    /// Seconds for an empty bucket to refill completely, rounded up.
    pub window: u64,
}

impl Limited {
    pub fn policy_header(&self) -> String {
        format!("\"{}\";q={};w={}", self.policy, self.burst, self.window)
    }

    pub fn ratelimit_header(&self) -> String {
        format!("\"{}\";r=0;t={}", self.policy, self.retry_after)
    }
}

/// The quota and how clients are identified.
#[derive(Clone, Debug)]
pub struct RateLimitConfig {
    /// Off: every request passes.
    pub enabled: bool,
    /// Sustained rate: `requests` per `period`.
    pub requests: u32,
    pub period: Duration,
    /// Requests allowed at once before the sustained rate applies.
    pub burst: u32,
    /// Peers whose `X-Forwarded-For` is believed (exact addresses). Empty: never believed.
    /// Proxies (single addresses or CIDR ranges) whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for RateLimitConfig {
    /// Generous: 1000 requests per second per client IP, bursts of 2000.
    fn default() -> RateLimitConfig {
        RateLimitConfig::per_second(1000, 2000)
    }
}

impl RateLimitConfig {
    pub fn per_second(requests: u32, burst: u32) -> RateLimitConfig {
        RateLimitConfig { enabled: true, requests, period: Duration::from_secs(1), burst, trusted_proxies: Vec::new() }
    }

    fn quota(&self) -> Quota {
        let requests = self.requests.max(1);
        let interval = (self.period / requests).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(interval).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)).allow_burst(burst)
    }
}

/// What a bucket belongs to: the client IP before authentication, the credential after.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// A client IP; IPv6 masked to its /64.
    Ip(IpAddr),
    /// An authenticated principal (user, `api_key:<id>` or `external:<sub>`).
    Credential(String),
}

impl RateKey {
    /// The key of an IP: IPv4 (and IPv4-mapped IPv6) as is, IPv6 by /64.
    pub fn ip(ip: IpAddr) -> RateKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => RateKey::Ip(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let masked = u128::from(v6) & (u128::MAX << 64);
                RateKey::Ip(IpAddr::V6(Ipv6Addr::from(masked)))
            }
        }
    }
}

/// The shared keyed limiter.
pub struct RateLimiter {
    policy: &'static str,
    config: RateLimitConfig,
    quota: Quota,
    limiter: DefaultKeyedRateLimiter<RateKey>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("config", &self.config).field("keys", &self.len()).finish()
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl RateLimiter {
    /// The per-IP limiter.
    pub fn new(config: RateLimitConfig) -> RateLimiter {
        RateLimiter::named("ip", config)
    }

    /// A limiter whose 429 headers name `policy`.
    pub fn named(policy: &'static str, config: RateLimitConfig) -> RateLimiter {
        let quota = config.quota();
        RateLimiter { policy, limiter: governor::RateLimiter::keyed(quota), quota, config }
    }

    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Takes one request from `key`'s bucket.
    pub fn check(&self, key: &RateKey) -> Result<(), Limited> {
        if !self.config.enabled {
            return Ok(());
        }
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            Limited {
                policy: self.policy,
                retry_after: ceil_secs(wait).max(1),
                burst: self.quota.burst_size().get(),
                window: ceil_secs(self.quota.burst_size_replenished_in()).max(1),
            }
        })
    }

    /// The key of a request: the TCP peer, or the client named by `X-Forwarded-For` when the
    /// peer is a trusted proxy (the rightmost address that is not itself a trusted proxy).
    pub fn key_for(&self, peer: Option<SocketAddr>, forwarded_for: Option<&str>) -> RateKey {
        RateKey::ip(self.client_ip(peer, forwarded_for))
    }

    /// The client's address: the TCP peer, or the client named by `X-Forwarded-For` when the
    /// peer is a trusted proxy.
    pub fn client_ip(&self, peer: Option<SocketAddr>, forwarded_for: Option<&str>) -> IpAddr {
        let peer = peer.map(|p| p.ip().to_canonical()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let trusted = |ip: &IpAddr| self.config.trusted_proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        let client = forwarded_for.and_then(|xff| {
            xff.rsplit(',')
                .map(|hop| hop.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical()))
                .take_while(Option::is_some)
                .flatten()
                .find(|ip| !trusted(ip))
        });
        client.unwrap_or(peer)
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }

    /// Forgets keys whose bucket is full again (indistinguishable from a new one) and gives the
    /// memory back. Returns the keys left.
    pub fn prune(&self) -> usize {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.limiter.len()
    }
}
