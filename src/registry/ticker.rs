//! The clock of every session at once. Heartbeats and token expiry are driven from here for
//! all sessions together, rather than by two timers per session polled at each of its
//! wake-ups: an idle session then costs no timer and no wake-up of its own.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::messages::SessionId;

/// How often expired tokens are looked for: sessions close within this of their expiry.
pub const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

/// When sessions are pinged, and open sessions by the expiry of their token.
#[derive(Debug)]
pub struct Ticker {
    heartbeat: Duration,
    /// (expiry in seconds since the epoch, session, uid), soonest first.
    expiries: BTreeSet<(u64, SessionId, u64)>,
}

impl Ticker {
    pub fn new(heartbeat: Duration) -> Self {
        Ticker {
            heartbeat,
            expiries: BTreeSet::new(),
        }
    }

    /// Interval of the pings every session gets.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    pub fn track(&mut self, token_exp: u64, id: SessionId, uid: u64) {
        self.expiries.insert((token_exp, id, uid));
    }

    pub fn forget(&mut self, token_exp: u64, id: SessionId, uid: u64) {
        self.expiries.remove(&(token_exp, id, uid));
    }

    /// Takes the sessions, as (session, uid), whose token expired by `now`.
    pub fn take_due(&mut self, now: u64) -> Vec<(SessionId, u64)> {
        let mut due = Vec::new();
        while let Some(&(exp, id, uid)) = self.expiries.first() {
            if exp > now {
                break;
            }
            self.expiries.pop_first();
            due.push((id, uid));
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_fall_due_in_expiry_order_and_once() {
        let mut ticker = Ticker::new(Duration::from_secs(30));
        ticker.track(30, 1, 100);
        ticker.track(10, 2, 200);
        ticker.track(20, 3, 300);
        ticker.forget(20, 3, 300);
        assert_eq!(ticker.take_due(9), vec![]);
        assert_eq!(ticker.take_due(30), vec![(2, 200), (1, 100)]);
        assert_eq!(ticker.take_due(1000), vec![]);
    }
}
