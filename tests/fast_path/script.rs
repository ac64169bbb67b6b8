//! A run of the script: the sockets, the model of what turnd holds, the lockstep rounds and
//! the timelines.

use super::cast::*;
use super::recording::*;
use crate::common::UdpTurnClient;
use crate::diff_topology::Topology;
use crate::{time_scale_honoured, ARRIVAL_WITHIN, QUIET, SECRET, SEED, TIME_SCALE_READY};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use turnd_proto::client::{self as tc, Attr};
use turnd_proto::wire::{attr, Class, Message, Method, TransactionId};

/// A socket of the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ep {
    Client(usize),
    /// (client, peer index in the client's spec)
    Peer(usize, usize),
}

/// One datagram the script sends, and what the model says must come of it.
pub(crate) struct Planned {
    pub(crate) from: Ep,
    pub(crate) to: SocketAddr,
    pub(crate) bytes: Vec<u8>,
    /// The socket it reaches if relayed (at most one planned packet per socket per round).
    pub(crate) dest: Ep,
    /// What `dest` must receive; None: nothing (relaying it would be a bug).
    pub(crate) expect: Option<Arrival>,
}

/// The model's view of one peer: what turnd holds for it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PeerState {
    pub(crate) permission: bool,
    /// The live channel number bound to it.
    pub(crate) channel: Option<u16>,
    /// Sequence numbers of what it sent and what was sent to it.
    pub(crate) seq_in: u16,
    pub(crate) seq_out: u16,
}

pub(crate) struct ClientRt {
    pub(crate) spec: ClientSpec,
    pub(crate) turn: UdpTurnClient,
    /// Relayed addresses by family.
    pub(crate) relay_v4: Option<SocketAddr>,
    pub(crate) relay_v6: Option<SocketAddr>,
    pub(crate) alive: bool,
    /// Deleted, and its dead paths probed once since.
    pub(crate) probed_dead: bool,
    pub(crate) peers: Vec<(UdpSocket, PeerState)>,
}

impl ClientRt {
    pub(crate) fn relay_for(&self, f: Fam) -> SocketAddr {
        match f {
            Fam::V4 => self.relay_v4,
            Fam::V6 => self.relay_v6,
        }
        .expect("a relay of the peer's family")
    }
}

/// Phases are protocol seconds since the run started; real time = protocol / scale.
pub(crate) const SETUP_DONE_BY: u32 = 60;
/// The first phase whose expectations depend on turnd's clock running fast.
pub(crate) const FIRST_EXPIRY: u32 = 400;
/// Where the early group is deleted.
pub(crate) const EARLY_DELETE: u32 = 130;
/// The first phase after the unrefreshed channels have expired (their cool-down runs).
pub(crate) const CHANNELS_EXPIRED: u32 = 700;
/// Where the expired channels' numbers are bound to other peers (cool-down over).
pub(crate) const REBIND: u32 = 1_000;
/// The last phase: every allocation deleted.
pub(crate) const FINAL: u32 = 1_100;

pub(crate) struct Run {
    pub(crate) clients: Vec<ClientRt>,
    pub(crate) names: BTreeMap<SocketAddr, String>,
    pub(crate) rng: StdRng,
    pub(crate) start: Instant,
    /// Real seconds per protocol second.
    pub(crate) scale: f64,
    pub(crate) phase: u32,
    pub(crate) rec: Recording,
    /// What the model expected, per socket and for the answers.
    pub(crate) expected: Recording,
    /// How long a packet the model expects is waited for.
    pub(crate) arrival_within: Duration,
    /// The relay's namespace (its UDP counters are logged at every phase).
    pub(crate) relay_ns: String,
    /// Packets the model expects relayed as ChannelData in a form the fast path takes
    /// (client->peer without trailing bytes past the padding, peer->client on a channel).
    pub(crate) channel_relayed: u64,
}

