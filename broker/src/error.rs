use std::time::Duration;

use crate::station::CommandError;

fn tier_lag(bytes: u64) -> String {
    match bytes {
        0 => String::new(),
        n => format!(" ({n} bytes of it wait to move to the tiering bucket, which is behind)"),
    }
}

/// The broker's errors, free of transport concerns; the gateway maps each to a status and code.
#[derive(Clone, Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum BrokerError {
    /// The command was applied and refused (unknown station, invalid config, ...).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// No leader, or no quorum: nothing was acknowledged. Retry after the hint.
    #[error("unavailable: {reason}")]
    Unavailable { reason: String, retry_after: Duration },
    /// The message is in the tiering bucket, which could not be read (or is not configured on
    /// this node): nothing changed. Retry after the hint.
    #[error("tiered data unavailable: {reason}")]
    TierUnavailable { reason: String, retry_after: Duration },
    /// The broker is shutting down and takes no new commands.
    #[error("shutting down")]
    ShuttingDown,
    /// Storage failed (I/O error, corruption). The node stops serving; details are in the log.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The data dir's file system has less free space than the watermark: new data is refused
    /// (nothing was written) so that acks, deletes and snapshots still find room.
    /// `tier_lag_bytes`: local data old enough to tier that is not in the bucket yet, which
    /// tiering would free once the bucket takes it.
    #[error("storage full: {free_bytes} bytes free, below the watermark of {min_free_bytes} bytes{}", tier_lag(*tier_lag_bytes))]
    StorageFull { free_bytes: u64, min_free_bytes: u64, tier_lag_bytes: u64 },
    /// The data dir belongs to another cluster or node than this one was started as; nothing in
    /// it was changed. Only `Broker::open` returns this.
    #[error("{0}")]
    DataDir(String),
    /// A membership change that cannot be made (the last voter, no cluster port, ...).
    #[error("{0}")]
    Membership(String),
    /// The node named is not a member of the cluster.
    #[error("node {0} is not a member of the cluster")]
    NoSuchNode(u64),
}
