//! Receiving and sending many datagrams per system call (recvmmsg/sendmmsg on Linux; one at a
//! time elsewhere).
//!
//! Each datagram lands in its own slot at offset [`HEADROOM`], leaving room for the server to
//! write a ChannelData or Data-indication header in front of a peer's payload without copying
//! it (see `turnd_proto::server::PEER_HEADROOM`). On a wildcard listener each datagram also
//! brings the address it was sent to, and replies can name the address they leave from
//! (`pktinfo.rs`).

#[cfg(target_os = "linux")]
use super::pktinfo::{self, Control};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per receive call.
pub const BATCH: usize = 32;
/// Room before each datagram.
pub const HEADROOM: usize = turnd_proto::server::PEER_HEADROOM;
/// The largest datagram received whole; larger ones are truncated by the kernel and dropped.
pub const MAX_DATAGRAM: usize = 65_535 - 64;
const SLOT: usize = HEADROOM + MAX_DATAGRAM + turnd_proto::server::PEER_TAILROOM + 64;

/// Buffers for one batch of datagrams.
pub struct RecvBatch {
    buf: Vec<u8>,
    lens: [usize; BATCH],
    from: [SocketAddr; BATCH],
    truncated: [bool; BATCH],
    /// The host address each datagram was sent to, where the socket reports it (pktinfo).
    local: [Option<IpAddr>; BATCH],
    /// Control messages: pktinfo received, or the source address of a send.
    #[cfg(target_os = "linux")]
    control: Box<[Control; BATCH]>,
    #[cfg(target_os = "linux")]
    addrs: Box<[libc::sockaddr_storage; BATCH]>,
    #[cfg(target_os = "linux")]
    iovecs: Box<[libc::iovec; BATCH]>,
    #[cfg(target_os = "linux")]
    hdrs: Box<[libc::mmsghdr; BATCH]>,
}

// SAFETY: the raw pointers in the iovec and mmsghdr arrays only ever point into buffers owned
// by the same RecvBatch, and are rewritten before every receive; moving the batch to another
// thread moves those buffers with it.
unsafe impl Send for RecvBatch {}

const UNSPECIFIED: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        RecvBatch {
            buf: vec![0u8; BATCH * SLOT],
            lens: [0; BATCH],
            from: [UNSPECIFIED; BATCH],
            truncated: [false; BATCH],
            local: [None; BATCH],
            #[cfg(target_os = "linux")]
            control: Box::new([Control::ZERO; BATCH]),
            // SAFETY: all-zero is a valid value for these plain C structs.
            #[cfg(target_os = "linux")]
            addrs: Box::new(unsafe { std::mem::zeroed() }),
            #[cfg(target_os = "linux")]
            iovecs: Box::new(unsafe { std::mem::zeroed() }),
            #[cfg(target_os = "linux")]
            hdrs: Box::new(unsafe { std::mem::zeroed() }),
        }
    }

    /// Datagram `i` of the last receive: its whole slot (headroom included), the payload
    /// range within it, its source, and whether the kernel truncated it.
    #[inline]
    pub fn slot(&mut self, i: usize) -> (&mut [u8], std::ops::Range<usize>, SocketAddr, bool) {
        let slot = &mut self.buf[i * SLOT..(i + 1) * SLOT];
        (
            slot,
            HEADROOM..HEADROOM + self.lens[i],
            self.from[i],
            self.truncated[i],
        )
    }

    /// The host address datagram `i` of the last receive was sent to, when the socket reports
    /// it (a wildcard listener with pktinfo enabled, see `socket::bind_listener`).
    #[inline]
    pub fn local_ip(&self, i: usize) -> Option<IpAddr> {
        self.local[i]
    }

    /// Receives up to [`BATCH`] datagrams from a non-blocking socket; Ok(0) means none waiting.
    #[cfg(target_os = "linux")]
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..BATCH {
            let base = i * SLOT + HEADROOM;
            self.iovecs[i] = libc::iovec {
                iov_base: self.buf[base..].as_mut_ptr() as *mut libc::c_void,
                iov_len: MAX_DATAGRAM,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovecs[i];
            h.msg_iovlen = 1;
            pktinfo::prepare_recv(h, &mut self.control[i]);
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at live buffers owned by `self` for the whole call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(0)
            } else {
                Err(e)
            };
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = self.hdrs[i].msg_len as usize;
            self.truncated[i] = self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.from[i] = sockaddr_to_std(&self.addrs[i]).unwrap_or(UNSPECIFIED);
            self.local[i] = pktinfo::destination(&self.hdrs[i].msg_hdr);
        }
        Ok(n)
    }

    /// Receives one datagram at a time where recvmmsg is not available.
    #[cfg(not(target_os = "linux"))]
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        use std::os::fd::FromRawFd;
        let socket = std::mem::ManuallyDrop::new(unsafe { std::net::UdpSocket::from_raw_fd(fd) });
        let mut n = 0;
        while n < BATCH {
            let base = n * SLOT + HEADROOM;
            match socket.recv_from(&mut self.buf[base..base + MAX_DATAGRAM]) {
                Ok((len, from)) => {
                    self.lens[n] = len;
                    self.from[n] = from;
                    self.truncated[n] = false;
                    self.local[n] = None;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }
}

/// A datagram to send from a slot of the last receive: `slot`, the bytes `range` within it,
/// the destination, and, from a wildcard socket, the host address it must leave from (None:
/// the kernel chooses, right for a socket bound to one address).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub slot: usize,
    pub range: std::ops::Range<usize>,
    pub to: SocketAddr,
    pub from: Option<IpAddr>,
}

