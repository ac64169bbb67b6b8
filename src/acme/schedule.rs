//! When to order a certificate: renewal at a third of the lifetime left, back-off with jitter
//! after a failure, and the CA's Retry-After honoured. Pure arithmetic on times handed in, so
//! the rules are tested with injected clocks (the manager feeds it `SystemTime::now()`).

use std::time::{Duration, SystemTime};

/// The first retry after a failure; each further failure doubles it.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between two attempts, however many failed: a CA that refuses an hour
/// is asked again within the hour, and never more often than the doubling allows (Let's
/// Encrypt counts failed validations per hour, so hammering it only prolongs the refusal).
pub const MAX_RETRY: Duration = Duration::from_secs(3600);
/// A Retry-After longer than this is capped: a CA's header must not park renewal for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// When a certificate valid from `not_before` to `not_after` is renewed: when a third of its
/// lifetime is left (the rule, and Let's Encrypt's advice for 90-day certificates:
/// renew at 60 days, i.e. 30 days left).
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    not_after - lifetime / 3
}

/// How long to wait after `failures` consecutive failed attempts (1 = the first failure).
/// Exponential from [`FIRST_RETRY`] up to [`MAX_RETRY`], then scaled by `jitter` (a number in
/// [0, 1) the caller draws) into [½, 1] of that, so relays that failed together (a CA outage)
/// do not come back in lockstep. A Retry-After from the CA (RFC 8555 §6.6, rate limits) wins
/// when it is later.
pub fn retry_delay(failures: u32, jitter: f64, retry_after: Option<Duration>) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let backoff = FIRST_RETRY.saturating_mul(1u32 << exp).min(MAX_RETRY);
    let jitter = jitter.clamp(0.0, 1.0);
    let backoff = backoff.mul_f64(0.5 + jitter / 2.0);
    match retry_after {
        Some(ra) => backoff.max(ra.min(MAX_RETRY_AFTER)),
        None => backoff,
    }
}

/// What the manager does next, given the certificate in use (if any), now, and the time the
/// last failure asked to wait until.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Order now.
    Order,
    /// Sleep until then and look again.
    Wait(SystemTime),
}

/// Orders when there is no certificate or its renewal time has come, unless a back-off (or
/// the CA's Retry-After) is still running.
pub fn next(
    validity: Option<(SystemTime, SystemTime)>,
    now: SystemTime,
    not_before_retry: Option<SystemTime>,
) -> Next {
    if let Some(t) = not_before_retry.filter(|t| *t > now) {
        return Next::Wait(t);
    }
    match validity {
        Some((nb, na)) => {
            let at = renew_at(nb, na);
            if at > now {
                Next::Wait(at)
            } else {
                Next::Order
            }
        }
        None => Next::Order,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn renews_with_a_third_of_the_lifetime_left() {
        let day = 86_400;
        // 90 days: renew at day 60.
        assert_eq!(renew_at(t(0), t(90 * day)), t(60 * day));
        // 30 s (pebble's short-lived test certificates): at 20 s.
        assert_eq!(renew_at(t(0), t(30)), t(20));
        // Nonsense dates (not_after before not_before): renew at not_after, i.e. now-ish.
        assert_eq!(renew_at(t(10), t(5)), t(5));
    }

    #[test]
    fn waits_until_renewal_then_orders() {
        let v = Some((t(0), t(90)));
        assert_eq!(next(v, t(10), None), Next::Wait(t(60)));
        assert_eq!(next(v, t(59), None), Next::Wait(t(60)));
        assert_eq!(next(v, t(60), None), Next::Order);
        assert_eq!(next(v, t(200), None), Next::Order, "expired: order");
        assert_eq!(next(None, t(0), None), Next::Order, "no certificate: order");
    }

    #[test]
    fn a_running_back_off_delays_even_a_missing_certificate() {
        assert_eq!(next(None, t(0), Some(t(30))), Next::Wait(t(30)));
        assert_eq!(next(None, t(30), Some(t(30))), Next::Order);
        // Back-off past the renewal time: the back-off wins.
        assert_eq!(
            next(Some((t(0), t(90))), t(70), Some(t(80))),
            Next::Wait(t(80))
        );
    }

    #[test]
    fn back_off_doubles_up_to_the_cap_with_jitter_in_half_to_whole() {
        let s = |d: Duration| d.as_secs_f64();
        // jitter 0.999.. ≈ the full delay; 0 = half of it.
        assert!((s(retry_delay(1, 0.9999, None)) - 5.0).abs() < 0.01);
        assert_eq!(retry_delay(1, 0.0, None), Duration::from_millis(2500));
        assert!((s(retry_delay(2, 0.9999, None)) - 10.0).abs() < 0.01);
        assert!((s(retry_delay(4, 0.9999, None)) - 40.0).abs() < 0.01);
        // Far out: capped at an hour, whatever the count (no overflow at u32::MAX).
        assert!((s(retry_delay(30, 0.9999, None)) - 3600.0).abs() < 1.0);
        assert!((s(retry_delay(u32::MAX, 0.9999, None)) - 3600.0).abs() < 1.0);
        // Jitter spreads: every delay within [½, 1] of the un-jittered one.
        for i in 0..100 {
            let d = retry_delay(3, i as f64 / 100.0, None);
            assert!(
                d >= Duration::from_secs(10) && d <= Duration::from_secs(20),
                "{d:?}"
            );
        }
        // Out-of-range jitter is clamped, not trusted.
        assert_eq!(retry_delay(1, -3.0, None), Duration::from_millis(2500));
        assert_eq!(retry_delay(1, 7.0, None), Duration::from_secs(5));
    }

    #[test]
    fn retry_after_wins_when_later_and_is_capped() {
        let ra = Some(Duration::from_secs(600));
        assert_eq!(retry_delay(1, 0.5, ra), Duration::from_secs(600));
        // Shorter than the back-off: the back-off stands (never faster than the doubling).
        let short = Some(Duration::from_secs(1));
        assert_eq!(retry_delay(3, 0.9999, short), retry_delay(3, 0.9999, None));
        // A week-long Retry-After is capped at a day.
        let week = Some(Duration::from_secs(7 * 86_400));
        assert_eq!(retry_delay(1, 0.5, week), MAX_RETRY_AFTER);
    }
}
