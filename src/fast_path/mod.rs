//! The kernel fast path (issue 18, `fast_path = "xdp"`): UDP ChannelData relayed both ways
//! by an XDP program, before the kernel's UDP stack, netfilter and conntrack see it.
//!
//! The protocol core decides (`turnd_proto::server::fast_path`): it emits a route when a
//! channel becomes usable and removes it when it stops being usable. The shell only writes
//! those routes into the kernel's maps (`xdp.rs`, behind the `xdp` cargo feature) and reads
//! the kernel's per-CPU counters back, so metrics and usage records count what the kernel
//! relayed too. Every packet the program does not relay (STUN, indications, TCP/TLS, an
//! unknown or expired channel) reaches the sockets unchanged: turnd behaves the same with the
//! fast path or without it.
//!
//! One [`FastPath`] per process, shared by the workers; its lock is taken only when a worker
//! carries out route commands (after a batch, never per packet) and at a scrape.

#[cfg(feature = "xdp")]
pub mod xdp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use turnd_proto::server::usage::Usage;
use turnd_proto::server::ChannelRoute;
use turnd_proto::{ClientId, Now};

/// The attached fast path. In a build without the `xdp` feature it cannot exist
/// (configuration refuses `fast_path = "xdp"` there), so its methods are unreachable.
pub struct FastPath {
    #[cfg(feature = "xdp")]
    relay: std::sync::Mutex<xdp::XdpRelay>,
    #[cfg(not(feature = "xdp"))]
    never: std::convert::Infallible,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FastPath")
    }
}

#[cfg(feature = "xdp")]
impl FastPath {
    /// Loads and attaches the XDP program on `interfaces`. Where it cannot (no CAP_BPF or
    /// CAP_NET_ADMIN, no such interface, a driver without native XDP, an old kernel) the reason
    /// is logged and None returned: turnd relays in userspace, `turnd_fast_path_active` is 0.
    /// `ipv6`: turnd may relay IPv6 (a listener or relay address of that family), so a
    /// missing IPv6 forwarding setting is worth a word.
    pub fn start(interfaces: &[String], ipv6: bool) -> Option<Arc<FastPath>> {
        match xdp::XdpRelay::attach(interfaces) {
            Ok(relay) => {
                tracing::info!(
                    interfaces = %interfaces.join(","),
                    "fast path on: UDP ChannelData is relayed in XDP (netfilter and conntrack do not see it)"
                );
                if ipv6 {
                    ipv6_forwarding_note(interfaces);
                }
                Some(Arc::new(FastPath {
                    relay: std::sync::Mutex::new(relay),
                }))
            }
            Err(why) => {
                tracing::warn!(
                    interfaces = %interfaces.join(","),
                    "fast path off: {why}; relaying in userspace"
                );
                None
            }
        }
    }

    fn relay(&self) -> std::sync::MutexGuard<'_, xdp::XdpRelay> {
        self.relay.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the kernel relayed since start-up, both ways (all CPUs), for the metrics.
    pub fn totals(&self) -> Usage {
        usage(self.relay().totals())
    }

    /// Writes a route; its protocol-clock expiry becomes the kernel clock's.
    fn install(&self, r: &ChannelRoute, now: Now) {
        let left = crate::clock::real_duration(r.expires.saturating_duration_since(now.mono));
        let route = kernel_route(
            r,
            xdp::monotonic_ns().saturating_add(left.as_nanos() as u64),
        );
        if let Err(e) = self.relay().install(&route) {
            // The map is full or the kernel refused: this channel stays in userspace.
            tracing::warn!(channel = r.channel, client = %r.client.remote, error = %e, "fast path: route not installed; relaying it in userspace");
        }
    }

    fn remove(&self, r: &ChannelRoute) {
        if let Err(e) = self.relay().remove(&kernel_route(r, 0)) {
            tracing::warn!(channel = r.channel, error = %e, "fast path: route not removed (it still expires on time)");
        }
    }

    /// What the kernel relayed through this relay address; its counters are dropped.
    fn forget_relay(&self, relay: SocketAddr) -> Usage {
        usage(self.relay().forget_relay(relay))
    }

    /// What the kernel relayed through this relay address so far.
    fn relay_usage(&self, relay: SocketAddr) -> Usage {
        usage(self.relay().relay_counters(relay))
    }
}

