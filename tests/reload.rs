//! SIGHUP, as an operator uses it: rotate the secret, revoke a user, open a peer range and set
//! an API key in the configuration file, send SIGHUP, and see each take effect while existing
//! allocations the new configuration still accepts carry on; then break the file and see the
//! reload refused with the old configuration still in force. (What a reload ends at once is
//! in tests/revocation.rs.)

mod common;

use common::process::Served;
use common::UdpTurnClient;
use std::net::UdpSocket;
use std::time::Duration;
use turnd_proto::client::Attr;
use turnd_proto::wire::Method;

const OLD_SECRET: &str = "the-old-shared-secret";
const NEW_SECRET: &str = "the-new-shared-secret";

fn client(turnd: &Served, secret: &str, user: &str) -> UdpTurnClient {
    let c = turnd_proto::auth::mint_rest_credential(
        secret.as_bytes(),
        user,
        turnd::clock::unix_now(),
        600,
    );
    UdpTurnClient::new(turnd.addr(), &c.username, &c.password)
}

fn allocate_code(c: &mut UdpTurnClient) -> Option<u16> {
    let r = c.request(Method::ALLOCATE, &[Attr::RequestedTransport(17)]);
    UdpTurnClient::code(&r)
}

fn refresh_code(c: &mut UdpTurnClient) -> Option<u16> {
    let r = c.request(Method::REFRESH, &[Attr::Lifetime(600)]);
    UdpTurnClient::code(&r)
}

fn permit_code(c: &mut UdpTurnClient, peer: std::net::SocketAddr) -> Option<u16> {
    let r = c.request(Method::CREATE_PERMISSION, &[Attr::Peer(peer)]);
    UdpTurnClient::code(&r)
}

/// `GET /api/v1/credentials` without a key: 200 (loopback, no key configured) or 401.
fn credentials_status(turnd: &Served) -> (u16, String) {
    let r = common::get(
        ([127, 0, 0, 1], turnd.http).into(),
        "/api/v1/credentials?username=web",
    );
    (r.status, r.body)
}

#[test]
fn sighup_applies_secrets_revocations_peers_and_keys_and_keeps_allocations() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("turnd.toml");
    let write = |toml: &str| std::fs::write(&file, toml).unwrap();
    // Both secrets verify; the old one mints. Alice's credential comes from the new one, so
    // the rotation below keeps her allocation.
    write(&format!("secret = [\"{OLD_SECRET}\", \"{NEW_SECRET}\"]\n"));
    let turnd = Served::start(&[
        "--config",
        file.to_str().unwrap(),
        "--relay-ip",
        "127.0.0.1",
        "--relay-ports",
        "31000-31999",
        "--workers",
        "2",
        "--selftest-interval",
        "0",
    ]);

    let canary = UdpSocket::bind("127.0.0.1:0").unwrap();
    canary
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let canary_addr = canary.local_addr().unwrap();

    let mut alice = client(&turnd, NEW_SECRET, "alice");
    let mut mallory = client(&turnd, OLD_SECRET, "mallory");
    assert_eq!(allocate_code(&mut alice), None);
    assert_eq!(allocate_code(&mut mallory), None);
    assert_eq!(
        permit_code(&mut alice, canary_addr),
        Some(403),
        "loopback is denied by default"
    );
    assert_eq!(
        credentials_status(&turnd).0,
        200,
        "no API key yet: loopback may mint"
    );

    write(&format!(
        "secret = [\"{NEW_SECRET}\"]\nrevoke = [\"mallory\"]\nallow_peer = [\"127.0.0.1/32\"]\napi_key = [\"an-api-key-of-some-length\"]\n"
    ));
    turnd.signal(libc::SIGHUP);
    turnd.wait_for_log("configuration reloaded");

    // Allocations made before the reload are still there and usable.
    assert_eq!(refresh_code(&mut alice), None, "alice keeps her allocation");
    assert_eq!(
        permit_code(&mut alice, canary_addr),
        None,
        "the new allow_peer applies"
    );
    let tid = turnd_proto::wire::TransactionId([9; 12]);
    let ind = turnd_proto::client::send_indication(tid, canary_addr, b"after reload");
    alice.sock.send_to(&ind, turnd.addr()).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = canary
        .recv_from(&mut buf)
        .expect("relayed to the newly allowed peer");
    assert_eq!(&buf[..n], b"after reload");

    // Revoked: mallory's allocation ended with the reload, and cannot be refreshed.
    assert_eq!(refresh_code(&mut mallory), Some(401), "mallory is revoked");
    // The old secret is gone, the new one works.
    assert_eq!(
        allocate_code(&mut client(&turnd, OLD_SECRET, "bob")),
        Some(401)
    );
    assert_eq!(allocate_code(&mut client(&turnd, NEW_SECRET, "bob")), None);
    // The credential endpoint now needs the key.
    assert_eq!(credentials_status(&turnd).0, 401);

    // A broken file is refused, naming the key; the configuration in force stays.
    write(&format!(
        "secret = [\"{OLD_SECRET}\"]\nallow_peer = [\"not-a-range\"]\n"
    ));
    turnd.signal(libc::SIGHUP);
    turnd.wait_for_log("reload refused");
    assert!(turnd.log().contains("allow_peer"), "{}", turnd.log());
    assert_eq!(
        allocate_code(&mut client(&turnd, OLD_SECRET, "carol")),
        Some(401)
    );
    assert_eq!(
        allocate_code(&mut client(&turnd, NEW_SECRET, "carol")),
        None
    );
    assert_eq!(refresh_code(&mut alice), None);
    assert_eq!(credentials_status(&turnd).0, 401);
}

/// `--strict-expiry` reaches the credential check the workers use: an allocation's expired
/// REST credential is refused with the flag and still accepted without it (coturn's
/// behaviour). What the server then answers a Refresh is proven over injected time, without
/// waiting for a credential to expire, by proto/tests/abuse.rs
/// `strict_expiry_refuses_an_expired_credential_on_its_own_allocation`.
#[test]
fn strict_expiry_flag_reaches_the_credential_check() {
    use clap::Parser;
    let base = [
        "turnd",
        "serve",
        "--listen",
        "127.0.0.1:3478",
        "--relay-ip",
        "127.0.0.1",
    ];
    for (flag, strict) in [(None, false), (Some("--strict-expiry"), true)] {
        let cli = turnd::cli::Cli::try_parse_from(base.into_iter().chain(flag)).unwrap();
        let turnd::cli::Cmd::Serve(settings) = cli.command else {
            panic!("not serve: {:?}", cli.command)
        };
        let config = turnd::config::Config::from_settings(&settings).unwrap();
        let credentials = turnd::serve::credentials(&config);
        let now = turnd::clock::unix_now();
        let check = |expiry: u64| credentials.still_valid(&format!("{expiry}:alice"), "alice", now);
        assert_eq!(
            check(now - 1),
            if strict {
                Err(turnd_proto::auth::AuthFailure::ExpiredOnAllocation)
            } else {
                Ok(())
            },
            "strict_expiry = {strict}"
        );
        assert_eq!(
            check(now + 600),
            Ok(()),
            "a valid credential, strict_expiry = {strict}"
        );
    }
}
