//! TCP/TLS connection limits shared by all workers: in total and per client, where an IPv6
//! client is its whole prefix (`ipv6_source_prefix`, default /64: a host owns all of it, so
//! counting single addresses would be no limit). Touched only when a connection opens or closes,
//! and once a second by each worker's sweep; never per packet.
//!
//! Also here, because operators read them beside the limits: how many connections were refused
//! or shed and why, and how many bytes the connections' buffers hold.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use turnd_proto::source_key::source_key;

/// Why turnd refused or closed a connection to protect the others: the bounded label values of
/// `turnd_connections_refused_total` and `turnd_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Refused at accept: the client (address, or IPv6 prefix) has `max_connections_per_ip`.
    PerAddress,
    /// Refused at accept: `max_connections` are open.
    Total,
    /// Closed: no allocation and no complete message for the idle timeout.
    Idle,
    /// Closed: as `Idle`, but only because the timeout was shortened near the total cap.
    IdleNearCap,
    /// Closed: the TLS handshake took longer than `tls_handshake_timeout`.
    Handshake,
    /// Closed: answers were queued and the client read none of them for the idle timeout.
    Stalled,
}

impl Shed {
    pub const REFUSED: [Shed; 2] = [Shed::PerAddress, Shed::Total];
    pub const CLOSED: [Shed; 4] = [
        Shed::Idle,
        Shed::IdleNearCap,
        Shed::Handshake,
        Shed::Stalled,
    ];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Shed::PerAddress => "per_address",
            Shed::Total => "total",
            Shed::Idle => "idle",
            Shed::IdleNearCap => "idle_near_cap",
            Shed::Handshake => "tls_handshake_timeout",
            Shed::Stalled => "stalled",
        }
    }
}

/// Below this share of `max_connections` the idle timeout is the configured one; above it, it
/// shrinks linearly to a tenth at the cap (see [`ConnLimits::idle_timeout`]).
const ADAPTIVE_FROM: f64 = 0.5;
/// The shortest idle timeout near the cap: sweeps run once a second.
const MIN_IDLE: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct ConnLimits {
    max_total: u32,
    max_per_ip: u32,
    ipv6_prefix: u8,
    state: Mutex<(u32, HashMap<IpAddr, u32>)>,
    shed: [AtomicU64; 6],
    buffer_bytes: AtomicI64,
}

impl ConnLimits {
    /// 0 means no limit. IPv6 clients are counted by their leading `ipv6_prefix` bits.
    pub fn new(max_total: u32, max_per_ip: u32, ipv6_prefix: u8) -> Self {
        ConnLimits {
            max_total,
            max_per_ip,
            ipv6_prefix,
            state: Mutex::new((0, HashMap::new())),
            shed: Default::default(),
            buffer_bytes: AtomicI64::new(0),
        }
    }

    /// Counts a new connection from `ip`, or says which limit refuses it.
    pub fn try_acquire(&self, ip: IpAddr) -> Result<(), Shed> {
        let key = source_key(ip, self.ipv6_prefix);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let per_ip = st.1.get(&key).copied().unwrap_or(0);
        let refused = if self.max_total != 0 && st.0 >= self.max_total {
            Some(Shed::Total)
        } else if self.max_per_ip != 0 && per_ip >= self.max_per_ip {
            Some(Shed::PerAddress)
        } else {
            None
        };
        if let Some(why) = refused {
            drop(st);
            self.count(why);
            return Err(why);
        }
        st.0 += 1;
        st.1.insert(key, per_ip + 1);
        Ok(())
    }

    pub fn release(&self, ip: IpAddr) {
        let key = source_key(ip, self.ipv6_prefix);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = st.1.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                st.1.remove(&key);
            }
            st.0 -= 1;
        }
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// The idle timeout to apply now, given the configured `base`. Connections that hold an
    /// unfinished frame or send a message now and then cost nothing to keep while the server
    /// has room, but near the cap they would shut out new clients (issue 20: one Binding per
    /// 20 s pins a connection under a 30 s timeout). So past half of `max_connections` the
    /// timeout shrinks linearly, to a tenth of `base` (at least 1 s) at the cap.
    pub fn idle_timeout(&self, base: Duration) -> Duration {
        if self.max_total == 0 {
            return base;
        }
        let load = f64::from(self.open()) / f64::from(self.max_total);
        let over = ((load - ADAPTIVE_FROM) / (1.0 - ADAPTIVE_FROM)).clamp(0.0, 1.0);
        let floor = (base / 10).max(MIN_IDLE).min(base);
        base - (base - floor).mul_f64(over)
    }

    /// Counts one refused or shed connection.
    pub fn count(&self, why: Shed) {
        self.shed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections refused or shed for `why` so far.
    pub fn counted(&self, why: Shed) -> u64 {
        self.shed[why as usize].load(Ordering::Relaxed)
    }

    /// A worker's share of [`Self::buffer_bytes`] changed by `delta`.
    pub fn add_buffer_bytes(&self, delta: i64) {
        self.buffer_bytes.fetch_add(delta, Ordering::Relaxed);
    }

    /// Bytes allocated for connection buffers, as the workers last measured them.
    pub fn buffer_bytes(&self) -> u64 {
        self.buffer_bytes.load(Ordering::Relaxed).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_and_come_back() {
        let l = ConnLimits::new(3, 2, 64);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(l.try_acquire(a).is_ok() && l.try_acquire(a).is_ok());
        assert_eq!(l.try_acquire(a), Err(Shed::PerAddress));
        assert!(l.try_acquire(b).is_ok());
        assert_eq!(l.try_acquire(b), Err(Shed::Total));
        l.release(a);
        assert!(l.try_acquire(b).is_ok());
        assert_eq!(l.open(), 3);
        assert_eq!(
            (l.counted(Shed::PerAddress), l.counted(Shed::Total)),
            (1, 1)
        );
    }

    #[test]
    fn an_ipv6_prefix_is_one_client() {
        let l = ConnLimits::new(0, 2, 64);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(l.try_acquire(ip("2001:db8:1:2::1")).is_ok());
        assert!(l.try_acquire(ip("2001:db8:1:2:ffff::9")).is_ok());
        assert_eq!(
            l.try_acquire(ip("2001:db8:1:2::77")),
            Err(Shed::PerAddress),
            "a third address of the same /64"
        );
        assert!(l.try_acquire(ip("2001:db8:1:3::1")).is_ok(), "another /64");
        l.release(ip("2001:db8:1:2::5"));
        assert!(
            l.try_acquire(ip("2001:db8:1:2::6")).is_ok(),
            "released by prefix"
        );
    }

    #[test]
    fn the_idle_timeout_shrinks_only_near_the_cap() {
        let base = Duration::from_secs(30);
        let l = ConnLimits::new(10, 0, 64);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            l.try_acquire(a).unwrap();
        }
        assert_eq!(l.idle_timeout(base), base, "half full");
        for _ in 0..5 {
            l.try_acquire(a).unwrap();
        }
        assert_eq!(l.idle_timeout(base), Duration::from_secs(3), "full");
        l.release(a);
        l.release(a);
        l.release(a);
        let at_70 = l.idle_timeout(base);
        assert!(at_70 > Duration::from_secs(3) && at_70 < base, "{at_70:?}");
        assert_eq!(
            l.idle_timeout(Duration::from_secs(1)),
            Duration::from_secs(1),
            "never below 1 s"
        );
        let unlimited = ConnLimits::new(0, 0, 64);
        assert_eq!(unlimited.idle_timeout(base), base);
    }
}
