//! Shared set-up for integration tests: a turnd on loopback, port 0, and REST credentials.

#![allow(dead_code)]

pub mod cpu;
pub mod flow;
pub mod netns;
pub mod openapi;
pub mod process;
pub mod relay_topology;

use std::net::SocketAddr;
use turnd::config::{Config, Settings};
use turnd::serve::Running;

pub const SECRET: &str = "integration-test-secret";

/// Settings for a loopback turnd; tests add what they need.
pub fn settings() -> Settings {
    Settings {
        listen: Some(vec!["127.0.0.1:0".into()]),
        relay_ip: Some(vec!["127.0.0.1".into()]),
        // Below the kernel's ephemeral range (so no listen port on port 0 lands inside it), a
        // random block per server so parallel tests rarely meet.
        relay_ports: Some({
            let base = 10_000 + (rand::random::<u32>() % 20) * 1000;
            format!("{base}-{}", base + 999)
        }),
        secret: Some(vec![SECRET.into()]),
        workers: Some(2),
        http_listen: Some("127.0.0.1:0".into()),
        metrics_listen: Some("127.0.0.1:0".into()),
        // The periodic self-probe would add allocations to exact counts; its own test turns it on.
        selftest_interval: Some(0),
        ..Default::default()
    }
}

pub struct Turnd {
    pub running: Running,
    pub config: Config,
    pub addr: SocketAddr,
}

pub fn start(s: Settings) -> Turnd {
    let config = Config::from_settings(&s).expect("valid test config");
    let running = turnd::serve::start(&config).expect("turnd starts");
    let addr = running.udp[0];
    Turnd {
        running,
        config,
        addr,
    }
}

/// A REST credential for `user`, valid for `ttl` seconds from now.
pub fn rest(user: &str, ttl: u64) -> (String, String) {
    let c = turnd_proto::auth::mint_rest_credential(
        SECRET.as_bytes(),
        user,
        turnd::clock::unix_now(),
        ttl,
    );
    (c.username, c.password)
}

/// Waits (bounded, 5 s) until `f` holds: worker counters are published every ~100-250 ms.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Turnd {
    /// A counter summed over workers.
    pub fn sum(&self, f: impl Fn(&turnd_proto::stats::Stats) -> u64) -> u64 {
        self.running.stats().iter().map(f).sum()
    }
}

impl Turnd {
    /// The HTTP service's address.
    pub fn http(&self) -> SocketAddr {
        self.running.http.as_ref().expect("HTTP enabled").addr
    }
}

/// An HTTP response, as received.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends one raw HTTP/1.1 request (the target is sent byte for byte, so tests can send what a
/// hostile client would) and reads the whole response.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let s = std::net::TcpStream::connect(addr).expect("connect");
    http_exchange(s, addr, method, target, headers, body)
}

/// A TCP connection to `to` from the local address `from` (any address of 127.0.0.0/8, or of
/// a prefix a namespace made local): one client among many.
pub fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> std::net::TcpStream {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    s.bind(&SocketAddr::new(from, 0).into()).unwrap();
    s.connect(&to.into()).unwrap();
    s.into()
}

/// As [`http_request`], from the local address `from`.
pub fn http_request_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    http_exchange(connect_from(from, addr), addr, method, target, headers, "")
}

