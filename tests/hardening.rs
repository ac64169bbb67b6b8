//! Hostile traffic against a running turnd over real sockets: its own ports are never peers,
//! a large seeded batch of random and mutated datagrams leaves it up with memory back where it
//! was, and a flood of unauthenticated Allocates from many source ports keeps memory flat and
//! draws only a rate-limited trickle of 401s. Bounded: fixed counts, a few seconds each.

mod common;

use common::process::Served;
use common::{rest, settings, start, UdpTurnClient};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use turnd_proto::client::{self, Attr, ClientAuth};
use turnd_proto::wire::{attr, Method, TransactionId};

/// The relay's own listener, HTTP and metrics ports, and relay ports not in use, are refused
/// as peers even though they sit on the relay's IP; another client's relayed address is not.
#[test]
fn the_servers_own_ports_are_never_peers() {
    let _cpu = common::cpu::shared();
    let turnd = start(settings());
    let (u, p) = rest("owner", 600);
    let mut a = UdpTurnClient::new(turnd.addr, &u, &p);
    let mut b = UdpTurnClient::new(turnd.addr, &u, &p);
    let relayed_a = a.allocate();
    let relayed_b = b.allocate();
    let http = turnd.running.http.as_ref().unwrap().addr;
    let metrics = turnd.running.metrics.as_ref().unwrap().addr;
    let unused_relay_port = (relayed_a.port().max(relayed_b.port()) + 1..)
        .find(|p| *p != relayed_a.port() && *p != relayed_b.port())
        .unwrap();
    let own: [SocketAddr; 4] = [
        turnd.addr,
        http,
        metrics,
        SocketAddr::new(relayed_a.ip(), unused_relay_port),
    ];
    for port in own {
        let r = a.request(Method::CREATE_PERMISSION, &[Attr::Peer(port)]);
        assert_eq!(UdpTurnClient::code(&r), Some(403), "{port}");
        let r = a.request(
            Method::CHANNEL_BIND,
            &[Attr::Channel(0x4001), Attr::Peer(port)],
        );
        assert_eq!(UdpTurnClient::code(&r), Some(403), "{port}");
        // Send to the listener would loop the relay into itself: dropped.
        let ind = client::send_indication(TransactionId([5; 12]), port, b"loop?");
        a.sock.send_to(&ind, turnd.addr).unwrap();
    }
    let r = a.request(Method::CREATE_PERMISSION, &[Attr::Peer(relayed_b)]);
    assert_eq!(
        UdpTurnClient::code(&r),
        None,
        "another client's relay is a peer"
    );
    common::eventually("the Sends counted as denied", || {
        turnd.sum(|s| s.peer_denied) >= 12
    });
    assert_eq!(turnd.sum(|s| s.packets_to_peer), 0);
}

/// Valid packets of every kind a client sends, as seeds for mutation.
fn seeds(server: SocketAddr) -> Vec<Vec<u8>> {
    let tid = TransactionId([7; 12]);
    let mut auth = ClientAuth::new("1900000000:fuzz", "password");
    auth.realm = Some("turnd".into());
    auth.nonce = Some("0".repeat(32));
    let peer: SocketAddr = "8.8.8.8:53".parse().unwrap();
    vec![
        client::request(Method::BINDING, tid, &[], None, true),
        client::request(
            Method::ALLOCATE,
            tid,
            &[Attr::RequestedTransport(17), Attr::Lifetime(600)],
            None,
            true,
        ),
        client::request(
            Method::ALLOCATE,
            tid,
            &[Attr::RequestedTransport(17)],
            Some(&auth),
            true,
        ),
        client::request(
            Method::REFRESH,
            tid,
            &[Attr::Lifetime(0)],
            Some(&auth),
            false,
        ),
        client::request(
            Method::CHANNEL_BIND,
            tid,
            &[Attr::Channel(0x4000), Attr::Peer(server)],
            Some(&auth),
            false,
        ),
        client::request(
            Method::CREATE_PERMISSION,
            tid,
            &[Attr::Peer(peer)],
            Some(&auth),
            true,
        ),
        client::send_indication(tid, peer, &[0xAB; 100]),
        client::channel_data(0x4000, &[0xCD; 100], false),
        // RFC 5780 (the server runs with stun_alternate) and RFC 3489 Bindings.
        client::request(
            Method::BINDING,
            tid,
            &[
                Attr::Raw(attr::CHANGE_REQUEST, vec![0, 0, 0, 6]),
                Attr::Raw(attr::RESPONSE_PORT, vec![0x30, 0x39, 0, 0]),
                Attr::Raw(attr::PADDING, vec![0; 64]),
            ],
            None,
            true,
        ),
        {
            let mut classic = vec![0x00, 0x01, 0x00, 0x08];
            classic.extend_from_slice(&[9; 16]);
            classic.extend_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 2]);
            classic
        },
    ]
}

