//! Restart delays: exponential with jitter, capped, reset after a stable run.

use std::time::Duration;

/// How long to wait before restarting litestream after it exits.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// Each further delay is the previous one times this.
    pub factor: f64,
    /// No delay is longer than this (before jitter).
    pub max: Duration,
    /// Each delay is moved by up to this fraction either way (0.2 = ±20 %).
    pub jitter: f64,
    /// A child that ran at least this long resets the sequence to `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            factor: 2.0,
            max: Duration::from_secs(30),
            jitter: 0.2,
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` (1 = the first restart), without jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exp = self.factor.powi(attempt.saturating_sub(1).min(64) as i32);
        let secs = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        Duration::from_secs_f64(secs)
    }

    /// The delay before restart number `attempt`, with jitter applied.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base_delay(attempt).as_secs_f64();
        let spread = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + spread * (fastrand::f64() * 2.0 - 1.0);
        Duration::from_secs_f64(base * factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff::default();
        let ms: Vec<u128> = (1..=9).map(|a| b.base_delay(a).as_millis()).collect();
        assert_eq!(
            ms,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let b = Backoff::default();
        for _ in 0..1000 {
            let d = b.delay(3).as_secs_f64();
            assert!((1.6..=2.4).contains(&d), "{d}");
        }
    }
}
