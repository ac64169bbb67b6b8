//! Usage records: one JSON line per ended allocation, appended to `usage_log` by a thread of
//! its own, so no worker ever waits on a disk.
//!
//! Workers hand finished lines over a bounded channel ([`CHANNEL_CAPACITY`]); when it is full
//! the record is dropped and counted (`turnd_usage_records_dropped_total`) rather than
//! stalling relaying. The writer buffers and flushes whenever the channel runs dry, so a
//! record is on disk within moments of the allocation's end; at shutdown the workers end
//! what is left (reason `shutdown` or `drained`), their records are sent, and the writer
//! flushes and exits once every sender is gone ([`UsageLog::close`]). SIGHUP reopens the
//! file ([`UsageLog::reopen`]): logrotate renames it, and new records go to a new file of the
//! configured name.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Records waiting for the writer before new ones are dropped.
pub const CHANNEL_CAPACITY: usize = 4096;

/// Where usage records go (config key `usage_log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageTarget {
    /// `-`: standard output.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
}

/// What the usage log counted, for /metrics.
#[derive(Debug, Default)]
pub struct UsageCounters {
    /// Records written.
    pub written: AtomicU64,
    /// Records dropped: the writer's channel was full, or a write failed.
    pub dropped: AtomicU64,
}

enum Msg {
    Record(String),
    Reopen,
}

/// A worker's end of the usage log.
#[derive(Clone)]
pub struct UsageSender {
    tx: SyncSender<Msg>,
    counters: Arc<UsageCounters>,
}

impl UsageSender {
    /// Queues one record, waiting for room: at shutdown, when nothing is relayed any more
    /// and every live allocation's record must reach the file.
    pub fn send_waiting(&self, line: String) {
        if self.tx.send(Msg::Record(line)).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues one record (a JSON object without its newline); never blocks.
    pub fn send(&self, line: String) {
        match self.tx.try_send(Msg::Record(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The usage log: its writer thread and the handle workers send through.
pub struct UsageLog {
    sender: Option<UsageSender>,
    thread: Option<JoinHandle<()>>,
    pub counters: Arc<UsageCounters>,
}

impl UsageLog {
    /// Opens the target (a file is created if missing, appended to otherwise) and starts the
    /// writer. Fails, naming the key, if the file cannot be opened.
    pub fn start(target: UsageTarget) -> Result<UsageLog> {
        let out = Output::open(&target)
            .with_context(|| format!("usage_log: cannot open {}", target.describe()))?;
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let counters = Arc::new(UsageCounters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name("turnd-usage-log".into())
            .spawn(move || write_loop(rx, out, target, &c))
            .context("cannot start the usage log writer")?;
        Ok(UsageLog {
            sender: Some(UsageSender {
                tx,
                counters: counters.clone(),
            }),
            thread: Some(thread),
            counters,
        })
    }

    /// A sender for a worker.
    pub fn sender(&self) -> Option<UsageSender> {
        self.sender.clone()
    }

    /// SIGHUP: close the file and open the configured name again (after logrotate's rename).
    pub fn reopen(&self) {
        if let Some(s) = &self.sender {
            // Blocking is fine here (the signal thread): the reopen must not be dropped.
            let _ = s.tx.send(Msg::Reopen);
        }
    }

    /// Flushes and stops the writer. Call after the workers have stopped (their senders are
    /// gone with them), so every record they sent is written first.
    pub fn close(mut self) {
        self.sender = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl UsageTarget {
    fn describe(&self) -> String {
        match self {
            UsageTarget::Stdout => "standard output".into(),
            UsageTarget::File(p) => p.display().to_string(),
        }
    }
}

enum Output {
    Stdout(io::Stdout),
    File(BufWriter<File>),
}

impl Output {
    fn open(target: &UsageTarget) -> io::Result<Output> {
        Ok(match target {
            UsageTarget::Stdout => Output::Stdout(io::stdout()),
            UsageTarget::File(p) => Output::File(BufWriter::new(open_append(p)?)),
        })
    }

    fn line(&mut self, line: &str) -> io::Result<()> {
        match self {
            Output::Stdout(s) => {
                let mut s = s.lock();
                s.write_all(line.as_bytes())?;
                s.write_all(b"\n")
            }
            Output::File(f) => {
                f.write_all(line.as_bytes())?;
                f.write_all(b"\n")
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout(s) => s.flush(),
            Output::File(f) => f.flush(),
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn write_loop(rx: Receiver<Msg>, mut out: Output, target: UsageTarget, c: &UsageCounters) {
    loop {
        // Wait for work; flush whenever the channel runs dry.
        let msg = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut next = Some(msg);
        while let Some(m) = next.take() {
            match m {
                Msg::Record(line) => match out.line(&line) {
                    Ok(()) => {
                        c.written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        c.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "usage_log: write failed; record dropped");
                    }
                },
                Msg::Reopen => {
                    let _ = out.flush();
                    match Output::open(&target) {
                        Ok(o) => {
                            out = o;
                            tracing::info!(usage_log = %target.describe(), "SIGHUP: usage log reopened");
                        }
                        Err(e) => {
                            tracing::error!(error = %e, usage_log = %target.describe(), "SIGHUP: cannot reopen the usage log; writing on to the old file")
                        }
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush() {
            tracing::error!(error = %e, "usage_log: flush failed");
        }
    }
    let _ = out.flush();
}
