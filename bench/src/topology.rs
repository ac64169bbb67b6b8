//! The veth group's network, issue 18's test topology: a namespace "relay" (the server under
//! test) joined by one veth pair, `r0` <-> `o0`, to a namespace "outside" holding the load
//! generator's client and peer addresses. Packets from the clients come in on `r0` and relayed
//! ones leave through `r0` again, so an XDP program on `r0` relays with XDP_TX.
//!
//!   relay:   r0  10.77.0.1/24  fd77::1/64      the server listens and relays here
//!   outside: o0  10.77.0.2/24  (the clients)   10.77.0.3/24 (the peer)  fd77::2/64
//!
//! Two settings on `o0` make an XDP relay on `r0` work at all; both were found by reflecting
//! UDP with XDP_TX on `r0` (Linux 6.18):
//!
//! - A veth delivers XDP_TX'd (and redirected) frames only when the receiving end runs NAPI.
//!   GRO on `o0` is not enough: `r0` counts the frames transmitted (`rx_queue_0_xdp_tx`) and
//!   none arrives. A trivial XDP_PASS program on `o0` is, so `o0` gets one ([`xdp_pass`]); every
//!   server's relayed packets then arrive through the same path.
//! - A veth offers checksum offload, so what a socket sends through it carries only the
//!   pseudo-header sum in its UDP checksum (CHECKSUM_PARTIAL, finished by nobody). The stack
//!   on the other end trusts the skb's note, but XDP sees bytes: a relayed frame then arrives
//!   with a bad checksum and is dropped. Transmit checksum offload off on `o0` (what `ethtool
//!   -K o0 tx off` does; [`tx_checksum_off`]) makes the clients and the peer send full
//!   checksums, as any packet on a real wire has.
//!
//! `r0`'s receive work runs on the server's CPU, as a NIC's receive queue would be steered
//! to it: GRO on `r0` gives it NAPI, threaded NAPI (`/sys/class/net/r0/threaded`) polls it in
//! a kernel thread, and that thread is pinned to the server's CPU. Without this, a veth
//! processes what it receives in the softirq of the sending CPU — the load generator's — and
//! the XDP program would compete with the generator for its core in the saturation runs,
//! while a userspace relay's receive path would run there for free. With it, each relay,
//! kernel or userspace, has CPU 0 and the generator CPU 1; what the relay transmits to `o0`
//! is received (`o0`'s XDP_PASS, the peer socket) on CPU 0 as well.
//!
//! Neighbour entries are static on both ends: a relay that finds no neighbour entry for the
//! next hop hands the packet to the stack to resolve, and no row should depend on when that
//! happens.
//!
//! Nothing here can reach the machine's own network: each namespace starts with only a down
//! loopback and gets nothing but the veth. Names carry this process's id and a counter, so runs
//! (and other tests' namespaces) never collide; dropping the [`Topology`] deletes both, which
//! destroys the veth and any XDP program still attached to it.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;

/// The relay's address on `r0`.
pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The clients' address on `o0`.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The peer's address on `o0`.
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
/// The peer ranges turnd must be told to allow: its default policy refuses the private ranges
/// (10.0.0.0/8, fc00::/7) these addresses are in.
pub const ALLOW_PEER: [&str; 2] = ["10.77.0.0/24", "fd77::/64"];
/// The relay's interface, where the fast path attaches.
pub const RELAY_DEV: &str = "r0";

/// Two namespaces and the veth between them; deleted on drop.
pub struct Topology {
    pub relay: String,
    pub outside: String,
    /// The XDP_PASS program's link on `o0` (detached when closed).
    pass: Option<OwnedFd>,
}

fn run(program: &str, args: &[&str]) -> io::Result<()> {
    let out = Command::new(program).args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The MAC address of interface `dev` in namespace `ns`.
fn mac(ns: &str, dev: &str) -> io::Result<String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-br", "link", "show", dev])
        .output()?;
    // "o0@if2  UP  6a:7e:5f:9e:a1:59 <BROADCAST,...>"
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .filter(|m| m.len() == 17 && m.matches(':').count() == 5)
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other(format!("no MAC address for {dev} in {ns}")))
}

