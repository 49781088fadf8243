//! Loopback ports for servers a test or benchmark starts (and may restart) on a known port.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

/// A loopback port free right now, never handed out twice by this process.
///
/// Picked at random below the kernel's ephemeral range where it can, checked by binding: a port
/// from binding `127.0.0.1:0` lies in the ephemeral range, where the process's own outgoing
/// connections can take it between the check and the server's bind.
pub fn free_loopback_port() -> u16 {
    static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    if low > 12_000 {
        for _ in 0..1000 {
            let port = 10_000 + rand::random::<u16>() % (low - 10_000);
            if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                taken.insert(port);
                return port;
            }
        }
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
        .port();
    taken.insert(port);
    port
}

/// `127.0.0.1` on a port from [`free_loopback_port`].
pub fn free_loopback_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_loopback_port()))
}
