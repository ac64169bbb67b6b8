//! One STUN/TURN client transaction, sans-IO: the caller passes bytes and the time in and gets
//! bytes to send and a deadline out, exactly as it drives the server.
//!
//! A transaction owns the rules every turnd client shares (the self-test peers, the tests, the
//! soak and the benchmark): a fresh transaction id per request, matching the answer by that
//! id, answering a 401 or 438 challenge by sending the request again with the realm and nonce
//! it taught (RFC 8489 §9.2.5: a new transaction, with a new id), and the retransmission
//! schedule of RFC 8489 §6.2.1 over UDP (none over TCP or TLS, §6.2.2).
//!
//! [`Transaction::run`] is the same drive loop for callers that block on a socket; callers
//! with many transactions in flight (the benchmark) call the methods themselves.

use super::{request, Attr, ClientAuth};
use crate::wire::{Class, Message, Method, TransactionId};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

/// RFC 8489 §6.2.1: the default initial retransmission timeout.
pub const INITIAL_RTO: Duration = Duration::from_millis(500);
/// RFC 8489 §6.2.1: Rc, how many times a request is sent over UDP at most.
const RC: u32 = 7;
/// RFC 8489 §6.2.1: Rm, how many initial RTOs to wait after the last send before giving up.
const RM: u32 = 16;
/// RFC 8489 §6.2.2: Ti, the transaction timeout over a reliable transport (39.5 s, the same
/// time the UDP schedule takes).
pub const RELIABLE_TIMEOUT: Duration = Duration::from_millis(39_500);
/// How many challenges (a 401 that teaches realm and nonce, then a 438 stale nonce) one
/// request answers before the error stands.
const MAX_CHALLENGES: u8 = 2;

/// Where transaction ids come from: a seeded stream, so the sans-IO core draws no randomness
/// itself. RFC 8489 §6 wants ids an off-path attacker cannot guess: seed it from the OS (tests
/// may use a fixed seed).
#[derive(Debug, Clone)]
pub struct TransactionIds {
    rng: ChaCha8Rng,
}

impl TransactionIds {
    /// A stream of ids from `seed`.
    pub fn new(seed: u64) -> Self {
        TransactionIds {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The next id.
    pub fn next_id(&mut self) -> TransactionId {
        let mut t = [0u8; 12];
        self.rng.fill_bytes(&mut t);
        TransactionId(t)
    }
}

/// How a transaction waits for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The first retransmission timeout (doubling after each send); `None` on a reliable
    /// transport, where a request is sent once.
    rto: Option<Duration>,
    /// The longest a request waits for its answer.
    timeout: Duration,
}

impl Timing {
    /// UDP: RFC 8489 §6.2.1 (500 ms, doubling, 7 sends, 39.5 s in all).
    pub const fn unreliable() -> Self {
        Timing {
            rto: Some(INITIAL_RTO),
            timeout: RELIABLE_TIMEOUT,
        }
    }

    /// TCP or TLS: sent once, answered within 39.5 s (RFC 8489 §6.2.2).
    pub const fn reliable() -> Self {
        Timing {
            rto: None,
            timeout: RELIABLE_TIMEOUT,
        }
    }

    /// [`Timing::reliable`] for a stream, else [`Timing::unreliable`].
    pub const fn for_stream(stream: bool) -> Self {
        if stream {
            Self::reliable()
        } else {
            Self::unreliable()
        }
    }

