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
    /// The stream carried something that is neither STUN nor ChannelData.
    NotTurn,
    #[error("more bytes arrived than the connection buffer holds")]
    /// More bytes arrived than the connection buffer holds.
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

    /// Bytes held that are not yet handed out: the start of an unfinished frame, or frames
    /// not yet taken.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes of memory the buffer holds now (its allocation, not its limit).
    pub fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    /// Gives back memory no longer needed: all of it when nothing is buffered, else all but
    /// what is. The buffer grows again as bytes arrive; call this when the stream is idle.
    pub fn shrink(&mut self) {
        if self.start == self.buf.len() {
            self.buf = Vec::new();
        } else {
            self.buf.drain(..self.start);
            self.buf.shrink_to_fit();
        }
        self.start = 0;
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
    fn an_idle_buffer_gives_its_memory_back_and_keeps_an_unfinished_frame() {
        let mut b = FrameBuffer::new(0);
        let mut big = vec![0x40, 0, 0xFF, 0xFC];
        big.resize(4 + 0xFFFC, 7);
        b.push(&big).unwrap();
        b.push(&[0x40, 1, 0, 8, 1, 2]).unwrap();
        assert_eq!(b.next_frame().unwrap().map(<[u8]>::len), Some(4 + 0xFFFC));
        assert!(b.allocated() >= 0xFFFC);
        b.shrink();
        assert_eq!(b.buffered(), 6, "the unfinished frame is kept");
        assert!(b.allocated() < 64, "{}", b.allocated());
        b.push(&[3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(
            b.next_frame().unwrap(),
            Some(&[0x40, 1, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8][..])
        );
        b.shrink();
        assert_eq!((b.buffered(), b.allocated()), (0, 0));
    }

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
