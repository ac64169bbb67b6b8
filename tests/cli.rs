//! The command line, as a user runs it: bad settings exit non-zero naming the key, before
//! anything is bound; `credentials` prints the JSON a client consumes; `check-config` accepts
//! the shipped config/turnd.toml.

mod common;

use common::process::{free_port, readyz, signal, spawn_serve, wait_ready};

use std::process::Command;

fn common_client(server: std::net::SocketAddr, user: &str, pass: &str) -> common::UdpTurnClient {
    common::UdpTurnClient::new(server, user, pass)
}

fn turnd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args(args)
        .env_remove("TURND_SECRET")
        .output()
        .expect("turnd runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn bad_settings_name_the_key_and_exit_nonzero_before_binding() {
    // Port 1 on loopback would bind fine as root; the error must come first.
    for (args, key) in [
        (
            vec!["serve", "--listen", "127.0.0.1:1", "--relay-ports", "9-3"],
            "relay_ports",
        ),
        (
            vec![
                "serve",
                "--listen",
                "127.0.0.1:1",
                "--allow-peer",
                "10.0.0.0/40",
            ],
            "allow_peer",
        ),
        (vec!["serve", "--listen", "nowhere"], "listen"),
        (
            vec!["serve", "--listen", "127.0.0.1:1", "--log-format", "xml"],
            "log_format",
        ),
        (
            vec!["serve", "--listen", "127.0.0.1:1", "--workers", "0"],
            "workers",
        ),
        (
            vec!["serve", "--listen", "127.0.0.1:1", "--max-ttl", "0"],
            "max_ttl",
        ),
        (
            vec![
                "serve",
                "--listen",
                "127.0.0.1:1",
                "--stun-alternate",
                "127.0.0.1:2",
            ],
            "stun_alternate",
        ),
        (
            vec![
                "serve",
                "--listen",
                "0.0.0.0:1",
                "--stun-alternate",
                "127.0.0.2:2",
            ],
            "stun_alternate",
        ),
        (
            vec!["serve", "--listen", "127.0.0.1:1", "--stun-alternate-url"],
            "stun_alternate_url",
        ),
    ] {
        let (code, _, err) = turnd(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(key), "{args:?} must name {key}: {err}");
        assert!(!err.contains("listening"), "nothing was bound: {err}");
    }
    let (code, _, err) = turnd(&["serve", "--user-quota", "lots"]);
    assert_ne!(code, 0);
    assert!(err.contains("--user-quota"), "{err}");
}

#[test]
fn environment_sits_between_flags_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.toml");
    std::fs::write(
        &file,
        "listen = [\"127.0.0.1:3478\"]\nrelay_ports = \"oops\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args([
            "credentials",
            "--username",
            "u",
            "--config",
            file.to_str().unwrap(),
        ])
        .env("TURND_SECRET", "secret-from-env")
        .env("TURND_RELAY_PORTS", "50000-50010")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "env overrides the file's bad relay_ports: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args([
            "credentials",
            "--username",
            "u",
            "--config",
            file.to_str().unwrap(),
            "--relay-ports",
            "7-1",
        ])
        .env("TURND_SECRET", "secret-from-env")
        .env("TURND_RELAY_PORTS", "50000-50010")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the flag overrides the environment");
}

