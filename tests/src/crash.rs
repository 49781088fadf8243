//! What the crash writer (`src/bin/crash-writer.rs`) produces, for the crash test to check.

/// The payload the crash writer produces for message `id`: long enough to span several disk
/// blocks sometimes, and derived from the id so a reader can check every byte.
pub fn crash_payload(id: &str) -> Vec<u8> {
    let seed = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let len = 16 + (seed % 3000) as usize;
    let mut out = Vec::with_capacity(len + id.len() + 1);
    out.extend_from_slice(id.as_bytes());
    out.push(b':');
    let mut x = seed;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(x as u8);
    }
    out
}

pub const CRASH_STATION: &str = "crash";
