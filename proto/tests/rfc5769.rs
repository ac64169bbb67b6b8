//! RFC 5769 test vectors: each sample decodes, its MESSAGE-INTEGRITY and FINGERPRINT verify,
//! and our encoder reproduces it byte for byte (with the samples' 0x20 padding).

use std::net::SocketAddr;
use turnd_proto::auth::long_term_key_md5;
use turnd_proto::wire::{attr, Class, Message, MessageEncoder, Method};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const PRIORITY: u16 = 0x0024;
const ICE_CONTROLLED: u16 = 0x8029;

/// RFC 5769 §2.1, sample request (short-term credential: the key is the password).
#[test]
fn sample_request() {
    let raw = hex("0001 0058 2112a442 b7e7a701bc34d686fa87dfae
         8022 0010 5354554e 20746573 7420636c 69656e74
         0024 0004 6e0001ff
         8029 0008 932ff9b1 51263b36
         0006 0009 6576746a 3a683676 59202020
         0008 0014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
         8028 0004 e57a3bcf");
    let msg = Message::parse(&raw).expect("sample request parses");
    assert_eq!(msg.method(), Method::BINDING);
    assert_eq!(msg.class(), Class::Request);
    assert!(msg.has_fingerprint());
    assert_eq!(msg.get(attr::USERNAME), Some(&b"evtj:h6vY"[..]));
    assert_eq!(msg.get(attr::SOFTWARE), Some(&b"STUN test client"[..]));
    let key = b"VOkJxbRl1RmTxUk/WvJxBt";
    assert!(msg.verify_integrity(key));
    assert!(!msg.verify_integrity(b"wrong"));

    let mut out = Vec::new();
    let mut enc = MessageEncoder::new(
        &mut out,
        Method::BINDING,
        Class::Request,
        msg.transaction_id(),
    )
    .with_padding_byte(0x20);
    enc.attr(attr::SOFTWARE, b"STUN test client");
    enc.attr(PRIORITY, &hex("6e0001ff"));
    enc.attr(ICE_CONTROLLED, &hex("932ff9b151263b36"));
    enc.attr(attr::USERNAME, b"evtj:h6vY");
    enc.message_integrity(key);
    enc.fingerprint();
    assert_eq!(out, raw);
}

fn sample_response(raw: &[u8], mapped: &str) {
    let msg = Message::parse(raw).expect("sample response parses");
    assert_eq!(msg.class(), Class::Success);
    let mapped: SocketAddr = mapped.parse().unwrap();
    let xma = msg.get(attr::XOR_MAPPED_ADDRESS).unwrap();
    assert_eq!(
        attr::read_xor_address(xma, &msg.transaction_id()),
        Some(mapped)
    );
    let key = b"VOkJxbRl1RmTxUk/WvJxBt";
    assert!(msg.verify_integrity(key));

    let mut out = Vec::new();
    let mut enc = MessageEncoder::new(
        &mut out,
        Method::BINDING,
        Class::Success,
        msg.transaction_id(),
    )
    .with_padding_byte(0x20);
    enc.attr(attr::SOFTWARE, b"test vector");
    enc.xor_address(attr::XOR_MAPPED_ADDRESS, mapped);
    enc.message_integrity(key);
    enc.fingerprint();
    assert_eq!(out, raw);
}

/// RFC 5769 §2.2, sample IPv4 response.
#[test]
fn sample_ipv4_response() {
    let raw = hex("0101 003c 2112a442 b7e7a701bc34d686fa87dfae
         8022 000b 74657374 20766563 746f7220
         0020 0008 0001a147 e112a643
         0008 0014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
         8028 0004 c07d4c96");
    sample_response(&raw, "192.0.2.1:32853");
}

/// RFC 5769 §2.3, sample IPv6 response.
#[test]
fn sample_ipv6_response() {
    let raw = hex("0101 0048 2112a442 b7e7a701bc34d686fa87dfae
         8022 000b 74657374 20766563 746f7220
         0020 0014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
         0008 0014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
         8028 0004 c8fb0b4c");
    sample_response(&raw, "[2001:db8:1234:5678:11:2233:4455:6677]:32853");
}

/// RFC 5769 §2.4, request with long-term authentication. The password "The<U+00AD>M<U+00AA>tr<U+2168>"
/// is SASLprep'd to "TheMatrIX"; turnd only accepts ASCII passwords, for which SASLprep is
/// the identity.
#[test]
fn sample_long_term_request() {
    let raw = hex("0001 0060 2112a442 78ad3433c6ad72c029da412e
         0006 0012 e3839ee3 8388e383 aae38383 e382afe3 82b90000
         0015 001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341
         0014 000b 6578616d 706c652e 6f726700
         0008 0014 f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666");
    let msg = Message::parse(&raw).expect("sample parses");
    let username = std::str::from_utf8(msg.get(attr::USERNAME).unwrap()).unwrap();
    assert_eq!(username, "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}");
    assert_eq!(msg.get(attr::REALM), Some(&b"example.org"[..]));
    assert_eq!(
        msg.get(attr::NONCE),
        Some(&b"f//499k954d6OL34oL9FSTvy64sA"[..])
    );
    let key = long_term_key_md5(username, "example.org", "TheMatrIX");
    assert!(msg.verify_integrity(&key));
    assert!(!msg.verify_integrity(&long_term_key_md5(username, "example.org", "TheMatrix")));

    let mut out = Vec::new();
    let mut enc = MessageEncoder::new(
        &mut out,
        Method::BINDING,
        Class::Request,
        msg.transaction_id(),
    );
    enc.attr(attr::USERNAME, username.as_bytes());
    enc.attr(attr::NONCE, b"f//499k954d6OL34oL9FSTvy64sA");
    enc.attr(attr::REALM, b"example.org");
    enc.message_integrity(&key);
    enc.finish();
    assert_eq!(out, raw);
}

/// RFC 8489 §14.5: attributes after MESSAGE-INTEGRITY (other than MESSAGE-INTEGRITY-SHA256 and
/// FINGERPRINT) are ignored, so appending one cannot change what the server reads.
#[test]
fn attributes_after_message_integrity_are_ignored() {
    let mut out = Vec::new();
    let tid = turnd_proto::wire::TransactionId([1; 12]);
    let mut enc = MessageEncoder::new(&mut out, Method::ALLOCATE, Class::Request, tid);
    enc.attr(attr::USERNAME, b"alice");
    enc.message_integrity(b"key");
    enc.attr(attr::LIFETIME, &0u32.to_be_bytes());
    enc.attr(attr::USERNAME, b"mallory");
    enc.finish();
    let msg = Message::parse(&out).unwrap();
    assert_eq!(msg.get(attr::LIFETIME), None);
    assert_eq!(msg.get(attr::USERNAME), Some(&b"alice"[..]));
    assert!(msg.verify_integrity(b"key"));
}