    /// The same schedule, giving up after `timeout` (per request sent, challenges included).
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same schedule with another first retransmission timeout (ignored when reliable).
    pub const fn with_rto(mut self, rto: Duration) -> Self {
        if self.rto.is_some() {
            self.rto = Some(rto);
        }
        self
    }
}

/// No answer came in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// The result of a transaction: the final response (success or error response), or no answer.
pub type Outcome = Result<Vec<u8>, TimedOut>;

/// One request until its final answer.
#[derive(Debug)]
pub struct Transaction {
    method: Method,
    attrs: Vec<Attr>,
    authenticated: bool,
    fingerprint: bool,
    timing: Timing,
    tid: TransactionId,
    request: Vec<u8>,
    /// The request waits to be handed out by [`Transaction::poll_transmit`].
    due: bool,
    /// How many times the current request was handed out.
    sends: u32,
    /// When the current request goes out again, if it does.
    retransmit_at: Option<Instant>,
    /// When the current request has failed.
    deadline: Instant,
    challenges: u8,
    outcome: Option<Outcome>,
    finished: bool,
}

impl Transaction {
    /// Starts a request. With `auth` it answers challenges and, once `auth` knows the realm
    /// and nonce, carries MESSAGE-INTEGRITY; without, it is sent bare (a Binding) and any
    /// answer is final. `fingerprint` adds FINGERPRINT.
    pub fn new(
        method: Method,
        attrs: &[Attr],
        auth: Option<&ClientAuth>,
        fingerprint: bool,
        timing: Timing,
        ids: &mut TransactionIds,
        now: Instant,
    ) -> Self {
        let tid = ids.next_id();
        Transaction {
            method,
            attrs: attrs.to_vec(),
            authenticated: auth.is_some(),
            fingerprint,
            timing,
            tid,
            request: request(method, tid, attrs, auth, fingerprint),
            due: true,
            sends: 0,
            retransmit_at: None,
            deadline: now + timing.timeout,
            challenges: 0,
            outcome: None,
            finished: false,
        }
    }

    /// The id of the request now in flight.
    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    /// The request bytes to send now, if a send (the first, a retransmission, or the request
    /// again after a challenge) is due. Call after every `new`/`handle_*`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<&[u8]> {
        if !self.due || self.finished {
            return None;
        }
        self.due = false;
        self.sends += 1;
        self.retransmit_at = None;
        if let Some(rto) = self.timing.rto {
            if self.sends < RC {
                // 500 ms, 1 s, 2 s, ... after each send (RFC 8489 §6.2.1).
                self.retransmit_at = Some(now + rto * (1 << (self.sends - 1)));
            } else {
                // After the last send, wait Rm times the initial RTO.
                self.deadline = self.deadline.min(now + rto * RM);
            }
        }
        Some(&self.request)
    }

    /// When to call [`Transaction::handle_timeout`]; `None` once the outcome is known.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished || self.outcome.is_some() {
            return None;
        }
        Some(match self.retransmit_at {
            Some(at) => at.min(self.deadline),
            None => self.deadline,
        })
    }

    /// Time passed: retransmits when due, fails the transaction at its deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.finished || self.outcome.is_some() {
            return;
        }
        if now >= self.deadline {
            self.outcome = Some(Err(TimedOut));
        } else if self.retransmit_at.is_some_and(|at| now >= at) {
            self.due = true;
        }
    }

    /// Bytes from the server. Returns whether they were this transaction's response; anything
    /// else (relayed data, an indication, the late answer to an earlier id) is the caller's.
    /// A challenge is answered by learning realm/nonce into `auth` and sending the request
    /// again under a new id from `ids`.
    pub fn handle_input(
        &mut self,
        bytes: &[u8],
        now: Instant,
        auth: &mut ClientAuth,
        ids: &mut TransactionIds,
    ) -> bool {
        let Ok(msg) = Message::parse(bytes) else {
            return false;
        };
        let is_response = matches!(msg.class(), Class::Success | Class::Error);
        if !is_response || msg.transaction_id() != self.tid {
            return false;
        }
        if self.finished || self.outcome.is_some() {
            // A retransmission's second answer.
            return true;
        }
        if self.authenticated && self.challenges < MAX_CHALLENGES && auth.retry_after(&msg) {
            self.challenges += 1;
            self.tid = ids.next_id();
            self.request = request(
                self.method,
                self.tid,
                &self.attrs,
                Some(auth),
                self.fingerprint,
            );
            self.due = true;
            self.sends = 0;
            self.retransmit_at = None;
            self.deadline = now + self.timing.timeout;
        } else {
            self.outcome = Some(Ok(bytes.to_vec()));
        }
        true
    }

    /// The outcome, once known; handed out once.
    pub fn poll_outcome(&mut self) -> Option<Outcome> {
        let o = self.outcome.take()?;
        self.finished = true;
        Some(o)
    }

    /// Drives the transaction to its outcome over a blocking [`Exchange`]: the one client loop
    /// every turnd client shares.
    pub fn run<X: Exchange>(
        mut self,
        x: &mut X,
        auth: &mut ClientAuth,
        ids: &mut TransactionIds,
    ) -> Result<Vec<u8>, Failure<X::Error>> {
        loop {
            let now = x.now();
            if let Some(bytes) = self.poll_transmit(now) {
                x.send(bytes).map_err(Failure::Io)?;
            }
            if let Some(outcome) = self.poll_outcome() {
                return outcome.map_err(|TimedOut| Failure::TimedOut);
            }
            let Some(until) = self.poll_timeout() else {
                return Err(Failure::TimedOut);
            };
            match x.recv(until).map_err(Failure::Io)? {
                Some(bytes) => {
                    let now = x.now();
                    if !self.handle_input(&bytes, now, auth, ids) {
                        x.unmatched(bytes);
                    }
                }
                None => self.handle_timeout(x.now()),
            }
        }
    }
}

