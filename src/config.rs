//! Configuration: a TOML file, `TURND_*` environment variables and flags, merged with
//! precedence flag > env > file > default, then validated into a [`Config`].
//!
//! One struct, [`Settings`], is both the clap argument set and the TOML schema, so every
//! setting has exactly one name: TOML key `relay_ports` = flag `--relay-ports` = variable
//! `TURND_RELAY_PORTS`. Validation errors name that key and the reason, and are raised before
//! anything is bound.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use turnd_proto::policy::Cidr;
use turnd_proto::RelayAddress;

/// Every setting, as given: all optional, so sources can be layered.
#[derive(Debug, Clone, Default, clap::Args, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// TOML configuration file (see config/turnd.toml for every key).
    #[arg(long, env = "TURND_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Realm of the long-term credential mechanism.
    #[arg(long, env = "TURND_REALM")]
    pub realm: Option<String>,

    /// UDP and TCP listen address, repeatable [default: 0.0.0.0:3478 and [::]:3478].
    #[arg(
        long,
        env = "TURND_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR:PORT"
    )]
    #[serde(default, deserialize_with = "one_or_many")]
    pub listen: Option<Vec<String>>,

    /// Local address relay sockets bind to, one per family [default: detected].
    #[arg(long, env = "TURND_RELAY_IP", value_delimiter = ',', value_name = "IP")]
    #[serde(default, deserialize_with = "one_or_many")]
    pub relay_ip: Option<Vec<String>>,

    /// Public address advertised for relays behind 1:1 NAT, one per family.
    #[arg(
        long,
        env = "TURND_EXTERNAL_IP",
        value_delimiter = ',',
        value_name = "IP"
    )]
    #[serde(default, deserialize_with = "one_or_many")]
    pub external_ip: Option<Vec<String>>,

    /// Relay port range [default: 49152-65535].
    #[arg(long, env = "TURND_RELAY_PORTS", value_name = "LOW-HIGH")]
    pub relay_ports: Option<String>,

    /// TURN REST shared secret, repeatable to rotate [default: a random ephemeral secret].
    #[arg(
        long,
        env = "TURND_SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    #[serde(default, deserialize_with = "one_or_many")]
    pub secret: Option<Vec<String>>,

    /// Static user NAME:PASSWORD, repeatable.
    #[arg(
        long,
        env = "TURND_USER",
        value_delimiter = ',',
        hide_env_values = true,
        value_name = "NAME:PASSWORD"
    )]
    #[serde(default, deserialize_with = "one_or_many")]
    pub user: Option<Vec<String>>,

    /// Peer range to allow despite the default deny list, repeatable (e.g. 10.0.0.0/8).
    #[arg(
        long,
        env = "TURND_ALLOW_PEER",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    #[serde(default, deserialize_with = "one_or_many")]
    pub allow_peer: Option<Vec<String>>,

    /// Extra peer range to refuse, repeatable; wins over --allow-peer.
    #[arg(
        long,
        env = "TURND_DENY_PEER",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    #[serde(default, deserialize_with = "one_or_many")]
    pub deny_peer: Option<Vec<String>>,

    /// Allocations per user id (0 = unlimited) [default: 10].
    #[arg(long, env = "TURND_USER_QUOTA")]
    pub user_quota: Option<u32>,

    /// Allocations in total (0 = unlimited) [default: 0].
    #[arg(long, env = "TURND_MAX_ALLOCATIONS")]
    pub max_allocations: Option<u32>,

    /// Longest REST credential lifetime accepted, seconds [default: 86400].
    #[arg(long, env = "TURND_MAX_TTL")]
    pub max_ttl: Option<u64>,

    /// Permissions per allocation [default: 64].
    #[arg(long, env = "TURND_MAX_PERMISSIONS")]
    pub max_permissions: Option<usize>,

    /// Channel bindings per allocation [default: 64].
    #[arg(long, env = "TURND_MAX_CHANNELS")]
    pub max_channels: Option<usize>,

    /// Accept RFC 5766 channel numbers 0x5000-0x7FFF too (coturn's turnutils_uclient uses
    /// them; RFC 8656 allows only 0x4000-0x4FFF) [default: false].
    #[arg(long, env = "TURND_LEGACY_CHANNEL_NUMBERS", num_args = 0..=1, default_missing_value = "true")]
    pub legacy_channel_numbers: Option<bool>,

    /// RFC 5780 NAT behaviour discovery: a second IP of this host and a second port
    /// (IP:PORT; port 0 picks one). Binding over UDP is then answered from four sockets
    /// (either IP × either port) as CHANGE-REQUEST asks; needs a `listen` address of the same
    /// family on a specific IP, the primary [default: off].
    #[arg(long, env = "TURND_STUN_ALTERNATE", value_name = "IP:PORT")]
    pub stun_alternate: Option<String>,

    /// Also list the alternate STUN address (`stun_alternate`) in the credential endpoint's
    /// `uris` and `iceServers` [default: false].
    #[arg(long, env = "TURND_STUN_ALTERNATE_URL", num_args = 0..=1, default_missing_value = "true")]
    pub stun_alternate_url: Option<bool>,

    /// Relay worker threads [default: one per core].
    #[arg(long, env = "TURND_WORKERS")]
    pub workers: Option<usize>,

    /// Log format: text or json [default: text].
    #[arg(long, env = "TURND_LOG_FORMAT")]
    pub log_format: Option<String>,

    /// HTTP listen address of the credential API and health checks ("off" disables it)
    /// [default: 127.0.0.1:8080].
    #[arg(long, env = "TURND_HTTP_LISTEN", value_name = "ADDR:PORT")]
    pub http_listen: Option<String>,

    /// TURN-over-TLS listen address, repeatable (5349 and 443 are usual); needs tls_cert and
    /// tls_key.
    #[arg(
        long,
        env = "TURND_TLS_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR:PORT"
    )]
    #[serde(default, deserialize_with = "one_or_many")]
    pub tls_listen: Option<Vec<String>>,

    /// PEM certificate chain for TLS listeners (reloaded on SIGHUP).
    #[arg(long, env = "TURND_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for TLS listeners (reloaded on SIGHUP).
    #[arg(long, env = "TURND_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// TCP and TLS connections in total (0 = no limit) [default: 10000].
    #[arg(long, env = "TURND_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,

    /// TCP and TLS connections per client address, an IPv6 client counted by its
    /// /ipv6_source_prefix (0 = no limit) [default: 64].
    #[arg(long, env = "TURND_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<u32>,

    /// Seconds a TCP/TLS connection without an allocation may go without a complete message
    /// before it is closed (shorter past half of max_connections: a tenth at the cap, at least
    /// 1 s), and seconds any connection may leave its answers unread [default: 30].
    #[arg(long, env = "TURND_TCP_IDLE_TIMEOUT")]
    pub tcp_idle_timeout: Option<u64>,

    /// Seconds a TLS handshake may take [default: 10].
    #[arg(long, env = "TURND_TLS_HANDSHAKE_TIMEOUT")]
    pub tls_handshake_timeout: Option<u64>,

    /// Seconds SIGTERM waits for allocations to end (no new ones are accepted, /readyz says
    /// not ready) before exiting [default: 8, inside Docker's default 10 s grace period].
    #[arg(long, env = "TURND_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<u64>,

    /// File holding REST secrets, one per line (for Docker/Kubernetes secrets).
    #[arg(long, env = "TURND_SECRET_FILE", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,

    /// File holding API keys, one per line.
    #[arg(long, env = "TURND_API_KEY_FILE", value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Seconds between self-probes of the relay path (0 disables) [default: 60].
    #[arg(long, env = "TURND_SELFTEST_INTERVAL")]
    pub selftest_interval: Option<u64>,

    /// Usage records: one JSON line per ended allocation appended to this file ("-" for
    /// standard output), reopened on SIGHUP [default: off].
    #[arg(long, env = "TURND_USAGE_LOG", value_name = "FILE")]
    pub usage_log: Option<String>,

    /// Kernel fast path for UDP ChannelData: "off" or "xdp" (a build with the `xdp` feature,
    /// CAP_BPF and CAP_NET_ADMIN, and fast_path_interface); where XDP cannot attach, turnd says
    /// why and relays in userspace [default: off].
    #[arg(long, env = "TURND_FAST_PATH", value_name = "off|xdp")]
    pub fast_path: Option<String>,

    /// Network interface the XDP fast path attaches to, repeatable: every interface client
    /// and peer traffic arrives on.
    #[arg(
        long,
        env = "TURND_FAST_PATH_INTERFACE",
        value_delimiter = ',',
        value_name = "IFACE"
    )]
    #[serde(default, deserialize_with = "one_or_many")]
    pub fast_path_interface: Option<Vec<String>>,

    /// Prometheus metrics listen address ("off" disables it) [default: 127.0.0.1:9641].
    #[arg(long, env = "TURND_METRICS_LISTEN", value_name = "ADDR:PORT")]
    pub metrics_listen: Option<String>,

    /// API key for the credential endpoints, repeatable (`Authorization: Bearer KEY` or
    /// `key=KEY`). Without one, the endpoints answer loopback clients only.
    #[arg(
        long,
        env = "TURND_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    #[serde(default, deserialize_with = "one_or_many")]
    pub api_key: Option<Vec<String>>,

    /// Key for the admin API on the metrics listener (`/admin/v1/...`, `turnd sessions`), sent
    /// as `Authorization: Bearer KEY`; at least 16 printable characters. Required for the
    /// admin API when metrics_listen is beyond loopback (reloaded on SIGHUP) [default: none].
    #[arg(long, env = "TURND_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// Browser origin allowed to call the credential endpoints directly, repeatable.
    #[arg(
        long,
        env = "TURND_CORS_ORIGIN",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    #[serde(default, deserialize_with = "one_or_many")]
    pub cors_origin: Option<Vec<String>>,

    /// Credential requests per minute per client address (0 = no limit) [default: 60].
    #[arg(long, env = "TURND_HTTP_RATE_LIMIT")]
    pub http_rate_limit: Option<u32>,

    /// Lifetime of credentials when the request names none, seconds [default: 3600].
    #[arg(long, env = "TURND_DEFAULT_TTL")]
    pub default_ttl: Option<u64>,

    /// Username or REST user id to refuse, repeatable: new allocations, refreshes, permissions
    /// and channels are refused for it (reloaded on SIGHUP).
    #[arg(long, env = "TURND_REVOKE", value_delimiter = ',', value_name = "USER")]
    #[serde(default, deserialize_with = "one_or_many")]
    pub revoke: Option<Vec<String>>,

    /// File of usernames or user ids to refuse, one per line (reloaded on SIGHUP).
    #[arg(long, env = "TURND_REVOKE_FILE", value_name = "FILE")]
    pub revoke_file: Option<PathBuf>,

    /// Refuse requests on an allocation once the REST credential that made it has expired
    /// (by default a client may keep refreshing, as with coturn) [default: false].
    #[arg(long, env = "TURND_STRICT_EXPIRY", num_args = 0..=1, default_missing_value = "true")]
    pub strict_expiry: Option<bool>,

    /// Unauthenticated error responses (401, 438, 400) per second per source address and
    /// worker, bursts of twice that; the rest are dropped (0 = no limit) [default: 100].
    #[arg(long, env = "TURND_ERROR_RATE_PER_SOURCE")]
    pub error_rate_per_source: Option<u32>,

    /// IPv6 clients are counted per /N in every per-address limit (HTTP rate limit,
    /// connections per address, unauthenticated errors, allocations per address): a host owns
    /// a whole /64 [default: 64].
    #[arg(long, env = "TURND_IPV6_SOURCE_PREFIX", value_name = "BITS")]
    pub ipv6_source_prefix: Option<u8>,

    /// Host name clients use to reach this server, repeatable [default: the advertised IP].
    #[arg(
        long,
        env = "TURND_PUBLIC_HOST",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    #[serde(default, deserialize_with = "one_or_many")]
    pub public_host: Option<Vec<String>>,

    /// Allocations per client address, whatever user ids it uses (IPv6 counted per
    /// `ipv6_source_prefix`; 0 = unlimited) [default: 64].
    #[arg(long, env = "TURND_MAX_ALLOCATIONS_PER_ADDRESS")]
    pub max_allocations_per_address: Option<u32>,

    /// Seconds an HTTP client may take to send a request's head, from its first byte
    /// [default: 10].
    #[arg(long, env = "TURND_HTTP_HEADER_TIMEOUT", value_name = "SECONDS")]
    pub http_header_timeout: Option<u64>,

    /// Seconds an HTTP request may take from its complete head to its answer (the body must
    /// arrive within it), else 408 [default: 10].
    #[arg(long, env = "TURND_HTTP_BODY_TIMEOUT", value_name = "SECONDS")]
    pub http_body_timeout: Option<u64>,

    /// Seconds an HTTP connection may wait for its next request (a new connection for its
    /// first) before it is closed [default: 30].
    #[arg(long, env = "TURND_HTTP_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub http_idle_timeout: Option<u64>,

    /// Connections each HTTP listener (credential API, metrics) holds at once; when full, a
    /// newcomer with a request replaces the longest-idle one [default: 1024].
    #[arg(long, env = "TURND_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<u32>,

    /// HTTP connections per client address (IPv6: per ipv6_source_prefix) and listener
    /// (0 = no limit) [default: 64].
    #[arg(long, env = "TURND_HTTP_MAX_CONNECTIONS_PER_IP")]
    pub http_max_connections_per_ip: Option<u32>,

    /// DNS name to get a certificate for from an ACME CA (Let's Encrypt), repeatable; turns
    /// built-in ACME on for the TLS listeners (instead of tls_cert/tls_key).
    #[arg(
        long,
        env = "TURND_ACME_DOMAIN",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    #[serde(default, deserialize_with = "one_or_many")]
    pub acme_domain: Option<Vec<String>>,

    /// Contact e-mail for the ACME account (expiry warnings from the CA) [default: none].
    #[arg(long, env = "TURND_ACME_EMAIL", value_name = "ADDRESS")]
    pub acme_email: Option<String>,

    /// ACME directory URL, or `letsencrypt` / `letsencrypt-staging` [default: letsencrypt].
    #[arg(long, env = "TURND_ACME_DIRECTORY", value_name = "URL")]
    pub acme_directory: Option<String>,

    /// Directory for the ACME account key and certificates; must survive restarts (a volume).
    #[arg(long, env = "TURND_ACME_CACHE", value_name = "DIR")]
    pub acme_cache: Option<PathBuf>,

    /// Extra PEM root to trust for the ACME server's HTTPS (a private or test CA).
    #[arg(long, env = "TURND_ACME_CA_ROOT", value_name = "FILE")]
    pub acme_ca_root: Option<PathBuf>,

    /// ACME challenge: `tls-alpn-01` (on a TLS listener, port 443) or `http-01` (on
    /// http_listen, port 80) [default: tls-alpn-01].
    #[arg(long, env = "TURND_ACME_CHALLENGE", value_name = "TYPE")]
    pub acme_challenge: Option<String>,
}

