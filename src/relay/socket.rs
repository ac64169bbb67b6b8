//! Creating UDP sockets the way a relay needs them.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;

/// Kernel buffer size asked for on listener sockets: bursts from many clients queue here while
/// a worker is busy. Best effort; the kernel caps it at net.core.rmem_max.
const LISTENER_BUFFER: usize = 4 << 20;

/// A non-blocking UDP listener. With `reuse_port`, every worker binds its own socket to the
/// same address and the kernel spreads clients over them by 4-tuple hash, so one client's
/// packets always reach the same worker (SO_REUSEPORT). On a wildcard address the socket
/// reports each datagram's destination (pktinfo), so replies can leave from the address the
/// client sent to (RFC 8656 §2; see `pktinfo.rs`).
pub fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Separate IPv4 and IPv6 listeners may share a port.
        socket.set_only_v6(true)?;
    }
    #[cfg(target_os = "linux")]
    if addr.ip().is_unspecified() {
        use std::os::fd::AsRawFd;
        super::pktinfo::enable(socket.as_raw_fd(), addr.is_ipv6())?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    let _ = socket.set_recv_buffer_size(LISTENER_BUFFER);
    let _ = socket.set_send_buffer_size(LISTENER_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A non-blocking relay socket on exactly `addr` (no SO_REUSEPORT: if another process holds
/// the port, the bind must fail so the server picks another). `dont_fragment` honours the
/// client's DONT-FRAGMENT attribute (RFC 8656 §7.2).
pub fn bind_relay(addr: SocketAddr, dont_fragment: bool) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    if dont_fragment {
        set_dont_fragment(&socket, addr.is_ipv6())?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(target_os = "linux")]
fn set_dont_fragment(socket: &Socket, v6: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (level, name, value) = if v6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    };
    // SAFETY: setsockopt with a valid fd and a pointer to a live c_int of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_dont_fragment(_socket: &Socket, _v6: bool) -> io::Result<()> {
    Ok(())
}

/// A non-blocking TCP listener; with `reuse_port`, one per worker on the same address.
pub fn bind_stream_listener(
    addr: SocketAddr,
    reuse_port: bool,
) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Restarting while old connections sit in TIME_WAIT must not fail.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
