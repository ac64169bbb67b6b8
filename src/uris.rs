//! The STUN and TURN URLs handed to clients (RFC 7064, RFC 7065), obeying the rules browsers
//! enforce: no `?transport=` on `stun:` URLs (Chrome 110+ rejects it), and no TURN port below
//! 1024 except 53, 80 and 443 (Chrome refuses others).

use std::net::IpAddr;

/// Ports below 1024 that browsers allow for TURN.
const PRIVILEGED_PORTS_BROWSERS_ALLOW: [u16; 3] = [53, 80, 443];

/// Whether browsers accept this port in a TURN URL.
pub fn browser_allows_port(port: u16) -> bool {
    port >= 1024 || PRIVILEGED_PORTS_BROWSERS_ALLOW.contains(&port)
}

/// Whether `h` is a DNS name or an IP address.
pub fn is_valid_host(h: &str) -> bool {
    if h.parse::<IpAddr>().is_ok() {
        return true;
    }
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `host` as it goes in a URL: IPv6 literals in brackets.
fn url_host(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host.to_owned(),
    }
}

/// Which listeners are up, by transport and port.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    pub udp: Vec<u16>,
    pub tcp: Vec<u16>,
    pub tls: Vec<u16>,
    /// RFC 5780's alternate STUN address, handed out when `stun_alternate_url` is on: the
    /// browser page gathers a server-reflexive candidate against each address to tell
    /// endpoint-dependent mapping from independent.
    pub stun_alternate: Option<std::net::SocketAddr>,
}

/// The `stun:` URLs: one per host and UDP port.
pub fn stun_urls(hosts: &[String], l: &Listeners) -> Vec<String> {
    let mut out = Vec::new();
    for h in hosts {
        for p in dedup(&l.udp) {
            out.push(format!("stun:{}:{p}", url_host(h)));
        }
    }
    out.extend(alternate_stun_url(l));
    out
}

/// `stun:` on the alternate address, when it is handed out.
pub fn alternate_stun_url(l: &Listeners) -> Option<String> {
    let a = l.stun_alternate?;
    Some(format!(
        "stun:{}:{}",
        url_host(&a.ip().to_string()),
        a.port()
    ))
}

/// The `turn:` and `turns:` URLs: per host, UDP then TCP then TLS, skipping ports browsers
/// refuse.
pub fn turn_urls(hosts: &[String], l: &Listeners) -> Vec<String> {
    let mut out = Vec::new();
    for h in hosts {
        let h = url_host(h);
        for p in dedup(&l.udp)
            .into_iter()
            .filter(|p| browser_allows_port(*p))
        {
            out.push(format!("turn:{h}:{p}?transport=udp"));
        }
        for p in dedup(&l.tcp)
            .into_iter()
            .filter(|p| browser_allows_port(*p))
        {
            out.push(format!("turn:{h}:{p}?transport=tcp"));
        }
        for p in dedup(&l.tls)
            .into_iter()
            .filter(|p| browser_allows_port(*p))
        {
            out.push(format!("turns:{h}:{p}?transport=tcp"));
        }
    }
    out
}

fn dedup(ports: &[u16]) -> Vec<u16> {
    let mut v = ports.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_browser_rules() {
        let l = Listeners {
            udp: vec![3478, 3478, 478],
            tcp: vec![3478],
            tls: vec![443],
            stun_alternate: None,
        };
        let hosts = vec!["relay.example.com".to_string(), "2001:db8::1".to_string()];
        let stun = stun_urls(&hosts[..1], &l);
        assert!(stun.iter().all(|u| !u.contains("transport")));
        let turn = turn_urls(&hosts, &l);
        assert_eq!(turn[0], "turn:relay.example.com:3478?transport=udp");
        assert!(turn.contains(&"turns:relay.example.com:443?transport=tcp".to_string()));
        assert!(turn.contains(&"turn:[2001:db8::1]:3478?transport=tcp".to_string()));
        assert!(
            !turn.iter().any(|u| u.contains(":478")),
            "port 478 is refused by browsers"
        );
    }

    #[test]
    fn the_alternate_stun_url_is_listed_once_when_handed_out() {
        let mut l = Listeners {
            udp: vec![3478],
            ..Default::default()
        };
        let hosts = vec!["a.example".to_string(), "b.example".to_string()];
        assert_eq!(stun_urls(&hosts, &l).len(), 2);
        l.stun_alternate = Some("[2001:db8::2]:3479".parse().unwrap());
        let stun = stun_urls(&hosts, &l);
        assert_eq!(stun.len(), 3);
        assert_eq!(stun[2], "stun:[2001:db8::2]:3479");
    }

    #[test]
    fn hosts_are_validated() {
        assert!(is_valid_host("relay.example.com"));
        assert!(is_valid_host("::1"));
        assert!(!is_valid_host("bad host"));
        assert!(!is_valid_host("-x.example"));
        assert!(!is_valid_host(""));
    }
}
