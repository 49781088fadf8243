//! The address guard: push deliveries never reach loopback, private, link-local, multicast or
//! other internal addresses (SSRF), unless the server allows private networks.
//!
//! The guard checks twice: when a URL is set ([`Guard::check_url`]: a literal host that is
//! blocked, or a name that resolves only to blocked addresses, is refused) and when the client
//! connects ([`Guard::resolve_allowed`] is the client's DNS resolver, so the addresses it
//! connects to are the very ones checked, and a name that rebinds to an internal address after
//! the first check still cannot pass). IPv6 forms that embed an IPv4 address are judged by that
//! address. Research: shared/research/reliability.md section 5.5.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use url::{Host, Url};

/// URLs longer than this are refused (characters of the URL as given).
pub const MAX_URL_LEN: usize = 2048;

/// Whether deliveries must never go to `ip`: true for every address that is not a public
/// unicast address.
pub fn is_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_blocked_v4(v4),
        IpAddr::V6(v6) => is_blocked_v6(v6),
    }
}

fn is_blocked_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network", 0/8 (includes the unspecified address)
        || a == 10 // private, RFC 1918
        || (a == 100 && (64..128).contains(&b)) // shared address space, 100.64/10
        || a == 127 // loopback
        || (a == 169 && b == 254) // link-local, including 169.254.169.254 (cloud metadata)
        || (a == 172 && (16..32).contains(&b)) // private, RFC 1918
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, 192.0.0/24
        || (a == 192 && b == 0 && c == 2) // documentation, TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 192 && b == 168) // private, RFC 1918
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, 198.18/15
        || (a == 198 && b == 51 && c == 100) // documentation, TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // documentation, TEST-NET-3
        || a >= 224 // multicast 224/4, reserved 240/4, broadcast
}

fn is_blocked_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if ip.is_unspecified() || ip.is_loopback() {
        return true;
    }
    match s {
        // IPv4-mapped ::ffff:a.b.c.d and IPv4-compatible ::a.b.c.d (deprecated, but a stack may
        // still route it to the IPv4 address).
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0, 0, hi, lo] => return is_blocked_v4(embedded(hi, lo)),
        // IPv4-translated ::ffff:0:a.b.c.d (SIIT).
        [0, 0, 0, 0, 0xffff, 0, hi, lo] => return is_blocked_v4(embedded(hi, lo)),
        // NAT64 well-known prefix 64:ff9b::/96.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return is_blocked_v4(embedded(hi, lo)),
        _ => {}
    }
    let first = s[0];
    (first == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64, 64:ff9b:1::/48
        || (first == 0x100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard-only, 100::/64
        || (first == 0x2001 && s[1] == 0) // Teredo, 2001::/32: the whole range
        || (first == 0x2001 && s[1] == 0xdb8) // documentation, 2001:db8::/32
        || (first == 0x2002 && is_blocked_v4(embedded(s[1], s[2]))) // 6to4, 2002:a.b.c.d::/48
        || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
        || (first & 0xff00) == 0xff00 // multicast, ff00::/8
        || first == 0 // the rest of ::/16: reserved, never a public destination
}

/// The answer of a [`Resolver`]: the socket addresses of a name (`port` set on each).
pub type ResolveFuture = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Name resolution, behind a trait so that tests inject names that resolve to chosen (private,
/// or first public and then private) addresses.
pub trait Resolver: Send + Sync + 'static {
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture;
}

/// The system's resolver (`getaddrinfo` through tokio).
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture {
        let host = host.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect()) })
    }
}

/// Every address of a name was blocked (or the name resolved to nothing allowed): the error a
/// delivery attempt reports as `"blocked_address"`, found in the client error's source chain.
#[derive(Debug, thiserror::Error)]
#[error("blocked_address")]
pub struct BlockedAddress;

/// Why a connect-time resolution gave no address.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    #[error("host does not resolve: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Blocked(#[from] BlockedAddress),
}

/// The guard of one server: whether private networks are allowed and how names resolve.
#[derive(Clone)]
pub struct Guard {
    allow_private: bool,
    resolver: Arc<dyn Resolver>,
}

impl Guard {
    pub fn new(allow_private: bool, resolver: Arc<dyn Resolver>) -> Guard {
        Guard { allow_private, resolver }
    }

    /// A guard on the system's resolver.
    pub fn system(allow_private: bool) -> Guard {
        Guard::new(allow_private, Arc::new(SystemResolver))
    }

    /// Whether blocked ranges are allowed (`push_allow_private_networks`).
    pub fn allow_private(&self) -> bool {
        self.allow_private
    }