/// A repeatable key in the TOML file takes a list or, for one value, a plain string:
/// `secret = "s"` is `secret = ["s"]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<OneOrMany>::deserialize(d)?.map(|v| match v {
        OneOrMany::One(v) => vec![v],
        OneOrMany::Many(v) => v,
    }))
}

/// Makes a `TURND_*` variable that is set but empty count as not set, for every setting of
/// every subcommand: Compose and Kubernetes pass `KEY=` for a value left blank, and "blank"
/// must mean "the default", not "the empty string" (which is invalid for most keys).
pub fn unset_empty_env(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|arg| {
        let empty = arg
            .get_env()
            .is_some_and(|name| std::env::var_os(name).is_some_and(|v| v.is_empty()));
        if empty {
            arg.env(None)
        } else {
            arg
        }
    })
    .mut_subcommands(unset_empty_env)
}

/// Secrets and API keys that are the placeholders of `deploy/.env.example`: a relay started
/// with them would mint credentials anyone who read the example can forge.
const PLACEHOLDER_PREFIX: &str = "change-me";

/// Refuses a placeholder value of `key`, naming the key.
fn refuse_placeholder(key: &str, values: &[String], make_one: &str) -> Result<()> {
    if values.iter().any(|v| v.starts_with(PLACEHOLDER_PREFIX)) {
        bail!("{key}: still the example placeholder (`{PLACEHOLDER_PREFIX}...`); set a random value, e.g. `{make_one}`");
    }
    Ok(())
}

