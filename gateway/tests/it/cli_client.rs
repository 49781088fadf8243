//! The client commands end to end: the `depot` binary as a subprocess against a real `depot dev`
//! node, with its own config dir. Login with a password on stdin, stations, produce in batches,
//! consume and ack, seek, dead letters and redrive, scoped API keys, `--json`, exit codes,
//! refresh-token rotation across commands, logout, completions; progress bars under a
//! pseudo-terminal (util-linux `script`) and none in pipes.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::e2e::*;

/// What one client command did.
#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn ok(self) -> Ran {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// A user of the client: a home of their own (so a config dir of their own) and a server.
struct User {
    home: tempfile::TempDir,
    url: String,
}

impl User {
    fn new(server: &Server) -> User {
        User { home: tempfile::tempdir().unwrap(), url: format!("http://{}", server.addr) }
    }

    fn config_path(&self) -> PathBuf {
        self.home.path().join(".config/depot/config.toml")
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Ran {
        self.run_with(args, stdin, &[])
    }

    /// `depot ARGS` in this user's home, with none of the caller's DEPOT_* settings.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(depot());
        command
            .args(args)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .env_remove("DEPOT_URL")
            .env_remove("DEPOT_TOKEN")
            .env_remove("DEPOT_CONTEXT")
            .env_remove("DEPOT_CONFIG")
            .env("DEPOT_LOG", "warn");
        command
    }

    /// Runs `depot ARGS` with `stdin`, waiting up to a minute for it to end.
    fn run_with(&self, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Ran {
        let mut child = self
            .command(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let stdin = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
        let pipe = |mut p: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = p.read_to_string(&mut text);
                text
            })
        };
        let stdout = pipe(Box::new(child.stdout.take().unwrap()));
        let stderr = pipe(Box::new(child.stderr.take().unwrap()));
        let status =
            eventually(Duration::from_secs(60), &format!("depot {args:?} to end"), || child.try_wait().unwrap());
        let _ = writer.join();
        Ran { code: status.code().unwrap_or(-1), stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
    }

    /// Runs `depot ARGS` on a pseudo-terminal of 120 columns (through util-linux `script`, with
    /// this user's environment), `redirect` appended to its shell command line (e.g. `2>FILE`).
    /// Returns all the terminal showed, escape sequences and carriage returns included.
    fn run_on_a_terminal(&self, args: &[&str], redirect: &str) -> Ran {
        let command = self.command(args);
        let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
        let mut line = format!("stty cols 120 rows 40; exec {}", quote(command.get_program()));
        for arg in command.get_args() {
            line.push(' ');
            line.push_str(&quote(arg));
        }
        line.push(' ');
        line.push_str(redirect);
        let mut script = Command::new("script");
        script.args(["--quiet", "--return", "--command", &line, "/dev/null"]);
        for (name, value) in command.get_envs() {
            match value {
                Some(value) => script.env(name, value),
                None => script.env_remove(name),
            };
        }
        let child = script.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
        let child = child.unwrap_or_else(|e| panic!("cannot run script (util-linux): {e}"));
        let out = wait_for_output(child, args);
        Ran { code: out.status.code().unwrap_or(-1), stdout: out.stdout, stderr: out.stderr }
    }

    fn config(&self) -> toml::Table {
        toml::from_str(&std::fs::read_to_string(self.config_path()).unwrap()).unwrap()
    }

