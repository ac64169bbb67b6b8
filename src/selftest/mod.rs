//! `turnd selftest`: two TURN client peers in one process that talk only through their
//! relayed addresses, over UDP, TCP or TLS, against turnd or any TURN server. Each step is
//! timed; a failure names the likely cause in words a person can act on.
//!
//! The peers use turnd-proto's codec and request builders but never the server engine, so a
//! bug in the engine cannot hide behind the same bug in the test.

pub mod cli;
pub mod link;
pub mod peer;
pub mod probe;

use link::{Kind, Link, OpenError};
use peer::{Peer, RequestError};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One TURN server to test, with the credentials to use.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: Kind,
    pub server: SocketAddr,
    /// Host name for display and TLS verification.
    pub host: String,
    pub url: String,
    pub username: String,
    pub password: String,
}

/// Knobs of a run.
#[derive(Clone)]
pub struct Options {
    /// Per-step timeout.
    pub timeout: Duration,
    pub pings: usize,
    pub burst: usize,
    pub burst_size: usize,
    pub tls: Arc<rustls::ClientConfig>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: String,
    pub ms: u64,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub transport: &'static str,
    pub pass: bool,
    pub cause: Option<String>,
    pub steps: Vec<Step>,
    pub relayed: Vec<SocketAddr>,
    pub rtt_ms_p50: Option<f64>,
    pub rtt_ms_p99: Option<f64>,
    pub loss_percent: Option<f64>,
    pub burst_mbit_per_s: Option<f64>,
    pub burst_loss_percent: Option<f64>,
}

struct Run<'a> {
    t0: Instant,
    report: Report,
    target: &'a Target,
}

impl Run<'_> {
    fn step(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.report.steps.push(Step {
            name: name.into(),
            ms: self.t0.elapsed().as_millis() as u64,
            ok,
            detail: detail.into(),
        });
    }

    /// Turns a failed request into the one-line cause a person can act on.
    fn cause(&self, what: &str, e: &RequestError) -> String {
        let t = self.target;
        match e {
            RequestError::Timeout => format!(
                "no answer from {} over {} to {what}: the server is down or a firewall filters that port (browsers report this as error 701)",
                t.server, t.kind.label()
            ),
            RequestError::Code(401, _) => format!(
                "the server refused the credentials for {what} (401 Unauthorized): wrong user or password, an expired credential, or the REST secret that minted them differs from the server's (secret mismatch)"
            ),
            RequestError::Code(403, _) => format!(
                "the server refused the peer address for {what} (403 Forbidden): its peer policy denies the other peer's relayed address (--deny-peer, or a deny list without hairpin to its own relays)"
            ),
            RequestError::Code(c @ (486 | 508), r) => {
                format!("the server is at its allocation quota or capacity for {what} ({c} {r}): raise --user-quota/--max-allocations or the relay port range")
            }
            RequestError::Code(c, r) => format!("the server answered {what} with {c} {r}"),
            RequestError::Io(e) => format!("the connection to {} broke during {what}: {e}", t.server),
        }
    }

    /// The cause when relayed data does not arrive although allocations work.
    fn lost(&self, how: &str, detail: String) -> String {
        let advertised = self
            .report
            .relayed
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(" and ");
        format!(
            "allocations work but relayed traffic never arrives ({how}: {detail}): the relay ports are filtered, or the server advertises relay addresses ({advertised}) that do not reach it (check --external-ip / --relay-ip)"
        )
    }

    /// Records step `name` with `result`: passed, with `detail` of its value; or failed, with
    /// the cause a person can act on, which ends the run (`?`).
    fn check<T>(
        &mut self,
        name: &str,
        result: Result<T, Failure>,
        detail: impl FnOnce(&T) -> String,
    ) -> Result<T, String> {
        match result {
            Ok(v) => {
                self.step(name, true, detail(&v));
                Ok(v)
            }
            Err(failure) => {
                let (detail, cause) = match failure {
                    Failure::Request(what, e) => (String::new(), self.cause(what, &e)),
                    Failure::Lost(d) => (d.clone(), self.lost(name, d)),
                    Failure::Said(cause) => (String::new(), cause),
                };
                self.step(name, false, detail);
                Err(cause)
            }
        }
    }
}

