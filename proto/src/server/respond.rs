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
use crate::wire::{attr, Class, MessageEncoder, Method, TransactionId};

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

    fn encode(
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
        unknown: &[u16],
    ) {
        if auth.is_none() && !self.error_limiter.allow(req.client.remote.ip(), now.mono) {
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
        if auth.is_none() && bytes.len() > MAX_AMPLIFICATION.saturating_mul(req.len) {
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
