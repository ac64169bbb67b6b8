//! The measurements of issue 9, each run against turnd, coturn and the floor in turn, every
//! server on its own fresh process, pinned to CPU 0, the load generator pinned to CPU 1.

use crate::load::{AtClients, AtPeer, Client, Fleet, Load, Outcome, Sock, PAYLOAD};
use crate::servers::{self, Kind, Programs, Running};
use crate::setup;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use turnd_proto::client;
use turnd_proto::wire::TransactionId;

/// How long and how big: the full run, or the short one CI uses to prove the benchmark works.
pub struct Settings {
    pub short: bool,
    pub warmup: Duration,
    pub window: Duration,
    pub step_window: Duration,
    pub clients: usize,
    pub rate_per_client: f64,
    /// Windows per CPU measurement; the median is reported (the machines are noisy).
    pub repeats: usize,
    pub memory_counts: [usize; 2],
    pub scale_counts: [usize; 3],
    pub programs: Programs,
    pub peer: SocketAddr,
    pub servers: Vec<Kind>,
    /// Measurement groups to run (None: all).
    pub only: Option<Vec<String>>,
}

/// The message kinds a fleet sends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Traffic {
    UdpChannelData,
    UdpSend,
    TcpChannelData,
    Binding,
}

/// The server's CPU for a packet: `cpu_ns` spread over `packets`, in microseconds.
pub fn us_per(o: &Outcome, packets: u64) -> Option<f64> {
    (packets > 0).then(|| o.cpu_ns as f64 / packets as f64 / 1000.0)
}

