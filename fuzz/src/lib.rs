//! A driver for fuzzing the whole `proto::Server`: an arbitrary sequence of client datagrams
//! (raw bytes, or well-formed authenticated requests with arbitrary attributes, or those with
//! a byte flipped), peer datagrams, relay bind outcomes, closed connections and time steps.
//! After every step it checks what must always hold, and at the end that everything given out
//! comes back once every client is gone.

use arbitrary::Arbitrary;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use turnd_proto::auth::{mint_rest_credential, Credentials};
use turnd_proto::client::{self, Attr, ClientAuth};
use turnd_proto::server::ledger::Ledger;
use turnd_proto::server::ports::PortShard;
use turnd_proto::server::{answer_budget, Event, PEER_HEADROOM, PEER_TAILROOM};
use turnd_proto::wire::{attr, channel_data, Class, Message, Method, TransactionId};
use turnd_proto::{
    ChannelRoute, ClientId, Command, FromClient, Now, RelayAddress, RelayId, Server, ServerConfig,
    Transport,
};

const SECRET: &[u8] = b"fuzzing-secret";
const T0: u64 = 1_800_000_000;

/// An attribute a fuzzed request may carry.
#[derive(Arbitrary, Debug, Clone)]
pub enum FuzzAttr {
    Lifetime(u32),
    RequestedTransport(u8),
    RequestedFamily(u8),
    AdditionalFamily(u8),
    PeerV4([u8; 4], u16),
    PeerV6([u8; 16], u16),
    /// A peer on the relay's own address (the hairpin path), on a port near the range.
    OwnRelay(u8),
    Channel(u16),
    Data(Vec<u8>),
    EvenPort(u8),
    ReservationToken([u8; 8]),
    DontFragment,
    Raw(u16, Vec<u8>),
}

/// One step.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// Any bytes from a client.
    Raw { client: u8, bytes: Vec<u8> },
    /// A well-formed request, authenticated as `user` (challenge answered first).
    Request {
        client: u8,
        user: u8,
        method: u8,
        attrs: Vec<FuzzAttr>,
        fingerprint: bool,
    },
    /// The same, with one byte changed after signing.
    Tampered {
        client: u8,
        user: u8,
        attrs: Vec<FuzzAttr>,
        at: u16,
        xor: u8,
    },
    /// ChannelData or a Send indication from a client.
    ChannelData {
        client: u8,
        channel: u16,
        payload: Vec<u8>,
    },
    Send {
        client: u8,
        peer: FuzzAttr,
        payload: Vec<u8>,
    },
    /// A datagram arriving on relay socket `relay` from `peer`.
    Peer {
        relay: u8,
        peer: FuzzAttr,
        payload: Vec<u8>,
    },
    /// The next relay bind fails (the port is held elsewhere).
    FailNextBind,
    /// A stream client's connection closes.
    Close { client: u8 },
    /// Time passes.
    Advance { secs: u16 },
    /// A configuration reload (SIGHUP) with one of a few credential sets: unchanged, a user
    /// revoked, the static user removed, the REST secret removed.
    Reload { credentials: u8 },
}

pub struct Driver {
    server: Server,
    ledger: Arc<Ledger>,
    now: Now,
    auths: BTreeMap<(u8, u8), ClientAuth>,
    bound: BTreeMap<RelayId, SocketAddr>,
    fail_next_bind: bool,
    tid: u32,
    /// Allocations reported created and ended by the server's events (`Server::poll_event`).
    events_created: u64,
    events_ended: u64,
    /// The kernel fast path's route table as the commands left it, keyed like its map.
    routes: BTreeMap<(SocketAddr, SocketAddr, u16), ChannelRoute>,
}

fn relay_v4() -> RelayAddress {
    RelayAddress {
        bind: "198.51.100.10".parse().unwrap(),
        advertised: "203.0.113.10".parse().unwrap(),
    }
}

fn relay_v6() -> RelayAddress {
    RelayAddress {
        bind: "2001:db8::10".parse().unwrap(),
        advertised: "2001:db8::10".parse().unwrap(),
    }
}

