//! The XDP fast path in a real kernel: the program attached natively on a veth, routes
//! installed by hand through `XdpRelay` (no turnd), real UDP sockets in network namespaces
//! (tests/common/relay_topology.rs). A datagram that arrives at a socket passed the kernel's
//! UDP checksum check, so arrival proves the program's checksums.
//!
//! Needs root, ethtool, and clang for the build; skips without root unless `CI` is set.
#![cfg(feature = "xdp")]

mod common;

use common::relay_topology::{outside_v4, outside_v6, RelayTopology, RELAY_V4, RELAY_V6};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;
use turnd::fast_path::xdp::{monotonic_ns, ChannelRoute, XdpCounters, XdpRelay};

const SERVER_PORT: u16 = 3478;
const RELAY_PORT: u16 = 50_000;
const PEER_PORT: u16 = 40_000;
const CLIENT_PORT: u16 = 30_000;
/// How long a datagram that should arrive may take.
const ARRIVES_WITHIN: Duration = Duration::from_secs(2);
/// How long a socket stays silent before a test believes nothing is coming.
const SILENCE: Duration = Duration::from_millis(300);

fn relay_ip(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(RELAY_V6)
    } else {
        IpAddr::V4(RELAY_V4)
    }
}

fn outside(v6: bool, n: u8) -> IpAddr {
    if v6 {
        outside_v6(n)
    } else {
        outside_v4(n)
    }
}

/// A UDP socket bound to `addr` inside `ns`.
fn bind(ns: &common::netns::NetNs, addr: SocketAddr) -> UdpSocket {
    let s = ns.run(move || UdpSocket::bind(addr)).expect("bind");
    s.set_read_timeout(Some(ARRIVES_WITHIN)).unwrap();
    s
}

fn recv(s: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 65_536];
    match s.recv_from(&mut buf) {
        Ok((n, from)) => {
            buf.truncate(n);
            Some((buf, from))
        }
        Err(_) => None,
    }
}

fn silent(s: &UdpSocket) -> bool {
    s.set_read_timeout(Some(SILENCE)).unwrap();
    let got = recv(s);
    s.set_read_timeout(Some(ARRIVES_WITHIN)).unwrap();
    got.is_none()
}

