//! State shared by every worker's [`super::Server`]: allocation quotas, the set of relay
//! ports in use, and every worker's pool of free relay ports.
//!
//! Each worker owns its own shard of allocations, but three limits are global: allocations per
//! user id (RFC 8656 §7.2 "486 Allocation Quota Reached"), allocations per client address (also
//! 486: a client that mints itself fresh user ids is still one address), and the total cap.
//! They are touched only when an allocation starts or ends, never per packet, so a mutex is
//! fine here.
//!
//! Each worker's free relay ports are registered here too ([`Ledger::register_pools`]), so a
//! worker whose own block is empty borrows a port from another worker's pool before it
//! answers 508: with the range split into one block per worker, a client must not be refused
//! while another block still has free ports.
//!
//! The in-use port bitmap lets any worker recognise the server's own relayed addresses as
//! peers (two clients of one turnd must be able to talk, even on a private relay address),
//! without opening the server's other ports. It is read with relaxed atomic loads on the
//! relay path, which cost the same as plain loads.

use super::ports::PortPool;
use super::reject::Reject;
use crate::wire::{Family, PerFamily};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// RFC 8656 §7.2: a reserved port is held for about 30 seconds.
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// A relay port held for a later Allocate carrying RESERVATION-TOKEN (RFC 8656 §7.2). Kept in
/// the ledger because that Allocate comes from another 5-tuple and may land on another worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub token: [u8; 8],
    pub family: Family,
    pub port: u16,
    pub expires: Instant,
}

/// One worker's free relay ports per address family. The worker takes from its own first;
/// others lock it only to borrow when theirs is empty.
pub type SharedPools = Arc<Mutex<PerFamily<PortPool>>>;

/// Who holds one allocation, for the quotas: its user id and the client's address as
/// [`crate::source_key::source_key`] counts it (IPv6 by prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub user_id: String,
    pub source: IpAddr,
}

/// Limits and bookkeeping shared by all workers.
#[derive(Debug)]
pub struct Ledger {
    user_quota: u32,
    max_allocations: u32,
    /// Allocations per client address (source key); 0 = unlimited.
    address_quota: u32,
    total: AtomicU32,
    per_user: Mutex<BTreeMap<String, u32>>,
    per_address: Mutex<BTreeMap<IpAddr, u32>>,
    pools: Mutex<Vec<SharedPools>>,
    ports_v4: PortBitmap,
    ports_v6: PortBitmap,
    reservations: Mutex<Vec<Reservation>>,
    /// Set when the server drains (SIGTERM): no new allocations.
    draining: std::sync::atomic::AtomicBool,
}

impl Ledger {
    /// `user_quota` and `max_allocations` of 0 mean unlimited.
    pub fn new(user_quota: u32, max_allocations: u32) -> Self {
        Ledger {
            user_quota,
            max_allocations,
            address_quota: 0,
            total: AtomicU32::new(0),
            per_user: Mutex::new(BTreeMap::new()),
            per_address: Mutex::new(BTreeMap::new()),
            pools: Mutex::new(Vec::new()),
            ports_v4: PortBitmap::new(),
            ports_v6: PortBitmap::new(),
            reservations: Mutex::new(Vec::new()),
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Also caps allocations per client address (`max_allocations_per_address`; 0 = none).
    pub fn with_address_quota(mut self, per_address: u32) -> Self {
        self.address_quota = per_address;
        self
    }

    /// Reserves one allocation for `holder`: 486 past the per-user or per-address quota
    /// (RFC 8656 §7.2), 508 past the total.
    pub fn acquire(&self, holder: &Holder) -> Result<(), Reject> {
        // Lock order: per_user, then per_address (release takes them in the same order).
        let mut users = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let mut addresses = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let count = users.get(&holder.user_id).copied().unwrap_or(0);
        if self.user_quota != 0 && count >= self.user_quota {
            return Err(Reject::AllocationQuotaReached);
        }
        let from_source = addresses.get(&holder.source).copied().unwrap_or(0);
        if self.address_quota != 0 && from_source >= self.address_quota {
            return Err(Reject::AllocationQuotaReached);
        }
        let total = self.total.load(Ordering::Relaxed);
        if self.max_allocations != 0 && total >= self.max_allocations {
            return Err(Reject::InsufficientCapacity);
        }
        self.total.store(total + 1, Ordering::Relaxed);
        users.insert(holder.user_id.clone(), count + 1);
        addresses.insert(holder.source, from_source + 1);
        Ok(())
    }

    /// Returns an allocation reserved with [`Ledger::acquire`].
    pub fn release(&self, holder: &Holder) {
        let mut users = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let mut addresses = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let Some(c) = users.get_mut(&holder.user_id) else {
            return;
        };
        *c -= 1;
        if *c == 0 {
            users.remove(&holder.user_id);
        }
        if let Some(c) = addresses.get_mut(&holder.source) {
            *c -= 1;
            if *c == 0 {
                addresses.remove(&holder.source);
            }
        }
        self.total.fetch_sub(1, Ordering::Relaxed);
    }

    /// Allocations held from one client address (its source key).
    pub fn from_address(&self, source: IpAddr) -> u32 {
        let addresses = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        addresses.get(&source).copied().unwrap_or(0)
    }

    /// Makes a worker's free ports available to the other workers.
    pub fn register_pools(&self, pools: SharedPools) {
        self.pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pools);
    }

    /// Withdraws a worker's pools (its server is gone); ports in them go with it.
    pub fn unregister_pools(&self, pools: &SharedPools) {
        self.pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| !Arc::ptr_eq(p, pools));
    }

