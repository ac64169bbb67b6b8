//! The ACME cache directory (`acme_cache`): the account credentials and the latest
//! certificate with its key, per CA directory so a staging account never meets production.
//! Files are written whole (temporary file, then rename) with mode 0600: a crash never
//! leaves half a key, and the key is readable by turnd's user only.
//!
//! ```text
//! <acme_cache>/<directory host and path>/account.json
//!                                      /cert.pem   chain, leaf first
//!                                      /key.pem    PKCS#8
//! ```

use anyhow::{Context, Result};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache for `directory_url` under `root`.
    pub fn new(root: &Path, directory_url: &str) -> Cache {
        let name: String = directory_url
            .trim_start_matches("https://")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Cache {
            dir: root.join(name),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match std::fs::read(self.dir.join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| {
                format!("acme_cache: cannot read {}", self.dir.join(name).display())
            }),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("acme_cache: cannot create {}", self.dir.display()))?;
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("acme_cache: cannot write {}", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("acme_cache: cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("acme_cache: cannot write {}", path.display()))
    }

    /// The account credentials (JSON, as `instant-acme` serialises them).
    pub fn account(&self) -> Result<Option<Vec<u8>>> {
        self.read("account.json")
    }

    pub fn save_account(&self, json: &[u8]) -> Result<()> {
        self.write("account.json", json)
    }

    /// Drops the cached account (the CA no longer knows it).
    pub fn forget_account(&self) {
        let _ = std::fs::remove_file(self.dir.join("account.json"));
    }

    /// The cached certificate chain and key (PEM), if both are there.
    pub fn certificate(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(match (self.read("cert.pem")?, self.read("key.pem")?) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => None,
        })
    }

    /// Key first: a crash between the two writes leaves a key without its certificate, which
    /// fails the key check on load and is replaced by a new order, never a mismatched pair.
    pub fn save_certificate(&self, chain_pem: &[u8], key_pem: &[u8]) -> Result<()> {
        let _ = std::fs::remove_file(self.dir.join("cert.pem"));
        self.write("key.pem", key_pem)?;
        self.write("cert.pem", chain_pem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn per_directory_files_written_whole_and_private() {
        let root = tempfile::tempdir().unwrap();
        let a = Cache::new(root.path(), "https://127.0.0.1:14000/dir");
        let b = Cache::new(
            root.path(),
            "https://acme-v02.api.letsencrypt.org/directory",
        );
        assert_ne!(a.dir(), b.dir());
        assert!(a.dir().starts_with(root.path()));
        assert_eq!(a.certificate().unwrap(), None);
        a.save_certificate(b"CERT", b"KEY").unwrap();
        a.save_account(b"{}").unwrap();
        assert_eq!(
            a.certificate().unwrap(),
            Some((b"CERT".to_vec(), b"KEY".to_vec()))
        );
        assert_eq!(a.account().unwrap().as_deref(), Some(&b"{}"[..]));
        assert_eq!(b.account().unwrap(), None);
        for f in ["cert.pem", "key.pem", "account.json"] {
            let mode = std::fs::metadata(a.dir().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(a.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }
}