#[test]
fn credentials_prints_the_rest_shape_verifiable_with_the_secret() {
    let (code, out, err) = turnd(&[
        "credentials",
        "--secret",
        "a-long-secret",
        "--username",
        "alice",
        "--ttl",
        "600",
        "--listen",
        "127.0.0.1:3478",
        "--public-host",
        "relay.example.com",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let username = v["username"].as_str().unwrap();
    let (expiry, id) = turnd_proto::auth::parse_rest_username(username).unwrap();
    assert_eq!(id, "alice");
    assert!(expiry.abs_diff(turnd::clock::unix_now() + 600) <= 5);
    assert_eq!(v["ttl"], 600);
    assert_eq!(
        v["password"],
        turnd_proto::auth::rest_password(b"a-long-secret", username)
    );
    assert_eq!(
        v["uris"],
        serde_json::json!([
            "turn:relay.example.com:3478?transport=udp",
            "turn:relay.example.com:3478?transport=tcp"
        ])
    );

    let (code, _, err) = turnd(&["credentials", "--username", "alice"]);
    assert_eq!(code, 2);
    assert!(err.contains("secret"), "{err}");
}

#[test]
fn shipped_config_file_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/turnd.toml");
    let (code, out, err) = turnd(&["check-config", path]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"));
    let (code, _, err) = turnd(&["check-config", "/nonexistent.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("nonexistent"), "{err}");
}

/// `turnd check-config` catches ACME mistakes before start: a name that is not a DNS name,
/// a directory that is not https, no cache, and accepts a complete ACME configuration.
#[test]
fn check_config_catches_acme_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("turnd.toml");
    let base = "secret = \"a-long-enough-test-secret\"\ntls_listen = \"127.0.0.1:0\"\n";
    for (extra, key) in [
        ("acme_domain = \"not a name\"\nacme_cache = \"/tmp/c\"", "acme_domain:"),
        ("acme_domain = \"10.0.0.1\"\nacme_cache = \"/tmp/c\"", "acme_domain:"),
        (
            "acme_domain = \"turn.example.com\"\nacme_cache = \"/tmp/c\"\nacme_directory = \"http://ca.example.com/dir\"",
            "acme_directory:",
        ),
        ("acme_domain = \"turn.example.com\"", "acme_cache:"),
    ] {
        std::fs::write(&file, format!("{base}{extra}\n")).unwrap();
        let (code, _, err) = turnd(&["check-config", file.to_str().unwrap()]);
        assert_ne!(code, 0, "{extra}");
        assert!(err.contains(key), "{extra}: {err}");
    }
    std::fs::write(
        &file,
        format!("{base}acme_domain = \"turn.example.com\"\nacme_cache = \"/tmp/c\"\n"),
    )
    .unwrap();
    let (code, out, err) = turnd(&["check-config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"), "{out}");
}

/// `turnd nat`: a server that cannot be resolved, port 0, a bad --bind or one of the other
/// address family is exit 2 naming the flag; a
/// server nobody answers on is exit 1 with "nothing reaches the server".
#[test]
fn nat_exit_codes() {
    let (code, _, err) = turnd(&["nat", "--server", "no-such-host.invalid:3478"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("server:"), "{err}");
    let (code, _, err) = turnd(&["nat", "--server", "127.0.0.1:3478", "--bind", "x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bind:"), "{err}");
    // A socket of the other family, or port 0: bad arguments, not "UDP does not get out".
    let (code, _, err) = turnd(&["nat", "--server", "127.0.0.1:3478", "--bind", "[::1]:0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bind:") && err.contains("families"), "{err}");
    let (code, _, err) = turnd(&["nat", "--server", "127.0.0.1:0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("server:") && err.contains("port 0"), "{err}");
    // A port nobody listens on, UDP or TCP: the run says so and exits 1.
    let port = free_port().to_string();
    let server = format!("127.0.0.1:{port}");
    let (code, out, err) = turnd(&["nat", "--server", &server, "--timeout-ms", "300"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("udp: no") && out.contains("tcp: no"), "{out}");
    assert!(out.contains("meaning: nothing reaches the server"), "{out}");
}

/// SIGTERM and SIGINT stop `turnd serve` cleanly: exit status 0, promptly.
#[test]
fn sigterm_and_sigint_stop_cleanly() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let (mut child, _, http) = spawn_serve(&[], std::process::Stdio::null());
        wait_ready(http);
        signal(&child, sig);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("turnd did not stop within 5 s of signal {sig}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "signal {sig}");
    }
}

/// SIGHUP re-reads the TLS certificate: a new connection sees the new one, and the process
/// keeps running.
#[test]
fn sighup_reloads_the_tls_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str| {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), c.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), c.key_pair.serialize_pem()).unwrap();
        c.cert.der().to_vec()
    };
    let first = write("localhost");
    let tls = free_port();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let tls_listen = format!("127.0.0.1:{tls}");
    let args = [
        "--tls-listen",
        &tls_listen,
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let (mut child, _, _) = spawn_serve(&args, std::process::Stdio::null());
    let served_cert = || -> Option<Vec<u8>> {
        let cfg = turnd::tls::unverified_client_config();
        let mut conn = rustls::ClientConnection::new(cfg, "localhost".try_into().unwrap()).unwrap();
        let mut sock = std::net::TcpStream::connect(("127.0.0.1", tls)).ok()?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).ok()?;
        }
        Some(conn.peer_certificates()?[0].to_vec())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while served_cert().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "turnd never served TLS"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(served_cert().unwrap(), first);
    let second = write("localhost");
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while served_cert().as_deref() != Some(&second[..]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP did not stop turnd"
    );
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// SIGTERM drains: /readyz turns 503 and new allocations are refused while an existing one
/// keeps working; the process exits 0 once it ends (here: after the drain timeout).
/// A `turnd serve` child with one allocation, sent SIGTERM and seen draining (`/readyz` 503).
struct Draining {
    child: std::process::Child,
    server: std::net::SocketAddr,
    /// The credential the allocation used.
    c: turnd_proto::auth::RestCredential,
    existing: common::UdpTurnClient,
    /// When SIGTERM was sent.
    started: std::time::Instant,
}

fn start_draining(drain_timeout: &str) -> Draining {
    let args = ["--selftest-interval", "0", "--drain-timeout", drain_timeout];
    let (child, udp, http) = spawn_serve(&args, std::process::Stdio::null());
    wait_ready(http);
    let server: std::net::SocketAddr = format!("127.0.0.1:{udp}").parse().unwrap();
    let c = turnd_proto::auth::mint_rest_credential(
        b"a-long-test-secret",
        "drain",
        turnd::clock::unix_now(),
        600,
    );
    let mut existing = common_client(server, &c.username, &c.password);
    existing.allocate();
    signal(&child, libc::SIGTERM);
    let started = std::time::Instant::now();
    while readyz(http) != Some(503) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "never reported draining"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Draining {
        child,
        server,
        c,
        existing,
        started,
    }
}

#[test]
fn sigterm_drains_before_exiting() {
    use turnd_proto::client::Attr;
    use turnd_proto::wire::Method;
    let Draining {
        child,
        server,
        c,
        mut existing,
        started,
        ..
    } = start_draining("2");
    let mut late = common_client(server, &c.username, &c.password);
    let r = late.request(Method::ALLOCATE, &[Attr::RequestedTransport(17)]);
    assert_eq!(
        turnd_proto::client::error_code(&turnd_proto::wire::Message::parse(&r).unwrap()),
        Some(508)
    );
    let r = existing.request(Method::REFRESH, &[Attr::Lifetime(600)]);
    assert_eq!(
        turnd_proto::client::error_code(&turnd_proto::wire::Message::parse(&r).unwrap()),
        None,
        "the existing allocation still works"
    );
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(0));
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(1500) && took < std::time::Duration::from_secs(6),
        "drained for {took:?}"
    );
}

/// SIGINT during a SIGTERM drain stops at once (issue 20): the drain would wait 30 s for the
/// live allocation, SIGINT ends it within a couple of seconds, exit status 0.
#[test]
fn sigint_during_a_sigterm_drain_exits_at_once() {
    let Draining { mut child, .. } = start_draining("30");
    // Still draining (the allocation lives for 600 s, the drain for 30 s).
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "exited before SIGINT");
    let interrupted = std::time::Instant::now();
    signal(&child, libc::SIGINT);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if interrupted.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            panic!("SIGINT did not cut the drain short");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let took = interrupted.elapsed();
    assert!(
        took < std::time::Duration::from_secs(3),
        "SIGINT took {took:?}"
    );
}

