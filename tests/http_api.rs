//! The credential HTTP service over real sockets: what an app's backend or a browser does.

mod common;

use common::openapi::{conforms, resolve};
use common::*;
use serde_json::Value;
use std::time::Duration;

const KEY: &str = "test-api-key-0123456789";

async fn allocate_with(
    server: std::net::SocketAddr,
    username: &str,
    password: &str,
) -> Result<(), turn::Error> {
    let c = turn_client(server, username, password).await;
    let r = tokio::time::timeout(Duration::from_secs(5), c.allocate())
        .await
        .expect("allocate answers");
    c.close().await?;
    r.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_fetched_over_http_authenticate_a_real_allocate() {
    let turnd = start(settings());
    let http = turnd.http();
    let r = tokio::task::spawn_blocking(move || {
        get(
            http,
            "/api/v1/credentials?username=alice&ttl=600&service=turn",
        )
    })
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let (user, pass) = (
        v["username"].as_str().unwrap().to_owned(),
        v["password"].as_str().unwrap().to_owned(),
    );
    assert!(user.ends_with(":alice"));
    assert_eq!(v["ttl"], 600);
    assert_eq!(
        v["uris"],
        serde_json::json!([
            format!("turn:127.0.0.1:{}?transport=udp", turnd.addr.port()),
            format!("turn:127.0.0.1:{}?transport=tcp", turnd.addr.port()),
        ])
    );
    allocate_with(turnd.addr, &user, &pass)
        .await
        .expect("the minted credential works");

    let mut tampered = pass.clone().into_bytes();
    tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
    assert!(
        allocate_with(turnd.addr, &user, std::str::from_utf8(&tampered).unwrap())
            .await
            .is_err()
    );
    let other_user = user.replace("alice", "mallory");
    assert!(allocate_with(turnd.addr, &other_user, &pass).await.is_err());

    // A one-second credential expires one second from now: its username says so
    // (draft-uberti-behave-turn-rest-00: `expiry:user`, a Unix time)...
    let before = turnd::clock::unix_now();
    let r =
        tokio::task::spawn_blocking(move || get(http, "/api/v1/credentials?username=brief&ttl=1"))
            .await
            .unwrap();
    let v = r.json();
    let after = turnd::clock::unix_now();
    let (expiry, user_id) = v["username"].as_str().unwrap().split_once(':').unwrap();
    let expiry: u64 = expiry.parse().unwrap();
    assert_eq!(user_id, "brief");
    assert!((before + 1..=after + 1).contains(&expiry), "{v}");
    // ...and once that time has passed, the relay refuses it. Minted here already expired
    // rather than waited for (no wall-clock sleep); the expiry rule itself, over injected
    // time, is proto/tests/rules.rs `rest_expiry_and_max_ttl_are_enforced`.
    let expired =
        turnd_proto::auth::mint_rest_credential(SECRET.as_bytes(), "brief", before - 2, 1);
    let refused = allocate_with(turnd.addr, &expired.username, &expired.password).await;
    assert!(refused.is_err(), "an expired credential is refused");
}

/// What `new RTCPeerConnection({iceServers})` and aiortc's `RTCIceServer(urls=s["urls"],
/// username=s.get("username"), credential=s.get("credential"))` need of each entry.
fn check_ice_servers(servers: &Value) {
    let list = servers.as_array().expect("an array of ice servers");
    assert_eq!(list.len(), 2);
    for s in list {
        let urls = s["urls"].as_array().expect("urls is always an array");
        assert!(!urls.is_empty());
        for u in urls {
            let u = u.as_str().unwrap();
            if u.starts_with("stun:") {
                assert!(!u.contains('?'), "no ?transport on stun: URLs");
                assert!(s.get("username").is_none());
            } else {
                assert!(u.starts_with("turn:") || u.starts_with("turns:"));
                assert!(s["username"].is_string() && s["credential"].is_string());
            }
        }
    }
}

#[test]
fn ice_servers_in_both_shapes_and_as_a_bare_array() {
    let mut s = settings();
    s.public_host = Some(vec!["relay.example.com".into()]);
    let turnd = start(s);
    let http = turnd.http();
    for (method, body) in [
        ("GET", ""),
        ("POST", ""),
        ("POST", "{\"username\":\"bob\",\"ttl\":120}"),
    ] {
        let target = if body.is_empty() {
            "/api/v1/ice-servers?username=bob&ttl=120"
        } else {
            "/api/v1/ice-servers"
        };
        let r = http_request(
            http,
            method,
            target,
            &[("Content-Type", "application/json")],
            body,
        );
        assert_eq!(r.status, 200, "{method} {}", r.body);
        let v = r.json();
        check_ice_servers(&v["iceServers"]);
        assert_eq!(v["ttl"], 120, "ttl is a number");
        let turn = &v["iceServers"][1];
        assert!(turn["username"].as_str().unwrap().ends_with(":bob"));
        assert_eq!(
            v["iceServers"][0]["urls"][0],
            format!("stun:relay.example.com:{}", turnd.addr.port())
        );
        let expires = v["expiresAt"].as_str().unwrap();
        let expiry: u64 = turn["username"]
            .as_str()
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(expires, turnd::clock::rfc3339(expiry));
    }
    let r = get(http, "/api/v1/ice-servers?format=array&ttl=999999999");
    assert_eq!(r.status, 200);
    let v = r.json();
    check_ice_servers(&v);
    let user = v[1]["username"].as_str().unwrap();
    let expiry: u64 = user.split(':').next().unwrap().parse().unwrap();
    assert!(
        expiry <= turnd::clock::unix_now() + 86_400,
        "ttl clamped to max_ttl"
    );
}

#[test]
fn api_keys_are_required_when_configured() {
    let mut s = settings();
    s.api_key = Some(vec![KEY.into()]);
    let turnd = start(s);
    let http = turnd.http();
    let missing = get(http, "/api/v1/credentials?username=a");
    assert_eq!(missing.status, 401);
    assert!(missing.json()["error"]
        .as_str()
        .unwrap()
        .contains("missing"));
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let wrong = http_request(
        http,
        "GET",
        "/api/v1/credentials",
        &[("Authorization", "Bearer not-the-key-at-all")],
        "",
    );
    assert_eq!(wrong.status, 401);
    assert!(wrong.json()["error"].is_string());
    let bearer = http_request(
        http,
        "GET",
        "/api/v1/credentials",
        &[("Authorization", &format!("Bearer {KEY}"))],
        "",
    );
    assert_eq!(bearer.status, 200);
    assert_eq!(
        get(http, &format!("/api/v1/ice-servers?key={KEY}")).status,
        200
    );
    assert_eq!(
        get(http, "/healthz").status,
        200,
        "health checks need no key"
    );
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    let mut s = settings();
    s.http_rate_limit = Some(20); // bursts of 5
    let turnd = start(s);
    let http = turnd.http();
    let statuses: Vec<u16> = (0..7)
        .map(|_| get(http, "/api/v1/credentials").status)
        .collect();
    assert_eq!(&statuses[..5], &[200; 5]);
    let r = get(http, "/api/v1/credentials");
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert!(r.json()["error"].as_str().unwrap().contains("too many"));
}

#[test]
fn cors_preflight_passes_for_allowed_origins_only() {
    let mut s = settings();
    s.cors_origin = Some(vec!["https://app.example.com".into()]);
    let turnd = start(s);
    let http = turnd.http();
    let preflight = |origin: &str| {
        http_request(
            http,
            "OPTIONS",
            "/api/v1/ice-servers",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "authorization"),
            ],
            "",
        )
    };
    let ok = preflight("https://app.example.com");
    assert_eq!(ok.status, 204);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(ok
        .header("access-control-allow-headers")
        .unwrap()
        .contains("authorization"));
    let bad = preflight("https://evil.example.net");
    assert_eq!(bad.status, 403);
    assert_eq!(bad.header("access-control-allow-origin"), None);
    assert!(bad.json()["error"].is_string());
    let r = http_request(
        http,
        "GET",
        "/api/v1/ice-servers",
        &[("Origin", "https://app.example.com")],
        "",
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let r = http_request(
        http,
        "GET",
        "/api/v1/ice-servers",
        &[("Origin", "https://evil.example.net")],
        "",
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn hostile_query_strings_get_400_never_500() {
    let mut s = settings();
    s.http_rate_limit = Some(0);
    let turnd = start(s);
    let http = turnd.http();
    let huge = format!("/api/v1/credentials?username={}", "a".repeat(5000));
    let long_user = format!("/api/v1/credentials?username={}", "b".repeat(129));
    let targets = [
        huge.as_str(),
        long_user.as_str(),
        "/api/v1/credentials?username=%E2%98%83",
        "/api/v1/credentials?username=al%00ice",
        "/api/v1/credentials?username=al%0Dice",
        "/api/v1/credentials?username=a&username=b",
        "/api/v1/credentials?username=a%20b",
        "/api/v1/credentials?username=a:b",
        "/api/v1/credentials?username=",
        "/api/v1/credentials?ttl=-1",
        "/api/v1/credentials?ttl=0",
        "/api/v1/credentials?ttl=99999999999999999999999",
        "/api/v1/credentials?ttl=1e3",
        "/api/v1/credentials?ttl=60&ttl=70",
        "/api/v1/credentials?service=stun",
        "/api/v1/credentials?username=%ZZ%",
        "/api/v1/ice-servers?format=xml",
        "/api/v1/ice-servers?username=%F0%9F%92%A9",
    ];
    for t in targets {
        let r = get(http, t);
        assert_eq!(r.status, 400, "{t}: {}", r.body);
        assert!(r.json()["error"].is_string(), "{t}");
    }
    let r = http_request(http, "POST", "/api/v1/ice-servers", &[], "{not json");
    assert_eq!(r.status, 400);
    let r = http_request(
        http,
        "POST",
        "/api/v1/ice-servers",
        &[],
        "{\"username\":[1]}",
    );
    assert_eq!(r.status, 400);
    let r = http_request(http, "DELETE", "/api/v1/credentials", &[], "");
    assert_eq!(r.status, 405);
    assert!(r.json()["error"].is_string());
    let r = get(http, "/nope");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
    assert_eq!(get(http, "/healthz").status, 200, "still serving");
}

#[test]
fn health_and_readiness() {
    let turnd = start(settings());
    let r = get(turnd.http(), "/healthz");
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("ok")));
    let r = get(turnd.http(), "/readyz");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["ready"], true);
    assert_eq!(v["workers"]["running"], 2);
    assert_eq!(v["listeners"]["udp"][0], turnd.addr.port());
}

