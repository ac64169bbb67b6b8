//! The admin API's way into a worker (issue 16). Each worker owns its `proto::Server`, so the
//! HTTP thread cannot read or change allocations itself: it leaves a request in the worker's
//! [`AdminSlot`], wakes the worker, and awaits the answer on a oneshot channel (with a
//! timeout, in `http/admin.rs`). The worker looks at the slot once per loop turn, between
//! batches, with one atomic load when it is empty: the packet path never sees it.

use super::worker::Worker;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tokio::sync::oneshot;
use turnd_proto::server::SessionInfo;
use turnd_proto::Now;

/// Requests queued for one worker at most; beyond it the admin API answers 503 (the HTTP
/// edge caps connections anyway; this keeps a stuck worker from queueing without bound).
pub const MAX_QUEUED: usize = 64;

/// What the admin API asks a worker.
#[derive(Debug, Clone)]
pub enum AdminRequest {
    /// The live allocations, of one user (user id or full username) or all.
    List { user: Option<String> },
    /// End one user's allocations now, closing its TCP/TLS connections.
    EndUser { user: String },
}

/// A worker's answer.
#[derive(Debug)]
pub enum AdminReply {
    /// The worker's allocations, with the server side of stream 5-tuples filled in.
    Sessions(Vec<SessionInfo>),
    /// What [`AdminRequest::EndUser`] ended, as it was just before.
    Ended(Vec<SessionInfo>),
}

type Pending = (AdminRequest, oneshot::Sender<AdminReply>);

/// Admin requests waiting for one worker.
#[derive(Debug, Default)]
pub struct AdminSlot {
    pending: AtomicBool,
    queue: Mutex<Vec<Pending>>,
}

impl AdminSlot {
    /// Queues a request (the caller then wakes the worker); gives it back when the queue is
    /// full.
    pub fn offer(
        &self,
        request: AdminRequest,
        reply: oneshot::Sender<AdminReply>,
    ) -> Result<(), AdminRequest> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= MAX_QUEUED {
            return Err(request);
        }
        q.push((request, reply));
        self.pending.store(true, Ordering::Release);
        Ok(())
    }

    /// The queued requests; one atomic load when there are none.
    fn take(&self) -> Vec<Pending> {
        if !self.pending.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Worker {
    /// Answers the queued admin requests.
    pub(super) fn serve_admin(&mut self, now: Now) {
        for (request, reply) in self.admin.take() {
            let answer = match request {
                AdminRequest::List { user } => {
                    AdminReply::Sessions(self.sessions(user.as_deref(), now))
                }
                AdminRequest::EndUser { user } => AdminReply::Ended(self.end_user(&user, now)),
            };
            // The HTTP side may have given up (timeout): nothing to do then.
            let _ = reply.send(answer);
        }
    }

    fn sessions(&self, user: Option<&str>, now: Now) -> Vec<SessionInfo> {
        let mut sessions = self.server.sessions(user, now);
        for s in &mut sessions {
            // What the kernel fast path relayed for it is counted there, not in the core.
            s.usage += self.routes.live_usage(&s.id);
            if s.transport.is_stream() && s.server.port() == 0 {
                // The core does not know a connection's local port; the socket does.
                let local = self
                    .conns
                    .get(s.id.local as usize)
                    .and_then(Option::as_ref)
                    .filter(|c| c.client == s.id)
                    .and_then(|c| c.stream.local_addr().ok());
                if let Some(local) = local {
                    s.server = local;
                }
            }
        }
        sessions
    }

    /// Ends `user`'s allocations; a TCP/TLS client's connection closes with its allocation
    /// (RFC 8656 §3.1).
    fn end_user(&mut self, user: &str, now: Now) -> Vec<SessionInfo> {
        let before = self.sessions(Some(user), now);
        let ended = self.server.end_user(user, now);
        self.run_commands();
        // Each one is logged as its allocation_ended event (reason admin).
        for client in &ended {
            let why = io::Error::new(io::ErrorKind::ConnectionAborted, "ended by the admin API");
            self.close_client_conn(client, now, why);
        }
        before
            .into_iter()
            .filter(|s| {
                ended
                    .iter()
                    .any(|c| c.remote == s.client && c.transport == s.transport)
            })
            .collect()
    }
}
