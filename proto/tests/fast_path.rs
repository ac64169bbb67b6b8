//! The core's side of the kernel fast path (issue 18): with `fast_path` on, the server tells
//! the shell which UDP channels a kernel program may relay and until when, and takes each
//! back when it stops being usable. The harness keeps the route table as the commands leave
//! it, the way the shell's maps would be.

mod harness;

use harness::*;
use std::net::SocketAddr;
use std::time::Duration;
use turnd_proto::client::Attr;
use turnd_proto::wire::Method;
use turnd_proto::{ClientId, ServerConfig, Transport};

const PEER: &str = "8.8.8.8:1000";
const PEER_2: &str = "8.8.4.4:2000";

fn fast_config() -> ServerConfig {
    let mut c = config();
    c.fast_path = true;
    c.udp_listeners = vec![format!("{SERVER_IP}:3478").parse().unwrap()];
    c
}

fn peer(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn bind(h: &mut Harness, c: ClientId, auth: &mut turnd_proto::client::ClientAuth, n: u16, p: &str) {
    let r = h.request(
        c,
        Method::CHANNEL_BIND,
        &[Attr::Peer(peer(p)), Attr::Channel(n)],
        auth,
    );
    assert_eq!(Harness::code(&r), None, "ChannelBind {n:#x} to {p}");
}

#[test]
fn a_channel_bind_installs_a_route_with_the_bind_address_and_the_earlier_expiry() {
    let mut h = Harness::new(fast_config());
    let c = client(1);
    let mut alice = h.rest_auth("alice", 3600);
    let relayed = h.allocate(c, &mut alice);
    assert!(h.routes.is_empty(), "no route before a channel");
    bind(&mut h, c, &mut alice, 0x4001, PEER);
    let routes: Vec<_> = h.routes.values().copied().collect();
    assert_eq!(routes.len(), 1);
    let r = routes[0];
    assert_eq!(r.client, c);
    assert_eq!(r.server, format!("{SERVER_IP}:3478").parse().unwrap());
    assert_eq!(r.channel, 0x4001);
    assert_eq!(r.peer, peer(PEER));
    // Packets reach the relay at its bind address, not the advertised (1:1 NAT) one.
    assert_eq!(r.relay, SocketAddr::new(relay_v4().bind, relayed.port()));
    // The permission (300 s) runs out before the channel (600 s).
    assert_eq!(r.expires, h.now.mono + Duration::from_secs(300));

    // Refreshing the permission moves the route's expiry with it.
    h.advance(Duration::from_secs(100));
    let resp = h.request(
        c,
        Method::CREATE_PERMISSION,
        &[Attr::Peer(peer(PEER))],
        &mut alice,
    );
    assert_eq!(Harness::code(&resp), None);
    let r = *h.routes.values().next().unwrap();
    assert_eq!(r.expires, h.now.mono + Duration::from_secs(300));
}

#[test]
fn an_expired_permission_or_channel_takes_its_route_back_and_a_rebind_restores_it() {
    let mut h = Harness::new(fast_config());
    let c = client(2);
    let mut alice = h.rest_auth("alice", 3600);
    h.allocate_with(c, &mut alice, &[Attr::Lifetime(3600)]);
    bind(&mut h, c, &mut alice, 0x4000, PEER);
    bind(&mut h, c, &mut alice, 0x4001, PEER_2);
    assert_eq!(h.routes.len(), 2);

    // Keep PEER_2's permission alive; PEER's lapses at 300 s: its route goes at the sweep.
    h.advance(Duration::from_secs(200));
    h.request(
        c,
        Method::CREATE_PERMISSION,
        &[Attr::Peer(peer(PEER_2))],
        &mut alice,
    );
    h.advance(Duration::from_secs(101));
    let channels: Vec<u16> = h.routes.values().map(|r| r.channel).collect();
    assert_eq!(channels, [0x4001], "PEER's permission expired");

    // A CreatePermission for PEER while its channel lives brings the route back.
    h.request(
        c,
        Method::CREATE_PERMISSION,
        &[Attr::Peer(peer(PEER))],
        &mut alice,
    );
    assert_eq!(h.routes.len(), 2);

    // Channels expire at 600 s even with permissions refreshed.
    h.request(
        c,
        Method::CREATE_PERMISSION,
        &[Attr::Peer(peer(PEER))],
        &mut alice,
    );
    h.request(
        c,
        Method::CREATE_PERMISSION,
        &[Attr::Peer(peer(PEER_2))],
        &mut alice,
    );
    h.advance(Duration::from_secs(300));
    assert!(h.routes.is_empty(), "channels expired: {:?}", h.routes);

    // After the cool-down, the number may go to another peer: a new route under the same key.
    h.advance(Duration::from_secs(301));
    bind(&mut h, c, &mut alice, 0x4000, PEER_2);
    let r = *h.routes.values().next().unwrap();
    assert_eq!((r.channel, r.peer), (0x4000, peer(PEER_2)));
}

#[test]
fn every_end_of_an_allocation_removes_its_routes() {
    let mut h = Harness::new(fast_config());
    let mut alice = h.rest_auth("alice", 3600);
    // Deleted by the client (Refresh with LIFETIME 0).
    let c = client(3);
    h.allocate(c, &mut alice);
    bind(&mut h, c, &mut alice, 0x4000, PEER);
    bind(&mut h, c, &mut alice, 0x4001, PEER_2);
    let r = h.request(c, Method::REFRESH, &[Attr::Lifetime(0)], &mut alice);
    assert_eq!(Harness::code(&r), None);
    assert!(h.routes.is_empty(), "deleted: {:?}", h.routes);

    // Revoked by a reload that removes every secret.
    let d = client(4);
    h.allocate(d, &mut alice);
    bind(&mut h, d, &mut alice, 0x4000, PEER);
    assert_eq!(h.routes.len(), 1);
    let users = std::collections::HashMap::new();
    h.reload(turnd_proto::auth::Credentials::new(vec![], users, 86_400));
    assert!(h.routes.is_empty(), "revoked: {:?}", h.routes);
}

#[test]
fn stream_clients_and_a_fast_path_left_off_emit_no_route() {
    let mut h = Harness::new(fast_config());
    let mut alice = h.rest_auth("alice", 3600);
    let tcp = ClientId {
        transport: Transport::Tcp,
        ..client(5)
    };
    h.allocate(tcp, &mut alice);
    bind(&mut h, tcp, &mut alice, 0x4000, PEER);
    assert!(h.routes.is_empty(), "TCP ChannelData is framed in a stream");

    let mut h = Harness::new(config());
    let c = client(6);
    h.allocate(c, &mut alice);
    bind(&mut h, c, &mut alice, 0x4000, PEER);
    assert!(h.routes.is_empty(), "fast_path is off by default");
}
