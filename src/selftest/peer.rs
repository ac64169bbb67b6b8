//! One self-test peer: a TURN client built on turnd-proto's codec and request builders (never
//! on the server engine), speaking to the server over its [`Link`].

use super::link::Link;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use turnd_proto::client::{self, Attr, ClientAuth};
use turnd_proto::wire::{attr, channel_data, Class, Message, Method, TransactionId};

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
    tid: u64,
    /// Data that arrived while waiting for a response.
    pending: Vec<Received>,
}

/// UDP retransmission: RFC 8489 §6.2.1 starts at 500 ms and doubles; we stop at `timeout`.
const RTO: Duration = Duration::from_millis(500);

impl Peer {
    pub fn new(link: Link, username: &str, password: &str) -> Peer {
        Peer {
            link,
            auth: ClientAuth::new(username, password),
            relayed: None,
            channels: Vec::new(),
            tid: 0,
            pending: Vec::new(),
        }
    }

    fn next_tid(&mut self) -> TransactionId {
        self.tid += 1;
        let mut t = [0u8; 12];
        t[..4].copy_from_slice(&std::process::id().to_be_bytes());
        t[4..].copy_from_slice(&self.tid.to_be_bytes());
        TransactionId(t)
    }

    /// Sends a request and waits for its response (retransmitting over UDP).
    /// Sends a request and waits for its response, retransmitting over UDP (RFC 8489
    /// §6.2.1); relayed data that arrives meanwhile is kept for [`Peer::recv_data`].
    fn exchange(
        &mut self,
        method: Method,
        attrs: &[Attr],
        auth: bool,
        timeout: Duration,
    ) -> Result<Vec<u8>, RequestError> {
        let tid = self.next_tid();
        let req = client::request(method, tid, attrs, auth.then_some(&self.auth), true);
        let deadline = Instant::now() + timeout;
        let mut rto = RTO;
        loop {
            self.link
                .send(&req)
                .map_err(|e| RequestError::Io(e.to_string()))?;
            let wait_until = if self.link.kind.is_stream() {
                deadline
            } else {
                (Instant::now() + rto).min(deadline)
            };
            rto *= 2;
            while let Some(bytes) = self.link.recv(wait_until) {
                if let Ok(m) = Message::parse(&bytes) {
                    if m.class() != Class::Indication && m.transaction_id() == tid {
                        return Ok(bytes);
                    }
                }
                if let Some(r) = self.decode_data(&bytes) {
                    self.pending.push(r);
                }
            }
            if Instant::now() >= deadline {
                return Err(RequestError::Timeout);
            }
        }
    }

    /// A request with the long-term credential dance: a 401 (or 438) teaches realm and nonce,
    /// then the request is repeated once with MESSAGE-INTEGRITY.
    pub fn request(
        &mut self,
        method: Method,
        attrs: &[Attr],
        timeout: Duration,
    ) -> Result<Vec<u8>, RequestError> {
        for _ in 0..3 {
            let resp = self.exchange(method, attrs, true, timeout)?;
            let msg = Message::parse(&resp).map_err(|e| RequestError::Io(e.to_string()))?;
            let Some((code, reason)) = msg.get(attr::ERROR_CODE).and_then(attr::read_error_code)
            else {
                return Ok(resp);
            };
            let challenge = (code == 401 && self.auth.nonce.is_none()) || code == 438;
            if !challenge {
                return Err(RequestError::Code(code, reason.to_owned()));
            }
            self.auth.learn(&msg);
        }
        Err(RequestError::Code(401, "Unauthorized".into()))
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
        let tid = self.next_tid();
        let bytes = client::send_indication(tid, peer, data);
        self.link.send(&bytes)
    }

    pub fn send_channel(&mut self, number: u16, data: &[u8]) -> std::io::Result<()> {
        let bytes = client::channel_data(number, data, self.link.kind.is_stream());
        self.link.send(&bytes)
    }

    fn decode_data(&self, bytes: &[u8]) -> Option<Received> {
        if let Some(cd) = channel_data::parse(bytes) {
            let from = self.channels.iter().find(|(n, _)| *n == cd.channel)?.1;
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

    /// The next relayed data, waiting at most until `deadline`.
    pub fn recv_data(&mut self, deadline: Instant) -> Option<Received> {
        if !self.pending.is_empty() {
            return Some(self.pending.remove(0));
        }
        while let Some(bytes) = self.link.recv(deadline) {
            if let Some(r) = self.decode_data(&bytes) {
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
            let tid = self.next_tid();
            let req = client::request(
                Method::REFRESH,
                tid,
                &[Attr::Lifetime(0)],
                Some(&self.auth),
                true,
            );
            let _ = self.link.send(&req);
        }
    }
}
