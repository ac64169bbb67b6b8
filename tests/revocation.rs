//! What a credential authorised, SIGHUP takes away (issue 20, point 4), against `turnd serve`
//! as a child process on loopback: `revoke` + SIGHUP ends the victim's relaying within a second
//! over UDP and TCP while bystander flows carry on unharmed; an allocation made with a secret
//! or a static user the reload removed ends at once and cannot be refreshed (with
//! `strict_expiry` on, too).

mod common;

use common::flow::{Flow, FlowTransport};
use common::process::Served;
use common::{StreamTurnClient, UdpTurnClient};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use turnd_proto::client::Attr;
use turnd_proto::wire::Method;

const SECRET: &str = "the-shared-secret-of-this-test";
const OLD_SECRET: &str = "the-secret-being-rotated-out";

fn rest(secret: &str, user: &str) -> (String, String) {
    let c = turnd_proto::auth::mint_rest_credential(
        secret.as_bytes(),
        user,
        turnd::clock::unix_now(),
        600,
    );
    (c.username, c.password)
}

fn serve(file: &std::path::Path, ports: &str) -> Served {
    Served::start(&[
        "--config",
        file.to_str().unwrap(),
        "--relay-ip",
        "127.0.0.1",
        "--relay-ports",
        ports,
        "--workers",
        "2",
        "--selftest-interval",
        "0",
    ])
}

/// When the sink last heard from each victim ("u" over UDP, "t" over TCP), and how often.
#[derive(Default)]
struct Heard {
    last: [Option<Instant>; 2],
    count: [u64; 2],
}

/// A peer on loopback recording the Send-indication payloads relayed to it, until `stop`.
fn sink(stop: Arc<AtomicBool>) -> (SocketAddr, Arc<Mutex<Heard>>, std::thread::JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let heard = Arc::new(Mutex::new(Heard::default()));
    let h = heard.clone();
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                let i = match &buf[..n.min(1)] {
                    b"u" => 0,
                    b"t" => 1,
                    _ => continue,
                };
                let mut h = h.lock().unwrap();
                h.last[i] = Some(Instant::now());
                h.count[i] += 1;
            }
        }
    });
    (addr, heard, handle)
}

