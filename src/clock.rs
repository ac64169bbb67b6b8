//! The only place turnd reads its clocks; the protocol core is handed the result.

use std::time::{Instant, SystemTime, UNIX_EPOCH};
use turnd_proto::Now;

/// Both clocks, read once.
pub fn now() -> Now {
    Now {
        mono: Instant::now(),
        unix: unix_now(),
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
