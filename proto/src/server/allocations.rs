//! The allocation table and the indexes into it, owned by one type that keeps them in step.
//!
//! A worker finds an allocation three ways: by its client's 5-tuple (requests, ChannelData,
//! Send indications: RFC 8656 §2.2 makes the 5-tuple the allocation's key), by one of its relay
//! sockets (a peer's datagram), and by position (the sweep). [`Allocations`] holds the table
//! and both indexes, and is the only code that writes them, so these hold at every return:
//!
//! * every client in the 5-tuple index names a live slot holding that client's allocation, and
//!   every live slot is in the index (one allocation per 5-tuple, RFC 8656 §7.2's 437);
//! * every relay of a live allocation names a relay slot owned by that allocation, and every
//!   owned relay slot is listed by its owner; a bound address is of the relay's family;
//! * free lists hold exactly the empty slots, once each.
//!
//! Cheap `debug_assert!`s guard each write; [`Allocations::check_invariants`] walks the whole
//! table and is run by the fuzz harness after every step (through
//! [`super::Server::check_invariants`]). Slots are reused, so a [`Slot`] is only meaningful
//! while its allocation lives; nothing outside this file does arithmetic on one.

use super::allocation::Allocation;
use super::{ClientId, RelayId};
use crate::wire::Family;
use rustc_hash::FxHashMap;
use std::net::SocketAddr;

/// The position of an allocation in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Slot(u32);

/// What one relay socket id is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RelaySlot {
    /// The allocation the socket relays for; None once it ended (a bind reported late is then
    /// closed at once).
    pub owner: Option<Slot>,
    /// The address the socket was asked to bind: the port goes back to a pool from here.
    pub addr: Option<SocketAddr>,
}

/// A relay socket of a removed allocation, for the caller to close and whose port it returns.
#[derive(Debug, Clone, Copy)]
pub(super) struct FreedRelay {
    pub family: Family,
    pub id: RelayId,
    /// The shell reported the socket bound: it must be released.
    pub bound: bool,
    pub addr: Option<SocketAddr>,
}

/// A worker's allocations and their indexes.
#[derive(Debug, Default)]
pub(super) struct Allocations {
    table: Vec<Option<Allocation>>,
    free: Vec<u32>,
    by_client: FxHashMap<ClientId, u32>,
    relays: Vec<RelaySlot>,
    free_relays: Vec<u32>,
}

impl Allocations {
    /// Allocations held, pending ones included.
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    pub fn contains(&self, client: &ClientId) -> bool {
        self.by_client.contains_key(client)
    }

    /// The slot of a client's allocation.
    #[inline]
    pub fn slot_of(&self, client: &ClientId) -> Option<Slot> {
        self.by_client.get(client).map(|i| Slot(*i))
    }

    /// A client's allocation (the per-packet path's lookup).
    #[inline]
    pub fn of_client(&self, client: &ClientId) -> Option<&Allocation> {
        self.get(self.slot_of(client)?)
    }

    /// A client's allocation if it has been answered (RFC 8656 §7.3, §9.2, §11.2: the other
    /// requests need one, or are 437).
    pub fn ready(&self, client: &ClientId) -> Option<Slot> {
        let slot = self.slot_of(client)?;
        self.get(slot)?.is_ready().then_some(slot)
    }

    #[inline]
    pub fn get(&self, slot: Slot) -> Option<&Allocation> {
        self.table.get(slot.0 as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, slot: Slot) -> Option<&mut Allocation> {
        self.table.get_mut(slot.0 as usize)?.as_mut()
    }

    /// The slot of the allocation a relay socket relays for (the peer path's lookup).
    #[inline]
    pub fn slot_of_relay(&self, relay: RelayId) -> Option<Slot> {
        self.relays.get(relay.0 as usize)?.owner
    }

    /// The allocation a relay socket relays for.
    #[cfg(test)]
    pub fn of_relay(&self, relay: RelayId) -> Option<&Allocation> {
        self.get(self.slot_of_relay(relay)?)
    }

    /// Every live allocation with its slot.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &Allocation)> {
        self.table
            .iter()
            .enumerate()
            .filter_map(|(i, a)| Some((Slot(i as u32), a.as_ref()?)))
    }

