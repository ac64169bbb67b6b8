//! Receiving many datagrams per system call (recvmmsg on Linux; one at a time elsewhere).
//!
//! Each datagram lands in its own slot at offset [`HEADROOM`], leaving room for the server to
//! write a ChannelData or Data-indication header in front of a peer's payload without copying
//! it (see `turnd_proto::server::PEER_HEADROOM`).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
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
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
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
