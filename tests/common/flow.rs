//! A legitimate relayed flow to run beside an attack: a TURN client (UDP or TCP) allocates,
//! binds a channel to an echo peer on loopback, and sends 100 ChannelData packets a second,
//! each carrying its sequence number; the peer echoes them back through the relay. When the
//! flow stops it reports loss and round-trip times, so an attack test can assert that the
//! bystander was not hurt (loss < 1 %, p99 < 50 ms).
//!
//! The server must allow the loopback peer (`allow_peer = ["127.0.0.1/32"]`).

use super::{relayed_address, StreamTurnClient, UdpTurnClient};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use turnd_proto::client::Attr;
use turnd_proto::wire::{channel_data, Method};

/// The channel the flow binds.
const CHANNEL: u16 = 0x4001;
/// Packets per second.
const RATE: u64 = 100;
/// How long the flow waits for the last echoes after it stops sending.
const GRACE: Duration = Duration::from_millis(500);

/// What a flow measured.
#[derive(Debug, Clone)]
pub struct FlowReport {
    pub sent: u64,
    pub received: u64,
    /// Round-trip times of the packets that came back, sorted.
    pub rtts: Vec<Duration>,
}

impl FlowReport {
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        1.0 - self.received as f64 / self.sent as f64
    }

    pub fn p99(&self) -> Duration {
        if self.rtts.is_empty() {
            return Duration::MAX;
        }
        self.rtts[(self.rtts.len() * 99 / 100).min(self.rtts.len() - 1)]
    }

    /// Panics unless loss stayed under 1 % and p99 under 50 ms.
    pub fn assert_unharmed(&self, what: &str) {
        assert!(
            self.sent >= 10,
            "{what}: the flow sent only {} packets",
            self.sent
        );
        assert!(
            self.loss() < 0.01 && self.p99() < Duration::from_millis(50),
            "{what}: the legitimate flow was hurt: sent {}, received {} (loss {:.1} %), p99 {:?}",
            self.sent,
            self.received,
            self.loss() * 100.0,
            self.p99()
        );
    }
}

/// Per sequence number: when it was sent, and its round trip once it came back.
type Arrivals = Arc<Mutex<Vec<(Instant, Option<Duration>)>>>;
/// Sends one frame to the server.
type SendFrame = Box<dyn FnMut(&[u8]) + Send>;
/// The next frame from the server, or None after a short wait.
type RecvFrame = Box<dyn FnMut() -> Option<Vec<u8>> + Send>;

/// A running flow; [`Flow::stop`] ends it and returns the report.
pub struct Flow {
    stop: Arc<AtomicBool>,
    sender: JoinHandle<u64>,
    receiver: JoinHandle<()>,
    echo: JoinHandle<()>,
    /// Stops the echo peer, only once the receiver is done: packets still in flight when the
    /// flow stops must be echoed, or a loaded machine shows loss that is not there.
    echo_stop: Arc<AtomicBool>,
    arrivals: Arrivals,
}

/// The transport of a flow's client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowTransport {
    Udp,
    Tcp,
}

/// An echo peer on loopback: sends every datagram back to where it came from until `stop`.
fn echo_peer(stop: Arc<AtomicBool>) -> (SocketAddr, JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    });
    (addr, handle)
}

/// A ChannelData frame carrying sequence number `seq`, padded to 100 bytes.
fn frame(seq: u64) -> Vec<u8> {
    let mut payload = vec![0u8; 100];
    payload[..8].copy_from_slice(&seq.to_be_bytes());
    let mut f = vec![0u8; channel_data::HEADER_LEN + payload.len()];
    channel_data::write_header(&mut f, channel_data::HEADER_LEN, CHANNEL, payload.len());
    f[channel_data::HEADER_LEN..].copy_from_slice(&payload);
    f
}

/// The sequence number of an echoed ChannelData frame.
fn seq_of(frame: &[u8]) -> Option<u64> {
    let cd = channel_data::parse(frame)?;
    (cd.channel == CHANNEL && cd.data.len() >= 8)
        .then(|| u64::from_be_bytes(cd.data[..8].try_into().unwrap()))
}

