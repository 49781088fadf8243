//! The commands of the `depot` binary: `dev`, `serve`, `migrate`, `admin inspect`, `openapi`, and
//! `--version`, and the client commands of [`crate::client`] (`login`, `station`, `produce`,
//! ...). The grammar is clap's; the node commands take their flags from the settings table
//! (`crate::config`), so one table drives the file, the environment, the flags and `--help`.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use depot_broker::{Broker, BrokerOptions};

use crate::auth::{self, Auth, AuthError, Principal};
use crate::config::{self, Config, Mode, Sources};
use crate::meta::postgres::PostgresStore;
use crate::meta::{MetaError, MetadataStore, Role, SqliteStore};
use crate::routes::auth::MAX_PASSWORD;
use crate::routes::users::MIN_PASSWORD;
use crate::state::AppState;

/// The version and the commit it was built from, e.g. `0.1.0 (3f2a9c1)`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("DEPOT_GIT_COMMIT"), ")");

const ENV_HELP: &str = "Environment: DEPOT_LOG (log filter, default info,openraft=warn), DEPOT_LOG_FORMAT (json, the \
default of serve, or text, the default of dev). `depot serve --help` lists every setting with its DEPOT_* variable and default.
The client commands use the context `depot login` stored; DEPOT_URL and DEPOT_TOKEN (an access token or API key) override it.
Client exit codes: 0 ok, 1 other error, 2 usage, 3 not found, 4 not logged in or not allowed, 5 conflict, 6 server unavailable.";

/// The `depot` command line.
#[derive(Debug, Parser)]
#[command(name = "depot", version = VERSION, about = "Depot, an HTTP-first message broker", after_help = ENV_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One node with embedded defaults on loopback; prints an admin token and a curl line to try
    Dev,
    /// A production node
    Serve,
    /// Apply the metadata store's migrations and exit
    Migrate,
    /// Offline tools over data dirs
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Print the OpenAPI document
    Openapi,
    /// Exit 0 if a node's /livez answers 200 within 3 s, else 1 (a container health check)
    Probe {
        /// What to ask; default: /livez on DEPOT_LISTEN's port (4444) on loopback
        #[arg(long)]
        url: Option<String>,
    },
    #[command(flatten)]
    Client(crate::client::ClientCommand),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Read data dirs without changing them (a running node's too): cluster id, node id, last
    /// log term and index, clean or dirty; names the latest store
    Inspect {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        /// Data dirs to read
        #[arg(value_name = "DATA_DIR", required = true)]
        dirs: Vec<String>,
    },
}

/// The command line's grammar: [`Cli`], with the settings table's flags on the node commands.
fn grammar() -> clap::Command {
    Cli::command()
        .mut_subcommand("dev", |c| config::settings_command(c, Mode::Dev))
        .mut_subcommand("serve", |c| config::settings_command(c, Mode::Serve))
        .mut_subcommand("migrate", |c| config::settings_command(c, Mode::Serve))
}

/// Runs the command named by `args` (without the program name).
pub async fn main(args: &[String]) -> anyhow::Result<()> {
    let matches = match grammar().no_binary_name(true).bin_name("depot").try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            emit(&e.to_string());
            return Ok(());
        }
        Err(e) => {
            let message = e.to_string().trim_end().trim_start_matches("error: ").to_owned();
            // The client commands' usage errors exit 2 (docs/cli.md); the node commands' stay 1.
            let command = args.iter().find(|a| !a.starts_with('-'));
            if command.is_some_and(|a| crate::client::is_client_command(a)) {
                return Err(crate::client::Failure::usage(message).into());
            }
            bail!("{message}")
        }
    };
    let cli = Cli::from_arg_matches(&matches)?;
    let settings = |mode: Mode| -> anyhow::Result<Box<Config>> {
        let sub = matches.subcommand().map(|(_, m)| m).context("a node command without its arguments")?;
        load_config(mode, sub)
    };
    match cli.command {
        Some(Command::Dev) => run_node(Mode::Dev, &*settings(Mode::Dev)?).await,
        Some(Command::Serve) => run_node(Mode::Serve, &*settings(Mode::Serve)?).await,
        Some(Command::Migrate) => migrate(&*settings(Mode::Serve)?).await,
        Some(Command::Admin(AdminCommand::Inspect { json, dirs })) => {
            emit(&crate::admin::inspect_dirs(&dirs, json)?);
            Ok(())
        }
        Some(Command::Openapi) => {
            emit(&crate::openapi::openapi_json());
            Ok(())
        }
        Some(Command::Probe { url }) => {
            let url = url.unwrap_or_else(|| default_probe_url(std::env::var("DEPOT_LISTEN").ok().as_deref()));
            probe(&url, std::time::Duration::from_secs(3))
        }
        Some(Command::Client(command)) => Ok(crate::client::run(command, grammar().bin_name("depot")).await?),
        None => {
            emit(&grammar().bin_name("depot").render_help().to_string());
            Ok(())
        }
    }
}

