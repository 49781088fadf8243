//! LISTEN/NOTIFY: how one node hears that another deleted a user or an API key.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::NoTls;

use crate::meta::Invalidation;

/// The channel on which deletions of users and API keys are announced to every node.
pub const NOTIFY_CHANNEL: &str = "depot_auth";

/// Listens on [`NOTIFY_CHANNEL`] on a connection of its own (a pooled one would be recycled) and
/// forwards what it hears until `tx`'s receiver is gone. Each time LISTEN takes effect (the first
/// time, and after every reconnection) it sends [`Invalidation::All`]: whatever was cached before
/// may have been deleted while nobody listened.
pub(super) async fn listen(mut config: tokio_postgres::Config, tx: mpsc::Sender<Invalidation>) {
    // A half-open connection (after a partition) would look alive for hours without keepalives;
    // with them it is noticed within about a minute, and the reconnect drops every cache.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(10))
        .keepalives_retries(3);
    while !tx.is_closed() {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (heard_tx, mut heard) = mpsc::unbounded_channel::<String>();
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
                    Ok(()) => {
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
                    }
                    Err(e) => tracing::warn!(error = %e, "metadata store: LISTEN failed; retrying"),
                }
                driver.abort();
            }
            Err(e) => tracing::debug!(error = %e, "metadata store: cannot connect to listen; retrying"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