/// The kernel's next-hop lookup for XDP (`bpf_fib_lookup`) answers IPv6 only on interfaces
/// that forward IPv6; elsewhere the program passes IPv6 ChannelData to the sockets (correct,
/// just not fast). Said once at start-up, with the setting and its catch.
#[cfg(feature = "xdp")]
fn ipv6_forwarding_note(interfaces: &[String]) {
    for i in interfaces {
        let path = format!("/proc/sys/net/ipv6/conf/{i}/forwarding");
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "0") {
            tracing::info!(
                interface = %i,
                "fast path: IPv6 forwarding is off on {i}, so IPv6 ChannelData is relayed in userspace; \
                 sysctl net.ipv6.conf.{i}.forwarding=1 moves it to XDP (then set accept_ra=2 if the host \
                 takes its IPv6 route from router advertisements)"
            );
        }
    }
}

#[cfg(feature = "xdp")]
fn kernel_route(r: &ChannelRoute, expires_ns: u64) -> xdp::ChannelRoute {
    xdp::ChannelRoute {
        client: r.client.remote,
        server: r.server,
        channel: r.channel,
        peer: r.peer,
        relay: r.relay,
        expires_ns,
    }
}

#[cfg(feature = "xdp")]
fn usage(c: xdp::XdpCounters) -> Usage {
    use turnd_proto::server::usage::Flow;
    Usage {
        to_peer: Flow {
            packets: c.packets_to_peer,
            bytes: c.bytes_to_peer,
        },
        to_client: Flow {
            packets: c.packets_to_client,
            bytes: c.bytes_to_client,
        },
    }
}

#[cfg(not(feature = "xdp"))]
impl FastPath {
    pub fn start(_interfaces: &[String], _ipv6: bool) -> Option<Arc<FastPath>> {
        None
    }
    pub fn totals(&self) -> Usage {
        match self.never {}
    }
    fn install(&self, _: &ChannelRoute, _: Now) {
        match self.never {}
    }
    fn remove(&self, _: &ChannelRoute) {
        match self.never {}
    }
    fn forget_relay(&self, _: SocketAddr) -> Usage {
        match self.never {}
    }
    fn relay_usage(&self, _: SocketAddr) -> Usage {
        match self.never {}
    }
}

/// One worker's side: carries out its server's route commands and keeps what the kernel
/// relayed for each allocation, so the allocation's end reports it.
#[derive(Debug, Default)]
pub struct WorkerRoutes {
    fast_path: Option<Arc<FastPath>>,
    /// The client owning each relay address that has had a route.
    owners: HashMap<SocketAddr, ClientId>,
    /// Kernel usage of relays released in this batch, until their allocation's end is logged.
    ended: HashMap<ClientId, Usage>,
}

impl WorkerRoutes {
    pub fn new(fast_path: Option<Arc<FastPath>>) -> Self {
        WorkerRoutes {
            fast_path,
            ..WorkerRoutes::default()
        }
    }

    /// [`turnd_proto::Command::InstallRoute`].
    pub fn install(&mut self, r: &ChannelRoute, now: Now) {
        if let Some(fp) = &self.fast_path {
            fp.install(r, now);
            self.owners.insert(r.relay, r.client);
        }
    }

    /// [`turnd_proto::Command::RemoveRoute`].
    pub fn remove(&mut self, r: &ChannelRoute) {
        if let Some(fp) = &self.fast_path {
            fp.remove(r);
        }
    }

    /// A relay socket at `addr` is being released (its allocation ended): what the kernel
    /// relayed through it is kept for the allocation's end event.
    pub fn relay_released(&mut self, addr: SocketAddr) {
        let (Some(fp), Some(client)) = (&self.fast_path, self.owners.remove(&addr)) else {
            return;
        };
        let u = fp.forget_relay(addr);
        *self.ended.entry(client).or_default() += u;
    }

    /// The kernel's share of an ended allocation's usage (taken: asked once per end).
    pub fn take_ended(&mut self, client: &ClientId) -> Usage {
        self.ended.remove(client).unwrap_or_default()
    }

    /// The kernel's share so far of a live allocation's usage (admin API).
    pub fn live_usage(&self, client: &ClientId) -> Usage {
        let mut total = Usage::default();
        if let Some(fp) = &self.fast_path {
            for (relay, _) in self.owners.iter().filter(|(_, c)| *c == client) {
                total += fp.relay_usage(*relay);
            }
        }
        total
    }
}
