//! The delivering side of push groups. On the Raft leader only, one worker per active push
//! group takes messages with the same replicated commands as a pull consumer (`PushFetch`,
//! `PushSettle`), posts them over HTTP and reports how each attempt ended. Nothing here is
//! state: a worker that dies, or a leader that is killed, leaves its deliveries pending in the
//! replicated state, and they are delivered again after their ack wait.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use depot_broker::raft::StoredMessage;
use depot_broker::station::{Delivery, Millis, PushBody, PushGroup, PushResult, PushState, Receipt};
use depot_broker::Broker;
use governor::{Quota, RateLimiter};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use url::Url;

use super::client::{Attempt, PushClient};
use super::guard::Guard;
use super::live::{AttemptRecord, GroupLive, Live, Outcome};
use super::sign;
use crate::encoding::{message_id, BrowsedMessage};

/// How often the supervisor looks at leadership and at the push groups.
const SUPERVISE_EVERY: Duration = Duration::from_millis(100);
/// How long a worker's fetch waits for a message before it looks at its stop signal again.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Pause after a fetch failed (no leader, shutting down) before the next try.
const FETCH_RETRY: Duration = Duration::from_millis(200);
/// Most results one `PushSettle` carries.
const SETTLE_BATCH: usize = 1000;
/// Marks a read forwarded to the leader, which answers it itself.
pub const FORWARDED: &str = "depot-forwarded";
/// How long a forwarded read may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// `Retry-After` is honoured up to this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The header names a push delivery sets itself; a group's `headers` may not use them.
pub fn reserved_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("webhook-")
        || name.starts_with("depot-")
        || matches!(
            name.as_str(),
            "content-type"
                | "content-length"
                | "host"
                | "transfer-encoding"
                | "connection"
                | "te"
                | "upgrade"
                | "trailer"
        )
}

/// Delivers every active push group while this node leads. Cheap to clone.
#[derive(Clone)]
pub struct Pusher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher").field("allow_private", &self.inner.guard.allow_private()).finish_non_exhaustive()
    }
}

struct Inner {
    broker: Broker,
    client: PushClient,
    /// For reads forwarded to the leader's API inside the cluster (never to push targets).
    internal: reqwest::Client,
    guard: Guard,
    live: Live,
    stop: watch::Sender<bool>,
    started: AtomicBool,
}

impl Pusher {
    pub fn new(broker: Broker, guard: Guard) -> Result<Pusher, String> {
        let client = PushClient::new(guard.clone())?;
        let internal = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FORWARD_TIMEOUT)
            .build()
            .map_err(|e| format!("building the internal HTTP client: {e}"))?;
        let inner = Inner {
            broker,
            client,
            internal,
            guard,
            live: Live::default(),
            stop: watch::Sender::new(false),
            started: AtomicBool::new(false),
        };
        Ok(Pusher { inner: Arc::new(inner) })
    }

    /// Starts delivering (once; later calls do nothing). Runs on the calling Tokio runtime.
    pub fn start(&self) {
        if !self.inner.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(supervise(self.inner.clone()));
        }
    }

    /// Stops every worker: no new attempt starts; attempts under way finish and are settled.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }

    pub fn guard(&self) -> &Guard {
        &self.inner.guard
    }

    pub fn live(&self) -> &Live {
        &self.inner.live
    }

    /// Asks the leader's API for `path_and_query` (a GET) with the caller's `authorization`:
    /// the attempts log lives on the node that delivers. `None` when this node leads, there is
    /// no leader, or the leader does not answer; then the caller answers from this node.
    pub async fn from_leader(&self, path_and_query: &str, authorization: Option<&str>) -> Option<(u16, String, Bytes)> {
        let broker = &self.inner.broker;
        if broker.is_leader() {
            return None;
        }
        let view = broker.cluster_view().await;
        let leader = view.leader_id.filter(|id| *id != view.node_id)?;
        let api = &view.nodes.iter().find(|n| n.id == leader)?.api_addr;
        let mut request = self.inner.internal.get(format!("http://{api}{path_and_query}")).header(FORWARDED, "1");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                tracing::debug!(error = %e, leader, "the leader did not answer a forwarded read");
                return None;
            }
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        let body = response.bytes().await.ok()?;
        Some((status, content_type, body))
    }

    /// Sends one signed test event to `push`'s URL now; nothing is stored or counted.
    pub async fn test_event(&self, station: &str, push: PushGroup, payload: Bytes, content_type: &str) -> Attempt {
        let id = format!("msg_test_{:016x}", rand::random::<u64>());
        let target = Target::new(push, station, self.inner.broker.now());
        let headers = target.headers(&id, None, content_type, &payload);
        target.send(&self.inner.client, headers, payload).await
    }
}

