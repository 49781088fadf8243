//! `depot-bench push [--quick] [--dir DIR]`: push delivery (webhooks out, API.md "Push
//! delivery") measured against receivers served by this process, one line per measurement:
//!
//! - throughput: first the ceiling of this machine's HTTP path, a plain reqwest client posting
//!   1 KiB bodies with 64 requests in flight to a trivial receiver (204 to every POST); then
//!   Depot delivering a pre-produced backlog to the same kind of receiver through a push group
//!   with `max_in_flight` 64: the rate from the first receipt to the last, its ratio to the
//!   ceiling, and the server's CPU per delivered message;
//! - latency: messages produced open loop at 1000/s, each carrying its send time as the stored
//!   header `sent-at` (delivered as `depot-header-sent-at`): p50/p99/max produce-to-receive;
//! - isolation: 100 push groups on one station, half pointing at a receiver that accepts
//!   connections and never answers; the healthy half's delivery rate against a run with only the
//!   healthy half, and the server's peak RSS.
//!
//! The server is the release `depot dev` next to this binary (it allows push to private
//! networks, so receivers on 127.0.0.1 are fine). Without push delivery in that `depot`, the
//! group PUT is refused and the bench stops there with that answer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use depot_tests::process::{cpu_seconds, Server};
use serde_json::json;

use crate::load::{batch_body, start_depot, stop, token, BATCH, KIB};

/// Requests in flight: the reqwest ceiling's concurrency and the push groups' `max_in_flight`.
const IN_FLIGHT: usize = 64;
/// The stored header carrying a message's send time, in Unix microseconds.
const SENT_AT: &str = "Depot-Header-Sent-At";
/// How the push engine delivers it (each stored header `h` as `depot-header-h`).
const SENT_AT_DELIVERED: &str = "depot-header-sent-at";
const ISOLATION_GROUPS: usize = 100;

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

/// What a receiver saw.
#[derive(Default)]
struct Received {
    count: AtomicU64,
    /// First and last receipt.
    span: Mutex<Option<(Instant, Instant)>>,
    /// Produce-to-receive, µs, of requests that carried a send time.
    latencies_us: Mutex<Vec<u64>>,
}

