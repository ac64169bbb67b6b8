//! One named test per RFC rule the server relies on, on the sans-IO core with injected time.
//! Each quotes the rule it checks.

mod harness;

use harness::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use turnd_proto::client::{self, Attr, ClientAuth};
use turnd_proto::server::ledger::Ledger;
use turnd_proto::server::ports::PortShard;
use turnd_proto::wire::{attr, Class, Message, MessageEncoder, Method, TransactionId};
use turnd_proto::{ClientId, FromClient, RelayAddress};

fn peer(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn code(resp: &[u8]) -> Option<u16> {
    Harness::code(resp)
}

// ---------------------------------------------------------------- STUN (RFC 8489)

/// RFC 8489 §6.3.1: "the server ... MUST include ... XOR-MAPPED-ADDRESS"; FINGERPRINT is added
/// when the request had one.
#[test]
fn binding_answers_xor_mapped_address_with_fingerprint_when_asked() {
    let mut h = Harness::new(config());
    let c = client(1);
    for fp in [false, true] {
        let tid = h.tid();
        let resp = h
            .send(c, &client::request(Method::BINDING, tid, &[], None, fp))
            .unwrap();
        let msg = Message::parse(&resp).unwrap();
        assert_eq!(msg.class(), Class::Success);
        assert_eq!(msg.transaction_id(), tid);
        assert_eq!(
            client::address(&msg, attr::XOR_MAPPED_ADDRESS),
            Some(c.remote)
        );
        assert_eq!(msg.has_fingerprint(), fp);
    }
    assert_eq!(h.server.stats().binding_requests, 2);
}

/// RFC 8489 §6.3: a malformed request is answered 400; packets that are not STUN are dropped.
#[test]
fn malformed_requests_get_400_and_garbage_is_dropped() {
    let mut h = Harness::new(config());
    let tid = h.tid();
    let mut bad = client::request(
        Method::BINDING,
        tid,
        &[Attr::Raw(0x8022, b"abcd".to_vec())],
        None,
        false,
    );
    bad[23] = 200; // attribute length runs past the message
    assert_eq!(code(&h.send(client(1), &bad).unwrap()), Some(400));
    assert_eq!(h.send(client(1), &[0xFF; 40]), None);
    assert_eq!(h.send(client(1), &[0x00, 0x01, 0x00]), None);
    assert_eq!(h.send(client(1), &[]), None);
}

/// RFC 8489 §6.3.1: "If the request contains one or more unknown comprehension-required
/// attributes, the server replies with an error response with an error code of 420 ... and
/// includes an UNKNOWN-ATTRIBUTES attribute".
#[test]
fn unknown_comprehension_required_attribute_gets_420() {
    let mut h = Harness::new(config());
    let tid = h.tid();
    let req = client::request(
        Method::BINDING,
        tid,
        &[
            Attr::Raw(0x0003, vec![0, 0, 0, 4]),
            Attr::Raw(0xC001, vec![1, 2, 3, 4]),
        ],
        None,
        false,
    );
    let resp = h.send(client(1), &req).unwrap();
    let msg = Message::parse(&resp).unwrap();
    assert_eq!(client::error_code(&msg), Some(420));
    assert_eq!(msg.get(attr::UNKNOWN_ATTRIBUTES), Some(&[0x00, 0x03][..]));
}

// ---------------------------------------------------------------- authentication

/// RFC 8489 §9.2.4: "If the message does not contain a MESSAGE-INTEGRITY ... the server MUST
/// generate an error response with an error code of 401 ... [with] REALM ... [and] NONCE".
#[test]
fn request_without_integrity_gets_401_with_realm_and_nonce() {
    let mut h = Harness::new(config());
    let tid = h.tid();
    let req = client::request(
        Method::ALLOCATE,
        tid,
        &[Attr::RequestedTransport(17)],
        None,
        false,
    );
    let resp = h.send(client(1), &req).unwrap();
    let msg = Message::parse(&resp).unwrap();
    assert_eq!(client::error_code(&msg), Some(401));
    assert_eq!(msg.get(attr::REALM), Some(REALM.as_bytes()));
    assert_eq!(msg.get(attr::NONCE).map(|n| n.len()), Some(32));
    assert!(!msg.has_integrity(), "401 is not integrity-protected");
    // Amplification: the challenge stays within 4x the request.
    assert!(
        resp.len() <= 4 * req.len(),
        "{} vs {}",
        resp.len(),
        req.len()
    );
}

/// RFC 8489 §9.2.4: "If the NONCE is no longer valid, the server MUST generate an error
/// response with an error code of 438 (Stale Nonce) ... [with] a NONCE".
#[test]
fn stale_nonce_gets_438_with_a_fresh_nonce() {
    let mut h = Harness::new(config());
    let c = client(1);
    let mut auth = h.rest_auth("alice", 86_400);
    h.allocate_with(c, &mut auth, &[Attr::Lifetime(3600)]);
    let old = auth.nonce.clone().unwrap();
    h.advance(Duration::from_secs(601));
    let tid = h.tid();
    let resp = h
        .send(
            c,
            &client::request(Method::REFRESH, tid, &[], Some(&auth), false),
        )
        .unwrap();
    let msg = Message::parse(&resp).unwrap();
    assert_eq!(client::error_code(&msg), Some(438));
    let fresh = String::from_utf8(msg.get(attr::NONCE).unwrap().to_vec()).unwrap();
    assert_ne!(fresh, old);
    auth.nonce = Some(fresh);
    let tid = h.tid();
    let resp = h
        .send(
            c,
            &client::request(Method::REFRESH, tid, &[], Some(&auth), false),
        )
        .unwrap();
    assert_eq!(code(&resp), None, "the fresh nonce works");
}

/// RFC 8489 §9.2.4: a request with MESSAGE-INTEGRITY but no USERNAME, REALM or NONCE is 400.
#[test]
fn integrity_without_username_realm_or_nonce_is_400() {
    let mut h = Harness::new(config());
    let mut out = Vec::new();
    let mut enc = MessageEncoder::new(
        &mut out,
        Method::ALLOCATE,
        Class::Request,
        TransactionId([3; 12]),
    );
    enc.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    enc.message_integrity(b"whatever");
    enc.finish();
    assert_eq!(code(&h.send(client(1), &out).unwrap()), Some(400));
}

/// Wrong password → 401; the success response to a right one is integrity-protected with the
/// same key (RFC 8489 §9.2.4).
#[test]
fn wrong_password_gets_401_and_success_is_protected() {
    let mut h = Harness::new(config());
    let mut auth = h.rest_auth("alice", 3600);
    auth.password = "not-the-password".into();
    let resp = h.request(
        client(1),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17)],
        &mut auth,
    );
    assert_eq!(code(&resp), Some(401));
    let mut good = h.rest_auth("alice", 3600);
    let resp = h.request(
        client(1),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17)],
        &mut good,
    );
    let msg = Message::parse(&resp).unwrap();
    assert!(msg.verify_integrity(&good.key().unwrap()));
}