#[test]
fn revoke_and_sighup_end_the_victims_relaying_within_a_second_over_udp_and_tcp() {
    let _cpu = common::cpu::whole();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("turnd.toml");
    let base = format!("secret = [\"{SECRET}\"]\nallow_peer = [\"127.0.0.1/32\"]\n");
    std::fs::write(&file, &base).unwrap();
    let turnd = serve(&file, "32000-32099");

    let (user, pass) = rest(SECRET, "alice");
    let udp_bystander = Flow::start(turnd.addr(), FlowTransport::Udp, &user, &pass);
    let (user, pass) = rest(SECRET, "bob");
    let tcp_bystander = Flow::start(turnd.addr(), FlowTransport::Tcp, &user, &pass);

    let stop = Arc::new(AtomicBool::new(false));
    let (peer, heard, sink_thread) = sink(stop.clone());

    // Mallory relays to the peer over UDP and over TCP, 100 packets a second each.
    let (user, pass) = rest(SECRET, "mallory");
    let mut udp = UdpTurnClient::new(turnd.addr(), &user, &pass);
    udp.allocate();
    let r = udp.request(Method::CREATE_PERMISSION, &[Attr::Peer(peer)]);
    assert_eq!(UdpTurnClient::code(&r), None);
    let (user, pass) = rest(SECRET, "mallory");
    let mut tcp = StreamTurnClient::new(common::tcp(turnd.addr()), &user, &pass);
    tcp.allocate();
    let r = tcp.request(Method::CREATE_PERMISSION, &[Attr::Peer(peer)]);
    assert_eq!(UdpTurnClient::code(&r), None);

    let deadline = Instant::now() + Duration::from_secs(5);
    let udp_sender = {
        let (sock, server) = (udp.sock.try_clone().unwrap(), turnd.addr());
        std::thread::spawn(move || {
            let mut seq = 0u32;
            while Instant::now() < deadline {
                seq += 1;
                let tid = turnd_proto::wire::TransactionId([seq as u8; 12]);
                let ind = turnd_proto::client::send_indication(tid, peer, b"u-mallory");
                let _ = sock.send_to(&ind, server);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let mut stream: TcpStream = tcp.stream.try_clone().unwrap();
    let tcp_sender = std::thread::spawn(move || {
        let mut seq = 0u32;
        while Instant::now() < deadline {
            seq += 1;
            let tid = turnd_proto::wire::TransactionId([seq as u8; 12]);
            let ind = turnd_proto::client::send_indication(tid, peer, b"t-mallory");
            if stream.write_all(&ind).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    // The TCP connection: when the server closes it.
    let mut reader: TcpStream = tcp.stream.try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let tcp_closed = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            match reader.read(&mut buf) {
                Ok(0) => return Some(Instant::now()),
                Err(e)
                    if e.kind() != std::io::ErrorKind::WouldBlock
                        && e.kind() != std::io::ErrorKind::TimedOut =>
                {
                    return Some(Instant::now())
                }
                _ => {}
            }
        }
        None
    });

    std::thread::sleep(Duration::from_millis(800));
    let before = heard.lock().unwrap().count;
    assert!(
        before[0] > 20 && before[1] > 20,
        "mallory relays before the revocation: {before:?}"
    );
    std::fs::write(&file, format!("{base}revoke = [\"mallory\"]\n")).unwrap();
    let revoked_at = Instant::now();
    turnd.signal(libc::SIGHUP);
    common::eventually("both of mallory's allocations ended", || {
        // One allocation_ended event each, with the reason.
        turnd
            .log()
            .lines()
            .filter(|l| l.contains("\"allocation_ended\"") && l.contains("\"revoked\""))
            .count()
            == 2
    });
    udp_sender.join().unwrap();
    tcp_sender.join().unwrap();
    let closed = tcp_closed
        .join()
        .unwrap()
        .expect("the TCP connection was closed");
    stop.store(true, Ordering::Relaxed);
    sink_thread.join().unwrap();

    let heard = heard.lock().unwrap();
    let lag = |i: usize| heard.last[i].unwrap().saturating_duration_since(revoked_at);
    println!(
        "relayed after SIGHUP for: UDP {:?}, TCP {:?}; TCP connection closed after {:?}",
        lag(0),
        lag(1),
        closed.saturating_duration_since(revoked_at)
    );
    assert!(
        lag(0) < Duration::from_secs(1),
        "UDP relayed for {:?}",
        lag(0)
    );
    assert!(
        lag(1) < Duration::from_secs(1),
        "TCP relayed for {:?}",
        lag(1)
    );
    assert!(closed.saturating_duration_since(revoked_at) < Duration::from_secs(1));
    // Each ended once: one allocation_ended event per allocation, no more.
    let ended = turnd
        .log()
        .lines()
        .filter(|l| l.contains("\"allocation_ended\""))
        .count();
    assert_eq!(ended, 2, "{}", turnd.log());
    // Mallory's UDP allocation is gone for good: a Refresh is refused.
    let r = udp.request(Method::REFRESH, &[Attr::Lifetime(600)]);
    assert_eq!(UdpTurnClient::code(&r), Some(401));

    udp_bystander
        .stop()
        .assert_unharmed("UDP bystander during revocation");
    tcp_bystander
        .stop()
        .assert_unharmed("TCP bystander during revocation");
}

#[test]
fn a_removed_secret_or_static_user_ends_its_allocation_even_with_strict_expiry() {
    let _cpu = common::cpu::shared();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("turnd.toml");
    let before = format!(
        "secret = [\"{SECRET}\", \"{OLD_SECRET}\"]\nuser = [\"carol:carol-password\", \"dave:dave-password\"]\nstrict_expiry = true\n"
    );
    std::fs::write(&file, &before).unwrap();
    let turnd = serve(&file, "32100-32199");

    let (u, p) = rest(OLD_SECRET, "alice");
    let mut alice = UdpTurnClient::new(turnd.addr(), &u, &p);
    let (u, p) = rest(SECRET, "bob");
    let mut bob = UdpTurnClient::new(turnd.addr(), &u, &p);
    let mut carol = UdpTurnClient::new(turnd.addr(), "carol", "carol-password");
    let mut dave = UdpTurnClient::new(turnd.addr(), "dave", "dave-password");
    let alice_relay = alice.allocate();
    for c in [&mut bob, &mut carol, &mut dave] {
        c.allocate();
    }

    std::fs::write(
        &file,
        format!("secret = [\"{SECRET}\"]\nuser = [\"dave:dave-password\"]\nstrict_expiry = true\n"),
    )
    .unwrap();
    turnd.signal(libc::SIGHUP);
    turnd.wait_for_log("configuration reloaded");
    common::eventually("both allocations ended", || {
        // One allocation_ended event each, with the reason.
        turnd
            .log()
            .lines()
            .filter(|l| l.contains("\"allocation_ended\"") && l.contains("\"credential_removed\""))
            .count()
            == 2
    });

    let refresh = |c: &mut UdpTurnClient| {
        UdpTurnClient::code(&c.request(Method::REFRESH, &[Attr::Lifetime(600)]))
    };
    assert_eq!(
        refresh(&mut alice),
        Some(401),
        "the removed secret's allocation cannot refresh"
    );
    assert_eq!(
        refresh(&mut carol),
        Some(401),
        "the removed user's allocation is gone"
    );
    assert_eq!(refresh(&mut bob), None);
    assert_eq!(refresh(&mut dave), None);
    // Alice's relay port is closed: another client can be given it, and nothing listens
    // there any more (a datagram to it draws ICMP port unreachable).
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe.connect(alice_relay).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let _ = probe.send(b"anyone?");
    let mut buf = [0u8; 16];
    let refused =
        matches!(probe.recv(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused);
    assert!(refused, "alice's relay socket {alice_relay} still open");
}
