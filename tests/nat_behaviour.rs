//! `turnd nat` through real NATs: a client namespace behind a router namespace doing Linux
//! NAT (iptables), and turnd in a server namespace with two addresses (`stun_alternate`).
//! Each kind of NAT gets the verdict it should:
//!
//! | router                          | mapping                   | filtering                  | meaning   |
//! |---------------------------------|---------------------------|----------------------------|-----------|
//! | SNAT + DNAT of everything (1:1) | endpoint-independent      | endpoint-independent       | direct    |
//! | MASQUERADE                      | endpoint-independent (*)  | address-and-port-dependent | direct    |
//! | MASQUERADE --random-fully       | address-and-port-dependent| address-and-port-dependent | relay     |
//! | MASQUERADE, UDP dropped         | -                         | -                          | tcp-only  |
//!
//! (*) Linux keeps the source port when it is free, so one socket keeps its mapping whatever
//! the destination; conntrack lets in only replies from the exact remote address and port.
//!
//! Addresses: client 10.99.1.2 → router 10.99.1.1 | 10.99.2.254 → turnd 10.99.2.1 (primary)
//! and 10.99.2.2 (alternate). Each case builds its own namespaces and turnd; the cases run in
//! parallel, each in a few seconds.

mod common;

use common::netns::NetNs;
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use turnd_proto::client;
use turnd_proto::wire::{Message, Method, TransactionId};

struct Rig {
    client: NetNs,
    _router: NetNs,
    server: NetNs,
    turnd: Child,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.turnd.kill();
        let _ = self.turnd.wait();
    }
}

