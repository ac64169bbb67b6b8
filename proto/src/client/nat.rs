//! NAT behaviour discovery (RFC 5780 §4), sans-IO: the caller owns one UDP socket and the
//! clock, passes datagrams and time in, and sends what [`Discovery::poll_transmit`] hands out.
//! Each probe is a Binding [`Transaction`] (retransmitted on the schedule it is given).
//!
//! The order matters. Filtering is tested before mapping (RFC 5780 §4.5 warns that tests are
//! sensitive to the state earlier tests left in the NAT): the mapping tests
//! send to the alternate address, which would open an address-dependent filter to it and make
//! the filtering tests that follow see answers they should not.
//!
//! 1. Test I (§4.2, §4.3): a Binding to the server. No answer: UDP does not reach it. The
//!    answer gives the mapped address and, from an RFC 5780 server, OTHER-ADDRESS.
//! 2. Filtering (§4.4): CHANGE-REQUEST "change IP and port" answered → endpoint-independent
//!    filtering; else "change port" answered → address-dependent; else address-and-port.
//! 3. Mapping (§4.3): a Binding to the alternate IP (primary port); the same mapped address as
//!    test I → endpoint-independent mapping; else one to the alternate IP and port: the same
//!    as the last → address-dependent, else address-and-port-dependent.
//! 4. Hairpinning (RFC 4787 §6 defines it): a Binding request to our own
//!    mapped address; it arriving back on the socket means the NAT hairpins.

use super::{request, Attr, ClientAuth, Timing, Transaction, TransactionIds};
use crate::wire::{attr, Class, Message, Method};
use std::net::SocketAddr;
use std::time::Instant;

/// A NAT's mapping or filtering behaviour (RFC 4787 §4.1, §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// The same for every remote endpoint.
    EndpointIndependent,
    /// Depends on the remote IP address.
    AddressDependent,
    /// Depends on the remote IP address and port.
    AddressAndPortDependent,
}

impl Behaviour {
    /// The RFC 4787 name, hyphenated ("endpoint-independent", ...).
    pub fn label(self) -> &'static str {
        match self {
            Behaviour::EndpointIndependent => "endpoint-independent",
            Behaviour::AddressDependent => "address-dependent",
            Behaviour::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

/// What discovery found. `None` fields were not measured (UDP did not get through, or the
/// server does not do RFC 5780).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Whether the server answered a Binding over UDP at all.
    pub udp: bool,
    /// The mapped (server-reflexive) address test I saw.
    pub mapped: Option<SocketAddr>,
    /// The server's OTHER-ADDRESS: present when it does RFC 5780.
    pub other: Option<SocketAddr>,
    /// Whether there is a NAT: the mapped address is not the local one (`None` when the local
    /// address is not known or nothing was mapped).
    pub nat: Option<bool>,
    /// Mapping behaviour.
    pub mapping: Option<Behaviour>,
    /// Filtering behaviour.
    pub filtering: Option<Behaviour>,
    /// Whether the NAT hairpins (`None` without a NAT, or without UDP).
    pub hairpinning: Option<bool>,
}

/// What the findings mean for WebRTC, in one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Endpoint-independent mapping: server-reflexive candidates work for other peers.
    Direct,
    /// Endpoint-dependent mapping: each peer sees another port; only a relay connects.
    NeedsRelay,
    /// UDP does not reach the server but TCP does: only TURN over TCP/TLS.
    TcpOnly,
    /// Nothing reaches the server.
    Blocked,
    /// UDP works but the server cannot tell the mapping (no RFC 5780).
    Unknown,
    /// UDP works and the server does RFC 5780, but its alternate address (OTHER-ADDRESS) did
    /// not answer, so the mapping could not be measured: usually a firewall in front of the
    /// server that opens the primary address only.
    AlternateSilent,
}

impl Verdict {
    /// From a report and whether a Binding over TCP got through (`None`: not tried).
    pub fn of(report: &Report, tcp: Option<bool>) -> Verdict {
        if !report.udp {
            return if tcp == Some(true) {
                Verdict::TcpOnly
            } else {
                Verdict::Blocked
            };
        }
        match report.mapping {
            Some(Behaviour::EndpointIndependent) => Verdict::Direct,
            Some(_) => Verdict::NeedsRelay,
            None if report.other.is_some() => Verdict::AlternateSilent,
            None => Verdict::Unknown,
        }
    }