    /// Every live allocation, mutably. Its client and relays must not change: they are keys.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Slot, &mut Allocation)> {
        self.table
            .iter_mut()
            .enumerate()
            .filter_map(|(i, a)| Some((Slot(i as u32), a.as_mut()?)))
    }

    /// Adds an allocation for a client that has none (the caller checked: 437 otherwise).
    pub fn insert(&mut self, allocation: Allocation) -> Slot {
        debug_assert!(
            !self.contains(&allocation.client),
            "a second allocation on one 5-tuple"
        );
        debug_assert!(
            allocation.relays.iter().all(Option::is_none),
            "relays are added with new_relay"
        );
        let client = allocation.client;
        let index = match self.free.pop() {
            Some(i) => {
                debug_assert!(self.table[i as usize].is_none(), "a free slot in use");
                self.table[i as usize] = Some(allocation);
                i
            }
            None => {
                self.table.push(Some(allocation));
                self.table.len() as u32 - 1
            }
        };
        self.by_client.insert(client, index);
        Slot(index)
    }

    /// Removes an allocation; its relay ids are free again. Returns it with its relay sockets,
    /// which the caller closes and whose ports it gives back.
    pub fn remove(&mut self, slot: Slot) -> Option<(Allocation, [Option<FreedRelay>; 2])> {
        let a = self.table.get_mut(slot.0 as usize)?.take()?;
        self.free.push(slot.0);
        let indexed = self.by_client.remove(&a.client);
        debug_assert_eq!(indexed, Some(slot.0), "5-tuple index out of step");
        let mut freed = [None, None];
        for (family, r) in a.relays.each() {
            let Some(r) = r else { continue };
            let entry = std::mem::replace(
                &mut self.relays[r.id.0 as usize],
                RelaySlot {
                    owner: None,
                    addr: None,
                },
            );
            debug_assert_eq!(entry.owner, Some(slot), "relay owned by another allocation");
            self.free_relays.push(r.id.0);
            freed[family.index()] = Some(FreedRelay {
                family,
                id: r.id,
                bound: r.bound,
                addr: entry.addr,
            });
        }
        Some((a, freed))
    }

    /// A relay id for `slot`'s allocation; the caller records it in the allocation's relays.
    pub fn new_relay(&mut self, slot: Slot) -> RelayId {
        debug_assert!(self.get(slot).is_some(), "relay for an empty slot");
        let entry = RelaySlot {
            owner: Some(slot),
            addr: None,
        };
        if let Some(i) = self.free_relays.pop() {
            debug_assert!(
                self.relays[i as usize].owner.is_none(),
                "a free relay in use"
            );
            self.relays[i as usize] = entry;
            RelayId(i)
        } else {
            self.relays.push(entry);
            RelayId(self.relays.len() as u32 - 1)
        }
    }

    /// What a relay id is used for (None for an id never handed out).
    pub fn relay(&self, relay: RelayId) -> Option<RelaySlot> {
        self.relays.get(relay.0 as usize).copied()
    }

    /// Records (or, with None, forgets) the address a relay socket was asked to bind.
    pub fn set_relay_addr(&mut self, relay: RelayId, addr: Option<SocketAddr>) {
        let entry = &mut self.relays[relay.0 as usize];
        debug_assert!(entry.owner.is_some(), "address for a free relay");
        entry.addr = addr;
    }

    /// Walks everything and `debug_assert!`s the invariants of the module doc. Linear in the
    /// table: for the fuzz harness and tests, never per packet.
    pub fn check_invariants(&self) {
        let live = self.table.iter().filter(|a| a.is_some()).count();
        debug_assert_eq!(self.by_client.len(), live, "5-tuple index size");
        debug_assert_eq!(self.free.len() + live, self.table.len(), "free slots");
        for &i in &self.free {
            debug_assert!(self.table[i as usize].is_none(), "free slot {i} in use");
        }
        for (client, &i) in &self.by_client {
            let a = self.table.get(i as usize).and_then(Option::as_ref);
            debug_assert!(
                a.is_some_and(|a| a.client == *client),
                "index names slot {i}"
            );
        }
        for (slot, a) in self.iter() {
            for (family, r) in a.relays.each() {
                let Some(r) = r else { continue };
                let entry = self.relays.get(r.id.0 as usize);
                debug_assert_eq!(entry.and_then(|e| e.owner), Some(slot), "relay owner");
                let addr = entry.and_then(|e| e.addr);
                debug_assert!(
                    addr.is_none_or(|a| Family::of(a.ip()) == family),
                    "relay family"
                );
                debug_assert!(!r.bound || addr.is_some(), "bound relay without address");
            }
            a.check_invariants();
        }
        let owned = self.relays.iter().filter(|e| e.owner.is_some()).count();
        debug_assert_eq!(
            owned + self.free_relays.len(),
            self.relays.len(),
            "free relays"
        );
        for (id, e) in self.relays.iter().enumerate() {
            let Some(owner) = e.owner else { continue };
            let listed = self.get(owner).is_some_and(|a| {
                a.relays
                    .iter()
                    .flatten()
                    .any(|r| r.id == RelayId(id as u32))
            });
            debug_assert!(listed, "relay {id} not listed by its owner");
        }
    }

    /// Every relay address in use with its family (for checking it is in no free pool).
    pub fn relay_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.relays
            .iter()
            .filter(|e| e.owner.is_some())
            .filter_map(|e| e.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::super::allocation::{PortChoice, Relay};
    use super::super::Transport;
    use super::*;
    use crate::auth::LongTermKey;
    use crate::wire::{PerFamily, TransactionId};
    use std::time::Instant;

    fn client(port: u16) -> ClientId {
        ClientId {
            transport: Transport::Udp,
            local: 0,
            remote: SocketAddr::from(([192, 0, 2, 1], port)),
            local_ip: "192.0.2.10".parse().unwrap(),
        }
    }

    fn allocation(c: ClientId) -> Allocation {
        let now = Instant::now();
        Allocation {
            client: c,
            username: "u".into(),
            user_id: "u".into(),
            source: c.remote.ip(),
            key: LongTermKey::Md5([0; 16]),
            use_sha256: false,
            relays: PerFamily::default(),
            created: now,
            expires: now,
            permissions: Vec::new(),
            channels: Vec::new(),
            allocate_tid: TransactionId([0; 12]),
            allocate_response: None,
            dont_fragment: false,
            additional_family_refused: false,
            request_fingerprint: false,
            reservation: None,
            usage: Default::default(),
        }
    }

    fn add_relay(t: &mut Allocations, slot: Slot, port: u16) -> RelayId {
        let id = t.new_relay(slot);
        let addr = SocketAddr::from(([198, 51, 100, 1], port));
        t.get_mut(slot).unwrap().relays[Family::V4] = Some(Relay {
            id,
            advertised: addr,
            bound: true,
            attempts: 1,
            choice: PortChoice::Any,
        });
        t.set_relay_addr(id, Some(addr));
        id
    }

    /// Slots and relay ids are reused after a removal, and both indexes follow.
    #[test]
    fn indexes_follow_inserts_and_removals() {
        let mut t = Allocations::default();
        let a = t.insert(allocation(client(1)));
        let b = t.insert(allocation(client(2)));
        let ra = add_relay(&mut t, a, 50000);
        add_relay(&mut t, b, 50001);
        t.check_invariants();
        assert_eq!(t.of_relay(ra).unwrap().client, client(1));
        let (gone, freed) = t.remove(a).unwrap();
        assert_eq!(gone.client, client(1));
        let freed = freed[Family::V4.index()].unwrap();
        assert_eq!((freed.id, freed.bound), (ra, true));
        assert!(t.of_relay(ra).is_none() && !t.contains(&client(1)));
        assert!(t.remove(a).is_none(), "removed once");
        t.check_invariants();
        let c = t.insert(allocation(client(3)));
        assert_eq!(c, a, "the slot is reused");
        assert_eq!(add_relay(&mut t, c, 50002), ra, "the relay id is reused");
        assert_eq!(t.of_relay(ra).unwrap().client, client(3));
        assert_eq!(t.len(), 2);
        t.check_invariants();
    }

    /// The check finds an index out of step with the table (it is what the fuzz harness
    /// relies on, so it must be able to fail).
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "index names slot")]
    fn the_check_catches_a_stale_index() {
        let mut t = Allocations::default();
        let a = t.insert(allocation(client(1)));
        t.get_mut(a).unwrap().client = client(9);
        t.check_invariants();
    }
}
