//! The load generator: paced or flat-out traffic from many clients through the server under
//! test to one peer socket, counted on the way out and the way back, with the server's CPU time
//! read at the edges of a steady window.
//!
//! It runs on its own core and must outrun the servers it measures, so it batches everything:
//! sendmmsg per client socket (a client that falls behind its schedule sends its backlog in one
//! call), recvmmsg on the peer and on clients. In the saturation runs nothing reads what the
//! server relayed: the receiving socket's buffer is small and the kernel's drop counter on it
//! (SO_MEMINFO) says how many arrived, so the generator's only cost per packet is sending it.

use crate::sys;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use turnd::relay::batch::{send_each, Outgoing, RecvBatch, BATCH};

/// Bytes of application data in every relayed packet.
pub const PAYLOAD: usize = 100;
/// Packets one client sends in one call at most.
const BURST: usize = 64;

/// A client's socket to the server.
pub enum Sock {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

/// One client: its socket and the message it sends (ChannelData, a Send indication or a
/// Binding request), with room for a send timestamp in the payload's first eight bytes.
pub struct Client {
    pub sock: Sock,
    frame: Vec<u8>,
    /// Where the send timestamp goes, for messages with a payload.
    stamp_at: Option<usize>,
    attempted: u64,
    /// TCP: the unwritten tail of the last write, sent before anything new.
    pending: Vec<u8>,
    /// TCP: received bytes not yet cut into frames.
    rx: Vec<u8>,
}

impl Client {
    /// A client that sends `frame`; a timestamp goes at `stamp_at` when round trips are timed.
    pub fn new(sock: Sock, frame: Vec<u8>, stamp_at: Option<usize>) -> Client {
        Client {
            sock,
            frame,
            stamp_at,
            attempted: 0,
            pending: Vec::new(),
            rx: Vec::new(),
        }
    }

    fn fd(&self) -> i32 {
        match &self.sock {
            Sock::Udp(s) => s.as_raw_fd(),
            Sock::Tcp(s) => s.as_raw_fd(),
        }
    }
}

/// What happens at the peer socket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AtPeer {
    /// Read and send each datagram back to the relayed address it came from.
    Echo,
    /// Read and count.
    Read,
    /// Not read: counted by the kernel's drop counter (saturation runs).
    Count,
}

/// What happens at the client sockets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AtClients {
    /// Read, count, and time round trips from the stamps.
    Read,
    /// Not read: counted by the kernel's drop counter.
    Count,
    /// Nothing comes back.
    Nothing,
}

/// One measured run.
pub struct Load {
    /// Packets per second per client; `f64::INFINITY` sends flat out.
    pub rate_per_client: f64,
    pub warmup: Duration,
    pub window: Duration,
    pub at_peer: AtPeer,
    pub at_clients: AtClients,
    pub stamp: bool,
    /// Sleep this long after every round instead of spinning (None: spin). The veth group
    /// counts the whole machine's CPU, where a spinning generator would hide work that runs
    /// on its core (an XDP program on a veth runs in the sender's softirq).
    pub nap: Option<Duration>,
}

/// What a run measured over its window.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub window: Duration,
    /// Packets the clients sent (the kernel took them).
    pub sent: u64,
    pub at_peer: u64,
    pub at_clients: u64,
    /// The server's CPU time over the window.
    pub cpu_ns: u64,
    /// The whole machine's busy CPU time over the window, all cores (the veth group).
    pub busy_ns: u64,
    /// Round-trip times in nanoseconds.
    pub rtt_ns: Vec<u64>,
    /// The generator could not keep to its schedule (it, not the server, was the limit).
    pub generator_behind: bool,
}

impl Outcome {
    /// Packets the server relayed in the window (both directions).
    pub fn relayed(&self) -> u64 {
        self.at_peer + self.at_clients
    }

    /// The share of sent packets that did not arrive, given how many did.
    pub fn loss(&self, arrived: u64) -> f64 {
        1.0 - arrived as f64 / self.sent.max(1) as f64
    }

    pub fn per_second(&self, n: u64) -> f64 {
        n as f64 / self.window.as_secs_f64()
    }
}

/// The clients and the peer socket they all send to.
pub struct Fleet {
    pub clients: Vec<Client>,
    pub peer: UdpSocket,
    batch: RecvBatch,
    scratch: Vec<u8>,
    echo: Vec<Outgoing>,
}

