//! Abuse, on the sans-IO core: every default-denied peer on every path, reflection
//! (amplification ratio and per-source limits), revocation and strict expiry.

mod harness;

use harness::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use turnd_proto::auth::{AuthFailure, Credentials};
use turnd_proto::client::{self, Attr};
use turnd_proto::policy::{Cidr, DEFAULT_DENY};
use turnd_proto::wire::{Method, TransactionId};
use turnd_proto::{ClientId, FromClient, Transport};

fn code(resp: &[u8]) -> Option<u16> {
    Harness::code(resp)
}

/// The first and last address of every default-denied range, and for IPv4 ranges the same
/// addresses in every IPv6 form that reaches IPv4 hosts.
fn denied_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    for range in DEFAULT_DENY {
        let cidr: Cidr = range.parse().unwrap();
        let (first, last) = cidr.first_last();
        for ip in [first, last] {
            out.push(ip);
            if let IpAddr::V4(v4) = ip {
                let o = v4.octets();
                let tail = u32::from(v4);
                out.push(IpAddr::V6(v4.to_ipv6_mapped()));
                if tail > 1 {
                    // ::a.b.c.d (::0 and ::1 are IPv6's own unspecified and loopback).
                    out.push(IpAddr::V6(Ipv6Addr::from(u128::from(tail))));
                }
                out.push(IpAddr::V6(Ipv6Addr::from(
                    (0x0064_ff9b_u128 << 96) | u128::from(tail),
                )));
                out.push(IpAddr::V6(Ipv6Addr::new(
                    0x2002,
                    u16::from_be_bytes([o[0], o[1]]),
                    u16::from_be_bytes([o[2], o[3]]),
                    0,
                    0,
                    0,
                    0,
                    1,
                )));
            }
        }
    }
    out
}

/// RFC 8656 §21 and REFERENCES.md's deny list: no default-denied address is reachable by
/// CreatePermission, ChannelBind or Send, whichever form it is written in.
#[test]
fn every_denied_range_is_refused_on_every_path_in_every_form() {
    let mut cfg = config();
    cfg.relay_v6 = Some(relay_v6());
    let mut h = Harness::new(cfg);
    let c = client(1);
    let mut auth = h.rest_auth("filter", 3600);
    h.allocate_with(
        c,
        &mut auth,
        &[Attr::AdditionalFamily(2), Attr::Lifetime(3600)],
    );
    let addresses = denied_addresses();
    assert!(addresses.len() > 150, "{}", addresses.len());
    for (i, ip) in addresses.iter().enumerate() {
        let p = SocketAddr::new(*ip, 443);
        let r = h.request(c, Method::CREATE_PERMISSION, &[Attr::Peer(p)], &mut auth);
        assert_eq!(code(&r), Some(403), "CreatePermission {p}");
        let channel = 0x4000 + (i as u16 % 0x1000);
        let r = h.request(
            c,
            Method::CHANNEL_BIND,
            &[Attr::Channel(channel), Attr::Peer(p)],
            &mut auth,
        );
        assert_eq!(code(&r), Some(403), "ChannelBind {p}");
        let ind = client::send_indication(h.tid(), p, b"x");
        assert_eq!(
            h.server.handle_client_datagram(h.now, c, &ind),
            FromClient::Done,
            "Send {p}"
        );
    }
    assert_eq!(h.server.stats().peer_denied, 3 * addresses.len() as u64);
    assert_eq!(h.server.stats().packets_to_peer, 0);
    // The same allocation still reaches a public peer on all three paths.
    let public = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)), 443);
    let r = h.request(
        c,
        Method::CREATE_PERMISSION,
        &[Attr::Peer(public)],
        &mut auth,
    );
    assert_eq!(code(&r), None);
    let ind = client::send_indication(h.tid(), public, b"x");
    assert!(matches!(
        h.server.handle_client_datagram(h.now, c, &ind),
        FromClient::Forward { .. }
    ));
}

