//! The quota identity of a credential minted without a `username`.
//!
//! The per-user allocation quota (`user_quota`) counts by the user id inside a REST username.
//! If an anonymous request got a fresh random id each time, a client could mint as many ids
//! as it liked and the quota would never apply (one address took 200 allocations in 8 s and
//! emptied the relay range). So an anonymous id is derived from what the client cannot
//! change: the API key it used and its address, counted as every per-address limit counts it
//! (IPv4 address, IPv6 /64 by default, see `ipv6_source_prefix`). Every anonymous credential
//! one client gets carries the same id, and so shares one quota.
//!
//! The id is an HMAC under the minting secret, so it reveals neither the key nor the address,
//! and cannot be predicted by someone without the secret. Requiring a `username` instead was
//! the alternative; it would break the zero-configuration browser page and every client that
//! calls the API directly, and a backend that knows its users can still pass `username` to get
//! exact per-user quotas (behind a reverse proxy it should: every client then shares the
//! proxy's address).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::IpAddr;

/// `anon-` and 16 hex digits, the same for every anonymous request with this key from this
/// client.
pub fn anonymous_user_id(
    secret: &[u8],
    api_key: Option<&str>,
    client: IpAddr,
    ipv6_prefix: u8,
) -> String {
    let client = turnd_proto::source_key::source_key(client, ipv6_prefix);
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    mac.update(b"turnd anonymous user id v1\0");
    mac.update(api_key.unwrap_or("").as_bytes());
    mac.update(b"\0");
    mac.update(client.to_string().as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut id = String::from("anon-");
    for b in &digest[..8] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: Option<&str>, ip: &str) -> String {
        anonymous_user_id(b"secret", key, ip.parse().unwrap(), 64)
    }

    #[test]
    fn one_client_one_key_one_id() {
        assert_eq!(id(Some("k"), "192.0.2.1"), id(Some("k"), "192.0.2.1"));
        assert_eq!(
            id(Some("k"), "2001:db8::1"),
            id(Some("k"), "2001:db8::ffff:2"),
            "one /64 is one client"
        );
        assert_ne!(id(Some("k"), "192.0.2.1"), id(Some("k"), "192.0.2.2"));
        assert_ne!(id(Some("k"), "192.0.2.1"), id(Some("j"), "192.0.2.1"));
        assert_ne!(id(None, "192.0.2.1"), id(Some(""), "192.0.2.2"));
        assert_ne!(
            id(None, "192.0.2.1"),
            anonymous_user_id(b"other", None, "192.0.2.1".parse().unwrap(), 64)
        );
        let s = id(None, "127.0.0.1");
        assert!(s.starts_with("anon-") && s.len() == 21, "{s}");
    }
}