impl Fleet {
    pub fn new(clients: Vec<Client>, peer: UdpSocket) -> Fleet {
        Fleet {
            clients,
            peer,
            batch: RecvBatch::new(),
            scratch: Vec::with_capacity(BURST * 1500),
            echo: Vec::with_capacity(BATCH),
        }
    }

    /// Runs `load` against the server with process id `pid` (0: no server, nothing to read).
    pub fn run(&mut self, load: &Load, pid: u32) -> Outcome {
        // Counted sockets keep almost nothing, so nearly every arrival is a drop the kernel
        // counts; read ones get room for bursts.
        let buffer = |counted: bool| if counted { 1 } else { 8 << 20 };
        sys::set_recv_buffer(self.peer.as_raw_fd(), buffer(load.at_peer == AtPeer::Count));
        for c in &mut self.clients {
            c.attempted = 0;
            sys::set_recv_buffer(c.fd(), buffer(load.at_clients == AtClients::Count));
        }
        // Leftovers of an earlier run (another server's) must not count in this one.
        while self.read_peer(false) > 0 {}
        let base = Instant::now();
        let window_start = base + load.warmup;
        let end = window_start + load.window;
        let mut out = Outcome::default();
        let mut in_window = false;
        let (mut cpu0, mut busy0, mut peer_drops0, mut client_drops0) = (0, 0, 0, 0);
        let mut behind = 0u32;
        let mut rounds = 0u32;
        loop {
            let now = Instant::now();
            if !in_window && now >= window_start {
                in_window = true;
                out = Outcome::default();
                self.drain_counted(load);
                peer_drops0 = sys::socket_drops(self.peer.as_raw_fd());
                client_drops0 = self.client_drops();
                cpu0 = sys::cpu_ns(pid);
                busy0 = sys::machine_busy_ns();
            }
            if now >= end {
                break;
            }
            let elapsed = now.duration_since(base);
            for i in 0..self.clients.len() {
                let due = if load.rate_per_client.is_finite() {
                    (elapsed.as_secs_f64() * load.rate_per_client) as u64
                } else {
                    u64::MAX
                };
                let c = &self.clients[i];
                let k = due.saturating_sub(c.attempted).min(BURST as u64) as usize;
                if k == 0 {
                    continue;
                }
                if load.rate_per_client.is_finite() && due - c.attempted > 4 * BURST as u64 {
                    behind += 1;
                }
                let nanos = elapsed.as_nanos() as u64;
                let sent = self.send(i, k, load.stamp.then_some(nanos));
                self.clients[i].attempted += k as u64;
                out.sent += sent as u64;
            }
            match load.at_peer {
                AtPeer::Echo => out.at_peer += self.read_peer(true),
                AtPeer::Read => out.at_peer += self.read_peer(false),
                AtPeer::Count => {}
            }
            if load.at_clients == AtClients::Read {
                out.at_clients += self.read_clients(base, &mut out.rtt_ns);
            }
            rounds += 1;
            if let Some(nap) = load.nap {
                std::thread::sleep(nap);
            }
        }
        out.cpu_ns = sys::cpu_ns(pid).saturating_sub(cpu0);
        out.busy_ns = sys::machine_busy_ns().saturating_sub(busy0);
        out.window = Instant::now().duration_since(window_start);
        // What the kernel counted for us: drops, plus what is still queued.
        std::thread::sleep(Duration::from_millis(20));
        if load.at_peer == AtPeer::Count {
            out.at_peer = sys::socket_drops(self.peer.as_raw_fd()) - peer_drops0;
            out.at_peer += self.read_peer(false);
        }
        if load.at_clients == AtClients::Count {
            out.at_clients = self.client_drops() - client_drops0;
            out.at_clients += self.read_clients(base, &mut Vec::new());
        }
        out.generator_behind = behind > rounds / 100 + 10;
        out
    }

    /// Reads and forgets whatever the counted sockets hold, so a window counts only its own.
    fn drain_counted(&mut self, load: &Load) {
        if load.at_peer == AtPeer::Count {
            self.read_peer(false);
        }
        if load.at_clients == AtClients::Count {
            self.read_clients(Instant::now(), &mut Vec::new());
        }
    }

