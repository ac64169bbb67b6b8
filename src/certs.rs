//! Certificates for TURN over TLS that a person makes themselves, and the one mistake almost
//! everyone makes with them.
//!
//! `openssl req -x509 -newkey ... -subj /CN=host` (OpenSSL 3) makes a certificate marked
//! `basicConstraints CA:TRUE`. rustls (webpki), Chromium and Firefox refuse such a certificate
//! as a server's own ("CaUsedAsEndEntity", `MOZILLA_PKIX_ERROR_CA_CERT_USED_AS_END_ENTITY`): a
//! server needs a leaf certificate (`CA:FALSE`) with its name in subjectAltName, signed by a
//! CA the client trusts. [`self_signed`] writes exactly that pair (`turnd cert self-signed`);
//! [`CA_AS_LEAF`] is the one-line explanation turnd prints when it meets the mistake, at start-up
//! (`tls_cert`) and in `turnd selftest`.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// What to do about a CA certificate used as a server's own, in one line.
pub const CA_AS_LEAF: &str = "this certificate is a CA certificate (basicConstraints CA:TRUE), which TLS clients refuse as a server's own; make a leaf certificate (CA:FALSE, the host name in subjectAltName) signed by a small CA that clients trust: `turnd cert self-signed --host NAME --out DIR`, or the openssl recipe in the README";

/// Whether the DER certificate says `CA:TRUE` (false when it cannot be parsed: then rustls
/// reports the real problem).
pub fn is_ca(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der).is_ok_and(|(_, cert)| cert.is_ca())
}

/// Whether a TLS error (as rustls reports it) is a CA certificate used as a server's own.
pub fn is_ca_as_leaf_error(error: &str) -> bool {
    error.contains("CaUsedAsEndEntity")
}

/// The files [`self_signed`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The CA certificate clients trust (`turnd selftest --ca`, the browser's or OS's store).
    pub ca: PathBuf,
    /// The leaf certificate for `tls_cert`.
    pub cert: PathBuf,
    /// The leaf's private key for `tls_key` (mode 0600).
    pub key: PathBuf,
}

/// Writes a small CA (`ca.pem`) and a leaf for `hosts` signed by it (`cert.pem`, `key.pem`)
/// into `dir`. The CA's private key is not kept: nothing else can be signed with it, so the CA
/// vouches for this one leaf only. Each host is a DNS name or an IP address.
pub fn self_signed(hosts: &[String], dir: &Path) -> Result<Written> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let now = time_now();
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("ca")?;
    ca.distinguished_name
        .push(DnType::CommonName, "turnd self-signed CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - time::Duration::days(1);
    ca.not_after = now + time::Duration::days(3650);
    let ca_key = KeyPair::generate().context("ca key")?;
    let ca_cert = ca.self_signed(&ca_key).context("ca")?;

    let mut leaf = CertificateParams::new(hosts.to_vec())
        .with_context(|| format!("host: {hosts:?} is not a DNS name or IP address"))?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        hosts.first().cloned().unwrap_or_default(),
    );
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    // Browsers cap server certificates at 398 days.
    leaf.not_before = now - time::Duration::days(1);
    leaf.not_after = now + time::Duration::days(397);
    let leaf_key = KeyPair::generate().context("key")?;
    let leaf_cert = leaf
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .context("leaf")?;

    std::fs::create_dir_all(dir)
        .with_context(|| format!("out: cannot create {}", dir.display()))?;
    let written = Written {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let write = |path: &Path, text: &str, mode: u32| -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("out: cannot write {}", path.display()))?;
        f.write_all(text.as_bytes())
            .with_context(|| format!("out: cannot write {}", path.display()))
    };
    write(&written.ca, &ca_cert.pem(), 0o644)?;
    write(&written.cert, &leaf_cert.pem(), 0o644)?;
    write(&written.key, &leaf_key.serialize_pem(), 0o600)?;
    Ok(written)
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(crate::clock::unix_now() as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    #[test]
    fn the_leaf_is_no_ca_and_the_ca_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let w = self_signed(
            &["relay.example.com".into(), "127.0.0.1".into()],
            dir.path(),
        )
        .unwrap();
        let der = |p: &Path| CertificateDer::from_pem_file(p).unwrap();
        assert!(!is_ca(&der(&w.cert)));
        assert!(is_ca(&der(&w.ca)));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&w.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is private to its owner");
    }
}