/// Why a step failed, before it is put in words.
enum Failure {
    /// A request (named for the cause: "Allocate") was refused or not answered.
    Request(&'static str, RequestError),
    /// Relayed data did not arrive as sent; the text says how.
    Lost(String),
    /// The cause, already in words.
    Said(String),
}

/// Names the request of a [`Failure::Request`]: `.map_err(request("Allocate"))`.
fn request(what: &'static str) -> impl Fn(RequestError) -> Failure {
    move |e| Failure::Request(what, e)
}

fn open(target: &Target, opts: &Options) -> Result<Link, String> {
    let tls = (target.kind == Kind::Tls).then_some((&opts.tls, target.host.as_str()));
    Link::open(target.kind, target.server, tls, opts.timeout).map_err(|e| match e {
        OpenError::Connect(e) => format!(
            "cannot connect to {} over {}: {e} (the server is down, or a firewall filters that port; browsers report this as error 701)",
            target.server,
            target.kind.label()
        ),
        OpenError::Tls(e) if crate::certs::is_ca_as_leaf_error(&e) => {
            format!("TLS handshake with {} failed: {}", target.server, crate::certs::CA_AS_LEAF)
        }
        OpenError::Tls(e) => format!("TLS handshake with {} failed: {e} (check the certificate, its name {:?} and the CA)", target.server, target.host),
    })
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some((sorted[i] * 100.0).round() / 100.0)
}

/// Waits for `data` to arrive at `to` from `from_relayed`, through the relay.
fn expect_data(
    to: &mut Peer,
    from_relayed: SocketAddr,
    data: &[u8],
    via_channel: bool,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while let Some(r) = to.recv_data(deadline) {
        if r.data != data {
            continue;
        }
        if r.from != from_relayed {
            return Err(format!(
                "data arrived from {} instead of the other peer's relayed address {from_relayed}",
                r.from
            ));
        }
        if r.via_channel != via_channel {
            return Err(format!(
                "data arrived as {} instead of {}",
                kind(r.via_channel),
                kind(via_channel)
            ));
        }
        return Ok(());
    }
    Err("timeout".into())
}

fn kind(channel: bool) -> &'static str {
    if channel {
        "ChannelData"
    } else {
        "a Data indication"
    }
}

/// Peer `i` and the other one, both mutable.
fn both(peers: &mut [Peer; 2], i: usize) -> (&mut Peer, &mut Peer) {
    let (x, y) = peers.split_at_mut(1);
    if i == 0 {
        (&mut x[0], &mut y[0])
    } else {
        (&mut y[0], &mut x[0])
    }
}

/// Runs every step against one target; the first failed step ends the run with its cause.
pub fn run(target: &Target, opts: &Options) -> Report {
    let mut run = Run {
        t0: Instant::now(),
        target,
        report: Report {
            url: target.url.clone(),
            transport: target.kind.label(),
            pass: true,
            cause: None,
            steps: Vec::new(),
            relayed: Vec::new(),
            rtt_ms_p50: None,
            rtt_ms_p99: None,
            loss_percent: None,
            burst_mbit_per_s: None,
            burst_loss_percent: None,
        },
    };
    if let Err(cause) = steps(&mut run, target, opts) {
        run.report.cause = Some(cause);
        run.report.pass = false;
    }
    run.report
}

