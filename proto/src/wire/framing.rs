//! Cutting a TCP or TLS byte stream into STUN and ChannelData frames (RFC 8656 §12.5).
//!
//! A stream carries no datagram boundaries: the sender's writes may arrive split or
//! coalesced. The first byte tells the frame kind, the length field its size: a STUN message is
//! 20 + length bytes; ChannelData is 4 + length bytes, padded to a multiple of 4 on streams.

use super::{classify, padded, PacketKind};

/// The largest frame a stream may carry: a ChannelData or STUN message of 64 KiB.
pub const MAX_FRAME: usize = 4 + 0xFFFF + 3;

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A complete frame of this many bytes (ChannelData padding included).
    Complete(usize),
    /// Not enough bytes yet to know, or to hold, the whole frame.
    Incomplete,
    /// The stream is not TURN: the connection is closed.
    Invalid,
}

/// Inspects the front of `buf`.
pub fn next_frame(buf: &[u8]) -> Frame {
    if buf.len() < 4 {
        return if buf.is_empty() || classify(buf) != PacketKind::Other {
            Frame::Incomplete
        } else {
            Frame::Invalid
        };
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let total = match classify(buf) {
        PacketKind::Stun => super::HEADER_LEN + len,
        PacketKind::ChannelData => padded(4 + len),
        PacketKind::Other => return Frame::Invalid,
    };
    if buf.len() >= total {
        Frame::Complete(total)
    } else {
        Frame::Incomplete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_on_streams_includes_padding() {
        assert_eq!(
            next_frame(&[0x40, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0]),
            Frame::Complete(12)
        );
        assert_eq!(
            next_frame(&[0x40, 0, 0, 5, 1, 2, 3, 4, 5]),
            Frame::Incomplete
        );
        assert_eq!(next_frame(&[0xFF, 0, 0, 5]), Frame::Invalid);
    }
}
