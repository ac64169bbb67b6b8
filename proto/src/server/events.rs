//! What happened to allocations, as data: the core reports, the shell logs and bills.
//!
//! turnd-proto does no I/O and links no logging crate, so an operator's view of individual
//! sessions (who allocated, from where, how long, how much relayed, why it ended) leaves the
//! core as values: [`Event`]s, queued in the server and taken with `Server::poll_event`.
//!
//! The queue is bounded ([`EVENT_QUEUE_MAX`]). A shell that falls behind (or a flood of
//! refusals) loses the oldest kinds of event that only inform — refusals, denials, permission
//! and channel changes — and each loss is counted in `Stats::events_dropped`. An
//! allocation's end is never dropped while the queue is under [`EVENT_QUEUE_HARD_MAX`]: it is
//! the usage record, what an operator bills from. The hard bound only guards an embedder that
//! never polls; turnd drains the queue after every batch.
//!
//! Nothing here is on the per-packet path except [`Event::PeerDenied`] for a Send indication
//! to a denied peer, which carries no heap data: once the queue has grown to its working size
//! a push allocates nothing.

use super::usage::Usage;
use super::ClientId;
use crate::auth::AuthFailure;
use crate::wire::Method;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Events queued before informational ones are dropped.
pub const EVENT_QUEUE_MAX: usize = 1024;
/// Events queued before even an allocation's end is dropped (an embedder that never polls).
pub const EVENT_QUEUE_HARD_MAX: usize = 64 * EVENT_QUEUE_MAX;

/// Why an allocation ended (the `reason` label of `turnd_allocations_ended_total`, and the
/// `reason` field of the allocation-ended event and the usage record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndReason {
    /// It ran out its lifetime without a refresh (RFC 8656 §7).
    Expired,
    /// The client deleted it: a Refresh with LIFETIME 0 (RFC 8656 §7.3).
    Deleted,
    /// Its TCP or TLS connection closed (RFC 8656 §3.1: the allocation ends with it).
    ConnectionClosed,
    /// A reload put its username or user id on the revocation list.
    Revoked,
    /// After a reload, no configured REST secret or static user verifies its credential.
    CredentialRemoved,
    /// The drain (SIGTERM) timed out with it still live.
    Drained,
    /// The process stopped (SIGINT, or a stop without a drain).
    Shutdown,
    /// An operator ended it (the admin API).
    Admin,
}

impl EndReason {
    /// Every reason, in [`EndReason::index`] order.
    pub const ALL: [EndReason; 8] = [
        EndReason::Expired,
        EndReason::Deleted,
        EndReason::ConnectionClosed,
        EndReason::Revoked,
        EndReason::CredentialRemoved,
        EndReason::Drained,
        EndReason::Shutdown,
        EndReason::Admin,
    ];

    /// The metric label and log field value (snake_case).
    pub fn label(&self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::Deleted => "deleted",
            EndReason::ConnectionClosed => "connection_closed",
            EndReason::Revoked => "revoked",
            EndReason::CredentialRemoved => "credential_removed",
            EndReason::Drained => "drained",
            EndReason::Shutdown => "shutdown",
            EndReason::Admin => "admin",
        }
    }

    /// The position in [`EndReason::ALL`] (and in `Stats::allocations_ended`).
    pub fn index(&self) -> usize {
        *self as usize
    }
}

/// Who an allocation belongs to, as its created and ended events report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The client's 5-tuple and transport.
    pub client: ClientId,
    /// The user id: a REST username's part after the expiry (`expiry:user_id`), or the
    /// static user's name.
    pub user_id: String,
    /// The USERNAME the allocation was made with.
    pub username: String,
}

