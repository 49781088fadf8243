//! The `depot` binary: sets up logging, then hands the command line to [`depot_gateway::cli`].

/// Every request allocates a few buffers and frees them on another thread soon after; mimalloc
/// handles that pattern with less contention than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("depot: {e:#}");
            // The client commands' exit codes are documented (docs/cli.md); everything else is 1.
            let code = e.downcast_ref::<depot_gateway::client::Failure>().map_or(1, |f| f.exit as u8);
            std::process::ExitCode::from(code)
        }
    }
}

async fn run() -> anyhow::Result<()> {
    // JSON logs by default (each line carries the request span with its request_id); text for
    // `depot dev`, coloured only on a terminal; DEPOT_LOG_FORMAT=json|text chooses.
    // actix's h1 dispatcher logs a client's malformed request at ERROR: that output is dropped
    // and logged again at WARN (depot_gateway::http_limits).
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("DEPOT_LOG").unwrap_or_else(|_| "info,openraft=warn".into());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let format = std::env::var("DEPOT_LOG_FORMAT").or_else(|_| match args.first().map(String::as_str) {
        Some("dev") => Ok("text".to_owned()),
        _ => Err(std::env::VarError::NotPresent),
    });
    let logs = logs.with_ansi(format.as_deref() == Ok("text") && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format.as_deref() {
        Ok("text") => install(filter, logs),
        Ok("json") | Err(_) => install(filter, logs.json().with_current_span(true).with_span_list(false)),
        Ok(other) => {
            install(filter, logs.json());
            tracing::warn!(format = other, "unknown DEPOT_LOG_FORMAT; use json or text; logging JSON");
        }
    }
    depot_gateway::cli::main(&args).await
}

type Base = tracing_subscriber::layer::Layered<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The output layer sees every event but actix's connection errors, which `ClientErrorsAtWarn`
/// logs again at WARN. It sits above the output layer, so each event has left the output before
/// another one is logged: per-layer filters keep their state per thread, per event.
fn install(filter: tracing_subscriber::EnvFilter, output: impl tracing_subscriber::Layer<Base> + Send + Sync) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let output = output.with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
        !depot_gateway::middleware::http_limits::is_actix_connection_error(metadata)
    }));
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .with(depot_gateway::middleware::http_limits::ClientErrorsAtWarn)
        .init();
}
