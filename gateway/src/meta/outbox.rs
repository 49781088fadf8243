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
}

impl StoreSink {
    pub fn new(store: Arc<dyn MetadataStore>) -> StoreSink {
        StoreSink { store }
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
        self.store.upsert_dead_letters(&pointers).await.map_err(|e| e.to_string())
    }
}
