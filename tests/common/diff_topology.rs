//! The XDP fast path's test topology (docs: /work/notes/xdp-spec.md, "Test topology"): a
//! namespace `relay` running turnd, joined by one veth pair `r0` <-> `o0` to a namespace
//! `outside` that holds every client and peer address. Clients and peers share `o0`, so
//! relayed packets come in and leave through `r0` (XDP_TX is the fast path's way out).
//!
//! Addresses: relay side 10.77.0.1/24 and fd77::1/64; `outside` 10.77.0.2/24 and fd77::2/64
//! plus whatever the test adds with [`Topology::add_outside`]. IPv6 addresses are `nodad`, so
//! they are usable at once (duplicate address detection would hold them tentative ~1 s).
//!
//! What `o0` needs for relayed packets to come back (measured on this kernel, 6.18, with a
//! reflector program on `r0` that XDP_TX'd UDP with addresses swapped):
//! - NAPI: a veth delivers frames its peer's XDP program sends back (XDP_TX) or redirects to
//!   it only when the receiving end runs NAPI. With nothing on `o0` they are counted as
//!   `rx_queue_0_xdp_tx_errors` on `r0` and dropped. `ethtool -K o0 gro on` (said to enable
//!   veth NAPI without XDP) did not help here: `r0` counted them as `xdp_tx`, `o0` never
//!   received them. What works is a trivial XDP_PASS program on `o0`, loaded here from two
//!   instructions with the bpf(2) syscall (no clang, no object file) and attached in native
//!   mode with a BPF link that lives as long as the [`Topology`].
//! - Full UDP checksums: a socket's datagram crosses a veth with checksum offload pending
//!   (CHECKSUM_PARTIAL: the checksum field holds only the pseudo-header sum, the skb says the
//!   rest is to be done). XDP sees the bytes only; relayed from there, as is or with the
//!   checksum updated incrementally, the packet reaches its receiver with a wrong checksum and
//!   is dropped (`UdpInCsumErrors`, measured with the reflector). A real NIC never hands XDP
//!   such a packet, so `o0` has transmit checksum offload off (`ethtool -K o0 tx off`): the
//!   outside computes full checksums, as a remote host would.
//!
//! - IPv6 forwarding on `r0` (`net.ipv6.conf.r0.forwarding=1`): bpf_fib_lookup refuses IPv6
//!   on an interface that does not forward (BPF_FIB_LKUP_RET_FWD_DISABLED) and the program
//!   passes every IPv6 packet to userspace (tests/common/relay_topology.rs found the same).
//!
//! Neighbour entries are left to the kernel (unlike relay_topology.rs's static ones): a
//! packet whose next hop is not resolved yet goes to userspace, which resolves it; what
//! arrives must be the same either way, and the fast path's share is checked loosely.
//!
//! Not in `common/mod.rs` (every test binary would build it): a test includes it with
//! `#[path = "common/diff_topology.rs"] mod diff_topology;` next to `mod common;`.
//!
//! Everything lives in the two namespaces made here (deleted on drop, also on panic), so no
//! packet can reach the machine's own network.

use crate::common::netns::NetNs;
use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The relay namespace's address on `r0`, IPv4.
pub const RELAY_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The relay namespace's address on `r0`, IPv6.
pub const RELAY_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
/// The interface turnd sees (and the fast path attaches to).
pub const RELAY_IFACE: &str = "r0";
/// The `outside` end of the veth.
pub const OUTSIDE_IFACE: &str = "o0";
/// turnd's HTTP service (readiness) inside `relay`: the namespace is private, so a fixed
/// loopback port cannot collide with anything.
pub const HTTP_PORT: u16 = 8080;
/// turnd's metrics listener inside `relay`.
pub const METRICS_PORT: u16 = 9641;

/// Both namespaces and the veth between them.
pub struct Topology {
    /// The XDP_PASS program's link on `o0`, closed (detached) first: fields drop in order.
    _napi: OwnedFd,
    pub relay: NetNs,
    pub outside: NetNs,
}

