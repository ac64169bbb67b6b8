//! Which of the host's addresses a datagram was sent to, and sending the reply from it
//! (IP_PKTINFO / IPV6_PKTINFO control messages, Linux).
//!
//! A UDP socket bound to a wildcard (0.0.0.0, [::]) receives datagrams sent to any address of
//! the host, but a plain sendto lets the kernel pick the reply's source by route. On a host with
//! several addresses (IPv6 SLAAC and privacy addresses, a cloud VM's secondary IPs) that is
//! often not the address the client sent to, and a NAT or firewall in front of the client drops
//! the reply: the server's address is part of the 5-tuple (RFC 8656 §2). With
//! IP_PKTINFO / IPV6_RECVPKTINFO on, the kernel reports each datagram's destination in a
//! control message (ip(7), ipv6(7), RFC 3542 §6); the same message on send names the source.
//! Sockets bound to one address need none of this: they always answer from it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

/// Room for one control message of either family, aligned as the kernel's `cmsghdr` wants.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct Control([u8; CONTROL_LEN]);

const CONTROL_LEN: usize = 64;

// SAFETY (of the CMSG_SPACE calls): they are pure arithmetic on their argument.
const _: () = assert!(
    CONTROL_LEN
        >= unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::in6_pktinfo>() as u32) } as usize
        && CONTROL_LEN
            >= unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::in_pktinfo>() as u32) } as usize
);

impl Control {
    pub const ZERO: Control = Control([0; CONTROL_LEN]);
}

/// Asks the kernel to report each received datagram's destination address on `fd`.
pub fn enable(fd: RawFd, v6: bool) -> io::Result<()> {
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a live c_int of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Points `hdr` at `control` for a receive, with its whole room.
#[inline]
pub fn prepare_recv(hdr: &mut libc::msghdr, control: &mut Control) {
    hdr.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
    hdr.msg_controllen = CONTROL_LEN as _;
}

/// The destination address the kernel reported for a received datagram, if it did. This is
/// the address in the IP header (`ipi_addr`), the one the client's NAT saw it sent to.
#[inline]
pub fn destination(hdr: &libc::msghdr) -> Option<IpAddr> {
    if hdr.msg_controllen == 0 {
        return None;
    }
    // SAFETY: after recvmmsg, msg_control/msg_controllen describe the control messages the
    // kernel wrote into our buffer; CMSG_FIRSTHDR/NXTHDR stay within msg_controllen, and each
    // payload is read unaligned only when its length covers the struct read.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            let c = &*cmsg;
            let data = libc::CMSG_DATA(cmsg);
            let len = c.cmsg_len as usize;
            match (c.cmsg_level, c.cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO)
                    if len
                        >= libc::CMSG_LEN(std::mem::size_of::<libc::in_pktinfo>() as u32)
                            as usize =>
                {
                    let info = std::ptr::read_unaligned(data as *const libc::in_pktinfo);
                    // ipi_spec_dst, not ipi_addr: the local address a reply leaves from. For a
                    // unicast datagram it is the header's destination; for one sent to a
                    // broadcast address it is the interface's own (a broadcast address cannot
                    // be a source).
                    return Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        info.ipi_spec_dst.s_addr,
                    ))));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                    if len
                        >= libc::CMSG_LEN(std::mem::size_of::<libc::in6_pktinfo>() as u32)
                            as usize =>
                {
                    let info = std::ptr::read_unaligned(data as *const libc::in6_pktinfo);
                    return Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

/// Sets `hdr` up for a send: from `source` when given (a control message in `control`), or
/// with no control message, letting the kernel choose (a socket bound to one address).
#[inline]
pub fn prepare_send(hdr: &mut libc::msghdr, control: &mut Control, source: Option<IpAddr>) {
    let Some(source) = source.filter(|ip| !ip.is_unspecified()) else {
        hdr.msg_control = std::ptr::null_mut();
        hdr.msg_controllen = 0;
        return;
    };
    let (level, kind, len) = match source {
        IpAddr::V4(_) => (
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            std::mem::size_of::<libc::in_pktinfo>(),
        ),
        IpAddr::V6(_) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            std::mem::size_of::<libc::in6_pktinfo>(),
        ),
    };
    hdr.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
    // SAFETY: pure arithmetic; the assertion above keeps the result within CONTROL_LEN.
    hdr.msg_controllen = unsafe { libc::CMSG_SPACE(len as u32) } as _;
    // SAFETY: msg_control points at `control`, which has room for this message (checked at
    // compile time above) and is aligned for cmsghdr; the payload is written unaligned.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(hdr);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(len as u32) as _;
        let data = libc::CMSG_DATA(cmsg);
        match source {
            // ipi_spec_dst is the source to use (ip(7)); interface 0 lets the route choose.
            IpAddr::V4(ip) => std::ptr::write_unaligned(
                data as *mut libc::in_pktinfo,
                libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                },
            ),
            IpAddr::V6(ip) => std::ptr::write_unaligned(
                data as *mut libc::in6_pktinfo,
                libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: 0,
                },
            ),
        }
    }
}
