//! Binding: plain, RFC 3489 style, and the RFC 5780 attributes, against the sans-IO server.

mod harness;

use harness::{client, config, Harness};
use std::net::SocketAddr;
use turnd_proto::client::{self, Attr};
use turnd_proto::server::{answer_budget, StunAlternate, MAX_PADDED_RESPONSE};
use turnd_proto::wire::{attr, Message, Method};
use turnd_proto::{ClientId, Transport};

const PRIMARY: &str = "192.0.2.1:3478";
const ALTERNATE: &str = "192.0.2.2:3479";

/// The shell's UDP listeners for an RFC 5780 server: the primary, then the other three.
fn rfc5780() -> Harness {
    let mut c = config();
    let alt = StunAlternate {
        primary: PRIMARY.parse().unwrap(),
        alternate: ALTERNATE.parse().unwrap(),
    };
    c.udp_listeners = alt.addresses().to_vec();
    c.stun_alternate = Some(alt);
    Harness::new(c)
}

fn binding(h: &mut Harness, attrs: &[Attr]) -> Vec<u8> {
    let tid = h.tid();
    client::request(Method::BINDING, tid, attrs, None, false)
}

fn change(flags: u8) -> Attr {
    Attr::Raw(attr::CHANGE_REQUEST, vec![0, 0, 0, flags])
}

/// Sends and returns every answer with the client it went to.
fn send_all(h: &mut Harness, c: ClientId, packet: &[u8]) -> Vec<(ClientId, Vec<u8>)> {
    let before = h.sent.len();
    h.server.handle_client_datagram(h.now, c, packet);
    h.drain();
    h.sent.drain(before..).collect()
}

fn addr(msg: &Message<'_>, typ: u16) -> Option<SocketAddr> {
    attr::read_address(msg.get(typ)?)
}

/// stuntman's `stunclient` sends CHANGE-REQUEST with both flags clear in its basic test.
#[test]
fn change_request_with_no_flags_is_a_plain_binding() {
    let mut h = Harness::new(config());
    let req = binding(&mut h, &[change(0)]);
    let resp = h.send(client(1), &req).expect("answered");
    let msg = Message::parse(&resp).unwrap();
    assert_eq!(client::error_code(&msg), None);
    assert_eq!(
        client::address(&msg, attr::XOR_MAPPED_ADDRESS),
        Some(client(1).remote)
    );
    assert_eq!(msg.get(attr::OTHER_ADDRESS), None, "no alternate address");
}

/// RFC 5780 §6: without an alternate address CHANGE-REQUEST (asking for a change) is not
/// supported: 420 listing it. RESPONSE-PORT and PADDING stay unknown too.
#[test]
fn without_an_alternate_address_rfc5780_asks_get_420() {
    let mut h = Harness::new(config());
    for (attrs, listed) in [
        (vec![change(attr::CHANGE_IP)], attr::CHANGE_REQUEST),
        (vec![change(attr::CHANGE_PORT)], attr::CHANGE_REQUEST),
        (
            vec![Attr::Raw(attr::RESPONSE_PORT, vec![0x30, 0x39, 0, 0])],
            attr::RESPONSE_PORT,
        ),
        (vec![Attr::Raw(attr::PADDING, vec![0; 64])], attr::PADDING),
    ] {
        let req = binding(&mut h, &attrs);
        let resp = h.send(client(2), &req).expect("420, not silence");
        let msg = Message::parse(&resp).unwrap();
        assert_eq!(client::error_code(&msg), Some(420));
        assert_eq!(
            msg.get(attr::UNKNOWN_ATTRIBUTES),
            Some(&listed.to_be_bytes()[..])
        );
    }
}

fn classic(tid: [u8; 16], attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut p = vec![0x00, 0x01, 0, 0];
    p.extend_from_slice(&tid);
    for (t, v) in attrs {
        p.extend_from_slice(&t.to_be_bytes());
        p.extend_from_slice(&(v.len() as u16).to_be_bytes());
        p.extend_from_slice(v);
        p.resize(turnd_proto::wire::padded(p.len()), 0);
    }
    let len = (p.len() - 20) as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p
}

