//! Kernel fast path routes (issue 18): the core decides which UDP ChannelData a kernel
//! program (the shell's XDP relay) may forward without turnd seeing it, and the shell only
//! writes what it is told into the kernel's maps.
//!
//! A route is one channel of one UDP client's allocation, usable both ways (RFC 8656 §12):
//! client → peer needs the channel bound (§12.6) and the peer's permission live (§9); peer →
//! client goes as ChannelData only while a channel is bound to exactly that peer address and
//! the permission lives (§12.7), otherwise as a Data indication, which stays in userspace. So a
//! route carries `expires` = the earlier of the channel's and the permission's expiry, and the
//! kernel program checks it on every packet: a route the shell has not removed yet can never
//! relay past its lifetime. Removal is then tidying, not what enforces the rules.
//!
//! What is never a route, and so always reaches the sockets: TCP/TLS clients (their ChannelData
//! is framed in a stream), channels whose peer is reachable only as a hairpin to this server's
//! own relayed address (`hairpin_only`: userspace checks it per packet), Send and Data
//! indications, and everything STUN.
//!
//! The core emits [`Command::InstallRoute`] when a route becomes usable or its expiry moves
//! (ChannelBind, a permission refresh for a bound peer), and [`Command::RemoveRoute`] when it
//! stops being usable (channel or permission expiry at the sweep, allocation end for any
//! reason: expiry, delete, revocation, drain, shutdown, admin). Nothing is emitted unless
//! [`super::ServerConfig::fast_path`] is set.

use super::allocation::{Allocation, Channel};
use super::allocations::Slot;
use super::{ClientId, Command, Server, ServerConfig, Transport};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// One channel a kernel program may relay, both ways, until `expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelRoute {
    /// The allocation's client (UDP): its address is `client.remote`.
    pub client: ClientId,
    /// The server address and port the client sends to (and replies leave from).
    pub server: SocketAddr,
    /// The channel number (0x4000-0x4FFF, or up to 0x7FFF with legacy numbers).
    pub channel: u16,
    /// The peer bound to the channel.
    pub peer: SocketAddr,
    /// The relay socket's local address in the peer's family (the bind address, which
    /// differs from the advertised one behind 1:1 NAT: packets arrive addressed to it).
    pub relay: SocketAddr,
    /// The earlier of the channel's and the permission's expiry.
    pub expires: Instant,
}

/// A channel's route keys (client, server, channel, peer, relay), with the channel's expiry;
/// None for a stream client, or a peer family without a relay.
fn route_keys(config: &ServerConfig, a: &Allocation, ch: &Channel) -> Option<ChannelRoute> {
    if a.client.transport != Transport::Udp {
        return None;
    }
    let relay = a.relay_for(ch.peer.ip())?;
    let family = crate::wire::Family::of(ch.peer.ip());
    let bind = match family {
        crate::wire::Family::V4 => config.relay_v4,
        crate::wire::Family::V6 => config.relay_v6,
    }?
    .bind;
    let port = config.udp_listeners.get(a.client.local as usize)?.port();
    Some(ChannelRoute {
        client: a.client,
        server: SocketAddr::new(a.client.local_ip, port),
        channel: ch.number.get(),
        peer: ch.peer,
        relay: SocketAddr::new(bind, relay.advertised.port()),
        expires: ch.expires,
    })
}

/// The route a channel may be, if it may be one: not a hairpin, with the peer's permission
/// installed; it expires with the earlier of channel and permission.
fn usable_route(config: &ServerConfig, a: &Allocation, ch: &Channel) -> Option<ChannelRoute> {
    let perm = a.permissions.iter().find(|p| p.ip == ch.peer.ip())?;
    if ch.hairpin_only || perm.hairpin_only {
        return None;
    }
    let mut r = route_keys(config, a, ch)?;
    r.expires = r.expires.min(perm.expires);
    Some(r)
}

/// At a sweep, before `prune`: removals for the channels of `a` that stop being usable now (the
/// channel expired and is not yet reported, or its peer's permission expired), pushed onto
/// `commands`.
pub(super) fn remove_stale_routes(
    config: &ServerConfig,
    a: &Allocation,
    now: Instant,
    commands: &mut VecDeque<Command>,
) {
    if !config.fast_path {
        return;
    }
    let perm_expired = |ip: IpAddr| a.permissions.iter().any(|p| p.ip == ip && now >= p.expires);
    for c in &a.channels {
        let channel_expired = now >= c.expires && !c.expiry_reported;
        if channel_expired || (now < c.expires && perm_expired(c.peer.ip())) {
            if let Some(r) = route_keys(config, a, c) {
                commands.push_back(Command::RemoveRoute(r));
            }
        }
    }
}

impl Server {
    /// Emits an install for every live channel of `slot` whose peer IP is `peer_ip` (all of
    /// them when None): after a ChannelBind or a permission refresh moved their expiry.
    pub(super) fn install_routes(&mut self, slot: Slot, peer_ip: Option<IpAddr>, now: Instant) {
        if !self.config.fast_path {
            return;
        }
        let Some(a) = self.allocations.get(slot) else {
            return;
        };
        let config = &self.config;
        let routes = a
            .channels
            .iter()
            .filter(|c| now < c.expires && peer_ip.is_none_or(|ip| c.peer.ip() == ip))
            .filter_map(|c| usable_route(config, a, c))
            .filter(|r| now < r.expires);
        self.commands.extend(routes.map(Command::InstallRoute));
    }

    /// Emits a removal for every channel of an allocation that is ending (any reason). A
    /// route never installed is removed harmlessly.
    pub(super) fn remove_routes(&mut self, a: &Allocation) {
        if !self.config.fast_path {
            return;
        }
        let config = &self.config;
        let routes = a.channels.iter().filter_map(|c| route_keys(config, a, c));
        self.commands.extend(routes.map(Command::RemoveRoute));
    }
}
