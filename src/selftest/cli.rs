//! The `turnd selftest` command line: which servers to test and with what credentials.
//!
//! * `--url http://HOST:PORT [--api-key K]`: fetch ICE servers from turnd's HTTP endpoint as an
//!   app would, then test every TURN URL it hands out.
//! * `--server HOST:PORT (--secret S | --user NAME:PASS) [--transport udp|tcp|tls]`: test any
//!   TURN server (coturn, a hosted relay).

use super::link::Kind;
use super::{Options, Report, Target};
use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct SelftestArgs {
    /// turnd's HTTP base URL (http://HOST:PORT): fetch credentials like an app, test every TURN
    /// URL handed out.
    #[arg(long, conflicts_with_all = ["server", "secret", "user"])]
    pub url: Option<String>,
    /// API key for --url.
    #[arg(long, env = "TURND_SELFTEST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// A TURN server HOST:PORT to test directly.
    #[arg(long)]
    pub server: Option<String>,
    /// TURN REST shared secret for --server.
    #[arg(long, conflicts_with = "user", hide_env_values = true)]
    pub secret: Option<String>,
    /// Static credentials NAME:PASSWORD for --server.
    #[arg(long)]
    pub user: Option<String>,
    /// Transport for --server, repeatable.
    #[arg(long, value_parser = ["udp", "tcp", "tls"], default_value = "udp")]
    pub transport: Vec<String>,
    /// CA certificate (PEM) to trust for TLS instead of the built-in public roots.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Name to verify the TLS certificate against [default: the host].
    #[arg(long)]
    pub tls_name: Option<String>,
    /// Seconds each step may take.
    #[arg(long, default_value_t = 3)]
    pub timeout: u64,
    /// JSON output for machines.
    #[arg(long)]
    pub json: bool,
}

fn tls_config(ca: Option<&PathBuf>) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in rustls::pki_types::CertificateDer::pem_file_iter(path)
                .with_context(|| format!("ca: cannot read {}", path.display()))?
            {
                roots.add(cert.with_context(|| format!("ca: {} is not PEM", path.display()))?)?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow!("{host} does not resolve"))
}

/// Splits `HOST:PORT` (IPv6 in brackets).
fn host_port(s: &str) -> Result<(String, u16)> {
    let (h, p) = s
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("`{s}` is not HOST:PORT"))?;
    Ok((
        h.to_owned(),
        p.parse().with_context(|| format!("`{p}` is not a port"))?,
    ))
}

/// Parses `turn:HOST:PORT?transport=udp|tcp` or `turns:HOST:PORT?transport=tcp` (RFC 7065).
pub fn parse_turn_url(url: &str) -> Result<(Kind, String, u16)> {
    let (scheme, rest) = url
        .split_once(':')
        .ok_or_else(|| anyhow!("`{url}` is not a TURN URL"))?;
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    let transport = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("transport="));
    let kind = match (scheme, transport) {
        ("turn", None | Some("udp")) => Kind::Udp,
        ("turn", Some("tcp")) => Kind::Tcp,
        ("turns", None | Some("tcp")) => Kind::Tls,
        _ => bail!("`{url}`: unsupported scheme or transport"),
    };
    let (host, port) = match host_port(hostport) {
        Ok(hp) => hp,
        Err(_) => (
            hostport.to_owned(),
            if kind == Kind::Tls { 5349 } else { 3478 },
        ),
    };
    Ok((kind, host, port))
}

/// A blocking HTTP/1.1 GET; returns status and body.
pub(crate) fn http_get(url: &str, api_key: Option<&str>) -> Result<(u16, String)> {
    http_request("GET", url, api_key)
}

