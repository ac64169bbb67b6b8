//! One TCP or TLS client connection (RFC 8656 §3.1): bytes in, whole STUN/ChannelData frames
//! out; frames in, bytes out. Both directions are bounded, so a slow reader or a client that
//! never finishes a frame costs at most a fixed amount of memory.
//!
//! Outgoing frames that do not fit the queue are dropped whole, as a datagram would be lost:
//! a partial frame would corrupt the stream.

use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;
use turnd_proto::wire::framing::{next_frame, Frame, FrameBuffer, StreamError, MAX_FRAME};
use turnd_proto::ClientId;

/// Unread bytes held per connection: one maximal frame and change.
const READ_CAPACITY: usize = MAX_FRAME + 4096;
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
    /// The read stopped because the frame buffer was full, not because the socket was empty:
    /// take the frames out and read again.
    pub more: bool,
}

impl ReadState {
    /// The peer closed its side.
    const EOF: ReadState = ReadState {
        eof: true,
        more: false,
    };
    /// The socket has nothing more for now.
    const DRAINED: ReadState = ReadState {
        eof: false,
        more: false,
    };
    /// The frame buffer is full: take frames out, then read again.
    const FULL: ReadState = ReadState {
        eof: false,
        more: true,
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
        })
    }

    pub fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Reads what the socket has, up to the room in the frame buffer.
    pub fn read_available(&mut self) -> Result<ReadState, Close> {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            let room = self.frames.room().min(tmp.len());
            if room == 0 {
                return Ok(ReadState::FULL);
            }
            match &mut self.tls {
                None => match self.stream.read(&mut tmp[..room]) {
                    Ok(0) => return Ok(ReadState::EOF),
                    Ok(n) => self.frames.push(&tmp[..n]).map_err(Close::Stream)?,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(ReadState::DRAINED)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Close::Io(e)),
                },
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
                    match tls.read_tls(&mut self.stream) {
                        Ok(0) => return Ok(ReadState::EOF),
                        Ok(_) => {
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
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Close::Io(e)),
                    }
                }
                if self.out_start == self.out.len() || tls.is_handshaking() {
                    return Ok(self.out_start != self.out.len());
                }
                // One TLS record per TURN message, as coturn writes them: some clients read one
                // message per record. The queue holds whole frames only.
                let rest = &self.out[self.out_start..];
                let n = match next_frame(rest) {
                    Frame::Complete(n) => n,
                    _ => rest.len(),
                };
                tls.writer().write_all(&rest[..n]).map_err(Close::Io)?;
                self.out_start += n;
                continue;
            }
            if self.out_start == self.out.len() {
                return Ok(false);
            }
            match self.stream.write(&self.out[self.out_start..]) {
                Ok(n) => self.out_start += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Close::Io(e)),
            }
        }
    }
}