/// RFC 8656 §12.4: channel number, length, application data, then `padding` extra bytes.
fn channel_data(channel: u16, data: &[u8], padding: usize) -> Vec<u8> {
    let mut m = channel.to_be_bytes().to_vec();
    m.extend_from_slice(&(data.len() as u16).to_be_bytes());
    m.extend_from_slice(data);
    m.extend(std::iter::repeat_n(0xA5, padding));
    m
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// One allocation's endpoints: a client and a peer in the outside namespace, the server's
/// and the relayed address in the relay namespace, each with a bound socket (the relay-side
/// sockets stand for turnd's: what the program passes lands there).
struct Endpoints {
    client: UdpSocket,
    peer: UdpSocket,
    server: UdpSocket,
    relayed: UdpSocket,
    route: ChannelRoute,
}

fn endpoints(t: &RelayTopology, client_v6: bool, peer_v6: bool, n: u8, channel: u16) -> Endpoints {
    let client_addr = SocketAddr::new(outside(client_v6, 2 * n), CLIENT_PORT + n as u16);
    let peer_addr = SocketAddr::new(outside(peer_v6, 2 * n + 1), PEER_PORT + n as u16);
    let server_addr = SocketAddr::new(relay_ip(client_v6), SERVER_PORT + n as u16);
    let relay_addr = SocketAddr::new(relay_ip(peer_v6), RELAY_PORT + n as u16);
    Endpoints {
        client: bind(&t.outside, client_addr),
        peer: bind(&t.outside, peer_addr),
        server: bind(&t.relay, server_addr),
        relayed: bind(&t.relay, relay_addr),
        route: ChannelRoute {
            client: client_addr,
            server: server_addr,
            channel,
            peer: peer_addr,
            relay: relay_addr,
            expires_ns: monotonic_ns() + 60_000_000_000,
        },
    }
}

fn attach_r0(t: &RelayTopology) -> XdpRelay {
    t.relay
        .run(|| XdpRelay::attach(&["r0".to_string()]))
        .unwrap_or_else(|e| panic!("attach on r0: {e}"))
}

impl Endpoints {
    /// Client -> peer: the peer gets the bare application data from the relayed address.
    fn to_peer_relayed(&self, data: &[u8], padding: usize) {
        let r = &self.route;
        self.client
            .send_to(&channel_data(r.channel, data, padding), r.server)
            .unwrap();
        let (got, from) = recv(&self.peer).unwrap_or_else(|| {
            panic!(
                "{} bytes (+{padding} padding) from {} on channel {:#x} never reached {}",
                data.len(),
                r.client,
                r.channel,
                r.peer
            )
        });
        assert_eq!(from, r.relay, "the peer sees the relayed address");
        assert_eq!(got, data, "the peer gets the application data only");
    }

    /// Peer -> client: the client gets ChannelData (channel, length, data) from the server.
    fn to_client_relayed(&self, data: &[u8]) {
        let r = &self.route;
        self.peer.send_to(data, r.relay).unwrap();
        let (got, from) = recv(&self.client).unwrap_or_else(|| {
            panic!(
                "{} bytes from {} never reached {}",
                data.len(),
                r.peer,
                r.client
            )
        });
        assert_eq!(from, r.server, "the client sees the server's address");
        assert_eq!(got, channel_data(r.channel, data, 0));
    }

    /// Client -> peer passed to userspace: it arrives at the server's socket as sent.
    fn to_peer_passed(&self, channel: u16, data: &[u8]) {
        let r = &self.route;
        let sent = channel_data(channel, data, 0);
        self.client.send_to(&sent, r.server).unwrap();
        let (got, from) = recv(&self.server).expect("the server's socket gets the passed packet");
        assert_eq!((got, from), (sent, r.client));
        assert!(silent(&self.peer), "nothing reached the peer");
    }

    /// Peer -> client passed to userspace: it arrives at the relayed address's socket.
    fn to_client_passed(&self, data: &[u8]) {
        let r = &self.route;
        self.peer.send_to(data, r.relay).unwrap();
        let (got, from) = recv(&self.relayed).expect("the relayed socket gets the passed packet");
        assert_eq!((got.as_slice(), from), (data, r.peer));
        assert!(silent(&self.client), "nothing reached the client");
    }
}

#[test]
fn channel_data_is_relayed_both_ways_in_every_family_pair() {
    let Some(t) = RelayTopology::create("xdpk") else {
        return;
    };
    let mut xdp = attach_r0(&t);
    let _rx = t.outside_receiver();
    let pairs = [(false, false), (true, true), (false, true), (true, false)];
    let mut total = XdpCounters::default();
    let mut all = Vec::new();
    for (n, &(client_v6, peer_v6)) in pairs.iter().enumerate() {
        let e = endpoints(&t, client_v6, peer_v6, n as u8, 0x4000 + n as u16);
        xdp.install(&e.route).unwrap();
        let mut expect = XdpCounters::default();
        // Even and odd lengths, with and without the optional padding (RFC 8656 §12.5), the
        // empty payload, and one near the veth's MTU.
        let lengths = [(100, 0), (101, 3), (1, 3), (2, 2), (0, 0), (1400, 0)];
        for (i, &(len, pad)) in lengths.iter().enumerate() {
            e.to_peer_relayed(&payload(len, i as u8), pad);
            expect.packets_to_peer += 1;
            expect.bytes_to_peer += len as u64;
        }
        for (i, len) in [100usize, 101, 1, 0, 1400].into_iter().enumerate() {
            e.to_client_relayed(&payload(len, 0x80 | i as u8));
            expect.packets_to_client += 1;
            expect.bytes_to_client += len as u64;
        }
        assert!(
            silent(&e.server) && silent(&e.relayed),
            "nothing went through userspace"
        );
        assert_eq!(
            xdp.relay_counters(e.route.relay),
            expect,
            "client IPv6 {client_v6}, peer IPv6 {peer_v6}"
        );
        total += expect;
        all.push((e, expect));
    }
    assert_eq!(xdp.totals(), total);
    // forget_relay reads, then deletes; the others' counters stay.
    let (first, counted) = &all[0];
    assert_eq!(xdp.forget_relay(first.route.relay), *counted);
    assert_eq!(
        xdp.relay_counters(first.route.relay),
        XdpCounters::default()
    );
    assert_eq!(xdp.relay_counters(all[1].0.route.relay), all[1].1);
    assert_eq!(xdp.totals(), total, "totals are not per relay");
}

/// Frames arriving on `o0` in the outside namespace, raw (AF_PACKET), to read the IP headers
/// the program wrote.
struct Sniffer(std::os::fd::OwnedFd);

impl Sniffer {
    fn on_o0(t: &RelayTopology) -> Sniffer {
        use std::os::fd::FromRawFd;
        t.outside.run(|| {
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2)/bind(2)/setsockopt(2) calls on values built here; the
            // fd is owned from the moment it exists.
            unsafe {
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32);
                assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
                let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = proto;
                sll.sll_ifindex = libc::if_nametoindex(c"o0".as_ptr()) as i32;
                let rc = libc::bind(
                    fd,
                    &sll as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(rc, 0, "bind o0: {}", std::io::Error::last_os_error());
                let tv = libc::timeval {
                    tv_sec: 2,
                    tv_usec: 0,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as u32,
                );
                Sniffer(owned)
            }
        })
    }

    /// The IP header (from the Ethernet payload on) of the next incoming UDP frame to `to`.
    fn ip_header_to(&self, to: SocketAddr) -> Vec<u8> {
        use std::os::fd::AsRawFd;
        for _ in 0..64 {
            let mut buf = [0u8; 2048];
            // SAFETY: recv into a buffer of the stated length.
            let n = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            assert!(
                n > 0,
                "no frame for {to}: {}",
                std::io::Error::last_os_error()
            );
            let ip = &buf[14..n as usize];
            let (dst, l4): (IpAddr, &[u8]) = match (ip[0] >> 4, to) {
                (4, SocketAddr::V4(_)) if ip[9] == 17 => {
                    (<[u8; 4]>::try_from(&ip[16..20]).unwrap().into(), &ip[20..])
                }
                (6, SocketAddr::V6(_)) if ip[6] == 17 => {
                    (<[u8; 16]>::try_from(&ip[24..40]).unwrap().into(), &ip[40..])
                }
                _ => continue,
            };
            if dst == to.ip() && u16::from_be_bytes([l4[2], l4[3]]) == to.port() {
                return ip.to_vec();
            }
        }
        panic!("no UDP frame for {to} among 64");
    }
}

