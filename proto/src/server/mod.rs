//! The TURN server as a value: inputs in, ordered commands out.
//!
//! A [`Server`] holds one worker's protocol state. The shell feeds it packets and time and
//! carries out what it asks for:
//!
//! * [`Server::handle_client_datagram`] for everything a client sends. Relayed data
//!   (ChannelData, Send indications) comes back at once as [`FromClient::Forward`], pointing into
//!   the caller's buffer: nothing is copied or allocated on that path. Requests queue
//!   [`Command`]s.
//! * [`Server::handle_peer_datagram`] for what arrives on a relay socket; it writes the
//!   ChannelData or Data-indication header in front of the payload, in the caller's buffer.
//! * [`Server::handle_relay_bound`] to report the outcome of a [`Command::BindRelay`].
//! * [`Server::handle_timeout`] when [`Server::poll_timeout`] passes.
//!
//! After any `handle_*`, drain [`Server::poll_command`] until it returns None, then re-arm the
//! timer from [`Server::poll_timeout`].
//!
//! ## Where things are
//!
//! A request goes `requests.rs` (parse, authenticate in `authenticate.rs`, 420, 441) →
//! `decode.rs` (the method's attributes into a typed request, or a [`reject::Reject`]) → its
//! handler: `allocate.rs`, `peers.rs` (CreatePermission, ChannelBind), Refresh in
//! `requests.rs`. Answers are written by `respond.rs`. `allocations.rs` owns the allocation
//! table and its indexes (5-tuple, relay id) with their invariants; `allocation.rs` is one
//! allocation's permissions and channels; `relay_bind.rs` its relay sockets and ports
//! (`ports.rs`, shared through `ledger.rs`). `relay_path.rs` is the per-packet path; `fast_path.rs` says which
//! UDP channels a kernel program may relay in its place.

mod admin;
mod allocate;
pub(crate) mod allocation;
mod allocations;
mod authenticate;
pub mod binding;
mod credential_check;
mod decode;
pub mod events;
pub mod fast_path;
pub mod ledger;
mod peers;
pub mod ports;
pub mod reject;
mod relay_bind;
mod relay_path;
mod requests;
mod respond;
pub(crate) mod source_limit;
pub mod usage;

use crate::auth::{Credentials, NonceIssuer};
use crate::policy::PeerPolicy;
use crate::stats::Stats;
use crate::wire::{Family, PerFamily};
use allocations::{Allocations, Slot};
use ledger::{Ledger, SharedPools};
use ports::{PortPool, PortShard};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use source_limit::SourceLimiter;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use admin::SessionInfo;
pub use binding::{StunAlternate, MAX_PADDED_RESPONSE};
pub use events::{method_label, EndReason, Event, Owner, EVENT_QUEUE_MAX};
pub use fast_path::ChannelRoute;
pub use relay_path::{FromClient, ToClient, PEER_HEADROOM, PEER_TAILROOM};
pub use respond::{answer_budget, CHALLENGE_FLOOR, MAX_AMPLIFICATION, MIN_CHALLENGED_REQUEST};

/// RFC 8656 §3.2: an allocation lives 600 s unless the client asks otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// RFC 8656 §3.2: the largest lifetime a client may ask for (servers may choose less).
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// How often expired allocations, permissions and channels are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Ports tried per relay address before answering 508 (another process may hold a port).
const MAX_BIND_ATTEMPTS: u8 = 8;

/// The current time, in both of the forms the server needs. The shell reads its clocks once
/// per batch of packets; tests construct it freely.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time: lifetimes and timers.
    pub mono: Instant,
    /// Unix seconds: REST credential expiry and nonces, which must survive restarts.
    pub unix: u64,
}

impl Now {
    /// `d` later on both clocks.
    pub fn after(self, d: Duration) -> Now {
        Now {
            mono: self.mono + d,
            unix: self.unix + d.as_secs(),
        }
    }
}

/// The transport between client and server. The relayed side is always UDP (RFC 8656).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// Plain UDP.
    Udp = 0,
    /// TCP.
    Tcp = 1,
    /// TLS over TCP.
    Tls = 2,
}

impl Transport {
    /// Every transport, in label and array-index order.
    pub const ALL: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];
    /// The metric label ("udp", "tcp", "tls").
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
    /// Streams need ChannelData padded to four bytes (RFC 8656 §12.5).
    pub fn is_stream(self) -> bool {
        self != Transport::Udp
    }
}

