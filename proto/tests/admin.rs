//! The admin core (issue 16): listing a worker's live allocations and ending one user's, on
//! the sans-IO server with injected time.

mod harness;

use harness::*;
use std::net::SocketAddr;
use std::time::Duration;
use turnd_proto::client::Attr;
use turnd_proto::server::EndReason;
use turnd_proto::wire::Method;
use turnd_proto::{ClientId, Transport};

const PEER: &str = "8.8.8.8:1000";

fn tcp_client(n: u16) -> ClientId {
    ClientId {
        transport: Transport::Tcp,
        local: u32::from(n),
        remote: SocketAddr::new("192.0.2.60".parse().unwrap(), 41000 + n),
        local_ip: SERVER_IP.parse().unwrap(),
    }
}

#[test]
fn sessions_list_every_allocation_with_its_user_addresses_age_and_counts() {
    let mut h = Harness::new(config());
    let (a, b) = (client(1), tcp_client(2));
    let mut alice = h.rest_auth("alice", 3600);
    let mut bob = h.rest_auth("bob", 3600);
    let relayed_a = h.allocate_with(a, &mut alice, &[Attr::Lifetime(900)]);
    let relayed_b = h.allocate(b, &mut bob);
    let r = h.request(
        a,
        Method::CREATE_PERMISSION,
        &[Attr::Peer(PEER.parse().unwrap())],
        &mut alice,
    );
    assert_eq!(Harness::code(&r), None);
    // Two datagrams from the peer reach alice: her usage counts them.
    let relay = *h.bound.keys().next().expect("alice's relay");
    for _ in 0..2 {
        let mut buf = vec![0u8; 48 + 5 + 4];
        buf[48..53].copy_from_slice(b"hello");
        assert!(h
            .server
            .handle_peer_datagram(h.now, relay, PEER.parse().unwrap(), &mut buf, 48..53)
            .is_some());
    }
    h.advance(Duration::from_secs(30));

    let all = h.server.sessions(None, h.now);
    assert_eq!(all.len(), 2);
    let s = h.server.sessions(Some("alice"), h.now);
    assert_eq!(s.len(), 1, "filtered by user id");
    let s = &s[0];
    assert_eq!(s.user_id, "alice");
    assert!(s.username.ends_with(":alice"), "{}", s.username);
    assert_eq!(s.realm, config().realm);
    assert_eq!((s.transport, s.client), (Transport::Udp, a.remote));
    assert_eq!(s.server.ip(), a.local_ip);
    assert_eq!(s.relayed, vec![relayed_a]);
    assert_eq!(s.age, Duration::from_secs(30));
    assert_eq!(s.remaining, Duration::from_secs(870));
    assert!(s.ready);
    assert_eq!((s.permissions, s.channels), (1, 0));
    assert_eq!(
        (s.usage.to_client.packets, s.usage.to_client.bytes),
        (2, 10)
    );
    assert_eq!(s.usage.to_peer.packets, 0);
    // By full username too.
    let full = s.username.clone();
    assert_eq!(h.server.sessions(Some(&full), h.now).len(), 1);

    let s = &h.server.sessions(Some("bob"), h.now)[0];
    assert_eq!((s.transport, s.client), (Transport::Tcp, b.remote));
    assert_eq!(s.relayed, vec![relayed_b]);
    assert_eq!(s.permissions, 0);
    assert!(h.server.sessions(Some("carol"), h.now).is_empty());
}

#[test]
fn ending_a_user_releases_its_udp_and_tcp_allocations_and_nobody_elses() {
    let mut h = Harness::new(config());
    let (a_udp, a_tcp, b) = (client(1), tcp_client(2), client(3));
    let mut alice1 = h.rest_auth("alice", 3600);
    let mut alice2 = h.rest_auth("alice", 3601);
    let mut bob = h.rest_auth("bob", 3600);
    h.allocate(a_udp, &mut alice1);
    h.allocate(a_tcp, &mut alice2);
    h.allocate(b, &mut bob);
    let free = h.server.stats().relay_ports_free;
    let bound_before = h.bound.len();

    let mut ended = h.server.end_user("alice", h.now);
    h.drain();
    ended.sort();
    assert_eq!(ended, vec![a_udp, a_tcp], "the shell closes the TCP one");
    assert_eq!(h.released.len(), 2, "both relay sockets released");
    assert_eq!(h.bound.len(), bound_before - 2);
    assert!(!h.server.has_allocation(&a_udp) && !h.server.has_allocation(&a_tcp));
    assert!(h.server.has_allocation(&b));
    assert_eq!(h.server.ledger().total(), 1, "quota returned");
    assert_eq!(
        h.server.stats().relay_ports_free,
        free + 2,
        "ports returned"
    );
    assert_eq!(h.server.stats().ended_count(EndReason::Admin), 2);
    // RFC 8656 §7.3: a Refresh for an allocation that no longer exists is 437.
    let r = h.request(a_udp, Method::REFRESH, &[Attr::Lifetime(600)], &mut alice1);
    assert_eq!(Harness::code(&r), Some(437));
    let r = h.request(b, Method::REFRESH, &[Attr::Lifetime(600)], &mut bob);
    assert_eq!(Harness::code(&r), None, "bob is untouched");
    // Nothing left to end; the credential itself still works (revoke keeps a user out).
    assert!(h.server.end_user("alice", h.now).is_empty());
    h.allocate(a_udp, &mut alice1);
}
