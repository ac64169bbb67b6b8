//! Starting and stopping the relay: bind every listener, build one `proto::Server` per
//! worker, start the worker threads and the HTTP and metrics services, and hand back the
//! addresses actually bound (tests listen on port 0 and read them here).

use crate::config::Config;
use crate::relay::limits::ConnLimits;
use crate::relay::socket;
use crate::relay::worker::{StreamSetup, Worker, WorkerHandle};
use crate::tls::CertStore;
use anyhow::{Context, Result};
use rand::RngCore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use turnd_proto::auth::Credentials;
use turnd_proto::policy::PeerPolicy;
use turnd_proto::server::ledger::Ledger;
use turnd_proto::server::ports::PortShard;
use turnd_proto::stats::Stats;
use turnd_proto::{Server, ServerConfig, Transport};

/// A running relay.
pub struct Running {
    /// UDP listen addresses, as bound (port 0 resolved). TCP listens on the same ones.
    pub udp: Vec<SocketAddr>,
    /// TLS listen addresses, as bound.
    pub tls: Vec<SocketAddr>,
    /// RFC 5780's primary and alternate addresses as bound (`stun_alternate`).
    pub stun_alternate: Option<turnd_proto::server::StunAlternate>,
    pub ledger: Arc<Ledger>,
    pub connections: Arc<ConnLimits>,
    /// The HTTP service, when enabled.
    pub http: Option<crate::http::HttpServer>,
    /// Shared with the HTTP handlers (credentials issued).
    pub http_state: Option<Arc<crate::http::HttpState>>,
    /// The metrics listener, when enabled.
    pub metrics: Option<crate::http::HttpServer>,
    /// The TLS certificate, reloadable.
    pub certs: Option<Arc<CertStore>>,
    /// Built-in ACME, when configured.
    pub acme: Option<Arc<crate::acme::Acme>>,
    /// Worker threads currently in their loop.
    pub workers_running: Arc<AtomicUsize>,
    /// The periodic self-probe's latest result.
    pub probe: Arc<crate::selftest::probe::ProbeState>,
    /// Settings SIGHUP can change for the HTTP service and the self-probe.
    pub live: Arc<crate::reload::Live>,
    workers: Vec<WorkerHandle>,
    threads: Vec<JoinHandle<()>>,
    shutdown: Arc<AtomicBool>,
    /// The usage-record writer, when `usage_log` is set.
    usage_log: Option<crate::events::usage_log::UsageLog>,
}

impl Running {
    /// Asks every worker to stop; returns at once.
    pub fn stop(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
        for w in &self.workers {
            let _ = w.waker.wake();
        }
    }