impl Topology {
    /// Builds the topology; None (the test skips) where namespaces cannot be made and this is
    /// not CI (see [`NetNs::create`]).
    pub fn create(tag: &str) -> Option<Topology> {
        let relay = NetNs::create(&format!("{tag}-r"))?;
        let outside = NetNs::create(&format!("{tag}-o"))?;
        NetNs::veth(&relay, RELAY_IFACE, &outside, OUTSIDE_IFACE);
        relay.ip(&["addr", "add", "10.77.0.1/24", "dev", RELAY_IFACE]);
        relay.ip(&[
            "-6",
            "addr",
            "add",
            "fd77::1/64",
            "dev",
            RELAY_IFACE,
            "nodad",
        ]);
        relay.sysctl(&format!("net.ipv6.conf.{RELAY_IFACE}.forwarding"), "1");
        outside.ip(&["addr", "add", "10.77.0.2/24", "dev", OUTSIDE_IFACE]);
        outside.ip(&[
            "-6",
            "addr",
            "add",
            "fd77::2/64",
            "dev",
            OUTSIDE_IFACE,
            "nodad",
        ]);
        let tx = outside
            .command("ethtool")
            .args(["-K", OUTSIDE_IFACE, "tx", "off"])
            .output()
            .expect("ethtool runs");
        assert!(
            tx.status.success(),
            "ethtool -K {OUTSIDE_IFACE} tx off: {}",
            String::from_utf8_lossy(&tx.stderr)
        );
        let napi = outside.run(|| xdp_pass_link(OUTSIDE_IFACE));
        Some(Topology {
            _napi: napi,
            relay,
            outside,
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
            .args(["-n", &self.outside.name, "-batch", "-"])
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
        self.outside.run(move || {
            addrs
                .iter()
                .map(|a| UdpSocket::bind(a).unwrap_or_else(|e| panic!("bind {a}: {e}")))
                .collect()
        })
    }

    /// Runs `f` inside `relay` (e.g. an HTTP GET to turnd's loopback listeners).
    pub fn in_relay<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.relay.run(f)
    }

    /// `/proc/net/snmp` of `relay`: UDP datagrams its sockets received (IPv4 and IPv6), the
    /// count the fast path must keep down (relayed ChannelData never reaches a socket).
    pub fn relay_udp_in_datagrams(&self) -> u64 {
        udp_in_datagrams(&self.relay.name)
    }

    /// Starts `turnd serve ARGS` inside `relay` with `env`, its HTTP service on
    /// 127.0.0.1:[`HTTP_PORT`] and metrics on 127.0.0.1:[`METRICS_PORT`] (of that namespace),
    /// and waits until /readyz answers 200.
    pub fn start_turnd(&self, args: &[String], env: &[(&str, String)]) -> RelayTurnd {
        let mut child = self
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
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
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
        let r = self.in_relay(|| {
            crate::common::get(SocketAddr::from(([127, 0, 0, 1], METRICS_PORT)), "/metrics")
        });
        assert_eq!(r.status, 200, "/metrics: {}", r.body);
        r.body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
            .collect()
    }
}

/// Loads `r0 = XDP_PASS; exit` and attaches it in native (driver) mode to `iface` of the
/// calling thread's namespace with a BPF link (bpf(2): BPF_PROG_LOAD, BPF_LINK_CREATE; the
/// `union bpf_attr` offsets are those of linux/bpf.h). Returns the link.
fn xdp_pass_link(iface: &str) -> OwnedFd {
    const BPF_PROG_LOAD: i64 = 5;
    const BPF_LINK_CREATE: i64 = 28;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_XDP: u32 = 37;
    const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
    const XDP_PASS: i32 = 2;
    // struct bpf_insn: code, dst/src registers, offset, immediate.
    let insn = |code: u8, imm: i32| -> [u8; 8] {
        let i = imm.to_le_bytes();
        [code, 0, 0, 0, i[0], i[1], i[2], i[3]]
    };
    // BPF_ALU64 | BPF_MOV | BPF_K into r0, then BPF_JMP | BPF_EXIT.
    let prog: [[u8; 8]; 2] = [insn(0xb7, XDP_PASS), insn(0x95, 0)];
    let license = b"GPL\0";
    let bpf = |cmd: i64, attr: &mut [u8; 144]| -> i32 {
        // SAFETY: attr is a zero-filled union bpf_attr of the size passed; the pointers in it
        // point to live buffers for the duration of the call.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
        assert!(
            rc >= 0,
            "bpf({cmd}) for the XDP_PASS program on {iface}: {}",
            std::io::Error::last_os_error()
        );
        rc as i32
    };
    let put = |attr: &mut [u8; 144], at: usize, bytes: &[u8]| {
        attr[at..at + bytes.len()].copy_from_slice(bytes)
    };
    let mut load = [0u8; 144];
    put(&mut load, 0, &BPF_PROG_TYPE_XDP.to_ne_bytes());
    put(&mut load, 4, &(prog.len() as u32).to_ne_bytes());
    put(&mut load, 8, &(prog.as_ptr() as u64).to_ne_bytes());
    put(&mut load, 16, &(license.as_ptr() as u64).to_ne_bytes());
    put(&mut load, 68, &BPF_XDP.to_ne_bytes());
    // SAFETY: a new fd the kernel just returned, owned here alone.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(bpf(BPF_PROG_LOAD, &mut load)) };
    let name = std::ffi::CString::new(iface).unwrap();
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(ifindex, 0, "no interface {iface}");
    let mut link = [0u8; 144];
    put(
        &mut link,
        0,
        &(std::os::fd::AsRawFd::as_raw_fd(&prog_fd) as u32).to_ne_bytes(),
    );
    put(&mut link, 4, &ifindex.to_ne_bytes());
    put(&mut link, 8, &BPF_XDP.to_ne_bytes());
    put(&mut link, 12, &XDP_FLAGS_DRV_MODE.to_ne_bytes());
    // SAFETY: as above; the link holds the program, so its own fd may close.
    unsafe { OwnedFd::from_raw_fd(bpf(BPF_LINK_CREATE, &mut link)) }
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
