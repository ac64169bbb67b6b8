//! The only place turnd reads its clocks; the protocol core is handed the result.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use turnd_proto::Now;

/// Both clocks, read once.
pub fn now() -> Now {
    Now {
        mono: protocol_instant(),
        unix: unix_now(),
    }
}

/// Debug builds only: `TURND_TEST_TIME_SCALE=N` (N > 1) runs the protocol clock N times faster
/// than real time from start-up, so a test sees permissions (300 s), channels (600 s) and the
/// channel cool-down (300 s) run out in seconds (the fast path's differential test). Release
/// builds ignore it: lifetimes are the RFC's. Unix time (credential expiry, nonces) and the
/// worker's own chores stay real.
fn time_scale() -> Option<(Instant, u32)> {
    if !cfg!(debug_assertions) {
        return None;
    }
    static SCALE: OnceLock<Option<(Instant, u32)>> = OnceLock::new();
    *SCALE.get_or_init(|| {
        let n = std::env::var("TURND_TEST_TIME_SCALE")
            .ok()?
            .parse::<u32>()
            .ok()?;
        (n > 1).then(|| (Instant::now(), n))
    })
}

/// The protocol clock's now: real monotonic time, unless scaled for a test.
fn protocol_instant() -> Instant {
    let real = Instant::now();
    match time_scale() {
        Some((base, n)) => base + real.saturating_duration_since(base) * n,
        None => real,
    }
}

/// How long a span of protocol time lasts in real time: what a deadline handed to the kernel
/// (whose clock is never scaled) must be converted with.
pub fn real_duration(protocol: Duration) -> Duration {
    match time_scale() {
        Some((_, n)) => protocol / n,
        None => protocol,
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix seconds as RFC 3339 UTC (`2024-11-21T15:20:00Z`), without a date library: the civil
/// date from days since the epoch (H. Hinnant's algorithm).
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_732_200_000), "2024-11-21T14:40:00Z");
        assert_eq!(super::rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
