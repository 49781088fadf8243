//! A fault-injecting TCP proxy for one directed link between two nodes: it listens on a loopback
//! port of its own and forwards every connection to the target address, unless told otherwise.
//!
//! Modes: [`Mode::Pass`] forwards; [`Mode::Blackhole`] closes the connections it holds and holds
//! new ones open without forwarding a byte (a dialer sees a connection that never answers) until
//! the mode changes, then closes them; [`Mode::Refuse`] closes new connections at once. A mode
//! change closes every existing connection at once (forwarded or held), except a change to the
//! mode already set, which does nothing. Plain std threads: one accepting, one per held
//! connection, two per forwarded one. Everything stops when the proxy is dropped.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long the proxy waits for the target to accept a forwarded connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Blackhole,
    Refuse,
}

struct State {
    mode: Mode,
    stopped: bool,
    /// The sockets of every open connection (both ends of a forwarded one), by connection.
    conns: HashMap<u64, Vec<TcpStream>>,
    next_conn: u64,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled on every mode change and on stop.
    changed: Condvar,
    /// Bumped (under the state lock) on every mode change and on stop. A connection ends as soon
    /// as it sees an epoch other than the one it was opened in, so no byte crosses after a change.
    epoch: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a connection opened in `epoch`; `None` (and the sockets are closed) if the mode
    /// changed since.
    fn register(&self, epoch: u64, sockets: Vec<TcpStream>) -> Option<u64> {
        let mut state = self.lock();
        if state.stopped || self.epoch.load(Ordering::SeqCst) != epoch {
            drop(state);
            for s in sockets {
                let _ = s.shutdown(Shutdown::Both);
            }
            return None;
        }
        let id = state.next_conn;
        state.next_conn += 1;
        state.conns.insert(id, sockets);
        Some(id)
    }

    /// Closes connection `id` (both ends), if it is still open.
    fn close(&self, id: u64) {
        let sockets = self.lock().conns.remove(&id);
        for s in sockets.into_iter().flatten() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Moves to a new epoch and closes every connection. Called with the lock held.
    fn bump(&self, state: &mut State) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for s in state.conns.drain().flat_map(|(_, sockets)| sockets) {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.changed.notify_all();
    }
}

pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards to `target`, starting in [`Mode::Pass`].
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State { mode: Mode::Pass, stopped: false, conns: HashMap::new(), next_conn: 0 }),
            changed: Condvar::new(),
            epoch: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("proxy {addr}->{target}"))
                .spawn(move || accept_loop(listener, target, shared))
                .unwrap()
        };
        Proxy { addr, target, shared, acceptor: Some(acceptor) }
    }

    /// Where the proxy listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    pub fn mode(&self) -> Mode {
        self.shared.lock().mode
    }

    /// Switches mode; a change closes every open connection.
    pub fn set_mode(&self, mode: Mode) {
        let mut state = self.shared.lock();
        if state.mode != mode {
            state.mode = mode;
            self.shared.bump(&mut state);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stopped = true;
            self.shared.bump(&mut state);
        }
        // Wake the acceptor, which then sees `stopped`.
        let _ = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    for incoming in listener.incoming() {
        let (mode, stopped, epoch) = {
            let state = shared.lock();
            (state.mode, state.stopped, shared.epoch.load(Ordering::SeqCst))
        };
        if stopped {
            return;
        }
        let Ok(client) = incoming else {
            // Out of file descriptors or an aborted handshake: let it pass.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = client.set_nodelay(true);
        let shared = shared.clone();
        match mode {
            Mode::Refuse => drop(client),
            Mode::Blackhole => {
                thread::spawn(move || hold(client, epoch, &shared));
            }
            Mode::Pass => {
                thread::spawn(move || forward(client, target, epoch, &shared));
            }
        }
    }
}

/// Keeps a blackholed connection open, reading nothing, until the mode changes.
fn hold(client: TcpStream, epoch: u64, shared: &Shared) {
    let Some(id) = client.try_clone().ok().and_then(|c| shared.register(epoch, vec![c])) else {
        return;
    };
    let mut state = shared.lock();
    while !state.stopped && shared.epoch.load(Ordering::SeqCst) == epoch {
        state = shared.changed.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
    }
    drop(state);
    shared.close(id);
}

fn forward(client: TcpStream, target: SocketAddr, epoch: u64, shared: &Arc<Shared>) {
    let Ok(server) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
        return; // The target is down: the dialer sees its connection closed.
    };
    let _ = server.set_nodelay(true);
    let clones = (client.try_clone(), server.try_clone(), client.try_clone(), server.try_clone());
    let (Ok(c1), Ok(s1), Ok(c2), Ok(s2)) = clones else {
        return;
    };
    let Some(id) = shared.register(epoch, vec![c1, s1]) else {
        return;
    };
    let back = {
        let shared = shared.clone();
        thread::spawn(move || pump(server, c2, epoch, id, &shared))
    };
    pump(client, s2, epoch, id, shared);
    let _ = back.join();
}

