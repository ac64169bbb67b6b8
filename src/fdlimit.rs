//! File descriptors: every relay port, TCP/TLS client and HTTP connection is one, and the
//! process has RLIMIT_NOFILE of them. When HTTP or TCP clients take the last one, the relay
//! can no longer bind a port (Allocate gets 508) and health checks cannot connect.
//!
//! At start turnd raises the soft limit to the hard one ([`raise`]), then [`plan`]s: a fixed
//! reserve (listeners, epoll and wakers, stdio, the self-probe, a health check's accept), the
//! relay's sockets (`max_allocations`, or every relay port when that is unlimited), and what
//! is left for connections (HTTP listeners and TCP/TLS clients). When the configured
//! connection caps do not fit what is left, they are lowered (HTTP to at most a quarter of it,
//! TCP/TLS to the rest) and the start-up log says so: the relay keeps its share (at least half of what the reserve leaves), whatever
//! clients do.

/// The open-file limit before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFile {
    pub before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit where the process may.
pub fn raise() -> std::io::Result<NoFile> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(NoFile {
        before,
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// What the configuration asks for.
#[derive(Debug, Clone, Copy)]
pub struct Demand {
    /// Descriptors kept back for listeners, pollers, stdio, the probe and health checks.
    pub reserve: u64,
    /// Relay sockets at most (one per allocation).
    pub relay: u64,
    /// HTTP listeners enabled (credential API, metrics), each with its own cap.
    pub http_listeners: u64,
    pub http_max_connections: u32,
    /// TCP/TLS client connections (0 = no limit).
    pub max_connections: u32,
}

impl Demand {
    pub fn from_config(config: &crate::config::Config) -> Demand {
        let workers = config.workers as u64;
        let families = u64::from(config.relay_v4.is_some()) + u64::from(config.relay_v6.is_some());
        let ports = config.relay_ports.clone().count() as u64 * families.max(1);
        Demand {
            reserve: 64
                + workers * (2 * config.listen.len() as u64 + config.tls_listen.len() as u64 + 4),
            relay: match config.max_allocations {
                0 => ports,
                n => u64::from(n).min(ports),
            },
            http_listeners: u64::from(config.http_listen.is_some())
                + u64::from(config.metrics_listen.is_some()),
            http_max_connections: config.http_max_connections,
            max_connections: config.max_connections,
        }
    }
}

/// Descriptors an HTTP listener with cap `n` may hold (`http::edge::max_sockets`): evicted
/// connections close a moment after their replacement is admitted, and newcomers to a full
/// listener wait a moment for their first bytes.
fn http_fds(n: u64) -> u64 {
    crate::http::edge::max_sockets(n.min(u64::from(u32::MAX)) as u32) as u64
}

/// The caps to run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub http_max_connections: u32,
    pub max_connections: u32,
    /// Descriptors the configuration needs in full.
    pub needed: u64,
    /// The relay's sockets that fit beside the reserve.
    pub relay_fits: u64,
    /// The caps were lowered to fit.
    pub lowered: bool,
}

/// Fits the connection caps into `limit` descriptors, leaving the reserve and the relay's share.
pub fn plan(limit: u64, d: &Demand) -> Plan {
    let tcp = match d.max_connections {
        0 => u64::MAX / 4,
        n => u64::from(n),
    };
    let http = d.http_listeners * http_fds(u64::from(d.http_max_connections));
    let needed = d
        .reserve
        .saturating_add(d.relay)
        .saturating_add(http)
        .saturating_add(tcp);
    let avail = limit.saturating_sub(d.reserve);
    let relay_fits = d
        .relay
        .min(avail / 2)
        .max(avail.saturating_sub(http + tcp).min(d.relay));
    let budget = avail - relay_fits;
    if http + tcp <= budget {
        return Plan {
            http_max_connections: d.http_max_connections,
            max_connections: d.max_connections,
            needed,
            relay_fits,
            lowered: false,
        };
    }
    // HTTP gets at most a quarter: a credential request or a health check holds its connection
    // for milliseconds, a TURN client over TCP/TLS for a whole call.
    let http_share = http.min(budget / 4);
    let per_listener = http_share / d.http_listeners.max(1);
    // The largest cap whose http_fds fits the listener's share (http_fds(n) <= 13n/8 + 24).
    let http_cap =
        (per_listener.saturating_sub(24) * 8 / 13).clamp(1, u64::from(d.http_max_connections));
    let tcp_cap = budget.saturating_sub(http_share).clamp(1, tcp);
    Plan {
        http_max_connections: http_cap as u32,
        max_connections: tcp_cap.min(u64::from(u32::MAX)) as u32,
        needed,
        relay_fits,
        lowered: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand() -> Demand {
        Demand {
            reserve: 70,
            relay: 200,
            http_listeners: 1,
            http_max_connections: 1024,
            max_connections: 10_000,
        }
    }

    #[test]
    fn caps_that_fit_are_kept() {
        let p = plan(1 << 20, &demand());
        assert!(!p.lowered);
        assert_eq!((p.http_max_connections, p.max_connections), (1024, 10_000));
        assert_eq!(p.relay_fits, 200);
    }

    #[test]
    fn a_low_limit_lowers_connection_caps_and_keeps_the_relay_share() {
        let d = demand();
        let p = plan(1024, &d);
        assert!(p.lowered);
        assert_eq!(p.relay_fits, 200, "the relay keeps all it needs");
        let used = d.reserve
            + p.relay_fits
            + d.http_listeners * http_fds(u64::from(p.http_max_connections))
            + u64::from(p.max_connections);
        assert!(used <= 1024, "{p:?} uses {used}");
        assert!(p.http_max_connections >= 1 && p.max_connections >= 1);
    }

    #[test]
    fn unlimited_tcp_and_relay_still_leave_the_relay_half() {
        let d = Demand {
            relay: 32_768,
            max_connections: 0,
            http_listeners: 2,
            ..demand()
        };
        let p = plan(4096, &d);
        assert!(p.lowered);
        assert_eq!(p.relay_fits, (4096 - 70) / 2);
        let used = d.reserve
            + p.relay_fits
            + d.http_listeners * http_fds(u64::from(p.http_max_connections))
            + u64::from(p.max_connections);
        assert!(used <= 4096, "{p:?} uses {used}");
    }
}
