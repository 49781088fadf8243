//! The cluster harness: a Depot cluster of real `depot serve` processes on loopback, sharing one
//! metadata database, each node-to-node link either direct or through a fault-injecting proxy
//! ([`proxy`]) so a test can cut any directed link.
//!
//! With proxies, node i's `--peers` lists its own real cluster address and, for every other node
//! j, the address of the proxy of the directed link i->j. Each node has its own dir holding its
//! data dir and its stdout and stderr logs (appended across launches); failures raised here end
//! with the last lines of every node's stderr. One cluster runs at a time in a process (see
//! [`crate::serial`]). A cluster dropped while its thread panics keeps its temp dir and prints
//! where it is.
//!
//! Requests go through [`request`], which returns connection errors and timeouts as values:
//! under faults they are expected outcomes, not test failures. Methods that fail a test panic
//! with the cluster's diagnostics; their `try_` siblings return the failure.

pub mod checker;
mod command;
pub mod proxy;
pub mod workload;

pub use command::{hex, serve_command, write_secret_file, Config};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::{request, Response};
use crate::ports::free_loopback_addr;
use crate::process::{eventually, signal_pid};
use crate::serial::Heavy;
use proxy::{Mode, Proxy};

/// How long a node may take to print its banner.
const BANNER_DEADLINE: Duration = Duration::from_secs(60);
/// How long `start` waits for every node to be ready and agree on a leader.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// The timeout of the harness's own admin calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The timeout of the short probes (`leader`, readiness).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Lines of each node's stderr shown in a failure.
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
    /// This node's cluster secret, when it is not the cluster's.
    secret: Option<String>,
}

pub struct Cluster {
    root: Option<tempfile::TempDir>,
    config: Config,
    nodes: BTreeMap<u64, Node>,
    /// By directed link (from, to); empty when the links are direct.
    proxies: HashMap<(u64, u64), Proxy>,
    token: OnceLock<String>,
    /// Extra environment for every launch from here on (settings such as `DEPOT_SNAPSHOT_EVERY`).
    pub env: Vec<(String, String)>,
    _heavy: Heavy,
}

