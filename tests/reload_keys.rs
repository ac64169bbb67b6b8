//! Every reloadable key takes effect on SIGHUP, and every restart-only key that changed is
//! named in the log (issue 16), against `turnd serve` as a child process on loopback.
//!
//! Covered here: default_ttl, max_ttl, cors_origin, admin_key, user, tls_handshake_timeout,
//! tcp_idle_timeout, selftest_interval, drain_timeout. secret, revoke, allow_peer and api_key
//! are in tests/reload.rs, what a reload ends (revoke, removed secret or user) in
//! tests/revocation.rs, strict_expiry's path in tests/reload.rs
//! `strict_expiry_flag_reaches_the_credential_check`, and the certificate in tests/streams.rs.
//! That each key is classified at all is checked by the compiler (`reload::plan`) and, key by
//! key, by the unit test in src/reload.rs.

mod common;

use common::process::{free_port, Served};
use common::{get, http_request, UdpTurnClient};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use turnd_proto::client::Attr;
use turnd_proto::wire::Method;

const SECRET: &str = "a-secret-for-reload-keys";
const ADMIN_KEY: &str = "an-admin-key-for-reloading";

/// Whether the server closes `s` within `within` (it never sends anything on its own).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut b = [0u8; 64];
    while Instant::now() < deadline {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

fn selftest_runs(metrics: SocketAddr) -> f64 {
    get(metrics, "/metrics")
        .body
        .lines()
        .find_map(|l| l.strip_prefix("turnd_selftest_runs_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn each_reloadable_key_takes_effect_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = common::self_signed();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let file = dir.path().join("turnd.toml");
    let base = format!(
        "secret = [\"{SECRET}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert_file.display(),
        key_file.display()
    );
    let write = |extra: &str| std::fs::write(&file, format!("{base}{extra}")).unwrap();
    write("selftest_interval = 0\n");
    let (metrics_port, tls_port) = (free_port(), free_port());
    let metrics: SocketAddr = ([127, 0, 0, 1], metrics_port).into();
    let tls: SocketAddr = ([127, 0, 0, 1], tls_port).into();
    let mut turnd = Served::start(&[
        "--config",
        file.to_str().unwrap(),
        "--metrics-listen",
        &metrics.to_string(),
        "--tls-listen",
        &tls.to_string(),
        "--relay-ports",
        "34000-34099",
        "--workers",
        "1",
    ]);
    let http: SocketAddr = ([127, 0, 0, 1], turnd.http).into();
    let ttl =
        |q: &str| get(http, &format!("/api/v1/credentials?username=web{q}")).json()["ttl"].as_u64();
    let origin = || {
        http_request(
            http,
            "GET",
            "/api/v1/credentials?username=web",
            &[("Origin", "https://app.example.com")],
            "",
        )
        .header("access-control-allow-origin")
        .map(str::to_owned)
    };
    let admin_status = || get(metrics, "/admin/v1/allocations").status;
    let static_user = || {
        let mut c = UdpTurnClient::new(turnd.addr(), "carol", "carols-password");
        UdpTurnClient::code(&c.request(Method::ALLOCATE, &[Attr::RequestedTransport(17)]))
    };
    let (ttl_before, ttl_max_before) = (ttl(""), ttl("&ttl=100000"));
    assert_eq!((ttl_before, ttl_max_before), (Some(3600), Some(86_400)));
    assert_eq!(origin(), None);
    assert_eq!(admin_status(), 200, "loopback, no admin_key: open");
    assert_eq!(static_user(), Some(401));
    // Connections that never send anything: one plain TCP, one stuck before its TLS handshake.
    let mut plain = TcpStream::connect(turnd.addr()).unwrap();
    let mut handshaking = TcpStream::connect(tls).unwrap();
    std::thread::sleep(Duration::from_millis(1500));

    // Stage 1: everything but the idle timeout and the drain.
    write(&format!(
        "default_ttl = 120\nmax_ttl = 600\ncors_origin = [\"https://app.example.com\"]\n\
         admin_key = \"{ADMIN_KEY}\"\nuser = [\"carol:carols-password\"]\n\
         tls_handshake_timeout = 1\nselftest_interval = 1\n"
    ));
    let runs_before = selftest_runs(metrics);
    turnd.signal(libc::SIGHUP);
    turnd.wait_for_log("configuration reloaded");
    assert_eq!(ttl(""), Some(120), "default_ttl");
    assert_eq!(ttl("&ttl=100000"), Some(600), "max_ttl");
    assert_eq!(
        origin().as_deref(),
        Some("https://app.example.com"),
        "cors_origin"
    );
    assert_eq!(admin_status(), 401, "admin_key");
    let r = http_request(
        metrics,
        "GET",
        "/admin/v1/allocations",
        &[("Authorization", &format!("Bearer {ADMIN_KEY}"))],
        "",
    );
    assert_eq!(r.status, 200);
    assert_eq!(static_user(), None, "user");
    assert!(
        closed_within(&mut handshaking, Duration::from_secs(3)),
        "tls_handshake_timeout"
    );
    assert!(
        !closed_within(&mut plain, Duration::from_millis(200)),
        "tcp_idle_timeout is still 30 s"
    );
    common::eventually("selftest_interval: the probe runs", || {
        selftest_runs(metrics) > runs_before
    });

    // Stage 2: the idle timeout, and a short drain.
    write(&format!(
        "default_ttl = 120\nmax_ttl = 600\nadmin_key = \"{ADMIN_KEY}\"\nuser = [\"carol:carols-password\"]\n\
         tcp_idle_timeout = 1\ndrain_timeout = 1\nselftest_interval = 0\n"
    ));
    turnd.signal(libc::SIGHUP);
    let reloaded = turnd.log().matches("configuration reloaded").count();
    let deadline = Instant::now() + Duration::from_secs(5);
    while turnd.log().matches("configuration reloaded").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "second reload never logged: {reloaded}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        closed_within(&mut plain, Duration::from_secs(3)),
        "tcp_idle_timeout"
    );
    // An allocation keeps the drain waiting: for drain_timeout (now 1 s, was 8 s).
    let (user, pass) = {
        let c = turnd_proto::auth::mint_rest_credential(
            SECRET.as_bytes(),
            "d",
            turnd::clock::unix_now(),
            600,
        );
        (c.username, c.password)
    };
    let mut c = UdpTurnClient::new(turnd.addr(), &user, &pass);
    c.allocate();
    let t0 = Instant::now();
    turnd.signal(libc::SIGTERM);
    while turnd.is_running() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "drain_timeout not applied: still draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "drained in {took:?}"
    );
}

#[test]
fn each_restart_only_key_that_changed_is_named_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("turnd.toml");
    let base = format!("secret = [\"{SECRET}\"]\nselftest_interval = 0\n");
    std::fs::write(&file, &base).unwrap();
    let turnd = Served::start(&[
        "--config",
        file.to_str().unwrap(),
        "--relay-ports",
        "35000-35099",
    ]);
    // listen, http_listen, relay_ip, relay_ports, metrics_listen and tls_listen are set by
    // flags here
    // (flags win over the file); the unit test in src/reload.rs names them.
    // The default is one per core: one more differs.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = format!("workers = {}", cores + 1);
    let keys: &[(&str, &str)] = &[
        ("realm", "realm = \"elsewhere\""),
        ("user_quota", "user_quota = 3"),
        ("max_allocations", "max_allocations = 3"),
        ("max_permissions", "max_permissions = 3"),
        ("max_channels", "max_channels = 3"),
        ("legacy_channel_numbers", "legacy_channel_numbers = true"),
        ("stun_alternate", "stun_alternate = \"127.0.0.2:0\""),
        ("workers", &workers),
        ("log_format", "log_format = \"json\""),
        ("public_host", "public_host = [\"turn.example.net\"]"),
        ("max_connections", "max_connections = 3"),
        ("max_connections_per_ip", "max_connections_per_ip = 3"),
        ("http_rate_limit", "http_rate_limit = 3"),
        ("error_rate_per_source", "error_rate_per_source = 3"),
        ("ipv6_source_prefix", "ipv6_source_prefix = 56"),
        (
            "max_allocations_per_address",
            "max_allocations_per_address = 3",
        ),
        ("http_header_timeout", "http_header_timeout = 3"),
        ("http_body_timeout", "http_body_timeout = 3"),
        ("http_idle_timeout", "http_idle_timeout = 3"),
        ("http_max_connections", "http_max_connections = 3"),
        (
            "http_max_connections_per_ip",
            "http_max_connections_per_ip = 3",
        ),
    ];
    for (key, line) in keys {
        std::fs::write(&file, format!("{base}{line}\n")).unwrap();
        turnd.signal(libc::SIGHUP);
        turnd.wait_for_log(&format!("SIGHUP: {key} changed; needs a restart"));
    }
    // Only the key that changed in each reload was named: the file went back each time.
    let log = turnd.log();
    for (key, _) in keys {
        assert_eq!(
            log.matches(&format!("SIGHUP: {key} changed;")).count(),
            1,
            "{key}: {log}"
        );
    }
    // And the running values stayed: the realm is still the old one in a 401 challenge.
    let mut c = UdpTurnClient::new(turnd.addr(), "nobody", "nothing");
    let r = c.request(Method::ALLOCATE, &[Attr::RequestedTransport(17)]);
    let msg = turnd_proto::wire::Message::parse(&r).unwrap();
    assert_eq!(turnd_proto::client::error_code(&msg), Some(401));
    assert!(!String::from_utf8_lossy(&r).contains("elsewhere"));
}
