//! Feeds the broker's dead-letter outbox into the metadata store.
//!
//! The broker hands entries over until the sink says they are stored, then advances its cursor
//! through Raft; a crash in between hands them over again, which the store's upsert on
//! (station, group, offset) absorbs.

use std::sync::Arc;

use depot_broker::station::OutboxEntry;
use depot_broker::OutboxSink;

use super::{DeadLetterPointer, MetadataStore};

pub struct StoreSink {
    store: Arc<dyn MetadataStore>,
    failpoint: Option<Failpoint>,
}

/// Crash points for the crash tests, chosen with `DEPOT_FAILPOINT`: the process aborts at once,
/// as a SIGKILL would stop it, at a point a random kill rarely hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failpoint {
    /// The entries are committed in Raft; the store has not seen them.
    BeforeInsert,
    /// The store has them; the cursor has not advanced, so they will be handed over again.
    AfterInsert,
}

impl StoreSink {
    pub fn new(store: Arc<dyn MetadataStore>) -> StoreSink {
        let failpoint = match std::env::var("DEPOT_FAILPOINT").as_deref() {
            Ok("outbox-before-insert") => Some(Failpoint::BeforeInsert),
            Ok("outbox-after-insert") => Some(Failpoint::AfterInsert),
            _ => None,
        };
        StoreSink { store, failpoint }
    }
}

pub fn pointer(entry: &OutboxEntry) -> DeadLetterPointer {
    let r = &entry.record;
    DeadLetterPointer {
        id: r.id,
        station: r.station.clone(),
        group: r.group.clone(),
        offset: r.offset,
        reason: r.reason.as_str().to_owned(),
        attempts: r.attempts,
        last_error: r.last_error.clone(),
        dead_at: r.dead_at,
    }
}

impl OutboxSink for StoreSink {
    async fn deliver(&self, entries: &[OutboxEntry]) -> Result<(), String> {
        let pointers: Vec<DeadLetterPointer> = entries.iter().map(pointer).collect();
        if self.failpoint == Some(Failpoint::BeforeInsert) {
            tracing::error!("failpoint outbox-before-insert: aborting");
            std::process::abort();
        }
        self.store.upsert_dead_letters(&pointers).await.map_err(|e| e.to_string())?;
        if self.failpoint == Some(Failpoint::AfterInsert) {
            tracing::error!("failpoint outbox-after-insert: aborting");
            std::process::abort();
        }
        Ok(())
    }
}
