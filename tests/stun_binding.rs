//! Binding over real sockets: RFC 3489 requests, CHANGE-REQUEST with no flags, and RFC 5780
//! with `stun_alternate` on 127.0.0.2 (the primary on 127.0.0.1): each CHANGE-REQUEST is
//! answered from the socket it asks for, RESPONSE-PORT to that port, and every answer stays
//! within four times its request. Without `stun_alternate`, a change is 420; over TCP, 400.

mod common;

use common::{settings, start};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;
use turnd_proto::client::{self, Attr};
use turnd_proto::server::answer_budget;
use turnd_proto::wire::{attr, Message, Method, TransactionId};

fn udp() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

fn change(flags: u8) -> Attr {
    Attr::Raw(attr::CHANGE_REQUEST, vec![0, 0, 0, flags])
}

fn binding(n: u8, attrs: &[Attr]) -> Vec<u8> {
    client::request(Method::BINDING, TransactionId([n; 12]), attrs, None, false)
}

/// Sends `req` and returns the answer and where it came from.
fn ask(sock: &UdpSocket, to: SocketAddr, req: &[u8]) -> (Vec<u8>, SocketAddr) {
    sock.send_to(req, to).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = sock.recv_from(&mut buf).expect("an answer");
    assert!(
        n <= answer_budget(req.len()),
        "{n} B answer to a {} B request",
        req.len()
    );
    (buf[..n].to_vec(), from)
}

fn address(msg: &Message<'_>, typ: u16) -> Option<SocketAddr> {
    attr::read_address(msg.get(typ)?)
}

