//! One allocation: its relayed addresses, permissions and channel bindings (RFC 8656 §2.2).
//!
//! Permissions and channels are kept in small vectors scanned linearly: their number per
//! allocation is capped (`max_permissions`, `max_channels`), WebRTC uses one or two peers, and a
//! scan of a few entries beats hashing. The cost of a lookup is independent of how many
//! allocations the server holds.

use super::{ClientId, Event, RelayId};
use crate::auth::LongTermKey;
use crate::wire::{ChannelNumber, Family, PerFamily, TransactionId};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// RFC 8656 §9: permissions last 300 s.
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 8656 §12: channel bindings last 600 s.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// RFC 8656 §12: after a binding expires, neither its number nor its peer may be rebound to
/// anything else for 300 s.
pub const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

/// A permission for one peer IP address (ports do not matter, RFC 8656 §9).
#[derive(Debug, Clone)]
pub struct Permission {
    pub ip: IpAddr,
    pub expires: Instant,
    /// The peer is only reachable because it is one of this server's relayed addresses; every
    /// packet to it must then target a relay port, never the server's other ports.
    pub hairpin_only: bool,
}

/// A channel binding (RFC 8656 §12).
#[derive(Debug, Clone)]
pub struct Channel {
    pub number: ChannelNumber,
    pub peer: SocketAddr,
    pub expires: Instant,
    pub hairpin_only: bool,
    /// Its expiry has been reported (`prune`); a rebind clears it.
    pub expiry_reported: bool,
}

impl Channel {
    /// Whether the binding still reserves its number and peer (live or cooling down).
    pub fn reserved(&self, now: Instant) -> bool {
        now < self.expires + CHANNEL_COOLDOWN
    }
}

/// A relayed transport address of an allocation.
#[derive(Debug, Clone, Copy)]
pub struct Relay {
    pub id: RelayId,
    /// The address advertised in XOR-RELAYED-ADDRESS (external IP, relay port).
    pub advertised: SocketAddr,
    /// Whether the shell has bound the socket.
    pub bound: bool,
    /// How many ports were tried for it (a port another process holds is skipped).
    pub attempts: u8,
    /// How its port is chosen (kept for retries after a failed bind).
    pub choice: PortChoice,
}

/// How a relay port is chosen (RFC 8656 §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortChoice {
    Any,
    /// EVEN-PORT without the R bit.
    Even,
    /// EVEN-PORT with the R bit: an even port, and the next one reserved.
    EvenReserveNext,
    /// The port a RESERVATION-TOKEN holds.
    Reserved(u16),
}

/// An allocation on this worker.
#[derive(Debug)]
pub struct Allocation {
    pub client: ClientId,
    pub username: String,
    pub user_id: String,
    /// The client's address as the per-address quota counts it (IPv6 by prefix).
    pub source: IpAddr,
    pub key: LongTermKey,
    pub use_sha256: bool,
    /// At most one relay per address family (RFC 8656 §7.2, RFC 6156).
    pub relays: PerFamily<Option<Relay>>,
    pub created: Instant,
    pub expires: Instant,
    pub permissions: Vec<Permission>,
    pub channels: Vec<Channel>,
    /// The Allocate request that created it; a retransmission gets the same answer.
    pub allocate_tid: TransactionId,
    /// The success response, once all relays are bound (None while pending).
    pub allocate_response: Option<Vec<u8>>,
    pub dont_fragment: bool,
    /// ADDRESS-ERROR-CODE to report for a requested additional family we cannot serve.
    pub additional_family_refused: bool,
    pub request_fingerprint: bool,
    /// RESERVATION-TOKEN for the port reserved next to this allocation's (EVEN-PORT R bit).
    pub reservation: Option<[u8; 8]>,
    /// What it has relayed so far, both ways.
    pub usage: super::usage::Usage,
}

impl Allocation {
    /// Who this allocation is counted against in the ledger's quotas.
    pub fn holder(&self) -> super::ledger::Holder {
        super::ledger::Holder {
            user_id: self.user_id.clone(),
            source: self.source,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.allocate_response.is_some()
    }

    /// The family of its first relay (IPv4 for a dual allocation), as the gauges count it.
    pub fn gauge_family(&self) -> Family {
        self.relays
            .each()
            .find_map(|(f, r)| r.map(|_| f))
            .unwrap_or(Family::V4)
    }

    /// The relay for a peer's address family, if this allocation has one.
    #[inline]
    pub fn relay_for(&self, peer: IpAddr) -> Option<&Relay> {
        self.relays[Family::of(peer)].as_ref()
    }

    /// The live permission for `ip`, if any.
    #[inline]
    pub fn permission(&self, ip: IpAddr, now: Instant) -> Option<&Permission> {
        self.permissions
            .iter()
            .find(|p| p.ip == ip && now < p.expires)
    }

    /// The live channel with this number, if any.
    #[inline]
    pub fn channel_by_number(&self, number: ChannelNumber, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.number == number && now < c.expires)
    }

