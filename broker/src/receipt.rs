//! Sealed receipts: what a consumer gets back from a fetch and hands in to settle a delivery.
//!
//! A sealed receipt names the station incarnation (its id, never reused), the offset and the
//! delivery number, and carries a MAC over those and the station and group names, keyed by the
//! cluster's [`ReceiptKey`]. The key is generated once (by whichever node first needs it),
//! committed through Raft and kept in the replicated state and its snapshots, so every replica
//! and every restart agrees on it: a receipt sealed by one node opens on any other.
//!
//! Opening checks the MAC against the station and group the receipt is handed in for, so a
//! receipt of another station or group, a guessed one and a tampered one do not open. Opening is
//! done by the facade before anything is proposed; the apply path only compares the station id
//! (see `Command::Settle`), so it stays deterministic and free of the key.
//!
//! Layout (41 bytes, 55 characters of base64url):
//! `version u8 = 1 | station_id u64 BE | offset u64 BE | delivery u64 BE | mac [u8; 16]`,
//! where `mac` is the first 16 bytes of HMAC-SHA256(key, domain | the 25 bytes before the mac |
//! station name | group name), each name prefixed by its length as u32 BE.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use crate::station::types::ReceiptKey;
use crate::station::types::{BoundReceipt, Receipt};

/// Length of a sealed receipt in bytes.
pub const SEALED_LEN: usize = 41;
const VERSION: u8 = 1;
const BODY_LEN: usize = 25;
const MAC_LEN: usize = SEALED_LEN - BODY_LEN;
const DOMAIN: &[u8] = b"depot-receipt-v1\0";

/// A sealed receipt, as handed to consumers (the gateway encodes it as base64url).
pub type SealedReceipt = [u8; SEALED_LEN];

impl ReceiptKey {
    /// This key set up for HMAC, ready to seal or open any number of receipts. HMAC's key
    /// setup hashes two SHA-256 blocks of the four or five a receipt takes; a fetch or settle
    /// does it once, not once per receipt.
    pub fn keyed(&self) -> KeyedReceipts {
        // HMAC takes a key of any length; 32 bytes never fails.
        KeyedReceipts(<Hmac<Sha256> as Mac>::new_from_slice(self.bytes()).unwrap_or_else(|_| unreachable!()))
    }
}

/// A [`ReceiptKey`] set up for HMAC (see [`ReceiptKey::keyed`]).
#[derive(Clone)]
pub struct KeyedReceipts(Hmac<Sha256>);

impl KeyedReceipts {
    fn mac(&self, body: &[u8; BODY_LEN], station: &str, group: &str) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(DOMAIN);
        mac.update(body);
        for name in [station, group] {
            mac.update(&(name.len() as u32).to_be_bytes());
            mac.update(name.as_bytes());
        }
        mac
    }
}

fn body(station_id: u64, receipt: Receipt) -> [u8; BODY_LEN] {
    let mut body = [0u8; BODY_LEN];
    body[0] = VERSION;
    body[1..9].copy_from_slice(&station_id.to_be_bytes());
    body[9..17].copy_from_slice(&receipt.offset.to_be_bytes());
    body[17..25].copy_from_slice(&receipt.delivery.to_be_bytes());
    body
}

/// Seals `receipt`, a delivery of group `group` on station `station` whose incarnation is
/// `station_id`.
pub fn seal(key: &KeyedReceipts, station_id: u64, station: &str, group: &str, receipt: Receipt) -> SealedReceipt {
    let body = body(station_id, receipt);
    let tag = key.mac(&body, station, group).finalize().into_bytes();
    let mut sealed = [0u8; SEALED_LEN];
    sealed[..BODY_LEN].copy_from_slice(&body);
    sealed[BODY_LEN..].copy_from_slice(&tag[..MAC_LEN]);
    sealed
}

