//! `depot-bench meta [--quick]`: issue 4's metadata-store target, against Postgres (production
//! clusters) and SQLite (the single-node default), through the `MetadataStore` trait itself:
//! `Auth::authenticate` of an API key with a warm credential cache, and of an HS256 access token
//! for comparison.
//!
//! Postgres is a throwaway server started from the installed binaries (see `depot-pgtest`) with
//! Postgres's production durability (`fsync=on`, `synchronous_commit=on`), or the server at
//! `DEPOT_BENCH_DATABASE_URL` (a role allowed to `CREATE DATABASE`; the bench's database is
//! dropped at the end). SQLite is a file in a temp dir (WAL, `synchronous=FULL`, as `depot` opens
//! it). (The dead-letter pointer ingest and listing figures of earlier runs went with the pointer
//! table: dead letters are kept and listed in the broker only.)
//!
//! Prints a markdown table, then one JSON line per figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use depot_gateway::auth::{self, Auth, AuthConfig, Principal};
use depot_gateway::meta::{Action, ApiKey, MetadataStore, PoolOptions, PostgresStore, Role, Scope, SqliteStore};
use depot_pgtest::{Durability, PgServer};
use serde_json::{json, Value};
use tokio_postgres::NoTls;

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

    info.push(json!({"backend": "postgres", "server": if local { "throwaway (depot-pgtest)" } else { "DEPOT_BENCH_DATABASE_URL" },
        "version": version, "fsync": fsync, "synchronous_commit": commit, "shared_buffers": buffers}));

    auth_bench(Arc::new(store), settings.auth_calls, figures).await
}

async fn sqlite(settings: &Settings, figures: &mut Vec<Figure>, info: &mut Vec<Value>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("meta.db"))?;
    info.push(json!({"backend": "sqlite", "journal_mode": "wal", "synchronous": "full"}));
    auth_bench(Arc::new(store), settings.auth_calls, figures).await
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let settings = if quick { Settings { auth_calls: 100_000 } } else { Settings { auth_calls: 1_000_000 } };
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
