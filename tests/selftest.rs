//! `turnd selftest` as a user runs it: it passes against turnd with the default peer policy
//! over every transport turnd hands out, and when relaying fails it names the cause.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn selftest(args: &[&str]) -> (i32, serde_json::Value, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .arg("selftest")
        .args(args)
        .arg("--json")
        .output()
        .expect("turnd selftest runs");
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap_or(-1), json, started.elapsed())
}

fn cause(v: &serde_json::Value) -> String {
    v["transports"][0]["cause"]
        .as_str()
        .or(v["cause"].as_str())
        .unwrap_or("")
        .to_owned()
}

#[test]
fn passes_over_udp_tcp_and_tls_against_the_default_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = self_signed();
    std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    let mut s = settings();
    s.tls_listen = Some(vec!["127.0.0.1:0".into()]);
    s.tls_cert = Some(dir.path().join("cert.pem"));
    s.tls_key = Some(dir.path().join("key.pem"));
    let turnd = start(s);
    let url = format!("http://{}", turnd.http());
    let ca = dir.path().join("cert.pem");
    let (code, v, _) = selftest(&[
        "--url",
        &url,
        "--ca",
        ca.to_str().unwrap(),
        "--tls-name",
        "localhost",
    ]);
    assert_eq!(code, 0, "{v:#}");
    let transports: Vec<&str> = v["transports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["transport"].as_str().unwrap())
        .collect();
    assert_eq!(transports, ["udp", "tcp", "tls"]);
    for t in v["transports"].as_array().unwrap() {
        assert_eq!(t["pass"], true, "{t:#}");
        assert_eq!(t["loss_percent"], 0.0);
        assert!(t["rtt_ms_p50"].as_f64().is_some());
        let steps: Vec<&str> = t["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        for wanted in [
            "STUN Binding",
            "CreatePermission A→B",
            "Send → Data indication B→A",
            "ChannelData A→B",
            "round trips",
            "deallocate B",
        ] {
            assert!(steps.contains(&wanted), "missing step {wanted}: {steps:?}");
        }
        // Relay-only: both relayed addresses are turnd's.
        for r in t["relayed"].as_array().unwrap() {
            assert!(r.as_str().unwrap().starts_with("127.0.0.1:"));
        }
    }
}

#[test]
fn a_wrong_secret_is_named_as_a_401_secret_mismatch() {
    let turnd = start(settings());
    let (code, v, _) = selftest(&[
        "--server",
        &turnd.addr.to_string(),
        "--secret",
        "not-the-servers-secret",
    ]);
    assert_eq!(code, 1);
    let c = cause(&v);
    assert!(c.contains("401") && c.contains("secret"), "{c}");
}

#[test]
fn a_dead_port_is_named_as_unreachable_within_ten_seconds() {
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, v, took) = selftest(&["--server", &dead.to_string(), "--secret", "whatever-secret"]);
    assert_eq!(code, 1);
    let c = cause(&v);
    assert!(c.contains("no answer") && c.contains("701"), "{c}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn a_peer_denied_by_policy_is_named_as_403() {
    let mut s = settings();
    s.deny_peer = Some(vec!["127.0.0.1/32".into()]);
    let turnd = start(s);
    let (code, v, _) = selftest(&["--server", &turnd.addr.to_string(), "--secret", SECRET]);
    assert_eq!(code, 1);
    let c = cause(&v);
    assert!(c.contains("403") && c.contains("peer policy"), "{c}");
}

#[test]
fn a_wrong_advertised_relay_address_is_named() {
    let mut s = settings();
    // Relay sockets bind 127.0.0.1 but turnd advertises 127.0.0.2: nothing answers there.
    s.external_ip = Some(vec!["127.0.0.2".into()]);
    let turnd = start(s);
    let (code, v, _) = selftest(&[
        "--server",
        &turnd.addr.to_string(),
        "--secret",
        SECRET,
        "--timeout",
        "1",
    ]);
    assert_eq!(code, 1);
    let c = cause(&v);
    assert!(
        c.contains("relayed traffic never arrives")
            && c.contains("--external-ip")
            && c.contains("127.0.0.2"),
        "{c}"
    );
}

#[test]
fn a_wrong_api_key_is_named() {
    let mut s = settings();
    s.api_key = Some(vec!["the-right-api-key-123".into()]);
    let turnd = start(s);
    let url = format!("http://{}", turnd.http());
    let (code, v, _) = selftest(&["--url", &url, "--api-key", "the-wrong-api-key-123"]);
    assert_eq!(code, 1);
    let c = cause(&v);
    assert!(c.contains("401") && c.contains("API key"), "{c}");
}