/// REST credentials (draft-uberti-behave-turn-rest-00): expired usernames and expiries
/// further ahead than max_ttl are refused; max_ttl itself is accepted (coturn's -W mints
/// exactly 86,400 s ahead).
#[test]
fn rest_expiry_and_max_ttl_are_enforced() {
    let mut h = Harness::new(config());
    let mut expired = ClientAuth::new(
        &format!("{}:bob", T0 - 1),
        &turnd_proto::auth::rest_password(SECRET, &format!("{}:bob", T0 - 1)),
    );
    let r = h.request(
        client(1),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17)],
        &mut expired,
    );
    assert_eq!(code(&r), Some(401));
    let mut too_long = h.rest_auth("bob", 86_401);
    let r = h.request(
        client(1),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17)],
        &mut too_long,
    );
    assert_eq!(code(&r), Some(401));
    let mut at_max = h.rest_auth("bob", 86_400);
    h.allocate(client(1), &mut at_max);
    let s = h.server.stats();
    assert_eq!(
        s.auth_failures[turnd_proto::auth::AuthFailure::Expired.index()],
        1
    );
    assert_eq!(
        s.auth_failures[turnd_proto::auth::AuthFailure::TtlTooLong.index()],
        1
    );
}

/// Secret rotation: credentials minted with any configured secret work.
#[test]
fn every_configured_secret_is_accepted() {
    let mut h = Harness::new(config());
    let c = turnd_proto::auth::mint_rest_credential(OLD_SECRET, "carol", T0, 600);
    let mut auth = ClientAuth::new(&c.username, &c.password);
    h.allocate(client(1), &mut auth);
    let c = turnd_proto::auth::mint_rest_credential(b"unknown-secret", "carol", T0, 600);
    let mut auth = ClientAuth::new(&c.username, &c.password);
    let r = h.request(
        client(2),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17)],
        &mut auth,
    );
    assert_eq!(code(&r), Some(401));
}

/// Static users work alongside REST credentials.
#[test]
fn static_users_authenticate() {
    let mut h = Harness::new(config());
    let mut auth = ClientAuth::new("static-user", "static-pass");
    h.allocate(client(1), &mut auth);
    let mut rest = h.rest_auth("dave", 600);
    h.allocate(client(2), &mut rest);
}

/// RFC 8489 §14.6: MESSAGE-INTEGRITY-SHA256 requests are verified and answered in kind.
#[test]
fn message_integrity_sha256_is_verified_and_answered_in_kind() {
    let mut h = Harness::new(config());
    let mut auth = h.rest_auth("erin", 600);
    let tid = h.tid();
    let r = h
        .send(
            client(1),
            &client::request(
                Method::ALLOCATE,
                tid,
                &[Attr::RequestedTransport(17)],
                None,
                false,
            ),
        )
        .unwrap();
    auth.learn(&Message::parse(&r).unwrap());
    let key = auth.key().unwrap();
    let mut out = Vec::new();
    let mut enc = MessageEncoder::new(
        &mut out,
        Method::ALLOCATE,
        Class::Request,
        TransactionId([9; 12]),
    );
    enc.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    enc.attr(attr::USERNAME, auth.username.as_bytes());
    enc.attr(attr::REALM, REALM.as_bytes());
    enc.attr(attr::NONCE, auth.nonce.as_ref().unwrap().as_bytes());
    enc.message_integrity_sha256(&key);
    enc.finish();
    let resp = h.send(client(1), &out).unwrap();
    let msg = Message::parse(&resp).unwrap();
    assert_eq!(client::error_code(&msg), None);
    assert!(msg.has_integrity_sha256());
    assert!(msg.verify_integrity_sha256(&key));
}

/// RFC 8656 §5: "the server MUST ... use the same USERNAME ... as the one used to create the
/// allocation" — another username on the same 5-tuple gets 441.
#[test]
fn another_username_on_an_allocation_gets_441() {
    let mut h = Harness::new(config());
    let mut alice = h.rest_auth("alice", 600);
    h.allocate(client(1), &mut alice);
    let mut mallory = h.rest_auth("mallory", 600);
    let r = h.request(
        client(1),
        Method::REFRESH,
        &[Attr::Lifetime(600)],
        &mut mallory,
    );
    assert_eq!(code(&r), Some(441));
    // RFC 8656 §7.2: an Allocate on a 5-tuple in use is 437, whatever the username.
    let r = h.request(
        client(1),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17)],
        &mut mallory,
    );
    assert_eq!(code(&r), Some(437));
}

// ---------------------------------------------------------------- Allocate / Refresh

