//! One relay worker: a thread with its own epoll loop (mio), its own SO_REUSEPORT listener
//! sockets (UDP, TCP, TLS), its client connections, the relay sockets it bound, and its own
//! `proto::Server` with its shard of the allocations. Nothing on the packet path is shared with
//! other workers, so nothing is locked.
//!
//! The loop: wait for readiness or the server's next deadline (at most 250 ms); drain ready sockets in batches
//! (bounded per round, so one flooded socket cannot starve the rest); after each batch, carry
//! out the server's commands; then fire the timers that are due (`timers.rs`: the server's
//! expiries, the stats snapshot, the connection sweep, the suppressed-response log). Poll
//! tokens are named in `token.rs`; stream connections are handled in `conns.rs`.

use super::batch::{self, Outgoing, RecvBatch, BATCH};
use super::limits::ConnLimits;
use super::socket;
use super::stream::Conn;
use super::timers::{Timer, Timers};
use super::token::Source;
use crate::clock;
use crate::reload::PolicySlot;
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Waker};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use turnd_proto::stats::Stats;
use turnd_proto::{ClientId, Command, FromClient, RelayId, Server, Transport};

/// Batches read from one socket before others get a turn.
pub(super) const BATCHES_PER_TURN: usize = 8;
/// The longest the loop sleeps, so shutdown, stats publication and the other chores of the
/// timer table stay prompt (only the server's deadlines wake it, see `Timer::wakes`).
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
    /// Admin API requests, answered between batches (`admin.rs`).
    pub admin: Arc<super::admin::AdminSlot>,
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
    pub(super) admin: Arc<super::admin::AdminSlot>,
    batch: RecvBatch,
    /// Sockets (and connections) not drained in their last turn, read again before sleeping.
    pub(super) backlog: Vec<Source>,
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
    /// When each periodic chore is next due.
    timers: Timers,
    /// Suppressed error responses already logged.
    suppressed_logged: u64,
    /// Logs the server's events and writes usage records (`crate::events`).
    events: crate::events::EventSink,
    /// The kernel fast path's routes for this worker's allocations (`crate::fast_path`).
    pub(super) routes: crate::fast_path::WorkerRoutes,
}