// ------------------------------------------------------------------ OpenAPI

/// docs/openapi.json describes what the server really answers: every documented operation is
/// called, and its status and body must be among those documented.
#[test]
fn openapi_description_matches_the_server() {
    let spec: Value = serde_json::from_str(include_str!("../docs/openapi.json")).unwrap();
    let mut s = settings();
    s.api_key = Some(vec![KEY.into()]);
    s.http_rate_limit = Some(0);
    let turnd = start(s);
    let http = turnd.http();
    let auth = format!("Bearer {KEY}");
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let m = method.to_uppercase();
            let cases: Vec<(String, Vec<(&str, &str)>)> = vec![
                (
                    format!("{path}?username=openapi&ttl=60"),
                    vec![("Authorization", auth.as_str())],
                ),
                (
                    format!("{path}?format=array"),
                    vec![("Authorization", auth.as_str())],
                ),
                (
                    format!("{path}?ttl=zero"),
                    vec![("Authorization", auth.as_str())],
                ),
                (path.clone(), vec![]),
            ];
            for (target, headers) in cases {
                let r = http_request(http, &m, &target, &headers, "");
                let documented = &op["responses"][r.status.to_string()];
                assert!(
                    !documented.is_null(),
                    "{m} {target} answered {} which the spec does not list",
                    r.status
                );
                let schema = &resolve(&spec, documented)["content"]["application/json"]["schema"];
                conforms(&spec, schema, &r.json()).unwrap_or_else(|e| panic!("{m} {target}: {e}"));
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 4 * 5, "every documented operation was exercised");
    // And nothing undocumented answers: another method on a documented path is 405, which the
    // credential endpoints list.
    assert_eq!(
        http_request(http, "PUT", "/api/v1/credentials", &[], "").status,
        405
    );
}