/// RFC 8656 §7.2 and §7.3: the success response carries XOR-RELAYED-ADDRESS, LIFETIME and
/// XOR-MAPPED-ADDRESS; the lifetime defaults to 600 s and is capped at 3600 s.
#[test]
fn allocate_answers_relayed_address_lifetime_and_mapped_address() {
    let mut h = Harness::new(config());
    let mut auth = h.rest_auth("alice", 600);
    let c = client(1);
    let resp = h.request(
        c,
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17)],
        &mut auth,
    );
    let msg = Message::parse(&resp).unwrap();
    let relayed = client::address(&msg, attr::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(relayed.ip(), relay_v4().advertised);
    assert!((50000..=50099).contains(&relayed.port()));
    assert_eq!(msg.get(attr::LIFETIME), Some(&600u32.to_be_bytes()[..]));
    assert_eq!(
        client::address(&msg, attr::XOR_MAPPED_ADDRESS),
        Some(c.remote)
    );
    let bound = h.bound.values().next().unwrap();
    assert_eq!(
        bound.ip(),
        relay_v4().bind,
        "relay sockets bind the local address"
    );

    let mut auth2 = h.rest_auth("bob", 600);
    let r = h.request(
        client(2),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17), Attr::Lifetime(7200)],
        &mut auth2,
    );
    assert_eq!(
        Message::parse(&r).unwrap().get(attr::LIFETIME),
        Some(&3600u32.to_be_bytes()[..])
    );
    let mut auth3 = h.rest_auth("carol", 600);
    let r = h.request(
        client(3),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17), Attr::Lifetime(30)],
        &mut auth3,
    );
    assert_eq!(
        Message::parse(&r).unwrap().get(attr::LIFETIME),
        Some(&600u32.to_be_bytes()[..])
    );
}

/// RFC 8656 §7.2: REQUESTED-TRANSPORT other than UDP → 442; missing → 400.
#[test]
fn allocate_tcp_transport_gets_442_and_missing_transport_400() {
    let mut h = Harness::new(config());
    let mut auth = h.rest_auth("alice", 600);
    assert_eq!(
        code(&h.request(
            client(1),
            Method::ALLOCATE,
            &[Attr::RequestedTransport(6)],
            &mut auth
        )),
        Some(442)
    );
    assert_eq!(
        code(&h.request(client(1), Method::ALLOCATE, &[], &mut auth)),
        Some(400)
    );
}

/// RFC 8656 §7.2: a second Allocate on a 5-tuple that has one is 437, while a retransmission
/// of the first gets the original success response.
#[test]
fn second_allocate_gets_437_and_retransmission_the_same_answer() {
    let mut h = Harness::new(config());
    let mut auth = h.rest_auth("alice", 600);
    let c = client(1);
    let tid = h.tid();
    let r = h
        .send(
            c,
            &client::request(
                Method::ALLOCATE,
                tid,
                &[Attr::RequestedTransport(17)],
                None,
                false,
            ),
        )
        .unwrap();
    auth.learn(&Message::parse(&r).unwrap());
    let tid = h.tid();
    let req = client::request(
        Method::ALLOCATE,
        tid,
        &[Attr::RequestedTransport(17)],
        Some(&auth),
        false,
    );
    let first = h.send(c, &req).unwrap();
    let again = h.send(c, &req).unwrap();
    assert_eq!(first, again);
    assert_eq!(h.bound.len(), 1, "a retransmission does not allocate twice");
    assert_eq!(
        code(&h.request(
            c,
            Method::ALLOCATE,
            &[Attr::RequestedTransport(17)],
            &mut auth
        )),
        Some(437)
    );
}

/// RFC 8656 §2: the server's address is part of the 5-tuple. One client address sending to two
/// addresses of the server holds two allocations, and each one's responses and relayed data go
/// to the client as the 5-tuple it came on (so the shell sends them from that address).
#[test]
fn two_server_addresses_are_two_five_tuples() {
    let mut h = Harness::new(config());
    let mut auth = h.rest_auth("alice", 600);
    let a = client(1);
    let b = ClientId {
        local_ip: "192.0.2.2".parse().unwrap(),
        ..a
    };
    let relayed_a = h.allocate(a, &mut auth);
    let relayed_b = h.allocate(b, &mut auth);
    assert_ne!(relayed_a, relayed_b, "two allocations, not a 437");
    assert_eq!(h.bound.len(), 2);
    let p = peer("8.8.8.8:1000");
    for (c, relayed) in [(a, relayed_a), (b, relayed_b)] {
        h.request(c, Method::CREATE_PERMISSION, &[Attr::Peer(p)], &mut auth);
        let relay = *h
            .bound
            .iter()
            .find(|(_, addr)| addr.port() == relayed.port())
            .unwrap()
            .0;
        let mut buf = vec![0u8; 48 + 4 + 3];
        let out = h
            .server
            .handle_peer_datagram(h.now, relay, p, &mut buf, 48..52)
            .unwrap();
        assert_eq!(out.client, c, "relayed data goes back on its own 5-tuple");
    }
}

/// RFC 8656 §7.3: Refresh with LIFETIME 0 deletes the allocation; Refresh without one is 437.
#[test]
fn refresh_zero_deletes_and_refresh_without_allocation_is_437() {
    let mut h = Harness::new(config());
    let mut auth = h.rest_auth("alice", 600);
    let c = client(1);
    h.allocate(c, &mut auth);
    let r = h.request(c, Method::REFRESH, &[Attr::Lifetime(0)], &mut auth);
    assert_eq!(code(&r), None);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.released.len(), 1, "the relay socket is closed");
    assert_eq!(
        code(&h.request(c, Method::REFRESH, &[], &mut auth)),
        Some(437)
    );
}

