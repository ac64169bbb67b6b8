//! Rate limits for the noisy events (auth failures, refusals, denied peers): a flood from one
//! address must not fill the disk or slow the worker with log lines.
//!
//! Fixed windows of [`WINDOW`]: each source address may log [`PER_SOURCE`] events per window
//! and the worker [`PER_WORKER`] in all; the rest are counted and reported once per window as
//! one `events_suppressed` line. The source table is bounded ([`MAX_SOURCES`]): a new source
//! beyond it is suppressed (a flood of forged addresses meets the worker budget anyway).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The window over which the budgets below apply.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Noisy events logged per source address per window.
pub const PER_SOURCE: u32 = 5;
/// Noisy events logged per worker per window.
pub const PER_WORKER: u32 = 50;
/// Source addresses tracked per window.
pub const MAX_SOURCES: usize = 1024;

/// One worker's limiter.
#[derive(Debug)]
pub struct Limiter {
    window_start: Instant,
    sources: HashMap<IpAddr, u32>,
    logged: u32,
    suppressed: u64,
    /// Suppressed in windows that have closed but not been reported yet: a window may close
    /// inside [`Limiter::allow`], and its count must still reach the summary line.
    unreported: u64,
}

impl Limiter {
    pub fn new(now: Instant) -> Self {
        Limiter {
            window_start: now,
            sources: HashMap::new(),
            logged: 0,
            suppressed: 0,
            unreported: 0,
        }
    }

    /// Whether an event from `source` may be logged now; counts it as suppressed otherwise.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        self.advance(now);
        if self.logged >= PER_WORKER {
            self.suppressed += 1;
            return false;
        }
        let known = self.sources.len();
        let n = match self.sources.get_mut(&source) {
            Some(n) => n,
            None if known >= MAX_SOURCES => {
                self.suppressed += 1;
                return false;
            }
            None => self.sources.entry(source).or_insert(0),
        };
        if *n >= PER_SOURCE {
            self.suppressed += 1;
            return false;
        }
        *n += 1;
        self.logged += 1;
        true
    }

    /// When a window has passed: starts a new one, keeping its suppressed count to report.
    fn advance(&mut self, now: Instant) {
        if now.saturating_duration_since(self.window_start) < WINDOW {
            return;
        }
        self.window_start = now;
        self.sources.clear();
        self.logged = 0;
        self.unreported += std::mem::take(&mut self.suppressed);
    }

    /// How many events the windows closed so far suppressed and no summary has reported yet,
    /// if any (for the summary line; called on the worker's publish tick).
    pub fn roll(&mut self, now: Instant) -> Option<u64> {
        self.advance(now);
        Some(std::mem::take(&mut self.unreported)).filter(|n| *n > 0)
    }

    /// Everything suppressed and not yet reported, the current window included, taken (for
    /// the summary at shutdown).
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.unreported) + std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + n))
    }

    #[test]
    fn one_source_gets_its_budget_then_the_rest_is_counted() {
        let t = Instant::now();
        let mut l = Limiter::new(t);
        let allowed = (0..1000).filter(|_| l.allow(ip(1), t)).count();
        assert_eq!(allowed, PER_SOURCE as usize);
        assert_eq!(l.roll(t + WINDOW), Some(1000 - PER_SOURCE as u64));
        assert!(l.allow(ip(1), t + WINDOW), "a new window, a new budget");
        assert_eq!(l.roll(t + WINDOW * 2), None, "nothing suppressed");
    }

    /// A window that closes inside `allow` (a flood keeps calling it) still reports its count.
    #[test]
    fn a_window_closed_by_allow_is_still_reported() {
        let t = Instant::now();
        let mut l = Limiter::new(t);
        let allowed = (0..1000).filter(|_| l.allow(ip(1), t)).count();
        assert_eq!(allowed, PER_SOURCE as usize);
        assert!(l.allow(ip(1), t + WINDOW), "the next window opens here");
        assert_eq!(l.roll(t + WINDOW), Some(1000 - PER_SOURCE as u64));
        assert_eq!(l.roll(t + WINDOW), None, "reported once");
    }

    #[test]
    fn many_sources_share_the_worker_budget_and_a_bounded_table() {
        let t = Instant::now();
        let mut l = Limiter::new(t);
        let allowed = (0..5000).filter(|i| l.allow(ip(*i), t)).count();
        assert_eq!(allowed, PER_WORKER as usize);
        assert!(l.sources.len() <= MAX_SOURCES);
        assert_eq!(l.take_suppressed(), 5000 - PER_WORKER as u64);
    }
}