impl Flow {
    /// Starts a flow through the turnd at `server` (its UDP/TCP listen address) with the
    /// credential `username`/`password` (e.g. from [`super::rest`]).
    pub fn start(
        server: SocketAddr,
        transport: FlowTransport,
        username: &str,
        password: &str,
    ) -> Flow {
        let stop = Arc::new(AtomicBool::new(false));
        let echo_stop = Arc::new(AtomicBool::new(false));
        let (peer, echo) = echo_peer(echo_stop.clone());
        let setup = [
            (Method::CREATE_PERMISSION, vec![Attr::Peer(peer)]),
            (
                Method::CHANNEL_BIND,
                vec![Attr::Peer(peer), Attr::Channel(CHANNEL)],
            ),
        ];
        let arrivals: Arrivals = Arc::default();
        let started = Instant::now();
        let (send, recv): (SendFrame, RecvFrame) = match transport {
            FlowTransport::Udp => {
                let mut c = UdpTurnClient::new(server, username, password);
                c.allocate();
                for (method, attrs) in &setup {
                    let r = c.request(*method, attrs);
                    assert_eq!(UdpTurnClient::code(&r), None, "flow set-up {method:?}");
                }
                c.sock
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                let (tx, rx) = (c.sock.try_clone().unwrap(), c.sock);
                (
                    Box::new(move |b: &[u8]| {
                        let _ = tx.send_to(b, server);
                    }),
                    Box::new(move || {
                        let mut buf = [0u8; 2048];
                        rx.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
                    }),
                )
            }
            FlowTransport::Tcp => {
                let mut c = StreamTurnClient::new(super::tcp(server), username, password);
                let resp = c.request(
                    Method::ALLOCATE,
                    &[turnd_proto::client::Attr::RequestedTransport(17)],
                );
                relayed_address(&resp);
                for (method, attrs) in &setup {
                    let r = c.request(*method, attrs);
                    assert_eq!(UdpTurnClient::code(&r), None, "flow set-up {method:?}");
                }
                c.stream
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                let mut tx: TcpStream = c.stream.try_clone().unwrap();
                let mut frames = turnd_proto::wire::framing::FrameBuffer::new(0);
                let mut rx = c.stream;
                (
                    Box::new(move |b: &[u8]| {
                        let _ = tx.write_all(b);
                    }),
                    Box::new(move || loop {
                        if let Ok(Some(f)) = frames.next_frame() {
                            return Some(f.to_vec());
                        }
                        let mut buf = [0u8; 4096];
                        match rx.read(&mut buf) {
                            Ok(n) if n > 0 => frames.push(&buf[..n]).ok()?,
                            _ => return None,
                        }
                    }),
                )
            }
        };
        let sender = {
            let (stop, arrivals, mut send) = (stop.clone(), arrivals.clone(), send);
            std::thread::spawn(move || {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let due = started + Duration::from_micros(seq * 1_000_000 / RATE);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    arrivals.lock().unwrap().push((Instant::now(), None));
                    send(&frame(seq));
                    seq += 1;
                }
                seq
            })
        };
        let receiver = {
            let (stop, arrivals, mut recv) = (stop.clone(), arrivals.clone(), recv);
            std::thread::spawn(move || {
                let mut stopped_at = None;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        let at = *stopped_at.get_or_insert_with(Instant::now);
                        if at.elapsed() > GRACE {
                            return;
                        }
                    }
                    let Some(f) = recv() else { continue };
                    let Some(seq) = seq_of(&f) else { continue };
                    if let Some((sent, rtt)) = arrivals.lock().unwrap().get_mut(seq as usize) {
                        rtt.get_or_insert(sent.elapsed());
                    }
                }
            })
        };
        Flow {
            stop,
            sender,
            receiver,
            echo,
            echo_stop,
            arrivals,
        }
    }

    /// Stops sending, waits for the last echoes and reports.
    pub fn stop(self) -> FlowReport {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.sender.join().unwrap();
        self.receiver.join().unwrap();
        self.echo_stop.store(true, Ordering::Relaxed);
        self.echo.join().unwrap();
        let arrivals = self.arrivals.lock().unwrap();
        let mut rtts: Vec<Duration> = arrivals.iter().filter_map(|(_, rtt)| *rtt).collect();
        rtts.sort();
        FlowReport {
            sent,
            received: rtts.len() as u64,
            rtts,
        }
    }
}
