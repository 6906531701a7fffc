//! Deterministic identifiers. Every value is a function of the seed and of a
//! counter, so a run that makes the same calls in the same order sees the same
//! ids, tokens and correlation ids, without a lock on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};

/// The first contact id handed out. Real HubSpot ids exceed 2^32, so ours do too
/// (a client that stores them in 32 bits fails here, not in production).
pub(crate) const FIRST_CONTACT_ID: u64 = 100_000_000_001;

/// SplitMix64: a tiny, well-mixed bijection of a 64-bit counter.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Counters from which ids are derived.
#[derive(Debug)]
pub(crate) struct Ids {
    seed: u64,
    contact: AtomicU64,
    counters: [AtomicU64; 4],
}

/// The independent id streams, so that e.g. extra correlation ids do not
/// shift the tokens a test sees.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Correlation = 0,
    Token = 1,
    Event = 2,
    Import = 3,
}

impl Ids {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            seed,
            contact: AtomicU64::new(FIRST_CONTACT_ID),
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Back to the state of a fresh simulator.
    pub(crate) fn reset(&self) {
        self.contact.store(FIRST_CONTACT_ID, Ordering::Relaxed);
        for c in &self.counters {
            c.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn next_contact_id(&self) -> u64 {
        self.contact.fetch_add(1, Ordering::Relaxed)
    }

    /// A pseudo-random 64-bit value from `stream`.
    pub(crate) fn next(&self, stream: Stream) -> u64 {
        let n = self.counters[stream as usize].fetch_add(1, Ordering::Relaxed);
        mix(self.seed ^ mix(n.wrapping_mul(8).wrapping_add(stream as u64 + 1)))
    }

    /// A UUID-shaped string (`8-4-4-4-12` hex), as HubSpot's correlation ids.
    pub(crate) fn uuid(&self, stream: Stream) -> String {
        let a = self.next(stream);
        let b = mix(a);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// An opaque token of `len` URL-safe characters.
    pub(crate) fn token(&self, prefix: &str, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::with_capacity(prefix.len() + len);
        out.push_str(prefix);
        let mut bits = 0u64;
        let mut left = 0;
        for _ in 0..len {
            if left == 0 {
                bits = self.next(Stream::Token);
                left = 10;
            }
            out.push(ALPHABET[(bits & 63) as usize] as char);
            bits >>= 6;
            left -= 1;
        }
        out
    }

    /// A webhook `eventId`: a positive number below 2^40, like HubSpot's.
    pub(crate) fn event_id(&self) -> u64 {
        self.next(Stream::Event) % (1 << 40) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_other_seed_other_sequence() {
        let (a, b, c) = (Ids::new(7), Ids::new(7), Ids::new(8));
        let seq = |ids: &Ids| {
            (
                ids.uuid(Stream::Correlation),
                ids.token("t-", 40),
                ids.event_id(),
            )
        };
        let (x, y, z) = (seq(&a), seq(&b), seq(&c));
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_eq!(x.0.len(), 36);
        assert_eq!(x.1.len(), 42);
    }

    #[test]
    fn streams_are_independent() {
        let (a, b) = (Ids::new(7), Ids::new(7));
        let _ = a.uuid(Stream::Correlation);
        assert_eq!(
            a.event_id(),
            b.event_id(),
            "a correlation id does not shift event ids"
        );
    }

    #[test]
    fn contact_ids_exceed_32_bits_and_reset() {
        let ids = Ids::new(1);
        let first = ids.next_contact_id();
        assert!(first > u64::from(u32::MAX));
        assert_eq!(ids.next_contact_id(), first + 1);
        ids.reset();
        assert_eq!(ids.next_contact_id(), first);
    }
}
