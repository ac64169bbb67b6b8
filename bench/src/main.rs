//! turnd-bench: turnd measured side by side with coturn and with a floor forwarder.
//!
//!   turnd-bench run [--short] [--out BENCHMARKS.md] [--turnd PATH] [--turnd-xdp PATH]
//!                   [--servers turnd,coturn,floor]
//!                   [--only cpu,saturation,binding,memory,rtt,scale,events,veth]
//!   turnd-bench floor --listen ADDR --peer ADDR [--workers N]
//!
//! `run` is what `scripts/bench.sh` calls: it starts each server on CPU 0 (taskset), pins
//! itself (the load generator) to CPU 1, runs every measurement of issue 9 against each server
//! in turn, prints the table and writes it into the results section of `--out`. The "veth"
//! group (issue 18, `veth.rs`) runs the servers and turnd's XDP fast path (`--turnd-xdp`, by
//! default `turnd-xdp` beside this program) in network namespaces joined by a veth pair, with
//! a table and a results section of its own. `floor` is the floor reference itself (see
//! `floor.rs`). Loopback or private namespaces only; every run is bounded in time.

mod experiments;
mod floor;
mod load;
mod report;
mod servers;
mod setup;
mod sys;
mod topology;
mod veth;

use experiments::{us_per, Settings, Traffic};
use report::{Row, Target};
use servers::{Kind, Programs};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("floor") => run_floor(&args),
        Some("run") => run(&args),
        _ => Err("usage: turnd-bench run [--short] [--out FILE] [--turnd PATH] [--turnd-xdp PATH] [--servers LIST] [--only GROUPS] | turnd-bench floor --listen ADDR --peer ADDR [--workers N]".into()),
    };
    if let Err(e) = result {
        eprintln!("turnd-bench: {e}");
        std::process::exit(2);
    }
}

fn parse<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>, String> {
    arg(args, name)
        .map(|v| v.parse().map_err(|_| format!("{name}: cannot parse {v:?}")))
        .transpose()
}

fn run_floor(args: &[String]) -> Result<(), String> {
    let listen: SocketAddr = parse(args, "--listen")?.ok_or("--listen is required")?;
    let peer: SocketAddr = parse(args, "--peer")?.ok_or("--peer is required")?;
    let workers = parse(args, "--workers")?.unwrap_or(1);
    floor::run(floor::FloorConfig {
        listen,
        peer,
        relay_ip: listen.ip(),
        workers,
    })
    .map_err(|e| e.to_string())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(program))
        .find(|p| p.is_file())
}

fn run(args: &[String]) -> Result<(), String> {
    let short = args.iter().any(|a| a == "--short");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let turnd = arg(args, "--turnd")
        .map(PathBuf::from)
        .unwrap_or_else(|| exe.with_file_name("turnd"));
    let turnd_xdp = arg(args, "--turnd-xdp")
        .map(PathBuf::from)
        .unwrap_or_else(|| exe.with_file_name("turnd-xdp"));
    let turnserver = which("turnserver")
        .ok_or("coturn's turnserver is not on PATH (scripts/bench.sh installs it)")?;
    let servers: Vec<Kind> = match arg(args, "--servers") {
        None => Kind::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|s| {
                Kind::ALL
                    .into_iter()
                    .find(|k| k.name() == s)
                    .ok_or(format!("--servers: unknown server {s:?}"))
            })
            .collect::<Result<_, _>>()?,
    };
    let logs = std::env::temp_dir().join(format!("turnd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;

    sys::raise_file_limit(65_536);
    // The generator is this thread, on CPU 1; the servers are started with taskset on CPU 0.
    sys::pin_current_thread(&[1]).map_err(|e| format!("cannot pin to CPU 1: {e}"))?;
    let peer =
        load::peer_socket("127.0.0.1:0".parse().unwrap(), 8 << 20).map_err(|e| e.to_string())?;
    let settings = Settings {
        short,
        warmup: Duration::from_millis(if short { 200 } else { 1000 }),
        window: Duration::from_millis(if short { 500 } else { 3000 }),
        step_window: Duration::from_millis(if short { 300 } else { 1000 }),
        clients: 20,
        rate_per_client: 1000.0,
        repeats: if short { 1 } else { 3 },
        memory_counts: if short { [100, 1000] } else { [1000, 10_000] },
        scale_counts: if short {
            [10, 100, 1000]
        } else {
            [10, 1000, 10_000]
        },
        programs: Programs {
            turnd,
            turnserver,
            bench: exe,
            logs: logs.clone(),
        },
        peer: peer.local_addr().map_err(|e| e.to_string())?,
        servers,
        only: arg(args, "--only").map(|o| o.split(',').map(str::to_owned).collect()),
    };
    let loopback = GROUPS.iter().any(|g| settings.runs(g));
    let rows = measure(&settings, &peer)
        .map_err(|e| format!("{e} (server logs in {})", logs.display()))?;
    // A measurement that produced nothing is a broken benchmark, not a slow server.
    for (i, kind) in [Kind::Turnd, Kind::Coturn].into_iter().enumerate() {
        if let Some(r) = rows
            .iter()
            .find(|r| settings.servers.contains(&kind) && !r.turnd_only && r.values[i].is_none())
        {
            return Err(format!("{}: no result for {}", r.name, kind.name()));
        }
    }
    let fast_path = if settings.runs("veth") {
        let results = veth::run(&settings, &turnd_xdp).map_err(|e| {
            format!(
                "veth group: {e} (server logs in {}; needs root and iproute2)",
                logs.display()
            )
        })?;
        Some(results.markdown())
    } else {
        None
    };
    let table = report::markdown(&rows);
    if loopback {
        println!("{table}");
    }
    if let Some(fast_path) = &fast_path {
        println!("Fast path over veth (issue 18):\n\n{fast_path}");
    }
    if let Some(out) = arg(args, "--out") {
        let mut doc = std::fs::read_to_string(&out).unwrap_or_default();
        if loopback {
            let results = format!("{}\n{table}", header(&settings, args));
            doc = report::splice(&doc, "bench", &results);
        }
        if let Some(fast_path) = &fast_path {
            let results = format!("{}\n{fast_path}", veth_header(&settings, args));
            doc = report::splice(&doc, "bench:veth", &results);
        }
        std::fs::write(&out, doc).map_err(|e| format!("{out}: {e}"))?;
        eprintln!("turnd-bench: wrote {out}");
    }
    let _ = std::fs::remove_dir_all(&logs);
    Ok(())
}

/// Runs `f` for every server under test; a server not under test gets no value.
fn each<T>(
    s: &Settings,
    what: &str,
    mut f: impl FnMut(Kind) -> std::io::Result<T>,
) -> std::io::Result<[Option<T>; 3]> {
    let mut out: [Option<T>; 3] = [None, None, None];
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        if s.servers.contains(&kind) {
            eprintln!("turnd-bench: {what}: {}", kind.name());
            out[i] = Some(f(kind)?);
        }
    }
    Ok(out)
}

