//! Starting the servers under test on their own cores: turnd, Debian's coturn, and the floor.
//!
//! All three listen on one port for UDP and TCP, relay from the same address and accept the
//! peer: on loopback for the loopback groups, or at the relay's address inside the veth
//! group's namespace ([`Site`]); turnd and coturn check the same REST credentials (the shared
//! secret). Each is started fresh for every group of measurements and killed when its handle
//! drops.

use crate::sys;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The secret both TURN servers derive REST credentials from.
pub const SECRET: &str = "turnd-bench-shared-secret";
/// Relay ports: room for 10,000 allocations, below the kernel's ephemeral range (32768 and
/// up), where the generator's 10,000 client sockets would otherwise take relay ports.
const MIN_PORT: u16 = 10_000;
const MAX_PORT: u16 = 29_999;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Turnd,
    Coturn,
    Floor,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Turnd, Kind::Coturn, Kind::Floor];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Turnd => "turnd",
            Kind::Coturn => "coturn",
            Kind::Floor => "floor",
        }
    }

    /// Whether the server speaks TURN (needs allocations before relaying).
    pub fn is_turn(self) -> bool {
        self != Kind::Floor
    }
}

/// Where the programs are.
#[derive(Clone)]
pub struct Programs {
    pub turnd: PathBuf,
    pub turnserver: PathBuf,
    /// This benchmark's own executable, which runs the floor.
    pub bench: PathBuf,
    pub logs: PathBuf,
}

/// A running server under test.
pub struct Running {
    pub kind: Kind,
    pub pid: u32,
    pub addr: SocketAddr,
    /// Its standard output and error.
    pub log: PathBuf,
    child: Child,
}

/// Where a server runs: its address and port, the peers turnd must allow, its network
/// namespace, and what else turnd is told.
pub struct Site {
    /// The server listens and relays on this address.
    pub ip: IpAddr,
    /// Its listen port; None: a free loopback port.
    pub port: Option<u16>,
    /// Peer ranges turnd allows despite its default policy, which refuses loopback and the
    /// private ranges (RFC 8656 §21.3; `--allow-peer`).
    pub allow_peer: Vec<String>,
    /// The network namespace (a file under /var/run/netns) it runs in; None: this one.
    pub netns: Option<PathBuf>,
    /// turnd's Prometheus listener (None: off).
    pub metrics: Option<SocketAddr>,
    /// Further arguments for turnd (the fast path's).
    pub turnd_args: Vec<String>,
    /// Names its log file apart from other sites' (empty on loopback).
    pub tag: String,
}

