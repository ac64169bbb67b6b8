//! A zero-copy view of one STUN message (RFC 8489 §5, §14).
//!
//! [`Message::parse`] checks the header and walks the attributes once, recording where
//! MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT sit. Lookups afterwards borrow
//! from the packet; nothing is copied.

use super::attr;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The fixed value in bytes 4..8 of every RFC 5389/8489 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the STUN header.
pub const HEADER_LEN: usize = 20;
/// XOR'd into the CRC-32 to form FINGERPRINT (RFC 8489 §14.7).
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// The 96-bit transaction id (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(pub [u8; 12]);

/// The class bits of the message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// A STUN method. TURN's methods are in RFC 8656 §17.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(pub u16);

impl Method {
    pub const BINDING: Method = Method(0x001);
    pub const ALLOCATE: Method = Method(0x003);
    pub const REFRESH: Method = Method(0x004);
    pub const SEND: Method = Method(0x006);
    pub const DATA: Method = Method(0x007);
    pub const CREATE_PERMISSION: Method = Method(0x008);
    pub const CHANNEL_BIND: Method = Method(0x009);
}

/// Packs method and class into the 14-bit message type (RFC 8489 §5, figure 3).
pub fn message_type(method: Method, class: Class) -> u16 {
    let m = method.0 & 0x0FFF;
    let c: u16 = match class {
        Class::Request => 0b00,
        Class::Indication => 0b01,
        Class::Success => 0b10,
        Class::Error => 0b11,
    };
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

fn split_type(t: u16) -> (Method, Class) {
    let m = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let class = match ((t >> 4) & 1) | ((t >> 7) & 2) {
        0b00 => Class::Request,
        0b01 => Class::Indication,
        0b10 => Class::Success,
        _ => Class::Error,
    };
    (Method(m), class)
}

/// Why a packet is not a well-formed STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Too short for a header, top bits set, or the magic cookie is wrong: not STUN at all,
    /// so it is dropped without a reply.
    #[error("not a STUN message")]
    NotStun,
    /// The header is STUN but the body is not: the length field disagrees with the packet,
    /// an attribute overruns the message, or something follows FINGERPRINT.
    #[error("malformed STUN message")]
    Malformed,
    /// FINGERPRINT is present and wrong (RFC 8489 §7.3: such a message is discarded).
    #[error("FINGERPRINT mismatch")]
    BadFingerprint,
}

/// One attribute as it appears on the wire.
#[derive(Debug, Clone, Copy)]
pub struct RawAttribute<'a> {
    pub typ: super::attr::AttrType,
    pub value: &'a [u8],
}

/// A parsed STUN message borrowing the packet it came from.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    raw: &'a [u8],
    method: Method,
    class: Class,
    transaction_id: TransactionId,
    /// End of the attributes an agent may look at: RFC 8489 §14.5 says attributes after
    /// MESSAGE-INTEGRITY are ignored, except MESSAGE-INTEGRITY-SHA256 and FINGERPRINT.
    visible_end: usize,
    integrity: Option<usize>,
    integrity_sha256: Option<usize>,
    fingerprint: bool,
}

impl<'a> Message<'a> {
    /// Reads the header of `packet` just far enough to know whether a malformed body may be
    /// answered: the method, class and transaction id (None if the header is not STUN).
    pub fn peek_header(packet: &[u8]) -> Option<(Method, Class, TransactionId)> {
        if packet.len() < HEADER_LEN || packet[0] & 0xC0 != 0 {
            return None;
        }
        if u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]) != MAGIC_COOKIE {
            return None;
        }
        let (method, class) = split_type(u16::from_be_bytes([packet[0], packet[1]]));
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&packet[8..20]);
        Some((method, class, TransactionId(tid)))
    }

    /// Parses one whole STUN message. The packet must hold exactly the message (a datagram,
    /// or a frame cut out by [`super::framing`]); trailing bytes are malformed.
    pub fn parse(packet: &'a [u8]) -> Result<Self, DecodeError> {
        let (method, class, transaction_id) =
            Self::peek_header(packet).ok_or(DecodeError::NotStun)?;
        let body_len = u16::from_be_bytes([packet[2], packet[3]]) as usize;
        if !body_len.is_multiple_of(4) || HEADER_LEN + body_len != packet.len() {
            return Err(DecodeError::Malformed);
        }
        let mut msg = Message {
            raw: packet,
            method,
            class,
            transaction_id,
            visible_end: packet.len(),
            integrity: None,
            integrity_sha256: None,
            fingerprint: false,
        };
        let mut at = HEADER_LEN;
        let mut after_integrity = false;
        while at < packet.len() {
            if packet.len() - at < 4 {
                return Err(DecodeError::Malformed);
            }
            let typ = u16::from_be_bytes([packet[at], packet[at + 1]]);
            let len = u16::from_be_bytes([packet[at + 2], packet[at + 3]]) as usize;
            let next = at + 4 + super::padded(len);
            if next > packet.len() {
                return Err(DecodeError::Malformed);
            }
            if msg.fingerprint {
                // RFC 8489 §14.7: FINGERPRINT is the last attribute.
                return Err(DecodeError::Malformed);
            }
            match typ {
                attr::MESSAGE_INTEGRITY if !after_integrity => {
                    if len != 20 {
                        return Err(DecodeError::Malformed);
                    }
                    msg.integrity = Some(at);
                    msg.visible_end = at;
                    after_integrity = true;
                }
                attr::MESSAGE_INTEGRITY_SHA256 if msg.integrity_sha256.is_none() => {
                    // RFC 8489 §14.6: 16 to 32 bytes, a multiple of 4.
                    if !(16..=32).contains(&len) || !len.is_multiple_of(4) {
                        return Err(DecodeError::Malformed);
                    }
                    msg.integrity_sha256 = Some(at);
                    if !after_integrity {
                        msg.visible_end = at;
                    }
                    after_integrity = true;
                }
                attr::FINGERPRINT => {
                    if len != 4 {
                        return Err(DecodeError::Malformed);
                    }
                    let want = u32::from_be_bytes([
                        packet[at + 4],
                        packet[at + 5],
                        packet[at + 6],
                        packet[at + 7],
                    ]);
                    if fingerprint_of(packet, at) != want {
                        return Err(DecodeError::BadFingerprint);
                    }
                    msg.fingerprint = true;
                    if !after_integrity {
                        msg.visible_end = at;
                    }
                }
                _ => {}
            }
            at = next;
        }
        Ok(msg)
    }

    pub fn method(&self) -> Method {
        self.method
    }
    pub fn class(&self) -> Class {
        self.class
    }
    pub fn transaction_id(&self) -> TransactionId {
        self.transaction_id
    }
    /// The whole message as received.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
    /// Whether the message carried a (valid) FINGERPRINT; responses then carry one too.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint
    }
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some() || self.integrity_sha256.is_some()
    }
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256.is_some()
    }

    /// The attributes an agent may act on, in order: everything before MESSAGE-INTEGRITY
    /// (integrity and fingerprint attributes themselves are not listed).
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            raw: &self.raw[..self.visible_end],
            at: HEADER_LEN,
        }
    }

    /// The value of the first visible attribute of type `typ`.
    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        self.attributes().find(|a| a.typ == typ).map(|a| a.value)
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5) with `key`, in constant time.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity else {
            return false;
        };
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        feed_adjusted(&mut mac, self.raw, at, 20);
        let got = &self.raw[at + 4..at + 24];
        bool::from(mac.finalize().into_bytes().as_slice().ct_eq(got))
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, possibly truncated, RFC 8489 §14.6).
    pub fn verify_integrity_sha256(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_sha256 else {
            return false;
        };
        let len = u16::from_be_bytes([self.raw[at + 2], self.raw[at + 3]]) as usize;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        feed_adjusted(&mut mac, self.raw, at, len);
        let got = &self.raw[at + 4..at + 4 + len];
        bool::from(mac.finalize().into_bytes()[..len].ct_eq(got))
    }
}

