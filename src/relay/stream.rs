//! One TCP or TLS client connection (RFC 8656 §3.1): bytes in, whole STUN/ChannelData frames
//! out; frames in, bytes out. Both directions are bounded, so a slow reader or a client that
//! never finishes a frame costs at most a fixed amount of memory.
//!
//! Outgoing frames that do not fit the queue are dropped whole, as a datagram would be lost:
//! a partial frame would corrupt the stream.

use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use turnd_proto::wire::framing::{next_frame, Frame, FrameBuffer, StreamError, MAX_FRAME};
use turnd_proto::ClientId;

/// Unread bytes held per connection at most: one maximal frame and change. The buffer grows to
/// this only while a large frame arrives and shrinks again when the connection is idle.
const READ_CAPACITY: usize = MAX_FRAME + 4096;
/// TLS records handed to rustls before it writes them: rustls writes up to 64 pending records
/// in one writev, and holds no more than this many frames' worth beyond our own queue.
const RECORDS_PER_WRITE: usize = 64;
/// Bytes queued for a client that is not reading fast enough.
const WRITE_CAPACITY: usize = 256 * 1024;

/// Why a connection is closed.
#[derive(Debug)]
pub enum Close {
    Eof,
    Io(io::Error),
    Tls(rustls::Error),
    Stream(StreamError),
}

/// What a read left behind.
pub struct ReadState {
    /// The peer closed its side.
    pub eof: bool,
    /// The socket had nothing more: the next READABLE event says when it has. Otherwise the
    /// read stopped at the byte budget or a full frame buffer, and the caller must come back.
    pub drained: bool,
}

impl ReadState {
    /// The peer closed its side.
    const EOF: ReadState = ReadState {
        eof: true,
        drained: true,
    };
    /// The socket has nothing more for now.
    const DRAINED: ReadState = ReadState {
        eof: false,
        drained: true,
    };
    /// Stopped at the budget or a full buffer: take frames out, then read again.
    const MORE: ReadState = ReadState {
        eof: false,
        drained: false,
    };
}

pub struct Conn {
    pub stream: TcpStream,
    pub client: ClientId,
    tls: Option<Box<rustls::ServerConnection>>,
    frames: FrameBuffer,
    out: Vec<u8>,
    out_start: usize,
    pub created: Instant,
    /// When the last complete frame arrived (or the connection opened).
    pub last_frame: Instant,
    /// Whether WRITABLE interest is registered.
    pub writable: bool,
    /// The peer closed its side; the frames before its FIN are still handed over.
    pub eof: bool,
    /// Back-pressure: too many answers are queued, so the connection is not read until they
    /// drain (see `conns.rs`).
    pub paused: bool,
    /// Its token waits in the worker's backlog for the next turn.
    pub backlogged: bool,
    /// Answers were queued since the last flush; the worker flushes once per batch of commands.
    pub dirty: bool,
    /// The event-loop turn in which it was last read: once per turn at most.
    pub served_turn: u64,
    /// Bytes written to the socket so far, and when the sweep last saw that count change (or
    /// nothing queued): how long queued bytes have waited for a reader.
    written: u64,
    stall_mark: (u64, Instant),
}

impl Conn {
    pub fn new(
        stream: TcpStream,
        client: ClientId,
        tls: Option<&Arc<rustls::ServerConfig>>,
    ) -> Result<Conn, rustls::Error> {
        let tls = match tls {
            Some(cfg) => {
                let mut c = rustls::ServerConnection::new(cfg.clone())?;
                c.set_buffer_limit(None);
                Some(Box::new(c))
            }
            None => None,
        };
        let now = Instant::now();
        Ok(Conn {
            stream,
            client,
            tls,
            frames: FrameBuffer::new(READ_CAPACITY),
            out: Vec::new(),
            out_start: 0,
            created: now,
            last_frame: now,
            writable: false,
            eof: false,
            paused: false,
            backlogged: false,
            dirty: false,
            served_turn: 0,
            written: 0,
            stall_mark: (0, now),
        })
    }

