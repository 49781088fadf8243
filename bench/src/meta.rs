//! `depot-bench meta [--quick]`: issue 4's metadata-store targets, against Postgres (production
//! clusters) and SQLite (the single-node default), through the `MetadataStore` trait itself:
//!
//! 1. dead-letter pointer ingest with `upsert_dead_letters`, in batches of 512 (what the broker's
//!    outbox hands over at most per call) and of 1, one call at a time;
//! 2. listing a page of 100 dead letters with `dead_letters` over a table of 1M rows (`--quick`:
//!    100k), by station, station + group, station + reason, and deep with the keyset `after`;
//! 3. `Auth::authenticate` of an API key with a warm credential cache, and of an HS256 access
//!    token for comparison.
//!
//! Postgres is a throwaway server started from the installed binaries (see `depot-pgtest`) with
//! Postgres's production durability (`fsync=on`, `synchronous_commit=on`), or the server at
//! `DEPOT_BENCH_DATABASE_URL` (a role allowed to `CREATE DATABASE`; the bench's database is
//! dropped at the end). SQLite is a file in a temp dir (WAL, `synchronous=FULL`, as `depot` opens
//! it). The 1M rows are loaded with one `INSERT ... SELECT` (Postgres: `generate_series`, SQLite: a
//! recursive CTE) into the migrated schema, then `ANALYZE`d.
//!
//! Prints a markdown table, then one JSON line per figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use depot_gateway::auth::{self, Auth, AuthConfig, Principal};
use depot_gateway::meta::{
    Action, ApiKey, DeadLetterPointer, DeadLetterQuery, MetadataStore, PoolOptions, PostgresStore, Role, Scope,
    SqliteStore,
};
use depot_pgtest::{Durability, PgServer};
use serde_json::{json, Value};
use tokio_postgres::NoTls;

/// The station every loaded row belongs to: the worst case for a listing by station.
const STATION: &str = "orders";
const GROUPS: u64 = 8;
const REASONS: [&str; 3] = ["max_deliveries", "explicit", "expired"];
/// `dead_at` of row 0; row `i` died at `BASE_MS + i`, with id `i + 1`.
const BASE_MS: i64 = 1_763_000_000_000;
const PAGE: u32 = 100;
/// The most the broker's outbox hands to `upsert_dead_letters` at once.
const OUTBOX_BATCH: usize = 512;

/// xorshift64*: enough randomness to pick pages, without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// One line of the table and its JSON.
struct Figure {
    what: String,
    result: String,
    target: &'static str,
    met: Option<bool>,
    json: Value,
}

/// The reason of row `i`: 70% max_deliveries, 20% explicit, 10% expired.
fn reason_sql(i: &str) -> String {
    format!(
        "CASE WHEN ({i} * 7) % 10 < 7 THEN 'max_deliveries' WHEN ({i} * 7) % 10 < 9 THEN 'explicit' ELSE 'expired' END"
    )
}

fn postgres_load_sql(rows: u64) -> String {
    format!(
        "INSERT INTO dead_letters (station, grp, \"offset\", id, reason, attempts, last_error, dead_at) \
         SELECT '{STATION}', 'g' || (i % {GROUPS}), i * 3, i + 1, {reason}, 5, \
                CASE WHEN i % 2 = 0 THEN 'handler timed out after 30 s' END, {BASE_MS} + i \
         FROM generate_series(0::int8, {last}::int8) AS i",
        reason = reason_sql("i"),
        last = rows - 1,
    )
}

fn sqlite_load_sql(rows: u64) -> String {
    format!(
        "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {last}) \
         INSERT INTO dead_letters (station, grp, \"offset\", id, reason, attempts, last_error, dead_at) \
         SELECT '{STATION}', 'g' || (i % {GROUPS}), i * 3, i + 1, {reason}, 5, \
                CASE WHEN i % 2 = 0 THEN 'handler timed out after 30 s' END, {BASE_MS} + i \
         FROM s",
        reason = reason_sql("i"),
        last = rows - 1,
    )
}

/// The listing shapes.
const SHAPES: [&str; 5] = [
    "station, first page",
    "station + group, first page",
    "station + reason, first page",
    "station, deep (keyset `after` anywhere)",
    "station + group, deep (keyset `after` anywhere)",
];

