//! openraft's own storage conformance suite, run against our log store and state machine.

use depot_broker::log::{LogOptions, Verify};
use depot_broker::raft::log_store::LogStore;
use depot_broker::raft::state_machine::{SmOptions, StateMachine};
use depot_broker::raft::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| {
            openraft::StorageIOError::new(ErrorSubject::Store, ErrorVerb::Write, openraft::AnyError::new(&e))
        })?;
        let log = LogStore::open(
            &dir.path().join("raft"),
            LogOptions {
                segment_bytes: 1 << 20,
                verify: Verify::Full,
                preallocate: true,
                after_clean_shutdown: false,
                sync_on_open: true,
            },
        )?;
        let sm = StateMachine::open(SmOptions::new(dir.path().join("sm"), 1 << 20, Verify::Full, 4))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("openraft storage suite failed: {e}");
    }
}
