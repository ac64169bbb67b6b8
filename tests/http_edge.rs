//! The HTTP listeners' edge over real sockets: header, body and idle timeouts, connection caps
//! per address (IPv6 per /64) and in total, eviction of idle connections when full, the HTTP
//! rate limit per /64, and 20,000 idle connections against a turnd whose open-file limit is
//! low, while the relay, TURN over TCP and /healthz keep working.

mod common;

use common::flow::{Flow, FlowTransport};
use common::netns::NetNs;
use common::process::Served;
use common::{connect_from, rest, scrape, settings, start, StreamTurnClient, Turnd, UdpTurnClient};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const KEY: &str = "edge-test-api-key-0123456789";

/// A connection from `from` that has begun a request and stalls: it reaches turnd (the kernel
/// holds back connections that have sent nothing, see TCP_DEFER_ACCEPT in src/http/mod.rs) and
/// holds a slot until the header timeout.
fn stalled_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let mut s = connect_from(from, to);
    s.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    s
}

/// Waits until the server closes `s` (EOF or reset), reading and discarding whatever it sends
/// first; returns how long that took. Panics if it is still open after `within`.
fn wait_closed(s: &mut TcpStream, within: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(start.elapsed());
        assert!(!left.is_zero(), "still open after {within:?}");
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return start.elapsed(),
            Err(e) => panic!("still open after {within:?} ({e})"),
        }
    }
}

/// True if the server has neither closed `s` nor sent anything within 200 ms.
fn still_open(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

fn metric(turnd: &Turnd, series: &str) -> f64 {
    scrape(turnd).get(series).copied().unwrap_or(0.0)
}

/// Waits (bounded) for `series` to read `want`: a connection's task counts its end a moment
/// after the client may have seen the connection close.
fn expect_metric(turnd: &Turnd, series: &str, want: f64) {
    common::eventually(&format!("{series} = {want}"), || {
        metric(turnd, series) == want
    });
    // And not more than that.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(metric(turnd, series), want, "{series}");
}

fn closed(reason: &str) -> String {
    format!("turnd_http_connections_closed_total{{reason=\"{reason}\"}}")
}

fn refused(reason: &str) -> String {
    format!("turnd_http_connections_refused_total{{reason=\"{reason}\"}}")
}

/// One GET on a fresh connection from `from`; the status (0 if none came).
fn status_from(from: IpAddr, to: SocketAddr, target: &str) -> u16 {
    let mut s = connect_from(from, to);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_head_trickled_a_byte_at_a_time_is_closed_at_the_header_timeout() {
    let _cpu = common::cpu::shared();
    let mut s = settings();
    s.http_header_timeout = Some(1);
    s.http_idle_timeout = Some(30);
    let turnd = start(s);
    let mut conn = TcpStream::connect(turnd.http()).unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Slow-loris: a header line every 200 ms, never the blank line that ends the head.
    let mut writer = conn.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for i in 0..30 {
            std::thread::sleep(Duration::from_millis(200));
            if writer
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .is_err()
            {
                return;
            }
        }
    });
    let took = wait_closed(&mut conn, Duration::from_secs(5));
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed after {took:?}, not at the 1 s header timeout"
    );
    trickle.join().unwrap();
    expect_metric(&turnd, &closed("header_timeout"), 1.0);
    assert_eq!(
        common::get(turnd.http(), "/healthz").status,
        200,
        "others are served"
    );
}

#[test]
fn a_body_promised_and_never_sent_gets_408_at_the_body_timeout() {
    let _cpu = common::cpu::shared();
    let mut s = settings();
    s.http_body_timeout = Some(1);
    let turnd = start(s);
    let mut conn = TcpStream::connect(turnd.http()).unwrap();
    conn.write_all(
        b"POST /api/v1/ice-servers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"username\":",
    )
    .unwrap();
    let started = Instant::now();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)
        .expect("answered and closed within 5 s");
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body = text.split_once("\r\n\r\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("in time"), "{v}");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "answered after {took:?}, not at the 1 s body timeout"
    );
    expect_metric(&turnd, &closed("body_timeout"), 1.0);
    assert_eq!(metric(&turnd, "turnd_credentials_issued_total"), 0.0);
}