/// Eight clients: UDP, TCP and TLS, on two addresses.
fn client_id(n: u8) -> ClientId {
    let n = n % 8;
    let transport = Transport::ALL[n as usize % 3];
    ClientId {
        transport,
        local: u32::from(n % 2),
        remote: SocketAddr::new(
            if n < 4 {
                "192.0.2.1".parse().unwrap()
            } else {
                "2001:db8::1".parse().unwrap()
            },
            40000 + u16::from(n),
        ),
        local_ip: if n < 4 {
            "192.0.2.10".parse().unwrap()
        } else {
            "2001:db8::10".parse().unwrap()
        },
    }
}

fn peer_addr(a: &FuzzAttr) -> SocketAddr {
    match a {
        FuzzAttr::PeerV6(ip, port) => SocketAddr::new(IpAddr::from(*ip), *port),
        FuzzAttr::OwnRelay(p) => SocketAddr::new(relay_v4().advertised, 50000 + u16::from(*p % 40)),
        FuzzAttr::PeerV4(ip, port) => SocketAddr::new(IpAddr::from(*ip), *port),
        _ => "8.8.8.8:53".parse().unwrap(),
    }
}

fn to_attr(a: &FuzzAttr) -> Attr {
    match a {
        FuzzAttr::Lifetime(s) => Attr::Lifetime(*s),
        FuzzAttr::RequestedTransport(p) => Attr::RequestedTransport(*p),
        FuzzAttr::RequestedFamily(f) => Attr::RequestedFamily(*f % 3),
        FuzzAttr::AdditionalFamily(f) => Attr::AdditionalFamily(*f % 3),
        FuzzAttr::PeerV4(..) | FuzzAttr::PeerV6(..) | FuzzAttr::OwnRelay(_) => {
            Attr::Peer(peer_addr(a))
        }
        FuzzAttr::Channel(n) => Attr::Channel(0x4000 + n % 0x1010),
        FuzzAttr::Data(d) => Attr::Data(d.clone()),
        FuzzAttr::EvenPort(b) => Attr::Raw(attr::EVEN_PORT, vec![*b & 0x80, 0, 0, 0]),
        FuzzAttr::ReservationToken(t) => Attr::Raw(attr::RESERVATION_TOKEN, t.to_vec()),
        FuzzAttr::DontFragment => Attr::Raw(attr::DONT_FRAGMENT, vec![]),
        FuzzAttr::Raw(t, v) => Attr::Raw(*t, v.clone()),
    }
}

/// The credentials a reload may switch to: 0 the starting set (REST secret, static user,
/// "revoked" revoked), 1 also revoking user2, 2 without the static user, 3 without the secret.
fn credential_set(n: u8) -> Credentials {
    let mut users = std::collections::HashMap::new();
    if n % 4 != 2 {
        users.insert("static".to_owned(), "static-pass".to_owned());
    }
    let secrets = if n % 4 == 3 {
        vec![]
    } else {
        vec![SECRET.to_vec()]
    };
    let mut revoked = vec!["revoked".to_owned()];
    if n % 4 == 1 {
        revoked.push("user2".to_owned());
    }
    Credentials::new(secrets, users, 86_400).with_revoked(revoked)
}

const METHODS: [Method; 5] = [
    Method::ALLOCATE,
    Method::REFRESH,
    Method::CREATE_PERMISSION,
    Method::CHANNEL_BIND,
    Method::BINDING,
];

/// Every padding byte of a STUN message is zero (no memory leaks through padding).
fn assert_zero_padding(bytes: &[u8]) {
    let mut at = 20;
    while at + 4 <= bytes.len() {
        let len = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        let end = at + 4 + len;
        let padded = at + 4 + len.div_ceil(4) * 4;
        assert!(
            bytes[end..padded].iter().all(|b| *b == 0),
            "non-zero padding"
        );
        at = padded;
    }
}

impl Default for Driver {
    fn default() -> Self {
        Self::new()
    }
}