/// Where the loopback groups' clients are.
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Clients of `traffic` for `server` (UDP ones at address `clients_at`), allocated and pointed
/// at the peer when it speaks TURN. Returns the fleet and how long the allocations took.
pub fn fleet(
    server: &Running,
    traffic: Traffic,
    n: usize,
    clients_at: IpAddr,
    peer: &std::net::UdpSocket,
) -> io::Result<(Fleet, Duration)> {
    let peer_addr = peer.local_addr()?;
    let payload = [0x5Au8; PAYLOAD];
    let channel_data = client::channel_data(setup::CHANNEL, &payload, false);
    let auth = setup::credentials(servers::SECRET);
    let mut took = Duration::ZERO;
    let clients = if traffic == Traffic::TcpChannelData {
        (0..n)
            .map(|_| {
                let sock = if server.kind.is_turn() {
                    setup::tcp_client(server.addr, &auth, peer_addr)?
                } else {
                    let s = std::net::TcpStream::connect(server.addr)?;
                    s.set_nodelay(true)?;
                    s.set_nonblocking(true)?;
                    s
                };
                Ok(Client::new(Sock::Tcp(sock), channel_data.clone(), Some(4)))
            })
            .collect::<io::Result<Vec<_>>>()?
    } else {
        let socks = setup::udp_sockets(clients_at, server.addr, n)?;
        let frame = match traffic {
            Traffic::Binding => {
                let mut f = vec![0u8; 20];
                f[0..2].copy_from_slice(&[0x00, 0x01]);
                f[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
                f[8..20].copy_from_slice(&[0xB5; 12]);
                f
            }
            // The floor knows no protocol: it is sent ChannelData whatever the others get.
            Traffic::UdpSend if server.kind.is_turn() => {
                client::send_indication(TransactionId([0xA5; 12]), peer_addr, &payload)
            }
            _ => channel_data.clone(),
        };
        if server.kind.is_turn() && traffic != Traffic::Binding {
            let mut auths = vec![auth.clone(); n];
            took = setup::allocate_all(&socks, &mut auths)?;
            setup::open_path(&socks, &mut auths, peer_addr, traffic != Traffic::UdpSend)?;
        }
        let stamp_at = (traffic != Traffic::Binding).then(|| frame.len() - PAYLOAD);
        socks
            .into_iter()
            .map(|s| Client::new(Sock::Udp(s), frame.clone(), stamp_at))
            .collect()
    };
    Ok((Fleet::new(clients, peer.try_clone()?), took))
}

impl Settings {
    /// Whether `--only` (if given) names this group.
    pub fn runs(&self, group: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == group))
    }

    pub fn load(&self, rate_per_client: f64, at_peer: AtPeer, at_clients: AtClients) -> Load {
        Load {
            rate_per_client,
            warmup: self.warmup,
            window: self.window,
            at_peer,
            at_clients,
            stamp: at_clients == AtClients::Read,
            nap: None,
        }
    }

    fn start(&self, kind: Kind, workers: usize) -> io::Result<Running> {
        let cpus = if workers == 1 { "0" } else { "0,1" };
        servers::start(kind, workers, cpus, self.peer, &self.programs)
    }

    /// CPU per relayed packet at the fixed load: every client at its rate, the peer echoing,
    /// so each message is relayed twice (client to peer, peer to client).
    pub fn fixed_load(
        &self,
        kind: Kind,
        traffic: Traffic,
        peer: &std::net::UdpSocket,
    ) -> io::Result<Outcome> {
        self.fixed_load_env(kind, traffic, peer, &[])
    }

    /// As [`Settings::fixed_load`], with environment variables for the server.
    pub fn fixed_load_env(
        &self,
        kind: Kind,
        traffic: Traffic,
        peer: &std::net::UdpSocket,
        env: &[(&str, &str)],
    ) -> io::Result<Outcome> {
        let server = servers::start_env(kind, 1, "0", self.peer, &self.programs, env)?;
        let (mut fleet, _) = fleet(&server, traffic, self.clients, LOOPBACK, peer)?;
        let at_peer = if traffic == Traffic::Binding {
            AtPeer::Read
        } else {
            AtPeer::Echo
        };
        let load = self.load(self.rate_per_client, at_peer, AtClients::Read);
        Ok(self.median(&mut fleet, &load, server.pid))
    }

    /// The run with the median CPU per packet out of [`Settings::repeats`] windows.
    fn median(&self, fleet: &mut Fleet, load: &Load, pid: u32) -> Outcome {
        let mut runs: Vec<Outcome> = (0..self.repeats.max(1))
            .map(|_| fleet.run(load, pid))
            .collect();
        let per_packet = |o: &Outcome| o.cpu_ns as f64 / o.relayed().max(1) as f64;
        runs.sort_by(|a, b| per_packet(a).total_cmp(&per_packet(b)));
        runs.swap_remove(runs.len() / 2)
    }

    /// Round-trip times with the clients sending `total_pps` between them.
    pub fn round_trip(
        &self,
        kind: Kind,
        total_pps: f64,
        peer: &std::net::UdpSocket,
    ) -> io::Result<Outcome> {
        let server = self.start(kind, 1)?;
        let (mut fleet, _) = fleet(
            &server,
            Traffic::UdpChannelData,
            self.clients,
            LOOPBACK,
            peer,
        )?;
        Ok(fleet.run(
            &self.load(
                total_pps / self.clients as f64,
                AtPeer::Echo,
                AtClients::Read,
            ),
            server.pid,
        ))
    }

    /// CPU per packet (client to peer only) with `n` allocations sharing the fixed load.
    pub fn at_scale(
        &self,
        kind: Kind,
        n: usize,
        peer: &std::net::UdpSocket,
    ) -> io::Result<Outcome> {
        let server = self.start(kind, 1)?;
        let (mut fleet, _) = fleet(&server, Traffic::UdpChannelData, n, LOOPBACK, peer)?;
        let total = self.rate_per_client * self.clients as f64;
        let load = self.load(total / n as f64, AtPeer::Read, AtClients::Nothing);
        Ok(self.median(&mut fleet, &load, server.pid))
    }

    /// The highest rate relayed (or answered, for Binding) with at most 1% loss (see
    /// [`search`]).
    pub fn saturation(
        &self,
        kind: Kind,
        workers: usize,
        traffic: Traffic,
        peer: &std::net::UdpSocket,
    ) -> io::Result<Saturation> {
        let server = self.start(kind, workers)?;
        let (mut fleet, _) = fleet(&server, traffic, self.clients, LOOPBACK, peer)?;
        let (at_peer, at_clients) = if traffic == Traffic::Binding {
            (AtPeer::Read, AtClients::Count)
        } else {
            (AtPeer::Count, AtClients::Nothing)
        };
        Ok(search(Duration::from_secs(120), |total| {
            let load = self.step_load(total, at_peer, at_clients);
            let o = fleet.run(&load, server.pid);
            let arrived = if traffic == Traffic::Binding {
                o.at_clients
            } else {
                o.at_peer
            };
            (arrived, o)
        }))
    }

    /// One step of a saturation search: `total` packets/s offered over all clients, for the
    /// short step window.
    pub fn step_load(&self, total: f64, at_peer: AtPeer, at_clients: AtClients) -> Load {
        let mut load = self.load(total / self.clients as f64, at_peer, at_clients);
        load.window = self.step_window;
        load.warmup = self.warmup.min(Duration::from_millis(300));
        load
    }

    /// Resident memory per idle allocation at both counts, and the allocation rate, from one
    /// server that grows to the larger count.
    pub fn memory(&self, kind: Kind, peer: &std::net::UdpSocket) -> io::Result<Memory> {
        let server = self.start(kind, 1)?;
        let before = servers::rss(&server);
        let mut fleets = Vec::new();
        let mut memory = Memory::default();
        let mut allocated = 0;
        let mut took = Duration::ZERO;
        for (i, &count) in self.memory_counts.iter().enumerate() {
            let (f, t) = fleet(&server, Traffic::UdpSend, count - allocated, LOOPBACK, peer)?;
            fleets.push(f);
            took += t;
            allocated = count;
            std::thread::sleep(Duration::from_millis(500));
            memory.bytes_per[i] =
                (servers::rss(&server).saturating_sub(before)) as f64 * 1024.0 / count as f64;
        }
        memory.per_second = allocated as f64 / took.as_secs_f64();
        Ok(memory)
    }
}

