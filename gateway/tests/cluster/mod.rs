//! Harness of the cluster tests: a Depot cluster of real `depot serve` processes on loopback,
//! sharing one fresh Postgres database, with every node-to-node link going through a
//! fault-injecting proxy ([`proxy`]) so a test can cut any directed link.
//!
//! Node i's `--peers` lists its own real cluster address and, for every other node j, the
//! address of the proxy of the directed link i→j. Each node has its own temp dir holding its data
//! dir and its stdout and stderr logs (appended across launches); panics raised here end with the
//! last lines of every node's stderr. Clusters in one test binary run one at a time (the machine
//! has two cores; several clusters at once would make elections and timings flaky). A cluster
//! dropped while its test panics keeps its temp dir and prints where it is.
//!
//! Requests go through [`request`], which, unlike `e2e::send`, returns connection errors and
//! timeouts as values: under faults they are expected outcomes, not test failures.

#![allow(clippy::unwrap_used, dead_code)]

pub mod checker;
pub mod proxy;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::e2e::{self, request, Response};
use proxy::{Mode, Proxy};

pub const ADMIN_PASSWORD: &str = "cluster-admin-password";
/// How long a node may take to print its banner.
const BANNER_DEADLINE: Duration = Duration::from_secs(60);
/// How long `start` waits for every node to be ready and agree on a leader.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// The timeout of the harness's own admin calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The timeout of the short probes (`leader`, readiness).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Lines of each node's stderr shown in a panic message.
const LOG_TAIL: usize = 40;

/// A JSON request body as bytes (empty for `None`).
pub fn json_bytes(body: Option<&Value>) -> Vec<u8> {
    body.map(|b| b.to_string().into_bytes()).unwrap_or_default()
}

/// The message of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(panic)".to_owned())
}

/// Random lower-case hex.
fn hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

/// The runtime that creates the test databases.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap())
}

/// One cluster at a time per test binary: held by a [`Cluster`] for its whole life.
struct Slot;

static SLOT_BUSY: Mutex<bool> = Mutex::new(false);
static SLOT_FREE: Condvar = Condvar::new();

impl Slot {
    fn take() -> Slot {
        let mut busy = SLOT_BUSY.lock().unwrap_or_else(|p| p.into_inner());
        while *busy {
            busy = SLOT_FREE.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        *busy = true;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *SLOT_BUSY.lock().unwrap_or_else(|p| p.into_inner()) = false;
        SLOT_FREE.notify_one();
    }
}

struct Node {
    api: SocketAddr,
    cluster: SocketAddr,
    dir: PathBuf,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
    /// `--peers`, fixed at the first launch (a restart keeps the node's configuration).
    peers: Option<String>,
    child: Option<Child>,
    paused: bool,
    launches: u32,
    /// How the latest process ended.
    last_exit: Option<ExitStatus>,
    /// Where this launch's output starts in the stderr log.
    stderr_from: u64,
    /// Lines of stdout, until the banner has been seen.
    stdout: Option<mpsc::Receiver<String>>,
}

pub struct Cluster {
    root: Option<tempfile::TempDir>,
    metadata_url: String,
    cluster_id: String,
    cluster_secret: String,
    jwt_secret: String,
    wait_for: Option<usize>,
    nodes: BTreeMap<u64, Node>,
    /// By directed link (from, to).
    proxies: HashMap<(u64, u64), Proxy>,
    token: OnceLock<String>,
    /// Extra environment for every launch from here on (settings such as `DEPOT_SNAPSHOT_EVERY`).
    pub env: Vec<(String, String)>,
    _slot: Slot,
}

impl Cluster {
    /// `n` nodes, all started; returns once every node is ready and all agree on a leader, with
    /// an admin token.
    pub fn start(n: usize) -> Cluster {
        let ids: Vec<u64> = (1..=n as u64).collect();
        Cluster::start_with(n, None, &ids)
    }

    /// `n` configured nodes, only `start_ids` started (with `--wait-for` if given). Waits for
    /// readiness and logs in only when enough nodes were started for the cluster to go active.
    pub fn start_with(n: usize, wait_for: Option<usize>, start_ids: &[u64]) -> Cluster {
        let slot = Slot::take();
        let metadata_url = runtime().block_on(depot_pgtest::database());
        let root = tempfile::Builder::new().prefix("depot-cluster-").tempdir().unwrap();
        let mut cluster = Cluster {
            root: Some(root),
            metadata_url,
            cluster_id: format!("test-{}", hex(8)),
            cluster_secret: hex(24),
            jwt_secret: hex(32),
            wait_for,
            nodes: BTreeMap::new(),
            proxies: HashMap::new(),
            token: OnceLock::new(),
            env: Vec::new(),
            _slot: slot,
        };
        for _ in 0..n {
            cluster.add_node();
        }
        cluster.launch_all(start_ids);
        if start_ids.len() >= wait_for.unwrap_or(n) {
            cluster.wait_ready(READY_DEADLINE);
        }
        cluster
    }