    fn client_drops(&self) -> u64 {
        self.clients.iter().map(|c| sys::socket_drops(c.fd())).sum()
    }

    /// Sends `k` packets from client `i`, stamped with `stamp` (ns since the run began).
    fn send(&mut self, i: usize, k: usize, stamp: Option<u64>) -> usize {
        let c = &mut self.clients[i];
        let len = c.frame.len();
        self.scratch.clear();
        for _ in 0..k {
            self.scratch.extend_from_slice(&c.frame);
            if let (Some(t), Some(stamp_at)) = (stamp, c.stamp_at) {
                let at = self.scratch.len() - len + stamp_at;
                self.scratch[at..at + 8].copy_from_slice(&t.to_be_bytes());
            }
        }
        match &mut c.sock {
            Sock::Udp(s) => send_each(s.as_raw_fd(), self.scratch.chunks(len).map(|f| (f, None))),
            Sock::Tcp(s) => {
                if !c.pending.is_empty() {
                    match s.write(&c.pending) {
                        Ok(n) => {
                            c.pending.drain(..n);
                        }
                        Err(_) => return 0,
                    }
                    if !c.pending.is_empty() {
                        return 0;
                    }
                }
                match s.write(&self.scratch) {
                    Ok(n) => {
                        c.pending.extend_from_slice(&self.scratch[n..]);
                        k
                    }
                    Err(_) => 0,
                }
            }
        }
    }

    /// Reads the peer socket dry (bounded); echoes what it read when `echo`. Returns the count.
    fn read_peer(&mut self, echo: bool) -> u64 {
        let fd = self.peer.as_raw_fd();
        let mut count = 0;
        for _ in 0..16 {
            let n = self.batch.recv(fd).unwrap_or(0);
            count += n as u64;
            if echo && n > 0 {
                self.echo.clear();
                for i in 0..n {
                    let (_, range, from, _) = self.batch.slot(i);
                    self.echo.push(Outgoing {
                        slot: i,
                        range,
                        to: from,
                        from: None,
                    });
                }
                self.batch.send(fd, &self.echo);
            }
            if n < BATCH {
                break;
            }
        }
        count
    }

    /// Reads every client socket (bounded); records a round trip for each stamped packet.
    fn read_clients(&mut self, base: Instant, rtt_ns: &mut Vec<u64>) -> u64 {
        let mut count = 0;
        for c in &mut self.clients {
            match &mut c.sock {
                Sock::Udp(s) => {
                    for _ in 0..4 {
                        let n = self.batch.recv(s.as_raw_fd()).unwrap_or(0);
                        count += n as u64;
                        for i in 0..n {
                            let (slot, range, _, _) = self.batch.slot(i);
                            if range.len() >= PAYLOAD {
                                let at = range.end - PAYLOAD;
                                record_rtt(&slot[at..at + 8], base, rtt_ns);
                            }
                        }
                        if n < BATCH {
                            break;
                        }
                    }
                }
                Sock::Tcp(s) => {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        c.rx.extend_from_slice(&buf[..n]);
                    }
                    let mut at = 0;
                    while c.rx.len() - at >= 4 {
                        let len = usize::from(u16::from_be_bytes([c.rx[at + 2], c.rx[at + 3]]));
                        let whole = (4 + len + 3) & !3;
                        if c.rx.len() - at < whole {
                            break;
                        }
                        record_rtt(&c.rx[at + 4..at + 12], base, rtt_ns);
                        count += 1;
                        at += whole;
                    }
                    c.rx.drain(..at);
                }
            }
        }
        count
    }
}

fn record_rtt(stamp: &[u8], base: Instant, rtt_ns: &mut Vec<u64>) {
    let sent = u64::from_be_bytes(stamp.try_into().unwrap_or([0; 8]));
    let now = base.elapsed().as_nanos() as u64;
    if sent > 0 && sent <= now && rtt_ns.len() < 4_000_000 {
        rtt_ns.push(now - sent);
    }
}

/// A peer socket on loopback with the given receive buffer.
pub fn peer_socket(addr: SocketAddr, recv_buffer: usize) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    sys::set_recv_buffer(s.as_raw_fd(), recv_buffer);
    Ok(s)
}