/// Whether a host name lies in a domain reserved for examples (RFC 2606, RFC 6761): left in
/// from an example, it hands clients URLs they cannot resolve.
pub fn is_example_host(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h.ends_with(".example")
        || h == "example"
        || ["example.com", "example.net", "example.org"]
            .iter()
            .any(|d| h == *d || h.ends_with(&format!(".{d}")))
}

/// A secret shorter than this is accepted with a warning at start-up.
pub const SHORT_SECRET: usize = 16;

impl Settings {
    /// Fills every unset setting from `lower` (the file under the flags and environment).
    /// Done field by field through serde, so no list of keys can fall out of date.
    pub fn or(self, lower: &Settings) -> Settings {
        let config = self.config.clone();
        let mut high = serde_json::to_value(&self).expect("settings serialise");
        let low = serde_json::to_value(lower).expect("settings serialise");
        if let (serde_json::Value::Object(h), serde_json::Value::Object(l)) = (&mut high, low) {
            for (k, v) in l {
                if h.get(&k).is_none_or(serde_json::Value::is_null) {
                    h.insert(k, v);
                }
            }
        }
        let mut merged: Settings =
            serde_json::from_value(high).expect("merged settings deserialise");
        merged.config = config;
        merged
    }

    /// Reads a TOML file; unknown keys are errors that name the key.
    pub fn from_file(path: &Path) -> Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("config: cannot read {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("config: {}", path.display()))
    }

    pub fn from_toml(text: &str) -> Result<Settings> {
        Ok(toml::from_str(text)?)
    }

    /// Flags and environment, layered over the file named by `--config`, if any.
    pub fn resolve(self) -> Result<Settings> {
        match &self.config {
            Some(path) => {
                let file = Settings::from_file(path)?;
                Ok(self.or(&file))
            }
            None => Ok(self),
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub realm: String,
    pub listen: Vec<SocketAddr>,
    /// True when `listen` is the built-in default (a missing IPv6 stack is then tolerated).
    pub listen_is_default: bool,
    pub relay_v4: Option<RelayAddress>,
    pub relay_v6: Option<RelayAddress>,
    pub relay_ports: RangeInclusive<u16>,
    pub secrets: Vec<String>,
    /// No secret was configured: a random one is in use and dies with the process.
    pub secret_is_ephemeral: bool,
    pub users: Vec<(String, String)>,
    pub allow_peer: Vec<Cidr>,
    pub deny_peer: Vec<Cidr>,
    pub user_quota: u32,
    pub max_allocations: u32,
    pub max_ttl: u64,
    pub max_permissions: usize,
    pub max_channels: usize,
    pub legacy_channel_numbers: bool,
    /// RFC 5780: the primary (a listen address) and alternate STUN addresses.
    pub stun_alternate: Option<StunAlternate>,
    /// Hand out the alternate STUN address with credentials.
    pub stun_alternate_url: bool,
    pub workers: usize,
    pub log_format: LogFormat,
    /// Where usage records go; None when off.
    pub usage_log: Option<crate::events::usage_log::UsageTarget>,
    /// The XDP fast path's interfaces; None when `fast_path` is off.
    pub fast_path: Option<Vec<String>>,
    pub public_hosts: Vec<String>,
    /// None when the HTTP service is off.
    pub http_listen: Option<SocketAddr>,
    /// None when metrics are off.
    pub metrics_listen: Option<SocketAddr>,
    pub tls_listen: Vec<SocketAddr>,
    /// Certificate and key files, when TLS listeners are configured.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub max_connections: u32,
    pub max_connections_per_ip: u32,
    pub tcp_idle_timeout: std::time::Duration,
    pub tls_handshake_timeout: std::time::Duration,
    /// None when the periodic self-probe is off.
    pub selftest_interval: Option<std::time::Duration>,
    pub drain_timeout: std::time::Duration,
    pub api_keys: Vec<String>,
    /// The admin API's key (`Authorization: Bearer`), if configured.
    pub admin_key: Option<String>,
    pub cors_origins: Vec<String>,
    pub http_rate_limit: u32,
    pub default_ttl: u64,
    /// Usernames and user ids refused (`revoke` and `revoke_file`).
    pub revoked: Vec<String>,
    pub strict_expiry: bool,
    pub error_rate_per_source: u32,
    /// IPv6 prefix length by which per-address limits count clients.
    pub ipv6_source_prefix: u8,
    /// Allocations per client address (source key); 0 = unlimited.
    pub max_allocations_per_address: u32,

    pub http_header_timeout: std::time::Duration,
    pub http_body_timeout: std::time::Duration,
    pub http_idle_timeout: std::time::Duration,
    pub http_max_connections: u32,
    pub http_max_connections_per_ip: u32,

    /// Built-in ACME, when `acme_domain` is set.
    pub acme: Option<crate::acme::AcmeConfig>,
}

pub const DEFAULT_LISTEN: [&str; 2] = ["0.0.0.0:3478", "[::]:3478"];
pub const DEFAULT_REALM: &str = "turnd";
/// Allocations one client address may hold: a household or office behind one NAT, never the
/// whole relay range.
pub const DEFAULT_MAX_ALLOCATIONS_PER_ADDRESS: u32 = 64;
pub const DEFAULT_RELAY_PORTS: &str = "49152-65535";
pub const DEFAULT_USER_QUOTA: u32 = 10;
pub const DEFAULT_ERROR_RATE_PER_SOURCE: u32 = 100;
pub const DEFAULT_MAX_TTL: u64 = 86_400;
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9641";

/// The non-empty lines of a secrets file (Docker and Kubernetes mount secrets as files).
fn read_list_file(key: &str, path: Option<&Path>) -> Result<Vec<String>> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{key}: cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// An `ADDRESS:PORT`, or "off" (None).
fn optional_addr(key: &str, v: &str) -> Result<Option<SocketAddr>> {
    match v {
        "off" | "" => Ok(None),
        v => v
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{key}: `{v}` is not an ADDRESS:PORT or \"off\"")),
    }
}

