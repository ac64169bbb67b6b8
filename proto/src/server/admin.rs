//! What an operator asks of a running server (issue 16): which allocations are live, and to
//! end a user's allocations now.
//!
//! Both run on the worker's thread between batches, when the shell's admin request slot is
//! filled: a listing walks this worker's allocation table once (O(allocations), never per
//! packet); ending a user's allocations releases their relay sockets through the usual
//! commands. Stream (TCP/TLS) allocations end with their connection (RFC 8656 §3.1: the
//! allocation and the connection share a fate), so [`Server::end_user`] returns the clients
//! whose connection the shell must close. To keep the user out afterwards, combine with
//! `revoke` (a credential is not invalidated by ending its allocations).

use super::{ClientId, EndReason, Now, Server, Transport};
use crate::server::usage::Usage;
use std::net::SocketAddr;
use std::time::Duration;

/// One live allocation, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The user id: a REST username's part after the expiry, or a static user's name.
    pub user_id: String,
    /// The full username the allocation authenticated with.
    pub username: String,
    /// The realm it authenticated in.
    pub realm: String,
    /// The client's 5-tuple as the shell names it (its `local` finds a stream connection).
    pub id: ClientId,
    /// The transport between client and server.
    pub transport: Transport,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The server address the client talks to (the 5-tuple's server side; its port is the
    /// listener's for UDP, unknown to the core for streams: 0 then).
    pub server: SocketAddr,
    /// The relayed transport addresses (advertised), one per family.
    pub relayed: Vec<SocketAddr>,
    /// How long ago it was created.
    pub age: Duration,
    /// How long until it expires unless refreshed.
    pub remaining: Duration,
    /// Whether the Allocate was answered (relay sockets bound).
    pub ready: bool,
    /// Permissions installed and not expired.
    pub permissions: usize,
    /// Channels bound and not expired.
    pub channels: usize,
    /// What it relayed so far, both ways.
    pub usage: Usage,
}

impl Server {
    /// The live allocations of this worker, of one user (matched by user id or full
    /// username) or of everyone, in table order.
    pub fn sessions(&self, user: Option<&str>, now: Now) -> Vec<SessionInfo> {
        self.allocations
            .iter()
            .map(|(_, a)| a)
            .filter(|a| user.is_none_or(|u| a.user_id == u || a.username == u))
            .map(|a| SessionInfo {
                user_id: a.user_id.clone(),
                username: a.username.clone(),
                realm: self.config.realm.clone(),
                id: a.client,
                transport: a.client.transport,
                client: a.client.remote,
                server: SocketAddr::new(a.client.local_ip, self.server_port(&a.client)),
                relayed: a.relays.iter().flatten().map(|r| r.advertised).collect(),
                age: now.mono.saturating_duration_since(a.created),
                remaining: a.expires.saturating_duration_since(now.mono),
                ready: a.is_ready(),
                permissions: a
                    .permissions
                    .iter()
                    .filter(|p| now.mono < p.expires)
                    .count(),
                channels: a.channels.iter().filter(|c| now.mono < c.expires).count(),
                usage: a.usage,
            })
            .collect()
    }

    /// Ends every allocation (pending ones included) of `user` (user id or full username) on
    /// this worker now: relay sockets released (the shell carries out the queued
    /// [`super::Command::ReleaseRelay`]s), ports and quota returned. Returns the clients whose
    /// allocations ended; for TCP/TLS ones the shell closes the connection.
    pub fn end_user(&mut self, user: &str, now: Now) -> Vec<ClientId> {
        let ended: Vec<_> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.user_id == user || a.username == user)
            .map(|(slot, a)| (slot, a.client))
            .collect();
        for (slot, _) in &ended {
            self.end_allocation(*slot, EndReason::Admin, now);
        }
        ended.into_iter().map(|(_, c)| c).collect()
    }

    /// The server-side port of a client's 5-tuple, where the core knows it: a UDP listener's.
    fn server_port(&self, client: &ClientId) -> u16 {
        match client.transport {
            Transport::Udp => self
                .config
                .udp_listeners
                .get(client.local as usize)
                .map_or(0, |a| a.port()),
            Transport::Tcp | Transport::Tls => 0,
        }
    }
}