    /// Configures one more node (the next id): ports, dirs and the proxies of its links to and
    /// from every node so far. Not started: see [`Cluster::launch`]. Nodes started earlier keep
    /// their `--peers`; they reach the new node at the address its membership entry names.
    pub fn add_node(&mut self) -> u64 {
        let id = self.nodes.keys().max().map_or(1, |m| m + 1);
        let home = self.root().join(format!("node-{id}"));
        let dir = home.join("data");
        fs::create_dir_all(&dir).unwrap();
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let node = Node {
            api: loopback(depot_pgtest::free_loopback_port()),
            cluster: loopback(depot_pgtest::free_loopback_port()),
            dir,
            stdout_log: home.join("stdout.log"),
            stderr_log: home.join("stderr.log"),
            peers: None,
            child: None,
            paused: false,
            launches: 0,
            last_exit: None,
            stderr_from: 0,
            stdout: None,
        };
        for (&other, peer) in &self.nodes {
            self.proxies.insert((id, other), Proxy::start(peer.cluster));
            self.proxies.insert((other, id), Proxy::start(node.cluster));
        }
        self.nodes.insert(id, node);
        id
    }

    fn root(&self) -> &Path {
        self.root.as_ref().unwrap().path()
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes.get(&id).unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&id).unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn api(&self, id: u64) -> SocketAddr {
        self.node(id).api
    }

    /// The node's real cluster address (not a proxy's).
    pub fn cluster_addr(&self, id: u64) -> SocketAddr {
        self.node(id).cluster
    }

