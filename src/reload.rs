//! Configuration reload (SIGHUP): which settings change in place, how they reach the threads
//! that use them, and which need a restart.
//!
//! * Relay workers get new credentials (secrets, users, revocations, strict expiry, max TTL),
//!   a new peer policy and the stream timeouts through a [`PolicySlot`]: the signal thread fills it and wakes the
//!   worker, which swaps them into its `proto::Server` between batches. The packet path never
//!   looks at the slot, so it stays lock-free.
//! * The HTTP service, the admin API and the self-probe read [`Live`] (the minting secret,
//!   API keys, the admin key, CORS origins, TTLs, the probe interval) once per request.
//! * `drain_timeout` is read by the signal loop from the configuration in force.
//! * Which keys reload and which need a restart is decided by [`plan`], which the compiler
//!   holds to every field of `Config`.
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
    /// The admin API's key.
    pub admin_key: Option<String>,
    /// How often the self-probe runs (None: it does not).
    pub selftest_interval: Option<std::time::Duration>,
    pub max_ttl: u64,
    pub default_ttl: u64,
    pub api_keys: Vec<String>,
    pub cors_origins: Vec<String>,
}

impl LiveSettings {
    pub fn from_config(config: &Config) -> Self {
        LiveSettings {
            mint_secret: config.secrets[0].clone(),
            admin_key: config.admin_key.clone(),
            selftest_interval: config.selftest_interval,
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

/// What a worker takes from a reload.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub credentials: Credentials,
    pub policy: PeerPolicy,
    /// `tcp_idle_timeout`: applies from the worker's next connection sweep.
    pub idle_timeout: std::time::Duration,
    /// `tls_handshake_timeout`: likewise.
    pub handshake_timeout: std::time::Duration,
}

/// New worker settings waiting for a worker to pick them up.
#[derive(Debug, Default)]
pub struct PolicySlot {
    pending: AtomicBool,
    next: Mutex<Option<WorkerSettings>>,
}

impl PolicySlot {
    /// Leaves a new policy for the worker (the caller then wakes it).
    pub fn offer(&self, settings: WorkerSettings) {
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = Some(settings);
        self.pending.store(true, Ordering::Release);
    }

    /// The new policy, if one was offered since the last call. One relaxed-cost load when
    /// there is none.
    pub fn take(&self) -> Option<WorkerSettings> {
        if !self.pending.swap(false, Ordering::Acquire) {
            return None;
        }
        self.next.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// What a reload does: the configuration to run with, and the keys that changed but need a
/// restart (they keep their running values).
#[derive(Debug, Clone)]
pub struct Plan {
    pub next: Config,
    pub restart: Vec<&'static str>,
    /// The reloadable keys whose value changed (taken now), for the reload's log line.
    pub changed: Vec<&'static str>,
}

/// Decides, key by key, what a reload from `current` to `new` does. `new` is destructured
/// without `..`: a key added to [`Config`] does not compile until it is classified here as
/// reloadable (taken from `new`) or restart-only (compared, and named when it changed).
///
/// Restart-only keys size or bind something at start-up: sockets (listen addresses, relay
/// ports, RFC 5780 addresses), worker threads and their port shards, the shared quota ledger,
/// the HTTP listeners' edge limits, the logger, the ACME manager.
pub fn plan(current: &Config, new: &Config) -> Plan {
    let Config {
        realm,
        listen,
        listen_is_default,
        relay_v4,
        relay_v6,
        relay_ports,
        secrets,
        secret_is_ephemeral,
        users,
        allow_peer,
        deny_peer,
        user_quota,
        max_allocations,
        max_ttl,
        max_permissions,
        max_channels,
        legacy_channel_numbers,
        stun_alternate,
        stun_alternate_url,
        workers,
        log_format,
        public_hosts,
        http_listen,
        metrics_listen,
        tls_listen,
        tls_files,
        max_connections,
        max_connections_per_ip,
        tcp_idle_timeout,
        tls_handshake_timeout,
        selftest_interval,
        drain_timeout,
        api_keys,
        admin_key,
        cors_origins,
        http_rate_limit,
        default_ttl,
        revoked,
        strict_expiry,
        error_rate_per_source,
        ipv6_source_prefix,
        max_allocations_per_address,
        http_header_timeout,
        http_body_timeout,
        http_idle_timeout,
        http_max_connections,
        http_max_connections_per_ip,
        acme,
        usage_log,
        fast_path,
    } = new;
    let mut next = current.clone();
    let mut restart = Vec::new();
    let mut changed = Vec::new();
    macro_rules! reload {
        ($($field:ident),*) => { $(
            if current.$field != *$field { changed.push(stringify!($field)); }
            next.$field = $field.clone();
        )* };
    }
    macro_rules! restart {
        ($($key:literal: $field:ident),*) => {
            $( if current.$field != *$field { restart.push($key); } )*
        };
    }

    // A new file without a secret keeps the running ephemeral one, so a reload does not
    // invalidate every credential minted so far.
    if !(*secret_is_ephemeral && current.secret_is_ephemeral) {
        reload!(secrets, secret_is_ephemeral);
    }
    reload!(
        users,
        allow_peer,
        deny_peer,
        max_ttl,
        default_ttl,
        revoked,
        strict_expiry,
        api_keys,
        admin_key,
        cors_origins,
        tcp_idle_timeout,
        tls_handshake_timeout,
        selftest_interval,
        drain_timeout
    );
    // The certificate files are re-read; turning TLS on or off needs listeners: a restart.
    if current.tls_files.is_some() == tls_files.is_some() {
        reload!(tls_files);
    } else {
        restart.push("tls_cert/tls_key");
    }
    restart!(
        "realm": realm,
        "listen": listen,
        "listen": listen_is_default,
        "relay_ip/external_ip": relay_v4,
        "relay_ip/external_ip": relay_v6,
        "relay_ports": relay_ports,
        "user_quota": user_quota,
        "max_allocations": max_allocations,
        "max_permissions": max_permissions,
        "max_channels": max_channels,
        "legacy_channel_numbers": legacy_channel_numbers,
        "stun_alternate": stun_alternate,
        "stun_alternate_url": stun_alternate_url,
        "workers": workers,
        "log_format": log_format,
        "public_host": public_hosts,
        "http_listen": http_listen,
        "metrics_listen": metrics_listen,
        "tls_listen": tls_listen,
        "max_connections": max_connections,
        "max_connections_per_ip": max_connections_per_ip,
        "http_rate_limit": http_rate_limit,
        "error_rate_per_source": error_rate_per_source,
        "ipv6_source_prefix": ipv6_source_prefix,
        "max_allocations_per_address": max_allocations_per_address,
        "http_header_timeout": http_header_timeout,
        "http_body_timeout": http_body_timeout,
        "http_idle_timeout": http_idle_timeout,
        "http_max_connections": http_max_connections,
        "http_max_connections_per_ip": http_max_connections_per_ip,
        "acme_*": acme,
        // The writer thread opens the configured path at start-up; SIGHUP reopens that same
        // path (logrotate), so a new path or turning it on or off needs a restart.
        "usage_log": usage_log,
        "fast_path/fast_path_interface": fast_path
    );
    restart.dedup();
    changed.dedup();
    Plan {
        next,
        restart,
        changed,
    }
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
        let p = plan(&old, &reloadable);
        assert!(p.restart.is_empty());
        // The reload's log line names what it took.
        assert_eq!(
            p.changed,
            ["allow_peer", "revoked", "strict_expiry", "api_keys"]
        );
        assert!(plan(&old, &old).changed.is_empty());
        let moved = config(
            "listen = [\"127.0.0.1:3479\"]\nsecret = [\"0123456789abcdef\"]\nrelay_ports = \"40000-40100\"\n",
        );
        assert_eq!(plan(&old, &moved).restart, ["listen", "relay_ports"]);
    }

    /// Every restart-only key, changed alone, is named (once) and keeps its running value;
    /// every reloadable key, changed alone, is taken and named nowhere.
    #[test]
    fn every_key_is_either_reloaded_or_named_as_needing_a_restart() {
        let base = "listen = [\"127.0.0.1:3478\"]\nsecret = [\"0123456789abcdef\"]\n";
        let old = config(base);
        let restart_only: &[(&str, &str)] = &[
            ("realm", "realm = \"other\""),
            ("listen", "listen = [\"127.0.0.1:3479\"]"),
            ("relay_ip/external_ip", "relay_ip = [\"127.0.0.2\"]"),
            ("relay_ports", "relay_ports = \"40000-40100\""),
            ("user_quota", "user_quota = 3"),
            ("max_allocations", "max_allocations = 3"),
            ("max_permissions", "max_permissions = 3"),
            ("max_channels", "max_channels = 3"),
            ("legacy_channel_numbers", "legacy_channel_numbers = true"),
            ("stun_alternate", "stun_alternate = \"127.0.0.2:3479\""),
            ("workers", "workers = 3"),
            ("log_format", "log_format = \"json\""),
            ("public_host", "public_host = [\"turn.example.net\"]"),
            ("http_listen", "http_listen = \"127.0.0.1:8081\""),
            ("metrics_listen", "metrics_listen = \"127.0.0.1:9642\""),
            ("max_connections", "max_connections = 3"),
            ("max_connections_per_ip", "max_connections_per_ip = 3"),
            ("http_rate_limit", "http_rate_limit = 3"),
            ("error_rate_per_source", "error_rate_per_source = 3"),
            ("ipv6_source_prefix", "ipv6_source_prefix = 56"),
            (
                "max_allocations_per_address",
                "max_allocations_per_address = 3",
            ),
            ("http_header_timeout", "http_header_timeout = 3"),
            ("http_body_timeout", "http_body_timeout = 3"),
            ("http_idle_timeout", "http_idle_timeout = 3"),
            ("http_max_connections", "http_max_connections = 3"),
            (
                "http_max_connections_per_ip",
                "http_max_connections_per_ip = 3",
            ),
        ];
        for (key, line) in restart_only {
            // The line replaces the base's key of the same name (TOML keys are unique).
            let name = line.split(' ').next().unwrap();
            let kept: String = base
                .lines()
                .filter(|l| !l.starts_with(&format!("{name} ")))
                .map(|l| format!("{l}\n"))
                .collect();
            let new = config(&format!("{kept}{line}\n"));
            let p = plan(&old, &new);
            assert_eq!(p.restart, [*key], "{line}");
            assert_eq!(p.next.listen, old.listen);
            assert_eq!(p.next.realm, old.realm);
            assert_eq!(p.next.workers, old.workers);
        }
        // TLS: moving the listener needs a restart; turning TLS on too; the files reload.
        let tls = "tls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n";
        let with_tls = config(&format!("{base}{tls}tls_listen = [\"127.0.0.1:5349\"]\n"));
        let moved = config(&format!("{base}{tls}tls_listen = [\"127.0.0.1:5350\"]\n"));
        assert_eq!(plan(&with_tls, &moved).restart, ["tls_listen"]);
        assert_eq!(
            plan(&old, &with_tls).restart,
            ["tls_cert/tls_key", "tls_listen"]
        );
        let other_files = config(&format!(
            "{base}tls_cert = \"/c2.pem\"\ntls_key = \"/k2.pem\"\ntls_listen = [\"127.0.0.1:5349\"]\n"
        ));
        let p = plan(&with_tls, &other_files);
        assert!(p.restart.is_empty());
        assert_eq!(p.next.tls_files, other_files.tls_files);
        // stun_alternate_url needs stun_alternate: both change, both are named.
        let alt = "stun_alternate = \"127.0.0.2:3479\"\n";
        let with_alt = config(&format!("{base}{alt}"));
        let url = config(&format!("{base}{alt}stun_alternate_url = true\n"));
        assert_eq!(plan(&with_alt, &url).restart, ["stun_alternate_url"]);
        let reloadable: &[&str] = &[
            "secret = [\"fedcba9876543210\"]",
            "user = [\"alice:a-password\"]",
            "allow_peer = [\"10.0.0.0/8\"]",
            "deny_peer = [\"192.0.2.0/24\"]",
            "max_ttl = 600",
            "default_ttl = 60",
            "revoke = [\"mallory\"]",
            "strict_expiry = true",
            "api_key = [\"0123456789abcdef0123\"]",
            "admin_key = \"0123456789abcdef0123\"",
            "cors_origin = [\"https://app.example.com\"]",
            "tcp_idle_timeout = 5",
            "tls_handshake_timeout = 5",
            "selftest_interval = 0",
            "drain_timeout = 1",
        ];
        for line in reloadable {
            let name = line.split(' ').next().unwrap();
            let kept: String = base
                .lines()
                .filter(|l| !l.starts_with(&format!("{name} ")))
                .map(|l| format!("{l}\n"))
                .collect();
            let new = config(&format!("{kept}{line}\n"));
            let p = plan(&old, &new);
            assert!(p.restart.is_empty(), "{line}: {:?}", p.restart);
            // Taken from the new file: the whole configuration is the new one.
            assert_eq!(format!("{:?}", p.next), format!("{new:?}"), "{line}");
        }
    }

    #[test]
    fn a_slot_hands_over_once() {
        let slot = PolicySlot::default();
        assert!(slot.take().is_none());
        slot.offer(WorkerSettings {
            credentials: Credentials::default(),
            policy: PeerPolicy::default(),
            idle_timeout: std::time::Duration::from_secs(1),
            handshake_timeout: std::time::Duration::from_secs(1),
        });
        assert!(slot.take().is_some());
        assert!(slot.take().is_none());
    }
}
