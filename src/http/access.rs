//! Who may mint credentials: API keys, the loopback-only default, a per-client rate limit, and
//! the CORS allow-list for browsers that call the endpoints directly.

use super::error::ApiError;
use super::HttpState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use subtle::ConstantTimeEq;

/// Checks the caller's API key (`Authorization: Bearer KEY` or `key=KEY`), or, when no key is
/// configured, that the caller is on this host. Returns the key the caller used (None without
/// keys).
pub fn authorize(
    state: &HttpState,
    peer: SocketAddr,
    headers: &HeaderMap,
    query_key: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let live = state.live.get();
    if live.api_keys.is_empty() {
        return if is_loopback(peer.ip()) {
            Ok(None)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this endpoint answers loopback clients only until an API key is configured (--api-key)",
            ))
        };
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(given) = bearer.or(query_key) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing API key (Authorization: Bearer KEY, or key=KEY)",
        ));
    };
    // Compare against every key in constant time, without stopping at the first match.
    let ok = live.api_keys.iter().fold(0u8, |acc, k| {
        acc | k.as_bytes().ct_eq(given.as_bytes()).unwrap_u8()
    });
    if ok == 1 {
        Ok(Some(given.to_owned()))
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid API key"))
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// A token bucket per client (an IPv4 address, or an IPv6 prefix of `ipv6_prefix` bits: every
/// IPv6 host owns a whole /64): `per_minute` requests, bursts up to a quarter of that (at least
/// 5). The table is bounded; when full, buckets that have refilled are forgotten.
pub struct RateLimiter {
    per_minute: u32,
    ipv6_prefix: u8,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

const MAX_TRACKED_CLIENTS: usize = 10_000;

impl RateLimiter {
    pub fn new(per_minute: u32, ipv6_prefix: u8) -> Self {
        RateLimiter {
            per_minute,
            ipv6_prefix,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn burst(&self) -> f64 {
        f64::from((self.per_minute / 4).max(5))
    }

    /// Takes one token for `ip`, or says how many seconds until one is available.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let ip = turnd_proto::source_key::source_key(ip, self.ipv6_prefix);
        let rate = f64::from(self.per_minute) / 60.0;
        let burst = self.burst();
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED_CLIENTS && !buckets.contains_key(&ip) {
            buckets.retain(|_, (tokens, last)| {
                *tokens + now.duration_since(*last).as_secs_f64() * rate < burst
            });
            if buckets.len() >= MAX_TRACKED_CLIENTS {
                buckets.clear();
            }
        }
        let (tokens, last) = buckets.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// CORS for the credential endpoints: a preflight from an allowed origin gets the allow
/// headers; from any other origin, 403. Responses to allowed origins carry
/// `Access-Control-Allow-Origin`.
pub async fn cors(State(state): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed = origin
        .as_ref()
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| state.live.get().cors_origins.iter().any(|a| a == o));
    if req.method() == Method::OPTIONS {
        if !allowed {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "origin not allowed (see --cors-origin)",
            )
            .into_response();
        }
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        add_allow_origin(h, origin);
        return resp;
    }
    let mut resp = next.run(req).await;
    if allowed {
        add_allow_origin(resp.headers_mut(), origin);
    }
    resp
}

fn add_allow_origin(h: &mut HeaderMap, origin: Option<HeaderValue>) {
    if let Some(o) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(keys: &[&str]) -> HttpState {
        HttpState {
            live: crate::reload::Live::new(crate::reload::LiveSettings {
                mint_secret: "s".into(),
                admin_key: None,
                selftest_interval: None,
                max_ttl: 60,
                default_ttl: 60,
                api_keys: keys.iter().map(|k| k.to_string()).collect(),
                cors_origins: vec![],
            }),
            hosts: vec![],
            listeners: Default::default(),
            limiter: RateLimiter::new(0, 64),
            workers_running: Default::default(),
            workers_expected: 1,
            credentials_issued: Default::default(),
            probe: Default::default(),
            ledger: Arc::new(turnd_proto::server::ledger::Ledger::new(0, 0)),
            ipv6_source_prefix: 64,
            acme: None,
        }
    }

    #[test]
    fn without_keys_only_loopback_clients_are_answered() {
        let st = state(&[]);
        let h = HeaderMap::new();
        assert!(authorize(&st, "127.0.0.1:5".parse().unwrap(), &h, None).is_ok());
        assert!(authorize(&st, "[::1]:5".parse().unwrap(), &h, None).is_ok());
        assert!(authorize(&st, "[::ffff:127.0.0.1]:5".parse().unwrap(), &h, None).is_ok());
        let e = authorize(&st, "192.0.2.1:5".parse().unwrap(), &h, None).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let st = state(&["k1-long-enough", "k2-long-enough"]);
        assert!(authorize(
            &st,
            "192.0.2.1:5".parse().unwrap(),
            &h,
            Some("k2-long-enough")
        )
        .is_ok());
        assert_eq!(
            authorize(&st, "127.0.0.1:5".parse().unwrap(), &h, None)
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED,
            "with keys, loopback needs one too"
        );
    }

    #[test]
    fn rate_limit_allows_a_burst_then_asks_to_wait() {
        let l = RateLimiter::new(60, 64);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let allowed = (0..20).filter(|_| l.check(ip).is_ok()).count();
        assert_eq!(allowed, 15);
        assert!(matches!(l.check(ip), Err(s) if s >= 1));
        assert!(
            l.check("192.0.2.2".parse().unwrap()).is_ok(),
            "limits are per client"
        );
        assert!(RateLimiter::new(0, 64).check(ip).is_ok());
    }

    #[test]
    fn rate_limit_counts_an_ipv6_prefix_as_one_client() {
        let l = RateLimiter::new(60, 64);
        let allowed = (0..40u16)
            .filter(|i| {
                l.check(format!("2001:db8:64::{i:x}").parse().unwrap())
                    .is_ok()
            })
            .count();
        assert_eq!(allowed, 15, "40 addresses of one /64 share one bucket");
        assert!(l.check("2001:db8:65::1".parse().unwrap()).is_ok());
        let per_address = RateLimiter::new(60, 128);
        assert!((0..40u16).all(|i| per_address
            .check(format!("2001:db8:64::{i:x}").parse().unwrap())
            .is_ok()));
    }
}
