//! The per-packet path: relaying between clients and peers (RFC 8656 §10, §12).
//!
//! Nothing here allocates, locks or logs. Client→peer data is handed back as a range of the
//! caller's buffer; peer→client data gets its ChannelData or Data-indication header written
//! into headroom the caller leaves in front of the payload.

use super::allocations::Slot;
use super::{ClientId, Now, RelayId, Server};
use crate::wire::{self, attr, channel_data, Class, Message, Method, PacketKind};
use std::net::SocketAddr;
use std::ops::Range;

/// Bytes the shell must leave free before a peer's payload: the largest header we write there
/// (STUN header 20 + XOR-PEER-ADDRESS for IPv6 24 + DATA attribute header 4).
pub const PEER_HEADROOM: usize = 48;
/// Bytes the shell must leave free after a peer's payload (padding to a multiple of 4).
pub const PEER_TAILROOM: usize = 3;

/// What to do with a packet from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromClient {
    /// Send `buf[payload]` from relay socket `relay` to `peer`.
    Forward {
        /// The relay socket to send from.
        relay: RelayId,
        /// The peer to send to.
        peer: SocketAddr,
        /// The payload's bytes in the caller's buffer.
        payload: Range<usize>,
    },
    /// Nothing to relay (a request was handled, or the packet was dropped); drain commands.
    Done,
}

/// Where to send a peer's packet, now framed for the client: `buf[range]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToClient {
    /// The client to send to.
    pub client: ClientId,
    /// The framed message's bytes in the caller's buffer.
    pub range: Range<usize>,
}

impl Server {
    /// Everything a client sends: STUN requests, Send indications and ChannelData.
    #[inline]
    pub fn handle_client_datagram(
        &mut self,
        now: Now,
        client: ClientId,
        packet: &[u8],
    ) -> FromClient {
        let forward = match wire::classify(packet) {
            PacketKind::ChannelData => self.channel_data_to_peer(now, &client, packet),
            PacketKind::Stun if is_send_indication(packet) => {
                self.send_indication(now, &client, packet)
            }
            PacketKind::Stun => {
                self.handle_stun(now, client, packet);
                return FromClient::Done;
            }
            PacketKind::Other => None,
        };
        match forward {
            Some((slot, relay, peer, payload)) => {
                let len = payload.end - payload.start;
                self.stats.packets_to_peer += 1;
                self.stats.bytes_to_peer += len as u64;
                // The same payload bytes the metric counts, so usage records reconcile with
                // turnd_relayed_bytes_total.
                if let Some(a) = self.allocations.get_mut(slot) {
                    a.usage.to_peer.add(len);
                }
                FromClient::Forward {
                    relay,
                    peer,
                    payload,
                }
            }
            None => {
                self.stats.dropped_packets += 1;
                FromClient::Done
            }
        }
    }

    /// RFC 8656 §12.6: ChannelData from a client goes to the peer bound to the channel, if the
    /// binding and the peer's permission are live.
    #[inline]
    fn channel_data_to_peer(
        &self,
        now: Now,
        client: &ClientId,
        packet: &[u8],
    ) -> Option<(Slot, RelayId, SocketAddr, Range<usize>)> {
        let cd = channel_data::parse(packet)?;
        let (slot, relay, peer) = self.channel_target(now.mono, client, cd.number())?;
        let start = channel_data::HEADER_LEN;
        Some((slot, relay, peer, start..start + cd.data.len()))
    }

    /// Where ChannelData from `client` on channel `number` goes now, if anywhere (RFC 8656
    /// §12.6): the channel and its peer's permission live, and a hairpin-only peer still one of
    /// this server's relayed addresses.
    #[inline]
    fn channel_target(
        &self,
        now: std::time::Instant,
        client: &ClientId,
        number: wire::ChannelNumber,
    ) -> Option<(Slot, RelayId, SocketAddr)> {
        let slot = self.allocations.slot_of(client)?;
        let a = self.allocations.get(slot)?;
        let ch = a.channel_by_number(number, now)?;
        let perm = a.permission(ch.peer.ip(), now)?;
        if (ch.hairpin_only || perm.hairpin_only) && !self.is_own_relay(ch.peer) {
            return None;
        }
        let relay = a.relay_for(ch.peer.ip())?;
        Some((slot, relay.id, ch.peer))
    }

    /// The relay socket and peer ChannelData from `client` on channel `number` would be sent
    /// through and to now, if any. What a kernel fast path route may never exceed: the fuzz
    /// harness checks every live route against it.
    pub fn channel_destination(
        &self,
        now: std::time::Instant,
        client: &ClientId,
        number: u16,
    ) -> Option<(RelayId, SocketAddr)> {
        let number = wire::ChannelNumber::new(number)?;
        self.channel_target(now, client, number)
            .map(|(_, relay, peer)| (relay, peer))
    }

