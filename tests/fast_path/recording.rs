//! What a run records: per socket, every datagram in arrival order (canonical bytes, named
//! sources), and every control answer; and how two recordings are compared.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use turnd_proto::client as tc;
use turnd_proto::wire::{attr, Class, Message, MessageEncoder, Method, TransactionId};

/// One datagram as it reached a socket: the script phase it was read in, who sent it (a
/// name, the same in both runs: relay ports are random), and its bytes (a STUN message's
/// transaction id, which turnd picks at random for Data indications, zeroed and its XOR
/// addresses re-encoded for the zero id; everything else verbatim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Arrival {
    pub(crate) phase: u32,
    pub(crate) from: String,
    pub(crate) bytes: Vec<u8>,
}

impl std::fmt::Display for Arrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: String = self
            .bytes
            .iter()
            .take(48)
            .map(|b| format!("{b:02x}"))
            .collect();
        write!(
            f,
            "[phase {}] from {} {} bytes {hex}{}",
            self.phase,
            self.from,
            self.bytes.len(),
            if self.bytes.len() > 48 { "…" } else { "" }
        )
    }
}

/// An answer to a control request: `label` (phase, client, method, peer) and its error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) phase: u32,
    pub(crate) label: String,
    pub(crate) code: Option<u16>,
}

/// Everything a run saw, per socket in arrival order, and every control answer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Recording {
    pub(crate) arrivals: BTreeMap<String, Vec<Arrival>>,
    pub(crate) answers: Vec<Answer>,
}

/// The zero transaction id canonical STUN messages carry.
pub(crate) const ZERO_TID: TransactionId = TransactionId([0; 12]);

/// A STUN message with its transaction id zeroed and its XOR addresses re-encoded for the
/// zero id; None when `b` is not STUN.
pub(crate) fn canonical_stun(b: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::parse(b).ok()?;
    let tid = msg.transaction_id();
    let mut out = b.to_vec();
    out[8..20].fill(0);
    let mut at = turnd_proto::wire::HEADER_LEN;
    while at + 4 <= out.len() {
        let typ = u16::from_be_bytes([out[at], out[at + 1]]);
        let len = u16::from_be_bytes([out[at + 2], out[at + 3]]) as usize;
        let value = at + 4..(at + 4 + len).min(out.len());
        if matches!(
            typ,
            attr::XOR_PEER_ADDRESS | attr::XOR_RELAYED_ADDRESS | attr::XOR_MAPPED_ADDRESS
        ) {
            if let Some(a) = attr::read_xor_address(&b[value.clone()], &tid) {
                attr::write_xor_address(&mut out[value], &a, &ZERO_TID);
            }
        }
        at += 4 + turnd_proto::wire::padded(len);
    }
    Some(out)
}

/// The Data indication turnd must send for `data` from `peer` (RFC 8656 §10.3), canonical.
pub(crate) fn data_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = MessageEncoder::new(&mut out, Method::DATA, Class::Indication, ZERO_TID);
    enc.xor_address(attr::XOR_PEER_ADDRESS, peer);
    enc.attr(attr::DATA, data);
    enc.finish();
    out
}

pub(crate) fn channel_data(number: u16, data: &[u8]) -> Vec<u8> {
    tc::channel_data(number, data, false)
}

/// The differences between two recordings, at most a few per socket, for a readable failure.
pub(crate) fn differences(what: (&str, &str), a: &Recording, b: &Recording) -> Vec<String> {
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> =
        a.arrivals.keys().chain(b.arrivals.keys()).collect();
    for k in keys {
        let (x, y) = (
            a.arrivals.get(k).map_or(&[][..], Vec::as_slice),
            b.arrivals.get(k).map_or(&[][..], Vec::as_slice),
        );
        if x == y {
            continue;
        }
        let at = x
            .iter()
            .zip(y)
            .position(|(p, q)| p != q)
            .unwrap_or(x.len().min(y.len()));
        let show = |s: &[Arrival]| s.get(at).map_or("nothing".to_owned(), |a| a.to_string());
        out.push(format!(
            "{k}: {} vs {} arrivals; first difference at #{at}:\n    {}: {}\n    {}: {}",
            x.len(),
            y.len(),
            what.0,
            show(x),
            what.1,
            show(y)
        ));
    }
    if a.answers != b.answers {
        for (p, q) in a
            .answers
            .iter()
            .zip(&b.answers)
            .filter(|(p, q)| p != q)
            .take(5)
        {
            out.push(format!("answer: {}: {p:?} vs {}: {q:?}", what.0, what.1));
        }
        if a.answers.len() != b.answers.len() {
            out.push(format!(
                "answers: {} vs {}",
                a.answers.len(),
                b.answers.len()
            ));
        }
    }
    out
}

/// Only what precedes protocol second `until`.
pub(crate) fn before_phase(r: &Recording, until: u32) -> Recording {
    Recording {
        arrivals: r
            .arrivals
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.iter().filter(|a| a.phase < until).cloned().collect(),
                )
            })
            .collect(),
        answers: r
            .answers
            .iter()
            .filter(|a| a.phase < until)
            .cloned()
            .collect(),
    }
}

/// What reached a client: the channel (None for a Data indication) and the application data.
pub(crate) fn client_data(a: &Arrival) -> (Option<u16>, Vec<u8>) {
    match Message::parse(&a.bytes) {
        Ok(m) => (None, m.get(attr::DATA).unwrap_or_default().to_vec()),
        Err(_) => match turnd_proto::wire::channel_data::parse(&a.bytes) {
            Some(cd) => (Some(cd.channel), cd.data.to_vec()),
            None => (None, Vec::new()),
        },
    }
}

/// Application bytes of what reached a client: ChannelData's data, a Data indication's DATA.
pub(crate) fn client_payload_len(a: &Arrival) -> u64 {
    client_data(a).1.len() as u64
}
