//! Which peer addresses the relay may send to.
//!
//! A public TURN server is a door into the network it runs in: published attacks used relays
//! to reach cloud metadata services, loopback services and internal hosts. By default turnd
//! refuses every special-purpose range (REFERENCES.md, "Peer addresses a public relay must
//! refuse"); an IPv4 address written inside IPv6 is judged as the IPv4 address it carries.
//! Operators can allow ranges (a lab, a private deployment) and deny more. The server's own
//! relayed addresses are handled by the caller (see `server::hairpin`), not here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address range such as `10.0.0.0/8` or `fe80::/10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// A range; the address is masked to the prefix. None if the prefix is too long.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return None;
        }
        let masked = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(prefix))),
        };
        Some(Cidr {
            addr: masked,
            prefix,
        })
    }

    /// Whether `ip` is in this block (an IPv4 address is never in an IPv6 block).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                u32::from(a) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                u128::from(a) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }

    /// The first and last address of the range (for table-driven tests).
    pub fn first_last(&self) -> (IpAddr, IpAddr) {
        match self.addr {
            IpAddr::V4(a) => {
                let first = u32::from(a);
                (
                    IpAddr::V4(a),
                    IpAddr::V4(Ipv4Addr::from(first | !mask32(self.prefix))),
                )
            }
            IpAddr::V6(a) => {
                let first = u128::from(a);
                (
                    IpAddr::V6(a),
                    IpAddr::V6(Ipv6Addr::from(first | !mask128(self.prefix))),
                )
            }
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    }
}

/// Why a CIDR string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an address range (expected e.g. 10.0.0.0/8, fd00::/8 or 192.0.2.1)")]
pub struct CidrParseError(String);

impl FromStr for Cidr {
    type Err = CidrParseError;
    /// Parses `addr/prefix`, or a bare address as a single-address range.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrParseError(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| err())?;
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| err())?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Cidr::new(addr, prefix).ok_or_else(err)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The ranges refused by default (REFERENCES.md; RFC 6890 special-purpose registries).
pub const DEFAULT_DENY: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// The IPv4 address an IPv6 address carries, if it is one of the forms that reach IPv4 hosts:
/// IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, and 6to4
/// `2002:AABB:CCDD::/48`.
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let s = ip.segments();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if o[..10] == [0; 10] && (o[10..12] == [0xFF, 0xFF] || o[10..12] == [0, 0]) {
        // `::` and `::1` themselves are not IPv4-compatible addresses; they are judged as IPv6.
        if o[10..12] == [0, 0] && u32::from(tail) <= 1 {
            return None;
        }
        return Some(tail);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// The peer-address policy: operator deny > operator allow > default deny > allow.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    default_deny: Vec<Cidr>,
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

impl Default for PeerPolicy {
    fn default() -> Self {
        Self::new(Vec::new(), Vec::new())
    }
}

impl PeerPolicy {
    /// The default deny list plus the operator's `allow` and `deny` ranges.
    pub fn new(allow: Vec<Cidr>, deny: Vec<Cidr>) -> Self {
        let default_deny = DEFAULT_DENY
            .iter()
            .map(|s| s.parse().expect("the default deny list parses"))
            .collect();
        PeerPolicy {
            default_deny,
            allow,
            deny,
        }
    }

    /// The default deny list, parsed (for tests and docs).
    pub fn default_deny(&self) -> &[Cidr] {
        &self.default_deny
    }

    fn judge_one(&self, ip: IpAddr) -> bool {
        if self.deny.iter().any(|c| c.contains(ip)) {
            return false;
        }
        if self.allow.iter().any(|c| c.contains(ip)) {
            return true;
        }
        !self.default_deny.iter().any(|c| c.contains(ip))
    }

    /// Whether an operator's `deny_peer` range holds `ip` (or the IPv4 address it carries).
    /// This wins even over the server's own relayed addresses.
    pub fn operator_denies(&self, ip: IpAddr) -> bool {
        let forms = match ip {
            IpAddr::V4(_) => [Some(ip), None],
            IpAddr::V6(v6) => [
                Some(ip),
                v6.to_ipv4_mapped()
                    .or_else(|| embedded_ipv4(v6))
                    .map(IpAddr::V4),
            ],
        };
        forms
            .iter()
            .flatten()
            .any(|f| self.deny.iter().any(|c| c.contains(*f)))
    }

    /// Whether the relay may send to `ip`. An IPv6 address that carries an IPv4 address must
    /// pass as both, so `::ffff:127.0.0.1` is refused like `127.0.0.1`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(_) => self.judge_one(ip),
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    // Mapped addresses are IPv4 hosts in IPv6 clothing: judge only the IPv4.
                    return self.judge_one(IpAddr::V4(v4));
                }
                self.judge_one(ip)
                    && embedded_ipv4(v6).is_none_or(|v4| self.judge_one(IpAddr::V4(v4)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_default_range_is_refused_at_both_ends() {
        let p = PeerPolicy::default();
        for c in p.default_deny() {
            let (first, last) = c.first_last();
            assert!(!p.allows(first), "{first} in {c} must be refused");
            assert!(!p.allows(last), "{last} in {c} must be refused");
        }
        assert!(p.allows(ip("8.8.8.8")));
        assert!(p.allows(ip("2606:4700::1111")));
    }

    #[test]
    fn ipv4_inside_ipv6_is_judged_as_ipv4() {
        let p = PeerPolicy::default();
        for s in [
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(!p.allows(ip(s)), "{s} must be refused");
        }
        assert!(p.allows(ip("::ffff:8.8.8.8")));
    }

    #[test]
    fn operator_lists_take_precedence_deny_first() {
        let allow = vec!["127.0.0.0/8".parse().unwrap()];
        let deny = vec!["8.8.8.0/24".parse().unwrap(), "127.0.0.2".parse().unwrap()];
        let p = PeerPolicy::new(allow, deny);
        assert!(p.allows(ip("127.0.0.1")));
        assert!(p.allows(ip("::ffff:127.0.0.1")));
        assert!(!p.allows(ip("127.0.0.2")));
        assert!(!p.allows(ip("8.8.8.8")));
        assert!(!p.allows(ip("10.0.0.1")));
    }

    #[test]
    fn cidr_parsing_names_the_bad_value() {
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }
}