/// Every kind of request an attacker can send without credentials, as the smallest packet
/// that still draws an answer, and as a padded-out one: the answer is never more than four
/// times the request (REFERENCES.md, reflection). Too small to pay for a challenge: dropped.
#[test]
fn unauthenticated_answers_stay_within_four_times_the_request() {
    let mut h = Harness::new(config());
    let tid = TransactionId([3; 12]);
    let binding = client::request(Method::BINDING, tid, &[], None, false);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("binding", binding.clone()),
        (
            "binding with fingerprint",
            client::request(Method::BINDING, tid, &[], None, true),
        ),
        (
            "bare allocate",
            client::request(Method::ALLOCATE, tid, &[], None, false),
        ),
        (
            "allocate",
            client::request(
                Method::ALLOCATE,
                tid,
                &[Attr::RequestedTransport(17)],
                None,
                false,
            ),
        ),
        (
            "allocate with fingerprint",
            client::request(
                Method::ALLOCATE,
                tid,
                &[Attr::RequestedTransport(17)],
                None,
                true,
            ),
        ),
        (
            "bare refresh",
            client::request(Method::REFRESH, tid, &[], None, false),
        ),
        (
            "create permission",
            client::request(
                Method::CREATE_PERMISSION,
                tid,
                &[Attr::Peer("8.8.8.8:1".parse().unwrap())],
                None,
                false,
            ),
        ),
        (
            "channel bind",
            client::request(
                Method::CHANNEL_BIND,
                tid,
                &[
                    Attr::Channel(0x4000),
                    Attr::Peer("8.8.8.8:1".parse().unwrap()),
                ],
                None,
                false,
            ),
        ),
        (
            "unknown method",
            client::request(Method(0x0FF), tid, &[], None, false),
        ),
        (
            "unknown required attributes",
            client::request(
                Method::BINDING,
                tid,
                &[Attr::Raw(0x0031, vec![]), Attr::Raw(0x0032, vec![])],
                None,
                false,
            ),
        ),
        ("broken body", {
            let mut b = binding.clone();
            b[3] = 8; // claims an attribute that is not there
            b
        }),
        (
            "stale nonce",
            client::request(
                Method::ALLOCATE,
                tid,
                &[
                    Attr::RequestedTransport(17),
                    Attr::Raw(0x0006, b"u".to_vec()),
                    Attr::Raw(0x0014, b"r".to_vec()),
                    Attr::Raw(0x0015, b"n".to_vec()),
                    Attr::Raw(0x0008, vec![0; 20]),
                ],
                None,
                false,
            ),
        ),
    ];
    let mut answered = 0;
    for (n, (what, req)) in cases.iter().enumerate() {
        // A client per case: the per-source limit is not what is measured here.
        let c = client(100 + n as u16);
        match h.send(c, req) {
            Some(resp) => {
                answered += 1;
                let ratio = resp.len() as f64 / req.len() as f64;
                println!(
                    "{what:28} request {:3} B  answer {:3} B  ratio {ratio:.2}",
                    req.len(),
                    resp.len()
                );
                assert!(
                    ratio <= 4.0,
                    "{what}: {} B answer to {} B",
                    resp.len(),
                    req.len()
                );
            }
            None => println!("{what:28} request {:3} B  dropped", req.len()),
        }
    }
    assert!(
        answered >= cases.len() - 2,
        "only the bare TURN requests are dropped"
    );
    assert!(h.server.stats().error_responses_suppressed >= 1);
}

/// The RFC 5780 answers (OTHER-ADDRESS, RESPONSE-ORIGIN, CHANGE-REQUEST sent from another
/// socket, RESPONSE-PORT, PADDING) and RFC 3489 answers stay within four times the request,
/// wherever they go; the smallest request of each kind is measured.
#[test]
fn rfc5780_and_rfc3489_answers_stay_within_four_times_the_request() {
    let mut cfg = config();
    let alt = turnd_proto::server::StunAlternate {
        primary: "192.0.2.1:3478".parse().unwrap(),
        alternate: "192.0.2.2:3479".parse().unwrap(),
    };
    cfg.udp_listeners = alt.addresses().to_vec();
    cfg.stun_alternate = Some(alt);
    let mut h = Harness::new(cfg);
    let tid = TransactionId([4; 12]);
    let change = |f: u8| Attr::Raw(turnd_proto::wire::attr::CHANGE_REQUEST, vec![0, 0, 0, f]);
    let port = Attr::Raw(
        turnd_proto::wire::attr::RESPONSE_PORT,
        vec![0x30, 0x39, 0, 0],
    );
    let pad = |n: usize| Attr::Raw(turnd_proto::wire::attr::PADDING, vec![0; n]);
    let bind = |attrs: &[Attr]| client::request(Method::BINDING, tid, attrs, None, false);
    let mut classic = vec![0x00, 0x01, 0x00, 0x00];
    classic.extend_from_slice(&[7; 16]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bare binding", bind(&[])),
        ("change ip and port", bind(&[change(6)])),
        ("change port", bind(&[change(2)])),
        ("response port", bind(std::slice::from_ref(&port))),
        ("everything", bind(&[change(6), port, pad(0)])),
        ("empty padding", bind(&[pad(0)])),
        ("padding", bind(&[pad(400)])),
        ("padding over the MTU", bind(&[pad(1480)])),
        ("malformed change", bind(&[Attr::Raw(0x0003, vec![])])),
        ("rfc 3489", classic),
    ];
    for (n, (what, req)) in cases.iter().enumerate() {
        let c = client(200 + n as u16);
        let before = h.sent.len();
        h.server.handle_client_datagram(h.now, c, req);
        h.drain();
        let out: Vec<_> = h.sent.drain(before..).collect();
        assert_eq!(out.len(), 1, "{what}: one answer");
        let resp = &out[0].1;
        println!(
            "{what:24} request {:4} B  answer {:4} B",
            req.len(),
            resp.len()
        );
        assert!(
            resp.len() <= 4 * req.len(),
            "{what}: {} B answer to {} B",
            resp.len(),
            req.len()
        );
    }
}