    /// A field of a stored context, as a string ("" when absent).
    fn stored(&self, context: &str, field: &str) -> String {
        let config = self.config();
        match config.get("contexts").and_then(|c| c.get(context)).and_then(|c| c.get(field)) {
            Some(toml::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        }
    }
}

/// What a finished child wrote, waiting up to a minute for it to end.
struct Output {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

fn wait_for_output(mut child: std::process::Child, args: &[&str]) -> Output {
    let pipe = |mut p: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = p.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = pipe(Box::new(child.stdout.take().unwrap()));
    let stderr = pipe(Box::new(child.stderr.take().unwrap()));
    let status = eventually(Duration::from_secs(60), &format!("depot {args:?} to end"), || child.try_wait().unwrap());
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// The frames a terminal was shown: the text between carriage returns and newlines, with the
/// escape sequences (cursor moves, clearing) taken out.
fn frames(screen: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut chars = screen.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, then a final byte in @..~.
            if chars.next_if_eq(&'[').is_some() {
                while chars.next().is_some_and(|c| !('@'..='~').contains(&c)) {}
            }
            continue;
        }
        plain.push(c);
    }
    plain.split(['\r', '\n']).map(|f| f.trim().to_owned()).filter(|f| !f.is_empty()).collect()
}

/// Whether a frame shows a rate (`1234/s`, `1.20 MiB/s`) and an ETA (`ETA 3s`, `ETA 0s`).
fn shows_rate_and_eta(frame: &str) -> bool {
    let words: Vec<&str> = frame.split_whitespace().collect();
    let rate = words.iter().enumerate().any(|(i, w)| {
        let number = |s: &str| s.starts_with(|c: char| c.is_ascii_digit());
        (w.ends_with("/s") && number(w)) || (w.ends_with("B/s") && i > 0 && number(words[i - 1]))
    });
    let eta = words.windows(2).any(|w| w[0] == "ETA" && w[1].starts_with(|c: char| c.is_ascii_digit()));
    rate && eta
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn cli_client_logs_in_produces_consumes_and_manages_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let user = User::new(&server);
    let context = format!("127.0.0.1-{}", server.addr.port());

    // Not logged in yet: exit 4 and a hint.
    let ran = user.run(&["station", "ls"], b"");
    assert!(ran.code == 4 && ran.stderr.contains("depot login"), "{ran:?}");

    // Login with the password on stdin; the file is private.
    let ran = user.run(&["login", &user.url, "--username", "admin"], format!("{ADMIN_PASSWORD}\n").as_bytes()).ok();
    assert!(ran.stderr.contains(&context), "{ran:?}");
    assert_eq!(mode(&user.config_path()), 0o600);
    assert_eq!(mode(user.config_path().parent().unwrap()), 0o700);
    assert!(!user.stored(&context, "refresh_token").is_empty(), "{:?}", user.config());
    let wrong = user.run(&["login", &user.url, "--username", "admin", "--context", "bad"], b"wrong-password\n");
    assert_eq!(wrong.code, 4, "{wrong:?}");

    // Stations.
    user.run(&["station", "create", "orders"], b"").ok();
    let ls = user.run(&["station", "ls"], b"").ok();
    assert!(ls.stdout.starts_with("NAME") && ls.stdout.lines().nth(1).unwrap().starts_with("orders "), "{ls:?}");
    let listed = user.run(&["station", "ls", "--json"], b"").ok().json();
    assert_eq!(listed["stations"][0]["name"], "orders", "{listed}");
    let got = user.run(&["station", "--json", "get", "orders"], b"").ok().json();
    assert_eq!(got["name"], "orders", "{got}");

    // A missing station: exit 3 and the server's own words.
    let missing = user.run(&["station", "get", "nope"], b"");
    let detail = server.json("GET", "/v1/stations/nope", None).body["detail"].as_str().unwrap().to_owned();
    assert_eq!(missing.code, 3, "{missing:?}");
    assert!(missing.stderr.contains(&detail) && missing.stderr.contains("station_not_found"), "{missing:?}");

    // Bad command lines: exit 2.
    for args in [
        &["station", "frobnicate"][..],
        &["produce"],
        &["consume", "orders", "billing", "--max", "0"],
        &["group", "rm", "orders", ".."],
    ] {
        let ran = user.run(args, b"");
        assert_eq!(ran.code, 2, "{args:?}: {ran:?}");
    }

    // Produce 25 lines in batches of 10, then consume exactly those and ack them.
    user.run(&["group", "create", "orders", "billing"], b"").ok();
    let lines: Vec<String> =
        (0..25).map(|i| if i % 2 == 0 { format!("{{\"n\":{i}}}") } else { format!("line {i}") }).collect();
    let input = lines.join("\n") + "\n";
    let produce = user.run(&["produce", "orders", "--batch", "10", "--json"], input.as_bytes()).ok();
    // No progress bar in a pipe: no escape sequences, no carriage returns.
    assert!(!produce.stderr.contains(['\u{1b}', '\r']), "{produce:?}");
    let produced = produce.json();
    assert_eq!((produced["produced"].as_u64(), produced["last_offset"].as_u64()), (Some(25), Some(24)), "{produced}");
    let consumed = user.run(&["consume", "orders", "billing", "--max", "25"], b"").ok();
    assert_eq!(consumed.stdout.lines().collect::<Vec<_>>(), lines, "{consumed:?}");
    let again = user.run(&["consume", "orders", "billing", "--max", "5"], b"").ok();
    assert_eq!(again.stdout, "", "acked messages came again: {again:?}");
    let group = server.json("GET", "/v1/stations/orders/consumer-groups/billing", None).body;
    assert_eq!((group["lag"].as_u64(), group["pending"].as_u64()), (Some(0), Some(0)), "{group}");

    // --no-ack leaves them pending; --file reads a file.
    let file = user.home.path().join("more.txt");
    std::fs::write(&file, "a\nb\nc\n").unwrap();
    user.run(&["produce", "orders", "--file", file.to_str().unwrap(), "--batch", "2"], b"").ok();
    let peeked = user.run(&["consume", "orders", "billing", "--max", "3", "--no-ack", "--json"], b"").ok();
    let payloads: Vec<Value> =
        peeked.stdout.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["payload"].clone()).collect();
    assert_eq!(payloads, [json!("a"), json!("b"), json!("c")], "{peeked:?}");
    let group = user.run(&["group", "get", "orders", "billing", "--json"], b"").ok().json();
    assert_eq!(group["pending"].as_u64(), Some(3), "{group}");