/// Opens a receipt handed in for group `group` of station `station`: `None` unless it was
/// sealed with `key` for exactly that station and group (of any incarnation: the station id it
/// names is checked when the command applies). The MAC is compared in constant time.
pub fn open(key: &KeyedReceipts, station: &str, group: &str, sealed: &[u8]) -> Option<BoundReceipt> {
    let sealed: &[u8; SEALED_LEN] = sealed.try_into().ok()?;
    let (body, tag) = sealed.split_at(BODY_LEN);
    let body: &[u8; BODY_LEN] = body.try_into().ok()?;
    if body[0] != VERSION {
        return None;
    }
    key.mac(body, station, group).verify_truncated_left(tag).ok()?;
    let u64_at = |at: usize| body[at..at + 8].try_into().ok().map(u64::from_be_bytes);
    Some(BoundReceipt { station_id: u64_at(1)?, receipt: Receipt { offset: u64_at(9)?, delivery: u64_at(17)? } })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW_KEY: ReceiptKey = ReceiptKey::from_bytes([7; 32]);
    const R: Receipt = Receipt { offset: 3, delivery: 9 };

    fn key() -> KeyedReceipts {
        RAW_KEY.keyed()
    }

    #[test]
    fn a_sealed_receipt_opens_for_its_station_and_group_only() {
        let sealed = seal(&key(), 42, "rx", "g", R);
        assert_eq!(open(&key(), "rx", "g", &sealed), Some(BoundReceipt { station_id: 42, receipt: R }));
        assert_eq!(open(&key(), "ry", "g", &sealed), None, "another station");
        assert_eq!(open(&key(), "rx", "h", &sealed), None, "another group");
        assert_eq!(open(&ReceiptKey::from_bytes([8; 32]).keyed(), "rx", "g", &sealed), None, "another cluster's key");
        // Names are length-prefixed: moving a character from the station to the group changes the MAC.
        assert_eq!(open(&key(), "r", "xg", &sealed), None);
    }

    #[test]
    fn same_delivery_on_two_stations_or_groups_gives_different_receipts() {
        assert_ne!(seal(&key(), 1, "rx", "g", R), seal(&key(), 2, "ry", "g", R));
        assert_ne!(seal(&key(), 1, "rx", "a", R), seal(&key(), 1, "rx", "b", R));
        assert_ne!(seal(&key(), 1, "rx", "g", R), seal(&key(), 2, "rx", "g", R), "a re-created station");
    }

    #[test]
    fn every_flipped_bit_truncation_or_extension_is_refused() {
        let sealed = seal(&key(), 42, "rx", "g", R);
        for bit in 0..SEALED_LEN * 8 {
            let mut tampered = sealed;
            tampered[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(open(&key(), "rx", "g", &tampered), None, "bit {bit}");
        }
        for len in 0..SEALED_LEN {
            assert_eq!(open(&key(), "rx", "g", &sealed[..len]), None, "truncated to {len}");
        }
        let mut longer = sealed.to_vec();
        longer.push(0);
        assert_eq!(open(&key(), "rx", "g", &longer), None);
    }

    #[test]
    fn counted_receipts_without_the_key_do_not_open() {
        // What a client could build by counting: the right fields, any MAC.
        for mac in [[0u8; MAC_LEN], [0xff; MAC_LEN]] {
            let mut guessed = [0u8; SEALED_LEN];
            guessed[..BODY_LEN].copy_from_slice(&body(42, R));
            guessed[BODY_LEN..].copy_from_slice(&mac);
            assert_eq!(open(&key(), "rx", "g", &guessed), None);
        }
        // The old unsealed format (offset and delivery, 16 bytes).
        let mut old = R.offset.to_be_bytes().to_vec();
        old.extend_from_slice(&R.delivery.to_be_bytes());
        assert_eq!(open(&key(), "rx", "g", &old), None);
    }

    #[test]
    fn encoding_is_fixed() {
        let sealed = seal(&key(), 0x0102, "rx", "g", Receipt { offset: 0x0304, delivery: 0x0506 });
        assert_eq!(sealed[0], 1);
        assert_eq!(&sealed[1..9], &0x0102u64.to_be_bytes());
        assert_eq!(&sealed[9..17], &0x0304u64.to_be_bytes());
        assert_eq!(&sealed[17..25], &0x0506u64.to_be_bytes());
        // Sealing is a pure function of key and input: every replica seals alike.
        assert_eq!(sealed, seal(&key(), 0x0102, "rx", "g", Receipt { offset: 0x0304, delivery: 0x0506 }));
        assert_ne!(ReceiptKey::generate(), ReceiptKey::generate());
        assert_eq!(format!("{RAW_KEY:?}"), "ReceiptKey(..)");
    }

    #[test]
    fn sealing_matches_an_hmac_computed_elsewhere() {
        // Computed with Python's `hmac` and `hashlib` from the layout in this module's
        // documentation: receipts sealed before `KeyedReceipts` still open, and the other way.
        let expected = "010000000000000102000000000000030400000000000005067fb85fe90f8401499a9bbc72859d7d4e";
        let sealed = seal(&key(), 0x0102, "rx", "g", Receipt { offset: 0x0304, delivery: 0x0506 });
        let hex: String = sealed.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
        // One keyed value seals many receipts, each as if keyed afresh.
        let keyed = key();
        for offset in 0..3 {
            let r = Receipt { offset, delivery: 1 };
            assert_eq!(seal(&keyed, 5, "rx", "g", r), seal(&key(), 5, "rx", "g", r));
            assert!(open(&keyed, "rx", "g", &seal(&keyed, 5, "rx", "g", r)).is_some());
        }
    }
}