fn timeout(push: &PushGroup) -> Duration {
    Duration::from_millis(push.config.timeout_ms)
}

/// What every delivery of one fetch shares, prepared once: the group as it then was, its URL
/// parsed, its signing keys decoded and its configured headers as a map.
struct Target {
    push: Arc<PushGroup>,
    /// The URL was checked when it was put, so it parses; if it does not, attempts fail.
    url: Result<Url, String>,
    keys: Vec<Vec<u8>>,
    station: HeaderValue,
    extra: HeaderMap,
}

impl Target {
    fn new(push: PushGroup, station: &str, now: Millis) -> Target {
        let keys = push.signing_secrets(now).filter_map(|s| sign::parse_secret(s).ok()).collect();
        let url = Url::parse(&push.config.url).map_err(|e| format!("connection_error: invalid URL: {e}"));
        let mut extra = HeaderMap::new();
        for (name, value) in &push.config.headers {
            // Checked when put; one that no longer parses is left out.
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                extra.append(name, value);
            }
        }
        let station = HeaderValue::from_str(station).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        Target { push: Arc::new(push), url, keys, station, extra }
    }

    /// The headers of one attempt: the Standard Webhooks three, Depot's own, the message's
    /// stored headers and the group's configured ones. `delivery` is `None` for a test event.
    fn headers(
        &self,
        id: &str,
        delivery: Option<(&Delivery, &StoredMessage)>,
        content_type: &str,
        body: &[u8],
    ) -> HeaderMap {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let keys: Vec<&[u8]> = self.keys.iter().map(Vec::as_slice).collect();
        let signature = sign::signature_header(id, timestamp, body, &keys);
        let mut headers = HeaderMap::with_capacity(16);
        let mut put = |name: HeaderName, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(name, value);
            }
        };
        put(HeaderName::from_static("webhook-id"), id);
        put(HeaderName::from_static("webhook-timestamp"), &timestamp.to_string());
        put(HeaderName::from_static("webhook-signature"), &signature);
        put(CONTENT_TYPE, content_type);
        if let Some((delivery, message)) = delivery {
            put(HeaderName::from_static("depot-offset"), &message.offset.to_string());
            put(HeaderName::from_static("depot-attempt"), &delivery.attempt.to_string());
            for (name, value) in &message.headers {
                if let Ok(name) = HeaderName::from_bytes(format!("depot-header-{name}").as_bytes()) {
                    put(name, value);
                }
            }
        }
        headers.append(HeaderName::from_static("depot-station"), self.station.clone());
        for (name, value) in &self.extra {
            headers.append(name.clone(), value.clone());
        }
        headers
    }

    async fn send(&self, client: &PushClient, headers: HeaderMap, body: Bytes) -> Attempt {
        match &self.url {
            Ok(url) => client.send(url, headers, body, timeout(&self.push)).await,
            Err(error) => Attempt {
                status: None,
                latency: Duration::ZERO,
                error: Some(error.clone()),
                retry_after: None,
                excerpt: None,
            },
        }
    }
}

/// What makes a worker: a change here starts a new one.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Spec {
    station_id: u64,
    max_in_flight: u32,
    rate_per_s: Option<u32>,
}

