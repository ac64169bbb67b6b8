//! The script's cast: who allocates what, which peers it talks to, what happens to each.

use crate::diff_topology;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What the script does to a peer over the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Refreshed all along (ChannelBind for a channel peer, CreatePermission otherwise).
    Keep,
    /// Never refreshed after set-up: its permission expires (its channel, if any, outlives
    /// the permission by 300 s, and relays nothing in that time: RFC 8656 §12 needs both).
    PermExpire,
    /// Its channel is never refreshed, its permission is (CreatePermission): after the channel
    /// expires, the same traffic goes as Send/Data indications; after the cool-down, the
    /// channel's number is bound to the client's [`Role::RebindTarget`] peer.
    ChanExpire,
    /// No permission until the rebind gives it the [`Role::ChanExpire`] peer's number.
    RebindTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fam {
    V4,
    V6,
}

pub(crate) fn fam(a: &SocketAddr) -> Fam {
    if a.is_ipv4() {
        Fam::V4
    } else {
        Fam::V6
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AllocKind {
    /// REQUESTED-ADDRESS-FAMILY absent or IPv4.
    V4,
    /// REQUESTED-ADDRESS-FAMILY IPv6.
    V6,
    /// ADDITIONAL-ADDRESS-FAMILY IPv6: one relay per family (RFC 8656 §7.2).
    Dual,
}

#[derive(Debug, Clone)]
pub(crate) struct PeerSpec {
    pub(crate) addr: SocketAddr,
    /// The channel bound at set-up (a RebindTarget: the one it gets at the rebind); None:
    /// permission only, traffic by Send and Data indications.
    pub(crate) channel: Option<u16>,
    pub(crate) role: Role,
}

#[derive(Debug, Clone)]
pub(crate) struct ClientSpec {
    pub(crate) addr: SocketAddr,
    pub(crate) server: SocketAddr,
    pub(crate) kind: AllocKind,
    pub(crate) peers: Vec<PeerSpec>,
    /// Deleted (Refresh, LIFETIME 0) early in the run.
    pub(crate) delete_early: bool,
}

pub(crate) const V4_SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(diff_topology::RELAY_V4), 3478);
pub(crate) const V6_SERVER: SocketAddr = SocketAddr::new(IpAddr::V6(diff_topology::RELAY_V6), 3478);

pub(crate) fn client_ip(i: usize, f: Fam) -> IpAddr {
    match f {
        Fam::V4 => Ipv4Addr::new(10, 77, 0, 10 + i as u8).into(),
        Fam::V6 => Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0xc, i as u16).into(),
    }
}

pub(crate) fn peer_ip(j: usize, f: Fam) -> IpAddr {
    assert!(j < 150, "peer addresses run out at 10.77.0.250");
    match f {
        Fam::V4 => Ipv4Addr::new(10, 77, 0, 100 + j as u8).into(),
        Fam::V6 => Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0xd, j as u16).into(),
    }
}

/// The cast of `n` clients: IPv4 and IPv6 clients; relays of their own family, of the other
/// family (IPv4 client with IPv6 peers and the reverse) and dual; one to three channel peers
/// each, a Send/Data-indication-only peer for half; and the clients the script deletes early,
/// lets permissions and channels expire on, and rebinds a channel for.
pub(crate) fn cast(n: usize) -> Vec<ClientSpec> {
    // Disjoint groups, each covering several family combinations.
    const DELETE: [usize; 3] = [4, 11, 18];
    const PERM_EXPIRE: [usize; 4] = [3, 8, 13, 23];
    const CHAN_EXPIRE: [usize; 4] = [0, 7, 14, 21];
    let mut next_peer = 0;
    (0..n)
        .map(|i| {
            let (client_fam, kind) = match i % 6 {
                0 => (Fam::V4, AllocKind::Dual),
                1 => (Fam::V4, AllocKind::V6),
                2 => (Fam::V6, AllocKind::V6),
                3 | 4 => (Fam::V4, AllocKind::V4),
                _ if i % 12 == 11 => (Fam::V6, AllocKind::Dual),
                _ => (Fam::V6, AllocKind::V4),
            };
            let peer_fam = |k: usize| match kind {
                AllocKind::V4 => Fam::V4,
                AllocKind::V6 => Fam::V6,
                AllocKind::Dual if k.is_multiple_of(2) => Fam::V4,
                AllocKind::Dual => Fam::V6,
            };
            let mut new_peer = |k: usize, channel: Option<u16>, role: Role| {
                let addr =
                    SocketAddr::new(peer_ip(next_peer, peer_fam(k)), 30_000 + next_peer as u16);
                next_peer += 1;
                PeerSpec {
                    addr,
                    channel,
                    role,
                }
            };
            // Channel numbers differ between clients (0x4000-0x4FFF, RFC 8656 §12).
            let number = |k: usize| 0x4000 + (i as u16) * 0x20 + k as u16;
            let channels = 1 + i % 3;
            let mut peers: Vec<PeerSpec> = (0..channels)
                .map(|k| new_peer(k, Some(number(k)), Role::Keep))
                .collect();
            if i % 2 == 0 {
                peers.push(new_peer(channels, None, Role::Keep));
            }
            if PERM_EXPIRE.contains(&i) {
                peers.last_mut().unwrap().role = Role::PermExpire;
            }
            if CHAN_EXPIRE.contains(&i) {
                peers[0].role = Role::ChanExpire;
                // Same family as the expiring peer, so the same relay serves both.
                let mut b = new_peer(0, Some(number(0)), Role::RebindTarget);
                b.channel = peers[0].channel;
                peers.push(b);
            }
            let addr = SocketAddr::new(client_ip(i, client_fam), 20_000 + i as u16);
            ClientSpec {
                addr,
                server: if client_fam == Fam::V4 {
                    V4_SERVER
                } else {
                    V6_SERVER
                },
                kind,
                peers,
                delete_early: DELETE.contains(&i),
            }
        })
        .collect()
}