/// One hostile datagram: random bytes, or a seed with bytes flipped, cut short, lengthened or
/// with its length fields rewritten.
fn hostile(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.gen_ratio(1, 4) {
        let mut p = vec![0u8; rng.gen_range(0..1500)];
        rng.fill(&mut p[..]);
        return p;
    }
    let mut p = seeds[rng.gen_range(0..seeds.len())].clone();
    match rng.gen_range(0..4) {
        0 => {
            for _ in 0..rng.gen_range(1..8) {
                let i = rng.gen_range(0..p.len());
                p[i] ^= 1 << rng.gen_range(0..8);
            }
        }
        1 => p.truncate(rng.gen_range(0..p.len())),
        2 => {
            let mut tail = vec![0u8; rng.gen_range(1..300)];
            rng.fill(&mut tail[..]);
            p.extend_from_slice(&tail);
        }
        _ => {
            // Message or ChannelData length, or an attribute length, set to anything.
            let at = [2usize, 22, 26, 30][rng.gen_range(0..4)].min(p.len().saturating_sub(2));
            let v: u16 = rng.gen();
            p[at..at + 2].copy_from_slice(&v.to_be_bytes());
        }
    }
    p
}

/// Relays one message between two fresh clients of `turnd`: the service still works.
fn relay_still_works(turnd: &Served) {
    let (user, pass) = common::process::rest("after");
    let mut a = UdpTurnClient::new(turnd.addr(), &user, &pass);
    let mut b = UdpTurnClient::new(turnd.addr(), &user, &pass);
    let (ra, rb) = (a.allocate(), b.allocate());
    for (x, peer) in [(&mut a, rb), (&mut b, ra)] {
        let r = x.request(Method::CREATE_PERMISSION, &[Attr::Peer(peer)]);
        assert_eq!(UdpTurnClient::code(&r), None);
    }
    let ind = client::send_indication(TransactionId([1; 12]), rb, b"still here");
    a.sock.send_to(&ind, turnd.addr()).unwrap();
    let mut buf = [0u8; 256];
    let (n, _) = b.sock.recv_from(&mut buf).expect("a Data indication");
    assert!(buf[..n].windows(10).any(|w| w == b"still here"));
}

fn spawn() -> Served {
    Served::start(&[
        "--relay-ip",
        "127.0.0.1",
        "--relay-ports",
        "33000-33999",
        "--workers",
        "2",
        "--selftest-interval",
        "0",
        "--log-format",
        "json",
        // RFC 5780 on: the hostile batch reaches the Binding paths that answer from the
        // alternate sockets too.
        "--stun-alternate",
        "127.0.0.2:0",
    ])
}

