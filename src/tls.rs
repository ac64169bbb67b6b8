//! TLS for TURN-over-TLS listeners (RFC 8656 §3.1): rustls with its safe defaults (TLS 1.2
//! and 1.3 only), the certificate and key read from PEM files and swapped in place on reload
//! (SIGHUP), so established connections keep their session and new ones get the new
//! certificate. With ACME (`acme_domain`) the store starts empty (handshakes fail cleanly
//! until the first certificate arrives), is filled by the ACME manager, and answers
//! TLS-ALPN-01 challenges (RFC 8737) from the same listener.

use crate::acme::challenges::{Challenges, ACME_TLS_ALPN};
use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// The certificate in use.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Option<Current>>,
    /// Pending ACME challenges, when ACME is on.
    challenges: Option<Arc<Challenges>>,
}

#[derive(Debug, Clone)]
struct Current {
    ck: Arc<CertifiedKey>,
    /// The leaf's notBefore and notAfter (None when x509-parser cannot read it).
    validity: Option<(SystemTime, SystemTime)>,
}

impl Current {
    fn new(ck: CertifiedKey) -> Current {
        let validity = ck.cert.first().and_then(|c| validity(c));
        Current {
            ck: Arc::new(ck),
            validity,
        }
    }
}

/// A certificate's notBefore and notAfter.
pub fn validity(der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let at = |t: i64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).ok()?));
    let v = cert.validity();
    Some((at(v.not_before.timestamp())?, at(v.not_after.timestamp())?))
}

fn load(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("tls_cert: cannot read {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "tls_cert: {} is not a PEM certificate chain",
                cert_path.display()
            )
        })?;
    if certs.is_empty() {
        bail!("tls_cert: {} holds no certificate", cert_path.display());
    }
    if crate::certs::is_ca(&certs[0]) {
        tracing::warn!(
            "tls_cert: {}: {}",
            cert_path.display(),
            crate::certs::CA_AS_LEAF
        );
    }
    let key = PrivateKeyDer::from_pem_file(key_path).with_context(|| {
        format!(
            "tls_key: cannot read a PEM private key from {}",
            key_path.display()
        )
    })?;
    certified(certs, &key).with_context(|| {
        format!(
            "tls_key: {} does not match the certificate in {} or is of an unsupported type",
            key_path.display(),
            cert_path.display()
        )
    })
}

/// A certificate chain and its key, checked to belong together.
fn certified(certs: Vec<CertificateDer<'static>>, key: &PrivateKeyDer<'_>) -> Result<CertifiedKey> {
    let signer =
        rustls::crypto::ring::sign::any_supported_type(key).context("unsupported key type")?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match()
        .context("the key does not match the certificate")?;
    Ok(ck)
}

/// A PEM certificate chain and PEM private key held in memory (the ACME cache and orders).
pub fn from_pem(chain: &[u8], key: &[u8]) -> Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<_, _>>()
        .context("not a PEM certificate chain")?;
    if certs.is_empty() {
        bail!("no certificate in the PEM chain");
    }
    let key = PrivateKeyDer::from_pem_slice(key).context("not a PEM private key")?;
    certified(certs, &key)
}

impl CertStore {
    /// Reads the files; fails with an error naming the setting.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertStore>> {
        let ck = load(cert_path, key_path)?;
        Ok(Arc::new(CertStore {
            current: RwLock::new(Some(Current::new(ck))),
            challenges: None,
        }))
    }

    /// No certificate yet (ACME fills it in); answers the TLS-ALPN-01 challenges put in
    /// `challenges`.
    pub fn for_acme(challenges: Arc<Challenges>) -> Arc<CertStore> {
        Arc::new(CertStore {
            current: RwLock::new(None),
            challenges: Some(challenges),
        })
    }

    /// Reads the certificate and key from these files (the same or new ones) and uses them
    /// for new connections. On error the old certificate stays in use.
    pub fn reload(&self, cert_path: &Path, key_path: &Path) -> Result<()> {
        let ck = load(cert_path, key_path)?;
        self.set(ck);
        Ok(())
    }

    /// Uses `ck` for new connections; established ones keep their session.
    pub fn set(&self, ck: CertifiedKey) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Current::new(ck));
    }

    /// The served leaf's notBefore and notAfter; None without a certificate.
    pub fn validity(&self) -> Option<(SystemTime, SystemTime)> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|c| c.validity)
    }

    /// Whether a certificate is being served.
    pub fn has_certificate(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Whether ACME manages this store (and ALPN must be negotiated for TLS-ALPN-01).
    pub fn is_acme(&self) -> bool {
        self.challenges.is_some()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // RFC 8737 §3: a hello offering acme-tls/1 is a CA validating; it gets the challenge
        // certificate for the name it asks (SNI), or nothing, never the real certificate.
        if let Some(challenges) = &self.challenges {
            let mut alpn = hello.alpn().into_iter().flatten();
            if alpn.any(|p| p == ACME_TLS_ALPN) {
                return challenges.alpn(hello.server_name()?);
            }
        }
        // None until ACME delivers the first certificate: rustls ends the handshake with an
        // alert, a clean refusal.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.ck.clone())
    }
}

/// The rustls server configuration for TURN-over-TLS.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let acme = store.is_acme();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(store);
    if acme {
        // TLS-ALPN-01 needs acme-tls/1 negotiated (RFC 8737 §3). rustls refuses a client
        // that offers ALPN with none of these, so the STUN/TURN names (RFC 7443) are listed
        // too; a client offering no ALPN at all (browsers' TURN) is unaffected.
        config.alpn_protocols = vec![
            b"stun.turn".to_vec(),
            b"stun.nat-discovery".to_vec(),
            ACME_TLS_ALPN.to_vec(),
        ];
    }
    Ok(Arc::new(config))
}

/// A TLS client that does not verify the server certificate. Only for talking to this very
/// server (the periodic self-probe, tests): its certificate is for its public name, which a
/// loopback connection does not carry.
pub fn unverified_client_config() -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct OwnServer;
    impl rustls::client::danger::ServerCertVerifier for OwnServer {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(OwnServer))
            .with_no_client_auth(),
    )
}
