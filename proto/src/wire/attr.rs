//! Attribute types and the value codecs the server needs (RFC 8489 §14, RFC 8656 §18).

use super::family::Family;
use super::message::{TransactionId, MAGIC_COOKIE};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

// Comprehension-required (0x0000..=0x7FFF).
/// MAPPED-ADDRESS (RFC 8489 §14.1).
pub const MAPPED_ADDRESS: u16 = 0x0001;
/// CHANGE-REQUEST (RFC 5780 §7.2): answer from the other IP and/or port.
pub const CHANGE_REQUEST: u16 = 0x0003;
/// SOURCE-ADDRESS (RFC 3489 §11.2.5): where an RFC 3489 response was sent from.
pub const SOURCE_ADDRESS: u16 = 0x0004;
/// CHANGED-ADDRESS (RFC 3489 §11.2.3): the RFC 3489 forerunner of OTHER-ADDRESS.
pub const CHANGED_ADDRESS: u16 = 0x0005;
/// USERNAME (RFC 8489 §14.3).
pub const USERNAME: u16 = 0x0006;
/// MESSAGE-INTEGRITY, HMAC-SHA1 (RFC 8489 §14.5).
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
/// ERROR-CODE (RFC 8489 §14.8).
pub const ERROR_CODE: u16 = 0x0009;
/// UNKNOWN-ATTRIBUTES (RFC 8489 §14.13).
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// CHANNEL-NUMBER (RFC 8656 §18).
pub const CHANNEL_NUMBER: u16 = 0x000C;
/// LIFETIME (RFC 8656 §18).
pub const LIFETIME: u16 = 0x000D;
/// XOR-PEER-ADDRESS (RFC 8656 §18).
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
/// DATA (RFC 8656 §18).
pub const DATA: u16 = 0x0013;
/// REALM (RFC 8489 §14.9).
pub const REALM: u16 = 0x0014;
/// NONCE (RFC 8489 §14.10).
pub const NONCE: u16 = 0x0015;
/// XOR-RELAYED-ADDRESS (RFC 8656 §18).
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
/// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18).
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
/// EVEN-PORT (RFC 8656 §18).
pub const EVEN_PORT: u16 = 0x0018;
/// REQUESTED-TRANSPORT (RFC 8656 §18).
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
/// DONT-FRAGMENT (RFC 8656 §18).
pub const DONT_FRAGMENT: u16 = 0x001A;
/// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6).
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
/// PASSWORD-ALGORITHM (RFC 8489 §14.12).
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
/// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// RESERVATION-TOKEN (RFC 8656 §18).
pub const RESERVATION_TOKEN: u16 = 0x0022;
/// PADDING (RFC 5780 §7.6): pads a Binding request and its response.
pub const PADDING: u16 = 0x0026;
/// RESPONSE-PORT (RFC 5780 §7.5): send the response to this port of the client's address.
pub const RESPONSE_PORT: u16 = 0x0027;

// Comprehension-optional (0x8000..=0xFFFF).
/// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18).
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
/// ADDRESS-ERROR-CODE (RFC 8656 §18).
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
/// SOFTWARE (RFC 8489 §14.14).
pub const SOFTWARE: u16 = 0x8022;
/// FINGERPRINT (RFC 8489 §14.7).
pub const FINGERPRINT: u16 = 0x8028;
/// RESPONSE-ORIGIN (RFC 5780 §7.3): the address a Binding response was sent from.
pub const RESPONSE_ORIGIN: u16 = 0x802B;
/// OTHER-ADDRESS (RFC 5780 §7.4): the server's address with the other IP and the other port.
pub const OTHER_ADDRESS: u16 = 0x802C;

/// CHANGE-REQUEST's "change IP" flag (RFC 5780 §7.2).
pub const CHANGE_IP: u8 = 0x04;
/// CHANGE-REQUEST's "change port" flag (RFC 5780 §7.2).
pub const CHANGE_PORT: u8 = 0x02;

