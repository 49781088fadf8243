//! The `depot` binary: parses the command line and calls into the library.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use anyhow::{bail, Context};
use depot_broker::{Broker, BrokerOptions};

fn usage() -> &'static str {
    "usage: depot <command> [options]\n\n\
     dev [--listen 127.0.0.1:4444] [--data-dir ./depot-data]\n    \
         run one node with embedded defaults\n\
     openapi\n    \
         print the OpenAPI document\n\n\
     env: DEPOT_LOG (filter, default info), DEPOT_LOG_FORMAT (json, the default, or text)\n"
}

struct DevArgs {
    listen: SocketAddr,
    data_dir: PathBuf,
}

fn parse_dev(args: &[String]) -> anyhow::Result<Option<DevArgs>> {
    let mut dev = DevArgs { listen: SocketAddr::from(([127, 0, 0, 1], 4444)), data_dir: PathBuf::from("depot-data") };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--data-dir" => dev.data_dir = rest.next().context("--data-dir needs a value")?.into(),
            "--listen" => {
                let value = rest.next().context("--listen needs a value")?;
                dev.listen =
                    value.parse().with_context(|| format!("--listen {value}: not an address like 127.0.0.1:4444"))?;
            }
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown argument {other}\n{}", usage()),
        }
    }
    Ok(Some(dev))
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!("--listen {}: authentication is not built yet; depot dev only listens on loopback", args.listen);
    }
    let listener = TcpListener::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let broker = Broker::open(BrokerOptions::new(&args.data_dir))
        .await
        .with_context(|| format!("opening the broker in {}", args.data_dir.display()))?;
    say(&format!(
        "depot: listening on http://{addr} (data in {})\n\
         depot: try\n  \
         curl -X PUT http://{addr}/v1/stations/orders\n  \
         curl -X POST http://{addr}/v1/stations/orders/messages -H 'Content-Type: application/json' -d '{{\"id\": 1}}'\n  \
         curl -X PUT http://{addr}/v1/stations/orders/consumer-groups/billing\n  \
         curl -X POST http://{addr}/v1/stations/orders/consumer-groups/billing/fetch -d '{{\"wait_ms\": 1000}}'",
        args.data_dir.display()
    ));
    depot_gateway::run(listener, broker, shutdown_signal()).await?;
    say("depot: stopped cleanly");
    Ok(())
}

/// Prints a line for the operator. A closed stdout (a supervisor that stopped reading) must not
/// turn a clean run into a panic, so write errors are ignored.
fn say(text: &str) {
    emit(&format!("{text}\n"));
}

fn emit(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("depot: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    // JSON logs by default (each line carries the request span with its request_id);
    // DEPOT_LOG_FORMAT=text for humans.
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEPOT_LOG").unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match std::env::var("DEPOT_LOG_FORMAT").as_deref() {
        Ok("text") => logs.init(),
        Ok("json") | Err(_) => logs.json().with_current_span(true).with_span_list(false).init(),
        Ok(other) => {
            logs.json().init();
            tracing::warn!(format = other, "unknown DEPOT_LOG_FORMAT; use json or text; logging JSON");
        }
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("dev") => match parse_dev(&args[1..])? {
            Some(d) => dev(d).await,
            None => {
                emit(usage());
                Ok(())
            }
        },
        Some("openapi") => {
            emit(&depot_gateway::openapi_json());
            Ok(())
        }
        Some("-h" | "--help") | None => {
            emit(usage());
            Ok(())
        }
        Some(other) => bail!("unknown command {other}\n{}", usage()),
    }
}
