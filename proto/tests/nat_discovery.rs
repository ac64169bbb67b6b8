//! The NAT discovery client (`client::nat`) against the sans-IO server, through simulated NATs:
//! no NAT, a port-restricted cone (one mapping per socket, replies only from where it sent) and
//! a symmetric NAT (one mapping per destination). The netns test (tests/nat_behaviour.rs) does
//! the same through Linux's NAT; this one needs no root and runs in milliseconds.

mod harness;

use harness::{config, Harness};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use turnd_proto::client::nat::{Behaviour, Discovery, Report, Verdict};
use turnd_proto::client::Timing;
use turnd_proto::server::StunAlternate;
use turnd_proto::{ClientId, Command, Transport};

#[derive(Clone, Copy, PartialEq)]
enum Nat {
    None,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestrictedCone,
    /// Address-and-port-dependent mapping and filtering.
    Symmetric,
}

const LOCAL: &str = "10.0.0.2:5000";
const PUBLIC_IP: &str = "198.51.100.1";

fn discover(nat: Nat, rfc5780: bool) -> Report {
    let mut cfg = config();
    let alt = StunAlternate {
        primary: "192.0.2.1:3478".parse().unwrap(),
        alternate: "192.0.2.2:3479".parse().unwrap(),
    };
    cfg.udp_listeners = alt.addresses().to_vec();
    cfg.stun_alternate = rfc5780.then_some(alt);
    let mut h = Harness::new(cfg);
    let local: SocketAddr = LOCAL.parse().unwrap();
    let mut mappings: BTreeMap<SocketAddr, SocketAddr> = BTreeMap::new(); // destination → public
    let mut sent_to: BTreeSet<SocketAddr> = BTreeSet::new();
    let timing = Timing::unreliable()
        .with_rto(Duration::from_millis(100))
        .with_timeout(Duration::from_millis(500));
    let t0 = Instant::now();
    let mut now = t0;
    let mut d = Discovery::new(alt.primary, Some(local), timing, 7, now);
    for _ in 0..1000 {
        if let Some(r) = d.report() {
            return r.clone();
        }
        while let Some((to, bytes)) = d.poll_transmit(now) {
            sent_to.insert(to);
            let public = match nat {
                Nat::None => local,
                Nat::PortRestrictedCone => SocketAddr::new(PUBLIC_IP.parse().unwrap(), 40000),
                Nat::Symmetric => {
                    let n = mappings.len() as u16;
                    *mappings
                        .entry(to)
                        .or_insert_with(|| SocketAddr::new(PUBLIC_IP.parse().unwrap(), 41000 + n))
                }
            };
            let Some(listener) = alt.addresses().iter().position(|a| *a == to) else {
                continue; // hairpin: the simulated NAT does not hairpin
            };
            let client = ClientId {
                transport: Transport::Udp,
                local: listener as u32,
                remote: public,
                local_ip: to.ip(),
            };
            h.server.handle_client_datagram(h.now, client, &bytes);
            while let Some(cmd) = h.server.poll_command() {
                let Command::SendToClient { client, bytes } = cmd else {
                    continue;
                };
                let from = SocketAddr::new(
                    client.local_ip,
                    alt.addresses()[client.local as usize].port(),
                );
                let allowed = nat == Nat::None || sent_to.contains(&from);
                if allowed {
                    d.handle_input(&bytes, now);
                }
            }
        }
        now = d.poll_timeout().unwrap_or(now + Duration::from_millis(10));
        d.handle_timeout(now);
    }
    panic!("discovery did not finish");
}

#[test]
fn no_nat_is_open() {
    let r = discover(Nat::None, true);
    assert_eq!(r.nat, Some(false));
    assert_eq!(r.mapping, Some(Behaviour::EndpointIndependent));
    assert_eq!(r.filtering, Some(Behaviour::EndpointIndependent));
    assert_eq!(Verdict::of(&r, None), Verdict::Direct);
}

#[test]
fn a_port_restricted_cone_maps_independently_and_filters_by_address_and_port() {
    let r = discover(Nat::PortRestrictedCone, true);
    assert_eq!(r.nat, Some(true));
    assert_eq!(r.mapping, Some(Behaviour::EndpointIndependent));
    assert_eq!(r.filtering, Some(Behaviour::AddressAndPortDependent));
    assert_eq!(r.hairpinning, Some(false));
    assert_eq!(Verdict::of(&r, None), Verdict::Direct);
}

#[test]
fn a_symmetric_nat_needs_a_relay() {
    let r = discover(Nat::Symmetric, true);
    assert_eq!(r.mapping, Some(Behaviour::AddressAndPortDependent));
    assert_eq!(r.filtering, Some(Behaviour::AddressAndPortDependent));
    assert_eq!(Verdict::of(&r, None), Verdict::NeedsRelay);
}

#[test]
fn without_rfc5780_only_reachability_and_the_mapped_address_are_known() {
    let r = discover(Nat::PortRestrictedCone, false);
    assert!(r.udp);
    assert_eq!(r.other, None);
    assert_eq!(r.mapping, None);
    assert_eq!(r.filtering, None);
    assert_eq!(Verdict::of(&r, None), Verdict::Unknown);
}