impl Topology {
    /// Builds both namespaces, the veth, the addresses, `o0`'s XDP_PASS program and full
    /// checksums, and `r0`'s receive polled on CPU `server_cpu`. Needs root and iproute2.
    pub fn create(server_cpu: usize) -> io::Result<Topology> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = std::process::id();
        let relay = format!("turnd-bench-relay-{id}-{n}");
        let outside = format!("turnd-bench-outside-{id}-{n}");
        run("ip", &["netns", "add", &relay])?;
        // From here on, a failure deletes what exists.
        let mut topo = Topology {
            relay,
            outside: String::new(),
            pass: None,
        };
        run("ip", &["netns", "add", &outside])?;
        topo.outside = outside;
        let (r, o) = (topo.relay.as_str(), topo.outside.as_str());
        let relay_v4 = format!("{RELAY_IP}/24");
        let client_v4 = format!("{CLIENT_IP}/24");
        let peer_v4 = format!("{PEER_IP}/24");
        for args in [
            &["-n", r, "link", "set", "lo", "up"][..],
            &["-n", o, "link", "set", "lo", "up"],
            &[
                "link", "add", RELAY_DEV, "netns", r, "type", "veth", "peer", "name", "o0",
                "netns", o,
            ],
            &["-n", r, "addr", "add", &relay_v4, "dev", RELAY_DEV],
            &[
                "-n",
                r,
                "addr",
                "add",
                "fd77::1/64",
                "dev",
                RELAY_DEV,
                "nodad",
            ],
            &["-n", o, "addr", "add", &client_v4, "dev", "o0"],
            &["-n", o, "addr", "add", &peer_v4, "dev", "o0"],
            &["-n", o, "addr", "add", "fd77::2/64", "dev", "o0", "nodad"],
            &["-n", r, "link", "set", RELAY_DEV, "up"],
            &["-n", o, "link", "set", "o0", "up"],
        ] {
            run("ip", args)?;
        }
        let (r0_mac, o0_mac) = (mac(r, RELAY_DEV)?, mac(o, "o0")?);
        for ip in [CLIENT_IP, PEER_IP] {
            let ip = ip.to_string();
            run(
                "ip",
                &[
                    "-n",
                    r,
                    "neigh",
                    "replace",
                    &ip,
                    "lladdr",
                    &o0_mac,
                    "dev",
                    RELAY_DEV,
                    "nud",
                    "permanent",
                ],
            )?;
        }
        let relay_ip = RELAY_IP.to_string();
        run(
            "ip",
            &[
                "-n",
                o,
                "neigh",
                "replace",
                &relay_ip,
                "lladdr",
                &r0_mac,
                "dev",
                "o0",
                "nud",
                "permanent",
            ],
        )?;
        topo.in_outside(|| ethtool_set("o0", ETHTOOL_STXCSUM, false))??;
        topo.pass = Some(topo.in_outside(|| xdp_pass("o0"))??);
        // r0 polled by a kernel thread on the server's CPU (see the module's comment).
        topo.in_relay(|| ethtool_set(RELAY_DEV, ETHTOOL_SGRO, true))??;
        run(
            "ip",
            &[
                "netns",
                "exec",
                r,
                "sh",
                "-c",
                "echo 1 > /sys/class/net/r0/threaded",
            ],
        )?;
        pin_relay_napi(&topo, server_cpu)?;
        Ok(topo)
    }

    /// The relay namespace's file, for a server to `setns` into.
    pub fn relay_path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.relay)
    }

    /// Runs `f` on a thread inside the relay namespace (sockets it makes live there).
    pub fn in_relay<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        in_namespace(&self.relay, f)
    }

    /// Runs `f` on a thread inside the outside namespace. The thread inherits this thread's
    /// CPU affinity (the load generator's CPU).
    pub fn in_outside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        in_namespace(&self.outside, f)
    }
}

fn in_namespace<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let file = std::fs::File::open(PathBuf::from("/var/run/netns").join(name))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on a namespace descriptor changes only this thread's namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other(format!("a thread in namespace {name} panicked")))?
    })
}

/// ethtool's legacy feature switches (`include/uapi/linux/ethtool.h`).
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_SGRO: u32 = 0x2c;

/// Sets one of ethtool's legacy feature switches (`cmd`, on or off) on interface `dev` of this
/// thread's namespace: the SIOCETHTOOL request `ethtool -K` makes, without ethtool.
pub fn ethtool_set(dev: &str, cmd: u32, on: bool) -> io::Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        pad: [u8; 16],
    }
    let mut value = EthtoolValue {
        cmd,
        data: u32::from(on),
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut value,
        pad: [0; 16],
    };
    if dev.len() >= libc::IFNAMSIZ {
        return Err(io::Error::other(format!("interface name too long: {dev}")));
    }
    for (d, s) in req.name.iter_mut().zip(dev.bytes()) {
        *d = s as libc::c_char;
    }
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value it points to, both live.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::other(format!("{dev}: ethtool {cmd:#x}: {e}")));
    }
    Ok(())
}

