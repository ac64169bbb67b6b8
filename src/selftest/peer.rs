//! One self-test peer: a TURN client built on turnd-proto's codec and request builders (never
//! on the server engine), speaking to the server over its [`Link`].

use super::link::Link;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use turnd_proto::client::{
    self, Attr, ClientAuth, Exchange, Failure, Timing, Transaction, TransactionIds,
};
use turnd_proto::wire::{attr, channel_data, Class, Message, Method};

/// How a request ended badly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// No answer in time.
    Timeout,
    /// An error response: code and reason.
    Code(u16, String),
    /// The link broke.
    Io(String),
}

/// Data a peer received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Where the server says the data came from (the sending peer's relayed address).
    pub from: SocketAddr,
    pub data: Vec<u8>,
    pub via_channel: bool,
}

pub struct Peer {
    pub link: Link,
    pub auth: ClientAuth,
    pub relayed: Option<SocketAddr>,
    /// Channel number → peer, as this peer bound them.
    channels: Vec<(u16, SocketAddr)>,
    ids: TransactionIds,
    /// Data that arrived while waiting for a response.
    pending: Vec<Received>,
}

/// The link as a [`Transaction`] sees it: relayed data that arrives while a request waits for
/// its answer is kept for [`Peer::recv_data`].
struct Waiting<'a> {
    link: &'a mut Link,
    channels: &'a [(u16, SocketAddr)],
    pending: &'a mut Vec<Received>,
}

impl Exchange for Waiting<'_> {
    type Error = std::io::Error;
    fn now(&mut self) -> Instant {
        Instant::now()
    }
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.link.send(bytes)
    }
    fn recv(&mut self, until: Instant) -> std::io::Result<Option<Vec<u8>>> {
        self.link.read(until)
    }
    fn unmatched(&mut self, bytes: Vec<u8>) {
        self.pending.extend(decode_data(self.channels, &bytes));
    }
}

impl Peer {
    pub fn new(link: Link, username: &str, password: &str) -> Peer {
        Peer {
            link,
            auth: ClientAuth::new(username, password),
            relayed: None,
            channels: Vec::new(),
            // RFC 8489 §6: transaction ids an off-path attacker cannot guess.
            ids: TransactionIds::new(rand::random()),
            pending: Vec::new(),
        }
    }

    /// Sends a request and waits for its final answer through the client [`Transaction`]
    /// (retransmitting over UDP, RFC 8489 §6.2.1; answering a 401/438 challenge when `auth`).
    fn exchange(
        &mut self,
        method: Method,
        attrs: &[Attr],
        auth: bool,
        timeout: Duration,
    ) -> Result<Vec<u8>, RequestError> {
        let timing = Timing::for_stream(self.link.kind.is_stream()).with_timeout(timeout);
        let t = Transaction::new(
            method,
            attrs,
            auth.then_some(&self.auth),
            true,
            timing,
            &mut self.ids,
            Instant::now(),
        );
        let mut io = Waiting {
            link: &mut self.link,
            channels: &self.channels,
            pending: &mut self.pending,
        };
        t.run(&mut io, &mut self.auth, &mut self.ids)
            .map_err(|e| match e {
                Failure::TimedOut => RequestError::Timeout,
                Failure::Io(e) => RequestError::Io(e.to_string()),
            })
    }

    /// An authenticated request (the long-term credential dance is the transaction's); an
    /// error response is an error.
    pub fn request(
        &mut self,
        method: Method,
        attrs: &[Attr],
        timeout: Duration,
    ) -> Result<Vec<u8>, RequestError> {
        let resp = self.exchange(method, attrs, true, timeout)?;
        let msg = Message::parse(&resp).map_err(|e| RequestError::Io(e.to_string()))?;
        match msg.get(attr::ERROR_CODE).and_then(attr::read_error_code) {
            None => Ok(resp),
            Some((code, reason)) => Err(RequestError::Code(code, reason.to_owned())),
        }
    }

