//! Typed events from the sans-IO core (issue 16): each kind is reported with its fields, an
//! allocation's end carries exactly what it relayed, and the queue stays bounded without ever
//! dropping an allocation's end.

mod harness;

use harness::*;
use std::net::SocketAddr;
use std::time::Duration;
use turnd_proto::auth::AuthFailure;
use turnd_proto::client::{self, Attr, ClientAuth};
use turnd_proto::server::usage::{Flow, Usage};
use turnd_proto::server::{EndReason, Event, EVENT_QUEUE_MAX};
use turnd_proto::wire::{Method, TransactionId};
use turnd_proto::{ClientId, FromClient, Transport};

const PEER: &str = "8.8.8.8:1000";

fn events(h: &mut Harness) -> Vec<Event> {
    std::iter::from_fn(|| h.server.poll_event()).collect()
}

fn names(evs: &[Event]) -> Vec<&'static str> {
    evs.iter().map(Event::name).collect()
}

fn peer() -> SocketAddr {
    PEER.parse().unwrap()
}

/// Sends ChannelData (or a Send indication) from the client; asserts it is relayed.
fn relay_to_peer(h: &mut Harness, c: ClientId, packet: &[u8]) {
    let out = h.server.handle_client_datagram(h.now, c, packet);
    assert!(
        matches!(out, FromClient::Forward { .. }),
        "relayed: {out:?}"
    );
}

fn relay_to_client(h: &mut Harness, relay: turnd_proto::RelayId, len: usize) {
    let mut buf = vec![0u8; 48 + len + 3];
    assert!(h
        .server
        .handle_peer_datagram(h.now, relay, peer(), &mut buf, 48..48 + len)
        .is_some());
}

/// Allocates for `c` with a channel to [`PEER`]; returns the relay id and relayed address.
fn allocate_with_channel(
    h: &mut Harness,
    c: ClientId,
    auth: &mut ClientAuth,
) -> (turnd_proto::RelayId, SocketAddr) {
    let relayed = h.allocate_with(c, auth, &[Attr::Lifetime(1200)]);
    let r = h.request(
        c,
        Method::CHANNEL_BIND,
        &[Attr::Peer(peer()), Attr::Channel(0x4000)],
        auth,
    );
    assert_eq!(Harness::code(&r), None);
    let relay = *h.bound.keys().last().unwrap();
    (relay, relayed)
}

