//! What a worker's poll tokens stand for. mio hands back a bare `usize` with each readiness
//! event; [`Source`] is the one place that says which socket it names, so the worker matches
//! on names, not on numeric ranges.
//!
//! Encoding: the kind of socket in the low [`KIND_BITS`] bits, its index above them. Every
//! index has its own token (no range of one kind can grow into the next, as fixed bases
//! could once connections passed a base's width), and decoding is a mask and a shift: the
//! per-packet path pays nothing for the names.

use mio::Token;
use turnd_proto::RelayId;

/// The socket (or waker) a readiness event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The waker: shutdown or a configuration reload.
    Wake,
    /// UDP listener `i` (index into the worker's `listeners`).
    UdpListener(usize),
    /// TCP/TLS listener `i` (index into `stream_listeners`).
    StreamListener(usize),
    /// Client connection `i` (index into `conns`).
    Conn(usize),
    /// A relay socket (index into `relays`).
    Relay(RelayId),
}

const KIND_BITS: u32 = 3;
const KIND_MASK: usize = (1 << KIND_BITS) - 1;
const WAKE: usize = 0;
const UDP_LISTENER: usize = 1;
const STREAM_LISTENER: usize = 2;
const CONN: usize = 3;
const RELAY: usize = 4;

impl Source {
    /// The token to register this socket with.
    pub fn token(self) -> Token {
        let (kind, index) = match self {
            Source::Wake => (WAKE, 0),
            Source::UdpListener(i) => (UDP_LISTENER, i),
            Source::StreamListener(i) => (STREAM_LISTENER, i),
            Source::Conn(i) => (CONN, i),
            Source::Relay(r) => (RELAY, r.0 as usize),
        };
        // Indices are positions in vectors a worker holds, far below usize::MAX >> KIND_BITS.
        debug_assert!(index <= usize::MAX >> KIND_BITS, "index {index} too large");
        Token(index << KIND_BITS | kind)
    }

    /// The socket a token names; None for a token no [`Source::token`] made.
    #[inline]
    pub fn of(token: Token) -> Option<Source> {
        let index = token.0 >> KIND_BITS;
        Some(match token.0 & KIND_MASK {
            WAKE if index == 0 => Source::Wake,
            UDP_LISTENER => Source::UdpListener(index),
            STREAM_LISTENER => Source::StreamListener(index),
            CONN => Source::Conn(index),
            RELAY => Source::Relay(RelayId(u32::try_from(index).ok()?)),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind, at the smallest and the largest index it can have, decodes to itself.
    #[test]
    fn every_source_round_trips() {
        let big = usize::MAX >> KIND_BITS;
        let sources = [
            Source::Wake,
            Source::UdpListener(0),
            Source::UdpListener(big),
            Source::StreamListener(0),
            Source::StreamListener(big),
            Source::Conn(0),
            Source::Conn(1 << 20),
            Source::Conn(big),
            Source::Relay(RelayId(0)),
            Source::Relay(RelayId(u32::MAX)),
        ];
        for s in sources {
            assert_eq!(Source::of(s.token()), Some(s), "{s:?} as {:?}", s.token());
        }
    }

    /// No two sources share a token, whatever their indices (with fixed bases, connection
    /// 1,572,864 would have had relay 0's token).
    #[test]
    fn tokens_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            for s in [
                Source::UdpListener(i),
                Source::StreamListener(i),
                Source::Conn(i),
                Source::Relay(RelayId(i as u32)),
            ] {
                assert!(seen.insert(s.token()), "{s:?} shares {:?}", s.token());
            }
        }
        assert!(seen.insert(Source::Wake.token()));
    }

    /// Tokens no source makes decode to nothing, so the worker ignores them.
    #[test]
    fn unknown_tokens_decode_to_none() {
        for kind in RELAY + 1..=KIND_MASK {
            assert_eq!(Source::of(Token(5 << KIND_BITS | kind)), None);
        }
        assert_eq!(Source::of(Token(1 << KIND_BITS | WAKE)), None);
        assert_eq!(Source::of(Token(usize::MAX)), None);
        let beyond_u32 = (u32::MAX as usize + 1) << KIND_BITS | RELAY;
        assert_eq!(Source::of(Token(beyond_u32)), None);
    }
}
