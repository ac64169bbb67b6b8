//! Binding: the client's reflexive address (RFC 8489 §6.3.1), the RFC 3489 requests older NAT
//! checkers still send, and the RFC 5780 attributes that make NAT behaviour discovery possible.
//!
//! * A CHANGE-REQUEST with both flags clear asks for nothing: a plain Binding (stuntman's
//!   `stunclient` sends one in its basic test).
//! * An RFC 3489 request (no magic cookie: bytes 4..20 are one 128-bit transaction id) is
//!   answered with MAPPED-ADDRESS and the cookie field echoed (RFC 8489 §12.2 says a server
//!   SHOULD answer it). Errors to such requests are not sent: they are dropped.
//! * With a [`StunAlternate`] (opt-in, `stun_alternate`), a Binding over UDP is answered with
//!   OTHER-ADDRESS and RESPONSE-ORIGIN; CHANGE-REQUEST moves the answer to the other IP and/or
//!   port (one of four sockets: primary/alternate IP × primary/alternate port), RESPONSE-PORT
//!   to another port of the client's address, and PADDING is echoed (RFC 5780 §6, §7).
//! * Without one, a CHANGE-REQUEST that asks for a change gets 420 listing it (RFC 5780 §6:
//!   a server without an alternate address does not support CHANGE-REQUEST), and RESPONSE-PORT
//!   and PADDING stay unknown (420).
//! * Over TCP or TLS, CHANGE-REQUEST that asks for a change and RESPONSE-PORT are 400 Bad
//!   Request: RFC 5780 applies them to UDP only (§7.2, §7.5): the answer can only go back on
//!   the connection.
//!
//! Reflection: an unauthenticated Binding answer is small and goes back to the sender. The
//! answers that go anywhere else (another source address or port, another destination port),
//! carry PADDING, or answer an RFC 3489 request spend a token of the per-source limiter that
//! caps unauthenticated errors (`source_limit.rs`), and every answer is held to
//! [`super::answer_budget`] (≤ 4× the request).

use super::decode::UnknownAttributes;
use super::reject::Reject;
use super::respond::Request;
use super::{ClientId, Command, Now, Server, Transport};
use crate::source_key::source_key;
use crate::wire::{attr, Class, Message, MessageEncoder, Method, TransactionId, HEADER_LEN};
use std::net::SocketAddr;

/// The largest Binding response PADDING may grow to: an Ethernet MTU. RFC 5780 §7.6 has the
/// client pick the padding to probe fragmentation along the path; a larger answer would be
/// fragmented on the way out of this host, which is no test of the client's path and makes
/// the server a source of fragments. A request asking for more is answered 400.
pub const MAX_PADDED_RESPONSE: usize = 1500;

/// The second address RFC 5780 needs (`stun_alternate`): the server answers from the primary
/// and alternate IPs, each on the primary and alternate ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StunAlternate {
    /// The primary address: a listen address (IP and port).
    pub primary: SocketAddr,
    /// The alternate address: another IP of the host, and another port.
    pub alternate: SocketAddr,
}

impl StunAlternate {
    /// RFC 5780 §7.4: OTHER-ADDRESS is the address that differs in both IP and port from
    /// `local`, the address the request came to.
    pub fn other(&self, local: SocketAddr) -> SocketAddr {
        let ip = if local.ip() == self.alternate.ip() {
            self.primary.ip()
        } else {
            self.alternate.ip()
        };
        let port = if local.port() == self.alternate.port() {
            self.primary.port()
        } else {
            self.alternate.port()
        };
        SocketAddr::new(ip, port)
    }

    /// The address an answer with these CHANGE-REQUEST flags leaves from (RFC 5780 §6.1).
    pub fn origin(&self, local: SocketAddr, change_ip: bool, change_port: bool) -> SocketAddr {
        let other = self.other(local);
        SocketAddr::new(
            if change_ip { other.ip() } else { local.ip() },
            if change_port {
                other.port()
            } else {
                local.port()
            },
        )
    }

    /// The four addresses answers leave from: primary, alternate IP, alternate port, both.
    pub fn addresses(&self) -> [SocketAddr; 4] {
        let (p, a) = (self.primary, self.alternate);
        [
            p,
            SocketAddr::new(a.ip(), p.port()),
            SocketAddr::new(p.ip(), a.port()),
            a,
        ]
    }
}

/// The RFC 5780 asks of one Binding request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Asks {
    change_ip: bool,
    change_port: bool,
    response_port: Option<u16>,
    /// PADDING's length.
    padding: Option<usize>,
}

impl Asks {
    fn change(&self) -> bool {
        self.change_ip || self.change_port
    }

