//! The relay ports one worker may hand out.
//!
//! The configured range is split between workers by residue (worker `i` of `n` owns the ports
//! `p` with `(p - start) % n == i`), so no two workers ever pick the same port and none needs
//! a lock. The free list starts in a seeded random order (RFC 8656 §7.2 asks for
//! hard-to-guess relay ports) and freed ports go to the back, so a port is reused as late as
//! possible and stray packets meant for an old allocation do not reach a new one.

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
}

/// Free relay ports of one address family.
#[derive(Debug, Clone)]
pub struct PortPool {
    free: VecDeque<u16>,
    capacity: usize,
}

impl PortPool {
    pub fn new(shard: &PortShard, rng: &mut impl RngCore) -> Self {
        let start = *shard.range.start();
        let mut ports: Vec<u16> = shard
            .range
            .clone()
            .filter(|p| (p - start) % shard.workers.max(1) == shard.worker)
            .collect();
        // Fisher-Yates with the seeded generator: deterministic in tests, unguessable in use.
        for i in (1..ports.len()).rev() {
            let j = (rng.next_u32() as usize) % (i + 1);
            ports.swap(i, j);
        }
        PortPool {
            capacity: ports.len(),
            free: ports.into(),
        }
    }

    /// Takes a free port; with `even`, an even one (RFC 8656 §7.2, EVEN-PORT).
    pub fn take(&mut self, even: bool) -> Option<u16> {
        if !even {
            return self.free.pop_front();
        }
        let at = self.free.iter().position(|p| p % 2 == 0)?;
        self.free.remove(at)
    }

    /// Returns a port to the back of the list.
    pub fn give_back(&mut self, port: u16) {
        self.free.push_back(port);
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
    fn even_ports_and_reuse_order() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut pool = PortPool::new(&PortShard::whole(50001..=50004), &mut rng);
        let e = pool.take(true).unwrap();
        assert_eq!(e % 2, 0);
        pool.give_back(e);
        let mut order = Vec::new();
        while let Some(p) = pool.take(false) {
            order.push(p);
        }
        assert_eq!(*order.last().unwrap(), e, "freed ports are reused last");
    }
}