/// A query of shape `SHAPES[shape]`: random group, reason and depth where the shape has them.
fn query(shape: usize, rng: &mut Rng, rows: u64) -> DeadLetterQuery {
    let mut q = DeadLetterQuery { station: STATION.to_owned(), limit: PAGE, ..DeadLetterQuery::default() };
    if shape == 1 || shape == 4 {
        q.group = Some(format!("g{}", rng.below(GROUPS)));
    }
    if shape == 2 {
        q.reason = Some(REASONS[rng.below(REASONS.len() as u64) as usize].to_owned());
    }
    if shape >= 3 {
        let k = rng.below(rows);
        q.after = Some((BASE_MS + k as i64, k + 1));
    }
    q
}

async fn listing(
    backend: &str,
    store: &dyn MetadataStore,
    rows: u64,
    iterations: usize,
    figures: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (shape, name) in SHAPES.into_iter().enumerate() {
        for _ in 0..50 {
            store.dead_letters(&query(shape, &mut rng, rows)).await?;
        }
        let mut latencies = Vec::with_capacity(iterations);
        let mut short = 0;
        for _ in 0..iterations {
            let q = query(shape, &mut rng, rows);
            let t = Instant::now();
            let page = store.dead_letters(&q).await?;
            latencies.push(t.elapsed());
            // A deep page near the end may be short; a first page never is.
            if page.items.len() < PAGE as usize {
                short += 1;
            }
        }
        let mean = latencies.iter().sum::<Duration>() / iterations as u32;
        latencies.sort_unstable();
        let (p50, p99, max) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99), latencies[iterations - 1]);
        figures.push(Figure {
            what: format!("{backend}: list {PAGE} of {rows} rows, {name}"),
            result: format!("p99 {:.2} ms (p50 {:.2} ms, mean {:.2} ms)", ms(p99), ms(p50), ms(mean)),
            target: "p99 ≤ 10 ms",
            met: Some(p99 <= Duration::from_millis(10)),
            json: json!({"bench": "list", "backend": backend, "rows": rows, "shape": name, "limit": PAGE,
                "calls": iterations, "short_pages": short, "mean_ms": ms(mean), "p50_ms": ms(p50),
                "p99_ms": ms(p99), "max_ms": ms(max)}),
        });
    }
    Ok(())
}

async fn ingest(
    backend: &str,
    store: &dyn MetadataStore,
    batch: usize,
    duration: Duration,
    figures: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    let station = format!("ingest-{batch}");
    let mut offset = 0u64;
    let mut next_batch = || {
        (0..batch)
            .map(|i| {
                offset += 1;
                DeadLetterPointer {
                    id: offset,
                    station: station.clone(),
                    group: format!("g{}", offset % GROUPS),
                    offset,
                    reason: REASONS[i % 3].to_owned(),
                    attempts: 5,
                    last_error: Some("handler timed out after 30 s".to_owned()),
                    dead_at: BASE_MS + offset as i64,
                }
            })
            .collect::<Vec<_>>()
    };
    for _ in 0..3 {
        store.upsert_dead_letters(&next_batch()).await?;
    }
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let pointers = next_batch();
        let t = Instant::now();
        store.upsert_dead_letters(&pointers).await?;
        latencies.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    let pointers = (latencies.len() * batch) as u64;
    let per_s = pointers as f64 / elapsed.as_secs_f64();
    latencies.sort_unstable();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    figures.push(Figure {
        what: format!("{backend}: ingest, batches of {batch}, one call at a time"),
        result: format!("{per_s:.0} pointers/s (per call p50 {:.2} ms, p99 {:.2} ms)", ms(p50), ms(p99)),
        target: "≥ 10k pointers/s",
        met: Some(per_s >= 10_000.0),
        json: json!({"bench": "ingest", "backend": backend, "batch": batch, "calls": latencies.len(),
            "pointers": pointers, "seconds": elapsed.as_secs_f64(), "pointers_per_s": per_s.round(),
            "p50_ms": ms(p50), "p99_ms": ms(p99)}),
    });
    Ok(())
}