/// A client's 5-tuple (RFC 8656 §2): transport, the server-side endpoint (`local`: the shell's
/// UDP listener index or stream connection id, and `local_ip`), and the client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId {
    /// The transport the client speaks to the server over.
    pub transport: Transport,
    /// The shell's name for the server-side endpoint: a UDP listener index or a stream
    /// connection id.
    pub local: u32,
    /// The client's address and port.
    pub remote: SocketAddr,
    /// The server address the client sent to. The 5-tuple includes it (RFC 8656 §2), so on a
    /// host with several addresses one client address talking to two of them is two clients,
    /// and every reply must leave from this address or a NAT in front of the client drops it.
    /// The shell learns it per datagram on a wildcard UDP listener (IP_PKTINFO); otherwise it
    /// is the listener's or the connection's local address.
    pub local_ip: IpAddr,
}

/// The gauges of [`Stats`] recounted from the server's state ([`Server::recount`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GaugeRecount {
    /// Ready allocations by `[transport][family]`, as [`Stats::allocations_active`].
    pub allocations_active: [[u64; 2]; 3],
    /// Permissions installed and not expired.
    pub permissions: u64,
    /// Channels bound and not expired at the time asked.
    pub channels_live: u64,
    /// Channels bound, expired ones in their cool-down included.
    pub channels_bound: u64,
    /// Relay ports free in this worker's pools.
    pub relay_ports_free: u64,
}

/// Names one relay socket. The server assigns ids; the shell keeps its sockets indexed by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId(pub u32);

/// The local addresses relay sockets bind to and the addresses advertised for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayAddress {
    /// Where relay sockets bind.
    pub bind: IpAddr,
    /// What XOR-RELAYED-ADDRESS says (differs from `bind` behind 1:1 NAT: `--external-ip`).
    pub advertised: IpAddr,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send a STUN message to a client.
    SendToClient {
        /// The client to send to.
        client: ClientId,
        /// The whole message.
        bytes: Vec<u8>,
    },
    /// Bind a UDP socket at `addr` and report with [`Server::handle_relay_bound`].
    BindRelay {
        /// The id the shell files the socket under.
        relay: RelayId,
        /// The address to bind (the relay address and a port the server chose).
        addr: SocketAddr,
        /// Set the IP Don't Fragment bit on what the socket sends (DONT-FRAGMENT, RFC 8656).
        dont_fragment: bool,
    },
    /// Close the relay socket.
    ReleaseRelay {
        /// The relay socket.
        relay: RelayId,
    },
    /// A kernel fast path may relay this channel until the route's expiry (`fast_path.rs`;
    /// only with [`ServerConfig::fast_path`]). Replaces an earlier route of the same channel.
    InstallRoute(ChannelRoute),
    /// It may not any more: remove the route (a missing one is not an error).
    RemoveRoute(ChannelRoute),
}

/// Everything a worker's server is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The REALM the server answers with (RFC 8489 §9.2).
    pub realm: String,
    /// REST secrets and static users.
    pub credentials: Credentials,
    /// Which peer addresses may be relayed to.
    pub policy: PeerPolicy,
    /// Where IPv4 relay sockets bind, and what they are advertised as; `None`: no IPv4 relaying.
    pub relay_v4: Option<RelayAddress>,
    /// Where IPv6 relay sockets bind, and what they are advertised as; `None`: no IPv6 relaying.
    pub relay_v6: Option<RelayAddress>,
    /// This worker's share of the relay port range.
    pub ports: PortShard,
    /// Permissions one allocation may hold (more are answered 508).
    pub max_permissions: usize,
    /// Channels one allocation may bind (more are answered 508).
    pub max_channels: usize,
    /// Accept RFC 5766's channel numbers 0x5000-0x7FFF too (coturn's test client uses them).
    pub legacy_channel_numbers: bool,
    /// Key for stateless nonces; the same for every worker of one process.
    pub nonce_key: [u8; 32],
    /// How long a nonce lasts before it is answered 438 (RFC 8489 §9.2).
    pub nonce_lifetime_secs: u64,
    /// Seeds this worker's random choices (relay ports, transaction ids).
    pub seed: u64,
    /// Unauthenticated error responses (401, 438, 400...) per second per source address;
    /// 0 = unlimited. Caps reflection through forged source addresses.
    pub error_rate_per_source: u32,
    /// IPv6 clients are counted by this prefix in every per-address limit (`source_key`).
    pub ipv6_source_prefix: u8,
    /// RFC 5780 NAT behaviour discovery: the primary and alternate addresses; `None` (the
    /// default) answers CHANGE-REQUEST that asks for a change with 420 (`binding.rs`).
    pub stun_alternate: Option<StunAlternate>,
    /// The address each UDP listener index is bound to (the shell's order). Binding answers
    /// with CHANGE-REQUEST leave through the listener bound to the address they must come from.
    pub udp_listeners: Vec<SocketAddr>,
    /// A kernel fast path relays UDP ChannelData: emit [`Command::InstallRoute`] and
    /// [`Command::RemoveRoute`] (`fast_path.rs`). Off by default: nothing is emitted.
    pub fast_path: bool,
}