/// Sends `count` datagrams from `sockets` source ports of 127.0.0.2, round robin, pacing
/// lightly so the kernel's buffers do not just drop them; returns how many answers came back.
/// (Not 127.0.0.1: the well-behaved clients that check the service afterwards use that, and
/// they must not share the flood's 401 budget.)
fn blast(
    target: SocketAddr,
    sockets: usize,
    count: usize,
    mut make: impl FnMut() -> Vec<u8>,
) -> usize {
    let socks: Vec<UdpSocket> = (0..sockets)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.2:0").unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let mut answers = 0;
    let mut buf = [0u8; 2048];
    for i in 0..count {
        let _ = socks[i % sockets].send_to(&make(), target);
        if i % 256 == 255 {
            for s in &socks {
                while s.recv_from(&mut buf).is_ok() {
                    answers += 1;
                }
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    for s in &socks {
        while s.recv_from(&mut buf).is_ok() {
            answers += 1;
        }
    }
    answers
}

/// Waits up to 3 s for RSS to come back within `slack_kib` of `baseline`; returns the last
/// reading.
fn settled_rss(turnd: &Served, baseline: u64, slack_kib: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let rss = turnd.rss_kib();
        if rss <= baseline + slack_kib || Instant::now() > deadline {
            return rss;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn random_and_mutated_datagrams_leave_turnd_up_and_memory_at_baseline() {
    let _cpu = common::cpu::shared();
    let mut turnd = spawn();
    // Warm up the paths the batch will hit, then take the baseline.
    relay_still_works(&turnd);
    let seeds = seeds(turnd.addr());
    let mut rng = StdRng::seed_from_u64(0x7572_6e64);
    blast(turnd.addr(), 16, 5_000, || hostile(&mut rng, &seeds));
    let baseline = turnd.rss_kib();
    let fds = turnd.open_fds();

    let mut rng = StdRng::seed_from_u64(0x6861_7264);
    let started = Instant::now();
    blast(turnd.addr(), 64, 200_000, || hostile(&mut rng, &seeds));
    println!("200,000 hostile datagrams in {:?}", started.elapsed());

    assert!(turnd.is_running(), "turnd died");
    let rss = settled_rss(&turnd, baseline, 2048);
    println!("RSS: {baseline} KiB before, {rss} KiB after");
    assert!(
        rss <= baseline + 2048,
        "RSS grew from {baseline} to {rss} KiB"
    );
    assert_eq!(turnd.open_fds(), fds, "file descriptors leaked");
    relay_still_works(&turnd);
    assert!(!turnd.log().contains("panicked"), "{}", turnd.log());
}

#[test]
fn an_unauthenticated_allocate_flood_keeps_memory_flat_and_401s_limited() {
    let _cpu = common::cpu::shared();
    let mut turnd = spawn();
    relay_still_works(&turnd);
    let allocate = client::request(
        Method::ALLOCATE,
        TransactionId([2; 12]),
        &[Attr::RequestedTransport(17), Attr::Lifetime(600)],
        None,
        true,
    );
    blast(turnd.addr(), 32, 2_000, || allocate.clone());
    let baseline = turnd.rss_kib();

    // 50,000 Allocates from 500 source ports of one address, in about a second or two.
    let started = Instant::now();
    let answers = blast(turnd.addr(), 500, 50_000, || allocate.clone());
    let secs = started.elapsed().as_secs_f64();
    println!("50,000 unauthenticated Allocates in {secs:.2} s drew {answers} 401s");
    // Two workers, each: a burst of 200 and then 100 per second.
    let allowed = (2.0 * (200.0 + 100.0 * (secs + 0.5))) as usize;
    assert!(answers <= allowed, "{answers} answers > {allowed}");
    assert!(
        answers > 0,
        "the flood's source was never challenged at all"
    );

    assert!(turnd.is_running());
    let rss = settled_rss(&turnd, baseline, 1024);
    println!("RSS: {baseline} KiB before, {rss} KiB after");
    assert!(
        rss <= baseline + 1024,
        "RSS grew from {baseline} to {rss} KiB"
    );
    relay_still_works(&turnd);
}

/// The bystander flow the attack tests run beside their attacks measures what it should: on a
/// quiet relay, over UDP and TCP, nothing is lost and round trips are short.
#[test]
fn a_legitimate_flow_on_a_quiet_relay_is_unharmed() {
    let _cpu = common::cpu::whole();
    use common::flow::{Flow, FlowTransport};
    let mut s = settings();
    s.allow_peer = Some(vec!["127.0.0.1/32".into()]);
    let turnd = start(s);
    let (user, pass) = rest("bystander", 600);
    let flows = [FlowTransport::Udp, FlowTransport::Tcp]
        .map(|t| (t, Flow::start(turnd.addr, t, &user, &pass)));
    std::thread::sleep(Duration::from_secs(1));
    for (t, flow) in flows {
        let report = flow.stop();
        assert!(report.sent >= 90, "{t:?}: {report:?}");
        report.assert_unharmed(&format!("{t:?} on a quiet relay"));
    }
}

/// The namespace helper the multi-address tests rely on isolates what it should: a socket made
/// inside a test namespace cannot reach a socket on the machine's own loopback, and a whole
/// IPv6 /64 routed to the namespace's loopback gives a test as many client addresses as it wants.
#[test]
fn a_test_namespace_is_isolated_and_can_hold_a_whole_ipv6_prefix() {
    let _cpu = common::cpu::shared();
    use common::netns::NetNs;
    let Some(ns) = NetNs::create("iso") else {
        return;
    };
    let outside = UdpSocket::bind("127.0.0.1:0").unwrap();
    outside
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let target = outside.local_addr().unwrap();
    ns.local_prefix("2001:db8:64::/64");
    let echoed = ns.run(move || {
        let inside = UdpSocket::bind("127.0.0.1:0").unwrap();
        let _ = inside.send_to(b"leak?", target);
        let a = UdpSocket::bind("[2001:db8:64::7]:0").unwrap();
        let b = UdpSocket::bind("[2001:db8:64::1:2]:0").unwrap();
        a.send_to(b"hi", b.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = b.recv_from(&mut buf).unwrap();
        (buf[..n].to_vec(), from.ip().to_string())
    });
    assert_eq!(echoed, (b"hi".to_vec(), "2001:db8:64::7".to_string()));
    let mut buf = [0u8; 8];
    assert!(
        outside.recv_from(&mut buf).is_err(),
        "a datagram left the namespace"
    );
}
