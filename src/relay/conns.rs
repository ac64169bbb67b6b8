//! TCP and TLS client connections of a worker (RFC 8656 §3.1, §12.5): accept within limits,
//! cut the byte stream into frames for the server, queue its answers, and close connections
//! that are idle without an allocation or slow to finish a TLS handshake. An allocation lives
//! exactly as long as its connection.

use super::stream::{Close, Conn};
use super::worker::{Worker, CONN_BASE};
use crate::clock;
use mio::{Interest, Token};
use std::io;
use turnd_proto::{ClientId, FromClient, Now, Transport};

impl Worker {
    /// Accepts every pending connection on stream listener `i`.
    pub(super) fn accept_all(&mut self, i: usize) {
        loop {
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
            if !self.streams.limits.try_acquire(remote.ip()) {
                tracing::debug!(%remote, "connection refused: connection limit");
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
                Token(CONN_BASE + idx),
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
    }

    /// A connection is readable or writable: read frames and hand them to the server, then
    /// write what is queued.
    pub(super) fn conn_ready(&mut self, idx: usize) {
        let now = clock::now();
        loop {
            let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                return;
            };
            let client = conn.client;
            let state = match conn.read_available() {
                Ok(s) => s,
                Err(why) => return self.close_conn(idx, now, why),
            };
            let mut fatal = None;
            let mut frames = 0;
            while let Some(conn) = self.conns[idx].as_mut() {
                let frame = match conn.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(why) => {
                        fatal = Some(why);
                        break;
                    }
                };
                frames += 1;
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
            if let Some(why) = fatal {
                // A malformed frame closes this connection only.
                self.run_commands();
                return self.close_conn(idx, now, why);
            }
            if frames > 0 {
                if let Some(c) = self.conns[idx].as_mut() {
                    c.last_frame = now.mono;
                }
            }
            self.run_commands();
            self.flush_conn(idx, now);
            if state.eof {
                return self.close_conn(idx, now, Close::Eof);
            }
            if !state.more {
                return;
            }
        }
    }

    /// Queues a STUN message for a stream client and writes it.
    pub(super) fn send_to_conn(&mut self, client: ClientId, bytes: &[u8]) {
        let idx = client.local as usize;
        if let Some(Some(c)) = self.conns.get_mut(idx) {
            if c.client == client {
                c.send(bytes);
                self.flush_conn(idx, clock::now());
            }
        }
    }

    /// Writes what a connection has queued; asks for WRITABLE while bytes remain.
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
                        Token(CONN_BASE + idx),
                        interest,
                    );
                    c.writable = pending;
                }
            }
            Err(why) => self.close_conn(idx, now, why),
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

    /// Closes connections whose TLS handshake is too slow, or that sat without an allocation
    /// and without a complete message for the idle timeout (slowloris, half-open clients).
    pub(super) fn sweep_conns(&mut self, now: Now) {
        for idx in 0..self.conns.len() {
            let Some(c) = &self.conns[idx] else { continue };
            let slow_handshake = c.is_handshaking()
                && now.mono.duration_since(c.created) > self.streams.handshake_timeout;
            let idle = !self.server.has_allocation(&c.client)
                && now.mono.duration_since(c.last_frame) > self.streams.idle_timeout;
            if slow_handshake || idle {
                self.close_conn(
                    idx,
                    now,
                    Close::Io(io::Error::from(io::ErrorKind::TimedOut)),
                );
            }
        }
    }
}
