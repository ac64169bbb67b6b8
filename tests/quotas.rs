//! Quotas a client cannot escape (issue 20, point 5), over real sockets against an in-process
//! turnd on loopback: 200 anonymous credentials from the HTTP API, used from one address, meet
//! the per-address allocation cap while a bystander flow carries on and another address still
//! allocates; every address of one IPv6 /64 shares the cap (in a private network namespace);
//! and every port of a small relay range can be handed out by either worker.

mod common;

use common::flow::{Flow, FlowTransport};
use common::UdpTurnClient;
use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;
use turnd_proto::client::Attr;
use turnd_proto::wire::Method;

/// A UDP TURN client sending from `local` (any address this host, or namespace, owns).
fn client_from(local: &str, server: SocketAddr, user: &str, pass: &str) -> UdpTurnClient {
    let mut c = UdpTurnClient::new(server, user, pass);
    c.sock = UdpSocket::bind(local).unwrap();
    c.sock
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    c
}

fn allocate_code(c: &mut UdpTurnClient) -> Option<u16> {
    UdpTurnClient::code(&c.request(Method::ALLOCATE, &[Attr::RequestedTransport(17)]))
}

/// An anonymous credential from `GET /api/v1/credentials` (no `username`: the API derives the
/// user id from the API key and the client's address).
fn anonymous_credential(http: SocketAddr) -> (String, String) {
    let r = common::get(http, "/api/v1/credentials?ttl=600");
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    (
        j["username"].as_str().unwrap().to_owned(),
        j["password"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn two_hundred_anonymous_credentials_from_one_address_hit_the_per_address_cap() {
    let _cpu = common::cpu::whole();
    let mut s = common::settings();
    s.allow_peer = Some(vec!["127.0.0.1/32".into()]);
    // What is measured is the allocation cap (default 64): the HTTP rate limit and the
    // unauthenticated-error limiter would otherwise stop the flood first.
    s.http_rate_limit = Some(0);
    s.error_rate_per_source = Some(0);
    // Anonymous credentials from one address and key share one derived user id, so the
    // per-user quota (10) would stop them first (`tests/http_api.rs` checks that layer); off
    // here, the per-address cap is the one that must hold.
    s.user_quota = Some(0);
    // 100 relay ports: without the cap, the flood would empty the range.
    // Above the blocks `common::settings` picks (10000-29999), below the ephemeral range.
    let base = 30_400 + (std::process::id() % 5) as u16 * 100;
    s.relay_ports = Some(format!("{base}-{}", base + 99));
    let turnd = common::start(s);
    let http = turnd.http();

    let (user, pass) = anonymous_credential(http);
    let bystander = Flow::start(turnd.addr, FlowTransport::Udp, &user, &pass);
    // The flow runs a second before and after the flood, so its loss is measured over a few
    // hundred packets rather than the few dozen the flood itself lasts.
    std::thread::sleep(Duration::from_secs(1));

    let mut codes = Vec::new();
    // Every client keeps its socket, so no two of them share a source port (a 5-tuple reused
    // while its allocation lives is rightly answered 437).
    let mut clients = Vec::new();
    for _ in 0..200 {
        let (user, pass) = anonymous_credential(http);
        let mut c = client_from("127.0.0.1:0", turnd.addr, &user, &pass);
        codes.push(allocate_code(&mut c));
        clients.push(c);
    }
    let granted = codes.iter().filter(|c| c.is_none()).count();
    let capped = codes.iter().filter(|c| **c == Some(486)).count();
    println!("200 anonymous Allocates from 127.0.0.1: {granted} granted, {capped} got 486");
    // The bystander holds one of the address's 64.
    assert_eq!((granted, capped), (63, 137), "{codes:?}");
    assert_eq!(turnd.running.ledger.total(), 64);
    // Another address is not affected, and the relay range still has room.
    let (user, pass) = anonymous_credential(http);
    let mut other = client_from("127.0.0.2:0", turnd.addr, &user, &pass);
    assert_eq!(allocate_code(&mut other), None);
    std::thread::sleep(Duration::from_secs(1));
    let report = bystander.stop();
    println!(
        "bystander: sent {}, received {}, p99 {:?}",
        report.sent,
        report.received,
        report.p99()
    );
    report.assert_unharmed("bystander during 200 anonymous Allocates");
}

#[test]
fn every_address_of_one_ipv6_slash_64_shares_the_per_address_cap() {
    let _cpu = common::cpu::shared();
    use common::netns::NetNs;
    let Some(ns) = NetNs::create("v6cap") else {
        return;
    };
    ns.local_prefix("2001:db8:64::/64");
    ns.local_prefix("2001:db8:65::/64");
    let (granted, neighbour) = ns.run(|| {
        let mut s = common::settings();
        s.listen = Some(vec!["[2001:db8:64::1]:0".into()]);
        s.max_allocations_per_address = Some(4);
        s.http_listen = Some("off".into());
        s.metrics_listen = Some("off".into());
        let turnd = common::start(s);
        // Ten hosts of one /64, each its own address: together one client.
        let granted: Vec<Option<u16>> = (0..10)
            .map(|i| {
                let (user, pass) = common::rest(&format!("v6-{i}"), 600);
                let local = format!("[2001:db8:64::{:x}]:0", 0x100 + i);
                allocate_code(&mut client_from(&local, turnd.addr, &user, &pass))
            })
            .collect();
        let (user, pass) = common::rest("neighbour", 600);
        let neighbour = allocate_code(&mut client_from(
            "[2001:db8:65::7]:0",
            turnd.addr,
            &user,
            &pass,
        ));
        (granted, neighbour)
    });
    assert_eq!(
        granted.iter().filter(|c| c.is_none()).count(),
        4,
        "{granted:?}"
    );
    assert!(granted[4..].iter().all(|c| *c == Some(486)), "{granted:?}");
    assert_eq!(neighbour, None, "the next /64 has its own quota");
}

/// Which worker counted the allocation just made: the one whose `allocations_created` rose.
fn worker_of_last_allocation(turnd: &common::Turnd, before: &[u64]) -> usize {
    let mut found = None;
    common::eventually("the allocation shows in a worker's counters", || {
        let now: Vec<u64> = turnd
            .running
            .stats()
            .iter()
            .map(|s| s.allocations_created)
            .collect();
        found = now.iter().zip(before).position(|(n, b)| n > b);
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn every_port_of_a_small_range_is_usable_from_every_worker() {
    let _cpu = common::cpu::shared();
    let mut s = common::settings();
    let base = 30_000 + (std::process::id() % 40) as u16 * 10;
    // Four ports, two workers: a block of two each.
    s.relay_ports = Some(format!("{base}-{}", base + 3));
    s.workers = Some(2);
    let turnd = common::start(s);
    let range: BTreeSet<u16> = (base..=base + 3).collect();
    for worker in 0..2 {
        // Allocate until four clients that landed on `worker` hold a port each; clients that
        // land on the other worker give theirs back at once.
        let mut held = Vec::new();
        let mut tries = 0;
        while held.len() < 4 {
            tries += 1;
            assert!(
                tries < 200,
                "the kernel never spread clients over both workers"
            );
            let (user, pass) = common::rest(&format!("w{worker}-{tries}"), 600);
            let mut c = client_from("127.0.0.1:0", turnd.addr, &user, &pass);
            let before: Vec<u64> = turnd
                .running
                .stats()
                .iter()
                .map(|s| s.allocations_created)
                .collect();
            let resp = c.request(Method::ALLOCATE, &[Attr::RequestedTransport(17)]);
            assert_eq!(
                UdpTurnClient::code(&resp),
                None,
                "worker {worker} refused with {} of its ports in use",
                held.len()
            );
            let port = common::relayed_address(&resp).port();
            if worker_of_last_allocation(&turnd, &before) == worker {
                held.push((c, port));
            } else {
                let r = c.request(Method::REFRESH, &[Attr::Lifetime(0)]);
                assert_eq!(UdpTurnClient::code(&r), None);
            }
        }
        let ports: BTreeSet<u16> = held.iter().map(|(_, p)| *p).collect();
        assert_eq!(
            ports, range,
            "worker {worker} handed out every port of the range"
        );
        // Now the range is empty for everyone.
        let (user, pass) = common::rest("one-too-many", 600);
        let mut late = client_from("127.0.0.1:0", turnd.addr, &user, &pass);
        assert_eq!(allocate_code(&mut late), Some(508));
        for (mut c, _) in held {
            let r = c.request(Method::REFRESH, &[Attr::Lifetime(0)]);
            assert_eq!(UdpTurnClient::code(&r), None);
        }
    }
    assert_eq!(turnd.running.ledger.total(), 0);
}
