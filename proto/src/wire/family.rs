//! IP address families as TURN names them: the family octet of REQUESTED-ADDRESS-FAMILY,
//! ADDITIONAL-ADDRESS-FAMILY and ADDRESS-ERROR-CODE (RFC 8656 §18.8, §18.11, §18.12), and
//! the family of an XOR-*-ADDRESS (RFC 8489 §14.2). An allocation has at most one relay per
//! family (RFC 8656 §7.2, RFC 6156), so per-family state is a [`PerFamily`] indexed by
//! [`Family`], never by a bare 0 or 1.

use std::net::IpAddr;
use std::ops::{Index, IndexMut};

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4 = 0,
    V6 = 1,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The family of an address.
    #[inline]
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The family a wire code names: 0x01 IPv4, 0x02 IPv6; None for any other code.
    pub fn from_code(code: u8) -> Option<Family> {
        match code {
            super::attr::FAMILY_IPV4 => Some(Family::V4),
            super::attr::FAMILY_IPV6 => Some(Family::V6),
            _ => None,
        }
    }

    /// The wire code (0x01 IPv4, 0x02 IPv6).
    pub fn code(self) -> u8 {
        match self {
            Family::V4 => super::attr::FAMILY_IPV4,
            Family::V6 => super::attr::FAMILY_IPV6,
        }
    }

    /// Position in per-family arrays (counters the shell exports are plain arrays).
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One value per address family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerFamily<T>(pub [T; 2]);

impl<T> PerFamily<T> {
    /// The values, IPv4's first.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    /// The values with their families, IPv4's first.
    pub fn each(&self) -> impl Iterator<Item = (Family, &T)> {
        Family::ALL.into_iter().zip(self.0.iter())
    }
}

impl<T> Index<Family> for PerFamily<T> {
    type Output = T;
    #[inline]
    fn index(&self, f: Family) -> &T {
        &self.0[f.index()]
    }
}

impl<T> IndexMut<Family> for PerFamily<T> {
    #[inline]
    fn index_mut(&mut self, f: Family) -> &mut T {
        &mut self.0[f.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_none() {
        for f in Family::ALL {
            assert_eq!(Family::from_code(f.code()), Some(f));
        }
        assert_eq!(Family::from_code(0), None);
        assert_eq!(Family::from_code(3), None);
        assert_eq!(Family::of("::1".parse().unwrap()), Family::V6);
        let mut m = PerFamily([0, 0]);
        m[Family::V6] = 7;
        assert_eq!(
            m.each().collect::<Vec<_>>(),
            [(Family::V4, &0), (Family::V6, &7)]
        );
    }
}
