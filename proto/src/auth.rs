//! Credentials: TURN REST credentials, static users, long-term keys and stateless nonces.
//!
//! TURN REST credentials (draft-uberti-behave-turn-rest-00): the username is
//! `<expiry-unix-seconds>:<user-id>` and the password is `base64(HMAC-SHA1(secret, username))`.
//! Anyone holding the shared secret (turnd's HTTP endpoint, an app backend) can mint them, and
//! the server verifies them without storing anything. Several secrets are accepted at once so
//! one can be rotated out while credentials minted with it are still in use.
//!
//! The long-term credential mechanism (RFC 8489 §9.2) then keys MESSAGE-INTEGRITY with
//! `MD5(username ":" realm ":" password)` (or SHA-256 of the same when PASSWORD-ALGORITHM says so).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::digest;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use subtle::ConstantTimeEq;

/// The largest username we accept (RFC 8489 §14.3 allows 509 bytes; REST usernames are short).
pub const MAX_USERNAME_LEN: usize = 509;

/// The longest user id a REST username may carry (`<expiry>:<user-id>`), so the longest REST
/// username is 20 + 1 + 128 = 149 bytes. The HTTP API mints no longer ones, and the server
/// refuses longer ones minted elsewhere: a user id is a quota key, kept per allocation.
pub const MAX_REST_USER_ID: usize = 128;

/// A minted TURN REST credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestCredential {
    /// The USERNAME a client sends: `expiry:user_id`.
    pub username: String,
    /// The password: base64 HMAC-SHA1 of the username under the shared secret.
    pub password: String,
    /// Seconds from minting to expiry.
    pub ttl: u64,
    /// Unix seconds at which the credential stops working.
    pub expires_at: u64,
}

/// Mints a REST credential for `user_id`, valid for `ttl` seconds from `now_unix`. This one
/// function serves the HTTP endpoint, `turnd credentials` and the tests.
pub fn mint_rest_credential(
    secret: &[u8],
    user_id: &str,
    now_unix: u64,
    ttl: u64,
) -> RestCredential {
    let expires_at = now_unix.saturating_add(ttl);
    let username = format!("{expires_at}:{user_id}");
    let password = rest_password(secret, &username);
    RestCredential {
        username,
        password,
        ttl,
        expires_at,
    }
}

/// `base64(HMAC-SHA1(secret, username))`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Splits a REST username into its expiry and user id. None if it is not of that form. A bare
/// expiry (no `:user-id`) is accepted with an empty user id, as coturn does (its
/// `turnutils_uclient -W` sends that when no user is given); all such credentials share one
/// quota bucket. A user id over [`MAX_REST_USER_ID`] bytes is not a REST username.
pub fn parse_rest_username(username: &str) -> Option<(u64, &str)> {
    let (expiry, user_id) = username.split_once(':').unwrap_or((username, ""));
    if expiry.is_empty() || expiry.len() > 20 || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if user_id.len() > MAX_REST_USER_ID {
        return None;
    }
    Some((expiry.parse().ok()?, user_id))
}

/// `H(username ":" realm ":" password)`, the long-term key of RFC 8489 §9.2.2.
fn long_term_key<D: Digest>(username: &str, realm: &str, password: &str) -> digest::Output<D> {
    let mut h = D::new();
    for (i, part) in [username, realm, password].iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(part.as_bytes());
    }
    h.finalize()
}

/// The MD5 long-term key (RFC 8489 §9.2.2).
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    long_term_key::<Md5>(username, realm, password).into()
}

/// The SHA-256 long-term key (RFC 8489 §9.2.2, PASSWORD-ALGORITHM 0x0002).
pub(crate) fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    long_term_key::<Sha256>(username, realm, password).into()
}

/// Which hash turns a password into a long-term key (RFC 8489 §18.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PasswordAlgorithm {
    /// MD5, RFC 8489's default (and the only one most clients know).
    Md5,
    /// SHA-256 (RFC 8489 §18.5.1.2).
    Sha256,
}

/// A long-term key: the bytes MESSAGE-INTEGRITY(-SHA256) are keyed with.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum LongTermKey {
    /// An MD5 key, for MESSAGE-INTEGRITY.
    Md5([u8; 16]),
    /// A SHA-256 key, for MESSAGE-INTEGRITY-SHA256.
    Sha256([u8; 32]),
}

