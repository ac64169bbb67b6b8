//! STUN requests: Binding (RFC 8489 §6.3) and TURN's Allocate, Refresh, CreatePermission and
//! ChannelBind (RFC 8656 §7, §9, §11). Each handler cites the section whose rules it applies.

use super::allocation::{Allocation, PortChoice};
use super::authenticate::Authed;
use super::ledger::Holder;
use super::reject::Reject;
use super::respond::Request;
use super::{ClientId, Now, Server, DEFAULT_LIFETIME, MAX_LIFETIME};
use crate::source_key::source_key;
use crate::wire::channel_data::{CHANNEL_MAX, CHANNEL_MIN, LEGACY_CHANNEL_MAX};
use crate::wire::{attr, Class, DecodeError, Message, Method};
use std::net::SocketAddr;
use std::time::Duration;

/// The unknown comprehension-required attributes of a request (RFC 8489 §6.3.1 → 420).
fn unknown_required(msg: &Message<'_>) -> Vec<u16> {
    let mut unknown: Vec<u16> = msg
        .attributes()
        .map(|a| a.typ)
        .filter(|t| !attr::is_understood(*t))
        .collect();
    unknown.dedup();
    unknown.truncate(16);
    unknown
}

/// The Allocate request an allocation answers, and the credentials its answer is protected
/// with: what a response sent after the relay binds (or fails to) needs.
fn allocate_context(a: &Allocation) -> (Request, Authed) {
    let req = Request {
        client: a.client,
        method: Method::ALLOCATE,
        tid: a.allocate_tid,
        fingerprint: a.request_fingerprint,
        len: usize::MAX,
    };
    let auth = Authed {
        username: a.username.clone(),
        user_id: a.user_id.clone(),
        key: a.key.clone(),
        sha256: a.use_sha256,
    };
    (req, auth)
}

/// RFC 8656 §7.2 and §7.3: the lifetime a client gets: its request clamped to
/// [default, max] on Allocate, to max on Refresh; 600 s when it asks nothing.
fn granted_lifetime(requested: Option<u32>, allocate: bool) -> Duration {
    match requested {
        None => DEFAULT_LIFETIME,
        Some(s) => {
            let d = Duration::from_secs(u64::from(s)).min(MAX_LIFETIME);
            if allocate {
                d.max(DEFAULT_LIFETIME)
            } else {
                d
            }
        }
    }
}

impl Server {
    /// A STUN message from a client.
    pub(super) fn handle_stun(&mut self, now: Now, client: ClientId, packet: &[u8]) {
        let msg = match Message::parse(packet) {
            Ok(m) => m,
            Err(DecodeError::Malformed) => {
                // A request with a sound header but a broken body is answered 400; anything
                // else is dropped (RFC 8489 §6.3).
                self.stats.dropped_packets += 1;
                if let Some((method, Class::Request, tid)) = Message::peek_header(packet) {
                    let req = Request {
                        client,
                        method,
                        tid,
                        fingerprint: false,
                        len: packet.len(),
                    };
                    self.reject(&req, Reject::BadRequest, None, now);
                }
                return;
            }
            Err(_) => {
                self.stats.dropped_packets += 1;
                return;
            }
        };
        if msg.class() != Class::Request {
            // Responses are never expected; Binding indications are keepalives.
            if msg.class() != Class::Indication || msg.method() != Method::BINDING {
                self.stats.dropped_packets += 1;
            }
            return;
        }
        let req = Request {
            client,
            method: msg.method(),
            tid: msg.transaction_id(),
            fingerprint: msg.has_fingerprint(),
            len: packet.len(),
        };
        match msg.method() {
            Method::BINDING => self.binding(now, &req, &msg),
            Method::ALLOCATE
            | Method::REFRESH
            | Method::CREATE_PERMISSION
            | Method::CHANNEL_BIND => self.turn_request(now, &req, &msg),
            _ => self.reject(&req, Reject::BadRequest, None, now),
        }
    }

