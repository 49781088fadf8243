//! Binary encodings of what goes to disk: Raft entries in the Raft log, messages in station logs.
//!
//! Station record layout (little-endian): `produced_at i64 | deliver_at i64 | payload_len u32 |
//! content_type_len u16 | header_count u16 | content_type | (name_len u16, name, value_len u32,
//! value)* | payload`. The fixed 24-byte prefix lets recovery rebuild the message index without
//! decoding headers or copying payloads. The log around it adds the checksum.

use bytes::{Buf, Bytes};

use super::{Entry, StoredMessage};
use crate::station::{MessageMeta, Millis, NewMessage};

const PREFIX: usize = 24;

#[derive(Debug, thiserror::Error)]
#[error("undecodable record: {0}")]
pub struct DecodeError(pub String);

pub fn encode_entry(entry: &Entry, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    out.clear();
    bincode::serialize_into(&mut *out, entry).map_err(|e| DecodeError(e.to_string()))
}

pub fn decode_entry(bytes: &[u8]) -> Result<Entry, DecodeError> {
    bincode::deserialize(bytes).map_err(|e| DecodeError(e.to_string()))
}

/// Appends the station record of `msg`, produced at `produced_at`, to `out`.
pub fn encode_message(msg: &NewMessage, produced_at: Millis, out: &mut Vec<u8>) {
    let deliver_at = msg.deliver_at.unwrap_or(0);
    out.extend_from_slice(&produced_at.to_le_bytes());
    out.extend_from_slice(&deliver_at.to_le_bytes());
    out.extend_from_slice(&(msg.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&(msg.content_type.len() as u16).to_le_bytes());
    out.extend_from_slice(&(msg.headers.len() as u16).to_le_bytes());
    out.extend_from_slice(msg.content_type.as_bytes());
    for (name, value) in &msg.headers {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(&msg.payload);
}

/// What the state machine's message index keeps, read from the fixed prefix only.
pub fn decode_meta(record: &[u8]) -> Result<MessageMeta, DecodeError> {
    let mut b = record.get(..PREFIX).ok_or_else(|| DecodeError("short message record".into()))?;
    let produced_at = b.get_i64_le();
    let deliver_at = b.get_i64_le();
    let size = b.get_u32_le();
    Ok(MessageMeta { produced_at, deliver_at, size })
}

pub fn decode_message(offset: u64, record: Bytes) -> Result<StoredMessage, DecodeError> {
    let short = || DecodeError(format!("truncated message record at offset {offset}"));
    let mut b = record.clone();
    if b.remaining() < PREFIX {
        return Err(short());
    }
    let produced_at = b.get_i64_le();
    let deliver_at = b.get_i64_le();
    let payload_len = b.get_u32_le() as usize;
    let ct_len = b.get_u16_le() as usize;
    let header_count = b.get_u16_le() as usize;
    let text = |b: &mut Bytes, len: usize| -> Result<String, DecodeError> {
        if b.remaining() < len {
            return Err(short());
        }
        String::from_utf8(b.split_to(len).to_vec()).map_err(|e| DecodeError(e.to_string()))
    };
    let content_type = text(&mut b, ct_len)?;
    let mut headers = Vec::with_capacity(header_count);
    for _ in 0..header_count {
        if b.remaining() < 2 {
            return Err(short());
        }
        let name_len = b.get_u16_le() as usize;
        let name = text(&mut b, name_len)?;
        if b.remaining() < 4 {
            return Err(short());
        }
        let value_len = b.get_u32_le() as usize;
        headers.push((name, text(&mut b, value_len)?));
    }
    if b.remaining() != payload_len {
        return Err(short());
    }
    Ok(StoredMessage { offset, produced_at, deliver_at, content_type, headers, payload: b })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trip() {
        let msg = NewMessage {
            content_type: "application/json".into(),
            headers: vec![("trace-id".into(), "abc".into()), ("x".into(), String::new())],
            payload: Bytes::from_static(b"{\"a\":1}"),
            idempotency_key: Some("k".into()),
            deliver_at: Some(99),
        };
        let mut buf = Vec::new();
        encode_message(&msg, 42, &mut buf);
        let meta = decode_meta(&buf).unwrap();
        assert_eq!(meta, MessageMeta { produced_at: 42, deliver_at: 99, size: 7 });
        let stored = decode_message(7, Bytes::from(buf.clone())).unwrap();
        assert_eq!(stored.offset, 7);
        assert_eq!(stored.headers, msg.headers);
        assert_eq!(stored.payload, msg.payload);
        assert_eq!(stored.content_type, msg.content_type);
        assert!(decode_message(7, Bytes::from(buf[..buf.len() - 1].to_vec())).is_err());
    }

    #[test]
    fn an_entry_is_encoded_as_it_was_before_its_commands_were_shared() {
        use crate::station::{Command, Envelope};
        // What `Proposal` was: entries already in Raft logs on disk decode, and new ones are the
        // same bytes.
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        struct Unshared {
            envelopes: Vec<Envelope>,
        }
        let msg = NewMessage {
            content_type: "text/plain".into(),
            headers: vec![("h".into(), "v".into())],
            payload: Bytes::from_static(b"payload"),
            idempotency_key: Some("k".into()),
            deliver_at: None,
        };
        let envelopes = vec![
            Envelope { now: 5, command: Command::Produce { station: "s".into(), messages: vec![msg.clone(), msg] } },
            Envelope { now: 6, command: Command::DeleteStation { station: "t".into() } },
        ];
        let shared = super::super::Proposal { envelopes: envelopes.clone().into() };
        let unshared = Unshared { envelopes };
        let bytes = bincode::serialize(&unshared).unwrap();
        assert_eq!(bincode::serialize(&shared).unwrap(), bytes);
        let decoded: super::super::Proposal = bincode::deserialize(&bytes).unwrap();
        assert_eq!(decoded, shared);
        let mut entry_bytes = Vec::new();
        let log_id = openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 3);
        let entry = Entry { log_id, payload: openraft::EntryPayload::Normal(shared) };
        encode_entry(&entry, &mut entry_bytes).unwrap();
        assert_eq!(decode_entry(&entry_bytes).unwrap(), entry);
    }
}
