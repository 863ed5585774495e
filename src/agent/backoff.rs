//! Exponential backoff with jitter for the agent's retry loops, so that a fleet
//! coming back after a server restart does not knock on the door all at once.

use rand::Rng;
use std::time::Duration;

pub const START: Duration = Duration::from_millis(500);
pub const CAP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Backoff {
    current: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { current: START }
    }
}

impl Backoff {
    /// The next delay: between half and all of the current step, which then doubles
    /// up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = (step * 2).min(CAP);
        let half = step / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    /// After a success: the next failure starts small again.
    pub fn reset(&mut self) {
        self.current = START;
    }
}

/// The least time between two long polls that came back empty: a server that answers
/// at once instead of holding the request must not be hammered.
pub const MIN_POLL: Duration = Duration::from_secs(1);

/// Paces a long-poll loop: no pause after an answer, at least `MIN_POLL` between empty
/// polls, backoff with jitter after failures, and one warning per outage (the rest at
/// debug), since the heartbeat already reports an unreachable server.
#[derive(Debug)]
pub struct PollPace {
    what: &'static str,
    backoff: Backoff,
    failing: bool,
}

impl PollPace {
    /// `what` names the poll in the log ("polling for commands").
    pub fn new(what: &'static str) -> Self {
        PollPace { what, backoff: Backoff::default(), failing: false }
    }

    /// The poll brought something: go on at once.
    pub fn answered(&mut self) -> Duration {
        self.backoff.reset();
        self.failing = false;
        Duration::ZERO
    }

    /// The poll, asked at `asked`, came back empty.
    pub fn empty(&mut self, asked: std::time::Instant) -> Duration {
        self.answered();
        MIN_POLL.saturating_sub(asked.elapsed())
    }

    /// The poll failed: log it (a warning once per outage) and back off.
    pub fn failed(&mut self, error: &dyn std::fmt::Display) -> Duration {
        if self.failing {
            tracing::debug!(error = %error, "{} failed", self.what);
        } else {
            tracing::warn!(error = %error, "{} failed; retrying with backoff", self.what);
            self.failing = true;
        }
        self.backoff.next_delay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter_and_reset() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= START / 2 && first <= START);
        let mut last = first;
        for _ in 0..20 {
            last = b.next_delay();
            assert!(last <= CAP);
        }
        assert!(last >= CAP / 2);
        b.reset();
        assert!(b.next_delay() <= START);
    }

    #[test]
    fn a_pace_goes_on_at_once_after_an_answer_and_waits_after_an_empty_poll() {
        let mut pace = PollPace::new("polling");
        assert!(pace.failed(&"down") >= START / 2);
        assert_eq!(pace.answered(), Duration::ZERO);
        let waited = pace.empty(std::time::Instant::now());
        assert!(waited > MIN_POLL / 2 && waited <= MIN_POLL);
        // After a success the backoff starts small again.
        assert!(pace.failed(&"down") <= START);
    }
}
