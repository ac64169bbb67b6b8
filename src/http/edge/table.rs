//! Which HTTP connections a listener holds: at most `max_total`, at most `max_per_key` per
//! client (IPv4 address, or IPv6 prefix: [`turnd_proto::source_key`]).
//!
//! A full listener does not turn away a newcomer that has sent a request (the accept loop says
//! so with `may_evict`). Idle connections cost the attacker nothing to hold, so refusing
//! newcomers would let anyone who opens `max_total` idle connections lock out every health
//! check and credential request. Instead the connection that has waited longest without a
//! request in progress, or one waiting unread, is closed to make room (oldest first, in accept
//! order); only when every held connection is busy is the newcomer refused. A client at its
//! per-address cap is refused outright: it may not push others out.

use super::clock::{Phase, Slot};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};

/// Why a connection was not admitted (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its client already holds `max_per_key` connections.
    PerAddress,
    /// The listener is full and every connection is busy answering a request.
    Full,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::PerAddress => "per_address",
            Refusal::Full => "full",
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    open: usize,
    per_key: HashMap<IpAddr, u32>,
    /// Connections in accept order, for eviction; entries of closed ones are skipped and
    /// compacted away.
    order: VecDeque<Weak<Slot>>,
}

/// One listener's connections.
#[derive(Debug)]
pub struct ConnTable {
    max_total: usize,
    /// 0 = no per-client limit.
    max_per_key: u32,
    ipv6_prefix: u8,
    inner: Mutex<Inner>,
}

/// A held connection: released when dropped.
#[derive(Debug)]
pub struct Admitted {
    table: Arc<ConnTable>,
    pub slot: Arc<Slot>,
}

impl ConnTable {
    pub fn new(max_total: u32, max_per_key: u32, ipv6_prefix: u8) -> Arc<Self> {
        Arc::new(ConnTable {
            max_total: max_total.max(1) as usize,
            max_per_key,
            ipv6_prefix,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Connections held now (evicted ones count until their task has closed them).
    pub fn open(&self) -> usize {
        self.lock().open
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `ip` with the clock `slot`; if the listener is full and
    /// `may_evict`, by evicting the longest-waiting idle connection. Returns whether one was
    /// evicted.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        slot: Arc<Slot>,
        may_evict: bool,
    ) -> Result<(Admitted, bool), Refusal> {
        let key = turnd_proto::source_key::source_key(ip, self.ipv6_prefix);
        let mut inner = self.lock();
        let held = inner.per_key.get(&key).copied().unwrap_or(0);
        if self.max_per_key != 0 && held >= self.max_per_key {
            return Err(Refusal::PerAddress);
        }
        let mut evicted = false;
        if inner.open >= self.max_total {
            // Evicted connections close on their own task's next turn; until then they still
            // hold a descriptor. Past a small slack, refuse rather than outrun the closing.
            if !may_evict
                || inner.open >= self.max_total + self.max_total / 8 + 8
                || !evict_one(&mut inner)
            {
                return Err(Refusal::Full);
            }
            evicted = true;
        }
        inner.open += 1;
        *inner.per_key.entry(key).or_insert(0) += 1;
        inner.order.push_back(Arc::downgrade(&slot));
        if inner.order.len() > 2 * self.max_total + 64 {
            inner.order.retain(|w| w.strong_count() > 0);
        }
        slot.set_key(key);
        Ok((
            Admitted {
                table: self.clone(),
                slot,
            },
            evicted,
        ))
    }
}

/// Asks the oldest connection that is neither answering a request nor holding one unread to
/// close. False when every connection is busy.
fn evict_one(inner: &mut Inner) -> bool {
    for _ in 0..inner.order.len() {
        let Some(weak) = inner.order.pop_front() else {
            return false;
        };
        let Some(slot) = weak.upgrade() else {
            continue;
        };
        // A request that came in while its task waits to run is as busy as one being answered:
        // under a flood of new connections the accept loop runs ahead of the connections' tasks.
        if slot.phase() == Phase::Request || slot.is_evicted() || slot.has_unread() {
            inner.order.push_back(weak);
            continue;
        }
        slot.evict();
        return true;
    }
    false
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut inner = self.table.lock();
        inner.open = inner.open.saturating_sub(1);
        let key = self.slot.key();
        if let Some(n) = inner.per_key.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                inner.per_key.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn slot() -> Arc<Slot> {
        Slot::new(super::super::clock::Timeouts {
            header: Duration::from_secs(1),
            body: Duration::from_secs(1),
            idle: Duration::from_secs(1),
        })
    }

    #[test]
    fn per_address_cap_counts_an_ipv6_prefix_as_one_client() {
        let t = ConnTable::new(100, 2, 64);
        let a = t
            .admit("2001:db8::1".parse().unwrap(), slot(), true)
            .unwrap();
        let _b = t
            .admit("2001:db8::2".parse().unwrap(), slot(), true)
            .unwrap();
        assert_eq!(
            t.admit("2001:db8::ffff:3".parse().unwrap(), slot(), true)
                .unwrap_err(),
            Refusal::PerAddress
        );
        assert!(t
            .admit("2001:db8:0:1::1".parse().unwrap(), slot(), true)
            .is_ok());
        drop(a);
        assert!(t
            .admit("2001:db8::3".parse().unwrap(), slot(), true)
            .is_ok());
    }

    #[test]
    fn a_full_table_evicts_the_oldest_idle_connection_never_a_busy_one() {
        let t = ConnTable::new(2, 0, 64);
        let (busy, _) = t.admit("192.0.2.1".parse().unwrap(), slot(), true).unwrap();
        busy.slot.set_phase(Phase::Request);
        let (idle, _) = t.admit("192.0.2.2".parse().unwrap(), slot(), true).unwrap();
        let (_new, evicted) = t.admit("192.0.2.3".parse().unwrap(), slot(), true).unwrap();
        assert!(evicted);
        assert!(idle.slot.is_evicted() && !busy.slot.is_evicted());
        // The evicted one has not closed yet: it is not chosen twice, the busy one never.
        drop(idle);
        let (newest, _) = t.admit("192.0.2.4".parse().unwrap(), slot(), true).unwrap();
        newest.slot.set_phase(Phase::Request);
        assert!(!busy.slot.is_evicted());
    }

    #[test]
    fn a_full_table_evicts_only_for_a_newcomer_that_may() {
        let t = ConnTable::new(1, 0, 64);
        let (idle, _) = t.admit("192.0.2.1".parse().unwrap(), slot(), true).unwrap();
        assert_eq!(
            t.admit("192.0.2.2".parse().unwrap(), slot(), false)
                .unwrap_err(),
            Refusal::Full
        );
        assert!(!idle.slot.is_evicted());
    }

    #[test]
    fn a_table_of_busy_connections_refuses() {
        let t = ConnTable::new(1, 0, 64);
        let (busy, _) = t.admit("192.0.2.1".parse().unwrap(), slot(), true).unwrap();
        busy.slot.set_phase(Phase::Request);
        assert_eq!(
            t.admit("192.0.2.2".parse().unwrap(), slot(), true)
                .unwrap_err(),
            Refusal::Full
        );
        assert_eq!(t.open(), 1);
    }
}