/// The self-probe inside `turnd serve` feeds metrics and /readyz: passing on a healthy relay,
/// and not ready after three failures in a row (here the operator denies the relay's own
/// addresses, so relaying between its two peers is refused).
#[test]
fn the_periodic_probe_feeds_metrics_and_readiness() {
    use turnd::metrics::names;
    let mut s = settings();
    s.selftest_interval = Some(1);
    let turnd = start(s);
    eventually("a passing probe", || {
        scrape(&turnd).get(names::SELFTEST_SUCCESS) == Some(&1.0)
    });
    let m = scrape(&turnd);
    assert!(m[names::SELFTEST_RTT_SECONDS] > 0.0);
    let r = get(turnd.http(), "/readyz");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["selftest"]["passing"], true);

    let mut s = settings();
    s.selftest_interval = Some(1);
    s.deny_peer = Some(vec!["127.0.0.1/32".into()]);
    let broken = start(s);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = get(broken.http(), "/readyz");
        if r.status == 503 {
            let v = r.json();
            assert_eq!(v["selftest"]["passing"], false);
            assert!(v["selftest"]["consecutive_failures"].as_u64().unwrap() >= 3);
            assert!(
                v["selftest"]["last_cause"]
                    .as_str()
                    .unwrap()
                    .contains("403"),
                "{v}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never became unready");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(scrape(&broken)[names::SELFTEST_SUCCESS], 0.0);
}

/// The lines of the README's shell block between `<!-- NAME -->` and `<!-- /NAME -->`.
fn readme_block(name: &str) -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find(&format!("<!-- {name} -->"))
        .unwrap_or_else(|| panic!("README has no {name} block"));
    let end = readme[start..].find(&format!("<!-- /{name} -->")).unwrap() + start;
    readme[start..end]
        .lines()
        .filter(|l| !l.starts_with("<!--") && !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A turnd with a TLS listener serving `dir/cert.pem` and `dir/key.pem`.
fn tls_turnd(dir: &std::path::Path) -> Turnd {
    let mut s = settings();
    s.tls_listen = Some(vec!["127.0.0.1:0".into()]);
    s.tls_cert = Some(dir.join("cert.pem"));
    s.tls_key = Some(dir.join("key.pem"));
    start(s)
}

/// The TLS transport's result of `turnd selftest --url` against `turnd`, trusting `ca` for
/// the name `name`: (exit code, the TLS transport's JSON).
fn tls_selftest(turnd: &Turnd, ca: &std::path::Path, name: &str) -> (i32, serde_json::Value) {
    let (code, v, _) = selftest(&[
        "--url",
        &format!("http://{}", turnd.http()),
        "--ca",
        ca.to_str().unwrap(),
        "--tls-name",
        name,
    ]);
    let tls = v["transports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["transport"] == "tls")
        .cloned()
        .unwrap_or_else(|| panic!("no TLS transport: {v:#}"));
    (code, tls)
}

/// A certificate made the way the README says, with openssl or with `turnd cert self-signed`,
/// is accepted over TLS by a client that trusts the CA it names.
#[test]
fn certificates_made_as_the_readme_says_relay_over_tls() {
    let recipe = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &readme_block("tls-recipe")])
        .current_dir(recipe.path())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "the README's openssl recipe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args([
            "cert",
            "self-signed",
            "--host",
            "relay.example.com",
            "--out",
        ])
        .arg(made.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for dir in [recipe.path(), made.path()] {
        let turnd = tls_turnd(dir);
        let (code, tls) = tls_selftest(&turnd, &dir.join("ca.pem"), "relay.example.com");
        assert_eq!(code, 0, "{tls:#}");
        assert_eq!(tls["pass"], true, "{tls:#}");
    }
}

/// What `openssl req -x509 -subj /CN=host` makes (OpenSSL 3: CA:TRUE) fails with a one-line
/// explanation that says what to do, not rustls's `CaUsedAsEndEntity`.
#[test]
fn a_ca_certificate_served_as_the_leaf_is_explained_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(dir.path())
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = std::fs::read(dir.path().join("cert.pem")).unwrap();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(&cert).unwrap();
    assert!(
        turnd::certs::is_ca(&der as &rustls::pki_types::CertificateDer),
        "openssl made a CA:TRUE certificate"
    );
    let turnd = tls_turnd(dir.path());
    let (code, tls) = tls_selftest(&turnd, &dir.path().join("cert.pem"), "localhost");
    assert_ne!(code, 0);
    let cause = tls["cause"].as_str().unwrap_or_default();
    assert!(cause.contains(turnd::certs::CA_AS_LEAF), "{tls:#}");
    assert_eq!(cause.lines().count(), 1, "{cause}");

    // The operator who never runs the self-test reads the same line in turnd's log at start.
    let served = common::process::Served::start(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        dir.path().join("cert.pem").to_str().unwrap(),
        "--tls-key",
        dir.path().join("key.pem").to_str().unwrap(),
    ]);
    served.wait_for_log(turnd::certs::CA_AS_LEAF);
    let line = served
        .log()
        .lines()
        .find(|l| l.contains(turnd::certs::CA_AS_LEAF))
        .unwrap()
        .to_string();
    assert!(line.contains("cert.pem"), "names the file: {line}");
}