impl Worker {
    /// Registers the listeners; returns the worker and its handle.
    pub fn new(
        server: Server,
        listeners: Vec<std::net::UdpSocket>,
        mut streams: StreamSetup,
        shutdown: Arc<AtomicBool>,
        events: crate::events::EventSink,
        routes: crate::fast_path::WorkerRoutes,
    ) -> io::Result<(Worker, WorkerHandle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), Source::Wake.token())?);
        let mut udp = Vec::with_capacity(listeners.len());
        let mut listener_ips = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            listener_ips.push(l.local_addr()?.ip());
            let mut l = UdpSocket::from_std(l);
            poll.registry()
                .register(&mut l, Source::UdpListener(i).token(), Interest::READABLE)?;
            udp.push(l);
        }
        let mut tcp = Vec::new();
        for (i, (l, transport)) in streams.listeners.drain(..).enumerate() {
            let mut l = TcpListener::from_std(l);
            poll.registry().register(
                &mut l,
                Source::StreamListener(i).token(),
                Interest::READABLE,
            )?;
            tcp.push((l, transport));
        }
        let stats = Arc::new(Mutex::new(server.stats().clone()));
        let policy = Arc::new(PolicySlot::default());
        let admin = Arc::new(super::admin::AdminSlot::default());
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
            admin: admin.clone(),
            batch: RecvBatch::new(),
            backlog: Vec::new(),
            turn: 0,
            buffer_bytes: 0,
            dirty_conns: Vec::with_capacity(64),
            outgoing: Vec::with_capacity(BATCH),
            replies: Vec::with_capacity(BATCH),
            timers: Timers::default(),
            suppressed_logged: 0,
            events,
            routes,
        };
        Ok((
            worker,
            WorkerHandle {
                waker,
                stats,
                policy,
                admin,
            },
        ))
    }

    /// Runs until shutdown is signalled.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut ready: Vec<Source> = Vec::with_capacity(1024);
        let start = Instant::now();
        self.timers.set(Timer::Publish, Some(start + PUBLISH_EVERY));
        self.timers
            .set(Timer::SweepConns, Some(start + CONN_SWEEP_EVERY));
        // Due at once: the first suppressed response is logged without waiting.
        self.timers.set(Timer::LogSuppressed, Some(start));
        while !self.shutdown.load(Ordering::Relaxed) {
            // Read before sleeping and again after the turn: packets, a reload and a sweep
            // (closing connections ends allocations) all move the server's deadline.
            self.timers.set(Timer::Server, self.server.poll_timeout());
            let timeout = if self.backlog.is_empty() {
                let until_timer = self
                    .timers
                    .next_wake()
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
            ready.extend(events.iter().filter_map(|e| Source::of(e.token())));
            for source in ready.drain(..) {
                match source {
                    Source::Wake => {}
                    Source::StreamListener(i) => self.accept_all(i),
                    Source::Conn(i) => self.conn_ready(i),
                    Source::UdpListener(_) | Source::Relay(_) => self.drain_socket(source),
                }
            }
            let now = clock::now();
            if let Some(settings) = self.policy.take() {
                self.streams.idle_timeout = settings.idle_timeout;
                self.streams.handshake_timeout = settings.handshake_timeout;
                self.reload_policy(settings.credentials, settings.policy, now);
            }
            self.serve_admin(now);
            self.timers.set(Timer::Server, self.server.poll_timeout());
            for timer in Timer::ALL {
                if self.timers.fire(timer, now.mono) {
                    self.fire(timer, now);
                }
            }
        }
        // What is still live ends here, counted (and reported) as drained when the drain
        // timed out, as shut down otherwise.
        let reason = if self.server.ledger().is_draining() {
            turnd_proto::EndReason::Drained
        } else {
            turnd_proto::EndReason::Shutdown
        };
        self.events.closing();
        self.server.end_all(reason, clock::now());
        self.run_commands();
        self.events.finish();
        self.publish();
        if self.timers.fire(Timer::LogSuppressed, Instant::now()) {
            self.log_suppressed();
        }
    }

    /// Does what `timer` is for, and arms it again for when it is next due.
    fn fire(&mut self, timer: Timer, now: turnd_proto::Now) {
        let next = match timer {
            Timer::Server => {
                self.server.handle_timeout(now);
                self.run_commands();
                self.server.poll_timeout()
            }
            Timer::Publish => {
                self.events.tick(now.mono);
                self.publish();
                Some(Instant::now() + PUBLISH_EVERY)
            }
            Timer::SweepConns => {
                self.sweep_conns(now);
                Some(Instant::now() + CONN_SWEEP_EVERY)
            }
            // Suppressed unauthenticated answers (per-source rate limit, amplification cap)
            // are counted per packet, and logged here: looked for as often as stats are
            // published, written at most once per interval.
            Timer::LogSuppressed => {
                let logged = self.log_suppressed();
                let after = if logged {
                    SUPPRESSED_LOG_EVERY
                } else {
                    PUBLISH_EVERY
                };
                Some(Instant::now() + after)
            }
        };
        self.timers.set(timer, next);
    }

    fn publish(&mut self) {
        self.server.refresh_gauges();
        if let Ok(mut s) = self.stats.lock() {
            s.clone_from(self.server.stats());
        }
    }

    /// Logs the error responses suppressed since the last line; false when there were none.
    fn log_suppressed(&mut self) -> bool {
        let suppressed = self.server.stats().error_responses_suppressed;
        if suppressed <= self.suppressed_logged {
            return false;
        }
        tracing::warn!(
            count = suppressed - self.suppressed_logged,
            "unauthenticated error responses suppressed (per-source rate limit or amplification cap)"
        );
        self.suppressed_logged = suppressed;
        true
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
        // Each one is logged as its allocation_ended event (reason revoked or
        // credential_removed), with what it relayed: one line per allocation.
        for (client, _) in &ended {
            let why = io::Error::new(io::ErrorKind::PermissionDenied, "credential revoked");
            self.close_client_conn(client, now, why);
        }
    }

    /// Reads a ready UDP socket (listener or relay) for up to [`BATCHES_PER_TURN`] batches.
    fn drain_socket(&mut self, source: Source) {
        for _ in 0..BATCHES_PER_TURN {
            let fd = match source {
                Source::UdpListener(i) => match self.listeners.get(i) {
                    Some(l) => l.as_raw_fd(),
                    None => return,
                },
                Source::Relay(r) => match self.relays.get(r.0 as usize) {
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
            match source {
                Source::UdpListener(i) => self.relay_client_batch(i, n, now),
                Source::Relay(r) => self.relay_peer_batch(r, n, now),
                _ => {}
            }
            self.run_commands();
            if n < BATCH {
                return;
            }
        }
        self.backlog.push(source);
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
                    // A full queue drops peer data rather than pausing the client (conns.rs).
                    if c.client == out.client && c.queued() < super::conns::PEER_DATA_QUEUE_MAX {
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
                            if let Ok(addr) = s.local_addr() {
                                self.routes.relay_released(addr);
                            }
                            let _ = self.poll.registry().deregister(&mut s);
                        }
                    }
                }
                Command::InstallRoute(route) => self.routes.install(&route, clock::now()),
                Command::RemoveRoute(route) => self.routes.remove(&route),
            }
        }
        self.send_replies();
        // After each batch's commands, off the per-packet path: what happened is logged.
        self.events.drain(&mut self.server, &mut self.routes);
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
        self.poll
            .registry()
            .register(&mut s, Source::Relay(relay).token(), Interest::READABLE)?;
        let i = relay.0 as usize;
        if self.relays.len() <= i {
            self.relays.resize_with(i + 1, || None);
        }
        self.relays[i] = Some(s);
        Ok(())
    }
}
