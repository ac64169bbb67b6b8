//! The fast path over veth (issue 18): turnd with its XDP fast path, turnd relaying in
//! userspace, coturn and the floor, one at a time in one run, each in namespace "relay" of a
//! fresh [`Topology`], the load generator in namespace "outside" with the clients and the peer.
//!
//! Relayed traffic is UDP ChannelData client → peer, IPv4 (the peer does not answer). Two
//! measurements per server:
//!
//! - **CPU per relayed packet, whole machine.** XDP work runs in the kernel's receive path
//!   (here `r0`'s NAPI thread, and the softirq that receives on `o0`), in no server process's
//!   account, so the server's own CPU time says nothing about the fast path. Instead: busy time of all cores
//!   from /proc/stat over the window at a fixed offered load, minus the generator-only
//!   baseline (the same clients sending the same packets at the same rate to a never-read
//!   socket in "relay", no server running) per packet sent, divided by the packets relayed.
//!   The baseline's sink socket drops packets exactly as the peer's (never read, tiny buffer)
//!   does in the relayed runs, so that delivery cost cancels out.
//! - **Saturated relayed packets/s at ≤ 1% loss**, with the same search as the loopback
//!   groups ([`crate::experiments::search`]).
//!
//! turnd with the fast path is the binary built with `--features xdp`, started with
//! `--fast-path xdp --fast-path-interface r0`. Where there is no such binary, it refuses the
//! flag or its metrics say `turnd_fast_path_active 0`, its column says why it is unavailable
//! and the other servers are measured all the same.

use crate::experiments::{fleet, search, Saturation, Settings, Traffic};
use crate::load::{self, AtClients, AtPeer, Client, Fleet, Outcome, Sock, PAYLOAD};
use crate::servers::{self, Kind, Running, Site};
use crate::setup;
use crate::sys;
use crate::topology::{Topology, ALLOW_PEER, CLIENT_IP, PEER_IP, RELAY_DEV, RELAY_IP};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Packets per second the clients offer in the CPU measurement, over all clients: the loopback
/// group's fixed load relays 40,000 packets/s too (there both ways).
pub const OFFERED: f64 = 40_000.0;
/// The CPU the servers (and `r0`'s receive thread) run on; the generator has CPU 1.
const SERVER_CPU: usize = 0;
/// The generator's sleep between rounds at the fixed load.
const NAP: Duration = Duration::from_millis(1);
/// Where the servers listen in "relay", and where turnd's metrics are.
const LISTEN_PORT: u16 = 3478;
const METRICS_PORT: u16 = 9641;
/// The baseline's never-read socket in "relay".
const SINK_PORT: u16 = 9;

/// The servers of this group, in the order they run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Contender {
    Xdp,
    Userspace,
    Coturn,
    Floor,
}

impl Contender {
    pub const ALL: [Contender; 4] = [
        Contender::Xdp,
        Contender::Userspace,
        Contender::Coturn,
        Contender::Floor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Contender::Xdp => "turnd XDP",
            Contender::Userspace => "turnd userspace",
            Contender::Coturn => "coturn",
            Contender::Floor => "floor",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Contender::Xdp | Contender::Userspace => Kind::Turnd,
            Contender::Coturn => Kind::Coturn,
            Contender::Floor => Kind::Floor,
        }
    }
}

/// One server's figures.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Machine CPU per relayed packet minus the generator's, µs.
    pub cpu_us: f64,
    /// The server process's own CPU time per relayed packet, µs: near zero when the fast path
    /// relays (the packets never reach the process), which shows that it did.
    pub process_us: f64,
    /// The fast path only: its XDP program's own run time per packet it ran for, µs, as the
    /// kernel counts it (`kernel.bpf_stats_enabled`): a precise floor under the whole-machine
    /// figure, which /proc/stat's 10 ms ticks resolve only to about 0.1 µs per packet here.
    pub program_us: Option<f64>,
    /// The share of the fixed load that did not arrive (the figure above is per arrival).
    pub fixed_loss: f64,
    pub saturation: Saturation,
}

/// What the group found: the baseline, and per server its figures, why it is unavailable, or
/// None when it was not under test.
pub struct Results {
    /// The largest share of all cores busy before a measurement, with nothing under test:
    /// other work on the machine, which whole-machine figures cannot tell from the relay's.
    pub at_rest: f64,
    /// The generator alone: machine CPU per packet sent, µs.
    pub baseline_us: f64,
    pub clients: usize,
    pub servers: [Option<Result<Measured, String>>; 4],
}