impl RecvBatch {
    /// Sends datagrams whose bytes are in this batch's slots, all from one socket, with as
    /// few system calls as the kernel allows. A datagram the kernel will not take now (full
    /// send buffer) is dropped, as UDP would drop it on the wire. Returns how many were sent.
    #[cfg(target_os = "linux")]
    pub fn send(&mut self, fd: RawFd, out: &[Outgoing]) -> usize {
        let mut sent = 0;
        for chunk in out.chunks(BATCH) {
            for (i, o) in chunk.iter().enumerate() {
                let base = o.slot * SLOT;
                self.iovecs[i] = libc::iovec {
                    iov_base: self.buf[base + o.range.start..].as_mut_ptr() as *mut libc::c_void,
                    iov_len: o.range.len(),
                };
                let namelen = std_to_sockaddr(&o.to, &mut self.addrs[i]);
                let h = &mut self.hdrs[i].msg_hdr;
                h.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
                h.msg_namelen = namelen;
                h.msg_iov = &mut self.iovecs[i];
                h.msg_iovlen = 1;
                pktinfo::prepare_send(h, &mut self.control[i], o.from);
                h.msg_flags = 0;
            }
            // SAFETY: the headers point at live buffers owned by `self`.
            sent += unsafe { send_headers(fd, &mut self.hdrs[..chunk.len()]) };
        }
        sent
    }

    /// Sends one datagram at a time where sendmmsg is not available.
    #[cfg(not(target_os = "linux"))]
    pub fn send(&mut self, fd: RawFd, out: &[Outgoing]) -> usize {
        use std::os::fd::FromRawFd;
        let socket = std::mem::ManuallyDrop::new(unsafe { std::net::UdpSocket::from_raw_fd(fd) });
        out.iter()
            .filter(|o| {
                socket
                    .send_to(
                        &self.buf[o.slot * SLOT + o.range.start..o.slot * SLOT + o.range.end],
                        o.to,
                    )
                    .is_ok()
            })
            .count()
    }
}

/// Sends datagrams whose bytes live anywhere (a response the server encoded, a benchmark's
/// frames), each to its address or, with `None`, to the socket's connected peer, from one
/// socket in as few sendmmsg calls as the kernel allows. A datagram the kernel refuses is
/// skipped, as [`RecvBatch::send`] does. Returns how many were sent. Nothing is allocated.
pub fn send_each<'a>(
    fd: RawFd,
    datagrams: impl IntoIterator<Item = (&'a [u8], Option<SocketAddr>)>,
) -> usize {
    send_each_from(fd, datagrams.into_iter().map(|(b, to)| (b, to, None)))
}

/// [`send_each`], each datagram also leaving from the host address given with it (a wildcard
/// socket answering from the address the client sent to; see `pktinfo.rs`) or, with `None`,
/// from the address the kernel chooses.
#[cfg(target_os = "linux")]
pub fn send_each_from<'a>(
    fd: RawFd,
    datagrams: impl IntoIterator<Item = (&'a [u8], Option<SocketAddr>, Option<IpAddr>)>,
) -> usize {
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    let mut controls = [Control::ZERO; BATCH];
    let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut datagrams = datagrams.into_iter().peekable();
    let mut sent = 0;
    while datagrams.peek().is_some() {
        let mut count = 0;
        for (bytes, to, from) in datagrams.by_ref().take(BATCH) {
            iovecs[count] = libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            };
            let h = &mut hdrs[count].msg_hdr;
            match to {
                Some(to) => {
                    h.msg_namelen = std_to_sockaddr(&to, &mut addrs[count]);
                    h.msg_name = &mut addrs[count] as *mut _ as *mut libc::c_void;
                }
                None => {
                    h.msg_namelen = 0;
                    h.msg_name = std::ptr::null_mut();
                }
            }
            h.msg_iov = &mut iovecs[count];
            h.msg_iovlen = 1;
            pktinfo::prepare_send(h, &mut controls[count], from);
            count += 1;
        }
        // SAFETY: the headers point at iovecs, addresses and bytes that outlive the call
        // (the bytes are borrowed for 'a).
        sent += unsafe { send_headers(fd, &mut hdrs[..count]) };
    }
    sent
}