    /// Reads CHANGE-REQUEST, RESPONSE-PORT and PADDING; a malformed one is 400.
    fn decode<'a>(attrs: impl Iterator<Item = (u16, &'a [u8])>) -> Result<Asks, Reject> {
        let mut asks = Asks::default();
        for (typ, value) in attrs {
            match typ {
                // RFC 5780 §7.2: 32 bits, the flags in the last byte.
                attr::CHANGE_REQUEST => {
                    let v: [u8; 4] = value.try_into().map_err(|_| Reject::BadRequest)?;
                    asks.change_ip |= v[3] & attr::CHANGE_IP != 0;
                    asks.change_port |= v[3] & attr::CHANGE_PORT != 0;
                }
                // RFC 5780 §7.5: a 16-bit port and two bytes of padding. Port 0 is no port.
                attr::RESPONSE_PORT => {
                    let v: [u8; 4] = value.try_into().map_err(|_| Reject::BadRequest)?;
                    let port = u16::from_be_bytes([v[0], v[1]]);
                    if port == 0 || asks.response_port.is_some() {
                        return Err(Reject::BadRequest);
                    }
                    asks.response_port = Some(port);
                }
                attr::PADDING => {
                    if asks.padding.is_some() {
                        return Err(Reject::BadRequest);
                    }
                    asks.padding = Some(value.len());
                }
                _ => {}
            }
        }
        // RFC 5780 §7.5: "The server MUST NOT process a request containing a RESPONSE-PORT
        // and a PADDING attribute" (a padded answer aimed at another port is an amplifier).
        if asks.response_port.is_some() && asks.padding.is_some() {
            return Err(Reject::BadRequest);
        }
        Ok(asks)
    }
}

/// Where an answer goes and what it says.
struct Route {
    /// The client: the listener the answer leaves through, its source, its destination.
    client: ClientId,
    /// RESPONSE-ORIGIN and OTHER-ADDRESS, when the server has an alternate address.
    origin_other: Option<(SocketAddr, SocketAddr)>,
    /// Whether it spends a token of the per-source limiter.
    limited: bool,
}

impl Server {
    /// RFC 8489 §6.3.1, RFC 5780 §6: a Binding request with the magic cookie.
    pub(super) fn binding(&mut self, now: Now, req: &Request, msg: &Message<'_>) {
        self.stats.binding_requests += 1;
        let rfc5780 = self.config.stun_alternate.is_some();
        // CHANGE-REQUEST is always read (both flags clear is a plain Binding); RESPONSE-PORT
        // and PADDING only with an alternate address.
        let known: &[u16] = if rfc5780 {
            &[attr::CHANGE_REQUEST, attr::RESPONSE_PORT, attr::PADDING]
        } else {
            &[attr::CHANGE_REQUEST]
        };
        if let Some(unknown) = UnknownAttributes::of_except(msg, known) {
            return self.reject_with(req, Reject::UnknownAttribute, None, now, unknown.types());
        }
        let asks = match Asks::decode(msg.attributes().map(|a| (a.typ.0, a.value))) {
            Ok(a) => a,
            Err(reject) => return self.reject(req, reject, None, now),
        };
        if asks.change() && !rfc5780 {
            let types = [attr::AttrType(attr::CHANGE_REQUEST)];
            return self.reject_with(req, Reject::UnknownAttribute, None, now, &types);
        }
        let Some(route) = self.route(req.client, &asks, false) else {
            return self.reject(req, Reject::BadRequest, None, now);
        };
        let padding = match asks.padding {
            // Echoed at the request's length (RFC 5780 §7.6), if the answer stays in an MTU.
            Some(p)
                if self.binding_len(&route, req.client.remote, false) + 4 + p
                    > MAX_PADDED_RESPONSE =>
            {
                return self.reject(req, Reject::BadRequest, None, now);
            }
            p => p,
        };
        let mapped = req.client.remote;
        let bytes = Self::encode(req, Class::Success, None, |enc| {
            enc.xor_address(attr::XOR_MAPPED_ADDRESS, mapped);
            if let Some((origin, other)) = route.origin_other {
                enc.address(attr::RESPONSE_ORIGIN, origin);
                enc.address(attr::OTHER_ADDRESS, other);
            }
            if let Some(p) = padding {
                enc.attr_with(attr::PADDING, p, |_| {});
            }
        });
        self.send_binding(now, route, req.len, bytes, padding.is_some());
    }

