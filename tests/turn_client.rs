//! Integration tests over real sockets with a client nobody here wrote: the `turn` crate's
//! (webrtc-rs) TURN client allocates on turnd, binds a channel and exchanges data with a plain
//! UDP peer; credentials are checked the way a real deployment uses them.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;
use turn::client::Client;
use webrtc_util::Conn;

const STEP: Duration = Duration::from_secs(5);

async fn client(server: SocketAddr, username: &str, password: &str) -> Client {
    turn_client(server, username, password).await
}

/// Sends `msg` from `from` until `to` receives it (the first packets may race the permission
/// the client creates on first send; earlier packets still in flight are skipped); returns what
/// arrived and its source.
async fn deliver(
    from: &(impl Conn + ?Sized),
    target: SocketAddr,
    to: &(impl Conn + ?Sized),
    msg: &[u8],
) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 1500];
    for _ in 0..20 {
        from.send_to(msg, target).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(250);
        while let Ok(Ok((n, src))) = tokio::time::timeout_at(deadline, to.recv_from(&mut buf)).await
        {
            if &buf[..n] == msg {
                return (buf[..n].to_vec(), src);
            }
        }
    }
    panic!("{msg:?} never arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_crate_client_relays_to_a_plain_udp_peer_over_a_channel() {
    let mut s = settings();
    s.allow_peer = Some(vec!["127.0.0.1/32".into()]);
    let turnd = start(s);
    let (user, pass) = rest("alice", 600);
    let c = client(turnd.addr, &user, &pass).await;
    let relay = tokio::time::timeout(STEP, c.allocate())
        .await
        .unwrap()
        .unwrap();
    let relayed = relay.local_addr().unwrap();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");

    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (got, src) = deliver(&relay, peer_addr, &peer, b"to peer").await;
    assert_eq!(
        (got.as_slice(), src),
        (&b"to peer"[..], relayed),
        "the peer sees the relayed address"
    );

    // The client binds a channel after the first send; wait until the server has it.
    let channel_bound = async {
        loop {
            if turnd.sum(|s| s.channels_active) >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(STEP, channel_bound)
        .await
        .expect("a channel is bound");
    let (got, _) = deliver(&relay, peer_addr, &peer, b"over the channel").await;
    assert_eq!(got, b"over the channel");
    let (got, src) = deliver(&peer, relayed, &relay, b"to client").await;
    assert_eq!((got.as_slice(), src), (&b"to client"[..], peer_addr));

    eventually("relayed packets counted", || {
        turnd.sum(|s| s.packets_to_peer) >= 2 && turnd.sum(|s| s.packets_to_client) >= 1
    });
    relay.close().await.unwrap();
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_users_and_rest_credentials_both_authenticate() {
    let mut s = settings();
    s.user = Some(vec!["carol:static-password".into()]);
    let turnd = start(s);
    let c = client(turnd.addr, "carol", "static-password").await;
    tokio::time::timeout(STEP, c.allocate())
        .await
        .unwrap()
        .expect("static user allocates");
    let (user, pass) = rest("dave", 3600);
    let c2 = client(turnd.addr, &user, &pass).await;
    tokio::time::timeout(STEP, c2.allocate())
        .await
        .unwrap()
        .expect("REST user allocates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tampered_and_overlong_credentials_are_refused() {
    let mut s = settings();
    s.max_ttl = Some(3600);
    let turnd = start(s);
    let now = turnd::clock::unix_now();
    let expired = format!("{}:erin", now - 10);
    let expired_pass = turnd_proto::auth::rest_password(SECRET.as_bytes(), &expired);
    let (user, pass) = rest("erin", 600);
    let tampered = user.replace("erin", "root");
    let (long_user, long_pass) = rest("erin", 7200);
    for (u, p) in [
        (expired.as_str(), expired_pass.as_str()),
        (tampered.as_str(), pass.as_str()),
        (long_user.as_str(), long_pass.as_str()),
        (user.as_str(), "wrong"),
    ] {
        let c = client(turnd.addr, u, p).await;
        let r = tokio::time::timeout(STEP, c.allocate()).await.unwrap();
        assert!(r.is_err(), "{u} must be refused");
    }
    eventually("four counted auth failures", || {
        turnd.sum(|s| s.auth_failures.iter().sum()) >= 4
    });
}

/// With the default policy, loopback peers are refused — except the server's own relayed
/// addresses, so two clients of one turnd can reach each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_refuses_loopback_but_two_clients_of_turnd_can_talk() {
    let turnd = start(settings());
    let (u1, p1) = rest("a", 600);
    let (u2, p2) = rest("b", 600);
    let c1 = client(turnd.addr, &u1, &p1).await;
    let c2 = client(turnd.addr, &u2, &p2).await;
    let r1 = tokio::time::timeout(STEP, c1.allocate())
        .await
        .unwrap()
        .unwrap();
    let r2 = tokio::time::timeout(STEP, c2.allocate())
        .await
        .unwrap()
        .unwrap();
    let (a1, a2) = (r1.local_addr().unwrap(), r2.local_addr().unwrap());

    let canary = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let refused = r1
        .send_to(b"to the canary", canary.local_addr().unwrap())
        .await;
    assert!(
        refused.is_err(),
        "CreatePermission for a loopback peer is refused"
    );

    // Each side must permit the other before data flows both ways.
    let _ = r2.send_to(b"open", a1).await;
    let (got, src) = deliver(&r1, a2, &r2, b"hello b").await;
    assert_eq!((got.as_slice(), src), (&b"hello b"[..], a1));
    let (got, src) = deliver(&r2, a1, &r1, b"hello a").await;
    assert_eq!((got.as_slice(), src), (&b"hello a"[..], a2));

    let mut buf = [0u8; 64];
    let leaked = tokio::time::timeout(Duration::from_millis(300), canary.recv_from(&mut buf)).await;
    assert!(leaked.is_err(), "the canary received nothing");
    eventually("the refused peer counted", || {
        turnd.sum(|s| s.peer_denied) >= 1
    });
}

/// A second turnd on a port the first one holds fails to start, naming the setting, instead of
/// silently sharing the port through SO_REUSEPORT.
#[test]
fn a_listen_address_in_use_is_an_error_not_a_shared_port() {
    let first = start(settings());
    let mut s = settings();
    s.listen = Some(vec![first.addr.to_string()]);
    let config = turnd::config::Config::from_settings(&s).unwrap();
    let err = turnd::serve::start(&config)
        .err()
        .expect("the second start fails");
    assert!(format!("{err:#}").contains("already in use"), "{err:#}");
}