impl Received {
    fn record(&self, sent_at: Option<u64>) {
        let now = Instant::now();
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut span) = self.span.lock() {
            *span = Some(span.map_or((now, now), |(first, _)| (first, now)));
        }
        if let Some(sent) = sent_at {
            if let Ok(mut l) = self.latencies_us.lock() {
                l.push(unix_micros().saturating_sub(sent));
            }
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Receipts per second from the first to the last.
    fn rate(&self) -> f64 {
        let span = self.span.lock().ok().and_then(|s| *s);
        match span {
            Some((first, last)) if last > first => {
                (self.count().saturating_sub(1)) as f64 / (last - first).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

async fn receive(
    req: actix_web::HttpRequest,
    _body: actix_web::web::Bytes,
    seen: actix_web::web::Data<Received>,
) -> actix_web::HttpResponse {
    let sent_at = req.headers().get(SENT_AT_DELIVERED).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    seen.record(sent_at);
    actix_web::HttpResponse::NoContent().finish()
}

/// A trivial receiver on 127.0.0.1:0: 204 to every POST on any path, counting them. It runs on
/// its own actix workers in this process until the handle stops it.
struct Receiver {
    url: String,
    seen: Arc<Received>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    async fn start() -> anyhow::Result<Receiver> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Received::default());
        let data = actix_web::web::Data::from(seen.clone());
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(data.clone())
                .app_data(actix_web::web::PayloadConfig::new(16 << 20))
                .default_service(actix_web::web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Receiver { url: format!("http://{addr}/hook"), seen, handle })
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// A receiver that accepts connections and never answers, holding them until aborted.
async fn hung_receiver() -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    Ok((url, task))
}

/// The bench's HTTP client for Depot: produce and admin requests as the `depot dev` admin.
struct Depot {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
    pid: u32,
}

impl Depot {
    fn new(server: &Server) -> anyhow::Result<Depot> {
        Ok(Depot {
            client: reqwest::Client::builder().build()?,
            base: format!("http://{}", server.addr),
            token: token(server).map(str::to_owned),
            pid: server.pid(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends `req`; an answer outside `ok` is an error naming the request and the answer.
    async fn expect(&self, what: &str, req: reqwest::RequestBuilder, ok: &[u16]) -> anyhow::Result<()> {
        let resp = req.send().await.with_context(|| what.to_owned())?;
        let status = resp.status().as_u16();
        if !ok.contains(&status) {
            let text = resp.text().await.unwrap_or_default();
            bail!("{what}: {status} {text}");
        }
        Ok(())
    }

    async fn put_station(&self, station: &str) -> anyhow::Result<()> {
        let req = self
            .request(reqwest::Method::PUT, &format!("/v1/stations/{station}"))
            .header("content-type", "application/json")
            .body("{}");
        self.expect(&format!("PUT station {station}"), req, &[200, 201]).await
    }

    /// Creates a push group delivering from the station's first offset.
    async fn put_push_group(&self, station: &str, group: &str, url: &str) -> anyhow::Result<()> {
        let body = json!({"start": "earliest", "push": {"url": url, "max_in_flight": IN_FLIGHT}});
        let path = format!("/v1/stations/{station}/consumer-groups/{group}");
        let resp = self
            .request(reqwest::Method::PUT, &path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .context("PUT push group")?;
        let status = resp.status().as_u16();
        if status != 200 && status != 201 {
            let text = resp.text().await.unwrap_or_default();
            bail!(
                "PUT {path} with push answered {status} {text}\nthis depot refused a push group: push delivery \
                 (API.md \"Push delivery\") is not in it yet, or `depot dev` no longer allows private networks"
            );
        }
        Ok(())
    }

    /// Produces `total` messages of 1 KiB in batches of 100, 16 batches in flight.
    async fn fill(&self, station: &str, total: usize) -> anyhow::Result<()> {
        let body = bytes::Bytes::from(batch_body("base64"));
        let path = format!("/v1/stations/{station}/messages/batch");
        let batches = total.div_ceil(BATCH);
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (next, body) = (next.clone(), body.clone());
            let req = self.request(reqwest::Method::POST, &path).header("content-type", "application/json");
            tasks.push(async move {
                while next.fetch_add(1, Ordering::Relaxed) < batches as u64 {
                    let req = req.try_clone().context("a batch request")?.body(body.clone());
                    self.expect("produce a batch", req, &[200]).await?;
                }
                Ok::<_, anyhow::Error>(())
            });
        }
        for r in futures_util::future::join_all(tasks).await {
            r?;
        }
        Ok(())
    }

    /// Produces one 1 KiB message carrying its send time.
    fn produce_timed(&self, station: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, &format!("/v1/stations/{station}/messages"))
            .header("content-type", "application/octet-stream")
            .header(SENT_AT, unix_micros().to_string())
            .body(vec![b'x'; KIB])
    }

    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.pid))
    }

    /// The server's peak resident set (VmHWM), KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Waits until `seen` counted `want`, or nothing arrived for `stall`; answers the count.
async fn wait_for(seen: &Received, want: u64, stall: Duration) -> u64 {
    let mut last = (seen.count(), Instant::now());
    loop {
        let n = seen.count();
        if n >= want {
            return n;
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > stall {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ceiling: reqwest with `IN_FLIGHT` requests in flight posting 1 KiB to a trivial receiver.
async fn baseline(duration: Duration) -> anyhow::Result<f64> {
    let receiver = Receiver::start().await?;
    let client = reqwest::Client::builder().build()?;
    let body = bytes::Bytes::from(vec![b'x'; KIB]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (client, url, body, stop) = (client.clone(), receiver.url.clone(), body.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let resp = client.post(&url).body(body.clone()).send().await?;
                if resp.status().as_u16() != 204 {
                    bail!("the receiver answered {}", resp.status());
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let rate = receiver.seen.rate();
    receiver.stop().await;
    Ok(rate)
}

async fn throughput(depot: &Depot, quick: bool) -> anyhow::Result<()> {
    let duration = Duration::from_secs(if quick { 2 } else { 5 });
    let ceiling = baseline(duration).await?;
    eprintln!("reqwest ceiling: {ceiling:.0} msg/s ({IN_FLIGHT} in flight, 1 KiB) to a trivial receiver");
    let total: usize = if quick { 20_000 } else { 100_000 };
    depot.put_station("push-throughput").await?;
    depot.fill("push-throughput", total).await?;
    let receiver = Receiver::start().await?;
    let cpu0 = depot.cpu_seconds();
    depot.put_push_group("push-throughput", "g", &receiver.url).await?;
    let got = wait_for(&receiver.seen, total as u64, Duration::from_secs(10)).await;
    let cpu = depot.cpu_seconds() - cpu0;
    let rate = receiver.seen.rate();
    receiver.stop().await;
    if got < total as u64 {
        bail!("push throughput: the receiver got {got} of {total} messages (delivery stalled for 10 s)");
    }
    println!(
        "push throughput: depot {:.0} msg/s ({total} x 1 KiB, max_in_flight {IN_FLIGHT}), reqwest ceiling {ceiling:.0} \
         msg/s ({IN_FLIGHT} in flight), ratio {:.2}, server CPU {:.0} µs/msg",
        rate,
        if ceiling > 0.0 { rate / ceiling } else { 0.0 },
        cpu * 1e6 / got.max(1) as f64
    );
    Ok(())
}

/// Produces 1 KiB messages open loop at `per_s` for `duration` (one request per message, each
/// on its own task so a slow answer never delays the next send); answers how many were stored.
async fn produce_open_loop(depot: &Arc<Depot>, station: &str, per_s: u64, duration: Duration) -> anyhow::Result<u64> {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut sends = Vec::new();
    while start.elapsed() < duration {
        tick.tick().await;
        let (depot, station) = (depot.clone(), station.to_owned());
        sends.push(tokio::spawn(async move { depot.expect("produce", depot.produce_timed(&station), &[201]).await }));
    }
    let sent = sends.len() as u64;
    for s in sends {
        s.await??;
    }
    Ok(sent)
}

async fn latency(depot: &Arc<Depot>, quick: bool) -> anyhow::Result<()> {
    let duration = Duration::from_secs(if quick { 3 } else { 10 });
    depot.put_station("push-latency").await?;
    let receiver = Receiver::start().await?;
    depot.put_push_group("push-latency", "g", &receiver.url).await?;
    let sent = produce_open_loop(depot, "push-latency", 1000, duration).await?;
    let got = wait_for(&receiver.seen, sent, Duration::from_secs(10)).await;
    let mut l = receiver.seen.latencies_us.lock().map(|l| l.clone()).unwrap_or_default();
    receiver.stop().await;
    if got < sent {
        bail!("push latency: the receiver got {got} of {sent} messages");
    }
    l.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "push latency: produce-to-receive p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({sent} messages at 1000/s over {} s)",
        ms(crate::percentile(&l, 0.5)),
        ms(crate::percentile(&l, 0.99)),
        ms(l.last().copied().unwrap_or(0)),
        duration.as_secs()
    );
    Ok(())
}

/// Delivery rate to the healthy groups (messages per second summed over them) while `per_s`
/// messages a second are produced on a station with `healthy` groups on a trivial receiver and
/// `hung` on one that never answers.
async fn isolation_run(
    depot: &Arc<Depot>,
    station: &str,
    healthy: usize,
    hung: usize,
    per_s: u64,
    duration: Duration,
) -> anyhow::Result<(f64, u64)> {
    depot.put_station(station).await?;
    let receiver = Receiver::start().await?;
    let (hung_url, hung_task) = hung_receiver().await?;
    for i in 0..hung {
        depot.put_push_group(station, &format!("hung-{i}"), &hung_url).await?;
    }
    for i in 0..healthy {
        depot.put_push_group(station, &format!("ok-{i}"), &receiver.url).await?;
    }
    let start = Instant::now();
    let sent = produce_open_loop(depot, station, per_s, duration).await?;
    let want = sent * healthy as u64;
    let got = wait_for(&receiver.seen, want, Duration::from_secs(5)).await;
    let elapsed = start.elapsed();
    receiver.stop().await;
    hung_task.abort();
    if got < want {
        bail!("push isolation ({hung} hung groups): the healthy groups got {got} of {want} deliveries");
    }
    Ok((got as f64 / elapsed.as_secs_f64(), depot.peak_rss_kib()))
}

async fn isolation(depot: &Arc<Depot>, quick: bool) -> anyhow::Result<()> {
    let duration = Duration::from_secs(if quick { 3 } else { 10 });
    let per_s = 100;
    let half = ISOLATION_GROUPS / 2;
    let (alone, rss_alone) = isolation_run(depot, "push-healthy", half, 0, per_s, duration).await?;
    let (beside, rss) = isolation_run(depot, "push-isolation", half, half, per_s, duration).await?;
    println!(
        "push isolation: {half} healthy groups get {beside:.0} deliveries/s beside {half} hung ones vs {alone:.0} alone \
         (ratio {:.2}; {per_s} msg/s produced); server peak RSS {} MiB ({} MiB before the hung groups)",
        if alone > 0.0 { beside / alone } else { 0.0 },
        rss / 1024,
        rss_alone / 1024
    );
    Ok(())
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let base = match args.iter().position(|a| a == "--dir") {
        Some(i) => PathBuf::from(args.get(i + 1).context("--dir needs a value")?),
        None => std::env::temp_dir(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let tmp = tempfile::tempdir_in(&base)?;
    let server = start_depot(&rt, tmp.path())?;
    let depot = Arc::new(Depot::new(&server)?);
    let measured = rt.block_on(async {
        throughput(&depot, quick).await?;
        latency(&depot, quick).await?;
        isolation(&depot, quick).await
    });
    stop(server, &tmp.path().join("depot.log"))?;
    measured
}
