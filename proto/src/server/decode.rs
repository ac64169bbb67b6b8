//! Typed requests: each TURN method's attributes read and checked into a struct before any
//! state is touched, or refused with the error code the RFC gives for what is wrong.
//!
//! A decoder looks at the message alone (and, for channel numbers, at one configuration
//! flag): nothing here reads or changes allocations, quotas or ports. Handlers then only
//! decide, with types that cannot say anything malformed. What depends on state (437 when
//! there is no allocation, an unknown reservation token, a family the server does not relay)
//! is the handler's to say, in the RFC's order: a handler checks its allocation first and
//! reports a decoding failure after that, as RFC 8656 §7.2 lists the checks.
//!
//! The comprehension-required attributes no decoder understands are found by
//! [`UnknownAttributes::of`] (RFC 8489 §6.3.1 → 420).

use super::reject::Reject;
use crate::wire::{attr, AttrType, ChannelNumber, Family, Message};
use std::net::SocketAddr;

/// At most this many types are listed in UNKNOWN-ATTRIBUTES: the answer stays small.
const MAX_UNKNOWN: usize = 16;

/// The comprehension-required attribute types a request carries that this server does not
/// understand, in order of appearance, repeats in a row folded, at most [`MAX_UNKNOWN`].
#[derive(Debug, Clone, Copy)]
pub(super) struct UnknownAttributes {
    types: [AttrType; MAX_UNKNOWN],
    len: usize,
}

impl UnknownAttributes {
    /// The unknown comprehension-required attributes of `msg`; None when there are none.
    pub fn of(msg: &Message<'_>) -> Option<UnknownAttributes> {
        Self::of_except(msg, &[])
    }

    /// Like [`UnknownAttributes::of`], with `known` understood too (the RFC 5780 attributes,
    /// which only Binding understands).
    pub fn of_except(msg: &Message<'_>, known: &[u16]) -> Option<UnknownAttributes> {
        let mut u = UnknownAttributes {
            types: [AttrType(0); MAX_UNKNOWN],
            len: 0,
        };
        let unknown = |a: &crate::wire::message::RawAttribute<'_>| {
            !a.typ.is_understood() && !known.contains(&a.typ.0)
        };
        for a in msg.attributes().filter(unknown) {
            if u.len == MAX_UNKNOWN {
                break;
            }
            if u.len == 0 || u.types[u.len - 1] != a.typ {
                u.types[u.len] = a.typ;
                u.len += 1;
            }
        }
        (u.len > 0).then_some(u)
    }

    /// The types, in order.
    pub fn types(&self) -> &[AttrType] {
        &self.types[..self.len]
    }
}

/// How an Allocate asks for its relay port (RFC 8656 §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PortRequest {
    Any,
    /// EVEN-PORT without the R bit.
    Even,
    /// EVEN-PORT with the R bit: an even port, and the next one reserved.
    EvenReserveNext,
    /// RESERVATION-TOKEN: the port a reservation holds. None for a token of the wrong length,
    /// which no reservation matches (508, like any unknown token).
    Reserved(Option<[u8; 8]>),
}

/// Which address families an Allocate asks to relay (RFC 8656 §7.2, RFC 6156).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FamilyRequest {
    /// REQUESTED-ADDRESS-FAMILY, or IPv4 when absent.
    One(Family),
    /// ADDITIONAL-ADDRESS-FAMILY IPv6: an IPv4 relay and, if the server has one, an IPv6 relay.
    Dual,
    /// With RESERVATION-TOKEN: the family of the reserved port.
    OfReservation,
}

/// An Allocate request (RFC 8656 §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AllocateRequest {
    pub port: PortRequest,
    pub families: FamilyRequest,
    /// LIFETIME in seconds, if present and well-formed.
    pub lifetime: Option<u32>,
    /// DONT-FRAGMENT (RFC 8656 §7.2: relayed with the DF bit set).
    pub dont_fragment: bool,
}