/// 401s (and other unauthenticated errors) to one source address are capped; other sources
/// are still challenged, and an authenticated client keeps working.
#[test]
fn unauthenticated_errors_are_rate_limited_per_source_address() {
    let mut cfg = config();
    cfg.error_rate_per_source = 10;
    let mut h = Harness::new(cfg);
    let req = client::request(
        Method::ALLOCATE,
        TransactionId([1; 12]),
        &[Attr::RequestedTransport(17)],
        None,
        false,
    );
    // One victim address, many source ports (forged): at most the burst is answered.
    let answered = (0..1000)
        .filter(|i| h.send(client(*i), &req).is_some())
        .count();
    assert_eq!(answered, 20, "burst of twice the rate");
    assert_eq!(h.server.stats().error_responses_suppressed, 980);
    // Another address is answered at once.
    let other = ClientId {
        transport: Transport::Udp,
        local: 0,
        remote: "198.51.100.99:5000".parse().unwrap(),
        local_ip: SERVER_IP.parse().unwrap(),
    };
    assert!(h.send(other, &req).is_some());
    // A second later the victim's address has ten more.
    h.advance(Duration::from_secs(1));
    let answered = (0..100)
        .filter(|i| h.send(client(2000 + i), &req).is_some())
        .count();
    assert_eq!(answered, 10);
    // Memory: nothing was created per source.
    assert_eq!(h.server.allocation_count(), 0);
}

/// `--revoke`: a revoked user id or username cannot allocate with a freshly minted credential,
/// and an allocation it already has cannot be refreshed or given permissions; others carry on.
#[test]
fn revoked_users_are_refused_on_new_and_existing_allocations() {
    let mut h = Harness::new(config());
    let (alice, mallory, eve) = (client(1), client(2), client(3));
    let mut alice_auth = h.rest_auth("alice", 3600);
    let mut mallory_auth = h.rest_auth("mallory", 3600);
    h.allocate(alice, &mut alice_auth);
    h.allocate(mallory, &mut mallory_auth);

    let cfg = config();
    let revoked = cfg.credentials.clone().with_revoked(["mallory".to_owned()]);
    h.reload(revoked);

    let peer: SocketAddr = "8.8.8.8:9".parse().unwrap();
    for (method, attrs) in [
        (Method::REFRESH, vec![Attr::Lifetime(600)]),
        (Method::CREATE_PERMISSION, vec![Attr::Peer(peer)]),
    ] {
        let r = h.request(mallory, method, &attrs, &mut mallory_auth);
        assert_eq!(code(&r), Some(401), "{method:?}");
        let r = h.request(alice, method, &attrs, &mut alice_auth);
        assert_eq!(code(&r), None, "{method:?}");
    }
    // A new credential for the same user id is refused too.
    let mut fresh = h.rest_auth("mallory", 600);
    let r = h.request(
        eve,
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17)],
        &mut fresh,
    );
    assert_eq!(code(&r), Some(401));
    assert!(h.server.stats().auth_failures[AuthFailure::Revoked.index()] >= 3);
    // The reload ended mallory's allocation at once (tests/revocation.rs has the details);
    // no one else's state was touched.
    assert_eq!(h.server.allocation_count(), 1);
    assert!(h.server.has_allocation(&alice) && !h.server.has_allocation(&mallory));
    // Static users can be revoked by name.
    let statics = Credentials::new(
        vec![],
        [("static-user".to_owned(), "static-pass".to_owned())].into(),
        60,
    )
    .with_revoked(["static-user".to_owned()]);
    assert_eq!(
        statics.candidates("static-user", T0).unwrap_err(),
        AuthFailure::Revoked
    );
}

