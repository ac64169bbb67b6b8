//! The smaller points of issue 20, point 6, over real sockets: a realm of 100 characters still
//! gets its 401 out to a minimal 28-byte Allocate (within the amplification rule), a request
//! too small to pay for a challenge is dropped with a log line saying so, and a 509-byte REST
//! username is refused by the relay and by the credential API.

mod common;

use common::process::Served;
use common::UdpTurnClient;
use std::net::UdpSocket;
use std::time::Duration;
use turnd_proto::client::{self, Attr};
use turnd_proto::server::answer_budget;
use turnd_proto::wire::{attr, Message, Method, TransactionId};

#[test]
fn a_100_character_realm_still_challenges_a_minimal_allocate() {
    let realm = "r".repeat(100);
    let turnd = Served::start(&[
        "--realm",
        &realm,
        "--relay-ip",
        "127.0.0.1",
        "--selftest-interval",
        "0",
    ]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1500];
    for (i, fingerprint) in [false, true].into_iter().enumerate() {
        let req = client::request(
            Method::ALLOCATE,
            TransactionId([i as u8 + 1; 12]),
            &[Attr::RequestedTransport(17)],
            None,
            fingerprint,
        );
        assert_eq!(req.len(), 28 + 8 * i);
        sock.send_to(&req, turnd.addr()).unwrap();
        let (n, _) = sock
            .recv_from(&mut buf)
            .expect("a 401 to a minimal Allocate");
        let msg = Message::parse(&buf[..n]).unwrap();
        assert_eq!(client::error_code(&msg), Some(401));
        assert_eq!(msg.get(attr::REALM), Some(realm.as_bytes()));
        assert!(
            n <= answer_budget(req.len()),
            "{n} B answer to {} B",
            req.len()
        );
        println!(
            "{} B Allocate → {n} B 401 ({:.1}x)",
            req.len(),
            n as f64 / req.len() as f64
        );
    }
    // A bare header cannot pay for a 180-byte challenge: dropped, and the log says so.
    let bare = client::request(Method::ALLOCATE, TransactionId([9; 12]), &[], None, false);
    assert_eq!(bare.len(), 20);
    sock.send_to(&bare, turnd.addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "a bare header was answered"
    );
    turnd.wait_for_log("unauthenticated error responses suppressed");
    // A real client completes the exchange with the long realm.
    let (user, pass) = {
        let c = turnd_proto::auth::mint_rest_credential(
            common::process::SECRET.as_bytes(),
            "realm-user",
            turnd::clock::unix_now(),
            600,
        );
        (c.username, c.password)
    };
    let mut c = UdpTurnClient::new(turnd.addr(), &user, &pass);
    c.allocate();
}

#[test]
fn a_509_byte_rest_username_is_refused() {
    let turnd = common::start(common::settings());
    // Minted elsewhere with the right secret: the MAC is valid, the length is not.
    let expiry = turnd::clock::unix_now() + 600;
    let user_id = "u".repeat(509 - format!("{expiry}:").len());
    let long = turnd_proto::auth::mint_rest_credential(
        common::SECRET.as_bytes(),
        &user_id,
        turnd::clock::unix_now(),
        600,
    );
    assert_eq!(long.username.len(), 509);
    let mut c = UdpTurnClient::new(turnd.addr, &long.username, &long.password);
    let r = c.request(Method::ALLOCATE, &[Attr::RequestedTransport(17)]);
    assert_eq!(UdpTurnClient::code(&r), Some(401));
    // The longest allowed user id (128 bytes) works.
    let (user, pass) = common::rest(&"u".repeat(turnd_proto::auth::MAX_REST_USER_ID), 600);
    assert_eq!(user.len(), 11 + 128);
    UdpTurnClient::new(turnd.addr, &user, &pass).allocate();
    // The API mints no such username: 400 with a JSON error.
    let r = common::get(
        turnd.http(),
        &format!("/api/v1/credentials?username={user_id}"),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["error"].as_str().unwrap().contains("128"),
        "{}",
        r.body
    );
}