    /// Takes a free port of `family` from some worker's pool other than `own`, with `take`
    /// choosing it (any port, an even one, or an even/odd pair). Called only when the
    /// worker's own pool has none, so the others' locks are touched only then.
    pub(crate) fn borrow_port<T>(
        &self,
        own: &SharedPools,
        family: Family,
        mut take: impl FnMut(&mut PortPool) -> Option<T>,
    ) -> Option<T> {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner()).clone();
        pools
            .iter()
            .filter(|p| !Arc::ptr_eq(p, own))
            .find_map(|p| take(&mut p.lock().unwrap_or_else(|e| e.into_inner())[family]))
    }

    /// Stops new allocations (they are answered 508) while existing ones run on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Allocations held right now, across all workers.
    pub fn total(&self) -> u32 {
        self.total.load(Ordering::Relaxed)
    }

    /// How many distinct user ids hold allocations (bounded by the total cap).
    pub fn users(&self) -> usize {
        self.per_user
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub(crate) fn reserve(&self, r: Reservation) {
        self.reservations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r);
    }

    /// Takes the reservation with this token, if it exists (expired ones are swept within a
    /// second of expiring).
    pub(crate) fn claim(&self, token: &[u8]) -> Option<Reservation> {
        let mut list = self.reservations.lock().unwrap_or_else(|e| e.into_inner());
        let at = list.iter().position(|r| r.token[..] == *token)?;
        Some(list.swap_remove(at))
    }

    /// Takes every reservation that expired by `now`.
    pub(crate) fn take_expired(&self, now: Instant) -> Vec<Reservation> {
        let mut list = self.reservations.lock().unwrap_or_else(|e| e.into_inner());
        let (expired, kept) = list.drain(..).partition(|r| r.expires <= now);
        *list = kept;
        expired
    }

    /// Reservations outstanding.
    pub fn reservations(&self) -> usize {
        self.reservations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn bitmap(&self, ip: IpAddr) -> &PortBitmap {
        match ip {
            IpAddr::V4(_) => &self.ports_v4,
            IpAddr::V6(_) => &self.ports_v6,
        }
    }

    pub(crate) fn mark_relay_port(&self, ip: IpAddr, port: u16, in_use: bool) {
        self.bitmap(ip).set(port, in_use);
    }

    /// Whether `port` is a relay port some worker holds for this address family.
    #[inline]
    pub fn is_relay_port(&self, ip: IpAddr, port: u16) -> bool {
        self.bitmap(ip).get(port)
    }
}

#[derive(Debug)]
struct PortBitmap(Box<[AtomicU64]>);

impl PortBitmap {
    fn new() -> Self {
        PortBitmap((0..1024).map(|_| AtomicU64::new(0)).collect())
    }
    fn set(&self, port: u16, on: bool) {
        let (word, bit) = (port as usize / 64, 1u64 << (port % 64));
        if on {
            self.0[word].fetch_or(bit, Ordering::Relaxed);
        } else {
            self.0[word].fetch_and(!bit, Ordering::Relaxed);
        }
    }
    #[inline]
    fn get(&self, port: u16) -> bool {
        self.0[port as usize / 64].load(Ordering::Relaxed) & (1u64 << (port % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(user: &str, source: &str) -> Holder {
        Holder {
            user_id: user.to_owned(),
            source: source.parse().unwrap(),
        }
    }

    #[test]
    fn quotas_hold_and_come_back() {
        let l = Ledger::new(2, 3);
        let ip = "192.0.2.1";
        assert!(l.acquire(&h("a", ip)).is_ok());
        assert!(l.acquire(&h("a", ip)).is_ok());
        assert_eq!(l.acquire(&h("a", ip)), Err(Reject::AllocationQuotaReached));
        assert!(l.acquire(&h("b", ip)).is_ok());
        assert_eq!(l.acquire(&h("c", ip)), Err(Reject::InsufficientCapacity));
        l.release(&h("a", ip));
        assert!(l.acquire(&h("c", ip)).is_ok());
        assert_eq!(l.total(), 3);
        l.release(&h("nobody", ip));
        assert_eq!(l.total(), 3);
    }

    #[test]
    fn the_address_quota_counts_every_user_of_one_address() {
        let l = Ledger::new(0, 0).with_address_quota(2);
        assert!(l.acquire(&h("u1", "192.0.2.1")).is_ok());
        assert!(l.acquire(&h("u2", "192.0.2.1")).is_ok());
        assert_eq!(
            l.acquire(&h("u3", "192.0.2.1")),
            Err(Reject::AllocationQuotaReached)
        );
        assert!(l.acquire(&h("u3", "192.0.2.2")).is_ok());
        l.release(&h("u1", "192.0.2.1"));
        assert!(l.acquire(&h("u3", "192.0.2.1")).is_ok());
        assert_eq!(l.from_address("192.0.2.1".parse().unwrap()), 2);
    }
}
