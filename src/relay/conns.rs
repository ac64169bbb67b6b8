//! TCP and TLS client connections of a worker (RFC 8656 §3.1, §12.5): accept within limits,
//! cut the byte stream into frames for the server, queue its answers, and close connections
//! that are idle without an allocation or slow to finish a TLS handshake. An allocation lives
//! exactly as long as its connection.
//!
//! Fairness (issue 20). A connection is one socket among many on its worker, so it gets one
//! share of each event-loop turn, like a UDP socket's batches: at most [`FRAMES_PER_TURN`]
//! frames and [`BYTES_PER_TURN`] bytes. A connection with more waiting goes to the worker's
//! backlog and is served again next turn, after every other ready socket. And a client that
//! does not read its answers is not read either: past [`PAUSE_AT`] queued bytes the connection
//! is paused until its queue drains to [`RESUME_AT`], so the kernel's TCP flow control, not
//! turnd's memory or time, absorbs the flood; if nothing drains for the idle timeout, it is
//! closed. Whatever a client sends, it costs its worker no more than its share.

use super::batch::BATCH;
use super::limits::Shed;
use super::stream::{Close, Conn};
use super::token::Source;
use super::worker::{Worker, BATCHES_PER_TURN, CONN_SWEEP_EVERY};
use crate::clock;
use mio::Interest;
use std::io;
use turnd_proto::{ClientId, FromClient, Now, Transport};

/// Frames one connection hands to the server per turn: as many datagrams as a UDP socket may.
const FRAMES_PER_TURN: usize = BATCHES_PER_TURN * BATCH;
/// Bytes read from one connection per turn (for TLS, bytes of records).
const BYTES_PER_TURN: usize = 64 * 1024;
/// Queued answers past which a connection is no longer read (back-pressure)...
const PAUSE_AT: usize = 64 * 1024;
/// ...until they drain to this.
const RESUME_AT: usize = 16 * 1024;
/// Data from peers is queued for a stream client only while its queue holds less than this;
/// past it, the datagram is dropped, as the network would drop it on a UDP path. Without this
/// a peer sending faster than the client's link drains would keep the queue above
/// [`RESUME_AT`] and so keep the client paused: its own requests and upstream data unread.
pub(super) const PEER_DATA_QUEUE_MAX: usize = RESUME_AT;
/// Connections accepted from one listener per turn; the rest wait for the next turn.
const ACCEPTS_PER_TURN: usize = 64;