fn run_in(ns: &NetNs, program: &str, args: &[&str]) {
    let out = ns
        .command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Client, router and server namespaces, the router's NAT set up by `rules` (iptables
/// argument lists), and turnd serving in the server namespace with RFC 5780 on.
fn rig(tag: &str, rules: &[&str]) -> Option<Rig> {
    let client = NetNs::create(&format!("{tag}c"))?;
    let router = NetNs::create(&format!("{tag}r"))?;
    let server = NetNs::create(&format!("{tag}s"))?;
    NetNs::veth(&client, "cli0", &router, "nat0");
    NetNs::veth(&router, "nat1", &server, "srv0");
    client.ip(&["addr", "add", "10.99.1.2/24", "dev", "cli0"]);
    client.ip(&["route", "add", "default", "via", "10.99.1.1"]);
    router.ip(&["addr", "add", "10.99.1.1/24", "dev", "nat0"]);
    router.ip(&["addr", "add", "10.99.2.254/24", "dev", "nat1"]);
    router.sysctl("net.ipv4.ip_forward", "1");
    server.ip(&["addr", "add", "10.99.2.1/24", "dev", "srv0"]);
    server.ip(&["addr", "add", "10.99.2.2/24", "dev", "srv0"]);
    for r in rules {
        run_in(
            &router,
            "iptables",
            &r.split_whitespace().collect::<Vec<_>>(),
        );
    }
    let turnd = server
        .command(env!("CARGO_BIN_EXE_turnd"))
        .args([
            "serve",
            "--listen",
            "10.99.2.1:3478",
            "--stun-alternate",
            "10.99.2.2:3479",
            "--relay-ip",
            "10.99.2.1",
            "--relay-ports",
            "40000-40099",
            "--http-listen",
            "off",
            "--metrics-listen",
            "off",
            "--selftest-interval",
            "0",
            "--workers",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnd starts");
    let rig = Rig {
        client,
        _router: router,
        server,
        turnd,
    };
    // Ready when the alternate address answers a Binding, from inside the server namespace.
    let ready = rig.server.run(|| {
        let s = UdpSocket::bind("10.99.2.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let req = client::request(Method::BINDING, TransactionId([1; 12]), &[], None, false);
        let until = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 512];
        while Instant::now() < until {
            s.send_to(&req, "10.99.2.2:3479").unwrap();
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return Message::parse(&buf[..n]).is_ok();
            }
        }
        false
    });
    assert!(ready, "turnd answered on the alternate address");
    Some(rig)
}

/// `turnd nat --json` from the client namespace: its JSON and exit code.
fn nat(rig: &Rig) -> (serde_json::Value, i32) {
    let out = rig
        .client
        .command(env!("CARGO_BIN_EXE_turnd"))
        .args([
            "nat",
            "--server",
            "10.99.2.1:3478",
            "--json",
            "--timeout-ms",
            "1000",
        ])
        .output()
        .expect("turnd nat runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "turnd nat printed JSON ({e}): {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (json, out.status.code().unwrap_or(-1))
}

fn iptables_works() -> bool {
    let ok = Command::new("iptables")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "iptables is needed; CI must run this test"
        );
        eprintln!("skipped: no iptables here");
    }
    ok
}

struct Case {
    tag: &'static str,
    /// iptables rules for the router, one per string, split on whitespace.
    rules: &'static [&'static str],
    mapping: Option<&'static str>,
    filtering: Option<&'static str>,
    verdict: &'static str,
    exit: i32,
}

const MASQUERADE: &str = "-t nat -A POSTROUTING -o nat1 -j MASQUERADE";

const CASES: &[Case] = &[
    Case {
        // A full-cone NAT: one static mapping both ways, so anyone may send in.
        tag: "cone",
        rules: &[
            "-t nat -A POSTROUTING -o nat1 -s 10.99.1.2 -j SNAT --to-source 10.99.2.254",
            "-t nat -A PREROUTING -i nat1 -d 10.99.2.254 -j DNAT --to-destination 10.99.1.2",
        ],
        mapping: Some("endpoint-independent"),
        filtering: Some("endpoint-independent"),
        verdict: "direct",
        exit: 0,
    },
    Case {
        tag: "masq",
        rules: &[MASQUERADE],
        mapping: Some("endpoint-independent"),
        filtering: Some("address-and-port-dependent"),
        verdict: "direct",
        exit: 0,
    },
    Case {
        tag: "rand",
        rules: &["-t nat -A POSTROUTING -o nat1 -j MASQUERADE --random-fully"],
        mapping: Some("address-and-port-dependent"),
        filtering: Some("address-and-port-dependent"),
        verdict: "relay",
        exit: 0,
    },
    Case {
        // The server's firewall opens the primary address only: the alternate is silent, so
        // the mapping is unknown and the verdict says why (not "no RFC 5780").
        tag: "alt",
        rules: &[MASQUERADE, "-A FORWARD -p udp -d 10.99.2.2 -j DROP"],
        mapping: None,
        filtering: Some("address-and-port-dependent"),
        verdict: "alternate-silent",
        exit: 0,
    },
    Case {
        tag: "noudp",
        rules: &[MASQUERADE, "-A FORWARD -p udp -j DROP"],
        mapping: None,
        filtering: None,
        verdict: "tcp-only",
        exit: 1,
    },
];

#[test]
fn each_kind_of_nat_gets_its_verdict() {
    if !iptables_works() {
        return;
    }
    let started = Instant::now();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = CASES
            .iter()
            .map(|c| s.spawn(move || rig(c.tag, c.rules).map(|r| (c, nat(&r)))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (case, (json, code)) in results.into_iter().flatten() {
        println!("{}: {json}", case.tag);
        assert_eq!(
            json["mapping"].as_str(),
            case.mapping,
            "{}: {json}",
            case.tag
        );
        assert_eq!(
            json["filtering"].as_str(),
            case.filtering,
            "{}: {json}",
            case.tag
        );
        assert_eq!(json["verdict"], case.verdict, "{}: {json}", case.tag);
        assert_eq!(code, case.exit, "{}: exit code", case.tag);
        if case.verdict == "tcp-only" {
            assert_eq!(json["udp"], false);
            assert_eq!(json["tcp"], true);
        } else {
            assert_eq!(json["udp"], true);
            assert_eq!(json["nat"], true, "{}: mapped to the router", case.tag);
            assert!(json["mapped"].as_str().unwrap().starts_with("10.99.2.254:"));
            assert_eq!(json["other_address"], "10.99.2.2:3479");
        }
    }
    assert!(started.elapsed() < Duration::from_secs(60));
}