    /// Stops and waits for the workers to finish.
    pub fn shutdown(mut self) {
        self.stop();
        for mut h in [self.http.take(), self.metrics.take()]
            .into_iter()
            .flatten()
        {
            h.stop();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // After the workers: they ended what was left and sent its records.
        if let Some(u) = self.usage_log.take() {
            u.close();
        }
    }

    /// SIGHUP: reopen the usage log (logrotate renamed it).
    pub fn reopen_usage_log(&self) {
        if let Some(u) = &self.usage_log {
            u.reopen();
        }
    }

    /// The usage log's counters, when it is on.
    pub fn usage_counters(&self) -> Option<Arc<crate::events::usage_log::UsageCounters>> {
        self.usage_log.as_ref().map(|u| u.counters.clone())
    }

    /// Counters per worker, as last published (at most ~250 ms old).
    pub fn stats(&self) -> Vec<Stats> {
        self.workers
            .iter()
            .map(|w| w.stats.lock().map(|s| s.clone()).unwrap_or_default())
            .collect()
    }

    /// Applies a reloaded configuration (SIGHUP): the TLS certificate first (the only part
    /// that can still fail), then credentials and peer policy for every worker, then the
    /// HTTP/probe settings. Allocations and connections are kept. Settings that need a
    /// restart are left as they are; the caller reports them.
    pub fn reload(&self, new: &Config) -> Result<()> {
        if let (Some(store), Some((cert, key))) = (&self.certs, &new.tls_files) {
            store.reload(cert, key)?;
        }
        for w in &self.workers {
            w.policy.offer(crate::reload::WorkerSettings {
                credentials: credentials(new),
                policy: policy(new),
                idle_timeout: new.tcp_idle_timeout,
                handshake_timeout: new.tls_handshake_timeout,
            });
            let _ = w.waker.wake();
        }
        self.live.set(crate::reload::LiveSettings::from_config(new));
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The credentials the relay accepts, from configuration.
pub fn credentials(config: &Config) -> Credentials {
    let users: HashMap<String, String> = config.users.iter().cloned().collect();
    let secrets = config
        .secrets
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    Credentials::new(secrets, users, config.max_ttl)
        .with_revoked(config.revoked.iter().cloned())
        .with_strict_expiry(config.strict_expiry)
}

/// The peer policy, from configuration.
pub fn policy(config: &Config) -> PeerPolicy {
    PeerPolicy::new(config.allow_peer.clone(), config.deny_peer.clone())
}

/// Sockets for one worker.
#[derive(Default)]
struct WorkerSockets {
    udp: Vec<std::net::UdpSocket>,
    streams: Vec<(std::net::TcpListener, Transport)>,
}

/// SO_REUSEPORT would let this process share a port another process (of the same user) already
/// holds, silently splitting its clients between the two. A plain bind first turns that into
/// a clear error.
fn ensure_free(key: &str, addr: SocketAddr, tcp: bool) -> Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = if tcp {
        socket::bind_stream_listener(addr, false).map(drop)
    } else {
        socket::bind_listener(addr, false).map(drop)
    };
    match probe {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            anyhow::bail!("{key}: {addr} is already in use (another turnd or TURN server?)")
        }
        _ => Ok(()),
    }
}

/// Binds, for every worker, a UDP and a TCP socket on each listen address and a TCP socket on
/// each TLS address (SO_REUSEPORT). Port 0 is resolved by the first bind and reused by the
/// others, and by TCP on the same address.
#[allow(clippy::type_complexity)]
fn bind_listeners(
    config: &Config,
) -> Result<(
    Vec<SocketAddr>,
    Vec<SocketAddr>,
    Vec<WorkerSockets>,
    Option<Alternate>,
)> {
    let mut per_worker: Vec<WorkerSockets> = (0..config.workers)
        .map(|_| WorkerSockets::default())
        .collect();
    let mut udp = Vec::new();
    for addr in &config.listen {
        ensure_free("listen", *addr, false)?;
        ensure_free("listen", *addr, true)?;
        // With port 0, ask the kernel for a port with a plain bind: a bind(0) with SO_REUSEPORT
        // may hand out a port another process of the same user already holds with
        // SO_REUSEPORT, and silently share it. The port must be free for TCP too; retry the
        // short race between releasing the probe and binding for real.
        let mut attempts = 0;
        let (first, actual) = loop {
            let want = if addr.port() == 0 {
                match socket::bind_listener(*addr, false).and_then(|p| p.local_addr()) {
                    Ok(a) => a,
                    Err(e) if config.listen_is_default && addr.is_ipv6() => {
                        tracing::warn!(%addr, error = %e, "no IPv6 listener (this host has no usable IPv6)");
                        break (None, *addr);
                    }
                    Err(e) => return Err(e).with_context(|| format!("listen: cannot bind {addr}")),
                }
            } else {
                *addr
            };
            let first = match socket::bind_listener(want, true) {
                Err(e)
                    if addr.port() == 0
                        && attempts < 32
                        && e.kind() == std::io::ErrorKind::AddrInUse =>
                {
                    attempts += 1;
                    continue;
                }
                Ok(s) => s,
                Err(e) if config.listen_is_default && addr.is_ipv6() => {
                    tracing::warn!(%addr, error = %e, "no IPv6 listener (this host has no usable IPv6)");
                    break (None, *addr);
                }
                Err(e) => return Err(e).with_context(|| format!("listen: cannot bind {addr}")),
            };
            let actual = first.local_addr()?;
            match ensure_free("listen", actual, true) {
                Ok(()) => break (Some(first), actual),
                Err(_) if addr.port() == 0 && attempts < 32 => attempts += 1,
                Err(e) => return Err(e),
            }
        };
        let Some(first) = first else { continue };
        for (i, w) in per_worker.iter_mut().enumerate() {
            let u = if i == 0 {
                first.try_clone()?
            } else {
                socket::bind_listener(actual, true)?
            };
            w.udp.push(u);
            let t = socket::bind_stream_listener(actual, true)
                .with_context(|| format!("listen: cannot bind TCP {actual}"))?;
            w.streams.push((t, Transport::Tcp));
        }
        drop(first);
        udp.push(actual);
    }
    if udp.is_empty() {
        anyhow::bail!("listen: no listener could be bound");
    }
    let alternate = match config.stun_alternate {
        Some(a) => Some(bind_alternate(
            a,
            &udp,
            &config.relay_ports,
            &mut per_worker,
        )?),
        None => None,
    };
    let mut tls = Vec::new();
    for addr in &config.tls_listen {
        ensure_free("tls_listen", *addr, true)?;
        // Port 0: a plain bind picks a port nobody holds (see the UDP listeners above).
        let want = match addr.port() {
            0 => socket::bind_stream_listener(*addr, false)
                .and_then(|p| p.local_addr())
                .with_context(|| format!("tls_listen: cannot bind {addr}"))?,
            _ => *addr,
        };
        let first = socket::bind_stream_listener(want, true)
            .with_context(|| format!("tls_listen: cannot bind {addr}"))?;
        let actual = first.local_addr()?;
        per_worker[0].streams.push((first, Transport::Tls));
        for w in per_worker.iter_mut().skip(1) {
            w.streams
                .push((socket::bind_stream_listener(actual, true)?, Transport::Tls));
        }
        tls.push(actual);
    }
    Ok((udp, tls, per_worker, alternate))
}

/// RFC 5780's other three UDP sockets for every worker (the alternate IP on the primary port,
/// the alternate port on both IPs), after the listen sockets in each worker's list. An
/// alternate port of 0 is picked free on both IPs. Returns the addresses, in that order.
fn bind_alternate(
    alt: crate::config::StunAlternate,
    udp: &[SocketAddr],
    relay_ports: &std::ops::RangeInclusive<u16>,
    per_worker: &mut [WorkerSockets],
) -> Result<Alternate> {
    // The primary as bound (a listen port of 0 was resolved).
    let primary = udp
        .iter()
        .find(|a| a.ip() == alt.primary.ip() && (alt.primary.port() == 0 || **a == alt.primary))
        .copied()
        .context("stun_alternate: the primary listen address was not bound")?;
    let mut port = alt.alternate.port();
    let mut attempts = 0;
    while port == 0 || port == primary.port() {
        let picked = socket::bind_listener(SocketAddr::new(alt.alternate.ip(), 0), false)
            .and_then(|p| p.local_addr())
            .with_context(|| format!("stun_alternate: cannot bind {}", alt.alternate.ip()))?
            .port();
        let free = [alt.alternate.ip(), primary.ip()]
            .iter()
            .all(|ip| ensure_free("stun_alternate", SocketAddr::new(*ip, picked), false).is_ok());
        attempts += 1;
        // A picked port stays out of the relay range, where a relay socket would want it.
        if free && picked != primary.port() && !relay_ports.contains(&picked) {
            port = picked;
        } else if attempts > 32 {
            anyhow::bail!(
                "stun_alternate: no port free on both {} and {}",
                primary.ip(),
                alt.alternate.ip()
            );
        }
    }
    let alternate = SocketAddr::new(alt.alternate.ip(), port);
    let proto = turnd_proto::server::StunAlternate { primary, alternate };
    let extra = proto.addresses()[1..].to_vec();
    for addr in &extra {
        ensure_free("stun_alternate", *addr, false)?;
    }
    for w in per_worker.iter_mut() {
        for addr in &extra {
            let u = socket::bind_listener(*addr, true)
                .with_context(|| format!("stun_alternate: cannot bind {addr}"))?;
            w.udp.push(u);
        }
    }
    Ok(Alternate { proto, extra })
}

/// The RFC 5780 addresses as bound.
struct Alternate {
    proto: turnd_proto::server::StunAlternate,
    /// The sockets bound besides the listen ones, in each worker's order.
    extra: Vec<SocketAddr>,
}

/// Raises the open-file limit and fits the connection caps into it ([`crate::fdlimit`]),
/// logging both.
fn fit_fd_limit(config: &Config) -> crate::fdlimit::Plan {
    let demand = crate::fdlimit::Demand::from_config(config);
    let limit = match crate::fdlimit::raise() {
        Ok(l) => {
            if l.soft > l.before {
                tracing::info!(
                    from = l.before,
                    to = l.soft,
                    "raised the open-file limit (RLIMIT_NOFILE)"
                );
            }
            l.soft
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit (RLIMIT_NOFILE)");
            u64::MAX
        }
    };
    let plan = crate::fdlimit::plan(limit, &demand);
    if plan.lowered {
        tracing::warn!(
            limit,
            needed = plan.needed,
            http_max_connections = plan.http_max_connections,
            max_connections = plan.max_connections,
            relay_sockets = plan.relay_fits,
            "the open-file limit is too low for the configured caps: connection caps lowered so \
             the relay keeps its sockets (raise `ulimit -n`, or lower http_max_connections, \
             max_connections, max_allocations)"
        );
    }
    if plan.relay_fits < demand.relay {
        tracing::warn!(
            limit,
            relay_sockets = plan.relay_fits,
            wanted = demand.relay,
            "the open-file limit leaves room for fewer relay sockets than allocations may need: \
             Allocate beyond that gets 508"
        );
    }
    plan
}

/// Binds and starts the relay.
pub fn start(config: &Config) -> Result<Running> {
    // Opened first: a usage log that cannot be written fails start-up before anything binds.
    let usage_log = config
        .usage_log
        .clone()
        .map(crate::events::usage_log::UsageLog::start)
        .transpose()?;
    // Certificates are read before anything is bound: a bad file fails start-up cleanly.
    let acme = config.acme.as_ref().map(|c| {
        let challenges = Arc::new(crate::acme::challenges::Challenges::default());
        let store = CertStore::for_acme(challenges.clone());
        // A valid cached certificate is served from the first handshake, and no order is made
        // until its renewal time.
        crate::acme::manager::load_cached(c, &store);
        Arc::new(crate::acme::Acme {
            config: c.clone(),
            status: Default::default(),
            challenges,
            store,
        })
    });
    let certs = match (&config.tls_files, &acme) {
        (Some((cert, key)), _) => Some(CertStore::load(cert, key)?),
        (None, Some(a)) => Some(a.store.clone()),
        (None, None) => None,
    };
    let tls_config = certs.clone().map(crate::tls::server_config).transpose()?;
    let fds = fit_fd_limit(config);
    let (udp, tls, sockets, alternate) = bind_listeners(config)?;
    // After the listeners bound (a bad address fails first); where XDP cannot attach, the
    // reason is logged and the relay runs in userspace.
    let fast_path = config.fast_path.as_deref().and_then(|interfaces| {
        let ipv6 = config.relay_v6.is_some() || udp.iter().any(|a| a.is_ipv6());
        crate::fast_path::FastPath::start(interfaces, ipv6)
    });
    let mut udp_listeners = udp.clone();
    if let Some(a) = &alternate {
        udp_listeners.extend(&a.extra);
        tracing::info!(primary = %a.proto.primary, alternate = %a.proto.alternate, "RFC 5780 NAT behaviour discovery on (stun_alternate)");
        // OTHER-ADDRESS and the alternate STUN URL carry the host's own addresses: behind a 1:1
        // NAT (external_ip, a cloud VM) clients would be sent to a private address.
        let behind_nat = [config.relay_v4, config.relay_v6]
            .iter()
            .flatten()
            .any(|r| r.bind != r.advertised);
        if behind_nat {
            tracing::warn!(alternate = %a.proto.alternate, "stun_alternate with external_ip: OTHER-ADDRESS and the alternate STUN URL name this host's own address, which clients behind the 1:1 NAT cannot reach; RFC 5780 discovery needs two addresses the clients reach directly");
        }
    }
    let ledger = Arc::new(
        Ledger::new(config.user_quota, config.max_allocations)
            .with_address_quota(config.max_allocations_per_address),
    );
    // The TCP/TLS cap as the descriptor plan allows (it only ever lowers the configured one).
    let connections = Arc::new(ConnLimits::new(
        fds.max_connections,
        config.max_connections_per_ip,
        config.ipv6_source_prefix,
    ));
    let edge_limits = crate::http::edge::EdgeLimits::from_config(config, fds.http_max_connections);
    let edge_stats = Arc::new(crate::http::edge::EdgeStats::default());
    let shutdown = Arc::new(AtomicBool::new(false));
    let mut nonce_key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce_key);
    let mut workers = Vec::new();
    let mut threads = Vec::new();
    let workers_running = Arc::new(AtomicUsize::new(0));
    let probe = Arc::new(crate::selftest::probe::ProbeState::default());
    for (i, sockets) in sockets.into_iter().enumerate() {
        let server_config = ServerConfig {
            realm: config.realm.clone(),
            credentials: credentials(config),
            policy: policy(config),
            relay_v4: config.relay_v4,
            relay_v6: config.relay_v6,
            ports: PortShard {
                range: config.relay_ports.clone(),
                worker: i as u16,
                workers: config.workers as u16,
            },
            max_permissions: config.max_permissions,
            max_channels: config.max_channels,
            legacy_channel_numbers: config.legacy_channel_numbers,
            nonce_key,
            nonce_lifetime_secs: 600,
            seed: rand::rngs::OsRng.next_u64(),
            error_rate_per_source: config.error_rate_per_source,
            ipv6_source_prefix: config.ipv6_source_prefix,
            stun_alternate: alternate.as_ref().map(|a| a.proto),
            udp_listeners: udp_listeners.clone(),
            fast_path: fast_path.is_some(),
        };
        let server = Server::new(server_config, ledger.clone());
        let streams = StreamSetup {
            listeners: sockets.streams,
            tls: tls_config.clone(),
            limits: connections.clone(),
            idle_timeout: config.tcp_idle_timeout,
            handshake_timeout: config.tls_handshake_timeout,
        };
        let events = crate::events::EventSink::new(
            i,
            &config.realm,
            usage_log.as_ref().and_then(|u| u.sender()),
        );
        let routes = crate::fast_path::WorkerRoutes::new(fast_path.clone());
        let (worker, handle) = Worker::new(
            server,
            sockets.udp,
            streams,
            shutdown.clone(),
            events,
            routes,
        )?;
        workers.push(handle);
        let running = workers_running.clone();
        running.fetch_add(1, Ordering::Relaxed);
        threads.push(
            std::thread::Builder::new()
                .name(format!("turnd-worker-{i}"))
                .spawn(move || {
                    // Counted down however the loop ends, panics included: /readyz sees it.
                    let _alive = RunningGuard(running);
                    worker.run();
                })
                .context("cannot start a worker thread")?,
        );
    }
    // IPv4 and IPv6 listeners usually share a port: list each port once.
    let ports = |a: &[SocketAddr]| {
        let mut p: Vec<u16> = a.iter().map(|a| a.port()).collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    let listeners = crate::uris::Listeners {
        udp: ports(&udp),
        tcp: ports(&udp),
        tls: ports(&tls),
        stun_alternate: alternate
            .as_ref()
            .filter(|_| config.stun_alternate_url)
            .map(|a| a.proto.alternate),
    };
    let live = crate::reload::Live::new(crate::reload::LiveSettings::from_config(config));
    let (http, http_state) = match config.http_listen {
        None => (None, None),
        Some(addr) => {
            let state = Arc::new(crate::http::HttpState {
                live: live.clone(),
                hosts: config.client_hosts(),
                listeners,
                limiter: crate::http::access::RateLimiter::new(
                    config.http_rate_limit,
                    config.ipv6_source_prefix,
                ),
                workers_running: workers_running.clone(),
                workers_expected: config.workers,
                credentials_issued: Default::default(),
                probe: probe.clone(),
                ledger: ledger.clone(),
                ipv6_source_prefix: config.ipv6_source_prefix,
                acme: acme.clone(),
            });
            let server = crate::http::start(addr, state.clone(), edge_limits, edge_stats.clone())?;
            (Some(server), Some(state))
        }
    };
    // Always started: it reads `selftest_interval` from `live` (a reload may turn it on,
    // off, or change it) and idles while it is off.
    {
        let plan = crate::selftest::probe::ProbePlan {
            udp: udp.first().copied(),
            tls: tls.first().copied(),
            live: live.clone(),
            certs: certs.clone(),
        };
        threads.push(crate::selftest::probe::spawn(
            plan,
            probe.clone(),
            shutdown.clone(),
        )?);
    }
    let metrics = match config.metrics_listen {
        None => None,
        Some(addr) => {
            let sources = Arc::new(crate::metrics::Sources {
                workers: workers.iter().map(|w| w.stats.clone()).collect(),
                workers_running: workers_running.clone(),
                http: http_state.clone(),
                connections: connections.clone(),
                probe: probe.clone(),
                http_edge: edge_stats.clone(),
                certs: certs.clone(),
                acme: acme.clone(),
                usage: usage_log.as_ref().map(|u| u.counters.clone()),
                fast_path: fast_path.clone(),
            });
            let admin = Arc::new(crate::http::admin::AdminState {
                workers: workers
                    .iter()
                    .map(|w| crate::http::admin::WorkerLink {
                        slot: w.admin.clone(),
                        waker: w.waker.clone(),
                    })
                    .collect(),
                live: live.clone(),
                beyond_loopback: !addr.ip().is_loopback(),
                sources: sources.clone(),
            });
            let registry = crate::metrics::exposition::registry(sources);
            // The admin API lives here, never on http_listen (the public port).
            let app = crate::metrics::exposition::router(registry)
                .merge(crate::http::admin::router(admin));
            Some(crate::http::serve_router(
                addr,
                app,
                "metrics_listen",
                edge_limits,
                edge_stats.clone(),
            )?)
        }
    };
    // After the listeners: the TLS-ALPN-01 and HTTP-01 challenges need them up.
    if let Some(a) = &acme {
        threads.push(crate::acme::manager::spawn(
            a.config.clone(),
            a.store.clone(),
            a.challenges.clone(),
            a.status.clone(),
            shutdown.clone(),
        )?);
    }
    Ok(Running {
        acme,
        stun_alternate: alternate.as_ref().map(|a| a.proto),
        udp,
        tls,
        ledger,
        connections,
        http,
        http_state,
        metrics,
        certs,
        workers_running,
        probe,
        live,
        workers,
        threads,
        shutdown,
        usage_log,
    })
}

struct RunningGuard(Arc<AtomicUsize>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
