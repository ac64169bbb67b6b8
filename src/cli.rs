//! The command line: `turnd serve | credentials | selftest | nat | sessions | check-config`.

use crate::config::{Config, Settings};
use crate::uris::{self, Listeners};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "turnd",
    version,
    about = "A self-hosted STUN/TURN relay for WebRTC applications"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

impl Cli {
    /// Parses the process's arguments and `TURND_*` environment, where a variable that is set
    /// but empty counts as not set ([`crate::config::unset_empty_env`]). A bad flag or value
    /// prints clap's message and exits 2.
    pub fn from_env_and_args() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let matches = crate::config::unset_empty_env(Cli::command()).get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the relay.
    Serve(Settings),
    /// Print TURN REST credentials as JSON: {username, password, ttl, uris}.
    Credentials {
        /// User id the credential is for (the part after the expiry).
        #[arg(long)]
        username: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        #[command(flatten)]
        settings: Settings,
    },
    /// Prove relay-only connectivity end to end with two TURN client peers, and name the
    /// cause when it fails (exit 0 when every transport passed).
    Selftest(crate::selftest::cli::SelftestArgs),
    /// What the network between here and a STUN server allows (RFC 5780 NAT behaviour
    /// discovery): UDP reachability, mapping, filtering, hairpinning, and what that means for
    /// WebRTC. Exit 0 when UDP reaches the server, 1 when it does not, 2 for bad arguments.
    Nat(crate::nat::NatArgs),
    /// Exit 0 when the local turnd answers /readyz with 200 (for Docker's HEALTHCHECK: no curl
    /// needed in the image).
    Healthcheck {
        /// Base URL of the HTTP service [default: from http_listen, loopback if unspecified].
        #[arg(long)]
        url: Option<String>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Certificates for TURN over TLS.
    #[command(subcommand)]
    Cert(CertCmd),
    /// Live sessions through the admin API of a running turnd (on its metrics listener):
    /// `list` them, or `kill` a user's.
    #[command(subcommand)]
    Sessions(crate::sessions::SessionsCmd),
    /// Validate a configuration file and exit (0 when valid).
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Write a small CA (ca.pem) and a leaf certificate for the host signed by it (cert.pem,
    /// key.pem): give cert.pem and key.pem to turnd (tls_cert, tls_key) and ca.pem to the
    /// clients that must trust it (`turnd selftest --ca`, the browser or OS trust store).
    SelfSigned {
        /// Host name or IP address clients connect to, repeatable (the certificate's names).
        #[arg(long, required = true)]
        host: Vec<String>,
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Serve(settings) => serve(settings),
        Cmd::Credentials {
            username,
            ttl,
            settings,
        } => credentials(&username, ttl, settings),
        Cmd::CheckConfig { file } => check_config(&file),
        Cmd::Cert(CertCmd::SelfSigned { host, out }) => {
            let w = crate::certs::self_signed(&host, &out)?;
            println!(
                "wrote {ca} (the CA clients trust), {cert} and {key} (the server's leaf for {host:?})\n\
                 serve:    turnd serve --tls-listen 0.0.0.0:5349 --tls-cert {cert} --tls-key {key}\n\
                 selftest: turnd selftest --ca {ca} ...\n\
                 browsers: import {ca} as a trusted authority (or use a certificate from a public CA)",
                ca = w.ca.display(),
                cert = w.cert.display(),
                key = w.key.display(),
            );
            Ok(())
        }
        Cmd::Healthcheck { url, settings } => {
            let url = match url {
                Some(u) => u,
                None => {
                    let s = settings.resolve()?;
                    let listen = s
                        .http_listen
                        .as_deref()
                        .unwrap_or(crate::config::DEFAULT_HTTP_LISTEN);
                    let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
                        anyhow::anyhow!("http_listen: `{listen}` is not an ADDRESS:PORT")
                    })?;
                    let addr = crate::config::as_local_client_reaches(addr);
                    format!("http://{addr}")
                }
            };
            let (status, body) = crate::selftest::cli::http_get(
                &format!("{}/readyz", url.trim_end_matches('/')),
                None,
            )?;
            if status != 200 {
                eprintln!("turnd: not ready ({status}): {body}");
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Nat(args) => {
            let code = crate::nat::run(args)?;
            std::process::exit(code)
        }
        Cmd::Selftest(args) => {
            let code = crate::selftest::cli::run(args)?;
            std::process::exit(code)
        }
        Cmd::Sessions(cmd) => {
            let code = crate::sessions::run(cmd)?;
            std::process::exit(code)
        }
    }
}

fn serve(settings: Settings) -> Result<()> {
    let mut config = Config::from_settings(&settings.clone().resolve()?)?;
    crate::logging::init(config.log_format);
    // Installed before anything is bound, so a signal that arrives as soon as /readyz says
    // ready still takes the clean path.
    let mut signals = stop_signals()?;
    let running = crate::serve::start(&config)?;
    announce(&config, &running);
    for sig in signals.forever() {
        if sig == signal_hook::consts::SIGHUP {
            // logrotate renamed the usage log: new records go to a new file of that name.
            running.reopen_usage_log();
            if let Some(next) = reload(&settings, &config, &running) {
                config = next;
            }
            continue;
        }
        if sig == signal_hook::consts::SIGTERM {
            drain(&running, config.drain_timeout, &mut signals);
        }
        tracing::info!(signal = sig, "stopping");
        break;
    }
    running.shutdown();
    Ok(())
}

/// SIGHUP: re-reads the configuration file (and the files it names) under the same flags and
/// environment, and applies what can change in place. Returns the configuration now in force,
/// or None when the new one was refused (invalid, or an unreadable certificate).
fn reload(
    settings: &Settings,
    current: &Config,
    running: &crate::serve::Running,
) -> Option<Config> {
    let refused = |e: anyhow::Error| {
        tracing::error!(error = %format!("{e:#}"), "SIGHUP: reload refused; the old configuration stays");
    };
    let new = match settings
        .clone()
        .resolve()
        .and_then(|s| Config::from_settings(&s))
    {
        Ok(c) => c,
        Err(e) => {
            refused(e);
            return None;
        }
    };
    let crate::reload::Plan {
        next,
        restart,
        changed,
    } = crate::reload::plan(current, &new);
    if let Err(e) = running.reload(&next) {
        refused(e);
        return None;
    }
    for key in &restart {
        tracing::warn!(key, "SIGHUP: {key} changed; needs a restart");
    }
    tracing::info!(
        changed = %if changed.is_empty() { "none".to_owned() } else { changed.join(",") },
        secrets = next.secrets.len(),
        users = next.users.len(),
        revoked = next.revoked.len(),
        allow_peer = next.allow_peer.len(),
        deny_peer = next.deny_peer.len(),
        api_keys = next.api_keys.len(),
        strict_expiry = next.strict_expiry,
        tls_certificate = if next.tls_files.is_some() { "re-read" } else { "none" },
        "SIGHUP: configuration reloaded; allocations kept unless their credential is no longer accepted"
    );
    Some(next)
}

/// SIGTERM: refuse new allocations, report not ready, and let existing allocations run until
/// they end or the drain timeout passes. SIGINT cuts the drain short: it means stop now,
/// whenever it comes (a SIGHUP meanwhile is ignored: the process is on its way out).
fn drain(
    running: &crate::serve::Running,
    timeout: std::time::Duration,
    signals: &mut signal_hook::iterator::Signals,
) {
    running.ledger.start_draining();
    let deadline = std::time::Instant::now() + timeout;
    let left = running.ledger.total();
    if left > 0 {
        tracing::info!(
            allocations = left,
            timeout_secs = timeout.as_secs(),
            "draining: no new allocations"
        );
    }
    while running.ledger.total() > 0 && std::time::Instant::now() < deadline {
        if signals.pending().any(|s| s == signal_hook::consts::SIGINT) {
            tracing::info!("SIGINT: drain cut short");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let left = running.ledger.total();
    if left > 0 {
        tracing::warn!(
            allocations = left,
            "drain timeout: closing the remaining allocations"
        );
    }
}

fn announce(config: &Config, running: &crate::serve::Running) {
    for addr in &running.udp {
        tracing::info!(%addr, transport = "udp+tcp", "listening");
    }
    for addr in &running.tls {
        tracing::info!(%addr, transport = "tls", "listening");
    }
    for r in [config.relay_v4, config.relay_v6].iter().flatten() {
        tracing::info!(bind = %r.bind, advertised = %r.advertised, ports = ?config.relay_ports, "relaying");
        if r.advertised == r.bind {
            if let Some(kind) = unreachable_kind(r.advertised) {
                tracing::warn!(
                    "the relay address {} is {kind}, not reachable from the Internet, and no --external-ip is set: clients on other networks cannot reach it (behind NAT or in a container, set --external-ip to the public address)",
                    r.advertised
                );
                if in_container() && config.relay_ports.clone().count() > 1000 {
                    tracing::warn!(
                        ports = config.relay_ports.clone().count(),
                        "a large relay port range in a container that looks bridged: publishing thousands of UDP ports makes Docker slow and memory-hungry; use host networking, or a small --relay-ports range published 1:1"
                    );
                }
            }
        }
        if r.advertised.is_loopback() {
            tracing::warn!("the relay address {} is loopback: only clients on this host can use it; set --relay-ip/--external-ip", r.advertised);
        }
    }
    if let Some(http) = &running.http {
        tracing::info!(addr = %http.addr, "HTTP credential API and health checks");
        tracing::info!(
            url = %test_page_url(http.addr, config),
            "relay test page (add ?autorun to start at once, ?transport=udp|tcp|tls for one transport)"
        );
        if config.api_keys.is_empty() {
            tracing::warn!("no --api-key: the credential endpoints answer loopback clients only");
        }
    }
    if let Some(m) = &running.metrics {
        tracing::info!(addr = %m.addr, "Prometheus metrics at /metrics, admin API at /admin/v1/");
        if !m.addr.ip().is_loopback() && config.admin_key.is_none() {
            tracing::warn!(addr = %m.addr, "metrics_listen is beyond loopback and no admin_key is configured: the admin API answers 403 until one is set");
        } else if config.admin_key.is_none() {
            tracing::info!("no admin_key: the admin API answers loopback callers without a key");
        }
    }
    match &config.usage_log {
        Some(crate::events::usage_log::UsageTarget::File(path)) => {
            tracing::info!(path = %path.display(), "usage records appended (reopened on SIGHUP)")
        }
        Some(crate::events::usage_log::UsageTarget::Stdout) => {
            tracing::info!("usage records on standard output")
        }
        None => {}
    }
    for host in config
        .public_hosts
        .iter()
        .filter(|h| crate::config::is_example_host(h))
    {
        tracing::warn!(
            "public_host {host} is an example name (RFC 2606): clients cannot resolve it; set the relay's real DNS name"
        );
    }
    if !config.secret_is_ephemeral
        && config
            .secrets
            .iter()
            .any(|s| s.len() < crate::config::SHORT_SECRET)
    {
        tracing::warn!(
            "a secret is shorter than {} bytes: REST credentials are only as strong as the secret; use `openssl rand -hex 32`",
            crate::config::SHORT_SECRET
        );
    }
    if config.secret_is_ephemeral {
        tracing::warn!("no --secret configured: using a random ephemeral secret; REST credentials minted elsewhere will not work and none survive a restart");
    }
    tracing::info!(workers = config.workers, realm = %config.realm, "turnd ready");
}

/// Why an address is not reachable from the Internet, if it is not: private (RFC 1918,
/// CGNAT RFC 6598, ULA RFC 4193) or reserved for documentation (RFC 5737, RFC 3849).
fn unreachable_kind(ip: std::net::IpAddr) -> Option<&'static str> {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_private() || (o[0] == 100 && (o[1] & 0xC0) == 64) {
                Some("private")
            } else if matches!(o[..3], [192, 0, 2] | [198, 51, 100] | [203, 0, 113]) {
                Some("in a documentation range")
            } else {
                None
            }
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            if (s[0] & 0xFE00) == 0xFC00 {
                Some("private")
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("in a documentation range")
            } else {
                None
            }
        }
    }
}