    pub fn data_dir(&self, id: u64) -> &Path {
        &self.node(id).dir
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn metadata_url(&self) -> &str {
        &self.metadata_url
    }

    /// Nodes with a process (paused ones included).
    pub fn running(&self) -> Vec<u64> {
        self.nodes.iter().filter(|(_, n)| n.child.is_some()).map(|(id, _)| *id).collect()
    }

    /// Running nodes that are not paused: the ones that can answer.
    pub fn responsive(&self) -> Vec<u64> {
        self.nodes.iter().filter(|(_, n)| n.child.is_some() && !n.paused).map(|(id, _)| *id).collect()
    }

    /// An admin access token (logging in on first use).
    pub fn token(&self) -> &str {
        self.token.get_or_init(|| {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match self.try_login() {
                    Ok(token) => return token,
                    Err(e) if Instant::now() > deadline => self.fail(&format!("admin login failed for 30 s: {e}")),
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        })
    }

    /// One login attempt on the first responsive node.
    pub fn try_login(&self) -> Result<String, String> {
        let id = *self.responsive().first().ok_or("no node is running")?;
        let body = json!({"username": "admin", "password": ADMIN_PASSWORD});
        let r = request(self.api(id), None, "POST", "/v1/auth/token", &[], body.to_string().as_bytes(), CALL_TIMEOUT)?;
        match r.body["access_token"].as_str() {
            Some(token) if r.status == 200 => Ok(token.to_owned()),
            _ => Err(format!("login on node {id}: {r:?}")),
        }
    }

    /// A JSON request as admin, timing out after `timeout`; connection errors are `Err`.
    pub fn try_call(
        &self,
        id: u64,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Response, String> {
        let headers = [("Content-Type", "application/json")];
        request(self.api(id), Some(self.token()), method, path, &headers, &json_bytes(body), timeout)
    }

    /// A JSON request as admin; a connection error or a timeout (30 s) fails the test.
    pub fn call(&self, id: u64, method: &str, path: &str, body: Option<&Value>) -> Response {
        self.try_call(id, method, path, body, CALL_TIMEOUT)
            .unwrap_or_else(|e| self.fail(&format!("{method} {path} on node {id}: {e}")))
    }

    /// `GET /v1/cluster` on `id`, if it answers 200 within the probe timeout.
    pub fn view(&self, id: u64) -> Option<Value> {
        let r = self.try_call(id, "GET", "/v1/cluster", None, PROBE_TIMEOUT).ok()?;
        (r.status == 200).then_some(r.body)
    }

    /// The leader that a majority of the responsive nodes report, if it is running.
    pub fn leader(&self) -> Option<u64> {
        let asked = self.responsive();
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for &id in &asked {
            if let Some(leader) = self.view(id).and_then(|v| v["leader_id"].as_u64()) {
                *votes.entry(leader).or_default() += 1;
            }
        }
        let running = self.running();
        votes.into_iter().find(|(leader, n)| *n * 2 > asked.len() && running.contains(leader)).map(|(l, _)| l)
    }

    pub fn wait_leader(&self, within: Duration) -> u64 {
        self.eventually(within, "a leader that a majority of the running nodes agree on", || self.leader())
    }

    /// Every running node answers /readyz 200 and reports the same leader. Logs in.
    pub fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        self.eventually(within, "every running node ready (GET /readyz 200)", || {
            self.running().iter().all(|&id| self.ready(id)).then_some(())
        });
        self.token();
        self.eventually(deadline.saturating_duration_since(Instant::now()), "all running nodes on one leader", || {
            let leaders: Vec<Option<u64>> =
                self.running().iter().map(|&id| self.view(id).and_then(|v| v["leader_id"].as_u64())).collect();
            match leaders.first() {
                Some(Some(l)) if leaders.iter().all(|x| *x == Some(*l)) => Some(()),
                _ => None,
            }
        });
    }

    /// `GET /readyz` answers 200.
    pub fn ready(&self, id: u64) -> bool {
        request(self.api(id), None, "GET", "/readyz", &[], &[], PROBE_TIMEOUT).is_ok_and(|r| r.status == 200)
    }

    /// Polls until every responsive node reports the same `last_log_index` and `last_applied`,
    /// with everything applied; returns them.
    pub fn wait_converged(&self, within: Duration) -> (u64, u64) {
        self.eventually(within, "every node at the same last_log_index and last_applied", || {
            let mut seen = BTreeSet::new();
            for id in self.responsive() {
                let v = self.view(id)?;
                seen.insert((v["last_log_index"].as_u64()?, v["last_applied"].as_u64()?));
            }
            let (index, applied) = match seen.len() {
                1 => seen.into_iter().next()?,
                _ => return None,
            };
            (index == applied).then_some((index, applied))
        })
    }

    /// Starts (or restarts) node `id` with its ports, data dir and flags; waits for its banner.
    pub fn launch(&mut self, id: u64) {
        if let Err(e) = self.try_launch(id) {
            self.fail(&format!("node {id} did not start: {e}"));
        }
    }

    /// Launches several nodes at once (all spawned, then each banner awaited), as a supervisor
    /// restarting a whole cluster would: a node may wait for its peers before it serves.
    pub fn launch_all(&mut self, ids: &[u64]) {
        for &id in ids {
            self.spawn(id);
        }
        for &id in ids {
            if let Err(e) = self.await_banner(id) {
                self.fail(&format!("node {id} did not start: {e}"));
            }
        }
    }

    /// Like [`Cluster::launch`]; `Err` with the launch's stdout and stderr if the process ends
    /// (or prints nothing) before its banner.
    pub fn try_launch(&mut self, id: u64) -> Result<(), String> {
        self.spawn(id);
        self.await_banner(id)
    }

    fn spawn(&mut self, id: u64) {
        assert!(self.node(id).child.is_none(), "node {id} is already running");
        let peers = match &self.node(id).peers {
            Some(peers) => peers.clone(),
            None => self.peers_of(id),
        };
        let (metadata_url, secret, cluster_id, jwt) =
            (self.metadata_url.clone(), self.cluster_secret.clone(), self.cluster_id.clone(), self.jwt_secret.clone());
        let env = self.env.clone();
        let wait_for = self.wait_for;
        let node = self.node_mut(id);
        node.peers = Some(peers.clone());
        node.launches += 1;
        let mut stderr = OpenOptions::new().create(true).append(true).open(&node.stderr_log).unwrap();
        writeln!(stderr, "===== launch {} of node {id} =====", node.launches).unwrap();
        node.stderr_from = stderr.metadata().unwrap().len();
        let mut command = Command::new(env!("CARGO_BIN_EXE_depot"));
        command
            .arg("serve")
            .args(["--node-id", &id.to_string()])
            .args(["--listen", &node.api.to_string()])
            .args(["--cluster-listen", &node.cluster.to_string()])
            .args(["--peers", &peers])
            .arg("--data-dir")
            .arg(&node.dir)
            .args(["--metadata-url", &metadata_url])
            .args(["--cluster-secret", &secret])
            .args(["--cluster-id", &cluster_id])
            .env("DEPOT_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("DEPOT_JWT_SECRET", &jwt)
            .env("DEPOT_LOG", "warn")
            .env("DEPOT_RATE_LIMIT", "off")
            // Long runs outlast the default 15 minutes of the admin token.
            .env("DEPOT_ACCESS_TOKEN_TTL", "86400")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        if let Some(n) = wait_for {
            command.args(["--wait-for", &n.to_string()]);
        }
        for (k, v) in &env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let mut log = OpenOptions::new().create(true).append(true).open(&node.stdout_log).unwrap();
        writeln!(log, "===== launch {} of node {id} =====", node.launches).unwrap();
        std::thread::spawn(move || {
            // Read to the end (the process must never block on a full pipe), keeping a copy.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                let _ = tx.send(line);
            }
        });
        node.child = Some(child);
        node.paused = false;
        node.last_exit = None;
        node.stdout = Some(rx);
    }

    /// Node `id`'s `--peers`: itself at its real address, every other node at the proxy of the
    /// link from `id` to it.
    fn peers_of(&self, id: u64) -> String {
        let entries: Vec<String> = self
            .nodes
            .iter()
            .map(|(&other, node)| {
                let addr = if other == id { node.cluster } else { self.proxies[&(id, other)].addr() };
                format!("{other}={addr}")
            })
            .collect();
        entries.join(",")
    }

    fn await_banner(&mut self, id: u64) -> Result<(), String> {
        let deadline = Instant::now() + BANNER_DEADLINE;
        let rx = self.node_mut(id).stdout.take().expect("spawned");
        let mut printed = Vec::new();
        let expected = self.api(id);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("depot: listening on http://") {
                        let addr = rest.split_whitespace().next().unwrap_or_default();
                        if addr != expected.to_string() {
                            return Err(format!("banner names {addr}, expected {expected}: {line}"));
                        }
                        return Ok(());
                    }
                    printed.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    let node = self.node_mut(id);
                    if let Some(status) = node.child.as_mut().unwrap().try_wait().unwrap() {
                        node.child = None;
                        node.last_exit = Some(status);
                        return Err(self.launch_failure(id, &format!("exited with {status}"), &printed));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.kill(id);
                    return Err(self.launch_failure(id, "no banner within 60 s (killed)", &printed));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Stdout closed: the process is ending.
                    let status = self.wait_exit(id, Duration::from_secs(10));
                    return Err(self.launch_failure(id, &format!("closed stdout, {status:?}"), &printed));
                }
            }
        }
    }

