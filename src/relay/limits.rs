//! TCP/TLS connection limits shared by all workers: in total and per client address. Touched
//! only when a connection opens or closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

#[derive(Debug)]
pub struct ConnLimits {
    max_total: u32,
    max_per_ip: u32,
    state: Mutex<(u32, HashMap<IpAddr, u32>)>,
}

impl ConnLimits {
    /// 0 means no limit.
    pub fn new(max_total: u32, max_per_ip: u32) -> Self {
        ConnLimits {
            max_total,
            max_per_ip,
            state: Mutex::new((0, HashMap::new())),
        }
    }

    /// Counts a new connection from `ip`, or refuses it.
    pub fn try_acquire(&self, ip: IpAddr) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let per_ip = st.1.get(&ip).copied().unwrap_or(0);
        if (self.max_total != 0 && st.0 >= self.max_total)
            || (self.max_per_ip != 0 && per_ip >= self.max_per_ip)
        {
            return false;
        }
        st.0 += 1;
        st.1.insert(ip, per_ip + 1);
        true
    }

    pub fn release(&self, ip: IpAddr) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = st.1.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                st.1.remove(&ip);
            }
            st.0 -= 1;
        }
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_and_come_back() {
        let l = ConnLimits::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(l.try_acquire(a) && l.try_acquire(a));
        assert!(!l.try_acquire(a), "per-address limit");
        assert!(l.try_acquire(b));
        assert!(!l.try_acquire(b), "total limit");
        l.release(a);
        assert!(l.try_acquire(b));
        assert_eq!(l.open(), 3);
    }
}