    /// An RFC 3489 Binding request (no magic cookie), or false if `packet` is not one. Such a
    /// request is answered with MAPPED-ADDRESS (and SOURCE-ADDRESS and CHANGED-ADDRESS with an
    /// alternate address, RFC 3489 §11.2), the 128-bit transaction id echoed whole; anything
    /// it does not understand is dropped, not answered with an error.
    pub(super) fn classic_binding(&mut self, now: Now, client: ClientId, packet: &[u8]) -> bool {
        let Some(attrs) = classic_attributes(packet) else {
            return false;
        };
        self.stats.binding_requests += 1;
        let known = |t: u16| {
            !attr::AttrType(t).is_comprehension_required()
                || matches!(t, attr::CHANGE_REQUEST | attr::USERNAME)
        };
        // RESPONSE-ADDRESS (0x0002) and the rest are not honoured: RFC 5780 retired them, and
        // sending an answer elsewhere is reflection.
        if attrs.clone().any(|(t, _)| !known(t)) {
            self.stats.dropped_packets += 1;
            return true;
        }
        let asks = match Asks::decode(attrs) {
            Ok(a) if !a.change() || self.config.stun_alternate.is_some() => a,
            _ => {
                self.stats.dropped_packets += 1;
                return true;
            }
        };
        let Some(route) = self.route(client, &asks, true) else {
            self.stats.dropped_packets += 1;
            return true;
        };
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&packet[8..HEADER_LEN]);
        let mut bytes = Vec::with_capacity(64);
        let mut enc = MessageEncoder::new(
            &mut bytes,
            Method::BINDING,
            Class::Success,
            TransactionId(tid),
        );
        enc.address(attr::MAPPED_ADDRESS, client.remote);
        if let Some((origin, other)) = route.origin_other {
            enc.address(attr::SOURCE_ADDRESS, origin);
            enc.address(attr::CHANGED_ADDRESS, other);
        }
        enc.finish();
        // The cookie field is the first quarter of an RFC 3489 transaction id: echo it.
        bytes[4..8].copy_from_slice(&packet[4..8]);
        self.send_binding(now, route, packet.len(), bytes, true);
        true
    }

    /// Where an answer to `client` with these asks goes: None when the answer would have to
    /// leave from an address this server has no socket for, or the transport cannot move it.
    fn route(&self, client: ClientId, asks: &Asks, classic: bool) -> Option<Route> {
        let udp = client.transport == Transport::Udp;
        if !udp && (asks.change() || asks.response_port.is_some()) {
            // RFC 5780 §7.2, §7.5: UDP only; a stream's answer goes back on the connection.
            return None;
        }
        let plain = Route {
            client,
            origin_other: None,
            limited: classic,
        };
        let (Some(alt), true) = (self.config.stun_alternate, udp) else {
            return Some(plain);
        };
        let port = self.config.udp_listeners.get(client.local as usize)?.port();
        let local = SocketAddr::new(client.local_ip, port);
        if local.is_ipv4() != alt.alternate.is_ipv4() {
            // The alternate address serves one family; the other is plain STUN.
            return (!asks.change()).then_some(plain);
        }
        let origin = alt.origin(local, asks.change_ip, asks.change_port);
        let listener = if origin == local {
            client.local
        } else {
            self.listener_for(origin)?
        };
        let to = SocketAddr::new(
            client.remote.ip(),
            asks.response_port.unwrap_or(client.remote.port()),
        );
        Some(Route {
            client: ClientId {
                transport: Transport::Udp,
                local: listener,
                remote: to,
                local_ip: origin.ip(),
            },
            origin_other: Some((origin, alt.other(local))),
            limited: classic || origin != local || to != client.remote,
        })
    }

    /// The UDP listener bound to `addr` (or to the wildcard of its family and its port).
    fn listener_for(&self, addr: SocketAddr) -> Option<u32> {
        let l = &self.config.udp_listeners;
        let exact = l.iter().position(|a| *a == addr);
        let wildcard = || {
            l.iter().position(|a| {
                a.port() == addr.port() && a.ip().is_unspecified() && a.is_ipv4() == addr.is_ipv4()
            })
        };
        exact.or_else(wildcard).map(|i| i as u32)
    }

    /// The size of a Binding success on `route` before PADDING and FINGERPRINT.
    fn binding_len(&self, route: &Route, mapped: SocketAddr, classic: bool) -> usize {
        let one = 4 + attr::address_len(&mapped);
        let extra = route.origin_other.map_or(0, |(o, x)| {
            8 + attr::address_len(&o) + attr::address_len(&x)
        });
        // A FINGERPRINT may follow (8 bytes): counted so a padded answer stays in the MTU.
        HEADER_LEN + one + extra + if classic { 0 } else { 8 }
    }

    /// Queues a Binding success, held to the reflection limits.
    fn send_binding(
        &mut self,
        now: Now,
        route: Route,
        request_len: usize,
        bytes: Vec<u8>,
        padded: bool,
    ) {
        let limited = route.limited || padded;
        if bytes.len() > super::answer_budget(request_len) {
            self.stats.error_responses_suppressed += 1;
            return;
        }
        let source = source_key(route.client.remote.ip(), self.config.ipv6_source_prefix);
        if limited && !self.error_limiter.allow(source, now.mono) {
            self.stats.error_responses_suppressed += 1;
            return;
        }
        self.commands.push_back(Command::SendToClient {
            client: route.client,
            bytes,
        });
    }
}