fn http_exchange(
    mut s: std::net::TcpStream,
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    use std::io::{Read, Write};
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn get(addr: SocketAddr, target: &str) -> HttpResponse {
    http_request(addr, "GET", target, &[], "")
}

/// A blocking TURN client over real UDP, built on turnd-proto's codec and client
/// [`Transaction`](turnd_proto::client::Transaction) (not the engine).
pub struct UdpTurnClient {
    pub sock: std::net::UdpSocket,
    pub server: SocketAddr,
    pub auth: turnd_proto::client::ClientAuth,
    ids: turnd_proto::client::TransactionIds,
}

/// How long a test client waits for an answer.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

impl UdpTurnClient {
    pub fn new(server: SocketAddr, username: &str, password: &str) -> Self {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        Self::with_socket(sock, server, username, password)
    }

    /// A client on a socket the test made (another address, inside a namespace, or a clone
    /// shared by two clients talking to two server addresses).
    pub fn with_socket(
        sock: std::net::UdpSocket,
        server: SocketAddr,
        username: &str,
        password: &str,
    ) -> Self {
        sock.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
        UdpTurnClient {
            sock,
            server,
            auth: turnd_proto::client::ClientAuth::new(username, password),
            ids: turnd_proto::client::TransactionIds::new(rand::random()),
        }
    }

    /// Sends a request (retransmitted, challenges answered by the transaction); returns the
    /// final response.
    pub fn request(
        &mut self,
        method: turnd_proto::wire::Method,
        attrs: &[turnd_proto::client::Attr],
    ) -> Vec<u8> {
        let mut io = UdpExchange {
            sock: &self.sock,
            server: self.server,
        };
        let timing = turnd_proto::client::Timing::unreliable();
        transact(
            &mut io,
            &mut self.auth,
            &mut self.ids,
            timing,
            method,
            attrs,
        )
    }

    /// The error code of a response (None for success).
    pub fn code(resp: &[u8]) -> Option<u16> {
        turnd_proto::client::error_code(&turnd_proto::wire::Message::parse(resp).unwrap())
    }

    /// Allocates and returns the relayed address.
    pub fn allocate(&mut self) -> SocketAddr {
        let resp = self.request(
            turnd_proto::wire::Method::ALLOCATE,
            &[turnd_proto::client::Attr::RequestedTransport(17)],
        );
        relayed_address(&resp)
    }
}

/// One request to its final answer through turnd-proto's client transaction, waiting at most
/// [`ANSWER_WITHIN`]; panics when no answer comes.
fn transact<X>(
    io: &mut X,
    auth: &mut turnd_proto::client::ClientAuth,
    ids: &mut turnd_proto::client::TransactionIds,
    timing: turnd_proto::client::Timing,
    method: turnd_proto::wire::Method,
    attrs: &[turnd_proto::client::Attr],
) -> Vec<u8>
where
    X: turnd_proto::client::Exchange,
    X::Error: std::fmt::Debug,
{
    let timing = timing.with_timeout(ANSWER_WITHIN);
    let now = std::time::Instant::now();
    let t =
        turnd_proto::client::Transaction::new(method, attrs, Some(auth), false, timing, ids, now);
    t.run(io, auth, ids)
        .unwrap_or_else(|e| panic!("no answer to {method:?} within {ANSWER_WITHIN:?}: {e:?}"))
}

/// A test's UDP socket as a transaction's way to `server`; the socket keeps its own read
/// timeout for the test's other reads.
struct UdpExchange<'a> {
    sock: &'a std::net::UdpSocket,
    server: SocketAddr,
}

