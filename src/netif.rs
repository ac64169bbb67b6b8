//! The host's interface addresses, for choosing a relay address when none is configured.

use std::net::IpAddr;

/// The first address of the family that a peer elsewhere could plausibly reach: not loopback,
/// link-local, multicast or unspecified. Falls back to loopback when that is all there is
/// (a network namespace with only `lo`), so turnd still starts for local tests.
pub fn first_usable_address(v6: bool) -> Option<IpAddr> {
    let all = interface_addresses();
    let family = all.iter().filter(|ip| ip.is_ipv6() == v6);
    let usable = family.clone().find(|ip| match ip {
        IpAddr::V4(a) => {
            !a.is_loopback() && !a.is_link_local() && !a.is_unspecified() && !a.is_multicast()
        }
        IpAddr::V6(a) => {
            !a.is_loopback()
                && !a.is_unspecified()
                && !a.is_multicast()
                && (a.segments()[0] & 0xffc0) != 0xfe80
        }
    });
    usable
        .or_else(|| family.clone().find(|ip| ip.is_loopback()))
        .copied()
}

/// Every address on every interface that is up.
pub fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs fills a linked list that we walk read-only and free once.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
            if up && !ifa.ifa_addr.is_null() {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        out.push(IpAddr::from(u32::from_be(sa.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sa.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}