/// A blocking way to the server, for [`Transaction::run`]: the caller's socket and clock.
pub trait Exchange {
    /// What a failed send or receive reports.
    type Error;
    /// The current time (the core reads no clock).
    fn now(&mut self) -> Instant;
    /// Sends one request to the server.
    fn send(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
    /// The next message from the server, waiting at most until `until`; `None` once it has
    /// passed (or at once, when it already has).
    fn recv(&mut self, until: Instant) -> Result<Option<Vec<u8>>, Self::Error>;
    /// A message that was not the transaction's answer (relayed data, a late response); the
    /// default drops it.
    fn unmatched(&mut self, bytes: Vec<u8>) {
        drop(bytes);
    }
}

/// Why [`Transaction::run`] ended without a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure<E> {
    /// No answer in time.
    TimedOut,
    /// The exchange failed.
    Io(E),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{attr, MessageEncoder};

    fn answer(tid: TransactionId, code: Option<u16>) -> Vec<u8> {
        let mut out = Vec::new();
        let class = if code.is_some() {
            Class::Error
        } else {
            Class::Success
        };
        let mut enc = MessageEncoder::new(&mut out, Method::ALLOCATE, class, tid);
        if let Some(c) = code {
            enc.attr(
                attr::ERROR_CODE,
                &[0, 0, (c / 100) as u8, (c % 100) as u8, b'x'],
            );
            enc.attr(attr::REALM, b"realm");
            enc.attr(attr::NONCE, b"nonce-1");
        }
        enc.finish();
        out
    }

    fn start(timing: Timing, now: Instant) -> (Transaction, ClientAuth, TransactionIds) {
        let mut ids = TransactionIds::new(1);
        let auth = ClientAuth::new("u", "p");
        let t = Transaction::new(
            Method::ALLOCATE,
            &[Attr::RequestedTransport(17)],
            Some(&auth),
            false,
            timing,
            &mut ids,
            now,
        );
        (t, auth, ids)
    }