#[test]
fn idle_connections_are_closed_at_the_idle_timeout() {
    let _cpu = common::cpu::shared();
    let mut s = settings();
    s.http_idle_timeout = Some(1);
    s.http_header_timeout = Some(30);
    let turnd = start(s);
    // A connection that never sends anything: the kernel holds it back for about the idle
    // timeout (TCP_DEFER_ACCEPT), then turnd gives it the idle timeout once more.
    let mut silent = TcpStream::connect(turnd.http()).unwrap();
    // A keep-alive connection after one answered request.
    let mut kept = TcpStream::connect(turnd.http()).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let answered = Instant::now();
    let took = wait_closed(&mut silent, Duration::from_secs(5));
    assert!(
        took < Duration::from_secs(4),
        "silent connection closed after {took:?}"
    );
    wait_closed(&mut kept, Duration::from_secs(5));
    let took = answered.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "keep-alive connection closed {took:?} after its answer, not at the 1 s idle timeout"
    );
    expect_metric(&turnd, &closed("idle_timeout"), 2.0);
}

/// A head too long to be a credential request is refused, not buffered (hyper would hold
/// ~400 KB per connection).
#[test]
fn an_oversized_head_is_refused() {
    let _cpu = common::cpu::shared();
    let turnd = start(settings());
    let pad = "a".repeat(1000);
    let headers: Vec<(String, String)> = (0..40)
        .map(|i| (format!("X-Pad-{i}"), pad.clone()))
        .collect();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = common::http_request(turnd.http(), "GET", "/healthz", &headers, "");
    assert_eq!(r.status, 431, "{r:?}");
    let headers = &headers[..4];
    assert_eq!(
        common::http_request(turnd.http(), "GET", "/healthz", headers, "").status,
        200,
        "a few KB of headers are fine"
    );
}

#[test]
fn connections_per_address_are_capped() {
    let _cpu = common::cpu::shared();
    let mut s = settings();
    s.http_max_connections_per_ip = Some(4);
    let turnd = start(s);
    let http = turnd.http();
    let crowd: IpAddr = "127.0.0.2".parse().unwrap();
    let mut held: Vec<TcpStream> = (0..4).map(|_| stalled_from(crowd, http)).collect();
    let mut fifth = stalled_from(crowd, http);
    assert!(
        wait_closed(&mut fifth, Duration::from_secs(2)) < Duration::from_secs(1),
        "the fifth connection from one address is closed at once"
    );
    assert!(held.iter_mut().all(still_open), "the first four are kept");
    let other: IpAddr = "127.0.0.3".parse().unwrap();
    let mut s = connect_from(other, http);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "another address is served");
    expect_metric(&turnd, &refused("per_address"), 1.0);
}