    /// RFC 8656 §10.2: a Send indication's DATA goes to its XOR-PEER-ADDRESS if the allocation
    /// has a permission for that IP; otherwise it is dropped silently (no reply to indications).
    fn send_indication(
        &mut self,
        now: Now,
        client: &ClientId,
        packet: &[u8],
    ) -> Option<(Slot, RelayId, SocketAddr, Range<usize>)> {
        let msg = Message::parse(packet).ok()?;
        let slot = self.allocations.slot_of(client)?;
        let a = self.allocations.get(slot)?;
        let peer = attr::read_xor_address(msg.get(attr::XOR_PEER_ADDRESS)?, &msg.transaction_id())?;
        let data = msg.get(attr::DATA)?;
        let relay = a.relay_for(peer.ip())?.id;
        let Some(perm) = a.permission(peer.ip(), now.mono) else {
            if !self.config.policy.allows(peer.ip()) && !self.is_own_relay(peer) {
                self.send_denied(client, peer);
            }
            return None;
        };
        if perm.hairpin_only && !self.is_own_relay(peer) {
            self.send_denied(client, peer);
            return None;
        }
        // `data` borrows `packet`: its offset in the packet is the payload range.
        let start = data.as_ptr() as usize - packet.as_ptr() as usize;
        Some((slot, relay, peer, start..start + data.len()))
    }

    /// A Send indication to a peer the policy refuses: counted and reported (the event holds
    /// no heap data, so this allocates nothing once the queue has grown).
    #[cold]
    fn send_denied(&mut self, client: &ClientId, peer: SocketAddr) {
        self.stats.peer_denied += 1;
        self.emit(super::Event::PeerDenied {
            client: *client,
            peer,
            method: Method::SEND,
        });
    }

    /// A datagram from `peer` on relay socket `relay`, with its payload at `buf[payload]`.
    /// `buf` must have [`PEER_HEADROOM`] bytes before the payload and [`PEER_TAILROOM`] after.
    /// RFC 8656 §10.3 and §12.7: dropped without a permission; sent as ChannelData when a
    /// channel is bound to the peer, otherwise as a Data indication.
    #[inline]
    pub fn handle_peer_datagram(
        &mut self,
        now: Now,
        relay: RelayId,
        peer: SocketAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Option<ToClient> {
        let len = payload.len();
        match self.frame_for_client(now, relay, peer, buf, payload) {
            Some((slot, out)) => {
                self.stats.packets_to_client += 1;
                self.stats.bytes_to_client += len as u64;
                if let Some(a) = self.allocations.get_mut(slot) {
                    a.usage.to_client.add(len);
                }
                Some(out)
            }
            None => {
                self.stats.dropped_packets += 1;
                None
            }
        }
    }

    #[inline]
    fn frame_for_client(
        &mut self,
        now: Now,
        relay: RelayId,
        peer: SocketAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Option<(Slot, ToClient)> {
        if payload.start < PEER_HEADROOM
            || payload.end + PEER_TAILROOM > buf.len()
            || payload.len() > 0xFFFF - 64
        {
            return None;
        }
        let slot = self.allocations.slot_of_relay(relay)?;
        let a = self.allocations.get(slot)?;
        a.permission(peer.ip(), now.mono)?;
        let client = a.client;
        let len = payload.len();
        if let Some(ch) = a.channel_by_peer(peer, now.mono) {
            channel_data::write_header(buf, payload.start, ch.number.get(), len);
            let mut end = payload.end;
            if client.transport.is_stream() {
                // RFC 8656 §12.5: ChannelData over TCP/TLS is padded to four bytes.
                let padded = payload.start + wire::padded(len);
                buf[end..padded].fill(0);
                end = padded;
            }
            return Some((
                slot,
                ToClient {
                    client,
                    range: payload.start - channel_data::HEADER_LEN..end,
                },
            ));
        }
        let tid = self.random_tid();
        Some((
            slot,
            ToClient {
                client,
                range: write_data_indication(buf, payload, peer, &tid),
            },
        ))
    }
}

/// Whether a STUN packet is a Send indication, from its type field alone.
#[inline]
fn is_send_indication(packet: &[u8]) -> bool {
    packet.len() >= 2
        && u16::from_be_bytes([packet[0], packet[1]])
            == crate::wire::message::message_type(Method::SEND, Class::Indication)
}

/// Writes a Data indication (RFC 8656 §10.3) around the payload already in `buf`: header and
/// XOR-PEER-ADDRESS and the DATA attribute header before it, zero padding after it.
fn write_data_indication(
    buf: &mut [u8],
    payload: Range<usize>,
    peer: SocketAddr,
    tid: &wire::TransactionId,
) -> Range<usize> {
    let len = payload.len();
    let xpa_len = attr::xor_address_len(&peer);
    let start = payload.start - (wire::HEADER_LEN + 4 + xpa_len + 4);
    let padded_end = payload.start + wire::padded(len);
    buf[payload.end..padded_end].fill(0);
    let body_len = (padded_end - start - wire::HEADER_LEN) as u16;
    let ty = crate::wire::message::message_type(Method::DATA, Class::Indication);
    let h = &mut buf[start..payload.start];
    h[0..2].copy_from_slice(&ty.to_be_bytes());
    h[2..4].copy_from_slice(&body_len.to_be_bytes());
    h[4..8].copy_from_slice(&wire::MAGIC_COOKIE.to_be_bytes());
    h[8..20].copy_from_slice(&tid.0);
    h[20..22].copy_from_slice(&attr::XOR_PEER_ADDRESS.to_be_bytes());
    h[22..24].copy_from_slice(&(xpa_len as u16).to_be_bytes());
    attr::write_xor_address(&mut h[24..24 + xpa_len], &peer, tid);
    let d = 24 + xpa_len;
    h[d..d + 2].copy_from_slice(&attr::DATA.to_be_bytes());
    h[d + 2..d + 4].copy_from_slice(&(len as u16).to_be_bytes());
    start..padded_end
}