struct Worker {
    spec: Spec,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Keeps one worker per active push group while this node leads, none otherwise.
async fn supervise(inner: Arc<Inner>) {
    let mut workers: HashMap<(String, String), Worker> = HashMap::new();
    let mut stop = inner.stop.subscribe();
    loop {
        let all = inner.broker.push_groups_now();
        inner.live.retain(|s, g| all.iter().any(|(station, group, _)| station == s && group == g));
        let leading = inner.broker.is_leader() && !*stop.borrow();
        let mut wanted = HashMap::new();
        for (station, group, push) in all {
            if !leading || push.state != PushState::Active {
                continue;
            }
            let Some(station_id) = inner.broker.station_id_now(&station) else { continue };
            let spec =
                Spec { station_id, max_in_flight: push.config.max_in_flight, rate_per_s: push.config.rate_per_s };
            wanted.insert((station, group), spec);
        }
        workers.retain(|key, worker| {
            let keep = wanted.get(key).is_some_and(|spec| *spec == worker.spec) && !worker.task.is_finished();
            if !keep {
                worker.stop.send_replace(true);
            }
            keep
        });
        for (key, spec) in wanted {
            if workers.contains_key(&key) {
                continue;
            }
            let (stop_tx, stop_rx) = watch::channel(false);
            let task = tokio::spawn(work(inner.clone(), key.0.clone(), key.1.clone(), spec.clone(), stop_rx));
            workers.insert(key, Worker { spec, stop: stop_tx, task });
        }
        tokio::select! {
            _ = tokio::time::sleep(SUPERVISE_EVERY) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() && workers.is_empty() {
            return;
        }
    }
}

/// One push group's delivery loop: take as many messages as there is room for in flight (and
/// the rate allows), post each in its own task, settle results in batches.
async fn work(inner: Arc<Inner>, station: String, group: String, spec: Spec, mut stop: watch::Receiver<bool>) {
    tracing::debug!(station, group, "push worker started");
    let room = usize::try_from(spec.max_in_flight).unwrap_or(1).max(1);
    // Fetched and not yet answered: up to `max_in_flight` under way plus as many taken ahead,
    // so the next fetch's Raft round trip overlaps the attempts under way.
    let slots = Arc::new(Semaphore::new(room * 2));
    let limiter = spec.rate_per_s.and_then(NonZeroU32::new).map(|rate| RateLimiter::direct(Quota::per_second(rate)));
    let (results, results_rx) = mpsc::unbounded_channel();
    let settler = tokio::spawn(settle(inner.clone(), station.clone(), group.clone(), results_rx));
    let (batches, batches_rx) = mpsc::unbounded_channel();
    let sender = Sender {
        inner: inner.clone(),
        live: inner.live.group(&station, &group),
        station: station.clone(),
        station_id: spec.station_id,
        results,
    };
    let dispatcher = tokio::spawn(sender.dispatch(batches_rx, room));
    while !*stop.borrow() {
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => continue,
        };
        if let Some(limiter) = &limiter {
            tokio::select! {
                _ = limiter.until_ready() => {}
                _ = stop.changed() => continue,
            }
        }
        let mut held = vec![first];
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            if limiter.as_ref().is_some_and(|l| l.check().is_err()) {
                break;
            }
            held.push(permit);
        }
        let max = u32::try_from(held.len()).unwrap_or(u32::MAX);
        let fetched = match inner.broker.push_fetch(&station, &group, max, FETCH_WAIT).await {
            Ok(fetched) => fetched,
            Err(e) => {
                tracing::debug!(station, group, error = %e, "push fetch failed; trying again");
                drop(held);
                tokio::select! {
                    _ = tokio::time::sleep(FETCH_RETRY) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        if fetched.deliveries.is_empty() {
            continue;
        }
        // Read after the fetch applied, so a rotation or an update applied before is in force.
        let Some(push) = inner.broker.push_group_now(&station, &group) else { continue };
        let target = Arc::new(Target::new(push, &station, inner.broker.now()));
        let batch: Vec<_> = fetched.deliveries.into_iter().zip(fetched.messages).zip(held.drain(..)).collect();
        if batches.send((target, batch)).is_err() {
            break;
        }
    }
    // Deliveries taken are still sent, attempts under way finish (each within its timeout),
    // and all are settled before the end.
    drop(batches);
    let _ = dispatcher.await;
    let _ = settler.await;
    tracing::debug!(station, group, "push worker stopped");
}

/// A fetch's deliveries, each with its message and the slot it holds.
type Batch = (Arc<Target>, Vec<((Delivery, StoredMessage), OwnedSemaphorePermit)>);

/// Starts each fetched delivery's attempt as soon as fewer than `max_in_flight` are under way.
struct Sender {
    inner: Arc<Inner>,
    live: Arc<GroupLive>,
    station: String,
    station_id: u64,
    results: mpsc::UnboundedSender<Settled>,
}

impl Sender {
    async fn dispatch(self, mut batches: mpsc::UnboundedReceiver<Batch>, room: usize) {
        let in_flight = Arc::new(Semaphore::new(room));
        let mut sends = JoinSet::new();
        while let Some((target, batch)) = batches.recv().await {
            for ((delivery, message), slot) in batch {
                let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
                while sends.try_join_next().is_some() {}
                let send = Send {
                    inner: self.inner.clone(),
                    live: self.live.clone(),
                    station: self.station.clone(),
                    station_id: self.station_id,
                    target: target.clone(),
                    results: self.results.clone(),
                };
                sends.spawn(send.run(delivery, message, (slot, permit)));
            }
        }
        while sends.join_next().await.is_some() {}
    }
}

/// One attempt of one delivery.
struct Send {
    inner: Arc<Inner>,
    live: Arc<GroupLive>,
    station: String,
    station_id: u64,
    target: Arc<Target>,
    results: mpsc::UnboundedSender<Settled>,
}

/// A delivery's result on its way to `PushSettle`.
struct Settled {
    receipt: Receipt,
    result: PushResult,
    /// A hook whose target answered 410: it is deleted instead.
    delete_hook: bool,
}

impl Send {
    async fn run(
        self,
        delivery: Delivery,
        message: StoredMessage,
        permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    ) {
        let id = message_id(self.station_id, message.offset);
        let target = &self.target;
        let (body, content_type) = match target.push.config.body {
            PushBody::Raw => (message.payload.clone(), message.content_type.as_str()),
            PushBody::Message => {
                // A hook's body: the message as browse shows it.
                let hook = BrowsedMessage::from_stored(&self.station, self.station_id, &message);
                (Bytes::from(serde_json::to_vec(&hook).unwrap_or_default()), "application/json")
            }
        };
        let headers = target.headers(&id, Some((&delivery, &message)), content_type, &body);
        self.live.in_flight.fetch_add(1, Ordering::Relaxed);
        let attempt = target.send(&self.inner.client, headers, body).await;
        self.live.in_flight.fetch_sub(1, Ordering::Relaxed);
        drop(permits);
        let (outcome, result) = judge(&attempt);
        self.live.record(
            outcome,
            AttemptRecord {
                seq: 0,
                at: crate::auth::now_millis(),
                offset: message.offset,
                attempt: delivery.attempt,
                status: attempt.status,
                latency: attempt.latency,
                error: attempt.error.clone(),
                response_excerpt: attempt.excerpt.clone(),
            },
        );
        let delete_hook = result == PushResult::Gone && target.push.config.hook_created_at.is_some();
        let _ = self.results.send(Settled { receipt: delivery.receipt, result, delete_hook });
    }
}

/// What an attempt means for the message: 2xx acks; 410 disables; 429 and 503 wait for
/// `Retry-After` (at most an hour); anything else is a failed attempt.
fn judge(attempt: &Attempt) -> (Outcome, PushResult) {
    let failed =
        |error: &str, retry_after_ms: Option<u64>| PushResult::Failed { error: error.to_owned(), retry_after_ms };
    let error = attempt.error.as_deref().unwrap_or("failed");
    match attempt.status {
        Some(status) if (200..300).contains(&status) => (Outcome::Delivered, PushResult::Delivered),
        Some(410) => (Outcome::Gone, PushResult::Gone),
        Some(429 | 503) => {
            let wait = attempt.retry_after.map(|d| d.min(MAX_RETRY_AFTER).as_millis() as u64);
            (Outcome::HttpError, failed(error, wait))
        }
        Some(status) if (300..400).contains(&status) => (Outcome::Redirect, failed(error, None)),
        Some(_) => (Outcome::HttpError, failed(error, None)),
        None if error == "timeout" => (Outcome::Timeout, failed(error, None)),
        None if error == "blocked_address" => (Outcome::BlockedAddress, failed(error, None)),
        None => (Outcome::ConnectionError, failed(error, None)),
    }
}

/// Settles results as they come, as many per command as have arrived meanwhile. A settle that
/// fails leaves its deliveries pending: they go again after their ack wait.
async fn settle(inner: Arc<Inner>, station: String, group: String, mut results: mpsc::UnboundedReceiver<Settled>) {
    let mut batch = Vec::new();
    while let Some(first) = results.recv().await {
        batch.push(first);
        while batch.len() < SETTLE_BATCH {
            match results.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        if batch.iter().any(|s| s.delete_hook) {
            match inner.broker.delete_group(&station, &group).await {
                Ok(()) => tracing::info!(station, group, "hook deleted: its target answered 410 Gone"),
                Err(e) => tracing::warn!(station, group, error = %e, "deleting a gone hook failed"),
            }
            batch.clear();
            continue;
        }
        let settled: Vec<(Receipt, PushResult)> = batch.drain(..).map(|s| (s.receipt, s.result)).collect();
        if let Err(e) = inner.broker.push_settle(&station, &group, settled).await {
            tracing::warn!(station, group, error = %e, "settling push results failed; they go again after the ack wait");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(status: Option<u16>, error: Option<&str>, retry_after: Option<u64>) -> Attempt {
        Attempt {
            status,
            latency: Duration::from_millis(1),
            error: error.map(str::to_owned),
            retry_after: retry_after.map(Duration::from_secs),
            excerpt: None,
        }
    }

    #[test]
    fn answers_are_judged_as_the_contract_says() {
        assert_eq!(judge(&attempt(Some(204), None, None)).1, PushResult::Delivered);
        assert_eq!(judge(&attempt(Some(410), Some("HTTP 410"), None)).1, PushResult::Gone);
        let (_, limited) = judge(&attempt(Some(429), Some("HTTP 429"), Some(2)));
        assert_eq!(limited, PushResult::Failed { error: "HTTP 429".into(), retry_after_ms: Some(2000) });
        let (_, capped) = judge(&attempt(Some(503), Some("HTTP 503"), Some(86_400)));
        assert_eq!(capped, PushResult::Failed { error: "HTTP 503".into(), retry_after_ms: Some(3_600_000) });
        let (outcome, _) = judge(&attempt(Some(302), Some("redirect (HTTP 302) not followed"), None));
        assert_eq!(outcome, Outcome::Redirect);
        assert_eq!(judge(&attempt(None, Some("timeout"), None)).0, Outcome::Timeout);
        assert_eq!(judge(&attempt(None, Some("blocked_address"), None)).0, Outcome::BlockedAddress);
        let (outcome, result) = judge(&attempt(Some(500), Some("HTTP 500"), Some(5)));
        assert_eq!(outcome, Outcome::HttpError);
        assert_eq!(result, PushResult::Failed { error: "HTTP 500".into(), retry_after_ms: None });
    }

    #[test]
    fn reserved_headers_are_recognised_in_any_case() {
        for name in ["Webhook-Id", "webhook-signature", "Depot-Offset", "Content-Type", "HOST"] {
            assert!(reserved_header(name), "{name}");
        }
        assert!(!reserved_header("x-tenant"));
    }
}
