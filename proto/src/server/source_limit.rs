//! Rate limiting of unauthenticated error responses (401, 438, 400...) per source address.
//!
//! Anyone can send a request with a forged source address; each one draws an error response
//! to that address. The response is kept small (see `reject.rs`), and this limiter caps how
//! many a single address can be sent per second, so turnd cannot be used to flood a victim
//! (REFERENCES.md, "401 used for reflection").
//!
//! The table has a fixed number of token buckets, chosen by a keyed hash of the source
//! address. The caller passes the address as `source_key` counts it (IPv6 by its
//! `ipv6_source_prefix`, /64 by default, which one host usually owns whole). Memory is the same whether
//! one address or a million send: no state is created per source before authentication.
//! Two addresses that share a bucket share its budget; with the key unknown to clients, an
//! attacker cannot aim a collision at a chosen victim.

use std::net::IpAddr;
use std::time::Instant;

/// Buckets in the table (a power of two). 4,096 × 16 bytes = 64 KiB per worker.
const BUCKETS: usize = 4096;
/// Tokens are counted in thousandths, so refill works in whole milliseconds.
const MILLI: u64 = 1000;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Thousandths of a token.
    tokens: u64,
    /// One more than the milliseconds since the limiter's epoch at the last refill; 0 for a
    /// bucket never used.
    stamp: u64,
}

/// A fixed-size table of token buckets keyed by source address.
pub struct SourceLimiter {
    buckets: Box<[Bucket]>,
    /// Responses per second per source; 0 = unlimited.
    rate: u64,
    /// The most a source can send at once after being quiet.
    burst: u64,
    key: u64,
    epoch: Option<Instant>,
}

impl SourceLimiter {
    /// `rate` responses per second per source address (0 disables the limit), with bursts
    /// of twice that. `key` seeds the hash.
    pub fn new(rate: u32, key: u64) -> Self {
        let buckets = if rate == 0 { 0 } else { BUCKETS };
        SourceLimiter {
            buckets: vec![Bucket::default(); buckets].into_boxed_slice(),
            rate: u64::from(rate),
            burst: 2 * u64::from(rate),
            key,
            epoch: None,
        }
    }

    /// Takes one token from `ip`'s bucket; false when it is empty (drop the response).
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let epoch = *self.epoch.get_or_insert(now);
        let stamp = now.saturating_duration_since(epoch).as_millis() as u64 + 1;
        let i = (self.hash(ip) as usize) & (BUCKETS - 1);
        let b = &mut self.buckets[i];
        let cap = self.burst * MILLI;
        if b.stamp == 0 {
            // Never used: starts full.
            b.tokens = cap;
        } else {
            let refill = stamp.saturating_sub(b.stamp).saturating_mul(self.rate);
            b.tokens = b.tokens.saturating_add(refill).min(cap);
        }
        b.stamp = stamp;
        if b.tokens >= MILLI {
            b.tokens -= MILLI;
            true
        } else {
            false
        }
    }

    /// A keyed mix of the source key (already masked to its prefix by `source_key`); not
    /// cryptographic, but the key is random per process and never leaves it.
    fn hash(&self, ip: IpAddr) -> u64 {
        let v = match ip {
            IpAddr::V4(a) => u64::from(u32::from(a)),
            IpAddr::V6(a) => {
                let v = u128::from(a);
                ((v >> 64) as u64 ^ (v as u64).rotate_left(32)) ^ 0x9e37_79b9_7f4a_7c15
            }
        };
        // splitmix64 finaliser over the keyed value.
        let mut z = v ^ self.key;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_source_gets_its_burst_then_the_rate() {
        let mut l = SourceLimiter::new(10, 42);
        let t0 = Instant::now();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let burst = (0..100).filter(|_| l.allow(ip, t0)).count();
        assert_eq!(burst, 20);
        // One second later, ten more.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| l.allow(ip, t1)).count(), 10);
    }

    #[test]
    fn other_sources_are_unaffected_and_zero_means_unlimited() {
        let mut l = SourceLimiter::new(5, 7);
        let t0 = Instant::now();
        let flooder: IpAddr = "203.0.113.1".parse().unwrap();
        for _ in 0..1000 {
            l.allow(flooder, t0);
        }
        assert!(!l.allow(flooder, t0));
        // Most other addresses have a bucket of their own (a few may share the flooder's).
        let fresh = (1..=200u8)
            .filter(|i| l.allow(IpAddr::from([192, 0, 2, *i]), t0))
            .count();
        assert!(fresh >= 195, "{fresh}");
        let mut off = SourceLimiter::new(0, 7);
        assert!((0..10_000).all(|_| off.allow(flooder, t0)));
    }

    #[test]
    fn an_ipv6_host_is_limited_by_its_prefix() {
        use crate::source_key::source_key;
        let t0 = Instant::now();
        let host = |i: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, i]);
        let mut l = SourceLimiter::new(5, 1);
        let allowed = (0..100u16)
            .filter(|i| l.allow(source_key(host(*i), 64), t0))
            .count();
        assert_eq!(allowed, 10, "one /64 shares one budget");
        let mut l = SourceLimiter::new(5, 1);
        let allowed = (0..100u16)
            .filter(|i| l.allow(source_key(host(*i), 128), t0))
            .count();
        assert!(
            allowed > 10,
            "a /128 prefix counts single addresses: {allowed}"
        );
    }
}
