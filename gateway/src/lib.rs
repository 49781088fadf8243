//! Depot's gateway. The HTTP API (issue 3) builds on [`depot_broker::Broker`]; for now the
//! binary runs the broker node alone.

use std::path::PathBuf;

use anyhow::Context;
use depot_broker::{Broker, BrokerOptions};

/// Runs one node with embedded defaults until SIGINT or SIGTERM, then shuts down cleanly.
pub async fn run_dev(data_dir: PathBuf) -> anyhow::Result<()> {
    let broker = Broker::open(BrokerOptions::new(&data_dir))
        .await
        .with_context(|| format!("opening the broker in {}", data_dir.display()))?;
    let stations = broker.stations().len();
    println!("depot: broker node {} running, data in {} ({stations} stations)", broker.node_id(), data_dir.display());
    println!("depot: the HTTP gateway is not built yet; press Ctrl-C to stop");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    broker.shutdown().await?;
    println!("depot: stopped cleanly");
    Ok(())
}
