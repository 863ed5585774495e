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
}