impl Worker {
    /// Accepts the pending connections on stream listener `i`, up to [`ACCEPTS_PER_TURN`].
    pub(super) fn accept_all(&mut self, i: usize) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some((listener, transport)) = self.stream_listeners.get(i) else {
                return;
            };
            let transport = *transport;
            let (mut stream, remote) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and friends: leave the rest in the backlog for the next round.
                    tracing::debug!(error = %e, "accept failed");
                    return;
                }
            };
            if let Err(why) = self.streams.limits.try_acquire(remote.ip()) {
                tracing::debug!(%remote, limit = why.label(), "connection refused");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let idx = self.free_conns.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            let client = ClientId {
                transport,
                local: idx as u32,
                remote,
                local_ip: stream
                    .local_addr()
                    .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip()),
            };
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Source::Conn(idx).token(),
                Interest::READABLE,
            ) {
                tracing::debug!(error = %e, "cannot register a connection");
                self.streams.limits.release(remote.ip());
                self.free_conns.push(idx);
                continue;
            }
            let tls = if transport == Transport::Tls {
                self.streams.tls.as_ref()
            } else {
                None
            };
            match Conn::new(stream, client, tls) {
                Ok(c) => self.conns[idx] = Some(c),
                Err(_) => {
                    self.streams.limits.release(remote.ip());
                    self.free_conns.push(idx);
                }
            }
        }
        // More may be waiting: accept them next turn, after the other sockets.
        self.backlog.push(Source::StreamListener(i));
    }

    /// A connection is readable or writable (or waited in the backlog): write what is queued,
    /// then read and hand frames to the server within this turn's budget.
    pub(super) fn conn_ready(&mut self, idx: usize) {
        let now = clock::now();
        // Writing first: what drains may lift the back-pressure.
        self.flush_conn(idx, now);
        let turn = self.turn;
        let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        // Paused: the next WRITABLE event (the client reads) resumes it. Served: an event that
        // arrived while it was read this turn; it is in the backlog if it had more.
        if c.paused || c.served_turn == turn {
            return;
        }
        c.served_turn = turn;
        c.backlogged = false;
        let mut frames = FRAMES_PER_TURN;
        let mut bytes = BYTES_PER_TURN;
        let mut drained = false;
        loop {
            // Frames already read come first, then the socket.
            let handed = self.hand_over_frames(idx, now, &mut frames);
            self.run_commands();
            if let Err(why) = handed {
                // A malformed frame closes this connection only.
                return self.close_conn(idx, now, why);
            }
            self.flush_conn(idx, now);
            let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                return;
            };
            if c.paused {
                return;
            }
            if frames == 0 {
                return self.backlog_conn(idx);
            }
            // No whole frame is left: after a FIN, none will come.
            if c.eof {
                return self.close_conn(idx, now, Close::Eof);
            }
            if drained {
                return;
            }
            if bytes == 0 {
                return self.backlog_conn(idx);
            }
            match c.read_available(&mut bytes) {
                Ok(state) => {
                    c.eof = state.eof;
                    drained = state.drained;
                }
                Err(why) => return self.close_conn(idx, now, why),
            }
        }
    }

    /// Hands the connection's complete frames to the server, at most `budget` of them.
    fn hand_over_frames(&mut self, idx: usize, now: Now, budget: &mut usize) -> Result<(), Close> {
        let mut handed = false;
        while *budget > 0 {
            let Some(conn) = self.conns[idx].as_mut() else {
                break;
            };
            let client = conn.client;
            let Some(frame) = conn.next_frame()? else {
                break;
            };
            *budget -= 1;
            handed = true;
            if let FromClient::Forward {
                relay,
                peer,
                payload,
            } = self.server.handle_client_datagram(now, client, frame)
            {
                if let Some(Some(sock)) = self.relays.get(relay.0 as usize) {
                    let _ = sock.send_to(&frame[payload], peer);
                }
            }
        }
        if handed {
            if let Some(c) = self.conns[idx].as_mut() {
                c.last_frame = now.mono;
            }
        }
        Ok(())
    }

    /// Serves the connection again next turn, after the other ready sockets.
    fn backlog_conn(&mut self, idx: usize) {
        if let Some(Some(c)) = self.conns.get_mut(idx) {
            if !c.backlogged {
                c.backlogged = true;
                self.backlog.push(Source::Conn(idx));
            }
        }
    }

    /// Queues a STUN message for a stream client; [`Self::flush_dirty_conns`] writes it once
    /// the commands of this batch have run, so a burst of answers costs one write, not one each.
    pub(super) fn send_to_conn(&mut self, client: ClientId, bytes: &[u8]) {
        let idx = client.local as usize;
        if let Some(Some(c)) = self.conns.get_mut(idx) {
            if c.client == client {
                c.send(bytes);
                if !c.dirty {
                    c.dirty = true;
                    self.dirty_conns.push(idx);
                }
            }
        }
    }

    /// Writes the answers queued by [`Self::send_to_conn`].
    pub(super) fn flush_dirty_conns(&mut self) {
        if self.dirty_conns.is_empty() {
            return;
        }
        let now = clock::now();
        while let Some(idx) = self.dirty_conns.pop() {
            if let Some(Some(c)) = self.conns.get_mut(idx) {
                c.dirty = false;
            }
            self.flush_conn(idx, now);
        }
    }

    /// Writes what a connection has queued; asks for WRITABLE while bytes remain. Pauses
    /// reading while too much waits, and resumes it (next turn) once the client has read.
    pub(super) fn flush_conn(&mut self, idx: usize, now: Now) {
        let Some(Some(c)) = self.conns.get_mut(idx) else {
            return;
        };
        match c.flush() {
            Ok(pending) => {
                if pending != c.writable {
                    let interest = if pending {
                        Interest::READABLE | Interest::WRITABLE
                    } else {
                        Interest::READABLE
                    };
                    let _ = self.poll.registry().reregister(
                        &mut c.stream,
                        Source::Conn(idx).token(),
                        interest,
                    );
                    c.writable = pending;
                }
                let queued = c.queued();
                if !c.paused && queued > PAUSE_AT {
                    c.paused = true;
                } else if c.paused && queued <= RESUME_AT {
                    // Its READABLE edges went unanswered while paused: read it next turn.
                    // Pushed even if flagged as backlogged: that entry may have been spent
                    // while it was paused, and a second entry is skipped (served_turn).
                    c.paused = false;
                    c.backlogged = true;
                    self.backlog.push(Source::Conn(idx));
                }
            }
            Err(why) => self.close_conn(idx, now, why),
        }
    }

    /// Closes the TCP/TLS connection of `client` whose allocation the core has already ended
    /// (RFC 8656 §3.1: a stream's allocation and connection go together), if it is still that
    /// client's; a UDP client has none.
    pub(super) fn close_client_conn(&mut self, client: &ClientId, now: Now, why: io::Error) {
        if !client.transport.is_stream() {
            return;
        }
        let idx = client.local as usize;
        let owned = self
            .conns
            .get(idx)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.client == *client);
        if owned {
            self.close_conn(idx, now, Close::Io(why));
        }
    }

    /// Closes a connection and ends its allocation.
    pub(super) fn close_conn(&mut self, idx: usize, now: Now, why: Close) {
        let Some(mut c) = self.conns.get_mut(idx).and_then(Option::take) else {
            return;
        };
        tracing::debug!(remote = %c.client.remote, reason = ?why, "connection closed");
        c.shutdown();
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.streams.limits.release(c.client.remote.ip());
        self.server.handle_client_closed(&c.client, now);
        self.free_conns.push(idx);
        self.run_commands();
    }

    /// Once a second: closes connections whose TLS handshake is too slow, that sat without an
    /// allocation and without a complete message for the idle timeout (slowloris, half-open
    /// clients; shorter near the total cap, see `ConnLimits::idle_timeout`), or whose answers
    /// nobody has read for the idle timeout. Gives back idle connections' buffer memory and
    /// reports how much the rest hold.
    pub(super) fn sweep_conns(&mut self, now: Now) {
        let base = self.streams.idle_timeout;
        let idle_timeout = self.streams.limits.idle_timeout(base);
        let mut buffers = 0;
        for idx in 0..self.conns.len() {
            let Some(c) = &mut self.conns[idx] else {
                continue;
            };
            let idle_for = now.mono.saturating_duration_since(c.last_frame);
            let shed = if c.is_handshaking()
                && now.mono.saturating_duration_since(c.created) > self.streams.handshake_timeout
            {
                Some(Shed::Handshake)
            } else if c.stalled_for(now.mono) > base {
                Some(Shed::Stalled)
            } else if idle_for > idle_timeout && !self.server.has_allocation(&c.client) {
                Some(if idle_for > base {
                    Shed::Idle
                } else {
                    Shed::IdleNearCap
                })
            } else {
                None
            };
            if let Some(why) = shed {
                self.streams.limits.count(why);
                let e = io::Error::new(io::ErrorKind::TimedOut, why.label());
                self.close_conn(idx, now, Close::Io(e));
                continue;
            }
            c.shrink_idle(now.mono, CONN_SWEEP_EVERY);
            buffers += c.buffer_bytes();
        }
        let delta = buffers as i64 - self.buffer_bytes as i64;
        self.streams.limits.add_buffer_bytes(delta);
        self.buffer_bytes = buffers;
    }
}