/// The settings from the file, env and flags.
fn load_config(mode: Mode, matches: &clap::ArgMatches) -> anyhow::Result<Box<Config>> {
    let env = |name: &str| std::env::var(name).ok();
    let read = |path: &str| std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"));
    let sources = Sources { args: &[], env: &env, read_file: &read };
    let config = Config::from_matches(mode, matches, &sources).map_err(anyhow::Error::msg)?;
    if let Some(path) = &config.cluster_secret_file {
        warn_if_others_may_read(path);
    }
    Ok(Box::new(config))
}

/// A secret file that others than its owner may read or write is used, with a warning.
fn warn_if_others_may_read(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else { return };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:03o}"),
            "the cluster secret file is open to group or others: chmod 600 it"
        );
    }
}

/// `depot migrate`: brings the configured store's schema up to date. Concurrent runs are safe:
/// Postgres migrations take an advisory lock, so one applies and the others wait.
async fn migrate(config: &Config) -> anyhow::Result<()> {
    if config.uses_postgres() {
        let url = config.metadata_url.as_deref().unwrap_or_default();
        let store = PostgresStore::connect_with_ca_file(url, config.pool_options(), config.metadata_ca_file.as_deref())
            .context("connecting to Postgres")?;
        let applied = store.migrate().await.context("migrating")?;
        let version = store.schema_version().await?;
        say(&format!("depot: Postgres schema at version {version} (applied now: {applied:?})"));
    } else {
        depot_broker::dirs::ensure_durable(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        SqliteStore::open(&config.sqlite_path())
            .with_context(|| format!("opening the metadata store {}", config.sqlite_path().display()))?;
        say(&format!("depot: SQLite metadata store {} is up to date", config.sqlite_path().display()));
    }
    Ok(())
}

/// The metadata store the settings name: Postgres (migrated on start) or the SQLite file.
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn MetadataStore>> {
    if config.uses_postgres() {
        let url = config.metadata_url.as_deref().unwrap_or_default();
        let store = PostgresStore::connect_with_ca_file(url, config.pool_options(), config.metadata_ca_file.as_deref())
            .context("connecting to Postgres")?;
        store.migrate().await.context("migrating the Postgres metadata store")?;
        return Ok(Arc::new(store));
    }
    let path = config.sqlite_path();
    Ok(Arc::new(SqliteStore::open(&path).with_context(|| format!("opening the metadata store {}", path.display()))?))
}

/// The HS256 secret: configured, or generated once and kept beside the data so a restart keeps
/// every token valid.
fn jwt_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &config.jwt_secret {
        return Ok(secret.as_bytes().to_vec());
    }
    if let (true, Some(cluster_secret)) = (config.clustered(), &config.cluster_secret) {
        // Every node must accept every node's tokens: derived from the secret they share.
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"depot-jwt-hs256-v1\0");
        h.update(cluster_secret.as_bytes());
        return Ok(h.finalize().to_vec());
    }
    let path = config.data_dir.join("jwt-secret");
    match std::fs::read(&path) {
        Ok(secret) if secret.len() >= 32 => return Ok(secret),
        Ok(_) => bail!("{} holds fewer than 32 bytes; remove it to generate a new secret", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let secret = auth::generate_secret();
    write_private(&path, &secret)?;
    Ok(secret)
}

/// Writes a file only the owner can read, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // A fresh name with create_new: never a leftover file with looser permissions, never a
    // symlink someone planted.
    let tmp = path.with_extension(format!("tmp-{:016x}", rand::random::<u64>()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    // The rename is durable only once the directory is.
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

/// What the first start of an empty store did about the admin user.
enum AdminAccount {
    Existing,
    Created { generated: Option<String> },
    Missing,
}

async fn ensure_admin(mode: Mode, auth: &Auth) -> anyhow::Result<AdminAccount> {
    if auth.store().user_count().await? > 0 {
        return Ok(AdminAccount::Existing);
    }
    let (password, generated) = match std::env::var("DEPOT_ADMIN_PASSWORD") {
        Ok(p) if p.chars().count() >= MIN_PASSWORD && p.len() <= MAX_PASSWORD => (p, None),
        Ok(_) => bail!("DEPOT_ADMIN_PASSWORD must be {MIN_PASSWORD} characters to {MAX_PASSWORD} bytes"),
        Err(_) if mode == Mode::Dev => {
            let p = auth::generate_password();
            (p.clone(), Some(p))
        }
        Err(_) => return Ok(AdminAccount::Missing),
    };
    match auth.create_user("admin", &password, Role::Admin).await {
        Ok(_) => Ok(AdminAccount::Created { generated }),
        // Another node of the cluster, starting at the same time, created it first.
        Err(AuthError::Meta(MetaError::Conflict(_))) => Ok(AdminAccount::Existing),
        Err(e) => Err(anyhow::anyhow!("creating admin: {e}")),
    }
}

async fn run_node(mode: Mode, config: &Config) -> anyhow::Result<()> {
    depot_broker::open_files::raise_open_file_limit();
    depot_broker::dirs::ensure_durable(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let listener = TcpListener::bind(config.listen).with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let store = open_store(config).await?;
    let auth = Arc::new(Auth::new(config.auth(jwt_secret(config)?), store).map_err(anyhow::Error::msg)?);
    let admin = ensure_admin(mode, &auth).await?;
    let mut opts = BrokerOptions::new(&config.data_dir);
    opts.node_id = config.node_id;
    opts.cluster_id = config.cluster_id.clone();
    opts.min_free_disk = config.disk_free_min;
    opts.max_open_files = config.max_open_files;
    opts.snapshot_every = config.snapshot_every;
    opts.segment_bytes = config.segment_bytes;
    if let Some(tier) = config.tier_options() {
        // Builds the client only: a bucket that does not answer yet shows in /readyz, it does
        // not stop the node.
        tracing::info!(bucket = tier.bucket, endpoint = ?tier.endpoint, "tiering sealed segments to the bucket");
        opts.tier = Some(depot_broker::tier::Bucket::new(tier).await);
    }
    if mode == Mode::Serve && config.serves_cluster_port() {
        let port = TcpListener::bind(config.cluster_listen)
            .with_context(|| format!("binding the cluster port {}", config.cluster_listen))?;
        opts.cluster = config.broker_cluster(addr, port);
        if let Some(cluster) = opts.cluster.as_mut() {
            cluster.tls = config.cluster_tls().map_err(anyhow::Error::msg).context("TLS on the cluster port")?;
        }
    }
    // Until the broker is open, probes are answered (a member may wait minutes for its peers).
    let starting = crate::starting::serve(&listener, opts.cluster.as_ref().map(|c| c.startup.clone()))
        .context("answering probes while starting")?;
    // The broker and every task it spawns run on their own thread (see `core_thread`).
    let core = crate::core_thread::CoreThread::start()?;
    let opened = core.run(Broker::open(opts)).await?;
    starting.stop().await;
    let broker = opened.with_context(|| format!("opening the broker in {}", config.data_dir.display()))?;
    let state = AppState::with_config(broker, auth.clone(), config.gateway());
    let shutdown = shutdown_signal();
    match mode {
        Mode::Dev => {
            let admin_user = auth.store().user("admin").await?;
            print_dev_banner(&auth, addr, config, &admin, admin_user.as_ref())?
        }
        Mode::Serve => {
            if matches!(admin, AdminAccount::Missing) {
                tracing::warn!("the metadata store has no users: set DEPOT_ADMIN_PASSWORD to create the user admin");
            }
            say(&format!("depot: listening on http://{addr} (data in {})", config.data_dir.display()));
        }
    }
    crate::run(listener, state, shutdown).await?;
    drop(core);
    say("depot: stopped cleanly");
    Ok(())
}

fn print_dev_banner(
    auth: &Auth,
    addr: std::net::SocketAddr,
    config: &Config,
    admin: &AdminAccount,
    admin_user: Option<&crate::meta::User>,
) -> anyhow::Result<()> {
    let Some(admin_user) = admin_user else {
        say(&format!(
            "depot: listening on http://{addr} (data in {})\ndepot: there is no user admin: POST /v1/auth/token as another user",
            config.data_dir.display()
        ));
        return Ok(());
    };
    let token = auth.access_token(&Principal::user(admin_user)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let minutes = config.access_token_ttl / 60;
    let mut text = format!("depot: listening on http://{addr} (data in {})\n", config.data_dir.display());
    match admin {
        AdminAccount::Created { generated: Some(password) } => {
            text.push_str(&format!(
                "depot: created user admin with password {password} (kept in the metadata store)\n"
            ));
        }
        AdminAccount::Created { generated: None } => {
            text.push_str("depot: created user admin (password from DEPOT_ADMIN_PASSWORD)\n")
        }
        AdminAccount::Existing | AdminAccount::Missing => {}
    }
    text.push_str(&format!(
        "depot: access token for admin, valid {minutes} min (POST /v1/auth/token for more):\n\
         export DEPOT_TOKEN={token}\n\
         depot: try\n  \
         curl -X PUT http://{addr}/v1/stations/orders -H \"Authorization: Bearer $DEPOT_TOKEN\"\n  \
         curl -X POST http://{addr}/v1/stations/orders/messages -H \"Authorization: Bearer $DEPOT_TOKEN\" -H 'Content-Type: application/json' -d '{{\"id\": 1}}'\n  \
         curl -X PUT http://{addr}/v1/stations/orders/consumer-groups/billing -H \"Authorization: Bearer $DEPOT_TOKEN\"\n  \
         curl -X POST http://{addr}/v1/stations/orders/consumer-groups/billing/fetch -H \"Authorization: Bearer $DEPOT_TOKEN\" -H 'Content-Type: application/json' -d '{{\"wait_ms\": 1000}}'"
    ));
    if config.push_allow_private_networks {
        text.push_str(
            "\ndepot: push delivery may reach private networks and localhost here (push_allow_private_networks; \
             depot serve refuses them unless configured)",
        );
    }
    say(&text);
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when the
/// future is first polled: a SIGTERM right after the banner must drain, not kill.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    let interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        let wait = |signal: std::io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
            match signal {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, signal = name, "cannot listen for this signal");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = wait(term, "SIGTERM") => {}
            () = wait(interrupt, "SIGINT") => {}
        }
    }
}

/// `/livez` on loopback at the port `listen` (a `DEPOT_LISTEN` value) names, else 4444.
fn default_probe_url(listen: Option<&str>) -> String {
    let port = listen.and_then(|l| l.parse::<std::net::SocketAddr>().ok()).map_or(4444, |a| a.port());
    format!("http://127.0.0.1:{port}/livez")
}

/// `depot probe`: one GET over plain HTTP/1.1 (no client library, so the health check of a
/// minimal container image needs nothing but this binary); `Ok` on a 200.
fn probe(url: &str, within: std::time::Duration) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").with_context(|| format!("{url}: only http:// URLs can be probed"))?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .with_context(|| format!("{url}: cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{url}: {authority} has no address"))?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, within).with_context(|| format!("{url}: connecting"))?;
    stream.set_read_timeout(Some(within))?;
    stream.set_write_timeout(Some(within))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).with_context(|| format!("{url}: no answer"))?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        bail!("{url}: answered {}", status_line.lines().next().unwrap_or_default());
    }
    Ok(())
}

