//! The `depot` binary: sets up logging (and traces), then hands the command line to [`depot_gateway::cli`].

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
    // OpenTelemetry traces from the servers, when the OTEL_* variables ask for them
    // (docs/observability.md); never from the client commands, which a shell with those
    // variables set for other programs also runs.
    let server = matches!(args.first().map(String::as_str), Some("serve" | "dev"));
    let (traces, traces_error) = match server.then(depot_gateway::telemetry::Traces::from_env) {
        None => (None, None),
        Some(Ok(traces)) => (traces, None),
        Some(Err(e)) => (None, Some(e)),
    };
    let tracer = traces.as_ref().map(depot_gateway::telemetry::Traces::tracer);
    match format.as_deref() {
        Ok("text") => install(filter, logs, tracer),
        Ok("json") | Err(_) => install(filter, logs.json().with_current_span(true).with_span_list(false), tracer),
        Ok(other) => {
            install(filter, logs.json(), tracer);
            tracing::warn!(format = other, "unknown DEPOT_LOG_FORMAT; use json or text; logging JSON");
        }
    }
    if let Some(e) = traces_error {
        tracing::warn!(error = %e, "OpenTelemetry traces are off");
    }
    if traces.is_some() {
        for warning in depot_gateway::telemetry::warnings(|name| std::env::var(name).ok()) {
            tracing::warn!("{warning}");
        }
    }
    let result = depot_gateway::cli::main(&args).await;
    if let Some(traces) = traces {
        // The exporter's client blocks: flush off the runtime's worker threads.
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
    }
    result
}

type Base = tracing_subscriber::layer::Layered<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The output layer sees every event but actix's connection errors, which `ClientErrorsAtWarn`
/// logs again at WARN. It sits above the output layer, so each event has left the output before
/// another one is logged: per-layer filters keep their state per thread, per event.
/// `tracer`, when set, also sends every span (the request span with its request_id among them)
/// to OpenTelemetry.
fn install(
    filter: tracing_subscriber::EnvFilter,
    output: impl tracing_subscriber::Layer<Base> + Send + Sync,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let output = output.with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
        !depot_gateway::middleware::http_limits::is_actix_connection_error(metadata)
    }));
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .with(tracer.map(|t| tracing_opentelemetry::layer().with_tracer(t)))
        .with(depot_gateway::middleware::http_limits::ClientErrorsAtWarn)
        .init();
}
