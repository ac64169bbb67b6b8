//! The edge of every HTTP listener (credential API and metrics): accept, admit or refuse
//! ([`table`]), time each connection's phases ([`clock`]) and hand requests to axum.
//!
//! `axum::serve` has none of this: no header, body or idle timeout and no connection cap, so
//! 20,000 idle connections would hold 20,000 descriptors forever, the ones the relay needs for
//! its sockets. Here hyper is driven by hand, one task per connection on the HTTP thread's
//! runtime.

pub mod clock;
pub mod table;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use clock::{DeadlineIo, Phase, Slot, Timeouts};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use table::{ConnTable, Refusal};

/// A listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub timeouts: Timeouts,
    pub max_connections: u32,
    pub max_connections_per_ip: u32,
    pub ipv6_source_prefix: u8,
}

impl EdgeLimits {
    /// The limits configured for HTTP listeners, with the connection cap as the start-up
    /// file-descriptor plan allows ([`crate::fdlimit`]).
    pub fn from_config(config: &crate::config::Config, max_connections: u32) -> Self {
        EdgeLimits {
            timeouts: Timeouts {
                header: config.http_header_timeout,
                body: config.http_body_timeout,
                idle: config.http_idle_timeout,
            },
            max_connections,
            max_connections_per_ip: config.http_max_connections_per_ip,
            ipv6_source_prefix: config.ipv6_source_prefix,
        }
    }
}

/// Counters shared by every HTTP listener, read by the metrics collector.
#[derive(Debug, Default)]
pub struct EdgeStats {
    pub refused_per_address: AtomicU64,
    pub refused_full: AtomicU64,
    /// accept() failed, mostly for lack of file descriptors (EMFILE/ENFILE).
    pub accept_errors: AtomicU64,
    pub closed_header_timeout: AtomicU64,
    pub closed_body_timeout: AtomicU64,
    pub closed_idle_timeout: AtomicU64,
    pub closed_evicted: AtomicU64,
    /// The listeners' tables, for the open-connections gauge.
    tables: std::sync::Mutex<Vec<Arc<ConnTable>>>,
}

impl EdgeStats {
    /// HTTP connections held now, over every listener.
    pub fn open(&self) -> u64 {
        self.tables
            .lock()
            .map(|t| t.iter().map(|t| t.open() as u64).sum())
            .unwrap_or(0)
    }

    fn refused(&self, r: Refusal) {
        match r {
            Refusal::PerAddress => &self.refused_per_address,
            Refusal::Full => &self.refused_full,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

/// How long the accept loop pauses after accept() fails (out of descriptors: retrying at once
/// would spin; meanwhile the kernel queues new connections).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts on `listener` and serves `app` until `shutdown` resolves; then the runtime is
/// dropped with every connection.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: EdgeLimits,
    stats: Arc<EdgeStats>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let table = ConnTable::new(
        limits.max_connections,
        limits.max_connections_per_ip,
        limits.ipv6_source_prefix,
    );
    if let Ok(mut t) = stats.tables.lock() {
        t.push(table.clone());
    }
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let slot = Slot::new(limits.timeouts);
        let admitted = match table.admit(peer.ip(), slot.clone()) {
            Ok((admitted, evicted)) => {
                if evicted {
                    stats.closed_evicted.fetch_add(1, Ordering::Relaxed);
                }
                admitted
            }
            Err(refusal) => {
                // Closed at once: an RST-free FIN the client sees as an empty answer.
                stats.refused(refusal);
                drop(stream);
                continue;
            }
        };
        tokio::spawn(connection(
            stream,
            peer,
            app.clone(),
            admitted,
            limits.timeouts.body,
            stats.clone(),
        ));
    }
}

/// Serves one connection until it closes, times out or is evicted.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    admitted: table::Admitted,
    body_timeout: Duration,
    stats: Arc<EdgeStats>,
) {
    let slot = admitted.slot.clone();
    let io = DeadlineIo::new(stream, slot.clone());
    let expired = io.expired.clone();
    let service = {
        let slot = slot.clone();
        let stats = stats.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            answer(
                req,
                peer,
                app.clone(),
                slot.clone(),
                body_timeout,
                stats.clone(),
            )
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The deadlines are DeadlineIo's (see clock.rs): hyper's header timer would also count idle
    // keep-alive time as header time.
    builder.header_read_timeout(None);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        r = conn => {
            match expired.get() {
                Some(Phase::Head) => stats.closed_header_timeout.fetch_add(1, Ordering::Relaxed),
                Some(Phase::Idle) => stats.closed_idle_timeout.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        }
        // Counted by the accept loop when it chose this connection.
        _ = slot.evicted() => {}
    }
    drop(admitted);
}

/// Runs one request through axum within the body timeout; 408 (and the connection closed)
/// when it runs out.
async fn answer(
    mut req: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
    app: Router,
    slot: Arc<Slot>,
    body_timeout: Duration,
    stats: Arc<EdgeStats>,
) -> Result<axum::response::Response, std::convert::Infallible> {
    use tower_service::Service;
    slot.set_phase(Phase::Request);
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    let mut app = app;
    let result = tokio::time::timeout(body_timeout, app.call(req)).await;
    slot.set_phase(Phase::Idle);
    Ok(match result {
        Ok(Ok(resp)) => resp,
        Ok(Err(never)) => match never {},
        Err(_) => {
            stats.closed_body_timeout.fetch_add(1, Ordering::Relaxed);
            let mut resp = super::error::ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request not received in time (http_body_timeout)",
            )
            .into_response();
            // RFC 9110 §15.5.9: the server closes the connection after a 408.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    })
}