impl Driver {
    pub fn new() -> Self {
        let mut users = std::collections::HashMap::new();
        users.insert("static".to_owned(), "static-pass".to_owned());
        let mut c = ServerConfig::new("fuzz", credential_set(0), Some(relay_v4()), [9; 32], 0);
        c.relay_v6 = Some(relay_v6());
        c.ports = PortShard::whole(50000..=50039);
        c.max_permissions = 4;
        c.max_channels = 4;
        c.legacy_channel_numbers = true;
        c.error_rate_per_source = 100;
        // Routes for a kernel fast path: every live one is checked against the core's own
        // decision after each step (`check`). Two listeners, as `client_id` uses.
        c.fast_path = true;
        c.udp_listeners = vec!["192.0.2.100:3478".parse().unwrap(); 2];
        let ledger = Arc::new(Ledger::new(3, 12).with_address_quota(5));
        Driver {
            server: Server::new(c, ledger.clone()),
            ledger,
            now: Now {
                mono: Instant::now(),
                unix: T0,
            },
            auths: BTreeMap::new(),
            bound: BTreeMap::new(),
            fail_next_bind: false,
            tid: 0,
            events_created: 0,
            events_ended: 0,
            routes: BTreeMap::new(),
        }
    }

    fn tid(&mut self) -> TransactionId {
        self.tid += 1;
        let mut t = [0u8; 12];
        t[..4].copy_from_slice(&self.tid.to_be_bytes());
        TransactionId(t)
    }

    fn auth(&mut self, client: u8, user: u8) -> ClientAuth {
        let now = self.now.unix;
        self.auths
            .entry((client % 8, user % 4))
            .or_insert_with(|| match user % 4 {
                0 => ClientAuth::new("static", "static-pass"),
                1 => {
                    let c = mint_rest_credential(SECRET, "revoked", now, 600);
                    ClientAuth::new(&c.username, &c.password)
                }
                n => {
                    let c = mint_rest_credential(SECRET, &format!("user{n}"), now, 600);
                    ClientAuth::new(&c.username, &c.password)
                }
            })
            .clone()
    }

    /// Feeds a client datagram and checks what comes back.
    fn client_sends(&mut self, c: ClientId, packet: &[u8]) -> Vec<Vec<u8>> {
        match self.server.handle_client_datagram(self.now, c, packet) {
            FromClient::Forward {
                relay,
                peer,
                payload,
            } => {
                assert!(payload.end <= packet.len() && payload.start <= payload.end);
                assert!(
                    self.bound.contains_key(&relay),
                    "forwarded through an unbound relay"
                );
                // Only to peers the policy allows, or to a relay port in use on the relay's
                // own addresses (two clients of one server).
                let policy = &self.server.config().policy;
                let own_ip = [relay_v4(), relay_v6()]
                    .iter()
                    .any(|r| r.advertised == peer.ip() || r.bind == peer.ip());
                assert!(
                    policy.allows(peer.ip())
                        || (own_ip && self.ledger.is_relay_port(peer.ip(), peer.port())),
                    "forwarded to a denied peer {peer}"
                );
                Vec::new()
            }
            FromClient::Done => self.drain(Some((c, packet.len()))),
        }
    }

