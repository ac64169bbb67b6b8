//! The ACME manager: a thread of its own (with a small tokio runtime for `instant-acme`)
//! that orders a certificate when none valid is served, renews it when a third of its
//! lifetime is left, backs off with jitter after a failure (honouring the CA's Retry-After),
//! swaps the result into the TLS listeners' [`CertStore`] (established connections keep
//! theirs, as on SIGHUP) and writes it to the cache. Its [`AcmeStatus`] feeds `/readyz` and
//! the metrics. The relay never waits for it: UDP and TCP serve from the first second.

use super::cache::Cache;
use super::challenges::Challenges;
use super::client::{CaClient, RetryAfter};
use super::schedule::{self, Next};
use super::AcmeConfig;
use crate::tls::CertStore;
use anyhow::{Context, Result};
use instant_acme::{Account, AccountCredentials, NewAccount};
use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// What the manager did and is doing, for `/readyz` and the metrics.
#[derive(Debug, Default)]
pub struct AcmeStatus {
    /// Orders that ended with a certificate.
    pub succeeded: AtomicU64,
    /// Orders that failed, rate limits excluded.
    pub failed: AtomicU64,
    /// Orders the CA refused for a rate limit.
    pub rate_limited: AtomicU64,
    /// Consecutive failures now (0 after a success).
    pub consecutive_failures: AtomicU64,
    /// The last failure's text (the CA's own words where it gave some); cleared on success.
    pub last_error: Mutex<Option<String>>,
    /// Unix time of the next attempt (renewal or retry); 0 while an order runs.
    pub next_attempt_unix: AtomicU64,
}

impl AcmeStatus {
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Serves a cached certificate at once if it is still valid and names every domain;
/// returns whether it did. Called before the listeners open.
pub fn load_cached(config: &AcmeConfig, store: &CertStore) -> bool {
    let cache = Cache::new(&config.cache, &config.directory);
    let (chain, key) = match cache.certificate() {
        Ok(Some(pair)) => pair,
        Ok(None) => return false,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "ACME cache unreadable; ordering a new certificate");
            return false;
        }
    };
    let ck = match crate::tls::from_pem(&chain, &key) {
        Ok(ck) => ck,
        Err(e) => {
            tracing::warn!(dir = %cache.dir().display(), error = %format!("{e:#}"), "cached certificate unusable; ordering a new one");
            return false;
        }
    };
    let leaf = &ck.cert[0];
    let Some((_, not_after)) = crate::tls::validity(leaf) else {
        return false;
    };
    if not_after <= SystemTime::now() {
        tracing::info!("cached certificate has expired; ordering a new one");
        return false;
    }
    if !names_all(leaf, &config.domains) {
        tracing::info!(domains = ?config.domains, "cached certificate does not name every acme_domain; ordering a new one");
        return false;
    }
    store.set(ck);
    tracing::info!(dir = %cache.dir().display(), expires = %unix(not_after), "serving the cached ACME certificate");
    true
}

/// Whether the certificate's subjectAltName lists every domain.
fn names_all(der: &[u8], domains: &[String]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    domains.iter().all(|d| names.contains(d))
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Starts the manager thread; it ends when `shutdown` is set.
pub fn spawn(
    config: AcmeConfig,
    store: Arc<CertStore>,
    challenges: Arc<Challenges>,
    status: Arc<AcmeStatus>,
    shutdown: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("turnd-acme".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(error = %e, "cannot start the ACME runtime"),
            };
            let m = Manager {
                cache: Cache::new(&config.cache, &config.directory),
                config,
                store,
                challenges,
                status,
                shutdown,
                retry_after: Default::default(),
                account: None,
            };
            m.run(&rt);
        })
        .context("cannot start the ACME thread")
}

struct Manager {
    config: AcmeConfig,
    cache: Cache,
    store: Arc<CertStore>,
    challenges: Arc<Challenges>,
    status: Arc<AcmeStatus>,
    shutdown: Arc<AtomicBool>,
    retry_after: RetryAfter,
    account: Option<Account>,
}