/// Runs the group: the baseline, then every server under test (`--servers`: "turnd" is both
/// turnd columns).
pub fn run(s: &Settings, turnd_xdp: &std::path::Path) -> io::Result<Results> {
    // Before every measurement: CI's short run cannot wait; a full run waits up to 30 s for a
    // quiet machine. The busiest of these checks is what the table reports.
    let tries = if s.short { 1 } else { 60 };
    let mut at_rest = settled(Duration::from_millis(500), tries);
    eprintln!("turnd-bench: veth: generator-only baseline");
    let baseline_ns = baseline(s)?;
    let mut servers: [Option<Result<Measured, String>>; 4] = [None, None, None, None];
    for (i, c) in Contender::ALL.into_iter().enumerate() {
        if !s.servers.contains(&c.kind()) {
            continue;
        }
        at_rest = at_rest.max(settled(Duration::from_millis(500), tries));
        eprintln!("turnd-bench: veth: {}", c.name());
        let measured = measure(s, c, turnd_xdp, baseline_ns)?;
        // Under CI the fast path must be measured, not reported unavailable: a build or an
        // attach that broke would otherwise pass unnoticed.
        if let (Err(why), true) = (&measured, std::env::var_os("CI").is_some()) {
            return Err(io::Error::other(format!(
                "CI: {} must be measured: {why}",
                c.name()
            )));
        }
        servers[i] = Some(measured);
    }
    Ok(Results {
        at_rest,
        baseline_us: baseline_ns / 1000.0,
        clients: s.clients,
        servers,
    })
}

