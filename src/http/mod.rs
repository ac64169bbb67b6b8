//! The HTTP service inside `turnd serve`: the credential endpoints a WebRTC app calls before
//! it creates a peer connection, and health checks. It runs on its own thread with its own
//! tokio runtime, so nothing here shares a thread with the relay workers.

pub mod access;
pub mod acme;
pub mod admin;
pub mod credentials;
pub mod edge;
pub mod error;
pub mod health;
pub mod identity;
pub mod page;

use crate::uris::{self, Listeners};
use anyhow::{Context, Result};
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Everything the handlers read.
pub struct HttpState {
    /// Minting secret, TTLs, API keys and CORS origins: replaced on SIGHUP.
    pub live: Arc<crate::reload::Live>,
    pub hosts: Vec<String>,
    /// The listeners that are actually up.
    pub listeners: Listeners,
    pub limiter: access::RateLimiter,
    pub workers_running: Arc<AtomicUsize>,
    pub workers_expected: usize,
    pub credentials_issued: AtomicU64,
    pub probe: Arc<crate::selftest::probe::ProbeState>,
    /// For the drain flag.
    pub ledger: Arc<turnd_proto::server::ledger::Ledger>,
    /// How anonymous credentials' identities count IPv6 clients (see [`identity`]).
    pub ipv6_source_prefix: u8,
    /// Built-in ACME: HTTP-01 answers and `/readyz`'s certificate state.
    pub acme: Option<Arc<crate::acme::Acme>>,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret and API keys are never printed.
        f.debug_struct("HttpState")
            .field("hosts", &self.hosts)
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl HttpState {
    pub fn turn_urls(&self) -> Vec<String> {
        uris::turn_urls(&self.hosts, &self.listeners)
    }
    pub fn stun_urls(&self) -> Vec<String> {
        uris::stun_urls(&self.hosts, &self.listeners)
    }
}

/// The routes.
pub fn router(state: Arc<HttpState>) -> Router {
    use error::method_not_allowed;
    let api = Router::new()
        .route(
            "/api/v1/credentials",
            // HEAD would run the GET handler and mint (and count) a credential it never
            // shows: refused instead.
            get(credentials::rest)
                .head(method_not_allowed)
                .fallback(method_not_allowed),
        )
        .route(
            "/api/v1/ice-servers",
            get(credentials::ice_servers)
                .head(method_not_allowed)
                .post(credentials::ice_servers)
                .fallback(method_not_allowed),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::cors,
        ));
    Router::new()
        .merge(api)
        .route("/", get(page::page).fallback(method_not_allowed))
        .route(
            "/healthz",
            get(health::healthz).fallback(method_not_allowed),
        )
        .route("/readyz", get(health::readyz).fallback(method_not_allowed))
        .route(
            "/.well-known/acme-challenge/{token}",
            get(acme::http01).fallback(method_not_allowed),
        )
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(state)
}

/// A running HTTP service.
pub struct HttpServer {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `addr` (synchronously, so a bad address fails start-up) and serves on a thread.
pub fn start(
    addr: SocketAddr,
    state: Arc<HttpState>,
    limits: edge::EdgeLimits,
    stats: Arc<edge::EdgeStats>,
) -> Result<HttpServer> {
    serve_router(addr, router(state), "http_listen", limits, stats)
}

/// Binds `addr` and serves `app` on its own thread and runtime, behind the edge's timeouts and
/// connection caps; `key` names the setting in errors.
pub fn serve_router(
    addr: SocketAddr,
    app: Router,
    key: &str,
    limits: edge::EdgeLimits,
    stats: Arc<edge::EdgeStats>,
) -> Result<HttpServer> {
    let listener =
        bind(addr, limits.timeouts.idle).with_context(|| format!("{key}: cannot bind {addr}"))?;
    let bound = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("turnd-http".into())
        .spawn(move || {
            lower_priority();
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(error = %e, "cannot start the HTTP runtime"),
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!(error = %e, "cannot use the HTTP listener"),
                };
                let shutdown = async {
                    let _ = rx.await;
                };
                edge::serve(listener, app, limits, stats, shutdown).await;
            });
        })?;
    Ok(HttpServer {
        addr: bound,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

/// Pending connections the kernel queues for a listener (capped by net.core.somaxconn). The
/// accept loop drains it fast, closing what it refuses; a short queue would drop a health
/// check's SYN during a flood, and the retry comes a second later.
const BACKLOG: i32 = 4096;

/// A non-blocking TCP listener on `addr` (SO_REUSEADDR, as std sets it) with [`BACKLOG`] and
/// TCP_DEFER_ACCEPT of `idle`.
///
/// TCP_DEFER_ACCEPT (Linux, tcp(7)) keeps a connection in the kernel, as a half-open request
/// that holds no descriptor, until its first data arrives, or about `idle` has passed. Idle
/// connections, the cheapest attack on an HTTP server, then never reach the accept loop while
/// they are idle, and a connection that does arrive usually carries its request already (the
/// edge admits such newcomers first, see [`edge`]). nginx's `listen ... deferred` is the same.
fn bind(addr: SocketAddr, idle: std::time::Duration) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    use std::os::fd::AsRawFd;
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    let secs = libc::c_int::try_from(idle.as_secs()).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt on a socket we own, with a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        // Only an optimisation: the edge's own limits still hold without it.
        tracing::debug!(error = %std::io::Error::last_os_error(), "no TCP_DEFER_ACCEPT");
    }
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Niceness of the HTTP threads. A flood of connections keeps an HTTP thread busy; on a machine
/// with few cores the relay workers must still get the CPU first: relayed media is what
/// suffers from a few milliseconds' delay, a credential request is not.
const HTTP_NICENESS: libc::c_int = 10;

/// Lowers the calling thread's scheduling priority (Linux: niceness is per thread). Lowering
/// needs no privilege; a failure only costs the preference, so it is logged and ignored.
fn lower_priority() {
    // SAFETY: gettid and setpriority on the calling thread only.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, HTTP_NICENESS)
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the HTTP thread's priority");
    }
}
