//! `turnd nat`: what the network between here and a STUN server allows, and what that means
//! for WebRTC. The RFC 5780 tests run in `turnd_proto::client::nat` (sans-IO); this module
//! owns the socket and the clock, checks TCP when UDP does not get through, and prints.
//!
//! Exit codes: 0 when UDP reaches the server (whatever the NAT), 1 when it does not (only
//! TCP, or nothing), 2 for bad arguments (the server cannot be resolved, the bind fails).

use anyhow::{Context, Result};
use rand::RngCore;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};
use turnd_proto::client::nat::{Discovery, Report, Verdict};
use turnd_proto::client::{Timing, TransactionIds};
use turnd_proto::wire::{Class, Message};

#[derive(Debug, Clone, clap::Args)]
pub struct NatArgs {
    /// The STUN server HOST:PORT: a turnd with `stun_alternate`, or any RFC 5780 server
    /// (coturn with --rfc5780). Any STUN server gives reachability and the mapped address.
    #[arg(long)]
    pub server: String,
    /// Local IP:PORT to send from [default: any address, a free port].
    #[arg(long)]
    pub bind: Option<String>,
    /// Milliseconds each probe waits for its answer (retransmitting every 250 ms at first).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub timeout_ms: u64,
    /// JSON output for machines.
    #[arg(long)]
    pub json: bool,
}

/// What `turnd nat` found.
#[derive(Debug, Clone)]
pub struct Findings {
    pub server: SocketAddr,
    pub report: Report,
    /// Whether a Binding over TCP was answered (only tried when UDP was not).
    pub tcp: Option<bool>,
    pub verdict: Verdict,
}

/// Runs discovery and prints; returns the exit code.
pub fn run(args: NatArgs) -> Result<i32> {
    let server = args
        .server
        .to_socket_addrs()
        .with_context(|| {
            format!(
                "server: cannot resolve {:?} (want HOST:PORT, e.g. turn.example.com:3478)",
                args.server
            )
        })?
        .next()
        .with_context(|| format!("server: {:?} has no address", args.server))?;
    if server.port() == 0 {
        anyhow::bail!(
            "server: {:?} has port 0; give the STUN port (HOST:PORT)",
            args.server
        );
    }
    let bind: SocketAddr = match &args.bind {
        Some(b) => b
            .parse()
            .with_context(|| format!("bind: {b:?} is not an IP:PORT"))?,
        None if server.is_ipv4() => "0.0.0.0:0".parse()?,
        None => "[::]:0".parse()?,
    };
    // A socket of the other family cannot reach the server at all: that is a bad argument,
    // not a finding that "UDP does not get out".
    if bind.is_ipv4() != server.is_ipv4() {
        anyhow::bail!("bind: {bind} and server {server} are of different address families");
    }
    let sock = UdpSocket::bind(bind).with_context(|| format!("bind: cannot bind {bind}"))?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let f = discover(&sock, server, timeout)?;
    if args.json {
        println!("{}", to_json(&f));
    } else {
        print!("{}", to_text(&f));
    }
    Ok(if f.report.udp { 0 } else { 1 })
}

/// Runs the RFC 5780 tests from `sock` against `server`, then TCP if UDP did not reach it.
pub fn discover(sock: &UdpSocket, server: SocketAddr, timeout: Duration) -> Result<Findings> {
    let local = local_address(sock, server);
    let timing = Timing::unreliable()
        .with_rto(Duration::from_millis(250))
        .with_timeout(timeout);
    let seed = rand::rngs::OsRng.next_u64();
    let mut d = Discovery::new(server, local, timing, seed, Instant::now());
    let mut buf = [0u8; 2048];
    let report = loop {
        while let Some((to, bytes)) = d.poll_transmit(Instant::now()) {
            // A send refused by the network (no route) is a probe that gets no answer.
            let _ = sock.send_to(&bytes, to);
        }
        if let Some(r) = d.report() {
            break r.clone();
        }
        let Some(until) = d.poll_timeout() else {
            break d.partial().clone();
        };
        let wait = until.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            d.handle_timeout(Instant::now());
            continue;
        }
        sock.set_read_timeout(Some(wait))?;
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => d.handle_input(&buf[..n], Instant::now()),
            // Timed out, or an ICMP error surfaced: time moves on.
            Err(_) => d.handle_timeout(Instant::now()),
        }
    };
    let tcp = (!report.udp).then(|| tcp_reaches(server, timeout));
    let verdict = Verdict::of(&report, tcp);
    Ok(Findings {
        server,
        report,
        tcp,
        verdict,
    })
}

