//! One relay worker: a thread with its own epoll loop (mio), its own SO_REUSEPORT listener
//! sockets (UDP, TCP, TLS), its client connections, the relay sockets it bound, and its own
//! `proto::Server` with its shard of the allocations. Nothing on the packet path is shared with
//! other workers, so nothing is locked.
//!
//! The loop: wait for readiness or the server's next timer; drain ready sockets in batches
//! (bounded per round, so one flooded socket cannot starve the rest); after each batch, carry
//! out the server's commands; sweep connection timeouts and publish a stats snapshot a few
//! times a second. Stream connections are handled in `conns.rs`.

use super::batch::{self, Outgoing, RecvBatch, BATCH};
use super::limits::ConnLimits;
use super::socket;
use super::stream::Conn;
use crate::clock;
use crate::reload::PolicySlot;
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use turnd_proto::stats::Stats;
use turnd_proto::{ClientId, Command, FromClient, RelayId, Server, Transport};

/// Token of the waker that interrupts `poll` for shutdown.
const WAKE: Token = Token(usize::MAX);
/// TCP/TLS listeners use tokens from here: `STREAM_LISTENER_BASE + index`.
pub(super) const STREAM_LISTENER_BASE: usize = 1 << 18;
/// Client connections: `CONN_BASE + index`.
pub(super) const CONN_BASE: usize = 1 << 19;
/// Relay sockets: `RELAY_BASE + RelayId`.
const RELAY_BASE: usize = 1 << 21;
/// Batches read from one socket before others get a turn.
pub(super) const BATCHES_PER_TURN: usize = 8;
/// The longest the loop sleeps, so shutdown and stats publication stay prompt.
const MAX_SLEEP: Duration = Duration::from_millis(250);
/// How often the stats snapshot is published.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// How often connection timeouts are checked.
pub(super) const CONN_SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The most often suppressed error responses are logged.
const SUPPRESSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the rest of turnd sees of a worker.
#[derive(Clone)]
pub struct WorkerHandle {
    pub waker: Arc<Waker>,
    /// The latest counters of this worker, copied out by the loop.
    pub stats: Arc<Mutex<Stats>>,
    /// Credentials and peer policy from a configuration reload, picked up between batches.
    pub policy: Arc<PolicySlot>,
}

/// TCP and TLS: the listeners this worker accepts on, and the rules for connections.
pub struct StreamSetup {
    pub listeners: Vec<(std::net::TcpListener, Transport)>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub limits: Arc<ConnLimits>,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
}

/// A worker ready to run on its own thread.
pub struct Worker {
    pub(super) server: Server,
    pub(super) poll: Poll,
    listeners: Vec<UdpSocket>,
    /// The address each UDP listener is bound to; a wildcard one answers each client from the
    /// address it sent to (pktinfo), any other from its own address.
    listener_ips: Vec<IpAddr>,
    pub(super) relays: Vec<Option<UdpSocket>>,
    pub(super) stream_listeners: Vec<(TcpListener, Transport)>,
    pub(super) conns: Vec<Option<Conn>>,
    pub(super) free_conns: Vec<usize>,
    pub(super) streams: StreamSetup,
    shutdown: Arc<AtomicBool>,
    stats: Arc<Mutex<Stats>>,
    policy: Arc<PolicySlot>,
    batch: RecvBatch,
    /// Sockets (and connections) not drained in their last turn, read again before sleeping.
    pub(super) backlog: Vec<Token>,
    /// Event-loop turns so far: a connection is read at most once per turn.
    pub(super) turn: u64,
    /// Bytes this worker's connection buffers held at the last sweep.
    pub(super) buffer_bytes: usize,
    /// Connections with answers queued by the current batch of commands.
    pub(super) dirty_conns: Vec<usize>,
    /// Datagrams of the current batch waiting to go out through one socket (sendmmsg).
    outgoing: Vec<Outgoing>,
    /// STUN responses to UDP clients, sent together once the commands of a batch have run:
    /// one sendmmsg instead of a sendto each.
    replies: Vec<(ClientId, Vec<u8>)>,
    /// Suppressed error responses already logged, and when.
    suppressed_logged: u64,
    suppressed_log_at: Instant,
}

