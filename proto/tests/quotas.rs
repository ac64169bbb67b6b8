//! Quotas a client cannot escape (issue 20, point 5), on the sans-IO core: allocations per
//! client address whatever user ids it mints (IPv6 counted per prefix), and relay ports
//! borrowed between workers before anyone is answered 508.

mod harness;

use harness::*;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use turnd_proto::client::{self, Attr};
use turnd_proto::server::ledger::Ledger;
use turnd_proto::server::ports::PortShard;
use turnd_proto::wire::{attr, Message, Method};
use turnd_proto::{ClientId, Transport};

fn code(resp: &[u8]) -> Option<u16> {
    Harness::code(resp)
}

fn from(ip: &str, port: u16) -> ClientId {
    ClientId {
        transport: Transport::Udp,
        local: 0,
        remote: SocketAddr::new(ip.parse().unwrap(), port),
        local_ip: SERVER_IP.parse().unwrap(),
    }
}

/// Allocates with a fresh anonymous user id, as the HTTP API hands out without `username`;
/// returns the error code (None on success).
fn allocate_anonymous(h: &mut Harness, c: ClientId, n: usize) -> Option<u16> {
    let mut auth = h.rest_auth(&format!("anon-{n:04}"), 600);
    let r = h.request(
        c,
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17)],
        &mut auth,
    );
    code(&r)
}

/// 200 allocations with 200 distinct user ids from one address: the per-user quota never
/// applies, the per-address one does (486, RFC 8656 §7.2); another address is unaffected,
/// and an ended allocation gives its slot back.
#[test]
fn two_hundred_anonymous_user_ids_from_one_address_hit_the_address_quota() {
    let ledger = Arc::new(Ledger::new(10, 0).with_address_quota(32));
    let mut h = Harness::with_ledger(config(), ledger.clone());
    let codes: Vec<Option<u16>> = (0..200)
        .map(|n| allocate_anonymous(&mut h, from("192.0.2.7", 10_000 + n as u16), n))
        .collect();
    assert!(codes[..32].iter().all(Option::is_none), "{codes:?}");
    assert!(codes[32..].iter().all(|c| *c == Some(486)), "{codes:?}");
    assert_eq!(ledger.total(), 32);
    assert_eq!(ledger.from_address("192.0.2.7".parse().unwrap()), 32);
    // The relay range (100 ports) was not emptied: a bystander allocates.
    assert_eq!(
        allocate_anonymous(&mut h, from("198.51.100.1", 5000), 999),
        None
    );
    // One allocation of the flooder ends: one more fits, not two.
    let mut auth = h.rest_auth("anon-0000", 600);
    let r = h.request(
        from("192.0.2.7", 10_000),
        Method::REFRESH,
        &[Attr::Lifetime(0)],
        &mut auth,
    );
    assert_eq!(code(&r), None);
    assert_eq!(
        allocate_anonymous(&mut h, from("192.0.2.7", 20_000), 1000),
        None
    );
    assert_eq!(
        allocate_anonymous(&mut h, from("192.0.2.7", 20_001), 1001),
        Some(486)
    );
}

/// An IPv6 client is counted by its /64 (`ipv6_source_prefix`): every address of one /64 shares
/// the quota, the next /64 has its own; with a /128 prefix single addresses are counted.
#[test]
fn ipv6_clients_share_the_address_quota_per_prefix() {
    let v6 = |net: u16, host: u16| -> String { format!("2001:db8:0:{net:x}::{host:x}") };
    let mut cfg = config();
    cfg.relay_v6 = Some(relay_v6());
    let ledger = Arc::new(Ledger::new(0, 0).with_address_quota(4));
    let mut h = Harness::with_ledger(cfg.clone(), ledger.clone());
    let codes: Vec<Option<u16>> = (1..=10u16)
        .map(|i| allocate_anonymous(&mut h, from(&v6(1, i), 3000), i as usize))
        .collect();
    assert_eq!(codes.iter().filter(|c| c.is_none()).count(), 4, "{codes:?}");
    assert!(codes[4..].iter().all(|c| *c == Some(486)));
    let net: IpAddr = "2001:db8:0:1::".parse().unwrap();
    assert_eq!(ledger.from_address(net), 4);
    assert_eq!(allocate_anonymous(&mut h, from(&v6(2, 1), 3000), 100), None);

    cfg.ipv6_source_prefix = 128;
    let mut h = Harness::with_ledger(cfg, Arc::new(Ledger::new(0, 0).with_address_quota(4)));
    let codes: Vec<Option<u16>> = (1..=10u16)
        .map(|i| allocate_anonymous(&mut h, from(&v6(1, i), 3000), i as usize))
        .collect();
    assert!(codes.iter().all(Option::is_none), "{codes:?}");
}