fn parse_list<T>(
    key: &str,
    values: &[String],
    parse: impl Fn(&str) -> Option<T>,
    what: &str,
) -> Result<Vec<T>> {
    values
        .iter()
        .map(|v| parse(v.trim()).with_context(|| format!("{key}: `{v}` is not {what}")))
        .collect()
}

/// Parses `LOW-HIGH` (or a single port).
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo: u16 = lo
        .trim()
        .parse()
        .with_context(|| format!("relay_ports: `{s}`: `{lo}` is not a port"))?;
    let hi: u16 = hi
        .trim()
        .parse()
        .with_context(|| format!("relay_ports: `{s}`: `{hi}` is not a port"))?;
    if lo == 0 || lo > hi {
        bail!("relay_ports: `{s}` must be LOW-HIGH with 1 <= LOW <= HIGH <= 65535");
    }
    Ok(lo..=hi)
}

/// One relay address per family: from `relay_ip`, or detected from the listen addresses and
/// the host's interfaces; advertised as the `external_ip` of the same family if given.
fn relay_addresses(
    s: &Settings,
    listen: &[SocketAddr],
) -> Result<(Option<RelayAddress>, Option<RelayAddress>)> {
    let relay_ips = parse_list(
        "relay_ip",
        s.relay_ip.as_deref().unwrap_or_default(),
        |v| v.parse::<IpAddr>().ok(),
        "an IP address",
    )?;
    let external = parse_list(
        "external_ip",
        s.external_ip.as_deref().unwrap_or_default(),
        |v| v.parse::<IpAddr>().ok(),
        "an IP address",
    )?;
    for (key, ips) in [("relay_ip", &relay_ips), ("external_ip", &external)] {
        if ips.iter().filter(|i| i.is_ipv4()).count() > 1
            || ips.iter().filter(|i| i.is_ipv6()).count() > 1
        {
            bail!("{key}: give at most one IPv4 and one IPv6 address");
        }
        if let Some(ip) = ips.iter().find(|i| i.is_unspecified() || i.is_multicast()) {
            bail!("{key}: `{ip}` cannot be a relay address");
        }
    }
    let mut out = [None, None];
    for (i, v6) in [(0usize, false), (1, true)] {
        let explicit = relay_ips.iter().find(|ip| ip.is_ipv6() == v6).copied();
        let bind = match explicit {
            Some(ip) => Some(ip),
            None if relay_ips.is_empty() => detect_relay_ip(listen, v6),
            None => None,
        };
        let advertised = external.iter().find(|ip| ip.is_ipv6() == v6).copied();
        if advertised.is_some() && bind.is_none() {
            bail!("external_ip: no relay address of the same family to map it to (set relay_ip)");
        }
        out[i] = bind.map(|bind| RelayAddress {
            bind,
            advertised: advertised.unwrap_or(bind),
        });
    }
    if out[0].is_none() && out[1].is_none() {
        bail!("relay_ip: no relay address could be found; set one");
    }
    Ok((out[0], out[1]))
}

/// A concrete listen address of the family, or the host's first usable interface address.
fn detect_relay_ip(listen: &[SocketAddr], v6: bool) -> Option<IpAddr> {
    let family: Vec<_> = listen.iter().filter(|a| a.is_ipv6() == v6).collect();
    if family.is_empty() {
        return None;
    }
    if let Some(a) = family.iter().find(|a| !a.ip().is_unspecified()) {
        return Some(a.ip());
    }
    crate::netif::first_usable_address(v6)
}

impl Config {
    /// Validates settings into a configuration, one concern at a time. The order of the
    /// steps is the order in which a file with several mistakes reports them: the first one.
    pub fn from_settings(s: &Settings) -> Result<Config> {
        let realm = realm(s)?;
        let Listeners {
            listen,
            listen_is_default,
            relay_ports,
        } = listeners(s)?;
        let (relay_v4, relay_v6) = relay_addresses(s, &listen)?;
        let Credentials {
            secrets,
            secret_is_ephemeral,
            users,
        } = credentials(s)?;
        let (allow_peer, deny_peer) = peer_ranges(s)?;
        let max_ttl = max_ttl(s)?;
        let workers = workers(s, &relay_ports)?;
        let log_format = log_format(s)?;
        let usage_log = usage_log(s)?;
        let fast_path = fast_path(s)?;
        let (max_permissions, max_channels) = per_allocation_limits(s)?;
        let public_hosts = public_hosts(s)?;
        let Http {
            http_listen,
            metrics_listen,
            api_keys,
            cors_origins,
            default_ttl,
        } = http(s)?;
        let Tls {
            tls_listen,
            tls_files,
        } = tls(s, &relay_ports)?;
        let revoked = revoked(s)?;
        let (tcp_idle_timeout, tls_handshake_timeout) = stream_timeouts(s)?;
        let ipv6_source_prefix = ipv6_source_prefix(s)?;
        let max_allocations_per_address = max_allocations_per_address(s)?;
        let HttpEdge {
            http_header_timeout,
            http_body_timeout,
            http_idle_timeout,
            http_max_connections,
        } = http_edge(s)?;
        let acme = crate::acme::settings::acme(s, &tls_listen, tls_files.is_some(), http_listen)?;
        let (stun_alternate, stun_alternate_url) = stun_alternate(s, &listen, &relay_ports)?;
        Ok(Config {
            stun_alternate,
            stun_alternate_url,
            acme,
            max_allocations_per_address,
            http_header_timeout,
            http_body_timeout,
            http_idle_timeout,
            http_max_connections,
            http_max_connections_per_ip: s.http_max_connections_per_ip.unwrap_or(64),
            ipv6_source_prefix,
            tls_listen,
            tls_files,
            drain_timeout: std::time::Duration::from_secs(s.drain_timeout.unwrap_or(8)),
            selftest_interval: match s.selftest_interval.unwrap_or(60) {
                0 => None,
                n => Some(std::time::Duration::from_secs(n)),
            },
            max_connections: s.max_connections.unwrap_or(10_000),
            max_connections_per_ip: s.max_connections_per_ip.unwrap_or(64),
            tcp_idle_timeout,
            tls_handshake_timeout,
            http_listen,
            metrics_listen,
            api_keys,
            admin_key: admin_key(s)?,
            cors_origins,
            http_rate_limit: s.http_rate_limit.unwrap_or(60),
            revoked,
            strict_expiry: s.strict_expiry.unwrap_or(false),
            error_rate_per_source: s
                .error_rate_per_source
                .unwrap_or(DEFAULT_ERROR_RATE_PER_SOURCE),
            // A request may not outlive what the server accepts.
            default_ttl: default_ttl.min(max_ttl),
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
            user_quota: s.user_quota.unwrap_or(DEFAULT_USER_QUOTA),
            max_allocations: s.max_allocations.unwrap_or(0),
            max_ttl,
            max_permissions,
            max_channels,
            legacy_channel_numbers: s.legacy_channel_numbers.unwrap_or(false),
            workers,
            log_format,
            usage_log,
            fast_path,
            public_hosts,
        })
    }