impl LongTermKey {
    /// The key of `username` in `realm` with `password`, hashed with `alg`.
    pub fn derive(alg: PasswordAlgorithm, username: &str, realm: &str, password: &str) -> Self {
        match alg {
            PasswordAlgorithm::Md5 => {
                LongTermKey::Md5(long_term_key_md5(username, realm, password))
            }
            PasswordAlgorithm::Sha256 => {
                LongTermKey::Sha256(long_term_key_sha256(username, realm, password))
            }
        }
    }
    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            LongTermKey::Md5(k) => k,
            LongTermKey::Sha256(k) => k,
        }
    }
}

impl std::fmt::Debug for LongTermKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LongTermKey(..)")
    }
}

/// Why a username cannot authenticate. Each is a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Neither a static user nor a REST username we can check.
    UnknownUser,
    /// A REST credential whose expiry has passed.
    Expired,
    /// A REST credential that expires further ahead than `max_ttl` allows.
    TtlTooLong,
    /// MESSAGE-INTEGRITY did not match any candidate password.
    BadIntegrity,
    /// The NONCE was not one we issued to this address, or it expired (answered 438).
    StaleNonce,
    /// The request had MESSAGE-INTEGRITY but lacked USERNAME, REALM or NONCE (answered 400).
    MissingAttributes,
    /// A request on an allocation used a different username than the one that created it (441).
    WrongCredentials,
    /// The username or its user id is on the revocation list (`--revoke`).
    Revoked,
    /// A REST credential that expired, used on an allocation it created (`--strict-expiry`).
    ExpiredOnAllocation,
}

impl AuthFailure {
    /// Every reason, in [`AuthFailure::index`] order (metrics walk it).
    pub const ALL: [AuthFailure; 9] = [
        AuthFailure::UnknownUser,
        AuthFailure::Expired,
        AuthFailure::TtlTooLong,
        AuthFailure::BadIntegrity,
        AuthFailure::StaleNonce,
        AuthFailure::MissingAttributes,
        AuthFailure::WrongCredentials,
        AuthFailure::Revoked,
        AuthFailure::ExpiredOnAllocation,
    ];
    /// The metric label for this reason.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::Expired => "expired",
            AuthFailure::TtlTooLong => "ttl_too_long",
            AuthFailure::BadIntegrity => "bad_integrity",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::MissingAttributes => "missing_attributes",
            AuthFailure::WrongCredentials => "wrong_credentials",
            AuthFailure::Revoked => "revoked",
            AuthFailure::ExpiredOnAllocation => "expired_on_allocation",
        }
    }
    /// The reason's position in [`AuthFailure::ALL`] (a counter array index).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Who a username belongs to, for quotas: the REST user id, or the static user's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The REST user id, or the static user's name: what quotas count by.
    pub user_id: String,
    /// Unix seconds the credential expires at (None for static users).
    pub expires_at: Option<u64>,
}

/// The credentials the server accepts: REST secrets and static users, usable together.
#[derive(Clone, Default)]
pub struct Credentials {
    secrets: Vec<Vec<u8>>,
    /// Static users by name, with their passwords (ASCII, so SASLprep is the identity).
    static_users: HashMap<String, String>,
    /// The furthest ahead a REST credential may expire, in seconds (inclusive).
    max_ttl: u64,
    /// Usernames and user ids refused even with a valid MAC (a leaked credential, a banned
    /// user). Checked on every authenticated request, cached keys included.
    revoked: HashSet<String>,
    /// Refuse requests on an allocation once its REST credential has expired. Off by default,
    /// as in coturn: a client may keep refreshing an allocation it made while the credential
    /// was valid (browsers do not re-fetch credentials mid-call).
    strict_expiry: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets or passwords.
        f.debug_struct("Credentials")
            .field("secrets", &self.secrets.len())
            .field(
                "static_users",
                &self.static_users.keys().collect::<Vec<_>>(),
            )
            .field("max_ttl", &self.max_ttl)
            .field("revoked", &self.revoked.len())
            .field("strict_expiry", &self.strict_expiry)
            .finish()
    }
}

impl Credentials {
    /// `secrets` verify REST credentials (the first also mints), `static_users` maps
    /// username → password, and `max_ttl` caps how far ahead a REST credential may expire.
    pub fn new(secrets: Vec<Vec<u8>>, static_users: HashMap<String, String>, max_ttl: u64) -> Self {
        Credentials {
            secrets,
            static_users,
            max_ttl,
            revoked: HashSet::new(),
            strict_expiry: false,
        }
    }

