//! A worker's timers, in one table: each [`Timer`] has its next deadline (or none); the event
//! loop sleeps until the earliest deadline that [wakes](Timer::wakes) it, then fires every
//! timer that is due, and each action arms its timer again for when it wants to run next.
//! Adding a periodic chore is one variant here and one arm in the worker's `fire`, not another
//! `last_*` field and `elapsed()` check.

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

    /// Whether the loop wakes for this timer. Only the server's deadlines are precise; the
    /// chores run on the next wake-up once due (the loop sleeps at most 250 ms), so an idle
    /// worker is not woken for them, and the connection sweep keeps its drifting phase:
    /// woken exactly every second, it stays in step with connections opened together when a
    /// worker starts, and a sweep that lands within milliseconds of their idle deadline closes
    /// some of them, lowers the load, and so lengthens the near-cap timeout of the rest.
    pub fn wakes(self) -> bool {
        self == Timer::Server
    }
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

    /// The earliest deadline of an armed timer that wakes the loop.
    pub fn next_wake(&self) -> Option<Instant> {
        Timer::ALL
            .into_iter()
            .filter(|t| t.wakes())
            .filter_map(|t| self.due[t as usize])
            .min()
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

    /// The loop wakes for the server's deadline, not for a chore's, however early.
    #[test]
    fn the_loop_wakes_for_the_server_deadline_only() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        assert_eq!(timers.next_wake(), None);
        timers.set(Timer::Publish, Some(t0 + Duration::from_millis(100)));
        timers.set(Timer::SweepConns, Some(t0));
        assert_eq!(timers.next_wake(), None);
        timers.set(Timer::Server, Some(t0 + Duration::from_millis(300)));
        assert_eq!(timers.next_wake(), Some(t0 + Duration::from_millis(300)));
        timers.set(Timer::Server, None);
        assert_eq!(timers.next_wake(), None);
        // Chores still fire once due, on whatever wake-up comes.
        assert!(timers.fire(Timer::SweepConns, t0));
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
        assert!(timers.fire(Timer::SweepConns, t0 + Duration::from_secs(1)));
    }
}
