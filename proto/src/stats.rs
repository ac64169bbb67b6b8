//! Plain counters the core keeps and the shell exports.
//!
//! Each worker's `Server` owns one `Stats` and bumps plain integers: no atomics, no maps, no
//! labels on the per-packet path. The shell copies them out (see turnd's metrics module) and
//! sums them over workers at scrape time. Every label is a bounded enum.

use crate::auth::AuthFailure;
use crate::server::reject::Reject;
use crate::server::EndReason;
use crate::server::Transport;
use crate::wire::Family;

/// Upper bounds (seconds) of the allocation-lifetime histogram buckets; the last is +Inf.
pub const LIFETIME_BUCKETS: [f64; 8] = [10.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 86400.0];

/// Counters and gauges of one worker.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Binding requests answered.
    pub binding_requests: u64,
    /// Allocations created.
    pub allocations_created: u64,
    /// Allocations ended, by [`EndReason::index`] (expired, deleted by the client, connection
    /// closed, revoked or credential removed by a reload, drained, shut down, ended by an
    /// operator).
    pub allocations_ended: [u64; EndReason::ALL.len()],
    /// Allocate requests refused (an error response to an authenticated Allocate).
    pub allocations_refused: u64,
    /// Active allocations by `[transport][family]` (family 0 = IPv4, 1 = IPv6).
    pub allocations_active: [[u64; 2]; 3],
    /// Permissions installed now.
    pub permissions_active: u64,
    /// Channels bound now.
    pub channels_active: u64,
    /// Relay ports free in this worker's pools.
    pub relay_ports_free: u64,
    /// Relay ports this worker owns.
    pub relay_ports_total: u64,
    /// Error responses sent, by [`Reject::index`].
    pub error_responses: [u64; Reject::ALL.len()],
    /// Unauthenticated error responses not sent: their source was over its rate limit.
    pub error_responses_suppressed: u64,
    /// Authentication failures, by [`AuthFailure::index`].
    pub auth_failures: [u64; AuthFailure::ALL.len()],
    /// Peer addresses refused by policy (403 on CreatePermission/ChannelBind, Send dropped).
    pub peer_denied: u64,
    /// Relayed packets and bytes, client→peer ("to_peer") and peer→client ("to_client").
    pub packets_to_peer: u64,
    /// Bytes relayed client→peer (payload only).
    pub bytes_to_peer: u64,
    /// Packets relayed peer→client.
    pub packets_to_client: u64,
    /// Bytes relayed peer→client (payload only).
    pub bytes_to_client: u64,
    /// Packets dropped: malformed, no allocation, no permission, unknown channel.
    pub dropped_packets: u64,
    /// Relay sockets that failed to bind.
    pub relay_bind_failures: u64,
    /// Allocation lifetimes: counts per bucket of [`LIFETIME_BUCKETS`] (+Inf last), and sum.
    pub lifetime_buckets: [u64; LIFETIME_BUCKETS.len() + 1],
    /// Sum of the observed allocation lifetimes, in seconds.
    pub lifetime_sum_secs: f64,
    /// How many allocation lifetimes were observed.
    pub lifetime_count: u64,
    /// Events the core dropped because its queue was full (never an allocation's end).
    pub events_dropped: u64,
}

impl Stats {
    /// Counts an allocation that ended for `reason`.
    pub fn ended(&mut self, reason: EndReason) {
        self.allocations_ended[reason.index()] += 1;
    }

    /// Allocations that ended for `reason`.
    pub fn ended_count(&self, reason: EndReason) -> u64 {
        self.allocations_ended[reason.index()]
    }

    pub(crate) fn observe_lifetime(&mut self, secs: f64) {
        let i = LIFETIME_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LIFETIME_BUCKETS.len());
        self.lifetime_buckets[i] += 1;
        self.lifetime_sum_secs += secs;
        self.lifetime_count += 1;
    }

    pub(crate) fn allocation_gauge(&mut self, transport: Transport, family: Family) -> &mut u64 {
        &mut self.allocations_active[transport as usize][family.index()]
    }
}