fn map3<T>(v: &[Option<T>; 3], f: impl Fn(&T) -> Option<f64>) -> [Option<f64>; 3] {
    [
        v[0].as_ref().and_then(&f),
        v[1].as_ref().and_then(&f),
        v[2].as_ref().and_then(&f),
    ]
}

fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    Some(sorted[i] as f64 / 1000.0)
}

/// The loopback groups of measurements, in the order they run (`--only` picks some); the
/// "veth" group runs after them.
const GROUPS: [&str; 7] = [
    "cpu",
    "saturation",
    "binding",
    "memory",
    "rtt",
    "scale",
    "events",
];

fn measure(s: &Settings, peer: &std::net::UdpSocket) -> std::io::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut one_worker = None;
    for group in GROUPS.into_iter().filter(|g| s.runs(g)) {
        match group {
            "cpu" => rows.extend(cpu_rows(s, peer)?),
            "saturation" => {
                let (r, one) = saturation_rows(s, peer)?;
                rows.extend(r);
                one_worker = Some(one);
            }
            "binding" => rows.extend(binding_rows(s, peer)?),
            "memory" => rows.extend(memory_rows(s, peer)?),
            "rtt" => rows.extend(rtt_rows(s, one_worker.as_ref(), peer)?),
            "events" => rows.extend(events_rows(s, peer)?),
            _ => rows.extend(scale_rows(s, peer)?),
        }
    }
    Ok(rows)
}

/// Measurement 1: CPU per relayed packet at the fixed load, for each kind of client traffic.
fn cpu_rows(s: &Settings, peer: &std::net::UdpSocket) -> std::io::Result<Vec<Row>> {
    let load = format!(
        "{} clients × {:.0}/s × {} B, echoed",
        s.clients,
        s.rate_per_client,
        load::PAYLOAD
    );
    let mut rows = Vec::new();
    for (traffic, name, target) in [
        (Traffic::UdpChannelData, "UDP ChannelData", 1.1),
        (Traffic::UdpSend, "UDP Send indications", 1.3),
        (Traffic::TcpChannelData, "TCP ChannelData", 1.3),
    ] {
        let o = each(s, name, |k| s.fixed_load(k, traffic, peer))?;
        let mut row = Row::new(
            &format!("CPU per relayed packet, {name}, µs"),
            map3(&o, |o| us_per(o, o.relayed())),
            Target::AtMostFloor(target),
        );
        row.note = load.clone();
        rows.push(row);
    }
    Ok(rows)
}

type Saturations = [Option<experiments::Saturation>; 3];