/// A private relay address without --external-ip is the classic reason relaying fails across
/// networks: turnd says so at start-up.
#[test]
fn a_relay_address_the_internet_cannot_reach_draws_a_warning() {
    for (ip, kind) in [
        ("10.99.0.1", "private"),
        ("203.0.113.9", "in a documentation range"),
    ] {
        // Relay sockets bind lazily, so an address this host lacks still starts.
        let args = ["--selftest-interval", "0", "--relay-ip", ip];
        let (child, _, http) = spawn_serve(&args, std::process::Stdio::piped());
        wait_ready(http);
        signal(&child, libc::SIGINT);
        let out = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains(&format!(
                "{ip} is {kind}, not reachable from the Internet, and no --external-ip is set"
            )),
            "{log}"
        );
        // The start-up log also says where the browser test page is.
        assert!(
            log.contains(&format!("http://127.0.0.1:{http}/")) && log.contains("relay test page"),
            "{log}"
        );
        assert!(
            !log.contains('\x1b'),
            "colour codes in a log that is not a terminal: {log}"
        );
    }
}

/// Compose and Kubernetes pass `KEY=` for a value left blank: every `TURND_*` variable that is
/// set but empty means "not set". With all of them empty (the list comes from the settings
/// themselves, so a new key is covered without touching this test) and no flags, turnd starts
/// on its embedded defaults. It runs in a private network namespace with one address of its
/// own, so the defaults (wildcard listeners, the first non-loopback address as relay, the
/// self-probe) touch nothing outside the namespace.
#[test]
fn every_empty_turnd_variable_means_the_default() {
    use clap::Args;
    let Some(ns) = common::netns::NetNs::create("env") else {
        return;
    };
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "v0"]);
    ns.ip(&["link", "set", "v0", "up"]);
    ns.ip(&["link", "set", "v1", "up"]);
    let keys: Vec<String> = turnd::config::Settings::augment_args(clap::Command::new("t"))
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    assert!(keys.len() > 40, "{keys:?}");
    let with_empty_env = |cmd: &mut Command| {
        for k in &keys {
            cmd.env(k, "");
        }
    };
    let mut serve = ns.command(env!("CARGO_BIN_EXE_turnd"));
    serve.arg("serve").stderr(std::process::Stdio::piped());
    with_empty_env(&mut serve);
    let mut child = serve.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let ready = loop {
        let mut health = ns.command(env!("CARGO_BIN_EXE_turnd"));
        health.arg("healthcheck");
        with_empty_env(&mut health);
        if health.output().unwrap().status.success() {
            break true;
        }
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(ready, "turnd did not start on defaults:\n{log}");
    assert!(
        log.contains("random ephemeral secret") && log.contains("10.77.0.1"),
        "an empty TURND_SECRET is no secret, and the relay address is detected:\n{log}"
    );
}
