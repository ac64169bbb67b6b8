//! The topology the XDP fast path is tested and measured on (notes/xdp-spec.md): a namespace
//! `relay` holding the server (turnd, the floor forwarder or coturn) with one veth end `r0`,
//! and a namespace `outside` holding every client and peer address on the other end `o0`.
//! Every packet enters and leaves the relay through `r0`, so XDP_TX is the fast path's way out.
//!
//! Two settings on `o0` make the veth behave like a wire to a real NIC:
//! - An XDP program on `o0` ([`RelayTopology::outside_receiver`]): veth delivers frames that
//!   its peer XDP_TX'd (or redirected) only into a receive queue running NAPI. GRO on `o0`
//!   (`ethtool -K o0 gro on`, also with a down/up) was tried and does NOT do it on kernel
//!   6.18: r0 counts `xdp_tx` 1 and no error, and o0 never receives the frame. An XDP program
//!   on `o0` does. The program is turnd's own with empty maps, so every lookup misses and every
//!   frame is XDP_PASS; it must be attached for any run that compares against the fast path,
//!   so that every relay is measured over the same receive path.
//! - Transmit checksum offload off (`ethtool -K o0 tx off`): otherwise the outside's sockets
//!   leave UDP checksums partial (only the pseudo-header sum, for "hardware" to finish), and a
//!   frame the XDP program turns around carries that unfinished sum to the receiver, which
//!   drops it. A real network delivers finished checksums, which is what the program expects.
//!
//! IPv6 forwarding on `r0` (`net.ipv6.conf.r0.forwarding=1`): the program's bpf_fib_lookup
//! refuses IPv6 routes (BPF_FIB_LKUP_RET_FWD_DISABLED) on an interface that does not forward,
//! and the packets then go to userspace. IPv4 needs nothing of the kind.
//!
//! Static neighbour entries on both sides: the program passes a packet whose next hop has no
//! neighbour entry yet (the stack then resolves it), and a test must not depend on that.

use super::netns::NetNs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;

/// The relay's addresses on `r0`.
pub const RELAY_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const RELAY_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);

/// How many client/peer addresses of each family the outside has (10.77.0.2.., fd77::2..).
pub const OUTSIDE_HOSTS: u8 = 8;

pub struct RelayTopology {
    pub relay: NetNs,
    pub outside: NetNs,
}

/// The `n`th outside IPv4 address (n from 0): 10.77.0.(2 + n).
pub fn outside_v4(n: u8) -> IpAddr {
    assert!(n < OUTSIDE_HOSTS);
    IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2 + n))
}

/// The `n`th outside IPv6 address (n from 0): fd77::(2 + n).
pub fn outside_v6(n: u8) -> IpAddr {
    assert!(n < OUTSIDE_HOSTS);
    IpAddr::V6(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2 + n as u16))
}

impl RelayTopology {
    /// Builds the two namespaces and the veth; None where namespaces cannot be made and this
    /// is not CI (see [`NetNs::create`]).
    pub fn create(tag: &str) -> Option<RelayTopology> {
        let relay = NetNs::create(&format!("{tag}-r"))?;
        let outside = NetNs::create(&format!("{tag}-o"))?;
        NetNs::veth(&relay, "r0", &outside, "o0");
        relay.ip(&["addr", "add", "10.77.0.1/24", "dev", "r0"]);
        relay.ip(&["-6", "addr", "add", "fd77::1/64", "dev", "r0", "nodad"]);
        relay.sysctl("net.ipv6.conf.r0.forwarding", "1");
        for n in 0..OUTSIDE_HOSTS {
            outside.ip(&["addr", "add", &format!("{}/24", outside_v4(n)), "dev", "o0"]);
            outside.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{}/64", outside_v6(n)),
                "dev",
                "o0",
                "nodad",
            ]);
        }
        ethtool(&outside, &["-K", "o0", "tx", "off"]);
        let o0_mac = mac(&outside, "o0");
        let r0_mac = mac(&relay, "r0");
        for n in 0..OUTSIDE_HOSTS {
            for ip in [outside_v4(n), outside_v6(n)] {
                relay.ip(&[
                    "neigh",
                    "replace",
                    &ip.to_string(),
                    "lladdr",
                    &o0_mac,
                    "dev",
                    "r0",
                    "nud",
                    "permanent",
                ]);
            }
        }
        for ip in [IpAddr::V4(RELAY_V4), IpAddr::V6(RELAY_V6)] {
            outside.ip(&[
                "neigh",
                "replace",
                &ip.to_string(),
                "lladdr",
                &r0_mac,
                "dev",
                "o0",
                "nud",
                "permanent",
            ]);
        }
        Some(RelayTopology { relay, outside })
    }

    /// Attaches turnd's XDP program, with no routes, on `o0`: it passes every frame, and gives
    /// `o0` the NAPI receive queue that frames XDP_TX'd on `r0` need (see the module doc).
    /// Keep it alive as long as the topology.
    #[cfg(feature = "xdp")]
    pub fn outside_receiver(&self) -> turnd::fast_path::xdp::XdpRelay {
        self.outside
            .run(|| turnd::fast_path::xdp::XdpRelay::attach(&["o0".to_string()]))
            .unwrap_or_else(|e| panic!("XDP on o0: {e}"))
    }
}

/// Runs `ethtool ARGS` in the namespace (Debian package `ethtool`), panicking on failure.
pub fn ethtool(ns: &NetNs, args: &[&str]) {
    let out = ns
        .command("ethtool")
        .args(args)
        .output()
        .expect("ethtool runs (apt-get install ethtool)");
    assert!(
        out.status.success(),
        "ethtool {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An interface's MAC address, read from the namespace's sysfs view through `ip -br link`.
fn mac(ns: &NetNs, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-br", "link", "show", "dev", dev])
        .output()
        .expect("ip runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no MAC for {dev} in `{text}`"))
        .to_owned()
}