/// HEAD would run the GET handler: it must not mint (or count) a credential nobody sees.
#[test]
fn head_on_the_credential_endpoints_mints_nothing() {
    let turnd = start(settings());
    let http = turnd.http();
    let issued = || {
        turnd
            .running
            .http_state
            .as_ref()
            .unwrap()
            .credentials_issued
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    for path in ["/api/v1/credentials", "/api/v1/ice-servers"] {
        let r = http_request(http, "HEAD", path, &[], "");
        assert_eq!(r.status, 405, "HEAD {path}");
    }
    assert_eq!(issued(), 0);
    assert_eq!(get(http, "/api/v1/credentials").status, 200);
    assert_eq!(issued(), 1, "GET still mints");
}

/// Credentials minted without `username` carry one identity per API key and client (SECURITY.md,
/// "The client chooses its own quota identity"), so the per-user quota applies to them.
#[test]
fn anonymous_credentials_share_one_identity_per_key_and_client() {
    const OTHER_KEY: &str = "another-api-key-0123456789";
    let mut s = settings();
    s.api_key = Some(vec![KEY.into(), OTHER_KEY.into()]);
    s.user_quota = Some(2);
    let turnd = start(s);
    let http = turnd.http();
    // (user id, username, password) as the API hands them out.
    let user_of = |from: &str, key: &str, query: &str| -> (String, String, String) {
        let auth = format!("Bearer {key}");
        let r = http_request_from(
            from.parse().unwrap(),
            http,
            "GET",
            &format!("/api/v1/credentials{query}"),
            &[("Authorization", auth.as_str())],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        let username = v["username"].as_str().unwrap().to_owned();
        let id = username.split_once(':').unwrap().1.to_owned();
        (id, username, v["password"].as_str().unwrap().to_owned())
    };
    let (a1, name1, pass1) = user_of("127.0.0.1", KEY, "");
    let (a2, name2, pass2) = user_of("127.0.0.1", KEY, "?ttl=600");
    assert!(a1.starts_with("anon-"), "{a1}");
    assert_eq!(a1, a2, "one client, one key: one identity");
    assert_ne!(
        user_of("127.0.0.2", KEY, "").0,
        a1,
        "another address is another client"
    );
    assert_ne!(
        user_of("127.0.0.1", OTHER_KEY, "").0,
        a1,
        "another key is another app"
    );
    assert_eq!(user_of("127.0.0.1", KEY, "?username=alice").0, "alice");

    // And so the quota holds: two allocations, then 486, whatever fresh credentials it fetches.
    let (_, name3, pass3) = user_of("127.0.0.1", KEY, "");
    let mut held = Vec::new();
    for (name, pass) in [(&name1, &pass1), (&name2, &pass2)] {
        let mut c = UdpTurnClient::new(turnd.addr, name, pass);
        c.allocate();
        held.push(c);
    }
    let mut third = UdpTurnClient::new(turnd.addr, &name3, &pass3);
    let resp = third.request(
        turnd_proto::wire::Method::ALLOCATE,
        &[turnd_proto::client::Attr::RequestedTransport(17)],
    );
    assert_eq!(UdpTurnClient::code(&resp), Some(486));
}
