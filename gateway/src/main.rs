//! The `depot` binary: parses the command line and calls into the library.

use std::path::PathBuf;

use anyhow::{bail, Context};

fn usage() -> &'static str {
    "usage: depot dev [--data-dir DIR]\n\n\
     dev     run one node with embedded defaults (data in ./depot-data unless --data-dir)\n"
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("DEPOT_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut data_dir = PathBuf::from("depot-data");
    let mut rest = args.iter();
    let command = rest.next().map(String::as_str);
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--data-dir" => data_dir = rest.next().context("--data-dir needs a value")?.into(),
            "-h" | "--help" => {
                print!("{}", usage());
                return Ok(());
            }
            other => bail!("unknown argument {other}\n{}", usage()),
        }
    }
    match command {
        Some("dev") => depot_gateway::run_dev(data_dir).await,
        Some("-h" | "--help") | None => {
            print!("{}", usage());
            Ok(())
        }
        Some(other) => bail!("unknown command {other}\n{}", usage()),
    }
}
