//! `depot-bench http [--quick]`: measures the `depot` gateway over real HTTP against issue 3's
//! targets, next to a ceiling: a trivial actix-web handler served by this binary with the same
//! worker count, measured with the same client and concurrency.
//!
//! The server is the release `depot` binary next to this one, run as a child process
//! (`depot dev --listen 127.0.0.1:0`). The client is the test kit's HTTP/1.1 keep-alive client
//! over `tokio::net::TcpStream` (see [`crate::load`]): one request in flight per connection.
//!
//! Settings (environment): `DEPOT_BENCH_CLIENT_THREADS` (client runtime workers, default 2),
//! `DEPOT_BENCH_SINGLE_CONNS` (default 64), `DEPOT_BENCH_BATCH_CONNS` (default 16),
//! `DEPOT_BENCH_CONSUMERS` (default 16), `DEPOT_BENCH_PAYLOAD` (`base64`, the default, or
//! `json`: how batch items carry their 1 KiB).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::load::{
    batch_body, expect, figure, load, load_until, progress, request, start, start_depot, stop, token, Outcome, Target,
    Work, BATCH, KIB,
};
use crate::sys::env_usize;

const STATION: &str = "bench";
const BATCH_STATION: &str = "bench-batch";
const FETCH_STATION: &str = "bench-fetch";
const GROUP: &str = "g";

// ---------------------------------------------------------------------------------------------
// Workloads

struct Row {
    id: &'static str,
    what: String,
    target: &'static str,
    /// Whether the figure meets the target.
    met: bool,
    depot: Outcome,
    ceiling: Option<Outcome>,
    latency: bool,
}

