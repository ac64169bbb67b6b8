//! The admin API and `turnd sessions` (issue 16), against real sockets: `turnd sessions kill
//! --user alice` ends alice's UDP, TCP and TLS allocations within a second (her TCP and TLS
//! connections close, her UDP refresh gets 437) while bob's flows relay on; `turnd sessions list` shows
//! every allocation with its counters; the API refuses callers without its key when its
//! listener is beyond loopback (in a network namespace); it is never served on the public
//! HTTP port; bad requests get JSON errors with the right status.

mod common;

use common::flow::{Flow, FlowTransport};
use common::process::{free_port, rest, Served};
use common::{http_request, StreamTurnClient, UdpTurnClient};
use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};
use turnd_proto::client::Attr;
use turnd_proto::wire::Method;

const ADMIN_KEY: &str = "an-admin-key-for-this-test";

/// `turnd sessions ARGS` against the admin API at `admin`: (exit status, stdout, stderr).
fn sessions(admin: SocketAddr, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .arg("sessions")
        .args(args)
        .args([
            "--admin",
            &format!("http://{admin}"),
            "--admin-key",
            ADMIN_KEY,
        ])
        .env_remove("TURND_ADMIN_KEY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How long after `t0` the peer closed `conn` (EOF or an error), reading what still comes;
/// None if it stays open `limit` after `t0`. `conn` must have a short read timeout.
fn closed_within(conn: &mut impl Read, t0: Instant, limit: Duration) -> Option<Duration> {
    loop {
        let mut b = [0u8; 512];
        match conn.read(&mut b) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if t0.elapsed() > limit {
                    return None;
                }
            }
            Err(_) => return Some(t0.elapsed()),
        }
    }
}