/// Feeds an HMAC the message up to the attribute at `at`, with the header's length field
/// rewritten as if that attribute (with `value_len` bytes) were the last one (RFC 8489 §14.5).
fn feed_adjusted<M: Mac>(mac: &mut M, raw: &[u8], at: usize, value_len: usize) {
    let adjusted = (at + 4 + value_len - HEADER_LEN) as u16;
    mac.update(&raw[..2]);
    mac.update(&adjusted.to_be_bytes());
    mac.update(&raw[4..at]);
}

/// CRC-32 of the message up to the FINGERPRINT attribute at `at`, with the length field
/// covering FINGERPRINT, XOR'd with 0x5354554E (RFC 8489 §14.7).
pub(crate) fn fingerprint_of(raw: &[u8], at: usize) -> u32 {
    let adjusted = (at + 8 - HEADER_LEN) as u16;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&raw[..2]);
    crc.update(&adjusted.to_be_bytes());
    crc.update(&raw[4..at]);
    crc.finalize() ^ FINGERPRINT_XOR
}

/// Iterator over the visible attributes of a [`Message`].
pub struct Attributes<'a> {
    raw: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = RawAttribute<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        // Bounds were checked by `Message::parse`; `get` keeps this panic-free regardless.
        let head = self.raw.get(self.at..self.at + 4)?;
        let typ = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        let value = self.raw.get(self.at + 4..self.at + 4 + len)?;
        self.at += 4 + super::padded(len);
        Some(RawAttribute {
            typ: super::attr::AttrType(typ),
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_round_trips_every_method_and_class() {
        for m in 0..0x1000u16 {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let t = message_type(Method(m), c);
                assert_eq!(t & 0xC000, 0);
                assert_eq!(split_type(t), (Method(m), c));
            }
        }
        // RFC 8489 §5: a Binding request is 0x0001, a success response 0x0101.
        assert_eq!(message_type(Method::BINDING, Class::Request), 0x0001);
        assert_eq!(message_type(Method::BINDING, Class::Success), 0x0101);
        assert_eq!(message_type(Method::ALLOCATE, Class::Error), 0x0113);
        assert_eq!(message_type(Method::DATA, Class::Indication), 0x0017);
    }

    #[test]
    fn truncated_and_overlong_bodies_are_malformed() {
        let mut m = vec![0u8, 1, 0, 8, 0x21, 0x12, 0xA4, 0x42];
        m.extend_from_slice(&[0; 12]);
        m.extend_from_slice(&[0x80, 0x22, 0, 8, 1, 2, 3, 4]); // attribute claims 8, carries 4
        assert_eq!(Message::parse(&m).unwrap_err(), DecodeError::Malformed);
        m[3] = 12; // header claims more than the packet holds
        assert_eq!(Message::parse(&m).unwrap_err(), DecodeError::Malformed);
    }

    #[test]
    fn wrong_cookie_is_not_stun() {
        let mut m = vec![0u8, 1, 0, 0, 0x21, 0x12, 0xA4, 0x43];
        m.extend_from_slice(&[0; 12]);
        assert_eq!(Message::parse(&m).unwrap_err(), DecodeError::NotStun);
    }
}