    /// RFC 8489 §6.3.1: Binding answers the client's reflexive address.
    fn binding(&mut self, now: Now, req: &Request, msg: &Message<'_>) {
        self.stats.binding_requests += 1;
        let unknown = unknown_required(msg);
        if !unknown.is_empty() {
            return self.reject_with(req, Reject::UnknownAttribute, None, now, &unknown);
        }
        let mapped = req.client.remote;
        self.respond(req, Class::Success, None, false, |enc| {
            enc.xor_address(attr::XOR_MAPPED_ADDRESS, mapped);
        });
    }

    /// Authentication, then the method's own rules.
    fn turn_request(&mut self, now: Now, req: &Request, msg: &Message<'_>) {
        if req.method == Method::ALLOCATE {
            // RFC 8656 §7.2: a retransmitted Allocate gets the original answer, before anything
            // else (its nonce may have gone stale in between).
            if let Some(a) = self.allocation_of(&req.client) {
                if a.allocate_tid == req.tid {
                    if let Some(bytes) = a.allocate_response.clone() {
                        self.commands.push_back(super::Command::SendToClient {
                            client: req.client,
                            bytes,
                        });
                    }
                    return;
                }
            }
        }
        let auth = match self.authenticate(now, &req.client, msg) {
            Ok(a) => a,
            Err(reject) => {
                if req.method == Method::ALLOCATE && reject != Reject::Unauthorized {
                    self.stats.allocations_refused += 1;
                }
                return self.reject(req, reject, None, now);
            }
        };
        let unknown = unknown_required(msg);
        if !unknown.is_empty() {
            return self.reject_with(req, Reject::UnknownAttribute, Some(&auth), now, &unknown);
        }
        if let Some(a) = self.allocation_of(&req.client) {
            // RFC 8656 §5: requests on an allocation must use the username that created it.
            // An Allocate on a 5-tuple in use is 437 whoever sends it (§7.2, checked there).
            if req.method != Method::ALLOCATE && a.username != auth.username {
                self.stats.auth_failures[crate::auth::AuthFailure::WrongCredentials.index()] += 1;
                return self.reject(req, Reject::WrongCredentials, Some(&auth), now);
            }
        }
        let result = match req.method {
            Method::ALLOCATE => self.allocate(now, req, msg, &auth),
            Method::REFRESH => self.refresh(now, req, msg, &auth),
            Method::CREATE_PERMISSION => self.create_permission(now, req, msg, &auth),
            _ => self.channel_bind(now, req, msg, &auth),
        };
        if let Err(reject) = result {
            if req.method == Method::ALLOCATE {
                self.stats.allocations_refused += 1;
            }
            self.reject(req, reject, Some(&auth), now);
        }
    }