impl AllocateRequest {
    /// RFC 8656 §7.2's syntax checks, in its order.
    pub fn decode(msg: &Message<'_>) -> Result<AllocateRequest, Reject> {
        // §7.2 step 3: REQUESTED-TRANSPORT must be there and must be UDP (442 otherwise).
        match msg.get(attr::REQUESTED_TRANSPORT) {
            Some(v) if v.len() == 4 && v[0] == attr::TRANSPORT_UDP => {}
            Some(v) if v.len() == 4 => return Err(Reject::UnsupportedTransportProtocol),
            _ => return Err(Reject::BadRequest),
        }
        let requested = msg.get(attr::REQUESTED_ADDRESS_FAMILY);
        let additional = msg.get(attr::ADDITIONAL_ADDRESS_FAMILY);
        let even_port = msg.get(attr::EVEN_PORT);
        let token = msg.get(attr::RESERVATION_TOKEN);
        if token.is_some() && (even_port.is_some() || requested.is_some() || additional.is_some()) {
            // §7.2: RESERVATION-TOKEN excludes EVEN-PORT and the family attributes (400).
            return Err(Reject::BadRequest);
        }
        let port = match (token, even_port) {
            (Some(t), _) => PortRequest::Reserved(t.try_into().ok()),
            (None, None) => PortRequest::Any,
            (None, Some([flags, ..])) if flags & attr::EVEN_PORT_RESERVE == 0 => PortRequest::Even,
            (None, Some([_, ..])) => PortRequest::EvenReserveNext,
            (None, Some([])) => return Err(Reject::BadRequest),
        };
        let families = match (requested, additional) {
            // §7.2: both family attributes at once is 400.
            (Some(_), Some(_)) => return Err(Reject::BadRequest),
            (None, None) if token.is_some() => FamilyRequest::OfReservation,
            (None, None) => FamilyRequest::One(Family::V4),
            // An unknown family asked for is 440 (RFC 8656 §7.2).
            (Some(v), None) => {
                FamilyRequest::One(attr::read_family(v).ok_or(Reject::AddressFamilyNotSupported)?)
            }
            // ADDITIONAL-ADDRESS-FAMILY may only name IPv6 (§7.2: 400 otherwise).
            (None, Some(v)) => match attr::read_family(v) {
                Some(Family::V6) => FamilyRequest::Dual,
                _ => return Err(Reject::BadRequest),
            },
        };
        Ok(AllocateRequest {
            port,
            families,
            lifetime: msg.get(attr::LIFETIME).and_then(attr::read_u32),
            dont_fragment: msg.get(attr::DONT_FRAGMENT).is_some(),
        })
    }
}

/// A Refresh request (RFC 8656 §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RefreshRequest {
    /// LIFETIME in seconds, if present and well-formed; 0 deletes the allocation.
    pub lifetime: Option<u32>,
    /// REQUESTED-ADDRESS-FAMILY: the relay whose family must match (443 otherwise).
    pub family: Option<Family>,
}

impl RefreshRequest {
    pub fn decode(msg: &Message<'_>) -> Result<RefreshRequest, Reject> {
        let family = match msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            None => None,
            // §7.3: a family that does not match the allocation's is 443; one that is not a
            // family at all matches none.
            Some(v) => Some(attr::read_family(v).ok_or(Reject::PeerAddressFamilyMismatch)?),
        };
        Ok(RefreshRequest {
            lifetime: msg.get(attr::LIFETIME).and_then(attr::read_u32),
            family,
        })
    }
}

/// A CreatePermission request (RFC 8656 §9.2): one or more peers, all or none installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PermissionRequest {
    pub peers: Vec<SocketAddr>,
}

impl PermissionRequest {
    pub fn decode(msg: &Message<'_>) -> Result<PermissionRequest, Reject> {
        let tid = msg.transaction_id();
        let peers = msg
            .attributes()
            .filter(|a| a.typ == attr::XOR_PEER_ADDRESS)
            .map(|a| attr::read_xor_address(a.value, &tid).ok_or(Reject::BadRequest))
            .collect::<Result<Vec<_>, _>>()?;
        if peers.is_empty() {
            // §9.2: at least one XOR-PEER-ADDRESS (400).
            return Err(Reject::BadRequest);
        }
        Ok(PermissionRequest { peers })
    }
}

/// A ChannelBind request (RFC 8656 §11.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChannelBindRequest {
    pub number: ChannelNumber,
    pub peer: SocketAddr,
}