impl Site {
    /// The loopback groups' site: 127.0.0.1, a free port, the loopback peer allowed.
    pub fn loopback() -> Site {
        Site {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: None,
            allow_peer: vec!["127.0.0.1/32".into()],
            netns: None,
            metrics: None,
            turnd_args: Vec::new(),
            tag: String::new(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = udp.local_addr().expect("local address").port();
        // turnd refuses a listen port inside its relay range (rightly).
        if !(MIN_PORT..=MAX_PORT).contains(&port)
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

/// Starts `kind` with `workers` threads on CPUs `cpus`, relaying to `peer`.
pub fn start(
    kind: Kind,
    workers: usize,
    cpus: &str,
    peer: SocketAddr,
    programs: &Programs,
) -> std::io::Result<Running> {
    start_env(kind, workers, cpus, peer, programs, &[])
}

/// As [`start`], with environment variables for the server (`RUST_LOG` for turnd).
pub fn start_env(
    kind: Kind,
    workers: usize,
    cpus: &str,
    peer: SocketAddr,
    programs: &Programs,
    env: &[(&str, &str)],
) -> std::io::Result<Running> {
    start_at(kind, workers, cpus, peer, programs, env, &Site::loopback())
}

/// As [`start_env`], at `site`.
pub fn start_at(
    kind: Kind,
    workers: usize,
    cpus: &str,
    peer: SocketAddr,
    programs: &Programs,
    env: &[(&str, &str)],
    site: &Site,
) -> std::io::Result<Running> {
    let port = site.port.unwrap_or_else(free_port);
    let addr = SocketAddr::new(site.ip, port);
    let ip = site.ip.to_string();
    let log = programs
        .logs
        .join(format!("{}{}-{workers}.log", site.tag, kind.name()));
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cpus]);
    let w = workers.to_string();
    let listen = addr.to_string();
    match kind {
        Kind::Turnd => {
            cmd.arg(&programs.turnd).args([
                "serve",
                "--listen",
                &listen,
                "--relay-ip",
                &ip,
                "--relay-ports",
                &format!("{MIN_PORT}-{MAX_PORT}"),
            ]);
            for range in &site.allow_peer {
                cmd.args(["--allow-peer", range]);
            }
            let metrics = site.metrics.map_or("off".into(), |m| m.to_string());
            cmd.args(["--metrics-listen", &metrics]);
            cmd.args(&site.turnd_args);
            cmd.args([
                "--secret",
                SECRET,
                "--user-quota",
                "0",
                "--max-allocations",
                "100000",
                // Every benchmark client shares 127.0.0.1 (the default caps it at 64).
                "--max-allocations-per-address",
                "0",
                // Every benchmark client shares 127.0.0.1: a per-address limit on error
                // answers would throttle their 401 challenges (coturn has none).
                "--error-rate-per-source",
                "0",
                "--http-listen",
                "off",
                "--selftest-interval",
                "0",
                "--workers",
                &w,
                "--log-format",
                "json",
            ]);
        }
        Kind::Coturn => {
            let pid_file = programs.logs.join("turnserver.pid");
            cmd.arg(&programs.turnserver).args([
                "-n",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--listening-ip",
                &ip,
                "--listening-port",
                &port.to_string(),
                "--relay-ip",
                &ip,
                "--min-port",
                &MIN_PORT.to_string(),
                "--max-port",
                &MAX_PORT.to_string(),
            ]);
            if site.ip.is_loopback() {
                cmd.arg("--allow-loopback-peers");
            }
            cmd.args([
                "--use-auth-secret",
                "--static-auth-secret",
                SECRET,
                "--realm",
                "turnd-bench",
                "--relay-threads",
                &w,
                "--simple-log",
                "--log-file",
            ]);
            cmd.arg(log.with_extension("turnserver.log"));
            cmd.arg("--pidfile").arg(pid_file);
        }
        Kind::Floor => {
            cmd.arg(&programs.bench).args([
                "floor",
                "--listen",
                &listen,
                "--peer",
                &peer.to_string(),
                "--workers",
                &w,
            ]);
        }
    }
    cmd.envs(env.iter().copied());
    if let Some(netns) = &site.netns {
        let ns = std::fs::File::open(netns)?;
        // SAFETY: between fork and exec the child only calls setns, which is
        // async-signal-safe, on a descriptor it inherited open.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = std::fs::File::create(&log)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    let pid = child.id();
    let mut running = Running {
        kind,
        pid,
        addr,
        log,
        child,
    };
    wait_ready(&mut running)?;
    // taskset execs the server, so the pid is the server's own.
    Ok(running)
}

/// Waits until the server answers a STUN Binding request on UDP; fails at once if it exits.
fn wait_ready(server: &mut Running) -> std::io::Result<()> {
    // The address the kernel picks for the way there: loopback, or the veth's.
    let any: SocketAddr = match server.addr {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(any)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut req = [0u8; 20];
    req[0..2].copy_from_slice(&[0x00, 0x01]);
    req[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    req[8] = 7;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(std::io::Error::other(format!(
                "{} exited at start ({status}); its log: {}",
                server.kind.name(),
                server.log.display()
            )));
        }
        let _ = sock.send_to(&req, server.addr);
        let mut buf = [0u8; 512];
        if sock.recv(&mut buf).is_ok_and(|n| n >= 20 && buf[0] == 0x01) {
            // Threads started lazily (coturn's relay threads) should exist before any
            // window measures CPU over them.
            std::thread::sleep(Duration::from_millis(300));
            return Ok(());
        }
    }
    Err(std::io::Error::other(format!(
        "{} did not answer STUN within 10 s; its log: {}",
        server.kind.name(),
        server.log.display()
    )))
}

/// The server's resident memory in KiB.
pub fn rss(server: &Running) -> u64 {
    sys::rss_kib(server.pid)
}