impl Cluster {
    /// `n` configured nodes, only `start_ids` started. Waits for readiness and logs in only when
    /// enough nodes were started for the cluster to go active (`config.wait_for`, else all).
    pub fn start(config: Config, n: usize, start_ids: &[u64]) -> Cluster {
        Cluster::starting(config, n, start_ids, true).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Cluster::start`]; a node that does not start, or a cluster that does not become
    /// ready, is `Err` with the diagnostics.
    pub fn try_start(config: Config, n: usize, start_ids: &[u64]) -> Result<Cluster, String> {
        Cluster::starting(config, n, start_ids, false)
    }

    /// `keep`: a failed start keeps the cluster's files for inspection, as a failed test does.
    fn starting(config: Config, n: usize, start_ids: &[u64], keep: bool) -> Result<Cluster, String> {
        let heavy = Heavy::take();
        let mut builder = tempfile::Builder::new();
        builder.prefix("depot-cluster-");
        let root = match &config.dir {
            Some(dir) => builder.tempdir_in(dir),
            None => builder.tempdir(),
        }
        .map_err(|e| format!("creating the cluster's temp dir: {e}"))?;
        let env = config.env.clone();
        let wait_for = config.wait_for;
        let mut cluster = Cluster {
            root: Some(root),
            config,
            nodes: BTreeMap::new(),
            proxies: HashMap::new(),
            token: OnceLock::new(),
            env,
            _heavy: heavy,
        };
        for _ in 0..n {
            cluster.add_node();
        }
        for &id in start_ids {
            cluster.spawn(id);
        }
        let mut started = Ok(());
        for &id in start_ids {
            if let Err(e) = cluster.await_banner(id) {
                started = Err(cluster.failure(&format!("node {id} did not start: {e}")));
                break;
            }
        }
        if started.is_ok() && start_ids.len() >= wait_for.unwrap_or(n) {
            started = cluster.try_wait_ready(READY_DEADLINE);
        }
        match started {
            Ok(()) => Ok(cluster),
            Err(e) if keep => Err(format!("{e}\n{}", cluster.keep_files())),
            Err(e) => Err(e),
        }
    }

    /// Configures one more node (the next id): ports, dirs and the proxies of its links to and
    /// from every node so far. Not started: see [`Cluster::launch`]. Nodes started earlier keep
    /// their `--peers`; they reach the new node at the address its membership entry names.
    pub fn add_node(&mut self) -> u64 {
        let id = self.nodes.keys().max().map_or(1, |m| m + 1);
        let home = self.root().join(format!("node-{id}"));
        let dir = home.join("data");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let node = Node {
            api: free_loopback_addr(),
            cluster: free_loopback_addr(),
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
            secret: None,
        };
        if self.config.proxied {
            for (&other, peer) in &self.nodes {
                self.proxies.insert((id, other), Proxy::start(peer.cluster));
                self.proxies.insert((other, id), Proxy::start(node.cluster));
            }
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
        &self.config.cluster_id
    }

    pub fn metadata_url(&self) -> &str {
        &self.config.metadata_url
    }

    /// The pid of node `id`'s process, if it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).child.as_ref().map(Child::id)
    }

    /// Node `id`'s stdout and stderr logs (every launch, each after a `===== launch` line).
    pub fn logs(&self, id: u64) -> [&Path; 2] {
        let node = self.node(id);
        [&node.stdout_log, &node.stderr_log]
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
        self.try_token().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Cluster::token`]; `Err` with the diagnostics if no login works within 30 s.
    pub fn try_token(&self) -> Result<&str, String> {
        if let Some(token) = self.token.get() {
            return Ok(token);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let token = loop {
            match self.try_login() {
                Ok(token) => break token,
                Err(e) if Instant::now() > deadline => {
                    return Err(self.failure(&format!("admin login failed for 30 s: {e}")));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        Ok(self.token.get_or_init(|| token))
    }

    /// One login attempt on the first responsive node.
    pub fn try_login(&self) -> Result<String, String> {
        let id = *self.responsive().first().ok_or("no node is running")?;
        let body = json!({"username": "admin", "password": self.config.admin_password});
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

    /// The leader every running node reports, if they all answer and agree.
    pub fn agreed_leader(&self) -> Option<u64> {
        let leaders: Vec<Option<u64>> =
            self.running().iter().map(|&id| self.view(id).and_then(|v| v["leader_id"].as_u64())).collect();
        match leaders.first() {
            Some(Some(l)) if leaders.iter().all(|x| *x == Some(*l)) => Some(*l),
            _ => None,
        }
    }

    pub fn wait_leader(&self, within: Duration) -> u64 {
        self.try_wait_leader(within).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_wait_leader(&self, within: Duration) -> Result<u64, String> {
        self.try_eventually(within, "a leader that a majority of the running nodes agree on", || self.leader())
    }

    /// Every running node answers /readyz 200 and reports the same leader. Logs in.
    pub fn wait_ready(&self, within: Duration) {
        self.try_wait_ready(within).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_wait_ready(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        self.try_eventually(within, "every running node ready (GET /readyz 200)", || {
            self.running().iter().all(|&id| self.ready(id)).then_some(())
        })?;
        self.try_token()?;
        let left = deadline.saturating_duration_since(Instant::now());
        self.try_eventually(left, "all running nodes on one leader", || self.agreed_leader()).map(|_| ())
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

    /// Starts node `id` without waiting for its banner (a node that cannot join never prints it).
    pub fn launch_unawaited(&mut self, id: u64) {
        self.spawn(id);
    }

    /// Gives node `id` its own cluster secret from its next launch on (the others keep the
    /// cluster's).
    pub fn set_secret(&mut self, id: u64, secret: &str) {
        self.node_mut(id).secret = Some(secret.to_owned());
    }

    /// Like [`Cluster::launch`]; `Err` with the launch's stdout and stderr if the process ends
    /// (or prints nothing) before its banner.
    pub fn try_launch(&mut self, id: u64) -> Result<(), String> {
        self.spawn(id);
        self.await_banner(id)
    }

    /// Starts node `id` without waiting for its banner (a member waiting for its peers prints it
    /// only once one answers); [`Cluster::await_started`] waits for it later.
    pub fn launch_in_background(&mut self, id: u64) {
        self.spawn(id);
    }

    /// Waits for the banner of a node started by [`Cluster::launch_in_background`].
    pub fn await_started(&mut self, id: u64) -> Result<(), String> {
        self.await_banner(id)
    }

    fn spawn(&mut self, id: u64) {
        assert!(self.node(id).child.is_none(), "node {id} is already running");
        let peers = match &self.node(id).peers {
            Some(peers) => peers.clone(),
            None => self.peers_of(id),
        };
        let mut config = self.config.clone();
        config.env.clone_from(&self.env);
        let node = self.node_mut(id);
        node.peers = Some(peers.clone());
        node.launches += 1;
        let open = |path: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let mut stderr = open(&node.stderr_log);
        let _ = writeln!(stderr, "===== launch {} of node {id} =====", node.launches);
        node.stderr_from = stderr.metadata().map_or(0, |m| m.len());
        let secret_file = node.dir.with_file_name("cluster-secret");
        let secret = node.secret.as_deref().unwrap_or(&config.cluster_secret);
        write_secret_file(&secret_file, secret).unwrap_or_else(|e| panic!("{}: {e}", secret_file.display()));
        let mut command = serve_command(&config, id, node.api, node.cluster, &peers, &node.dir, &secret_file);
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(stderr));
        let mut child = command.spawn().unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        let mut log = open(&node.stdout_log);
        let _ = writeln!(log, "===== launch {} of node {id} =====", node.launches);
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
                let addr = match self.proxies.get(&(id, other)) {
                    Some(proxy) if other != id => proxy.addr(),
                    _ => node.cluster,
                };
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

    fn signal(&self, id: u64, signal: &str) {
        let pid = self.pid(id).unwrap_or_else(|| panic!("node {id} is not running"));
        signal_pid(pid, signal).unwrap_or_else(|e| panic!("node {id}: {e}"));
    }

    /// SIGTERM to every running node at once (paused ones are resumed first), then up to
    /// `within` for each to end; `Err` names the nodes that did not stop cleanly (they are
    /// killed).
    pub fn stop_all(&mut self, within: Duration) -> Result<(), String> {
        for id in self.running() {
            if self.node(id).paused {
                self.resume(id);
            }
            self.signal(id, "TERM");
        }
        let deadline = Instant::now() + within;
        let mut unclean = Vec::new();
        for id in self.running() {
            match self.wait_exit(id, deadline.saturating_duration_since(Instant::now())) {
                Some(status) if status.success() => {}
                other => unclean.push(format!("node {id}: {other:?}")),
            }
        }
        if unclean.is_empty() {
            Ok(())
        } else {
            Err(format!("not stopped cleanly after SIGTERM: {}", unclean.join(", ")))
        }
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

    /// [`eventually`], failing with the cluster's diagnostics.
    pub fn eventually<T>(&self, within: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
        self.try_eventually(within, what, check).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Cluster::eventually`]; the failure is `Err`.
    pub fn try_eventually<T>(
        &self,
        within: Duration,
        what: &str,
        check: impl FnMut() -> Option<T>,
    ) -> Result<T, String> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| eventually(within, what, check)))
            .map_err(|payload| self.failure(&panic_message(payload.as_ref())))
    }

    /// Panics with [`Cluster::failure`].
    pub fn fail(&self, what: &str) -> ! {
        panic!("{}", self.failure(what))
    }

    /// `what` and the state and last stderr lines of every node; `what` comes again last, so a
    /// log cut to its tail still says what failed.
    pub fn failure(&self, what: &str) -> String {
        format!("{what}\n{}===== failed: {what}", self.diagnostics())
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

impl Cluster {
    /// Keeps the cluster's temp dir past its drop; says where it is.
    fn keep_files(&mut self) -> String {
        match self.root.take() {
            Some(root) => format!("cluster files kept for inspection in {}", root.keep().display()),
            None => String::new(),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids = self.ids();
        for &id in &ids {
            if let (true, Some(pid)) = (self.node(id).paused, self.pid(id)) {
                let _ = signal_pid(pid, "CONT");
                self.node_mut(id).paused = false;
            }
        }
        for &id in &ids {
            self.kill(id);
        }
        self.proxies.clear();
        if std::thread::panicking() {
            eprintln!("{}", self.keep_files());
        }
    }
}