/// The test page as a person opens it: the HTTP listener's address (loopback when it listens
/// on every address, since that is where the operator is), plus the API key hint.
fn test_page_url(http: std::net::SocketAddr, config: &Config) -> String {
    let host = match (http.ip().is_unspecified(), config.public_hosts.first()) {
        (true, Some(h)) => h.clone(),
        _ => http.ip().to_string(),
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let key = if config.api_keys.is_empty() {
        ""
    } else {
        "?key=API_KEY"
    };
    format!("http://{host}:{}/{key}", http.port())
}

/// Whether turnd runs inside a container (Docker, Podman, Kubernetes).
fn in_container() -> bool {
    std::path::Path::new("/.dockerenv").exists()
        || std::path::Path::new("/run/.containerenv").exists()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// SIGINT and SIGTERM (stop) and SIGHUP (reload), caught.
fn stop_signals() -> Result<signal_hook::iterator::Signals> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install signal handlers")
}

/// The listeners a configuration will open, for URLs minted offline.
pub fn configured_listeners(config: &Config) -> Listeners {
    // TCP listens on every UDP listen address; TLS on its own.
    let udp: Vec<u16> = config.listen.iter().map(|a| a.port()).collect();
    let tls = config.tls_listen.iter().map(|a| a.port()).collect();
    Listeners {
        tcp: udp.clone(),
        udp,
        tls,
        // A port of 0 is only known once bound.
        stun_alternate: config
            .stun_alternate
            .filter(|a| config.stun_alternate_url && a.alternate.port() != 0)
            .map(|a| a.alternate),
    }
}

fn credentials(username: &str, ttl: u64, settings: Settings) -> Result<()> {
    let settings = settings.resolve()?;
    if settings.secret.as_ref().is_none_or(|s| s.is_empty()) {
        bail!("secret: needed to mint credentials (--secret, TURND_SECRET, or `secret` in the config file)");
    }
    if username.is_empty()
        || username.len() > turnd_proto::auth::MAX_REST_USER_ID
        || !username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@+=".contains(&b))
    {
        bail!("username: must be 1 to 128 characters of A-Z a-z 0-9 - _ . @ + =");
    }
    let config = Config::from_settings(&settings)?;
    if ttl == 0 || ttl > config.max_ttl {
        bail!("ttl: must be between 1 and max_ttl ({})", config.max_ttl);
    }
    // The first secret mints; every configured secret verifies (rotation).
    let cred = turnd_proto::auth::mint_rest_credential(
        config.secrets[0].as_bytes(),
        username,
        crate::clock::unix_now(),
        ttl,
    );
    let listeners = configured_listeners(&config);
    let out = serde_json::json!({
        "username": cred.username,
        "password": cred.password,
        "ttl": cred.ttl,
        "uris": uris::turn_urls(&config.client_hosts(), &listeners),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn check_config(file: &std::path::Path) -> Result<()> {
    let settings = Settings::from_file(file)?;
    let config = Config::from_settings(&settings)?;
    println!(
        "{}: ok (listen {:?}, relay ports {:?}, {} secret(s), {} static user(s))",
        file.display(),
        config.listen,
        config.relay_ports,
        if config.secret_is_ephemeral {
            0
        } else {
            config.secrets.len()
        },
        config.users.len()
    );
    Ok(())
}
