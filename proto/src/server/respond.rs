//! Writing responses: one place decides which integrity and fingerprint attributes a response
//! carries, so every handler answers the same way.
//!
//! * A response to an authenticated request carries MESSAGE-INTEGRITY, or
//!   MESSAGE-INTEGRITY-SHA256 if that is what the request used (RFC 8489 §9.2.4).
//! * A response carries FINGERPRINT when the request did.
//! * 401 and 438 carry REALM and a fresh NONCE and nothing that could make them large.
//! * Unauthenticated error responses are rate-limited per source address (`source_limit.rs`).

use super::authenticate::Authed;
use super::reject::Reject;
use super::{ClientId, Command, Now, Server};
use crate::source_key::source_key;
use crate::wire::{attr, AttrType, Class, MessageEncoder, Method, TransactionId};

/// What a response needs to know about the request it answers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Request {
    pub client: ClientId,
    pub method: Method,
    pub tid: TransactionId,
    pub fingerprint: bool,
    /// Bytes of the request on the wire: an unauthenticated answer may be at most
    /// [`MAX_AMPLIFICATION`] times this.
    pub len: usize,
}

/// The largest answer to an unauthenticated request, as a multiple of the request's size
/// (REFERENCES.md: reflection). A request too small to pay for its challenge (a bare 20-byte
/// header; every real client's first Allocate carries at least REQUESTED-TRANSPORT) is dropped.
pub const MAX_AMPLIFICATION: usize = 4;

/// The smallest request a real client sends first: a header and REQUESTED-TRANSPORT (20 + 8
/// bytes, the minimal Allocate of RFC 8656 §7.1). It must always get its 401, whatever the
/// realm; smaller requests (a bare header) are held to [`MAX_AMPLIFICATION`] alone.
pub const MIN_CHALLENGED_REQUEST: usize = 28;

/// What any request of at least [`MIN_CHALLENGED_REQUEST`] bytes may be answered with,
/// unauthenticated: 8 × 28. A 401 or 438 with the longest realm the configuration allows
/// (127 bytes, RFC 8489 §14.9), a 32-byte nonce and FINGERPRINT is 216 bytes, so the
/// challenge always goes out; the amplification is at most 8×, and the per-source error
/// limiter bounds the rate. Without this floor a realm over 32 characters silenced the 401
/// to a minimal Allocate.
pub const CHALLENGE_FLOOR: usize = 224;

/// The most bytes an unauthenticated answer to a `request_len`-byte request may have.
pub fn answer_budget(request_len: usize) -> usize {
    let budget = MAX_AMPLIFICATION.saturating_mul(request_len);
    if request_len >= MIN_CHALLENGED_REQUEST {
        budget.max(CHALLENGE_FLOOR)
    } else {
        budget
    }
}

impl Server {
    /// Encodes a response and queues it. Returns a copy of the bytes when `keep` (the
    /// Allocate success response is cached for retransmissions).
    pub(super) fn respond(
        &mut self,
        req: &Request,
        class: Class,
        auth: Option<&Authed>,
        keep: bool,
        body: impl FnOnce(&mut MessageEncoder),
    ) -> Option<Vec<u8>> {
        let bytes = Self::encode(req, class, auth, body);
        let kept = keep.then(|| bytes.clone());
        self.commands.push_back(Command::SendToClient {
            client: req.client,
            bytes,
        });
        kept
    }

    pub(super) fn encode(
        req: &Request,
        class: Class,
        auth: Option<&Authed>,
        body: impl FnOnce(&mut MessageEncoder),
    ) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(128);
        let mut enc = MessageEncoder::new(&mut bytes, req.method, class, req.tid);
        body(&mut enc);
        if let Some(a) = auth {
            if a.sha256 {
                enc.message_integrity_sha256(a.key.as_bytes());
            } else {
                enc.message_integrity(a.key.as_bytes());
            }
        }
        if req.fingerprint {
            enc.fingerprint();
        } else {
            enc.finish();
        }
        bytes
    }

    /// Answers `req` with an error response and counts it.
    pub(super) fn reject(
        &mut self,
        req: &Request,
        reject: Reject,
        auth: Option<&Authed>,
        now: Now,
    ) {
        self.reject_with(req, reject, auth, now, &[]);
    }

    /// Like [`Server::reject`]; `unknown` lists the attributes of a 420.
    pub(super) fn reject_with(
        &mut self,
        req: &Request,
        reject: Reject,
        auth: Option<&Authed>,
        now: Now,
        unknown: &[AttrType],
    ) {
        self.send_error(req, reject, auth, now, unknown, true);
    }

    /// Sends an error response (rate-limited when unauthenticated); with `report`, reports
    /// it as a refusal unless it is the 401 challenge every client's first request gets.
    pub(super) fn send_error(
        &mut self,
        req: &Request,
        reject: Reject,
        auth: Option<&Authed>,
        now: Now,
        unknown: &[AttrType],
        report: bool,
    ) {
        if report && reject != Reject::Unauthorized {
            self.emit(super::Event::RequestRefused {
                client: req.client,
                method: req.method,
                code: reject.code(),
                reason: reject.reason(),
            });
        }
        let source = source_key(req.client.remote.ip(), self.config.ipv6_source_prefix);
        if auth.is_none() && !self.error_limiter.allow(source, now.mono) {
            // Unauthenticated and over this source's budget: the source may be forged.
            self.stats.error_responses_suppressed += 1;
            return;
        }
        let challenge = matches!(reject, Reject::Unauthorized | Reject::StaleNonce);
        let (realm, nonce) = if challenge {
            let nonce = self.nonces.issue(req.client.remote.ip(), now.unix);
            (self.config.realm.clone(), nonce)
        } else {
            (String::new(), String::new())
        };
        // 401 and 438 are never integrity-protected: the client's credentials were not accepted.
        let auth = if challenge { None } else { auth };
        let bytes = Self::encode(req, Class::Error, auth, |enc| {
            enc.error_code(attr::ERROR_CODE, 0, reject.code(), reject.reason());
            if challenge {
                enc.attr(attr::REALM, realm.as_bytes());
                enc.attr(attr::NONCE, nonce.as_bytes());
            }
            if !unknown.is_empty() {
                enc.unknown_attributes(unknown);
            }
        });
        if auth.is_none() && bytes.len() > answer_budget(req.len) {
            // Counted with the rate-limited ones; the shell logs when this count grows.
            self.stats.error_responses_suppressed += 1;
            return;
        }
        self.stats.error_responses[reject.index()] += 1;
        self.commands.push_back(Command::SendToClient {
            client: req.client,
            bytes,
        });
    }
}