    /// Carries out the server's commands like a shell; returns the responses to `asker`.
    fn drain(&mut self, asker: Option<(ClientId, usize)>) -> Vec<Vec<u8>> {
        let mut replies = Vec::new();
        while let Some(cmd) = self.server.poll_command() {
            match cmd {
                Command::SendToClient { client, bytes } => {
                    let msg = Message::parse(&bytes).expect("every response parses");
                    assert!(matches!(msg.class(), Class::Success | Class::Error));
                    assert_zero_padding(&bytes);
                    if let Some((c, len)) = asker {
                        if c == client && !msg.has_integrity() && msg.class() == Class::Error {
                            assert!(
                                bytes.len() <= answer_budget(len),
                                "amplification: {} B answer to {len} B",
                                bytes.len()
                            );
                        }
                    }
                    if Some(client) == asker.map(|a| a.0) {
                        replies.push(bytes);
                    }
                }
                Command::BindRelay { relay, addr, .. } => {
                    let result = if std::mem::take(&mut self.fail_next_bind) {
                        Err(std::io::Error::from(std::io::ErrorKind::AddrInUse))
                    } else {
                        assert!(
                            !self.bound.values().any(|b| *b == addr),
                            "port {addr} handed out twice"
                        );
                        self.bound.insert(relay, addr);
                        Ok(())
                    };
                    self.server.handle_relay_bound(relay, result, self.now);
                }
                Command::ReleaseRelay { relay } => {
                    assert!(
                        self.bound.remove(&relay).is_some(),
                        "released an unbound relay"
                    );
                }
                Command::InstallRoute(r) => {
                    self.routes
                        .insert((r.client.remote, r.server, r.channel), r);
                }
                Command::RemoveRoute(r) => {
                    self.routes.remove(&(r.client.remote, r.server, r.channel));
                }
            }
        }
        replies
    }

    /// Sends a request as `user`, answering one challenge like a client.
    fn request(
        &mut self,
        client: u8,
        user: u8,
        method: Method,
        attrs: &[Attr],
        fp: bool,
        tamper: Option<(u16, u8)>,
    ) {
        let c = client_id(client);
        for _ in 0..2 {
            let mut auth = self.auth(client, user);
            let tid = self.tid();
            let mut req = client::request(method, tid, attrs, Some(&auth), fp);
            if let Some((at, xor)) = tamper {
                let i = at as usize % req.len();
                req[i] ^= xor;
            }
            let replies = self.client_sends(c, &req);
            let Some(resp) = replies.last() else { return };
            let Ok(msg) = Message::parse(resp) else {
                return;
            };
            match client::error_code(&msg) {
                Some(401) | Some(438) if msg.get(attr::NONCE).is_some() => {
                    auth.learn(&msg);
                    self.auths.insert((client % 8, user % 4), auth);
                }
                _ => return,
            }
        }
    }

    pub fn step(&mut self, op: &Op) {
        match op {
            Op::Raw { client, bytes } => {
                self.client_sends(client_id(*client), bytes);
            }
            Op::Request {
                client,
                user,
                method,
                attrs,
                fingerprint,
            } => {
                let attrs: Vec<Attr> = attrs.iter().take(8).map(to_attr).collect();
                let m = METHODS[*method as usize % METHODS.len()];
                self.request(*client, *user, m, &attrs, *fingerprint, None);
            }
            Op::Tampered {
                client,
                user,
                attrs,
                at,
                xor,
            } => {
                let attrs: Vec<Attr> = attrs.iter().take(8).map(to_attr).collect();
                self.request(
                    *client,
                    *user,
                    Method::ALLOCATE,
                    &attrs,
                    false,
                    Some((*at, *xor)),
                );
            }
            Op::ChannelData {
                client,
                channel,
                payload,
            } => {
                let c = client_id(*client);
                let cd = client::channel_data(*channel, payload, c.transport.is_stream());
                self.client_sends(c, &cd);
            }
            Op::Send {
                client,
                peer,
                payload,
            } => {
                let tid = self.tid();
                let ind = client::send_indication(tid, peer_addr(peer), payload);
                self.client_sends(client_id(*client), &ind);
            }
            Op::Peer {
                relay,
                peer,
                payload,
            } => {
                let Some(id) = self
                    .bound
                    .keys()
                    .nth(*relay as usize % self.bound.len().max(1))
                    .copied()
                else {
                    return;
                };
                let len = payload.len().min(1400);
                let mut buf = vec![0u8; PEER_HEADROOM + len + PEER_TAILROOM];
                buf[PEER_HEADROOM..PEER_HEADROOM + len].copy_from_slice(&payload[..len]);
                let range = PEER_HEADROOM..PEER_HEADROOM + len;
                if let Some(out) =
                    self.server
                        .handle_peer_datagram(self.now, id, peer_addr(peer), &mut buf, range)
                {
                    assert!(out.range.end <= buf.len());
                    let framed = &buf[out.range.clone()];
                    let ok = channel_data::parse(framed)
                        .is_some_and(|cd| cd.data == &payload[..len])
                        || Message::parse(framed).is_ok_and(|m| {
                            m.class() == Class::Indication
                                && m.get(attr::DATA) == Some(&payload[..len])
                        });
                    assert!(ok, "peer data framed wrongly");
                }
            }
            Op::FailNextBind => self.fail_next_bind = true,
            Op::Close { client } => {
                let c = client_id(*client);
                self.server.handle_client_closed(&c, self.now);
                self.drain(None);
            }
            Op::Advance { secs } => {
                self.now = self.now.after(Duration::from_secs(u64::from(*secs % 900)));
                let sweeps = self
                    .server
                    .poll_timeout()
                    .is_some_and(|t| t <= self.now.mono);
                self.server.handle_timeout(self.now);
                self.drain(None);
                if sweeps {
                    // Right after a sweep every gauge is exact, channels included.
                    let r = self.server.recount(self.now.mono);
                    assert_eq!(
                        self.server.stats().channels_active,
                        r.channels_live,
                        "channel gauge after a sweep"
                    );
                }
            }
            Op::Reload { credentials } => {
                let set = credential_set(*credentials);
                let ended = self.server.update_policy(set, Default::default(), self.now);
                self.drain(None);
                for (c, _) in ended {
                    assert!(
                        !self.server.has_allocation(&c),
                        "an ended allocation lives on"
                    );
                }
            }
        }
        self.take_events();
        self.check();
    }

