//! Which cluster and node a data dir belongs to: written on the first start (atomic replace,
//! fsync of file and directory), checked on every later one, so a node never runs on another
//! cluster's or another node's data.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use crate::raft::durable_file::{self, FileError};
use crate::raft::NodeId;

/// The file in the data dir's root that holds the [`Identity`].
pub const IDENTITY_FILE: &str = "cluster-identity";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub cluster_id: String,
    pub node_id: NodeId,
    /// Random, made when the dir is first used: a wiped dir gets a new one, which is how the
    /// cluster tells a node that lost its data from one that kept it.
    pub incarnation: String,
}

/// The identity as written before incarnations existed.
#[derive(Deserialize)]
struct IdentityV1 {
    cluster_id: String,
    node_id: NodeId,
}

pub fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_FILE)
}

/// The identity stored in `data_dir`, if one was written; read-only. One written before
/// incarnations existed reads with an empty incarnation.
pub fn read(data_dir: &Path) -> Result<Option<Identity>, FileError> {
    let path = identity_path(data_dir);
    match durable_file::read::<Identity>(&path) {
        Ok(found) => Ok(found),
        Err(e) => match durable_file::read::<IdentityV1>(&path) {
            Ok(Some(v1)) => {
                Ok(Some(Identity { cluster_id: v1.cluster_id, node_id: v1.node_id, incarnation: String::new() }))
            }
            _ => Err(e),
        },
    }
}

/// 128 random bits from the kernel, as 32 hex digits.
fn random_id(what: &str) -> Result<String, BrokerError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| BrokerError::Storage(format!("reading /dev/urandom for {what}: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A cluster id is printed in errors and tables and passed on command lines: 1 to 128 visible
/// ASCII characters.
pub fn validate_cluster_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("invalid cluster id {id:?}: use 1 to 128 visible ASCII characters"));
    }
    Ok(())
}

/// Checks the stored identity against this node's configuration, or writes it on the first
/// start (the expected cluster id if one is configured, else a new random one). A mismatch is
/// refused before anything in the data dir is touched.
pub fn establish(data_dir: &Path, node_id: NodeId, expected_cluster: Option<&str>) -> Result<Identity, BrokerError> {
    if let Some(expected) = expected_cluster {
        validate_cluster_id(expected).map_err(BrokerError::DataDir)?;
    }
    let storage = |e: FileError| BrokerError::Storage(e.to_string());
    if let Some(stored) = read(data_dir).map_err(storage)? {
        if let Some(expected) = expected_cluster.filter(|e| *e != stored.cluster_id) {
            return Err(BrokerError::DataDir(format!(
                "data dir {} belongs to cluster {}, this node was started for cluster {expected}",
                data_dir.display(),
                stored.cluster_id
            )));
        }
        if stored.node_id != node_id {
            return Err(BrokerError::DataDir(format!(
                "data dir {} belongs to node {} of cluster {}, this node was started as node {node_id}",
                data_dir.display(),
                stored.node_id,
                stored.cluster_id
            )));
        }
        if stored.incarnation.is_empty() {
            let upgraded = Identity { incarnation: random_id("an incarnation")?, ..stored };
            durable_file::write_atomic(&identity_path(data_dir), &upgraded).map_err(storage)?;
            return Ok(upgraded);
        }
        return Ok(stored);
    }
    let cluster_id = match expected_cluster {
        Some(id) => id.to_owned(),
        None => random_id("a cluster id")?,
    };
    let identity = Identity { cluster_id, node_id, incarnation: random_id("an incarnation")? };
    if data_dir.join("raft").exists() {
        // Written by a version without identities: this node's data, adopted as it is.
        tracing::info!(dir = %data_dir.display(), cluster_id = %identity.cluster_id, "data dir had no cluster identity; recorded one");
    }
    durable_file::write_atomic(&identity_path(data_dir), &identity).map_err(storage)?;
    Ok(identity)
}