/// Notes which servers the generator could not saturate.
fn note_generator_limit(row: &mut Row, v: &Saturations) {
    let limited: Vec<&str> = Kind::ALL
        .iter()
        .zip(v)
        .filter(|(_, r)| r.as_ref().is_some_and(|r| r.generator_limited))
        .map(|(k, _)| k.name())
        .collect();
    if !limited.is_empty() {
        row.note = format!("generator the limit for {}", limited.join(", "));
    }
}

/// Measurement 2: Saturated relayed packets/s with one worker and with two.
fn saturation_rows(
    s: &Settings,
    peer: &std::net::UdpSocket,
) -> std::io::Result<(Vec<Row>, Saturations)> {
    let sat = |workers| {
        each(s, &format!("saturation, {workers} worker(s)"), |k| {
            s.saturation(k, workers, Traffic::UdpChannelData, peer)
        })
    };
    let (one, two) = (sat(1)?, sat(2)?);
    let mut rows = Vec::new();
    for (v, name, target) in [
        (
            &one,
            "Saturated relayed packets/s at ≤1% loss, 1 worker",
            Target::AtLeastFloor(0.9),
        ),
        (
            &two,
            "Saturated relayed packets/s at ≤1% loss, 2 workers",
            Target::None,
        ),
    ] {
        let mut row = Row::new(name, map3(v, |r| Some(r.pps)), target);
        note_generator_limit(&mut row, v);
        rows.push(row);
    }
    let scaling = [0, 1, 2].map(|i| match (&one[i], &two[i]) {
        (Some(a), Some(b)) if a.pps > 0.0 => Some(b.pps / a.pps),
        _ => None,
    });
    rows.push(Row::new(
        "2 workers / 1 worker",
        scaling,
        Target::AtLeast(1.7),
    ));
    Ok((rows, one))
}

/// Issue 16: turnd's CPU per relayed packet with session-event logging on (`RUST_LOG=info`,
/// the default) over off (`RUST_LOG=warn`), at the fixed UDP ChannelData load. Events are
/// per allocation, never per packet, so the ratio should be 1 within noise; printed, not
/// asserted.
fn events_rows(s: &Settings, peer: &std::net::UdpSocket) -> std::io::Result<Vec<Row>> {
    if !s.servers.contains(&Kind::Turnd) {
        return Ok(Vec::new());
    }
    let mut us = Vec::new();
    for level in ["info", "warn"] {
        eprintln!("turnd-bench: event logging, RUST_LOG={level}: turnd");
        let o = s.fixed_load_env(
            Kind::Turnd,
            Traffic::UdpChannelData,
            peer,
            &[("RUST_LOG", level)],
        )?;
        us.push(us_per(&o, o.relayed()));
    }
    let ratio = match (us[0], us[1]) {
        (Some(on), Some(off)) if off > 0.0 => Some(on / off),
        _ => None,
    };
    let mut row = Row::new(
        "Event logging on / off: CPU per relayed packet, UDP ChannelData (RUST_LOG=info / warn)",
        [ratio, None, None],
        Target::None,
    );
    row.turnd_only = true;
    row.note = format!(
        "on {:.2} µs, off {:.2} µs",
        us[0].unwrap_or(f64::NAN),
        us[1].unwrap_or(f64::NAN)
    );
    Ok(vec![row])
}

/// Measurement 3: STUN Binding: CPU per request at the fixed load, and requests/s at saturation.
fn binding_rows(s: &Settings, peer: &std::net::UdpSocket) -> std::io::Result<Vec<Row>> {
    let bind = each(s, "binding", |k| s.fixed_load(k, Traffic::Binding, peer))?;
    let mut cpu = Row::new(
        "CPU per STUN Binding request, µs",
        map3(&bind, |o| us_per(o, o.at_clients)),
        Target::AtMostFloor(1.1),
    );
    cpu.note = format!("{} clients × {:.0}/s", s.clients, s.rate_per_client);
    let bind_sat = each(s, "binding saturation", |k| {
        s.saturation(k, 1, Traffic::Binding, peer)
    })?;
    let mut rate = Row::new(
        "STUN Binding requests/s at saturation, 1 worker",
        map3(&bind_sat, |r| Some(r.pps)),
        Target::None,
    );
    note_generator_limit(&mut rate, &bind_sat);
    Ok(vec![cpu, rate])
}

