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

/// Reassembles frames from a byte stream, in a buffer that never grows past its capacity:
/// bytes go in as they arrive, whole frames come out. A stream that is not TURN, or whose next
/// frame cannot fit, is an error, and the connection is closed.
#[derive(Debug)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    /// Start of the unread bytes.
    start: usize,
    capacity: usize,
}

/// Why a stream was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("the stream carries something that is neither STUN nor ChannelData")]
    NotTurn,
    #[error("more bytes arrived than the connection buffer holds")]
    Overflow,
}

impl FrameBuffer {
    /// A buffer for at most `capacity` unread bytes (at least one maximal frame).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(MAX_FRAME);
        FrameBuffer {
            buf: Vec::new(),
            start: 0,
            capacity,
        }
    }

    /// Room left for new bytes.
    pub fn room(&self) -> usize {
        self.capacity - (self.buf.len() - self.start)
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        if bytes.len() > self.room() {
            return Err(StreamError::Overflow);
        }
        // Frames handed out earlier are done with: drop them before appending.
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 0 && self.buf.len() + bytes.len() > self.capacity {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next whole frame, if one has arrived. It stays valid until the next `push`.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, StreamError> {
        match next_frame(&self.buf[self.start..]) {
            Frame::Complete(n) => {
                let at = self.start;
                self.start += n;
                Ok(Some(&self.buf[at..at + n]))
            }
            Frame::Incomplete => Ok(None),
            Frame::Invalid => Err(StreamError::NotTurn),
        }
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