    /// RFC 8656 §7.2: Allocate.
    fn allocate(
        &mut self,
        now: Now,
        req: &Request,
        msg: &Message<'_>,
        auth: &Authed,
    ) -> Result<(), Reject> {
        if self.allocation_of(&req.client).is_some() {
            return Err(Reject::AllocationMismatch);
        }
        if self.ledger.is_draining() {
            // Shutting down: another server should take this client (RFC 8656 §7.2, 508).
            return Err(Reject::InsufficientCapacity);
        }
        match msg.get(attr::REQUESTED_TRANSPORT) {
            Some(v) if v.len() == 4 && v[0] == attr::TRANSPORT_UDP => {}
            Some(v) if v.len() == 4 => return Err(Reject::UnsupportedTransportProtocol),
            _ => return Err(Reject::BadRequest),
        }
        let requested_family = msg.get(attr::REQUESTED_ADDRESS_FAMILY);
        let additional_family = msg.get(attr::ADDITIONAL_ADDRESS_FAMILY);
        let even_port = msg.get(attr::EVEN_PORT);
        let token = msg.get(attr::RESERVATION_TOKEN);
        if token.is_some()
            && (even_port.is_some() || requested_family.is_some() || additional_family.is_some())
        {
            // §7.2: RESERVATION-TOKEN excludes EVEN-PORT and the family attributes.
            return Err(Reject::BadRequest);
        }
        let mut choice = match even_port {
            None => PortChoice::Any,
            Some([flags, ..]) if flags & 0x80 == 0 => PortChoice::Even,
            Some([_, ..]) => PortChoice::EvenReserveNext,
            Some(_) => return Err(Reject::BadRequest),
        };
        if requested_family.is_some() && additional_family.is_some() {
            return Err(Reject::BadRequest);
        }
        // Which families to relay: index 0 IPv4, 1 IPv6 (RFC 8656 §7.2, RFC 6156).
        let mut families = [false; 2];
        let mut additional_refused = false;
        let mut reserved = None;
        if let Some(token) = token {
            // §7.2: an unknown or expired token is 508.
            let r = self
                .ledger
                .claim(token)
                .ok_or(Reject::InsufficientCapacity)?;
            choice = PortChoice::Reserved(r.port);
            families[r.family] = true;
            reserved = Some(r);
        }
        match requested_family.map(attr::read_family) {
            None if reserved.is_some() => {}
            None => families[0] = true,
            Some(Some(attr::FAMILY_IPV4)) => families[0] = true,
            Some(Some(attr::FAMILY_IPV6)) => families[1] = true,
            Some(_) => return Err(Reject::AddressFamilyNotSupported),
        }
        match additional_family.map(attr::read_family) {
            None => {}
            Some(Some(attr::FAMILY_IPV6)) => {
                if self.config.relay_v6.is_some() {
                    families[1] = true;
                } else {
                    additional_refused = true;
                }
            }
            Some(_) => return Err(Reject::BadRequest),
        }
        if families[0] && self.config.relay_v4.is_none()
            || families[1] && self.config.relay_v6.is_none()
        {
            return Err(Reject::AddressFamilyNotSupported);
        }
        for (f, wanted) in families.iter().enumerate() {
            if *wanted && reserved.is_none() && !self.port_available(f) {
                return Err(Reject::InsufficientCapacity);
            }
        }
        // Counted by user id and by client address (IPv6 by prefix): a client that mints a
        // fresh user id per Allocate still meets the per-address quota.
        let source = source_key(req.client.remote.ip(), self.config.ipv6_source_prefix);
        let holder = Holder {
            user_id: auth.user_id.clone(),
            source,
        };
        if let Err(e) = self.ledger.acquire(&holder) {
            if let Some(r) = reserved {
                self.give_back_port(r.family, r.port);
            }
            return Err(e);
        }

        let lifetime = granted_lifetime(msg.get(attr::LIFETIME).and_then(attr::read_u32), true);
        let allocation = Allocation {
            client: req.client,
            username: auth.username.clone(),
            user_id: auth.user_id.clone(),
            source,
            key: auth.key.clone(),
            use_sha256: auth.sha256,
            relays: [None, None],
            created: now.mono,
            expires: now.mono + lifetime,
            permissions: Vec::new(),
            channels: Vec::new(),
            allocate_tid: req.tid,
            allocate_response: None,
            dont_fragment: msg.get(attr::DONT_FRAGMENT).is_some(),
            additional_family_refused: additional_refused,
            request_fingerprint: req.fingerprint,
            reservation: None,
        };
        let index = match self.free_allocations.pop() {
            Some(i) => {
                self.allocations[i as usize] = Some(allocation);
                i
            }
            None => {
                self.allocations.push(Some(allocation));
                self.allocations.len() as u32 - 1
            }
        };
        self.by_client.insert(req.client, index);
        for (f, wanted) in families.iter().enumerate() {
            // Only the first family honours EVEN-PORT; an additional IPv6 relay takes any port.
            let this_choice = if f == 0 || !families[0] {
                choice
            } else {
                PortChoice::Any
            };
            if *wanted && !self.request_bind(index, f, this_choice, now) {
                self.fail_pending_allocation(index, now);
                return Ok(());
            }
        }
        self.reschedule(now);
        Ok(())
    }