    /// The live channel bound to this peer, if any.
    #[inline]
    pub fn channel_by_peer(&self, peer: SocketAddr, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.peer == peer && now < c.expires)
    }

    /// Installs or refreshes a permission; returns true if it is new.
    pub fn install_permission(&mut self, ip: IpAddr, now: Instant, hairpin_only: bool) -> bool {
        let expires = now + PERMISSION_LIFETIME;
        if let Some(p) = self.permissions.iter_mut().find(|p| p.ip == ip) {
            p.expires = expires;
            p.hairpin_only = hairpin_only;
            return false;
        }
        self.permissions.push(Permission {
            ip,
            expires,
            hairpin_only,
        });
        true
    }

    /// Binds or refreshes a channel; the caller has checked [`Allocation::channel_conflict`].
    /// Returns true if the binding is new.
    pub fn bind_channel(
        &mut self,
        number: ChannelNumber,
        peer: SocketAddr,
        now: Instant,
        hairpin_only: bool,
    ) -> bool {
        let expires = now + CHANNEL_LIFETIME;
        if let Some(c) = self.channels.iter_mut().find(|c| c.number == number) {
            let was_live = now < c.expires;
            c.expires = expires;
            c.hairpin_only = hairpin_only;
            c.expiry_reported = false;
            return !was_live;
        }
        self.channels.push(Channel {
            number,
            peer,
            expires,
            hairpin_only,
            expiry_reported: false,
        });
        true
    }

    /// RFC 8656 §12.2: a channel number may not be bound to a second peer, nor a peer to a
    /// second number, while the first binding lives or cools down. Rebinding the same pair
    /// refreshes it.
    pub fn channel_conflict(&self, number: ChannelNumber, peer: SocketAddr, now: Instant) -> bool {
        self.channels
            .iter()
            .any(|c| c.reserved(now) && ((c.number == number) != (c.peer == peer)))
    }

    /// Channels that reserve a number (live or cooling down), for the per-allocation limit.
    pub fn reserved_channels(&self, now: Instant) -> usize {
        self.channels.iter().filter(|c| c.reserved(now)).count()
    }

    /// Drops expired permissions and channels past their cooldown, and returns how many
    /// permissions and channels are live (for the gauges).
    /// Reports each expiry through `emit`: a permission when it is dropped, a channel once,
    /// at the first sweep after its expiry (it is kept through its cool-down).
    pub fn prune(&mut self, now: Instant, emit: &mut impl FnMut(Event)) -> (usize, usize) {
        let client = self.client;
        self.permissions.retain(|p| {
            let live = now < p.expires;
            if !live {
                emit(Event::PermissionExpired { client, peer: p.ip });
            }
            live
        });
        for c in self.channels.iter_mut() {
            if now >= c.expires && !c.expiry_reported {
                c.expiry_reported = true;
                emit(Event::ChannelExpired {
                    client,
                    peer: c.peer,
                    channel: c.number.get(),
                });
            }
        }
        self.channels.retain(|c| c.reserved(now));
        let live_channels = self.channels.iter().filter(|c| now < c.expires).count();
        (self.permissions.len(), live_channels)
    }

    /// `debug_assert!`s what every handler keeps true (see `allocations.rs`): one permission
    /// per IP, one binding per channel number, every peer reachable through a relay of its
    /// family, and an answered allocation's relays all bound.
    pub(super) fn check_invariants(&self) {
        for (i, p) in self.permissions.iter().enumerate() {
            debug_assert!(
                self.permissions[..i].iter().all(|q| q.ip != p.ip),
                "two permissions for {}",
                p.ip
            );
            debug_assert!(self.relay_for(p.ip).is_some(), "permission without relay");
        }
        for (i, c) in self.channels.iter().enumerate() {
            debug_assert!(
                self.channels[..i].iter().all(|d| d.number != c.number),
                "channel {:?} bound twice",
                c.number
            );
            debug_assert!(
                self.relay_for(c.peer.ip()).is_some(),
                "channel without relay"
            );
        }
        if self.is_ready() {
            debug_assert!(
                self.relays.iter().flatten().all(|r| r.bound),
                "answered with an unbound relay"
            );
            debug_assert!(
                self.relays.iter().any(Option::is_some),
                "answered without relay"
            );
        }
    }
}