/// The highest rate that arrives with at most 1% loss: `step(total)` offers `total` packets/s
/// and says how many arrived. The offered rate climbs by 30% a step from 20,000/s until loss
/// passes 1% or the generator falls behind, then is bisected between the last good and the
/// first bad step, to within 5%, in at most 16 steps and about `limit`.
pub fn search(limit: Duration, mut step: impl FnMut(f64) -> (u64, Outcome)) -> Saturation {
    let mut result = Saturation::default();
    let (mut good, mut bad) = (0.0, f64::INFINITY);
    let mut total = 20_000.0;
    let started = Instant::now();
    for _ in 0..16 {
        let (arrived, o) = step(total);
        let rate = o.per_second(arrived);
        if o.loss(arrived) <= 0.01 {
            good = total;
            if rate > result.pps {
                result.pps = rate;
                result.cpu_ns_per = o.cpu_ns as f64 / (rate * o.window.as_secs_f64());
            }
        } else {
            bad = total;
        }
        if o.generator_behind {
            result.generator_limited = true;
            break;
        }
        if bad.is_finite() && (bad - good) / bad < 0.05 {
            break;
        }
        total = if bad.is_finite() {
            (good + bad) / 2.0
        } else {
            total * 1.3
        };
        if started.elapsed() > limit {
            break;
        }
    }
    result
}

#[derive(Debug, Default, Clone)]
pub struct Saturation {
    pub pps: f64,
    pub cpu_ns_per: f64,
    pub generator_limited: bool,
}

#[derive(Debug, Default, Clone)]
pub struct Memory {
    pub bytes_per: [f64; 2],
    pub per_second: f64,
}