    /// Sends the Allocate success response once every relay socket is bound.
    pub(super) fn finish_allocate_if_bound(&mut self, index: u32, now: Now) {
        let Some(a) = self.allocations[index as usize].as_ref() else {
            return;
        };
        if a.is_ready() || a.relays.iter().flatten().any(|r| !r.bound) {
            return;
        }
        let (req, auth) = allocate_context(a);
        let relayed: Vec<SocketAddr> = a.relays.iter().flatten().map(|r| r.advertised).collect();
        let lifetime = a.expires.saturating_duration_since(now.mono).as_secs() as u32;
        let refused = a.additional_family_refused;
        let reservation = a.reservation;
        let family = a.relays.iter().position(|r| r.is_some()).unwrap_or(0);
        let transport = a.client.transport;
        let mapped = a.client.remote;
        let bytes = self.respond(&req, Class::Success, Some(&auth), true, |enc| {
            for r in &relayed {
                enc.xor_address(attr::XOR_RELAYED_ADDRESS, *r);
            }
            enc.u32_attr(attr::LIFETIME, lifetime);
            enc.xor_address(attr::XOR_MAPPED_ADDRESS, mapped);
            if let Some(token) = reservation {
                enc.attr(attr::RESERVATION_TOKEN, &token);
            }
            if refused {
                enc.error_code(
                    attr::ADDRESS_ERROR_CODE,
                    attr::FAMILY_IPV6,
                    Reject::AddressFamilyNotSupported.code(),
                    Reject::AddressFamilyNotSupported.reason(),
                );
            }
        });
        if let Some(a) = self.allocations[index as usize].as_mut() {
            a.allocate_response = bytes;
        }
        self.stats.allocations_created += 1;
        *self.stats.allocation_gauge(transport, family) += 1;
    }

    /// No relay socket could be had: 508 (RFC 8656 §7.2), quota and ports returned.
    pub(super) fn fail_pending_allocation(&mut self, index: u32, now: Now) {
        let Some(a) = self.allocations[index as usize].as_ref() else {
            return;
        };
        let (req, auth) = allocate_context(a);
        self.remove_allocation(index, now);
        self.stats.allocations_refused += 1;
        self.reject(&req, Reject::InsufficientCapacity, Some(&auth), now);
    }

    /// RFC 8656 §7.3: Refresh; LIFETIME 0 deletes the allocation.
    fn refresh(
        &mut self,
        now: Now,
        req: &Request,
        msg: &Message<'_>,
        auth: &Authed,
    ) -> Result<(), Reject> {
        let index = *self
            .by_client
            .get(&req.client)
            .ok_or(Reject::AllocationMismatch)?;
        let a = self.allocations[index as usize]
            .as_mut()
            .ok_or(Reject::AllocationMismatch)?;
        if !a.is_ready() {
            return Err(Reject::AllocationMismatch);
        }
        match msg
            .get(attr::REQUESTED_ADDRESS_FAMILY)
            .map(attr::read_family)
        {
            None => {}
            Some(Some(attr::FAMILY_IPV4)) if a.relays[0].is_some() => {}
            Some(Some(attr::FAMILY_IPV6)) if a.relays[1].is_some() => {}
            Some(_) => return Err(Reject::PeerAddressFamilyMismatch),
        }
        let requested = msg.get(attr::LIFETIME).and_then(attr::read_u32);
        let lifetime = granted_lifetime(requested, false);
        if lifetime.is_zero() {
            self.respond(req, Class::Success, Some(auth), false, |enc| {
                enc.u32_attr(attr::LIFETIME, 0);
            });
            self.stats.allocations_deleted += 1;
            self.remove_allocation(index, now);
            return Ok(());
        }
        a.expires = now.mono + lifetime;
        self.respond(req, Class::Success, Some(auth), false, |enc| {
            enc.u32_attr(attr::LIFETIME, lifetime.as_secs() as u32);
        });
        Ok(())
    }

    /// Checks a peer address for an allocation: the family must match one of its relays
    /// (443), and the policy must allow it (403) unless it is one of this server's own relayed
    /// addresses. Returns whether the peer is reachable only as such a hairpin.
    fn check_peer(&mut self, index: u32, peer: SocketAddr) -> Result<bool, Reject> {
        let a = self.allocations[index as usize]
            .as_ref()
            .ok_or(Reject::AllocationMismatch)?;
        if a.relay_for(peer.ip()).is_none() {
            return Err(Reject::PeerAddressFamilyMismatch);
        }
        let policy = &self.config.policy;
        if policy.allows(peer.ip()) {
            return Ok(false);
        }
        if !policy.operator_denies(peer.ip()) && self.is_own_relay(peer) {
            return Ok(true);
        }
        self.stats.peer_denied += 1;
        Err(Reject::Forbidden)
    }