    /// The host names handed to clients: configured ones, else the advertised relay IPs.
    pub fn client_hosts(&self) -> Vec<String> {
        if !self.public_hosts.is_empty() {
            return self.public_hosts.clone();
        }
        // With ACME the certificate names the host clients must use for turns: to verify.
        if let Some(acme) = &self.acme {
            return acme.domains.clone();
        }
        [self.relay_v4, self.relay_v6]
            .iter()
            .flatten()
            .take(1)
            .map(|r| r.advertised.to_string())
            .collect()
    }
}

// The steps of `Config::from_settings`, one concern each. Every error starts with the key it
// is about (`realm: ...`), so an operator knows which line to fix.

/// The realm goes into every challenge (RFC 8489 §14.9: fewer than 128 characters).
fn realm(s: &Settings) -> Result<String> {
    let realm = s.realm.clone().unwrap_or_else(|| DEFAULT_REALM.to_owned());
    if realm.is_empty() || realm.len() > 127 || !realm.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("realm: must be 1 to 127 printable ASCII characters without spaces");
    }
    Ok(realm)
}

/// The listen addresses and the relay port range, which must not overlap: a relay socket
/// would compete with the listener for its port.
struct Listeners {
    listen: Vec<SocketAddr>,
    listen_is_default: bool,
    relay_ports: RangeInclusive<u16>,
}

fn listeners(s: &Settings) -> Result<Listeners> {
    let listen_is_default = s.listen.is_none();
    let listen_strs: Vec<String> = match &s.listen {
        Some(l) => l.clone(),
        None => DEFAULT_LISTEN.iter().map(|s| s.to_string()).collect(),
    };
    let listen = parse_list(
        "listen",
        &listen_strs,
        |v| v.parse::<SocketAddr>().ok(),
        "an ADDRESS:PORT (IPv6 in brackets)",
    )?;
    if listen.is_empty() {
        bail!("listen: at least one address is needed");
    }
    let relay_ports = parse_port_range(s.relay_ports.as_deref().unwrap_or(DEFAULT_RELAY_PORTS))?;
    outside_relay_ports("listen port", &listen, &relay_ports)?;
    Ok(Listeners {
        listen,
        listen_is_default,
        relay_ports,
    })
}

/// Refuses a listen address whose port is inside the relay range (port 0 picks a free one).
fn outside_relay_ports(
    what: &str,
    listen: &[SocketAddr],
    relay_ports: &RangeInclusive<u16>,
) -> Result<()> {
    if let Some(l) = listen
        .iter()
        .find(|l| l.port() != 0 && relay_ports.contains(&l.port()))
    {
        bail!(
            "relay_ports: the range contains the {what} {} ({l}); keep them apart",
            l.port()
        );
    }
    Ok(())
}

/// REST shared secrets (flags and `secret_file`; a random one when none is given) and static
/// users.
struct Credentials {
    secrets: Vec<String>,
    secret_is_ephemeral: bool,
    users: Vec<(String, String)>,
}

fn credentials(s: &Settings) -> Result<Credentials> {
    let mut secrets = s.secret.clone().unwrap_or_default();
    secrets.extend(read_list_file("secret_file", s.secret_file.as_deref())?);
    secrets.retain(|x| !x.is_empty());
    if secrets.iter().any(|x| x.len() < 8) {
        bail!("secret: each secret must be at least 8 characters");
    }
    refuse_placeholder("secret", &secrets, "openssl rand -hex 32")?;
    let secret_is_ephemeral = secrets.is_empty();
    if secret_is_ephemeral {
        secrets.push(random_secret());
    }
    let users = parse_list(
        "user",
        s.user.as_deref().unwrap_or_default(),
        |v| {
            let (name, pass) = v.split_once(':')?;
            let ok = |x: &str| {
                !x.is_empty() && x.len() <= 256 && x.bytes().all(|b| b.is_ascii_graphic())
            };
            (ok(name) && ok(pass)).then(|| (name.to_owned(), pass.to_owned()))
        },
        "NAME:PASSWORD (printable ASCII, no spaces)",
    )?;
    Ok(Credentials {
        secrets,
        secret_is_ephemeral,
        users,
    })
}

/// The peer ranges allowed despite the default deny list, and the extra ones refused.
fn peer_ranges(s: &Settings) -> Result<(Vec<Cidr>, Vec<Cidr>)> {
    let range = |key, values: &Option<Vec<String>>| {
        parse_list(
            key,
            values.as_deref().unwrap_or_default(),
            |v| v.parse().ok(),
            "an address range like 10.0.0.0/8",
        )
    };
    Ok((
        range("allow_peer", &s.allow_peer)?,
        range("deny_peer", &s.deny_peer)?,
    ))
}

fn max_ttl(s: &Settings) -> Result<u64> {
    let max_ttl = s.max_ttl.unwrap_or(DEFAULT_MAX_TTL);
    if max_ttl == 0 || max_ttl > 30 * 86_400 {
        bail!("max_ttl: must be between 1 and 2592000 seconds (30 days)");
    }
    Ok(max_ttl)
}

/// Each worker owns a share of the relay ports, so there must be a port for each.
fn workers(s: &Settings, relay_ports: &RangeInclusive<u16>) -> Result<usize> {
    let workers = s
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if workers == 0 || workers > 256 {
        bail!("workers: must be between 1 and 256");
    }
    if workers > relay_ports.clone().count() {
        bail!(
            "workers: {workers} workers need at least as many relay ports (relay_ports has {})",
            relay_ports.clone().count()
        );
    }
    Ok(workers)
}

/// `fast_path` and `fast_path_interface`: "xdp" needs a build with the `xdp` feature and at
/// least one interface name the kernel could have (IFNAMSIZ: 15 bytes, no '/', no space).
/// Whether XDP attaches is found out at start-up; if it cannot, turnd relays in userspace.
fn fast_path(s: &Settings) -> Result<Option<Vec<String>>> {
    let interfaces = s.fast_path_interface.clone().unwrap_or_default();
    match s.fast_path.as_deref().unwrap_or("off") {
        "off" => Ok(None),
        "xdp" => {
            if !cfg!(feature = "xdp") {
                bail!("fast_path: this turnd was built without the `xdp` feature (cargo build --release --features xdp)");
            }
            if interfaces.is_empty() {
                bail!("fast_path_interface: required with fast_path = \"xdp\": name the interfaces client and peer traffic arrives on");
            }
            for i in &interfaces {
                if i.is_empty()
                    || i.len() > 15
                    || i.contains(['/', ' ', '\t'])
                    || i == "."
                    || i == ".."
                {
                    bail!("fast_path_interface: `{i}` is not an interface name (1-15 bytes, no '/' or spaces)");
                }
            }
            // A name given twice is one interface (attaching twice would find it taken).
            let mut unique: Vec<String> = Vec::with_capacity(interfaces.len());
            for i in interfaces {
                if !unique.contains(&i) {
                    unique.push(i);
                }
            }
            Ok(Some(unique))
        }
        other => bail!("fast_path: `{other}` is not one of off, xdp"),
    }
}