/// Finds the kernel thread that polls `r0` (threaded NAPI, "napi/r0-ID") and pins it to CPU
/// `cpu`. Other namespaces may have an `r0` too, so the thread is told by its NAPI id, which a
/// packet received through it carries (SO_INCOMING_NAPI_ID).
fn pin_relay_napi(topo: &Topology, cpu: usize) -> io::Result<()> {
    let sink = topo.in_relay(|| std::net::UdpSocket::bind((RELAY_IP, 0)))??;
    sink.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
    let to = sink.local_addr()?;
    topo.in_outside(|| {
        std::net::UdpSocket::bind((CLIENT_IP, 0)).and_then(|c| c.send_to(b"napi", to))
    })??;
    sink.recv(&mut [0u8; 16])?;
    let mut id: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `id`.
    let rc = unsafe {
        libc::getsockopt(
            sink.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_INCOMING_NAPI_ID,
            &mut id as *mut u32 as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 || id == 0 {
        return Err(io::Error::other(format!(
            "no NAPI id on a packet received through {RELAY_DEV}"
        )));
    }
    let name = format!("napi/{RELAY_DEV}-{id}");
    let pid = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .ok_or_else(|| io::Error::other(format!("no kernel thread {name}")))?;
    // SAFETY: cpu_set_t is a plain bit set; CPU_ZERO/CPU_SET only write inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::other(format!(
                "pinning {name} to CPU {cpu}: {}",
                io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// Loads a BPF program that returns XDP_PASS and attaches it to interface `dev` of this
/// thread's namespace in native mode, through a BPF link: the program stays attached while the
/// returned descriptor is open. Two bpf() calls, so the benchmark needs no clang and no object
/// file for it.
pub fn xdp_pass(dev: &str) -> io::Result<OwnedFd> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_XDP: u32 = 37;
    const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
    const XDP_PASS: u64 = 2;
    // r0 = XDP_PASS (BPF_ALU64 | BPF_MOV | BPF_K, imm in the upper half); exit.
    let insns: [u64; 2] = [0xb7 | (XDP_PASS << 32), 0x95];
    let license = c"GPL";
    /// The BPF_PROG_LOAD part of `union bpf_attr`, up to the fields used; the rest is zero.
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        rest: [u64; 12],
    }
    /// The BPF_LINK_CREATE part of `union bpf_attr`.
    #[repr(C)]
    struct LinkCreate {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
        rest: [u64; 12],
    }
    fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<OwnedFd> {
        // SAFETY: `attr` is a live, fully initialised bpf_attr prefix of the size given.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *const T,
                std::mem::size_of::<T>() as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us alone.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
    let prog = bpf(
        BPF_PROG_LOAD,
        &ProgLoad {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            rest: [0; 12],
        },
    )
    .map_err(|e| io::Error::other(format!("loading an XDP_PASS program: {e}")))?;
    let name = std::ffi::CString::new(dev).map_err(io::Error::other)?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    bpf(
        BPF_LINK_CREATE,
        &LinkCreate {
            prog_fd: prog.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: XDP_FLAGS_DRV_MODE,
            rest: [0; 12],
        },
    )
    .map_err(|e| io::Error::other(format!("attaching XDP_PASS to {dev}: {e}")))
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.pass = None;
        for ns in [&self.relay, &self.outside] {
            if !ns.is_empty() {
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    /// Datagrams cross the veth both ways between the namespaces, `o0` runs an XDP program
    /// (the XDP_PASS one, in native mode), and both namespaces go with the topology.
    #[test]
    fn the_topology_carries_udp_both_ways_through_o0s_xdp_pass() {
        // As tests/common/netns.rs: root is needed; CI runs as root, so there it never skips.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 && std::env::var_os("CI").is_none() {
            eprintln!("skipped: the veth topology needs root");
            return;
        }
        let topo = Topology::create(0).expect("the veth topology");
        let server = topo
            .in_relay(|| UdpSocket::bind(SocketAddr::from((RELAY_IP, 7))))
            .unwrap()
            .unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let echoed = topo
            .in_outside(|| {
                let client = UdpSocket::bind(SocketAddr::from((CLIENT_IP, 0))).unwrap();
                client
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                let mut buf = [0u8; 64];
                (0..5)
                    .filter(|i| {
                        client.send_to(&[*i; 32], (RELAY_IP, 7)).unwrap();
                        let Ok((n, from)) = server.recv_from(&mut buf) else {
                            return false;
                        };
                        server.send_to(&buf[..n], from).unwrap();
                        client.recv(&mut buf).is_ok_and(|n| buf[..n] == [*i; 32])
                    })
                    .count()
            })
            .unwrap();
        assert_eq!(echoed, 5);
        let link = Command::new("ip")
            .args(["-d", "-n", &topo.outside, "link", "show", "o0"])
            .output()
            .unwrap();
        let link = String::from_utf8_lossy(&link.stdout);
        assert!(link.contains("prog/xdp"), "{link}");
        let names = (topo.relay.clone(), topo.outside.clone());
        drop(topo);
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(
            !list.contains(&names.0) && !list.contains(&names.1),
            "{list}"
        );
    }
}