/// Two workers sharing one ledger, each with its block of a 6-port range: either worker can
/// hand out every port of the range (borrowing from the other's block once its own is empty),
/// no port is handed out twice, and only when every block is empty is the answer 508. Ports
/// freed by a borrower serve either worker again.
#[test]
fn every_port_of_a_small_range_is_usable_from_every_worker() {
    for first in [0, 1] {
        let ledger = Arc::new(Ledger::new(0, 0));
        let mut workers: Vec<Harness> = (0..2u16)
            .map(|w| {
                let mut cfg = config();
                cfg.ports = PortShard {
                    range: 50000..=50005,
                    worker: w,
                    workers: 2,
                };
                cfg.seed = u64::from(w);
                Harness::with_ledger(cfg, ledger.clone())
            })
            .collect();
        let mut ports = BTreeSet::new();
        let mut auths = Vec::new();
        for n in 0..6u16 {
            let mut auth = workers[first].rest_auth(&format!("u{n}"), 600);
            let relayed = workers[first].allocate(client(n), &mut auth);
            assert!(
                ports.insert(relayed.port()),
                "port {} twice",
                relayed.port()
            );
            auths.push(auth);
        }
        assert_eq!(
            ports,
            (50000..=50005).collect(),
            "worker {first} used the whole range"
        );
        let total_free: u64 = workers
            .iter_mut()
            .map(|w| {
                w.server.refresh_gauges();
                w.server.stats().relay_ports_free
            })
            .sum();
        assert_eq!(total_free, 0, "the lender counts lent ports out");
        let other = 1 - first;
        let mut late = workers[other].rest_auth("late", 600);
        let r = workers[other].request(
            client(100),
            Method::ALLOCATE,
            &[Attr::RequestedTransport(17)],
            &mut late,
        );
        assert_eq!(code(&r), Some(508), "508 only once every block is empty");
        // The borrower frees everything; the other worker can now use all six ports too.
        for (n, auth) in auths.iter_mut().enumerate() {
            let r = workers[first].request(
                client(n as u16),
                Method::REFRESH,
                &[Attr::Lifetime(0)],
                auth,
            );
            assert_eq!(code(&r), None);
        }
        let mut again = BTreeSet::new();
        for n in 0..6u16 {
            let mut auth = workers[other].rest_auth(&format!("v{n}"), 600);
            again.insert(workers[other].allocate(client(200 + n), &mut auth).port());
        }
        assert_eq!(again, ports);
        assert_eq!(ledger.total(), 6);
        let total: u64 = workers
            .iter()
            .map(|w| w.server.stats().relay_ports_total)
            .sum();
        assert_eq!(total, 6);
    }
}

/// EVEN-PORT with the R bit (RFC 8656 §7.2) when the worker's own block has no even/odd pair
/// left: the pair is borrowed whole from another block, the token is claimed on the other
/// worker, and the two ports are consecutive.
#[test]
fn even_port_pairs_are_borrowed_whole() {
    let ledger = Arc::new(Ledger::new(0, 0));
    let mut workers: Vec<Harness> = (0..2u16)
        .map(|w| {
            let mut cfg = config();
            // Blocks 50000-50001 and 50002-50003.
            cfg.ports = PortShard {
                range: 50000..=50003,
                worker: w,
                workers: 2,
            };
            Harness::with_ledger(cfg, ledger.clone())
        })
        .collect();
    // Worker 0's own pair is taken by a plain allocation of its even port... and odd port.
    for n in 0..2u16 {
        let mut a = workers[0].rest_auth(&format!("plain{n}"), 600);
        let p = workers[0].allocate(client(n), &mut a).port();
        assert!((50000..=50001).contains(&p));
    }
    let mut rtp = workers[0].rest_auth("rtp", 600);
    let resp = workers[0].request(
        client(10),
        Method::ALLOCATE,
        &[
            Attr::RequestedTransport(17),
            Attr::Raw(attr::EVEN_PORT, vec![0x80]),
        ],
        &mut rtp,
    );
    let msg = Message::parse(&resp).unwrap();
    assert_eq!(client::error_code(&msg), None);
    let even = client::address(&msg, attr::XOR_RELAYED_ADDRESS)
        .unwrap()
        .port();
    assert_eq!(even, 50002, "the other block's pair");
    let token = msg.get(attr::RESERVATION_TOKEN).unwrap().to_vec();
    let mut rtcp = workers[1].rest_auth("rtp", 600);
    let resp = workers[1].request(
        client(11),
        Method::ALLOCATE,
        &[
            Attr::RequestedTransport(17),
            Attr::Raw(attr::RESERVATION_TOKEN, token),
        ],
        &mut rtcp,
    );
    let odd = client::address(&Message::parse(&resp).unwrap(), attr::XOR_RELAYED_ADDRESS)
        .unwrap()
        .port();
    assert_eq!(odd, even + 1);
    // Nothing is left anywhere.
    let mut late = workers[1].rest_auth("late", 600);
    let r = workers[1].request(
        client(12),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17)],
        &mut late,
    );
    assert_eq!(code(&r), Some(508));
}
