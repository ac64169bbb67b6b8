//! The TCP/TLS stream framer on arbitrary bytes arriving in arbitrary pieces: the frames that
//! come out are exactly the frames `next_frame` sees in the concatenated stream, in order,
//! however the stream was split (as the shell reads it: at most `room()` bytes at a time); the
//! buffer never holds more than its capacity and never gets stuck.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnd_proto::wire::framing::{next_frame, Frame, FrameBuffer, MAX_FRAME};

// Input: two bytes that seed the piece sizes, then the stream (so real captured streams can
// seed the corpus as they are).
fuzz_target!(|input: &[u8]| {
    if input.len() < 2 {
        return;
    }
    let (seed, stream) = input.split_at(2);
    let mut state = u32::from(u16::from_be_bytes([seed[0], seed[1]])) | 1;
    let cuts = std::iter::from_fn(move || {
        // xorshift32: a different split of the same stream for every seed.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        Some(state as u16)
    });
    // The reference: frames of the whole stream at once.
    let mut expected = Vec::new();
    let mut at = 0;
    let mut reference_error = false;
    loop {
        match next_frame(&stream[at..]) {
            Frame::Complete(n) => {
                expected.push(&stream[at..at + n]);
                at += n;
            }
            Frame::Incomplete => break,
            Frame::Invalid => {
                reference_error = true;
                break;
            }
        }
    }
    // The same bytes in pieces.
    let mut fb = FrameBuffer::new(0);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut error = false;
    let mut rest = &stream[..];
    let mut cuts = cuts;
    'feed: while !rest.is_empty() {
        // The shell reads at most `room()` bytes at a time (relay/stream.rs); a buffer with
        // no room and no complete frame would be stuck, which must never happen.
        let room = fb.room();
        assert!(room > 0, "the buffer filled up without a complete frame");
        let n = (cuts.next().unwrap_or(u16::MAX) as usize % 2048 + 1)
            .min(rest.len())
            .min(room);
        fb.push(&rest[..n]).expect("a push within room() succeeds");
        assert!(fb.room() <= MAX_FRAME);
        rest = &rest[n..];
        loop {
            match fb.next_frame() {
                Ok(Some(f)) => got.push(f.to_vec()),
                Ok(None) => break,
                Err(_) => {
                    error = true;
                    break 'feed;
                }
            }
        }
    }
    assert!(got.len() <= expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(&g[..], *e);
    }
    if !error {
        assert_eq!(got.len(), expected.len(), "every complete frame came out");
    } else {
        assert!(
            reference_error || got.len() == expected.len(),
            "an error only where the stream is bad"
        );
    }
});