    fn launch_failure(&self, id: u64, what: &str, stdout: &[String]) -> String {
        format!(
            "node {id} {what} before its banner\n--- stdout ---\n{}\n--- stderr ---\n{}",
            stdout.join("\n"),
            self.launch_stderr(id)
        )
    }

    /// Node `id`'s stderr since its latest launch.
    pub fn launch_stderr(&self, id: u64) -> String {
        let node = self.node(id);
        let all = fs::read(&node.stderr_log).unwrap_or_default();
        let from = (node.stderr_from as usize).min(all.len());
        String::from_utf8_lossy(&all[from..]).into_owned()
    }

    /// Waits up to `within` for node `id`'s process to end by itself; `None` if it is still
    /// running then (it is killed) or was not running.
    pub fn wait_exit(&mut self, id: u64, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        let node = self.node_mut(id);
        let child = node.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                node.child = None;
                node.paused = false;
                node.last_exit = Some(status);
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                node.last_exit = child.wait().ok();
                node.child = None;
                node.paused = false;
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal with `kill(1)` (no libc in this crate's dependencies).
    fn signal(&self, id: u64, signal: &str) {
        let pid = self.node(id).child.as_ref().unwrap_or_else(|| panic!("node {id} is not running")).id();
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} {pid} (node {id}) failed");
    }

    /// SIGKILL, then reaps the process. Nothing if it is not running.
    pub fn kill(&mut self, id: u64) {
        let node = self.node_mut(id);
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            node.last_exit = child.wait().ok();
        }
        node.paused = false;
    }

    /// How node `id`'s latest process ended (`None` while it runs or before its first launch).
    pub fn last_exit(&self, id: u64) -> Option<ExitStatus> {
        self.node(id).last_exit
    }

    /// SIGTERM and a clean exit (status 0 within 30 s).
    pub fn terminate(&mut self, id: u64) {
        if self.node(id).paused {
            self.resume(id);
        }
        self.signal(id, "TERM");
        match self.wait_exit(id, Duration::from_secs(30)) {
            Some(status) if status.success() => {}
            other => self.fail(&format!("node {id} did not stop cleanly after SIGTERM: {other:?}")),
        }
    }