fn report(rows: &[Row]) {
    println!("| workload | target | depot | met? | ceiling (trivial actix handler) |");
    println!("|---|---|---|---|---|");
    for r in rows {
        let met = if r.depot.errors > 0 {
            format!("**failed**: {} errors", r.depot.errors)
        } else if r.met {
            "yes".to_owned()
        } else {
            "**no**".to_owned()
        };
        let ceiling = r.ceiling.as_ref().map_or("—".to_owned(), |c| {
            if c.errors > 0 {
                format!("failed: {} errors", c.errors)
            } else {
                figure(c, r.latency)
            }
        });
        println!("| {} | {} | {} | {met} | {ceiling} |", r.what, r.target, figure(&r.depot, r.latency));
    }
    for r in rows {
        for (server, o) in std::iter::once(("depot", &r.depot)).chain(r.ceiling.as_ref().map(|c| ("ceiling", c))) {
            println!(
                "{}",
                json!({"workload": r.id, "server": server, "messages": o.messages, "requests": o.requests,
                    "seconds": (o.seconds * 1000.0).round() / 1000.0, "msg_per_s": o.msg_per_s() as u64,
                    "p50_us": o.percentile(0.5), "p99_us": o.percentile(0.99), "errors": o.errors,
                    "first_error": o.first_error, "server_cpu_s": (o.server_cpu_s * 100.0).round() / 100.0,
                    "client_cpu_s": (o.client_cpu_s * 100.0).round() / 100.0,
                    "met": if server == "depot" { Some(r.met && o.errors == 0) } else { None }})
            );
        }
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let base = match args.iter().position(|a| a == "--dir") {
        Some(i) => PathBuf::from(args.get(i + 1).context("--dir needs a value")?),
        None => std::env::temp_dir(),
    };
    let (warmup, duration) = if quick {
        (Duration::from_millis(300), Duration::from_secs(1))
    } else {
        (Duration::from_secs(1), Duration::from_secs(5))
    };
    let client_threads = env_usize("DEPOT_BENCH_CLIENT_THREADS", 2);
    let single_conns = env_usize("DEPOT_BENCH_SINGLE_CONNS", 64);
    let batch_conns = env_usize("DEPOT_BENCH_BATCH_CONNS", 16);
    let consumers = env_usize("DEPOT_BENCH_CONSUMERS", 16);
    let payload_kind = std::env::var("DEPOT_BENCH_PAYLOAD").unwrap_or_else(|_| "base64".to_owned());
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(client_threads).enable_all().build()?;
    eprintln!(
        "client: {client_threads} threads; server workers: {workers}; {} s per workload after {} ms warm-up",
        duration.as_secs_f64(),
        warmup.as_millis()
    );

    let tmp = tempfile::tempdir_in(&base)?;
    let server = start_depot(&rt, tmp.path())?;
    let started = Instant::now();
    let retention = json!({"retention": {"max_bytes": 512u64 << 20}});
    rt.block_on(async {
        for station in [STATION, BATCH_STATION] {
            expect(&server, "PUT", &format!("/v1/stations/{station}"), retention.clone(), &[200, 201]).await?;
        }
        expect(&server, "PUT", &format!("/v1/stations/{FETCH_STATION}"), json!({}), &[200, 201]).await
    })?;
    let token = token(&server).map(str::to_owned);
    let tok = token.as_deref();
    let single_path = format!("/v1/stations/{STATION}/messages");
    let single = Arc::new(request("POST", &single_path, tok, "application/octet-stream", &[b'x'; KIB]));
    let batch_body = batch_body(&payload_kind);
    let batch_path = format!("/v1/stations/{BATCH_STATION}/messages/batch");
    let batch = Arc::new(request("POST", &batch_path, tok, "application/json", &batch_body));
    let fixed = |request: &Arc<Vec<u8>>, ok, items| Work::Fixed { request: request.clone(), ok, items, offsets: true };

    // 4 first, while nothing else has run: one connection, one request at a time.
    let latency = load(&rt, Target::of(&server), fixed(&single, 201, 1), 1, warmup, duration)?;
    progress("single_1conn", "depot", &latency);
    let single64 = load(&rt, Target::of(&server), fixed(&single, 201, 1), single_conns, warmup, duration)?;
    progress("single_64conns", "depot", &single64);
    let batched = load(&rt, Target::of(&server), fixed(&batch, 200, BATCH as u64), batch_conns, warmup, duration)?;
    progress("batch100", "depot", &batched);

    // 3: fill a station, let the fill reach the disk, then drain it with fetch + ack.
    let fill = if quick { 300_000 } else { 1_500_000 };
    let fill_path = format!("/v1/stations/{FETCH_STATION}/messages/batch");
    let fill_req = Arc::new(request("POST", &fill_path, tok, "application/json", &batch_body));
    let filled = load_until(&rt, Target::of(&server), &fill_req, 16, fill)?;
    eprintln!("filled {FETCH_STATION} with {filled} messages");
    let _ = Command::new("sync").status();
    rt.block_on(expect(
        &server,
        "PUT",
        &format!("/v1/stations/{FETCH_STATION}/consumer-groups/{GROUP}"),
        json!({"start": "earliest"}),
        &[200, 201],
    ))?;
    let group = format!("/v1/stations/{FETCH_STATION}/consumer-groups/{GROUP}");
    let work = Work::FetchAck {
        fetch: Arc::new(request(
            "POST",
            &format!("{group}/fetch"),
            tok,
            "application/json",
            br#"{"max_messages":100}"#,
        )),
        ack_path: Arc::new(format!("{group}/ack")),
        token: token.clone().map(Arc::new),
    };
    let fetched = load(&rt, Target::of(&server), work, consumers, Duration::from_millis(200), duration * 2)?;
    progress("fetch_ack100", "depot", &fetched);
    let elapsed = started.elapsed();
    stop(server, &tmp.path().join("depot.log"))?;
    eprintln!("depot phase took {:.0} s", elapsed.as_secs_f64());

    // The ceiling: a trivial actix-web handler, same workers, same client, same concurrency.
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("http-ceiling").arg(workers.to_string());
    let ceiling = start("ceiling", cmd, &tmp.path().join("ceiling.log"))?;
    let c_single = Arc::new(request("POST", "/", tok, "application/octet-stream", &[b'x'; KIB]));
    let c_batch = Arc::new(request("POST", "/", tok, "application/json", &batch_body));
    let c_fixed =
        |request: &Arc<Vec<u8>>, items| Work::Fixed { request: request.clone(), ok: 201, items, offsets: false };
    let c_latency = load(&rt, Target::of(&ceiling), c_fixed(&c_single, 1), 1, warmup, duration)?;
    progress("single_1conn", "ceiling", &c_latency);
    let c_single64 = load(&rt, Target::of(&ceiling), c_fixed(&c_single, 1), single_conns, warmup, duration)?;
    progress("single_64conns", "ceiling", &c_single64);
    let c_batched = load(&rt, Target::of(&ceiling), c_fixed(&c_batch, BATCH as u64), batch_conns, warmup, duration)?;
    progress("batch100", "ceiling", &c_batched);
    stop(ceiling, &tmp.path().join("ceiling.log"))?;

    let rows = vec![
        Row {
            id: "single_64conns",
            what: format!("single POST, 1 KiB, {single_conns} connections"),
            target: "≥ 50k msg/s",
            met: single64.msg_per_s() >= 50_000.0,
            depot: single64,
            ceiling: Some(c_single64),
            latency: false,
        },
        Row {
            id: "batch100",
            what: format!("batch POST, 100 × 1 KiB ({payload_kind}), {batch_conns} connections"),
            target: "≥ 350k msg/s",
            met: batched.msg_per_s() >= 350_000.0,
            depot: batched,
            ceiling: Some(c_batched),
            latency: false,
        },
        Row {
            id: "fetch_ack100",
            what: format!("fetch 100 + ack, {consumers} consumers, one group"),
            target: "≥ 300k msg/s",
            met: fetched.msg_per_s() >= 300_000.0,
            depot: fetched,
            ceiling: None,
            latency: false,
        },
        Row {
            id: "single_1conn",
            what: "single POST, 1 KiB, one connection, one at a time".to_owned(),
            target: "p50 ≤ 300 µs",
            met: latency.percentile(0.5) <= 300,
            depot: latency,
            ceiling: Some(c_latency),
            latency: true,
        },
    ];
    report(&rows);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The ceiling server

static OFFSET: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn trivial(body: actix_web::web::Bytes) -> actix_web::HttpResponse {
    let offset = OFFSET.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    actix_web::HttpResponse::Created().json(json!({"offset": offset, "duplicate": false, "bytes": body.len()}))
}

/// `depot-bench http-ceiling WORKERS`: serves `POST /` with [`trivial`] until SIGTERM.
pub fn ceiling(args: &[String]) -> anyhow::Result<()> {
    let workers: usize = args.first().context("http-ceiling WORKERS")?.parse()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let server = actix_web::HttpServer::new(|| {
            actix_web::App::new()
                .app_data(actix_web::web::PayloadConfig::new(16 << 20))
                .route("/", actix_web::web::post().to(trivial))
        })
        .workers(workers)
        .disable_signals()
        .listen(listener)?
        .run();
        println!("ceiling: listening on http://{addr} with {workers} workers");
        let handle = server.handle();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut server = std::pin::pin!(server);
        tokio::select! {
            r = &mut server => r,
            _ = term.recv() => {
                let (r, ()) = tokio::join!(&mut server, handle.stop(true));
                r
            }
        }
    })?;
    Ok(())
}
