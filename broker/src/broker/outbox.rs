//! The dead-letter outbox pump: hands the records the state machine queued to a sink (the
//! metadata store), then advances the outbox cursor through Raft.

use std::future::Future;
use std::time::Duration;

use super::Broker;
use crate::station::{Command, OutboxEntry};

/// Receives dead-letter outbox entries; returning `Ok` means they are durably stored, after
/// which the outbox cursor advances (through Raft) past them. Storing must be idempotent on
/// (station, group, offset): after a crash an entry may be handed over again.
pub trait OutboxSink: Send + Sync + 'static {
    fn deliver(&self, entries: &[OutboxEntry]) -> impl Future<Output = Result<(), String>> + Send;
}

impl Broker {
    /// Hands each outbox entry to `sink`, then advances the outbox cursor through Raft.
    pub fn spawn_outbox<S: OutboxSink>(&self, sink: S) {
        let broker = self.clone();
        let task = tokio::spawn(async move {
            let mut changes = broker.replica.sm.subscribe();
            let mut shutdown = broker.replica.shutdown.subscribe();
            let mut backoff = Duration::from_millis(50);
            loop {
                if *shutdown.borrow() {
                    return;
                }
                let leads = broker.replica.leads();
                let entries = if leads { broker.read(|s| s.outbox(512)) } else { Vec::new() };
                if let Some(last) = entries.last().map(|e| e.seq) {
                    match sink.deliver(&entries).await {
                        Ok(()) => {
                            backoff = Duration::from_millis(50);
                            if let Err(e) = broker.submit(Command::OutboxAdvance { upto: last }).await {
                                tracing::warn!(error = %e, "outbox: cursor not advanced; entries will be handed over again");
                            }
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "outbox: sink failed; retrying");
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
                let wait = if entries.is_empty() { Duration::from_secs(1) } else { backoff };
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
        });
        self.replica.track(task);
    }
}