    /// SIGSTOP.
    pub fn pause(&mut self, id: u64) {
        self.signal(id, "STOP");
        self.node_mut(id).paused = true;
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: u64) {
        self.signal(id, "CONT");
        self.node_mut(id).paused = false;
    }

    /// Kills the node and empties its data dir.
    pub fn wipe(&mut self, id: u64) {
        self.kill(id);
        let dir = self.node(id).dir.clone();
        fs::remove_dir_all(&dir).unwrap();
        fs::create_dir_all(&dir).unwrap();
    }

    /// Sets the mode of the directed link `from`→`to`.
    pub fn set_link(&self, from: u64, to: u64, mode: Mode) {
        self.proxies.get(&(from, to)).unwrap_or_else(|| panic!("no link {from}->{to}")).set_mode(mode);
    }

    /// Blackholes every link to and from `id`.
    pub fn isolate(&self, id: u64) {
        for other in self.ids().into_iter().filter(|&o| o != id) {
            self.set_link(id, other, Mode::Blackhole);
            self.set_link(other, id, Mode::Blackhole);
        }
    }

    /// Blackholes the directed link `from`→`to`.
    pub fn cut(&self, from: u64, to: u64) {
        self.set_link(from, to, Mode::Blackhole);
    }

    /// Every link back to pass.
    pub fn heal(&self) {
        for proxy in self.proxies.values() {
            proxy.set_mode(Mode::Pass);
        }
    }

    /// A client of this cluster as admin, knowing every node's API address.
    pub fn client(&self) -> workload::Client {
        let nodes = self.nodes.iter().map(|(&id, n)| (id, n.api)).collect();
        workload::Client::new(nodes, self.token().to_owned())
    }

    /// `PUT /v1/stations/{name}` with `{"replicas": 3}` on a responsive node; must be created.
    pub fn create_station(&self, name: &str) {
        let id = self.responsive()[0];
        let r = self.call(id, "PUT", &format!("/v1/stations/{name}"), Some(&json!({"replicas": 3})));
        if r.status != 201 {
            self.fail(&format!("creating station {name}: {r:?}"));
        }
    }

    /// `PUT` a consumer group starting at the earliest offset; must be created.
    pub fn create_group(&self, station: &str, group: &str, ack_wait_ms: u64) {
        let id = self.responsive()[0];
        let body = json!({"start": "earliest", "ack_wait_ms": ack_wait_ms});
        let r = self.call(id, "PUT", &format!("/v1/stations/{station}/consumer-groups/{group}"), Some(&body));
        if r.status != 201 {
            self.fail(&format!("creating group {group} of {station}: {r:?}"));
        }
    }

    /// [`e2e::eventually`], failing with the cluster's diagnostics.
    pub fn eventually<T>(&self, within: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e2e::eventually(within, what, check))) {
            Ok(v) => v,
            Err(payload) => self.fail(&panic_message(payload.as_ref())),
        }
    }

    /// Panics with `what` and the state and last stderr lines of every node; `what` comes again
    /// last, so a log cut to its tail still says what failed.
    pub fn fail(&self, what: &str) -> ! {
        panic!("{what}\n{}===== failed: {what}", self.diagnostics())
    }

    /// Each node's state and the tail of its stderr, and the links that are not passing.
    pub fn diagnostics(&self) -> String {
        let mut out = String::from("===== cluster state =====\n");
        for (id, node) in &self.nodes {
            let state = match (&node.child, node.paused) {
                (None, _) => "stopped",
                (Some(_), true) => "paused",
                (Some(_), false) => "running",
            };
            out.push_str(&format!(
                "--- node {id}: {state}, api {}, cluster {}, {} launches, dir {}; stderr tail:\n",
                node.api,
                node.cluster,
                node.launches,
                node.dir.display()
            ));
            let log = fs::read_to_string(&node.stderr_log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            for line in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        let mut cut: Vec<String> = self
            .proxies
            .iter()
            .filter(|(_, p)| p.mode() != Mode::Pass)
            .map(|((from, to), p)| format!("{from}->{to} {:?}", p.mode()))
            .collect();
        cut.sort();
        out.push_str(&format!(
            "--- links not passing: {}\n",
            if cut.is_empty() { "none".into() } else { cut.join(", ") }
        ));
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids = self.ids();
        for &id in &ids {
            if self.node(id).paused {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(self.node(id).child.as_ref().unwrap().id().to_string())
                    .status();
                self.node_mut(id).paused = false;
            }
        }
        for &id in &ids {
            self.kill(id);
        }
        self.proxies.clear();
        if std::thread::panicking() {
            if let Some(root) = self.root.take() {
                eprintln!("cluster files kept for inspection in {}", root.keep().display());
            }
        }
    }
}
