//! The HTTPS client `instant-acme` talks to the CA with: the public web roots plus
//! `acme_ca_root`, a time limit on every request (a directory that never answers must not
//! stall renewal forever), and the CA's Retry-After remembered (RFC 8555 §6.6: rate-limited
//! requests carry one; `instant-acme` only reports the problem document).

use anyhow::{Context, Result};
use bytes::Bytes;
use http::header::RETRY_AFTER;
use http::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// One request to the CA, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

type Inner = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// The latest Retry-After the CA sent with an error, shared with the manager.
pub type RetryAfter = Arc<Mutex<Option<SystemTime>>>;

pub struct CaClient {
    inner: Inner,
    retry_after: RetryAfter,
}

impl CaClient {
    /// Trusts the public web roots and, if given, the PEM roots in `extra_root`.
    pub fn new(extra_root: Option<&Path>, retry_after: RetryAfter) -> Result<CaClient> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = extra_root {
            for c in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("acme_ca_root: cannot read {}", path.display()))?
            {
                let c =
                    c.with_context(|| format!("acme_ca_root: {} is not PEM", path.display()))?;
                roots
                    .add(c)
                    .with_context(|| format!("acme_ca_root: {}", path.display()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(CaClient {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
            retry_after,
        })
    }
}

/// A Retry-After value: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<SystemTime> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(secs) => Some(now + Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(value).ok(),
    }
}

impl HttpClient for CaClient {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = HttpClient::request(&self.inner, req);
        let retry_after = self.retry_after.clone();
        Box::pin(async move {
            let rsp = match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(instant_acme::Error::Str(
                        "the ACME server did not answer within 30 s",
                    ))
                }
            };
            if rsp.parts.status.is_client_error() || rsp.parts.status.is_server_error() {
                let at = rsp
                    .parts
                    .headers
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                if at.is_some() {
                    *retry_after.lock().unwrap_or_else(|e| e.into_inner()) = at;
                }
            }
            Ok(rsp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(now + Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 09 Sep 2001 01:46:40 GMT", now),
            Some(now)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
