//! The veth group's network, issue 18's test topology: a namespace "relay" (the server under
//! test) joined by one veth pair, `r0` <-> `o0`, to a namespace "outside" holding the load
//! generator's client and peer addresses. Packets from the clients come in on `r0` and relayed
//! ones leave through `r0` again, so an XDP program on `r0` relays with XDP_TX.
//!
//!   relay:   r0  10.77.0.1/24  fd77::1/64      the server listens and relays here
//!   outside: o0  10.77.0.2/24  (the clients)   10.77.0.3/24 (the peer)  fd77::2/64
//!
//! A veth delivers XDP_TX'd (and redirected) frames only when the receiving end runs NAPI: an
//! XDP program of its own, or GRO. `o0` gets GRO (`ethtool -K o0 gro on`), which needs no BPF
//! object and changes nothing else the benchmark measures: every server sends through the same
//! `o0` receive path.
//!
//! Nothing here can reach the machine's own network: each namespace starts with only a down
//! loopback and gets nothing but the veth. Names carry this process's id and a counter, so runs
//! (and other tests' namespaces) never collide; dropping the [`Topology`] deletes both, which
//! destroys the veth and any XDP program still attached to it.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
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

impl Topology {
    /// Builds both namespaces, the veth, the addresses and GRO on `o0`. Needs root,
    /// iproute2 and ethtool.
    pub fn create() -> io::Result<Topology> {
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
        run(
            "ip",
            &["netns", "exec", o, "ethtool", "-K", "o0", "gro", "on"],
        )?;
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

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.relay, &self.outside] {
            if !ns.is_empty() {
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }
}
