//! A real Postgres for Depot's tests and benchmarks.
//!
//! With `DEPOT_TEST_DATABASE_URL` set (a role allowed to `CREATE DATABASE`), [`database`] uses that
//! server. Otherwise the first call starts a throwaway one from the installed binaries: `initdb`
//! into a temp dir, `pg_ctl start` on a random free loopback port with its socket in that dir,
//! stopped and removed when the process exits. Either way every [`database`] call creates a fresh
//! database with a random name, so tests never see each other's rows (databases made on an external
//! server are left behind, named `depot_test_*`).
//!
//! Servers run without fsync by default ([`Durability::Off`]), which is what tests want; benchmarks
//! ask for [`Durability::Full`], Postgres's own production defaults.
//!
//! Postgres refuses to run as root: as root, the server runs as the `postgres` system user when it
//! exists, else as `depot-pg-test` (created with `useradd --system`), through `runuser`.
//! Missing binaries fail the test, naming the package to install; nothing is skipped.
//!
//! [`tls_database`] is the same on a second, TLS-only throwaway server ([`PgServer::try_start_tls_only`]):
//! its certificate, for `localhost` and `127.0.0.1`, is signed by a [`TestCa`] made up for the run,
//! and its `pg_hba.conf` refuses every TCP connection without TLS. It is always a local throwaway,
//! `DEPOT_TEST_DATABASE_URL` or not, since the test needs the certificate's CA.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

/// How long a server may take to accept connections after `pg_ctl start`.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// The server every test of this binary shares: an external URL or a local throwaway.
enum Shared {
    External(String),
    Local(PgServer),
}

static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();

fn shared() -> &'static Shared {
    let shared = SHARED.get_or_init(|| match std::env::var("DEPOT_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Ok(Shared::External(url)),
        _ => PgServer::try_start().map(Shared::Local),
    });
    match shared {
        Ok(shared) => shared,
        Err(e) => panic!("{e}"),
    }
}

/// The URL of a new, empty database on the shared server.
pub async fn database() -> String {
    match shared() {
        Shared::External(url) => create_database(url).await,
        Shared::Local(server) => server.database().await,
    }
}

/// Creates a database with a random name through `admin_url` and returns its URL.
pub async fn create_database(admin_url: &str) -> String {
    with_dbname(admin_url, &create_named_database(admin_url).await)
}

/// Creates a database with a random name through `admin_url` and returns the name.
async fn create_named_database(admin_url: &str) -> String {
    let (client, connection) = tokio_postgres::connect(admin_url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test Postgres server: {e} ({e:?})"));
    tokio::spawn(connection);
    let name = format!("depot_test_{:016x}", rand::random::<u64>());
    // A generated identifier: nothing to escape.
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE on the test server (the role needs CREATEDB): {e:?}"));
    name
}

static SHARED_TLS: OnceLock<Result<(PgServer, TestCa), String>> = OnceLock::new();

/// A new, empty database on the TLS-only server this test binary shares.
#[derive(Clone, Debug)]
pub struct TlsDatabase {
    pub port: u16,
    pub name: String,
    /// The PEM file of the CA that signed the server's certificate.
    pub ca_file: PathBuf,
}

impl TlsDatabase {
    /// `postgres://postgres@HOST:PORT/NAME` followed by `query` (`sslmode=...&...`), if any.
    pub fn url(&self, host: &str, query: &str) -> String {
        let query = if query.is_empty() { String::new() } else { format!("?{query}") };
        format!("postgres://postgres@{host}:{}/{}{query}", self.port, self.name)
    }
}

/// A new, empty database on a TLS-only server (started on first use, see the module's doc).
pub async fn tls_database() -> TlsDatabase {
    let shared = SHARED_TLS.get_or_init(|| {
        let ca = TestCa::new("depot test CA");
        let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
        let server = PgServer::try_start_tls_only(&cert, &key)?;
        let ca_file = server.dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).map_err(|e| format!("writing {}: {e}", ca_file.display()))?;
        Ok((server, ca))
    });
    let (server, _) = shared.as_ref().unwrap_or_else(|e| panic!("{e}"));
    // Through the Unix socket, where the server trusts without TLS.
    let name = create_named_database(&server.socket_url("postgres")).await;
    TlsDatabase { port: server.port, name, ca_file: server.dir.join("ca.pem") }
}

/// A certificate authority made up for a test run.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl TestCa {
    /// A new CA with its own key, called `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("generating a CA key: {e}"));
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("signing the test CA: {e}"));
        TestCa { issuer: rcgen::Issuer::new(params, key), pem: cert.pem() }
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `names` (DNS names or IP addresses) and its private key, PEM.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap_or_else(|e| panic!("{e}"));
        params.distinguished_name.push(rcgen::DnType::CommonName, "depot test server");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("generating a server key: {e}"));
        let cert = params.signed_by(&key, &self.issuer).unwrap_or_else(|e| panic!("signing a server certificate: {e}"));
        (cert.pem(), key.serialize_pem())
    }
}