/// RFC 8656 §7.2 checks the 5-tuple's allocation (437) and the server's capacity (508) before
/// the Allocate's attributes; §7.3, §9.2 and §11.2 need an allocation (437) before anything
/// else. Requests are decoded into types first, so this pins that a malformed request is
/// still answered in the RFC's order.
#[test]
fn the_allocation_is_judged_before_the_attributes() {
    let mut h = Harness::new(config());
    let mut auth = h.rest_auth("alice", 600);
    let (holder, stranger) = (client(1), client(2));
    h.allocate(holder, &mut auth);
    // A second Allocate on the 5-tuple is 437 whatever it carries (400 and 442 otherwise).
    for attrs in [vec![], vec![Attr::RequestedTransport(6)]] {
        let r = h.request(holder, Method::ALLOCATE, &attrs, &mut auth);
        assert_eq!(code(&r), Some(437), "{attrs:?}");
    }
    // Without an allocation, malformed Refresh, CreatePermission and ChannelBind are 437.
    let bad: [(Method, Vec<Attr>); 3] = [
        (Method::REFRESH, vec![Attr::RequestedFamily(9)]),
        (Method::CREATE_PERMISSION, vec![]),
        (Method::CHANNEL_BIND, vec![Attr::Channel(0x8000)]),
    ];
    for (method, attrs) in &bad {
        let r = h.request(stranger, *method, attrs, &mut auth);
        assert_eq!(code(&r), Some(437), "{method:?} {attrs:?}");
    }
    // With one, the same requests get the codes their attributes deserve.
    let wants = [443, 400, 400];
    for ((method, attrs), want) in bad.iter().zip(wants) {
        let r = h.request(holder, *method, attrs, &mut auth);
        assert_eq!(code(&r), Some(want), "{method:?} {attrs:?}");
    }
    // Draining, an Allocate is 508 before its attributes are read (this one lacks
    // REQUESTED-TRANSPORT: 400 otherwise).
    h.server.ledger().start_draining();
    let mut other = h.rest_auth("bob", 600);
    let r = h.request(
        client(3),
        Method::ALLOCATE,
        &[Attr::Lifetime(600)],
        &mut other,
    );
    assert_eq!(code(&r), Some(508));
}

/// RFC 8656 §7: "When the lifetime expires, the server deletes the allocation", and its relay
/// port returns to the pool.
#[test]
fn allocations_expire_and_ports_come_back() {
    let mut h = Harness::new(config());
    let mut auth = h.rest_auth("alice", 600);
    let c = client(1);
    h.allocate(c, &mut auth);
    let free = h.server.stats().relay_ports_free;
    h.advance(Duration::from_secs(599));
    assert_eq!(h.server.allocation_count(), 1);
    let r = h.request(c, Method::REFRESH, &[Attr::Lifetime(600)], &mut auth);
    assert_eq!(code(&r), None);
    h.advance(Duration::from_secs(599));
    assert_eq!(h.server.allocation_count(), 1, "refresh extended it");
    h.advance(Duration::from_secs(2));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.stats().relay_ports_free, free + 1);
    assert_eq!(
        h.server
            .stats()
            .ended_count(turnd_proto::server::EndReason::Expired),
        1
    );
    assert_eq!(h.server.stats().lifetime_count, 1);
}

// ---------------------------------------------------------------- quotas and capacity

/// Quotas: allocations per user id answered 486, counted by the part after the expiry so
/// minting new usernames does not bypass it.
#[test]
fn user_quota_holds_across_minted_usernames() {
    let mut h = Harness::with_ledger(config(), Arc::new(Ledger::new(2, 0)));
    for (i, ttl) in [600, 601].into_iter().enumerate() {
        let mut a = h.rest_auth("alice", ttl);
        h.allocate(client(i as u16), &mut a);
    }
    let mut third = h.rest_auth("alice", 602);
    let r = h.request(
        client(9),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17)],
        &mut third,
    );
    assert_eq!(code(&r), Some(486));
    let mut other = h.rest_auth("bob", 600);
    h.allocate(client(10), &mut other);
}

/// The total cap and an exhausted port range are answered 508 (RFC 8656 §7.2), and ports
/// come back when allocations end.
#[test]
fn total_cap_and_port_exhaustion_get_508() {
    let mut h = Harness::with_ledger(config(), Arc::new(Ledger::new(0, 1)));
    let mut a = h.rest_auth("a", 600);
    h.allocate(client(1), &mut a);
    let mut b = h.rest_auth("b", 600);
    assert_eq!(
        code(&h.request(
            client(2),
            Method::ALLOCATE,
            &[Attr::RequestedTransport(17)],
            &mut b
        )),
        Some(508)
    );

    let mut cfg = config();
    cfg.ports = PortShard::whole(50000..=50001);
    let mut h = Harness::new(cfg);
    let mut auths: Vec<_> = (0..3).map(|i| h.rest_auth(&format!("u{i}"), 600)).collect();
    h.allocate(client(1), &mut auths[0]);
    h.allocate(client(2), &mut auths[1]);
    let r = h.request(
        client(3),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17)],
        &mut auths[2],
    );
    assert_eq!(code(&r), Some(508));
    assert_eq!(h.server.stats().relay_ports_free, 0);
    assert_eq!(
        code(&h.request(
            client(1),
            Method::REFRESH,
            &[Attr::Lifetime(0)],
            &mut auths[0]
        )),
        None
    );
    assert_eq!(h.server.stats().relay_ports_free, 1);
    h.allocate(client(3), &mut auths[2]);
}

/// A relay port another process holds is skipped; when no port can be bound the Allocate is
/// answered 508, never a panic, and the quota is returned.
#[test]
fn relay_bind_failures_retry_then_answer_508() {
    let mut cfg = config();
    cfg.ports = PortShard::whole(50000..=50003);
    let mut h = Harness::new(cfg);
    h.busy_ports = [50000, 50001, 50002].into();
    let mut a = h.rest_auth("a", 600);
    let relayed = h.allocate(client(1), &mut a);
    assert_eq!(relayed.port(), 50003);
    h.busy_ports.insert(50003);
    let mut b = h.rest_auth("b", 600);
    let r = h.request(
        client(2),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17)],
        &mut b,
    );
    assert_eq!(code(&r), Some(508));
    assert_eq!(
        h.server.ledger().total(),
        1,
        "the failed allocation returned its quota"
    );
}