/// `--strict-expiry`: once the REST credential expired, requests on the allocation it made
/// are refused; without it, refreshing goes on (coturn's behaviour, the default).
#[test]
fn strict_expiry_refuses_an_expired_credential_on_its_own_allocation() {
    for strict in [false, true] {
        let mut cfg = config();
        cfg.credentials = cfg.credentials.clone().with_strict_expiry(strict);
        let mut h = Harness::new(cfg);
        let c = client(1);
        let mut auth = h.rest_auth("short", 60);
        h.allocate(c, &mut auth);
        h.advance(Duration::from_secs(120));
        let r = h.request(c, Method::REFRESH, &[Attr::Lifetime(600)], &mut auth);
        let expected = if strict { Some(401) } else { None };
        assert_eq!(code(&r), expected, "strict = {strict}");
        if strict {
            assert_eq!(
                h.server.stats().auth_failures[AuthFailure::ExpiredOnAllocation.index()],
                1
            );
        }
    }
}

/// Per-allocation limits: a CreatePermission that would pass `max_permissions` and a
/// ChannelBind past `max_channels` are refused (508), the existing ones keep working.
#[test]
fn permission_and_channel_limits_per_allocation() {
    let mut cfg = config();
    cfg.max_permissions = 2;
    cfg.max_channels = 1;
    let mut h = Harness::new(cfg);
    let c = client(1);
    let mut auth = h.rest_auth("limits", 600);
    h.allocate(c, &mut auth);
    let peer = |n: u8| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(8, 8, 4, n)), 443);
    for n in 1..=2 {
        let r = h.request(
            c,
            Method::CREATE_PERMISSION,
            &[Attr::Peer(peer(n))],
            &mut auth,
        );
        assert_eq!(code(&r), None);
    }
    let r = h.request(
        c,
        Method::CREATE_PERMISSION,
        &[Attr::Peer(peer(3))],
        &mut auth,
    );
    assert_eq!(code(&r), Some(508), "a third permission");
    // Refreshing an existing permission is not a new one.
    let r = h.request(
        c,
        Method::CREATE_PERMISSION,
        &[Attr::Peer(peer(1))],
        &mut auth,
    );
    assert_eq!(code(&r), None);
    let r = h.request(
        c,
        Method::CHANNEL_BIND,
        &[Attr::Channel(0x4000), Attr::Peer(peer(1))],
        &mut auth,
    );
    assert_eq!(code(&r), None);
    let r = h.request(
        c,
        Method::CHANNEL_BIND,
        &[Attr::Channel(0x4001), Attr::Peer(peer(2))],
        &mut auth,
    );
    assert_eq!(code(&r), Some(508), "a second channel");
    let cd = client::channel_data(0x4000, b"still bound", false);
    assert!(matches!(
        h.server.handle_client_datagram(h.now, c, &cd),
        FromClient::Forward { .. }
    ));
}

/// Every port of the range can be allocated, the next Allocate is 508, and once every
/// allocation has ended every port is free again and can be allocated again.
#[test]
fn every_port_comes_back_after_exhaustion() {
    let mut cfg = config();
    cfg.ports = turnd_proto::server::ports::PortShard::whole(50000..=50009);
    let ledger = std::sync::Arc::new(turnd_proto::server::ledger::Ledger::new(0, 0));
    let mut h = Harness::with_ledger(cfg, ledger.clone());
    let total = h.server.stats().relay_ports_total;
    assert_eq!(total, 10);
    for round in 0..2 {
        let mut ports = std::collections::BTreeSet::new();
        for n in 0..10 {
            let mut a = h.rest_auth(&format!("r{round}u{n}"), 600);
            ports.insert(h.allocate(client(n), &mut a).port());
        }
        assert_eq!(ports.len(), 10, "ten distinct ports");
        let mut a = h.rest_auth("one-too-many", 600);
        let r = h.request(
            client(99),
            Method::ALLOCATE,
            &[Attr::RequestedTransport(17)],
            &mut a,
        );
        assert_eq!(code(&r), Some(508));
        assert_eq!(h.server.stats().relay_ports_free, 0);
        h.advance(Duration::from_secs(601));
        assert_eq!(h.server.stats().relay_ports_free, total, "round {round}");
        assert_eq!(h.server.allocation_count(), 0);
        assert_eq!(ledger.total(), 0);
        assert!(h.bound.is_empty(), "every relay socket released");
    }
}

