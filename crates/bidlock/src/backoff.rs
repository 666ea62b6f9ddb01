//! The retry schedule used while waiting for a lock: a safety net behind release signals.

use std::time::Duration;

/// How long a waiter sleeps between tries when no release signal arrives.
///
/// Delays start at `initial`, grow by `factor` and stop growing at `max`; each is
/// jittered down to between half and all of its value so that waiters do not retry in
/// lockstep. The defaults are the original system's: 50 ms, ×1.5, 1 s.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// The first delay.
    pub initial: Duration,
    /// The growth factor (≥ 1).
    pub factor: f64,
    /// The largest delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(50),
            factor: 1.5,
            max: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// A policy with the given bounds.
    pub fn new(initial: Duration, factor: f64, max: Duration) -> RetryPolicy {
        RetryPolicy {
            initial,
            factor,
            max,
        }
    }
}

/// One waiter's position in the schedule.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(policy: RetryPolicy) -> Backoff {
        Backoff {
            next: policy.initial.min(policy.max),
            policy,
        }
    }

    /// The next delay (jittered) and advance the schedule.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        let grown = base.as_secs_f64() * self.policy.factor.max(1.0);
        self.next = Duration::from_secs_f64(grown.min(self.policy.max.as_secs_f64()));
        let jitter: f64 = rand::random_range(0.5..=1.0);
        base.mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter() {
        let mut b = Backoff::new(RetryPolicy::default());
        let delays: Vec<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(25) && delays[0] <= Duration::from_millis(50));
        assert!(delays[1] >= Duration::from_millis(37) && delays[1] <= Duration::from_millis(75));
        for d in &delays {
            assert!(*d <= Duration::from_secs(1));
        }
        assert!(delays[19] >= Duration::from_millis(500));
    }
}
