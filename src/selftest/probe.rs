//! The periodic self-probe inside `turnd serve`: every `selftest_interval` the test peer pair
//! runs against this server's own listeners (UDP, TCP, and TLS if enabled), with credentials
//! minted from its own secret. The result feeds `turnd_selftest_success`,
//! `turnd_selftest_rtt_seconds` and `/readyz` (not ready after [`FAILURES_BEFORE_UNREADY`]
//! consecutive failures), and is logged when it changes.

use super::link::Kind;
use super::{Options, Target};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Consecutive failed probes after which `/readyz` reports not ready.
pub const FAILURES_BEFORE_UNREADY: u32 = 3;

/// The latest probe result, shared with metrics and `/readyz`.
#[derive(Debug, Default)]
pub struct ProbeState {
    pub enabled: AtomicBool,
    pub runs: AtomicU64,
    pub passing: AtomicBool,
    pub consecutive_failures: AtomicU32,
    /// p50 round trip of the last passing probe, seconds, as f64 bits.
    pub rtt_bits: AtomicU64,
    pub last_cause: Mutex<Option<String>>,
}

impl ProbeState {
    pub fn rtt_seconds(&self) -> f64 {
        f64::from_bits(self.rtt_bits.load(Ordering::Relaxed))
    }
    /// Whether the probe allows the server to be called ready.
    pub fn healthy(&self) -> bool {
        !self.enabled.load(Ordering::Relaxed)
            || self.consecutive_failures.load(Ordering::Relaxed) < FAILURES_BEFORE_UNREADY
    }
}

/// Where the probe connects: a listen address, with the unspecified address replaced by
/// loopback of the same family.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// What to probe.
pub struct ProbePlan {
    pub udp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    /// The minting secret is read from here on each probe, so a rotation applies at once.
    pub live: std::sync::Arc<crate::reload::Live>,
    /// The TLS certificate: TLS is not probed while ACME has not delivered one yet (the
    /// refusal is expected and `/readyz` reports it under `acme`; UDP and TCP still count).
    pub certs: Option<std::sync::Arc<crate::tls::CertStore>>,
}

/// Runs one probe over every transport and records the result.
pub fn probe_once(plan: &ProbePlan, state: &ProbeState) {
    let opts = Options {
        timeout: Duration::from_secs(2),
        pings: 5,
        burst: 0,
        burst_size: 0,
        tls: crate::tls::unverified_client_config(),
    };
    let cred = turnd_proto::auth::mint_rest_credential(
        plan.live.get().mint_secret.as_bytes(),
        "turnd-selftest",
        crate::clock::unix_now(),
        300,
    );
    let mut targets = Vec::new();
    if let Some(a) = plan.udp {
        for kind in [Kind::Udp, Kind::Tcp] {
            targets.push((kind, reachable(a)));
        }
    }
    let tls_served = plan.certs.as_ref().is_none_or(|c| c.has_certificate());
    if let Some(a) = plan.tls.filter(|_| tls_served) {
        targets.push((Kind::Tls, reachable(a)));
    }
    let mut failure = None;
    let mut rtts = Vec::new();
    for (kind, server) in targets {
        let t = Target {
            kind,
            server,
            host: "localhost".into(),
            url: format!("{}:{server}", kind.label()),
            username: cred.username.clone(),
            password: cred.password.clone(),
        };
        let r = super::run(&t, &opts);
        if !r.pass {
            failure = Some(format!("{}: {}", kind.label(), r.cause.unwrap_or_default()));
            break;
        }
        rtts.extend(r.rtt_ms_p50);
    }
    let was_passing = state.passing.load(Ordering::Relaxed);
    let first = state.runs.fetch_add(1, Ordering::Relaxed) == 0;
    match failure {
        None => {
            let rtt = rtts.iter().copied().fold(0.0, f64::max) / 1000.0;
            state.rtt_bits.store(rtt.to_bits(), Ordering::Relaxed);
            state.consecutive_failures.store(0, Ordering::Relaxed);
            state.passing.store(true, Ordering::Relaxed);
            *state.last_cause.lock().unwrap_or_else(|e| e.into_inner()) = None;
            if first || !was_passing {
                tracing::info!(
                    rtt_ms = rtt * 1000.0,
                    "self-test passes: relayed data flows through this server"
                );
            }
        }
        Some(cause) => {
            let n = state.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
            state.passing.store(false, Ordering::Relaxed);
            let changed = state
                .last_cause
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .replace(cause.clone())
                != Some(cause.clone());
            if first || was_passing || changed {
                tracing::warn!(consecutive_failures = n, %cause, "self-test fails");
            }
        }
    }
}

/// Runs the probe every `selftest_interval` (read from `plan.live` each round, so SIGHUP can
/// change it or turn it on and off) until `stop` is set (checked every 250 ms).
pub fn spawn(
    plan: ProbePlan,
    state: Arc<ProbeState>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    state.enabled.store(
        plan.live.get().selftest_interval.is_some(),
        Ordering::Relaxed,
    );
    std::thread::Builder::new()
        .name("turnd-selftest".into())
        .spawn(move || {
            // The first probe runs soon after start (or after being turned on), so readiness
            // and metrics fill in early.
            let soon = || std::time::Instant::now() + Duration::from_millis(500);
            let mut next = soon();
            let mut was_on = true;
            while !stop.load(Ordering::Relaxed) {
                let interval = plan.live.get().selftest_interval;
                state.enabled.store(interval.is_some(), Ordering::Relaxed);
                match interval {
                    None => was_on = false,
                    Some(_) if !was_on => {
                        was_on = true;
                        next = soon();
                    }
                    Some(interval) => {
                        if std::time::Instant::now() >= next {
                            probe_once(&plan, &state);
                            next = std::time::Instant::now() + interval;
                        }
                        // A shorter interval applies at once, not after the old one ran out.
                        next = next.min(std::time::Instant::now() + interval);
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
}
