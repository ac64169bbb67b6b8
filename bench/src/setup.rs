//! Getting clients ready before the load: allocations, permissions and channels, made the way a
//! client makes them (REST credential, 401 challenge, MESSAGE-INTEGRITY), many in flight at once
//! over UDP so that thousands of allocations take seconds and their rate can be measured.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use turnd_proto::client::{
    self, Attr, ClientAuth, Exchange, Failure, Timing, Transaction, TransactionIds,
};
use turnd_proto::wire::{Message, Method};

/// The channel every benchmark client binds to the peer.
pub const CHANNEL: u16 = 0x4000;
/// Requests in flight at once while setting up over UDP.
pub const WINDOW: usize = 256;

/// The credentials every client uses: one REST credential from the shared secret.
pub fn credentials(secret: &str) -> ClientAuth {
    let cred = turnd_proto::auth::mint_rest_credential(
        secret.as_bytes(),
        "bench",
        turnd::clock::unix_now(),
        86_400,
    );
    ClientAuth::new(&cred.username, &cred.password)
}

/// `n` UDP client sockets on address `local` (127.0.0.1, or the client's address in the veth
/// group's namespace), connected to `server`, non-blocking.
pub fn udp_sockets(local: IpAddr, server: SocketAddr, n: usize) -> io::Result<Vec<UdpSocket>> {
    (0..n)
        .map(|_| {
            let s = UdpSocket::bind(SocketAddr::new(local, 0))?;
            s.connect(server)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect()
}

/// How long one request may wait for its answer (retransmitted on RFC 8489's schedule).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Transaction ids for one setup step. The benchmark talks to loopback only, so the seed
/// need not be secret; it differs between runs.
fn ids() -> TransactionIds {
    TransactionIds::new(turnd::clock::unix_now() ^ u64::from(std::process::id()))
}

/// A final response that is an error fails the step.
fn refused(method: Method, resp: &[u8], over: &str) -> io::Result<()> {
    let msg = Message::parse(resp).map_err(|e| io::Error::other(format!("{e:?}")))?;
    match client::error_code(&msg) {
        Some(code) => Err(io::Error::other(format!("{method:?}{over}: error {code}"))),
        None => Ok(()),
    }
}

/// Sends one request per socket (`method`, `attrs`, each socket with its own `auths` entry),
/// at most [`WINDOW`] outstanding, each a client [`Transaction`] (challenges answered,
/// retransmitted over UDP). Every request must succeed.
pub fn transact_all(
    socks: &[UdpSocket],
    auths: &mut [ClientAuth],
    method: Method,
    attrs: &[Attr],
) -> io::Result<()> {
    let mut ids = ids();
    let timing = Timing::unreliable().with_timeout(ANSWER_WITHIN);
    let mut next = 0;
    let mut active: Vec<(usize, Transaction)> = Vec::with_capacity(WINDOW);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut buf = [0u8; 1500];
    while next < socks.len() || !active.is_empty() {
        let now = Instant::now();
        if now > deadline {
            return Err(io::Error::other(format!(
                "{method:?}: no answers for 120 s"
            )));
        }
        while active.len() < WINDOW && next < socks.len() {
            let auth = Some(&auths[next]);
            let t = Transaction::new(method, attrs, auth, false, timing, &mut ids, now);
            active.push((next, t));
            next += 1;
        }
        for k in (0..active.len()).rev() {
            let (c, t) = &mut active[k];
            t.handle_timeout(now);
            if let Some(req) = t.poll_transmit(now) {
                let _ = socks[*c].send(req);
            }
            if let Some(outcome) = t.poll_outcome() {
                let resp =
                    outcome.map_err(|_| io::Error::other(format!("{method:?}: no answer")))?;
                refused(method, &resp, "")?;
                active.swap_remove(k);
            }
        }
        let mut fds: Vec<libc::pollfd> = active
            .iter()
            .map(|(c, _)| libc::pollfd {
                fd: socks[*c].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: poll reads and writes exactly `fds.len()` live pollfd entries.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
        let now = Instant::now();
        for (fd, (c, t)) in fds.iter().zip(active.iter_mut()) {
            if fd.revents == 0 {
                continue;
            }
            while let Ok(n) = socks[*c].recv(&mut buf) {
                t.handle_input(&buf[..n], now, &mut auths[*c], &mut ids);
            }
        }
    }
    Ok(())
}

/// Allocates a UDP relay for every socket; returns how long that took.
pub fn allocate_all(socks: &[UdpSocket], auths: &mut [ClientAuth]) -> io::Result<Duration> {
    let started = Instant::now();
    transact_all(
        socks,
        auths,
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17)],
    )?;
    Ok(started.elapsed())
}

/// Opens the way to `peer` for every socket: a channel when `channel`, else a permission
/// (Send indications then need no more).
pub fn open_path(
    socks: &[UdpSocket],
    auths: &mut [ClientAuth],
    peer: SocketAddr,
    channel: bool,
) -> io::Result<()> {
    if channel {
        transact_all(
            socks,
            auths,
            Method::CHANNEL_BIND,
            &[Attr::Channel(CHANNEL), Attr::Peer(peer)],
        )
    } else {
        transact_all(socks, auths, Method::CREATE_PERMISSION, &[Attr::Peer(peer)])
    }
}

/// A TURN-over-TCP client with a channel to `peer`, set up one request at a time; the stream
/// is left non-blocking for the load.
pub fn tcp_client(
    server: SocketAddr,
    auth: &ClientAuth,
    peer: SocketAddr,
) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(server)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut auth = auth.clone();
    let mut ids = ids();
    let steps: [(Method, Vec<Attr>); 2] = [
        (Method::ALLOCATE, vec![Attr::RequestedTransport(17)]),
        (
            Method::CHANNEL_BIND,
            vec![Attr::Channel(CHANNEL), Attr::Peer(peer)],
        ),
    ];
    for (method, attrs) in steps {
        let timing = Timing::reliable().with_timeout(ANSWER_WITHIN);
        let t = Transaction::new(
            method,
            &attrs,
            Some(&auth),
            false,
            timing,
            &mut ids,
            Instant::now(),
        );
        let resp = t
            .run(&mut StunOverTcp(&mut stream), &mut auth, &mut ids)
            .map_err(|e| match e {
                Failure::TimedOut => io::Error::other(format!("{method:?} over TCP: no answer")),
                Failure::Io(e) => e,
            })?;
        refused(method, &resp, " over TCP")?;
    }
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// A blocking TCP stream that carries only STUN messages during setup (no channel data flows
/// yet), as a transaction's way to the server.
struct StunOverTcp<'a>(&'a mut TcpStream);

impl Exchange for StunOverTcp<'_> {
    type Error = io::Error;
    fn now(&mut self) -> Instant {
        Instant::now()
    }
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }
    /// One whole message, within the stream's read timeout.
    fn recv(&mut self, _until: Instant) -> io::Result<Option<Vec<u8>>> {
        let mut head = [0u8; 20];
        self.0.read_exact(&mut head)?;
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let mut whole = head.to_vec();
        whole.resize(20 + len, 0);
        self.0.read_exact(&mut whole[20..])?;
        Ok(Some(whole))
    }
}
