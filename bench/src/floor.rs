//! The floor: the least a userspace relay can do with turnd's socket pattern, and no protocol.
//!
//! One thread per worker, each with its own SO_REUSEPORT UDP and TCP listener (the same
//! helpers turnd binds with) and the same batched I/O (`turnd::relay::batch`): recvmmsg on the
//! listener, one relay socket per client, sendmmsg back to clients. It knows nothing of STUN or
//! TURN: the first datagram from a new client address creates its relay socket; every
//! datagram after drops its first four bytes and goes to the one `--peer`; whatever the peer
//! sends to a relay socket goes back to its client behind a fixed four-byte header. A datagram
//! whose first byte is below 0x40 is answered as a Binding request (the header turned round and
//! an XOR-MAPPED-ADDRESS), the floor for STUN. Over TCP the only work beyond that is cutting the
//! stream at the four-byte length headers.
//!
//! It authenticates nothing, checks nothing and never times anything out: it exists to be
//! measured against, never to be run for anyone.

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use turnd::relay::batch::{send_each, Outgoing, RecvBatch, BATCH, HEADROOM};
use turnd::relay::socket::{bind_listener, bind_stream_listener};

const UDP_LISTENER: Token = Token(0);
const TCP_LISTENER: Token = Token(1);
const CONN_BASE: usize = 1 << 20;
const RELAY_BASE: usize = 1 << 24;
/// Batches read from one socket before others get a turn (as turnd's worker does).
const BATCHES_PER_TURN: usize = 8;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// Where the floor listens and forwards.
pub struct FloorConfig {
    pub listen: SocketAddr,
    pub peer: SocketAddr,
    pub relay_ip: IpAddr,
    pub workers: usize,
}

