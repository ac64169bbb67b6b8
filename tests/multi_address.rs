//! A server host with several addresses on one interface, and turnd on its default wildcard
//! UDP listeners (0.0.0.0:3478, [::]:3478): every response and every relayed packet must leave
//! from the address the client sent to, or a NAT or firewall in front of the client drops it
//! (RFC 8656 §2: the server's address is part of the 5-tuple). Two namespaces joined by a veth
//! pair stand in for the server host and the client's network; nothing leaves them.

mod common;

use common::netns::NetNs;
use common::{rest, settings, UdpTurnClient};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;
use turnd_proto::client::{self, Attr};
use turnd_proto::wire::{attr, Message, Method, TransactionId};

/// The server host: two addresses of each family on one interface.
const SERVER_V4: [&str; 2] = ["10.99.0.2", "10.99.0.3"];
const SERVER_V6: [&str; 2] = ["fd99::2", "fd99::3"];
const CHANNEL: u16 = 0x4000;

/// Both namespaces, the veth between them, and turnd started in the server's with the default
/// listeners. The namespaces outlive turnd (dropped after it, in reverse order of the tuple).
fn multi_address_host(tag: &str) -> Option<(turnd::serve::Running, NetNs, NetNs)> {
    let server = NetNs::create(&format!("{tag}s"))?;
    let client = NetNs::create(&format!("{tag}c"))?;
    NetNs::veth(&server, "srv0", &client, "cli0");
    for ip in SERVER_V4 {
        server.ip(&["addr", "add", &format!("{ip}/24"), "dev", "srv0"]);
    }
    for ip in SERVER_V6 {
        server.ip(&["addr", "add", &format!("{ip}/64"), "dev", "srv0", "nodad"]);
    }
    client.ip(&["addr", "add", "10.99.0.1/24", "dev", "cli0"]);
    client.ip(&["addr", "add", "fd99::1/64", "dev", "cli0", "nodad"]);

    let mut s = settings();
    s.listen = None; // the defaults: wildcards on 3478
    s.relay_ip = Some(vec![SERVER_V4[0].into(), SERVER_V6[0].into()]);
    s.relay_ports = Some("50000-50999".into());
    s.allow_peer = Some(vec!["10.99.0.1/32".into(), "fd99::1/128".into()]);
    let config = turnd::config::Config::from_settings(&s).expect("valid config");
    let running = server.run(move || turnd::serve::start(&config).expect("turnd starts"));
    let mut listening = running.udp.clone();
    listening.sort();
    assert_eq!(
        listening,
        ["0.0.0.0:3478", "[::]:3478"].map(|a| a.parse::<SocketAddr>().unwrap()),
        "the default listeners are wildcards"
    );
    Some((running, server, client))
}

/// One client address, talking to both of the server's addresses of its family: two 5-tuples,
/// two allocations. Checks that every response (challenge, Allocate, CreatePermission,
/// ChannelBind, Binding) and every relayed Data indication and ChannelData comes from the
/// server address that client sent to. Runs inside the client's namespace.
fn one_family(client_ip: &str, servers: [&str; 2]) {
    let sock = UdpSocket::bind(SocketAddr::new(client_ip.parse().unwrap(), 0)).unwrap();
    let peer = UdpSocket::bind(SocketAddr::new(client_ip.parse().unwrap(), 0)).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let peer_addr = peer.local_addr().unwrap();

    // UdpTurnClient checks every response's source address against `server`.
    let mut clients: Vec<UdpTurnClient> = servers
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let (user, pass) = rest(&format!("multi-{client_ip}-{i}"), 600);
            let to = SocketAddr::new(ip.parse().unwrap(), 3478);
            UdpTurnClient::with_socket(sock.try_clone().unwrap(), to, &user, &pass)
        })
        .collect();
    let mut relayed = Vec::new();
    for c in &mut clients {
        let binding = c.request(Method::BINDING, &[]);
        let mapped = client::address(&Message::parse(&binding).unwrap(), attr::XOR_MAPPED_ADDRESS);
        assert_eq!(mapped, Some(sock.local_addr().unwrap()));
        // Relayed in the client's family (RFC 8656 §7.1: REQUESTED-ADDRESS-FAMILY, 2 = IPv6).
        let family = if c.server.is_ipv6() { 2 } else { 1 };
        let allocated = c.request(
            Method::ALLOCATE,
            &[Attr::RequestedTransport(17), Attr::RequestedFamily(family)],
        );
        relayed.push(common::relayed_address(&allocated));
    }
    assert_ne!(
        relayed[0], relayed[1],
        "one client address to two server addresses is two allocations"
    );
    for (c, relayed) in clients.iter_mut().zip(&relayed) {
        let what = format!("{} → {}", sock.local_addr().unwrap(), c.server);
        let ok = c.request(Method::CREATE_PERMISSION, &[Attr::Peer(peer_addr)]);
        assert_eq!(UdpTurnClient::code(&ok), None, "{what}: CreatePermission");

        // Send indication out, Data indication back.
        let ind = client::send_indication(TransactionId([7; 12]), peer_addr, b"out by send");
        c.sock.send_to(&ind, c.server).unwrap();
        assert_eq!(peer_recv(&peer), (b"out by send".to_vec(), *relayed));
        peer.send_to(b"back as data", relayed).unwrap();
        let (bytes, from) = client_recv(c);
        assert_eq!(from, c.server, "{what}: the Data indication's source");
        let msg = Message::parse(&bytes).expect("a Data indication");
        assert_eq!(msg.method(), Method::DATA, "{what}");
        assert_eq!(msg.get(attr::DATA), Some(&b"back as data"[..]), "{what}");

        // ChannelData both ways (with a channel bound, the peer's data comes back in one).
        let ok = c.request(
            Method::CHANNEL_BIND,
            &[Attr::Channel(CHANNEL), Attr::Peer(peer_addr)],
        );
        assert_eq!(UdpTurnClient::code(&ok), None, "{what}: ChannelBind");
        let cd = client::channel_data(CHANNEL, b"out by channel", false);
        c.sock.send_to(&cd, c.server).unwrap();
        assert_eq!(peer_recv(&peer), (b"out by channel".to_vec(), *relayed));
        peer.send_to(b"back by channel", relayed).unwrap();
        let (bytes, from) = client_recv(c);
        assert_eq!(from, c.server, "{what}: the ChannelData's source");
        assert_eq!(
            bytes,
            client::channel_data(CHANNEL, b"back by channel", false),
            "{what}"
        );
    }
}

fn peer_recv(peer: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = peer
        .recv_from(&mut buf)
        .expect("the peer receives within 3 s");
    (buf[..n].to_vec(), from)
}

fn client_recv(c: &UdpTurnClient) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = c.sock.recv_from(&mut buf).expect("relayed data within 3 s");
    (buf[..n].to_vec(), from)
}

#[test]
fn replies_and_relayed_data_leave_from_the_address_the_client_used() {
    let Some((running, _server, client)) = multi_address_host("ma") else {
        return;
    };
    client.run(|| one_family("10.99.0.1", SERVER_V4));
    client.run(|| one_family("fd99::1", SERVER_V6));
    // Four server addresses, four 5-tuples, four allocations.
    assert_eq!(running.ledger.total(), 4);
    drop(running);
}
