//! A test driver for the sans-IO server: binds every relay it asks for (or fails them on
//! demand), collects what it sends to clients, and moves time forward by hand.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use turnd_proto::auth::{mint_rest_credential, Credentials};
use turnd_proto::client::{self, Attr, ClientAuth, Timing, Transaction, TransactionIds};
use turnd_proto::server::ledger::Ledger;
use turnd_proto::server::ports::PortShard;
use turnd_proto::server::{ChannelRoute, EndReason};
use turnd_proto::wire::{attr, Message, Method, TransactionId};
use turnd_proto::{
    ClientId, Command, FromClient, Now, RelayAddress, RelayId, Server, ServerConfig, Transport,
};

pub const SECRET: &[u8] = b"rotation-secret-2";
pub const OLD_SECRET: &[u8] = b"rotation-secret-1";
pub const REALM: &str = "turnd.test";
pub const T0: u64 = 1_800_000_000;
/// The server address test clients send to.
pub const SERVER_IP: &str = "192.0.2.1";

pub struct Harness {
    pub server: Server,
    pub now: Now,
    pub sent: Vec<(ClientId, Vec<u8>)>,
    pub bound: BTreeMap<RelayId, SocketAddr>,
    pub released: BTreeSet<RelayId>,
    /// The kernel fast path's route table as the commands left it (with `fast_path` on):
    /// keyed like the kernel's map, by client, server address and channel number.
    pub routes: BTreeMap<(SocketAddr, SocketAddr, u16), ChannelRoute>,
    /// Ports whose bind fails (another process holds them).
    pub busy_ports: BTreeSet<u16>,
    /// Transaction ids for [`Harness::tid`] and [`Harness::request`] (a fixed seed: runs repeat).
    ids: TransactionIds,
}

pub fn relay_v4() -> RelayAddress {
    RelayAddress {
        bind: "198.51.100.10".parse().unwrap(),
        advertised: "203.0.113.10".parse().unwrap(),
    }
}

pub fn relay_v6() -> RelayAddress {
    RelayAddress {
        bind: "2001:db8::10".parse().unwrap(),
        advertised: "2001:db8::10".parse().unwrap(),
    }
}

pub fn config() -> ServerConfig {
    let mut users = std::collections::HashMap::new();
    users.insert("static-user".to_owned(), "static-pass".to_owned());
    let creds = Credentials::new(vec![SECRET.to_vec(), OLD_SECRET.to_vec()], users, 86_400);
    // Fixed key and seed: the tests repeat exactly.
    let mut c = ServerConfig::new(REALM, creds, Some(relay_v4()), [7; 32], 0);
    c.ports = PortShard::whole(50000..=50099);
    c
}

pub fn client(n: u16) -> ClientId {
    ClientId {
        transport: Transport::Udp,
        local: 0,
        remote: SocketAddr::new("192.0.2.50".parse().unwrap(), 40000 + n),
        local_ip: SERVER_IP.parse().unwrap(),
    }
}

impl Harness {
    pub fn new(config: ServerConfig) -> Self {
        Self::with_ledger(config, Arc::new(Ledger::new(10, 0)))
    }

    pub fn with_ledger(config: ServerConfig, ledger: Arc<Ledger>) -> Self {
        Harness {
            server: Server::new(config, ledger),
            now: Now {
                mono: Instant::now(),
                unix: T0,
            },
            sent: Vec::new(),
            bound: BTreeMap::new(),
            released: BTreeSet::new(),
            routes: BTreeMap::new(),
            busy_ports: BTreeSet::new(),
            ids: TransactionIds::new(19),
        }
    }

    pub fn tid(&mut self) -> TransactionId {
        self.ids.next_id()
    }