/// RFC 8489 §12.2: an RFC 3489 request (no magic cookie) is answered with MAPPED-ADDRESS,
/// the whole 128-bit transaction id echoed.
#[test]
fn rfc3489_requests_get_mapped_address_and_their_cookie_field_back() {
    let mut h = Harness::new(config());
    let tid = *b"0123456789abcdef";
    for req in [
        classic(tid, &[]),
        classic(tid, &[(attr::CHANGE_REQUEST, &[0, 0, 0, 0])]),
    ] {
        let resp = h.send(client(3), &req).expect("answered");
        assert_eq!(resp[..2], [0x01, 0x01], "Binding success");
        assert_eq!(resp[4..20], tid, "transaction id and cookie field echoed");
        let len = u16::from_be_bytes([resp[2], resp[3]]) as usize;
        assert_eq!(resp.len(), 20 + len);
        assert_eq!(resp[20..22], attr::MAPPED_ADDRESS.to_be_bytes());
        assert_eq!(attr::read_address(&resp[24..32]), Some(client(3).remote));
        assert!(resp.len() <= answer_budget(req.len()));
    }
    // Anything it does not understand is dropped, never answered with a cookie-less error:
    // RESPONSE-ADDRESS (would send the answer elsewhere), a change with no alternate, junk.
    for req in [
        classic(tid, &[(0x0002, &[0, 1, 0, 9, 1, 2, 3, 4])]),
        classic(tid, &[(attr::CHANGE_REQUEST, &[0, 0, 0, 4])]),
        classic(tid, &[(attr::CHANGE_REQUEST, &[0, 0, 4])]),
        {
            let mut r = classic(tid, &[]);
            r[3] = 4; // a body that is not there
            r
        },
    ] {
        assert_eq!(h.send(client(3), &req), None);
    }
    let mut wrong_type = classic(tid, &[]);
    wrong_type[1] = 0x03;
    assert_eq!(h.send(client(3), &wrong_type), None);
}

/// The per-source limiter that caps unauthenticated errors caps RFC 3489 answers too.
#[test]
fn rfc3489_answers_are_rate_limited_per_source() {
    let mut c = config();
    c.error_rate_per_source = 5;
    let mut h = Harness::new(c);
    let answered = (0..40u8)
        .filter(|i| h.send(client(4), &classic([*i; 16], &[])).is_some())
        .count();
    assert!((5..=10).contains(&answered), "{answered} of 40 answered");
    assert!(h.server.stats().error_responses_suppressed >= 30);
}

/// RFC 5780 §7.3, §7.4: with an alternate address every UDP Binding answer says where it came
/// from and where the other address is, relative to the address the request reached.
#[test]
fn other_address_and_response_origin_from_each_of_the_four_addresses() {
    let mut h = rfc5780();
    let addrs: Vec<SocketAddr> = h.server.config().udp_listeners.clone();
    let other = [addrs[3], addrs[2], addrs[1], addrs[0]];
    for (i, local) in addrs.iter().enumerate() {
        let c = ClientId {
            local: i as u32,
            local_ip: local.ip(),
            ..client(5)
        };
        let req = binding(&mut h, &[]);
        let resp = h.send(c, &req).expect("answered");
        let msg = Message::parse(&resp).unwrap();
        assert_eq!(addr(&msg, attr::RESPONSE_ORIGIN), Some(*local));
        assert_eq!(addr(&msg, attr::OTHER_ADDRESS), Some(other[i]));
        assert_eq!(
            client::address(&msg, attr::XOR_MAPPED_ADDRESS),
            Some(c.remote)
        );
    }
}

/// RFC 5780 §6.1: CHANGE-REQUEST picks the socket the answer leaves from.
#[test]
fn change_request_answers_from_the_asked_for_address() {
    let mut h = rfc5780();
    let [p, alt_ip, alt_port, both] = h.server.config().stun_alternate.unwrap().addresses();
    let c = ClientId {
        local_ip: p.ip(),
        ..client(6)
    };
    for (flags, from, listener) in [
        (0, p, 0),
        (attr::CHANGE_IP, alt_ip, 1),
        (attr::CHANGE_PORT, alt_port, 2),
        (attr::CHANGE_IP | attr::CHANGE_PORT, both, 3),
    ] {
        let req = binding(&mut h, &[change(flags)]);
        let out = send_all(&mut h, c, &req);
        assert_eq!(out.len(), 1, "flags {flags}");
        let (to, resp) = &out[0];
        assert_eq!(
            to.local, listener,
            "flags {flags}: the socket bound to {from}"
        );
        assert_eq!(to.local_ip, from.ip());
        assert_eq!(to.remote, c.remote);
        let msg = Message::parse(resp).unwrap();
        assert_eq!(addr(&msg, attr::RESPONSE_ORIGIN), Some(from));
        assert_eq!(addr(&msg, attr::OTHER_ADDRESS), Some(both));
    }
}

/// RFC 5780 §7.5: RESPONSE-PORT sends the answer to that port of the client's address.
#[test]
fn response_port_answers_to_that_port() {
    let mut h = rfc5780();
    let req = binding(
        &mut h,
        &[Attr::Raw(attr::RESPONSE_PORT, vec![0x30, 0x39, 0, 0])],
    );
    let c = client(7);
    let out = send_all(&mut h, c, &req);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].0.remote,
        SocketAddr::new(c.remote.ip(), 12345),
        "same IP, the asked port"
    );
    let msg = Message::parse(&out[0].1).unwrap();
    assert_eq!(
        client::address(&msg, attr::XOR_MAPPED_ADDRESS),
        Some(c.remote),
        "the mapping is still the request's source"
    );
}

