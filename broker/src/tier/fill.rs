//! Reading tiered messages for the facade: the offsets whose local copies were deleted are
//! read from their objects (through [`TierReader`]'s cache), outside every lock.

use std::time::Duration;

use super::{TierReadError, TierReader};
use crate::error::BrokerError;
use crate::raft::codec::decode_message;
use crate::raft::StoredMessage;
use crate::station::TieredSegment;

/// How long a client is told to wait before retrying a read the bucket could not serve.
pub const TIER_RETRY_AFTER: Duration = Duration::from_secs(5);

fn broker_error(e: TierReadError) -> BrokerError {
    match e {
        TierReadError::Unavailable(reason) => BrokerError::TierUnavailable { reason, retry_after: TIER_RETRY_AFTER },
        corrupt @ TierReadError::Corrupt { .. } => BrokerError::Storage(corrupt.to_string()),
    }
}

fn reader(reader: Option<&TierReader>) -> Result<&TierReader, BrokerError> {
    reader.ok_or_else(|| BrokerError::TierUnavailable {
        reason: "the message is in the bucket and this node has no [tiering] bucket configured".into(),
        retry_after: TIER_RETRY_AFTER,
    })
}

/// Reads the message at `offset` of `segment` from the bucket.
pub(crate) async fn read_one(
    tier: Option<&TierReader>,
    segment: &TieredSegment,
    offset: u64,
) -> Result<StoredMessage, BrokerError> {
    let payload = reader(tier)?.read(segment, &[offset]).await.map_err(broker_error)?;
    let record = payload.into_iter().next().ok_or_else(|| {
        BrokerError::Storage(format!("tiered object {} answered no record for offset {offset}", segment.key))
    })?;
    decode_message(offset, record).map_err(|e| BrokerError::Storage(e.to_string()))
}

/// Replaces the placeholders at the positions `holes` names (each with its segment, in the
/// order of `messages`) by the messages read from the bucket: one read per object.
pub(crate) async fn fill(
    tier: Option<&TierReader>,
    messages: &mut [StoredMessage],
    holes: Vec<(usize, TieredSegment)>,
) -> Result<(), BrokerError> {
    if holes.is_empty() {
        return Ok(());
    }
    let tier = reader(tier)?;
    let mut rest = holes.as_slice();
    while let Some((_, segment)) = rest.first() {
        let same = rest.iter().take_while(|(_, s)| s.key == segment.key).count();
        let (group, tail) = rest.split_at(same);
        rest = tail;
        let offsets: Vec<u64> = group.iter().map(|&(i, _)| messages[i].offset).collect();
        let payloads = tier.read(segment, &offsets).await.map_err(broker_error)?;
        if payloads.len() != offsets.len() {
            return Err(BrokerError::Storage(format!("tiered object {} answered too few records", segment.key)));
        }
        for ((i, _), record) in group.iter().zip(payloads) {
            let offset = messages[*i].offset;
            messages[*i] = decode_message(offset, record).map_err(|e| BrokerError::Storage(e.to_string()))?;
        }
    }
    Ok(())
}
