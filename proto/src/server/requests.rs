//! STUN requests: parsing, dispatch (Binding is in `binding.rs`), and the steps every TURN request takes
//! (RFC 8656 §5): authentication, unknown attributes, the allocation's owner. Each method's
//! attributes are decoded into a typed request (`decode.rs`) before any state changes; its
//! handler (`allocate.rs`, `peers.rs`, Refresh here) only decides.

use super::allocate::granted_lifetime;
use super::authenticate::Authed;
use super::decode::{
    AllocateRequest, ChannelBindRequest, PermissionRequest, RefreshRequest, UnknownAttributes,
};
use super::reject::Reject;
use super::respond::Request;
use super::{ClientId, Now, Server};
use crate::wire::{attr, Class, DecodeError, Message, Method};

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
            Err(DecodeError::NotStun) if self.classic_binding(now, client, packet) => return,
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

    /// Authentication, then the method's own rules.
    fn turn_request(&mut self, now: Now, req: &Request, msg: &Message<'_>) {
        if req.method == Method::ALLOCATE && self.answer_retransmission(req) {
            return;
        }
        let auth = match self.authenticate(now, &req.client, msg) {
            Ok(a) => a,
            Err(reject) => {
                if req.method == Method::ALLOCATE && reject != Reject::Unauthorized {
                    self.stats.allocations_refused += 1;
                }
                // Reported as the auth_failed event (or the normal first-round challenge).
                return self.send_error(req, reject, None, now, &[], false);
            }
        };
        if let Some(unknown) = UnknownAttributes::of(msg) {
            let types = unknown.types();
            return self.reject_with(req, Reject::UnknownAttribute, Some(&auth), now, types);
        }
        if let Some(a) = self.allocations.of_client(&req.client) {
            // RFC 8656 §5: requests on an allocation must use the username that created it.
            // An Allocate on a 5-tuple in use is 437 whoever sends it (§7.2, checked there).
            if req.method != Method::ALLOCATE && a.username != auth.username {
                self.auth_failed(&req.client, crate::auth::AuthFailure::WrongCredentials);
                return self.send_error(
                    req,
                    Reject::WrongCredentials,
                    Some(&auth),
                    now,
                    &[],
                    false,
                );
            }
        }
        let legacy_channels = self.config.legacy_channel_numbers;
        let result = match req.method {
            Method::ALLOCATE => self.allocate(now, req, AllocateRequest::decode(msg), &auth),
            Method::REFRESH => self.refresh(now, req, RefreshRequest::decode(msg), &auth),
            Method::CREATE_PERMISSION => {
                self.create_permission(now, req, PermissionRequest::decode(msg), &auth)
            }
            _ => {
                let decoded = ChannelBindRequest::decode(msg, legacy_channels);
                self.channel_bind(now, req, decoded, &auth)
            }
        };
        if let Err(reject) = result {
            if req.method == Method::ALLOCATE {
                self.stats.allocations_refused += 1;
            }
            self.reject(req, reject, Some(&auth), now);
        }
    }

    /// RFC 8656 §7.3: Refresh; LIFETIME 0 deletes the allocation.
    fn refresh(
        &mut self,
        now: Now,
        req: &Request,
        decoded: Result<RefreshRequest, Reject>,
        auth: &Authed,
    ) -> Result<(), Reject> {
        let slot = self.ready_allocation(req)?;
        let wanted = decoded?;
        let a = self
            .allocations
            .get_mut(slot)
            .ok_or(Reject::AllocationMismatch)?;
        // §7.3: REQUESTED-ADDRESS-FAMILY must name a family the allocation relays (443).
        if wanted.family.is_some_and(|f| a.relays[f].is_none()) {
            return Err(Reject::PeerAddressFamilyMismatch);
        }
        let lifetime = granted_lifetime(wanted.lifetime, false);
        if lifetime.is_zero() {
            self.respond(req, Class::Success, Some(auth), false, |enc| {
                enc.u32_attr(attr::LIFETIME, 0);
            });
            self.end_allocation(slot, super::EndReason::Deleted, now);
            return Ok(());
        }
        a.expires = now.mono + lifetime;
        self.respond(req, Class::Success, Some(auth), false, |enc| {
            enc.u32_attr(attr::LIFETIME, lifetime.as_secs() as u32);
        });
        self.emit(super::Event::AllocationRefreshed {
            client: req.client,
            lifetime,
        });
        Ok(())
    }
}