/// RFC 5780 §7.6: PADDING is echoed at the request's length, within an MTU; beyond, 400.
#[test]
fn padding_is_echoed_up_to_an_mtu() {
    let mut h = rfc5780();
    let req = binding(&mut h, &[Attr::Raw(attr::PADDING, vec![0xAB; 500])]);
    let resp = h.send(client(8), &req).expect("answered");
    let msg = Message::parse(&resp).unwrap();
    assert_eq!(msg.get(attr::PADDING).map(<[u8]>::len), Some(500));
    assert!(msg.get(attr::PADDING).unwrap().iter().all(|b| *b == 0));
    assert!(resp.len() <= answer_budget(req.len()));
    let req = binding(&mut h, &[Attr::Raw(attr::PADDING, vec![0; 1480])]);
    let resp = h.send(client(8), &req).expect("answered");
    assert_eq!(
        client::error_code(&Message::parse(&resp).unwrap()),
        Some(400),
        "an answer over {MAX_PADDED_RESPONSE} bytes is refused"
    );
}

/// RFC 5780 §7.2, §7.5: CHANGE-REQUEST and RESPONSE-PORT are for UDP; over TCP or TLS 400.
#[test]
fn change_request_and_response_port_over_streams_are_400() {
    let mut h = rfc5780();
    for transport in [Transport::Tcp, Transport::Tls] {
        let c = ClientId {
            transport,
            ..client(9)
        };
        for attrs in [
            vec![change(attr::CHANGE_IP)],
            vec![change(attr::CHANGE_PORT)],
            vec![Attr::Raw(attr::RESPONSE_PORT, vec![0x30, 0x39, 0, 0])],
        ] {
            let req = binding(&mut h, &attrs);
            let resp = h.send(c, &req).expect("answered");
            assert_eq!(
                client::error_code(&Message::parse(&resp).unwrap()),
                Some(400)
            );
        }
        let req = binding(&mut h, &[change(0)]);
        let resp = h.send(c, &req).expect("answered");
        let msg = Message::parse(&resp).unwrap();
        assert_eq!(client::error_code(&msg), None);
        assert_eq!(msg.get(attr::OTHER_ADDRESS), None, "UDP only");
    }
}

/// Every RFC 5780 attribute malformed, one at a time and all together, and RESPONSE-PORT with
/// PADDING: 400.
#[test]
fn malformed_rfc5780_attributes_are_400() {
    let mut h = rfc5780();
    let all = vec![
        Attr::Raw(attr::CHANGE_REQUEST, vec![0, 4]),
        Attr::Raw(attr::RESPONSE_PORT, vec![0, 0, 0, 0]),
        Attr::Raw(attr::PADDING, vec![]),
        Attr::Raw(attr::PADDING, vec![]),
    ];
    for attrs in [
        vec![all[0].clone()],
        vec![all[1].clone()],
        vec![Attr::Raw(attr::RESPONSE_PORT, vec![1, 2, 3, 4, 5, 6, 7, 8])],
        vec![all[2].clone(), all[3].clone()],
        // RFC 5780 §7.5: RESPONSE-PORT and PADDING together are not processed.
        vec![
            Attr::Raw(attr::RESPONSE_PORT, vec![0x30, 0x39, 0, 0]),
            Attr::Raw(attr::PADDING, vec![0; 8]),
        ],
        all.clone(),
    ] {
        let req = binding(&mut h, &attrs);
        let resp = h.send(client(10), &req).expect("answered");
        assert_eq!(
            client::error_code(&Message::parse(&resp).unwrap()),
            Some(400)
        );
    }
}

/// The answers that go anywhere but back, and padded ones, spend the per-source budget;
/// every answer stays within four times its request.
#[test]
fn redirected_answers_are_rate_limited_and_within_four_times_the_request() {
    let mut c = config();
    c.error_rate_per_source = 5;
    let alt = StunAlternate {
        primary: PRIMARY.parse().unwrap(),
        alternate: ALTERNATE.parse().unwrap(),
    };
    c.udp_listeners = alt.addresses().to_vec();
    c.stun_alternate = Some(alt);
    let mut h = Harness::new(c);
    let mut answered = 0;
    for _ in 0..40 {
        let req = binding(&mut h, &[change(attr::CHANGE_IP | attr::CHANGE_PORT)]);
        for (_, resp) in send_all(&mut h, client(11), &req) {
            assert!(resp.len() <= answer_budget(req.len()));
            answered += 1;
        }
    }
    assert!((5..=10).contains(&answered), "{answered} of 40 answered");
    // A plain Binding back to the sender is not limited (keepalives).
    for _ in 0..40 {
        let req = binding(&mut h, &[]);
        let resp = h.send(client(11), &req).expect("answered");
        assert!(resp.len() <= answer_budget(req.len()));
    }
}