/// Measurement 4: Resident memory per idle allocation, and allocations/s (TURN servers only).
fn memory_rows(s: &Settings, peer: &std::net::UdpSocket) -> std::io::Result<Vec<Row>> {
    let mem = each(s, "memory", |k| {
        if k.is_turn() {
            s.memory(k, peer).map(Some)
        } else {
            Ok(None)
        }
    })?;
    let mut rows = Vec::new();
    for (i, count) in s.memory_counts.iter().enumerate() {
        rows.push(Row::new(
            &format!("Resident memory per idle allocation at {count}, bytes"),
            map3(&mem, |m| m.as_ref().map(|m| m.bytes_per[i])),
            Target::AtMostCoturn(0.1),
        ));
    }
    rows.push(Row::new(
        "Allocations/s",
        map3(&mem, |m| m.as_ref().map(|m| m.per_second)),
        Target::AtLeastCoturn(2.0),
    ));
    Ok(rows)
}

/// Measurement 5: Round trips at half load, so every server is at most half loaded: half the slowest
/// server's one-worker saturation, when this run measured saturation.
fn rtt_rows(
    s: &Settings,
    one_worker: Option<&Saturations>,
    peer: &std::net::UdpSocket,
) -> std::io::Result<Vec<Row>> {
    let slowest = one_worker
        .into_iter()
        .flatten()
        .flatten()
        .map(|r| r.pps)
        .fold(f64::INFINITY, f64::min);
    let half = if slowest.is_finite() {
        slowest / 2.0
    } else {
        100_000.0
    };
    // Every message is relayed twice (there and back): clients send half the relayed rate.
    let rtt = each(s, "round trip", |k| s.round_trip(k, half / 2.0, peer))?;
    let sorted = rtt.map(|o| {
        o.map(|o| {
            let mut v = o.rtt_ns;
            v.sort_unstable();
            v
        })
    });
    let mut rows = Vec::new();
    for (p, name, target) in [
        (0.5, "Relay round trip p50, µs", Target::None),
        (0.99, "Relay round trip p99, µs", Target::AtMostCoturn(1.0)),
    ] {
        let mut row = Row::new(name, map3(&sorted, |v| percentile(v, p)), target);
        row.note = format!("{half:.0} relayed packets/s, half the slowest saturation");
        rows.push(row);
    }
    Ok(rows)
}

/// Measurement 6: CPU per packet as allocations grow, the load fixed: it must stay flat.
fn scale_rows(s: &Settings, peer: &std::net::UdpSocket) -> std::io::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut at_scale = Vec::new();
    for n in s.scale_counts {
        let o = each(s, &format!("{n} allocations"), |k| s.at_scale(k, n, peer))?;
        let mut row = Row::new(
            &format!("CPU per relayed packet with {n} allocations, µs"),
            map3(&o, |o| us_per(o, o.at_peer)),
            Target::None,
        );
        row.note = format!(
            "{:.0} packets/s client to peer in all",
            s.rate_per_client * s.clients as f64
        );
        at_scale.push(row.values);
        rows.push(row);
    }
    let (first, last) = (at_scale[0], at_scale[at_scale.len() - 1]);
    let flat = [0, 1, 2].map(|i| match (first[i], last[i]) {
        (Some(a), Some(b)) if a > 0.0 => Some(b / a),
        _ => None,
    });
    rows.push(Row::new(
        &format!(
            "Per-packet cost at {} / at {} allocations",
            s.scale_counts[2], s.scale_counts[0]
        ),
        flat,
        Target::AtMost(1.2),
    ));
    Ok(rows)
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Machine, date, versions and the command, above the table.
fn header(s: &Settings, args: &[String]) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    // Not available_parallelism: this thread is pinned to one CPU by now.
    // SAFETY: sysconf has no preconditions.
    let cores = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let coturn = command_output(&s.programs.turnserver.to_string_lossy(), &["--version"]);
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"]);
    format!(
        "Measured {} on {cpu} ({cores} CPUs), Linux {}; turnd {commit}, coturn {coturn}.\n\
         Command: `scripts/bench.sh{}` ({}). Servers on CPU 0, load generator on CPU 1; \
         two-worker runs give the server CPUs 0 and 1. CPU figures are the median of {} \
         windows of {:.1} s.\n",
        command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        command_output("uname", &["-r"]),
        if s.short { " --short" } else { "" },
        args[1..].join(" "),
        s.repeats,
        s.window.as_secs_f64(),
    )
}

/// Date, versions, the command and the veth group's windows, above its tables.
fn veth_header(s: &Settings, args: &[String]) -> String {
    format!(
        "Measured {}, Linux {}; turnd {}, coturn {}. Command: `scripts/bench.sh{}` ({}). \
         Servers on CPU 0 in namespace \"relay\", the generator on CPU 1 in \"outside\"; CPU \
         figures are the least of {} windows of {:.1} s, client → peer, IPv4.\n",
        command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        command_output("uname", &["-r"]),
        command_output("git", &["rev-parse", "--short", "HEAD"]),
        command_output(&s.programs.turnserver.to_string_lossy(), &["--version"]),
        if s.short { " --short" } else { "" },
        args[1..].join(" "),
        s.repeats,
        s.window.as_secs_f64(),
    )
}