fn list(admin: SocketAddr, user: Option<&str>) -> serde_json::Value {
    let mut args = vec!["list", "--json"];
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    let (code, out, err) = sessions(admin, &args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn killing_alice_ends_her_udp_tcp_and_tls_allocations_within_a_second_while_bob_relays_on() {
    let _cpu = common::cpu::whole();
    let metrics = free_port();
    let metrics_arg = format!("127.0.0.1:{metrics}");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = common::self_signed();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let tls_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let turnd = Served::start(&[
        "--tls-listen",
        &tls_addr.to_string(),
        "--tls-cert",
        cert_file.to_str().unwrap(),
        "--tls-key",
        key_file.to_str().unwrap(),
        "--metrics-listen",
        &metrics_arg,
        "--admin-key",
        ADMIN_KEY,
        "--allow-peer",
        "127.0.0.1/32",
        "--relay-ports",
        "33000-33099",
        "--workers",
        "2",
        "--selftest-interval",
        "0",
    ]);
    let admin: SocketAddr = metrics_arg.parse().unwrap();
    let (user, pass) = rest("bob");
    let bob_udp = Flow::start(turnd.addr(), FlowTransport::Udp, &user, &pass);
    let bob_tcp = Flow::start(turnd.addr(), FlowTransport::Tcp, &user, &pass);

    // Alice over UDP and TCP, each with a permission for a peer; 5 Send indications of 7
    // payload bytes go out over UDP.
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (user, pass) = rest("alice");
    let mut udp = UdpTurnClient::new(turnd.addr(), &user, &pass);
    let udp_relayed = udp.allocate();
    let r = udp.request(Method::CREATE_PERMISSION, &[Attr::Peer(peer_addr)]);
    assert_eq!(UdpTurnClient::code(&r), None);
    let mut tcp = StreamTurnClient::new(common::tcp(turnd.addr()), &user, &pass);
    tcp.allocate();
    let r = tcp.request(Method::CREATE_PERMISSION, &[Attr::Peer(peer_addr)]);
    assert_eq!(UdpTurnClient::code(&r), None);
    let mut tls = StreamTurnClient::new(common::tls(tls_addr, &der).unwrap(), &user, &pass);
    tls.allocate();
    for i in 0..5u8 {
        let tid = turnd_proto::wire::TransactionId([i; 12]);
        let ind = turnd_proto::client::send_indication(tid, peer_addr, b"u-alice");
        udp.sock.send_to(&ind, turnd.addr()).unwrap();
    }
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..5 {
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"u-alice");
    }

    // The list: alice's two allocations and bob's two, with addresses and counters.
    let all = list(admin, None);
    assert_eq!(all["count"], 5, "{all}");
    let alice = list(admin, Some("alice"));
    assert_eq!(alice["count"], 3, "{alice}");
    let alice_udp = alice["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["transport"] == "udp")
        .expect("alice's UDP allocation");
    assert_eq!(alice_udp["user_id"], "alice");
    assert_eq!(alice_udp["username"], user.as_str());
    assert_eq!(
        alice_udp["client"],
        udp.sock.local_addr().unwrap().to_string()
    );
    assert_eq!(alice_udp["relayed"][0], udp_relayed.to_string());
    assert_eq!(alice_udp["permissions"], 1);
    assert_eq!(alice_udp["to_peer"]["packets"], 5);
    assert_eq!(alice_udp["to_peer"]["bytes"], 35);
    let alice_tcp = alice["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["transport"] == "tcp")
        .expect("alice's TCP allocation");
    assert_eq!(
        alice_tcp["client"],
        tcp.stream.local_addr().unwrap().to_string()
    );
    assert_eq!(
        alice_tcp["server"],
        turnd.addr().to_string(),
        "the connection's local end"
    );
    assert_eq!(alice_udp["server"], turnd.addr().to_string());
    let bob = list(admin, Some("bob"));
    for a in bob["allocations"].as_array().unwrap() {
        assert!(a["to_peer"]["packets"].as_u64().unwrap() > 0, "{a}");
        assert!(a["to_client"]["packets"].as_u64().unwrap() > 0, "{a}");
        assert_eq!(a["channels"], 1);
    }
    // The table form names both users.
    let (code, table, _) = sessions(admin, &["list"]);
    assert_eq!(code, 0);
    assert!(table.contains("alice") && table.contains("bob"), "{table}");

    // Kill alice: her TCP connection closes and her UDP allocation is gone within a second.
    let mut reader = tcp.stream.try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t0 = Instant::now();
    let (code, out, err) = sessions(admin, &["kill", "--user", "alice"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ended 3 allocation"), "{out}");
    let closed = closed_within(&mut reader, t0, Duration::from_secs(3));
    let closed = closed.expect("alice's TCP connection closed");
    // Her TLS connection too (close_notify, or the socket closing under it).
    tls.stream
        .sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let tls_closed = closed_within(&mut tls.stream, t0, Duration::from_secs(3));
    let tls_closed = tls_closed.expect("alice's TLS connection closed");
    eprintln!("alice's TLS connection closed {tls_closed:?} after `turnd sessions kill` started");
    assert!(
        tls_closed < Duration::from_secs(1),
        "TLS closed after {tls_closed:?}"
    );
    assert!(closed < Duration::from_secs(1), "closed after {closed:?}");
    // Measured: the CLI's process start, HTTP round trip and both workers' turn included.
    eprintln!("alice's TCP connection closed {closed:?} after `turnd sessions kill` started");
    // RFC 8656 §7.3: no allocation for this 5-tuple any more: 437.
    let r = udp.request(Method::REFRESH, &[Attr::Lifetime(600)]);
    assert_eq!(UdpTurnClient::code(&r), Some(437));
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(list(admin, Some("alice"))["count"], 0);
    assert_eq!(list(admin, Some("bob"))["count"], 2);
    // The session events say why, with what alice's UDP allocation relayed.
    turnd.wait_for_log("allocation ended");
    let ended: Vec<String> = turnd
        .log()
        .lines()
        .filter(|l| l.contains("allocation ended") && l.contains("reason=\"admin\""))
        .map(str::to_owned)
        .collect();
    assert_eq!(ended.len(), 3, "{}", turnd.log());

    // Bob kept relaying throughout.
    std::thread::sleep(Duration::from_millis(500));
    bob_udp.stop().assert_unharmed("bob over UDP");
    bob_tcp.stop().assert_unharmed("bob over TCP");

    // The counters say why they ended.
    let stats = http_request(
        admin,
        "GET",
        "/admin/v1/stats",
        &[("Authorization", &format!("Bearer {ADMIN_KEY}"))],
        "",
    );
    assert_eq!(stats.status, 200);
    assert_eq!(
        stats.json()["allocations_ended"]["admin"],
        3,
        "{}",
        stats.body
    );
}

/// A request (method, path, headers) and the status it must get.
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16);

#[test]
fn the_admin_api_lives_on_the_metrics_listener_only_and_answers_json_errors() {
    let metrics = free_port();
    let metrics_arg = format!("127.0.0.1:{metrics}");
    let turnd = Served::start(&["--metrics-listen", &metrics_arg, "--admin-key", ADMIN_KEY]);
    let admin: SocketAddr = metrics_arg.parse().unwrap();
    let public: SocketAddr = ([127, 0, 0, 1], turnd.http).into();
    let auth = format!("Bearer {ADMIN_KEY}");
    let with_key = [("Authorization", auth.as_str())];
    // Never on the public HTTP port, key or not.
    for path in ["/admin/v1/allocations", "/admin/v1/stats"] {
        let r = http_request(public, "GET", path, &with_key, "");
        assert_eq!(r.status, 404, "{path} on http_listen: {}", r.body);
        assert!(r.json()["error"].is_string());
    }
    let cases: &[Case] = &[
        ("GET", "/admin/v1/allocations", &with_key, 200),
        ("GET", "/admin/v1/stats", &with_key, 200),
        ("GET", "/admin/v1/allocations?user=nobody", &with_key, 200),
        (
            "DELETE",
            "/admin/v1/allocations?user=nobody",
            &with_key,
            200,
        ),
        ("DELETE", "/admin/v1/allocations", &with_key, 400),
        ("GET", "/admin/v1/allocations?user=", &with_key, 400),
        ("POST", "/admin/v1/allocations", &with_key, 405),
        ("DELETE", "/admin/v1/stats", &with_key, 405),
        ("GET", "/admin/v1/sessions", &with_key, 404),
        // A key set: needed even on loopback. Missing: 401; wrong: 403.
        ("GET", "/admin/v1/allocations", &[], 401),
        (
            "DELETE",
            "/admin/v1/allocations?user=x",
            &[("Authorization", "Bearer not-the-admin-key!")],
            403,
        ),
    ];
    for (method, path, headers, want) in cases {
        let r = http_request(admin, method, path, headers, "");
        assert_eq!(r.status, *want, "{method} {path}: {}", r.body);
        let v = r.json();
        if *want == 200 {
            assert!(v.is_object());
        } else {
            assert!(
                v["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{method} {path}: {v}"
            );
        }
    }
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let lower = format!("bearer {ADMIN_KEY}");
    let r = http_request(
        admin,
        "GET",
        "/admin/v1/stats",
        &[("Authorization", lower.as_str())],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The CLI: a wrong key exits 1 saying why; bad flags exit 2.
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args([
            "sessions",
            "list",
            "--admin",
            &format!("http://{admin}"),
            "--admin-key",
            "a-wrong-admin-key-0000",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    for bad in [
        &["sessions", "kill"][..],
        &["sessions", "list", "--bogus"],
        &["sessions", "list", "--admin", "ftp://x"],
        &["sessions", "kill", "--user", " "],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
    // A reader that goes away (`turnd sessions list | head`) is no error and no panic.
    let mut child = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args(["sessions", "list", "--json", "--admin"])
        .arg(format!("http://{admin}"))
        .args(["--admin-key", ADMIN_KEY])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Bound beyond loopback (an address of a private namespace), the admin API refuses: without
/// an admin_key configured, always (403); with one, callers without it (401) or with another
/// (403). /metrics answers either way.
#[test]
fn beyond_loopback_the_admin_api_refuses_callers_without_its_key() {
    let Some(ns) = common::netns::NetNs::create("admin") else {
        return;
    };
    ns.ip(&["addr", "add", "10.77.0.1/32", "dev", "lo"]);
    for key in [None, Some(ADMIN_KEY)] {
        let statuses = ns.run(move || {
            let mut s = common::settings();
            s.metrics_listen = Some("10.77.0.1:0".into());
            s.admin_key = key.map(str::to_owned);
            let turnd = common::start(s);
            let addr = turnd.running.metrics.as_ref().unwrap().addr;
            assert!(!addr.ip().is_loopback());
            let get = |headers: &[(&str, &str)]| {
                http_request(addr, "GET", "/admin/v1/allocations", headers, "").status
            };
            let auth = format!("Bearer {ADMIN_KEY}");
            (
                get(&[]),
                get(&[("Authorization", "Bearer some-other-key-0000")]),
                get(&[("Authorization", &auth)]),
                http_request(addr, "GET", "/metrics", &[], "").status,
            )
        });
        match key {
            None => assert_eq!(statuses, (403, 403, 403, 200)),
            Some(_) => assert_eq!(statuses, (401, 403, 200, 200)),
        }
    }
    // `turnd serve` says so at start-up when the admin API is closed that way.
    let mut child = ns
        .command(env!("CARGO_BIN_EXE_turnd"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--relay-ip",
            "127.0.0.1",
            "--http-listen",
            "off",
        ])
        .args([
            "--metrics-listen",
            "10.77.0.1:0",
            "--selftest-interval",
            "0",
            "--secret",
            "a-secret-0123456789",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.contains("turnd ready") && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            log.push_str(&line);
            log.push('\n');
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        log.contains("beyond loopback and no admin_key is configured"),
        "{log}"
    );
}

/// admin_key is validated before anything is bound: too short is exit 2 naming the key.
#[test]
fn a_short_admin_key_is_refused_at_start_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args(["check-config", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "an empty file is valid");
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--relay-ip",
            "127.0.0.1",
            "--admin-key",
            "short",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin_key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// docs/admin-openapi.json describes what the server really answers: every documented
/// operation is called with and without its key, with and without a user (alice has an
/// allocation, so lists are not empty), and each answer's status and body must be documented.
#[test]
fn admin_openapi_description_matches_the_server() {
    use common::openapi::{conforms, resolve};
    let spec: serde_json::Value =
        serde_json::from_str(include_str!("../docs/admin-openapi.json")).unwrap();
    let mut s = common::settings();
    s.admin_key = Some(ADMIN_KEY.into());
    let turnd = common::start(s);
    let admin = turnd.running.metrics.as_ref().unwrap().addr;
    let (user, pass) = common::rest("alice", 600);
    let mut alice = UdpTurnClient::new(turnd.addr, &user, &pass);
    alice.allocate();
    let auth = format!("Bearer {ADMIN_KEY}");
    let key = [("Authorization", auth.as_str())];
    let wrong = [("Authorization", "Bearer another-key-entirely")];
    let mut statuses = std::collections::BTreeSet::new();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        // GET before DELETE: the lists must see alice's allocation before it is ended.
        let mut ops: Vec<_> = item.as_object().unwrap().iter().collect();
        ops.sort_by_key(|(method, _)| *method != "get");
        for (method, op) in ops {
            let m = method.to_uppercase();
            // DELETE last for alice: the lists before it see her allocation.
            let cases: [(String, &[(&str, &str)]); 6] = [
                (format!("{path}?user=alice"), &key),
                (format!("{path}?user=nobody"), &key),
                (path.clone(), &key),
                (format!("{path}?user="), &key),
                (format!("{path}?user=alice"), &[]),
                (format!("{path}?user=alice"), &wrong),
            ];
            for (target, headers) in cases {
                let r = http_request(admin, &m, &target, headers, "");
                let documented = &op["responses"][r.status.to_string()];
                assert!(
                    !documented.is_null(),
                    "{m} {target} answered {} which the spec does not list: {}",
                    r.status,
                    r.body
                );
                let schema = &resolve(&spec, documented)["content"]["application/json"]["schema"];
                conforms(&spec, schema, &r.json()).unwrap_or_else(|e| panic!("{m} {target}: {e}"));
                if m == "GET"
                    && path.ends_with("allocations")
                    && r.status == 200
                    && target.contains("alice")
                {
                    assert_eq!(
                        r.json()["count"],
                        1,
                        "alice's allocation is listed and checked"
                    );
                }
                statuses.insert((m.clone(), r.status));
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * 6, "every documented operation was exercised");
    for want in [
        ("DELETE", 200),
        ("DELETE", 400),
        ("GET", 200),
        ("GET", 400),
        ("GET", 401),
        ("GET", 403),
    ] {
        assert!(
            statuses.contains(&(want.0.to_owned(), want.1)),
            "{want:?} never seen: {statuses:?}"
        );
    }
    assert_eq!(
        turnd.running.ledger.total(),
        0,
        "DELETE ended alice's allocation"
    );
}