// ---------------------------------------------------------------- address families

/// RFC 8656 §7.2: REQUESTED-ADDRESS-FAMILY for a family the server cannot relay → 440; with
/// ADDITIONAL-ADDRESS-FAMILY the server allocates both, or reports ADDRESS-ERROR-CODE 440.
#[test]
fn address_families_440_and_dual_allocation() {
    let mut h = Harness::new(config());
    let mut a = h.rest_auth("a", 600);
    let r = h.request(
        client(1),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17), Attr::RequestedFamily(2)],
        &mut a,
    );
    assert_eq!(code(&r), Some(440));
    let r = h.request(
        client(1),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17), Attr::AdditionalFamily(2)],
        &mut a,
    );
    let msg = Message::parse(&r).unwrap();
    assert_eq!(client::error_code(&msg), None);
    assert_eq!(client::addresses(&msg, attr::XOR_RELAYED_ADDRESS).len(), 1);
    let aec = msg.get(attr::ADDRESS_ERROR_CODE).unwrap();
    assert_eq!((aec[0], aec[2], aec[3]), (2, 4, 40));

    let mut cfg = config();
    cfg.relay_v6 = Some(relay_v6());
    let mut h = Harness::new(cfg);
    let mut a = h.rest_auth("a", 600);
    let r = h.request(
        client(1),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17), Attr::AdditionalFamily(2)],
        &mut a,
    );
    let msg = Message::parse(&r).unwrap();
    let relayed = client::addresses(&msg, attr::XOR_RELAYED_ADDRESS);
    assert_eq!(relayed.len(), 2);
    assert!(relayed[0].is_ipv4() && relayed[1].is_ipv6());
    let mut b = h.rest_auth("b", 600);
    let r = h.request(
        client(2),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17), Attr::RequestedFamily(2)],
        &mut b,
    );
    let relayed = client::address(&Message::parse(&r).unwrap(), attr::XOR_RELAYED_ADDRESS).unwrap();
    assert!(relayed.is_ipv6());
    // RFC 8656 §9.2: a peer of a family the allocation does not relay → 443.
    let r = h.request(
        client(2),
        Method::CREATE_PERMISSION,
        &[Attr::Peer(peer("8.8.8.8:53"))],
        &mut b,
    );
    assert_eq!(code(&r), Some(443));
}

// ---------------------------------------------------------------- permissions and policy

fn allocated(h: &mut Harness, n: u16) -> (turnd_proto::ClientId, ClientAuth, SocketAddr) {
    let c = client(n);
    let mut auth = h.rest_auth(&format!("user{n}"), 3600);
    let relayed = h.allocate_with(c, &mut auth, &[Attr::Lifetime(3600)]);
    (c, auth, relayed)
}

/// RFC 8656 §9.2: CreatePermission with several XOR-PEER-ADDRESSes installs all or none; a
/// peer refused by policy makes the whole request 403.
#[test]
fn create_permission_is_all_or_nothing() {
    let mut h = Harness::new(config());
    let (c, mut auth, _) = allocated(&mut h, 1);
    let r = h.request(
        c,
        Method::CREATE_PERMISSION,
        &[
            Attr::Peer(peer("8.8.8.8:1")),
            Attr::Peer(peer("127.0.0.1:1")),
        ],
        &mut auth,
    );
    assert_eq!(code(&r), Some(403));
    let relay = h.bound.keys().next().copied().unwrap();
    let mut buf = vec![0u8; 128];
    buf[48..52].copy_from_slice(b"ping");
    assert_eq!(
        h.server
            .handle_peer_datagram(h.now, relay, peer("8.8.8.8:1"), &mut buf, 48..52),
        None,
        "no permission was installed"
    );
    let r = h.request(
        c,
        Method::CREATE_PERMISSION,
        &[Attr::Peer(peer("8.8.8.8:1")), Attr::Peer(peer("1.1.1.1:1"))],
        &mut auth,
    );
    assert_eq!(code(&r), None);
    assert!(h
        .server
        .handle_peer_datagram(h.now, relay, peer("8.8.8.8:9"), &mut buf, 48..52)
        .is_some());
    assert!(h
        .server
        .handle_peer_datagram(h.now, relay, peer("1.1.1.1:9"), &mut buf, 48..52)
        .is_some());
}

/// RFC 8656 §9: "permissions ... last 300 seconds"; data from the peer is dropped after that.
#[test]
fn permissions_expire_after_300_seconds() {
    let mut h = Harness::new(config());
    let (c, mut auth, _) = allocated(&mut h, 1);
    h.request(
        c,
        Method::CREATE_PERMISSION,
        &[Attr::Peer(peer("8.8.8.8:1"))],
        &mut auth,
    );
    let relay = h.bound.keys().next().copied().unwrap();
    let mut buf = vec![0u8; 128];
    h.advance(Duration::from_secs(299));
    assert!(h
        .server
        .handle_peer_datagram(h.now, relay, peer("8.8.8.8:5"), &mut buf, 48..52)
        .is_some());
    h.advance(Duration::from_secs(1));
    assert!(h
        .server
        .handle_peer_datagram(h.now, relay, peer("8.8.8.8:5"), &mut buf, 48..52)
        .is_none());
}

