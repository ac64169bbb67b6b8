//! The shell's half of the session events (issue 16): the core reports what happened as
//! `turnd_proto::Event`s; each worker takes them after every batch of commands (never per
//! packet) and hands them here, to be logged with `tracing` and, for an ended allocation,
//! written as a usage record (`usage_log.rs`).
//!
//! Log lines use the target `turnd::events` and these stable fields (README, "Events"):
//! `event` (the kind), `worker`, `user_id`, `username`, `realm`, `client`, `server`,
//! `transport`, `relayed`, `lifetime_secs`, `reason`, `duration_ms`, `packets_to_peer`,
//! `bytes_to_peer`, `packets_to_client`, `bytes_to_client`, `method`, `code`, `peer`,
//! `channel`. Lifecycle events are at info, permission and channel changes at debug; auth
//! failures, refusals and denied peers are rate-limited per source (`limiter.rs`) and a
//! window's suppressed count is logged as one `events_suppressed` line.

pub mod limiter;
pub mod usage_log;

use limiter::Limiter;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use turnd_proto::server::usage::Usage;
use turnd_proto::server::{method_label, Event, Owner};
use turnd_proto::{EndReason, Server};
use usage_log::UsageSender;

/// The tracing target of every event line.
pub const TARGET: &str = "turnd::events";

/// One worker's event handling.
pub struct EventSink {
    worker: usize,
    realm: Arc<str>,
    limiter: Limiter,
    usage: Option<UsageSender>,
    /// The worker is stopping: records wait for room instead of being dropped.
    closing: bool,
}

impl EventSink {
    pub fn new(worker: usize, realm: &str, usage: Option<UsageSender>) -> Self {
        EventSink {
            worker,
            realm: realm.into(),
            limiter: Limiter::new(Instant::now()),
            usage,
            closing: false,
        }
    }

    /// Takes every event the server has queued. An ended allocation's usage gains what the
    /// kernel fast path relayed for it (`routes`), so records count every relayed packet.
    pub fn drain(&mut self, server: &mut Server, routes: &mut crate::fast_path::WorkerRoutes) {
        if server.pending_events() == 0 {
            return;
        }
        let now = Instant::now();
        while let Some(mut e) = server.poll_event() {
            if let Event::AllocationEnded { owner, usage, .. } = &mut e {
                *usage += routes.take_ended(&owner.client);
            }
            self.handle(e, now);
        }
    }

    /// Logs the suppressed count once a rate-limit window has passed (called periodically,
    /// so the summary comes even after the flood stops).
    pub fn tick(&mut self, now: Instant) {
        if let Some(count) = self.limiter.roll(now) {
            self.suppressed(count);
        }
    }

    /// The worker is stopping: from now on a usage record waits for the writer rather than
    /// being dropped (a worker with thousands of allocations left must not lose their records
    /// to a full channel at SIGTERM).
    pub fn closing(&mut self) {
        self.closing = true;
    }

    /// At shutdown: the summary for the window in progress.
    pub fn finish(&mut self) {
        let n = self.limiter.take_suppressed();
        if n > 0 {
            self.suppressed(n);
        }
    }

    fn suppressed(&self, count: u64) {
        tracing::warn!(
            target: TARGET,
            event = "events_suppressed",
            worker = self.worker,
            count,
            window_secs = limiter::WINDOW.as_secs(),
            "suppressed {count} similar events (auth failures, refusals, denied peers, refreshes) over the rate limit"
        );
    }