/// What the program writes besides addresses (notes/xdp-spec.md): TTL / hop limit 64, IPv4
/// with Don't Fragment and no options; and the kernel's sockets accept the result.
#[test]
fn relayed_headers_carry_ttl_64_and_dont_fragment() {
    let Some(t) = RelayTopology::create("xdph") else {
        return;
    };
    let mut xdp = attach_r0(&t);
    let _rx = t.outside_receiver();
    let sniff = Sniffer::on_o0(&t);
    let v4 = endpoints(&t, true, false, 0, 0x4000);
    let v6 = endpoints(&t, false, true, 1, 0x4001);
    for e in [&v4, &v6] {
        xdp.install(&e.route).unwrap();
    }
    v4.to_peer_relayed(b"to an IPv4 peer", 0);
    let ip = sniff.ip_header_to(v4.route.peer);
    assert_eq!(ip[0], 0x45, "IPv4 without options");
    assert_eq!(ip[8], 64, "TTL");
    assert_eq!(
        u16::from_be_bytes([ip[6], ip[7]]),
        0x4000,
        "DF, no fragment"
    );
    v6.to_peer_relayed(b"to an IPv6 peer", 0);
    assert_eq!(sniff.ip_header_to(v6.route.peer)[7], 64, "hop limit");
    v4.to_client_relayed(b"to an IPv6 client");
    assert_eq!(sniff.ip_header_to(v4.route.client)[7], 64, "hop limit");
    v6.to_client_relayed(b"to an IPv4 client");
    let ip = sniff.ip_header_to(v6.route.client);
    assert_eq!((ip[8], u16::from_be_bytes([ip[6], ip[7]])), (64, 0x4000));
}