/// Copies `from` to `to` until either side closes or the epoch moves on, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream, epoch: u64, id: u64, shared: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if shared.epoch.load(Ordering::SeqCst) != epoch || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    shared.close(id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;
    use std::time::Instant;

    /// An echo server on a loopback port; its threads end with the test process.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        conn
    }

    /// Writes `msg` and expects it echoed back.
    fn echoes(conn: &mut TcpStream, msg: &[u8]) -> bool {
        if conn.write_all(msg).is_err() {
            return false;
        }
        let mut got = vec![0u8; msg.len()];
        conn.read_exact(&mut got).is_ok() && got == msg
    }

    /// The peer closed the connection: a read returns 0 or a reset (not a timeout).
    fn closed(conn: &mut TcpStream) -> bool {
        let mut buf = [0u8; 16];
        match conn.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    }

    /// Nothing arrives within the read timeout, and the connection is still open.
    fn silent(conn: &mut TcpStream) -> bool {
        let mut buf = [0u8; 16];
        matches!(conn.read(&mut buf), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
    }

    #[test]
    fn proxy_modes_pass_blackhole_refuse() {
        let proxy = Proxy::start(echo_server());
        let mut a = connect(proxy.addr());
        assert!(echoes(&mut a, b"hello"));

        // Blackhole: the open connection is closed; a new one is accepted and held silent.
        proxy.set_mode(Mode::Blackhole);
        assert!(closed(&mut a) || !echoes(&mut a, b"x"), "an open connection survived the blackhole");
        let mut held = connect(proxy.addr());
        held.write_all(b"ping").unwrap();
        assert!(silent(&mut held), "a blackholed connection answered or was closed");

        // Setting the same mode again changes nothing.
        proxy.set_mode(Mode::Blackhole);
        assert!(silent(&mut held));

        // Back to pass: the held connection is closed, new ones are forwarded.
        proxy.set_mode(Mode::Pass);
        assert!(closed(&mut held), "a held connection outlived the blackhole");
        let mut b = connect(proxy.addr());
        assert!(echoes(&mut b, b"again"));
        proxy.set_mode(Mode::Pass);
        assert!(echoes(&mut b, b"still"), "heal closed a passing connection");

        // Refuse: existing connections close, new ones are closed at once.
        proxy.set_mode(Mode::Refuse);
        assert!(closed(&mut b));
        let mut c = connect(proxy.addr());
        assert!(closed(&mut c), "a refused connection stayed open");

        proxy.set_mode(Mode::Pass);
        let mut d = connect(proxy.addr());
        assert!(echoes(&mut d, b"back"));

        // Dropped: the port no longer accepts (polled: the listener closes after the join).
        let addr = proxy.addr();
        drop(proxy);
        assert!(closed(&mut d));
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_ok() {
            assert!(Instant::now() < deadline, "the proxy still accepts after drop");
            thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_target_that_is_down_closes_the_dialer() {
        let unused = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = unused.local_addr().unwrap();
        drop(unused);
        let proxy = Proxy::start(target);
        let mut conn = connect(proxy.addr());
        assert!(closed(&mut conn));
    }
}