/// EVEN-PORT's R bit: reserve the next port too (RFC 8656 §18.3).
pub const EVEN_PORT_RESERVE: u8 = 0x80;

/// IANA protocol number for UDP in REQUESTED-TRANSPORT (RFC 8656 §18.6).
pub const TRANSPORT_UDP: u8 = 17;
/// Address family codes in address attributes and REQUESTED-ADDRESS-FAMILY: IPv4.
pub const FAMILY_IPV4: u8 = 0x01;
/// The address family code of IPv6.
pub const FAMILY_IPV6: u8 = 0x02;

/// An attribute type as it appears in a message (RFC 8489 §14). The constants above are its
/// IANA numbers; an `AttrType` compares equal to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrType(pub u16);

impl AttrType {
    /// RFC 8489 §14: types 0x0000-0x7FFF are comprehension-required, 0x8000-0xFFFF optional.
    pub fn is_comprehension_required(self) -> bool {
        self.0 < 0x8000
    }

    /// Whether this server understands the type. Anything comprehension-required it does not
    /// understand draws 420 Unknown Attribute (RFC 8489 §6.3.1). USERHASH and CHANGE-REQUEST
    /// are deliberately absent: we do not implement them, and 420 tells the client so.
    pub fn is_understood(self) -> bool {
        !self.is_comprehension_required()
            || matches!(
                self.0,
                MAPPED_ADDRESS
                    | USERNAME
                    | MESSAGE_INTEGRITY
                    | ERROR_CODE
                    | UNKNOWN_ATTRIBUTES
                    | CHANNEL_NUMBER
                    | LIFETIME
                    | XOR_PEER_ADDRESS
                    | DATA
                    | REALM
                    | NONCE
                    | XOR_RELAYED_ADDRESS
                    | REQUESTED_ADDRESS_FAMILY
                    | EVEN_PORT
                    | REQUESTED_TRANSPORT
                    | DONT_FRAGMENT
                    | MESSAGE_INTEGRITY_SHA256
                    | PASSWORD_ALGORITHM
                    | XOR_MAPPED_ADDRESS
                    | RESERVATION_TOKEN
            )
    }
}

impl PartialEq<u16> for AttrType {
    fn eq(&self, other: &u16) -> bool {
        self.0 == *other
    }
}

/// Length of an XOR-*-ADDRESS value for this address.
pub fn xor_address_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

/// Writes an XOR-*-ADDRESS value (RFC 8489 §14.2) into `out`, which must be exactly
/// [`xor_address_len`] bytes.
pub fn write_xor_address(out: &mut [u8], addr: &SocketAddr, tid: &TransactionId) {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    out[0] = 0;
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = FAMILY_IPV4;
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = b ^ cookie[i];
            }
        }
        IpAddr::V6(ip) => {
            out[1] = FAMILY_IPV6;
            let octets = ip.octets();
            for i in 0..16 {
                let mask = if i < 4 { cookie[i] } else { tid.0[i - 4] };
                out[4 + i] = octets[i] ^ mask;
            }
        }
    }
}

/// Reads an XOR-*-ADDRESS value; None if the family or length is wrong.
pub fn read_xor_address(value: &[u8], tid: &TransactionId) -> Option<SocketAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    if value.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    match (value[1], value.len()) {
        (FAMILY_IPV4, 8) => {
            let mut o = [0u8; 4];
            for i in 0..4 {
                o[i] = value[4 + i] ^ cookie[i];
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), port))
        }
        (FAMILY_IPV6, 20) => {
            let mut o = [0u8; 16];
            for i in 0..16 {
                let mask = if i < 4 { cookie[i] } else { tid.0[i - 4] };
                o[i] = value[4 + i] ^ mask;
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => None,
    }
}

/// Length of a (non-XOR) address value (MAPPED-ADDRESS, OTHER-ADDRESS, RESPONSE-ORIGIN).
pub fn address_len(addr: &SocketAddr) -> usize {
    xor_address_len(addr)
}

