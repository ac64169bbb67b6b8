//! The fast path falls back cleanly (issue 18): where XDP cannot attach, turnd starts, says
//! why, reports `turnd_fast_path_active 0` and relays in userspace. Three real causes: the
//! capabilities dropped (capsh), an interface without native XDP (loopback has only the
//! generic hook), and an interface that does not exist. And it never outlives turnd: a killed
//! turnd leaves no program attached.
#![cfg(feature = "xdp")]

mod common;

use common::process::{free_port, rest, SECRET};
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use turnd_proto::client::Attr;
use turnd_proto::wire::Method;

/// `turnd serve` on loopback with the fast path asked for on `interface`, started through
/// `wrapper` (e.g. capsh dropping capabilities) when given; its log is collected.
struct Fallback {
    child: Child,
    udp: u16,
    metrics: u16,
    log: Arc<Mutex<String>>,
}

impl Fallback {
    fn start(interface: &str, wrapper: &[&str]) -> Fallback {
        let (udp, http, metrics) = (free_port(), free_port(), free_port());
        let turnd = env!("CARGO_BIN_EXE_turnd");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(turnd);
                c
            }
            None => Command::new(turnd),
        };
        let mut child = cmd
            .args(["serve", "--listen", &format!("127.0.0.1:{udp}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            // Below Linux's ephemeral range, where free_port's listen ports come from.
            .args(["--relay-ip", "127.0.0.1", "--relay-ports", "20000-20099"])
            .args(["--secret", SECRET, "--allow-peer", "127.0.0.0/8"])
            .args(["--fast-path", "xdp", "--fast-path-interface", interface])
            .stderr(Stdio::piped())
            .spawn()
            .expect("turnd starts");
        let log = common::process::collect_log(child.stderr.take().unwrap());
        let f = Fallback {
            child,
            udp,
            metrics,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f.log().contains("fast path") {
            assert!(
                Instant::now() < deadline,
                "no fast path line; log:\n{}",
                f.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        f
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `turnd_fast_path_active` from /metrics.
    fn active_gauge(&self) -> String {
        // The fast path's line comes before the metrics listener is up: retry a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match std::net::TcpStream::connect(("127.0.0.1", self.metrics)) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("metrics listener never came up: {e}; log:\n{}", self.log()),
            }
        };
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body.lines()
            .find(|l| l.starts_with("turnd_fast_path_active "))
            .unwrap_or_else(|| panic!("no turnd_fast_path_active in\n{body}"))
            .to_owned()
    }

    /// A UDP client relays ChannelData to a loopback peer and back: userspace still works.
    fn relays_in_userspace(&self) {
        let server: SocketAddr = ([127, 0, 0, 1], self.udp).into();
        let (user, pass) = rest("fallback");
        let mut c = common::UdpTurnClient::new(server, &user, &pass);
        let relayed = c.allocate();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let r = c.request(
            Method::CHANNEL_BIND,
            &[
                Attr::Peer(peer.local_addr().unwrap()),
                Attr::Channel(0x4000),
            ],
        );
        assert_eq!(common::UdpTurnClient::code(&r), None, "ChannelBind");
        c.sock
            .send_to(&[0x40, 0x00, 0x00, 0x03, 7, 8, 9], server)
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).expect("the peer gets the payload");
        assert_eq!((&buf[..n], from), (&[7u8, 8, 9][..], relayed));
        peer.send_to(b"back", relayed).unwrap();
        let (n, _) = c
            .sock
            .recv_from(&mut buf)
            .expect("the client gets ChannelData");
        assert_eq!(&buf[..n], b"\x40\x00\x00\x04back");
    }
}

impl Drop for Fallback {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Root is needed for the other two causes to be the reason (a non-root run fails on
/// capabilities first); CI runs as root.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(std::env::var_os("CI").is_none(), "CI must run this as root");
        eprintln!("skipped: needs root");
    }
    root
}

fn falls_back(f: &Fallback, reason: &str) {
    let log = f.log();
    let line = log
        .lines()
        .find(|l| l.contains("fast path off:"))
        .unwrap_or_else(|| panic!("no `fast path off:` line; log:\n{log}"));
    assert!(line.contains(reason), "`{reason}` not in: {line}");
    assert_eq!(f.active_gauge(), "turnd_fast_path_active 0");
    f.relays_in_userspace();
}

#[test]
fn without_cap_bpf_and_cap_net_admin_turnd_says_so_and_relays_in_userspace() {
    if !is_root() {
        return;
    }
    let drop = "--drop=cap_bpf,cap_net_admin,cap_sys_admin,cap_perfmon";
    let f = Fallback::start("lo", &["capsh", drop, "--", "-c", "exec \"$0\" \"$@\""]);
    falls_back(&f, "CAP_BPF");
}

#[test]
fn an_interface_without_native_xdp_falls_back() {
    if !is_root() {
        return;
    }
    // Loopback has XDP only in generic (skb) mode; the fast path wants the driver's hook.
    let f = Fallback::start("lo", &[]);
    falls_back(&f, "native XDP");
}

#[test]
fn an_interface_that_does_not_exist_falls_back() {
    if !is_root() {
        return;
    }
    let f = Fallback::start("nosuchif0", &[]);
    falls_back(&f, "nosuchif0");
}

/// `turnd serve` with the fast path on `r0` inside the topology's `relay` namespace; returns
/// the child and its log once it has said whether the fast path is on.
fn serve_in_relay(topo: &common::relay_topology::RelayTopology) -> (Child, Arc<Mutex<String>>) {
    let mut child = topo
        .relay
        .command(env!("CARGO_BIN_EXE_turnd"))
        .args([
            "serve",
            "--listen",
            "10.77.0.1:3478",
            "--relay-ip",
            "10.77.0.1",
        ])
        .args(["--http-listen", "127.0.0.1:8080", "--metrics-listen", "off"])
        .args(["--secret", SECRET, "--allow-peer", "10.77.0.0/24"])
        .args(["--fast-path", "xdp", "--fast-path-interface", "r0"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("turnd starts");
    let log = common::process::collect_log(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.lock().unwrap().contains("fast path") {
        assert!(
            Instant::now() < deadline,
            "no fast path line; log:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, log)
}

/// Whether an XDP program is attached to `r0` (as `ip link` shows it).
fn r0_has_xdp(topo: &common::relay_topology::RelayTopology) -> bool {
    let out = Command::new("ip")
        .args(["-n", &topo.relay.name, "link", "show", "dev", "r0"])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

/// The program is attached through a BPF link owned by the process: a turnd that is killed
/// (no chance to clean up) leaves nothing attached, so its stale routes cannot relay and the
/// next turnd attaches instead of finding the interface taken.
#[test]
fn a_killed_turnd_leaves_no_program_behind_and_the_next_one_attaches() {
    if !is_root() {
        return;
    }
    let Some(topo) = common::relay_topology::RelayTopology::create("fpkill") else {
        return;
    };
    for round in 0..2 {
        let (mut child, log) = serve_in_relay(&topo);
        assert!(
            log.lock().unwrap().contains("fast path on"),
            "round {round}: {}",
            log.lock().unwrap()
        );
        assert!(r0_has_xdp(&topo), "round {round}: attached while it runs");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while r0_has_xdp(&topo) {
            assert!(
                Instant::now() < deadline,
                "round {round}: still attached after SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