    fn blocks(&self, ip: IpAddr) -> bool {
        !self.allow_private && is_blocked(ip)
    }

    /// The check when a push URL is set: the parsed URL, or a reason for a 400
    /// `invalid_push_url`. A name passes when at least one of its addresses is allowed (the
    /// others are filtered out again on every connect).
    pub async fn check_url(&self, url: &str) -> Result<Url, String> {
        /// A PUT waits this long at most for the name to resolve.
        const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
        if url.len() > MAX_URL_LEN {
            return Err(format!("the URL is longer than {MAX_URL_LEN} characters"));
        }
        let parsed = Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("the scheme must be http or https, not {}", parsed.scheme()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("the URL must not contain a user name or password".to_owned());
        }
        let port = parsed.port_or_known_default().unwrap_or(80);
        match parsed.host() {
            None => Err("the URL has no host".to_owned()),
            Some(Host::Ipv4(ip)) => self.check_literal(IpAddr::V4(ip)).map(|()| parsed.clone()),
            Some(Host::Ipv6(ip)) => self.check_literal(IpAddr::V6(ip)).map(|()| parsed.clone()),
            Some(Host::Domain(name)) => {
                let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, self.resolver.resolve(name, port)).await;
                let addrs = match resolved {
                    Ok(Ok(addrs)) => addrs,
                    Ok(Err(_)) => return Err(format!("host {name} does not resolve")),
                    Err(_) => return Err(format!("resolving host {name} took longer than {RESOLVE_TIMEOUT:?}")),
                };
                if addrs.is_empty() {
                    return Err(format!("host {name} does not resolve"));
                }
                if addrs.iter().all(|a| self.blocks(a.ip())) {
                    return Err(format!(
                        "host {name} resolves only to loopback, private, link-local or other \
                         internal addresses"
                    ));
                }
                Ok(parsed.clone())
            }
        }
    }

    fn check_literal(&self, ip: IpAddr) -> Result<(), String> {
        if self.blocks(ip) {
            Err(format!("{ip} is a loopback, private, link-local or other internal address"))
        } else {
            Ok(())
        }
    }

    /// The addresses a delivery may connect to: the name's addresses less the blocked ones.
    /// Err when none is left, and also when the name does not resolve (nothing to connect to).
    pub async fn resolve_allowed(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, BlockedAddress> {
        self.resolve_filtered(host, port).await.map_err(|_| BlockedAddress)
    }

    /// [`Guard::resolve_allowed`] telling a name that does not resolve from one that resolves
    /// only to blocked addresses (the client reports the first as a connection error).
    pub(crate) async fn resolve_filtered(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let addrs = self.resolver.resolve(host, port).await?;
        if addrs.is_empty() {
            return Err(ResolveError::Io(io::Error::new(io::ErrorKind::NotFound, "no address")));
        }
        let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|a| !self.blocks(a.ip())).collect();
        if allowed.is_empty() {
            return Err(ResolveError::Blocked(BlockedAddress));
        }
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Names resolved from a table; a name absent from it does not resolve.
    struct Table(HashMap<&'static str, Vec<IpAddr>>);

    impl Resolver for Table {
        fn resolve(&self, host: &str, port: u16) -> ResolveFuture {
            let answer = match self.0.get(host) {
                Some(ips) => Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()),
                None => Err(io::Error::new(io::ErrorKind::NotFound, "unknown name")),
            };
            Box::pin(async move { answer })
        }
    }

    fn guard(allow_private: bool) -> Guard {
        let table = HashMap::from([
            ("example.com", vec![ip("93.184.216.34")]),
            ("internal.test", vec![ip("10.1.2.3"), ip("fd00::1")]),
            ("metadata.test", vec![ip("169.254.169.254")]),
            ("mixed.test", vec![ip("127.0.0.1"), ip("93.184.216.34")]),
            ("empty.test", vec![]),
        ]);
        Guard::new(allow_private, Arc::new(Table(table)))
    }

    const BLOCKED: &[&str] = &[
        // IPv4
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "10.255.255.255",
        "100.64.0.1",
        "100.127.255.254",
        "127.0.0.1",
        "127.255.255.254",
        "169.254.0.1",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.8",
        "192.0.2.1",
        "192.88.99.1",
        "192.168.0.1",
        "192.168.255.255",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.7",
        "203.0.113.9",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        // IPv6
        "::",
        "::1",
        "ff02::1",
        "ff0e::1",
        "fe80::1",
        "febf::1",
        "fec0::1",
        "fc00::1",
        "fd12:3456::1",
        "2001:db8::1",
        "100::1",
        // IPv6 embedding a blocked IPv4 address
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:192.168.1.1",
        "::ffff:0:127.0.0.1",
        "::127.0.0.1",
        "::10.0.0.1",
        "64:ff9b::127.0.0.1",
        "64:ff9b::a00:1",
        "64:ff9b::169.254.169.254",
        "64:ff9b:1::8.8.8.8",
        "2002:7f00:1::",
        "2002:a00:1::1",
        "2002:c0a8:101::1",
        "2002:a9fe:a9fe::",
        // Teredo: the whole range, whatever it embeds
        "2001::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    ];

    const ALLOWED: &[&str] = &[
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "100.63.255.255",
        "100.128.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.0.1.1",
        "192.169.0.1",
        "198.17.255.255",
        "198.20.0.0",
        "223.255.255.255",
        "2606:4700::1111",
        "2001:4860:4860::8888",
        "2a00:1450:4001::1",
        "::ffff:8.8.8.8",
        "64:ff9b::8.8.8.8",
        "2002:808:808::1",
    ];

    #[test]
    fn blocked_ranges_are_blocked_and_public_addresses_are_not() {
        for a in BLOCKED {
            assert!(is_blocked(ip(a)), "{a} should be blocked");
        }
        for a in ALLOWED {
            assert!(!is_blocked(ip(a)), "{a} should be allowed");
        }
    }

    #[tokio::test]
    async fn check_url_refuses_the_corpus() {
        let g = guard(false);
        let mut refused = vec![
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://017700000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::1]:8080/hook",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::]/",
            "http://169.254.169.254/latest/meta-data/",
            "https://10.0.0.1/hook",
            "http://0/",
            "http://user@example.com/",
            "http://user:pass@example.com/",
            "http://:pass@example.com/",
            "ftp://example.com/file",
            "file:///etc/passwd",
            "gopher://example.com/",
            "javascript:alert(1)",
            "data:text/plain,hi",
            "not a url",
            "",
            "http://internal.test/",
            "http://metadata.test/",
            "http://unknown.test/",
            "http://empty.test/",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        for a in BLOCKED {
            let host = if a.contains(':') { format!("[{a}]") } else { a.to_string() };
            refused.push(format!("http://{host}/hook"));
        }
        refused.push(format!("https://example.com/{}", "a".repeat(MAX_URL_LEN)));
        for url in &refused {
            let err = g.check_url(url).await.unwrap_err();
            assert!(!err.is_empty(), "{url}");
        }
        assert!(g.check_url("http://unknown.test/").await.unwrap_err().contains("does not resolve"));
    }

    #[tokio::test]
    async fn check_url_accepts_public_destinations() {
        let g = guard(false);
        for url in [
            "http://8.8.8.8/",
            "https://[2606:4700::1111]/hook",
            "https://example.com/hook?x=1",
            "http://example.com:8080/",
            "http://mixed.test/",
        ] {
            let parsed = g.check_url(url).await.unwrap();
            assert!(parsed.as_str().starts_with("http"), "{url}");
        }
    }

    #[tokio::test]
    async fn allow_private_lifts_the_ranges_but_not_the_url_rules() {
        let g = guard(true);
        assert!(g.allow_private());
        for url in [
            "http://127.0.0.1:9000/hook",
            "http://2130706433/",
            "http://[::1]/",
            "http://internal.test/",
            "http://169.254.169.254/",
        ] {
            g.check_url(url).await.unwrap();
        }
        for url in ["http://user@127.0.0.1/", "ftp://127.0.0.1/", "file:///etc/passwd", "http://unknown.test/"] {
            g.check_url(url).await.unwrap_err();
        }
    }

    #[tokio::test]
    async fn resolve_allowed_filters_every_address() {
        let g = guard(false);
        let mixed = g.resolve_allowed("mixed.test", 443).await.unwrap();
        assert_eq!(mixed, vec!["93.184.216.34:443".parse().unwrap()]);
        assert!(g.resolve_allowed("internal.test", 80).await.is_err());
        assert!(g.resolve_allowed("unknown.test", 80).await.is_err());
        assert!(matches!(g.resolve_filtered("unknown.test", 80).await, Err(ResolveError::Io(_))));
        assert!(matches!(g.resolve_filtered("metadata.test", 80).await, Err(ResolveError::Blocked(_))));
        let open = guard(true);
        assert_eq!(open.resolve_allowed("internal.test", 80).await.unwrap().len(), 2);
    }

    #[test]
    fn blocked_address_reads_as_the_attempt_error() {
        assert_eq!(BlockedAddress.to_string(), "blocked_address");
    }
}
