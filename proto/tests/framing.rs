//! Property: any chunking of a byte stream of STUN and ChannelData frames yields the same
//! frames, in order (RFC 8656 §12.5: TCP may split or coalesce writes arbitrarily).

use proptest::prelude::*;
use turnd_proto::client::{self, Attr};
use turnd_proto::wire::framing::{FrameBuffer, StreamError, MAX_FRAME};
use turnd_proto::wire::{Method, TransactionId};

/// A frame: a STUN request with a DATA attribute of `len` bytes, or padded ChannelData.
fn frame(stun: bool, len: usize, seed: u8) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_add(seed)).collect();
    if stun {
        client::request(
            Method::BINDING,
            TransactionId([seed; 12]),
            &[Attr::Data(data)],
            None,
            seed.is_multiple_of(2),
        )
    } else {
        client::channel_data(0x4000 + u16::from(seed), &data, true)
    }
}

proptest! {
    #[test]
    fn any_chunking_yields_the_same_frames(
        frames in prop::collection::vec((any::<bool>(), 0usize..1500, any::<u8>()), 1..20),
        cuts in prop::collection::vec(1usize..700, 1..50),
    ) {
        let frames: Vec<Vec<u8>> = frames.into_iter().map(|(s, l, seed)| frame(s, l, seed)).collect();
        let stream: Vec<u8> = frames.concat();
        let mut fb = FrameBuffer::new(MAX_FRAME);
        let mut got = Vec::new();
        let mut at = 0;
        let mut cut = cuts.iter().cycle();
        while at < stream.len() {
            let end = (at + cut.next().unwrap()).min(stream.len());
            fb.push(&stream[at..end]).unwrap();
            at = end;
            while let Some(f) = fb.next_frame().unwrap() {
                got.push(f.to_vec());
            }
        }
        prop_assert_eq!(got, frames);
    }
}

#[test]
fn garbage_and_overflow_are_errors() {
    let mut fb = FrameBuffer::new(MAX_FRAME);
    fb.push(&[0xFF, 0, 0, 0]).unwrap();
    assert_eq!(fb.next_frame(), Err(StreamError::NotTurn));
    let mut fb = FrameBuffer::new(MAX_FRAME);
    assert_eq!(
        fb.push(&vec![0x40; MAX_FRAME + 1]),
        Err(StreamError::Overflow)
    );
}
