//! Allocate (RFC 8656 §7.2): from a decoded request to an allocation waiting for its relay
//! sockets, and the answer once they are bound (or could not be).

use super::allocation::{Allocation, PortChoice};
use super::allocations::Slot;
use super::authenticate::Authed;
use super::decode::{AllocateRequest, FamilyRequest, PortRequest};
use super::ledger::{Holder, Reservation};
use super::reject::Reject;
use super::respond::Request;
use super::{Now, Server, DEFAULT_LIFETIME, MAX_LIFETIME};
use crate::source_key::source_key;
use crate::wire::{attr, Class, Family, Method, PerFamily};
use std::net::SocketAddr;
use std::time::Duration;

/// RFC 8656 §7.2 and §7.3: the lifetime a client gets: its request clamped to
/// [default, max] on Allocate, to max on Refresh; 600 s when it asks nothing.
pub(super) fn granted_lifetime(requested: Option<u32>, allocate: bool) -> Duration {
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

/// The relays an Allocate gets, once its reservation (if any) is claimed.
struct Plan {
    families: PerFamily<bool>,
    choice: PortChoice,
    /// ADDITIONAL-ADDRESS-FAMILY asked for IPv6 and this server relays none: the answer
    /// carries ADDRESS-ERROR-CODE 440 (RFC 8656 §7.2).
    additional_refused: bool,
    reserved: Option<Reservation>,
}

impl Server {
    /// RFC 8656 §7.2: Allocate. `decoded` was read from the message before anything else;
    /// its refusal is reported after 437 and 508, in the section's order.
    pub(super) fn allocate(
        &mut self,
        now: Now,
        req: &Request,
        decoded: Result<AllocateRequest, Reject>,
        auth: &Authed,
    ) -> Result<(), Reject> {
        if self.allocations.contains(&req.client) {
            return Err(Reject::AllocationMismatch);
        }
        if self.ledger.is_draining() {
            // Shutting down: another server should take this client (RFC 8656 §7.2, 508).
            return Err(Reject::InsufficientCapacity);
        }
        let wanted = decoded?;
        let plan = self.plan(&wanted)?;
        // Counted by user id and by client address (IPv6 by prefix): a client that mints a
        // fresh user id per Allocate still meets the per-address quota.
        let source = source_key(req.client.remote.ip(), self.config.ipv6_source_prefix);
        let holder = Holder {
            user_id: auth.user_id.clone(),
            source,
        };
        if let Err(e) = self.ledger.acquire(&holder) {
            self.unclaim(plan.reserved);
            return Err(e);
        }
        let lifetime = granted_lifetime(wanted.lifetime, true);
        let slot = self.allocations.insert(Allocation {
            client: req.client,
            username: auth.username.clone(),
            user_id: auth.user_id.clone(),
            source,
            key: auth.key.clone(),
            use_sha256: auth.sha256,
            relays: PerFamily::default(),
            created: now.mono,
            expires: now.mono + lifetime,
            permissions: Vec::new(),
            channels: Vec::new(),
            allocate_tid: req.tid,
            allocate_response: None,
            dont_fragment: wanted.dont_fragment,
            additional_family_refused: plan.additional_refused,
            request_fingerprint: req.fingerprint,
            reservation: None,
            usage: Default::default(),
        });
        for (family, _) in plan.families.each().filter(|(_, wanted)| **wanted) {
            // Only the first family honours EVEN-PORT; an additional IPv6 relay takes any port.
            let choice = if family == Family::V4 || !plan.families[Family::V4] {
                plan.choice
            } else {
                PortChoice::Any
            };
            if !self.request_bind(slot, family, choice, now) {
                self.fail_pending_allocation(slot, now);
                return Ok(());
            }
        }
        self.reschedule(now);
        Ok(())
    }

    /// Decides which relays an Allocate gets and how their ports are chosen: claims its
    /// reservation (an unknown token is 508), and checks the server relays each family (440)
    /// and has a port for it (508).
    fn plan(&mut self, wanted: &AllocateRequest) -> Result<Plan, Reject> {
        let mut plan = Plan {
            families: PerFamily([false; 2]),
            choice: match wanted.port {
                PortRequest::Any => PortChoice::Any,
                PortRequest::Even => PortChoice::Even,
                PortRequest::EvenReserveNext => PortChoice::EvenReserveNext,
                PortRequest::Reserved(_) => PortChoice::Any,
            },
            additional_refused: false,
            reserved: None,
        };
        if let PortRequest::Reserved(token) = wanted.port {
            let r = token
                .and_then(|t| self.ledger.claim(&t))
                .ok_or(Reject::InsufficientCapacity)?;
            plan.choice = PortChoice::Reserved(r.port);
            plan.families[r.family] = true;
            plan.reserved = Some(r);
        }
        match wanted.families {
            FamilyRequest::OfReservation => {}
            FamilyRequest::One(f) => plan.families[f] = true,
            FamilyRequest::Dual => {
                plan.families[Family::V4] = true;
                if self.config.relay_v6.is_some() {
                    plan.families[Family::V6] = true;
                } else {
                    plan.additional_refused = true;
                }
            }
        }
        for (family, _) in plan.families.each().filter(|(_, wanted)| **wanted) {
            if self.relay_address(family).is_none() {
                self.unclaim(plan.reserved);
                return Err(Reject::AddressFamilyNotSupported);
            }
        }
        if plan.reserved.is_none() {
            for (family, _) in plan.families.each().filter(|(_, wanted)| **wanted) {
                if !self.port_available(family) {
                    return Err(Reject::InsufficientCapacity);
                }
            }
        }
        Ok(plan)
    }

    /// A claimed reservation whose Allocate was refused: its port goes back to a pool.
    fn unclaim(&mut self, reserved: Option<Reservation>) {
        if let Some(r) = reserved {
            self.give_back_port(r.family, r.port);
        }
    }

    /// A retransmitted Allocate gets the original answer (RFC 8656 §7.2), before anything
    /// else: its nonce may have gone stale in between. True when it was one.
    pub(super) fn answer_retransmission(&mut self, req: &Request) -> bool {
        let Some(a) = self.allocations.of_client(&req.client) else {
            return false;
        };
        if a.allocate_tid != req.tid {
            return false;
        }
        if let Some(bytes) = a.allocate_response.clone() {
            self.commands.push_back(super::Command::SendToClient {
                client: req.client,
                bytes,
            });
        }
        true
    }

    /// Sends the Allocate success response once every relay socket is bound.
    pub(super) fn finish_allocate_if_bound(&mut self, slot: Slot, now: Now) {
        let Some(a) = self.allocations.get(slot) else {
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
        let family = a.gauge_family();
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
                    Family::V6.code(),
                    Reject::AddressFamilyNotSupported.code(),
                    Reject::AddressFamilyNotSupported.reason(),
                );
            }
        });
        let Some(a) = self.allocations.get_mut(slot) else {
            return;
        };
        a.allocate_response = bytes;
        let owner = Box::new(super::Owner {
            client: a.client,
            user_id: a.user_id.clone(),
            username: a.username.clone(),
        });
        let mut addrs = [None, None];
        for (slot, r) in addrs.iter_mut().zip(&relayed) {
            *slot = Some(*r);
        }
        self.emit(super::Event::AllocationCreated {
            owner,
            relayed: addrs,
            lifetime: std::time::Duration::from_secs(lifetime.into()),
        });
        self.stats.allocations_created += 1;
        *self.stats.allocation_gauge(transport, family) += 1;
    }

    /// No relay socket could be had: 508 (RFC 8656 §7.2), quota and ports returned.
    pub(super) fn fail_pending_allocation(&mut self, slot: Slot, now: Now) {
        let Some(a) = self.allocations.get(slot) else {
            return;
        };
        let (req, auth) = allocate_context(a);
        self.remove_allocation(slot, now);
        self.stats.allocations_refused += 1;
        self.reject(&req, Reject::InsufficientCapacity, Some(&auth), now);
    }
}