#[test]
fn a_full_listener_closes_its_longest_idle_connection_for_a_newcomer() {
    let _cpu = common::cpu::shared();
    let mut s = settings();
    s.http_max_connections = Some(8);
    s.http_max_connections_per_ip = Some(0);
    let turnd = start(s);
    let http = turnd.http();
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..8 {
        idle.push(stalled_from([127, 0, 0, 1].into(), http));
        // Accept order is eviction order.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(still_open(&mut idle[7]), "eight fit");
    let r = common::get(http, "/healthz");
    assert_eq!(r.status, 200, "a health check gets in: {r:?}");
    wait_closed(&mut idle[0], Duration::from_secs(2));
    assert!(
        idle[1..].iter_mut().all(still_open),
        "only the longest-idle one was closed"
    );
    expect_metric(&turnd, &closed("evicted"), 1.0);
    assert!(metric(&turnd, "turnd_http_connections_open") <= 9.0);
}

/// 300 addresses of one IPv6 /64 share one rate limit and one per-address connection cap,
/// while a relayed flow beside them is unharmed.
#[test]
fn three_hundred_addresses_of_one_ipv6_prefix_are_limited_as_one_client() {
    let _cpu = common::cpu::whole();
    let Some(ns) = NetNs::create("http64") else {
        return;
    };
    ns.local_prefix("2001:db8:64::/64");
    ns.local_prefix("2001:db8:65::/64");
    let report = ns.run(|| {
        let mut s = settings();
        s.http_listen = Some("[2001:db8:64::1]:0".into());
        s.api_key = Some(vec![KEY.into()]);
        s.http_rate_limit = Some(60); // bursts of 15, then one a second
        s.http_max_connections_per_ip = Some(8);
        s.allow_peer = Some(vec!["127.0.0.1/32".into()]);
        let turnd = start(s);
        let http = turnd.http();
        let (u, p) = rest("bystander", 600);
        let flow = Flow::start(turnd.addr, FlowTransport::Udp, &u, &p);

        let addr = |net: u16, i: u32| -> IpAddr {
            format!("2001:db8:{net:x}::{:x}:{:x}", 0x100 + (i >> 16), i & 0xffff)
                .parse()
                .unwrap()
        };
        let started = Instant::now();
        let statuses: Vec<u16> = (0..300)
            .map(|i| status_from(addr(0x64, i), http, "/api/v1/credentials"))
            .collect();
        let elapsed = started.elapsed().as_secs() as usize;
        let ok = statuses.iter().filter(|&&s| s == 200).count();
        let limited = statuses.iter().filter(|&&s| s == 429).count();
        assert_eq!(ok + limited, 300, "every request answered 200 or 429");
        // The burst, plus one a second of refill while the requests ran.
        assert!(
            ok >= 15 && ok <= 15 + elapsed + 1,
            "{ok} of 300 requests from one /64 passed in {elapsed} s; one client gets 15 + 1/s"
        );
        assert_eq!(
            status_from(addr(0x65, 1), http, "/api/v1/credentials"),
            200,
            "another /64 has its own limit"
        );

        // Eight idle connections from eight addresses of the /64 fill its connection cap.
        let mut held: Vec<TcpStream> = (0..8)
            .map(|i| stalled_from(addr(0x64, 1000 + i), http))
            .collect();
        let mut ninth = stalled_from(addr(0x64, 2000), http);
        assert!(wait_closed(&mut ninth, Duration::from_secs(2)) < Duration::from_secs(1));
        assert!(held.iter_mut().all(still_open));
        assert_eq!(status_from(addr(0x65, 2), http, "/healthz"), 200);
        common::eventually("a refusal counted", || {
            metric(&turnd, &refused("per_address")) >= 1.0
        });
        flow.stop()
    });
    report.assert_unharmed("300 addresses of one /64 against the HTTP API");
}

/// turnd raises its soft open-file limit to the hard one at start and says so; with enough
/// descriptors it keeps the configured caps and warns about nothing.
#[test]
fn the_open_file_limit_is_raised_at_start() {
    let _cpu = common::cpu::shared();
    let mut own = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a valid struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) };
    let hard = own.rlim_max.min(1 << 20);
    assert!(
        hard > 1024,
        "this test needs a hard limit above 1024, not {hard}"
    );
    // Caps that fit 1024 descriptors, far above the soft 256 turnd starts with: 100 relay
    // ports, 100 TCP clients, 100 HTTP connections.
    let served = Served::start_limited(
        &[
            "--relay-ip",
            "127.0.0.1",
            "--relay-ports",
            "40000-40099",
            "--max-connections",
            "100",
            "--http-max-connections",
            "100",
        ],
        Some((256, hard)),
    );
    served.wait_for_log("raised the open-file limit");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", served.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let soft: u64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(soft, hard, "{line}");
    assert!(
        !served.log().contains("open-file limit is too low"),
        "{}",
        served.log()
    );
}

