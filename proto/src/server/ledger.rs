//! State shared by every worker's [`super::Server`]: allocation quotas and the set of relay
//! ports in use.
//!
//! Each worker owns its own shard of allocations, but two limits are global: allocations per
//! user id (RFC 8656 §7.2 "486 Allocation Quota Reached") and the total cap. They are touched
//! only when an allocation starts or ends, never per packet, so a mutex is fine here.
//!
//! The in-use port bitmap lets any worker recognise the server's own relayed addresses as
//! peers (two clients of one turnd must be able to talk, even on a private relay address),
//! without opening the server's other ports. It is read with relaxed atomic loads on the
//! relay path, which cost the same as plain loads.

use super::reject::Reject;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// RFC 8656 §7.2: a reserved port is held for about 30 seconds.
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// A relay port held for a later Allocate carrying RESERVATION-TOKEN (RFC 8656 §7.2). Kept in
/// the ledger because that Allocate comes from another 5-tuple and may land on another worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub token: [u8; 8],
    /// 0 for IPv4, 1 for IPv6.
    pub family: usize,
    pub port: u16,
    pub expires: Instant,
}

/// Limits and bookkeeping shared by all workers.
#[derive(Debug)]
pub struct Ledger {
    user_quota: u32,
    max_allocations: u32,
    total: AtomicU32,
    per_user: Mutex<BTreeMap<String, u32>>,
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
            total: AtomicU32::new(0),
            per_user: Mutex::new(BTreeMap::new()),
            ports_v4: PortBitmap::new(),
            ports_v6: PortBitmap::new(),
            reservations: Mutex::new(Vec::new()),
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Reserves one allocation for `user_id`: 486 past the per-user quota, 508 past the total.
    pub fn acquire(&self, user_id: &str) -> Result<(), Reject> {
        let mut users = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let count = users.get(user_id).copied().unwrap_or(0);
        if self.user_quota != 0 && count >= self.user_quota {
            return Err(Reject::AllocationQuotaReached);
        }
        let total = self.total.load(Ordering::Relaxed);
        if self.max_allocations != 0 && total >= self.max_allocations {
            return Err(Reject::InsufficientCapacity);
        }
        self.total.store(total + 1, Ordering::Relaxed);
        users.insert(user_id.to_owned(), count + 1);
        Ok(())
    }

    /// Returns an allocation reserved with [`Ledger::acquire`].
    pub fn release(&self, user_id: &str) {
        let mut users = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = users.get_mut(user_id) {
            *c -= 1;
            if *c == 0 {
                users.remove(user_id);
            }
            self.total.fetch_sub(1, Ordering::Relaxed);
        }
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

    #[test]
    fn quotas_hold_and_come_back() {
        let l = Ledger::new(2, 3);
        assert!(l.acquire("a").is_ok());
        assert!(l.acquire("a").is_ok());
        assert_eq!(l.acquire("a"), Err(Reject::AllocationQuotaReached));
        assert!(l.acquire("b").is_ok());
        assert_eq!(l.acquire("c"), Err(Reject::InsufficientCapacity));
        l.release("a");
        assert!(l.acquire("c").is_ok());
        assert_eq!(l.total(), 3);
        l.release("nobody");
        assert_eq!(l.total(), 3);
    }
}