    /// Refuses these usernames and user ids from now on (each entry matches either).
    pub fn with_revoked(mut self, revoked: impl IntoIterator<Item = String>) -> Self {
        self.revoked = revoked.into_iter().collect();
        self
    }

    /// Refuses requests on an allocation after its REST credential expired.
    pub fn with_strict_expiry(mut self, strict: bool) -> Self {
        self.strict_expiry = strict;
        self
    }

    /// Whether a credential already proven (its key cached in an allocation) may still be used:
    /// not revoked, and with strict expiry, not expired.
    pub fn still_valid(
        &self,
        username: &str,
        user_id: &str,
        now_unix: u64,
    ) -> Result<(), AuthFailure> {
        if self.is_revoked(username, user_id) {
            return Err(AuthFailure::Revoked);
        }
        if self.strict_expiry && !self.static_users.contains_key(username) {
            if let Some((expiry, _)) = parse_rest_username(username) {
                if expiry < now_unix {
                    return Err(AuthFailure::ExpiredOnAllocation);
                }
            }
        }
        Ok(())
    }

    /// Whether a username or its user id is on the revocation list.
    pub fn is_revoked(&self, username: &str, user_id: &str) -> bool {
        !self.revoked.is_empty()
            && (self.revoked.contains(username) || self.revoked.contains(user_id))
    }

    /// Whether a long-term key an allocation cached is still one the configuration would
    /// accept for `username`: the static user's password derives it, or a configured REST
    /// secret does. Expiry and `max_ttl` are not judged (an allocation outlives its
    /// credential's expiry unless `strict_expiry`); a removed secret or user, or a changed
    /// password, is. Called on reload only.
    pub(crate) fn still_verifies(&self, username: &str, realm: &str, key: &LongTermKey) -> bool {
        let alg = match key {
            LongTermKey::Md5(_) => PasswordAlgorithm::Md5,
            LongTermKey::Sha256(_) => PasswordAlgorithm::Sha256,
        };
        let derives = |password: &str| LongTermKey::derive(alg, username, realm, password) == *key;
        if self
            .static_users
            .get(username)
            .is_some_and(|pw| derives(pw))
        {
            return true;
        }
        parse_rest_username(username).is_some()
            && self
                .secrets
                .iter()
                .any(|s| derives(&rest_password(s, username)))
    }

    /// The passwords that may have produced this username's MESSAGE-INTEGRITY: one per REST
    /// secret (rotation), or the static user's. Fails before any MAC is computed when the
    /// username cannot be valid, so forged usernames cost one parse.
    pub fn candidates(
        &self,
        username: &str,
        now_unix: u64,
    ) -> Result<(Principal, Vec<String>), AuthFailure> {
        if let Some(pw) = self.static_users.get(username) {
            if self.is_revoked(username, username) {
                return Err(AuthFailure::Revoked);
            }
            let principal = Principal {
                user_id: username.to_owned(),
                expires_at: None,
            };
            return Ok((principal, vec![pw.clone()]));
        }
        let (expiry, user_id) = parse_rest_username(username).ok_or(AuthFailure::UnknownUser)?;
        if self.secrets.is_empty() {
            return Err(AuthFailure::UnknownUser);
        }
        if self.is_revoked(username, user_id) {
            return Err(AuthFailure::Revoked);
        }
        if expiry < now_unix {
            return Err(AuthFailure::Expired);
        }
        if expiry - now_unix > self.max_ttl {
            return Err(AuthFailure::TtlTooLong);
        }
        let passwords = self
            .secrets
            .iter()
            .map(|s| rest_password(s, username))
            .collect();
        let principal = Principal {
            user_id: user_id.to_owned(),
            expires_at: Some(expiry),
        };
        Ok((principal, passwords))
    }
}

/// Issues and checks stateless nonces: `<expiry as 8 hex digits><MAC as 24 hex digits>`, where
/// the MAC covers the expiry and the client's IP address. Nothing is stored per client, so a
/// flood of unauthenticated requests costs no memory (RFC 8489 §9.2 allows any nonce scheme).
#[derive(Clone)]
pub(crate) struct NonceIssuer {
    key: [u8; 32],
    lifetime_secs: u64,
}

/// The result of checking a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NonceCheck {
    /// Issued by this key to this address, and not expired.
    Valid,
    /// Expired, forged, or issued to another address: answered 438 with a fresh nonce.
    Stale,
}

impl NonceIssuer {
    /// An issuer whose nonces are keyed with `key` and last `lifetime_secs`.
    pub fn new(key: [u8; 32], lifetime_secs: u64) -> Self {
        NonceIssuer { key, lifetime_secs }
    }