/// The default policy refuses loopback, metadata, private and IPv4-mapped forms with 403 on
/// CreatePermission and ChannelBind, and drops Send to them silently.
#[test]
fn denied_peers_get_403_and_send_is_dropped() {
    let mut cfg = config();
    cfg.relay_v6 = Some(relay_v6());
    let mut h = Harness::new(cfg);
    let c = client(1);
    let mut auth = h.rest_auth("dual", 3600);
    h.allocate_with(
        c,
        &mut auth,
        &[Attr::AdditionalFamily(2), Attr::Lifetime(3600)],
    );
    for p in [
        "127.0.0.1:80",
        "169.254.169.254:80",
        "10.1.2.3:80",
        "0.0.0.0:80",
        "[::ffff:127.0.0.1]:80",
        "[::1]:80",
        "[::]:80",
        "[fd00:ec2::254]:80",
        "[64:ff9b::a9fe:a9fe]:80",
    ] {
        let p = peer(p);
        let r = h.request(c, Method::CREATE_PERMISSION, &[Attr::Peer(p)], &mut auth);
        assert_eq!(code(&r), Some(403), "{p}");
        let r = h.request(
            c,
            Method::CHANNEL_BIND,
            &[Attr::Channel(0x4000), Attr::Peer(p)],
            &mut auth,
        );
        assert_eq!(code(&r), Some(403), "{p}");
    }
    let tid = h.tid();
    let ind = client::send_indication(tid, peer("127.0.0.1:80"), b"x");
    assert_eq!(
        h.server.handle_client_datagram(h.now, c, &ind),
        FromClient::Done
    );
    assert_eq!(h.server.stats().peer_denied, 19);
}

/// Operators' --allow-peer opens a range; the server's own relayed addresses are reachable by
/// default (two clients of one turnd can talk) but not its other ports on the same IP.
#[test]
fn own_relayed_addresses_are_reachable_but_not_other_ports() {
    let mut cfg = config();
    let local = RelayAddress {
        bind: "127.0.0.1".parse().unwrap(),
        advertised: "127.0.0.1".parse().unwrap(),
    };
    cfg.relay_v4 = Some(local);
    let mut h = Harness::new(cfg);
    let (c1, mut a1, r1) = allocated(&mut h, 1);
    let (_c2, _a2, r2) = allocated(&mut h, 2);
    assert_eq!(
        code(&h.request(c1, Method::CREATE_PERMISSION, &[Attr::Peer(r2)], &mut a1)),
        None
    );
    assert_eq!(
        code(&h.request(
            c1,
            Method::CHANNEL_BIND,
            &[Attr::Channel(0x4001), Attr::Peer(r2)],
            &mut a1
        )),
        None
    );
    // The permission is for 127.0.0.1, but its other ports (HTTP, metrics) stay closed.
    let tid = h.tid();
    let ind = client::send_indication(tid, peer("127.0.0.1:8080"), b"GET /");
    assert_eq!(
        h.server.handle_client_datagram(h.now, c1, &ind),
        FromClient::Done
    );
    let tid = h.tid();
    let ind = client::send_indication(tid, r2, b"hello");
    assert!(
        matches!(h.server.handle_client_datagram(h.now, c1, &ind), FromClient::Forward { peer, .. } if peer == r2)
    );
    let r = h.request(
        c1,
        Method::CHANNEL_BIND,
        &[Attr::Channel(0x4002), Attr::Peer(peer("127.0.0.1:8080"))],
        &mut a1,
    );
    assert_eq!(code(&r), Some(403));
    let _ = r1;

    // An operator's --deny-peer wins even over the server's own relayed addresses.
    let mut cfg = config();
    cfg.relay_v4 = Some(local);
    cfg.policy =
        turnd_proto::policy::PeerPolicy::new(vec![], vec!["127.0.0.1/32".parse().unwrap()]);
    let mut h = Harness::new(cfg);
    let (c1, mut a1, _) = allocated(&mut h, 1);
    let (_c2, _a2, r2) = allocated(&mut h, 2);
    assert_eq!(
        code(&h.request(c1, Method::CREATE_PERMISSION, &[Attr::Peer(r2)], &mut a1)),
        Some(403)
    );
}

// ---------------------------------------------------------------- channels and data

/// RFC 8656 §11.2: channel numbers outside 0x4000-0x4FFF, or a missing peer, are 400.
#[test]
fn channel_numbers_out_of_range_are_400() {
    let mut h = Harness::new(config());
    let (c, mut auth, _) = allocated(&mut h, 1);
    for n in [0x3FFF, 0x5000, 0xFFFF] {
        let r = h.request(
            c,
            Method::CHANNEL_BIND,
            &[Attr::Channel(n), Attr::Peer(peer("8.8.8.8:1"))],
            &mut auth,
        );
        assert_eq!(code(&r), Some(400), "{n:#x}");
    }
    assert_eq!(
        code(&h.request(c, Method::CHANNEL_BIND, &[Attr::Channel(0x4000)], &mut auth)),
        Some(400)
    );
}

/// RFC 5766 allowed channels up to 0x7FFF; RFC 8656 does not. With `legacy_channel_numbers`
/// (for clients like coturn's turnutils_uclient) the old range binds and relays.
#[test]
fn legacy_channel_numbers_are_an_explicit_setting() {
    let mut cfg = config();
    cfg.legacy_channel_numbers = true;
    let mut h = Harness::new(cfg);
    let (c, mut auth, _) = allocated(&mut h, 1);
    let p = peer("8.8.8.8:1000");
    assert_eq!(
        code(&h.request(
            c,
            Method::CHANNEL_BIND,
            &[Attr::Channel(0x7FFF), Attr::Peer(p)],
            &mut auth
        )),
        None
    );
    let cd = client::channel_data(0x7FFF, b"old", false);
    assert!(matches!(
        h.server.handle_client_datagram(h.now, c, &cd),
        FromClient::Forward { .. }
    ));
    assert_eq!(
        code(&h.request(
            c,
            Method::CHANNEL_BIND,
            &[Attr::Channel(0x8000), Attr::Peer(p)],
            &mut auth
        )),
        Some(400)
    );

    let mut strict = Harness::new(config());
    let (c, mut auth, _) = allocated(&mut strict, 1);
    let r = strict.request(
        c,
        Method::CHANNEL_BIND,
        &[Attr::Channel(0x5234), Attr::Peer(p)],
        &mut auth,
    );
    let msg = Message::parse(&r).unwrap();
    let (code, reason) = attr::read_error_code(msg.get(attr::ERROR_CODE).unwrap()).unwrap();
    assert_eq!(code, 400);
    assert!(
        reason.contains("0x4000-0x4FFF"),
        "the reason names the rule: {reason}"
    );
}