/// `calls` authentications of `token`, after one warm-up call (reported as the cold call).
async fn authenticate(
    auth: &Auth,
    what: &str,
    token: &str,
    calls: usize,
    target: &'static str,
    figures: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    let t = Instant::now();
    auth.authenticate(token).await.map_err(|e| anyhow!("{what}: {e}"))?;
    let cold = t.elapsed();
    let mut latencies = Vec::with_capacity(calls);
    let start = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        let principal = auth.authenticate(token).await;
        latencies.push(t.elapsed());
        principal.map_err(|e| anyhow!("{what}: {e}"))?;
    }
    let mean = start.elapsed() / calls as u32;
    latencies.sort_unstable();
    let (p50, p99, p999) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99), percentile(&latencies, 0.999));
    let max = latencies[calls - 1];
    let limit = Duration::from_micros(20);
    figures.push(Figure {
        what: format!("Auth::authenticate, {what}, warm cache"),
        result: format!(
            "mean {:.1} µs, p99 {:.1} µs (p50 {:.1} µs; first, cold call {:.2} ms)",
            us(mean),
            us(p99),
            us(p50),
            ms(cold)
        ),
        target,
        met: (!target.is_empty()).then_some(mean <= limit && p99 <= limit),
        json: json!({"bench": "auth", "credential": what, "calls": calls, "mean_us": us(mean),
            "p50_us": us(p50), "p99_us": us(p99), "p999_us": us(p999), "max_us": us(max),
            "cold_first_call_ms": ms(cold)}),
    });
    Ok(())
}

async fn auth_bench(store: Arc<dyn MetadataStore>, calls: usize, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    let auth = Auth::new(AuthConfig::with_secret(auth::generate_secret()), store.clone()).map_err(|e| anyhow!(e))?;
    let user = auth.create_user("bench", &auth::generate_password(), Role::Member).await.map_err(|e| anyhow!("{e}"))?;
    let (secret, id) = auth::new_api_key();
    let key = ApiKey {
        id,
        name: "bench".to_owned(),
        owner: "bench".to_owned(),
        owner_id: user.id.clone(),
        digest: auth::digest(&secret),
        scopes: vec![Scope { stations: "orders-*".to_owned(), actions: vec![Action::Produce, Action::Consume] }],
        created_at: auth::now_millis(),
        expires_at: None,
    };
    store.create_api_key(&key).await?;
    authenticate(&auth, "API key", &secret, calls, "≤ 20 µs per request", figures).await?;
    let token = auth.access_token(&Principal::user(&user)).map_err(|e| anyhow!("{e}"))?;
    authenticate(&auth, "HS256 access token (comparison)", &token, calls / 2, "", figures).await
}

struct Settings {
    rows: u64,
    list_calls: usize,
    ingest_for: Duration,
    auth_calls: usize,
}

async fn postgres(settings: &Settings, figures: &mut Vec<Figure>, info: &mut Vec<Value>) -> anyhow::Result<()> {
    let external = std::env::var("DEPOT_BENCH_DATABASE_URL").ok().filter(|u| !u.trim().is_empty());
    let (server, admin_url) = match external {
        Some(url) => (None, url),
        None => {
            let server = PgServer::try_start_with(Durability::Full).map_err(|e| anyhow!(e))?;
            let url = server.url("postgres");
            (Some(server), url)
        }
    };
    let (admin, connection) = tokio_postgres::connect(&admin_url, NoTls).await.context("connecting to Postgres")?;
    tokio::spawn(connection);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
    let name = format!("depot_bench_{}_{nanos}", std::process::id());
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.context("CREATE DATABASE")?;
    let url = depot_pgtest::with_dbname(&admin_url, &name);
    let outcome = postgres_in(&url, server.is_some(), settings, figures, info).await;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.context("DROP DATABASE")?;
    drop(server);
    outcome
}