/// The socket's address as the server would see it without a NAT: its port, and the IP the
/// route to the server leaves from (a wildcard bind says nothing by itself).
fn local_address(sock: &UdpSocket, server: SocketAddr) -> Option<SocketAddr> {
    let bound = sock.local_addr().ok()?;
    if !bound.ip().is_unspecified() {
        return Some(bound);
    }
    let probe = UdpSocket::bind(SocketAddr::new(bound.ip(), 0)).ok()?;
    probe.connect(server).ok()?;
    Some(SocketAddr::new(probe.local_addr().ok()?.ip(), bound.port()))
}

/// Whether a Binding over TCP to `server` is answered in time.
fn tcp_reaches(server: SocketAddr, timeout: Duration) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut t = TcpStream::connect_timeout(&server, timeout)?;
        t.set_read_timeout(Some(timeout))?;
        let mut ids = TransactionIds::new(rand::rngs::OsRng.next_u64());
        t.write_all(&turnd_proto::client::nat::binding_request(&mut ids))?;
        let mut head = [0u8; 20];
        t.read_exact(&mut head)?;
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        let mut msg = head.to_vec();
        msg.resize(20 + len, 0);
        t.read_exact(&mut msg[20..])?;
        Ok(Message::parse(&msg).is_ok_and(|m| m.class() == Class::Success))
    };
    attempt().unwrap_or(false)
}

fn or_unknown<T: std::fmt::Display>(v: Option<T>, why: &str) -> String {
    v.map_or_else(|| format!("not measured ({why})"), |v| v.to_string())
}

/// One line each: reachability, NAT, mapping, filtering, hairpinning, meaning.
pub fn to_text(f: &Findings) -> String {
    let r = &f.report;
    let silent;
    let no5780 = match (r.udp, r.other) {
        (false, _) => "UDP does not reach the server",
        (true, None) => "the server does not do RFC 5780: no OTHER-ADDRESS",
        (true, Some(other)) => {
            silent = format!("the server's alternate address {other} did not answer");
            &silent
        }
    };
    let mut out = String::new();
    let udp = match (r.udp, r.mapped) {
        (true, Some(m)) => format!("yes (mapped address {m})"),
        (true, None) => "yes".into(),
        (false, _) => "no".into(),
    };
    out += &format!("udp: {udp}\n");
    if let Some(tcp) = f.tcp {
        out += &format!("tcp: {}\n", if tcp { "yes" } else { "no" });
    }
    let nat = match r.nat {
        Some(true) => "yes".to_string(),
        Some(false) => "no (the mapped address is this host's)".to_string(),
        None => "unknown".to_string(),
    };
    out += &format!("nat: {nat}\n");
    out += &format!(
        "mapping: {}\n",
        or_unknown(r.mapping.map(|b| b.label()), no5780)
    );
    out += &format!(
        "filtering: {}\n",
        or_unknown(r.filtering.map(|b| b.label()), no5780)
    );
    let hairpin = match (r.hairpinning, r.nat) {
        (Some(h), _) => if h { "yes" } else { "no" }.to_string(),
        (None, Some(false)) => "not applicable (no NAT)".to_string(),
        (None, _) => "not measured".to_string(),
    };
    out += &format!("hairpinning: {hairpin}\n");
    out += &format!("meaning: {}\n", f.verdict.meaning());
    out
}

/// The same as JSON.
pub fn to_json(f: &Findings) -> serde_json::Value {
    let r = &f.report;
    serde_json::json!({
        "server": f.server.to_string(),
        "udp": r.udp,
        "tcp": f.tcp,
        "mapped": r.mapped.map(|a| a.to_string()),
        "other_address": r.other.map(|a| a.to_string()),
        "nat": r.nat,
        "mapping": r.mapping.map(|b| b.label()),
        "filtering": r.filtering.map(|b| b.label()),
        "hairpinning": r.hairpinning,
        "verdict": f.verdict.key(),
        "meaning": f.verdict.meaning(),
    })
}