    /// Whether `peer` is a relayed address this server (any worker) holds right now.
    #[inline]
    pub(super) fn is_own_relay(&self, peer: SocketAddr) -> bool {
        let ours = [self.config.relay_v4, self.config.relay_v6]
            .iter()
            .flatten()
            .any(|r| r.advertised == peer.ip() || r.bind == peer.ip());
        ours && self.ledger.is_relay_port(peer.ip(), peer.port())
    }

    fn ready_allocation(&self, client: &ClientId) -> Result<u32, Reject> {
        let index = *self
            .by_client
            .get(client)
            .ok_or(Reject::AllocationMismatch)?;
        match self.allocations[index as usize].as_ref() {
            Some(a) if a.is_ready() => Ok(index),
            _ => Err(Reject::AllocationMismatch),
        }
    }

    /// RFC 8656 §9.2: CreatePermission, all XOR-PEER-ADDRESSes or none.
    fn create_permission(
        &mut self,
        now: Now,
        req: &Request,
        msg: &Message<'_>,
        auth: &Authed,
    ) -> Result<(), Reject> {
        let index = self.ready_allocation(&req.client)?;
        let mut peers = Vec::new();
        for a in msg.attributes().filter(|a| a.typ == attr::XOR_PEER_ADDRESS) {
            let peer = attr::read_xor_address(a.value, &req.tid).ok_or(Reject::BadRequest)?;
            peers.push(peer);
        }
        if peers.is_empty() {
            return Err(Reject::BadRequest);
        }
        let mut checked = Vec::with_capacity(peers.len());
        for peer in &peers {
            checked.push((peer.ip(), self.check_peer(index, *peer)?));
        }
        let a = self.allocations[index as usize]
            .as_mut()
            .expect("ready allocation");
        let new = checked
            .iter()
            .filter(|(ip, _)| a.permission(*ip, now.mono).is_none())
            .count();
        if a.permissions.len() + new > self.config.max_permissions {
            return Err(Reject::InsufficientCapacity);
        }
        for (ip, hairpin) in checked {
            if a.install_permission(ip, now.mono, hairpin) {
                self.stats.permissions_active += 1;
            }
        }
        self.respond(req, Class::Success, Some(auth), false, |_| {});
        Ok(())
    }

    /// RFC 8656 §11.2: ChannelBind; also installs or refreshes the peer's permission.
    fn channel_bind(
        &mut self,
        now: Now,
        req: &Request,
        msg: &Message<'_>,
        auth: &Authed,
    ) -> Result<(), Reject> {
        let index = self.ready_allocation(&req.client)?;
        let number = msg
            .get(attr::CHANNEL_NUMBER)
            .and_then(attr::read_channel_number)
            .ok_or(Reject::BadRequest)?;
        let max = if self.config.legacy_channel_numbers {
            LEGACY_CHANNEL_MAX
        } else {
            CHANNEL_MAX
        };
        if !(CHANNEL_MIN..=max).contains(&number) {
            return Err(if (CHANNEL_MIN..=LEGACY_CHANNEL_MAX).contains(&number) {
                Reject::ChannelNumberOutOfRange
            } else {
                Reject::BadRequest
            });
        }
        let peer = msg
            .get(attr::XOR_PEER_ADDRESS)
            .and_then(|v| attr::read_xor_address(v, &req.tid))
            .ok_or(Reject::BadRequest)?;
        let hairpin = self.check_peer(index, peer)?;
        let max_channels = self.config.max_channels;
        let max_permissions = self.config.max_permissions;
        let a = self.allocations[index as usize]
            .as_mut()
            .expect("ready allocation");
        if a.channel_conflict(number, peer, now.mono) {
            return Err(Reject::BadRequest);
        }
        let is_rebind = a.channels.iter().any(|c| c.number == number);
        if !is_rebind && a.reserved_channels(now.mono) >= max_channels {
            return Err(Reject::InsufficientCapacity);
        }
        if a.permission(peer.ip(), now.mono).is_none() && a.permissions.len() >= max_permissions {
            return Err(Reject::InsufficientCapacity);
        }
        if a.bind_channel(number, peer, now.mono, hairpin) {
            self.stats.channels_active += 1;
        }
        if a.install_permission(peer.ip(), now.mono, hairpin) {
            self.stats.permissions_active += 1;
        }
        self.respond(req, Class::Success, Some(auth), false, |_| {});
        Ok(())
    }
}