/// The attributes of an RFC 3489 Binding request (type 0x0001, no magic cookie, a length that
/// matches the packet, attributes that fit), or None if `packet` is not one.
fn classic_attributes(packet: &[u8]) -> Option<ClassicAttributes<'_>> {
    if packet.len() < HEADER_LEN || packet[..2] != [0x00, 0x01] {
        return None;
    }
    if u32::from_be_bytes(packet[4..8].try_into().ok()?) == crate::wire::MAGIC_COOKIE {
        return None;
    }
    let len = u16::from_be_bytes([packet[2], packet[3]]) as usize;
    if HEADER_LEN + len != packet.len() || !len.is_multiple_of(4) {
        return None;
    }
    let attrs = ClassicAttributes {
        raw: packet,
        at: HEADER_LEN,
    };
    // Every attribute must fit, exactly.
    let mut end = HEADER_LEN;
    for (_, v) in attrs.clone() {
        end = (v.as_ptr() as usize - packet.as_ptr() as usize) + crate::wire::padded(v.len());
    }
    (end == packet.len()).then_some(attrs)
}

/// Walks an RFC 3489 message's attributes (type, value); stops at the first that overruns.
#[derive(Clone)]
struct ClassicAttributes<'a> {
    raw: &'a [u8],
    at: usize,
}

impl<'a> Iterator for ClassicAttributes<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let head = self.raw.get(self.at..self.at + 4)?;
        let typ = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        let value = self.raw.get(self.at + 4..self.at + 4 + len)?;
        if self.at + 4 + crate::wire::padded(len) > self.raw.len() {
            return None;
        }
        self.at += 4 + crate::wire::padded(len);
        Some((typ, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alt() -> StunAlternate {
        StunAlternate {
            primary: "192.0.2.1:3478".parse().unwrap(),
            alternate: "192.0.2.2:3479".parse().unwrap(),
        }
    }

    #[test]
    fn other_and_origin_follow_rfc5780_from_each_of_the_four_addresses() {
        let a = alt();
        let [p, alt_ip, alt_port, both] = a.addresses();
        assert_eq!(a.other(p), both);
        assert_eq!(a.other(both), p);
        assert_eq!(a.other(alt_ip), alt_port);
        assert_eq!(a.other(alt_port), alt_ip);
        assert_eq!(a.origin(p, true, false), alt_ip);
        assert_eq!(a.origin(p, false, true), alt_port);
        assert_eq!(a.origin(p, true, true), both);
        assert_eq!(a.origin(alt_ip, true, false), p);
        assert_eq!(a.origin(both, false, false), both);
    }

    #[test]
    fn asks_decode_rejects_malformed_rfc5780_attributes() {
        let ok = Asks::decode([(attr::CHANGE_REQUEST, &[0u8, 0, 0, 6][..])].into_iter());
        assert_eq!(
            ok,
            Ok(Asks {
                change_ip: true,
                change_port: true,
                ..Asks::default()
            })
        );
        for bad in [
            vec![(attr::CHANGE_REQUEST, &[0u8, 0, 6][..])],
            vec![(attr::RESPONSE_PORT, &[0u8, 0, 0, 0][..])],
            vec![(attr::RESPONSE_PORT, &[1u8, 2][..])],
            vec![(attr::PADDING, &[][..]), (attr::PADDING, &[][..])],
        ] {
            assert_eq!(Asks::decode(bad.into_iter()), Err(Reject::BadRequest));
        }
    }

    #[test]
    fn classic_requests_are_told_from_others() {
        let mut p = vec![0x00, 0x01, 0x00, 0x08];
        p.extend_from_slice(&[9; 16]);
        p.extend_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 0]);
        assert_eq!(classic_attributes(&p).unwrap().count(), 1);
        let mut overrun = p.clone();
        overrun[23] = 8;
        assert!(classic_attributes(&overrun).is_none());
        let mut modern = p.clone();
        modern[4..8].copy_from_slice(&crate::wire::MAGIC_COOKIE.to_be_bytes());
        assert!(classic_attributes(&modern).is_none());
        assert!(classic_attributes(&p[..19]).is_none());
    }
}