impl ServerConfig {
    /// A configuration with RFC defaults, for tests and as a base for the shell. The secrets
    /// have no default: `nonce_key` signs the stateless nonces (zeros would let anyone forge
    /// them) and `seed` drives relay port choice (a fixed seed makes ports predictable); an
    /// embedder draws both from the OS, as turnd does.
    pub fn new(
        realm: &str,
        credentials: Credentials,
        relay_v4: Option<RelayAddress>,
        nonce_key: [u8; 32],
        seed: u64,
    ) -> Self {
        ServerConfig {
            realm: realm.to_owned(),
            credentials,
            policy: PeerPolicy::default(),
            relay_v4,
            relay_v6: None,
            ports: PortShard::whole(49152..=65535),
            max_permissions: 64,
            max_channels: 64,
            legacy_channel_numbers: false,
            nonce_key,
            nonce_lifetime_secs: 600,
            seed,
            error_rate_per_source: 0,
            ipv6_source_prefix: crate::source_key::DEFAULT_IPV6_PREFIX,
            stun_alternate: None,
            udp_listeners: Vec::new(),
            fast_path: false,
        }
    }
}

impl Drop for Server {
    /// Other workers stop borrowing from this one's pools.
    fn drop(&mut self) {
        self.ledger.unregister_pools(&self.pools);
    }
}

/// One worker's STUN/TURN server.
pub struct Server {
    config: ServerConfig,
    ledger: Arc<Ledger>,
    nonces: NonceIssuer,
    error_limiter: SourceLimiter,
    rng: ChaCha8Rng,
    /// This worker's free relay ports; registered in the ledger so others can borrow.
    pools: SharedPools,
    /// The allocation table, its 5-tuple index and the relay ids (`allocations.rs`).
    allocations: Allocations,
    commands: VecDeque<Command>,
    next_sweep: Option<Instant>,
    stats: Stats,
    /// What happened, for the shell to log (`events.rs`).
    events: events::EventQueue,
}

impl Server {
    /// A server sharing `ledger` (quotas, relay ports in use) with the other workers.
    pub fn new(config: ServerConfig, ledger: Arc<Ledger>) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let pools = PerFamily([
            PortPool::new(&config.ports, &mut rng),
            PortPool::new(&config.ports, &mut rng),
        ]);
        let capacity = pools[Family::V4].capacity() as u64;
        let pools: SharedPools = Arc::new(Mutex::new(pools));
        ledger.register_pools(pools.clone());
        let nonces = NonceIssuer::new(config.nonce_key, config.nonce_lifetime_secs);
        let error_limiter = SourceLimiter::new(config.error_rate_per_source, rng.next_u64());
        let mut stats = Stats::default();
        let families = config.relay_v4.is_some() as u64 + config.relay_v6.is_some() as u64;
        stats.relay_ports_total = capacity * families;
        stats.relay_ports_free = stats.relay_ports_total;
        Server {
            config,
            ledger,
            nonces,
            error_limiter,
            rng,
            pools,
            allocations: Allocations::default(),
            commands: VecDeque::new(),
            next_sweep: None,
            stats,
            events: events::EventQueue::default(),
        }
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Replaces credentials and peer policy (configuration reload). Allocations whose
    /// credential is now revoked, or that no configured secret or static user verifies any
    /// more, end at once (relay sockets released, quota and ports returned); the others stay.
    /// Returns the clients whose allocations ended and why, so the shell can close stream
    /// connections and log.
    pub fn update_policy(
        &mut self,
        credentials: Credentials,
        policy: PeerPolicy,
        now: Now,
    ) -> Vec<(ClientId, EndReason)> {
        self.config.credentials = credentials;
        self.config.policy = policy;
        self.end_unauthorised(now)
    }

