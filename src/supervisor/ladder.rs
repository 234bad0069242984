//! The stop ladder, as a pure state machine: the sync before stopping, exactly one SIGTERM,
//! then SIGKILL at the end of the grace. Each further stop request climbs one rung: during the
//! sync it skips the sync; after the SIGTERM the first one sends a second SIGTERM (litestream
//! then skips its final-sync retries) and the next one SIGKILL. Never a second SIGTERM except
//! as an escalation the operator asked for.

/// What the supervisor does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Stop waiting for the sync before stopping.
    SkipSync,
    /// Send SIGTERM.
    Sigterm,
    /// Send SIGKILL.
    Sigkill,
    /// Nothing more can be done: wait for the exit.
    Wait,
}

/// Where a stop stands.
#[derive(Debug, Default)]
pub(super) struct Ladder {
    terminated: bool,
    escalations: u32,
    killed: bool,
}

impl Ladder {
    /// A further stop request.
    pub(super) fn on_request(&mut self) -> Step {
        if self.killed {
            return Step::Wait;
        }
        if !self.terminated {
            self.escalations = 1;
            return Step::SkipSync;
        }
        self.escalations += 1;
        if self.escalations == 1 {
            Step::Sigterm
        } else {
            self.killed = true;
            Step::Sigkill
        }
    }

    /// The sync is over (or skipped): the one SIGTERM.
    pub(super) fn terminate(&mut self) -> Step {
        self.terminated = true;
        Step::Sigterm
    }

    /// The grace is over.
    pub(super) fn on_deadline(&mut self) -> Step {
        if self.killed {
            return Step::Wait;
        }
        self.killed = true;
        Step::Sigkill
    }

    /// SIGKILL was sent: the final sync cannot have completed.
    pub(super) fn killed(&self) -> bool {
        self.killed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sigterm_then_sigkill_at_the_grace() {
        let mut l = Ladder::default();
        assert_eq!(l.terminate(), Step::Sigterm);
        assert!(!l.killed());
        assert_eq!(l.on_deadline(), Step::Sigkill);
        assert!(l.killed());
        assert_eq!(l.on_deadline(), Step::Wait);
        assert_eq!(l.on_request(), Step::Wait);
    }

    #[test]
    fn further_requests_climb_one_rung_each() {
        let mut l = Ladder::default();
        assert_eq!(l.terminate(), Step::Sigterm);
        assert_eq!(l.on_request(), Step::Sigterm, "a second SIGTERM, asked for");
        assert_eq!(l.on_request(), Step::Sigkill);
        assert!(l.killed());
        assert_eq!(l.on_request(), Step::Wait);
        assert_eq!(l.on_deadline(), Step::Wait, "never a second SIGKILL");
    }

    #[test]
    fn a_request_during_the_sync_skips_it_and_counts_as_the_first_escalation() {
        let mut l = Ladder::default();
        assert_eq!(l.on_request(), Step::SkipSync);
        assert_eq!(l.terminate(), Step::Sigterm);
        assert_eq!(l.on_request(), Step::Sigkill);
        assert!(l.killed());
    }
}
