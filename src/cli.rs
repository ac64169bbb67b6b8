//! The command line: `turnd serve | credentials | check-config`.

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
    /// Validate a configuration file and exit (0 when valid).
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
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
        Cmd::Selftest(args) => {
            let code = crate::selftest::cli::run(args)?;
            std::process::exit(code)
        }
    }
}

fn serve(settings: Settings) -> Result<()> {
    let config = Config::from_settings(&settings.resolve()?)?;
    crate::logging::init(config.log_format);
    // Installed before anything is bound, so a signal that arrives as soon as /readyz says
    // ready still takes the clean path.
    let mut signals = stop_signals()?;
    let running = crate::serve::start(&config)?;
    announce(&config, &running);
    for sig in signals.forever() {
        if sig == signal_hook::consts::SIGHUP {
            match running.reload_tls() {
                Ok(()) => tracing::info!("SIGHUP: configuration reloaded (TLS certificate)"),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "SIGHUP: reload refused; the old configuration stays")
                }
            }
            continue;
        }
        tracing::info!(signal = sig, "stopping");
        break;
    }
    running.shutdown();
    Ok(())
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
        if r.advertised.is_loopback() {
            tracing::warn!("the relay address {} is loopback: only clients on this host can use it; set --relay-ip/--external-ip", r.advertised);
        }
    }
    if let Some(http) = &running.http {
        tracing::info!(addr = %http.addr, "HTTP credential API and health checks");
        if config.api_keys.is_empty() {
            tracing::warn!("no --api-key: the credential endpoints answer loopback clients only");
        }
    }
    if let Some(http) = &running.http {
        tracing::info!(addr = %http.addr, "HTTP credential API and health checks");
        if config.api_keys.is_empty() {
            tracing::warn!("no --api-key: the credential endpoints answer loopback clients only");
        }
    }
    if let Some(m) = &running.metrics {
        tracing::info!(addr = %m.addr, "Prometheus metrics at /metrics");
    }
    if config.secret_is_ephemeral {
        tracing::warn!("no --secret configured: using a random ephemeral secret; REST credentials minted elsewhere will not work and none survive a restart");
    }
    tracing::info!(workers = config.workers, realm = %config.realm, "turnd ready");
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
    }
}

fn credentials(username: &str, ttl: u64, settings: Settings) -> Result<()> {
    let settings = settings.resolve()?;
    if settings.secret.as_ref().is_none_or(|s| s.is_empty()) {
        bail!("secret: needed to mint credentials (--secret, TURND_SECRET, or `secret` in the config file)");
    }
    if username.is_empty()
        || username.len() > 128
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
