//! The STUN decoder on arbitrary bytes: never panics, never reads outside the packet, and
//! whatever it accepts re-reads consistently (every attribute lies inside the message, a
//! decoded address re-encodes to the same bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnd_proto::wire::{attr, Message};

fuzz_target!(|data: &[u8]| {
    let header = Message::peek_header(data);
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    assert!(header.is_some(), "a parsed message has a STUN header");
    assert_eq!(data.len() % 4, 0, "STUN messages are 4-byte aligned");
    let range = data.as_ptr_range();
    let tid = msg.transaction_id();
    for a in msg.attributes() {
        let v = a.value.as_ptr_range();
        assert!(
            range.start <= v.start && v.end <= range.end,
            "attribute outside the packet"
        );
        if let Some(addr) = attr::read_xor_address(a.value, &tid) {
            let mut out = vec![0u8; attr::xor_address_len(&addr)];
            attr::write_xor_address(&mut out, &addr, &tid);
            // The first byte is reserved and ignored on reading (RFC 8489 §14.2).
            assert_eq!(&out[1..], &a.value[1..out.len()], "address round trip");
        }
        let _ = attr::read_error_code(a.value);
        let _ = attr::read_channel_number(a.value);
        let _ = attr::read_u32(a.value);
    }
    // Integrity checks with any key must not panic either.
    let _ = msg.verify_integrity(b"key");
    let _ = msg.verify_integrity_sha256(&[7u8; 32]);
});
