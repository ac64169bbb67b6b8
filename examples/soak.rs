//! Soak: a bounded long run of allocation churn plus relayed traffic against a real `turnd
//! serve` process, watching its memory and open files. Not part of the test suite (it takes
//! ten minutes by default); `scripts/soak.sh` builds and runs it, CI runs it for 20 seconds to
//! prove it still works.
//!
//! Each of `--clients` threads loops until the time is up: Allocate, CreatePermission and
//! ChannelBind towards its own echo peer on loopback, 50 ChannelData messages and 50 Send
//! indications echoed back through the relay, then Refresh 0 (delete). Every few seconds the
//! server's RSS and open file descriptors are sampled. It fails (exit 1) on any refused request,
//! more than 1% of relayed messages lost, RSS growing more than 4 MiB between the first sample
//! after warm-up and the end, or file descriptors left open once every client has gone.
//!
//! Usage: soak [--seconds N] [--clients N] [--turnd PATH]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use turnd::selftest::link::{Kind, Link};
use turnd::selftest::peer::{Peer, RequestError};

const SECRET: &str = "soak-test-shared-secret";
const MESSAGES: usize = 50;
/// The channel each client binds to its echo peer.
const CHANNEL: u16 = 0x4000;

#[derive(Default)]
struct Totals {
    cycles: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

struct Turnd(Child);

impl Drop for Turnd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How long a request may wait for its answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// A client: the self-test's TURN peer (turnd-proto's client transaction over a UDP link).
fn client(server: SocketAddr) -> Peer {
    let link = Link::open(Kind::Udp, server, None, ANSWER_WITHIN).expect("a UDP socket");
    Peer::new(link, "", "")
}

/// One cycle: allocate, open the way to the echo peer, relay, delete. A new credential each
/// time, with the realm and nonce learned before (as a client does: nonces last 600 s), so
/// only the first cycle is challenged.
/// A refused or unanswered request, named.
fn failed(what: &'static str) -> impl Fn(RequestError) -> String {
    move |e| format!("{what}: {e:?}")
}

fn cycle(c: &mut Peer, peer: &UdpSocket, totals: &Totals, deadline: Instant) -> Result<(), String> {
    let cred = turnd_proto::auth::mint_rest_credential(
        SECRET.as_bytes(),
        "soak",
        turnd::clock::unix_now(),
        600,
    );
    c.auth.username = cred.username;
    c.auth.password = cred.password;
    let relayed = c.allocate(ANSWER_WITHIN).map_err(failed("Allocate"))?;
    let peer_addr = peer.local_addr().unwrap();
    c.create_permission(peer_addr, ANSWER_WITHIN)
        .map_err(failed("CreatePermission"))?;
    c.channel_bind(CHANNEL, peer_addr, ANSWER_WITHIN)
        .map_err(failed("ChannelBind"))?;
    let payload = [0x5Au8; 100];
    for i in 0..2 * MESSAGES {
        if Instant::now() > deadline + Duration::from_secs(5) {
            break;
        }
        let sent = if i % 2 == 0 {
            c.send_channel(CHANNEL, &payload)
        } else {
            c.send_indication(peer_addr, &payload)
        };
        sent.map_err(|e| e.to_string())?;
        totals.sent.fetch_add(1, Ordering::Relaxed);
        // The peer echoes to the relayed address; the echo comes back as ChannelData.
        let mut buf = [0u8; 1500];
        if let Ok((n, from)) = peer.recv_from(&mut buf) {
            if from == relayed {
                let _ = peer.send_to(&buf[..n], relayed);
            }
        }
        if c.recv_data(Instant::now() + ANSWER_WITHIN)
            .is_some_and(|r| r.data == payload)
        {
            totals.received.fetch_add(1, Ordering::Relaxed);
        }
    }
    c.refresh(0, ANSWER_WITHIN).map_err(failed("Refresh"))?;
    totals.cycles.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn main() {
    let seconds: u64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(600);
    let clients: usize = arg("--clients").and_then(|s| s.parse().ok()).unwrap_or(16);
    let turnd_path = arg("--turnd")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            // examples live in target/<profile>/examples/, the binary in target/<profile>/.
            let exe = std::env::current_exe().unwrap();
            exe.parent().unwrap().parent().unwrap().join("turnd")
        });
    let port = free_port();
    let child = Command::new(&turnd_path)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--relay-ip", "127.0.0.1", "--relay-ports", "21000-24999"])
        .args([
            "--allow-peer",
            "127.0.0.1/32",
            "--secret",
            SECRET,
            "--user-quota",
            "0",
        ])
        .args([
            "--http-listen",
            "off",
            "--metrics-listen",
            "off",
            "--selftest-interval",
            "0",
        ])
        .args(["--workers", "2", "--log-format", "json"])
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", turnd_path.display()));
    let mut turnd = Turnd(child);
    let pid = turnd.0.id();
    std::thread::sleep(Duration::from_millis(500));
    if let Ok(Some(status)) = turnd.0.try_wait() {
        eprintln!(
            "soak: turnd exited at start ({status}); run it by hand with the same flags to see why"
        );
        std::process::exit(1);
    }
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let fds_idle = open_fds(pid);