    fn tag(&self, expiry: u32, ip: IpAddr) -> [u8; 12] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(&expiry.to_be_bytes());
        match ip {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        let mut out = [0u8; 12];
        out.copy_from_slice(&mac.finalize().into_bytes()[..12]);
        out
    }

    /// A fresh nonce for a client at `ip`.
    pub fn issue(&self, ip: IpAddr, now_unix: u64) -> String {
        let expiry = (now_unix + self.lifetime_secs) as u32;
        let mut s = format!("{expiry:08x}");
        for b in self.tag(expiry, ip) {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Checks a nonce a client at `ip` sent back.
    pub fn check(&self, nonce: &[u8], ip: IpAddr, now_unix: u64) -> NonceCheck {
        if nonce.len() != 32 {
            return NonceCheck::Stale;
        }
        let Some(expiry) = std::str::from_utf8(&nonce[..8])
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
        else {
            return NonceCheck::Stale;
        };
        let mut tag = [0u8; 12];
        for (i, t) in tag.iter_mut().enumerate() {
            let Some(b) = std::str::from_utf8(&nonce[8 + 2 * i..10 + 2 * i])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            else {
                return NonceCheck::Stale;
            };
            *t = b;
        }
        let genuine: bool = self.tag(expiry, ip).ct_eq(&tag).into();
        if genuine && u64::from(expiry) >= now_unix {
            NonceCheck::Valid
        } else {
            NonceCheck::Stale
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credential_matches_the_draft_formula() {
        // The draft's password is base64(HMAC-SHA1(secret, username)); checked against a value
        // computed independently with `openssl dgst -sha1 -hmac secret | base64`.
        let c = mint_rest_credential(b"secret", "alice", 1_700_000_000, 3600);
        assert_eq!(c.username, "1700003600:alice");
        assert_eq!(c.password, rest_password(b"secret", "1700003600:alice"));
        assert_eq!(
            parse_rest_username(&c.username),
            Some((1_700_003_600, "alice"))
        );
        assert_eq!(parse_rest_username("alice"), None);
        assert_eq!(parse_rest_username("1700003600"), Some((1_700_003_600, "")));
        assert_eq!(parse_rest_username(":alice"), None);
        assert_eq!(parse_rest_username("12x:alice"), None);
        let longest = format!("1700003600:{}", "u".repeat(MAX_REST_USER_ID));
        assert!(parse_rest_username(&longest).is_some());
        let too_long = format!("1700003600:{}", "u".repeat(MAX_REST_USER_ID + 1));
        assert_eq!(parse_rest_username(&too_long), None);
    }

    #[test]
    fn max_ttl_is_inclusive_and_expiry_is_refused() {
        let creds = Credentials::new(vec![b"s".to_vec()], HashMap::new(), 86_400);
        let now = 1_000_000;
        assert!(creds
            .candidates(&format!("{}:u", now + 86_400), now)
            .is_ok());
        assert_eq!(
            creds
                .candidates(&format!("{}:u", now + 86_401), now)
                .unwrap_err(),
            AuthFailure::TtlTooLong
        );
        assert_eq!(
            creds
                .candidates(&format!("{}:u", now - 1), now)
                .unwrap_err(),
            AuthFailure::Expired
        );
        assert_eq!(
            creds.candidates("18446744073709551615:u", now).unwrap_err(),
            AuthFailure::TtlTooLong
        );
    }

    #[test]
    fn nonces_are_bound_to_address_and_expire() {
        let issuer = NonceIssuer::new([9; 32], 600);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let n = issuer.issue(ip, 1000);
        assert_eq!(n.len(), 32);
        assert_eq!(issuer.check(n.as_bytes(), ip, 1000), NonceCheck::Valid);
        assert_eq!(issuer.check(n.as_bytes(), ip, 1600), NonceCheck::Valid);
        assert_eq!(issuer.check(n.as_bytes(), ip, 1601), NonceCheck::Stale);
        assert_eq!(issuer.check(n.as_bytes(), other, 1000), NonceCheck::Stale);
        assert_eq!(issuer.check(b"zz", ip, 1000), NonceCheck::Stale);
        let mut forged = n.into_bytes();
        forged[31] = if forged[31] == b'0' { b'1' } else { b'0' };
        assert_eq!(issuer.check(&forged, ip, 1000), NonceCheck::Stale);
    }
}