/// Raises this process's open-file limit so it can hold `want` sockets; returns how many it may.
fn raise_own_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct, for this process only.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_max < want {
            // Root may raise the hard limit too.
            let up = libc::rlimit {
                rlim_cur: want,
                rlim_max: want,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &up) == 0 {
                return want;
            }
        }
        lim.rlim_cur = lim.rlim_max.min(want.max(lim.rlim_cur));
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// Issue 20: 20,000 idle HTTP connections used up turnd's file descriptors; UDP Allocate got
/// 508 and TURN over TCP and /healthz timed out. Here turnd runs with an open-file limit of
/// 1024 while one client opens 20,000 idle connections from 200 loopback addresses and keeps
/// opening more: health checks, UDP allocations, TURN over TCP and a relayed flow keep working
/// throughout. In a private network namespace: a flood this size on the host's loopback would
/// fill the host's connection-tracking table (and make every other test's sends fail).
#[test]
fn twenty_thousand_idle_http_connections_starve_neither_relay_nor_health_checks() {
    let _cpu = common::cpu::whole();
    let Some(ns) = NetNs::create("http20k") else {
        return;
    };
    let report = ns.run(flood_with_probes);
    eprintln!(
        "bystander flow: sent {}, received {}, p99 {:?}",
        report.sent,
        report.received,
        report.p99()
    );
    report.assert_unharmed("20,000 idle HTTP connections");
}