    /// A stable key for JSON ("direct", "relay", "tcp-only", "blocked", "unknown",
    /// "alternate-silent").
    pub fn key(self) -> &'static str {
        match self {
            Verdict::Direct => "direct",
            Verdict::NeedsRelay => "relay",
            Verdict::TcpOnly => "tcp-only",
            Verdict::Blocked => "blocked",
            Verdict::Unknown => "unknown",
            Verdict::AlternateSilent => "alternate-silent",
        }
    }

    /// The one-line meaning, the same in the CLI and the browser page.
    pub fn meaning(self) -> &'static str {
        match self {
            Verdict::Direct => "direct connections can work from here",
            Verdict::NeedsRelay => "peers behind this NAT need a relay",
            Verdict::TcpOnly => "only TURN over TCP/TLS gets out",
            Verdict::Blocked => "nothing reaches the server: no STUN or TURN gets out",
            Verdict::Unknown => {
                "UDP gets out; the server cannot tell the NAT's mapping (no RFC 5780 support)"
            }
            Verdict::AlternateSilent => {
                "UDP gets out; the server's alternate address did not answer, so the NAT's \
                 mapping is unknown (is the alternate IP and port open in the server's firewall?)"
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    TestI,
    FilterII,
    FilterIII,
    MapII,
    MapIII,
    Hairpin,
    Done,
}

/// One discovery run against one server.
#[derive(Debug)]
pub struct Discovery {
    server: SocketAddr,
    local: Option<SocketAddr>,
    timing: Timing,
    ids: TransactionIds,
    auth: ClientAuth,
    step: Step,
    /// The probe in flight and where it goes.
    probe: Option<(Transaction, SocketAddr)>,
    /// The mapped address of the last mapping test.
    last_mapped: Option<SocketAddr>,
    report: Report,
}

impl Discovery {
    /// Starts discovery against `server` from a socket bound at `local` (its real address if
    /// known: with it, the report tells whether there is a NAT at all). Each probe waits as
    /// `timing` says; `seed` draws transaction ids (from the OS in real use).
    pub fn new(
        server: SocketAddr,
        local: Option<SocketAddr>,
        timing: Timing,
        seed: u64,
        now: Instant,
    ) -> Self {
        let mut d = Discovery {
            server,
            local,
            timing,
            ids: TransactionIds::new(seed),
            auth: ClientAuth::default(),
            step: Step::TestI,
            probe: None,
            last_mapped: None,
            report: Report::default(),
        };
        d.start(Step::TestI, now);
        d
    }

    fn start(&mut self, step: Step, now: Instant) {
        self.step = step;
        let other = self.report.other;
        let (to, attrs) = match (step, other) {
            (Step::TestI, _) => (self.server, vec![]),
            (Step::FilterII, Some(_)) => (
                self.server,
                vec![change(attr::CHANGE_IP | attr::CHANGE_PORT)],
            ),
            (Step::FilterIII, Some(_)) => (self.server, vec![change(attr::CHANGE_PORT)]),
            (Step::MapII, Some(o)) => (SocketAddr::new(o.ip(), self.server.port()), vec![]),
            (Step::MapIII, Some(o)) => (o, vec![]),
            (Step::Hairpin, _) => match self.report.mapped {
                Some(m) if self.report.nat != Some(false) => (m, vec![]),
                _ => return self.start(Step::Done, now),
            },
            _ => {
                self.probe = None;
                self.step = Step::Done;
                return;
            }
        };
        let t = Transaction::new(
            Method::BINDING,
            &attrs,
            None,
            false,
            self.timing,
            &mut self.ids,
            now,
        );
        self.probe = Some((t, to));
    }

    /// A datagram to send now: its destination and bytes.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        let (t, to) = self.probe.as_mut()?;
        let to = *to;
        t.poll_transmit(now).map(|b| (to, b.to_vec()))
    }

    /// When to call [`Discovery::handle_timeout`]; `None` when done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.probe.as_ref()?.0.poll_timeout()
    }

    /// Time passed: retransmits, or ends the probe in flight without an answer.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((t, _)) = self.probe.as_mut() {
            t.handle_timeout(now);
            if let Some(outcome) = t.poll_outcome() {
                self.finish(outcome.ok(), now);
            }
        }
    }

    /// A datagram arrived on the socket.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        let Some((t, _)) = self.probe.as_mut() else {
            return;
        };
        if self.step == Step::Hairpin {
            // Our own request, back through the NAT.
            let ours = Message::parse(bytes).is_ok_and(|m| {
                m.class() == Class::Request && m.transaction_id() == t.transaction_id()
            });
            if ours {
                self.report.hairpinning = Some(true);
                self.start(Step::Done, now);
            }
            return;
        }
        if t.handle_input(bytes, now, &mut self.auth, &mut self.ids) {
            if let Some(outcome) = t.poll_outcome() {
                self.finish(outcome.ok(), now);
            }
        }
    }

    /// The findings, once done.
    pub fn report(&self) -> Option<&Report> {
        (self.step == Step::Done).then_some(&self.report)
    }

    /// The findings so far (for a caller that gives up early).
    pub fn partial(&self) -> &Report {
        &self.report
    }

    /// The probe in flight ended: `answer` is its success response, if any.
    fn finish(&mut self, answer: Option<Vec<u8>>, now: Instant) {
        let success = answer.as_deref().and_then(|b| {
            let m = Message::parse(b).ok()?;
            (m.class() == Class::Success).then_some(m)
        });
        let mapped = success
            .as_ref()
            .and_then(|m| super::address(m, attr::XOR_MAPPED_ADDRESS));
        let r = &mut self.report;
        let next = match self.step {
            Step::TestI => {
                r.udp = answer.is_some();
                let Some(m) = success else {
                    return self.start(Step::Done, now);
                };
                r.mapped = mapped;
                r.nat = self.local.zip(mapped).map(|(l, m)| l != m);
                r.other = m.get(attr::OTHER_ADDRESS).and_then(attr::read_address);
                self.last_mapped = mapped;
                if r.other.is_some() {
                    Step::FilterII
                } else {
                    Step::Hairpin
                }
            }
            Step::FilterII if success.is_some() => {
                r.filtering = Some(Behaviour::EndpointIndependent);
                Step::MapII
            }
            Step::FilterII => Step::FilterIII,
            Step::FilterIII => {
                r.filtering = Some(if success.is_some() {
                    Behaviour::AddressDependent
                } else {
                    Behaviour::AddressAndPortDependent
                });
                Step::MapII
            }
            Step::MapII => match mapped {
                Some(m) if Some(m) == r.mapped => {
                    r.mapping = Some(Behaviour::EndpointIndependent);
                    Step::Hairpin
                }
                Some(m) => {
                    self.last_mapped = Some(m);
                    Step::MapIII
                }
                None => Step::Hairpin,
            },
            Step::MapIII => {
                r.mapping = match mapped {
                    Some(m) if Some(m) == self.last_mapped => Some(Behaviour::AddressDependent),
                    Some(_) => Some(Behaviour::AddressAndPortDependent),
                    None => None,
                };
                Step::Hairpin
            }
            Step::Hairpin => {
                r.hairpinning = Some(false);
                Step::Done
            }
            Step::Done => Step::Done,
        };
        self.start(next, now);
    }
}

