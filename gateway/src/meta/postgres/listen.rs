//! LISTEN/NOTIFY: how one node hears that another deleted a user or an API key.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::rows::describe;
use super::PgTls;
use crate::meta::Invalidation;

/// The channel on which deletions of users and API keys are announced to every node.
pub const NOTIFY_CHANNEL: &str = "depot_auth";

/// Waits between attempts to listen again: from 250 ms, doubling up to 10 s, with jitter, so the
/// nodes that lost Postgres together do not all reconnect at the same instant. Each time LISTEN
/// takes effect the waits start over.
fn reconnect_backoff() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
}

/// Why an attempt to listen failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("connecting: {0}")]
    Connect(tokio_postgres::Error),
    #[error("LISTEN: {0}")]
    Listen(tokio_postgres::Error),
}

/// A connection on which LISTEN took effect: the payloads it hears, and the task that drives it.
struct Subscription {
    /// Dropping the client closes the connection.
    _client: tokio_postgres::Client,
    heard: mpsc::UnboundedReceiver<String>,
    driver: JoinHandle<()>,
}

async fn subscribe(config: &tokio_postgres::Config, tls: &PgTls) -> Result<Subscription, Failure> {
    let (client, mut connection) = config.connect(tls.connector.clone()).await.map_err(Failure::Connect)?;
    let (heard_tx, heard) = mpsc::unbounded_channel::<String>();
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if heard_tx.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    match client.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}")).await {
        Ok(()) => Ok(Subscription { _client: client, heard, driver }),
        Err(e) => {
            driver.abort();
            Err(Failure::Listen(e))
        }
    }
}

/// Listens on [`NOTIFY_CHANNEL`] on a connection of its own (a pooled one would be recycled) and
/// forwards what it hears until `tx`'s receiver is gone. Each time LISTEN takes effect (the first
/// time, and after every reconnection) it sends [`Invalidation::All`]: whatever was cached before
/// may have been deleted while nobody listened.
pub(super) async fn listen(mut config: tokio_postgres::Config, tls: PgTls, tx: mpsc::Sender<Invalidation>) {
    // A half-open connection (after a partition) would look alive for hours without keepalives;
    // with them it is noticed within about a minute, and the reconnect drops every cache.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(10))
        .keepalives_retries(3);
    while !tx.is_closed() {
        let subscribed = (|| subscribe(&config, &tls))
            .retry(reconnect_backoff())
            .when(|_| !tx.is_closed())
            .notify(|failure, after| match failure {
                Failure::Connect(e) => {
                    let error = tls.explain(describe(e));
                    tracing::debug!(%error, ?after, "metadata store: cannot connect to listen; retrying")
                }
                Failure::Listen(e) => tracing::warn!(error = %e, ?after, "metadata store: LISTEN failed; retrying"),
            })
            .await;
        let Ok(Subscription { _client, mut heard, driver }) = subscribed else { return };
        if tx.send(Invalidation::All).await.is_err() {
            driver.abort();
            return;
        }
        loop {
            let payload = tokio::select! {
                heard = heard.recv() => match heard {
                    Some(payload) => payload,
                    None => break,
                },
                () = tx.closed() => {
                    driver.abort();
                    return;
                }
            };
            let what = match payload.split_once(':') {
                Some(("user", name)) => Invalidation::User(name.to_owned()),
                Some(("key", id)) => Invalidation::ApiKey(id.to_owned()),
                _ => Invalidation::All,
            };
            if tx.send(what).await.is_err() {
                driver.abort();
                return;
            }
        }
        tracing::warn!("metadata store: lost the notification connection; reconnecting");
        driver.abort();
    }
}