    /// Drains the server's events like a shell after each batch. Each created allocation is
    /// ended at most once, and what one reports relayed fits within the worker's totals.
    fn take_events(&mut self) {
        while let Some(e) = self.server.poll_event() {
            match e {
                Event::AllocationCreated { .. } => self.events_created += 1,
                Event::AllocationEnded { usage, .. } => {
                    self.events_ended += 1;
                    let s = self.server.stats();
                    assert!(
                        usage.to_peer.bytes <= s.bytes_to_peer,
                        "usage over the total"
                    );
                    assert!(
                        usage.to_client.bytes <= s.bytes_to_client,
                        "usage over the total"
                    );
                }
                _ => {}
            }
        }
        if self.server.stats().events_dropped == 0 {
            let live: u64 = self
                .server
                .recount(self.now.mono)
                .allocations_active
                .iter()
                .flatten()
                .sum();
            assert_eq!(
                self.events_created - self.events_ended,
                live,
                "created and ended events out of step with the live allocations"
            );
        }
    }

    /// What holds after every step.
    fn check(&self) {
        // The allocation table, its 5-tuple index and relay ids, and the port pools agree
        // (debug_assert!s inside the server; this harness builds with debug assertions).
        self.server.check_invariants();
        let allocations = self.server.allocation_count();
        assert_eq!(
            allocations as u32,
            self.ledger.total(),
            "ledger and server disagree"
        );
        assert!(allocations <= 8, "one allocation per 5-tuple");
        let by_address: u32 = ["192.0.2.1", "2001:db8::"]
            .iter()
            .map(|a| self.ledger.from_address(a.parse().unwrap()))
            .sum();
        assert_eq!(
            by_address,
            self.ledger.total(),
            "per-address counts drifted"
        );
        assert!(self.ledger.from_address("192.0.2.1".parse().unwrap()) <= 5);
        let s = self.server.stats();
        assert!(s.relay_ports_free <= s.relay_ports_total);
        assert!(
            self.bound.len() <= 2 * allocations,
            "relay sockets without an allocation"
        );
        // Every gauge against a recount of the server's state. Channels that expired since
        // the last sweep still count until the next one, so only a lower bound holds here
        // (the Advance step checks equality right after a sweep).
        let r = self.server.recount(self.now.mono);
        assert_eq!(
            s.allocations_active, r.allocations_active,
            "allocation gauges"
        );
        assert_eq!(s.permissions_active, r.permissions, "permission gauge");
        assert_eq!(
            s.relay_ports_free, r.relay_ports_free,
            "free relay ports gauge"
        );
        assert!(
            s.channels_active >= r.channels_live,
            "channel gauge below the live channels"
        );
        if allocations == 0 {
            assert_eq!(
                (s.permissions_active, s.channels_active),
                (0, 0),
                "gauges without allocations"
            );
        }
        // A kernel fast path never relays what the core would not: every route goes where
        // ChannelData on its channel goes, through the same relay socket (at its bind
        // address), and only UDP clients have routes. The kernel checks only the expiry, and
        // the sweeps that remove routes come at most once a second, so this must hold at every
        // instant up to the expiry: now, and its last nanosecond.
        for r in self.routes.values() {
            assert_eq!(
                r.client.transport,
                Transport::Udp,
                "a route for a stream client"
            );
            let last = r.expires - std::time::Duration::from_nanos(1);
            for at in [self.now.mono, last].into_iter().filter(|t| *t < r.expires) {
                let (relay, peer) = self
                    .server
                    .channel_destination(at, &r.client, r.channel)
                    .unwrap_or_else(|| panic!("a route relays where the core would not: {r:?}"));
                assert_eq!(peer, r.peer, "route to another peer than the channel's");
                assert_eq!(
                    self.bound.get(&relay),
                    Some(&r.relay),
                    "route from another relay"
                );
            }
        }
    }

