//! Writing STUN messages (RFC 8489 §5, §14).
//!
//! [`MessageEncoder`] appends one message to a caller's `Vec<u8>`: header first, then
//! attributes, then the integrity and fingerprint attributes, each of which covers everything
//! written before it. Padding bytes are zero, so no response can leak memory through them.

use super::attr;
use super::message::{fingerprint_of, message_type, Class, Method, TransactionId, HEADER_LEN};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use std::net::SocketAddr;

/// Appends one STUN message to a buffer.
pub struct MessageEncoder<'b> {
    buf: &'b mut Vec<u8>,
    start: usize,
    tid: TransactionId,
    padding: u8,
}

impl<'b> MessageEncoder<'b> {
    /// Starts a message at the end of `buf`.
    pub fn new(buf: &'b mut Vec<u8>, method: Method, class: Class, tid: TransactionId) -> Self {
        let start = buf.len();
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&super::MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid.0);
        MessageEncoder {
            buf,
            start,
            tid,
            padding: 0,
        }
    }

    /// Uses `byte` for padding instead of zero. Only for reproducing the RFC 5769 samples,
    /// which pad with 0x20; the server always pads with zeros.
    pub fn with_padding_byte(mut self, byte: u8) -> Self {
        self.padding = byte;
        self
    }

    fn set_length(&mut self) {
        let len = (self.buf.len() - self.start - HEADER_LEN) as u16;
        self.buf[self.start + 2..self.start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends an attribute with `len` value bytes written by `fill`, plus padding.
    pub fn attr_with(&mut self, typ: u16, len: usize, fill: impl FnOnce(&mut [u8])) {
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf.extend_from_slice(&(len as u16).to_be_bytes());
        let at = self.buf.len();
        self.buf.resize(at + len, 0);
        fill(&mut self.buf[at..at + len]);
        let pad = super::padded(len) - len;
        self.buf.extend(std::iter::repeat_n(self.padding, pad));
        self.set_length();
    }

    /// Appends an attribute with the given value.
    pub fn attr(&mut self, typ: u16, value: &[u8]) {
        self.attr_with(typ, value.len(), |out| out.copy_from_slice(value));
    }

    /// Appends a 32-bit attribute (LIFETIME).
    pub fn u32_attr(&mut self, typ: u16, v: u32) {
        self.attr(typ, &v.to_be_bytes());
    }

    /// Appends an XOR-*-ADDRESS attribute.
    pub fn xor_address(&mut self, typ: u16, addr: SocketAddr) {
        let tid = self.tid;
        self.attr_with(typ, attr::xor_address_len(&addr), |out| {
            attr::write_xor_address(out, &addr, &tid)
        });
    }

    /// Appends a plain address attribute (MAPPED-ADDRESS, OTHER-ADDRESS, RESPONSE-ORIGIN).
    pub fn address(&mut self, typ: u16, addr: SocketAddr) {
        self.attr_with(typ, attr::address_len(&addr), |out| {
            attr::write_address(out, &addr)
        });
    }

    /// Appends ERROR-CODE (RFC 8489 §14.8), or ADDRESS-ERROR-CODE with `family` set.
    pub fn error_code(&mut self, typ: u16, family: u8, code: u16, reason: &str) {
        self.attr_with(typ, 4 + reason.len(), |out| {
            out[0] = family;
            out[1] = 0;
            out[2] = (code / 100) as u8;
            out[3] = (code % 100) as u8;
            out[4..].copy_from_slice(reason.as_bytes());
        });
    }

    /// Appends UNKNOWN-ATTRIBUTES listing `types` (RFC 8489 §14.9).
    pub fn unknown_attributes(&mut self, types: &[attr::AttrType]) {
        self.attr_with(attr::UNKNOWN_ATTRIBUTES, types.len() * 2, |out| {
            for (i, t) in types.iter().enumerate() {
                out[2 * i..2 * i + 2].copy_from_slice(&t.0.to_be_bytes());
            }
        });
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1 over everything so far, RFC 8489 §14.5).
    pub fn message_integrity(&mut self, key: &[u8]) {
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        self.covered(&mut mac, 20);
        let tag = mac.finalize().into_bytes();
        self.attr(attr::MESSAGE_INTEGRITY, &tag);
    }

    /// Appends MESSAGE-INTEGRITY-SHA256, untruncated (RFC 8489 §14.6).
    pub fn message_integrity_sha256(&mut self, key: &[u8]) {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        self.covered(&mut mac, 32);
        let tag = mac.finalize().into_bytes();
        self.attr(attr::MESSAGE_INTEGRITY_SHA256, &tag);
    }

    /// Feeds `mac` the message so far, with the length field counting the integrity attribute
    /// of `tag_len` bytes that is about to be appended.
    fn covered<M: Mac>(&self, mac: &mut M, tag_len: usize) {
        let msg = &self.buf[self.start..];
        let adjusted = (msg.len() + 4 + tag_len - HEADER_LEN) as u16;
        mac.update(&msg[..2]);
        mac.update(&adjusted.to_be_bytes());
        mac.update(&msg[4..]);
    }

    /// Appends FINGERPRINT and returns the finished message's length.
    pub fn fingerprint(mut self) -> usize {
        let at = self.buf.len() - self.start;
        self.attr(attr::FINGERPRINT, &[0; 4]);
        let fp = fingerprint_of(&self.buf[self.start..], at);
        let end = self.buf.len();
        self.buf[end - 4..].copy_from_slice(&fp.to_be_bytes());
        self.finish()
    }

    /// Finishes the message and returns its length.
    pub fn finish(self) -> usize {
        self.buf.len() - self.start
    }
}
