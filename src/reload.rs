//! Configuration reload (SIGHUP): which settings change in place, how they reach the threads
//! that use them, and which need a restart.
//!
//! * Relay workers get new credentials (secrets, users, revocations, strict expiry, max TTL)
//!   and a new peer policy through a [`PolicySlot`]: the signal thread fills it and wakes the
//!   worker, which swaps them into its `proto::Server` between batches. The packet path never
//!   looks at the slot, so it stays lock-free.
//! * The HTTP service and the self-probe read [`Live`] (the minting secret, API keys, CORS
//!   origins, TTLs) once per request.
//! * The TLS certificate is swapped in its `CertStore`.
//!
//! Everything is validated before anything is applied: an invalid file changes nothing.

use crate::config::Config;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use turnd_proto::auth::Credentials;
use turnd_proto::policy::PeerPolicy;

/// The settings the HTTP service and the self-probe read, replaced whole on reload.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    /// The secret that mints credentials (the first configured one).
    pub mint_secret: String,
    pub max_ttl: u64,
    pub default_ttl: u64,
    pub api_keys: Vec<String>,
    pub cors_origins: Vec<String>,
}

impl LiveSettings {
    pub fn from_config(config: &Config) -> Self {
        LiveSettings {
            mint_secret: config.secrets[0].clone(),
            max_ttl: config.max_ttl,
            default_ttl: config.default_ttl,
            api_keys: config.api_keys.clone(),
            cors_origins: config.cors_origins.clone(),
        }
    }
}

/// Shared, replaceable [`LiveSettings`]. Readers take a cheap snapshot.
#[derive(Debug)]
pub struct Live(RwLock<Arc<LiveSettings>>);

impl Live {
    pub fn new(settings: LiveSettings) -> Arc<Live> {
        Arc::new(Live(RwLock::new(Arc::new(settings))))
    }

    /// The settings in force now.
    pub fn get(&self) -> Arc<LiveSettings> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, settings: LiveSettings) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
    }
}

/// New credentials and peer policy waiting for a worker to pick them up.
#[derive(Debug, Default)]
pub struct PolicySlot {
    pending: AtomicBool,
    next: Mutex<Option<(Credentials, PeerPolicy)>>,
}

impl PolicySlot {
    /// Leaves a new policy for the worker (the caller then wakes it).
    pub fn offer(&self, credentials: Credentials, policy: PeerPolicy) {
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = Some((credentials, policy));
        self.pending.store(true, Ordering::Release);
    }

    /// The new policy, if one was offered since the last call. One relaxed-cost load when
    /// there is none.
    pub fn take(&self) -> Option<(Credentials, PeerPolicy)> {
        if !self.pending.swap(false, Ordering::Acquire) {
            return None;
        }
        self.next.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The configuration to run with after a reload: `current` with every reloadable setting
/// taken from `new`. A new file without a secret keeps the running ephemeral one, so a reload
/// does not invalidate every credential minted so far.
pub fn reloaded(current: &Config, new: &Config) -> Config {
    let mut next = current.clone();
    if !(new.secret_is_ephemeral && current.secret_is_ephemeral) {
        next.secrets = new.secrets.clone();
        next.secret_is_ephemeral = new.secret_is_ephemeral;
    }
    next.users = new.users.clone();
    next.allow_peer = new.allow_peer.clone();
    next.deny_peer = new.deny_peer.clone();
    next.max_ttl = new.max_ttl;
    next.default_ttl = new.default_ttl;
    next.revoked = new.revoked.clone();
    next.strict_expiry = new.strict_expiry;
    next.api_keys = new.api_keys.clone();
    next.cors_origins = new.cors_origins.clone();
    if current.tls_files.is_some() {
        next.tls_files = new.tls_files.clone();
    }
    next
}

/// The settings that differ between `old` and `new` but cannot change without a restart
/// (sockets, threads and shared tables are sized or bound from them).
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |key: &'static str, differs: bool| {
        if differs {
            changed.push(key);
        }
    };
    check("realm", old.realm != new.realm);
    check("acme_*", old.acme != new.acme);
    check("listen", old.listen != new.listen);
    check(
        "relay_ip/external_ip",
        old.relay_v4 != new.relay_v4 || old.relay_v6 != new.relay_v6,
    );
    check("relay_ports", old.relay_ports != new.relay_ports);
    check("workers", old.workers != new.workers);
    check("user_quota", old.user_quota != new.user_quota);
    check(
        "max_allocations_per_address",
        old.max_allocations_per_address != new.max_allocations_per_address,
    );
    check(
        "max_allocations",
        old.max_allocations != new.max_allocations,
    );
    check(
        "max_permissions",
        old.max_permissions != new.max_permissions,
    );
    check("max_channels", old.max_channels != new.max_channels);
    check(
        "legacy_channel_numbers",
        old.legacy_channel_numbers != new.legacy_channel_numbers,
    );
    check("http_listen", old.http_listen != new.http_listen);
    check("metrics_listen", old.metrics_listen != new.metrics_listen);
    check("tls_listen", old.tls_listen != new.tls_listen);
    check(
        "tls_cert/tls_key",
        old.tls_files.is_some() != new.tls_files.is_some(),
    );
    check(
        "max_connections/max_connections_per_ip",
        old.max_connections != new.max_connections
            || old.max_connections_per_ip != new.max_connections_per_ip,
    );
    check(
        "error_rate_per_source",
        old.error_rate_per_source != new.error_rate_per_source,
    );
    check("public_host", old.public_hosts != new.public_hosts);
    check(
        "http_rate_limit",
        old.http_rate_limit != new.http_rate_limit,
    );
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn config(toml: &str) -> Config {
        Config::from_settings(&Settings::from_toml(toml).unwrap()).unwrap()
    }

    #[test]
    fn restart_only_keys_are_named_and_reloadable_ones_are_not() {
        let base = "listen = [\"127.0.0.1:3478\"]\nsecret = [\"0123456789abcdef\"]\n";
        let old = config(base);
        let reloadable = config(&format!(
            "{base}revoke = [\"mallory\"]\nallow_peer = [\"10.0.0.0/8\"]\nstrict_expiry = true\napi_key = [\"0123456789abcdef0123\"]\n"
        ));
        assert!(restart_only_changes(&old, &reloadable).is_empty());
        let moved = config(
            "listen = [\"127.0.0.1:3479\"]\nsecret = [\"0123456789abcdef\"]\nrelay_ports = \"40000-40100\"\n",
        );
        assert_eq!(
            restart_only_changes(&old, &moved),
            ["listen", "relay_ports"]
        );
    }

    #[test]
    fn a_slot_hands_over_once() {
        let slot = PolicySlot::default();
        assert!(slot.take().is_none());
        slot.offer(Credentials::default(), PeerPolicy::default());
        assert!(slot.take().is_some());
        assert!(slot.take().is_none());
    }
}