/// A realm of 100 (and 127, the most the configuration allows) characters: the minimal first
/// Allocate of a real client (28 bytes: header and REQUESTED-TRANSPORT; 36 with FINGERPRINT)
/// still gets its 401 with the realm, within the amplification rule (`answer_budget`: 4× the
/// request, at least 224 bytes for a request of 28 bytes or more, so at most 8×); a bare
/// 20-byte header is still too small to pay for one and is dropped, counted as suppressed.
#[test]
fn a_long_realm_still_challenges_a_minimal_allocate() {
    use turnd_proto::server::{answer_budget, CHALLENGE_FLOOR};
    for len in [100, 127] {
        let realm = "r".repeat(len);
        let mut cfg = config();
        cfg.realm = realm.clone();
        let mut h = Harness::new(cfg);
        for fingerprint in [false, true] {
            let req = client::request(
                Method::ALLOCATE,
                h.tid(),
                &[Attr::RequestedTransport(17)],
                None,
                fingerprint,
            );
            assert_eq!(req.len(), if fingerprint { 36 } else { 28 });
            let resp = h
                .send(client(1), &req)
                .expect("a 401 to a minimal Allocate");
            let msg = turnd_proto::wire::Message::parse(&resp).unwrap();
            assert_eq!(client::error_code(&msg), Some(401));
            assert_eq!(
                msg.get(turnd_proto::wire::attr::REALM),
                Some(realm.as_bytes())
            );
            assert!(resp.len() <= answer_budget(req.len()), "{} B", resp.len());
            assert!(resp.len() <= CHALLENGE_FLOOR && CHALLENGE_FLOOR <= 8 * 28);
            println!(
                "realm {len}: {} B request, {} B 401 ({:.1}x)",
                req.len(),
                resp.len(),
                resp.len() as f64 / req.len() as f64
            );
        }
        let bare = client::request(Method::ALLOCATE, h.tid(), &[], None, false);
        assert_eq!(bare.len(), 20);
        assert!(
            h.send(client(2), &bare).is_none(),
            "a bare header pays for nothing"
        );
        assert_eq!(h.server.stats().error_responses_suppressed, 1);
    }
}

/// REST usernames carry a user id of at most `MAX_REST_USER_ID` (128) bytes: a 509-byte one
/// (the most STUN allows) with a valid MAC is refused; the longest allowed one works.
#[test]
fn an_overlong_rest_username_is_refused() {
    use turnd_proto::auth::{mint_rest_credential, MAX_REST_USER_ID};
    let mut h = Harness::new(config());
    let expiry_part = format!("{}:", h.now.unix + 600).len();
    let long = mint_rest_credential(SECRET, &"u".repeat(509 - expiry_part), h.now.unix, 600);
    assert_eq!(long.username.len(), 509);
    let mut auth = client::ClientAuth::new(&long.username, &long.password);
    let r = h.request(
        client(1),
        Method::ALLOCATE,
        &[Attr::RequestedTransport(17)],
        &mut auth,
    );
    assert_eq!(code(&r), Some(401));
    assert_eq!(
        h.server.stats().auth_failures[AuthFailure::UnknownUser.index()],
        1
    );
    let ok = mint_rest_credential(SECRET, &"u".repeat(MAX_REST_USER_ID), h.now.unix, 600);
    let mut auth = client::ClientAuth::new(&ok.username, &ok.password);
    h.allocate(client(2), &mut auth);
}

/// The unauthenticated-error limiter counts an IPv6 source by its prefix
/// (`ipv6_source_prefix`, /64 by default): a host cycling through the addresses of its /64
/// gets one budget; with a /128 prefix each address has its own.
#[test]
fn the_error_limiter_counts_ipv6_sources_by_the_configured_prefix() {
    let answered = |prefix: u8| {
        let mut cfg = config();
        cfg.error_rate_per_source = 5;
        cfg.ipv6_source_prefix = prefix;
        let mut h = Harness::new(cfg);
        let req = client::request(
            Method::ALLOCATE,
            TransactionId([4; 12]),
            &[Attr::RequestedTransport(17)],
            None,
            false,
        );
        (0..100u16)
            .filter(|i| {
                let c = ClientId {
                    transport: Transport::Udp,
                    local: 0,
                    remote: SocketAddr::new(
                        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, 0x100 + i)),
                        5000,
                    ),
                    local_ip: SERVER_IP.parse().unwrap(),
                };
                h.send(c, &req).is_some()
            })
            .count()
    };
    assert_eq!(answered(64), 10, "one /64, one burst");
    assert!(answered(128) > 90, "single addresses counted apart");
}