/// RFC 8656 §11.2: a channel already bound to another peer, or a peer bound to another
/// channel, is 400 — also for 300 s after the binding expires; rebinding the same pair
/// refreshes it.
#[test]
fn channels_cannot_be_rebound_too_soon() {
    let mut h = Harness::new(config());
    let (c, mut auth, _) = allocated(&mut h, 1);
    let p1 = peer("8.8.8.8:1000");
    let p2 = peer("8.8.4.4:1000");
    let bind = |h: &mut Harness, auth: &mut ClientAuth, n: u16, p: SocketAddr| {
        code(&h.request(
            c,
            Method::CHANNEL_BIND,
            &[Attr::Channel(n), Attr::Peer(p)],
            auth,
        ))
    };
    assert_eq!(bind(&mut h, &mut auth, 0x4000, p1), None);
    assert_eq!(
        bind(&mut h, &mut auth, 0x4000, p2),
        Some(400),
        "number taken by another peer"
    );
    assert_eq!(
        bind(&mut h, &mut auth, 0x4001, p1),
        Some(400),
        "peer bound to another number"
    );
    assert_eq!(
        bind(&mut h, &mut auth, 0x4000, p1),
        None,
        "same pair refreshes"
    );
    h.advance(Duration::from_secs(600));
    assert_eq!(
        bind(&mut h, &mut auth, 0x4000, p2),
        Some(400),
        "cooling down"
    );
    assert_eq!(
        bind(&mut h, &mut auth, 0x4001, p1),
        Some(400),
        "cooling down"
    );
    h.advance(Duration::from_secs(301));
    assert_eq!(
        bind(&mut h, &mut auth, 0x4000, p2),
        None,
        "free after the cooldown"
    );
}

/// RFC 8656 §12: "channel bindings last 10 minutes"; ChannelData on an expired channel is
/// dropped.
#[test]
fn channels_expire_after_600_seconds() {
    let mut h = Harness::new(config());
    let (c, mut auth, _) = allocated(&mut h, 1);
    let p = peer("8.8.8.8:1000");
    h.request(
        c,
        Method::CHANNEL_BIND,
        &[Attr::Channel(0x4000), Attr::Peer(p)],
        &mut auth,
    );
    let cd = client::channel_data(0x4000, b"hello", false);
    // Keep the permission alive so that only the channel can expire.
    for step in [250, 250, 99] {
        h.advance(Duration::from_secs(step));
        h.request(c, Method::CREATE_PERMISSION, &[Attr::Peer(p)], &mut auth);
    }
    assert!(matches!(
        h.server.handle_client_datagram(h.now, c, &cd),
        FromClient::Forward { .. }
    ));
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.server.handle_client_datagram(h.now, c, &cd),
        FromClient::Done
    );
}

/// RFC 8656 §12.6/§12.7 and §10: ChannelData and Send/Data indications both ways, framed in
/// place; a ChannelData header claiming more bytes than it carries is dropped.
#[test]
fn data_flows_both_ways_over_channels_and_indications() {
    let mut h = Harness::new(config());
    let (c, mut auth, _) = allocated(&mut h, 1);
    let p = peer("8.8.8.8:1000");
    let relay = h.bound.keys().next().copied().unwrap();

    // Send indication → forwarded payload; peer → client as a Data indication.
    h.request(c, Method::CREATE_PERMISSION, &[Attr::Peer(p)], &mut auth);
    let tid = h.tid();
    let ind = client::send_indication(tid, p, b"hello");
    match h.server.handle_client_datagram(h.now, c, &ind) {
        FromClient::Forward {
            relay: r,
            peer,
            payload,
        } => {
            assert_eq!((r, peer, &ind[payload]), (relay, p, &b"hello"[..]));
        }
        other => panic!("{other:?}"),
    }
    let mut buf = vec![0xAAu8; 48 + 5 + 3];
    buf[48..53].copy_from_slice(b"world");
    let out = h
        .server
        .handle_peer_datagram(h.now, relay, p, &mut buf, 48..53)
        .unwrap();
    assert_eq!(out.client, c);
    let msg = Message::parse(&buf[out.range.clone()]).unwrap();
    assert_eq!(
        (msg.method(), msg.class()),
        (Method::DATA, Class::Indication)
    );
    assert_eq!(client::address(&msg, attr::XOR_PEER_ADDRESS), Some(p));
    assert_eq!(msg.get(attr::DATA), Some(&b"world"[..]));
    assert_eq!(
        &buf[out.range.end - 3..out.range.end],
        &[0, 0, 0],
        "padding is zero"
    );

    // ChannelData both ways.
    h.request(
        c,
        Method::CHANNEL_BIND,
        &[Attr::Channel(0x4ABC), Attr::Peer(p)],
        &mut auth,
    );
    let cd = client::channel_data(0x4ABC, b"over channel", false);
    match h.server.handle_client_datagram(h.now, c, &cd) {
        FromClient::Forward { peer, payload, .. } => {
            assert_eq!((peer, &cd[payload]), (p, &b"over channel"[..]))
        }
        other => panic!("{other:?}"),
    }
    let mut buf = vec![0u8; 48 + 4 + 3];
    buf[48..52].copy_from_slice(b"back");
    let out = h
        .server
        .handle_peer_datagram(h.now, relay, p, &mut buf, 48..52)
        .unwrap();
    assert_eq!(&buf[out.range], &[0x4A, 0xBC, 0, 4, b'b', b'a', b'c', b'k']);

    let mut lying = client::channel_data(0x4ABC, b"abc", false);
    lying[3] = 200;
    assert_eq!(
        h.server.handle_client_datagram(h.now, c, &lying),
        FromClient::Done
    );
    let s = h.server.stats();
    assert_eq!((s.packets_to_peer, s.packets_to_client), (2, 2));
    assert_eq!(s.bytes_to_peer, 5 + 12);
}