#[test]
fn a_session_reports_created_bound_refreshed_and_ended_with_exact_usage() {
    let mut h = Harness::new(config());
    let c = client(1);
    let mut alice = h.rest_auth("alice", 3600);
    let (relay, relayed) = allocate_with_channel(&mut h, c, &mut alice);
    let evs = events(&mut h);
    assert_eq!(
        names(&evs),
        [
            "allocation_created",
            "channel_bound",
            "permission_installed"
        ]
    );
    match &evs[0] {
        Event::AllocationCreated {
            owner,
            relayed: r,
            lifetime,
        } => {
            assert_eq!(owner.client, c);
            assert_eq!(owner.user_id, "alice");
            assert_eq!(owner.username, alice.username);
            assert_eq!(*r, [Some(relayed), None]);
            assert_eq!(*lifetime, Duration::from_secs(1200));
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(
        evs[1],
        Event::ChannelBound {
            client: c,
            peer: peer(),
            channel: 0x4000
        }
    );

    // Three ChannelData and two Send indications out, four datagrams back.
    for n in [10, 200, 1] {
        relay_to_peer(&mut h, c, &client::channel_data(0x4000, &vec![7; n], false));
    }
    for n in [33, 4] {
        let si = client::send_indication(TransactionId([n as u8; 12]), peer(), &vec![1; n]);
        relay_to_peer(&mut h, c, &si);
    }
    for n in [100, 0, 1000, 5] {
        relay_to_client(&mut h, relay, n);
    }
    h.advance(Duration::from_secs(30));
    let r = h.request(c, Method::REFRESH, &[Attr::Lifetime(600)], &mut alice);
    assert_eq!(Harness::code(&r), None);
    assert_eq!(
        events(&mut h),
        [Event::AllocationRefreshed {
            client: c,
            lifetime: Duration::from_secs(600)
        }]
    );
    h.advance(Duration::from_secs(12));
    let r = h.request(c, Method::REFRESH, &[Attr::Lifetime(0)], &mut alice);
    assert_eq!(Harness::code(&r), None);
    let evs = events(&mut h);
    assert_eq!(evs.len(), 1, "{evs:?}");
    match &evs[0] {
        Event::AllocationEnded {
            owner,
            reason,
            duration,
            usage,
        } => {
            assert_eq!((owner.client, owner.user_id.as_str()), (c, "alice"));
            assert_eq!(*reason, EndReason::Deleted);
            assert_eq!(*duration, Duration::from_secs(42));
            assert_eq!(
                *usage,
                Usage {
                    to_peer: Flow {
                        packets: 5,
                        bytes: 10 + 200 + 1 + 33 + 4
                    },
                    to_client: Flow {
                        packets: 4,
                        bytes: 1105
                    },
                }
            );
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(h.server.stats().ended_count(EndReason::Deleted), 1);
    // The per-allocation counts add up to the worker's relayed totals.
    assert_eq!(h.server.stats().bytes_to_peer, 248);
    assert_eq!(h.server.stats().bytes_to_client, 1105);
}

#[test]
fn permissions_channels_and_the_allocation_report_their_expiry() {
    let mut h = Harness::new(config());
    let c = client(2);
    let mut bob = h.rest_auth("bob", 3600);
    h.allocate_with(c, &mut bob, &[Attr::Lifetime(700)]);
    let r = h.request(
        c,
        Method::CHANNEL_BIND,
        &[Attr::Peer(peer()), Attr::Channel(0x4001)],
        &mut bob,
    );
    assert_eq!(Harness::code(&r), None);
    let other: SocketAddr = "9.9.9.9:53".parse().unwrap();
    let r = h.request(c, Method::CREATE_PERMISSION, &[Attr::Peer(other)], &mut bob);
    assert_eq!(Harness::code(&r), None);
    events(&mut h);
    // RFC 8656 §9: a permission lasts 300 s (the one ChannelBind installed too).
    h.advance(Duration::from_secs(301));
    let mut evs = events(&mut h);
    evs.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        evs,
        [
            Event::PermissionExpired {
                client: c,
                peer: peer().ip()
            },
            Event::PermissionExpired {
                client: c,
                peer: other.ip()
            },
        ]
    );
    // RFC 8656 §12: a channel lasts 600 s; its expiry is reported once, though it cools down.
    h.advance(Duration::from_secs(300));
    assert_eq!(
        events(&mut h),
        [Event::ChannelExpired {
            client: c,
            peer: peer(),
            channel: 0x4001
        }]
    );
    h.advance(Duration::from_secs(1));
    assert!(events(&mut h).is_empty(), "each expiry reported once");
    h.advance(Duration::from_secs(100));
    let evs = events(&mut h);
    assert_eq!(names(&evs), ["allocation_ended"]);
    assert!(matches!(
        evs[0],
        Event::AllocationEnded {
            reason: EndReason::Expired,
            ..
        }
    ));
}

#[test]
fn auth_failures_refusals_and_denied_peers_are_reported() {
    let mut h = Harness::new(config());
    let c = client(3);
    // The first-round 401 challenge is not news; a wrong password is.
    let mut wrong = ClientAuth::new("static-user", "not-the-password");
    let r = h.request(
        c,
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17)],
        &mut wrong,
    );
    assert_eq!(Harness::code(&r), Some(401));
    assert_eq!(
        events(&mut h),
        [Event::AuthFailed {
            client: c,
            reason: AuthFailure::BadIntegrity
        }]
    );
    // A 442 (RFC 8656 §7.2: only UDP relaying) is a refusal.
    let mut ok = ClientAuth::new("static-user", "static-pass");
    let r = h.request(c, Method::ALLOCATE, &[Attr::RequestedTransport(6)], &mut ok);
    assert_eq!(Harness::code(&r), Some(442));
    assert!(matches!(
        events(&mut h).as_slice(),
        [Event::RequestRefused {
            method: Method::ALLOCATE,
            code: 442,
            ..
        }]
    ));
    // A loopback peer is refused by the default policy: 403 and a denial, both reported.
    h.allocate(c, &mut ok);
    events(&mut h);
    let denied: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let r = h.request(c, Method::CREATE_PERMISSION, &[Attr::Peer(denied)], &mut ok);
    assert_eq!(Harness::code(&r), Some(403));
    let evs = events(&mut h);
    assert!(evs.contains(&Event::PeerDenied {
        client: c,
        peer: denied,
        method: Method::CREATE_PERMISSION
    }));
    assert!(evs.iter().any(|e| matches!(
        e,
        Event::RequestRefused {
            code: 403,
            method: Method::CREATE_PERMISSION,
            ..
        }
    )));
    // A Send indication to it is dropped silently, and reported.
    let si = client::send_indication(TransactionId([3; 12]), denied, b"x");
    assert_eq!(
        h.server.handle_client_datagram(h.now, c, &si),
        FromClient::Done
    );
    assert_eq!(
        events(&mut h),
        [Event::PeerDenied {
            client: c,
            peer: denied,
            method: Method::SEND
        }]
    );
}

#[test]
fn the_queue_is_bounded_but_never_drops_an_allocations_end() {
    let mut h = Harness::new(config());
    let c = client(4);
    let mut ok = h.rest_auth("carol", 3600);
    h.allocate(c, &mut ok);
    // 3000 denied Send indications, nobody polling.
    let denied: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for i in 0..3000u32 {
        let mut tid = [0; 12];
        tid[..4].copy_from_slice(&i.to_be_bytes());
        let si = client::send_indication(TransactionId(tid), denied, b"x");
        h.server.handle_client_datagram(h.now, c, &si);
    }
    assert_eq!(h.server.pending_events(), EVENT_QUEUE_MAX);
    assert_eq!(
        h.server.stats().events_dropped,
        3001 - EVENT_QUEUE_MAX as u64
    );
    // The queue is full, yet the allocation's end is kept.
    h.server.end_all(EndReason::Shutdown, h.now);
    h.drain();
    assert_eq!(h.server.pending_events(), EVENT_QUEUE_MAX + 1);
    let evs = events(&mut h);
    assert!(matches!(
        evs.last(),
        Some(Event::AllocationEnded {
            reason: EndReason::Shutdown,
            ..
        })
    ));
    assert_eq!(h.server.stats().ended_count(EndReason::Shutdown), 1);
}

#[test]
fn a_stream_clients_closed_connection_ends_its_allocation_with_that_reason() {
    let mut h = Harness::new(config());
    let tcp = ClientId {
        transport: Transport::Tcp,
        local: 5,
        remote: "192.0.2.70:45000".parse().unwrap(),
        local_ip: SERVER_IP.parse().unwrap(),
    };
    let mut dave = h.rest_auth("dave", 3600);
    let (relay, _) = allocate_with_channel(&mut h, tcp, &mut dave);
    relay_to_peer(&mut h, tcp, &client::channel_data(0x4000, &[1, 2, 3], true));
    relay_to_client(&mut h, relay, 6);
    events(&mut h);
    h.server.handle_client_closed(&tcp, h.now);
    h.drain();
    match events(&mut h).as_slice() {
        [Event::AllocationEnded { reason, usage, .. }] => {
            assert_eq!(*reason, EndReason::ConnectionClosed);
            assert_eq!((usage.to_peer.packets, usage.to_peer.bytes), (1, 3));
            assert_eq!((usage.to_client.packets, usage.to_client.bytes), (1, 6));
        }
        e => panic!("{e:?}"),
    }
}
