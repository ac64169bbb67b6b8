//! A worker's timers, in one table: each [`Timer`] has its next deadline (or none); the event
//! loop sleeps until the earliest, then fires the ones that are due, and each action arms its
//! timer again for when it wants to run next. Adding a periodic chore is one variant here and
//! one arm in the worker's `fire`, not another `last_*` field and `elapsed()` check.

use std::time::Instant;

/// The worker's timed chores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The protocol server's own deadline: allocations, permissions and channels that expire
    /// (RFC 8656 §7, §9, §12). Re-read from the server after every batch.
    Server,
    /// Close idle, stalled and slow-handshake connections; give back idle buffers.
    SweepConns,
    /// Copy the worker's counters out for /metrics and the rest of turnd (after the sweep, so
    /// they count what it closed).
    Publish,
    /// Log the error responses suppressed since the last such line (rate-limited).
    LogSuppressed,
}

impl Timer {
    /// In the order they fire when due together.
    pub const ALL: [Timer; 4] = [
        Timer::Server,
        Timer::SweepConns,
        Timer::Publish,
        Timer::LogSuppressed,
    ];
}

/// The next deadline of every [`Timer`], indexed by its discriminant. No allocation: one slot
/// per timer.
#[derive(Debug, Default)]
pub struct Timers {
    due: [Option<Instant>; Timer::ALL.len()],
}

impl Timers {
    /// Arms `timer` for `at`, or disarms it (None).
    pub fn set(&mut self, timer: Timer, at: Option<Instant>) {
        self.due[timer as usize] = at;
    }

    /// The earliest deadline of any armed timer.
    pub fn next(&self) -> Option<Instant> {
        self.due.iter().flatten().min().copied()
    }

    /// Whether `timer` is due at `now`; if so it is disarmed, for its action to arm again.
    pub fn fire(&mut self, timer: Timer, now: Instant) -> bool {
        let slot = &mut self.due[timer as usize];
        if slot.is_some_and(|at| at <= now) {
            *slot = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `ALL` lists every timer once, so each has its own slot.
    #[test]
    fn every_timer_has_its_own_slot() {
        for (i, t) in Timer::ALL.into_iter().enumerate() {
            assert_eq!(t as usize, i, "{t:?}");
        }
    }

    #[test]
    fn the_next_deadline_is_the_earliest_armed_one() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        assert_eq!(timers.next(), None);
        timers.set(Timer::Publish, Some(t0 + Duration::from_millis(100)));
        timers.set(Timer::SweepConns, Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.next(), Some(t0 + Duration::from_millis(100)));
        timers.set(Timer::Server, Some(t0 + Duration::from_millis(30)));
        assert_eq!(timers.next(), Some(t0 + Duration::from_millis(30)));
        timers.set(Timer::Server, None);
        assert_eq!(timers.next(), Some(t0 + Duration::from_millis(100)));
    }

    /// A timer fires once it is due, once: then it waits to be armed again.
    #[test]
    fn a_due_timer_fires_once_and_the_others_wait() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        for t in Timer::ALL {
            assert!(!timers.fire(t, t0), "{t:?} fired unarmed");
        }
        timers.set(Timer::Publish, Some(t0 + Duration::from_millis(100)));
        timers.set(Timer::SweepConns, Some(t0 + Duration::from_secs(1)));
        assert!(!timers.fire(Timer::Publish, t0 + Duration::from_millis(99)));
        assert!(timers.fire(Timer::Publish, t0 + Duration::from_millis(100)));
        assert!(!timers.fire(Timer::Publish, t0 + Duration::from_millis(101)));
        assert!(!timers.fire(Timer::SweepConns, t0 + Duration::from_millis(101)));
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
    }
}