    // Seek back to offset 20: the group delivers from there again.
    let sought = user.run(&["group", "seek", "orders", "billing", "--offset", "20", "--json"], b"").ok().json();
    assert_eq!(sought["delivered_offset"].as_u64(), Some(20), "{sought}");
    let replay = user.run(&["consume", "orders", "billing", "--max", "1", "--json"], b"").ok();
    let first: Value = serde_json::from_str(replay.stdout.lines().next().unwrap_or("null")).unwrap();
    assert_eq!(first["offset"].as_u64(), Some(20), "{replay:?}");
    let seek_usage = user.run(&["group", "seek", "orders", "billing"], b"");
    assert_eq!(seek_usage.code, 2, "{seek_usage:?}");

    // A dead letter, listed and redriven to its group.
    user.run(&["station", "create", "dl"], b"").ok();
    user.run(&["group", "create", "dl", "g"], b"").ok();
    user.run(&["produce", "dl"], b"doomed\n").ok();
    let fetched =
        server.json("POST", "/v1/stations/dl/consumer-groups/g/fetch", Some(&json!({"max_messages": 1}))).body;
    let receipt = fetched["messages"][0]["receipt"].clone();
    let dead =
        server.json("POST", "/v1/stations/dl/consumer-groups/g/dead-letter", Some(&json!({"receipts": [receipt]})));
    assert_eq!(dead.status, 200, "{:?}", dead.body);
    let table = user.run(&["dls", "ls", "dl"], b"").ok();
    assert!(table.stdout.contains("explicit"), "{table:?}");
    let listed = user.run(&["dls", "ls", "dl", "--json"], b"").ok().json();
    let id = listed["dead_letters"][0]["id"].as_u64().unwrap().to_string();
    let redriven = user.run(&["dls", "redrive", "dl", "--id", &id, "--json"], b"").ok().json();
    assert_eq!(redriven, json!({"redriven": 1}));
    let back = user.run(&["consume", "dl", "g", "--max", "1"], b"").ok();
    assert_eq!(back.stdout, "doomed\n", "{back:?}");
    assert_eq!(user.run(&["dls", "ls", "dl", "--json"], b"").ok().json()["dead_letters"], json!([]));