/// Writes a plain address value (RFC 8489 §14.1; RFC 5780 §7.1 uses it for OTHER-ADDRESS and
/// RESPONSE-ORIGIN) into `out`, which must be exactly [`address_len`] bytes.
pub fn write_address(out: &mut [u8], addr: &SocketAddr) {
    out[0] = 0;
    out[2..4].copy_from_slice(&addr.port().to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = FAMILY_IPV4;
            out[4..8].copy_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out[1] = FAMILY_IPV6;
            out[4..20].copy_from_slice(&ip.octets());
        }
    }
}

/// Reads a plain address value; None if the family or length is wrong.
pub fn read_address(value: &[u8]) -> Option<SocketAddr> {
    if value.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([value[2], value[3]]);
    match (value[1], value.len()) {
        (FAMILY_IPV4, 8) => {
            let o: [u8; 4] = value[4..8].try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), port))
        }
        (FAMILY_IPV6, 20) => {
            let o: [u8; 16] = value[4..20].try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => None,
    }
}

/// Reads a 32-bit attribute value (LIFETIME).
pub fn read_u32(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.try_into().ok()?))
}

/// Reads CHANNEL-NUMBER: the number, then two RFFU bytes (RFC 8656 §18.1).
pub fn read_channel_number(value: &[u8]) -> Option<u16> {
    if value.len() != 4 {
        return None;
    }
    Some(u16::from_be_bytes([value[0], value[1]]))
}

/// Reads ERROR-CODE into (code, reason); used by tests and clients.
pub fn read_error_code(value: &[u8]) -> Option<(u16, &str)> {
    if value.len() < 4 {
        return None;
    }
    let code = (value[2] & 0x07) as u16 * 100 + value[3] as u16;
    Some((code, std::str::from_utf8(&value[4..]).ok()?))
}

/// Reads a family attribute (REQUESTED-ADDRESS-FAMILY, ADDITIONAL-ADDRESS-FAMILY): the family
/// octet then three RFFU bytes (RFC 8656 §18.8, §18.11). None if the length is wrong or the
/// family is neither IPv4 nor IPv6.
pub fn read_family(value: &[u8]) -> Option<Family> {
    if value.len() != 4 {
        return None;
    }
    Family::from_code(value[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_types_know_their_comprehension_range() {
        assert!(AttrType(USERNAME).is_understood());
        assert!(
            !AttrType(0x0099).is_understood(),
            "unknown and comprehension-required"
        );
        assert!(
            AttrType(0x8099).is_understood(),
            "comprehension-optional is never 420"
        );
        assert!(!AttrType(0x8099).is_comprehension_required());
        assert_eq!(AttrType(LIFETIME), LIFETIME);
    }

    #[test]
    fn xor_address_round_trips_v4_and_v6() {
        let tid = TransactionId([7; 12]);
        for addr in [
            "192.0.2.1:32853".parse::<SocketAddr>().unwrap(),
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap(),
        ] {
            let mut buf = vec![0u8; xor_address_len(&addr)];
            write_xor_address(&mut buf, &addr, &tid);
            assert_eq!(read_xor_address(&buf, &tid), Some(addr));
        }
        assert_eq!(read_xor_address(&[0, 1, 0, 0, 0, 0], &tid), None);
        assert_eq!(read_xor_address(&[0, 3, 0, 0, 0, 0, 0, 0], &tid), None);
    }

    #[test]
    fn plain_address_round_trips_v4_and_v6() {
        for addr in [
            "192.0.2.1:3479".parse::<SocketAddr>().unwrap(),
            "[2001:db8::7]:3479".parse().unwrap(),
        ] {
            let mut buf = vec![0u8; address_len(&addr)];
            write_address(&mut buf, &addr);
            assert_eq!(buf[2..4], 3479u16.to_be_bytes());
            assert_eq!(read_address(&buf), Some(addr));
        }
        assert_eq!(read_address(&[0, 1, 0, 0, 0, 0]), None);
    }
}