impl ChannelBindRequest {
    /// `legacy`: RFC 5766's 0x5000-0x7FFF are accepted too (`legacy_channel_numbers`).
    pub fn decode(msg: &Message<'_>, legacy: bool) -> Result<ChannelBindRequest, Reject> {
        let raw = msg
            .get(attr::CHANNEL_NUMBER)
            .and_then(attr::read_channel_number)
            .ok_or(Reject::BadRequest)?;
        // §11.2: a number outside 0x4000-0x4FFF is 400; one in RFC 5766's wider range says
        // why in its reason phrase.
        let number = match ChannelNumber::new(raw) {
            Some(n) if legacy || n.is_rfc8656() => n,
            Some(_) => return Err(Reject::ChannelNumberOutOfRange),
            None => return Err(Reject::BadRequest),
        };
        let peer = msg
            .get(attr::XOR_PEER_ADDRESS)
            .and_then(|v| attr::read_xor_address(v, &msg.transaction_id()))
            .ok_or(Reject::BadRequest)?;
        Ok(ChannelBindRequest { number, peer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{request, Attr};
    use crate::wire::{Method, TransactionId};

    fn allocate(attrs: &[Attr]) -> Result<AllocateRequest, Reject> {
        let bytes = request(Method::ALLOCATE, TransactionId([1; 12]), attrs, None, false);
        AllocateRequest::decode(&Message::parse(&bytes).unwrap())
    }

    const UDP: Attr = Attr::RequestedTransport(17);

    /// RFC 8656 §7.2: each malformed Allocate gets its own code, before any state is read.
    #[test]
    fn allocate_rejections_carry_their_codes() {
        use Reject::*;
        let token = || Attr::Raw(attr::RESERVATION_TOKEN, vec![1; 8]);
        let even = |b: u8| Attr::Raw(attr::EVEN_PORT, vec![b, 0, 0, 0]);
        let cases: [(Vec<Attr>, Reject); 8] = [
            (vec![], BadRequest),
            (
                vec![Attr::RequestedTransport(6)],
                UnsupportedTransportProtocol,
            ),
            (vec![UDP, token(), even(0)], BadRequest),
            (vec![UDP, token(), Attr::RequestedFamily(1)], BadRequest),
            (vec![UDP, Attr::Raw(attr::EVEN_PORT, vec![])], BadRequest),
            (
                vec![UDP, Attr::RequestedFamily(1), Attr::AdditionalFamily(2)],
                BadRequest,
            ),
            (
                vec![UDP, Attr::RequestedFamily(3)],
                AddressFamilyNotSupported,
            ),
            (vec![UDP, Attr::AdditionalFamily(1)], BadRequest),
        ];
        for (attrs, want) in cases {
            assert_eq!(allocate(&attrs), Err(want), "{attrs:?}");
        }
    }

    #[test]
    fn allocate_decodes_ports_families_and_options() {
        let ok = allocate(&[UDP, Attr::Lifetime(900)]).unwrap();
        assert_eq!(ok.port, PortRequest::Any);
        assert_eq!(ok.families, FamilyRequest::One(Family::V4));
        assert_eq!((ok.lifetime, ok.dont_fragment), (Some(900), false));
        let even = |b: u8| Attr::Raw(attr::EVEN_PORT, vec![b, 0, 0, 0]);
        assert_eq!(allocate(&[UDP, even(0)]).unwrap().port, PortRequest::Even);
        assert_eq!(
            allocate(&[UDP, even(0x80)]).unwrap().port,
            PortRequest::EvenReserveNext
        );
        let t = allocate(&[UDP, Attr::Raw(attr::RESERVATION_TOKEN, vec![7; 8])]).unwrap();
        assert_eq!(t.port, PortRequest::Reserved(Some([7; 8])));
        assert_eq!(t.families, FamilyRequest::OfReservation);
        let short = allocate(&[UDP, Attr::Raw(attr::RESERVATION_TOKEN, vec![7; 4])]).unwrap();
        assert_eq!(short.port, PortRequest::Reserved(None));
        let dual = allocate(&[UDP, Attr::AdditionalFamily(2)]).unwrap();
        assert_eq!(dual.families, FamilyRequest::Dual);
        let v6 = allocate(&[UDP, Attr::RequestedFamily(2)]).unwrap();
        assert_eq!(v6.families, FamilyRequest::One(Family::V6));
        let df = allocate(&[UDP, Attr::Raw(attr::DONT_FRAGMENT, vec![])]).unwrap();
        assert!(df.dont_fragment);
    }

    fn parsed(method: Method, attrs: &[Attr]) -> Vec<u8> {
        request(method, TransactionId([4; 12]), attrs, None, false)
    }

    /// RFC 8656 §7.3: a family that is not one matches no relay (443); LIFETIME is optional.
    #[test]
    fn refresh_decodes_its_family_and_lifetime() {
        let refresh = |attrs: &[Attr]| {
            RefreshRequest::decode(&Message::parse(&parsed(Method::REFRESH, attrs)).unwrap())
        };
        assert_eq!(
            refresh(&[Attr::RequestedFamily(9)]),
            Err(Reject::PeerAddressFamilyMismatch)
        );
        let r = refresh(&[Attr::RequestedFamily(2), Attr::Lifetime(0)]).unwrap();
        assert_eq!((r.family, r.lifetime), (Some(Family::V6), Some(0)));
        assert_eq!(refresh(&[]).unwrap().lifetime, None);
    }

    /// RFC 8656 §9.2: every XOR-PEER-ADDRESS must be readable, and there must be one (400).
    #[test]
    fn create_permission_needs_readable_peers() {
        let permit = |attrs: &[Attr]| {
            let bytes = parsed(Method::CREATE_PERMISSION, attrs);
            PermissionRequest::decode(&Message::parse(&bytes).unwrap())
        };
        let (a, b) = (
            "192.0.2.9:7".parse().unwrap(),
            "[2001:db8::9]:7".parse().unwrap(),
        );
        assert_eq!(permit(&[]), Err(Reject::BadRequest));
        let bad = Attr::Raw(attr::XOR_PEER_ADDRESS, vec![0, 3, 0, 0]);
        assert_eq!(permit(&[Attr::Peer(a), bad]), Err(Reject::BadRequest));
        let both = permit(&[Attr::Peer(a), Attr::Peer(b)]).unwrap();
        assert_eq!(both.peers, vec![a, b]);
    }

    #[test]
    fn channel_numbers_outside_the_range_are_refused_by_kind() {
        let bind = |n: u16, legacy: bool| {
            let attrs = [Attr::Channel(n), Attr::Peer("192.0.2.9:7".parse().unwrap())];
            let bytes = request(
                Method::CHANNEL_BIND,
                TransactionId([2; 12]),
                &attrs,
                None,
                false,
            );
            ChannelBindRequest::decode(&Message::parse(&bytes).unwrap(), legacy)
        };
        assert_eq!(bind(0x4001, false).unwrap().number.get(), 0x4001);
        assert_eq!(bind(0x5000, false), Err(Reject::ChannelNumberOutOfRange));
        assert_eq!(bind(0x5000, true).unwrap().number.get(), 0x5000);
        assert_eq!(bind(0x3FFF, true), Err(Reject::BadRequest));
        assert_eq!(bind(0x8000, false), Err(Reject::BadRequest));
    }

    #[test]
    fn unknown_attributes_are_listed_once_in_a_row_and_capped() {
        let mut attrs = vec![Attr::Raw(0x0099, vec![]), Attr::Raw(0x0099, vec![])];
        attrs.extend((0..20).map(|i| Attr::Raw(0x0100 + i, vec![])));
        attrs.push(Attr::Raw(0x8099, vec![]));
        let bytes = request(Method::BINDING, TransactionId([3; 12]), &attrs, None, false);
        let u = UnknownAttributes::of(&Message::parse(&bytes).unwrap()).unwrap();
        assert_eq!(u.types().len(), MAX_UNKNOWN);
        assert_eq!(u.types()[..2], [AttrType(0x0099), AttrType(0x0100)]);
        let fine = request(Method::BINDING, TransactionId([3; 12]), &[UDP], None, false);
        assert!(UnknownAttributes::of(&Message::parse(&fine).unwrap()).is_none());
    }
}
