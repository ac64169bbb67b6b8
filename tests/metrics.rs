//! Metrics as an operator scrapes them: live counters with bounded labels.

mod common;

use common::*;
use std::collections::BTreeMap;
use turnd::metrics::names;
use turnd_proto::client::{self, Attr};
use turnd_proto::wire::Method;

fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no series {series}"))
}

/// Waits until a scrape satisfies `f` (workers publish every ~100-250 ms).
fn scrape_until(
    turnd: &Turnd,
    what: &str,
    f: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let mut last = BTreeMap::new();
    eventually(what, || {
        last = scrape(turnd);
        f(&last)
    });
    last
}

#[test]
fn counters_move_while_the_allocation_is_open_and_errors_count_by_code() {
    let mut s = settings();
    s.allow_peer = Some(vec!["127.0.0.1/32".into()]);
    let turnd = start(s);
    let before = scrape(&turnd);
    assert_eq!(value(&before, names::ALLOCATIONS_TOTAL), 0.0);

    let (user, pass) = rest("metrics", 600);
    let mut c = UdpTurnClient::new(turnd.addr, &user, &pass);
    let _relayed = c.allocate();
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let r = c.request(
        Method::CHANNEL_BIND,
        &[Attr::Channel(0x4001), Attr::Peer(peer_addr)],
    );
    assert_eq!(UdpTurnClient::code(&r), None);
    for _ in 0..10 {
        c.sock
            .send_to(
                &client::channel_data(0x4001, &[7u8; 100], false),
                turnd.addr,
            )
            .unwrap();
    }
    let mut buf = [0u8; 200];
    for _ in 0..10 {
        peer.recv_from(&mut buf).unwrap();
    }

    let series = format!("{}{{direction=\"to_peer\"}}", names::RELAYED_PACKETS_TOTAL);
    let bytes = format!("{}{{direction=\"to_peer\"}}", names::RELAYED_BYTES_TOTAL);
    let active = format!(
        "{}{{transport=\"udp\",family=\"ipv4\"}}",
        names::ALLOCATIONS_ACTIVE
    );
    let m = scrape_until(&turnd, "relayed packets", |m| value(m, &series) >= 10.0);
    assert_eq!(
        value(&m, names::ALLOCATIONS_TOTAL),
        1.0,
        "the allocation is still open and counted"
    );
    assert_eq!(value(&m, &active), 1.0);
    assert_eq!(value(&m, &bytes), 1000.0);
    assert_eq!(value(&m, names::CHANNELS_ACTIVE), 1.0);

    // A 401 (the challenge every client gets) and a 403 (a peer the policy refuses).
    let e401 = format!("{}{{code=\"401\"}}", names::ERROR_RESPONSES_TOTAL);
    let e403 = format!("{}{{code=\"403\"}}", names::ERROR_RESPONSES_TOTAL);
    let r = c.request(
        Method::CREATE_PERMISSION,
        &[Attr::Peer("10.0.0.1:9".parse().unwrap())],
    );
    assert_eq!(UdpTurnClient::code(&r), Some(403));
    let m = scrape_until(&turnd, "a 403", |m| value(m, &e403) >= 1.0);
    assert!(value(&m, &e401) >= 1.0);
    assert!(value(&m, names::PEER_DENIED_TOTAL) >= 1.0);

    // More traffic, same allocation: the counter keeps moving (not only when a session ends).
    for _ in 0..5 {
        c.sock
            .send_to(&client::channel_data(0x4001, b"more", false), turnd.addr)
            .unwrap();
    }
    scrape_until(&turnd, "live counters", |m| value(m, &series) >= 15.0);
}

/// Labels are bounded enums: ten thousand usernames later, the same series exist.
#[test]
fn ten_thousand_usernames_leave_the_series_unchanged() {
    let turnd = start(settings());
    let before: Vec<String> = scrape(&turnd).into_keys().collect();
    let (user, pass) = rest("seed", 600);
    let mut c = UdpTurnClient::new(turnd.addr, &user, &pass);
    c.allocate();
    // 10,000 distinct REST usernames with wrong passwords: each draws a 401 and a counted
    // auth failure; a few with right passwords allocate.
    let nonce = c.auth.nonce.clone();
    for i in 0..10_000u32 {
        let (user, pass) = rest(&format!("user-{i}"), 600);
        let mut a = client::ClientAuth::new(&user, if i % 2000 == 0 { &pass } else { "wrong" });
        a.realm = Some("turnd".into());
        a.nonce = nonce.clone();
        let mut tid = [0u8; 12];
        tid[..4].copy_from_slice(&i.to_be_bytes());
        let req = client::request(
            Method::ALLOCATE,
            turnd_proto::wire::TransactionId(tid),
            &[Attr::RequestedTransport(17)],
            Some(&a),
            false,
        );
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(&req, turnd.addr).unwrap();
        if i % 500 == 0 {
            // Pace the loop so the kernel's receive queue never overflows.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let bad = format!("{}{{reason=\"bad_integrity\"}}", names::AUTH_FAILURES_TOTAL);
    let m = scrape_until(&turnd, "the failures counted", |m| value(m, &bad) >= 9000.0);
    let after: Vec<String> = m.into_keys().collect();
    assert_eq!(before, after, "no series was added");
    assert!(
        after.iter().all(|s| !s.contains("user-")),
        "no username in any label"
    );
}

#[test]
fn metrics_are_not_served_on_the_api_port_and_pass_their_own_format_rules() {
    let turnd = start(settings());
    assert_eq!(get(turnd.http(), "/metrics").status, 404);
    let addr = turnd.running.metrics.as_ref().unwrap().addr;
    let classic = get(addr, "/metrics");
    assert!(classic
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let om = http_request(
        addr,
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
        "",
    );
    assert!(om
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(om.body.ends_with("# EOF\n"));
    // Every documented family is exposed, under its documented type.
    for (name, kind, _) in names::ALL {
        let classic_type = if *kind == "info" { "gauge" } else { kind };
        assert!(
            classic
                .body
                .contains(&format!("# TYPE {name} {classic_type}\n")),
            "{name} missing"
        );
    }
}

/// Every metric the Grafana dashboard and the alert rules query is one turnd exports.
#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../deploy/grafana/turnd.json")).unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned())
        })
        .collect();
    exprs.extend(
        include_str!("../deploy/prometheus/turnd-alerts.yml")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("expr:"))
            .map(str::to_owned),
    );
    assert!(exprs.len() >= 8);
    let known: Vec<&str> = names::ALL.iter().map(|(n, _, _)| *n).collect();
    for e in &exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("turnd_") {
                assert!(
                    known.contains(&word),
                    "`{word}` in `{e}` is not a turnd metric"
                );
            }
        }
    }
}