/// `usage_log`: "-" is standard output; otherwise a file whose directory exists (the file
/// itself is created at start-up, before anything is bound).
fn usage_log(s: &Settings) -> Result<Option<crate::events::usage_log::UsageTarget>> {
    use crate::events::usage_log::UsageTarget;
    let Some(v) = s.usage_log.as_deref() else {
        return Ok(None);
    };
    if v == "-" {
        return Ok(Some(UsageTarget::Stdout));
    }
    if v.trim().is_empty() {
        bail!("usage_log: empty; give a file path, or `-` for standard output");
    }
    let path = PathBuf::from(v);
    if path.is_dir() {
        bail!("usage_log: `{v}` is a directory; give a file path");
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!("usage_log: the directory of `{v}` does not exist");
    }
    Ok(Some(UsageTarget::File(path)))
}

fn log_format(s: &Settings) -> Result<LogFormat> {
    Ok(match s.log_format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => bail!("log_format: `{other}` is not text or json"),
    })
}

/// Permissions and channel bindings per allocation.
fn per_allocation_limits(s: &Settings) -> Result<(usize, usize)> {
    let max_permissions = s.max_permissions.unwrap_or(64);
    let max_channels = s.max_channels.unwrap_or(64);
    if max_permissions == 0 || max_channels == 0 || max_permissions > 4096 || max_channels > 4096 {
        bail!("max_permissions/max_channels: must be between 1 and 4096");
    }
    Ok((max_permissions, max_channels))
}

fn public_hosts(s: &Settings) -> Result<Vec<String>> {
    let public_hosts = s.public_host.clone().unwrap_or_default();
    if let Some(h) = public_hosts.iter().find(|h| !crate::uris::is_valid_host(h)) {
        bail!("public_host: `{h}` is not a host name or IP address");
    }
    Ok(public_hosts)
}

/// The HTTP credential API (listener, keys, browser origins, default lifetime) and the
/// metrics listener.
struct Http {
    http_listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    api_keys: Vec<String>,
    cors_origins: Vec<String>,
    default_ttl: u64,
}

fn http(s: &Settings) -> Result<Http> {
    let http_listen = optional_addr(
        "http_listen",
        s.http_listen.as_deref().unwrap_or(DEFAULT_HTTP_LISTEN),
    )?;
    let metrics_listen = optional_addr(
        "metrics_listen",
        s.metrics_listen
            .as_deref()
            .unwrap_or(DEFAULT_METRICS_LISTEN),
    )?;
    let mut api_keys = s.api_key.clone().unwrap_or_default();
    api_keys.extend(read_list_file("api_key_file", s.api_key_file.as_deref())?);
    if api_keys
        .iter()
        .any(|k| k.len() < 16 || !k.bytes().all(|b| b.is_ascii_graphic()))
    {
        bail!("api_key: each key must be at least 16 printable ASCII characters");
    }
    refuse_placeholder("api_key", &api_keys, "openssl rand -hex 24")?;
    let cors_origins = s.cors_origin.clone().unwrap_or_default();
    if let Some(o) = cors_origins
        .iter()
        .find(|o| !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/'))
    {
        bail!("cors_origin: `{o}` must be an origin like https://app.example.com (scheme and host, no path)");
    }
    let default_ttl = s.default_ttl.unwrap_or(3600);
    if default_ttl == 0 {
        bail!("default_ttl: must be at least 1 second");
    }
    Ok(Http {
        http_listen,
        metrics_listen,
        api_keys,
        cors_origins,
        default_ttl,
    })
}

/// The admin API's key: long and printable, so it can travel in a header and resists guessing.
fn admin_key(s: &Settings) -> Result<Option<String>> {
    let Some(key) = s.admin_key.as_deref().filter(|k| !k.is_empty()) else {
        return Ok(None);
    };
    if key.len() < 16 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("admin_key: must be at least 16 printable ASCII characters (try `openssl rand -hex 24`)");
    }
    refuse_placeholder("admin_key", &[key.to_owned()], "openssl rand -hex 24")?;
    Ok(Some(key.to_owned()))
}

/// TLS listeners and their certificate files: both files or neither, and no listener inside
/// the relay port range.
struct Tls {
    tls_listen: Vec<SocketAddr>,
    tls_files: Option<(PathBuf, PathBuf)>,
}

fn tls(s: &Settings, relay_ports: &RangeInclusive<u16>) -> Result<Tls> {
    let tls_listen = parse_list(
        "tls_listen",
        s.tls_listen.as_deref().unwrap_or_default(),
        |v| v.parse::<SocketAddr>().ok(),
        "an ADDRESS:PORT (IPv6 in brackets)",
    )?;
    let tls_files = match (&s.tls_cert, &s.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        // With ACME, the certificate comes from the CA.
        (None, None) if tls_listen.is_empty() || s.acme_domain.is_some() => None,
        (None, None) => bail!("tls_cert: tls_listen needs tls_cert and tls_key"),
        (None, Some(_)) => bail!("tls_cert: tls_key is set but tls_cert is not"),
        (Some(_), None) => bail!("tls_key: tls_cert is set but tls_key is not"),
    };
    outside_relay_ports("TLS listen port", &tls_listen, relay_ports)?;
    Ok(Tls {
        tls_listen,
        tls_files,
    })
}

/// Usernames and user ids refused: `revoke` and the lines of `revoke_file`.
fn revoked(s: &Settings) -> Result<Vec<String>> {
    let mut revoked = s.revoke.clone().unwrap_or_default();
    revoked.extend(read_list_file("revoke_file", s.revoke_file.as_deref())?);
    revoked.retain(|x| !x.trim().is_empty());
    Ok(revoked)
}

/// The idle timeout and the TLS handshake timeout of TCP/TLS connections.
fn stream_timeouts(s: &Settings) -> Result<(std::time::Duration, std::time::Duration)> {
    let tcp_idle_timeout = s.tcp_idle_timeout.unwrap_or(30);
    let tls_handshake_timeout = s.tls_handshake_timeout.unwrap_or(10);
    if tcp_idle_timeout == 0 || tls_handshake_timeout == 0 {
        bail!("tcp_idle_timeout/tls_handshake_timeout: must be at least 1 second");
    }
    Ok((
        std::time::Duration::from_secs(tcp_idle_timeout),
        std::time::Duration::from_secs(tls_handshake_timeout),
    ))
}

/// Shorter than /32 would count a whole provider as one client.
fn ipv6_source_prefix(s: &Settings) -> Result<u8> {
    let ipv6_source_prefix = s
        .ipv6_source_prefix
        .unwrap_or(turnd_proto::source_key::DEFAULT_IPV6_PREFIX);
    if !(32..=128).contains(&ipv6_source_prefix) {
        bail!("ipv6_source_prefix: must be between 32 and 128 bits");
    }
    Ok(ipv6_source_prefix)
}

