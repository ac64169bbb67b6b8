//! What a credential authorised, a reload takes away (issue 20, point 4), on the sans-IO core
//! with injected time: revoking a user, removing the REST secret or the static user that made
//! an allocation ends it at once (relay released, ports and quota back, peer data no longer
//! relayed), over UDP and TCP alike; everything else stays.

mod harness;

use harness::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use turnd_proto::auth::{mint_rest_credential, Credentials};
use turnd_proto::client::{Attr, ClientAuth};
use turnd_proto::server::EndReason;
use turnd_proto::wire::Method;
use turnd_proto::{ClientId, Transport};

fn code(resp: &[u8]) -> Option<u16> {
    Harness::code(resp)
}

const PEER: &str = "8.8.8.8:1000";

fn users() -> HashMap<String, String> {
    [
        ("static-user".to_owned(), "static-pass".to_owned()),
        ("other-user".to_owned(), "other-pass".to_owned()),
    ]
    .into()
}

fn harness() -> Harness {
    let mut cfg = config();
    cfg.credentials = Credentials::new(vec![SECRET.to_vec(), OLD_SECRET.to_vec()], users(), 86_400);
    Harness::new(cfg)
}

fn tcp_client(n: u16) -> ClientId {
    ClientId {
        transport: Transport::Tcp,
        local: u32::from(n),
        remote: SocketAddr::new("192.0.2.60".parse().unwrap(), 41000 + n),
        local_ip: SERVER_IP.parse().unwrap(),
    }
}

/// Allocates for `c` and gives it a permission for [`PEER`]; returns its relay.
fn allocate_with_peer(h: &mut Harness, c: ClientId, auth: &mut ClientAuth) -> turnd_proto::RelayId {
    let before: Vec<_> = h.bound.keys().copied().collect();
    h.allocate_with(c, auth, &[Attr::Lifetime(3600)]);
    let r = h.request(
        c,
        Method::CREATE_PERMISSION,
        &[Attr::Peer(PEER.parse().unwrap())],
        auth,
    );
    assert_eq!(code(&r), None);
    *h.bound
        .keys()
        .find(|r| !before.contains(r))
        .expect("a new relay")
}

/// Whether a datagram from the peer to `relay` still reaches a client.
fn peer_reaches_client(h: &mut Harness, relay: turnd_proto::RelayId) -> bool {
    let mut buf = vec![0u8; 48 + 4 + 4];
    buf[48..52].copy_from_slice(b"ping");
    h.server
        .handle_peer_datagram(h.now, relay, PEER.parse().unwrap(), &mut buf, 48..52)
        .is_some()
}

#[test]
fn revoking_a_user_ends_its_udp_and_tcp_allocations_at_once() {
    let mut h = harness();
    let (udp, tcp, bystander) = (client(1), tcp_client(2), client(3));
    let mut mallory_udp = h.rest_auth("mallory", 3600);
    let mut mallory_tcp = h.rest_auth("mallory", 3601);
    let mut alice = h.rest_auth("alice", 3600);
    let r_udp = allocate_with_peer(&mut h, udp, &mut mallory_udp);
    let r_tcp = allocate_with_peer(&mut h, tcp, &mut mallory_tcp);
    let r_alice = allocate_with_peer(&mut h, bystander, &mut alice);
    assert!(peer_reaches_client(&mut h, r_udp) && peer_reaches_client(&mut h, r_tcp));
    let free = h.server.stats().relay_ports_free;
    assert_eq!(h.server.ledger().total(), 3);

    h.advance(Duration::from_secs(10));
    let revoked = config_credentials().with_revoked(["mallory".to_owned()]);
    let mut ended = h.reload(revoked);
    ended.sort();
    assert_eq!(
        ended,
        vec![(udp, EndReason::Revoked), (tcp, EndReason::Revoked)],
        "both of mallory's allocations, and only those"
    );
    // Ended now, not when the permission (300 s) or the allocation (3600 s) lapses.
    assert!(h.released.contains(&r_udp) && h.released.contains(&r_tcp));
    assert!(!h.released.contains(&r_alice));
    assert!(!peer_reaches_client(&mut h, r_udp));
    assert!(!peer_reaches_client(&mut h, r_tcp));
    assert!(
        peer_reaches_client(&mut h, r_alice),
        "the bystander relays on"
    );
    assert!(!h.server.has_allocation(&udp) && !h.server.has_allocation(&tcp));
    assert_eq!(h.server.ledger().total(), 1, "quota returned");
    assert_eq!(
        h.server.stats().relay_ports_free,
        free + 2,
        "ports returned"
    );
    assert_eq!(h.server.stats().ended_count(EndReason::Revoked), 2);
    // Mallory can neither refresh nor allocate again; Alice refreshes as before.
    let r = h.request(
        udp,
        Method::REFRESH,
        &[Attr::Lifetime(600)],
        &mut mallory_udp,
    );
    assert_eq!(code(&r), Some(401));
    let r = h.request(
        bystander,
        Method::REFRESH,
        &[Attr::Lifetime(600)],
        &mut alice,
    );
    assert_eq!(code(&r), None);
    // A second reload with the same list ends nothing more.
    let again = config_credentials().with_revoked(["mallory".to_owned()]);
    assert!(h.reload(again).is_empty());
}

fn config_credentials() -> Credentials {
    Credentials::new(vec![SECRET.to_vec(), OLD_SECRET.to_vec()], users(), 86_400)
}

