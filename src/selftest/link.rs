//! How a self-test peer reaches the TURN server: a UDP socket, or a TCP or TLS stream cut
//! into frames. Every byte goes to the server and nowhere else (relay-only by construction).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};
use turnd_proto::wire::framing::FrameBuffer;

/// The transport to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Udp,
    Tcp,
    Tls,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Udp => "udp",
            Kind::Tcp => "tcp",
            Kind::Tls => "tls",
        }
    }
    pub fn is_stream(self) -> bool {
        self != Kind::Udp
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A connection to the server.
pub struct Link {
    pub kind: Kind,
    pub server: SocketAddr,
    udp: Option<UdpSocket>,
    stream: Option<Box<dyn Stream>>,
    frames: FrameBuffer,
}

/// Why a link could not be opened.
#[derive(Debug)]
pub enum OpenError {
    Connect(io::Error),
    Tls(String),
}

impl Link {
    /// Opens a link; for TLS, `tls` is the client configuration and `name` the server name.
    pub fn open(
        kind: Kind,
        server: SocketAddr,
        tls: Option<(&Arc<rustls::ClientConfig>, &str)>,
        timeout: Duration,
    ) -> Result<Link, OpenError> {
        let bind: SocketAddr = if server.is_ipv6() {
            "[::]:0".parse().unwrap()
        } else {
            "0.0.0.0:0".parse().unwrap()
        };
        let mut link = Link {
            kind,
            server,
            udp: None,
            stream: None,
            frames: FrameBuffer::new(0),
        };
        match kind {
            Kind::Udp => {
                let s = UdpSocket::bind(bind).map_err(OpenError::Connect)?;
                s.connect(server).map_err(OpenError::Connect)?;
                link.udp = Some(s);
            }
            Kind::Tcp | Kind::Tls => {
                let s = TcpStream::connect_timeout(&server, timeout).map_err(OpenError::Connect)?;
                s.set_nodelay(true).ok();
                // Short, so `recv` can honour its own deadlines.
                s.set_read_timeout(Some(Duration::from_millis(100))).ok();
                if kind == Kind::Tcp {
                    link.stream = Some(Box::new(s));
                } else {
                    let (cfg, name) =
                        tls.ok_or_else(|| OpenError::Tls("no TLS configuration".into()))?;
                    let name = rustls::pki_types::ServerName::try_from(name.to_owned())
                        .map_err(|e| OpenError::Tls(e.to_string()))?;
                    let conn = rustls::ClientConnection::new(cfg.clone(), name)
                        .map_err(|e| OpenError::Tls(e.to_string()))?;
                    let mut tls = rustls::StreamOwned::new(conn, s);
                    while tls.conn.is_handshaking() {
                        tls.conn
                            .complete_io(&mut tls.sock)
                            .map_err(|e| OpenError::Tls(e.to_string()))?;
                    }
                    link.stream = Some(Box::new(tls));
                }
            }
        }
        Ok(link)
    }

    /// Sends one message to the server.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match (&self.udp, &mut self.stream) {
            (Some(u), _) => u.send(bytes).map(drop),
            (_, Some(s)) => s.write_all(bytes).and_then(|_| s.flush()),
            _ => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    /// The next message from the server, waiting at most until `deadline`; `None` when it
    /// passed or the link broke.
    pub fn recv(&mut self, deadline: Instant) -> Option<Vec<u8>> {
        self.read(deadline).ok().flatten()
    }

    /// The next message from the server: `Ok(None)` once `deadline` has passed, an error when
    /// the server closed the stream or the socket failed (so a waiting client stops at once).
    pub fn read(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        loop {
            let Some(left) = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
            else {
                return Ok(None);
            };
            if let Some(u) = &self.udp {
                u.set_read_timeout(Some(left))?;
                let mut buf = vec![0u8; 65_536];
                match u.recv(&mut buf) {
                    Ok(n) => {
                        buf.truncate(n);
                        return Ok(Some(buf));
                    }
                    // A refused port (ICMP): the server may be starting; wait a little.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        std::thread::sleep(left.min(Duration::from_millis(50)));
                        continue;
                    }
                    Err(e) if is_timeout(&e) => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            if let Some(f) = self.frames.next_frame().map_err(io::Error::other)? {
                return Ok(Some(f.to_vec()));
            }
            let s = self
                .stream
                .as_mut()
                .ok_or(io::Error::from(io::ErrorKind::NotConnected))?;
            let mut buf = [0u8; 16 * 1024];
            match s.read(&mut buf) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(n) => self.frames.push(&buf[..n]).map_err(io::Error::other)?,
                Err(e) if is_timeout(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// A read timeout (its kind differs between platforms).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