/// Runs the floor's workers until the process is killed.
pub fn run(config: FloorConfig) -> io::Result<()> {
    let mut threads = Vec::new();
    for _ in 0..config.workers.max(1) {
        let mut worker = Worker::new(&config)?;
        threads.push(std::thread::spawn(move || worker.run()));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Who gets what arrives on a relay socket.
enum Back {
    Udp(SocketAddr),
    Tcp(usize),
}

struct Relay {
    sock: UdpSocket,
    back: Back,
}

struct Conn {
    stream: TcpStream,
    relay: usize,
    inbuf: Vec<u8>,
    have: usize,
    outbuf: Vec<u8>,
    wants_write: bool,
}

/// A fast hash for client addresses; the floor owes nothing to hostile input.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
}

struct Worker {
    poll: Poll,
    udp: UdpSocket,
    tcp: TcpListener,
    peer: SocketAddr,
    relay_ip: IpAddr,
    by_client: HashMap<SocketAddr, usize, BuildHasherDefault<FxHasher>>,
    relays: Vec<Relay>,
    conns: Vec<Conn>,
    batch: RecvBatch,
    out: Vec<Outgoing>,
    replies: Vec<Outgoing>,
    backlog: Vec<Token>,
}

impl Worker {
    fn new(config: &FloorConfig) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let mut udp = UdpSocket::from_std(bind_listener(config.listen, true)?);
        let mut tcp = TcpListener::from_std(bind_stream_listener(config.listen, true)?);
        poll.registry()
            .register(&mut udp, UDP_LISTENER, Interest::READABLE)?;
        poll.registry()
            .register(&mut tcp, TCP_LISTENER, Interest::READABLE)?;
        Ok(Worker {
            poll,
            udp,
            tcp,
            peer: config.peer,
            relay_ip: config.relay_ip,
            by_client: HashMap::default(),
            relays: Vec::new(),
            conns: Vec::new(),
            batch: RecvBatch::new(),
            out: Vec::with_capacity(BATCH),
            replies: Vec::with_capacity(BATCH),
            backlog: Vec::new(),
        })
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut ready = Vec::with_capacity(1024);
        loop {
            let timeout = (!self.backlog.is_empty()).then_some(std::time::Duration::ZERO);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return;
                }
            }
            ready.clear();
            ready.append(&mut self.backlog);
            ready.extend(events.iter().map(|e| e.token()));
            for &token in &ready {
                match token {
                    UDP_LISTENER => self.drain(token),
                    TCP_LISTENER => self.accept(),
                    Token(t) if t >= RELAY_BASE => self.drain(token),
                    Token(t) => self.conn_ready(t - CONN_BASE),
                }
            }
        }
    }

    fn new_relay(&mut self, back: Back) -> io::Result<usize> {
        let mut sock = UdpSocket::bind(SocketAddr::new(self.relay_ip, 0))?;
        let idx = self.relays.len();
        self.poll
            .registry()
            .register(&mut sock, Token(RELAY_BASE + idx), Interest::READABLE)?;
        self.relays.push(Relay { sock, back });
        Ok(idx)
    }

    fn drain(&mut self, token: Token) {
        for _ in 0..BATCHES_PER_TURN {
            let fd = match token {
                UDP_LISTENER => self.udp.as_raw_fd(),
                Token(t) => self.relays[t - RELAY_BASE].sock.as_raw_fd(),
            };
            let n = self.batch.recv(fd).unwrap_or(0);
            if token == UDP_LISTENER {
                self.client_batch(n);
            } else {
                self.peer_batch(token.0 - RELAY_BASE, n);
            }
            if n < BATCH {
                return;
            }
        }
        self.backlog.push(token);
    }

    /// A batch from the UDP listener: Binding requests answered, everything else forwarded
    /// through the sender's relay socket, runs for one relay socket in one sendmmsg.
    fn client_batch(&mut self, n: usize) {
        let mut run: Option<usize> = None;
        for i in 0..n {
            let (slot, range, from, _) = self.batch.slot(i);
            if range.len() < 4 {
                continue;
            }
            let s = range.start;
            if slot[s] < 0x40 {
                if range.len() >= 20 {
                    let len = binding_response(&mut slot[s..], from);
                    self.replies.push(Outgoing {
                        slot: i,
                        range: s..s + len,
                        to: from,
                        from: None,
                    });
                }
                continue;
            }
            let relay = match self.by_client.get(&from) {
                Some(&r) => r,
                None => match self.new_relay(Back::Udp(from)) {
                    Ok(r) => {
                        self.by_client.insert(from, r);
                        r
                    }
                    Err(_) => continue,
                },
            };
            if run.is_some_and(|r| r != relay) {
                self.flush_to_peer(run.take());
            }
            run = Some(relay);
            self.out.push(Outgoing {
                slot: i,
                range: s + 4..range.end,
                to: self.peer,
                from: None,
            });
        }
        self.flush_to_peer(run);
        if !self.replies.is_empty() {
            self.batch.send(self.udp.as_raw_fd(), &self.replies);
            self.replies.clear();
        }
    }

    fn flush_to_peer(&mut self, relay: Option<usize>) {
        if let Some(r) = relay {
            let fd = self.relays[r].sock.as_raw_fd();
            self.batch.send(fd, &self.out);
        }
        self.out.clear();
    }

    /// A batch from the peer on relay socket `relay`: back to its client behind a header.
    fn peer_batch(&mut self, relay: usize, n: usize) {
        for i in 0..n {
            let (slot, range, _, _) = self.batch.slot(i);
            let len = range.len() as u16;
            slot[HEADROOM - 4..HEADROOM].copy_from_slice(&[
                0x40,
                0x00,
                (len >> 8) as u8,
                len as u8,
            ]);
            match self.relays[relay].back {
                Back::Udp(client) => self.out.push(Outgoing {
                    slot: i,
                    range: HEADROOM - 4..range.end,
                    to: client,
                    from: None,
                }),
                Back::Tcp(c) => self.conns[c]
                    .outbuf
                    .extend_from_slice(&slot[HEADROOM - 4..range.end]),
            }
        }
        match self.relays[relay].back {
            Back::Udp(_) => {
                self.batch.send(self.udp.as_raw_fd(), &self.out);
                self.out.clear();
            }
            Back::Tcp(c) => self.flush_conn(c),
        }
    }

    fn accept(&mut self) {
        while let Ok((mut stream, _)) = self.tcp.accept() {
            let _ = stream.set_nodelay(true);
            let c = self.conns.len();
            let Ok(relay) = self.new_relay(Back::Tcp(c)) else {
                continue;
            };
            if self
                .poll
                .registry()
                .register(&mut stream, Token(CONN_BASE + c), Interest::READABLE)
                .is_err()
            {
                continue;
            }
            self.conns.push(Conn {
                stream,
                relay,
                inbuf: vec![0; 1 << 16],
                have: 0,
                outbuf: Vec::with_capacity(1 << 16),
                wants_write: false,
            });
        }
    }

    /// A TCP client is readable (or writable again): read what is there, cut it at the
    /// length headers, send the frames to the peer in one sendmmsg.
    fn conn_ready(&mut self, c: usize) {
        self.flush_conn(c);
        let conn = &mut self.conns[c];
        loop {
            match conn.stream.read(&mut conn.inbuf[conn.have..]) {
                Ok(0) => return,
                Ok(n) => conn.have += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return,
            }
            let mut frames: [&[u8]; 64] = [&[]; 64];
            let (mut count, mut at) = (0, 0);
            let relay_fd = self.relays[conn.relay].sock.as_raw_fd();
            while conn.have - at >= 4 {
                let len = usize::from(u16::from_be_bytes([conn.inbuf[at + 2], conn.inbuf[at + 3]]));
                let whole = (4 + len + 3) & !3;
                if conn.have - at < whole {
                    break;
                }
                frames[count] = &conn.inbuf[at + 4..at + 4 + len];
                count += 1;
                at += whole;
                if count == frames.len() {
                    send_each(relay_fd, frames.iter().map(|f| (*f, Some(self.peer))));
                    count = 0;
                }
            }
            send_each(
                relay_fd,
                frames[..count].iter().map(|f| (*f, Some(self.peer))),
            );
            conn.inbuf.copy_within(at..conn.have, 0);
            conn.have -= at;
        }
    }

    fn flush_conn(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        let mut written = 0;
        while written < conn.outbuf.len() {
            match conn.stream.write(&conn.outbuf[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(_) => break,
            }
        }
        conn.outbuf.drain(..written);
        let wants_write = !conn.outbuf.is_empty();
        if wants_write != conn.wants_write {
            conn.wants_write = wants_write;
            let interest = if wants_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let _ =
                self.poll
                    .registry()
                    .reregister(&mut conn.stream, Token(CONN_BASE + c), interest);
        }
    }
}