#[test]
fn rfc5780_answers_come_from_the_socket_change_request_asks_for() {
    let mut s = settings();
    s.stun_alternate = Some("127.0.0.2:0".into());
    s.stun_alternate_url = Some(true);
    let turnd = start(s);
    let alt = turnd.running.stun_alternate.expect("RFC 5780 on");
    assert_eq!(alt.primary, turnd.addr);
    // `stun_alternate_url`: the credential endpoints hand out the alternate STUN URL too.
    let url = format!("stun:127.0.0.2:{}", alt.alternate.port());
    for target in ["/api/v1/credentials", "/api/v1/ice-servers"] {
        let r = common::get(turnd.http(), target);
        assert_eq!(r.status, 200, "{target}");
        assert!(r.body.contains(&url), "{target}: {}", r.body);
    }
    let [p, alt_ip, alt_port, both] = alt.addresses();
    let sock = udp();
    let me = sock.local_addr().unwrap();
    for (i, (flags, from)) in [
        (0, p),
        (attr::CHANGE_IP, alt_ip),
        (attr::CHANGE_PORT, alt_port),
        (attr::CHANGE_IP | attr::CHANGE_PORT, both),
    ]
    .into_iter()
    .enumerate()
    {
        let req = binding(i as u8 + 1, &[change(flags)]);
        let (resp, came_from) = ask(&sock, p, &req);
        assert_eq!(came_from, from, "flags {flags}");
        let msg = Message::parse(&resp).unwrap();
        assert_eq!(client::address(&msg, attr::XOR_MAPPED_ADDRESS), Some(me));
        assert_eq!(address(&msg, attr::RESPONSE_ORIGIN), Some(from));
        assert_eq!(address(&msg, attr::OTHER_ADDRESS), Some(both));
    }
    // Each of the other three addresses answers too, naming its own other address.
    for (i, (to, other)) in [(alt_ip, alt_port), (alt_port, alt_ip), (both, p)]
        .into_iter()
        .enumerate()
    {
        let (resp, came_from) = ask(&sock, to, &binding(10 + i as u8, &[]));
        assert_eq!(came_from, to);
        let msg = Message::parse(&resp).unwrap();
        assert_eq!(address(&msg, attr::OTHER_ADDRESS), Some(other));
    }
    // RESPONSE-PORT: the answer goes to another socket of the same address.
    let other_sock = udp();
    let port = other_sock.local_addr().unwrap().port();
    let pb = port.to_be_bytes();
    let req = binding(
        20,
        &[Attr::Raw(attr::RESPONSE_PORT, vec![pb[0], pb[1], 0, 0])],
    );
    sock.send_to(&req, p).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = other_sock
        .recv_from(&mut buf)
        .expect("the answer at RESPONSE-PORT");
    let msg = Message::parse(&buf[..n]).unwrap();
    assert_eq!(client::address(&msg, attr::XOR_MAPPED_ADDRESS), Some(me));
    // PADDING echoed; too much is 400; malformed RFC 5780 attributes are 400.
    let (resp, _) = ask(
        &sock,
        p,
        &binding(21, &[Attr::Raw(attr::PADDING, vec![1; 1000])]),
    );
    let msg = Message::parse(&resp).unwrap();
    assert_eq!(msg.get(attr::PADDING).map(<[u8]>::len), Some(1000));
    for (i, bad) in [
        vec![Attr::Raw(attr::PADDING, vec![1; 1480])],
        vec![
            Attr::Raw(attr::CHANGE_REQUEST, vec![4]),
            Attr::Raw(attr::RESPONSE_PORT, vec![0, 0, 0, 0]),
            Attr::Raw(attr::PADDING, vec![]),
            Attr::Raw(attr::PADDING, vec![]),
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let (resp, _) = ask(&sock, p, &binding(30 + i as u8, &bad));
        let msg = Message::parse(&resp).unwrap();
        assert_eq!(client::error_code(&msg), Some(400));
    }
    // Over TCP: CHANGE-REQUEST asking for a change and RESPONSE-PORT are 400.
    for (i, attrs) in [
        vec![change(attr::CHANGE_IP)],
        vec![Attr::Raw(attr::RESPONSE_PORT, vec![0x30, 0x39, 0, 0])],
    ]
    .into_iter()
    .enumerate()
    {
        let msg = tcp_ask(p, &binding(40 + i as u8, &attrs));
        assert_eq!(
            client::error_code(&Message::parse(&msg).unwrap()),
            Some(400)
        );
    }
}

fn tcp_ask(to: SocketAddr, req: &[u8]) -> Vec<u8> {
    let mut t = TcpStream::connect(to).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    t.write_all(req).unwrap();
    let mut head = [0u8; 20];
    t.read_exact(&mut head).unwrap();
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    let mut body = vec![0u8; len];
    t.read_exact(&mut body).unwrap();
    let mut out = head.to_vec();
    out.extend(body);
    out
}

#[test]
fn without_an_alternate_change_is_420_and_old_clients_are_answered() {
    let turnd = start(settings());
    assert!(turnd.running.stun_alternate.is_none());
    let r = common::get(turnd.http(), "/api/v1/ice-servers");
    assert!(!r.body.contains("127.0.0.2"), "{}", r.body);
    let sock = udp();
    let me = sock.local_addr().unwrap();
    // stuntman's basic test: CHANGE-REQUEST with no flags.
    let (resp, _) = ask(&sock, turnd.addr, &binding(1, &[change(0)]));
    let msg = Message::parse(&resp).unwrap();
    assert_eq!(client::address(&msg, attr::XOR_MAPPED_ADDRESS), Some(me));
    assert_eq!(msg.get(attr::OTHER_ADDRESS), None);
    let (resp, _) = ask(&sock, turnd.addr, &binding(2, &[change(attr::CHANGE_IP)]));
    let msg = Message::parse(&resp).unwrap();
    assert_eq!(client::error_code(&msg), Some(420));
    assert_eq!(
        msg.get(attr::UNKNOWN_ATTRIBUTES),
        Some(&attr::CHANGE_REQUEST.to_be_bytes()[..])
    );
    // An RFC 3489 request: no magic cookie, a 128-bit transaction id.
    let mut classic = vec![0x00, 0x01, 0x00, 0x00];
    classic.extend_from_slice(b"classic-3489-tid");
    let (resp, _) = ask(&sock, turnd.addr, &classic);
    assert_eq!(resp[4..20], classic[4..20]);
    assert_eq!(resp[20..22], attr::MAPPED_ADDRESS.to_be_bytes());
    assert_eq!(attr::read_address(&resp[24..32]), Some(me));
}
