//! Session events and usage records (issue 16), from `turnd serve` run as an operator runs it
//! (a child process, `--log-format json`), over real loopback sockets: every event kind's log
//! line carries its documented fields; an allocation's end carries exactly the packets and
//! bytes the test relayed through it, both ways, over UDP and TCP; usage records reconcile
//! with `turnd_relayed_bytes_total`; a flood of bad credentials logs a bounded number of
//! lines and a suppression summary; SIGTERM flushes records; SIGHUP reopens the file.

mod common;

use common::process::{free_port, rest, Served};
use common::{get, tcp, StreamTurnClient, UdpTurnClient};
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};
use turnd_proto::client::{self, Attr, ClientAuth};
use turnd_proto::wire::{Method, TransactionId};

/// The `fields` of every JSON log line of `event`.
fn events(log: &str, event: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.get("fields").cloned())
        .filter(|f| f.get("event").and_then(Value::as_str) == Some(event))
        .collect()
}

/// Waits (at most 5 s) until `event` has been logged `n` times; returns those lines.
fn wait_events(s: &Served, event: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = events(&s.log(), event);
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{n} `{event}` lines never logged; log:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn has_fields(v: &Value, fields: &[&str]) {
    for f in fields {
        assert!(v.get(f).is_some(), "field `{f}` missing from {v}");
    }
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each record is one JSON line"))
        .collect()
}

fn wait_records(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = records(path);
        if r.len() >= n {
            return r;
        }
        assert!(Instant::now() < deadline, "{n} usage records never written");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn relayed_bytes(metrics: u16) -> f64 {
    let r = get(([127, 0, 0, 1], metrics).into(), "/metrics");
    assert_eq!(r.status, 200);
    r.body
        .lines()
        .filter(|l| l.starts_with("turnd_relayed_bytes_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn metric(metrics: u16, name: &str) -> f64 {
    let r = get(([127, 0, 0, 1], metrics).into(), "/metrics");
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not exported"))
}

fn peer() -> UdpSocket {
    let p = UdpSocket::bind("127.0.0.1:0").unwrap();
    p.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    p
}

/// The peer receives one datagram of `len` bytes; returns where it came from.
fn peer_recv(p: &UdpSocket, len: usize) -> SocketAddr {
    let mut buf = [0u8; 2048];
    let (n, from) = p.recv_from(&mut buf).expect("the peer receives");
    assert_eq!(n, len);
    from
}

fn start(usage: &Path, extra: &[&str]) -> (Served, u16) {
    let metrics = free_port();
    let m = format!("127.0.0.1:{metrics}");
    let mut args = vec![
        // No periodic self-probe: its own allocations would be logged and recorded too.
        "--selftest-interval",
        "0",
        "--log-format",
        "json",
        "--workers",
        "1",
        "--allow-peer",
        "127.0.0.1/32",
        "--usage-log",
        usage.to_str().unwrap(),
        "--metrics-listen",
        &m,
    ];
    args.extend_from_slice(extra);
    let s = Served::start_env(&args, None, &[("RUST_LOG", "info,turnd::events=debug")]);
    (s, metrics)
}

const UDP_OUT: [usize; 3] = [100, 1, 1200];
const UDP_BACK: [usize; 2] = [50, 700];
const TCP_OUT: [usize; 2] = [7, 300];
const TCP_BACK: [usize; 1] = [13];

#[test]
fn every_event_is_logged_with_its_fields_and_ended_allocations_carry_exact_usage() {
    let dir = tempfile::tempdir().unwrap();
    let usage = dir.path().join("usage.log");
    let (s, metrics) = start(&usage, &[]);
    let before = relayed_bytes(metrics);
    let p = peer();
    let peer_addr = p.local_addr().unwrap();

    // UDP: allocate, bind a channel, relay both ways, refresh, delete.
    let (user, pass) = rest("alice");
    let mut c = UdpTurnClient::new(s.addr(), &user, &pass);
    let relayed = c.allocate();
    let r = c.request(
        Method::CHANNEL_BIND,
        &[Attr::Channel(0x4000), Attr::Peer(peer_addr)],
    );
    assert_eq!(UdpTurnClient::code(&r), None);
    for n in UDP_OUT {
        c.sock
            .send_to(&client::channel_data(0x4000, &vec![1; n], false), s.addr())
            .unwrap();
        assert_eq!(peer_recv(&p, n), relayed);
    }
    for n in UDP_BACK {
        p.send_to(&vec![2; n], relayed).unwrap();
        let mut buf = [0u8; 2048];
        let got = c.sock.recv(&mut buf).unwrap();
        assert_eq!(got, 4 + n, "ChannelData to the client");
    }
    // A denied peer (10.0.0.0/8 stays denied) and a refusal.
    let r = c.request(
        Method::CREATE_PERMISSION,
        &[Attr::Peer("10.1.2.3:9".parse().unwrap())],
    );
    assert_eq!(UdpTurnClient::code(&r), Some(403));
    let r = c.request(Method::REFRESH, &[Attr::Lifetime(900)]);
    assert_eq!(UdpTurnClient::code(&r), None);
    let r = c.request(Method::REFRESH, &[Attr::Lifetime(0)]);
    assert_eq!(UdpTurnClient::code(&r), None);

    // TCP: allocate, bind, relay both ways, close the connection.
    let (tuser, tpass) = rest("bob");
    let mut t = StreamTurnClient::new(tcp(s.addr()), &tuser, &tpass);
    let trelayed = t.allocate();
    let r = t.request(
        Method::CHANNEL_BIND,
        &[Attr::Channel(0x4001), Attr::Peer(peer_addr)],
    );
    assert_eq!(UdpTurnClient::code(&r), None);
    for n in TCP_OUT {
        t.send(&client::channel_data(0x4001, &vec![3; n], true));
        assert_eq!(peer_recv(&p, n), trelayed);
    }
    for n in TCP_BACK {
        p.send_to(&vec![4; n], trelayed).unwrap();
        let f = t.recv_frame().expect("ChannelData over TCP");
        assert_eq!(u16::from_be_bytes([f[2], f[3]]) as usize, n);
    }
    drop(t);

    // A wrong password.
    let mut bad = UdpTurnClient::new(s.addr(), &user, "wrong");
    let r = bad.request(Method::ALLOCATE, &[Attr::RequestedTransport(17)]);
    assert_eq!(UdpTurnClient::code(&r), Some(401));

    let ended = wait_events(&s, "allocation_ended", 2);
    let created = wait_events(&s, "allocation_created", 2);
    for e in &created {
        has_fields(
            e,
            &[
                "worker",
                "user_id",
                "username",
                "realm",
                "client",
                "server",
                "transport",
                "relayed",
                "lifetime_secs",
            ],
        );
    }
    assert_eq!(created[0]["user_id"], "alice");
    assert_eq!(created[0]["username"], user.as_str());
    assert_eq!(created[0]["transport"], "udp");
    assert_eq!(created[0]["relayed"], relayed.to_string());
    assert_eq!(
        created[0]["client"],
        c.sock.local_addr().unwrap().to_string()
    );
    assert_eq!(created[1]["transport"], "tcp");
    let refreshed = wait_events(&s, "allocation_refreshed", 1);
    assert_eq!(refreshed[0]["lifetime_secs"], 900);
    for kind in ["permission_installed", "channel_bound"] {
        let e = wait_events(&s, kind, 2);
        has_fields(&e[0], &["worker", "client", "transport", "peer"]);
    }
    assert_eq!(
        wait_events(&s, "channel_bound", 2)[0]["channel"],
        0x4000,
        "channel numbers are logged"
    );
    let denied = wait_events(&s, "peer_denied", 1);
    assert_eq!(denied[0]["peer"], "10.1.2.3:9");
    assert_eq!(denied[0]["method"], "create_permission");
    let refused = wait_events(&s, "request_refused", 1);
    assert_eq!(
        (refused[0]["code"].as_u64(), refused[0]["method"].as_str()),
        (Some(403), Some("create_permission"))
    );
    has_fields(&refused[0], &["reason", "client", "transport"]);
    let failed = wait_events(&s, "auth_failed", 1);
    assert_eq!(failed[0]["reason"], "bad_integrity");
    assert_eq!(
        failed[0]["client"],
        bad.sock.local_addr().unwrap().to_string()
    );

    // The ended events: reason, duration and exactly what was relayed, each way.
    let (udp_end, tcp_end) = (&ended[0], &ended[1]);
    has_fields(
        udp_end,
        &[
            "worker",
            "user_id",
            "username",
            "realm",
            "client",
            "transport",
            "duration_ms",
        ],
    );
    assert_eq!(udp_end["reason"], "deleted");
    assert_eq!(tcp_end["reason"], "connection_closed");
    let counts = |e: &Value| {
        [
            "packets_to_peer",
            "bytes_to_peer",
            "packets_to_client",
            "bytes_to_client",
        ]
        .map(|k| e[k].as_u64().unwrap_or_else(|| panic!("{k} in {e}")))
    };
    let sum = |v: &[usize]| v.iter().sum::<usize>() as u64;
    assert_eq!(
        counts(udp_end),
        [3, sum(&UDP_OUT), 2, sum(&UDP_BACK)],
        "UDP allocation's usage"
    );
    assert_eq!(
        counts(tcp_end),
        [2, sum(&TCP_OUT), 1, sum(&TCP_BACK)],
        "TCP allocation's usage"
    );

    // Usage records: one per ended allocation, with the same counts, and their bytes are the
    // metric's growth.
    let recs = wait_records(&usage, 2);
    assert_eq!(recs.len(), 2);
    for (r, e) in recs.iter().zip([udp_end, tcp_end]) {
        has_fields(
            r,
            &[
                "user_id",
                "username",
                "realm",
                "client",
                "transport",
                "start",
                "end",
                "reason",
            ],
        );
        assert_eq!(counts(r), counts(e));
        assert_eq!(r["reason"], e["reason"]);
        assert_eq!(r["user_id"], e["user_id"]);
    }
    let record_bytes: u64 = recs
        .iter()
        .map(|r| r["bytes_to_peer"].as_u64().unwrap() + r["bytes_to_client"].as_u64().unwrap())
        .sum();
    // Stats are published every 100 ms.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut grown = relayed_bytes(metrics) - before;
    while grown != record_bytes as f64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        grown = relayed_bytes(metrics) - before;
    }
    assert_eq!(
        grown, record_bytes as f64,
        "records reconcile with the metric"
    );
    assert_eq!(metric(metrics, "turnd_usage_records_total"), 2.0);
    assert_eq!(metric(metrics, "turnd_usage_records_dropped_total"), 0.0);
    assert_eq!(metric(metrics, "turnd_events_dropped_total"), 0.0);
}

#[test]
fn a_flood_of_bad_credentials_logs_a_bounded_number_of_lines_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, metrics) = start(&dir.path().join("usage.log"), &[]);
    let (user, _) = rest("mallory");
    // One round trip for a nonce, then 100,000 Allocates with a wrong password on it.
    let mut c = UdpTurnClient::new(s.addr(), &user, "wrong");
    let r = c.request(Method::ALLOCATE, &[Attr::RequestedTransport(17)]);
    assert_eq!(UdpTurnClient::code(&r), Some(401));
    let auth: ClientAuth = c.auth.clone();
    let started = Instant::now();
    for i in 0..100_000u32 {
        let mut tid = [7u8; 12];
        tid[..4].copy_from_slice(&i.to_be_bytes());
        let req = client::request(
            Method::ALLOCATE,
            TransactionId(tid),
            &[Attr::RequestedTransport(17)],
            Some(&auth),
            false,
        );
        c.sock.send_to(&req, s.addr()).unwrap();
        if i % 256 == 0 {
            // Let the worker keep up a little (loopback drops what overflows its buffer).
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "bounded in time"
        );
    }
    // Every failure the server counted is accounted for below: logged, summarised, or
    // dropped from a full queue. Wait until the published count stops moving.
    let failures = "turnd_auth_failures_total{reason=\"bad_integrity\"}";
    let mut counted = metric(metrics, failures);
    loop {
        std::thread::sleep(Duration::from_millis(400));
        let now = metric(metrics, failures);
        if now == counted {
            break;
        }
        counted = now;
    }
    let dropped = metric(metrics, "turnd_events_dropped_total");
    s.signal(libc::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.is_running() {
        assert!(Instant::now() < deadline, "turnd stops on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let log = s.log();
    let failed = events(&log, "auth_failed").len();
    let summary: u64 = events(&log, "events_suppressed")
        .iter()
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert!(failed >= 1, "some failures are logged");
    assert!(
        failed <= turnd::events::limiter::PER_SOURCE as usize * 3,
        "one source: a handful of lines per window, not {failed}"
    );
    assert!(
        log.lines().count() < 300,
        "{} log lines",
        log.lines().count()
    );
    assert!(counted > 1000.0, "the flood reached the server: {counted}");
    assert_eq!(
        failed as f64 + summary as f64 + dropped,
        counted,
        "logged {failed} + suppressed {summary} + dropped {dropped} = counted"
    );
}

#[test]
fn sigterm_drain_flushes_the_usage_record_of_a_live_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let usage = dir.path().join("usage.log");
    let (mut s, _) = start(&usage, &["--drain-timeout", "1"]);
    let p = peer();
    let (user, pass) = rest("carol");
    let mut c = UdpTurnClient::new(s.addr(), &user, &pass);
    let relayed = c.allocate();
    let r = c.request(
        Method::CHANNEL_BIND,
        &[Attr::Channel(0x4002), Attr::Peer(p.local_addr().unwrap())],
    );
    assert_eq!(UdpTurnClient::code(&r), None);
    c.sock
        .send_to(&client::channel_data(0x4002, &[9; 77], false), s.addr())
        .unwrap();
    assert_eq!(peer_recv(&p, 77), relayed);
    s.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.is_running() {
        assert!(Instant::now() < deadline, "turnd exits after the drain");
        std::thread::sleep(Duration::from_millis(20));
    }
    let recs = records(&usage);
    assert_eq!(recs.len(), 1, "the live allocation's record is written");
    assert_eq!(recs[0]["reason"], "drained");
    assert_eq!(recs[0]["user_id"], "carol");
    assert_eq!(recs[0]["bytes_to_peer"], 77);
    assert_eq!(recs[0]["packets_to_peer"], 1);
}

#[test]
fn sighup_reopens_the_usage_log_after_a_rename() {
    let dir = tempfile::tempdir().unwrap();
    let usage = dir.path().join("usage.log");
    let rotated = dir.path().join("usage.log.1");
    let (s, _) = start(&usage, &[]);
    let session = |who: &str| {
        let (user, pass) = rest(who);
        let mut c = UdpTurnClient::new(s.addr(), &user, &pass);
        c.allocate();
        let r = c.request(Method::REFRESH, &[Attr::Lifetime(0)]);
        assert_eq!(UdpTurnClient::code(&r), None);
    };
    session("dave");
    assert_eq!(wait_records(&usage, 1)[0]["user_id"], "dave");
    std::fs::rename(&usage, &rotated).unwrap();
    s.signal(libc::SIGHUP);
    s.wait_for_log("usage log reopened");
    session("erin");
    let new = wait_records(&usage, 1);
    assert_eq!(new.len(), 1);
    assert_eq!(new[0]["user_id"], "erin", "new records go to the new file");
    let old = records(&rotated);
    assert_eq!(old.len(), 1);
    assert_eq!(
        old[0]["user_id"], "dave",
        "the renamed file keeps its records"
    );
}

#[test]
fn a_usage_log_that_cannot_be_written_names_the_key_and_exits_2() {
    for bad in ["/nonexistent-dir-for-turnd/usage.log", ""] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnd"))
            .args(["serve", "--listen", "127.0.0.1:1", "--usage-log", bad])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {err}");
        assert!(err.contains("usage_log"), "{bad:?}: {err}");
        assert!(!err.contains("listening"), "nothing was bound: {err}");
    }
    // The same key as an environment variable (config key = flag = TURND_* variable).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args(["serve", "--listen", "127.0.0.1:1"])
        .env("TURND_USAGE_LOG", "/nonexistent-dir-for-turnd/u.log")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("usage_log"), "{err}");
}

/// RFC 8656 §7.3 lets a Refresh shorten the lifetime: one second later the allocation runs
/// out, and its end is logged and recorded as `expired`.
#[test]
fn an_allocation_that_runs_out_is_logged_and_recorded_as_expired() {
    let dir = tempfile::tempdir().unwrap();
    let usage = dir.path().join("usage.log");
    let (s, _) = start(&usage, &[]);
    let (user, pass) = rest("frank");
    let mut c = UdpTurnClient::new(s.addr(), &user, &pass);
    c.allocate();
    let r = c.request(Method::REFRESH, &[Attr::Lifetime(1)]);
    assert_eq!(UdpTurnClient::code(&r), None);
    let ended = wait_events(&s, "allocation_ended", 1);
    assert_eq!(ended[0]["reason"], "expired", "{}", s.log());
    assert_eq!(ended[0]["user_id"], "frank");
    let recs = wait_records(&usage, 1);
    assert_eq!(recs[0]["reason"], "expired");
    assert!(recs[0]["duration_ms"].as_u64().unwrap() >= 1000);
}
