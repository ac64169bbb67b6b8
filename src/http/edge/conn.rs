//! One admitted HTTP connection: hyper's HTTP/1 state machine over the deadline socket, each
//! request handed to axum within the body timeout, until the connection closes, runs out of
//! time or is evicted.

use super::clock::{DeadlineIo, Phase, Slot};
use super::{table, Counted, EdgeStats, Listener};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Bytes of request head (and body chunk) hyper buffers per connection (its minimum is 8 KiB).
const MAX_HEAD_BUFFER: usize = 16 * 1024;

/// Serves one connection until it closes, times out or is evicted.
pub(super) async fn serve(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    this: Arc<Listener>,
    admitted: table::Admitted,
    counted: Counted,
) {
    let stats = this.stats.clone();
    let app = this.app.clone();
    let body_timeout = this.limits.timeouts.body;
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
    // hyper buffers up to ~400 KB of head per connection by default; with a thousand stalled
    // heads that is 400 MB. Our requests fit in a few KB (query strings are capped at 2 KB):
    // a longer head is answered 431 and closed.
    builder.max_buf_size(MAX_HEAD_BUFFER);
    // Boxed, not pinned on the stack, so it (and the socket) can be dropped before the
    // connection stops being counted.
    let mut conn = Box::pin(builder.serve_connection(TokioIo::new(io), service));
    tokio::select! {
        r = conn.as_mut() => {
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
    // The socket closes with `conn`: the table must not look at its descriptor any more.
    slot.set_fd(None);
    drop(conn);
    drop(admitted);
    drop(counted);
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
            let mut resp = crate::http::error::ApiError::new(
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
