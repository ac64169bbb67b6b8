//! Which peers an allocation may talk to: CreatePermission (RFC 8656 §9.2) and ChannelBind
//! (§11.2), from decoded requests.

use super::allocations::Slot;
use super::authenticate::Authed;
use super::decode::{ChannelBindRequest, PermissionRequest};
use super::reject::Reject;
use super::respond::Request;
use super::{Now, Server};
use crate::wire::Class;
use std::net::SocketAddr;

impl Server {
    /// The client's answered allocation, or 437 (RFC 8656 §7.3, §9.2, §11.2).
    pub(super) fn ready_allocation(&self, req: &Request) -> Result<Slot, Reject> {
        self.allocations
            .ready(&req.client)
            .ok_or(Reject::AllocationMismatch)
    }

    /// Checks a peer address for an allocation: the family must match one of its relays
    /// (443), and the policy must allow it (403) unless it is one of this server's own relayed
    /// addresses. Returns whether the peer is reachable only as such a hairpin.
    fn check_peer(&mut self, req: &Request, slot: Slot, peer: SocketAddr) -> Result<bool, Reject> {
        let a = self
            .allocations
            .get(slot)
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
        self.emit(super::Event::PeerDenied {
            client: req.client,
            peer,
            method: req.method,
        });
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

    /// RFC 8656 §9.2: CreatePermission, all XOR-PEER-ADDRESSes or none.
    pub(super) fn create_permission(
        &mut self,
        now: Now,
        req: &Request,
        decoded: Result<PermissionRequest, Reject>,
        auth: &Authed,
    ) -> Result<(), Reject> {
        let slot = self.ready_allocation(req)?;
        let wanted = decoded?;
        let mut checked = Vec::with_capacity(wanted.peers.len());
        for peer in &wanted.peers {
            checked.push((peer.ip(), self.check_peer(req, slot, *peer)?));
        }
        let max_permissions = self.config.max_permissions;
        let a = self
            .allocations
            .get_mut(slot)
            .ok_or(Reject::AllocationMismatch)?;
        let new = checked
            .iter()
            .filter(|(ip, _)| a.permission(*ip, now.mono).is_none())
            .count();
        if a.permissions.len() + new > max_permissions {
            return Err(Reject::InsufficientCapacity);
        }
        let mut installed = Vec::new();
        for (ip, hairpin) in checked {
            if a.install_permission(ip, now.mono, hairpin) {
                self.stats.permissions_active += 1;
                installed.push(ip);
            }
        }
        for peer in installed {
            self.emit(super::Event::PermissionInstalled {
                client: req.client,
                peer,
            });
        }
        // A refreshed permission moves the expiry of the channels bound to its peers.
        for peer in &wanted.peers {
            self.install_routes(slot, Some(peer.ip()), now.mono);
        }
        self.respond(req, Class::Success, Some(auth), false, |_| {});
        Ok(())
    }

    /// RFC 8656 §11.2: ChannelBind; also installs or refreshes the peer's permission.
    pub(super) fn channel_bind(
        &mut self,
        now: Now,
        req: &Request,
        decoded: Result<ChannelBindRequest, Reject>,
        auth: &Authed,
    ) -> Result<(), Reject> {
        let slot = self.ready_allocation(req)?;
        let ChannelBindRequest { number, peer } = decoded?;
        let hairpin = self.check_peer(req, slot, peer)?;
        let max_channels = self.config.max_channels;
        let max_permissions = self.config.max_permissions;
        let a = self
            .allocations
            .get_mut(slot)
            .ok_or(Reject::AllocationMismatch)?;
        // §11.2: a number bound to another peer, or a peer bound to another number, while
        // either binding lives or cools down, is 400.
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
        let bound = a.bind_channel(number, peer, now.mono, hairpin);
        let installed = a.install_permission(peer.ip(), now.mono, hairpin);
        if bound {
            self.stats.channels_active += 1;
            self.emit(super::Event::ChannelBound {
                client: req.client,
                peer,
                channel: number.get(),
            });
        }
        if installed {
            self.stats.permissions_active += 1;
            self.emit(super::Event::PermissionInstalled {
                client: req.client,
                peer: peer.ip(),
            });
        }
        self.install_routes(slot, Some(peer.ip()), now.mono);
        self.respond(req, Class::Success, Some(auth), false, |_| {});
        Ok(())
    }
}