/// The README's metric table lists every metric.
#[test]
fn readme_lists_every_metric() {
    let readme = include_str!("../README.md");
    for (name, kind, _) in names::ALL {
        assert!(
            readme.contains(&format!("| `{name}` | {kind} |")),
            "README does not list {name}"
        );
    }
}

/// Dashboards once showed permissions forever: the gauges stayed at their last value after
/// every allocation had ended, over UDP and over TCP (whose allocations end with the
/// connection). Now they read 0 within two seconds of the last allocation's end.
#[test]
fn permission_and_channel_gauges_read_zero_soon_after_the_last_allocation_ends() {
    let mut s = settings();
    s.allow_peer = Some(vec!["127.0.0.1/32".into()]);
    let turnd = start(s);
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (user, pass) = rest("gauges", 600);
    let mut udp = UdpTurnClient::new(turnd.addr, &user, &pass);
    udp.allocate();
    let mut tcp = StreamTurnClient::new(tcp(turnd.addr), &user, &pass);
    tcp.allocate();
    let bind = [Attr::Channel(0x4001), Attr::Peer(peer_addr)];
    assert_eq!(
        UdpTurnClient::code(&udp.request(Method::CHANNEL_BIND, &bind)),
        None
    );
    assert_eq!(
        UdpTurnClient::code(&tcp.request(Method::CHANNEL_BIND, &bind)),
        None
    );
    let gauges = |m: &BTreeMap<String, f64>| {
        (
            value(m, names::PERMISSIONS_ACTIVE),
            value(m, names::CHANNELS_ACTIVE),
        )
    };
    scrape_until(&turnd, "two permissions and channels", |m| {
        gauges(m) == (2.0, 2.0)
    });

    let r = udp.request(Method::REFRESH, &[Attr::Lifetime(0)]);
    assert_eq!(UdpTurnClient::code(&r), None);
    drop(tcp);
    let ended = std::time::Instant::now();
    scrape_until(&turnd, "gauges back to 0", |m| gauges(m) == (0.0, 0.0));
    assert!(
        ended.elapsed() < std::time::Duration::from_secs(2),
        "the gauges took {:?} to reach 0",
        ended.elapsed()
    );
}

/// Allocations a reload ends are counted by reason: a revoked user's as `revoked`, one a
/// removed static user made as `credential_removed` (the reload as `serve::Running::reload`
/// applies it on SIGHUP).
#[test]
fn allocations_ended_by_a_reload_are_counted_by_reason() {
    let mut s = settings();
    s.user = Some(vec!["carol:carol-password".into()]);
    let turnd = start(s.clone());
    let (user, pass) = rest("mallory", 600);
    UdpTurnClient::new(turnd.addr, &user, &pass).allocate();
    UdpTurnClient::new(turnd.addr, "carol", "carol-password").allocate();
    let (user, pass) = rest("alice", 600);
    UdpTurnClient::new(turnd.addr, &user, &pass).allocate();

    s.user = None;
    s.revoke = Some(vec!["mallory".into()]);
    let next = turnd::config::Config::from_settings(&s).unwrap();
    turnd.running.reload(&next).unwrap();
    let ended = |reason: &str| format!("{}{{reason=\"{reason}\"}}", names::ALLOCATIONS_ENDED_TOTAL);
    let m = scrape_until(&turnd, "both counted", |m| {
        m.get(&ended("revoked")) == Some(&1.0) && m.get(&ended("credential_removed")) == Some(&1.0)
    });
    assert_eq!(value(&m, &ended("expired")), 0.0);
    assert_eq!(turnd.running.ledger.total(), 1, "alice's allocation stays");
}
