//! The relay ports one worker may hand out.
//!
//! The configured range is split into one contiguous block per worker, so no two workers
//! ever pick the same port and none needs a lock, and so each block holds even/odd pairs for
//! EVEN-PORT (RFC 8656 §7.2). The free list starts in a seeded random order (RFC 8656 §7.2
//! asks for hard-to-guess relay ports) and freed ports go to the back, so a port is reused as
//! late as possible and stray packets meant for an old allocation do not reach a new one.
//!
//! A port can move between workers' pools (a reservation claimed by a client that lands on
//! another worker); it is only ever in one pool or in use, never both.

use rand_core::RngCore;
use std::collections::VecDeque;
use std::ops::RangeInclusive;

/// A worker's share of the relay port range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortShard {
    pub range: RangeInclusive<u16>,
    pub worker: u16,
    pub workers: u16,
}

impl PortShard {
    /// The whole range for a single worker.
    pub fn whole(range: RangeInclusive<u16>) -> Self {
        PortShard {
            range,
            worker: 0,
            workers: 1,
        }
    }

    /// This worker's contiguous block of the range (half-open; empty when there are more
    /// workers than ports).
    pub fn block(&self) -> std::ops::Range<u32> {
        let start = u32::from(*self.range.start());
        let len = u32::from(*self.range.end()) - start + 1;
        let n = u32::from(self.workers.max(1));
        let i = u32::from(self.worker.min(self.workers.max(1) - 1));
        let lo = start + len * i / n;
        let hi = start + len * (i + 1) / n;
        lo..hi
    }
}

/// Free relay ports of one address family.
#[derive(Debug, Clone)]
pub struct PortPool {
    free: VecDeque<u16>,
    /// Membership of `free`, one bit per port, for finding even/odd pairs.
    is_free: Vec<u64>,
    capacity: usize,
}

impl PortPool {
    pub fn new(shard: &PortShard, rng: &mut impl RngCore) -> Self {
        let mut ports: Vec<u16> = shard.block().map(|p| p as u16).collect();
        // Fisher-Yates with the seeded generator: deterministic in tests, unguessable in use.
        for i in (1..ports.len()).rev() {
            let j = (rng.next_u32() as usize) % (i + 1);
            ports.swap(i, j);
        }
        let mut pool = PortPool {
            capacity: ports.len(),
            free: VecDeque::new(),
            is_free: vec![0; 1024],
        };
        for p in ports {
            pool.give_back(p);
        }
        pool
    }

    fn mark(&mut self, port: u16, free: bool) {
        let (w, b) = (port as usize / 64, 1u64 << (port % 64));
        if free {
            self.is_free[w] |= b;
        } else {
            self.is_free[w] &= !b;
        }
    }

    fn contains(&self, port: u16) -> bool {
        self.is_free[port as usize / 64] & (1u64 << (port % 64)) != 0
    }

    fn remove(&mut self, port: u16) {
        if let Some(at) = self.free.iter().position(|p| *p == port) {
            self.free.remove(at);
            self.mark(port, false);
        }
    }

    /// Takes a free port; with `even`, an even one (RFC 8656 §7.2, EVEN-PORT).
    pub fn take(&mut self, even: bool) -> Option<u16> {
        let port = if even {
            let at = self.free.iter().position(|p| p % 2 == 0)?;
            self.free.remove(at)?
        } else {
            self.free.pop_front()?
        };
        self.mark(port, false);
        Some(port)
    }

    /// Takes an even port and the odd port after it (EVEN-PORT with the R bit: the second is
    /// reserved for a later Allocate with RESERVATION-TOKEN).
    pub fn take_pair(&mut self) -> Option<(u16, u16)> {
        let even = *self
            .free
            .iter()
            .find(|p| *p % 2 == 0 && **p < u16::MAX && self.contains(**p + 1))?;
        self.remove(even);
        self.remove(even + 1);
        Some((even, even + 1))
    }

    /// Returns a port to the back of the list.
    pub fn give_back(&mut self, port: u16) {
        if !self.contains(port) {
            self.free.push_back(port);
            self.mark(port, true);
        }
    }

    /// Whether `port` is in this pool (free to hand out).
    pub fn is_free(&self, port: u16) -> bool {
        self.contains(port)
    }

    pub fn free(&self) -> usize {
        self.free.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn shards_partition_the_range() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        for w in 0..3 {
            let shard = PortShard {
                range: 50000..=50010,
                worker: w,
                workers: 3,
            };
            let mut pool = PortPool::new(&shard, &mut rng);
            while let Some(p) = pool.take(false) {
                assert!(seen.insert(p), "port {p} handed to two workers");
            }
        }
        assert_eq!(seen.len(), 11);
    }

    #[test]
    fn even_ports_pairs_and_reuse_order() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut pool = PortPool::new(&PortShard::whole(50001..=50006), &mut rng);
        let e = pool.take(true).unwrap();
        assert_eq!(e % 2, 0);
        pool.give_back(e);
        let (a, b) = pool.take_pair().unwrap();
        assert_eq!((a % 2, b), (0, a + 1));
        assert_eq!(pool.free(), 4);
        pool.give_back(a);
        pool.give_back(b);
        let mut order = Vec::new();
        while let Some(p) = pool.take(false) {
            order.push(p);
        }
        assert_eq!(
            &order[order.len() - 2..],
            &[a, b],
            "freed ports are reused last"
        );
    }
}