    /// Every client goes away and time runs out: everything given out has come back.
    pub fn finish(mut self) {
        for n in 0..8 {
            self.server.handle_client_closed(&client_id(n), self.now);
        }
        self.drain(None);
        for _ in 0..2 {
            self.now = self.now.after(Duration::from_secs(3700));
            self.server.handle_timeout(self.now);
            self.drain(None);
        }
        assert_eq!(self.server.allocation_count(), 0);
        assert_eq!(self.ledger.total(), 0, "quota not returned");
        assert_eq!(self.ledger.users(), 0, "per-user entries left behind");
        assert_eq!(
            self.ledger.from_address("192.0.2.1".parse().unwrap()),
            0,
            "per-address entries left behind"
        );
        assert_eq!(self.ledger.reservations(), 0, "reservations left behind");
        assert!(
            self.bound.is_empty(),
            "relay sockets never released: {:?}",
            self.bound
        );
        let s = self.server.stats();
        assert_eq!(s.relay_ports_free, s.relay_ports_total, "relay ports lost");
        let gauges: u64 = s.allocations_active.iter().flatten().sum();
        assert_eq!(gauges, 0, "allocation gauges drifted");
        // Every allocation reported created was reported ended, with its reason counted.
        self.take_events();
        let s = self.server.stats();
        let ended: u64 = s.allocations_ended.iter().sum();
        assert!(ended >= self.events_ended, "ended events without a count");
        if s.events_dropped == 0 {
            assert_eq!(
                self.events_created, self.events_ended,
                "an end not reported"
            );
        }
    }
}

/// Runs a whole sequence (the fuzz target's body).
pub fn run(ops: &[Op]) {
    let mut d = Driver::new();
    for op in ops.iter().take(200) {
        d.step(op);
    }
    d.finish();
}