    pub fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Reads what the socket has, up to the room in the frame buffer and at most `budget`
    /// bytes from the socket (for TLS, bytes of records; what rustls already decrypted is read
    /// first and free). The budget is decreased by what was read.
    pub fn read_available(&mut self, budget: &mut usize) -> Result<ReadState, Close> {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            let room = self.frames.room().min(tmp.len());
            if room == 0 {
                return Ok(ReadState::MORE);
            }
            match &mut self.tls {
                None => {
                    if *budget == 0 {
                        return Ok(ReadState::MORE);
                    }
                    match self.stream.read(&mut tmp[..room.min(*budget)]) {
                        Ok(0) => return Ok(ReadState::EOF),
                        Ok(n) => {
                            *budget -= n;
                            self.frames.push(&tmp[..n]).map_err(Close::Stream)?
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Ok(ReadState::DRAINED)
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Close::Io(e)),
                    }
                }
                Some(tls) => {
                    // Plaintext rustls already decrypted comes first.
                    match tls.reader().read(&mut tmp[..room]) {
                        Ok(0) => return Ok(ReadState::EOF),
                        Ok(n) => {
                            self.frames.push(&tmp[..n]).map_err(Close::Stream)?;
                            continue;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(Close::Io(e)),
                    }
                    if *budget == 0 {
                        return Ok(ReadState::MORE);
                    }
                    match tls.read_tls(&mut self.stream) {
                        Ok(0) => return Ok(ReadState::EOF),
                        Ok(n) => {
                            *budget = budget.saturating_sub(n);
                            tls.process_new_packets().map_err(Close::Tls)?;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Ok(ReadState::DRAINED)
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Close::Io(e)),
                    }
                }
            }
        }
    }

    /// The next whole frame read so far.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, Close> {
        self.frames.next_frame().map_err(Close::Stream)
    }

    /// Queues a frame for the client; false (and dropped) if the queue is full.
    pub fn send(&mut self, frame: &[u8]) -> bool {
        if self.out_start == self.out.len() {
            self.out.clear();
            self.out_start = 0;
        }
        if self.out.len() - self.out_start + frame.len() > WRITE_CAPACITY {
            return false;
        }
        if self.out_start > WRITE_CAPACITY / 2 {
            self.out.drain(..self.out_start);
            self.out_start = 0;
        }
        self.out.extend_from_slice(frame);
        true
    }

    /// Bytes of answers queued and not yet handed to the socket (or to rustls).
    pub fn queued(&self) -> usize {
        self.out.len() - self.out_start
    }

    /// How long bytes have been waiting for the client to read them, as of this sweep: zero
    /// when nothing waits or the socket took some since the last sweep.
    pub fn stalled_for(&mut self, now: Instant) -> Duration {
        let waiting = self.queued() > 0 || self.tls.as_ref().is_some_and(|t| t.wants_write());
        if !waiting || self.written != self.stall_mark.0 {
            self.stall_mark = (self.written, now);
        }
        now.saturating_duration_since(self.stall_mark.1)
    }

    /// Bytes of memory the connection's own buffers hold (rustls's are not counted).
    pub fn buffer_bytes(&self) -> usize {
        self.frames.allocated() + self.out.capacity()
    }

    /// Gives back buffer memory an idle connection does not need: a connection that once
    /// carried a 64 KiB frame or a burst of answers would otherwise keep that much for life
    /// (issue 20: 64 KiB × 10,000 connections). Called by the sweep, once a second at most, so
    /// a busy connection does not reallocate per packet.
    pub fn shrink_idle(&mut self, now: Instant, after: Duration) {
        if self.queued() == 0 {
            self.out = Vec::new();
            self.out_start = 0;
        }
        if now.saturating_duration_since(self.last_frame) >= after {
            self.frames.shrink();
        }
    }

    /// Ends the session politely: a TLS close_notify (best effort; the socket is closed next).
    pub fn shutdown(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let _ = self.flush();
        }
    }

    /// Writes what is queued. Ok(true) when bytes remain for a later WRITABLE event.
    pub fn flush(&mut self) -> Result<bool, Close> {
        loop {
            if let Some(tls) = &mut self.tls {
                while tls.wants_write() {
                    match tls.write_tls(&mut self.stream) {
                        Ok(n) => self.written += n as u64,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Close::Io(e)),
                    }
                }
                if self.out_start == self.out.len() || tls.is_handshaking() {
                    return Ok(self.out_start != self.out.len());
                }
                // One TLS record per TURN message, as coturn writes them: some clients read one
                // message per record. The queue holds whole frames only. Up to
                // RECORDS_PER_WRITE records go out in one vectored write.
                for _ in 0..RECORDS_PER_WRITE {
                    let rest = &self.out[self.out_start..];
                    if rest.is_empty() {
                        break;
                    }
                    let n = match next_frame(rest) {
                        Frame::Complete(n) => n,
                        _ => rest.len(),
                    };
                    tls.writer().write_all(&rest[..n]).map_err(Close::Io)?;
                    self.out_start += n;
                }
                continue;
            }
            if self.out_start == self.out.len() {
                return Ok(false);
            }
            match self.stream.write(&self.out[self.out_start..]) {
                Ok(n) => {
                    self.out_start += n;
                    self.written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Close::Io(e)),
            }
        }
    }
}