/// The steps, in order; `Err` is the cause of the first failure.
fn steps(run: &mut Run, target: &Target, opts: &Options) -> Result<(), String> {
    let t = opts.timeout;
    let links = match (open(target, opts), open(target, opts)) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(e), _) | (_, Err(e)) => Err(Failure::Said(e)),
    };
    let (la, lb) = run.check("connect", links, |_| {
        format!("{} over {}", target.server, target.kind.label())
    })?;
    let mut a = Peer::new(la, &target.username, &target.password);
    let mut b = Peer::new(lb, &target.username, &target.password);

    run.check(
        "STUN Binding",
        a.binding(t).map_err(request("STUN Binding")),
        |mapped| format!("mapped address {mapped}"),
    )?;
    let relayed = |r: &SocketAddr| format!("relayed address {r}");
    let ra = run.check(
        "Allocate A (401 challenge, then credentials)",
        a.allocate(t).map_err(request("Allocate")),
        relayed,
    )?;
    let rb = run.check(
        "Allocate B",
        b.allocate(t).map_err(request("Allocate")),
        relayed,
    )?;
    run.report.relayed = vec![ra, rb];
    for (name, p, peer) in [
        ("CreatePermission A→B", &mut a, rb),
        ("CreatePermission B→A", &mut b, ra),
    ] {
        let done = p
            .create_permission(peer, t)
            .map_err(request("CreatePermission"));
        run.check(name, done, |_| format!("for {peer}"))?;
    }
    let mut peers = [a, b];
    let rel = [ra, rb];
    // Send/Data indications first: no channel is bound yet, so data comes as Data indications.
    for (name, i) in [
        ("Send → Data indication A→B", 0),
        ("Send → Data indication B→A", 1),
    ] {
        let (from, to) = both(&mut peers, i);
        let (from_relayed, to_relayed) = (rel[i], rel[1 - i]);
        let payload = format!("indication from {from_relayed}");
        let arrived = from
            .send_indication(to_relayed, payload.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|_| expect_data(to, from_relayed, payload.as_bytes(), false, t));
        run.check(name, arrived.map_err(Failure::Lost), |_| String::new())?;
    }
    for (name, i, number) in [
        ("ChannelBind A→B", 0, 0x4000u16),
        ("ChannelBind B→A", 1, 0x4001u16),
    ] {
        let (p, peer) = (&mut peers[i], rel[1 - i]);
        let bound = p
            .channel_bind(number, peer, t)
            .map_err(request("ChannelBind"));
        run.check(name, bound, |_| format!("channel {number:#06x} to {peer}"))?;
    }
    for (name, i, number) in [
        ("ChannelData A→B", 0, 0x4000u16),
        ("ChannelData B→A", 1, 0x4001u16),
    ] {
        let (from, to) = both(&mut peers, i);
        let from_relayed = rel[i];
        let payload = format!("channel data from {from_relayed}");
        let arrived = from
            .send_channel(number, payload.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|_| expect_data(to, from_relayed, payload.as_bytes(), true, t));
        run.check(name, arrived.map_err(Failure::Lost), |_| String::new())?;
    }

    let [mut a, mut b] = peers;
    round_trips(run, &mut a, &mut b, ra, rb, opts)?;
    // A short burst A→B: throughput as B sees it.
    if opts.burst > 0 {
        burst(run, &mut a, &mut b, ra, opts);
    }
    finish(run, &mut a, &mut b, t)
}