/// A credential minted with a secret the reload removed ends its allocation, even one that
/// could otherwise be refreshed forever (no strict expiry, or with it); the current secret's
/// allocations stay.
#[test]
fn removing_a_secret_ends_what_it_minted_and_it_cannot_refresh() {
    for strict in [false, true] {
        let mut h = harness();
        let old = mint_rest_credential(OLD_SECRET, "rotated", h.now.unix, 600);
        let mut old_auth = ClientAuth::new(&old.username, &old.password);
        let mut new_auth = h.rest_auth("current", 600);
        let (a, b) = (client(1), client(2));
        let r_old = allocate_with_peer(&mut h, a, &mut old_auth);
        allocate_with_peer(&mut h, b, &mut new_auth);

        let only_new =
            Credentials::new(vec![SECRET.to_vec()], users(), 86_400).with_strict_expiry(strict);
        let ended = h.reload(only_new);
        assert_eq!(
            ended,
            vec![(a, EndReason::CredentialRemoved)],
            "strict={strict}"
        );
        assert!(h.released.contains(&r_old));
        assert_eq!(
            h.server.stats().ended_count(EndReason::CredentialRemoved),
            1
        );
        let r = h.request(a, Method::REFRESH, &[Attr::Lifetime(600)], &mut old_auth);
        assert_eq!(
            code(&r),
            Some(401),
            "a removed secret's allocation cannot refresh"
        );
        let r = h.request(b, Method::REFRESH, &[Attr::Lifetime(600)], &mut new_auth);
        assert_eq!(code(&r), None);
    }
}

/// A static user removed, or given a new password, loses its allocation; other static users
/// and REST credentials keep theirs.
#[test]
fn removing_or_repasswording_a_static_user_ends_its_allocation() {
    let mut h = harness();
    let (gone, moved, stays, rest) = (client(1), client(2), client(3), client(4));
    let mut gone_auth = ClientAuth::new("static-user", "static-pass");
    let mut moved_auth = ClientAuth::new("other-user", "other-pass");
    let mut stays_auth = ClientAuth::new("third-user", "third-pass");
    let mut rest_auth = h.rest_auth("rest", 600);
    let mut before = users();
    before.insert("third-user".into(), "third-pass".into());
    h.reload(Credentials::new(vec![SECRET.to_vec()], before, 86_400));
    h.allocate(gone, &mut gone_auth);
    h.allocate(moved, &mut moved_auth);
    h.allocate(stays, &mut stays_auth);
    h.allocate(rest, &mut rest_auth);

    let after: HashMap<String, String> = [
        ("other-user".to_owned(), "a-new-password".to_owned()),
        ("third-user".to_owned(), "third-pass".to_owned()),
    ]
    .into();
    let mut ended = h.reload(Credentials::new(vec![SECRET.to_vec()], after, 86_400));
    ended.sort();
    assert_eq!(
        ended,
        vec![
            (gone, EndReason::CredentialRemoved),
            (moved, EndReason::CredentialRemoved)
        ]
    );
    assert!(h.server.has_allocation(&stays) && h.server.has_allocation(&rest));
    let r = h.request(
        gone,
        Method::REFRESH,
        &[Attr::Lifetime(600)],
        &mut gone_auth,
    );
    assert_eq!(code(&r), Some(401));
    let r = h.request(
        stays,
        Method::REFRESH,
        &[Attr::Lifetime(600)],
        &mut stays_auth,
    );
    assert_eq!(code(&r), None);
}

/// A reload that changes nothing about a credential does not end its allocation, even if the
/// credential has expired since (expiry is judged on Refresh, with `strict_expiry`); and an
/// allocation still waiting for its relay socket is ended too when its credential goes.
#[test]
fn expired_credentials_stay_and_pending_allocations_go() {
    let mut h = harness();
    let mut short = h.rest_auth("short", 60);
    h.allocate_with(client(1), &mut short, &[Attr::Lifetime(3600)]);
    h.advance(Duration::from_secs(120));
    assert!(
        h.reload(config_credentials()).is_empty(),
        "expiry is not revocation"
    );
    assert!(h.server.has_allocation(&client(1)));

    // A pending allocation: its relay bind has not been reported yet.
    let mut pending = h.rest_auth("pending", 600);
    let tid = h.tid();
    let first = turnd_proto::client::request(
        Method::ALLOCATE,
        tid,
        &[Attr::RequestedTransport(17)],
        Some(&pending),
        false,
    );
    let challenge = h.send(client(2), &first).unwrap();
    pending.retry_after(&turnd_proto::wire::Message::parse(&challenge).unwrap());
    let tid = h.tid();
    let req = turnd_proto::client::request(
        Method::ALLOCATE,
        tid,
        &[Attr::RequestedTransport(17)],
        Some(&pending),
        false,
    );
    let out = h.server.handle_client_datagram(h.now, client(2), &req);
    assert_eq!(out, turnd_proto::FromClient::Done);
    // The shell has not carried out the BindRelay yet when the reload arrives.
    let revoked = config_credentials().with_revoked(["pending".to_owned()]);
    let ended = h.server.update_policy(revoked, Default::default(), h.now);
    assert_eq!(ended, vec![(client(2), EndReason::Revoked)]);
    assert_eq!(h.server.ledger().total(), 1);
    h.drain();
    assert!(!h.server.has_allocation(&client(2)));
    assert_eq!(
        h.server.ledger().total(),
        1,
        "a late bind report changes nothing"
    );
    assert_eq!(h.bound.len(), 1, "the socket bound too late was released");
}
