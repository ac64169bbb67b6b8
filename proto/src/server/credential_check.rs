//! What a credential authorised, a reload can take away.
//!
//! An allocation caches the long-term key it was made with, so Refresh, CreatePermission and
//! ChannelBind cost no password derivation. That cache must not outlive the credential: after
//! a reload (SIGHUP) that revokes a user, removes the REST secret a credential was minted
//! with, or removes or re-passwords a static user, every allocation that credential made ends
//! at once. Its relay sockets close, so relaying stops within the worker's next batch; its
//! ports and quota come back. Waiting for the allocation to lapse would leave a revoked user
//! relaying for up to its lifetime, and a removed secret's allocations could be refreshed
//! forever.
//!
//! Expiry is not judged here: a REST credential that merely expired keeps the allocation it
//! made (unless `strict_expiry`, which refuses its next Refresh; see `authenticate.rs`).

use super::{ClientId, EndReason, Now, Server};

impl Server {
    /// Ends every allocation (pending ones included) the current credentials no longer
    /// authorise. Runs once per reload, never per packet: one key derivation per allocation
    /// and configured secret.
    pub(super) fn end_unauthorised(&mut self, now: Now) -> Vec<(ClientId, EndReason)> {
        let credentials = &self.config.credentials;
        let realm = &self.config.realm;
        let mut ended = Vec::new();
        for (slot, a) in self.allocations.iter() {
            let reason = if credentials.is_revoked(&a.username, &a.user_id) {
                EndReason::Revoked
            } else if !credentials.still_verifies(&a.username, realm, &a.key) {
                EndReason::CredentialRemoved
            } else {
                continue;
            };
            ended.push((slot, a.client, reason));
        }
        for (slot, _, reason) in &ended {
            self.end_allocation(*slot, *reason, now);
        }
        ended.into_iter().map(|(_, c, r)| (c, r)).collect()
    }
}