    // A scoped API key, through DEPOT_TOKEN and through a login with the key.
    let key =
        user.run(&["key", "create", "orders-only", "--scope", "orders:produce,consume", "--json"], b"").ok().json();
    let secret = key["key"].as_str().unwrap().to_owned();
    let keys = user.run(&["key", "ls"], b"").ok();
    assert!(keys.stdout.contains("orders-only") && !keys.stdout.contains(&secret), "{keys:?}");
    let env = [("DEPOT_URL", user.url.as_str()), ("DEPOT_TOKEN", secret.as_str())];
    user.run_with(&["consume", "orders", "billing", "--max", "1"], b"", &env).ok();
    let refused = user.run_with(&["station", "get", "dl"], b"", &env);
    assert_eq!(refused.code, 4, "{refused:?}");
    user.run(&["login", &user.url, "--api-key", "-", "--context", "scoped"], format!("{secret}\n").as_bytes()).ok();
    let refused = user.run(&["station", "get", "dl", "--context", "scoped"], b"");
    assert_eq!(refused.code, 4, "{refused:?}");
    let contexts = user.run(&["context", "ls", "--json"], b"").ok().json();
    assert_eq!(contexts["contexts"].as_array().map(Vec::len), Some(2), "{contexts}");
    user.run(&["context", "use", &context], b"").ok();

    // Logging out revokes the session on the server.
    let scoped_refresh = user.stored("scoped", "refresh_token");
    user.run(&["logout", "--context", "scoped"], b"").ok();
    let spent = server.json_as(None, "POST", "/v1/auth/refresh", Some(&json!({"refresh_token": scoped_refresh})));
    assert_eq!(spent.status, 401, "{:?}", spent.body);
    assert!(user.stored("scoped", "url").is_empty());

    // Refresh tokens rotate across commands: a forced refresh, then an expired access token.
    let r1 = user.stored(&context, "refresh_token");
    let token = user.run(&["token", "--refresh"], b"").ok().stdout.trim().to_owned();
    let r2 = user.stored(&context, "refresh_token");
    assert!(r2 != r1 && !r2.is_empty() && token.starts_with("ey"), "{r1} {r2} {token}");
    let mut config = user.config();
    let stored = config.get_mut("contexts").and_then(|c| c.get_mut(&context)).and_then(toml::Value::as_table_mut);
    stored.unwrap().insert("access_expires_at".to_owned(), toml::Value::Integer(1));
    std::fs::write(user.config_path(), toml::to_string(&config).unwrap()).unwrap();
    user.run(&["station", "ls"], b"").ok();
    let r3 = user.stored(&context, "refresh_token");
    assert!(r3 != r2 && !r3.is_empty());
    assert_eq!(mode(&user.config_path()), 0o600);
    // Someone replays the first, spent token: the server revokes the whole session, and the
    // client says so instead of failing obscurely.
    let replay = server.json_as(None, "POST", "/v1/auth/refresh", Some(&json!({"refresh_token": r1})));
    assert_eq!(replay.status, 401);
    let revoked = user.run(&["token", "--refresh"], b"");
    assert!(revoked.code == 4 && revoked.stderr.contains("depot login"), "{revoked:?}");

    // Completions.
    let bash = user.run(&["completions", "bash"], b"").ok();
    assert!(bash.stdout.contains("depot") && bash.stdout.len() > 1000, "{}", bash.stdout.len());
}

