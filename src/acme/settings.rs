//! `acme_*` settings, validated before anything starts (so `turnd check-config` catches
//! them): DNS names only, a directory that is an https URL, a cache directory, a readable
//! extra root, and a challenge type whose listener exists.

use super::{AcmeConfig, ChallengeKind};
use crate::config::Settings;
use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;

/// Let's Encrypt production and staging directories (RFC 8555 §7.1.1).
pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// The ACME configuration, or None when `acme_domain` is not set (the other `acme_*` keys
/// are then refused, so a half-configured ACME never passes silently).
pub fn acme(
    s: &Settings,
    tls_listen: &[SocketAddr],
    tls_files: bool,
    http_listen: Option<SocketAddr>,
) -> Result<Option<AcmeConfig>> {
    let Some(domains) = s.acme_domain.as_ref().filter(|d| !d.is_empty()) else {
        let stray = [
            ("acme_email", s.acme_email.is_some()),
            ("acme_directory", s.acme_directory.is_some()),
            ("acme_cache", s.acme_cache.is_some()),
            ("acme_ca_root", s.acme_ca_root.is_some()),
            ("acme_challenge", s.acme_challenge.is_some()),
        ];
        if let Some((key, _)) = stray.iter().find(|(_, set)| *set) {
            bail!("{key}: set, but acme_domain is not (ACME is off without a domain)");
        }
        return Ok(None);
    };
    let mut names = Vec::new();
    for d in domains {
        let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
        dns_name(&d)?;
        if !names.contains(&d) {
            names.push(d);
        }
    }
    if tls_files {
        bail!("acme_domain: set together with tls_cert/tls_key; choose one source of certificates");
    }
    if tls_listen.is_empty() {
        bail!("acme_domain: needs a TLS listener (tls_listen, usually 0.0.0.0:443) to serve the certificate on");
    }
    let email = match &s.acme_email {
        Some(e) if !is_email(e) => bail!("acme_email: {e:?} is not an e-mail address"),
        e => e.clone(),
    };
    let directory = match s.acme_directory.as_deref().map(str::trim) {
        None | Some("letsencrypt") => LETSENCRYPT.to_owned(),
        Some("letsencrypt-staging") => LETSENCRYPT_STAGING.to_owned(),
        Some(url) => {
            let uri: http::Uri = url
                .parse()
                .with_context(|| format!("acme_directory: {url:?} is not a URL"))?;
            if uri.scheme_str() != Some("https") || uri.host().is_none() {
                bail!("acme_directory: {url:?} must be an https:// URL (RFC 8555 §6.1), or letsencrypt / letsencrypt-staging");
            }
            url.to_owned()
        }
    };
    let Some(cache) = s.acme_cache.clone() else {
        bail!("acme_cache: required with acme_domain: a directory that survives restarts (the account key and certificate; without it every start orders anew and soon hits the CA's rate limits)");
    };
    if cache.exists() && !cache.is_dir() {
        bail!("acme_cache: {} is not a directory", cache.display());
    }
    let ca_root = match &s.acme_ca_root {
        None => None,
        Some(p) => {
            let n = CertificateDer::pem_file_iter(p)
                .with_context(|| format!("acme_ca_root: cannot read {}", p.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("acme_ca_root: {} is not PEM", p.display()))?
                .len();
            if n == 0 {
                bail!("acme_ca_root: {} holds no certificate", p.display());
            }
            Some(p.clone())
        }
    };
    let challenge = match s.acme_challenge.as_deref() {
        None | Some("tls-alpn-01") => ChallengeKind::TlsAlpn01,
        Some("http-01") => ChallengeKind::Http01,
        Some(other) => bail!("acme_challenge: {other:?} is not tls-alpn-01 or http-01"),
    };
    if challenge == ChallengeKind::Http01 && http_listen.is_none() {
        bail!("acme_challenge: http-01 needs the HTTP listener (http_listen, port 80 as the CA sees it)");
    }
    Ok(Some(AcmeConfig {
        domains: names,
        email,
        directory,
        cache,
        ca_root,
        challenge,
    }))
}

/// A DNS name a public CA can validate by HTTP-01 or TLS-ALPN-01: letters, digits and
/// hyphens in labels of 1–63, at least two labels, 253 at most, no IP address, no wildcard
/// (wildcards need DNS-01, RFC 8555 §7.1.3).
fn dns_name(d: &str) -> Result<()> {
    let bad = |why: &str| -> Result<()> { bail!("acme_domain: {d:?} is not a DNS name ({why})") };
    if d.parse::<std::net::IpAddr>().is_ok() {
        return bad("an IP address; ACME certificates here are for names");
    }
    if d.starts_with("*.") {
        return bad("a wildcard needs the DNS-01 challenge, which turnd does not do");
    }
    if d.is_empty() || d.len() > 253 {
        return bad("empty or longer than 253 characters");
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return bad("a single label; use the fully qualified name");
    }
    for l in &labels {
        let ok_chars = l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if l.is_empty() || l.len() > 63 || !ok_chars || l.starts_with('-') || l.ends_with('-') {
            return bad("labels are 1-63 letters, digits or inner hyphens");
        }
    }
    Ok(())
}

fn is_email(e: &str) -> bool {
    e.split_once('@').is_some_and(|(user, host)| {
        !user.is_empty() && host.contains('.') && !e.chars().any(|c| c.is_whitespace() || c == ',')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> Settings {
        Settings::from_toml(toml).unwrap()
    }
    fn tls() -> Vec<SocketAddr> {
        vec!["127.0.0.1:443".parse().unwrap()]
    }
    fn err(toml: &str) -> String {
        acme(
            &settings(toml),
            &tls(),
            false,
            Some("127.0.0.1:80".parse().unwrap()),
        )
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn defaults_and_normalisation() {
        let c = acme(
            &settings("acme_domain = [\"Relay.Example.com.\", \"relay.example.com\"]\nacme_cache = \"/tmp/x\""),
            &tls(),
            false,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.domains, ["relay.example.com"]);
        assert_eq!(c.directory, LETSENCRYPT);
        assert_eq!(c.challenge, ChallengeKind::TlsAlpn01);
        assert!(acme(&settings(""), &tls(), false, None).unwrap().is_none());
    }

    #[test]
    fn bad_input_names_the_key() {
        let base = "acme_cache = \"/tmp/x\"\n";
        for (toml, key) in [
            ("acme_domain = \"not a name\"", "acme_domain:"),
            ("acme_domain = \"192.0.2.1\"", "acme_domain:"),
            ("acme_domain = \"*.example.com\"", "acme_domain:"),
            ("acme_domain = \"localhost\"", "acme_domain:"),
            ("acme_domain = \"-a.example.com\"", "acme_domain:"),
            (
                "acme_domain = \"a.example.com\"\nacme_email = \"nobody\"",
                "acme_email:",
            ),
            (
                "acme_domain = \"a.example.com\"\nacme_directory = \"http://ca.example/dir\"",
                "acme_directory:",
            ),
            (
                "acme_domain = \"a.example.com\"\nacme_directory = \"not a url\"",
                "acme_directory:",
            ),
            (
                "acme_domain = \"a.example.com\"\nacme_challenge = \"dns-01\"",
                "acme_challenge:",
            ),
            (
                "acme_domain = \"a.example.com\"\nacme_ca_root = \"/nonexistent/root.pem\"",
                "acme_ca_root:",
            ),
            ("acme_email = \"a@example.com\"", "acme_email:"),
        ] {
            let e = err(&format!("{base}{toml}"));
            assert!(e.starts_with(key), "{toml}: {e}");
        }
        let e = err("acme_domain = \"a.example.com\"");
        assert!(e.starts_with("acme_cache:"), "{e}");
        let s = settings("acme_domain = \"a.example.com\"\nacme_cache = \"/tmp/x\"");
        let e = acme(&s, &[], false, None).unwrap_err().to_string();
        assert!(
            e.starts_with("acme_domain:") && e.contains("tls_listen"),
            "{e}"
        );
        let e = acme(&s, &tls(), true, None).unwrap_err().to_string();
        assert!(
            e.starts_with("acme_domain:") && e.contains("tls_cert"),
            "{e}"
        );
        let s = settings("acme_domain = \"a.example.com\"\nacme_cache = \"/tmp/x\"\nacme_challenge = \"http-01\"");
        let e = acme(&s, &tls(), false, None).unwrap_err().to_string();
        assert!(e.starts_with("acme_challenge:"), "{e}");
    }
}