    #[test]
    fn udp_retransmits_on_the_rfc_schedule_then_times_out() {
        let t0 = Instant::now();
        let (mut t, _, _) = start(Timing::unreliable(), t0);
        let mut sends = vec![];
        let mut now = t0;
        loop {
            if t.poll_transmit(now).is_some() {
                sends.push(now - t0);
            }
            if let Some(o) = t.poll_outcome() {
                assert_eq!(o, Err(TimedOut));
                break;
            }
            now = t.poll_timeout().unwrap();
            t.handle_timeout(now);
        }
        let ms: Vec<u128> = sends.iter().map(|d| d.as_millis()).collect();
        // RFC 8489 §6.2.1's example: 0, 500, 1500, ..., 31500 ms; failure at 39500 ms.
        assert_eq!(ms, [0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!((now - t0).as_millis(), 39_500);
    }

    #[test]
    fn stream_sends_once_and_honours_a_shorter_timeout() {
        let t0 = Instant::now();
        let timing = Timing::reliable().with_timeout(Duration::from_secs(2));
        let (mut t, _, _) = start(timing, t0);
        assert!(t.poll_transmit(t0).is_some());
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        t.handle_timeout(t0 + Duration::from_secs(1));
        assert!(t.poll_transmit(t0 + Duration::from_secs(1)).is_none());
        t.handle_timeout(t0 + Duration::from_secs(2));
        assert_eq!(t.poll_outcome(), Some(Err(TimedOut)));
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn a_challenge_is_answered_under_a_new_id_with_integrity() {
        let t0 = Instant::now();
        let (mut t, mut auth, mut ids) = start(Timing::unreliable(), t0);
        let first = t.poll_transmit(t0).unwrap().to_vec();
        let tid1 = t.transaction_id();
        // Not ours: another id, or not a response.
        assert!(!t.handle_input(
            &answer(TransactionId([0; 12]), None),
            t0,
            &mut auth,
            &mut ids
        ));
        assert!(!t.handle_input(b"junk", t0, &mut auth, &mut ids));
        assert!(t.handle_input(&answer(tid1, Some(401)), t0, &mut auth, &mut ids));
        assert_eq!(auth.nonce.as_deref(), Some("nonce-1"));
        assert!(t.poll_outcome().is_none());
        let second = t.poll_transmit(t0).unwrap().to_vec();
        let tid2 = t.transaction_id();
        assert_ne!(tid1, tid2);
        assert!(!Message::parse(&first).unwrap().has_integrity());
        assert!(Message::parse(&second).unwrap().has_integrity());
        // The late answer to the first id is no longer this transaction's.
        assert!(!t.handle_input(&answer(tid1, None), t0, &mut auth, &mut ids));
        // A second 401 (the credentials are wrong) is final.
        assert!(t.handle_input(&answer(tid2, Some(401)), t0, &mut auth, &mut ids));
        let resp = t.poll_outcome().unwrap().unwrap();
        assert_eq!(
            super::super::error_code(&Message::parse(&resp).unwrap()),
            Some(401)
        );
    }

    #[test]
    fn stale_nonces_are_answered_at_most_twice() {
        let t0 = Instant::now();
        let (mut t, mut auth, mut ids) = start(Timing::reliable(), t0);
        for _ in 0..MAX_CHALLENGES {
            assert!(t.poll_transmit(t0).is_some());
            let tid = t.transaction_id();
            assert!(t.handle_input(&answer(tid, Some(438)), t0, &mut auth, &mut ids));
            assert!(t.poll_outcome().is_none());
        }
        assert!(t.poll_transmit(t0).is_some());
        let tid = t.transaction_id();
        t.handle_input(&answer(tid, Some(438)), t0, &mut auth, &mut ids);
        assert!(t.poll_outcome().unwrap().is_ok(), "the third 438 stands");
    }

    #[test]
    fn without_auth_a_401_is_final() {
        let t0 = Instant::now();
        let mut ids = TransactionIds::new(3);
        let mut auth = ClientAuth::new("u", "p");
        let mut t = Transaction::new(
            Method::BINDING,
            &[],
            None,
            true,
            Timing::unreliable(),
            &mut ids,
            t0,
        );
        assert!(t.poll_transmit(t0).is_some());
        let tid = t.transaction_id();
        assert!(t.handle_input(&answer(tid, Some(401)), t0, &mut auth, &mut ids));
        assert!(t.poll_outcome().unwrap().is_ok());
        assert!(auth.nonce.is_none());
    }
}