#[test]
fn expired_entries_and_unknown_channels_go_to_the_sockets() {
    let Some(t) = RelayTopology::create("xdpx") else {
        return;
    };
    let mut xdp = attach_r0(&t);
    let _rx = t.outside_receiver();
    for (n, v6) in [(0u8, false), (1, true)] {
        // Expired a moment ago: the program compares with bpf_ktime_get_ns itself.
        let mut expired = endpoints(&t, v6, v6, n, 0x4001);
        expired.route.expires_ns = monotonic_ns() - 1;
        xdp.install(&expired.route).unwrap();
        expired.to_peer_passed(0x4001, b"after the channel's end");
        expired.to_client_passed(b"after the permission's end");

        // A live route, and ChannelData on a channel nobody bound, from a peer port nobody
        // bound, and shaped wrong (more padding than RFC 8656 §12.5 allows over UDP).
        let live = endpoints(&t, v6, v6, n + 2, 0x4002);
        xdp.install(&live.route).unwrap();
        live.to_peer_passed(0x4003, b"unknown channel");
        let mut wrong = channel_data(0x4002, b"four bytes of padding", 4);
        live.client.send_to(&wrong, live.route.server).unwrap();
        assert_eq!(recv(&live.server).map(|(b, _)| b), Some(wrong.clone()));
        // A length beyond the datagram (the known attack RFC 8656 §12.4 implies).
        wrong = channel_data(0x4002, b"short", 0);
        wrong[3] += 1;
        live.client.send_to(&wrong, live.route.server).unwrap();
        assert_eq!(recv(&live.server).map(|(b, _)| b), Some(wrong));
        let stranger = bind(
            &t.outside,
            SocketAddr::new(live.route.peer.ip(), live.route.peer.port() + 100),
        );
        stranger
            .send_to(b"from another port", live.route.relay)
            .unwrap();
        let (got, from) = recv(&live.relayed).expect("the relayed socket gets it");
        assert_eq!(
            (got.as_slice(), from),
            (&b"from another port"[..], stranger.local_addr().unwrap())
        );
        assert!(silent(&live.peer) && silent(&live.client));
        // The live route still relays: the misses above were misses, not a broken program.
        live.to_peer_relayed(b"bound", 0);
        assert_eq!(
            xdp.relay_counters(expired.route.relay),
            XdpCounters::default()
        );
    }
    assert_eq!(
        xdp.totals().packets_to_peer,
        2,
        "only the two live datagrams"
    );
    assert_eq!(xdp.totals().packets_to_client, 0);
}

#[test]
fn remove_stops_relaying() {
    let Some(t) = RelayTopology::create("xdpr") else {
        return;
    };
    let mut xdp = attach_r0(&t);
    let _rx = t.outside_receiver();
    let e = endpoints(&t, false, true, 0, 0x4abc);
    xdp.install(&e.route).unwrap();
    e.to_peer_relayed(b"before", 0);
    e.to_client_relayed(b"before, back");
    xdp.remove(&e.route).unwrap();
    e.to_peer_passed(0x4abc, b"after");
    e.to_client_passed(b"after, back");
    xdp.remove(&e.route).expect("removing what is gone is fine");
    let once = XdpCounters {
        packets_to_peer: 1,
        bytes_to_peer: 6,
        packets_to_client: 1,
        bytes_to_client: 12,
    };
    assert_eq!(xdp.relay_counters(e.route.relay), once);
    assert_eq!(xdp.totals(), once);
}