    /// This worker's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The ledger shared with the other workers.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Allocations this worker holds (pending ones included).
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// Whether a client has an allocation (pending ones included).
    pub fn has_allocation(&self, client: &ClientId) -> bool {
        self.allocations.contains(client)
    }

    /// The relayed addresses of a client's allocation (for tests and diagnostics).
    pub fn relayed_addresses(&self, client: &ClientId) -> Vec<SocketAddr> {
        self.allocations
            .of_client(client)
            .map(|a| a.relays.iter().flatten().map(|r| r.advertised).collect())
            .unwrap_or_default()
    }

    /// The next command for the shell, in order.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// The next event, in order. The shell drains these after each batch of packets (off the
    /// per-packet path); an event not taken waits, and the queue is bounded (`events.rs`).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    /// Events waiting to be taken.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// Queues an event, counting it in `events_dropped` if there is no room.
    fn emit(&mut self, event: Event) {
        if !self.events.push(event) {
            self.stats.events_dropped += 1;
        }
    }

    /// When [`Server::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Expires allocations, permissions and channels whose time has come (RFC 8656 §7, §9, §12).
    pub fn handle_timeout(&mut self, now: Now) {
        if self.next_sweep.is_some_and(|t| now.mono < t) {
            return;
        }
        let mut expired = Vec::new();
        let (mut permissions, mut channels) = (0u64, 0u64);
        let (events, dropped) = (&mut self.events, &mut self.stats.events_dropped);
        let mut emit = |e| {
            if !events.push(e) {
                *dropped += 1;
            }
        };
        for (slot, a) in self.allocations.iter_mut() {
            if a.is_ready() && a.expires <= now.mono {
                expired.push(slot);
                continue;
            }
            fast_path::remove_stale_routes(&self.config, a, now.mono, &mut self.commands);
            let (p, c) = a.prune(now.mono, &mut emit);
            permissions += p as u64;
            channels += c as u64;
        }
        for slot in expired {
            self.end_allocation(slot, EndReason::Expired, now);
        }
        for r in self.ledger.take_expired(now.mono) {
            self.give_back_port(r.family, r.port);
        }
        self.refresh_port_gauge();
        self.stats.permissions_active = permissions;
        self.stats.channels_active = channels;
        self.reschedule(now);
    }

    fn reschedule(&mut self, now: Now) {
        self.next_sweep = if self.allocations.is_empty() {
            // No allocation, so no permission or channel: the gauges say so now, not at a
            // sweep that will never come (nothing is left to schedule one).
            self.stats.permissions_active = 0;
            self.stats.channels_active = 0;
            // An EVEN-PORT reservation outlives the allocation that made it; its expiry is
            // swept here, so keep sweeping while any is held.
            (self.ledger.reservations() > 0).then(|| now.mono + SWEEP_INTERVAL)
        } else {
            Some(now.mono + SWEEP_INTERVAL)
        };
    }

    /// The gauges recounted from the allocation table, for checking [`Stats`] against: the
    /// fuzz harness does after every step, tests after a sweep. Permissions are exact at any
    /// time; channels that expired since the last sweep still count until the next one (at
    /// most [`SWEEP_INTERVAL`] later), so `channels_live` is compared after a sweep.
    pub fn recount(&self, now: Instant) -> GaugeRecount {
        let mut r = GaugeRecount::default();
        for (_, a) in self.allocations.iter() {
            r.permissions += a.permissions.len() as u64;
            r.channels_live += a.channels.iter().filter(|c| now < c.expires).count() as u64;
            r.channels_bound += a.channels.len() as u64;
            if a.is_ready() {
                let family = a.gauge_family().index();
                r.allocations_active[a.client.transport as usize][family] += 1;
            }
        }
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        r.relay_ports_free = pools
            .each()
            .filter(|(family, _)| self.relay_address(*family).is_some())
            .map(|(_, p)| p.free() as u64)
            .sum();
        r
    }