/// Something that happened, for the shell to log (and, for an ended allocation, to write a
/// usage record of). Which fields each kind carries is the log's contract: README, "Events".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An Allocate succeeded (RFC 8656 §7.2).
    AllocationCreated {
        /// Who.
        owner: Box<Owner>,
        /// The relayed transport addresses (one per family allocated).
        relayed: [Option<SocketAddr>; 2],
        /// The lifetime granted.
        lifetime: Duration,
    },
    /// A Refresh with a nonzero lifetime (RFC 8656 §7.3).
    AllocationRefreshed {
        /// The allocation's client.
        client: ClientId,
        /// The lifetime granted from now.
        lifetime: Duration,
    },
    /// A permission for a peer IP was installed (not a refresh of a live one; RFC 8656 §9).
    PermissionInstalled {
        /// The allocation's client.
        client: ClientId,
        /// The peer IP.
        peer: IpAddr,
    },
    /// A permission ran out (RFC 8656 §9: 300 s unless refreshed).
    PermissionExpired {
        /// The allocation's client.
        client: ClientId,
        /// The peer IP.
        peer: IpAddr,
    },
    /// A channel was bound (or bound again after it expired; RFC 8656 §12).
    ChannelBound {
        /// The allocation's client.
        client: ClientId,
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
    },
    /// A channel binding ran out (RFC 8656 §12: 600 s unless refreshed).
    ChannelExpired {
        /// The allocation's client.
        client: ClientId,
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
    },
    /// An allocation ended: why, after how long, and what it relayed.
    AllocationEnded {
        /// Who.
        owner: Box<Owner>,
        /// Why it ended.
        reason: EndReason,
        /// From the Allocate request to the end.
        duration: Duration,
        /// Packets and payload bytes relayed each way.
        usage: Usage,
    },
    /// A request was answered with an error (the 401 challenge of every first request, and
    /// refusals reported as [`Event::AuthFailed`], are not reported here).
    RequestRefused {
        /// The client.
        client: ClientId,
        /// The request's method.
        method: Method,
        /// The STUN error code.
        code: u16,
        /// The reason phrase sent.
        reason: &'static str,
    },
    /// A request carried credentials that were not accepted.
    AuthFailed {
        /// The client (its address is the source).
        client: ClientId,
        /// Why.
        reason: AuthFailure,
    },
    /// A peer address was refused by policy: 403 to CreatePermission or ChannelBind, or a
    /// Send indication dropped.
    PeerDenied {
        /// The client.
        client: ClientId,
        /// The peer refused.
        peer: SocketAddr,
        /// The request or indication's method.
        method: Method,
    },
}

impl Event {
    /// The event's name in logs (snake_case, stable).
    pub fn name(&self) -> &'static str {
        match self {
            Event::AllocationCreated { .. } => "allocation_created",
            Event::AllocationRefreshed { .. } => "allocation_refreshed",
            Event::PermissionInstalled { .. } => "permission_installed",
            Event::PermissionExpired { .. } => "permission_expired",
            Event::ChannelBound { .. } => "channel_bound",
            Event::ChannelExpired { .. } => "channel_expired",
            Event::AllocationEnded { .. } => "allocation_ended",
            Event::RequestRefused { .. } => "request_refused",
            Event::AuthFailed { .. } => "auth_failed",
            Event::PeerDenied { .. } => "peer_denied",
        }
    }

    /// An allocation's end is never dropped for room: it is the usage record.
    pub fn is_essential(&self) -> bool {
        matches!(self, Event::AllocationEnded { .. })
    }
}

/// The server's bounded event queue.
#[derive(Debug, Default)]
pub(crate) struct EventQueue {
    queue: VecDeque<Event>,
}

impl EventQueue {
    /// Queues an event; false when it was dropped for room (the caller counts it).
    pub fn push(&mut self, event: Event) -> bool {
        let limit = if event.is_essential() {
            EVENT_QUEUE_HARD_MAX
        } else {
            EVENT_QUEUE_MAX
        };
        if self.queue.len() >= limit {
            return false;
        }
        self.queue.push_back(event);
        true
    }

    pub fn pop(&mut self) -> Option<Event> {
        self.queue.pop_front()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }
}

/// A STUN method's name in logs.
pub fn method_label(method: Method) -> &'static str {
    match method {
        Method::BINDING => "binding",
        Method::ALLOCATE => "allocate",
        Method::REFRESH => "refresh",
        Method::SEND => "send",
        Method::DATA => "data",
        Method::CREATE_PERMISSION => "create_permission",
        Method::CHANNEL_BIND => "channel_bind",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order_with_distinct_labels() {
        for (i, r) in EndReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut labels: Vec<_> = EndReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), EndReason::ALL.len());
    }
}