    let totals = Arc::new(Totals::default());
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (totals, stop) = (totals.clone(), stop.clone());
            std::thread::spawn(move || {
                let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
                peer.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let mut c = client(server);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if let Err(e) = cycle(&mut c, &peer, &totals, deadline) {
                        eprintln!("soak: {e}");
                        totals.errors.fetch_add(1, Ordering::Relaxed);
                        // A fresh 5-tuple (the old client releases what it still holds).
                        c = client(server);
                    }
                }
            })
        })
        .collect();

    let warm_up = Duration::from_secs((seconds / 10).clamp(2, 60));
    let sample_every = Duration::from_secs((seconds / 20).clamp(1, 30));
    let started = Instant::now();
    let mut first_rss = None;
    let mut last_rss = 0;
    println!(
        "{:>7} {:>9} {:>8} {:>10} {:>8}",
        "seconds", "cycles", "rss_kib", "relayed", "fds"
    );
    while Instant::now() < deadline {
        std::thread::sleep(sample_every.min(deadline.saturating_duration_since(Instant::now())));
        last_rss = proc_status(pid, "VmRSS:");
        if started.elapsed() >= warm_up && first_rss.is_none() {
            first_rss = Some(last_rss);
        }
        println!(
            "{:>7} {:>9} {:>8} {:>10} {:>8}",
            started.elapsed().as_secs(),
            totals.cycles.load(Ordering::Relaxed),
            last_rss,
            totals.received.load(Ordering::Relaxed),
            open_fds(pid)
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    std::thread::sleep(Duration::from_millis(300));
    let fds_end = open_fds(pid);
    let (sent, received) = (
        totals.sent.load(Ordering::Relaxed),
        totals.received.load(Ordering::Relaxed),
    );
    let errors = totals.errors.load(Ordering::Relaxed);
    let first = first_rss.unwrap_or(last_rss);
    let loss = 1.0 - received as f64 / sent.max(1) as f64;
    println!(
        "soak: {} s, {} clients, {} cycles, {sent} relayed messages, {:.3}% lost, {errors} errors, RSS {first} -> {last_rss} KiB, fds {fds_idle} idle -> {fds_end} at the end",
        seconds,
        clients,
        totals.cycles.load(Ordering::Relaxed),
        loss * 100.0
    );
    let mut failed = Vec::new();
    if errors > 0 {
        failed.push(format!("{errors} errors"));
    }
    if loss > 0.01 {
        failed.push(format!("{:.2}% lost", loss * 100.0));
    }
    if last_rss > first + 4096 {
        failed.push(format!("RSS grew {} KiB", last_rss - first));
    }
    if fds_end > fds_idle {
        failed.push(format!("{} file descriptors left open", fds_end - fds_idle));
    }
    if totals.cycles.load(Ordering::Relaxed) == 0 {
        failed.push("no cycle completed".into());
    }
    if failed.is_empty() {
        println!("soak: PASS");
    } else {
        println!("soak: FAIL: {}", failed.join(", "));
        std::process::exit(1);
    }
}