/// `url` pointing at database `name` instead: a `postgres://` URL or a `key=value` string.
pub fn with_dbname(url: &str, name: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return format!("{url} dbname={name}");
    };
    let rest = &url[scheme_end + 3..];
    let query_start = rest.find('?').unwrap_or(rest.len());
    let path_start = rest[..query_start].find('/').unwrap_or(query_start);
    format!("{}{}/{}{}", &url[..scheme_end + 3], &rest[..path_start], name, &rest[query_start..])
}

/// What a [`PgServer`] trades for speed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `fsync=off`, `synchronous_commit=off`, `full_page_writes=off`: for tests. Data survives a
    /// crash of Postgres, not of the machine.
    #[default]
    Off,
    /// Postgres's defaults (`fsync=on`, `synchronous_commit=on`, `full_page_writes=on`): every
    /// commit is flushed to disk before it is acknowledged, as in production. For benchmarks.
    Full,
}

/// A throwaway Postgres cluster in a temp dir, on a random loopback port.
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Who the server runs as when we are root.
    user: Option<String>,
    durability: Durability,
    /// Whether the server only takes TLS over TCP (its certificate and key are in `dir`).
    tls_only: bool,
    /// Stops the server and removes `dir` when its stdin closes: on drop, or when this process
    /// ends in any way (the static shared server is never dropped).
    watchdog: Option<(Child, ChildStdin)>,
}

impl PgServer {
    /// Starts a new server without fsync; panics naming what is missing.
    pub fn start() -> PgServer {
        PgServer::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a new server without fsync; the error names what is missing.
    pub fn try_start() -> Result<PgServer, String> {
        PgServer::try_start_with(Durability::Off)
    }

    /// Starts a new server with the given durability; the error names what is missing.
    pub fn try_start_with(durability: Durability) -> Result<PgServer, String> {
        PgServer::try_start_inner(durability, None)
    }

    /// Starts a new server that refuses TCP connections without TLS (`hostnossl ... reject`) and
    /// shows the certificate `cert_pem`, whose key is `key_pem`. Its Unix socket still takes plain
    /// connections ([`PgServer::socket_url`]).
    pub fn try_start_tls_only(cert_pem: &str, key_pem: &str) -> Result<PgServer, String> {
        PgServer::try_start_inner(Durability::Off, Some((cert_pem, key_pem)))
    }

    fn try_start_inner(durability: Durability, tls: Option<(&str, &str)>) -> Result<PgServer, String> {
        let bin = find_binaries()?;
        let user = server_user()?;
        let dir = tempfile::Builder::new()
            .prefix("depot-pg-")
            .tempdir()
            .map_err(|e| format!("creating a temp dir for Postgres: {e}"))?
            .keep();
        if let Some(user) = &user {
            let (uid, gid) = (id(&["-u", user])?, id(&["-g", user])?);
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {} to {user}: {e}", dir.display()))?;
        }
        let mut server = PgServer { bin, dir, port: 0, user, durability, tls_only: tls.is_some(), watchdog: None };
        server.spawn_watchdog()?;
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--no-sync".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
            ],
        )?;
        if let Some((cert, key)) = tls {
            server.install_tls(cert, key)?;
        }
        // The port is free when we look; another process may take it before the server binds, so
        // try a few.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = depot_tests::ports::free_loopback_port();
            match server.start_again() {
                Ok(()) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Writes the certificate and key where the server reads them (the key owned by the server
    /// user, mode 0600, or Postgres refuses it) and a `pg_hba.conf` that takes TCP only over TLS.
    fn install_tls(&self, cert: &str, key: &str) -> Result<(), String> {
        const HBA: &str = "local all all trust\n\
                           hostnossl all all all reject\n\
                           hostssl all all 127.0.0.1/32 trust\n\
                           hostssl all all ::1/128 trust\n";
        let owner = match &self.user {
            Some(user) => Some((id(&["-u", user])?, id(&["-g", user])?)),
            None => None,
        };
        for (name, text, mode) in [("server.crt", cert, 0o644), ("server.key", key, 0o600)] {
            let path = self.dir.join(name);
            std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("chmod {}: {e}", path.display()))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(|e| format!("chown {}: {e}", path.display()))?;
            }
        }
        // Rewriting the file initdb made keeps its owner.
        let hba = self.data().join("pg_hba.conf");
        std::fs::write(&hba, HBA).map_err(|e| format!("writing {}: {e}", hba.display()))
    }

