//! Challenges being answered right now, shared between the ACME manager (which puts them
//! here before telling the CA they are ready, and removes them afterwards) and the listeners
//! that answer them: the HTTP listener for HTTP-01 (RFC 8555 §8.3) and the TLS listener's
//! certificate resolver for TLS-ALPN-01 (RFC 8737). Both lookups are rare (a CA validating),
//! never on the relay's per-packet path.

use anyhow::{Context, Result};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Pending challenges.
#[derive(Debug, Default)]
pub struct Challenges {
    /// HTTP-01: token → key authorization, served at `/.well-known/acme-challenge/<token>`.
    http: RwLock<HashMap<String, String>>,
    /// TLS-ALPN-01: DNS name (lower case) → the self-signed challenge certificate.
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// The key authorization for an HTTP-01 token, if one is pending.
    pub fn http(&self, token: &str) -> Option<String> {
        self.http
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    /// The TLS-ALPN-01 certificate for a name, if one is pending.
    pub fn alpn(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    pub fn put_http(&self, token: &str, key_authorization: &str) {
        self.http
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Makes and installs the TLS-ALPN-01 certificate for `name`.
    pub fn put_alpn(&self, name: &str, key_authorization_digest: &[u8]) -> Result<()> {
        let ck = alpn_certificate(name, key_authorization_digest)?;
        self.alpn
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_ascii_lowercase(), Arc::new(ck));
        Ok(())
    }

    /// Forgets every challenge (the order is over, whatever its outcome).
    pub fn clear(&self) {
        self.http.write().unwrap_or_else(|e| e.into_inner()).clear();
        self.alpn.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// RFC 8737 §3: a self-signed certificate for exactly `name` (one dNSName in
/// subjectAltName) carrying the critical acmeIdentifier extension (id-pe-acmeIdentifier,
/// 1.3.6.1.5.5.7.1.31) whose value is the SHA-256 digest of the key authorization.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<CertifiedKey> {
    use rcgen::{CertificateParams, CustomExtension, KeyPair};
    let mut params = CertificateParams::new(vec![name.to_owned()])
        .with_context(|| format!("acme_domain: {name} is not a DNS name"))?;
    params
        .custom_extensions
        .push(CustomExtension::new_acme_identifier(digest));
    let key = KeyPair::generate().context("TLS-ALPN-01 challenge key")?;
    let cert = params
        .self_signed(&key)
        .context("TLS-ALPN-01 challenge certificate")?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .context("TLS-ALPN-01 challenge key type")?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_certificate_names_the_domain_and_carries_the_critical_digest() {
        let c = Challenges::default();
        let digest = [7u8; 32];
        c.put_alpn("Relay.Example.com", &digest).unwrap();
        let ck = c
            .alpn("relay.example.COM")
            .expect("case-insensitive lookup");
        let (_, cert) = x509_parser::parse_x509_certificate(&ck.cert[0]).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            format!("{:?}", san.value.general_names),
            r#"[DNSName("Relay.Example.com")]"#
        );
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical, "RFC 8737 §3: the extension MUST be critical");
        // An OCTET STRING (tag 4, length 32) holding the digest.
        assert_eq!(&ext.value[..2], &[4, 32]);
        assert_eq!(&ext.value[2..], &digest);
        assert!(c.alpn("other.example.com").is_none());
        c.put_http("tok", "tok.thumb");
        assert_eq!(c.http("tok").as_deref(), Some("tok.thumb"));
        c.clear();
        assert!(c.http("tok").is_none() && c.alpn("relay.example.com").is_none());
    }
}
