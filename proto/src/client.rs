//! The client side of TURN requests, built on [`crate::wire`] only (never on the server
//! engine), for tests and for turnd's self-test peers: build authenticated requests, read the
//! answers, and drive one request to its answer with a sans-IO [`Transaction`].

pub mod nat;
mod transaction;

pub use transaction::{
    Exchange, Failure, Outcome, TimedOut, Timing, Transaction, TransactionIds, INITIAL_RTO,
    RELIABLE_TIMEOUT,
};

use crate::auth::long_term_key_md5;
use crate::wire::{attr, Class, Message, MessageEncoder, Method, TransactionId};
use std::net::SocketAddr;

/// Credentials and server state a client carries between requests.
#[derive(Debug, Clone, Default)]
pub struct ClientAuth {
    /// USERNAME: the REST username or a static user's name.
    pub username: String,
    /// The password the long-term key is derived from.
    pub password: String,
    /// Learned from the server's 401.
    pub realm: Option<String>,
    /// Learned from the server's 401 or 438.
    pub nonce: Option<String>,
}

impl ClientAuth {
    /// Credentials for a server whose realm and nonce are not yet known.
    pub fn new(username: &str, password: &str) -> Self {
        ClientAuth {
            username: username.to_owned(),
            password: password.to_owned(),
            realm: None,
            nonce: None,
        }
    }

    /// The MD5 long-term key, once the realm is known.
    pub fn key(&self) -> Option<[u8; 16]> {
        Some(long_term_key_md5(
            &self.username,
            self.realm.as_deref()?,
            &self.password,
        ))
    }

    /// Whether to send the request again after `response`, having learnt from it: the first
    /// 401 (realm and nonce now known) or a 438 (fresh nonce). Any other answer is final.
    pub fn retry_after(&mut self, response: &Message<'_>) -> bool {
        let retry = match error_code(response) {
            Some(401) => self.nonce.is_none(),
            Some(438) => true,
            _ => false,
        };
        if retry {
            self.learn(response);
        }
        retry
    }

    /// Remembers REALM and NONCE from an error response (401 or 438).
    pub fn learn(&mut self, response: &Message<'_>) {
        if let Some(r) = response.get(attr::REALM) {
            self.realm = Some(String::from_utf8_lossy(r).into_owned());
        }
        if let Some(n) = response.get(attr::NONCE) {
            self.nonce = Some(String::from_utf8_lossy(n).into_owned());
        }
    }
}

/// An attribute of a request being built.
#[derive(Debug, Clone)]
pub enum Attr {
    /// LIFETIME, in seconds (RFC 8656 §18).
    Lifetime(u32),
    /// REQUESTED-TRANSPORT: the IANA protocol number, 17 for UDP (RFC 8656 §18).
    RequestedTransport(u8),
    /// REQUESTED-ADDRESS-FAMILY: 1 IPv4, 2 IPv6 (RFC 8656 §18).
    RequestedFamily(u8),
    /// ADDITIONAL-ADDRESS-FAMILY: asks for a dual allocation (RFC 8656 §18).
    AdditionalFamily(u8),
    /// XOR-PEER-ADDRESS (RFC 8656 §18).
    Peer(SocketAddr),
    /// CHANNEL-NUMBER (RFC 8656 §18).
    Channel(u16),
    /// DATA (RFC 8656 §18).
    Data(Vec<u8>),
    /// Any attribute, type and value as given (tests send what a hostile client would).
    Raw(u16, Vec<u8>),
}

fn write_attrs(enc: &mut MessageEncoder<'_>, attrs: &[Attr]) {
    for a in attrs {
        match a {
            Attr::Lifetime(s) => enc.u32_attr(attr::LIFETIME, *s),
            Attr::RequestedTransport(p) => enc.attr(attr::REQUESTED_TRANSPORT, &[*p, 0, 0, 0]),
            Attr::RequestedFamily(f) => enc.attr(attr::REQUESTED_ADDRESS_FAMILY, &[*f, 0, 0, 0]),
            Attr::AdditionalFamily(f) => enc.attr(attr::ADDITIONAL_ADDRESS_FAMILY, &[*f, 0, 0, 0]),
            Attr::Peer(p) => enc.xor_address(attr::XOR_PEER_ADDRESS, *p),
            Attr::Channel(n) => {
                let b = n.to_be_bytes();
                enc.attr(attr::CHANNEL_NUMBER, &[b[0], b[1], 0, 0])
            }
            Attr::Data(d) => enc.attr(attr::DATA, d),
            Attr::Raw(t, v) => enc.attr(*t, v),
        }
    }
}

/// Builds a request; with `auth` that knows realm and nonce, it carries USERNAME, REALM,
/// NONCE and MESSAGE-INTEGRITY. Adds FINGERPRINT when asked.
pub fn request(
    method: Method,
    tid: TransactionId,
    attrs: &[Attr],
    auth: Option<&ClientAuth>,
    fingerprint: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = MessageEncoder::new(&mut out, method, Class::Request, tid);
    write_attrs(&mut enc, attrs);
    if let Some(a) = auth {
        if let (Some(realm), Some(nonce), Some(key)) = (&a.realm, &a.nonce, a.key()) {
            enc.attr(attr::USERNAME, a.username.as_bytes());
            enc.attr(attr::REALM, realm.as_bytes());
            enc.attr(attr::NONCE, nonce.as_bytes());
            enc.message_integrity(&key);
        }
    }
    if fingerprint {
        enc.fingerprint();
    } else {
        enc.finish();
    }
    out
}

/// Builds a Send indication (RFC 8656 §10.1).
pub fn send_indication(tid: TransactionId, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = MessageEncoder::new(&mut out, Method::SEND, Class::Indication, tid);
    enc.xor_address(attr::XOR_PEER_ADDRESS, peer);
    enc.attr(attr::DATA, data);
    enc.finish();
    out
}

/// Builds ChannelData, padded to four bytes when `pad` (required on streams).
pub fn channel_data(channel: u16, data: &[u8], pad: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + data.len() + 3);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    if pad {
        out.resize(crate::wire::padded(out.len()), 0);
    }
    out
}

/// The error code of a response, if it is an error response.
pub fn error_code(msg: &Message<'_>) -> Option<u16> {
    attr::read_error_code(msg.get(attr::ERROR_CODE)?).map(|(c, _)| c)
}

/// An address attribute of a response (XOR-RELAYED-ADDRESS, XOR-MAPPED-ADDRESS, ...).
pub fn address(msg: &Message<'_>, typ: u16) -> Option<SocketAddr> {
    attr::read_xor_address(msg.get(typ)?, &msg.transaction_id())
}

/// Every address attribute of a type (two XOR-RELAYED-ADDRESSes for a dual allocation).
pub fn addresses(msg: &Message<'_>, typ: u16) -> Vec<SocketAddr> {
    msg.attributes()
        .filter(|a| a.typ == typ)
        .filter_map(|a| attr::read_xor_address(a.value, &msg.transaction_id()))
        .collect()
}