fn change(flags: u8) -> Attr {
    Attr::Raw(attr::CHANGE_REQUEST, vec![0, 0, 0, flags])
}

/// A bare Binding request (for a TCP reachability check, say).
pub fn binding_request(ids: &mut TransactionIds) -> Vec<u8> {
    request(Method::BINDING, ids.next_id(), &[], None, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_mapping_and_reachability() {
        let mut r = Report::default();
        assert_eq!(Verdict::of(&r, Some(true)), Verdict::TcpOnly);
        assert_eq!(Verdict::of(&r, Some(false)), Verdict::Blocked);
        r.udp = true;
        assert_eq!(Verdict::of(&r, None), Verdict::Unknown);
        r.mapping = Some(Behaviour::EndpointIndependent);
        assert_eq!(Verdict::of(&r, None), Verdict::Direct);
        r.mapping = Some(Behaviour::AddressAndPortDependent);
        assert_eq!(
            Verdict::of(&r, None).meaning(),
            "peers behind this NAT need a relay"
        );
        // An RFC 5780 server whose alternate address is silent is not "no RFC 5780".
        r.mapping = None;
        r.other = Some("192.0.2.2:3479".parse().unwrap());
        assert_eq!(Verdict::of(&r, None), Verdict::AlternateSilent);
    }
}