/// A blocking HTTP/1.1 request without a body; returns status and body.
pub(crate) fn http_request(
    method: &str,
    url: &str,
    api_key: Option<&str>,
) -> Result<(u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("url: only http:// is supported (`{url}`)"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let (host, port) =
        host_port(authority).or_else(|_| Ok::<_, anyhow::Error>((authority.to_owned(), 80)))?;
    let addr = resolve(&host, port)?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("url: cannot connect to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = api_key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nAccept: application/json\r\n{auth}\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("url: not an HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("url: no status"))?;
    Ok((status, body.to_owned()))
}

/// The targets to test.
fn targets(args: &SelftestArgs) -> Result<Vec<Target>> {
    if let Some(url) = &args.url {
        let base = url.trim_end_matches('/');
        let (status, body) = http_get(
            &format!("{base}/api/v1/ice-servers?username=turnd-selftest&ttl=600"),
            args.api_key.as_deref(),
        )?;
        if status != 200 {
            let error = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(body);
            let hint = match status {
                401 => " (pass the API key with --api-key)",
                403 => " (the endpoint answers loopback clients only until turnd has an --api-key)",
                _ => "",
            };
            bail!("the credential endpoint answered {status}: {error}{hint}");
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).context("url: the answer is not JSON")?;
        let mut out = Vec::new();
        for s in v["iceServers"]
            .as_array()
            .ok_or_else(|| anyhow!("url: no iceServers in the answer"))?
        {
            let (Some(user), Some(pass)) = (s["username"].as_str(), s["credential"].as_str())
            else {
                continue;
            };
            for u in s["urls"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u.as_str())
            {
                if !u.starts_with("turn") {
                    continue;
                }
                let (kind, host, port) = parse_turn_url(u)?;
                out.push(Target {
                    kind,
                    server: resolve(&host, port)?,
                    host: args.tls_name.clone().unwrap_or(host),
                    url: u.to_owned(),
                    username: user.into(),
                    password: pass.into(),
                });
            }
        }
        if out.is_empty() {
            bail!("the credential endpoint handed out no TURN URL");
        }
        return Ok(out);
    }
    let server = args
        .server
        .as_deref()
        .ok_or_else(|| anyhow!("give --url, or --server with --secret or --user"))?;
    let (host, port) = host_port(server).context("server")?;
    let addr = resolve(&host, port).context("server")?;
    let (username, password) = match (&args.secret, &args.user) {
        (Some(secret), None) => {
            let c = turnd_proto::auth::mint_rest_credential(
                secret.as_bytes(),
                "turnd-selftest",
                crate::clock::unix_now(),
                600,
            );
            (c.username, c.password)
        }
        (None, Some(user)) => {
            let (u, p) = user
                .split_once(':')
                .ok_or_else(|| anyhow!("user: expected NAME:PASSWORD"))?;
            (u.to_owned(), p.to_owned())
        }
        _ => bail!("secret: --server needs --secret or --user"),
    };
    let mut out = Vec::new();
    for t in &args.transport {
        let kind = match t.as_str() {
            "tcp" => Kind::Tcp,
            "tls" => Kind::Tls,
            _ => Kind::Udp,
        };
        let scheme = if kind == Kind::Tls { "turns" } else { "turn" };
        let transport = if kind == Kind::Udp { "udp" } else { "tcp" };
        out.push(Target {
            kind,
            server: addr,
            host: args.tls_name.clone().unwrap_or_else(|| host.clone()),
            url: format!("{scheme}:{server}?transport={transport}"),
            username: username.clone(),
            password: password.clone(),
        });
    }
    Ok(out)
}

/// Runs the self-test; the exit code is 0 when every transport passed.
pub fn run(args: SelftestArgs) -> Result<i32> {
    let opts = Options {
        timeout: Duration::from_secs(args.timeout.max(1)),
        pings: 20,
        burst: 200,
        burst_size: 1000,
        tls: tls_config(args.ca.as_ref())?,
    };
    let reports: Vec<Report> = match targets(&args) {
        Ok(ts) => ts.iter().map(|t| super::run(t, &opts)).collect(),
        Err(e) => {
            let msg = format!("{e:#}");
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "pass": false, "cause": msg, "transports": [] })
                );
            } else {
                println!("FAIL  {msg}");
            }
            return Ok(1);
        }
    };
    let pass = reports.iter().all(|r| r.pass);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "pass": pass, "transports": reports })
            )?
        );
    } else {
        for r in &reports {
            super::print_human(r);
        }
        println!(
            "{}",
            if pass {
                "selftest: every transport passed"
            } else {
                "selftest: FAILED"
            }
        );
    }
    Ok(if pass { 0 } else { 1 })
}
