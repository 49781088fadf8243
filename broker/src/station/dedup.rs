//! Idempotency keys remembered per station for its dedup window.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::types::after;
use super::types::Millis;

pub(crate) type PayloadDigest = [u8; 32];

pub(crate) fn digest(payload: &[u8]) -> PayloadDigest {
    Sha256::digest(payload).into()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Seen {
    offset: u64,
    digest: PayloadDigest,
    produced_at: Millis,
}

pub(crate) enum Lookup {
    Fresh,
    Duplicate(u64),
    Reused,
}

/// Memory is bounded by the keys produced within one window: `queue` lists every recorded key
/// in produce order (so `produced_at` is non-decreasing along it) and expiry pops its front.
/// A key recorded again after expiring leaves an older queue item behind; that item is dropped
/// without touching the newer entry because its offset no longer matches.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Dedup {
    keys: BTreeMap<String, Seen>,
    queue: VecDeque<(Millis, u64, String)>,
}

impl Dedup {
    /// A key is live while `produced_at + window > now`; the window in force is the station's
    /// current one, so a config change applies to keys already remembered.
    pub(crate) fn lookup(&self, key: &str, digest: &PayloadDigest, now: Millis, window_ms: u64) -> Lookup {
        match self.keys.get(key) {
            Some(seen) if after(seen.produced_at, window_ms) > now => {
                if &seen.digest == digest {
                    Lookup::Duplicate(seen.offset)
                } else {
                    Lookup::Reused
                }
            }
            _ => Lookup::Fresh,
        }
    }

    pub(crate) fn record(&mut self, key: String, digest: PayloadDigest, offset: u64, now: Millis) {
        self.queue.push_back((now, offset, key.clone()));
        self.keys.insert(key, Seen { offset, digest, produced_at: now });
    }

    pub(crate) fn expire(&mut self, now: Millis, window_ms: u64) {
        while let Some((produced_at, offset, _)) = self.queue.front() {
            if after(*produced_at, window_ms) > now {
                break;
            }
            let offset = *offset;
            if let Some((_, _, key)) = self.queue.pop_front() {
                if self.keys.get(&key).is_some_and(|seen| seen.offset == offset) {
                    self.keys.remove(&key);
                }
            }
        }
    }

    pub(crate) fn next_expiry(&self, window_ms: u64) -> Option<Millis> {
        self.queue.front().map(|(produced_at, _, _)| after(*produced_at, window_ms))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}