/// Prints a line for the operator. A closed stdout (a supervisor that stopped reading) must not
/// turn a clean run into a panic, so write errors are ignored.
pub fn say(text: &str) {
    emit(&format!("{text}\n"));
}

pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_is_consistent() {
        grammar().debug_assert();
    }

    #[test]
    fn the_probe_asks_loopback_at_the_listen_port() {
        assert_eq!(default_probe_url(None), "http://127.0.0.1:4444/livez");
        assert_eq!(default_probe_url(Some("0.0.0.0:8080")), "http://127.0.0.1:8080/livez");
        assert_eq!(default_probe_url(Some("not an address")), "http://127.0.0.1:4444/livez");
        let refused = probe("https://127.0.0.1:1/livez", std::time::Duration::from_secs(1));
        assert!(refused.is_err_and(|e| e.to_string().contains("only http://")));
    }

    #[test]
    fn settings_reach_the_node_commands() {
        let matches = grammar()
            .no_binary_name(true)
            .try_get_matches_from(["serve", "--listen=127.0.0.1:0", "--rate-limit", "off"])
            .map_err(|e| e.to_string());
        let matches = matches.as_ref().map(|m| m.subcommand().map(|(name, _)| name));
        assert_eq!(matches, Ok(Some("serve")));
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")) && VERSION.ends_with(')'), "{VERSION}");
    }
}
