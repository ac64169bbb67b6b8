//! Getting clients ready before the load: allocations, permissions and channels, made the way a
//! client makes them (REST credential, 401 challenge, MESSAGE-INTEGRITY), many in flight at once
//! over UDP so that thousands of allocations take seconds and their rate can be measured.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use turnd_proto::client::{self, Attr, ClientAuth};
use turnd_proto::wire::{Message, Method, TransactionId};

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

/// `n` UDP client sockets on loopback, connected to `server`, non-blocking.
pub fn udp_sockets(server: SocketAddr, n: usize) -> io::Result<Vec<UdpSocket>> {
    (0..n)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.connect(server)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect()
}

fn tid(counter: &mut u64) -> TransactionId {
    *counter += 1;
    let mut t = [0u8; 12];
    t[4..].copy_from_slice(&counter.to_be_bytes());
    TransactionId(t)
}

struct InFlight {
    client: usize,
    tid: TransactionId,
    sent: Instant,
    tries: u32,
}

/// Sends one request per socket (`method`, `attrs`, each socket with its own `auths` entry),
/// at most [`WINDOW`] outstanding, answering challenges and retransmitting after 500 ms.
/// Every request must succeed.
pub fn transact_all(
    socks: &[UdpSocket],
    auths: &mut [ClientAuth],
    method: Method,
    attrs: &[Attr],
) -> io::Result<()> {
    let mut counter = 0u64;
    let mut next = 0;
    let mut active: Vec<InFlight> = Vec::with_capacity(WINDOW);
    let deadline = Instant::now() + Duration::from_secs(120);
    let send = |f: &InFlight, auths: &[ClientAuth]| {
        let req = client::request(method, f.tid, attrs, Some(&auths[f.client]), false);
        let _ = socks[f.client].send(&req);
    };
    let mut buf = [0u8; 1500];
    while next < socks.len() || !active.is_empty() {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{method:?}: no answers for 120 s"
            )));
        }
        while active.len() < WINDOW && next < socks.len() {
            let f = InFlight {
                client: next,
                tid: tid(&mut counter),
                sent: Instant::now(),
                tries: 0,
            };
            send(&f, auths);
            active.push(f);
            next += 1;
        }
        let mut fds: Vec<libc::pollfd> = active
            .iter()
            .map(|f| libc::pollfd {
                fd: socks[f.client].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: poll reads and writes exactly `fds.len()` live pollfd entries.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
        for k in (0..active.len()).rev() {
            let mut finished = false;
            if fds[k].revents != 0 {
                while let Ok(n) = socks[active[k].client].recv(&mut buf) {
                    let Ok(msg) = Message::parse(&buf[..n]) else {
                        continue;
                    };
                    if msg.transaction_id() != active[k].tid {
                        continue;
                    }
                    let c = active[k].client;
                    if auths[c].retry_after(&msg) && active[k].tries < 4 {
                        active[k].tid = tid(&mut counter);
                        active[k].tries += 1;
                        active[k].sent = Instant::now();
                        send(&active[k], auths);
                    } else if let Some(code) = client::error_code(&msg) {
                        return Err(io::Error::other(format!("{method:?}: error {code}")));
                    } else {
                        finished = true;
                    }
                    break;
                }
            }
            if finished {
                active.swap_remove(k);
            } else if active[k].sent.elapsed() > Duration::from_millis(500) {
                if active[k].tries >= 8 {
                    return Err(io::Error::other(format!("{method:?}: no answer")));
                }
                active[k].tries += 1;
                active[k].sent = Instant::now();
                send(&active[k], auths);
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
    let mut counter = 0;
    let steps: [(Method, Vec<Attr>); 2] = [
        (Method::ALLOCATE, vec![Attr::RequestedTransport(17)]),
        (
            Method::CHANNEL_BIND,
            vec![Attr::Channel(CHANNEL), Attr::Peer(peer)],
        ),
    ];
    for (method, attrs) in steps {
        let mut tries = 0;
        loop {
            let t = tid(&mut counter);
            stream.write_all(&client::request(method, t, &attrs, Some(&auth), false))?;
            let mut head = [0u8; 20];
            stream.read_exact(&mut head)?;
            let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let mut whole = head.to_vec();
            whole.resize(20 + len, 0);
            stream.read_exact(&mut whole[20..])?;
            let msg = Message::parse(&whole).map_err(|e| io::Error::other(format!("{e:?}")))?;
            tries += 1;
            if auth.retry_after(&msg) && tries < 4 {
                continue;
            }
            if let Some(code) = client::error_code(&msg) {
                return Err(io::Error::other(format!(
                    "{method:?} over TCP: error {code}"
                )));
            }
            break;
        }
    }
    stream.set_nonblocking(true)?;
    Ok(stream)
}