/// sendmmsg until every header has been sent or skipped: a datagram the kernel refuses
/// (EAGAIN, or an error such as an ICMP unreachable reported on this socket) is skipped and
/// the rest go on. Returns how many were sent.
///
/// # Safety
/// Every header must point at a name, iovecs and bytes that are live for the call.
#[cfg(target_os = "linux")]
unsafe fn send_headers(fd: RawFd, hdrs: &mut [libc::mmsghdr]) -> usize {
    let (mut from, mut sent) = (0, 0);
    while from < hdrs.len() {
        // SAFETY: the caller vouches for the headers from..len.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                hdrs[from..].as_mut_ptr(),
                (hdrs.len() - from) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            from += 1;
            continue;
        }
        sent += n as usize;
        from += n as usize;
    }
    sent
}

/// Sends one datagram at a time where sendmmsg is not available (and, without pktinfo, from
/// the address the kernel chooses).
#[cfg(not(target_os = "linux"))]
pub fn send_each_from<'a>(
    fd: RawFd,
    datagrams: impl IntoIterator<Item = (&'a [u8], Option<SocketAddr>, Option<IpAddr>)>,
) -> usize {
    use std::os::fd::FromRawFd;
    let socket = std::mem::ManuallyDrop::new(unsafe { std::net::UdpSocket::from_raw_fd(fd) });
    datagrams
        .into_iter()
        .filter(|(bytes, to, _)| match to {
            Some(to) => socket.send_to(bytes, to).is_ok(),
            None => socket.send(bytes).is_ok(),
        })
        .count()
}

/// Writes `addr` into `ss` as the kernel wants it; returns its length.
#[cfg(target_os = "linux")]
pub fn std_to_sockaddr(addr: &SocketAddr, ss: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            let sin = unsafe { &mut *(ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(target_os = "linux")]
fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    /// More datagrams than one sendmmsg takes, to two receivers, arrive whole and in order.
    #[test]
    fn send_each_delivers_every_datagram_to_its_address() {
        let from = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let msgs: Vec<Vec<u8>> = (0..BATCH as u8 * 2 + 3)
            .map(|i| vec![i; 1 + i as usize])
            .collect();
        let sent = send_each(
            from.as_raw_fd(),
            msgs.iter()
                .enumerate()
                .map(|(i, m)| (&m[..], Some(if i % 2 == 0 { to_a } else { to_b }))),
        );
        assert_eq!(sent, msgs.len());
        let mut buf = [0u8; 256];
        for (i, m) in msgs.iter().enumerate() {
            let sock = if i % 2 == 0 { &a } else { &b };
            let n = sock.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &m[..]);
        }
        // Connected: no address needed.
        from.connect(to_b).unwrap();
        assert_eq!(send_each(from.as_raw_fd(), [(&b"x"[..], None)]), 1);
        assert_eq!(b.recv(&mut buf).unwrap(), 1);
    }

    /// Receives on a non-blocking socket, polling for up to 3 s.
    #[cfg(target_os = "linux")]
    fn recv_within_3s(batch: &mut RecvBatch, socket: &UdpSocket) -> usize {
        (0..300)
            .map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(10));
                batch.recv(socket.as_raw_fd()).unwrap()
            })
            .find(|n| *n > 0)
            .unwrap_or(0)
    }

    /// On a wildcard listener, each datagram reports the address it was sent to, and replies
    /// given that address leave from it, by both send paths. 127.0.0.2 and 127.0.0.3 are
    /// addresses of this host like 127.0.0.1; without pktinfo the kernel would answer a client
    /// on 127.0.0.1 from 127.0.0.1.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_wildcard_listener_answers_from_the_address_it_was_sent_to() {
        let listener =
            crate::relay::socket::bind_listener("0.0.0.0:0".parse().unwrap(), false).unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(3)))
            .unwrap();
        let mut batch = RecvBatch::new();
        let mut buf = [0u8; 64];
        for (n, to) in ["127.0.0.2", "127.0.0.3"].into_iter().enumerate() {
            let to: IpAddr = to.parse().unwrap();
            client.send_to(b"ping", (to, port)).unwrap();
            assert_eq!(recv_within_3s(&mut batch, &listener), 1);
            assert_eq!(batch.local_ip(0), Some(to));
            let (_, range, from, _) = batch.slot(0);
            let reply = Outgoing {
                slot: 0,
                range,
                to: from,
                from: batch.local_ip(0),
            };
            if n == 0 {
                assert_eq!(batch.send(listener.as_raw_fd(), &[reply]), 1);
            } else {
                let sent = send_each_from(
                    listener.as_raw_fd(),
                    [(&b"pong"[..], Some(from), batch.local_ip(0))],
                );
                assert_eq!(sent, 1);
            }
            let (len, source) = client.recv_from(&mut buf).unwrap();
            assert_eq!(source, SocketAddr::new(to, port), "the reply's source");
            assert_eq!(len, 4);
        }
        // A listener bound to one address reports nothing: it answers from that address.
        let bound =
            crate::relay::socket::bind_listener("127.0.0.2:0".parse().unwrap(), false).unwrap();
        client
            .send_to(b"ping", bound.local_addr().unwrap())
            .unwrap();
        assert_eq!(recv_within_3s(&mut batch, &bound), 1);
        assert_eq!(batch.local_ip(0), None);
    }
}