    /// A plain connection string through the server's Unix socket, to database `name`.
    pub fn socket_url(&self, name: &str) -> String {
        format!("host={} port={} user=postgres dbname={name}", self.dir.display(), self.port)
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The URL of a new, empty database on this server.
    pub async fn database(&self) -> String {
        create_database(&self.url("postgres")).await
    }

    /// Starts the (stopped) server on its port and waits until it accepts connections.
    pub fn start_again(&self) -> Result<(), String> {
        let durability = match self.durability {
            Durability::Off => "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            Durability::Full => "-c fsync=on -c synchronous_commit=on -c full_page_writes=on",
        };
        let tls = if self.tls_only {
            format!(
                "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                self.dir.join("server.crt").display(),
                self.dir.join("server.key").display()
            )
        } else {
            String::new()
        };
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 {durability} -c max_connections=300 {tls}",
            self.port,
            self.dir.display()
        );
        let (data, log) = (self.data(), self.dir.join("server.log"));
        let args: [&std::ffi::OsStr; 9] = [
            "-D".as_ref(),
            data.as_os_str(),
            "-l".as_ref(),
            log.as_os_str(),
            "-o".as_ref(),
            options.as_ref(),
            "-w".as_ref(),
            "-t".as_ref(),
            "30".as_ref(),
        ];
        let mut with_start = args.to_vec();
        with_start.push("start".as_ref());
        self.run("pg_ctl", &with_start).map_err(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            format!("{e}\nserver log:\n{log}")
        })?;
        self.wait_ready()
    }

    /// Polls until the server answers queries, up to [`READY_DEADLINE`].
    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_DEADLINE;
        let port = self.port.to_string();
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-t", "1"])
                .stdin(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("Postgres on port {port} not ready after {READY_DEADLINE:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (`pg_ctl stop -m fast`), keeping its data.
    pub fn stop(&self) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D".as_ref(), data.as_os_str(), "-m".as_ref(), "fast".as_ref(), "-w".as_ref(), "stop".as_ref()],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Runs one of the server binaries, as the server user when we are root.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let mut cmd = self.command(&self.bin.join(program));
        cmd.args(args).stdin(Stdio::null());
        let out = cmd.output().map_err(|e| format!("running {program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn command(&self, program: &Path) -> Command {
        match &self.user {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    fn spawn_watchdog(&mut self) -> Result<(), String> {
        const SCRIPT: &str = r#"read _ignored; "$0" stop -D "$1" -m immediate >/dev/null 2>&1; rm -rf "$2""#;
        let mut cmd = self.command(Path::new("sh"));
        cmd.args(["-c", SCRIPT])
            .arg(self.bin.join("pg_ctl"))
            .arg(self.data())
            .arg(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group: a Ctrl-C of the test run must not kill it before it cleans up.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().map_err(|e| format!("starting the Postgres watchdog: {e}"))?;
        let stdin = child.stdin.take().ok_or("the watchdog has no stdin")?;
        self.watchdog = Some((child, stdin));
        Ok(())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some((mut child, mut stdin)) = self.watchdog.take() {
            let _ = stdin.write_all(b"stop\n");
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// The directory holding `initdb`, `pg_ctl`, `postgres` and `pg_isready`.
fn find_binaries() -> Result<PathBuf, String> {
    const NEEDED: [&str; 4] = ["initdb", "pg_ctl", "postgres", "pg_isready"];
    let complete = |dir: &Path| NEEDED.iter().all(|b| dir.join(b).is_file());
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|dir| std::fs::canonicalize(dir.join("initdb")).ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_path_buf));
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    on_path.chain(versioned.into_iter().map(|(_, dir)| dir)).find(|dir| complete(dir)).ok_or_else(|| {
        "Postgres server binaries (initdb, pg_ctl, postgres, pg_isready) were not found on PATH or under \
         /usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: `apt-get install postgresql`, or \
         `postgresql-15`), or set DEPOT_TEST_DATABASE_URL to a server where the role may CREATE DATABASE."
            .to_owned()
    })
}

/// `None` when not root; else an unprivileged user to run the server as, created if needed.
fn server_user() -> Result<Option<String>, String> {
    if id(&["-u"])? != 0 {
        return Ok(None);
    }
    for user in ["postgres", "depot-pg-test"] {
        if id(&["-u", user]).is_ok() {
            return Ok(Some(user.to_owned()));
        }
    }
    let out = Command::new("useradd")
        .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "depot-pg-test"])
        .output()
        .map_err(|e| format!("running useradd: {e}"))?;
    // 9: the user exists (another test process made it first).
    if out.status.success() || out.status.code() == Some(9) {
        Ok(Some("depot-pg-test".to_owned()))
    } else {
        Err(format!("useradd depot-pg-test failed: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// `id ARGS`, parsed as a number.
fn id(args: &[&str]) -> Result<u32, String> {
    let out = Command::new("id").args(args).output().map_err(|e| format!("running id: {e}"))?;
    if !out.status.success() {
        return Err(format!("id {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|e| format!("id {args:?}: {e}"))
}