impl Run {
    pub(crate) fn new(topo: &Topology, cast: &[ClientSpec], scale: f64) -> Run {
        let mut ips: Vec<IpAddr> = cast.iter().map(|c| c.addr.ip()).collect();
        ips.extend(
            cast.iter()
                .flat_map(|c| c.peers.iter().map(|p| p.addr.ip())),
        );
        topo.add_outside(&ips);
        let mut socks = topo
            .outside_sockets(
                cast.iter()
                    .flat_map(|c| std::iter::once(c.addr).chain(c.peers.iter().map(|p| p.addr)))
                    .collect(),
            )
            .into_iter();
        let mut names = BTreeMap::new();
        names.insert(V4_SERVER, "turnd-v4".to_owned());
        names.insert(V6_SERVER, "turnd-v6".to_owned());
        let clients = cast
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                names.insert(spec.addr, format!("c{i}"));
                let (user, pass) = rest(&format!("c{i}"));
                let turn =
                    UdpTurnClient::with_socket(socks.next().unwrap(), spec.server, &user, &pass);
                let peers = spec
                    .peers
                    .iter()
                    .enumerate()
                    .map(|(k, p)| {
                        names.insert(p.addr, format!("c{i}.p{k}"));
                        (socks.next().unwrap(), PeerState::default())
                    })
                    .collect();
                ClientRt {
                    spec: spec.clone(),
                    turn,
                    relay_v4: None,
                    relay_v6: None,
                    alive: false,
                    probed_dead: false,
                    peers,
                }
            })
            .collect();
        Run {
            clients,
            names,
            rng: StdRng::seed_from_u64(SEED),
            start: Instant::now(),
            scale,
            phase: 0,
            rec: Recording::default(),
            expected: Recording::default(),
            arrival_within: ARRIVAL_WITHIN,
            relay_ns: topo.base.relay.name.clone(),
            channel_relayed: 0,
        }
    }

    /// Protocol seconds since the start.
    pub(crate) fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * self.scale
    }

    /// Waits for protocol second `at` and makes it the phase.
    pub(crate) fn phase(&mut self, at: u32) {
        let due = self.start + Duration::from_secs_f64(f64::from(at) / self.scale);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        eprintln!(
            "phase {at} at protocol second {:.0}; the relay's sockets have received {} datagrams",
            self.now(),
            crate::diff_topology::udp_in_datagrams(&self.relay_ns)
        );
        self.phase = at;
    }

    /// Panics unless the script is still before protocol second `limit` (a machine too slow
    /// for the timeline would otherwise show as a difference between the runs).
    pub(crate) fn before(&self, limit: u32, what: &str) {
        let now = self.now();
        assert!(
            now < f64::from(limit),
            "timing slipped: {what} must be done by protocol second {limit}, it is {now:.0}"
        );
    }

    pub(crate) fn name(&self, a: SocketAddr) -> String {
        self.names
            .get(&a)
            .cloned()
            .unwrap_or_else(|| format!("unknown {a}"))
    }

    pub(crate) fn ep_name(&self, ep: Ep) -> String {
        match ep {
            Ep::Client(i) => format!("c{i}"),
            Ep::Peer(i, k) => format!("c{i}.p{k}"),
        }
    }

    pub(crate) fn sock(&self, ep: Ep) -> &UdpSocket {
        match ep {
            Ep::Client(i) => &self.clients[i].turn.sock,
            Ep::Peer(i, k) => &self.clients[i].peers[k].0,
        }
    }

    pub(crate) fn all_eps(&self) -> Vec<Ep> {
        self.clients
            .iter()
            .enumerate()
            .flat_map(|(i, c)| {
                std::iter::once(Ep::Client(i))
                    .chain((0..c.peers.len()).map(move |k| Ep::Peer(i, k)))
            })
            .collect()
    }

    // ---- control requests --------------------------------------------------------------

    /// A request from client `i`; its answer is recorded (and expected: `expect` is the error
    /// code the model predicts, None for success).
    pub(crate) fn request(
        &mut self,
        i: usize,
        method: Method,
        attrs: &[Attr],
        what: &str,
        expect: Option<u16>,
    ) -> Vec<u8> {
        let resp = self.clients[i].turn.request(method, attrs);
        let code = UdpTurnClient::code(&resp);
        let label = format!("c{i} {what}");
        let phase = self.phase;
        self.rec.answers.push(Answer {
            phase,
            label: label.clone(),
            code,
        });
        self.expected.answers.push(Answer {
            phase,
            label,
            code: expect,
        });
        resp
    }

    pub(crate) fn allocate(&mut self, i: usize) {
        let mut attrs = vec![Attr::RequestedTransport(17)];
        match self.clients[i].spec.kind {
            AllocKind::V4 => {}
            AllocKind::V6 => attrs.push(Attr::RequestedFamily(2)),
            AllocKind::Dual => attrs.push(Attr::AdditionalFamily(2)),
        }
        let resp = self.request(i, Method::ALLOCATE, &attrs, "Allocate", None);
        let msg = Message::parse(&resp).unwrap();
        let relayed = tc::addresses(&msg, attr::XOR_RELAYED_ADDRESS);
        assert!(
            !relayed.is_empty(),
            "c{i}: Allocate failed: {:?}",
            tc::error_code(&msg)
        );
        let c = &mut self.clients[i];
        for r in relayed {
            match fam(&r) {
                Fam::V4 => c.relay_v4 = Some(r),
                Fam::V6 => c.relay_v6 = Some(r),
            }
            let n = format!("c{i}.relay{}", if r.is_ipv4() { 4 } else { 6 });
            self.names.insert(r, n);
        }
        self.clients[i].alive = true;
    }

    pub(crate) fn channel_bind(&mut self, i: usize, k: usize, number: u16, expect: Option<u16>) {
        let peer = self.clients[i].spec.peers[k].addr;
        let what = format!("ChannelBind {number:#x} -> p{k}");
        self.request(
            i,
            Method::CHANNEL_BIND,
            &[Attr::Channel(number), Attr::Peer(peer)],
            &what,
            expect,
        );
        if expect.is_none() {
            let st = &mut self.clients[i].peers[k].1;
            st.permission = true;
            st.channel = Some(number);
        }
    }

    pub(crate) fn permit(&mut self, i: usize, k: usize) {
        let peer = self.clients[i].spec.peers[k].addr;
        self.request(
            i,
            Method::CREATE_PERMISSION,
            &[Attr::Peer(peer)],
            &format!("CreatePermission p{k}"),
            None,
        );
        self.clients[i].peers[k].1.permission = true;
    }

    pub(crate) fn delete(&mut self, i: usize) {
        self.request(i, Method::REFRESH, &[Attr::Lifetime(0)], "Refresh 0", None);
        self.clients[i].alive = false;
    }

    /// Every client allocates; channel peers are bound, indication peers permitted.
    pub(crate) fn setup(&mut self) {
        for i in 0..self.clients.len() {
            self.allocate(i);
            for k in 0..self.clients[i].spec.peers.len() {
                let p = self.clients[i].spec.peers[k].clone();
                match (p.role, p.channel) {
                    (Role::RebindTarget, _) => {}
                    (_, Some(n)) => self.channel_bind(i, k, n, None),
                    (_, None) => self.permit(i, k),
                }
            }
        }
    }

    /// Keeps alive what the script keeps alive: allocations, Keep peers' channels and
    /// permissions, ChanExpire peers' permissions (not their channels), rebound channels.
    pub(crate) fn refresh(&mut self) {
        for i in 0..self.clients.len() {
            if !self.clients[i].alive {
                continue;
            }
            self.request(i, Method::REFRESH, &[], "Refresh", None);
            for k in 0..self.clients[i].spec.peers.len() {
                let p = self.clients[i].spec.peers[k].clone();
                let st = self.clients[i].peers[k].1;
                match p.role {
                    Role::Keep => match p.channel {
                        Some(n) => self.channel_bind(i, k, n, None),
                        None => self.permit(i, k),
                    },
                    Role::ChanExpire => self.permit(i, k),
                    Role::RebindTarget => {
                        if let Some(n) = st.channel {
                            self.channel_bind(i, k, n, None);
                        }
                    }
                    Role::PermExpire => {}
                }
            }
        }
    }

    // ---- traffic ------------------------------------------------------------------------

    /// A payload: sometimes tiny (0-3 bytes) or large (1200), else 8-700 bytes starting with
    /// client, peer, direction and sequence number, the rest from the seed.
    pub(crate) fn payload(&mut self, i: usize, k: usize, dir: u8, seq: u16) -> Vec<u8> {
        let len = match self.rng.gen_range(0..20) {
            0 => self.rng.gen_range(0..4),
            1 => 1200,
            _ => self.rng.gen_range(8..=700),
        };
        let mut p: Vec<u8> = (0..len).map(|_| self.rng.gen()).collect();
        let head = [
            i as u8,
            k as u8,
            dir,
            0,
            (seq >> 8) as u8,
            seq as u8,
            0xd1,
            0xff,
        ];
        let n = head.len().min(len);
        p[..n].copy_from_slice(&head[..n]);
        p
    }

    /// Client `i` sends to peer `k` the way the model says it can: ChannelData (mostly) when
    /// a channel is live, else a Send indication. `force_channel`: ChannelData on that number
    /// whatever the model says (a channel that has expired, to see it dropped).
    pub(crate) fn plan_to_peer(
        &mut self,
        i: usize,
        k: usize,
        force_channel: Option<u16>,
    ) -> Planned {
        let st = self.clients[i].peers[k].1;
        let spec = self.clients[i].spec.peers[k].clone();
        self.clients[i].peers[k].1.seq_out += 1;
        let data = self.payload(i, k, 0, st.seq_out);
        let channel = force_channel.or(st.channel.filter(|_| self.rng.gen_ratio(3, 4)));
        let mut trailing = false;
        let bytes = match channel {
            Some(n) => {
                let mut b = channel_data(n, &data);
                // Over UDP the padding is optional (RFC 8656 §12.5) and trailing bytes are
                // ignored: the fast path must pass what it does not relay exactly.
                match self.rng.gen_range(0..10) {
                    0 | 1 => b.resize(turnd_proto::wire::padded(b.len()), 0),
                    2 => {
                        b.extend_from_slice(&[0xee; 8]);
                        trailing = true;
                    }
                    _ => {}
                }
                b
            }
            None => {
                let tid = TransactionId(self.rng.gen());
                tc::send_indication(tid, spec.addr, &data)
            }
        };
        let c = &self.clients[i];
        let relayed = c.alive
            && st.permission
            && match channel {
                Some(n) => st.channel == Some(n),
                None => true,
            };
        let expect = relayed.then(|| Arrival {
            phase: self.phase,
            from: self.name(c.relay_for(fam(&spec.addr))),
            bytes: data,
        });
        if relayed && channel.is_some() && !trailing {
            self.channel_relayed += 1;
        }
        Planned {
            from: Ep::Client(i),
            to: c.spec.server,
            bytes,
            dest: Ep::Peer(i, k),
            expect,
        }
    }

    /// Peer `k` of client `i` sends to the client's relayed address of its family.
    pub(crate) fn plan_to_client(&mut self, i: usize, k: usize) -> Planned {
        let st = self.clients[i].peers[k].1;
        let spec = self.clients[i].spec.peers[k].clone();
        self.clients[i].peers[k].1.seq_in += 1;
        let data = self.payload(i, k, 1, st.seq_in);
        if self.live(i, k) && st.channel.is_some() {
            self.channel_relayed += 1;
        }
        let c = &self.clients[i];
        let expect = (c.alive && st.permission).then(|| Arrival {
            phase: self.phase,
            from: self.name(c.spec.server),
            bytes: match st.channel {
                // RFC 8656 §12.7: a bound peer's data goes as ChannelData, unpadded over UDP.
                Some(n) => channel_data(n, &data),
                None => data_indication(spec.addr, &data),
            },
        });
        Planned {
            from: Ep::Peer(i, k),
            to: c.relay_for(fam(&spec.addr)),
            bytes: data,
            dest: Ep::Client(i),
            expect,
        }
    }

    /// Whether the model says client `i` and peer `k` can reach each other.
    pub(crate) fn live(&self, i: usize, k: usize) -> bool {
        self.clients[i].alive && self.clients[i].peers[k].1.permission
    }

    /// Traffic between every client and each of its peers, both ways, in lockstep rounds:
    /// first the client's `extra` sends and one packet each way on every dead path (nothing
    /// may arrive: these rounds end with a quiet wait, so they come first and are few), then
    /// `per_peer` packets each way on every live path. A deleted client's paths are probed
    /// once, in the first traffic after the delete.
    pub(crate) fn traffic(&mut self, per_peer: usize, extra: Vec<Planned>) {
        let mut outs: Vec<Vec<Planned>> = Vec::new();
        let mut ins: Vec<Vec<Planned>> = Vec::new();
        let mut extra: Vec<Option<Planned>> = extra.into_iter().map(Some).collect();
        for i in 0..self.clients.len() {
            let (mut o, mut n) = (Vec::new(), Vec::new());
            for e in &mut extra {
                if e.as_ref().is_some_and(|e| e.from == Ep::Client(i)) {
                    o.push(e.take().unwrap());
                }
            }
            if self.clients[i].alive || !self.clients[i].probed_dead {
                let peers = self.clients[i].peers.len();
                let (live, dead): (Vec<usize>, Vec<usize>) =
                    (0..peers).partition(|&k| self.live(i, k));
                for k in dead {
                    o.push(self.plan_to_peer(i, k, None));
                    n.push(self.plan_to_client(i, k));
                }
                for _ in 0..per_peer {
                    for &k in &live {
                        o.push(self.plan_to_peer(i, k, None));
                        n.push(self.plan_to_client(i, k));
                    }
                }
                self.clients[i].probed_dead = !self.clients[i].alive;
            }
            outs.push(o);
            ins.push(n);
        }
        assert!(
            extra.iter().all(Option::is_none),
            "extra sends come from clients"
        );
        let rounds = outs.iter().chain(&ins).map(Vec::len).max().unwrap_or(0);
        let mut outs: Vec<_> = outs.into_iter().map(Vec::into_iter).collect();
        let mut ins: Vec<_> = ins.into_iter().map(Vec::into_iter).collect();
        for _ in 0..rounds {
            let round: Vec<Planned> = outs
                .iter_mut()
                .zip(ins.iter_mut())
                .flat_map(|(o, n)| o.next().into_iter().chain(n.next()))
                .collect();
            self.round(round);
        }
    }

    /// Sends a round, reads what must arrive, and (after a quiet wait when something must not
    /// arrive) whatever else came.
    pub(crate) fn round(&mut self, round: Vec<Planned>) {
        let mut dests: Vec<Ep> = round.iter().map(|p| p.dest).collect();
        dests.sort_by_key(|e| format!("{e:?}"));
        dests.dedup();
        assert_eq!(
            dests.len(),
            round.len(),
            "two packets for one socket in a round"
        );
        for p in &round {
            self.sock(p.from)
                .send_to(&p.bytes, p.to)
                .unwrap_or_else(|e| panic!("send {:?} -> {}: {e}", p.from, p.to));
        }
        let deadline = Instant::now() + self.arrival_within;
        let mut quiet = false;
        for p in round {
            let key = self.ep_name(p.dest);
            match p.expect {
                Some(e) => {
                    self.read_one(p.dest, deadline);
                    self.expected.arrivals.entry(key).or_default().push(e);
                }
                None => quiet = true,
            }
        }
        if quiet {
            std::thread::sleep(QUIET);
        }
        self.drain();
    }

    /// Reads from `ep` until a relayed datagram arrives (answers to requests, retransmitted
    /// ones, are not relayed data and are skipped) or `deadline`; records it.
    pub(crate) fn read_one(&mut self, ep: Ep, deadline: Instant) {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if !readable(&[self.sock(ep).as_raw_fd()], left).contains(&0) {
                return;
            }
            if self.recv(ep) {
                return;
            }
        }
    }

    /// Records everything already queued at any socket.
    pub(crate) fn drain(&mut self) {
        let eps = self.all_eps();
        loop {
            let fds: Vec<_> = eps.iter().map(|e| self.sock(*e).as_raw_fd()).collect();
            let ready = readable(&fds, Duration::ZERO);
            if ready.is_empty() {
                return;
            }
            for r in ready {
                self.recv(eps[r]);
            }
        }
    }

    /// Receives one datagram at `ep` (it is readable); records it unless it is a STUN
    /// response. Returns whether it recorded something.
    pub(crate) fn recv(&mut self, ep: Ep) -> bool {
        let mut buf = vec![0u8; 65_536];
        let (n, from) = self
            .sock(ep)
            .recv_from(&mut buf)
            .expect("a readable socket");
        buf.truncate(n);
        let bytes = match ep {
            Ep::Client(_) => match canonical_stun(&buf) {
                Some(c) => {
                    let m = Message::parse(&buf).unwrap();
                    if matches!(m.class(), Class::Success | Class::Error) {
                        return false;
                    }
                    c
                }
                None => buf,
            },
            Ep::Peer(..) => buf,
        };
        let a = Arrival {
            phase: self.phase,
            from: self.name(from),
            bytes,
        };
        let key = self.ep_name(ep);
        self.rec.arrivals.entry(key).or_default().push(a);
        true
    }

    // ---- the scripts ----------------------------------------------------------------------

    /// Clients' ChannelData that must be dropped whatever the fast path does: an unbound
    /// channel number, and a length field claiming more than the datagram holds.
    pub(crate) fn malformed(&mut self, i: usize) -> Vec<Planned> {
        let c = &self.clients[i];
        let mut bogus_len = channel_data(c.spec.peers[0].channel.unwrap_or(0x4000), &[1, 2, 3, 4]);
        bogus_len[3] = 40;
        [channel_data(0x4ffe, b"no such channel"), bogus_len]
            .into_iter()
            .map(|bytes| Planned {
                from: Ep::Client(i),
                to: c.spec.server,
                bytes,
                dest: Ep::Peer(i, 0),
                expect: None,
            })
            .collect()
    }

    /// The full timeline, in protocol seconds (a permission lasts 300, a channel 600 and its
    /// cool-down 300 more). Set-up ends by 60, so what is not refreshed after it has expired
    /// by 360 (permissions) and 660 (channels), and cooled down by 960. Refreshes come every
    /// 120 s, well inside every lifetime.
    pub(crate) fn full(&mut self) {
        self.phase(0);
        self.setup();
        self.before(SETUP_DONE_BY, "set-up");

        self.phase(60);
        let extra = (1..3).flat_map(|i| self.malformed(i)).collect();
        self.traffic(2, extra);

        self.phase(EARLY_DELETE);
        for i in 0..self.clients.len() {
            if self.clients[i].spec.delete_early {
                self.delete(i);
            }
        }
        self.traffic(1, Vec::new());

        self.phase(180);
        self.refresh();
        self.phase(200);
        self.traffic(2, Vec::new());
        // The first permission left alone may expire at 300.
        self.before(295, "traffic while every permission lives");

        self.phase(300);
        self.refresh();
        self.phase(FIRST_EXPIRY);
        for c in &mut self.clients {
            for (k, p) in c.spec.peers.iter().enumerate() {
                if p.role == Role::PermExpire {
                    c.peers[k].1.permission = false;
                }
            }
        }
        self.traffic(2, Vec::new());
        if !TIME_SCALE_READY && !time_scale_honoured(&self.rec) {
            // turnd's clock runs at real speed: from here on the model expects what will not
            // come (a rebind refused, a channel still bound), and each such packet would be
            // waited for in full. The sends stay the same, so the runs remain comparable.
            self.arrival_within = QUIET;
        }

        self.phase(420);
        self.refresh();
        self.phase(480);
        self.traffic(1, Vec::new());
        // The first channel left alone may expire at 600.
        self.before(595, "traffic while every channel lives");

        self.phase(540);
        self.refresh();
        self.phase(660);
        self.refresh();
        self.phase(CHANNELS_EXPIRED);
        let mut extra = Vec::new();
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            for (k, p) in c.peers.iter_mut().enumerate() {
                if matches!(c.spec.peers[k].role, Role::ChanExpire | Role::PermExpire) {
                    p.1.channel = None;
                }
            }
            let roles: Vec<Role> = c.spec.peers.iter().map(|p| p.role).collect();
            let (Some(a), Some(b)) = (
                roles.iter().position(|r| *r == Role::ChanExpire),
                roles.iter().position(|r| *r == Role::RebindTarget),
            ) else {
                continue;
            };
            if !c.alive {
                continue;
            }
            let n = c.spec.peers[a].channel.unwrap();
            // RFC 8656 §12.2: while the expired binding cools down, neither its number nor its
            // peer may be bound to anything else (400).
            self.channel_bind(i, b, n, Some(400));
            self.channel_bind(i, a, n + 0x10, Some(400));
            // ChannelData on the expired number: dropped, though the peer's permission lives.
            extra.push(self.plan_to_peer(i, a, Some(n)));
        }
        self.traffic(1, extra);

        self.phase(780);
        self.refresh();
        self.phase(900);
        self.refresh();
        self.phase(REBIND);
        for i in 0..self.clients.len() {
            let b = self.clients[i]
                .spec
                .peers
                .iter()
                .position(|p| p.role == Role::RebindTarget);
            if let (Some(b), true) = (b, self.clients[i].alive) {
                let n = self.clients[i].spec.peers[b].channel.unwrap();
                self.channel_bind(i, b, n, None);
            }
        }
        self.traffic(2, Vec::new());

        self.phase(FINAL);
        self.end_all();
    }

    /// Every allocation still live is deleted; then one more round each way, all dropped.
    pub(crate) fn end_all(&mut self) {
        for i in 0..self.clients.len() {
            if self.clients[i].alive {
                self.delete(i);
            }
        }
        self.traffic(1, Vec::new());
    }

    /// The short timeline of the metrics test: no expiry, an early delete, then every
    /// allocation deleted (its usage record written).
    pub(crate) fn short(&mut self) {
        self.phase(0);
        self.setup();
        self.phase(10);
        let extra = (1..3).flat_map(|i| self.malformed(i)).collect();
        self.traffic(3, extra);
        self.phase(20);
        for i in 0..self.clients.len() {
            if self.clients[i].spec.delete_early {
                self.delete(i);
            }
        }
        self.traffic(1, Vec::new());
        self.phase(30);
        self.end_all();
    }
}

/// Indices of the fds readable within `timeout`.
pub(crate) fn readable(fds: &[i32], timeout: Duration) -> Vec<usize> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: pfds is a valid array of pollfd for its length.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
    pfds.iter()
        .enumerate()
        .filter(|(_, p)| p.revents & libc::POLLIN != 0)
        .map(|(i, _)| i)
        .collect()
}

pub(crate) fn rest(user: &str) -> (String, String) {
    let c = turnd_proto::auth::mint_rest_credential(
        SECRET.as_bytes(),
        user,
        turnd::clock::unix_now(),
        3600,
    );
    (c.username, c.password)
}