async fn postgres_in(
    url: &str,
    local: bool,
    settings: &Settings,
    figures: &mut Vec<Figure>,
    info: &mut Vec<Value>,
) -> anyhow::Result<()> {
    let store = PostgresStore::connect(url, PoolOptions::default())?;
    store.migrate().await?;
    let (raw, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    let show = |row: tokio_postgres::Row| row.get::<_, String>(0);
    let version = show(raw.query_one("SELECT version()", &[]).await?);
    let fsync = show(raw.query_one("SHOW fsync", &[]).await?);
    let commit = show(raw.query_one("SHOW synchronous_commit", &[]).await?);
    let buffers = show(raw.query_one("SHOW shared_buffers", &[]).await?);
    eprintln!("postgres: {version}; fsync={fsync}, synchronous_commit={commit}, shared_buffers={buffers}");

    let t = Instant::now();
    raw.batch_execute(&postgres_load_sql(settings.rows)).await?;
    let loaded = t.elapsed();
    let t = Instant::now();
    raw.batch_execute("ANALYZE dead_letters").await?;
    let analyzed = t.elapsed();
    let size = show(raw.query_one("SELECT pg_size_pretty(pg_total_relation_size('dead_letters'))", &[]).await?);
    eprintln!("postgres: loaded {} rows in {loaded:.1?} (ANALYZE {analyzed:.1?}), {size} with indexes", settings.rows);
    info.push(json!({"backend": "postgres", "server": if local { "throwaway (depot-pgtest)" } else { "DEPOT_BENCH_DATABASE_URL" },
        "version": version, "fsync": fsync, "synchronous_commit": commit, "shared_buffers": buffers,
        "rows": settings.rows, "load_s": loaded.as_secs_f64(), "analyze_s": analyzed.as_secs_f64(), "table_size": size}));

    listing("postgres", &store, settings.rows, settings.list_calls, figures).await?;
    for batch in [OUTBOX_BATCH, 1] {
        ingest("postgres", &store, batch, settings.ingest_for, figures).await?;
    }
    auth_bench(Arc::new(store), settings.auth_calls, figures).await
}

async fn sqlite(settings: &Settings, figures: &mut Vec<Figure>, info: &mut Vec<Value>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("meta.db");
    let store = SqliteStore::open(&path)?;
    let (rows, load) = (settings.rows, sqlite_load_sql(settings.rows));
    let load_path = path.clone();
    let (loaded, analyzed) = tokio::task::spawn_blocking(move || -> anyhow::Result<(Duration, Duration)> {
        let conn = rusqlite::Connection::open(&load_path)?;
        let t = Instant::now();
        conn.execute_batch(&format!("BEGIN; {load}; COMMIT;"))?;
        let loaded = t.elapsed();
        let t = Instant::now();
        conn.execute_batch("ANALYZE")?;
        Ok((loaded, t.elapsed()))
    })
    .await??;
    let size =
        std::fs::metadata(&path)?.len() + std::fs::metadata(dir.path().join("meta.db-wal")).map_or(0, |m| m.len());
    eprintln!("sqlite: loaded {rows} rows in {loaded:.1?} (ANALYZE {analyzed:.1?}), {} MiB", size >> 20);
    info.push(json!({"backend": "sqlite", "journal_mode": "wal", "synchronous": "full", "rows": rows,
        "load_s": loaded.as_secs_f64(), "analyze_s": analyzed.as_secs_f64(), "file_mib": size >> 20}));

    listing("sqlite", &store, rows, settings.list_calls, figures).await?;
    for batch in [OUTBOX_BATCH, 1] {
        ingest("sqlite", &store, batch, settings.ingest_for, figures).await?;
    }
    Ok(())
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let settings = if quick {
        Settings { rows: 100_000, list_calls: 1_000, ingest_for: Duration::from_secs(3), auth_calls: 100_000 }
    } else {
        Settings { rows: 1_000_000, list_calls: 5_000, ingest_for: Duration::from_secs(10), auth_calls: 1_000_000 }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let started = Instant::now();
    let (mut figures, mut info) = (Vec::new(), Vec::new());
    rt.block_on(async {
        postgres(&settings, &mut figures, &mut info).await?;
        sqlite(&settings, &mut figures, &mut info).await
    })?;
    let elapsed = started.elapsed();

    println!("| measurement | target | result | met? |");
    println!("|---|---|---|---|");
    for f in &figures {
        let met = match f.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let target = if f.target.is_empty() { "—" } else { f.target };
        println!("| {} | {target} | {} | {met} |", f.what, f.result);
    }
    println!();
    for i in &info {
        println!("{i}");
    }
    for f in &figures {
        println!("{}", f.json);
    }
    eprintln!("meta bench took {:.0} s", elapsed.as_secs_f64());
    Ok(())
}