/// Turns the Binding request at the start of `msg` into its success response in place:
/// the same transaction, XOR-MAPPED-ADDRESS `from` (RFC 8489 §14.2). Returns its length.
fn binding_response(msg: &mut [u8], from: SocketAddr) -> usize {
    msg[0..4].copy_from_slice(&[0x01, 0x01, 0x00, 0x00]);
    let port = from.port() ^ 0x2112;
    let mut len = 20;
    msg[20..24].copy_from_slice(&[0x00, 0x20, 0x00, 0x00]);
    msg[25] = if from.is_ipv4() { 0x01 } else { 0x02 };
    msg[24] = 0;
    msg[26..28].copy_from_slice(&port.to_be_bytes());
    match from.ip() {
        IpAddr::V4(ip) => {
            let o = ip.octets();
            for k in 0..4 {
                msg[28 + k] = o[k] ^ MAGIC_COOKIE[k];
            }
            msg[22..24].copy_from_slice(&8u16.to_be_bytes());
            len += 12;
        }
        IpAddr::V6(ip) => {
            let o = ip.octets();
            for k in 0..16 {
                let x = if k < 4 {
                    MAGIC_COOKIE[k]
                } else {
                    msg[8 + k - 4]
                };
                msg[28 + k] = o[k] ^ x;
            }
            msg[22..24].copy_from_slice(&20u16.to_be_bytes());
            len += 24;
        }
    }
    msg[2..4].copy_from_slice(&((len - 20) as u16).to_be_bytes());
    len
}
