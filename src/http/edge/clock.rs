//! Each HTTP connection's clock: which phase it is in, since when, and the socket wrapper that
//! enforces the phase's deadline.
//!
//! A connection is always in one of three phases, each with its own time limit:
//!
//! - `Idle`: waiting for a request (a new connection, or one whose last answer was produced).
//!   Ends at the request's first byte. Limit: `idle`. Writing the previous answer happens here
//!   too, so a client that never reads its answer is also closed.
//! - `Head`: the first byte of a request has come, the head is not complete. Limit: `header`
//!   (slow-loris: a head trickled a byte at a time).
//! - `Request`: the head is complete and turnd is answering; the body is read here. Limit:
//!   `body`, enforced by the service wrapper (it answers 408), not by the socket.
//!
//! hyper's own `header_read_timeout` starts when hyper begins waiting for a head, idle time
//! included, so it cannot tell an idle keep-alive connection from a slow head; and hyper has no
//! body or write timer. The deadline therefore lives in the socket wrapper [`DeadlineIo`]: a
//! read or write that would wait past the phase's deadline fails with `TimedOut`, and hyper
//! closes the connection.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The three limits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub body: Duration,
    pub idle: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Head,
    Request,
}

/// What one connection shares between its socket wrapper, its service and the listener's
/// [`super::table::ConnTable`].
#[derive(Debug)]
pub struct Slot {
    timeouts: Timeouts,
    phase: Mutex<(Phase, Instant)>,
    /// The client key it is counted under (set on admission).
    key: OnceLock<IpAddr>,
    evicted: AtomicBool,
    evict: tokio::sync::Notify,
    /// The socket, while open (-1 after): lets the table see a request waiting to be read.
    fd: AtomicI32,
}

impl Slot {
    pub fn new(timeouts: Timeouts) -> Arc<Slot> {
        Arc::new(Slot {
            timeouts,
            phase: Mutex::new((Phase::Idle, Instant::now())),
            key: OnceLock::new(),
            evicted: AtomicBool::new(false),
            evict: tokio::sync::Notify::new(),
            fd: AtomicI32::new(-1),
        })
    }

    /// Records the connection's socket; `None` once it is about to be closed.
    pub fn set_fd(&self, fd: Option<RawFd>) {
        self.fd.store(fd.unwrap_or(-1), Ordering::Relaxed);
    }

    /// Whether the client has sent bytes turnd has not read yet: a request whose task has not
    /// run, not an idle connection.
    pub fn has_unread(&self) -> bool {
        let fd = self.fd.load(Ordering::Relaxed);
        if fd < 0 {
            return false;
        }
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD on a socket this connection still owns, into a valid c_int.
        let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
        rc == 0 && n > 0
    }

    fn get(&self) -> (Phase, Instant) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn phase(&self) -> Phase {
        self.get().0
    }

    /// Enters `phase` now.
    pub fn set_phase(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = (phase, Instant::now());
    }

    /// When the current phase must end; None in `Request` (the service times that).
    fn deadline(&self) -> Option<(Phase, Instant)> {
        let (phase, since) = self.get();
        let limit = match phase {
            Phase::Idle => self.timeouts.idle,
            Phase::Head => self.timeouts.header,
            Phase::Request => return None,
        };
        Some((phase, since + limit))
    }

    pub fn set_key(&self, key: IpAddr) {
        let _ = self.key.set(key);
    }

    pub fn key(&self) -> IpAddr {
        self.key
            .get()
            .copied()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    /// Asks the connection's task to close it.
    pub fn evict(&self) {
        self.evicted.store(true, Ordering::Relaxed);
        self.evict.notify_one();
    }

    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Resolves once [`Slot::evict`] was called.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

/// A socket whose reads and writes fail with `TimedOut` once its connection's phase is over
/// time. Records which phase timed out.
pub struct DeadlineIo<S> {
    inner: S,
    slot: Arc<Slot>,
    sleep: Pin<Box<Sleep>>,
    /// The phase that ran out of time, once one has.
    pub expired: Arc<OnceLock<Phase>>,
}

impl<S> DeadlineIo<S> {
    pub fn new(inner: S, slot: Arc<Slot>) -> Self {
        DeadlineIo {
            inner,
            slot,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            expired: Arc::new(OnceLock::new()),
        }
    }

    /// Ok when the phase still has time (arming the timer to wake this task at its deadline
    /// if `waiting`); the error to return when it has none.
    fn check(&mut self, cx: &mut Context<'_>, waiting: bool) -> io::Result<()> {
        let Some((phase, deadline)) = self.slot.deadline() else {
            return Ok(());
        };
        let late = if waiting {
            self.arm(cx, deadline)
        } else {
            Instant::now() >= deadline
        };
        if late {
            let _ = self.expired.set(phase);
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "HTTP connection over its time limit",
            ));
        }
        Ok(())
    }

    /// Sets the timer to wake this task at `deadline`; true if it has passed.
    fn arm(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx).is_ready()
    }

    /// After a write: the answer has been produced, so the phase may have changed (to `Idle`)
    /// without a read to notice, and hyper will not read again until the socket wakes it. Arm
    /// the new phase's deadline now, so the task wakes, reads and fails when it passes.
    fn rearm(&mut self, cx: &mut Context<'_>) {
        if let Some((_, deadline)) = self.slot.deadline() {
            if self.arm(cx, deadline) {
                cx.waker().wake_by_ref();
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for DeadlineIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx, false)?;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                // The first byte of a request starts its head's clock.
                if buf.filled().len() > before && this.slot.phase() == Phase::Idle {
                    this.slot.set_phase(Phase::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.check(cx, true) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => match this.check(cx, true) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            other => {
                this.rearm(cx);
                other
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => match this.check(cx, true) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
