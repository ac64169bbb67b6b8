//! The edge of every HTTP listener (credential API and metrics): accept, admit or refuse
//! ([`table`]), time each connection's phases ([`clock`]) and hand requests to axum.
//!
//! `axum::serve` has none of this: no header, body or idle timeout and no connection cap, so
//! 20,000 idle connections would hold 20,000 descriptors forever, the ones the relay needs for
//! its sockets. Here hyper is driven by hand, one task per connection on the HTTP thread's
//! runtime.

pub mod clock;
mod conn;
pub mod table;

use axum::Router;
use clock::{Slot, Timeouts};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
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

/// How long a newcomer to a full listener may take to send its first bytes before it is
/// refused: a client's request normally follows its handshake within a round trip.
const FIRST_BYTES_GRACE: Duration = Duration::from_millis(250);

/// Everything a listener's tasks share.
pub(crate) struct Listener {
    app: Router,
    limits: EdgeLimits,
    stats: Arc<EdgeStats>,
    table: Arc<ConnTable>,
    /// Newcomers to a full listener waiting for their first bytes, oldest first, at most
    /// `max_waiting()`: a newcomer past that displaces the oldest.
    waiting: std::sync::Mutex<std::collections::VecDeque<Arc<Slot>>>,
}

impl Listener {
    fn max_waiting(&self) -> usize {
        waiting_slots(self.limits.max_connections)
    }
}

/// Newcomers a full listener of cap `n` lets wait for their first bytes. Under a flood of idle
/// connections, a newcomer whose request trails its handshake survives as long as the flood
/// takes to open this many more: the larger, the better a health check's odds.
pub fn waiting_slots(n: u32) -> usize {
    n as usize / 2 + 16
}

/// Sockets a listener of cap `n` may hold at once, whatever the scheduling: its connections,
/// evicted ones not yet closed by their task (the table allows `n / 8 + 8` of those), and
/// newcomers waiting for their first bytes. [`crate::fdlimit`] reserves this many descriptors.
pub fn max_sockets(n: u32) -> usize {
    n as usize + (n as usize / 8 + 8) + waiting_slots(n)
}

/// One accepted socket counted against [`max_sockets`] until dropped.
pub(crate) struct Counted(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts on `listener` and serves `app` until `shutdown` resolves; then the runtime is
/// dropped with every connection.
///
/// A full listener admits a newcomer only once it has sent something (then its longest-idle
/// connection makes room, see [`table`]): under a flood of idle connections the newcomers that
/// carry a request, a health check's or a credential fetch's, get in, and the idle ones cost an
/// accept and a close.
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
    let this = Arc::new(Listener {
        app,
        limits,
        stats,
        table,
        waiting: Default::default(),
    });
    let sockets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let max_sockets = max_sockets(limits.max_connections);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    this.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        if sockets.fetch_add(1, Ordering::Relaxed) >= max_sockets {
            // Closing tasks have not run yet: the descriptor budget is spent. Refuse, and let
            // them run.
            sockets.fetch_sub(1, Ordering::Relaxed);
            this.stats.refused(Refusal::Full);
            drop(stream);
            tokio::task::yield_now().await;
            continue;
        }
        let counted = Counted(sockets.clone());
        let slot = Slot::new(this.limits.timeouts);
        slot.set_fd(Some(stream.as_raw_fd()));
        let has_request = slot.has_unread();
        match this.table.admit(peer.ip(), slot.clone(), has_request) {
            Ok(admitted) => {
                let evicted = admitted.1;
                tokio::spawn(conn::serve(stream, peer, this.clone(), admitted.0, counted));
                if evicted {
                    this.stats.closed_evicted.fetch_add(1, Ordering::Relaxed);
                    // Under a flood: let the evicted connection close and the new one read its
                    // request before accepting more.
                    tokio::task::yield_now().await;
                }
            }
            Err(Refusal::Full) if !has_request => {
                // Its request may be a moment behind its handshake. Wait for it, displacing
                // the oldest waiting newcomer if too many wait: under a flood each gets the
                // time the flood takes to open max_waiting() more connections.
                let mut displaced = false;
                if let Ok(mut waiting) = this.waiting.lock() {
                    if waiting.len() >= this.max_waiting() {
                        if let Some(oldest) = waiting.pop_front() {
                            oldest.evict();
                            displaced = true;
                        }
                    }
                    waiting.push_back(slot.clone());
                }
                let task = admit_when_it_speaks(stream, peer, slot, this.clone(), counted);
                tokio::spawn(task);
                if displaced {
                    tokio::task::yield_now().await;
                }
            }
            Err(refusal) => {
                // Closed at once: the client sees the connection end without an answer.
                this.stats.refused(refusal);
                drop(stream);
            }
        }
    }
}

/// A newcomer to a full listener: admitted (evicting an idle connection) if it sends something
/// within [`FIRST_BYTES_GRACE`], else closed.
async fn admit_when_it_speaks(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: Arc<Slot>,
    this: Arc<Listener>,
    counted: Counted,
) {
    let spoke = tokio::select! {
        r = tokio::time::timeout(FIRST_BYTES_GRACE, stream.readable()) => matches!(r, Ok(Ok(()))),
        _ = slot.evicted() => false,
    };
    if let Ok(mut waiting) = this.waiting.lock() {
        waiting.retain(|w| !Arc::ptr_eq(w, &slot));
    }
    let admitted = if spoke && slot.has_unread() {
        this.table.admit(peer.ip(), slot, true)
    } else {
        Err(Refusal::Full)
    };
    match admitted {
        Ok((admitted, evicted)) => {
            if evicted {
                this.stats.closed_evicted.fetch_add(1, Ordering::Relaxed);
            }
            conn::serve(stream, peer, this, admitted, counted).await
        }
        Err(refusal) => {
            drop(stream);
            drop(counted);
            this.stats.refused(refusal)
        }
    }
}