impl Worker {
    /// Registers the listeners; returns the worker and its handle.
    pub fn new(
        server: Server,
        listeners: Vec<std::net::UdpSocket>,
        mut streams: StreamSetup,
        shutdown: Arc<AtomicBool>,
    ) -> io::Result<(Worker, WorkerHandle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let mut udp = Vec::with_capacity(listeners.len());
        let mut listener_ips = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            listener_ips.push(l.local_addr()?.ip());
            let mut l = UdpSocket::from_std(l);
            poll.registry()
                .register(&mut l, Token(i), Interest::READABLE)?;
            udp.push(l);
        }
        let mut tcp = Vec::new();
        for (i, (l, transport)) in streams.listeners.drain(..).enumerate() {
            let mut l = TcpListener::from_std(l);
            poll.registry().register(
                &mut l,
                Token(STREAM_LISTENER_BASE + i),
                Interest::READABLE,
            )?;
            tcp.push((l, transport));
        }
        let stats = Arc::new(Mutex::new(server.stats().clone()));
        let policy = Arc::new(PolicySlot::default());
        let worker = Worker {
            server,
            poll,
            listeners: udp,
            listener_ips,
            relays: Vec::new(),
            stream_listeners: tcp,
            conns: Vec::new(),
            free_conns: Vec::new(),
            streams,
            shutdown,
            stats: stats.clone(),
            policy: policy.clone(),
            batch: RecvBatch::new(),
            backlog: Vec::new(),
            turn: 0,
            buffer_bytes: 0,
            dirty_conns: Vec::with_capacity(64),
            outgoing: Vec::with_capacity(BATCH),
            replies: Vec::with_capacity(BATCH),
            suppressed_logged: 0,
            suppressed_log_at: Instant::now()
                .checked_sub(SUPPRESSED_LOG_EVERY)
                .unwrap_or_else(Instant::now),
        };
        Ok((
            worker,
            WorkerHandle {
                waker,
                stats,
                policy,
            },
        ))
    }

    /// Runs until shutdown is signalled.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut last_publish = Instant::now();
        let mut last_sweep = Instant::now();
        let mut ready: Vec<Token> = Vec::with_capacity(1024);
        while !self.shutdown.load(Ordering::Relaxed) {
            let timeout = if self.backlog.is_empty() {
                let until_timer = self
                    .server
                    .poll_timeout()
                    .map_or(MAX_SLEEP, |t| t.saturating_duration_since(Instant::now()));
                until_timer.min(MAX_SLEEP)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "worker poll failed");
                    break;
                }
            }
            self.turn += 1;
            ready.clear();
            ready.append(&mut self.backlog);
            ready.extend(events.iter().map(|e| e.token()).filter(|t| *t != WAKE));
            for token in ready.drain(..) {
                match token.0 {
                    t if (STREAM_LISTENER_BASE..CONN_BASE).contains(&t) => {
                        self.accept_all(t - STREAM_LISTENER_BASE)
                    }
                    t if (CONN_BASE..RELAY_BASE).contains(&t) => self.conn_ready(t - CONN_BASE),
                    _ => self.drain_socket(token),
                }
            }
            let now = clock::now();
            if let Some((credentials, policy)) = self.policy.take() {
                self.reload_policy(credentials, policy, now);
            }
            if self.server.poll_timeout().is_some_and(|t| t <= now.mono) {
                self.server.handle_timeout(now);
                self.run_commands();
            }
            if last_sweep.elapsed() >= CONN_SWEEP_EVERY {
                self.sweep_conns(now);
                last_sweep = Instant::now();
            }
            if last_publish.elapsed() >= PUBLISH_EVERY {
                self.publish();
                last_publish = Instant::now();
            }
        }
        self.publish();
    }

    fn publish(&mut self) {
        self.server.refresh_gauges();
        if let Ok(mut s) = self.stats.lock() {
            s.clone_from(self.server.stats());
        }
        // Suppressed unauthenticated answers (per-source rate limit, amplification cap) are
        // counted per packet; they are logged here, at most once per interval.
        let suppressed = self.server.stats().error_responses_suppressed;
        if suppressed > self.suppressed_logged
            && self.suppressed_log_at.elapsed() >= SUPPRESSED_LOG_EVERY
        {
            tracing::warn!(
                count = suppressed - self.suppressed_logged,
                "unauthenticated error responses suppressed (per-source rate limit or amplification cap)"
            );
            self.suppressed_logged = suppressed;
            self.suppressed_log_at = Instant::now();
        }
    }

    /// A reload: allocations the new credentials still authorise stay with their permissions
    /// and channels; the others end now (the server releases their relay sockets), and a
    /// stream client's connection closes with its allocation.
    fn reload_policy(
        &mut self,
        credentials: turnd_proto::auth::Credentials,
        policy: turnd_proto::policy::PeerPolicy,
        now: turnd_proto::Now,
    ) {
        let ended = self.server.update_policy(credentials, policy, now);
        self.run_commands();
        for (client, reason) in &ended {
            tracing::info!(client = %client.remote, transport = client.transport.label(), reason = reason.label(), "SIGHUP: allocation ended; its credential is no longer accepted");
            if client.transport.is_stream() {
                let idx = client.local as usize;
                if self
                    .conns
                    .get(idx)
                    .and_then(Option::as_ref)
                    .is_some_and(|c| c.client == *client)
                {
                    let why = io::Error::new(io::ErrorKind::PermissionDenied, "credential revoked");
                    self.close_conn(idx, now, super::stream::Close::Io(why));
                }
            }
        }
    }

    /// Reads a ready UDP socket (listener or relay) for up to [`BATCHES_PER_TURN`] batches.
    fn drain_socket(&mut self, token: Token) {
        for _ in 0..BATCHES_PER_TURN {
            let fd = match token.0 {
                i if i < self.listeners.len() => self.listeners[i].as_raw_fd(),
                t if t >= RELAY_BASE => match self.relays.get(t - RELAY_BASE) {
                    Some(Some(s)) => s.as_raw_fd(),
                    _ => return,
                },
                _ => return,
            };
            let n = match self.batch.recv(fd) {
                Ok(n) => n,
                // ICMP errors (a peer's port unreachable) surface here: nothing to do.
                Err(_) => return,
            };
            let now = clock::now();
            if token.0 < self.listeners.len() {
                self.relay_client_batch(token.0, n, now);
            } else {
                self.relay_peer_batch(RelayId((token.0 - RELAY_BASE) as u32), n, now);
            }
            self.run_commands();
            if n < BATCH {
                return;
            }
        }
        self.backlog.push(token);
    }

    /// Datagrams from clients on UDP listener `listener`. Consecutive datagrams bound for the
    /// same relay socket go out in one sendmmsg.
    #[inline]
    fn relay_client_batch(&mut self, listener: usize, n: usize, now: turnd_proto::Now) {
        let mut run: Option<RelayId> = None;
        let bound_ip = self.listener_ips[listener];
        for i in 0..n {
            // The address the client sent to: reported per datagram on a wildcard listener.
            let local_ip = self.batch.local_ip(i).unwrap_or(bound_ip);
            let (slot, range, from, truncated) = self.batch.slot(i);
            if truncated {
                continue;
            }
            let client = ClientId {
                transport: Transport::Udp,
                local: listener as u32,
                remote: from,
                local_ip,
            };
            let start = range.start;
            let FromClient::Forward {
                relay,
                peer,
                payload,
            } = self
                .server
                .handle_client_datagram(now, client, &slot[range])
            else {
                continue;
            };
            if run.is_some_and(|r| r != relay) {
                self.flush_to_relay(run.take());
            }
            run = Some(relay);
            self.outgoing.push(Outgoing {
                slot: i,
                range: start + payload.start..start + payload.end,
                to: peer,
                // Relay sockets are bound to one address.
                from: None,
            });
        }
        self.flush_to_relay(run);
    }

    fn flush_to_relay(&mut self, relay: Option<RelayId>) {
        if let Some(Some(sock)) = relay.and_then(|r| self.relays.get(r.0 as usize)) {
            self.batch.send(sock.as_raw_fd(), &self.outgoing);
        }
        self.outgoing.clear();
    }

    /// Datagrams from peers on relay socket `relay`: one allocation, so one client. Over UDP
    /// they go out in one sendmmsg; over TCP/TLS they are queued on the connection.
    #[inline]
    fn relay_peer_batch(&mut self, relay: RelayId, n: usize, now: turnd_proto::Now) {
        let mut udp_listener = None;
        let mut stream_client = None;
        for i in 0..n {
            let (slot, range, from, truncated) = self.batch.slot(i);
            if truncated {
                continue;
            }
            let Some(out) = self
                .server
                .handle_peer_datagram(now, relay, from, slot, range)
            else {
                continue;
            };
            if out.client.transport.is_stream() {
                if let Some(Some(c)) = self.conns.get_mut(out.client.local as usize) {
                    if c.client == out.client {
                        c.send(&slot[out.range]);
                        stream_client = Some(out.client.local as usize);
                    }
                }
            } else {
                udp_listener = Some(out.client.local as usize);
                let from = self.reply_source(&out.client);
                self.outgoing.push(Outgoing {
                    slot: i,
                    range: out.range,
                    to: out.client.remote,
                    from,
                });
            }
        }
        if let Some(l) = udp_listener.and_then(|l| self.listeners.get(l)) {
            self.batch.send(l.as_raw_fd(), &self.outgoing);
        }
        self.outgoing.clear();
        if let Some(idx) = stream_client {
            self.flush_conn(idx, now);
        }
    }

    /// Carries out the server's commands, in order.
    pub(super) fn run_commands(&mut self) {
        while let Some(cmd) = self.server.poll_command() {
            match cmd {
                Command::SendToClient { client, bytes } if client.transport.is_stream() => {
                    self.send_to_conn(client, &bytes);
                }
                Command::SendToClient { client, bytes } => {
                    self.replies.push((client, bytes));
                }
                Command::BindRelay {
                    relay,
                    addr,
                    dont_fragment,
                } => {
                    let result = self.bind_relay(relay, addr, dont_fragment);
                    if let Err(e) = &result {
                        tracing::debug!(%addr, error = %e, "relay port bind failed");
                    }
                    self.server.handle_relay_bound(relay, result, clock::now());
                }
                Command::ReleaseRelay { relay } => {
                    if let Some(slot) = self.relays.get_mut(relay.0 as usize) {
                        if let Some(mut s) = slot.take() {
                            let _ = self.poll.registry().deregister(&mut s);
                        }
                    }
                }
            }
        }
        self.send_replies();
        self.flush_dirty_conns();
    }

    /// Sends the queued STUN responses, one sendmmsg run per UDP listener.
    fn send_replies(&mut self) {
        if self.replies.is_empty() {
            return;
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            let mine = self.replies.iter().filter(|r| r.0.local as usize == i);
            batch::send_each_from(
                listener.as_raw_fd(),
                mine.map(|(client, bytes)| {
                    (&bytes[..], Some(client.remote), self.reply_source(client))
                }),
            );
        }
        self.replies.clear();
    }

    /// The address a datagram to this UDP client must leave from: the one it sent to, named
    /// explicitly when its listener is a wildcard (the kernel would pick by route, and a NAT in
    /// front of the client drops a reply from another of the host's addresses); None when the
    /// listener is bound to that one address already.
    #[inline]
    fn reply_source(&self, client: &ClientId) -> Option<IpAddr> {
        let bound = self.listener_ips.get(client.local as usize)?;
        bound.is_unspecified().then_some(client.local_ip)
    }

    fn bind_relay(
        &mut self,
        relay: RelayId,
        addr: SocketAddr,
        dont_fragment: bool,
    ) -> io::Result<()> {
        let std_socket = socket::bind_relay(addr, dont_fragment)?;
        let mut s = UdpSocket::from_std(std_socket);
        self.poll.registry().register(
            &mut s,
            Token(RELAY_BASE + relay.0 as usize),
            Interest::READABLE,
        )?;
        let i = relay.0 as usize;
        if self.relays.len() <= i {
            self.relays.resize_with(i + 1, || None);
        }
        self.relays[i] = Some(s);
        Ok(())
    }
}