/// Round trips: A pings over its channel, B echoes over its own. Fails when half are lost.
fn round_trips(
    run: &mut Run,
    a: &mut Peer,
    b: &mut Peer,
    ra: SocketAddr,
    rb: SocketAddr,
    opts: &Options,
) -> Result<(), String> {
    let mut rtts = Vec::new();
    for i in 0..opts.pings {
        let payload = format!("ping {i}");
        let start = Instant::now();
        if a.send_channel(0x4000, payload.as_bytes()).is_err() {
            break;
        }
        if expect_data(b, ra, payload.as_bytes(), true, Duration::from_secs(1)).is_err() {
            continue;
        }
        let _ = b.send_channel(0x4001, payload.as_bytes());
        if expect_data(a, rb, payload.as_bytes(), true, Duration::from_secs(1)).is_ok() {
            rtts.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    rtts.sort_by(f64::total_cmp);
    let loss = 100.0 * (opts.pings - rtts.len()) as f64 / opts.pings.max(1) as f64;
    run.report.rtt_ms_p50 = percentile(&rtts, 0.5);
    run.report.rtt_ms_p99 = percentile(&rtts, 0.99);
    run.report.loss_percent = Some(loss);
    let rtt_ok = loss < 50.0;
    run.step(
        "round trips",
        rtt_ok,
        format!(
            "{} of {} pings, p50 {} ms, p99 {} ms",
            rtts.len(),
            opts.pings,
            num(run.report.rtt_ms_p50),
            num(run.report.rtt_ms_p99)
        ),
    );
    if !rtt_ok {
        return Err(run.lost("round trips", format!("{loss:.0}% of pings lost")));
    }
    Ok(())
}

/// Sends a paced burst A→B and records what B saw.
fn burst(run: &mut Run, a: &mut Peer, b: &mut Peer, _ra: SocketAddr, opts: &Options) {
    let chunk = vec![0x5Au8; opts.burst_size];
    let mut got = 0usize;
    let mut last_rx = Instant::now();
    // Reads until everything sent so far has arrived, or `until`.
    let mut drain = |b: &mut Peer, sent: usize, until: Instant| {
        while got < sent {
            let Some(r) = b.recv_data(until) else { break };
            if r.data.len() == chunk.len() {
                got += 1;
                last_rx = Instant::now();
            }
        }
    };
    // One process plays both peers, so B drains after every ten datagrams: sending is paced
    // by what arrives, and the burst measures the relay, not the sockets' receive buffers.
    let start = Instant::now();
    for i in 0..opts.burst {
        let _ = a.send_channel(0x4000, &chunk);
        if i % 10 == 9 {
            drain(b, i + 1, Instant::now() + Duration::from_millis(20));
        }
    }
    drain(b, opts.burst, Instant::now() + Duration::from_millis(500));
    let secs = last_rx.duration_since(start).as_secs_f64().max(1e-3);
    run.report.burst_loss_percent =
        Some(100.0 * (opts.burst - got) as f64 / opts.burst.max(1) as f64);
    run.report.burst_mbit_per_s =
        Some(((got * chunk.len() * 8) as f64 / secs / 1e6 * 10.0).round() / 10.0);
    run.step(
        "burst",
        got > 0,
        format!(
            "{got} of {} × {} B, {} Mbit/s",
            opts.burst,
            chunk.len(),
            num(run.report.burst_mbit_per_s)
        ),
    );
}

/// Refresh and deallocate both peers.
fn finish(run: &mut Run, a: &mut Peer, b: &mut Peer, t: Duration) -> Result<(), String> {
    for (name, p) in [("Refresh A", &mut *a), ("Refresh B", &mut *b)] {
        run.check(name, p.refresh(600, t).map_err(request("Refresh")), |_| {
            String::new()
        })?;
    }
    for (name, p) in [("deallocate A", a), ("deallocate B", b)] {
        let done = p.refresh(0, t).map_err(request("deallocation (Refresh 0)"));
        run.check(name, done, |_| String::new())?;
    }
    Ok(())
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v}"))
}

/// Prints a report for people.
pub fn print_human(r: &Report) {
    println!("{} ({})", r.url, r.transport);
    for s in &r.steps {
        println!(
            "  {:>6} ms  {}  {:<44} {}",
            s.ms,
            if s.ok { "ok  " } else { "FAIL" },
            s.name,
            s.detail
        );
    }
    if r.pass {
        println!(
            "  PASS  round trip p50 {} ms, p99 {} ms, loss {}%, burst {} Mbit/s ({}% lost)",
            num(r.rtt_ms_p50),
            num(r.rtt_ms_p99),
            num(r.loss_percent),
            num(r.burst_mbit_per_s),
            num(r.burst_loss_percent)
        );
    } else {
        println!("  FAIL  {}", r.cause.as_deref().unwrap_or("unknown"));
    }
}
