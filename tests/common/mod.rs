//! Shared set-up for integration tests: a turnd on loopback, port 0, and REST credentials.

#![allow(dead_code)]

use std::net::SocketAddr;
use turnd::config::{Config, Settings};
use turnd::serve::Running;

pub const SECRET: &str = "integration-test-secret";

/// Settings for a loopback turnd; tests add what they need.
pub fn settings() -> Settings {
    Settings {
        listen: Some(vec!["127.0.0.1:0".into()]),
        relay_ip: Some(vec!["127.0.0.1".into()]),
        secret: Some(vec![SECRET.into()]),
        workers: Some(2),
        ..Default::default()
    }
}

pub struct Turnd {
    pub running: Running,
    pub config: Config,
    pub addr: SocketAddr,
}

pub fn start(s: Settings) -> Turnd {
    let config = Config::from_settings(&s).expect("valid test config");
    let running = turnd::serve::start(&config).expect("turnd starts");
    let addr = running.udp[0];
    Turnd {
        running,
        config,
        addr,
    }
}

/// A REST credential for `user`, valid for `ttl` seconds from now.
pub fn rest(user: &str, ttl: u64) -> (String, String) {
    let c = turnd_proto::auth::mint_rest_credential(
        SECRET.as_bytes(),
        user,
        turnd::clock::unix_now(),
        ttl,
    );
    (c.username, c.password)
}

/// Waits (bounded, 5 s) until `f` holds: worker counters are published every ~100-250 ms.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Turnd {
    /// A counter summed over workers.
    pub fn sum(&self, f: impl Fn(&turnd_proto::stats::Stats) -> u64) -> u64 {
        self.running.stats().iter().map(f).sum()
    }
}
