//! Who counts as one client in a per-address limit.
//!
//! An IPv4 client rarely owns more than one address, but every IPv6 host is handed a whole /64
//! (SLAAC, privacy addresses) and can send from any of its 2^64 addresses. A limit keyed by the
//! full IPv6 address is therefore no limit at all. Every per-address limit in turnd (HTTP rate
//! limit, TCP/TLS connections per address, the unauthenticated-error limiter, allocations per
//! address) keys by [`source_key`]: IPv4 as it is, IPv6 by its leading `ipv6_prefix` bits
//! (`ipv6_source_prefix`, default 64). An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a
//! dual-stack socket reports IPv4 clients) is the IPv4 client it carries.

use std::net::{IpAddr, Ipv6Addr};

/// The prefix length an IPv6 client is counted by unless configured otherwise.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// The address a per-address limit counts `ip` under: IPv4 unchanged, IPv6 with every bit past
/// `ipv6_prefix` cleared (a prefix of 128 or more counts single addresses).
pub fn source_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u32::from(ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str, prefix: u8) -> String {
        source_key(ip.parse().unwrap(), prefix).to_string()
    }

    #[test]
    fn ipv4_is_counted_as_it_is() {
        assert_eq!(key("198.51.100.7", 64), "198.51.100.7");
        assert_eq!(key("::ffff:198.51.100.7", 64), "198.51.100.7");
    }

    #[test]
    fn every_address_of_one_ipv6_prefix_is_one_client() {
        assert_eq!(
            key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64),
            "2001:db8:1:2::"
        );
        assert_eq!(key("2001:db8:1:2::1", 64), key("2001:db8:1:2:ffff::9", 64));
        assert_ne!(key("2001:db8:1:2::1", 64), key("2001:db8:1:3::1", 64));
        assert_eq!(key("2001:db8:1:2::1", 48), "2001:db8:1::");
        assert_eq!(key("2001:db8::1", 128), "2001:db8::1");
        assert_eq!(key("2001:db8::1", 0), "::");
    }
}