impl Manager {
    fn run(mut self, rt: &tokio::runtime::Runtime) {
        let mut not_before_retry: Option<SystemTime> = None;
        let mut failures: u32 = 0;
        while !self.shutdown.load(Ordering::Relaxed) {
            let now = SystemTime::now();
            if let Next::Wait(at) = schedule::next(self.store.validity(), now, not_before_retry) {
                self.status
                    .next_attempt_unix
                    .store(unix(at), Ordering::Relaxed);
                // Short naps, so a shutdown is seen within a quarter second.
                let nap = at
                    .duration_since(now)
                    .unwrap_or_default()
                    .min(Duration::from_millis(250));
                std::thread::sleep(nap);
                continue;
            }
            self.status.next_attempt_unix.store(0, Ordering::Relaxed);
            let shutdown = self.shutdown.clone();
            let outcome = rt.block_on(async {
                tokio::select! {
                    r = self.attempt() => Some(r),
                    () = stopped(shutdown) => None,
                }
            });
            let Some(outcome) = outcome else { break };
            match outcome {
                Ok(not_after) => {
                    failures = 0;
                    // A Retry-After seen on the way (a retried nonce) is not a reason to wait.
                    self.retry_after
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take();
                    not_before_retry = None;
                    self.status.succeeded.fetch_add(1, Ordering::Relaxed);
                    self.status.consecutive_failures.store(0, Ordering::Relaxed);
                    *self
                        .status
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = None;
                    tracing::info!(domains = ?self.config.domains, expires = unix(not_after), "ACME certificate installed; new TLS connections use it");
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let retry_after = self
                        .retry_after
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take()
                        .and_then(|t| t.duration_since(SystemTime::now()).ok());
                    let delay =
                        schedule::retry_delay(failures, rand::thread_rng().gen(), retry_after);
                    not_before_retry = Some(SystemTime::now() + delay);
                    let rate_limited = super::order::is_problem(&e, "rateLimited");
                    if super::order::is_problem(&e, "accountDoesNotExist") {
                        // The CA no longer knows the cached account (a reset test CA, a
                        // deactivated account): the next attempt creates a new one.
                        self.cache.forget_account();
                    }
                    let counter = if rate_limited {
                        &self.status.rate_limited
                    } else {
                        &self.status.failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    self.status
                        .consecutive_failures
                        .store(u64::from(failures), Ordering::Relaxed);
                    let text = format!("{e:#}");
                    tracing::warn!(
                        directory = %self.config.directory,
                        error = %text,
                        rate_limited,
                        retry_in_secs = delay.as_secs(),
                        serving = if self.store.has_certificate() { "the current certificate" } else { "no certificate: TLS handshakes are refused" },
                        "ACME order failed"
                    );
                    *self
                        .status
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(text);
                    // A CA that forgot the account (reset, other key) gets a new one next time.
                    self.account = None;
                }
            }
        }
    }

    /// One order: the account (cached or new), the certificate, the swap and the cache.
    async fn attempt(&mut self) -> Result<SystemTime> {
        let account = match &self.account {
            Some(a) => a.clone(),
            None => {
                let a = self.account_now().await?;
                self.account = Some(a.clone());
                a
            }
        };
        let issued = super::order::obtain(
            &account,
            &self.config.domains,
            self.config.challenge,
            &self.challenges,
        )
        .await?;
        let ck = crate::tls::from_pem(issued.chain_pem.as_bytes(), issued.key_pem.as_bytes())
            .context("the CA's certificate does not load")?;
        let not_after = crate::tls::validity(&ck.cert[0])
            .map(|(_, na)| na)
            .context("the CA's certificate has no readable validity")?;
        self.store.set(ck);
        if let Err(e) = self
            .cache
            .save_certificate(issued.chain_pem.as_bytes(), issued.key_pem.as_bytes())
        {
            // Served anyway; only a restart would order again.
            tracing::warn!(error = %format!("{e:#}"), "cannot cache the ACME certificate");
        }
        Ok(not_after)
    }

    fn client(&self) -> Result<Box<CaClient>> {
        Ok(Box::new(CaClient::new(
            self.config.ca_root.as_deref(),
            self.retry_after.clone(),
        )?))
    }

    /// The cached account, or a new one (saved to the cache).
    async fn account_now(&self) -> Result<Account> {
        if let Some(json) = self.cache.account()? {
            match serde_json::from_slice::<AccountCredentials>(&json) {
                Ok(creds) => {
                    return Account::builder_with_http(self.client()?)
                        .from_credentials(creds)
                        .await
                        .with_context(|| {
                            format!(
                                "the ACME directory {} did not answer",
                                self.config.directory
                            )
                        });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cached ACME account unreadable; creating a new one")
                }
            }
        }
        let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, creds) = Account::builder_with_http(self.client()?)
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.config.directory.clone(),
                None,
            )
            .await
            .with_context(|| {
                format!("cannot create an ACME account at {}", self.config.directory)
            })?;
        tracing::info!(directory = %self.config.directory, id = account.id(), "ACME account created");
        let json = serde_json::to_vec(&creds).context("account credentials")?;
        self.cache.save_account(&json)?;
        Ok(account)
    }
}

/// Resolves once `shutdown` is set.
async fn stopped(shutdown: Arc<AtomicBool>) {
    while !shutdown.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
