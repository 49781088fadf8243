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
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    // JSON logs by default (each line carries the request span with its request_id);
    // DEPOT_LOG_FORMAT=text for humans.
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("DEPOT_LOG").unwrap_or_else(|_| "info,openraft=warn".into());
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
    depot_gateway::cli::main(&args).await
}
