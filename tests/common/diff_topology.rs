//! The differential test's view of the fast path topology (`relay_topology.rs`: namespace
//! `relay` running turnd behind veth `r0`, namespace `outside` holding every client and peer
//! address on `o0`; why `o0` carries an XDP program and has transmit checksum offload off,
//! and why `r0` forwards IPv6, is explained there). On top of it: the many client and peer
//! addresses the script adds ([`Topology::add_outside`]; their neighbour entries are left to
//! the kernel, so a packet whose next hop is not resolved yet goes to userspace, which
//! resolves it: what arrives must be the same either way), sockets in `outside`, and turnd in
//! `relay` with its log and metrics.
//!
//! Not in `common/mod.rs` (every test binary would build it): a test includes it with
//! `#[path = "common/diff_topology.rs"] mod diff_topology;` next to `mod common;`.
//!
//! Everything lives in the two namespaces made here (deleted on drop, also on panic), so no
//! packet can reach the machine's own network.

use crate::common::relay_topology::RelayTopology;
pub use crate::common::relay_topology::{RELAY_V4, RELAY_V6};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `outside` end of the veth.
pub const OUTSIDE_IFACE: &str = "o0";
/// turnd's HTTP service (readiness) inside `relay`: the namespace is private, so a fixed
/// loopback port cannot collide with anything.
pub const HTTP_PORT: u16 = 8080;
/// turnd's metrics listener inside `relay`.
pub const METRICS_PORT: u16 = 9641;

/// Both namespaces and the veth between them.
pub struct Topology {
    /// The pass-everything XDP program on `o0`, detached first: fields drop in order.
    _napi: turnd::fast_path::xdp::XdpRelay,
    pub base: RelayTopology,
}

impl Topology {
    /// Builds the topology; None (the test skips) where namespaces cannot be made and this is
    /// not CI (see `NetNs::create`).
    pub fn create(tag: &str) -> Option<Topology> {
        let base = RelayTopology::create(tag)?;
        Some(Topology {
            _napi: base.outside_receiver(),
            base,
        })
    }

    /// Adds addresses to `o0` (one `ip -batch` for all of them: a hundred `ip` runs would take
    /// a second).
    pub fn add_outside(&self, ips: &[IpAddr]) {
        let mut batch = String::new();
        for ip in ips {
            match ip {
                IpAddr::V4(a) => batch.push_str(&format!("addr add {a}/24 dev {OUTSIDE_IFACE}\n")),
                IpAddr::V6(a) => {
                    batch.push_str(&format!("addr add {a}/64 dev {OUTSIDE_IFACE} nodad\n"))
                }
            }
        }
        let mut child = Command::new("ip")
            .args(["-n", &self.base.outside.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(batch.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ip -batch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// UDP sockets bound in `outside` (made on a thread inside the namespace; a socket stays in
    /// the namespace it was made in, whichever thread uses it later).
    pub fn outside_sockets(&self, addrs: Vec<SocketAddr>) -> Vec<UdpSocket> {
        self.base.outside.run(move || {
            addrs
                .iter()
                .map(|a| UdpSocket::bind(a).unwrap_or_else(|e| panic!("bind {a}: {e}")))
                .collect()
        })
    }

    /// Runs `f` inside `relay` (e.g. an HTTP GET to turnd's loopback listeners).
    pub fn in_relay<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.base.relay.run(f)
    }

    /// `/proc/net/snmp` of `relay`: UDP datagrams its sockets received (IPv4 and IPv6), the
    /// count the fast path must keep down (relayed ChannelData never reaches a socket).
    pub fn relay_udp_in_datagrams(&self) -> u64 {
        udp_in_datagrams(&self.base.relay.name)
    }

    /// Starts `turnd serve ARGS` inside `relay` with `env`, its HTTP service on
    /// 127.0.0.1:[`HTTP_PORT`] and metrics on 127.0.0.1:[`METRICS_PORT`] (of that namespace),
    /// and waits until /readyz answers 200.
    pub fn start_turnd(&self, args: &[String], env: &[(&str, String)]) -> RelayTurnd {
        let mut child = self
            .base
            .relay
            .command(env!("CARGO_BIN_EXE_turnd"))
            .arg("serve")
            .args([
                "--http-listen",
                &format!("127.0.0.1:{HTTP_PORT}"),
                "--metrics-listen",
                &format!("127.0.0.1:{METRICS_PORT}"),
            ])
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("turnd starts");
        let log = crate::common::process::collect_log(child.stderr.take().unwrap());
        let t = RelayTurnd { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = self.in_relay(|| crate::common::process::readyz(HTTP_PORT));
            if ready == Some(200) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "turnd never became ready; its log:\n{}",
                t.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// turnd's /metrics, scraped from inside `relay`, as `series -> value`.
    pub fn scrape(&self) -> std::collections::BTreeMap<String, f64> {
        self.in_relay(|| crate::common::scrape_at(SocketAddr::from(([127, 0, 0, 1], METRICS_PORT))))
    }
}

/// UDP datagrams delivered to sockets in namespace `ns` (IPv4 and IPv6).
pub fn udp_in_datagrams(ns: &str) -> u64 {
    let read = |file: &str, key: &str| -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "cat", file])
            .output()
            .expect("cat runs");
        parse_snmp(&String::from_utf8_lossy(&out.stdout), key)
    };
    read("/proc/net/snmp", "Udp:InDatagrams") + read("/proc/net/snmp6", "Udp6InDatagrams")
}

/// A counter of `/proc/net/snmp` (`Udp:InDatagrams`: the header line names the columns) or
/// `/proc/net/snmp6` (`Udp6InDatagrams value`); 0 when absent.
fn parse_snmp(text: &str, key: &str) -> u64 {
    if let Some((table, column)) = key.split_once(':') {
        let prefix = format!("{table}:");
        let mut rows = text.lines().filter(|l| l.starts_with(&prefix));
        let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
            return 0;
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == column)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    } else {
        text.lines()
            .filter_map(|l| l.split_once(char::is_whitespace))
            .find(|(n, _)| *n == key)
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// turnd running in `relay`, killed when dropped (a failing test leaves no process behind).
pub struct RelayTurnd {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl RelayTurnd {
    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Stops it with SIGTERM (allocations still live end as `shutdown`/`drained` and their
    /// usage records are written) and waits, at most 10 s, for it to exit.
    pub fn stop(mut self) {
        // SAFETY: a signal to our own child process (`ip netns exec` execs turnd in place).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "turnd did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RelayTurnd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn snmp_counters_parse() {
    let snmp = "Udp: InDatagrams NoPorts\nUdp: 42 7\nUdpLite: InDatagrams\nUdpLite: 0\n";
    assert_eq!(parse_snmp(snmp, "Udp:InDatagrams"), 42);
    assert_eq!(parse_snmp(snmp, "Udp:NoPorts"), 7);
    assert_eq!(parse_snmp("Udp6InDatagrams   \t 9\n", "Udp6InDatagrams"), 9);
    assert_eq!(parse_snmp("", "Udp6InDatagrams"), 0);
}