    /// Panics, in builds with debug assertions, if the allocation table and its indexes
    /// disagree (`allocations.rs`), or if a relay port in use is also free in this worker's
    /// pool (a port is in one pool or in use, never both). Linear in the allocations: the
    /// fuzz harness runs it after every step; nothing per packet does.
    pub fn check_invariants(&self) {
        self.allocations.check_invariants();
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        for addr in self.allocations.relay_addrs() {
            debug_assert!(
                !pools[Family::of(addr.ip())].is_free(addr.port()),
                "relay port {addr} in use and free"
            );
        }
    }

    /// A stream client's connection closed: its allocation ends with it (RFC 8656 §3.1).
    pub fn handle_client_closed(&mut self, client: &ClientId, now: Now) {
        if let Some(slot) = self.allocations.slot_of(client) {
            self.end_allocation(slot, EndReason::ConnectionClosed, now);
        }
    }

    /// Ends every allocation (pending ones included) for `reason`: the drain timed out, the
    /// process is stopping, or an operator asked. Returns the clients whose allocations ended,
    /// so the shell can close stream connections.
    pub fn end_all(&mut self, reason: EndReason, now: Now) -> Vec<ClientId> {
        let slots: Vec<(Slot, ClientId)> = self
            .allocations
            .iter()
            .map(|(s, a)| (s, a.client))
            .collect();
        for (slot, _) in &slots {
            self.end_allocation(*slot, reason, now);
        }
        slots.into_iter().map(|(_, c)| c).collect()
    }

    /// Ends an allocation for `reason`: counted by reason, removed, and reported with what it
    /// relayed if it had been answered (a pending one never relayed, nor was reported created).
    fn end_allocation(&mut self, slot: Slot, reason: EndReason, now: Now) {
        if self.allocations.get(slot).is_none() {
            return;
        }
        self.stats.ended(reason);
        let Some(a) = self.remove_allocation(slot, now) else {
            return;
        };
        if a.is_ready() {
            let duration = now.mono.saturating_duration_since(a.created);
            self.emit(Event::AllocationEnded {
                owner: Box::new(Owner {
                    client: a.client,
                    user_id: a.user_id,
                    username: a.username,
                }),
                reason,
                duration,
                usage: a.usage,
            });
        }
    }

    /// The relay address configured for a family, if relaying in it is enabled.
    fn relay_address(&self, family: Family) -> Option<RelayAddress> {
        match family {
            Family::V4 => self.config.relay_v4,
            Family::V6 => self.config.relay_v6,
        }
    }

    /// Removes an allocation: relay sockets closed, ports and quota returned. Returns it.
    fn remove_allocation(&mut self, slot: Slot, now: Now) -> Option<allocation::Allocation> {
        if self.allocations.get(slot).is_some_and(|a| !a.is_ready()) {
            // Never answered: the reservation it made was never handed out.
            self.cancel_reservation(slot);
        }
        let (a, relays) = self.allocations.remove(slot)?;
        // Before the relay sockets close: the kernel stops relaying for it first.
        self.remove_routes(&a);
        // Its permissions and channels leave the gauges with it, not at the next sweep.
        self.stats.permissions_active = self
            .stats
            .permissions_active
            .saturating_sub(a.permissions.len() as u64);
        let live_channels = a.channels.iter().filter(|c| now.mono < c.expires).count();
        self.stats.channels_active = self
            .stats
            .channels_active
            .saturating_sub(live_channels as u64);
        for r in relays.into_iter().flatten() {
            let Some(bind) = r.addr else { continue };
            if r.bound {
                self.ledger.mark_relay_port(bind.ip(), bind.port(), false);
                self.commands
                    .push_back(Command::ReleaseRelay { relay: r.id });
            }
            self.give_back_port(r.family, bind.port());
        }
        self.ledger.release(&a.holder());
        if a.is_ready() {
            let g = self
                .stats
                .allocation_gauge(a.client.transport, a.gauge_family());
            *g = g.saturating_sub(1);
            self.stats
                .observe_lifetime(now.mono.saturating_duration_since(a.created).as_secs_f64());
        }
        self.reschedule(now);
        Some(a)
    }

    fn random_tid(&mut self) -> crate::wire::TransactionId {
        let mut t = [0u8; 12];
        self.rng.fill_bytes(&mut t);
        crate::wire::TransactionId(t)
    }
}
