//! Wire formats: the bytes a TURN server reads and writes.
//!
//! Every packet that reaches a TURN listener is one of two things, told apart by its first byte
//! (RFC 8656 §12.5, RFC 7983): a STUN message (top two bits `00`) or a ChannelData message
//! (first byte 0x40..=0x4F). Anything else is dropped without a reply.

pub mod attr;
pub mod channel_data;
pub mod encode;
pub mod family;
pub mod framing;
pub mod message;

pub use attr::AttrType;
pub use channel_data::ChannelNumber;
pub use encode::MessageEncoder;
pub use family::{Family, PerFamily};
pub use message::{Class, DecodeError, Message, Method, TransactionId, HEADER_LEN, MAGIC_COOKIE};

/// What the first byte of a packet says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// A STUN message (Binding or a TURN method).
    Stun,
    /// A ChannelData message (channel numbers 0x4000..=0x7FFF; whether a number can be bound
    /// is the server's decision).
    ChannelData,
    /// Neither: dropped silently.
    Other,
}

/// Classifies a packet by its first byte, without reading any further.
#[inline]
pub fn classify(packet: &[u8]) -> PacketKind {
    match packet.first() {
        Some(b) if b & 0xC0 == 0 => PacketKind::Stun,
        Some(0x40..=0x7F) => PacketKind::ChannelData,
        _ => PacketKind::Other,
    }
}

/// Rounds `n` up to the next multiple of four: STUN attributes and ChannelData on streams are
/// padded to 32-bit boundaries.
#[inline]
pub const fn padded(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_byte_demux() {
        assert_eq!(classify(&[0x00, 0x01]), PacketKind::Stun);
        assert_eq!(classify(&[0x01, 0x01]), PacketKind::Stun);
        assert_eq!(classify(&[0x40, 0x00]), PacketKind::ChannelData);
        assert_eq!(classify(&[0x4F, 0xFF]), PacketKind::ChannelData);
        assert_eq!(classify(&[0x7F, 0xFF]), PacketKind::ChannelData);
        assert_eq!(classify(&[0x80]), PacketKind::Other);
        assert_eq!(classify(&[]), PacketKind::Other);
    }
}