/// RFC 5780's two addresses: the primary and alternate IP and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StunAlternate {
    /// The first `listen` address of the alternate's family on a specific IP.
    pub primary: SocketAddr,
    /// Another IP of this host and another port (0: picked at start-up).
    pub alternate: SocketAddr,
}

/// `stun_alternate` and `stun_alternate_url`. RFC 5780 §6.1 answers CHANGE-REQUEST from the
/// other IP and/or port, so the two addresses must differ in both, and the server must know
/// which of its IPs is the primary: a wildcard listener cannot say.
fn stun_alternate(
    s: &Settings,
    listen: &[SocketAddr],
    relay_ports: &RangeInclusive<u16>,
) -> Result<(Option<StunAlternate>, bool)> {
    let url = s.stun_alternate_url.unwrap_or(false);
    let Some(raw) = s.stun_alternate.as_deref().filter(|v| !v.is_empty()) else {
        if url {
            bail!("stun_alternate_url: needs stun_alternate");
        }
        return Ok((None, false));
    };
    let alternate: SocketAddr = raw.parse().map_err(|_| {
        anyhow::anyhow!("stun_alternate: {raw:?} is not an IP:PORT (IPv6 in brackets)")
    })?;
    if alternate.ip().is_unspecified() {
        bail!("stun_alternate: {alternate} is a wildcard; give the host's second IP");
    }
    let Some(primary) = listen
        .iter()
        .find(|l| l.is_ipv4() == alternate.is_ipv4() && !l.ip().is_unspecified())
        .copied()
    else {
        bail!(
            "stun_alternate: needs a listen address of the same family on a specific IP (not \
             0.0.0.0 or [::]): RFC 5780 answers from that IP and {}",
            alternate.ip()
        );
    };
    if primary.ip() == alternate.ip() {
        bail!(
            "stun_alternate: {} is the listen address's IP; RFC 5780 needs a second IP",
            alternate.ip()
        );
    }
    if alternate.port() != 0 && alternate.port() == primary.port() {
        bail!(
            "stun_alternate: port {} is the listen port; RFC 5780 needs a second port",
            alternate.port()
        );
    }
    outside_relay_ports("stun_alternate port", &[alternate], relay_ports)?;
    Ok((Some(StunAlternate { primary, alternate }), url))
}

fn max_allocations_per_address(s: &Settings) -> Result<u32> {
    let max = s
        .max_allocations_per_address
        .unwrap_or(DEFAULT_MAX_ALLOCATIONS_PER_ADDRESS);
    if max > 1_000_000 {
        bail!("max_allocations_per_address: must be at most 1000000 (0 = no limit)");
    }
    Ok(max)
}

/// The HTTP listeners' deadlines and connection cap (`src/http/edge/`).
struct HttpEdge {
    http_header_timeout: std::time::Duration,
    http_body_timeout: std::time::Duration,
    http_idle_timeout: std::time::Duration,
    http_max_connections: u32,
}

fn http_edge(s: &Settings) -> Result<HttpEdge> {
    let secs = |key: &str, v: Option<u64>, default: u64| -> Result<std::time::Duration> {
        match v.unwrap_or(default) {
            n @ 1..=3600 => Ok(std::time::Duration::from_secs(n)),
            _ => bail!("{key}: must be between 1 and 3600 seconds"),
        }
    };
    let http_header_timeout = secs("http_header_timeout", s.http_header_timeout, 10)?;
    let http_body_timeout = secs("http_body_timeout", s.http_body_timeout, 10)?;
    let http_idle_timeout = secs("http_idle_timeout", s.http_idle_timeout, 30)?;
    let http_max_connections = s.http_max_connections.unwrap_or(1024);
    if http_max_connections == 0 || http_max_connections > 1_000_000 {
        bail!("http_max_connections: must be between 1 and 1000000");
    }
    Ok(HttpEdge {
        http_header_timeout,
        http_body_timeout,
        http_idle_timeout,
        http_max_connections,
    })
}