#[test]
fn cli_client_admin_commands_streams_and_concurrent_refreshes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let user = User::new(&server);
    let context = format!("127.0.0.1-{}", server.addr.port());
    user.run(&["login", &user.url, "-u", "admin"], format!("{ADMIN_PASSWORD}\n").as_bytes()).ok();

    // A stream larger than a batch goes in several requests, all of it stored in order.
    user.run(&["station", "create", "bulk"], b"").ok();
    let input: String = (0..2500).map(|i| format!("{i}\n")).collect();
    let produced = user.run(&["produce", "bulk", "--batch", "1000", "--json"], input.as_bytes()).ok().json();
    assert_eq!((produced["produced"].as_u64(), produced["last_offset"].as_u64()), (Some(2500), Some(2499)));
    let station = user.run(&["station", "get", "bulk", "--json"], b"").ok().json();
    assert_eq!(station["stats"]["messages"].as_u64(), Some(2500), "{station}");

    // --follow long-polls for messages produced after it started.
    user.run(&["group", "create", "bulk", "tail", "--start", "latest"], b"").ok();
    let tail = std::thread::scope(|s| {
        let follower = s.spawn(|| user.run(&["consume", "bulk", "tail", "--follow", "--max", "2"], b""));
        user.run(&["produce", "bulk"], b"late-1\n").ok();
        user.run(&["produce", "bulk"], b"late-2\n").ok();
        follower.join().unwrap()
    });
    assert_eq!(tail.ok().stdout, "late-1\nlate-2\n");

    // A consumer whose stdout is gone acks nothing: the messages stay pending for a redelivery.
    user.run(&["group", "create", "bulk", "lost"], b"").ok();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = user.command(&["consume", "bulk", "lost", "--max", "3"]).stdout(writer).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && stderr.contains("stdout was closed"), "{out:?}");
    let lost = user.run(&["group", "get", "bulk", "lost", "--json"], b"").ok().json();
    assert_eq!((lost["acked_floor"].as_u64(), lost["pending"].as_u64()), (Some(0), Some(3)), "{lost}");

    // Users.
    user.run(&["user", "create", "carol", "--role", "member"], b"carol-password\n").ok();
    let users = user.run(&["user", "ls", "--json"], b"").ok().json();
    let names: Vec<&str> = users["users"].as_array().unwrap().iter().filter_map(|u| u["username"].as_str()).collect();
    assert!(names.contains(&"carol"), "{users}");
    user.run(&["user", "rm", "carol"], b"").ok();
    assert_eq!(user.run(&["user", "rm", "carol"], b"").code, 3);

    // Cluster, hooks and sources.
    let cluster = user.run(&["cluster", "status", "--json"], b"").ok().json();
    assert_eq!(cluster["leader_id"], cluster["node_id"], "{cluster}");
    let hook = user.run(&["hook", "create", "bulk", "http://127.0.0.1:9/hook", "--json"], b"").ok().json();
    let id = hook["id"].as_str().unwrap().to_owned();
    assert!(hook["secret"].is_string(), "{hook}");
    let hooks = user.run(&["hook", "ls", "--json"], b"").ok().json();
    assert_eq!(hooks["hooks"][0]["id"], hook["id"], "{hooks}");
    let got = user.run(&["hook", "get", &id, "--json"], b"").ok().json();
    assert!(got["target_url"] == "http://127.0.0.1:9/hook" && got.get("secret").is_none(), "{got}");
    user.run(&["hook", "rm", &id], b"").ok();
    assert_eq!(user.run(&["hook", "get", &id], b"").code, 3);
    let push =
        user.run(&["push", "create", "bulk", "out", "http://127.0.0.1:9/out", "--start", "latest", "--json"], b"");
    assert!(push.ok().json()["push"]["secret"].is_string());
    user.run(&["group", "create", "bulk", "pull"], b"").ok();
    let listed = user.run(&["push", "ls", "bulk", "--json"], b"").ok().json();
    let names: Vec<&str> =
        listed["consumer_groups"].as_array().unwrap().iter().filter_map(|g| g["name"].as_str()).collect();
    assert_eq!(names, ["out"], "{listed}");
    let paused = user.run(&["push", "pause", "bulk", "out", "--json"], b"").ok().json();
    assert_eq!(paused["push"]["state"], "paused", "{paused}");
    let got = user.run(&["push", "get", "bulk", "out", "--json"], b"").ok().json();
    assert!(got["push"]["state"] == "paused" && got["push"].get("secret").is_none(), "{got}");
    user.run(&["push", "rm", "bulk", "out"], b"").ok();
    assert_eq!(user.run(&["push", "get", "bulk", "out"], b"").code, 3);
    let source = user
        .run(&["source", "create", "gh", "--station", "bulk", "--scheme", "github", "--secret", "s3cret"], b"")
        .ok();
    assert!(source.stderr.contains(&format!("{}/v1/ingest/gh/", user.url)), "{source:?}");
    let sources = user.run(&["source", "ls"], b"").ok();
    assert!(sources.stdout.lines().nth(1).is_some_and(|l| l.starts_with("gh ") && l.contains("github")), "{sources:?}");
    user.run(&["source", "get", "gh"], b"").ok();
    user.run(&["source", "rm", "gh"], b"").ok();
    assert_eq!(user.run(&["source", "get", "gh"], b"").code, 3);

    // Four commands at once after the access token expired: one refreshes, the others wait for
    // the lock and use what it stored. No refresh token is spent twice, so the session lives.
    let mut config = user.config();
    let stored = config.get_mut("contexts").and_then(|c| c.get_mut(&context)).and_then(toml::Value::as_table_mut);
    stored.unwrap().insert("access_expires_at".to_owned(), toml::Value::Integer(1));
    std::fs::write(user.config_path(), toml::to_string(&config).unwrap()).unwrap();
    let codes: Vec<i32> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..4).map(|_| s.spawn(|| user.run(&["station", "ls"], b"").code)).collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(codes, [0, 0, 0, 0]);
    user.run(&["token", "--refresh"], b"").ok();
    user.run(&["station", "ls"], b"").ok();

    // Nothing listens: exit 6.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("http://{free}");
    let down = user.run_with(&["station", "ls"], b"", &[("DEPOT_URL", url.as_str()), ("DEPOT_TOKEN", "x")]);
    assert_eq!(down.code, 6, "{down:?}");
}