impl turnd_proto::client::Exchange for UdpExchange<'_> {
    type Error = std::io::Error;
    fn now(&mut self) -> std::time::Instant {
        std::time::Instant::now()
    }
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sock.send_to(bytes, self.server).map(drop)
    }
    fn recv(&mut self, until: std::time::Instant) -> std::io::Result<Option<Vec<u8>>> {
        let Some(left) = until
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Ok(None);
        };
        let kept = self.sock.read_timeout()?;
        self.sock.set_read_timeout(Some(left))?;
        let mut buf = vec![0u8; 65_536];
        let got = self.sock.recv_from(&mut buf);
        self.sock.set_read_timeout(kept)?;
        match got {
            Ok((n, from)) => {
                buf.truncate(n);
                // A reply from another address is dropped by a NAT in front of a real client
                // (RFC 8656 §2: the server's address is part of the 5-tuple).
                if from != self.server {
                    let response = turnd_proto::wire::Message::parse(&buf).is_ok_and(|m| {
                        use turnd_proto::wire::Class;
                        matches!(m.class(), Class::Success | Class::Error)
                    });
                    assert!(!response, "a response from {from}, not {}", self.server);
                }
                Ok(Some(buf))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Scrapes `/metrics` (classic format) into `series → value`.
pub fn scrape(turnd: &Turnd) -> std::collections::BTreeMap<String, f64> {
    let addr = turnd
        .running
        .metrics
        .as_ref()
        .expect("metrics enabled")
        .addr;
    scrape_at(addr)
}

/// Scrapes `/metrics` at `addr` (classic format) into `series → value`.
pub fn scrape_at(addr: SocketAddr) -> std::collections::BTreeMap<String, f64> {
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200, "/metrics: {}", r.body);
    r.body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

/// A client of the `turn` crate (webrtc-rs), listening, for `server`.
pub async fn turn_client(
    server: SocketAddr,
    username: &str,
    password: &str,
) -> turn::client::Client {
    let conn = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cfg = turn::client::ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: username.into(),
        password: password.into(),
        realm: "turnd".into(),
        software: String::new(),
        rto_in_ms: 0,
        conn: std::sync::Arc::new(conn),
        vnet: None,
    };
    let c = turn::client::Client::new(cfg).await.unwrap();
    c.listen().await.unwrap();
    c
}

/// A blocking TURN client over a byte stream (TCP, or TLS over TCP), built on turnd-proto's
/// codec and stream framing.
pub struct StreamTurnClient<S: std::io::Read + std::io::Write> {
    pub stream: S,
    frames: turnd_proto::wire::framing::FrameBuffer,
    pub auth: turnd_proto::client::ClientAuth,
    ids: turnd_proto::client::TransactionIds,
}

impl<S: std::io::Read + std::io::Write> StreamTurnClient<S> {
    pub fn new(stream: S, username: &str, password: &str) -> Self {
        StreamTurnClient {
            stream,
            frames: turnd_proto::wire::framing::FrameBuffer::new(0),
            auth: turnd_proto::client::ClientAuth::new(username, password),
            ids: turnd_proto::client::TransactionIds::new(rand::random()),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// The next frame; None when the server closed the connection (or the read timed out).
    pub fn recv_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(f) = self
                .frames
                .next_frame()
                .expect("the server sends valid frames")
            {
                return Some(f.to_vec());
            }
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.frames.push(&buf[..n]).unwrap(),
            }
        }
    }

    /// Sends a request through the client transaction (challenges answered, frames that are
    /// not the answer skipped); returns the final response.
    pub fn request(
        &mut self,
        method: turnd_proto::wire::Method,
        attrs: &[turnd_proto::client::Attr],
    ) -> Vec<u8> {
        // The client is its own exchange, so the transaction borrows its state separately.
        let (mut auth, mut ids) = (self.auth.clone(), self.ids.clone());
        let timing = turnd_proto::client::Timing::reliable();
        let resp = transact(self, &mut auth, &mut ids, timing, method, attrs);
        (self.auth, self.ids) = (auth, ids);
        resp
    }

    pub fn allocate(&mut self) -> SocketAddr {
        let resp = self.request(
            turnd_proto::wire::Method::ALLOCATE,
            &[turnd_proto::client::Attr::RequestedTransport(17)],
        );
        relayed_address(&resp)
    }
}

/// The stream as a transaction's way to the server: it blocks for as long as the stream's own
/// read timeout (3 s from [`tcp`]), so a silent or closed server is an error.
impl<S: std::io::Read + std::io::Write> turnd_proto::client::Exchange for StreamTurnClient<S> {
    type Error = &'static str;
    fn now(&mut self) -> std::time::Instant {
        std::time::Instant::now()
    }
    fn send(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        StreamTurnClient::send(self, bytes);
        Ok(())
    }
    fn recv(&mut self, _until: std::time::Instant) -> Result<Option<Vec<u8>>, Self::Error> {
        self.recv_frame()
            .map(Some)
            .ok_or("the connection closed or the read timed out")
    }
}

/// A TCP connection with a read timeout.
pub fn tcp(addr: SocketAddr) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .unwrap();
    s
}

/// A self-signed certificate for "localhost": (cert PEM, key PEM, cert DER).
pub fn self_signed() -> (String, String, Vec<u8>) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (
        c.cert.pem(),
        c.key_pair.serialize_pem(),
        c.cert.der().to_vec(),
    )
}

/// A TLS connection to `addr` trusting only `ca_der`.
pub fn tls(
    addr: SocketAddr,
    ca_der: &[u8],
) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca_der.to_vec()))
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp(addr));
    // Complete the handshake now, so a bad certificate fails here.
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// The XOR-RELAYED-ADDRESS of an Allocate success response (panics on an error response).
pub fn relayed_address(resp: &[u8]) -> SocketAddr {
    use turnd_proto::client;
    let msg = turnd_proto::wire::Message::parse(resp).unwrap();
    assert_eq!(client::error_code(&msg), None, "allocate failed");
    client::address(&msg, turnd_proto::wire::attr::XOR_RELAYED_ADDRESS).unwrap()
}