/// Padding bytes in every response the server writes are zero (no memory disclosure).
#[test]
fn response_padding_is_zero() {
    let mut h = Harness::new(config());
    let mut auth = h.rest_auth("alice", 600);
    let resp = h.request(
        client(1),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17), Attr::Raw(0x0099, vec![1])],
        &mut auth,
    );
    for bytes in [resp].iter().chain(h.sent.iter().map(|(_, b)| b)) {
        let msg = Message::parse(bytes).unwrap();
        let mut at = 20;
        for a in msg.attributes() {
            let pad = (4 - a.value.len() % 4) % 4;
            let end = at + 4 + a.value.len();
            assert!(bytes[end..end + pad].iter().all(|b| *b == 0));
            at = end + pad;
        }
    }
}

/// RFC 8656 §7.2: EVEN-PORT with the R bit allocates an even port and reserves the next one,
/// answered with RESERVATION-TOKEN; an Allocate carrying that token (from another 5-tuple)
/// gets the reserved port; an unknown token is 508; an unclaimed reservation lapses after 30 s.
#[test]
fn even_port_reservations() {
    let mut h = Harness::new(config());
    let mut a = h.rest_auth("rtp", 600);
    let resp = h.request(
        client(1),
        Method::ALLOCATE,
        &[
            Attr::RequestedTransport(17),
            Attr::Raw(attr::EVEN_PORT, vec![0x80]),
        ],
        &mut a,
    );
    let msg = Message::parse(&resp).unwrap();
    let rtp = client::address(&msg, attr::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(rtp.port() % 2, 0);
    let token = msg.get(attr::RESERVATION_TOKEN).expect("a token").to_vec();
    assert_eq!(token.len(), 8);
    let mut b = h.rest_auth("rtp", 600);
    let resp = h.request(
        client(2),
        Method::ALLOCATE,
        &[
            Attr::RequestedTransport(17),
            Attr::Raw(attr::RESERVATION_TOKEN, token.clone()),
        ],
        &mut b,
    );
    let rtcp = client::address(&Message::parse(&resp).unwrap(), attr::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(rtcp.port(), rtp.port() + 1);
    let mut c = h.rest_auth("x", 600);
    let r = h.request(
        client(3),
        Method::ALLOCATE,
        &[
            Attr::RequestedTransport(17),
            Attr::Raw(attr::RESERVATION_TOKEN, token),
        ],
        &mut c,
    );
    assert_eq!(code(&r), Some(508), "a token is good once");

    let mut d = h.rest_auth("y", 600);
    h.request(
        client(4),
        Method::ALLOCATE,
        &[
            Attr::RequestedTransport(17),
            Attr::Raw(attr::EVEN_PORT, vec![0x80]),
        ],
        &mut d,
    );
    assert_eq!(h.server.ledger().reservations(), 1);
    let free = h.server.stats().relay_ports_free;
    h.advance(Duration::from_secs(31));
    assert_eq!(h.server.ledger().reservations(), 0);
    assert_eq!(
        h.server.stats().relay_ports_free,
        free + 1,
        "the reserved port came back"
    );
}

/// While draining, new allocations get 508 and existing ones keep working.
#[test]
fn draining_refuses_new_allocations_only() {
    let mut h = Harness::new(config());
    let (c, mut auth, _) = allocated(&mut h, 1);
    h.server.ledger().start_draining();
    let mut other = h.rest_auth("late", 600);
    let r = h.request(
        client(2),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17)],
        &mut other,
    );
    assert_eq!(code(&r), Some(508));
    assert_eq!(
        code(&h.request(c, Method::REFRESH, &[Attr::Lifetime(600)], &mut auth)),
        None
    );
}

/// The permission and channel gauges follow the allocations they belong to: when one of two
/// allocations is deleted its entries leave the gauges at once, and when the last one ends
/// both gauges read 0, without waiting for a sweep that nothing would schedule any more.
#[test]
fn permission_and_channel_gauges_return_to_zero_when_the_last_allocation_ends() {
    let mut h = Harness::new(config());
    let peers: Vec<SocketAddr> = (1..=4)
        .map(|i| SocketAddr::new(format!("93.184.216.{i}").parse().unwrap(), 5000))
        .collect();
    let mut auths = [h.rest_auth("alice", 3600), h.rest_auth("bob", 3600)];
    for (n, auth) in auths.iter_mut().enumerate() {
        let c = client(n as u16);
        h.allocate(c, auth);
        for (i, peer) in peers.iter().enumerate() {
            let r = h.request(c, Method::CREATE_PERMISSION, &[Attr::Peer(*peer)], auth);
            assert_eq!(Harness::code(&r), None);
            let r = h.request(
                c,
                Method::CHANNEL_BIND,
                &[Attr::Peer(*peer), Attr::Channel(0x4000 + i as u16)],
                auth,
            );
            assert_eq!(Harness::code(&r), None);
        }
    }
    let gauges = |h: &Harness| {
        let s = h.server.stats();
        (s.permissions_active, s.channels_active)
    };
    assert_eq!(gauges(&h), (8, 8));
    h.advance(Duration::from_secs(1));
    let recount = h.server.recount(h.now.mono);
    assert_eq!(gauges(&h), (recount.permissions, recount.channels_live));

    // bob deletes his allocation: his four permissions and channels go with it.
    let r = h.request(
        client(1),
        Method::REFRESH,
        &[Attr::Lifetime(0)],
        &mut auths[1],
    );
    assert_eq!(Harness::code(&r), None);
    assert_eq!(gauges(&h), (4, 4));

    // alice deletes hers too: nothing is left, and the gauges say so at once.
    let r = h.request(
        client(0),
        Method::REFRESH,
        &[Attr::Lifetime(0)],
        &mut auths[0],
    );
    assert_eq!(Harness::code(&r), None);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(gauges(&h), (0, 0));
    assert_eq!(h.server.poll_timeout(), None, "nothing left to sweep");
}