/// The body of the test above, inside the namespace; the bystander flow's report.
fn flood_with_probes() -> common::flow::FlowReport {
    const ATTEMPTS: u64 = 20_000;
    let may = raise_own_fd_limit(ATTEMPTS + 1_000);
    let attempts = ATTEMPTS.min(may.saturating_sub(200));
    let metrics_port = common::process::free_port().to_string();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let served = Served::start_limited(
        &[
            "--workers",
            "1",
            "--relay-ip",
            "127.0.0.1",
            "--relay-ports",
            "30000-30199",
            "--allow-peer",
            "127.0.0.1/32",
            "--selftest-interval",
            "0",
            "--metrics-listen",
            &metrics_addr,
            // Every probe allocates from 127.0.0.1 and up to 100 stay held: the per-address
            // allocation cap is not what this test is about.
            "--max-allocations-per-address",
            "0",
        ],
        Some((1024, 1024)),
    );
    served.wait_for_log("open-file limit is too low");
    let http: SocketAddr = ([127, 0, 0, 1], served.http).into();
    let mint = common::process::rest;
    let (u, p) = mint("bystander");
    let flow = Flow::start(served.addr(), FlowTransport::Udp, &u, &p);

    // Opens connections until it holds `attempts`, then keeps the flood going for the rest of
    // its 8 s by closing its oldest thousand and opening new ones: 5,000 connects a second, at
    // most 40,000. (Unpaced, the flood's packets overflow the kernel's loopback backlog and
    // drop the bystander's datagrams before turnd sees them: a test of loopback, not of turnd.)
    const PER_SECOND: u64 = 5_000;
    let attacker = std::thread::spawn(move || {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(8);
        let mut held = std::collections::VecDeque::with_capacity(attempts as usize);
        let mut peak = 0;
        for i in 0..40_000u64 {
            if Instant::now() > deadline {
                break;
            }
            if i % 100 == 0 {
                let due = started + Duration::from_millis(i * 1000 / PER_SECOND);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            if held.len() as u64 >= attempts {
                held.drain(..1000);
            }
            let from: IpAddr = format!("127.0.1.{}", 1 + i % 200).parse().unwrap();
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("a socket (the test's own fd limit)");
            s.set_nonblocking(true).unwrap();
            s.bind(&SocketAddr::new(from, 0).into()).unwrap();
            match s.connect(&http.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => panic!("connect: {e}"),
            }
            held.push_back(s);
            peak = peak.max(held.len());
        }
        (held, peak)
    });

    // /healthz as a Kubernetes liveness probe asks it: a fresh connection, one second to answer.
    let health = || -> Result<Duration, String> {
        let t = Instant::now();
        let mut s = TcpStream::connect_timeout(&http, Duration::from_secs(1))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .map_err(|e| format!("write: {e}"))?;
        let mut out = String::new();
        s.read_to_string(&mut out)
            .map_err(|e| format!("read: {e}"))?;
        match out.starts_with("HTTP/1.1 200") && t.elapsed() < Duration::from_secs(1) {
            true => Ok(t.elapsed()),
            false => Err(format!("after {:?}: {out:?}", t.elapsed())),
        }
    };
    let mut probes = 0;
    let mut worst_health = Duration::ZERO;
    let mut failures: Vec<String> = Vec::new();
    let (mut streak, mut worst_streak) = (0, 0);
    let mut allocations = Vec::new();
    let mut probe = |round: usize| {
        match health() {
            Ok(took) => {
                worst_health = worst_health.max(took);
                streak = 0;
            }
            Err(e) => {
                failures.push(e);
                streak += 1;
                worst_streak = worst_streak.max(streak);
            }
        }
        // Up to 100 UDP allocations held (the relay range has 200 ports).
        let (u, p) = mint(&format!("udp-{round}"));
        let mut c = UdpTurnClient::new(served.addr(), &u, &p);
        c.allocate();
        if allocations.len() < 100 {
            allocations.push(c);
        }
        let (u, p) = mint(&format!("tcp-{round}"));
        let mut t = StreamTurnClient::new(common::tcp(served.addr()), &u, &p);
        t.allocate();
        probes += 1;
    };
    let mut round = 0;
    while !attacker.is_finished() {
        probe(round);
        round += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let (held, peak) = attacker.join().unwrap();
    // Every attacking connection is still open on this side: probe once more under the full load.
    probe(round);
    let fds = served.open_fds();
    let m = common::get(metrics_addr.parse().unwrap(), "/metrics").body;
    let value = |series: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    };
    let open = value("turnd_http_connections_open ");
    let evicted = value(&format!("{} ", closed("evicted")));
    let refused_full = value(&format!("{} ", refused("full")));
    let accept_errors = value(&format!("{} ", refused("accept_error")));
    eprintln!(
        "{peak} connections held at the peak; {probes} probe rounds; /healthz failed {} times \
         ({failures:?}), worst answer {worst_health:?}; turnd \
         holds {fds} fds, {open} HTTP connections; evicted {evicted}, refused full \
         {refused_full}, accept errors {accept_errors}",
        failures.len()
    );
    // The flow measured the attack; the attacker's teardown is not part of it.
    let report = flow.stop();
    drop(held);
    assert!(
        peak as u64 >= attempts.min(10_000),
        "the attack held only {peak} connections at once"
    );
    assert!(probes >= 2, "probed during and after the attack");
    // A flood can win a race against one health check (accepted before its request arrived, see
    // docs/DESIGN.md), never against three in a row: Kubernetes' failureThreshold.
    assert!(
        worst_streak < 3 && failures.len() * 10 <= probes,
        "/healthz failed {} of {probes} times, {worst_streak} in a row: {failures:?}",
        failures.len()
    );
    assert!(
        fds < 1024,
        "turnd holds {fds} descriptors: the limit was reached"
    );
    assert!(
        open <= 256.0 && refused_full > 0.0,
        "HTTP holds {open} connections (its share is at most a quarter of 1024), refused {refused_full}"
    );
    assert_eq!(accept_errors, 0.0, "turnd never ran out of descriptors");
    report
}
