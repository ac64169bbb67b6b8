//! Built-in ACME (RFC 8555): turnd gets and renews the certificate of its TLS listeners
//! itself, from Let's Encrypt or any ACME CA, answering TLS-ALPN-01 (RFC 8737) on the TLS
//! listener or HTTP-01 on the HTTP listener. The protocol is `instant-acme`'s (docs/DESIGN.md
//! says why that crate); this module decides when to order, answers the challenges, keeps
//! the cache and reports.
//!
//! * [`settings`]: the `acme_*` keys, validated.
//! * [`schedule`]: when to renew, back-off and Retry-After (pure, tested with injected time).
//! * [`challenges`]: the pending challenges the listeners answer.
//! * [`cache`]: the account and certificate on disk.
//! * [`client`]: the HTTPS client to the CA (trusted roots, Retry-After seen).
//! * [`order`]: one order, from new-order to the certificate chain.
//! * [`manager`]: the background thread that ties them together, and its status.

pub mod cache;
pub mod challenges;
pub mod client;
pub mod manager;
pub mod order;
pub mod schedule;
pub mod settings;

use std::path::PathBuf;

/// Which challenge turnd answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// On the TLS listener (ALPN `acme-tls/1`, RFC 8737); the CA connects to port 443.
    TlsAlpn01,
    /// On the HTTP listener (RFC 8555 §8.3); the CA connects to port 80.
    Http01,
}

impl ChallengeKind {
    pub fn label(self) -> &'static str {
        match self {
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
            ChallengeKind::Http01 => "http-01",
        }
    }
}

/// Validated `acme_*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// Names on the certificate, lower case, without duplicates.
    pub domains: Vec<String>,
    pub email: Option<String>,
    pub directory: String,
    pub cache: PathBuf,
    /// An extra root for the CA's HTTPS.
    pub ca_root: Option<PathBuf>,
    pub challenge: ChallengeKind,
}

/// What the HTTP listener (HTTP-01, `/readyz`) and the metrics read of a running ACME.
#[derive(Debug)]
pub struct Acme {
    pub config: AcmeConfig,
    pub status: std::sync::Arc<manager::AcmeStatus>,
    pub challenges: std::sync::Arc<challenges::Challenges>,
    pub store: std::sync::Arc<crate::tls::CertStore>,
}

impl Acme {
    /// `/readyz`'s account of the certificate: whether TLS is served, and if not, why.
    pub fn readiness(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering;
        let s = &self.status;
        let certificate = self.store.has_certificate();
        let unix = |t: std::time::SystemTime| {
            t.duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        let last_error = s.last_error();
        let reason = match (certificate, &last_error) {
            (true, _) => None,
            (false, None) => Some(format!(
                "waiting for the first certificate from {}; TLS handshakes are refused until then",
                self.config.directory
            )),
            (false, Some(e)) => Some(format!(
                "no certificate yet, TLS handshakes are refused: the last order failed: {e}"
            )),
        };
        serde_json::json!({
            "domains": self.config.domains,
            "challenge": self.config.challenge.label(),
            "directory": self.config.directory,
            "certificate": certificate,
            "not_after": self.store.validity().map(|(_, na)| unix(na)),
            "reason": reason,
            "last_error": last_error,
            "consecutive_failures": s.consecutive_failures.load(Ordering::Relaxed),
            "next_attempt_unix": match s.next_attempt_unix.load(Ordering::Relaxed) { 0 => None, n => Some(n) },
        })
    }
}
