//! The long-term credential mechanism on the server side (RFC 8489 §9.2.4).
//!
//! Checks run in the RFC's order, cheapest first, so a forged request costs little:
//! no MESSAGE-INTEGRITY → 401 challenge; USERNAME, REALM or NONCE missing → 400; a nonce we did
//! not issue to this address, or an expired one → 438 with a fresh nonce; an unknown or
//! expired username → 401; integrity mismatch → 401.
//!
//! A request on an existing allocation from the same username is checked with the key cached
//! in the allocation: no password derivation, and a REST credential that expired after the
//! allocation was made can still refresh it (as coturn does) unless `--strict-expiry` is set.
//! A revoked username or user id (`--revoke`) is refused on both paths, so a leaked credential
//! can neither allocate nor refresh; the reload that revokes it also ends the allocations it
//! already has (`credential_check.rs`), as it does for a removed secret or static user.

use super::reject::Reject;
use super::{ClientId, Now, Server};
use crate::auth::{AuthFailure, LongTermKey, PasswordAlgorithm, MAX_USERNAME_LEN};
use crate::wire::{attr, Message};

/// An authenticated request: who sent it and the key its response is protected with.
#[derive(Debug, Clone)]
pub(super) struct Authed {
    pub username: String,
    pub user_id: String,
    pub key: LongTermKey,
    pub sha256: bool,
}

impl Server {
    /// Counts and reports a failed authentication.
    pub(super) fn auth_failed(&mut self, client: &ClientId, why: AuthFailure) {
        self.stats.auth_failures[why.index()] += 1;
        self.emit(super::Event::AuthFailed {
            client: *client,
            reason: why,
        });
    }

    /// Authenticates a TURN request, or says how to refuse it.
    pub(super) fn authenticate(
        &mut self,
        now: Now,
        client: &ClientId,
        msg: &Message<'_>,
    ) -> Result<Authed, Reject> {
        if !msg.has_integrity() {
            // The normal first round of every client: not counted as a failure.
            return Err(Reject::Unauthorized);
        }
        let (Some(username), Some(_realm), Some(nonce)) = (
            msg.get(attr::USERNAME),
            msg.get(attr::REALM),
            msg.get(attr::NONCE),
        ) else {
            self.auth_failed(client, AuthFailure::MissingAttributes);
            return Err(Reject::BadRequest);
        };
        if self.nonces.check(nonce, client.remote.ip(), now.unix) != crate::auth::NonceCheck::Valid
        {
            self.auth_failed(client, AuthFailure::StaleNonce);
            return Err(Reject::StaleNonce);
        }
        let username = match std::str::from_utf8(username) {
            Ok(u) if u.len() <= MAX_USERNAME_LEN => u,
            _ => {
                self.auth_failed(client, AuthFailure::UnknownUser);
                return Err(Reject::Unauthorized);
            }
        };
        let algorithm = match msg.get(attr::PASSWORD_ALGORITHM) {
            None => PasswordAlgorithm::Md5,
            Some(v) if v.len() >= 4 && v[..2] == [0, 1] => PasswordAlgorithm::Md5,
            Some(v) if v.len() >= 4 && v[..2] == [0, 2] => PasswordAlgorithm::Sha256,
            Some(_) => return Err(Reject::BadRequest),
        };
        let sha256 = msg.has_integrity_sha256();
        let verify = |key: &LongTermKey| {
            if sha256 {
                msg.verify_integrity_sha256(key.as_bytes())
            } else {
                msg.verify_integrity(key.as_bytes())
            }
        };

        if let Some(a) = self.allocations.of_client(client) {
            let cached_alg = match a.key {
                LongTermKey::Md5(_) => PasswordAlgorithm::Md5,
                LongTermKey::Sha256(_) => PasswordAlgorithm::Sha256,
            };
            if a.username == username && cached_alg == algorithm && verify(&a.key) {
                let (user, user_id) = (a.username.clone(), a.user_id.clone());
                if let Err(why) = self
                    .config
                    .credentials
                    .still_valid(&user, &user_id, now.unix)
                {
                    self.auth_failed(client, why);
                    return Err(Reject::Unauthorized);
                }
                let Some(a) = self.allocations.of_client(client) else {
                    return Err(Reject::Unauthorized);
                };
                return Ok(Authed {
                    username: a.username.clone(),
                    user_id: a.user_id.clone(),
                    key: a.key.clone(),
                    sha256,
                });
            }
        }

        let (principal, passwords) = match self.config.credentials.candidates(username, now.unix) {
            Ok(c) => c,
            Err(why) => {
                self.auth_failed(client, why);
                return Err(Reject::Unauthorized);
            }
        };
        for password in &passwords {
            let key = LongTermKey::derive(algorithm, username, &self.config.realm, password);
            if verify(&key) {
                return Ok(Authed {
                    username: username.to_owned(),
                    user_id: principal.user_id,
                    key,
                    sha256,
                });
            }
        }
        self.auth_failed(client, AuthFailure::BadIntegrity);
        Err(Reject::Unauthorized)
    }
}