    /// Drains commands, binding relays like a shell would, then checks the server's
    /// invariants (`Server::check_invariants`).
    pub fn drain(&mut self) {
        while let Some(cmd) = self.server.poll_command() {
            match cmd {
                Command::SendToClient { client, bytes } => self.sent.push((client, bytes)),
                Command::BindRelay { relay, addr, .. } => {
                    let result = if self.busy_ports.contains(&addr.port()) {
                        Err(std::io::Error::from(std::io::ErrorKind::AddrInUse))
                    } else {
                        self.bound.insert(relay, addr);
                        Ok(())
                    };
                    self.server.handle_relay_bound(relay, result, self.now);
                }
                Command::ReleaseRelay { relay } => {
                    self.bound.remove(&relay);
                    self.released.insert(relay);
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
        // Every rule test also checks the allocation table's invariants after each step.
        self.server.check_invariants();
    }

    /// Sends a packet from `client`; returns the one response it drew, if any.
    pub fn send(&mut self, c: ClientId, packet: &[u8]) -> Option<Vec<u8>> {
        let before = self.sent.len();
        let out = self.server.handle_client_datagram(self.now, c, packet);
        assert_eq!(out, FromClient::Done, "a request is never relayed");
        self.drain();
        let mut replies: Vec<_> = self.sent.drain(before..).collect();
        assert!(replies.len() <= 1, "one request, one response");
        replies.pop().map(|(to, b)| {
            assert_eq!(to, c);
            b
        })
    }

    /// A configuration reload with new credentials (and the default peer policy), as the
    /// shell does on SIGHUP; returns the clients whose allocations it ended.
    pub fn reload(&mut self, credentials: Credentials) -> Vec<(ClientId, EndReason)> {
        let policy = turnd_proto::policy::PeerPolicy::default();
        let ended = self.server.update_policy(credentials, policy, self.now);
        self.drain();
        ended
    }

    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.after(d);
        self.server.handle_timeout(self.now);
        self.drain();
    }

    /// Sends a request with `auth` through the client [`Transaction`], which answers a 401/438
    /// challenge like a client; every request draws its answer at once here.
    pub fn request(
        &mut self,
        c: ClientId,
        method: Method,
        attrs: &[Attr],
        auth: &mut ClientAuth,
    ) -> Vec<u8> {
        let mono = self.now.mono;
        let mut t = Transaction::new(
            method,
            attrs,
            Some(auth),
            false,
            Timing::unreliable(),
            &mut self.ids,
            mono,
        );
        loop {
            if let Some(outcome) = t.poll_outcome() {
                return outcome.expect("an answer");
            }
            let req = t.poll_transmit(mono).expect("a request to send").to_vec();
            let resp = self.send(c, &req).expect("a response");
            assert!(
                t.handle_input(&resp, mono, auth, &mut self.ids),
                "its answer"
            );
        }
    }

    pub fn rest_auth(&self, user_id: &str, ttl: u64) -> ClientAuth {
        let c = mint_rest_credential(SECRET, user_id, self.now.unix, ttl);
        ClientAuth::new(&c.username, &c.password)
    }

    /// Allocates for `c` and returns the relayed address.
    pub fn allocate(&mut self, c: ClientId, auth: &mut ClientAuth) -> SocketAddr {
        self.allocate_with(c, auth, &[])
    }

    /// Allocates with extra attributes (LIFETIME, families) and returns the relayed address.
    pub fn allocate_with(
        &mut self,
        c: ClientId,
        auth: &mut ClientAuth,
        extra: &[Attr],
    ) -> SocketAddr {
        let mut attrs = vec![Attr::RequestedTransport(17)];
        attrs.extend_from_slice(extra);
        let resp = self.request(c, Method::ALLOCATE, &attrs, auth);
        let msg = Message::parse(&resp).unwrap();
        assert_eq!(client::error_code(&msg), None, "allocate failed");
        client::address(&msg, attr::XOR_RELAYED_ADDRESS).unwrap()
    }

    pub fn code(resp: &[u8]) -> Option<u16> {
        client::error_code(&Message::parse(resp).unwrap())
    }
}
