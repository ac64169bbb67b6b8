//! TLS for TURN-over-TLS listeners (RFC 8656 §3.1): rustls with its safe defaults (TLS 1.2
//! and 1.3 only), the certificate and key read from PEM files and swapped in place on reload
//! (SIGHUP), so established connections keep their session and new ones get the new
//! certificate.

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// The certificate in use.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
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
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .with_context(|| format!("tls_key: unsupported key type in {}", key_path.display()))?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match().with_context(|| {
        format!(
            "tls_key: {} does not match the certificate in {}",
            key_path.display(),
            cert_path.display()
        )
    })?;
    Ok(ck)
}

impl CertStore {
    /// Reads the files; fails with an error naming the setting.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertStore>> {
        let ck = load(cert_path, key_path)?;
        Ok(Arc::new(CertStore {
            current: RwLock::new(Arc::new(ck)),
        }))
    }

    /// Reads the certificate and key from these files (the same or new ones) and uses them
    /// for new connections. On error the old certificate stays in use.
    pub fn reload(&self, cert_path: &Path, key_path: &Path) -> Result<()> {
        let ck = load(cert_path, key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ck);
        Ok(())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The rustls server configuration for TURN-over-TLS.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(store);
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
