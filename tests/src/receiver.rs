//! A webhook receiver for push delivery tests: a real HTTP/1.1 server (actix-web, keep-alive)
//! on 127.0.0.1 and a port of its own, on its own thread and actix system, that records every
//! request and answers as told by a [`Behaviour`] that the test can change at any time.
//!
//! Waiting is on a condition variable (blocking tests) or a tokio `Notify` (async tests whose
//! runtime also drives the sender), never on sleeps. The server stops on drop.

use std::any::Any;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::dev::{Extensions, ServerHandle};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

/// How the receiver answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// This status, empty body.
    Status(u16),
    /// This status with these headers (e.g. `Retry-After`), empty body.
    StatusWithHeaders(u16, Vec<(String, String)>),
    /// This status with this body.
    StatusWithBody(u16, Vec<u8>),
    /// `status` to the first `failures` requests (counted from when this behaviour was set),
    /// then 200.
    FailThenOk { failures: usize, status: u16 },
    /// Reads the request, then never answers (the connection stays open).
    Hang,
    /// 302 with `Location` set to this URL.
    Redirect(String),
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub at: Instant,
    pub method: String,
    /// The path and the query, as sent.
    pub path: String,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status answered; 0 for [`Behaviour::Hang`] (nothing was answered).
    pub status_sent: u16,
    /// The sender's end of the connection the request came on.
    pub peer: Option<SocketAddr>,
}

impl Recorded {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

struct State {
    behaviour: Behaviour,
    /// Requests answered under the current behaviour (for [`Behaviour::FailThenOk`]).
    since_set: usize,
    requests: Vec<Recorded>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    notify: tokio::sync::Notify,
    connections: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The receiver; stops its server on drop.
pub struct Receiver {
    shared: Arc<Shared>,
    addr: SocketAddr,
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

/// Idle connections stay open longer than any client pool keeps them (the push client's is
/// 60 s), so a client never reuses a connection the receiver is closing.
const KEEP_ALIVE: Duration = Duration::from_secs(120);
/// Request bodies accepted, in bytes.
const MAX_BODY: usize = 64 * 1024 * 1024;

impl Receiver {
    /// Starts a receiver answering with `behaviour`.
    pub fn start(behaviour: Behaviour) -> Receiver {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { behaviour, since_set: 0, requests: Vec::new() }),
            changed: Condvar::new(),
            notify: tokio::sync::Notify::new(),
            connections: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let server_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("receiver-{}", addr.port()))
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let counted = server_shared.clone();
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(web::Data::new(server_shared.clone()))
                            .app_data(web::PayloadConfig::new(MAX_BODY))
                            .default_service(web::to(answer))
                    })
                    .workers(1)
                    .disable_signals()
                    .keep_alive(KEEP_ALIVE)
                    .on_connect(move |_: &dyn Any, _: &mut Extensions| {
                        counted.connections.fetch_add(1, Ordering::SeqCst);
                    })
                    .listen(listener)
                    .unwrap()
                    .run();
                    tx.send(server.handle()).unwrap();
                    let _ = server.await;
                })
            })
            .unwrap();
        let handle = rx.recv().unwrap();
        Receiver { shared, addr, handle, thread: Some(thread) }
    }

    /// Answers with `behaviour` from now on.
    pub fn set(&self, behaviour: Behaviour) {
        let mut state = self.shared.lock();
        state.behaviour = behaviour;
        state.since_set = 0;
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The requests once there are at least `n`, or all of them when `deadline` passes first
    /// (the caller asserts on the count). Blocks the calling thread.
    pub fn wait_for(&self, n: usize, deadline: Duration) -> Vec<Recorded> {
        let until = Instant::now() + deadline;
        let mut state = self.shared.lock();
        while state.requests.len() < n {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = match self.shared.changed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(e) => e.into_inner().0,
            };
        }
        state.requests.clone()
    }

    /// [`Receiver::wait_for`] for async tests: waits without blocking the runtime's thread.
    pub async fn wait_for_async(&self, n: usize, deadline: Duration) -> Vec<Recorded> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a request recorded in between still wakes us.
            notified.as_mut().enable();
            {
                let state = self.shared.lock();
                if state.requests.len() >= n {
                    return state.requests.clone();
                }
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return self.requests();
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // The stop command is sent at once; the returned future only reports completion.
        drop(self.handle.stop(false));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn answer(req: HttpRequest, body: web::Bytes, shared: web::Data<Arc<Shared>>) -> HttpResponse {
    let (status, headers, reply, hang) = {
        let mut state = shared.lock();
        state.since_set += 1;
        let (status, headers, reply, hang) = match &state.behaviour {
            Behaviour::Status(s) => (*s, Vec::new(), Vec::new(), false),
            Behaviour::StatusWithHeaders(s, h) => (*s, h.clone(), Vec::new(), false),
            Behaviour::StatusWithBody(s, b) => (*s, Vec::new(), b.clone(), false),
            Behaviour::FailThenOk { failures, status } => {
                let s = if state.since_set <= *failures { *status } else { 200 };
                (s, Vec::new(), Vec::new(), false)
            }
            Behaviour::Hang => (0, Vec::new(), Vec::new(), true),
            Behaviour::Redirect(to) => (302, vec![("location".to_owned(), to.clone())], Vec::new(), false),
        };
        let path = req.uri().path_and_query().map_or_else(|| req.path().to_owned(), |pq| pq.as_str().to_owned());
        state.requests.push(Recorded {
            at: Instant::now(),
            method: req.method().as_str().to_owned(),
            path,
            headers: req
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            body: body.to_vec(),
            status_sent: status,
            peer: req.peer_addr(),
        });
        (status, headers, reply, hang)
    };
    shared.changed.notify_all();
    shared.notify.notify_waiters();
    if hang {
        return std::future::pending().await;
    }
    let mut response = HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    for (name, value) in headers {
        response.insert_header((name, value));
    }
    response.body(reply)
}