/// A few sequences that take the server through its main paths, for seeding the corpus and
/// for a quick self-check of the driver.
pub fn example_sequences() -> Vec<Vec<Op>> {
    let alloc = |client, user, extra: Vec<FuzzAttr>| {
        let mut attrs = vec![FuzzAttr::RequestedTransport(17)];
        attrs.extend(extra);
        Op::Request {
            client,
            user,
            method: 0,
            attrs,
            fingerprint: true,
        }
    };
    vec![
        vec![
            alloc(0, 2, vec![]),
            alloc(3, 3, vec![FuzzAttr::AdditionalFamily(2)]),
            Op::Request {
                client: 0,
                user: 2,
                method: 2,
                attrs: vec![FuzzAttr::OwnRelay(1), FuzzAttr::PeerV4([8, 8, 8, 8], 53)],
                fingerprint: false,
            },
            Op::Request {
                client: 0,
                user: 2,
                method: 3,
                attrs: vec![FuzzAttr::Channel(1), FuzzAttr::PeerV4([8, 8, 8, 8], 53)],
                fingerprint: false,
            },
            Op::ChannelData {
                client: 0,
                channel: 0x4001,
                payload: b"hello".to_vec(),
            },
            Op::Send {
                client: 0,
                peer: FuzzAttr::PeerV4([8, 8, 8, 8], 53),
                payload: b"hi".to_vec(),
            },
            Op::Peer {
                relay: 0,
                peer: FuzzAttr::PeerV4([8, 8, 8, 8], 53),
                payload: b"back".to_vec(),
            },
            Op::Advance { secs: 301 },
            Op::Close { client: 3 },
        ],
        vec![
            alloc(1, 0, vec![FuzzAttr::EvenPort(0x80)]),
            Op::FailNextBind,
            alloc(2, 1, vec![]),
            alloc(4, 2, vec![FuzzAttr::RequestedFamily(2)]),
            Op::Tampered {
                client: 5,
                user: 3,
                attrs: vec![FuzzAttr::RequestedTransport(17)],
                at: 30,
                xor: 1,
            },
            Op::Request {
                client: 1,
                user: 0,
                method: 1,
                attrs: vec![FuzzAttr::Lifetime(0)],
                fingerprint: false,
            },
            Op::Raw {
                client: 6,
                bytes: vec![0x40, 0x00, 0xff, 0xff, 1, 2],
            },
        ],
        // Reloads: a user revoked, the static user and then the secret removed, put back.
        vec![
            alloc(0, 0, vec![]),
            alloc(1, 2, vec![]),
            alloc(2, 3, vec![]),
            Op::Reload { credentials: 1 },
            Op::Reload { credentials: 2 },
            Op::Reload { credentials: 0 },
            alloc(5, 2, vec![]),
            Op::Reload { credentials: 3 },
        ],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The driver really drives: allocations are made, data flows both ways, and the second
    /// sequence's paths (EVEN-PORT, bind failure, revoked user, tampering) run clean too.
    #[test]
    fn example_sequences_run_clean() {
        let seqs = example_sequences();
        let mut d = Driver::new();
        for op in &seqs[0][..2] {
            d.step(op);
        }
        assert_eq!(d.server.allocation_count(), 2);
        for op in &seqs[0][2..] {
            d.step(op);
        }
        let s = d.server.stats();
        assert!(s.packets_to_peer >= 2 && s.packets_to_client >= 1, "{s:?}");
        d.finish();
        run(&seqs[1]);

        let mut d = Driver::new();
        for op in &seqs[2][..3] {
            d.step(op);
        }
        assert_eq!(d.server.allocation_count(), 3);
        d.step(&seqs[2][3]);
        assert_eq!(d.server.allocation_count(), 2, "user2 revoked");
        d.step(&seqs[2][4]);
        assert_eq!(d.server.allocation_count(), 1, "the static user removed");
        for op in &seqs[2][5..7] {
            d.step(op);
        }
        assert_eq!(d.server.allocation_count(), 2);
        d.step(&seqs[2][7]);
        assert_eq!(d.server.allocation_count(), 0, "the secret removed");
        d.finish();
    }

    /// The checked-in server corpus replays clean on a stable toolchain too (as libFuzzer
    /// decodes its inputs), with the event checks of `take_events` and `finish`.
    #[test]
    fn the_server_corpus_replays_clean() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/server");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let u = arbitrary::Unstructured::new(&bytes);
            if let Ok(ops) = <Vec<Op> as Arbitrary>::arbitrary_take_rest(u) {
                run(&ops);
                n += 1;
            }
        }
        assert!(n > 100, "only {n} corpus inputs decoded");
    }
}