/// Issue 20: `produce --file` and `consume --max` draw a bar with a rate and an ETA on a
/// terminal; with stderr a pipe or a file, nothing of it is written.
#[test]
fn progress_bars_show_a_rate_and_an_eta_on_a_terminal_and_nothing_in_pipes() {
    // Thousands of messages in batches of 250: the bars get several updates, and the node few
    // enough fsyncs to stay quick on a busy disk.
    const MESSAGES: usize = 3000;
    let max = MESSAGES.to_string();
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), &[]);
    let user = User::new(&server);
    user.run(&["login", &user.url, "-u", "admin"], format!("{ADMIN_PASSWORD}\n").as_bytes()).ok();
    user.run(&["station", "create", "bars"], b"").ok();
    user.run(&["group", "create", "bars", "tty"], b"").ok();
    user.run(&["group", "create", "bars", "piped"], b"").ok();
    let lines = dir.path().join("lines.txt");
    let input: String = (0..MESSAGES).map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(40))).collect();
    std::fs::write(&lines, input).unwrap();
    let file = lines.to_str().unwrap();

    let produced = user.run_on_a_terminal(&["produce", "bars", "--file", file, "--batch", "250"], "");
    assert_eq!(produced.code, 0, "{produced:?}");
    let shown = frames(&produced.stdout);
    assert!(
        shown.iter().any(|f| f.contains(" read ") && shows_rate_and_eta(f)),
        "no frame of the byte bar with a rate and an ETA: {shown:#?}"
    );
    let consumed = user.run_on_a_terminal(&["consume", "bars", "tty", "--max", &max, "--batch", "250"], ">/dev/null");
    assert_eq!(consumed.code, 0, "{consumed:?}");
    let shown = frames(&consumed.stdout);
    assert!(
        shown.iter().any(|f| f.contains(&format!("/{MESSAGES} messages")) && shows_rate_and_eta(f)),
        "no frame of the message bar with a rate and an ETA: {shown:#?}"
    );

    // stderr a file, stdout still the terminal: the bar goes nowhere.
    let errors = dir.path().join("stderr.txt");
    let redirect = format!("2>'{}'", errors.display());
    let again = user.run_on_a_terminal(&["produce", "bars", "--file", file, "--batch", "250"], &redirect);
    assert_eq!(again.code, 0, "{again:?}");
    let written = std::fs::read_to_string(&errors).unwrap();
    assert!(!written.contains("ETA") && !written.contains('\r'), "{written:?}");
    assert!(!frames(&again.stdout).iter().any(|f| f.contains("ETA")), "{again:?}");

    // Pipes only: the same commands print their results and no bar.
    let piped = user.run(&["produce", "bars", "--file", file, "--batch", "250"], b"").ok();
    let consumed = user.run(&["consume", "bars", "piped", "--max", &max, "--batch", "250"], b"").ok();
    assert_eq!(consumed.stdout.lines().count(), MESSAGES);
    for ran in [&piped, &consumed] {
        let bar = ran.stderr.contains("ETA") || ran.stderr.contains('\r') || ran.stderr.contains('\u{1b}');
        assert!(!bar, "{ran:?}");
        assert!(!ran.stdout.contains("ETA"), "{ran:?}");
    }
}