fn random_secret() -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A listen address as a client on this host reaches it: a wildcard (`0.0.0.0`, `[::]`) is
/// loopback of its family (the CLI commands that call turnd's own HTTP listeners).
pub fn as_local_client_reaches(mut addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> Settings {
        Settings::from_toml(toml).unwrap()
    }

    /// config/turnd.toml documents every setting the command line knows, and parses.
    #[test]
    fn shipped_config_lists_every_key() {
        use clap::Args;
        let text = include_str!("../config/turnd.toml");
        Settings::from_toml(text).expect("config/turnd.toml parses");
        let cmd = Settings::augment_args(clap::Command::new("t"));
        for arg in cmd.get_arguments() {
            let key = arg.get_id().as_str();
            if key == "config" {
                continue;
            }
            let listed = text.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.starts_with(&format!("{key} ="))
            });
            assert!(listed, "config/turnd.toml does not mention `{key}`");
        }
    }

    /// Every key set in a file reaches the merged settings (a hand-kept list once forgot some).
    /// config/turnd.toml with every example uncommented: a value for every key.
    fn uncommented_example() -> String {
        include_str!("../config/turnd.toml")
            .lines()
            .map(|l| {
                // Uncomment the examples (`# key = value`), not the prose.
                let example = l.strip_prefix("# ").filter(|r| {
                    r.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty()
                            && k.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    })
                });
                example.unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn every_file_key_survives_layering() {
        let text = uncommented_example();
        let file = Settings::from_toml(&text).expect("the uncommented example parses");
        let merged = Settings::default().or(&file);
        assert_eq!(
            serde_json::to_value(&merged).unwrap(),
            serde_json::to_value(&file).unwrap()
        );
        let file_json = serde_json::to_value(&file).unwrap();
        let unset: Vec<_> = file_json
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| v.is_null())
            .map(|(k, _)| k.clone())
            .collect();
        assert!(
            unset.is_empty(),
            "config/turnd.toml should show every key: {unset:?}"
        );
    }

    /// Every repeatable key takes a single string for one value (`secret = "s"`), as people
    /// write it; the list of such keys comes from the example file, not from a hand-kept list.
    #[test]
    fn every_repeatable_key_takes_a_single_string() {
        let example =
            serde_json::to_value(Settings::from_toml(&uncommented_example()).unwrap()).unwrap();
        let mut repeatable = 0;
        for (key, value) in example.as_object().unwrap() {
            let Some(list) = value.as_array() else {
                continue;
            };
            let first = list.first().and_then(|v| v.as_str()).unwrap_or("x");
            let one = Settings::from_toml(&format!("{key} = {}", toml::Value::from(first)))
                .unwrap_or_else(|e| panic!("{key} = \"{first}\": {e}"));
            assert_eq!(
                serde_json::to_value(one).unwrap()[key],
                serde_json::json!([first]),
                "{key}"
            );
            repeatable += 1;
        }
        assert!(repeatable >= 12, "only {repeatable} repeatable keys found");
    }

    #[test]
    fn example_host_names_are_recognised() {
        for h in [
            "relay.example.com",
            "example.org",
            "turn.example",
            "RELAY.EXAMPLE.NET.",
        ] {
            assert!(is_example_host(h), "{h}");
        }
        for h in [
            "relay.myexample.com",
            "example.com.evil.net",
            "turn.example.co",
            "203.0.113.5",
        ] {
            assert!(!is_example_host(h), "{h}");
        }
    }

    #[test]
    fn example_placeholders_are_refused_by_key() {
        for (toml, key) in [
            ("secret = \"change-me-to-a-long-random-secret\"", "secret:"),
            (
                "api_key = \"change-me-to-a-long-random-api-key\"",
                "api_key:",
            ),
        ] {
            let err =
                Config::from_settings(&settings(&format!("listen = [\"127.0.0.1:3478\"]\n{toml}")))
                    .unwrap_err();
            assert!(format!("{err:#}").starts_with(key), "{err:#}");
        }
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = settings("realm = \"from-file\"\nuser_quota = 3\nlisten = [\"127.0.0.1:3478\"]");
        let flags = Settings {
            realm: Some("from-flag".into()),
            ..Default::default()
        };
        let merged = flags.or(&file);
        assert_eq!(merged.realm.as_deref(), Some("from-flag"));
        assert_eq!(merged.user_quota, Some(3));
    }

    #[test]
    fn fast_path_is_off_by_default_and_checked_when_asked_for() {
        let with = |extra: &str| {
            Config::from_settings(&settings(&format!(
                "listen = [\"127.0.0.1:3478\"]\n{extra}"
            )))
        };
        assert_eq!(with("").unwrap().fast_path, None);
        assert_eq!(with("fast_path = \"off\"").unwrap().fast_path, None);
        let err = |extra: &str| format!("{:#}", with(extra).unwrap_err());
        assert!(err("fast_path = \"dpdk\"").starts_with("fast_path: `dpdk`"));
        if cfg!(feature = "xdp") {
            assert!(err("fast_path = \"xdp\"").starts_with("fast_path_interface: required"));
            for bad in ["", "a/b", "has space", "sixteen-bytes-xx"] {
                let e = err(&format!(
                    "fast_path = \"xdp\"\nfast_path_interface = [\"{bad}\"]"
                ));
                assert!(e.starts_with("fast_path_interface:"), "{bad}: {e}");
            }
            let c =
                with("fast_path = \"xdp\"\nfast_path_interface = [\"eth0\", \"eth1\", \"eth0\"]")
                    .unwrap();
            assert_eq!(
                c.fast_path,
                Some(vec!["eth0".to_owned(), "eth1".to_owned()])
            );
        } else {
            assert!(err("fast_path = \"xdp\"").contains("without the `xdp` feature"));
        }
    }

    #[test]
    fn errors_name_the_key() {
        let err = |t: &str| format!("{:#}", Config::from_settings(&settings(t)).unwrap_err());
        assert!(
            err("relay_ports = \"60000-50000\"\nlisten=[\"127.0.0.1:3478\"]")
                .starts_with("relay_ports:")
        );
        assert!(err("listen = [\"nonsense\"]").starts_with("listen:"));
        assert!(
            err("listen = [\"127.0.0.1:3478\"]\nallow_peer = [\"10.0.0.0/99\"]")
                .starts_with("allow_peer:")
        );
        assert!(err("listen = [\"127.0.0.1:3478\"]\nuser = [\"nocolon\"]").starts_with("user:"));
        assert!(
            err("listen = [\"127.0.0.1:3478\"]\nlog_format = \"xml\"").starts_with("log_format:")
        );
        assert!(err("listen = [\"127.0.0.1:50000\"]").starts_with("relay_ports:"));
        assert!(err("listen = [\"127.0.0.1:3478\"]\nsecret = [\"short\"]").starts_with("secret:"));
        assert!(
            err("listen = [\"127.0.0.1:3478\"]\nmax_allocations_per_address = 2000000")
                .starts_with("max_allocations_per_address:")
        );
        let alt = |a: &str| err(&format!("listen = [\"127.0.0.1:3478\"]\n{a}"));
        for bad in [
            "stun_alternate = \"nonsense\"",
            "stun_alternate = \"0.0.0.0:3479\"",
            "stun_alternate = \"127.0.0.1:3479\"",
            "stun_alternate = \"127.0.0.2:3478\"",
            "stun_alternate = \"[::2]:3479\"",
        ] {
            assert!(
                alt(bad).starts_with("stun_alternate:"),
                "{bad}: {}",
                alt(bad)
            );
        }
        assert!(alt("stun_alternate_url = true").starts_with("stun_alternate_url:"));
        assert!(err("stun_alternate = \"127.0.0.2:3479\"").starts_with("stun_alternate:"));
        let ok = Config::from_settings(&settings(
            "listen = [\"127.0.0.1:3478\"]\nstun_alternate = \"127.0.0.2:0\"",
        ))
        .unwrap();
        assert_eq!(
            ok.stun_alternate.map(|a| a.primary),
            Some("127.0.0.1:3478".parse().unwrap())
        );
        for key in [
            "http_header_timeout",
            "http_body_timeout",
            "http_idle_timeout",
        ] {
            assert!(err(&format!("listen = [\"127.0.0.1:3478\"]\n{key} = 0")).starts_with(key));
        }
        assert!(
            err("listen = [\"127.0.0.1:3478\"]\nhttp_max_connections = 0")
                .starts_with("http_max_connections:")
        );
        let unknown = format!("{:#}", Settings::from_toml("no_such_key = 1").unwrap_err());
        assert!(unknown.contains("no_such_key"), "{unknown}");
    }

    #[test]
    fn acme_domains_are_the_client_hosts_without_public_host() {
        let base = "acme_domain = \"turn.example.com\"\nacme_cache = \"/tmp/c\"\ntls_listen = \"127.0.0.1:5349\"\nrelay_ip = \"127.0.0.1\"\n";
        let c = Config::from_settings(&settings(base)).unwrap();
        assert_eq!(c.client_hosts(), ["turn.example.com"]);
        let c = Config::from_settings(&settings(&format!(
            "{base}public_host = \"relay.example.com\"\n"
        )))
        .unwrap();
        assert_eq!(c.client_hosts(), ["relay.example.com"]);
    }

    #[test]
    fn missing_secret_becomes_ephemeral() {
        let c = Config::from_settings(&settings("listen = [\"127.0.0.1:3478\"]")).unwrap();
        assert!(c.secret_is_ephemeral);
        assert_eq!(c.secrets.len(), 1);
        assert_eq!(
            c.relay_v4.unwrap().bind,
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert!(c.relay_v6.is_none());
    }

    #[test]
    fn external_ip_maps_the_relay_of_its_family() {
        let c = Config::from_settings(&settings(
            "listen = [\"127.0.0.1:3478\"]\nrelay_ip = [\"127.0.0.1\"]\nexternal_ip = [\"203.0.113.5\"]",
        ))
        .unwrap();
        let r = c.relay_v4.unwrap();
        assert_eq!(
            (r.bind.to_string(), r.advertised.to_string()),
            ("127.0.0.1".into(), "203.0.113.5".into())
        );
        assert_eq!(c.client_hosts(), vec!["203.0.113.5".to_string()]);
    }
}
