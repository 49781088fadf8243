//! The cluster protocol on the wire: length-prefixed bincode frames over TCP (or TLS).
//!
//! A connection opens with the handshake of [`super::handshake`], in which both nodes prove they
//! know the cluster secret. After that, the dialer sends `(call id, group, Call)` frames and the
//! listener answers `(call id, Reply)` frames in whatever order the calls finish, so one
//! connection carries heartbeats, appends and forwarded commands at once. `group` names the Raft
//! group a call is for; today there is one (0), and per-station groups can share this transport
//! later.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::BrokerError;
use crate::raft::{Applied, Member, NodeId, StoredMembership, TypeConfig};
use crate::station::Command;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

/// The largest frame either side accepts. A Raft entry is at most 32 MiB of commands (the
/// proposer's bound) and an append carries a bounded number of entries.
pub const MAX_FRAME: usize = 256 << 20;
/// Bumped when a frame's meaning changes; a node speaking another version is refused.
/// 2: sealed receipts (`Command::Settle`, `Command::InitReceiptKey`, `Applied::station_id`).
/// 3: the challenge-response handshake (a nonce each way instead of a static proof).
pub const PROTOCOL: u32 = 3;
/// The one Raft group of today.
pub const GROUP: u64 = 0;

#[derive(Debug, Serialize, Deserialize)]
pub enum Call {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A command forwarded to the leader; answered once applied (or refused).
    Submit(Command),
    /// Read index: the leader confirms it still leads and answers its committed index.
    ReadIndex,
    Status,
    /// A member tells the leader its incarnation and API address.
    Join(Member),
    AddNode {
        id: NodeId,
        member: Member,
    },
    RemoveNode(NodeId),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Submit(Result<Applied, BrokerError>),
    ReadIndex(Result<u64, BrokerError>),
    Status(Box<NodeStatus>),
    Done(Result<(), BrokerError>),
    /// The call arrived before this node was ready for it, or is unknown to it.
    Refused(String),
}

/// What a node says about itself: enough to decide whether a starting node may join, and to
/// fill `GET /v1/cluster`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub member: Member,
    pub initialized: bool,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub membership: Option<StoredMembership>,
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, BrokerError> {
    let mut out = vec![0u8; 4];
    bincode::serialize_into(&mut out, value).map_err(|e| BrokerError::Storage(format!("encoding a frame: {e}")))?;
    let len = out.len() - 4;
    if len > MAX_FRAME {
        return Err(BrokerError::Storage(format!("frame of {len} bytes exceeds {MAX_FRAME}")));
    }
    out[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(out)
}

pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, value: &T) -> std::io::Result<()> {
    let frame = encode(value).map_err(std::io::Error::other)?;
    w.write_all(&frame).await?;
    w.flush().await
}

pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(r: &mut R) -> std::io::Result<T> {
    read_frame_within(r, MAX_FRAME).await
}

/// Reads a frame of at most `max` bytes; a longer one is refused before its body is read.
pub async fn read_frame_within<R: AsyncRead + Unpin, T: DeserializeOwned>(r: &mut R, max: usize) -> std::io::Result<T> {
    let len = r.read_u32_le().await? as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {max}"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    bincode::deserialize(&body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, &(7u64, Reply::Refused("no".into()))).await.unwrap();
        let (id, w): (u64, Reply) = read_frame(&mut b).await.unwrap();
        assert_eq!(id, 7);
        assert!(matches!(w, Reply::Refused(r) if r == "no"));
        a.write_all(&((MAX_FRAME as u32) + 1).to_le_bytes()).await.unwrap();
        let e = read_frame::<_, Reply>(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }
}