#[test]
fn ipv6_without_forwarding_on_the_interface_goes_to_the_sockets() {
    let Some(t) = RelayTopology::create("xdp6") else {
        return;
    };
    // bpf_fib_lookup answers FWD_DISABLED for IPv6 here; the program must pass, not drop.
    t.relay.sysctl("net.ipv6.conf.r0.forwarding", "0");
    let mut xdp = attach_r0(&t);
    let _rx = t.outside_receiver();
    let e = endpoints(&t, true, true, 0, 0x4000);
    xdp.install(&e.route).unwrap();
    e.to_peer_passed(0x4000, b"no IPv6 route for XDP");
    e.to_client_passed(b"nor back");
    assert_eq!(xdp.totals(), XdpCounters::default());
}

#[test]
fn attach_names_why_it_cannot() {
    let Some(t) = RelayTopology::create("xdpa") else {
        return;
    };
    let err = t
        .relay
        .run(|| XdpRelay::attach(&["r0".to_string(), "turnd-nope0".to_string()]))
        .err()
        .expect("no such interface");
    assert_eq!(err, "interface turnd-nope0 does not exist");
    // Loopback has no driver XDP (only generic), and native mode is all the fast path uses.
    let err = t
        .relay
        .run(|| XdpRelay::attach(&["lo".to_string()]))
        .err()
        .expect("lo has no native XDP");
    assert!(err.starts_with("driver of lo has no native XDP: "), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    // A failure half-way leaves nothing attached: r0 is free again afterwards...
    let err = t
        .relay
        .run(|| XdpRelay::attach(&["r0".to_string(), "lo".to_string()]))
        .err()
        .expect("lo fails after r0 attached");
    assert!(err.starts_with("driver of lo has no native XDP"), "{err}");
    let first = attach_r0(&t);
    // ...and while it is taken, a second program is refused, saying so.
    let err = t
        .relay
        .run(|| XdpRelay::attach(&["r0".to_string()]))
        .err()
        .expect("r0 is taken");
    assert!(
        err.starts_with("another XDP program is already attached to r0"),
        "{err}"
    );
    drop(first);
    drop(attach_r0(&t));
}

/// Set in a child process: the interface it attaches to, printing the outcome.
const CHILD_ENV: &str = "TURND_XDP_CHILD_ATTACH";
const CHILD_MARK: &str = "xdp-child-attach:";

/// Capabilities decide, and say so: without CAP_BPF/CAP_NET_ADMIN attach fails naming them;
/// with exactly those two (no CAP_SYS_ADMIN, no CAP_PERFMON, as a container would grant) the
/// program loads -- the verifier is stricter then, so this proves the program is written for
/// it. The test runs itself as a child under `capsh` with a reduced bounding set.
#[test]
fn capabilities_decide_whether_xdp_attaches() {
    if let Ok(iface) = std::env::var(CHILD_ENV) {
        match XdpRelay::attach(&[iface]) {
            Ok(_) => println!("{CHILD_MARK} ok"),
            Err(e) => println!("{CHILD_MARK} err: {e}"),
        }
        return;
    }
    let Some(t) = RelayTopology::create("xdpc") else {
        return;
    };
    let child = |drop: &str| -> String {
        let exe = std::env::current_exe().unwrap();
        let out = t
            .relay
            .command("capsh")
            .arg(format!("--drop={drop}"))
            .args(["--", "-c", "exec \"$@\"", "child"])
            .arg(exe)
            .args([
                "--exact",
                "capabilities_decide_whether_xdp_attaches",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "r0")
            .output()
            .expect("capsh runs (apt-get install libcap2-bin)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .find_map(|l| l.split_once(CHILD_MARK).map(|(_, said)| said))
            .unwrap_or_else(|| {
                panic!(
                    "the child said nothing: {stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .trim()
            .to_owned()
    };
    assert_eq!(
        child("cap_bpf,cap_net_admin,cap_sys_admin,cap_perfmon"),
        "err: no CAP_BPF/CAP_NET_ADMIN (operation not permitted)"
    );
    assert_eq!(child("cap_sys_admin,cap_perfmon"), "ok");
}