    fn handle(&mut self, e: Event, now: Instant) {
        let worker = self.worker;
        match e {
            Event::AllocationCreated {
                owner,
                relayed,
                lifetime,
            } => {
                let relayed = relayed_list(&relayed);
                let Owner {
                    client,
                    user_id,
                    username,
                } = *owner;
                tracing::info!(
                    target: TARGET,
                    event = "allocation_created",
                    worker,
                    user_id = %user_id,
                    username = %username,
                    realm = %self.realm,
                    client = %client.remote,
                    server = %client.local_ip,
                    transport = client.transport.label(),
                    relayed = %relayed,
                    lifetime_secs = lifetime.as_secs(),
                    "allocation created"
                );
            }
            Event::AllocationRefreshed { client, lifetime } => {
                // A client may refresh as often as it likes: limited like the noisy events
                // (an honest one refreshes every few minutes, far below the budget).
                if self.limiter.allow(client.remote.ip(), now) {
                    tracing::info!(
                        target: TARGET,
                        event = "allocation_refreshed",
                        worker,
                        client = %client.remote,
                        server = %client.local_ip,
                        transport = client.transport.label(),
                        lifetime_secs = lifetime.as_secs(),
                        "allocation refreshed"
                    )
                }
            }
            Event::PermissionInstalled { client, peer } => tracing::debug!(
                target: TARGET,
                event = "permission_installed",
                worker,
                client = %client.remote,
                transport = client.transport.label(),
                peer = %peer,
                "permission installed"
            ),
            Event::PermissionExpired { client, peer } => tracing::debug!(
                target: TARGET,
                event = "permission_expired",
                worker,
                client = %client.remote,
                transport = client.transport.label(),
                peer = %peer,
                "permission expired"
            ),
            Event::ChannelBound {
                client,
                peer,
                channel,
            } => tracing::debug!(
                target: TARGET,
                event = "channel_bound",
                worker,
                client = %client.remote,
                transport = client.transport.label(),
                peer = %peer,
                channel,
                "channel bound"
            ),
            Event::ChannelExpired {
                client,
                peer,
                channel,
            } => tracing::debug!(
                target: TARGET,
                event = "channel_expired",
                worker,
                client = %client.remote,
                transport = client.transport.label(),
                peer = %peer,
                channel,
                "channel expired"
            ),
            Event::AllocationEnded {
                owner,
                reason,
                duration,
                usage,
            } => self.ended(&owner, reason, duration, usage),
            Event::RequestRefused {
                client,
                method,
                code,
                reason,
            } => {
                if self.limiter.allow(client.remote.ip(), now) {
                    tracing::info!(
                        target: TARGET,
                        event = "request_refused",
                        worker,
                        client = %client.remote,
                        server = %client.local_ip,
                        transport = client.transport.label(),
                        method = method_label(method),
                        code,
                        reason,
                        "request refused"
                    );
                }
            }
            Event::AuthFailed { client, reason } => {
                if self.limiter.allow(client.remote.ip(), now) {
                    tracing::info!(
                        target: TARGET,
                        event = "auth_failed",
                        worker,
                        client = %client.remote,
                        server = %client.local_ip,
                        transport = client.transport.label(),
                        reason = reason.label(),
                        "authentication failed"
                    );
                }
            }
            Event::PeerDenied {
                client,
                peer,
                method,
            } => {
                if self.limiter.allow(client.remote.ip(), now) {
                    tracing::info!(
                        target: TARGET,
                        event = "peer_denied",
                        worker,
                        client = %client.remote,
                        transport = client.transport.label(),
                        peer = %peer,
                        method = method_label(method),
                        "peer denied by policy"
                    );
                }
            }
        }
    }

    fn ended(&self, owner: &Owner, reason: EndReason, duration: Duration, usage: Usage) {
        let duration_ms = duration.as_millis() as u64;
        let client = &owner.client;
        tracing::info!(
            target: TARGET,
            event = "allocation_ended",
            worker = self.worker,
            user_id = %owner.user_id,
            username = %owner.username,
            realm = %self.realm,
            client = %client.remote,
            server = %client.local_ip,
            transport = client.transport.label(),
            reason = reason.label(),
            duration_ms,
            packets_to_peer = usage.to_peer.packets,
            bytes_to_peer = usage.to_peer.bytes,
            packets_to_client = usage.to_client.packets,
            bytes_to_client = usage.to_client.bytes,
            "allocation ended"
        );
        if let Some(u) = &self.usage {
            let end_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let start_ms = end_ms.saturating_sub(duration_ms);
            let record = serde_json::json!({
                "user_id": owner.user_id,
                "username": owner.username,
                "realm": &*self.realm,
                "client": client.remote.to_string(),
                "server": client.local_ip.to_string(),
                "transport": client.transport.label(),
                "start": crate::clock::rfc3339(start_ms / 1000),
                "end": crate::clock::rfc3339(end_ms / 1000),
                "start_unix_ms": start_ms,
                "end_unix_ms": end_ms,
                "duration_ms": duration_ms,
                "packets_to_peer": usage.to_peer.packets,
                "bytes_to_peer": usage.to_peer.bytes,
                "packets_to_client": usage.to_client.packets,
                "bytes_to_client": usage.to_client.bytes,
                "reason": reason.label(),
                "worker": self.worker,
            });
            if self.closing {
                u.send_waiting(record.to_string());
            } else {
                u.send(record.to_string());
            }
        }
    }
}

/// The relayed addresses as one field: `a` or `a,b` (a dual-stack allocation).
fn relayed_list(relayed: &[Option<SocketAddr>; 2]) -> String {
    relayed
        .iter()
        .flatten()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
