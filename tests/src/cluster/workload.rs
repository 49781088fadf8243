//! Clients of a cluster and the randomized workload: a [`Client`] that turns each request's
//! answer into a history entry (connection errors, timeouts and 503s are indeterminate, never
//! failures of the test), producer and consumer threads recording a [`History`], and a seeded
//! [`Nemesis`] injecting one fault at a time and recovering from it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::checker::{Ack, Attempt, FloorObservation, History, Outcome, Read};
use super::{json_bytes, Cluster};
use crate::http::{request, Response};

/// The read timeout of workload requests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// A produce is retried with its keys for at most this long, well inside the dedup window
/// (120 s), so that a retry can never write a second copy.
const RETRY_FOR: Duration = Duration::from_secs(90);

/// One delivered message.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub receipt: String,
    pub offset: u64,
    pub attempt: u32,
    /// The payload: the JSON string's text, or the JSON of any other payload.
    pub value: String,
}

/// An admin client that knows every node's API address.
#[derive(Clone)]
pub struct Client {
    nodes: Vec<(u64, SocketAddr)>,
    token: String,
    pub timeout: Duration,
}

impl Client {
    pub fn new(nodes: Vec<(u64, SocketAddr)>, token: String) -> Client {
        Client { nodes, token, timeout: REQUEST_TIMEOUT }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    pub fn node_ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|(id, _)| *id).collect()
    }

    fn addr(&self, node: u64) -> SocketAddr {
        self.nodes.iter().find(|(id, _)| *id == node).unwrap_or_else(|| panic!("no node {node}")).1
    }

    /// A JSON request as admin.
    pub fn call(&self, node: u64, method: &str, path: &str, body: Option<&Value>) -> Result<Response, String> {
        let headers = [("Content-Type", "application/json")];
        request(self.addr(node), Some(&self.token), method, path, &headers, &json_bytes(body), self.timeout)
    }

    /// A 2xx answer's body; anything else is `Err`.
    fn ok(&self, node: u64, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let r = self.call(node, method, path, body)?;
        if (200..300).contains(&r.status) {
            Ok(r.body)
        } else {
            Err(format!("{method} {path} on node {node}: {} {}", r.status, String::from_utf8_lossy(&r.raw)))
        }
    }

    /// One single produce of the JSON string `value` with `value` as its idempotency key.
    pub fn produce_one(&self, node: u64, station: &str, value: &str) -> (Outcome, Option<Response>) {
        let headers = [("Content-Type", "application/json"), ("Idempotency-Key", value)];
        let body = Value::from(value).to_string();
        let path = format!("/v1/stations/{station}/messages");
        match request(self.addr(node), Some(&self.token), "POST", &path, &headers, body.as_bytes(), self.timeout) {
            Err(_) => (Outcome::Indeterminate, None),
            Ok(r) => {
                let outcome = match (r.status, r.body["offset"].as_u64()) {
                    (200 | 201, Some(offset)) => Outcome::Ok { offset },
                    (status, _) => status_outcome(status),
                };
                (outcome, Some(r))
            }
        }
    }

    /// One batch produce of JSON string payloads, each its own idempotency key: an outcome per
    /// value, in order.
    pub fn produce_batch(&self, node: u64, station: &str, values: &[String]) -> Vec<Outcome> {
        let messages: Vec<Value> = values.iter().map(|v| json!({"payload": v, "idempotency_key": v})).collect();
        let path = format!("/v1/stations/{station}/messages/batch");
        let r = match self.call(node, "POST", &path, Some(&json!({ "messages": messages }))) {
            Err(_) => return vec![Outcome::Indeterminate; values.len()],
            Ok(r) => r,
        };
        let results = r.body["results"].as_array().filter(|rs| rs.len() == values.len());
        match (r.status, results) {
            (200, Some(results)) => results
                .iter()
                .map(|item| match item["offset"].as_u64() {
                    Some(offset) => Outcome::Ok { offset },
                    // An item judged invalid: refused, on its own.
                    None => Outcome::Failed { status: 400 },
                })
                .collect(),
            (200, None) => vec![Outcome::Indeterminate; values.len()],
            (status, _) => vec![status_outcome(status); values.len()],
        }
    }

    /// Produces `values` on `station` through `nodes` in turn, in batches of `batch`, each value
    /// its own idempotency key: what was not acknowledged (no answer, 503, 429) is retried on
    /// the next node, after a pause of 50 ms, until `deadline`. Records each acknowledged
    /// value's offset in `acknowledged`. Err names a definite refusal (another 4xx) or what was
    /// still unacknowledged at the deadline; what was acknowledged before stays recorded.
    pub fn produce_acknowledged(
        &self,
        nodes: &[u64],
        station: &str,
        values: &[String],
        batch: usize,
        deadline: Instant,
        acknowledged: &mut BTreeMap<String, u64>,
    ) -> Result<(), String> {
        let mut turn = 0;
        for chunk in values.chunks(batch.max(1)) {
            let mut pending = chunk.to_vec();
            while !pending.is_empty() {
                let node = nodes[turn % nodes.len().max(1)];
                turn += 1;
                let mut retry = Vec::new();
                for (value, outcome) in pending.iter().zip(self.produce_batch(node, station, &pending)) {
                    match outcome {
                        Outcome::Ok { offset } => {
                            acknowledged.insert(value.clone(), offset);
                        }
                        Outcome::Indeterminate | Outcome::Failed { status: 429 } => retry.push(value.clone()),
                        Outcome::Failed { status } => {
                            return Err(format!("producing {value} via node {node}: {status}"))
                        }
                    }
                }
                pending = retry;
                if !pending.is_empty() {
                    if Instant::now() > deadline {
                        return Err(format!("{} values not acknowledged in time via nodes {nodes:?}", pending.len()));
                    }
                    // Between retries of a refused batch (a leader is being elected); not a wait
                    // for an event.
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
        Ok(())
    }

    pub fn fetch(
        &self,
        node: u64,
        station: &str,
        group: &str,
        max_messages: u32,
        wait_ms: u64,
    ) -> Result<Vec<Fetched>, String> {
        let path = format!("/v1/stations/{station}/consumer-groups/{group}/fetch");
        let body = self.ok(node, "POST", &path, Some(&json!({"max_messages": max_messages, "wait_ms": wait_ms})))?;
        let messages = body["messages"].as_array().ok_or_else(|| format!("fetch answered {body}"))?;
        messages
            .iter()
            .map(|m| {
                let value = match &m["payload"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Ok(Fetched {
                    receipt: m["receipt"].as_str().ok_or("a message without a receipt")?.to_owned(),
                    offset: m["offset"].as_u64().ok_or("a message without an offset")?,
                    attempt: m["attempt"].as_u64().unwrap_or(0) as u32,
                    value,
                })
            })
            .collect()
    }

    /// The result per receipt, in order.
    pub fn ack(&self, node: u64, station: &str, group: &str, receipts: &[&str]) -> Result<Vec<String>, String> {
        let path = format!("/v1/stations/{station}/consumer-groups/{group}/ack");
        let body = self.ok(node, "POST", &path, Some(&json!({ "receipts": receipts })))?;
        let results = body["results"].as_array().ok_or_else(|| format!("ack answered {body}"))?;
        Ok(results.iter().map(|r| r.as_str().unwrap_or("?").to_owned()).collect())
    }

    /// The group's view: `{lag, pending, delivered_offset, acked_floor, ...}`.
    pub fn group(&self, node: u64, station: &str, group: &str) -> Result<Value, String> {
        self.ok(node, "GET", &format!("/v1/stations/{station}/consumer-groups/{group}"), None)
    }

    /// Fetches and acks through `nodes` (in turn) until a fetch comes back empty with the
    /// group's lag at 0; every delivery in order. `Err` past `within`.
    pub fn drain(&self, nodes: &[u64], station: &str, group: &str, within: Duration) -> Result<Vec<Fetched>, String> {
        let deadline = Instant::now() + within;
        let mut delivered = Vec::new();
        let mut last_error = String::new();
        for turn in 0.. {
            if Instant::now() > deadline {
                return Err(format!("{group} of {station} not drained within {within:?}: {last_error}"));
            }
            let node = nodes[turn % nodes.len()];
            match self.fetch(node, station, group, 1000, 200) {
                Ok(batch) if batch.is_empty() => match self.group(node, station, group) {
                    Ok(view) if view["lag"] == 0 => return Ok(delivered),
                    Ok(view) => last_error = format!("empty fetch, group at {view}"),
                    Err(e) => last_error = e,
                },
                Ok(batch) => {
                    let receipts: Vec<&str> = batch.iter().map(|m| m.receipt.as_str()).collect();
                    if let Err(e) = self.ack(node, station, group, &receipts) {
                        last_error = e;
                    }
                    delivered.extend(batch);
                }
                Err(e) => {
                    last_error = e;
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
        unreachable!()
    }
}

/// What a non-2xx status (or a 2xx without an offset) says about a write.
fn status_outcome(status: u16) -> Outcome {
    match status {
        // Refused before anything was written. 429 too, though the workload retries it.
        400..=499 => Outcome::Failed { status },
        _ => Outcome::Indeterminate,
    }
}

/// Flags and counters shared by the workload threads and the test.
pub struct Shared {
    /// Producers stop starting batches (the current one is still seen through).
    pub stop_producing: AtomicBool,
    /// Consumers stop.
    pub stop_consuming: AtomicBool,
    /// Values acknowledged so far.
    pub acknowledged: AtomicU64,
    /// Milliseconds after `started` of the latest fetch that delivered something.
    pub last_delivery_ms: AtomicU64,
    /// (sent, answered) of every produce that acknowledged at least one value.
    pub acknowledged_writes: Mutex<Vec<(Instant, Instant)>>,
    pub started: Instant,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            stop_producing: AtomicBool::new(false),
            stop_consuming: AtomicBool::new(false),
            acknowledged: AtomicU64::new(0),
            last_delivery_ms: AtomicU64::new(0),
            acknowledged_writes: Mutex::new(Vec::new()),
            started: Instant::now(),
        })
    }

    pub fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops every thread (also when dropped by a failing test, through [`StopOnDrop`]).
    pub fn stop_all(&self) {
        self.stop_producing.store(true, Ordering::SeqCst);
        self.stop_consuming.store(true, Ordering::SeqCst);
    }
}

/// Stops the workload threads when dropped, so a panicking test does not leave them running.
pub struct StopOnDrop(pub Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop_all();
    }
}

/// Producer `thread`: batches of 25-50 fresh values `p{thread}-{seq}` to random nodes; a batch
/// not fully answered is retried with the same keys on another node.
pub fn producer(thread: usize, seed: u64, client: Client, station: String, shared: Arc<Shared>) -> JoinHandle<History> {
    thread::spawn(move || {
        let mut rng = StdRng::seed_from_u64(seed ^ (thread as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let nodes = client.node_ids();
        let mut history = History::default();
        let mut seq = 0u64;
        while !shared.stop_producing.load(Ordering::SeqCst) {
            let size = rng.random_range(25..=50);
            let mut pending: Vec<String> = (0..size)
                .map(|_| {
                    seq += 1;
                    format!("p{thread}-{seq}")
                })
                .collect();
            let first = Instant::now();
            let mut node = *nodes.choose(&mut rng).unwrap();
            loop {
                let sent = Instant::now();
                let outcomes = client.produce_batch(node, &station, &pending);
                let answered = Instant::now();
                let mut retry = Vec::new();
                let mut acknowledged = 0;
                for (value, outcome) in pending.into_iter().zip(outcomes) {
                    match outcome {
                        Outcome::Ok { .. } => acknowledged += 1,
                        Outcome::Indeterminate | Outcome::Failed { status: 429 } => retry.push(value.clone()),
                        Outcome::Failed { .. } => {}
                    }
                    history.attempts.push(Attempt { key: value.clone(), value, node, outcome });
                }
                if acknowledged > 0 {
                    shared.acknowledged.fetch_add(acknowledged, Ordering::SeqCst);
                    shared.acknowledged_writes.lock().unwrap().push((sent, answered));
                }
                pending = retry;
                if pending.is_empty() || first.elapsed() > RETRY_FOR {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
                let others: Vec<u64> = nodes.iter().copied().filter(|&n| n != node).collect();
                node = others.choose(&mut rng).copied().unwrap_or(node);
            }
        }
        history
    })
}

/// Consumer `thread` of `group`: fetches (up to 100, long-polling 500 ms) from random nodes,
/// acks what it got on a random node, and about every second records the group's acked floor.
pub fn consumer(
    thread: usize,
    seed: u64,
    client: Client,
    station: String,
    group: String,
    shared: Arc<Shared>,
) -> JoinHandle<History> {
    thread::spawn(move || {
        let mut rng = StdRng::seed_from_u64(seed ^ (thread as u64 + 101).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let nodes = client.node_ids();
        let observer = format!("consumer-{thread}");
        let mut history = History::default();
        let mut last_floor = Instant::now();
        while !shared.stop_consuming.load(Ordering::SeqCst) {
            let node = *nodes.choose(&mut rng).unwrap();
            let sent = Instant::now();
            match client.fetch(node, &station, &group, 100, 500) {
                Ok(batch) if !batch.is_empty() => {
                    shared.last_delivery_ms.store(shared.since_start().as_millis() as u64, Ordering::SeqCst);
                    for m in &batch {
                        history.reads.push(Read {
                            group: group.clone(),
                            value: m.value.clone(),
                            offset: m.offset,
                            attempt: m.attempt,
                            node,
                            at: sent,
                        });
                    }
                    let receipts: Vec<&str> = batch.iter().map(|m| m.receipt.as_str()).collect();
                    let ack_node = *nodes.choose(&mut rng).unwrap();
                    let results = client.ack(ack_node, &station, &group, &receipts);
                    let at = Instant::now();
                    for (i, m) in batch.iter().enumerate() {
                        let result = match &results {
                            Ok(rs) => rs.get(i).cloned().unwrap_or_else(|| "missing".to_owned()),
                            Err(e) => format!("failed: {e}"),
                        };
                        history.acks.push(Ack { group: group.clone(), offset: m.offset, result, at });
                    }
                }
                Ok(_) => {}
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
            if last_floor.elapsed() > Duration::from_secs(1) {
                last_floor = Instant::now();
                let node = *nodes.choose(&mut rng).unwrap();
                if let Some(floor) = client.group(node, &station, &group).ok().and_then(|v| v["acked_floor"].as_u64()) {
                    history.floors.push(FloorObservation {
                        observer: observer.clone(),
                        group: group.clone(),
                        acked_floor: floor,
                        node,
                        at: Instant::now(),
                        since_start: shared.since_start(),
                    });
                }
            }
        }
        history
    })
}

/// The faults the nemesis injects, one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    KillLeader,
    KillFollower,
    Pause,
    RestartAll,
    PartitionLeader,
}

pub const FAULTS: [Fault; 5] =
    [Fault::KillLeader, Fault::KillFollower, Fault::Pause, Fault::RestartAll, Fault::PartitionLeader];

/// A seeded schedule of faults: while some fault is short of its quota, the next one is drawn
/// among those (weighted by what is left); after that, among all.
pub struct Nemesis {
    rng: StdRng,
    quotas: BTreeMap<Fault, usize>,
    pub done: BTreeMap<Fault, usize>,
    /// When each leader was killed.
    pub leader_kills: Vec<Instant>,
    /// The longest wait for a leader after a fault.
    pub leader_deadline: Duration,
}

impl Nemesis {
    pub fn new(seed: u64, quotas: &[(Fault, usize)]) -> Nemesis {
        Nemesis {
            rng: StdRng::seed_from_u64(seed),
            quotas: quotas.iter().copied().collect(),
            done: BTreeMap::new(),
            leader_kills: Vec::new(),
            leader_deadline: Duration::from_secs(60),
        }
    }

    fn done(&self, fault: Fault) -> usize {
        self.done.get(&fault).copied().unwrap_or(0)
    }

    fn left(&self, fault: Fault) -> usize {
        self.quotas.get(&fault).copied().unwrap_or(0).saturating_sub(self.done(fault))
    }

    pub fn quotas_met(&self) -> bool {
        FAULTS.iter().all(|&f| self.left(f) == 0)
    }

    fn pick(&mut self) -> Fault {
        let owed: Vec<(Fault, usize)> = FAULTS.iter().map(|&f| (f, self.left(f))).filter(|(_, n)| *n > 0).collect();
        if owed.is_empty() {
            return *FAULTS.choose(&mut self.rng).unwrap();
        }
        let mut draw = self.rng.random_range(0..owed.iter().map(|(_, n)| n).sum::<usize>());
        for (fault, n) in owed {
            if draw < n {
                return fault;
            }
            draw -= n;
        }
        unreachable!()
    }

    /// A random pause of `min..max` milliseconds: how long a fault lasts or the cluster rests.
    fn hold(&mut self, min_ms: u64, max_ms: u64) {
        thread::sleep(Duration::from_millis(self.rng.random_range(min_ms..max_ms)));
    }

    /// Injects one fault, undoes it (relaunching what was killed, healing, resuming), waits for
    /// a leader, and lets the cluster work a moment. Returns the fault.
    pub fn step(&mut self, cluster: &mut Cluster) -> Fault {
        let fault = self.pick();
        let leader = cluster.wait_leader(self.leader_deadline);
        let followers: Vec<u64> = cluster.running().into_iter().filter(|&id| id != leader).collect();
        match fault {
            Fault::KillLeader => {
                self.leader_kills.push(Instant::now());
                cluster.kill(leader);
                self.hold(200, 2000);
                cluster.launch(leader);
            }
            Fault::KillFollower => {
                let victim = *followers.choose(&mut self.rng).unwrap();
                cluster.kill(victim);
                self.hold(200, 2000);
                cluster.launch(victim);
            }
            Fault::Pause => {
                let victim = *cluster.running().choose(&mut self.rng).unwrap();
                cluster.pause(victim);
                self.hold(500, 4000);
                cluster.resume(victim);
            }
            Fault::RestartAll => {
                let mut ids = cluster.running();
                ids.shuffle(&mut self.rng);
                for &id in &ids {
                    cluster.kill(id);
                }
                self.hold(0, 1000);
                ids.shuffle(&mut self.rng);
                cluster.launch_all(&ids);
            }
            Fault::PartitionLeader => {
                cluster.isolate(leader);
                self.hold(1000, 5000);
                cluster.heal();
            }
        }
        *self.done.entry(fault).or_default() += 1;
        cluster.wait_leader(self.leader_deadline);
        self.hold(300, 1500);
        fault
    }
}

/// For each leader kill, the time until the first acknowledged produce sent after it, in
/// milliseconds (kills followed by no acknowledged write are left out).
pub fn unavailability_ms(kills: &[Instant], acknowledged_writes: &[(Instant, Instant)]) -> Vec<u64> {
    kills
        .iter()
        .filter_map(|&kill| {
            acknowledged_writes
                .iter()
                .filter(|(sent, _)| *sent >= kill)
                .map(|(_, answered)| *answered)
                .min()
                .map(|answered| answered.duration_since(kill).as_millis() as u64)
        })
        .collect()
}