    /// STUN Binding: the reflexive address the server sees.
    pub fn binding(&mut self, timeout: Duration) -> Result<SocketAddr, RequestError> {
        let resp = self.exchange(Method::BINDING, &[], false, timeout)?;
        let msg = Message::parse(&resp).map_err(|e| RequestError::Io(e.to_string()))?;
        client::address(&msg, attr::XOR_MAPPED_ADDRESS)
            .ok_or(RequestError::Io("no XOR-MAPPED-ADDRESS".into()))
    }

    pub fn allocate(&mut self, timeout: Duration) -> Result<SocketAddr, RequestError> {
        let resp = self.request(
            Method::ALLOCATE,
            &[Attr::RequestedTransport(17), Attr::Lifetime(600)],
            timeout,
        )?;
        let msg = Message::parse(&resp).map_err(|e| RequestError::Io(e.to_string()))?;
        let relayed = client::address(&msg, attr::XOR_RELAYED_ADDRESS)
            .ok_or(RequestError::Io("no XOR-RELAYED-ADDRESS".into()))?;
        self.relayed = Some(relayed);
        Ok(relayed)
    }

    pub fn create_permission(
        &mut self,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<(), RequestError> {
        self.request(Method::CREATE_PERMISSION, &[Attr::Peer(peer)], timeout)
            .map(drop)
    }

    pub fn channel_bind(
        &mut self,
        number: u16,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<(), RequestError> {
        self.request(
            Method::CHANNEL_BIND,
            &[Attr::Channel(number), Attr::Peer(peer)],
            timeout,
        )?;
        // A channel bound again (a later allocation of the same peer) names its new peer.
        self.channels.retain(|(n, _)| *n != number);
        self.channels.push((number, peer));
        Ok(())
    }

    pub fn refresh(&mut self, lifetime: u32, timeout: Duration) -> Result<(), RequestError> {
        if lifetime == 0 {
            let r = self
                .request(Method::REFRESH, &[Attr::Lifetime(0)], timeout)
                .map(drop);
            if r.is_ok() {
                self.relayed = None;
            }
            return r;
        }
        self.request(Method::REFRESH, &[Attr::Lifetime(lifetime)], timeout)
            .map(drop)
    }

    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> std::io::Result<()> {
        let bytes = client::send_indication(self.ids.next_id(), peer, data);
        self.link.send(&bytes)
    }

    pub fn send_channel(&mut self, number: u16, data: &[u8]) -> std::io::Result<()> {
        let bytes = client::channel_data(number, data, self.link.kind.is_stream());
        self.link.send(&bytes)
    }

    /// The next relayed data, waiting at most until `deadline`.
    pub fn recv_data(&mut self, deadline: Instant) -> Option<Received> {
        if !self.pending.is_empty() {
            return Some(self.pending.remove(0));
        }
        while let Some(bytes) = self.link.recv(deadline) {
            if let Some(r) = decode_data(&self.channels, &bytes) {
                return Some(r);
            }
        }
        None
    }
}

impl Drop for Peer {
    /// A peer that still holds an allocation (a run that failed half-way) releases it: over
    /// TCP/TLS closing the connection does that; over UDP a last Refresh with LIFETIME 0 is
    /// sent without waiting for the answer.
    fn drop(&mut self) {
        if self.relayed.is_some() && !self.link.kind.is_stream() {
            let req = client::request(
                Method::REFRESH,
                self.ids.next_id(),
                &[Attr::Lifetime(0)],
                Some(&self.auth),
                true,
            );
            let _ = self.link.send(&req);
        }
    }
}

/// Relayed data in a ChannelData message (on a channel `channels` knows) or a Data indication.
fn decode_data(channels: &[(u16, SocketAddr)], bytes: &[u8]) -> Option<Received> {
    if let Some(cd) = channel_data::parse(bytes) {
        let from = channels.iter().find(|(n, _)| *n == cd.channel)?.1;
        return Some(Received {
            from,
            data: cd.data.to_vec(),
            via_channel: true,
        });
    }
    let m = Message::parse(bytes).ok()?;
    if (m.method(), m.class()) != (Method::DATA, Class::Indication) {
        return None;
    }
    Some(Received {
        from: client::address(&m, attr::XOR_PEER_ADDRESS)?,
        data: m.get(attr::DATA)?.to_vec(),
        via_channel: false,
    })
}
