//! Built-in ACME against a real ACME server: Debian's `pebble` (RFC 8555 test CA) and
//! `pebble-challtestsrv` (a DNS server that answers every name with 127.0.0.1), both on
//! loopback, so the CA validates `turnd.test` by connecting to this turnd's own listeners.
//! No test here talks to anything but 127.0.0.1; the directory is always pebble's.
//!
//! Like the network-namespace tests, these need something only root can arrange on a bare
//! machine: pebble is installed with apt-get when missing and the test runs as root (CI);
//! elsewhere without pebble they say so and return.

mod common;

use common::flow::{Flow, FlowTransport};
use common::process::{free_port, Served};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use turnd_proto::client::Attr;
use turnd_proto::wire::{channel_data, Method};

const DOMAIN: &str = "turnd.test";

/// One test at a time: each runs a CA, a DNS server and a turnd, and the bystander flows'
/// latency bound must measure turnd, not the other tests' load.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether pebble is here (installing it when root). Off CI without it: false, said aloud.
fn have_pebble() -> bool {
    let found = || Command::new("pebble").arg("-h").output().is_ok();
    if found() {
        return true;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !apt(&["install", "-y", "pebble"]) {
            apt(&["update"]);
            apt(&["install", "-y", "pebble"]);
        }
        assert!(found(), "apt-get install pebble failed");
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run these tests as root (pebble is installed with apt-get)"
    );
    eprintln!("pebble is not installed and this is not root: ACME tests not run");
    false
}

/// pebble and its DNS server on loopback.
struct Pebble {
    children: Vec<Child>,
    dir: tempfile::TempDir,
    /// pebble's management port (the issuing root at /roots/0).
    mgmt: u16,
    /// The root pebble's own HTTPS is signed by (`acme_ca_root`).
    https_ca: PathBuf,
}

struct PebbleSetup {
    /// Where the VA connects for HTTP-01 and TLS-ALPN-01 (turnd's listeners).
    http_port: u16,
    tls_port: u16,
    /// Issued certificates' lifetime.
    validity_secs: u64,
    /// The ACME port (chosen beforehand when turnd must be pointed at it first).
    acme_port: u16,
    /// Names pebble refuses to issue for (`domainBlocklist`: a CA refusing the order).
    blocklist: &'static [&'static str],
}

