//! The restart policy, as a pure state machine: each exit of litestream comes in with how long
//! it ran and when, and out comes the next attempt and its delay, or the verdict to give up.
//! No clock is read and no process is touched here, so every rule has a unit test.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Verdict {
    /// Start litestream again after `delay`; this is restart number `attempt` in a row.
    Restart { attempt: u32, delay: Duration },
    /// More than `max` exits within the window: stop restarting.
    GiveUp { max: u32 },
}

/// Exits counted so far.
pub(super) struct Restarts {
    backoff: Backoff,
    window: Duration,
    max: Option<u32>,
    attempt: u32,
    exits: VecDeque<Instant>,
}

impl Restarts {
    /// `max` exits allowed within `window` (none: restart for ever).
    pub(super) fn new(backoff: Backoff, window: Duration, max: Option<u32>) -> Self {
        Restarts {
            backoff,
            window,
            max,
            attempt: 0,
            exits: VecDeque::new(),
        }
    }

    /// A litestream that ran `ran_for` exited at `now`. A run of at least the backoff's
    /// `reset_after` starts the delays over from the first one.
    pub(super) fn on_exit(&mut self, ran_for: Duration, now: Instant) -> Verdict {
        if ran_for >= self.backoff.reset_after {
            self.attempt = 0;
        }
        self.attempt += 1;
        self.exits.push_back(now);
        while self
            .exits
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.exits.pop_front();
        }
        match self.max {
            Some(max) if self.exits.len() as u32 > max => Verdict::GiveUp { max },
            _ => Verdict::Restart {
                attempt: self.attempt,
                delay: self.backoff.delay(self.attempt),
            },
        }
    }

    /// A new config applied: the next exit is the first of a new series.
    pub(super) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_millis(800),
            jitter: 0.0,
            reset_after: Duration::from_secs(60),
        }
    }

    fn delay(v: Verdict) -> Duration {
        match v {
            Verdict::Restart { delay, .. } => delay,
            Verdict::GiveUp { .. } => panic!("gave up: {v:?}"),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_and_a_long_run_starts_over() {
        let mut r = Restarts::new(steady(), Duration::from_secs(600), None);
        let t = Instant::now();
        let short = Duration::from_secs(1);
        let ms: Vec<u128> = (0..6)
            .map(|i| delay(r.on_exit(short, t + Duration::from_secs(i))).as_millis())
            .collect();
        assert_eq!(ms, [100, 200, 400, 800, 800, 800]);
        // A litestream that ran a minute was healthy: the next delay is the first again.
        assert_eq!(
            r.on_exit(Duration::from_secs(60), t + Duration::from_secs(70)),
            Verdict::Restart {
                attempt: 1,
                delay: Duration::from_millis(100)
            }
        );
        r.reset();
        assert_eq!(
            delay(r.on_exit(short, t + Duration::from_secs(71))),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn gives_up_after_more_than_max_exits_within_the_window_only() {
        let mut r = Restarts::new(steady(), Duration::from_secs(60), Some(2));
        let t = Instant::now();
        let s = Duration::from_secs(1);
        assert!(matches!(r.on_exit(s, t), Verdict::Restart { .. }));
        assert!(matches!(
            r.on_exit(s, t + Duration::from_secs(10)),
            Verdict::Restart { .. }
        ));
        // The first exit has left the window: still two within it.
        assert!(matches!(
            r.on_exit(s, t + Duration::from_secs(61)),
            Verdict::Restart { .. }
        ));
        assert_eq!(
            r.on_exit(s, t + Duration::from_secs(62)),
            Verdict::GiveUp { max: 2 }
        );
    }

    #[test]
    fn without_a_maximum_it_never_gives_up() {
        let mut r = Restarts::new(steady(), Duration::from_secs(600), None);
        let t = Instant::now();
        for i in 0..1000 {
            assert!(matches!(
                r.on_exit(Duration::ZERO, t + Duration::from_millis(i)),
                Verdict::Restart { .. }
            ));
        }
    }
}
