//! The HTTP service inside `turnd serve`: the credential endpoints a WebRTC app calls before
//! it creates a peer connection, and health checks. It runs on its own thread with its own
//! tokio runtime, so nothing here shares a thread with the relay workers.

pub mod access;
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
    let listener = bind(addr).with_context(|| format!("{key}: cannot bind {addr}"))?;
    let bound = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("turnd-http".into())
        .spawn(move || {
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

/// A non-blocking TCP listener on `addr` (SO_REUSEADDR, as std sets it) with [`BACKLOG`].
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}