impl Pebble {
    fn start(setup: &PebbleSetup) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let tls = turnd::certs::self_signed(
            &["localhost".into(), "127.0.0.1".into()],
            &dir.path().join("https"),
        )
        .unwrap();
        let (dns, dns_mgmt, mgmt) = (free_port(), free_port(), free_port());
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{}", setup.acme_port),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": tls.cert, "privateKey": tls.key,
            "httpPort": setup.http_port, "tlsPort": setup.tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
            "certificateValidityPeriod": setup.validity_secs,
            "domainBlocklist": setup.blocklist,
        }});
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        // Every listener on loopback; the challenge servers it also offers are off.
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
            .stdout(log("dns.log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pebble = Command::new("pebble")
            .args(["-config", config_path.to_str().unwrap()])
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            // Every order is validated afresh, so renewals answer challenges too.
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let p = Pebble {
            children: vec![challtestsrv, pebble],
            mgmt,
            https_ca: tls.ca,
            dir,
        };
        wait_listening(setup.acme_port);
        wait_listening(mgmt);
        p
    }

    /// pebble's log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// Orders pebble accepted.
    fn orders(&self) -> usize {
        self.log().matches("Added order").count()
    }

    /// The root pebble issues under (PEM), written to a file for `turnd selftest --ca`.
    fn issuing_root(&self) -> PathBuf {
        let pem = https_get(self.mgmt, "/roots/0", &self.https_ca);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        let path = self.dir.path().join("root.pem");
        std::fs::write(&path, pem).unwrap();
        path
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn roots(pem: &Path) -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(pem).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

fn client_config(root: &Path) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(root))
            .with_no_client_auth(),
    )
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A verified TLS connection to `port` as `name`, trusting only `root`.
fn tls_to(port: u16, name: &str, root: &Path) -> Result<Tls, std::io::Error> {
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let conn = rustls::ClientConnection::new(client_config(root), name).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut s = rustls::StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// The serial number of the certificate turnd serves now.
fn served_serial(port: u16, root: &Path) -> Vec<u8> {
    let s = tls_to(port, DOMAIN, root).expect("TLS handshake with the ACME certificate");
    let der = s.conn.peer_certificates().unwrap()[0].to_vec();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.raw_serial().to_vec()
}

/// GET over HTTPS from 127.0.0.1:`port`, trusting `ca`; the body.
fn https_get(port: u16, path: &str, ca: &Path) -> String {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(client_config(ca), name).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    // Go may close without close_notify: keep what arrived.
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// Plain HTTP GET from turnd: (status, body).
fn http_get(port: u16, path: &str) -> (u16, String) {
    let r = common::get(([127, 0, 0, 1], port).into(), path);
    (r.status, r.body)
}

/// One metric series from turnd's /metrics, 0 when absent; turnd's log when it does not answer.
fn metric(turnd: &Served, port: u16, series: &str) -> f64 {
    if TcpStream::connect(("127.0.0.1", port)).is_err() {
        panic!(
            "turnd's metrics listener does not answer; its log:\n{}",
            turnd.log()
        );
    }
    let (_, body) = http_get(port, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A REST credential for the child turnd's secret.
fn rest(user: &str) -> (String, String) {
    common::process::rest(user)
}

/// Waits (bounded) until `f` holds.
fn within(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out ({secs} s) waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `turnd selftest --transport tls` against turnd's TLS port, trusting pebble's root only.
fn selftest_tls(tls_port: u16, root: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args(["selftest", "--server", &format!("127.0.0.1:{tls_port}")])
        .args(["--transport", "tls", "--tls-name", DOMAIN])
        .args(["--ca", root.to_str().unwrap()])
        .args(["--secret", common::process::SECRET])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "selftest over TLS failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `turnd serve` flags for ACME against `pebble_port` with the given cache and challenge.
fn acme_flags(
    tls: u16,
    metrics: u16,
    pebble_port: u16,
    https_ca: &Path,
    cache: &Path,
    challenge: &str,
) -> Vec<String> {
    [
        "--tls-listen",
        &format!("127.0.0.1:{tls}"),
        "--metrics-listen",
        &format!("127.0.0.1:{metrics}"),
        "--allow-peer",
        "127.0.0.1/32",
        "--acme-domain",
        DOMAIN,
        "--acme-directory",
        &format!("https://127.0.0.1:{pebble_port}/dir"),
        "--acme-ca-root",
        https_ca.to_str().unwrap(),
        "--acme-cache",
        cache.to_str().unwrap(),
        "--acme-challenge",
        challenge,
        "--selftest-interval",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// turnd as a child process on the given HTTP port (pebble must know it beforehand).
fn serve(http: u16, flags: &[String]) -> Served {
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let http_listen = format!("127.0.0.1:{http}");
    args.extend(["--http-listen", &http_listen]);
    Served::start(&args)
}

/// A pebble and a turnd getting its certificate from it, on fresh loopback ports.
struct Rig {
    tls: u16,
    http: u16,
    metrics: u16,
    pebble: Pebble,
    /// turnd's ACME cache (kept for a restart on the same cache).
    cache: tempfile::TempDir,
    /// turnd's flags (for that restart).
    flags: Vec<String>,
    turnd: Served,
}

fn rig(validity_secs: u64, blocklist: &'static [&'static str], challenge: &str) -> Rig {
    let (tls, http, metrics, acme) = (free_port(), free_port(), free_port(), free_port());
    let pebble = Pebble::start(&PebbleSetup {
        http_port: http,
        tls_port: tls,
        validity_secs,
        acme_port: acme,
        blocklist,
    });
    let cache = tempfile::tempdir().unwrap();
    let flags = acme_flags(
        tls,
        metrics,
        acme,
        &pebble.https_ca,
        cache.path(),
        challenge,
    );
    let turnd = serve(http, &flags);
    Rig {
        tls,
        http,
        metrics,
        pebble,
        cache,
        flags,
        turnd,
    }
}

/// TLS-ALPN-01 on turnd's TLS listener, `turnd selftest --transport tls` trusting only
/// pebble's root, the metrics; then a restart with the cache serves the same certificate at
/// once and makes no order.
#[test]
fn tls_alpn_01_gets_a_certificate_selftest_passes_and_the_cache_survives_a_restart() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !have_pebble() {
        return;
    }
    let Rig {
        tls,
        http,
        metrics,
        pebble,
        cache: _cache,
        flags,
        turnd,
    } = rig(3600, &[], "tls-alpn-01");
    let success = "turnd_acme_renewals_total{result=\"success\"}";
    within(60, "the first certificate", || {
        metric(&turnd, metrics, success) == 1.0
    });
    turnd.wait_for_log("ACME order created");
    turnd.wait_for_log("challenge=\"tls-alpn-01\"");
    let root = pebble.issuing_root();
    selftest_tls(tls, &root);
    let expiry = metric(&turnd, metrics, "turnd_tls_certificate_expiry_seconds");
    let now = turnd::clock::unix_now() as f64;
    assert!(
        expiry > now + 3000.0 && expiry <= now + 3600.0,
        "{expiry} vs {now}"
    );
    let (_, ready) = http_get(http, "/readyz");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["acme"]["certificate"], true, "{ready}");
    assert_eq!(ready["acme"]["reason"], serde_json::Value::Null);
    let serial = served_serial(tls, &root);
    assert_eq!(pebble.orders(), 1);
    drop(turnd);

    // Restart on the same cache: the cached certificate is served from the first handshake.
    let turnd = serve(http, &flags);
    assert_eq!(served_serial(tls, &root), serial, "the cached certificate");
    turnd.wait_for_log("serving the cached ACME certificate");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        pebble.orders(),
        1,
        "a valid cached certificate makes no order"
    );
    assert_eq!(metric(&turnd, metrics, success), 0.0);
    assert!(
        !turnd.log().contains("ACME order created"),
        "{}",
        turnd.log()
    );
    selftest_tls(tls, &root);
}

/// HTTP-01 on turnd's HTTP listener (the port pebble's VA uses as port 80).
#[test]
fn http_01_gets_a_certificate_and_selftest_passes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !have_pebble() {
        return;
    }
    let Rig {
        tls,
        http,
        metrics,
        pebble,
        cache: _cache,
        flags: _flags,
        turnd,
    } = rig(3600, &[], "http-01");
    within(60, "the first certificate", || {
        metric(
            &turnd,
            metrics,
            "turnd_acme_renewals_total{result=\"success\"}",
        ) == 1.0
    });
    turnd.wait_for_log("HTTP-01 challenge answered");
    turnd.wait_for_log("challenge=\"http-01\"");
    selftest_tls(tls, &pebble.issuing_root());
    // Unknown tokens are a JSON 404.
    let (status, body) = http_get(http, "/.well-known/acme-challenge/nope");
    assert_eq!(status, 404);
    assert!(body.contains("\"error\""), "{body}");
}

/// A loopback UDP echo peer for the relay.
fn echo_peer() -> (
    SocketAddr,
    std::thread::JoinHandle<()>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    });
    (addr, t, stop)
}

/// A TURN-over-TLS client of `user` (trusting `root`) with channel `channel` bound to `peer`.
fn tls_relay_client(
    tls: u16,
    root: &Path,
    user: &str,
    peer: SocketAddr,
    channel: u16,
) -> common::StreamTurnClient<Tls> {
    let (user, pass) = rest(user);
    let stream = tls_to(tls, DOMAIN, root).unwrap();
    let mut c = common::StreamTurnClient::new(stream, &user, &pass);
    c.allocate();
    let r = c.request(
        Method::CHANNEL_BIND,
        &[Attr::Peer(peer), Attr::Channel(channel)],
    );
    let m = turnd_proto::wire::Message::parse(&r).unwrap();
    assert_eq!(turnd_proto::client::error_code(&m), None, "ChannelBind");
    c
}

/// One round trip through the relay on `c`'s channel to the echo peer: `seq` goes out and
/// must come back next, on the same connection (in order, none lost).
fn round_trip(c: &mut common::StreamTurnClient<Tls>, channel: u16, seq: u64) {
    c.send(&turnd_proto::client::channel_data(
        channel,
        &seq.to_be_bytes(),
        true,
    ));
    let f = c
        .recv_frame()
        .expect("the TLS connection stays up and answers");
    let cd = channel_data::parse(&f).expect("ChannelData back");
    assert_eq!(cd.data, seq.to_be_bytes(), "in order, none lost");
}

/// With pebble issuing 15-second certificates, turnd renews at least twice while one TLS
/// connection keeps relaying: the connection never drops, no relayed message is lost, and
/// new connections see each new certificate.
#[test]
fn renews_short_lived_certificates_while_a_tls_client_relays() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !have_pebble() {
        return;
    }
    let Rig {
        tls,
        http: _http,
        metrics,
        pebble,
        cache: _cache,
        flags: _flags,
        turnd,
    } = rig(15, &[], "tls-alpn-01");
    let success = "turnd_acme_renewals_total{result=\"success\"}";
    within(60, "the first certificate", || {
        metric(&turnd, metrics, success) >= 1.0
    });
    let root = pebble.issuing_root();

    let (peer, echo, stop) = echo_peer();
    let mut c = tls_relay_client(tls, &root, "renewal", peer, 0x4001);

    let mut serials = vec![served_serial(tls, &root)];
    let (mut sent, mut echoed) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(75);
    while metric(&turnd, metrics, success) < 3.0 {
        assert!(Instant::now() < deadline, "fewer than two renewals in 75 s");
        // Ten round trips through the relay on the long-lived connection, then a look at the
        // certificate new connections get.
        for _ in 0..10 {
            sent += 1;
            round_trip(&mut c, 0x4001, sent);
            echoed += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        let s = served_serial(tls, &root);
        if serials.last() != Some(&s) {
            serials.push(s);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    echo.join().unwrap();
    assert_eq!(sent, echoed);
    assert!(sent >= 100, "relayed {sent}");
    // Three certificates (the first and two renewals) reached new connections.
    let s = served_serial(tls, &root);
    if serials.last() != Some(&s) {
        serials.push(s);
    }
    assert!(serials.len() >= 3, "serials seen: {}", serials.len());
    assert!(pebble.orders() >= 3);
}

/// The CA goes away after issuing: the renewal fails and is logged, counted and shown in
/// /readyz, while the certificate already issued keeps being served to new connections and a
/// TURN-over-TLS client keeps relaying on it.
#[test]
fn ca_down_at_renewal_keeps_the_old_certificate_and_the_relay() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !have_pebble() {
        return;
    }
    // 45 s certificates: renewal is due with a third left, at about 30 s.
    let Rig {
        tls,
        http,
        metrics,
        pebble,
        cache,
        flags: _flags,
        turnd,
    } = rig(45, &[], "tls-alpn-01");
    let success = "turnd_acme_renewals_total{result=\"success\"}";
    let failure = "turnd_acme_renewals_total{result=\"failure\"}";
    within(60, "the first certificate", || {
        metric(&turnd, metrics, success) >= 1.0
    });
    // The issuing root outlives pebble's directory.
    let root = cache.path().join("issuing-root.pem");
    std::fs::copy(pebble.issuing_root(), &root).unwrap();
    let first = served_serial(tls, &root);

    let (peer, echo, stop) = echo_peer();
    let mut c = tls_relay_client(tls, &root, "ca-gone", peer, 0x4002);

    drop(pebble);
    let mut sent = 0u64;
    within(40, "a failed renewal", || {
        sent += 1;
        round_trip(&mut c, 0x4002, sent);
        metric(&turnd, metrics, failure) >= 1.0
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    echo.join().unwrap();
    assert!(sent >= 2, "relayed {sent} while the renewal failed");
    assert_eq!(
        metric(&turnd, metrics, success),
        1.0,
        "no renewal without a CA"
    );
    assert!(turnd.log().contains("ACME order failed"), "{}", turnd.log());
    assert_eq!(
        served_serial(tls, &root),
        first,
        "new connections still get the issued certificate"
    );
    let (status, ready) = http_get(http, "/readyz");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["acme"]["certificate"], true, "{ready}");
    assert!(ready["acme"]["last_error"].as_str().is_some(), "{ready}");
    assert!(metric(&turnd, metrics, "turnd_tls_certificate_expiry_seconds") > 0.0);
}

/// With the CA down, turnd relays over UDP and TCP from the start, refuses TLS handshakes
/// cleanly, reports the failure in its log, metrics and /readyz, and gets its certificate
/// by itself once the CA is back.
#[test]
fn ca_down_keeps_relaying_reports_and_recovers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !have_pebble() {
        return;
    }
    let (tls, http, metrics, acme) = (free_port(), free_port(), free_port(), free_port());
    // acme_ca_root must exist at start: a placeholder root until pebble's is known.
    let cache = tempfile::tempdir().unwrap();
    let https_ca = cache.path().join("pebble-https-ca.pem");
    let placeholder =
        turnd::certs::self_signed(&["localhost".into()], &cache.path().join("x")).unwrap();
    std::fs::copy(&placeholder.ca, &https_ca).unwrap();
    let acme_cache = cache.path().join("acme");
    let flags = acme_flags(tls, metrics, acme, &https_ca, &acme_cache, "tls-alpn-01");
    let turnd = serve(http, &flags);
    turnd.wait_for_log("ACME order failed");
    assert!(
        turnd.log().contains("Connection refused"),
        "{}",
        turnd.log()
    );
    within(10, "a failure counted", || {
        metric(
            &turnd,
            metrics,
            "turnd_acme_renewals_total{result=\"failure\"}",
        ) >= 1.0
    });
    let (status, ready) = http_get(http, "/readyz");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(status, 200, "UDP and TCP serve: ready: {ready}");
    assert_eq!(ready["acme"]["certificate"], false, "{ready}");
    let reason = ready["acme"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("TLS handshakes are refused"), "{reason}");
    assert!(ready["acme"]["last_error"].as_str().is_some(), "{ready}");
    assert_eq!(
        metric(&turnd, metrics, "turnd_tls_certificate_expiry_seconds"),
        0.0
    );
    // TLS: refused with an alert, at once.
    let Err(e) = tls_to(tls, DOMAIN, &https_ca) else {
        panic!("a TLS handshake succeeded without a certificate");
    };
    assert!(
        e.to_string().contains("alert") || e.to_string().contains("Alert"),
        "{e}"
    );
    // UDP and TCP relay meanwhile.
    for transport in [FlowTransport::Udp, FlowTransport::Tcp] {
        let (u, p) = rest("bystander");
        let flow = Flow::start(turnd.addr(), transport, &u, &p);
        std::thread::sleep(Duration::from_secs(1));
        flow.stop().assert_unharmed("relay while the CA is down");
    }

    // The CA comes back: turnd gets its certificate without being told (it reads
    // acme_ca_root at each attempt; pebble's HTTPS root is put there as pebble starts).
    let pebble = Pebble::start(&PebbleSetup {
        http_port: http,
        tls_port: tls,
        validity_secs: 3600,
        acme_port: acme,
        blocklist: &[],
    });
    std::fs::copy(&pebble.https_ca, &https_ca).unwrap();
    within(60, "recovery", || {
        metric(
            &turnd,
            metrics,
            "turnd_acme_renewals_total{result=\"success\"}",
        ) == 1.0
    });
    selftest_tls(tls, &pebble.issuing_root());
    let (_, ready) = http_get(http, "/readyz");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["acme"]["certificate"], true, "{ready}");
    assert_eq!(
        ready["acme"]["last_error"],
        serde_json::Value::Null,
        "{ready}"
    );
}

/// A CA that refuses the order (the name is on its block list): the CA's own words reach the
/// log and /readyz, the failure is counted, and turnd keeps relaying without a certificate.
#[test]
fn a_refused_order_is_logged_with_the_cas_words_and_counted() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !have_pebble() {
        return;
    }
    let Rig {
        tls: _tls,
        http,
        metrics,
        pebble: _pebble,
        cache: _cache,
        flags: _flags,
        turnd,
    } = rig(3600, &[DOMAIN], "tls-alpn-01");
    turnd.wait_for_log("ACME order failed");
    let log = turnd.log();
    assert!(log.contains("the CA refused the order"), "{log}");
    // pebble's problem document: its type and its detail naming the blocked name.
    assert!(log.contains("rejectedIdentifier"), "{log}");
    assert!(log.contains(DOMAIN), "{log}");
    within(10, "a failure counted", || {
        metric(
            &turnd,
            metrics,
            "turnd_acme_renewals_total{result=\"failure\"}",
        ) >= 1.0
    });
    let (_, ready) = http_get(http, "/readyz");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let last = ready["acme"]["last_error"].as_str().unwrap_or_default();
    assert!(last.contains("rejectedIdentifier"), "{ready}");
    let (u, p) = rest("bystander");
    let flow = Flow::start(turnd.addr(), FlowTransport::Udp, &u, &p);
    std::thread::sleep(Duration::from_secs(1));
    flow.stop().assert_unharmed("relay while the CA refuses");
}
