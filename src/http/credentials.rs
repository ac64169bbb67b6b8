//! The credential endpoints: the TURN REST draft shape and the RTCConfiguration shape
//! (REFERENCES.md, "Credential responses users already consume").

use super::access::authorize;
use super::error::ApiError;
use super::HttpState;
use crate::reload::LiveSettings;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Longest query string accepted.
const MAX_QUERY: usize = 2048;
/// Longest user id accepted.
pub const MAX_USER_ID: usize = turnd_proto::auth::MAX_REST_USER_ID;

/// The parameters both endpoints take.
#[derive(Debug, Default)]
pub struct Params {
    pub username: Option<String>,
    pub ttl: Option<String>,
    pub service: Option<String>,
    pub key: Option<String>,
    pub format: Option<String>,
}

/// Parses the query (and, for POST, a JSON object body with the same fields). Each parameter
/// may appear once; control characters are refused; unknown parameters are ignored (browsers
/// and proxies add cache busters).
pub fn parse_params(query: Option<&str>, body: &[u8]) -> Result<Params, ApiError> {
    let query = query.unwrap_or("");
    if query.len() > MAX_QUERY {
        return Err(ApiError::bad_request("query string too long"));
    }
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let v: Value = serde_json::from_slice(body)
            .map_err(|_| ApiError::bad_request("body must be a JSON object"))?;
        let obj = v
            .as_object()
            .ok_or_else(|| ApiError::bad_request("body must be a JSON object"))?;
        for (k, v) in obj {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "`{k}` must be a string or number"
                    )))
                }
            };
            pairs.push((k.clone(), v));
        }
    }
    let mut p = Params::default();
    for (k, v) in pairs {
        let slot = match k.as_str() {
            "username" => &mut p.username,
            "ttl" => &mut p.ttl,
            "service" => &mut p.service,
            "key" => &mut p.key,
            "format" => &mut p.format,
            _ => continue,
        };
        if v.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!(
                "`{k}` contains control characters"
            )));
        }
        if slot.replace(v).is_some() {
            return Err(ApiError::bad_request(format!("`{k}` given more than once")));
        }
    }
    Ok(p)
}

/// A user id must be 1 to 128 characters from a safe set: it ends up in a TURN username.
/// Without one, the caller's anonymous identity (see [`super::identity`]).
fn user_id(p: &Params, anonymous: impl FnOnce() -> String) -> Result<String, ApiError> {
    match &p.username {
        None => Ok(anonymous()),
        Some(u) if u.is_empty() || u.len() > MAX_USER_ID => Err(ApiError::bad_request(format!(
            "username must be 1 to {MAX_USER_ID} characters"
        ))),
        Some(u)
            if !u
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@+=".contains(&b)) =>
        {
            Err(ApiError::bad_request(
                "username may contain only A-Z a-z 0-9 - _ . @ + =",
            ))
        }
        Some(u) => Ok(u.clone()),
    }
}

/// The lifetime: the default when absent, clamped to max_ttl.
fn ttl(live: &LiveSettings, p: &Params) -> Result<u64, ApiError> {
    match &p.ttl {
        None => Ok(live.default_ttl),
        Some(t) => match t.parse::<u64>() {
            Ok(0) | Err(_) => Err(ApiError::bad_request(
                "ttl must be a whole number of seconds, at least 1",
            )),
            Ok(n) => Ok(n.min(live.max_ttl)),
        },
    }
}

/// The shared front half of both endpoints: rate limit, access, parameters, mint.
fn mint(
    state: &HttpState,
    peer: SocketAddr,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<(Params, turnd_proto::auth::RestCredential), ApiError> {
    state.limiter.check(peer.ip()).map_err(|wait| ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        message: format!("too many requests; retry in {wait} s"),
        retry_after: Some(wait),
    })?;
    let params = parse_params(query, body)?;
    let api_key = authorize(state, peer, headers, params.key.as_deref())?;
    if params.service.as_deref().is_some_and(|s| s != "turn") {
        return Err(ApiError::bad_request("service must be `turn`"));
    }
    let live = state.live.get();
    let user = user_id(&params, || {
        super::identity::anonymous_user_id(
            live.mint_secret.as_bytes(),
            api_key.as_deref(),
            peer.ip(),
            state.ipv6_source_prefix,
        )
    })?;
    let ttl = ttl(&live, &params)?;
    let cred = turnd_proto::auth::mint_rest_credential(
        live.mint_secret.as_bytes(),
        &user,
        crate::clock::unix_now(),
        ttl,
    );
    state.credentials_issued.fetch_add(1, Ordering::Relaxed);
    Ok((params, cred))
}

/// `GET /api/v1/credentials`: `{"username","password","ttl","uris"}`.
pub async fn rest(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let (_, cred) = mint(&state, peer, &headers, query.as_deref(), b"")?;
    let mut uris = state.turn_urls();
    uris.extend(crate::uris::alternate_stun_url(&state.listeners));
    Ok(Json(json!({
        "username": cred.username,
        "password": cred.password,
        "ttl": cred.ttl,
        "uris": uris,
    })))
}

/// `GET`/`POST /api/v1/ice-servers`: `{"iceServers":[...],"ttl","expiresAt"}`, or with
/// `format=array` the bare `iceServers` array.
pub async fn ice_servers(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (params, cred) = mint(&state, peer, &headers, query.as_deref(), &body)?;
    let mut servers = Vec::new();
    let stun = state.stun_urls();
    if !stun.is_empty() {
        servers.push(json!({ "urls": stun }));
    }
    servers.push(json!({ "urls": state.turn_urls(), "username": cred.username, "credential": cred.password }));
    match params.format.as_deref() {
        Some("array") => Ok(Json(Value::Array(servers)).into_response()),
        None | Some("object") => Ok(Json(json!({
            "iceServers": servers,
            "ttl": cred.ttl,
            "expiresAt": crate::clock::rfc3339(cred.expires_at),
        }))
        .into_response()),
        Some(_) => Err(ApiError::bad_request("format must be `object` or `array`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_strict() {
        assert!(parse_params(Some("username=a&username=b"), b"").is_err());
        assert!(parse_params(Some("username=a%0Ab"), b"").is_err());
        assert!(parse_params(Some(&"x".repeat(3000)), b"").is_err());
        assert!(
            parse_params(Some("username=a"), b"{\"username\":\"b\"}").is_err(),
            "query and body may not both set a field"
        );
        assert!(parse_params(None, b"[1]").is_err());
        let p = parse_params(Some("username=alice&ttl=60&_=123"), b"").unwrap();
        assert_eq!(
            (p.username.as_deref(), p.ttl.as_deref()),
            (Some("alice"), Some("60"))
        );
    }
}