/// The kernel's own accounting of turnd's XDP program (`bpftool prog show`: run_time_ns and
/// run_cnt, kept while `kernel.bpf_stats_enabled` is 1) over a measurement.
struct ProgramStats {
    was_enabled: Option<String>,
    start: Option<(u64, u64)>,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl ProgramStats {
    fn start() -> ProgramStats {
        let was_enabled = std::fs::read_to_string(BPF_STATS).ok();
        let _ = std::fs::write(BPF_STATS, "1");
        ProgramStats {
            was_enabled,
            start: program_counts(),
        }
    }

    /// Run time per run since `start`, µs; None without bpftool or runs.
    fn finish(self) -> Option<f64> {
        let end = program_counts();
        if let Some(old) = &self.was_enabled {
            let _ = std::fs::write(BPF_STATS, old.trim());
        }
        let ((t0, n0), (t1, n1)) = (self.start?, end?);
        (n1 > n0).then(|| (t1 - t0) as f64 / (n1 - n0) as f64 / 1000.0)
    }
}

/// (run_time_ns, run_cnt) of the loaded program named `turnd_relay`, from `bpftool -j`.
fn program_counts() -> Option<(u64, u64)> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show", "name", "turnd_relay"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Option<u64> {
        let at = text.find(&format!("\"{name}\":"))? + name.len() + 3;
        let digits: String = text[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    // bpftool leaves the two fields out while they are zero (nothing run since stats began).
    text.contains("\"turnd_relay\"").then(|| {
        (
            field("run_time_ns").unwrap_or(0),
            field("run_cnt").unwrap_or(0),
        )
    })
}

/// Above this share of all cores busy at rest, the CPU figures are marked unreliable.
const BUSY_AT_REST: f64 = 0.05;

/// The share of all cores busy while this program waits, in windows of `window`: the first
/// window at or below [`BUSY_AT_REST`], or the last of `tries` (other work on a shared machine
/// may settle within them).
fn settled(window: Duration, tries: usize) -> f64 {
    let mut share = 1.0;
    for i in 0..tries.max(1) {
        share = busy_at_rest(window);
        if share <= BUSY_AT_REST {
            break;
        }
        if i == 0 && tries > 1 {
            eprintln!(
                "turnd-bench: veth: the machine is {:.0}% busy with nothing under test; waiting up to {:.0} s for it to settle",
                share * 100.0,
                window.as_secs_f64() * tries as f64
            );
        }
    }
    share
}

/// The share of all cores busy over `window` while this program waits.
fn busy_at_rest(window: Duration) -> f64 {
    let start = (Instant::now(), sys::machine_busy_ns());
    std::thread::sleep(window);
    // SAFETY: sysconf has no preconditions.
    let cores = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as f64;
    let busy = sys::machine_busy_ns().saturating_sub(start.1) as f64;
    busy / (start.0.elapsed().as_nanos() as f64 * cores)
}

fn limit(s: &Settings) -> Duration {
    Duration::from_secs(if s.short { 6 } else { 30 })
}

fn channel_data() -> Vec<u8> {
    turnd_proto::client::channel_data(setup::CHANNEL, &[0x5A; PAYLOAD], false)
}

/// The fixed load, `repeats` windows; the window with the least machine CPU per packet. Other
/// work on the machine only ever adds to a whole-machine figure, so the least disturbed
/// window is the best estimate (the loopback rows, which count one process, take the median).
fn fixed(s: &Settings, fleet: &mut Fleet, pid: u32, per: impl Fn(&Outcome) -> f64) -> Outcome {
    let mut load = s.load(
        OFFERED / s.clients as f64,
        AtPeer::Count,
        AtClients::Nothing,
    );
    // Two packets per client per round at 40,000/s: the generator's own cost stays that of
    // its sends, not of spinning, in the baseline and in the relayed runs alike.
    load.nap = Some(NAP);
    let mut runs: Vec<Outcome> = (0..s.repeats.max(1))
        .map(|_| fleet.run(&load, pid))
        .collect();
    runs.sort_by(|a, b| per(a).total_cmp(&per(b)));
    runs.swap_remove(0)
}

/// Machine CPU per packet sent, ns, with the clients sending the fixed load straight to a
/// socket in "relay" that nobody reads, and no server.
fn baseline(s: &Settings) -> io::Result<f64> {
    let topo = Topology::create(SERVER_CPU)?;
    let sink_addr = SocketAddr::new(IpAddr::V4(RELAY_IP), SINK_PORT);
    let sink = topo.in_relay(|| load::peer_socket(sink_addr, 1))??;
    topo.in_outside(|| {
        let peer = load::peer_socket(SocketAddr::new(IpAddr::V4(PEER_IP), 0), 1)?;
        let frame = channel_data();
        let clients = setup::udp_sockets(IpAddr::V4(CLIENT_IP), sink_addr, s.clients)?
            .into_iter()
            .map(|c| Client::new(Sock::Udp(c), frame.clone(), None))
            .collect();
        let mut fleet = Fleet::new(clients, peer);
        let drops0 = sys::socket_drops(sink.as_raw_fd());
        let o = fixed(s, &mut fleet, 0, |o| {
            o.busy_ns as f64 / o.sent.max(1) as f64
        });
        // Everything sent (warm-up included) must have reached the sink: else the baseline
        // measured a broken path, not the generator.
        let dropped = sys::socket_drops(sink.as_raw_fd()) - drops0;
        if o.sent == 0 || (dropped as f64) < o.sent as f64 * 0.99 {
            return Err(io::Error::other(format!(
                "veth baseline: {} packets sent in the window, {dropped} reached the sink",
                o.sent
            )));
        }
        Ok(o.busy_ns as f64 / o.sent as f64)
    })?
}

/// How one server is started in "relay".
fn site(topo: &Topology, c: Contender) -> Site {
    let xdp = c == Contender::Xdp;
    Site {
        ip: IpAddr::V4(RELAY_IP),
        port: Some(LISTEN_PORT),
        allow_peer: ALLOW_PEER.iter().map(|r| r.to_string()).collect(),
        netns: Some(topo.relay_path()),
        metrics: xdp.then(|| SocketAddr::new(IpAddr::V4(RELAY_IP), METRICS_PORT)),
        turnd_args: if xdp {
            ["--fast-path", "xdp", "--fast-path-interface", RELAY_DEV]
                .map(str::to_owned)
                .to_vec()
        } else {
            Vec::new()
        },
        tag: if xdp { "veth-xdp-" } else { "veth-" }.into(),
    }
}

/// One server on a fresh topology: started, its clients allocated and bound, then the fixed
/// load and the saturation search. Ok(Err(why)) when the fast path is unavailable.
fn measure(
    s: &Settings,
    c: Contender,
    turnd_xdp: &std::path::Path,
    baseline_ns: f64,
) -> io::Result<Result<Measured, String>> {
    let mut programs = s.programs.clone();
    if c == Contender::Xdp {
        if !turnd_xdp.is_file() {
            return Ok(Err(format!(
                "no turnd built with --features xdp at {}",
                turnd_xdp.display()
            )));
        }
        programs.turnd = turnd_xdp.to_owned();
    }
    let topo = Topology::create(SERVER_CPU)?;
    let site = site(&topo, c);
    topo.in_outside(|| {
        let peer = load::peer_socket(SocketAddr::new(IpAddr::V4(PEER_IP), 0), 1)?;
        let peer_addr = peer.local_addr()?;
        let server = match servers::start_at(
            c.kind(),
            1,
            &SERVER_CPU.to_string(),
            peer_addr,
            &programs,
            &[],
            &site,
        ) {
            Ok(server) => server,
            Err(e) if c == Contender::Xdp => return Ok(Err(refused(&e, &programs.logs))),
            Err(e) => return Err(e),
        };
        if let Some(metrics) = site.metrics {
            if let Err(why) = fast_path_active(&server, metrics) {
                return Ok(Err(why));
            }
        }
        let (mut fleet, _) = fleet(
            &server,
            Traffic::UdpChannelData,
            s.clients,
            IpAddr::V4(CLIENT_IP),
            &peer,
        )?;
        let relayed_cpu = |o: &Outcome| {
            (o.busy_ns as f64 - baseline_ns * o.sent as f64) / o.at_peer.max(1) as f64
        };
        let stats = (c == Contender::Xdp).then(ProgramStats::start);
        let o = fixed(s, &mut fleet, server.pid, relayed_cpu);
        let program_us = stats.and_then(ProgramStats::finish);
        // Two searches in a full run, the higher kept: other work on a shared machine only
        // ever lowers a saturation figure.
        let saturation = (0..if s.short { 1 } else { 2 })
            .map(|_| {
                search(limit(s), |total| {
                    let load = s.step_load(total, AtPeer::Count, AtClients::Nothing);
                    let o = fleet.run(&load, server.pid);
                    (o.at_peer, o)
                })
            })
            .max_by(|a, b| a.pps.total_cmp(&b.pps))
            .unwrap_or_default();
        Ok(Ok(Measured {
            cpu_us: relayed_cpu(&o) / 1000.0,
            process_us: o.cpu_ns as f64 / o.at_peer.max(1) as f64 / 1000.0,
            program_us,
            fixed_loss: o.loss(o.at_peer),
            saturation,
        }))
    })?
}

/// Why the fast-path turnd did not start: the first error line of its log (clap's "unexpected
/// argument '--fast-path'" from a turnd without the feature).
fn refused(e: &io::Error, logs: &std::path::Path) -> String {
    let log = std::fs::read_to_string(logs.join("veth-xdp-turnd-1.log")).unwrap_or_default();
    let line = log
        .lines()
        .find(|l| l.contains("error"))
        .or_else(|| log.lines().find(|l| !l.trim().is_empty()))
        .map(str::trim)
        .unwrap_or_default();
    if line.is_empty() {
        format!("turnd with the fast path did not start: {e}")
    } else {
        format!("turnd with the fast path did not start: {line}")
    }
}

/// Ok when turnd's metrics say `turnd_fast_path_active 1`; else why not (its `fast path off:`
/// log line when it wrote one).
fn fast_path_active(server: &Running, metrics: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let value = loop {
        match scrape(metrics, "turnd_fast_path_active") {
            Ok(v) => break v,
            Err(e) if Instant::now() > deadline => {
                return Err(format!("turnd's metrics at {metrics} did not answer: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    match value.as_deref() {
        Some("1") => Ok(()),
        other => {
            let log = std::fs::read_to_string(&server.log).unwrap_or_default();
            let reason = log.lines().find_map(|l| {
                let at = l.find("fast path off:")?;
                Some(l[at..].split('"').next().unwrap_or_default().to_owned())
            });
            Err(reason.unwrap_or_else(|| match other {
                Some(v) => format!("turnd_fast_path_active {v}"),
                None => "turnd has no turnd_fast_path_active metric".into(),
            }))
        }
    }
}

/// The value of metric `name` (without labels) on the Prometheus page at `addr`.
fn scrape(addr: SocketAddr, name: &str) -> io::Result<Option<String>> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: turnd\r\nConnection: close\r\n\r\n")?;
    let mut page = String::new();
    conn.read_to_string(&mut page)?;
    Ok(page.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
        Some(rest.trim().to_owned())
    }))
}

/// A target of issue 18: the fast path's figure over another column's.
struct Goal {
    what: &'static str,
    /// (row, other column): row 0 is CPU per packet, row 1 packets/s.
    row: usize,
    other: usize,
    at_least: bool,
    factor: f64,
}

const GOALS: [Goal; 3] = [
    Goal {
        what: "relayed packets/s ≥ 2× the floor",
        row: 1,
        other: 3,
        at_least: true,
        factor: 2.0,
    },
    Goal {
        what: "relayed packets/s ≥ 3× coturn",
        row: 1,
        other: 2,
        at_least: true,
        factor: 3.0,
    },
    Goal {
        what: "CPU per relayed packet ≤ 0.3× turnd userspace",
        row: 0,
        other: 1,
        at_least: false,
        factor: 0.3,
    },
];

impl Results {
    /// The measured rows, a value per column: CPU per packet (the targets' row), packets/s,
    /// and the server process's own CPU per packet.
    fn values(&self) -> [[Option<f64>; 4]; 4] {
        let v = |f: fn(&Measured) -> f64| {
            self.servers
                .clone()
                .map(|m| m.and_then(Result::ok).map(|m| f(&m)))
        };
        [
            v(|m| m.cpu_us),
            v(|m| m.saturation.pps),
            v(|m| m.process_us),
            self.servers
                .clone()
                .map(|m| m.and_then(Result::ok).and_then(|m| m.program_us)),
        ]
    }

    /// The fast path's figure over column `other`'s. A CPU figure at or below zero is noise
    /// (other work on the machine swamped the difference from the baseline), not a cost, and
    /// gives no ratio.
    fn ratio(&self, row: usize, other: usize) -> Option<f64> {
        let v = self.values()[row];
        match (v[0], v[other]) {
            (Some(x), Some(o)) if x > 0.0 && o > 0.0 => Some(x / o),
            _ => None,
        }
    }

    /// Whether other work on the machine makes the whole-machine CPU figures unreliable.
    fn busy(&self) -> bool {
        self.at_rest > BUSY_AT_REST
    }

    /// Why the fast path has no figures, when it has none.
    fn unavailable(&self) -> Option<&str> {
        match &self.servers[0] {
            Some(Err(why)) => Some(why),
            _ => None,
        }
    }

    /// Whether each target was met: None where it cannot be judged.
    fn verdicts(&self) -> Vec<(&'static str, Option<f64>, Option<bool>)> {
        GOALS
            .iter()
            .map(|g| {
                let r = self.ratio(g.row, g.other);
                let met = r.map(|r| {
                    if g.at_least {
                        r >= g.factor
                    } else {
                        r <= g.factor
                    }
                });
                (g.what, r, met)
            })
            .collect()
    }

    /// The group's tables in Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let cell = |v: Option<f64>, i: usize| match (&self.servers[i], v) {
            (Some(Err(_)), _) => "unavailable".to_owned(),
            (_, None) => "—".to_owned(),
            (_, Some(v)) if v >= 100.0 => format!("{v:.0}"),
            (_, Some(v)) if v < 0.1 => format!("{v:.3}"),
            (_, Some(v)) => format!("{v:.2}"),
        };
        let ratio = |r: Option<f64>| r.map_or("—".into(), |r| format!("{r:.2}"));
        s.push_str("| measurement | turnd XDP | turnd userspace | coturn | floor | XDP/floor | XDP/coturn | XDP/userspace |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        let names = [
            format!(
                "CPU per relayed packet, whole machine minus the generator, µs ({} clients, {OFFERED:.0} packets/s offered; baseline {:.2} µs per packet sent)",
                self.clients, self.baseline_us
            ),
            "Saturated relayed packets/s at ≤1% loss".to_owned(),
            "The server process's own CPU per relayed packet, µs (same windows as the first row)"
                .to_owned(),
            "The XDP program's own run time per packet, µs (the kernel's count, `kernel.bpf_stats_enabled`, same windows)"
                .to_owned(),
        ];
        for (row, values) in self.values().iter().enumerate() {
            let cells: Vec<String> = (0..4).map(|i| cell(values[i], i)).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                names[row],
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                ratio(self.ratio(row, 3)),
                ratio(self.ratio(row, 2)),
                ratio(self.ratio(row, 1)),
            );
        }
        let mut notes = Vec::new();
        if self.busy() {
            notes.push(format!(
                "**The machine was {:.0}% busy with nothing under test: other work counts in the whole-machine CPU figures of this run**",
                self.at_rest.min(1.0) * 100.0
            ));
        }
        for (c, r) in Contender::ALL.iter().zip(&self.servers) {
            match r {
                Some(Ok(m)) if m.saturation.generator_limited => notes.push(format!(
                    "{}: the generator was the limit, its packets/s a lower bound",
                    c.name()
                )),
                Some(Ok(m)) if m.fixed_loss > 0.01 => notes.push(format!(
                    "{}: {:.1}% of the fixed load lost",
                    c.name(),
                    m.fixed_loss * 100.0
                )),
                Some(Err(why)) => notes.push(format!("{}: unavailable: {why}", c.name())),
                _ => {}
            }
        }
        for n in notes {
            let _ = writeln!(s, "\n{n}.");
        }
        s.push_str("\n| target (issue 18) | XDP ratio | met |\n|---|---:|---|\n");
        for (goal, (what, r, met)) in GOALS.iter().zip(self.verdicts()) {
            let mut met = match (met, self.unavailable()) {
                (Some(true), _) => "yes".to_owned(),
                (Some(false), _) => "**no**".to_owned(),
                (None, Some(_)) => "unavailable".to_owned(),
                (None, None) => "—".to_owned(),
            };
            if goal.row == 0 && self.busy() && self.unavailable().is_none() {
                met.push_str(" (machine busy: unreliable)");
            }
            let _ = writeln!(s, "| {what} | {} | {met} |", ratio(r));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(cpu_us: f64, pps: f64) -> Option<Result<Measured, String>> {
        Some(Ok(Measured {
            cpu_us,
            process_us: cpu_us,
            program_us: None,
            fixed_loss: 0.0,
            saturation: Saturation {
                pps,
                ..Saturation::default()
            },
        }))
    }

    #[test]
    fn targets_compare_the_fast_path_with_the_named_column() {
        let r = Results {
            at_rest: 0.0,
            baseline_us: 1.0,
            clients: 20,
            servers: [
                measured(1.0, 900_000.0),
                measured(4.0, 300_000.0),
                measured(5.0, 250_000.0),
                measured(3.5, 400_000.0),
            ],
        };
        let v = r.verdicts();
        // 900k / 400k floor = 2.25 ≥ 2; 900k / 250k coturn = 3.6 ≥ 3; 1.0 / 4.0 = 0.25 ≤ 0.3.
        assert_eq!(v[0].2, Some(true));
        assert_eq!(v[1].2, Some(true));
        assert_eq!(v[2].2, Some(true));
        let r = Results {
            servers: [
                measured(2.0, 700_000.0),
                measured(4.0, 300_000.0),
                measured(5.0, 250_000.0),
                measured(3.5, 400_000.0),
            ],
            ..r
        };
        let v = r.verdicts();
        assert_eq!(v[0].2, Some(false));
        assert_eq!(v[1].2, Some(false));
        assert_eq!(v[2].2, Some(false));
    }

    #[test]
    fn cpu_figures_at_or_below_zero_are_noise_and_judge_nothing() {
        let r = Results {
            at_rest: 0.6,
            baseline_us: 50.0,
            clients: 20,
            servers: [
                measured(-0.5, 900_000.0),
                measured(2.0, 300_000.0),
                measured(5.0, 250_000.0),
                measured(3.5, 400_000.0),
            ],
        };
        assert_eq!(r.verdicts()[2].2, None);
        let md = r.markdown();
        assert!(md.contains("60% busy with nothing under test"), "{md}");
        assert!(md.contains("— (machine busy: unreliable)"), "{md}");
    }

    #[test]
    fn an_unavailable_fast_path_is_said_so_and_judged_on_nothing() {
        let r = Results {
            at_rest: 0.0,
            baseline_us: 1.0,
            clients: 20,
            servers: [
                Some(Err("turnd_fast_path_active 0".into())),
                measured(4.0, 300_000.0),
                measured(5.0, 250_000.0),
                measured(3.5, 400_000.0),
            ],
        };
        assert!(r
            .verdicts()
            .iter()
            .all(|(_, ratio, met)| ratio.is_none() && met.is_none()));
        let md = r.markdown();
        assert!(md.contains("| unavailable |"), "{md}");
        assert!(
            md.contains("turnd XDP: unavailable: turnd_fast_path_active 0"),
            "{md}"
        );
    }
}
