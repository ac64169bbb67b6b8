//! Relay sockets: choosing a port, asking the shell to bind it, and what its answer means.
//!
//! Binding is an effect the shell carries out and reports back ([`Server::handle_relay_bound`]):
//! an allocation stays pending until every relay it asked for is bound, and a port another
//! process holds is skipped for the next one, up to [`MAX_BIND_ATTEMPTS`] (then 508, RFC 8656
//! §7.2). Ports come from this worker's pool, or are borrowed from another worker's when its
//! own is empty (`ledger.rs`); a port is always in exactly one pool or in use.

use super::allocation::{PortChoice, Relay};
use super::allocations::Slot;
use super::ledger::{self, Reservation};
use super::ports::PortPool;
use super::{Command, Now, RelayId, Server, MAX_BIND_ATTEMPTS};
use crate::wire::Family;
use rand_chacha::rand_core::RngCore;
use std::net::SocketAddr;

impl Server {
    /// Asks the shell to bind a relay socket for `family` of the allocation in `slot`, on a
    /// port chosen by `choice`. False when no port can be had (508).
    pub(super) fn request_bind(
        &mut self,
        slot: Slot,
        family: Family,
        choice: PortChoice,
        now: Now,
    ) -> bool {
        let Some(addr) = self.relay_address(family) else {
            return false;
        };
        let port = match choice {
            PortChoice::Any => self.take_port(family, |p| p.take(false)),
            PortChoice::Even => self.take_port(family, |p| p.take(true)),
            PortChoice::Reserved(p) => Some(p),
            PortChoice::EvenReserveNext => {
                self.take_port(family, PortPool::take_pair)
                    .map(|(even, next)| {
                        self.reserve_port(slot, family, next, now);
                        even
                    })
            }
        };
        self.refresh_port_gauge();
        let Some(port) = port else {
            return false;
        };
        let Some(a) = self.allocations.get(slot) else {
            return false;
        };
        let (existing, dont_fragment) = (a.relays[family].map(|r| r.id), a.dont_fragment);
        let id = existing.unwrap_or_else(|| self.allocations.new_relay(slot));
        let advertised = SocketAddr::new(addr.advertised, port);
        let Some(a) = self.allocations.get_mut(slot) else {
            return false;
        };
        let r = a.relays[family].get_or_insert(Relay {
            id,
            advertised,
            bound: false,
            attempts: 0,
            choice,
        });
        r.advertised = advertised;
        r.attempts += 1;
        let bind = SocketAddr::new(addr.bind, port);
        self.allocations.set_relay_addr(id, Some(bind));
        self.commands.push_back(Command::BindRelay {
            relay: id,
            addr: bind,
            dont_fragment,
        });
        true
    }

    /// EVEN-PORT with the R bit: holds `port` for a later Allocate that presents the token,
    /// which the allocation in `slot` will answer with (RFC 8656 §7.2).
    fn reserve_port(&mut self, slot: Slot, family: Family, port: u16, now: Now) {
        let mut token = [0u8; 8];
        self.rng.fill_bytes(&mut token);
        self.ledger.reserve(Reservation {
            token,
            family,
            port,
            expires: now.mono + ledger::RESERVATION_LIFETIME,
        });
        if let Some(a) = self.allocations.get_mut(slot) {
            a.reservation = Some(token);
        }
    }

    /// Drops the reservation an allocation made, returning its port to this worker's pool.
    pub(super) fn cancel_reservation(&mut self, slot: Slot) {
        let Some(token) = self
            .allocations
            .get_mut(slot)
            .and_then(|a| a.reservation.take())
        else {
            return;
        };
        if let Some(r) = self.ledger.claim(&token) {
            self.give_back_port(r.family, r.port);
        }
    }

    /// Takes a relay port from this worker's pool or, when it has none, borrows one from
    /// another worker's (the range is split into blocks; a client is not refused while any
    /// block has room). `take` picks the port(s) within a pool, so EVEN-PORT and its reserved
    /// pair come from one pool.
    fn take_port<T>(
        &mut self,
        family: Family,
        mut take: impl FnMut(&mut PortPool) -> Option<T>,
    ) -> Option<T> {
        let own = take(&mut self.pools.lock().unwrap_or_else(|e| e.into_inner())[family]);
        own.or_else(|| self.ledger.borrow_port(&self.pools, family, take))
    }

    /// Whether a port of `family` can be had here or from another worker.
    pub(super) fn port_available(&self, family: Family) -> bool {
        if self.pools.lock().unwrap_or_else(|e| e.into_inner())[family].free() > 0 {
            return true;
        }
        self.ledger
            .borrow_port(&self.pools, family, |p| (p.free() > 0).then_some(()))
            .is_some()
    }

    /// Returns a port to this worker's pool (a borrowed port stays with the worker that
    /// freed it: a port lives in exactly one pool or is in use, never both).
    pub(super) fn give_back_port(&mut self, family: Family, port: u16) {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())[family].give_back(port);
        self.refresh_port_gauge();
    }

    /// Brings gauges others can change up to date: `relay_ports_free` is the number of ports
    /// in this worker's own pool, which another worker may have borrowed from. The worker's
    /// own pool operations refresh it; the shell calls this before publishing its stats.
    pub fn refresh_gauges(&mut self) {
        self.refresh_port_gauge();
    }

    pub(super) fn refresh_port_gauge(&mut self) {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let mut free = 0;
        for (family, pool) in pools.each() {
            if self.relay_address(family).is_some() {
                free += pool.free() as u64;
            }
        }
        drop(pools);
        self.stats.relay_ports_free = free;
    }

    /// The shell bound (or failed to bind) a relay socket. On failure another port is tried;
    /// after [`MAX_BIND_ATTEMPTS`] the Allocate is answered 508 (RFC 8656 §7.2).
    pub fn handle_relay_bound(
        &mut self,
        relay: RelayId,
        result: Result<(), std::io::Error>,
        now: Now,
    ) {
        let Some(entry) = self.allocations.relay(relay) else {
            return;
        };
        let Some(slot) = entry.owner else {
            // Its allocation ended (a reload, a closed connection) before the bind was
            // reported: close the socket the shell opened for it.
            if result.is_ok() {
                self.commands.push_back(Command::ReleaseRelay { relay });
            }
            return;
        };
        let Some(bind) = entry.addr else { return };
        let family = Family::of(bind.ip());
        match result {
            Ok(()) => {
                self.ledger.mark_relay_port(bind.ip(), bind.port(), true);
                if let Some(r) = self
                    .allocations
                    .get_mut(slot)
                    .and_then(|a| a.relays[family].as_mut())
                {
                    r.bound = true;
                }
                self.finish_allocate_if_bound(slot, now);
            }
            Err(_) => {
                self.stats.relay_bind_failures += 1;
                // The port is held elsewhere: back of the queue, try the next one.
                self.give_back_port(family, bind.port());
                self.allocations.set_relay_addr(relay, None);
                let Some(relay) = self.allocations.get(slot).and_then(|a| a.relays[family]) else {
                    return;
                };
                if relay.choice == PortChoice::EvenReserveNext {
                    self.cancel_reservation(slot);
                }
                // A reserved port is the only one the client may have: no second try.
                let retry = relay.attempts < MAX_BIND_ATTEMPTS
                    && !matches!(relay.choice, PortChoice::Reserved(_));
                if !retry || !self.request_bind(slot, family, relay.choice, now) {
                    self.fail_pending_allocation(slot, now);
                }
            }
        }
    }
}
